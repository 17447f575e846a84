/**
 * The server's dispatch stage: it turns an admitted, decoded request into a running call. It
 * makes the call's context, arms its deadline, runs the handler inside the context
 * (AsyncLocalStorage), hands streaming calls to the stream stage (stream-call.ts), and ends
 * every call exactly once: with the handler's response, its error, or a cancel, deadline,
 * disconnect or shutdown. It counts calls in flight and reports each end to the observer.
 *
 * The hot path stays synchronous up to the handler's own promise, the only one per unary call.
 */
import { callStorage, type CallContext } from '../context/call-context.js';
import { DeadlineTimers } from '../context/deadline-timers.js';
import { errors } from '../errors.js';
import { encodeMessage } from '../wire/encode.js';
import { FrameKind } from '../wire/frame.js';
import { decodeStatusHeader, encodeStatusHeader } from '../wire/header.js';
import { RpcError, Status, toRpcError, type Metadata } from '../wire/status.js';
import { InboundCall } from './inbound-call.js';
import type { ServerObserver } from './observer.js';
import type { DecodedHeader } from './request-decoder.js';
import { errorHeader, type ServerConnection } from './server-connection.js';
import { oneMessage, ServerStream, type StreamHost } from './stream-call.js';

/** Where the server reports handler failures that are not `RpcError`s. */
export interface ServerLogger {
  /** Called with a one-line description and the thrown value. */
  error(message: string, error?: unknown): void;
}

/** What the dispatch stage needs from the server. */
export interface DispatchSettings {
  /** Largest frame sent (bytes), for the error of a response too large to send. */
  readonly maxFrameBytes: number;
  /** Receives unexpected handler errors. */
  readonly logger: ServerLogger;
  /** Receives call ends and stream messages (metrics). */
  readonly observer: ServerObserver | undefined;
  /** The server's clock, epoch ms. */
  readonly now: () => number;
  /** The admission level to advertise in responses (undefined: none). */
  readonly admissionLevel: () => number | undefined;
}

const EMPTY_METADATA: Readonly<Metadata> = Object.freeze({});
const EMPTY_KEYS: readonly string[] = Object.freeze([]);

/** The dispatch stage; see the module comment. */
export class Dispatcher {
  private readonly timers: DeadlineTimers;
  private readonly streamHost: StreamHost;
  /** Calls being served right now. */
  inflight = 0;

  /** @param settings - see `DispatchSettings`. */
  constructor(private readonly settings: DispatchSettings) {
    this.timers = new DeadlineTimers(settings.now);
    const observer = settings.observer;
    this.streamHost = {
      endStream: (call, error, byHandler) => this.endStream(call as InboundCall, error, byHandler),
      logError: (m, e) => settings.logger.error(m, e),
      counted: observer?.streamMessage === undefined ? undefined : (method, direction) => observer.streamMessage!(method, direction),
    };
  }

  /**
   * Starts an admitted call.
   * @param sc - its connection; `callId` - its id there.
   * @param decoded - what the decoding stage found; `request` - the decoded request (undefined
   *   for client-streaming and bidi).
   * @param arrival - epoch ms its frame arrived; `now` - epoch ms.
   */
  start(sc: ServerConnection<InboundCall>, callId: number, decoded: DecodedHeader, request: unknown, arrival: number, now: number): void {
    const h = decoded.header;
    const d = h.d;
    if (d !== undefined && d <= 0) {
      sc.refuse(callId, this.settings.admissionLevel(), errors.DEADLINE_BEFORE_START);
      return;
    }
    const registered = decoded.registered;
    const call = new InboundCall(
      registered.def.path, // the name the method is registered under: the same string as h.m, held once
      h.md ?? EMPTY_METADATA,
      h.pm ?? EMPTY_KEYS,
      d === undefined ? Infinity : now - decoded.waited + d,
      h.t,
      arrival,
      sc,
      callId,
      registered,
      this,
    );
    call.businessPriority = decoded.business;
    call.userPriority = decoded.user;
    call.caller = h.c;
    call.ticket = decoded.ticket;
    call.auth = decoded.auth;
    call.peerIdentity = sc.peerIdentity;
    if (d !== undefined) this.timers.add(call, now);
    sc.calls.set(callId, call);
    this.inflight++;
    if (this.settings.observer !== undefined) {
      call.startedAt = now;
      call.queuedMs = decoded.queued;
    }
    if (registered.kind !== 0) {
      this.startStream(call, request);
      return;
    }
    let result: Promise<unknown>;
    try {
      result = callStorage.run(call, registered.handler, request, call);
      if (typeof (result as Promise<unknown> | undefined)?.then !== 'function') result = Promise.resolve(result);
    } catch (err) {
      result = Promise.reject(err);
    }
    // One reaction, no `.catch` after it: `settle` catches what answering throws itself, which
    // saves a promise and a microtask per call.
    result.then(
      (response) => this.settle(call, response, true),
      (err) => this.settle(call, err, false),
    );
  }

  /**
   * A unary handler settled: answers the call with `value`, its response (`ok`) or its error. An
   * exception while answering is logged: no promise is left to reject.
   */
  private settle(call: InboundCall, value: unknown, ok: boolean): void {
    try {
      if (ok) this.respond(call, value);
      else this.fail(call, value);
    } catch (err) {
      this.settings.logger.error(`svrkit server: ${call.method}: failed to answer (trace ${call.traceId})`, err);
    }
  }

  /**
   * A frame of a call in flight: MESSAGE, WINDOW, HALF_CLOSE (to its stream stage) or CANCEL.
   * Frames for calls that ended, or that are not streams, are ignored.
   */
  onCallFrame(sc: ServerConnection<InboundCall>, kind: number, callId: number, header: Buffer, body: Buffer): void {
    const call = sc.calls.get(callId);
    if (call === undefined) return;
    switch (kind) {
      case FrameKind.MESSAGE:
        call.stream?.onMessage(body);
        return;
      case FrameKind.WINDOW:
        call.stream?.onWindow(body);
        return;
      case FrameKind.HALF_CLOSE:
        call.stream?.onHalfClose();
        return;
      case FrameKind.CANCEL:
        this.endCall(call, cancelReason(header), false);
        return;
    }
  }

  /** A request MESSAGE over the maximum size was skipped: its call fails with RESOURCE_EXHAUSTED. */
  onOversizedMessage(sc: ServerConnection<InboundCall>, callId: number, size: number): void {
    const call = sc.calls.get(callId);
    if (call !== undefined) this.endCall(call, errors.REQUEST_MESSAGE_TOO_LARGE(size, this.settings.maxFrameBytes), true, true);
  }

  /**
   * Ends a call with `error` (answered, not processed further), e.g. a stream whose message did
   * not fit the server's buffer budget. Nothing happens when no such call runs.
   */
  failCall(sc: ServerConnection<InboundCall>, callId: number, error: RpcError): void {
    const call = sc.calls.get(callId);
    if (call !== undefined) this.endCall(call, error, true, true);
  }

  /**
   * Ends every call on a connection without answering (the connection closed, or shutdown's
   * grace ran out): their signals fire with `reason`.
   */
  endAll(sc: ServerConnection<InboundCall>, reason: RpcError): void {
    if (sc.calls.size === 0) return;
    for (const call of sc.calls.toArray()) this.endCall(call, reason, false);
  }

  /** CallOwner.now: the server's clock (epoch ms). */
  now(): number {
    return this.settings.now();
  }

  /**
   * Ends a call that did not produce a response: deadline, cancel, disconnect or handler error.
   * Fires the call's signal (except for handler errors, which the handler already knows about).
   * @param sendResponse - answer the client with `error` (false when it cannot hear or already gave up).
   * @param abort - fire the call's signal (default: for CANCELLED and DEADLINE_EXCEEDED): true when
   *   the call ends from outside while its handler may still run (a stream's bad request message,
   *   an oversized one), false for the handler's own failure, which it already knows about.
   */
  endCall(call: InboundCall, error: RpcError, sendResponse: boolean, abort = error.code === Status.CANCELLED || error.code === Status.DEADLINE_EXCEEDED): void {
    if (call.done) return;
    this.finish(call);
    call.stream?.terminate(error);
    if (this.settings.observer !== undefined) this.observe(call, error.code);
    if (abort) call.abort(error);
    if (!sendResponse) {
      this.released(call);
      return;
    }
    const md = call.peekResponseMetadata();
    this.sendError(call, error, md === undefined ? error.metadata : { ...md, ...error.metadata });
  }

  /** Starts a streaming call's handler and hands its output to the stream stage. */
  private startStream(call: InboundCall, request: unknown): void {
    const registered = call.registered;
    const streamed = registered.kind >= 2;
    const stream = new ServerStream(call, call.callId, call.conn.conn, registered.def, this.streamHost, streamed);
    call.stream = stream;
    call.conn.streams++;
    let output: AsyncIterable<unknown> | Promise<unknown>;
    try {
      if (registered.streamHandler !== undefined) {
        output = callStorage.run(call, registered.streamHandler, streamed ? stream.requests : oneMessage(request), call);
      } else {
        output = callStorage.run(call, registered.handler as (r: unknown, c: CallContext) => AsyncIterable<unknown> | Promise<unknown>, streamed ? stream.requests : request, call);
      }
    } catch (err) {
      output = Promise.reject(err);
    }
    stream.run(output);
  }

  /** StreamHost.endStream: a streaming call ended (its handler finished or failed). */
  private endStream(call: InboundCall, error: RpcError | undefined, byHandler: boolean): void {
    if (call.done) return;
    if (error !== undefined) {
      this.endCall(call, error, true, !byHandler || error.code === Status.CANCELLED || error.code === Status.DEADLINE_EXCEEDED);
      return;
    }
    this.finish(call);
    if (this.settings.observer !== undefined) this.observe(call, Status.OK);
    const header = this.statusHeader(call, Status.OK, undefined, call.peekResponseMetadata());
    if (header === undefined) return;
    call.conn.conn.send(FrameKind.RESPONSE, call.callId, header);
    this.released(call);
  }

  private respond(call: InboundCall, response: unknown): void {
    if (call.done) return;
    this.finish(call);
    const def = call.registered.def;
    const observer = this.settings.observer;
    let body: Uint8Array;
    try {
      body = encodeMessage(def.responseType, def.responseTypeName, response);
    } catch (err) {
      this.settings.logger.error(`svrkit server: ${call.method}: cannot encode the ${def.responseTypeName} the handler returned (trace ${call.traceId})`, err);
      if (observer !== undefined) this.observe(call, Status.INTERNAL);
      this.sendError(call, errors.RESPONSE_NOT_ENCODABLE.with({ cause: err }, err), undefined);
      return;
    }
    const header = this.statusHeader(call, Status.OK, undefined, call.peekResponseMetadata());
    if (header === undefined) {
      if (observer !== undefined) this.observe(call, Status.INTERNAL);
      return;
    }
    const conn = call.conn.conn;
    if (!conn.fits(header, body)) {
      if (observer !== undefined) this.observe(call, Status.RESOURCE_EXHAUSTED);
      this.sendError(call, errors.RESPONSE_TOO_LARGE(body.length, this.settings.maxFrameBytes), undefined);
      return;
    }
    if (observer !== undefined) this.observe(call, Status.OK);
    call.conn.noteReply(header.length + body.length);
    conn.send(FrameKind.RESPONSE, call.callId, header, body);
    this.released(call);
  }

  private fail(call: InboundCall, err: unknown): void {
    if (call.done) return;
    if (!(err instanceof RpcError)) {
      this.settings.logger.error(`svrkit server: ${call.method} failed (trace ${call.traceId})`, err);
    }
    this.endCall(call, toRpcError(err), true);
  }

  /**
   * Sends a status-only response for a failed call (code, message, reason; never `notProcessed`,
   * which only refusals before any handler set), then releases the call's connection.
   */
  private sendError(call: InboundCall, error: RpcError, metadata: Metadata | undefined): void {
    const header = this.statusHeader(call, error.code, error.message, metadata, error.reason);
    if (header === undefined) return;
    call.conn.conn.send(FrameKind.RESPONSE, call.callId, header);
    this.released(call);
  }

  /**
   * Encodes a response header. Metadata a handler set that cannot be encoded (not a map of
   * strings) is the handler's bug: the call gets INTERNAL without it, and the server logs it.
   * @returns the header, or undefined when the INTERNAL reply was sent instead.
   */
  private statusHeader(call: InboundCall, status: Status, message: string | undefined, metadata: Metadata | undefined, reason?: string): Uint8Array | undefined {
    try {
      if (metadata !== undefined && !isStringMap(metadata)) throw new Error('metadata values must be strings');
      return encodeStatusHeader(status, message, metadata, false, this.settings.admissionLevel(), reason);
    } catch (err) {
      this.settings.logger.error(`svrkit server: ${call.method}: response metadata cannot be sent (trace ${call.traceId})`, err);
      call.conn.conn.send(FrameKind.RESPONSE, call.callId, errorHeader(undefined, errors.INVALID_RESPONSE_METADATA, err));
      this.released(call);
      return undefined;
    }
  }

  private observe(call: InboundCall, code: number): void {
    this.settings.observer!.callEnded(call.method, code, (this.settings.now() - call.startedAt) / 1000, call.queuedMs / 1000);
  }

  private finish(call: InboundCall): void {
    call.done = true;
    if (call.deadlineList !== undefined) this.timers.remove(call);
    call.conn.calls.delete(call.callId);
    if (call.stream !== undefined) call.conn.streams--;
    this.inflight--;
  }

  /** After a call's last frame is queued: a draining connection may now close. */
  private released(call: InboundCall): void {
    if (call.conn.draining) call.conn.endIfDrained();
    call.conn.callEnded();
  }
}

function isStringMap(o: object): boolean {
  for (const k in o) if (typeof (o as Record<string, unknown>)[k] !== 'string') return false;
  return true;
}

/**
 * Why the client gave up, from a CANCEL frame's header: a client whose own deadline timer fired
 * says DEADLINE_EXCEEDED, so the server reports the same whichever side's timer fires first.
 */
function cancelReason(header: Buffer): RpcError {
  let code: number = Status.CANCELLED;
  try {
    if (header.length > 0) code = decodeStatusHeader(header).s;
  } catch {
    // A malformed reason still cancels.
  }
  return code === Status.DEADLINE_EXCEEDED ? errors.DEADLINE_CLIENT_GAVE_UP() : errors.CANCELLED_BY_CLIENT();
}
