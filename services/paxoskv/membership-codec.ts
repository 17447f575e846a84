/**
 * Conversion between membership configurations and changes (core/membership.ts) and their
 * protobuf form in PaxosKV's client API (`Members`, `ChangeMembers`, `Status`). Decoding a change
 * validates it: a bad one is refused with a message naming what was wrong.
 */
import { membersOf, MembershipError, type MembershipChange } from './core/membership.js';
import { MAX_MEMBER_ID, type Configuration, type MemberId } from './core/types.js';
import type { ChangeMembersRequest, Membership } from './gen/svrkit/paxoskv/paxoskv.js';

/**
 * A configuration as the client API carries it.
 * @param c - the configuration.
 * @param addressOf - where a member listens, as far as the replica knows (undefined: unknown).
 * @returns the `Membership` message, with an address for every member whose address is known.
 */
export function membershipToPb(c: Configuration, addressOf: (member: MemberId) => string | undefined): Membership {
  const addresses = membersOf(c).flatMap((member) => {
    const address = addressOf(member);
    return address === undefined ? [] : [{ member, address }];
  });
  return {
    epoch: BigInt(c.epoch),
    voters: [...c.voters],
    learners: [...c.learners],
    joint: c.next !== undefined,
    nextVoters: [...(c.next?.voters ?? [])],
    nextLearners: [...(c.next?.learners ?? [])],
    addresses,
  };
}

/**
 * A configuration from the client API (what `PaxosKVClient.members` returns).
 * @returns the configuration; `addresses` holds every address the message carries.
 */
export function membershipFromPb(m: Membership): Configuration {
  return {
    epoch: Number(m.epoch),
    voters: [...m.voters],
    learners: [...m.learners],
    ...(m.joint ? { next: { voters: [...m.nextVoters], learners: [...m.nextLearners] } } : {}),
    ...(m.addresses.length === 0 ? {} : { addresses: Object.fromEntries(m.addresses.map((a) => [a.member, a.address])) }),
  };
}

const isId = (n: number) => Number.isInteger(n) && n >= 1 && n <= MAX_MEMBER_ID;

/**
 * A change from the client API.
 * @returns the change.
 * @throws MembershipError when no change is given, a member id is out of 1..65535, or an
 *   address is given but empty.
 */
export function changeFromPb(r: ChangeMembersRequest): MembershipChange {
  const id = (n: number, what: string): MemberId => {
    if (!isId(n)) throw new MembershipError(`${what}: ${n} is not a member id (1-${MAX_MEMBER_ID})`);
    return n;
  };
  const address = (a: string) => (a === '' ? {} : { address: a });
  switch (r.change?.$case) {
    case 'add':
      return { kind: 'add', member: id(r.change.value.member, 'add'), ...(r.change.value.learner ? { learner: true } : {}), ...address(r.change.value.address) };
    case 'remove':
      return { kind: 'remove', member: id(r.change.value.member, 'remove') };
    case 'replace':
      return { kind: 'replace', remove: id(r.change.value.remove, 'replace: remove'), add: id(r.change.value.add, 'replace: add'), ...address(r.change.value.address) };
    case 'abort':
      return { kind: 'abort' };
    default:
      throw new MembershipError('no change given: add, remove, replace or abort');
  }
}

/**
 * A change as the client API carries it.
 * @throws MembershipError for a `set` change (the API takes add, remove, replace and abort).
 */
export function changeToPb(c: MembershipChange): ChangeMembersRequest {
  switch (c.kind) {
    case 'add':
      return { change: { $case: 'add', value: { member: c.member, learner: c.learner === true, address: c.address ?? '' } } };
    case 'remove':
      return { change: { $case: 'remove', value: { member: c.member } } };
    case 'replace':
      return { change: { $case: 'replace', value: { remove: c.remove, add: c.add, address: c.address ?? '' } } };
    case 'abort':
      return { change: { $case: 'abort', value: {} } };
    case 'set':
      throw new MembershipError('the client API takes add, remove, replace and abort, one member at a time');
  }
}

/**
 * Whether `change` is already in effect in the stable configuration `c` (a retried change that
 * was done: nothing to do).
 */
export function changeDone(c: Configuration, change: MembershipChange): boolean {
  if (c.next !== undefined) return false;
  const voter = (m: MemberId) => c.voters.includes(m);
  const learner = (m: MemberId) => c.learners.includes(m);
  switch (change.kind) {
    case 'add':
      return change.learner === true ? learner(change.member) : voter(change.member);
    case 'remove':
      return !voter(change.member) && !learner(change.member);
    case 'replace':
      return !voter(change.remove) && !learner(change.remove) && (voter(change.add) || learner(change.add));
    case 'abort':
      return true;
    case 'set':
      return false;
  }
}
