/**
 * The Message service: sends a message to one user, or to a group by writing it into every
 * member's inbox (fan-out on write, seed 002), and keeps the groups. The sender is the ticket's
 * user. A send carries the client's message id: each inbox push uses `<sender>/<id>` as its request
 * id, so a send retried after a failure (even one that wrote some inboxes) lands in each inbox once.
 *
 * Groups live in the table `groups` (store.ts). Their maximum size is the config center's
 * `max_group_size` in the namespace `inbox`, read for the calling user, so a gray release (e.g.
 * `users:ada`) can give some users bigger groups first.
 *
 * After writing inboxes it pokes the Sync servers (one `Poke` per server for the whole send), so
 * that Notify streams wake; a lost poke only delays a notification (clients also sync when their
 * stream comes back).
 */
import { RpcError, Status, withoutCall, type CallContext, type ConfigClient, type PaxosQueue, type PaxosTable } from 'svrkit';
import { MessageService, type AddMemberRequest, type CreateGroupRequest, type GetGroupRequest, type Group, type SendReply, type SendToGroupRequest, type SendToUserRequest, type SyncClient } from './gen/inbox.js';
import { checkId, encodeMessage, GROUPS_TABLE, inboxQueue, memberColumn, membersOf } from './store.js';

/** The largest message text (UTF-8 bytes). */
export const MAX_TEXT_BYTES = 4096;
/** `max_group_size` when the config center has none. */
export const DEFAULT_MAX_GROUP_SIZE = 100;
/** Inbox pushes one send runs at once. */
const FAN_OUT_CONCURRENCY = 32;

/** Where to poke, and with what ticket. */
export interface Pokers {
  /** A client per Sync server. */
  readonly sync: readonly SyncClient[];
  /** The Message service's own ticket (scope `inbox.poke`). */
  readonly ticket: () => string;
}

/** Sends messages and keeps groups (see the module comment). */
export class Message extends MessageService {
  constructor(
    private readonly queue: PaxosQueue,
    private readonly table: PaxosTable,
    private readonly config: ConfigClient,
    private readonly pokers: Pokers,
  ) {
    super();
  }

  override async sendToUser(request: SendToUserRequest, call: CallContext): Promise<SendReply> {
    const from = sender(call);
    const to = checkId(request.to, 'to');
    const item = this.item(from, '', request);
    await this.deliver([to], item, `${from}/${request.clientMsgId}`);
    return { recipients: 1 };
  }

  override async sendToGroup(request: SendToGroupRequest, call: CallContext): Promise<SendReply> {
    const from = sender(call);
    const group = checkId(request.group, 'group');
    const item = this.item(from, group, request);
    const members = membersOf((await this.table.getRow(GROUPS_TABLE, group)).columns);
    if (!members.includes(from)) throw new RpcError(Status.PERMISSION_DENIED, `${from} is not a member of group ${group}`);
    await this.deliver(members, item, `${from}/${request.clientMsgId}`);
    return { recipients: members.length };
  }

  override async createGroup(request: CreateGroupRequest, call: CallContext): Promise<Group> {
    const from = sender(call);
    const group = checkId(request.group, 'group');
    const members = [...new Set([from, ...request.members.map((m) => checkId(m, 'members'))])];
    const max = this.maxGroupSize(from);
    if (members.length > max) throw new RpcError(Status.FAILED_PRECONDITION, `a group of ${members.length} members is over the maximum size for ${from}, ${max}`);
    try {
      await this.table.update(GROUPS_TABLE, group, { set: members.map((m) => [memberColumn(m), new Uint8Array()] as const) }, { ifVersion: 0n });
    } catch (err) {
      if (err instanceof RpcError && err.code === Status.FAILED_PRECONDITION) throw new RpcError(Status.ALREADY_EXISTS, `group ${group} exists`);
      throw err;
    }
    return { group, members: members.sort(), maxSize: max };
  }

  override async addMember(request: AddMemberRequest, call: CallContext): Promise<Group> {
    const from = sender(call);
    const group = checkId(request.group, 'group');
    const user = checkId(request.user, 'user');
    const max = this.maxGroupSize(from);
    // A read-modify-write on the group's row version: two adds at once never both pass the limit.
    for (;;) {
      const row = await this.table.getRow(GROUPS_TABLE, group);
      const members = membersOf(row.columns);
      if (row.version === 0n) throw new RpcError(Status.NOT_FOUND, `no group ${group}`);
      if (!members.includes(from)) throw new RpcError(Status.PERMISSION_DENIED, `${from} is not a member of group ${group}`);
      if (members.includes(user)) return { group, members, maxSize: max };
      if (members.length + 1 > max) throw new RpcError(Status.FAILED_PRECONDITION, `group ${group} has ${members.length} members, the maximum size for ${from}`);
      try {
        await this.table.put(GROUPS_TABLE, group, memberColumn(user), new Uint8Array(), { ifVersion: row.version });
        return { group, members: [...members, user].sort(), maxSize: max };
      } catch (err) {
        if (!(err instanceof RpcError) || err.code !== Status.FAILED_PRECONDITION) throw err;
      }
    }
  }

  override async getGroup(request: GetGroupRequest, call: CallContext): Promise<Group> {
    const from = sender(call);
    const group = checkId(request.group, 'group');
    const row = await this.table.getRow(GROUPS_TABLE, group);
    const members = membersOf(row.columns);
    if (!members.includes(from)) throw new RpcError(Status.PERMISSION_DENIED, `${from} is not a member of group ${group}`);
    return { group, members, maxSize: this.maxGroupSize(from) };
  }

  /** The stored form of a message, after checking the request's text and id. */
  private item(from: string, group: string, request: { text: string; clientMsgId: string }): Uint8Array {
    checkId(request.clientMsgId, 'client_msg_id');
    if (Buffer.byteLength(request.text) > MAX_TEXT_BYTES) throw new RpcError(Status.INVALID_ARGUMENT, `text is over ${MAX_TEXT_BYTES} bytes`);
    return encodeMessage({ from, group, text: request.text, clientMsgId: request.clientMsgId, sentAtMs: BigInt(Date.now()) });
  }

  /** Pushes `item` into each user's inbox (once per request id), then pokes the Sync servers. */
  private async deliver(users: readonly string[], item: Uint8Array, requestId: string): Promise<void> {
    const moved: Array<{ userId: string; seq: bigint }> = [];
    let next = 0;
    const worker = async () => {
      while (next < users.length) {
        const user = users[next++]!;
        const { seq } = await this.queue.push(inboxQueue(user), item, { requestId });
        moved.push({ userId: user, seq: BigInt(seq) });
      }
    };
    await Promise.all(Array.from({ length: Math.min(FAN_OUT_CONCURRENCY, users.length) }, worker));
    // Not awaited by the send: a poke that fails only delays a notification.
    // Outside the call: the pokes outlive it, and carry the service's ticket, not the user's.
    withoutCall(() => {
      for (const s of this.pokers.sync) void s.poke({ moved }, { ticket: this.pokers.ticket(), timeoutMs: 2000 }).catch(() => undefined);
    });
  }

  /** The config center's `max_group_size` for `user` (gray rules see the user). */
  private maxGroupSize(user: string): number {
    const v = Number(this.config.get('max_group_size', { userId: user }));
    return Number.isSafeInteger(v) && v > 0 ? v : DEFAULT_MAX_GROUP_SIZE;
  }
}

/** The ticket's user. */
function sender(call: CallContext): string {
  const user = call.auth?.userId;
  if (user === undefined) throw new RpcError(Status.UNAUTHENTICATED, 'a ticket is required');
  return user;
}
