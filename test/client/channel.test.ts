/**
 * The channel's balancing, retries, hedging, keepalive, outlier ejection and fail-fast, against
 * real servers on 127.0.0.1 in this process.
 */
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { Channel, registerResolver, RpcError, Status } from '../../framework/index.js';
import { PUSHBACK_KEY } from '../../framework/client/retry.js';
import { backend, channel, closeAll, echo, idempotentEcho, SERVICE, settle, started, until } from '../support/backends.js';

const rawServers: NetServer[] = [];

afterEach(async () => {
  await closeAll();
  for (const s of rawServers.splice(0)) s.close();
});

describe('retries', () => {
  it('retries an idempotent call on another instance when one answers UNAVAILABLE', async () => {
    const [a, b] = [await backend(), await backend()];
    a.failWith = new RpcError(Status.UNAVAILABLE, 'a is unwell');
    const ch = channel(`static:///${a.address},${b.address}`, { methodConfig: idempotentEcho, outlierDetection: false });
    for (let i = 0; i < 40; i++) await ch.unary(echo, { text: `r${i}` });
    expect(b.calls).toBe(40);
    expect(a.calls).toBeGreaterThan(0); // p2c sent some first attempts there; each was retried on b
  });

  it('does not retry a non-idempotent call that reached the server', async () => {
    const a = await backend();
    a.failWith = new RpcError(Status.UNAVAILABLE, 'down');
    const ch = channel(a.address);
    const r = await settle(ch.unary(echo, { text: 'x' }));
    expect(r.ok).toBe(false);
    expect(a.calls).toBe(1);
  });

  it('a retry storm stays within the token bucket: about 1.1x the calls once it drains', async () => {
    // Default bucket: 100 tokens, retries stop at 50, so the first 50 failures are retried.
    const a = await backend();
    a.failWith = new RpcError(Status.UNAVAILABLE, 'always failing');
    const ch = channel(a.address, { methodConfig: idempotentEcho, outlierDetection: false, retryPolicy: { maxAttempts: 5, initialBackoffMs: 1, maxBackoffMs: 2 } });
    const calls = 300;
    for (let i = 0; i < calls; i += 10) {
      await Promise.all(Array.from({ length: 10 }, (_, j) => settle(ch.unary(echo, { text: `s${i + j}` }))));
    }
    expect(a.calls).toBeGreaterThan(calls);
    expect(a.calls).toBeLessThanOrEqual(Math.ceil(calls * 1.1) + 50);
    // Once drained, no more retries: another 300 calls make 300 attempts (no success refills it).
    const before = a.calls;
    for (let i = 0; i < calls; i += 10) {
      await Promise.all(Array.from({ length: 10 }, (_, j) => settle(ch.unary(echo, { text: `t${i + j}` }))));
    }
    expect(a.calls - before).toBeLessThanOrEqual(Math.ceil(calls * 1.1));
  });

  it('honours server pushback: "do not retry" stops, a delay is waited', async () => {
    const [a, b] = [await backend(), await backend()];
    a.failWith = new RpcError(Status.UNAVAILABLE, 'go away', { [PUSHBACK_KEY]: 'stop' });
    b.failWith = a.failWith;
    const ch = channel(`static:///${a.address},${b.address}`, { methodConfig: idempotentEcho, outlierDetection: false });
    const r = await settle(ch.unary(echo, { text: 'p' }));
    expect(r.ok).toBe(false);
    expect(a.calls + b.calls).toBe(1);
  });

  it('one deadline covers all attempts', async () => {
    const a = await backend();
    a.failWith = new RpcError(Status.UNAVAILABLE, 'slow down', { [PUSHBACK_KEY]: '10000' });
    const ch = channel(a.address, { methodConfig: idempotentEcho, outlierDetection: false });
    const r = await settle(ch.unary(echo, { text: 'd' }, { timeoutMs: 300 }));
    // The pushed-back delay would outlive the deadline: no retry, the server's status comes back.
    expect(r.ok === false && r.error.code).toBe(Status.UNAVAILABLE);
    expect(a.calls).toBe(1);
  });
});

describe('hedging', () => {
  it('sends a backup attempt after hedgingDelayMs; the first reply wins and the other is cancelled', async () => {
    const [slow, fast] = [await backend(), await backend()];
    const ch = channel(`static:///${slow.address},${fast.address}`, {
      balancer: 'round_robin',
      methodConfig: [{ name: [{ service: SERVICE }], idempotent: true, hedgingPolicy: { maxAttempts: 2, hedgingDelayMs: 30 } }],
    });
    await ch.waitForReady(5000);
    // round_robin over [slow, fast]: the first call's first attempt goes to `slow`.
    slow.delayMs = 3000;
    const reply = await ch.unary(echo, { text: 'h1' }, { timeoutMs: 10_000 });
    expect(reply.text).toBe('h1');
    expect(slow.calls).toBe(1);
    expect(fast.calls).toBe(1);
    await until(() => slow.cancelled === 1, 'the losing attempt to be cancelled on the server');
  });

  it('is not applied to methods that are not idempotent', async () => {
    const a = await backend();
    const ch = channel(a.address, { methodConfig: [{ name: [{ service: SERVICE }], hedgingPolicy: { maxAttempts: 3, hedgingDelayMs: 0 } }] });
    await ch.unary(echo, { text: 'n', delayMs: 50 });
    expect(a.calls).toBe(1);
  });
});

describe('balancing and zones', () => {
  it('prefers instances in the caller zone and spills over when it has none healthy', async () => {
    const [a1, a2, b1] = [await backend(), await backend(), await backend()];
    registerResolver('zonetest', (_t, service) => ({
      start: (l) =>
        l.onInstances([
          { service, address: a1.address, zone: 'a', labels: {}, weight: 1 },
          { service, address: a2.address, zone: 'a', labels: {}, weight: 1 },
          { service, address: b1.address, zone: 'b', labels: {}, weight: 1 },
        ]),
      close: () => {},
    }));
    const ch = channel('zonetest:///', { zone: 'a', methodConfig: idempotentEcho });
    await until(() => ch.instances(SERVICE).filter((i) => i.ready).length === 3, 'three ready instances');
    for (let i = 0; i < 30; i++) await ch.unary(echo, { text: `z${i}` });
    expect(b1.calls).toBe(0);
    expect(a1.calls + a2.calls).toBe(30);
    await Promise.all([a1.server.close({ graceMs: 100 }), a2.server.close({ graceMs: 100 })]);
    for (let i = 0; i < 10; i++) await ch.unary(echo, { text: `s${i}` });
    expect(b1.calls).toBe(10);
  });

  it('consistent_hash sends equal keys to the same instance', async () => {
    const bs = [await backend(), await backend(), await backend()];
    const ch = channel(`static:///${bs.map((b) => b.address).join(',')}`, { balancer: 'consistent_hash' });
    await until(() => ch.instances(SERVICE).filter((i) => i.ready).length === 3, 'three ready instances');
    for (const key of ['alice', 'bob', 'carol', 'dave']) {
      const before = bs.map((b) => b.calls);
      for (let i = 0; i < 5; i++) await ch.unary(echo, { text: key }, { hashKey: key });
      const delta = bs.map((b, i) => b.calls - before[i]!);
      expect(delta.sort()).toEqual([0, 0, 5]);
    }
  });

  it('rejects an unknown balancer name', () => {
    expect(() => new Channel('127.0.0.1:1', { balancer: 'nope' as never })).toThrow(/unknown balancer 'nope'/);
  });
});

describe('connection health', () => {
  it('keepalive PINGs close a connection whose peer stopped answering; the call fails UNAVAILABLE', async () => {
    // A peer that accepts and then never says anything (like a frozen or partitioned host).
    const sockets: Socket[] = [];
    const raw = createNetServer((s) => sockets.push(s));
    rawServers.push(raw);
    await new Promise<void>((r) => raw.listen(0, '127.0.0.1', r));
    const port = (raw.address() as { port: number }).port;
    const ch = channel(`127.0.0.1:${port}`, { keepalive: { intervalMs: 50, timeoutMs: 100 }, retryPolicy: false });
    const r = await settle(ch.unary(echo, { text: 'k' }, { timeoutMs: 20_000 }));
    for (const s of sockets) s.destroy();
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.error.code).toBe(Status.UNAVAILABLE);
      expect(r.error.message).toMatch(/keepalive: no PONG/);
    }
  });

  it('ejects an instance whose calls keep failing, then probes it before it returns', async () => {
    const [bad, g1, g2] = [await backend(), await backend(), await backend()];
    bad.failWith = new RpcError(Status.INTERNAL, 'broken');
    const ch = channel(`static:///${bad.address},${g1.address},${g2.address}`, {
      balancer: 'round_robin',
      retryPolicy: false,
      outlierDetection: { consecutiveFailures: 3, baseEjectionMs: 200 },
    });
    await until(() => ch.instances(SERVICE).filter((i) => i.ready).length === 3, 'three ready instances');
    for (let i = 0; i < 12; i++) await settle(ch.unary(echo, { text: `o${i}` }));
    expect(ch.instances(SERVICE).find((i) => i.address === bad.address)?.ejected).toBe(true);
    const badCalls = bad.calls;
    for (let i = 0; i < 10; i++) await ch.unary(echo, { text: `g${i}` });
    expect(bad.calls).toBe(badCalls); // skipped while ejected
    bad.failWith = undefined;
    // The ejection ends after 200 ms; a health probe (svrkit.Health/Check, served) brings it back.
    await until(() => ch.instances(SERVICE).find((i) => i.address === bad.address)?.ejected === false, 'the instance to return after its probe');
    for (let i = 0; i < 9; i++) await ch.unary(echo, { text: `b${i}` });
    expect(bad.calls).toBeGreaterThan(badCalls);
  });

  it('fails fast with UNAVAILABLE, marked not processed, when every instance is down', async () => {
    const [a, b] = [await backend(), await backend()];
    const ch = channel(`static:///${a.address},${b.address}`, { methodConfig: idempotentEcho });
    await ch.unary(echo, { text: 'up' });
    await Promise.all([a.server.close({ graceMs: 100 }), b.server.close({ graceMs: 100 })]);
    started.length = 0;
    // A 60 s deadline: the call must not wait for it (the test times out at 5 s).
    const r = await settle(ch.unary(echo, { text: 'down' }, { timeoutMs: 60_000 }));
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.error.code).toBe(Status.UNAVAILABLE);
      expect(r.error.notProcessed).toBe(true);
    }
  });
});
