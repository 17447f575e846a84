/**
 * The whole call path (framing, multiplexing, flow control, balancing, retries, hedging) over the
 * in-memory transport: servers and channels in this process, no socket. What the picker decides
 * (connection, queue, shed, unavailable) and what retries and hedges do with it.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Channel, MemoryTransport, PUSHBACK_KEY, RpcError, Server, Status, type ByteStream, type CallContext, type Transport } from '../../framework/index.js';
import { ProbeDefinition } from '../.tmp/gen/probe/probe.js';
import { StreamsClient, type Chunk, type CountRequest, type Item, type UploadSummary } from '../.tmp/gen/streams/streams.js';
import { Streams } from '../support/streams-service.js';

const opened: Array<() => unknown> = [];
afterEach(async () => {
  for (const close of opened.splice(0)) await close();
});

/** A Probe whose Echo answers per `behave` and counts calls. */
function probe(behave: (call: CallContext) => void = () => {}) {
  const counter = { calls: 0 };
  const impl = {
    async echo(req: { text: string }, call: CallContext) {
      counter.calls++;
      behave(call);
      return { text: req.text, metadata: {}, traceId: '', deadlineLeftMs: 0n, padding: new Uint8Array() };
    },
  };
  return { counter, impl };
}

async function serve(transport: MemoryTransport, host: string, impl: object, options: ConstructorParameters<typeof Server>[0] = {}): Promise<Server> {
  const server = new Server({ transport, overload: false, ...options });
  server.addService(ProbeDefinition, impl);
  await server.listen(1, host);
  opened.push(() => server.close({ graceMs: 0 }));
  return server;
}

async function collectAll<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

function channel(transport: MemoryTransport, target: string, options: ConstructorParameters<typeof Channel>[1] = {}): Channel {
  const ch = new Channel(target, { transport, ...options });
  opened.unshift(() => ch.close());
  return ch;
}

/**
 * A transport whose streams are plain objects (not EventEmitters) that delegate to the memory
 * transport's and wrap every listener: nothing is called with the stream as `this`.
 */
function delegating(inner: MemoryTransport): Transport {
  const wrap = (s: ByteStream): ByteStream => ({
    get remoteAddress() {
      return s.remoteAddress;
    },
    get remotePort() {
      return s.remotePort;
    },
    get bytesRead() {
      return s.bytesRead;
    },
    get bytesWritten() {
      return s.bytesWritten;
    },
    get writableLength() {
      return s.writableLength;
    },
    setNoDelay: (on) => s.setNoDelay(on),
    write: (chunk) => s.write(chunk),
    end: () => s.end(),
    destroy: (err) => s.destroy(err),
    pause: () => s.pause(),
    resume: () => s.resume(),
    on: (event: string, listener: (...a: never[]) => void) => s.on(event as 'close', (...a: never[]) => listener(...a)),
    once: (event: 'connect' | 'close', listener: () => void) => s.once(event, () => listener()),
  });
  return {
    connect: (host, port) => wrap(inner.connect(host, port)),
    listen: (port, host, onConnection) => inner.listen(port, host, (s) => onConnection(wrap(s))),
  };
}

describe('a custom transport', () => {
  it('whose streams are not emitters and wrap their listeners carries unary calls and streams', async () => {
    const transport = delegating(new MemoryTransport());
    const server = new Server({ transport, overload: false }).addService(new Streams());
    await server.listen(0, 'wrapped');
    opened.push(() => server.close({ graceMs: 0 }));
    const ch = new Channel(server.address, { transport });
    opened.unshift(() => ch.close());
    const client = new StreamsClient(ch);
    let n = 0n;
    for await (const item of client.count({ count: 1000 })) expect(item.seq).toBe(n++);
    expect(n).toBe(1000n);
    expect(await client.upload([{ data: Buffer.from('abc') }])).toMatchObject({ bytes: 3n, chunks: 1 });
    expect(Number((await client.stats({})).open)).toBe(0);
  });
});

describe('the in-memory transport', () => {
  it('carries unary calls and every kind of stream, with no socket', async () => {
    const transport = new MemoryTransport();
    const server = new Server({ transport, overload: false }).addService(new Streams());
    await server.listen(0, 'streams');
    opened.push(() => server.close({ graceMs: 0 }));
    const client = new StreamsClient(channel(transport, server.address));
    let n = 0n;
    for await (const item of client.count({ count: 50_000 })) expect(item.seq).toBe(n++);
    expect(n).toBe(50_000n);
    expect(await client.upload([{ data: Buffer.from('abc') }, { data: Buffer.from('d') }])).toMatchObject({ bytes: 4n, chunks: 2 });
    const echoed: bigint[] = [];
    for await (const item of client.echo([{ seq: 1n }, { seq: 2n }])) echoed.push(item.seq);
    expect(echoed).toEqual([1n, 2n]);
    expect(Number((await client.stats({})).open)).toBe(0);
  });

  it('a stream opens when it is first read: an iterable nobody reads sends nothing', async () => {
    const transport = new MemoryTransport();
    const streams = new Streams();
    const server = new Server({ transport, overload: false }).addService(streams);
    await server.listen(0, 'streams');
    opened.push(() => server.close({ graceMs: 0 }));
    const client = new StreamsClient(channel(transport, server.address));
    const unread = client.count({ count: 5, hang: true });
    await new Promise((r) => setTimeout(r, 50));
    expect(server.inflightCalls).toBe(0);
    for await (const _ of unread) break;
    expect(streams.closed + streams.open).toBe(1);
  });

  it('a connection holds at most maxStreamsPerConnection open streams; more are refused, not processed', async () => {
    const transport = new MemoryTransport();
    const streams = new Streams();
    const server = new Server({ transport, overload: false, maxStreamsPerConnection: 2 }).addService(streams);
    await server.listen(0, 'streams');
    opened.push(() => server.close({ graceMs: 0 }));
    // No retries, and no adaptive throttle (it would count the refusal and refuse the next call locally).
    const client = new StreamsClient(channel(transport, server.address, { retryPolicy: false, adaptiveThrottle: false }));
    const a = client.count({ count: 1, hang: true })[Symbol.asyncIterator]();
    const b = client.count({ count: 1, hang: true })[Symbol.asyncIterator]();
    await a.next();
    await b.next();
    const err = (await collectAll(client.count({ count: 1 })).catch((e: unknown) => e)) as RpcError;
    expect(err.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(err.notProcessed).toBe(true);
    expect(err.reason).toBe('TOO_MANY_STREAMS');
    await a.return!();
    for (let i = 0; i < 100 && streams.open > 1; i++) await new Promise((r) => setTimeout(r, 5));
    expect((await collectAll(client.count({ count: 2 }))).length).toBe(2);
    await b.return!();
  });

  it('a break cancels a stream: the server generator closes', async () => {
    const transport = new MemoryTransport();
    const streams = new Streams();
    const server = new Server({ transport, overload: false }).addService(streams);
    await server.listen(0, 'streams');
    opened.push(() => server.close({ graceMs: 0 }));
    const client = new StreamsClient(channel(transport, server.address));
    for await (const _ of client.count({ count: 5, hang: true })) break;
    for (let i = 0; i < 100 && streams.closed === 0; i++) await new Promise((r) => setTimeout(r, 5));
    expect(streams.closed).toBe(1);
    expect(streams.lastAbort).toBe('CANCELLED');
  });

  it('an address nobody listens on is UNAVAILABLE, not processed (the pick is "unavailable")', async () => {
    const transport = new MemoryTransport();
    const ch = channel(transport, 'nobody:1', { retryPolicy: false });
    const err = (await ch.unary(ProbeDefinition.methods.echo, {}, { timeoutMs: 2000 }).catch((e: unknown) => e)) as RpcError;
    expect(err.code).toBe(Status.UNAVAILABLE);
    expect(err.notProcessed).toBe(true);
    expect(err.message).toMatch(/ECONNREFUSED nobody:1/);
  });

  it('a call made while the connection is being made waits for it (the pick is "queue")', async () => {
    const transport = new MemoryTransport();
    const { impl } = probe();
    await serve(transport, 'a', impl);
    const ch = channel(transport, 'a:1');
    // The first call finds no ready connection: it queues, the connect completes, it is sent.
    await expect(ch.unary(ProbeDefinition.methods.echo, { text: 'hi' })).resolves.toMatchObject({ text: 'hi' });
  });
});

describe('retries and hedging, end to end', () => {
  it('a retryable failure is retried on another instance', async () => {
    const transport = new MemoryTransport();
    const a = probe(() => {
      throw new RpcError(Status.UNAVAILABLE, 'a is down');
    });
    const b = probe();
    await serve(transport, 'a', a.impl);
    await serve(transport, 'b', b.impl);
    const ch = channel(transport, 'static:///a:1,b:1', { balancer: 'round_robin', methodConfig: [{ name: [{ service: 'probe.Probe' }], idempotent: true }] });
    await ch.waitForReady(2000);
    for (let i = 0; i < 4; i++) await expect(ch.unary(ProbeDefinition.methods.echo, { text: 'x' })).resolves.toMatchObject({ text: 'x' });
    expect(b.counter.calls).toBe(4);
  });

  it('hedging: server pushback "stop" sends no further hedge', async () => {
    const transport = new MemoryTransport();
    const a = probe(() => {
      throw new RpcError(Status.UNAVAILABLE, 'overloaded, go away', { [PUSHBACK_KEY]: 'stop' });
    });
    const b = probe();
    await serve(transport, 'a', a.impl);
    await serve(transport, 'b', b.impl);
    const hedged = { name: [{ service: 'probe.Probe' }], idempotent: true, hedgingPolicy: { maxAttempts: 3, hedgingDelayMs: 200 } };
    const ch = channel(transport, 'static:///a:1,b:1', { balancer: 'round_robin', methodConfig: [hedged] });
    await ch.waitForReady(2000);
    // Round robin sends the first attempt to a; its pushback forbids the hedge to b.
    const err = (await ch.unary(ProbeDefinition.methods.echo, {}).catch((e: unknown) => e)) as RpcError;
    expect(err.code).toBe(Status.UNAVAILABLE);
    expect(a.counter.calls).toBe(1);
    expect(b.counter.calls).toBe(0);
  });

  it('hedging: a pushback delay postpones the next hedge instead of sending it at once', async () => {
    const transport = new MemoryTransport();
    const a = probe(() => {
      throw new RpcError(Status.UNAVAILABLE, 'later', { [PUSHBACK_KEY]: '150' });
    });
    const b = probe();
    await serve(transport, 'a', a.impl);
    await serve(transport, 'b', b.impl);
    const hedged = { name: [{ service: 'probe.Probe' }], idempotent: true, hedgingPolicy: { maxAttempts: 2, hedgingDelayMs: 10_000 } };
    const ch = channel(transport, 'static:///a:1,b:1', { balancer: 'round_robin', methodConfig: [hedged] });
    await ch.waitForReady(2000);
    const t0 = performance.now();
    await expect(ch.unary(ProbeDefinition.methods.echo, { text: 'ok' })).resolves.toMatchObject({ text: 'ok' });
    expect(performance.now() - t0).toBeGreaterThanOrEqual(140);
    expect(b.counter.calls).toBe(1);
  });

  it('hedging: a stop followed by a non-fatal failure of the last attempt ends the call (it used to hang)', async () => {
    const transport = new MemoryTransport();
    const a = probe(() => {
      throw new RpcError(Status.UNAVAILABLE, 'stop', { [PUSHBACK_KEY]: 'stop' });
    });
    const slowFail = {
      async echo() {
        await new Promise((r) => setTimeout(r, 100));
        throw new RpcError(Status.UNAVAILABLE, 'b failed later');
      },
    };
    await serve(transport, 'b', slowFail);
    await serve(transport, 'a', a.impl);
    const hedged = { name: [{ service: 'probe.Probe' }], idempotent: true, hedgingPolicy: { maxAttempts: 4, hedgingDelayMs: 30 } };
    const ch = channel(transport, 'static:///b:1,a:1', { balancer: 'round_robin', methodConfig: [hedged] });
    await ch.waitForReady(2000);
    // b first (slow, then fails), a 30 ms later (stop at once); b's failure is the last word.
    const err = (await ch.unary(ProbeDefinition.methods.echo, {}, { timeoutMs: 3000 }).catch((e: unknown) => e)) as RpcError;
    expect(err.code).toBe(Status.UNAVAILABLE);
    expect(err.message).toBe('b failed later');
  });
});

describe('hedging bounds', () => {
  it('attempts failing together (their connection lost) never exceed maxAttempts', async () => {
    const transport = new MemoryTransport();
    const hanging = { echo: () => new Promise(() => {}) };
    const server = new Server({ transport, overload: false });
    server.addService(ProbeDefinition, hanging);
    await server.listen(1, 'a');
    let retried = 0;
    const observer = { callEnded() {}, retried: () => retried++, throttled() {} };
    const hedged = { name: [{ service: 'probe.Probe' }], idempotent: true, hedgingPolicy: { maxAttempts: 3, hedgingDelayMs: 40 } };
    const ch = channel(transport, 'a:1', { methodConfig: [hedged], observer, backoff: { initialMs: 1000 } });
    await ch.waitForReady(2000);
    const call = ch.unary(ProbeDefinition.methods.echo, {}, { timeoutMs: 3000 }).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 60)); // two attempts in flight on the one connection (the third is due at 80 ms)
    await server.close({ graceMs: 0 }); // both fail in one turn
    const err = (await call) as RpcError;
    expect(err.code).toBe(Status.UNAVAILABLE);
    expect(retried).toBeLessThanOrEqual(2); // 3 attempts in all, the first included
  });
});

describe('stream retries, end to end', () => {
  it('a stream refused before its first message is retried on another instance', async () => {
    const transport = new MemoryTransport();
    const refusing = new (class extends Streams {
      override async *count(): AsyncIterable<never> {
        throw new RpcError(Status.UNAVAILABLE, 'not this one');
      }
    })();
    const serverA = new Server({ transport, overload: false }).addService(refusing);
    const serverB = new Server({ transport, overload: false }).addService(new Streams());
    await serverA.listen(1, 'a');
    await serverB.listen(1, 'b');
    opened.push(() => serverA.close({ graceMs: 0 }), () => serverB.close({ graceMs: 0 }));
    // consistent_hash sends every attempt of one key to one instance unless the retry avoids it.
    const ch = channel(transport, 'static:///a:1,b:1', { balancer: 'consistent_hash', methodConfig: [{ name: [{ service: 'streams.v1.Streams' }], idempotent: true }] });
    await ch.waitForReady(2000);
    const client = new StreamsClient(ch);
    for (const key of ['k1', 'k2', 'k3', 'k4']) {
      let n = 0;
      for await (const _ of client.count({ count: 3 }, { hashKey: key })) n++;
      expect(n).toBe(3);
    }
  });

  it('a hedged method\'s streams are retried by its hedging policy', async () => {
    const transport = new MemoryTransport();
    let calls = 0;
    const flaky = new (class extends Streams {
      override async *count(request: CountRequest, call: CallContext): AsyncIterable<Item> {
        if (++calls === 1) throw new RpcError(Status.UNAVAILABLE, 'first one fails');
        yield* super.count(request, call);
      }
    })();
    const server = new Server({ transport, overload: false }).addService(flaky);
    await server.listen(1, 's');
    opened.push(() => server.close({ graceMs: 0 }));
    const hedged = { name: [{ service: 'streams.v1.Streams' }], idempotent: true, hedgingPolicy: { maxAttempts: 2, hedgingDelayMs: 50 } };
    const client = new StreamsClient(channel(transport, 's:1', { methodConfig: [hedged] }));
    let n = 0;
    for await (const _ of client.count({ count: 2 })) n++;
    expect(n).toBe(2);
    expect(calls).toBe(2);
  });

  it('client-streaming: a retry while the caller is slow to produce the next message loses nothing', async () => {
    const transport = new MemoryTransport();
    let attempt = 0;
    const got: number[][] = [];
    const flaky = new (class extends Streams {
      override async upload(requests: AsyncIterable<Chunk>): Promise<UploadSummary> {
        const mine: number[] = [];
        got.push(mine);
        attempt++;
        for await (const r of requests) {
          mine.push(r.data.length);
          // Pushback: the retry waits 150 ms, while the caller produces the next chunk.
          if (attempt === 1 && mine.length === 2) throw new RpcError(Status.UNAVAILABLE, 'lost the first attempt', { [PUSHBACK_KEY]: '150' });
        }
        return { chunks: mine.length, bytes: BigInt(mine.reduce((a, b) => a + b, 0)), checksum: 0 };
      }
    })();
    const server = new Server({ transport, overload: false }).addService(flaky);
    await server.listen(1, 's');
    opened.push(() => server.close({ graceMs: 0 }));
    const client = new StreamsClient(channel(transport, 's:1', { methodConfig: [{ name: [{ service: 'streams.v1.Streams' }], idempotent: true }] }));
    async function* chunks() {
      yield { data: Buffer.alloc(1) };
      yield { data: Buffer.alloc(2) };
      // The first attempt fails while this generator waits; the next chunk, taken between the
      // attempts, overflows the replay buffer.
      await new Promise((r) => setTimeout(r, 50));
      yield { data: Buffer.alloc(70_000) };
      yield { data: Buffer.alloc(4) };
    }
    const summary = await client.upload(chunks());
    expect(attempt).toBe(2);
    expect(got[1]).toEqual([1, 2, 70_000, 4]);
    expect(summary).toMatchObject({ chunks: 4, bytes: 70_007n });
  });
});
