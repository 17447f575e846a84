/**
 * One outbound unary call and its attempts: the single state machine behind retries and hedging,
 * after grpc-js's `RetryingCall` (gRFC A6). The call is in one of three modes:
 *
 * - `retry`: one attempt at a time; after a failure, `decideRetry` (retry.ts) says whether and
 *   when the next one goes;
 * - `hedge`: the first attempt, then another every `hedgingDelayMs` while none has answered (up
 *   to maxAttempts); after a failure, the same `decideRetry` says whether the next goes at once,
 *   after a pushback delay, never (pushback "stop" or local shedding: the call waits for the
 *   attempts already sent), or the call fails (a fatal status);
 * - `committed`: an attempt succeeded, or the call ended: nothing more is sent.
 *
 * The call owns what every attempt shares: its promise, its one deadline, the caller's signal
 * and the parent call's cancellation. Exactly one outcome settles it; the rest find it done.
 */
import type { ServerCallContext } from '../context/call-context.js';
import type { DeadlineEntry, DeadlineList, DeadlineTimers } from '../context/deadline-timers.js';
import { linkCall, unlinkCall } from './call-links.js';
import { errors } from '../errors.js';
import type { MethodDefinition } from '../wire/definition.js';
import { RpcError, Status } from '../wire/status.js';
import type { CallCarrier, UnaryAttempt } from './attempt.js';
import type { ClientConnection } from './client-connection.js';
import type { QueuedAttempt, ServicePool } from './pool.js';
import type { HedgingPolicy, RetryDecision, RetryPolicy } from './retry.js';
import type { TicketRef } from './ticket-ids.js';

/** What a call asks of its channel. */
export interface CallDriver {
  /** The channel's deadline timers (on its clock). */
  readonly timers: DeadlineTimers;
  /** Sends an attempt: on a ready connection, into the pool's queue, or fails it at once. */
  dispatch(attempt: Attempt): void;
  /** Decides what follows a failed attempt (`decideRetry` with the channel's throttle, clock and randomness). */
  decide(call: RetryingCall, error: RpcError): RetryDecision;
  /** Re-encodes the request header of a later attempt with the time left. */
  reheader(call: RetryingCall): Uint8Array;
  /** An attempt after the first was sent (metrics). */
  retried(call: RetryingCall): void;
  /** An attempt was not sent for want of retry budget (metrics). */
  throttled(call: RetryingCall): void;
  /** Hedging: whether the retry budget allows another hedge now. */
  mayHedge(call: RetryingCall): boolean;
  /** The call succeeded (the retry throttle refills). */
  succeeded(call: RetryingCall): void;
  /** The call ended with `code` (metrics); set only when observed. */
  ended: ((call: RetryingCall, code: number) => void) | undefined;
}

/** One attempt of a call: what a connection carries and the pool queues. */
export class Attempt implements UnaryAttempt, QueuedAttempt {
  /** Set once this attempt ended (its call may go on). */
  done = false;
  /** The connection that carries it, once sent. */
  carrier: CallCarrier | undefined;
  /** Its call id on that connection. */
  callId = 0;

  /**
   * @param call - the call it belongs to.
   * @param header - its encoded request header (each attempt carries the time left).
   */
  constructor(
    readonly call: RetryingCall,
    readonly header: Uint8Array,
  ) {}

  /** The call's method (the connection decodes the reply with its response codec). */
  get method(): MethodDefinition {
    return this.call.method;
  }
  /** The call's encoded request message, the same for every attempt. */
  get body(): Uint8Array {
    return this.call.body;
  }
  /** The call's ticket (its header refers to it by id). */
  get ticket(): TicketRef | undefined {
    return this.call.ticket;
  }
  /** The call's sticky key for `consistent_hash`. */
  get hashKey(): string | undefined {
    return this.call.hashKey;
  }
  /** Addresses the call's earlier attempts used (the balancer avoids them when it can). */
  get tried(): readonly string[] | undefined {
    return this.call.tried;
  }
  /** The call's business priority, 0..127, when known (collaborative shedding). */
  get business(): number | undefined {
    return this.call.business;
  }
  /** The call's user priority, 0..127, when known. */
  get user(): number | undefined {
    return this.call.user;
  }

  /** QueuedAttempt.startOn: sends the attempt on `conn`. */
  startOn(conn: ClientConnection): void {
    if (this.done) return;
    conn.start(this);
    if (this.carrier !== undefined) this.call.sentTo(conn.address);
  }

  /** UnaryAttempt.succeed: the reply arrived. */
  succeed(value: unknown): void {
    if (this.done) return;
    this.done = true;
    this.call.attemptSucceeded(this, value);
  }

  /** UnaryAttempt.fail / QueuedAttempt.fail: the attempt failed; the call may go on. */
  fail(error: RpcError): void {
    if (this.done) return;
    this.done = true;
    const carrier = this.carrier as { address?: string } | undefined;
    this.carrier = undefined;
    this.call.attemptFailed(this, error, carrier?.address);
  }

  /** QueuedAttempt.abandon: the channel closed; the call fails without retrying. */
  abandon(error: RpcError): void {
    if (this.done) return;
    this.done = true;
    this.call.abandon(error);
  }

  /** Gives up on this attempt: tells the server (CANCEL) if it was sent. */
  cancel(reason: RpcError): void {
    if (this.done) return;
    this.done = true;
    const carrier = this.carrier;
    this.carrier = undefined;
    carrier?.cancel(this, reason);
  }
}

/** A unary call; see the module comment. */
export class RetryingCall implements DeadlineEntry {
  /** Settled once; later outcomes are ignored. */
  done = false;
  /** @see DeadlineEntry (links owned by the deadline timers). */
  deadlineList: DeadlineList | undefined = undefined;
  /** @see DeadlineEntry */
  deadlinePrev: DeadlineEntry | undefined = undefined;
  /** @see DeadlineEntry */
  deadlineNext: DeadlineEntry | undefined = undefined;
  /** The call's outcome. */
  readonly promise: Promise<unknown>;
  /** Attempts started so far (1 for the first). */
  attempts = 0;
  /** Addresses of its attempts that failed (retry) or were sent (hedging): later attempts prefer others. */
  tried: string[] | undefined;
  /** The sticky key for `consistent_hash`. */
  hashKey: string | undefined;
  /** The ticket its header refers to (`ti`), if any: each connection defines it before the first attempt it carries. */
  ticket: TicketRef | undefined;
  /** Business priority, 0..127, when known (collaborative shedding). */
  business: number | undefined;
  /** User priority, 0..127, when known. */
  user: number | undefined;
  /** Epoch ms the call started (set only when observed). */
  startedAt = 0;
  /** The pool its attempts go to (set by the channel). */
  pool!: ServicePool;
  /** Whether the method may run twice (retry mode retries processed calls only then). */
  idempotent = false;
  /** Hedge mode (the policy is a hedging policy); else retry mode. Committed is `done`. */
  readonly hedged: boolean;
  /** The attempt in flight (retry mode), or the first of those in flight (hedging: see `others`). */
  private current: Attempt | undefined;
  private others: Attempt[] | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** Hedging: no further attempt will be sent (pushback "stop", shedding, budget, maxAttempts). */
  private stopped = false;
  /** A next attempt is scheduled and not yet sent. */
  private launchPending = false;
  private lastError: RpcError | undefined;
  private resolveFn!: (value: unknown) => void;
  private rejectFn!: (error: RpcError) => void;
  /** Undoes the signal and parent links (call-links.ts). */
  private unlink: (() => void) | undefined;

  /**
   * @param method - the method called.
   * @param firstHeader - the first attempt's encoded request header (later attempts re-encode it with the time left).
   * @param body - the encoded request message (the same for every attempt).
   * @param deadline - absolute deadline, epoch ms (`Infinity` for none); one for every attempt.
   * @param target - the channel target, for error messages.
   * @param policy - the retry or hedging policy, or undefined for a single attempt.
   * @param driver - the channel.
   */
  constructor(
    readonly method: MethodDefinition,
    readonly firstHeader: Uint8Array,
    readonly body: Uint8Array,
    readonly deadline: number,
    readonly target: string,
    readonly policy: Readonly<Required<RetryPolicy>> | Readonly<Required<HedgingPolicy>> | undefined,
    private readonly driver: CallDriver,
  ) {
    this.hedged = policy !== undefined && 'hedgingDelayMs' in policy;
    this.promise = new Promise<unknown>((resolve, reject) => {
      this.resolveFn = resolve;
      this.rejectFn = reject;
    });
  }

  /**
   * Arms the deadline timer, the caller's signal and the parent's cancellation, then sends the
   * first attempt.
   * @param now - epoch ms.
   */
  start(now: number, signal: AbortSignal | undefined, parent: ServerCallContext | undefined): void {
    this.unlink = linkCall(this, this.driver.timers, now, signal, parent);
    if (!this.done) this.launch(this.firstHeader);
  }

  /** @see DeadlineEntry.onDeadline */
  onDeadline(): void {
    this.cancel(errors.DEADLINE_DURING_CALL(this.method.path, this.target));
  }

  /** Gives up on the call: cancels every attempt in flight (CANCEL frames) and fails it. */
  cancel(error: RpcError): void {
    if (this.done) return;
    if (this.current !== undefined) this.cancelAttempts(error);
    this.finish(error);
  }

  /** @internal An attempt was sent to `address`: in hedging mode, later hedges prefer others. */
  sentTo(address: string): void {
    if (this.hedged) (this.tried ??= []).push(address);
  }

  /** @internal Attempt.succeed. */
  attemptSucceeded(attempt: Attempt, value: unknown): void {
    if (this.done) return;
    this.forget(attempt);
    if (this.policy !== undefined) this.driver.succeeded(this);
    // Only hedged calls have other attempts in flight: make the error (a stack trace) only then.
    if (this.current !== undefined) this.cancelAttempts(errors.HEDGE_LOST());
    this.settle(Status.OK);
    this.resolveFn(value);
  }

  /** @internal Attempt.fail: decides what follows (see the module comment). */
  attemptFailed(attempt: Attempt, error: RpcError, address: string | undefined): void {
    if (this.done) return;
    this.forget(attempt);
    this.lastError = error;
    if (this.policy === undefined) {
      this.finish(error);
      return;
    }
    if (!this.hedged && address !== undefined) (this.tried ??= []).push(address);
    const decision = this.driver.decide(this, error);
    if (decision.retry) {
      if (!this.hedged || !this.stopped) {
        this.schedule(decision.delayMs);
        return;
      }
    } else {
      if (decision.throttled === true) this.driver.throttled(this);
      if (decision.fatal === true) {
        this.cancelAttempts(errors.HEDGE_FAILED(error.codeName));
        this.finish(error);
        return;
      }
      if (!this.hedged) {
        this.finish(error);
        return;
      }
      this.stopped = true;
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    // Hedging with no further attempt: wait for those in flight, or fail now if none is left.
    if (this.current === undefined && !this.launchPending) this.finish(this.lastError);
  }

  /** @internal The channel closed while an attempt was queued: cancels the others and fails the call, without retrying. */
  abandon(error: RpcError): void {
    if (this.done) return;
    if (this.current !== undefined) this.cancelAttempts(errors.HEDGE_CHANNEL_CLOSED());
    this.finish(error);
  }

  /** Ends the call with `error` (nothing is sent). */
  finish(error: RpcError): void {
    if (this.done) return;
    this.settle(error.code);
    this.rejectFn(error);
  }

  /** Sends an attempt. */
  private launch(header: Uint8Array): void {
    this.launchPending = false;
    if (this.policy !== undefined && this.attempts >= this.policy.maxAttempts) {
      // Every attempt allowed was sent: a hedged call waits for those in flight.
      if (this.current === undefined) this.finish(this.lastError ?? errors.HEDGE_FAILED('no attempt'));
      return;
    }
    const attempt = new Attempt(this, header);
    if (this.current === undefined) this.current = attempt;
    else (this.others ??= []).push(attempt);
    this.attempts++;
    if (this.attempts > 1) this.driver.retried(this);
    if (this.hedged && !this.stopped && this.attempts < this.policy!.maxAttempts) {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.hedge(), (this.policy as Readonly<Required<HedgingPolicy>>).hedgingDelayMs);
    }
    this.driver.dispatch(attempt);
  }

  /** Hedging: the hedging delay passed with no answer: another attempt, budget permitting. */
  private hedge(): void {
    this.timer = undefined;
    if (this.done || this.stopped) return;
    if (!this.driver.mayHedge(this)) {
      this.driver.throttled(this);
      return;
    }
    this.launch(this.driver.reheader(this));
  }

  /** The next attempt after `delayMs` (0: as soon as the current stack unwinds). */
  private schedule(delayMs: number): void {
    // Two attempts failing in one turn (a lost connection carried both) decide alike: one launch.
    if (this.launchPending) return;
    this.launchPending = true;
    clearTimeout(this.timer);
    const send = (): void => {
      this.timer = undefined;
      this.launchPending = false;
      if (!this.done && !(this.hedged && this.stopped)) this.launch(this.driver.reheader(this));
    };
    if (delayMs <= 0) {
      this.timer = undefined;
      queueMicrotask(send);
    } else this.timer = setTimeout(send, delayMs);
  }

  /** Removes an ended attempt from those in flight. */
  private forget(attempt: Attempt): void {
    if (this.current === attempt) {
      this.current = this.others?.shift();
    } else if (this.others !== undefined) {
      const i = this.others.indexOf(attempt);
      if (i >= 0) this.others.splice(i, 1);
    }
  }

  private cancelAttempts(reason: RpcError): void {
    const current = this.current;
    const others = this.others;
    this.current = undefined;
    this.others = undefined;
    current?.cancel(reason);
    if (others !== undefined) for (const a of others) a.cancel(reason);
  }

  private settle(code: number): void {
    this.done = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    unlinkCall(this, this.driver.timers, this.unlink);
    this.driver.ended?.(this, code);
  }
}
