/**
 * The workload of PaxosStore's stress test (Zheng et al., VLDB 2017, section 7), as a closed loop:
 * 120-byte values, reads:writes 3.3:1 (writes are puts), keys drawn uniformly at random from a
 * fixed set of 10,000. `concurrency` workers each keep one operation in flight; a worker starts its
 * next operation as soon as the last one ended, ok or failed.
 *
 * The loop follows `framework/cli/bench.ts` (`runBench`): one `performance.now()` before and one
 * after each call, latencies in whole microseconds into a preallocated HdrHistogram (3 significant
 * digits), errors counted by name and never stopping the run. What it adds: reads and writes are
 * kept apart (a histogram and error counts each), every completion is also counted in a
 * per-`bucketMs` timeline (by completion time), and the longest stretch without a successful
 * write (and read) is tracked, for the failover runs.
 */
import { randomBytes } from 'node:crypto';
import { RpcError, statusName } from '../../framework/wire/status.js';
import { newHistogram } from '../support.js';

/** What the workload drives: one client of a key-value store. */
export interface KvTarget {
  /** A linearizable read of `key`; resolves (with anything) when it succeeded. */
  get(key: string): Promise<unknown>;
  /** Writes `value` to `key`; resolves when the write is committed. */
  put(key: string, value: Uint8Array): Promise<unknown>;
}

/** The workload's shape; defaults are PaxosStore's stress test. */
export interface WorkloadShape {
  /** Distinct keys, drawn uniformly. Default 10,000. */
  keys: number;
  /** Bytes per value. Default 120. */
  valueBytes: number;
  /** Reads per write. Default 3.3 (so 1 / 4.3 = 23.3% of operations are writes). */
  readsPerWrite: number;
}

export const PAXOSSTORE_STRESS: WorkloadShape = { keys: 10_000, valueBytes: 120, readsPerWrite: 3.3 };

/** A timed event inside a run (e.g. killing a replica). */
export interface RunEvent {
  /** When, in ms after the run started. */
  atMs: number;
  /** What to do; a rejection is reported on stderr, it does not stop the run. */
  run: () => unknown;
}

/** How to run. */
export interface WorkloadOptions {
  /** The clients; worker i uses `targets[i % targets.length]`. */
  targets: readonly KvTarget[];
  /** Operations in flight at all times. */
  concurrency: number;
  /** Stop starting operations after this long (ms); those in flight are awaited and counted. */
  durationMs: number;
  /** The workload; default `PAXOSSTORE_STRESS`. */
  shape?: WorkloadShape;
  /** Width of the timeline's buckets (ms). Default 100. */
  bucketMs?: number;
  /** Events to run at given times. */
  events?: readonly RunEvent[];
}

/** Latency and outcome of one kind of operation. */
export interface OpStats {
  /** Completed operations (ok + failed). */
  calls: number;
  ok: number;
  failed: number;
  /** Operations (ok or failed) that took longer than 1 s. */
  slowerThan1s: number;
  /** Failures by name: an RpcError's status name (`UNAVAILABLE`), else the error's class name. */
  errors: Record<string, number>;
  /** Latency of every completed operation, ok or failed (ms, microsecond resolution). */
  latencyMs: { mean: number; p50: number; p90: number; p99: number; p999: number; max: number };
}

/** One bucket of the timeline: operations that completed in it. */
export interface Bucket {
  readOk: number;
  readFailed: number;
  writeOk: number;
  writeFailed: number;
}

/** The longest stretch with no successful operation of a kind, within the run's window. */
export interface Gap {
  /** Its length (ms). */
  ms: number;
  /** Its start and end, in ms after the run started (a successful completion, or the run's start/end). */
  fromMs: number;
  toMs: number;
}

/** The outcome of a run. */
export interface WorkloadResult {
  concurrency: number;
  /** From the first operation started to the last one ended (ms). */
  durationMs: number;
  /** Successful operations per second (reads + writes). */
  okPerSecond: number;
  reads: OpStats;
  writes: OpStats;
  /** Completions per `bucketMs`, by completion time; a bucket past `durationMs` is dropped. */
  timeline: Bucket[];
  bucketMs: number;
  longestWriteGap: Gap;
  longestReadGap: Gap;
  /** One message per error name, the first seen (for diagnosis). */
  errorSamples: Record<string, string>;
}


/** The name a failure is counted under. */
export function errorName(err: unknown): string {
  if (err instanceof RpcError) return statusName(err.code);
  if (err !== null && typeof err === 'object') {
    const ctor = (err as { constructor?: { name?: unknown } }).constructor?.name;
    if (typeof ctor === 'string' && ctor !== '' && ctor !== 'Error') return ctor;
    const name = (err as { name?: unknown }).name;
    if (typeof name === 'string' && name !== '') return name;
  }
  return 'Error';
}

class Tracker {
  readonly histogram = newHistogram();
  readonly errors = new Map<string, number>();
  calls = 0;
  ok = 0;
  sumUs = 0;
  maxUs = 0;
  /** Operations that took longer than 1 s. */
  slow = 0;
  /** Time of the last success (ms after start) and the longest gap so far (within the window). */
  lastOk = 0;
  gap: Gap = { ms: 0, fromMs: 0, toMs: 0 };

  constructor(private readonly windowMs: number) {}

  record(us: number, atMs: number, error: string | undefined): void {
    this.calls++;
    this.histogram.recordValue(us);
    this.sumUs += us;
    if (us > this.maxUs) this.maxUs = us;
    if (us > 1_000_000) this.slow++;
    if (error !== undefined) {
      this.errors.set(error, (this.errors.get(error) ?? 0) + 1);
    } else {
      this.ok++;
      // Gaps are measured inside the run's window only: after it, the loop drains and fewer
      // operations are in flight.
      if (atMs <= this.windowMs) {
        this.closeGap(atMs);
        this.lastOk = atMs;
      }
    }
  }

  closeGap(atMs: number): void {
    if (atMs - this.lastOk > this.gap.ms) this.gap = { ms: atMs - this.lastOk, fromMs: this.lastOk, toMs: atMs };
  }

  stats(): OpStats {
    const ms = (us: number) => Math.round(us) / 1000;
    const at = (p: number) => (this.calls === 0 ? 0 : ms(Math.min(this.histogram.getValueAtPercentile(p), this.maxUs)));
    const errors: Record<string, number> = {};
    for (const [k, v] of [...this.errors].sort((a, b) => b[1] - a[1])) errors[k] = v;
    return {
      calls: this.calls,
      ok: this.ok,
      slowerThan1s: this.slow,
      failed: this.calls - this.ok,
      errors,
      latencyMs: {
        mean: this.calls === 0 ? 0 : ms(this.sumUs / this.calls),
        p50: at(50),
        p90: at(90),
        p99: at(99),
        p999: at(99.9),
        max: ms(this.maxUs),
      },
    };
  }
}

/** Key `i` of the key set: `k00000` .. `k09999`. */
export function keyName(i: number): string {
  return 'k' + String(i).padStart(5, '0');
}

/**
 * Source of 120-byte (or `size`) values: views into a pool of random bytes at a rolling offset,
 * so a value costs no allocation and no random-number generation per operation.
 */
export function valueSource(size: number): () => Uint8Array {
  const pool = randomBytes(1 << 20);
  let offset = 0;
  return () => {
    if (offset + size > pool.length) offset = 0;
    const v = pool.subarray(offset, offset + size);
    offset += 97; // not a multiple of the size: consecutive values differ everywhere
    return v;
  };
}

/**
 * Writes every key once (not timed as part of any run), spread over the targets, `concurrency` in
 * flight. Each failed put is retried up to 5 times.
 * @returns the time it took (ms) and the puts that failed for good.
 */
export async function preload(targets: readonly KvTarget[], concurrency: number, shape: WorkloadShape = PAXOSSTORE_STRESS): Promise<{ ms: number; failed: number }> {
  const value = valueSource(shape.valueBytes);
  let next = 0;
  let failed = 0;
  const t0 = performance.now();
  const worker = async (w: number): Promise<void> => {
    const target = targets[w % targets.length]!;
    for (let i = next++; i < shape.keys; i = next++) {
      for (let attempt = 0; ; attempt++) {
        try {
          await target.put(keyName(i), value());
          break;
        } catch (err) {
          if (attempt >= 5) {
            failed++;
            process.stderr.write(`preload: put ${keyName(i)} failed: ${(err as Error).message}\n`);
            break;
          }
        }
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, (_, w) => worker(w)));
  return { ms: performance.now() - t0, failed };
}

/** Runs the workload; see the module comment. */
export async function runWorkload(options: WorkloadOptions): Promise<WorkloadResult> {
  const shape = options.shape ?? PAXOSSTORE_STRESS;
  const bucketMs = options.bucketMs ?? 100;
  const writeFraction = 1 / (1 + shape.readsPerWrite);
  const keys = Array.from({ length: shape.keys }, (_, i) => keyName(i));
  const value = valueSource(shape.valueBytes);
  const reads = new Tracker(options.durationMs);
  const writes = new Tracker(options.durationMs);
  const nBuckets = Math.ceil(options.durationMs / bucketMs);
  const timeline: Bucket[] = Array.from({ length: nBuckets }, () => ({ readOk: 0, readFailed: 0, writeOk: 0, writeFailed: 0 }));
  const samples: Record<string, string> = {};

  const start = performance.now();
  const end = start + options.durationMs;
  const timers = (options.events ?? []).map((e) =>
    setTimeout(() => {
      try {
        Promise.resolve(e.run()).catch((err: unknown) => process.stderr.write(`event at ${e.atMs} ms failed: ${String(err)}\n`));
      } catch (err) {
        process.stderr.write(`event at ${e.atMs} ms failed: ${String(err)}\n`);
      }
    }, Math.max(0, e.atMs - (performance.now() - start))),
  );

  const worker = async (w: number): Promise<void> => {
    const target = options.targets[w % options.targets.length]!;
    let now = performance.now();
    while (now < end) {
      const key = keys[Math.floor(Math.random() * keys.length)]!;
      const isWrite = Math.random() < writeFraction;
      const t0 = now;
      let error: string | undefined;
      try {
        if (isWrite) await target.put(key, value());
        else await target.get(key);
      } catch (err) {
        error = errorName(err);
        if (!(error in samples)) samples[error] = (err as Error)?.message ?? String(err);
      }
      now = performance.now();
      const us = Math.round((now - t0) * 1000);
      const atMs = now - start;
      (isWrite ? writes : reads).record(us, atMs, error);
      const b = timeline[Math.floor(atMs / bucketMs)];
      if (b !== undefined) {
        if (isWrite) error === undefined ? b.writeOk++ : b.writeFailed++;
        else error === undefined ? b.readOk++ : b.readFailed++;
      }
    }
  };

  try {
    await Promise.all(Array.from({ length: options.concurrency }, (_, w) => worker(w)));
  } finally {
    for (const t of timers) clearTimeout(t);
  }
  const durationMs = performance.now() - start;
  // A gap still open when the run's window ends counts up to the window's end.
  reads.closeGap(options.durationMs);
  writes.closeGap(options.durationMs);
  return {
    concurrency: options.concurrency,
    durationMs,
    okPerSecond: ((reads.ok + writes.ok) * 1000) / durationMs,
    reads: reads.stats(),
    writes: writes.stats(),
    timeline,
    bucketMs,
    longestWriteGap: writes.gap,
    longestReadGap: reads.gap,
    errorSamples: samples,
  };
}
