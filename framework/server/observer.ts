/**
 * What a server reports about its calls, for metrics (`framework/metrics/`) or any other
 * observer. Every method is called synchronously on the hot path: keep implementations cheap
 * (no allocation per call, no I/O).
 */

/** Why a server refused a call before any handler saw it. */
export type RejectReason =
  /** FastReject: the call's priority level is above the admission level. */
  | 'priority'
  /** The fixed in-flight cap (`overload.maxInflight`) was reached. */
  | 'inflight'
  /** The memory backstop: memory is above `overload.maxMemoryFraction` of its limit. */
  | 'memory'
  /** Admitted, but waited in the server's queue longer than FastReject allows while it sheds load. */
  | 'queue'
  /** The client had seen GOAWAY. */
  | 'goaway'
  /** The call waited in queues past its deadline before its handler could start (DEADLINE_EXCEEDED). */
  | 'expired'
  /** A large request frame did not fit the server-wide buffer budget (`ServerOptions.bufferBudgetBytes`). */
  | 'buffers';

/** Receives a server's call events. */
export interface ServerObserver {
  /**
   * A call that reached its handler ended (response sent, or ended by deadline, cancel or error).
   * @param method - full method name `pkg.Service/Method`.
   * @param code - the status code it ended with.
   * @param seconds - handler start to end.
   * @param queueSeconds - frame arrival to handler start (the FastReject signal).
   */
  callEnded(method: string, code: number, seconds: number, queueSeconds: number): void;
  /**
   * A call was refused unprocessed (RESOURCE_EXHAUSTED or UNAVAILABLE, marked `np`), or would
   * have been in dry-run mode (`dryRun` true: it was served anyway).
   */
  rejected(method: string, reason: RejectReason, dryRun: boolean): void;
  /**
   * A message of a streaming call was sent or received (optional; streams are not counted without it).
   * @param method - full method name `pkg.Service/Method`.
   * @param direction - `'sent'` or `'received'`, from this side's point of view.
   */
  streamMessage?(method: string, direction: 'sent' | 'received'): void;
}
