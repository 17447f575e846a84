import { describe, expect, it } from 'vitest';
import { learn, onAccept, onPrepare, readState } from '../../services/paxoskv/core/acceptor.js';
import { Replica } from '../../services/paxoskv/core/replica.js';
import {
  ballotOf,
  EMPTY_RECORD,
  nextEntry,
  RECENT_MAX,
  RECENT_WINDOW_MS,
  versionOfRequest,
  type ClientResult,
  type Entry,
  type KeyRecord,
  type MemberId,
  type Output,
  type PeerMessage,
} from '../../services/paxoskv/core/types.js';

const K = 'k';
const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array | null) => (b === null ? null : new TextDecoder().decode(b));
const entry = (index: number, v: string, proposer: MemberId, requestId = `r${index}`): Entry => ({
  index,
  value: bytes(v),
  requestId,
  proposer,
  time: 0,
  recent: [],
});

describe('acceptor rules', () => {
  it('promises a ballot at least as high as any promised, reporting what it accepted', () => {
    const s1 = onPrepare(EMPTY_RECORD, { key: K, index: 1, ballot: ballotOf(1, 2) });
    expect(s1.reply).toMatchObject({ type: 'promise', ballot: ballotOf(1, 2), accepted: 0, acceptedEntry: null });
    const r1 = s1.record!;
    expect(r1.promised).toBe(ballotOf(1, 2));
    // Lower ballot: rejected, naming the ballot that beat it.
    expect(onPrepare(r1, { key: K, index: 1, ballot: ballotOf(1, 1) }).reply).toMatchObject({ type: 'reject', promised: ballotOf(1, 2) });
    // The same ballot again (a duplicate): promised again, nothing to persist.
    const dup = onPrepare(r1, { key: K, index: 1, ballot: ballotOf(1, 2) });
    expect(dup.reply.type).toBe('promise');
    expect(dup.record).toBeUndefined();
    // After accepting, a higher prepare learns the accepted value.
    const acc = onAccept(r1, { key: K, index: 1, ballot: ballotOf(1, 2), entry: entry(1, 'a', 2) }).record!;
    expect(onPrepare(acc, { key: K, index: 1, ballot: ballotOf(2, 3) }).reply).toMatchObject({
      type: 'promise',
      accepted: ballotOf(1, 2),
      acceptedEntry: entry(1, 'a', 2),
    });
  });

  it('keeps promises monotonic: no accept below the promise', () => {
    const promised = onPrepare(EMPTY_RECORD, { key: K, index: 1, ballot: ballotOf(3, 1) }).record!;
    const low = onAccept(promised, { key: K, index: 1, ballot: ballotOf(2, 2), entry: entry(1, 'x', 2) });
    expect(low.reply).toMatchObject({ type: 'reject', promised: ballotOf(3, 1) });
    expect(low.record).toBeUndefined();
    const high = onAccept(promised, { key: K, index: 1, ballot: ballotOf(4, 2), entry: entry(1, 'y', 2) });
    expect(high.reply.type).toBe('accepted');
    expect(high.record).toMatchObject({ promised: ballotOf(4, 2), accepted: ballotOf(4, 2) });
  });

  it('takes a fast-path (round 0) accept only into an instance with nothing accepted and nothing higher promised', () => {
    const fresh = onAccept(EMPTY_RECORD, { key: K, index: 1, ballot: ballotOf(0, 1), entry: entry(1, 'fast', 1) });
    expect(fresh.reply.type).toBe('accepted');
    // Duplicate of the same fast accept: still accepted.
    expect(onAccept(fresh.record!, { key: K, index: 1, ballot: ballotOf(0, 1), entry: entry(1, 'fast', 1) }).reply.type).toBe('accepted');
    // Another value under the fast ballot, after something was accepted: refused.
    expect(onAccept(fresh.record!, { key: K, index: 1, ballot: ballotOf(0, 1), entry: entry(1, 'other', 1) }).reply.type).toBe('reject');
    // A higher promise blocks the fast path.
    const promised = onPrepare(EMPTY_RECORD, { key: K, index: 1, ballot: ballotOf(1, 2) }).record!;
    expect(onAccept(promised, { key: K, index: 1, ballot: ballotOf(0, 1), entry: entry(1, 'fast', 1) }).reply.type).toBe('reject');
    // A round-0 ballot of a higher member id does not override an accepted round-0 value.
    const acceptedByOne = fresh.record!;
    expect(onAccept(acceptedByOne, { key: K, index: 1, ballot: ballotOf(0, 3), entry: entry(1, 'three', 3) }).reply.type).toBe('reject');
  });

  it('answers instances already decided with its latest chosen entry, and later ones with behind', () => {
    const rec: KeyRecord = { chosen: entry(5, 'five', 1), promised: 0, accepted: 0, acceptedEntry: null };
    expect(onPrepare(rec, { key: K, index: 3, ballot: ballotOf(9, 2) }).reply).toEqual({ type: 'chosen', key: K, entry: entry(5, 'five', 1) });
    expect(onAccept(rec, { key: K, index: 5, ballot: ballotOf(9, 2), entry: entry(5, 'x', 2) }).reply.type).toBe('chosen');
    expect(onPrepare(rec, { key: K, index: 8, ballot: ballotOf(9, 2) }).reply).toEqual({ type: 'behind', key: K, index: 8, chosenIndex: 5 });
    expect(onPrepare(rec, { key: K, index: 6, ballot: ballotOf(9, 2) }).reply.type).toBe('promise');
  });

  it('learns only newer entries, and a new entry opens a fresh instance', () => {
    const rec: KeyRecord = { chosen: entry(2, 'two', 1), promised: ballotOf(7, 3), accepted: ballotOf(7, 3), acceptedEntry: entry(3, 'p', 3) };
    expect(learn(rec, entry(2, 'two', 1))).toBeUndefined();
    expect(learn(rec, entry(1, 'old', 1))).toBeUndefined();
    expect(learn(rec, entry(4, 'four', 2))).toEqual({ chosen: entry(4, 'four', 2), promised: 0, accepted: 0, acceptedEntry: null });
  });

  it('reports read state: the entry only when the asker lacks it, and any pending accepted ballot', () => {
    const rec: KeyRecord = { chosen: entry(2, 'two', 1), promised: ballotOf(1, 3), accepted: ballotOf(1, 3), acceptedEntry: entry(3, 'p', 3) };
    expect(readState(rec, { key: K, readId: 7, knownIndex: 2 })).toEqual({ type: 'readState', key: K, readId: 7, chosenIndex: 2, entry: null, pendingAccepted: ballotOf(1, 3) });
    expect(readState(rec, { key: K, readId: 7, knownIndex: 1 })).toMatchObject({ entry: entry(2, 'two', 1) });
  });

  it('carries the request ids of recent writes in entries, so a retry is recognised on any replica', () => {
    // Many writes within the time window: the newest RECENT_MAX are remembered.
    let e: Entry | null = null;
    const n = RECENT_MAX + 3;
    for (let i = 1; i <= n; i++) e = nextEntry(e, bytes(`v${i}`), `req${i}`, 1, 1000 + i);
    expect(e!.index).toBe(n);
    expect(versionOfRequest(e, `req${n}`)).toBe(n);
    expect(versionOfRequest(e, `req${n - 1}`)).toBe(n - 1);
    expect(versionOfRequest(e, `req${n - RECENT_MAX}`)).toBe(n - RECENT_MAX);
    expect(versionOfRequest(e, `req${n - RECENT_MAX - 1}`)).toBeUndefined(); // over the cap
    expect(versionOfRequest(e, '')).toBeUndefined();
    // Writes older than the window are forgotten, however few.
    const old = nextEntry(nextEntry(null, bytes('a'), 'early', 1, 0), bytes('b'), 'middle', 1, 5);
    const later = nextEntry(old, bytes('c'), 'late', 2, 5 + RECENT_WINDOW_MS);
    expect(versionOfRequest(later, 'middle')).toBe(2);
    expect(versionOfRequest(later, 'early')).toBeUndefined();
  });
});

/** Three replicas with in-memory stores; messages are delivered only when a test says so. */
class Cluster {
  readonly stores = new Map<MemberId, Map<string, KeyRecord>>();
  readonly replicas = new Map<MemberId, Replica>();
  readonly inbox: Array<{ from: MemberId; to: MemberId; msg: PeerMessage }> = [];
  readonly results = new Map<number, ClientResult>();
  now = 0;
  private ref = 1;

  constructor(readonly ids: MemberId[] = [1, 2, 3], learnerOnly: MemberId[] = []) {
    for (const id of ids) this.boot(id, learnerOnly.includes(id));
  }

  boot(id: MemberId, learnerOnly = false): void {
    const store = this.stores.get(id) ?? new Map<string, KeyRecord>();
    this.stores.set(id, store);
    this.replicas.set(id, new Replica({ id, members: this.ids, learnerOnly }, { get: (k) => store.get(k) }, () => 0.5));
  }

  apply(id: MemberId, out: Output): void {
    const store = this.stores.get(id)!;
    for (const [k, r] of out.persist) store.set(k, r);
    for (const s of out.send) this.inbox.push({ from: id, to: s.to, msg: s.message });
    for (const r of out.replies) this.results.set(r.requestRef, r.result);
  }

  request(at: MemberId, op: Parameters<Replica['request']>[2], key = K): number {
    const ref = this.ref++;
    this.apply(at, this.replicas.get(at)!.request(ref, key, op, this.now));
    return ref;
  }

  /** Delivers queued messages (optionally only those matching) until none are left. */
  deliver(filter: (m: { from: MemberId; to: MemberId; msg: PeerMessage }) => boolean = () => true, max = 10_000): void {
    for (let n = 0; n < max; n++) {
      const i = this.inbox.findIndex(filter);
      if (i < 0) return;
      const [m] = this.inbox.splice(i, 1);
      this.apply(m!.to, this.replicas.get(m!.to)!.receive(m!.from, m!.msg, this.now));
    }
  }

  drop(filter: (m: { from: MemberId; to: MemberId; msg: PeerMessage }) => boolean): void {
    for (let i = this.inbox.length - 1; i >= 0; i--) if (filter(this.inbox[i]!)) this.inbox.splice(i, 1);
  }

  tick(ms: number): void {
    this.now += ms;
    for (const [id, r] of this.replicas) this.apply(id, r.tick(this.now));
  }

  chosen(id: MemberId, key = K): Entry | null {
    return this.stores.get(id)!.get(key)?.chosen ?? null;
  }
}

describe('replica protocol', () => {
  it('writes through two-phase Paxos first, then through the fast path for the same proposer', () => {
    const c = new Cluster();
    const w1 = c.request(1, { kind: 'put', value: bytes('a'), requestId: 'w1' });
    expect(c.inbox.map((m) => m.msg.type)).toEqual(['prepare', 'prepare']);
    c.deliver();
    expect(c.results.get(w1)).toEqual({ ok: true, kind: 'write', version: 1 });
    for (const id of [1, 2, 3]) expect(text(c.chosen(id)!.value)).toBe('a');
    // Replica 1 proposed entry 1, so entry 2 skips prepare.
    const w2 = c.request(1, { kind: 'put', value: bytes('b'), requestId: 'w2' });
    expect(c.inbox.map((m) => m.msg.type)).toEqual(['accept', 'accept']);
    expect(c.inbox.every((m) => m.msg.type === 'accept' && m.msg.ballot === ballotOf(0, 1))).toBe(true);
    c.deliver();
    expect(c.results.get(w2)).toEqual({ ok: true, kind: 'write', version: 2 });
    // Another replica has no fast path for entry 3.
    c.request(2, { kind: 'put', value: bytes('c'), requestId: 'w3' });
    expect(c.inbox.map((m) => m.msg.type)).toEqual(['prepare', 'prepare']);
  });

  it('a competing proposer preempts a slower one, and the slower one retries and lands on the next index', () => {
    const c = new Cluster();
    const a = c.request(1, { kind: 'put', value: bytes('from1'), requestId: 'a' });
    const b = c.request(2, { kind: 'put', value: bytes('from2'), requestId: 'b' });
    // Both prepares reach replica 3; 2's ballot (round 1, member 2) beats 1's.
    c.deliver((m) => m.msg.type === 'prepare' && m.to === 3 && m.from === 1);
    c.deliver((m) => m.msg.type === 'prepare' && m.to === 3 && m.from === 2);
    c.deliver();
    for (let i = 0; i < 50 && (!c.results.has(a) || !c.results.has(b)); i++) {
      c.tick(100);
      c.deliver();
    }
    const versions = [c.results.get(a), c.results.get(b)].map((r) => (r as { version: number }).version).sort();
    expect(versions).toEqual([1, 2]);
    expect(c.chosen(1)!.index).toBe(2);
    expect(c.chosen(2)).toEqual(c.chosen(3));
  });

  it('a read finishes a value accepted by a majority but never announced', () => {
    const c = new Cluster();
    c.request(1, { kind: 'put', value: bytes('first'), requestId: 'p1' });
    c.deliver();
    // Replica 1 writes entry 2 by the fast path; accepts reach 2, but the replies and learns are lost.
    c.request(1, { kind: 'put', value: bytes('second'), requestId: 'p2' });
    c.deliver((m) => m.msg.type === 'accept' && m.to === 2);
    c.drop(() => true);
    expect(c.chosen(3)!.index).toBe(1);
    // A read at replica 3 sees the pending value and completes it before answering.
    const r = c.request(3, { kind: 'get' });
    c.deliver();
    expect(c.results.get(r)).toMatchObject({ ok: true, kind: 'get', version: 2 });
    expect(text((c.results.get(r) as { value: Uint8Array }).value)).toBe('second');
  });

  it('a lagging replica catches up from the peer that shows it missed entries', () => {
    const c = new Cluster();
    c.request(1, { kind: 'put', value: bytes('v1'), requestId: 'x1' });
    c.deliver((m) => m.to !== 3 || m.msg.type === 'prepare'); // 3 misses accept and learn of entry 1
    c.drop((m) => m.to === 3);
    c.drop(() => true);
    expect(c.chosen(3)).toBeNull();
    // Entry 2 by fast path: 3 is asked to accept index 2 while it knows nothing of entry 1.
    c.request(1, { kind: 'put', value: bytes('v2'), requestId: 'x2' });
    c.deliver();
    expect(c.chosen(3)!.index).toBe(2);
    expect(c.replicas.get(3)!.laggingCount).toBe(0);
  });

  it('a retried write whose request id is already chosen returns the original version instead of applying twice', () => {
    const c = new Cluster();
    const first = c.request(1, { kind: 'put', value: bytes('once'), requestId: 'same' });
    c.deliver();
    c.request(2, { kind: 'put', value: bytes('other'), requestId: 'o' });
    c.deliver();
    const retry = c.request(3, { kind: 'put', value: bytes('once'), requestId: 'same' });
    c.deliver();
    expect(c.results.get(first)).toEqual({ ok: true, kind: 'write', version: 1 });
    expect(c.results.get(retry)).toEqual({ ok: true, kind: 'write', version: 1 });
    expect(c.chosen(1)!.index).toBe(2);
  });

  it('compare-and-set: succeeds at the expected version, fails with the current one otherwise, cas(0) on absent keys', () => {
    const c = new Cluster();
    const create = c.request(1, { kind: 'cas', expectedVersion: 0, value: bytes('new'), requestId: 'c1' });
    c.deliver();
    expect(c.results.get(create)).toEqual({ ok: true, kind: 'write', version: 1 });
    const again = c.request(2, { kind: 'cas', expectedVersion: 0, value: bytes('dup'), requestId: 'c2' });
    c.deliver();
    expect(c.results.get(again)).toMatchObject({ ok: false, status: 'FAILED_PRECONDITION', version: 1 });
    const ok = c.request(3, { kind: 'cas', expectedVersion: 1, value: bytes('next'), requestId: 'c3' });
    c.deliver();
    expect(c.results.get(ok)).toEqual({ ok: true, kind: 'write', version: 2 });
    const del = c.request(1, { kind: 'delete', requestId: 'd' });
    c.deliver();
    expect(c.results.get(del)).toEqual({ ok: true, kind: 'write', version: 3 });
    const get = c.request(2, { kind: 'get' });
    c.deliver();
    expect(c.results.get(get)).toEqual({ ok: true, kind: 'get', value: null, version: 3 });
    const recreate = c.request(2, { kind: 'cas', expectedVersion: 0, value: bytes('back'), requestId: 'c4' });
    c.deliver();
    expect(c.results.get(recreate)).toEqual({ ok: true, kind: 'write', version: 4 });
  });

  it('a restarted proposer does not reuse its fast-path ballot with another value', () => {
    const c = new Cluster();
    c.request(1, { kind: 'put', value: bytes('v1'), requestId: 'a' });
    c.deliver();
    // Fast path for entry 2: replica 1 accepts locally (persisted) and its accepts are lost.
    c.request(1, { kind: 'put', value: bytes('v2'), requestId: 'b' });
    c.drop(() => true);
    c.boot(1); // crash and restart with only the persisted record
    c.request(1, { kind: 'put', value: bytes('v3'), requestId: 'c' });
    // Its own acceptor holds a round-0 accept, so it must prepare, not reuse the fast ballot.
    expect(c.inbox.map((m) => m.msg.type)).toEqual(['prepare', 'prepare']);
    c.deliver();
    // Phase 1 recovers v2 (accepted at entry 2) first; v3 lands at entry 3.
    expect(text(c.chosen(2)!.value)).toBe('v3');
    expect(c.chosen(2)!.index).toBe(3);
  });

  it('a learner-only replica votes in nothing, refuses clients, and still learns', () => {
    const c = new Cluster([1, 2, 3], [3]);
    const refused = c.request(3, { kind: 'get' });
    expect(c.results.get(refused)).toMatchObject({ ok: false, status: 'UNAVAILABLE' });
    const w = c.request(1, { kind: 'put', value: bytes('v'), requestId: 'l' });
    c.deliver();
    expect(c.results.get(w)).toEqual({ ok: true, kind: 'write', version: 1 });
    expect(text(c.chosen(3)!.value)).toBe('v');
    expect(c.stores.get(3)!.get(K)!.promised).toBe(0);
  });

  it('fails with UNAVAILABLE after its attempts when no majority answers', () => {
    const c = new Cluster();
    const w = c.request(1, { kind: 'put', value: bytes('alone'), requestId: 'z' });
    for (let i = 0; i < 200 && !c.results.has(w); i++) {
      c.drop(() => true);
      c.tick(1000);
    }
    expect(c.results.get(w)).toMatchObject({ ok: false, status: 'UNAVAILABLE' });
  });

  it('rejects inconsistent membership', () => {
    expect(() => new Replica({ id: 4, members: [1, 2, 3] }, { get: () => undefined }, Math.random)).toThrow(/not in the membership/);
    expect(() => new Replica({ id: 1, members: [1, 2] }, { get: () => undefined }, Math.random)).toThrow(/odd number/);
  });
});
