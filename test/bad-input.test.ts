/**
 * Bad input: a server fed garbage, lies, oversized and malformed frames, unknown methods, broken
 * bodies, vanishing clients and protocol oddities must answer each the way the protocol says
 * (a RESPONSE with a status for a bad call, GOAWAY and close for broken framing) and keep serving
 * everyone else. Raw `net.Socket`s do the abuse; a generated ProbeClient is the well-behaved
 * client whose next call must succeed after every case.
 */
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { pack } from 'msgpackr';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { RpcError, Server, Status, type MethodDefinition } from '../framework/index.js';
import { DEFAULT_MAX_FRAME_BYTES, FrameDecoder, FrameKind } from '../framework/wire/frame.js';
import { decodeStatusHeader, type StatusHeader } from '../framework/wire/header.js';
import { EchoReply, EchoRequest, ProbeClient, ProbeDefinition } from './.tmp/gen/probe/probe.js';
import { Probe } from './support/probe.js';

const ECHO = ProbeDefinition.methods.echo.path; // 'probe.Probe/Echo'
const EMPTY = new Uint8Array(0);

// ---------------------------------------------------------------------------------------------
// Raw frames

/** Builds one frame byte by byte (independent of the framework's encoder). */
function frame(kind: number, callId: number, header: Uint8Array = EMPTY, body: Uint8Array = EMPTY): Buffer {
  const b = Buffer.alloc(13 + header.length + body.length);
  b.writeUInt32BE(9 + header.length + body.length, 0);
  b[4] = kind;
  b.writeUInt32BE(callId >>> 0, 5);
  b.writeUInt32BE(header.length, 9);
  b.set(header, 13);
  b.set(body, 13 + header.length);
  return b;
}

/** Encodes an EchoRequest body; `padTo` appends an unknown field (number 15) so the body has that many bytes. */
function echoBody(request: Partial<EchoRequest>, padTo = 0): Buffer {
  const body = Buffer.from(EchoRequest.encode(EchoRequest.fromPartial(request)).finish());
  if (padTo <= body.length) return body;
  // Field 15, wire type 2 (length-delimited): tag 0x7a, varint length, bytes. Decoders skip it.
  for (let n = padTo - body.length - 2; n >= 0; n--) {
    const len = varint(n);
    if (body.length + 1 + len.length + n === padTo) return Buffer.concat([body, Buffer.from([0x7a]), len, Buffer.alloc(n, 0x55)]);
  }
  throw new Error(`cannot pad to ${padTo}`);
}

function varint(n: number): Buffer {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return Buffer.from(out);
}

/** A REQUEST frame for Probe.Echo (or any header). */
function echoRequest(callId: number, request: Partial<EchoRequest>, header: object = { m: ECHO }): Buffer {
  return frame(FrameKind.REQUEST, callId, pack(header), echoBody(request));
}

/** Deterministic pseudo-random bytes (mulberry32, seeded). */
function randomBytes(seed: number, n: number): Buffer {
  let a = seed >>> 0;
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((t ^ (t >>> 14)) >>> 0) & 0xff;
  }
  return out;
}

/**
 * What the server must say about a stream that starts with `bytes`: the problem with its first
 * frame, as the GOAWAY status and reason.
 */
function firstFrameProblem(bytes: Buffer, maxFrameBytes = DEFAULT_MAX_FRAME_BYTES): { s: Status; e: string; r: string } {
  const length = bytes.readUInt32BE(0);
  if (length + 4 > maxFrameBytes) {
    const skippable = length + 4 <= 4 * maxFrameBytes && (bytes[4] === FrameKind.REQUEST || bytes[4] === FrameKind.RESPONSE);
    // Test-construction guard: an oversized REQUEST/RESPONSE within 4x the maximum is skipped, not fatal.
    if (skippable) throw new Error('these bytes start with a skippable oversized frame; pick another seed');
    return { s: Status.RESOURCE_EXHAUSTED, e: `protocol error: frame of ${length + 4} bytes exceeds the maximum frame size ${maxFrameBytes}`, r: 'FRAME_TOO_LARGE' };
  }
  if (length < 9) return { s: Status.INTERNAL, e: `protocol error: frame length ${length} is below the minimum 9`, r: 'MALFORMED_FRAME' };
  const headerLength = bytes.readUInt32BE(9);
  if (bytes.length >= length + 4 && headerLength > length - 9) {
    return { s: Status.INTERNAL, e: `protocol error: header length ${headerLength} exceeds frame length ${length}`, r: 'MALFORMED_FRAME' };
  }
  // Test-construction guard: such bytes would be a plausible frame, not garbage.
  throw new Error('these bytes start with a well-formed frame; pick another seed');
}

/** A frame received from the server (copied out of the read buffer). */
interface Frame {
  kind: number;
  callId: number;
  header: Buffer;
  body: Buffer;
}

function kindName(kind: number): string {
  return Object.entries(FrameKind).find(([, v]) => v === kind)?.[0] ?? `kind ${kind}`;
}

function describeFrames(frames: Frame[]): string {
  if (frames.length === 0) return '(no frames)';
  return frames
    .map((f) => {
      let h = '';
      try {
        h = JSON.stringify(decodeStatusHeader(f.header));
      } catch {
        h = f.header.toString('hex');
      }
      return `${kindName(f.kind)} #${f.callId} ${h} +${f.body.length}B`;
    })
    .join('; ');
}

/** A raw client socket that records every frame the server sends and how the socket ended. */
class RawPeer {
  /** Frames received and not yet taken by `next`. */
  readonly inbox: Frame[] = [];
  /** Every frame received, in order. */
  readonly received: Frame[] = [];
  /** The server sent FIN. */
  gotEnd = false;
  /** The socket closed. */
  closed = false;
  hadError = false;
  error: Error | undefined;
  private readonly decoder: FrameDecoder;
  private readonly waiters = new Set<() => void>();

  private constructor(readonly socket: Socket) {
    // Accept anything the server might send (a server bug should show up as a frame, not as our error).
    this.decoder = new FrameDecoder(64 * 1024 * 1024, (kind, callId, header, body) => {
      const f = { kind, callId, header: Buffer.from(header), body: Buffer.from(body) };
      this.inbox.push(f);
      this.received.push(f);
    });
    socket.on('data', (chunk: Buffer) => {
      try {
        this.decoder.push(chunk);
      } catch (err) {
        this.error = err as Error;
      }
      this.wake();
    });
    socket.on('end', () => {
      this.gotEnd = true;
      this.wake();
    });
    socket.on('error', (err) => {
      this.error ??= err;
    });
    socket.on('close', (hadError) => {
      this.closed = true;
      this.hadError = hadError;
      this.wake();
    });
  }

  static async connect(port: number): Promise<RawPeer> {
    const socket = connect({ host: '127.0.0.1', port, noDelay: true });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const peer = new RawPeer(socket);
    peers.add(peer);
    return peer;
  }

  /** Writes bytes; resolves once they are handed to the kernel (or the socket failed). */
  write(...chunks: Uint8Array[]): Promise<void> {
    return new Promise((resolve) => {
      this.socket.write(Buffer.concat(chunks), () => resolve());
    });
  }

  /**
   * Takes the first received frame matching `match` (waiting for it).
   * @throws when the socket closes or `timeoutMs` passes first.
   */
  async next(match: (f: Frame) => boolean = () => true, what = 'a frame', timeoutMs = 5000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.inbox.findIndex(match);
      if (i >= 0) return this.inbox.splice(i, 1)[0]!;
      if (this.closed) throw new Error(`connection closed while waiting for ${what}; received: ${describeFrames(this.received)}`);
      if (Date.now() >= deadline) throw new Error(`timed out waiting for ${what}; received: ${describeFrames(this.received)}`);
      await this.wait(deadline - Date.now());
    }
  }

  /** Takes the RESPONSE for `callId` and decodes its status header. */
  async response(callId: number): Promise<{ status: StatusHeader; frame: Frame }> {
    const f = await this.next((x) => x.kind === FrameKind.RESPONSE && x.callId === callId, `RESPONSE #${callId}`);
    return { status: decodeStatusHeader(f.header), frame: f };
  }

  /** Waits until the socket has closed. @throws when it is still open after `timeoutMs`. */
  async waitClosed(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      if (Date.now() >= deadline) throw new Error(`the server did not close the connection; received: ${describeFrames(this.received)}`);
      await this.wait(deadline - Date.now());
    }
  }

  private wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(t);
        this.waiters.delete(done);
        resolve();
      };
      const t = setTimeout(done, Math.max(1, ms));
      this.waiters.add(done);
    });
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }
}

const peers = new Set<RawPeer>();

// ---------------------------------------------------------------------------------------------
// The server under test

const probe = new Probe();
const logged: string[] = [];
const server = new Server({ logger: { error: (m) => void logged.push(m) } });
server.addService(probe);
let client: ProbeClient;
/** Servers and clients made by individual tests, closed in afterAll. */
const extraServers: Server[] = [];
const extraClients: ProbeClient[] = [];

beforeAll(async () => {
  await server.listen(0, '127.0.0.1');
  client = new ProbeClient(server.address);
});

afterEach(() => {
  for (const p of peers) p.socket.destroy();
  peers.clear();
});

afterAll(async () => {
  client?.close();
  for (const c of extraClients) c.close();
  await Promise.all([server, ...extraServers].map((s) => s.close({ graceMs: 100 })));
});

/** The well-behaved client still gets answers. */
async function expectStillServing(c: ProbeClient = client): Promise<void> {
  const reply = await c.echo({ text: 'still alive' }, { timeoutMs: 5000 });
  expect(reply.text).toBe('still alive');
}

/** Polls `check` until it returns a value other than undefined. */
async function eventually<T>(what: string, check: () => T | undefined, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = check();
    if (v !== undefined) return v;
    if (Date.now() >= deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

async function newServer(options: ConstructorParameters<typeof Server>[0]): Promise<{ server: Server; probe: Probe; client: ProbeClient }> {
  const p = new Probe();
  const s = new Server({ logger: { error: (m) => void logged.push(m) }, ...options });
  s.addService(p);
  await s.listen(0, '127.0.0.1');
  extraServers.push(s);
  const c = new ProbeClient(s.address);
  extraClients.push(c);
  return { server: s, probe: p, client: c };
}

// ---------------------------------------------------------------------------------------------

describe('garbage on the wire', () => {
  it('random bytes: the server sends GOAWAY naming the framing problem and closes that connection', async () => {
    const streams: Buffer[] = [];
    for (const seed of [1, 2, 3, 42, 1234, 0xdeadbeef]) {
      streams.push(randomBytes(seed, 4096));
      // The same garbage behind a plausible length prefix (a 4 KiB frame): the header length is garbage.
      const prefixed = randomBytes(seed, 4096);
      prefixed.writeUInt32BE(4092, 0);
      streams.push(prefixed);
    }
    // And a length below the minimum.
    const short = randomBytes(7, 4096);
    short.writeUInt32BE(3, 0);
    streams.push(short);
    const statuses = new Set<Status>();
    for (const [i, bytes] of streams.entries()) {
      const expected = firstFrameProblem(bytes);
      const peer = await RawPeer.connect(server.port);
      await peer.write(bytes);
      // We never end our side: the close comes from the server.
      await peer.waitClosed();
      expect(peer.error, `stream ${i}: what the server sent parses as frames`).toBeUndefined();
      expect(describeFrames(peer.received), `stream ${i}`).toMatch(/^GOAWAY #0 [^;]*$/);
      expect(decodeStatusHeader(peer.received[0]!.header), `stream ${i}`).toEqual(expected);
      statuses.add(expected.s);
    }
    expect([...statuses].sort()).toEqual([Status.RESOURCE_EXHAUSTED, Status.INTERNAL].sort());
    await expectStillServing();
  });

  it('random frame contents with valid framing: every REQUEST gets an error RESPONSE, every PING a PONG, nothing else breaks', async () => {
    const peer = await RawPeer.connect(server.port);
    const chunks: Buffer[] = [];
    const requests: number[] = [];
    const pings: number[] = [];
    for (let i = 0; i < 300; i++) {
      const r = randomBytes(1000 + i, 200);
      const callId = i + 1;
      // Mostly REQUEST frames with garbage headers/bodies, plus every other kind and unknown ones.
      const kind = r[0]! % 3 === 0 ? r[1]! : FrameKind.REQUEST;
      const headerLength = r[2]! % 64;
      const bodyLength = r[3]! % 100;
      const header = r.subarray(4, 4 + headerLength);
      const body = r.subarray(100, 100 + bodyLength);
      chunks.push(frame(kind, callId, header, body));
      if (kind === FrameKind.REQUEST) requests.push(callId);
      if (kind === FrameKind.PING) pings.push(callId);
    }
    // One write, so frames also straddle chunk boundaries on the server.
    await peer.write(...chunks);
    await peer.write(frame(FrameKind.PING, 0xabcdef));
    await peer.next((f) => f.kind === FrameKind.PONG && f.callId === 0xabcdef, 'the final PONG');
    for (const id of requests) {
      const { status } = await peer.response(id);
      expect(status.s, `call ${id}: ${status.e}`).not.toBe(Status.OK);
    }
    for (const id of pings) await peer.next((f) => f.kind === FrameKind.PONG && f.callId === id, `PONG #${id}`);
    expect(requests.length).toBeGreaterThan(100);
    expect(peer.inbox.filter((f) => f.kind === FrameKind.RESPONSE)).toEqual([]);
    expect(peer.received.some((f) => f.kind === FrameKind.GOAWAY)).toBe(false);
    expect(peer.closed).toBe(false);
    // The same connection still serves a proper call.
    await peer.write(echoRequest(0x7fff, { text: 'after the noise' }));
    const { status, frame: f } = await peer.response(0x7fff);
    expect(status.s).toBe(Status.OK);
    expect(EchoReply.decode(f.body).text).toBe('after the noise');
    await expectStillServing();
  });

  it('a valid request delivered one byte per write is served', async () => {
    const peer = await RawPeer.connect(server.port);
    const bytes = echoRequest(9, { text: 'dribbled' });
    for (const b of bytes) {
      await peer.write(Buffer.from([b]));
    }
    const { status, frame: f } = await peer.response(9);
    expect(status.s).toBe(Status.OK);
    expect(EchoReply.decode(f.body).text).toBe('dribbled');
  });
});

describe('broken framing', () => {
  it('a truncated frame followed by end of input: the connection closes cleanly, nothing is answered', async () => {
    const full = echoRequest(1, { text: 'never complete', delayMs: 0 });
    for (const cut of [2, 13, full.length - 1]) {
      const peer = await RawPeer.connect(server.port);
      await peer.write(full.subarray(0, cut));
      peer.socket.end();
      await peer.waitClosed();
      expect(peer.gotEnd, `cut at ${cut}: the server ended its side`).toBe(true);
      expect(peer.hadError, `cut at ${cut}`).toBe(false);
      expect(peer.error).toBeUndefined();
      expect(peer.received, `cut at ${cut}`).toEqual([]);
    }
    expect(probe.endings.has('never complete')).toBe(false);
    await expectStillServing();
  });

  it('an oversized frame (length field 2^32-1): GOAWAY RESOURCE_EXHAUSTED naming the maximum frame size, then close', async () => {
    const peer = await RawPeer.connect(server.port);
    const prefix = Buffer.alloc(13);
    prefix.writeUInt32BE(0xffffffff, 0);
    prefix[4] = FrameKind.REQUEST;
    prefix.writeUInt32BE(1, 5);
    // A PING in the same write, before the bad frame: it is still answered.
    await peer.write(frame(FrameKind.PING, 5), prefix);
    await peer.waitClosed();
    expect(describeFrames(peer.received)).toMatch(/^PONG #5 .*; GOAWAY #0 /);
    const h = decodeStatusHeader(peer.received[1]!.header);
    expect(h.s).toBe(Status.RESOURCE_EXHAUSTED);
    expect(h.e).toBe(`protocol error: frame of 4294967299 bytes exceeds the maximum frame size ${DEFAULT_MAX_FRAME_BYTES}`);
    await expectStillServing();
  });

  it('a request one byte over the 16 MiB default fails alone with RESOURCE_EXHAUSTED; the same connection then serves 16 MiB exactly', async () => {
    const peer = await RawPeer.connect(server.port);
    const header = pack({ m: ECHO });
    const over = frame(FrameKind.REQUEST, 1, header, echoBody({ text: 'one byte over' }, DEFAULT_MAX_FRAME_BYTES + 1 - 13 - header.length));
    expect(over.length).toBe(DEFAULT_MAX_FRAME_BYTES + 1);
    await peer.write(over);
    const refused = await peer.response(1);
    expect(refused.status).toEqual({
      s: Status.RESOURCE_EXHAUSTED,
      e: `request of ${DEFAULT_MAX_FRAME_BYTES + 1} bytes exceeds the maximum frame size ${DEFAULT_MAX_FRAME_BYTES}`,
      r: 'REQUEST_TOO_LARGE',
    });
    // The oversized frame was skipped, not served, and the stream is still in step.
    const exact = frame(FrameKind.REQUEST, 2, header, echoBody({ text: 'sixteen mebibytes' }, DEFAULT_MAX_FRAME_BYTES - 13 - header.length));
    expect(exact.length).toBe(DEFAULT_MAX_FRAME_BYTES);
    await peer.write(exact);
    const { status, frame: reply } = await peer.response(2);
    expect(status.s).toBe(Status.OK);
    expect(EchoReply.decode(reply.body).text).toBe('sixteen mebibytes');
    expect(server.inflightCalls).toBe(0);
    expect(peer.received.some((f) => f.kind === FrameKind.GOAWAY)).toBe(false);
    await expectStillServing();
  });

  it('a frame over 4x the maximum, or an oversized frame of another kind, is a protocol error: GOAWAY, then close', async () => {
    for (const [kind, size] of [[FrameKind.REQUEST, 4 * DEFAULT_MAX_FRAME_BYTES + 1], [FrameKind.PING, DEFAULT_MAX_FRAME_BYTES + 1]] as const) {
      const peer = await RawPeer.connect(server.port);
      const prefix = Buffer.alloc(13);
      prefix.writeUInt32BE(size - 4, 0);
      prefix[4] = kind;
      await peer.write(prefix);
      await peer.waitClosed();
      expect(peer.received).toHaveLength(1);
      expect(peer.received[0]!.kind).toBe(FrameKind.GOAWAY);
      expect(decodeStatusHeader(peer.received[0]!.header)).toEqual({
        s: Status.RESOURCE_EXHAUSTED,
        e: `protocol error: frame of ${size} bytes exceeds the maximum frame size ${DEFAULT_MAX_FRAME_BYTES}`,
        r: 'FRAME_TOO_LARGE',
      });
    }
    await expectStillServing();
  });

  it('a frame length below the minimum, and a header length beyond the frame: GOAWAY with the reason, then close', async () => {
    const tooShort = Buffer.alloc(8);
    tooShort.writeUInt32BE(4, 0);
    const headerTooLong = frame(FrameKind.REQUEST, 3, pack({ m: ECHO }));
    headerTooLong.writeUInt32BE(1000, 9);
    for (const [bytes, reason] of [
      [tooShort, 'protocol error: frame length 4 is below the minimum 9'],
      [headerTooLong, `protocol error: header length 1000 exceeds frame length ${headerTooLong.length - 4}`],
    ] as const) {
      const peer = await RawPeer.connect(server.port);
      await peer.write(bytes);
      await peer.waitClosed();
      expect(peer.received).toHaveLength(1);
      expect(peer.received[0]!.kind).toBe(FrameKind.GOAWAY);
      const h = decodeStatusHeader(peer.received[0]!.header);
      expect(h.s).not.toBe(Status.OK);
      expect(h.e).toBe(reason);
    }
    await expectStillServing();
  });

  it('a server with maxFrameBytes 1024: a 2 KiB request gets RESOURCE_EXHAUSTED for that call; exactly 1024 bytes is served', async () => {
    const small = await newServer({ maxFrameBytes: 1024 });
    const header = pack({ m: ECHO });

    const big = await RawPeer.connect(small.server.port);
    const bigFrame = frame(FrameKind.REQUEST, 1, header, echoBody({ text: 'too big' }, 2048 - 13 - header.length));
    expect(bigFrame.length).toBe(2048);
    await big.write(bigFrame);
    const { status: refused } = await big.response(1);
    expect(refused).toEqual({ s: Status.RESOURCE_EXHAUSTED, e: 'request of 2048 bytes exceeds the maximum frame size 1024', r: 'REQUEST_TOO_LARGE' });
    expect(small.probe.endings.has('too big')).toBe(false);

    const fits = await RawPeer.connect(small.server.port);
    const fitFrame = frame(FrameKind.REQUEST, 2, header, echoBody({ text: 'fits' }, 1024 - 13 - header.length));
    expect(fitFrame.length).toBe(1024);
    await fits.write(fitFrame);
    const { status } = await fits.response(2);
    expect(status.s).toBe(Status.OK);

    await expectStillServing(small.client);
    await expectStillServing();
  });

  it('a client whose request exceeds the server\'s maxFrameBytes gets the server\'s reason (RESOURCE_EXHAUSTED), not a bare "connection closed"', async () => {
    const small = await newServer({ maxFrameBytes: 1024 });
    // Over the limit: the server refuses that one call.
    const err = await small.client.echo({ text: 'x'.repeat(2000) }, { timeoutMs: 5000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RpcError);
    const e = err as RpcError;
    expect(`${e.codeName}: ${e.message}`).toMatch(/^RESOURCE_EXHAUSTED: request of \d+ bytes exceeds the maximum frame size 1024$/);
    await expectStillServing(small.client);
    // Far over it (more than 4x): a protocol error, so GOAWAY and close; the call ends with the
    // status and reason the server gave in its GOAWAY, not a bare "connection closed".
    const far = await small.client.echo({ text: 'x'.repeat(5000) }, { timeoutMs: 5000 }).then(
      () => new Error('expected the call to fail'),
      (x: unknown) => x,
    );
    expect(far).toBeInstanceOf(RpcError);
    expect(`${(far as RpcError).codeName}: ${(far as RpcError).message}`).toMatch(
      /^RESOURCE_EXHAUSTED: connection closed by the server: protocol error: frame of \d+ bytes exceeds the maximum frame size 1024/,
    );
    await expectStillServing(small.client);
  });
});

describe('bad calls on a good connection', () => {
  it('headers that are not msgpack, or not a request header: RESPONSE INVALID_ARGUMENT for that call id; the connection keeps working', async () => {
    const peer = await RawPeer.connect(server.port);
    const body = echoBody({ text: 'bad header' });
    const cases: Array<[string, Uint8Array, RegExp]> = [
      ['empty header', EMPTY, /^request header is not valid msgpack/],
      ['truncated msgpack map', Uint8Array.from([0x82, 0xa1]), /^request header is not valid msgpack/],
      ['msgpack with trailing bytes', Buffer.concat([pack({ m: ECHO }), Buffer.from([0x01])]), /^request header is not valid msgpack/],
      ['map with a map as key', Uint8Array.from([0x81, 0x81, 0x01, 0x02, 0x03]), /^request header is not valid msgpack/],
      ['reserved byte 0xc1', Uint8Array.from([0xc1]), /^request header /],
      ['a number', pack(42), /^request header is not a map$/],
      ['a string', pack(ECHO), /^request header is not a map$/],
      ['nil', pack(null), /^request header is not a map$/],
      ['an array', pack([ECHO]), /^request header is not a map$/],
      ['a map without m', pack({ d: 100 }), /^request header has no method name \(m\)$/],
      ['a map with integer keys', Uint8Array.from([0x81, 0x01, 0x02]), /^request header has no method name \(m\)$/],
      ['m is a number', pack({ m: 5 }), /^request header has no method name \(m\)$/],
      ['m is empty', pack({ m: '' }), /^request header has no method name \(m\)$/],
      ['d is a string', pack({ m: ECHO, d: 'soon' }), /deadline \(d\)/],
      ['d is NaN', pack({ m: ECHO, d: NaN }), /deadline \(d\)/],
      ['d is Infinity', pack({ m: ECHO, d: Infinity }), /deadline \(d\)/],
      ['t is a number', pack({ m: ECHO, t: 7 }), /trace id \(t\)/],
      ['md has a number value', pack({ m: ECHO, md: { a: 1 } }), /metadata \(md\)/],
      ['md is an array', pack({ m: ECHO, md: ['a'] }), /metadata \(md\)/],
      ['pm has a number', pack({ m: ECHO, pm: [1] }), /propagation list \(pm\)/],
      ['pm is a string', pack({ m: ECHO, pm: 'x-user' }), /propagation list \(pm\)/],
    ];
    let id = 100;
    for (const [, header] of cases) await peer.write(frame(FrameKind.REQUEST, id++, header, body));
    id = 100;
    for (const [label, , message] of cases) {
      const { status, frame: f } = await peer.response(id++);
      expect(status.s, `${label}: ${status.e}`).toBe(Status.INVALID_ARGUMENT);
      expect(status.e, label).toMatch(message);
      expect(f.body.length, label).toBe(0);
    }
    expect(probe.endings.has('bad header')).toBe(false);
    await peer.write(echoRequest(1, { text: 'good header' }));
    const { status, frame: f } = await peer.response(1);
    expect(status.s).toBe(Status.OK);
    expect(EchoReply.decode(f.body).text).toBe('good header');
    expect(peer.closed).toBe(false);
    await expectStillServing();
  });

  it('a deadline that is already over (d <= 0) is DEADLINE_EXCEEDED without running the handler', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.write(echoRequest(1, { text: 'late-0' }, { m: ECHO, d: 0 }), echoRequest(2, { text: 'late-neg' }, { m: ECHO, d: -5 }));
    for (const id of [1, 2]) {
      const { status } = await peer.response(id);
      expect(status.s).toBe(Status.DEADLINE_EXCEEDED);
    }
    expect(probe.endings.has('late-0')).toBe(false);
    expect(probe.endings.has('late-neg')).toBe(false);
    await expectStillServing();
  });

  it('a far deadline (d = 2^31 ms, about 25 days) is a far deadline, not an immediate DEADLINE_EXCEEDED', async () => {
    const peer = await RawPeer.connect(server.port);
    // Node's setTimeout turns delays above 2^31-1 ms into 1 ms.
    for (const [id, d] of [[1, 2 ** 31], [2, 1e12]] as const) {
      await peer.write(echoRequest(id, { text: `far-${id}`, delayMs: 50 }, { m: ECHO, d }));
      const { status } = await peer.response(id);
      expect({ d, status }).toEqual({ d, status: { s: Status.OK } });
    }
    await expectStillServing();
  });

  it('a client call with a far timeout (timeoutMs 2^31, about 25 days) is not failed at once with DEADLINE_EXCEEDED', async () => {
    const outcome = await client.echo({ text: 'far timeout', delayMs: 50 }, { timeoutMs: 2 ** 31 }).then(
      (r) => ({ text: r.text, farDeadlineSeenByServer: r.deadlineLeftMs > 2n ** 31n - 60_000n }),
      (e: unknown) => String(e),
    );
    expect(outcome).toEqual({ text: 'far timeout', farDeadlineSeenByServer: true });
  });

  it('an unknown method: RESPONSE UNIMPLEMENTED, over a raw socket and through a client with a wrong method path', async () => {
    const peer = await RawPeer.connect(server.port);
    const body = echoBody({ text: 'unknown method' });
    await peer.write(
      frame(FrameKind.REQUEST, 1, pack({ m: 'probe.Probe/Nope' }), body),
      frame(FrameKind.REQUEST, 2, pack({ m: 'no.Such/Service' }), body),
      frame(FrameKind.REQUEST, 3, pack({ m: 'probe.Probe.Echo' }), body),
    );
    for (const [id, m] of [[1, 'probe.Probe/Nope'], [2, 'no.Such/Service'], [3, 'probe.Probe.Echo']] as const) {
      const { status } = await peer.response(id);
      expect(status).toEqual({ s: Status.UNIMPLEMENTED, e: `unknown method '${m}'`, r: 'UNKNOWN_METHOD' });
    }
    await peer.write(echoRequest(4, { text: 'known method' }));
    expect((await peer.response(4)).status.s).toBe(Status.OK);

    const wrong: MethodDefinition = { ...ProbeDefinition.methods.echo, path: 'probe.Probe/Missing' };
    const err = await client.channel.unary(wrong, { text: 'wrong path' }, { timeoutMs: 5000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RpcError);
    expect((err as RpcError).code).toBe(Status.UNIMPLEMENTED);
    expect((err as RpcError).message).toBe("unknown method 'probe.Probe/Missing'");
    expect(probe.endings.has('unknown method')).toBe(false);
    expect(probe.endings.has('wrong path')).toBe(false);
    await expectStillServing();
  });

  it('a body that is not a valid EchoRequest: INVALID_ARGUMENT naming the type; the connection keeps working', async () => {
    const peer = await RawPeer.connect(server.port);
    const header = pack({ m: ECHO });
    const bodies: Array<[string, number[]]> = [
      ['wire type 7', [0x0f]],
      ['truncated string', [0x0a, 0x10, 0x41]],
      ['varint longer than 10 bytes', [0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]],
      ['truncated tag', [0x80]],
      ['truncated map entry', [0x2a, 0x03, 0x0a, 0x05, 0x41]],
    ];
    let id = 10;
    for (const [, bytes] of bodies) await peer.write(frame(FrameKind.REQUEST, id++, header, Uint8Array.from(bytes)));
    id = 10;
    for (const [label] of bodies) {
      const { status } = await peer.response(id++);
      expect(status.s, `${label}: ${status.e}`).toBe(Status.INVALID_ARGUMENT);
      expect(status.e, label).toMatch(/^request body is not a valid probe\.EchoRequest: /);
    }
    await peer.write(echoRequest(1, { text: 'valid body' }));
    expect((await peer.response(1)).status.s).toBe(Status.OK);
    await expectStillServing();
  });
});

describe('calls that end badly', () => {
  it('a client that vanishes mid-call: the handler\'s signal fires (CANCELLED) and the server keeps serving', async () => {
    const peer = await RawPeer.connect(server.port);
    const activeBefore = probe.active;
    await peer.write(echoRequest(1, { text: 'vanishing', delayMs: 2000 }));
    await eventually('the handler to start', () => (probe.active > activeBefore ? true : undefined));
    peer.socket.destroy();
    const ending = await eventually('the handler to end', () => probe.endings.get('vanishing'));
    // Had the signal not fired, the handler would have slept its 2 s and recorded 'ok'.
    expect(ending).toEqual({ outcome: 'CANCELLED', detail: 'client disconnected' });
    await eventually('active calls to drop back', () => (probe.active === activeBefore ? true : undefined));
    expect(server.inflightCalls).toBe(0);
    await expectStillServing();
  });

  it('a CANCEL for a call in flight: the handler\'s signal fires, no response is sent, the connection keeps working', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.write(echoRequest(1, { text: 'cancel-me', delayMs: 2000 }));
    await eventually('the handler to start', () => (probe.active > 0 ? true : undefined));
    await peer.write(frame(FrameKind.CANCEL, 1));
    const ending = await eventually('the handler to end', () => probe.endings.get('cancel-me'));
    expect(ending).toEqual({ outcome: 'CANCELLED', detail: 'cancelled by the client' });
    await peer.write(echoRequest(2, { text: 'after cancel' }));
    expect((await peer.response(2)).status.s).toBe(Status.OK);
    expect(peer.received.filter((f) => f.callId === 1)).toEqual([]);
    await expectStillServing();
  });

  it('a response larger than the server\'s maxFrameBytes: RESOURCE_EXHAUSTED for that call; the connection stays usable', async () => {
    const limited = await newServer({ maxFrameBytes: 64 * 1024 });
    const peer = await RawPeer.connect(limited.server.port);
    await peer.write(echoRequest(1, { text: 'huge reply', replyBytes: 100_000 }));
    const { status } = await peer.response(1);
    expect(status.s).toBe(Status.RESOURCE_EXHAUSTED);
    expect(status.e).toMatch(/^response of \d+ bytes exceeds the maximum frame size 65536$/);
    await peer.write(echoRequest(2, { text: 'small reply', replyBytes: 1000 }));
    const ok = await peer.response(2);
    expect(ok.status.s).toBe(Status.OK);
    expect(EchoReply.decode(ok.frame.body).padding).toHaveLength(1000);
    expect(peer.closed).toBe(false);

    // The same through a generated client, twice on one channel.
    const err = await limited.client.echo({ text: 'huge via client', replyBytes: 100_000 }, { timeoutMs: 5000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RpcError);
    expect((err as RpcError).code).toBe(Status.RESOURCE_EXHAUSTED);
    await expectStillServing(limited.client);
    await expectStillServing();
  });

  it('a response larger than the client\'s maxFrameBytes: that call fails naming the limit; the client reconnects, the server carries on', async () => {
    const smallClient = new ProbeClient(server.address, { maxFrameBytes: 4096 });
    extraClients.push(smallClient);
    await expectStillServing(smallClient);
    const err = await smallClient.echo({ text: 'too big for the client', replyBytes: 10_000 }, { timeoutMs: 5000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RpcError);
    expect((err as RpcError).message).toMatch(/exceeds the maximum frame size 4096/);
    await expectStillServing(smallClient);
    await expectStillServing();
  });

  it('a response larger than the client\'s maxFrameBytes fails only that call (RESOURCE_EXHAUSTED); another call on the same connection completes', async () => {
    const smallClient = new ProbeClient(server.address, { maxFrameBytes: 4096 });
    extraClients.push(smallClient);
    await expectStillServing(smallClient);
    // Both calls share the client's one connection.
    const slow = smallClient.echo({ text: 'bystander', delayMs: 300 }, { timeoutMs: 5000 }).then(
      (r) => `ok: ${r.text}`,
      (e: unknown) => `failed: ${String(e)}`,
    );
    await eventually('the bystander call to start', () => (probe.endings.has('bystander') || probe.active > 0 ? true : undefined));
    const oversized = await smallClient.echo({ text: 'oversized reply', replyBytes: 10_000 }, { timeoutMs: 5000 }).then(
      () => 'ok',
      (e: unknown) => (e instanceof RpcError ? `${e.codeName}: ${e.message}` : String(e)),
    );
    expect({ oversized, bystander: await slow }).toEqual({
      oversized: expect.stringMatching(/^RESOURCE_EXHAUSTED: .*exceeds the maximum frame size 4096/),
      bystander: 'ok: bystander',
    });
  });
});

describe('protocol oddities', () => {
  it('a duplicate call id in flight is refused with INVALID_ARGUMENT; the original call still completes', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.write(echoRequest(5, { text: 'dup-first', delayMs: 300 }));
    await eventually('the first call to start', () => (probe.active > 0 ? true : undefined));
    await peer.write(echoRequest(5, { text: 'dup-second' }));
    const first = await peer.response(5);
    expect(first.status).toEqual({ s: Status.INVALID_ARGUMENT, e: 'call id 5 is already in use on this connection', r: 'DUPLICATE_CALL_ID' });
    const second = await peer.response(5);
    expect(second.status.s).toBe(Status.OK);
    expect(EchoReply.decode(second.frame.body).text).toBe('dup-first');
    expect(probe.endings.has('dup-second')).toBe(false);
    await expectStillServing();
  });

  it('CANCEL for an unknown id, PING, unsolicited PONG/GOAWAY/RESPONSE and unknown kinds: PING gets PONG with its id, the rest is ignored', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.write(
      frame(FrameKind.CANCEL, 999),
      frame(FrameKind.PING, 0xfffffffe),
      frame(FrameKind.PONG, 3),
      frame(FrameKind.RESPONSE, 4, pack({ s: 2, e: 'not from a server' }), Buffer.from('body')),
      frame(0, 5, Buffer.from('zero kind'), Buffer.from('ignored')),
      frame(99, 6, pack({ m: ECHO }), echoBody({ text: 'kind 99' })),
      frame(255, 7),
      frame(FrameKind.GOAWAY, 0, pack({ s: Status.UNAVAILABLE, e: 'client says goodbye' })),
      frame(FrameKind.PING, 8, Buffer.from('ping header'), Buffer.from('ping body')),
      echoRequest(9, { text: 'after oddities' }),
    );
    const { status, frame: f } = await peer.response(9);
    expect(status.s).toBe(Status.OK);
    expect(EchoReply.decode(f.body).text).toBe('after oddities');
    expect(describeFrames(peer.received)).toBe('PONG #4294967294 {"s":0} +0B; PONG #8 {"s":0} +0B; ' + describeFrames([f]));
    expect(probe.endings.has('kind 99')).toBe(false);
    await expectStillServing();
  });

  it('nothing above was reported to the server logger as an unexpected handler failure', () => {
    expect(logged).toEqual([]);
  });
});

describe('a client that ignores GOAWAY', () => {
  it('a call sent after the client acknowledged GOAWAY is refused UNAVAILABLE, marked not processed (np)', async () => {
    const s = new Server({ logger: { error: (m) => void logged.push(m) } });
    const p = new Probe();
    s.addService(p);
    await s.listen(0, '127.0.0.1');
    const peer = await RawPeer.connect(s.port);
    // Keep one call in flight so the connection stays open while the server drains.
    await peer.write(echoRequest(1, { text: 'slow', delayMs: 500 }));
    await eventually('the slow call to start', () => (p.active === 1 ? true : undefined));
    const closing = s.close({ graceMs: 3000 });
    const ping = await peer.next((f) => f.kind === FrameKind.PING, 'the PING after GOAWAY');
    expect(peer.received.some((f) => f.kind === FrameKind.GOAWAY)).toBe(true);
    await peer.write(frame(FrameKind.PONG, ping.callId), echoRequest(3, { text: 'after goaway' }));
    const { status } = await peer.response(3);
    expect(status).toMatchObject({ s: Status.UNAVAILABLE, np: true });
    expect(status.e).toMatch(/refused after GOAWAY/);
    expect(p.endings.has('after goaway')).toBe(false);
    expect((await peer.response(1)).status.s).toBe(Status.OK);
    await closing;
  });
});
