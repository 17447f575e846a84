import { promises as fsp } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { PaxosKVClient, RpcError, Status } from '../../index.js';
import { PaxosKVClient as PaxosKVStub, PaxosPeerClient } from '../../services/paxoskv/gen/svrkit/paxoskv/paxoskv.js';
import type { PeerMessage } from '../../services/paxoskv/core/types.js';
import { MAX_PEER_BATCH_BYTES, PaxosKVReplica, splitBatch } from '../../services/paxoskv/replica-server.js';
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
    const r = await PaxosKVReplica.start({ id, members, dataDir: path.join(BASE, `r${id}`) });
    replicas.set(id, r);
    return r;
  };

  beforeAll(async () => {
    for (const id of [1, 2, 3]) members.set(id, `127.0.0.1:${await freePort()}`);
    await Promise.all([1, 2, 3].map((id) => start(id).then((r) => r.ready(10_000))));
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
    const restarted = await start(2);
    // It votes once a majority of the other voters confirmed its new incarnation.
    expect(restarted.mode).toBe('checking');
    await restarted.ready(10_000);
    expect(restarted.status().incarnation).toBe(2n);
    const two = new PaxosKVStub(members.get(2)!);
    try {
      const r = await two.get({ key: 'c' }, { timeoutMs: 2000 });
      expect(r.version).toBe(v);
      expect(str(r.value)).toBe('while 2 is down');
    } finally {
      two.close();
    }
  });

  it('a replica repairing a key refuses its operations as not applied (a client may retry them elsewhere)', async () => {
    const v = await kv.put('mended', text('kept'));
    // Replica 2 is down, so replica 1 cannot finish the repair (it reads every other voter).
    await replicas.get(2)!.close();
    expect(replicas.get(1)!.repair('mended')).toBe(true);
    const one = new PaxosKVStub(members.get(1)!);
    try {
      const err = await expectStatus(one.compareAndSet({ key: 'mended', expectedVersion: v, value: text('x') }, { timeoutMs: 2000 }), Status.UNAVAILABLE);
      expect(err.reason).toBe('REPLICA_UNAVAILABLE_NOT_APPLIED');
      expect(err.message).toMatch(/mended/);
    } finally {
      one.close();
    }
    const restarted = await start(2);
    await restarted.ready(10_000);
    for (let i = 0; i < 100 && replicas.get(1)!.status().lostKeysRepairing > 0n; i++) await new Promise((r) => setTimeout(r, 50));
    expect(replicas.get(1)!.status()).toMatchObject({ lostKeysRepairing: 0n, lostKeysRepaired: 1n });
    expect(str((await kv.get('mended'))!.value)).toBe('kept');
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
        peer.deliver({ from: 2, cluster: '1,2,3', messages: [{ key: 'k', index: 1n, ballot: 1n, kind: { $case: 'accept', value: { entry: undefined } } }] }, { timeoutMs: 2000 }),
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
    expect(s.mode).toBe('voter');
    expect(s.voters).toEqual([1, 2, 3]);
    expect(s.keys).toBeGreaterThan(0n);
  });

  it('refuses to start on a data dir that belongs to another member, or one in use', async () => {
    const spare = path.join(BASE, 'spare');
    await (await KeyStore.open(spare, { memberId: 3, members: [1, 2, 3] })).close();
    await expect(PaxosKVReplica.start({ id: 1, members, dataDir: spare })).rejects.toThrow(/belongs to member 3 of cluster \[1,2,3\]; this replica is member 1/);
    await expect(PaxosKVReplica.start({ id: 3, members, dataDir: path.join(BASE, 'r3') })).rejects.toThrow(DataDirError);
  });
});

describe('a replica of one group of many', () => {
  it('keeps its group with its data: refuses to start without it or with another, and refuses a join across groups', async () => {
    const dir = path.join(BASE, 'grouped');
    const members = new Map([[1, `127.0.0.1:${await freePort()}`]]);
    const system = [members.get(1)!];
    const r = await PaxosKVReplica.start({ id: 1, members, dataDir: dir, routing: { group: 2, system } });
    // No table yet: it serves no key, as not applied (a client may ask another replica).
    const stub = new PaxosKVStub(members.get(1)!);
    try {
      await r.ready(10_000);
      const err = await expectStatus(stub.get({ key: 'k' }, { timeoutMs: 2000 }), Status.UNAVAILABLE);
      expect(err.message).toMatch(/replica 1 of group 2 has not read the routing table from the system group yet/);
      expect((await stub.routing({}, { timeoutMs: 2000 })).group).toBe(2);
    } finally {
      stub.close();
      await r.close();
    }
    await expect(PaxosKVReplica.start({ id: 1, members, dataDir: dir })).rejects.toThrow(/holds a replica of a group of a cluster of many groups \(routing.json\): start it with its --group/);
    await expect(PaxosKVReplica.start({ id: 1, members, dataDir: dir, routing: { group: 3, system } })).rejects.toThrow(/holds a replica of group 2, not of group 3 \(--group\)/);
    // A join: the cluster's fingerprint says which group it is.
    const join = { id: 2, members: new Map([...members, [2, `127.0.0.1:${await freePort()}`]]), join: [1], dataDir: path.join(BASE, 'joiner') };
    await expect(PaxosKVReplica.start({ ...join, cluster: '1,2,3/group=2' })).rejects.toThrow(/is group 2 of a cluster of many groups: start this replica with --group 2/);
    await expect(PaxosKVReplica.start({ ...join, cluster: '1,2,3/group=2', routing: { group: 1, system } })).rejects.toThrow(/with --group 2 \(and --routing\), not --group 1/);
    await expect(PaxosKVReplica.start({ ...join, cluster: '1,2,3', routing: { group: 1, system } })).rejects.toThrow(/the cluster to join has one group/);
  });
});

describe('the replica driver', () => {
  it('splits one peer\'s messages into batches well under the frame limit, in order', () => {
    const mib = new Uint8Array(1024 * 1024);
    const messages: PeerMessage[] = Array.from({ length: 20 }, (_, i) => ({
      type: 'accept',
      key: `k${i}`,
      index: 1,
      ballot: 1,
      entry: { index: 1, value: mib, writer: null, proposer: 1, time: 0, sessions: [] },
      epoch: 1,
    }));
    const batches = splitBatch(messages, MAX_PEER_BATCH_BYTES);
    expect(batches.length).toBeGreaterThanOrEqual(5);
    expect(batches.flat()).toEqual(messages);
    for (const b of batches) expect(b.length * mib.length).toBeLessThanOrEqual(MAX_PEER_BATCH_BYTES);
    // Small messages stay in one batch; a single oversized one goes alone.
    expect(splitBatch(messages.slice(0, 1), 100)).toHaveLength(1);
    expect(splitBatch([{ type: 'catchUp', key: 'a', knownIndex: 0 }, { type: 'catchUp', key: 'b', knownIndex: 0 }], MAX_PEER_BATCH_BYTES)).toHaveLength(1);
  });

  describe('with a cluster', () => {
    const base = path.join(BASE, 'driver');
    const members = new Map<number, string>();
    const replicas = new Map<number, PaxosKVReplica>();
    let kv: PaxosKVClient;
    // Client, replicas and 20 MiB of fsync share one event loop here: FastReject would rightly shed
    // the client's calls, which is not what these tests are about.
    const start = async (id: number) => {
      const r = await PaxosKVReplica.start({ id, members, dataDir: path.join(base, `r${id}`), server: { overload: false } });
      replicas.set(id, r);
      return r;
    };

    beforeAll(async () => {
      for (const id of [1, 2, 3]) members.set(id, `127.0.0.1:${await freePort()}`);
      await Promise.all([1, 2, 3].map((id) => start(id).then((r) => r.ready(10_000))));
      kv = new PaxosKVClient({ peers: [...members.values()], attemptTimeoutMs: 2000, defaultTimeoutMs: 20_000 });
    });
    afterAll(async () => {
      vi.restoreAllMocks();
      kv.close();
      for (const r of replicas.values()) await r.close();
    });

    // 20 MiB through three replicas in this one process: seconds on a quiet machine, more while
    // other test files load both cores (a functional test: the limit is generous, not a timing).
    it('writes twenty 1 MiB values at once (more than one frame\'s worth for each peer)', { timeout: 90_000 }, async () => {
      const value = new Uint8Array(1024 * 1024).fill(7);
      const versions = await Promise.all(Array.from({ length: 20 }, (_, i) => kv.put(`big${i}`, value)));
      expect(versions).toEqual(Array.from({ length: 20 }, () => 1n));
      const got = await kv.get('big19');
      expect(got?.value.length).toBe(value.length);
    });

    it('rejects malformed write ids with INVALID_ARGUMENT naming the field', async () => {
      const stub = new PaxosKVStub(members.get(1)!);
      try {
        const writeId = { client: 'c', seq: 1n, ackedBelow: 1n, sentAtMs: 1000n, expiresAtMs: 2000n };
        const cases: Array<[Partial<typeof writeId>, RegExp]> = [
          [{ client: '' }, /client must not be empty/],
          [{ client: 'x'.repeat(65) }, /client is longer than 64 bytes/],
          [{ seq: 0n }, /seq must be at least 1/],
          [{ ackedBelow: 2n }, /acked_below 2 is above the write's own seq 1/],
          [{ expiresAtMs: 999n }, /expires_at_ms 999 is before sent_at_ms 1000/],
          [{ expiresAtMs: 1000n + 60_001n }, /more than 60000 ms after sent_at_ms/],
        ];
        for (const [patch, message] of cases) {
          const err = await expectStatus(stub.put({ key: 'w', value: text('v'), writeId: { ...writeId, ...patch } }, { timeoutMs: 2000 }), Status.INVALID_ARGUMENT);
          expect(err.message).toMatch(message);
        }
      } finally {
        stub.close();
      }
    });

    it('a wall-clock step back by an hour does not stall a read that waits on the replica\'s timers', { timeout: 30_000 }, async () => {
      await kv.put('clock', text('before'));
      await replicas.get(2)!.close();
      await replicas.get(3)!.close();
      const one = new PaxosKVStub(members.get(1)!);
      try {
        const read = one.get({ key: 'clock' }, { timeoutMs: 10_000 });
        // The read waits for a majority on replica 1's phase timers; now the wall clock jumps back.
        const realNow = Date.now.bind(Date);
        await new Promise((r) => setTimeout(r, 100));
        vi.spyOn(Date, 'now').mockImplementation(() => realNow() - 3_600_000);
        await new Promise((r) => setTimeout(r, 300));
        await Promise.all([2, 3].map((id) => start(id)));
        const r = await read;
        expect(str(r.value)).toBe('before');
      } finally {
        vi.restoreAllMocks();
        one.close();
      }
    });
  });
});
