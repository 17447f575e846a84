/**
 * What a channel reports about its calls, for metrics (`framework/metrics/`) or any other
 * observer. Every method is called synchronously on the hot path: keep implementations cheap.
 */

/** Why a client did not send a call or an attempt. */
export type ThrottleReason =
  /** The retry token bucket held back a retry. */
  | 'retry_budget'
  /** The retry token bucket held back a hedged attempt. */
  | 'hedge_budget'
  /** The SRE adaptive throttle rejected the call locally. */
  | 'adaptive'
  /** Collaborative shedding: every instance's admission level is below the call's priority level. */
  | 'shed';

/** Receives a channel's call events. */
export interface ClientObserver {
  /**
   * A call ended (after all its attempts).
   * @param method - full method name `pkg.Service/Method`.
   * @param code - the status code it ended with (0 for OK).
   * @param seconds - from the call's start to its end.
   */
  callEnded(method: string, code: number, seconds: number): void;
  /** A retry (or a hedged attempt after the first) was sent. */
  retried(method: string): void;
  /** A call or an attempt was not sent, for `reason`. */
  throttled(method: string, reason: ThrottleReason): void;
  /**
   * A message of a streaming call was sent or received (optional; streams are not counted without it).
   * @param method - full method name `pkg.Service/Method`.
   * @param direction - `'sent'` or `'received'`, from this side's point of view.
   */
  streamMessage?(method: string, direction: 'sent' | 'received'): void;
}
