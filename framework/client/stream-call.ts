/**
 * A streaming call on the client (server-streaming, client-streaming, bidi): the stage between
 * the channel (which prepares the header and picks connections) and the connection (which routes
 * the call's frames here).
 *
 * - Responses arrive as MESSAGE frames into an `InboundMessages` queue, the async iterable the
 *   caller reads; taking a message grants credit back to the server (flow control), so a slow
 *   reader pauses the server's generator instead of growing a buffer.
 * - Requests (client-streaming, bidi) are pulled from the caller's iterable only while the server
 *   has granted credit, encoded and sent as MESSAGE frames; its end sends HALF_CLOSE.
 * - One deadline covers the whole stream. The caller's signal, the parent call's cancellation and
 *   leaving the `for await` loop early cancel it (CANCEL frame).
 * - Retries (gRFC A6): until the call is committed, a failed attempt may be retried on another
 *   connection, replaying the request messages sent so far. The call commits when the first
 *   response message arrives, or when the replay buffer passes `REPLAY_BUFFER_BYTES`; after that,
 *   a failure ends the call.
 */
import type { ServerCallContext } from '../context/call-context.js';
import type { DeadlineEntry, DeadlineList, DeadlineTimers } from '../context/deadline-timers.js';
import { linkCall, unlinkCall } from './call-links.js';
import { SendCredit } from '../transport/flow-control.js';
import { InboundMessages } from '../transport/inbound-messages.js';
import type { MethodDefinition } from '../wire/definition.js';
import { decodeWindow, encodeWindow, FrameKind } from '../wire/frame.js';
import { decodeStatusHeader } from '../wire/header.js';
import { encodeComplete } from '../wire/encode.js';
import { RpcError, Status, type Metadata } from '../wire/status.js';
import { errors } from '../errors.js';
import type { ClientConnection, StreamReceiver } from './client-connection.js';
import type { ServicePool } from './pool.js';
import type { TicketRef } from './ticket-ids.js';

/** Request bytes kept for replay before the call commits (gRPC's per-RPC retry buffer is 256 KiB; ours is smaller). */
export const REPLAY_BUFFER_BYTES = 64 * 1024;

/** What each buffered message counts beyond its bytes (about a frame's prefix). */
const REPLAY_OVERHEAD_BYTES = 16;

/** What a stream asks of its channel. */
export interface StreamDriver {
  /** The channel's deadline timers (on its clock). */
  readonly timers: DeadlineTimers;
  /** Finds a connection for the stream's next attempt: calls `startOn`, queues it, or calls `fail`. */
  dispatch(stream: ClientStream): void;
  /**
   * An attempt failed before the call committed.
   * @returns the delay before the next attempt (ms), or undefined when the call must fail.
   */
  retryDelay(stream: ClientStream, error: RpcError): number | undefined;
  /** The call ended with `code` (metrics, throttles). */
  ended(stream: ClientStream, code: number): void;
  /** A message was sent or received (metrics). */
  counted?(method: string, direction: 'sent' | 'received'): void;
}

/** Per-call options a stream reads. */
export interface StreamCallOptions {
  /** Called once with the response metadata sent with the first message (or with the status when no message came). */
  onHeader?: (metadata: Readonly<Metadata>) => void;
  /** Called once with the trailers sent with an OK status. */
  onTrailer?: (metadata: Readonly<Metadata>) => void;
}

/** One streaming call; see the module comment. It is the async iterable of responses the caller reads. */
export class ClientStream implements StreamReceiver, DeadlineEntry, AsyncIterable<unknown> {
  /** Set once the call ended; later outcomes are ignored. */
  done = false;
  /** @see DeadlineEntry (links owned by the deadline timers). */
  deadlineList: DeadlineList | undefined = undefined;
  /** @see DeadlineEntry */
  deadlinePrev: DeadlineEntry | undefined = undefined;
  /** @see DeadlineEntry */
  deadlineNext: DeadlineEntry | undefined = undefined;
  /** Attempts started so far (1 for the first). */
  attempts = 1;
  /** Addresses of failed attempts (a retry prefers another instance). */
  tried: string[] | undefined;
  /** The sticky key for `consistent_hash`. */
  hashKey: string | undefined;
  /** Business priority, 0..127, when known (collaborative shedding). */
  business: number | undefined;
  /** User priority, 0..127, when known. */
  user: number | undefined;
  /** Epoch ms the call started. */
  startedAt = 0;
  /** The pool its attempts go to (set by the channel; retries go to the same pool). */
  pool!: ServicePool;
  private readonly inbound: InboundMessages<unknown>;
  private conn: ClientConnection | undefined;
  private callId = 0;
  private credit: SendCredit | undefined;
  private committed = false;
  private replay: Uint8Array[] | undefined;
  private replayBytes = 0;
  private sourceDone = false;
  private pumping = false;
  private sendWaiter: (() => void) | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private headerSeen = false;
  /** Undoes the signal and parent links (call-links.ts). */
  private unlink: (() => void) | undefined;
  /** The ticket the header refers to (`ti`), if any: the connection defines it first. */
  ticket: TicketRef | undefined;

  /**
   * @param method - the method called.
   * @param header - the encoded request header (replaced per attempt: it carries the time left).
   * @param body - the request message of a server-streaming call; undefined when requests stream.
   * @param source - the caller's request messages (client-streaming, bidi).
   * @param deadline - absolute deadline, epoch ms (`Infinity` for none).
   * @param target - the channel target, for error messages.
   * @param driver - the channel.
   * @param options - header and trailer callbacks.
   */
  constructor(
    readonly method: MethodDefinition,
    public header: Uint8Array,
    private readonly body: Uint8Array | undefined,
    private readonly source: AsyncIterable<unknown> | Iterable<unknown> | undefined,
    readonly deadline: number,
    readonly target: string,
    private readonly driver: StreamDriver,
    private readonly options: StreamCallOptions,
  ) {
    this.inbound = new InboundMessages<unknown>({
      grant: (messages, bytes) => {
        if (this.conn !== undefined) this.conn.sendFrame(FrameKind.WINDOW, this.callId, undefined, encodeWindow(messages, bytes));
      },
      abandoned: () => this.cancel(errors.STREAM_ABANDONED()),
    });
    if (source !== undefined) this.replay = [];
  }

  /** Opens the stream; the channel sets it, and the first request for an iterator runs it. */
  onFirstRead: (() => void) | undefined;

  /** The responses. The first call opens the stream (a stream nobody reads is never sent). */
  [Symbol.asyncIterator](): AsyncIterator<unknown> {
    const open = this.onFirstRead;
    if (open !== undefined) {
      this.onFirstRead = undefined;
      open();
    }
    return this.inbound;
  }

  /** Arms the deadline timer, the caller's signal and the parent call's cancellation. */
  arm(now: number, signal: AbortSignal | undefined, parent: ServerCallContext | undefined): void {
    this.unlink = linkCall(this, this.driver.timers, now, signal, parent);
  }

  /** @see DeadlineEntry.onDeadline */
  onDeadline(): void {
    this.cancel(errors.DEADLINE_DURING_CALL(this.method.path, this.target));
  }

  /** QueuedAttempt.startOn: starts this attempt on `conn`. */
  startOn(conn: ClientConnection): void {
    if (this.done) return;
    const id = conn.openStream(this, this.header, this.body, this.ticket);
    if (id === undefined) {
      this.finish(errors.REQUEST_TOO_LARGE(this.body?.length ?? 0));
      return;
    }
    this.conn = conn;
    this.callId = id;
    const credit = (this.credit = new SendCredit());
    if (this.replay !== undefined) {
      for (const m of this.replay) {
        credit.spend(m.length);
        conn.sendFrame(FrameKind.MESSAGE, id, undefined, m);
      }
      // Messages taken from the caller between attempts may have filled the buffer: they are sent now.
      if (this.replayBytes > REPLAY_BUFFER_BYTES) this.commit();
    }
    if (this.source !== undefined) {
      if (this.sourceDone) conn.sendFrame(FrameKind.HALF_CLOSE, id, undefined, undefined);
      else if (!this.pumping) void this.pump();
      else this.wakeSender();
    }
  }

  /** QueuedAttempt.fail: this attempt failed without reaching the server (or was refused). */
  fail(error: RpcError): void {
    if (this.done) return;
    this.detach(undefined);
    if (!this.committed) {
      const delay = this.driver.retryDelay(this, error);
      if (delay !== undefined) {
        this.attempts++;
        const retry = (): void => {
          this.retryTimer = undefined;
          if (!this.done) this.driver.dispatch(this);
        };
        if (delay <= 0) queueMicrotask(retry);
        else this.retryTimer = setTimeout(retry, delay);
        return;
      }
    }
    this.finish(error);
  }

  /** QueuedAttempt.abandon: fails the call without retrying. */
  abandon(error: RpcError): void {
    this.finish(error);
  }

  /** Gives up on the call: tells the server (CANCEL) if an attempt is open, and fails the iterable. */
  cancel(error: RpcError): void {
    if (this.done) return;
    this.detach(error);
    this.finish(error);
  }

  /** @see StreamReceiver.onMessage */
  onMessage(header: Buffer, body: Buffer): void {
    if (this.done) return;
    if (!this.committed) this.commit();
    if (!this.headerSeen) {
      this.headerSeen = true;
      if (this.options.onHeader !== undefined) {
        let md: Metadata = {};
        try {
          md = header.length > 0 ? (decodeStatusHeader(header).md ?? {}) : {};
        } catch {
          // Unreadable headers are treated as none.
        }
        this.options.onHeader(md);
      }
    }
    let message: unknown;
    try {
      message = this.method.responseType.decode(body);
    } catch (err) {
      this.cancel(errors.INVALID_RESPONSE_MESSAGE(this.method.responseTypeName, err));
      return;
    }
    this.driver.counted?.(this.method.path, 'received');
    if (!this.inbound.push(message, body.length)) {
      const q = this.inbound.queued;
      this.cancel(errors.STREAM_WINDOW_EXCEEDED(q.messages, q.bytes));
    }
  }

  /** @see StreamReceiver.onWindow */
  onWindow(body: Buffer): void {
    const w = decodeWindow(body);
    if (w === undefined || this.credit === undefined) return;
    this.credit.grant(w.messages, w.bytes);
    this.wakeSender();
  }

  /** @see StreamReceiver.onStatus */
  onStatus(status: number, message: string | undefined, metadata: Readonly<Metadata> | undefined, notProcessed: boolean, reason: string | undefined): void {
    if (this.done) return;
    this.leftAttempt(status !== Status.OK);
    this.credit?.close();
    this.credit = undefined;
    if (status === Status.OK) {
      if (!this.headerSeen) {
        this.headerSeen = true;
        this.options.onHeader?.(metadata ?? {});
      }
      this.options.onTrailer?.(metadata ?? {});
      this.finish(undefined);
      return;
    }
    // The server's status, as it sent it (the reason too): not one of ours to catalogue.
    this.fail(new RpcError(status, message ?? '', metadata ?? {}, { notProcessed, reason }));
  }

  /** @see StreamReceiver.onLost */
  onLost(error: RpcError): void {
    if (this.done) return;
    this.leftAttempt(true);
    this.fail(error);
  }

  /**
   * The connection ended the current attempt (it already forgot the stream).
   * @param failed - the attempt failed: a retry should prefer another instance.
   */
  private leftAttempt(failed: boolean): void {
    const conn = this.conn;
    this.conn = undefined;
    if (failed && conn !== undefined) (this.tried ??= []).push(conn.address);
  }

  private commit(): void {
    this.committed = true;
    this.replay = undefined;
    this.replayBytes = 0;
  }

  /** Leaves the current attempt's connection; with `reason`, tells the server. */
  private detach(reason: RpcError | undefined): void {
    const conn = this.conn;
    if (conn === undefined) return;
    const addr = conn.address;
    this.conn = undefined;
    this.credit?.close();
    this.credit = undefined;
    conn.closeStream(this.callId, this, reason);
    if (reason === undefined) (this.tried ??= []).push(addr);
  }

  /** Ends the call: the iterable ends (or throws `error`), the request pump stops. */
  private finish(error: RpcError | undefined): void {
    if (this.done) return;
    this.done = true;
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    unlinkCall(this, this.driver.timers, this.unlink);
    this.replay = undefined;
    this.wakeSender();
    this.inbound.end(error);
    this.driver.ended(this, error === undefined ? Status.OK : error.code);
  }

  private wakeSender(): void {
    const w = this.sendWaiter;
    if (w === undefined) return;
    this.sendWaiter = undefined;
    w();
  }

  /** Resolves once the current attempt may send (it has credit), or the call ended. */
  private sendable(): Promise<void> | undefined {
    if (this.done || (this.credit !== undefined && this.credit.available && this.conn !== undefined)) return undefined;
    return new Promise<void>((resolve) => {
      this.sendWaiter = resolve;
    });
  }

  /** Pulls request messages from the caller's iterable while there is credit, and sends them. */
  private async pump(): Promise<void> {
    this.pumping = true;
    const src = this.source!;
    const it: AsyncIterator<unknown> | Iterator<unknown> =
      typeof (src as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function'
        ? (src as AsyncIterable<unknown>)[Symbol.asyncIterator]()
        : (src as Iterable<unknown>)[Symbol.iterator]();
    const type = this.method.requestType;
    try {
      for (;;) {
        const wait = this.sendable();
        if (wait !== undefined) await wait;
        if (this.done) break;
        const r = await it.next();
        if (this.done) break;
        if (r.done === true) {
          this.sourceDone = true;
          if (this.conn !== undefined) this.conn.sendFrame(FrameKind.HALF_CLOSE, this.callId, undefined, undefined);
          return;
        }
        let bytes: Uint8Array;
        try {
          bytes = encodeComplete(type, type.fromPartial(r.value));
        } catch (err) {
          this.cancel(errors.REQUEST_NOT_ENCODABLE.with({ cause: err }, this.method.requestTypeName, err));
          break;
        }
        if (!this.committed) {
          this.replay!.push(bytes);
          // Counted with a frame's overhead, so that empty messages fill the buffer too.
          this.replayBytes += bytes.length + REPLAY_OVERHEAD_BYTES;
          // Between attempts the message waits in the buffer for the next one, which commits.
          if (this.replayBytes > REPLAY_BUFFER_BYTES && this.conn !== undefined) this.commit();
        }
        const conn = this.conn;
        if (conn !== undefined) {
          if (!conn.fits(undefined, bytes)) {
            this.cancel(errors.REQUEST_MESSAGE_TOO_LARGE(bytes.length));
            break;
          }
          this.credit!.spend(bytes.length);
          conn.sendFrame(FrameKind.MESSAGE, this.callId, undefined, bytes);
          this.driver.counted?.(this.method.path, 'sent');
        }
      }
    } catch (err) {
      this.cancel(err instanceof RpcError ? err : errors.REQUEST_STREAM_FAILED.with({ cause: err }, err));
    } finally {
      this.pumping = false;
    }
    // The call ended before the requests did: let the caller's generator run its finally blocks.
    if (!this.sourceDone && it.return !== undefined) {
      try {
        void Promise.resolve(it.return()).catch(() => {});
      } catch {
        // A running generator cannot be returned; it ends on its own.
      }
    }
  }
}
