/**
 * The service registry on PaxosKV (`paxoskv://host:port,.../prefix`), and through the registry
 * service the replica processes serve (`registry://host:port,.../prefix`), against three real
 * `svrkit kv serve` replicas on 127.0.0.1: register, list, watch and deregister; a SIGKILLed
 * registering process disappearing within its TTL; 50 registrations at the same moment, all
 * listed; a replica SIGKILLed while watches are open; and `svrkit run --register`, a client on a
 * `paxoskv:` target, `svrkit registry list`, and an instance SIGKILLed under load.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, openRegistry, parseRegistryUri, type Instance, type Registry } from '../../index.js';
import { GreeterClient } from '../../examples/helloworld/gen/greeter.js';
import { decodeInstances, liveInstances, serviceKey } from '../../services/registry/paxoskv-registry.js';
import { startProcessCluster, type ProcessCluster } from '../support/kv-cluster.js';
import { killStarted, runSvrkit, stopProc } from '../support/kv-processes.js';
import { eventually, WatchLog } from '../support/poll.js';
import { startRegistryChild, stopRegistryChildren } from '../support/registry-processes.js';
import { startSvrkit, stopAllSvrkit, type SvrkitProcess } from '../support/processes.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BASE = path.join(ROOT, 'test', '.tmp', `paxoskv-registry-${process.pid}`);
const G = 'helloworld.Greeter';
const addressesOf = (list: readonly Instance[]) => list.map((i) => i.address);

describe('paxoskv registry values (pure)', () => {
  it('parses paxoskv: URIs (replicas, prefix) and names a malformed one', () => {
    expect(parseRegistryUri('paxoskv://127.0.0.1:7101, 127.0.0.1:7102')).toEqual({
      kind: 'paxoskv',
      uri: 'paxoskv://127.0.0.1:7101,127.0.0.1:7102/svrkit/services',
      hosts: ['127.0.0.1:7101', '127.0.0.1:7102'],
      prefix: '/svrkit/services',
    });
    expect(parseRegistryUri('paxoskv://h:1/apps/prod/')).toMatchObject({ prefix: '/apps/prod' });
    expect(() => parseRegistryUri('paxoskv:///x')).toThrow(/no PaxosKV replica/);
    expect(() => parseRegistryUri('paxoskv://h/x')).toThrow(/PaxosKV replica 'h' is not host:port/);
  });

  it('decodes a service\'s instances with their leases, lists the live ones sorted, and names a malformed value', () => {
    const key = serviceKey('/svrkit/services', G);
    expect(key).toBe('registry/svrkit/services/helloworld.Greeter');
    const bytes = new TextEncoder().encode(
      JSON.stringify({
        instances: [
          { service: G, address: '127.0.0.1:2', zone: '', labels: {}, weight: 1, lease: 'b', expiresAt: 2000 },
          { service: G, address: '127.0.0.1:1', zone: 'z', labels: { v: '1' }, weight: 2, lease: 'a', expiresAt: 1000 },
        ],
      }),
    );
    const stored = decodeInstances(key, bytes);
    expect(liveInstances(stored, 500).map((i) => i.address)).toEqual(['127.0.0.1:1', '127.0.0.1:2']);
    expect(liveInstances(stored, 1500)).toEqual([{ service: G, address: '127.0.0.1:2', zone: '', labels: {}, weight: 1 }]);
    expect(() => decodeInstances(key, new TextEncoder().encode('nope'))).toThrow(/registry key registry\/svrkit\/services\/helloworld.Greeter: not JSON/);
    expect(() => decodeInstances(key, new TextEncoder().encode('{"instances":[{"service":"x","address":"1.2.3.4:5"}]}'))).toThrow(/instance 0: no lease/);
  });
});

// The same suite through PaxosKV directly (paxoskv://) and through the registry service the
// replica processes serve (registry://, services/registry/registry-service.ts).
describe.each(['paxoskv', 'registry'] as const)('%s registry on three kv serve replicas', (scheme) => {
  let cluster: ProcessCluster;
  let uri = '';
  const opened: Registry[] = [];
  const open = (): Registry => {
    const r = openRegistry(uri);
    opened.push(r);
    return r;
  };

  beforeAll(async () => {
    cluster = await startProcessCluster(path.join(BASE, scheme));
    uri = `${scheme}://${cluster.addresses.join(',')}/svrkit/services`;
  });
  afterAll(async () => {
    for (const r of opened) await r.close();
    await stopRegistryChildren();
    await stopAllSvrkit();
    await killStarted();
    await fsp.rm(path.join(BASE, scheme), { recursive: true, force: true });
  });

  it('registers, lists, watches (changes only, not renewals) and deregisters', async () => {
    const reg = open();
    const log = new WatchLog<Instance>();
    reg.watch(G, log.onInstances, log.onError);
    await eventually('the first (empty) list', () => log.lists.length === 1);
    // TTL 900 ms, renewed every 300 ms: a renewal may take 600 ms (a loaded machine) before the entry lapses.
    const a = await reg.register({ service: G, address: '127.0.0.1:7001', zone: 'z1', labels: { v: '1' } }, { ttlMs: 900 });
    const b = await reg.register({ service: G, address: '127.0.0.1:7002' }, { ttlMs: 900 });
    await reg.register({ service: 'other.Svc', address: '127.0.0.1:7003' }, { ttlMs: 900 });
    expect(addressesOf(await reg.list(G))).toEqual(['127.0.0.1:7001', '127.0.0.1:7002']);
    expect((await reg.list(G))[0]).toEqual({ service: G, address: '127.0.0.1:7001', zone: 'z1', labels: { v: '1' }, weight: 1 });
    await eventually('the watch to see both', () => log.latest?.length === 2);
    const lists = log.lists.length;
    await sleep(1500); // five renewals each: the live set does not change
    expect(log.lists.length).toBe(lists);
    expect((await reg.list()).map((i) => i.service)).toEqual([G, G, 'other.Svc']);
    await a.deregister();
    await eventually('the watch to see the deregistration', () => log.latest?.length === 1);
    expect(addressesOf(await reg.list(G))).toEqual(['127.0.0.1:7002']);
    await b.deregister();
    expect(await reg.list(G)).toEqual([]);
    expect(log.errors).toEqual([]);
  });

  it('a SIGKILLed registering process disappears from list and watch within its TTL', async () => {
    const reg = open();
    const log = new WatchLog<Instance>();
    reg.watch('killed.Svc', log.onInstances, log.onError);
    const child = await startRegistryChild(uri, 1000, ['killed.Svc@127.0.0.1:7101', 'killed.Svc@127.0.0.1:7102']);
    await eventually('the watch to see both', () => log.latest?.length === 2);
    await sleep(2500); // alive past its TTL while the child renews
    expect(await reg.list('killed.Svc')).toHaveLength(2);
    child.process.kill('SIGKILL');
    await child.exited;
    const killedAt = Date.now();
    await eventually('the watch to see the expiry', () => log.latest?.length === 0, (v) => v, 5000, 20);
    // Within its TTL of the last renewal (renewals every TTL/3, so at most 1 s after the kill), with 500 ms to spare for scheduling.
    expect(Date.now() - killedAt).toBeLessThan(1500);
    expect(await reg.list('killed.Svc')).toEqual([]);
    expect(log.errors).toEqual([]);
  });

  it('50 registrations at the same moment are all listed (no lost update)', async () => {
    const reg = open();
    const instances = Array.from({ length: 50 }, (_, i) => `burst.Svc@127.0.0.1:${8000 + i}`);
    // Five processes of ten each: five writers racing on the service's key (a process batches its own).
    const children = await Promise.all([0, 1, 2, 3, 4].map((k) => startRegistryChild(uri, 5000, instances.slice(k * 10, k * 10 + 10))));
    const listed = await reg.list('burst.Svc');
    expect(listed.map((i) => i.address).sort()).toEqual(instances.map((s) => s.slice(s.indexOf('@') + 1)).sort());
    for (const c of children) c.process.kill('SIGTERM');
    expect(await Promise.all(children.map((c) => c.exited))).toEqual([0, 0, 0, 0, 0]);
    expect(await reg.list('burst.Svc')).toEqual([]);
  }, 60_000);

  it('watches open across a replica SIGKILL: they move to another replica and see later changes', async () => {
    const reg = open();
    const logs = [0, 1, 2].map(() => new WatchLog<Instance>());
    for (const log of logs) reg.watch('moved.Svc', log.onInstances, log.onError);
    await eventually('the first lists', () => logs.every((l) => l.lists.length === 1));
    const writer = open();
    await writer.register({ service: 'moved.Svc', address: '127.0.0.1:9001' }, { ttlMs: 5000 });
    await eventually('every watch to see it', () => logs.every((l) => l.latest?.length === 1));
    // The registry's client watches through replica 1 first: kill it.
    await stopProc(cluster.replicas.get(1)!, 'SIGKILL');
    await writer.register({ service: 'moved.Svc', address: '127.0.0.1:9002' }, { ttlMs: 5000 });
    await eventually('every watch to see the new instance', () => logs.every((l) => l.latest?.length === 2), (v) => v, 15_000);
    for (const log of logs) expect(log.errors).toEqual([]);
    await cluster.serve(1);
  }, 60_000);

  it(`svrkit run --register, a client on a ${scheme}: target, svrkit registry list, and an instance SIGKILLed under load`, async () => {
    const servers: SvrkitProcess[] = [];
    for (let i = 0; i < 2; i++) servers.push(await startSvrkit(['run', 'examples/helloworld/greeter.ts', '--port', '0', '--register', uri, '--ttl-ms', '1000']));
    const listed = await runSvrkit(['registry', 'list', uri, G, '--json']);
    expect(listed.code, listed.stderr).toBe(0);
    expect((JSON.parse(listed.stdout) as Instance[]).map((i) => i.address).sort()).toEqual(servers.map((s) => s.address).sort());
    const channel = new Channel(uri);
    const client = new GreeterClient(channel);
    try {
      let ok = 0;
      const failures: string[] = [];
      let stop = false;
      const load = (async () => {
        while (!stop) {
          try {
            await client.sayHello({ name: 'load' }, { timeoutMs: 2000 });
            ok++;
          } catch (err) {
            failures.push(String(err));
          }
        }
      })();
      await eventually('calls to succeed', () => ok > 50);
      await servers[0]!.stop('SIGKILL');
      const reg = open();
      await eventually('the killed instance to leave the registry', () => reg.list(G), (l) => l.length === 1, 5000, 50);
      const okBefore = ok;
      const failedBefore = failures.length;
      await eventually('calls to go on', () => ok > okBefore + 100);
      stop = true;
      await load;
      // Once the registry dropped it, no call fails.
      expect(failures.slice(failedBefore)).toEqual([]);
    } finally {
      channel.close();
      for (const s of servers) await s.stop('SIGKILL').catch(() => undefined);
    }
  }, 60_000);
});
