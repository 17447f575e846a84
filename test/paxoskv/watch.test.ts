/**
 * PaxosKV's watch and prefix listing, on a three-replica cluster in this process over loopback
 * sockets: every version in order, on every replica, across a replica closing; gaps where a
 * replica cannot send a version; the listing's prefix, paging and deleted keys.
 */
import { promises as fsp } from 'node:fs';
import { connect, createServer, type Server as NetServer, type Socket } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PaxosKVClient, Status, type KvWatchEvent } from '../../index.js';
import { rpcFailure } from '../support/rpc-failure.js';
import { encodeConfiguration } from '../../services/paxoskv/core/membership.js';
import { CONFIG_KEY } from '../../services/paxoskv/core/types.js';
import { PaxosKVClient as PaxosKVStub } from '../../services/paxoskv/gen/svrkit/paxoskv/paxoskv.js';
import { PaxosKVReplica } from '../../services/paxoskv/replica-server.js';
import { startInProcessCluster, type InProcessCluster } from '../support/kv-cluster.js';
import { freePort } from '../support/kv-processes.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BASE = path.join(ROOT, 'test', '.tmp', `paxoskv-watch-${process.pid}`);
const text = (s: string) => new TextEncoder().encode(s);
const str = (b: Uint8Array | null) => (b === null ? null : new TextDecoder().decode(b));
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A TCP proxy to `port` on 127.0.0.1 that can cut the link: while cut, it refuses and drops every connection. */
async function cuttableProxy(port: number): Promise<{ address: string; cut: (on: boolean) => void; close: () => Promise<void> }> {
  let cut = false;
  const sockets = new Set<Socket>();
  const server: NetServer = createServer((client) => {
    if (cut) return client.destroy();
    const upstream = connect(port, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => {
        sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    address: `127.0.0.1:${(server.address() as { port: number }).port}`,
    cut: (on) => {
      cut = on;
      if (on) for (const s of sockets) s.destroy();
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

/** Collects a watch's events in the background until `stop()`. */
function collect(events: AsyncIterable<KvWatchEvent>): { got: KvWatchEvent[]; until: (n: number, ms?: number) => Promise<void> } {
  const got: KvWatchEvent[] = [];
  void (async () => {
    for await (const e of events) got.push(e);
  })().catch(() => undefined);
  return {
    got,
    until: async (n, ms = 10_000) => {
      for (let t = 0; t < ms && got.length < n; t += 20) await sleep(20);
    },
  };
}

describe('PaxosKV watch and list', () => {
  let cluster: InProcessCluster;
  let members: Map<number, string>;
  let replicas: Map<number, PaxosKVReplica>;
  let kv: PaxosKVClient;
  const start = (id: number) => cluster.start(id);

  beforeAll(async () => {
    cluster = await startInProcessCluster(BASE, 3, { watchCheckMs: 200 });
    members = cluster.members;
    replicas = cluster.replicas;
    kv = new PaxosKVClient({ peers: cluster.addresses, attemptTimeoutMs: 500 });
  });
  afterAll(async () => {
    kv.close();
    await cluster.close();
    await fsp.rm(BASE, { recursive: true, force: true });
  });

  it('yields every version in order, the current one first, a delete as null; the abort signal ends it', async () => {
    await kv.put('w1', text('a'));
    const ac = new AbortController();
    const w = collect(kv.watch('w1', { signal: ac.signal }));
    await w.until(1);
    expect(w.got.map((e) => [e.version, str(e.value), e.gap])).toEqual([[1n, 'a', false]]);
    // Writes through every replica, one after another.
    const writers = [1, 2, 3].map((id) => new PaxosKVClient({ peers: [members.get(id)!] }));
    try {
      for (let i = 0; i < 30; i++) await writers[i % 3]!.put('w1', text(`v${i}`));
      await writers[0]!.delete('w1');
    } finally {
      for (const c of writers) c.close();
    }
    await w.until(32);
    ac.abort();
    expect(w.got.map((e) => e.version)).toEqual(Array.from({ length: 32 }, (_, i) => BigInt(i + 1)));
    expect(w.got.slice(1, 31).map((e) => str(e.value))).toEqual(Array.from({ length: 30 }, (_, i) => `v${i}`));
    expect(w.got[31]).toEqual({ version: 32n, value: null, gap: false });
    expect(w.got.some((e) => e.gap)).toBe(false);
  });

  it('a change reaches the watchers of every replica, whichever replica decided it', async () => {
    const ac = new AbortController();
    const streams = [1, 2, 3].map((id) => {
      const stub = new PaxosKVStub(members.get(id)!);
      const got: bigint[] = [];
      void (async () => {
        for await (const e of stub.watch({ key: 'w2', fromVersion: 0n }, { signal: ac.signal })) got.push(e.version);
      })().catch(() => undefined);
      return { stub, got };
    });
    try {
      await sleep(100);
      const only3 = new PaxosKVClient({ peers: [members.get(3)!] });
      try {
        for (let i = 0; i < 5; i++) await only3.put('w2', text(`x${i}`));
      } finally {
        only3.close();
      }
      for (let t = 0; t < 5000 && streams.some((s) => s.got.at(-1) !== 5n); t += 20) await sleep(20);
      for (const s of streams) expect(s.got.at(-1)).toBe(5n);
      // Each replica's stream is in order, without repeats.
      for (const s of streams) expect([...s.got].sort((a, b) => (a < b ? -1 : 1))).toEqual([...new Set(s.got)]);
    } finally {
      ac.abort();
      for (const s of streams) s.stub.close();
    }
  });

  it('reports a gap when the watcher starts behind the current version', async () => {
    for (let i = 0; i < 5; i++) await kv.put('w3', text(`g${i}`));
    const ac = new AbortController();
    const w = collect(kv.watch('w3', { fromVersion: 2n, signal: ac.signal }));
    await w.until(1);
    ac.abort();
    expect([w.got[0]!.version, str(w.got[0]!.value), w.got[0]!.gap]).toEqual([5n, 'g4', true]);
    // Up to date already: nothing is sent until the next change.
    const ac2 = new AbortController();
    const w2 = collect(kv.watch('w3', { fromVersion: 5n, signal: ac2.signal }));
    await sleep(300);
    expect(w2.got).toEqual([]);
    await kv.put('w3', text('g5'));
    await w2.until(1);
    ac2.abort();
    expect(w2.got.map((e) => [e.version, str(e.value), e.gap])).toEqual([[6n, 'g5', false]]);
  });

  it('resumes on another replica when its replica closes, without repeating or losing a version', async () => {
    const ac = new AbortController();
    // The watcher starts on replica 1 (the first peer); writes go through replicas 2 and 3.
    const watcher = new PaxosKVClient({ peers: [members.get(1)!, members.get(2)!, members.get(3)!] });
    const writer = new PaxosKVClient({ peers: [members.get(2)!, members.get(3)!] });
    try {
      const w = collect(watcher.watch('w4', { signal: ac.signal }));
      await writer.put('w4', text('before'));
      await w.until(1);
      await replicas.get(1)!.close();
      for (let i = 0; i < 5; i++) await writer.put('w4', text(`after${i}`));
      await w.until(6);
      expect(w.got.map((e) => e.version)).toEqual([1n, 2n, 3n, 4n, 5n, 6n]);
      expect(str(w.got.at(-1)!.value)).toBe('after4');
    } finally {
      ac.abort();
      watcher.close();
      writer.close();
      await start(1);
    }
  });

  it('150 watches through one client (one connection to a replica) all get their changes', async () => {
    const ac = new AbortController();
    const one = new PaxosKVClient({ peers: [members.get(2)!] });
    try {
      const ws = Array.from({ length: 150 }, (_, i) => collect(one.watch(`many${i % 50}`, { signal: ac.signal })));
      await sleep(200);
      for (let k = 0; k < 50; k++) await kv.put(`many${k}`, text('x'));
      for (let t = 0; t < 10_000 && ws.some((w) => w.got.length === 0); t += 20) await sleep(20);
      expect(ws.filter((w) => w.got.length === 0).length).toBe(0);
    } finally {
      ac.abort();
      one.close();
    }
  });

  it('3,000 watches of one key starting together share their first reads: the replica queues a few reads, not 3,000, and each gets the current version', async () => {
    await kv.put('burst', text('now'));
    const replica = replicas.get(3)!;
    const ac = new AbortController();
    const one = new PaxosKVClient({ peers: [members.get(3)!] });
    let mostPending = 0;
    const sampler = setInterval(() => (mostPending = Math.max(mostPending, Number(replica.status().pendingOperations))), 1);
    try {
      const ws = Array.from({ length: 3000 }, () => collect(one.watch('burst', { signal: ac.signal })));
      for (let t = 0; t < 20_000 && ws.some((w) => w.got.length === 0); t += 20) await sleep(20);
      expect(ws.filter((w) => w.got.length === 0).length).toBe(0);
      expect(ws.every((w) => w.got[0]!.version === 1n && str(w.got[0]!.value) === 'now')).toBe(true);
      // One read for the first watches, one more for those that started while it ran (and perhaps
      // the periodic re-read of a quiet watched key, every 200 ms here); 3,000 without sharing.
      expect(mostPending).toBeLessThanOrEqual(3);
    } finally {
      clearInterval(sampler);
      ac.abort();
      one.close();
    }
  });

  it('lists chosen values by prefix in key order, pages with after and limit, and leaves deleted keys out', async () => {
    for (const k of ['list/a', 'list/b', 'list/c', 'list/d', 'lisu', 'list']) await kv.put(k, text(k));
    await kv.delete('list/c');
    // Local reads: give the replica the writes' learns.
    await sleep(100);
    const all = await kv.list('list/');
    expect(all.items.map((i) => i.key)).toEqual(['list/a', 'list/b', 'list/d']);
    expect(all.items.map((i) => str(i.value))).toEqual(['list/a', 'list/b', 'list/d']);
    expect(all.items.every((i) => i.version === 1n)).toBe(true);
    expect(all.more).toBe(false);
    const page1 = await kv.list('list', { limit: 2 });
    expect(page1.items.map((i) => i.key)).toEqual(['list', 'list/a']);
    expect(page1.more).toBe(true);
    const page2 = await kv.list('list', { limit: 2, after: 'list/a' });
    expect(page2.items.map((i) => i.key)).toEqual(['list/b', 'list/d']);
    const page3 = await kv.list('list', { limit: 2, after: 'list/d' });
    expect(page3).toEqual({ items: [], more: false });
  });

  it('keeps the system keys (the membership configuration) out of reach: clients cannot name them, and list leaves them out', async () => {
    // The configuration key written as the replicas write it (the next epoch, same members).
    const r = await cluster.replicas.get(1)!.request(CONFIG_KEY, { kind: 'put', value: encodeConfiguration({ epoch: 2, voters: [1, 2, 3], learners: [] }), id: null }, Infinity);
    expect(r).toEqual({ ok: true, kind: 'write', version: 1 });
    await sleep(100);
    for (const id of [1, 2, 3]) expect(cluster.replicas.get(id)!.status().epoch, `replica ${id}`).toBe(2n);
    const everything = await kv.list('', { limit: 1000 });
    expect(everything.items.some((i) => i.key.startsWith('\u0000'))).toBe(false);
    for (const attempt of [() => kv.get(CONFIG_KEY), () => kv.put(CONFIG_KEY, text('x')), () => kv.list('\u0000')]) {
      const err = await rpcFailure(attempt());
      expect(err.code).toBe(Status.INVALID_ARGUMENT);
      expect(err.message).toMatch(/keys starting with NUL .* are the system's own/);
    }
    // Writes go on under the new epoch.
    expect(await kv.put('after-epoch', text('1'))).toBe(1n);
  });
});

describe('a watched replica that lost the learn of a change', () => {
  it('still sends it: watched keys are read again when they did not change for watchCheckMs', async () => {
    const dir = path.join(BASE, 'cut');
    const ports = [await freePort(), await freePort(), await freePort()];
    // Replicas 1 and 2 reach replica 3 through a proxy that can cut the link; replica 3 reaches them directly.
    const proxy = await cuttableProxy(ports[2]!);
    const real = new Map([1, 2, 3].map((id) => [id, `127.0.0.1:${ports[id - 1]}`] as [number, string]));
    const viaProxy = new Map(real);
    viaProxy.set(3, proxy.address);
    const rs = await Promise.all([1, 2, 3].map((id) => PaxosKVReplica.start({ id, members: id === 3 ? real : viaProxy, dataDir: path.join(dir, `r${id}`), watchCheckMs: 300 })));
    const ac = new AbortController();
    const writer = new PaxosKVClient({ peers: [real.get(1)!, real.get(2)!] });
    const three = new PaxosKVStub(real.get(3)!);
    try {
      await Promise.all(rs.map((r) => r.ready(10_000)));
      await writer.put('cut', text('one'));
      const got: bigint[] = [];
      void (async () => {
        for await (const e of three.watch({ key: 'cut', fromVersion: 0n }, { signal: ac.signal })) got.push(e.version);
      })().catch(() => undefined);
      for (let t = 0; t < 5000 && got.at(-1) !== 1n; t += 20) await sleep(20);
      expect(got).toEqual([1n]);
      // The link to replica 3 is cut: replicas 1 and 2 decide version 2, and their learn is lost.
      proxy.cut(true);
      await writer.put('cut', text('two'));
      // Replica 3's read of the watched key (over its own links to 1 and 2) finds version 2.
      for (let t = 0; t < 5000 && got.at(-1) !== 2n; t += 20) await sleep(20);
      expect(got).toEqual([1n, 2n]);
    } finally {
      ac.abort();
      writer.close();
      three.close();
      for (const r of rs) await r.close();
      await proxy.close();
    }
  });
});
