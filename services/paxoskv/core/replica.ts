/**
 * One PaxosKV replica's decisions, as a pure state machine: client requests, peer messages and
 * clock ticks in; records to persist, messages to send and client replies out (`Output`). It does
 * no I/O, keeps no timers and draws no randomness of its own: `now` and `random` are inputs, so a
 * simulator can drive many replicas deterministically from a seed (the shape of etcd-io/raft's
 * `Step`).
 *
 * The protocol is PaxosStore's (Zheng et al., VLDB 2017) on per-key logs:
 * - Writes propose the next entry of the key's log. The member that proposed the latest chosen
 *   entry may skip prepare (round-0 ballot, the fast path); everyone else runs two-phase Paxos
 *   with rising rounds and randomized backoff, for a bounded number of rounds.
 * - A proposer's own acceptor always takes its promise or accept first, and the driver persists it
 *   before anything is sent, so a restarted replica never reuses a ballot with another value.
 * - Reads ask a majority for their chosen index and pending state; they answer from the local
 *   entry when no newer entry exists and nothing is pending, after learning any newer entry, and
 *   otherwise finish the pending instance with a prepare/accept round first.
 * - A compare-and-set is decided against the entry it would follow: it succeeds by being chosen
 *   right after the expected version, and fails only after a read confirmed the current version.
 * - Replicas that see they missed entries catch up from the peer that showed them.
 * - A learner-only replica votes in nothing and serves no clients; it only learns chosen entries.
 *   Quorums are those of the membership configuration the replica adopted last (membership.ts:
 *   majorities of the voters; in a joint configuration, majorities of both halves). The
 *   configuration is chosen in the configuration key (`CONFIG_KEY`, version v holding epoch v+1);
 *   prepares, accepts, reads and key listings carry the sender's epoch, and a replica votes in or
 *   answers only those of exactly its own epoch (the epoch fence). A message of a newer epoch is
 *   held while the replica catches the configuration up, then answered.
 * - Membership changes (membership.ts) go through a joint configuration: the voters of its next
 *   half sync every key from a majority of the first half (listing keys, learning each latest
 *   entry, deciding pending instances with their own reads), tell every member (`synced`), and a
 *   synced one proposes `finish` once a majority of them and every new member synced. A new
 *   member starts `join`ing: it asks the cluster for the configuration until one names it. A
 *   replica a configuration removes stops, and still answers peers with the configuration.
 * - Writes are exactly-once through client sessions kept in the key's log (see `writeOutcome`
 *   in types.ts): a retried write is answered with its original version, a late or expired
 *   attempt is refused, and no replica clock decides which.
 * - A replica that starts votes only once a majority of the other voters recorded its new
 *   incarnation and none had seen a newer one than its data dir holds: a data dir restored from
 *   an older copy, or emptied, is caught before it can vote with forgotten promises. A replica that
 *   lost its data rejoins (`start.kind === 'rejoin'`): it lists every other voter's keys and sets
 *   each key's fence two instances past the highest chosen index any of them reports, so it never
 *   votes again in an instance it may have voted in before the loss (Chandra et al., "Paxos Made
 *   Live", 2007, section 5.1: a replica that lost its disk rebuilds as a non-voting member first).
 * - A key whose stored record failed its checksum (the store returns `LOST_RECORD`) is lost on its
 *   own, and repaired the same way, for that key only: until then the replica votes on it in
 *   nothing, answers no read, catch-up or learn of it, and refuses its client operations
 *   (UNAVAILABLE: another replica serves them). It asks every other voter for the key's state (a
 *   read), fences the key two instances past the highest chosen index any of them reports (three
 *   when one accepted a value after it), learns the latest chosen entry, has a voter decide a
 *   pending instance first when one reports it, and then persists the repaired record.
 */
import { learn, onAccept, onPrepare, readState, sameEntry } from './acceptor.js';
import {
  checkTransition,
  decodeConfiguration,
  describeConfiguration,
  encodeConfiguration,
  finishChange,
  finishWaitsFor,
  initialConfiguration,
  isQuorum,
  membersOf,
  quorumStillPossible,
  roleOf,
  votersOf,
  type Configuration,
} from './membership.js';
import {
  ballotOf,
  chosenIndex,
  CONFIG_KEY,
  EMPTY_RECORD,
  epochRound,
  isFastBallot,
  MAX_EPOCH,
  ROUNDS_PER_EPOCH,
  emptyOutput,
  LOST_RECORD,
  incarnationCounter,
  INCARNATION_NONCES,
  MAX_WRITES_PER_SESSION,
  nextEntry,
  roundOf,
  writeOutcome,
  type Ballot,
  type ClientOp,
  type ClientResult,
  type Entry,
  type KeyRecord,
  type MemberId,
  type Output,
  type PeerMessage,
} from './types.js';

/** Where the core reads records: the driver's durable store plus writes not yet committed. */
export interface RecordSource {
  /** The latest record of `key` (including persists handed out and not yet durable), or undefined. */
  get(key: string): KeyRecord | undefined;
  /**
   * Keys with a record, strictly after `after` in the source's order, at most `limit` (for a
   * rejoining peer's sweep; the order only has to be the same on every call).
   */
  keysAfter(after: string, limit: number): string[];
}

/**
 * How the replica's data dir looked when the driver opened it, and what it recorded:
 * - `existing`: a data dir with records (a restart);
 * - `fresh`: the dir was missing or empty and was just created (a new member of a new cluster);
 * - `rejoin`: the dir was empty and the operator said the replica lost its data (`--rejoin`), or
 *   a rejoin was under way when the replica stopped;
 * - `join`: a new member joins a running cluster (`--join`): it learns the configuration from
 *   {@link ReplicaConfig.join}'s members, waits until a configuration names it, and then syncs
 *   every key (membership.ts). Its data dir is new, or holds no configuration that names it yet.
 */
export interface StartState {
  kind: 'existing' | 'fresh' | 'rejoin' | 'join';
  /** The confirmed incarnation stored in the data dir (0 for a new one). */
  incarnation: number;
  /** Incarnations announced since the confirmed one, by starts whose check did not finish. */
  announced?: readonly number[];
  /** The highest incarnation this replica has recorded for each peer. */
  peerIncarnations: ReadonlyMap<MemberId, number>;
}

/**
 * @internal Bugs the simulator's mutation tests plant in the core, to show that it catches them.
 * Never set outside tests.
 */
export type CorePlantedBug = 'round0-reuse' | 'dedupe-window-8' | 'learn-keeps-accepted' | 'vote-on-lost-key' | 'repair-fence-short' | 'old-config-quorum';

/** Replica settings. Times are in ms of the `now` the driver passes (a monotonic clock). */
export interface ReplicaConfig {
  /** This replica's member id. */
  id: MemberId;
  /**
   * Every member of the cluster's first configuration, this one included (ignored for a `join`
   * start, and when {@link configuration} is given).
   */
  members: readonly MemberId[];
  /**
   * Members of the running cluster to learn the configuration from: for a `join` start, the
   * replica asks them for the configuration key until a configuration names it; any other
   * starting replica asks them with its start check (a rejoin on an empty data dir starts from
   * the first configuration).
   */
  join?: readonly MemberId[];
  /**
   * Members that only learn chosen entries: they never vote, serve no clients, and are outside
   * the majority, which is a majority of the other members (the voters; there must be one).
   */
  learners?: readonly MemberId[];
  /**
   * The data dir at start. The replica then votes only after a majority of the other voters
   * recorded its new incarnation and none had seen a newer one than its data dir holds (so a data
   * dir restored from an older copy, or an empty one for a member that existed, is caught), and,
   * for `rejoin`, after fencing every key its peers hold. Absent: the replica votes at once (unit
   * tests of the protocol rules; the driver always passes it).
   */
  start?: StartState;
  /**
   * The membership configuration the data dir adopted last (its meta record), when it is not the
   * first: it replaces `members` and `learners` (which still name the cluster's first
   * configuration). See membership.ts.
   */
  configuration?: Configuration;
  /** How long a phase waits for a majority before it retries (ms). Default 200. */
  phaseTimeoutMs?: number;
  /** Phases tried per operation before it fails with UNAVAILABLE. Default 10. */
  maxAttempts?: number;
  /** Base of the randomized backoff after a lost round (ms). Default 10. */
  backoffMs?: number;
  /** Keys per page of a rejoin sweep. Default 1000. */
  sweepPageSize?: number;
  /** @internal Test-only: a planted bug (see {@link CorePlantedBug}). */
  plantedBug?: CorePlantedBug;
}

/**
 * What a replica is doing:
 * - `checking`: confirming its incarnation with the other voters; no votes, no clients;
 * - `rejoining`: it lost its data; it fences every key its peers hold, then votes; no clients;
 * - `voter`: it votes and serves clients;
 * - `learner`: it only learns chosen entries (a configured learner);
 * - `joining`: a new member waiting for a configuration that names it (see {@link StartState});
 * - `failed`: it found its data dir unsafe to use, or was removed from the cluster, and stopped
 *   (see {@link Replica.failure} and {@link Replica.removed}).
 */
export type ReplicaMode = 'checking' | 'rejoining' | 'voter' | 'learner' | 'joining' | 'failed';

/** Progress of a rejoin: voters whose keys were all fenced, of how many, and keys fenced so far. */
export interface RejoinProgress {
  /** Other voters whose whole key list this replica has fenced. */
  readonly peersDone: number;
  /** Other voters it must list (all of them). */
  readonly peers: number;
  /** Keys that got a fence so far. */
  readonly keysFenced: number;
}

type Phase = 'read' | 'prepare' | 'accept' | 'backoff';

interface Task {
  readonly ref: number;
  readonly key: string;
  readonly op: ClientOp;
  /** The caller's deadline: no new decision starts after it. */
  readonly deadline: number;
  phase: Phase;
  attempts: number;
  wakeAt: number;
  /** True once a read phase established the latest entry (CAS failures and gets need it). */
  confirmed: boolean;
  /** Highest round seen in rejects, so the next ballot beats it. */
  maxRound: number;
  // read phase
  readId: number;
  readReplies: Map<MemberId, { chosenIndex: number; pendingAccepted: Ballot }>;
  // proposal phases
  index: number;
  ballot: Ballot;
  /** The value proposed in the accept phase (ours, or a recovered one). */
  entry: Entry | null;
  /** Our own entry for this attempt (null for a read's recovery round). */
  own: Entry | null;
  /** Whether an accept carrying our own entry was ever sent: from then on, a failure leaves the outcome unknown. */
  sentOwn: boolean;
  promises: Map<MemberId, { accepted: Ballot; acceptedEntry: Entry | null }>;
  accepts: Set<MemberId>;
  /** Members that refused the current phase's ballot. */
  rejects: Set<MemberId>;
}


/** The repair of a key whose stored record failed its checksum. */
interface LostKey {
  /** The read id its repair asks the other voters with. */
  readonly readId: number;
  /** When it last asked (ms). */
  askedAt: number;
  /** What each other voter reported: its chosen index, and whether it accepted a value after it. */
  readonly replies: Map<MemberId, { chosenIndex: number; pending: boolean }>;
  /** The newest chosen entry learned so far. */
  best: Entry | null;
  /** The first instance it may vote in again (the highest chosen index reported + 2, + 3 after a pending accept). */
  fence: number;
  /** The chosen index it must hold before it serves and votes on the key again. */
  wanted: number;
  /** The voter asked to decide the pending instance (`finish`) or to send what it chose. */
  target: { from: MemberId; finish: boolean } | undefined;
}

/** Most unconfirmed starts a replica remembers (and a hello carries). */
export const MAX_ANNOUNCED = 100;

interface SweepState {
  /** The last key listed so far ('' before the first page). */
  after: string;
  done: boolean;
  /** The id of the page request in flight; answers to others are stale. */
  listId: number;
  sentAt: number;
}

/** A key to learn up to `index`; `from` reported it, and decides the pending instance first when `finish`. */
interface SyncTarget {
  index: number;
  from: MemberId;
  finish: boolean;
  /** A read of this replica with an id at least this one began after the target was made. */
  readsFrom: number;
}

/**
 * A sync (membership.ts): a voter of a joint configuration's next half, or a new learner, learns
 * every key's latest chosen entry from a majority of the first half's voters at this epoch.
 */
interface SyncState {
  readonly epoch: number;
  /** The first half's voters: a majority of them must have listed every key. */
  readonly sources: readonly MemberId[];
  /** The listing of each other source. */
  readonly sweeps: Map<MemberId, SweepState>;
  /** Whether this replica's own records count as one listing (a voter of the first half). */
  readonly selfCounts: boolean;
  /**
   * With `selfCounts`: the last of its own keys listed so far ('' before the first page), or null
   * once all are. A page at a time, one per step, so that a large store does not stall the replica.
   */
  ownAfter: string | null;
  /** Keys to learn before the sync is done. */
  readonly targets: Map<string, SyncTarget>;
  catchUpSentAt: number;
  done: boolean;
  /** When `synced` was last sent to every member. */
  noticeSentAt: number;
}

/** How many of a sync's sources have listed every key (this replica's own listing included). */
function listingsDone(sync: SyncState): number {
  let n = sync.selfCounts && sync.ownAfter === null ? 1 : 0;
  for (const s of sync.sweeps.values()) if (s.done) n++;
  return n;
}

/** The messages that carry the sender's epoch, which the epoch fence checks. */
type EpochMessage = Extract<PeerMessage, { type: 'prepare' | 'accept' | 'read' | 'listKeys' }>;

/** Most keys a replica remembers having written under its current epoch (the fast path's condition). */
const MAX_OWNED_REMEMBERED = 100_000;

/** Most newer-epoch messages a replica holds while it catches up the configuration. */
const MAX_DEFERRED = 10_000;
/** How many phase timeouts apart a synced replica tells its sync again, and proposes `finish` again. */
const SYNC_NOTICE_PHASES = 5;

/** One replica's core; see the module comment. */
export class Replica {
  /**
   * Who votes, and which answers make a quorum (membership.ts): the first configuration, or the
   * latest chosen in {@link CONFIG_KEY} that this replica learned (adopted).
   */
  private configuration!: Configuration;
  /** Other members that vote: prepares, accepts and reads go to them. */
  private otherVoters!: readonly MemberId[];
  /** Every other member (voters and learners): chosen entries are announced to them. */
  private peers!: readonly MemberId[];
  private voterSet!: ReadonlySet<MemberId>;
  /** Every member of the configuration (both halves, voters and learners), this one included. */
  private memberSet!: ReadonlySet<MemberId>;
  private readonly phaseTimeoutMs: number;
  private readonly maxAttempts: number;
  private readonly backoffMs: number;
  private readonly sweepPageSize: number;
  /** The running task of each key, and the queue behind it. */
  private readonly tasks = new Map<string, Task>();
  private readonly queues = new Map<string, Array<{ ref: number; op: ClientOp; deadline: number }>>();
  /** Keys whose next queued operation `finish` is to start (a loop, not recursion: see `finish`). */
  private readonly toStart: string[] = [];
  private startingQueued = false;
  /** Keys this replica knows it is missing entries of: key -> the index it has seen exist. */
  private readonly laggingKeys = new Map<string, number>();
  private nextReadId = 1;
  private out: Output = emptyOutput();
  private phase: ReplicaMode;
  private failureText: string | undefined;
  /** This replica's incarnation (while checking: the one it is announcing). */
  private incarnationNow: number;
  /** Incarnations announced since the confirmed one (this start's included). */
  private announced: number[];
  /** Every incarnation of this member up to this one came from this data dir: the confirmed one, or higher. */
  private knownUpTo: number;
  private readonly peerIncarnations: Map<MemberId, number>;
  /**
   * While rejoining: keys this replica must learn up to `index` before it votes (a peer listed that
   * index chosen, or a value accepted after it, which `from` is asked to decide when `finish`).
   */
  private readonly rejoinTargets = new Map<string, { index: number; from: MemberId; finish: boolean }>();
  /** Replicas that asked this one to decide a key's pending instance, by key. */
  private readonly finishRequests = new Map<string, Set<MemberId>>();
  private catchUpSentAt = -Infinity;
  /** While checking: the members that recorded the announced incarnation. */
  private helloAcks = new Set<MemberId>();
  private helloSentAt = -Infinity;
  private readonly sweeps = new Map<MemberId, SweepState>();
  private nextListId = 1;
  private keysFenced = 0;
  private begun = false;
  /** Keys whose stored record failed its checksum, being repaired (see the module comment). */
  private readonly lostKeys = new Map<string, LostKey>();
  /** The read id of each lost key's repair, to the key. */
  private readonly repairReads = new Map<number, string>();
  /** Lost keys found, and repaired, since this replica started. */
  private lostFound = 0;
  private lostRepaired = 0;
  /** The latest `now` an input brought (a lost key found inside a step is asked about at that time). */
  private lastNow = 0;
  /** The last stable configuration before this one (only the planted bug 'old-config-quorum' uses it). */
  private oldConfiguration: Configuration | undefined;
  /** The sync of the current configuration, or the last one (see {@link SyncState}). */
  private sync: SyncState | undefined;
  /** Members that told their sync for the current joint configuration (this one included). */
  private syncedBy = new Set<MemberId>();
  /** Syncs this replica finished since it started. */
  private syncsDone = 0;
  /** When this replica last proposed `finish` (ms). */
  private finishProposedAt = -Infinity;
  /** A joining replica first named a learner syncs once (a voter syncs in every joint configuration). */
  private learnerSyncDue = false;
  /** Whether a configuration removed this replica (it then stops; see `failRemoved`). */
  private removedFromCluster = false;
  /** Prepares, accepts, reads and listings of a newer epoch, held until this replica adopts it. */
  private deferred: Array<{ from: MemberId; msg: EpochMessage }> = [];
  /** Set when a configuration was adopted in this step: `settle` finishes what follows from it. */
  private adopted = false;
  /**
   * Keys whose latest entry this replica had chosen under its current epoch, with that entry's
   * index (the fast path's condition; emptied by every adoption, and empty at start).
   */
  private readonly ownedInEpoch = new Map<string, number>();
  /** When this replica last asked each peer for the configuration (ms). */
  private readonly configurationAskedAt = new Map<MemberId, number>();
  /** While joining: when it last asked for the configuration (ms). */
  private joinAskedAt = -Infinity;

  /**
   * @param config - membership, start state and timing.
   * @param store - where records are read.
   * @param random - uniform [0, 1) source for backoff (seeded in simulations).
   * @throws Error when the configuration is inconsistent (id not a member, duplicate ids, a
   *   learner that is not a member, no voter).
   */
  constructor(
    private readonly config: ReplicaConfig,
    private readonly store: RecordSource,
    private readonly random: () => number,
  ) {
    const joining = config.start?.kind === 'join';
    if (joining) {
      const ask = (config.join ?? []).filter((m) => m !== config.id);
      if (ask.length === 0 && config.configuration === undefined) throw new Error(`a joining replica needs members of the running cluster to ask (join)`);
      // Until it learns the cluster's configuration: a placeholder of epoch 0, which every real one follows.
      this.useConfiguration(config.configuration ?? { epoch: 0, voters: [...new Set(ask)].sort((a, b) => a - b), learners: [] });
    } else if (config.configuration !== undefined) {
      this.useConfiguration(config.configuration);
    } else {
      const members = config.members;
      if (!members.includes(config.id)) throw new Error(`member ${config.id} is not in the membership [${members.join(', ')}]`);
      if (new Set(members).size !== members.length) throw new Error(`duplicate member ids in [${members.join(', ')}]`);
      const learners = new Set(config.learners ?? []);
      for (const l of learners) if (!members.includes(l)) throw new Error(`learner ${l} is not in the membership [${members.join(', ')}]`);
      const voters = members.filter((m) => !learners.has(m));
      if (voters.length === 0) throw new Error(`membership [${members.join(', ')}] has no voter: every member is a learner`);
      if (voters.length % 2 === 0) throw new Error(`a cluster needs an odd number of voters, got ${voters.length} ([${voters.join(', ')}])`);
      this.useConfiguration(initialConfiguration(voters, [...learners]));
    }
    this.phaseTimeoutMs = config.phaseTimeoutMs ?? 200;
    this.maxAttempts = config.maxAttempts ?? 10;
    this.backoffMs = config.backoffMs ?? 10;
    this.sweepPageSize = config.sweepPageSize ?? 1000;
    const start = config.start;
    this.peerIncarnations = new Map(start?.peerIncarnations ?? []);
    this.incarnationNow = start?.incarnation ?? 0;
    this.announced = [...(start?.announced ?? [])];
    this.knownUpTo = start?.incarnation ?? 0;
    // The configuration key's record can be ahead of the meta record (a data dir an older svrkit
    // opened, which kept the records but not the field): the record holds the chosen configuration.
    const stored = store.get(CONFIG_KEY);
    if (stored !== undefined && stored !== LOST_RECORD && stored.chosen !== null && stored.chosen.index + 1 > this.configuration.epoch) {
      const c = this.configurationOf(stored.chosen);
      if (typeof c !== 'string') {
        this.useConfiguration(c);
        this.out.meta = { ...this.out.meta, configuration: c };
      }
    }
    const role = roleOf(this.configuration, config.id);
    if (joining && role === 'removed') this.phase = 'joining';
    else if (role === 'learner') this.phase = 'learner';
    else if (start === undefined) this.phase = 'voter';
    else this.phase = 'checking';
    if (role === 'removed' && !joining) this.failRemoved();
  }

  /** Takes `c` as the configuration: who votes, who learns, what a quorum is. */
  private useConfiguration(c: Configuration): void {
    // (Unset only in the constructor's first call.)
    if (this.configuration !== undefined && this.configuration.next === undefined) this.oldConfiguration = this.configuration;
    this.configuration = c;
    const voters = votersOf(c);
    this.voterSet = new Set(voters);
    this.otherVoters = voters.filter((m) => m !== this.config.id);
    const members = membersOf(c);
    this.memberSet = new Set(members);
    this.peers = members.filter((m) => m !== this.config.id);
  }

  /** The configuration this replica acts under (see membership.ts). */
  get membership(): Configuration {
    return this.configuration;
  }

  /** Whether `member` is a member (voter or learner, either half) of the configuration this replica acts under. */
  isMember(member: MemberId): boolean {
    return this.memberSet.has(member);
  }

  /** The configuration whose quorums the proposer counts: the current one (a planted bug counts by the stable one before the change, on odd members). */
  private get quorumConfiguration(): Configuration {
    // Planted on the odd members only: replicas that all counted by the old one would agree with each other.
    const buggy = this.config.plantedBug === 'old-config-quorum' && this.config.id % 2 === 1;
    return buggy && this.oldConfiguration !== undefined ? this.oldConfiguration : this.configuration;
  }

  /**
   * The first step, before any other: with a start state, the replica takes its next incarnation
   * (persisted before anything is sent) and, unless it is a learner, announces it to the other
   * voters (see {@link ReplicaConfig.start}). Later calls return an empty output.
   */
  begin(now: number): Output {
    if (this.begun || this.config.start === undefined) return this.flush();
    this.begun = true;
    const highest = Math.max(this.config.start.incarnation, ...this.announced);
    this.takeIncarnation(incarnationCounter(highest) + 1);
    if (this.phase === 'learner' || this.phase === 'joining') {
      // A learner does not vote, and a joining replica never voted: nothing to confirm now. Its
      // starts stay announced (unconfirmed): should a configuration make it a voter, it checks
      // them with the voters first (`startVoting`).
      if (this.phase === 'joining') this.askToJoin(now);
    } else this.sendHello(now);
    return this.flush();
  }

  /** What the replica is doing (see {@link ReplicaMode}). */
  get mode(): ReplicaMode {
    return this.phase;
  }

  /** Why the replica stopped, when `mode` is `failed`. */
  get failure(): string | undefined {
    return this.failureText;
  }

  /** Whether the replica stopped because a configuration removed it from the cluster. */
  get removed(): boolean {
    return this.removedFromCluster;
  }

  /**
   * The sync of the current configuration (membership.ts), when this replica runs or ran one:
   * its epoch, whether it is done, the first-half voters whose key lists are done (this replica
   * counts as one when it is one of them), and keys it still waits for. `synced` lists the members
   * known to have synced for the current joint configuration; `syncsDone` counts syncs since start.
   */
  get syncProgress(): { epoch: number; done: boolean; listed: number; sources: number; keysWaiting: number; synced: MemberId[]; syncsDone: number } | undefined {
    const sync = this.sync;
    if (sync === undefined || sync.epoch !== this.configuration.epoch) return undefined;
    const listed = listingsDone(sync);
    return {
      epoch: sync.epoch,
      done: sync.done,
      listed,
      sources: sync.sources.length,
      keysWaiting: sync.targets.size,
      synced: [...this.syncedBy].sort((a, b) => a - b),
      syncsDone: this.syncsDone,
    };
  }

  /** This replica's incarnation: how many times it started on its data dir (rejoins count on). */
  get incarnation(): number {
    return incarnationCounter(this.incarnationNow);
  }

  /** The members that vote, ascending. */
  get voters(): MemberId[] {
    return [...this.voterSet].sort((a, b) => a - b);
  }

  /** How many times a peer started, as far as this replica recorded (0 when never). */
  peerIncarnation(member: MemberId): number {
    return incarnationCounter(this.peerIncarnations.get(member) ?? 0);
  }

  /** While rejoining: how far the sweep got; otherwise undefined. */
  get rejoinProgress(): RejoinProgress | undefined {
    if (this.phase !== 'rejoining') return undefined;
    let done = 0;
    for (const s of this.sweeps.values()) if (s.done) done++;
    return { peersDone: done, peers: this.otherVoters.length, keysFenced: this.keysFenced };
  }

  /** This replica's member id. */
  get id(): MemberId {
    return this.config.id;
  }

  /** Keys this replica knows it lags on (catch-up requested, not yet learned). */
  get laggingCount(): number {
    return this.laggingKeys.size;
  }

  /** Whether `key` is being repaired (its record failed its checksum, or `forget` was called). */
  isRepairing(key: string): boolean {
    return this.lostKeys.has(key);
  }

  /** Keys whose stored record failed its checksum: being repaired now, found since start, and repaired since start. */
  get lostKeyCounts(): { repairing: number; found: number; repaired: number } {
    return { repairing: this.lostKeys.size, found: this.lostFound, repaired: this.lostRepaired };
  }

  /**
   * Treats `key` as lost (as if its record had failed its checksum) and repairs it from the other
   * voters: for a replica whose chosen entry of the key differs from the others' (`svrkit kv
   * verify --repair`). Always safe: a lost key only stops voting and serving until it is fenced and
   * caught up.
   * @param key - the key; `now` - the driver's monotonic clock (ms).
   * @returns the output, and whether the key is being repaired (false for a single voter, which has
   *   no one to repair from, and while this replica does not vote yet).
   */
  forget(key: string, now: number): { output: Output; repairing: boolean } {
    this.lastNow = now;
    if (this.phase !== 'voter' || this.otherVoters.length === 0) return { output: this.flush(), repairing: false };
    if (!this.lostKeys.has(key)) this.noteLost(key);
    return { output: this.flush(), repairing: true };
  }

  /**
   * Keys the driver found lost when it opened the store (their records failed their checksums):
   * their repair starts now, instead of when they are first touched.
   * @param keys - the keys; `now` - the driver's monotonic clock (ms).
   */
  markLost(keys: readonly string[], now: number): Output {
    this.lastNow = now;
    for (const key of keys) if (!this.out.persist.has(key) && this.store.get(key) === LOST_RECORD) this.noteLost(key);
    return this.flush();
  }

  /** Operations running or queued. */
  get pendingOperations(): number {
    let n = this.tasks.size;
    for (const q of this.queues.values()) n += q.length;
    return n;
  }

  /** The earliest time `tick` has something to do, or undefined. */
  nextWake(): number | undefined {
    let min: number | undefined;
    for (const t of this.tasks.values()) if (min === undefined || t.wakeAt < min) min = t.wakeAt;
    if (this.phase === 'checking') min = Math.min(min ?? Infinity, this.helloSentAt + this.phaseTimeoutMs);
    if (this.phase === 'rejoining') {
      for (const s of this.sweeps.values()) if (!s.done) min = Math.min(min ?? Infinity, s.sentAt + this.phaseTimeoutMs);
      if (this.rejoinTargets.size > 0) min = Math.min(min ?? Infinity, this.catchUpSentAt + this.phaseTimeoutMs);
    }
    if (this.phase !== 'failed') for (const l of this.lostKeys.values()) min = Math.min(min ?? Infinity, l.askedAt + this.phaseTimeoutMs);
    if (this.phase === 'joining') min = Math.min(min ?? Infinity, this.joinAskedAt + this.phaseTimeoutMs);
    const sync = this.sync;
    if (sync !== undefined && sync.epoch === this.configuration.epoch && (this.phase === 'voter' || this.phase === 'learner')) {
      if (!sync.done) {
        if (sync.ownAfter !== null) min = Math.min(min ?? Infinity, this.lastNow);
        for (const s of sync.sweeps.values()) if (!s.done) min = Math.min(min ?? Infinity, s.sentAt + this.phaseTimeoutMs);
        if (sync.targets.size > 0) min = Math.min(min ?? Infinity, sync.catchUpSentAt + this.phaseTimeoutMs);
      } else if (this.configuration.next !== undefined) min = Math.min(min ?? Infinity, sync.noticeSentAt + SYNC_NOTICE_PHASES * this.phaseTimeoutMs);
    }
    return min;
  }

  /**
   * A client operation on `key`. The reply comes in this or a later Output, tagged with `ref`.
   * @param ref - the driver's handle for the reply.
   * @param now - the driver's monotonic clock (ms).
   * @param deadline - the caller's deadline on the same clock (Infinity for none): past it, the
   *   operation starts no new decision (it ends with DEADLINE_EXCEEDED).
   */
  request(ref: number, key: string, op: ClientOp, now: number, deadline = Infinity): Output {
    this.lastNow = now;
    if (this.phase !== 'voter') {
      this.reply(ref, { ok: false, status: 'UNAVAILABLE', message: this.notServing(), notApplied: true });
      return this.flush();
    }
    if (this.tasks.has(key)) {
      let q = this.queues.get(key);
      if (q === undefined) this.queues.set(key, (q = []));
      q.push({ ref, op, deadline });
      return this.flush();
    }
    this.startTask(ref, key, op, now, deadline);
    return this.flush();
  }

  /** A message from a peer. */
  receive(from: MemberId, msg: PeerMessage, now: number): Output {
    if (this.phase === 'failed') {
      if (this.removedFromCluster) this.answerRemoved(from, msg);
      return this.flush();
    }
    this.lastNow = now;
    this.dispatch(from, msg, now);
    return this.flush();
  }

  private dispatch(from: MemberId, msg: PeerMessage, now: number): void {
    switch (msg.type) {
      case 'prepare':
      case 'accept':
        this.onAcceptorMessage(from, msg);
        break;
      case 'learn':
      case 'chosen':
        this.learnEntry(msg.key, msg.entry, now);
        break;
      case 'catchUp': {
        const rec = this.record(msg.key);
        if (!this.lostKeys.has(msg.key) && chosenIndex(rec) > msg.knownIndex) this.send(from, { type: 'learn', key: msg.key, entry: rec.chosen! });
        break;
      }
      case 'read': {
        // Only a voter's state may stand in a read's majority, and not the state of a key it lost.
        if (this.phase !== 'voter') {
          this.noteEpoch(from, msg.epoch);
          break;
        }
        if (!this.inEpoch(from, msg)) break;
        const rec = this.record(msg.key);
        if (!this.lostKeys.has(msg.key)) this.send(from, readState(rec, msg));
        break;
      }
      case 'readState':
        // An answer to a read of an earlier life of this replica (read ids restart with each life):
        // its state may predate what this life knows. Its chosen entry is still chosen.
        if (msg.readerIncarnation !== this.incarnationNow) {
          if (msg.entry !== null && this.voterSet.has(from)) this.learnEntry(msg.key, msg.entry, now);
          break;
        }
        if (this.repairReads.has(msg.readId)) {
          this.onRepairState(from, msg);
          break;
        }
        if (this.voterSet.has(from)) this.onProposerReply(from, msg, now);
        break;
      case 'behind':
      case 'promise':
      case 'accepted':
      case 'reject':
        if (this.voterSet.has(from)) this.onProposerReply(from, msg, now);
        break;
      case 'hello':
        this.onHello(from, msg);
        break;
      case 'helloAck':
        this.onHelloAck(from, msg, now);
        break;
      case 'listKeys':
        this.onListKeys(from, msg);
        break;
      case 'keyList':
        if (this.sync?.sweeps.get(from)?.listId === msg.listId) this.onSyncKeyList(from, msg, now);
        else this.onKeyList(from, msg, now);
        break;
      case 'finish':
        this.onFinish(from, msg.key, now);
        break;
      case 'finished':
        if (this.lostKeys.has(msg.key)) this.onRepairFinished(from, msg.key, msg.chosenIndex);
        else this.onFinished(from, msg.key, msg.chosenIndex);
        break;
      case 'staleEpoch':
        if (msg.epoch > this.configuration.epoch) this.catchUpConfiguration(from);
        break;
      case 'synced':
        this.onSynced(from, msg.epoch, now);
        break;
    }
  }

  /**
   * The epoch fence: whether this replica may vote in, or answer, a prepare, accept, read or
   * listing made under `msg.epoch`. An older epoch is answered `staleEpoch` (the sender catches up
   * the configuration); a newer one means this replica missed a configuration: it catches it up
   * from the sender and answers nothing meanwhile.
   */
  private inEpoch(from: MemberId, msg: EpochMessage): boolean {
    const mine = this.configuration.epoch;
    if (msg.epoch === mine) return true;
    if (msg.epoch < mine) this.send(from, { type: 'staleEpoch', key: msg.key, epoch: mine });
    else {
      // Held until this replica adopts that epoch (then answered: the sender need not wait for
      // its phase timeout), and the configuration is asked for.
      if (this.deferred.length >= MAX_DEFERRED) this.deferred.shift();
      this.deferred.push({ from, msg });
      this.catchUpConfiguration(from);
    }
    return false;
  }

  /** A replica that does not vote (a learner, one starting or rejoining) still catches up a newer configuration a peer acts under. */
  private noteEpoch(from: MemberId, epoch: number): void {
    if (epoch > this.configuration.epoch) this.catchUpConfiguration(from);
  }

  /**
   * Asks `peer` for the configuration key's latest chosen entry (its learn is adopted: `adopt`),
   * at most once per tenth of a phase timeout per peer (every newer-epoch message would ask).
   */
  private catchUpConfiguration(peer: MemberId): void {
    const asked = this.configurationAskedAt.get(peer);
    if (asked !== undefined && this.lastNow < asked + this.phaseTimeoutMs / 10) return;
    this.configurationAskedAt.set(peer, this.lastNow);
    // Never above what the adopted configuration says this replica holds (epoch - 1).
    const known = Math.max(0, Math.min(chosenIndex(this.record(CONFIG_KEY)), this.configuration.epoch - 1));
    this.send(peer, { type: 'catchUp', key: CONFIG_KEY, knownIndex: known });
  }

  /** Records that this replica had `key`'s entry `index` chosen under its current epoch (a bounded memory: forgetting only closes the fast path). */
  private noteOwned(key: string, index: number): void {
    this.ownedInEpoch.delete(key);
    this.ownedInEpoch.set(key, index);
    if (this.ownedInEpoch.size > MAX_OWNED_REMEMBERED) this.ownedInEpoch.delete(this.ownedInEpoch.keys().next().value!);
  }

  /** Adopts the configuration in `entry` of `key` when it is the configuration key's and newer than this replica's. */
  private configurationLearned(key: string, entry: Entry): void {
    if (key === CONFIG_KEY && entry.index + 1 > this.configuration.epoch) this.adopt(entry);
  }

  /** The configuration a chosen entry of the configuration key holds, or why it holds none. */
  private configurationOf(entry: Entry): Configuration | string {
    try {
      if (entry.value === null) return 'the entry is a delete';
      const c = decodeConfiguration(entry.value);
      if (c.epoch !== entry.index + 1) return `version ${entry.index} holds epoch ${c.epoch}, not ${entry.index + 1}`;
      return c;
    } catch (err) {
      return (err as Error).message;
    }
  }

  /**
   * Adopts the configuration a newly chosen entry of the configuration key holds: quorums, voters
   * and learners change at once, operations under way start their phase again under the new
   * epoch, and the configuration is persisted with the entry. A replica the configuration no
   * longer names stops and says why.
   */
  private adopt(entry: Entry): void {
    const c = this.configurationOf(entry);
    if (typeof c === 'string') {
      // Acceptors take no such value (onAcceptorMessage), so it cannot have been chosen.
      this.fail(`the chosen configuration (version ${entry.index} of the configuration key) does not decode: ${c}`);
      return;
    }
    if (c.epoch <= this.configuration.epoch) return;
    this.useConfiguration(c);
    this.out.meta = { ...this.out.meta, configuration: c };
    this.adopted = true;
    this.syncedBy = new Set();
    // The pause between `finish` proposals is per change: the next change may finish at once.
    this.finishProposedAt = -Infinity;
    this.ownedInEpoch.clear();
    const role = roleOf(c, this.config.id);
    if (this.phase === 'joining') {
      // Not added yet: it keeps asking. Added: it serves its role, and syncs (`settle`).
      if (role === 'removed') return;
      if (role === 'learner') {
        this.phase = 'learner';
        this.learnerSyncDue = true;
      } else this.startVoting();
      return;
    }
    if (role === 'removed') {
      this.failRemoved();
      return;
    }
    if (role === 'learner' && this.phase === 'voter') {
      this.phase = 'learner';
      this.dropTasks(`replica ${this.config.id} is now a learner (${describeConfiguration(c)}); ask another replica`);
    }
    if (role === 'voter' && this.phase === 'learner') this.startVoting();
    // Rounds under way were counted under the old configuration: start them again under this one,
    // and confirm again what a read under it confirmed.
    for (const task of this.tasks.values()) {
      task.confirmed = false;
      if (task.phase === 'backoff') continue;
      task.phase = 'backoff';
      task.wakeAt = this.lastNow;
    }
  }

  /** Whether the replica stopped (read through a getter: a step can stop it under the caller's feet). */
  private get stopped(): boolean {
    return this.phase === 'failed';
  }

  /**
   * A removed replica votes in nothing and serves no client, but still tells the configuration
   * that removed it: peers that missed it may need it to move on (it may be the only one that
   * learned it, and their quorums under the old epoch may count on it).
   */
  private answerRemoved(from: MemberId, msg: PeerMessage): void {
    const mine = this.configuration.epoch;
    if ((msg.type === 'prepare' || msg.type === 'accept' || msg.type === 'read' || msg.type === 'listKeys') && msg.epoch < mine) {
      this.send(from, { type: 'staleEpoch', key: msg.key, epoch: mine });
    } else if (msg.type === 'synced' && msg.epoch < mine) {
      this.send(from, { type: 'staleEpoch', key: '', epoch: mine });
    } else if (msg.type === 'catchUp' && msg.key === CONFIG_KEY) {
      const rec = this.record(CONFIG_KEY);
      if (!this.lostKeys.has(CONFIG_KEY) && chosenIndex(rec) > msg.knownIndex) this.send(from, { type: 'learn', key: CONFIG_KEY, entry: rec.chosen! });
    }
  }

  /**
   * A joining replica named a voter, or a learner made one: it votes only once a majority of the
   * other voters recorded its incarnation, as a starting voter does (a learner never announced
   * one). Otherwise a member that lost its data after it voted, and joined again with an empty
   * data dir, would not be caught.
   */
  private startVoting(): void {
    if (this.config.start === undefined) {
      this.phase = 'voter';
      return;
    }
    this.phase = 'checking';
    this.helloAcks = new Set();
    this.sendHello(this.lastNow);
  }

  /** Stops the replica: a configuration no longer names it. */
  private failRemoved(): void {
    this.removedFromCluster = true;
    this.fail(`it was removed from the cluster (${describeConfiguration(this.configuration)}); its data dir is no longer needed`);
  }

  /**
   * What follows a step, at its end (not nested inside the record write that adopted a
   * configuration): after an adoption, rejoin sweeps and lost-key repairs ask the new voters too,
   * and the messages held for this epoch are answered; a sync starts or ends when it may.
   */
  private settle(): void {
    if (this.phase === 'failed') {
      this.deferred = [];
      return;
    }
    const now = this.lastNow;
    while (this.adopted) {
      this.adopted = false;
      if (this.phase === 'rejoining') {
        for (const p of [...this.sweeps.keys()]) if (!this.otherVoters.includes(p)) this.sweeps.delete(p);
        for (const p of this.otherVoters) {
          if (this.sweeps.has(p)) continue;
          const s: SweepState = { after: '', done: false, listId: 0, sentAt: now };
          this.sweeps.set(p, s);
          this.requestPage(p, s, now);
        }
        // An entry asked of a member that no longer votes: asked of a voter instead (the chosen
        // entry it reported; a value pending there counts on no quorum now).
        for (const [key, t] of this.rejoinTargets) {
          if (this.voterSet.has(t.from) || this.otherVoters.length === 0) continue;
          const next = { index: t.finish ? t.index - 1 : t.index, from: this.otherVoters[0]!, finish: false };
          if (chosenIndex(this.record(key)) >= next.index) this.rejoinTargets.delete(key);
          else {
            this.rejoinTargets.set(key, next);
            this.requestTarget(key, next);
          }
        }
        this.checkRejoined();
      }
      // A lost key's repair asks every other voter: under new voters, it starts again.
      for (const [key, l] of [...this.lostKeys]) this.restartRepair(key, l);
      const held = this.deferred;
      this.deferred = [];
      for (const d of held) {
        if (this.stopped) break;
        if (d.msg.epoch > this.configuration.epoch) this.deferred.push(d);
        else this.dispatch(d.from, d.msg, now);
      }
      if (this.stopped) return;
    }
    this.maybeStartSync(now);
    this.checkSynced(now);
  }

  /** Advances timers: retries phases whose time ran out, ends backoffs, resends start messages. */
  tick(now: number): Output {
    if (this.phase === 'failed') return this.flush();
    this.lastNow = now;
    for (const [key, l] of this.lostKeys) if (now >= l.askedAt + this.phaseTimeoutMs) this.askAboutLost(key, l);
    for (const task of [...this.tasks.values()]) {
      if (task.wakeAt > now || this.tasks.get(task.key) !== task) continue;
      if (task.phase === 'backoff') this.plan(task, now);
      else this.retry(task, now, 'no majority answered in time');
    }
    if (this.phase === 'checking' && now >= this.helloSentAt + this.phaseTimeoutMs) this.sendHello(now);
    if (this.phase === 'rejoining') {
      for (const [peer, s] of this.sweeps) if (!s.done && now >= s.sentAt + this.phaseTimeoutMs) this.requestPage(peer, s, now);
      if (this.rejoinTargets.size > 0 && now >= this.catchUpSentAt + this.phaseTimeoutMs) this.resendCatchUps(now);
    }
    if (this.phase === 'joining' && now >= this.joinAskedAt + this.phaseTimeoutMs) this.askToJoin(now);
    const sync = this.sync;
    if (sync !== undefined && sync.epoch === this.configuration.epoch && (this.phase === 'voter' || this.phase === 'learner')) {
      if (!sync.done) {
        this.listOwnPage(sync, now);
        for (const [peer, s] of sync.sweeps) if (!s.done && now >= s.sentAt + this.phaseTimeoutMs) this.requestPage(peer, s, now);
        if (sync.targets.size > 0 && now >= sync.catchUpSentAt + this.phaseTimeoutMs) {
          sync.catchUpSentAt = now;
          let n = 0;
          for (const [key, t] of sync.targets) {
            if (n++ >= this.sweepPageSize) break;
            if (t.from !== this.config.id) t.from = this.nextSource(sync, t.from);
            this.requestSyncTarget(key, t, now);
          }
        }
      } else if (this.configuration.next !== undefined && now >= sync.noticeSentAt + SYNC_NOTICE_PHASES * this.phaseTimeoutMs) {
        // The notices may have been lost, and a `finish` proposal may have failed: again.
        this.tellSynced(now);
        this.maybeProposeFinish(now);
      }
    }
    return this.flush();
  }

  // ---------------------------------------------------------------------------------------------
  // Start: incarnation check and rejoin

  private notServing(): string {
    const id = this.config.id;
    switch (this.phase) {
      case 'learner':
        return `replica ${id} is a learner; ask another replica`;
      case 'checking':
        return `replica ${id} is starting: it waits for a majority of the other voters to confirm its incarnation; ask another replica`;
      case 'rejoining':
        return `replica ${id} is rejoining after losing its data and does not vote yet; ask another replica`;
      case 'joining':
        return `replica ${id} is joining the cluster: it waits to be added (svrkit kv member add); ask another replica`;
      default:
        return `replica ${id} stopped: ${this.failureText ?? 'unsafe data dir'}`;
    }
  }

  /** Takes a new incarnation with start counter `counter` and a random nonce; persisted before any hello. */
  private takeIncarnation(counter: number): void {
    this.incarnationNow = counter * INCARNATION_NONCES + Math.floor(this.random() * INCARNATION_NONCES);
    this.announced.push(this.incarnationNow);
    // A replica that keeps crashing before its check finishes keeps its last MAX_ANNOUNCED starts;
    // the older ones raise what it counts as known instead (every start of this data dir's lineage
    // up to them came from it: a lost life's starts all count above them).
    if (this.announced.length > MAX_ANNOUNCED) {
      const dropped = this.announced.splice(0, this.announced.length - MAX_ANNOUNCED);
      this.knownUpTo = Math.max(this.knownUpTo, ...dropped);
      this.out.meta = { ...this.out.meta, incarnation: this.knownUpTo };
    }
    this.out.meta = { ...this.out.meta, announced: [...this.announced] };
  }

  /**
   * Who must answer this start's hello, and how many: a majority of the other voters (any later
   * start's check then meets one of them); all of them for a rejoin (its sweep needs them all
   * anyway, and its incarnation must end above every record of its lost life). A lone voter asks
   * its learners (all) when its data dir is new, and needs nobody on a restart.
   */
  private checkers(): { members: readonly MemberId[]; needed: number } {
    const kind = this.config.start!.kind;
    if (this.otherVoters.length > 0) {
      return { members: this.otherVoters, needed: kind === 'rejoin' ? this.otherVoters.length : Math.floor(this.otherVoters.length / 2) + 1 };
    }
    const learners = this.peers.filter((p) => !this.voterSet.has(p));
    return kind === 'existing' ? { members: [], needed: 0 } : { members: learners, needed: learners.length };
  }

  private sendHello(now: number): void {
    this.helloSentAt = now;
    const start = this.config.start!;
    // The members it was told of (--join) tell it the configuration, when its own is behind.
    for (const p of this.config.join ?? []) {
      if (p !== this.config.id) this.send(p, { type: 'catchUp', key: CONFIG_KEY, knownIndex: Math.max(0, this.configuration.epoch - 1) });
    }
    if (this.otherVoters.length === 0 && start.kind === 'rejoin') {
      this.fail('it is the only voter, so no other voter holds what it lost: a single-voter cluster cannot rejoin a replica; restore its data dir instead');
      return;
    }
    const { members, needed } = this.checkers();
    if (needed === 0) {
      // A lone voter's restart registers with its learners without waiting for them.
      for (const p of this.peers) this.send(p, { type: 'hello', key: '', incarnation: this.incarnationNow, confirmed: this.knownUpTo, announced: [...this.announced], rejoin: false });
      this.checked(now);
      return;
    }
    for (const p of members) {
      if (this.helloAcks.has(p)) continue;
      this.send(p, {
        type: 'hello',
        key: '',
        incarnation: this.incarnationNow,
        confirmed: this.knownUpTo,
        announced: [...this.announced],
        rejoin: start.kind === 'rejoin',
      });
    }
  }

  private onHello(from: MemberId, msg: Extract<PeerMessage, { type: 'hello' }>): void {
    // A replica that lost its data does not know what others announced until its own check has
    // rebuilt its records from theirs: it cannot vouch for anyone before that.
    if (this.phase === 'checking' && this.config.start?.kind === 'rejoin') return;
    if (!this.memberSet.has(from)) {
      // Not a member in this replica's configuration: its start is not recorded here, so it is
      // not confirmed here either. One of the two is behind: each tells the other its configuration.
      this.catchUpConfiguration(from);
      const c = this.record(CONFIG_KEY).chosen;
      if (c !== null && !this.lostKeys.has(CONFIG_KEY)) this.send(from, { type: 'learn', key: CONFIG_KEY, entry: c });
      return;
    }
    const recorded = this.peerIncarnations.get(from) ?? 0;
    // The sender's data dir knows every incarnation up to its confirmed one and those it announced
    // since; anything else this replica recorded came from a life of the sender its dir lost.
    const known = recorded <= msg.confirmed || msg.announced.includes(recorded);
    const ok = msg.rejoin || known;
    // A rejoin's start replaces a record only with a higher counter, or one it announced itself: a
    // late hello of a lost life (same counter, another nonce) must not replace the confirmed start.
    const replaces = msg.rejoin ? incarnationCounter(msg.incarnation) > incarnationCounter(recorded) || known : ok;
    if (replaces && msg.incarnation > recorded) this.recordIncarnation(from, msg.incarnation);
    // Sent only after the record above is durable: a peer that counts this answer can rely on it.
    this.send(from, { type: 'helloAck', key: '', incarnation: msg.incarnation, recorded, ok, table: [...this.peerIncarnations] });
    // A starting replica may have missed configurations (a rejoin starts from the first one): it
    // checks its start with the voters of the latest.
    const c = this.record(CONFIG_KEY).chosen;
    if (c !== null && !this.lostKeys.has(CONFIG_KEY)) this.send(from, { type: 'learn', key: CONFIG_KEY, entry: c });
  }

  private recordIncarnation(member: MemberId, incarnation: number): void {
    if (member === this.config.id || !this.memberSet.has(member) || incarnation <= (this.peerIncarnations.get(member) ?? 0)) return;
    this.peerIncarnations.set(member, incarnation);
    const merged = new Map(this.out.meta?.peerIncarnations ?? []);
    merged.set(member, incarnation);
    this.out.meta = { ...this.out.meta, peerIncarnations: merged };
  }

  private onHelloAck(from: MemberId, msg: Extract<PeerMessage, { type: 'helloAck' }>, now: number): void {
    if (this.phase !== 'checking' || msg.incarnation !== this.incarnationNow || !this.checkers().members.includes(from)) return;
    const start = this.config.start!;
    // What the other voters recorded of every member: a replica that lost its data rebuilds its
    // own records from these (the others only ever recorded incarnations that were announced).
    for (const [member, incarnation] of msg.table) this.recordIncarnation(member, incarnation);
    if (start.kind === 'rejoin') {
      if (incarnationCounter(msg.recorded) >= incarnationCounter(this.incarnationNow)) {
        // A peer saw an incarnation this one does not exceed (an earlier life of this member):
        // take a higher one and announce it again.
        this.takeIncarnation(Math.max(incarnationCounter(msg.recorded), incarnationCounter(this.incarnationNow)) + 1);
        this.helloAcks = new Set();
        this.sendHello(now);
        return;
      }
    } else if (!msg.ok) {
      const seen = incarnationCounter(msg.recorded);
      this.fail(
        start.kind === 'fresh' || start.kind === 'join'
          ? start.kind === 'join'
            ? `it joined with a new data dir, but member ${from} has seen start ${seen} of it: this member lost its data. ` +
              `Replace it with a new member id (svrkit kv member replace ${this.config.id} <new id>)`
            : `its data dir is new, but member ${from} has seen start ${seen} of it: this replica lost its data. ` +
              `Restart it with --rejoin on an empty data dir: it catches up and does not vote until that is safe`
          : `its data dir is older than it should be: member ${from} has seen start ${seen} of it, which its data dir does not know ` +
              `(it holds start ${incarnationCounter(start.incarnation)}; restored from an older copy?). ` +
              `Move the data dir aside and restart with --rejoin on an empty data dir`,
      );
      return;
    }
    this.helloAcks.add(from);
    // Counted among the current voters only (a configuration adopted meanwhile may have changed them).
    const { members, needed } = this.checkers();
    if (members.filter((m) => this.helloAcks.has(m)).length >= needed) this.checked(now);
  }

  private checked(now: number): void {
    // Confirmed: a majority of the other voters recorded this incarnation. Starts announced after it
    // (a rejoin that took a higher one, whose hello may still arrive late somewhere) stay known.
    this.announced = this.announced.filter((a) => a > this.incarnationNow);
    this.knownUpTo = Math.max(this.knownUpTo, this.incarnationNow);
    this.out.meta = { ...this.out.meta, incarnation: this.knownUpTo, announced: [...this.announced] };
    if (this.config.start?.kind !== 'rejoin') {
      this.phase = this.roleAfterStart();
      this.askAboutAllLost();
      return;
    }
    this.phase = 'rejoining';
    this.out.meta = { ...this.out.meta, rejoining: true };
    for (const p of this.otherVoters) {
      const s: SweepState = { after: '', done: false, listId: 0, sentAt: now };
      this.sweeps.set(p, s);
      this.requestPage(p, s, now);
    }
    this.checkRejoined();
  }

  private requestPage(peer: MemberId, s: SweepState, now: number): void {
    s.listId = this.nextListId++;
    s.sentAt = now;
    this.send(peer, { type: 'listKeys', key: '', listId: s.listId, after: s.after, limit: this.sweepPageSize, epoch: this.configuration.epoch });
  }

  private onListKeys(from: MemberId, msg: Extract<PeerMessage, { type: 'listKeys' }>): void {
    // Only a voter's listing is complete enough to fence by (a rejoining one is still learning).
    if (this.phase !== 'voter') {
      this.noteEpoch(from, msg.epoch);
      return;
    }
    if (!this.inEpoch(from, msg)) return;
    const limit = Math.max(1, Math.min(msg.limit, 10_000));
    const keys = this.store.keysAfter(msg.after, limit);
    const states = keys.map((key) => this.record(key));
    // A key this replica lost has no state to fence by: the page waits until it is repaired.
    if (keys.some((key) => this.lostKeys.has(key))) return;
    this.send(from, {
      type: 'keyList',
      key: '',
      listId: msg.listId,
      keys: keys.map((key, i) => {
        const rec = states[i]!;
        // Fenced past the next instance: it may have lost an accept there (as for a read, `readState`).
        return { key, chosenIndex: chosenIndex(rec), pending: rec.accepted !== 0 || rec.fence > chosenIndex(rec) + 1 };
      }),
      done: keys.length < limit,
    });
  }

  private onKeyList(from: MemberId, msg: Extract<PeerMessage, { type: 'keyList' }>, now: number): void {
    const s = this.sweeps.get(from);
    if (this.phase !== 'rejoining' || s === undefined || s.done || msg.listId !== s.listId) return;
    for (const k of msg.keys) {
      const rec = this.record(k.key);
      // A key whose record failed its checksum is fenced and caught up by its own repair.
      if (this.lostKeys.has(k.key)) continue;
      // Before its data was lost this replica voted at most one instance past what it had learned
      // then. What it learned was chosen, so accepted by a majority, which meets every majority of
      // the others: some voter reports it chosen, or accepted after its chosen index ('pending').
      const fence = k.chosenIndex + (k.pending ? 3 : 2);
      if (fence > rec.fence) {
        if (rec.fence === 0) this.keysFenced++;
        this.persist(k.key, { ...rec, fence });
      }
      // A rejoin ends only once this replica holds what the voters had chosen, and the instance
      // after it is decided when a voter accepted a value there (it may be chosen, and this replica,
      // fenced past it, cannot help decide it later): until then, a second data loss could take
      // the last copy of a value, or leave the instance without a majority that can decide it.
      const wanted = k.pending ? k.chosenIndex + 1 : k.chosenIndex;
      const target = this.rejoinTargets.get(k.key);
      if (wanted > chosenIndex(this.record(k.key)) && (target === undefined || target.index < wanted)) {
        this.rejoinTargets.set(k.key, { index: wanted, from, finish: k.pending });
        this.requestTarget(k.key, this.rejoinTargets.get(k.key)!);
        this.catchUpSentAt = now;
      }
    }
    if (msg.done || msg.keys.length === 0) s.done = true;
    else {
      s.after = msg.keys[msg.keys.length - 1]!.key;
      this.requestPage(from, s, now);
    }
    this.checkRejoined();
  }

  /** Asks again for entries a rejoin still waits for (a catch-up request or its answer was lost). */
  private resendCatchUps(now: number): void {
    this.catchUpSentAt = now;
    let n = 0;
    for (const [key, t] of this.rejoinTargets) {
      if (n++ >= this.sweepPageSize) break;
      this.requestTarget(key, t);
    }
  }

  private requestTarget(key: string, t: { index: number; from: MemberId; finish: boolean }): void {
    this.send(t.from, t.finish ? { type: 'finish', key } : { type: 'catchUp', key, knownIndex: chosenIndex(this.record(key)) });
  }

  /** A rejoining peer asks this voter to decide `key`'s pending instance: a read does it. */
  private onFinish(from: MemberId, key: string, now: number): void {
    if (this.phase !== 'voter') return;
    this.record(key);
    if (this.lostKeys.has(key)) return;
    let who = this.finishRequests.get(key);
    if (who === undefined) this.finishRequests.set(key, (who = new Set()));
    who.add(from);
    // Reference 0 is no client's: its result is only the `finished` notices sent by finish().
    if (!this.tasks.has(key)) this.startTask(0, key, { kind: 'get' }, now, now + this.phaseTimeoutMs * this.maxAttempts);
  }

  /**
   * A voter decided the key as far as it could: this replica learns up to that index.
   * @param confirmedBy - (this replica's own task) the id of the read that confirmed the latest entry.
   */
  private onFinished(from: MemberId, key: string, index: number, confirmedBy?: number): void {
    const st = this.sync?.targets.get(key);
    if (st !== undefined && st.from === from && from === this.config.id && (index >= st.index || (confirmedBy !== undefined && confirmedBy >= st.readsFrom))) {
      // Its own read decided the pending instance, or found no value pending at all: nothing was
      // chosen there before this epoch.
      this.sync!.targets.delete(key);
    }
    const t = this.rejoinTargets.get(key);
    if (t === undefined || t.from !== from) return;
    // Any task on the key that ends well sends `finished`, also one that did not decide the
    // pending instance (a retried write answered from the log). Until the voter holds the target,
    // the request stands and the timer sends it again: a rejoin that stopped short would count its
    // own state, which lacks a value a majority accepted, in a read's majority.
    if (index < t.index) return;
    t.finish = false;
    if (chosenIndex(this.record(key)) >= t.index) {
      this.rejoinTargets.delete(key);
      this.checkRejoined();
    } else this.requestTarget(key, t);
  }

  /** What a replica whose start check (or rejoin) ended does: vote, or only learn when a configuration adopted meanwhile made it a learner. */
  private roleAfterStart(): 'voter' | 'learner' {
    return roleOf(this.configuration, this.config.id) === 'learner' ? 'learner' : 'voter';
  }

  private checkRejoined(): void {
    if (this.phase !== 'rejoining' || this.rejoinTargets.size > 0) return;
    for (const s of this.sweeps.values()) if (!s.done) return;
    // Every key any other voter holds is fenced, and keys none of them holds were never voted on
    // by a majority this replica belonged to: it may vote again. Persisted with the fences.
    this.phase = this.roleAfterStart();
    this.out.meta = { ...this.out.meta, rejoining: false };
    this.askAboutAllLost();
  }

  private fail(why: string): void {
    this.phase = 'failed';
    this.failureText = why;
    this.dropTasks(this.notServing());
  }

  /** Ends every operation running or queued with UNAVAILABLE (`message`). */
  private dropTasks(message: string): void {
    for (const task of this.tasks.values()) this.reply(task.ref, { ok: false, status: 'UNAVAILABLE', message, notApplied: !task.sentOwn });
    for (const q of this.queues.values()) for (const t of q) this.reply(t.ref, { ok: false, status: 'UNAVAILABLE', message, notApplied: true });
    this.tasks.clear();
    this.queues.clear();
  }

  // ---------------------------------------------------------------------------------------------
  // Membership changes: joining, and the sync of a joint configuration's next voters

  /** A joining replica asks for the configuration key (the cluster members it was given, and those it learned). */
  private askToJoin(now: number): void {
    this.joinAskedAt = now;
    const known = chosenIndex(this.record(CONFIG_KEY));
    for (const p of new Set([...(this.config.join ?? []), ...this.otherVoters])) {
      if (p !== this.config.id) this.send(p, { type: 'catchUp', key: CONFIG_KEY, knownIndex: known });
    }
  }

  /**
   * Starts the sync the current configuration asks of this replica, when it asks one and none
   * runs for it: a voter of a joint configuration's next half syncs (membership.ts), and so does a
   * joining replica once it is named a learner (to catch up before it is made a voter).
   */
  private maybeStartSync(now: number): void {
    const c = this.configuration;
    if (this.sync !== undefined && this.sync.epoch === c.epoch) return;
    if (this.phase !== 'voter' && this.phase !== 'learner') return;
    const id = this.config.id;
    const nextVoter = c.next !== undefined && c.next.voters.includes(id);
    if (!nextVoter && !(this.learnerSyncDue && this.phase === 'learner')) {
      this.sync = undefined;
      return;
    }
    const sources = c.voters;
    const sync: SyncState = {
      epoch: c.epoch,
      sources,
      sweeps: new Map(),
      selfCounts: this.phase === 'voter' && sources.includes(id),
      ownAfter: null,
      targets: new Map(),
      catchUpSentAt: now,
      done: false,
      noticeSentAt: -Infinity,
    };
    this.sync = sync;
    for (const p of sources) {
      if (p === id) continue;
      const s: SweepState = { after: '', done: false, listId: 0, sentAt: now };
      sync.sweeps.set(p, s);
      this.requestPage(p, s, now);
    }
    if (sync.selfCounts) {
      sync.ownAfter = '';
      this.listOwnPage(sync, now);
    }
  }

  /**
   * One page of this replica's own keys for its sync: its own records are one listing, and its
   * own pending instances are decided first (a read, by a joint quorum), as a peer's would be.
   */
  private listOwnPage(sync: SyncState, now: number): void {
    if (sync.ownAfter === null) return;
    const keys = this.store.keysAfter(sync.ownAfter, this.sweepPageSize);
    for (const key of keys) {
      const rec = this.record(key);
      if (!this.lostKeys.has(key) && rec.accepted !== 0) this.syncWant(sync, key, chosenIndex(rec), true, this.config.id, now);
    }
    sync.ownAfter = keys.length < this.sweepPageSize ? null : keys[keys.length - 1]!;
  }

  /** A source reported `key` at `chosen` (and a value accepted after it when `pending`): learn up to it. */
  private syncWant(sync: SyncState, key: string, chosen: number, pending: boolean, from: MemberId, now: number): void {
    // A key this replica lost is brought up by its own repair.
    if (this.lostKeys.has(key)) return;
    // A learner's sync only catches up (it holds no quorum's data): chosen entries will do.
    const voter = this.phase === 'voter';
    const wanted = pending && voter ? chosen + 1 : chosen;
    if (wanted <= chosenIndex(this.record(key))) return;
    const t = sync.targets.get(key);
    if (t !== undefined && t.index >= wanted) return;
    // A value accepted after the chosen entry may have been chosen: this replica, a voter of the
    // joint configuration, decides that instance itself with a read (its joint quorum holds a
    // majority of the first half, so it finds a value chosen before this epoch). Chosen entries
    // are asked of the member that reported them.
    const target: SyncTarget = pending && voter ? { index: wanted, from: this.config.id, finish: true, readsFrom: this.nextReadId } : { index: wanted, from, finish: false, readsFrom: this.nextReadId };
    sync.targets.set(key, target);
    // A value accepted after the chosen entry is most often a write under way, which its own
    // proposer decides (this replica learns the entry, and the target is met): a read now would
    // only duel with it (on real processes every voter of the second half did, and a fence's
    // stall grew by the duel's backoffs). The resend timer asks within one phase timeout.
    if (!target.finish) this.requestSyncTarget(key, target, now);
  }

  /** Asks for what a sync target waits for: the entry, or the pending instance decided first. */
  private requestSyncTarget(key: string, t: SyncTarget, now: number): void {
    if (t.from === this.config.id) this.onFinish(this.config.id, key, now);
    else this.send(t.from, t.finish ? { type: 'finish', key } : { type: 'catchUp', key, knownIndex: chosenIndex(this.record(key)) });
  }

  /** The next source to ask for a chosen entry, after `from` (the one asked may be down). */
  private nextSource(sync: SyncState, from: MemberId): MemberId {
    const others = [...sync.sweeps.keys()];
    if (others.length === 0) return from;
    return others[(others.indexOf(from) + 1) % others.length]!;
  }

  private onSyncKeyList(from: MemberId, msg: Extract<PeerMessage, { type: 'keyList' }>, now: number): void {
    const sync = this.sync!;
    const s = sync.sweeps.get(from)!;
    if (s.done || sync.done) return;
    for (const k of msg.keys) this.syncWant(sync, k.key, k.chosenIndex, k.pending, from, now);
    if (msg.done || msg.keys.length === 0) s.done = true;
    else {
      s.after = msg.keys[msg.keys.length - 1]!.key;
      this.requestPage(from, s, now);
    }
  }

  /**
   * Ends the sync once a majority of the first half's voters listed every key (this replica
   * counting as one when it is one of them) and every key they reported is learned; then tells
   * every member, and proposes `finish` when it may.
   */
  private checkSynced(now: number): void {
    const sync = this.sync;
    if (sync === undefined || sync.done || sync.epoch !== this.configuration.epoch || sync.targets.size > 0) return;
    if (this.phase !== 'voter' && this.phase !== 'learner') return;
    if (2 * listingsDone(sync) <= sync.sources.length) return;
    sync.done = true;
    this.syncsDone++;
    this.learnerSyncDue = false;
    if (this.configuration.next === undefined) return;
    this.syncedBy.add(this.config.id);
    this.tellSynced(now);
    this.maybeProposeFinish(now);
  }

  private tellSynced(now: number): void {
    this.sync!.noticeSentAt = now;
    for (const p of this.peers) this.send(p, { type: 'synced', key: '', epoch: this.configuration.epoch });
  }

  private onSynced(from: MemberId, epoch: number, now: number): void {
    const c = this.configuration;
    if (epoch > c.epoch) {
      this.catchUpConfiguration(from);
      return;
    }
    if (epoch !== c.epoch || c.next === undefined || !c.next.voters.includes(from)) return;
    this.syncedBy.add(from);
    this.maybeProposeFinish(now);
  }

  /**
   * A synced voter of the next half proposes `finish` once it may (membership.ts), and again
   * every few phase timeouts while the configuration stays joint (a proposal may fail).
   */
  private maybeProposeFinish(now: number): void {
    const c = this.configuration;
    if (this.phase !== 'voter' || c.next === undefined || !this.syncedBy.has(this.config.id)) return;
    if (finishWaitsFor(c, this.syncedBy) !== undefined) return;
    if (this.tasks.has(CONFIG_KEY) || now < this.finishProposedAt + SYNC_NOTICE_PHASES * this.phaseTimeoutMs) return;
    this.finishProposedAt = now;
    // Reference 0 is no client's: the outcome shows as the configuration adopted.
    this.startTask(0, CONFIG_KEY, { kind: 'put', value: encodeConfiguration(finishChange(c)), id: null }, now, now + this.phaseTimeoutMs * this.maxAttempts);
  }

  // ---------------------------------------------------------------------------------------------
  // Acceptor side

  private onAcceptorMessage(from: MemberId, msg: Extract<PeerMessage, { type: 'prepare' | 'accept' }>): void {
    if (this.phase === 'voter' && !this.inEpoch(from, msg)) return;
    if (this.phase !== 'voter') this.noteEpoch(from, msg.epoch);
    // A value of the configuration key that holds no configuration of its epoch is never accepted,
    // so it can never be chosen (and stop every replica that would adopt it).
    if (msg.type === 'accept' && msg.key === CONFIG_KEY && typeof this.configurationOf(msg.entry) === 'string') return;
    const rec = this.record(msg.key);
    // A key this replica lost: no vote, and no reply (the proposer counts on the others).
    if (this.lostKeys.has(msg.key) && this.config.plantedBug !== 'vote-on-lost-key') return;
    if (this.phase !== 'voter') {
      // Learners, and voters not yet allowed to vote, only learn.
      if (msg.index > chosenIndex(rec) + 1) this.catchUpFrom(from, msg.key, msg.index - 1);
      return;
    }
    let step = msg.type === 'prepare' ? onPrepare(rec, msg) : onAccept(rec, msg);
    if (
      this.config.plantedBug === 'round0-reuse' &&
      msg.type === 'accept' &&
      isFastBallot(msg.ballot) &&
      msg.ballot >= rec.promised &&
      msg.index === chosenIndex(rec) + 1 &&
      step.reply.type === 'reject'
    ) {
      step = { record: { ...rec, promised: msg.ballot, accepted: msg.ballot, acceptedEntry: msg.entry }, reply: { type: 'accepted', key: msg.key, index: msg.index, ballot: msg.ballot } };
    }
    if (step.record !== undefined) this.persist(msg.key, step.record);
    if (step.reply.type === 'behind') this.catchUpFrom(from, msg.key, msg.index - 1);
    this.send(from, step.reply);
  }

  private catchUpFrom(peer: MemberId, key: string, index: number): void {
    const known = chosenIndex(this.record(key));
    if (index <= known) return;
    this.laggingKeys.set(key, Math.max(index, this.laggingKeys.get(key) ?? 0));
    // Sent again on every sign of lag: a lost catch-up request must not leave the key behind.
    this.send(peer, { type: 'catchUp', key, knownIndex: known });
  }

  /** The record after learning `entry` (undefined when not newer): the acceptor rule `learn`. */
  private learned(rec: KeyRecord, entry: Entry): KeyRecord | undefined {
    const next = learn(rec, entry);
    if (next !== undefined && this.config.plantedBug === 'learn-keeps-accepted') {
      return { ...next, promised: rec.promised, accepted: rec.accepted, acceptedEntry: rec.acceptedEntry };
    }
    return next;
  }

  private learnEntry(key: string, entry: Entry, now: number): void {
    const rec = this.record(key);
    const lost = this.lostKeys.get(key);
    if (lost !== undefined) {
      // Learned while the key is repaired: the repair keeps the newest, and persists it with the fence.
      if (lost.best === null || entry.index > lost.best.index) lost.best = entry;
      // A configuration is a chosen value: adopting it needs no intact local record.
      this.configurationLearned(key, entry);
      this.repairProgress(key, lost);
      return;
    }
    const next = this.learned(rec, entry);
    if (next !== undefined) this.persist(key, next);
    const wanted = this.laggingKeys.get(key);
    if (wanted !== undefined && chosenIndex(this.record(key)) >= wanted) this.laggingKeys.delete(key);
    const target = this.rejoinTargets.get(key);
    if (target !== undefined && chosenIndex(this.record(key)) >= target.index) {
      this.rejoinTargets.delete(key);
      if (this.rejoinTargets.size === 0) this.checkRejoined();
    }
    const task = this.tasks.get(key);
    if (task !== undefined && next !== undefined) this.onNewerChosen(task, now);
  }

  // ---------------------------------------------------------------------------------------------
  // Coordinator side: one task per key at a time

  private startTask(ref: number, key: string, op: ClientOp, now: number, deadline: number): void {
    const task: Task = {
      ref, key, op, deadline, phase: 'read', attempts: 0, wakeAt: now, confirmed: false, maxRound: 0,
      readId: 0, readReplies: new Map(), index: 0, ballot: 0, entry: null, own: null, sentOwn: false, promises: new Map(), accepts: new Set(),
      rejects: new Set(),
    };
    this.tasks.set(key, task);
    this.plan(task, now);
  }

  /** Decides the task's next step from the local record. */
  private plan(task: Task, now: number): void {
    const rec = this.record(task.key);
    if (this.lostKeys.has(task.key)) {
      return this.finish(task, { ok: false, status: 'UNAVAILABLE', message: this.lostMessage(task.key) }, now);
    }
    const latest = rec.chosen;
    const op = task.op;
    if (op.kind !== 'get') {
      // Answered from the log alone, even past the deadline: these need no new decision.
      const outcome = writeOutcome(latest, op.id);
      if (outcome.kind === 'applied') return this.finish(task, { ok: true, kind: 'write', version: outcome.version }, now);
      if (outcome.kind === 'stale') {
        return this.finish(task, {
          ok: false,
          status: 'ABORTED',
          message: `write ${op.id!.seq} of session ${op.id!.client} is below its session's floor (finished by its client, or past the ${MAX_WRITES_PER_SESSION} writes a session may leave unfinished on one key); this attempt was not applied`,
        }, now);
      }
      if (outcome.kind === 'expired') {
        return this.finish(task, {
          ok: false,
          status: 'DEADLINE_EXCEEDED',
          message: `the write expired in the key's log time; this attempt was not applied (an earlier attempt may have been)`,
        }, now);
      }
    }
    if (now >= task.deadline) {
      this.finish(task, { ok: false, status: 'DEADLINE_EXCEEDED', message: `replica ${this.config.id}: the caller's deadline passed` }, now);
      return;
    }
    if (op.kind === 'get') {
      if (!task.confirmed) return this.startRead(task, now);
      return this.finish(task, { ok: true, kind: 'get', value: latest?.value ?? null, version: chosenIndex(rec) }, now);
    }
    if (task.key === CONFIG_KEY) {
      // The configuration key holds the configuration of epoch version + 1 and moves one epoch
      // at a time (phxpaxos's compare-and-set of its system variables' version). A write whose
      // very configuration is the latest chosen one took effect (perhaps through another
      // proposer's recovery round): it succeeded.
      if (op.kind !== 'delete' && latest !== null && latest.value !== null && Buffer.compare(latest.value, op.value) === 0) {
        return this.finish(task, { ok: true, kind: 'write', version: latest.index }, now);
      }
      const why = this.configurationWriteProblem(op, chosenIndex(rec));
      if (why !== undefined) {
        // Refused only on the latest configuration: a read first learns it (and decides a
        // configuration accepted but never learned, which nobody else may ever read).
        if (!task.confirmed) return this.startRead(task, now);
        return this.finish(task, { ok: false, status: 'FAILED_PRECONDITION', message: why, version: chosenIndex(rec) }, now);
      }
    }
    let value: Uint8Array | null;
    if (op.kind === 'cas') {
      const present = latest !== null && latest.value !== null;
      const holds = op.expectedVersion === 0 ? !present : present && latest.index === op.expectedVersion;
      if (!holds) {
        if (!task.confirmed) return this.startRead(task, now);
        return this.finish(task, {
          ok: false,
          status: 'FAILED_PRECONDITION',
          message: `expected version ${op.expectedVersion}, the key is ${present ? `at version ${latest.index}` : 'absent'}`,
          version: chosenIndex(rec),
        }, now);
      }
      value = op.value;
    } else {
      value = op.kind === 'put' ? op.value : null;
    }
    let entry = nextEntry(latest, value, op.id, this.config.id);
    if (this.config.plantedBug === 'dedupe-window-8' && entry.sessions.length > 8) entry = { ...entry, sessions: entry.sessions.slice(-8) };
    this.propose(task, entry, now);
  }

  /** Why a write of the configuration key may not follow version `version`, or undefined when it may. */
  private configurationWriteProblem(op: Exclude<ClientOp, { kind: 'get' }>, version: number): string | undefined {
    if (op.kind === 'delete') return 'the configuration key cannot be deleted';
    try {
      const next = decodeConfiguration(op.value);
      const c = this.configuration;
      if (c.epoch !== version + 1) return `this replica holds version ${version} of the configuration key but acts under epoch ${c.epoch}`;
      if (next.epoch > MAX_EPOCH) return `the cluster has used every epoch a ballot can carry (${MAX_EPOCH})`;
      checkTransition(c, next);
      // `finish` needs the next voters synced (membership.ts); going back to the first half does not.
      if (c.next !== undefined && describeConfiguration(next) === describeConfiguration(finishChange(c))) {
        const waits = finishWaitsFor(c, this.syncedBy);
        if (waits !== undefined) return `the change cannot finish yet: ${waits}`;
      }
    } catch (err) {
      return `configuration: ${(err as Error).message}`;
    }
    return undefined;
  }

  private startRead(task: Task, now: number): void {
    if (!this.countAttempt(task, now)) return;
    task.phase = 'read';
    task.readId = this.nextReadId++;
    task.readReplies = new Map();
    task.wakeAt = now + this.phaseTimeoutMs;
    const rec = this.record(task.key);
    task.readReplies.set(this.config.id, { chosenIndex: chosenIndex(rec), pendingAccepted: rec.accepted });
    for (const p of this.otherVoters) this.send(p, { type: 'read', key: task.key, readId: task.readId, knownIndex: chosenIndex(rec), readerIncarnation: this.incarnationNow, epoch: this.configuration.epoch });
    this.checkRead(task, now);
  }

  private checkRead(task: Task, now: number): void {
    if (!isQuorum(this.quorumConfiguration, task.readReplies)) return;
    const rec = this.record(task.key);
    if (this.lostKeys.has(task.key)) {
      this.finish(task, { ok: false, status: 'UNAVAILABLE', message: this.lostMessage(task.key) }, now);
      return;
    }
    const c = chosenIndex(rec);
    // Our own acceptor's state is read now, not when the read began.
    task.readReplies.set(this.config.id, { chosenIndex: c, pendingAccepted: rec.accepted });
    let pending = false;
    for (const [member, r] of task.readReplies) {
      if (r.chosenIndex === c && r.pendingAccepted !== 0) pending = true;
      // Asynchronous catch-up: a peer that showed it lags gets the latest entry.
      if (r.chosenIndex < c && member !== this.config.id) this.send(member, { type: 'learn', key: task.key, entry: rec.chosen! });
    }
    if (pending) {
      // A value may be chosen at c+1 without our knowing: finish that instance first.
      this.propose(task, null, now);
      return;
    }
    task.confirmed = true;
    this.plan(task, now);
  }

  /** Starts a proposal at the next index: our entry, or (entry null) a read's recovery round. */
  private propose(task: Task, entry: Entry | null, now: number): void {
    if (!this.countAttempt(task, now)) return;
    const rec = this.record(task.key);
    if (this.lostKeys.has(task.key)) {
      this.finish(task, { ok: false, status: 'UNAVAILABLE', message: this.lostMessage(task.key) }, now);
      return;
    }
    task.index = chosenIndex(rec) + 1;
    if (task.index < rec.fence) {
      // This replica rejoined after a data loss and may have used its ballots in instances below
      // its fence: it learns those instead of proposing in them, and the client goes elsewhere.
      for (const p of this.otherVoters) this.send(p, { type: 'catchUp', key: task.key, knownIndex: chosenIndex(rec) });
      this.finish(task, {
        ok: false,
        status: 'UNAVAILABLE',
        message: `replica ${this.config.id} rejoined after a data loss and does not propose in ${task.key}'s next instance yet; ask another replica`,
      }, now);
      return;
    }
    task.own = entry;
    task.entry = null;
    task.promises = new Map();
    task.accepts = new Set();
    task.rejects = new Set();
    task.wakeAt = now + this.phaseTimeoutMs;
    // The fast path is open to the proposer of the key's latest entry only when it had that entry
    // chosen under its current epoch: a quorum of this epoch then holds it, which every quorum
    // that can still form at the next instance meets (adjacent epochs' quorums meet; older ones
    // are closed). A round 0 after a change would otherwise skip a value an old quorum accepted.
    const ownedLatest = entry !== null && rec.chosen !== null && rec.chosen.proposer === this.config.id && this.ownedInEpoch.get(task.key) === rec.chosen.index;
    const fast = ownedLatest && ((rec.promised === 0 && rec.accepted === 0) || this.config.plantedBug === 'round0-reuse');
    // Prepared ballots start above this epoch's first round, above every prepared ballot of an
    // earlier epoch; the fast path's round 0 stays below them all (see Ballot).
    const floor = epochRound(this.configuration.epoch);
    if (fast) {
      task.ballot = ballotOf(0, this.config.id);
      this.startAccept(task, entry, now);
      return;
    }
    const round = Math.max(roundOf(rec.promised), task.maxRound, floor) + 1;
    if (round >= floor + ROUNDS_PER_EPOCH) {
      this.finish(task, { ok: false, status: 'UNAVAILABLE', message: `replica ${this.config.id}: ${task.key}'s instance ${task.index} used every round of epoch ${this.configuration.epoch}` }, now);
      return;
    }
    task.phase = 'prepare';
    task.ballot = ballotOf(round, this.config.id);
    const local = onPrepare(rec, { key: task.key, index: task.index, ballot: task.ballot });
    if (local.record !== undefined) this.persist(task.key, local.record);
    if (local.reply.type === 'promise') {
      task.promises.set(this.config.id, { accepted: local.reply.accepted, acceptedEntry: local.reply.acceptedEntry });
    }
    for (const p of this.otherVoters) this.send(p, { type: 'prepare', key: task.key, index: task.index, ballot: task.ballot, epoch: this.configuration.epoch });
    this.checkPromises(task, now);
  }

  private checkPromises(task: Task, now: number): void {
    if (task.phase !== 'prepare' || !isQuorum(this.quorumConfiguration, task.promises)) return;
    let best: { accepted: Ballot; acceptedEntry: Entry | null } | undefined;
    for (const p of task.promises.values()) if (p.accepted !== 0 && (best === undefined || p.accepted > best.accepted)) best = p;
    const value = best?.acceptedEntry ?? task.own;
    if (value === null) {
      // A read's recovery round found nothing accepted by a majority: nothing was chosen at the
      // pending index, so the local entry is the latest.
      task.confirmed = true;
      this.plan(task, now);
      return;
    }
    this.startAccept(task, value, now);
  }

  private startAccept(task: Task, entry: Entry, now: number): void {
    task.phase = 'accept';
    task.entry = entry;
    if (task.own !== null && (entry === task.own || sameEntry(entry, task.own))) task.sentOwn = true;
    task.accepts = new Set();
    task.rejects = new Set();
    const msg = { key: task.key, index: task.index, ballot: task.ballot, entry };
    const rec = this.record(task.key);
    if (this.lostKeys.has(task.key)) {
      this.finish(task, { ok: false, status: 'UNAVAILABLE', message: this.lostMessage(task.key) }, now);
      return;
    }
    let local = onAccept(rec, msg);
    if (this.config.plantedBug === 'round0-reuse' && isFastBallot(task.ballot) && local.reply.type === 'reject' && task.index >= rec.fence) {
      local = { record: { ...rec, promised: task.ballot, accepted: task.ballot, acceptedEntry: entry }, reply: { type: 'accepted', key: task.key, index: task.index, ballot: task.ballot } };
    }
    if (local.record !== undefined) this.persist(task.key, local.record);
    if (local.reply.type === 'accepted') task.accepts.add(this.config.id);
    for (const p of this.otherVoters) this.send(p, { type: 'accept', ...msg, epoch: this.configuration.epoch });
    // A single voter's own accept is a majority.
    if (isQuorum(this.quorumConfiguration, task.accepts)) this.onChosen(task, now);
  }

  private onProposerReply(from: MemberId, msg: Extract<PeerMessage, { type: 'behind' | 'promise' | 'accepted' | 'reject' | 'readState' }>, now: number): void {
    const task = this.tasks.get(msg.key);
    if (msg.type === 'readState') {
      if (msg.entry !== null) this.learnEntry(msg.key, msg.entry, now);
      const t = this.tasks.get(msg.key);
      if (t === undefined || t.phase !== 'read' || t.readId !== msg.readId) return;
      t.readReplies.set(from, { chosenIndex: msg.chosenIndex, pendingAccepted: msg.pendingAccepted });
      this.checkRead(t, now);
      return;
    }
    if (task === undefined || msg.index !== task.index) return;
    if (msg.type === 'behind') return; // that acceptor is catching up (or fenced); it cannot vote this round
    if (msg.ballot !== task.ballot) return;
    if (msg.type === 'reject') {
      task.maxRound = Math.max(task.maxRound, roundOf(msg.promised));
      if (task.phase !== 'prepare' && task.phase !== 'accept') return;
      task.rejects.add(from);
      // Give up on this ballot only once a majority can no longer say yes.
      if (!quorumStillPossible(this.quorumConfiguration, task.rejects)) this.backoff(task, now);
      return;
    }
    if (msg.type === 'promise' && task.phase === 'prepare') {
      task.promises.set(from, { accepted: msg.accepted, acceptedEntry: msg.acceptedEntry });
      this.checkPromises(task, now);
    } else if (msg.type === 'accepted' && task.phase === 'accept') {
      task.accepts.add(from);
      if (isQuorum(this.quorumConfiguration, task.accepts)) this.onChosen(task, now);
    }
  }

  private onChosen(task: Task, now: number): void {
    const entry = task.entry!;
    // A key whose record failed its checksum while this round ran is written by its repair only
    // (the entry is chosen all the same: the repair fences past it, and the peers learn it).
    const rec = this.record(task.key); // notes a record that fails its checksum now
    const next = this.lostKeys.has(task.key) ? undefined : this.learned(rec, entry);
    // Announced to the members before and after the entry (a configuration's, adopted with the
    // record): a member it removes learns so, and one it adds learns it first.
    const before = this.peers;
    if (next !== undefined) this.persist(task.key, next);
    const learnMsg: PeerMessage = { type: 'learn', key: task.key, entry };
    for (const p of this.peers) this.send(p, learnMsg);
    // A configuration adopted with it (a new peers list): the members it removed hear of it too.
    if (this.peers !== before) for (const p of before) if (!this.memberSet.has(p)) this.send(p, learnMsg);
    // The configuration chosen removed this replica, or made it a learner: every operation was
    // answered already (`fail`, `dropTasks`).
    if (this.tasks.get(task.key) !== task) return;
    const own = task.own !== null && sameEntry(task.own, entry);
    if (own) {
      this.noteOwned(task.key, entry.index);
      this.finish(task, { ok: true, kind: 'write', version: entry.index }, now);
      return;
    }
    // Someone else's value took this index (or a read finished a pending write): decide again.
    task.confirmed = task.op.kind === 'get' ? true : task.confirmed;
    this.plan(task, now);
  }

  /** A newer chosen entry arrived while the task runs: its current round is moot; decide again. */
  private onNewerChosen(task: Task, now: number): void {
    if (task.phase === 'backoff') {
      // plan() runs when the backoff ends. A chosen entry at or past the instance it last worked
      // on (after a lost round: that instance was decided) means the proposer it waited for is
      // done and a quorum answers, so it tries again after a short random pause (which spreads
      // the losers) instead of the rest of its exponential backoff.
      if (chosenIndex(this.record(task.key)) >= task.index) task.wakeAt = Math.min(task.wakeAt, now + Math.floor(this.backoffMs * this.random()));
      return;
    }
    if (task.phase === 'read') {
      this.checkRead(task, now);
      return;
    }
    if (chosenIndex(this.record(task.key)) >= task.index) {
      task.confirmed = false;
      this.plan(task, now);
    }
  }

  private backoff(task: Task, now: number): void {
    task.phase = 'backoff';
    const exp = Math.min(task.attempts, 6);
    task.wakeAt = now + Math.floor(this.backoffMs * (1 + this.random()) * 2 ** exp);
  }

  private retry(task: Task, now: number, why: string): void {
    if (task.attempts >= this.maxAttempts) {
      this.finish(task, { ok: false, status: 'UNAVAILABLE', message: `replica ${this.config.id}: ${why} after ${task.attempts} attempts` }, now);
      return;
    }
    this.backoff(task, now);
  }

  private countAttempt(task: Task, now: number): boolean {
    if (task.attempts >= this.maxAttempts) {
      this.finish(task, { ok: false, status: 'UNAVAILABLE', message: `replica ${this.config.id}: no decision after ${task.attempts} attempts` }, now);
      return false;
    }
    task.attempts++;
    return true;
  }

  private finish(task: Task, result: ClientResult, now: number): void {
    this.tasks.delete(task.key);
    // An operation that failed before any accept carried its value was not applied, and never will be.
    if (!result.ok && result.status === 'UNAVAILABLE' && !task.sentOwn) result = { ...result, notApplied: true };
    this.reply(task.ref, result);
    const who = this.finishRequests.get(task.key);
    if (who !== undefined && result.ok) {
      this.finishRequests.delete(task.key);
      const rec = this.record(task.key);
      for (const m of who) {
        if (m === this.config.id) {
          // Its own sync asked (a pending instance).
          this.onFinished(m, task.key, chosenIndex(rec), task.confirmed ? task.readId : undefined);
          continue;
        }
        if (rec.chosen !== null) this.send(m, { type: 'learn', key: task.key, entry: rec.chosen });
        this.send(m, { type: 'finished', key: task.key, chosenIndex: chosenIndex(rec) });
      }
    }
    // The key's next queued operation starts now, but not nested in this call: an operation that
    // ends at once (its deadline passed, its write already applied) would otherwise start the next
    // from inside its own finish, and a queue of thousands on one key would overflow the stack.
    this.toStart.push(task.key);
    if (this.startingQueued) return;
    this.startingQueued = true;
    try {
      for (let key = this.toStart.shift(); key !== undefined; key = this.toStart.shift()) {
        if (this.tasks.has(key)) continue; // started meanwhile: its own finish starts the next
        const q = this.queues.get(key);
        const next = q?.shift();
        if (q !== undefined && q.length === 0) this.queues.delete(key);
        if (next !== undefined) this.startTask(next.ref, key, next.op, now, next.deadline);
      }
    } finally {
      this.startingQueued = false;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Output

  private record(key: string): KeyRecord {
    const rec = this.out.persist.get(key) ?? this.store.get(key);
    if (rec === LOST_RECORD) {
      if (!this.lostKeys.has(key)) this.noteLost(key);
      return EMPTY_RECORD;
    }
    return rec ?? EMPTY_RECORD;
  }

  // ---------------------------------------------------------------------------------------------
  // Lost keys: a record that failed its checksum, repaired from the other voters

  private lostMessage(key: string): string {
    return `replica ${this.config.id} lost key ${JSON.stringify(key)} (its stored record failed its checksum) and is repairing it from the other replicas; ask another replica`;
  }

  /** Starts the repair of a key whose record failed its checksum: asks every other voter about it. */
  private noteLost(key: string): void {
    const l: LostKey = { readId: this.nextReadId++, askedAt: this.lastNow, replies: new Map(), best: null, fence: 0, wanted: 0, target: undefined };
    this.lostKeys.set(key, l);
    this.repairReads.set(l.readId, key);
    this.lostFound++;
    // A task on the key ends the next time it consults the record (`plan`), refused.
    this.askAboutLost(key, l);
  }

  /** (Re)sends what a lost key's repair waits for: reads to the voters that did not answer, or the finish/catch-up of its target. */
  private askAboutLost(key: string, l: LostKey): void {
    l.askedAt = this.lastNow;
    if (l.target !== undefined) {
      const t = l.target;
      this.send(t.from, t.finish ? { type: 'finish', key } : { type: 'catchUp', key, knownIndex: l.best?.index ?? 0 });
      return;
    }
    // Only once this life is confirmed (a voter; a learner never is): its incarnation then differs
    // from every earlier life's, so no answer to an earlier life's read can pass for one to this.
    if (this.phase !== 'voter' && this.phase !== 'learner') return;
    for (const p of this.otherVoters) if (!l.replies.has(p)) this.send(p, { type: 'read', key, readId: l.readId, knownIndex: 0, readerIncarnation: this.incarnationNow, epoch: this.configuration.epoch });
  }

  /** Starts a lost key's repair again (the voters changed): new read, same newest entry. */
  private restartRepair(key: string, l: LostKey): void {
    this.repairReads.delete(l.readId);
    const again: LostKey = { readId: this.nextReadId++, askedAt: this.lastNow, replies: new Map(), best: l.best, fence: 0, wanted: 0, target: undefined };
    this.lostKeys.set(key, again);
    this.repairReads.set(again.readId, key);
    this.askAboutLost(key, again);
  }

  /** Asks about every lost key (when the replica starts to vote: keys found lost at open waited for it). */
  private askAboutAllLost(): void {
    for (const [key, l] of this.lostKeys) this.askAboutLost(key, l);
  }

  /** A voter's state of a lost key (the answer to the repair's read). */
  private onRepairState(from: MemberId, msg: Extract<PeerMessage, { type: 'readState' }>): void {
    const key = this.repairReads.get(msg.readId)!;
    const l = this.lostKeys.get(key);
    if (l === undefined || msg.key !== key || !this.otherVoters.includes(from) || l.replies.has(from)) return;
    l.replies.set(from, { chosenIndex: msg.chosenIndex, pending: msg.pendingAccepted !== 0 });
    if (msg.entry !== null && (l.best === null || msg.entry.index > l.best.index)) l.best = msg.entry;
    if (msg.entry !== null) this.configurationLearned(key, msg.entry);
    if (!this.otherVoters.every((p) => l.replies.has(p))) return;
    // Every other voter answered. As for a rejoin: before the loss this replica voted at most one
    // instance past what it had learned, which was chosen, so accepted by a majority that meets
    // every other voter: some voter reports it chosen, or accepted after its chosen index.
    let from2: MemberId = from;
    for (const [p, r] of l.replies) {
      l.fence = Math.max(l.fence, r.chosenIndex + (this.config.plantedBug === 'repair-fence-short' ? 1 : r.pending ? 3 : 2));
      const wanted = r.pending ? r.chosenIndex + 1 : r.chosenIndex;
      if (wanted > l.wanted) {
        l.wanted = wanted;
        from2 = p;
      }
    }
    if ((l.best?.index ?? 0) < l.wanted) {
      // A value may be chosen in the instance after what is known: the voter that accepted it decides it first.
      l.target = { from: from2, finish: l.replies.get(from2)!.pending };
      this.askAboutLost(key, l);
      return;
    }
    this.repairProgress(key, l);
  }

  /** A voter decided a lost key's pending instance as far as it could. */
  private onRepairFinished(from: MemberId, key: string, index: number): void {
    const l = this.lostKeys.get(key)!;
    if (l.target === undefined || l.target.from !== from) return;
    // As for a rejoin (`onFinished`): a `finished` short of the pending instance is not the answer.
    if (index < l.wanted) return;
    l.target.finish = false;
    if ((l.best?.index ?? 0) < l.wanted) this.askAboutLost(key, l);
    else this.repairProgress(key, l);
  }

  /** Ends a lost key's repair once every voter answered and the newest chosen entry is known. */
  private repairProgress(key: string, l: LostKey): void {
    if (!this.otherVoters.every((p) => l.replies.has(p)) || (l.best?.index ?? 0) < l.wanted) return;
    this.lostKeys.delete(key);
    this.repairReads.delete(l.readId);
    this.lostRepaired++;
    this.persist(key, { chosen: l.best, promised: 0, accepted: 0, acceptedEntry: null, fence: l.fence });
  }

  private persist(key: string, record: KeyRecord): void {
    this.out.persist.set(key, record);
    const st = this.sync?.targets.get(key);
    if (st !== undefined && chosenIndex(record) >= st.index) this.sync!.targets.delete(key);
    // A newly chosen configuration is adopted with the record that holds it.
    if (record.chosen !== null) this.configurationLearned(key, record.chosen);
  }

  private send(to: MemberId, message: PeerMessage): void {
    this.out.send.push({ to, message });
  }

  private reply(requestRef: number, result: ClientResult): void {
    this.out.replies.push({ requestRef, result });
  }

  private flush(): Output {
    this.settle();
    const out = this.out;
    this.out = emptyOutput();
    return out;
  }
}
