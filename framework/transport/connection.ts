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
 *   until `drain`, and (if asked) stops reading, so a peer that does not read cannot make us buffer
 *   without bound.
 * - A framing violation (oversized or malformed frame) sends GOAWAY with the reason and closes the
 *   connection; the process carries on.
 */
import type { ByteStream } from './transport.js';
import { FrameDecoder, FrameEncoder, FrameError, FrameKind, FRAME_PREFIX_BYTES } from '../wire/frame.js';
import { encodeStatusHeader } from '../wire/header.js';
import type { RpcError } from '../wire/status.js';
import { errors } from '../errors.js';

/** Callbacks from a connection to its owner. */
export interface ConnectionEvents {
  /** A complete frame arrived. `header`/`body` are views valid only during the call. */
  onFrame(kind: number, callId: number, header: Buffer, body: Buffer): void;
  /** A REQUEST/RESPONSE frame over the maximum size is being skipped (`size` in bytes). */
  onOversized(kind: number, callId: number, size: number): void;
  /** The socket closed; `error` is set when it closed because of one. Called once. */
  onClose(error: Error | undefined): void;
}

/** Connection settings. */
export interface ConnectionOptions {
  /** Largest frame accepted or sent, prefix included (bytes). */
  maxFrameBytes: number;
  /** Stop reading while writes are blocked (servers do, so a slow reader throttles itself). */
  pauseReadsWhileBlocked: boolean;
  /** The clock that stamps each chunk's arrival (`chunkAt`), epoch ms. Default `Date.now`. */
  now?: () => number;
}

/** How long a connection closed for a protocol error waits for its GOAWAY to flush (ms). */
const PROTOCOL_ERROR_LINGER_MS = 1000;

/** One framed connection; see the module comment. */
export class Connection {
  /** Remote address `host:port`. */
  readonly peer: string;
  /**
   * Epoch ms at which the chunk being parsed was read off the socket: the arrival time of every
   * frame in it (a frame handled late in a big chunk has queued since then).
   */
  chunkAt = 0;
  private readonly decoder: FrameDecoder;
  private readonly encoder = new FrameEncoder();
  private flushScheduled = false;
  private blocked = false;
  private closedFlag = false;
  /** Set once `end()` ran: nothing more is written. */
  private ended = false;
  private failed = false;
  private closeError: Error | undefined;
  private readonly flushBound = (): void => this.flush();
  private readonly now: () => number;

  /**
   * @param socket - a connected socket; the connection takes it over (listeners, no-delay).
   * @param options - limits and back-pressure policy.
   * @param events - the owner's callbacks.
   */
  constructor(
    readonly socket: ByteStream,
    private readonly options: ConnectionOptions,
    private readonly events: ConnectionEvents,
  ) {
    this.peer = formatAddress(socket.remoteAddress, socket.remotePort);
    this.now = options.now ?? Date.now;
    this.decoder = new FrameDecoder(options.maxFrameBytes, events.onFrame, events.onOversized);
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('drain', () => this.onDrain());
    socket.on('error', (err) => {
      this.closeError ??= err;
    });
    socket.on('close', () => {
      this.closedFlag = true;
      this.events.onClose(this.closeError);
    });
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
   * Queues a frame; it is written at the end of this event-loop turn.
   * Frames sent after the connection closed are dropped (their calls are failed by `onClose`).
   */
  send(kind: number, callId: number, header?: Uint8Array, body?: Uint8Array): void {
    if (this.closedFlag || this.ended || this.failed) return;
    this.encoder.write(kind, callId, header, body);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushBound);
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
    if (data === undefined) return;
    if (!this.socket.write(data)) {
      this.blocked = true;
      if (this.options.pauseReadsWhileBlocked) this.socket.pause();
    }
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
    this.chunkAt = this.now();
    try {
      this.decoder.push(chunk);
    } catch (err) {
      if (!(err instanceof FrameError)) throw err;
      this.protocolError(err);
    }
  }

  /** Answers a framing violation: GOAWAY with the reason, then close. */
  private protocolError(err: FrameError): void {
    const error = /exceeds the maximum/.test(err.message) ? errors.FRAME_TOO_LARGE : errors.MALFORMED_FRAME;
    this.closeError ??= err;
    this.send(FrameKind.GOAWAY, 0, encodeStatusHeader(error.status, error.message(err), undefined, false, undefined, error.reason));
    this.failed = true;
    this.socket.pause();
    this.end();
    setTimeout(() => this.socket.destroy(), PROTOCOL_ERROR_LINGER_MS).unref();
  }

  private onDrain(): void {
    this.blocked = false;
    if (this.ended) return;
    if (this.options.pauseReadsWhileBlocked && !this.failed) this.socket.resume();
    if (this.encoder.length > 0) this.flush();
  }
}

/** Formats an address as `host:port`, bracketing IPv6 hosts (`[::1]:7000`). */
export function formatAddress(host: string | undefined, port: number | undefined): string {
  const h = host ?? 'unknown';
  return h.includes(':') ? `[${h}]:${port ?? 0}` : `${h}:${port ?? 0}`;
}
