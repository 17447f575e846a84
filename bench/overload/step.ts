/**
 * The step scenarios of `run.ts --step`: their phases, the arrival schedule of a rate that changes
 * by phase, the 250 ms buckets a step run is counted in, and the summary of a run against the
 * targets of issue 12 (time to 90% of capacity, goodput after convergence, top-priority success,
 * p99, recovery, no rejections at 0.5x). Pure functions of the counts: no I/O, no clock.
 */

/** One phase of a step scenario: a constant offered load for a while. */
export interface Phase {
  /** `pre` (before the first step), `spike`, `gap` (0.5x between two spikes), `post` (after the last). */
  kind: 'pre' | 'spike' | 'gap' | 'post';
  /** Offered load as a multiple of capacity. */
  factor: number;
  /** Offered calls/s (factor x capacity). */
  rate: number;
  /** Start and end, ms since the run started. */
  startMs: number;
  endMs: number;
}

/** A step scenario before it has a capacity: name and phases as (kind, factor, duration). */
export interface Scenario {
  name: string;
  phases: Array<{ kind: Phase['kind']; factor: number; durationMs: number }>;
}

/** Phase lengths: what `--pre`, `--spike` and `--post` gave, or undefined for the scenario's default. */
export interface PhaseLengths {
  preMs?: number;
  spikeMs?: number;
  postMs?: number;
}

/** The 0.5x load before, between and after the spikes. */
export const BASE_FACTOR = 0.5;

/**
 * The scenario called `name`: `<n>x` (e.g. `4x`, `10x`) is 0.5x for 5 s, n x for 15 s, 0.5x for
 * 10 s; `onoff` is 0.5x 5 s, 10x 20 s, 0.5x 10 s, 10x 20 s, 0.5x 10 s. `lengths` overrides the
 * defaults (the spike length applies to every spike, the post length to the gap too).
 * @throws Error for an unknown name.
 */
export function scenario(name: string, lengths: PhaseLengths = {}): Scenario {
  const pre = lengths.preMs ?? 5000;
  const post = lengths.postMs ?? 10_000;
  if (name === 'onoff') {
    const spike = lengths.spikeMs ?? 20_000;
    return {
      name,
      phases: [
        { kind: 'pre', factor: BASE_FACTOR, durationMs: pre },
        { kind: 'spike', factor: 10, durationMs: spike },
        { kind: 'gap', factor: BASE_FACTOR, durationMs: post },
        { kind: 'spike', factor: 10, durationMs: spike },
        { kind: 'post', factor: BASE_FACTOR, durationMs: post },
      ],
    };
  }
  const m = /^(\d+(?:\.\d+)?)x$/.exec(name);
  const factor = m === null ? NaN : Number(m[1]);
  if (!(factor > 0)) throw new Error(`unknown scenario '${name}' (expected <n>x, e.g. 4x or 10x, or onoff)`);
  return {
    name,
    phases: [
      { kind: 'pre', factor: BASE_FACTOR, durationMs: pre },
      { kind: 'spike', factor, durationMs: lengths.spikeMs ?? 15_000 },
      { kind: 'post', factor: BASE_FACTOR, durationMs: post },
    ],
  };
}

/** The phases of `s` at `capacity` calls/s, laid end to end from 0. */
export function phasesAt(s: Scenario, capacity: number): Phase[] {
  let t = 0;
  return s.phases.map((p) => {
    const phase: Phase = { kind: p.kind, factor: p.factor, rate: p.factor * capacity, startMs: t, endMs: t + p.durationMs };
    t += p.durationMs;
    return phase;
  });
}

/**
 * When the calls of an open loop are due, for a rate that is constant within each of a run of
 * phases: call k (0-based) is scheduled at the time the cumulative offered count reaches k.
 */
export class RateSchedule {
  /** Cumulative calls offered at each phase's start, and at the end (last entry). */
  private readonly cumulative: number[];
  /** Calls in the whole schedule. */
  readonly total: number;
  /** End of the schedule (ms). */
  readonly endMs: number;

  constructor(private readonly phases: ReadonlyArray<{ rate: number; startMs: number; endMs: number }>) {
    this.cumulative = [0];
    for (const p of phases) this.cumulative.push(this.cumulative.at(-1)! + (p.rate * (p.endMs - p.startMs)) / 1000);
    this.total = Math.floor(this.cumulative.at(-1)! + 1e-9);
    this.endMs = phases.at(-1)?.endMs ?? 0;
  }

  /** A single phase of `rate` calls/s from 0 to `endMs`. */
  static constant(rate: number, endMs: number): RateSchedule {
    return new RateSchedule([{ rate, startMs: 0, endMs }]);
  }

  /** Calls due by `ms` (ms since the start): floor of the cumulative offered count, at most `total`. */
  due(ms: number): number {
    if (ms >= this.endMs) return this.total;
    for (let i = 0; i < this.phases.length; i++) {
      const p = this.phases[i]!;
      if (ms < p.endMs) return Math.min(this.total, Math.floor(this.cumulative[i]! + (p.rate * Math.max(0, ms - p.startMs)) / 1000 + 1e-9));
    }
    return this.total;
  }

  /** Scheduled time (ms) of call `k`, 0 <= k < total. */
  timeOf(k: number): number {
    for (let i = 0; i < this.phases.length; i++) {
      const p = this.phases[i]!;
      if (k < this.cumulative[i + 1]! - 1e-9 && p.rate > 0) return p.startMs + ((k - this.cumulative[i]!) * 1000) / p.rate;
    }
    return this.endMs;
  }
}

/**
 * One bucket of a step run. Offered and top-class counts go by *scheduled* start; outcomes, the
 * goodput and latencies by *completion* time.
 */
export interface Bucket {
  /** Start, ms since the run started. */
  tMs: number;
  /** Calls scheduled in the bucket. */
  offered: number;
  /** Top-priority calls scheduled in the bucket, and how many of them succeeded within the deadline. */
  topOffered: number;
  topOk: number;
  /** Calls scheduled in the bucket that ended RESOURCE_EXHAUSTED (any kind) / DEADLINE_EXCEEDED. */
  rejectedBySched: number;
  deadlineBySched: number;
  /** Calls that completed in the bucket: succeeded within the deadline (goodput). */
  ok: number;
  /** ... succeeded after the deadline (should not happen: the client fails them at the deadline). */
  okLate: number;
  /** ... refused by the server (`overloaded: ...`). */
  serverRejected: number;
  /** ... not sent: shed locally by the advertised level. */
  shedLocally: number;
  /** ... not sent: the adaptive throttle. */
  throttledLocally: number;
  /** ... any other RESOURCE_EXHAUSTED. */
  otherExhausted: number;
  deadlineExceeded: number;
  /** ... any other failure. */
  otherErrors: number;
  /** Latencies (ms) of the calls that succeeded within the deadline and completed in the bucket. */
  latenciesMs: number[];
  /** The server's admission level at the bucket's end, when known, and where it came from. */
  level?: number;
  levelFrom?: 'window' | 'scrape';
}

/** An empty bucket starting at `tMs`. */
export function newBucket(tMs: number): Bucket {
  return {
    tMs, offered: 0, topOffered: 0, topOk: 0, rejectedBySched: 0, deadlineBySched: 0, ok: 0, okLate: 0, serverRejected: 0, shedLocally: 0,
    throttledLocally: 0, otherExhausted: 0, deadlineExceeded: 0, otherErrors: 0, latenciesMs: [],
  };
}

/** The `p`-th percentile (0..100) of `xs` (nearest rank), NaN when empty. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/** The targets of issue 12, as the summary checks them. */
export const TARGETS = {
  /** Goodput reaches 90% of capacity within this long after the step (ms)... */
  convergeMs: 2000,
  /** ... and every bucket from then to the end of the spike stays at or above this % of capacity. */
  goodputPct: 90,
  /** Top-priority success over the whole run (%). */
  topPct: 99,
  /** p99 of the successful calls after convergence (ms, strictly below). */
  p99Ms: 100,
  /** After the drop back to 0.5x: no refusal, shed or throttle after this long (ms). */
  recoveryMs: 5000,
  /** A recovery bucket (after its first) in which less than this % of the calls sent (not shed locally) succeed is a "second collapse". */
  collapsePct: 90,
  /** Top-priority success is also shown for this long after each step (ms). */
  firstWindowMs: 2000,
} as const;

/** The summary of one spike of a step run (one row of the summary table). */
export interface SpikeSummary {
  /** 1-based index of the spike in the scenario. */
  spike: number;
  factor: number;
  /** ms from the step to the start of the first bucket from which every bucket to the spike's end has goodput >= 90% of capacity; null if never. */
  timeTo90Ms: number | null;
  /** Goodput from that bucket to the spike's end, % of capacity: mean and minimum bucket; NaN if it never converged. */
  afterMeanPct: number;
  afterMinPct: number;
  /** p99 (ms) of the calls that succeeded and completed from that bucket to the spike's end; NaN if none. */
  p99AfterMs: number;
  /** Top-priority success in the first 2 s after the step, % (by scheduled start); NaN if no such calls. */
  topFirstPct: number;
  /** After the drop to 0.5x that ends the spike: ms from the drop to the end of the last bucket with any refusal, shed or throttle (0 if none). */
  recoveryMs: number;
  /** Lowest share of the calls sent (not shed or throttled locally) that succeeded, over the buckets of the 0.5x phase after the spike, %. */
  recoveryMinOkPct: number;
  /** Whether a bucket of that phase, after its first, had less than 90% of its sent calls succeed. */
  secondCollapse: boolean;
}

/** The summary of one step run. */
export interface StepSummary {
  spikes: SpikeSummary[];
  /** Top-priority success over the whole run, % (by scheduled start, every phase). */
  topWholeRunPct: number;
  /** Calls scheduled in the first (pre-step) 0.5x phase that ended RESOURCE_EXHAUSTED, and DEADLINE_EXCEEDED. */
  preRejected: number;
  preDeadline: number;
  /** PASS/FAIL per spike and target. */
  targets: Array<{ spike: number; timeTo90: boolean; minAfter: boolean; top: boolean; p99: boolean; recovery: boolean; preRejects: boolean }>;
}

/**
 * Summarises a step run.
 * @param buckets - the run's buckets, bucket i covering [i * bucketMs, (i + 1) * bucketMs).
 * @param phases - the scenario's phases; their boundaries must be multiples of `bucketMs`.
 * @param capacity - calls/s that 100% stands for.
 */
export function summarizeStep(buckets: readonly Bucket[], phases: readonly Phase[], capacity: number, bucketMs: number): StepSummary {
  const at = (i: number): Bucket => buckets[i] ?? newBucket(i * bucketMs);
  const perSecond = 1000 / bucketMs;
  const goodPct = (i: number): number => (100 * at(i).ok * perSecond) / capacity;
  const idx = (ms: number): number => Math.round(ms / bucketMs);
  const sumOver = (from: number, to: number, f: (b: Bucket) => number): number => {
    let s = 0;
    for (let i = from; i < to; i++) s += f(at(i));
    return s;
  };
  const pct = (n: number, d: number): number => (d > 0 ? (100 * n) / d : NaN);

  const spikes: SpikeSummary[] = [];
  phases.forEach((p, pi) => {
    if (p.kind !== 'spike') return;
    const s = idx(p.startMs);
    const e = idx(p.endMs);
    let conv: number | null = null;
    for (let i = e - 1; i >= s && goodPct(i) >= TARGETS.goodputPct; i--) conv = i;
    let afterMeanPct = NaN;
    let afterMinPct = NaN;
    let p99AfterMs = NaN;
    if (conv !== null) {
      const after: number[] = [];
      const lat: number[] = [];
      for (let i = conv; i < e; i++) {
        after.push(goodPct(i));
        lat.push(...at(i).latenciesMs);
      }
      afterMeanPct = after.reduce((a, b) => a + b, 0) / after.length;
      afterMinPct = Math.min(...after);
      p99AfterMs = percentile(lat, 99);
    }
    const firstEnd = Math.min(e, s + idx(TARGETS.firstWindowMs));
    const topFirstPct = pct(sumOver(s, firstEnd, (b) => b.topOk), sumOver(s, firstEnd, (b) => b.topOffered));
    // The 0.5x phase after the spike.
    const next = phases[pi + 1];
    let recoveryMs = 0;
    let recoveryMinOkPct = NaN;
    let secondCollapse = false;
    if (next !== undefined) {
      const rs = idx(next.startMs);
      const re = idx(next.endMs);
      for (let i = rs; i < re; i++) {
        const b = at(i);
        if (b.serverRejected + b.shedLocally + b.throttledLocally + b.otherExhausted > 0) recoveryMs = (i + 1) * bucketMs - next.startMs;
        // The calls the clients sent (not shed or throttled locally) must succeed: a collapse is a
        // bucket where they do not (deadlines, server refusals), after the first one, which still
        // ends calls from the spike.
        const sent = b.ok + b.serverRejected + b.otherExhausted + b.deadlineExceeded + b.otherErrors;
        if (sent > 0) {
          const okPct = (100 * b.ok) / sent;
          if (!(okPct >= recoveryMinOkPct)) recoveryMinOkPct = okPct;
          if (i > rs && okPct < TARGETS.collapsePct) secondCollapse = true;
        }
      }
    }
    spikes.push({
      spike: spikes.length + 1,
      factor: p.factor,
      timeTo90Ms: conv === null ? null : (conv - s) * bucketMs,
      afterMeanPct,
      afterMinPct,
      p99AfterMs,
      topFirstPct,
      recoveryMs,
      recoveryMinOkPct,
      secondCollapse,
    });
  });

  const topWholeRunPct = pct(sumOver(0, buckets.length, (b) => b.topOk), sumOver(0, buckets.length, (b) => b.topOffered));
  const pre = phases.find((p) => p.kind === 'pre');
  const preRejected = pre === undefined ? 0 : sumOver(idx(pre.startMs), idx(pre.endMs), (b) => b.rejectedBySched);
  const preDeadline = pre === undefined ? 0 : sumOver(idx(pre.startMs), idx(pre.endMs), (b) => b.deadlineBySched);
  const targets = spikes.map((x) => ({
    spike: x.spike,
    timeTo90: x.timeTo90Ms !== null && x.timeTo90Ms <= TARGETS.convergeMs,
    minAfter: x.afterMinPct >= TARGETS.goodputPct,
    top: topWholeRunPct >= TARGETS.topPct,
    p99: x.p99AfterMs < TARGETS.p99Ms,
    recovery: x.recoveryMs <= TARGETS.recoveryMs && !x.secondCollapse,
    preRejects: preRejected === 0,
  }));
  return { spikes, topWholeRunPct, preRejected, preDeadline, targets };
}
