/**
 * FastReject admission control: DAGOR's priority admission (Zhou et al., "Overload Control for
 * Scaling WeChat Microservices", SoCC 2018), with a signal and a step size taken from the
 * controllers that react within one window. Pure code: time and every measurement come in as
 * arguments, so it is unit-tested by replaying synthetic load window by window.
 *
 * - **Priority levels** (the rules live in priority.ts). A call's level is `business * 128 + user`:
 *   business priority 0..127 and user priority 0..127 (a hash of the user id with an hourly salt).
 *   Lower is more important; level 0 is the most important of all, 16383 the least. A call is
 *   admitted when its level is at or below the admission level (DAGOR).
 * - **The histogram cut-off** (DAGOR). Every arriving call is counted in a histogram by level. When
 *   the level moves, it moves to where the histogram says the wanted number of calls fit.
 * - **The signal: a standing queue** (CoDel, Nichols and Jacobson, ACM Queue 2012). Each time a
 *   handler starts, the server reports how many calls are still waiting and how long the starting
 *   call waited since it was read. The sample is the larger of that wait and the queue's length
 *   times the measured CPU time per call (the wait the queue means for a call at its back). A
 *   window is overloaded when the *minimum* sample exceeds the threshold: the queue never drained
 *   below it for the whole window. A burst that drains is not punished; a queue that stands is
 *   seen within one window, whatever order the queue serves calls in (svrkit serves the most
 *   important first, so the waits of the calls served say little). The threshold is
 *   `queueThresholdMs`, or `deadlineShare` of the shortest deadline among the calls started, if
 *   that is more: a queue that costs callers a small share of the time they allowed is no
 *   overload (svrkit's refinement; Breakwater also sets its delay target from the SLO). The
 *   event-loop delay is a backstop signal.
 * - **How far the level falls** (Breakwater, Cho et al., OSDI 2020; Netflix Gradient2). The server
 *   knows how many handlers it started in the window and how busy it was: that is what it can
 *   serve. An overloaded window admits next what it could serve, less a quarter of the calls by
 *   which the queue stands over the threshold (drained within four windows), but at least
 *   `(1 - maxCut)` of what it started. The level moves to where the histogram says that many
 *   calls fit (it never rises while overloaded). A step to 4x or 10x is measured in one window and
 *   answered within the next three, instead of DAGOR's 5% per window (27 windows for 4x). Overload seen only
 *   by the event-loop delay backstop, with no queue to size the cut by, takes DAGOR's step:
 *   `(1 - alpha) * admitted`. The server refuses the waiting calls above the new level at once,
 *   and while it sheds, the calls that waited more than `maxWaitMs` (Breakwater's early drops).
 *   So the excess to drain counts only the calls waiting at or below the new level (the server
 *   reports the queue per level): those above it are refused, not drained. A server admitting
 *   everything starts to shed only for a clear overload: a cut of more than `alpha`, and a queue
 *   past the early-drop limit or more calls over the last eight windows than it could serve in
 *   them (3 sigma). At about capacity (a process still compiling its code, a GC pause) a queue
 *   stands a little over the threshold for a while and drains by itself.
 * - **What the cut spares** (svrkit's refinement of CoDel for a priority queue). The queue serves
 *   the most important business priority first, so a call waits only behind the calls of its own
 *   and more important business priorities. Each sample also counts for the call's business
 *   priority: the larger of its wait and the queue ahead of a newcomer of that priority. A cut
 *   never goes into a business priority when it, and every more important one, lost no call to
 *   the early drop or its deadline in the window, had a sample no longer than the early-drop
 *   limit (`3 x` the threshold) if it had calls or waiting calls, and together had no more calls,
 *   in the window and over the last eight windows (this one included), than the server could
 *   serve in them plus three standard deviations of a Poisson count of that mean. So calls at
 *   capacity are not cut for a chance surplus; calls 20% over it are, within a few windows, at
 *   the bench's 95 calls a window (with fewer calls a window the slack is wider, and it is the
 *   early-drop limit that catches an overload). Those calls are served in time whatever waits
 *   behind them; cutting them would refuse calls the server serves (at 10x a class of 97% of
 *   capacity queues now and then, and a cut by the window's noisy count would refuse some).
 * - **How far the level rises.** Not overloaded, it admits what the server can serve plus half the
 *   queue the threshold still allows: at least `beta` more than it admitted (DAGOR's step), at
 *   most twice as many. With room (utilization below `utilizationTarget`, or no call at all) the
 *   capacity counts the idle time, so the level rises by the room it has (Envoy's adaptive
 *   concurrency and Vegas grow a limit while the measured delay stays at its minimum).
 *   Callers shed what is above an advertised level themselves, so the histogram cannot see the
 *   demand above the level: the rise extrapolates the density of calls in the level's own business
 *   priority (user priorities spread calls evenly over its 128 levels; with room, at most one
 *   business priority, then twice as far each window the room lasts) and, busy, stops at its last
 *   level. Where there is none to go by (a gap between business priorities, whose levels admit
 *   nothing), it steps to the first level of the next business priority that had calls in the
 *   last 10 minutes, or to `ADMIT_ALL` when none above had. An over-estimate shows as a standing
 *   queue in the next window and is cut then.
 * - **Business priority 0** is never shed by the level: the level never drops below the last
 *   level of business priority 0 (the memory backstop can refuse it, and, while the server sheds,
 *   the early drop of calls that waited too long, which it is served first to avoid).
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
  /** Standing-queue threshold (ms): a window whose shortest sampled wait exceeds it is overloaded. Default 20 (DAGOR's). */
  queueThresholdMs?: number;
  /**
   * Share of the calls' deadlines a standing queue may take before it counts as overload: the
   * threshold of a window is `max(queueThresholdMs, deadlineShare * d)`, d the shortest deadline
   * (the timeout its client set) of the calls started in it; calls without a deadline count as
   * `queueThresholdMs`. Default 0.05: a queue of 2 s is no overload for calls that may take
   * 40 s, and shedding them would only fail calls that would have succeeded.
   */
  deadlineShare?: number;
  /** A window closes after this long (ms). Default 100 (CoDel's interval). */
  windowMs?: number;
  /**
   * ... or after this many admitted calls. Default: no limit (DAGOR closes after 2000; a minimum
   * over a window needs the window to last, or a short drain after a GC pause looks like a queue
   * that stood).
   */
  windowRequests?: number;
  /** Share of the admitted calls shed by a window overloaded only by the event-loop delay backstop. Default 0.05 (DAGOR's alpha). */
  alpha?: number;
  /** Most share of the served calls shed by one overloaded window. Default 0.5. */
  maxCut?: number;
  /** Least share of admitted calls added back per healthy window. Default 0.01 (DAGOR's beta). */
  beta?: number;
  /** Event-loop utilization (0..1) below which the server has room to admit more. Default 0.9. */
  utilizationTarget?: number;
  /**
   * Event-loop delay (mean over the window, ms) that also counts as overload: a backstop for
   * handlers that block the loop for long at a time (the scheduler's own slices block it for up to
   * 50 ms). Default 250.
   */
  eventLoopDelayThresholdMs?: number;
}

/** The defaults, filled in. */
export const DEFAULT_ADMISSION: Readonly<Required<AdmissionOptions>> = Object.freeze({
  queueThresholdMs: 20,
  deadlineShare: 0.05,
  windowMs: 100,
  windowRequests: Infinity,
  alpha: 0.05,
  maxCut: 0.5,
  beta: 0.01,
  utilizationTarget: 0.9,
  eventLoopDelayThresholdMs: 250,
});

/** What the server measured over a window, besides the calls (all optional; absent means unknown). */
export interface WindowLoad {
  /** Event-loop utilization over the window, 0..1 (`performance.eventLoopUtilization`). Unknown counts as busy. */
  readonly utilization?: number;
  /** Mean event-loop delay over the window (ms). */
  readonly eventLoopDelayMs?: number;
  /** Calls waiting in the server's queue when the window closed. */
  readonly queued?: number;
  /**
   * How many of them wait at each priority level, 0..16383 (16384 counts), when the server's queue
   * serves the most important business priority first. Unknown: the whole queue counts as the
   * excess to drain at every level.
   */
  readonly queuedByLevel?: ArrayLike<number>;
  /** How long the oldest of them has waited (ms); the signal when no handler started in the window. */
  readonly oldestQueuedMs?: number;
  /**
   * What starting a waiting call took (ms per call), when the server measured it; else the
   * controller takes the window's busy time over the handlers it started (which counts reading).
   */
  readonly serviceMs?: number;
}

/** What one closed window looked like (for logs, dry-run reports, benchmarks and tests). */
export interface WindowReport {
  /** When the window closed (epoch ms). */
  readonly at: number;
  /** Calls that arrived, admitted or not (those that arrived already expired included). */
  readonly arrived: number;
  /** Calls admitted. */
  readonly admitted: number;
  /** Handlers started: what the server served. */
  readonly started: number;
  /** Calls dropped unstarted because their deadline passed while they waited. */
  readonly expired: number;
  /** Admitted calls refused unstarted because they waited longer than `maxWaitMs`. */
  readonly dropped: number;
  /** The signal: the shortest sampled wait of the window (ms); 0 without samples or queue. */
  readonly minSojournMs: number;
  /** The threshold it was held against (ms): `queueThresholdMs`, or more for calls with long deadlines. */
  readonly thresholdMs: number;
  /** Event-loop utilization, 0..1 (-1 when unknown). */
  readonly utilization: number;
  /** The event-loop delay the server measured (ms). */
  readonly eventLoopDelayMs: number;
  /** Calls waiting in the server's queue at the close. */
  readonly queued: number;
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
  private startedCount = 0;
  private expiredCount = 0;
  private droppedCount = 0;
  private samples = 0;
  private minWait = Infinity;
  /** The shortest deadline among the calls started in the window (0: one had none). */
  private shortestDeadline = Infinity;
  /** The shortest deadline of the last window with a start (ms; 0 before any). */
  private deadlineFloor = 0;
  /** CPU time per started call, as last measured (ms): turns a queue length into a wait. */
  private serviceMs = 0;
  /** Levels the next rise may probe where no call shows the way; doubles while the room lasts. */
  private probe = USER_LEVELS;
  /** While the server sheds, a call may wait this many times the threshold before it is dropped. */
  private static readonly EARLY_DROP = 3;
  /** Windows over which an overloaded window plans to drain the standing queue's excess. */
  private static readonly DRAIN_WINDOWS = 4;
  /** When each business priority last had calls in a window (epoch ms). */
  private readonly seenAt = new Float64Array(BUSINESS_LEVELS).fill(-Infinity);
  /** How long a business priority counts as seen (ms): longer than an overload that hides it. */
  private static readonly SEEN_MS = 600_000;
  /** The shortest sample of each business priority in the window (ms; Infinity: none). */
  private readonly bandWait = new Float64Array(BUSINESS_LEVELS).fill(Infinity);
  /** Which business priorities had an admitted call expire or drop unstarted in the window (1). */
  private readonly bandLost = new Uint8Array(BUSINESS_LEVELS);
  /** Windows whose calls per business priority, against what the server served, tell whether they fit. */
  private static readonly RATE_WINDOWS = 8;
  /** Calls per business priority in the last `RATE_WINDOWS - 1` windows (a ring of rows of 128). */
  private readonly bandHistory = new Float64Array((AdmissionController.RATE_WINDOWS - 1) * BUSINESS_LEVELS);
  /** What the server could serve in each of those windows (calls). */
  private readonly capacityHistory = new Float64Array(AdmissionController.RATE_WINDOWS - 1);
  /** Calls that arrived in each of those windows. */
  private readonly arrivedHistory = new Float64Array(AdmissionController.RATE_WINDOWS - 1);
  private historyRow = 0;
  /** The last level of business priority 0: the level never goes below it. */
  private static readonly FLOOR = USER_LEVELS - 1;

  /**
   * @param nowMs - epoch ms when the first window starts.
   * @param options - thresholds; see `AdmissionOptions`.
   * @throws ConfigError INVALID_OPTION when a value is out of range (thresholds and windows > 0,
   *   alpha and maxCut in (0, 1) with alpha <= maxCut, beta > 0, utilizationTarget in (0, 1]).
   */
  constructor(nowMs: number, options: AdmissionOptions = {}) {
    const o = { ...DEFAULT_ADMISSION };
    for (const [k, v] of Object.entries(options)) if (v !== undefined && k in o) (o as Record<string, number>)[k] = v as number;
    if (!(o.queueThresholdMs > 0)) throw configErrors.INVALID_OPTION('queueThresholdMs', '> 0 ms', o.queueThresholdMs);
    if (!(o.deadlineShare >= 0 && o.deadlineShare < 1)) throw configErrors.INVALID_OPTION('deadlineShare', 'in [0, 1)', o.deadlineShare);
    if (!(o.windowMs > 0)) throw configErrors.INVALID_OPTION('windowMs', '> 0 ms', o.windowMs);
    if (!(o.windowRequests >= 1)) throw configErrors.INVALID_OPTION('windowRequests', '>= 1', o.windowRequests);
    if (!(o.alpha > 0 && o.alpha < 1)) throw configErrors.INVALID_OPTION('alpha', 'in (0, 1)', o.alpha);
    if (!(o.maxCut >= o.alpha && o.maxCut < 1)) throw configErrors.INVALID_OPTION('maxCut', `in [alpha (${o.alpha}), 1)`, o.maxCut);
    if (!(o.beta > 0)) throw configErrors.INVALID_OPTION('beta', '> 0', o.beta);
    if (!(o.utilizationTarget > 0 && o.utilizationTarget <= 1)) throw configErrors.INVALID_OPTION('utilizationTarget', 'in (0, 1]', o.utilizationTarget);
    if (!(o.eventLoopDelayThresholdMs > 0)) throw configErrors.INVALID_OPTION('eventLoopDelayThresholdMs', '> 0 ms', o.eventLoopDelayThresholdMs);
    this.options = Object.freeze(o);
    this.windowStart = nowMs;
  }

  /** The settings in force (defaults filled in). */
  get settings(): Readonly<Required<AdmissionOptions>> {
    return this.options;
  }

  /**
   * Counts an arriving call and says whether to admit it.
   * @param level - the call's priority level (`priorityLevel`), 0..16383.
   * @returns true to admit (its level is at or below the admission level).
   */
  arrive(level: number): boolean {
    this.histogram[level]!++;
    this.arrived++;
    if (level > this.level) return false;
    this.admitted++;
    return true;
  }

  /**
   * Counts a call that arrived already past its deadline (it waited in buffers before it was
   * read): demand in the histogram. It is not admitted, and it is no sample of the signal: its
   * wait in this server is nil, and a client that sends such calls (a tiny or back-dated
   * deadline) must not hide the queue that every other call sees.
   * @param level - its priority level, 0..16383.
   */
  arriveExpired(level: number): void {
    this.histogram[level]!++;
    this.arrived++;
    this.expiredCount++;
  }

  /**
   * A handler started.
   * @param waitMs - how long the call waited since it was read (ms; server-measured).
   * @param queued - calls still waiting in the server's queue as it started.
   * @param deadlineMs - the deadline its client set (ms, the whole timeout), or undefined for none.
   * @param level - its priority level, 0..16383, when known: the sample then also counts for its
   *   business priority (see `closeWindow`).
   * @param ahead - of the `queued` calls, those served before a new call of its business priority
   *   (its own and the more important ones); default all of them.
   */
  started(waitMs: number, queued: number, deadlineMs?: number, level?: number, ahead?: number): void {
    this.startedCount++;
    this.sample(waitMs, queued, level, ahead);
    if (deadlineMs === undefined) this.shortestDeadline = 0;
    else if (deadlineMs < this.shortestDeadline) this.shortestDeadline = deadlineMs;
  }

  /**
   * An admitted call was dropped unstarted because its deadline passed while it waited: a sample
   * like a start's (a short deadline cannot make the queue look shorter than it is).
   * @param waitedMs - how long it had waited since it was read (ms).
   * @param queued - calls still waiting.
   * @param level - its priority level, 0..16383, when known; `ahead` - as for `started`.
   */
  expired(waitedMs: number, queued: number, level?: number, ahead?: number): void {
    this.expiredCount++;
    this.sample(waitedMs, queued, level, ahead);
    if (level !== undefined) this.bandLost[level >> 7] = 1;
  }

  /**
   * An admitted call was refused unstarted because it waited longer than `maxWaitMs`.
   * @param waitedMs - how long it had waited since it was read (ms).
   * @param queued - calls still waiting.
   * @param level - its priority level, 0..16383, when known; `ahead` - as for `started`.
   */
  dropped(waitedMs: number, queued: number, level?: number, ahead?: number): void {
    this.droppedCount++;
    this.sample(waitedMs, queued, level, ahead);
    if (level !== undefined) this.bandLost[level >> 7] = 1;
  }

  /**
   * A sample: the larger of a call's wait and the wait the queue behind it means; for its business
   * priority, the larger of its wait and the wait of the queue a call of that priority would face.
   */
  private sample(waitMs: number, queued: number, level: number | undefined, ahead: number | undefined): void {
    const backlog = queued * this.serviceMs;
    const ms = backlog > waitMs ? backlog : waitMs;
    this.samples++;
    if (ms < this.minWait) this.minWait = ms;
    if (level !== undefined) {
      const b = level >> 7;
      const before = ahead === undefined ? backlog : ahead * this.serviceMs;
      const own = before > waitMs ? before : waitMs;
      if (own < this.bandWait[b]!) this.bandWait[b] = own;
    }
  }

  /**
   * How long an admitted call may wait in the server's queue before it is refused instead of
   * started (Breakwater's early drop): three times the threshold its deadline sets, while the
   * level sheds load; no limit while everything is admitted (a burst the queue can serve in
   * time is served).
   * @param deadlineMs - the deadline its client set (ms), or undefined for none.
   * @returns ms, or Infinity.
   */
  maxWaitMs(deadlineMs: number | undefined): number {
    if (this.level === ADMIT_ALL) return Infinity;
    const o = this.options;
    return AdmissionController.EARLY_DROP * Math.max(o.queueThresholdMs, o.deadlineShare * (deadlineMs ?? 0));
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
   * @param load - what the server measured besides the calls; see `WindowLoad`.
   * @returns what the window looked like.
   */
  closeWindow(nowMs: number, load: WindowLoad = {}): WindowReport {
    const o = this.options;
    const queued = load.queued ?? 0;
    const eventLoopDelayMs = load.eventLoopDelayMs ?? 0;
    const wait = this.samples > 0 ? this.minWait : queued > 0 ? (load.oldestQueuedMs ?? 0) : 0;
    // With no start in the window (reading alone took it), the calls' deadlines are those of the last window that had one.
    if (this.startedCount > 0) this.deadlineFloor = this.shortestDeadline;
    const threshold = Math.max(o.queueThresholdMs, o.deadlineShare * this.deadlineFloor);
    const overloaded = wait > threshold || eventLoopDelayMs > o.eventLoopDelayThresholdMs;
    const before = this.level;
    const span = nowMs - this.windowStart;
    const served = this.startedCount;
    const u = load.utilization;
    if (load.serviceMs !== undefined && load.serviceMs > 0) this.serviceMs = load.serviceMs;
    else if (served > 0 && span > 0) this.serviceMs = (span * (u ?? 1)) / served;
    // In calls: what the server could have started had it been busy all window, the queue that
    // stood all window, and the queue the threshold allows.
    const capacity = served / Math.max(u ?? 1, 0.05);
    const standing = this.serviceMs > 0 ? wait / this.serviceMs : 0;
    const allowed = this.serviceMs > 0 ? threshold / this.serviceMs : 0;
    if (overloaded) {
      this.probe = USER_LEVELS;
      if (this.arrived > 0) {
        // Admit what the server can serve, less a quarter of the calls by which the queue stands
        // over the threshold (drained within four windows: all at once would cut deep into the
        // important calls the backlog holds), but not less than (1 - maxCut) of what it served.
        // Without a measured queue (the event-loop delay backstop), DAGOR's step.
        const measured = wait > threshold && served > 0 && this.serviceMs > 0;
        const least = (1 - o.maxCut) * served;
        const goal = measured
          ? Math.max(least, capacity - (standing - allowed) / AdmissionController.DRAIN_WINDOWS)
          : (1 - o.alpha) * this.admitted;
        // A server admitting everything starts to shed only for a clear overload: more than
        // `alpha` over what it can serve, and either a queue past the early-drop limit or more
        // calls over the last windows than it could serve in them (3 sigma). At about its
        // capacity (a fresh process still compiling its code, a GC pause) a queue stands a
        // little over the threshold for a while and drains; shedding for it would refuse calls
        // the server serves in time.
        if (before !== ADMIT_ALL || !measured || (goal < (1 - o.alpha) * this.admitted && (wait > AdmissionController.EARLY_DROP * threshold || this.overRate(capacity)))) {
          this.level = Math.min(before, measured ? this.cutFor(least, capacity, standing, allowed, threshold, before, load.queuedByLevel) : this.levelFor(goal));
        }
      }
    } else if (before !== ADMIT_ALL) {
      // Admit what the server can serve plus half the queue the threshold still allows (at least
      // beta more than now, at most twice as many: more would be a guess, not a measurement).
      const room = this.arrived === 0 || (u !== undefined && u < o.utilizationTarget);
      const goal = this.arrived === 0 ? Infinity : Math.min(2 * this.admitted, capacity + (allowed - standing) / 2);
      const wanted = Math.max(1, o.beta * this.admitted, goal - this.admitted);
      const most = room ? this.probe : USER_LEVELS;
      this.probe = room ? Math.min(LEVELS, this.probe * 2) : USER_LEVELS;
      // The histogram says where that many calls fit when it sees the demand above the level;
      // callers that shed by the advertised level hide it, so the edge decides as well.
      const byHistogram = this.levelFor(this.admitted + wanted);
      const byEdge = before + this.edgeStep(before, wanted, most, room, nowMs);
      this.level = Math.min(ADMIT_ALL, Math.max(before + 1, Math.min(byHistogram, byEdge)));
    }
    // Which business priorities had calls, for the rise to find the next one above a gap; and
    // how many, for the next windows' cuts.
    const h = this.histogram;
    const row = this.historyRow * BUSINESS_LEVELS;
    this.capacityHistory[this.historyRow] = capacity;
    this.arrivedHistory[this.historyRow] = this.arrived;
    for (let b = 0; b < BUSINESS_LEVELS; b++) {
      let n = 0;
      for (let l = b * USER_LEVELS, end = l + USER_LEVELS; l < end; l++) n += h[l]!;
      if (n !== 0) this.seenAt[b] = nowMs;
      this.bandHistory[row + b] = n;
    }
    this.historyRow = (this.historyRow + 1) % (AdmissionController.RATE_WINDOWS - 1);
    if (this.level < AdmissionController.FLOOR) this.level = AdmissionController.FLOOR;
    const report: WindowReport = {
      at: nowMs,
      arrived: this.arrived,
      admitted: this.admitted,
      started: this.startedCount,
      expired: this.expiredCount,
      dropped: this.droppedCount,
      minSojournMs: wait,
      thresholdMs: threshold,
      utilization: load.utilization ?? -1,
      eventLoopDelayMs,
      queued,
      overloaded,
      levelBefore: before,
      levelAfter: this.level,
    };
    this.histogram.fill(0);
    this.arrived = 0;
    this.admitted = 0;
    this.startedCount = 0;
    this.expiredCount = 0;
    this.droppedCount = 0;
    this.samples = 0;
    this.minWait = Infinity;
    this.bandWait.fill(Infinity);
    this.bandLost.fill(0);
    this.shortestDeadline = Infinity;
    this.windowStart = nowMs;
    return report;
  }

  /**
   * Levels to add so that about `calls` more calls are admitted, judging by how many calls each
   * level of `level`'s business priority, up to `level`, held in this window (user priorities
   * spread calls evenly over them): 1 .. `most`, at most three times the admitted part of the
   * business priority, and without `room` not past its last level. When they held none: twice
   * the admitted part if the business priority had calls in the last 10 minutes and some call
   * arrived in this window; else (a gap) up to the first level of the next business priority
   * seen in the last 10 minutes, or to `ADMIT_ALL` when none above was.
   */
  private edgeStep(level: number, calls: number, most: number, room: boolean, nowMs: number): number {
    // (`room`: utilization below the target, or nothing arrived.)
    const band = Math.floor(level / USER_LEVELS);
    const from = band * USER_LEVELS;
    const part = level - from + 1;
    let n = 0;
    for (let l = from; l <= level; l++) n += this.histogram[l]!;
    // At most three times the admitted part of the business priority per window (at least 8
    // levels): a density measured over a few levels is a rough one.
    if (n > 0) {
      const step = Math.min(most, Math.max(8, 2 * part), Math.max(1, Math.ceil((calls * part) / n)));
      // Busy: no further than the business priority's last level. What lies above is unseen, and
      // a server without room has no use for a probe into it.
      return room ? step : Math.max(1, Math.min(step, from + USER_LEVELS - 1 - level));
    }
    // No call at or below the level in its business priority this window. Seen lately, and other
    // calls arrived: too few levels admitted to show any, so double them. Not seen: a gap, whose
    // levels admit nothing; step to the first level of the next business priority seen lately
    // (its density shows in the next window).
    if (this.arrived > 0 && nowMs - this.seenAt[band]! <= AdmissionController.SEEN_MS) return Math.min(most, part);
    for (let b = band + 1; b < BUSINESS_LEVELS; b++) {
      if (nowMs - this.seenAt[b]! <= AdmissionController.SEEN_MS) return b * USER_LEVELS - level;
    }
    // Nothing above has had calls for minutes: holding the level back admits no fewer calls.
    return ADMIT_ALL - level;
  }

  /**
   * Where an overloaded window with a measured queue cuts: the highest level L such that the calls
   * that arrived at levels <= L in this window number at most `goal(L)`, what the server can serve
   * less a quarter of the excess of the queue at or below L over what the threshold allows (the
   * calls waiting above L are refused as the level drops: they need no draining), and at least
   * `least`. But never into a business priority when it and every more important one lost no
   * admitted call to the early drop or a deadline in this window, had a sample within the
   * early-drop limit (CoDel's test, per business priority: the queue ahead of some call of it was
   * short enough at least once), and together had no more calls over the last eight windows than
   * the server could serve in them, plus three standard deviations of a Poisson count. The queue serves the most important first, so such
   * calls are served in time whatever waits behind them; cutting into them would refuse calls
   * the server serves.
   * @param least - fewest calls to admit; `capacity` - calls the server could serve in a window.
   * @param standing - calls the queue stood at (its shortest wait over the window, as calls).
   * @param allowed - calls the threshold allows to wait; `threshold` - that as a wait (ms).
   * @param before - the level before the cut.
   * @param byLevel - waiting calls per level (16384 counts), or undefined: the whole queue counts for every level.
   * @returns the level, 0..16383.
   */
  private cutFor(least: number, capacity: number, standing: number, allowed: number, threshold: number, before: number, byLevel: ArrayLike<number> | undefined): number {
    const h = this.histogram;
    let cum = 0;
    let waiting = byLevel === undefined ? Infinity : 0;
    let cut = ADMIT_ALL;
    for (let l = 0; l < LEVELS; l++) {
      cum += h[l]!;
      if (byLevel !== undefined) waiting += byLevel[l]!;
      const excess = Math.min(standing, waiting) - allowed;
      const goal = Math.max(least, excess > 0 ? capacity - excess / AdmissionController.DRAIN_WINDOWS : capacity);
      if (cum > goal) {
        cut = l - 1 < 0 ? 0 : l - 1;
        break;
      }
    }
    // The last level of the least important business priority, wholly at or below the level
    // before, up to which every business priority lost no call, had a sample within the
    // early-drop limit if it had calls in the window or waiting (a starved one has none), and one
    // had a sample (without the calls' levels nothing is spared); and whose calls, with those of
    // the more important ones, fit: in this window, and over the last `RATE_WINDOWS` windows (this
    // one included), no more than the server could serve in them, plus three standard deviations
    // of a Poisson count of that mean.
    const rows = AdmissionController.RATE_WINDOWS - 1;
    let served = capacity;
    for (let r = 0; r < rows; r++) served += this.capacityHistory[r]!;
    const fits = served + 3 * Math.sqrt(served);
    const fitsNow = capacity + 3 * Math.sqrt(capacity);
    const history = this.bandHistory;
    let now = 0;
    let past = 0;
    let spare = -1;
    let seen = false;
    for (let b = 0, end = USER_LEVELS - 1; end <= before; b++, end += USER_LEVELS) {
      const w = this.bandWait[b]!;
      let calls = 0;
      let waiting = 0;
      for (let l = end - USER_LEVELS + 1; l <= end; l++) {
        calls += h[l]!;
        if (byLevel !== undefined) waiting += byLevel[l]!;
      }
      now += calls;
      for (let r = 0; r < rows; r++) past += history[r * BUSINESS_LEVELS + b]!;
      if (this.bandLost[b] === 1 || now > fitsNow || now + past > fits) break;
      if (w === Infinity ? calls > 0 || waiting > 0 : w > AdmissionController.EARLY_DROP * threshold) break;
      if (w !== Infinity) seen = true;
      if (seen) spare = end;
    }
    return Math.max(cut, spare);
  }

  /**
   * Whether more calls arrived over the last `RATE_WINDOWS` windows (this one included) than the
   * server could serve in them, by more than three standard deviations of a Poisson count.
   * @param capacity - calls the server could serve in this window.
   */
  private overRate(capacity: number): boolean {
    let arrived = this.arrived;
    let served = capacity;
    for (let r = 0; r < AdmissionController.RATE_WINDOWS - 1; r++) {
      arrived += this.arrivedHistory[r]!;
      served += this.capacityHistory[r]!;
    }
    return arrived > served + 3 * Math.sqrt(served);
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
