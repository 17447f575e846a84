/**
 * The server's admission stage: FastReject (DAGOR, phxrpc), the I/O around the pure
 * `AdmissionController` (overload/admission.ts). It feeds the controller each call's priority
 * level and the waits the scheduling stage samples, closes its windows (on arrivals, and on a
 * timer so that an idle server recovers), measures event-loop utilization and delay, publishes
 * the admission level clients see in responses, refuses calls above it (RESOURCE_EXHAUSTED, not
 * processed) before their bodies are decoded, and has the waiting calls above a lowered level
 * refused at once. In dry-run mode it decides and reports, and refuses nothing.
 *
 * The in-flight backstop comes from what the server can afford, not from a call count: when the
 * V8 heap, or the process's resident memory against its cgroup limit or the machine's memory, is
 * above `maxMemoryFraction` (the heap sampled each window, the resident set every second, the
 * limits every 10 s), every new call is refused until it is not.
 * Calls that wait on I/O cost memory only (2-3 KiB each), so a server holds 100,000s of
 * them; calls that need CPU are bounded by the admission level. `maxInflight` still sets a fixed
 * cap for those who want one.
 */
import os from 'node:os';
import { monitorEventLoopDelay, performance, type EventLoopUtilization, type IntervalHistogram } from 'node:perf_hooks';
import v8 from 'node:v8';
import { errors } from '../errors.js';
import { ADMIT_ALL, AdmissionController, type AdmissionOptions, type WindowReport } from '../overload/admission.js';
import { priorityLevel } from '../overload/priority.js';
import type { RejectReason, ServerObserver } from './observer.js';
import type { ServerConnection } from './server-connection.js';

/** The FastReject settings this stage reads (the rest are the controller's). */
export interface FastRejectSettings extends AdmissionOptions {
  /** Decide and report, but refuse nothing. */
  readonly dryRun: boolean;
  /** Calls in flight beyond this are refused whatever their priority (Infinity: no fixed cap). */
  readonly maxInflight: number;
  /** Share of the memory limits (0..1] above which every new call is refused. */
  readonly maxMemoryFraction: number;
  /** Called with each closed window; default: log level changes in dry-run mode. */
  readonly onWindow: ((report: WindowReport) => void) | undefined;
}

/** What FastReject reads from the scheduling stage at each window's close. */
export interface QueueState {
  /** Calls waiting for their handler. */
  readonly size: number;
  /** How many of them wait at each priority level, 0..16383. */
  readonly byLevel: ArrayLike<number>;
  /** How many of them are served before a call of `level` (0..16383) that joins now. */
  ahead(level: number): number;
  /** How long the oldest of them has waited (ms, 0 when none). */
  oldestWaitMs(now: number): number;
  /** Refuses the waiting calls above `level` (the level just dropped). */
  refuseAbove(level: number): number;
  /** Time to start a waiting call since the last sample (ms), or undefined. */
  serviceSample(): number | undefined;
}

const MiB = 1024 * 1024;

/** FastReject for one server; see the module comment. */
export class FastReject {
  private readonly controller: AdmissionController;
  private eventLoopDelay: IntervalHistogram | undefined;
  private utilization: EventLoopUtilization | undefined;
  private windowTimer: NodeJS.Timeout | undefined;
  /** The admission level sent to clients: undefined while admitting everything (and always in dry-run). */
  private advertised: number | undefined;
  /** Set while memory is above the limit: [used, limit] in bytes. */
  private memoryFull: [number, number] | undefined;
  /** What the resident set may use (bytes; `memoryLimitBytes`), and when it was read (epoch ms). */
  private rssLimit = 0;
  private rssLimitAt = -Infinity;
  /** The resident set (bytes) when last read, and when (epoch ms). */
  private rss = 0;
  private rssAt = -Infinity;
  /** The scheduling stage, once the server wires it. */
  queue: QueueState | undefined;

  /**
   * @param settings - thresholds and the server's own settings.
   * @param now - the server's clock (epoch ms).
   * @param log - where dry-run level changes go.
   * @param observer - receives refusals (metrics).
   * @throws ConfigError INVALID_OPTION from `AdmissionController` for out-of-range thresholds.
   */
  constructor(
    private readonly settings: FastRejectSettings,
    private readonly now: () => number,
    private readonly log: (message: string) => void,
    private readonly observer: ServerObserver | undefined,
  ) {
    this.controller = new AdmissionController(now(), settings);
  }

  /** The admission level: calls whose priority level is above it are refused (16383 admits all). */
  get level(): number {
    return this.controller.level;
  }

  /** The level to advertise in responses, or undefined while admitting everything (or in dry-run). */
  get advertisedLevel(): number | undefined {
    return this.advertised;
  }

  /** Starts the event-loop monitors and the window timer (when the server starts listening). */
  start(): void {
    this.eventLoopDelay = monitorEventLoopDelay({ resolution: 10 });
    this.eventLoopDelay.enable();
    this.utilization = performance.eventLoopUtilization();
    // Windows also close when no call arrives, so that an idle server's level recovers.
    const every = Math.min(this.controller.settings.windowMs, 250);
    this.windowTimer = setInterval(() => this.maybeCloseWindow(this.now()), every);
    this.windowTimer.unref();
  }

  /** Stops the monitor and the timer (when the server closes). */
  stop(): void {
    clearInterval(this.windowTimer);
    this.eventLoopDelay?.disable();
  }

  /**
   * Admits or refuses an arriving call. A refused call is answered here (RESOURCE_EXHAUSTED, not
   * processed, with the admission level); in dry-run mode the refusal is only reported.
   * @param sc - the call's connection; `callId` - its id; `method` - its full name.
   * @param inflight - calls the server is serving now, and those waiting for a handler.
   * @param business - business priority, 0..127; `user` - user priority, 0..127.
   * @param now - epoch ms.
   * @returns true when the call may go on.
   */
  admit(sc: ServerConnection<unknown>, callId: number, method: string, inflight: number, business: number, user: number, now: number): boolean {
    const adm = this.controller;
    if (adm.windowDue(now)) this.maybeCloseWindow(now);
    const mem = this.memoryFull;
    if (mem !== undefined && this.refused(method, 'memory')) {
      sc.refuse(callId, this.advertised, errors.OVERLOADED_MEMORY, Math.round(mem[0] / MiB), Math.round(mem[1] / MiB));
      return false;
    }
    if (inflight >= this.settings.maxInflight && this.refused(method, 'inflight')) {
      sc.refuse(callId, this.advertised, errors.OVERLOADED_INFLIGHT, inflight, this.settings.maxInflight);
      return false;
    }
    const level = priorityLevel(business, user);
    if (!adm.arrive(level) && this.refused(method, 'priority')) {
      sc.refuse(callId, this.advertised, errors.OVERLOADED_PRIORITY, level, adm.level);
      return false;
    }
    return true;
  }

  /**
   * Counts a call that arrived already past its deadline (refused by the decoding stage) as demand.
   * @param business - its business priority, 0..127.
   * @param user - its user priority, 0..127.
   */
  arrivedExpired(business: number, user: number): void {
    this.controller.arriveExpired(priorityLevel(business, user));
  }

  /**
   * A handler started: a sample of the signal.
   * @param waitMs - how long its call waited since it was read (ms); `queued` - calls still waiting.
   * @param deadlineMs - the deadline its client set (ms), or undefined for none.
   * @param business - its business priority, 0..127; `user` - its user priority, 0..127.
   */
  started(waitMs: number, queued: number, deadlineMs: number | undefined, business: number, user: number): void {
    const level = priorityLevel(business, user);
    this.controller.started(waitMs, queued, deadlineMs, level, this.queue?.ahead(level));
  }

  /**
   * An admitted call expired while it waited.
   * @param waitedMs - its wait since it was read (ms); `queued` - calls still waiting.
   * @param business - its business priority, 0..127; `user` - its user priority, 0..127.
   */
  expired(waitedMs: number, queued: number, business: number, user: number): void {
    const level = priorityLevel(business, user);
    this.controller.expired(waitedMs, queued, level, this.queue?.ahead(level));
  }

  /**
   * An admitted call waited longer than `maxWaitMs` and was refused.
   * @param waitedMs - its wait since it was read (ms); `queued` - calls still waiting.
   * @param business - its business priority, 0..127; `user` - its user priority, 0..127.
   */
  dropped(waitedMs: number, queued: number, business: number, user: number): void {
    const level = priorityLevel(business, user);
    this.controller.dropped(waitedMs, queued, level, this.queue?.ahead(level));
  }

  /**
   * How long an admitted call may wait before it is refused (the controller's `maxWaitMs`);
   * Infinity in dry-run mode.
   * @param deadlineMs - the deadline its client set (ms), or undefined.
   */
  maxWaitMs(deadlineMs: number | undefined): number {
    return this.settings.dryRun ? Infinity : this.controller.maxWaitMs(deadlineMs);
  }

  /** Reports a refusal; true unless in dry-run mode. */
  private refused(method: string, reason: RejectReason): boolean {
    const dry = this.settings.dryRun;
    this.observer?.rejected(method, reason, dry);
    return !dry;
  }

  /** Closes the admission window when it is due, publishes the new level, samples memory. */
  private maybeCloseWindow(now: number): void {
    const adm = this.controller;
    if (!adm.windowDue(now)) return;
    const eld = this.eventLoopDelay;
    const delayMs = eld !== undefined && eld.count > 0 ? eld.mean / 1e6 : 0;
    eld?.reset();
    let utilization: number | undefined;
    if (this.utilization !== undefined) {
      const u = performance.eventLoopUtilization();
      utilization = performance.eventLoopUtilization(u, this.utilization).utilization;
      this.utilization = u;
    }
    const q = this.queue;
    const report = adm.closeWindow(now, {
      utilization,
      eventLoopDelayMs: delayMs,
      queued: q?.size ?? 0,
      queuedByLevel: q?.byLevel,
      oldestQueuedMs: q?.oldestWaitMs(now) ?? 0,
      serviceMs: q?.serviceSample(),
    });
    // The limit changes rarely (a container resized), and reading it costs more than the rss.
    if (now - this.rssLimitAt >= MEMORY_LIMIT_REFRESH_MS) {
      this.rssLimit = memoryLimitBytes();
      this.rssLimitAt = now;
    }
    // Reading the resident set costs about 0.1 ms (/proc/self/stat): once a second, not each window.
    if (now - this.rssAt >= RSS_REFRESH_MS) {
      this.rss = process.memoryUsage.rss();
      this.rssAt = now;
    }
    this.memoryFull = memoryAboveLimit(this.settings.maxMemoryFraction, this.rss, this.rssLimit);
    if (!this.settings.dryRun) {
      this.advertised = adm.level === ADMIT_ALL ? undefined : adm.level;
      if (report.levelAfter < report.levelBefore) q?.refuseAbove(report.levelAfter);
    }
    if (this.settings.onWindow !== undefined) this.settings.onWindow(report);
    else if (this.settings.dryRun && report.levelAfter !== report.levelBefore) {
      this.log(
        `svrkit server: FastReject dry run: admission level ${report.levelBefore} -> ${report.levelAfter} ` +
          `(shortest wait ${report.minSojournMs.toFixed(1)} ms, event-loop utilization ${report.utilization.toFixed(2)}, ` +
          `delay ${report.eventLoopDelayMs.toFixed(1)} ms, ${report.arrived} calls)`,
      );
    }
  }
}

/** How often the memory limit is read again (ms). */
const MEMORY_LIMIT_REFRESH_MS = 10_000;

/** How often the resident set is read again (ms). */
const RSS_REFRESH_MS = 1000;

/**
 * What the process's resident set may use: the cgroup limit (`process.constrainedMemory`) when
 * there is one below the machine's memory, else the machine's memory.
 * @returns bytes.
 */
function memoryLimitBytes(): number {
  const constrained = process.constrainedMemory?.();
  const total = os.totalmem();
  return constrained !== undefined && constrained > 0 && constrained < total ? constrained : total;
}

/**
 * Whether memory is above `fraction` of what the process may use: the V8 heap against its limit,
 * or the resident set `rss` against `rssLimit`.
 * @param fraction - of each limit, 0..1.
 * @param rss - the resident set (bytes; `process.memoryUsage.rss()`).
 * @param rssLimit - what the resident set may use (bytes; `memoryLimitBytes`).
 * @returns `[used, limit]` in bytes of the first limit passed, or undefined when none is.
 */
function memoryAboveLimit(fraction: number, rss: number, rssLimit: number): [number, number] | undefined {
  const heap = v8.getHeapStatistics();
  if (heap.used_heap_size > fraction * heap.heap_size_limit) return [heap.used_heap_size, heap.heap_size_limit];
  if (rss > fraction * rssLimit) return [rss, rssLimit];
  return undefined;
}
