/**
 * The PaxosKV client: linearizable get, put, delete and compare-and-set against any replica of a
 * cluster, with failover. A call sticks to one replica; when that replica answers UNAVAILABLE
 * (unreachable, closing, rejoining or a learner), refuses the call unprocessed for overload
 * (RESOURCE_EXHAUSTED, not processed: FastReject), or does not answer within the attempt
 * timeout, the call moves on, to a replica it has not tried yet when there is one, until the
 * call's own deadline. Every replica shedding at once is the only way overload reaches the caller.
 *
 * Writes are exactly-once through a client session (after Raft's client sessions, Ongaro 2014,
 * section 6.3): each client has a random session id and numbers its writes; every attempt of a
 * write carries the same (session, seq) and the same expiry, so a retried write that was already
 * chosen returns its original version instead of being applied again. Each write also tells the
 * replicas which earlier writes the client finished (`ackedBelow`), so a key forgets them at once.
 * Times come from a monotonic clock (`performance.timeOrigin + performance.now()`), so a wall-clock
 * step on the client cannot move them back.
 *
 * Many groups (routing.ts): a cluster may route keys over many Paxos groups. The client starts
 * from the replicas it was given (any group's) and, the first time a replica answers a key it does
 * not own (WRONG_GROUP), takes the routing table from that answer, caches it, and retries at the
 * key's group within the same deadline; from then on it sends each key to its group. A table of a
 * newer epoch replaces the cached one; when every replica of a group fails, the client asks the
 * others for a newer table. Lists ask every group and merge; a cluster of one group costs nothing.
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Channel, currentCall, RpcError, Status, statusName, type CallOptions, type ChannelOptions } from '../../framework/index.js';
import { PaxosKVClient as PaxosKVStub, type DigestReply, type StatusReply, type WriteId } from './gen/svrkit/paxoskv/paxoskv.js';
import { kvErrors } from './errors.js';
import { describeConfiguration, type Configuration, type MembershipChange } from './core/membership.js';
import { changeToPb, membershipFromPb } from './membership-codec.js';
import { isSystemKey } from './core/types.js';
import { decodeRoutingTable, encodeRoutingTable, GROUP_METADATA, ROUTING_KEY, ROUTING_METADATA, RoutingRing, SYSTEM_GROUP, withGroupReplicas, type RoutingTable } from './routing.js';

/** Longest time one write stays retryable (ms): a write's attempts stop this long after it began. */
export const MAX_WRITE_RETRY_MS = 60_000;

/** How to reach a cluster. */
export interface PaxosKVClientOptions {
  /** Replica addresses `host:port` (any order; the first is tried first). */
  peers: readonly string[];
  /** Time one replica gets before the call moves to the next (ms). Default 1000. */
  attemptTimeoutMs?: number;
  /** Deadline of calls that set none, and are not made inside a call that has one (ms). Default 5000. */
  defaultTimeoutMs?: number;
  /** Options of the channel to each replica. */
  channel?: ChannelOptions;
  /**
   * A cluster of many groups: a routing table to start from (one cached earlier). Default none:
   * the client learns the table from the first replica that answers a key of another group.
   */
  routing?: RoutingTable;
}

/** Options of a call for one group of a cluster of many (membership). */
export interface GroupCallOptions extends CallOptions {
  /** The group (routing.ts); default: the group of the replicas the client was given. */
  group?: number;
}

/** The replicas of one group the client calls, and the one it sticks to. */
interface Replicas {
  /** The group (0: the replicas the client was given, group unknown). */
  readonly group: number;
  readonly addresses: readonly string[];
  readonly stubs: readonly PaxosKVStub[];
  current: number;
}

/** One event of {@link PaxosKVClient.watch}. */
export interface KvWatchEvent {
  /** The key's version (0n: never written). */
  version: bigint;
  /** The value, or null when the key is absent (deleted, or never written). */
  value: Uint8Array | null;
  /**
   * Versions between the previous event (or `fromVersion`) and this one were not delivered: the
   * replica never held them (it keeps only a key's latest chosen entry), or they came while the
   * consumer was slow. The value is then the latest, not each change.
   */
  gap: boolean;
}

/** One key of {@link PaxosKVClient.list}. */
export interface KvListItem {
  /** The key. */
  key: string;
  /** The key's version. */
  version: bigint;
  /** Its value (a deleted key is not listed). */
  value: Uint8Array;
}

/** A value with its version. */
export interface VersionedValue {
  /** The bytes stored. */
  value: Uint8Array;
  /** The key's version: the index of its latest chosen write. */
  version: bigint;
}

/**
 * A PaxosKV client; see the module comment.
 *
 * ```ts
 * const kv = new PaxosKVClient({ peers: ['127.0.0.1:7101', '127.0.0.1:7102', '127.0.0.1:7103'] });
 * const v1 = await kv.put('greeting', new TextEncoder().encode('hello'));   // 1n
 * const got = await kv.get('greeting');                                      // { value, version: 1n }
 * await kv.compareAndSet('greeting', v1, new TextEncoder().encode('hi'));    // 2n
 * ```
 */
export class PaxosKVClient {
  /** Channels by address, shared by the replicas given and the groups. */
  private readonly channels = new Map<string, { channel: Channel; stub: PaxosKVStub }>();
  private readonly channelOptions: ChannelOptions;
  /** The replicas given to the constructor. */
  private readonly seed: Replicas;
  /** The cached routing table and its ring (many groups), and each group's replicas. */
  private table: RoutingTable | undefined;
  private ring: RoutingRing | undefined;
  private readonly groups = new Map<number, Replicas>();
  private refreshingSince = -Infinity;
  private readonly attemptTimeoutMs: number;
  private readonly defaultTimeoutMs: number;
  private closed = false;
  /** This client's write session. */
  private readonly session = randomBytes(16).toString('base64url');
  private nextSeq = 1;
  /** Writes started and not finished; the lowest bounds `ackedBelow`. */
  private readonly unfinished = new Set<number>();
  private lowestUnfinished = 1;

  /**
   * @param options - the replicas and timeouts.
   * @throws Error when no peer is given or an address is malformed.
   */
  constructor(options: PaxosKVClientOptions) {
    if (options.peers.length === 0) throw new Error('PaxosKVClient needs at least one peer address');
    // The client fails over between replicas itself; channel-level retries would only double the attempts.
    this.channelOptions = { connectTimeoutMs: 1000, retryPolicy: false, ...options.channel };
    this.seed = { group: 0, addresses: [...options.peers], stubs: options.peers.map((p) => this.stubAt(p)), current: 0 };
    this.attemptTimeoutMs = options.attemptTimeoutMs ?? 1000;
    this.defaultTimeoutMs = options.defaultTimeoutMs ?? 5000;
    if (options.routing !== undefined) this.adopt(options.routing);
  }

  /**
   * The routing table the client has cached (many groups), or undefined before it learned one (or
   * for a cluster of one group).
   */
  get routing(): RoutingTable | undefined {
    return this.table;
  }

  /**
   * Caches a routing table learned elsewhere (a watch of the routing key, a file) when its epoch
   * is newer than the cached one's.
   * @returns whether it was.
   * @throws RoutingError when the table breaks a rule of routing.ts's `validateRoutingTable`.
   */
  useRouting(table: RoutingTable): boolean {
    return this.adopt(table);
  }

  /**
   * Reads the cluster's routing table linearizably (the routing key of the system group), and
   * caches it.
   * @returns the table, or null for a cluster of one group (nothing routes).
   * @throws RpcError UNAVAILABLE or DEADLINE_EXCEEDED when no replica answered in time.
   */
  async routingTable(options?: CallOptions): Promise<RoutingTable | null> {
    const got = await this.get(ROUTING_KEY, options);
    if (got === null) return null;
    const t = decodeRoutingTable(got.value);
    this.adopt(t);
    return t;
  }

  /**
   * Writes the next routing table (routing.ts's `checkNextRoutingTable`: the first, of epoch 1, or
   * the current one's epoch + 1 with the same groups) through the system group.
   * @returns the table now chosen.
   * @throws RpcError INVALID_ARGUMENT (`INVALID_ROUTING_TABLE`) for a table that breaks a rule of
   *   routing.ts; FAILED_PRECONDITION (`ROUTING_CHANGE_REFUSED`) for a table that may not follow
   *   the current one, or when a concurrent write won; (`NOT_SYSTEM_GROUP`) when the replicas
   *   reached are not of the system group; UNAVAILABLE or DEADLINE_EXCEEDED as a write.
   */
  async setRoutingTable(table: RoutingTable, options?: CallOptions): Promise<RoutingTable> {
    const deadline = this.deadlineFor(options, Date.now());
    const bytes = encodeRoutingTable(table);
    let retried = false;
    try {
      const r = await this.call({ ...options, deadline, timeoutMs: undefined }, () => this.replicasFor(ROUTING_KEY), (stub, o) => stub.setRouting({ table: bytes }, o), () => (retried = true));
      const t = decodeRoutingTable(r.table);
      this.adopt(t);
      return t;
    } catch (err) {
      // An earlier attempt whose outcome was unknown may have written it, and a later one found
      // it there already: the table chosen is ours, then.
      if (!retried || !(err instanceof RpcError) || err.reason !== kvErrors.ROUTING_CHANGE_REFUSED.reason) throw err;
      const now = await this.routingTable({ deadline });
      if (now !== null && Buffer.from(encodeRoutingTable(now)).equals(Buffer.from(bytes))) return now;
      throw err;
    }
  }

  /**
   * The cluster's membership configuration, read linearizably.
   * @param options - the call's options; `group`: the group's, in a cluster of many (default: the
   *   group of the replicas given).
   * @returns the configuration (`next` set while a change is under way; `addresses` of every
   *   member the answering replica knows the address of).
   * @throws RpcError UNAVAILABLE or DEADLINE_EXCEEDED when no voter answered in time;
   *   INVALID_ARGUMENT (`NO_SUCH_GROUP`) for a group the routing table does not have; UNAVAILABLE
   *   (`NO_ROUTING_TABLE`) when the replicas given have no routing table yet.
   */
  async members(options?: GroupCallOptions): Promise<Configuration> {
    const o = { ...options, deadline: this.deadlineFor(options, Date.now()), timeoutMs: undefined };
    const route = await this.groupRoute(o);
    const r = await this.call(o, route, (stub, c) => stub.members({}, c));
    return membershipFromPb(r.configuration!);
  }

  /**
   * Changes the members: begins the change (a joint configuration; see core/membership.ts), then
   * waits until the replicas finished it (the new voters synced every key) or the deadline
   * passed. Start a new member first (`svrkit kv serve --join`), and give its `address`.
   * Idempotent: a change already made returns the configuration as it is.
   * @param change - `{ kind: 'add', member, address, learner? }`, `{ kind: 'remove', member }`,
   *   `{ kind: 'replace', remove, add, address }`, or `{ kind: 'abort' }` (the change under way
   *   back to its first half: for one whose new member never came up).
   * @param options - the deadline (default 60 s: a new member first copies every key); `group`:
   *   the group to change, in a cluster of many (default: the group of the replicas given). Once
   *   the change of a group finished, its new addresses go into the routing table (the next epoch).
   * @returns the stable configuration the change led to.
   * @throws RpcError FAILED_PRECONDITION (`MEMBERSHIP_CHANGE_REFUSED`) when the change breaks a
   *   rule or another change is under way; INVALID_ARGUMENT for a bad member id;
   *   DEADLINE_EXCEEDED when the change began but had not finished by the deadline (it goes on:
   *   `members()` shows it); UNAVAILABLE when no voter answered; INVALID_ARGUMENT (`NO_SUCH_GROUP`)
   *   for a group the routing table does not have; UNAVAILABLE (`ROUTING_NOT_UPDATED`) when the
   *   change finished and the routing table could not be given the group's addresses in time.
   */
  async changeMembers(change: MembershipChange, options?: GroupCallOptions): Promise<Configuration> {
    const deadline = options?.deadline ?? Date.now() + (options?.timeoutMs ?? 60_000);
    const o = { ...options, deadline, timeoutMs: undefined };
    // In a cluster of many groups, a change without a group is one of the given replicas' group:
    // its new addresses go into the routing table as well.
    const group = options?.group ?? (await this.call(o, () => this.seed, (stub, c) => stub.routing({}, c))).group;
    const grouped = group === 0 ? o : { ...o, group };
    const r = await this.call(o, await this.groupRoute(grouped), (stub, c) => stub.changeMembers(changeToPb(change), c));
    return this.finishChange(membershipFromPb(r.configuration!), deadline, grouped);
  }

  /** Waits until the change `c` began is finished; in a cluster of many groups, then publishes the group's new addresses. */
  private async finishChange(first: Configuration, deadline: number, options: GroupCallOptions | undefined): Promise<Configuration> {
    let c = first;
    while (c.next !== undefined) {
      const left = deadline - Date.now();
      if (left <= 0) throw kvErrors.MEMBERSHIP_CHANGE_UNFINISHED(describeConfiguration(c));
      await pause(Math.min(100, left), undefined);
      try {
        c = await this.members({ deadline, ...(options?.group === undefined ? {} : { group: options.group }) });
      } catch (err) {
        // The deadline ran out while it asked: the change goes on.
        if (Date.now() >= deadline - 1) throw kvErrors.MEMBERSHIP_CHANGE_UNFINISHED(describeConfiguration(c));
        throw err;
      }
    }
    if (options?.group !== undefined) await this.publishAddresses(options.group, c, deadline);
    return c;
  }

  /**
   * Writes the routing table of the next epoch with group `group` at the addresses of its
   * configuration (voters, then learners), unless it has them already; a concurrent write of the
   * table (another group's change) is read and built on again, until the deadline.
   * @param c - the configuration the change led to (for the error's message).
   * @throws RpcError (`ROUTING_NOT_UPDATED`) saying the change itself is done.
   */
  private async publishAddresses(group: number, c: Configuration, deadline: number): Promise<void> {
    for (;;) {
      try {
        // The table first, then the group's configuration as it is now, then the write of the
        // table's next epoch (refused if the table moved meanwhile): a slow publish of an earlier
        // change can then never put back addresses a later change replaced.
        const current = await this.routingTable({ deadline });
        if (current === null) return;
        const live = await this.members({ deadline, group });
        // Another change under way: it publishes when it finishes.
        if (live.next !== undefined) return;
        const addresses = [...live.voters, ...live.learners].map((m) => live.addresses?.[m]).filter((a): a is string => a !== undefined);
        if (addresses.length === 0) return;
        const next = withGroupReplicas(current, group, addresses);
        if (next !== current) await this.setRoutingTable(next, { deadline });
        return;
      } catch (err) {
        if (err instanceof RpcError && err.reason === kvErrors.ROUTING_CHANGE_REFUSED.reason && Date.now() < deadline - 50) {
          await pause(50, undefined);
          continue;
        }
        if (err instanceof RpcError) throw kvErrors.ROUTING_NOT_UPDATED.with({ cause: err }, group, describeConfiguration(c), `${statusName(err.code)}: ${err.message}`);
        throw err;
      }
    }
  }

  /**
   * Reads a key.
   * @returns the value and version, or null when the key is absent (never written, or deleted).
   * @throws RpcError INVALID_ARGUMENT for a bad key; UNAVAILABLE or DEADLINE_EXCEEDED when no
   *   replica answered in time.
   */
  async get(key: string, options?: CallOptions): Promise<VersionedValue | null> {
    const r = await this.call(options, () => this.replicasFor(key), (stub, o) => stub.get({ key }, o));
    return r.found ? { value: r.value, version: r.version } : null;
  }

  /**
   * Writes a value (at most 1 MiB).
   * @returns the new version.
   * @throws RpcError INVALID_ARGUMENT for a bad key or an oversized value; UNAVAILABLE or
   *   DEADLINE_EXCEEDED when no replica answered in time (the write may or may not have happened).
   */
  async put(key: string, value: Uint8Array, options?: CallOptions): Promise<bigint> {
    return this.write(key, options, (stub, o, writeId) => stub.put({ key, value, writeId }, o));
  }

  /**
   * Deletes a key.
   * @returns the new version (the key then reads as absent).
   * @throws RpcError as `put`.
   */
  async delete(key: string, options?: CallOptions): Promise<bigint> {
    return this.write(key, options, (stub, o, writeId) => stub.delete({ key, writeId }, o));
  }

  /**
   * Writes `value` only if the key is at `expectedVersion` (0n = absent).
   * @returns the new version.
   * @throws RpcError FAILED_PRECONDITION when the key is at another version (metadata
   *   `x-version` carries it); UNKNOWN when an earlier attempt's outcome is unknown and a later
   *   one found the precondition false (the earlier attempt may still apply, so "not applied"
   *   cannot be promised: read the key to find out); otherwise as `put`.
   */
  async compareAndSet(key: string, expectedVersion: bigint, value: Uint8Array, options?: CallOptions): Promise<bigint> {
    let ambiguous = false;
    try {
      return await this.write(key, options, (stub, o, writeId) => stub.compareAndSet({ key, expectedVersion, value, writeId }, o), () => (ambiguous = true));
    } catch (err) {
      if (ambiguous && err instanceof RpcError && err.code === Status.FAILED_PRECONDITION) {
        throw kvErrors.CAS_OUTCOME_UNKNOWN.with({ metadata: err.metadata, cause: err }, err.message);
      }
      throw err;
    }
  }

  /**
   * Asks one replica about itself.
   * @param index - which peer, in the order given to the constructor.
   */
  status(index: number, options?: CallOptions): Promise<StatusReply> {
    const stub = this.seed.stubs[index];
    if (stub === undefined) throw new Error(`no peer ${index}`);
    return stub.status({}, { timeoutMs: this.attemptTimeoutMs, ...options });
  }

  /**
   * A page of one replica's keys with their chosen versions and entry checksums (its local state;
   * for `svrkit kv verify`).
   * @param index - which peer, in the order given to the constructor.
   * @param after - list keys strictly after this one; null from the first key.
   * @param limit - at most this many keys (1..10000).
   * @throws Error for an unknown index; RpcError when the replica does not answer.
   */
  digest(index: number, after: string | null, limit: number, options?: CallOptions): Promise<DigestReply> {
    const stub = this.seed.stubs[index];
    if (stub === undefined) throw new Error(`no peer ${index}`);
    return stub.digest({ after: after ?? '', fromStart: after === null, limit }, { timeoutMs: this.attemptTimeoutMs, ...options });
  }

  /**
   * Has one replica treat a key as lost and repair it from the other voters (for an entry that
   * differs from the others'; `svrkit kv verify --repair`).
   * @param index - which peer; `key` - the key.
   * @returns whether the replica is repairing it (false while it does not vote).
   * @throws Error for an unknown index; RpcError when the replica does not answer.
   */
  async repair(index: number, key: string, options?: CallOptions): Promise<boolean> {
    const stub = this.seed.stubs[index];
    if (stub === undefined) throw new Error(`no peer ${index}`);
    return (await stub.repair({ key }, { timeoutMs: this.attemptTimeoutMs, ...options })).repairing;
  }

  /**
   * A linearizable read of `key` through one replica only: a replica that lags learns the latest
   * chosen entry on the way (`svrkit kv verify --repair` uses it to bring a replica up to date).
   * @param index - which peer; `key` - the key.
   * @returns the version it read.
   * @throws Error for an unknown index; RpcError as `get`, without failover.
   */
  async readThrough(index: number, key: string, options?: CallOptions): Promise<bigint> {
    const stub = this.seed.stubs[index];
    if (stub === undefined) throw new Error(`no peer ${index}`);
    return (await stub.get({ key }, { timeoutMs: this.attemptTimeoutMs, ...options })).version;
  }

  /**
   * Follows a key: yields each chosen version after `fromVersion`, in order, as a replica holds
   * them (the `Watch` RPC), starting with the current version when it is newer. When that replica
   * fails, closes or goes quiet (its connection's keepalive fails), the watch resumes on the next
   * replica from the last version it yielded, so versions only grow and none is yielded twice; a
   * version the new replica cannot send is reported as a `gap`. It runs until `signal` aborts, or
   * the consumer stops iterating (`break`).
   * @param key - the key.
   * @param options - `fromVersion`: the last version the caller has (default 0n: every version
   *   from the current one); `signal`: ends the watch.
   * @throws RpcError INVALID_ARGUMENT for a bad key (other errors move the watch to another replica).
   */
  async *watch(key: string, options: { fromVersion?: bigint; signal?: AbortSignal } = {}): AsyncGenerator<KvWatchEvent> {
    let last = options.fromVersion ?? 0n;
    const signal = options.signal;
    let failedInRow = 0;
    const aborted = (): boolean => signal?.aborted === true;
    while (!aborted() && !this.closed) {
      const target = this.replicasFor(key);
      const index = target.current;
      const stub = target.stubs[index]!;
      let progressed = false;
      try {
        for await (const e of stub.watch({ key, fromVersion: last }, { signal, deadline: Infinity, timeoutMs: undefined })) {
          if (e.version <= last) continue;
          const gap = e.gap || e.version > last + 1n;
          last = e.version;
          progressed = true;
          yield { version: e.version, value: e.found ? e.value : null, gap };
        }
      } catch (err) {
        if (aborted()) return;
        if (err instanceof RpcError && err.code === Status.INVALID_ARGUMENT) throw err;
        // The key is another group's: follow it there at once.
        if (err instanceof RpcError && this.adoptFrom(err)) continue;
      }
      // The stream ended or failed: the next replica (unless another call moved on already).
      if (target.current === index) target.current = (index + 1) % target.stubs.length;
      failedInRow = progressed ? 0 : failedInRow + 1;
      if (failedInRow >= target.stubs.length) {
        failedInRow = 0;
        if (target.group !== 0) this.refreshRouting(target.group);
        await pause(50, signal);
      }
    }
  }

  /**
   * Lists chosen values of keys with `prefix`, in key order (UTF-8 byte order), from one replica's
   * local state per group (the `List` RPC; in a cluster of many groups, one replica of each,
   * merged): NOT linearizable (a replica that lags may list older versions, or miss a key just
   * written). Deleted keys are left out. Fails over as `get`.
   * @param prefix - the keys' prefix ("" for every key).
   * @param options - `after`: list keys strictly after this one (default "": from the first);
   *   `limit`: at most this many (1..1000, default 100; 0 is 100, more is 1000); and the call's options.
   * @returns the keys, and whether more may follow (list again with `after` = the last key).
   * @throws RpcError INVALID_ARGUMENT for a prefix over 1 KiB or a bad `after`; UNAVAILABLE or
   *   DEADLINE_EXCEEDED when no replica (of some group) answered in time.
   */
  async list(prefix: string, options: CallOptions & { after?: string; limit?: number } = {}): Promise<{ items: KvListItem[]; more: boolean }> {
    const { after = '', limit: asked = 100, ...rest } = options;
    // The replicas' own bounds, so that every group's page has the same length.
    const limit = asked === 0 ? 100 : Math.min(asked, 1000);
    const call = { ...rest, deadline: this.deadlineFor(rest, Date.now()), timeoutMs: undefined };
    const toItems = (r: { items: Array<{ key: string; version: bigint; value: Uint8Array }> }): KvListItem[] => r.items.map((i) => ({ key: i.key, version: i.version, value: i.value }));
    if (this.table === undefined) {
      // A cluster of one group lists at once; a replica of a cluster of many answers with the table.
      try {
        const r = await this.call(call, () => this.seed, (stub, o) => stub.list({ prefix, after, limit }, o), undefined, false);
        return { items: toItems(r), more: r.more };
      } catch (err) {
        // (The call cached the table the answer carries.)
        if (!(err instanceof RpcError) || !isRoutingAnswer(err) || this.table === undefined) throw err;
      }
    }
    // Every group lists its first `limit` keys after `after`: the first `limit` of their union are
    // the cluster's (each of those is among its own group's first `limit`). A group that sent
    // fewer and says more may follow bounds the page: no key past its last may be listed yet.
    const pages = await Promise.all(
      this.table!.groups.map((g) =>
        this.call(call, () => this.replicasOf(g.id), (stub, o) => stub.list({ prefix, after, limit }, { ...o, metadata: { ...o.metadata, [GROUP_METADATA]: String(g.id) } })),
      ),
    );
    const bytesOf = (key: string) => Buffer.from(key);
    let bound: Buffer | undefined;
    for (const p of pages) {
      const last = p.items.at(-1);
      if (!p.more || last === undefined) continue;
      const lastBytes = bytesOf(last.key);
      if (bound === undefined || Buffer.compare(lastBytes, bound) < 0) bound = lastBytes;
    }
    const all = pages
      .flatMap(toItems)
      .map((item) => ({ item, bytes: bytesOf(item.key) }))
      .filter((x) => bound === undefined || Buffer.compare(x.bytes, bound) <= 0)
      .sort((a, b) => Buffer.compare(a.bytes, b.bytes));
    return { items: all.slice(0, limit).map((x) => x.item), more: all.length > limit || pages.some((p) => p.more) };
  }

  /** Closes the channels (calls in flight finish first). */
  close(): void {
    this.closed = true;
    // The stubs were handed these channels, so closing a stub would not close its channel.
    for (const c of this.channels.values()) c.channel.close();
  }

  /**
   * Runs a write with a new (session, seq): every attempt carries it with the same expiry (the
   * call's deadline, at most MAX_WRITE_RETRY_MS away) and a fresh `sentAt`.
   */
  private async write(
    key: string,
    options: CallOptions | undefined,
    attempt: (stub: PaxosKVStub, o: CallOptions, writeId: WriteId) => Promise<{ version: bigint }>,
    onRetry?: () => void,
  ): Promise<bigint> {
    const seq = this.nextSeq++;
    this.unfinished.add(seq);
    const began = clientNow();
    const expiresAt = Math.floor(Math.min(began + this.deadlineFor(options, Date.now()) - Date.now(), began + MAX_WRITE_RETRY_MS));
    try {
      const reply = await this.call(
        { ...options, deadline: Date.now() + Math.max(0, expiresAt - began), timeoutMs: undefined },
        () => this.replicasFor(key),
        (stub, o) =>
          attempt(stub, o, {
            client: this.session,
            seq: BigInt(seq),
            ackedBelow: BigInt(this.lowestUnfinished),
            sentAtMs: BigInt(Math.min(Math.floor(clientNow()), expiresAt)),
            expiresAtMs: BigInt(expiresAt),
          }),
        onRetry,
      );
      return reply.version;
    } finally {
      // Finished either way: later writes tell the replicas to forget it and refuse late attempts.
      this.unfinished.delete(seq);
      while (this.lowestUnfinished < this.nextSeq && !this.unfinished.has(this.lowestUnfinished)) this.lowestUnfinished++;
    }
  }

  /**
   * The deadline a call with `options` gets (epoch ms): its own (`deadline`, or `timeoutMs` from
   * `now`), cut to the enclosing call's, or `defaultTimeoutMs` from `now` when neither has one.
   * Multi-step operations (run-plan.ts, the queue's batches) use it to give all their steps one deadline.
   * @param now - the time to count `timeoutMs` and the default from (epoch ms; default `Date.now()`).
   */
  deadlineFor(options: CallOptions | undefined, now: number = Date.now()): number {
    let deadline = options?.deadline ?? (options?.timeoutMs !== undefined ? now + options.timeoutMs : Infinity);
    const parent = currentCall();
    if (parent !== undefined && parent.deadline < deadline) deadline = parent.deadline;
    if (deadline === Infinity) deadline = now + this.defaultTimeoutMs;
    return deadline;
  }

  /**
   * Runs `attempt` on one replica after another of the group `route` gives until one answers,
   * within the deadline. `route` is asked again after each attempt: a wrong-group answer brings a
   * newer table, and the next attempt goes to the key's group (unless `reroute` is false: the
   * error is then the caller's). `onRetry` is told when an attempt failed in a way that leaves its
   * outcome unknown.
   */
  private async call<T>(
    options: CallOptions | undefined,
    route: () => Replicas,
    attempt: (stub: PaxosKVStub, o: CallOptions) => Promise<T>,
    onRetry?: () => void,
    reroute = true,
  ): Promise<T> {
    const deadline = this.deadlineFor(options, Date.now());
    let target = route();
    // Replicas this call tried since it last paused: the next attempt prefers one it has not.
    let tried = new Uint8Array(target.stubs.length);
    let triedCount = 0;
    let lastError: RpcError | undefined;
    for (;;) {
      // A closed client fails at once: no replica will answer it (not until the deadline).
      if (this.closed) throw lastError ?? kvErrors.CLIENT_CLOSED();
      const left = deadline - Date.now();
      if (left <= 0) {
        throw lastError ?? kvErrors.DEADLINE_BEFORE_ANY_REPLY();
      }
      const n = target.stubs.length;
      let index = target.current;
      for (let k = 0; k < n && tried[index] === 1; k++) index = (index + 1) % n;
      tried[index] = 1;
      triedCount++;
      const stub = target.stubs[index]!;
      try {
        return await attempt(stub, { ...options, deadline: Date.now() + Math.min(left, this.attemptTimeoutMs), timeoutMs: undefined });
      } catch (err) {
        if (!(err instanceof RpcError)) throw err;
        if (isRoutingAnswer(err)) {
          // Another group's key (nothing was applied): with a newer table, to that group at once.
          const adopted = this.adoptFrom(err);
          if (!reroute) throw err;
          const next = route();
          if (adopted || next !== target) {
            target = next;
            tried = new Uint8Array(target.stubs.length);
            triedCount = 0;
            continue;
          }
          // Our table sends the key here, and the replica says otherwise: try the group's others.
          lastError = err;
        } else {
          if (!retryable(err)) throw err;
          // An attempt the call's own deadline cut short says less than a replica's answer before
          // it: a removed replica's UNAVAILABLE stays the error when the last attempt had no time.
          const cutShort = err.code === Status.DEADLINE_EXCEEDED && lastError !== undefined && Date.now() >= deadline;
          if (!cutShort) lastError = err;
          // A refusal marked not processed (by the channel or the replica's admission control), or
          // one the replica says it did not apply, leaves no doubt; anything else may have been applied.
          if (!err.notProcessed && err.reason !== kvErrors.REPLICA_UNAVAILABLE_NOT_APPLIED.reason) onRetry?.();
        }
        // Move the client on to the next replica (unless another call already did).
        if (target.current === index) target.current = (index + 1) % n;
        if (triedCount >= n) {
          // Every replica failed once: ask the others for a newer table (their addresses may have
          // changed), pause briefly rather than spin, then try them all again.
          if (target.group !== 0) this.refreshRouting(target.group);
          await new Promise((r) => setTimeout(r, Math.min(50, Math.max(0, deadline - Date.now()))));
          const next = route();
          if (next !== target) target = next;
          tried = new Uint8Array(target.stubs.length);
          triedCount = 0;
        }
      }
    }
  }

  /** The replicas a key goes to: its group's when the table is known (system keys: the system group's), else those given. */
  private replicasFor(key: string): Replicas {
    const ring = this.ring;
    if (ring === undefined) return this.seed;
    return this.replicasOf(isSystemKey(key) ? SYSTEM_GROUP : ring.groupOf(key));
  }

  /** The replicas of group `group` in the cached table (made on first use). */
  private replicasOf(group: number): Replicas {
    let r = this.groups.get(group);
    if (r === undefined) {
      const g = this.table?.groups.find((x) => x.id === group);
      if (g === undefined) return this.seed;
      // Like the replicas given, the first is tried first: a key's writes then come from one
      // proposer, which takes the fast path (bench/paxoskv/groups.ts: clients spread over a
      // group's replicas cost 20-50% more CPU per operation, in prepares).
      r = { group, addresses: g.replicas, stubs: g.replicas.map((a) => this.stubAt(a)), current: 0 };
      this.groups.set(group, r);
    }
    return r;
  }

  /**
   * The route to `options.group`'s replicas (reading the table first when none is cached), or to
   * those given; asked again at each attempt, so a newer table is followed.
   * @throws RpcError INVALID_ARGUMENT (`NO_SUCH_GROUP`) for a group the table lacks, or any group
   *   of a cluster of one group; UNAVAILABLE (`NO_ROUTING_TABLE`) while the replica asked has none.
   */
  private async groupRoute(options: GroupCallOptions): Promise<() => Replicas> {
    const group = options.group;
    if (group === undefined) return () => this.seed;
    if (this.table === undefined) {
      const r = await this.call(options, () => this.seed, (stub, o) => stub.routing({}, o));
      if (r.group === 0) throw kvErrors.NO_SUCH_GROUP(group, 'none: a cluster of one group');
      if (r.table.length === 0) throw kvErrors.NO_ROUTING_TABLE(group);
      this.adopt(decodeRoutingTable(r.table));
    }
    const table = this.table!;
    if (!table.groups.some((g) => g.id === group)) throw kvErrors.NO_SUCH_GROUP(group, table.groups.map((g) => g.id).join(', '));
    return () => this.replicasOf(group);
  }

  /** Caches `table` when it is newer than the cached one. @returns whether it was. */
  private adopt(table: RoutingTable): boolean {
    if (this.table !== undefined && table.epoch <= this.table.epoch) return false;
    this.ring = new RoutingRing(table);
    this.table = table;
    // A group whose replicas did not change keeps its own (and the one its calls stick to).
    for (const [id, r] of this.groups) {
      const g = table.groups.find((x) => x.id === id);
      if (g === undefined || g.replicas.length !== r.addresses.length || g.replicas.some((a, i) => a !== r.addresses[i])) this.groups.delete(id);
    }
    // Channels to addresses no group and no given replica has any more are closed.
    const keep = new Set<string>(this.seed.addresses);
    for (const g of table.groups) for (const a of g.replicas) keep.add(a);
    for (const [a, c] of this.channels) {
      if (keep.has(a)) continue;
      c.channel.close();
      this.channels.delete(a);
    }
    return true;
  }

  /** Caches the table a wrong-group answer carries. @returns whether it was newer. */
  private adoptFrom(err: RpcError): boolean {
    if (!isRoutingAnswer(err)) return false;
    const text = err.metadata[ROUTING_METADATA];
    if (text === undefined) return false;
    try {
      return this.adopt(decodeRoutingTable(new TextEncoder().encode(text)));
    } catch {
      return false;
    }
  }

  /**
   * In the background, at most once a second: asks the replicas of the other groups for their
   * routing table, and caches a newer one (a group whose replicas all failed may have moved).
   */
  private refreshRouting(failing: number): void {
    const now = Date.now();
    if (now - this.refreshingSince < 1000 || this.table === undefined) return;
    this.refreshingSince = now;
    const epoch = this.table.epoch;
    const addresses = new Set<string>();
    for (const g of this.table.groups) if (g.id !== failing) for (const a of g.replicas) addresses.add(a);
    void (async () => {
      for (const a of addresses) {
        if (this.closed || this.table === undefined || this.table.epoch > epoch) return;
        try {
          const r = await this.stubAt(a).routing({}, { timeoutMs: this.attemptTimeoutMs });
          if (r.table.length > 0 && this.adopt(decodeRoutingTable(r.table))) return;
        } catch {
          // That one is down too: the next.
        }
      }
    })();
  }

  /** The stub for `address` (its channel made on first use). */
  private stubAt(address: string): PaxosKVStub {
    let c = this.channels.get(address);
    if (c === undefined) {
      const channel = new Channel(address, this.channelOptions);
      c = { channel, stub: new PaxosKVStub(channel) };
      this.channels.set(address, c);
    }
    return c.stub;
  }
}

/** A replica's answer that the call belongs to another group (it carries the routing table). */
function isRoutingAnswer(err: RpcError): boolean {
  return err.reason === kvErrors.WRONG_GROUP.reason || err.reason === kvErrors.LIST_NEEDS_GROUP.reason;
}

/**
 * Whether another replica may take the call after `err`: the replica is unreachable, closing
 * (GOAWAY), rejoining, repairing the key or a learner (UNAVAILABLE), did not answer within the attempt timeout
 * (DEADLINE_EXCEEDED), or refused the call unprocessed for overload (RESOURCE_EXHAUSTED marked
 * not processed, from the replica's FastReject or from the channel shedding by its advertised
 * level). Writes carry their (session, seq), so a retry of one that was applied is not applied twice.
 */
function retryable(err: RpcError): boolean {
  return err.code === Status.UNAVAILABLE || err.code === Status.DEADLINE_EXCEEDED || (err.code === Status.RESOURCE_EXHAUSTED && err.notProcessed);
}

/** The client's clock for write stamps: wall-clock ms at process start plus monotonic time since. */
function clientNow(): number {
  return performance.timeOrigin + performance.now();
}

/** Waits `ms`, or less when `signal` aborts. */
function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
  });
}
