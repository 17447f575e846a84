/**
 * The etcd registry (`etcd://host:port/prefix`) against a real etcd started for this file on
 * 127.0.0.1 (free ports, a temporary data directory): key layout, lease-bound registrations that
 * vanish after a registering process is SIGKILLed, lease loss and re-registration, watches, a
 * malformed value, the `etcd:` resolver, an etcd restart, and an unreachable etcd (errors, never a
 * crash). Skipped, with the reason in the title, when /usr/bin/etcd is not installed.
 *
 * The pure key/value helpers are tested whether or not etcd is installed.
 */
import { Etcd3 } from 'etcd3';
import { spawnSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { resolverFor } from '../../framework/client/resolver.js';
import { etcdInstances, etcdKey, etcdServicePrefix, etcdValue, parseEtcdEntry } from '../../framework/discovery/etcd-registry.js';
import { normalizeInstance, type Instance } from '../../framework/discovery/instance.js';
import { openRegistry, type Registry } from '../../framework/discovery/registry.js';
import '../../framework/setup.js'; // the composition root: registers the etcd registry and the etcd: resolver
import { Channel, Server } from '../../framework/index.js';
import { GreeterClient } from '../../examples/helloworld/gen/greeter.js';
import { TaggedGreeter } from '../support/tagged-greeter.js';
import { etcdBinary, freeLoopbackPort, startEtcd, type EtcdServer } from '../support/etcd.js';
import { eventually, WatchLog } from '../support/poll.js';
import { startRegistryChild, stopRegistryChildren } from '../support/registry-processes.js';

const G = 'helloworld.Greeter';
const addresses = (list: readonly Instance[]): string[] => list.map((i) => i.address);

describe('etcd keys and values (pure)', () => {
  const prefix = '/svrkit/services';

  it('lays out keys as prefix/service/address with the instance as JSON', () => {
    const i = normalizeInstance({ service: G, address: '10.0.0.1:7000', zone: 'z', labels: { v: '1' }, weight: 2 });
    expect(etcdKey(prefix, G, '10.0.0.1:7000')).toBe('/svrkit/services/helloworld.Greeter/10.0.0.1:7000');
    expect(etcdServicePrefix(prefix, G)).toBe('/svrkit/services/helloworld.Greeter/');
    expect(etcdServicePrefix(prefix)).toBe('/svrkit/services/');
    expect(JSON.parse(etcdValue(i))).toEqual({ service: G, address: '10.0.0.1:7000', zone: 'z', labels: { v: '1' }, weight: 2 });
    expect(parseEtcdEntry(prefix, etcdKey(prefix, G, '10.0.0.1:7000'), etcdValue(i))).toEqual(i);
  });

  it('rejects malformed entries naming the key', () => {
    const key = '/svrkit/services/helloworld.Greeter/h:1';
    expect(() => parseEtcdEntry(prefix, key, '{')).toThrow(/^etcd key \/svrkit\/services\/helloworld\.Greeter\/h:1: value is not JSON/);
    expect(() => parseEtcdEntry(prefix, key, '{"service":"helloworld.Greeter","address":"h:1","weight":-1}')).toThrow(/etcd key .*: 'weight' must be a number > 0/);
    expect(() => parseEtcdEntry(prefix, key, '{"service":"helloworld.Greeter","address":"h:2"}')).toThrow(/the value names helloworld\.Greeter at h:2, the key helloworld\.Greeter at h:1/);
    expect(() => parseEtcdEntry(prefix, '/svrkit/services/lonely', '{}')).toThrow(/expected \/svrkit\/services\/<service>\/<host:port>/);
    const entries: Array<[string, string]> = [
      ['/svrkit/services/b.S/h:1', '{"service":"b.S","address":"h:1"}'],
      ['/svrkit/services/a.S/h:2', '{"service":"a.S","address":"h:2"}'],
    ];
    expect(etcdInstances(prefix, entries).map((i) => i.service)).toEqual(['a.S', 'b.S']);
    expect(etcdInstances(prefix, entries, 'b.S').map((i) => i.address)).toEqual(['h:1']);
  });
});

describe('etcd3 loading', () => {
  it('is lazy: importing svrkit and using a file registry does not load etcd3; an etcd registry does', () => {
    const script = `
      import { createRequire } from 'node:module';
      const loaded = () => Object.keys(createRequire(import.meta.url).cache).some((k) => k.includes('/node_modules/etcd3/'));
      const svrkit = await import('./framework/index.ts');
      const file = svrkit.openRegistry('file:///nonexistent-dir/registry.json');
      await file.list();
      await file.close();
      const before = loaded();
      const etcd = svrkit.openRegistry('etcd://127.0.0.1:1/x');
      await etcd.list().catch(() => {});
      await etcd.close();
      console.log(JSON.stringify({ before, after: loaded() }));`;
    const root = fileURLToPath(new URL('../..', import.meta.url));
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: root, encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout.trim().split('\n').pop()!)).toEqual({ before: false, after: true });
  });
});

describe('etcd registry with an unreachable etcd', () => {
  it('rejects register and list with clear errors, reports watch errors, and never crashes', async () => {
    const port = await freeLoopbackPort();
    const reg = openRegistry(`etcd://127.0.0.1:${port}/svrkit/services`);
    try {
      await expect(reg.register({ service: G, address: '127.0.0.1:7000' })).rejects.toThrow(
        new RegExp(`^etcd registry etcd://127\\.0\\.0\\.1:${port}/svrkit/services: cannot register helloworld\\.Greeter at 127\\.0\\.0\\.1:7000: `),
      );
      await expect(reg.list()).rejects.toThrow(/etcd registry .*: cannot list instances/);
      const log = new WatchLog<Instance>();
      reg.watch(G, log.onInstances, log.onError);
      await eventually('a watch error', () => log.errors.length > 0);
      expect(log.errors[0]!.message).toMatch(/etcd registry .*: watch of helloworld\.Greeter lost its connection/);
      expect(log.lists).toEqual([]);
      await expect(reg.register({ service: 'a/b', address: 'h:1' })).rejects.toThrow(/must not contain '\/'/);
    } finally {
      await reg.close();
    }
  });
});

describe.skipIf(etcdBinary === undefined)(
  etcdBinary === undefined ? 'etcd (skipped: /usr/bin/etcd not installed; apt-get install etcd-server)' : 'etcd registry against a real etcd',
  () => {
    let etcd: EtcdServer;
    let uri: string;
    let raw: Etcd3;
    let prefixN = 0;
    const opened: Registry[] = [];

    /** A registry on its own key prefix, so tests do not see each other's keys. */
    function fresh(): { reg: Registry; uri: string; prefix: string } {
      const prefix = `/svrkit-test/${++prefixN}`;
      const u = `etcd://${etcd.endpoint}${prefix}`;
      const reg = openRegistry(u);
      opened.push(reg);
      return { reg, uri: u, prefix };
    }

    beforeAll(async () => {
      etcd = await startEtcd();
      uri = `etcd://${etcd.endpoint}/svrkit/services`;
      raw = new Etcd3({ hosts: etcd.endpoint });
    });

    afterEach(async () => {
      await Promise.all(opened.splice(0).map((r) => r.close()));
    });

    afterAll(async () => {
      await stopRegistryChildren();
      raw?.close();
      await etcd?.stop();
    });

    it('registers under a lease at prefix/service/address, lists, and deregisters', async () => {
      const reg = openRegistry(uri);
      opened.push(reg);
      const r = await reg.register({ service: G, address: '127.0.0.1:7001', zone: 'z1', labels: { v: '2' } }, { ttlMs: 5000 });
      await reg.register({ service: 'other.Svc', address: '127.0.0.1:7002' });
      const key = '/svrkit/services/helloworld.Greeter/127.0.0.1:7001';
      expect(JSON.parse((await raw.get(key).string())!)).toEqual({ service: G, address: '127.0.0.1:7001', zone: 'z1', labels: { v: '2' }, weight: 1 });
      const kv = (await raw.get(key).exec()).kvs[0]!;
      expect(kv.lease).not.toBe('0');
      const ttl = await raw.leaseClient.leaseTimeToLive({ ID: kv.lease });
      expect(Number(ttl.grantedTTL)).toBe(5);
      expect(await reg.list(G)).toEqual([r.instance]);
      expect((await reg.list()).map((i) => i.service)).toEqual([G, 'other.Svc']);
      await r.deregister();
      await r.deregister();
      expect(await raw.get(key).string()).toBeNull();
      expect(await reg.list(G)).toEqual([]);
    });

    it("removes a SIGKILLed process's keys when its lease expires (etcd's minimum TTL applies), and a watch sees it", async () => {
      const { reg, uri: u } = fresh();
      const log = new WatchLog<Instance>();
      reg.watch(G, log.onInstances, log.onError);
      await eventually('the first (empty) list', () => log.lists.length === 1);
      const child = await startRegistryChild(u, 1000, [`${G}@127.0.0.1:7101`, `${G}@127.0.0.1:7102`]);
      await eventually('the watch to see both', () => log.latest?.length === 2);
      // Alive past its ttl while the child renews the lease.
      await sleep(2500);
      expect(await reg.list(G)).toHaveLength(2);
      child.process.kill('SIGKILL');
      await child.exited;
      await eventually('the keys to expire', () => reg.list(G), (l) => l.length === 0, 30_000, 100);
      await eventually('the watch to see the expiry', () => log.latest?.length === 0);
      expect(log.errors).toEqual([]);
    });

    it('close() stops keepalives without deregistering: the key stays until the lease expires', async () => {
      const { reg, uri: u } = fresh();
      await reg.register({ service: G, address: '127.0.0.1:7201' }, { ttlMs: 1000 });
      await reg.close();
      const observer = openRegistry(u);
      opened.push(observer);
      expect(addresses(await observer.list(G))).toEqual(['127.0.0.1:7201']);
      await eventually('the lease to expire', () => observer.list(G), (l) => l.length === 0, 30_000, 100);
    });

    it('re-registers under a new lease when its lease is lost (revoked behind its back)', async () => {
      const { reg, prefix } = fresh();
      const errors: Error[] = [];
      await reg.register({ service: G, address: '127.0.0.1:7301' }, { ttlMs: 3000, onError: (e) => errors.push(e) });
      const key = `${prefix}/${G}/127.0.0.1:7301`;
      const firstLease = (await raw.get(key).exec()).kvs[0]!.lease;
      await raw.leaseClient.leaseRevoke({ ID: firstLease });
      expect(await raw.get(key).string()).toBeNull();
      const lease = await eventually(
        'the key to be back under a new lease',
        async () => (await raw.get(key).exec()).kvs[0]?.lease,
        (l) => l !== undefined && l !== firstLease,
        30_000,
        100,
      );
      expect(lease).not.toBe(firstLease);
      expect(errors[0]?.message).toMatch(/helloworld\.Greeter at 127\.0\.0\.1:7301: lease lost: .*; re-registering/);
    });

    it('watch: follows puts and deletes, notifies only on changes, and reports a malformed value keeping the list', async () => {
      const { reg, prefix } = fresh();
      const log = new WatchLog<Instance>();
      const unsubscribe = reg.watch(G, log.onInstances, log.onError);
      await eventually('the first (empty) list', () => log.lists.length === 1);
      expect(log.latest).toEqual([]);
      const a = await reg.register({ service: G, address: '127.0.0.1:7401' }, { ttlMs: 2000 });
      await eventually('a', () => log.latest?.length === 1);
      const b = await reg.register({ service: G, address: '127.0.0.1:7402', weight: 3 });
      await eventually('a and b', () => log.latest?.length === 2);
      expect(log.latest!.map((i) => i.weight)).toEqual([1, 3]);
      await reg.register({ service: 'other.Svc', address: '127.0.0.1:7403' });
      await a.deregister();
      await eventually('b only', () => log.latest, (l) => l !== undefined && addresses(l).join() === '127.0.0.1:7402');
      // Lease renewals of b (every ~3 s) and other services' keys are not changes of this list.
      const count = log.lists.length;
      await sleep(4000);
      expect(log.lists.length).toBe(count);

      await raw.put(`${prefix}/${G}/127.0.0.1:7404`).value('{"service":"helloworld.Greeter","address":"127.0.0.1:7404","weight":"heavy"}');
      await eventually('the malformed value error', () => log.errors.length > 0);
      expect(log.errors[0]!.message).toMatch(new RegExp(`^etcd key ${prefix}/helloworld\\.Greeter/127\\.0\\.0\\.1:7404: 'weight' must be a number > 0`));
      await expect(reg.list(G)).rejects.toThrow(/etcd key .*7404/);
      expect(log.lists.length).toBe(count);
      await raw.put(`${prefix}/${G}/127.0.0.1:7404`).value('{"service":"helloworld.Greeter","address":"127.0.0.1:7404","weight":2}');
      await eventually('the repaired value', () => log.latest?.length === 2);
      await b.deregister();
      await eventually('7404 only', () => log.latest, (l) => l !== undefined && addresses(l).join() === '127.0.0.1:7404');
      unsubscribe();
      const final = log.lists.length;
      await raw.delete().key(`${prefix}/${G}/127.0.0.1:7404`);
      await sleep(500);
      expect(log.lists.length).toBe(final);
    });

    it('etcd: resolver resolves and follows a service; a malformed etcd target is rejected', async () => {
      const { reg, uri: u } = fresh();
      const a = await reg.register({ service: G, address: '127.0.0.1:7501', zone: 'z' });
      const { parsed, factory } = resolverFor(u);
      const log = new WatchLog<Instance>();
      const resolver = factory(parsed, G);
      resolver.start({ onInstances: log.onInstances, onError: log.onError });
      await eventually('the first list', () => log.latest?.length === 1);
      expect(log.latest).toEqual([a.instance]);
      await reg.register({ service: G, address: '127.0.0.1:7502' });
      await eventually('two', () => log.latest?.length === 2);
      resolver.close();
      const seen = log.lists.length;
      await reg.register({ service: G, address: '127.0.0.1:7503' });
      await sleep(300);
      expect(log.lists.length).toBe(seen);
      expect(log.errors).toEqual([]);
      expect(() => resolverFor('etcd://nohostport/x').factory(resolverFor('etcd://nohostport/x').parsed, G)).toThrow(/etcd endpoint 'nohostport' is not host:port/);
    });

    it('a client on an etcd: target calls the registered servers and follows a deregistration', async () => {
      const { reg, uri: u } = fresh();
      const servers = [new Server().addService(new TaggedGreeter()), new Server().addService(new TaggedGreeter())];
      const greeter = new GreeterClient(u);
      try {
        const regs = [];
        for (const s of servers) {
          await s.listen(0);
          regs.push(await reg.register({ service: G, address: s.address }));
        }
        await greeter.channel.waitForReady(10_000, G);
        await eventually('both instances ready', () => greeter.channel.instances(G).filter((i) => i.ready).length === 2);
        for (let i = 0; i < 10; i++) expect((await greeter.sayHello({ name: 'e' })).message).toMatch(/^Hello e from \d+$/);
        await regs[0]!.deregister();
        await eventually('the deregistered instance to leave the channel', () => greeter.channel.instances(G).length === 1);
        expect(greeter.channel.instances(G)[0]!.address).toBe(servers[1]!.address);
        for (let i = 0; i < 5; i++) await greeter.sayHello({ name: 'f' });
      } finally {
        greeter.close();
        await Promise.all(servers.map((s) => s.close({ graceMs: 100 })));
      }
    });

    it('watch: applies every key of a multi-key revision (a transaction, a prefix delete)', async () => {
      const { reg, prefix } = fresh();
      const a = normalizeInstance({ service: G, address: '10.0.0.1:7000' });
      const b = normalizeInstance({ service: G, address: '10.0.0.2:7000' });
      const log = new WatchLog<Instance>();
      const stop = reg.watch(G, log.onInstances, log.onError);
      try {
        await eventually('the first (empty) list', () => log.latest !== undefined);
        await raw
          .if(etcdKey(prefix, G, a.address), 'Create', '==', 0)
          .then(raw.put(etcdKey(prefix, G, a.address)).value(etcdValue(a)), raw.put(etcdKey(prefix, G, b.address)).value(etcdValue(b)))
          .commit();
        await eventually('both instances from one transaction', () => log.latest?.length === 2);
        await raw.delete().prefix(`${prefix}/${G}/`).exec();
        await eventually('both gone after one prefix delete', () => log.latest?.length === 0);
      } finally {
        stop();
      }
    });

    it('a channel accepts an etcd target without a key prefix (the default prefix)', async () => {
      const ch = new Channel(`etcd://${etcd.endpoint}`);
      ch.close();
      expect(() => new Channel(`ETCD://${etcd.endpoint}/x`).close()).not.toThrow();
    });

    // Last: restarts the shared etcd.
    it('survives an etcd restart: watch errors while it is down, then resumes; registrations come back', async () => {
      const { reg } = fresh();
      const errors: Error[] = [];
      await reg.register({ service: G, address: '127.0.0.1:7601' }, { ttlMs: 2000, onError: (e) => errors.push(e) });
      const log = new WatchLog<Instance>();
      reg.watch(G, log.onInstances, log.onError);
      await eventually('the first list', () => log.latest?.length === 1);
      await etcd.kill();
      await eventually('a watch error while etcd is down', () => log.errors.length > 0, undefined, 30_000, 100);
      await expect(reg.list(G)).rejects.toThrow(/cannot list instances/);
      await etcd.restart();
      // The registration's key is back (same lease if it survived, else re-registered) ...
      await eventually('the instance to be listed again', () => reg.list(G), (l) => addresses(l).join() === '127.0.0.1:7601', 60_000, 200);
      // ... and the watch follows new changes after reconnecting.
      await reg.register({ service: G, address: '127.0.0.1:7602' });
      await eventually('the watch after the restart', () => log.latest?.length === 2, undefined, 60_000, 100);
    });
  },
);
