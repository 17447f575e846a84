/**
 * A PaxosKV replica as a running process: the pure core (core/replica.ts) driven by a thin
 * driver that adds durable storage (lmdb, group commit), the network (svrkit RPC between
 * replicas) and clocks, served as two svrkit services: `svrkit.paxoskv.PaxosKV` for clients and
 * `svrkit.paxoskv.PaxosPeer` for the other replicas.
 *
 * The driver's one rule: nothing a core step produced (a message, a client reply) leaves before
 * the records that step persisted, and every earlier step's, are durable.
 */
import { randomUUID } from 'node:crypto';
import { Channel, RpcError, Server, Status, withoutCall, type CallContext } from '../../framework/index.js';
import { clusterFingerprint, messageFromPb, messageToPb, PeerMessageError } from './codec.js';
import { Replica } from './core/replica.js';
import type { ClientOp, ClientResult, MemberId, Output, PeerMessage } from './core/types.js';
import {
  PaxosKVService,
  PaxosPeerClient,
  PaxosPeerService,
  type CompareAndSetRequest,
  type DeleteRequest,
  type GetReply,
  type GetRequest,
  type PeerBatch,
  type PutRequest,
  type StatusReply,
  type StatusRequest,
  type WriteReply,
} from './gen/svrkit/paxoskv/paxoskv.js';
import { KeyStore } from './storage.js';

/** Largest value a key may hold (bytes). */
export const MAX_VALUE_BYTES = 1024 * 1024;
/** Longest key (bytes of UTF-8). */
export const MAX_KEY_BYTES = 1024;

/** How to run a replica. */
export interface ReplicaOptions {
  /** This replica's member id. */
  id: MemberId;
  /** Every member's address `host:port`, this one's included (it listens there). */
  members: ReadonlyMap<MemberId, string>;
  /** Where this replica keeps its records. */
  dataDir: string;
  /** Learn chosen values only: no votes, no client requests. */
  learnerOnly?: boolean;
  /** Interface to bind; default: the host of this member's address. */
  bindHost?: string;
  /** Phase timeout of the core (ms). Default 200. */
  phaseTimeoutMs?: number;
  /** Called when storage fails; the replica cannot go on safely. Default: log and exit(1). */
  onFatal?: (error: Error) => void;
}

/** A running replica. */
export class PaxosKVReplica {
  private readonly core: Replica;
  private readonly server: Server;
  private readonly peers = new Map<MemberId, PaxosPeerClient>();
  private readonly outbox = new Map<MemberId, PeerMessage[]>();
  private readonly pending = new Map<number, (r: ClientResult) => void>();
  private readonly fingerprint: string;
  private lastWrite: Promise<void> = Promise.resolve();
  private flushScheduled = false;
  private tickTimer: NodeJS.Timeout | undefined;
  private tickAt = Infinity;
  private nextRef = 1;
  private closed = false;

  private constructor(
    readonly options: ReplicaOptions,
    private readonly store: KeyStore,
  ) {
    const members = [...options.members.keys()].sort((a, b) => a - b);
    this.fingerprint = clusterFingerprint(members);
    this.core = new Replica(
      { id: options.id, members, learnerOnly: options.learnerOnly, phaseTimeoutMs: options.phaseTimeoutMs },
      store,
      Math.random,
    );
    this.server = new Server();
    this.server.addService(new ClientApi(this));
    this.server.addService(new PeerApi(this));
    for (const [id, address] of options.members) {
      // Paxos retries by its own rules (new rounds, catch-up): no channel-level retries.
      if (id !== options.id) this.peers.set(id, new PaxosPeerClient(new Channel(address, { connectTimeoutMs: 1000, backoff: { initialMs: 50, maxMs: 1000 }, retryPolicy: false })));
    }
  }

  /**
   * Opens the data dir and starts serving.
   * @throws DataDirError when the data dir is corrupt or belongs to another member or cluster;
   *   Error when the membership is invalid or the address cannot be bound.
   */
  static async start(options: ReplicaOptions): Promise<PaxosKVReplica> {
    const address = options.members.get(options.id);
    if (address === undefined) throw new Error(`member ${options.id} is not in the peer list`);
    const members = [...options.members.keys()].sort((a, b) => a - b);
    const store = await KeyStore.open(options.dataDir, { memberId: options.id, members });
    let replica: PaxosKVReplica;
    try {
      replica = new PaxosKVReplica(options, store);
      const port = Number(address.slice(address.lastIndexOf(':') + 1));
      const host = options.bindHost ?? address.slice(0, address.lastIndexOf(':')).replace(/^\[|\]$/g, '');
      await replica.server.listen(port, host);
    } catch (err) {
      await store.close();
      throw err;
    }
    return replica;
  }

  /** The address this replica serves on. */
  get address(): string {
    return this.server.address;
  }

  /** This replica's view of itself. */
  status(): StatusReply {
    return {
      memberId: this.options.id,
      members: [...this.options.members.keys()].sort((a, b) => a - b),
      learnerOnly: this.options.learnerOnly === true,
      keys: BigInt(this.store.keyCount),
      laggingKeys: BigInt(this.core.laggingCount),
      pendingOperations: BigInt(this.core.pendingOperations),
    };
  }

  /** Stops serving and closes the store (pending writes are completed first). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.tickTimer);
    await this.server.close({ graceMs: 1000 });
    for (const p of this.peers.values()) p.close();
    await this.lastWrite.catch(() => {});
    await this.store.close();
  }

  // ---------------------------------------------------------------------------------------------
  // Inputs

  /**
   * @internal A client operation; resolves with its result.
   * @param deadline - the caller's deadline (epoch ms): past it the core starts no new decision.
   */
  request(key: string, op: ClientOp, deadline: number): Promise<ClientResult> {
    const ref = this.nextRef++;
    return new Promise<ClientResult>((resolve) => {
      this.pending.set(ref, resolve);
      this.apply(this.core.request(ref, key, op, Date.now(), deadline));
    });
  }

  /**
   * @internal A batch from a peer. Messages the core produced for that peer come back as the
   * result, once durable; the rest go out through the outbox.
   * @throws RpcError FAILED_PRECONDITION for a batch from another cluster or a non-member,
   *   INVALID_ARGUMENT for a malformed message (nothing of the batch is processed then).
   */
  async deliver(batch: PeerBatch): Promise<PeerBatch> {
    if (batch.cluster !== this.fingerprint) {
      throw new RpcError(Status.FAILED_PRECONDITION, `peer batch from cluster [${batch.cluster}], this replica is in [${this.fingerprint}]`);
    }
    const from = batch.from;
    if (from === this.options.id || !this.options.members.has(from)) {
      throw new RpcError(Status.FAILED_PRECONDITION, `peer batch from ${from}, which is not another member of [${this.fingerprint}]`);
    }
    let messages: PeerMessage[];
    try {
      messages = batch.messages.map(messageFromPb);
    } catch (err) {
      if (err instanceof PeerMessageError) throw new RpcError(Status.INVALID_ARGUMENT, `malformed peer message: ${err.message}`);
      throw err;
    }
    const back: PeerMessage[] = [];
    for (const m of messages) this.apply(this.core.receive(from, m, Date.now()), from, back);
    await this.lastWrite;
    return { from: this.options.id, cluster: this.fingerprint, messages: back.map(messageToPb) };
  }

  // ---------------------------------------------------------------------------------------------
  // Outputs

  /**
   * Persists a step's records (group-committed with others in flight), then, once they and all
   * earlier ones are durable, sends its messages and delivers its replies. Messages for
   * `replyTo` go into `replySink` (the Deliver response) instead of the outbox.
   */
  private apply(out: Output, replyTo?: MemberId, replySink?: PeerMessage[]): void {
    if (out.persist.size > 0) this.lastWrite = this.store.write(out.persist);
    if (replySink !== undefined) {
      for (const s of out.send) if (s.to === replyTo) replySink.push(s.message);
    }
    const release = (): void => {
      for (const s of out.send) if (s.to !== replyTo || replySink === undefined) this.enqueue(s.to, s.message);
      for (const r of out.replies) {
        const resolve = this.pending.get(r.requestRef);
        this.pending.delete(r.requestRef);
        resolve?.(r.result);
      }
    };
    if (out.persist.size === 0 && out.send.length === 0 && out.replies.length === 0) {
      this.scheduleTick();
      return;
    }
    this.lastWrite.then(release, (err: unknown) => this.fatal(err as Error));
    this.scheduleTick();
  }

  private enqueue(to: MemberId, message: PeerMessage): void {
    if (this.closed) return;
    let q = this.outbox.get(to);
    if (q === undefined) this.outbox.set(to, (q = []));
    q.push(message);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      // The replica's own traffic must not inherit the deadline or cancellation of whichever
      // client call happened to produce it.
      withoutCall(() => setImmediate(() => this.flushOutbox()));
    }
  }

  private flushOutbox(): void {
    this.flushScheduled = false;
    for (const [to, messages] of this.outbox) {
      this.outbox.delete(to);
      const client = this.peers.get(to);
      if (client === undefined) continue;
      const batch: PeerBatch = { from: this.options.id, cluster: this.fingerprint, messages: messages.map(messageToPb) };
      client.deliver(batch, { timeoutMs: 2000 }).then(
        (reply) => {
          if (this.closed) return;
          let replies: PeerMessage[];
          try {
            replies = reply.messages.map(messageFromPb);
          } catch {
            return; // a malformed reply is dropped, like a lost message
          }
          for (const m of replies) this.apply(this.core.receive(to, m, Date.now()));
        },
        () => {
          // Lost: Paxos retries by its own timeouts.
        },
      );
    }
  }

  private scheduleTick(): void {
    if (this.closed) return;
    const wake = this.core.nextWake();
    if (wake === undefined || wake >= this.tickAt) return;
    clearTimeout(this.tickTimer);
    this.tickAt = wake;
    this.tickTimer = withoutCall(() =>
      setTimeout(() => {
        this.tickTimer = undefined;
        this.tickAt = Infinity;
        this.apply(this.core.tick(Date.now()));
      }, Math.max(0, wake - Date.now())),
    );
  }

  private fatal(err: Error): void {
    if (this.options.onFatal !== undefined) {
      this.options.onFatal(err);
      return;
    }
    process.stderr.write(`paxoskv replica ${this.options.id}: storage failed, stopping: ${err.stack ?? err.message}\n`);
    process.exit(1);
  }
}

function checkKey(key: string): void {
  if (key.length === 0) throw new RpcError(Status.INVALID_ARGUMENT, 'key must not be empty');
  if (Buffer.byteLength(key) > MAX_KEY_BYTES) throw new RpcError(Status.INVALID_ARGUMENT, `key is longer than ${MAX_KEY_BYTES} bytes`);
}

function checkValue(value: Uint8Array): void {
  if (value.length > MAX_VALUE_BYTES) {
    throw new RpcError(Status.INVALID_ARGUMENT, `value of ${value.length} bytes exceeds the maximum ${MAX_VALUE_BYTES}`);
  }
}

function writeReply(r: ClientResult): WriteReply {
  if (r.ok && r.kind === 'write') return { version: BigInt(r.version) };
  throw toRpcError(r);
}

function toRpcError(r: ClientResult): RpcError {
  if (r.ok) return new RpcError(Status.INTERNAL, 'unexpected result kind');
  const md: Record<string, string> = r.version === undefined ? {} : { 'x-version': String(r.version) };
  return new RpcError(Status[r.status], r.message, md);
}

/** The client API, backed by the replica. */
class ClientApi extends PaxosKVService {
  constructor(private readonly replica: PaxosKVReplica) {
    super();
  }

  override async get(request: GetRequest, call: CallContext): Promise<GetReply> {
    checkKey(request.key);
    const r = await this.replica.request(request.key, { kind: 'get' }, call.deadline);
    if (!r.ok || r.kind !== 'get') throw toRpcError(r);
    return { found: r.value !== null, value: r.value ?? new Uint8Array(0), version: BigInt(r.version) };
  }

  override async put(request: PutRequest, call: CallContext): Promise<WriteReply> {
    checkKey(request.key);
    checkValue(request.value);
    return writeReply(await this.replica.request(request.key, { kind: 'put', value: request.value, requestId: request.requestId || randomUUID() }, call.deadline));
  }

  override async delete(request: DeleteRequest, call: CallContext): Promise<WriteReply> {
    checkKey(request.key);
    return writeReply(await this.replica.request(request.key, { kind: 'delete', requestId: request.requestId || randomUUID() }, call.deadline));
  }

  override async compareAndSet(request: CompareAndSetRequest, call: CallContext): Promise<WriteReply> {
    checkKey(request.key);
    checkValue(request.value);
    if (request.expectedVersion > BigInt(Number.MAX_SAFE_INTEGER)) throw new RpcError(Status.INVALID_ARGUMENT, 'expected version out of range');
    return writeReply(
      await this.replica.request(request.key, {
        kind: 'cas',
        expectedVersion: Number(request.expectedVersion),
        value: request.value,
        requestId: request.requestId || randomUUID(),
      }, call.deadline),
    );
  }

  override async status(_request: StatusRequest): Promise<StatusReply> {
    return this.replica.status();
  }
}

/** The replica-to-replica protocol. */
class PeerApi extends PaxosPeerService {
  constructor(private readonly replica: PaxosKVReplica) {
    super();
  }

  override async deliver(request: PeerBatch): Promise<PeerBatch> {
    return this.replica.deliver(request);
  }
}
