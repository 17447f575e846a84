import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { open as openLmdb } from 'lmdb';
import { crc32 } from 'node:zlib';
import { pack } from 'msgpackr';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ballotOf,
  MAX_WRITES_PER_SESSION,
  nextEntry,
  type Entry,
  type KeyRecord,
  type Session,
  type WriteId,
} from '../../services/paxoskv/core/types.js';
import { DATA_FORMAT, DataDirError, decodeRecord, encodeRecord, KeyStore, MAX_KEY_BYTES, type ClusterIdentity } from '../../services/paxoskv/storage.js';
import { ackRecord, hotRecord, metaPatch } from './storage-child.js';
import { LOST_RECORD } from '../../services/paxoskv/core/types.js';

/** A record or meta record as the store writes it: the bytes, then their CRC-32, big-endian. */
function sealed(bytes: Uint8Array): Buffer {
  const out = Buffer.alloc(bytes.length + 4);
  out.set(bytes, 0);
  out.writeUInt32BE(crc32(bytes), bytes.length);
  return out;
}

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CHILD = fileURLToPath(new URL('./storage-child.ts', import.meta.url));
const BASE = path.join(ROOT, 'test', '.tmp', `paxoskv-storage-${process.pid}`);
const ME: ClusterIdentity = { memberId: 1, members: [1, 2, 3] };

let dirs = 0;
/** A fresh path under test/.tmp (not created). */
const tmpDir = (name: string) => path.join(BASE, `${++dirs}-${name}`);
const bytes = (s: string) => new TextEncoder().encode(s);

beforeAll(async () => {
  await fsp.mkdir(BASE, { recursive: true });
});
afterAll(async () => {
  await fsp.rm(BASE, { recursive: true, force: true });
});

const T0 = 1_700_000_000_000;

function entry(index: number, value: Uint8Array | null, extra: Partial<Entry> = {}): Entry {
  return { index, value, writer: { client: 'client-a', seq: index }, proposer: 2, time: T0 + index, sessions: [], ...extra };
}

/** A record holding `chosen` (fields of `extra` override the empty acceptor state). */
function rec(chosen: Entry | null, extra: Partial<KeyRecord> = {}): KeyRecord {
  return { chosen, promised: 0, accepted: 0, acceptedEntry: null, fence: 0, ...extra };
}

/** A write id of `client`, sent at `sentAt`, retryable for 30 s. */
function wid(client: string, seq: number, sentAt: number, ackedBelow = 0): WriteId {
  return { client, seq, ackedBelow, sentAt, expiresAt: sentAt + 30_000 };
}

/** Error texts must not suggest starting empty or from a copy other than through --rejoin. */
function expectRejoinAdvice(message: string): void {
  expect(message).toContain('move the damaged dir aside and restart this replica with --rejoin on an empty data dir');
  expect(message).toContain('does not vote until that is safe');
  expectNoUnsafeAdvice(message);
}
function expectNoUnsafeAdvice(message: string): void {
  expect(message).not.toMatch(/remove the dir|backup|restore/i);
}

/** A record with its values as base64 (vitest compares big typed arrays element by element, slowly). */
function canon(record: KeyRecord | undefined): unknown {
  if (record === undefined) return undefined;
  const e = (x: Entry | null) => x && { ...x, value: x.value === null ? null : Buffer.from(x.value.buffer, x.value.byteOffset, x.value.byteLength).toString('base64') };
  return { ...record, chosen: e(record.chosen), acceptedEntry: e(record.acceptedEntry) };
}
function expectRecord(got: KeyRecord | undefined, want: KeyRecord, label?: string): void {
  expect(canon(got), label).toEqual(canon(want));
}

/** Every shape a record takes. */
/** An entry after a long history: several sessions, one past MAX_WRITES_PER_SESSION writes (floor raised), writes without a session. */
function busyEntry(): Entry {
  let e: Entry | null = null;
  for (let i = 0; i < 2 * MAX_WRITES_PER_SESSION; i++) {
    const id = i % 7 === 6 ? null : i % 3 === 0 ? wid(`client-${i % 2}`, 1 + i, T0 + i, i > 20 ? i - 20 : 0) : wid('client-🔑', 1 + i, T0 + i);
    e = nextEntry(e, i % 11 === 10 ? null : bytes(`value ${i}`), id, 1 + (i % 3));
  }
  return e!;
}

/** Every shape a record takes. */
function shapes(): Map<string, KeyRecord> {
  const busy = busyEntry();
  const big = new Uint8Array(1024 * 1024).map((_, i) => (i * 31) & 255);
  const noWrites: Session = { client: 'idle', floor: 7, expiresAt: T0 + 9, writes: [] };
  return new Map<string, KeyRecord>([
    ['empty', rec(null)],
    ['promised-only', rec(null, { promised: ballotOf(7, 3) })],
    ['chosen', rec(entry(1, bytes('hello')), { promised: ballotOf(0, 2) })],
    ['deleted', rec(entry(5, null))],
    ['empty-value', rec(entry(2, new Uint8Array(0), { writer: { client: '', seq: 0 } }))],
    ['no-writer', rec(entry(3, bytes('v'), { writer: null, time: 0 }))],
    ['sessions', rec(busy, { promised: ballotOf(123_456_789, 65_535), accepted: ballotOf(123_456_789, 65_535) })],
    ['session-without-writes', rec(entry(4, bytes('x'), { sessions: [noWrites, ...busy.sessions] }))],
    [
      'accepted',
      rec(entry(3, bytes('a')), {
        promised: ballotOf(4, 1),
        accepted: ballotOf(4, 1),
        acceptedEntry: nextEntry(entry(3, bytes('a')), bytes('b'), wid('c', 3, T0 + 5, 2), 1),
      }),
    ],
    ['accepted-delete', rec(null, { promised: ballotOf(1, 3), accepted: ballotOf(1, 3), acceptedEntry: entry(1, null) })],
    ['fenced', rec(entry(41, bytes('f')), { fence: 42, promised: ballotOf(9, 1) })],
    ['fence-max', rec(null, { fence: Number.MAX_SAFE_INTEGER })],
    ['1MiB', rec(entry(9, big), { accepted: ballotOf(2, 2), acceptedEntry: entry(10, big.slice().reverse()) })],
    ['', rec(entry(1, bytes('empty key')))],
    ['ключ/键/🔑', rec(entry(1, bytes('unicode key'), { writer: { client: 'сессия-🔑', seq: 1 } }))],
    ['k'.repeat(MAX_KEY_BYTES), rec(entry(1, bytes('longest key')))],
  ]);
}

/** A store with a few MB of data (small records, some 200 KiB ones), closed. */
async function populated(name: string): Promise<{ dir: string; expected: Map<string, KeyRecord> }> {
  const dir = tmpDir(name);
  const store = await KeyStore.open(dir, ME);
  const expected = new Map<string, KeyRecord>();
  for (let i = 0; i < 3000; i++) {
    const value = i % 500 === 0 ? new Uint8Array(200 * 1024).fill(i & 255) : bytes(`value-${i}-`.repeat(20));
    expected.set(`key-${i}`, rec(entry(1 + (i % 9), value), { promised: ballotOf(i, 1) }));
  }
  await store.write(expected);
  await store.close();
  return { dir, expected };
}

const dataFile = (dir: string) => path.join(dir, 'data.mdb');

async function openError(dir: string, identity: ClusterIdentity = ME, options?: { rejoin?: boolean }): Promise<DataDirError> {
  const err = await KeyStore.open(dir, identity, options).then(
    async (s) => {
      await s.close();
      return undefined;
    },
    (e: unknown) => e,
  );
  expect(err, `opening ${dir} should fail`).toBeInstanceOf(DataDirError);
  return err as DataDirError;
}

describe('KeyStore records', () => {
  it('round-trips every record shape through write, close and reopen', async () => {
    const dir = tmpDir('shapes');
    const records = shapes();
    const store = await KeyStore.open(dir, ME);
    await store.write(records);
    for (const [key, record] of records) expectRecord(store.get(key), record, key);
    await store.close();

    const again = await KeyStore.open(dir, ME);
    for (const [key, record] of records) {
      const got = again.get(key);
      expectRecord(got, record, key);
      for (const e of [got?.chosen, got?.acceptedEntry]) {
        if (e?.value) expect(Object.getPrototypeOf(e.value), `${key}: values are plain Uint8Arrays`).toBe(Uint8Array.prototype);
      }
    }
    expect(again.get('never written')).toBeUndefined();
    expect(again.keyCount).toBe(records.size);
    expect(new Set(again.keys())).toEqual(new Set(records.keys()));
    expect(again.identity).toEqual(ME);
    await again.close();
  });

  it('encodes compactly and decodes exactly, rejecting malformed bytes', () => {
    const busy = busyEntry().sessions;
    expect(busy.map((x) => x.client).sort()).toEqual(['client-0', 'client-1', 'client-🔑']);
    expect(busy.find((x) => x.client === 'client-🔑')).toMatchObject({ writes: { length: MAX_WRITES_PER_SESSION } });
    expect(busy.every((x) => x.floor > 0)).toBe(true);
    for (const record of shapes().values()) expectRecord(decodeRecord(encodeRecord(record)), record);
    const small = rec(entry(1, bytes('v'), { writer: null }), { promised: ballotOf(1, 1) });
    expect(encodeRecord(small).length).toBeLessThan(30 + 4); // + its CRC-32
    // A session costs its id plus a few bytes, and a write two small integers.
    const one = rec(nextEntry(null, bytes('v'), wid('0123456789abcdef', 1, T0), 1));
    expect(encodeRecord(one).length).toBeLessThan(80 + 4);

    const e = (over: Partial<Record<number, unknown>> = {}) => {
      const base: unknown[] = [1, null, null, null, 1, 5, []];
      for (const [i, v] of Object.entries(over)) base[Number(i)] = v;
      return base;
    };
    const r = (entryRaw: unknown, over: Partial<Record<number, unknown>> = {}) => {
      const base: unknown[] = [3, entryRaw, 0, 0, null, 0];
      for (const [i, v] of Object.entries(over)) base[Number(i)] = v;
      return sealed(pack(base));
    };
    expect(decodeRecord(r(e()))).toEqual(rec({ index: 1, value: null, writer: null, proposer: 1, time: 5, sessions: [] }));
    expect(decodeRecord(r(e({ 6: ['c', 1, 9, 2, 1, 3, 2, 4, 'd', 0, 8, 0] }))).chosen?.sessions).toEqual([
      { client: 'c', floor: 1, expiresAt: 9, writes: [{ seq: 1, version: 3 }, { seq: 2, version: 4 }] },
      { client: 'd', floor: 0, expiresAt: 8, writes: [] },
    ]);
    const bad: Array<[Uint8Array, RegExp]> = [
      [sealed(new Uint8Array([0xc1])), /not a msgpack array/], // msgpackr decodes the reserved byte 0xc1 to an object
      [sealed(new Uint8Array([0x93, 0x02])), /not valid msgpack/],
      [sealed(pack({ chosen: null })), /not a msgpack array/],
      [sealed(pack([2, null, 0, 0, null, 0])), /unknown record version 2/], // svrkit-paxoskv/2
      [sealed(pack([3, null, 0, 0, null])), /expected 6 fields, got 5/],
      [pack([3, null, 0, 0, null, 0]), /checksum mismatch/], // no checksum: an svrkit-paxoskv/2 record
      [new Uint8Array([0x01, 0x02]), /checksum mismatch: 2 bytes are too few/],
      [r(null, { 6: 'extra' }), /expected 6 fields, got 7/],
      [r(null, { 2: -1 }), /promised is not a ballot/],
      [r(null, { 3: 0.5 }), /accepted is not a ballot/],
      [r(null, { 5: -1 }), /fence is not a non-negative integer/],
      [r(null, { 5: null }), /fence/],
      [r(null, { 5: 2 ** 53 }), /fence/],
      [r([1, null, null, null, 1, 5]), /chosen is not an entry/],
      [r(e({ 0: 0 })), /chosen\.index is not a positive integer/],
      [r(null, { 4: e({ 1: 'not bytes' }) }), /acceptedEntry\.value is neither bytes nor nil/],
      [r(e({ 2: 'c' })), /chosen\.writer\.seq/],
      [r(e({ 3: 4 })), /chosen\.writer\.client/],
      [r(e({ 2: 'c', 3: -4 })), /chosen\.writer\.seq/],
      [r(e({ 4: 70_000 })), /chosen\.proposer is not a member id/],
      [r(e({ 5: -1 })), /chosen\.time/],
      [r(e({ 5: 1.5 })), /chosen\.time/],
      [r(e({ 6: { c: 1 } })), /chosen\.sessions is not an array/],
      [r(e({ 6: ['c', 1, 9] })), /chosen\.sessions\[0\] is cut short/],
      [r(e({ 6: [7, 1, 9, 0] })), /chosen\.sessions\[0\]\.client is not a string/],
      [r(e({ 6: ['c', -1, 9, 0] })), /chosen\.sessions\[0\]\.floor/],
      [r(e({ 6: ['c', 1, 9.5, 0] })), /chosen\.sessions\[0\]\.expiresAt/],
      [r(e({ 6: ['c', 1, 9, -1] })), /chosen\.sessions\[0\]: the write count/],
      [r(e({ 6: ['c', 1, 9, 2, 1, 3] })), /chosen\.sessions\[0\] announces 2 writes but only 1 follow/],
      [r(e({ 6: ['c', 1, 9, 1, 1, 3, 'd', 0, 8, 1, 'x', 1] })), /chosen\.sessions\[1\]\.writes\[0\] is not a \(seq, version\) pair/],
      [r(e({ 6: ['c', 1, 9, 1, 1, -3] })), /chosen\.sessions\[0\]\.writes\[0\]/],
      [r(e({ 6: ['c', 1, 9, 0, 'd'] })), /chosen\.sessions\[1\] is cut short/],
    ];
    for (const [b, message] of bad) expect(() => decodeRecord(b), message.source).toThrow(message);
  });

  it('refuses to encode what it could not decode', async () => {
    const good = shapes().get('sessions')!;
    const s0 = good.chosen!.sessions[0]!;
    const bad: Array<[unknown, RegExp]> = [
      [{ ...good, fence: -1 }, /fence/],
      [{ ...good, fence: undefined }, /fence/],
      [{ ...good, promised: 1.5 }, /promised/],
      [{ ...good, chosen: { ...good.chosen, time: -1 } }, /chosen\.time/],
      [{ ...good, chosen: { ...good.chosen, writer: { client: 'c' } } }, /chosen\.writer/],
      [{ ...good, chosen: { ...good.chosen, writer: undefined } }, /chosen\.writer/],
      [{ ...good, chosen: { ...good.chosen, sessions: [{ ...s0, floor: 0.5 }] } }, /chosen\.sessions\[0\]\.floor/],
      [{ ...good, chosen: { ...good.chosen, sessions: [{ ...s0, client: 1 }] } }, /chosen\.sessions\[0\]\.client/],
      [{ ...good, acceptedEntry: { ...good.chosen, sessions: [{ ...s0, writes: [{ seq: 1, version: -1 }] }] } }, /acceptedEntry\.sessions\[0\]\.writes\[0\]/],
    ];
    for (const [record, message] of bad) expect(() => encodeRecord(record as KeyRecord), message.source).toThrow(message);

    const store = await KeyStore.open(tmpDir('bad-encode'), ME);
    await expect(store.write(new Map([['ok', good], ['bad', { ...good, fence: -1 }]]))).rejects.toThrow(RangeError);
    expect(store.get('ok')).toBeUndefined();
    await store.close();
  });

  it('serves records from get() before they are durable, and after', async () => {
    const store = await KeyStore.open(tmpDir('unsaved'), ME);
    const first = rec(entry(1, bytes('one')));
    const second = rec(entry(2, bytes('two')));
    const w1 = store.write(new Map([['k', first]]));
    expect(store.get('k')).toBe(first);
    expect(store.keyCount).toBe(1);
    expect([...store.keys()]).toEqual(['k']);
    await new Promise((r) => setImmediate(r)); // the commit of `first` is in flight now
    const w2 = store.write(new Map([['k', second]]));
    expect(store.get('k')).toBe(second);
    expect(store.commits).toBe(0);
    await w1;
    expect(store.get('k')).toBe(second); // still unsaved: newer than the committed one
    await w2;
    expect(store.commits).toBe(2);
    expect(store.get('k')).toEqual(second);
    expect(store.keyCount).toBe(1);
    await store.close();
  });

  it('rejects keys it cannot store, adding none of the batch', async () => {
    const store = await KeyStore.open(tmpDir('keys'), ME);
    const r = rec(entry(1, bytes('v')));
    await expect(store.write(new Map([['ok', r], ['x'.repeat(MAX_KEY_BYTES + 1), r]]))).rejects.toThrow(/longer than 1024 UTF-8 bytes/);
    await expect(store.write(new Map([['é'.repeat(513), r]]))).rejects.toThrow(RangeError); // 1026 bytes
    await expect(store.write(new Map([['lone \ud800 surrogate', r]]))).rejects.toThrow(/lone surrogate/);
    expect(store.get('ok')).toBeUndefined();
    expect(store.get('x'.repeat(5000))).toBeUndefined();
    expect(store.get('lone \ud800 surrogate')).toBeUndefined();
    await store.write(new Map([['\ud83d\udd11', r]]));
    expect(store.get('\ud83d\udd11')).toEqual(r);
    await store.close();
  });

  it('close() waits for pending writes; later writes are refused', async () => {
    const dir = tmpDir('close');
    const store = await KeyStore.open(dir, ME);
    const r = rec(entry(1, bytes('v')));
    const written = store.write(new Map([['late', r]]), { incarnation: 9 });
    await store.close();
    await written;
    await expect(store.write(new Map([['after', r]]))).rejects.toThrow(/closed/);
    await expect(store.write(new Map(), { incarnation: 10 })).rejects.toThrow(/closed/);
    expect(() => store.get('late')).toThrow(/closed/);
    expect(() => store.meta()).toThrow(/closed/);
    expect(() => store.keysAfter(null, 10)).toThrow(/closed/);
    const again = await KeyStore.open(dir, ME);
    expect(again.get('late')).toEqual(r);
    expect(again.meta().incarnation).toBe(9);
    await again.close();
  });
});

describe('KeyStore group commit', () => {
  it('commits the writes of one turn together and resolves them in order', async () => {
    const store = await KeyStore.open(tmpDir('group'), ME);
    const order: number[] = [];
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 100; i++) {
      writes.push(store.write(new Map([[`key-${i}`, rec(entry(1, bytes(`v${i}`)))]])).then(() => void order.push(i)));
    }
    await Promise.all(writes);
    expect(store.commits).toBeLessThan(100);
    expect(store.commits).toBe(1);
    expect(order).toEqual([...Array(100).keys()]);

    // Writes handed over while a commit is in flight go into the next one, together.
    const before = store.commits;
    const w = (i: number): KeyRecord => rec(entry(2, bytes(`w${i}`)));
    const first = store.write(new Map([['first', w(0)]]));
    await new Promise((r) => setImmediate(r)); // the first commit has started
    const during: Promise<void>[] = [];
    for (let i = 0; i < 50; i++) {
      during.push(store.write(new Map([[`during-${i}`, w(i)]])));
      await Promise.resolve();
    }
    const resolved: string[] = [];
    await Promise.all([first.then(() => resolved.push('first')), ...during.map((p, i) => p.then(() => resolved.push(`during-${i}`)))]);
    expect(store.commits - before).toBe(2);
    expect(resolved[0]).toBe('first');
    expect(store.keyCount).toBe(151);
    await store.close();
  });

  it('an empty write resolves after the earlier writes', async () => {
    const store = await KeyStore.open(tmpDir('empty-write'), ME);
    let done = false;
    const w = store.write(new Map([['k', rec(entry(1, bytes('v')))]])).then(() => (done = true));
    await store.write(new Map());
    expect(done).toBe(true);
    await w;
    await store.write(new Map()); // nothing pending: resolves at once
    await store.close();
  });
});

describe('KeyStore crash durability (SIGKILL)', () => {
  /**
   * Runs the child until it acknowledged `acks` writes (0: right after it is ready), then SIGKILLs it
   * `delayMs` later (so the kill lands at different points of a commit).
   */
  async function runAndKill(dir: string, firstId: number, acks: number, delayMs: number): Promise<number[]> {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, dir, String(firstId)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    const acked: number[] = [];
    let stderr = '';
    let buffered = '';
    const kill = () => setTimeout(() => child.kill('SIGKILL'), delayMs);
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      buffered += s;
      const lines = buffered.split('\n');
      buffered = lines.pop()!;
      for (const line of lines) {
        if (line === 'ready' && acks === 0) kill();
        const m = /^ack (\d+)$/.exec(line);
        if (m) {
          acked.push(Number(m[1]));
          if (acked.length === acks) kill();
        }
      }
    });
    const { code, signal } = await exited;
    expect(signal, `child exited with ${code}: ${stderr}`).toBe('SIGKILL');
    return acked;
  }

  it('loses no acknowledged write across repeated SIGKILLs, and keeps a consistent prefix', async () => {
    const dir = tmpDir('crash');
    const allAcked: number[] = [];
    let next = 0;
    for (const [acks, delayMs] of [[0, 0], [40, 0], [250, 1], [1200, 3], [3000, 7], [500, 20]] as const) {
      const acked = await runAndKill(dir, next, acks, delayMs);
      expect(acked.length).toBeGreaterThanOrEqual(acks);
      for (let i = 1; i < acked.length; i++) expect(acked[i]).toBe(acked[i - 1]! + 1); // acks arrive in write order
      allAcked.push(...acked);

      const store = await KeyStore.open(dir, ME);
      // Present writes form a prefix 0..top: a later write is never durable without an earlier one.
      let top = next - 1;
      while (store.get(`ack-${top + 1}`) !== undefined) top++;
      for (let id = top + 1; id < top + 500; id++) expect(store.get(`ack-${id}`), `write ${id} after a gap`).toBeUndefined();
      for (const id of allAcked) {
        expect(id, 'acknowledged write lost').toBeLessThanOrEqual(top);
      }
      for (let id = 0; id <= top; id++) expectRecord(store.get(`ack-${id}`), ackRecord(id), `ack-${id}`);
      for (let h = 0; h < 5; h++) {
        const newest = top - ((((top - h) % 5) + 5) % 5); // the newest write id <= top with id % 5 == h
        if (newest >= 0) expectRecord(store.get(`hot-${h}`), hotRecord(newest), `hot-${h}`);
      }
      expect(store.keyCount).toBe(top + 1 + Math.min(5, top + 1));
      // The meta patch shares its write's transaction: the durable meta is the newest durable write's.
      const lastPatched = top - (((top % 3) + 3) % 3);
      const want = lastPatched >= 0 ? { announced: [], ...metaPatch(lastPatched)! } : { incarnation: 0, announced: [], peerIncarnations: new Map(), rejoining: false };
      expect(store.meta(), `meta after write ${top}`).toEqual(want);
      next = top + 1;
      await store.close();
    }
    expect(allAcked.length).toBeGreaterThanOrEqual(40 + 250 + 1200 + 3000 + 500);
  });
});

describe('KeyStore data dir identity', () => {
  it('creates a missing dir, and an empty one', async () => {
    const missing = path.join(tmpDir('missing'), 'nested', 'dir');
    const a = await KeyStore.open(missing, ME);
    expect(a.keyCount).toBe(0);
    expect(a.dir).toBe(missing);
    await a.close();
    expect((await fsp.readdir(missing)).sort()).toEqual(['data.mdb', 'lock.mdb']);

    const empty = tmpDir('empty');
    await fsp.mkdir(path.join(empty, 'lost+found'), { recursive: true });
    const b = await KeyStore.open(empty, ME);
    await b.close();

    // A crash while creating leaves only the staging dir: that counts as empty.
    const interrupted = tmpDir('interrupted');
    await fsp.mkdir(path.join(interrupted, '.paxoskv-init'), { recursive: true });
    await fsp.writeFile(path.join(interrupted, '.paxoskv-init', 'data.mdb'), 'partial');
    const c = await KeyStore.open(interrupted, ME);
    await c.close();
    expect((await fsp.readdir(interrupted)).sort()).toEqual(['data.mdb', 'lock.mdb']);
  });

  it('refuses another member id or member list, naming both', async () => {
    const dir = tmpDir('identity');
    const store = await KeyStore.open(dir, ME);
    await store.write(new Map([['k', rec(entry(1, bytes('v')))]]));
    await store.close();

    const wrongId = await openError(dir, { memberId: 2, members: [1, 2, 3] });
    expect(wrongId.message).toBe(`data dir ${dir} belongs to member 1 of cluster [1,2,3]; this replica is member 2 of [1,2,3]: wrong --data-dir or --id?`);
    expect(wrongId.dir).toBe(dir);
    const wrongMembers = await openError(dir, { memberId: 1, members: [1, 2, 3, 4, 5] });
    expect(wrongMembers.message).toMatch(/belongs to member 1 of cluster \[1,2,3\]; this replica is member 1 of \[1,2,3,4,5\]/);

    const again = await KeyStore.open(dir, ME); // the refusals changed nothing
    expect(again.keyCount).toBe(1);
    await expect(KeyStore.open(dir, ME)).rejects.toThrow(/already open in this process/);
    await again.close();
  });

  it('refuses a dir another live process has open, and opens it once that process is gone', async () => {
    const dir = tmpDir('in-use');
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, dir, '0'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = new Promise((resolve) => child.on('exit', resolve));
    await new Promise<void>((resolve) => {
      child.stdout.setEncoding('utf8').on('data', (s: string) => {
        if (s.includes('ack ')) resolve();
      });
    });
    try {
      expect((await openError(dir)).message).toBe(`data dir ${dir} is in use by process ${child.pid}: is another replica running with this --data-dir?`);
    } finally {
      child.kill('SIGKILL');
      await exited;
    }
    const store = await KeyStore.open(dir, ME);
    expect(store.get('ack-0')).toBeDefined();
    await store.close();
  });

  it('rejects a malformed identity', async () => {
    const dir = tmpDir('bad-identity');
    await expect(KeyStore.open(dir, { memberId: 4, members: [1, 2, 3] })).rejects.toThrow(RangeError);
    await expect(KeyStore.open(dir, { memberId: 1, members: [3, 2, 1] })).rejects.toThrow(/sorted/);
    await expect(KeyStore.open(dir, { memberId: 0, members: [0, 1, 2] })).rejects.toThrow(RangeError);
    await expect(fsp.access(dir)).rejects.toThrow(); // nothing was created
  });

  it('refuses a non-empty dir without PaxosKV data, a file, and a foreign LMDB', async () => {
    const foreign = tmpDir('foreign');
    await fsp.mkdir(foreign, { recursive: true });
    await fsp.writeFile(path.join(foreign, 'notes.txt'), 'not a database');
    expect((await openError(foreign)).message).toMatch(/is not empty and holds no PaxosKV data \(found: notes\.txt\): wrong --data-dir\?/);
    expect(await fsp.readdir(foreign)).toEqual(['notes.txt']);

    const file = tmpDir('file');
    await fsp.writeFile(file, 'x');
    expect((await openError(file)).message).toMatch(/is not a directory/);

    const otherLmdb = tmpDir('other-lmdb');
    const db = openLmdb({ path: otherLmdb, noSubdir: false });
    await db.put('some', 'data');
    await db.close();
    expect((await openError(otherLmdb)).message).toMatch(/not a PaxosKV store \(no svrkit-paxoskv\/3 meta record\)/);

    expect(DATA_FORMAT).toBe('svrkit-paxoskv/3');
    for (const format of ['svrkit-paxoskv/2', 'svrkit-paxoskv/4']) {
      const other = tmpDir('other-format');
      const fdb = openLmdb({ path: other, noSubdir: false, encoding: 'binary', keyEncoding: 'binary' });
      await fdb.put(Buffer.from('\0meta', 'latin1'), pack({ format, memberId: 1, members: [1, 2, 3], createdAt: '2024-01-01T00:00:00.000Z' }));
      await fdb.close();
      const err = await openError(other);
      expect(err.message).toBe(`data dir ${other} is in format ${format}; this build reads only svrkit-paxoskv/3`);
      // A /2 dir is refused with --rejoin too (it is not empty).
      expect((await openError(other, ME, { rejoin: true })).message).toMatch(/this build reads only svrkit-paxoskv\/3/);
    }
  });

  it('refuses a malformed meta record', async () => {
    const base = { format: 'svrkit-paxoskv/3', memberId: 1, members: [1, 2, 3], learners: [], createdAt: '2024-01-01T00:00:00.000Z', incarnation: 0, announced: [], peerIncarnations: [], rejoining: false };
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ ...base, incarnation: undefined }, /incarnation is not a non-negative integer/],
      [{ ...base, incarnation: -1 }, /incarnation/],
      [{ ...base, peerIncarnations: { 2: 1 } }, /peerIncarnations/],
      [{ ...base, peerIncarnations: [[0, 1]] }, /peerIncarnations/],
      [{ ...base, peerIncarnations: [[2, 1], [2, 3]] }, /peerIncarnations/],
      [{ ...base, peerIncarnations: [[2, -1]] }, /peerIncarnations/],
      [{ ...base, rejoining: 1 }, /rejoining is not a boolean/],
      [{ ...base, createdAt: 5 }, /createdAt/],
    ];
    for (const [meta, message] of cases) {
      const dir = tmpDir('bad-meta');
      const db = openLmdb({ path: dir, noSubdir: false, encoding: 'binary', keyEncoding: 'binary', overlappingSync: false });
      await db.put(Buffer.from('\0meta', 'latin1'), sealed(pack(meta)));
      await db.close();
      const err = await openError(dir);
      expect(err.message).toMatch(/the meta record is malformed/);
      expect(err.message).toMatch(message);
      expectRejoinAdvice(err.message);
    }
  });
});

describe('KeyStore meta record', () => {
  it('a new store: created, incarnation 0, no peers, not rejoining; reopened: not created', async () => {
    const dir = tmpDir('meta-new');
    const store = await KeyStore.open(dir, ME);
    expect(store.created).toBe(true);
    expect(store.meta()).toEqual({ incarnation: 0, announced: [], peerIncarnations: new Map(), rejoining: false });
    await store.close();
    const again = await KeyStore.open(dir, ME);
    expect(again.created).toBe(false);
    expect(again.meta()).toEqual({ incarnation: 0, announced: [], peerIncarnations: new Map(), rejoining: false });
    await again.close();
  });

  it('round-trips incarnation, peer incarnations (merged by max) and rejoining across close and reopen', async () => {
    const dir = tmpDir('meta-roundtrip');
    const store = await KeyStore.open(dir, ME);
    const w1 = store.write(new Map(), { incarnation: 1, peerIncarnations: new Map([[2, 5], [3, 1]]) });
    // Visible at once, before it is durable.
    expect(store.meta()).toEqual({ incarnation: 1, announced: [], peerIncarnations: new Map([[2, 5], [3, 1]]), rejoining: false });
    const w2 = store.write(new Map([['k', rec(entry(1, bytes('v')))]]), { peerIncarnations: new Map([[2, 3], [3, 4]]), rejoining: true });
    expect(store.meta()).toEqual({ incarnation: 1, announced: [], peerIncarnations: new Map([[2, 5], [3, 4]]), rejoining: true });
    await Promise.all([w1, w2]);
    const snapshot = store.meta();
    await store.write(new Map(), { incarnation: 2, rejoining: false, peerIncarnations: new Map([[3, 4]]) });
    expect(snapshot).toEqual({ incarnation: 1, announced: [], peerIncarnations: new Map([[2, 5], [3, 4]]), rejoining: true }); // a snapshot
    expect(store.meta()).toEqual({ incarnation: 2, announced: [], peerIncarnations: new Map([[2, 5], [3, 4]]), rejoining: false });
    await store.close();

    const again = await KeyStore.open(dir, ME);
    expect(again.meta()).toEqual({ incarnation: 2, announced: [], peerIncarnations: new Map([[2, 5], [3, 4]]), rejoining: false });
    expectRecord(again.get('k'), rec(entry(1, bytes('v'))));
    expect(again.keyCount).toBe(1); // the meta record is not a key
    await again.write(new Map(), { peerIncarnations: new Map([[2, 4], [1, 7]]), rejoining: true });
    await again.close();
    const third = await KeyStore.open(dir, ME);
    expect(third.meta()).toEqual({ incarnation: 2, announced: [], peerIncarnations: new Map([[1, 7], [2, 5], [3, 4]]), rejoining: true });
    await third.close();
  });

  it('a write with only a meta patch commits; one with neither does not', async () => {
    const store = await KeyStore.open(tmpDir('meta-only'), ME);
    await store.write(new Map(), { incarnation: 3 });
    expect(store.commits).toBe(1);
    await store.write(new Map(), {}); // an empty patch still commits (the contract is "durable")
    expect(store.commits).toBe(2);
    await store.write(new Map());
    expect(store.commits).toBe(2);
    // A meta-only write joins the batch of the writes of its turn, and resolves in order with them.
    const order: string[] = [];
    const a = store.write(new Map([['a', rec(entry(1, bytes('a')))]])).then(() => order.push('a'));
    const m = store.write(new Map(), { incarnation: 4 }).then(() => order.push('meta'));
    await Promise.all([a, m]);
    expect(order).toEqual(['a', 'meta']);
    expect(store.commits).toBe(3);
    await store.close();
  });

  it('a patch written while a commit is in flight waits for the next commit, with its records', async () => {
    const dir = tmpDir('meta-inflight');
    const store = await KeyStore.open(dir, ME);
    const first = store.write(new Map([['a', rec(entry(1, bytes('a')))]]), { incarnation: 1 });
    await new Promise((r) => setImmediate(r)); // the first commit is in flight
    const second = store.write(new Map([['b', rec(entry(1, bytes('b')))]]), { incarnation: 2, peerIncarnations: new Map([[2, 9]]) });
    expect(store.meta().incarnation).toBe(2);
    await first;
    expect(store.commits).toBe(1);
    await second;
    expect(store.commits).toBe(2);
    await store.close();
    const again = await KeyStore.open(dir, ME);
    expect(again.meta()).toEqual({ incarnation: 2, announced: [], peerIncarnations: new Map([[2, 9]]), rejoining: false });
    await again.close();
  });

  it('rejects a malformed patch, applying nothing of the write', async () => {
    const store = await KeyStore.open(tmpDir('meta-bad'), ME);
    const r = rec(entry(1, bytes('v')));
    const bad: unknown[] = [
      { incarnation: -1 },
      { incarnation: 1.5 },
      { rejoining: 'yes' },
      { peerIncarnations: { 2: 1 } },
      { peerIncarnations: new Map([[0, 1]]) },
      { peerIncarnations: new Map([[70_000, 1]]) },
      { peerIncarnations: new Map([[2, -1]]) },
    ];
    for (const patch of bad) {
      await expect(store.write(new Map([['k', r]]), patch as never), JSON.stringify(patch)).rejects.toThrow(/cannot apply the meta patch/);
    }
    expect(store.get('k')).toBeUndefined();
    expect(store.meta()).toEqual({ incarnation: 0, announced: [], peerIncarnations: new Map(), rejoining: false });
    expect(store.commits).toBe(0);
    await store.close();
  });
});

describe('KeyStore rejoin', () => {
  it('creates a fresh store marked rejoining, in a missing or an empty dir', async () => {
    const dir = tmpDir('rejoin-fresh');
    const store = await KeyStore.open(dir, ME, { rejoin: true });
    expect(store.created).toBe(true);
    expect(store.meta()).toEqual({ incarnation: 0, announced: [], peerIncarnations: new Map(), rejoining: true });
    await store.write(new Map([['k', rec(entry(1, bytes('v')))]]), { incarnation: 1 });
    await store.close();
    // Restarted (without --rejoin) before the rejoin finished: still rejoining.
    const again = await KeyStore.open(dir, ME);
    expect(again.created).toBe(false);
    expect(again.meta()).toEqual({ incarnation: 1, announced: [], peerIncarnations: new Map(), rejoining: true });
    await again.close();

    const empty = tmpDir('rejoin-empty');
    await fsp.mkdir(path.join(empty, 'lost+found'), { recursive: true });
    const b = await KeyStore.open(empty, ME, { rejoin: true });
    expect(b.created).toBe(true);
    expect(b.meta().rejoining).toBe(true);
    await b.close();

    const plain = await KeyStore.open(tmpDir('rejoin-false'), ME, { rejoin: false });
    expect(plain.meta().rejoining).toBe(false);
    await plain.close();
  });

  it('refuses --rejoin on a dir that holds a store, changing nothing', async () => {
    const dir = tmpDir('rejoin-existing');
    const store = await KeyStore.open(dir, ME);
    await store.write(new Map([['k', rec(entry(1, bytes('v')))]]), { incarnation: 3 });
    await store.close();
    const err = await openError(dir, ME, { rejoin: true });
    expect(err.message).toBe(
      `data dir ${dir} already holds PaxosKV data (incarnation 3); --rejoin starts a replica that lost its data from an EMPTY data dir: ` +
        'to rejoin, move this dir aside first; to keep its data, restart without --rejoin',
    );
    expectNoUnsafeAdvice(err.message);
    const again = await KeyStore.open(dir, ME); // the refusal changed nothing, and released the dir
    expect(again.meta()).toEqual({ incarnation: 3, announced: [], peerIncarnations: new Map(), rejoining: false });
    expect(again.keyCount).toBe(1);
    await again.write(new Map(), { rejoining: true });
    await again.close();

    // A store still rejoining: --rejoin continues it.
    const unfinished = await KeyStore.open(dir, ME, { rejoin: true });
    expect(unfinished.meta().rejoining).toBe(true);
    await unfinished.close();

    // The identity is checked first.
    expect((await openError(dir, { memberId: 2, members: [1, 2, 3] }, { rejoin: true })).message).toMatch(/belongs to member 1/);
  });

  it('takes --rejoin on a dir whose replica never got a start confirmed and holds no records (a start that found it lost its data)', async () => {
    const dir = tmpDir('rejoin-never-voted');
    const store = await KeyStore.open(dir, ME);
    await store.write(new Map(), { announced: [5] }); // it announced a start, then was refused
    await store.close();
    const rejoined = await KeyStore.open(dir, ME, { rejoin: true });
    expect(rejoined.meta()).toMatchObject({ incarnation: 0, rejoining: true });
    await rejoined.close();
    expect((await KeyStore.open(dir, ME).then(async (s2) => [s2.meta().rejoining, await s2.close()]))[0]).toBe(true);
  });

  it('refuses a data dir created with other learners (which members vote decides every majority)', async () => {
    const dir = tmpDir('learners');
    await (await KeyStore.open(dir, { ...ME, learners: [3] })).close();
    const err = await openError(dir, ME);
    expect(err.message).toMatch(/belongs to a cluster whose learners are \[3\]; this replica was started with --learners \[\]/);
    await (await KeyStore.open(dir, { ...ME, learners: [3] })).close();
    await expect(KeyStore.open(tmpDir('learners-bad'), { ...ME, learners: [4] })).rejects.toThrow(/learner 4 is not in the members/);
  });

  it('refuses --rejoin on a non-empty dir without PaxosKV data', async () => {
    const foreign = tmpDir('rejoin-foreign');
    await fsp.mkdir(foreign, { recursive: true });
    await fsp.writeFile(path.join(foreign, 'notes.txt'), 'x');
    expect((await openError(foreign, ME, { rejoin: true })).message).toMatch(/is not empty and holds no PaxosKV data/);
  });
});

describe('KeyStore keysAfter', () => {
  it('pages through keys in UTF-8 byte order, merging keys not yet durable', async () => {
    const store = await KeyStore.open(tmpDir('keys-after'), ME);
    const r = rec(entry(1, bytes('v')));
    await store.write(new Map(['', 'a', 'b', 'd', '\uE000', 'k'.repeat(MAX_KEY_BYTES)].map((k) => [k, r])));
    // Not durable yet: a new key between durable ones, one after all, and a durable key rewritten.
    const pending = store.write(new Map(['c', 'b', '\u{1F511}', 'z'].map((k) => [k, r])));
    const all = ['', 'a', 'b', 'c', 'd', 'k'.repeat(MAX_KEY_BYTES), 'z', '\uE000', '\u{1F511}']; // U+E000 before U+1F511 in UTF-8
    expect(store.keysAfter(null, 100)).toEqual(all);
    expect(store.keysAfter('', 100)).toEqual(all.slice(1));
    const paged: string[] = [];
    let after: string | null = null;
    for (;;) {
      const page = store.keysAfter(after, 2);
      expect(page.length).toBeLessThanOrEqual(2);
      if (page.length === 0) break;
      paged.push(...page);
      after = page[page.length - 1]!;
    }
    expect(paged).toEqual(all);
    expect(store.keysAfter('b', 2)).toEqual(['c', 'd']);
    expect(store.keysAfter('bb', 1)).toEqual(['c']); // `after` need not be a key
    expect(store.keysAfter('c', 1)).toEqual(['d']);
    expect(store.keysAfter('\u{1F511}', 5)).toEqual([]);
    expect(store.keysAfter('a', 0)).toEqual([]);
    // Longer than any storable key (allowed): the longest key is a prefix of it, so sorts before it.
    expect(store.keysAfter('k'.repeat(MAX_KEY_BYTES * 3), 2)).toEqual(['z', '\uE000']);
    expect(store.keysAfter('k'.repeat(MAX_KEY_BYTES - 1), 1)).toEqual(['k'.repeat(MAX_KEY_BYTES)]);
    expect(() => store.keysAfter('a', -1)).toThrow(RangeError);
    expect(() => store.keysAfter('a', 1.5)).toThrow(RangeError);
    expect(() => store.keysAfter('lone \ud800', 1)).toThrow(RangeError);
    await pending;
    expect(store.keysAfter(null, 100)).toEqual(all);
    await store.close();
  });

  it('lists every key of a large store exactly once, with writes in flight', async () => {
    const { dir, expected } = await populated('keys-after-large');
    const store = await KeyStore.open(dir, ME);
    const extra = new Map([...Array(300).keys()].map((i) => [`key-${i * 7}-new`, rec(entry(1, bytes('n')))]));
    const pending = store.write(extra);
    const listed: string[] = [];
    let after: string | null = null;
    for (let page = store.keysAfter(after, 128); page.length > 0; page = store.keysAfter(after, 128)) {
      listed.push(...page);
      after = page[page.length - 1]!;
    }
    const want = [...expected.keys(), ...extra.keys()].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    expect(listed).toEqual(want);
    await pending;
    await store.close();
  });
});

describe('KeyStore corrupt data files', () => {
  it('(a) data.mdb truncated to half: DataDirError, not SIGBUS', async () => {
    const { dir } = await populated('half');
    const { size } = await fsp.stat(dataFile(dir));
    await fsp.truncate(dataFile(dir), Math.floor(size / 2));
    const err = await openError(dir);
    expect(err.message).toMatch(/data\.mdb is truncated: \d+ bytes, but LMDB's meta page uses pages 0\.\.\d+ of \d+ bytes/);
    expectRejoinAdvice(err.message);
  });

  it('(b) data.mdb truncated to a few bytes, or to zero: DataDirError, never a fresh store', async () => {
    const { dir } = await populated('tiny');
    await fsp.truncate(dataFile(dir), 10);
    const tiny = await openError(dir);
    expect(tiny.message).toMatch(/data\.mdb \(10 bytes\) is corrupt: a child process reading it was killed by SIG/);
    expectRejoinAdvice(tiny.message);
    await fsp.truncate(dataFile(dir), 0);
    const zero = await openError(dir);
    expect(zero.message).toMatch(/data\.mdb is empty \(0 bytes\)/);
    expectRejoinAdvice(zero.message);
    expect((await fsp.stat(dataFile(dir))).size).toBe(0); // not re-initialized
  });

  it('(c) data.mdb overwritten with random bytes, whole or past the meta pages: DataDirError', async () => {
    const whole = await populated('random');
    const { size } = await fsp.stat(dataFile(whole.dir));
    await fsp.writeFile(dataFile(whole.dir), randomBytes(size));
    const wholeErr = await openError(whole.dir);
    expect(wholeErr.message).toMatch(/data\.mdb .*(corrupt|not a readable LMDB file)/);
    expectRejoinAdvice(wholeErr.message);

    const body = await populated('random-body');
    const handle = await fsp.open(dataFile(body.dir), 'r+');
    await handle.write(randomBytes(1024 * 1024), 0, 1024 * 1024, 3 * 4096);
    await handle.close();
    const bodyErr = await openError(body.dir);
    expect(bodyErr.message).toMatch(/data\.mdb .*(corrupt|not a readable LMDB file)/);
    expectRejoinAdvice(bodyErr.message);
  });

  it('(d) lock.mdb missing: opens normally with all data (the lock file holds none)', async () => {
    const { dir, expected } = await populated('nolock');
    await fsp.rm(path.join(dir, 'lock.mdb'));
    const store = await KeyStore.open(dir, ME);
    expect(store.keyCount).toBe(expected.size);
    for (const [key, record] of expected) expectRecord(store.get(key), record, key);
    await store.close();
  });

  it('data.mdb missing next to lock.mdb: DataDirError, not a fresh store', async () => {
    const { dir } = await populated('nodata');
    await fsp.rm(dataFile(dir));
    const err = await openError(dir);
    expect(err.message).toMatch(/has lock\.mdb but no data\.mdb/);
    expectRejoinAdvice(err.message);
    expect((await openError(dir, ME, { rejoin: true })).message).toMatch(/has lock\.mdb but no data\.mdb/);
    expect(await fsp.readdir(dir)).toEqual(['lock.mdb']);
  });

  it('a record that does not decode is a lost key: the store opens, lists it, and reads it as LOST_RECORD', async () => {
    const { dir } = await populated('bad-record');
    const db = openLmdb({ path: dir, noSubdir: false, encoding: 'binary', keyEncoding: 'binary', overlappingSync: false });
    await db.put(Buffer.from('\x01key-17', 'latin1'), sealed(Buffer.from([0x93, 0x01, 0xc0])));
    await db.close();
    const store = await KeyStore.open(dir, ME);
    expect(store.lostAtOpen).toEqual([{ key: 'key-17', reason: expect.stringMatching(/^not valid msgpack/) }]);
    expect(store.corruptReads).toBe(1); // the check at open
    expect(store.get('key-17')).toBe(LOST_RECORD);
    expect(store.corruptReads).toBe(2);
    expect(store.get('key-16')).not.toBe(LOST_RECORD); // the others read as before
    await store.close();
  });

  it('a 4 KiB page overwritten inside a 1 MiB value is caught by the checksum, at open and on read, never served', async () => {
    // The adversarial probe's case: the record still decodes (msgpack bin of the same length), so
    // only the checksum can tell.
    const dir = tmpDir('bad-page');
    const value = new Uint8Array(1024 * 1024);
    for (let i = 0; i < value.length; i++) value[i] = (i * 7 + 3) & 0xff;
    const store = await KeyStore.open(dir, ME);
    await store.write(new Map([['big', rec(entry(1, value))], ['small', rec(entry(1, bytes('s')))]]));
    await store.close();
    const file = path.join(dir, 'data.mdb');
    const data = await fsp.readFile(file);
    const at = data.indexOf(Buffer.from(value.subarray(400_000, 400_064)));
    expect(at).toBeGreaterThan(0);
    const page = (Math.floor((at + 400_000) / 4096) + 1) * 4096; // a whole page well inside the value
    const fh = await fsp.open(file, 'r+');
    await fh.write(Buffer.alloc(4096, 0x5a), 0, 4096, page);
    await fh.close();
    const again = await KeyStore.open(dir, ME);
    expect(again.lostAtOpen).toEqual([{ key: 'big', reason: expect.stringMatching(/^checksum mismatch: stored CRC-32 [0-9a-f]{8}, computed [0-9a-f]{8}/) }]);
    expect(again.get('big')).toBe(LOST_RECORD);
    expect(again.get('small')!.chosen!.value).toEqual(bytes('s'));
    // Rewritten (a repair persists the record again), it reads as data once more.
    await again.write(new Map([['big', rec(entry(1, value), { fence: 3 })]]));
    expect(Buffer.from(again.get('big')!.chosen!.value!).equals(Buffer.from(value))).toBe(true);
    await again.close();
  });

  it('a record that stops decoding after open reads as LOST_RECORD, and each such read is counted', async () => {
    const dir = tmpDir('bad-later');
    const store = await KeyStore.open(dir, ME);
    await store.write(new Map([['k', rec(entry(1, bytes('v')))]]));
    // Another handle on the same environment (same process) overwrites the record with garbage.
    const db = openLmdb({ path: dir, noSubdir: false, encoding: 'binary', keyEncoding: 'binary', overlappingSync: false });
    await db.put(Buffer.from('\x01k', 'latin1'), sealed(pack([3, 'junk'])));
    await db.close();
    expect(store.get('k')).toBe(LOST_RECORD);
    expect(store.get('k')).toBe(LOST_RECORD);
    expect(store.corruptReads).toBe(2);
    await store.close();
  });

  it('the test process survived every case above', async () => {
    const { dir, expected } = await populated('alive');
    const store = await KeyStore.open(dir, ME);
    expect(store.keyCount).toBe(expected.size);
    await store.close();
  });
});
