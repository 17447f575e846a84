/**
 * Conversion between the core's peer messages (plain numbers) and their protobuf form (the
 * generated `svrkit.paxoskv.PeerMessage`, with 64-bit fields as bigint and its oneof `kind` as
 * `{ $case, value }`). Decoding validates: a malformed message from a peer is refused with a
 * clear error, never handed to the core.
 */
import type { Entry, PeerMessage, Session } from './core/types.js';
import type { Entry as EntryPb, PeerMessage as PeerMessagePb } from './gen/svrkit/paxoskv/paxoskv.js';

/** A peer message that does not decode to a valid core message. */
export class PeerMessageError extends Error {
  /** @param message - what was wrong. */
  constructor(message: string) {
    super(message);
    this.name = 'PeerMessageError';
  }
}

/** Largest number the core handles exactly (indexes, ballots): 2^53 - 1. */
const MAX = BigInt(Number.MAX_SAFE_INTEGER);

/** Largest incarnation a peer may report: the start counter must leave room to count on safely. */
const MAX_INCARNATION = 2n ** 50n;

function incarnation(v: bigint): number {
  if (v < 0n || v > MAX_INCARNATION) throw new PeerMessageError(`incarnation ${v} is out of range (at most 2^50)`);
  return Number(v);
}

function num(v: bigint, what: string): number {
  if (v < 0n || v > MAX) throw new PeerMessageError(`${what} ${v} is out of range`);
  return Number(v);
}

/** Encodes a core entry. */
export function entryToPb(e: Entry): EntryPb {
  return {
    index: BigInt(e.index),
    value: e.value ?? new Uint8Array(0),
    deleted: e.value === null,
    writerClient: e.writer?.client ?? '',
    writerSeq: BigInt(e.writer?.seq ?? 0),
    proposer: e.proposer,
    time: BigInt(e.time),
    sessions: e.sessions.map((s) => ({
      client: s.client,
      floor: BigInt(s.floor),
      expiresAtMs: BigInt(s.expiresAt),
      writes: s.writes.map((w) => ({ seq: BigInt(w.seq), version: BigInt(w.version) })),
    })),
  };
}

/**
 * Decodes an entry.
 * @throws PeerMessageError when it is missing or a field is out of range.
 */
export function entryFromPb(e: EntryPb | undefined, what = 'entry'): Entry {
  if (e === undefined) throw new PeerMessageError(`${what} is missing`);
  const index = num(e.index, `${what} index`);
  if (index < 1) throw new PeerMessageError(`${what} index must be >= 1`);
  if (e.proposer < 1 || e.proposer > 0xffff) throw new PeerMessageError(`${what} proposer ${e.proposer} is not a member id`);
  const sessions: Session[] = e.sessions.map((s, i) => {
    if (s.client.length === 0) throw new PeerMessageError(`${what} session ${i} has an empty client id`);
    return {
      client: s.client,
      floor: num(s.floor, `${what} session floor`),
      expiresAt: num(s.expiresAtMs, `${what} session expiry`),
      writes: s.writes.map((w) => ({ seq: num(w.seq, `${what} session seq`), version: num(w.version, `${what} session version`) })),
    };
  });
  return {
    index,
    value: e.deleted ? null : e.value,
    writer: e.writerClient === '' ? null : { client: e.writerClient, seq: num(e.writerSeq, `${what} writer seq`) },
    proposer: e.proposer,
    time: num(e.time, `${what} time`),
    sessions,
  };
}

/** Encodes a core message. */
export function messageToPb(m: PeerMessage): PeerMessagePb {
  const base = { key: m.key, index: 0n, ballot: 0n, epoch: 0n };
  switch (m.type) {
    case 'prepare':
      return { ...base, index: BigInt(m.index), ballot: BigInt(m.ballot), epoch: BigInt(m.epoch), kind: { $case: 'prepare', value: {} } };
    case 'accept':
      return { ...base, index: BigInt(m.index), ballot: BigInt(m.ballot), epoch: BigInt(m.epoch), kind: { $case: 'accept', value: { entry: entryToPb(m.entry) } } };
    case 'promise':
      return {
        ...base,
        index: BigInt(m.index),
        ballot: BigInt(m.ballot),
        kind: {
          $case: 'promise',
          value: { accepted: BigInt(m.accepted), acceptedEntry: m.acceptedEntry === null ? undefined : entryToPb(m.acceptedEntry) },
        },
      };
    case 'accepted':
      return { ...base, index: BigInt(m.index), ballot: BigInt(m.ballot), kind: { $case: 'accepted', value: {} } };
    case 'reject':
      return { ...base, index: BigInt(m.index), ballot: BigInt(m.ballot), kind: { $case: 'reject', value: { promised: BigInt(m.promised) } } };
    case 'chosen':
      return { ...base, kind: { $case: 'chosen', value: { entry: entryToPb(m.entry) } } };
    case 'behind':
      return { ...base, index: BigInt(m.index), kind: { $case: 'behind', value: { chosenIndex: BigInt(m.chosenIndex) } } };
    case 'learn':
      return { ...base, kind: { $case: 'learn', value: { entry: entryToPb(m.entry) } } };
    case 'read':
      return { ...base, epoch: BigInt(m.epoch), kind: { $case: 'read', value: { readId: BigInt(m.readId), knownIndex: BigInt(m.knownIndex), readerIncarnation: BigInt(m.readerIncarnation) } } };
    case 'readState':
      return {
        ...base,
        kind: {
          $case: 'readState',
          value: {
            readId: BigInt(m.readId),
            chosenIndex: BigInt(m.chosenIndex),
            entry: m.entry === null ? undefined : entryToPb(m.entry),
            pendingAccepted: BigInt(m.pendingAccepted),
            readerIncarnation: BigInt(m.readerIncarnation),
          },
        },
      };
    case 'catchUp':
      return { ...base, kind: { $case: 'catchUp', value: { knownIndex: BigInt(m.knownIndex) } } };
    case 'hello':
      return {
        ...base,
        kind: {
          $case: 'hello',
          value: { incarnation: BigInt(m.incarnation), confirmed: BigInt(m.confirmed), announced: m.announced.map((a) => BigInt(a)), rejoin: m.rejoin },
        },
      };
    case 'helloAck':
      return {
        ...base,
        kind: {
          $case: 'helloAck',
          value: {
            incarnation: BigInt(m.incarnation),
            recorded: BigInt(m.recorded),
            ok: m.ok,
            table: m.table.map(([member, incarnation]) => ({ member, incarnation: BigInt(incarnation) })),
          },
        },
      };
    case 'listKeys':
      return { ...base, epoch: BigInt(m.epoch), kind: { $case: 'listKeys', value: { listId: BigInt(m.listId), after: m.after, limit: m.limit } } };
    case 'keyList':
      return {
        ...base,
        kind: {
          $case: 'keyList',
          value: { listId: BigInt(m.listId), keys: m.keys.map((k) => ({ key: k.key, chosenIndex: BigInt(k.chosenIndex), pending: k.pending })), done: m.done },
        },
      };
    case 'finish':
      return { ...base, kind: { $case: 'finish', value: {} } };
    case 'finished':
      return { ...base, kind: { $case: 'finished', value: { chosenIndex: BigInt(m.chosenIndex) } } };
    case 'staleEpoch':
      return { ...base, epoch: BigInt(m.epoch), kind: { $case: 'staleEpoch', value: {} } };
    case 'synced':
      return { ...base, epoch: BigInt(m.epoch), kind: { $case: 'synced', value: {} } };
  }
}

/**
 * Decodes and validates a message from a peer.
 * @throws PeerMessageError for an empty key, a missing kind, or fields out of range.
 */
export function messageFromPb(m: PeerMessagePb): PeerMessage {
  const key = m.key;
  const kind = m.kind;
  // A peer that predates epochs sends 0: it is at the first configuration.
  const epoch = m.epoch === 0n ? 1 : num(m.epoch, 'epoch');
  // The membership messages carry no key; every other kind is about one key.
  switch (kind?.$case) {
    case 'hello': {
      const h = kind.value;
      if (h.announced.length > 1000) throw new PeerMessageError(`hello announces ${h.announced.length} incarnations (at most 1000)`);
      for (const v of [h.incarnation, h.confirmed, ...h.announced]) incarnation(v);
      return {
        type: 'hello',
        key: '',
        incarnation: num(h.incarnation, 'incarnation'),
        confirmed: num(h.confirmed, 'confirmed incarnation'),
        announced: h.announced.map((a) => num(a, 'announced incarnation')),
        rejoin: h.rejoin,
      };
    }
    case 'helloAck': {
      const a = kind.value;
      const table = a.table.map((t): readonly [number, number] => {
        if (t.member < 1 || t.member > 0xffff) throw new PeerMessageError(`incarnation table names member ${t.member}, not a member id`);
        return [t.member, incarnation(t.incarnation)];
      });
      return { type: 'helloAck', key: '', incarnation: incarnation(a.incarnation), recorded: incarnation(a.recorded), ok: a.ok, table };
    }
    case 'staleEpoch':
      // Keyless when it answers a key listing.
      return { type: 'staleEpoch', key, epoch };
    case 'synced':
      return { type: 'synced', key: '', epoch };
    case 'listKeys':
      return { type: 'listKeys', key: '', listId: num(kind.value.listId, 'list id'), after: kind.value.after, limit: kind.value.limit, epoch };
    case 'keyList': {
      const keys = kind.value.keys.map((k) => {
        if (k.key.length === 0) throw new PeerMessageError('key list has an empty key');
        return { key: k.key, chosenIndex: num(k.chosenIndex, 'chosen index'), pending: k.pending };
      });
      return { type: 'keyList', key: '', listId: num(kind.value.listId, 'list id'), keys, done: kind.value.done };
    }
  }
  if (key.length === 0) throw new PeerMessageError('peer message has an empty key');
  const index = num(m.index, 'index');
  const ballot = num(m.ballot, 'ballot');
  switch (kind?.$case) {
    case 'prepare':
      return { type: 'prepare', key, index, ballot, epoch };
    case 'accept':
      return { type: 'accept', key, index, ballot, entry: entryFromPb(kind.value.entry), epoch };
    case 'promise':
      return {
        type: 'promise',
        key,
        index,
        ballot,
        accepted: num(kind.value.accepted, 'accepted ballot'),
        acceptedEntry: kind.value.acceptedEntry === undefined ? null : entryFromPb(kind.value.acceptedEntry, 'accepted entry'),
      };
    case 'accepted':
      return { type: 'accepted', key, index, ballot };
    case 'reject':
      return { type: 'reject', key, index, ballot, promised: num(kind.value.promised, 'promised ballot') };
    case 'chosen':
      return { type: 'chosen', key, entry: entryFromPb(kind.value.entry) };
    case 'behind':
      return { type: 'behind', key, index, chosenIndex: num(kind.value.chosenIndex, 'chosen index') };
    case 'learn':
      return { type: 'learn', key, entry: entryFromPb(kind.value.entry) };
    case 'read':
      return {
        type: 'read',
        key,
        readId: num(kind.value.readId, 'read id'),
        knownIndex: num(kind.value.knownIndex, 'known index'),
        readerIncarnation: num(kind.value.readerIncarnation, 'reader incarnation'),
        epoch,
      };
    case 'readState': {
      const s = kind.value;
      return {
        type: 'readState',
        key,
        readId: num(s.readId, 'read id'),
        chosenIndex: num(s.chosenIndex, 'chosen index'),
        entry: s.entry === undefined ? null : entryFromPb(s.entry),
        pendingAccepted: num(s.pendingAccepted, 'pending ballot'),
        readerIncarnation: num(s.readerIncarnation, 'reader incarnation'),
      };
    }
    case 'catchUp':
      return { type: 'catchUp', key, knownIndex: num(kind.value.knownIndex, 'known index') };
    case 'finish':
      return { type: 'finish', key };
    case 'finished':
      return { type: 'finished', key, chosenIndex: num(kind.value.chosenIndex, 'chosen index') };
  }
  throw new PeerMessageError('peer message has no kind');
}

/**
 * The fingerprint of a membership, carried in every peer batch so replicas of different clusters
 * (or differently configured ones) refuse each other: the sorted member ids joined by commas, then
 * `/learners=` and the sorted learner ids when there are learners (e.g. `1,2,3/learners=3`).
 */
export function clusterFingerprint(members: readonly number[], learners: readonly number[] = []): string {
  const ids = [...members].sort((a, b) => a - b).join(',');
  return learners.length === 0 ? ids : `${ids}/learners=${[...learners].sort((a, b) => a - b).join(',')}`;
}
