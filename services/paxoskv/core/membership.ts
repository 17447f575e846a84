/**
 * PaxosKV's membership configurations and how a change moves between them, as pure functions:
 * which members vote, which sets of acknowledgements make a quorum, and the two steps of a
 * change (issue 16). No I/O.
 *
 * A configuration is a value chosen in the cluster's own Paxos (in a system key), numbered by an
 * epoch that rises by one with every step (phxpaxos keeps its members the same way, as a
 * `SystemVariables{gid, version, members}` changed by compare-and-set on `version`). A change
 * from voters C1 to voters C2 takes two steps, Raft's joint consensus (Ongaro, "Consensus:
 * Bridging Theory and Practice", 2014, section 4.3) carried over to per-key Paxos:
 *
 *   stable(e, C1) --begin--> joint(e+1, C1 -> C2) --finish--> stable(e+2, C2)
 *
 * - In a joint configuration every decision (a promise quorum, an accept quorum, a read's
 *   quorum) needs a majority of C1 and a majority of C2.
 * - Every prepare, accept and read carries the proposer's epoch, and a replica refuses one made
 *   under an epoch it has moved past (the epoch fence): once a replica adopts e+1 it votes in no
 *   decision of epoch e, for any key.
 * - `finish` may be proposed only after a majority of C1 adopted e+1 and a majority of C2's voters
 *   has synced: read every key from a majority of C1 whose members were at e+1 exactly when they
 *   answered (list the keys, learn each key's latest chosen entry, and have the member that
 *   reported a value accepted after it decide that instance first: another voter's recovery
 *   round could miss the value). A syncing member of C1 counts its own records as one of the
 *   majority's listings (it decides its own pending instances first), so that replacing a dead
 *   member of three needs only the two live ones. Synced members tell every member (`synced`),
 *   and a synced voter of C2 proposes `finish` itself once it may ({@link finishWaitsFor}).
 * - A joint configuration may also move back to its first half ({@link abortChange}), at any time.
 *
 * Why this is safe for per-key logs that keep only their latest entry. The lemma it rests on: a
 * replica's epoch only rises (it is persisted before anything that depends on it is sent, and a
 * replica that lost its data does not vote until its rejoin sweep ran at its peers' epoch), and a
 * replica promises or accepts only for a message of exactly its current epoch. Paxos needs, for a
 * value v chosen at (key k, index i) under ballot b, that every higher ballot at (k, i) carries
 * v, or finds (k, i) decided: an acceptor that learned an index >= i answers `chosen` instead of
 * promising. By the epoch the ballot b' > b was made under:
 * - v chosen under e (a C1 majority accepted it), b' under e or e+1: both quorums contain a C1
 *   majority, and two C1 majorities meet (plain Paxos).
 * - v chosen under e+1 (joint), b' under e, e+1 or e+2: a quorum under e needs a C1 majority,
 *   one under e+1 or e+2 a C2 majority, and the joint quorum that chose v holds both.
 * - v chosen under e+2 (C2), b' under e+1 or e+2: both contain a C2 majority. b' under e needs a
 *   C1 majority still at e, which meets the majority of C1 that adopted e+1 before `finish` was
 *   proposed: one of its acceptors refuses each phase.
 * - v chosen under e, b' under e+2 (C2 alone): each synced voter's sync read a majority of C1
 *   whose members were at e+1. That majority meets the one that accepted v, and the member in
 *   both accepted v before it adopted e+1 (after, it refuses epoch e); so the sync saw v or a
 *   later index (or v pending, and had its instance decided by the member that reported it, by a
 *   joint quorum, which finds v), and left the voter at index >= i. A majority of C2 synced, and
 *   every C2 majority meets it: a synced member answers `chosen` at (k, i), so no ballot under
 *   e+2 gets a quorum of promises there.
 * Because each key keeps only its latest entry, there is no per-key α window to wait out: the
 * epoch fence closes epoch e on every key at once, and the sync carries each key's one entry.
 * Two changes never overlap: `begin` needs a stable configuration, `finish` a joint one, and both
 * are compare-and-sets of the configuration's epoch (its version); acceptors refuse values of the
 * configuration key that hold no configuration of their epoch.
 */
import { MAX_MEMBER_ID as MAX_ID, type Configuration, type MemberId } from './types.js';

export type { Configuration } from './types.js';

/** A change of members, as `changeMembers` asks for it. */
export type MembershipChange =
  /** A new member (`address`: where it listens, `host:port`), or a learner made a voter. */
  | { readonly kind: 'add'; readonly member: MemberId; readonly learner?: boolean; readonly address?: string }
  | { readonly kind: 'remove'; readonly member: MemberId }
  | { readonly kind: 'replace'; readonly remove: MemberId; readonly add: MemberId; readonly address?: string }
  /** Any new member lists at once (joint consensus takes any change; two members added, removed, or swapped). */
  | { readonly kind: 'set'; readonly voters: readonly MemberId[]; readonly learners?: readonly MemberId[]; readonly addresses?: Readonly<Record<number, string>> }
  /** Takes the change under way back to its first half ({@link abortChange}); nothing when none is under way. */
  | { readonly kind: 'abort' };

/** A configuration or change that breaks a rule; the message says which. */
export class MembershipError extends Error {
  override name = 'MembershipError';
}

const sorted = (ids: Iterable<MemberId>): MemberId[] => [...new Set(ids)].sort((a, b) => a - b);
function addressesFrom(v: unknown): Record<number, string> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new MembershipError('addresses is not an object of member id to host:port');
  const out: Record<number, string> = {};
  for (const [id, address] of Object.entries(v)) {
    if (!/^\d+$/.test(id)) throw new MembershipError(`addresses names ${JSON.stringify(id)}, not a member id`);
    checkAddress(`member ${id}'s address`, address);
    out[Number(id)] = address as string;
  }
  return out;
}

const sameIds = (a: readonly MemberId[], b: readonly MemberId[]) => a.length === b.length && a.every((x, i) => x === b[i]);
const sameHalf = (a: { voters: readonly MemberId[]; learners: readonly MemberId[] }, b: { voters: readonly MemberId[]; learners: readonly MemberId[] }) =>
  sameIds(a.voters, b.voters) && sameIds(a.learners, b.learners);

function checkIds(what: string, ids: readonly MemberId[]): void {
  for (const id of ids) {
    if (!Number.isInteger(id) || id < 1 || id > MAX_ID) throw new MembershipError(`${what}: ${id} is not a member id (1-${MAX_ID})`);
  }
  if (new Set(ids).size !== ids.length) throw new MembershipError(`${what}: a member id appears twice in [${ids.join(',')}]`);
}

/**
 * The first configuration of a cluster (epoch 1).
 * @param voters - the members that vote.
 * @param learners - the members that only learn (default none).
 * @returns the configuration, member lists sorted.
 * @throws MembershipError for a bad or repeated id, a member both voter and learner, or no voter.
 */
export function initialConfiguration(voters: readonly MemberId[], learners: readonly MemberId[] = []): Configuration {
  checkIds('configuration voters', voters);
  checkIds('configuration learners', learners);
  const c: Configuration = { epoch: 1, voters: sorted(voters), learners: sorted(learners) };
  validateConfiguration(c);
  return c;
}

/**
 * Checks a configuration's rules (as decoded from storage or a peer).
 * @throws MembershipError naming the rule broken: an epoch that is not a positive integer, a bad
 *   or repeated member id, a member in both lists, no voter (in either half of a joint one).
 */
export function validateConfiguration(c: Configuration): void {
  if (!Number.isSafeInteger(c.epoch) || c.epoch < 1) throw new MembershipError(`epoch ${c.epoch} is not a positive integer`);
  const halves = c.next === undefined ? [c] : [c, c.next];
  for (const [i, h] of halves.entries()) {
    const what = i === 0 ? 'configuration' : 'next configuration';
    checkIds(`${what} voters`, h.voters);
    checkIds(`${what} learners`, h.learners);
    if (h.voters.length === 0) throw new MembershipError(`${what} has no voter`);
    for (const l of h.learners) if (h.voters.includes(l)) throw new MembershipError(`${what}: member ${l} is both a voter and a learner`);
  }
  const members = membersOf(c);
  for (const [id, address] of Object.entries(c.addresses ?? {})) {
    if (!members.includes(Number(id))) throw new MembershipError(`an address is given for ${id}, which is not a member`);
    checkAddress(`member ${id}'s address`, address);
  }
}

function checkAddress(what: string, address: unknown): void {
  if (typeof address !== 'string' || !/^(\[[0-9a-fA-F:.]+\]|[^\s:/]+):\d{1,5}$/.test(address)) throw new MembershipError(`${what} is not host:port: ${JSON.stringify(address)}`);
}

/** `addresses` without the members `c` does not name (none: undefined). */
function addressesOf(c: Configuration, addresses: Readonly<Record<number, string>> | undefined): Readonly<Record<number, string>> | undefined {
  const members = new Set(membersOf(c));
  const kept = Object.entries(addresses ?? {}).filter(([id]) => members.has(Number(id)));
  return kept.length === 0 ? undefined : Object.fromEntries(kept);
}

/** A set of members that answered: a `Set` of ids, or a `Map` keyed by id. */
export interface MemberSet {
  has(member: MemberId): boolean;
}

/** Whether `acks` holds a majority of `voters`. */
function majorityOf(voters: readonly MemberId[], acks: MemberSet): boolean {
  let n = 0;
  for (const v of voters) if (acks.has(v)) n++;
  return 2 * n > voters.length;
}

/**
 * Whether the members in `acks` make a quorum of `c`: a majority of its voters, and in a joint
 * configuration a majority of the next voters as well. Members outside the voters do not count.
 * @param c - the configuration; `acks` - the members that said yes (a Set, or a Map by member).
 * @returns true for a quorum.
 */
export function isQuorum(c: Configuration, acks: MemberSet): boolean {
  return majorityOf(c.voters, acks) && (c.next === undefined || majorityOf(c.next.voters, acks));
}

/**
 * Whether a quorum of `c` can still be reached when the members in `refused` will never say yes
 * (a proposer gives its ballot up once this is false).
 * @param c - the configuration; `refused` - the members that refused.
 * @returns false once no quorum is left.
 */
export function quorumStillPossible(c: Configuration, refused: MemberSet): boolean {
  const possible = (voters: readonly MemberId[]) => 2 * voters.filter((v) => !refused.has(v)).length > voters.length;
  return possible(c.voters) && (c.next === undefined || possible(c.next.voters));
}

/** @returns every member that votes in `c` (both halves of a joint one), ascending. */
export function votersOf(c: Configuration): MemberId[] {
  return c.next === undefined ? [...c.voters] : sorted([...c.voters, ...c.next.voters]);
}

/** @returns every member of `c`, voters and learners of both halves, ascending (chosen entries are announced to them). */
export function membersOf(c: Configuration): MemberId[] {
  return sorted([...c.voters, ...c.learners, ...(c.next === undefined ? [] : [...c.next.voters, ...c.next.learners])]);
}

/**
 * What member `id` is in `c`:
 * - `voter`: it votes (in a joint configuration: in either half);
 * - `learner`: it only learns;
 * - `removed`: it is not a member (a replica that finds itself removed stops serving).
 */
export function roleOf(c: Configuration, id: MemberId): 'voter' | 'learner' | 'removed' {
  if (votersOf(c).includes(id)) return 'voter';
  if (membersOf(c).includes(id)) return 'learner';
  return 'removed';
}

/**
 * The first step of a change: the joint configuration from `current` (stable) to the members the
 * change leaves; or, when the voters stay the same (learners added, removed or replaced), the
 * stable configuration they make, in one step. Adding a voter or replacing one makes the new member a voter of the next half;
 * it starts empty and syncs before `finish` (see the module comment). Adding (as a voter) a
 * member that is a learner makes it a voter.
 * @param current - the active configuration; must be stable (no change under way).
 * @param change - what to change.
 * @returns the joint configuration, at `current.epoch + 1`.
 * @throws MembershipError when a change is already under way, the member to add is already one,
 *   the member to remove is not one, or the change would leave no voter.
 */
export function beginChange(current: Configuration, change: MembershipChange): Configuration {
  if (current.next !== undefined) {
    throw new MembershipError(`a change is under way (${describeConfiguration(current)}): finish it before another`);
  }
  const members = membersOf(current);
  let voters = [...current.voters];
  let learners = [...current.learners];
  const addresses: Record<number, string> = { ...current.addresses };
  const addressFor = (id: MemberId, address: string | undefined) => {
    if (address === undefined) return;
    checkAddress(`member ${id}'s address`, address);
    addresses[id] = address;
  };
  const add = (id: MemberId, learner: boolean) => {
    checkIds('add', [id]);
    if (!learner && learners.includes(id)) {
      // A learner made a voter (it caught up as a learner).
      learners = learners.filter((l) => l !== id);
      voters.push(id);
      return;
    }
    if (members.includes(id)) throw new MembershipError(`member ${id} is already in the cluster (${describeConfiguration(current)})`);
    if (learner) learners.push(id);
    else voters.push(id);
  };
  const remove = (id: MemberId) => {
    if (!members.includes(id)) throw new MembershipError(`member ${id} is not in the cluster (${describeConfiguration(current)})`);
    voters = voters.filter((v) => v !== id);
    learners = learners.filter((l) => l !== id);
  };
  switch (change.kind) {
    case 'add':
      add(change.member, change.learner === true);
      addressFor(change.member, change.address);
      break;
    case 'remove':
      remove(change.member);
      break;
    case 'replace':
      if (change.remove === change.add) throw new MembershipError(`replace: member ${change.add} would replace itself`);
      remove(change.remove);
      add(change.add, current.learners.includes(change.remove));
      addressFor(change.add, change.address);
      break;
    case 'abort':
      throw new MembershipError(`no change is under way (${describeConfiguration(current)}): nothing to take back`);
    case 'set':
      checkIds('voters', change.voters);
      checkIds('learners', change.learners ?? []);
      voters = [...change.voters];
      learners = [...(change.learners ?? [])];
      for (const [id, address] of Object.entries(change.addresses ?? {})) addressFor(Number(id), address);
      if (sameIds(sorted(voters), current.voters) && sameIds(sorted(learners), current.learners)) {
        throw new MembershipError(`the change changes nothing (${describeConfiguration(current)})`);
      }
      break;
  }
  if (voters.length === 0) throw new MembershipError(`the change would leave no voter`);
  const next = { voters: sorted(voters), learners: sorted(learners) };
  // Learners count toward no quorum: a change of learners alone needs no joint step.
  const joint: Configuration = sameIds(next.voters, current.voters)
    ? { epoch: current.epoch + 1, voters: next.voters, learners: next.learners }
    : { epoch: current.epoch + 1, voters: current.voters, learners: current.learners, next };
  const kept = addressesOf(joint, addresses);
  const result = kept === undefined ? joint : { ...joint, addresses: kept };
  validateConfiguration(result);
  return result;
}

/**
 * The second step of a change: the stable configuration a joint one moves to.
 * @param joint - the active configuration; must be joint.
 * @returns `joint.next` as a stable configuration at `joint.epoch + 1`.
 * @throws MembershipError when `joint` is stable (no change under way).
 */
export function finishChange(joint: Configuration): Configuration {
  if (joint.next === undefined) throw new MembershipError(`no change is under way (epoch ${joint.epoch} is stable)`);
  return withAddresses({ epoch: joint.epoch + 1, voters: joint.next.voters, learners: joint.next.learners }, joint.addresses);
}

/** `c` with the addresses of its members among `addresses`. */
function withAddresses(c: Configuration, addresses: Readonly<Record<number, string>> | undefined): Configuration {
  const kept = addressesOf(c, addresses);
  return kept === undefined ? c : { ...c, addresses: kept };
}

/**
 * Who syncs before `finish` may be proposed: the voters of the next half. Safety needs a synced
 * majority of them (see the module comment), which {@link syncedEnough} tells. The joiners start
 * empty; `finish` also waits for them ({@link finishWaitsFor}), so that a new member counts toward
 * the new configuration's quorums only once it holds every key. Under the joint configuration it
 * already answers, but an acceptor that lacks a key's latest entry answers `behind` and catches up
 * instead of voting, and every joint quorum holds a majority of the old voters anyway.
 * @returns the next half's voters, and which of them are new (they start empty).
 * @throws MembershipError when `joint` is stable.
 */
export function syncSet(joint: Configuration): { sync: MemberId[]; joiners: MemberId[] } {
  if (joint.next === undefined) throw new MembershipError(`no change is under way (epoch ${joint.epoch} is stable)`);
  const old = new Set(membersOf({ epoch: joint.epoch, voters: joint.voters, learners: joint.learners }));
  const sync = [...joint.next.voters];
  return { sync, joiners: sync.filter((m) => !old.has(m)) };
}

/**
 * Whether enough of the next half has synced for `finish`: a majority of its voters.
 * @param joint - a joint configuration.
 * @param synced - the members that reported a finished sync for `joint.epoch`.
 * @throws MembershipError when `joint` is stable.
 */
export function syncedEnough(joint: Configuration, synced: MemberSet): boolean {
  if (joint.next === undefined) throw new MembershipError(`no change is under way (epoch ${joint.epoch} is stable)`);
  return majorityOf(joint.next.voters, synced);
}

/** @returns a one-line description: `epoch 3: voters [1,2,4]` or `epoch 2: voters [1,2,3] -> [1,2,4]`. */
export function describeConfiguration(c: Configuration): string {
  const half = (h: { voters: readonly MemberId[]; learners: readonly MemberId[] }) =>
    `[${h.voters.join(',')}]${h.learners.length === 0 ? '' : ` learners [${h.learners.join(',')}]`}`;
  return `epoch ${c.epoch}: voters ${half(c)}${c.next === undefined ? '' : ` -> ${half(c.next)}`}`;
}

/**
 * Encodes a configuration as the configuration key's value: UTF-8 JSON
 * `{"epoch":2,"voters":[1,2,3],"learners":[],"next":{...}}`.
 * @returns the bytes.
 */
export function encodeConfiguration(c: Configuration): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(configurationData(c)));
}

/**
 * A configuration as plain data (fresh arrays, no `next` when stable): what the configuration
 * key's JSON and the data dir's meta record hold.
 */
export function configurationData(c: Configuration): {
  epoch: number;
  voters: MemberId[];
  learners: MemberId[];
  next?: { voters: MemberId[]; learners: MemberId[] };
  addresses?: Record<number, string>;
} {
  return {
    epoch: c.epoch,
    voters: [...c.voters],
    learners: [...c.learners],
    ...(c.next === undefined ? {} : { next: { voters: [...c.next.voters], learners: [...c.next.learners] } }),
    ...(c.addresses === undefined ? {} : { addresses: { ...c.addresses } }),
  };
}

/**
 * Decodes the configuration key's value.
 * @returns the configuration, its member lists sorted.
 * @throws MembershipError when the bytes are not such JSON or break a rule of
 *   {@link validateConfiguration}.
 */
export function decodeConfiguration(bytes: Uint8Array): Configuration {
  let o: unknown;
  try {
    o = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (err) {
    throw new MembershipError(`a configuration is UTF-8 JSON: ${(err as Error).message}`);
  }
  return configurationFrom(o);
}

/**
 * Reads a configuration from plain data ({@link configurationData}'s shape).
 * @returns the configuration, its member lists sorted.
 * @throws MembershipError when `o` has not that shape or breaks a rule of {@link validateConfiguration}.
 */
export function configurationFrom(o: unknown): Configuration {
  const ids = (v: unknown, what: string): MemberId[] => {
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'number')) throw new MembershipError(`${what} is not a list of member ids`);
    return [...(v as number[])].sort((a, b) => a - b);
  };
  if (o === null || typeof o !== 'object') throw new MembershipError('a configuration is a JSON object');
  const r = o as { epoch?: unknown; voters?: unknown; learners?: unknown; next?: { voters?: unknown; learners?: unknown }; addresses?: unknown };
  if (typeof r.epoch !== 'number') throw new MembershipError('a configuration has a numeric epoch');
  const c: Configuration = {
    epoch: r.epoch,
    voters: ids(r.voters, 'voters'),
    learners: ids(r.learners ?? [], 'learners'),
    ...(r.next === undefined || r.next === null ? {} : { next: { voters: ids(r.next.voters, 'next voters'), learners: ids(r.next.learners ?? [], 'next learners') } }),
    ...(r.addresses === undefined || r.addresses === null ? {} : { addresses: addressesFrom(r.addresses) }),
  };
  validateConfiguration(c);
  return c;
}


/**
 * The way back from a joint configuration: the stable configuration of its first half, at
 * `joint.epoch + 1` (for a change whose new member never came up). Safe at any time: every
 * decision under the joint configuration had a majority of the first half, and so does every
 * decision after it.
 * @throws MembershipError when `joint` is stable.
 */
export function abortChange(joint: Configuration): Configuration {
  if (joint.next === undefined) throw new MembershipError(`no change is under way (epoch ${joint.epoch} is stable)`);
  return withAddresses({ epoch: joint.epoch + 1, voters: joint.voters, learners: joint.learners }, joint.addresses);
}

/**
 * Checks that `next` may follow `current` in the configuration key (a proposer checks it before it
 * writes; acceptors only check that a value holds a configuration of its epoch):
 * - from a stable configuration: the same voters (an epoch step, or learners added or removed),
 *   or a joint configuration whose first half is `current` (`begin`);
 * - from a joint configuration: its next half (`finish`, which the proposer also holds back until
 *   {@link finishReady}) or its first half ({@link abortChange}).
 * Always the next epoch.
 * @throws MembershipError saying what does not follow.
 */
export function checkTransition(current: Configuration, next: Configuration): void {
  if (next.epoch !== current.epoch + 1) throw new MembershipError(`the next configuration's epoch is ${current.epoch + 1}, not ${next.epoch}`);
  if (current.next === undefined) {
    if (next.next === undefined) {
      if (!sameIds(current.voters, next.voters)) {
        throw new MembershipError(`${describeConfiguration(next)} changes the voters of ${describeConfiguration(current)} in one step: a change of voters goes through a joint configuration`);
      }
      return;
    }
    if (!sameHalf(current, next)) {
      throw new MembershipError(`${describeConfiguration(next)} does not start from ${describeConfiguration(current)}: a joint configuration's first half is the current one`);
    }
    return;
  }
  if (next.next !== undefined) throw new MembershipError(`a change is under way (${describeConfiguration(current)}): finish it before another`);
  if (!sameHalf(next, current.next) && !sameHalf(next, current)) {
    throw new MembershipError(`${describeConfiguration(next)} is neither half of ${describeConfiguration(current)}: a joint configuration moves to its next half, or back to its first`);
  }
}

/**
 * Whether a joint configuration may be finished: a majority of the next voters synced
 * ({@link syncedEnough}, which safety needs), and every joiner among them too (a new member
 * counts toward the new configuration's quorums only once it holds every key).
 * @param joint - a joint configuration; `synced` - the members that reported a finished sync for its epoch.
 * @returns undefined when it may, otherwise what it waits for.
 */
export function finishWaitsFor(joint: Configuration, synced: MemberSet): string | undefined {
  const { sync, joiners } = syncSet(joint);
  const missing = joiners.filter((j) => !synced.has(j));
  if (syncedEnough(joint, synced) && missing.length === 0) return undefined;
  const done = sync.filter((m) => synced.has(m));
  return `the next voters [${sync.join(',')}] are syncing: [${done.join(',')}] done${missing.length === 0 ? '' : `, new member(s) [${missing.join(',')}] not yet`}`;
}
