/**
 * gRPC clients on a svrkit server: one HTTP/2 session (node:http2) seen by the server as one
 * svrkit connection. Each gRPC call becomes the svrkit frames a svrkit client would have sent
 * (REQUEST, MESSAGE, HALF_CLOSE, CANCEL, WINDOW), and the server's frames become gRPC's HTTP/2
 * responses (headers, length-prefixed messages, trailers with `grpc-status`; Trailers-Only for an
 * immediate error). So everything the server does for a call (context, deadline, interceptors,
 * FastReject, tickets, metrics, flow control) it does for a gRPC call too, unchanged: the bridge
 * is a transport, as Envoy's gRPC bridge is a filter.
 *
 * Mapping (grpc/grpc doc/PROTOCOL-HTTP2.md):
 * - `:path /pkg.Svc/Method` is the method; `grpc-timeout` the deadline; headers that are not the
 *   protocol's are metadata (`-bin` values pass as their base64 text); `authorization: Bearer <t>`
 *   is the call's ticket.
 * - A content-type other than `application/grpc[+proto]` is answered HTTP 415.
 * - RST_STREAM from the client cancels the call (CANCEL frame).
 * - Flow control: request messages go to the server as its credit allows (the HTTP/2 stream is
 *   paused meanwhile); response messages are granted back to the server as HTTP/2 takes them, so a
 *   gRPC client that does not read pauses the server's handler as a svrkit client would.
 */
import { EventEmitter } from 'node:events';
import type { IncomingHttpHeaders, ServerHttp2Session, ServerHttp2Stream } from 'node:http2';
import { constants as h2 } from 'node:http2';
import type { ByteStream } from './transport.js';
import { ReceiveCredit, SendCredit } from './flow-control.js';
import { decodeWindow, encodeWindow, FrameDecoder, FrameEncoder, FrameKind, type FrameSink } from '../wire/frame.js';
import { decodeStatusHeader, encodeRequestHeader, encodeStatusHeader, type RequestHeader } from '../wire/header.js';
import {
  encodeGrpcMessage,
  frameGrpcMessage,
  GrpcFramingError,
  GrpcMessageDecoder,
  isGrpcContentType,
  isGrpcMetadataKey,
  parseGrpcTimeout,
} from '../wire/grpc-codec.js';
import { Status, type Metadata } from '../wire/status.js';

/**
 * The kind of a method the server serves (0 unary, 1 server-streaming, 2 client-streaming,
 * 3 bidi), by its full name `pkg.Svc/Method`; undefined when the server has no such method.
 */
export type MethodKindLookup = (method: string) => number | undefined;

/** Options of a bridge. */
export interface GrpcBridgeOptions {
  /** The largest request message accepted (bytes). */
  maxMessageBytes: number;
  /** The server's methods' kinds. */
  kindOf: MethodKindLookup;
}

/** One gRPC call on the bridge. */
interface BridgedCall {
  readonly id: number;
  readonly stream: ServerHttp2Stream;
  /** 0 unary, 1 server-streaming, 2 client-streaming, 3 bidi (unknown methods: 2, sent at once). */
  readonly kind: number;
  /** The server's credit for request messages (client-streaming and bidi). */
  readonly credit: SendCredit;
  /** Request messages waiting for credit. */
  readonly waiting: Buffer[];
  /** The client ended its side; HALF_CLOSE waits for the waiting messages. */
  halfClosed: boolean;
  /** Response headers were sent (a later error goes in trailers, not Trailers-Only). */
  headersSent: boolean;
  /** The call ended (status sent, or cancelled). */
  ended: boolean;
  /** Accounting of response messages taken by HTTP/2, to grant the server credit back. */
  readonly received: ReceiveCredit;
  /** The trailers to send once HTTP/2 asks for them (`'wantTrailers'`). */
  trailers: Record<string, string> | undefined;
}

/**
 * One HTTP/2 session as a svrkit connection's byte stream: hand `bridge` to the server as an
 * accepted connection. See the module comment.
 */
export class GrpcSessionBridge extends EventEmitter implements ByteStream, FrameSink {
  readonly remoteAddress: string | undefined;
  readonly remotePort: number | undefined;
  bytesRead = 0;
  bytesWritten = 0;
  private readonly calls = new Map<number, BridgedCall>();
  private nextId = 1;
  private readonly decoder: FrameDecoder;
  private readonly encoder = new FrameEncoder();
  private paused = false;
  private readonly held: Buffer[] = [];
  /** Bytes of response messages written to HTTP/2 streams and not yet taken by them. */
  private unsent = 0;
  private closed = false;

  /**
   * @param session - an accepted HTTP/2 session; the bridge takes over its `'stream'` events.
   * @param options - the message size limit and the server's method kinds.
   */
  constructor(
    private readonly session: ServerHttp2Session,
    private readonly options: GrpcBridgeOptions,
  ) {
    super();
    this.remoteAddress = session.socket?.remoteAddress;
    this.remotePort = session.socket?.remotePort;
    // Response frames from the server are at most its frame size; nothing is oversized here.
    this.decoder = new FrameDecoder(0x7fffffff, this);
    session.on('stream', (stream, headers) => this.onStream(stream, headers));
    session.on('error', (err) => this.emit('error', err));
    session.on('close', () => this.onSessionClosed());
    // Over a JS stream (the shared port's), a session may end without 'close': its socket says so.
    session.socket?.once('close', () => this.onSessionClosed());
  }

  // ---- ByteStream: what the server's connection sees ----

  /** Bytes the server wrote that HTTP/2 has not taken yet (messages its streams still buffer). */
  get writableLength(): number {
    return this.unsent;
  }

  setNoDelay(): this {
    return this;
  }

  /** The server's frames: decoded and turned into HTTP/2 responses. */
  write(chunk: Uint8Array): boolean {
    this.bytesWritten += chunk.length;
    this.decoder.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length));
    return true;
  }

  end(): this {
    if (!this.closed) this.session.close(() => this.onSessionClosed());
    return this;
  }

  destroy(error?: Error): this {
    if (this.closed) return this;
    this.session.destroy(error);
    // A session over a JS stream (the shared port's) may not say 'close' once destroyed.
    setImmediate(() => this.onSessionClosed());
    return this;
  }

  /** The session is gone: every call with it; the server hears 'close' once. */
  private onSessionClosed(): void {
    if (this.closed) return;
    this.closed = true;
    for (const call of this.calls.values()) call.ended = true;
    this.calls.clear();
    this.emit('close');
  }

  /** The server stops reading: so do the HTTP/2 streams, whose flow control then holds the client back. */
  pause(): this {
    if (this.paused) return this;
    this.paused = true;
    for (const c of this.calls.values()) c.stream.pause();
    return this;
  }

  resume(): this {
    if (!this.paused) return this;
    this.paused = false;
    while (!this.paused && this.held.length > 0) this.emit('data', this.held.shift()!);
    if (this.paused) return this;
    for (const c of this.calls.values()) if (c.waiting.length === 0) c.stream.resume();
    return this;
  }

  // ---- gRPC → svrkit ----

  /** Queues a frame for the server (delivered as its own chunk, held while the server pauses). */
  private toServer(kind: number, callId: number, header?: Uint8Array, body?: Uint8Array): void {
    if (this.closed) return;
    this.encoder.write(kind, callId, header, body);
    const bytes = this.encoder.take()!;
    const chunk = Buffer.from(bytes); // the encoder's buffer is reused
    this.bytesRead += chunk.length;
    if (this.paused) this.held.push(chunk);
    else this.emit('data', chunk);
  }

  private onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    stream.on('error', () => {
      // Reported as the stream's close (its RST code): the call is cancelled there.
    });
    const contentType = headers[h2.HTTP2_HEADER_CONTENT_TYPE];
    if (headers[h2.HTTP2_HEADER_METHOD] !== 'POST' || !isGrpcContentType(typeof contentType === 'string' ? contentType : undefined)) {
      // Not gRPC: HTTP's answer, as the spec asks (no grpc-status).
      stream.respond({ [h2.HTTP2_HEADER_STATUS]: 415, [h2.HTTP2_HEADER_CONTENT_TYPE]: 'text/plain' }, { endStream: false });
      stream.end(`svrkit: a gRPC request is a POST with content-type application/grpc, got ${String(headers[h2.HTTP2_HEADER_METHOD])} ${String(headers[h2.HTTP2_HEADER_CONTENT_TYPE] ?? '(none)')}\n`);
      return;
    }
    const path = String(headers[h2.HTTP2_HEADER_PATH] ?? '');
    const method = path.startsWith('/') ? path.slice(1) : path;
    const timeout = headers['grpc-timeout'];
    let d: number | undefined;
    if (timeout !== undefined) {
      const ms = parseGrpcTimeout(String(timeout));
      if (ms === undefined) {
        trailersOnly(stream, Status.INTERNAL, `malformed grpc-timeout ${JSON.stringify(timeout)}`);
        return;
      }
      d = Math.max(1, Math.ceil(ms));
    }
    const md: Metadata = {};
    let ticket: string | undefined;
    for (const [k, v] of Object.entries(headers)) {
      if (v === undefined) continue;
      const value = Array.isArray(v) ? v.join(', ') : String(v);
      if (k === 'authorization') {
        const m = /^Bearer\s+(\S+)$/i.exec(value);
        if (m !== null) {
          ticket = m[1];
          continue;
        }
      }
      if (isGrpcMetadataKey(k)) md[k] = value;
    }
    const known = this.options.kindOf(method);
    const kind = known ?? 2;
    const header: RequestHeader = { m: method, k: kind };
    if (d !== undefined) header.d = d;
    if (Object.keys(md).length > 0) header.md = md;
    if (ticket !== undefined) header.tk = ticket;
    const call: BridgedCall = {
      id: this.allocateId(),
      stream,
      kind,
      credit: new SendCredit(),
      waiting: [],
      halfClosed: false,
      headersSent: false,
      ended: false,
      received: new ReceiveCredit(),
      trailers: undefined,
    };
    this.calls.set(call.id, call);
    if (this.paused) stream.pause();
    stream.on('close', () => {
      if (call.ended) return;
      // The client reset the stream (or the session went): the call is cancelled.
      call.ended = true;
      this.calls.delete(call.id);
      // Whatever the RST_STREAM code (statusOfRstStream), the server hears that the client gave up.
      this.toServer(FrameKind.CANCEL, call.id, encodeStatusHeader(Status.CANCELLED));
    });
    const requestHeader = encodeRequestHeader(header);
    const decoder = new GrpcMessageDecoder(this.options.maxMessageBytes);
    if (kind <= 1) {
      // Unary and server-streaming: the one request message goes with the REQUEST frame.
      let message: Buffer | undefined;
      let count = 0;
      stream.on('data', (chunk: Buffer) => {
        if (call.ended) return;
        try {
          for (const m of decoder.push(chunk)) {
            count++;
            message = Buffer.from(m);
          }
        } catch (err) {
          this.failRequest(call, err as GrpcFramingError);
        }
      });
      stream.on('end', () => {
        if (call.ended) return;
        if (count !== 1 || decoder.pendingBytes > 0) {
          this.failRequest(call, new GrpcFramingError(count === 0 ? `${method} takes one request message, got none` : `${method} takes one request message, got ${count}`, Status.INTERNAL));
          return;
        }
        this.toServer(FrameKind.REQUEST, call.id, requestHeader, message);
      });
      return;
    }
    // Client-streaming and bidi (and unknown methods, which the server refuses): REQUEST at once,
    // then each message as the server's credit allows.
    this.toServer(FrameKind.REQUEST, call.id, requestHeader);
    stream.on('data', (chunk: Buffer) => {
      if (call.ended) return;
      let messages: Buffer[];
      try {
        messages = decoder.push(chunk);
      } catch (err) {
        this.failRequest(call, err as GrpcFramingError);
        return;
      }
      for (const m of messages) call.waiting.push(Buffer.from(m));
      this.sendWaiting(call);
    });
    stream.on('end', () => {
      if (call.ended) return;
      call.halfClosed = true;
      this.sendWaiting(call);
    });
  }

  /** Sends the request messages the server's credit allows; pauses the HTTP/2 stream past it. */
  private sendWaiting(call: BridgedCall): void {
    while (call.waiting.length > 0 && call.credit.available) {
      const m = call.waiting.shift()!;
      call.credit.spend(m.length);
      this.toServer(FrameKind.MESSAGE, call.id, undefined, m);
    }
    if (call.waiting.length > 0) {
      call.stream.pause();
      return;
    }
    if (!this.paused) call.stream.resume();
    if (call.halfClosed) {
      call.halfClosed = false;
      this.toServer(FrameKind.HALF_CLOSE, call.id);
    }
  }

  /** A request that cannot be read: the call ends with the framing error's status, and the server forgets it. */
  private failRequest(call: BridgedCall, err: GrpcFramingError): void {
    if (call.ended) return;
    call.ended = true;
    this.calls.delete(call.id);
    this.toServer(FrameKind.CANCEL, call.id, encodeStatusHeader(Status.CANCELLED));
    this.sendStatus(call, err.status, err.message, undefined);
  }

  private allocateId(): number {
    const id = this.nextId;
    this.nextId = id >= 0x7ffffffe ? 1 : id + 1;
    return id;
  }

  // ---- svrkit → gRPC (FrameSink: the server's frames) ----

  /** @internal FrameSink: a frame the server sent. */
  onFrame(kind: number, callId: number, header: Buffer, body: Buffer): void {
    switch (kind) {
      case FrameKind.PING:
        this.toServer(FrameKind.PONG, callId);
        return;
      case FrameKind.GOAWAY:
        // The server drains: no new streams from this client; the ones open finish.
        if (!this.closed && !this.session.closed && !this.session.destroyed) this.session.goaway(h2.NGHTTP2_NO_ERROR);
        return;
      case FrameKind.WINDOW: {
        const call = this.calls.get(callId);
        const w = decodeWindow(body);
        if (call === undefined || w === undefined) return;
        call.credit.grant(w.messages, w.bytes);
        this.sendWaiting(call);
        return;
      }
      case FrameKind.MESSAGE: {
        const call = this.calls.get(callId);
        if (call === undefined) return;
        this.sendHeaders(call, header.length > 0 ? decodeStatusHeader(header).md : undefined);
        const size = body.length;
        const framed = frameGrpcMessage(body);
        this.unsent += framed.length;
        call.stream.write(framed, () => {
          this.unsent -= framed.length;
          if (call.ended) return;
          const grant = call.received.consumed(size);
          if (grant !== undefined) this.toServer(FrameKind.WINDOW, call.id, undefined, encodeWindow(grant.messages, grant.bytes));
        });
        return;
      }
      case FrameKind.RESPONSE: {
        const call = this.calls.get(callId);
        if (call === undefined) return;
        call.ended = true;
        this.calls.delete(callId);
        const h = header.length > 0 ? decodeStatusHeader(header) : undefined;
        const status = h?.s ?? Status.OK;
        if (status === Status.OK && call.kind === 0) {
          // A unary reply: the response metadata as headers, the message, then OK.
          this.sendHeaders(call, h?.md);
          call.stream.write(frameGrpcMessage(body));
          this.sendStatus(call, Status.OK, undefined, undefined);
          return;
        }
        this.sendStatus(call, status, h?.e, h?.md);
        return;
      }
      default:
        return;
    }
  }

  /** Sends the response headers once, with `md` as metadata. */
  private sendHeaders(call: BridgedCall, md: Metadata | undefined): void {
    if (call.headersSent || call.stream.closed) return;
    call.headersSent = true;
    call.stream.respond({ [h2.HTTP2_HEADER_STATUS]: 200, [h2.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc', ...md }, { waitForTrailers: true });
    call.stream.on('wantTrailers', () => call.stream.sendTrailers(call.trailers ?? { 'grpc-status': '0' }));
  }

  /** Ends the call with a status: trailers after headers were sent, else Trailers-Only. */
  private sendStatus(call: BridgedCall, status: number, message: string | undefined, md: Metadata | undefined): void {
    const stream = call.stream;
    if (stream.closed || stream.destroyed) return;
    const trailers: Record<string, string> = { ...md, 'grpc-status': String(status) };
    if (message !== undefined && message !== '') trailers['grpc-message'] = encodeGrpcMessage(message);
    if (!call.headersSent) {
      call.headersSent = true;
      stream.respond({ [h2.HTTP2_HEADER_STATUS]: 200, [h2.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc', ...trailers }, { endStream: true });
      return;
    }
    call.trailers = trailers;
    stream.end();
  }
}

/** Answers a stream with a status only (Trailers-Only), before any call was made of it. */
function trailersOnly(stream: ServerHttp2Stream, status: number, message: string): void {
  stream.respond({ [h2.HTTP2_HEADER_STATUS]: 200, [h2.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc', 'grpc-status': String(status), 'grpc-message': encodeGrpcMessage(message) }, { endStream: true });
}
