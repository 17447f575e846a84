import { promises as fsp } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PaxosKVClient, RpcError, Status } from '../../index.js';
import { PaxosKVClient as PaxosKVStub, PaxosPeerClient } from '../../services/paxoskv/gen/svrkit/paxoskv/paxoskv.js';
import { PaxosKVReplica } from '../../services/paxoskv/replica-server.js';
import { DataDirError, KeyStore } from '../../services/paxoskv/storage.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BASE = path.join(ROOT, 'test', '.tmp', `paxoskv-replica-${process.pid}`);
const text = (s: string) => new TextEncoder().encode(s);
const str = (b: Uint8Array) => new TextDecoder().decode(b);

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

async function expectStatus(p: Promise<unknown>, code: Status): Promise<RpcError> {
  const err = await p.then(
    () => new Error('expected the call to fail'),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(RpcError);
  expect((err as RpcError).codeName).toBe(Status[code]);
  return err as RpcError;
}

describe('a three-replica PaxosKV cluster in one process', () => {
  const members = new Map<number, string>();
  const replicas = new Map<number, PaxosKVReplica>();
  let kv: PaxosKVClient;

  const start = async (id: number) => {
    replicas.set(id, await PaxosKVReplica.start({ id, members, dataDir: path.join(BASE, `r${id}`) }));
  };

  beforeAll(async () => {
    for (const id of [1, 2, 3]) members.set(id, `127.0.0.1:${await freePort()}`);
    for (const id of [1, 2, 3]) await start(id);
    kv = new PaxosKVClient({ peers: [...members.values()], attemptTimeoutMs: 500 });
  });
  afterAll(async () => {
    kv.close();
    for (const r of replicas.values()) await r.close();
    await fsp.rm(BASE, { recursive: true, force: true });
  });

  it('puts, gets, deletes and compares-and-sets with exact versions', async () => {
    expect(await kv.get('a')).toBeNull();
    expect(await kv.put('a', text('one'))).toBe(1n);
    const got = await kv.get('a');
    expect(got && str(got.value)).toBe('one');
    expect(got?.version).toBe(1n);
    expect(await kv.compareAndSet('a', 1n, text('two'))).toBe(2n);
    const stale = await expectStatus(kv.compareAndSet('a', 1n, text('nope')), Status.FAILED_PRECONDITION);
    expect(stale.metadata['x-version']).toBe('2');
    expect(await kv.delete('a')).toBe(3n);
    expect(await kv.get('a')).toBeNull();
    expect(await kv.compareAndSet('a', 0n, text('again'))).toBe(4n);
    await expectStatus(kv.compareAndSet('a', 0n, text('exists')), Status.FAILED_PRECONDITION);
  });

  it('reads every write from every replica (each replica serves linearizable reads)', async () => {
    await kv.put('b', text('written'));
    for (const address of members.values()) {
      const one = new PaxosKVStub(address);
      try {
        const r = await one.get({ key: 'b' }, { timeoutMs: 2000 });
        expect(r.found).toBe(true);
        expect(str(r.value)).toBe('written');
      } finally {
        one.close();
      }
    }
  });

  it('serializes concurrent writers: every put gets its own version', async () => {
    const versions = await Promise.all(Array.from({ length: 30 }, (_, i) => kv.put('hot', text(`w${i}`))));
    expect(new Set(versions).size).toBe(30);
    expect(versions.map(Number).sort((x, y) => x - y)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
  });

  it('keeps serving writes and reads with one replica down, and the restarted one catches up', async () => {
    await replicas.get(2)!.close();
    const v = await kv.put('c', text('while 2 is down'));
    expect(str((await kv.get('c'))!.value)).toBe('while 2 is down');
    await start(2);
    const two = new PaxosKVStub(members.get(2)!);
    try {
      const r = await two.get({ key: 'c' }, { timeoutMs: 2000 });
      expect(r.version).toBe(v);
      expect(str(r.value)).toBe('while 2 is down');
    } finally {
      two.close();
    }
  });

  it('refuses bad input: empty keys, oversized values, batches from another cluster, malformed peer messages', async () => {
    await expectStatus(kv.put('', text('x')), Status.INVALID_ARGUMENT);
    await expectStatus(kv.put('big', new Uint8Array(1024 * 1024 + 1)), Status.INVALID_ARGUMENT);
    const peer = new PaxosPeerClient(members.get(1)!);
    try {
      const foreign = await expectStatus(peer.deliver({ from: 2, cluster: '1,2,3,4,5', messages: [] }, { timeoutMs: 2000 }), Status.FAILED_PRECONDITION);
      expect(foreign.message).toContain('cluster [1,2,3,4,5]');
      await expectStatus(peer.deliver({ from: 9, cluster: '1,2,3', messages: [] }, { timeoutMs: 2000 }), Status.FAILED_PRECONDITION);
      const malformed = await expectStatus(
        peer.deliver({ from: 2, cluster: '1,2,3', messages: [{ key: 'k', index: 1n, ballot: 1n }] }, { timeoutMs: 2000 }),
        Status.INVALID_ARGUMENT,
      );
      expect(malformed.message).toContain('no kind');
      await expectStatus(
        peer.deliver({ from: 2, cluster: '1,2,3', messages: [{ key: 'k', index: 1n, ballot: 1n, accept: { entry: undefined } }] }, { timeoutMs: 2000 }),
        Status.INVALID_ARGUMENT,
      );
    } finally {
      peer.close();
    }
    // Still serving.
    expect(await kv.put('after-bad-input', text('ok'))).toBe(1n);
  });

  it('reports status per replica', async () => {
    const s = await kv.status(0);
    expect(s.memberId).toBe(1);
    expect(s.members).toEqual([1, 2, 3]);
    expect(s.learnerOnly).toBe(false);
    expect(s.keys).toBeGreaterThan(0n);
  });

  it('refuses to start on a data dir that belongs to another member, or one in use', async () => {
    const spare = path.join(BASE, 'spare');
    await (await KeyStore.open(spare, { memberId: 3, members: [1, 2, 3] })).close();
    await expect(PaxosKVReplica.start({ id: 1, members, dataDir: spare })).rejects.toThrow(/belongs to member 3 of cluster \[1,2,3\]; this replica is member 1/);
    await expect(PaxosKVReplica.start({ id: 3, members, dataDir: path.join(BASE, 'r3') })).rejects.toThrow(DataDirError);
  });
});
