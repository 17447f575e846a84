/**
 * The config center as a service (`svrkit.config.ConfigCenter`): served by every `svrkit kv serve`
 * replica process and by stateless `svrkit config serve` processes, all real processes on
 * 127.0.0.1. ConfigClients on `config://` targets follow through them: 200 watchers (half in the
 * gray) through rounds of gray, publish and promote, while a config server and then a PaxosKV
 * replica are SIGKILLed; writes and history through the RPCs; the cache file when no config
 * server answers. In this process: one PaxosKV watch per namespace however many clients watch
 * (the fan-out), and the service's errors.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigCenterServer, ConfigClient, PaxosKVClient, RegistryClient, RpcError, Server, Status } from '../../index.js';
import { ConfigCenterClient } from '../../services/config/gen/svrkit/config/config.js';
import { decodeHead, type NamespaceHead } from '../../services/config/model.js';
import { startInProcessCluster, startProcessCluster, type InProcessCluster, type ProcessCluster } from '../support/kv-cluster.js';
import { freePorts, killStarted, runSvrkit, spawnSvrkit, stopProc, waitServing, waitVoting, type Proc } from '../support/kv-processes.js';
import { grayWatchers, expectNoneWentBack } from '../support/gray-watchers.js';
import { eventually } from '../support/poll.js';
import { rpcFailure } from '../support/rpc-failure.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BASE = path.join(ROOT, 'test', '.tmp', `config-service-${process.pid}`);
const CONFIG_SERVING = /^svrkit: config serve on (\S+) \(pid (\d+)\)/gm;
const headOf = (h: { namespace: string; head: Uint8Array }): NamespaceHead => decodeHead(h.head, h.namespace);

afterAll(async () => {
  await killStarted();
  await fsp.rm(BASE, { recursive: true, force: true });
});

describe('ConfigCenter served by kv serve replicas and svrkit config serve', () => {
  let cluster: ProcessCluster;
  const servers: Array<{ proc: Proc; address: string }> = [];

  const startConfigServer = async (): Promise<{ proc: Proc; address: string }> => {
    const proc = spawnSvrkit(['config', 'serve', '--peers', cluster.peers, '--port', '0']);
    const [m] = await waitServing(proc, 'config serve', 1, 20_000, CONFIG_SERVING);
    const s = { proc, address: m![1]! };
    servers.push(s);
    return s;
  };

  beforeAll(async () => {
    cluster = await startProcessCluster(path.join(BASE, 'procs'));
    await startConfigServer();
    await startConfigServer();
  }, 60_000);
  afterAll(async () => {
    for (const s of servers) await stopProc(s.proc, 'SIGKILL').catch(() => undefined);
    await cluster.kill();
  });

  it('writes and history through the RPCs; clients on the replicas and on config servers follow', async () => {
    const ops = new ConfigCenterClient(`static:///${servers.map((s) => s.address).join(',')}`);
    const onReplicas = new ConfigClient({ target: `config://${cluster.addresses.join(',')}`, namespace: 'svc.rpc', instance: { zone: 'z1' } });
    const onServers = new ConfigClient({ target: `config://${servers.map((s) => s.address).join(',')}`, namespace: 'svc.rpc', instance: { zone: 'z2' } });
    try {
      // A namespace never published: served empty at once, version 0.
      await Promise.all([onReplicas.ready(), onServers.ready()]);
      expect([onReplicas.source, onServers.source]).toEqual(['server', 'server']);
      expect(onServers.head.opSeq).toBe(0);
      expect((await ops.get({ namespace: 'svc.rpc' })).version).toBe(0n);

      expect(headOf(await ops.publish({ namespace: 'svc.rpc', by: 'alice', set: { limit: '10' } })).release?.number).toBe(1);
      await ops.gray({ namespace: 'svc.rpc', by: 'bob', set: { limit: '50' }, rules: ['zone:z1'] });
      await eventually('both clients to see the gray', () => onReplicas.head.opSeq === 2 && onServers.head.opSeq === 2);
      expect([onReplicas.get('limit'), onServers.get('limit')]).toEqual(['50', '10']);
      await ops.promote({ namespace: 'svc.rpc', by: 'bob' });
      await ops.rollback({ namespace: 'svc.rpc', to: 1 }); // no `by`, no calling service: recorded as the peer's address
      await ops.gray({ namespace: 'svc.rpc', by: 'carol', set: { x: '1' }, rules: ['users:u1'] });
      await ops.abandon({ namespace: 'svc.rpc', by: 'carol' });
      await eventually('both clients to see every operation', () => onReplicas.head.opSeq === 6 && onServers.head.opSeq === 6);
      expect([onReplicas.get('limit'), onServers.get('limit')]).toEqual(['10', '10']);
      const got = await ops.get({ namespace: 'svc.rpc' });
      expect(got.version).toBeGreaterThan(0n);
      expect(headOf(got).release?.number).toBe(3);

      const history = (await ops.history({ namespace: 'svc.rpc' })).ops.map((b) => JSON.parse(new TextDecoder().decode(b)) as { seq: number; op: string; by: string });
      expect(history.map((o) => [o.seq, o.op, o.by.replace(/^peer 127\.0\.0\.1:\d+$/, 'peer')])).toEqual([
        [1, 'publish', 'alice'],
        [2, 'gray', 'bob'],
        [3, 'promote', 'bob'],
        [4, 'rollback', 'peer'],
        [5, 'gray', 'carol'],
        [6, 'abandon', 'carol'],
      ]);

      // The CLI reads the same from PaxosKV, and its watch through a config server prints it.
      const r = await runSvrkit(['config', 'get', 'svc.rpc', 'limit', '--peers', cluster.peers]);
      expect(JSON.parse(r.stdout)).toMatchObject({ release: 3, value: '10' });
      const watch = spawnSvrkit(['config', 'watch', 'svc.rpc', '--server', servers[1]!.address]);
      await eventually('the CLI watch to print the head', () => watch.stdout().includes('\n'), (v) => v, 15_000);
      await stopProc(watch, 'SIGTERM');
      expect(JSON.parse(watch.stdout().split('\n')[0]!)).toMatchObject({ namespace: 'svc.rpc', opSeq: 6, source: 'server', release: 3, values: { limit: '10' } });
    } finally {
      ops.close();
      await Promise.all([onReplicas.close(), onServers.close()]);
    }
  }, 60_000);

  it('refuses bad requests with the catalogue\'s errors, and keeps serving', async () => {
    const ops = new ConfigCenterClient(servers[0]!.address);
    try {
      expect(await rpcFailure(ops.get({ namespace: 'bad namespace!' }))).toMatchObject({ code: Status.INVALID_ARGUMENT, reason: 'INVALID_CONFIG_REQUEST' });
      expect(await rpcFailure(ops.gray({ namespace: 'svc.bad', set: { a: '1' }, rules: ['percent:500'] }))).toMatchObject({ code: Status.INVALID_ARGUMENT, reason: 'INVALID_CONFIG_REQUEST' });
      expect(await rpcFailure(ops.gray({ namespace: 'svc.bad', set: { a: '1' }, rules: [] }))).toMatchObject({ code: Status.INVALID_ARGUMENT });
      const noGray = await rpcFailure(ops.promote({ namespace: 'svc.bad' }));
      expect(noGray).toMatchObject({ code: Status.FAILED_PRECONDITION, reason: 'CONFIG_OP_REFUSED' });
      expect(noGray.message).toMatch(/gray/);
      expect(await rpcFailure(ops.rollback({ namespace: 'svc.bad', to: 7 }))).toMatchObject({ code: Status.FAILED_PRECONDITION });
      expect(await rpcFailure(ops.rollback({ namespace: 'svc.bad', to: 0 }))).toMatchObject({ code: Status.INVALID_ARGUMENT });
      const badKey = await rpcFailure(ops.publish({ namespace: 'svc.bad', set: { 'a=b': '1' } }));
      expect(badKey).toMatchObject({ code: Status.INVALID_ARGUMENT, reason: 'INVALID_CONFIG_REQUEST' });
      expect(badKey.message).toMatch(/key 'a=b'/);
      expect(await rpcFailure(ops.publish({ namespace: 'svc.bad', set: { a: '1' }, delete: ['a'] }))).toMatchObject({ code: Status.INVALID_ARGUMENT });
      expect(await rpcFailure(ops.publish({ namespace: 'svc.bad' }))).toMatchObject({ code: Status.INVALID_ARGUMENT }); // no change
      expect((await ops.get({ namespace: 'svc.bad' })).version).toBe(0n);
    } finally {
      ops.close();
    }
  });

  it('the replicas\' registry service refuses bad requests with the catalogue\'s errors, and keeps serving', async () => {
    const reg = new RegistryClient(cluster.addresses[1]!);
    const instance = { service: 'bad.Svc', address: '127.0.0.1:1', zone: '', labels: {}, weight: 1 };
    const invalid = { code: Status.INVALID_ARGUMENT, reason: 'INVALID_REGISTRY_REQUEST' };
    try {
      expect(await rpcFailure(reg.register({ prefix: 'no-slash', instance, lease: 'l1', ttlMs: 1000 }))).toMatchObject(invalid);
      expect(await rpcFailure(reg.register({ prefix: '/a\u0000b', instance, lease: 'l1', ttlMs: 1000 }))).toMatchObject(invalid);
      expect(await rpcFailure(reg.register({ prefix: '', lease: 'l1', ttlMs: 1000 }))).toMatchObject(invalid); // no instance
      expect(await rpcFailure(reg.register({ prefix: '', instance: { ...instance, address: 'nope' }, lease: 'l1', ttlMs: 1000 }))).toMatchObject(invalid);
      expect(await rpcFailure(reg.register({ prefix: '', instance: { ...instance, service: 'x'.repeat(300) }, lease: 'l1', ttlMs: 1000 }))).toMatchObject(invalid);
      expect(await rpcFailure(reg.register({ prefix: '', instance, lease: 'bad lease!', ttlMs: 1000 }))).toMatchObject(invalid);
      expect(await rpcFailure(reg.register({ prefix: '', instance, lease: 'l1', ttlMs: 5 }))).toMatchObject(invalid);
      expect(await rpcFailure(reg.register({ prefix: '', instance, lease: 'l1', ttlMs: 2 * 24 * 3600 * 1000 }))).toMatchObject(invalid);
      expect(await rpcFailure(reg.list({ prefix: '/a//b', service: '' }))).toMatchObject(invalid);
      expect(await rpcFailure(reg.deregister({ prefix: '', service: '', lease: 'l1' }))).toMatchObject(invalid);
      // A watch of a name PaxosKV could not store ends at once with the error, not silently.
      const watching = (async () => {
        for await (const _ of reg.watch({ prefix: '', service: 'y'.repeat(300) }));
      })();
      expect(await rpcFailure(watching)).toMatchObject(invalid);
      // Still serving: a good registration is listed.
      await reg.register({ prefix: '', instance, lease: 'l1', ttlMs: 5000 });
      expect((await reg.list({ prefix: '', service: 'bad.Svc' })).instances.map((i) => i.address)).toEqual(['127.0.0.1:1']);
      await reg.deregister({ prefix: '', service: 'bad.Svc', lease: 'l1' });
      expect((await reg.list({ prefix: '', service: 'bad.Svc' })).instances).toEqual([]);
    } finally {
      reg.close();
    }
  });

  it('kv serve --no-services serves PaxosKV only: ConfigCenter is UNIMPLEMENTED there', async () => {
    const [port] = await freePorts(1);
    const address = `127.0.0.1:${port}`;
    const solo = spawnSvrkit(['kv', 'serve', '--id', '1', '--peers', `1=${address}`, '--data-dir', path.join(BASE, 'solo'), '--no-services']);
    const ops = new ConfigCenterClient(address);
    const kv = new PaxosKVClient({ peers: [address] });
    try {
      await waitVoting(solo, 'the replica');
      expect(solo.stdout()).not.toContain('also the config center');
      expect(await kv.put('k', new TextEncoder().encode('v'))).toBe(1n);
      const err = await ops.get({ namespace: 'x' }).then(() => undefined, (e: unknown) => e);
      expect(err).toMatchObject({ code: Status.UNIMPLEMENTED });
    } finally {
      ops.close();
      kv.close();
      await stopProc(solo, 'SIGTERM');
    }
  });

  it('200 watchers on config servers, half in the gray, through promotes while a config server and then a replica are SIGKILLed: releases never go down, no gray reader goes back', async () => {
    const ns = 'atomic.served';
    const ops = new ConfigCenterClient(`static:///${servers.map((s) => s.address).join(',')}`);
    const cacheFile = path.join(BASE, 'cache', `${ns}.json`);
    await ops.publish({ namespace: ns, set: { v: 'g1', k: 'base' } });
    // Each watcher names both config servers, in either order (a channel over a static list balances over both).
    const target = `config://${servers.map((s) => s.address).join(',')}`;
    const watchers = grayWatchers(200, (i, canary) => new ConfigClient({ target, namespace: ns, instance: { labels: { ring: canary ? 'canary' : 'main' } }, ...(i === 0 ? { cacheFile } : {}) }));
    try {
      await Promise.all(watchers.map((w) => w.c.ready()));
      const round = async (n: number): Promise<void> => {
        await ops.gray({ namespace: ns, set: { v: `g${n}` }, rules: ['label:ring=canary'] });
        await ops.publish({ namespace: ns, set: { k: `base${n}` } });
        await ops.promote({ namespace: ns });
      };
      await round(2);
      // A config server dies: its watchers move to the other one.
      await stopProc(servers[0]!.proc, 'SIGKILL');
      await round(3);
      // A PaxosKV replica dies during a promote: the config server's PaxosKV client and watch move on.
      await ops.gray({ namespace: ns, set: { v: 'g4' }, rules: ['label:ring=canary'] });
      const promote = ops.promote({ namespace: ns }, { timeoutMs: 15_000 });
      await stopProc(cluster.replicas.get(1)!, 'SIGKILL');
      await promote;
      await round(5);
      const finalSeq = headOf(await ops.get({ namespace: ns })).opSeq;
      await eventually('every watcher to reach the last head', () => watchers.every((w) => w.c.head.opSeq === finalSeq), (v) => v, 30_000);
      for (const w of watchers) expect(w.c.source).toBe('server');
      expectNoneWentBack(watchers);
      expect(watchers[1]!.c.get('v')).toBe('g5');
    } finally {
      ops.close();
      await Promise.all(watchers.map((w) => w.c.close()));
      await cluster.serve(1);
    }
    // Every config server down: a client restarted with the cache file serves the cached head, and says so.
    await stopProc(servers[1]!.proc, 'SIGKILL');
    const restarted = new ConfigClient({ target, namespace: ns, instance: { labels: { ring: 'main' } }, cacheFile, readyTimeoutMs: 300 });
    try {
      await restarted.ready();
      expect(restarted.source).toBe('cache');
      expect(restarted.get('v')).toBe('g5');
    } finally {
      await restarted.close();
    }
  }, 120_000);
});

describe('ConfigCenterServer fan-out (in this process)', () => {
  let cluster: InProcessCluster;
  let kv: PaxosKVClient;
  let service: ConfigCenterServer;
  let server: Server;

  beforeAll(async () => {
    cluster = await startInProcessCluster(path.join(BASE, 'inproc'));
    kv = new PaxosKVClient({ peers: cluster.addresses });
    service = new ConfigCenterServer(kv, { lingerMs: 100 });
    server = new Server();
    server.addService(service);
    await server.listen(0, '127.0.0.1');
  });
  afterAll(async () => {
    service.close();
    await server.close();
    kv.close();
    await cluster.close();
  });

  it('one PaxosKV watch per namespace however many clients watch it; none once they leave', async () => {
    const clients = Array.from({ length: 100 }, (_, i) => new ConfigClient({ target: `config://${server.address}`, namespace: i % 2 === 0 ? 'fan.a' : 'fan.b' }));
    try {
      await Promise.all(clients.map((c) => c.ready()));
      expect(service.fanout.upstreams).toBe(2);
      expect(service.fanout.subscribers).toBe(100);
      const ops = new ConfigCenterClient(server.address);
      await ops.publish({ namespace: 'fan.a', set: { x: '1' } });
      ops.close();
      await eventually('the fan.a clients to see the release', () => clients.every((c, i) => (i % 2 === 0 ? c.get('x') === '1' : c.head.opSeq === 0)));
    } finally {
      await Promise.all(clients.map((c) => c.close()));
    }
    await eventually('the namespaces to be let go', () => service.fanout.upstreams === 0);
  });
});
