/**
 * The frame codec: pure byte manipulation, no sockets.
 *
 * A frame on the wire is
 *
 * ```
 * u32 length | u8 kind | u32 callId | u32 headerLength | header | body
 * ```
 *
 * all big-endian; `length` counts every byte after the length field itself (so the smallest
 * frame has length 9). The header is msgpack (see header.ts), the body protobuf. Splitting them
 * with an explicit header length lets the receiver decode the header, and decide, before it
 * touches the body. Many calls share one connection; `callId` matches responses to requests.
 */

/** Frame kinds. */
export const FrameKind = {
  /** A call: header = request header, body = request message. */
  REQUEST: 1,
  /** The end of a call: header = response header (empty means OK), body = response message. */
  RESPONSE: 2,
  /** The client gave up on `callId`; header = `{ s: CANCELLED | DEADLINE_EXCEEDED }` (may be empty); no body. */
  CANCEL: 3,
  /** Liveness probe; the peer answers PONG with the same callId. */
  PING: 4,
  /** Answer to PING. */
  PONG: 5,
  /** The sender stops taking new calls on this connection; header may carry a status and reason. */
  GOAWAY: 6,
  /**
   * One message of a stream, either way. Body = the message. The server's first MESSAGE of a
   * call may carry a status header `{ s: OK, md }` with the response metadata (headers); every
   * other MESSAGE has an empty header.
   */
  MESSAGE: 7,
  /** The client has sent its last request message of a client-streaming or bidi call. No header, no body. */
  HALF_CLOSE: 8,
  /**
   * Flow-control credit for `callId`: the receiver's consumer took messages, so the sender may send
   * that many more. Body = u32 messages | u32 bytes (see `encodeWindow`); no header.
   */
  WINDOW: 9,
  /**
   * Client to server: defines a ticket on this connection. callId = the ticket's id (the client's,
   * never reused for another ticket), header = `{ tk: ticket }`, no body. Requests then refer to it
   * with `ti` instead of carrying it (as HPACK's dynamic table does for repeated headers). Each
   * side keeps the last `MAX_CONNECTION_TICKETS` defined, dropping the oldest definition first,
   * so both hold the same set; the client defines a ticket again before referring to one it dropped.
   */
  TICKET: 10,
} as const;

/** The longest ticket svrkit sends or accepts (characters of a JWS compact string: base64url and dots). */
export const MAX_TICKET_LENGTH = 8192;

/** Tickets a connection keeps defined (see `FrameKind.TICKET`): both ends drop the oldest definition past it. */
export const MAX_CONNECTION_TICKETS = 64;

/**
 * The credit a stream's sender starts with, in each direction, before any WINDOW frame: like
 * HTTP/2's initial window (RFC 9113 section 6.9.2), but counted in messages and in bytes. A
 * sender may send while it has at least one message and one byte of credit (so one message may
 * overshoot the byte credit).
 */
export const INITIAL_STREAM_WINDOW = Object.freeze({ messages: 16384, bytes: 1024 * 1024 });

/**
 * Encodes a WINDOW frame's body.
 * @param messages - messages granted (u32).
 * @param bytes - body bytes granted (u32).
 * @returns 8 bytes.
 */
export function encodeWindow(messages: number, bytes: number): Uint8Array {
  const b = Buffer.allocUnsafe(8);
  b.writeUInt32BE(messages >>> 0, 0);
  b.writeUInt32BE(Math.min(bytes, 0xffffffff) >>> 0, 4);
  return b;
}

/**
 * Decodes a WINDOW frame's body.
 * @returns the grant, or undefined when the body is not 8 bytes.
 */
export function decodeWindow(body: Buffer): { messages: number; bytes: number } | undefined {
  if (body.length !== 8) return undefined;
  return { messages: body.readUInt32BE(0), bytes: body.readUInt32BE(4) };
}

/** Bytes before the header: length(4) + kind(1) + callId(4) + headerLength(4). */
export const FRAME_PREFIX_BYTES = 13;
/** The minimum value of the length field (kind + callId + headerLength). */
const MIN_LENGTH = FRAME_PREFIX_BYTES - 4;
/** Default maximum frame size, 16 MiB, counted as the whole frame including its prefix. */
export const DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024;

/** A violation of the framing itself; the connection cannot continue after one. */
export class FrameError extends Error {
  /** @param message - what was wrong, e.g. `frame of 4294967295 bytes exceeds the maximum 16777216`. */
  constructor(message: string) {
    super(message);
    this.name = 'FrameError';
  }
}

/** Receives each complete frame. `header` and `body` are views into the read buffer: copy to keep. */
export type FrameListener = (kind: number, callId: number, header: Buffer, body: Buffer) => void;

/**
 * Told about a REQUEST, RESPONSE or MESSAGE frame that exceeds the maximum size and is being skipped, so
 * the owner can fail that one call (gRPC fails an oversized message with RESOURCE_EXHAUSTED and
 * keeps the connection). `size` counts the whole frame in bytes.
 */
export type OversizedListener = (kind: number, callId: number, size: number) => void;

/**
 * Asked, once per frame, whether a frame of more than `LARGE_FRAME_BYTES` that has not fully
 * arrived may be buffered (a server-wide memory budget). Returning false skips a REQUEST or
 * MESSAGE frame without buffering it (the listener has then answered its call itself), and makes
 * any other kind a `FrameError`. `size` counts the whole frame in bytes.
 */
export type LargeFrameListener = (kind: number, callId: number, size: number) => boolean;

/**
 * Where a `FrameDecoder` delivers frames: its methods are called on it (so a connection can be its
 * own sink, with no closure per connection).
 */
export interface FrameSink {
  /** @see FrameListener */
  onFrame(kind: number, callId: number, header: Buffer, body: Buffer): void;
  /** @see OversizedListener (without it, an oversized frame is a `FrameError`). */
  onOversized?(kind: number, callId: number, size: number): void;
  /** @see LargeFrameListener (without it, every frame within the maximum is buffered). */
  onLarge?(kind: number, callId: number, size: number): boolean;
}

/** Frames above this size (bytes, prefix included) are checked with the `LargeFrameListener` before they are buffered. */
export const LARGE_FRAME_BYTES = 64 * 1024;

/** Shared view for empty headers and bodies (never written to). */
const EMPTY = Buffer.alloc(0);

/** Oversized REQUEST/RESPONSE frames up to this multiple of the maximum are skipped, not fatal. */
const SKIPPABLE_FACTOR = 4;

/**
 * Splits a byte stream into frames. Feed it socket chunks with `push`; it calls the listener once
 * per complete frame, synchronously, with zero-copy views. A frame split over chunks is joined
 * with a single copy once all its bytes have arrived.
 *
 * A REQUEST, RESPONSE or MESSAGE frame above the maximum size but within 4x of it is skipped without being
 * buffered, and reported to `onOversized`; anything else above the maximum is a `FrameError`
 * (random bytes almost always read as a far larger length, and are caught that way).
 */
export class FrameDecoder {
  /** The chunks of the frame being received (undefined between frames: an idle connection holds no array). */
  private chunks: Buffer[] | undefined;
  private buffered = 0;
  private needed = 0;
  private skipping = 0;
  /** Frames delivered or skipped so far (a frame boundary passed when it moves). */
  private completed = 0;

  private readonly maxFrameBytes: number;
  private readonly sink: FrameSink;

  /**
   * @param maxFrameBytes - largest acceptable frame, prefix included (bytes).
   * @param sink - where frames go: an object with `onFrame` (and optionally `onOversized` and
   *   `onLarge`), whose methods are called on it; or `onFrame` alone, as a function.
   * @param onOversized - with a function `sink`: called for each skipped oversized frame. Without
   *   one, oversized frames are `FrameError`s.
   * @param onLarge - with a function `sink`: asked before a large frame is buffered (see
   *   `LargeFrameListener`). Without one, every frame within the maximum is buffered.
   */
  constructor(maxFrameBytes: number, sink: FrameSink | FrameListener, onOversized?: OversizedListener, onLarge?: LargeFrameListener) {
    this.maxFrameBytes = maxFrameBytes;
    this.sink = typeof sink === 'function' ? { onFrame: sink, onOversized, onLarge } : sink;
  }

  /** Bytes received but not yet part of a complete frame. */
  get pendingBytes(): number {
    return this.buffered;
  }

  /**
   * Bytes the frame being received will hold once complete (its announced size, prefix
   * included), or what is buffered when its length is not known yet; 0 between frames.
   */
  get pendingFrameBytes(): number {
    return this.buffered === 0 ? 0 : Math.max(this.buffered, this.needed);
  }

  /** Whether a frame has started arriving and not finished (buffered, or being skipped). */
  get partial(): boolean {
    return this.buffered > 0 || this.skipping > 0;
  }

  /** Frames delivered or skipped so far: when it changes across a `push`, a frame boundary passed. */
  get framesCompleted(): number {
    return this.completed;
  }

  /**
   * Consumes a chunk.
   * @throws FrameError when a frame's length is below the minimum or above `maxFrameBytes` (and
   *   not skippable), or its header length exceeds the frame. Frames before the bad one have been
   *   delivered.
   */
  push(chunk: Buffer): void {
    if (this.skipping > 0) {
      if (chunk.length < this.skipping) {
        this.skipping -= chunk.length;
        return;
      }
      chunk = chunk.subarray(this.skipping);
      this.skipping = 0;
      this.completed++; // the skipped frame ended in this chunk
      if (chunk.length === 0) return;
    }
    let buf = chunk;
    if (this.buffered > 0) {
      const chunks = this.chunks!;
      chunks.push(chunk);
      this.buffered += chunk.length;
      if (this.buffered < this.needed) return;
      buf = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, this.buffered);
      this.chunks = undefined;
      this.buffered = 0;
    }
    const total = buf.length;
    let off = 0;
    while (total - off >= 4) {
      const length = buf.readUInt32BE(off);
      if (length + 4 > this.maxFrameBytes) {
        const size = length + 4;
        if (this.sink.onOversized === undefined || size > this.maxFrameBytes * SKIPPABLE_FACTOR) {
          throw new FrameError(`frame of ${size} bytes exceeds the maximum frame size ${this.maxFrameBytes}`);
        }
        if (total - off < 9) {
          this.needed = 9;
          break;
        }
        const kind = buf[off + 4]!;
        if (kind !== FrameKind.REQUEST && kind !== FrameKind.RESPONSE && kind !== FrameKind.MESSAGE) {
          throw new FrameError(`frame of ${size} bytes exceeds the maximum frame size ${this.maxFrameBytes}`);
        }
        this.sink.onOversized(kind, buf.readUInt32BE(off + 5), size);
        const available = total - off;
        if (available >= size) {
          this.completed++;
          off += size;
          continue;
        }
        this.skipping = size - available;
        off = total;
        break;
      }
      if (length < MIN_LENGTH) throw new FrameError(`frame length ${length} is below the minimum ${MIN_LENGTH}`);
      const end = off + 4 + length;
      if (end > total) {
        const size = 4 + length;
        if (this.sink.onLarge !== undefined && size > LARGE_FRAME_BYTES) {
          // Checked once, when the frame first shows incomplete: its kind and call id first.
          if (total - off < 9) {
            this.needed = 9;
            break;
          }
          const kind = buf[off + 4]!;
          if (!this.sink.onLarge(kind, buf.readUInt32BE(off + 5), size)) {
            // A request or stream message is skipped (its call was answered); any other frame
            // this large has no call to fail, and is a protocol error.
            if (kind !== FrameKind.REQUEST && kind !== FrameKind.MESSAGE) {
              throw new FrameError(`frame of ${size} bytes exceeds the maximum the server's buffer budget allows now`);
            }
            this.skipping = size - (total - off);
            off = total;
            break;
          }
        }
        this.needed = size;
        break;
      }
      const kind = buf[off + 4]!;
      const callId = buf.readUInt32BE(off + 5);
      const headerLength = buf.readUInt32BE(off + 9);
      if (headerLength > length - MIN_LENGTH) {
        throw new FrameError(`header length ${headerLength} exceeds frame length ${length}`);
      }
      const headerStart = off + FRAME_PREFIX_BYTES;
      const bodyStart = headerStart + headerLength;
      this.sink.onFrame(
        kind,
        callId,
        headerLength === 0 ? EMPTY : buf.subarray(headerStart, bodyStart),
        bodyStart === end ? EMPTY : buf.subarray(bodyStart, end),
      );
      this.completed++;
      off = end;
    }
    if (off < total) {
      const rest = off === 0 ? buf : buf.subarray(off);
      this.chunks = [rest];
      this.buffered = rest.length;
      if (rest.length < 4) this.needed = 4;
    }
  }
}

/** A batch's working buffer by default (bytes). */
const DEFAULT_ENCODER_BYTES = 64 * 1024;

/** Working buffers of the default size that no encoder is filling (see {@link FrameEncoder}). */
const idleBuffers: Buffer[] = [];
/** The most idle working buffers kept (64 KiB each). */
const MAX_IDLE_BUFFERS = 64;
const NO_BUFFER = Buffer.alloc(0);

/**
 * Accumulates outgoing frames in one growable buffer so that all frames written during an
 * event-loop turn leave in a single `write(2)` (write coalescing).
 *
 * An encoder holds its working buffer only while a batch is being filled: `take()` copies the
 * batch out and hands the buffer back to a small process-wide pool, from which the next batch (of
 * any connection) takes one. So an idle connection holds no buffer (10,000 idle connections held
 * 640 MiB of them, bench/inbox/notify.ts), and a busy one reuses the same few.
 */
export class FrameEncoder {
  private buf: Buffer = NO_BUFFER;
  private len = 0;

  /** @param initialBytes - capacity of a batch's working buffer in bytes; grows by doubling. */
  constructor(private readonly initialBytes = DEFAULT_ENCODER_BYTES) {}

  /** Bytes queued and not yet taken. */
  get length(): number {
    return this.len;
  }

  /**
   * Appends one frame.
   * @param kind - a `FrameKind` value.
   * @param callId - u32 call id.
   * @param header - header bytes (may be empty).
   * @param body - body bytes (may be empty).
   * @returns the frame's size in bytes, prefix included.
   */
  write(kind: number, callId: number, header: Uint8Array | undefined, body: Uint8Array | undefined): number {
    const hl = header === undefined ? 0 : header.length;
    const bl = body === undefined ? 0 : body.length;
    const size = FRAME_PREFIX_BYTES + hl + bl;
    let buf = this.buf;
    let off = this.len;
    if (buf === NO_BUFFER) {
      const pooled = this.initialBytes === DEFAULT_ENCODER_BYTES ? idleBuffers.pop() : undefined;
      this.buf = buf = pooled ?? Buffer.allocUnsafe(this.initialBytes);
    }
    if (off + size > buf.length) {
      const grown = Buffer.allocUnsafe(Math.max(buf.length * 2, off + size));
      buf.copy(grown, 0, 0, off);
      this.buf = buf = grown;
    }
    buf.writeUInt32BE(size - 4, off);
    buf[off + 4] = kind;
    buf.writeUInt32BE(callId >>> 0, off + 5);
    buf.writeUInt32BE(hl, off + 9);
    off += FRAME_PREFIX_BYTES;
    if (hl > 0) {
      buf.set(header!, off);
      off += hl;
    }
    if (bl > 0) {
      buf.set(body!, off);
      off += bl;
    }
    this.len = off;
    return size;
  }

  /**
   * Takes everything queued as a buffer of its own (exact size, so small batches come from Node's
   * buffer pool) and gives the working buffer back to the pool (one that grew for a large frame is
   * dropped instead).
   * @returns the queued bytes, or `undefined` when nothing is queued.
   */
  take(): Buffer | undefined {
    const len = this.len;
    if (len === 0) return undefined;
    const buf = this.buf;
    const out = Buffer.allocUnsafe(len);
    buf.copy(out, 0, 0, len);
    this.len = 0;
    this.buf = NO_BUFFER;
    if (buf.length === DEFAULT_ENCODER_BYTES && this.initialBytes === DEFAULT_ENCODER_BYTES && idleBuffers.length < MAX_IDLE_BUFFERS) idleBuffers.push(buf);
    return out;
  }
}
