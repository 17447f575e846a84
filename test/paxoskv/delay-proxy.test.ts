/**
 * The delay proxy of test/support/delay-proxy.ts, in front of a local echo server: bytes arrive
 * complete and in order while replies are held back, holds happen and last as long as drawn, and a
 * close on either side (or of the proxy) reaches the other side without leaving sockets behind.
 */
import { createHash } from 'node:crypto';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDelayProxy, type DelayProxy } from '../support/delay-proxy.js';
import { freePort } from '../support/kv-processes.js';
import { eventually } from '../support/poll.js';
import { mulberry32 } from '../support/prng.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** An echo server on 127.0.0.1 that keeps its sockets, so a test can close them from the server's side. */
interface Echo {
  server: Server;
  port: number;
  sockets: Set<Socket>;
  /** Sockets accepted so far (closed ones included). */
  accepted: number;
}

async function startEcho(): Promise<Echo> {
  const echo: Echo = { server: createServer(), port: 0, sockets: new Set(), accepted: 0 };
  echo.server.on('connection', (s) => {
    echo.accepted++;
    echo.sockets.add(s);
    s.on('error', () => undefined);
    s.once('close', () => echo.sockets.delete(s));
    s.pipe(s);
  });
  await new Promise<void>((r) => echo.server.listen(0, '127.0.0.1', r));
  echo.port = (echo.server.address() as { port: number }).port;
  return echo;
}

/** Connects to the proxy; collects everything received; resolves `closed` on 'close'. */
async function dial(port: number): Promise<{ socket: Socket; received: () => Buffer; ended: Promise<void>; closed: Promise<void> }> {
  const socket = connect({ host: '127.0.0.1', port });
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  socket.on('error', () => undefined);
  const ended = new Promise<void>((r) => socket.once('end', () => r()));
  const closed = new Promise<void>((r) => socket.once('close', () => r()));
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return { socket, received: () => Buffer.concat(chunks), ended, closed };
}

/** Deterministic pseudo-random bytes: every position differs from its neighbours, so a reorder or a drop shows. */
function pattern(n: number, seed: number): Buffer {
  const rnd = mulberry32(seed);
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(rnd() * 256);
  return b;
}

const digest = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('delay proxy', () => {
  let echo: Echo;
  const proxies: DelayProxy[] = [];
  const proxy = async (options: Partial<Parameters<typeof startDelayProxy>[1]> = {}): Promise<DelayProxy> => {
    const p = await startDelayProxy(
      { host: '127.0.0.1', port: echo.port },
      { holdProbability: 0.3, minHoldMs: 20, maxHoldMs: 80, random: mulberry32(7), ...options },
    );
    proxies.push(p);
    return p;
  };

  beforeAll(async () => {
    echo = await startEcho();
  });

  afterAll(async () => {
    await Promise.all(proxies.map((p) => p.close()));
    for (const s of echo.sockets) s.destroy();
    await new Promise((r) => echo.server.close(r));
  });

  it('delivers every byte, in order, across many holds, on several connections at once', async () => {
    const p = await proxy();
    const run = async (c: number): Promise<void> => {
      const conn = await dial(p.port);
      const rnd = mulberry32(100 + c);
      const sent: Buffer[] = [];
      for (let i = 0; i < 150; i++) {
        const piece = pattern(1 + Math.floor(rnd() * 3000), c * 1000 + i);
        sent.push(piece);
        conn.socket.write(piece);
        if (i % 10 === 0) await sleep(2 + Math.floor(rnd() * 8)); // let replies come back in many chunks
      }
      const all = Buffer.concat(sent);
      await eventually(`connection ${c}: all ${all.length} bytes echoed`, () => conn.received().length, (n) => n >= all.length, 20_000);
      await sleep(50); // nothing extra arrives
      expect(conn.received().length).toBe(all.length);
      expect(digest(conn.received())).toBe(digest(all));
      conn.socket.end();
      await conn.closed;
    };
    await Promise.all([0, 1, 2, 3].map(run));
    const s = p.stats();
    expect(s.holds, JSON.stringify(s)).toBeGreaterThan(5);
    expect(s.heldChunks).toBeGreaterThanOrEqual(s.holds);
    expect(s.clientBytes).toBe(s.serverBytes);
    await eventually('every proxied connection closed', () => p.stats().open, (n) => n === 0, 5000);
  });

  it('passes a large transfer through with backpressure, in order', async () => {
    const p = await proxy({ holdProbability: 0.05 });
    const conn = await dial(p.port);
    const big = pattern(8 * 1024 * 1024, 42);
    conn.socket.write(big);
    await eventually('8 MiB echoed', () => conn.received().length, (n) => n >= big.length, 30_000);
    expect(digest(conn.received())).toBe(digest(big));
    expect(p.stats().holds).toBeGreaterThan(0);
    conn.socket.destroy();
    await eventually('proxied connection closed', () => p.stats().open, (n) => n === 0, 5000);
  });

  it('holds a reply for the drawn time, and never holds with probability 0', async () => {
    const slow = await proxy({ holdProbability: 1, minHoldMs: 300, maxHoldMs: 300 });
    const conn = await dial(slow.port);
    const t0 = performance.now();
    conn.socket.write('ping');
    await eventually('held reply', () => conn.received().toString(), (s) => s === 'ping', 5000, 5);
    const took = performance.now() - t0;
    expect(took).toBeGreaterThanOrEqual(290);
    expect(slow.stats()).toMatchObject({ holds: 1, heldChunks: 1, heldMs: 300 });
    conn.socket.destroy();

    const fast = await proxy({ holdProbability: 0 });
    const c2 = await dial(fast.port);
    for (let i = 0; i < 50; i++) {
      c2.socket.write(`m${i};`);
      await sleep(1);
    }
    await eventually('replies', () => c2.received().length, (n) => n >= 50 * 3, 5000, 5);
    expect(fast.stats().holds).toBe(0);
    c2.socket.destroy();
  });

  it("the server closing delivers the held bytes first, then ends the client's side", async () => {
    const p = await proxy({ holdProbability: 1, minHoldMs: 200, maxHoldMs: 200 });
    const before = echo.accepted;
    const conn = await dial(p.port);
    conn.socket.write('last words');
    await eventually('echo server connection', () => echo.accepted, (n) => n > before, 5000, 5);
    // The echo has sent its reply (held by the proxy); now the server closes its connection.
    await sleep(50);
    expect(conn.received().length).toBe(0);
    for (const s of echo.sockets) s.end();
    await conn.ended;
    expect(conn.received().toString()).toBe('last words');
    await conn.closed;
    await eventually('proxied connection closed', () => p.stats().open, (n) => n === 0, 5000);
  });

  it("the client closing closes the server's side at once, even while a reply is held", async () => {
    const p = await proxy({ holdProbability: 1, minHoldMs: 1500, maxHoldMs: 1500 });
    const conn = await dial(p.port);
    conn.socket.write('x');
    await eventually('a hold', () => p.stats().holds, (n) => n === 1, 5000, 5);
    const t0 = performance.now();
    conn.socket.destroy();
    await eventually('server side closed', () => echo.sockets.size, (n) => n === 0, 3000, 5);
    expect(performance.now() - t0).toBeLessThan(1000);
    // A FIN from the client may be a half-close, so the held reply is still written when the hold
    // ends; the client's kernel answers with a reset and the proxy's side closes then, at the latest.
    await eventually('proxied connection closed', () => p.stats().open, (n) => n === 0, 5000, 5);
  });

  it('close() ends every connection, both sides, and stops listening', async () => {
    const p = await proxy({ holdProbability: 1, minHoldMs: 10_000, maxHoldMs: 10_000 });
    const conns = await Promise.all([1, 2, 3].map(() => dial(p.port)));
    for (const c of conns) c.socket.write('held');
    await eventually('three connections held', () => p.stats().holds, (n) => n === 3, 5000, 5);
    expect(echo.sockets.size).toBe(3);
    const t0 = performance.now();
    await p.close();
    await Promise.all(conns.map((c) => c.closed));
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(p.stats().open).toBe(0);
    await eventually('server sides closed', () => echo.sockets.size, (n) => n === 0, 3000, 5);
    await expect(dial(p.port)).rejects.toThrow(/ECONNREFUSED/);
    await p.close(); // idempotent
  });

  it('a target that refuses connections: the client is closed, the failure counted', async () => {
    const dead = await freePort();
    const p = await startDelayProxy({ host: '127.0.0.1', port: dead }, { holdProbability: 0.5, minHoldMs: 10, maxHoldMs: 20, random: mulberry32(1) });
    proxies.push(p);
    const conn = await dial(p.port);
    await conn.closed;
    await eventually('proxied connection closed', () => p.stats().open, (n) => n === 0, 3000, 5);
    expect(p.stats()).toMatchObject({ connections: 1, upstreamErrors: 1, open: 0 });
  });

  it('rejects bad options', () => {
    const t = { host: '127.0.0.1', port: 1 };
    const ok = { holdProbability: 0.1, minHoldMs: 1, maxHoldMs: 2, random: Math.random };
    expect(() => startDelayProxy(t, { ...ok, holdProbability: 1.5 })).toThrow(RangeError);
    expect(() => startDelayProxy(t, { ...ok, holdProbability: Number.NaN })).toThrow(RangeError);
    expect(() => startDelayProxy(t, { ...ok, minHoldMs: -1 })).toThrow(RangeError);
    expect(() => startDelayProxy(t, { ...ok, maxHoldMs: 0 })).toThrow(RangeError);
    expect(() => startDelayProxy({ host: '127.0.0.1', port: 0 }, ok)).toThrow(RangeError);
  });
});
