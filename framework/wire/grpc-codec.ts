/**
 * gRPC over HTTP/2's own encodings, as pure functions (grpc/grpc doc/PROTOCOL-HTTP2.md): the
 * length-prefixed message, `grpc-timeout`, the percent-encoded `grpc-message`, and which headers
 * are metadata. No sockets: the gRPC server and client stages use these on node:http2 streams.
 */

/** Bytes before each gRPC message: a compressed flag (1 byte) and the length (4 bytes, big-endian). */
export const GRPC_PREFIX_BYTES = 5;

/** The HTTP/2 connection preface a client sends first (RFC 9113 section 3.4). */
export const HTTP2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** A length-prefixed message that cannot be accepted; `status` is the gRPC status to answer with. */
export class GrpcFramingError extends Error {
  /**
   * @param message - what was wrong.
   * @param status - the gRPC status code for it (8 RESOURCE_EXHAUSTED for a message over the
   *   maximum, 12 UNIMPLEMENTED for a compressed one, 13 INTERNAL otherwise).
   */
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
    this.name = 'GrpcFramingError';
  }
}

/**
 * Prefixes a message for a gRPC DATA stream.
 * @param body - the encoded message.
 * @returns a new buffer: flag 0 (not compressed), the length, the body.
 */
export function frameGrpcMessage(body: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(GRPC_PREFIX_BYTES + body.length);
  out[0] = 0;
  out.writeUInt32BE(body.length, 1);
  out.set(body, GRPC_PREFIX_BYTES);
  return out;
}

/**
 * Splits a gRPC DATA stream into messages: DATA frame boundaries mean nothing, so a message may
 * span chunks and a chunk may hold several. Feed it chunks with `push`.
 */
export class GrpcMessageDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private decoded = 0;

  /** @param maxMessageBytes - the largest message accepted (bytes, prefix not counted). */
  constructor(private readonly maxMessageBytes: number) {}

  /** Bytes received that are not yet part of a complete message. */
  get pendingBytes(): number {
    return this.buffered;
  }

  /**
   * The size (bytes, prefix included) the message being received will have, once its prefix has
   * come; 0 between messages or while the prefix is incomplete. What a partly received message
   * will hold, for a server's buffer budget.
   */
  get announcedBytes(): number {
    if (this.buffered < GRPC_PREFIX_BYTES) return 0;
    return GRPC_PREFIX_BYTES + this.peek(GRPC_PREFIX_BYTES).readUInt32BE(1);
  }

  /** Messages completed so far (a counter that tells one partly received message from the next). */
  get messagesDecoded(): number {
    return this.decoded;
  }

  /**
   * Consumes a chunk.
   * @returns the messages it completed, in order (each a view or a copy; valid after the call).
   * @throws GrpcFramingError for a compressed message (no `grpc-encoding` is accepted) or one
   *   over the maximum; the stream should then fail with the error's status.
   */
  push(chunk: Buffer): Buffer[] {
    if (chunk.length === 0) return [];
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const out: Buffer[] = [];
    for (;;) {
      if (this.buffered < GRPC_PREFIX_BYTES) return out;
      const head = this.peek(GRPC_PREFIX_BYTES);
      const flag = head[0]!;
      const length = head.readUInt32BE(1);
      if (flag !== 0) {
        throw new GrpcFramingError(flag === 1 ? 'a compressed message, and no grpc-encoding is accepted' : `a message prefix with flag ${flag}`, flag === 1 ? 12 : 13);
      }
      if (length > this.maxMessageBytes) throw new GrpcFramingError(`a message of ${length} bytes, over the maximum of ${this.maxMessageBytes}`, 8);
      if (this.buffered < GRPC_PREFIX_BYTES + length) return out;
      const whole = this.take(GRPC_PREFIX_BYTES + length);
      this.decoded++;
      out.push(whole.subarray(GRPC_PREFIX_BYTES));
    }
  }

  /** The first `n` buffered bytes (joined when they span chunks; the join replaces them). */
  private peek(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= n) return first;
    const joined = Buffer.concat(this.chunks, this.buffered);
    this.chunks = [joined];
    return joined;
  }

  /** Removes and returns the first `n` buffered bytes. */
  private take(n: number): Buffer {
    const first = this.peek(n);
    this.buffered -= n;
    if (first.length === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    return first.subarray(0, n);
  }
}

/** Milliseconds per `grpc-timeout` unit. */
const TIMEOUT_UNIT_MS: Readonly<Record<string, number>> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

/**
 * Reads a `grpc-timeout` header: 1 to 8 digits and a unit (H, M, S, m, u or n).
 * @param value - the header's value.
 * @returns the timeout in ms (a fraction for u and n), or undefined when it is malformed.
 */
export function parseGrpcTimeout(value: string): number | undefined {
  const m = /^(\d{1,8})([HMSmun])$/.exec(value);
  if (m === null) return undefined;
  return Number(m[1]) * TIMEOUT_UNIT_MS[m[2]!]!;
}

/**
 * Writes a timeout as a `grpc-timeout` value: in ms while it fits 8 digits, else in the smallest
 * unit that fits, rounded up (a deadline is never made earlier), up to the most the header can
 * say, `99999999H` (about 11,400 years).
 * @param ms - the time left (ms, > 0; fractions round up to the next ms).
 * @returns the header value, e.g. `'1500m'`.
 */
export function formatGrpcTimeout(ms: number): string {
  const whole = Math.max(1, Math.ceil(ms));
  if (whole < 1e8) return `${whole}m`;
  for (const unit of ['S', 'M', 'H'] as const) {
    const v = Math.ceil(whole / TIMEOUT_UNIT_MS[unit]!);
    if (v < 1e8) return `${v}${unit}`;
  }
  return '99999999H';
}

/**
 * Percent-encodes a status message for `grpc-message`: UTF-8 bytes outside space..tilde, and
 * `%`, become `%XX`.
 * @param message - any text.
 * @returns the header value.
 */
export function encodeGrpcMessage(message: string): string {
  let plain = true;
  for (let i = 0; i < message.length; i++) {
    const c = message.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x25) {
      plain = false;
      break;
    }
  }
  if (plain) return message;
  let out = '';
  for (const byte of Buffer.from(message, 'utf8')) {
    out += byte < 0x20 || byte > 0x7e || byte === 0x25 ? `%${byte.toString(16).toUpperCase().padStart(2, '0')}` : String.fromCharCode(byte);
  }
  return out;
}

/**
 * Decodes a `grpc-message` value. As the spec asks, a `%` not followed by two hex digits is kept
 * as it is, and bytes that are not UTF-8 become U+FFFD: a status message is never lost to a bad
 * encoding.
 * @param value - the header value.
 * @returns the message text.
 */
export function decodeGrpcMessage(value: string): string {
  if (!value.includes('%')) return value;
  const bytes: number[] = [];
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c === 0x25 && i + 2 < value.length && /^[0-9A-Fa-f]{2}$/.test(value.slice(i + 1, i + 3))) {
      bytes.push(parseInt(value.slice(i + 1, i + 3), 16));
      i += 2;
    } else if (c < 0x100) bytes.push(c); // node:http2 gives header bytes as latin1 characters
    else for (const b of Buffer.from(value[i]!, 'utf8')) bytes.push(b);
  }
  return Buffer.from(bytes).toString('utf8');
}

/**
 * Whether an HTTP/2 header of a gRPC call (request or response) is custom metadata: not a
 * pseudo-header, not one of gRPC's own (`grpc-*`, except `grpc-retry-pushback-ms`, gRFC A6's
 * server pushback, which svrkit's retries read as response metadata), and not one of HTTP's
 * (`content-type`, `te`, `user-agent`, `host`, `content-length`, `accept-encoding`,
 * `content-encoding`, and the connection headers HTTP/2 forbids).
 * @param name - the header name, lower case.
 * @returns true for metadata.
 */
export function isGrpcMetadataKey(name: string): boolean {
  if (name.length === 0 || name.charCodeAt(0) === 0x3a) return false; // ':path' and the like
  if (name.startsWith('grpc-')) return name === 'grpc-retry-pushback-ms';
  return !RESERVED_HEADERS.has(name);
}

/**
 * The metadata entries that may be sent as gRPC headers or trailers (PROTOCOL-HTTP2.md, "Custom-
 * Metadata"): a key (lower-cased, as HTTP/2 requires) of `0-9 a-z _ - .` that `isGrpcMetadataKey` accepts, with a value of printable
 * ASCII (`%x20-%x7E`), or of base64 text for a `-bin` key (svrkit carries binary metadata as its
 * base64 text). Anything else would make node:http2 throw, or break the peer's parser.
 * @param md - svrkit metadata (string values).
 * @returns `headers`, the entries that may go out, and `dropped`, the keys that may not (empty
 *   when all may).
 */
export function grpcMetadataHeaders(md: Readonly<Record<string, string>> | undefined): { headers: Record<string, string>; dropped: string[] } {
  const headers: Record<string, string> = {};
  const dropped: string[] = [];
  if (md === undefined) return { headers, dropped };
  for (const [key, v] of Object.entries(md)) {
    const k = key.toLowerCase();
    const ok = typeof v === 'string' && METADATA_KEY.test(k) && isGrpcMetadataKey(k) && (k.endsWith('-bin') ? BASE64.test(v) : ASCII_VALUE.test(v));
    if (ok) headers[k] = v;
    else dropped.push(key);
  }
  return { headers, dropped };
}

const METADATA_KEY = /^[0-9a-z_.-]+$/;
const ASCII_VALUE = /^[\x20-\x7e]*$/;
const BASE64 = /^[A-Za-z0-9+/=, ]*$/; // several values of one key are joined by ', '

/** Headers of a gRPC call that are the protocol's, not the application's metadata. */
const RESERVED_HEADERS: ReadonlySet<string> = new Set(['content-type', 'te', 'user-agent', 'content-length', 'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'host', 'accept-encoding', 'content-encoding', 'http2-settings']);

/**
 * Whether a `content-type` is gRPC with protobuf: `application/grpc`, optionally `+proto` or
 * `;params`. (Other subtypes such as `+json` are gRPC too, but svrkit speaks protobuf only.)
 * @param value - the header value (may be undefined).
 * @returns true when svrkit can serve it.
 */
export function isGrpcContentType(value: string | undefined): boolean {
  if (value === undefined) return false;
  const v = value.toLowerCase();
  return v === 'application/grpc' || v === 'application/grpc+proto' || v.startsWith('application/grpc;') || v.startsWith('application/grpc+proto;');
}

/**
 * The gRPC status an HTTP/2 RST_STREAM code means for the call (PROTOCOL-HTTP2.md, "Errors").
 * @param code - the RST_STREAM error code.
 * @returns CANCELLED (1) for CANCEL, UNAVAILABLE (14) for REFUSED_STREAM, RESOURCE_EXHAUSTED (8)
 *   for ENHANCE_YOUR_CALM, PERMISSION_DENIED (7) for INADEQUATE_SECURITY, else INTERNAL (13).
 */
export function statusOfRstStream(code: number): number {
  switch (code) {
    case 0x8: // CANCEL
      return 1;
    case 0x7: // REFUSED_STREAM
      return 14;
    case 0xb: // ENHANCE_YOUR_CALM
      return 8;
    case 0xc: // INADEQUATE_SECURITY
      return 7;
    default:
      return 13;
  }
}

/**
 * The gRPC status of an HTTP response that is not gRPC's (grpc/grpc doc/http-grpc-status-mapping.md):
 * what a client reports when a proxy or a non-gRPC server answered.
 * @param httpStatus - the HTTP status code (`:status`).
 * @returns INTERNAL (13) for 400, UNAUTHENTICATED (16) for 401, PERMISSION_DENIED (7) for 403,
 *   UNIMPLEMENTED (12) for 404, UNAVAILABLE (14) for 429, 502, 503 and 504, else UNKNOWN (2).
 */
export function statusOfHttpStatus(httpStatus: number): number {
  switch (httpStatus) {
    case 400:
      return 13;
    case 401:
      return 16;
    case 403:
      return 7;
    case 404:
      return 12;
    case 429:
    case 502:
    case 503:
    case 504:
      return 14;
    default:
      return 2;
  }
}
