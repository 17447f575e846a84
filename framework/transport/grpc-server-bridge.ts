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
 * - `:path /pkg.Svc/Method` is the method; `grpc-timeout` the deadline (less the time the request
 *   took to upload, for unary and server-streaming calls, whose REQUEST carries the message);
 *   headers that are not the protocol's are metadata (`-bin` values pass as their base64 text);
 *   `authorization: Bearer <t>` is the call's ticket.
 * - A content-type other than `application/grpc[+proto]`, or a method other than POST, is
 *   answered HTTP 415 (no `grpc-status`, as the spec asks of non-gRPC requests).
 * - RST_STREAM from the client cancels the call (CANCEL frame).
 * - Flow control: request messages of client-streaming and bidi calls go to the server as its
 *   credit allows (the HTTP/2 stream is paused meanwhile); response messages are granted back to
 *   the server as HTTP/2 takes them, so a gRPC client that does not read pauses the server's
 *   handler as a svrkit client would.
 * - Response metadata that HTTP/2 or gRPC cannot carry (`grpcMetadataHeaders`) is left out.
 * - Graceful shutdown, in the frames gRPC servers send (grpc/grpc doc/PROTOCOL-HTTP2.md,
 *   "GOAWAY"): the server's GOAWAY becomes HTTP/2's GOAWAY with the largest stream id; the PING
 *   that follows it goes to the client as an HTTP/2 PING, and the server gets its PONG once the
 *   client's PING ack came (or `pingTimeoutMs` passed without it) and no unary request is still
 *   uploading (whose REQUEST would come after the PONG otherwise). The final GOAWAY, with the
 *   last stream id served, goes at the ack: nghttp2 may ignore new streams once it has sent a
 *   GOAWAY (node cannot send its shutdown notice instead), and the final GOAWAY is what tells the
 *   client that those were not processed, so that it retries them.
 *
 * Memory: a session has at most `SETTINGS_MAX_CONCURRENT_STREAMS` calls (the server sets it); a
 * request message over 64 KiB is buffered only while the server's buffer budget has room for it
 * (`admitLarge`, counted in `pendingRequestBytes`), and must be complete within the server's
 * frame timeout (`expire`); response bytes HTTP/2 has not taken count in `writableLength`, which
 * the server's connection caps as it caps a socket's.
 */
import { EventEmitter } from 'node:events';
import type { IncomingHttpHeaders, ServerHttp2Session, ServerHttp2Stream } from 'node:http2';
import { constants as h2 } from 'node:http2';
import { errors } from '../errors.js';
import type { RpcError } from '../wire/status.js';
import type { ByteStream, PeerIdentity } from './transport.js';
import { ReceiveCredit, SendCredit } from './flow-control.js';
import { decodeWindow, encodeWindow, FRAME_PREFIX_BYTES, FrameDecoder, FrameKind, LARGE_FRAME_BYTES, type FrameSink } from '../wire/frame.js';
import { FrameOutbox } from './frame-outbox.js';
import { decodeStatusHeader, encodeRequestHeader, encodeStatusHeader, type RequestHeader } from '../wire/header.js';
import {
  encodeGrpcMessage,
  frameGrpcMessage,
  GrpcFramingError,
  GrpcMessageDecoder,
  grpcMetadataHeaders,
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

/** What a bridge needs from its server. */
export interface GrpcBridgeOptions {
  /** The server's largest frame (bytes): a call's request header and message must fit in one. */
  maxFrameBytes: number;
  /** The server's methods' kinds. */
  kindOf: MethodKindLookup;
  /** The clock, epoch ms (the server's `now`): deadlines and message timeouts. */
  now: () => number;
  /**
   * Asked once per request message over 64 KiB, after its announced size is counted in
   * `pendingRequestBytes`: undefined to buffer it, or the error that fails the call (the server's
   * buffer budget is spent). Default: always buffered.
   */
  admitLarge?: (bytes: number) => RpcError | undefined;
  /** The verified client certificate's identity, on a TLS session. */
  peerIdentity?: () => PeerIdentity | undefined;
  /**
   * How long the client may take to ack the HTTP/2 PING of a graceful shutdown (ms) before the
   * server is answered all the same (the server's frame timeout). Default 10000.
   */
  pingTimeoutMs?: number;
  /** Told of a response the bridge could not send as the server meant it (dropped metadata, a reset stream). */
  log?: (message: string, error?: unknown) => void;
}

/** One gRPC call on the bridge. */
interface BridgedCall {
  readonly id: number;
  readonly method: string;
  readonly stream: ServerHttp2Stream;
  /** 0 unary, 1 server-streaming, 2 client-streaming, 3 bidi (unknown methods: 2, sent at once). */
  readonly kind: number;
  readonly decoder: GrpcMessageDecoder;
  /** The server's credit for request messages (client-streaming and bidi; a placeholder otherwise). */
  readonly credit: SendCredit;
  /** Request messages waiting for credit (client-streaming and bidi), or the one of a unary call. */
  readonly waiting: Buffer[];
  /** Bytes in `waiting`. */
  waitingBytes: number;
  /** The REQUEST frame was sent (the server knows the call). */
  requested: boolean;
  /** A unary or server-streaming request still uploading (counted in the bridge's `uploads`). */
  uploading: boolean;
  /** The client ended its side; HALF_CLOSE waits for the waiting messages. */
  halfClosed: boolean;
  /** The client's side ended (END_STREAM): else a status sent is followed by RST_STREAM(NO_ERROR). */
  clientEnded: boolean;
  /** Response headers were sent (a later error goes in trailers, not Trailers-Only). */
  headersSent: boolean;
  /** The call ended for the bridge (status sent or being sent, or cancelled). */
  ended: boolean;
  /** The `messagesDecoded` count at which a large message was admitted (-1: none). */
  admitted: number;
  /** Epoch ms the message being received started (0: none is partly received). */
  partialSince: number;
  /** Epoch ms the HEADERS came (a unary call's deadline counts from here). */
  readonly startedAt: number;
  /** The `grpc-timeout` (ms), or undefined. */
  readonly timeoutMs: number | undefined;
  /** Epoch ms the request stream last made progress (HEADERS, a DATA chunk). */
  progressAt: number;
  /** Accounting of response messages taken by HTTP/2, to grant the server credit back (streams; a placeholder for unary calls). */
  readonly received: ReceiveCredit;
  /** Response bytes written to the stream and not yet taken by HTTP/2 (-1 once the stream closed). */
  unsent: number;
  /** The trailers to send once HTTP/2 asks for them (`'wantTrailers'`). */
  trailers: Record<string, string> | undefined;
}

/**
 * One HTTP/2 session as a svrkit connection's byte stream: hand `bridge` to the server as an
 * accepted connection. See the module comment.
 */
export class GrpcSessionBridge extends EventEmitter implements ByteStream, FrameSink {
  /** The client's address and port (for `peer`). */
  readonly remoteAddress: string | undefined;
  readonly remotePort: number | undefined;
  /** svrkit bytes handed to the server (keepalive and metrics count them). */
  get bytesRead(): number {
    return this.outbox.totalBytes;
  }
  /** svrkit bytes the server wrote. */
  bytesWritten = 0;
  private readonly calls = new Map<number, BridgedCall>();
  private nextId = 1;
  private readonly decoder: FrameDecoder;
  /** Frames for the server: held while it pauses, or while it is writing to us (no re-entry). */
  private readonly outbox = new FrameOutbox((chunk) => this.emit('data', chunk));
  private paused = false;
  /** Bytes of response messages written to HTTP/2 streams and not yet taken by them. */
  private unsent = 0;
  /** Unary and server-streaming requests still uploading (their REQUEST is not sent yet). */
  private uploads = 0;
  /** PINGs of the server to answer once no request is uploading. */
  private pendingPongs: number[] = [];
  private closed = false;
  /** Epoch ms of the last keepalive PING, and of the one awaiting its ack (0: none). */
  private pingedAt = 0;
  private pingSentAt = 0;

  /**
   * @param session - an accepted HTTP/2 session; the bridge takes over its `'stream'` events.
   * @param options - see `GrpcBridgeOptions`.
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
    session.on('error', (err) => {
      this.emit('error', err);
      // A session that failed is over, even if node:http2 left it open (it stops reading after a
      // protocol error, and would never hear the peer go).
      if (!session.destroyed) session.destroy();
    });
    session.on('close', () => this.onSessionClosed());
    // Should the session end without 'close', its socket says so.
    session.socket?.once('close', () => this.onSessionClosed());
  }

  // ---- ByteStream: what the server's connection sees ----

  /** Bytes the server wrote that HTTP/2 has not taken yet (messages its streams still buffer). */
  get writableLength(): number {
    return this.unsent;
  }

  /**
   * Bytes of request messages held for the server (partly received ones at their announced size,
   * complete ones waiting for credit or for the end of a unary request, and frames held while the
   * server does not read): the server counts them in its buffer budget.
   */
  get pendingRequestBytes(): number {
    let n = this.outbox.heldBytes;
    for (const c of this.calls.values()) n += (c.decoder.announcedBytes || c.decoder.pendingBytes) + c.waitingBytes;
    return n;
  }

  /** The verified client certificate's identity (TLS sessions), else undefined. */
  peerIdentity(): PeerIdentity | undefined {
    return this.options.peerIdentity?.();
  }

  /** A no-op: node:http2 sets no-delay on its sockets itself. @returns this. */
  setNoDelay(): this {
    return this;
  }

  /**
   * The server's frames: decoded and turned into HTTP/2 responses. Frames the bridge sends the
   * server meanwhile (a PONG, a cancellation) are delivered after this returns.
   * @returns true (HTTP/2's buffering is reported through `writableLength` and `'drain'`).
   */
  write(chunk: Uint8Array): boolean {
    this.bytesWritten += chunk.length;
    this.outbox.whileWriting(() => this.decoder.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length)));
    return true;
  }

  /** Closes the session gracefully (open streams finish). */
  end(): this {
    if (this.closed) return this;
    if (this.session.destroyed) setImmediate(() => this.onSessionClosed());
    else if (!this.session.closed) this.session.close(() => this.onSessionClosed());
    // (A session closing already, as node:http2 does on the client's GOAWAY, is destroyed with its last stream.)
    return this;
  }

  /**
   * Closes the session at once. Calls still open (a shutdown's grace ran out, a peer that stopped
   * answering PINGs) end with UNAVAILABLE, as a svrkit client's do when its connection is cut,
   * rather than the CANCEL that destroying the session would reset them with; the session is
   * destroyed a second later if it has not closed by then.
   */
  destroy(error?: Error): this {
    if (this.closed) return this;
    if (this.calls.size > 0 && !this.session.destroyed) {
      for (const c of [...this.calls.values()]) {
        c.ended = true;
        this.calls.delete(c.id);
        this.sendStatus(c, Status.UNAVAILABLE, 'the server closed the connection before the call finished', undefined);
      }
      if (!this.session.closed) {
        try {
          this.session.close();
        } catch {
          // Closing already.
        }
      }
      setTimeout(() => {
        if (!this.session.destroyed) this.session.destroy(error);
        this.onSessionClosed();
      }, 1000).unref();
      return this;
    }
    this.session.destroy(error);
    // A destroyed session may not say 'close'.
    setImmediate(() => this.onSessionClosed());
    return this;
  }

  /** The session is gone: every call with it; the server hears 'close' once. */
  private onSessionClosed(): void {
    if (this.closed) return;
    this.closed = true;
    for (const call of this.calls.values()) call.ended = true;
    this.calls.clear();
    this.outbox.clear();
    this.emit('close');
  }

  /** The server stops reading: so do the HTTP/2 streams, whose flow control then holds the client back. */
  pause(): this {
    if (this.paused) return this;
    this.paused = this.outbox.paused = true;
    for (const c of this.calls.values()) c.stream.pause();
    return this;
  }

  /** The server reads again: held frames first, then the streams that have credit. */
  resume(): this {
    if (!this.paused) return this;
    this.paused = this.outbox.paused = false;
    this.outbox.flush();
    if (this.paused) return this;
    const now = this.options.now();
    for (const c of this.calls.values()) {
      if (c.waiting.length > 0 && c.kind >= 2) continue;
      // The pause was the server's: a message partly received gets a fresh timeout.
      if (c.partialSince > 0) c.partialSince = now;
      c.stream.resume();
    }
    return this;
  }

  /**
   * Fails the calls whose request message started arriving over `limitMs` ago and is still not
   * complete, while neither the server nor the bridge held the stream back (slowloris).
   * @param now - epoch ms.
   * @param limitMs - the server's frame timeout (ms).
   */
  expire(now: number, limitMs: number): void {
    if (this.closed) return;
    this.keepalive(now, limitMs);
    if (this.paused) return;
    for (const c of [...this.calls.values()]) {
      if (c.partialSince > 0 && !(c.kind >= 2 && c.waiting.length > 0) && now - c.partialSince > limitMs) {
        this.failRequest(c, errors.GRPC_MESSAGE_TIMEOUT(now - c.partialSince, limitMs));
      } else if (c.uploading && c.timeoutMs !== undefined && now - c.startedAt > c.timeoutMs) {
        // A unary request whose deadline passed before it finished uploading: the server never saw it.
        this.failRequest(c, errors.DEADLINE_BEFORE_START());
      } else if (c.uploading && now - c.progressAt > limitMs) {
        // A unary request that stopped: no DATA and no END_STREAM for that long (it holds its
        // message, and a graceful shutdown's PONG).
        this.failRequest(c, errors.GRPC_REQUEST_STALLED(now - c.progressAt, limitMs));
      }
    }
  }

  /**
   * Checks that a session with calls open is alive: an HTTP/2 PING every `limitMs`, and the
   * session is destroyed when one is not answered within `limitMs` (a peer that vanished without a
   * FIN or RST, or a session node:http2 stopped reading after a protocol error).
   */
  private keepalive(now: number, limitMs: number): void {
    if (this.pingSentAt > 0) {
      if (now - this.pingSentAt > limitMs) {
        this.options.log?.(`svrkit server: gRPC session ${this.remoteAddress}:${this.remotePort} did not answer a PING within ${limitMs} ms: closed`);
        this.destroy();
      }
      return;
    }
    if (this.calls.size === 0 || now - this.pingedAt < limitMs) return;
    this.pingedAt = now;
    this.pingSentAt = now;
    try {
      this.session.ping((err) => {
        if (err !== null) this.destroy();
        else this.pingSentAt = 0;
      });
    } catch {
      this.destroy();
    }
  }

  // ---- gRPC → svrkit ----

  /** Sends a frame to the server (delivered as its own chunk, held while the server pauses or writes). */
  private toServer(kind: number, callId: number, header?: Uint8Array, body?: Uint8Array): void {
    if (!this.closed) this.outbox.send(kind, callId, header, body);
  }

  private onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    // An error is reported as the stream's close (its RST code): the call is cancelled there.
    stream.on('error', ignoreStreamError);
    if (this.closed || this.paused) {
      // The server is not reading this session (its client does not take its replies): a new call
      // would only queue here. REFUSED_STREAM tells a gRPC client to retry it, elsewhere or later.
      safeClose(stream, h2.NGHTTP2_REFUSED_STREAM);
      return;
    }
    const contentType = headers[h2.HTTP2_HEADER_CONTENT_TYPE];
    if (headers[h2.HTTP2_HEADER_METHOD] !== 'POST' || !isGrpcContentType(typeof contentType === 'string' ? contentType : undefined)) {
      // Not gRPC: HTTP's answer, as the spec asks (no grpc-status).
      if (safeRespond(stream, { [h2.HTTP2_HEADER_STATUS]: 415, [h2.HTTP2_HEADER_CONTENT_TYPE]: 'text/plain' }, { endStream: false })) {
        stream.resume(); // the request's body is read and let go
        stream.end(`svrkit: a gRPC request is a POST with content-type application/grpc, got ${String(headers[h2.HTTP2_HEADER_METHOD])} ${String(contentType ?? '(none)')}\n`);
      }
      return;
    }
    const path = String(headers[h2.HTTP2_HEADER_PATH] ?? '');
    const method = path.startsWith('/') ? path.slice(1) : path;
    const timeout = headers['grpc-timeout'];
    let timeoutMs: number | undefined;
    if (timeout !== undefined) {
      timeoutMs = parseGrpcTimeout(String(timeout));
      if (timeoutMs === undefined) {
        statusOnly(stream, errors.GRPC_MALFORMED_TIMEOUT(String(timeout)));
        return;
      }
    }
    const kind = this.options.kindOf(method) ?? 2;
    const now = this.options.now();
    // The request header as it will be sent; refused now if it cannot fit in a frame.
    const header = requestHeader(method, kind, headers, timeoutMs);
    const encoded = encodeRequestHeader(header);
    const headerBytes = FRAME_PREFIX_BYTES + encoded.length;
    if (headerBytes > this.options.maxFrameBytes) {
      statusOnly(stream, errors.GRPC_HEADERS_TOO_LARGE(headerBytes, this.options.maxFrameBytes));
      return;
    }
    const call: BridgedCall = {
      id: this.allocateId(),
      method,
      stream,
      kind,
      // A unary or server-streaming request's message goes in the REQUEST frame, with the header.
      decoder: new GrpcMessageDecoder(this.options.maxFrameBytes - (kind <= 1 ? headerBytes : FRAME_PREFIX_BYTES)),
      credit: kind >= 2 ? new SendCredit() : NO_SEND_CREDIT,
      waiting: [],
      waitingBytes: 0,
      requested: false,
      uploading: kind <= 1,
      halfClosed: false,
      clientEnded: false,
      headersSent: false,
      ended: false,
      admitted: -1,
      partialSince: 0,
      startedAt: now,
      timeoutMs,
      progressAt: now,
      received: kind >= 1 ? new ReceiveCredit() : NO_RECEIVE_CREDIT,
      unsent: 0,
      trailers: undefined,
    };
    this.calls.set(call.id, call);
    if (call.uploading) this.uploads++;
    if (this.paused) stream.pause();
    stream.on('close', () => this.onStreamClosed(call));
    if (kind <= 1) {
      // Unary and server-streaming: the one request message goes with the REQUEST frame.
      stream.on('data', (chunk: Buffer) => {
        if (!this.receive(call, chunk)) return;
        if (call.waiting.length > 1) this.failRequest(call, errors.GRPC_MESSAGE_COUNT(method, call.waiting.length));
      });
      stream.on('end', () => {
        call.clientEnded = true;
        if (call.ended) return;
        if (call.decoder.pendingBytes > 0) {
          this.failRequest(call, errors.GRPC_TRUNCATED_MESSAGE(call.decoder.pendingBytes));
          return;
        }
        if (call.waiting.length !== 1) {
          this.failRequest(call, errors.GRPC_MESSAGE_COUNT(method, call.waiting.length));
          return;
        }
        // The deadline counts from the HEADERS: the upload took part of it (a smaller d encodes no longer).
        let bytes = encoded;
        if (timeoutMs !== undefined) {
          const d = Math.max(1, Math.ceil(timeoutMs - (this.options.now() - call.startedAt)));
          if (d !== header.d) {
            header.d = d;
            bytes = encodeRequestHeader(header);
          }
        }
        const message = call.waiting.pop()!;
        call.waitingBytes = 0;
        call.requested = true;
        this.toServer(FrameKind.REQUEST, call.id, bytes, message);
        // After the REQUEST: a PONG this upload held back may follow it now.
        this.endUpload(call);
      });
      return;
    }
    // Client-streaming and bidi (and unknown methods, which the server refuses): REQUEST at once,
    // then each message as the server's credit allows.
    call.requested = true;
    this.toServer(FrameKind.REQUEST, call.id, encoded);
    stream.on('data', (chunk: Buffer) => {
      if (this.receive(call, chunk)) this.sendWaiting(call);
    });
    stream.on('end', () => {
      call.clientEnded = true;
      if (call.ended) return;
      if (call.decoder.pendingBytes > 0) {
        this.failRequest(call, errors.GRPC_TRUNCATED_MESSAGE(call.decoder.pendingBytes));
        return;
      }
      call.halfClosed = true;
      this.sendWaiting(call);
    });
  }

  /**
   * Takes a DATA chunk of a call: complete messages go to `waiting`, a large one is admitted
   * against the server's budget, a partial one starts its timeout.
   * @returns false when the call failed or had ended.
   */
  private receive(call: BridgedCall, chunk: Buffer): boolean {
    if (call.ended) return false;
    call.progressAt = this.options.now();
    const d = call.decoder;
    let messages: Buffer[];
    try {
      messages = d.push(chunk);
    } catch (err) {
      this.failRequest(call, rpcErrorOf(err as GrpcFramingError));
      return false;
    }
    for (const m of messages) {
      // A copy: the view may share the DATA chunk, which a message should not keep alive.
      call.waiting.push(Buffer.from(m));
      call.waitingBytes += m.length;
    }
    const announced = d.announcedBytes;
    if (announced > LARGE_FRAME_BYTES && call.admitted !== d.messagesDecoded && this.options.admitLarge !== undefined) {
      const refused = this.options.admitLarge(announced);
      if (refused !== undefined) {
        this.failRequest(call, refused);
        return false;
      }
      call.admitted = d.messagesDecoded;
    }
    if (d.pendingBytes === 0) call.partialSince = 0;
    else if (call.partialSince === 0 || messages.length > 0) call.partialSince = this.options.now();
    return true;
  }

  /** A unary or server-streaming request finished uploading (or ended without): PONGs may go. */
  private endUpload(call: BridgedCall): void {
    if (!call.uploading) return;
    call.uploading = false;
    this.uploads--;
    if (this.uploads === 0 && this.pendingPongs.length > 0) {
      const pongs = this.pendingPongs;
      this.pendingPongs = [];
      for (const id of pongs) this.toServer(FrameKind.PONG, id);
    }
  }

  /**
   * The server's PING (the one after its GOAWAY): sent on as an HTTP/2 PING, and answered once the
   * client acked it, when the streams it opened before it saw the GOAWAY have all arrived, and no
   * unary request is mid-upload (its REQUEST must reach the server first). A session that cannot
   * be pinged (closing, failed, too many PINGs out) has nothing more on its way, and a client that
   * does not ack within `pingTimeoutMs` is not waited for: the server is answered then.
   */
  private pingClient(id: number): void {
    const ping = { id, answered: false };
    const timer = setTimeout(() => this.answerPing(ping), this.options.pingTimeoutMs ?? 10_000);
    timer.unref();
    // On the next turn: node:http2 puts a PING submitted in the same turn as a GOAWAY before it.
    setImmediate(() => {
      if (ping.answered) return;
      let sent = false;
      if (!this.closed && !this.session.closed && !this.session.destroyed) {
        try {
          sent = this.session.ping(() => {
            clearTimeout(timer);
            this.answerPing(ping);
          });
        } catch {
          // Closing already.
        }
      }
      if (!sent) {
        clearTimeout(timer);
        this.answerPing(ping);
      }
    });
  }

  /**
   * Gives the server the PONG of `ping`, once, after any unary request still uploading; and sends
   * the client the final GOAWAY at once (`session.close()`: the streams being served finish, and
   * the session closes after the last one). nghttp2 may ignore a stream that arrives after its
   * first GOAWAY (node cannot send its shutdown notice instead), so the final GOAWAY, with the
   * last stream id served, is what tells the client that those were not processed, and to retry
   * them elsewhere.
   */
  private answerPing(ping: { id: number; answered: boolean }): void {
    if (ping.answered) return;
    ping.answered = true;
    if (this.closed) return;
    if (this.uploads > 0) this.pendingPongs.push(ping.id);
    else this.toServer(FrameKind.PONG, ping.id);
    if (!this.session.closed && !this.session.destroyed) {
      try {
        this.session.close();
      } catch {
        // Closing already.
      }
    }
  }

  /** The HTTP/2 stream closed: a call the server still runs was reset by the client, so it is cancelled. */
  private onStreamClosed(call: BridgedCall): void {
    // node:http2 destroys a closing session with its last stream; its 'close' may wait for the
    // client's TCP close, but for the server the connection is over now.
    if (this.session.destroyed) setImmediate(() => this.onSessionClosed());
    if (call.unsent > 0) {
      this.unsent -= call.unsent;
      this.emit('drain');
    }
    call.unsent = -1;
    this.endUpload(call);
    if (call.ended) return;
    call.ended = true;
    this.calls.delete(call.id);
    // Whatever the RST_STREAM code (statusOfRstStream), the server hears that the client gave up.
    if (call.requested) this.toServer(FrameKind.CANCEL, call.id, encodeStatusHeader(Status.CANCELLED));
  }

  /** Sends the request messages the server's credit allows; pauses the HTTP/2 stream past it. */
  private sendWaiting(call: BridgedCall): void {
    while (call.waiting.length > 0 && call.credit.available) {
      const m = call.waiting.shift()!;
      call.waitingBytes -= m.length;
      call.credit.spend(m.length);
      this.toServer(FrameKind.MESSAGE, call.id, undefined, m);
    }
    if (call.waiting.length > 0) {
      call.stream.pause();
      return;
    }
    if (!this.paused && call.stream.isPaused()) {
      if (call.partialSince > 0) call.partialSince = this.options.now();
      call.stream.resume();
    }
    if (call.halfClosed) {
      call.halfClosed = false;
      this.toServer(FrameKind.HALF_CLOSE, call.id);
    }
  }

  /** A request that cannot be read: the call ends with `err`'s status, and the server forgets it. */
  private failRequest(call: BridgedCall, err: RpcError): void {
    if (call.ended) return;
    call.ended = true;
    this.calls.delete(call.id);
    this.endUpload(call);
    call.waiting.length = 0;
    call.waitingBytes = 0;
    call.partialSince = 0;
    if (call.requested) this.toServer(FrameKind.CANCEL, call.id, encodeStatusHeader(Status.CANCELLED));
    this.sendStatus(call, err.code, err.message, undefined);
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
        this.pingClient(callId);
        return;
      case FrameKind.GOAWAY:
        // The server drains: no new streams from this client; the ones it sent us finish.
        if (!this.closed && !this.session.closed && !this.session.destroyed) {
          try {
            this.session.goaway(h2.NGHTTP2_NO_ERROR, 2 ** 31 - 1);
          } catch (err) {
            this.options.log?.('svrkit server: could not send HTTP/2 GOAWAY', err);
          }
        }
        return;
      case FrameKind.WINDOW: {
        const call = this.calls.get(callId);
        const w = decodeWindow(body);
        // Only client-streaming and bidi calls send request messages, so only they take credit.
        if (call === undefined || w === undefined || call.kind < 2) return;
        call.credit.grant(w.messages, w.bytes);
        this.sendWaiting(call);
        return;
      }
      case FrameKind.MESSAGE: {
        const call = this.calls.get(callId);
        if (call === undefined) return;
        if (!this.sendHeaders(call, header.length > 0 ? decodeStatusHeader(header).md : undefined)) return;
        this.sendMessage(call, body, call.kind >= 1);
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
          if (!this.sendHeaders(call, h?.md)) return;
          // The message and the end of the stream in one write; the trailers (OK) follow.
          this.sendMessage(call, body, false, true);
          return;
        }
        this.sendStatus(call, status, h?.e, h?.md);
        return;
      }
      default:
        return;
    }
  }

  /**
   * Writes a response message to the call's stream, counted in `writableLength` until HTTP/2
   * takes it; a stream message's bytes are then granted back to the server as credit. `last` ends
   * the stream with it (a unary reply: the OK trailers follow).
   */
  private sendMessage(call: BridgedCall, body: Buffer, credit: boolean, last = false): void {
    const stream = call.stream;
    if (call.unsent < 0 || stream.destroyed || stream.writableEnded) return;
    const framed = frameGrpcMessage(body);
    const n = framed.length;
    call.unsent += n;
    this.unsent += n;
    const written = (): void => {
      if (call.unsent < 0) return; // the stream closed, and its bytes were let go then
      call.unsent -= n;
      this.unsent -= n;
      this.emit('drain');
      if (!credit || call.ended) return;
      const grant = call.received.consumed(body.length);
      if (grant !== undefined) this.toServer(FrameKind.WINDOW, call.id, undefined, encodeWindow(grant.messages, grant.bytes));
    };
    if (last) stream.end(framed, written);
    else stream.write(framed, written);
  }

  /**
   * Sends the response headers once, with `md` as metadata.
   * @returns false when the stream cannot take them (it closed, or HTTP/2 refused them: it is reset).
   */
  private sendHeaders(call: BridgedCall, md: Metadata | undefined): boolean {
    if (call.headersSent) return !call.stream.destroyed;
    call.headersSent = true;
    const stream = call.stream;
    const headers: Record<string, string | number> =
      md === undefined ? { [h2.HTTP2_HEADER_STATUS]: 200, [h2.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc' } : { ...this.outgoing(call, md), [h2.HTTP2_HEADER_STATUS]: 200, [h2.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc' };
    if (!safeRespond(stream, headers, { waitForTrailers: true }, this.options.log)) {
      this.abandon(call);
      return false;
    }
    stream.on('wantTrailers', () => {
      try {
        stream.sendTrailers(call.trailers ?? { 'grpc-status': '0' });
        // The call is over: a client still sending is told to stop (as grpc-go does).
        if (!call.clientEnded) safeClose(stream, h2.NGHTTP2_NO_ERROR);
      } catch (err) {
        this.options.log?.(`svrkit server: could not send the trailers of gRPC call ${call.method}`, err);
        safeClose(stream, h2.NGHTTP2_INTERNAL_ERROR);
      }
    });
    return true;
  }

  /** Ends the call with a status: trailers after headers were sent, else Trailers-Only. */
  private sendStatus(call: BridgedCall, status: number, message: string | undefined, md: Metadata | undefined): void {
    const stream = call.stream;
    if (stream.closed || stream.destroyed) return;
    const trailers: Record<string, string> = { ...this.outgoing(call, md), 'grpc-status': String(status) };
    if (message !== undefined && message !== '') trailers['grpc-message'] = encodeGrpcMessage(message);
    if (!call.headersSent) {
      call.headersSent = true;
      if (safeRespond(stream, { ...trailers, [h2.HTTP2_HEADER_STATUS]: 200, [h2.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc' }, { endStream: true }, this.options.log) && !call.clientEnded) {
        // The call is over: a client still sending is told to stop (as grpc-go does).
        safeClose(stream, h2.NGHTTP2_NO_ERROR);
      }
      return;
    }
    call.trailers = trailers;
    if (!stream.writableEnded) stream.end();
  }

  /** Response metadata HTTP/2 can carry (the rest is logged and left out). */
  private outgoing(call: BridgedCall, md: Metadata | undefined): Record<string, string> {
    if (md === undefined) return {};
    // svrkit's pushback (FastReject's retry hint) is gRFC A6's for a gRPC client.
    const pushback = md['svrkit-retry-pushback-ms'];
    if (pushback !== undefined) {
      md = { ...md, 'grpc-retry-pushback-ms': pushback };
      delete md['svrkit-retry-pushback-ms'];
    }
    const { headers, dropped } = grpcMetadataHeaders(md);
    if (dropped.length > 0) this.options.log?.(`svrkit server: gRPC call ${call.method}: response metadata ${dropped.map((k) => JSON.stringify(k)).join(', ')} left out (not a gRPC metadata key, or a value HTTP/2 cannot carry)`);
    return headers;
  }

  /** A call whose stream could not take its response: the server's call is cancelled. */
  private abandon(call: BridgedCall): void {
    if (call.ended) return;
    call.ended = true;
    this.calls.delete(call.id);
    if (call.requested) this.toServer(FrameKind.CANCEL, call.id, encodeStatusHeader(Status.CANCELLED));
  }
}

/** The 'error' listener of every stream (see `onStream`). */
function ignoreStreamError(): void {}

/** Unary calls use no credit: one shared placeholder of each kind, never spent nor granted. */
const NO_SEND_CREDIT = new SendCredit();
const NO_RECEIVE_CREDIT = new ReceiveCredit();

/** The svrkit request header of a gRPC call: method, kind, deadline, metadata and ticket. */
function requestHeader(method: string, kind: number, headers: IncomingHttpHeaders, timeoutMs: number | undefined): RequestHeader {
  const md: Metadata = {};
  let ticket: string | undefined;
  let mdCount = 0;
  for (const k in headers) {
    if (k.charCodeAt(0) === 0x3a) continue; // ':path' and the other pseudo-headers
    const v = headers[k];
    if (v === undefined) continue;
    const value = Array.isArray(v) ? v.join(', ') : String(v);
    if (k === 'authorization') {
      const m = /^Bearer\s+(\S+)$/i.exec(value);
      if (m !== null) {
        ticket = m[1];
        continue;
      }
    }
    if (isGrpcMetadataKey(k)) {
      md[k] = value;
      mdCount++;
    }
  }
  const header: RequestHeader = { m: method, k: kind };
  if (timeoutMs !== undefined) header.d = Math.max(1, Math.ceil(timeoutMs));
  if (mdCount > 0) header.md = md;
  if (ticket !== undefined) header.tk = ticket;
  return header;
}


/** The catalogue's error for a gRPC message the decoder refused. */
function rpcErrorOf(err: GrpcFramingError): RpcError {
  if (!(err instanceof GrpcFramingError)) throw err;
  if (err.status === Status.RESOURCE_EXHAUSTED) return errors.GRPC_MESSAGE_TOO_LARGE(err.message);
  if (err.status === Status.UNIMPLEMENTED) return errors.GRPC_MESSAGE_COMPRESSED(err.message);
  return errors.GRPC_MALFORMED_MESSAGE(err.message);
}

/**
 * `stream.respond`, unless the stream closed; false (and the stream reset) when HTTP/2 refuses the
 * headers (node:http2 throws for a closed stream or an invalid header).
 */
function safeRespond(stream: ServerHttp2Stream, headers: Record<string, string | number>, options: { endStream?: boolean; waitForTrailers?: boolean }, log?: (message: string, error?: unknown) => void): boolean {
  if (stream.closed || stream.destroyed || stream.headersSent) return false;
  try {
    stream.respond(headers, options);
    return true;
  } catch (err) {
    log?.('svrkit server: could not send a gRPC response', err);
    safeClose(stream, h2.NGHTTP2_INTERNAL_ERROR);
    return false;
  }
}

/** Resets a stream with `code`, unless it is gone already. */
function safeClose(stream: ServerHttp2Stream, code: number): void {
  if (stream.closed || stream.destroyed) return;
  try {
    stream.close(code);
  } catch {
    stream.destroy();
  }
}

/** Answers a stream with a status only (Trailers-Only), before any call was made of it. */
function statusOnly(stream: ServerHttp2Stream, err: RpcError): void {
  const sent = safeRespond(stream, { [h2.HTTP2_HEADER_STATUS]: 200, [h2.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc', 'grpc-status': String(err.code), 'grpc-message': encodeGrpcMessage(err.message) }, { endStream: true });
  // A client still sending is told to stop.
  if (sent && !stream.endAfterHeaders) safeClose(stream, h2.NGHTTP2_NO_ERROR);
}
