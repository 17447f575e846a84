/**
 * Frame fuzzing against a real server process (issue 13): at least 100,000 mutated frames, over a
 * few hundred raw TCP connections on 127.0.0.1, thrown at `svrkit run test/support/fuzz-services.ts`
 * (unary, server-, client-streaming and bidi methods, plus the built-in Health and Reflection).
 *
 * The mutations come from the wire codec itself: every `FrameKind` (and kinds it does not know),
 * request headers built field by field from `RequestHeader`'s keys and encoded with
 * `encodeRequestHeader`, status headers (CANCEL, GOAWAY, MESSAGE, a client's RESPONSE) from
 * `StatusHeader`'s keys and `encodeStatusHeader`, WINDOW bodies from `encodeWindow`, request bodies
 * from the methods' own codecs. Then they are broken: fields of the wrong type, missing or unknown
 * methods, huge, negative and non-finite deadlines, priorities out of range, oversized metadata,
 * truncated or hand-crafted msgpack, bodies that are not the method's message, frames for call ids
 * that are unknown or already in use, PING/PONG/GOAWAY from the client, and framing lies (a length
 * below the minimum, above the maximum, longer or shorter than the bytes sent, a header length
 * beyond the frame), plus three 16 MiB frames at and over the limit, sent during the warm-up.
 * Everything is drawn from a seeded PRNG (mulberry32): the bytes sent replay exactly from the seed.
 *
 * A connection carries well-framed mutations, then either a framing violation as its last frame
 * (the server must close it, with GOAWAY where the protocol says so) or a PING whose PONG shows the
 * server read everything (it must not have sent GOAWAY nor closed). Everything the server sends is
 * read and must decode with the codec (`FrameDecoder`, `decodeStatusHeader`); over the run, its
 * answers must include each refusal the mutations aim at (so the fuzzing is known to get past
 * the framing, into header decode, method lookup, call kinds, priorities, deadlines, body decode,
 * the stream cap and stream messages). Every 10,000 frames
 * and at the end a generated client must still make a unary call and a bidi stream; the process
 * must still run, its resident set (`VmRSS` in /proc) must stay within a bound of where it was after
 * warm-up, the streams the fuzzing opened must all be closed once their connections are gone, it
 * must shut down cleanly on SIGTERM, and its stderr must show no crash, unhandled rejection or
 * handler failure.
 */
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GreeterClient, GreeterDefinition, HelloRequest } from '../../examples/helloworld/gen/greeter.js';
import { HealthCheckRequest, HealthDefinition } from '../../framework/builtin/gen/svrkit/health.js';
import { FileContainingSymbolRequest, ListServicesRequest, ReflectionDefinition } from '../../framework/builtin/gen/svrkit/reflection.js';
import { METHOD_KIND_CODE, methodKind, type MethodDefinition } from '../../framework/wire/definition.js';
import { DEFAULT_MAX_FRAME_BYTES, encodeWindow, FrameDecoder, FrameKind, FRAME_PREFIX_BYTES } from '../../framework/wire/frame.js';
import { decodeStatusHeader, encodeRequestHeader, encodeStatusHeader, type RequestHeader, type StatusHeader } from '../../framework/wire/header.js';
import { Status } from '../../framework/wire/status.js';
import { Chunk, CountRequest, Item, StatsRequest, StreamsClient, StreamsDefinition } from '../.tmp/gen/streams/streams.js';
import { eventually } from '../support/poll.js';
import { mulberry32 } from '../support/prng.js';
import { startSvrkit, type SvrkitProcess } from '../support/processes.js';
import { rawFrame } from '../support/raw-frame.js';
import { rss } from '../support/rss.js';

/** The run's seed (issue 13). Change it to explore other inputs; a failure names it. */
const SEED = 0x13_f7a2;
/** Mutated frames to send, at least. */
const TOTAL_FRAMES = 100_000;
/** Frames between two checks that the server still serves. */
const CHECK_EVERY = 10_000;
/** Fuzzing connections open at once. */
const PARALLEL = 4;
/** How much the server's resident set may grow after warm-up (the first CHECK_EVERY frames). */
const RSS_GROWTH_BOUND = 200 * 1024 * 1024;
/** How long the server may take to answer the closing PING, or to close a connection after a framing violation. */
const CONNECTION_TIMEOUT_MS = 20_000;
/** Before a graceful end, a connection waits for replies until none has come for this long (ms)... */
const SETTLE_QUIET_MS = 60;
/** ...or this long at most (ms). */
const SETTLE_MAX_MS = 3000;
/** Frames of 16 MiB or more (over the limit, or just under it), all in the warm-up: they cost time, so only a few. */
const MAX_HUGE_FRAMES = 3;
/** Call id of the PING that ends a connection (fuzzed PINGs never use it). */
const SENTINEL_PING_ID = 0xfffffffd;
/** The server's maximum frame (svrkit run uses the default). */
const MAX = DEFAULT_MAX_FRAME_BYTES;
const EMPTY = Buffer.alloc(0);

// ---------------------------------------------------------------------------------------------
// Drawing from the PRNG

/** Draws values from one seeded mulberry32 sequence. */
class Gen {
  private readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  /** Uniform in [0, 1). */
  float(): number {
    return this.next();
  }
  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /** A u32. */
  u32(): number {
    return Math.floor(this.next() * 0x1_0000_0000);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  /** One of `table`'s values, each with its weight. */
  weighted<T>(table: ReadonlyArray<readonly [number, T]>): T {
    let total = 0;
    for (const [w] of table) total += w;
    let r = this.next() * total;
    for (const [w, v] of table) {
      r -= w;
      if (r < 0) return v;
    }
    return table[table.length - 1]![1];
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
  /** A short string mixing ASCII, controls, non-Latin text, emoji and lone surrogates. */
  text(n: number): string {
    const alphabets = ['abcdefghijklmnopqrstuvwxyz', 'ABCXYZ0123456789-_./:', '\u0000\t\n\u007f\u00ff', 'héllo wörld ß', '中文字符', '😀🚀', '\ud800\udfff'];
    let s = '';
    for (let i = 0; i < n; i++) {
      const a = this.pick(alphabets);
      s += a[this.int(a.length)];
    }
    return s;
  }
}

// ---------------------------------------------------------------------------------------------
// What the server serves (derived from the method definitions)

interface FuzzMethod {
  readonly def: MethodDefinition;
  /** The call kind's wire code (the request header's `k`). */
  readonly kind: number;
  /** A valid request body for the REQUEST frame (empty for client-streaming and bidi). */
  body(g: Gen): Uint8Array;
  /** A valid request MESSAGE body (client-streaming and bidi only). */
  message?(g: Gen): Uint8Array;
  /**
   * Whether arbitrary bytes may be sent as its request: false for Streams.Count, whose handler
   * would happily allocate whatever `payload_bytes` random bytes decode to (the test service's
   * choice, not the server's); it gets valid, truncated and invalid bodies only.
   */
  readonly anyBody: boolean;
}

function method(def: MethodDefinition, body: (g: Gen) => Uint8Array, extra: Partial<Pick<FuzzMethod, 'message' | 'anyBody'>> = {}): FuzzMethod {
  return { def, kind: METHOD_KIND_CODE[methodKind(def)], body, anyBody: extra.anyBody ?? true, ...(extra.message === undefined ? {} : { message: extra.message }) };
}

const METHODS: readonly FuzzMethod[] = [
  method(GreeterDefinition.methods.sayHello, (g) => HelloRequest.encode({ name: g.chance(0.1) ? '' : g.text(g.int(40)) }).finish()),
  method(HealthDefinition.methods.check, (g) =>
    HealthCheckRequest.encode({ service: g.pick(['', 'helloworld.Greeter', 'streams.v1.Streams', 'no.Such']) }).finish(),
  ),
  method(ReflectionDefinition.methods.listServices, () => ListServicesRequest.encode({}).finish()),
  method(ReflectionDefinition.methods.fileContainingSymbol, (g) =>
    FileContainingSymbolRequest.encode({ symbol: g.pick(['helloworld.Greeter', 'streams.v1.Item', 'no.Such', g.text(12)]) }).finish(),
  ),
  method(StreamsDefinition.methods.stats, () => StatsRequest.encode({}).finish()),
  method(
    StreamsDefinition.methods.count,
    (g) =>
      CountRequest.encode(
        CountRequest.fromPartial({
          count: BigInt(g.int(20)),
          payloadBytes: g.int(64),
          hang: g.chance(0.3),
          headers: g.chance(0.2) ? { 'x-a': g.text(8) } : {},
          trailers: g.chance(0.2) ? { 'x-b': g.text(8) } : {},
        }),
      ).finish(),
    { anyBody: false },
  ),
  method(StreamsDefinition.methods.upload, () => EMPTY, { message: (g) => Chunk.encode({ data: g.bytes(g.int(64)) }).finish() }),
  method(StreamsDefinition.methods.echo, () => EMPTY, {
    message: (g) => Item.encode({ seq: BigInt(g.int(1000)), payload: g.bytes(g.int(64)) }).finish(),
  }),
];

const STREAM_METHODS = METHODS.filter((m) => m.kind !== 0);

/** Bytes that are not valid protobuf for any message. */
const INVALID_PROTOBUF: readonly number[][] = [
  [0x0f], // wire type 7
  [0x0e], // wire type 6
  [0x0a, 0x10, 0x41], // string claiming 16 bytes, 1 given
  [0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f], // string claiming 4 GiB
  [0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], // varint longer than 10 bytes
  [0x80], // truncated tag
  [0x0b], // a group that never ends
  [0x0c], // a group end without a start
  [0x00], // field number 0
];

// ---------------------------------------------------------------------------------------------
// Header fields (derived from the codec's header types: adding a field there fails the type check here)

/** Any msgpack value with the codec's own settings (the same Packr as `encodeRequestHeader`). */
function packAny(value: unknown): Buffer {
  return Buffer.from(encodeRequestHeader(value as RequestHeader));
}

/** A value of some type, usually the wrong one for the field it lands in. */
function anyValue(g: Gen): unknown {
  switch (g.int(18)) {
    case 0: return null;
    case 1: return g.chance(0.5);
    case 2: return g.int(1e9);
    case 3: return -g.int(1e9);
    case 4: return g.pick([0.5, -0.25, 1e-300, Number.MAX_VALUE]);
    case 5: return g.pick([NaN, Infinity, -Infinity]);
    case 6: return g.text(g.int(24));
    case 7: return '';
    case 8: return [];
    case 9: return [1, 'a', null, [2]];
    case 10: return {};
    case 11: return { a: 1, b: { c: ['d'] } };
    case 12: return g.bytes(g.int(32));
    case 13: return g.pick([2n ** 63n - 1n, -(2n ** 63n), 2n ** 64n - 1n]);
    case 14: return new Date(g.int(2e12));
    case 15: return new Map<unknown, unknown>([[1, 'one'], [true, null]]);
    case 16: return [g.text(4), g.text(4)];
    default: return { 'x-key': g.int(5) };
  }
}

/** A real method path, changed so that no service has it. */
function unknownMethod(g: Gen, path: string): string {
  switch (g.int(10)) {
    case 0: return path + 'x';
    case 1: return path.toUpperCase();
    case 2: return path.replace('/', '.');
    case 3: return path.slice(0, 1 + g.int(path.length - 1));
    case 4: return '/' + path;
    case 5: return path + '/';
    case 6: return path.replace('/', '/\u0000');
    case 7: return 'no.Such/Service';
    case 8: return g.text(1 + g.int(64));
    default: return 'x'.repeat(1000 + g.int(100_000)); // a long name, echoed in the error
  }
}

function metadata(g: Gen): Record<string, string> {
  const md: Record<string, string> = {};
  for (let i = g.int(4); i > 0; i--) md[g.pick(['x-user-id', 'x-trace', 'authorization', 'k' + g.int(10), g.text(6)])] = g.text(g.int(20));
  return md;
}

/** Metadata of tens of KiB to about 2 MiB: thousands of small entries, or a few big ones. */
function oversizedMetadata(g: Gen): Record<string, string> {
  const md: Record<string, string> = {};
  if (g.chance(0.5)) {
    for (let i = 2000 + g.int(20_000); i > 0; i--) md[`k${i}`] = 'v'.repeat(g.int(16));
  } else {
    for (let i = 1 + g.int(4); i > 0; i--) md[`big${i}`] = 'x'.repeat(64 * 1024 + g.int(512 * 1024));
  }
  return md;
}

/** Metadata that is not a map of strings, or has keys that are awkward for a JavaScript object. */
function badMetadata(g: Gen): unknown {
  switch (g.int(5)) {
    case 0: return anyValue(g);
    case 1: return { a: 'ok', b: anyValue(g) };
    case 2: return Object.defineProperty({ a: 'x' }, '__proto__', { value: g.chance(0.5) ? 'polluted' : { m: 'x' }, enumerable: true });
    case 3: return { constructor: 'c', toString: 'x', hasOwnProperty: 'y', 'x-user-id': g.text(4) };
    default: return { [g.text(3)]: [g.text(2)] };
  }
}

interface FieldFuzz<T> {
  /** A valid value for a call to `m`, or undefined to leave the field out. */
  valid(g: Gen, m: FuzzMethod): T | undefined;
  /** A value the protocol does not allow (wrong type, out of range), or an allowed but hostile one. */
  invalid(g: Gen, m: FuzzMethod): unknown;
}

/** ST values are around this (the server uses the client's send time only relative to other calls). */
const ST_BASE = 1_700_000_000_000;

const REQUEST_FIELDS: { [K in keyof Required<RequestHeader>]: FieldFuzz<RequestHeader[K]> } = {
  m: {
    valid: (_g, m) => m.def.path,
    invalid: (g, m) => g.weighted([[4, () => unknownMethod(g, m.def.path)], [3, () => anyValue(g)], [1, () => ''], [2, () => g.pick(METHODS).def.path]] as const)(),
  },
  d: {
    valid: (g) => (g.chance(0.7) ? undefined : 1 + g.int(60_000)),
    invalid: (g) =>
      g.chance(0.8) ? g.pick([0, -0, -1, -5, -1e15, 1, 0.001, 2 ** 31, 2 ** 31 - 1, 2 ** 32, 2 ** 53, 1e308, -1e308, NaN, Infinity, -Infinity]) : anyValue(g),
  },
  t: {
    valid: (g) => (g.chance(0.7) ? undefined : g.bytes(8).toString('hex')),
    invalid: (g) => (g.chance(0.05) ? 't'.repeat(g.int(200_000)) : anyValue(g)),
  },
  md: {
    valid: (g) => (g.chance(0.6) ? undefined : metadata(g)),
    invalid: (g) => (g.chance(0.03) ? oversizedMetadata(g) : badMetadata(g)),
  },
  pm: {
    valid: (g) => (g.chance(0.8) ? undefined : ['x-trace', g.text(5)]),
    invalid: (g) => (g.chance(0.05) ? Array.from({ length: g.int(10_000) }, (_, i) => `k${i}`) : g.pick([() => anyValue(g), () => ['a', 1], () => [null]])()),
  },
  b: {
    valid: (g) => (g.chance(0.6) ? undefined : g.int(128)),
    invalid: (g) => (g.chance(0.7) ? g.pick([-1, 128, 1e9, -1e9, 0.5, 127.5, NaN, Infinity, -0]) : anyValue(g)),
  },
  u: {
    valid: (g) => (g.chance(0.6) ? undefined : g.int(128)),
    invalid: (g) => (g.chance(0.7) ? g.pick([-1, 128, 255, 1e9, 0.5, NaN, -Infinity]) : anyValue(g)),
  },
  st: {
    valid: (g) => (g.chance(0.7) ? undefined : ST_BASE + g.int(1000)),
    invalid: (g) => (g.chance(0.7) ? g.pick([0, -1, ST_BASE - 1e9, ST_BASE + 1e9, -1e300, 1e300, NaN, Infinity, 2 ** 53 + 1]) : anyValue(g)),
  },
  k: {
    valid: (g, m) => (m.kind === 0 && g.chance(0.7) ? undefined : m.kind),
    invalid: (g, m) => (g.chance(0.6) ? (m.kind + 1 + g.int(3)) % 4 : g.chance(0.6) ? g.pick([4, -1, 1.5, 255, 2 ** 32]) : anyValue(g)),
  },
  c: {
    valid: (g) => (g.chance(0.7) ? undefined : g.pick(['shop.Cart', 'helloworld.Greeter', g.text(8)])),
    invalid: (g) => (g.chance(0.05) ? 'c'.repeat(g.int(200_000)) : anyValue(g)),
  },
  tk: {
    // This server checks no tickets: a ticket is carried, not verified.
    valid: (g) => (g.chance(0.8) ? undefined : g.pick(['eyJhbGciOiJIUzI1NiJ9.e30.sig', g.text(40)])),
    invalid: (g) => (g.chance(0.05) ? 'k'.repeat(g.int(1 << 20)) : anyValue(g)),
  },
  ti: {
    // No TICKET frame defined one on this connection: any id is refused.
    valid: () => undefined,
    invalid: (g) => (g.chance(0.5) ? g.pick([0, -1, 1, 2, 255, 256, 2 ** 31, 2 ** 53, 1.5, NaN]) : anyValue(g)),
  },
};
const REQUEST_KEYS = Object.keys(REQUEST_FIELDS) as Array<keyof RequestHeader>;

const STATUS_CODES = Object.values(Status).filter((v): v is Status => typeof v === 'number');

/** Like FieldFuzz, for a status header, which belongs to no method. */
interface StatusFieldFuzz<T> {
  valid(g: Gen): T | undefined;
  invalid(g: Gen): unknown;
}

const STATUS_FIELDS: { [K in keyof Required<StatusHeader>]: StatusFieldFuzz<StatusHeader[K]> } = {
  s: { valid: (g) => g.pick(STATUS_CODES), invalid: (g) => (g.chance(0.5) ? g.pick([-1, 17, 255, 1e9, 0.5]) : anyValue(g)) },
  e: { valid: (g) => (g.chance(0.5) ? undefined : g.text(g.int(40))), invalid: (g) => anyValue(g) },
  md: { valid: (g) => (g.chance(0.7) ? undefined : metadata(g)), invalid: (g) => badMetadata(g) },
  np: { valid: (g) => (g.chance(0.7) ? undefined : g.chance(0.5)), invalid: (g) => anyValue(g) },
  al: { valid: (g) => (g.chance(0.7) ? undefined : g.int(16384)), invalid: (g) => (g.chance(0.5) ? g.pick([-1, 16384, 0.5, NaN]) : anyValue(g)) },
  r: { valid: (g) => (g.chance(0.5) ? undefined : g.pick(['CANCELLED', 'FUZZ_REASON', 'SERVER_SHUTTING_DOWN'])), invalid: (g) => g.pick(['lower', 'X', 'A'.repeat(64), '', anyValue(g)]) },
};
const STATUS_KEYS = Object.keys(STATUS_FIELDS) as Array<keyof StatusHeader>;

/** A request header for `m`: valid fields, then `mutations` of them changed. Returns the header and what was done. */
function requestHeader(g: Gen, m: FuzzMethod, mutations: number): { header: Buffer; label: string } {
  const h: Record<string, unknown> = {};
  for (const key of REQUEST_KEYS) {
    const v = REQUEST_FIELDS[key].valid(g, m);
    if (v !== undefined) h[key] = v;
  }
  const done: string[] = [];
  for (let i = 0; i < mutations; i++) {
    const op = g.weighted([[6, 'invalid'], [2, 'delete'], [1, 'extra'], [1, 'proto']] as const);
    if (op === 'invalid') {
      const key = g.pick(REQUEST_KEYS);
      h[key] = REQUEST_FIELDS[key].invalid(g, m);
      done.push(`${key}!`);
    } else if (op === 'delete') {
      const key = g.pick(REQUEST_KEYS);
      delete h[key];
      done.push(`-${key}`);
    } else if (op === 'extra') {
      h[g.text(1 + g.int(4))] = anyValue(g);
      done.push('+extra');
    } else {
      // An own `__proto__` key: a decoder that assigns keys naively would change the header's prototype.
      Object.defineProperty(h, '__proto__', { value: { m: m.def.path, d: 1 }, enumerable: true, configurable: true, writable: true });
      done.push('+__proto__');
    }
  }
  let header: Buffer = Buffer.from(encodeRequestHeader(h as unknown as RequestHeader));
  let label = done.length === 0 ? 'header ok' : `header ${done.join(',')}`;
  if (g.chance(0.12)) {
    const mutated = mutateMsgpack(g, header, m.def.path);
    header = mutated.bytes;
    label += ` bytes:${mutated.label}`;
  }
  return { header, label };
}

/** A status header (CANCEL, GOAWAY, MESSAGE, a client's RESPONSE): empty, valid, mutated or broken. */
function statusHeader(g: Gen): Buffer {
  switch (g.weighted([[4, 'empty'], [3, 'valid'], [2, 'mutated'], [1, 'bytes']] as const)) {
    case 'empty':
      return EMPTY;
    case 'valid': {
      const f = STATUS_FIELDS;
      return Buffer.from(encodeStatusHeader(f.s.valid(g)!, f.e.valid(g), f.md.valid(g), f.np.valid(g), f.al.valid(g), f.r.valid(g)));
    }
    case 'mutated': {
      const h: Record<string, unknown> = { s: STATUS_FIELDS.s.valid(g) };
      for (let i = 1 + g.int(3); i > 0; i--) {
        const key = g.pick(STATUS_KEYS);
        h[key] = STATUS_FIELDS[key].invalid(g);
      }
      return packAny(h);
    }
    default:
      return mutateMsgpack(g, packAny({ s: Status.CANCELLED }), 'x').bytes;
  }
}

/** Msgpack bytes changed at the byte level, or replaced with hand-made msgpack that decoders find hard. */
function mutateMsgpack(g: Gen, bytes: Buffer, path: string): { bytes: Buffer; label: string } {
  switch (g.int(14)) {
    case 0:
      return { bytes: bytes.subarray(0, g.int(bytes.length)), label: 'truncated' };
    case 1: {
      const b = Buffer.from(bytes);
      for (let i = 1 + g.int(4); i > 0 && b.length > 0; i--) b[g.int(b.length)] = g.int(256);
      return { bytes: b, label: 'flipped' };
    }
    case 2:
      return { bytes: Buffer.concat([bytes, g.bytes(1 + g.int(16))]), label: 'trailing junk' };
    case 3:
      return { bytes: g.bytes(1 + g.int(64)), label: 'random' };
    case 4:
      return { bytes: packAny(g.pick([null, 1, 'str', [1, 2], true, 1.5, Buffer.from('bin')])), label: 'not a map' };
    case 5:
      return { bytes: Buffer.from(g.pick([[0xdf, 0xff, 0xff, 0xff, 0xff], [0xde, 0xff, 0xff], [0x8f]])), label: 'map claiming many entries' };
    case 6:
      return { bytes: Buffer.from(g.pick([[0xdd, 0xff, 0xff, 0xff, 0xff], [0xdc, 0xff, 0xff]])), label: 'array claiming many items' };
    case 7:
      return { bytes: Buffer.from(g.pick([[0x81, 0xa1, 0x6d, 0xdb, 0xff, 0xff, 0xff, 0xff], [0x81, 0xa1, 0x6d, 0xc6, 0xff, 0xff, 0xff, 0xff, 0x00]])), label: 'str/bin claiming 4 GiB' };
    case 8: {
      const depth = g.pick([100, 10_000, 100_000]);
      return { bytes: Buffer.concat([Buffer.alloc(depth, g.pick([0x91 /* arrays of one */, 0x81 /* maps of one, keyed by the next map */])), Buffer.from([0xc0])]), label: `nested ${depth} deep` };
    }
    case 9:
      // Extension types: an unknown one, a timestamp of a bad size, msgpackr's record extension.
      return { bytes: Buffer.from(g.pick([[0xd4, 0x42, 0x00], [0xd5, 0xff, 0x00, 0x00], [0xd4, 0x72, 0x00], [0xc7, 0x03, 0x72, 0x01, 0x02, 0x03], [0xc1]])), label: 'extension' };
    case 10: {
      // The same key twice: the method, then something else (or the other way round).
      const m = packAny(path);
      const other = packAny(anyValue(g));
      const pairs = g.chance(0.5) ? [m, other] : [other, m];
      return { bytes: Buffer.concat([Buffer.from([0x82, 0xa1, 0x6d]), pairs[0]!, Buffer.from([0xa1, 0x6d]), pairs[1]!]), label: 'duplicate key m' };
    }
    case 11:
      return { bytes: EMPTY, label: 'empty' };
    case 12:
      // A map whose key is not a string.
      return { bytes: Buffer.concat([Buffer.from([0x82, 0x01, 0x02, 0xa1, 0x6d]), packAny(path)]), label: 'integer key' };
    default:
      return { bytes: Buffer.concat([Buffer.from([0x81, 0xa1, 0x6d]), Buffer.from([0xd9, 0x20]), Buffer.from(path.slice(0, 10))]), label: 'str8 length lies' };
  }
}

// ---------------------------------------------------------------------------------------------
// Frames

interface PlannedFrame {
  readonly label: string;
  readonly bytes: Buffer;
}

interface TerminalFrame extends PlannedFrame {
  /** The GOAWAY reason the protocol prescribes for it, when its outcome is certain. */
  readonly goaway?: 'FRAME_TOO_LARGE' | 'MALFORMED_FRAME';
}

/** One connection's frames: well-framed mutations, then maybe a framing violation. */
interface Plan {
  readonly index: number;
  readonly seed: number;
  readonly flavor: Flavor;
  readonly frames: PlannedFrame[];
  readonly terminal?: TerminalFrame;
  /** Frames per write, when not dribbling. */
  readonly batch: number;
  /** 0, or bytes at most per write: a dribble that splits frames anywhere. */
  readonly dribble: number;
  /** End with a reset (destroy) rather than a half-close. */
  readonly abrupt: boolean;
  /** Frames this plan sends (terminal included). */
  readonly count: number;
}

/** What a connection mostly sends: a mix of everything, or streams and their frames. */
type Flavor = 'mixed' | 'streams';

interface OpenCall {
  readonly id: number;
  readonly m: FuzzMethod;
}

/** Builds connection plans, one after another, from the run's seed. */
class Planner {
  private readonly master = new Gen(SEED);
  private index = 0;
  /** Huge frames planned so far. */
  huge = 0;

  plan(): Plan {
    const seed = this.master.u32();
    const g = new Gen(seed);
    const calls: OpenCall[] = [];
    let nextId = 1 + g.int(1000);
    // Mostly everything mixed; some connections open streams by the hundred (past the
    // per-connection cap) and feed them large messages (past their windows).
    const flavor: Flavor = g.chance(0.08) ? 'streams' : 'mixed';
    const n = flavor === 'streams' ? 300 + g.int(300) : g.chance(0.2) ? 1 + g.int(10) : 50 + g.int(550);
    // The huge frames come first, in the warm-up, so the resident set measured after it already
    // holds whatever the allocator keeps after a 16 MiB frame: growth after that is what counts.
    const hugeAt = this.huge < MAX_HUGE_FRAMES && n >= 50 ? g.int(n) : -1;
    const frames: PlannedFrame[] = [];
    for (let i = 0; i < n; i++) {
      if (i === hugeAt) frames.push(hugeFrame(this.huge++ % 2 === 0 ? 'over' : 'at', nextId++));
      else frames.push(wellFramed(g, flavor, calls, () => nextId++));
    }
    // A connection with a huge frame ends gracefully, so that the huge call's answer is read.
    const terminal = hugeAt < 0 && g.chance(0.5) ? framingViolation(g) : undefined;
    const abrupt = hugeAt < 0 && g.chance(0.3);
    const dribble = g.chance(0.1) ? 1 + g.int(256) : 0;
    return {
      index: this.index++,
      seed,
      flavor,
      frames,
      batch: 1 + g.int(50),
      dribble,
      abrupt,
      count: frames.length + (terminal === undefined ? 0 : 1),
      ...(terminal === undefined ? {} : { terminal }),
    };
  }
}

/** A call id for a frame of an existing call: an open one, or one the server cannot know. */
function targetId(g: Gen, calls: readonly OpenCall[], streamsFirst: boolean): { id: number; m?: FuzzMethod } {
  const streams = calls.filter((c) => c.m.kind !== 0);
  const r = g.float();
  if (streamsFirst && streams.length > 0 && r < 0.55) return g.pick(streams);
  if (calls.length > 0 && r < 0.75) return g.pick(calls);
  return { id: g.pick([0, 0xffffffff, 0xfffffffe, g.u32(), 1 + g.int(100)]) };
}

/** A request body for `m`: valid, empty, truncated, invalid, random, or another method's. */
function requestBody(g: Gen, m: FuzzMethod): { body: Uint8Array; label: string } {
  const valid = m.body(g);
  const choice = g.weighted([[60, 'valid'], [8, 'empty'], [6, 'truncated'], [8, 'invalid'], [10, 'random'], [8, 'other']] as const);
  switch (choice) {
    case 'valid':
      return { body: valid, label: 'body ok' };
    case 'empty':
      return { body: EMPTY, label: 'body empty' };
    case 'truncated':
      return { body: valid.subarray(0, g.int(valid.length)), label: 'body truncated' };
    case 'invalid':
      return { body: Buffer.concat([valid, Buffer.from(g.pick(INVALID_PROTOBUF))]), label: 'body invalid' };
    case 'random':
      if (!m.anyBody) return { body: Buffer.from(g.pick(INVALID_PROTOBUF)), label: 'body invalid' };
      return { body: g.bytes(1 + g.int(128)), label: 'body random' };
    default: {
      if (!m.anyBody) return { body: Buffer.concat([Buffer.from(g.pick(INVALID_PROTOBUF)), valid]), label: 'body invalid' };
      const other = g.pick(METHODS);
      return { body: other.message !== undefined && g.chance(0.5) ? other.message(g) : other.body(g), label: `body of ${other.def.name}` };
    }
  }
}

/** A message body for a stream frame to `m` (or to an unknown call). */
function messageBody(g: Gen, flavor: Flavor, m: FuzzMethod | undefined): { body: Uint8Array; label: string } {
  const streams = flavor === 'streams';
  const choice = g.weighted([[streams ? 90 : 50, 'valid'], [20, 'random'], [15, 'invalid'], [10, 'empty'], [streams ? 3 : 0.2, 'large']] as const);
  switch (choice) {
    case 'valid': {
      const source = m?.message !== undefined ? m : g.pick(METHODS.filter((x) => x.message !== undefined));
      return { body: source.message!(g), label: 'message ok' };
    }
    case 'random':
      return { body: g.bytes(1 + g.int(128)), label: 'message random' };
    case 'invalid':
      return { body: Buffer.from(g.pick(INVALID_PROTOBUF)), label: 'message invalid' };
    case 'empty':
      return { body: EMPTY, label: 'message empty' };
    default:
      // Over a stream's whole byte window (1 MiB) in one message.
      return { body: Item.encode({ seq: 1n, payload: Buffer.alloc(512 * 1024 + g.int(1024 * 1024), 0x5a) }).finish(), label: 'message large' };
  }
}

/** One well-framed frame: the framing is right, anything inside may be wrong. */
function wellFramed(g: Gen, flavor: Flavor, calls: OpenCall[], newId: () => number): PlannedFrame {
  const streams = flavor === 'streams';
  const kind = g.weighted([
    [streams ? 60 : 45, FrameKind.REQUEST],
    [streams ? 30 : 15, FrameKind.MESSAGE],
    [6, FrameKind.WINDOW],
    [streams ? 2 : 6, FrameKind.HALF_CLOSE],
    [streams ? 2 : 8, FrameKind.CANCEL],
    [4, FrameKind.PING],
    [3, FrameKind.PONG],
    [2, FrameKind.GOAWAY],
    [2, FrameKind.RESPONSE],
    [4, -1], // a kind the codec does not know
    [5, -2], // a REQUEST whose header length splits header and body elsewhere
  ] as const);
  switch (kind) {
    case FrameKind.REQUEST:
    case -2: {
      const m = streams && g.chance(0.8) ? g.pick(STREAM_METHODS) : g.pick(METHODS);
      const r = g.float();
      const id = r < 0.8 ? newId() : r < 0.9 && calls.length > 0 ? g.pick(calls).id : g.pick([0, 0xffffffff, 0xfffffffe, SENTINEL_PING_ID, g.u32()]);
      const mutations = streams ? g.weighted([[9, 0], [1, 1]] as const) : g.weighted([[5, 0], [3, 1], [1, 2], [1, 3]] as const);
      const h = requestHeader(g, m, mutations);
      const b = requestBody(g, m);
      calls.push({ id, m });
      if (calls.length > 200) calls.splice(0, 100);
      const frame = rawFrame(FrameKind.REQUEST, id, h.header, b.body);
      const label = `REQUEST #${id} ${m.def.path} ${h.label} ${b.label}`;
      if (kind === FrameKind.REQUEST) return { label, bytes: frame };
      const length = frame.readUInt32BE(0);
      const hl = g.int(length - 9 + 1);
      frame.writeUInt32BE(hl, 9);
      return { label: `${label} header length ${h.header.length} -> ${hl}`, bytes: frame };
    }
    case FrameKind.MESSAGE: {
      let t = targetId(g, calls, true);
      const b = messageBody(g, flavor, t.m);
      // Large messages all go to one bidi stream, whose handler stalls once it has used its send
      // credit (nobody grants more), until the messages queued for it exceed its window.
      const victim = calls.find((c) => c.m.def === StreamsDefinition.methods.echo);
      if (streams && b.label === 'message large' && victim !== undefined) t = victim;
      const header = g.chance(0.1) ? statusHeader(g) : EMPTY;
      return { label: `MESSAGE #${t.id} ${t.m?.def.path ?? 'unknown call'} ${b.label}`, bytes: rawFrame(FrameKind.MESSAGE, t.id, header, b.body) };
    }
    case FrameKind.WINDOW: {
      const t = targetId(g, calls, true);
      const v = (): number => g.pick([0, 1, 16, 16384, 1 << 20, 0x7fffffff, 0xffffffff, g.u32()]);
      const body = g.chance(0.8) ? Buffer.from(encodeWindow(v(), v())) : g.bytes(g.pick([0, 1, 4, 7, 9, 16]));
      return { label: `WINDOW #${t.id} ${body.length === 8 ? `${body.readUInt32BE(0)}/${body.readUInt32BE(4)}` : `${body.length} bytes`}`, bytes: rawFrame(FrameKind.WINDOW, t.id, g.chance(0.1) ? statusHeader(g) : EMPTY, body) };
    }
    case FrameKind.HALF_CLOSE: {
      const t = targetId(g, calls, true);
      const junk = g.chance(0.15);
      return { label: `HALF_CLOSE #${t.id}${junk ? ' with junk' : ''}`, bytes: rawFrame(FrameKind.HALF_CLOSE, t.id, junk ? statusHeader(g) : EMPTY, junk ? g.bytes(g.int(32)) : EMPTY) };
    }
    case FrameKind.CANCEL: {
      const t = targetId(g, calls, false);
      const header = g.chance(0.5) ? packAny({ s: g.pick([Status.CANCELLED, Status.DEADLINE_EXCEEDED]) }) : statusHeader(g);
      return { label: `CANCEL #${t.id}`, bytes: rawFrame(FrameKind.CANCEL, t.id, header, g.chance(0.1) ? g.bytes(g.int(32)) : EMPTY) };
    }
    case FrameKind.PING:
    case FrameKind.PONG: {
      let id = g.pick([0, 1, 0xffffffff, 0xfffffffe, g.u32()]);
      if (id === SENTINEL_PING_ID) id = 0;
      const junk = g.chance(0.3);
      return { label: `${kind === FrameKind.PING ? 'PING' : 'PONG'} #${id}${junk ? ' with junk' : ''}`, bytes: rawFrame(kind, id, junk ? statusHeader(g) : EMPTY, junk ? g.bytes(g.int(64)) : EMPTY) };
    }
    case FrameKind.GOAWAY:
    case FrameKind.RESPONSE: {
      const id = g.chance(0.5) ? 0 : targetId(g, calls, false).id;
      return { label: `${kind === FrameKind.GOAWAY ? 'GOAWAY' : 'RESPONSE'} from the client #${id}`, bytes: rawFrame(kind, id, statusHeader(g), g.chance(0.5) ? g.bytes(g.int(64)) : EMPTY) };
    }
    default: {
      const unknown = g.pick([0, 10, 11, 42, 127, 128, 200, 254, 255]);
      const id = targetId(g, calls, false).id;
      const header = g.chance(0.5) ? requestHeader(g, g.pick(METHODS), 0).header : g.bytes(g.int(32));
      return { label: `kind ${unknown} #${id}`, bytes: rawFrame(unknown, id, header, g.bytes(g.int(64))) };
    }
  }
}

/**
 * A frame of 16 MiB or more: a few bytes over the limit, which the server skips without buffering
 * and refuses alone (REQUEST_TOO_LARGE), or a HelloRequest just under it, whose reply ("Hello " +
 * the name) is about as large.
 */
function hugeFrame(size: 'over' | 'at', id: number): PlannedFrame {
  const header = Buffer.from(encodeRequestHeader({ m: GreeterDefinition.methods.sayHello.path }));
  if (size === 'over') {
    const bytes = MAX + 1 + (id % 4096);
    return { label: `REQUEST #${id} of ${bytes} bytes (over the limit)`, bytes: rawFrame(FrameKind.REQUEST, id, header, Buffer.alloc(bytes - FRAME_PREFIX_BYTES - header.length, 0x41)) };
  }
  const nameBytes = MAX - FRAME_PREFIX_BYTES - header.length - 5; // the body adds a tag and a 4-byte length
  const body = HelloRequest.encode({ name: 'n'.repeat(nameBytes) }).finish();
  return { label: `REQUEST #${id} of ${FRAME_PREFIX_BYTES + header.length + body.length} bytes (at the limit)`, bytes: rawFrame(FrameKind.REQUEST, id, header, body) };
}

/** A violation of the framing itself: the last frame of its connection. */
function framingViolation(g: Gen): TerminalFrame {
  const m = g.pick(METHODS);
  const valid = (): Buffer => rawFrame(FrameKind.REQUEST, 1 + g.int(1000), requestHeader(g, m, 0).header, m.body(g));
  switch (g.int(8)) {
    case 0: {
      const length = g.int(9);
      const b = Buffer.concat([Buffer.alloc(4), g.bytes(g.int(16))]);
      b.writeUInt32BE(length, 0);
      return { label: `length ${length} below the minimum`, bytes: b, goaway: 'MALFORMED_FRAME' };
    }
    case 1: {
      const f = valid();
      const length = f.readUInt32BE(0);
      const hl = g.chance(0.5) ? length - 9 + 1 + g.int(100) : length - 9 + 1 + g.int(0xffffffff - length);
      f.writeUInt32BE(hl, 9);
      return { label: `header length ${hl} beyond frame length ${length}`, bytes: f, goaway: 'MALFORMED_FRAME' };
    }
    case 2: {
      const f = valid();
      const length = f.readUInt32BE(0) + 1 + g.int(MAX - f.length);
      f.writeUInt32BE(length, 0);
      return { label: `length ${length} claims more than the ${f.length - 4} bytes sent`, bytes: f };
    }
    case 3: {
      const f = Buffer.concat([valid(), valid()]);
      const length = f.readUInt32BE(0);
      const lie = 9 + g.int(length - 9);
      f.writeUInt32BE(lie, 0);
      return { label: `length ${lie} claims less than the ${length} bytes of the frame`, bytes: f };
    }
    case 4: {
      // Too large to skip: over 4x the limit, or over the limit and of a kind that is never skipped.
      const farOver = g.chance(0.5);
      const size = farOver ? 4 * MAX + 1 + g.int(0xffffffff - 4 * MAX - 4) : MAX + 1 + g.int(3 * MAX);
      const kind = farOver ? g.pick([...Object.values(FrameKind), 0, 77]) : g.pick([FrameKind.CANCEL, FrameKind.PING, FrameKind.PONG, FrameKind.GOAWAY, FrameKind.HALF_CLOSE, FrameKind.WINDOW, 0, 77]);
      const b = Buffer.concat([Buffer.alloc(13), g.bytes(g.int(64))]);
      b.writeUInt32BE(size - 4, 0);
      b[4] = kind;
      b.writeUInt32BE(g.u32(), 5);
      return { label: `kind ${kind} frame of ${size} bytes (not skippable)`, bytes: b, goaway: 'FRAME_TOO_LARGE' };
    }
    case 5: {
      // Skippable (REQUEST, RESPONSE, MESSAGE within 4x the limit) but cut short: the server skips what comes, then sees the end.
      const size = MAX + 1 + g.int(3 * MAX);
      const kind = g.pick([FrameKind.REQUEST, FrameKind.RESPONSE, FrameKind.MESSAGE]);
      const b = Buffer.concat([Buffer.alloc(13), g.bytes(g.int(4096))]);
      b.writeUInt32BE(size - 4, 0);
      b[4] = kind;
      b.writeUInt32BE(g.u32(), 5);
      return { label: `kind ${kind} frame of ${size} bytes, cut after ${b.length}`, bytes: b };
    }
    case 6:
      return { label: 'random bytes', bytes: g.bytes(1 + g.int(256)) };
    default: {
      const f = valid();
      const cut = 1 + g.int(f.length - 1);
      return { label: `frame cut at ${cut} of ${f.length} bytes`, bytes: f.subarray(0, cut) };
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Running a plan over a raw socket

/** What a connection saw. */
interface Outcome {
  /** Problems found, each a sentence naming the plan. */
  problems: string[];
  /** What the server sent: frames by kind name, and RESPONSE/GOAWAY by status reason (`r`, or the status code). */
  seen: Map<string, number>;
}

function tally(seen: Map<string, number>, key: string, n = 1): void {
  seen.set(key, (seen.get(key) ?? 0) + n);
}

const KIND_NAMES = new Map<number, string>(Object.entries(FrameKind).map(([name, kind]) => [kind, name]));

function describePlan(plan: Plan): string {
  const last = plan.frames.slice(-3).map((f) => `${f.label} [${f.bytes.subarray(0, 64).toString('hex')}${f.bytes.length > 64 ? '...' : ''}]`);
  const terminal = plan.terminal === undefined ? '' : `; then ${plan.terminal.label} [${plan.terminal.bytes.subarray(0, 64).toString('hex')}]`;
  return `connection ${plan.index} (seed ${SEED}, plan seed ${plan.seed}, ${plan.flavor}, ${plan.frames.length} frames, last: ${last.join('; ')}${terminal})`;
}

const SERVER_KINDS = new Set<number>([FrameKind.RESPONSE, FrameKind.PONG, FrameKind.MESSAGE, FrameKind.WINDOW, FrameKind.GOAWAY]);

async function runPlan(port: number, plan: Plan): Promise<Outcome> {
  const problems: string[] = [];
  const seen = new Map<string, number>();
  const socket: Socket = connect(port, '127.0.0.1');
  socket.setNoDelay(true);
  let closed = false;
  let socketError: Error | undefined;
  let goaway: { s: number; r?: string; e?: string } | undefined;
  let ponged = false;
  let lastFrameAt = Date.now();
  const waiters = new Set<() => void>();
  const wake = (): void => {
    for (const w of waiters) w();
  };
  const decoder = new FrameDecoder(MAX, (kind, callId, header) => {
    if (!SERVER_KINDS.has(kind)) problems.push(`the server sent a frame of kind ${kind} (#${callId})`);
    tally(seen, KIND_NAMES.get(kind) ?? String(kind));
    lastFrameAt = Date.now();
    if (kind === FrameKind.RESPONSE || kind === FrameKind.GOAWAY || (kind === FrameKind.MESSAGE && header.length > 0)) {
      try {
        const h = decodeStatusHeader(header);
        if (kind === FrameKind.GOAWAY) goaway = h;
        if (kind !== FrameKind.MESSAGE) tally(seen, `${KIND_NAMES.get(kind)} ${h.r ?? Status[h.s]}`);
      } catch (err) {
        problems.push(`the server sent a ${kind} frame whose status header does not decode: ${(err as Error).message} [${header.toString('hex')}]`);
      }
    }
    if (kind === FrameKind.PONG && callId === SENTINEL_PING_ID) {
      ponged = true;
      wake();
    }
  });
  socket.on('data', (chunk: Buffer) => {
    try {
      decoder.push(chunk);
    } catch (err) {
      problems.push(`the server sent bytes that are not frames: ${(err as Error).message}`);
      socket.destroy();
    }
  });
  socket.on('error', (err) => {
    socketError ??= err;
  });
  socket.on('close', () => {
    closed = true;
    wake();
  });
  /** Waits until `cond` holds or the timeout passes; returns whether it holds. */
  const until = (cond: () => boolean, ms = CONNECTION_TIMEOUT_MS): Promise<boolean> =>
    new Promise((resolve) => {
      if (cond()) return resolve(true);
      const done = (): void => {
        if (!cond()) return;
        clearTimeout(timer);
        waiters.delete(done);
        resolve(true);
      };
      const timer = setTimeout(() => {
        waiters.delete(done);
        resolve(cond());
      }, ms);
      waiters.add(done);
    });
  const write = async (bytes: Buffer): Promise<void> => {
    if (closed || socket.destroyed) return;
    if (!socket.write(bytes)) {
      let drained = false;
      socket.once('drain', () => {
        drained = true;
        wake();
      });
      await until(() => drained || closed);
    }
  };

  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });

  // The frames: in batches of whole frames, or dribbled in small writes that split them anywhere.
  if (plan.dribble === 0) {
    for (let i = 0; i < plan.frames.length && !closed; i += plan.batch) {
      await write(Buffer.concat(plan.frames.slice(i, i + plan.batch).map((f) => f.bytes)));
    }
  } else {
    const all = Buffer.concat(plan.frames.map((f) => f.bytes));
    for (let off = 0; off < all.length && !closed; off += plan.dribble) await write(all.subarray(off, off + plan.dribble));
  }

  const where = describePlan(plan);
  if (plan.terminal === undefined) {
    if (closed) problems.push(`the server closed a connection that only had well-framed frames (${socketError?.message ?? 'no error'}): ${where}`);
    else {
      await write(rawFrame(FrameKind.PING, SENTINEL_PING_ID, EMPTY, EMPTY));
      if (!(await until(() => ponged || closed))) problems.push(`no PONG within ${CONNECTION_TIMEOUT_MS} ms: ${where}`);
      else if (!ponged) problems.push(`the server closed a connection that only had well-framed frames (${socketError?.message ?? 'no error'}): ${where}`);
      else if (!plan.abrupt) {
        // Let the calls still running answer (until nothing has come for a moment, or for a few seconds at most).
        const settleBy = Date.now() + SETTLE_MAX_MS;
        while (!closed && Date.now() < settleBy && Date.now() - lastFrameAt < SETTLE_QUIET_MS) await sleep(SETTLE_QUIET_MS / 2);
      }
    }
    if (goaway !== undefined) problems.push(`GOAWAY ${JSON.stringify(goaway)} after well-framed frames only: ${where}`);
    if (plan.abrupt) socket.resetAndDestroy();
    else {
      socket.end();
      if (!(await until(() => closed))) problems.push(`the server did not close within ${CONNECTION_TIMEOUT_MS} ms of the client's end: ${where}`);
    }
  } else {
    await write(plan.terminal.bytes);
    socket.end();
    if (!(await until(() => closed))) problems.push(`the server did not close within ${CONNECTION_TIMEOUT_MS} ms of a framing violation and the client's end: ${where}`);
    const expected = plan.terminal.goaway;
    if (expected !== undefined && goaway?.r !== expected) {
      problems.push(`expected GOAWAY ${expected}, got ${goaway === undefined ? 'none' : JSON.stringify(goaway)}: ${where}`);
    }
  }
  socket.destroy();
  return { problems, seen };
}

// ---------------------------------------------------------------------------------------------
// The server

/** What the server must have sent at least once over the run: the answers to the mutations' kinds of trouble. */
const REACHED = [
  'GOAWAY FRAME_TOO_LARGE',
  'GOAWAY MALFORMED_FRAME',
  'PONG',
  'WINDOW',
  'MESSAGE',
  'RESPONSE OK',
  'RESPONSE MALFORMED_REQUEST_HEADER',
  'RESPONSE UNKNOWN_METHOD',
  'RESPONSE DUPLICATE_CALL_ID',
  'RESPONSE METHOD_KIND_MISMATCH',
  'RESPONSE INVALID_PRIORITY_HEADER',
  'RESPONSE DEADLINE_WHILE_QUEUED',
  'RESPONSE INVALID_REQUEST_BODY',
  'RESPONSE REQUEST_TOO_LARGE',
  'RESPONSE TOO_MANY_STREAMS',
  'RESPONSE INVALID_REQUEST_MESSAGE',
  'RESPONSE UNEXPECTED_REQUEST_STREAM',
];

/** What must never appear on the server's stderr: a crash, an unhandled rejection, a handler failure the server logged. */
const BAD_STDERR = /uncaught|fatal|unhandled|out of memory|maximum call stack|svrkit server:/i;

let server: SvrkitProcess | undefined;
let greeter: GreeterClient | undefined;
let streams: StreamsClient | undefined;

beforeAll(async () => {
  server = await startSvrkit(['run', 'test/support/fuzz-services.ts', '--port', '0']);
  greeter = new GreeterClient(server.address);
  streams = new StreamsClient(server.address);
});

afterAll(async () => {
  greeter?.close();
  streams?.close();
  await server?.stop('SIGKILL'); // already exited when the test passed
});

describe('the server under 100,000 mutated frames', () => {
  it(
    'keeps serving, answers by the protocol, closes what it opened, and keeps its memory bounded',
    async () => {
      const proc = server!;
      const pid = proc.process.pid!;
      expect(proc.output().stdout).toContain(`(pid ${pid})`);
      const port = Number(proc.address.slice(proc.address.lastIndexOf(':') + 1));

      let checks = 0;
      const expectServing = async (): Promise<void> => {
        checks++;
        expect({ exitCode: proc.process.exitCode, signal: proc.process.signalCode }).toEqual({ exitCode: null, signal: null });
        const reply = await greeter!.sayHello({ name: `check ${checks}` }, { timeoutMs: 10_000 });
        expect(reply.message).toBe(`Hello check ${checks}`);
        const seqs: bigint[] = [];
        for await (const item of streams!.echo([{ seq: 1n }, { seq: BigInt(checks) }], { timeoutMs: 10_000 })) seqs.push(item.seq);
        expect(seqs).toEqual([1n, BigInt(checks)]);
        expect(proc.output().stderr).not.toMatch(BAD_STDERR);
      };

      await expectServing();
      const planner = new Planner();
      const problems: string[] = [];
      const seen = new Map<string, number>();
      let frames = 0;
      let connections = 0;
      let terminals = 0;
      let rssAfterWarmup: number | undefined;
      let rssMax = 0;
      let nextCheck = CHECK_EVERY;
      const running = new Set<Promise<void>>();

      while (frames < TOTAL_FRAMES) {
        const plan = planner.plan();
        frames += plan.count;
        connections++;
        if (plan.terminal !== undefined) terminals++;
        const p: Promise<void> = runPlan(port, plan).then(
          (o) => {
            problems.push(...o.problems);
            for (const [k, n] of o.seen) tally(seen, k, n);
          },
          (err: unknown) => void problems.push(`connection ${plan.index} failed: ${String(err)}: ${describePlan(plan)}`),
        );
        running.add(p);
        void p.finally(() => running.delete(p));
        if (running.size >= PARALLEL) await Promise.race(running);
        if (frames >= nextCheck || frames >= TOTAL_FRAMES) {
          await Promise.all(running);
          expect(problems.slice(0, 5)).toEqual([]);
          await expectServing();
          const now = rss(pid);
          rssAfterWarmup ??= now;
          rssMax = Math.max(rssMax, now);
          nextCheck += CHECK_EVERY;
        }
      }

      expect(frames).toBeGreaterThanOrEqual(TOTAL_FRAMES);
      expect(connections).toBeGreaterThanOrEqual(300);
      expect(terminals).toBeGreaterThan(0);
      expect(problems).toEqual([]);
      // The mutations reached every stage: framing, header decode, method lookup, call ids, call
      // kinds, priorities, deadlines, body decode, the stream cap, stream messages, and handlers.
      expect(REACHED.filter((what) => !seen.has(what))).toEqual([]);
      // Every stream the fuzzing opened ended with its connection (their generators' finally ran).
      const stats = await eventually('the fuzzed streams to be closed', () => streams!.stats({}, { timeoutMs: 5000 }), (s) => s.open === 0n, 10_000);
      expect(stats.closed).toBeGreaterThan(0n);
      await expectServing();
      const rssEnd = rss(pid);
      rssMax = Math.max(rssMax, rssEnd);
      const figures = { rssAfterWarmup: rssAfterWarmup!, rssMax, rssEnd, bound: RSS_GROWTH_BOUND };
      expect(rssMax - rssAfterWarmup!, JSON.stringify(figures)).toBeLessThan(RSS_GROWTH_BOUND);
      expect(rssEnd - rssAfterWarmup!, JSON.stringify(figures)).toBeLessThan(RSS_GROWTH_BOUND);

      // And it still shuts down cleanly.
      greeter!.close();
      streams!.close();
      expect(await proc.stop('SIGTERM')).toEqual({ code: 0, signal: null });
      expect(proc.output().stderr).not.toMatch(BAD_STDERR);
    },
    120_000,
  );
});
