/**
 * The cost of replacing a replica (issue 16): a local 3-replica PaxosKV cluster holding 100,000
 * keys (120-byte values) serves PaxosStore's stress workload (3.3 reads per write, closed loop);
 * replica 3 is SIGKILLed and replaced by a new, empty replica 4 (`kv serve --join`, then
 * `PaxosKVClient.changeMembers`), which must copy every key before the change finishes.
 *
 *   npm run build && npx tsx bench/paxoskv/replace.ts [--keys 100000] [--concurrency 64] [--duration 20s] [--rounds 2]
 *
 * Each round starts a fresh cluster, preloads the keys (not timed), then runs the workload twice
 * for `--duration` each, alternating: A, a steady run; B, the same with the replace begun 3 s in.
 * It prints, per round, both runs' throughput and read and write latency p50/p99/max, the longest
 * stretch without an acknowledged write, and how long the change took from `changeMembers` to
 * its finish (the new replica's sync of every key included). Everything on 127.0.0.1; every
 * process it starts it stops.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Command, InvalidArgumentError } from 'commander';
import { parseDuration } from '../../framework/cli/bench.js';
import { PaxosKVClient } from '../../services/paxoskv/client.js';
import { startJoiningReplica, startPaxosKV, stopAll } from './cluster.js';
import { PAXOSSTORE_STRESS, preload, runWorkload, type KvTarget, type WorkloadResult } from './workload.js';

const positiveInt = (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`'${v}' is not a positive integer`);
  return n;
};

const program = new Command('replace')
  .option('--keys <n>', 'keys preloaded (each written once) and drawn from', positiveInt, 100_000)
  .option('--concurrency <n>', 'operations in flight', positiveInt, 64)
  .option('--duration <time>', 'length of each run', (v: string) => parseDuration(v), 20_000)
  .option('--rounds <n>', 'rounds, each on a fresh cluster', positiveInt, 2)
  .option('--keep', 'keep the temp dir (data and logs)')
  .parse();
const flags = program.opts<{ keys: number; concurrency: number; duration: number; rounds: number; keep?: boolean }>();
const shape = { ...PAXOSSTORE_STRESS, keys: flags.keys };

const fmt = (ms: number) => (ms < 10 ? ms.toFixed(2) : ms.toFixed(1));
const line = (what: string, r: WorkloadResult, extra = ''): string =>
  `  ${what.padEnd(26)} ${Math.round(r.okPerSecond).toString().padStart(6)} ops/s  ` +
  `read p50/p99/max ${fmt(r.reads.latencyMs.p50)}/${fmt(r.reads.latencyMs.p99)}/${fmt(r.reads.latencyMs.max)} ms  ` +
  `write p50/p99/max ${fmt(r.writes.latencyMs.p50)}/${fmt(r.writes.latencyMs.p99)}/${fmt(r.writes.latencyMs.max)} ms  ` +
  `longest write gap ${Math.round(r.longestWriteGap.ms)} ms  failed ${r.reads.failed + r.writes.failed}${extra}`;

const base = mkdtempSync(path.join(os.tmpdir(), 'svrkit-replace-'));
try {
  process.stdout.write(
    `paxoskv replace bench: ${flags.keys} keys of ${shape.valueBytes} B, ${shape.readsPerWrite} reads per write, concurrency ${flags.concurrency}, ` +
      `runs of ${flags.duration / 1000} s, ${flags.rounds} round(s), ${os.cpus().length} CPUs, node ${process.version}\n`,
  );
  for (let round = 1; round <= flags.rounds; round++) {
    const dir = path.join(base, `round-${round}`);
    const cluster = await startPaxosKV(dir);
    // Clients know replicas 1 and 2 and the new 4 (3 is the one that goes).
    const joiner = await startJoiningReplica(dir, cluster, 4, [1, 2]);
    const clients = [0, 1, 2, 3].map((j) => new PaxosKVClient({ peers: j % 2 === 0 ? [cluster.peers[0]!, cluster.peers[1]!, cluster.peers[2]!] : [cluster.peers[1]!, cluster.peers[0]!, cluster.peers[2]!], attemptTimeoutMs: 500 }));
    const targets: KvTarget[] = clients.map((c) => ({ get: (k) => c.get(k), put: (k, v) => c.put(k, v) }));
    try {
      const pre = await preload(targets, 128, shape);
      process.stdout.write(`round ${round}: preloaded ${flags.keys} keys in ${(pre.ms / 1000).toFixed(1)} s (${pre.failed} failed)\n`);
      const steady = await runWorkload({ targets, concurrency: flags.concurrency, durationMs: flags.duration, shape });
      process.stdout.write(line('A steady', steady) + '\n');
      let change = '';
      const admin = new PaxosKVClient({ peers: [cluster.peers[0]!, cluster.peers[1]!] });
      const replaced = await runWorkload({
        targets,
        concurrency: flags.concurrency,
        durationMs: flags.duration,
        shape,
        events: [
          {
            atMs: 3000,
            run: async () => {
              await cluster.members[2]!.kill();
              const t0 = performance.now();
              const c = await admin.changeMembers({ kind: 'replace', remove: 3, add: 4, address: joiner.address }, { timeoutMs: 120_000 });
              change = `; replace 3 by 4 (${flags.keys} keys to copy) took ${Math.round(performance.now() - t0)} ms, epoch ${c.epoch}, voters [${c.voters.join(',')}]`;
            },
          },
        ],
      });
      admin.close();
      process.stdout.write(line('B replace at 3 s', replaced, change === '' ? '; the change did not finish within the run' : change) + '\n');
      const s = new PaxosKVClient({ peers: [joiner.address] });
      const status = await s.status(0, { timeoutMs: 5000 });
      s.close();
      process.stdout.write(`  replica 4 afterwards: mode ${status.mode}, epoch ${status.epoch}, ${status.keys} keys\n`);
    } finally {
      for (const c of clients) c.close();
      await stopAll();
    }
  }
} finally {
  await stopAll();
  if (flags.keep === true) process.stdout.write(`kept ${base}\n`);
  else rmSync(base, { recursive: true, force: true });
}
