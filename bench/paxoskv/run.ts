/**
 * PaxosKV against etcd, side by side in one run, on 127.0.0.1, with PaxosStore's stress workload.
 *
 *   npx tsx bench/paxoskv/run.ts [--duration 10s] [--concurrency 64,256] [--etcd auto|on|off]
 *
 * 1. start a fresh 3-member cluster of each system in a temp dir (three `svrkit kv serve`
 *    processes; three `etcd` processes, when etcd is there), write every one of the 10,000 keys
 *    once (not timed), and run an unreported `--warmup` (3 s at the first concurrency: JIT and
 *    heaps of clients and servers);
 * 2. `--rounds` times, for each concurrency, for each system in turn (alternating, so machine
 *    noise hits both; the idle cluster costs next to nothing), run the workload (workload.ts: 120-byte values,
 *    reads:writes 3.3:1, uniform keys) closed-loop for `--duration`, and print ok ops/s, read and
 *    write p50/p99, errors by status, and the CPU seconds the servers, this (client) process and
 *    everything else on the machine used (the last from /proc/stat: a busy machine skews results);
 * 3. failover: a `--failover-duration` run at concurrency `--failover-concurrency` that SIGKILLs one
 *    PaxosKV replica (replica 1), or the etcd leader, at `--kill-at`, and prints successes and
 *    failures per 100 ms, the longest stretch without a successful write, and the failures that
 *    reached the client. etcd's failover runs once per etcd3 fault-handling setting in
 *    `--etcd-breaker` (its default per-host circuit breaker, or none), the first on the cluster
 *    of the throughput runs, the next on a fresh one.
 *
 * Clients: every run gets fresh client objects, `--clients` of them (default 6), each connected
 * to all three members. PaxosKVClient j tries replica (j mod 3)+1 first,
 * so the load starts spread evenly over the replicas;
 * worker i (one operation in flight) uses client i mod clients. A PaxosKVClient sticks to one
 * replica and moves to the next when it answers UNAVAILABLE or not within `--attempt-timeout`
 * (default 500 ms); an interceptor on its channels counts such failed attempts, which the client
 * retries and so hides.
 * etcd gets the same number of Etcd3 objects (each with all three endpoints and its own
 * connections); etcd3 picks a random endpoint per call, followers forward to the leader.
 *
 * Needs `npm run build` first (the replicas run dist/). Everything it starts it stops, also on
 * Ctrl-C; the temp dir is removed unless `--keep`.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { Etcd3, isRecoverableError, type IOptions } from 'etcd3';
import { parseDuration } from '../../framework/cli/bench.js';
import type { ClientInterceptor } from '../../framework/client/channel.js';
import { PaxosKVClient } from '../../services/paxoskv/client.js';
import { etcdVersion, findEtcd, machineBusySeconds, startEtcd, startPaxosKV, stopAll, type Member } from './cluster.js';
import { errorName, PAXOSSTORE_STRESS, preload, runWorkload, type KvTarget, type OpStats, type WorkloadResult } from './workload.js';

interface Flags {
  duration: number;
  warmup: number;
  concurrency: number[];
  rounds: number;
  etcd: 'auto' | 'on' | 'off';
  clients: number;
  attemptTimeout: number;
  failover: boolean;
  failoverDuration: number;
  failoverConcurrency: number;
  killAt: number;
  etcdBreaker: 'off' | 'on' | 'both';
  json?: string;
  keep: boolean;
}

/** One measured run. */
interface Row {
  system: string;
  /** 'throughput' or 'failover'. */
  kind: 'throughput' | 'failover';
  result: WorkloadResult;
  serverCpuS: number;
  clientCpuS: number;
  /** CPU seconds used by processes other than the servers and this one during the run (machine busy time minus ours). */
  otherCpuS: number;
  /** Failover runs: what was killed and when (ms after the run started). */
  killed?: { name: string; atMs: number };
  /** PaxosKV: failed attempts against one replica, by status, including those the client retried. */
  attemptErrors?: Record<string, number>;
}

/**
 * Counts failed attempts (one replica, one try) of the PaxosKV clients: the client retries
 * UNAVAILABLE and DEADLINE_EXCEEDED on the next replica, so these are not visible otherwise.
 */
const attemptErrors = new Map<string, number>();
const countAttempts: ClientInterceptor = (next) => async (request, call) => {
  try {
    return await next(request, call);
  } catch (err) {
    const k = errorName(err);
    attemptErrors.set(k, (attemptErrors.get(k) ?? 0) + 1);
    throw err;
  }
};
function takeAttemptErrors(): Record<string, number> {
  const r = Object.fromEntries(attemptErrors);
  attemptErrors.clear();
  return r;
}
function attemptsText(r: Row): string {
  if (r.attemptErrors === undefined) return '';
  const e = Object.entries(r.attemptErrors);
  return `; failed attempts inside the client (retried on another replica unless the call failed): ${e.length === 0 ? 'none' : e.map(([k, v]) => `${k} ${v}`).join(', ')}`;
}

// -----------------------------------------------------------------------------------------------
// Formatting

const int = (n: number) => Math.round(n).toLocaleString('en-US');
const ms = (n: number) => n.toFixed(2);
const out = (s = '') => process.stdout.write(s + '\n');

function errorsText(s: OpStats): string {
  const e = Object.entries(s.errors);
  return e.length === 0 ? 'none' : e.map(([k, v]) => `${k} ${int(v)}`).join(', ');
}

function printThroughput(r: Row): void {
  const x = r.result;
  out(`  ${r.system} c=${x.concurrency}: ${int(x.okPerSecond)} ok ops/s over ${(x.durationMs / 1000).toFixed(2)} s ` +
    `(${int(x.reads.ok)} reads, ${int(x.writes.ok)} writes ok); CPU s: servers ${r.serverCpuS.toFixed(2)}, client ${r.clientCpuS.toFixed(2)}, other processes ${r.otherCpuS.toFixed(2)}`);
  for (const [name, s] of [['reads ', x.reads], ['writes', x.writes]] as const) {
    out(`    ${name}  p50 ${ms(s.latencyMs.p50)}  p90 ${ms(s.latencyMs.p90)}  p99 ${ms(s.latencyMs.p99)}  p99.9 ${ms(s.latencyMs.p999)}  max ${ms(s.latencyMs.max)} ms; errors: ${errorsText(s)}`);
  }
  if (r.attemptErrors !== undefined) out(`    ${attemptsText(r).slice(2)}`);
  samples(x);
}

function samples(x: WorkloadResult): void {
  for (const [k, v] of Object.entries(x.errorSamples)) out(`    first ${k}: ${v.split('\n')[0]!.slice(0, 200)}`);
}

function printFailover(r: Row): void {
  const x = r.result;
  const gap = x.longestWriteGap;
  const rgap = x.longestReadGap;
  const noWrite = x.timeline.filter((b) => b.writeOk === 0).length;
  out(`  ${r.system}: killed ${r.killed?.name ?? '?'} at ${((r.killed?.atMs ?? NaN) / 1000).toFixed(3)} s; ${int(x.okPerSecond)} ok ops/s overall; ` +
    `CPU s: servers ${r.serverCpuS.toFixed(2)}, client ${r.clientCpuS.toFixed(2)}, other processes ${r.otherCpuS.toFixed(2)}`);
  out(`    longest gap without a successful write: ${gap.ms.toFixed(0)} ms (${(gap.fromMs / 1000).toFixed(3)} s .. ${(gap.toMs / 1000).toFixed(3)} s); ` +
    `100 ms buckets without a successful write: ${noWrite} of ${x.timeline.length}`);
  out(`    longest gap without a successful read: ${rgap.ms.toFixed(0)} ms (${(rgap.fromMs / 1000).toFixed(3)} s .. ${(rgap.toMs / 1000).toFixed(3)} s)`);
  out(`    failures that reached the client: reads ${int(x.reads.failed)} (${errorsText(x.reads)}), writes ${int(x.writes.failed)} (${errorsText(x.writes)})`);
  out(`    latency, whole run: reads p99 ${ms(x.reads.latencyMs.p99)} max ${ms(x.reads.latencyMs.max)} ms, writes p99 ${ms(x.writes.latencyMs.p99)} max ${ms(x.writes.latencyMs.max)} ms; ` +
    `operations slower than 1 s: reads ${x.reads.slowerThan1s}, writes ${x.writes.slowerThan1s}`);
  if (r.attemptErrors !== undefined) out(`    ${attemptsText(r).slice(2)}`);
  samples(x);
}

/** The per-bucket table of several failover runs side by side. */
function printTimelines(rows: Row[]): void {
  if (rows.length === 0) return;
  const bucketMs = rows[0]!.result.bucketMs;
  const n = Math.max(...rows.map((r) => r.result.timeline.length));
  out(`\nper ${bucketMs} ms bucket (by completion time): writes ok/failed, reads ok/failed; * = the bucket of the kill, ! = no successful write`);
  out('| t (s) | ' + rows.map((r) => r.system).join(' | ') + ' |');
  out('|---|' + rows.map(() => '---|').join(''));
  for (let i = 0; i < n; i++) {
    const cells = rows.map((r) => {
      const b = r.result.timeline[i];
      if (b === undefined) return '';
      const kill = r.killed !== undefined && Math.floor(r.killed.atMs / bucketMs) === i ? '*' : '';
      const none = b.writeOk === 0 ? '!' : '';
      return `${kill}${none}w ${b.writeOk}/${b.writeFailed} r ${b.readOk}/${b.readFailed}`;
    });
    out(`| ${((i * bucketMs) / 1000).toFixed(1)} | ${cells.join(' | ')} |`);
  }
}

function printSummary(rows: Row[], flags: Flags, etcdNote: string): void {
  const tp = rows.filter((r) => r.kind === 'throughput');
  out(`\n== summary: ${PAXOSSTORE_STRESS.keys} keys, ${PAXOSSTORE_STRESS.valueBytes}-byte values, reads:writes ${PAXOSSTORE_STRESS.readsPerWrite}:1, ` +
    `${flags.duration / 1000} s per run, node ${process.version}, ${new Date().toISOString().slice(0, 10)}; ${etcdNote}`);
  out('| system | c | ok ops/s | read p50 | read p99 | write p50 | write p99 | errors | server CPU s | client CPU s | other CPU s |');
  out('|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of tp) {
    const x = r.result;
    const errs = x.reads.failed + x.writes.failed;
    out(`| ${r.system} | ${x.concurrency} | ${int(x.okPerSecond)} | ${ms(x.reads.latencyMs.p50)} | ${ms(x.reads.latencyMs.p99)} | ` +
      `${ms(x.writes.latencyMs.p50)} | ${ms(x.writes.latencyMs.p99)} | ${errs} | ${r.serverCpuS.toFixed(2)} | ${r.clientCpuS.toFixed(2)} | ${r.otherCpuS.toFixed(2)} |`);
  }
  for (const c of flags.concurrency) {
    const ps = tp.filter((r) => r.system === 'PaxosKV' && r.result.concurrency === c);
    const es = tp.filter((r) => r.system === 'etcd' && r.result.concurrency === c);
    for (let i = 0; i < Math.min(ps.length, es.length); i++) {
      const p = ps[i]!.result;
      const e = es[i]!.result;
      const p99 = (s: WorkloadResult) => Math.max(s.reads.latencyMs.p99, s.writes.latencyMs.p99);
      out(`c=${c}${ps.length > 1 ? ` round ${i + 1}` : ''}: PaxosKV/etcd ops/s = ${(p.okPerSecond / e.okPerSecond).toFixed(2)}x; ` +
        `read p99 ${(p.reads.latencyMs.p99 / e.reads.latencyMs.p99).toFixed(2)}x, write p99 ${(p.writes.latencyMs.p99 / e.writes.latencyMs.p99).toFixed(2)}x ` +
        `(worse of the two p99s: PaxosKV ${ms(p99(p))} ms, etcd ${ms(p99(e))} ms)`);
    }
  }
  const fo = rows.filter((r) => r.kind === 'failover');
  if (fo.length > 0) {
    out('\n| failover (c=' + flags.failoverConcurrency + ', kill at ' + flags.killAt / 1000 + ' s) | killed | longest write gap ms | buckets w/o write | failed reads | failed writes | ops > 1 s | ok ops/s | other CPU s |');
    out('|---|---|---|---|---|---|---|---|---|');
    for (const r of fo) {
      const x = r.result;
      out(`| ${r.system} | ${r.killed?.name ?? '?'} | ${x.longestWriteGap.ms.toFixed(0)} | ${x.timeline.filter((b) => b.writeOk === 0).length} | ` +
        `${x.reads.failed} | ${x.writes.failed} | ${x.reads.slowerThan1s + x.writes.slowerThan1s} | ${int(x.okPerSecond)} | ${r.otherCpuS.toFixed(2)} |`);
    }
  }
}

// -----------------------------------------------------------------------------------------------
// Systems

/** A set of client objects sharing the load of one run; made fresh for every run. */
interface ClientSet {
  targets: KvTarget[];
  close(): void;
}

/** A running cluster and how to load it. */
interface System {
  /** Row label. */
  name: string;
  members: Member[];
  /** Fresh clients for a throughput run. */
  make(): ClientSet;
}

/** Runs the workload with server CPU (of the members alive at the end) and client CPU measured. */
async function measured(system: string, kind: Row['kind'], members: readonly Member[], run: () => Promise<WorkloadResult>): Promise<Row> {
  const s0 = new Map(members.map((m) => [m, m.cpuSeconds()]));
  const c0 = process.cpuUsage();
  const m0 = machineBusySeconds();
  takeAttemptErrors();
  const result = await run();
  const c = process.cpuUsage(c0);
  const machineS = machineBusySeconds() - m0;
  const serverCpuS = members.filter((m) => m.alive).reduce((a, m) => a + m.cpuSeconds() - (s0.get(m) ?? 0), 0);
  const attempts = takeAttemptErrors();
  return {
    system, kind, result, serverCpuS, clientCpuS: (c.user + c.system) / 1e6,
    otherCpuS: Math.max(0, machineS - serverCpuS - (c.user + c.system) / 1e6),
    ...(system === 'PaxosKV' ? { attemptErrors: attempts } : {}),
  };
}

/** Runs `fn` with a fresh client set, closed afterwards. */
async function withClients<T>(make: () => ClientSet, fn: (targets: KvTarget[]) => Promise<T>): Promise<T> {
  const set = make();
  try {
    return await fn(set.targets);
  } finally {
    set.close();
  }
}

/** Preload (every key once) and an unreported warm-up run. */
async function prepare(sys: System, flags: Flags, warmupConcurrency: number): Promise<void> {
  const pre = await withClients(() => sys.make(), (targets) => preload(targets, 64));
  out(`  ${sys.name} preload: ${int(PAXOSSTORE_STRESS.keys)} puts in ${(pre.ms / 1000).toFixed(2)} s (${int((PAXOSSTORE_STRESS.keys * 1000) / pre.ms)}/s), ${pre.failed} failed`);
  if (flags.warmup <= 0) return;
  const w = await withClients(() => sys.make(), (targets) => runWorkload({ targets, concurrency: warmupConcurrency, durationMs: flags.warmup }));
  out(`  ${sys.name} warm-up (not reported): ${(flags.warmup / 1000).toFixed(1)} s at c=${w.concurrency}, ${int(w.okPerSecond)} ok ops/s, ` +
    `read p99 ${ms(w.reads.latencyMs.p99)} ms, write p99 ${ms(w.writes.latencyMs.p99)} ms, errors ${w.reads.failed + w.writes.failed}`);
}

/** A failover run: the workload, with `kill` called at `--kill-at`. */
async function failoverRun(name: string, flags: Flags, members: readonly Member[], make: () => ClientSet, kill: () => Promise<string>, rows: Row[]): Promise<void> {
  let killed = { name: '?', atMs: NaN };
  const row = await withClients(make, (targets) => {
    const t0 = performance.now();
    return measured(name, 'failover', members, () =>
      runWorkload({
        targets,
        concurrency: flags.failoverConcurrency,
        durationMs: flags.failoverDuration,
        events: [{ atMs: flags.killAt, run: async () => { const at = performance.now() - t0; killed = { name: await kill(), atMs: at }; } }],
      }),
    );
  });
  row.killed = killed;
  rows.push(row);
  printFailover(row);
}

/** Starts the PaxosKV cluster. Client j tries replica (j mod 3)+1 first: the load starts evenly spread. */
async function startPaxosKVSystem(flags: Flags, dir: string): Promise<System> {
  out(`\n== PaxosKV: 3 replicas (svrkit kv serve), data under ${dir}`);
  const cluster = await startPaxosKV(dir);
  out(`  replicas ${cluster.peers.map((p, i) => `${i + 1}=${p} (pid ${cluster.members[i]!.pid})`).join(', ')}`);
  return {
    name: 'PaxosKV',
    members: cluster.members,
    make: () => {
      const clients = Array.from({ length: flags.clients }, (_, j) => {
        const first = j % cluster.peers.length;
        const peers = [...cluster.peers.slice(first), ...cluster.peers.slice(0, first)];
        return new PaxosKVClient({ peers, attemptTimeoutMs: flags.attemptTimeout, defaultTimeoutMs: 5000, channel: { interceptors: [countAttempts] } });
      });
      return {
        targets: clients.map((c) => ({ get: (k) => c.get(k), put: (k, v) => c.put(k, v) })),
        close: () => clients.forEach((c) => c.close()),
      };
    },
  };
}

type FaultHandling = NonNullable<IOptions['faultHandling']>;

/**
 * etcd3's fault handling without the per-host circuit breaker: the global policy stays etcd3's
 * default (retry recoverable errors, 3 attempts, each on another host). Built with the cockatiel
 * that etcd3 itself depends on (etcd3's documented way to configure it).
 */
function noBreaker(): FaultHandling {
  const requireFromEtcd3 = createRequire(createRequire(import.meta.url).resolve('etcd3'));
  const cockatiel = requireFromEtcd3('cockatiel') as {
    noop: ReturnType<NonNullable<FaultHandling['host']>>;
    handleWhen(p: (e: Error) => boolean): unknown;
    retry(policy: unknown, opts: { maxAttempts: number }): NonNullable<FaultHandling['global']>;
  };
  return { host: () => cockatiel.noop, global: cockatiel.retry(cockatiel.handleWhen(isRecoverableError), { maxAttempts: 3 }) };
}

/** `--clients` Etcd3 objects, each with all endpoints and its own connections. */
function etcdClients(flags: Flags, endpoints: string[], faultHandling?: FaultHandling): ClientSet {
  const clients = Array.from({ length: flags.clients }, () =>
    new Etcd3({
      hosts: endpoints,
      grpcOptions: { 'grpc.use_local_subchannel_pool': 1 },
      // The same 5 s per operation as the PaxosKV clients' default deadline.
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + 5000 }),
      ...(faultHandling === undefined ? {} : { faultHandling }),
    }),
  );
  return {
    targets: clients.map((c) => ({
      get: (k) => c.get(k).buffer(),
      put: (k, v) => c.put(k).value(Buffer.from(v.buffer, v.byteOffset, v.byteLength)).exec(),
    })),
    close: () => clients.forEach((c) => c.close()),
  };
}

/** Asks each endpoint for its status; resolves with the index of the leader, or -1. */
async function etcdLeader(endpoints: string[], alive: (i: number) => boolean): Promise<number> {
  const found = await Promise.all(
    endpoints.map(async (ep, i) => {
      if (!alive(i)) return false;
      const c = new Etcd3({ hosts: ep, faultHandling: noBreaker(), defaultCallOptions: { deadline: Date.now() + 1000 } });
      try {
        const s = await c.maintenance.status();
        return s.leader !== '0' && s.leader === s.header.member_id;
      } catch {
        return false;
      } finally {
        c.close();
      }
    }),
  );
  return found.indexOf(true);
}

async function etcdReady(endpoints: string[]): Promise<boolean> {
  if ((await etcdLeader(endpoints, () => true)) < 0) return false;
  const c = new Etcd3({ hosts: endpoints, faultHandling: noBreaker(), defaultCallOptions: { deadline: Date.now() + 1000 } });
  try {
    await c.put('bench-ready').value('1').exec();
    return true;
  } catch {
    return false;
  } finally {
    c.close();
  }
}

/** An etcd cluster, loaded through etcd3 with its default fault handling. */
interface EtcdSystem extends System {
  endpoints: string[];
  /** SIGKILLs the current leader; says whom. */
  killLeader(): Promise<string>;
}

async function startEtcdSystem(bin: string, flags: Flags, dir: string): Promise<EtcdSystem> {
  out(`\n== etcd: 3 members, data under ${dir}`);
  const cluster = await startEtcd(bin, dir, etcdReady);
  out(`  members ${cluster.endpoints.map((e, i) => `${e} (pid ${cluster.members[i]!.pid})`).join(', ')}`);
  return {
    name: 'etcd',
    members: cluster.members,
    endpoints: cluster.endpoints,
    make: () => etcdClients(flags, cluster.endpoints),
    killLeader: async () => {
      const i = await etcdLeader(cluster.endpoints, (j) => cluster.members[j]!.alive);
      const victim = cluster.members[i] ?? cluster.members[0]!;
      await victim.kill();
      return `${i < 0 ? 'no leader found; killed ' : 'leader '}${victim.name} (pid ${victim.pid})`;
    },
  };
}

const breakerLabel = (v: 'on' | 'off') => (v === 'on' ? 'etcd (etcd3 default breaker)' : 'etcd (no breaker)');
const breakerPolicy = (v: 'on' | 'off') => (v === 'on' ? undefined : noBreaker());

/**
 * The whole benchmark. Both clusters run side by side (the idle one costs next to nothing), and
 * the throughput runs alternate between the systems, per concurrency and per round, so machine
 * noise hits both. Then the failover runs: PaxosKV, etcd with the first `--etcd-breaker` variant
 * on the same cluster, further variants each on a fresh etcd cluster (with a preload and warm-up
 * of their own).
 */
async function benchmark(flags: Flags, etcdBin: string | undefined, tmp: string, rows: Row[]): Promise<void> {
  const systems: System[] = [await startPaxosKVSystem(flags, path.join(tmp, 'paxoskv'))];
  const etcd = etcdBin === undefined ? undefined : await startEtcdSystem(etcdBin, flags, path.join(tmp, 'etcd-1'));
  if (etcd !== undefined) systems.push(etcd);
  out('');
  for (const sys of systems) await prepare(sys, flags, flags.concurrency[0]!);
  for (let round = 1; round <= flags.rounds; round++) {
    out(`\n== throughput${flags.rounds > 1 ? `, round ${round} of ${flags.rounds}` : ''}`);
    for (const c of flags.concurrency) {
      for (const sys of systems) {
        const row = await withClients(() => sys.make(), (targets) => measured(sys.name, 'throughput', sys.members, () => runWorkload({ targets, concurrency: c, durationMs: flags.duration })));
        rows.push(row);
        printThroughput(row);
      }
    }
  }
  if (!flags.failover) return;
  out(`\n== failover: c=${flags.failoverConcurrency}, ${flags.failoverDuration / 1000} s, SIGKILL at ${flags.killAt / 1000} s`);
  const paxos = systems[0]!;
  const victim = paxos.members[0]!;
  await failoverRun('PaxosKV', flags, paxos.members, () => paxos.make(), async () => {
    await victim.kill();
    return `replica 1 (${victim.name}, pid ${victim.pid})`;
  }, rows);
  await Promise.all(paxos.members.map((m) => m.stop()));
  if (etcd === undefined) return;
  const variants: Array<'on' | 'off'> = flags.etcdBreaker === 'both' ? ['off', 'on'] : [flags.etcdBreaker];
  await failoverRun(breakerLabel(variants[0]!), flags, etcd.members, () => etcdClients(flags, etcd.endpoints, breakerPolicy(variants[0]!)), () => etcd.killLeader(), rows);
  await Promise.all(etcd.members.map((m) => m.stop()));
  for (const [i, v] of variants.slice(1).entries()) {
    const fresh = await startEtcdSystem(etcdBin!, flags, path.join(tmp, `etcd-${i + 2}`));
    try {
      await prepare(fresh, flags, flags.failoverConcurrency);
      await failoverRun(breakerLabel(v), flags, fresh.members, () => etcdClients(flags, fresh.endpoints, breakerPolicy(v)), () => fresh.killLeader(), rows);
    } finally {
      await Promise.all(fresh.members.map((m) => m.stop()));
    }
  }
}

// -----------------------------------------------------------------------------------------------

function list(v: string): number[] {
  const xs = v.split(',').map((s) => Number(s.trim()));
  if (xs.length === 0 || xs.some((x) => !Number.isInteger(x) || x < 1)) throw new InvalidArgumentError('expected positive integers, comma-separated');
  return xs;
}

function positiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

function duration(v: string): number {
  try {
    return parseDuration(v);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

function choice<T extends string>(...allowed: T[]) {
  return (v: string): T => {
    if (!(allowed as string[]).includes(v)) throw new InvalidArgumentError(`expected one of ${allowed.join(', ')}`);
    return v as T;
  };
}

async function main(): Promise<void> {
  const flags = new Command()
    .description('PaxosKV vs etcd: PaxosStore stress workload and failover on a local 3-member cluster each')
    .option('-d, --duration <time>', 'length of each throughput run', duration, 10_000)
    .option('--warmup <time>', 'unreported run before the throughput runs of each system (0 = none)', (v: string) => (v.trim() === '0' ? 0 : duration(v)), 3000)
    .option('-c, --concurrency <list>', 'closed-loop concurrencies of the throughput runs', list, [64, 256])
    .option('-r, --rounds <n>', 'rounds of throughput runs (each runs every concurrency on every system, alternating)', positiveInt, 1)
    .option('--etcd <mode>', 'auto: run etcd when the binary exists; on: require it; off: skip it', choice('auto', 'on', 'off'), 'auto')
    .option('--clients <n>', 'client objects sharing the load (each connected to all members)', positiveInt, 6)
    .option('--attempt-timeout <ms>', 'PaxosKVClient attemptTimeoutMs: time one replica gets before the call moves on', positiveInt, 500)
    .option('--no-failover', 'skip the failover runs')
    .option('--failover-duration <time>', 'length of a failover run', duration, 10_000)
    .option('--failover-concurrency <n>', 'concurrency of the failover runs', positiveInt, 64)
    .option('--kill-at <time>', 'when a failover run kills a replica / the etcd leader', duration, 3000)
    .option('--etcd-breaker <mode>', "etcd failover runs with etcd3's default per-host circuit breaker (on), without it (off), or both", choice('off', 'on', 'both'), 'both')
    .option('--json <file>', 'also write every result as JSON to this file')
    .option('--keep', 'keep the temp dir with the data dirs and logs')
    .parse(process.argv)
    .opts<Flags>();

  const etcdBin = flags.etcd === 'off' ? undefined : findEtcd();
  if (flags.etcd === 'on' && etcdBin === undefined) throw new Error('--etcd on, but no etcd binary on the PATH (Debian: apt-get install etcd-server)');
  const etcdNote = flags.etcd === 'off'
    ? 'etcd: SKIPPED (--etcd off)'
    : etcdBin === undefined
      ? 'etcd: SKIPPED (no etcd binary on the PATH; Debian: apt-get install etcd-server)'
      : `etcd ${await etcdVersion(etcdBin)} (${etcdBin})`;
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'paxoskv-bench-'));
  out(`PaxosKV benchmark: node ${process.version}, ${os.cpus().length} CPUs, ${os.cpus()[0]?.model ?? '?'}; temp dir ${tmp}`);
  out(`workload: ${int(PAXOSSTORE_STRESS.keys)} keys, ${PAXOSSTORE_STRESS.valueBytes}-byte values, reads:writes ${PAXOSSTORE_STRESS.readsPerWrite}:1, ` +
    `closed loop at c=${flags.concurrency.join(',')} for ${flags.duration / 1000} s each, after a ${flags.warmup / 1000} s warm-up`);
  out(`clients: ${flags.clients} client objects per system, each connected to all 3 members; PaxosKVClient attemptTimeoutMs ${flags.attemptTimeout}, deadline 5000 ms; ` +
    `etcd3 deadline 5000 ms, linearizable reads`);
  out(etcdNote);
  const idle0 = machineBusySeconds();
  await new Promise((r) => setTimeout(r, 1000));
  const busyBefore = machineBusySeconds() - idle0;
  out(`machine load before start: ${busyBefore.toFixed(2)} CPUs busy over 1 s` +
    (busyBefore > 0.25 ? ' -- WARNING: other processes are using the CPU; figures will be low and noisy (see "other CPU s")' : ''));

  const rows: Row[] = [];
  try {
    await benchmark(flags, etcdBin, tmp, rows);
  } finally {
    await stopAll();
    if (!flags.keep) rmSync(tmp, { recursive: true, force: true });
    else out(`\nkept ${tmp}`);
  }
  const failovers = rows.filter((r) => r.kind === 'failover');
  if (failovers.length > 0) printTimelines(failovers);
  printSummary(rows, flags, etcdNote);
  if (flags.json !== undefined) {
    writeFileSync(flags.json, JSON.stringify({ date: new Date().toISOString(), node: process.version, etcd: etcdNote, flags, rows }, null, 2));
    out(`\nwrote ${flags.json}`);
  }
}

main().catch(async (err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  await stopAll();
  process.exit(1);
});
