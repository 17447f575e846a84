/**
 * Outlier ejection for one instance, after gRPC's outlier detection (gRFC A50) and Envoy's
 * consecutive-errors detector: an instance whose calls fail `consecutiveFailures` times in a row
 * is ejected (the balancer skips it) for a backoff period that doubles with each ejection in a row,
 * up to `maxEjectionMs`. When the period ends the instance is probed (the channel sends it a
 * `svrkit.Health/Check`); it returns to the pool only if the probe succeeds, else it is ejected
 * again for longer. Pure: time comes in as `now` (ms of a monotonic clock; the channel passes `performance.now()`).
 */

/** Outlier-ejection settings. */
export interface OutlierDetectionOptions {
  /** Failures in a row that eject an instance. Default 5 (Envoy's consecutive_5xx). 0 turns ejection off. */
  consecutiveFailures?: number;
  /** First ejection period (ms). Default 1000. */
  baseEjectionMs?: number;
  /** Longest ejection period (ms). Default 30000. */
  maxEjectionMs?: number;
  /**
   * Largest share of a service's instances ejected at once, 0..100 (Envoy's max_ejection_percent).
   * At least one instance may always be ejected. Default 50.
   */
  maxEjectionPercent?: number;
}

/** The defaults, filled in. */
export const DEFAULT_OUTLIER_DETECTION: Required<OutlierDetectionOptions> = Object.freeze({
  consecutiveFailures: 5,
  baseEjectionMs: 1000,
  maxEjectionMs: 30_000,
  maxEjectionPercent: 50,
});

/** Where an instance stands. */
export type OutlierState = 'ok' | 'ejected' | 'probing';

/** The ejection state machine of one instance; see the module comment. */
export class OutlierTracker {
  /** Current state. */
  state: OutlierState = 'ok';
  /** Failures in a row since the last success. */
  failures = 0;
  /** Ejections in a row (reset once the instance has stayed healthy for `maxEjectionMs`). */
  ejections = 0;
  /** While ejected: when the period ends (ms of the caller's clock; the channel uses `performance.now()`). */
  ejectedUntil = 0;
  private okSince = 0;

  /** @param options - thresholds; see `OutlierDetectionOptions`. */
  constructor(private readonly options: Required<OutlierDetectionOptions> = DEFAULT_OUTLIER_DETECTION) {}

  /** True when calls may go to the instance. */
  get usable(): boolean {
    return this.state === 'ok';
  }

  /** Records a call that succeeded (or failed in a way that says nothing about the instance). */
  onSuccess(now: number): void {
    this.failures = 0;
    if (this.state === 'ok' && this.ejections > 0 && now - this.okSince >= this.options.maxEjectionMs) this.ejections = 0;
  }

  /**
   * Records a failed call.
   * @param now - ms of a monotonic clock (the channel uses `performance.now()`).
   * @param mayEject - false when ejecting would exceed `maxEjectionPercent` (the caller knows the pool).
   * @returns true when this failure ejected the instance.
   */
  onFailure(now: number, mayEject: boolean): boolean {
    if (this.state !== 'ok') return false;
    this.failures++;
    const threshold = this.options.consecutiveFailures;
    if (threshold <= 0 || this.failures < threshold || !mayEject) return false;
    this.eject(now);
    return true;
  }

  /**
   * Moves an ejected instance whose period has ended to `probing`.
   * @returns true when the caller should now send the probe.
   */
  probeDue(now: number): boolean {
    if (this.state !== 'ejected' || now < this.ejectedUntil) return false;
    this.state = 'probing';
    return true;
  }

  /** The probe's outcome: success returns the instance to the pool; failure ejects it again, for longer. */
  onProbeResult(ok: boolean, now: number): void {
    if (this.state !== 'probing') return;
    if (ok) {
      this.state = 'ok';
      this.failures = 0;
      this.okSince = now;
    } else {
      this.eject(now);
    }
  }

  /** The length of the next ejection (ms): `base * 2^(ejections)`, capped at `maxEjectionMs`. */
  nextEjectionMs(): number {
    return Math.min(this.options.baseEjectionMs * Math.pow(2, this.ejections), this.options.maxEjectionMs);
  }

  private eject(now: number): void {
    this.ejectedUntil = now + this.nextEjectionMs();
    this.ejections++;
    this.state = 'ejected';
    this.failures = 0;
  }
}

/**
 * Whether one more of `total` instances may be ejected when `ejected` already are.
 * @returns true when `ejected + 1 <= max(1, floor(total * percent / 100))`.
 */
export function mayEjectAnother(ejected: number, total: number, percent: number): boolean {
  return ejected + 1 <= Math.max(1, Math.floor((total * percent) / 100));
}
