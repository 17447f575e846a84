/**
 * Frame headers: msgpack maps (msgpackr) with short keys, decoded before the body.
 *
 * Request header   `{ m: method, d?: deadline ms remaining, t?: trace id, md?: metadata,
 *                     pm?: propagated metadata keys, b?: business priority,
 *                     u?: user priority (both checked by the server, see overload/priority.ts), st?: the client's clock when it sent the call,
 *                     epoch ms, k?: call kind, 0 unary (default), 1 server-streaming,
 *                     2 client-streaming, 3 bidi, c?: calling service, tk?: ticket, ti?: id of
 *                     a ticket defined on the connection by a TICKET frame }`; the server uses `st` only relative to the other calls on the
 *                     same connection (one-way delay above the minimum, as LEDBAT, RFC 6817),
 *                     so the two clocks need not agree, and only to drop that call once it has
 *                     waited past its deadline
 * Response header  empty (zero bytes) for OK without metadata, else `{ s: status, e?: message,
 *                   md?: metadata, np?: true, r?: reason }`; `np` marks a call the server refused before
 *                   processing it (overload, shutdown), so the client may retry it elsewhere;
 *                   `r` names the error (its catalogue entry, UPPER_SNAKE_CASE, framework/errors.ts);
 *                   `al` is the server's admission level 0..16383 while it sheds load (absent:
 *                   it admits everything)
 * GOAWAY header    empty, or `{ s: status, e?: message, r?: reason }`
 * CANCEL header    empty, or `{ s: status }`: why the client gave up (CANCELLED or DEADLINE_EXCEEDED)
 *
 * The deadline travels as milliseconds remaining, not as a timestamp, so clock skew between hosts
 * does not matter (gRPC's `grpc-timeout` does the same).
 */
import { Packr, Unpackr } from 'msgpackr';
import { isErrorReason, Status, type Metadata } from './status.js';

const packr = new Packr({ useRecords: false, variableMapSize: true });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

/** A decoded request header. */
export interface RequestHeader {
  /** Full method name `package.Service/Method`. */
  m: string;
  /** Milliseconds left until the deadline; absent for none. */
  d?: number;
  /** Trace id. */
  t?: string;
  /** Metadata. */
  md?: Metadata;
  /** Metadata keys marked for propagation to downstream calls. */
  pm?: string[];
  /** Business priority, 0 (most important) .. 127. */
  b?: number;
  /** User priority, 0..127. */
  u?: number;
  /** Client send time (epoch ms, the client's clock). */
  st?: number;
  /**
   * How the client calls the method: absent or 0 unary, 1 server-streaming, 2 client-streaming,
   * 3 bidi. The server refuses a call whose kind differs from the method's.
   */
  k?: number;
  /**
   * The calling service (`package.Service`) when the call is made inside a handler: the service
   * of the call being served. Set by svrkit's channel; the server does not verify it.
   */
  c?: string;
  /**
   * The ticket (a JWS compact string, framework/tickets): the client's `CallOptions.ticket`, else
   * the ticket of the call being served, else the channel's. A server with a verifier checks it.
   */
  tk?: string;
  /** A ticket defined on this connection by a TICKET frame (its id), instead of `tk`. */
  ti?: number;
}

/** A decoded response or GOAWAY header. */
export interface StatusHeader {
  /** Status code. */
  s: number;
  /** Status message. */
  e?: string;
  /** Metadata. */
  md?: Metadata;
  /** The server refused the call before any handler saw it (safe to retry elsewhere). */
  np?: boolean;
  /** The server's admission level while it sheds load: it refuses calls whose priority level is higher. */
  al?: number;
  /** The error's reason (`RpcError.reason`): UPPER_SNAKE_CASE, 2-63 characters. */
  r?: string;
}

/** Error thrown when a header is not the msgpack map this module expects. */
export class HeaderError extends Error {
  /** @param message - what was wrong with the header. */
  constructor(message: string) {
    super(message);
    this.name = 'HeaderError';
  }
}

/**
 * Encodes a TICKET frame's header (`FrameKind.TICKET`).
 * @param ticket - the ticket.
 * @returns msgpack bytes of `{ tk: ticket }`.
 */
export function encodeTicketHeader(ticket: string): Uint8Array {
  return packr.pack({ tk: ticket });
}

/**
 * Decodes a TICKET frame's header.
 * @returns the ticket.
 * @throws HeaderError when the bytes are not the msgpack map `{ tk: string }`.
 */
export function decodeTicketHeader(bytes: Uint8Array): string {
  let h: unknown;
  try {
    h = unpackr.unpack(bytes);
  } catch (err) {
    throw new HeaderError(`ticket header is not valid msgpack: ${(err as Error).message}`);
  }
  const tk = (h as { tk?: unknown } | null)?.tk;
  if (typeof tk !== 'string') throw new HeaderError('ticket header has no ticket (tk)');
  return tk;
}

/** Encodes a request header. @returns msgpack bytes. */
export function encodeRequestHeader(header: RequestHeader): Uint8Array {
  return packr.pack(header);
}

/**
 * Decodes and validates a request header.
 * @throws HeaderError when the bytes are not msgpack, not a map, or a field has the wrong type.
 */
export function decodeRequestHeader(bytes: Uint8Array): RequestHeader {
  let h: unknown;
  try {
    h = unpackr.unpack(bytes);
  } catch (err) {
    throw new HeaderError(`request header is not valid msgpack: ${(err as Error).message}`);
  }
  if (h === null || typeof h !== 'object' || Array.isArray(h)) throw new HeaderError('request header is not a map');
  const r = h as Record<string, unknown>;
  if (typeof r['m'] !== 'string' || r['m'].length === 0) throw new HeaderError('request header has no method name (m)');
  if (r['d'] !== undefined && (typeof r['d'] !== 'number' || !Number.isFinite(r['d']))) {
    throw new HeaderError('request header deadline (d) is not a number of milliseconds');
  }
  if (r['t'] !== undefined && typeof r['t'] !== 'string') throw new HeaderError('request header trace id (t) is not a string');
  if (r['md'] !== undefined && !isStringMap(r['md'])) throw new HeaderError('request header metadata (md) is not a map of strings');
  if (r['pm'] !== undefined && !isStringArray(r['pm'])) {
    throw new HeaderError('request header propagation list (pm) is not an array of strings');
  }
  // The range of b and u is overload control's rule (overload/priority.ts); the server checks it.
  if (r['b'] !== undefined && typeof r['b'] !== 'number') throw new HeaderError('request header business priority (b) is not a number');
  if (r['u'] !== undefined && typeof r['u'] !== 'number') throw new HeaderError('request header user priority (u) is not a number');
  if (r['st'] !== undefined && (typeof r['st'] !== 'number' || !Number.isFinite(r['st']))) throw new HeaderError('request header send time (st) is not a number');
  if (r['k'] !== undefined && !isLevel(r['k'], 3)) throw new HeaderError('request header call kind (k) is not an integer 0..3');
  if (r['c'] !== undefined && typeof r['c'] !== 'string') throw new HeaderError('request header calling service (c) is not a string');
  if (r['tk'] !== undefined && typeof r['tk'] !== 'string') throw new HeaderError('request header ticket (tk) is not a string');
  if (r['ti'] !== undefined && !(Number.isInteger(r['ti']) && (r['ti'] as number) >= 1 && (r['ti'] as number) <= 0xffffffff)) {
    throw new HeaderError('request header ticket id (ti) is not an integer 1..2^32-1');
  }
  return r as unknown as RequestHeader;
}

/**
 * Encodes a response or GOAWAY header. `notProcessed` sets `np` (the call never reached a handler);
 * `admissionLevel` sets `al` (the server is shedding load); `reason` sets `r` (the error's
 * catalogue name, `RpcError.reason`; the caller makes sure it is valid, as RpcError does).
 * @returns msgpack bytes, or an empty array for plain OK (the common case costs nothing).
 */
export function encodeStatusHeader(
  status: number,
  message?: string,
  metadata?: Metadata,
  notProcessed?: boolean,
  admissionLevel?: number,
  reason?: string,
): Uint8Array {
  if (status === Status.OK && message === undefined && (metadata === undefined || isEmpty(metadata))) {
    return admissionLevel === undefined ? EMPTY : okWithLevel(admissionLevel);
  }
  const h: StatusHeader = { s: status };
  if (message !== undefined) h.e = message;
  if (metadata !== undefined && !isEmpty(metadata)) h.md = metadata;
  if (notProcessed === true) h.np = true;
  if (admissionLevel !== undefined) h.al = admissionLevel;
  if (reason !== undefined) h.r = reason;
  return packr.pack(h);
}

/**
 * Decodes a response or GOAWAY header; empty bytes mean OK.
 * @throws HeaderError when the bytes are not a valid status header.
 */
export function decodeStatusHeader(bytes: Uint8Array): StatusHeader {
  if (bytes.length === 0) return OK_HEADER;
  let h: unknown;
  try {
    h = unpackr.unpack(bytes);
  } catch (err) {
    throw new HeaderError(`status header is not valid msgpack: ${(err as Error).message}`);
  }
  if (h === null || typeof h !== 'object') throw new HeaderError('status header is not a map');
  const r = h as Record<string, unknown>;
  if (typeof r['s'] !== 'number') throw new HeaderError('status header has no status code (s)');
  if (r['e'] !== undefined && typeof r['e'] !== 'string') throw new HeaderError('status header message (e) is not a string');
  if (r['md'] !== undefined && !isStringMap(r['md'])) throw new HeaderError('status header metadata (md) is not a map of strings');
  if (r['np'] !== undefined && typeof r['np'] !== 'boolean') throw new HeaderError('status header flag (np) is not a boolean');
  if (r['al'] !== undefined && !isLevel(r['al'], 16383)) throw new HeaderError('status header admission level (al) is not an integer 0..16383');
  if (r['r'] !== undefined && !isErrorReason(r['r'])) throw new HeaderError('status header reason (r) is not an UPPER_SNAKE_CASE name of 2-63 characters');
  return r as unknown as StatusHeader;
}

const EMPTY = new Uint8Array(0);

/** Encoded `{ s: OK, al }` headers by level: the level changes about once a second, replies far more often. */
let okLevelCache: { level: number; bytes: Uint8Array } | undefined;

function okWithLevel(level: number): Uint8Array {
  if (okLevelCache?.level !== level) okLevelCache = { level, bytes: packr.pack({ s: Status.OK, al: level }) };
  return okLevelCache.bytes;
}

function isLevel(v: unknown, max: number): boolean {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= max;
}
const OK_HEADER: StatusHeader = Object.freeze({ s: Status.OK }) as StatusHeader;

function isEmpty(o: object): boolean {
  for (const _ in o) return false;
  return true;
}

function isStringMap(v: unknown): v is Metadata {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
  for (const k in v as Record<string, unknown>) if (typeof (v as Record<string, unknown>)[k] !== 'string') return false;
  return true;
}

function isStringArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === 'string');
}
