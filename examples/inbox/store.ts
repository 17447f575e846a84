/**
 * Where the inbox keeps its data, on PaxosStore's data models (services/queue, services/table):
 * each user's inbox is a queue, `inbox/<user>`, whose items are `InboxMessage`s (their `seq` is
 * the queue's sequence number, not stored); each group is a row of the table `groups`, one column
 * `m/<user>` per member.
 */
import { RpcError, Status, type CallContext } from 'svrkit';
import { InboxMessage } from './gen/inbox.js';

/** The queue of `user`'s inbox. */
export function inboxQueue(user: string): string {
  return `inbox/${user}`;
}

/** The table of groups. */
export const GROUPS_TABLE = 'groups';

/** The column of member `user` in a group's row. */
export function memberColumn(user: string): string {
  return `m/${user}`;
}

/** The members of a group's row, from its columns. */
export function membersOf(columns: ReadonlyArray<{ column: string }>): string[] {
  return columns.filter((c) => c.column.startsWith('m/')).map((c) => c.column.slice(2));
}

/** What user ids, group ids and client message ids look like: 1 to 64 of `[A-Za-z0-9_.-]`. */
const ID = /^[A-Za-z0-9_.-]{1,64}$/;

/**
 * Checks an id from a request.
 * @throws RpcError INVALID_ARGUMENT naming the field when it is not 1 to 64 of `[A-Za-z0-9_.-]`.
 */
export function checkId(value: string, field: string): string {
  if (!ID.test(value)) throw new RpcError(Status.INVALID_ARGUMENT, `${field} must be 1 to 64 of [A-Za-z0-9_.-], not ${JSON.stringify(value.slice(0, 80))}`);
  return value;
}

/**
 * The user whose inbox the call may read: the ticket's. A request naming another user is refused
 * here, at the Sync service itself, whatever the caller claims in fields or metadata.
 * @throws RpcError PERMISSION_DENIED when `claimed` is not the ticket's user.
 */
export function ownInbox(claimed: string, call: CallContext): string {
  const user = call.auth?.userId;
  if (user === undefined) throw new RpcError(Status.UNAUTHENTICATED, 'a ticket is required'); // (the server checks it before)
  if (claimed !== user) throw new RpcError(Status.PERMISSION_DENIED, `the ticket is for ${user}; it cannot read the inbox of ${JSON.stringify(claimed)}`);
  return user;
}

/** Encodes a message as stored in an inbox (without its seq). */
export function encodeMessage(m: Omit<InboxMessage, 'seq'>): Uint8Array {
  return InboxMessage.encode({ ...m, seq: 0n }).finish();
}

/** Decodes a stored message, giving it its sequence number. */
export function decodeMessage(bytes: Uint8Array, seq: number): InboxMessage {
  return { ...InboxMessage.decode(bytes), seq: BigInt(seq) };
}
