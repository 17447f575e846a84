/**
 * FastReject admission control, after WeChat's DAGOR (Zhou et al., "Overload Control for Scaling
 * WeChat Microservices", SoCC 2018) and phxrpc's FastReject (hsha_server.cpp). Pure code: time
 * comes in as arguments, so it is unit-tested with synthetic load.
 *
 * - **Priority levels** (the rules live in priority.ts). A call's level is `business * 128 + user`: business priority 0..127 (from
 *   the method's `(svrkit.method).priority`, or the caller's, inherited down the call chain) and
 *   user priority 0..127 (a hash of the user id with an hourly salt). Lower is more important;
 *   level 0 is the most important of all, 16383 the least.
 * - **The signal** is queueing time: handler start minus frame arrival, averaged over a window
 *   that closes after `windowMs` (1 s) or `windowRequests` (2000) admitted calls, whichever comes
 *   first. The window is overloaded when the average exceeds `queueThresholdMs` (20 ms), or the
 *   event-loop delay (a backstop the caller measures) exceeds `eventLoopDelayThresholdMs`.
 * - **The cut-off.** Every arriving call is counted in a histogram by level. At the end of each
 *   window the admission level moves so that the calls the histogram says would be admitted are
 *   `(1 - alpha) * N` when overloaded and `(1 + beta) * N` otherwise, N being the calls admitted in
 *   that window (DAGOR's rule; alpha 0.05, beta 0.01: it backs off fast and recovers slowly).
 *   One refinement of svrkit's: callers shed what is above an advertised level themselves, so the
 *   histogram sees only part of the demand above it. A healthy window therefore raises the level
 *   at most by as many levels as held `beta * N` calls at the current edge (at most 128 levels,
 *   at least 1), instead of reading "no visible demand" as "admit everything", which would let
 *   the whole load back in at once.
 * - **Business priority 0** is never shed by the level: the level never drops below the last
 *   level of business priority 0 (only the in-flight backstop can refuse it).
 * - **An idle window** (no call arrived) raises the level by one business priority (128 levels).
 */
import { DEFAULT_BUSINESS_PRIORITY, PRIORITY_LEVELS, priorityLevel, userPriority } from './priority.js';
import { configErrors } from '../errors.js';

/** Business priorities: 0 (most important) .. 127. */
export const BUSINESS_LEVELS = PRIORITY_LEVELS;
/** User priorities per business priority: 0 .. 127. */
export const USER_LEVELS = PRIORITY_LEVELS;
/** Number of priority levels; the admission level `LEVELS - 1` admits everything. */
export const LEVELS = BUSINESS_LEVELS * USER_LEVELS;
/** The admission level that admits every call. */
export const ADMIT_ALL = LEVELS - 1;
export { DEFAULT_BUSINESS_PRIORITY, priorityLevel, userPriority };

/** Settings of the admission controller. Every value has the default shown. */
export interface AdmissionOptions {
  /** Average queueing time above which a window is overloaded (ms). Default 20. */
  queueThresholdMs?: number;
  /** A window closes after this long (ms). Default 1000. */
  windowMs?: number;
  /** ... or after this many admitted calls. Default 2000. */
  windowRequests?: number;
  /** Share of admitted calls to shed per overloaded window. Default 0.05. */
  alpha?: number;
  /** Share of admitted calls to add back per healthy window. Default 0.01. */
  beta?: number;
  /** Event-loop delay (mean over the window, ms) that also counts as overload (backstop). Default 100. */
  eventLoopDelayThresholdMs?: number;
}

/** The defaults, filled in. */
export const DEFAULT_ADMISSION: Readonly<Required<AdmissionOptions>> = Object.freeze({
  queueThresholdMs: 20,
  windowMs: 1000,
  windowRequests: 2000,
  alpha: 0.05,
  beta: 0.01,
  eventLoopDelayThresholdMs: 100,
});

/** What one closed window looked like (for logs, dry-run reports and tests). */
export interface WindowReport {
  /** When the window closed (epoch ms). */
  readonly at: number;
  /** Calls that arrived, admitted or not. */
  readonly arrived: number;
  /** Calls admitted. */
  readonly admitted: number;
  /** Mean queueing time of the admitted calls (ms). */
  readonly meanQueueMs: number;
  /** The event-loop delay the caller reported (ms). */
  readonly eventLoopDelayMs: number;
  /** Whether the window counted as overloaded. */
  readonly overloaded: boolean;
  /** The admission level before and after the window. */
  readonly levelBefore: number;
  readonly levelAfter: number;
}

/** The admission controller; see the module comment. */
export class AdmissionController {
  /** The highest level admitted now (`ADMIT_ALL` admits everything). */
  level = ADMIT_ALL;
  private readonly options: Readonly<Required<AdmissionOptions>>;
  private readonly histogram = new Uint32Array(LEVELS);
  private windowStart: number;
  private arrived = 0;
  private admitted = 0;
  private queueSum = 0;
  private queueCount = 0;
  /** The last level of business priority 0: the level never goes below it. */
  private static readonly FLOOR = USER_LEVELS - 1;

  /**
   * Levels to add so that about `calls` more calls are admitted, judging by how many calls each
   * of the last `USER_LEVELS` levels up to `level` held in this window: 1 .. USER_LEVELS.
   */
  private edgeStep(level: number, calls: number): number {
    let n = 0;
    for (let l = Math.max(0, level - USER_LEVELS + 1); l <= level; l++) n += this.histogram[l]!;
    const perLevel = n / USER_LEVELS;
    if (perLevel <= 0) return USER_LEVELS;
    return Math.min(USER_LEVELS, Math.max(1, Math.ceil(calls / perLevel)));
  }

  /**
   * @param nowMs - epoch ms when the first window starts.
   * @param options - thresholds; see `AdmissionOptions`.
   * @throws ConfigError INVALID_OPTION when a value is out of range (thresholds and windows must be > 0, alpha in (0, 1), beta > 0).
   */
  constructor(nowMs: number, options: AdmissionOptions = {}) {
    const o = { ...DEFAULT_ADMISSION };
    for (const [k, v] of Object.entries(options)) if (v !== undefined) (o as Record<string, number>)[k] = v as number;
    if (!(o.queueThresholdMs > 0)) throw configErrors.INVALID_OPTION('queueThresholdMs', '> 0 ms', o.queueThresholdMs);
    if (!(o.windowMs > 0)) throw configErrors.INVALID_OPTION('windowMs', '> 0 ms', o.windowMs);
    if (!(o.windowRequests >= 1)) throw configErrors.INVALID_OPTION('windowRequests', '>= 1', o.windowRequests);
    if (!(o.alpha > 0 && o.alpha < 1)) throw configErrors.INVALID_OPTION('alpha', 'in (0, 1)', o.alpha);
    if (!(o.beta > 0)) throw configErrors.INVALID_OPTION('beta', '> 0', o.beta);
    if (!(o.eventLoopDelayThresholdMs > 0)) throw configErrors.INVALID_OPTION('eventLoopDelayThresholdMs', '> 0 ms', o.eventLoopDelayThresholdMs);
    this.options = Object.freeze(o);
    this.windowStart = nowMs;
  }

  /**
   * Counts an arriving call and says whether to admit it. A call is admitted when its level is at
   * or below the admission level.
   * @param level - the call's priority level (`priorityLevel`).
   * @returns true to admit.
   */
  arrive(level: number): boolean {
    this.histogram[level]!++;
    this.arrived++;
    if (level > this.level) return false;
    this.admitted++;
    return true;
  }

  /**
   * Records the queueing time of an admitted call as its handler starts.
   * @param queueMs - handler start minus frame arrival (ms).
   */
  queued(queueMs: number): void {
    this.queueSum += queueMs;
    this.queueCount++;
  }

  /**
   * True when the window is due to close: `windowMs` passed, or `windowRequests` calls were admitted.
   * @param nowMs - epoch ms.
   */
  windowDue(nowMs: number): boolean {
    return nowMs - this.windowStart >= this.options.windowMs || this.admitted >= this.options.windowRequests;
  }

  /**
   * Closes the current window: decides overload, moves the admission level, starts a new window.
   * @param nowMs - epoch ms.
   * @param eventLoopDelayMs - mean event-loop delay over the window (ms), measured by the caller; 0 if unknown.
   * @returns what the window looked like.
   */
  closeWindow(nowMs: number, eventLoopDelayMs = 0): WindowReport {
    const o = this.options;
    const meanQueueMs = this.queueCount > 0 ? this.queueSum / this.queueCount : 0;
    const overloaded = meanQueueMs > o.queueThresholdMs || eventLoopDelayMs > o.eventLoopDelayThresholdMs;
    const before = this.level;
    if (this.arrived > 0) {
      if (overloaded) {
        this.level = this.levelFor((1 - o.alpha) * this.admitted);
      } else if (!overloaded && this.level !== ADMIT_ALL) {
        // Admit (1 + beta) N. While a level is advertised, callers shed what is above it
        // themselves, so the histogram sees only part of the demand above the level: it cannot be
        // trusted to say that everything fits. Raise at most by as many levels as held beta * N
        // calls at the current edge (at most one business priority's worth), at least by one.
        const byHistogram = this.levelFor((1 + o.beta) * this.admitted);
        const byEdge = before + this.edgeStep(before, o.beta * this.admitted);
        this.level = Math.min(ADMIT_ALL, Math.max(before + 1, Math.min(byHistogram, byEdge)));
      }
    } else if (!overloaded && this.level !== ADMIT_ALL) {
      // No call at all in a whole window (an idle server, or callers shedding everything): admit
      // one more business priority per idle window, so that an idle server recovers in bounded
      // time without letting a whole overload back in at once after a pause.
      this.level = Math.min(ADMIT_ALL, before + USER_LEVELS);
    }
    if (this.level < AdmissionController.FLOOR) this.level = AdmissionController.FLOOR;
    const report: WindowReport = {
      at: nowMs,
      arrived: this.arrived,
      admitted: this.admitted,
      meanQueueMs,
      eventLoopDelayMs,
      overloaded,
      levelBefore: before,
      levelAfter: this.level,
    };
    this.histogram.fill(0);
    this.arrived = 0;
    this.admitted = 0;
    this.queueSum = 0;
    this.queueCount = 0;
    this.windowStart = nowMs;
    return report;
  }

  /**
   * The highest level L such that the calls at levels <= L in this window number at most
   * `target`; every level when all of them fit.
   */
  private levelFor(target: number): number {
    let cum = 0;
    const h = this.histogram;
    for (let l = 0; l < LEVELS; l++) {
      cum += h[l]!;
      if (cum > target) return l - 1 < 0 ? 0 : l - 1;
    }
    return ADMIT_ALL;
  }
}
