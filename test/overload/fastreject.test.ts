/**
 * FastReject end to end: a real server process whose handler blocks the event loop (Work: 5 ms
 * of CPU per call, so about 200 calls/s), under an open-loop burst of twice that, mixed priorities.
 * Low-priority calls must be refused quickly with RESOURCE_EXHAUSTED (not processed), high-
 * priority calls must succeed, and the server must stay up. A second server in dry-run mode must
 * refuse nothing.
 *
 * The servers use short windows (200 ms) and a larger alpha (0.3) so that the test converges in
 * seconds; the defaults (1 s, 0.05) are DAGOR's and are exercised by bench/overload.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Channel, RpcError, Status } from '../../framework/index.js';
import { WorkDefinition } from '../../bench/overload/gen/work.js';
import { HealthClient, HealthCheckResponse_ServingStatus } from '../../framework/builtin/gen/svrkit/health.js';
import { exclusively } from '../support/exclusive.js';
import { killAll, repoRoot } from '../support/processes.js';

const children: ChildProcess[] = [];
afterAll(() => killAll(children));

async function startServer(overload: string): Promise<{ address: string; child: ChildProcess; stderr: () => string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'test/support/overload-server.ts')], {
    cwd: repoRoot,
    env: { ...process.env, OVERLOAD: overload },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let out = '';
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (err += s));
  const address = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`overload server did not start: ${out}${err}`)), 20_000);
    child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      out += s;
      const m = /serving on (\S+)/.exec(out);
      if (m !== null) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.once('exit', (code) => reject(new Error(`overload server exited (${code}): ${out}${err}`)));
  });
  return { address, child, stderr: () => err };
}

interface Outcome {
  priority: number;
  startedAt: number;
  ms: number;
  code: number;
  notProcessed: boolean;
}

/** Starts `rate` calls per second for `seconds`, regardless of how many are outstanding (open loop). */
async function openLoop(ch: Channel, rate: number, seconds: number): Promise<Outcome[]> {
  const outcomes: Promise<Outcome>[] = [];
  const t0 = Date.now();
  let started = 0;
  while (Date.now() - t0 < seconds * 1000) {
    const due = Math.floor(((Date.now() - t0) / 1000) * rate);
    for (; started < due; started++) {
      const priority = started % 10 === 0 ? 10 : 100; // 10% high, 90% low
      const s = Date.now();
      outcomes.push(
        ch.unary(WorkDefinition.methods.do, { cpuUs: 5000, tag: String(started) }, { timeoutMs: 3000, priority }).then(
          () => ({ priority, startedAt: s - t0, ms: Date.now() - s, code: Status.OK, notProcessed: false }),
          (e: RpcError) => ({ priority, startedAt: s - t0, ms: Date.now() - s, code: e.code, notProcessed: e.notProcessed }),
        ),
      );
    }
    await new Promise((r) => setTimeout(r, 2));
  }
  return Promise.all(outcomes);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

describe('FastReject under a burst', () => {
  // An overload on purpose, with both cores busy: alone with the tests that measure time (exclusive.ts).
  it('refuses low-priority calls quickly, serves high-priority ones, and stays up', () => exclusively('timing', async () => {
    const server = await startServer(JSON.stringify({ windowMs: 200, alpha: 0.3 }));
    const ch = new Channel(server.address, { retryPolicy: false, adaptiveThrottle: false });
    try {
      const outcomes = await openLoop(ch, 400, 6);
      const late = outcomes.filter((o) => o.startedAt >= 3000); // after convergence
      const low = late.filter((o) => o.priority === 100);
      const high = late.filter((o) => o.priority === 10);
      const lowRefused = low.filter((o) => o.code === Status.RESOURCE_EXHAUSTED);
      expect(lowRefused.length / low.length).toBeGreaterThan(0.4);
      expect(lowRefused.every((o) => o.notProcessed)).toBe(true);
      // Quickly: refused calls do not wait for their 3 s deadline.
      expect(median(lowRefused.map((o) => o.ms))).toBeLessThan(500);
      expect(high.filter((o) => o.code === Status.OK).length / high.length).toBeGreaterThan(0.9);
      // The server is still up and healthy.
      const health = await new HealthClient(ch).check({}, { timeoutMs: 5000 });
      expect(health.status).toBe(HealthCheckResponse_ServingStatus.SERVING);
      expect(server.child.exitCode).toBeNull();
    } finally {
      ch.close();
    }
  }), 180_000);

  it('in dry-run mode decides and logs, but refuses nothing', () => exclusively('timing', async () => {
    const server = await startServer(JSON.stringify({ windowMs: 200, alpha: 0.3, dryRun: true }));
    const ch = new Channel(server.address, { retryPolicy: false, adaptiveThrottle: false });
    try {
      const outcomes = await openLoop(ch, 400, 3);
      expect(outcomes.filter((o) => o.code === Status.RESOURCE_EXHAUSTED)).toEqual([]);
      expect(server.stderr()).toMatch(/FastReject dry run: admission level \d+ -> \d+/);
    } finally {
      ch.close();
    }
  }), 180_000);
});
