/**
 * `svrkit config` as real processes against three `svrkit kv serve` replicas on 127.0.0.1:
 * publish, gray by each rule kind, widen, get as different readers, promote, rollback, abandon,
 * history and watch; then atomic promote with 200 watchers in this process while a replica is
 * SIGKILLed during a promote.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigAdmin, ConfigClient, PaxosKVClient } from '../../index.js';
import { startProcessCluster, type ProcessCluster } from '../support/kv-cluster.js';
import { killStarted, runSvrkit as run, spawnSvrkit, stopProc, type Run } from '../support/kv-processes.js';
import { grayWatchers, expectNoneWentBack } from '../support/gray-watchers.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BASE = path.join(ROOT, 'test', '.tmp', `config-cli-${process.pid}`);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

afterAll(async () => {
  await killStarted();
  await fsp.rm(BASE, { recursive: true, force: true });
});

describe('svrkit config', () => {
  let cluster: ProcessCluster;
  let peers = '';
  let addresses: string[] = [];

  beforeAll(async () => {
    cluster = await startProcessCluster(BASE);
    peers = cluster.peers;
    addresses = cluster.addresses;
  });
  afterAll(async () => {
    await cluster.kill();
  });

  const config = (args: string[]): Promise<Run> => run(['config', ...args, '--peers', peers, '--by', 'cli-test']);
  const one = (r: Run): Record<string, unknown> => {
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    return JSON.parse(lines[0]!) as Record<string, unknown>;
  };

  it('publish, gray by each rule kind, widen, get as different readers, promote, rollback, abandon, history, watch', async () => {
    expect(one(await config(['publish', 'shop.checkout', 'limit=10', 'color=red']))).toMatchObject({ release: 1, values: { limit: '10', color: 'red' }, gray: null });
    const get = async (...reader: string[]) => one(await config(['get', 'shop.checkout', 'limit', ...reader]));
    const rules: Array<[string, string[], string[]]> = [
      ['label:version=2', ['--label', 'version=2'], ['--label', 'version=1']],
      ['zone:z1', ['--zone', 'z1'], ['--zone', 'z2']],
      ['caller:shop.Cart', ['--caller', 'shop.Cart'], ['--caller', 'shop.Order']],
      ['users:u1,u2', ['--user', 'u2'], ['--user', 'u3']],
    ];
    for (const [rule, inside, outside] of rules) {
      expect(one(await config(['gray', 'shop.checkout', 'limit=50', '--rule', rule]))).toMatchObject({ release: 1, gray: { set: { limit: '50' }, rules: [rule] } });
      expect(await get(...inside)).toEqual({ namespace: 'shop.checkout', release: 1, gray: true, key: 'limit', found: true, value: '50' });
      expect(await get(...outside)).toEqual({ namespace: 'shop.checkout', release: 1, gray: false, key: 'limit', found: true, value: '10' });
    }
    // A percentage: users inside 10% stay inside at 30%.
    one(await config(['gray', 'shop.checkout', '--rule', 'percent:10']));
    const users = Array.from({ length: 40 }, (_, i) => `user${i}`);
    const inside = async () => {
      const out: string[] = [];
      for (let i = 0; i < users.length; i += 8) {
        const batch = users.slice(i, i + 8);
        const seen = await Promise.all(batch.map((u) => get('--user', u)));
        batch.forEach((u, j) => seen[j]!.gray === true && out.push(u));
      }
      return out;
    };
    const at10 = await inside();
    one(await config(['gray', 'shop.checkout', '--rule', 'percent:30']));
    const at30 = await inside();
    for (const u of at10) expect(at30).toContain(u);
    expect(at30.length).toBeGreaterThan(at10.length);

    // A watcher in the gray (user u1, via a users rule added next to the percentage) sees the promote as one change.
    one(await config(['gray', 'shop.checkout', '--rule', 'percent:30', '--rule', 'users:u1']));
    const watch = spawnSvrkit(['config', 'watch', 'shop.checkout', '--user', 'u1', '--peers', peers]);
    for (let i = 0; i < 250 && !watch.stdout().includes('"opSeq"'); i++) await sleep(20);
    expect(one(await config(['promote', 'shop.checkout']))).toMatchObject({ release: 2, values: { limit: '50', color: 'red' }, gray: null });
    for (let i = 0; i < 250 && !watch.stdout().includes('"release":2'); i++) await sleep(20);
    expect(await stopProc(watch, 'SIGINT')).toEqual({ code: 0, signal: null });
    const seen = watch.stdout().trim().split('\n').map((l) => JSON.parse(l) as { release: number; gray: boolean; values: Record<string, string> });
    expect(seen.map((s) => [s.release, s.gray, s.values.limit])).toEqual([
      [1, true, '50'],
      [2, false, '50'],
    ]);

    expect(one(await config(['rollback', 'shop.checkout', '1']))).toMatchObject({ release: 3, values: { limit: '10', color: 'red' } });
    one(await config(['gray', 'shop.checkout', '--delete', 'color', '--rule', 'zone:z9']));
    expect(one(await config(['get', 'shop.checkout', '--zone', 'z9']))).toMatchObject({ release: 3, gray: true, values: { limit: '10' } });
    expect(one(await config(['abandon', 'shop.checkout']))).toMatchObject({ release: 3, gray: null });
    const history = await config(['history', 'shop.checkout']);
    expect(history.code, history.stderr).toBe(0);
    const ops = history.stdout.trim().split('\n').map((l) => JSON.parse(l) as { seq: number; op: string; by: string });
    expect(ops.map((o) => o.op)).toEqual(['publish', 'gray', 'gray', 'gray', 'gray', 'gray', 'gray', 'gray', 'promote', 'rollback', 'gray', 'abandon']);
    expect(ops.every((o, i) => o.seq === i + 1 && o.by === 'cli-test')).toBe(true);

    // Bad input: a clear message, exit code 2 (usage) or 1 (refused).
    const noRule = await config(['gray', 'shop.checkout', 'a=1']);
    expect([noRule.code, noRule.stderr]).toEqual([2, 'error: a gray needs at least one --rule\n']);
    const badRule = await config(['gray', 'shop.checkout', 'a=1', '--rule', 'percent:200']);
    expect(badRule.code).toBe(1);
    expect(badRule.stderr).toMatch(/percent:200.*0 to 100/);
    const badPair = await config(['publish', 'shop.checkout', 'novalue']);
    expect([badPair.code, badPair.stderr]).toEqual([2, "error: 'novalue' is not key=value\n"]);
    const noGray = await config(['promote', 'shop.checkout']);
    expect(noGray.code).toBe(1);
    expect(noGray.stderr).toMatch(/no gray release to promote/);
    const badNs = await config(['publish', 'bad name', 'a=1']);
    expect(badNs.code).toBe(1);
    expect(badNs.stderr).toMatch(/namespace 'bad name'/);
  }, 120_000);

  it('atomic promote: 200 watchers, half in the gray, through promotes, one of them while a replica is SIGKILLed (restarted later)', async () => {
    const ns = 'atomic.kill';
    const kv = new PaxosKVClient({ peers: addresses });
    const admin = new ConfigAdmin(kv, { by: 'test' });
    const shared = [0, 1, 2].map((i) => new PaxosKVClient({ peers: [...addresses.slice(i), ...addresses.slice(0, i)] }));
    await admin.publish(ns, { set: { v: 'g1' }, delete: [] });
    const watchers = grayWatchers(200, (i, canary) => new ConfigClient({ target: shared[i % 3]!, namespace: ns, instance: { zone: canary ? 'canary' : 'main' } }));
    try {
      await Promise.all(watchers.map((w) => w.c.ready()));
      for (let round = 2; round <= 7; round++) {
        await admin.gray(ns, { set: { v: `g${round}` }, delete: [] }, [{ kind: 'zone', zone: 'canary' }]);
        if (round === 4) {
          // Replica 1 dies while the promote is on its way (the admin's client tries replica 1
          // first); it comes back two rounds later.
          await Promise.all([admin.promote(ns), stopProc(cluster.replicas.get(1)!, 'SIGKILL')]);
        } else await admin.promote(ns);
        if (round === 6) await cluster.serve(1);
      }
      const final = (await admin.head(ns)).head;
      for (let t = 0; t < 30_000 && watchers.some((w) => w.c.head.opSeq !== final.opSeq); t += 50) await sleep(50);
      for (const w of watchers) {
        expect(w.c.head.opSeq).toBe(final.opSeq);
        expect(w.c.get('v')).toBe('g7');
      }
      expectNoneWentBack(watchers);
    } finally {
      for (const w of watchers) await w.c.close();
      for (const c of shared) c.close();
      kv.close();
    }
  }, 120_000);
});
