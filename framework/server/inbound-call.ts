/**
 * An inbound call as the server's stages share it: the public call context handlers see, plus
 * the bookkeeping of the call (its connection and id, its method, its deadline-list links, its
 * stream stage), and the registered methods it is dispatched to.
 */
import { ServerCallContext, type CallContext } from '../context/call-context.js';
import type { DeadlineEntry, DeadlineList } from '../context/deadline-timers.js';
import { errors } from '../errors.js';
import type { MethodDefinition, UnaryHandler } from '../wire/definition.js';
import type { Metadata, RpcError } from '../wire/status.js';
import type { ServerConnection } from './server-connection.js';
import type { ServerStream, ServerStreamHandler } from './stream-call.js';

/** A server-side unary handler: the request and the call's context in, the response out. */
export type ServerHandler = UnaryHandler<any, any, CallContext>;

/** A method as the server dispatches it. */
export interface RegisteredMethod {
  /** The method's definition (codecs, names, options). */
  readonly def: MethodDefinition;
  /** The method's kind as a wire code (`METHOD_KIND_CODE`). */
  readonly kind: number;
  /** Unary calls, and streaming calls when no stream interceptor is set: the implementation's own method (unary: wrapped in the interceptors). */
  readonly handler: ServerHandler;
  /** Streaming calls when stream interceptors are set: the implementation in stream form, wrapped. */
  readonly streamHandler: ServerStreamHandler | undefined;
}

/** Who ends calls (the dispatch stage): a call's deadline timer ends it through this. */
export interface CallOwner {
  /** The server's clock, epoch ms (`ServerOptions.now`). */
  now(): number;
  /** Ends a call without a response from its handler; with `sendResponse`, the client gets `error`. */
  endCall(call: InboundCall, error: RpcError, sendResponse: boolean): void;
}

/** An inbound call: its public context plus the server's bookkeeping. */
export class InboundCall extends ServerCallContext implements DeadlineEntry {
  /** @see DeadlineEntry (links owned by the deadline timers). */
  deadlineList: DeadlineList | undefined = undefined;
  /** @see DeadlineEntry */
  deadlinePrev: DeadlineEntry | undefined = undefined;
  /** @see DeadlineEntry */
  deadlineNext: DeadlineEntry | undefined = undefined;
  /** Set once the call ended; later outcomes are ignored. */
  done = false;
  /** Epoch ms the handler started (set only when an observer wants durations). */
  startedAt = 0;
  /** How long the call queued before its handler started (ms; set only when observed). */
  queuedMs = 0;
  /** The stream stage of a streaming call. */
  stream: ServerStream | undefined = undefined;

  /**
   * @param method - full method name.
   * @param metadata - request metadata; `propagate` - keys marked for propagation.
   * @param deadline - absolute deadline, epoch ms (`Infinity` for none).
   * @param traceId - the chain's trace id, or undefined (made on first read).
   * @param arrivalTime - epoch ms the request frame arrived.
   * @param conn - the connection it arrived on; `callId` - its id there.
   * @param registered - the method it calls.
   * @param owner - the stage that ends it.
   */
  constructor(
    method: string,
    metadata: Readonly<Metadata>,
    propagate: readonly string[],
    deadline: number,
    traceId: string | undefined,
    arrivalTime: number,
    readonly conn: ServerConnection<InboundCall>,
    readonly callId: number,
    readonly registered: RegisteredMethod,
    private readonly owner: CallOwner,
  ) {
    super(method, metadata, propagate, deadline, traceId, arrivalTime);
  }

  /** @see CallContext.peer: the connection's, read on first use. */
  get peer(): string {
    return this.conn.conn.peer;
  }

  /** Milliseconds left until the deadline, on the server's clock (`Infinity` without one, 0 once past). */
  override timeRemaining(): number {
    if (this.deadline === Infinity) return Infinity;
    return Math.max(0, this.deadline - this.owner.now());
  }

  /** @see DeadlineEntry.onDeadline */
  onDeadline(): void {
    this.owner.endCall(this, errors.DEADLINE_WHILE_SERVING(this.method), true);
  }
}
