/**
 * Throughput and CPU per operation against the number of PaxosKV groups (issue 16): 1, 2 and 4
 * groups of 3 replicas (`kv serve --group`), keys routed over them by the routing table, serving
 * PaxosStore's stress workload (120-byte values, 3.3 reads per write, closed loop) through
 * routing-aware clients that start knowing group 1's replicas only.
 *
 *   npm run build && npx tsx bench/paxoskv/groups.ts [--groups 1,2,4] [--concurrency 64] [--duration 15s] [--rounds 2] [--loads all,one]
 *
 * The offered load grows with the groups, as it does when a cluster scales out: `--concurrency`
 * operations in flight per group, over 10,000 keys per group. One group is a plain cluster (no
 * --group: nothing routed), the baseline. Two runs per group count:
 * - `all`: every group loaded (64 x G in flight). On this 2-core machine the 3 x G replicas share
 *   the two cores, so ops/s cannot grow, and each replica gets a G-th of the CPU: it serves a G-th
 *   of the operations per second, in smaller batches (peer messages, group commits) that cost more
 *   per operation, and the processes switch in and out. What this machine does, not what separate
 *   machines would.
 * - `one`: the same cluster, the load on group 1's keys only (64 in flight), the other groups up
 *   and idle: a group of a G-group cluster at the load of the 1-group cluster, which is what each
 *   group runs on its own machines. Its CPU per operation against the plain 1-group cluster's is
 *   the scaling figure, with what many groups add in it: the routing (a hash of each key on the
 *   client and the replica), the system group's table, idle groups.
 * Each round runs every group count on a fresh cluster with the keys preloaded (not timed), in
 * alternating order (1,2,4 then 4,2,1), so drift on this noisy machine falls on both sides. CPU is
 * all replicas' (from /proc) and the client's. Everything on 127.0.0.1; every process it starts it
 * stops.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { parseDuration } from '../../framework/cli/bench.js';
import { PaxosKVClient } from '../../services/paxoskv/client.js';
import { RoutingRing, type RoutingTable } from '../../services/paxoskv/routing.js';
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
  .option('--concurrency <n>', 'operations in flight per group', positiveInt, 64)
  .option('--duration <time>', 'length of each run', (v: string) => parseDuration(v), 15_000)
  .option('--rounds <n>', 'rounds (each measures every group count once, alternating the order)', positiveInt, 2)
  .option('--loads <list>', 'which runs per group count above 1: all (every group loaded), one (group 1 only), or both', (v: string) => {
    const list = v.split(',').map((x) => x.trim());
    if (list.length === 0 || list.some((x) => x !== 'all' && x !== 'one')) throw new InvalidArgumentError(`'${v}' is not a list of all and one`);
    return list as Array<'all' | 'one'>;
  }, ['all', 'one'] as Array<'all' | 'one'>)
  .option('--keep', 'keep the temp dir (data and logs)')
  .parse();
const flags = program.opts<{ groups: number[]; concurrency: number; duration: number; rounds: number; loads: Array<'all' | 'one'>; keep?: boolean }>();

interface Figure {
  groups: number;
  mode: 'all' | 'one';
  opsPerSecond: number;
  serverCpuMsPerOp: number;
  clientCpuMsPerOp: number;
  readP99: number;
  writeP99: number;
  otherBusyS: number;
  /** CPU seconds of group 1's replicas, and of the other groups' (idle in `one`). */
  group1CpuS: number;
  otherGroupsCpuS: number;
  failed: number;
}

/**
 * One run: a fresh cluster of `groups` groups, preloaded, then the workload for the duration, on
 * every group (`all`) or on group 1's keys only (`one`).
 */
async function measure(dir: string, groups: number, mode: 'all' | 'one'): Promise<Figure> {
  const loaded = mode === 'all' ? groups : 1;
  const shape = { ...PAXOSSTORE_STRESS, keys: PAXOSSTORE_STRESS.keys * loaded };
  const cluster = await startPaxosKVGroups(dir, groups);
  // Every client starts at replica 1, of the one group and of each group alike (a client tries a
  // group's replicas in the table's order).
  const clients = [0, 1, 2, 3].map(() => new PaxosKVClient({ peers: cluster.groups[0]!, attemptTimeoutMs: 500 }));
  try {
    let key = (k: string): string => k;
    if (groups > 1) {
      const table: RoutingTable = { epoch: 1, groups: cluster.groups.map((replicas, g) => ({ id: g + 1, replicas })) };
      if (mode === 'one') {
        // Each workload key stands for the first `<key>-<n>` of group 1.
        const ring = new RoutingRing(table);
        const of = new Map<string, string>();
        key = (k) => {
          let v = of.get(k);
          for (let n = 0; v === undefined; n++) if (ring.groupOf(`${k}-${n}`) === 1) v = `${k}-${n}`;
          of.set(k, v);
          return v;
        };
      }
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
    const targets: KvTarget[] = clients.map((c) => ({ get: (k) => c.get(key(k)), put: (k, v) => c.put(key(k), v) }));
    await preload(targets, 128, shape);
    const s0 = cluster.members.map((m) => m.cpuSeconds());
    const c0 = process.cpuUsage();
    const m0 = machineBusySeconds();
    const r = await runWorkload({ targets, concurrency: flags.concurrency * loaded, durationMs: flags.duration, shape });
    const machine = machineBusySeconds() - m0;
    const c = process.cpuUsage(c0);
    const used = cluster.members.map((m, i) => m.cpuSeconds() - s0[i]!);
    const serverS = used.reduce((a, b) => a + b, 0);
    const group1S = used.slice(0, 3).reduce((a, b) => a + b, 0);
    const clientS = (c.user + c.system) / 1e6;
    const ops = r.reads.ok + r.writes.ok;
    return {
      groups,
      mode,
      opsPerSecond: r.okPerSecond,
      serverCpuMsPerOp: (serverS * 1000) / ops,
      clientCpuMsPerOp: (clientS * 1000) / ops,
      readP99: r.reads.latencyMs.p99,
      writeP99: r.writes.latencyMs.p99,
      otherBusyS: machine - serverS - clientS,
      group1CpuS: group1S,
      otherGroupsCpuS: serverS - group1S,
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
    `paxoskv groups bench: ${PAXOSSTORE_STRESS.keys} keys of ${PAXOSSTORE_STRESS.valueBytes} B per group, ${PAXOSSTORE_STRESS.readsPerWrite} reads per write, ${flags.concurrency} in flight per group, ` +
      `runs of ${flags.duration / 1000} s, groups ${flags.groups.join(',')}, ${flags.rounds} round(s), ${os.cpus().length} CPUs, node ${process.version}\n` +
      '  groups  load    ops/s  replicas CPU ms/op  client CPU ms/op  total ms/op  vs 1 group  read p99  write p99  failed  other load (CPU s)  group 1 / other groups (CPU s)\n',
  );
  for (let round = 1; round <= flags.rounds; round++) {
    const order = round % 2 === 1 ? flags.groups : [...flags.groups].reverse();
    const results: Figure[] = [];
    for (const g of order) {
      const modes: Array<'all' | 'one'> = g === 1 ? ['all'] : round % 2 === 1 ? flags.loads : [...flags.loads].reverse();
      for (const mode of modes) results.push(await measure(path.join(base, `round-${round}-groups-${g}-${mode}`), g, mode));
    }
    const one = results.find((f) => f.groups === 1);
    for (const f of results) {
      all.push(f);
      const total = f.serverCpuMsPerOp + f.clientCpuMsPerOp;
      const ratio = one === undefined ? '-' : `${(total / (one.serverCpuMsPerOp + one.clientCpuMsPerOp)).toFixed(2)}x`;
      process.stdout.write(
        `  ${String(f.groups).padStart(6)}  ${f.mode.padEnd(4)}  ${Math.round(f.opsPerSecond).toString().padStart(7)}  ${f.serverCpuMsPerOp.toFixed(3).padStart(19)}  ` +
          `${f.clientCpuMsPerOp.toFixed(3).padStart(16)}  ${total.toFixed(3).padStart(11)}  ${ratio.padStart(10)}  ` +
          `${f.readP99.toFixed(1).padStart(8)}  ${f.writeP99.toFixed(1).padStart(9)}  ${String(f.failed).padStart(6)}  ${f.otherBusyS.toFixed(1).padStart(18)}  ${`${f.group1CpuS.toFixed(1)} / ${f.otherGroupsCpuS.toFixed(1)}`.padStart(30)}   (round ${round})\n`,
      );
    }
  }
} finally {
  await stopAll();
  if (flags.keep === true) process.stdout.write(`kept ${base}\n`);
  else rmSync(base, { recursive: true, force: true });
}
