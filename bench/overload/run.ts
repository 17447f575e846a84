/**
 * FastReject under overload: goodput, latency and who gets served, with and without it.
 *
 *   npm run build                      # the server runs dist/ (bin/svrkit.js)
 *   npx tsx bench/overload/run.ts [--warmup 5s] [--duration 10s] [--loads 0.5,1,2,4] [--cpu-us 1000] [--json [file]]
 *
 * The server is the Work service (bench/overload/work.ts: each call spins the CPU for `cpuUs` µs),
 * served by `node bin/svrkit.js run bench/overload/work.ts --port 0 --fast-reject on|off
 * --metrics-port 0` as a child process, a fresh one for every run (no admission level, heap or JIT
 * state carries over). The load generator is this process, through one `Channel` with default
 * options (adaptive throttle, retries and collaborative shedding as a user gets them), also fresh
 * per run.
 *
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
 *
 * Per run it prints offered calls/s, goodput (calls that succeeded within their deadline, per s,
 * and as % of capacity), p50/p99 of the successful calls, the share that ended
 * RESOURCE_EXHAUSTED (split: refused by the server `overloaded: ...`, shed locally by the
 * client because of the level the server advertised, throttled locally by the adaptive
 * throttle), the share that ended DEADLINE_EXCEEDED, success per priority class, and the CPU
 * seconds of the server, of this process (the client) and of everything else on the machine
 * during the measured period. Then the targets at 4x: goodput >= 90% of capacity, top-priority
 * success >= 99%, p99 of successful calls < 100 ms, PASS/FAIL.
 *
 * The server also serves its Prometheus metrics (`--metrics-port 0`), scraped once a second: the
 * per-second timeline (`--timeline`, and in the JSON) shows its admission level, mean queueing
 * time, calls handled and refused, next to what the client saw. `--no-server-metrics` turns that off.
 * `--windows` serves the FastReject runs with window-server.ts (the same `serve()`, plus the
 * server's `onWindow` log), which adds every admission window to the timeline; `--admission <json>`
 * then sets admission options on those servers, to explore them (not the defaults).
 *
 * Every server it starts is stopped when a run ends, and on errors, Ctrl-C and exit.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
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

type Mode = 'on' | 'off' | 'dry-run';

interface Flags {
  warmup: number;
  duration: number;
  loads: number[];
  cpuUs: number;
  timeoutMs: number;
  users: number;
  seed: number;
  modes: Mode[];
  capacity?: number;
  capacityConcurrency: number;
  capacityDuration: number;
  serverMetrics: boolean;
  windows: boolean;
  admission?: Record<string, number>;
  timeline: boolean;
  json?: string | boolean;
}

// -----------------------------------------------------------------------------------------------
// Processes

/** A closed FastReject window, as the server's `onWindow` reports it (`WindowReport`). */
interface WindowLine {
  at: number;
  arrived: number;
  admitted: number;
  meanQueueMs: number;
  eventLoopDelayMs: number;
  overloaded: boolean;
  levelBefore: number;
  levelAfter: number;
}

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

async function startServer(mode: Mode, flags: Flags): Promise<ServerProc> {
  const args = flags.windows && mode !== 'off'
    ? ['--import', 'tsx', 'bench/overload/window-server.ts', mode, ...(flags.admission === undefined ? [] : [JSON.stringify(flags.admission)])]
    : [svrkitBin, 'run', ENTRY, '--port', '0', '--fast-reject', mode, ...(flags.serverMetrics ? ['--metrics-port', '0'] : [])];
  const child = spawn(process.execPath, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
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
 * Which build of the framework the server runs: a short hash of dist/framework/ and its newest
 * file's time (the framework changes between runs of this benchmark; this says which one ran).
 */
function distFingerprint(): string {
  const dir = path.join(root, 'dist', 'framework');
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

// -----------------------------------------------------------------------------------------------
// Server metrics (Prometheus text, scraped once a second)

interface ServerSample {
  /** ms since the run started. */
  atMs: number;
  level: number | undefined;
  handled: number;
  rejected: number;
  queueSum: number;
  queueCount: number;
  eventLoopLagP99Ms: number | undefined;
}

async function scrape(url: string, atMs: number): Promise<ServerSample | undefined> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
    const exp = parseExposition(await res.text());
    const sum = (name: string, filter: (l: Readonly<Record<string, string>>) => boolean = () => true): number =>
      (exp.samples.get(name) ?? []).filter((s) => filter(s.labels)).reduce((a, s) => a + s.value, 0);
    const work = (l: Readonly<Record<string, string>>) => l['service'] === 'overload.Work';
    const level = exp.samples.get('svrkit_server_admission_level')?.[0]?.value;
    const lag = exp.samples.get('nodejs_eventloop_lag_p99_seconds')?.[0]?.value;
    return {
      atMs,
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
  /** FastReject windows that closed in this second (--windows): count, overloaded, arrivals, admitted, mean queueing (ms), level after the last. */
  windows?: { n: number; overloaded: number; arrived: number; admitted: number; meanQueueMs: number; maxEventLoopDelayMs: number; levelAfter: number };
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
  /** Calls per second (open loop), or undefined for the closed loop. */
  rate?: number;
  /** Closed loop: calls in flight. */
  concurrency?: number;
  warmupMs: number;
  durationMs: number;
}

/**
 * Drives one run against `server`: open loop at `spec.rate`, or closed loop at `spec.concurrency`.
 * Every call's scheduled start decides whether it counts (>= warmupMs).
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
  const request = { cpuUs: flags.cpuUs, tag: '' };
  const random = mulberry32(flags.seed);
  const cumulative = CLASSES.map((_, i) => CLASSES.slice(0, i + 1).reduce((a, c) => a + c.share, 0));

  const outcomes = newOutcomes();
  const perClass = CLASSES.map((c) => ({ name: c.name, priority: c.priority, started: 0, ok: 0 }));
  const latency = newHistogram();
  const seconds = Math.ceil((spec.warmupMs + spec.durationMs) / 1000);
  const timeline: Second[] = Array.from({ length: seconds }, (_, t) => ({
    t, measured: t * 1000 >= spec.warmupMs, started: 0, ok: 0, exhausted: 0, deadlineExceeded: 0, topStarted: 0, topOk: 0,
  }));
  let inflight = 0;
  let lagSum = 0;
  let lagN = 0;
  let lagMax = 0;

  // A first call, not counted, so the connection is up before the clock starts.
  await channel.unary(method, request, { timeoutMs: 5000 }).catch(() => {});

  const t0 = performance.now();
  const epoch0 = Date.now();
  const windows0 = server.windows.length;
  const endMs = spec.warmupMs + spec.durationMs;
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
    if (measured) {
      outcomes.started++;
      perClass[cls]!.started++;
    }
    inflight++;
    const settle = (kind: Kind, ms: number): void => {
      inflight--;
      if (kind === 'ok') {
        sec.ok++;
        if (cls === 0) sec.topOk++;
      } else if (kind === 'deadline') sec.deadlineExceeded++;
      else if (kind === 'server' || kind === 'shed' || kind === 'throttled' || kind === 'exhausted') sec.exhausted++;
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

  // Server metrics, once a second.
  const samples: ServerSample[] = [];
  let scraping = false;
  const scraper =
    server.metricsUrl === undefined
      ? undefined
      : setInterval(() => {
          if (scraping) return;
          scraping = true;
          const at = performance.now() - t0;
          void scrape(server.metricsUrl!, at).then((s) => {
            scraping = false;
            if (s !== undefined) samples.push(s);
          });
        }, 1000);
  const progress = setInterval(() => {
    const t = Math.floor((performance.now() - t0) / 1000) - 1;
    const s = timeline[t];
    if (s === undefined) return;
    const sv = samples.at(-1);
    process.stderr.write(
      `    t=${String(t).padStart(2)}s${s.measured ? ' ' : 'w'} started ${s.started}, ok ${s.ok}, rejected ${s.exhausted}, deadline ${s.deadlineExceeded}` +
        (sv === undefined ? '' : `; server level ${sv.level ?? '-'}`) + '\n',
    );
  }, 1000);

  await new Promise<void>((resolve) => {
    const finish = (): void => {
      cpuResult = (cpu ?? new CpuMeter(server.child.pid)).read();
      resolve();
    };
    if (spec.rate !== undefined) {
      const rate = spec.rate;
      let started = 0;
      const total = Math.floor((endMs / 1000) * rate);
      const tick = setInterval(() => {
        const now = performance.now();
        const elapsed = now - t0;
        if (cpu === undefined && elapsed >= spec.warmupMs) {
          cpu = new CpuMeter(server.child.pid);
          measuring = true;
        }
        const due = Math.min(total, Math.floor((elapsed / 1000) * rate));
        while (started < due) {
          const sched = (started * 1000) / rate;
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

  // Server samples into the timeline: the deltas up to each second's end.
  for (let i = 0; i < samples.length; i++) {
    const s = samples[i]!;
    const p = samples[i - 1];
    const t = Math.round(s.atMs / 1000) - 1;
    const sec = timeline[t];
    if (sec === undefined) continue;
    sec.serverLevel = s.level;
    sec.serverEventLoopLagP99Ms = s.eventLoopLagP99Ms;
    if (p !== undefined) {
      sec.serverHandled = s.handled - p.handled;
      sec.serverRejected = s.rejected - p.rejected;
      const n = s.queueCount - p.queueCount;
      sec.serverMeanQueueMs = n > 0 ? ((s.queueSum - p.queueSum) / n) * 1000 : undefined;
    }
  }
  // FastReject windows (--windows) into the timeline.
  const windows = server.windows.slice(windows0).map((w) => ({ tMs: w.at - epoch0, ...w }));
  for (const w of windows) {
    const sec = timeline[Math.floor(w.tMs / 1000)];
    if (sec === undefined) continue;
    const a = (sec.windows ??= { n: 0, overloaded: 0, arrived: 0, admitted: 0, meanQueueMs: 0, maxEventLoopDelayMs: 0, levelAfter: 0 });
    a.meanQueueMs = (a.meanQueueMs * a.admitted + w.meanQueueMs * w.admitted) / Math.max(1, a.admitted + w.admitted);
    a.n++;
    if (w.overloaded) a.overloaded++;
    a.arrived += w.arrived;
    a.admitted += w.admitted;
    a.maxEventLoopDelayMs = Math.max(a.maxEventLoopDelayMs, w.eventLoopDelayMs);
    a.levelAfter = w.levelAfter;
  }
  return {
    serverTotals,
    clientOkWholeRun: timeline.reduce((a, x) => a + x.ok, 0),
    windows,
    outcomes,
    perClass,
    latency,
    timeline,
    retries,
    throttledBy,
    lagMeanMs: lagN > 0 ? lagSum / lagN : 0,
    lagMaxMs: lagMax,
    stuck: inflight,
    cpu: cpuResult!,
  };
}

// -----------------------------------------------------------------------------------------------
// Runs and reporting

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

function printTimeline(r: Row): void {
  out(`\n${r.load}x, FastReject ${r.fastReject}: per second (by scheduled start; w = warm-up), with the server's metrics at the second's end`);
  const w = r.windows.length > 0;
  out('| t s | started | ok | rejected | deadline | top ok/started | server level | server handled | server rejected | server mean queue ms | server loop lag p99 ms |' +
    (w ? ' windows (overloaded) | window arrived | window admitted | window mean queue ms | level after |' : ''));
  out('|---|---|---|---|---|---|---|---|---|---|---|' + (w ? '---|---|---|---|---|' : ''));
  for (const s of r.timeline) {
    const x = s.windows;
    out(
      `| ${s.t}${s.measured ? '' : 'w'} | ${s.started} | ${s.ok} | ${s.exhausted} | ${s.deadlineExceeded} | ${s.topOk}/${s.topStarted} | ${s.serverLevel ?? '-'} | ` +
        `${s.serverHandled ?? '-'} | ${s.serverRejected ?? '-'} | ${s.serverMeanQueueMs === undefined ? '-' : f1(s.serverMeanQueueMs)} | ` +
        `${s.serverEventLoopLagP99Ms === undefined ? '-' : f1(s.serverEventLoopLagP99Ms)} |` +
        (!w ? '' : x === undefined ? ' - | - | - | - | - |' : ` ${x.n} (${x.overloaded}) | ${x.arrived} | ${x.admitted} | ${f1(x.meanQueueMs)} | ${x.levelAfter} |`),
    );
  }
}

function printNotes(rows: Row[]): void {
  for (const r of rows) {
    const notes: string[] = [];
    const o = r.outcomes;
    if (o.otherExhausted > 0) notes.push(`${o.otherExhausted} other RESOURCE_EXHAUSTED`);
    if (o.okLate > 0) notes.push(`${o.okLate} succeeded after their deadline`);
    for (const [k, v] of Object.entries(o.otherErrors)) notes.push(`${k} ${v}`);
    if (r.stuck > 0) notes.push(`${r.stuck} calls still outstanding 5 s after the schedule ended`);
    const thr = Object.entries(r.throttledBy);
    if (thr.length > 0) notes.push(`channel refusals: ${thr.map(([k, v]) => `${k} ${v}`).join(', ')}`);
    const st = r.serverTotals;
    if (st !== undefined && (r.pct.exhausted > 0 || r.pct.deadlineExceeded > 0 || Object.keys(st.refused).length > 0)) {
      const fmt = (x: Record<string, number>) => Object.entries(x).map(([k, v]) => `${k} ${int(v)}`).join(', ') || 'none';
      const wasted = (st.handled['OK'] ?? 0) - r.clientOkWholeRun;
      notes.push(`server, whole run incl. warm-up: handled ${fmt(st.handled)}; refused ${fmt(st.refused)}; ` +
        `${int(wasted)} calls the server completed OK did not succeed at the client (answered after the client gave up)`);
    }
    if (r.scheduleLagMs !== undefined && r.scheduleLagMs.max > 50) notes.push(`client schedule lag mean ${f1(r.scheduleLagMs.mean)} ms, max ${f1(r.scheduleLagMs.max)} ms`);
    if (notes.length > 0) out(`- ${r.load}x FR ${r.fastReject}: ${notes.join('; ')}`);
  }
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

async function main(): Promise<void> {
  const program = new Command()
    .description('FastReject benchmark: goodput and latency of the Work service under 0.5x..4x its capacity, FastReject on and off')
    .option('--warmup <time>', 'load before each measured period (same rate, same server); DAGOR needs ~25 windows to shed a sudden 4x', durationFlag(true), 30_000)
    .option('-d, --duration <time>', 'measured period of each run', durationFlag(false), 10_000)
    .option('--loads <list>', 'offered load as multiples of capacity, comma-separated', loadList, [0.5, 1, 2, 4])
    .option('--cpu-us <n>', 'CPU each call burns on the server (µs)', positiveInt, 1000)
    .option('--timeout-ms <n>', 'deadline of each call (ms)', positiveInt, 500)
    .option('--users <n>', 'distinct x-user-id values', positiveInt, 1000)
    .option('--seed <n>', 'PRNG seed of the call mix', (v: string) => Number.parseInt(v, 10), 1)
    .addOption(new Option('--modes <list>', 'FastReject modes to run per load, in order (on, off, dry-run)').argParser(modeList).default(['on', 'off'] as Mode[]))
    .option('--capacity <n>', 'skip the capacity measurement and use this many calls/s', positiveInt)
    .option('--capacity-concurrency <n>', 'closed-loop concurrency of the capacity measurement', positiveInt, 16)
    .option('--capacity-duration <time>', 'measured period of the capacity run (after a 2 s warm-up)', durationFlag(false), 5000)
    .option('--no-server-metrics', "don't serve and scrape the server's Prometheus metrics (admission level timeline)")
    .option('--windows', "serve with bench/overload/window-server.ts (same serve(), plus the server's onWindow log): every FastReject window in the timeline and JSON")
    .option('--admission <json>', 'with --windows: admission settings for the server (OverloadOptions, e.g. \'{"windowMs":100}\'), to explore them; the default is svrkit\'s', admissionJson)
    .option('--timeline', 'print each run\'s per-second timeline')
    .option('--json [file]', 'write all rows as JSON to <file>; without a file: JSON on stdout, the tables on stderr')
    .parse(process.argv);
  const flags = program.opts<Flags>();
  if (flags.json === true) out = (s = '') => process.stderr.write(s + '\n');
  if (flags.admission !== undefined && !flags.windows) program.error('error: --admission needs --windows (svrkit run has no flags for these settings)');

  installCleanup();
  const idle0 = machineBusySeconds();
  await new Promise((r) => setTimeout(r, 1000));
  const busyBefore = machineBusySeconds() - idle0;
  out(`FastReject benchmark: node ${process.version}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), ${new Date().toISOString()}`);
  out(`server: node bin/svrkit.js run ${ENTRY} --port 0 --fast-reject <mode>${flags.serverMetrics ? ' --metrics-port 0' : ''} (fresh per run); ` +
    `client: this process, one Channel per run (default options)`);
  out(`framework: ${distFingerprint()}`);
  if (flags.admission !== undefined) out(`FastReject servers with admission settings ${JSON.stringify(flags.admission)} (NOT the defaults)`);
  out(`calls: ${flags.cpuUs} µs of server CPU each, deadline ${flags.timeoutMs} ms, ` +
    `business priority ${CLASSES.map((c) => `${c.priority} (${c.share * 100}%)`).join(', ')}, ${flags.users} users, seed ${flags.seed}`);
  out(`machine load before start: ${f2(busyBefore)} CPUs busy over 1 s` +
    (busyBefore > 0.25 ? ' -- WARNING: other processes are using the CPU; figures will be low and noisy (see "other CPU s")' : ''));

  // 1. Capacity.
  let capacity = flags.capacity;
  let capacityRow: Row | undefined;
  if (capacity === undefined) {
    const spec: LoadSpec = { concurrency: flags.capacityConcurrency, warmupMs: 2000, durationMs: flags.capacityDuration };
    const r = await withServer('off', flags, (s) => {
      process.stderr.write(`capacity: closed loop c=${spec.concurrency}, FastReject off, server pid ${s.child.pid}\n`);
      return drive(s, spec, flags);
    });
    capacityRow = toRow('capacity', 'off', spec, r, undefined);
    capacity = capacityRow.goodputPerSecond;
    const failed = capacityRow.outcomes.started - capacityRow.outcomes.ok;
    out(`\ncapacity: ${int(capacity)} calls/s (closed loop, concurrency ${spec.concurrency}, FastReject off, ${spec.durationMs / 1000} s after a 2 s warm-up; ` +
      `p50 ${f2(capacityRow.latencyMs.p50)} ms, p99 ${f2(capacityRow.latencyMs.p99)} ms, ${failed} failed; ` +
      `CPU s: server ${f2(capacityRow.serverCpuS)}, client ${f2(capacityRow.clientCpuS)}, other ${f2(capacityRow.otherCpuS)})`);
    if (failed > 0) printNotes([{ ...capacityRow, load: 0 }]);
  } else {
    out(`\ncapacity: ${int(capacity)} calls/s (given with --capacity)`);
  }

  // 2. Open loop, per load, alternating which mode goes first.
  const rows: Row[] = [];
  for (const [i, load] of flags.loads.entries()) {
    const modes = i % 2 === 0 ? flags.modes : [...flags.modes].reverse();
    for (const mode of modes) {
      const rate = load * capacity;
      const spec: LoadSpec = { rate, warmupMs: flags.warmup, durationMs: flags.duration };
      const r = await withServer(mode, flags, (s) => {
        process.stderr.write(`${load}x (${int(rate)} calls/s), FastReject ${mode}, server pid ${s.child.pid}\n`);
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
    `% columns are shares of the calls started in the measured period; ok% = calls of the class that succeeded within the deadline\n`);
  printTable(rows, capacity);
  out('');
  printNotes(rows);
  const checked = rows.filter((r) => r.targets !== undefined);
  if (checked.length > 0) {
    out('\ntargets at 4x capacity (meant for FastReject on; FastReject off shown for comparison):');
    for (const r of checked) {
      out(`  FastReject ${r.fastReject}: ` + r.targets!.map((t) => `${t.name}: ${t.value} ${t.pass ? 'PASS' : 'FAIL'}`).join('; '));
    }
  }
  if (flags.timeline) for (const r of rows) printTimeline(r);

  if (flags.json !== undefined) {
    const doc = {
      date: new Date().toISOString(),
      framework: distFingerprint(),
      node: process.version,
      cpus: os.cpus().length,
      flags,
      classes: CLASSES,
      capacity,
      capacityRun: capacityRow,
      rows,
    };
    const text = JSON.stringify(doc, null, 2);
    if (typeof flags.json === 'string') {
      writeFileSync(flags.json, text);
      out(`\nwrote ${flags.json}`);
    } else process.stdout.write(text + '\n');
  }
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

function loadList(v: string): number[] {
  const xs = v.split(',').map((s) => Number(s.trim()));
  if (xs.length === 0 || xs.some((x) => !(x > 0) || !Number.isFinite(x))) throw new InvalidArgumentError('expected positive numbers, comma-separated, e.g. 0.5,1,2,4');
  return xs;
}

function modeList(v: string): Mode[] {
  const xs = v.split(',').map((s) => s.trim());
  if (xs.length === 0 || xs.some((x) => x !== 'on' && x !== 'off' && x !== 'dry-run')) throw new InvalidArgumentError('expected on, off and/or dry-run, comma-separated');
  return xs as Mode[];
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

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    for (const c of live) c.kill('SIGKILL');
    process.exit(1);
  },
);
