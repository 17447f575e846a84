/**
 * A client connection: one socket carrying many calls, unary and streaming, matched by call id
 * (the transport's `Connection` underneath). It detects a dead peer with keepalive PINGs: after
 * `intervalMs` without progress it sends a PING, and if no PONG comes within `timeoutMs` it closes
 * the connection (gRPC keepalive, gRFC A8). A GOAWAY stops new calls on it while those in flight
 * finish; a lost connection fails its calls with UNAVAILABLE (or the GOAWAY's status).
 */
import { Connection } from '../transport/connection.js';
import type { Transport } from '../transport/transport.js';
import { FrameKind, MAX_CONNECTION_TICKETS } from '../wire/frame.js';
import { decodeStatusHeader, encodeStatusHeader, encodeTicketHeader } from '../wire/header.js';
import { RpcError, Status } from '../wire/status.js';
import { errors } from '../errors.js';
import type { CallCarrier, UnaryAttempt } from './attempt.js';
import type { OutlierDetectionOptions } from './outlier.js';
import { parseAddress } from './resolver.js';
import type { TicketRef } from './ticket-ids.js';

/** Keepalive settings (gRPC's keepalive_time / keepalive_timeout). */
export interface KeepaliveOptions {
  /** Idle time without any frame from the server before a PING is sent (ms). Default 10000. */
  intervalMs?: number;
  /** How long to wait for the PONG before closing the connection (ms). Default 5000. */
  timeoutMs?: number;
}

/** Exponential backoff settings (gRPC names; the defaults are shorter than gRPC's 1 s / 120 s). */
export interface BackoffOptions {
  /** Delay after the first failure (ms). Default 100. */
  initialMs?: number;
  /** Upper bound of the delay (ms). Default 10000. */
  maxMs?: number;
  /** Growth per failure. Default 1.6 (gRPC's). */
  multiplier?: number;
  /** Relative random spread, 0..1. Default 0.2 (gRPC's). */
  jitter?: number;
}

/** Settings shared by a channel's connections. */
export interface ConnectionSettings {
  /** How connections are made (TCP, or in-process for tests). */
  transport: Transport;
  /** What the transport speaks: svrkit's protocol, or gRPC (`grpcClientTransport`). */
  protocol: 'svrkit' | 'grpc';
  maxFrameBytes: number;
  connectTimeoutMs: number;
  backoff: BackoffOptions;
  /** Keepalive PINGs; undefined turns them off. */
  keepalive: Required<KeepaliveOptions> | undefined;
  /** Outlier ejection thresholds; undefined turns ejection off. */
  outlier: Required<OutlierDetectionOptions> | undefined;
}

/**
 * A stream attempt as its connection sees it: where the frames for its call id go. The
 * connection forgets the stream before it calls `onStatus` or `onLost`.
 */
export interface StreamReceiver {
  /** A MESSAGE frame (views valid only during the call). */
  onMessage(header: Buffer, body: Buffer): void;
  /** A WINDOW frame. */
  onWindow(body: Buffer): void;
  /** The RESPONSE frame that ends the call: its decoded status header (`reason`: its `r`, when the server sent one). */
  onStatus(status: number, message: string | undefined, metadata: Readonly<Record<string, string>> | undefined, notProcessed: boolean, reason: string | undefined): void;
  /** The connection closed (or the response was unreadable) before the call ended. */
  onLost(error: RpcError): void;
}

/** Call id of keepalive PINGs (the GOAWAY PING uses 0xffffffff). */
const KEEPALIVE_PING_ID = 0xfffffffe;

type ConnState = 'connecting' | 'ready' | 'draining' | 'closed';

/** One client socket carrying many calls. */
export class ClientConnection implements CallCarrier {
  state: ConnState = 'connecting';
  /** True once the socket connected (a later loss is then not a connect failure). */
  established = false;
  /** Why the connection closed or failed to open, if it did. */
  error: Error | undefined;
  private readonly calls = new Map<number, UnaryAttempt>();
  /** The tickets defined on this connection by id, oldest first (see `defineTicket`). */
  private readonly tickets = new Map<number, TicketRef>();
  private readonly streams = new Map<number, StreamReceiver>();
  /** The status and reason the server gave in GOAWAY, if it gave one. */
  private goawayReason: RpcError | undefined;
  private nextCallId = 1;
  private readonly conn: Connection;
  private connectTimer: NodeJS.Timeout | undefined;
  private keepaliveTimer: NodeJS.Timeout | undefined;
  private pongTimer: NodeJS.Timeout | undefined;
  /** Bytes read and bytes the kernel took, at the last keepalive check (progress means alive). */
  private seenRead = 0;
  private seenSent = 0;
  /** True once any frame arrived: the server really speaks (a peer that accepts and closes does not). */
  healthy = false;
  /** This connection as a pick result (made once, so that picking allocates nothing). */
  readonly picked: { readonly type: 'connection'; readonly connection: ClientConnection } = Object.freeze({ type: 'connection', connection: this });

  /**
   * @param address - `host:port` to connect to.
   * @param settings - frame limit, connect timeout, keepalive.
   * @param onChange - called when the connection becomes ready or closes.
   * @param onResult - called with the status of every response, whether the server refused it
   *   unprocessed (`np`), and the admission level it advertised (`al`; undefined: admits all).
   */
  constructor(
    readonly address: string,
    private readonly settings: ConnectionSettings,
    private readonly onChange: (c: ClientConnection) => void,
    private readonly onResult: (status: number, notProcessed: boolean, admissionLevel: number | undefined) => void = () => {},
  ) {
    const { host, port } = parseAddress(address);
    const socket = settings.transport.connect(host, port);
    this.conn = new Connection(
      socket,
      { maxFrameBytes: settings.maxFrameBytes, pauseReadsWhileBlocked: false },
      {
        onFrame: (kind, callId, header, body) => this.onFrame(kind, callId, header, body),
        onOversized: (kind, callId, size) => {
          const stream = this.streams.get(callId);
          if (stream !== undefined) {
            this.streams.delete(callId);
            this.conn.send(FrameKind.CANCEL, callId, encodeStatusHeader(Status.RESOURCE_EXHAUSTED));
            stream.onLost(errors.RESPONSE_MESSAGE_TOO_LARGE(size, settings.maxFrameBytes, address));
            this.maybeCloseDrained();
            return;
          }
          const call = kind === FrameKind.RESPONSE ? this.calls.get(callId) : undefined;
          if (call === undefined) return;
          this.calls.delete(callId);
          call.fail(errors.RESPONSE_TOO_LARGE(size, settings.maxFrameBytes, address));
          this.maybeCloseDrained();
        },
        onClose: (err) => this.onClose(err),
      },
    );
    this.connectTimer = setTimeout(() => {
      this.conn.destroy(new Error(`connect to ${address} timed out after ${settings.connectTimeoutMs} ms`));
    }, settings.connectTimeoutMs);
    socket.once('connect', () => {
      clearTimeout(this.connectTimer);
      if (this.state !== 'connecting') return;
      this.state = 'ready';
      this.established = true;
      this.startKeepalive();
      this.onChange(this);
    });
  }

  /**
   * Keepalive: each interval, a connection that made no progress (no byte read, no byte taken by
   * the kernel) since the last check sends a PING. When the PONG is late, the connection is closed
   * only if still nothing moved: a large reply still arriving (the PONG queued behind it) or a large
   * request still leaving counts as alive. The last check runs after one more I/O turn, so a PONG
   * already waiting in the socket after an event-loop stall is read first.
   */
  private startKeepalive(): void {
    const ka = this.settings.keepalive;
    if (ka === undefined) return;
    const socket = this.conn.socket;
    const progressed = (): boolean => {
      const read = socket.bytesRead;
      const sent = socket.bytesWritten - socket.writableLength;
      const moved = read !== this.seenRead || sent !== this.seenSent;
      this.seenRead = read;
      this.seenSent = sent;
      return moved;
    };
    const onLate = (): void => {
      if (progressed()) {
        this.pongTimer = setTimeout(onLate, ka.timeoutMs);
        this.pongTimer.unref();
        return;
      }
      setImmediate(() => {
        if (this.pongTimer === undefined || this.state === 'closed') return; // the PONG came
        if (progressed()) {
          this.pongTimer = setTimeout(onLate, ka.timeoutMs);
          this.pongTimer.unref();
          return;
        }
        this.conn.destroy(new Error(`keepalive: no PONG from ${this.address} within ${ka.timeoutMs} ms`));
      });
    };
    this.keepaliveTimer = setInterval(() => {
      if (this.pongTimer !== undefined) return;
      if (progressed()) return;
      this.conn.send(FrameKind.PING, KEEPALIVE_PING_ID);
      this.pongTimer = setTimeout(onLate, ka.timeoutMs);
      this.pongTimer.unref();
    }, ka.intervalMs);
    this.keepaliveTimer.unref();
  }

  /** Calls in flight on this connection (unary and streams). */
  get activeCalls(): number {
    return this.calls.size + this.streams.size;
  }

  /** A free call id. */
  private allocateId(): number {
    let id = this.nextCallId;
    while (this.calls.has(id) || this.streams.has(id)) id = id === 0xffffffff ? 1 : id + 1;
    this.nextCallId = id === 0xffffffff ? 1 : id + 1;
    return id;
  }

  /**
   * Opens a stream: sends its REQUEST frame and routes the call's frames to `receiver` from now on.
   * @param receiver - the stream attempt.
   * @param header - encoded request header.
   * @param body - the request message (server-streaming), or undefined (client-streaming, bidi).
   * @returns the call id, or undefined when the frame is too large (nothing was sent).
   */
  openStream(receiver: StreamReceiver, header: Uint8Array, body: Uint8Array | undefined, ticket?: TicketRef): number | undefined {
    if (!this.conn.fits(header, body)) return undefined;
    const id = this.allocateId();
    this.streams.set(id, receiver);
    if (ticket !== undefined) this.defineTicket(ticket);
    this.conn.send(FrameKind.REQUEST, id, header, body);
    return id;
  }

  /** Whether a frame with this header and body fits the maximum frame size. */
  fits(header: Uint8Array | undefined, body: Uint8Array | undefined): boolean {
    return this.conn.fits(header, body);
  }

  /** Sends a frame of an open stream (MESSAGE, HALF_CLOSE, WINDOW). */
  sendFrame(kind: number, callId: number, header: Uint8Array | undefined, body: Uint8Array | undefined): void {
    this.conn.send(kind, callId, header, body);
  }

  /**
   * Forgets a stream; with `reason`, first tells the server (CANCEL).
   * @param callId - the stream's call id.
   * @param receiver - the stream (nothing happens when the id now belongs to another).
   * @param reason - why the client gives up, or undefined when the call already ended.
   */
  closeStream(callId: number, receiver: StreamReceiver, reason: RpcError | undefined): void {
    if (this.streams.get(callId) !== receiver) return;
    this.streams.delete(callId);
    if (reason !== undefined) this.conn.send(FrameKind.CANCEL, callId, encodeStatusHeader(reason.code));
    this.maybeCloseDrained();
  }

  /** Sends a call; the connection must be ready. */
  start(call: UnaryAttempt): void {
    if (!this.conn.fits(call.header, call.body)) {
      call.fail(errors.REQUEST_TOO_LARGE(call.body.length));
      return;
    }
    const id = this.allocateId();
    call.callId = id;
    call.carrier = this;
    this.calls.set(id, call);
    if (call.ticket !== undefined) this.defineTicket(call.ticket);
    this.conn.send(FrameKind.REQUEST, id, call.header, call.body);
  }

  /**
   * Sends a TICKET frame defining `ref` on this connection unless it is defined already; past
   * `MAX_CONNECTION_TICKETS` it first forgets the oldest definition, as the server does.
   */
  private defineTicket(ref: TicketRef): void {
    const defined = this.tickets.get(ref.id);
    if (defined === ref) return;
    // Another ticket under a reused id is defined again, as the newest (the server does the same).
    if (defined !== undefined) this.tickets.delete(ref.id);
    else if (this.tickets.size >= MAX_CONNECTION_TICKETS) this.tickets.delete(this.tickets.keys().next().value!);
    this.tickets.set(ref.id, ref);
    this.conn.send(FrameKind.TICKET, ref.id, encodeTicketHeader(ref.ticket));
  }

  /** @see CallCarrier.cancel */
  cancel(call: UnaryAttempt, reason: RpcError): void {
    if (this.calls.get(call.callId) !== call) return;
    this.calls.delete(call.callId);
    this.conn.send(FrameKind.CANCEL, call.callId, encodeStatusHeader(reason.code));
    this.maybeCloseDrained();
  }

  /** Stops new calls; closes once in-flight calls finish. */
  drain(): void {
    if (this.state === 'closed') return;
    if (this.state === 'connecting') {
      this.conn.destroy();
      return;
    }
    this.state = 'draining';
    this.maybeCloseDrained();
  }

  /** Closes at once, failing calls in flight with UNAVAILABLE. */
  destroy(reason?: Error): void {
    this.conn.destroy(reason);
  }

  private onFrame(kind: number, callId: number, header: Buffer, body: Buffer): void {
    this.healthy = true;
    if (kind === FrameKind.MESSAGE) {
      this.streams.get(callId)?.onMessage(header, body);
    } else if (kind === FrameKind.WINDOW) {
      this.streams.get(callId)?.onWindow(body);
    } else if (kind === FrameKind.RESPONSE) {
      const call = this.calls.get(callId);
      if (call === undefined) {
        const stream = this.streams.get(callId);
        if (stream !== undefined) this.streamEnded(callId, stream, header);
        return; // else cancelled or timed out already
      }
      this.calls.delete(callId);
      let h;
      try {
        h = decodeStatusHeader(header);
      } catch (err) {
        call.fail(errors.MALFORMED_RESPONSE_HEADER(this.address, err));
        this.maybeCloseDrained();
        return;
      }
      this.onResult(h.s, h.np === true, h.al);
      if (h.s === Status.OK) {
        let message: unknown;
        try {
          message = call.method.responseType.decode(body);
        } catch (err) {
          call.fail(errors.INVALID_RESPONSE_BODY(call.method.responseTypeName, err));
          this.maybeCloseDrained();
          return;
        }
        call.succeed(message);
      } else {
        // The server's status, as it sent it (the reason too): not one of ours to catalogue.
        call.fail(new RpcError(h.s, h.e ?? '', h.md ?? {}, { notProcessed: h.np === true, reason: h.r }));
      }
      this.maybeCloseDrained();
    } else if (kind === FrameKind.GOAWAY) {
      try {
        const h = decodeStatusHeader(header);
        if (h.s !== Status.OK) this.goawayReason = new RpcError(h.s, h.e ?? 'the server sent GOAWAY', {}, { reason: h.r });
      } catch {
        // A malformed reason still means GOAWAY.
      }
      if (this.state === 'ready') {
        this.state = 'draining';
        this.onChange(this);
      }
      this.maybeCloseDrained();
    } else if (kind === FrameKind.PING) {
      this.conn.send(FrameKind.PONG, callId);
    } else if (kind === FrameKind.PONG && callId === KEEPALIVE_PING_ID) {
      clearTimeout(this.pongTimer);
      this.pongTimer = undefined;
      this.progressBaseline();
    }
  }

  private streamEnded(callId: number, stream: StreamReceiver, header: Buffer): void {
    this.streams.delete(callId);
    let h;
    try {
      h = decodeStatusHeader(header);
    } catch (err) {
      stream.onLost(errors.MALFORMED_RESPONSE_HEADER(this.address, err));
      this.maybeCloseDrained();
      return;
    }
    // A refused stream (the connection's stream limit) says nothing of the instance's health or load.
    if (h.r !== 'TOO_MANY_STREAMS') this.onResult(h.s, h.np === true, h.al);
    stream.onStatus(h.s, h.e, h.md, h.np === true, h.r);
    this.maybeCloseDrained();
  }

  private progressBaseline(): void {
    const socket = this.conn.socket;
    this.seenRead = socket.bytesRead;
    this.seenSent = socket.bytesWritten - socket.writableLength;
  }

  private maybeCloseDrained(): void {
    if (this.state === 'draining' && this.calls.size === 0 && this.streams.size === 0) this.conn.end();
  }

  private onClose(err: Error | undefined): void {
    clearTimeout(this.connectTimer);
    clearInterval(this.keepaliveTimer);
    clearTimeout(this.pongTimer);
    const wasConnecting = this.state === 'connecting';
    this.state = 'closed';
    this.error = err ?? (wasConnecting ? new Error(`connection to ${this.address} closed before it was established`) : undefined);
    if (this.calls.size > 0 || this.streams.size > 0) {
      const goaway = this.goawayReason;
      const address = this.address;
      // The server's GOAWAY, when it gave a status, says more than the bare close: its calls end
      // with that status and reason (the server's error, not one of ours to catalogue).
      const lost = (method?: string): RpcError =>
        goaway !== undefined
          ? new RpcError(goaway.code, `connection closed by the server: ${goaway.message} (${address}${method === undefined ? '' : `, calling ${method}`})`, {}, { reason: goaway.reason })
          : err === undefined
            ? this.healthy
              ? errors.CONNECTION_CLOSED(address, method)
              : errors.CONNECTION_CLOSED_SILENT(address, method)
            : errors.CONNECTION_LOST.with({ cause: err }, err, address, method);
      const calls = [...this.calls.values()];
      const streams = [...this.streams.values()];
      this.calls.clear();
      this.streams.clear();
      // A lost connection with calls on it is one failure of the instance (not one per call).
      if (goaway === undefined) this.onResult(Status.UNAVAILABLE, false, undefined);
      for (const c of calls) c.fail(lost(c.method.path));
      for (const st of streams) st.onLost(lost());
    }
    this.onChange(this);
  }
}

