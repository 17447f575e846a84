/**
 * A shedding replica must not stop PaxosKV writes.
 *
 * First, the refusal itself: a replica that answers every call as FastReject does when it sheds
 * (RESOURCE_EXHAUSTED, not processed, advertising a level) is tried first, and every write still
 * succeeds on the real replicas behind it.
 *
 * Then the sequence an adversarial probe found. Three real `svrkit kv serve` replicas and 16
 * writers, each a `PaxosKVClient` starting on a different replica (writer i on replica i % 3 + 1).
 * Replica 2 is frozen (SIGSTOP) for 10 s and resumed: its socket buffers then hold 10 s of peer
 * traffic and client calls, and it sheds (FastReject refuses client calls, not processed, and the
 * channels to it shed locally by the level it advertises). 3 s later replica 1 is SIGKILLed, and
 * restarted 3 s after that. A majority is up throughout, so every write must succeed: the clients
 * fail over on every refusal that is safe to retry, and no 100 ms bucket from the freeze to 3 s
 * after the kill is without a successful write. Every writer's key then reads as its last
 * acknowledged write.
 *
 * Whether the resumed replica sheds depends on how much this machine queued in its 10 s; the
 * first test pins the refusal down either way. Bounds, not timings: the test counts failures and
 * empty buckets; how fast each write was is not asserted.
 */
import { promises as fsp } from 'node:fs';
import { createServer, type Server as NetServer, type Socket } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PaxosKVClient, RpcError } from '../../index.js';
import { errors, type RpcErrorEntry } from '../../framework/errors.js';
import { kvErrors } from '../../services/paxoskv/errors.js';
import { errorHeader } from '../../framework/server/server-connection.js';
import { FrameDecoder, FrameKind } from '../../framework/wire/frame.js';
import { Status } from '../../framework/wire/status.js';
import { exclusively } from '../support/exclusive.js';
import { rawFrame } from '../support/raw-frame.js';
import { freePorts, killStarted, spawnSvrkit, stopProc, waitServing, waitVoting, type Proc } from '../support/kv-processes.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BASE = path.join(ROOT, 'test', '.tmp', `paxoskv-shedding-${process.pid}`);
const IDS = [1, 2, 3];
const WRITERS = 16;
const BUCKET_MS = 100;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const text = (s: string) => new TextEncoder().encode(s);

afterAll(async () => {
  await killStarted();
  await fsp.rm(BASE, { recursive: true, force: true });
});

/**
 * A fake replica on 127.0.0.1: answers PINGs, and every REQUEST with the status header `answer`
 * makes for its call id (no body).
 */
async function fakeReplica(answer: (callId: number) => Uint8Array): Promise<{ address: string; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: NetServer = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    const decoder = new FrameDecoder(1 << 20, (kind, callId) => {
      if (kind === FrameKind.PING) socket.write(rawFrame(FrameKind.PONG, callId, new Uint8Array(0), new Uint8Array(0)));
      if (kind === FrameKind.REQUEST) socket.write(rawFrame(FrameKind.RESPONSE, callId, answer(callId), new Uint8Array(0)));
    });
    socket.on('data', (chunk: Buffer) => decoder.push(chunk));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    address: `127.0.0.1:${(server.address() as { port: number }).port}`,
    close: async () => {
      for (const x of sockets) x.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

describe('PaxosKV clients fail over from a shedding replica', () => {
  const addresses = new Map<number, string>();
  const replicas = new Map<number, Proc>();
  let peersFlag = '';

  const startReplica = async (id: number, voting: boolean): Promise<void> => {
    const p = spawnSvrkit(['kv', 'serve', '--id', String(id), '--peers', peersFlag, '--data-dir', path.join(BASE, `replica-${id}`)]);
    replicas.set(id, p);
    if (voting) await waitVoting(p, `replica ${id}`);
    else await waitServing(p, `replica ${id}`);
  };

  beforeAll(async () => {
    await fsp.mkdir(BASE, { recursive: true });
    const ports = await freePorts(IDS.length);
    for (const id of IDS) addresses.set(id, `127.0.0.1:${ports[id - 1]}`);
    peersFlag = IDS.map((id) => `${id}=${addresses.get(id)}`).join(',');
    await Promise.all(IDS.map((id) => startReplica(id, true)));
  });

  afterAll(async () => {
    for (const p of replicas.values()) {
      if (p.child.pid !== undefined && p.child.exitCode === null) p.child.kill('SIGCONT');
      await stopProc(p, 'SIGKILL').catch(() => undefined);
    }
  });

  it('a replica that refuses every call unprocessed for overload is failed over, and a refused compare-and-set stays unambiguous', async () => {
    // A replica shedding everything, as FastReject answers on the wire: RESOURCE_EXHAUSTED, not
    // processed, advertising admission level 389 (the channel then sheds locally above it too).
    const refused: number[] = [];
    const shedding = await fakeReplica((callId) => {
      refused.push(callId);
      return errorHeader(389, errors.OVERLOADED_PRIORITY, 8264, 389);
    });
    const sheddingAddress = shedding.address;
    // The shedding replica is tried first, every time the client starts over.
    const kv = new PaxosKVClient({ peers: [sheddingAddress, ...IDS.map((id) => addresses.get(id)!)] });
    try {
      const v1 = await kv.put('shed', text('a'), { timeoutMs: 5000 });
      expect(refused.length).toBeGreaterThan(0);
      expect(await kv.compareAndSet('shed', v1, text('b'), { timeoutMs: 5000 })).toBe(v1 + 1n);
      // A stale compare-and-set: the refusals before it were unprocessed, so its failure is a
      // plain FAILED_PRECONDITION, not "outcome unknown".
      const stale = new PaxosKVClient({ peers: [sheddingAddress, ...IDS.map((id) => addresses.get(id)!)] });
      try {
        const err = await stale.compareAndSet('shed', v1, text('c'), { timeoutMs: 5000 }).then(() => undefined, (e: unknown) => e);
        expect(err).toBeInstanceOf(RpcError);
        expect((err as RpcError).code).toBe(Status.FAILED_PRECONDITION);
      } finally {
        stale.close();
      }
      expect(new TextDecoder().decode((await kv.get('shed', { timeoutMs: 5000 }))!.value)).toBe('b');
    } finally {
      kv.close();
      await shedding.close();
    }
  });

  it('a replica that refuses a key it is repairing (not applied) is failed over, and a compare-and-set stays unambiguous; a plain UNAVAILABLE leaves it unknown', async () => {
    // Replicas answering every call as a replica repairing the key does (UNAVAILABLE, reason
    // REPLICA_UNAVAILABLE_NOT_APPLIED), and as one that gave up after sending the value (plain
    // REPLICA_UNAVAILABLE: the write may still be chosen).
    const fake = (entry: RpcErrorEntry<[coreMessage: string]>) => fakeReplica(() => errorHeader(undefined, entry, 'replica 9: key is being repaired'));
    const repairing = await fake(kvErrors.REPLICA_UNAVAILABLE_NOT_APPLIED);
    const gaveUp = await fake(kvErrors.REPLICA_UNAVAILABLE);
    const real = IDS.map((id) => addresses.get(id)!);
    const kv = new PaxosKVClient({ peers: real });
    try {
      const v1 = await kv.put('mend', text('a'), { timeoutMs: 5000 });
      await kv.put('mend', text('b'), { timeoutMs: 5000 });
      const staleCas = async (first: string): Promise<unknown> => {
        const c = new PaxosKVClient({ peers: [first, ...real] });
        try {
          return await c.compareAndSet('mend', v1, text('c'), { timeoutMs: 5000 }).then(() => undefined, (e: unknown) => e);
        } finally {
          c.close();
        }
      };
      const known = await staleCas(repairing.address);
      expect(known).toBeInstanceOf(RpcError);
      expect((known as RpcError).code).toBe(Status.FAILED_PRECONDITION);
      const unknown = await staleCas(gaveUp.address);
      expect(unknown).toBeInstanceOf(RpcError);
      expect((unknown as RpcError).reason).toBe('CAS_OUTCOME_UNKNOWN');
      expect(new TextDecoder().decode((await kv.get('mend', { timeoutMs: 5000 }))!.value)).toBe('b');
    } finally {
      kv.close();
      await repairing.close();
      await gaveUp.close();
    }
  });

  // It asserts that every 100 ms has a successful write: it takes the timing lock, so that no
  // other load test shares the two cores with it.
  it('freeze one replica for 10 s, resume it, kill another: no failed write, no 100 ms without a successful one', { timeout: 200_000 }, () => exclusively('timing', async () => {
    const clients = Array.from({ length: WRITERS }, (_, i) => {
      const order = IDS.map((_, k) => IDS[(i + k) % IDS.length]!);
      return new PaxosKVClient({ peers: order.map((id) => addresses.get(id)!) });
    });
    const failures: string[] = [];
    const successes: number[] = [];
    const acked: string[] = Array.from({ length: WRITERS }, () => '');
    let stop = false;
    const writer = async (i: number): Promise<void> => {
      for (let n = 1; !stop; n++) {
        const value = `${i}:${n}`;
        try {
          await clients[i]!.put(`w${i}`, text(value), { timeoutMs: 5000 });
          successes.push(Date.now());
          acked[i] = value;
        } catch (err) {
          failures.push(`writer ${i}, write ${n} at ${Date.now()}: ${err instanceof RpcError ? `${err.code} ${err.message}` : String(err)}`);
          await sleep(10);
        }
      }
    };
    const writers = clients.map((_, i) => writer(i));
    try {
      await sleep(1000);
      const frozen = replicas.get(2)!.child;
      const from = Date.now();
      frozen.kill('SIGSTOP');
      await sleep(10_000);
      frozen.kill('SIGCONT');
      await sleep(3000);
      await stopProc(replicas.get(1)!, 'SIGKILL');
      await sleep(3000);
      // The issue's sequence ends here; then replica 1 comes back (a process start: a second of
      // both cores), and the writes must go on without a failure.
      const to = Date.now();
      await startReplica(1, false);
      await sleep(2000);
      stop = true;
      await Promise.all(writers);

      expect(failures.slice(0, 10), `${failures.length} failed writes`).toEqual([]);
      // Whole buckets only: the last, cut short by `to`, may be too short to hold a write.
      const buckets = new Uint32Array(Math.floor((to - from) / BUCKET_MS));
      for (const t of successes) if (t >= from && t < to) buckets[Math.floor((t - from) / BUCKET_MS)]!++;
      const empty = [...buckets.keys()].filter((b) => buckets[b] === 0).map((b) => `${b * BUCKET_MS} ms`);
      expect(empty, 'buckets with no successful write, from the freeze').toEqual([]);
      // Nothing acknowledged was lost: each key reads as its writer's last acknowledged write.
      const reader = new PaxosKVClient({ peers: IDS.map((id) => addresses.get(id)!) });
      try {
        for (let i = 0; i < WRITERS; i++) {
          const got = await reader.get(`w${i}`, { timeoutMs: 5000 });
          expect(new TextDecoder().decode(got!.value), `key w${i}`).toBe(acked[i]);
        }
      } finally {
        reader.close();
      }
    } finally {
      stop = true;
      await Promise.allSettled(writers);
      for (const c of clients) c.close();
    }
  }));
});
