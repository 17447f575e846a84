/**
 * FastReject under overload: goodput, latency and who gets served, with and without it.
 *
 *   npm run build                      # the server runs dist/ (bin/svrkit.js)
 *   npx tsx bench/overload/run.ts [--warmup 5s] [--duration 10s] [--loads 0.5,1,2,4] [--cpu-us 1000] [--gc-mb-per-s 50] [--json [file]]
 *   npx tsx bench/overload/run.ts --step [--scenarios 4x,10x,onoff] [--previous /tmp/svrkit-prev] [--timeline] [--windows]
 *   npx tsx bench/overload/run.ts --io [100000] [--io-wait 30s]
 *
 * The server is the Work service (bench/overload/work.ts: each call spins the CPU for `cpuUs` µs,
 * then optionally allocates `allocKb` KiB of garbage and waits `waitMs` ms), served by
 * `node bin/svrkit.js run bench/overload/work.ts --port 0 --fast-reject on|off --metrics-port 0`
 * as a child process, a fresh one for every run (no admission level, heap or JIT state carries
 * over). The load generator is this process, through one `Channel` with default options (adaptive
 * throttle, retries and collaborative shedding as a user gets them), also fresh per run.
 *
 * Loads mode (the default):
 * 1. Capacity: closed loop at `--capacity-concurrency` (16) for `--capacity-duration` (5 s, after a
 *    2 s warm-up), FastReject off. Its calls/s is "capacity" (`--capacity <n>` skips this).
 * 2. For each load factor in `--loads`, FastReject on and off (alternating which goes first per
 *    load, so machine noise hits both): open loop at `factor x capacity` calls/s. A 1 ms tick
 *    starts `floor(elapsed * rate) - started` calls, whatever is outstanding, so a slow server
 *    does not slow the arrivals (no coordinated omission). Calls have a 500 ms deadline
 *    (`--timeout-ms`), business priority 1 (10% of calls), 32 (20%), 64 (30%) or 96 (40%), and
 *    `x-user-id` metadata `u0`..`u999` (`--users`), drawn from mulberry32(`--seed`): every run
 *    offers the same sequence. `--warmup` (5 s) of load, then `--duration` (10 s) measured: calls
 *    scheduled in the measured period count, and are followed to their end.
 *    `--gc-mb-per-s <n>` makes the handler allocate short-lived garbage, `allocKb` per call chosen
 *    so that each run's offered rate allocates n MB/s on the server (the capacity is then measured
 *    with that handler too).
 *
 * Per run it prints offered calls/s, goodput (calls that succeeded within their deadline, per s,
 * and as % of capacity), p50/p99 of the successful calls, the share that ended
 * RESOURCE_EXHAUSTED (split: refused by the server `overloaded: ...`, shed locally by the
 * client because of the level the server advertised, throttled locally by the adaptive
 * throttle), the share that ended DEADLINE_EXCEEDED, success per priority class, and the CPU
 * seconds of the server, of this process (the client) and of everything else on the machine
 * during the measured period. Then the calls rejected at 0.5x and 1x (false alarms: should be 0),
 * and the targets at 4x: goodput >= 90% of capacity, top-priority success >= 99%, p99 of
 * successful calls < 100 ms, PASS/FAIL.
 *
 * Step mode (`--step`): the sudden steps of issue 12, with no warm-up, each on a fresh server:
 * `4x` (0.5x for 5 s, 4x for 15 s, 0.5x for 10 s), `10x` (the same at 10x) and `onoff` (0.5x 5 s,
 * 10x 20 s, 0.5x 10 s, 10x 20 s, 0.5x 10 s), each with FastReject on, off and (`--previous <dir>`)
 * the previous controller: a built worktree of an older commit, whose own server is started. The
 * same calls as the loads mode, the rate changing by phase. Counted in 250 ms buckets (offered by
 * scheduled start, goodput and failures by completion); the summary gives, per spike, the time to
 * 90% of capacity, goodput after convergence, top-priority success, p99 after convergence,
 * recovery after the drop back to 0.5x, rejections before the step, and PASS/FAIL per target.
 *
 * I/O mode (`--io [calls]`): one server per `--modes` entry, whose handler waits `--io-wait` (30 s)
 * without CPU; the client opens `calls` (100,000) calls as fast as it can over `--io-connections`
 * connections, and reports how many the server held at once (its in-flight gauge), its RSS before
 * and at the peak, RSS per held call, and the errors by kind.
 *
 * The server also serves its Prometheus metrics (`--metrics-port 0`), scraped once a second (every
 * 250 ms in step mode): the per-second timeline (`--timeline`, and in the JSON) shows its
 * admission level, mean queueing time, calls handled and refused, next to what the client saw.
 * `--no-server-metrics` turns that off. `--windows` serves the FastReject runs with
 * window-server.ts (the same `serve()`, plus the server's `onWindow` log), which adds every
 * admission window to the timeline; `--admission <json>` then sets admission options on those
 * servers, to explore them (not the defaults).
 *
 * Every server it starts is stopped when a run ends, and on errors, Ctrl-C and exit.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError, Option } from 'commander';
import type { Histogram } from 'hdr-histogram-js';
import { Channel, type ChannelOptions } from 'svrkit';
import { parseDuration } from '../../framework/cli/bench.js';
import { parseExposition } from '../../framework/metrics/parse.js';
import { mulberry32 } from '../../test/support/prng.js';
import { WorkDefinition } from './gen/work.js';
import { cpuSeconds, machineBusySeconds, newHistogram } from '../support.js';
import { NODES_PER_KIB } from './work.js';
import {
  BASE_FACTOR, newBucket, percentile, phasesAt, RateSchedule, scenario, summarizeStep, TARGETS,
  type Bucket, type Phase, type PhaseLengths, type Scenario, type StepSummary,
} from './step.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const svrkitBin = fileURLToPath(new URL('../../bin/svrkit.js', import.meta.url));
const ENTRY = 'bench/overload/work.ts';

/** The priority classes: business priority and share of calls. */
const CLASSES = [
  { name: 'top', priority: 1, share: 0.1 },
  { name: 'p32', priority: 32, share: 0.2 },
  { name: 'p64', priority: 64, share: 0.3 },
  { name: 'p96', priority: 96, share: 0.4 },
] as const;

/** Step mode counts in buckets of this many ms (phase lengths must be multiples of it). */
const BUCKET_MS = 250;

/**
 * How a run's server is started: FastReject `on`, `off` or `dry-run` with this tree's dist/, or
 * `previous`: FastReject on with the tree given by `--previous` (its own dist/ and work.ts).
 */
type Mode = 'on' | 'off' | 'dry-run' | 'previous';

interface Flags {
  warmup: number;
  duration: number;
  loads: number[];
  cpuUs: number;
  timeoutMs: number;
  users: number;
  seed: number;
  modes?: Mode[];
  capacity?: number;
  capacityConcurrency: number;
  capacityDuration: number;
  serverMetrics: boolean;
  windows: boolean;
  admission?: Record<string, number>;
  timeline: boolean;
  json?: string | boolean;
  gcMbPerS?: number;
  step: boolean;
  scenarios: string[];
  pre?: number;
  spike?: number;
  post?: number;
  stepModes?: Mode[];
  previous?: string;
  io?: number | true;
  ioWait: number;
  ioConnections: number;
  ioRate?: number;
  ioFinish: boolean;
}

// -----------------------------------------------------------------------------------------------
// Processes

/**
 * A closed FastReject window, as the server's `onWindow` reports it (`WindowReport`). Its fields
 * change with the controller (this tree's: `at, arrived, admitted, meanQueueMs, eventLoopDelayMs,
 * overloaded, levelBefore, levelAfter`; others add `started, expired, minSojournMs, utilization,
 * queued`, ...), so it is read as numbers and booleans by name; `at` (epoch ms) is always there.
 */
type WindowLine = { at: number } & Record<string, number | boolean>;

/** A numeric field of a window report, or undefined. */
const wnum = (w: WindowLine, k: string): number | undefined => (typeof w[k] === 'number' ? (w[k] as number) : undefined);

const live = new Set<ChildProcess>();

/** A `svrkit run` child: its address, metrics URL and output. */
interface ServerProc {
  child: ChildProcess;
  address: string;
  metricsUrl: string | undefined;
  /** FastReject windows the server logged (window-server.ts, with --windows). */
  windows: WindowLine[];
  /** stdout+stderr so far. */
  output(): string;
}

/** The command that serves `mode`: node arguments and working directory. */
function serverCommand(mode: Mode, flags: Flags): { args: string[]; cwd: string } {
  const metrics = flags.serverMetrics ? ['--metrics-port', '0'] : [];
  if (mode === 'previous') {
    const dir = flags.previous!;
    return flags.windows
      ? { args: ['--import', 'tsx', path.join(dir, 'bench/overload/window-server.ts'), 'on', ...(flags.admission === undefined ? [] : [JSON.stringify(flags.admission)])], cwd: dir }
      : { args: [path.join(dir, 'bin/svrkit.js'), 'run', path.join(dir, ENTRY), '--port', '0', '--fast-reject', 'on', ...metrics], cwd: dir };
  }
  return flags.windows && mode !== 'off'
    ? { args: ['--import', 'tsx', 'bench/overload/window-server.ts', mode, ...(flags.admission === undefined ? [] : [JSON.stringify(flags.admission)])], cwd: root }
    : { args: [svrkitBin, 'run', ENTRY, '--port', '0', '--fast-reject', mode, ...metrics], cwd: root };
}

async function startServer(mode: Mode, flags: Flags): Promise<ServerProc> {
  const { args, cwd } = serverCommand(mode, flags);
  const child = spawn(process.execPath, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  child.once('exit', () => live.delete(child));
  let out = '';
  let partial = '';
  const windows: WindowLine[] = [];
  const onData = (d: Buffer): void => {
    const text = d.toString();
    out += text;
    if (out.length > 1_000_000) out = out.slice(-500_000);
    partial += text;
    const lines = partial.split('\n');
    partial = lines.pop()!;
    for (const line of lines) {
      const i = line.indexOf('svrkit: window {');
      if (i >= 0) windows.push(JSON.parse(line.slice(i + 'svrkit: window '.length)) as WindowLine);
    }
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const address = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start within 30 s: ${out}`)), 30_000);
    const check = (): void => {
      const m = /serving .* on (\S+) \(pid/.exec(out);
      if (m !== null) {
        clearTimeout(timer);
        child.stdout!.off('data', check);
        resolve(m[1]!);
      }
    };
    child.stdout!.on('data', check);
    child.once('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code ?? sig}) before serving: ${out}`));
    });
  });
  const mm = /metrics on (http:\S+)/.exec(out);
  return { child, address, metricsUrl: flags.serverMetrics ? mm?.[1] : undefined, windows, output: () => out };
}

/** SIGTERM, SIGKILL after `graceMs`; resolves once it exited. */
async function stopServer(s: ServerProc, graceMs = 5000): Promise<void> {
  const child = s.child;
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

function installCleanup(): void {
  // Last resort: whatever is still running when this process exits is killed.
  process.on('exit', () => {
    for (const c of live) c.kill('SIGKILL');
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      process.stderr.write(`\n${sig}: stopping the server\n`);
      for (const c of live) c.kill('SIGTERM');
      setTimeout(() => process.exit(130), 2000).unref();
      void Promise.all([...live].map((c) => once(c, 'exit'))).finally(() => process.exit(130));
    });
  }
}

/** CPU use of the server, this process and the machine, from one point in time. */
class CpuMeter {
  private readonly server0: number;
  private readonly client0 = process.cpuUsage();
  private readonly machine0 = machineBusySeconds();
  constructor(private readonly pid: number | undefined) {
    this.server0 = cpuSeconds(pid);
  }
  read(): { serverCpuS: number; clientCpuS: number; otherCpuS: number } {
    const serverCpuS = cpuSeconds(this.pid) - this.server0;
    const c = process.cpuUsage(this.client0);
    const clientCpuS = (c.user + c.system) / 1e6;
    const otherCpuS = Math.max(0, machineBusySeconds() - this.machine0 - serverCpuS - clientCpuS);
    return { serverCpuS, clientCpuS, otherCpuS };
  }
}

/**
 * A process's resident memory from /proc/<pid>/status (Linux): VmRSS now and VmHWM (its peak), KiB.
 * @returns NaN for both when /proc cannot tell.
 */
function memoryKiB(pid: number | undefined): { rss: number; hwm: number } {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const field = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
    return { rss: field('VmRSS'), hwm: field('VmHWM') };
  } catch {
    return { rss: NaN, hwm: NaN };
  }
}

/**
 * Which build of the framework a tree's server runs: a short hash of `<tree>/dist/framework/`
 * and its newest file's time (the framework changes between runs of this benchmark; this says
 * which one ran).
 */
function distFingerprint(tree = root): string {
  const dir = path.join(tree, 'dist', 'framework');
  const files: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.js')) files.push(p);
    }
  };
  try {
    walk(dir);
  } catch {
    return 'dist/framework missing: run npm run build';
  }
  files.sort();
  const h = createHash('sha1');
  let newest = 0;
  for (const f of files) {
    h.update(path.relative(dir, f)).update(readFileSync(f));
    newest = Math.max(newest, statSync(f).mtimeMs);
  }
  return `dist/framework ${h.digest('hex').slice(0, 12)}, built ${new Date(newest).toISOString()}`;
}

/** The commit a tree has checked out (`<tree>/.git` is a directory or, in a worktree, a file), or '?'. */
function treeCommit(tree: string): string {
  try {
    let gitDir = path.join(tree, '.git');
    if (statSync(gitDir).isFile()) gitDir = path.resolve(tree, /gitdir: (.*)/.exec(readFileSync(gitDir, 'utf8'))![1]!.trim());
    const head = readFileSync(path.join(gitDir, 'HEAD'), 'utf8').trim();
    if (!head.startsWith('ref: ')) return head.slice(0, 12);
    const ref = head.slice(5);
    const loose = path.join(gitDir, ref);
    if (existsSync(loose)) return readFileSync(loose, 'utf8').trim().slice(0, 12);
    return ref;
  } catch {
    return '?';
  }
}

// -----------------------------------------------------------------------------------------------
// Server metrics (Prometheus text, scraped once a second, every 250 ms in step mode)

interface ServerSample {
  /** ms since the run started: when the scrape was sent, and when its answer came. */
  atMs: number;
  doneMs: number;
  level: number | undefined;
  handled: number;
  rejected: number;
  queueSum: number;
  queueCount: number;
  eventLoopLagP99Ms: number | undefined;
}

async function scrape(url: string, atMs: number, clock: () => number): Promise<ServerSample | undefined> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
    const exp = parseExposition(await res.text());
    const doneMs = clock();
    const sum = (name: string, filter: (l: Readonly<Record<string, string>>) => boolean = () => true): number =>
      (exp.samples.get(name) ?? []).filter((s) => filter(s.labels)).reduce((a, s) => a + s.value, 0);
    const work = (l: Readonly<Record<string, string>>) => l['service'] === 'overload.Work';
    const level = exp.samples.get('svrkit_server_admission_level')?.[0]?.value;
    const lag = exp.samples.get('nodejs_eventloop_lag_p99_seconds')?.[0]?.value;
    return {
      atMs,
      doneMs,
      level,
      handled: sum('svrkit_server_handled_total', work),
      rejected: sum('svrkit_server_rejected_total', (l) => work(l) && l['dry_run'] !== 'true'),
      queueSum: sum('svrkit_server_queueing_seconds_sum', work),
      queueCount: sum('svrkit_server_queueing_seconds_count', work),
      eventLoopLagP99Ms: lag === undefined ? undefined : lag * 1000,
    };
  } catch {
    return undefined; // a scrape stuck behind a long burst of handlers: skip it
  }
}

/** The server's own counts over the whole run (it is fresh per run): calls handled by status, refused by reason. */
interface ServerTotals {
  handled: Record<string, number>;
  refused: Record<string, number>;
}

async function scrapeTotals(url: string): Promise<ServerTotals | undefined> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
    const exp = parseExposition(await res.text());
    const by = (name: string, label: string): Record<string, number> => {
      const r: Record<string, number> = {};
      for (const s of exp.samples.get(name) ?? []) {
        if (s.labels['service'] !== 'overload.Work' || s.labels['dry_run'] === 'true') continue;
        const k = s.labels[label] ?? '?';
        r[k] = (r[k] ?? 0) + s.value;
      }
      return r;
    };
    return { handled: by('svrkit_server_handled_total', 'code'), refused: by('svrkit_server_rejected_total', 'reason') };
  } catch {
    return undefined;
  }
}

/** The server's in-flight gauge (`svrkit_server_inflight_calls`), or undefined when the scrape fails. */
async function scrapeInflight(url: string): Promise<number | undefined> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
    return parseExposition(await res.text()).samples.get('svrkit_server_inflight_calls')?.[0]?.value;
  } catch {
    return undefined;
  }
}

// -----------------------------------------------------------------------------------------------
// Load

/** How calls ended. */
interface Outcomes {
  started: number;
  ok: number;
  /** Succeeded, but after their deadline (should not happen: the client fails them at the deadline). */
  okLate: number;
  deadlineExceeded: number;
  /** RESOURCE_EXHAUSTED from the server (`overloaded: ...`). */
  serverRejected: number;
  /** RESOURCE_EXHAUSTED without sending: the advertised admission level refuses the call. */
  shedLocally: number;
  /** RESOURCE_EXHAUSTED without sending: the adaptive throttle. */
  throttledLocally: number;
  /** Any other RESOURCE_EXHAUSTED. */
  otherExhausted: number;
  /** Other failures by status name. */
  otherErrors: Record<string, number>;
}

function newOutcomes(): Outcomes {
  return { started: 0, ok: 0, okLate: 0, deadlineExceeded: 0, serverRejected: 0, shedLocally: 0, throttledLocally: 0, otherExhausted: 0, otherErrors: {} };
}

/** The FastReject windows (--windows) that closed in one second, summed up. */
interface WindowsInSecond {
  n: number;
  overloaded: number;
  arrived: number;
  admitted: number;
  /** Queueing the controller saw: the admitted-weighted mean of `meanQueueMs` when the reports have it, else the least `minSojournMs`. */
  queueMs: number | undefined;
  queueField: 'meanQueueMs' | 'minSojournMs' | undefined;
  maxEventLoopDelayMs: number;
  levelAfter: number | undefined;
}

/** One second of a run, by scheduled start time, with what the server said in that second. */
interface Second {
  /** Seconds since the run started (warm-up included). */
  t: number;
  measured: boolean;
  started: number;
  ok: number;
  exhausted: number;
  deadlineExceeded: number;
  topStarted: number;
  topOk: number;
  /** Server admission level at the end of the second (16383 = admit all). */
  serverLevel?: number;
  serverHandled?: number;
  serverRejected?: number;
  serverMeanQueueMs?: number;
  serverEventLoopLagP99Ms?: number;
  /** FastReject windows that closed in this second (--windows). */
  windows?: WindowsInSecond;
}

interface LoadResult {
  /** The server's counts over the whole run (warm-up included), scraped after the last call ended. */
  serverTotals: ServerTotals | undefined;
  /** Calls that succeeded at the client over the whole run (warm-up included). */
  clientOkWholeRun: number;
  /** FastReject windows the server closed during the run (--windows); tMs = ms since the run started. */
  windows: Array<WindowLine & { tMs: number }>;
  outcomes: Outcomes;
  perClass: Array<{ name: string; priority: number; started: number; ok: number }>;
  latency: Histogram;
  timeline: Second[];
  /** Step mode: the run's buckets (`spec.bucketMs`), from 0 to the last completion. */
  buckets: Bucket[] | undefined;
  /** Retries and refusals the channel reported during the measured period. */
  retries: number;
  throttledBy: Record<string, number>;
  /** How late the 1 ms tick started calls relative to their schedule (ms): mean and max. */
  lagMeanMs: number;
  lagMaxMs: number;
  /** Calls still outstanding 5 s after the last one started (should be 0). */
  stuck: number;
  cpu: { serverCpuS: number; clientCpuS: number; otherCpuS: number };
}

type Kind = 'ok' | 'deadline' | 'server' | 'shed' | 'throttled' | 'exhausted' | string;

function classify(err: unknown): Kind {
  const e = err as { code?: unknown; codeName?: unknown; message?: unknown };
  if (typeof e?.code !== 'number') return `non-RPC error: ${String(err)}`;
  const msg = typeof e.message === 'string' ? e.message : '';
  if (e.code === 4) return 'deadline'; // DEADLINE_EXCEEDED
  if (e.code === 8) {
    // RESOURCE_EXHAUSTED
    if (msg.startsWith('overloaded:')) return 'server';
    if (msg.startsWith('shed locally')) return 'shed';
    if (msg.startsWith('throttled locally')) return 'throttled';
    return 'exhausted';
  }
  return typeof e.codeName === 'string' ? e.codeName : `code ${e.code}`;
}

interface LoadSpec {
  /** Calls per second (open loop at a constant rate)... */
  rate?: number;
  /** ... or phases of constant rates (open loop, step mode; the run is their length)... */
  phases?: Phase[];
  /** ... or, for the closed loop, the calls in flight. */
  concurrency?: number;
  warmupMs: number;
  durationMs: number;
  /** Step mode: count calls in buckets of this many ms too. */
  bucketMs?: number;
  /** Scrape the server's metrics this often (ms). Default 1000. */
  scrapeMs?: number;
  /** KiB of garbage each call allocates on the server (`allocKb`). Default 0. */
  allocKb?: number;
}

/**
 * Drives one run against `server`: open loop at `spec.rate` or by `spec.phases`, or closed loop at
 * `spec.concurrency`. Every call's scheduled start decides whether it counts (>= warmupMs).
 */
async function drive(server: ServerProc, spec: LoadSpec, flags: Flags): Promise<LoadResult> {
  // What the channel reports, counted from the start of the measured period.
  let measuring = false;
  let retries = 0;
  const throttledBy: Record<string, number> = {};
  const options: ChannelOptions = {
    observer: {
      callEnded() {},
      retried() {
        if (measuring) retries++;
      },
      throttled(_m, reason) {
        if (measuring) throttledBy[reason] = (throttledBy[reason] ?? 0) + 1;
      },
    },
  };
  const channel = new Channel(server.address, options);
  const method = WorkDefinition.methods.do;
  const metadata = Array.from({ length: flags.users }, (_, i) => ({ 'x-user-id': `u${i}` }));
  const callOptions = CLASSES.map((c) => metadata.map((md) => ({ timeoutMs: flags.timeoutMs, priority: c.priority, metadata: md })));
  const request = { cpuUs: flags.cpuUs, tag: '', allocKb: spec.allocKb ?? 0 };
  const random = mulberry32(flags.seed);
  const cumulative = CLASSES.map((_, i) => CLASSES.slice(0, i + 1).reduce((a, c) => a + c.share, 0));

  const outcomes = newOutcomes();
  const perClass = CLASSES.map((c) => ({ name: c.name, priority: c.priority, started: 0, ok: 0 }));
  const latency = newHistogram();
  const endMs = spec.warmupMs + spec.durationMs;
  const seconds = Math.ceil(endMs / 1000);
  const timeline: Second[] = Array.from({ length: seconds }, (_, t) => ({
    t, measured: t * 1000 >= spec.warmupMs, started: 0, ok: 0, exhausted: 0, deadlineExceeded: 0, topStarted: 0, topOk: 0,
  }));
  // Step mode: buckets by scheduled start and by completion, up to the last call's deadline and then some.
  const bucketMs = spec.bucketMs;
  const buckets: Bucket[] | undefined = bucketMs === undefined ? undefined : [];
  const maxBucket = bucketMs === undefined ? 0 : Math.ceil((endMs + flags.timeoutMs + 6000) / bucketMs);
  const bucketAt = (ms: number): Bucket => {
    const i = Math.min(maxBucket, Math.max(0, Math.floor(ms / bucketMs!)));
    while (buckets!.length <= i) buckets!.push(newBucket(buckets!.length * bucketMs!));
    return buckets![i]!;
  };
  let inflight = 0;
  let lagSum = 0;
  let lagN = 0;
  let lagMax = 0;

  // A first call, not counted, so the connection is up before the clock starts.
  await channel.unary(method, request, { timeoutMs: 5000 }).catch(() => {});

  const t0 = performance.now();
  const clock = (): number => performance.now() - t0;
  const epoch0 = Date.now();
  const windows0 = server.windows.length;
  let cpu: CpuMeter | undefined;
  let cpuResult: LoadResult['cpu'] | undefined;

  /** Starts one call scheduled at `schedMs` (ms since t0); `next` runs when it settles (closed loop). */
  const startCall = (schedMs: number, now: number, next?: () => void): void => {
    const r = random();
    let cls = 0;
    while (cls < CLASSES.length - 1 && r >= cumulative[cls]!) cls++;
    const user = Math.floor(random() * flags.users);
    const measured = schedMs >= spec.warmupMs;
    const sec = timeline[Math.min(timeline.length - 1, Math.floor(schedMs / 1000))]!;
    sec.started++;
    if (cls === 0) sec.topStarted++;
    const sb = buckets === undefined ? undefined : bucketAt(schedMs);
    if (sb !== undefined) {
      sb.offered++;
      if (cls === 0) sb.topOffered++;
    }
    if (measured) {
      outcomes.started++;
      perClass[cls]!.started++;
    }
    inflight++;
    const settle = (kind: Kind, ms: number): void => {
      inflight--;
      const exhausted = kind === 'server' || kind === 'shed' || kind === 'throttled' || kind === 'exhausted';
      if (kind === 'ok') {
        sec.ok++;
        if (cls === 0) sec.topOk++;
      } else if (kind === 'deadline') sec.deadlineExceeded++;
      else if (exhausted) sec.exhausted++;
      if (sb !== undefined) {
        const cb = bucketAt(clock());
        const inTime = kind === 'ok' && ms <= flags.timeoutMs;
        if (inTime) {
          cb.ok++;
          cb.latenciesMs.push(ms);
          if (cls === 0) sb.topOk++;
        } else if (kind === 'ok') cb.okLate++;
        else if (kind === 'deadline') {
          cb.deadlineExceeded++;
          sb.deadlineBySched++;
        } else if (kind === 'server') cb.serverRejected++;
        else if (kind === 'shed') cb.shedLocally++;
        else if (kind === 'throttled') cb.throttledLocally++;
        else if (kind === 'exhausted') cb.otherExhausted++;
        else cb.otherErrors++;
        if (exhausted) sb.rejectedBySched++;
      }
      if (measured) {
        switch (kind) {
          case 'ok':
            if (ms <= flags.timeoutMs) {
              outcomes.ok++;
              perClass[cls]!.ok++;
              latency.recordValue(Math.max(1, Math.round(ms * 1000)));
            } else outcomes.okLate++;
            break;
          case 'deadline':
            outcomes.deadlineExceeded++;
            break;
          case 'server':
            outcomes.serverRejected++;
            break;
          case 'shed':
            outcomes.shedLocally++;
            break;
          case 'throttled':
            outcomes.throttledLocally++;
            break;
          case 'exhausted':
            outcomes.otherExhausted++;
            break;
          default:
            outcomes.otherErrors[kind] = (outcomes.otherErrors[kind] ?? 0) + 1;
        }
      }
      if (next !== undefined) next();
    };
    channel.unary(method, request, callOptions[cls]![user]!).then(
      () => settle('ok', performance.now() - now),
      (err: unknown) => settle(classify(err), performance.now() - now),
    );
  };

  // Server metrics, once a second (step mode: every 250 ms).
  const samples: ServerSample[] = [];
  let scraping = false;
  const scraper =
    server.metricsUrl === undefined
      ? undefined
      : setInterval(() => {
          if (scraping) return;
          scraping = true;
          void scrape(server.metricsUrl!, clock(), clock).then((s) => {
            scraping = false;
            if (s !== undefined) samples.push(s);
          });
        }, spec.scrapeMs ?? 1000);
  const phaseAt = (ms: number): Phase | undefined => spec.phases?.find((p) => ms >= p.startMs && ms < p.endMs);
  const progress = setInterval(() => {
    const t = Math.floor(clock() / 1000) - 1;
    const s = timeline[t];
    if (s === undefined) return;
    const sv = samples.at(-1);
    const ph = phaseAt(t * 1000);
    process.stderr.write(
      `    t=${String(t).padStart(2)}s${s.measured ? ' ' : 'w'}${ph === undefined ? '' : ` ${ph.factor}x`} started ${s.started}, ok ${s.ok}, rejected ${s.exhausted}, deadline ${s.deadlineExceeded}` +
        (sv === undefined ? '' : `; server level ${sv.level ?? '-'}`) + '\n',
    );
  }, 1000);

  await new Promise<void>((resolve) => {
    const finish = (): void => {
      cpuResult = (cpu ?? new CpuMeter(server.child.pid)).read();
      resolve();
    };
    if (spec.rate !== undefined || spec.phases !== undefined) {
      const schedule = spec.phases !== undefined ? new RateSchedule(spec.phases) : RateSchedule.constant(spec.rate!, endMs);
      const total = schedule.total;
      let started = 0;
      const tick = setInterval(() => {
        const now = performance.now();
        const elapsed = now - t0;
        if (cpu === undefined && elapsed >= spec.warmupMs) {
          cpu = new CpuMeter(server.child.pid);
          measuring = true;
        }
        const due = schedule.due(elapsed);
        while (started < due) {
          const sched = schedule.timeOf(started);
          const lag = elapsed - sched;
          lagSum += lag;
          lagN++;
          if (lag > lagMax) lagMax = lag;
          startCall(sched, now);
          started++;
        }
        if (started >= total && elapsed >= endMs) {
          clearInterval(tick);
          finish();
        }
      }, 1);
    } else {
      const loop = (): void => {
        const now = performance.now();
        const elapsed = now - t0;
        if (elapsed >= endMs) {
          if (cpuResult === undefined) finish();
          return;
        }
        if (cpu === undefined && elapsed >= spec.warmupMs) {
          cpu = new CpuMeter(server.child.pid);
          measuring = true;
        }
        startCall(elapsed, now, loop);
      };
      for (let i = 0; i < spec.concurrency!; i++) loop();
    }
  });
  // finish() ran at the end of the schedule; wait (at most 5 s) for outstanding calls.
  const stuckDeadline = performance.now() + 5000;
  while (inflight > 0 && performance.now() < stuckDeadline) await new Promise((r) => setTimeout(r, 20));
  clearInterval(progress);
  if (scraper !== undefined) clearInterval(scraper);
  channel.close();
  const serverTotals = server.metricsUrl === undefined ? undefined : await scrapeTotals(server.metricsUrl);

  // Server samples into the timeline: the samples sent at a second's end, as deltas from the previous one used.
  let prev: ServerSample | undefined;
  for (const s of samples) {
    const t = Math.round(s.atMs / 1000) - 1;
    const sec = timeline[t];
    if (sec === undefined || Math.abs(s.atMs - (t + 1) * 1000) > (spec.scrapeMs ?? 1000) / 2) continue;
    sec.serverLevel = s.level;
    sec.serverEventLoopLagP99Ms = s.eventLoopLagP99Ms;
    if (prev !== undefined) {
      sec.serverHandled = s.handled - prev.handled;
      sec.serverRejected = s.rejected - prev.rejected;
      const n = s.queueCount - prev.queueCount;
      sec.serverMeanQueueMs = n > 0 ? ((s.queueSum - prev.queueSum) / n) * 1000 : undefined;
    }
    prev = s;
  }
  // FastReject windows (--windows) into the timeline.
  const windows = server.windows.slice(windows0).map((w) => ({ tMs: w.at - epoch0, ...w }) as WindowLine & { tMs: number });
  for (const w of windows) {
    const sec = timeline[Math.floor(w.tMs / 1000)];
    if (sec === undefined) continue;
    const a = (sec.windows ??= { n: 0, overloaded: 0, arrived: 0, admitted: 0, queueMs: undefined, queueField: undefined, maxEventLoopDelayMs: 0, levelAfter: undefined });
    const admitted = wnum(w, 'admitted') ?? 0;
    const mean = wnum(w, 'meanQueueMs');
    const minSojourn = wnum(w, 'minSojournMs');
    if (mean !== undefined) {
      a.queueMs = ((a.queueMs ?? 0) * a.admitted + mean * admitted) / Math.max(1, a.admitted + admitted);
      a.queueField = 'meanQueueMs';
    } else if (minSojourn !== undefined) {
      a.queueMs = Math.min(a.queueMs ?? Infinity, minSojourn);
      a.queueField = 'minSojournMs';
    }
    a.n++;
    if (w['overloaded'] === true) a.overloaded++;
    a.arrived += wnum(w, 'arrived') ?? 0;
    a.admitted += admitted;
    a.maxEventLoopDelayMs = Math.max(a.maxEventLoopDelayMs, wnum(w, 'eventLoopDelayMs') ?? 0);
    a.levelAfter = wnum(w, 'levelAfter') ?? a.levelAfter;
  }
  // Step mode: the admission level at each bucket's end, from the windows when logged, else from the scrapes that came back in it.
  if (buckets !== undefined) {
    const withLevel = windows.filter((w) => wnum(w, 'levelAfter') !== undefined);
    if (withLevel.length > 0) {
      let j = 0;
      let level: number | undefined;
      for (const b of buckets) {
        while (j < withLevel.length && withLevel[j]!.tMs < b.tMs + bucketMs!) level = wnum(withLevel[j++]!, 'levelAfter');
        if (level !== undefined) {
          b.level = level;
          b.levelFrom = 'window';
        }
      }
    } else {
      for (const s of samples) {
        if (s.level === undefined) continue;
        const b = buckets[Math.floor(s.doneMs / bucketMs!)];
        if (b === undefined) continue;
        b.level = s.level;
        b.levelFrom = 'scrape';
      }
    }
  }
  return {
    serverTotals,
    clientOkWholeRun: timeline.reduce((a, x) => a + x.ok, 0),
    windows,
    outcomes,
    perClass,
    latency,
    timeline,
    buckets,
    retries,
    throttledBy,
    lagMeanMs: lagN > 0 ? lagSum / lagN : 0,
    lagMaxMs: lagMax,
    stuck: inflight,
    cpu: cpuResult!,
  };
}

// -----------------------------------------------------------------------------------------------
// Loads mode: runs and reporting

/** One reported run. */
interface Row {
  kind: 'capacity' | 'open-loop';
  /** Offered load as a multiple of capacity (open loop). */
  load?: number;
  fastReject: Mode;
  /** Closed loop: concurrency. */
  concurrency?: number;
  /** Target and achieved arrival rate (calls/s). */
  targetRate?: number;
  /** KiB of garbage each call allocated on the server (--gc-mb-per-s). */
  allocKb?: number;
  offeredPerSecond: number;
  goodputPerSecond: number;
  goodputPctOfCapacity?: number;
  latencyMs: { p50: number; p90: number; p99: number; max: number };
  /** Shares of the calls started in the measured period, in %. */
  pct: {
    exhausted: number;
    serverRejected: number;
    shedLocally: number;
    throttledLocally: number;
    deadlineExceeded: number;
    otherErrors: number;
  };
  perClass: Array<{ name: string; priority: number; started: number; ok: number; successPct: number }>;
  outcomes: Outcomes;
  retries: number;
  throttledBy: Record<string, number>;
  scheduleLagMs?: { mean: number; max: number };
  stuck: number;
  serverCpuS: number;
  clientCpuS: number;
  otherCpuS: number;
  timeline: Second[];
  windows: Array<WindowLine & { tMs: number }>;
  serverTotals: ServerTotals | undefined;
  clientOkWholeRun: number;
  targets?: Array<{ name: string; value: string; pass: boolean }>;
}

const pct = (n: number, d: number) => (d > 0 ? (100 * n) / d : 0);

function toRow(kind: Row['kind'], mode: Mode, spec: LoadSpec, r: LoadResult, capacity: number | undefined, load?: number): Row {
  const o = r.outcomes;
  const secs = spec.durationMs / 1000;
  const exhausted = o.serverRejected + o.shedLocally + o.throttledLocally + o.otherExhausted;
  const other = Object.values(o.otherErrors).reduce((a, b) => a + b, 0) + o.okLate;
  const h = r.latency;
  const maxUs = h.totalCount > 0 ? h.maxValue : 0;
  const q = (p: number) => (h.totalCount > 0 ? Math.min(h.getValueAtPercentile(p), maxUs) / 1000 : NaN);
  const row: Row = {
    kind,
    fastReject: mode,
    offeredPerSecond: o.started / secs,
    goodputPerSecond: o.ok / secs,
    latencyMs: { p50: q(50), p90: q(90), p99: q(99), max: maxUs / 1000 },
    pct: {
      exhausted: pct(exhausted, o.started),
      serverRejected: pct(o.serverRejected, o.started),
      shedLocally: pct(o.shedLocally, o.started),
      throttledLocally: pct(o.throttledLocally, o.started),
      deadlineExceeded: pct(o.deadlineExceeded, o.started),
      otherErrors: pct(other, o.started),
    },
    perClass: r.perClass.map((c) => ({ ...c, successPct: pct(c.ok, c.started) })),
    outcomes: o,
    retries: r.retries,
    throttledBy: r.throttledBy,
    stuck: r.stuck,
    ...r.cpu,
    timeline: r.timeline,
    windows: r.windows,
    serverTotals: r.serverTotals,
    clientOkWholeRun: r.clientOkWholeRun,
  };
  if (load !== undefined) row.load = load;
  if (spec.concurrency !== undefined) row.concurrency = spec.concurrency;
  if (spec.allocKb !== undefined && spec.allocKb > 0) row.allocKb = spec.allocKb;
  if (spec.rate !== undefined) {
    row.targetRate = spec.rate;
    row.scheduleLagMs = { mean: r.lagMeanMs, max: r.lagMaxMs };
  }
  if (capacity !== undefined) row.goodputPctOfCapacity = pct(row.goodputPerSecond, capacity);
  if (load === 4) {
    const top = row.perClass[0]!;
    row.targets = [
      { name: 'goodput >= 90% of capacity', value: `${row.goodputPctOfCapacity!.toFixed(1)}%`, pass: row.goodputPctOfCapacity! >= 90 },
      { name: 'top-priority success >= 99%', value: `${top.successPct.toFixed(2)}%`, pass: top.successPct >= 99 },
      {
        name: 'p99 of successful calls < 100 ms',
        value: Number.isNaN(row.latencyMs.p99) ? 'no successful calls' : `${row.latencyMs.p99.toFixed(1)} ms`,
        pass: row.latencyMs.p99 < 100,
      },
    ];
  }
  return row;
}

let out: (s?: string) => void = (s = '') => process.stdout.write(s + '\n');

const int = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '-');
const f1 = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : '-');
const f2 = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : '-');
const passFail = (pass: boolean) => (pass ? 'PASS' : 'FAIL');

function printTable(rows: Row[], capacity: number): void {
  const classHead = CLASSES.map((c) => `ok% ${c.name === 'top' ? 'top ' : ''}p${c.priority}`).join(' | ');
  out(`| load | FR | offered/s | goodput/s | goodput % cap | p50 ms | p99 ms | rejected % | by server % | shed locally % | throttled locally % | deadline % | other % | ${classHead} | retries | server CPU s | client CPU s | other CPU s |`);
  out('|---|---|---|---|---|---|---|---|---|---|---|---|---|' + CLASSES.map(() => '---|').join('') + '---|---|---|---|');
  for (const r of rows) {
    const p = r.pct;
    out(
      `| ${r.load}x | ${r.fastReject} | ${int(r.offeredPerSecond)} | ${int(r.goodputPerSecond)} | ${f1(pct(r.goodputPerSecond, capacity))} | ` +
        `${f1(r.latencyMs.p50)} | ${f1(r.latencyMs.p99)} | ${f1(p.exhausted)} | ${f1(p.serverRejected)} | ${f1(p.shedLocally)} | ${f1(p.throttledLocally)} | ` +
        `${f1(p.deadlineExceeded)} | ${f1(p.otherErrors)} | ${r.perClass.map((c) => f1(c.successPct)).join(' | ')} | ${int(r.retries)} | ` +
        `${f2(r.serverCpuS)} | ${f2(r.clientCpuS)} | ${f2(r.otherCpuS)} |`,
    );
  }
}

/**
 * The runs at 0.5x and 1x: every call that was refused by the server, shed or throttled, or missed
 * its deadline, as counts (a percentage rounds a few away). FastReject must reject nothing there.
 */
function printFalseAlarms(rows: Row[]): void {
  const low = rows.filter((r) => r.load !== undefined && r.load <= 1);
  if (low.length === 0) return;
  out('rejections at <= 1x capacity (calls of the measured period, then of the whole run; a false alarm is any rejection with FastReject on):');
  for (const r of low) {
    const o = r.outcomes;
    const rejected = o.serverRejected + o.shedLocally + o.throttledLocally + o.otherExhausted;
    const wholeRun = r.timeline.reduce((a, s) => a + s.exhausted, 0);
    const check = r.fastReject === 'off' ? '' : ` ${passFail(rejected === 0 && wholeRun === 0)}`;
    out(
      `  ${r.load}x FR ${r.fastReject}${r.allocKb === undefined ? '' : ` (GC-heavy, ${r.allocKb} KiB/call)`}: ${int(rejected)} rejected of ${int(o.started)} ` +
        `(refused by server ${int(o.serverRejected)}, shed locally ${int(o.shedLocally)}, throttled locally ${int(o.throttledLocally)}, other ${int(o.otherExhausted)}); ` +
        `deadline exceeded ${int(o.deadlineExceeded)}; whole run incl. warm-up: ${int(wholeRun)} rejected${check}`,
    );
  }
}

/** The second's FastReject windows as table cells (n (overloaded), arrived, admitted, queue ms, level after). */
function windowCells(x: WindowsInSecond | undefined): string {
  if (x === undefined) return ' - | - | - | - | - |';
  const q = x.queueMs === undefined ? '-' : `${f1(x.queueMs)}${x.queueField === 'minSojournMs' ? ' (min sojourn)' : ''}`;
  return ` ${x.n} (${x.overloaded}) | ${x.arrived} | ${x.admitted} | ${q} | ${x.levelAfter ?? '-'} |`;
}

function printTimeline(r: Row): void {
  out(`\n${r.load}x, FastReject ${r.fastReject}: per second (by scheduled start; w = warm-up), with the server's metrics at the second's end`);
  const w = r.windows.length > 0;
  out('| t s | started | ok | rejected | deadline | top ok/started | server level | server handled | server rejected | server mean queue ms | server loop lag p99 ms |' +
    (w ? ' windows (overloaded) | window arrived | window admitted | window queue ms | level after |' : ''));
  out('|---|---|---|---|---|---|---|---|---|---|---|' + (w ? '---|---|---|---|---|' : ''));
  for (const s of r.timeline) {
    out(
      `| ${s.t}${s.measured ? '' : 'w'} | ${s.started} | ${s.ok} | ${s.exhausted} | ${s.deadlineExceeded} | ${s.topOk}/${s.topStarted} | ${s.serverLevel ?? '-'} | ` +
        `${s.serverHandled ?? '-'} | ${s.serverRejected ?? '-'} | ${s.serverMeanQueueMs === undefined ? '-' : f1(s.serverMeanQueueMs)} | ` +
        `${s.serverEventLoopLagP99Ms === undefined ? '-' : f1(s.serverEventLoopLagP99Ms)} |` +
        (w ? windowCells(s.windows) : ''),
    );
  }
}

/** Notes on one run: other errors, late successes, stuck calls, channel refusals, server totals, schedule lag. */
function runNotes(o: Outcomes, stuck: number, throttledBy: Record<string, number>, st: ServerTotals | undefined, clientOk: number, lagMaxMs: number | undefined, lagMeanMs: number | undefined): string[] {
  const notes: string[] = [];
  if (o.otherExhausted > 0) notes.push(`${o.otherExhausted} other RESOURCE_EXHAUSTED`);
  if (o.okLate > 0) notes.push(`${o.okLate} succeeded after their deadline`);
  for (const [k, v] of Object.entries(o.otherErrors)) notes.push(`${k} ${v}`);
  if (stuck > 0) notes.push(`${stuck} calls still outstanding 5 s after the schedule ended`);
  const thr = Object.entries(throttledBy);
  if (thr.length > 0) notes.push(`channel refusals: ${thr.map(([k, v]) => `${k} ${v}`).join(', ')}`);
  const failed = o.serverRejected + o.shedLocally + o.throttledLocally + o.otherExhausted + o.deadlineExceeded;
  if (st !== undefined && (failed > 0 || Object.keys(st.refused).length > 0)) {
    const fmt = (x: Record<string, number>) => Object.entries(x).map(([k, v]) => `${k} ${int(v)}`).join(', ') || 'none';
    const wasted = (st.handled['OK'] ?? 0) - clientOk;
    notes.push(`server, whole run: handled ${fmt(st.handled)}; refused ${fmt(st.refused)}; ` +
      `${int(wasted)} calls the server completed OK did not succeed at the client (answered after the client gave up)`);
  }
  if (lagMaxMs !== undefined && lagMaxMs > 50) notes.push(`client schedule lag mean ${f1(lagMeanMs ?? NaN)} ms, max ${f1(lagMaxMs)} ms`);
  return notes;
}

/** Prints the notes of each row that has any; returns how many rows had notes. */
function printNotes(rows: Row[]): number {
  let n = 0;
  for (const r of rows) {
    const notes = runNotes(r.outcomes, r.stuck, r.throttledBy, r.serverTotals, r.clientOkWholeRun, r.scheduleLagMs?.max, r.scheduleLagMs?.mean);
    if (notes.length > 0) {
      out(`- ${r.load}x FR ${r.fastReject}: ${notes.join('; ')}`);
      n++;
    }
  }
  return n;
}

async function withServer<T>(mode: Mode, flags: Flags, fn: (s: ServerProc) => Promise<T>): Promise<T> {
  const server = await startServer(mode, flags);
  try {
    return await fn(server);
  } catch (err) {
    process.stderr.write(`server output:\n${server.output().slice(-4000)}\n`);
    throw err;
  } finally {
    await stopServer(server);
  }
}

/**
 * KiB of garbage per call so that `rate` calls/s allocate `mbPerS` MB/s (10^6 bytes) on the server.
 * @returns at least 1 (0 when `mbPerS` is undefined).
 */
function allocKbFor(mbPerS: number | undefined, rate: number): number {
  if (mbPerS === undefined) return 0;
  return Math.max(1, Math.round((mbPerS * 1e6) / 1024 / rate));
}

/** Measures capacity: closed loop, FastReject off, with `allocKb` KiB of garbage per call. */
async function measureCapacity(flags: Flags, allocKb: number): Promise<Row> {
  const spec: LoadSpec = { concurrency: flags.capacityConcurrency, warmupMs: 2000, durationMs: flags.capacityDuration, allocKb };
  const r = await withServer('off', flags, (s) => {
    process.stderr.write(`capacity: closed loop c=${spec.concurrency}, FastReject off${allocKb > 0 ? `, ${allocKb} KiB of garbage per call` : ''}, server pid ${s.child.pid}\n`);
    return drive(s, spec, flags);
  });
  return toRow('capacity', 'off', spec, r, undefined);
}

/** Prints the capacity run and returns its calls/s. */
function reportCapacity(row: Row, what: string): number {
  const failed = row.outcomes.started - row.outcomes.ok;
  out(`\ncapacity${what}: ${int(row.goodputPerSecond)} calls/s (closed loop, concurrency ${row.concurrency}, FastReject off, ${row.goodputPerSecond > 0 ? '' : 'NO CALL SUCCEEDED, '}` +
    `measured after a 2 s warm-up; p50 ${f2(row.latencyMs.p50)} ms, p99 ${f2(row.latencyMs.p99)} ms, ${failed} failed; ` +
    `CPU s: server ${f2(row.serverCpuS)}, client ${f2(row.clientCpuS)}, other ${f2(row.otherCpuS)})`);
  if (failed > 0) printNotes([{ ...row, load: 0 }]);
  return row.goodputPerSecond;
}

/** Capacity: given, or measured (with --gc-mb-per-s, measured again with the GC-heavy handler). */
async function getCapacity(flags: Flags): Promise<{ capacity: number; runs: Row[] }> {
  if (flags.capacity !== undefined) {
    out(`\ncapacity: ${int(flags.capacity)} calls/s (given with --capacity)`);
    return { capacity: flags.capacity, runs: [] };
  }
  const plain = await measureCapacity(flags, 0);
  const c0 = reportCapacity(plain, flags.gcMbPerS === undefined ? '' : ' of the plain handler');
  if (flags.gcMbPerS === undefined || !(c0 > 0)) return { capacity: c0, runs: [plain] };
  // The GC-heavy handler costs more CPU per call: its capacity is what 1x means for it.
  const gc = await measureCapacity(flags, allocKbFor(flags.gcMbPerS, c0));
  const c1 = reportCapacity(gc, ` of the GC-heavy handler (${gc.allocKb} KiB per call, ~${f1((gc.goodputPerSecond * gc.allocKb! * 1024) / 1e6)} MB/s)`);
  return { capacity: c1, runs: [plain, gc] };
}

async function runLoads(flags: Flags, capacity: number, capacityRuns: Row[]): Promise<void> {
  const modes = flags.modes ?? (['on', 'off'] as Mode[]);
  const rows: Row[] = [];
  for (const [i, load] of flags.loads.entries()) {
    const order = i % 2 === 0 ? modes : [...modes].reverse();
    for (const mode of order) {
      const rate = load * capacity;
      const allocKb = allocKbFor(flags.gcMbPerS, rate);
      const spec: LoadSpec = { rate, warmupMs: flags.warmup, durationMs: flags.duration, allocKb };
      const r = await withServer(mode, flags, (s) => {
        process.stderr.write(`${load}x (${int(rate)} calls/s${allocKb > 0 ? `, ${allocKb} KiB of garbage per call` : ''}), FastReject ${mode}, server pid ${s.child.pid}\n`);
        return drive(s, spec, flags);
      });
      const row = toRow('open-loop', mode, spec, r, capacity, load);
      rows.push(row);
      process.stderr.write(
        `  -> goodput ${int(row.goodputPerSecond)}/s (${f1(row.goodputPctOfCapacity!)}% of capacity), p99 ${f1(row.latencyMs.p99)} ms, ` +
          `rejected ${f1(row.pct.exhausted)}%, deadline ${f1(row.pct.deadlineExceeded)}%, top ok ${f1(row.perClass[0]!.successPct)}%\n`,
      );
    }
  }

  out(`\nopen loop, ${flags.duration / 1000} s measured after ${flags.warmup / 1000} s of warm-up per run; capacity ${int(capacity)} calls/s; ` +
    `% columns are shares of the calls started in the measured period; ok% = calls of the class that succeeded within the deadline`);
  if (flags.gcMbPerS !== undefined) {
    out(`GC-heavy handler: each run's calls allocate ${flags.gcMbPerS} MB/s at its offered rate (` +
      rows.filter((r, i) => rows.findIndex((x) => x.load === r.load) === i).map((r) => `${r.load}x: ${r.allocKb} KiB/call`).join(', ') + ')');
  }
  out('');
  printTable(rows, capacity);
  out('');
  if (printNotes(rows) > 0) out('');
  printFalseAlarms(rows);
  const checked = rows.filter((r) => r.targets !== undefined);
  if (checked.length > 0) {
    out('\ntargets at 4x capacity (meant for FastReject on; FastReject off shown for comparison):');
    for (const r of checked) {
      out(`  FastReject ${r.fastReject}: ` + r.targets!.map((t) => `${t.name}: ${t.value} ${passFail(t.pass)}`).join('; '));
    }
  }
  if (flags.timeline) for (const r of rows) printTimeline(r);
  writeJson(flags, { mode: 'loads', capacity, capacityRuns, rows });
}

// -----------------------------------------------------------------------------------------------
// Step mode

/** A bucket as reported (JSON and timeline): the latencies reduced to p50/p99. */
type BucketReport = Omit<Bucket, 'latenciesMs'> & { p50Ms: number | null; p99Ms: number | null };

/** One step run: a scenario against one server. */
interface StepRun {
  scenario: string;
  fastReject: Mode;
  phases: Phase[];
  summary: StepSummary;
  buckets: BucketReport[];
  windows: Array<WindowLine & { tMs: number }>;
  outcomes: Outcomes;
  retries: number;
  throttledBy: Record<string, number>;
  scheduleLagMs: { mean: number; max: number };
  stuck: number;
  serverCpuS: number;
  clientCpuS: number;
  otherCpuS: number;
  serverTotals: ServerTotals | undefined;
  clientOkWholeRun: number;
}

const nullIfNaN = (n: number): number | null => (Number.isFinite(n) ? n : null);

/** The step scenarios from the flags, with their phase lengths checked against the bucket size. */
function stepScenarios(flags: Flags): Scenario[] {
  const lengths: PhaseLengths = { preMs: flags.pre, spikeMs: flags.spike, postMs: flags.post };
  return flags.scenarios.map((name) => scenario(name, lengths));
}

async function runStep(flags: Flags, capacity: number, capacityRuns: Row[]): Promise<void> {
  const modes = flags.stepModes ?? (flags.previous === undefined ? ['on', 'off'] : ['on', 'off', 'previous']) as Mode[];
  const runs: StepRun[] = [];
  for (const [i, sc] of stepScenarios(flags).entries()) {
    const order = i % 2 === 0 ? modes : [...modes].reverse();
    for (const mode of order) {
      const phases = phasesAt(sc, capacity);
      // Scrapes cost the server a little: every bucket only when they are where the level comes from.
      const spec: LoadSpec = { phases, warmupMs: 0, durationMs: phases.at(-1)!.endMs, bucketMs: BUCKET_MS, scrapeMs: flags.windows ? 1000 : BUCKET_MS };
      const r = await withServer(mode, flags, (s) => {
        process.stderr.write(`${sc.name}: ${phases.map((p) => `${p.factor}x ${(p.endMs - p.startMs) / 1000} s`).join(', ')} (capacity ${int(capacity)} calls/s), FastReject ${mode}, server pid ${s.child.pid}\n`);
        return drive(s, spec, flags);
      });
      const summary = summarizeStep(r.buckets!, phases, capacity, BUCKET_MS);
      const run: StepRun = {
        scenario: sc.name,
        fastReject: mode,
        phases,
        summary,
        buckets: r.buckets!.map(({ latenciesMs, ...b }) => ({ ...b, p50Ms: nullIfNaN(percentile(latenciesMs, 50)), p99Ms: nullIfNaN(percentile(latenciesMs, 99)) })),
        windows: r.windows,
        outcomes: r.outcomes,
        retries: r.retries,
        throttledBy: r.throttledBy,
        scheduleLagMs: { mean: r.lagMeanMs, max: r.lagMaxMs },
        stuck: r.stuck,
        ...r.cpu,
        serverTotals: r.serverTotals,
        clientOkWholeRun: r.clientOkWholeRun,
      };
      runs.push(run);
      process.stderr.write(
        `  -> ` + summary.spikes.map((x) => `spike ${x.spike}: time to 90% ${x.timeTo90Ms === null ? 'never' : `${f2(x.timeTo90Ms / 1000)} s`}, ` +
          `recovery ${f2(x.recoveryMs / 1000)} s`).join('; ') + `; top ok ${f1(summary.topWholeRunPct)}%\n`,
      );
    }
  }

  out(`\nstep runs: no warm-up, a fresh server per run, ${BUCKET_MS} ms buckets; capacity ${int(capacity)} calls/s; targets: time to 90% of capacity <= ${TARGETS.convergeMs / 1000} s, ` +
    `every bucket after it >= ${TARGETS.goodputPct}%, top-priority success >= ${TARGETS.topPct}% over the whole run, p99 after convergence < ${TARGETS.p99Ms} ms, ` +
    `recovery <= ${TARGETS.recoveryMs / 1000} s with no second collapse, nothing rejected at ${BASE_FACTOR}x before the step\n`);
  printStepSummary(runs);
  out('');
  for (const r of runs) {
    const o = r.outcomes;
    const notes = runNotes(o, r.stuck, r.throttledBy, r.serverTotals, r.clientOkWholeRun, r.scheduleLagMs.max, r.scheduleLagMs.mean);
    out(`- ${r.scenario} FR ${r.fastReject}: ${int(o.started)} calls, ${int(o.ok)} ok, refused by server ${int(o.serverRejected)}, shed locally ${int(o.shedLocally)}, ` +
      `throttled locally ${int(o.throttledLocally)}, deadline ${int(o.deadlineExceeded)}; ${int(r.retries)} retries; CPU s: server ${f2(r.serverCpuS)}, client ${f2(r.clientCpuS)}, other ${f2(r.otherCpuS)}` +
      (notes.length > 0 ? `; ${notes.join('; ')}` : ''));
  }
  if (flags.timeline) for (const r of runs) printBuckets(r, capacity);
  if (flags.windows) for (const r of runs) printWindows(r);
  writeJson(flags, { mode: 'step', capacity, capacityRuns, bucketMs: BUCKET_MS, targets: TARGETS, runs });
}

/** The summary: one row per scenario, mode and spike. */
function printStepSummary(runs: StepRun[]): void {
  out('| scenario | FR | spike | time to 90% s | after: mean % cap | after: min % cap | top ok whole run % | top ok first 2 s % | p99 after ms | recovery s | recovery min ok/sent % | 2nd collapse | rejected at 0.5x before the step |');
  out('|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of runs) {
    const s = r.summary;
    for (const [i, x] of s.spikes.entries()) {
      const t = s.targets[i]!;
      const pre = i === 0 ? `${int(s.preRejected)}${s.preDeadline > 0 ? ` (+${int(s.preDeadline)} deadline)` : ''} ${passFail(t.preRejects)}` : '';
      out(
        `| ${r.scenario} | ${r.fastReject} | ${x.spike} (${x.factor}x) | ${x.timeTo90Ms === null ? '-' : f2(x.timeTo90Ms / 1000)} ${passFail(t.timeTo90)} | ` +
          `${f1(x.afterMeanPct)} | ${f1(x.afterMinPct)} ${passFail(t.minAfter)} | ${f2(s.topWholeRunPct)} ${passFail(t.top)} | ${f2(x.topFirstPct)} | ` +
          `${f1(x.p99AfterMs)} ${passFail(t.p99)} | ${f2(x.recoveryMs / 1000)} ${passFail(t.recovery)} | ${f1(x.recoveryMinOkPct)} | ${x.secondCollapse ? 'yes' : 'no'} | ${pre} |`,
      );
    }
  }
}

/** The bucket timeline of one step run. */
function printBuckets(r: StepRun, capacity: number): void {
  const perS = 1000 / BUCKET_MS;
  const steps = new Set(r.phases.slice(1).map((p) => p.startMs));
  out(`\n${r.scenario}, FastReject ${r.fastReject}: per ${BUCKET_MS} ms (offered and top ok by scheduled start; goodput, failures and p99 by completion; ` +
    `level = the server's admission level at the bucket's end, w = from its window log, s = scraped; > = a phase starts)`);
  out('| t s | load | offered/s | goodput/s | goodput % cap | refused by server | shed locally | throttled | deadline | other | top ok % | p99 ms | level |');
  out('|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const b of r.buckets) {
    const ph = r.phases.find((p) => b.tMs >= p.startMs && b.tMs < p.endMs);
    if (ph === undefined && b.ok + b.okLate + b.serverRejected + b.shedLocally + b.throttledLocally + b.otherExhausted + b.deadlineExceeded + b.otherErrors === 0) continue;
    out(
      `| ${steps.has(b.tMs) ? '>' : ''}${(b.tMs / 1000).toFixed(2)} | ${ph === undefined ? '-' : `${ph.factor}x`} | ${int(b.offered * perS)} | ${int(b.ok * perS)} | ${f1((100 * b.ok * perS) / capacity)} | ` +
        `${b.serverRejected} | ${b.shedLocally} | ${b.throttledLocally} | ${b.deadlineExceeded} | ${b.otherExhausted + b.otherErrors + b.okLate} | ` +
        `${b.topOffered > 0 ? f1((100 * b.topOk) / b.topOffered) : '-'} | ${f1(b.p99Ms ?? NaN)} | ${b.level === undefined ? '-' : `${b.level}${b.levelFrom === 'window' ? 'w' : 's'}`} |`,
    );
  }
}

/** Every FastReject window of one run (--windows), with whichever fields its server reports. */
function printWindows(r: StepRun): void {
  if (r.windows.length === 0) {
    if (r.fastReject !== 'off') out(`\n${r.scenario}, FastReject ${r.fastReject}: no window lines from the server`);
    return;
  }
  const keys: string[] = [];
  for (const w of r.windows) for (const k of Object.keys(w)) if (k !== 'at' && k !== 'tMs' && !keys.includes(k)) keys.push(k);
  const cell = (v: unknown): string =>
    typeof v === 'boolean' ? (v ? 'yes' : 'no') : typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(Math.abs(v) >= 10 ? 1 : 3)) : v === undefined ? '-' : String(v);
  out(`\n${r.scenario}, FastReject ${r.fastReject}: the server's ${r.windows.length} FastReject windows (t = when each closed, s since the run started)`);
  out(`| t s | ${keys.join(' | ')} |`);
  out(`|---|${keys.map(() => '---|').join('')}`);
  for (const w of r.windows) out(`| ${(w.tMs / 1000).toFixed(2)} | ${keys.map((k) => cell(w[k])).join(' | ')} |`);
}

// -----------------------------------------------------------------------------------------------
// I/O mode

/** How the calls of an I/O run failed, by kind; server refusals by their message (numbers as N). */
interface IoErrors {
  refusedByServer: Record<string, number>;
  shedLocally: number;
  throttledLocally: number;
  deadlineExceeded: number;
  other: Record<string, number>;
}

/** One I/O run: `calls` waiting calls against one server. */
interface IoRun {
  fastReject: Mode;
  calls: number;
  waitMs: number;
  connections: number;
  /** How long this process took to start all the calls (ms). */
  openMs: number;
  /** The most calls the server's in-flight gauge showed, and when (ms after the first call started); null if no scrape answered. */
  heldPeak: number | null;
  heldPeakAtMs: number;
  /** Calls that had failed when the measurement ended. */
  failed: number;
  errors: IoErrors;
  /** Why the measurement ended. */
  ended: string;
  /** Server RSS (KiB): before the calls, at the poll that saw the peak, and its high-water mark (VmHWM) at the end. */
  rssBeforeKiB: number;
  rssAtPeakKiB: number;
  rssHwmKiB: number;
  /** (RSS at the peak - RSS before) / calls held at the peak, KiB. */
  rssPerHeldCallKiB: number;
  serverCpuS: number;
  clientCpuS: number;
  otherCpuS: number;
  /** With --io-finish: how the calls ended once their waits were over. */
  finished?: { ok: number; failed: number; errors: IoErrors; stillOpen: number };
}

function newIoErrors(): IoErrors {
  return { refusedByServer: {}, shedLocally: 0, throttledLocally: 0, deadlineExceeded: 0, other: {} };
}

function countIoError(e: IoErrors, err: unknown): void {
  const kind = classify(err);
  if (kind === 'server') {
    const reason = String((err as Error).message).replace(/\d+/g, 'N');
    e.refusedByServer[reason] = (e.refusedByServer[reason] ?? 0) + 1;
  } else if (kind === 'shed') e.shedLocally++;
  else if (kind === 'throttled') e.throttledLocally++;
  else if (kind === 'deadline') e.deadlineExceeded++;
  else e.other[kind] = (e.other[kind] ?? 0) + 1;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const sumValues = (x: Record<string, number>) => Object.values(x).reduce((a, b) => a + b, 0);

/**
 * Opens `calls` calls that each wait `--io-wait` on the server, as fast as this process can, then
 * follows the server's in-flight gauge and RSS until every call is held or has failed (or nothing
 * moved for 5 s, or the first waits are about to end). Then stops the server, or with
 * `--io-finish` waits for the calls to end.
 */
async function holdCalls(s: ServerProc, mode: Mode, calls: number, flags: Flags): Promise<IoRun> {
  const channel = new Channel(s.address, { connections: flags.ioConnections });
  const method = WorkDefinition.methods.do;
  // A first call, not counted, so the connections are up before the clock starts.
  await Promise.all(Array.from({ length: flags.ioConnections }, () => channel.unary(method, { cpuUs: 0, tag: '' }, { timeoutMs: 5000 }).catch(() => {})));
  await sleep(500);
  const pid = s.child.pid;
  const before = memoryKiB(pid);
  const cpu = new CpuMeter(pid);
  const errors = newIoErrors();
  const late = newIoErrors();
  let measuring = true;
  let failed = 0;
  let settled = 0;
  let ok = 0;
  const request = { cpuUs: 0, waitMs: flags.ioWait, tag: '' };
  const options = { timeoutMs: flags.ioWait + 30_000 };
  const t0 = performance.now();
  for (let i = 0; i < calls; i++) {
    channel.unary(method, request, options).then(
      () => {
        settled++;
        ok++;
      },
      (err: unknown) => {
        settled++;
        if (measuring) {
          failed++;
          countIoError(errors, err);
        } else countIoError(late, err);
      },
    );
    // Let the connections write (and the answers come in) now and then; with --io-rate, keep to it.
    if (i % 500 === 499) {
      const ahead = flags.ioRate === undefined ? 0 : ((i + 1) * 1000) / flags.ioRate - (performance.now() - t0);
      await (ahead > 1 ? sleep(ahead) : new Promise((r) => setImmediate(r)));
    }
  }
  const openMs = performance.now() - t0;
  process.stderr.write(`  started ${int(calls)} calls in ${f2(openMs / 1000)} s; ${int(failed)} failed so far\n`);
  if (openMs > flags.ioWait - 1000) process.stderr.write(`  WARNING: opening took longer than the wait: the first calls ended before the last started (raise --io-wait)\n`);

  let heldPeak = -1;
  let heldPeakAtMs = 0;
  let rssAtPeak = NaN;
  let lastAccounted = -1;
  let lastProgressMs = 0;
  let ended = '';
  let lastReport = 0;
  for (;;) {
    await sleep(250);
    const held = await scrapeInflight(s.metricsUrl!);
    const mem = memoryKiB(pid);
    const now = performance.now() - t0;
    if (held !== undefined && held > heldPeak) {
      heldPeak = held;
      heldPeakAtMs = now;
      rssAtPeak = mem.rss;
    }
    const accounted = (held ?? 0) + failed;
    if (now - lastReport >= 1000) {
      lastReport = now;
      process.stderr.write(`    t=${f1(now / 1000)}s server holds ${held === undefined ? '?' : int(held)}, failed ${int(failed)}, server RSS ${f1(mem.rss / 1024)} MiB\n`);
    }
    if (held !== undefined && accounted >= calls) {
      ended = 'every call held by the server or failed';
      break;
    }
    if (accounted > lastAccounted) {
      lastAccounted = accounted;
      lastProgressMs = now;
    } else if (now - lastProgressMs > 5000) {
      ended = `no change for 5 s: ${int(calls - accounted)} calls neither held nor failed`;
      break;
    }
    if (now > flags.ioWait - 1000) {
      ended = 'stopped 1 s before the first waits end (raise --io-wait to see more)';
      break;
    }
  }
  measuring = false;
  const cpuRead = cpu.read();
  const hwm = memoryKiB(pid).hwm;
  let finished: IoRun['finished'];
  if (flags.ioFinish) {
    const deadline = performance.now() + flags.ioWait + 40_000;
    process.stderr.write(`  waiting for the calls to end (at most ${f1((deadline - performance.now()) / 1000)} s)\n`);
    while (settled < calls && performance.now() < deadline) await sleep(250);
    finished = { ok, failed: settled - ok, errors: late, stillOpen: calls - settled };
  } else {
    // Cut short: the figures are taken; the calls in flight fail when the server goes.
    const exited = once(s.child, 'exit');
    s.child.kill('SIGKILL');
    await exited;
  }
  channel.close();
  const settleDeadline = performance.now() + 10_000;
  while (settled < calls && performance.now() < settleDeadline) await sleep(50);
  const held = Math.max(0, heldPeak);
  return {
    fastReject: mode,
    calls,
    waitMs: flags.ioWait,
    connections: flags.ioConnections,
    openMs,
    heldPeak: heldPeak < 0 ? null : heldPeak,
    heldPeakAtMs,
    failed,
    errors,
    ended,
    rssBeforeKiB: before.rss,
    rssAtPeakKiB: rssAtPeak,
    rssHwmKiB: hwm,
    rssPerHeldCallKiB: held > 0 ? (rssAtPeak - before.rss) / held : NaN,
    ...cpuRead,
    finished,
  };
}

async function runIo(flags: Flags): Promise<void> {
  const calls = flags.io as number;
  const modes = flags.modes ?? (['on', 'off'] as Mode[]);
  const runs: IoRun[] = [];
  out(`\nI/O-bound calls: ${int(calls)} calls opened ${flags.ioRate === undefined ? 'as fast as possible' : `at ${int(flags.ioRate)} calls/s`} over ${flags.ioConnections} connections; each handler waits ${flags.ioWait / 1000} s ` +
    `on a timer (cpu_us 0), deadline ${(flags.ioWait + 30_000) / 1000} s; a fresh server per run, default settings`);
  for (const mode of modes) {
    const r = await withServer(mode, flags, (s) => {
      process.stderr.write(`io: ${int(calls)} calls waiting ${flags.ioWait / 1000} s, FastReject ${mode}, server pid ${s.child.pid}\n`);
      return holdCalls(s, mode, calls, flags);
    });
    runs.push(r);
    process.stderr.write(`  -> held ${r.heldPeak === null ? '?' : int(r.heldPeak)}, failed ${int(r.failed)}, RSS per held call ${f2(r.rssPerHeldCallKiB)} KiB (${r.ended})\n`);
  }
  out('');
  out('| FR | calls | held at peak | refused by server | shed locally | throttled locally | deadline | other | opened in s | peak at s | server RSS before MiB | server RSS at peak MiB | RSS per held call KiB | server VmHWM MiB | server CPU s |');
  out('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of runs) {
    const e = r.errors;
    out(
      `| ${r.fastReject} | ${int(r.calls)} | ${r.heldPeak === null ? '-' : int(r.heldPeak)} | ${int(sumValues(e.refusedByServer))} | ${int(e.shedLocally)} | ${int(e.throttledLocally)} | ` +
        `${int(e.deadlineExceeded)} | ${int(sumValues(e.other))} | ${f2(r.openMs / 1000)} | ${f2(r.heldPeakAtMs / 1000)} | ${f1(r.rssBeforeKiB / 1024)} | ${f1(r.rssAtPeakKiB / 1024)} | ` +
        `${f2(r.rssPerHeldCallKiB)} | ${f1(r.rssHwmKiB / 1024)} | ${f2(r.serverCpuS)} |`,
    );
  }
  out('');
  for (const r of runs) {
    const reasons = Object.entries(r.errors.refusedByServer).map(([k, v]) => `${int(v)} "${k}"`);
    const other = Object.entries(r.errors.other).map(([k, v]) => `${k} ${int(v)}`);
    out(`- FR ${r.fastReject}: measurement ended: ${r.ended}` +
      (reasons.length > 0 ? `; refused by server: ${reasons.join(', ')}` : '') +
      (other.length > 0 ? `; other errors: ${other.join(', ')}` : '') +
      (r.finished === undefined
        ? '; then the server was stopped'
        : `; after the waits: ${int(r.finished.ok)} completed OK, ${int(r.finished.failed - r.failed)} failed later` +
          (r.finished.stillOpen > 0 ? `, ${int(r.finished.stillOpen)} still open` : '')));
  }
  const target = runs.filter((r) => r.fastReject !== 'off');
  if (target.length > 0) {
    out(`\ntarget: with the defaults, hold all ${int(calls)} waiting calls without refusing any:`);
    for (const r of target) {
      const refused = sumValues(r.errors.refusedByServer) + r.errors.shedLocally + r.errors.throttledLocally;
      out(`  FastReject ${r.fastReject}: held ${r.heldPeak === null ? '-' : int(r.heldPeak)}, ${int(refused)} refused/shed/throttled ${passFail(r.heldPeak === calls && refused === 0)}`);
    }
  }
  writeJson(flags, { mode: 'io', runs });
}

// -----------------------------------------------------------------------------------------------
// Main

/** Writes `doc` (plus the run's context) as JSON to --json's file or stdout; nothing without --json. */
function writeJson(flags: Flags, doc: Record<string, unknown>): void {
  if (flags.json === undefined) return;
  const full = {
    date: new Date().toISOString(),
    framework: distFingerprint(),
    previous: flags.previous === undefined ? undefined : { dir: flags.previous, commit: treeCommit(flags.previous), framework: distFingerprint(flags.previous) },
    node: process.version,
    cpus: os.cpus().length,
    flags,
    classes: CLASSES,
    ...doc,
  };
  const text = JSON.stringify(full, null, 2);
  if (typeof flags.json === 'string') {
    writeFileSync(flags.json, text);
    out(`\nwrote ${flags.json}`);
  } else process.stdout.write(text + '\n');
}

/** Checks that `dir` is a built svrkit tree with the Work service; the error says how to make one. */
function checkPrevious(dir: string, needsNewWork: boolean): string {
  const abs = path.resolve(dir);
  const need = ['bin/svrkit.js', 'dist/framework/cli/main.js', 'dist/framework/cli/run.js', 'bench/overload/work.ts', 'bench/overload/gen/work.ts', 'bench/overload/window-server.ts', 'node_modules'];
  const missing = need.filter((f) => !existsSync(path.join(abs, f)));
  if (missing.length > 0) {
    throw new InvalidArgumentError(
      `--previous ${dir}: not a built svrkit tree (missing ${missing.join(', ')}). Make one with: ` +
        `git worktree add -f /tmp/svrkit-prev <commit> && ln -s "$PWD/node_modules" /tmp/svrkit-prev/ && ` +
        `(cd /tmp/svrkit-prev && npm run build && npx tsx codegen/cli.ts bench/overload/work.proto --out bench/overload/gen)`,
    );
  }
  if (needsNewWork && !readFileSync(path.join(abs, 'bench/overload/work.proto'), 'utf8').includes('wait_ms')) {
    throw new InvalidArgumentError(`--previous ${dir}: its Work service has no wait_ms/alloc_kb (older work.proto), so it cannot serve --io or --gc-mb-per-s runs`);
  }
  return abs;
}

async function main(): Promise<void> {
  const program = new Command()
    .description(
      'FastReject benchmark: goodput and latency of the Work service under 0.5x..4x its capacity, FastReject on and off (default); ' +
        'sudden load steps with no warm-up (--step); calls held by an I/O-bound handler (--io)',
    )
    .option('--warmup <time>', 'load before each measured period (same rate, same server); --step runs without one', durationFlag(true), 5000)
    .option('-d, --duration <time>', 'measured period of each run', durationFlag(false), 10_000)
    .option('--loads <list>', 'offered load as multiples of capacity, comma-separated', loadList, [0.5, 1, 2, 4])
    .option('--cpu-us <n>', 'CPU each call burns on the server (µs)', positiveInt, 1000)
    .option('--gc-mb-per-s <n>', 'loads mode: each call also allocates short-lived garbage, sized so that each run\'s offered rate allocates <n> MB/s on the server (capacity is measured with it too)', positiveNumber)
    .option('--timeout-ms <n>', 'deadline of each call (ms)', positiveInt, 500)
    .option('--users <n>', 'distinct x-user-id values', positiveInt, 1000)
    .option('--seed <n>', 'PRNG seed of the call mix', (v: string) => Number.parseInt(v, 10), 1)
    .addOption(new Option('--modes <list>', 'servers to run per load (and with --io, one run each), in order: FastReject on, off, dry-run, or previous (see --previous) [default: on,off]').argParser(modeList))
    .option('--capacity <n>', 'skip the capacity measurement and use this many calls/s', positiveInt)
    .option('--capacity-concurrency <n>', 'closed-loop concurrency of the capacity measurement', positiveInt, 16)
    .option('--capacity-duration <time>', 'measured period of the capacity run (after a 2 s warm-up)', durationFlag(false), 5000)
    .option('--no-server-metrics', "don't serve and scrape the server's Prometheus metrics (admission level timeline)")
    .option('--windows', "serve with bench/overload/window-server.ts (same serve(), plus the server's onWindow log): every FastReject window in the timeline and JSON")
    .option('--admission <json>', 'with --windows: admission settings for the server (OverloadOptions, e.g. \'{"windowMs":100}\'), to explore them; the default is svrkit\'s', admissionJson)
    .option('--timeline', "print each run's timeline (per second; per 250 ms bucket with --step)")
    .option('--json [file]', 'write all rows as JSON to <file>; without a file: JSON on stdout, the tables on stderr')
    .option('--step', 'step mode: sudden load steps with no warm-up, a fresh server per run (see --scenarios)')
    .option('--scenarios <list>', 'with --step: scenarios, comma-separated: <n>x (0.5x, then n x, then 0.5x; e.g. 4x, 10x) and onoff (0.5x, 10x, 0.5x, 10x, 0.5x)', scenarioList, ['4x', '10x', 'onoff'])
    .option('--pre <time>', 'with --step: the 0.5x phase before the first step [default: 5s]', phaseFlag)
    .option('--spike <time>', 'with --step: each spike [default: 15s; onoff: 20s]', phaseFlag)
    .option('--post <time>', 'with --step: the 0.5x phase after each spike [default: 10s]', phaseFlag)
    .addOption(new Option('--step-modes <list>', 'with --step: servers to run each scenario on, in order (on, off, dry-run, previous) [default: on,off, and previous with --previous]').argParser(modeList))
    .option('--previous <dir>', 'the previous controller: a built svrkit worktree of an older commit, served from <dir> (its dist/ and bench/overload/work.ts) as mode "previous"')
    .addOption(new Option('--io [calls]', 'I/O mode: open this many calls that wait --io-wait each on one server, and report how many it holds, its RSS per call and the errors').preset('100000').argParser(positiveInt))
    .option('--io-wait <time>', 'with --io: how long each handler waits (no CPU)', durationFlag(false), 30_000)
    .option('--io-connections <n>', 'with --io: connections of the client channel', positiveInt, 4)
    .option('--io-rate <calls/s>', 'with --io: open the calls at this rate instead of as fast as possible', positiveInt)
    .option('--io-finish', 'with --io: after measuring, let the calls finish (and count them) instead of stopping the server')
    .parse(process.argv);
  const flags = program.opts<Flags>();
  const given = (name: string): boolean => program.getOptionValueSource(name) === 'cli';
  /** Refuses the options among `names` given on the command line: "error: --a, --b are <why>". */
  const refuse = (names: string[], why: string): void => {
    const bad = names.filter(given);
    const list = bad.map((n) => `--${n.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`).join(', ');
    if (bad.length > 0) program.error(`error: ${list} ${bad.length === 1 ? 'is' : 'are'} ${why}`);
  };
  if (flags.json === true) out = (s = '') => process.stderr.write(s + '\n');
  if (flags.admission !== undefined && !flags.windows) program.error('error: --admission needs --windows (svrkit run has no flags for these settings)');
  if (flags.step && flags.io !== undefined) program.error('error: --step and --io are separate modes; run them one at a time');
  if (!flags.step) refuse(['scenarios', 'pre', 'spike', 'post', 'stepModes'], 'only used with --step');
  if (flags.io === undefined) refuse(['ioWait', 'ioConnections', 'ioRate', 'ioFinish'], 'only used with --io');
  if (flags.step) refuse(['loads', 'warmup', 'duration', 'modes', 'gcMbPerS'], 'not used with --step (it has no warm-up; see --step-modes, --scenarios, --pre, --spike, --post)');
  if (flags.io !== undefined) {
    refuse(['loads', 'warmup', 'duration', 'gcMbPerS', 'cpuUs', 'capacity', 'capacityConcurrency', 'capacityDuration', 'timeoutMs', 'users', 'seed'], 'not used with --io');
    if (!flags.serverMetrics) program.error('error: --io reads the server\'s in-flight gauge from its metrics: drop --no-server-metrics');
    if (flags.windows) program.error('error: --io does not take --windows (a window line per closed window is all it would add)');
  }
  const modesUsed = [...(flags.modes ?? []), ...(flags.stepModes ?? [])];
  if (modesUsed.includes('previous') && flags.previous === undefined) program.error('error: mode "previous" needs --previous <dir>');
  if (flags.previous !== undefined) {
    try {
      const previousRunsNewWork = (flags.io !== undefined || flags.gcMbPerS !== undefined) && (flags.modes ?? []).includes('previous');
      flags.previous = checkPrevious(flags.previous, previousRunsNewWork);
    } catch (err) {
      program.error(`error: ${(err as Error).message}`);
    }
  }
  if (flags.step) {
    try {
      stepScenarios(flags);
    } catch (err) {
      program.error(`error: --scenarios: ${(err as Error).message}`);
    }
  }

  installCleanup();
  const idle0 = machineBusySeconds();
  await new Promise((r) => setTimeout(r, 1000));
  const busyBefore = machineBusySeconds() - idle0;
  out(`FastReject benchmark: node ${process.version}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), ${new Date().toISOString()}`);
  out(`server: node bin/svrkit.js run ${ENTRY} --port 0 --fast-reject <mode>${flags.serverMetrics ? ' --metrics-port 0' : ''} (fresh per run); ` +
    `client: this process, one Channel per run (default options${flags.io !== undefined ? `, connections ${flags.ioConnections}` : ''})`);
  out(`framework: ${distFingerprint()}`);
  if (flags.previous !== undefined) {
    out(`previous (mode "previous"): ${flags.previous} at commit ${treeCommit(flags.previous)}, ${distFingerprint(flags.previous)}; ` +
      `served with node bin/svrkit.js run ${ENTRY} --fast-reject on from that tree`);
  }
  if (flags.admission !== undefined) out(`FastReject servers with admission settings ${JSON.stringify(flags.admission)} (NOT the defaults)`);
  if (flags.io === undefined) {
    out(`calls: ${flags.cpuUs} µs of server CPU each${flags.gcMbPerS === undefined ? '' : `, plus ${flags.gcMbPerS} MB/s of short-lived garbage (~${NODES_PER_KIB} objects per KiB)`}, deadline ${flags.timeoutMs} ms, ` +
      `business priority ${CLASSES.map((c) => `${c.priority} (${c.share * 100}%)`).join(', ')}, ${flags.users} users, seed ${flags.seed}`);
  }
  out(`machine load before start: ${f2(busyBefore)} CPUs busy over 1 s` +
    (busyBefore > 0.25 ? ' -- WARNING: other processes are using the CPU; figures will be low and noisy (see "other CPU s")' : ''));

  if (flags.io !== undefined) return runIo(flags);
  const { capacity, runs } = await getCapacity(flags);
  if (!(capacity > 0)) throw new Error('capacity is 0: no call succeeded in the capacity run (see its notes)');
  if (flags.step) return runStep(flags, capacity, runs);
  return runLoads(flags, capacity, runs);
}

// -----------------------------------------------------------------------------------------------
// Flags

function durationFlag(allowZero: boolean) {
  return (v: string): number => {
    if (allowZero && v.trim() === '0') return 0;
    try {
      return parseDuration(v);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
  };
}

/** A step phase length: a duration, a positive multiple of the 250 ms bucket. */
function phaseFlag(v: string): number {
  const ms = durationFlag(false)(v);
  if (!(ms > 0) || ms % BUCKET_MS !== 0) throw new InvalidArgumentError(`expected a positive multiple of ${BUCKET_MS} ms (the bucket), e.g. 5s or 2500ms`);
  return ms;
}

function loadList(v: string): number[] {
  const xs = v.split(',').map((s) => Number(s.trim()));
  if (xs.length === 0 || xs.some((x) => !(x > 0) || !Number.isFinite(x))) throw new InvalidArgumentError('expected positive numbers, comma-separated, e.g. 0.5,1,2,4');
  return xs;
}

function modeList(v: string): Mode[] {
  const xs = v.split(',').map((s) => s.trim());
  if (xs.length === 0 || xs.some((x) => x !== 'on' && x !== 'off' && x !== 'dry-run' && x !== 'previous')) {
    throw new InvalidArgumentError('expected on, off, dry-run and/or previous, comma-separated');
  }
  if (new Set(xs).size !== xs.length) throw new InvalidArgumentError('a mode is listed twice');
  return xs as Mode[];
}

function scenarioList(v: string): string[] {
  const xs = v.split(',').map((s) => s.trim());
  for (const x of xs) {
    try {
      scenario(x);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
  }
  return xs;
}

function admissionJson(v: string): Record<string, number> {
  let o: unknown;
  try {
    o = JSON.parse(v);
  } catch (err) {
    throw new InvalidArgumentError(`not JSON: ${(err as Error).message}`);
  }
  if (o === null || typeof o !== 'object' || Object.values(o).some((x) => typeof x !== 'number')) throw new InvalidArgumentError('expected a JSON object of numbers');
  return o as Record<string, number>;
}

function positiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

function positiveNumber(v: string): number {
  const n = Number(v);
  if (!(n > 0) || !Number.isFinite(n)) throw new InvalidArgumentError('expected a positive number');
  return n;
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    for (const c of live) c.kill('SIGKILL');
    process.exit(1);
  },
);
