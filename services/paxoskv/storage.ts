/**
 * PaxosKV's persistence: one LMDB environment per replica holding every key's `KeyRecord`
 * ("PLog as DB": the record is the key's whole log), plus a meta record naming the cluster member
 * the data belongs to and the replica-wide state ({@link StoreMeta}: its confirmed incarnation, the
 * ones it announced since, the highest incarnation seen from each peer, whether the replica is
 * still rejoining after a data loss).
 *
 * Layout of a data dir:
 * - `data.mdb`, `lock.mdb`: the LMDB environment (lmdb-js). `lock.mdb` holds no data; LMDB
 *   recreates it when it is missing.
 * - LMDB keys are bytes: `0x00 "meta"` is the meta record (msgpack map
 *   `{ format: 'svrkit-paxoskv/3', memberId, members, createdAt, incarnation, announced, peerIncarnations,
 *   rejoining, configuration? }`, `createdAt` an ISO 8601 string, `configuration` the membership
 *   configuration adopted last (absent while it is the first), `peerIncarnations` an array of
 *   `[memberId, incarnation]` pairs ascending by member); `0x01 + UTF-8(key)` is the record of
 *   `key` (msgpack array, see {@link encodeRecord}). Both end with a 4-byte CRC-32 of what precedes
 *   it (zlib's, `node:zlib` `crc32`), checked on every read. Records are therefore ordered by the UTF-8
 *   bytes of their keys (= Unicode code point order), which is the order of {@link KeyStore.keysAfter}.
 *
 * Durability: {@link KeyStore.write} resolves only once its records (and meta patch) are
 * fsync'd. The environment is opened with `overlappingSync: false` (see {@link LMDB_OPTIONS} for
 * why and the lmdb-js lines that show it), so every LMDB commit syncs the data pages and then writes the meta page through
 * an O_DSYNC descriptor before the commit's promise resolves. Writes are group-committed: every
 * record and meta patch handed to `write()` during one event-loop turn, or while a commit is in
 * flight, goes into the next single LMDB transaction, and at most one transaction is in flight at
 * a time, so a later write is never durable before an earlier one.
 *
 * Corruption: LMDB does not checksum pages and reads the file through mmap, so a truncated
 * `data.mdb` raises SIGBUS when a page past EOF is touched and a garbage one can SIGSEGV inside
 * LMDB. {@link KeyStore.open} therefore first validates an existing `data.mdb` in a child process
 * (compares the file size with the last page LMDB's meta page reports, then reads every entry and
 * every page of every value) and opens it in-process only after that child came back healthy.
 * Every refusal is a {@link DataDirError}; a damaged dir is never opened as an empty store. The
 * only safe way to replace a damaged or lost dir is `svrkit kv serve --rejoin` on an EMPTY dir: the
 * replica then catches up from its peers as a non-voting learner until voting is safe again (a
 * replica started empty, or from an older copy, without it could vote against promises it made
 * before the loss). The messages say so and never suggest anything else.
 * Every record and the meta record carry a CRC-32 of their bytes, checked each time they are read
 * (and for every record when the store opens): a record with a changed byte, its value included, or
 * that does not decode, reads as `LOST_RECORD` (listed in {@link KeyStore.lostAtOpen} when found at
 * open), never as data, and the replica repairs that key from its peers; a damaged meta record is a
 * {@link DataDirError}. LMDB itself has no checksums, so what this
 * cannot see: damage to LMDB's own structures that still parses (a branch page pointing at another
 * record of the same shape, which then reads as a valid record under the wrong key) and damage
 * confined to LMDB's free-page list, which lmdb-js offers no way to read.
 */
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import { open as openLmdb, type RootDatabase, type RootDatabaseOptionsWithPath } from 'lmdb';
import { Packr, Unpackr } from 'msgpackr';
import type { RecordSource } from './core/replica.js';
import { configurationData, configurationFrom, validateConfiguration } from './core/membership.js';
import { LOST_RECORD, MAX_MEMBER_ID, type Configuration, type Entry, type KeyRecord, type MemberId, type MetaPatch, type Session, type SessionWrite } from './core/types.js';

/**
 * Name and version of the on-disk format, stored in the meta record. A dir in any other format
 * (e.g. `svrkit-paxoskv/1`) is refused; there is no migration.
 */
export const DATA_FORMAT = 'svrkit-paxoskv/3';

/** Longest key `write()` accepts, in UTF-8 bytes (LMDB's own limit is about 1978 bytes). */
export const MAX_KEY_BYTES = 1024;

/** The version tag of an encoded record (first element of its msgpack array). */
const RECORD_VERSION = 3;

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
const IGNORED_ENTRIES = new Set(['lost+found', 'owner.pid']);
/**
 * The file naming the process that has the data dir open (its pid, created with O_EXCL and removed
 * on close): a second replica started on the same dir is refused even before LMDB's reader table
 * shows the first one. A file naming a dead process (a SIGKILLed replica) is taken over.
 */
const OWNER_FILE = 'owner.pid';

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

/**
 * The advice every corruption or data-loss message ends with. Starting a replica empty, or from
 * an older copy of its data, is only safe through `--rejoin`: without it the replica could vote
 * against promises and accepts it made before the loss.
 */
const REJOIN_HINT =
  'move the damaged dir aside and restart this replica with --rejoin on an empty data dir ' +
  '(it catches up from its peers and does not vote until that is safe)';

/** The member a replica is and the cluster it belongs to, as stored in the data dir's meta record. */
export interface ClusterIdentity {
  /** This replica's member id, 1..65535. */
  memberId: MemberId;
  /** Every member id of the cluster, sorted ascending, without duplicates, including `memberId`. */
  members: MemberId[];
  /**
   * The members that only learn, sorted ascending, a subset of `members` (default none): which
   * members vote decides every majority, so a data dir refuses to open under another list.
   */
  learners?: MemberId[];
  /**
   * The fingerprint of the cluster a member joined (`svrkit kv serve --join`), when `members` are
   * not the cluster's first members (a joined member's `members` is itself alone). Default: the
   * fingerprint of `members` and `learners` (codec.ts's `clusterFingerprint`).
   */
  cluster?: string;
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

/** Options of {@link KeyStore.open}. */
export interface OpenOptions {
  /**
   * This replica lost its data and rejoins (`svrkit kv serve --rejoin`): the dir must be missing
   * or empty, and the fresh store's meta says `rejoining: true`. Default false.
   */
  rejoin?: boolean;
}

/**
 * The replica-wide state kept in the meta record (see {@link KeyStore.meta}).
 */
export interface StoreMeta {
  /** This replica's confirmed incarnation (its last start that peers confirmed): 0 for a new store. */
  readonly incarnation: number;
  /** Incarnations this replica announced since its confirmed one (starts whose check did not finish), ascending. */
  readonly announced: readonly number[];
  /** The highest incarnation seen from each peer (member id -> incarnation); peers never seen are absent. */
  readonly peerIncarnations: ReadonlyMap<MemberId, number>;
  /** The replica is still rejoining after a data loss: it must not vote yet. */
  readonly rejoining: boolean;
  /** The membership configuration the replica adopted last, when it is not the first (core/membership.ts). */
  readonly configuration?: Configuration;
}

/** The meta record's contents, as kept in memory (including patches not yet durable). */
interface MetaState {
  readonly memberId: MemberId;
  readonly members: readonly MemberId[];
  readonly learners: readonly MemberId[];
  readonly cluster?: string;
  readonly createdAt: string;
  incarnation: number;
  announced: number[];
  readonly peerIncarnations: Map<MemberId, number>;
  rejoining: boolean;
  configuration?: Configuration;
}

/** A batch of records waiting for (or in) one LMDB transaction, and the promise its writers hold. */
interface Batch {
  readonly records: Map<string, { record: KeyRecord; bytes: Uint8Array }>;
  /** The encoded meta record to write with the records (the state after the batch's last patch), or null. */
  meta: Buffer | null;
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
  return { records: new Map(), meta: null, done, resolve, reject };
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

  /** True when this open created the store (the dir was missing or empty). */
  readonly created: boolean;
  /**
   * Records that failed their checksum (or did not decode) when the store opened: the keys read as
   * `LOST_RECORD`, and the replica repairs them from its peers.
   */
  readonly lostAtOpen: readonly LostRecord[];
  /**
   * Reads that met a record failing its checksum (or not decoding), each read counted: those of
   * the check when the store opened (one per {@link lostAtOpen} entry), then every `get` since.
   */
  corruptReads: number;

  readonly #db: RootDatabase<Buffer, Buffer>;
  readonly #absDir: string;
  /** Meta-namespace entries, subtracted from LMDB's entry count. */
  readonly #metaEntries: number;
  /** The meta record's contents, with every patch handed to write() applied. */
  readonly #meta: MetaState;
  /** Records handed to write() since the last commit started. */
  #pending: Batch | null = null;
  /** Records of the commit in flight. */
  #inflight: Batch | null = null;
  #scheduled: ReturnType<typeof setImmediate> | null = null;
  #commits = 0;
  #failure: Error | null = null;
  #closing: Promise<void> | null = null;
  #closed = false;

  private constructor(
    db: RootDatabase<Buffer, Buffer>,
    dir: string,
    absDir: string,
    identity: ClusterIdentity,
    opened: { metaEntries: number; meta: MetaState; lost: LostRecord[] },
    created: boolean,
  ) {
    this.lostAtOpen = Object.freeze(opened.lost);
    this.corruptReads = opened.lost.length;
    this.#db = db;
    this.dir = dir;
    this.#absDir = absDir;
    this.identity = Object.freeze({
      memberId: identity.memberId,
      members: Object.freeze([...identity.members]) as MemberId[],
      ...(identity.cluster === undefined ? {} : { cluster: identity.cluster }),
    });
    this.#metaEntries = opened.metaEntries;
    this.#meta = opened.meta;
    this.created = created;
  }

  /**
   * Opens (creating when absent) the data dir for this member of this cluster.
   *
   * - A missing or empty dir (a `lost+found` entry is ignored) is created fresh: the LMDB file is
   *   built with its meta record (incarnation 0, no peer incarnations, `rejoining` =
   *   `options.rejoin`) in `<dir>/.paxoskv-init/`, synced, and renamed into place, so a crash
   *   during creation leaves an empty dir, never a `data.mdb` without a meta record.
   * - An existing `data.mdb` is validated in a child process first (`process.execPath` running a
   *   small script with lmdb-js: file size against LMDB's last page number, then a read of every
   *   entry and every page of every value), then opened here; its meta record must name
   *   `DATA_FORMAT` and `identity`, no other live process may have the environment open (LMDB's
   *   reader table), and every record must decode. The read is O(size of the data), once per
   *   open; a healthy open costs ~100 ms for the child process on top.
   *
   * @param dir - the data dir (relative to the cwd or absolute); used as given in messages.
   * @param identity - this replica's member id and the sorted member list.
   * @param options - `rejoin`: the replica lost its data and rejoins; the dir must be missing or
   *   empty (see {@link OpenOptions}).
   * @returns the open store; {@link KeyStore.created} says whether it was created by this call.
   * @throws RangeError when `identity` is malformed (not sorted, not containing `memberId`, ids
   *   outside 1..65535).
   * @throws DataDirError when the dir belongs to another member or member list, holds foreign
   *   files, holds a `lock.mdb` without `data.mdb`, is corrupt (zero-length, truncated or garbage
   *   `data.mdb`, missing, foreign or malformed meta record, a record that does not decode),
   *   cannot be read or created, or is open in this or another live process; and when
   *   `options.rejoin` is set but the dir already holds a store (its identity and format are
   *   checked first, the records are not read).
   */
  static async open(dir: string, identity: ClusterIdentity, options: OpenOptions = {}): Promise<KeyStore> {
    checkIdentity(identity);
    const rejoin = options.rejoin === true;
    const absDir = path.resolve(dir);
    if (openDirs.has(absDir)) throw new DataDirError(`data dir ${dir} is already open in this process`, dir);
    openDirs.add(absDir);
    let owner = false;
    try {
      let state = await inspectDir(dir, absDir);
      await claimOwner(dir, absDir);
      owner = true;
      // Another process may have created the store between the look and the claim.
      if (state === 'fresh') state = await inspectDir(dir, absDir);
      if (state === 'fresh') await createFresh(dir, absDir, identity, rejoin);
      else await probeDataFile(dir, absDir);
      let db: RootDatabase<Buffer, Buffer>;
      try {
        db = openLmdb<Buffer, Buffer>({ path: absDir, ...LMDB_OPTIONS });
      } catch (err) {
        throw new DataDirError(`data dir ${dir}: LMDB cannot open ${DATA_FILE}: ${(err as Error).message}`, dir, { cause: err });
      }
      try {
        const opened = await verifyOpened(db, dir, absDir, identity, rejoin && state === 'existing');
        return new KeyStore(db, dir, absDir, identity, opened, state === 'fresh');
      } catch (err) {
        await db.close().catch(() => undefined);
        throw err;
      }
    } catch (err) {
      if (owner) await releaseOwner(absDir);
      openDirs.delete(absDir);
      throw err;
    }
  }

  /**
   * The latest record of a key: records handed to write() and not yet durable first (the most
   * recent write wins), then LMDB. Synchronous; an LMDB read is a B-tree lookup in the mmap plus a
   * msgpack decode.
   * @param key - the key.
   * @returns the record; `LOST_RECORD` (by identity) when the stored record fails its checksum or
   *   does not decode (the replica then repairs the key from its peers); undefined for a key never
   *   written (and for keys `write()` would reject: longer than MAX_KEY_BYTES or not well-formed UTF-16).
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
    } catch {
      this.corruptReads++;
      return LOST_RECORD;
    }
  }

  /**
   * The replica-wide state of the meta record, including patches handed to `write()` and not yet
   * durable. A snapshot: later writes do not change the returned object.
   * @returns the incarnation, a copy of the peer incarnations and the rejoining flag.
   * @throws Error when the store is closed.
   */
  meta(): StoreMeta {
    if (this.#closed) throw new Error(`KeyStore ${this.dir} is closed`);
    const m = this.#meta;
    return {
      incarnation: m.incarnation,
      announced: [...m.announced],
      peerIncarnations: new Map(m.peerIncarnations),
      rejoining: m.rejoining,
      ...(m.configuration === undefined ? {} : { configuration: m.configuration }),
    };
  }

  /**
   * Makes records, and a patch of the meta record, durable. Group commit: every record and patch
   * handed over during this event-loop turn, or while a commit is in flight, goes into the next
   * single LMDB transaction (started from `setImmediate`, after the current commit finished), so
   * a patch is durable together with the records of its call, never before an earlier call's.
   * The records are visible to `get()`/`keysAfter()` and the patch to `meta()` at once.
   *
   * @param records - key -> record; the map and the records are not modified, and must not be
   *   modified afterwards (the records are kept by reference until durable).
   * @param meta - fields to change in the meta record (absent fields are unchanged):
   *   `incarnation` replaces the stored one, `announced` the stored list; `peerIncarnations` is merged per member, keeping the
   *   larger incarnation; `rejoining` replaces the flag. Incarnations are non-negative safe
   *   integers, member ids 1..65535. When given, the write commits even with no records.
   * @returns a promise that resolves once these records and this patch, and those of every
   *   earlier `write()`, are committed and fsync'd (an empty map without a patch resolves with
   *   the earlier writes). Writes resolve in call order.
   * @throws (rejects) RangeError, adding none of the records and not applying the patch, when a
   *   key is longer than MAX_KEY_BYTES UTF-8 bytes or is not well-formed UTF-16 (a lone
   *   surrogate), a record cannot be encoded (a field of the wrong type or out of range: the
   *   checks {@link decodeRecord} makes), or the patch is malformed; Error when the store is
   *   closing or closed, or when an earlier commit failed (the store then refuses every later
   *   write, since they could no longer be ordered after the lost one; the replica must restart).
   */
  write(records: ReadonlyMap<string, KeyRecord>, meta?: MetaPatch): Promise<void> {
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
    if (meta !== undefined) {
      const problem = metaPatchProblem(meta);
      if (problem !== undefined) return Promise.reject(new RangeError(`cannot apply the meta patch: ${problem}`));
    }
    if (encoded.length === 0 && meta === undefined) return this.#pending?.done ?? this.#inflight?.done ?? Promise.resolve();
    const batch = (this.#pending ??= newBatch());
    for (const [key, value] of encoded) batch.records.set(key, value);
    if (meta !== undefined) {
      const m = this.#meta;
      if (meta.incarnation !== undefined) m.incarnation = meta.incarnation;
      if (meta.announced !== undefined) m.announced = [...meta.announced];
      if (meta.rejoining !== undefined) m.rejoining = meta.rejoining;
      if (meta.configuration !== undefined && meta.configuration.epoch > (m.configuration?.epoch ?? 1)) m.configuration = meta.configuration;
      for (const [member, incarnation] of meta.peerIncarnations ?? []) {
        if (incarnation > (m.peerIncarnations.get(member) ?? -1)) m.peerIncarnations.set(member, incarnation);
      }
      // The state after this patch includes every earlier one: writing it with this batch keeps
      // the meta record in step with the records.
      batch.meta = encodeMeta(m);
    }
    this.#schedule();
    return batch.done;
  }

  /**
   * Lists keys for a rejoining peer, in the store's key order: ascending by the UTF-8 bytes of
   * the key (= Unicode code point order; it differs from JavaScript's `<` (UTF-16 code units)
   * only for keys with characters U+E000..U+FFFF vs. ones above U+FFFF). Includes keys handed to
   * `write()` and not yet durable. To page, pass the last key returned as `after`; an empty
   * result means no key follows.
   * @param after - list keys strictly after this one; `null` lists from the first key (the empty
   *   key `''` is the first possible key, so `after = ''` skips only it). A string longer than
   *   MAX_KEY_BYTES UTF-8 bytes is allowed (no stored key equals it).
   * @param limit - the most keys to return: a non-negative safe integer.
   * @returns at most `limit` keys, ascending, each once. O(limit) LMDB reads plus a sort of the
   *   keys not yet durable.
   * @throws RangeError when `after` is not well-formed UTF-16 (a lone surrogate: it has no UTF-8
   *   position) or `limit` is not a non-negative safe integer; Error when the store is closed.
   */
  keysAfter(after: string | null, limit: number): string[] {
    if (this.#closed) throw new Error(`KeyStore ${this.dir} is closed`);
    if (!isCount(limit)) throw new RangeError(`limit must be a non-negative safe integer, got ${String(limit)}`);
    if (after !== null && (typeof after !== 'string' || !isWellFormed(after))) {
      throw new RangeError(`after must be a well-formed string (no lone surrogate), got ${JSON.stringify(String(after).slice(0, 64))}`);
    }
    if (limit === 0) return [];
    // No stored key is longer than 1 + MAX_KEY_BYTES bytes, so a longer `after` may be cut there:
    // a stored key is after the whole string exactly when it is after the cut.
    const start = after === null ? RECORDS_START : recordKey(after).subarray(0, 1 + MAX_KEY_BYTES);
    const isAfter = (lmdbKey: Buffer) => (after === null ? true : Buffer.compare(lmdbKey, start) > 0);
    const durable: Buffer[] = [];
    for (const raw of this.#db.getKeys({ start, end: RECORDS_END, limit: limit + 1 })) {
      const k = Buffer.from(raw as Uint8Array);
      if (isAfter(k)) durable.push(k);
    }
    const unsaved: Buffer[] = [];
    for (const key of this.#unsavedKeys()) {
      const k = recordKey(key);
      if (isAfter(k)) unsaved.push(k);
    }
    unsaved.sort(Buffer.compare);
    const out: string[] = [];
    let i = 0;
    let j = 0;
    while (out.length < limit && (i < durable.length || j < unsaved.length)) {
      const a = durable[i];
      const b = unsaved[j];
      const c = a === undefined ? 1 : b === undefined ? -1 : Buffer.compare(a, b);
      const next = c <= 0 ? a! : b!;
      if (c <= 0) i++;
      if (c >= 0) j++;
      out.push(next.toString('utf8', 1));
    }
    return out;
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
    for (const key of this.#unsavedKeys()) if (!this.#db.doesExist(recordKey(key))) count++;
    return count;
  }

  /** Keys handed to write() whose commit has not finished (in flight or pending), each once. */
  *#unsavedKeys(): Generator<string> {
    const seen = new Set<string>();
    for (const batch of [this.#inflight, this.#pending]) {
      if (batch === null) continue;
      for (const key of batch.records.keys()) {
        if (seen.has(key)) continue;
        seen.add(key);
        yield key;
      }
    }
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
   * Closes the store: waits until every record and patch handed to `write()` is durable (or its
   * commit failed), then closes LMDB. Later `write()` calls reject; `get()`, `keys()`,
   * `keysAfter()`, `meta()` and `keyCount` throw. Idempotent.
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
        await releaseOwner(this.#absDir);
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
        if (batch.meta !== null) void this.#db.put(META_KEY, batch.meta);
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
    const what = `${batch.records.size} record(s)${batch.meta !== null ? ' and the meta record' : ''}`;
    const failure = new Error(`KeyStore ${this.dir}: commit of ${what} failed: ${(err as Error)?.message ?? String(err)}`, {
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
 * `[2, chosen, promised, accepted, acceptedEntry, fence]`, each entry `nil` or
 * `[index, value, writerClient, writerSeq, proposer, time, sessions]`:
 * - `value`: a msgpack bin, or nil for a delete;
 * - `writerClient`, `writerSeq`: the entry's `writer` (session id string, seq), both nil when it
 *   has none;
 * - `time`: the key's log time (ms, client clocks);
 * - `sessions`: one flat array, each session as `client, floor, expiresAt, nWrites` followed by
 *   `nWrites` pairs `seq, version`, sessions one after another
 *   (`[client, floor, expiresAt, 2, seq1, ver1, seq2, ver2, client, ...]`).
 *
 * Ballots are integers up to 2^53 (msgpackr writes those above 2^32 as float64, exactly). The
 * record is checked as {@link decodeRecord} checks it, so a record that encodes always decodes.
 * @param record - the record.
 * @returns the encoded bytes.
 * @throws Error naming the field when the record would not decode: a ballot, `fence`, index,
 *   `time`, `floor`, `expiresAt`, `seq` or `version` that is not a non-negative safe integer (an
 *   index below 1), a proposer outside 0..65535, a value that is neither a Uint8Array nor null,
 *   a writer or session client that is not a string.
 */
export function encodeRecord(record: KeyRecord): Uint8Array {
  if (!isCount(record.promised)) throw new Error('promised is not a ballot');
  if (!isCount(record.accepted)) throw new Error('accepted is not a ballot');
  if (!isCount(record.fence)) throw new Error('fence is not a non-negative integer');
  return seal(
    packr.pack([
      RECORD_VERSION,
      encodeEntry(record.chosen, 'chosen'),
      record.promised,
      record.accepted,
      encodeEntry(record.acceptedEntry, 'acceptedEntry'),
      record.fence,
    ]),
  );
}

/**
 * The CRC-32 of a chosen entry as the store encodes it: equal on every replica that holds the same
 * entry (`svrkit kv verify` compares them).
 * @param entry - the chosen entry, or null.
 * @returns the checksum (0 for null).
 */
export function entryChecksum(entry: Entry | null): number {
  return entry === null ? 0 : crc32(packr.pack(encodeEntry(entry, 'chosen')));
}

/** Bytes of the checksum every stored record and the meta record end with. */
export const CHECKSUM_BYTES = 4;

/**
 * Appends the CRC-32 (ISO-HDLC, zlib's: `zlib.crc32`) of `payload`, big-endian, so that a
 * changed byte anywhere in a stored record, value included, is caught when it is read.
 * @param payload - the encoded record.
 * @returns payload followed by its 4-byte checksum.
 */
function seal(payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(payload.length + CHECKSUM_BYTES);
  payload.copy(out, 0);
  out.writeUInt32BE(crc32(payload), payload.length);
  return out;
}

/**
 * Checks and strips the checksum `seal` appended.
 * @param bytes - a sealed record.
 * @returns the payload (a view of `bytes`).
 * @throws Error "checksum mismatch" when the bytes are not what was written (or too short to hold a checksum).
 */
function unseal(bytes: Uint8Array): Uint8Array {
  if (bytes.length < CHECKSUM_BYTES + 1) throw new Error(`checksum mismatch: ${bytes.length} bytes are too few to hold a record and its checksum`);
  const end = bytes.length - CHECKSUM_BYTES;
  const payload = bytes.subarray(0, end);
  const stored = ((bytes[end]! << 24) | (bytes[end + 1]! << 16) | (bytes[end + 2]! << 8) | bytes[end + 3]!) >>> 0;
  const computed = crc32(payload);
  if (stored !== computed) {
    throw new Error(`checksum mismatch: stored CRC-32 ${stored.toString(16).padStart(8, '0')}, computed ${computed.toString(16).padStart(8, '0')} over ${end} bytes`);
  }
  return payload;
}

function encodeEntry(entry: Entry | null, field: string): unknown[] | null {
  if (entry === null) return null;
  if (typeof entry !== 'object') throw new Error(`${field} is not an entry`);
  if (!isCount(entry.index) || entry.index < 1) throw new Error(`${field}.index is not a positive integer`);
  if (entry.value !== null && !(entry.value instanceof Uint8Array)) throw new Error(`${field}.value is neither bytes nor null`);
  const writer = entry.writer;
  if (writer !== null && (typeof writer !== 'object' || typeof writer.client !== 'string' || !isCount(writer.seq))) {
    throw new Error(`${field}.writer is neither null nor a (client string, seq) pair`);
  }
  if (!isCount(entry.proposer) || entry.proposer > MAX_MEMBER_ID) throw new Error(`${field}.proposer is not a member id`);
  if (!isCount(entry.time)) throw new Error(`${field}.time is not a non-negative integer (ms)`);
  if (!Array.isArray(entry.sessions)) throw new Error(`${field}.sessions is not a list`);
  const sessions: Array<string | number> = [];
  entry.sessions.forEach((s: Session, i: number) => {
    const at = `${field}.sessions[${i}]`;
    if (s === null || typeof s !== 'object' || typeof s.client !== 'string') throw new Error(`${at}.client is not a string`);
    if (!isCount(s.floor)) throw new Error(`${at}.floor is not a non-negative integer`);
    if (!isCount(s.expiresAt)) throw new Error(`${at}.expiresAt is not a non-negative integer (ms)`);
    if (!Array.isArray(s.writes)) throw new Error(`${at}.writes is not a list`);
    sessions.push(s.client, s.floor, s.expiresAt, s.writes.length);
    s.writes.forEach((w: SessionWrite, j: number) => {
      if (w === null || typeof w !== 'object' || !isCount(w.seq) || !isCount(w.version)) {
        throw new Error(`${at}.writes[${j}] is not a (seq, version) pair of non-negative integers`);
      }
      sessions.push(w.seq, w.version);
    });
  });
  return [entry.index, entry.value, writer?.client ?? null, writer?.seq ?? null, entry.proposer, entry.time, sessions];
}

/**
 * Decodes and validates a record written by {@link encodeRecord}. Values come back as plain
 * `Uint8Array`s (views of `bytes`' memory).
 * @param bytes - the encoded record.
 * @returns the record.
 * @throws Error naming the field when the bytes are not valid msgpack or not a record of this
 *   version: wrong shape or field count, wrong field type, integers out of range (ballots,
 *   `fence`, `time`, `floor`, `expiresAt`, `seq`, `version` must be non-negative safe integers,
 *   an index at least 1, a proposer 0..65535), a writer with only one of client and seq, a
 *   sessions array that does not split into sessions exactly.
 */
export function decodeRecord(bytes: Uint8Array): KeyRecord {
  const payload = unseal(bytes);
  let raw: unknown;
  try {
    raw = unpackr.unpack(payload);
  } catch (err) {
    throw new Error(`not valid msgpack: ${(err as Error).message}`);
  }
  if (!Array.isArray(raw)) throw new Error('not a msgpack array');
  if (raw[0] !== RECORD_VERSION) throw new Error(`unknown record version ${JSON.stringify(raw[0])}`);
  if (raw.length !== 6) throw new Error(`expected 6 fields, got ${raw.length}`);
  const promised = raw[2] as unknown;
  const accepted = raw[3] as unknown;
  const fence = raw[5] as unknown;
  if (!isCount(promised)) throw new Error('promised is not a ballot');
  if (!isCount(accepted)) throw new Error('accepted is not a ballot');
  if (!isCount(fence)) throw new Error('fence is not a non-negative integer');
  return { chosen: decodeEntry(raw[1], 'chosen'), promised, accepted, acceptedEntry: decodeEntry(raw[4], 'acceptedEntry'), fence };
}

function decodeEntry(raw: unknown, field: string): Entry | null {
  if (raw === null) return null;
  if (!Array.isArray(raw) || raw.length !== 7) throw new Error(`${field} is not an entry (an array of 7 fields)`);
  const [index, value, writerClient, writerSeq, proposer, time, sessionsRaw] = raw as unknown[];
  if (!isCount(index) || index < 1) throw new Error(`${field}.index is not a positive integer`);
  if (value !== null && !(value instanceof Uint8Array)) throw new Error(`${field}.value is neither bytes nor nil`);
  let writer: Entry['writer'] = null;
  if (writerClient !== null || writerSeq !== null) {
    if (typeof writerClient !== 'string') throw new Error(`${field}.writer.client is not a string`);
    if (!isCount(writerSeq)) throw new Error(`${field}.writer.seq is not a non-negative integer`);
    writer = { client: writerClient, seq: writerSeq };
  }
  if (!isCount(proposer) || proposer > MAX_MEMBER_ID) throw new Error(`${field}.proposer is not a member id`);
  if (!isCount(time)) throw new Error(`${field}.time is not a non-negative integer (ms)`);
  if (!Array.isArray(sessionsRaw)) throw new Error(`${field}.sessions is not an array`);
  const sessions: Session[] = [];
  const flat = sessionsRaw as unknown[];
  let i = 0;
  while (i < flat.length) {
    const at = `${field}.sessions[${sessions.length}]`;
    if (i + 4 > flat.length) throw new Error(`${at} is cut short (${flat.length - i} of the 4 header fields client, floor, expiresAt, nWrites)`);
    const client = flat[i];
    const floor = flat[i + 1];
    const expiresAt = flat[i + 2];
    const nWrites = flat[i + 3];
    if (typeof client !== 'string') throw new Error(`${at}.client is not a string`);
    if (!isCount(floor)) throw new Error(`${at}.floor is not a non-negative integer`);
    if (!isCount(expiresAt)) throw new Error(`${at}.expiresAt is not a non-negative integer (ms)`);
    if (!isCount(nWrites)) throw new Error(`${at}: the write count is not a non-negative integer`);
    i += 4;
    if (i + 2 * nWrites > flat.length) throw new Error(`${at} announces ${nWrites} writes but only ${Math.floor((flat.length - i) / 2)} follow`);
    const writes: SessionWrite[] = [];
    for (let j = 0; j < nWrites; j++, i += 2) {
      const seq = flat[i];
      const version = flat[i + 1];
      if (!isCount(seq) || !isCount(version)) throw new Error(`${at}.writes[${j}] is not a (seq, version) pair of non-negative integers`);
      writes.push({ seq, version });
    }
    sessions.push({ client, floor, expiresAt, writes });
  }
  return {
    index,
    value: value === null ? null : new Uint8Array(value.buffer, value.byteOffset, value.byteLength),
    writer,
    proposer,
    time,
    sessions,
  };
}

/** A stored record that failed its checksum (or did not decode) when the store opened. */
export interface LostRecord {
  /** The key. */
  readonly key: string;
  /** What was wrong (e.g. `checksum mismatch: stored CRC-32 ..., computed ...`). */
  readonly reason: string;
}

/** A non-negative safe integer. */
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
  const isId = isMemberId;
  if (!isId(memberId)) throw new RangeError(`member id must be an integer in 1..${MAX_MEMBER_ID}, got ${String(memberId)}`);
  if (!Array.isArray(members) || members.length === 0 || !members.every(isId)) {
    throw new RangeError(`members must be a non-empty list of member ids in 1..${MAX_MEMBER_ID}, got ${JSON.stringify(members)}`);
  }
  for (let i = 1; i < members.length; i++) {
    if (members[i]! <= members[i - 1]!) throw new RangeError(`members must be sorted ascending without duplicates, got [${members.join(',')}]`);
  }
  if (!members.includes(memberId)) throw new RangeError(`member ${memberId} is not in the members [${members.join(',')}]`);
  const learners = identity.learners ?? [];
  for (let i = 0; i < learners.length; i++) {
    if (!members.includes(learners[i]!)) throw new RangeError(`learner ${String(learners[i])} is not in the members [${members.join(',')}]`);
    if (i > 0 && learners[i]! <= learners[i - 1]!) throw new RangeError(`learners must be sorted ascending without duplicates, got [${learners.join(',')}]`);
  }
}

/** The meta record of a store created now. */
function freshMeta(identity: ClusterIdentity, rejoining: boolean): MetaState {
  return {
    memberId: identity.memberId,
    members: [...identity.members],
    learners: [...(identity.learners ?? [])],
    ...(identity.cluster === undefined ? {} : { cluster: identity.cluster }),
    createdAt: new Date().toISOString(),
    incarnation: 0,
    announced: [],
    peerIncarnations: new Map(),
    rejoining,
  };
}

/** Encodes the meta record (see the module comment for its shape). */
function encodeMeta(meta: MetaState): Buffer {
  return seal(packr.pack({
    format: DATA_FORMAT,
    memberId: meta.memberId,
    members: [...meta.members],
    learners: [...meta.learners],
    ...(meta.cluster === undefined ? {} : { cluster: meta.cluster }),
    createdAt: meta.createdAt,
    incarnation: meta.incarnation,
    announced: [...meta.announced],
    peerIncarnations: [...meta.peerIncarnations].sort((a, b) => a[0] - b[0]),
    rejoining: meta.rejoining,
    ...(meta.configuration === undefined ? {} : { configuration: configurationData(meta.configuration) }),
  }));
}

const isMemberId = (m: unknown): m is number => Number.isInteger(m) && (m as number) >= 1 && (m as number) <= MAX_MEMBER_ID;

/** Why a meta patch cannot be applied, or undefined when it can. */
function metaPatchProblem(patch: MetaPatch): string | undefined {
  if (patch === null || typeof patch !== 'object') return 'not an object';
  if (patch.incarnation !== undefined && !isCount(patch.incarnation)) {
    return `incarnation must be a non-negative safe integer, got ${String(patch.incarnation)}`;
  }
  if (patch.announced !== undefined && (!Array.isArray(patch.announced) || !patch.announced.every(isCount))) {
    return `announced must be a list of non-negative safe integers, got ${String(patch.announced)}`;
  }
  if (patch.rejoining !== undefined && typeof patch.rejoining !== 'boolean') return `rejoining must be a boolean, got ${String(patch.rejoining)}`;
  if (patch.configuration !== undefined) {
    try {
      validateConfiguration(patch.configuration);
    } catch (err) {
      return `configuration: ${(err as Error).message}`;
    }
  }
  if (patch.peerIncarnations !== undefined) {
    if (!(patch.peerIncarnations instanceof Map)) return 'peerIncarnations must be a Map';
    for (const [member, incarnation] of patch.peerIncarnations) {
      if (!isMemberId(member)) return `peerIncarnations: member id must be an integer in 1..${MAX_MEMBER_ID}, got ${String(member)}`;
      if (!isCount(incarnation)) return `peerIncarnations: incarnation of member ${member} must be a non-negative safe integer, got ${String(incarnation)}`;
    }
  }
  return undefined;
}

const clusterText = (members: readonly number[]) => `[${members.join(',')}]`;

/** The format an unsealed meta record of another (older or newer) store names, if the bytes are one. */
function otherFormat(bytes: Buffer): string | undefined {
  try {
    const m = unpackr.unpack(bytes) as { format?: unknown } | null;
    return m !== null && typeof m === 'object' && typeof m.format === 'string' && m.format.startsWith('svrkit-paxoskv/') && m.format !== DATA_FORMAT ? m.format : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Checks the meta record against `identity` and decodes it.
 * @throws DataDirError when it is missing, foreign, in another format, malformed or different.
 */
function checkMeta(bytes: Buffer | undefined, dir: string, identity: ClusterIdentity): MetaState {
  if (bytes === undefined) {
    throw new DataDirError(
      `data dir ${dir} holds an LMDB database that is not a PaxosKV store (no ${DATA_FORMAT} meta record): wrong --data-dir?`,
      dir,
    );
  }
  let meta: unknown;
  try {
    meta = unpackr.unpack(unseal(bytes));
  } catch (err) {
    // A store of another format has no checksum this build knows: say which format it is.
    const older = otherFormat(bytes);
    if (older !== undefined) throw new DataDirError(`data dir ${dir} is in format ${older}; this build reads only ${DATA_FORMAT}`, dir);
    throw new DataDirError(`data dir ${dir}: the meta record does not decode (${(err as Error).message}); the data file is corrupt: ${REJOIN_HINT}`, dir, {
      cause: err,
    });
  }
  const m = (meta !== null && typeof meta === 'object' && !Array.isArray(meta) ? meta : {}) as Record<string, unknown>;
  if (typeof m.format !== 'string' || !m.format.startsWith('svrkit-paxoskv/')) {
    throw new DataDirError(
      `data dir ${dir}: the meta record is not a ${DATA_FORMAT} meta record; the data file is foreign or corrupt: wrong --data-dir? If it is this replica's, ${REJOIN_HINT}`,
      dir,
    );
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
    throw new DataDirError(`data dir ${dir}: the meta record has no valid memberId/members; the data file is corrupt: ${REJOIN_HINT}`, dir);
  }
  const sameMembers = members.length === identity.members.length && members.every((x, i) => x === identity.members[i]);
  if (memberId !== identity.memberId || !sameMembers) {
    const hint =
      memberId !== identity.memberId
        ? 'wrong --data-dir or --id?'
        : m.cluster !== undefined
          ? 'it joined a running cluster: restart it with --join'
          : 'wrong --data-dir or --peers? (keep the first member list: changes of members are made with svrkit kv member, not by restarting with another list)';
    throw new DataDirError(
      `data dir ${dir} belongs to member ${memberId} of cluster ${clusterText(members)}; ` +
        `this replica is member ${identity.memberId} of ${clusterText(identity.members)}: ${hint}`,
      dir,
    );
  }
  const storedLearners = m.learners;
  if (!Array.isArray(storedLearners) || !storedLearners.every(isMemberId)) {
    throw new DataDirError(`data dir ${dir}: the meta record has no valid learners list; the data file is corrupt: ${REJOIN_HINT}`, dir);
  }
  const wanted = identity.learners ?? [];
  if (storedLearners.length !== wanted.length || !storedLearners.every((x, i) => x === wanted[i])) {
    throw new DataDirError(
      `data dir ${dir} belongs to a cluster whose learners are [${storedLearners.join(',')}]; this replica was started with ` +
        `--learners [${wanted.join(',')}]: which members vote decides every majority, so it cannot change on a restart ` +
        `(keep the first --learners; change members with svrkit kv member)`,
      dir,
    );
  }
  if (m.cluster !== identity.cluster) {
    throw new DataDirError(
      m.cluster === undefined
        ? `data dir ${dir} belongs to a founding member of its cluster; this replica was started to join one (--join): wrong --data-dir?`
        : `data dir ${dir} belongs to member ${memberId} of cluster ${String(m.cluster)}; this replica was started for cluster ${identity.cluster ?? clusterText(identity.members)}: wrong --data-dir or --join?`,
      dir,
    );
  }
  const { incarnation, announced, peerIncarnations, rejoining, createdAt, configuration } = m;
  let adopted: Configuration | undefined;
  if (configuration !== undefined) {
    try {
      adopted = configurationFrom(configuration);
    } catch (err) {
      throw new DataDirError(`data dir ${dir}: the meta record's configuration is malformed (${(err as Error).message}); the data file is corrupt: ${REJOIN_HINT}`, dir);
    }
  }
  const peers = new Map<MemberId, number>();
  const pairsOk =
    Array.isArray(peerIncarnations) &&
    peerIncarnations.every((p: unknown) => {
      if (!Array.isArray(p) || p.length !== 2 || !isMemberId(p[0]) || !isCount(p[1]) || peers.has(p[0])) return false;
      peers.set(p[0], p[1]);
      return true;
    });
  const bad = !isCount(incarnation)
    ? 'incarnation is not a non-negative integer'
    : !Array.isArray(announced) || !announced.every(isCount)
      ? 'announced is not a list of non-negative integers'
    : !pairsOk
      ? 'peerIncarnations is not a list of distinct (member id, incarnation) pairs'
      : typeof rejoining !== 'boolean'
        ? 'rejoining is not a boolean'
        : typeof createdAt !== 'string'
          ? 'createdAt is not a string'
          : undefined;
  if (bad !== undefined) throw new DataDirError(`data dir ${dir}: the meta record is malformed (${bad}); the data file is corrupt: ${REJOIN_HINT}`, dir);
  return {
    memberId,
    members,
    learners: [...(storedLearners as number[])],
    ...(typeof m.cluster === 'string' ? { cluster: m.cluster } : {}),
    createdAt: createdAt as string,
    incarnation: incarnation as number,
    announced: [...(announced as number[])],
    peerIncarnations: peers,
    rejoining: rejoining as boolean,
    ...(adopted === undefined ? {} : { configuration: adopted }),
  };
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
      `data dir ${dir} has ${LOCK_FILE} but no ${DATA_FILE}: the data file is missing: wrong --data-dir? If the data is lost, ${REJOIN_HINT}`,
      dir,
    );
  }
  const shown = others.slice(0, 5).join(', ') + (others.length > 5 ? `, ... (${others.length} entries)` : '');
  throw new DataDirError(`data dir ${dir} is not empty and holds no PaxosKV data (found: ${shown}): wrong --data-dir?`, dir);
}

/**
 * Makes this process the data dir's owner: creates `owner.pid` exclusively (creating the dir when
 * missing); a file left by a process that no longer runs is replaced.
 * @throws DataDirError when a live process owns the dir, or the file cannot be written.
 */
async function claimOwner(dir: string, absDir: string): Promise<void> {
  const file = path.join(absDir, OWNER_FILE);
  try {
    await fsp.mkdir(absDir, { recursive: true });
  } catch (err) {
    throw new DataDirError(`data dir ${dir} cannot be created: ${(err as Error).message}`, dir, { cause: err });
  }
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await fsp.writeFile(file, `${process.pid}\n`, { flag: 'wx' });
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new DataDirError(`data dir ${dir}: cannot write ${OWNER_FILE}: ${(err as Error).message}`, dir, { cause: err });
      }
    }
    const pid = Number((await fsp.readFile(file, 'utf8').catch(() => '')).trim());
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && processAlive(pid)) {
      throw new DataDirError(`data dir ${dir} is in use by process ${pid}: is another replica running with this --data-dir?`, dir);
    }
    await fsp.rm(file, { force: true }); // left by a process that is gone
  }
  throw new DataDirError(`data dir ${dir}: could not take ${OWNER_FILE} (another process keeps creating it)`, dir);
}

/** Removes `owner.pid` when it names this process. */
async function releaseOwner(absDir: string): Promise<void> {
  const file = path.join(absDir, OWNER_FILE);
  const pid = Number((await fsp.readFile(file, 'utf8').catch(() => '')).trim());
  if (pid === process.pid) await fsp.rm(file, { force: true }).catch(() => undefined);
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Creates a store with its meta record in a staging dir and moves its data file into `absDir`. */
async function createFresh(dir: string, absDir: string, identity: ClusterIdentity, rejoining: boolean): Promise<void> {
  const staging = path.join(absDir, STAGING_DIR);
  try {
    await fsp.mkdir(absDir, { recursive: true });
    await fsp.rm(staging, { recursive: true, force: true });
    await fsp.mkdir(staging);
    const db = openLmdb<Buffer, Buffer>({ path: staging, ...LMDB_OPTIONS });
    try {
      await db.put(META_KEY, encodeMeta(freshMeta(identity, rejoining))); // durable: overlappingSync is off
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
    throw new DataDirError(`data dir ${dir}: ${DATA_FILE} is empty (0 bytes); the data file was truncated: ${REJOIN_HINT}`, dir);
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
      `data dir ${dir}: ${DATA_FILE} (${size} bytes) is corrupt: a child process reading it ${how}${detail ? ` (${detail})` : ''}; ${REJOIN_HINT}`,
      dir,
    );
  }
  if (report.ok) return;
  switch (report.kind) {
    case 'truncated':
      throw new DataDirError(
        `data dir ${dir}: ${DATA_FILE} is truncated: ${report.size} bytes, but LMDB's meta page uses pages 0..${report.lastPageNumber} of ${report.pageSize} bytes ` +
          `(${(report.lastPageNumber + 1) * report.pageSize} bytes); ${REJOIN_HINT}`,
        dir,
      );
    case 'count':
      throw new DataDirError(
        `data dir ${dir}: ${DATA_FILE} is corrupt: LMDB counts ${report.entryCount} entries but ${report.entries} could be read; ${REJOIN_HINT}`,
        dir,
      );
    case 'error':
      throw new DataDirError(`data dir ${dir}: ${DATA_FILE} is not a readable LMDB file: ${report.message}; ${REJOIN_HINT}`, dir);
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

/**
 * After the probe: re-checks the size, the meta record, that no other process has the dir open,
 * that a rejoin is not asked on an existing store (`refuseRejoin`), and that every record decodes.
 * @returns the meta namespace's entry count and the decoded meta record.
 */
async function verifyOpened(
  db: RootDatabase<Buffer, Buffer>,
  dir: string,
  absDir: string,
  identity: ClusterIdentity,
  refuseRejoin: boolean,
): Promise<{ metaEntries: number; meta: MetaState; lost: LostRecord[] }> {
  const stats = db.getStats() as { pageSize: number; lastPageNumber: number };
  const size = (await fsp.stat(path.join(absDir, DATA_FILE))).size;
  if (size < (stats.lastPageNumber + 1) * stats.pageSize) {
    throw new DataDirError(
      `data dir ${dir}: ${DATA_FILE} is truncated (${size} bytes, LMDB uses ${(stats.lastPageNumber + 1) * stats.pageSize}); ${REJOIN_HINT}`,
      dir,
    );
  }
  const meta = checkMeta(db.getBinary(META_KEY), dir, identity);
  // Another live process with the environment open (a second replica started on this dir) has a
  // slot in LMDB's reader table; slots of dead processes (the probe child, a killed replica) are
  // cleared by readerCheck().
  db.readerCheck();
  const others = [...db.readerList().matchAll(/^\s*(\d+)\s+\S+\s+\S+\s*$/gm)].map((m) => Number(m[1])).filter((pid) => pid !== process.pid);
  if (others.length > 0) {
    throw new DataDirError(`data dir ${dir} is in use by process ${[...new Set(others)].join(', ')}: is another replica running with this --data-dir?`, dir);
  }
  if (refuseRejoin && !meta.rejoining) {
    // A dir whose replica never got a start confirmed holds nothing it voted with (e.g. the one a
    // start without --rejoin created before it found out that the replica had lost its data).
    const neverVoted = meta.incarnation === 0 && db.getCount({ start: RECORDS_START, end: RECORDS_END }) === 0;
    if (!neverVoted) {
      throw new DataDirError(
        `data dir ${dir} already holds PaxosKV data (incarnation ${meta.incarnation}); --rejoin starts a replica that lost its data ` +
          `from an EMPTY data dir: to rejoin, move this dir aside first; to keep its data, restart without --rejoin`,
        dir,
      );
    }
    meta.rejoining = true;
    await db.put(META_KEY, encodeMeta(meta)); // durable: overlappingSync is off
  }
  // Every record is checked; one that fails its checksum (or does not decode) is a lost key, which
  // the replica repairs from its peers (the store reads it as LOST_RECORD).
  const lost: LostRecord[] = [];
  for (const { key, value } of db.getRange({ start: RECORDS_START, end: RECORDS_END })) {
    try {
      decodeRecord(value);
    } catch (err) {
      lost.push({ key: Buffer.from(key).toString('utf8', 1), reason: (err as Error).message });
    }
  }
  return { metaEntries: db.getCount({ start: META_START, end: RECORDS_START }), meta, lost };
}
