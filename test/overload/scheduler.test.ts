/**
 * The scheduling stage and the backstops, through a real server on 127.0.0.1: handlers that burn
 * CPU run in slices, so the server keeps reading; waiting calls are served most important first;
 * a call that waits past its deadline is answered unprocessed and never runs; waiting calls above
 * a lowered level are refused at once; a closing server serves the calls that wait; the backstop
 * is memory, not a call count (tens of thousands of calls that wait on I/O are all held); a
 * call cancelled while it waits never runs, and a waiting call's id is not reused.
 */
import { connect } from 'node:net';
import { pack } from 'msgpackr';
import { afterEach, describe, expect, it } from 'vitest';
import { Channel, RpcError, Server, Status, type OverloadOptions } from '../../framework/index.js';
import { FrameDecoder, FrameKind } from '../../framework/wire/frame.js';
import { decodeStatusHeader, type StatusHeader } from '../../framework/wire/header.js';
import { EchoReply, EchoRequest, ProbeDefinition } from '../.tmp/gen/probe/probe.js';
import { rawFrame } from '../support/raw-frame.js';
import { eventually } from '../support/poll.js';

const servers: Server[] = [];
const channels: Channel[] = [];
afterEach(async () => {
  for (const c of channels.splice(0)) c.close();
  await Promise.all(servers.splice(0).map((s) => s.close({ graceMs: 200 })));
});

/** Spins the CPU for `ms` milliseconds (blocking the event loop, like CPU-bound work). */
function spin(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // spin
  }
}

/** A Probe server whose echo spins `delayMs` of CPU and records the order handlers ran in. */
async function cpuServer(overload: OverloadOptions) {
  const ran: string[] = [];
  const server = new Server({ overload });
  server.addService(ProbeDefinition, {
    echo: async (r: EchoRequest): Promise<EchoReply> => {
      ran.push(r.text);
      spin(r.delayMs);
      return { text: r.text } as EchoReply;
    },
  });
  servers.push(server);
  await server.listen(0);
  const channel = new Channel(server.address, { retryPolicy: false, adaptiveThrottle: false });
  channels.push(channel);
  return { server, channel, ran };
}

function settle<T>(p: Promise<T>): Promise<{ ok: boolean; error?: RpcError; at: number }> {
  const t0 = performance.now();
  return p.then(
    () => ({ ok: true, at: performance.now() - t0 }),
    (e: RpcError) => ({ ok: false, error: e, at: performance.now() - t0 }),
  );
}

describe('the scheduling stage', () => {
  it('keeps reading while handlers burn CPU, and serves the most important business priority first', async () => {
    const { channel, ran } = await cpuServer({});
    const echo = ProbeDefinition.methods.echo;
    // 60 calls of 5 ms (300 ms of CPU) at business priority 100, then 5 at priority 1.
    // Long deadlines: a queue of a second is no overload for them (deadlineShare), so none is refused.
    const low = Array.from({ length: 60 }, (_, i) => settle(channel.unary(echo, { text: `low${i}`, delayMs: 5 }, { timeoutMs: 60_000, priority: 100 })));
    await new Promise((r) => setTimeout(r, 20));
    const high = Array.from({ length: 5 }, (_, i) => settle(channel.unary(echo, { text: `high${i}`, delayMs: 5 }, { timeoutMs: 60_000, priority: 1 })));
    const [lows, highs] = await Promise.all([Promise.all(low), Promise.all(high)]);
    expect([...lows, ...highs].filter((o) => !o.ok).map((o) => o.error!.message)).toEqual([]);
    // The important calls were read while the others ran, and jumped the queue.
    const firstHigh = ran.findIndex((t) => t.startsWith('high'));
    expect(firstHigh).toBeGreaterThan(0);
    expect(firstHigh).toBeLessThan(30);
    expect(Math.max(...highs.map((o) => o.at))).toBeLessThan(Math.max(...lows.map((o) => o.at)));
  });

  it('a call its client cancels while it waits leaves the queue and never runs; the others are served', async () => {
    const { server, channel, ran } = await cpuServer({});
    const echo = ProbeDefinition.methods.echo;
    // Connected first, so that the cancels reach the server rather than end the calls unsent.
    await channel.unary(echo, { text: 'warm', delayMs: 0 }, { timeoutMs: 5000 });
    ran.length = 0;
    // 20 calls of 10 ms (200 ms of CPU) at once; the last 10 are cancelled 30 ms later, while
    // they still wait behind the first ones.
    const abort = new AbortController();
    const kept = Array.from({ length: 10 }, (_, i) => settle(channel.unary(echo, { text: `kept${i}`, delayMs: 10 }, { timeoutMs: 60_000 })));
    const cancelled = Array.from({ length: 10 }, (_, i) => settle(channel.unary(echo, { text: `gone${i}`, delayMs: 10 }, { timeoutMs: 60_000, signal: abort.signal })));
    setTimeout(() => abort.abort(), 30);
    const [k, c] = await Promise.all([Promise.all(kept), Promise.all(cancelled)]);
    expect(k.every((o) => o.ok)).toBe(true);
    expect(c.map((o) => o.error?.code)).toEqual(Array(10).fill(Status.CANCELLED));
    // The server is sliced: the cancel frames were read while the first calls ran.
    await new Promise((r) => setTimeout(r, 100));
    expect(ran.filter((t) => t.startsWith('gone'))).toEqual([]);
    expect(ran.filter((t) => t.startsWith('kept'))).toHaveLength(10);
    // Nothing is left waiting: a graceful close ends at once.
    const t0 = performance.now();
    await server.close({ graceMs: 5000 });
    expect(performance.now() - t0).toBeLessThan(2000);
  });

  it('a call id that waits in the queue is not reused: a second REQUEST with it is refused as a duplicate', async () => {
    const { server, ran } = await cpuServer({});
    const socket = connect({ host: '127.0.0.1', port: server.port, noDelay: true });
    await new Promise<void>((r) => socket.once('connect', () => r()));
    const got: Array<{ id: number; status: StatusHeader; text: string }> = [];
    const decoder = new FrameDecoder(1 << 20, (kind, callId, header, body) => {
      if (kind === FrameKind.RESPONSE) got.push({ id: callId, status: decodeStatusHeader(header), text: body.length > 0 ? EchoReply.decode(body).text : '' });
    });
    socket.on('data', (chunk: Buffer) => decoder.push(chunk));
    const request = (id: number, text: string, delayMs: number): Buffer => {
      const header = pack({ m: ProbeDefinition.methods.echo.path, d: 60_000 });
      return rawFrame(FrameKind.REQUEST, id, header, EchoRequest.encode(EchoRequest.fromPartial({ text, delayMs })).finish());
    };
    // Calls 1..12 run 10 ms each (the queue is served at most 50 ms per event-loop turn); call 100
    // waits behind them when a second REQUEST for id 100 arrives.
    const ahead = Array.from({ length: 12 }, (_, i) => request(i + 1, `c${i + 1}`, 10));
    socket.write(Buffer.concat([...ahead, request(100, 'waiting', 1)]));
    await new Promise((r) => setTimeout(r, 10));
    socket.write(request(100, 'duplicate', 1));
    for (let i = 0; i < 100 && got.length < 14; i++) await new Promise((r) => setTimeout(r, 20));
    socket.destroy();
    // Id 100 is answered twice: the duplicate is refused at once, then the waiting call succeeds.
    expect(got.filter((g) => g.id === 100).map((g) => [g.status.s, g.status.r, g.text])).toEqual([
      [Status.INVALID_ARGUMENT, 'DUPLICATE_CALL_ID', ''],
      [Status.OK, undefined, 'waiting'],
    ]);
    expect(got.filter((g) => g.id !== 100).map((g) => [g.id, g.status.s, g.text])).toEqual(ahead.map((_, i) => [i + 1, Status.OK, `c${i + 1}`]));
    // The duplicate was refused while call 100 still waited: before the last calls ahead of it ended.
    expect(got.findIndex((g) => g.id === 100)).toBeLessThan(got.findIndex((g) => g.id === 12));
    expect(ran).toEqual([...ahead.map((_, i) => `c${i + 1}`), 'waiting']);
  });

  it('answers a call whose deadline passed while it waited DEADLINE_EXCEEDED, unprocessed, and never runs it', async () => {
    const { channel, ran } = await cpuServer({});
    const echo = ProbeDefinition.methods.echo;
    // 40 calls of 10 ms each, all sent at once, each with 100 ms to live: most cannot start in time.
    const outcomes = await Promise.all(Array.from({ length: 40 }, (_, i) => settle(channel.unary(echo, { text: `c${i}`, delayMs: 10 }, { timeoutMs: 100 }))));
    const expired = outcomes.filter((o) => !o.ok && o.error!.code === Status.DEADLINE_EXCEEDED);
    expect(expired.length).toBeGreaterThan(20);
    expect(ran.length).toBeLessThan(20);
    expect(ran.length + expired.length).toBeGreaterThanOrEqual(38);
  });

  it('under a sustained 4x load, refuses the calls above the level fast (RESOURCE_EXHAUSTED, not processed) and serves the important ones', async () => {
    const { channel } = await cpuServer({});
    const echo = ProbeDefinition.methods.echo;
    // 2 ms of CPU per call, 2,000 calls/s offered for 2 s (4x what one core serves), 10 s deadlines.
    const calls: Array<Promise<{ ok: boolean; error?: RpcError; at: number }>> = [];
    const important: boolean[] = [];
    for (let tick = 0; tick < 100; tick++) {
      for (let i = 0; i < 40; i++) {
        important.push(i % 10 === 0);
        calls.push(settle(channel.unary(echo, { text: `c${tick}.${i}`, delayMs: 2 }, { timeoutMs: 10_000, priority: i % 10 === 0 ? 1 : 100 })));
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    const outcomes = await Promise.all(calls);
    const refused = outcomes.filter((o) => !o.ok && o.error!.code === Status.RESOURCE_EXHAUSTED);
    expect(refused.length).toBeGreaterThan(outcomes.length * 0.3);
    expect(refused.every((o) => o.error!.notProcessed && /overloaded: priority level|shed locally/.test(o.error!.message))).toBe(true);
    // Refused quickly, not after seconds in a queue.
    const sorted = refused.map((o) => o.at).sort((a, b) => a - b);
    expect(sorted[Math.floor(sorted.length / 2)]!).toBeLessThan(500);
    // The important calls were served (this process is the client too, and other tests may run
    // beside it: nearly all, not all).
    const top = outcomes.filter((_, i) => important[i]);
    expect(top.filter((o) => o.ok).length / top.length).toBeGreaterThan(0.9);
  });

  it('a burst the queue can serve within its deadlines is served, not refused', async () => {
    const { channel } = await cpuServer({});
    // 300 calls of 2 ms at once (0.6 s of CPU), 60 s deadlines, nothing after: no call arrives
    // while the queue stands, and it stands well under 5% of their deadlines; all are served.
    const outcomes = await Promise.all(Array.from({ length: 300 }, (_, i) => settle(channel.unary(ProbeDefinition.methods.echo, { text: `c${i}`, delayMs: 2 }, { timeoutMs: 60_000 }))));
    expect(outcomes.every((o) => o.ok)).toBe(true);
  });

  it('a closing server serves the calls still waiting before it closes the connection', async () => {
    const { server, channel, ran } = await cpuServer({});
    const echo = ProbeDefinition.methods.echo;
    const calls = Array.from({ length: 30 }, (_, i) => settle(channel.unary(echo, { text: `c${i}`, delayMs: 10 }, { timeoutMs: 10_000 })));
    // Every call has reached the server (begun, or waiting for its turn), and some still wait.
    await eventually('every call at the server', () => ran.length + server.queuedCalls, (n) => n >= 30, 10_000, 1);
    expect(server.queuedCalls).toBeGreaterThan(0);
    await server.close({ graceMs: 5000 });
    const outcomes = await Promise.all(calls);
    expect(outcomes.every((o) => o.ok)).toBe(true);
  });
});

describe('the backstops', () => {
  it('holds 30,000 calls waiting on I/O with the defaults, refusing none (no fixed in-flight cap)', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const server = new Server();
    let held = 0;
    server.addService(ProbeDefinition, {
      echo: async (r: EchoRequest): Promise<EchoReply> => {
        held++;
        await gate;
        return { text: r.text } as EchoReply;
      },
    });
    servers.push(server);
    await server.listen(0);
    const channel = new Channel(server.address, { retryPolicy: false });
    channels.push(channel);
    // Opened at 20,000 calls/s (this process is both the client and the server).
    const calls: Array<Promise<{ ok: boolean; error?: RpcError; at: number }>> = [];
    for (let i = 0; i < 30_000; i++) {
      calls.push(settle(channel.unary(ProbeDefinition.methods.echo, { text: String(i) }, { timeoutMs: 60_000 })));
      if (i % 500 === 499) await new Promise((r) => setTimeout(r, 25));
    }
    const deadline = Date.now() + 30_000;
    while (held < 30_000 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(server.inflightCalls).toBe(30_000);
    release();
    const outcomes = await Promise.all(calls);
    expect(outcomes.filter((o) => !o.ok).map((o) => o.error!.message).slice(0, 3)).toEqual([]);
  }, 60_000);

  it('refuses every new call while memory is above maxMemoryFraction of its limit', async () => {
    // A fraction no process can be under: the first window's sample trips the backstop.
    const { channel } = await cpuServer({ maxMemoryFraction: 1e-9, windowMs: 10 });
    await new Promise((r) => setTimeout(r, 300));
    const o = await settle(channel.unary(ProbeDefinition.methods.echo, { text: 'x' }, { timeoutMs: 2000, priority: 0 }));
    expect(o.ok).toBe(false);
    expect(o.error!.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(o.error!.notProcessed).toBe(true);
    expect(o.error!.message).toMatch(/^overloaded: memory \d+ MiB in use of a \d+ MiB limit$/);
  });

  it('rejects bad settings', () => {
    expect(() => new Server({ overload: { maxMemoryFraction: 0 } })).toThrow(/maxMemoryFraction/);
    expect(() => new Server({ overload: { sliceMs: 0 } })).toThrow(/sliceMs/);
    expect(() => new Server({ overload: { maxInflight: 0 } })).toThrow(/maxInflight/);
  });
});
