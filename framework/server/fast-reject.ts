/**
 * The server's admission stage: FastReject (DAGOR, phxrpc), the I/O around the pure
 * `AdmissionController` (overload/admission.ts). It feeds the controller each call's priority
 * level and queueing time, closes its windows (on arrivals, and every 250 ms so that an idle
 * server recovers), measures event-loop delay as a backstop signal, publishes the admission level
 * clients see in responses, and refuses calls above it (RESOURCE_EXHAUSTED, not processed) before
 * their bodies are decoded. In dry-run mode it decides and reports, and refuses nothing.
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { errors } from '../errors.js';
import { ADMIT_ALL, AdmissionController, type AdmissionOptions, type WindowReport } from '../overload/admission.js';
import { priorityLevel } from '../overload/priority.js';
import type { RejectReason, ServerObserver } from './observer.js';
import type { ServerConnection } from './server-connection.js';

/** The FastReject settings this stage reads (the rest are the controller's). */
export interface FastRejectSettings extends AdmissionOptions {
  /** Decide and report, but refuse nothing. */
  readonly dryRun: boolean;
  /** Calls in flight beyond this are refused whatever their priority. */
  readonly maxInflight: number;
  /** Called with each closed window; default: log level changes in dry-run mode. */
  readonly onWindow: ((report: WindowReport) => void) | undefined;
}

/** FastReject for one server; see the module comment. */
export class FastReject {
  private readonly controller: AdmissionController;
  private eventLoopDelay: IntervalHistogram | undefined;
  private windowTimer: NodeJS.Timeout | undefined;
  /** The admission level sent to clients: undefined while admitting everything (and always in dry-run). */
  private advertised: number | undefined;

  /**
   * @param settings - thresholds and the server's own settings.
   * @param now - the server's clock (epoch ms).
   * @param log - where dry-run level changes go.
   * @param observer - receives refusals (metrics).
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

  /** Starts the event-loop delay monitor and the window timer (when the server starts listening). */
  start(): void {
    this.eventLoopDelay = monitorEventLoopDelay({ resolution: 10 });
    this.eventLoopDelay.enable();
    // Windows also close when no call arrives, so that an idle server's level recovers.
    this.windowTimer = setInterval(() => this.maybeCloseWindow(this.now()), 250);
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
   * @param inflight - calls the server is serving now.
   * @param business - business priority, 0..127; `user` - user priority, 0..127.
   * @param now - epoch ms.
   * @returns true when the call may go on.
   */
  admit(sc: ServerConnection<unknown>, callId: number, method: string, inflight: number, business: number, user: number, now: number): boolean {
    if (inflight >= this.settings.maxInflight) {
      if (this.refused(method, 'inflight')) {
        sc.refuse(callId, this.advertised, errors.OVERLOADED_INFLIGHT, inflight, this.settings.maxInflight);
        return false;
      }
    }
    const adm = this.controller;
    if (adm.windowDue(now)) this.maybeCloseWindow(now);
    const level = priorityLevel(business, user);
    if (!adm.arrive(level)) {
      if (this.refused(method, 'priority')) {
        sc.refuse(callId, this.advertised, errors.OVERLOADED_PRIORITY, level, adm.level);
        return false;
      }
    }
    return true;
  }

  /**
   * Records how long an admitted call queued before its handler started: the overload signal.
   * @param ms - frame arrival to handler start.
   */
  queued(ms: number): void {
    this.controller.queued(ms);
  }

  /** Reports a refusal; true unless in dry-run mode. */
  private refused(method: string, reason: RejectReason): boolean {
    const dry = this.settings.dryRun;
    this.observer?.rejected(method, reason, dry);
    return !dry;
  }

  /** Closes the admission window when it is due, and publishes the new level. */
  private maybeCloseWindow(now: number): void {
    const adm = this.controller;
    if (!adm.windowDue(now)) return;
    const eld = this.eventLoopDelay;
    const delayMs = eld !== undefined && eld.count > 0 ? eld.mean / 1e6 : 0;
    eld?.reset();
    const report = adm.closeWindow(now, delayMs);
    if (!this.settings.dryRun) this.advertised = adm.level === ADMIT_ALL ? undefined : adm.level;
    if (this.settings.onWindow !== undefined) this.settings.onWindow(report);
    else if (this.settings.dryRun && report.levelAfter !== report.levelBefore) {
      this.log(`svrkit server: FastReject dry run: admission level ${report.levelBefore} -> ${report.levelAfter} (mean queueing ${report.meanQueueMs.toFixed(1)} ms, event-loop delay ${report.eventLoopDelayMs.toFixed(1)} ms, ${report.arrived} calls)`);
    }
  }
}
