/**
 * PaxosKV membership changes as real processes (issue 16), under concurrent client load:
 * - a replica of three is SIGKILLed and replaced by a new, empty one (`svrkit kv serve --join`,
 *   then `PaxosKVClient.changeMembers`, which `svrkit kv member replace` runs);
 * - the cluster grows from three to five (add, twice) and shrinks back to three (remove, twice);
 * - a change whose new member never comes up (`kv member add`, `list` and `abort`).
 * Each run checks that writes never stop (no 100 ms bucket without an acknowledged write), that
 * the recorded history is linearizable, that no acknowledged write is lost, and that a new replica
 * serves reads once it caught up. Structure is deterministic (seeded operations, fixed phases);
 * the timing figures are printed.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { PaxosKVClient } from '../../index.js';
import type { MembershipChange } from '../../services/paxoskv/core/membership.js';
import { PaxosKVClient as PaxosKVStub } from '../../services/paxoskv/gen/svrkit/paxoskv/paxoskv.js';
import { checkKvHistory } from '../support/linearizability.js';
import { freePorts, killStarted, runSvrkit, spawnSvrkit, stopProc, waitServing, type Proc } from '../support/kv-processes.js';
import { KvLoad } from '../support/kv-load.js';
import { exclusively } from '../support/exclusive.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BASE = path.join(ROOT, 'test', '.tmp', `paxoskv-membership-${process.pid}`);
const KEYS = ['k0', 'k1', 'k2', 'k3', 'k4', 'k5'];
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

afterAll(async () => {
  await killStarted();
  await fsp.rm(BASE, { recursive: true, force: true });
});

/** A cluster of real replicas: three founding ones on --peers, and room for two that join. */
class Cluster {
  readonly addresses = new Map<number, string>();
  readonly replicas = new Map<number, Proc>();
  private peersFlag = '';

  constructor(private readonly dir: string) {}

  async start(): Promise<void> {
    await fsp.mkdir(this.dir, { recursive: true });
    const ports = await freePorts(5);
    for (let id = 1; id <= 5; id++) this.addresses.set(id, `127.0.0.1:${ports[id - 1]}`);
    this.peersFlag = [1, 2, 3].map((id) => `${id}=${this.addresses.get(id)}`).join(',');
    await Promise.all([1, 2, 3].map(async (id) => {
      const p = spawnSvrkit(['kv', 'serve', '--id', String(id), '--peers', this.peersFlag, '--data-dir', this.dataDir(id), '--no-services']);
      this.replicas.set(id, p);
      await waitServing(p, `replica ${id}`);
    }));
  }

  dataDir(id: number): string {
    return path.join(this.dir, `replica-${id}`);
  }

  /** Starts member `id` with --join (asking the founding members that are up). */
  async join(id: number, askable: number[]): Promise<Proc> {
    const join = askable.map((m) => `${m}=${this.addresses.get(m)}`).join(',');
    const p = spawnSvrkit(['kv', 'serve', '--id', String(id), '--address', this.addresses.get(id)!, '--join', join, '--data-dir', this.dataDir(id), '--no-services']);
    this.replicas.set(id, p);
    await waitServing(p, `replica ${id}`, 1, 20_000, /joining: waiting to be added/gm);
    return p;
  }

  /** Runs `svrkit kv member ...` against the given members. */
  async member(args: string[], via: number[]): Promise<{ epoch: number; voters: number[]; ms: number }> {
    const peers = via.map((m) => `${m}=${this.addresses.get(m)}`).join(',');
    const r = await runSvrkit(['kv', 'member', ...args, '--peers', peers, '--timeout', '30000'], { timeoutMs: 40_000 });
    expect(r.code, `kv member ${args.join(' ')}: ${r.stderr}`).toBe(0);
    return JSON.parse(r.stdout.trim()) as { epoch: number; voters: number[]; ms: number };
  }

  async stopAll(): Promise<void> {
    for (const p of this.replicas.values()) await stopProc(p, 'SIGKILL').catch(() => undefined);
  }
}

/**
 * The end of a run: stops the load, then checks no empty 100 ms bucket from `from`, every final
 * read (through `readers`), linearizability, and that no acknowledged write was lost.
 */
async function checkRun(load: KvLoad, cluster: Cluster, readers: number[], from: number, what: string): Promise<void> {
  const to = performance.now();
  await load.stop();
  const empty = load.emptyWriteBuckets(from, to);
  const gap = load.longestWriteGap(from, to);
  console.log(
    `paxoskv membership (${what}): ${JSON.stringify(load.counts)}; ${load.writesBetween(from, to)} writes acknowledged over ${Math.round(to - from)} ms; ` +
      `longest stretch without one ${Math.round(gap.ms)} ms; empty 100 ms buckets ${empty.length}`,
  );
  expect(load.unexpected, 'errors other than FAILED_PRECONDITION (cas), UNKNOWN, UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED').toEqual([]);
  expect(empty, `100 ms buckets without an acknowledged write (ms after the load began): the longest stretch was ${Math.round(gap.ms)} ms`).toEqual([]);

  const finalVersion = new Map<string, bigint>();
  for (const [k, key] of KEYS.entries()) {
    for (let attempt = 0; ; attempt++) {
      const id = readers[(k + attempt) % readers.length]!;
      const stub = new PaxosKVStub(cluster.addresses.get(id)!);
      const op = load.history.invoke(100 + id, key, { kind: 'get' }, performance.now());
      try {
        const reply = await stub.get({ key }, { timeoutMs: 2000 });
        load.history.complete(op, reply.found ? { value: reply.value, version: reply.version } : null, performance.now());
        finalVersion.set(key, reply.version);
        break;
      } catch (err) {
        load.history.discard(op);
        if (attempt >= 8) throw new Error(`no replica served the final read of ${key}: ${String(err)}`);
      } finally {
        stub.close();
      }
    }
  }
  const result = checkKvHistory(load.history.operations());
  expect(result.verdict, result.explanation).toBe('linearizable');
  for (const key of KEYS) {
    const highest = load.acked.filter((w) => w.key === key).reduce((m, w) => (w.version > m ? w.version : m), 0n);
    expect(finalVersion.get(key)! >= highest, `${key}: final version ${finalVersion.get(key)} < acknowledged write version ${highest}: a write was lost`).toBe(true);
  }
}

/** Reads every key through the others and then through member `id` alone: it serves them, as new. */
async function servesReads(cluster: Cluster, id: number, others: number[]): Promise<void> {
  // The raw stub: it reports the version of a deleted key too.
  const only = new PaxosKVStub(cluster.addresses.get(id)!);
  const rest = new PaxosKVClient({ peers: others.map((m) => cluster.addresses.get(m)!) });
  try {
    for (const key of KEYS) {
      // Linearizable: a read through the new member, after one through the others, is at least as new.
      const before = (await rest.get(key, { timeoutMs: 5000 }))?.version ?? 0n;
      const after = (await only.get({ key }, { timeoutMs: 5000 })).version;
      expect(after, `${key} through replica ${id}`).toBeGreaterThanOrEqual(before);
    }
    const s = await only.status({}, { timeoutMs: 2000 });
    expect(s.mode).toBe('voter');
    expect(Number(s.keys), 'every key (and the configuration) copied').toBeGreaterThanOrEqual(KEYS.length);
  } finally {
    only.close();
    rest.close();
  }
}

describe('a PaxosKV membership change whose new member never comes up', () => {
  it('stays joint (kv member add ends DEADLINE_EXCEEDED), kv member abort takes it back, and writes go on', { timeout: 90_000 }, async () => {
    const cluster = new Cluster(path.join(BASE, 'abort'));
    try {
      await cluster.start();
      const peers = [1, 2, 3].map((id) => `${id}=${cluster.addresses.get(id)}`).join(',');
      // The new member dies before it could copy anything.
      await stopProc(await cluster.join(4, [1, 2, 3]), 'SIGKILL');
      const add = await runSvrkit(['kv', 'member', 'add', '4', '--address', cluster.addresses.get(4)!, '--peers', peers, '--timeout', '3000']);
      expect(add.code, add.stderr).toBe(1);
      expect(add.stderr).toMatch(/DEADLINE_EXCEEDED: the membership change began and is not finished yet \(epoch 2: voters \[1,2,3\] -> \[1,2,3,4\]\)/);
      const list = await runSvrkit(['kv', 'member', 'list', '--peers', peers]);
      expect(list.code, list.stderr).toBe(0);
      const rows = list.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(rows[0]).toMatchObject({ epoch: 2, voters: [1, 2, 3], changing: true, next: { voters: [1, 2, 3, 4] } });
      expect(rows.find((r) => r.id === 4)).toMatchObject({ role: 'voter', change: 'joins', up: false });
      const back = await cluster.member(['abort'], [1, 2, 3]);
      expect(back).toMatchObject({ epoch: 3, voters: [1, 2, 3] });
      // Nothing under way: abort again changes nothing.
      expect(await cluster.member(['abort'], [1, 2, 3])).toMatchObject({ epoch: 3, voters: [1, 2, 3] });
      const put = await runSvrkit(['kv', 'put', 'k', 'after the abort', '--peers', peers]);
      expect(put.code, put.stderr).toBe(0);
      // With most members down there is no quorum to read the configuration through: kv member
      // list shows the newest one a replica holds, says so, and who is up.
      for (const id of [2, 3]) await stopProc(cluster.replicas.get(id)!, 'SIGKILL');
      const down = await runSvrkit(['kv', 'member', 'list', '--peers', peers, '--timeout', '1500']);
      expect(down.code, down.stderr).toBe(0);
      expect(down.stderr).toMatch(/could not be read through a quorum/);
      const seen = down.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(seen[0]).toMatchObject({ epoch: 3, voters: [1, 2, 3], linearizable: false });
      expect(seen.slice(1).map((r) => [r.id, r.up])).toEqual([[1, true], [2, false], [3, false]]);
    } finally {
      await cluster.stopAll();
    }
  });
});

describe('PaxosKV membership changes as real processes, under load', () => {
  it('replaces a SIGKILLed replica by a new, empty one: writes never stop, nothing is lost, the new one serves', { timeout: 120_000 }, () =>
    exclusively('timing', async () => {
      const cluster = new Cluster(path.join(BASE, 'replace'));
      try {
        await cluster.start();
        // The replacement is started first (a new machine, empty, waiting to be added): starting a
        // node process takes one of this machine's two cores for a while, which is not the
        // change's cost.
        await cluster.join(4, [1, 2]);
        const load = new KvLoad(() => [1, 2, 3].map((id) => cluster.addresses.get(id)!), { keys: KEYS, seed: 0x7e91 });
        const admin = new PaxosKVClient({ peers: [1, 2].map((id) => cluster.addresses.get(id)!) });
        try {
          await sleep(1500);
          const from = load.acked[0]?.ret ?? performance.now();
          const victim = cluster.replicas.get(3)!;
          victim.child.kill('SIGKILL');
          expect((await victim.exited).signal).toBe('SIGKILL');
          const started = performance.now();
          const done = await admin.changeMembers({ kind: 'replace', remove: 3, add: 4, address: cluster.addresses.get(4)! }, { timeoutMs: 30_000 });
          expect(done.voters).toEqual([1, 2, 4]);
          console.log(`paxoskv membership: replace 3 by 4 took ${Math.round(performance.now() - started)} ms (epoch ${done.epoch})`);
          await sleep(1500);
          await checkRun(load, cluster, [4, 1, 2], from, 'replace a SIGKILLed replica');
          await servesReads(cluster, 4, [1, 2]);
        } finally {
          admin.close();
        }
      } finally {
        await cluster.stopAll();
      }
    }),
  );

  it('grows from three replicas to five and shrinks back to three: writes never stop, nothing is lost', { timeout: 180_000 }, () =>
    exclusively('timing', async () => {
      const cluster = new Cluster(path.join(BASE, 'grow'));
      try {
        await cluster.start();
        // The new members are started first (as in the replace test: a node process starting takes
        // a core of this machine for a while).
        await cluster.join(4, [1, 2, 3]);
        await cluster.join(5, [1, 2, 3]);
        // A new member's address is needed.
        const noAddress = await runSvrkit(['kv', 'member', 'add', '4', '--peers', `1=${cluster.addresses.get(1)}`]);
        expect(noAddress.code).toBe(1);
        expect(noAddress.stderr).toMatch(/FAILED_PRECONDITION: membership change refused: member 4 is new: give its address/);
        const load = new KvLoad(() => [1, 2, 3].map((id) => cluster.addresses.get(id)!), { keys: KEYS, seed: 0x6a0 });
        // The changes go through PaxosKVClient.changeMembers, as `kv member` does, in this process:
        // a CLI process starting takes one of this machine's two cores for a while, which is not
        // the change's cost (the CLI's own checks are the other tests').
        const admin = (via: number[]) => new PaxosKVClient({ peers: via.map((m) => cluster.addresses.get(m)!) });
        const change = async (via: number[], what: MembershipChange): Promise<readonly number[]> => {
          const c = admin(via);
          try {
            return (await c.changeMembers(what, { timeoutMs: 30_000 })).voters;
          } finally {
            c.close();
          }
        };
        await sleep(1000);
        const from = load.acked[0]?.ret ?? performance.now();
        expect(await change([1, 2, 3], { kind: 'add', member: 4, address: cluster.addresses.get(4)! })).toEqual([1, 2, 3, 4]);
        expect(await change([1, 2, 3], { kind: 'add', member: 5, address: cluster.addresses.get(5)! })).toEqual([1, 2, 3, 4, 5]);
        await sleep(700);
        await servesReads(cluster, 5, [1, 2, 3]);
        // Remove two of the founding members; they stop serving and say why.
        expect(await change([2, 3, 4], { kind: 'remove', member: 1 })).toEqual([2, 3, 4, 5]);
        expect(await change([3, 4, 5], { kind: 'remove', member: 2 })).toEqual([3, 4, 5]);
        await waitServing(cluster.replicas.get(1)!, 'replica 1 removed', 1, 10_000, /stopped: it was removed from the cluster/gm);
        await sleep(700);
        await checkRun(load, cluster, [3, 4, 5], from, 'grow to five, shrink to three');
        // A removed replica serves no client, not even its local state.
        const fromRemoved = await runSvrkit(['kv', 'list', '--peers', `1=${cluster.addresses.get(1)}`, '--timeout', '1500']);
        expect(fromRemoved.code).toBe(1);
        expect(fromRemoved.stderr).toMatch(/UNAVAILABLE/);
        // The clients started on 1, 2 and 3: they moved on when 1 and 2 left.
        const list = await runSvrkit(['kv', 'member', 'list', '--peers', `3=${cluster.addresses.get(3)}`]);
        expect(list.code, list.stderr).toBe(0);
        expect(JSON.parse(list.stdout.split('\n')[0]!)).toMatchObject({ voters: [3, 4, 5], learners: [] });
      } finally {
        await cluster.stopAll();
      }
    }),
  );
});
