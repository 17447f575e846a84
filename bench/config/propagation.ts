/**
 * How fast a config change reaches its watchers: the time from a publish's acknowledgement to its
 * arrival at every `ConfigClient`, on a local 3-replica PaxosKV cluster (three `svrkit kv serve`
 * processes), side by side with etcd's watch of one key when etcd is installed.
 *
 *   npm run build && npx tsx bench/config/propagation.ts [--watchers 1000,10000] [--rounds 10] [--via paxoskv,config-serve] [--etcd auto|on|off]
 *
 * For each watcher count W: W watchers in this process (`ConfigClient`s on one namespace; every
 * 90 share a `PaxosKVClient`, so a replica's connection carries at most 90 watch streams, under
 * its 100-stream limit; the clients start on replicas 1, 2, 3 in turn), then `--rounds` publishes
 * one after another; each round records, for every watcher, when its head reached the published
 * operation, and the latency is that time minus the moment `publish` resolved (0 when the change
 * arrived first: a watcher can hear of a decision before its writer does). It prints p50, p99 and
 * max over all watchers and rounds, the same from the moment the write started (the write's own
 * time included), and how many changes never arrived within 10 s.
 *
 * `--via config-serve`: the same watchers on `svrkit config serve` (one process over the cluster,
 * every 90 sharing a `ConfigCenterClient`): that process holds one PaxosKV watch for the namespace
 * and fans each head out; the replicas carry 1 watch instead of W. It also prints the CPU seconds
 * the replicas, and the config server, used over the rounds.
 *
 * etcd: W `watch().key(k)` watchers (every 90 on one `Etcd3` client), `put` and the same timing,
 * on a local 3-member etcd cluster.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Command, InvalidArgumentError } from 'commander';
import { ConfigAdmin, ConfigCenterClient, ConfigClient, PaxosKVClient } from '../../index.js';
import { findEtcd, startConfigServe, startEtcd, startPaxosKV, stopAll, type Member } from '../paxoskv/cluster.js';

const program = new Command()
  .option('--watchers <list>', 'watcher counts, comma-separated', (v) => v.split(',').map((s) => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`--watchers: '${s}' is not a positive integer`);
    return n;
  }), [1000, 10_000])
  .option('--rounds <n>', 'publishes per watcher count', (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`--rounds: '${v}' is not a positive integer`);
    return n;
  }, 10)
  .option('--via <list>', 'how the watchers follow: paxoskv (the replicas\' watch), config-serve (a svrkit config serve process), comma-separated', (v) => v.split(',').map((s) => {
    if (s !== 'paxoskv' && s !== 'config-serve') throw new InvalidArgumentError(`--via: '${s}' is not paxoskv or config-serve`);
    return s;
  }), ['paxoskv', 'config-serve'])
  .option('--etcd <mode>', 'auto (when installed), on, off', 'auto')
  .parse();
const opts = program.opts<{ watchers: number[]; rounds: number; via: string[]; etcd: string }>();

const PER_CLIENT = 90;
const ARRIVAL_TIMEOUT_MS = 10_000;

interface Stats {
  /** From the write's acknowledgement (0 when the change arrived first). */
  p50: number;
  p99: number;
  max: number;
  /** From the moment the write was started (includes the write itself). */
  startP50: number;
  startP99: number;
  missed: number;
  samples: number;
}

function stats(fromAck: number[], fromStart: number[], missed: number): Stats {
  const sorted = (x: number[]) => [...x].sort((a, b) => a - b);
  const s = sorted(fromAck);
  const t = sorted(fromStart);
  const at = (a: number[], q: number) => a[Math.min(a.length - 1, Math.floor(q * a.length))] ?? NaN;
  return { p50: at(s, 0.5), p99: at(s, 0.99), max: s.at(-1) ?? NaN, startP50: at(t, 0.5), startP99: at(t, 0.99), missed, samples: s.length };
}

const ms = (x: number) => (Number.isNaN(x) ? '-' : x.toFixed(1));

/**
 * The arrival times of one change at every watcher, round after round: watchers call `arrived(i)`
 * when watcher i has the round's change; `round(write)` runs one write and collects the times.
 */
class Rounds {
  private readonly arrival: Float64Array;
  private count = 0;
  private allArrived: (() => void) | undefined;
  private readonly fromAck: number[] = [];
  private readonly fromStart: number[] = [];
  private missed = 0;

  constructor(private readonly watchers: number) {
    this.arrival = new Float64Array(watchers);
  }

  /** Watcher `i` has this round's change (now); later calls for it count nothing. */
  arrived(i: number): void {
    if (this.arrival[i] !== 0) return;
    this.arrival[i] = performance.now();
    if (++this.count === this.watchers) this.allArrived?.();
  }

  /** Runs `write`, then waits (at most 10 s) until every watcher has the change, and records the times. */
  async round(write: () => Promise<void>): Promise<void> {
    this.arrival.fill(0);
    this.count = 0;
    const done = new Promise<void>((r) => (this.allArrived = r));
    const started = performance.now();
    await write();
    const acked = performance.now();
    if (this.count < this.watchers) await Promise.race([done, new Promise((r) => setTimeout(r, ARRIVAL_TIMEOUT_MS))]);
    for (const a of this.arrival) {
      if (a === 0) this.missed++;
      else {
        this.fromAck.push(Math.max(0, a - acked));
        this.fromStart.push(a - started);
      }
    }
    await new Promise((r) => setTimeout(r, 200));
  }

  stats(): Stats {
    return stats(this.fromAck, this.fromStart, this.missed);
  }
}

/**
 * W ConfigClients on one namespace, directly on the replicas (`server` undefined) or on a config
 * server, and `rounds` publishes.
 * @returns the arrival statistics, and the CPU seconds `measured` processes used over the rounds.
 */
async function configRun(peers: string[], watchers: number, rounds: number, server: string | undefined, replicas: readonly Member[], serve: Member | undefined): Promise<Stats & { cpu: number; serveCpu: number }> {
  const ns = `bench.w${watchers}.${Date.now()}`;
  const adminKv = new PaxosKVClient({ peers });
  const admin = new ConfigAdmin(adminKv, { by: 'bench' });
  await admin.publish(ns, { set: { round: '0' }, delete: [] });
  const shared: Array<PaxosKVClient | ConfigCenterClient> = [];
  for (let i = 0; i < Math.ceil(watchers / PER_CLIENT); i++) {
    const k = i % peers.length;
    shared.push(server === undefined ? new PaxosKVClient({ peers: [...peers.slice(k), ...peers.slice(0, k)] }) : new ConfigCenterClient(server));
  }
  const timing = new Rounds(watchers);
  let target = Infinity;
  let cpu = 0;
  let serveCpu = 0;
  const clients = Array.from({ length: watchers }, (_, i) => {
    const c = new ConfigClient({ target: shared[Math.floor(i / PER_CLIENT)]!, namespace: ns });
    c.onChange(({ head }) => {
      if (head.opSeq >= target) timing.arrived(i);
    });
    return c;
  });
  try {
    await Promise.all(clients.map((c) => c.ready()));
    for (let t = 0; t < 30_000 && clients.some((c) => c.head.opSeq < 1); t += 20) await new Promise((r) => setTimeout(r, 20));
    const cpuAt = (): number => replicas.reduce((sum, m) => sum + m.cpuSeconds(), 0);
    const cpuStart = cpuAt();
    const serveStart = serve?.cpuSeconds() ?? 0;
    for (let round = 1; round <= rounds; round++) {
      target = (await admin.head(ns)).head.opSeq + 1;
      await timing.round(async () => {
        const head = await admin.publish(ns, { set: { round: String(round) }, delete: [] });
        if (head.opSeq !== target) throw new Error(`unexpected operation ${head.opSeq}, expected ${target}`);
      });
    }
    cpu = cpuAt() - cpuStart;
    serveCpu = (serve?.cpuSeconds() ?? 0) - serveStart;
  } finally {
    for (const c of clients) await c.close();
    for (const k of shared) k.close();
    adminKv.close();
  }
  return { ...timing.stats(), cpu, serveCpu };
}

async function etcdRun(endpoints: string[], watchers: number, rounds: number): Promise<Stats> {
  const { Etcd3 } = await import('etcd3');
  const key = `bench/w${watchers}/${Date.now()}`;
  const writer = new Etcd3({ hosts: endpoints });
  const clients = Array.from({ length: Math.ceil(watchers / PER_CLIENT) }, (_, i) => new Etcd3({ hosts: [...endpoints.slice(i % endpoints.length), ...endpoints.slice(0, i % endpoints.length)] }));
  const timing = new Rounds(watchers);
  let expect = '';
  const ws = await Promise.all(
    Array.from({ length: watchers }, async (_, i) => {
      const w = await clients[Math.floor(i / PER_CLIENT)]!.watch().key(key).create();
      w.on('put', (kv) => {
        if (kv.value.toString() === expect) timing.arrived(i);
      });
      return w;
    }),
  );
  try {
    for (let round = 1; round <= rounds; round++) {
      expect = `round-${round}`;
      await timing.round(async () => {
        await writer.put(key).value(expect);
      });
    }
  } finally {
    await Promise.all(ws.map((w) => w.cancel().catch(() => undefined)));
    for (const c of clients) c.close();
    writer.close();
  }
  return timing.stats();
}

const dir = mkdtempSync(path.join(os.tmpdir(), 'config-propagation-'));
try {
  console.log(`config propagation: node ${process.version}, ${os.cpus().length} CPUs; watchers ${opts.watchers.join(', ')}; ${opts.rounds} publishes each`);
  const kv = await startPaxosKV(path.join(dir, 'paxoskv'));
  const configServe = opts.via.includes('config-serve') ? await startConfigServe(dir, kv) : undefined;
  const etcdBin = opts.etcd === 'off' ? undefined : findEtcd();
  if (opts.etcd === 'on' && etcdBin === undefined) throw new Error('--etcd on: no etcd binary on the PATH');
  const etcd =
    etcdBin === undefined
      ? undefined
      : await startEtcd(etcdBin, path.join(dir, 'etcd'), async (endpoints) => {
          const { Etcd3 } = await import('etcd3');
          const c = new Etcd3({ hosts: endpoints });
          try {
            await c.put('ready').value('1');
            return true;
          } catch {
            return false;
          } finally {
            c.close();
          }
        });
  const rows: string[] = [];
  for (const w of opts.watchers) {
    for (const via of opts.via) {
      const server = via === 'config-serve' ? configServe! : undefined;
      const p = await configRun(kv.peers, w, opts.rounds, server?.address, kv.members, server?.member);
      const name = server === undefined ? 'svrkit config (PaxosKV watch)' : 'svrkit config (via config serve)';
      rows.push(`| ${name} | ${w} | ${ms(p.p50)} | ${ms(p.p99)} | ${ms(p.max)} | ${ms(p.startP50)} / ${ms(p.startP99)} | ${p.missed} of ${p.samples + p.missed} | ${p.cpu.toFixed(2)} | ${server === undefined ? '-' : p.serveCpu.toFixed(2)} |`);
      console.log(rows.at(-1));
    }
    if (etcd !== undefined) {
      const e = await etcdRun(etcd.endpoints, w, opts.rounds);
      rows.push(`| etcd watch (etcd3) | ${w} | ${ms(e.p50)} | ${ms(e.p99)} | ${ms(e.max)} | ${ms(e.startP50)} / ${ms(e.startP99)} | ${e.missed} of ${e.samples + e.missed} | - | - |`);
      console.log(rows.at(-1));
    }
  }
  console.log(`\n| system | watchers | p50 ms | p99 ms | max ms | from the write's start p50 / p99 ms | not arrived in 10 s | replicas' CPU s | config serve CPU s |\n|---|---|---|---|---|---|---|---|---|\n${rows.join('\n')}`);
  if (etcd === undefined) console.log(`etcd: ${opts.etcd === 'off' ? 'off (--etcd off)' : 'not installed'}`);
} finally {
  await stopAll();
  rmSync(dir, { recursive: true, force: true });
}
