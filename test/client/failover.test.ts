/**
 * Discovery, balancing and retries end to end, with real processes on 127.0.0.1: three
 * helloworld instances registered in a file registry (`svrkit run --register file:///...`) and
 * a client under steady load with the default retry policy (SayHello is marked idempotent in
 * greeter.proto).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Channel, RpcError, Status } from '../../framework/index.js';
import { GreeterClient } from '../../examples/helloworld/gen/greeter.js';
import { exclusively } from '../support/exclusive.js';
import { startSvrkit, stopAllSvrkit, type SvrkitProcess } from '../support/processes.js';

const dir = mkdtempSync(path.join(tmpdir(), 'svrkit-failover-'));
const registry = `file://${path.join(dir, 'registry.json')}`;
const SERVICE = 'helloworld.Greeter';

afterAll(async () => {
  await stopAllSvrkit();
  rmSync(dir, { recursive: true, force: true });
});

async function instance(): Promise<{ proc: SvrkitProcess; pid: number }> {
  const proc = await startSvrkit(['run', 'test/support/tagged-greeter.ts', '--port', '0', '--register', registry, '--ttl-ms', '3000']);
  return { proc, pid: proc.process.pid! };
}

interface Outcome {
  at: number;
  pid?: number;
  error?: RpcError;
  ms: number;
}

/** Keeps `concurrency` calls in flight until stopped; records every outcome. */
function load(client: GreeterClient, concurrency: number): { outcomes: Outcome[]; stop: () => Promise<void> } {
  const outcomes: Outcome[] = [];
  let running = true;
  const workers = Array.from({ length: concurrency }, async (_, w) => {
    for (let i = 0; running; i++) {
      const t0 = Date.now();
      try {
        const r = await client.sayHello({ name: `w${w}-${i}` }, { timeoutMs: 30_000 });
        outcomes.push({ at: Date.now(), pid: Number(/from (\d+)$/.exec(r.message)![1]), ms: Date.now() - t0 });
      } catch (err) {
        outcomes.push({ at: Date.now(), error: err as RpcError, ms: Date.now() - t0 });
        await new Promise((r) => setTimeout(r, 5));
      }
    }
  });
  return {
    outcomes,
    stop: async () => {
      running = false;
      await Promise.all(workers);
    },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('three registered instances under load', () => {
  // It asserts on timings (the fourth instance within 1 s): never beside the heaviest load test.
  it('SIGKILL of one: zero failures; a fourth gets traffic within 1 s; SIGKILL of all: fast UNAVAILABLE', { timeout: 200_000 }, () => exclusively('timing', async () => {
    const instances = [await instance(), await instance(), await instance()];
    const channel = new Channel(registry);
    const client = new GreeterClient(channel);
    try {
      await channel.waitForReady(10_000, SERVICE);
      const run = load(client, 16);
      await sleep(1000);

      // 1. SIGKILL one instance mid-load.
      const victim = instances[0]!;
      const killedAt = Date.now();
      await victim.proc.stop('SIGKILL');
      await sleep(1500);
      const afterKill = run.outcomes.filter((o) => o.at >= killedAt);
      expect(afterKill.length).toBeGreaterThan(50);
      expect(run.outcomes.filter((o) => o.error !== undefined).map((o) => String(o.error))).toEqual([]);
      expect(afterKill.filter((o) => o.at > killedAt + 200).some((o) => o.pid === victim.pid)).toBe(false);

      // 2. A fourth instance registered mid-load gets traffic within 1 s.
      const fourth = await instance();
      const registeredAt = Date.now(); // startSvrkit returns once it serves; it registers right after
      instances.push(fourth);
      const deadline = registeredAt + 3000;
      while (!run.outcomes.some((o) => o.pid === fourth.pid) && Date.now() < deadline) await sleep(10);
      const first = run.outcomes.find((o) => o.pid === fourth.pid);
      expect(first, 'the fourth instance never got a call').toBeDefined();
      expect(first!.at - registeredAt).toBeLessThanOrEqual(1000);
      await sleep(300);
      expect(run.outcomes.filter((o) => o.error !== undefined).map((o) => String(o.error))).toEqual([]);

      // 3. SIGKILL every instance: calls fail with UNAVAILABLE, not by waiting out their 30 s deadline.
      const allDownAt = Date.now();
      await Promise.all(instances.slice(1).map((i) => i.proc.stop('SIGKILL')));
      await sleep(1000);
      await run.stop();
      const late = run.outcomes.filter((o) => o.at >= allDownAt + 300);
      expect(late.length).toBeGreaterThan(0);
      for (const o of late) {
        expect(o.error?.code).toBe(Status.UNAVAILABLE);
        expect(o.ms).toBeLessThan(5000);
      }
    } finally {
      channel.close();
    }
  }));
});
