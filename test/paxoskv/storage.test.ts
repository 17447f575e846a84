import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { open as openLmdb } from 'lmdb';
import { pack } from 'msgpackr';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ballotOf, nextEntry, RECENT_MAX, type Entry, type KeyRecord } from '../../services/paxoskv/core/types.js';
import { DataDirError, decodeRecord, encodeRecord, KeyStore, MAX_KEY_BYTES, type ClusterIdentity } from '../../services/paxoskv/storage.js';
import { ackRecord, hotRecord } from './storage-child.js';

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

function entry(index: number, value: Uint8Array | null, extra: Partial<Entry> = {}): Entry {
  return { index, value, requestId: `r${index}`, proposer: 2, time: 1_700_000_000_000 + index, recent: [], ...extra };
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
function shapes(): Map<string, KeyRecord> {
  let e: Entry | null = null;
  for (let i = 0; i < RECENT_MAX + 3; i++) e = nextEntry(e, bytes(`value ${i}`), `req-${i}`, 3, 1_700_000_000_000 + i);
  const big = new Uint8Array(1024 * 1024).map((_, i) => (i * 31) & 255);
  return new Map<string, KeyRecord>([
    ['empty', { chosen: null, promised: 0, accepted: 0, acceptedEntry: null }],
    ['promised-only', { chosen: null, promised: ballotOf(7, 3), accepted: 0, acceptedEntry: null }],
    ['chosen', { chosen: entry(1, bytes('hello')), promised: ballotOf(0, 2), accepted: 0, acceptedEntry: null }],
    ['deleted', { chosen: entry(5, null), promised: 0, accepted: 0, acceptedEntry: null }],
    ['empty-value', { chosen: entry(2, new Uint8Array(0), { requestId: '' }), promised: 0, accepted: 0, acceptedEntry: null }],
    ['recent', { chosen: e, promised: ballotOf(123_456_789, 65_535), accepted: ballotOf(123_456_789, 65_535), acceptedEntry: null }],
    [
      'accepted',
      { chosen: entry(3, bytes('a')), promised: ballotOf(4, 1), accepted: ballotOf(4, 1), acceptedEntry: entry(4, bytes('b'), { recent: [{ requestId: 'r3', version: 3, time: 1_700_000_000_003 }] }) },
    ],
    ['accepted-delete', { chosen: null, promised: ballotOf(1, 3), accepted: ballotOf(1, 3), acceptedEntry: entry(1, null) }],
    ['1MiB', { chosen: entry(9, big), promised: 0, accepted: ballotOf(2, 2), acceptedEntry: entry(10, big.slice().reverse()) }],
    ['', { chosen: entry(1, bytes('empty key')), promised: 0, accepted: 0, acceptedEntry: null }],
    ['ключ/键/🔑', { chosen: entry(1, bytes('unicode key'), { requestId: 'запрос-🔑' }), promised: 0, accepted: 0, acceptedEntry: null }],
    ['k'.repeat(MAX_KEY_BYTES), { chosen: entry(1, bytes('longest key')), promised: 0, accepted: 0, acceptedEntry: null }],
  ]);
}

/** A store with a few MB of data (small records, some 200 KiB ones), closed. */
async function populated(name: string): Promise<{ dir: string; expected: Map<string, KeyRecord> }> {
  const dir = tmpDir(name);
  const store = await KeyStore.open(dir, ME);
  const expected = new Map<string, KeyRecord>();
  for (let i = 0; i < 3000; i++) {
    const value = i % 500 === 0 ? new Uint8Array(200 * 1024).fill(i & 255) : bytes(`value-${i}-`.repeat(20));
    expected.set(`key-${i}`, { chosen: entry(1 + (i % 9), value), promised: ballotOf(i, 1), accepted: 0, acceptedEntry: null });
  }
  await store.write(expected);
  await store.close();
  return { dir, expected };
}

const dataFile = (dir: string) => path.join(dir, 'data.mdb');

async function openError(dir: string, identity: ClusterIdentity = ME): Promise<DataDirError> {
  const err = await KeyStore.open(dir, identity).then(
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
    for (const record of shapes().values()) expectRecord(decodeRecord(encodeRecord(record)), record);
    const small: KeyRecord = { chosen: entry(1, bytes('v')), promised: ballotOf(1, 1), accepted: 0, acceptedEntry: null };
    expect(encodeRecord(small).length).toBeLessThan(30);
    const bad: unknown[] = [
      new Uint8Array([0xc1]),
      new Uint8Array([0x93, 0x01]),
      pack({ chosen: null }),
      pack([2, null, 0, 0, null]),
      pack([1, null, -1, 0, null]),
      pack([1, null, 0, 0.5, null]),
      pack([1, [0, null, '', 1, []], 0, 0, null]),
      pack([1, [1, 'not bytes', '', 1, []], 0, 0, null]),
      pack([1, [1, null, '', 70_000, []], 0, 0, null]),
      pack([1, [1, null, '', 1, ['r1']], 0, 0, null]),
      pack([1, null, 0, 0, null, 'extra']),
    ];
    for (const b of bad) expect(() => decodeRecord(b as Uint8Array)).toThrow();
  });

  it('serves records from get() before they are durable, and after', async () => {
    const store = await KeyStore.open(tmpDir('unsaved'), ME);
    const first: KeyRecord = { chosen: entry(1, bytes('one')), promised: 0, accepted: 0, acceptedEntry: null };
    const second: KeyRecord = { chosen: entry(2, bytes('two')), promised: 0, accepted: 0, acceptedEntry: null };
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
    const rec: KeyRecord = { chosen: entry(1, bytes('v')), promised: 0, accepted: 0, acceptedEntry: null };
    await expect(store.write(new Map([['ok', rec], ['x'.repeat(MAX_KEY_BYTES + 1), rec]]))).rejects.toThrow(/longer than 1024 UTF-8 bytes/);
    await expect(store.write(new Map([['é'.repeat(513), rec]]))).rejects.toThrow(RangeError); // 1026 bytes
    await expect(store.write(new Map([['lone \ud800 surrogate', rec]]))).rejects.toThrow(/lone surrogate/);
    expect(store.get('ok')).toBeUndefined();
    expect(store.get('x'.repeat(5000))).toBeUndefined();
    expect(store.get('lone \ud800 surrogate')).toBeUndefined();
    await store.write(new Map([['\ud83d\udd11', rec]]));
    expect(store.get('\ud83d\udd11')).toEqual(rec);
    await store.close();
  });

  it('close() waits for pending writes; later writes are refused', async () => {
    const dir = tmpDir('close');
    const store = await KeyStore.open(dir, ME);
    const rec: KeyRecord = { chosen: entry(1, bytes('v')), promised: 0, accepted: 0, acceptedEntry: null };
    const written = store.write(new Map([['late', rec]]));
    await store.close();
    await written;
    await expect(store.write(new Map([['after', rec]]))).rejects.toThrow(/closed/);
    expect(() => store.get('late')).toThrow(/closed/);
    const again = await KeyStore.open(dir, ME);
    expect(again.get('late')).toEqual(rec);
    await again.close();
  });
});

describe('KeyStore group commit', () => {
  it('commits the writes of one turn together and resolves them in order', async () => {
    const store = await KeyStore.open(tmpDir('group'), ME);
    const order: number[] = [];
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 100; i++) {
      const rec: KeyRecord = { chosen: entry(1, bytes(`v${i}`)), promised: 0, accepted: 0, acceptedEntry: null };
      writes.push(store.write(new Map([[`key-${i}`, rec]])).then(() => void order.push(i)));
    }
    await Promise.all(writes);
    expect(store.commits).toBeLessThan(100);
    expect(store.commits).toBe(1);
    expect(order).toEqual([...Array(100).keys()]);

    // Writes handed over while a commit is in flight go into the next one, together.
    const before = store.commits;
    const rec = (i: number): KeyRecord => ({ chosen: entry(2, bytes(`w${i}`)), promised: 0, accepted: 0, acceptedEntry: null });
    const first = store.write(new Map([['first', rec(0)]]));
    await new Promise((r) => setImmediate(r)); // the first commit has started
    const during: Promise<void>[] = [];
    for (let i = 0; i < 50; i++) {
      during.push(store.write(new Map([[`during-${i}`, rec(i)]])));
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
    const w = store.write(new Map([['k', { chosen: entry(1, bytes('v')), promised: 0, accepted: 0, acceptedEntry: null }]])).then(() => (done = true));
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
    await store.write(new Map([['k', { chosen: entry(1, bytes('v')), promised: 0, accepted: 0, acceptedEntry: null }]]));
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
    expect((await openError(otherLmdb)).message).toMatch(/not a PaxosKV store \(no svrkit-paxoskv\/1 meta record\)/);

    const future = tmpDir('future');
    const fdb = openLmdb({ path: future, noSubdir: false, encoding: 'binary', keyEncoding: 'binary' });
    await fdb.put(Buffer.from('\0meta', 'latin1'), pack({ format: 'svrkit-paxoskv/2', memberId: 1, members: [1, 2, 3] }));
    await fdb.close();
    expect((await openError(future)).message).toMatch(/format svrkit-paxoskv\/2; this build reads only svrkit-paxoskv\/1/);
  });
});

describe('KeyStore corrupt data files', () => {
  it('(a) data.mdb truncated to half: DataDirError, not SIGBUS', async () => {
    const { dir } = await populated('half');
    const { size } = await fsp.stat(dataFile(dir));
    await fsp.truncate(dataFile(dir), Math.floor(size / 2));
    expect((await openError(dir)).message).toMatch(/data\.mdb is truncated: \d+ bytes, but LMDB's meta page uses pages 0\.\.\d+ of \d+ bytes/);
  });

  it('(b) data.mdb truncated to a few bytes, or to zero: DataDirError, never a fresh store', async () => {
    const { dir } = await populated('tiny');
    await fsp.truncate(dataFile(dir), 10);
    expect((await openError(dir)).message).toMatch(/data\.mdb \(10 bytes\) is corrupt: a child process reading it was killed by SIG/);
    await fsp.truncate(dataFile(dir), 0);
    expect((await openError(dir)).message).toMatch(/data\.mdb is empty \(0 bytes\)/);
    expect((await fsp.stat(dataFile(dir))).size).toBe(0); // not re-initialized
  });

  it('(c) data.mdb overwritten with random bytes, whole or past the meta pages: DataDirError', async () => {
    const whole = await populated('random');
    const { size } = await fsp.stat(dataFile(whole.dir));
    await fsp.writeFile(dataFile(whole.dir), randomBytes(size));
    expect((await openError(whole.dir)).message).toMatch(/data\.mdb .*(corrupt|not a readable LMDB file)/);

    const body = await populated('random-body');
    const handle = await fsp.open(dataFile(body.dir), 'r+');
    await handle.write(randomBytes(1024 * 1024), 0, 1024 * 1024, 3 * 4096);
    await handle.close();
    expect((await openError(body.dir)).message).toMatch(/data\.mdb .*(corrupt|not a readable LMDB file)/);
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
    expect((await openError(dir)).message).toMatch(/has lock\.mdb but no data\.mdb/);
    expect(await fsp.readdir(dir)).toEqual(['lock.mdb']);
  });

  it('a record that does not decode: DataDirError naming the key', async () => {
    const { dir } = await populated('bad-record');
    const db = openLmdb({ path: dir, noSubdir: false, encoding: 'binary', keyEncoding: 'binary', overlappingSync: false });
    await db.put(Buffer.from('\x01key-17', 'latin1'), Buffer.from([0x93, 0x01, 0xc0]));
    await db.close();
    expect((await openError(dir)).message).toMatch(/the record of key "key-17" does not decode \(not valid msgpack/);
  });

  it('the test process survived every case above', async () => {
    const { dir, expected } = await populated('alive');
    const store = await KeyStore.open(dir, ME);
    expect(store.keyCount).toBe(expected.size);
    await store.close();
  });
});
