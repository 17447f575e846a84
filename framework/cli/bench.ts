/**
 * The load engine behind `svrkit bench`: a closed-loop load generator.
 *
 * `concurrency` workers each keep exactly one call in flight: as soon as a call ends (with a
 * response or an error) the worker starts the next one, until the run's duration has passed or
 * its total number of requests has been started. Calls still in flight when a duration run ends
 * are awaited and counted.
 *
 * The engine is meant to cost next to nothing per call, so that the server under test, not the
 * bench client, is the bottleneck: per call it allocates nothing beyond what `call()` itself
 * allocates (and the continuation of one `await`), reads the clock twice with `performance.now()`
 * (a plain number, no Date objects, no BigInts), and records the latency into a preallocated
 * HdrHistogram in whole microseconds.
 *
 * With `rate`, the loop is paced: call number k (counting from 0 over all workers) starts no
 * earlier than k / rate seconds after the run began, so the run makes at most `rate` calls per
 * second on average, and exactly that many while the server keeps up with `concurrency` calls in
 * flight. (Slots missed while all calls were in flight are made up at once, up to `concurrency`
 * calls; and timers fire at a 1 ms granularity, so at 3,000/s calls start in threes.)
 * Comparing two servers at one rate compares their CPU per call at the same throughput. Latency
 * still counts from each call's actual start, not from its slot.
 *
 * For a streaming method, a "call" is one whole stream (latency: from opening it to its end), and
 * the messages it carries are counted apart (`BenchOptions.messageCount`): the report then gives
 * messages/s as well as calls/s.
 */
import { setMaxListeners } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { build, type Histogram } from 'hdr-histogram-js';
import { RpcError, statusName } from '../wire/status.js';

/** A snapshot of a run in progress, passed to `BenchOptions.onProgress`. */
export interface BenchProgress {
  /** Time since the run started (ms). */
  elapsedMs: number;
  /** Calls completed so far (ok + errors). */
  calls: number;
  /** Calls completed per second over the last progress interval. */
  callsPerSecond: number;
  /** Calls that failed so far. */
  errors: number;
  /** Messages so far, when the run counts messages (`BenchOptions.messageCount`); else absent. */
  messages?: number;
  /** Messages per second over the last progress interval, when the run counts messages. */
  messagesPerSecond?: number;
}

/** What to run and for how long. Exactly one of `durationMs` and `requests` must be given. */
export interface BenchOptions {
  /**
   * Makes one call. A resolved promise counts as ok; a rejection (or a synchronous throw) counts as
   * an error, grouped by status name for an `RpcError` (`statusName(err.code)`), else by the
   * error's `name`. Errors never stop the run.
   */
  call: () => Promise<unknown>;
  /** Calls kept in flight at all times (a positive integer). */
  concurrency: number;
  /** Stop starting calls after this long (ms, > 0); calls in flight then are awaited and counted. */
  durationMs?: number;
  /** Make exactly this many calls in total (an integer >= 1). */
  requests?: number;
  /**
   * Start at most this many calls per second (> 0) on average, each at its slot (see the module
   * comment). Default: no limit, each worker starts its next call as soon as one ends.
   */
  rate?: number;
  /**
   * For streaming calls: returns how many messages all calls have carried so far (the caller
   * counts them, say one per response read from a stream, failed streams included). When given,
   * progress snapshots and the result carry `messages` and `messagesPerSecond`. It is read once per
   * progress interval and once at the end, never per call.
   */
  messageCount?: () => number;
  /** How often `onProgress` is called (ms, > 0). Default 1000. */
  progressIntervalMs?: number;
  /**
   * Called every `progressIntervalMs` while the run lasts (from a timer, so only while calls yield
   * to the event loop, as any call doing I/O does). If it throws, no new calls are started, the
   * calls in flight are awaited, and `runBench` rejects with what it threw.
   */
  onProgress?: (p: BenchProgress) => void;
}

/** Latency figures of a run, in milliseconds (microsecond resolution). */
export interface BenchLatency {
  min: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  /** The 99.9th percentile. */
  p999: number;
  max: number;
}

/** The outcome of a run. */
export interface BenchResult {
  /** Calls completed in total (ok + errors). */
  calls: number;
  /** Calls that resolved. */
  ok: number;
  /** Failed calls by status name (`'UNAVAILABLE'`, ...) or, for errors other than `RpcError`, by error name. */
  errors: Record<string, number>;
  /** Wall time from the first call started to the last call ended (ms). */
  durationMs: number;
  /** `calls / durationMs`, per second. */
  callsPerSecond: number;
  /** Messages carried by all calls (`BenchOptions.messageCount()` at the end); absent when the run does not count messages. */
  messages?: number;
  /** `messages / durationMs`, per second; absent when the run does not count messages. */
  messagesPerSecond?: number;
  /**
   * Latency of every completed call, ok or failed (ms). `min`, `max` and `mean` are exact; the
   * percentiles come from an HdrHistogram with 3 significant digits (error <= 0.1%). All zeros
   * when no call completed.
   */
  latencyMs: BenchLatency;
  /** The concurrency the run used. */
  concurrency: number;
}

/** Latencies are recorded in microseconds; this is the histogram's initial range (60 s, it grows past it). */
const HISTOGRAM_HIGHEST_US = 60_000_000;

function newHistogram(): Histogram {
  // 64-bit (float) counters: no overflow however long the run; recording is a typed-array
  // increment, cheaper than the 'packed' layout, and ~220 KB for 1 us .. 60 s at 3 digits.
  return build({
    bitBucketSize: 64,
    lowestDiscernibleValue: 1,
    highestTrackableValue: HISTOGRAM_HIGHEST_US,
    numberOfSignificantValueDigits: 3,
    autoResize: true,
    useWebAssembly: false,
  });
}

function validate(o: BenchOptions): void {
  if (o === null || typeof o !== 'object') throw new Error('runBench: options are required');
  if (typeof o.call !== 'function') throw new Error('runBench: call must be a function returning a promise');
  if (typeof o.concurrency !== 'number' || !Number.isInteger(o.concurrency) || o.concurrency < 1) {
    throw new Error(`runBench: concurrency must be a positive integer, got ${String(o.concurrency)}`);
  }
  const hasDuration = o.durationMs !== undefined;
  const hasRequests = o.requests !== undefined;
  if (hasDuration === hasRequests) {
    throw new Error(
      hasDuration
        ? 'runBench: give either durationMs or requests, not both'
        : 'runBench: give either durationMs or requests (neither was given)',
    );
  }
  if (hasDuration && !(typeof o.durationMs === 'number' && Number.isFinite(o.durationMs) && o.durationMs > 0)) {
    throw new Error(`runBench: durationMs must be a positive number of milliseconds, got ${String(o.durationMs)}`);
  }
  if (hasRequests && !(typeof o.requests === 'number' && Number.isInteger(o.requests) && o.requests >= 1)) {
    throw new Error(`runBench: requests must be an integer >= 1, got ${String(o.requests)}`);
  }
  if (
    o.progressIntervalMs !== undefined &&
    !(typeof o.progressIntervalMs === 'number' && Number.isFinite(o.progressIntervalMs) && o.progressIntervalMs > 0)
  ) {
    throw new Error(`runBench: progressIntervalMs must be a positive number of milliseconds, got ${String(o.progressIntervalMs)}`);
  }
  if (o.rate !== undefined && !(typeof o.rate === 'number' && Number.isFinite(o.rate) && o.rate > 0)) {
    throw new Error(`runBench: rate must be a positive number of calls per second, got ${String(o.rate)}`);
  }
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') {
    throw new Error('runBench: onProgress must be a function');
  }
  if (o.messageCount !== undefined && typeof o.messageCount !== 'function') {
    throw new Error('runBench: messageCount must be a function returning a number');
  }
}

/**
 * `svrkit bench --concurrency` when the flag is not given: 64 calls in flight. Enough to keep one
 * Node server busy over one connection (the repository's benchmarks measure at 64 too), and under
 * the 100 open streams a server takes per connection by default, so it suits streaming methods as
 * well as unary ones with the default single connection.
 */
export const DEFAULT_BENCH_CONCURRENCY = 64;

/** What a failed call is reported as: its status name and message. */
export interface ErrorSummary {
  /** The status name for an `RpcError` (`'INVALID_ARGUMENT'`, ...), else the error's `name` (or `'Error'`). */
  status: string;
  /** The error's message (`String(err)` when it has none). */
  message: string;
}

/**
 * Summarises a failed call the way a run counts it (see `BenchResult.errors`).
 * @param err - what the call threw or rejected with.
 * @returns its status name (or error name) and message.
 */
export function errorSummary(err: unknown): ErrorSummary {
  const message = err instanceof Error ? err.message : String(err);
  return { status: errorKey(err), message };
}

/** The key a failed call is counted under. */
function errorKey(err: unknown): string {
  if (err instanceof RpcError) return statusName(err.code);
  if (err !== null && typeof err === 'object') {
    const name = (err as { name?: unknown }).name;
    if (typeof name === 'string' && name !== '') return name;
  }
  return 'Error';
}

/** Microseconds to milliseconds, rounded to 3 decimals. */
function usToMs(us: number): number {
  return Math.round(us) / 1000;
}

/**
 * Runs a closed-loop benchmark: `concurrency` calls in flight at all times, for `durationMs` or
 * for `requests` calls in total; with `rate`, paced to at most that many calls per second.
 * @param options - see `BenchOptions`.
 * @returns counts, errors by name, throughput and latency (see `BenchResult`).
 * @throws Error (synchronously reported as a rejection) when the options are invalid: `call` not
 *   a function, `concurrency` not a positive integer, both or neither of `durationMs`/`requests`,
 *   `requests` not an integer >= 1, `durationMs`/`progressIntervalMs`/`rate` not > 0. Rejects with what
 *   `onProgress` threw, if it throws. Failed calls never make it reject.
 */
export async function runBench(options: BenchOptions): Promise<BenchResult> {
  validate(options);
  const { call, concurrency, onProgress, messageCount } = options;
  const limit = options.requests ?? Infinity;
  const progressIntervalMs = options.progressIntervalMs ?? 1000;
  const histogram = newHistogram();
  const errors = new Map<string, number>();

  let started = 0;
  let ok = 0;
  let failed = 0;
  let minUs = Infinity;
  let maxUs = 0;
  let sumUs = 0;
  let stopped = false;
  let progressError: { error: unknown } | undefined;
  // Wakes the workers of a paced run that wait for their slots, when the run stops early.
  const stopWaiting = new AbortController();
  // Each worker waiting for its slot listens on it (one listener per worker, removed when its wait
  // ends): more than Node's default warning threshold of 10 is expected, not a leak.
  setMaxListeners(Infinity, stopWaiting.signal);

  const startTime = performance.now();
  const endTime = options.durationMs !== undefined ? startTime + options.durationMs : Infinity;
  // Paced runs: ms between call starts (0: unpaced).
  const intervalMs = options.rate !== undefined ? 1000 / options.rate : 0;

  // One closed loop. The stop test reads the clock at most once per call (it is needed anyway
  // for the latency); requests mode needs no clock for it at all.
  const worker = async (): Promise<void> => {
    let now = performance.now();
    while (!stopped && started < limit && now < endTime) {
      if (intervalMs > 0) {
        const slot = startTime + started * intervalMs;
        if (slot >= endTime) break;
        started++;
        // (A timer may fire early by the event loop's cached clock: wait until the slot has come.)
        while (slot > now && !stopped) {
          try {
            await sleep(slot - now, undefined, { signal: stopWaiting.signal });
          } catch {
            break; // aborted: the run stopped
          }
          now = performance.now();
        }
        if (stopped) break;
      } else {
        started++;
      }
      const t0 = now;
      try {
        await call();
        ok++;
      } catch (err) {
        failed++;
        const key = errorKey(err);
        errors.set(key, (errors.get(key) ?? 0) + 1);
      }
      now = performance.now();
      const us = Math.round((now - t0) * 1000);
      histogram.recordValue(us);
      sumUs += us;
      if (us < minUs) minUs = us;
      if (us > maxUs) maxUs = us;
    }
  };

  let timer: NodeJS.Timeout | undefined;
  if (onProgress !== undefined) {
    let lastTime = startTime;
    let lastCalls = 0;
    let lastMessages = 0;
    timer = setInterval(() => {
      const now = performance.now();
      const calls = ok + failed;
      const dt = now - lastTime;
      const p: BenchProgress = {
        elapsedMs: now - startTime,
        calls,
        callsPerSecond: dt > 0 ? ((calls - lastCalls) * 1000) / dt : 0,
        errors: failed,
      };
      if (messageCount !== undefined) {
        const messages = messageCount();
        p.messages = messages;
        p.messagesPerSecond = dt > 0 ? ((messages - lastMessages) * 1000) / dt : 0;
        lastMessages = messages;
      }
      lastTime = now;
      lastCalls = calls;
      try {
        onProgress(p);
      } catch (error) {
        progressError ??= { error };
        stopped = true;
        clearInterval(timer);
        stopWaiting.abort();
      }
    }, progressIntervalMs);
  }

  const workers: Promise<void>[] = [];
  const n = Math.min(concurrency, limit);
  try {
    for (let i = 0; i < n; i++) workers.push(worker());
    await Promise.all(workers);
  } finally {
    if (timer !== undefined) clearInterval(timer);
  }
  const durationMs = performance.now() - startTime;
  if (progressError !== undefined) throw progressError.error;

  const calls = ok + failed;
  const errorCounts: Record<string, number> = {};
  for (const [k, v] of [...errors].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))) errorCounts[k] = v;
  const latencyMs: BenchLatency =
    calls === 0
      ? { min: 0, mean: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0 }
      : {
          min: usToMs(minUs),
          mean: usToMs(sumUs / calls),
          // HdrHistogram reports the highest value equivalent to a bucket; clamp to the exact max.
          p50: usToMs(Math.min(histogram.getValueAtPercentile(50), maxUs)),
          p90: usToMs(Math.min(histogram.getValueAtPercentile(90), maxUs)),
          p99: usToMs(Math.min(histogram.getValueAtPercentile(99), maxUs)),
          p999: usToMs(Math.min(histogram.getValueAtPercentile(99.9), maxUs)),
          max: usToMs(maxUs),
        };
  const result: BenchResult = {
    calls,
    ok,
    errors: errorCounts,
    durationMs,
    callsPerSecond: durationMs > 0 ? (calls * 1000) / durationMs : 0,
    latencyMs,
    concurrency,
  };
  if (messageCount !== undefined) {
    const messages = messageCount();
    result.messages = messages;
    result.messagesPerSecond = durationMs > 0 ? (messages * 1000) / durationMs : 0;
  }
  return result;
}

/** An integer with thousands separators, independent of the locale: 1234567 -> '1,234,567'. */
function int(n: number): string {
  const s = String(Math.round(n));
  return s.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

/**
 * A human-readable multi-line report of a run, e.g.
 * ```
 * svrkit bench
 *   calls        752,311 (752,311 ok, 0 errors)
 *   duration     5.00 s
 *   throughput   150,420 calls/s
 *   concurrency  64
 *   latency ms   min 0.081  mean 0.424  p50 0.398  p90 0.571  p99 1.031  p99.9 2.411  max 14.205
 * ```
 * followed by one `errors` line per error name when there were errors. When the run counted
 * messages (a streaming method), the throughput line also gives messages/s and a `messages` line
 * follows the `calls` line:
 * ```
 *   calls        1,200 (1,200 ok, 0 errors)
 *   messages     120,000 (100.0 per call)
 *   duration     5.00 s
 *   throughput   240 calls/s  24,000 messages/s
 * ```
 * @param r - a result of `runBench`.
 * @param title - first line; default `'svrkit bench'`.
 */
export function formatBenchResult(r: BenchResult, title = 'svrkit bench'): string {
  const errorTotal = r.calls - r.ok;
  const l = r.latencyMs;
  const f = (v: number) => v.toFixed(3);
  const lines = [
    title,
    `  calls        ${int(r.calls)} (${int(r.ok)} ok, ${int(errorTotal)} error${errorTotal === 1 ? '' : 's'})`,
    ...(r.messages !== undefined ? [`  messages     ${int(r.messages)} (${(r.calls > 0 ? r.messages / r.calls : 0).toFixed(1)} per call)`] : []),
    `  duration     ${(r.durationMs / 1000).toFixed(2)} s`,
    `  throughput   ${int(r.callsPerSecond)} calls/s${r.messagesPerSecond !== undefined ? `  ${int(r.messagesPerSecond)} messages/s` : ''}`,
    `  concurrency  ${int(r.concurrency)}`,
    `  latency ms   min ${f(l.min)}  mean ${f(l.mean)}  p50 ${f(l.p50)}  p90 ${f(l.p90)}  p99 ${f(l.p99)}  p99.9 ${f(l.p999)}  max ${f(l.max)}`,
  ];
  const names = Object.keys(r.errors);
  if (names.length > 0) {
    const width = Math.max(...names.map((n) => n.length));
    names.forEach((name, i) => {
      lines.push(`  ${i === 0 ? 'errors      ' : '            '} ${name.padEnd(width)}  ${int(r.errors[name]!)}`);
    });
  }
  return lines.join('\n');
}

/**
 * One progress line, e.g. `'  3.0s  152,311 calls  151,220/s  0 errors'`; when the run counts
 * messages, `'  3.0s  1,523 calls  508/s  152,300 messages  50,800/s  0 errors'`.
 * @param p - a progress snapshot from `BenchOptions.onProgress`.
 */
export function formatProgress(p: BenchProgress): string {
  const messages = p.messages !== undefined ? `  ${int(p.messages)} messages  ${int(p.messagesPerSecond ?? 0)}/s` : '';
  return `${(p.elapsedMs / 1000).toFixed(1).padStart(6)}s  ${int(p.calls)} calls  ${int(p.callsPerSecond)}/s${messages}  ${int(p.errors)} error${p.errors === 1 ? '' : 's'}`;
}

/**
 * `parseDuration` lives with the other flag parsers (flags.ts); re-exported here for the benchmark
 * scripts under bench/ that import it from this module.
 */
export { parseDuration } from './flags.js';
