/**
 * The gRPC side of a svrkit server under bad and unusual input, over real sockets on 127.0.0.1:
 * raw HTTP/2 clients (node:http2, and raw TCP for what node:http2 would not send) that send
 * garbage after the preface, huge header blocks, truncated and oversized and compressed messages,
 * malformed grpc-timeouts, too many messages, slow messages and reset storms; response metadata
 * HTTP/2 cannot carry; clients that read slowly; a graceful shutdown while a request uploads;
 * HTTP/1.x and TLS clients on the plaintext port; and gRPC over TLS on `grpcPort`. After each, the
 * server still answers.
 */
import { connect as h2connect, constants as h2, type ClientHttp2Session } from 'node:http2';
import { connect as netConnect, createServer as netServer, type Server as NetServer, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as loader from '@grpc/proto-loader';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Server, type ServerOptions } from '../../index.js';
import { EchoRequest } from '../.tmp/gen/probe/probe.js';
import { makeCerts, type TestCerts } from '../support/certs.js';
import { Probe } from '../support/probe.js';
import { Streams } from '../support/streams-service.js';

const PROTOS = ['test/protos/runtime/probe.proto', 'test/protos/runtime/streams.proto'];
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const pkg = grpc.loadPackageDefinition(loader.loadSync(PROTOS, { includeDirs: ['framework/builtin/proto', '.'], longs: String, defaults: true })) as any;

/** What a raw HTTP/2 gRPC request got back. */
interface RawReply {
  httpStatus: number | undefined;
  grpcStatus: number | undefined;
  grpcMessage: string | undefined;
  headers: Record<string, unknown>;
  data: Buffer;
  rstCode: number | undefined;
}

/** A server with a Probe service (`probe`), listening on a free port of 127.0.0.1; the test closes it. */
async function probeServer(options: ServerOptions = {}, probe = new Probe()): Promise<Server> {
  const s = new Server(options);
  s.addService(probe);
  await s.listen(0, '127.0.0.1');
  return s;
}

/** A raw HTTP/2 session to `address` (host:port); its errors are ignored (the server may reset or go away). */
function rawSession(address: string): ClientHttp2Session {
  const s = h2connect(`http://${address}`);
  s.on('error', () => {});
  return s;
}

/** A length-prefixed gRPC message (`flag` 1 claims compression; `claim` overrides the length). */
function framed(body: Uint8Array, flag = 0, claim = body.length): Buffer {
  const out = Buffer.alloc(5 + body.length);
  out[0] = flag;
  out.writeUInt32BE(claim, 1);
  out.set(body, 5);
  return out;
}

const echo = (text: string, delayMs = 0): Uint8Array => EchoRequest.encode(EchoRequest.fromPartial({ text, delayMs })).finish();

/**
 * Sends one gRPC request over a raw node:http2 session: `chunks` written in order, a pause of
 * `gapMs` between them, then the end of the request unless `end` is false.
 */
function raw(session: ClientHttp2Session, path: string, chunks: Buffer[], opts: { headers?: Record<string, string>; end?: boolean; gapMs?: number } = {}): Promise<RawReply> {
  return new Promise((resolve) => {
    const reply: RawReply = { httpStatus: undefined, grpcStatus: undefined, grpcMessage: undefined, headers: {}, data: Buffer.alloc(0), rstCode: undefined };
    const req = session.request({ [h2.HTTP2_HEADER_METHOD]: 'POST', [h2.HTTP2_HEADER_PATH]: path, [h2.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc', te: 'trailers', ...opts.headers });
    const take = (h: Record<string, unknown>): void => {
      Object.assign(reply.headers, h);
      if (h[h2.HTTP2_HEADER_STATUS] !== undefined) reply.httpStatus = Number(h[h2.HTTP2_HEADER_STATUS]);
      if (h['grpc-status'] !== undefined) reply.grpcStatus = Number(h['grpc-status']);
      if (h['grpc-message'] !== undefined) reply.grpcMessage = decodeURIComponent(String(h['grpc-message']));
    };
    req.on('response', take);
    req.on('trailers', take);
    req.on('data', (d: Buffer) => (reply.data = Buffer.concat([reply.data, d])));
    req.on('error', () => {});
    req.on('close', () => {
      reply.rstCode = req.rstCode;
      resolve(reply);
    });
    void (async () => {
      for (const [i, c] of chunks.entries()) {
        if (i > 0 && opts.gapMs !== undefined) await new Promise((r) => setTimeout(r, opts.gapMs));
        if (!req.closed) req.write(c);
      }
      if (opts.end !== false && !req.closed) req.end();
    })();
  });
}

/** A grpc-js unary echo: the reply's text, or `error <code>`. */
function grpcEcho(address: string, text: string, extra: object = {}): Promise<string> {
  const c = new pkg.probe.Probe(address, grpc.credentials.createInsecure());
  return new Promise((resolve) => {
    c.echo({ text, ...extra }, (err: grpc.ServiceError | null, r: { text: string }) => {
      c.close();
      resolve(err !== null ? `error ${err.code} ${err.details}` : r.text);
    });
  });
}

const logged: string[] = [];
let server: Server;
let session: ClientHttp2Session;

beforeAll(async () => {
  server = new Server({ grpcPort: 0, frameTimeoutMs: 1500, maxFrameBytes: 256 * 1024, logger: { error: (m, e) => logged.push(`${m} ${e instanceof Error ? e.message : ''}`) } });
  server.addService(new Probe()).addService(new Streams());
  await server.listen(0, '127.0.0.1');
  session = h2connect(`http://${server.address}`);
  session.on('error', () => {});
});

afterAll(async () => {
  session.close();
  await server.close({ graceMs: 100 });
});

describe('malformed gRPC requests get a status, and the session goes on', () => {
  it('a length prefix larger than the body: INTERNAL, unary and client-streaming', async () => {
    const unary = await raw(session, '/probe.Probe/Echo', [framed(echo('abc'), 0, 1000)]);
    expect(unary).toMatchObject({ httpStatus: 200, grpcStatus: 13 });
    expect(unary.grpcMessage).toMatch(/ended inside a message/);
    const upload = await raw(session, '/streams.v1.Streams/Upload', [framed(Buffer.from([0x0a, 0x01, 0x41])), framed(Buffer.alloc(10), 0, 500)]);
    expect(upload).toMatchObject({ grpcStatus: 13 });
    expect(upload.grpcMessage).toMatch(/ended inside a message/);
    expect(await raw(session, '/probe.Probe/Echo', [framed(echo('after'))])).toMatchObject({ grpcStatus: 0 });
  });

  it('no message, two messages, a compressed one, an oversized one, a malformed grpc-timeout', async () => {
    expect(await raw(session, '/probe.Probe/Echo', [])).toMatchObject({ grpcStatus: 13, grpcMessage: 'probe.Probe/Echo takes one request message, got 0' });
    expect(await raw(session, '/probe.Probe/Echo', [framed(echo('a')), framed(echo('b'))])).toMatchObject({ grpcStatus: 13, grpcMessage: 'probe.Probe/Echo takes one request message, got 2' });
    const compressed = await raw(session, '/probe.Probe/Echo', [framed(echo('z'), 1)]);
    expect(compressed.grpcStatus).toBe(12);
    expect(compressed.grpcMessage).toMatch(/compressed/);
    // Over the server's 256 KiB frame: refused from the prefix, before the body is buffered.
    const big = await raw(session, '/probe.Probe/Echo', [framed(Buffer.alloc(300 * 1024))]);
    expect(big.grpcStatus).toBe(8);
    expect(big.grpcMessage).toMatch(/over the maximum/);
    expect(await raw(session, '/probe.Probe/Echo', [framed(echo('t'))], { headers: { 'grpc-timeout': '10 seconds' } })).toMatchObject({ grpcStatus: 13, grpcMessage: 'malformed grpc-timeout "10 seconds"' });
    expect(await raw(session, '/probe.Probe/Echo', [framed(echo('fine'))])).toMatchObject({ grpcStatus: 0 });
  });

  it('an unknown method is UNIMPLEMENTED; a wrong content-type or method is HTTP 415', async () => {
    const unknown = await raw(session, '/probe.Probe/Nope', [framed(echo('x'))]);
    expect(unknown.grpcStatus).toBe(12);
    expect(unknown.grpcMessage).toMatch(/probe\.Probe\/Nope/);
    expect(await raw(session, '/probe.Probe/Echo', [Buffer.from('{}')], { headers: { [h2.HTTP2_HEADER_CONTENT_TYPE]: 'application/json' } })).toMatchObject({ httpStatus: 415, grpcStatus: undefined });
    expect(await raw(session, '/probe.Probe/Echo', [Buffer.from('{}')], { headers: { [h2.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc+json' } })).toMatchObject({ httpStatus: 415 });
    expect(await raw(session, '/probe.Probe/Echo', [], { headers: { [h2.HTTP2_HEADER_METHOD]: 'PUT' } })).toMatchObject({ httpStatus: 415 });
  });

  it('a message that stalls halfway fails UNAVAILABLE after the frame timeout; the session stays', async () => {
    const started = Date.now();
    const slow = await raw(session, '/probe.Probe/Echo', [framed(echo('slow'), 0, 100).subarray(0, 8)], { end: false });
    expect(slow.grpcStatus).toBe(14);
    expect(slow.grpcMessage).toMatch(/not complete \(limit 1500 ms\)/);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1400);
    expect(await raw(session, '/probe.Probe/Echo', [framed(echo('still here'))])).toMatchObject({ grpcStatus: 0 });
  });

  it('a client that resets streams in a loop, before and after their headers are read', async () => {
    for (let i = 0; i < 300; i++) {
      const req = session.request({ [h2.HTTP2_HEADER_METHOD]: 'POST', [h2.HTTP2_HEADER_PATH]: i % 2 ? '/probe.Probe/Echo' : '/streams.v1.Streams/Echo', [h2.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc' });
      req.on('error', () => {});
      if (i % 3 === 0) req.write(framed(echo(`r${i}`)).subarray(0, 4));
      req.close(i % 4 === 0 ? h2.NGHTTP2_CANCEL : h2.NGHTTP2_INTERNAL_ERROR);
    }
    expect(await raw(session, '/probe.Probe/Echo', [framed(echo('after the storm'))])).toMatchObject({ grpcStatus: 0 });
    expect(await grpcEcho(server.address, 'grpc-js too')).toBe('grpc-js too');
  });
});

describe('bad HTTP/2 sessions are closed alone', () => {
  it('garbage after the preface: the session is closed and logged, the server answers others', async () => {
    for (const garbage of [Buffer.from('this is not an HTTP/2 frame at all, just text\r\n'), Buffer.alloc(100, 0xff)]) {
      const s = netConnect(Number(server.address.split(':')[1]), '127.0.0.1');
      s.on('error', () => {});
      s.resume();
      s.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'), garbage]));
      await new Promise<void>((resolve) => s.on('close', () => resolve()));
    }
    expect(logged.filter((l) => /a gRPC \(HTTP\/2\) session failed .*Protocol error/.test(l)).length).toBeGreaterThanOrEqual(2);
    expect(await grpcEcho(server.address, 'ok after garbage')).toBe('ok after garbage');
  });

  it('a huge header block (1 MiB) resets the stream; the server answers the next call', async () => {
    const s = h2connect(`http://${server.address}`, { maxSendHeaderBlockLength: 4 * 1024 * 1024 });
    s.on('error', () => {});
    const r = await raw(s, '/probe.Probe/Echo', [framed(echo('huge'))], { headers: { 'x-huge': 'h'.repeat(1024 * 1024) } });
    s.destroy();
    expect(r.grpcStatus).toBeUndefined();
    expect(r.rstCode).toBeGreaterThan(0);
    expect(await grpcEcho(server.address, 'after huge')).toBe('after huge');
  });

  it('metadata that HTTP/2 takes but a frame of the server cannot: RESOURCE_EXHAUSTED before any handler', async () => {
    const probe = new Probe();
    const small = await probeServer({ maxFrameBytes: 16 * 1024 }, probe);
    const s = rawSession(small.address);
    try {
      const md: Record<string, string> = {};
      for (let i = 0; i < 10; i++) md[`x-m${i}`] = 'v'.repeat(2000);
      const r = await raw(s, '/probe.Probe/Echo', [framed(echo('md'))], { headers: md });
      expect(r.grpcStatus).toBe(8);
      expect(r.grpcMessage).toMatch(/method and metadata take \d+ bytes, over the maximum of 16384/);
      expect(probe.endings.has('md')).toBe(false);
      expect(await raw(s, '/probe.Probe/Echo', [framed(echo('small'))])).toMatchObject({ grpcStatus: 0 });
    } finally {
      s.destroy();
      await small.close({ graceMs: 100 });
    }
  });

  it('a large message beyond the server-wide buffer budget is refused from its prefix', async () => {
    const tight = await probeServer({ bufferBudgetBytes: 100 * 1024 });
    const s = rawSession(tight.address);
    try {
      const big = framed(Buffer.alloc(200 * 1024));
      const r = await raw(s, '/probe.Probe/Echo', [big.subarray(0, 16 * 1024)], { end: false });
      expect(r.grpcStatus).toBe(8);
      expect(r.grpcMessage).toMatch(/buffer/);
      expect(await raw(s, '/probe.Probe/Echo', [framed(echo('small'))])).toMatchObject({ grpcStatus: 0 });
    } finally {
      s.destroy();
      await tight.close({ graceMs: 100 });
    }
  });
});

describe('responses HTTP/2 cannot carry as given', () => {
  it('response metadata with reserved keys or unsendable values is left out and logged; the reply arrives', async () => {
    const c = new pkg.probe.Probe(server.address, grpc.credentials.createInsecure());
    const meta: Record<string, unknown> = {};
    const r = await new Promise<any>((resolve) => {
      const call = c.echo({ text: 'md', setResponseMetadata: { 'x-ok': '1', connection: 'close', te: 'gzip', 'content-type': 'text/html', 'grpc-status': '5', 'x-nl': 'a\nb', 'x-bin': '%%%' } }, (err: grpc.ServiceError | null, reply: unknown) => resolve(err ?? reply));
      call.on('metadata', (m: grpc.Metadata) => Object.assign(meta, m.getMap()));
    });
    c.close();
    expect(r.text).toBe('md');
    expect(meta['x-ok']).toBe('1');
    expect(meta['connection']).toBeUndefined();
    expect(meta['x-nl']).toBeUndefined();
    expect(logged.some((l) => /response metadata .*"connection".* left out/.test(l))).toBe(true);
    const failed = await new Promise<grpc.ServiceError>((resolve) => {
      const c2 = new pkg.probe.Probe(server.address, grpc.credentials.createInsecure());
      c2.echo({ text: 'md2', fail: 'rpc:NOT_FOUND:gone', setResponseMetadata: { te: 'x', 'x-fine': 'y' } }, (err: grpc.ServiceError) => {
        c2.close();
        resolve(err);
      });
    });
    expect(failed.code).toBe(grpc.status.NOT_FOUND);
    expect(failed.metadata.get('x-fine')).toEqual(['y']);
  });
});

describe('the peer, flow control and shutdown', () => {
  it('the call context names the client address on both ports', async () => {
    for (const address of [server.address, server.grpcAddress!]) {
      const s = h2connect(`http://${address}`);
      const reply = await raw(s, '/probe.Probe/Echo', [framed(echo('peer'))]);
      s.close();
      expect(reply.grpcStatus).toBe(0);
      // EchoReply.peer is field 6: find "127.0.0.1:" in the reply's bytes.
      expect(reply.data.toString('latin1')).toMatch(/127\.0\.0\.1:\d+/);
    }
  });

  it('a gRPC client that reads slowly holds the server back without losing a message', async () => {
    const tight = new Server({ maxQueuedResponseBytes: 64 * 1024, frameTimeoutMs: 3000 });
    tight.addService(new Streams());
    await tight.listen(0, '127.0.0.1');
    try {
      const c = new pkg.streams.v1.Streams(tight.address, grpc.credentials.createInsecure());
      const seen: number[] = [];
      await new Promise<void>((resolve, reject) => {
        const call = c.count({ count: 400, payloadBytes: 8 * 1024 });
        call.on('data', (item: { seq: string }) => {
          seen.push(Number(item.seq));
          if (seen.length === 10) {
            call.pause();
            setTimeout(() => call.resume(), 1000);
          }
        });
        call.on('end', () => resolve());
        call.on('error', reject);
      });
      c.close();
      expect(seen).toEqual(Array.from({ length: 400 }, (_, i) => i));
    } finally {
      await tight.close({ graceMs: 100 });
    }
  });

  it('500 concurrent calls on one session (over its stream limit) are all answered', async () => {
    const c = new pkg.probe.Probe(server.address, grpc.credentials.createInsecure());
    const texts = await Promise.all(
      Array.from({ length: 500 }, (_, i) => new Promise<string>((resolve) => c.echo({ text: `c${i}`, delayMs: 20 }, (err: grpc.ServiceError | null, r: { text: string }) => resolve(err !== null ? `error ${err.code}` : r.text)))),
    );
    c.close();
    expect(texts).toEqual(Array.from({ length: 500 }, (_, i) => `c${i}`));
  });

  it('close() while a unary request is still uploading: the request is served, then the server stops', async () => {
    const s2 = await probeServer();
    const sess = rawSession(s2.address);
    const body = framed(echo('uploaded during shutdown'));
    const pending = raw(sess, '/probe.Probe/Echo', [body.subarray(0, 6), body.subarray(6)], { gapMs: 400 });
    await new Promise((r) => setTimeout(r, 150));
    const closed = s2.close({ graceMs: 5000 });
    const reply = await pending;
    await closed;
    sess.destroy();
    expect(reply.grpcStatus).toBe(0);
    expect(reply.data.toString('latin1')).toContain('uploaded during shutdown');
  });
});

describe('a graceful shutdown, as gRPC servers do it', () => {
  it('sends GOAWAY (largest stream id), then an HTTP/2 PING; a call in flight finishes, then the server stops', async () => {
    const s2 = await probeServer();
    const sess = rawSession(s2.address);
    const seen: string[] = [];
    sess.on('goaway', (code: number, last: number) => seen.push(`goaway ${code} ${last}`));
    sess.on('ping', () => seen.push('ping'));
    const pending = raw(sess, '/probe.Probe/Echo', [framed(echo('in flight', 300))]);
    await new Promise((r) => setTimeout(r, 100));
    await s2.close({ graceMs: 5000 });
    const reply = await pending;
    sess.destroy();
    expect(reply.grpcStatus).toBe(0);
    expect(reply.data.toString('latin1')).toContain('in flight');
    // (Both came; the bridge sends its PING a turn after the GOAWAY, so that it follows it on the wire.)
    expect(seen).toContain(`goaway 0 ${2 ** 31 - 1}`);
    expect(seen).toContain('ping');
  });
});

/**
 * A TCP proxy to `target` that drops the HTTP/2 frames `drop` picks, in either direction (the
 * client's 24-byte preface passes as it is): a client that never acks PINGs, or never hears GOAWAY.
 */
async function frameFilterProxy(target: string, drop: (dir: 'up' | 'down', type: number, flags: number, payload: Buffer) => boolean): Promise<{ address: string; close(): void }> {
  const sockets = new Set<Socket>();
  const filter = (dir: 'up' | 'down', to: Socket) => {
    let buf = Buffer.alloc(0);
    let preface = dir === 'up' ? 24 : 0;
    return (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk]);
      if (preface > 0) {
        const n = Math.min(preface, buf.length);
        to.write(buf.subarray(0, n));
        buf = buf.subarray(n);
        preface -= n;
      }
      while (buf.length >= 9) {
        const size = 9 + buf.readUIntBE(0, 3);
        if (buf.length < size) return;
        if (!drop(dir, buf[3]!, buf[4]!, buf.subarray(9, size))) to.write(buf.subarray(0, size));
        buf = buf.subarray(size);
      }
    };
  };
  const proxy: NetServer = netServer((client) => {
    const upstream = netConnect(Number(target.split(':')[1]), '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.on('data', filter('up', upstream));
    upstream.on('data', filter('down', client));
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  return {
    address: `127.0.0.1:${(proxy.address() as { port: number }).port}`,
    close() {
      for (const s of sockets) s.destroy();
      proxy.close();
    },
  };
}

const PING = 0x6;
const GOAWAY = 0x7;

describe('a graceful shutdown, with clients that misbehave', () => {
  it('a client that never acks the PING is not waited for beyond the frame timeout', async () => {
    const s2 = await probeServer({ frameTimeoutMs: 500 });
    // It never acks PINGs, and never hears the first GOAWAY (so it does not close by itself).
    const proxy = await frameFilterProxy(s2.address, (dir, type, flags, payload) =>
      (dir === 'up' && type === PING && (flags & 1) === 1) || (dir === 'down' && type === GOAWAY && payload.readUInt32BE(0) === 2 ** 31 - 1));
    const sess = rawSession(proxy.address);
    // A call in flight keeps the session open through the shutdown.
    const pending = raw(sess, '/probe.Probe/Echo', [framed(echo('in flight', 300))]);
    await new Promise((r) => setTimeout(r, 100));
    const started = Date.now();
    await s2.close({ graceMs: 20_000 });
    const tookMs = Date.now() - started;
    const reply = await pending;
    sess.destroy();
    proxy.close();
    expect(reply.grpcStatus).toBe(0);
    // Without its PONG the server would wait out the whole grace (20 s).
    expect(tookMs).toBeLessThan(10_000);
  });

  it('a stream that arrives after the first GOAWAY is not served, and the final GOAWAY says so without waiting for the calls in flight', async () => {
    const s2 = await probeServer({ frameTimeoutMs: 1000 });
    // The client never hears the first GOAWAY (the largest stream id), so it goes on opening
    // streams; and its PING acks are lost, so the server answers itself after the frame timeout.
    const proxy = await frameFilterProxy(s2.address, (dir, type, flags, payload) =>
      (dir === 'down' && type === GOAWAY && payload.readUInt32BE(0) === 2 ** 31 - 1) || (dir === 'up' && type === PING && (flags & 1) === 1));
    const sess = rawSession(proxy.address);
    const goaways: number[] = [];
    sess.on('goaway', (_code: number, last: number) => goaways.push(last));
    const pinged = new Promise<void>((resolve) => sess.once('ping', () => resolve()));
    const endedAt = { inFlight: 0, late: 0 };
    const pending = raw(sess, '/probe.Probe/Echo', [framed(echo('in flight', 4000))]).then((r) => {
      endedAt.inFlight = Date.now();
      return r;
    });
    await new Promise((r) => setTimeout(r, 100));
    const closed = s2.close({ graceMs: 10_000 });
    await pinged;
    // Opened after the server's GOAWAY went out: node:http2 does not hand it to the server.
    const late = raw(sess, '/probe.Probe/Echo', [framed(echo('too late'))]).then((r) => {
      endedAt.late = Date.now();
      return r;
    });
    const [reply, lateReply] = await Promise.all([pending, late]);
    await closed;
    sess.destroy();
    proxy.close();
    expect(reply.grpcStatus).toBe(0);
    expect(reply.data.toString('latin1')).toContain('in flight');
    // Not served (no response at all, refused as not processed), and told so at the frame timeout
    // (1 s), not when the call in flight ended (4 s).
    expect(lateReply.httpStatus).toBeUndefined();
    expect(lateReply.rstCode).toBe(h2.NGHTTP2_REFUSED_STREAM);
    expect(endedAt.inFlight - endedAt.late).toBeGreaterThan(1500);
    // The final GOAWAY names the last stream served: the one in flight (1), not the late one.
    expect(goaways).toEqual([1]);
  });
});

describe('a shutdown whose grace runs out', () => {
  it('a gRPC call still running ends UNAVAILABLE (as a svrkit client sees it), not CANCELLED', async () => {
    const s2 = await probeServer();
    const c = new pkg.probe.Probe(s2.address, grpc.credentials.createInsecure());
    const outcome = new Promise<grpc.ServiceError | null>((resolve) => c.echo({ text: 'long', delayMs: 10_000 }, (err: grpc.ServiceError | null) => resolve(err)));
    await new Promise((r) => setTimeout(r, 200));
    const started = Date.now();
    await s2.close({ graceMs: 300 });
    const err = await outcome;
    c.close();
    expect(err?.code).toBe(grpc.status.UNAVAILABLE);
    expect(err?.details).toMatch(/closed the connection before the call finished/);
    expect(Date.now() - started).toBeLessThan(3000);
  });
});

describe('clients of the wrong protocol', () => {
  it('an HTTP/1.1 request gets a 400 naming the protocols, and a log line', async () => {
    const text = await new Promise<string>((resolve) => {
      const s = netConnect(Number(server.address.split(':')[1]), '127.0.0.1');
      let got = '';
      s.on('data', (d) => (got += d.toString()));
      s.on('close', () => resolve(got));
      s.on('error', () => {});
      s.write('GET /probe.Probe/Echo HTTP/1.1\r\nhost: x\r\n\r\n');
    });
    expect(text).toMatch(/^HTTP\/1\.1 400 Bad Request/);
    expect(text).toMatch(/svrkit's protocol and gRPC over HTTP\/2/);
    expect(logged.some((l) => /sent an HTTP\/1\.x request \("GET \/probe\.Probe\/Echo HTTP\/1\.1"\)/.test(l))).toBe(true);
  });

  it('a TLS client on the plaintext port fails its handshake at once, and the server logs it', async () => {
    const err = await new Promise<Error>((resolve) => {
      const s = tlsConnect({ host: '127.0.0.1', port: Number(server.address.split(':')[1]), rejectUnauthorized: false });
      s.on('error', resolve);
      s.on('secureConnect', () => resolve(new Error('connected')));
    });
    expect(err.message).toMatch(/handshake failure|alert/i);
    expect(logged.some((l) => /sent a TLS handshake \(this port is plaintext\)/.test(l))).toBe(true);
  });
});

describe('gRPC over TLS on grpcPort', () => {
  let certs: TestCerts;
  let secure: Server;
  beforeAll(async () => {
    certs = await makeCerts(mkdtempSync(join(tmpdir(), 'svrkit-grpc-tls-')));
    secure = new Server({ tls: { cert: certs.serverCert, key: certs.serverKey, ca: certs.ca }, grpcPort: 0 });
    secure.addService(new Probe());
    await secure.listen(0, '127.0.0.1');
  });
  afterAll(async () => {
    await secure.close({ graceMs: 100 });
  });

  it('a grpc-js client with TLS credentials is served; a plaintext one is not', async () => {
    const creds = grpc.credentials.createSsl(Buffer.from(String(certs.ca)), Buffer.from(String(certs.clientKey)), Buffer.from(String(certs.clientCert)));
    const c = new pkg.probe.Probe(secure.grpcAddress, creds, { 'grpc.ssl_target_name_override': 'localhost' });
    const r = await new Promise<any>((resolve) => c.echo({ text: 'over tls' }, (err: unknown, reply: unknown) => resolve(err ?? reply)));
    c.close();
    expect(r.text).toBe('over tls');
    const plain = await grpcEcho(secure.grpcAddress!, 'plain');
    expect(plain).toMatch(/^error 14/);
  });
});

describe('sessions that die with calls open', () => {
  it('a protocol error then a TCP reset, on either port: the session, its call and its handler are let go', async () => {
    const streams = new Streams();
    const s = new Server({ grpcPort: 0, frameTimeoutMs: 1000, logger: { error: () => {} } });
    s.addService(streams);
    await s.listen(0, '127.0.0.1');
    const frame = (type: number, flags: number, sid: number, payload: Buffer): Buffer => {
      const h = Buffer.alloc(9);
      h.writeUIntBE(payload.length, 0, 3);
      h[3] = type;
      h[4] = flags;
      h.writeUInt32BE(sid, 5);
      return Buffer.concat([h, payload]);
    };
    // HPACK literal header fields without indexing, new names (RFC 7541 section 6.2.2).
    const lit = (name: string, value: string): Buffer => Buffer.concat([Buffer.from([0x00, name.length]), Buffer.from(name), Buffer.from([value.length]), Buffer.from(value)]);
    const headers = Buffer.concat([lit(':method', 'POST'), lit(':scheme', 'http'), lit(':path', '/streams.v1.Streams/Echo'), lit(':authority', 'x'), lit('content-type', 'application/grpc'), lit('te', 'trailers')]);
    const bytes = Buffer.concat([
      Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'),
      frame(4, 0, 0, Buffer.alloc(0)), // SETTINGS
      frame(1, 4, 1, headers), // HEADERS on stream 1: a bidi call, open
      frame(0, 0, 3, Buffer.alloc(5)), // DATA on idle stream 3: a connection error (PROTOCOL_ERROR)
    ]);
    try {
      for (const address of [s.address, s.grpcAddress!]) {
        const socket = netConnect(Number(address.split(':')[1]), '127.0.0.1');
        socket.on('error', () => {});
        socket.resume();
        await new Promise((r) => socket.on('connect', r));
        socket.write(bytes);
        await new Promise((r) => setTimeout(r, 200));
        socket.resetAndDestroy();
        // The handler ends: within the keepalive's PING and its timeout (about 2 x frameTimeoutMs).
        for (let i = 0; i < 80 && streams.open > 0; i++) await new Promise((r) => setTimeout(r, 50));
        expect(streams.open).toBe(0);
      }
      const started = Date.now();
      await s.close({ graceMs: 5000 });
      expect(Date.now() - started).toBeLessThan(2000);
    } finally {
      await s.close({ graceMs: 100 });
    }
  });
});
