/**
 * svrkit clients on gRPC servers: a `Transport` whose connections are HTTP/2 sessions
 * (node:http2) speaking gRPC, while the channel above them still speaks svrkit's frames. Each
 * svrkit call the channel sends (REQUEST, MESSAGE, HALF_CLOSE, CANCEL, WINDOW) becomes an HTTP/2
 * stream of gRPC (headers with `grpc-timeout` and metadata, length-prefixed messages, END_STREAM,
 * RST_STREAM), and the server's answer becomes the frames a svrkit server would have sent
 * (MESSAGE, RESPONSE with status and metadata). So balancing, retries, hedging, deadlines,
 * keepalive and metrics work over gRPC unchanged: this is the mirror of the server's
 * `GrpcSessionBridge`.
 *
 * Mapping (grpc/grpc doc/PROTOCOL-HTTP2.md):
 * - The request header's method is `:path /pkg.Svc/Method`; its deadline `grpc-timeout`; its
 *   metadata custom headers (keys lower-cased; entries gRPC cannot carry are left out); its ticket
 *   `authorization: Bearer <ticket>`.
 * - Response headers and trailers are the call's metadata (a unary call's are merged; a stream's
 *   headers go with its first message, its trailers with its status); `grpc-status` and the
 *   percent-decoded `grpc-message` its status. A response that is not gRPC (an HTTP status other
 *   than 200, another content-type) fails with the status gRPC's http-grpc-status-mapping.md gives.
 * - RST_STREAM from the server fails the call (`statusOfRstStream`); REFUSED_STREAM, and streams
 *   the server's GOAWAY says it never processed, are UNAVAILABLE and not processed, so the channel
 *   retries them elsewhere.
 * - The server's GOAWAY becomes svrkit's GOAWAY: the channel sends no new call on the session.
 * - The channel's keepalive PINGs are HTTP/2 PINGs; the PONG comes when the server answers.
 * - Flow control: response messages reach the channel as its credit allows (the HTTP/2 stream is
 *   paused meanwhile, so HTTP/2's window holds the server back); request messages are granted
 *   back to the channel as HTTP/2 takes them.
 */
import { EventEmitter } from 'node:events';
import { connect as h2connect, constants as h2, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type IncomingHttpStatusHeader } from 'node:http2';
import type { ByteStream, Transport } from './transport.js';
import { ReceiveCredit, SendCredit } from './flow-control.js';
import type { TlsClientOptions } from './tls-transport.js';
import { decodeTicketHeader, decodeRequestHeader, encodeStatusHeader, HeaderError, type RequestHeader } from '../wire/header.js';
import { decodeWindow, encodeWindow, FRAME_PREFIX_BYTES, FrameDecoder, FrameKind, MAX_CONNECTION_TICKETS, type FrameSink } from '../wire/frame.js';
import { FrameOutbox } from './frame-outbox.js';
import {
  decodeGrpcMessage,
  formatGrpcTimeout,
  frameGrpcMessage,
  GrpcFramingError,
  GrpcMessageDecoder,
  grpcMetadataHeaders,
  isGrpcContentType,
  isGrpcMetadataKey,
  statusOfHttpStatus,
  statusOfRstStream,
} from '../wire/grpc-codec.js';
import { Status, type Metadata } from '../wire/status.js';

/** Options of `grpcClientTransport`. */
export interface GrpcClientTransportOptions {
  /** Connect over TLS (ALPN h2) with these settings; default plaintext (HTTP/2 by prior knowledge). */
  tls?: TlsClientOptions;
  /** The largest response message accepted (bytes). Default 16 MiB less a frame's prefix. */
  maxMessageBytes?: number;
}

/**
 * A transport that connects to gRPC servers (grpc-js, grpc-go, a svrkit server's gRPC side, ...).
 * @param options - TLS and the message size limit.
 * @returns the `Transport` that `ChannelOptions.protocol: 'grpc'` and `grpc://` targets select
 *   (a channel makes it itself); its `listen` rejects (a client does not listen).
 */
export function grpcClientTransport(options: GrpcClientTransportOptions = {}): Transport {
  return {
    connect: (host, port) => new GrpcClientSession(host, port, options),
    listen: () => Promise.reject(new Error('a gRPC client transport does not listen: a svrkit Server serves gRPC itself (ServerOptions.grpc, grpcPort)')),
  };
}

/** One svrkit call carried as an HTTP/2 stream. */
interface OutboundCall {
  readonly id: number;
  readonly method: string;
  /** 0 unary, 1 server-streaming, 2 client-streaming, 3 bidi. */
  readonly kind: number;
  readonly stream: ClientHttp2Stream;
  readonly decoder: GrpcMessageDecoder;
  /** The channel's credit for response messages. */
  readonly credit: SendCredit;
  /** Response messages waiting for credit. */
  readonly waiting: Buffer[];
  /** Accounting of request messages HTTP/2 took, to grant the channel credit back. */
  readonly received: ReceiveCredit;
  /** Response headers (metadata), until they go out with the first message or the status. */
  headers: Metadata | undefined;
  /** Response headers came (the server is speaking gRPC on this stream). */
  answered: boolean;
  /** The error node:http2 reported on the stream, if any (a protocol error of the session shows here first). */
  error: (Error & { code?: string }) | undefined;
  /** Messages delivered so far (a unary call's one message waits in `waiting` for its status). */
  delivered: number;
  /** The status to deliver once the waiting messages are out. */
  status: { s: number; e?: string; md?: Metadata; np?: boolean } | undefined;
  /** The channel knows the call ended (status delivered, or it cancelled). */
  done: boolean;
  /** The response stream is over: all its data came (`'end'`) or it closed (`'close'`). */
  finished: boolean;
  /** The rest of the response's data is skipped (not gRPC, or a message that could not be read). */
  discard: boolean;
  /** Request bytes written to the stream and not yet taken by HTTP/2 (-1 once it closed). */
  unsent: number;
}

/**
 * One HTTP/2 session as the byte stream of a svrkit client connection. See the module comment.
 * Emits `'connect'` once the session is up, `'data'` with svrkit frames for the channel,
 * `'drain'`, `'error'` and `'close'`.
 */
export class GrpcClientSession extends EventEmitter implements ByteStream {
  /** The server's address. */
  readonly remoteAddress: string;
  /** The server's port. */
  readonly remotePort: number;
  /** svrkit bytes handed to the channel (keepalive counts progress with them). */
  get bytesRead(): number {
    return this.outbox.totalBytes;
  }
  /** svrkit bytes the channel wrote. */
  bytesWritten = 0;
  private readonly session: ClientHttp2Session;
  private readonly calls = new Map<number, OutboundCall>();
  private readonly tickets = new Map<number, string>();
  private readonly decoder: FrameDecoder;
  private readonly outbox = new FrameOutbox((chunk) => this.emit('data', chunk));
  private readonly maxMessageBytes: number;
  private paused = false;
  private unsent = 0;
  private connected = false;
  private closed = false;
  /** The server's GOAWAY came: svrkit's GOAWAY was passed on once. */
  private goneAway = false;
  /** Why the session failed, as told to the channel (its calls fail with it). */
  private sessionError: Error | undefined;
  /** The HTTP/2 session is gone (the channel hears 'close' once its delivered calls are out). */
  private sessionGone = false;
  /** The server's SETTINGS came: it speaks HTTP/2. */
  private gotSettings = false;

  /**
   * @param host - the server's host; `port` - its port.
   * @param options - see `GrpcClientTransportOptions`.
   */
  constructor(host: string, port: number, options: GrpcClientTransportOptions) {
    super();
    this.remoteAddress = host;
    this.remotePort = port;
    this.maxMessageBytes = options.maxMessageBytes ?? 16 * 1024 * 1024 - FRAME_PREFIX_BYTES;
    const sink: FrameSink = { onFrame: (kind, callId, header, body) => this.onFrame(kind, callId, header, body) };
    this.decoder = new FrameDecoder(0x7fffffff, sink);
    const authority = `${host.includes(':') ? `[${host}]` : host}:${port}`;
    const tls = options.tls;
    this.session =
      tls === undefined
        ? h2connect(`http://${authority}`, { settings: { initialWindowSize: STREAM_WINDOW_BYTES } })
        : h2connect(`https://${authority}`, {
            settings: { initialWindowSize: STREAM_WINDOW_BYTES },
            ca: tls.ca as string | undefined,
            cert: tls.cert as string | undefined,
            key: tls.key as string | undefined,
            servername: tls.servername,
            ...(tls.checkServerIdentity === undefined ? {} : { checkServerIdentity: tls.checkServerIdentity }),
          });
    this.session.on('connect', () => {
      this.connected = true;
      // The whole session's window: as much as 16 streams' own, so that streams share no 64 KiB.
      try {
        this.session.setLocalWindowSize(16 * STREAM_WINDOW_BYTES);
      } catch {
        // A session already closing.
      }
      this.emit('connect');
    });
    this.session.once('remoteSettings', () => (this.gotSettings = true));
    this.session.on('error', (err: Error & { code?: string }) => {
      this.sessionError = this.describe(err);
      this.emit('error', this.sessionError);
    });
    this.session.on('goaway', (code: number, lastStreamId: number) => this.onGoaway(code, lastStreamId));
    this.session.on('close', () => this.onSessionClosed());
  }

  /** A session error, said plainly when the server does not speak HTTP/2 (gRPC). */
  private describe(err: Error & { code?: string }): Error {
    const where = `${this.remoteAddress}:${this.remotePort}`;
    if (!this.gotSettings && (err.code === 'ERR_HTTP2_ERROR' || err.code === 'ERR_HTTP2_SESSION_ERROR' || err.code === 'ERR_HTTP2_STREAM_ERROR')) {
      const e = new Error(`the server at ${where} does not speak gRPC (HTTP/2 failed: ${err.message}); if it is a svrkit server with gRPC turned off, call it without grpc:// (svrkit's protocol)`);
      (e as Error & { cause?: unknown }).cause = err;
      return e;
    }
    return err;
  }

  // ---- ByteStream: what the channel's connection sees ----

  /** Request bytes the channel wrote that HTTP/2 has not taken yet. */
  get writableLength(): number {
    return this.unsent;
  }

  /** A no-op: node:http2 sets no-delay on its sockets itself. @returns this. */
  setNoDelay(): this {
    return this;
  }

  /**
   * The channel's frames: decoded and turned into HTTP/2 requests. Frames for the channel that
   * this causes are delivered after it returns.
   * @returns true (HTTP/2's buffering is reported through `writableLength` and `'drain'`).
   */
  write(chunk: Uint8Array): boolean {
    this.bytesWritten += chunk.length;
    this.outbox.whileWriting(() => this.decoder.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length)));
    return true;
  }

  /** Closes the session gracefully (open streams finish). */
  end(): this {
    if (!this.closed && !this.session.closed && !this.session.destroyed) this.session.close();
    return this;
  }

  /** Closes the session at once. */
  destroy(error?: Error): this {
    if (this.closed) return this;
    if (!this.session.destroyed) this.session.destroy(error);
    setImmediate(() => {
      // Destroyed by the channel: nothing more is delivered (also when the session's 'close'
      // came first and left finished calls to deliver).
      this.calls.clear();
      if (this.sessionGone) this.maybeClose();
      else this.onSessionClosed();
    });
    return this;
  }

  /** The channel stops reading: so do the HTTP/2 streams. */
  pause(): this {
    if (this.paused) return this;
    this.paused = this.outbox.paused = true;
    for (const c of this.calls.values()) c.stream.pause();
    return this;
  }

  /** The channel reads again. */
  resume(): this {
    if (!this.paused) return this;
    this.paused = this.outbox.paused = false;
    this.outbox.flush();
    if (this.paused) return this;
    for (const c of this.calls.values()) if (c.waiting.length === 0 || c.kind === 0) c.stream.resume();
    return this;
  }

  private onSessionClosed(): void {
    if (this.sessionGone) return;
    this.sessionGone = true;
    if (!this.connected) this.emit('error', new Error(`could not open an HTTP/2 session to ${this.remoteAddress}:${this.remotePort}`));
    // Calls whose answer came in full but still wait for the channel's credit are delivered
    // first (a server's graceful GOAWAY closes the session as soon as its streams end).
    for (const c of [...this.calls.values()]) if (!c.finished || c.status === undefined) this.calls.delete(c.id);
    this.maybeClose();
  }

  /** Tells the channel the connection is gone, once the session is and no finished call waits to be delivered. */
  private maybeClose(): void {
    if (!this.sessionGone || this.closed || this.calls.size > 0) return;
    this.closed = true;
    // Calls still open fail as on a lost svrkit connection: the channel sees 'close'.
    this.outbox.clear();
    this.emit('close');
  }

  private onGoaway(code: number, lastStreamId: number): void {
    if (!this.goneAway) {
      this.goneAway = true;
      this.toChannel(FrameKind.GOAWAY, 0, encodeStatusHeader(Status.UNAVAILABLE, `the gRPC server sent GOAWAY (code ${code})`, undefined, false, undefined, 'SERVER_SHUTTING_DOWN'));
    }
    // Streams above the last one the server processed never reached it: safe to retry elsewhere.
    for (const c of this.calls.values()) {
      const id = c.stream.id;
      if (id !== undefined && id > lastStreamId && c.status === undefined) c.status = { s: Status.UNAVAILABLE, e: `the gRPC server's GOAWAY (last stream ${lastStreamId}) came before it processed this call`, np: true };
    }
  }

  // ---- svrkit → gRPC: the channel's frames ----

  private onFrame(kind: number, callId: number, header: Buffer, body: Buffer): void {
    switch (kind) {
      case FrameKind.REQUEST:
        this.startCall(callId, header, body);
        return;
      case FrameKind.MESSAGE: {
        const call = this.calls.get(callId);
        // Only client-streaming and bidi calls send request messages after the REQUEST.
        if (call !== undefined && call.kind >= 2) this.writeMessage(call, body);
        return;
      }
      case FrameKind.HALF_CLOSE: {
        const call = this.calls.get(callId);
        if (call !== undefined && !call.stream.writableEnded) call.stream.end();
        return;
      }
      case FrameKind.CANCEL: {
        const call = this.calls.get(callId);
        if (call === undefined) return;
        call.done = true;
        this.calls.delete(callId);
        safeClose(call.stream, h2.NGHTTP2_CANCEL);
        return;
      }
      case FrameKind.WINDOW: {
        const call = this.calls.get(callId);
        const w = decodeWindow(body);
        // Only streams of responses take the channel's credit.
        if (call === undefined || w === undefined || call.kind === 0) return;
        call.credit.grant(w.messages, w.bytes);
        this.deliverWaiting(call);
        return;
      }
      case FrameKind.PING:
        // Keepalive: answered when the server answers an HTTP/2 PING (a dead server gets no PONG).
        if (this.closed || this.session.destroyed) return;
        try {
          this.session.ping((err) => {
            if (err === null) this.toChannel(FrameKind.PONG, callId);
          });
        } catch {
          // Too many PINGs unanswered, or the session is closing: no PONG.
        }
        return;
      case FrameKind.PONG:
        return;
      case FrameKind.TICKET:
        try {
          // As many as a server keeps per connection: the channel defines a ticket again before reusing a dropped id.
          if (this.tickets.size >= MAX_CONNECTION_TICKETS && !this.tickets.has(callId)) this.tickets.delete(this.tickets.keys().next().value!);
          this.tickets.set(callId, decodeTicketHeader(header));
        } catch {
          // A definition that does not decode: a request that refers to it goes without a ticket.
        }
        return;
      default:
        return;
    }
  }

  /** Opens the HTTP/2 stream of a call. */
  private startCall(id: number, headerBytes: Buffer, body: Buffer): void {
    let header: RequestHeader;
    try {
      header = decodeRequestHeader(headerBytes);
    } catch (err) {
      if (!(err instanceof HeaderError)) throw err;
      this.fail(id, Status.INTERNAL, `a request header that does not decode: ${err.message}`, true);
      return;
    }
    const kind = header.k ?? 0;
    const headers: Record<string, string> = {
      [h2.HTTP2_HEADER_METHOD]: 'POST',
      [h2.HTTP2_HEADER_PATH]: `/${header.m}`,
      [h2.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc',
      te: 'trailers',
      'user-agent': 'svrkit-grpc',
    };
    if (header.d !== undefined) headers['grpc-timeout'] = formatGrpcTimeout(header.d);
    if (header.md !== undefined) Object.assign(headers, grpcMetadataHeaders(header.md).headers);
    const ticket = header.tk ?? (header.ti !== undefined ? this.tickets.get(header.ti) : undefined);
    if (ticket !== undefined) headers['authorization'] = `Bearer ${ticket}`;
    if (this.closed || this.session.closed || this.session.destroyed || this.goneAway) {
      this.fail(id, Status.UNAVAILABLE, 'the gRPC session is closing (GOAWAY)', true);
      return;
    }
    let stream: ClientHttp2Stream;
    try {
      stream = this.session.request(headers, { endStream: false });
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'ERR_HTTP2_OUT_OF_STREAMS' || code === 'ERR_HTTP2_INVALID_SESSION' || code === 'ERR_HTTP2_GOAWAY_SESSION') {
        // Out of stream ids, or a session closing: the channel reconnects and retries it elsewhere.
        this.fail(id, Status.UNAVAILABLE, `could not open a gRPC stream: ${(err as Error).message}`, true);
        if (!this.goneAway) this.onGoaway(h2.NGHTTP2_NO_ERROR, 2 ** 31 - 1);
        return;
      }
      // This call's own headers (a value HTTP/2 cannot carry): only it fails.
      this.fail(id, Status.INTERNAL, `could not send the request's headers: ${(err as Error).message}`, false);
      return;
    }
    const call: OutboundCall = {
      id,
      method: header.m,
      kind,
      stream,
      decoder: new GrpcMessageDecoder(this.maxMessageBytes),
      // Unary calls use no credit, and only streams of requests grant it: placeholders otherwise.
      credit: kind >= 1 ? new SendCredit() : NO_SEND_CREDIT,
      waiting: [],
      received: kind >= 2 ? new ReceiveCredit() : NO_RECEIVE_CREDIT,
      headers: undefined,
      answered: false,
      error: undefined,
      delivered: 0,
      status: undefined,
      done: false,
      finished: false,
      discard: false,
      unsent: 0,
    };
    this.calls.set(id, call);
    if (this.paused) stream.pause();
    stream.on('error', (err: Error & { code?: string }) => {
      // Reported as the stream's close (its RST code), below; a session's protocol error says more.
      call.error = err;
    });
    stream.on('response', (h) => this.onResponseHeaders(call, h));
    stream.on('data', (chunk: Buffer) => this.onData(call, chunk));
    stream.on('trailers', (t) => this.onTrailers(call, t));
    // All the data came: the status may go once the waiting messages are out. ('close' may wait
    // for a paused stream's buffered data to be read, so it cannot be what resumes it.)
    stream.on('end', () => {
      if (call.status === undefined) return; // 'close' decides
      call.finished = true;
      this.deliverWaiting(call);
    });
    stream.on('close', () => this.onStreamClosed(call));
    if (kind <= 1) {
      // Unary and server-streaming: the request message, and the end of the client's side.
      this.writeMessage(call, body, false);
      stream.end();
    }
  }

  /** Writes a request message; its bytes are granted back to the channel once HTTP/2 takes them. */
  private writeMessage(call: OutboundCall, body: Buffer, credit = true): void {
    const stream = call.stream;
    if (call.unsent < 0 || stream.destroyed || stream.writableEnded) return;
    const framed = frameGrpcMessage(body);
    const n = framed.length;
    call.unsent += n;
    this.unsent += n;
    stream.write(framed, () => {
      if (call.unsent < 0) return;
      call.unsent -= n;
      this.unsent -= n;
      this.emit('drain');
      if (!credit || call.done) return;
      const grant = call.received.consumed(body.length);
      if (grant !== undefined) this.toChannel(FrameKind.WINDOW, call.id, undefined, encodeWindow(grant.messages, grant.bytes));
    });
  }

  // ---- gRPC → svrkit: the server's answer ----

  private onResponseHeaders(call: OutboundCall, h: IncomingHttpHeaders & IncomingHttpStatusHeader): void {
    call.answered = true;
    const http = Number(h[h2.HTTP2_HEADER_STATUS]);
    const contentType = h[h2.HTTP2_HEADER_CONTENT_TYPE];
    if (http !== 200 && h['grpc-status'] === undefined) {
      call.discard = true;
      call.status = { s: statusOfHttpStatus(http), e: `the server answered HTTP ${http}${contentType === undefined ? '' : ` (${String(contentType)})`}, not gRPC` };
      return;
    }
    if (h['grpc-status'] === undefined && !isGrpcContentType(typeof contentType === 'string' ? contentType : undefined)) {
      call.discard = true;
      call.status = { s: Status.UNKNOWN, e: `the server answered with content-type ${String(contentType ?? '(none)')}, not application/grpc: is it a gRPC server?` };
      return;
    }
    const md = metadataOf(h);
    if (h['grpc-status'] !== undefined) {
      // Trailers-Only: the status, and the metadata with it.
      call.status = statusOf(h, md);
      return;
    }
    call.headers = md;
  }

  private onData(call: OutboundCall, chunk: Buffer): void {
    // Data after the trailers is normal (a paused stream's buffered chunks); after an answer that
    // is not gRPC, or a message that could not be read, it is skipped.
    if (call.done || call.discard) return;
    let messages: Buffer[];
    try {
      messages = call.decoder.push(chunk);
    } catch (err) {
      const e = err as GrpcFramingError;
      call.discard = true;
      call.status = { s: e.status, e: `a response message that cannot be read: ${e.message}` };
      safeClose(call.stream, h2.NGHTTP2_CANCEL);
      return;
    }
    for (const m of messages) call.waiting.push(Buffer.from(m));
    if (call.kind === 0) {
      if (call.waiting.length > 1) {
        call.discard = true;
        call.status = { s: Status.INTERNAL, e: `${call.method} is unary, and the server sent ${call.waiting.length} response messages` };
        safeClose(call.stream, h2.NGHTTP2_CANCEL);
      }
      return;
    }
    this.deliverWaiting(call);
  }

  private onTrailers(call: OutboundCall, t: IncomingHttpHeaders): void {
    if (call.status !== undefined) return;
    call.status = statusOf(t, metadataOf(t));
  }

  /** The HTTP/2 stream closed: the call's status goes to the channel (after its messages). */
  private onStreamClosed(call: OutboundCall): void {
    if (call.unsent > 0) {
      this.unsent -= call.unsent;
      this.emit('drain');
    }
    call.unsent = -1;
    if (call.done) return;
    if (call.status === undefined) {
      const code = call.stream.rstCode ?? h2.NGHTTP2_NO_ERROR;
      const sessionFailed = this.sessionError !== undefined || call.error?.code === 'ERR_HTTP2_ERROR' || call.error?.code === 'ERR_HTTP2_SESSION_ERROR';
      if (code === h2.NGHTTP2_REFUSED_STREAM) call.status = { s: Status.UNAVAILABLE, e: 'the gRPC server refused the stream (REFUSED_STREAM)', np: true };
      else if (!this.gotSettings && sessionFailed) call.status = { s: Status.UNAVAILABLE, e: (this.sessionError ?? this.describe(call.error!)).message };
      else if (sessionFailed || this.sessionGone || this.session.closed || this.session.destroyed) {
        // The connection went (the server died, restarted or reset it): node:http2 closes its
        // streams with CANCEL then, which is not the server's word about this call.
        call.status = { s: Status.UNAVAILABLE, e: `the connection to the gRPC server was lost${this.sessionError === undefined ? '' : ` (${this.sessionError.message})`}` };
      } else if (code !== h2.NGHTTP2_NO_ERROR) call.status = { s: statusOfRstStream(code), e: `the gRPC server reset the stream (RST_STREAM code ${code})` };
      else call.status = { s: Status.INTERNAL, e: 'the gRPC server ended the stream without a status (no grpc-status trailer)' };
    }
    if (call.decoder.pendingBytes > 0 && call.status.s === Status.OK) {
      call.status = { s: Status.INTERNAL, e: `the response stream ended inside a message (${call.decoder.pendingBytes} bytes of it came)` };
    }
    call.finished = true;
    this.deliverWaiting(call);
    this.maybeClose();
  }

  /** Hands response messages to the channel as its credit allows, then the status once the stream closed. */
  private deliverWaiting(call: OutboundCall): void {
    if (call.done) return;
    if (call.kind === 0) {
      if (!call.finished) return;
      this.finishUnary(call);
      return;
    }
    while (call.waiting.length > 0 && call.credit.available) {
      const m = call.waiting.shift()!;
      call.credit.spend(m.length);
      const header = call.delivered === 0 && call.headers !== undefined ? encodeStatusHeader(Status.OK, undefined, call.headers) : undefined;
      if (call.delivered === 0) call.headers = undefined;
      call.delivered++;
      this.toChannel(FrameKind.MESSAGE, call.id, header, m);
    }
    if (call.waiting.length > 0) {
      call.stream.pause();
      return;
    }
    if (!this.paused && !call.finished && call.stream.isPaused()) call.stream.resume();
    if (!call.finished || call.status === undefined) return;
    call.done = true;
    this.calls.delete(call.id);
    this.maybeClose();
    const s = call.status;
    // Headers that no message carried go with the status.
    const md = call.headers === undefined ? s.md : { ...call.headers, ...s.md };
    this.toChannel(FrameKind.RESPONSE, call.id, encodeStatusHeader(s.s, s.e, md, s.np === true));
  }

  /** A unary call's end: its one message and OK, or its error. */
  private finishUnary(call: OutboundCall): void {
    call.done = true;
    this.calls.delete(call.id);
    this.maybeClose();
    const s = call.status ?? { s: Status.INTERNAL, e: 'no status' };
    const md = call.headers === undefined ? s.md : { ...call.headers, ...s.md };
    if (s.s === Status.OK && call.waiting.length !== 1) {
      this.toChannel(FrameKind.RESPONSE, call.id, encodeStatusHeader(Status.INTERNAL, `${call.method} is unary, and the server sent ${call.waiting.length} response messages`));
      return;
    }
    if (s.s !== Status.OK) {
      this.toChannel(FrameKind.RESPONSE, call.id, encodeStatusHeader(s.s, s.e, md, s.np === true));
      return;
    }
    this.toChannel(FrameKind.RESPONSE, call.id, encodeStatusHeader(Status.OK, undefined, md), call.waiting[0]);
  }

  /** A call that never got a stream: its status, at once. */
  private fail(id: number, status: number, message: string, notProcessed: boolean): void {
    this.toChannel(FrameKind.RESPONSE, id, encodeStatusHeader(status, message, undefined, notProcessed));
  }

  /** Sends a frame to the channel (held while it pauses or is writing to us). */
  private toChannel(kind: number, callId: number, header?: Uint8Array, body?: Uint8Array): void {
    if (!this.closed) this.outbox.send(kind, callId, header, body);
  }
}

/** Shared placeholders for the credit a call does not use (never spent nor granted). */
const NO_SEND_CREDIT = new SendCredit();
const NO_RECEIVE_CREDIT = new ReceiveCredit();
/** The HTTP/2 window of each response stream (bytes): svrkit's own stream window, 1 MiB. */
const STREAM_WINDOW_BYTES = 1024 * 1024;

/** The custom metadata of response headers or trailers (`-bin` values as their base64 text). */
function metadataOf(h: IncomingHttpHeaders): Metadata | undefined {
  let md: Metadata | undefined;
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined || !isGrpcMetadataKey(k)) continue;
    // gRFC A6's server pushback is what svrkit's retries read under their own key.
    (md ??= {})[k === GRPC_PUSHBACK_KEY ? SVRKIT_PUSHBACK_KEY : k] = Array.isArray(v) ? v.join(', ') : String(v);
  }
  return md;
}

const GRPC_PUSHBACK_KEY = 'grpc-retry-pushback-ms';
const SVRKIT_PUSHBACK_KEY = 'svrkit-retry-pushback-ms';

/** The status of trailers (or Trailers-Only headers): `grpc-status`, `grpc-message`, metadata. */
function statusOf(h: IncomingHttpHeaders, md: Metadata | undefined): { s: number; e?: string; md?: Metadata } {
  const raw = h['grpc-status'];
  const code = Number(raw);
  if (raw === undefined || !/^\d{1,2}$/.test(String(raw)) || code > 16) {
    return { s: Status.UNKNOWN, e: `the server sent no valid grpc-status (got ${JSON.stringify(raw ?? null)})`, ...(md === undefined ? {} : { md }) };
  }
  const message = h['grpc-message'];
  const out: { s: number; e?: string; md?: Metadata } = { s: code };
  if (message !== undefined && message !== '') out.e = decodeGrpcMessage(String(message));
  if (md !== undefined) out.md = md;
  return out;
}

/** Resets a stream with `code`, unless it is gone already. */
function safeClose(stream: ClientHttp2Stream, code: number): void {
  if (stream.closed || stream.destroyed) return;
  try {
    stream.close(code);
  } catch {
    stream.destroy();
  }
}
