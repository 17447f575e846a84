/**
 * Throughput and CPU per operation against the number of PaxosKV groups (issue 16): 1, 2 and 4
 * groups of 3 replicas (`kv serve --group`), keys routed over them by the routing table, serving
 * PaxosStore's stress workload (120-byte values, 3.3 reads per write, closed loop) through
 * routing-aware clients that start knowing group 1's replicas only.
 *
 *   npm run build && npx tsx bench/paxoskv/groups.ts [--groups 1,2,4] [--concurrency 64] [--duration 15s] [--rounds 2]
 *
 * One group is a plain cluster (no --group: nothing routed), the baseline. Each round runs every
 * group count once, each on a fresh cluster with the keys preloaded (not timed), in alternating
 * order (1,2,4 then 4,2,1), so drift on this noisy machine falls on both sides. On this 2-core
 * machine every process shares the cores, so ops/s cannot grow with groups here; CPU-seconds per
 * operation (all replicas', from /proc, and the client's) tells how it would scale on separate
 * machines. Everything on 127.0.0.1; every process it starts it stops.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { parseDuration } from '../../framework/cli/bench.js';
import { PaxosKVClient } from '../../services/paxoskv/client.js';
import type { RoutingTable } from '../../services/paxoskv/routing.js';
import { machineBusySeconds, startPaxosKVGroups, stopAll } from './cluster.js';
import { PAXOSSTORE_STRESS, preload, runWorkload, type KvTarget } from './workload.js';

const positiveInt = (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`'${v}' is not a positive integer`);
  return n;
};
const groupList = (v: string): number[] => {
  const list = v.split(',').map((x) => positiveInt(x.trim()));
  if (list.some((g) => g > 8)) throw new InvalidArgumentError('at most 8 groups (24 processes on this machine)');
  return list;
};

const program = new Command('groups')
  .option('--groups <list>', 'group counts to measure', groupList, [1, 2, 4])
  .option('--concurrency <n>', 'operations in flight', positiveInt, 64)
  .option('--duration <time>', 'length of each run', (v: string) => parseDuration(v), 15_000)
  .option('--rounds <n>', 'rounds (each measures every group count once, alternating the order)', positiveInt, 2)
  .option('--keep', 'keep the temp dir (data and logs)')
  .parse();
const flags = program.opts<{ groups: number[]; concurrency: number; duration: number; rounds: number; keep?: boolean }>();
const shape = PAXOSSTORE_STRESS;

interface Figure {
  groups: number;
  opsPerSecond: number;
  serverCpuMsPerOp: number;
  clientCpuMsPerOp: number;
  readP99: number;
  writeP99: number;
  otherBusyS: number;
  failed: number;
}

/** One run: a fresh cluster of `groups` groups, preloaded, then the workload for the duration. */
async function measure(dir: string, groups: number): Promise<Figure> {
  const cluster = await startPaxosKVGroups(dir, groups);
  const clients = [0, 1, 2, 3].map((j) => new PaxosKVClient({ peers: [...cluster.groups[0]!.slice(j % 3), ...cluster.groups[0]!.slice(0, j % 3)], attemptTimeoutMs: 500 }));
  try {
    if (groups > 1) {
      const table: RoutingTable = { epoch: 1, groups: cluster.groups.map((replicas, g) => ({ id: g + 1, replicas })) };
      for (let attempt = 0; ; attempt++) {
        try {
          await clients[0]!.setRoutingTable(table, { timeoutMs: 3000 });
          break;
        } catch (err) {
          if (attempt >= 20) throw err;
          await new Promise((r) => setTimeout(r, 500));
        }
      }
    }
    const targets: KvTarget[] = clients.map((c) => ({ get: (k) => c.get(k), put: (k, v) => c.put(k, v) }));
    await preload(targets, 128, shape);
    const s0 = cluster.members.map((m) => m.cpuSeconds());
    const c0 = process.cpuUsage();
    const m0 = machineBusySeconds();
    const r = await runWorkload({ targets, concurrency: flags.concurrency, durationMs: flags.duration, shape });
    const machine = machineBusySeconds() - m0;
    const c = process.cpuUsage(c0);
    const serverS = cluster.members.reduce((a, m, i) => a + m.cpuSeconds() - s0[i]!, 0);
    const clientS = (c.user + c.system) / 1e6;
    const ops = r.reads.ok + r.writes.ok;
    return {
      groups,
      opsPerSecond: r.okPerSecond,
      serverCpuMsPerOp: (serverS * 1000) / ops,
      clientCpuMsPerOp: (clientS * 1000) / ops,
      readP99: r.reads.latencyMs.p99,
      writeP99: r.writes.latencyMs.p99,
      otherBusyS: machine - serverS - clientS,
      failed: r.reads.failed + r.writes.failed,
    };
  } finally {
    for (const c of clients) c.close();
    await stopAll();
  }
}

const base = mkdtempSync(path.join(os.tmpdir(), 'svrkit-groups-'));
const all: Figure[] = [];
try {
  process.stdout.write(
    `paxoskv groups bench: ${shape.keys} keys of ${shape.valueBytes} B, ${shape.readsPerWrite} reads per write, concurrency ${flags.concurrency}, ` +
      `runs of ${flags.duration / 1000} s, groups ${flags.groups.join(',')}, ${flags.rounds} round(s), ${os.cpus().length} CPUs, node ${process.version}\n` +
      '  groups    ops/s  replicas CPU ms/op  client CPU ms/op  total ms/op  vs 1 group  read p99  write p99  failed  other load (CPU s)\n',
  );
  for (let round = 1; round <= flags.rounds; round++) {
    const order = round % 2 === 1 ? flags.groups : [...flags.groups].reverse();
    const baseline = new Map<number, number>();
    const results: Figure[] = [];
    for (const g of order) {
      const f = await measure(path.join(base, `round-${round}-groups-${g}`), g);
      results.push(f);
      all.push(f);
      if (g === 1) baseline.set(round, f.serverCpuMsPerOp + f.clientCpuMsPerOp);
    }
    for (const f of results) {
      const total = f.serverCpuMsPerOp + f.clientCpuMsPerOp;
      const one = baseline.get(round);
      process.stdout.write(
        `  ${String(f.groups).padStart(6)}  ${Math.round(f.opsPerSecond).toString().padStart(7)}  ${f.serverCpuMsPerOp.toFixed(3).padStart(19)}  ` +
          `${f.clientCpuMsPerOp.toFixed(3).padStart(16)}  ${total.toFixed(3).padStart(11)}  ${one === undefined ? '         -' : `${(total / one).toFixed(2)}x`.padStart(10)}  ` +
          `${f.readP99.toFixed(1).padStart(8)}  ${f.writeP99.toFixed(1).padStart(9)}  ${String(f.failed).padStart(6)}  ${f.otherBusyS.toFixed(1).padStart(18)}   (round ${round})\n`,
      );
    }
  }
} finally {
  await stopAll();
  if (flags.keep === true) process.stdout.write(`kept ${base}\n`);
  else rmSync(base, { recursive: true, force: true });
}
