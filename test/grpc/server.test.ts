/**
 * gRPC clients on a svrkit server: @grpc/grpc-js, loaded from the same .proto files with
 * @grpc/proto-loader, calls a svrkit Server over 127.0.0.1, on the server's own port (HTTP/2
 * told from svrkit's protocol by its preface) and on a gRPC-only port. Unary and every kind of
 * stream, deadlines, metadata both ways, error statuses, cancellation, a wrong content-type and
 * an unknown method; and svrkit and gRPC clients on one port at once.
 */
import { connect as h2connect, constants as h2 } from 'node:http2';
import { fromBinary } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import * as grpc from '@grpc/grpc-js';
import * as loader from '@grpc/proto-loader';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, parseKeyRing, Server, TicketIssuer } from '../../index.js';
import { ProbeClient } from '../.tmp/gen/probe/probe.js';
import { Probe } from '../support/probe.js';
import { Streams } from '../support/streams-service.js';

const PROTOS = ['test/protos/runtime/probe.proto', 'test/protos/runtime/streams.proto'];
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const pkg = grpc.loadPackageDefinition(loader.loadSync(PROTOS, { includeDirs: ['framework/builtin/proto', '.'], longs: String, defaults: true })) as any;

let server: Server;
const probe = new Probe();
const streams = new Streams();
const clients: grpc.Client[] = [];

/** A grpc-js client of `service` at `address`. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function client(service: 'probe' | 'streams', address: string): any {
  const C = service === 'probe' ? pkg.probe.Probe : pkg.streams.v1.Streams;
  const c = new C(address, grpc.credentials.createInsecure());
  clients.push(c);
  return c;
}

/** A unary call through grpc-js: the reply, or the error's code, details and trailers. */
function unary(c: any, method: string, request: object, md = new grpc.Metadata(), options: grpc.CallOptions = {}): Promise<any> {
  return new Promise((resolve) => {
    const headers: Record<string, unknown> = {};
    const call = c[method](request, md, options, (err: grpc.ServiceError | null, reply: unknown) =>
      resolve(err !== null ? { code: err.code, details: err.details, trailers: err.metadata.getMap() } : { reply, headers }),
    );
    call.on('metadata', (m: grpc.Metadata) => Object.assign(headers, m.getMap()));
  });
}

beforeAll(async () => {
  server = new Server({ grpcPort: 0 });
  server.addService(probe).addService(streams);
  await server.listen(0, '127.0.0.1');
});

afterAll(async () => {
  for (const c of clients) c.close();
  await server.close({ graceMs: 100 });
});

describe.each([['the server port'], ['the gRPC-only port']])('grpc-js on %s', (which) => {
  const address = () => (which === 'the server port' ? server.address : server.grpcAddress!);

  it('unary: a reply, metadata both ways (a -bin key too), the method and a deadline', async () => {
    const md = new grpc.Metadata();
    md.set('x-user', 'ada');
    md.set('trace-bin', Buffer.from([0, 1, 2, 250]));
    const r = await unary(client('probe', address()), 'echo', { text: 'hi', setResponseMetadata: { 'x-reply': 'yes' } }, md, { deadline: Date.now() + 5000 });
    expect(r.reply.text).toBe('hi');
    expect(r.reply.method).toBe('probe.Probe/Echo');
    expect(r.reply.metadata['x-user']).toBe('ada');
    // Binary metadata arrives as its base64 text, and goes back as bytes.
    expect(Buffer.from(r.reply.metadata['trace-bin'], 'base64')).toEqual(Buffer.from([0, 1, 2, 250]));
    expect(Number(r.reply.deadlineLeftMs)).toBeGreaterThan(4000);
    expect(Number(r.reply.deadlineLeftMs)).toBeLessThanOrEqual(5000);
    expect(r.headers['x-reply']).toBe('yes');
  });

  it('an error status with its message and trailers; a deadline that passes; an unknown method', async () => {
    const c = client('probe', address());
    const failed = await unary(c, 'echo', { text: 'f', fail: 'rpc:NOT_FOUND:no such user: bob 100%' });
    expect(failed).toMatchObject({ code: grpc.status.NOT_FOUND, details: 'no such user: bob 100%' });
    expect(failed.trailers['x-failed']).toBe('yes');
    const slow = await unary(c, 'echo', { text: `slow-${which}`, delayMs: 5000 }, new grpc.Metadata(), { deadline: Date.now() + 200 });
    expect(slow.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    const Unknown = grpc.makeGenericClientConstructor({ nope: { path: '/probe.Probe/Nope', requestStream: false, responseStream: false, requestSerialize: (b: Buffer) => b, requestDeserialize: (b: Buffer) => b, responseSerialize: (b: Buffer) => b, responseDeserialize: (b: Buffer) => b } }, 'Unknown');
    const u = new Unknown(address(), grpc.credentials.createInsecure());
    clients.push(u);
    const missing = await unary(u, 'nope', Buffer.alloc(0));
    expect(missing.code).toBe(grpc.status.UNIMPLEMENTED);
    expect(missing.details).toMatch(/probe\.Probe\/Nope/);
  });

  it('server-streaming, with headers and trailers; client-streaming; bidi', async () => {
    const c = client('streams', address());
    const items: number[] = [];
    const headers: Record<string, unknown> = {};
    let trailers: Record<string, unknown> = {};
    await new Promise<void>((resolve, reject) => {
      const call = c.count({ count: 2000, payloadBytes: 100, headers: { 'x-h': '1' }, trailers: { 'x-t': '2' } });
      call.on('metadata', (m: grpc.Metadata) => Object.assign(headers, m.getMap()));
      call.on('data', (item: { seq: string }) => items.push(Number(item.seq)));
      call.on('status', (s: grpc.StatusObject) => (trailers = s.metadata.getMap()));
      call.on('end', () => resolve());
      call.on('error', reject);
    });
    expect(items).toEqual(Array.from({ length: 2000 }, (_, i) => i));
    expect(headers['x-h']).toBe('1');
    expect(trailers['x-t']).toBe('2');

    const summary = await new Promise<any>((resolve, reject) => {
      const call = c.upload((err: grpc.ServiceError | null, reply: unknown) => (err !== null ? reject(err) : resolve(reply)));
      for (let i = 0; i < 500; i++) call.write({ data: Buffer.alloc(1000, i % 256) });
      call.end();
    });
    expect(summary).toMatchObject({ bytes: '500000', chunks: 500 });

    const echoed: number[] = [];
    await new Promise<void>((resolve, reject) => {
      const call = c.echo();
      call.on('data', (item: { seq: string }) => echoed.push(Number(item.seq)));
      call.on('end', () => resolve());
      call.on('error', reject);
      for (let i = 0; i < 300; i++) call.write({ seq: i });
      call.end();
    });
    expect(echoed).toEqual(Array.from({ length: 300 }, (_, i) => i));
  });

  it('a cancelled stream ends its handler, whose signal says CANCELLED', async () => {
    const c = client('streams', address());
    const closedBefore = streams.closed;
    await new Promise<void>((resolve) => {
      const call = c.count({ count: 1, hang: true });
      call.on('data', () => call.cancel());
      call.on('error', (err: grpc.ServiceError) => {
        expect(err.code).toBe(grpc.status.CANCELLED);
        resolve();
      });
    });
    for (let i = 0; i < 100 && streams.closed === closedBefore; i++) await new Promise((r) => setTimeout(r, 20));
    expect(streams.closed).toBe(closedBefore + 1);
    expect(streams.lastAbort).toBe('CANCELLED');
  });

  it('a request that is not gRPC gets HTTP 415', async () => {
    const session = h2connect(`http://${address()}`);
    try {
      const status = await new Promise<number>((resolve, reject) => {
        const req = session.request({ [h2.HTTP2_HEADER_METHOD]: 'POST', [h2.HTTP2_HEADER_PATH]: '/probe.Probe/Echo', [h2.HTTP2_HEADER_CONTENT_TYPE]: 'application/json' });
        req.on('response', (h) => resolve(Number(h[h2.HTTP2_HEADER_STATUS])));
        req.on('error', reject);
        req.end('{}');
      });
      expect(status).toBe(415);
    } finally {
      session.close();
    }
  });
});

describe('one port, two protocols', () => {
  it('svrkit and grpc-js clients hammer the same port at once, and every call is answered', async () => {
    const svrkit = new ProbeClient(new Channel(server.address));
    const g = client('probe', server.address);
    const results = await Promise.all(
      Array.from({ length: 2000 }, (_, i) =>
        i % 2 === 0 ? svrkit.echo({ text: `s${i}` }).then((r) => r.text) : unary(g, 'echo', { text: `g${i}` }).then((r) => r.reply?.text ?? `error ${r.code} ${r.details}`),
      ),
    );
    expect(results).toEqual(Array.from({ length: 2000 }, (_, i) => (i % 2 === 0 ? `s${i}` : `g${i}`)));
  });
});

/** grpc-js clients of gRPC's standard services, from their .proto files as any gRPC tool has them. */
const std = grpc.loadPackageDefinition(
  loader.loadSync(['grpc/health/v1/health.proto', 'grpc/reflection/v1/reflection.proto', 'grpc/reflection/v1alpha/reflection.proto'], { includeDirs: ['framework/builtin/proto'], defaults: true, oneofs: true, enums: String }),
) as any;

/** Sends reflection requests on one ServerReflectionInfo stream and collects the responses. */
function reflect(version: 'v1' | 'v1alpha', address: string, requests: object[]): Promise<any[]> {
  const c = new std.grpc.reflection[version].ServerReflection(address, grpc.credentials.createInsecure());
  clients.push(c);
  return new Promise((resolve, reject) => {
    const out: any[] = [];
    const call = c.serverReflectionInfo();
    call.on('data', (r: unknown) => out.push(r));
    call.on('end', () => resolve(out));
    call.on('error', reject);
    for (const r of requests) call.write(r);
    call.end();
  });
}

describe("gRPC's standard services", () => {
  it('grpc.health.v1 Check: SERVING for the server and its services, NOT_FOUND for others', async () => {
    const h = new std.grpc.health.v1.Health(server.address, grpc.credentials.createInsecure());
    clients.push(h);
    const check = (service: string): Promise<any> => new Promise((resolve) => h.check({ service }, (err: grpc.ServiceError | null, r: unknown) => resolve(err ?? r)));
    expect((await check('')).status).toBe('SERVING');
    expect((await check('probe.Probe')).status).toBe('SERVING');
    expect((await check('no.Such')).code).toBe(grpc.status.NOT_FOUND);
  });

  it('grpc.health.v1 Watch: SERVING, then NOT_SERVING when the server shuts down, and the stream ends', async () => {
    const s = new Server();
    s.addService(new Probe());
    await s.listen(0, '127.0.0.1');
    const h = new std.grpc.health.v1.Health(s.address, grpc.credentials.createInsecure());
    clients.push(h);
    const statuses: string[] = [];
    const unknown: string[] = [];
    const ended = new Promise<void>((resolve, reject) => {
      const call = h.watch({ service: 'probe.Probe' });
      call.on('data', (r: { status: string }) => statuses.push(r.status));
      call.on('end', () => resolve());
      call.on('error', reject);
    });
    const other = h.watch({ service: 'no.Such' });
    other.on('data', (r: { status: string }) => unknown.push(r.status));
    other.on('error', () => {});
    for (let i = 0; i < 100 && (statuses.length === 0 || unknown.length === 0); i++) await new Promise((r) => setTimeout(r, 10));
    expect(statuses).toEqual(['SERVING']);
    expect(unknown).toEqual(['SERVICE_UNKNOWN']);
    const started = Date.now();
    await s.close({ graceMs: 5000 });
    await ended;
    expect(statuses).toEqual(['SERVING', 'NOT_SERVING']);
    // Watchers end with the shutdown: it does not wait out the grace period for them.
    expect(Date.now() - started).toBeLessThan(4000);
  });

  it.each([['v1'], ['v1alpha']] as const)('grpc.reflection.%s lists the services and serves file descriptors', async (version) => {
    const [list, bySymbol, byName, missing, ext, numbers] = await reflect(version, server.address, [
      { listServices: '' },
      { fileContainingSymbol: 'probe.Probe' },
      { fileByFilename: 'svrkit/options.proto' },
      { fileContainingSymbol: 'no.Such' },
      { fileContainingExtension: { containingType: 'google.protobuf.MethodOptions', extensionNumber: 50651 } },
      { allExtensionNumbersOfType: 'google.protobuf.MethodOptions' },
    ]);
    const names = list.listServicesResponse.service.map((s: { name: string }) => s.name);
    expect(names).toEqual(expect.arrayContaining(['probe.Probe', 'streams.v1.Streams', 'grpc.health.v1.Health', `grpc.reflection.${version}.ServerReflection`, 'svrkit.Health']));
    const files = (r: any): string[] => r.fileDescriptorResponse.fileDescriptorProto.map((b: Buffer) => fromBinary(FileDescriptorProtoSchema, b).name);
    // The file and everything it imports, imports first.
    expect(files(bySymbol)).toEqual(['probe.proto']);
    expect(files(byName)).toEqual(['google/protobuf/descriptor.proto', 'svrkit/options.proto']);
    expect(missing.errorResponse).toMatchObject({ errorCode: grpc.status.NOT_FOUND });
    expect(files(ext).at(-1)).toBe('svrkit/options.proto');
    expect(numbers.allExtensionNumbersResponse.extensionNumber).toContain(50651);
  });
});

describe('the same server machinery for gRPC calls', () => {
  it('tickets (authorization: Bearer), interceptors, FastReject refusals and metrics', async () => {
    const ring = parseKeyRing({ signing: 'k', keys: [{ kid: 'k', alg: 'HS256', secret: Buffer.alloc(32, 9).toString('base64url') }] });
    const seenByInterceptor: string[] = [];
    const ended: Array<[string, number]> = [];
    const rejected: string[] = [];
    let release: () => void = () => {};
    const held = new Promise<void>((r) => (release = r));
    const s = new Server({
      tickets: { keys: ring },
      overload: { maxInflight: 1 },
      interceptors: [
        (next) => async (req, call) => {
          seenByInterceptor.push(`${call.method} ${call.auth?.userId ?? '-'}`);
          if ((req as { text?: string }).text === 'hold') await held;
          return next(req, call);
        },
      ],
      observer: { callEnded: (m, code) => ended.push([m, code]), rejected: (_m, reason) => rejected.push(reason) },
    });
    s.addService(new Probe());
    await s.listen(0, '127.0.0.1');
    try {
      const c = client('probe', s.address);
      const ticket = new TicketIssuer(ring).issue({ userId: 'ada', ttlMs: 60_000 });
      const withTicket = new grpc.Metadata();
      withTicket.set('authorization', `Bearer ${ticket}`);
      const ok = await unary(c, 'echo', { text: 'ticketed' }, withTicket);
      expect(ok.reply.text).toBe('ticketed');
      // The ticket is the call's, not metadata the handler sees.
      expect(ok.reply.metadata['authorization']).toBeUndefined();
      expect(seenByInterceptor).toContain('probe.Probe/Echo ada');
      const none = await unary(c, 'echo', { text: 'no ticket' });
      expect(none.code).toBe(grpc.status.UNAUTHENTICATED);
      const forged = new grpc.Metadata();
      forged.set('authorization', `Bearer ${ticket.slice(0, -4)}AAAA`);
      expect((await unary(c, 'echo', { text: 'forged' }, forged)).code).toBe(grpc.status.UNAUTHENTICATED);
      // One call held in its handler; with maxInflight 1, FastReject refuses the next.
      const holding = unary(c, 'echo', { text: 'hold' }, withTicket);
      for (let i = 0; i < 100 && s.inflightCalls === 0; i++) await new Promise((r) => setTimeout(r, 10));
      const refused = await unary(c, 'echo', { text: 'refused' }, withTicket);
      expect(refused.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect(rejected).toContain('inflight');
      release();
      expect((await holding).reply.text).toBe('hold');
      expect(ended).toContainEqual(['probe.Probe/Echo', 0]);
    } finally {
      release();
      await s.close({ graceMs: 100 });
    }
  });
});
