/**
 * PaxosKV's persistence: one LMDB environment per replica holding every key's `KeyRecord`
 * ("PLog as DB": the record is the key's whole log), plus a meta record naming the cluster member
 * the data belongs to.
 *
 * Layout of a data dir:
 * - `data.mdb`, `lock.mdb`: the LMDB environment (lmdb-js). `lock.mdb` holds no data; LMDB
 *   recreates it when it is missing.
 * - LMDB keys are bytes: `0x00 "meta"` is the meta record (msgpack map
 *   `{ format: 'svrkit-paxoskv/1', memberId, members, createdAt }`); `0x01 + UTF-8(key)` is the
 *   record of `key` (msgpack array, see {@link encodeRecord}).
 *
 * Durability: {@link KeyStore.write} resolves only once its records are fsync'd. The environment is
 * opened with `overlappingSync: false` (see {@link LMDB_OPTIONS} for why and the lmdb-js lines
 * that show it), so every LMDB commit syncs the data pages and then writes the meta page through
 * an O_DSYNC descriptor before the commit's promise resolves. Writes are group-committed: every
 * record handed to `write()` during one event-loop turn, or while a commit is in flight, goes into
 * the next single LMDB transaction, and at most one transaction is in flight at a time, so a
 * later write is never durable before an earlier one.
 *
 * Corruption: LMDB does not checksum pages and reads the file through mmap, so a truncated
 * `data.mdb` raises SIGBUS when a page past EOF is touched and a garbage one can SIGSEGV inside
 * LMDB. {@link KeyStore.open} therefore first validates an existing `data.mdb` in a child process
 * (compares the file size with the last page LMDB's meta page reports, then reads every entry and
 * every page of every value) and opens it in-process only after that child came back healthy.
 * Every refusal is a {@link DataDirError}; a damaged dir is never opened as an empty store.
 * What this cannot see: garbage inside a page that still parses (LMDB has no checksums; records
 * are shape-checked when decoded, which catches most of it) and damage confined to LMDB's
 * free-page list, which lmdb-js offers no way to read.
 */
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { open as openLmdb, type RootDatabase, type RootDatabaseOptionsWithPath } from 'lmdb';
import { Packr, Unpackr } from 'msgpackr';
import type { RecordSource } from './core/replica.js';
import { MAX_MEMBER_ID, type Entry, type KeyRecord, type MemberId, type RecentWrite } from './core/types.js';

/** Name and version of the on-disk format, stored in the meta record. */
export const DATA_FORMAT = 'svrkit-paxoskv/1';

/** Longest key `write()` accepts, in UTF-8 bytes (LMDB's own limit is about 1978 bytes). */
export const MAX_KEY_BYTES = 1024;

/** The version tag of an encoded record (first element of its msgpack array). */
const RECORD_VERSION = 1;

/** LMDB key of the meta record (namespace byte 0x00). */
const META_KEY = Buffer.from([0x00, ...Buffer.from('meta', 'latin1')]);
/** First byte of every record's LMDB key. */
const RECORD_PREFIX = 0x01;
/** Range bounds of the record namespace and of the meta namespace. */
const RECORDS_START = Buffer.from([RECORD_PREFIX]);
const RECORDS_END = Buffer.from([RECORD_PREFIX + 1]);
const META_START = Buffer.from([0x00]);

/** The LMDB data file, and the staging dir a fresh store is built in before it is moved into place. */
const DATA_FILE = 'data.mdb';
const LOCK_FILE = 'lock.mdb';
const STAGING_DIR = '.paxoskv-init';
/** Entries a data dir may hold besides ours and still count as empty (a fresh ext4 volume's root). */
const IGNORED_ENTRIES = new Set(['lost+found']);

/**
 * The lmdb-js options every environment is opened with (the probe child uses the same ones, read
 * only).
 *
 * `overlappingSync: false` is the durability choice. lmdb-js enables overlappingSync by default on
 * non-Windows (`open.js`: `overlappingSync: options.noSync || options.readOnly ? false : os != 'win32'`);
 * with it the write thread begins every transaction with `MDB_NOSYNC` (`src/writer.cpp`:
 * `(envForTxn->jsFlags & MDB_OVERLAPPINGSYNC) ? MDB_NOSYNC : 0`) and the put/batch promise
 * "resolve[s] when committed" while `db.flushed` resolves "when the last commit is fully
 * flushed/synced to disk and is durable" (README, "Overlapping Sync Options"); the sync happens
 * after the commit, outside the write lock (`mdb.c` `mdb_txn_commit`, `LOCK_MUTEX(... me_sync_mutex)`
 * then `mdb_env_sync0` and a second meta write), and after a reboot LMDB falls back to the last
 * *flushed* meta (`mdb_pick_meta`, boot id check). With `overlappingSync: false` the transaction is
 * begun with flags 0, and `mdb_txn_commit` runs `mdb_env_sync0(env, 0, ...)` (fdatasync of the
 * data pages) and then `mdb_env_write_meta`, which writes the meta page through `me_mfd`, opened
 * `O_WRONLY|O_DSYNC` ("writing to it also syncs to disk"), all before the write thread marks the
 * transaction TXN_COMMITTED and lmdb-js resolves the batch promise. So the batch promise alone
 * means durable, and no reliance on the module-wide `db.flushed` thenable is needed. Awaiting
 * `db.flushed` with overlappingSync on would also be correct; it buys overlap of one commit's
 * fsync with the next commit, which this store does not use (one commit in flight at a time),
 * and it measured slower here (it still syncs twice per commit, and writes the meta page twice).
 *
 * `noSubdir: false`: lmdb-js treats a path with an extension (`./data.v1`) as a file otherwise.
 * Binary keys and values: records are msgpackr-encoded here, not by lmdb-js's bundled msgpackr.
 */
const LMDB_OPTIONS = {
  noSubdir: false,
  overlappingSync: false,
  encoding: 'binary',
  keyEncoding: 'binary',
  cache: false,
  compression: false,
} as const satisfies Omit<RootDatabaseOptionsWithPath, 'path'>;

const packr = new Packr({ useRecords: false, variableMapSize: true });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: 'number' });

/** Data dirs open in this process (absolute paths): LMDB must not open one environment twice. */
const openDirs = new Set<string>();

/** The member a replica is and the cluster it belongs to, as stored in the data dir's meta record. */
export interface ClusterIdentity {
  /** This replica's member id, 1..65535. */
  memberId: MemberId;
  /** Every member id of the cluster, sorted ascending, without duplicates, including `memberId`. */
  members: MemberId[];
}

/**
 * Refusal to open a data dir, or a record in it that cannot be read: the dir belongs to another
 * member or cluster, holds foreign files, is corrupt (truncated, garbage, undecodable record), or
 * cannot be read. The message names the dir and says what to check.
 */
export class DataDirError extends Error {
  /** The data dir, as it was passed to {@link KeyStore.open}. */
  readonly dir: string;

  /**
   * @param message - what is wrong and what to check.
   * @param dir - the data dir concerned.
   * @param options - `cause`: the underlying error, if any.
   */
  constructor(message: string, dir: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DataDirError';
    this.dir = dir;
  }
}

/** A batch of records waiting for (or in) one LMDB transaction, and the promise its writers hold. */
interface Batch {
  readonly records: Map<string, { record: KeyRecord; bytes: Uint8Array }>;
  readonly done: Promise<void>;
  resolve(): void;
  reject(err: Error): void;
}

function newBatch(): Batch {
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const done = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { records: new Map(), done, resolve, reject };
}

/**
 * The durable records of one replica: an LMDB environment in a data dir, with group commit.
 * Implements the core's `RecordSource`.
 */
export class KeyStore implements RecordSource {
  /** The identity this store was opened with (equal to the one stored in the dir). */
  readonly identity: ClusterIdentity;
  /** The data dir, as passed to {@link KeyStore.open}. */
  readonly dir: string;

  readonly #db: RootDatabase<Buffer, Buffer>;
  readonly #absDir: string;
  /** Meta-namespace entries, subtracted from LMDB's entry count. */
  readonly #metaEntries: number;
  /** Records handed to write() since the last commit started. */
  #pending: Batch | null = null;
  /** Records of the commit in flight. */
  #inflight: Batch | null = null;
  #scheduled: ReturnType<typeof setImmediate> | null = null;
  #commits = 0;
  #failure: Error | null = null;
  #closing: Promise<void> | null = null;
  #closed = false;

  private constructor(db: RootDatabase<Buffer, Buffer>, dir: string, absDir: string, identity: ClusterIdentity, metaEntries: number) {
    this.#db = db;
    this.dir = dir;
    this.#absDir = absDir;
    this.identity = Object.freeze({ memberId: identity.memberId, members: Object.freeze([...identity.members]) as MemberId[] });
    this.#metaEntries = metaEntries;
  }

  /**
   * Opens (creating when absent) the data dir for this member of this cluster.
   *
   * - A missing or empty dir (a `lost+found` entry is ignored) is created fresh: the LMDB file is
   *   built with its meta record in `<dir>/.paxoskv-init/`, synced, and renamed into place, so a
   *   crash during creation leaves an empty dir, never a `data.mdb` without a meta record.
   * - An existing `data.mdb` is validated in a child process first (`process.execPath` running a
   *   small script with lmdb-js: file size against LMDB's last page number, then a read of every
   *   entry and every page of every value), then opened here; its meta record must name
   *   `DATA_FORMAT` and `identity`, no other live process may have the environment open (LMDB's
   *   reader table), and every record must decode. The read is O(size of the data), once per
   *   open; a healthy open costs ~100 ms for the child process on top.
   *
   * @param dir - the data dir (relative to the cwd or absolute); used as given in messages.
   * @param identity - this replica's member id and the sorted member list.
   * @returns the open store.
   * @throws RangeError when `identity` is malformed (not sorted, not containing `memberId`, ids
   *   outside 1..65535).
   * @throws DataDirError when the dir belongs to another member or member list, holds foreign
   *   files, holds a `lock.mdb` without `data.mdb`, is corrupt (zero-length, truncated or garbage
   *   `data.mdb`, missing or foreign meta record, a record that does not decode), cannot be read
   *   or created, or is open in this or another live process.
   */
  static async open(dir: string, identity: ClusterIdentity): Promise<KeyStore> {
    checkIdentity(identity);
    const absDir = path.resolve(dir);
    if (openDirs.has(absDir)) throw new DataDirError(`data dir ${dir} is already open in this process`, dir);
    openDirs.add(absDir);
    try {
      const state = await inspectDir(dir, absDir);
      if (state === 'fresh') await createFresh(dir, absDir, identity);
      else await probeDataFile(dir, absDir);
      let db: RootDatabase<Buffer, Buffer>;
      try {
        db = openLmdb<Buffer, Buffer>({ path: absDir, ...LMDB_OPTIONS });
      } catch (err) {
        throw new DataDirError(`data dir ${dir}: LMDB cannot open ${DATA_FILE}: ${(err as Error).message}`, dir, { cause: err });
      }
      try {
        const metaEntries = await verifyOpened(db, dir, absDir, identity);
        return new KeyStore(db, dir, absDir, identity, metaEntries);
      } catch (err) {
        await db.close().catch(() => undefined);
        throw err;
      }
    } catch (err) {
      openDirs.delete(absDir);
      throw err;
    }
  }

  /**
   * The latest record of a key: records handed to write() and not yet durable first (the most
   * recent write wins), then LMDB. Synchronous; an LMDB read is a B-tree lookup in the mmap plus a
   * msgpack decode.
   * @param key - the key.
   * @returns the record, or undefined for a key never written (and for keys `write()` would
   *   reject: longer than MAX_KEY_BYTES or not well-formed UTF-16).
   * @throws DataDirError naming the key when its stored record does not decode.
   * @throws Error when the store is closed.
   */
  get(key: string): KeyRecord | undefined {
    if (this.#closed) throw new Error(`KeyStore ${this.dir} is closed`);
    const unsaved = this.#pending?.records.get(key) ?? this.#inflight?.records.get(key);
    if (unsaved !== undefined) return unsaved.record;
    if (keyProblem(key) !== undefined) return undefined;
    const bytes = this.#db.getBinary(recordKey(key));
    if (bytes === undefined) return undefined;
    try {
      return decodeRecord(bytes);
    } catch (err) {
      throw new DataDirError(
        `data dir ${this.dir}: the record of key ${JSON.stringify(key)} does not decode (${(err as Error).message}); the data file is corrupt`,
        this.dir,
        { cause: err },
      );
    }
  }

  /**
   * Makes records durable. Group commit: every record handed over during this event-loop turn, or
   * while a commit is in flight, goes into the next single LMDB transaction (started from
   * `setImmediate`, after the current commit finished). The records are visible to `get()` at once.
   *
   * @param records - key -> record; the map and the records are not modified, and must not be
   *   modified afterwards (the records are kept by reference until durable).
   * @returns a promise that resolves once these records, and every record of every earlier
   *   `write()`, are committed and fsync'd (an empty map resolves with the earlier writes).
   *   Writes resolve in call order.
   * @throws (rejects) RangeError, adding none of the records, when a key is longer than
   *   MAX_KEY_BYTES UTF-8 bytes or is not well-formed UTF-16 (a lone surrogate), or a record
   *   cannot be encoded; Error when the store is closing or closed, or when an earlier commit
   *   failed (the store then refuses every later write, since they could no longer be ordered
   *   after the lost one; the replica must restart).
   */
  write(records: ReadonlyMap<string, KeyRecord>): Promise<void> {
    if (this.#closing !== null) return Promise.reject(new Error(`KeyStore ${this.dir} is closed`));
    if (this.#failure !== null) return Promise.reject(this.#failure);
    const encoded: Array<[string, { record: KeyRecord; bytes: Uint8Array }]> = [];
    for (const [key, record] of records) {
      const problem = keyProblem(key);
      if (problem !== undefined) return Promise.reject(new RangeError(`cannot store key ${JSON.stringify(String(key).slice(0, 64))}: ${problem}`));
      let bytes: Uint8Array;
      try {
        bytes = encodeRecord(record);
      } catch (err) {
        return Promise.reject(new RangeError(`cannot encode the record of key ${JSON.stringify(key.slice(0, 64))}: ${(err as Error).message}`));
      }
      encoded.push([key, { record, bytes }]);
    }
    if (encoded.length === 0) return this.#pending?.done ?? this.#inflight?.done ?? Promise.resolve();
    const batch = (this.#pending ??= newBatch());
    for (const [key, value] of encoded) batch.records.set(key, value);
    this.#schedule();
    return batch.done;
  }

  /**
   * Number of keys stored: LMDB's entry count (without the meta record) plus keys handed to
   * `write()` that are not in LMDB yet. Exact, computed on each call (one LMDB lookup per record
   * not yet durable); meant for status output.
   */
  get keyCount(): number {
    if (this.#closed) throw new Error(`KeyStore ${this.dir} is closed`);
    const stats = this.#db.getStats() as { entryCount: number };
    let count = stats.entryCount - this.#metaEntries;
    const seen = new Set<string>();
    for (const batch of [this.#inflight, this.#pending]) {
      if (batch === null) continue;
      for (const key of batch.records.keys()) {
        if (seen.has(key)) continue;
        seen.add(key);
        if (!this.#db.doesExist(recordKey(key))) count++;
      }
    }
    return count;
  }

  /**
   * Every key with a record, for a status command: keys durable in LMDB (in UTF-8 byte order, read
   * from one LMDB snapshot), then keys handed to `write()` that were not durable in that snapshot.
   * The snapshot and the set of unsaved keys are taken when iteration starts. Each key once. Iterate promptly: an unfinished iterator
   * holds an LMDB read transaction, which keeps old pages from being reused.
   * @returns an iterable of keys; get(key) returns each one's record.
   */
  *keys(): Generator<string, void, undefined> {
    if (this.#closed) throw new Error(`KeyStore ${this.dir} is closed`);
    const unsaved = new Set<string>();
    for (const batch of [this.#inflight, this.#pending]) if (batch !== null) for (const key of batch.records.keys()) unsaved.add(key);
    for (const raw of this.#db.getKeys({ start: RECORDS_START, end: RECORDS_END })) {
      const key = Buffer.from(raw as Uint8Array).toString('utf8', 1);
      unsaved.delete(key);
      yield key;
    }
    yield* unsaved;
  }

  /** LMDB transactions committed by `write()` since open (for tests and metrics). */
  get commits(): number {
    return this.#commits;
  }

  /**
   * Closes the store: waits until every record handed to `write()` is durable (or its commit
   * failed), then closes LMDB. Later `write()` calls reject; `get()`, `keys()` and `keyCount`
   * throw. Idempotent.
   * @returns a promise that resolves once the environment is closed.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      for (;;) {
        const last = this.#pending ?? this.#inflight;
        if (last === null || this.#failure !== null) break;
        await last.done.catch(() => undefined);
      }
      if (this.#scheduled !== null) clearImmediate(this.#scheduled);
      this.#scheduled = null;
      this.#closed = true;
      try {
        await this.#db.close();
      } finally {
        openDirs.delete(this.#absDir);
      }
    })();
    return this.#closing;
  }

  #schedule(): void {
    if (this.#scheduled !== null || this.#inflight !== null || this.#failure !== null) return;
    this.#scheduled = setImmediate(() => {
      this.#scheduled = null;
      this.#commit();
    });
  }

  /** Starts one LMDB transaction with every pending record. */
  #commit(): void {
    const batch = this.#pending;
    if (batch === null || this.#inflight !== null || this.#failure !== null) return;
    this.#pending = null;
    this.#inflight = batch;
    let committed: Promise<boolean>;
    try {
      // One batch() is one LMDB transaction: lmdb-js wraps the callback's writes in a block that
      // the write thread does not split across transactions.
      committed = this.#db.batch(() => {
        for (const [key, { bytes }] of batch.records) void this.#db.put(recordKey(key), bytes as Buffer);
      });
    } catch (err) {
      this.#fail(batch, err);
      return;
    }
    committed.then(
      () => {
        this.#commits++;
        // lmdb-js resets its read snapshot on commit; do it explicitly before dropping the
        // in-memory copies, so get() can only move from them to the committed data.
        this.#db.resetReadTxn();
        this.#inflight = null;
        batch.resolve();
        if (this.#pending !== null) this.#schedule();
      },
      (err: unknown) => this.#fail(batch, err),
    );
  }

  #fail(batch: Batch, err: unknown): void {
    const failure = new Error(`KeyStore ${this.dir}: commit of ${batch.records.size} record(s) failed: ${(err as Error)?.message ?? String(err)}`, {
      cause: err,
    });
    this.#failure = failure;
    batch.reject(failure);
    const pending = this.#pending;
    if (pending !== null) pending.reject(failure);
  }
}

// ---------------------------------------------------------------------------------------------
// Records

/**
 * Encodes a record as msgpack (msgpackr, standard mode):
 * `[1, chosen, promised, accepted, acceptedEntry]`, each entry `null` or
 * `[index, value, requestId, proposer, recent, time]`, `value` a msgpack bin (or nil for a delete)
 * and `recent` flattened to `[requestId, version, time, requestId, version, time, ...]`. Ballots are integers up
 * to 2^53 (msgpackr writes those above 2^32 as float64, exactly).
 * @param record - the record.
 * @returns the encoded bytes.
 */
export function encodeRecord(record: KeyRecord): Uint8Array {
  return packr.pack([RECORD_VERSION, encodeEntry(record.chosen), record.promised, record.accepted, encodeEntry(record.acceptedEntry)]);
}

function encodeEntry(entry: Entry | null): unknown[] | null {
  if (entry === null) return null;
  const recent: Array<string | number> = [];
  for (const r of entry.recent) recent.push(r.requestId, r.version, r.time);
  return [entry.index, entry.value, entry.requestId, entry.proposer, recent, entry.time];
}

/**
 * Decodes and validates a record written by {@link encodeRecord}. Values come back as plain
 * `Uint8Array`s (views of `bytes`' memory).
 * @param bytes - the encoded record.
 * @returns the record.
 * @throws Error describing the first problem when the bytes are not valid msgpack or not a record
 *   of this version (wrong shape, wrong field type, integers out of range).
 */
export function decodeRecord(bytes: Uint8Array): KeyRecord {
  let raw: unknown;
  try {
    raw = unpackr.unpack(bytes);
  } catch (err) {
    throw new Error(`not valid msgpack: ${(err as Error).message}`);
  }
  if (!Array.isArray(raw)) throw new Error('not a msgpack array');
  if (raw[0] !== RECORD_VERSION) throw new Error(`unknown record version ${JSON.stringify(raw[0])}`);
  if (raw.length !== 5) throw new Error(`expected 5 fields, got ${raw.length}`);
  const promised = raw[2];
  const accepted = raw[3];
  if (!isCount(promised)) throw new Error('promised is not a ballot');
  if (!isCount(accepted)) throw new Error('accepted is not a ballot');
  return { chosen: decodeEntry(raw[1], 'chosen'), promised, accepted, acceptedEntry: decodeEntry(raw[4], 'acceptedEntry') };
}

function decodeEntry(raw: unknown, field: string): Entry | null {
  if (raw === null) return null;
  if (!Array.isArray(raw) || raw.length !== 6) throw new Error(`${field} is not an entry`);
  const [index, value, requestId, proposer, recentRaw, time] = raw as unknown[];
  if (!isCount(index) || index < 1) throw new Error(`${field}.index is not a positive integer`);
  if (value !== null && !(value instanceof Uint8Array)) throw new Error(`${field}.value is neither bytes nor nil`);
  if (typeof requestId !== 'string') throw new Error(`${field}.requestId is not a string`);
  if (!isCount(proposer) || proposer > MAX_MEMBER_ID) throw new Error(`${field}.proposer is not a member id`);
  if (!isCount(time)) throw new Error(`${field}.time is not a timestamp`);
  if (!Array.isArray(recentRaw) || recentRaw.length % 3 !== 0) throw new Error(`${field}.recent is not a list of (requestId, version, time) triples`);
  const recent: RecentWrite[] = [];
  for (let i = 0; i < recentRaw.length; i += 3) {
    const rid = recentRaw[i] as unknown;
    const version = recentRaw[i + 1] as unknown;
    const t = recentRaw[i + 2] as unknown;
    if (typeof rid !== 'string' || !isCount(version) || !isCount(t)) throw new Error(`${field}.recent[${i / 3}] is not a (requestId, version, time) triple`);
    recent.push({ requestId: rid, version, time: t });
  }
  return {
    index,
    value: value === null ? null : new Uint8Array(value.buffer, value.byteOffset, value.byteLength),
    requestId,
    proposer,
    time,
    recent,
  };
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

// ---------------------------------------------------------------------------------------------
// Keys

/** Why `key` cannot be stored, or undefined when it can. */
function keyProblem(key: string): string | undefined {
  if (typeof key !== 'string') return 'not a string';
  // Cheap bound first: a UTF-16 unit is at most 3 UTF-8 bytes.
  if (key.length * 3 > MAX_KEY_BYTES && Buffer.byteLength(key, 'utf8') > MAX_KEY_BYTES) {
    return `longer than ${MAX_KEY_BYTES} UTF-8 bytes (${Buffer.byteLength(key, 'utf8')})`;
  }
  if (!isWellFormed(key)) return 'not well-formed UTF-16 (lone surrogate): it would not survive UTF-8';
  return undefined;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function isWellFormed(s: string): boolean {
  const native = (s as unknown as { isWellFormed?: () => boolean }).isWellFormed;
  return typeof native === 'function' ? native.call(s) : !LONE_SURROGATE.test(s);
}

/** The LMDB key of a record: 0x01 + UTF-8. */
function recordKey(key: string): Buffer {
  const n = Buffer.byteLength(key, 'utf8');
  const out = Buffer.allocUnsafe(1 + n);
  out[0] = RECORD_PREFIX;
  out.write(key, 1, 'utf8');
  return out;
}

// ---------------------------------------------------------------------------------------------
// Identity and meta record

function checkIdentity(identity: ClusterIdentity): void {
  const { memberId, members } = identity;
  const isId = (m: unknown) => Number.isInteger(m) && (m as number) >= 1 && (m as number) <= MAX_MEMBER_ID;
  if (!isId(memberId)) throw new RangeError(`member id must be an integer in 1..${MAX_MEMBER_ID}, got ${String(memberId)}`);
  if (!Array.isArray(members) || members.length === 0 || !members.every(isId)) {
    throw new RangeError(`members must be a non-empty list of member ids in 1..${MAX_MEMBER_ID}, got ${JSON.stringify(members)}`);
  }
  for (let i = 1; i < members.length; i++) {
    if (members[i]! <= members[i - 1]!) throw new RangeError(`members must be sorted ascending without duplicates, got [${members.join(',')}]`);
  }
  if (!members.includes(memberId)) throw new RangeError(`member ${memberId} is not in the members [${members.join(',')}]`);
}

function encodeMeta(identity: ClusterIdentity): Buffer {
  return packr.pack({ format: DATA_FORMAT, memberId: identity.memberId, members: [...identity.members], createdAt: new Date().toISOString() });
}

const clusterText = (members: readonly number[]) => `[${members.join(',')}]`;

/** Checks the meta record against `identity`; throws DataDirError when it is missing, foreign or different. */
function checkMeta(bytes: Buffer | undefined, dir: string, identity: ClusterIdentity): void {
  if (bytes === undefined) {
    throw new DataDirError(
      `data dir ${dir} holds an LMDB database that is not a PaxosKV store (no ${DATA_FORMAT} meta record): wrong --data-dir?`,
      dir,
    );
  }
  let meta: unknown;
  try {
    meta = unpackr.unpack(bytes);
  } catch (err) {
    throw new DataDirError(`data dir ${dir}: the meta record does not decode (${(err as Error).message}); the data file is corrupt`, dir, { cause: err });
  }
  const m = (meta !== null && typeof meta === 'object' && !Array.isArray(meta) ? meta : {}) as Record<string, unknown>;
  if (typeof m.format !== 'string' || !m.format.startsWith('svrkit-paxoskv/')) {
    throw new DataDirError(`data dir ${dir}: the meta record is not a ${DATA_FORMAT} meta record; the data file is foreign or corrupt`, dir);
  }
  if (m.format !== DATA_FORMAT) {
    throw new DataDirError(`data dir ${dir} is in format ${m.format}; this build reads only ${DATA_FORMAT}`, dir);
  }
  const memberId = m.memberId;
  const members = m.members;
  if (
    typeof memberId !== 'number' ||
    !Number.isInteger(memberId) ||
    !Array.isArray(members) ||
    !members.every((x): x is number => typeof x === 'number' && Number.isInteger(x))
  ) {
    throw new DataDirError(`data dir ${dir}: the meta record has no valid memberId/members; the data file is corrupt`, dir);
  }
  const sameMembers = members.length === identity.members.length && members.every((x, i) => x === identity.members[i]);
  if (memberId !== identity.memberId || !sameMembers) {
    const hint = memberId !== identity.memberId ? 'wrong --data-dir or --id?' : 'wrong --data-dir or member list? (membership changes are not supported)';
    throw new DataDirError(
      `data dir ${dir} belongs to member ${memberId} of cluster ${clusterText(members)}; ` +
        `this replica is member ${identity.memberId} of ${clusterText(identity.members)}: ${hint}`,
      dir,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Opening

/** Decides whether `dir` is fresh (missing or empty) or holds a store; throws for anything else. */
async function inspectDir(dir: string, absDir: string): Promise<'fresh' | 'existing'> {
  let entries: string[];
  try {
    entries = await fsp.readdir(absDir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return 'fresh';
    if (code === 'ENOTDIR') throw new DataDirError(`data dir ${dir} is not a directory`, dir, { cause: err });
    throw new DataDirError(`data dir ${dir} cannot be read: ${(err as Error).message}`, dir, { cause: err });
  }
  if (entries.includes(STAGING_DIR)) {
    // Left by a crash while creating a fresh store: it never held acknowledged data.
    await fsp.rm(path.join(absDir, STAGING_DIR), { recursive: true, force: true });
    entries = entries.filter((e) => e !== STAGING_DIR);
  }
  if (entries.includes(DATA_FILE)) return 'existing';
  const others = entries.filter((e) => !IGNORED_ENTRIES.has(e));
  if (others.length === 0) return 'fresh';
  if (others.includes(LOCK_FILE)) {
    throw new DataDirError(
      `data dir ${dir} has ${LOCK_FILE} but no ${DATA_FILE}: the data file is missing; restore it, or remove the dir to start this replica empty`,
      dir,
    );
  }
  const shown = others.slice(0, 5).join(', ') + (others.length > 5 ? `, ... (${others.length} entries)` : '');
  throw new DataDirError(`data dir ${dir} is not empty and holds no PaxosKV data (found: ${shown}): wrong --data-dir?`, dir);
}

/** Creates a store with its meta record in a staging dir and moves its data file into `absDir`. */
async function createFresh(dir: string, absDir: string, identity: ClusterIdentity): Promise<void> {
  const staging = path.join(absDir, STAGING_DIR);
  try {
    await fsp.mkdir(absDir, { recursive: true });
    await fsp.rm(staging, { recursive: true, force: true });
    await fsp.mkdir(staging);
    const db = openLmdb<Buffer, Buffer>({ path: staging, ...LMDB_OPTIONS });
    try {
      await db.put(META_KEY, encodeMeta(identity)); // durable: overlappingSync is off
    } finally {
      await db.close();
    }
    await fsp.rename(path.join(staging, DATA_FILE), path.join(absDir, DATA_FILE));
    await fsp.rm(staging, { recursive: true, force: true });
    await syncDir(absDir);
    await syncDir(path.dirname(absDir));
  } catch (err) {
    throw new DataDirError(`data dir ${dir} cannot be created: ${(err as Error).message}`, dir, { cause: err });
  }
}

/** fsyncs a directory so a rename or creation in it is durable (best effort where unsupported). */
async function syncDir(absDir: string): Promise<void> {
  let handle: fsp.FileHandle | undefined;
  try {
    handle = await fsp.open(absDir, 'r');
    await handle.sync();
  } catch {
    // Some platforms cannot open or fsync directories; the data file itself is synced.
  } finally {
    await handle?.close();
  }
}

/** What the probe child reports (one JSON line on stdout). */
type ProbeReport =
  | { ok: true; entries: number; size: number; pageSize: number; lastPageNumber: number }
  | { ok: false; kind: 'truncated'; size: number; pageSize: number; lastPageNumber: number }
  | { ok: false; kind: 'count'; entries: number; entryCount: number }
  | { ok: false; kind: 'error'; message: string; code?: unknown };

/**
 * The probe, run by `process.execPath -e` (CommonJS) with argv [lmdb entry path, dir]. It opens
 * the environment read-only, compares the file size with `(lastPageNumber + 1) * pageSize` before
 * touching any tree page, then reads every entry and one byte per 256 of every value (so every
 * branch, leaf and overflow page is faulted in), and compares the count with LMDB's. A SIGBUS or
 * SIGSEGV kills only this child.
 */
const PROBE_SCRIPT = `'use strict';
const fs = require('node:fs');
const path = require('node:path');
const [lmdbEntry, dir] = process.argv.slice(1);
const done = (report) => { process.stdout.write('\\n' + JSON.stringify(report) + '\\n'); process.exit(0); };
try {
  const { open } = require(lmdbEntry);
  const db = open({ path: dir, readOnly: true, ${Object.entries(LMDB_OPTIONS)
    .map(([k, v]) => `${k}: ${JSON.stringify(v)}`)
    .join(', ')} });
  const stats = db.getStats();
  const size = fs.statSync(path.join(dir, ${JSON.stringify(DATA_FILE)})).size;
  const pageSize = stats.pageSize, lastPageNumber = stats.lastPageNumber;
  if (!(pageSize > 0) || !(lastPageNumber >= 1) || size < (lastPageNumber + 1) * pageSize) done({ ok: false, kind: 'truncated', size, pageSize, lastPageNumber });
  let entries = 0, x = 0;
  for (const { key, value } of db.getRange({})) {
    entries++;
    x ^= key[0];
    for (let i = 0; i < value.length; i += 256) x ^= value[i];
  }
  if (entries !== stats.entryCount) done({ ok: false, kind: 'count', entries, entryCount: stats.entryCount });
  done({ ok: true, entries, size, pageSize, lastPageNumber, x });
} catch (err) {
  done({ ok: false, kind: 'error', message: String((err && err.message) || err), code: err && err.code });
}
`;

/** Validates an existing data file without touching its pages in this process. */
async function probeDataFile(dir: string, absDir: string): Promise<void> {
  const file = path.join(absDir, DATA_FILE);
  let size: number;
  try {
    const st = await fsp.stat(file);
    if (!st.isFile()) throw new DataDirError(`data dir ${dir}: ${DATA_FILE} is not a regular file`, dir);
    size = st.size;
  } catch (err) {
    if (err instanceof DataDirError) throw err;
    throw new DataDirError(`data dir ${dir}: ${DATA_FILE} cannot be read: ${(err as Error).message}`, dir, { cause: err });
  }
  // LMDB would initialize a zero-length file as a new, empty environment.
  if (size === 0) {
    throw new DataDirError(`data dir ${dir}: ${DATA_FILE} is empty (0 bytes); the data file was truncated: restore it, or remove the dir to start this replica empty`, dir);
  }
  const lmdbEntry = createRequire(import.meta.url).resolve('lmdb');
  const { code, signal, stdout, stderr } = await runProbe(lmdbEntry, absDir);
  const lastLine = stdout.trim().split('\n').pop() ?? '';
  let report: ProbeReport | undefined;
  try {
    report = JSON.parse(lastLine) as ProbeReport;
  } catch {
    report = undefined;
  }
  const detail = stderr.trim().slice(0, 300);
  if (report === undefined || code !== 0) {
    const how = signal !== null ? `was killed by ${signal}` : `exited with code ${String(code)}`;
    throw new DataDirError(
      `data dir ${dir}: ${DATA_FILE} (${size} bytes) is corrupt: a child process reading it ${how}${detail ? ` (${detail})` : ''}; restore the replica from its peers or a backup`,
      dir,
    );
  }
  if (report.ok) return;
  switch (report.kind) {
    case 'truncated':
      throw new DataDirError(
        `data dir ${dir}: ${DATA_FILE} is truncated: ${report.size} bytes, but LMDB's meta page uses pages 0..${report.lastPageNumber} of ${report.pageSize} bytes ` +
          `(${(report.lastPageNumber + 1) * report.pageSize} bytes); restore the replica from its peers or a backup`,
        dir,
      );
    case 'count':
      throw new DataDirError(
        `data dir ${dir}: ${DATA_FILE} is corrupt: LMDB counts ${report.entryCount} entries but ${report.entries} could be read`,
        dir,
      );
    case 'error':
      throw new DataDirError(`data dir ${dir}: ${DATA_FILE} is not a readable LMDB file: ${report.message}`, dir);
  }
}

function runProbe(lmdbEntry: string, absDir: string): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    delete env.NODE_OPTIONS; // no loaders or flags from the parent: the probe is plain CommonJS
    const child = spawn(process.execPath, ['-e', PROBE_SCRIPT, lmdbEntry, absDir], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr = (stderr + s).slice(-4096)));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** After the probe: re-checks the size, the meta record, and that every record decodes. @returns meta entry count. */
async function verifyOpened(db: RootDatabase<Buffer, Buffer>, dir: string, absDir: string, identity: ClusterIdentity): Promise<number> {
  const stats = db.getStats() as { pageSize: number; lastPageNumber: number };
  const size = (await fsp.stat(path.join(absDir, DATA_FILE))).size;
  if (size < (stats.lastPageNumber + 1) * stats.pageSize) {
    throw new DataDirError(`data dir ${dir}: ${DATA_FILE} is truncated (${size} bytes, LMDB uses ${(stats.lastPageNumber + 1) * stats.pageSize})`, dir);
  }
  checkMeta(db.getBinary(META_KEY), dir, identity);
  // Another live process with the environment open (a second replica started on this dir) has a
  // slot in LMDB's reader table; slots of dead processes (the probe child, a killed replica) are
  // cleared by readerCheck().
  db.readerCheck();
  const others = [...db.readerList().matchAll(/^\s*(\d+)\s+\S+\s+\S+\s*$/gm)].map((m) => Number(m[1])).filter((pid) => pid !== process.pid);
  if (others.length > 0) {
    throw new DataDirError(`data dir ${dir} is in use by process ${[...new Set(others)].join(', ')}: is another replica running with this --data-dir?`, dir);
  }
  for (const { key, value } of db.getRange({ start: RECORDS_START, end: RECORDS_END })) {
    try {
      decodeRecord(value);
    } catch (err) {
      const name = Buffer.from(key).toString('utf8', 1);
      throw new DataDirError(
        `data dir ${dir}: the record of key ${JSON.stringify(name)} does not decode (${(err as Error).message}); the data file is corrupt`,
        dir,
        { cause: err },
      );
    }
  }
  return db.getCount({ start: META_START, end: RECORDS_START });
}
