/**
 * The config center end to end on a three-replica PaxosKV cluster in this process (loopback
 * sockets): ConfigAdmin writes, ConfigClients follow over the Watch stream. Atomic promote under
 * 200 watchers, history, and the cache file when no replica answers.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigAdmin, ConfigClient, PaxosKVClient } from '../../index.js';
import { startInProcessCluster, type InProcessCluster } from '../support/kv-cluster.js';
import { freePort } from '../support/kv-processes.js';
import { grayWatchers, expectNoneWentBack } from '../support/gray-watchers.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BASE = path.join(ROOT, 'test', '.tmp', `config-${process.pid}`);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const set = (o: Record<string, string>) => ({ set: o, delete: [] as string[] });

async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  for (let t = 0; t < ms && !cond(); t += 20) await sleep(20);
}

describe('config center on PaxosKV', () => {
  let cluster: InProcessCluster;
  let members: Map<number, string>;
  let kv: PaxosKVClient;
  let admin: ConfigAdmin;

  beforeAll(async () => {
    cluster = await startInProcessCluster(BASE);
    members = cluster.members;
    kv = new PaxosKVClient({ peers: cluster.addresses });
    admin = new ConfigAdmin(kv, { by: 'test' });
  });
  afterAll(async () => {
    kv.close();
    await cluster.close();
    await fsp.rm(BASE, { recursive: true, force: true });
  });

  it('publish, gray by zone and by user percentage, widen, promote, rollback, abandon; history lists every operation', async () => {
    const target = [...members.values()];
    const inZone = new ConfigClient({ target, namespace: 'shop.checkout', instance: { zone: 'z1' } });
    const outZone = new ConfigClient({ target, namespace: 'shop.checkout', instance: { zone: 'z2' } });
    try {
      await admin.publish('shop.checkout', set({ limit: '10', color: 'red' }));
      await Promise.all([inZone.ready(), outZone.ready()]);
      await until(() => inZone.head.opSeq === 1 && outZone.head.opSeq === 1);
      expect(inZone.get('limit')).toBe('10');
      await admin.gray('shop.checkout', set({ limit: '50' }), [{ kind: 'zone', zone: 'z1' }]);
      await until(() => inZone.head.opSeq === 2 && outZone.head.opSeq === 2);
      expect([inZone.get('limit'), outZone.get('limit')]).toEqual(['50', '10']);
      expect(inZone.snapshot()).toMatchObject({ release: 1, gray: true });
      // A percentage of users: the reader's user decides (here given; in a handler, the call's x-user-id).
      await admin.gray('shop.checkout', { set: {}, delete: [] }, [{ kind: 'percent', percent: 30 }]);
      await until(() => outZone.head.opSeq === 3);
      const users = Array.from({ length: 1000 }, (_, i) => `user${i}`);
      const at30 = users.filter((u) => outZone.get('limit', { userId: u }) === '50');
      expect(at30.length).toBeGreaterThan(250);
      expect(at30.length).toBeLessThan(350);
      await admin.gray('shop.checkout', { set: {}, delete: [] }, [{ kind: 'percent', percent: 60 }]);
      await until(() => outZone.head.opSeq === 4);
      for (const u of at30) expect(outZone.get('limit', { userId: u })).toBe('50'); // they stay in
      await admin.promote('shop.checkout');
      await until(() => inZone.head.opSeq === 5 && outZone.head.opSeq === 5);
      expect([inZone.get('limit'), outZone.get('limit', { userId: 'anyone' })]).toEqual(['50', '50']);
      expect(outZone.snapshot()).toMatchObject({ release: 2, gray: false });
      await admin.rollback('shop.checkout', 1);
      await until(() => outZone.head.opSeq === 6);
      expect(outZone.snapshot()).toMatchObject({ release: 3, values: { limit: '10', color: 'red' } });
      await admin.gray('shop.checkout', set({ color: 'green' }), [{ kind: 'users', users: ['u1'] }]);
      await admin.abandon('shop.checkout');
      const history = await admin.history('shop.checkout');
      expect(history.map((o) => [o.seq, o.op, o.release ?? null, o.by])).toEqual([
        [1, 'publish', 1, 'test'],
        [2, 'gray', null, 'test'],
        [3, 'gray', null, 'test'],
        [4, 'gray', null, 'test'],
        [5, 'promote', 2, 'test'],
        [6, 'rollback', 3, 'test'],
        [7, 'gray', null, 'test'],
        [8, 'abandon', null, 'test'],
      ]);
      expect(await admin.release('shop.checkout', 2)).toEqual({ limit: '50', color: 'red' });
      await expect(admin.promote('shop.checkout')).rejects.toThrow(/no gray release to promote/);
      await expect(admin.rollback('shop.checkout', 9)).rejects.toThrow(/roll back to 1..2/);
    } finally {
      await inZone.close();
      await outZone.close();
    }
  });

  it('200 watchers, half in the gray, through publishes and promotes: release numbers never go down, and no gray reader sees a value from before the gray after its promote', async () => {
    const ns = 'atomic.promote';
    await admin.publish(ns, set({ v: 'r1', k: 'base' }));
    const target = [...members.values()];
    const shared = [0, 1, 2].map((i) => new PaxosKVClient({ peers: [...target.slice(i), ...target.slice(0, i)] }));
    const watchers = grayWatchers(200, (i, canary) => new ConfigClient({ target: shared[i % 3]!, namespace: ns, instance: { labels: { ring: canary ? 'canary' : 'main' } } }));
    try {
      await Promise.all(watchers.map((w) => w.c.ready()));
      // Rounds: gray v=gN for the canary ring, a full publish of other keys meanwhile, promote.
      for (let round = 2; round <= 6; round++) {
        await admin.gray(ns, set({ v: `g${round}` }), [{ kind: 'label', key: 'ring', value: 'canary' }]);
        await admin.publish(ns, set({ k: `base${round}` }));
        await admin.promote(ns);
      }
      const finalSeq = (await admin.head(ns)).head.opSeq;
      await until(() => watchers.every((w) => w.c.head.opSeq === finalSeq), 20_000);
      for (const w of watchers) expect(w.c.head.opSeq).toBe(finalSeq);
      // Once a canary reader saw gray gN, it never again sees an older v.
      expectNoneWentBack(watchers);
    } finally {
      for (const w of watchers) await w.c.close();
      for (const c of shared) c.close();
    }
  }, 60_000);

  it('a namespace never published is served empty at once; a listener that throws does not stop the client', async () => {
    const ns = 'later';
    const c = new ConfigClient({ target: [...members.values()], namespace: ns });
    try {
      await c.ready();
      expect([c.source, c.snapshot().release, c.get('a')]).toEqual(['paxoskv', 0, undefined]);
      const warnings: string[] = [];
      const onWarning = (w: Error) => warnings.push(w.message);
      process.on('warning', onWarning);
      c.onChange(() => {
        throw new Error('listener bug');
      });
      const seen: number[] = [];
      c.onChange(({ head }) => seen.push(head.opSeq));
      await admin.publish(ns, set({ a: '1' }));
      await admin.publish(ns, set({ a: '2' }));
      await until(() => c.get('a') === '2');
      process.off('warning', onWarning);
      expect(seen).toEqual([1, 2]);
      expect(warnings.some((w) => /onChange listener threw: Error: listener bug/.test(w))).toBe(true);
    } finally {
      await c.close();
    }
  });

  it('serves its cache file when no replica answers at start, and says so', async () => {
    const ns = 'cached';
    const cacheFile = path.join(BASE, 'cache', `${ns}.json`);
    await admin.publish(ns, set({ mode: 'fast' }));
    const first = new ConfigClient({ target: [...members.values()], namespace: ns, cacheFile });
    await first.ready();
    await until(() => first.get('mode') === 'fast');
    expect(first.source).toBe('paxoskv');
    await first.close();
    // Every replica down: a new client starts from the cache.
    const dead = [await freePort(), await freePort()].map((p) => `127.0.0.1:${p}`);
    const second = new ConfigClient({ target: dead, namespace: ns, cacheFile, readyTimeoutMs: 300 });
    try {
      await second.ready();
      expect(second.source).toBe('cache');
      expect(second.get('mode')).toBe('fast');
      expect(second.snapshot().release).toBe(1);
    } finally {
      await second.close();
    }
  });
});
