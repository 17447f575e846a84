/**
 * Client-side adaptive throttling, after the Google SRE book ("Handling Overload", chapter 21):
 * each client keeps, over the last `windowMs`, the number of requests it made and the number the
 * backend accepted, and rejects a new request locally with probability
 *
 *     max(0, (requests - K * accepts) / (requests + 1))
 *
 * so that once the backend rejects most calls the client stops sending most of them, and the
 * backend spends nothing on them. K = 2 lets through twice what the backend accepts. Pure: time
 * and randomness come in as arguments.
 */
import { configErrors } from '../errors.js';

/** Settings of the adaptive throttle. */
export interface AdaptiveThrottleOptions {
  /** The multiplier K. Default 2 (the SRE book's). Larger is more lenient. */
  k?: number;
  /** How much history counts (ms). Default 60000. */
  windowMs?: number;
  /** Buckets the window is kept in (resolution = windowMs / buckets). Default 12. */
  buckets?: number;
}

/** Counts over a sliding window in buckets; see the module comment. */
export class AdaptiveThrottle {
  private readonly k: number;
  private readonly bucketMs: number;
  private readonly requests: Float64Array;
  private readonly accepts: Float64Array;
  private current = 0;
  private currentStart: number;
  private totalRequests = 0;
  private totalAccepts = 0;

  /**
   * @param nowMs - epoch ms when counting starts.
   * @param options - K, window and buckets.
   * @throws ConfigError INVALID_OPTION when K < 1, the window is not > 0 or buckets is not an integer >= 1.
   */
  constructor(nowMs: number, options: AdaptiveThrottleOptions = {}) {
    this.k = options.k ?? 2;
    const windowMs = options.windowMs ?? 60_000;
    const buckets = options.buckets ?? 12;
    if (!(this.k >= 1)) throw configErrors.INVALID_OPTION('adaptiveThrottle.k', '>= 1', this.k);
    if (!(windowMs > 0)) throw configErrors.INVALID_OPTION('adaptiveThrottle.windowMs', '> 0 ms', windowMs);
    if (!Number.isInteger(buckets) || buckets < 1) throw configErrors.INVALID_OPTION('adaptiveThrottle.buckets', 'an integer >= 1', buckets);
    this.bucketMs = windowMs / buckets;
    this.requests = new Float64Array(buckets);
    this.accepts = new Float64Array(buckets);
    this.currentStart = nowMs;
  }

  /** The current probability of rejecting a request locally, 0..1. */
  rejectProbability(nowMs: number): number {
    this.advance(nowMs);
    const p = (this.totalRequests - this.k * this.totalAccepts) / (this.totalRequests + 1);
    return p > 0 ? p : 0;
  }

  /**
   * Decides whether to send a request; a request rejected here is counted as a request (the SRE
   * book counts every request the application attempted), one allowed is counted by `sent`.
   * @param random - source of uniform numbers in [0, 1); called only when the probability is above 0.
   * @returns true to send, false to reject it locally.
   */
  allow(nowMs: number, random: () => number): boolean {
    const p = this.rejectProbability(nowMs);
    if (p > 0 && random() < p) {
      this.requests[this.current]!++;
      this.totalRequests++;
      return false;
    }
    return true;
  }

  /**
   * Counts a request that completed (a response came back), in the current bucket (buckets
   * advance on `allow`, which comes with the time). Requests are counted when they complete, not
   * when they are sent, so that calls still in flight do not look like rejections.
   * @param accepted - false for an overload rejection, true for any other response.
   */
  completed(accepted: boolean): void {
    this.requests[this.current]!++;
    this.totalRequests++;
    if (accepted) {
      this.accepts[this.current]!++;
      this.totalAccepts++;
    }
  }

  private advance(nowMs: number): void {
    if (nowMs - this.currentStart < this.bucketMs) return;
    const n = this.requests.length;
    let steps = Math.floor((nowMs - this.currentStart) / this.bucketMs);
    if (steps > n) steps = n;
    for (let i = 0; i < steps; i++) {
      this.current = (this.current + 1) % n;
      this.totalRequests -= this.requests[this.current]!;
      this.totalAccepts -= this.accepts[this.current]!;
      this.requests[this.current] = 0;
      this.accepts[this.current] = 0;
    }
    this.currentStart = steps === n ? nowMs : this.currentStart + steps * this.bucketMs;
  }
}
