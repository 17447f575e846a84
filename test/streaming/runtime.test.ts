/**
 * Streaming through the public API, server and channel in this process over loopback: stream
 * interceptors, call kinds, retries before the first response message (gRFC A6's "committed"
 * rule), FastReject at stream start, and metrics. (Credit windows: test/transport/flow-control.test.ts
 * and the slow-consumer test in processes.test.ts.)
 */
import { afterEach, describe, expect, it } from 'vitest';
import {
  Channel,
  currentCall,
  RpcError,
  Server,
  Status,
  SvrkitMetrics,
  type ClientStreamInterceptor,
  type ServerStreamInterceptor,
} from '../../framework/index.js';
import { StreamsClient, StreamsDefinition, StreamsService, type CountRequest, type Item } from '../.tmp/gen/streams/streams.js';
import { Streams } from '../support/streams-service.js';

const opened: Array<{ close(): unknown }> = [];
afterEach(async () => {
  for (const o of opened.splice(0)) await o.close();
});

async function serve(service: object, options: ConstructorParameters<typeof Server>[0] = {}): Promise<Server> {
  const server = new Server({ overload: false, ...options });
  server.addService(service as Streams);
  await server.listen(0);
  opened.push({ close: () => server.close({ graceMs: 100 }) });
  return server;
}

function client(address: string, options: ConstructorParameters<typeof Channel>[1] = {}): StreamsClient {
  const c = new StreamsClient(address, options);
  opened.unshift(c);
  return c;
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

describe('stream interceptors', () => {
  it('wrap all three kinds on both sides, in order, inside the call context', async () => {
    const log: string[] = [];
    const serverSide = (name: string): ServerStreamInterceptor => (next) =>
      async function* (requests, call) {
        log.push(`server ${name} ${call.method} md=${call.metadata['x-tag']}`);
        let n = 0;
        for await (const m of next(requests, call)) {
          n++;
          yield m;
        }
        log.push(`server ${name} sent ${n}`);
      };
    const clientSide = (name: string): ClientStreamInterceptor => (next) => (requests, call) => {
      log.push(`client ${name} ${call.method.path}`);
      return next(requests, { ...call, options: { ...call.options, metadata: { ...call.options.metadata, 'x-tag': name } } });
    };
    const server = await serve(new Streams(), { streamInterceptors: [serverSide('outer'), serverSide('inner')] });
    const c = client(server.address, { streamInterceptors: [clientSide('a'), clientSide('b')] });

    expect((await collect(c.count({ count: 2 }))).length).toBe(2);
    expect(await c.upload([{ data: Buffer.from('xy') }])).toMatchObject({ bytes: 2n, chunks: 1 });
    expect((await collect(c.echo([{ seq: 7n }]))).map((i) => i.seq)).toEqual([7n]);
    expect(log).toEqual([
      'client a streams.v1.Streams/Count',
      'client b streams.v1.Streams/Count',
      'server outer streams.v1.Streams/Count md=b',
      'server inner streams.v1.Streams/Count md=b',
      'server inner sent 2',
      'server outer sent 2',
      'client a streams.v1.Streams/Upload',
      'client b streams.v1.Streams/Upload',
      'server outer streams.v1.Streams/Upload md=b',
      'server inner streams.v1.Streams/Upload md=b',
      'server inner sent 1',
      'server outer sent 1',
      'client a streams.v1.Streams/Echo',
      'client b streams.v1.Streams/Echo',
      'server outer streams.v1.Streams/Echo md=b',
      'server inner streams.v1.Streams/Echo md=b',
      'server inner sent 1',
      'server outer sent 1',
    ]);
  });

  it('handlers see their call context (deadline, metadata) in every message', async () => {
    class Ctx extends Streams {
      override async *count(request: CountRequest): AsyncIterable<Item> {
        for (let i = 0; i < Number(request.count); i++) {
          const call = currentCall()!;
          yield { seq: BigInt(i), payload: Buffer.from(`${call.metadata['x-user']}:${call.timeRemaining() > 0}`) };
          await new Promise((r) => setTimeout(r, 1));
        }
      }
    }
    const server = await serve(new Ctx());
    const items = await collect(client(server.address).count({ count: 3 }, { metadata: { 'x-user': 'ada' }, timeoutMs: 5000 }));
    expect(items.map((i) => Buffer.from(i.payload).toString())).toEqual(['ada:true', 'ada:true', 'ada:true']);
  });
});

describe('call kinds', () => {
  it('a server refuses a stream called with the wrong kind, naming both', async () => {
    const server = await serve(new Streams());
    const ch = new Channel(server.address);
    opened.unshift(ch);
    // Pretend Count were unary: the server knows better.
    const asUnary = { ...StreamsDefinition.methods.count, kind: 'unary' as const };
    const err = await ch.unary(asUnary, { count: 1 }).catch((e: unknown) => e);
    expect((err as RpcError).code).toBe(Status.UNIMPLEMENTED);
    expect((err as RpcError).message).toBe("method 'streams.v1.Streams/Count' is server-streaming, but was called as unary");
  });

  it('the channel refuses a stream method called through the wrong client method', async () => {
    const server = await serve(new Streams());
    const ch = new Channel(server.address);
    opened.unshift(ch);
    const err = await collect(ch.bidiStream(StreamsDefinition.methods.count, [])).catch((e: unknown) => e);
    expect((err as RpcError).code).toBe(Status.INVALID_ARGUMENT);
  });
});

describe('retries before the first response message', () => {
  it('a stream refused before its first message is retried; one that failed after is not', async () => {
    let calls = 0;
    class Flaky extends Streams {
      override async *count(request: CountRequest): AsyncIterable<Item> {
        calls++;
        if (calls === 1) throw new RpcError(Status.UNAVAILABLE, 'not yet');
        yield { seq: 0n, payload: new Uint8Array() };
        if (request.failAfter > 0n) throw new RpcError(Status.UNAVAILABLE, 'after the first message');
        yield { seq: 1n, payload: new Uint8Array() };
      }
    }
    const server = await serve(new Flaky());
    // Count is not idempotent, so only retry the way gRFC A6 lets any method be retried: make it idempotent by config.
    const c = client(server.address, { methodConfig: [{ name: [{ service: 'streams.v1.Streams' }], idempotent: true }] });
    expect((await collect(c.count({ count: 2 }))).map((i) => i.seq)).toEqual([0n, 1n]);
    expect(calls).toBe(2);
    const seen: bigint[] = [];
    const err = await (async () => {
      for await (const i of c.count({ count: 2, failAfter: 1 })) seen.push(i.seq);
    })().catch((e: unknown) => e);
    expect(seen).toEqual([0n]);
    expect((err as RpcError).message).toBe('after the first message');
    expect(calls).toBe(3);
  });

  it('client-streaming replays the requests already sent on the retry', async () => {
    let attempt = 0;
    class Flaky extends StreamsService {
      override async *count(): AsyncIterable<Item> {}
      override async *echo(): AsyncIterable<Item> {}
      override async stats() {
        return {};
      }
      override async upload(requests: AsyncIterable<{ data: Uint8Array }>) {
        attempt++;
        const got: string[] = [];
        for await (const r of requests) {
          got.push(Buffer.from(r.data).toString());
          if (attempt === 1 && got.length === 2) throw new RpcError(Status.UNAVAILABLE, 'lost it');
        }
        return { chunks: got.length, bytes: BigInt(got.join('').length) };
      }
    }
    const server = await serve(new Flaky());
    const c = client(server.address, { methodConfig: [{ name: [{ service: 'streams.v1.Streams' }], idempotent: true }] });
    const summary = await c.upload([{ data: Buffer.from('a') }, { data: Buffer.from('bb') }, { data: Buffer.from('ccc') }]);
    expect(attempt).toBe(2);
    expect(summary).toMatchObject({ chunks: 3, bytes: 6n });
  });
});

describe('FastReject and metrics', () => {
  it('a stream is admitted or refused at its start, as a unary call is', async () => {
    const server = new Server({ overload: { maxInflight: 1 } });
    server.addService(new Streams());
    await server.listen(0);
    opened.push({ close: () => server.close({ graceMs: 100 }) });
    const c = client(server.address, { retryPolicy: false });
    const first = c.count({ count: 1, hang: true })[Symbol.asyncIterator]();
    await first.next();
    const err = await collect(c.count({ count: 1 })).catch((e: unknown) => e);
    expect((err as RpcError).code).toBe(Status.RESOURCE_EXHAUSTED);
    expect((err as RpcError).notProcessed).toBe(true);
    await first.return!();
  });

  it('messages are counted per method and direction on both sides', async () => {
    const metrics = new SvrkitMetrics(undefined, { defaultMetrics: false });
    const server = await serve(new Streams(), { observer: metrics.server });
    const c = client(server.address, { observer: metrics.client });
    await collect(c.count({ count: 5 }));
    await collect(c.echo([{ seq: 1n }, { seq: 2n }]));
    const text = await metrics.registry.metrics();
    expect(text).toContain('svrkit_server_stream_messages_total{service="streams.v1.Streams",method="Count",direction="sent"} 5');
    expect(text).toContain('svrkit_client_stream_messages_total{service="streams.v1.Streams",method="Count",direction="received"} 5');
    expect(text).toContain('svrkit_server_stream_messages_total{service="streams.v1.Streams",method="Echo",direction="received"} 2');
    expect(text).toContain('svrkit_client_stream_messages_total{service="streams.v1.Streams",method="Echo",direction="sent"} 2');
    expect(text).toMatch(/svrkit_client_handled_total\{service="streams.v1.Streams",method="Count",code="OK"\} 1/);
  });
});
