/**
 * The acceptor and learner rules of one key, as pure functions of its record: a message in, the
 * new record and the reply out. The record holds only the latest chosen entry and the acceptor
 * state of the next instance (PaxosStore's "PLog as DB", keeping only the latest entry).
 *
 * Rules (Lamport, "Paxos Made Simple", per instance; the fast path after PaxosStore):
 * - An instance at or below the chosen index is decided: the reply is the latest chosen entry.
 * - An instance beyond the next one means this replica missed chosen entries: it answers
 *   `behind` (and its driver catches up) instead of voting blind. So does an instance below the
 *   record's fence (a replica that lost its data may have voted there before).
 * - prepare(b): promise if b >= promised, reporting the accepted ballot and value; else reject.
 * - accept(b, v): accept if b >= promised; a round-0 (fast path) ballot additionally needs that
 *   nothing else was accepted in this instance; else reject.
 * - learn(e): a chosen entry newer than the chosen one replaces it and opens a fresh instance
 *   (the fence stays).
 */
import {
  chosenIndex,
  isFastBallot,
  type Entry,
  type KeyRecord,
  type PeerMessage,
} from './types.js';

/** What an acceptor rule returns: the record to persist (undefined when unchanged) and the reply. */
export interface AcceptorStep {
  record: KeyRecord | undefined;
  reply: PeerMessage;
}

/**
 * Whether two entries are the same value: every field, the log time and sessions included (the
 * simulator's agreement check relies on this seeing any difference).
 */
export function sameEntry(a: Entry | null, b: Entry | null): boolean {
  if (a === null || b === null) return a === b;
  if (a === b) return true;
  if (a.index !== b.index || a.proposer !== b.proposer || a.time !== b.time) return false;
  if ((a.writer === null) !== (b.writer === null)) return false;
  if (a.writer !== null && (a.writer.client !== b.writer!.client || a.writer.seq !== b.writer!.seq)) return false;
  if (a.value === null || b.value === null) {
    if (a.value !== b.value) return false;
  } else if (Buffer.compare(a.value, b.value) !== 0) return false;
  if (a.sessions.length !== b.sessions.length) return false;
  for (let i = 0; i < a.sessions.length; i++) {
    const x = a.sessions[i]!;
    const y = b.sessions[i]!;
    if (x.client !== y.client || x.floor !== y.floor || x.expiresAt !== y.expiresAt || x.writes.length !== y.writes.length) return false;
    for (let j = 0; j < x.writes.length; j++) {
      if (x.writes[j]!.seq !== y.writes[j]!.seq || x.writes[j]!.version !== y.writes[j]!.version) return false;
    }
  }
  return true;
}

function outOfInstance(record: KeyRecord, key: string, index: number): PeerMessage | undefined {
  const c = chosenIndex(record);
  if (index <= c) return { type: 'chosen', key, entry: record.chosen! };
  // Beyond the next instance, or below the fence of a replica that rejoined after losing its data
  // (it may have voted there before): no vote.
  if (index > c + 1 || index < record.fence) return { type: 'behind', key, index, chosenIndex: c };
  return undefined;
}

/**
 * Handles prepare(key, index, ballot).
 * @returns a promise (and the record with the new promise), a reject, `chosen` or `behind`.
 */
export function onPrepare(record: KeyRecord, msg: { key: string; index: number; ballot: number }): AcceptorStep {
  const other = outOfInstance(record, msg.key, msg.index);
  if (other !== undefined) return { record: undefined, reply: other };
  if (msg.ballot < record.promised) {
    return { record: undefined, reply: { type: 'reject', key: msg.key, index: msg.index, ballot: msg.ballot, promised: record.promised } };
  }
  const next = msg.ballot === record.promised ? undefined : { ...record, promised: msg.ballot };
  return {
    record: next,
    reply: { type: 'promise', key: msg.key, index: msg.index, ballot: msg.ballot, accepted: record.accepted, acceptedEntry: record.acceptedEntry },
  };
}

/**
 * Handles accept(key, index, ballot, entry).
 * @returns `accepted` (and the record holding the value), a reject, `chosen` or `behind`.
 */
export function onAccept(record: KeyRecord, msg: { key: string; index: number; ballot: number; entry: Entry }): AcceptorStep {
  const other = outOfInstance(record, msg.key, msg.index);
  if (other !== undefined) return { record: undefined, reply: other };
  const reject: AcceptorStep = {
    record: undefined,
    reply: { type: 'reject', key: msg.key, index: msg.index, ballot: msg.ballot, promised: Math.max(record.promised, record.accepted) },
  };
  if (msg.ballot < record.promised) return reject;
  // Fast path (round 0): only into an instance where nothing else was accepted.
  if (isFastBallot(msg.ballot) && record.accepted !== 0 && !(record.accepted === msg.ballot && sameEntry(record.acceptedEntry, msg.entry))) {
    return reject;
  }
  const unchanged = record.accepted === msg.ballot && record.promised === msg.ballot && sameEntry(record.acceptedEntry, msg.entry);
  return {
    record: unchanged ? undefined : { ...record, promised: msg.ballot, accepted: msg.ballot, acceptedEntry: msg.entry },
    reply: { type: 'accepted', key: msg.key, index: msg.index, ballot: msg.ballot },
  };
}

/**
 * Learns a chosen entry.
 * @returns the new record, or undefined when the entry is not newer than what is known.
 */
export function learn(record: KeyRecord, entry: Entry): KeyRecord | undefined {
  if (entry.index <= chosenIndex(record)) return undefined;
  return { chosen: entry, promised: 0, accepted: 0, acceptedEntry: null, fence: record.fence };
}

/** Answers a read: the chosen index, the entry if the asker lacks it, and any pending accepted ballot (the read's id and reader incarnation echoed). */
export function readState(record: KeyRecord, msg: { key: string; readId: number; knownIndex: number; readerIncarnation: number }): PeerMessage {
  const c = chosenIndex(record);
  return {
    type: 'readState',
    key: msg.key,
    readId: msg.readId,
    chosenIndex: c,
    entry: c > msg.knownIndex ? record.chosen : null,
    // A record fenced past the next instance (its replica lost its data and rejoined) cannot vouch
    // that nothing was accepted there: it reports a value as possibly pending (ballot 1), so that a
    // read does not confirm on its word alone.
    pendingAccepted: record.accepted !== 0 ? record.accepted : record.fence > c + 1 ? 1 : 0,
    readerIncarnation: msg.readerIncarnation,
  };
}
