/**
 * One outbound unary call in flight: its encoded frame, its promise and everything that can end it
 * (response, deadline, cancellation, parent cancellation, connection loss). Exactly one of those
 * settles it; the rest find it done.
 */
import type { ServerCallContext } from '../context/call-context.js';
import { DeadlineTimers, type DeadlineEntry, type DeadlineList } from '../context/deadline-timers.js';
import type { MethodDefinition } from '../wire/definition.js';
import { RpcError, Status } from '../wire/status.js';
import { errors } from '../errors.js';
import type { CallCarrier, UnaryAttempt } from './attempt.js';
import type { ServicePool } from './pool.js';
import type { ClientConnection } from './client-connection.js';
import type { RetryPolicy } from './retry.js';

/**
 * Gets a say before an attempt's outcome settles the call: the channel uses it to count
 * successes and failures for retry throttling and to start another attempt. One per method
 * (it also carries what a retry needs: the pool, the policy, idempotency).
 */
export interface AttemptObserver {
  /** The pool the call's attempts go to. */
  readonly pool: ServicePool;
  /** The retry policy. */
  readonly retry: Readonly<Required<RetryPolicy>>;
  /** The method may be retried after it may have reached a handler. */
  readonly idempotent: boolean;
  /** The attempt succeeded. */
  onSuccess(call: PendingCall): void;
  /**
   * The attempt failed with `error`.
   * @returns true when the observer started (or scheduled) another attempt; the call stays open.
   */
  onFailure(call: PendingCall, error: RpcError): boolean;
}

/** Deadline timers of every outbound call in this process. */
const timers = new DeadlineTimers();

/** An outbound call; see the module comment. */
export class PendingCall implements DeadlineEntry, UnaryAttempt {
  /** Settled once; later outcomes are ignored. */
  done = false;
  /** The connection that carries the call, once sent. */
  carrier: CallCarrier | undefined;
  /** The call id on that connection. */
  callId = 0;
  deadlineList: DeadlineList | undefined = undefined;
  deadlinePrev: DeadlineEntry | undefined = undefined;
  deadlineNext: DeadlineEntry | undefined = undefined;
  private unlinkParent: (() => void) | undefined;
  private signal: AbortSignal | undefined;
  private onSignalAbort: (() => void) | undefined;
  private resolveFn!: (value: unknown) => void;
  private rejectFn!: (error: RpcError) => void;
  /** The call's outcome. */
  readonly promise: Promise<unknown>;
  /** Retry bookkeeping, when the call may be retried (see AttemptObserver). */
  observer: AttemptObserver | undefined;
  /** Attempts started so far (1 for the first). */
  attempts = 1;
  /** Addresses of the failed attempts so far, once the call is retried (a retry prefers another instance). */
  tried: string[] | undefined;
  /** The call's sticky key for `consistent_hash` balancing. */
  hashKey: string | undefined;
  /** Business and user priority, when the caller knows them (for collaborative shedding). */
  business: number | undefined;
  user: number | undefined;
  /** Epoch ms the call started (set only when observed). */
  startedAt = 0;
  /** QueuedAttempt.startOn: sends the call on `conn`. */
  startOn(conn: ClientConnection): void {
    conn.start(this);
  }

  /** Called once when the call settles, with its status (metrics); set only when observed. */
  onEnd: ((call: PendingCall, code: number) => void) | undefined;
  /** A retry waiting for its backoff to pass. */
  retryTimer: NodeJS.Timeout | undefined;

  /**
   * @param method - the method being called.
   * @param header - the encoded request header (replaced per attempt: it carries the time left).
   * @param body - the encoded request message.
   * @param deadline - absolute deadline, epoch ms (`Infinity` for none).
   * @param target - the channel target, for error messages.
   */
  constructor(
    readonly method: MethodDefinition,
    public header: Uint8Array,
    readonly body: Uint8Array,
    readonly deadline: number,
    readonly target: string,
  ) {
    this.promise = new Promise<unknown>((resolve, reject) => {
      this.resolveFn = resolve;
      this.rejectFn = reject;
    });
  }

  /** Arms the deadline timer, the caller's signal and the parent call's cancellation. */
  arm(now: number, signal: AbortSignal | undefined, parent: ServerCallContext | undefined): void {
    if (this.deadline !== Infinity) timers.add(this, now);
    if (signal !== undefined) {
      if (signal.aborted) {
        this.cancel(cancelledBy(signal));
        return;
      }
      this.signal = signal;
      this.onSignalAbort = () => this.cancel(cancelledBy(signal));
      signal.addEventListener('abort', this.onSignalAbort, { once: true });
    }
    if (parent !== undefined) {
      this.unlinkParent = parent.onAbort((reason) => this.cancel(parentEnded(reason)));
    }
  }

  /** @see DeadlineEntry.onDeadline */
  onDeadline(): void {
    this.cancel(errors.DEADLINE_DURING_CALL(this.method.path, this.target));
  }

  /** Completes the call with a response message. */
  succeed(value: unknown): void {
    if (this.done) return;
    this.observer?.onSuccess(this);
    this.cleanup();
    this.onEnd?.(this, Status.OK);
    this.resolveFn(value);
  }

  /**
   * Ends the current attempt with an error, without telling the server (it already knows or
   * cannot hear). The observer may start another attempt; otherwise the call fails.
   */
  fail(error: RpcError): void {
    if (this.done) return;
    // The observer reads `carrier` (the failed attempt's connection) and clears it when it retries.
    if (this.observer !== undefined && this.observer.onFailure(this, error)) return;
    this.carrier = undefined;
    this.cleanup();
    this.onEnd?.(this, error.code);
    this.rejectFn(error);
  }

  /** QueuedAttempt.abandon: fails the call without retrying it. */
  abandon(error: RpcError): void {
    this.observer = undefined;
    this.fail(error);
  }

  /** Gives up on the call: tells the server (CANCEL frame) if it was sent, and fails it. */
  cancel(error: RpcError): void {
    if (this.done) return;
    const carrier = this.carrier;
    this.cleanup();
    carrier?.cancel(this, error);
    this.onEnd?.(this, error.code);
    this.rejectFn(error);
  }

  private cleanup(): void {
    this.done = true;
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    if (this.deadlineList !== undefined) timers.remove(this);
    if (this.onSignalAbort !== undefined) this.signal!.removeEventListener('abort', this.onSignalAbort);
    this.unlinkParent?.();
  }
}


/** The error a call ends with when the caller's signal fires: its reason when that is an RpcError, else CANCELLED_BY_CALLER. */
function cancelledBy(signal: AbortSignal): RpcError {
  const r: unknown = signal.reason;
  if (r instanceof RpcError) return r;
  return r instanceof Error ? errors.CANCELLED_BY_CALLER.with({ cause: r }, r.message) : errors.CANCELLED_BY_CALLER();
}

/** The error a call made inside an inbound call ends with when that call is aborted (cancelled or out of time). */
function parentEnded(reason: RpcError): RpcError {
  return reason.code === Status.DEADLINE_EXCEEDED ? errors.PARENT_DEADLINE_EXCEEDED(reason.message) : errors.PARENT_CANCELLED(reason.message);
}
