/**
 * A synthetic server for replaying load against the pure FastReject controller, millisecond by
 * millisecond, with no sockets and no clocks: the `AdmissionController` and `CallQueue` as the
 * server uses them (overload/admission.ts, overload/call-queue.ts, server/scheduler.ts), a CPU
 * that serves `capacity` calls per second, and clients that shed above the advertised level.
 *
 * - Arrivals: `load x capacity` calls per second in each phase, at an even pace (as bench/overload's
 *   open loop), each with a business priority drawn from `classes` and a user priority 0..127.
 * - Clients shed locally what is above the level the server advertises (collaborative shedding);
 *   the rest reach the server, which counts them, refuses those above its level (each refusal
 *   costs `refusalCostMs` of CPU) and queues the others.
 * - The CPU serves the queue most important business priority first, one call per
 *   `1000 / capacity` ms; a call whose deadline passed is dropped unserved, and so is one that
 *   waited longer than the controller's `maxWaitMs` (the server refuses it). Each start reports
 *   its wait and the queue's length.
 * - Windows close as the server closes them, with the CPU's utilization over the window; when
 *   the level drops, the waiting calls above it are refused.
 *
 * Everything is recorded per 250 ms bucket, by completion time, for the assertions.
 */
import { ADMIT_ALL, AdmissionController, priorityLevel, type AdmissionOptions, type WindowReport } from '../../framework/overload/admission.js';
import { CallQueue } from '../../framework/overload/call-queue.js';
import { mulberry32 } from './prng.js';

/** A stretch of constant offered load. */
export interface Phase {
  /** Length (ms). */
  readonly ms: number;
  /** Offered load as a multiple of capacity. */
  readonly load: number;
}

/** The four classes of bench/overload: business priority and share of calls. */
export const BENCH_CLASSES = [
  { priority: 1, share: 0.1 },
  { priority: 32, share: 0.2 },
  { priority: 64, share: 0.3 },
  { priority: 96, share: 0.4 },
] as const;

/** One 250 ms bucket of the run. */
export interface Bucket {
  /** Start (ms since the run began). */
  readonly t: number;
  /** Offered load of the phase the bucket starts in. */
  readonly load: number;
  /** Calls offered (by arrival time). */
  offered: number;
  /** Calls that succeeded within their deadline (by completion time). */
  ok: number;
  /** Successful calls' latencies (ms). */
  latencies: number[];
  /** Refused by the server (priority), shed by clients, expired in the queue. */
  refused: number;
  shed: number;
  expired: number;
  /** The top class: offered (by arrival) and succeeded (by arrival, of those offered in this bucket). */
  topOffered: number;
  topOk: number;
  /** The admission level at the bucket's end. */
  level: number;
}

/** The outcome of a run. */
export interface ModelRun {
  readonly buckets: Bucket[];
  readonly windows: WindowReport[];
  readonly controller: AdmissionController;
}

interface Waiting {
  readonly arrived: number;
  readonly bucket: Bucket;
  readonly top: boolean;
  readonly level: number;
}

/**
 * Runs the model.
 * @param opts.phases - the load, phase after phase.
 * @param opts.capacity - calls per second the CPU serves (default 1000).
 * @param opts.deadlineMs - each call's deadline (default 500).
 * @param opts.refusalCostMs - CPU per refusal (ms, default 0.02).
 * @param opts.classes - business priorities and shares (default bench/overload's).
 * @param opts.seed - PRNG seed of the call mix.
 * @param opts.options - admission settings (default: svrkit's).
 * @param opts.clientShedding - clients shed above the advertised level (default true).
 */
export function runModel(opts: {
  phases: readonly Phase[];
  capacity?: number;
  deadlineMs?: number;
  refusalCostMs?: number;
  classes?: ReadonlyArray<{ priority: number; share: number }>;
  seed?: number;
  options?: AdmissionOptions;
  clientShedding?: boolean;
}): ModelRun {
  const capacity = opts.capacity ?? 1000;
  const serviceMs = 1000 / capacity;
  const deadlineMs = opts.deadlineMs ?? 500;
  const refusalCostMs = opts.refusalCostMs ?? 0.02;
  const classes = opts.classes ?? BENCH_CLASSES;
  const shedding = opts.clientShedding ?? true;
  const rand = mulberry32(opts.seed ?? 1);
  const c = new AdmissionController(0, opts.options);
  const queue = new CallQueue<Waiting>();
  const buckets: Bucket[] = [];
  const windows: WindowReport[] = [];
  const totalMs = opts.phases.reduce((a, p) => a + p.ms, 0);
  let phaseIndex = 0;
  let phaseEnd = opts.phases[0]!.ms;
  for (let t = 0; t < totalMs; t += 250) {
    while (t >= phaseEnd) phaseEnd += opts.phases[++phaseIndex]!.ms;
    buckets.push({ t, load: opts.phases[phaseIndex]!.load, offered: 0, ok: 0, latencies: [], refused: 0, shed: 0, expired: 0, topOffered: 0, topOk: 0, level: ADMIT_ALL });
  }
  let advertised: number | undefined;
  let cpuFreeAt = 0; // the CPU is busy until this time (ms)
  let busyInWindow = 0;
  let windowStart = 0;
  let offeredSoFar = 0;
  let expectedSoFar = 0;
  let phaseStart = 0;
  phaseIndex = 0;
  const completions: Array<{ at: number; w: Waiting }> = [];

  const closeWindow = (now: number): void => {
    const span = now - windowStart;
    const report = c.closeWindow(now, {
      utilization: span > 0 ? Math.min(1, busyInWindow / span) : 0,
      queued: queue.size,
      queuedByLevel: queue.byLevel,
      oldestQueuedMs: queue.size > 0 ? now - queue.oldestSince()! : 0,
    });
    windows.push(report);
    busyInWindow = 0;
    windowStart = now;
    if (report.levelAfter < report.levelBefore) {
      for (const w of queue.removeAbove(report.levelAfter)) w.bucket.refused++;
    }
    advertised = c.level === ADMIT_ALL ? undefined : c.level;
  };

  for (let now = 0; now < totalMs; now++) {
    if (now - phaseStart >= opts.phases[phaseIndex]!.ms) {
      phaseStart = now;
      phaseIndex++;
    }
    const bucket = buckets[Math.floor(now / 250)]!;
    // Completions due by now.
    while (completions.length > 0 && completions[0]!.at <= now) {
      const { at, w } = completions.shift()!;
      const b = buckets[Math.min(buckets.length - 1, Math.floor(at / 250))]!;
      if (at - w.arrived <= deadlineMs) {
        b.ok++;
        b.latencies.push(at - w.arrived);
        if (w.top) w.bucket.topOk++;
      }
    }
    // Arrivals in this millisecond.
    expectedSoFar += (opts.phases[phaseIndex]!.load * capacity) / 1000;
    const n = Math.floor(expectedSoFar) - offeredSoFar;
    offeredSoFar += n;
    for (let i = 0; i < n; i++) {
      const r = rand();
      let k = 0;
      for (let acc = classes[0]!.share; k < classes.length - 1 && r >= acc; acc += classes[++k]!.share);
      const level = priorityLevel(classes[k]!.priority, Math.floor(rand() * 128));
      const top = k === 0;
      bucket.offered++;
      if (top) bucket.topOffered++;
      if (shedding && advertised !== undefined && level > advertised) {
        bucket.shed++;
        continue;
      }
      if (c.windowDue(now)) closeWindow(now);
      if (!c.arrive(level)) {
        bucket.refused++;
        cpuFreeAt = Math.max(cpuFreeAt, now) + refusalCostMs;
        busyInWindow += refusalCostMs;
        continue;
      }
      queue.push({ arrived: now, bucket, top, level }, level, now, now + deadlineMs);
    }
    // The CPU serves the queue for the rest of this millisecond.
    while (cpuFreeAt < now + 1 && queue.size > 0) {
      const start = Math.max(cpuFreeAt, now);
      const limit = c.maxWaitMs(deadlineMs);
      for (const w of queue.removeOldestWhile((_, since, deadline) => deadline <= start || start - since > limit)) {
        if (w.arrived + deadlineMs <= start) {
          w.bucket.expired++;
          c.expired(start - w.arrived, queue.size, w.level, queue.ahead(w.level));
        } else {
          w.bucket.refused++;
          c.dropped(start - w.arrived, queue.size, w.level, queue.ahead(w.level));
        }
      }
      const w = queue.shift();
      if (w === undefined) break;
      c.started(start - w.arrived, queue.size, deadlineMs, w.level, queue.ahead(w.level));
      cpuFreeAt = start + serviceMs;
      busyInWindow += serviceMs;
      completions.push({ at: cpuFreeAt, w });
    }
    if (c.windowDue(now + 1)) closeWindow(now + 1);
    bucket.level = c.level;
  }
  return { buckets, windows, controller: c };
}

/**
 * The p-th percentile of `xs` (nearest rank).
 * @returns NaN for an empty list.
 */
export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}
