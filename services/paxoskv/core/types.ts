/**
 * PaxosKV's core data: log entries, per-key records, proposal numbers, write sessions and the
 * messages replicas exchange. Pure data, no I/O.
 *
 * After PaxosStore (Zheng et al., VLDB 2017) and Tencent/paxosstore: every key is its own Paxos
 * log, and the log is the record ("PLog as DB"): a key keeps only its latest chosen entry and the
 * acceptor state of the one instance after it.
 *
 * Exactly-once writes follow Raft's client sessions (Ongaro, "Consensus: Bridging Theory and
 * Practice", 2014, section 6.3), per key: see {@link WriteId}, {@link Session} and
 * {@link writeOutcome}.
 */

/**
 * Incarnations are `counter * INCARNATION_NONCES + nonce`: the counter counts starts, the random
 * nonce tells two starts with the same counter apart (a start on a data dir restored from an older
 * copy reuses a counter its lost life already announced).
 */
export const INCARNATION_NONCES = 2 ** 20;

/** The start counter of an incarnation (0 for none). */
export function incarnationCounter(incarnation: number): number {
  return Math.floor(incarnation / INCARNATION_NONCES);
}

/** A replica's id within its cluster: 1..65535. */
export type MemberId = number;

/**
 * A membership configuration, as chosen in the configuration key ({@link CONFIG_KEY}); its rules
 * and steps are in membership.ts. Member lists are ascending and disjoint.
 */
export interface Configuration {
  /** 1 for a cluster's first configuration; +1 at every step of a change. */
  readonly epoch: number;
  /** Members that vote (at least one). */
  readonly voters: readonly MemberId[];
  /** Members that only learn chosen entries (never vote, serve no clients). */
  readonly learners: readonly MemberId[];
  /**
   * Set while a change is under way (a joint configuration): the configuration it moves to.
   * Decisions then need a majority of `voters` and a majority of `next.voters`.
   */
  readonly next?: { readonly voters: readonly MemberId[]; readonly learners: readonly MemberId[] };
  /**
   * Where members added by changes listen (`host:port`, by member id): the drivers reach them
   * there. The first configuration's members are at the addresses the replicas were started with.
   */
  readonly addresses?: Readonly<Record<number, string>>;
}

/** Largest member id (ids fit the low 16 bits of a proposal number). */
export const MAX_MEMBER_ID = 0xffff;

/**
 * A proposal number (ballot): `round * 2^16 + memberId`, i.e. `(round << 16) | memberId` without
 * 32-bit overflow. Unique per member; ordered by round, then member. 0 means "none".
 *
 * A prepared round starts with the proposer's configuration epoch: `round = epoch * 2^21 + r`,
 * r >= 1 ({@link epochRound}), so every prepared ballot of a later epoch is higher than every one
 * of an earlier epoch (Vertical Paxos: Lamport, Malkhi and Zhou, "Vertical Paxos and
 * Primary-Backup Replication", PODC 2009, orders ballots by configuration first). A value accepted
 * under an old configuration and never chosen then can thus never outrank one chosen under a
 * newer one. Round 0 (`ballot === memberId`), in every epoch, is the fast path's number
 * ({@link isFastBallot}): it must stay below every prepared ballot, because a fast-path proposal
 * reads nothing first (a round 0 of a later epoch above a value chosen in an earlier one would
 * let a recovery round prefer it). Ballots of a data dir written before epochs entered ballots
 * read as epoch 0: lower than any since, and still ordered among themselves.
 */
export type Ballot = number;

/** Rounds one epoch's ballots may take (2^21); a proposer that would run past them fails the operation. */
export const ROUNDS_PER_EPOCH = 2 ** 21;

/** The highest epoch a ballot can carry: `epoch * 2^21 * 2^16` must stay below 2^53. */
export const MAX_EPOCH = 2 ** 16 - 1;

/** The round `epoch`'s prepared rounds start above. */
export function epochRound(epoch: number): number {
  return epoch * ROUNDS_PER_EPOCH;
}

/** Whether a ballot is a fast-path (round 0) number. */
export function isFastBallot(ballot: Ballot): boolean {
  return roundOf(ballot) === 0;
}

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

/**
 * The identity of one client write, the same on every attempt of it, with the client's session
 * bookkeeping. Times are the *client's* clock (ms since the epoch, read from a monotonic source):
 * replicas never compare them with their own clocks, only with other client stamps in the key's
 * log, so replica clock offsets and steps cannot break exactly-once.
 */
export interface WriteId {
  /** The client session: a random id the client made (at most MAX_CLIENT_ID_BYTES). */
  readonly client: string;
  /** The write's number within the session: 1, 2, 3, ... (never reused by the session). */
  readonly seq: number;
  /**
   * Every write of the session numbered below this is finished on the client: it will never
   * send another attempt of it. Replicas forget those writes and refuse late attempts of them.
   */
  readonly ackedBelow: number;
  /** When the client sent this attempt (client clock, ms). */
  readonly sentAt: number;
  /**
   * The last moment an attempt of this write may be applied (client clock, ms), the same on
   * every attempt; at most MAX_WRITE_LIFETIME_MS after `sentAt`. Past it in the key's log time,
   * the write is refused and its id may be forgotten.
   */
  readonly expiresAt: number;
}

/** Longest client session id (bytes of UTF-8). */
export const MAX_CLIENT_ID_BYTES = 64;
/** Longest time a write may stay retryable, from any attempt's `sentAt` to its `expiresAt` (ms). */
export const MAX_WRITE_LIFETIME_MS = 60_000;
/** Most client sessions one key remembers; past it the oldest-expiring ones are dropped (safely). */
export const MAX_SESSIONS_PER_KEY = 1024;
/**
 * Most writes one session remembers on one key, i.e. how many of one client's writes to one key
 * may be unfinished at once; past it the session's floor rises over the oldest (safely: their
 * later attempts are refused, never applied twice).
 */
export const MAX_WRITES_PER_SESSION = 256;

/** A write remembered by a session: its number and the version it got. */
export interface SessionWrite {
  /** The write's number in its session. */
  readonly seq: number;
  /** The key's version the write got (the index of its entry). */
  readonly version: number;
}

/**
 * What a key remembers of one client session: part of every chosen entry, so every replica holds
 * the same sessions for the same version.
 */
export interface Session {
  /** The session id ({@link WriteId.client}). */
  readonly client: string;
  /** Writes of the session numbered below this are finished; late attempts of them are refused. */
  readonly floor: number;
  /** The largest `expiresAt` of the session's writes applied to this key (client clock, ms). */
  readonly expiresAt: number;
  /** The session's writes applied to this key at or above `floor`, ascending by seq. */
  readonly writes: readonly SessionWrite[];
}

/** A log entry: one write of a key. Chosen entries are immutable. */
export interface Entry {
  /** The entry's index in the key's log, which is the key's version once chosen (>= 1). */
  readonly index: number;
  /** The key's value after this entry; `null` for a delete. */
  readonly value: Uint8Array | null;
  /** The write this entry applied (session and seq), or null for a write made without one. */
  readonly writer: { readonly client: string; readonly seq: number } | null;
  /** The member that proposed it: it may take the fast path at the next index. */
  readonly proposer: MemberId;
  /**
   * The key's log time (ms, client clocks): the largest `sentAt` of any write applied to the key
   * so far, raised further when sessions are dropped for space. Never goes back along the log.
   */
  readonly time: number;
  /** The client sessions the key remembers after this entry (see {@link writeOutcome}). */
  readonly sessions: readonly Session[];
}

/**
 * What the latest entry says about a write attempt:
 * - `applied`: the write was chosen at `version`: answer with it, do not apply again;
 * - `stale`: the session already finished with this write (seq below its floor): a late attempt;
 * - `expired`: the key's log time passed the write's `expiresAt`: it may have been applied and
 *   forgotten, so it must not be applied now;
 * - `fresh`: it was never applied; it may be.
 *
 * Why this is exactly-once: a session is dropped from an entry only when the entry's log time is
 * past the session's `expiresAt` (the largest `expiresAt` of its applied writes), a write is
 * dropped from its session only below the session's floor, and log time never goes back. So if a
 * write was chosen at version v and an attempt of it is planned on entry w >= v, the entry still
 * remembers it, or its seq is below the floor, or the log time is past its `expiresAt`: it is
 * never `fresh` again. No replica clock takes part.
 */
export type WriteOutcome = { kind: 'applied'; version: number } | { kind: 'stale' } | { kind: 'expired' } | { kind: 'fresh' };

/**
 * Classifies a write attempt against the key's latest entry; see {@link WriteOutcome}.
 * @param latest - the latest chosen entry the planner knows (null for a key never written).
 * @param id - the write's identity, or null for a write without a session (always fresh).
 */
export function writeOutcome(latest: Entry | null, id: WriteId | null): WriteOutcome {
  if (id === null || latest === null) return { kind: 'fresh' };
  const session = latest.sessions.find((s) => s.client === id.client);
  if (session !== undefined) {
    for (const w of session.writes) if (w.seq === id.seq) return { kind: 'applied', version: w.version };
    if (id.seq < session.floor) return { kind: 'stale' };
  }
  if (latest.time > id.expiresAt) return { kind: 'expired' };
  return { kind: 'fresh' };
}

/**
 * The entry that follows `previous` (null for a key never written) with `value`, written by `id`.
 * The caller must have found the write `fresh` ({@link writeOutcome}) against `previous`.
 * @returns an entry at `previous.index + 1` whose log time is the larger of the previous one and
 *   `id.sentAt`, with sessions whose `expiresAt` is below that time dropped, the writer's session
 *   updated (floor raised to `ackedBelow`, this write added), and the caps applied: more than
 *   MAX_WRITES_PER_SESSION writes raise the session's floor, more than MAX_SESSIONS_PER_KEY
 *   sessions drop the ones expiring first and raise the log time past their `expiresAt`.
 */
export function nextEntry(previous: Entry | null, value: Uint8Array | null, id: WriteId | null, proposer: MemberId): Entry {
  const index = (previous?.index ?? 0) + 1;
  let time = previous?.time ?? 0;
  if (id !== null && id.sentAt > time) time = id.sentAt;
  const sessions: Session[] = [];
  let own: Session | undefined;
  for (const s of previous?.sessions ?? []) {
    if (id !== null && s.client === id.client) own = s;
    else if (s.expiresAt >= time) sessions.push(s);
  }
  if (id !== null) {
    let floor = Math.max(own?.floor ?? 0, id.ackedBelow);
    let writes = (own?.writes ?? []).filter((w) => w.seq >= floor);
    writes.push({ seq: id.seq, version: index });
    writes.sort((a, b) => a.seq - b.seq);
    if (writes.length > MAX_WRITES_PER_SESSION) {
      writes = writes.slice(writes.length - MAX_WRITES_PER_SESSION);
      floor = Math.max(floor, writes[0]!.seq);
    }
    sessions.push({ client: id.client, floor, expiresAt: Math.max(own?.expiresAt ?? 0, id.expiresAt), writes });
  }
  if (sessions.length > MAX_SESSIONS_PER_KEY) {
    // Drop the other sessions that expire first; raising the log time past them keeps writeOutcome exact.
    const byExpiry = sessions.filter((s) => id === null || s.client !== id.client).sort((a, b) => a.expiresAt - b.expiresAt);
    const drop = byExpiry.slice(0, sessions.length - MAX_SESSIONS_PER_KEY);
    time = Math.max(time, drop[drop.length - 1]!.expiresAt + 1);
    const dropped = new Set(drop);
    for (let i = sessions.length - 1; i >= 0; i--) if (dropped.has(sessions[i]!)) sessions.splice(i, 1);
  }
  return { index, value, writer: id === null ? null : { client: id.client, seq: id.seq }, proposer, time, sessions };
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
  /**
   * The first instance this replica may vote in (0 = any). Set by a replica that rejoined after
   * losing its data: it may have voted, before the loss, in instances below this.
   */
  readonly fence: number;
}

/** The record of a key never seen. */
export const EMPTY_RECORD: KeyRecord = Object.freeze({ chosen: null, promised: 0, accepted: 0, acceptedEntry: null, fence: 0 });

/**
 * What a store returns, by identity, for a key whose stored record failed its checksum (or does
 * not decode): the replica has lost that key's promises, accepts and chosen entry, and repairs it
 * from the other voters before it votes on it or serves it again (see `Replica`).
 */
export const LOST_RECORD: KeyRecord = Object.freeze({ chosen: null, promised: 0, accepted: 0, acceptedEntry: null, fence: 0 });

/** The version (chosen index) of a record. */
export function chosenIndex(record: KeyRecord): number {
  return record.chosen?.index ?? 0;
}

/** One key's state as a peer lists it for a rejoining replica. */
export interface KeyState {
  readonly key: string;
  readonly chosenIndex: number;
  /** The peer accepted a value in the instance after `chosenIndex` (it may be chosen). */
  readonly pending: boolean;
}

/**
 * The key that holds the cluster's membership configuration (membership.ts): its version v holds
 * the configuration of epoch v + 1 (version 0, never written, is the first configuration), so a
 * write of the next configuration can only follow the one it was planned against (a
 * compare-and-set through the index). Keys starting with NUL are the system's: clients cannot
 * name them.
 */
export const CONFIG_KEY = '\u0000svrkit/configuration';

/** Whether `key` is a system key (it starts with NUL): clients cannot read or write it. */
export function isSystemKey(key: string): boolean {
  return key.charCodeAt(0) === 0;
}

/**
 * Messages between replicas. Every message names its key (`''` for the replica-wide ones).
 * Prepares, accepts, reads and key listings carry the sender's configuration `epoch`: a replica
 * at another epoch does not vote in them or answer them (it answers `staleEpoch` to an older one,
 * and catches up the configuration from the sender of a newer one).
 */
export type PeerMessage =
  | { type: 'prepare'; key: string; index: number; ballot: Ballot; epoch: number }
  | { type: 'accept'; key: string; index: number; ballot: Ballot; entry: Entry; epoch: number }
  | { type: 'promise'; key: string; index: number; ballot: Ballot; accepted: Ballot; acceptedEntry: Entry | null }
  | { type: 'accepted'; key: string; index: number; ballot: Ballot }
  /** The instance is closed to this ballot: `promised` is the ballot that beat it. */
  | { type: 'reject'; key: string; index: number; ballot: Ballot; promised: Ballot }
  /** The instance is already decided; `entry` is the sender's latest chosen entry (index >= the asked one). */
  | { type: 'chosen'; key: string; entry: Entry }
  /** The sender does not vote in the asked instance: it has not learned the one before it (or is fenced). */
  | { type: 'behind'; key: string; index: number; chosenIndex: number }
  /** A chosen entry, announced by its proposer (or served to a lagging peer). */
  | { type: 'learn'; key: string; entry: Entry }
  /**
   * A linearizable read (or a lost key's repair) asks for the key's state; `knownIndex` is the
   * asker's chosen index, `readerIncarnation` the asker's incarnation (read ids restart with
   * each life of a replica; the incarnation tells an answer to this life from one to an earlier).
   */
  | { type: 'read'; key: string; readId: number; knownIndex: number; readerIncarnation: number; epoch: number }
  /**
   * Answer to `read`: the chosen index, the entry when it is newer than `knownIndex`, and the
   * ballot of a value accepted (not known chosen) at `chosenIndex + 1` (0 when none); `readId`
   * and `readerIncarnation` are the read's.
   */
  | { type: 'readState'; key: string; readId: number; chosenIndex: number; entry: Entry | null; pendingAccepted: Ballot; readerIncarnation: number }
  /** A lagging replica asks for the latest chosen entry of a key. */
  | { type: 'catchUp'; key: string; knownIndex: number }
  /**
   * A starting replica announces its new incarnation. The receiver records it durably (as the
   * highest seen from the sender) and answers `helloAck` with what it had recorded before.
   */
  | {
      type: 'hello';
      key: '';
      /** The incarnation this start announces: `counter * 2^20 + nonce` (see INCARNATION_NONCES). */
      incarnation: number;
      /** The sender's confirmed incarnation (its data dir's last start the voters confirmed). */
      confirmed: number;
      /** Every incarnation the sender announced since `confirmed`, this one included. */
      announced: readonly number[];
      /** The sender lost its data and rejoins: record without judging its data dir. */
      rejoin: boolean;
    }
  /**
   * `recorded`: the highest incarnation the receiver had recorded for the sender before; `ok`:
   * whether that is one the sender's data dir knows (at most `confirmed`, or announced since);
   * `table`: the receiver's records of every member (a rejoining replica rebuilds its own from them).
   */
  | { type: 'helloAck'; key: ''; incarnation: number; recorded: number; ok: boolean; table: ReadonlyArray<readonly [MemberId, number]> }
  /**
   * A rejoining or syncing replica lists the receiver's keys strictly after `after` (the receiver's own
   * order; `after` is always a key that receiver listed, or '' to start, and keys are never empty),
   * at most `limit`.
   */
  | { type: 'listKeys'; key: ''; listId: number; after: string; limit: number; epoch: number }
  /** Answer to `listKeys`: keys with their chosen index; `done` when no key follows. */
  | { type: 'keyList'; key: ''; listId: number; keys: readonly KeyState[]; done: boolean }
  /**
   * A rejoining or syncing replica asks a voter to decide the key's pending instance (the voter runs a read,
   * which finishes it) and to answer `finished` with its chosen index afterwards.
   */
  | { type: 'finish'; key: string }
  | { type: 'finished'; key: string; chosenIndex: number }
  /**
   * The receiver moved past the epoch of a prepare, accept, read or listing it got for `key`:
   * `epoch` is its own. The sender catches up the configuration key from it.
   */
  | { type: 'staleEpoch'; key: string; epoch: number }
  /**
   * The sender finished its sync for the joint configuration of `epoch` (membership.ts): it
   * holds every key's latest entry chosen before that epoch. Sent to every member.
   */
  | { type: 'synced'; key: ''; epoch: number };

/** A client operation on one key. */
export type ClientOp =
  | { kind: 'get' }
  | { kind: 'put'; value: Uint8Array; id: WriteId | null }
  | { kind: 'delete'; id: WriteId | null }
  | { kind: 'cas'; expectedVersion: number; value: Uint8Array; id: WriteId | null };

/** The result of a client operation. Errors carry a gRPC status name. */
export type ClientResult =
  | { ok: true; kind: 'get'; value: Uint8Array | null; version: number }
  | { ok: true; kind: 'write'; version: number }
  | {
      ok: false;
      status: 'FAILED_PRECONDITION' | 'UNAVAILABLE' | 'DEADLINE_EXCEEDED' | 'ABORTED';
      message: string;
      version?: number;
      /**
       * Set on UNAVAILABLE when this replica never sent the operation's own value in an accept
       * message: this attempt was not applied and cannot be applied later, so the client may retry
       * it on another replica without its outcome becoming unknown.
       */
      notApplied?: boolean;
    };

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
 * Replica-wide state a step asks to persist with its records (fields absent are unchanged):
 * this replica's incarnations, the highest incarnation seen from each peer, and whether it is
 * still rejoining after a data loss.
 */
export interface MetaPatch {
  /** The confirmed incarnation (a start the other voters confirmed). */
  incarnation?: number;
  /** Incarnations announced since the confirmed one (replaces the stored list). */
  announced?: readonly number[];
  /** Highest incarnations seen from peers (merged, keeping the larger). */
  peerIncarnations?: ReadonlyMap<MemberId, number>;
  rejoining?: boolean;
  /** The membership configuration this replica adopted (membership.ts), once it is not the first. */
  configuration?: Configuration;
}

/**
 * What a step of the core asks its driver to do, in this order: persist `persist` and `meta`
 * (durably, in one commit ordered after every earlier step's), then send `send` and deliver
 * `replies`. Nothing may leave before the records it follows are durable (etcd-io/raft's `Ready`
 * contract).
 */
export interface Output {
  persist: Map<string, KeyRecord>;
  meta: MetaPatch | undefined;
  send: Outgoing[];
  replies: Reply[];
}

/** A fresh, empty output. */
export function emptyOutput(): Output {
  return { persist: new Map(), meta: undefined, send: [], replies: [] };
}
