/**
 * The bench engine (framework/cli/bench.ts): counts, concurrency, error grouping, latency figures,
 * duration parsing and the report, plus one run against a real svrkit server on loopback.
 * No assertion depends on timing.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { formatBenchResult, formatProgress, parseDuration, runBench, type BenchProgress, type BenchResult } from '../framework/cli/bench.js';
import { Channel, RpcError, Server, Status, type MessageType, type MethodDefinition, type ServiceDefinition } from '../framework/index.js';

/** A `call` that resolves after a macrotask and records how many calls were in flight at once. */
function trackingCall(delay: 'immediate' | number = 'immediate') {
  const state = { started: 0, inflight: 0, maxInflight: 0 };
  const call = () =>
    new Promise<void>((resolve) => {
      state.started++;
      state.inflight++;
      if (state.inflight > state.maxInflight) state.maxInflight = state.inflight;
      const done = () => {
        state.inflight--;
        resolve();
      };
      if (delay === 'immediate') setImmediate(done);
      else setTimeout(done, delay);
    });
  return { state, call };
}

describe('runBench: requests mode', () => {
  it('makes exactly the requested number of calls and keeps `concurrency` in flight', async () => {
    const { state, call } = trackingCall();
    const r = await runBench({ call, concurrency: 8, requests: 1000 });
    expect(state.started).toBe(1000);
    expect(r.calls).toBe(1000);
    expect(r.ok).toBe(1000);
    expect(r.errors).toEqual({});
    expect(r.concurrency).toBe(8);
    expect(state.maxInflight).toBe(8);
    expect(state.inflight).toBe(0);
  });

  it('never exceeds the number of requests when concurrency is larger', async () => {
    const { state, call } = trackingCall(1);
    const r = await runBench({ call, concurrency: 50, requests: 7 });
    expect(state.started).toBe(7);
    expect(state.maxInflight).toBe(7);
    expect(r.calls).toBe(7);
  });

  it('with concurrency 1 runs calls one at a time', async () => {
    const { state, call } = trackingCall();
    const r = await runBench({ call, concurrency: 1, requests: 25 });
    expect(state.maxInflight).toBe(1);
    expect(r.calls).toBe(25);
  });

  it('works with calls that resolve without yielding to the event loop', async () => {
    let n = 0;
    const r = await runBench({ call: async () => void n++, concurrency: 4, requests: 10_000 });
    expect(n).toBe(10_000);
    expect(r.ok).toBe(10_000);
  });
});

describe('runBench: errors', () => {
  it('groups failures by status name (RpcError) or error name, and keeps going', async () => {
    let i = 0;
    const call = async () => {
      await new Promise((r) => setImmediate(r));
      const k = i++ % 4;
      if (k === 1) throw new RpcError(Status.UNAVAILABLE, 'down');
      if (k === 2) throw new RpcError(Status.DEADLINE_EXCEEDED, 'slow');
      if (k === 3) throw new TypeError('boom');
      return 'ok';
    };
    const r = await runBench({ call, concurrency: 3, requests: 400 });
    expect(r.calls).toBe(400);
    expect(r.ok).toBe(100);
    expect(r.errors).toEqual({ UNAVAILABLE: 100, DEADLINE_EXCEEDED: 100, TypeError: 100 });
  });

  it('counts synchronous throws and non-Error rejections', async () => {
    let i = 0;
    const call = (): Promise<unknown> => {
      if (i++ % 2 === 0) throw new RpcError(Status.RESOURCE_EXHAUSTED, 'shed');
      return Promise.reject('a string');
    };
    const r = await runBench({ call, concurrency: 2, requests: 10 });
    expect(r.calls).toBe(10);
    expect(r.ok).toBe(0);
    expect(r.errors).toEqual({ RESOURCE_EXHAUSTED: 5, Error: 5 });
  });
});

describe('runBench: duration mode', () => {
  it('stops starting calls after the duration and awaits those in flight', async () => {
    const { state, call } = trackingCall(2);
    const progress: BenchProgress[] = [];
    const r = await runBench({ call, concurrency: 4, durationMs: 120, progressIntervalMs: 20, onProgress: (p) => progress.push(p) });
    expect(state.inflight).toBe(0);
    expect(r.calls).toBe(state.started);
    expect(r.ok).toBe(r.calls);
    expect(r.calls).toBeGreaterThanOrEqual(4);
    expect(state.maxInflight).toBe(4);
    expect(r.durationMs).toBeGreaterThanOrEqual(120);
    expect(r.callsPerSecond).toBeGreaterThan(0);
    // Progress snapshots are consistent with one another, whenever they happened to fire.
    for (let i = 1; i < progress.length; i++) {
      expect(progress[i]!.elapsedMs).toBeGreaterThan(progress[i - 1]!.elapsedMs);
      expect(progress[i]!.calls).toBeGreaterThanOrEqual(progress[i - 1]!.calls);
    }
    for (const p of progress) {
      expect(p.calls).toBeLessThanOrEqual(r.calls);
      expect(p.errors).toBe(0);
      expect(p.callsPerSecond).toBeGreaterThanOrEqual(0);
    }
  });

  it('rejects with what onProgress throws, after the calls in flight end', async () => {
    const { state, call } = trackingCall(1);
    const boom = new Error('progress failed');
    await expect(
      runBench({
        call,
        concurrency: 2,
        durationMs: 60_000,
        progressIntervalMs: 10,
        onProgress: () => {
          throw boom;
        },
      }),
    ).rejects.toBe(boom);
    expect(state.inflight).toBe(0);
  });
});

describe('runBench: messages (streaming calls)', () => {
  it('reports messages and messages/s from messageCount, in the result and in each progress snapshot', async () => {
    let messages = 0;
    let reads = 0;
    const progress: BenchProgress[] = [];
    const r = await runBench({
      // A "stream" of 10 messages, ending after a timer.
      call: () =>
        new Promise<void>((resolve) =>
          setTimeout(() => {
            messages += 10;
            resolve();
          }, 1),
        ),
      messageCount: () => {
        reads++;
        return messages;
      },
      concurrency: 4,
      requests: 60,
      progressIntervalMs: 5,
      onProgress: (p) => progress.push(p),
    });
    expect(r.calls).toBe(60);
    expect(r.messages).toBe(600);
    expect(r.messagesPerSecond).toBeCloseTo(r.callsPerSecond * 10, 6);
    // Read once per progress snapshot and once at the end, never per call.
    expect(reads).toBe(progress.length + 1);
    for (const p of progress) {
      expect(p.messages).toBeGreaterThanOrEqual(0);
      expect(p.messages).toBeLessThanOrEqual(600);
      expect(p.messagesPerSecond).toBeGreaterThanOrEqual(0);
    }
  });

  it('counts messages of failed calls too (the caller counts them), and has no message fields without messageCount', async () => {
    let messages = 0;
    const r = await runBench({
      call: async () => {
        messages += 3;
        throw new RpcError(Status.UNAVAILABLE, 'broke mid-stream');
      },
      messageCount: () => messages,
      concurrency: 2,
      requests: 10,
    });
    expect(r).toMatchObject({ calls: 10, ok: 0, errors: { UNAVAILABLE: 10 }, messages: 30 });
    const plain = await runBench({ call: async () => undefined, concurrency: 1, requests: 3 });
    expect('messages' in plain).toBe(false);
    expect('messagesPerSecond' in plain).toBe(false);
  });

  it('rejects a messageCount that is not a function', async () => {
    await expect(runBench({ call: async () => undefined, concurrency: 1, requests: 1, messageCount: 5 as never })).rejects.toThrow(
      'runBench: messageCount must be a function returning a number',
    );
  });
});

describe('runBench: latency', () => {
  it('reports ordered, positive latency figures in ms', async () => {
    const { call } = trackingCall(40);
    const r = await runBench({ call, concurrency: 4, requests: 20 });
    const l = r.latencyMs;
    expect(l.min).toBeGreaterThan(0);
    expect(l.min).toBeLessThanOrEqual(l.p50);
    expect(l.p50).toBeLessThanOrEqual(l.p90);
    expect(l.p90).toBeLessThanOrEqual(l.p99);
    expect(l.p99).toBeLessThanOrEqual(l.p999);
    expect(l.p999).toBeLessThanOrEqual(l.max);
    expect(l.mean).toBeGreaterThanOrEqual(l.min);
    expect(l.mean).toBeLessThanOrEqual(l.max);
    // Each call waits on a 40 ms timer: in milliseconds that reads as tens, not 40,000 (µs) or 0.04 (s).
    // The bounds are loose on purpose (timers can fire early by the event loop's clock lag, late under load).
    expect(l.min).toBeGreaterThanOrEqual(10);
    expect(l.max).toBeLessThan(10_000);
  });
});

describe('runBench: rate (paced runs)', () => {
  it('starts call k no earlier than k / rate seconds after the run began', async () => {
    const starts: number[] = [];
    const t0 = performance.now();
    const r = await runBench({
      call: async () => void starts.push(performance.now() - t0),
      concurrency: 8,
      requests: 40,
      rate: 2000,
    });
    expect(r.calls).toBe(40);
    expect(starts).toHaveLength(40);
    // 0.5 ms slots, counted from runBench's own start (a little after t0).
    starts.forEach((at, k) => expect(at).toBeGreaterThanOrEqual(k * 0.5));
  });

  it('stops waiting for slots when onProgress throws: no call starts after, onProgress is not called again', async () => {
    const { state, call } = trackingCall(1);
    const boom = new Error('stop');
    let progressCalls = 0;
    let startedAtThrow = -1;
    await expect(
      runBench({
        call,
        concurrency: 50,
        requests: 1000,
        rate: 20, // a slot every 50 ms: most workers wait seconds for theirs
        progressIntervalMs: 10,
        onProgress: () => {
          progressCalls++;
          startedAtThrow = state.started;
          throw boom;
        },
      }),
    ).rejects.toBe(boom);
    expect(progressCalls).toBe(1);
    expect(state.started).toBe(startedAtThrow);
    expect(state.inflight).toBe(0);
  });

  it('warns of no listener leak when more than 10 workers wait for their slots', async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error): void => void warnings.push(w);
    process.on('warning', onWarning);
    try {
      // 50 workers, a slot every 2 ms: most of them wait, each listening for the run's stop.
      const r = await runBench({ call: () => Promise.resolve(), concurrency: 50, requests: 60, rate: 500 });
      expect(r.calls).toBe(60);
      await new Promise((resolve) => setImmediate(resolve)); // warnings are emitted on a later tick
    } finally {
      process.off('warning', onWarning);
    }
    expect(warnings.map((w) => w.name)).not.toContain('MaxListenersExceededWarning');
  });

  it('in duration mode starts no call whose slot is past the end', async () => {
    const r = await runBench({ call: () => Promise.resolve(), concurrency: 4, durationMs: 100, rate: 200 });
    // Slots every 5 ms: 0, 5, ..., 95 ms.
    expect(r.calls).toBeLessThanOrEqual(20);
    expect(r.ok).toBe(r.calls);
  });
});

describe('runBench: validation', () => {
  const call = () => Promise.resolve();
  it.each([
    [{ call, concurrency: 0, requests: 1 }, /concurrency must be a positive integer/],
    [{ call, concurrency: 1.5, requests: 1 }, /concurrency must be a positive integer/],
    [{ call, concurrency: -3, requests: 1 }, /concurrency must be a positive integer/],
    [{ call, concurrency: 1 }, /either durationMs or requests \(neither/],
    [{ call, concurrency: 1, requests: 5, durationMs: 100 }, /not both/],
    [{ call, concurrency: 1, requests: 0 }, /requests must be an integer >= 1/],
    [{ call, concurrency: 1, requests: 2.5 }, /requests must be an integer >= 1/],
    [{ call, concurrency: 1, durationMs: 0 }, /durationMs must be a positive/],
    [{ call, concurrency: 1, requests: 1, progressIntervalMs: 0 }, /progressIntervalMs/],
    [{ call, concurrency: 1, requests: 1, rate: 0 }, /rate must be a positive number/],
    [{ call, concurrency: 1, requests: 1, rate: Infinity }, /rate must be a positive number/],
    [{ call: 'nope', concurrency: 1, requests: 1 }, /call must be a function/],
  ])('rejects %o', async (options, message) => {
    await expect(runBench(options as never)).rejects.toThrow(message);
  });
});

describe('parseDuration (re-exported from flags.ts for the scripts under bench/)', () => {
  it('takes a duration with a unit and refuses a bare number; the full cases are in cli-habits.test.ts', () => {
    expect(parseDuration('10s')).toBe(10_000);
    expect(parseDuration('500ms')).toBe(500);
    expect(() => parseDuration('250')).toThrow(/give a unit/);
  });
});

describe('formatBenchResult / formatProgress', () => {
  const result: BenchResult = {
    calls: 1_234_567,
    ok: 1_234_000,
    errors: { UNAVAILABLE: 500, DEADLINE_EXCEEDED: 67 },
    durationMs: 5012.3,
    callsPerSecond: 246_306.4,
    latencyMs: { min: 0.081, mean: 0.424, p50: 0.398, p90: 0.571, p99: 1.031, p999: 2.411, max: 14.205 },
    concurrency: 64,
  };

  it('contains the figures', () => {
    const text = formatBenchResult(result, 'grpc-js SayHello');
    expect(text.split('\n')[0]).toBe('grpc-js SayHello');
    for (const s of ['1,234,567', '1,234,000 ok', '567 errors', '5.01 s', '246,306 calls/s', '64']) expect(text).toContain(s);
    for (const s of ['min 0.081', 'mean 0.424', 'p50 0.398', 'p90 0.571', 'p99 1.031', 'p99.9 2.411', 'max 14.205']) {
      expect(text).toContain(s);
    }
    expect(text).toMatch(/UNAVAILABLE\s+500/);
    expect(text).toMatch(/DEADLINE_EXCEEDED\s+67/);
  });

  it('has a default title and no errors section without errors', () => {
    const text = formatBenchResult({ ...result, calls: 10, ok: 10, errors: {} });
    expect(text.split('\n')[0]).toBe('svrkit bench');
    expect(text).toContain('0 errors');
    expect(text).not.toMatch(/^\s+errors/m);
  });

  it('with messages: a messages line and messages/s on the throughput line', () => {
    const text = formatBenchResult({ ...result, calls: 1200, ok: 1200, errors: {}, messages: 120_000, callsPerSecond: 240, messagesPerSecond: 24_000.4 });
    const lines = text.split('\n');
    expect(lines[1]).toBe('  calls        1,200 (1,200 ok, 0 errors)');
    expect(lines[2]).toBe('  messages     120,000 (100.0 per call)');
    expect(lines).toContain('  throughput   240 calls/s  24,000 messages/s');
    expect(formatBenchResult(result)).not.toContain('messages');
  });

  it('formats a progress line, with messages when the run counts them', () => {
    expect(formatProgress({ elapsedMs: 3000, calls: 1523, callsPerSecond: 508.2, errors: 0, messages: 152_300, messagesPerSecond: 50_800 })).toBe(
      '   3.0s  1,523 calls  508/s  152,300 messages  50,800/s  0 errors',
    );
  });

  it('formats a progress line', () => {
    expect(formatProgress({ elapsedMs: 3000, calls: 152_311, callsPerSecond: 151_220.4, errors: 0 })).toBe(
      '   3.0s  152,311 calls  151,220/s  0 errors',
    );
    expect(formatProgress({ elapsedMs: 12_345, calls: 5, callsPerSecond: 1, errors: 1 })).toContain('1 error');
  });
});

// ---- against a real server ----------------------------------------------------------------------

/** A hand-written protobuf codec for a message with one string field numbered 1. */
function stringMessage<K extends string>(field: K): MessageType<Record<K, string>> {
  type M = Record<K, string>;
  const utf8 = new TextEncoder();
  const fromUtf8 = new TextDecoder('utf-8', { fatal: true });
  const readVarint = (buf: Uint8Array, pos: { i: number }): number => {
    let result = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      if (pos.i >= buf.length) throw new Error('truncated varint');
      const b = buf[pos.i++]!;
      result += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return result;
    }
    throw new Error('varint too long');
  };
  const fromPartial = (o: any): M => ({ [field]: typeof o?.[field] === 'string' ? o[field] : '' }) as M;
  return {
    fromPartial,
    encode(message: M) {
      const bytes = utf8.encode(message[field]);
      const out: number[] = [];
      if (bytes.length > 0) {
        out.push(0x0a); // field 1, wire type 2
        let n = bytes.length;
        while (n >= 0x80) {
          out.push((n & 0x7f) | 0x80);
          n >>>= 7;
        }
        out.push(n);
      }
      const buf = new Uint8Array(out.length + (bytes.length > 0 ? bytes.length : 0));
      buf.set(out, 0);
      if (bytes.length > 0) buf.set(bytes, out.length);
      return { finish: () => buf };
    },
    decode(input: Uint8Array): M {
      let value = '';
      const pos = { i: 0 };
      while (pos.i < input.length) {
        const tag = readVarint(input, pos);
        const wire = tag & 7;
        if (wire === 2) {
          const len = readVarint(input, pos);
          if (pos.i + len > input.length) throw new Error('truncated field');
          if (tag >>> 3 === 1) value = fromUtf8.decode(input.subarray(pos.i, pos.i + len));
          pos.i += len;
        } else if (wire === 0) readVarint(input, pos);
        else if (wire === 1) pos.i += 8;
        else if (wire === 5) pos.i += 4;
        else throw new Error(`unsupported wire type ${wire}`);
      }
      if (pos.i > input.length) throw new Error('truncated field');
      return fromPartial({ [field]: value });
    },
  };
}

const HelloRequest = stringMessage('name');
const HelloReply = stringMessage('message');

const sayHello: MethodDefinition<{ name: string }, { message: string }> = {
  name: 'SayHello',
  localName: 'sayHello',
  path: 'helloworld.Greeter/SayHello',
  requestType: HelloRequest,
  responseType: HelloReply,
  requestTypeName: 'helloworld.HelloRequest',
  responseTypeName: 'helloworld.HelloReply',
};

const GreeterDefinition: ServiceDefinition = {
  name: 'Greeter',
  fullName: 'helloworld.Greeter',
  methods: { sayHello },
  files: [],
};

describe('runBench against a svrkit server on 127.0.0.1', () => {
  let server: Server | undefined;
  let channel: Channel | undefined;
  afterEach(async () => {
    channel?.close();
    await server?.close({ graceMs: 1000 });
    channel = undefined;
    server = undefined;
  });

  it('drives real calls and groups the server errors', async () => {
    server = new Server();
    let served = 0;
    server.addService(GreeterDefinition, {
      async sayHello(req: { name: string }) {
        served++;
        if (req.name === 'fail') throw new RpcError(Status.UNAVAILABLE, 'not today');
        return { message: 'Hello ' + req.name };
      },
    });
    await server.listen(0, '127.0.0.1');
    channel = new Channel(server.address);
    await channel.waitForReady(5000);

    const ch = channel;
    expect(await ch.unary(sayHello, { name: 'bench' })).toEqual({ message: 'Hello bench' });
    served = 0;

    let i = 0;
    const replies = new Set<string>();
    const r = await runBench({
      concurrency: 16,
      requests: 500,
      call: async () => {
        const name = i++ % 10 === 9 ? 'fail' : 'bench';
        const res = await ch.unary(sayHello, { name });
        replies.add(res.message);
        return res;
      },
    });
    expect(r.calls).toBe(500);
    expect(served).toBe(500);
    expect(r.ok).toBe(450);
    expect(r.errors).toEqual({ UNAVAILABLE: 50 });
    expect([...replies]).toEqual(['Hello bench']);
    expect(r.latencyMs.min).toBeGreaterThan(0);
    expect(r.latencyMs.p50).toBeLessThanOrEqual(r.latencyMs.p99);
    expect(r.latencyMs.p99).toBeLessThanOrEqual(r.latencyMs.max);
    expect(formatBenchResult(r)).toContain('500 (450 ok, 50 errors)');
  });
});
