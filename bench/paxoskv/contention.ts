/**
 * Hot keys written through every replica: the duel workload. A local 3-replica PaxosKV cluster
 * (fsync on) under the load of the membership tests (test/support/kv-load.ts): six clients in a
 * closed loop over six keys, 35% gets, 25% puts, 10% deletes, 30% compare-and-sets; client i
 * starts at replica i mod 3, so each key's operations arrive at all three replicas, whose
 * proposers and reads preempt each other. It prints the cost of those duels:
 * write latency (p50, p99, max), the longest stretch without an acknowledged write, writes/s, the
 * replicas' CPU per operation, and the outcomes (failed compare-and-sets, writes whose outcome the
 * client could not learn, other errors; counted over the measured clients' run).
 *
 *   npm run build && npx tsx bench/paxoskv/contention.ts [--clients 6] [--duration 10s] [--warmup 2s] [--rounds 3]
 *
 * Each round runs on a fresh cluster: clients load it for `--warmup` and stop, then new clients
 * (new write sessions, on keys with a history: a client restart) are measured. To compare two
 * trees, run it in each in turn (the replicas run the tree's built CLI). Everything on 127.0.0.1;
 * every process it starts it stops.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Command } from 'commander';
import { durationOption, intOption } from '../../framework/cli/flags.js';
import { KvLoad } from '../../test/support/kv-load.js';
import { startPaxosKV, stopAll } from './cluster.js';

const KEYS = ['k0', 'k1', 'k2', 'k3', 'k4', 'k5'];

/** What one round measured. */
interface Round {
  writesPerSecond: number;
  write: { p50: number; p99: number; max: number };
  /** Writes that took over 100 ms. */
  over100: number;
  longestGap: { ms: number; atS: number };
  serverCpuMsPerOp: number;
  counts: KvLoad['counts'];
  /** Errors other than the expected ones (see KvLoad.unexpected). */
  unexpected: number;
}

/**
 * One round: a fresh cluster, warm-up clients for `warmupMs`, then new clients measured for `durationMs` (ms).
 * @returns what it measured.
 */
async function round(clients: number, durationMs: number, warmupMs: number, seed: number): Promise<Round> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'svrkit-contention-'));
  const cluster = await startPaxosKV(dir);
  try {
    // The warm-up's clients stop before the measured ones start (new sessions, on keys that have
    // a history: a client restart).
    const warm = new KvLoad(() => cluster.peers, { clients, keys: KEYS, seed: seed + 1000 });
    await new Promise((r) => setTimeout(r, warmupMs));
    await warm.stop();
    const load = new KvLoad(() => cluster.peers, { clients, keys: KEYS, seed });
    const from = performance.now();
    const s0 = cluster.members.map((m) => m.cpuSeconds());
    const ops0 = total(load.counts);
    await new Promise((r) => setTimeout(r, durationMs));
    const to = performance.now();
    const serverCpuS = cluster.members.reduce((sum, m, i) => sum + m.cpuSeconds() - s0[i]!, 0);
    const ops = total(load.counts) - ops0;
    await load.stop();
    const lat = load.acked.filter((w) => w.call >= from && w.ret <= to).map((w) => w.ret - w.call).sort((a, b) => a - b);
    const q = (p: number) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] ?? NaN;
    const gap = load.longestWriteGap(from, to);
    return {
      writesPerSecond: (lat.length * 1000) / (to - from),
      write: { p50: q(0.5), p99: q(0.99), max: lat[lat.length - 1] ?? NaN },
      over100: lat.filter((l) => l > 100).length,
      longestGap: { ms: gap.ms, atS: (gap.at - from) / 1000 },
      serverCpuMsPerOp: (serverCpuS * 1000) / ops,
      counts: load.counts,
      unexpected: load.unexpected.length,
    };
  } finally {
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

function total(c: KvLoad['counts']): number {
  return c.get + c.put + c.delete + c.cas + c.casFailed + c.unknown + c.failedGets;
}

async function main(): Promise<void> {
  const opts = new Command('contention')
    .description('hot keys written through every replica of a local 3-replica PaxosKV cluster')
    .option('--clients <n>', 'clients, each one operation at a time', intOption('--clients', 1, 1000), 6)
    .option('-d, --duration <time>', 'measured length of each round', durationOption('--duration'), 10_000)
    .option('--warmup <time>', 'load before each round\'s measured part', durationOption('--warmup'), 2000)
    .option('--rounds <n>', 'rounds, each on a fresh cluster', intOption('--rounds', 1, 100), 3)
    .parse()
    .opts<{ clients: number; duration: number; warmup: number; rounds: number }>();
  const f = (n: number) => n.toFixed(1);
  console.log(`workload: ${KEYS.length} keys, ${opts.clients} clients (test/support/kv-load.ts's mix), client i starts at replica i mod 3; ${opts.duration / 1000} s measured after ${opts.warmup / 1000} s`);
  console.log('| round | writes/s | write p50 ms | write p99 ms | write max ms | writes over 100 ms | longest stretch without a write ms (at s) | server CPU ms/op | cas failed | unknown outcomes | other errors |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|');
  for (let r = 1; r <= opts.rounds; r++) {
    const x = await round(opts.clients, opts.duration, opts.warmup, 0x6a0 + r);
    console.log(
      `| ${r} | ${Math.round(x.writesPerSecond)} | ${f(x.write.p50)} | ${f(x.write.p99)} | ${f(x.write.max)} | ${x.over100} | ${Math.round(x.longestGap.ms)} (${x.longestGap.atS.toFixed(1)}) | ${x.serverCpuMsPerOp.toFixed(2)} | ${x.counts.casFailed} | ${x.counts.unknown} | ${x.unexpected} |`,
    );
  }
}

main().catch(async (err: unknown) => {
  console.error(err instanceof Error ? err.message : String(err));
  await stopAll();
  process.exit(1);
});
