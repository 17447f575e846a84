/**
 * PaxosKV's core data: log entries, per-key records, proposal numbers and the messages replicas
 * exchange. Pure data, no I/O.
 *
 * After PaxosStore (Zheng et al., VLDB 2017) and Tencent/paxosstore: every key is its own Paxos
 * log, and the log is the record ("PLog as DB"): a key keeps only its latest chosen entry and the
 * acceptor state of the one instance after it.
 */

/** A replica's id within its cluster: 1..65535. */
export type MemberId = number;

/** Largest member id (ids fit the low 16 bits of a proposal number). */
export const MAX_MEMBER_ID = 0xffff;

/**
 * A proposal number (ballot): `round * 2^16 + memberId`, i.e. `(round << 16) | memberId` without
 * 32-bit overflow. Unique per member; ordered by round, then member. 0 means "none".
 * Round 0 (`ballot === memberId`) is the fast path's number.
 */
export type Ballot = number;

/** `(round << 16) | member` as a number. */
export function ballotOf(round: number, member: MemberId): Ballot {
  return round * 0x10000 + member;
}

/** The round of a ballot. */
export function roundOf(ballot: Ballot): number {
  return Math.floor(ballot / 0x10000);
}

/** The member of a ballot. */
export function memberOf(ballot: Ballot): MemberId {
  return ballot % 0x10000;
}

/** A log entry: one write of a key. Chosen entries are immutable. */
export interface Entry {
  /** The entry's index in the key's log, which is the key's version once chosen (>= 1). */
  readonly index: number;
  /** The key's value after this entry; `null` for a delete. */
  readonly value: Uint8Array | null;
  /** The id of the client request that wrote it ('' for none): retries with it are not applied twice. */
  readonly requestId: string;
  /** The member that proposed it: it may take the fast path at the next index. */
  readonly proposer: MemberId;
  /** The proposer's clock when it built the entry (epoch ms); bounds how long `recent` keeps ids. */
  readonly time: number;
  /**
   * Request ids of the writes before this one that were made within RECENT_WINDOW_MS of it (at
   * most RECENT_MAX, oldest first). Part of the chosen value, so every replica holds the same list:
   * a client's retry of a write chosen earlier in that window is recognised on any replica and
   * returns the original version instead of writing again.
   */
  readonly recent: readonly RecentWrite[];
}

/** A request id and the version its write got. */
export interface RecentWrite {
  readonly requestId: string;
  readonly version: number;
  /** When that write was proposed (epoch ms, the proposer's clock). */
  readonly time: number;
}

/**
 * How long an entry remembers earlier request ids (ms): longer than a client's retry horizon
 * (PaxosKVClient's default deadline is 5 s), so its retries are recognised.
 */
export const RECENT_WINDOW_MS = 10_000;
/** The most request ids an entry carries (ids and versions only, not values). */
export const RECENT_MAX = 64;

/**
 * The version a request id's write got, if `entry` or the writes it remembers are that request.
 * @returns the version, or undefined when the request is not among them (or `requestId` is '').
 */
export function versionOfRequest(entry: Entry | null, requestId: string): number | undefined {
  if (entry === null || requestId === '') return undefined;
  if (entry.requestId === requestId) return entry.index;
  for (const r of entry.recent) if (r.requestId === requestId) return r.version;
  return undefined;
}

/**
 * The entry that follows `previous` (null for a key never written) with `value`.
 * @param now - the proposer's clock (epoch ms).
 * @returns an entry at `previous.index + 1` remembering the request ids of the writes made in the
 *   last RECENT_WINDOW_MS (at most RECENT_MAX), `previous`'s included.
 */
export function nextEntry(previous: Entry | null, value: Uint8Array | null, requestId: string, proposer: MemberId, now: number): Entry {
  if (previous === null) return { index: 1, value, requestId, proposer, time: now, recent: [] };
  const horizon = now - RECENT_WINDOW_MS;
  const recent: RecentWrite[] = [];
  for (const r of previous.recent) if (r.time >= horizon) recent.push(r);
  if (previous.requestId !== '' && previous.time >= horizon) recent.push({ requestId: previous.requestId, version: previous.index, time: previous.time });
  return {
    index: previous.index + 1,
    value,
    requestId,
    proposer,
    time: now,
    recent: recent.length > RECENT_MAX ? recent.slice(-RECENT_MAX) : recent,
  };
}

/**
 * Everything a replica keeps about one key; persisted as one record.
 * The acceptor state (`promised`, `accepted`, `acceptedEntry`) is for instance `chosenIndex + 1`.
 */
export interface KeyRecord {
  /** The latest chosen entry, or null when nothing was ever chosen (version 0). */
  readonly chosen: Entry | null;
  /** Highest ballot promised for the pending instance (0 = none). */
  readonly promised: Ballot;
  /** Ballot of the accepted value for the pending instance (0 = none). */
  readonly accepted: Ballot;
  /** The accepted value for the pending instance. */
  readonly acceptedEntry: Entry | null;
}

/** The record of a key never seen. */
export const EMPTY_RECORD: KeyRecord = Object.freeze({ chosen: null, promised: 0, accepted: 0, acceptedEntry: null });

/** The version (chosen index) of a record. */
export function chosenIndex(record: KeyRecord): number {
  return record.chosen?.index ?? 0;
}

/** Messages between replicas. Every message names its key; replies echo what they answer. */
export type PeerMessage =
  | { type: 'prepare'; key: string; index: number; ballot: Ballot }
  | { type: 'accept'; key: string; index: number; ballot: Ballot; entry: Entry }
  | { type: 'promise'; key: string; index: number; ballot: Ballot; accepted: Ballot; acceptedEntry: Entry | null }
  | { type: 'accepted'; key: string; index: number; ballot: Ballot }
  /** The instance is closed to this ballot: `promised` is the ballot that beat it. */
  | { type: 'reject'; key: string; index: number; ballot: Ballot; promised: Ballot }
  /** The instance is already decided; `entry` is the sender's latest chosen entry (index >= the asked one). */
  | { type: 'chosen'; key: string; entry: Entry }
  /** The sender has not learned the instance before the asked one; it is catching up. */
  | { type: 'behind'; key: string; index: number; chosenIndex: number }
  /** A chosen entry, announced by its proposer (or served to a lagging peer). */
  | { type: 'learn'; key: string; entry: Entry }
  /** A linearizable read asks for the key's state; `knownIndex` is the asker's chosen index. */
  | { type: 'read'; key: string; readId: number; knownIndex: number }
  /**
   * Answer to `read`: the chosen index, the entry when it is newer than `knownIndex`, and the
   * ballot of a value accepted (not known chosen) at `chosenIndex + 1` (0 when none).
   */
  | { type: 'readState'; key: string; readId: number; chosenIndex: number; entry: Entry | null; pendingAccepted: Ballot }
  /** A lagging replica asks for the latest chosen entry of a key. */
  | { type: 'catchUp'; key: string; knownIndex: number };

/** A client operation on one key. */
export type ClientOp =
  | { kind: 'get' }
  | { kind: 'put'; value: Uint8Array; requestId: string }
  | { kind: 'delete'; requestId: string }
  | { kind: 'cas'; expectedVersion: number; value: Uint8Array; requestId: string };

/** The result of a client operation. Errors carry a gRPC status name. */
export type ClientResult =
  | { ok: true; kind: 'get'; value: Uint8Array | null; version: number }
  | { ok: true; kind: 'write'; version: number }
  | { ok: false; status: 'FAILED_PRECONDITION' | 'UNAVAILABLE' | 'DEADLINE_EXCEEDED'; message: string; version?: number };

/** A message to send. */
export interface Outgoing {
  readonly to: MemberId;
  readonly message: PeerMessage;
}

/** A finished client operation. */
export interface Reply {
  readonly requestRef: number;
  readonly result: ClientResult;
}

/**
 * What a step of the core asks its driver to do, in this order: persist `persist` (durably), then
 * send `send` and deliver `replies`. Nothing may leave before the records it follows are durable.
 */
export interface Output {
  persist: Map<string, KeyRecord>;
  send: Outgoing[];
  replies: Reply[];
}

/** A fresh, empty output. */
export function emptyOutput(): Output {
  return { persist: new Map(), send: [], replies: [] };
}
