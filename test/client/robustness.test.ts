/**
 * Regressions from a review of the channel: ejection that must end, keepalive that must not kill
 * busy or briefly stalled connections, no redial loop against a peer that accepts and closes, bad
 * registry entries that must not hide good ones, calls that must settle after close(), probes
 * that stop with their instance, and connections that must not outlive a closed channel.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server as NetServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { normalizeInstance } from '../../framework/discovery/instance.js';
import { Connection } from '../../framework/transport/connection.js';
import { FrameKind } from '../../framework/wire/frame.js';
import { resolveMethodConfig } from '../../framework/client/method-config.js';
import { normalizeRetryPolicy } from '../../framework/client/retry.js';
import { Channel, registerResolver, RpcError, Server, Status, type Instance, type ResolverListener, type ServerInterceptor } from '../../framework/index.js';
import { backend, channel, closeAll, echo, SERVICE, settle, until } from '../support/backends.js';
import { Probe } from '../support/probe.js';

const rawServers: NetServer[] = [];
const dir = mkdtempSync(path.join(tmpdir(), 'svrkit-robust-'));

afterEach(async () => {
  await closeAll();
  for (const s of rawServers.splice(0)) s.close();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Resolves to 'pending' if `p` has not settled within `ms`. */
async function within(p: Promise<unknown>, ms: number): Promise<string> {
  return Promise.race([p.then(() => 'resolved', (e: Error) => `rejected: ${e.message}`), sleep(ms).then(() => 'pending')]);
}

function serverConnections(s: Server): number {
  return (s as unknown as { connections: Set<unknown> }).connections.size;
}

describe('outlier ejection', () => {
  it('an instance that recovers always comes back, however often it is ejected', async () => {
    const [bad, good] = [await backend(), await backend()];
    const ch = channel(`static:///${bad.address},${good.address}`, {
      balancer: 'round_robin',
      retryPolicy: false,
      outlierDetection: { consecutiveFailures: 1, baseEjectionMs: 20, maxEjectionMs: 40 },
    });
    await until(() => ch.instances(SERVICE).filter((i) => i.ready).length === 2, 'two ready instances');
    const ejected = (): boolean => ch.instances(SERVICE).find((i) => i.address === bad.address)!.ejected;
    for (let round = 0; round < 30; round++) {
      bad.failWith = new RpcError(Status.INTERNAL, 'broken');
      while (!ejected()) await settle(ch.unary(echo, { text: 'x' }));
      bad.failWith = undefined;
      await until(() => !ejected(), `the instance to return in round ${round}`, 3000);
    }
  });

  it('stops probing an instance once it has left the pool', async () => {
    const good = await backend();
    const probes: number[] = [];
    const failing: ServerInterceptor = () => async (_req, call) => {
      if (call.method === 'svrkit.Health/Check') probes.push(Date.now());
      throw new RpcError(Status.INTERNAL, 'broken');
    };
    const bad = new Server({ interceptors: [failing] }).addService(new Probe());
    await bad.listen(0);
    try {
      let listener: ResolverListener | undefined;
      const inst = (address: string): Instance => ({ service: SERVICE, address, zone: '', labels: {}, weight: 1 });
      registerResolver('leaving', () => ({ start: (l) => { listener = l; l.onInstances([inst(bad.address), inst(good.address)]); }, close: () => {} }));
      const ch = channel('leaving:///', { balancer: 'round_robin', retryPolicy: false, outlierDetection: { consecutiveFailures: 2, baseEjectionMs: 30, maxEjectionMs: 60 } });
      await until(() => ch.instances(SERVICE).filter((i) => i.ready).length === 2, 'two ready instances');
      for (let i = 0; i < 6; i++) await settle(ch.unary(echo, { text: `o${i}` }));
      await until(() => probes.length > 0, 'a probe of the ejected instance');
      listener!.onInstances([inst(good.address)]);
      await sleep(100);
      const after = probes.length;
      await sleep(600);
      expect(probes.length).toBe(after);
    } finally {
      await bad.close({ graceMs: 10 });
    }
  });
});

describe('keepalive', () => {
  /** A TCP proxy whose server->client direction carries about 160 KB/s (a slow link). */
  async function slowProxy(target: string): Promise<string> {
    const [host, port] = target.split(':');
    const proxy = createServer((c) => {
      const s = connect(Number(port), host!);
      c.pipe(s);
      const queue: Buffer[] = [];
      let timer: NodeJS.Timeout | undefined;
      const pump = (): void => {
        let budget = 8 * 1024;
        while (budget > 0 && queue.length > 0) {
          const b = queue[0]!;
          if (b.length <= budget) {
            c.write(b);
            budget -= b.length;
            queue.shift();
          } else {
            c.write(b.subarray(0, budget));
            queue[0] = b.subarray(budget);
            budget = 0;
          }
        }
        timer = queue.length > 0 ? setTimeout(pump, 50) : undefined;
      };
      s.on('data', (d: Buffer) => {
        queue.push(d);
        timer ??= setTimeout(pump, 50);
      });
      const end = (): void => {
        c.destroy();
        s.destroy();
        clearTimeout(timer);
      };
      c.on('close', end);
      s.on('close', end);
      c.on('error', () => {});
      s.on('error', () => {});
    });
    rawServers.push(proxy);
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    return `127.0.0.1:${(proxy.address() as { port: number }).port}`;
  }

  it('does not close a connection that is busy receiving a large reply (the PONG waits behind it)', async () => {
    const a = await backend();
    const ch = channel(await slowProxy(a.address), { keepalive: { intervalMs: 200, timeoutMs: 300 }, retryPolicy: false });
    const r = await settle(ch.unary(echo, { text: 'big', replyBytes: 400_000 }, { timeoutMs: 30_000 }));
    expect(r.ok ? 'ok' : r.error.message).toBe('ok');
  });

  it('does not close a healthy connection after a client event-loop stall (the PONG is read first)', async () => {
    const a = await backend();
    // Stall this event loop for 300 ms right after the first keepalive PING is queued: the PONG
    // timer (100 ms) then fires before the PONG, already in the socket, has been read.
    let stalled = false;
    const send = Connection.prototype.send;
    Connection.prototype.send = function (this: Connection, kind: number, callId: number, h?: Uint8Array, b?: Uint8Array): void {
      send.call(this, kind, callId, h, b);
      if (kind === FrameKind.PING && callId === 0xfffffffe && !stalled) {
        stalled = true;
        setImmediate(() => {
          const end = Date.now() + 300;
          while (Date.now() < end) {
            // a long GC pause or a CPU-heavy handler
          }
        });
      }
    } as typeof send;
    try {
      const ch = channel(a.address, { keepalive: { intervalMs: 50, timeoutMs: 100 }, retryPolicy: false });
      const r = await settle(ch.unary(echo, { text: 'stall', delayMs: 1000 }, { timeoutMs: 10_000 }));
      expect(stalled).toBe(true);
      expect(r.ok ? 'ok' : r.error.message).toBe('ok');
    } finally {
      Connection.prototype.send = send;
    }
  });
});

describe('connections', () => {
  it('backs off from a peer that accepts and closes at once, instead of redialling in a loop', async () => {
    let accepted = 0;
    const raw = createServer((s) => {
      accepted++;
      s.destroy();
    });
    rawServers.push(raw);
    await new Promise<void>((r) => raw.listen(0, '127.0.0.1', r));
    const ch = channel(`127.0.0.1:${(raw.address() as { port: number }).port}`, { retryPolicy: false });
    await settle(ch.unary(echo, { text: 'x' }, { timeoutMs: 200 }));
    const before = accepted;
    await sleep(1000);
    // Backoff from 100 ms, x1.6: about 5 attempts a second at first, fewer after.
    expect(accepted - before).toBeLessThan(15);
  });

  it('a call on a connection the peer closes without a frame (a TLS server, a plain client) fails saying so', async () => {
    // What a TLS server does with a plain client's request: reads it, and closes without a word.
    const raw = createServer((s) => s.once('data', () => s.destroy()));
    rawServers.push(raw);
    await new Promise<void>((r) => raw.listen(0, '127.0.0.1', r));
    const address = `127.0.0.1:${(raw.address() as { port: number }).port}`;
    const ch = channel(address, { retryPolicy: false });
    const r = await settle(ch.unary(echo, { text: 'x' }, { timeoutMs: 2000 }));
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.error.code).toBe(Status.UNAVAILABLE);
    expect(r.error.message).toMatch(new RegExp(`connection to ${address} closed before the server sent anything \\(does the server expect TLS\\?`));
  });

  it('instances() after close() returns [] and opens nothing', async () => {
    const a = await backend();
    const ch = channel(a.address);
    ch.close();
    expect(ch.instances('other.Service')).toEqual([]);
    await sleep(200);
    expect(serverConnections(a.server)).toBe(0);
  });

  it('a draining connection closes even when its last reply cannot be decoded', async () => {
    const a = await backend();
    const badEcho = { ...echo, responseType: { ...echo.responseType, decode: () => { throw new Error('schema mismatch'); } } };
    const ch = channel(a.address, { retryPolicy: false });
    await ch.unary(echo, { text: 'warm' });
    const p = settle(ch.unary(badEcho as typeof echo, { text: 'x', delayMs: 200 }));
    await sleep(50);
    ch.close();
    const r = await p;
    expect(r.ok === false && r.error.code).toBe(Status.INTERNAL);
    await until(() => serverConnections(a.server) === 0, 'the connection to close');
  });
});

describe('settling after close()', () => {
  it('a hedged call whose service had not resolved yet fails at close() instead of hanging', async () => {
    registerResolver('neverresolves', () => ({ start: () => {}, close: () => {} }));
    const methodConfig = [{ name: [{ service: SERVICE }], idempotent: true, hedgingPolicy: { maxAttempts: 3, hedgingDelayMs: 1000 } }];
    const ch = channel('neverresolves:///', { methodConfig });
    const p = ch.unary(echo, { text: 'h' });
    await sleep(20);
    ch.close();
    expect(await within(p, 2000)).toMatch(/^rejected: .*closed/);
    const plain = channel('neverresolves:///');
    const q = plain.unary(echo, { text: 'r' });
    await sleep(20);
    plain.close();
    expect(await within(q, 2000)).toMatch(/^rejected: .*closed/);
  });
});

describe('bad instances from a registry', () => {
  it('an entry with a port above 65535 is refused by the registry; the good instance serves', async () => {
    const good = await backend();
    expect(() => normalizeInstance({ service: SERVICE, address: '127.0.0.1:70000' })).toThrow(/port 0-65535/);
    expect(() => normalizeInstance({ service: SERVICE, address: '127.0.0.1:7000', weight: 1e6 })).toThrow(/weight/);
    // A custom resolver that reports a bad address anyway: the good ones still serve.
    registerResolver('badport', (_t, service) => ({
      start: (l) => l.onInstances([
        { service, address: '127.0.0.1:70000', zone: '', labels: {}, weight: 1 },
        { service, address: good.address, zone: '', labels: {}, weight: 1e6 },
      ]),
      close: () => {},
    }));
    const ch = channel('badport:///', { retryPolicy: false, balancer: 'consistent_hash' });
    const r = await settle(ch.unary(echo, { text: 'x' }, { timeoutMs: 3000, hashKey: 'k' }));
    expect(r.ok ? 'ok' : r.error.message).toBe('ok');
    expect(ch.instances(SERVICE).map((i) => i.address)).toEqual([good.address]);
  });

  it('a registry file with a bad port is reported as malformed, naming the entry', async () => {
    const file = path.join(dir, 'bad-port.json');
    writeFileSync(file, JSON.stringify([{ service: SERVICE, address: '127.0.0.1:7000' }, { service: SERVICE, address: '127.0.0.1:70000' }]));
    const ch = new Channel(`file://${file}`, { retryPolicy: false });
    try {
      const r = await settle(ch.unary(echo, { text: 'x' }, { timeoutMs: 3000 }));
      expect(r.ok === false && r.error.code).toBe(Status.UNAVAILABLE);
      expect(r.ok === false && r.error.message).toMatch(/entry \[1\].*port 0-65535/);
    } finally {
      ch.close();
    }
  });
});

describe('method config', () => {
  it('the most specific entry that sets a retry or hedging policy decides both', () => {
    const hedgeService = { name: [{ service: SERVICE }], idempotent: true, hedgingPolicy: { maxAttempts: 3, hedgingDelayMs: 5 } };
    const off = resolveMethodConfig(echo, [hedgeService, { name: [{ service: SERVICE, method: 'Echo' }], retryPolicy: false }], normalizeRetryPolicy(undefined));
    expect(off).toMatchObject({ hedging: undefined, retry: undefined });
    const five = resolveMethodConfig(echo, [hedgeService, { name: [{ service: SERVICE, method: 'Echo' }], retryPolicy: { maxAttempts: 5 } }], normalizeRetryPolicy(undefined));
    expect(five).toMatchObject({ hedging: undefined, retry: { maxAttempts: 5 } });
  });
});
