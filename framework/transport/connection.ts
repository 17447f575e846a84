/**
 * A framed, multiplexed connection over one TCP socket: the transport under both the server and
 * the client.
 *
 * - Reading: socket chunks go through a FrameDecoder synchronously; each frame is handed to the
 *   owner's `onFrame` in the same tick, with no await per frame.
 * - Writing: `send` appends the frame to a per-connection buffer and schedules one flush per
 *   event-loop turn (`setImmediate`), so every frame produced while handling a batch of input
 *   leaves in a single `write(2)`. A loopback send costs microseconds, so unbatched writes would
 *   cap throughput (DESIGN.md section 3).
 * - Back-pressure: when `socket.write` reports a full kernel buffer, the connection stops writing
 *   until `drain`, and (if asked) stops reading. With `maxQueuedBytes`, it also stops reading
 *   while more than that many bytes wait for the peer (queued here or in the socket), and reads
 *   again, telling its owner (`onWritable`), once they are down to half: a peer that does not read
 *   cannot make us buffer without bound (the owner holds back the calls it already read).
 * - It tracks when the frame being received started arriving (`partialSince`) and when the last
 *   frame arrived (`lastFrameAt`), for its owner's read and idle timeouts (`abort` closes with a
 *   GOAWAY reason).
 * - A framing violation (oversized or malformed frame) sends GOAWAY with the reason and closes the
 *   connection; the process carries on.
 */
import { detectForeignProtocol, describeForeignProtocol, type ForeignProtocol } from '../wire/foreign-protocol.js';
import { EventEmitter } from 'node:events';
import type { ByteStream } from './transport.js';
import { FrameDecoder, FrameEncoder, FrameError, FrameKind, FRAME_PREFIX_BYTES, type FrameSink } from '../wire/frame.js';
import { encodeStatusHeader } from '../wire/header.js';
import type { RpcError } from '../wire/status.js';
import { errors } from '../errors.js';

/**
 * Callbacks from a connection to its owner, called as methods of the object given (an owner can
 * implement them itself: no closure per connection).
 */
export interface ConnectionEvents extends FrameSink {
  /** A complete frame arrived. `header`/`body` are views valid only during the call. */
  onFrame(kind: number, callId: number, header: Buffer, body: Buffer): void;
  /** A REQUEST/RESPONSE/MESSAGE frame over the maximum size is being skipped (`size` in bytes). */
  onOversized(kind: number, callId: number, size: number): void;
  /** The socket closed; `error` is set when it closed because of one. Called once. */
  onClose(error: Error | undefined): void;
  /** The bytes waiting for the peer fell to half of `maxQueuedBytes` after exceeding it: reading resumed. */
  onWritable?(): void;
  /** Asked before a large frame is buffered (see `LargeFrameListener`). */
  onLarge?(kind: number, callId: number, size: number): boolean;
  /** The peer's first bytes are another protocol's (`detectForeignProtocol`); the connection is then closed as malformed. */
  onForeignProtocol?(protocol: ForeignProtocol, description: string): void;
}

/** Connection settings. */
export interface ConnectionOptions {
  /** Largest frame accepted or sent, prefix included (bytes). */
  maxFrameBytes: number;
  /** Stop reading while writes are blocked (servers do, so a slow reader throttles itself). */
  pauseReadsWhileBlocked: boolean;
  /** The clock that stamps each chunk's arrival (`chunkAt`), epoch ms. Default `Date.now`. */
  now?: () => number;
  /**
   * Stop reading while more than this many bytes wait for the peer (bytes; queued frames and the
   * socket's own buffer), until they are down to half. Default: no limit.
   */
  maxQueuedBytes?: number;
}

/** How long a connection closed for a protocol error waits for its GOAWAY to flush (ms). */
const PROTOCOL_ERROR_LINGER_MS = 1000;

/**
 * The property of a socket that holds its connection. On an EventEmitter (a `net.Socket`, a TLS
 * socket, the memory transport's), the socket's listeners are shared functions that find their
 * connection through it (an emitter calls a listener with `this` set to itself), so a connection
 * costs no closure per listener: a server holds one per client. Any other `ByteStream` gets a
 * closure per listener.
 */
const OWNER = Symbol('svrkit.connection');

/** A socket taken over by a connection. */
type OwnedSocket = { [OWNER]: Connection };

/** One framed connection; see the module comment. */
export class Connection {
  /** The peer's address once read (see `peer`). */
  private peerAddress: string | undefined;
  /** The owner's callbacks. */
  private readonly events: ConnectionEvents;
  /**
   * Epoch ms at which the chunk being parsed was read off the socket: the arrival time of every
   * frame in it (a frame handled late in a big chunk has queued since then).
   */
  chunkAt = 0;
  /** Epoch ms the frame being received started arriving (its first chunk was read); 0 between frames. */
  partialSince = 0;
  /** Epoch ms the last complete frame arrived (the connection's start before any). */
  lastFrameAt: number;
  private readonly decoder: FrameDecoder;
  /** Reading is paused because more than `maxQueuedBytes` wait for the peer. */
  private overCapPaused = false;
  /** Why the owner holds reads (`holdReads`): what it read already holds too much. Undefined or empty: not held. */
  private holds: Set<string> | undefined;
  /** Epoch ms since which more than `maxQueuedBytes` wait and the peer took none of them (0: not so). */
  stalledSince = 0;
  private readonly encoder = new FrameEncoder();
  private flushScheduled = false;
  private blocked = false;
  private closedFlag = false;
  /** Set once `end()` ran: nothing more is written. */
  private ended = false;
  private failed = false;
  private closeError: Error | undefined;
  /** The settings, kept by reference: a server shares one object among its connections. */
  private readonly options: ConnectionOptions;

  /**
   * @param socket - a connected socket; the connection takes it over (its listeners, no-delay,
   *   and, on an EventEmitter, a property that names its connection).
   * @param options - limits and back-pressure policy (kept, and not to be changed after).
   * @param events - the owner's callbacks, called as methods of this object.
   */
  constructor(
    readonly socket: ByteStream,
    options: ConnectionOptions,
    events: ConnectionEvents,
  ) {
    this.events = events;
    this.options = options;
    this.lastFrameAt = this.now();
    this.decoder = new FrameDecoder(options.maxFrameBytes, events);
    socket.setNoDelay(true);
    if (socket instanceof EventEmitter && Object.isExtensible(socket)) {
      (socket as unknown as OwnedSocket)[OWNER] = this;
      socket.on('data', Connection.socketData);
      socket.on('drain', Connection.socketDrain);
      socket.on('error', Connection.socketError);
      socket.on('close', Connection.socketClose);
    } else {
      socket.on('data', (chunk: Buffer) => this.onData(chunk));
      socket.on('drain', () => this.onDrain());
      socket.on('error', (err) => {
        this.closeError ??= err;
      });
      socket.on('close', () => this.onSocketClose());
    }
  }

  /**
   * Remote address `host:port`, read from the socket the first time it is asked for (a server
   * with many idle connections keeps no address it was never asked for). A TCP or TLS socket no
   * longer knows it once closed: read first after that, it is `unknown:0`.
   */
  get peer(): string {
    return (this.peerAddress ??= formatAddress(this.socket.remoteAddress, this.socket.remotePort));
  }

  /** The connection's clock (`ConnectionOptions.now`), epoch ms. */
  private now(): number {
    const now = this.options.now;
    return now === undefined ? Date.now() : now();
  }

  // The socket's listeners, shared by every connection (see `OWNER`).
  private static socketData(this: OwnedSocket, chunk: Buffer): void {
    this[OWNER].onData(chunk);
  }

  private static socketDrain(this: OwnedSocket): void {
    this[OWNER].onDrain();
  }

  private static socketError(this: OwnedSocket, error: Error): void {
    this[OWNER].closeError ??= error;
  }

  private static socketClose(this: OwnedSocket): void {
    this[OWNER].onSocketClose();
  }

  private onSocketClose(): void {
    this.closedFlag = true;
    this.events.onClose(this.closeError);
  }

  /** The end-of-turn flush `send` schedules (`setImmediate(flushOf, connection)`: no closure per connection). */
  private static flushOf(c: Connection): void {
    c.flush();
  }

  /** True once the socket has closed. */
  get closed(): boolean {
    return this.closedFlag;
  }

  /** Bytes queued in this connection and in the socket, not yet handed to the kernel. */
  get queuedBytes(): number {
    return this.encoder.length + this.socket.writableLength;
  }

  /**
   * Whether more than `maxQueuedBytes` waited for the peer and not yet half of them drained
   * (reading is paused meanwhile). `send` is the only way bytes start to wait, and it sets this.
   */
  get overCap(): boolean {
    return this.overCapPaused;
  }

  /** Bytes of the frame being received, once complete (its announced size; 0 between frames). */
  get pendingFrameBytes(): number {
    return this.decoder.pendingFrameBytes;
  }

  /**
   * Queues a frame; it is written at the end of this event-loop turn.
   * Frames sent after the connection closed are dropped (their calls are failed by `onClose`).
   */
  send(kind: number, callId: number, header?: Uint8Array, body?: Uint8Array): void {
    if (this.closedFlag || this.ended || this.failed) return;
    this.encoder.write(kind, callId, header, body);
    if (!this.overCapPaused && this.encoder.length + this.socket.writableLength > (this.options.maxQueuedBytes ?? Infinity)) {
      this.overCapPaused = true;
      this.stalledSince = this.now();
      this.socket.pause();
    }
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(Connection.flushOf, this);
    }
  }

  /** Whether a frame with this header and body fits the maximum frame size. */
  fits(header: Uint8Array | undefined, body: Uint8Array | undefined): boolean {
    return FRAME_PREFIX_BYTES + (header?.length ?? 0) + (body?.length ?? 0) <= this.options.maxFrameBytes;
  }

  /** Writes queued frames now (normally called once per event-loop turn). */
  flush(): void {
    this.flushScheduled = false;
    if (this.blocked || this.closedFlag || this.ended) return;
    const data = this.encoder.take();
    if (data !== undefined && !this.socket.write(data)) {
      this.blocked = true;
      if (this.options.pauseReadsWhileBlocked) this.socket.pause();
    }
    this.checkWritable();
  }

  /** Resumes reading once the bytes waiting for the peer are down to half the cap, and tells the owner. */
  private checkWritable(): void {
    if (!this.overCapPaused || this.socket.writableLength + this.encoder.length > (this.options.maxQueuedBytes ?? Infinity) / 2) return;
    this.overCapPaused = false;
    this.stalledSince = 0;
    if (this.failed || this.ended || this.closedFlag) return;
    if (!(this.blocked && this.options.pauseReadsWhileBlocked) && !this.held) this.resumeReading();
    this.events.onWritable?.();
  }

  /** Whether the owner holds reads (`holdReads`) for any reason. */
  private get held(): boolean {
    return this.holds !== undefined && this.holds.size > 0;
  }

  /** Whether this side stopped reading (its peer is slow to take what it sent, or the owner holds reads). */
  get readPaused(): boolean {
    return this.overCapPaused || this.held || (this.blocked && this.options.pauseReadsWhileBlocked);
  }

  /**
   * Stops reading at the owner's request, for `reason` (what it read from this peer and has not
   * handled yet holds too much), until `releaseReads(reason)`. Frames of the chunk being parsed
   * are still delivered. Idempotent per reason.
   */
  holdReads(reason: string): void {
    if (!this.held) this.socket.pause();
    (this.holds ??= new Set()).add(reason);
  }

  /** Ends `holdReads(reason)`: reads again once no reason to pause is left. Idempotent. */
  releaseReads(reason: string): void {
    if (this.holds === undefined || !this.holds.delete(reason) || this.holds.size > 0) return;
    this.holds = undefined;
    if (this.failed || this.ended || this.closedFlag || this.overCapPaused) return;
    if (!(this.blocked && this.options.pauseReadsWhileBlocked)) this.resumeReading();
  }

  /** Reads again; a frame that was arriving gets a fresh read timeout (the pause was this side's). */
  private resumeReading(): void {
    if (this.partialSince > 0) this.partialSince = this.now();
    this.socket.resume();
  }

  /**
   * Closes the connection for `error`: sends GOAWAY with its status, message and reason, stops
   * reading, half-closes, and destroys the socket a second later if the peer has not closed.
   */
  abort(error: RpcError): void {
    if (this.closedFlag || this.failed) return;
    this.closeError ??= error;
    this.send(FrameKind.GOAWAY, 0, encodeStatusHeader(error.code, error.message, undefined, false, undefined, error.reason));
    this.failed = true;
    this.socket.pause();
    this.end();
    setTimeout(() => this.socket.destroy(), PROTOCOL_ERROR_LINGER_MS).unref();
  }

  /**
   * Sends GOAWAY and flushes; the connection stays open.
   * @param error - why (its code, message and reason go in the header), or undefined for none.
   */
  goaway(error?: RpcError): void {
    this.send(FrameKind.GOAWAY, 0, error === undefined ? undefined : encodeStatusHeader(error.code, error.message, undefined, false, undefined, error.reason));
    this.flush();
  }

  /**
   * Writes what is queued (even while back-pressured: the socket buffers it), then half-closes;
   * the socket closes when the peer closes its side. Frames sent after this are dropped.
   */
  end(): void {
    if (this.closedFlag || this.ended) return;
    this.ended = true;
    const data = this.encoder.take();
    if (data !== undefined) this.socket.write(data);
    this.socket.end();
  }

  /** Whether `end()` has run (or the socket closed). */
  get ending(): boolean {
    return this.ended || this.closedFlag;
  }

  /** Closes the socket at once; queued frames are lost. */
  destroy(error?: Error): void {
    if (error !== undefined) this.closeError ??= error;
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    if (this.failed) return;
    const now = (this.chunkAt = this.now());
    const before = this.decoder.framesCompleted;
    const wasPartial = this.decoder.partial;
    // The stream's first bytes: another protocol's are named now. (A grpc-go server's SETTINGS
    // would read as a svrkit frame of 1,540 bytes, and the decoder would wait for the rest.)
    if (before === 0 && !wasPartial && this.foreignProtocol(chunk)) return;
    try {
      this.decoder.push(chunk);
      if (this.decoder.framesCompleted !== before) this.lastFrameAt = now;
      // A frame that started in this chunk started now; one still arriving keeps its start.
      if (!this.decoder.partial) this.partialSince = 0;
      else if (!wasPartial || this.decoder.framesCompleted !== before) this.partialSince = now;
    } catch (err) {
      if (!(err instanceof FrameError)) throw err;
      this.protocolError(err);
    }
  }

  /**
   * When `first` (the stream's first bytes) are another protocol's (`detectForeignProtocol`):
   * tells the owner, and closes the connection as malformed, with an error that names the
   * protocol and what to do.
   * @returns true when it did.
   */
  private foreignProtocol(first: Buffer): boolean {
    const foreign = detectForeignProtocol(first);
    if (foreign === undefined || foreign === 'more') return false;
    const described = describeForeignProtocol(foreign);
    const err = new Error(`protocol error: ${described}`);
    this.closeError ??= err;
    this.events.onForeignProtocol?.(foreign, described);
    this.abort(errors.MALFORMED_FRAME(err));
    return true;
  }

  /** Answers a framing violation: GOAWAY with the reason, then close. */
  private protocolError(err: FrameError): void {
    const error = /exceeds the maximum/.test(err.message) ? errors.FRAME_TOO_LARGE : errors.MALFORMED_FRAME;
    this.closeError ??= err;
    this.abort(error(err));
  }

  private onDrain(): void {
    this.blocked = false;
    // The peer took bytes: not stalled, whatever still waits.
    if (this.stalledSince > 0) this.stalledSince = this.now();
    if (this.ended) return;
    if (this.options.pauseReadsWhileBlocked && !this.failed && !this.overCapPaused && !this.held) this.resumeReading();
    if (this.encoder.length > 0) this.flush();
    else this.checkWritable();
  }
}

/**
 * Formats an address as `host:port`, bracketing IPv6 hosts (`[::1]:7000`).
 * @param host - the address (undefined: `unknown`); `port` - the port (undefined: 0).
 * @returns a flat string: `join` builds one, where `+` and templates build a tree of string pieces
 *   (three heap objects instead of one, for a string a server keeps per connection).
 */
export function formatAddress(host: string | undefined, port: number | undefined): string {
  const h = host ?? 'unknown';
  return (h.includes(':') ? ['[', h, ']:', port ?? 0] : [h, ':', port ?? 0]).join('');
}
