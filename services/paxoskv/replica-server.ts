/**
 * A PaxosKV replica as a running process: the pure core (core/replica.ts) driven by a thin
 * driver that adds durable storage (lmdb, group commit), the network (svrkit RPC between
 * replicas) and clocks, served as two svrkit services: `svrkit.paxoskv.PaxosKV` for clients and
 * `svrkit.paxoskv.PaxosPeer` for the other replicas.
 *
 * The driver's one rule: nothing a core step produced (a message, a client reply) leaves before
 * the records that step persisted, and every earlier step's, are durable.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Channel, currentCall, RpcError, Server, withoutCall, type CallContext, type ServerOptions, type ServiceImplementation } from '../../framework/index.js';
import { clusterFingerprint, messageFromPb, messageToPb, PeerMessageError } from './codec.js';
import { changeDone, changeFromPb, membershipToPb } from './membership-codec.js';
import { CORE_OUTCOMES, kvErrors } from './errors.js';
import { Replica, type ReplicaMode, type StartState } from './core/replica.js';
import { abortChange, beginChange, describeConfiguration, encodeConfiguration, membersOf, MembershipError, roleOf, type Configuration, type MembershipChange } from './core/membership.js';
import {
  chosenIndex,
  CONFIG_KEY,
  isSystemKey,
  LOST_RECORD,
  MAX_CLIENT_ID_BYTES,
  MAX_WRITE_LIFETIME_MS,
  type ClientOp,
  type ClientResult,
  type MemberId,
  type Output,
  type PeerMessage,
  type WriteId,
} from './core/types.js';
import {
  PaxosKVService,
  PaxosPeerClient,
  PaxosPeerService,
  type ChangeMembersRequest,
  type CompareAndSetRequest,
  type MembersReply,
  type MembersRequest,
  type DeleteRequest,
  type DigestReply,
  type DigestRequest,
  type GetReply,
  type GetRequest,
  type ListReply,
  type ListRequest,
  type PeerBatch,
  type PutRequest,
  type RepairReply,
  type RepairRequest,
  type RoutingReply,
  type SetRoutingRequest,
  type StatusReply,
  type StatusRequest,
  type WatchEvent as WatchEventPb,
  type WatchRequest,
  type WriteId as WriteIdPb,
  type WriteReply,
} from './gen/svrkit/paxoskv/paxoskv.js';
import { entryChecksum, KeyStore, type LostRecord } from './storage.js';
import { checkReplicaTls, memberNamed, peerChannelTls, replicaServerTls, type ReplicaTls } from './tls.js';
import { Watchers, type WatchEvent } from './watchers.js';
import { ROUTING_FILE, RoutingFollower } from './routing-follower.js';
import { checkNextRoutingTable, decodeRoutingTable, encodeRoutingTable, GROUP_METADATA, ROUTING_KEY, ROUTING_METADATA, RoutingError, SYSTEM_GROUP, type RoutingTable } from './routing.js';

/** Largest value a key may hold (bytes). */
export const MAX_VALUE_BYTES = 1024 * 1024;
/** Longest key (bytes of UTF-8). */
export const MAX_KEY_BYTES = 1024;
/**
 * Largest peer batch the outbox sends in one call (bytes, estimated from the values it carries):
 * well under the transport's 16 MiB frame limit, so many 1 MiB values to one peer go out as several
 * batches instead of one that fails whole.
 */
export const MAX_PEER_BATCH_BYTES = 4 * 1024 * 1024;

/**
 * How far a write's `sent_at_ms` may be ahead of this replica's wall clock (ms). Generous: replica
 * clocks may be off too; it only stops a client clock that is far off from poisoning a key's log time.
 */
export const MAX_CLIENT_CLOCK_AHEAD_MS = 5 * 60_000;

/** Streams a replica's server allows on one connection (watches; the framework's default is 100). */
export const REPLICA_MAX_STREAMS_PER_CONNECTION = 10_000;

/** The driver's clock for the core: monotonic ms, so a wall-clock step never stalls or fires timers. */

/** How to run a replica. */
export interface ReplicaOptions {
  /** This replica's member id. */
  id: MemberId;
  /**
   * Every member's address `host:port`, this one's included (it listens there): the cluster's
   * first members (with `join`: this one and the members to ask). Members added by changes are
   * reached at the addresses their configuration gives.
   */
  members: ReadonlyMap<MemberId, string>;
  /**
   * This replica joins a running cluster (`svrkit kv serve --join`): it asks these members of
   * `members` for the configuration until one names it (see core/replica.ts's `join` start), then
   * catches up. Needs `cluster`. Its data dir holds only itself as members.
   */
  join?: readonly MemberId[];
  /** The fingerprint of the cluster to join (its replicas' `Status.cluster`); with `join` only. */
  cluster?: string;
  /**
   * Called when a configuration removes this replica: it then serves no client and votes in
   * nothing, and still tells peers the configuration (some may need it to move on). Default: log.
   */
  onRemoved?: (why: string) => void;
  /**
   * Members that only learn (they never vote and are outside the majority); every replica of the
   * cluster must be given the same list. This replica is a learner when its id is in it.
   */
  learners?: readonly MemberId[];
  /** Where this replica keeps its records. */
  dataDir: string;
  /**
   * The replica lost its data and starts from an empty data dir: it catches up from the other
   * voters and does not vote until every key they hold is fenced (see core/replica.ts). Refused
   * for a data dir that holds data.
   */
  rejoin?: boolean;
  /** Interface to bind; default: the host of this member's address. */
  bindHost?: string;
  /** Phase timeout of the core (ms). Default 200. */
  phaseTimeoutMs?: number;
  /** Called when storage fails or the data dir proves unsafe; the replica cannot go on. Default: log and exit(1). */
  onFatal?: (error: Error) => void;
  /** Options of the replica's svrkit server (default: the defaults, FastReject on). Its `tls` is set from `tls`. */
  server?: ServerOptions;
  /**
   * Serve and talk to the peers over TLS (tls.ts): the server presents `cert` and asks callers for
   * a certificate from `ca`; a peer batch is accepted only from a caller whose certificate names
   * the member it is from, and a peer is reached only when its certificate names it. Client calls
   * need no certificate. Default: plain TCP.
   */
  tls?: ReplicaTls;
  /**
   * More services its server serves, beside PaxosKV's (`svrkit kv serve` adds the config center
   * and the registry, which are PaxosKV clients themselves).
   */
  services?: readonly ServiceImplementation[];
  /** Called when the replica's mode changes (for the CLI's progress lines). */
  onModeChange?: (mode: ReplicaMode, replica: PaxosKVReplica) => void;
  /**
   * Many groups (routing.ts): this replica belongs to group `group` of a cluster of many, and reads
   * the routing table from the system group's replicas at `system` (for group 1: its own group's).
   * It then answers a key of another group with WRONG_GROUP and its table, and keeps the table in
   * `<dataDir>/routing.json` with its group (a data dir of another group is refused). Default: a
   * cluster of one group, which routes nothing.
   */
  routing?: { group: number; system: readonly string[] };
  /** The core's clock, monotonic ms (tests inject one). Default `performance.now`. */
  now?: () => number;
  /** Randomness in [0, 1) for the core (proposal backoff, incarnation nonces). Default `Math.random`. */
  random?: () => number;
  /**
   * A watched key that did not change for this long (ms) is read linearizably, so that a change
   * whose `learn` message this replica lost still reaches its watchers; after three such reads
   * fail in a row (the replica is cut off from a majority), the key's watches end, so their
   * clients move to another replica. Default 1000.
   */
  watchCheckMs?: number;
}

/** A running replica. */
export class PaxosKVReplica {
  private readonly core: Replica;
  private readonly server: Server;
  /** Channels to the peers, by member, with the address each was made for. */
  private readonly peers = new Map<MemberId, { address: string; client: PaxosPeerClient }>();
  /** The configuration epoch the peer channels were last pruned at. */
  private channelsEpoch = 0;
  private readonly outbox = new Map<MemberId, PeerMessage[]>();
  private readonly pending = new Map<number, (r: ClientResult) => void>();
  private readonly fingerprint: string;
  private lastWrite: Promise<void> = Promise.resolve();
  private flushScheduled = false;
  private tickTimer: NodeJS.Timeout | undefined;
  private tickAt = Infinity;
  private nextRef = 1;
  private closed = false;

  private lastMode: ReplicaMode;
  private readonly watchers = new Watchers();
  private watchTimer: NodeJS.Timeout | undefined;
  /** Watched keys whose periodic read failed, and how many times in a row. */
  private readonly watchReadFailures = new Map<string, number>();
  /** Keys with a read for new watches on its way, and whether another must follow it (see `offerCurrent`). */
  private readonly watchReads = new Map<string, { again: boolean }>();
  private readonly readyWaiters = new Set<() => void>();
  /** The core's clock (monotonic ms; `ReplicaOptions.now`). */
  private readonly now: () => number;

  private constructor(
    readonly options: ReplicaOptions,
    private readonly store: KeyStore,
    start: StartState,
    /** Many groups: this replica's copy of the routing table (undefined in a cluster of one group). */
    private readonly routing: RoutingFollower | undefined,
  ) {
    if (options.server?.tls !== undefined) throw new Error('ReplicaOptions.server.tls: give ReplicaOptions.tls instead (it also secures and checks the peer traffic)');
    const members = [...options.members.keys()].sort((a, b) => a - b);
    const learners = [...(options.learners ?? [])].sort((a, b) => a - b);
    // Groups of one cluster have the same member ids: the group tells their batches apart.
    this.fingerprint = options.cluster ?? `${clusterFingerprint(members, learners)}${options.routing === undefined ? '' : `/group=${options.routing.group}`}`;
    this.now = options.now ?? (() => performance.now());
    const configuration = store.meta().configuration;
    this.core = new Replica(
      {
        id: options.id,
        members,
        learners,
        start,
        phaseTimeoutMs: options.phaseTimeoutMs,
        ...(options.join === undefined ? {} : { join: options.join }),
        ...(configuration === undefined ? {} : { configuration }),
      },
      store,
      options.random ?? Math.random,
    );
    this.lastMode = this.core.mode;
    // Watches are streams: a client (a process with many ConfigClients or registry resolvers)
    // may hold many on one connection. Each holds little: one pending event, no queue.
    this.server = new Server({
      maxStreamsPerConnection: REPLICA_MAX_STREAMS_PER_CONNECTION,
      ...options.server,
      ...(options.tls === undefined ? {} : { tls: replicaServerTls(options.tls) }),
    });
    this.server.addService(new ClientApi(this));
    this.server.addService(new PeerApi(this));
    for (const service of options.services ?? []) this.server.addService(service);
  }

  /**
   * Where member `m` listens: the configuration's address for it (members added by changes), or
   * the one this replica was started with.
   */
  addressOf(m: MemberId): string | undefined {
    return this.core.membership.addresses?.[m] ?? this.options.members.get(m);
  }

  /** The channel to peer `to` (made on first use, and again when its address changed), or undefined when no address is known. */
  private peerClient(to: MemberId): PaxosPeerClient | undefined {
    const address = this.addressOf(to);
    if (address === undefined || to === this.options.id) return undefined;
    const known = this.peers.get(to);
    if (known !== undefined && known.address === address) return known.client;
    known?.client.close();
    // Paxos retries by its own rules (new rounds, catch-up): no channel-level retries.
    const tls = this.options.tls === undefined ? undefined : peerChannelTls(this.options.tls, to);
    const client = new PaxosPeerClient(new Channel(address, { connectTimeoutMs: 1000, backoff: { initialMs: 50, maxMs: 1000 }, retryPolicy: false, tls }));
    this.peers.set(to, { address, client });
    return client;
  }

  /**
   * Opens the data dir and starts serving. The replica votes once a majority of the other voters
   * confirmed its incarnation (and, with `rejoin`, once it fenced every key they hold); until
   * then it refuses client calls with UNAVAILABLE.
   * @throws DataDirError when the data dir is corrupt, belongs to another member or cluster, or
   *   holds data while `rejoin` is set; Error when the membership is invalid, `tls` does not fit
   *   this member (`checkReplicaTls`), or the address cannot be bound; Error when `routing` is
   *   missing for a data dir of a group of many (its routing.json), names another group than the
   *   data dir's (RoutingGroupMismatchError) or than the cluster a join is into.
   */
  static async start(options: ReplicaOptions): Promise<PaxosKVReplica> {
    const address = options.members.get(options.id);
    if (address === undefined) throw new Error(`member ${options.id} is not in the peer list`);
    for (const l of options.learners ?? []) if (!options.members.has(l)) throw new Error(`learner ${l} is not in the peer list`);
    if (options.join !== undefined) {
      if (options.cluster === undefined) throw new Error('a joining replica needs the cluster fingerprint (ReplicaOptions.cluster)');
      if (options.join.length === 0) throw new Error('a joining replica needs members to ask (ReplicaOptions.join)');
      for (const m of options.join) if (!options.members.has(m) || m === options.id) throw new Error(`join: member ${m} is not another member of the peer list`);
      if ((options.learners ?? []).length > 0) throw new Error('a joining replica takes no learners list: the configuration says who learns');
    } else if (options.cluster !== undefined) throw new Error('ReplicaOptions.cluster is for a joining replica (with join)');
    if (options.tls !== undefined) checkReplicaTls(options.tls, options.id);
    const members = [...options.members.keys()].sort((a, b) => a - b);
    const learners = [...(options.learners ?? [])].sort((a, b) => a - b);
    // A joined member's data dir names itself alone, and the cluster it joined.
    const identity = options.join === undefined ? { memberId: options.id, members, learners } : { memberId: options.id, members: [options.id], learners: [], cluster: options.cluster! };
    if (options.routing !== undefined) {
      const g = options.routing.group;
      if (!Number.isInteger(g) || g < 1 || g > 0xffff) throw new Error(`routing group ${g} is not 1-65535`);
      if (options.routing.system.length === 0) throw new Error('routing: give the system group\'s replica addresses');
    }
    // A replica of one group of many must know it, or it would serve every group's keys.
    const joinedGroup = options.cluster === undefined ? undefined : /\/group=(\d+)$/.exec(options.cluster)?.[1];
    if (options.join !== undefined && String(options.routing?.group ?? '') !== (joinedGroup ?? '')) {
      throw new Error(
        joinedGroup === undefined
          ? `the cluster to join has one group: start this replica without a group (--group ${options.routing?.group})`
          : `the cluster to join is group ${joinedGroup} of a cluster of many groups: start this replica with --group ${joinedGroup} (and --routing)${options.routing === undefined ? '' : `, not --group ${options.routing.group}`}`,
      );
    }
    if (options.routing === undefined && (await fileExists(path.join(options.dataDir, ROUTING_FILE)))) {
      throw new Error(`data dir ${options.dataDir} holds a replica of a group of a cluster of many groups (${ROUTING_FILE}): start it with its --group and --routing`);
    }
    const store = await KeyStore.open(options.dataDir, identity, { rejoin: options.rejoin === true });
    let replica: PaxosKVReplica;
    let routing: RoutingFollower | undefined;
    try {
      if (options.routing !== undefined) {
        routing = await RoutingFollower.open({
          group: options.routing.group,
          system: options.routing.system,
          dataDir: options.dataDir,
          ...(options.tls === undefined ? {} : { channel: { tls: { ca: options.tls.ca, cert: options.tls.cert, key: options.tls.key } } }),
        });
      }
      const meta = store.meta();
      const named = meta.configuration !== undefined && roleOf(meta.configuration, options.id) !== 'removed';
      const start: StartState = {
        kind: meta.rejoining ? 'rejoin' : options.join !== undefined && !named ? 'join' : store.created ? 'fresh' : 'existing',
        incarnation: meta.incarnation,
        announced: meta.announced,
        peerIncarnations: meta.peerIncarnations,
      };
      replica = new PaxosKVReplica(options, store, start, routing);
      const port = Number(address.slice(address.lastIndexOf(':') + 1));
      const host = options.bindHost ?? address.slice(0, address.lastIndexOf(':')).replace(/^\[|\]$/g, '');
      await replica.server.listen(port, host);
    } catch (err) {
      await routing?.close();
      await store.close();
      throw err;
    }
    replica.apply(replica.core.begin(replica.now()));
    routing?.follow();
    // Keys whose records failed their checksums when the store opened: repaired from the peers.
    if (store.lostAtOpen.length > 0) replica.apply(replica.core.markLost(store.lostAtOpen.map((l) => l.key), replica.now()));
    return replica;
  }

  /** Records that failed their checksum (or did not decode) when the data dir was opened. */
  get lostAtOpen(): readonly LostRecord[] {
    return this.store.lostAtOpen;
  }

  /** Reads since the store opened that met a record failing its checksum (each read counts). */
  get corruptReads(): number {
    return this.store.corruptReads;
  }

  /** Calls its server is handling now (for `SvrkitMetrics.watchServer`). */
  get inflightCalls(): number {
    return this.server.inflightCalls;
  }

  /** The highest FastReject priority level its server admits (for `SvrkitMetrics.watchServer`). */
  get admissionLevel(): number {
    return this.server.admissionLevel;
  }

  /** How many FastReject levels its server has (for `SvrkitMetrics.watchServer`). */
  get admissionLevels(): number {
    return this.server.admissionLevels;
  }

  /** Bytes its server holds for its connections (for `SvrkitMetrics.watchServer`; see `Server.bufferedBytes`). */
  get bufferedBytes(): number {
    return this.server.bufferedBytes;
  }

  /** The address this replica serves on. */
  get address(): string {
    return this.server.address;
  }

  /** What the replica is doing: `checking`, `rejoining`, `voter`, `learner` or `failed`. */
  get mode(): ReplicaMode {
    return this.core.mode;
  }

  /**
   * Resolves once the replica votes (or, for a learner, learns); a restart usually takes one round
   * trip to the other voters, a rejoin a sweep of their keys.
   * @param timeoutMs - how long to wait (ms); default: no limit.
   * @throws Error (rejects) when the replica found its data dir unsafe (`failed`), closed, or the
   *   time ran out.
   */
  ready(timeoutMs = Infinity): Promise<void> {
    const settled = (): boolean => this.core.mode === 'voter' || this.core.mode === 'learner';
    if (settled()) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const timer = timeoutMs === Infinity ? undefined : setTimeout(() => done(new Error(`replica ${this.options.id} is still ${this.core.mode} after ${timeoutMs} ms`)), timeoutMs);
      const done = (err?: Error): void => {
        clearTimeout(timer);
        this.readyWaiters.delete(check);
        if (err === undefined) resolve();
        else reject(err);
      };
      const check = (): void => {
        if (settled()) done();
        else if (this.core.mode === 'failed') done(new Error(`replica ${this.options.id} refuses to vote: ${this.core.failure ?? 'unsafe data dir'}`));
        else if (this.closed) done(new Error(`replica ${this.options.id} closed before it could vote`));
      };
      this.readyWaiters.add(check);
    });
  }

  /** This replica's view of itself. */
  status(): StatusReply {
    const progress = this.core.rejoinProgress;
    const sync = this.core.syncProgress;
    const lost = this.core.lostKeyCounts;
    return {
      memberId: this.options.id,
      members: [...this.options.members.keys()].sort((a, b) => a - b),
      learnerOnly: this.core.mode === 'learner',
      keys: BigInt(this.store.keyCount),
      laggingKeys: BigInt(this.core.laggingCount),
      pendingOperations: BigInt(this.core.pendingOperations),
      mode: this.core.mode,
      voters: this.core.voters,
      incarnation: BigInt(this.core.incarnation),
      rejoinPeersDone: progress?.peersDone ?? 0,
      rejoinPeers: progress?.peers ?? 0,
      rejoinKeysFenced: BigInt(progress?.keysFenced ?? 0),
      lostKeysRepairing: BigInt(lost.repairing),
      lostKeysFound: BigInt(lost.found),
      lostKeysRepaired: BigInt(lost.repaired),
      epoch: BigInt(this.core.membership.epoch),
      configuration: membershipToPb(this.core.membership, (m) => this.addressOf(m)),
      cluster: this.fingerprint,
      failure: this.core.failure ?? '',
      removed: this.core.removed,
      syncing: sync !== undefined && !sync.done,
      syncListed: sync?.listed ?? 0,
      syncSources: sync?.sources ?? 0,
      syncKeysWaiting: BigInt(sync?.keysWaiting ?? 0),
    };
  }

  /**
   * The cluster's membership configuration, read linearizably (a read of the configuration key
   * through Paxos, which also decides one that was accepted and never learned).
   * @param deadline - wall-clock ms.
   * @returns the configuration this replica then acts under.
   * @throws RpcError as a read: UNAVAILABLE when this replica does not vote, DEADLINE_EXCEEDED.
   */
  async members(deadline: number): Promise<Configuration> {
    const r = await this.request(CONFIG_KEY, { kind: 'get' }, deadline);
    if (!r.ok) throw toRpcError(r);
    return this.core.membership;
  }

  /**
   * Begins a change of members: reads the configuration, and writes the joint configuration
   * (membership.ts's `beginChange`); the replicas finish it once the new voters synced. `abort`
   * writes the joint configuration's first half instead (`abortChange`).
   * Idempotent: a change already begun, or already done, returns the configuration as it is.
   * @param change - what to change.
   * @param deadline - wall-clock ms.
   * @returns the configuration after the write (joint), or as it is.
   * @throws RpcError FAILED_PRECONDITION (`MEMBERSHIP_CHANGE_REFUSED`) for a change that breaks a
   *   rule (a member already in, or not in, the cluster; another change under way);
   *   UNAVAILABLE / DEADLINE_EXCEEDED as a write.
   */
  async changeMembers(change: MembershipChange, deadline: number): Promise<Configuration> {
    const read = await this.members(deadline);
    // Every member's address goes into the configuration: a member that joined knows only those
    // of the replicas it was told to ask.
    const addresses: Record<number, string> = {};
    for (const m of membersOf(read)) {
      const a = this.addressOf(m);
      if (a !== undefined) addresses[m] = a;
    }
    const current: Configuration = { ...read, addresses };
    if (changeDone(current, change)) return current;
    if (current.next !== undefined && change.kind === 'abort') {
      const back = abortChange(current);
      const r = await this.request(CONFIG_KEY, { kind: 'put', value: encodeConfiguration(back), id: null }, deadline);
      if (!r.ok) throw r.status === 'FAILED_PRECONDITION' ? kvErrors.MEMBERSHIP_CHANGE_REFUSED(r.message) : toRpcError(r);
      return this.core.membership;
    }
    if (current.next !== undefined) {
      // Begun already (a retried call), or another change under way.
      const first: Configuration = { epoch: current.epoch - 1, voters: current.voters, learners: current.learners, ...(current.addresses === undefined ? {} : { addresses: current.addresses }) };
      let again: Configuration | undefined;
      try {
        again = beginChange(first, change);
      } catch {
        again = undefined;
      }
      if (again !== undefined && describeConfiguration(again) === describeConfiguration(current)) return current;
      throw kvErrors.MEMBERSHIP_CHANGE_REFUSED(`a change is under way (${describeConfiguration(current)}): it finishes once its new voters synced; try again then`);
    }
    let joint: Configuration;
    try {
      joint = beginChange(current, change);
    } catch (err) {
      if (err instanceof MembershipError) throw kvErrors.MEMBERSHIP_CHANGE_REFUSED(err.message);
      throw err;
    }
    // Every member must be reachable: a new one needs its address.
    for (const m of [...(joint.next?.voters ?? joint.voters), ...(joint.next?.learners ?? joint.learners)]) {
      if (joint.addresses?.[m] === undefined) throw kvErrors.MEMBERSHIP_CHANGE_REFUSED(`member ${m} is new: give its address (where svrkit kv serve --join listens)`);
    }
    const r = await this.request(CONFIG_KEY, { kind: 'put', value: encodeConfiguration(joint), id: null }, deadline);
    if (!r.ok) throw r.status === 'FAILED_PRECONDITION' ? kvErrors.MEMBERSHIP_CHANGE_REFUSED(r.message) : toRpcError(r);
    return this.core.membership;
  }

  /**
   * @internal Many groups: refuses a key this replica's group does not own, with WRONG_GROUP and
   * the routing table in the metadata (`ROUTING_METADATA`); the routing key belongs to the system
   * group. Nothing in a cluster of one group.
   * @throws RpcError FAILED_PRECONDITION (`WRONG_GROUP`); UNAVAILABLE (not applied) while the
   *   replica has no routing table yet.
   */
  checkRoute(key: string): void {
    const routing = this.routing;
    if (routing === undefined) return;
    if (key === ROUTING_KEY) {
      if (routing.group === SYSTEM_GROUP) return;
      throw this.wrongGroup('the routing key', SYSTEM_GROUP);
    }
    const ring = routing.ring;
    if (ring === undefined) throw this.noTableYet();
    const owner = ring.groupOf(key);
    if (owner !== routing.group) throw this.wrongGroup(`key ${JSON.stringify(key.length > 64 ? `${key.slice(0, 64)}...` : key)}`, owner);
  }

  /**
   * @internal Many groups: a list names its group (request metadata `GROUP_METADATA`); one that
   * names none, or another, is refused with the routing table (LIST_NEEDS_GROUP, WRONG_GROUP).
   */
  checkListGroup(metadata: Readonly<Record<string, string>>): void {
    const routing = this.routing;
    if (routing === undefined) return;
    const table = routing.table;
    if (table === undefined) throw this.noTableYet();
    const named = metadata[GROUP_METADATA];
    if (named === undefined || !/^\d{1,5}$/.test(named)) throw kvErrors.LIST_NEEDS_GROUP.with({ metadata: this.routingMetadata(table) }, routing.group, table.epoch);
    if (named !== String(routing.group)) throw kvErrors.WRONG_GROUP.with({ metadata: this.routingMetadata(table) }, `a list for group ${named}`, Number(named), routing.group, table.epoch);
  }

  /** @internal This replica's group (0: a cluster of one group) and routing table (see the `Routing` RPC). */
  routingReply(): RoutingReply {
    const table = this.routing?.table;
    return { group: this.routing?.group ?? 0, table: table === undefined ? new Uint8Array(0) : encodeRoutingTable(table) };
  }

  /**
   * Writes the next routing table into the system group (routing.ts's `checkNextRoutingTable`):
   * a compare-and-set on the routing key, so of two concurrent writers one wins.
   * @param bytes - the table, as `encodeRoutingTable`.
   * @param deadline - wall-clock ms.
   * @returns the table now chosen (as the `Routing` RPC).
   * @throws RpcError FAILED_PRECONDITION (`NOT_SYSTEM_GROUP`) outside the system group;
   *   INVALID_ARGUMENT (`INVALID_ROUTING_TABLE`) for bytes that are no table;
   *   FAILED_PRECONDITION (`ROUTING_CHANGE_REFUSED`) for a table that may not follow the current
   *   one, or when a concurrent write won; UNAVAILABLE / DEADLINE_EXCEEDED as a write.
   */
  async setRouting(bytes: Uint8Array, deadline: number): Promise<RoutingReply> {
    const routing = this.routing;
    if (routing === undefined || routing.group !== SYSTEM_GROUP) throw kvErrors.NOT_SYSTEM_GROUP(routing?.group ?? 0);
    let next: RoutingTable;
    try {
      next = decodeRoutingTable(bytes);
    } catch (err) {
      if (err instanceof RoutingError) throw kvErrors.INVALID_ROUTING_TABLE(err.message);
      throw err;
    }
    const read = await this.request(ROUTING_KEY, { kind: 'get' }, deadline);
    if (!read.ok || read.kind !== 'get') throw toRpcError(read);
    let current: RoutingTable | undefined;
    if (read.value !== null) {
      current = decodeRoutingTable(read.value);
      routing.offer(read.value);
      // The same table again (a retried call): done.
      if (current.epoch === next.epoch && Buffer.from(encodeRoutingTable(current)).equals(Buffer.from(encodeRoutingTable(next)))) return this.routingReply();
    }
    try {
      checkNextRoutingTable(current, next);
    } catch (err) {
      if (err instanceof RoutingError) throw kvErrors.ROUTING_CHANGE_REFUSED(err.message);
      throw err;
    }
    const value = encodeRoutingTable(next);
    const w = await this.request(ROUTING_KEY, { kind: 'cas', expectedVersion: read.version, value, id: null }, deadline);
    if (!w.ok) throw w.status === 'FAILED_PRECONDITION' ? kvErrors.ROUTING_CHANGE_REFUSED(`another write of the routing table won (${w.message})`) : toRpcError(w);
    routing.offer(value);
    return this.routingReply();
  }

  private routingMetadata(table: RoutingTable): Record<string, string> {
    return { [ROUTING_METADATA]: new TextDecoder().decode(encodeRoutingTable(table)) };
  }

  private wrongGroup(what: string, owner: number): RpcError {
    const routing = this.routing!;
    const table = routing.table;
    if (table === undefined) return this.noTableYet();
    return kvErrors.WRONG_GROUP.with({ metadata: this.routingMetadata(table) }, what, owner, routing.group, table.epoch);
  }

  private noTableYet(): RpcError {
    return kvErrors.REPLICA_UNAVAILABLE_NOT_APPLIED(`replica ${this.options.id} of group ${this.routing!.group} has not read the routing table from the system group yet; ask another replica`);
  }

  /**
   * A page of this replica's keys, in the store's key order, each with its chosen version and the
   * checksum of its chosen entry (local state, not linearizable). A record that fails its checksum
   * is reported lost (and its repair starts).
   * @param after - list keys strictly after this one, or null from the first key.
   * @param limit - at most this many keys (1..10000).
   */
  digest(after: string | null, limit: number): DigestReply {
    const keys = this.store.keysAfter(after, limit);
    const lost: string[] = [];
    const out = keys.map((key) => {
      const rec = this.store.get(key);
      if (rec === LOST_RECORD) lost.push(key);
      if (rec === undefined || rec === LOST_RECORD || this.core.isRepairing(key)) return { key, version: 0n, checksum: 0, lost: rec === LOST_RECORD || this.core.isRepairing(key) };
      return { key, version: BigInt(chosenIndex(rec)), checksum: entryChecksum(rec.chosen), lost: false };
    });
    if (lost.length > 0) this.apply(this.core.markLost(lost, this.now()));
    return { keys: out, done: keys.length < limit };
  }

  /**
   * Has this replica treat `key` as lost and repair it from the other voters (see `Replica.forget`).
   * @returns whether it is being repaired.
   */
  repair(key: string): boolean {
    const { output, repairing } = this.core.forget(key, this.now());
    this.apply(output);
    return repairing;
  }

  /** Stops serving and closes the store (pending writes are completed first). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const check of [...this.readyWaiters]) check();
    clearTimeout(this.tickTimer);
    clearInterval(this.watchTimer);
    this.watchers.closeAll();
    await this.routing?.close();
    await this.server.close({ graceMs: 1000 });
    for (const p of this.peers.values()) p.client.close();
    await this.lastWrite.catch(() => {});
    await this.store.close();
  }

  /**
   * The chosen versions of `key` after `fromVersion`, as this replica holds them (see the `Watch`
   * RPC): first its current version when newer (read linearizably on a voter, from the local record
   * otherwise), then each version it makes durable. Ends when `signal` aborts or the replica closes.
   * @param key - the key.
   * @param fromVersion - the last version the caller has (0: none).
   * @param signal - ends the watch.
   * @returns the events, as an async generator.
   */
  async *watch(key: string, fromVersion: number, signal: AbortSignal): AsyncGenerator<WatchEvent> {
    if (this.closed || signal.aborted) return;
    if (this.core.removed) throw kvErrors.REPLICA_UNAVAILABLE(`replica ${this.options.id} ${this.core.failure ?? 'was removed from the cluster'}; ask another replica`);
    const w = this.watchers.add(key, fromVersion, this.now());
    const stop = (): void => w.close();
    signal.addEventListener('abort', stop, { once: true });
    this.startWatchTimer();
    try {
      this.offerCurrent(key);
      for (;;) {
        const event = await w.next();
        if (event === undefined) return;
        yield event;
      }
    } finally {
      signal.removeEventListener('abort', stop);
      w.close();
      if (this.watchers.size === 0) {
        clearInterval(this.watchTimer);
        this.watchTimer = undefined;
        this.watchReadFailures.clear();
      }
    }
  }

  /**
   * A page of chosen values of keys with `prefix`, in key order, from this replica's local state
   * (not linearizable); deleted keys, and keys whose record failed its checksum, are left out.
   * @param prefix - the keys' prefix ("" for all).
   * @param after - list keys strictly after it ("" from the first).
   * @param limit - at most this many keys (1..1000).
   * @returns the keys with their versions and values, and whether more may follow.
   */
  list(prefix: string, after: string, limit: number): { items: Array<{ key: string; version: number; value: Uint8Array }>; more: boolean } {
    if (this.core.removed) throw kvErrors.REPLICA_UNAVAILABLE(`replica ${this.options.id} ${this.core.failure ?? 'was removed from the cluster'}; ask another replica`);
    const items: Array<{ key: string; version: number; value: Uint8Array }> = [];
    const take = (key: string): void => {
      const rec = this.store.get(key);
      if (isSystemKey(key) || rec === undefined || rec === LOST_RECORD || this.core.isRepairing(key) || rec.chosen === null || rec.chosen.value === null) return;
      items.push({ key, version: chosenIndex(rec), value: rec.chosen.value });
    };
    // Keys with a prefix are contiguous in the store's order; `prefix` itself comes first.
    let cursor: string;
    if (after === '' || Buffer.compare(Buffer.from(after), Buffer.from(prefix)) < 0) {
      if (prefix !== '') take(prefix);
      cursor = prefix;
    } else cursor = after;
    for (;;) {
      const page = this.store.keysAfter(cursor === '' ? null : cursor, 256);
      for (const key of page) {
        if (!key.startsWith(prefix)) return { items, more: false };
        if (items.length === limit) return { items, more: true };
        take(key);
      }
      if (page.length < 256) return { items, more: false };
      cursor = page[page.length - 1]!;
    }
  }

  /**
   * Offers the key's watchers its current version (see `current`). Reads of one key are shared:
   * while one is on its way, the watches that start meanwhile wait for one more read that starts
   * when it ends (it must start after they did, to reflect every write acknowledged before them),
   * so a burst of thousands of watches of one key costs two reads, not a queue of thousands.
   */
  private offerCurrent(key: string): void {
    const inFlight = this.watchReads.get(key);
    if (inFlight !== undefined) {
      inFlight.again = true;
      return;
    }
    const read = { again: false };
    this.watchReads.set(key, read);
    this.current(key)
      .then(
        (cur) => {
          if (cur !== undefined) this.watchers.offer(key, cur.version, cur.value, this.now());
        },
        () => undefined, // closing: the watch ends with the replica
      )
      .finally(() => {
        this.watchReads.delete(key);
        if (read.again && !this.closed && this.watchers.has(key)) this.offerCurrent(key);
      });
  }

  /** The key's current version: a linearizable read on a voter, the local record otherwise (undefined: none to offer). */
  private async current(key: string): Promise<{ version: number; value: Uint8Array | null } | undefined> {
    if (this.core.mode === 'voter') {
      const r = await this.request(key, { kind: 'get' }, Date.now() + 5000);
      if (r.ok && r.kind === 'get') return { version: r.version, value: r.value };
    }
    if (this.closed) return undefined;
    const rec = this.store.get(key);
    if (rec === undefined || rec === LOST_RECORD || this.core.isRepairing(key)) return undefined;
    return { version: chosenIndex(rec), value: rec.chosen?.value ?? null };
  }

  /** Reads watched keys that did not change for `watchCheckMs` (see `ReplicaOptions.watchCheckMs`). */
  private startWatchTimer(): void {
    if (this.watchTimer !== undefined || this.closed) return;
    const every = this.options.watchCheckMs ?? 1000;
    this.watchTimer = withoutCall(() =>
      setInterval(() => {
        if (this.core.mode !== 'voter') return;
        for (const key of this.watchers.due(this.now(), every)) {
          this.request(key, { kind: 'get' }, Date.now() + every).then(
            (r) => {
              if (r.ok && r.kind === 'get') {
                this.watchers.offer(key, r.version, r.value, this.now());
                this.watchReadFailures.delete(key);
                return;
              }
              // This replica cannot read the key (no majority answers it: it may be cut off):
              // after three failed reads its watches end, and their clients move to another replica.
              const n = (this.watchReadFailures.get(key) ?? 0) + 1;
              if (n < 3) this.watchReadFailures.set(key, n);
              else {
                this.watchReadFailures.delete(key);
                this.watchers.end(key);
              }
            },
            () => undefined,
          );
        }
      }, Math.max(10, Math.floor(every / 4))),
    );
    this.watchTimer.unref();
  }

  // ---------------------------------------------------------------------------------------------
  // Inputs

  /**
   * @internal A client operation; resolves with its result.
   * @param deadline - the caller's deadline (epoch ms): past it the core starts no new decision.
   */
  request(key: string, op: ClientOp, deadline: number): Promise<ClientResult> {
    const ref = this.nextRef++;
    const now = this.now();
    // The call's deadline is wall-clock ms; the core runs on the monotonic clock.
    const monotonicDeadline = deadline === Infinity ? Infinity : now + (deadline - Date.now());
    return new Promise<ClientResult>((resolve) => {
      this.pending.set(ref, resolve);
      this.apply(this.core.request(ref, key, op, now, monotonicDeadline));
    });
  }

  /**
   * @internal Over TLS, refuses an operator call (`Repair`) from a caller without a certificate
   * signed by the cluster's CA (`client.pem`, or a member's): marking keys lost on two replicas
   * would leave them unavailable. Without TLS, anyone who reaches the port may call it.
   * @throws RpcError UNAUTHENTICATED (`ADMIN_NOT_AUTHENTICATED`) naming the method.
   */
  checkAdmin(method: string): void {
    if (this.options.tls !== undefined && currentCall()?.peerIdentity === undefined) throw kvErrors.ADMIN_NOT_AUTHENTICATED(method);
  }

  /**
   * @internal A batch from a peer. Messages the core produced for that peer come back as the
   * result, once durable; the rest go out through the outbox.
   * @throws RpcError UNAUTHENTICATED (`PEER_NOT_AUTHENTICATED`) over TLS when the caller's
   *   certificate does not name member `from`; FAILED_PRECONDITION for a batch from another
   *   cluster or a non-member, INVALID_ARGUMENT for a malformed message (nothing of the batch is processed then).
   */
  async deliver(batch: PeerBatch): Promise<PeerBatch> {
    const from = batch.from;
    if (this.options.tls !== undefined) {
      const identity = currentCall()?.peerIdentity;
      if (identity === undefined) throw kvErrors.PEER_NOT_AUTHENTICATED(from, 'presented no certificate signed by the cluster CA');
      const named = memberNamed(identity.uris);
      if (named !== from) throw kvErrors.PEER_NOT_AUTHENTICATED(from, `presented a certificate of ${named === undefined ? `no member (${identity.subject})` : `member ${named}`}`);
    }
    if (batch.cluster !== this.fingerprint) {
      throw kvErrors.FOREIGN_CLUSTER(batch.cluster, this.fingerprint);
    }
    if (from === this.options.id || !Number.isInteger(from) || from < 1 || from > 0xffff) {
      throw kvErrors.NOT_A_PEER(from, this.fingerprint);
    }
    let messages: PeerMessage[];
    try {
      messages = batch.messages.map(messageFromPb);
    } catch (err) {
      if (err instanceof PeerMessageError) throw kvErrors.MALFORMED_PEER_MESSAGE.with({ cause: err }, err.message);
      throw err;
    }
    // A member of this replica's configuration or peer list; or one that is not yet: a joining
    // replica asking for the configuration, or a member of a configuration this one has not
    // adopted yet (its messages carry that newer epoch, and the core catches it up).
    const epoch = this.core.membership.epoch;
    const known = this.core.isMember(from) || this.options.members.has(from);
    if (!known && (messages.length === 0 || !messages.every((m) => (m.type === 'catchUp' && m.key === CONFIG_KEY) || ('epoch' in m && m.epoch > epoch)))) {
      throw kvErrors.NOT_A_PEER(from, this.fingerprint);
    }
    const back: PeerMessage[] = [];
    for (const m of messages) this.apply(this.core.receive(from, m, this.now()), from, back);
    await this.lastWrite;
    // The reply carries one batch's worth; the rest (many large entries for a catching-up peer)
    // goes out through the outbox, so no reply exceeds the frame limit.
    const [first = [], ...rest] = splitBatch(back, MAX_PEER_BATCH_BYTES);
    for (const part of rest) for (const m of part) this.enqueue(from, m);
    return { from: this.options.id, cluster: this.fingerprint, messages: first.map(messageToPb) };
  }

  // ---------------------------------------------------------------------------------------------
  // Outputs

  /**
   * Persists a step's records (group-committed with others in flight), then, once they and all
   * earlier ones are durable, sends its messages and delivers its replies. Messages for
   * `replyTo` go into `replySink` (the Deliver response) instead of the outbox.
   */
  private apply(out: Output, replyTo?: MemberId, replySink?: PeerMessage[]): void {
    if (out.persist.size > 0 || out.meta !== undefined) this.lastWrite = this.store.write(out.persist, out.meta);
    this.noticeMode();
    if (replySink !== undefined) {
      for (const s of out.send) if (s.to === replyTo) replySink.push(s.message);
    }
    const release = (): void => {
      if (this.watchers.size > 0) {
        const now = this.now();
        for (const [key, rec] of out.persist) if (this.watchers.has(key)) this.watchers.offer(key, chosenIndex(rec), rec.chosen?.value ?? null, now);
      }
      for (const s of out.send) if (s.to !== replyTo || replySink === undefined) this.enqueue(s.to, s.message);
      for (const r of out.replies) {
        const resolve = this.pending.get(r.requestRef);
        this.pending.delete(r.requestRef);
        resolve?.(r.result);
      }
    };
    if (out.persist.size === 0 && out.meta === undefined && out.send.length === 0 && out.replies.length === 0) {
      this.scheduleTick();
      return;
    }
    this.lastWrite.then(release, (err: unknown) => this.fatal(err as Error));
    this.scheduleTick();
  }

  /** Reports mode changes; a replica whose data dir proved unsafe stops (after its last write). */
  private noticeMode(): void {
    const mode = this.core.mode;
    if (mode === this.lastMode) return;
    this.lastMode = mode;
    this.options.onModeChange?.(mode, this);
    for (const check of [...this.readyWaiters]) check();
    if (mode === 'failed' && this.core.removed) {
      // Its local state stops moving: watchers move to another replica (PaxosKVClient.watch resumes).
      this.watchers.closeAll();
      const why = `paxoskv replica ${this.options.id} stopped: ${this.core.failure ?? 'it was removed from the cluster'}. It serves no client and votes in nothing; it still tells peers the configuration, so stop it once every member shows epoch ${this.core.membership.epoch} (svrkit kv member list)`;
      if (this.options.onRemoved !== undefined) this.options.onRemoved(why);
      else console.error(`svrkit: ${why}`);
      return;
    }
    if (mode === 'failed') {
      const error = new Error(`paxoskv replica ${this.options.id} refuses to vote: ${this.core.failure ?? 'unsafe data dir'}`);
      void this.lastWrite.then(() => this.fatal(error), () => this.fatal(error));
    }
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
      const client = this.peerClient(to);
      if (client === undefined) continue; // no address known for it (yet): as a lost message
      for (const part of splitBatch(messages, MAX_PEER_BATCH_BYTES)) this.sendBatch(client, to, part);
    }
    this.dropChannelsOfFormerMembers();
  }

  /**
   * Once a configuration no longer names a member, its channel is closed (a few seconds later:
   * what was just sent to it, such as the news of its removal, goes out first).
   */
  private dropChannelsOfFormerMembers(): void {
    const c = this.core.membership;
    if (c.epoch === this.channelsEpoch) return;
    this.channelsEpoch = c.epoch;
    const members = new Set(membersOf(c));
    for (const [id, peer] of this.peers) {
      if (members.has(id)) continue;
      this.peers.delete(id);
      setTimeout(() => peer.client.close(), 5000).unref();
    }
  }

  private sendBatch(client: PaxosPeerClient, to: MemberId, messages: PeerMessage[]): void {
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
        for (const m of replies) this.apply(this.core.receive(to, m, this.now()));
      },
      () => {
        // Lost: Paxos retries by its own timeouts.
      },
    );
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
        this.apply(this.core.tick(this.now()));
      }, Math.max(0, wake - this.now())),
    );
  }

  private fatal(err: Error): void {
    if (this.options.onFatal !== undefined) {
      this.options.onFatal(err);
      return;
    }
    // A refusal to vote is a plain message; a storage failure shows where it came from.
    const text = this.core.mode === 'failed' ? err.message : `paxoskv replica ${this.options.id}: storage failed, stopping: ${err.stack ?? err.message}`;
    process.stderr.write(`error: ${text}\n`);
    process.exit(1);
  }
}

/** A rough size of a message on the wire (bytes): its values, keys and sessions dominate. */
function messageBytes(m: PeerMessage): number {
  const entryBytes = (e: { value: Uint8Array | null; sessions: readonly { client: string; writes: readonly unknown[] }[] } | null): number => {
    if (e === null) return 0;
    let n = 64 + (e.value?.length ?? 0);
    for (const s of e.sessions) n += 32 + s.client.length + 24 * s.writes.length;
    return n;
  };
  let n = 64 + m.key.length * 3;
  if (m.type === 'accept' || m.type === 'chosen' || m.type === 'learn') n += entryBytes(m.entry);
  else if (m.type === 'promise') n += entryBytes(m.acceptedEntry);
  else if (m.type === 'readState') n += entryBytes(m.entry);
  else if (m.type === 'keyList') for (const k of m.keys) n += 16 + k.key.length * 3;
  return n;
}

/**
 * Splits one peer's messages into batches of at most `limit` estimated bytes each, in order (a
 * single message larger than `limit` goes alone).
 * @param messages - the messages for one peer.
 * @param limit - the most bytes per batch.
 * @returns the batches, none empty.
 */
export function splitBatch(messages: readonly PeerMessage[], limit: number): PeerMessage[][] {
  const out: PeerMessage[][] = [];
  let current: PeerMessage[] = [];
  let bytes = 0;
  for (const m of messages) {
    const size = messageBytes(m);
    if (current.length > 0 && bytes + size > limit) {
      out.push(current);
      current = [];
      bytes = 0;
    }
    current.push(m);
    bytes += size;
  }
  if (current.length > 0) out.push(current);
  return out;
}

/**
 * Validates a write's identity from a client.
 * @returns the core's WriteId, or null when the request carries none.
 * @throws RpcError INVALID_ARGUMENT naming the bad field.
 */
function writeIdFrom(pb: WriteIdPb | undefined): WriteId | null {
  if (pb === undefined) return null;
  const bad = (why: string) => kvErrors.INVALID_WRITE_ID(why);
  if (pb.client.length === 0) throw bad('client must not be empty');
  if (Buffer.byteLength(pb.client) > MAX_CLIENT_ID_BYTES) throw bad(`client is longer than ${MAX_CLIENT_ID_BYTES} bytes`);
  const max = BigInt(Number.MAX_SAFE_INTEGER);
  for (const [name, v] of [['seq', pb.seq], ['acked_below', pb.ackedBelow], ['sent_at_ms', pb.sentAtMs], ['expires_at_ms', pb.expiresAtMs]] as const) {
    if (v > max) throw bad(`${name} ${v} is out of range`);
  }
  const id: WriteId = {
    client: pb.client,
    seq: Number(pb.seq),
    ackedBelow: Number(pb.ackedBelow),
    sentAt: Number(pb.sentAtMs),
    expiresAt: Number(pb.expiresAtMs),
  };
  if (id.seq < 1) throw bad('seq must be at least 1');
  if (id.ackedBelow > id.seq) throw bad(`acked_below ${id.ackedBelow} is above the write's own seq ${id.seq}`);
  if (id.expiresAt < id.sentAt) throw bad(`expires_at_ms ${id.expiresAt} is before sent_at_ms ${id.sentAt}`);
  if (id.expiresAt - id.sentAt > MAX_WRITE_LIFETIME_MS) throw bad(`expires_at_ms is more than ${MAX_WRITE_LIFETIME_MS} ms after sent_at_ms`);
  // A key's log time is the largest sent_at_ms written to it: a client clock far ahead would make
  // every other client's writes to that key expire until real time catches up.
  const ahead = id.sentAt - Date.now();
  if (ahead > MAX_CLIENT_CLOCK_AHEAD_MS) {
    throw bad(`sent_at_ms is ${Math.round(ahead / 1000)} s ahead of this replica's clock (at most ${MAX_CLIENT_CLOCK_AHEAD_MS / 1000} s): check the client's clock`);
  }
  return id;
}

/**
 * Checks a key a request names; `system` allows the system's own keys (operator calls: digest,
 * repair), `read` the one clients may read and watch (the routing table's).
 */
function checkKey(key: string, system = false, read = false): void {
  if (key.length === 0) throw kvErrors.EMPTY_KEY();
  if (!system && isSystemKey(key) && !(read && key === ROUTING_KEY)) throw kvErrors.SYSTEM_KEY();
  if (Buffer.byteLength(key) > MAX_KEY_BYTES) throw kvErrors.KEY_TOO_LONG(MAX_KEY_BYTES);
}

function checkValue(value: Uint8Array): void {
  if (value.length > MAX_VALUE_BYTES) {
    throw kvErrors.VALUE_TOO_LARGE(value.length, MAX_VALUE_BYTES);
  }
}

function writeReply(r: ClientResult): WriteReply {
  if (r.ok && r.kind === 'write') return { version: BigInt(r.version) };
  throw toRpcError(r);
}

function toRpcError(r: ClientResult): RpcError {
  if (r.ok) return kvErrors.UNEXPECTED_RESULT();
  const entry = r.notApplied === true ? kvErrors.REPLICA_UNAVAILABLE_NOT_APPLIED : CORE_OUTCOMES[r.status];
  return r.version === undefined ? entry(r.message) : entry.with({ metadata: { 'x-version': String(r.version) } }, r.message);
}

/** The client API, backed by the replica. */
class ClientApi extends PaxosKVService {
  constructor(private readonly replica: PaxosKVReplica) {
    super();
  }

  override async get(request: GetRequest, call: CallContext): Promise<GetReply> {
    checkKey(request.key, false, true);
    this.replica.checkRoute(request.key);
    const r = await this.replica.request(request.key, { kind: 'get' }, call.deadline);
    if (!r.ok || r.kind !== 'get') throw toRpcError(r);
    return { found: r.value !== null, value: r.value ?? new Uint8Array(0), version: BigInt(r.version) };
  }

  override async put(request: PutRequest, call: CallContext): Promise<WriteReply> {
    checkKey(request.key);
    checkValue(request.value);
    this.replica.checkRoute(request.key);
    return writeReply(await this.replica.request(request.key, { kind: 'put', value: request.value, id: writeIdFrom(request.writeId) }, call.deadline));
  }

  override async delete(request: DeleteRequest, call: CallContext): Promise<WriteReply> {
    checkKey(request.key);
    this.replica.checkRoute(request.key);
    return writeReply(await this.replica.request(request.key, { kind: 'delete', id: writeIdFrom(request.writeId) }, call.deadline));
  }

  override async compareAndSet(request: CompareAndSetRequest, call: CallContext): Promise<WriteReply> {
    checkKey(request.key);
    checkValue(request.value);
    if (request.expectedVersion > BigInt(Number.MAX_SAFE_INTEGER)) throw kvErrors.EXPECTED_VERSION_OUT_OF_RANGE();
    this.replica.checkRoute(request.key);
    return writeReply(
      await this.replica.request(request.key, {
        kind: 'cas',
        expectedVersion: Number(request.expectedVersion),
        value: request.value,
        id: writeIdFrom(request.writeId),
      }, call.deadline),
    );
  }

  override async status(_request: StatusRequest): Promise<StatusReply> {
    return this.replica.status();
  }

  override async members(_request: MembersRequest, call: CallContext): Promise<MembersReply> {
    const c = await this.replica.members(call.deadline);
    return { configuration: membershipToPb(c, (m) => this.replica.addressOf(m)) };
  }

  override async changeMembers(request: ChangeMembersRequest, call: CallContext): Promise<MembersReply> {
    this.replica.checkAdmin('ChangeMembers');
    let change: MembershipChange;
    try {
      change = changeFromPb(request);
    } catch (err) {
      if (err instanceof MembershipError) throw kvErrors.INVALID_MEMBERSHIP_CHANGE(err.message);
      throw err;
    }
    const c = await this.replica.changeMembers(change, call.deadline);
    return { configuration: membershipToPb(c, (m) => this.replica.addressOf(m)) };
  }

  override async routing(): Promise<RoutingReply> {
    return this.replica.routingReply();
  }

  override async setRouting(request: SetRoutingRequest, call: CallContext): Promise<RoutingReply> {
    this.replica.checkAdmin('SetRouting');
    return this.replica.setRouting(request.table, call.deadline);
  }

  override async digest(request: DigestRequest): Promise<DigestReply> {
    const limit = request.limit === 0 ? 1000 : Math.min(request.limit, 10_000);
    if (!request.fromStart) checkKey(request.after, true);
    return this.replica.digest(request.fromStart ? null : request.after, limit);
  }

  override async repair(request: RepairRequest): Promise<RepairReply> {
    this.replica.checkAdmin('Repair');
    checkKey(request.key, true);
    return { repairing: this.replica.repair(request.key) };
  }

  override async *watch(request: WatchRequest, call: CallContext): AsyncIterable<WatchEventPb> {
    checkKey(request.key, false, true);
    if (request.fromVersion > BigInt(Number.MAX_SAFE_INTEGER)) throw kvErrors.FROM_VERSION_OUT_OF_RANGE();
    this.replica.checkRoute(request.key);
    for await (const e of this.replica.watch(request.key, Number(request.fromVersion), call.signal)) {
      yield { version: BigInt(e.version), found: e.value !== null, value: e.value ?? new Uint8Array(0), gap: e.gap };
    }
  }

  override async list(request: ListRequest, call: CallContext): Promise<ListReply> {
    if (Buffer.byteLength(request.prefix) > MAX_KEY_BYTES) throw kvErrors.KEY_TOO_LONG(MAX_KEY_BYTES);
    if (isSystemKey(request.prefix)) throw kvErrors.SYSTEM_KEY();
    if (request.after !== '') checkKey(request.after);
    this.replica.checkListGroup(call.metadata);
    const limit = request.limit === 0 ? 100 : Math.min(request.limit, 1000);
    const { items, more } = this.replica.list(request.prefix, request.after, limit);
    return { items: items.map((i) => ({ key: i.key, version: BigInt(i.version), value: i.value })), more };
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

/** Whether `file` exists (false for ENOENT; other errors are thrown). */
async function fileExists(file: string): Promise<boolean> {
  try {
    await fsp.access(file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}
