/**
 * The Sync service: a user's own inbox, by sequence number (seed 003's "minimalist sync protocol":
 * the client sends one number, the server sends everything newer), and a Notify stream that tells
 * a connected client when there is something to pull (seed 003's long connection). Every method
 * checks that the ticket's user is the inbox's (store.ts `ownInbox`), so a user cannot read
 * another's inbox even by calling Sync directly.
 */
import { RpcError, Status, type CallContext, type PaxosQueue } from 'svrkit';
import { SyncService, type NotifyEvent, type NotifyRequest, type PokeReply, type PokeRequest, type SyncReply, type SyncRequest } from './gen/inbox.js';
import { NotifyStream, type NotifyHub } from './notify-hub.js';
import { decodeMessage, inboxQueue, ownInbox } from './store.js';

/** Messages one sync returns when the request says 0. */
export const DEFAULT_SYNC_LIMIT = 100;
/** The most messages one sync returns. */
export const MAX_SYNC_LIMIT = 1000;

/** Serves inboxes (see the module comment). */
export class Sync extends SyncService {
  constructor(
    private readonly queue: PaxosQueue,
    private readonly hub: NotifyHub,
  ) {
    super();
  }

  override async sync(request: SyncRequest, call: CallContext): Promise<SyncReply> {
    const user = ownInbox(request.userId, call);
    const last = Number(request.lastSeq);
    const limit = request.limit === 0 ? DEFAULT_SYNC_LIMIT : Math.min(request.limit, MAX_SYNC_LIMIT);
    const r = await this.queue.read(inboxQueue(user), last, { limit });
    if (last > r.lastSeq) throw new RpcError(Status.OUT_OF_RANGE, `last_seq ${last} is past the inbox's last message, ${r.lastSeq}`);
    const messages = r.items.map((it) => decodeMessage(it.value, it.seq));
    const newSeq = r.items.at(-1)?.seq ?? Math.max(last, r.trimmedUpto);
    return { messages, newSeq: BigInt(newSeq), more: r.more, trimmedUpto: BigInt(r.trimmedUpto) };
  }

  override notify(request: NotifyRequest, call: CallContext): AsyncIterable<NotifyEvent> {
    const user = ownInbox(request.userId, call);
    const known = Number(request.lastSeq);
    return new NotifyStream(this.hub, user, known, async () => (await this.queue.read(inboxQueue(user), known, { limit: 1 })).lastSeq);
  }

  override async poke(request: PokeRequest): Promise<PokeReply> {
    let connected = 0;
    for (const m of request.moved) if (this.hub.poke(m.userId, Number(m.seq))) connected++;
    return { connected };
  }
}
