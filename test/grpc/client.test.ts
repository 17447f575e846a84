/**
 * svrkit clients on gRPC servers: the generated svrkit clients, on a channel to `grpc://` (or
 * `protocol: 'grpc'`), call a @grpc/grpc-js server (loaded from the same .proto files by
 * @grpc/proto-loader) over 127.0.0.1: unary and every kind of stream, deadlines, metadata both
 * ways, error statuses, cancellation, balancing and retries over two servers; a svrkit server
 * through its gRPC side; and the errors a client gets when it speaks the wrong protocol.
 */
import { createServer, type AddressInfo } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import * as loader from '@grpc/proto-loader';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, RpcError, Server, Status } from '../../index.js';
import { ProbeClient } from '../.tmp/gen/probe/probe.js';
import { StreamsClient } from '../.tmp/gen/streams/streams.js';
import { Probe } from '../support/probe.js';
import { Streams } from '../support/streams-service.js';
import { expectUploadAndEcho } from '../support/streams-upload-echo.js';
import { rpcFailure } from '../support/rpc-failure.js';

const PROTOS = ['test/protos/runtime/probe.proto', 'test/protos/runtime/streams.proto'];
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const pkg = grpc.loadPackageDefinition(loader.loadSync(PROTOS, { includeDirs: ['framework/builtin/proto', '.'], longs: String, defaults: true })) as any;

/** What the grpc-js servers saw. */
const seen = { calls: new Map<string, number>(), cancelled: 0, deadlineLeftMs: -1, metadata: {} as Record<string, unknown> };

/** A grpc-js server of Probe and Streams, named `name` (it says so in replies). */
async function grpcServer(name: string): Promise<{ server: grpc.Server; address: string }> {
  const server = new grpc.Server();
  server.addService(pkg.probe.Probe.service, {
    echo(call: grpc.ServerUnaryCall<any, any>, callback: grpc.sendUnaryData<any>) {
      seen.calls.set(name, (seen.calls.get(name) ?? 0) + 1);
      const req = call.request;
      seen.metadata = call.metadata.getMap();
      const deadline = call.getDeadline();
      seen.deadlineLeftMs = deadline instanceof Date ? deadline.getTime() - Date.now() : deadline === Infinity ? -1 : Number(deadline) - Date.now();
      if (req.fail.startsWith('rpc:')) {
        const [, code, ...msg] = req.fail.split(':');
        const md = new grpc.Metadata();
        md.set('x-failed', 'yes');
        callback({ code: Status[code as keyof typeof Status] as number, details: msg.join(':'), metadata: md });
        return;
      }
      const reply = () => {
        const md = new grpc.Metadata();
        for (const [k, v] of Object.entries(req.setResponseMetadata ?? {})) md.set(k, v as string);
        call.sendMetadata(md);
        callback(null, { text: req.text, method: name, metadata: Object.fromEntries(Object.entries(call.metadata.getMap()).map(([k, v]) => [k, Buffer.isBuffer(v) ? v.toString('base64') : String(v)])) });
      };
      if (req.delayMs > 0) {
        const t = setTimeout(reply, req.delayMs);
        call.on('cancelled', () => {
          clearTimeout(t);
          seen.cancelled++;
        });
      } else reply();
    },
  });
  server.addService(pkg.streams.v1.Streams.service, {
    count(call: grpc.ServerWritableStream<any, any>) {
      const md = new grpc.Metadata();
      for (const [k, v] of Object.entries(call.request.headers ?? {})) md.set(k, v as string);
      call.sendMetadata(md);
      const n = Number(call.request.count);
      let i = 0;
      call.on('cancelled', () => seen.cancelled++);
      const more = (): void => {
        while (i < n) {
          const ok = call.write({ seq: String(i), payload: Buffer.alloc(call.request.payloadBytes, 0x61) });
          i++;
          if (!ok) {
            call.once('drain', more);
            return;
          }
        }
        if (call.request.hang) return; // until cancelled
        const trailers = new grpc.Metadata();
        for (const [k, v] of Object.entries(call.request.trailers ?? {})) trailers.set(k, v as string);
        call.end(trailers);
      };
      more();
    },
    upload(call: grpc.ServerReadableStream<any, any>, callback: grpc.sendUnaryData<any>) {
      let bytes = 0;
      let chunks = 0;
      call.on('data', (c: { data: Buffer }) => {
        bytes += c.data.length;
        chunks++;
      });
      call.on('end', () => callback(null, { bytes: String(bytes), chunks, checksum: 0 }));
    },
    echo(call: grpc.ServerDuplexStream<any, any>) {
      call.on('data', (item: unknown) => call.write(item));
      call.on('end', () => call.end());
    },
    stats(_call: unknown, callback: grpc.sendUnaryData<any>) {
      callback(null, {});
    },
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err !== null ? reject(err) : resolve(p))));
  return { server, address: `127.0.0.1:${port}` };
}

let a: { server: grpc.Server; address: string };
let b: { server: grpc.Server; address: string };
const channels: Channel[] = [];
const channel = (target: string, options: ConstructorParameters<typeof Channel>[1] = {}): Channel => {
  const ch = new Channel(target, options);
  channels.push(ch);
  return ch;
};

beforeAll(async () => {
  a = await grpcServer('a');
  b = await grpcServer('b');
});

afterAll(async () => {
  for (const ch of channels) ch.close();
  a.server.forceShutdown();
  b.server.forceShutdown();
});

describe('a svrkit client on a grpc-js server (grpc://)', () => {
  it('unary: a reply, metadata both ways (a -bin key too), and the deadline as grpc-timeout', async () => {
    const probe = new ProbeClient(channel(`grpc://${a.address}`));
    const reply = await probe.echo({ text: 'hi' }, { metadata: { 'x-user': 'ada', 'trace-bin': Buffer.from([1, 2, 250]).toString('base64') }, timeoutMs: 5000 });
    expect(reply.text).toBe('hi');
    expect(reply.method).toBe('a');
    expect(reply.metadata['x-user']).toBe('ada');
    expect(Buffer.from(reply.metadata['trace-bin']!, 'base64')).toEqual(Buffer.from([1, 2, 250]));
    expect(seen.deadlineLeftMs).toBeGreaterThan(4000);
    expect(seen.deadlineLeftMs).toBeLessThanOrEqual(5000);
  });

  it('an error status with its message and metadata; a deadline that passes, which cancels the server call', async () => {
    const probe = new ProbeClient(channel(`grpc://${a.address}`, { retryPolicy: false }));
    const err = await rpcFailure(probe.echo({ text: 'f', fail: 'rpc:NOT_FOUND:no such user: bob 100%' }));
    expect(err).toMatchObject({ code: Status.NOT_FOUND, message: 'no such user: bob 100%' });
    expect((err as RpcError).metadata['x-failed']).toBe('yes');
    const cancelledBefore = seen.cancelled;
    const slow = await rpcFailure(probe.echo({ text: 'slow', delayMs: 3000 }, { timeoutMs: 200 }));
    expect(slow.code).toBe(Status.DEADLINE_EXCEEDED);
    for (let i = 0; i < 100 && seen.cancelled === cancelledBefore; i++) await new Promise((r) => setTimeout(r, 20));
    expect(seen.cancelled).toBeGreaterThan(cancelledBefore);
  });

  it('server-streaming with headers and trailers; client-streaming; bidi', async () => {
    const streams = new StreamsClient(channel(`grpc://${a.address}`));
    let headers: Record<string, string> = {};
    let trailers: Record<string, string> = {};
    const items: number[] = [];
    for await (const item of streams.count({ count: 3000n, payloadBytes: 100, headers: { 'x-h': '1' }, trailers: { 'x-t': '2' } }, { onHeader: (m) => (headers = { ...m }), onTrailer: (m) => (trailers = { ...m }) })) {
      items.push(Number(item.seq));
    }
    expect(items).toEqual(Array.from({ length: 3000 }, (_, i) => i));
    expect(headers['x-h']).toBe('1');
    expect(trailers['x-t']).toBe('2');

    await expectUploadAndEcho(streams);
  });

  it('a stream the client abandons is cancelled on the server', async () => {
    const streams = new StreamsClient(channel(`grpc://${a.address}`));
    const before = seen.cancelled;
    const controller = new AbortController();
    let got = 0;
    await expect(
      (async () => {
        for await (const _ of streams.count({ count: 1n, hang: true }, { signal: controller.signal })) {
          got++;
          controller.abort();
        }
      })(),
    ).rejects.toMatchObject({ code: Status.CANCELLED });
    expect(got).toBe(1);
    for (let i = 0; i < 100 && seen.cancelled === before; i++) await new Promise((r) => setTimeout(r, 20));
    expect(seen.cancelled).toBeGreaterThan(before);
  });

  it('a slow reader holds the grpc-js server back, and gets every message', async () => {
    const streams = new StreamsClient(channel(`grpc://${a.address}`));
    let n = 0;
    // 4.8 MB, read slower than sent all the way to its end (the server's trailers come first).
    for await (const item of streams.count({ count: 300n, payloadBytes: 16 * 1024 })) {
      expect(Number(item.seq)).toBe(n);
      n++;
      if (n % 30 === 0) await new Promise((r) => setTimeout(r, 60));
    }
    expect(n).toBe(300);
  });

  it('balances over two grpc-js servers (grpc:///a,b, round robin), and retries past a dead address', async () => {
    const before = { a: seen.calls.get('a') ?? 0, b: seen.calls.get('b') ?? 0 };
    const probe = new ProbeClient(channel(`grpc:///${a.address},${b.address}`, { balancer: 'round_robin' }));
    const names: string[] = [];
    for (let i = 0; i < 40; i++) names.push((await probe.echo({ text: `r${i}` })).method);
    expect(new Set(names)).toEqual(new Set(['a', 'b']));
    expect((seen.calls.get('a') ?? 0) - before.a).toBeGreaterThan(0);
    expect((seen.calls.get('b') ?? 0) - before.b).toBeGreaterThan(0);
    // A channel with protocol: 'grpc' and a discovery target, one address of which refuses connections.
    const dead = await new Promise<number>((resolve) => {
      const s = new grpc.Server();
      s.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (_e, p) => {
        s.forceShutdown();
        resolve(p);
      });
    });
    const mixed = new ProbeClient(channel(`static:///127.0.0.1:${dead},${a.address}`, { protocol: 'grpc', balancer: 'round_robin' }));
    const texts = await Promise.all(Array.from({ length: 20 }, (_, i) => mixed.echo({ text: `m${i}` }, { timeoutMs: 5000 }).then((r) => r.text)));
    expect(texts).toEqual(Array.from({ length: 20 }, (_, i) => `m${i}`));
  });
});

describe('a svrkit client on a svrkit server, over gRPC', () => {
  let server: Server;
  beforeAll(async () => {
    server = new Server({ grpcPort: 0 });
    server.addService(new Probe()).addService(new Streams());
    await server.listen(0, '127.0.0.1');
  });
  afterAll(async () => {
    await server.close({ graceMs: 100 });
  });

  it.each([['the shared port'], ['the gRPC-only port']])('unary and streams on %s', async (which) => {
    const address = which === 'the shared port' ? server.address : server.grpcAddress!;
    const ch = channel(address, { protocol: 'grpc' });
    const reply = await new ProbeClient(ch).echo({ text: 'via grpc', setResponseMetadata: { 'x-r': '1' } }, { metadata: { 'x-user': 'ada' }, timeoutMs: 4000 });
    expect(reply).toMatchObject({ text: 'via grpc', method: 'probe.Probe/Echo' });
    expect(reply.metadata['x-user']).toBe('ada');
    expect(Number(reply.deadlineLeftMs)).toBeGreaterThan(3000);
    const items: bigint[] = [];
    for await (const item of new StreamsClient(ch).count({ count: 500n, payloadBytes: 10 })) items.push(item.seq);
    expect(items.length).toBe(500);
    const err = await rpcFailure(new ProbeClient(ch).echo({ text: 'e', fail: 'rpc:FAILED_PRECONDITION:nope' }));
    expect(err).toMatchObject({ code: Status.FAILED_PRECONDITION, message: 'nope' });
  });
});

describe('the wrong protocol, told plainly on the client', () => {
  it("a svrkit-protocol client on a grpc-js server: the error names HTTP/2 and grpc://", async () => {
    const probe = new ProbeClient(channel(a.address, { retryPolicy: false, connectTimeoutMs: 2000 }));
    const err = await rpcFailure(probe.echo({ text: 'x' }, { timeoutMs: 3000 }));
    expect(err.code).toBe(Status.UNAVAILABLE);
    expect(err.message).toMatch(/speaks HTTP\/2.*grpc:\/\//);
  });

  it('a gRPC client on a svrkit server that does not speak gRPC: the error says so', async () => {
    const logged: string[] = [];
    const plain = new Server({ grpc: false, logger: { error: (m) => logged.push(m) } });
    plain.addService(new Probe());
    await plain.listen(0, '127.0.0.1');
    try {
      const probe = new ProbeClient(channel(`grpc://${plain.address}`, { retryPolicy: false }));
      const err = await rpcFailure(probe.echo({ text: 'x' }, { timeoutMs: 3000 }));
      expect(err.code).toBe(Status.UNAVAILABLE);
      expect(err.message).toMatch(/does not speak gRPC/);
      // And the server says what came: one line with the client's address.
      expect(logged.some((l) => /127\.0\.0\.1:\d+: the peer speaks HTTP\/2 \(a gRPC client\?\), and gRPC is off on this port/.test(l))).toBe(true);
    } finally {
      await plain.close({ graceMs: 100 });
    }
  });

  it("a svrkit-protocol client on a server whose SETTINGS has entries (as grpc-go's does): named at once", async () => {
    // A raw TCP server that answers like an HTTP/2 server: SETTINGS with MAX_CONCURRENT_STREAMS 100.
    const raw = createServer((socket) => {
      socket.on('error', () => {});
      socket.write(Buffer.from([0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]));
    });
    await new Promise<void>((r) => raw.listen(0, '127.0.0.1', () => r()));
    try {
      const probe = new ProbeClient(channel(`127.0.0.1:${(raw.address() as AddressInfo).port}`, { retryPolicy: false }));
      const started = Date.now();
      const err = await rpcFailure(probe.echo({ text: 'x' }, { timeoutMs: 5000 }));
      expect(err.code).toBe(Status.UNAVAILABLE);
      expect(err.message).toMatch(/speaks HTTP\/2.*grpc:\/\//);
      expect(Date.now() - started).toBeLessThan(4000);
    } finally {
      raw.close();
    }
  });

  it('a gRPC server that dies mid-call: UNAVAILABLE (the connection was lost), not CANCELLED', async () => {
    const c = await grpcServer('dying');
    const streams = new StreamsClient(channel(`grpc://${c.address}`, { retryPolicy: false }));
    const err = await rpcFailure(
      (async () => {
        for await (const _ of streams.count({ count: 1n, hang: true })) c.server.forceShutdown();
      })(),
    );
    expect(err.code).toBe(Status.UNAVAILABLE);
  });

  it('refuses protocol svrkit with a grpc:// target, and a custom transport with gRPC', () => {
    expect(() => new Channel(`grpc://${a.address}`, { protocol: 'svrkit' })).toThrow(expect.objectContaining({ reason: 'INVALID_OPTION' }));
    expect(() => new Channel(a.address, { protocol: 'grpc', transport: { connect: () => undefined as never, listen: () => Promise.reject(new Error('x')) } })).toThrow(/not with protocol 'grpc'/);
  });
});
