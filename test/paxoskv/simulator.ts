/**
 * A deterministic simulator for PaxosKV's core: replicas, a hostile network, crashing disks, bad
 * clocks, careless operators and retrying clients, all driven by one seeded PRNG and a virtual
 * clock, in the style of FoundationDB's and TigerBeetle's simulation testing.
 *
 * ## The driver it mirrors
 * Each core step's records and replica-wide meta go to a write overlay and become durable together
 * at the next group commit (after a random fsync delay); the step's messages and replies leave only
 * after that commit (the `Output` contract). A crash loses the overlay and everything not yet sent.
 * Every boot gets a start state as the real driver builds it from its data dir: `fresh` when the
 * dir was just created, `rejoin` when its meta says a rejoin is under way (or the operator created
 * it with `--rejoin`), `existing` otherwise, with the durable incarnation and peer incarnations.
 *
 * ## Faults
 * - network: loss, duplication, delay (hence reordering), partitions; lost replies to clients;
 * - replicas: crashes at any moment, and crashes at the fsync boundary (a group commit crashes the
 *   replica instead of committing: the batch is lost and nothing of it was sent);
 * - clocks: a per-replica offset and occasional steps, forward and backward, in the `now` each
 *   core sees (safety must not depend on them); per-client offsets for the client-clock stamps of
 *   write sessions;
 * - disks and operators: a restart may find the data dir wiped (the replica boots `fresh` and must
 *   refuse to vote) or rolled back to a copy taken when the previous boot began (it boots
 *   `existing` and must notice). A replica that stops (`failed`) stays down until the simulated
 *   operator moves its dir aside and restarts it with `--rejoin` on an empty dir;
 * - membership: learner-only members (an odd number of voters next to them);
 * - workload: a hot key with many clients (the issue 9 profile), and retries on other replicas.
 *
 * ## Checks
 * On every group commit (and, for a replica's own chosen index, on every persist), across replicas:
 * - agreement: no two replicas ever durably hold different chosen entries at one key and index; a write
 *   (client session and seq) is chosen at one version only; no client ever observes one value
 *   (the unique bytes of one client operation) at two versions;
 * - durable acceptor state (what finds persist-before-send bugs): one value per (key, index,
 *   ballot) ever durably accepted; at most one value per (key, index) durably accepted by a
 *   majority of voters under one ballot; a durably learned entry equals that majority-accepted
 *   value; every accepted value is an entry of the instance it was accepted in; accepted <=
 *   promised; learners never vote;
 * - per replica life (reset when its data is wiped or rolled back): the durable chosen index never
 *   goes back, and neither does the durable promise within one instance.
 * A replica that stops (`failed`) on a data dir that was never wiped nor rolled back is reported
 * apart ({@link SimResult.spuriousStops}): not a safety violation, but the operator is then told to
 * throw intact data away. {@link runAndCheck} also checks the client history for linearizability.
 */
import { BinaryHeap } from '../../framework/overload/binary-heap.js';
import { sameEntry } from '../../services/paxoskv/core/acceptor.js';
import { Replica, type CorePlantedBug, type StartState } from '../../services/paxoskv/core/replica.js';
import { messageFromPb, messageToPb } from '../../services/paxoskv/codec.js';
import { abortChange, beginChange, describeConfiguration, encodeConfiguration, finishChange, initialConfiguration, isQuorum, roleOf, type MembershipChange } from '../../services/paxoskv/core/membership.js';
import { chosenIndex, CONFIG_KEY, LOST_RECORD, type ClientOp, type Configuration, type ClientResult, type Entry, type KeyRecord, type MemberId, type MetaPatch, type Output, type PeerMessage } from '../../services/paxoskv/core/types.js';
import { checkKvHistory, type KvInput, type KvOperation, type KvOutput } from '../support/linearizability.js';
import { mulberry32 } from '../support/prng.js';
import type { KvPlan, KvStep, KvStepReply } from '../../services/paxoskv/plan.js';

export { mulberry32 } from '../support/prng.js';

/**
 * Bugs planted in the simulated driver, for the mutation tests (never set otherwise):
 * - `reply-before-fsync`: client replies leave at once, before the group commit of their step;
 * - `promise-before-fsync`: `promise` and `accepted` messages leave at once, before the group
 *   commit that makes the promise or accept durable.
 */
export type DriverPlantedBug = 'reply-before-fsync' | 'promise-before-fsync';

/** A planted bug: in the driver ({@link DriverPlantedBug}) or in the core ({@link CorePlantedBug}). */
export type SimPlantedBug = DriverPlantedBug | CorePlantedBug;

/** What a simulation run does. Times are virtual milliseconds; rates are probabilities. */
export interface SimOptions {
  seed: number;
  /** The name of the mix of faults drawn for this run (reports only). */
  profile: string;
  /** Cluster size, learners included: members are 1..members. */
  members: number;
  /** Members that only learn (outside the voting majority). */
  learners: readonly MemberId[];
  clients: number;
  keys: number;
  opsPerClient: number;
  /** Probability that a message between replicas is lost. */
  dropRate: number;
  /** Probability that a message between replicas is delivered twice. */
  duplicateRate: number;
  /**
   * Probability that a message between replicas is held 0.5-3 s (a long tail: messages of a
   * replica's earlier life can then arrive after it lost its data and rejoined).
   */
  longDelayRate: number;
  /** Network delay range (ms), for replicas and clients alike. */
  minDelayMs: number;
  maxDelayMs: number;
  /** Group-commit (fsync) delay range (ms). */
  minFsyncMs: number;
  maxFsyncMs: number;
  /** Probability that a group commit crashes its replica instead of committing. */
  fsyncCrashRate: number;
  /** Mean time between replica crashes (ms); 0 for none. */
  crashEveryMs: number;
  /** Mean time between network partitions (ms); 0 for none. */
  partitionEveryMs: number;
  /** Probability that a reply is lost on its way back to the client. */
  replyDropRate: number;
  /** Each replica's clock offset is drawn uniformly from [-x, x] (ms). */
  replicaClockOffsetMs: number;
  /** Mean time between steps of some replica's clock (ms); 0 for none. */
  clockStepEveryMs: number;
  /**
   * Mean time between writes of the next epoch's configuration, same members (ms; 0: never): the
   * epoch fence and the adoption of configurations under every other fault.
   */
  epochStepEveryMs: number;
  /**
   * Mean time between an operator's membership steps (ms; 0: never): from a stable configuration it
   * begins a change (adds a new, empty member as a voter or a learner, removes a voter, replaces a
   * voter, perhaps a dead one, by a new member, or makes a learner a voter); from a joint one it
   * writes `finish` (which the replicas also propose themselves) or goes back to the first half.
   * A third of the steps race a crash. Changes keep 3 to 5 voters.
   */
  memberChangeEveryMs: number;
  /** The share of those changes that change two members at once (grow 3 to 5, shrink 5 to 3, swap two). */
  twoMemberChangeRate: number;
  /** Largest clock step, forward or backward (ms). */
  maxClockStepMs: number;
  /** Each client's clock offset is drawn uniformly from [-x, x] (ms). */
  clientClockOffsetMs: number;
  /** Probability that a restart after a crash finds the data dir gone. */
  wipeRate: number;
  /** Probability that a restart after a crash finds the data dir rolled back to the previous boot's start. */
  rollbackRate: number;
  /**
   * Probability that a restart after a crash finds one record of the data dir failing its checksum
   * (the store reads it as LOST_RECORD until it is written again): the replica repairs that key.
   */
  corruptRate: number;
  /**
   * Mean time between records damaged while a replica runs (ms; 0: never): a random record of a
   * random running replica starts failing its checksum, with no restart (one data loss at a time,
   * as for `corruptRate`). The replica finds it when it next reads the key.
   */
  corruptEveryMs: number;
  /** Client attempt timeout and whole-operation deadline (ms). */
  attemptTimeoutMs: number;
  operationDeadlineMs: number;
  /** Give up the run at this virtual time (ms). */
  maxTimeMs: number;
  /** @internal Test-only: a planted bug (mutation tests). */
  plantedBug?: SimPlantedBug;
  /**
   * Plans the clients run instead of random key-value operations (the queue and table models;
   * `keys` is then unused). Stateful: one per run.
   */
  workload?: SimWorkload;
}

/** The issue 9 hot-key workload (seed 80 of it reproduced the old double-apply). */
export const HOT_KEY_WORKLOAD = {
  keys: 1,
  clients: 16,
  opsPerClient: 40,
  minDelayMs: 0.2,
  maxDelayMs: 1,
  maxFsyncMs: 0.3,
  dropRate: 0.15,
  crashEveryMs: 300,
  partitionEveryMs: 0,
} as const satisfies Partial<SimOptions>;

/** The pre-issue-9 profile: 3 or 5 voters, a few clients on a few keys, crashes and partitions, no other fault. */
export function classicSimOptions(seed: number): SimOptions {
  const r = mulberry32(seed ^ 0x9e3779b9);
  return {
    seed,
    profile: 'classic',
    members: r() < 0.7 ? 3 : 5,
    learners: [],
    clients: 3 + Math.floor(r() * 4),
    keys: 1 + Math.floor(r() * 4),
    opsPerClient: 25,
    dropRate: r() * 0.15,
    duplicateRate: r() * 0.1,
    longDelayRate: mulberry32(seed ^ 0x5bd1e995)() < 0.3 ? 0.01 : 0,
    minDelayMs: 1,
    maxDelayMs: 5 + Math.floor(r() * 40),
    minFsyncMs: 0,
    maxFsyncMs: 1 + Math.floor(r() * 10),
    fsyncCrashRate: 0,
    crashEveryMs: r() < 0.6 ? 300 + Math.floor(r() * 1500) : 0,
    partitionEveryMs: r() < 0.4 ? 500 + Math.floor(r() * 2000) : 0,
    replyDropRate: 0,
    replicaClockOffsetMs: 0,
    clockStepEveryMs: 0,
    epochStepEveryMs: 0,
    memberChangeEveryMs: 0,
    twoMemberChangeRate: 0.25,
    maxClockStepMs: 0,
    clientClockOffsetMs: 0,
    wipeRate: 0,
    rollbackRate: 0,
    corruptRate: 0,
    corruptEveryMs: 0,
    attemptTimeoutMs: 400,
    operationDeadlineMs: 3000,
    maxTimeMs: 120_000,
  };
}

/**
 * The options of seed `seed`: a mix drawn per seed, so that a plain run of many seeds covers every
 * fault. About one seed in five is {@link classicSimOptions}; the others draw, each on its own:
 * the membership (3 or 5 voters, or 4 or 6 members with one learner), the hot-key workload (one
 * seed in six), crashes at the fsync boundary, lost replies, replica clock offsets up to ±60 s and
 * clock steps, large client clock offsets (rarely), and wiped or rolled-back data dirs on restart.
 */
export function defaultSimOptions(seed: number): SimOptions {
  const o = classicSimOptions(seed);
  const r = mulberry32(seed ^ 0x2545f491);
  if (r() < 0.2) return o;
  const parts: string[] = [];
  const shape = r();
  if (shape < 0.5) o.members = 3;
  else if (shape < 0.75) o.members = 5;
  else {
    o.members = shape < 0.875 ? 4 : 6;
    o.learners = [1 + Math.floor(r() * o.members)];
    parts.push(`learner ${o.learners[0]} of ${o.members}`);
  }
  if (r() < 1 / 6) {
    Object.assign(o, HOT_KEY_WORKLOAD);
    parts.push('hot key');
  }
  if (r() < 0.5) {
    o.fsyncCrashRate = 0.005 + r() * 0.045;
    parts.push('fsync crashes');
  }
  if (r() < 0.5) {
    o.replyDropRate = r() * 0.2;
    parts.push('lost replies');
  }
  if (r() < 0.5) {
    o.replicaClockOffsetMs = 60_000;
    parts.push('replica clocks ±60 s');
  } else o.replicaClockOffsetMs = 50;
  if (r() < 0.4) {
    o.clockStepEveryMs = 500 + Math.floor(r() * 2500);
    o.maxClockStepMs = r() < 0.5 ? 1000 : 10_000;
    parts.push('clock steps');
  }
  if (r() < 0.1) {
    o.clientClockOffsetMs = 30_000;
    parts.push('client clocks ±30 s');
  } else o.clientClockOffsetMs = 50;
  if (r() < 0.35) {
    o.wipeRate = 0.1 + r() * 0.15;
    o.rollbackRate = 0.1 + r() * 0.2;
    if (o.crashEveryMs === 0) o.crashEveryMs = 300 + Math.floor(r() * 1200);
    parts.push('disk loss');
  }
  // Drawn last, so that the faults above stay what they were for every seed.
  if (r() < 0.3) {
    o.corruptRate = 0.15 + r() * 0.25;
    if (o.crashEveryMs === 0) o.crashEveryMs = 300 + Math.floor(r() * 1200);
    parts.push('corrupt records');
    if (r() < 0.5) {
      o.corruptEveryMs = 200 + Math.floor(r() * 800);
      parts.push('records damaged while running');
    }
  }
  // Drawn after everything above, so that older seeds keep their faults.
  if (r() < 0.3) {
    o.epochStepEveryMs = 150 + Math.floor(r() * 850);
    parts.push('epoch steps');
  }
  if (r() < 0.3) {
    o.memberChangeEveryMs = 150 + Math.floor(r() * 600);
    parts.push('membership changes');
  }
  o.profile = parts.length === 0 ? 'mixed' : parts.join(', ');
  return o;
}

/** What a run exercised and produced. */
export interface SimStats {
  /** Messages between replicas sent, and those lost (dropped, or cut by a partition). */
  messages: number;
  dropped: number;
  /** Replica crashes at random moments, and at the fsync boundary. */
  crashes: number;
  fsyncCrashes: number;
  partitions: number;
  clockSteps: number;
  /** Runs that ended with nothing left to happen (checked for every replica being back), and
   *  replicas back then but still behind the last epoch (nothing of it reached them yet). */
  settledRuns: number;
  epochBehindAtEnd: number;
  /** Writes of the next epoch's configuration started, and how many epochs past the first were adopted. */
  epochSteps: number;
  epochsAdopted: number;
  /** Membership steps the operator wrote (begin, finish, back), members added, and members that stopped as removed. */
  memberSteps: number;
  membersAdded: number;
  membersRemoved: number;
  /** Configurations adopted that changed the voters (joint ones and the stable ones after them). */
  voterChanges: number;
  /** Replies lost on their way back to a client. */
  droppedReplies: number;
  /** Restarts on a wiped data dir, and how many of those the replica caught (it stopped, `failed`). */
  wipes: number;
  wipesDetected: number;
  /** Restarts on a rolled-back data dir, and how many of those the replica caught. */
  rollbacks: number;
  rollbacksDetected: number;
  /** Operator restarts with `--rejoin` on an empty dir, and rejoins that reached `voter`. */
  rejoinsStarted: number;
  rejoinsCompleted: number;
  /** Restarts that found a record failing its checksum, and such records repaired (durably rewritten). */
  corruptions: number;
  corruptionsRepaired: number;
  /** Client operations with a definite outcome, with an unknown one, and failed compare-and-sets. */
  completed: number;
  /** Writes acknowledged to their client (part of `completed`). */
  writes: number;
  unknown: number;
  failedPreconditions: number;
  /** Write attempts refused as not applied: ABORTED (late) and DEADLINE_EXCEEDED. */
  notApplied: number;
  /** Virtual time at the end of the run (ms). */
  timeMs: number;
}

/** A fresh, zeroed {@link SimStats}. */
export function emptySimStats(): SimStats {
  return {
    messages: 0, dropped: 0, crashes: 0, fsyncCrashes: 0, partitions: 0, clockSteps: 0, epochSteps: 0, epochsAdopted: 0, settledRuns: 0, epochBehindAtEnd: 0, droppedReplies: 0,
    memberSteps: 0, membersAdded: 0, membersRemoved: 0, voterChanges: 0,
    wipes: 0, wipesDetected: 0, rollbacks: 0, rollbacksDetected: 0, rejoinsStarted: 0, rejoinsCompleted: 0,
    corruptions: 0, corruptionsRepaired: 0,
    completed: 0, writes: 0, unknown: 0, failedPreconditions: 0, notApplied: 0, timeMs: 0,
  };
}

/** The outcome of a run. */
export interface SimResult {
  history: KvOperation[];
  /** Broken safety invariants (the run stops at the first). */
  violations: string[];
  /**
   * Replicas that stopped (`failed`) although their data dir was never wiped nor rolled back: the
   * operator is then told to throw intact data away. Not a safety violation; the run goes on.
   */
  spuriousStops: string[];
  /** Every chosen entry any replica held, by `key#index`. */
  chosen: ReadonlyMap<string, Entry>;
  stats: SimStats;
}

interface SimEvent {
  at: number;
  seq: number;
  run: () => void;
}

/** Events by (time, sequence): a binary min-heap. */
class EventQueue {
  private readonly heap = new BinaryHeap<SimEvent>((a, b) => a.at < b.at || (a.at === b.at && a.seq < b.seq));
  private seq = 0;
  get size(): number {
    return this.heap.size;
  }
  push(at: number, run: () => void): void {
    this.heap.push({ at, seq: this.seq++, run });
  }
  pop(): SimEvent | undefined {
    return this.heap.pop();
  }
}

/** Replica-wide state of a data dir, as the real store keeps it in its meta record. */
interface DurableMeta {
  incarnation: number;
  announced: number[];
  peerIncarnations: Map<MemberId, number>;
  rejoining: boolean;
  /** The configuration adopted last, once it is not the first. */
  configuration?: Configuration;
}

/** Why the current boot of a replica happened (for traces). */
type BootCause = 'first' | 'restart' | 'wipe' | 'rollback' | 'rejoin';

interface SimNode {
  id: MemberId;
  /** A learner that never voted (a configured one, until a configuration makes it a voter). */
  learner: boolean;
  /** Joined a running cluster (`join` start): its data dir is never lost (a joiner's rejoin is not simulated). */
  joined: boolean;
  /** Removed from the cluster and stopped for good. */
  retired: boolean;
  /** The data dir: undefined when missing (never created, or wiped). */
  dir: { records: Map<string, KeyRecord>; meta: DurableMeta } | undefined;
  /** The data dir as it was when the current boot began (before `begin`): what a rollback restores. */
  bootSnapshot: { records: Map<string, KeyRecord>; meta: DurableMeta } | undefined;
  overlay: Map<string, KeyRecord>;
  pending: Output[];
  flushScheduled: boolean;
  core: Replica | undefined;
  bootCause: BootCause;
  /** The start kind of the current boot. */
  startKind: StartState['kind'];
  /** The core of this boot stopped (`failed`) and waits for the operator. */
  failed: boolean;
  /** The current boot (a rejoin) reached `voter`. */
  rejoinCounted: boolean;
  epoch: number;
  /** Sim time of the next scheduled tick, and a generation that voids older tick events. */
  tickAt: number;
  tickGen: number;
  /** This replica's clock minus the simulation's (ms). */
  clockOffset: number;
  /** Per key, the last durable (chosen index, promise) of this life of the data (reset by wipes and rollbacks). */
  life: Map<string, { chosen: number; promised: number }>;
  /**
   * Its data is lost or about to be (wiped, rolled back, or its replica stopped for the operator),
   * and it has not voted since: the one data loss the cluster is allowed at a time.
   */
  recovering: boolean;
  /** A wipe or rollback not yet detected (the replica did not stop) nor outgrown (it did not vote since). */
  pendingLoss: 'wipe' | 'rollback' | undefined;
  /** Its data dir was wiped or rolled back since it last finished a rejoin (or since its first boot). */
  lostSinceRejoin: boolean;
  /** Keys whose stored record fails its checksum (read as LOST_RECORD) until they are written again. */
  corrupt: Set<string>;
}

interface SimClient {
  index: number;
  /** The write session id. */
  session: string;
  /** This client's clock minus the simulation's (ms). */
  clockOffset: number;
  nextSeq: number;
  lastReplica: MemberId | undefined;
}

interface ClientOpState {
  op: KvOperation;
  client: SimClient;
  /** The write's seq within the session (writes only). */
  seq: number | undefined;
  /** The write's expiry (client clock, ms); also when the client stops trying any operation. */
  expiresAt: number;
  attempt: number;
  /** Attempts refused in a row (an answer, not a timeout). */
  refusedInRow: number;
  /** An earlier attempt timed out or failed without `notApplied`: it may still apply. */
  ambiguous: boolean;
  done: boolean;
  /** Called once, with the operation's outcome (as a plan step's reply, or unknown). */
  finish: (outcome: StepOutcome) => void;
}

/** How one key-value operation of a simulated client ended: a plan step's reply, or unknown (the client gave up). */
export type StepOutcome = KvStepReply | { kind: 'unknown' };

/** How a plan run by a simulated client ended. */
export type PlanOutcome = { kind: 'returned'; value: unknown } | { kind: 'threw'; error: unknown } | { kind: 'unknown' };

/**
 * A workload of plans (services/paxoskv/plan.ts), e.g. the queue's or the table's operations, run
 * by the simulated clients in place of the random key-value operations: each client runs
 * `opsPerClient` plans, one at a time. Every plan step is a key-value operation with the clients'
 * usual retries on other replicas, recorded in the key-value history as any other.
 */
export interface SimWorkload {
  /**
   * Client `client`'s next operation.
   * @param rand - the run's PRNG (the only randomness a workload may use).
   * @param now - virtual time (ms).
   * @returns its plan, and `end`, called once with how the plan ended and the time it did.
   */
  next(client: number, rand: () => number, now: number): { plan: KvPlan<unknown>; end(outcome: PlanOutcome, now: number): void };
}

/** Replica and client clocks read like epoch milliseconds. */
const CLOCK_BASE = 1_700_000_000_000;
/** Ticks are scheduled this much after the computed wake time, so float rounding never makes a tick early. */
const TICK_SLACK_MS = 0.001;
/** A client's pause once every replica refused an operation in a row (ms), as PaxosKVClient's. */
const CLIENT_PAUSE_MS = 50;
/** How long the operator takes to notice a stopped replica and restart it with --rejoin (ms). */
const OPERATOR_MIN_MS = 200;
const OPERATOR_MAX_MS = 1500;

function cloneMeta(m: DurableMeta): DurableMeta {
  return { incarnation: m.incarnation, announced: [...m.announced], peerIncarnations: new Map(m.peerIncarnations), rejoining: m.rejoining, configuration: m.configuration };
}

function isDriverBug(bug: SimPlantedBug | undefined): bug is DriverPlantedBug {
  return bug === 'reply-before-fsync' || bug === 'promise-before-fsync';
}

/**
 * Runs one seeded simulation.
 * @param options - what to run ({@link defaultSimOptions} for a seed's mix).
 * @param trace - receives a line per event: faults, boots and stops, messages delivered, durable
 *   votes, client operations and their attempts' results.
 */
export function simulate(options: SimOptions, trace?: (line: string) => void): SimResult {
  const rand = mulberry32(options.seed);
  const q = new EventQueue();
  let now = 0;
  /** Every replica ever started (membership changes add new ones). */
  const members = Array.from({ length: options.members }, (_, i) => i + 1);
  const initialMembers = [...members];
  const learnerSet = new Set(options.learners);
  const voters = members.filter((m) => !learnerSet.has(m));
  /** Each epoch's configuration, as adopted (a value durably accepted by a quorum of its epoch's is chosen). */
  const configurationAt = new Map<number, Configuration>([[1, initialConfiguration(voters, [...learnerSet])]]);
  /** Per `replica#key#index#ballot`: the epoch the replica was at when it accepted (acceptors accept only at the proposal's epoch). */
  const acceptEpoch = new Map<string, number>();
  const nodes = new Map<MemberId, SimNode>();
  const violations: string[] = [];
  const spuriousStops: string[] = [];
  const stats = emptySimStats();
  const driverBug = isDriverBug(options.plantedBug) ? options.plantedBug : undefined;
  const coreBug = isDriverBug(options.plantedBug) ? undefined : options.plantedBug;
  let partition: Set<MemberId> | undefined;
  const refs = new Map<number, { state: ClientOpState; attempt: number }>();
  let nextRef = 1;
  const history: KvOperation[] = [];
  let opsLeft = options.clients * options.opsPerClient;
  const log = trace === undefined ? undefined : (s: string) => trace(`${now.toFixed(3).padStart(10)} ${s}`);

  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const between = (a: number, b: number) => a + rand() * (b - a);
  const violation = (s: string) => {
    log?.(`VIOLATION ${s}`);
    violations.push(s);
  };

  // --- invariants ---------------------------------------------------------------------------

  /** The configuration adopted at each epoch, by whichever replica adopted it first. */
  const configurations = new Map<number, { by: MemberId; text: string }>();
  /** The newest configuration any replica adopted (what the operator reads). */
  let lastConfiguration: Configuration = configurationAt.get(1)!;
  /** Every replica that adopts a configuration of an epoch adopts the same one (it is chosen). */
  function noteConfiguration(id: MemberId, c: Configuration): void {
    const text = describeConfiguration(c);
    const known = configurations.get(c.epoch);
    if (known === undefined) {
      configurations.set(c.epoch, { by: id, text });
      configurationAt.set(c.epoch, c);
      stats.epochsAdopted = Math.max(stats.epochsAdopted, c.epoch - 1);
      if (c.epoch > lastConfiguration.epoch) {
        if (c.next !== undefined || lastConfiguration.next !== undefined) stats.voterChanges++;
        lastConfiguration = c;
      }
      log?.(`replica ${id} adopts ${text}`);
    } else if (known.text !== text) violation(`epoch ${c.epoch}: replica ${id} adopted ${text}, replica ${known.by} adopted ${known.text}`);
    // A learner made a voter votes from now on.
    const node = nodes.get(id);
    if (node !== undefined && roleOf(c, id) === 'voter') node.learner = false;
  }
  /** Every chosen entry seen, by `key#index`. */
  const chosenAt = new Map<string, Entry>();
  /** Per `key#index#ballot`: the value durably accepted, the voters that ever durably accepted it, and the proposal's epoch. */
  const acceptedAt = new Map<string, { entry: Entry; voters: Set<MemberId>; epoch: number; noted: boolean }>();
  /** Per `key#index`: the value a quorum of its epoch's configuration durably accepted under one ballot. */
  const majorityAt = new Map<string, { entry: Entry; ballot: number }>();
  /** Per write (`session#seq`): where it was chosen. */
  const writeChosenAt = new Map<string, { key: string; index: number }>();
  /** Per key and value (the unique bytes one client operation wrote): the version a client observed it at. */
  const valueSeenAt = new Map<string, number>();

  function noteChosen(id: MemberId, key: string, entry: Entry): void {
    const slot = `${key}#${entry.index}`;
    const known = chosenAt.get(slot);
    if (known === undefined) {
      chosenAt.set(slot, entry);
      const m = majorityAt.get(slot);
      if (m !== undefined && !sameEntry(m.entry, entry)) {
        violation(`key ${key} index ${entry.index}: replica ${id} learned ${describe(entry)}, but ${describe(m.entry)} was durably accepted by a majority under ballot ${m.ballot}`);
      }
      if (entry.writer !== null) {
        const w = `${entry.writer.client}#${entry.writer.seq}`;
        const first = writeChosenAt.get(w);
        if (first === undefined) writeChosenAt.set(w, { key, index: entry.index });
        else if (first.key !== key || first.index !== entry.index) {
          violation(`write ${w} applied twice: at ${first.key} version ${first.index} and at ${key} version ${entry.index} (${describe(entry)})`);
        }
      }
    } else if (!sameEntry(known, entry)) {
      violation(`key ${key} index ${entry.index}: replica ${id} holds ${describe(entry)} as chosen, another replica held ${describe(known)}`);
    }
  }

  function noteMajority(key: string, index: number, ballot: number, entry: Entry): void {
    const slot = `${key}#${index}`;
    const m = majorityAt.get(slot);
    if (m === undefined) {
      majorityAt.set(slot, { entry, ballot });
      log?.(`majority accepted ${slot} ballot ${ballot}: ${describe(entry)}`);
      if (entry.index !== index) violation(`key ${key} index ${index}: a majority accepted ${describe(entry)}, an entry of index ${entry.index}`);
      const c = chosenAt.get(slot);
      if (c !== undefined && !sameEntry(c, entry)) {
        violation(`key ${key} index ${index}: ${describe(entry)} durably accepted by a majority under ballot ${ballot}, but ${describe(c)} was learned as chosen`);
      }
    } else if (!sameEntry(m.entry, entry)) {
      violation(`key ${key} index ${index}: two values durably accepted by a majority: ${describe(m.entry)} under ballot ${m.ballot}, ${describe(entry)} under ballot ${ballot}`);
    }
  }

  /**
   * Checks a record as it enters a replica's view (overlay): its chosen index never goes back.
   * Agreement is checked when records become durable: an entry the core learned in a step is
   * chosen only once the votes it counted are durable, and nothing of it leaves before that.
   */
  function checkPersist(node: SimNode, key: string, before: KeyRecord | undefined, after: KeyRecord): void {
    const b = before === undefined ? 0 : chosenIndex(before);
    const a = chosenIndex(after);
    if (a < b) violation(`replica ${node.id} key ${key}: chosen index went back from ${b} to ${a}`);
  }

  /** Checks a record as it becomes durable. */
  function checkDurable(node: SimNode, key: string, rec: KeyRecord): void {
    const id = node.id;
    const c = chosenIndex(rec);
    const last = node.life.get(key);
    if (last !== undefined) {
      if (c < last.chosen) violation(`replica ${id} key ${key}: durable chosen index went back from ${last.chosen} to ${c} within one life of its data`);
      else if (c === last.chosen && rec.promised < last.promised) {
        violation(`replica ${id} key ${key} instance ${c + 1}: durable promise went back from ${last.promised} to ${rec.promised} within one life of its data`);
      }
    }
    node.life.set(key, { chosen: c, promised: rec.promised });
    if (rec.accepted > rec.promised) violation(`replica ${id} key ${key}: durable record accepted ${rec.accepted} above its promise ${rec.promised}`);
    if (node.learner && (rec.promised !== 0 || rec.accepted !== 0)) violation(`learner ${id} key ${key}: voted (promised ${rec.promised}, accepted ${rec.accepted})`);
    if (rec.chosen !== null) noteChosen(id, key, rec.chosen);
    if (rec.accepted === 0) return;
    const index = c + 1;
    const e = rec.acceptedEntry;
    if (e === null) {
      violation(`replica ${id} key ${key}: durable record accepted ballot ${rec.accepted} without a value`);
      return;
    }
    if (e.index !== index) violation(`replica ${id} key ${key}: durably accepted ${describe(e)} for instance ${index}, an entry of index ${e.index}`);
    const slot = `${key}#${index}#${rec.accepted}`;
    let acc = acceptedAt.get(slot);
    if (acc === undefined) {
      const epoch = acceptEpoch.get(`${id}#${slot}`);
      if (epoch === undefined) violation(`replica ${id} durably accepted ${slot} with no step of it seen accepting`);
      acc = { entry: e, voters: new Set(), epoch: epoch ?? 1, noted: false };
      acceptedAt.set(slot, acc);
    } else if (!sameEntry(acc.entry, e)) {
      violation(`key ${key} index ${index} ballot ${rec.accepted}: two values durably accepted: ${describe(acc.entry)} and, at replica ${id}, ${describe(e)}`);
      return;
    }
    if (acc.voters.has(id)) return;
    acc.voters.add(id);
    log?.(`replica ${id} durably accepted ${slot} at epoch ${acc.epoch} (${acc.voters.size} voters): ${describe(e)}`);
    const conf = configurationAt.get(acc.epoch);
    if (!acc.noted && conf !== undefined && isQuorum(conf, acc.voters)) {
      acc.noted = true;
      noteMajority(key, index, rec.accepted, e);
    }
  }

  function observeValue(key: string, value: Uint8Array, version: number, what: string): void {
    const text = `${key}\u0000${Buffer.from(value).toString('base64')}`;
    const seen = valueSeenAt.get(text);
    if (seen === undefined) valueSeenAt.set(text, version);
    else if (seen !== version) violation(`value ${new TextDecoder().decode(value)} of ${key} observed at versions ${seen} and ${version} (${what})`);
  }

  // --- replicas -----------------------------------------------------------------------------
  const replicaNow = (node: SimNode) => CLOCK_BASE + now + node.clockOffset;

  function boot(node: SimNode, cause: BootCause): void {
    let created = false;
    if (node.dir === undefined) {
      // A missing dir is created with its meta record before anything else (as the real store does).
      node.dir = { records: new Map(), meta: { incarnation: 0, announced: [], peerIncarnations: new Map(), rejoining: cause === 'rejoin' } };
      created = true;
    }
    const dir = node.dir;
    node.bootSnapshot = { records: new Map(dir.records), meta: cloneMeta(dir.meta) };
    // A joined member whose data dir holds no configuration naming it yet joins again.
    const named = dir.meta.configuration !== undefined && roleOf(dir.meta.configuration, node.id) !== 'removed';
    const start: StartState = {
      kind: dir.meta.rejoining ? 'rejoin' : node.joined && !named ? 'join' : created ? 'fresh' : 'existing',
      incarnation: dir.meta.incarnation,
      announced: [...dir.meta.announced],
      peerIncarnations: new Map(dir.meta.peerIncarnations),
    };
    log?.(`boot replica ${node.id} (${cause}) as ${start.kind}, incarnation ${start.incarnation}, ${dir.records.size} records`);
    node.bootCause = cause;
    node.startKind = start.kind;
    node.failed = false;
    node.rejoinCounted = false;
    node.overlay = new Map();
    node.pending = [];
    node.flushScheduled = false;
    node.tickAt = Infinity;
    node.tickGen++;
    const overlay = node.overlay;
    node.core = new Replica(
      {
        id: node.id, members: initialMembers, learners: options.learners, start, phaseTimeoutMs: 100, maxAttempts: 8, backoffMs: 5, plantedBug: coreBug,
        // As an operator's --join: the voters it knows of now (a rejoining or joining replica learns the configuration from them).
        join: lastConfiguration.voters.filter((m) => m !== node.id && !nodes.get(m)!.retired),
        ...(dir.meta.configuration === undefined ? {} : { configuration: dir.meta.configuration }),
      },
      {
        get: (k) => overlay.get(k) ?? (node.corrupt.has(k) ? LOST_RECORD : dir.records.get(k)),
        keysAfter: (after, limit) => {
          const keys = new Set<string>();
          for (const k of dir.records.keys()) if (k > after) keys.add(k);
          for (const k of overlay.keys()) if (k > after) keys.add(k);
          return [...keys].sort().slice(0, limit);
        },
      },
      rand,
    );
    handle(node, node.core.begin(replicaNow(node)));
    // As the real driver: the records that failed their checksums when the store opened.
    if (node.corrupt.size > 0) handle(node, node.core.markLost([...node.corrupt], replicaNow(node)));
  }

  function newNode(id: MemberId, joined: boolean): SimNode {
    const node: SimNode = {
      id, learner: learnerSet.has(id), joined, retired: false, dir: undefined, bootSnapshot: undefined, overlay: new Map(), pending: [], flushScheduled: false,
      core: undefined, bootCause: 'first', startKind: 'fresh', failed: false, rejoinCounted: false, epoch: 0, tickAt: Infinity, tickGen: 0,
      clockOffset: Math.round(between(-options.replicaClockOffsetMs, options.replicaClockOffsetMs)), life: new Map(), recovering: false, corrupt: new Set(),
      pendingLoss: undefined, lostSinceRejoin: false,
    };
    nodes.set(id, node);
    return node;
  }
  for (const id of members) newNode(id, false);
  for (const node of nodes.values()) boot(node, 'first');

  function handle(node: SimNode, out: Output): void {
    if (out.meta?.configuration !== undefined) noteConfiguration(node.id, out.meta.configuration);
    for (const [k, r] of out.persist) {
      const before = node.overlay.get(k) ?? node.dir!.records.get(k);
      checkPersist(node, k, before, r);
      node.overlay.set(k, r);
      // The epoch of a new acceptance: the replica's own (the fence lets it accept only at the proposal's).
      if (r.accepted !== 0 && node.core !== undefined) {
        const at = `${node.id}#${k}#${chosenIndex(r) + 1}#${r.accepted}`;
        if (!acceptEpoch.has(at)) acceptEpoch.set(at, node.core.membership.epoch);
      }
    }
    if (driverBug === 'reply-before-fsync' && out.replies.length > 0) {
      for (const r of out.replies) deliverReply(r.requestRef, r.result);
      out = { ...out, replies: [] };
    } else if (driverBug === 'promise-before-fsync' && out.send.some((s) => s.message.type === 'promise' || s.message.type === 'accepted')) {
      const early = out.send.filter((s) => s.message.type === 'promise' || s.message.type === 'accepted');
      for (const s of early) send(node.id, s.to, s.message);
      out = { ...out, send: out.send.filter((s) => !early.includes(s)) };
    }
    if (node.pending.length === 0 && out.persist.size === 0 && out.meta === undefined) release(node, out);
    else {
      node.pending.push(out);
      if (!node.flushScheduled) {
        node.flushScheduled = true;
        const epoch = node.epoch;
        q.push(now + between(options.minFsyncMs, options.maxFsyncMs), () => flush(node, epoch));
      }
    }
    afterStep(node);
  }

  /** Notices mode changes (a stop for the operator, a finished rejoin) and schedules the next tick. */
  function afterStep(node: SimNode): void {
    const core = node.core;
    if (core === undefined) return;
    if (opsLeft <= 0 && operatorRefs.size === 0 && core.mode === 'joining' && roleOf(lastConfiguration, node.id) === 'removed') {
      // Started to join for a change that never took: the operator stops it once the work is done.
      log?.(`operator: replica ${node.id} was never added; stopped`);
      stop(node);
      node.retired = true;
      return;
    }
    if (core.mode === 'failed' && core.removed) {
      // Removed from the cluster: it serves no one, and the operator does not restart it; its
      // process stays up, telling the configuration to peers that missed it.
      if (!node.retired) {
        log?.(`replica ${node.id} stopped: ${core.failure ?? ''}`);
        node.retired = true;
        node.recovering = false;
        stats.membersRemoved++;
      }
      return;
    }
    if (core.mode === 'failed' && !node.failed) {
      node.failed = true;
      // Its data is as good as lost: the operator will move it aside.
      if (!node.learner) node.recovering = true;
      if (node.pendingLoss === 'wipe') stats.wipesDetected++;
      if (node.pendingLoss === 'rollback') stats.rollbacksDetected++;
      node.pendingLoss = undefined;
      log?.(`replica ${node.id} stopped (${node.bootCause} boot): ${core.failure ?? ''}`);
      if (!node.lostSinceRejoin) {
        const s = `replica ${node.id} stopped on a data dir that was never wiped nor rolled back (${node.bootCause} boot): ${core.failure ?? ''}`;
        log?.(`SPURIOUS STOP ${s}`);
        spuriousStops.push(s);
      }
      const epoch = node.epoch;
      q.push(now + between(OPERATOR_MIN_MS, OPERATOR_MAX_MS), () => {
        if (node.epoch !== epoch) return; // it crashed meanwhile; its restart will stop it again
        stop(node);
        log?.(`operator: replica ${node.id}'s data dir moved aside; restart with --rejoin`);
        wipe(node);
        node.pendingLoss = undefined;
        stats.rejoinsStarted++;
        boot(node, 'rejoin');
      });
    }
    // Recovered once it votes again, and holds no record failing its checksum.
    if ((core.mode === 'voter' || core.mode === 'learner') && node.corrupt.size === 0) {
      node.recovering = false;
      node.pendingLoss = undefined;
    }
    if (node.startKind === 'rejoin' && !node.rejoinCounted && core.mode === 'voter') {
      node.rejoinCounted = true;
      node.lostSinceRejoin = false;
      stats.rejoinsCompleted++;
      log?.(`replica ${node.id} rejoined: votes again`);
    }
    scheduleTick(node);
  }

  function flush(node: SimNode, epoch: number): void {
    if (node.epoch !== epoch) return;
    node.flushScheduled = false;
    if (rand() < options.fsyncCrashRate) {
      stats.fsyncCrashes++;
      crash(node, `at the fsync of ${node.pending.length} batches`);
      return;
    }
    const batch = node.pending;
    node.pending = [];
    const dir = node.dir!;
    for (const out of batch) {
      for (const [k, r] of out.persist) {
        dir.records.set(k, r);
        if (node.corrupt.delete(k)) {
          stats.corruptionsRepaired++;
          log?.(`replica ${node.id} key ${k}: the record that failed its checksum is written again`);
        }
        checkDurable(node, k, r);
      }
      if (out.meta !== undefined) applyMeta(dir.meta, out.meta);
    }
    node.overlay.clear();
    for (const out of batch) release(node, out);
  }

  function release(node: SimNode, out: Output): void {
    for (const s of out.send) send(node.id, s.to, s.message);
    for (const r of out.replies) deliverReply(r.requestRef, r.result);
  }

  function scheduleTick(node: SimNode): void {
    const wake = node.core?.nextWake();
    if (wake === undefined) return;
    const at = Math.max(now, wake - CLOCK_BASE - node.clockOffset + TICK_SLACK_MS);
    if (at >= node.tickAt) return;
    node.tickAt = at;
    const gen = ++node.tickGen;
    q.push(at, () => {
      if (node.tickGen !== gen || node.core === undefined) return;
      node.tickAt = Infinity;
      handle(node, node.core.tick(replicaNow(node)));
    });
  }

  /** The process ends: everything not yet durable is lost. */
  function stop(node: SimNode): void {
    // Its answers to the operator are lost with it.
    for (const [ref, step] of operatorRefs) if (step.at === node.id) operatorRefs.delete(ref);
    node.core = undefined;
    node.epoch++;
    node.tickGen++;
    node.tickAt = Infinity;
    node.overlay = new Map();
    node.pending = [];
    node.flushScheduled = false;
  }

  /** The data dir is gone (a disk loss, or the operator moved it aside). */
  function wipe(node: SimNode): void {
    node.dir = undefined;
    node.corrupt = new Set();
    node.life = new Map();
    node.recovering = true;
    node.lostSinceRejoin = true;
  }

  /**
   * Whether a restart of `node` may find its data dir lost: only when no other voter is still
   * recovering from a loss (one data loss at a time is what a majority can survive; a replica has
   * recovered once it votes again). Learners hold no votes: their data may always be lost.
   */
  function mayLoseData(node: SimNode): boolean {
    if (node.joined) return false;
    if (node.learner) return true;
    for (const other of nodes.values()) if (other !== node && !other.learner && other.recovering) return false;
    return true;
  }

  function crash(node: SimNode, why: string): void {
    stats.crashes++;
    log?.(`crash replica ${node.id} ${why}`);
    stop(node);
    const epoch = node.epoch;
    q.push(now + between(50, 600), () => {
      if (node.epoch !== epoch) return;
      const roll = rand();
      const mayLose = mayLoseData(node);
      if (roll < options.wipeRate && mayLose) {
        stats.wipes++;
        log?.(`replica ${node.id}'s data dir is gone`);
        wipe(node);
        node.pendingLoss = 'wipe';
        boot(node, 'wipe');
      } else if (roll >= options.wipeRate && roll < options.wipeRate + options.rollbackRate && mayLose && node.bootSnapshot !== undefined) {
        stats.rollbacks++;
        const snap = node.bootSnapshot;
        log?.(`replica ${node.id}'s data dir is rolled back to incarnation ${snap.meta.incarnation} (${snap.records.size} records)`);
        node.dir = { records: new Map(snap.records), meta: cloneMeta(snap.meta) };
        node.corrupt = new Set();
        node.life = new Map();
        node.recovering = true;
        node.lostSinceRejoin = true;
        node.pendingLoss = 'rollback';
        boot(node, 'rollback');
      } else if (
        roll >= options.wipeRate + options.rollbackRate &&
        roll < options.wipeRate + options.rollbackRate + options.corruptRate &&
        mayLose &&
        node.dir !== undefined &&
        node.dir.records.size > 0
      ) {
        // One record fails its checksum: that key's promises and accepts are lost to this replica
        // (a data loss of one key; one loss at a time).
        const keys = [...node.dir.records.keys()].sort();
        const key = keys[Math.floor(rand() * keys.length)]!;
        stats.corruptions++;
        log?.(`replica ${node.id}'s record of key ${key} fails its checksum`);
        node.corrupt.add(key);
        node.life.delete(key);
        if (!node.learner) node.recovering = true;
        boot(node, 'restart');
      } else boot(node, 'restart');
    });
  }

  // --- network ------------------------------------------------------------------------------
  function cut(a: MemberId, b: MemberId): boolean {
    return partition !== undefined && partition.has(a) !== partition.has(b);
  }

  function send(from: MemberId, to: MemberId, sent: PeerMessage): void {
    stats.messages++;
    // Through the wire codec, as between real replicas: a message the codec cannot carry is lost
    // there too (and a batch with it), so the run must see it.
    let msg: PeerMessage;
    try {
      msg = messageFromPb(messageToPb(sent));
    } catch (err) {
      violation(`replica ${from} sent a message the wire codec cannot carry (${describeMessage(sent)}): ${(err as Error).message}`);
      return;
    }
    const copies = rand() < options.duplicateRate ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      if (rand() < options.dropRate) {
        stats.dropped++;
        continue;
      }
      const held = options.longDelayRate > 0 && rand() < options.longDelayRate;
      q.push(now + (held ? between(500, 3000) : between(options.minDelayMs, options.maxDelayMs)), () => {
        if (cut(from, to)) {
          stats.dropped++;
          return;
        }
        const node = nodes.get(to)!;
        if (node.core === undefined) return;
        log?.(`${from} -> ${to} ${describeMessage(msg)}`);
        handle(node, node.core.receive(from, msg, replicaNow(node)));
      });
    }
  }

  // --- faults -------------------------------------------------------------------------------
  function scheduleCrash(): void {
    if (options.crashEveryMs <= 0) return;
    q.push(now + between(0.5, 1.5) * options.crashEveryMs, () => {
      if (opsLeft <= 0) return;
      const node = nodes.get(pick(members))!;
      if (node.core !== undefined && !node.failed && !node.retired) crash(node, `(${node.pending.length} batches not yet durable)`);
      scheduleCrash();
    });
  }

  function scheduleCorruption(): void {
    if (options.corruptEveryMs <= 0) return;
    q.push(now + between(0.5, 1.5) * options.corruptEveryMs, () => {
      if (opsLeft <= 0) return;
      const node = nodes.get(pick(members))!;
      if (node.core !== undefined && !node.failed && !node.retired && node.dir !== undefined && node.dir.records.size > 0 && mayLoseData(node)) {
        const keys = [...node.dir.records.keys()].filter((k) => !node.corrupt.has(k)).sort();
        if (keys.length > 0) {
          const key = keys[Math.floor(rand() * keys.length)]!;
          stats.corruptions++;
          log?.(`replica ${node.id}'s record of key ${key} fails its checksum while it runs`);
          node.corrupt.add(key);
          node.life.delete(key);
          if (!node.learner) node.recovering = true;
        }
      }
      scheduleCorruption();
    });
  }

  function schedulePartition(): void {
    if (options.partitionEveryMs <= 0) return;
    q.push(now + between(0.5, 1.5) * options.partitionEveryMs, () => {
      if (opsLeft <= 0) return;
      const side = new Set(members.filter(() => rand() < 0.5));
      partition = side;
      stats.partitions++;
      log?.(`partition {${[...side].join(',')}} | rest`);
      q.push(now + between(100, 800), () => {
        partition = undefined;
        log?.('partition healed');
      });
      schedulePartition();
    });
  }

  /** A voter writes the next epoch's configuration, with the same members (the epoch fence at work). */
  function scheduleEpochStep(): void {
    if (options.epochStepEveryMs <= 0) return;
    q.push(now + between(0.5, 1.5) * options.epochStepEveryMs, () => {
      if (opsLeft <= 0) return;
      const node = nodes.get(pick(members))!;
      if (node.core !== undefined && node.core.mode === 'voter') {
        const current = node.core.membership;
        const next = encodeConfiguration({ ...current, epoch: current.epoch + 1 });
        stats.epochSteps++;
        log?.(`replica ${node.id} writes epoch ${current.epoch + 1}`);
        const t = replicaNow(node);
        // Ref 0 is no client's: the outcome only shows in the configurations adopted.
        handle(node, node.core.request(0, CONFIG_KEY, { kind: 'put', value: next, id: null }, t, t + options.attemptTimeoutMs));
      }
      scheduleEpochStep();
    });
  }

  /** Operator writes of the configuration key, by reference (their replies only show in the trace). */
  const operatorRefs = new Map<number, { what: string; at: MemberId }>();
  /** Most replicas a run starts (membership changes add new ones). */
  const MAX_NODES = 12;

  /** A replica started with --join that no configuration names yet (reused), or a new one. */
  function joiner(other?: SimNode): SimNode | undefined {
    for (const node of nodes.values()) if (node !== other && node.core?.mode === 'joining' && roleOf(lastConfiguration, node.id) === 'removed') return node;
    if (nodes.size >= MAX_NODES) return undefined;
    const id = Math.max(...members) + 1;
    members.push(id);
    const node = newNode(id, true);
    stats.membersAdded++;
    log?.(`operator: replica ${id} starts with --join`);
    boot(node, 'first');
    return node;
  }

  /** The change an operator begins from the stable configuration `c` (3 to 5 voters), or none. */
  function pickChange(c: Configuration): MembershipChange | undefined {
    if (rand() < options.twoMemberChangeRate) {
      // Two members at once (joint consensus's reach: old and new majorities may be disjoint).
      const roll = rand();
      if (roll < 0.4 && c.voters.length <= 3) {
        const a = joiner();
        const b = joiner(a);
        return a === undefined || b === undefined ? undefined : { kind: 'set', voters: [...c.voters, a.id, b.id], learners: c.learners };
      }
      if (roll < 0.7 && c.voters.length >= 5) {
        const gone = new Set([pick(c.voters)]);
        gone.add(pick(c.voters.filter((v) => !gone.has(v))));
        return { kind: 'set', voters: c.voters.filter((v) => !gone.has(v)), learners: c.learners };
      }
      const a = joiner();
      const b = joiner(a);
      if (a === undefined || b === undefined) return undefined;
      const gone = new Set([pick(c.voters)]);
      gone.add(pick(c.voters.filter((v) => !gone.has(v))));
      return { kind: 'set', voters: [...c.voters.filter((v) => !gone.has(v)), a.id, b.id], learners: c.learners };
    }
    const roll = rand();
    if (c.learners.length > 0 && roll < 0.15) return c.voters.length < 5 ? { kind: 'add', member: pick(c.learners) } : undefined;
    if (c.learners.length > 0 && roll < 0.25) return { kind: 'remove', member: pick(c.learners) };
    if (roll < 0.5 && c.voters.length < 5) {
      const j = joiner();
      return j === undefined ? undefined : { kind: 'add', member: j.id, learner: rand() < 0.25 };
    }
    if (roll < 0.75 && c.voters.length > 3) return { kind: 'remove', member: pick(c.voters) };
    const j = joiner();
    return j === undefined ? undefined : { kind: 'replace', remove: pick(c.voters), add: j.id };
  }

  /** One operator step: begin a change, or finish or go back from a joint configuration; a third race a crash. */
  function memberStep(): void {
    const c = lastConfiguration;
    let next: Configuration;
    let what: string;
    if (c.next !== undefined) {
      const roll = rand();
      if (roll < 0.5) return; // the replicas finish it themselves
      next = roll < 0.85 ? finishChange(c) : abortChange(c);
      what = roll < 0.85 ? 'finish' : 'back to the first half';
    } else {
      const change = pickChange(c);
      if (change === undefined) return;
      next = beginChange(c, change);
      what =
        change.kind === 'replace'
          ? `replace ${change.remove} by ${change.add}`
          : change.kind === 'set'
            ? `set voters [${change.voters.join(',')}]`
            : change.kind === 'abort'
              ? 'abort'
              : `${change.kind} ${change.member}${change.kind === 'add' && change.learner === true ? ' (learner)' : ''}`;
    }
    const writers = [...nodes.values()].filter((n) => n.core?.mode === 'voter');
    if (writers.length === 0) return;
    const node = pick(writers);
    stats.memberSteps++;
    log?.(`operator: ${what} at replica ${node.id}: ${describeConfiguration(next)}`);
    const ref = nextRef++;
    operatorRefs.set(ref, { what, at: node.id });
    const t = replicaNow(node);
    handle(node, node.core!.request(ref, CONFIG_KEY, { kind: 'put', value: encodeConfiguration(next), id: null }, t, t + options.attemptTimeoutMs));
    if (rand() < 1 / 3) {
      const victim = pick([...nodes.values()].filter((n) => n.core !== undefined && !n.failed && !n.retired));
      q.push(now + between(0, 30), () => {
        if (victim.core !== undefined && !victim.failed && !victim.retired) crash(victim, 'racing a membership change');
      });
    }
  }

  function scheduleMemberChange(): void {
    if (options.memberChangeEveryMs <= 0) return;
    q.push(now + between(0.5, 1.5) * options.memberChangeEveryMs, () => {
      if (opsLeft <= 0) return;
      memberStep();
      scheduleMemberChange();
    });
  }

  function scheduleClockStep(): void {
    if (options.clockStepEveryMs <= 0 || options.maxClockStepMs <= 0) return;
    q.push(now + between(0.5, 1.5) * options.clockStepEveryMs, () => {
      if (opsLeft <= 0) return;
      const node = nodes.get(pick(members))!;
      const step = Math.round((rand() < 0.5 ? -1 : 1) * between(1, options.maxClockStepMs));
      node.clockOffset += step;
      stats.clockSteps++;
      log?.(`replica ${node.id}'s clock steps ${step > 0 ? '+' : ''}${step} ms`);
      // Its timers now fall due at other simulation times.
      node.tickGen++;
      node.tickAt = Infinity;
      scheduleTick(node);
      scheduleClockStep();
    });
  }

  // --- clients ------------------------------------------------------------------------------
  const clients: SimClient[] = Array.from({ length: options.clients }, (_, index) => ({
    index,
    session: `s${index}-${options.seed}`,
    clockOffset: Math.round(between(-options.clientClockOffsetMs, options.clientClockOffsetMs)),
    nextSeq: 1,
    lastReplica: undefined,
  }));
  const clientNow = (c: SimClient) => CLOCK_BASE + now + c.clockOffset;

  let opId = 0;
  function startOp(client: SimClient, remaining: number): void {
    if (remaining === 0) return;
    const after = () => {
      opsLeft--;
      startOp(client, remaining - 1);
    };
    if (options.workload !== undefined) return startPlan(client, options.workload, after);
    const key = `key${Math.floor(rand() * options.keys)}`;
    const value = new TextEncoder().encode(`c${client.index}-o${remaining}-s${options.seed}`);
    const roll = rand();
    let input: KvInput;
    if (roll < 0.35) input = { kind: 'get' };
    else if (roll < 0.65) input = { kind: 'put', value };
    else if (roll < 0.75) input = { kind: 'delete' };
    else input = { kind: 'cas', expectedVersion: BigInt(Math.floor(rand() * 4)), value };
    kvOp(client, key, input, after);
  }

  /** Runs one plan of `workload` for `client`, each step a key-value operation; then `after`. */
  function startPlan(client: SimClient, workload: SimWorkload, after: () => void): void {
    const { plan, end } = workload.next(client.index, rand, now);
    const step = (reply: KvStepReply | undefined): void => {
      let it: IteratorResult<KvStep, unknown>;
      try {
        it = reply === undefined ? plan.next() : plan.next(reply);
      } catch (error) {
        end({ kind: 'threw', error }, now);
        return after();
      }
      if (it.done === true) {
        end({ kind: 'returned', value: it.value }, now);
        return after();
      }
      const s = it.value;
      const input: KvInput = s.kind === 'get' ? { kind: 'get' } : { kind: 'cas', expectedVersion: s.expectedVersion, value: s.value };
      kvOp(client, s.key, input, (o) => {
        if (o.kind !== 'unknown') return step(o);
        // As runPlan: a step that failed outright ends the plan, its outcome unknown.
        plan.return(undefined);
        end({ kind: 'unknown' }, now);
        after();
      });
    };
    step(undefined);
  }

  /** Starts one key-value operation of `client`, with retries on other replicas; `finish` gets its outcome. */
  function kvOp(client: SimClient, key: string, input: KvInput, finish: (outcome: StepOutcome) => void): void {
    const op: KvOperation = { id: opId++, client: client.index, key, input, output: { unknown: true }, call: now, return: Infinity };
    const state: ClientOpState = {
      op,
      client,
      seq: input.kind === 'get' ? undefined : client.nextSeq++,
      expiresAt: Math.floor(clientNow(client)) + options.operationDeadlineMs,
      attempt: 0,
      refusedInRow: 0,
      ambiguous: false,
      done: false,
      finish,
    };
    history.push(op);
    log?.(`client ${client.index} op ${op.id} ${describeInput(input)} on ${key}${state.seq === undefined ? '' : ` (write ${client.session}#${state.seq})`}`);
    attempt(state);
  }

  /** The core operation of one attempt: writes carry the session's write id, stamped now. */
  function coreOp(state: ClientOpState): ClientOp {
    const input = state.op.input;
    if (input.kind === 'get') return { kind: 'get' };
    const c = state.client;
    // One operation at a time per client: every earlier write is finished.
    const id = { client: c.session, seq: state.seq!, ackedBelow: state.seq!, sentAt: Math.min(Math.floor(clientNow(c)), state.expiresAt), expiresAt: state.expiresAt };
    if (input.kind === 'put') return { kind: 'put', value: input.value, id };
    if (input.kind === 'delete') return { kind: 'delete', id };
    return { kind: 'cas', expectedVersion: Number(input.expectedVersion), value: input.value, id };
  }

  function attempt(state: ClientOpState): void {
    if (state.done) return;
    if (clientNow(state.client) >= state.expiresAt) return giveUp(state);
    state.attempt++;
    const a = state.attempt;
    const live = members.filter((m) => !nodes.get(m)!.retired);
    const others = live.length > 1 ? live.filter((m) => m !== state.client.lastReplica) : live;
    const node = nodes.get(pick(others))!;
    state.client.lastReplica = node.id;
    const ref = nextRef++;
    refs.set(ref, { state, attempt: a });
    const op = coreOp(state);
    q.push(now + between(options.minDelayMs, options.maxDelayMs), () => {
      if (node.core === undefined || state.done) return;
      // The deadline travels as time remaining, as on the wire: it ends later than the client's
      // own timer by the network delay.
      const t = replicaNow(node);
      handle(node, node.core.request(ref, state.op.key, op, t, t + options.attemptTimeoutMs));
    });
    q.push(now + options.attemptTimeoutMs, () => {
      if (state.done || state.attempt !== a) return;
      state.ambiguous = true;
      attempt(state);
    });
  }

  function giveUp(state: ClientOpState): void {
    state.done = true;
    stats.unknown++;
    log?.(`client ${state.client.index} op ${state.op.id}: gave up, outcome unknown`);
    if (state.op.input.kind === 'get') history.splice(history.indexOf(state.op), 1); // a read that never answered changed nothing
    state.finish({ kind: 'unknown' });
  }

  function deliverReply(ref: number, result: ClientResult): void {
    const step = operatorRefs.get(ref);
    if (step !== undefined) {
      operatorRefs.delete(ref);
      log?.(`operator: ${step.what}: ${describeResult(result)}`);
      return;
    }
    const r = refs.get(ref);
    if (r === undefined) return;
    refs.delete(ref);
    if (rand() < options.replyDropRate) {
      stats.droppedReplies++;
      return;
    }
    q.push(now + between(options.minDelayMs, options.maxDelayMs), () => {
      const state = r.state;
      if (state.done) return;
      if (!result.ok && (result.status === 'ABORTED' || result.status === 'DEADLINE_EXCEEDED')) stats.notApplied++;
      if (!result.ok && result.status !== 'FAILED_PRECONDITION') {
        log?.(`client ${state.client.index} op ${state.op.id} attempt ${r.attempt}: ${describeResult(result)}`);
        // This attempt failed; an earlier one may still apply. Retry while the operation may: at
        // once on another replica, but, as PaxosKVClient, after a short pause once every replica refused.
        if (result.notApplied !== true) state.ambiguous = true;
        if (state.attempt !== r.attempt) return;
        state.refusedInRow++;
        if (state.refusedInRow % members.length !== 0) attempt(state);
        else {
          const a = state.attempt;
          q.push(now + CLIENT_PAUSE_MS, () => {
            if (!state.done && state.attempt === a) attempt(state);
          });
        }
        return;
      }
      state.done = true;
      if (!result.ok && state.ambiguous) {
        // As PaxosKVClient: after an attempt whose outcome is unknown (it timed out, or failed
        // without `notApplied`), a later FAILED_PRECONDITION does not prove the operation did not
        // happen (the earlier attempt may still apply), so the outcome is reported unknown.
        stats.unknown++;
        log?.(`client ${state.client.index} op ${state.op.id}: failed precondition after a retry, outcome unknown`);
        state.finish({ kind: 'conflict', unknown: true });
        return;
      }
      stats.completed++;
      state.op.return = now;
      state.op.output = toOutput(result);
      if (!result.ok) stats.failedPreconditions++;
      if (result.ok && result.kind === 'write') stats.writes++;
      const input = state.op.input;
      if (result.ok && result.kind === 'write' && (input.kind === 'put' || input.kind === 'cas')) observeValue(state.op.key, input.value, result.version, `op ${state.op.id} wrote it`);
      if (result.ok && result.kind === 'get' && result.value !== null) observeValue(state.op.key, result.value, result.version, `op ${state.op.id} read it`);
      log?.(`client ${state.client.index} op ${state.op.id}: ${describeResult(result)}`);
      state.finish(
        !result.ok
          ? { kind: 'conflict', unknown: false }
          : result.kind === 'get'
            ? { kind: 'value', value: result.value, version: BigInt(result.version) }
            : { kind: 'written', version: BigInt(result.version) },
      );
    });
  }

  for (const c of clients) q.push(between(0, 10), () => startOp(c, options.opsPerClient));
  scheduleCrash();
  schedulePartition();
  scheduleClockStep();
  scheduleEpochStep();
  scheduleCorruption();
  scheduleMemberChange();

  let drained = false;
  for (;;) {
    const e = q.pop();
    drained = e === undefined;
    if (e === undefined || e.at > options.maxTimeMs) break;
    now = e.at;
    e.run();
    if (violations.length > 0) break;
  }
  stats.timeMs = now;
  if (!drained) {
    const state = [...nodes.values()].map((n) => `${n.id} ${n.retired ? 'retired' : (n.core?.mode ?? 'down')}${n.core?.syncProgress === undefined ? '' : ` (sync ${JSON.stringify(n.core.syncProgress)})`}`);
    log?.(`end of run, not settled: ${opsLeft} operations left; ${describeConfiguration(lastConfiguration)}; replicas: ${state.join(', ')}`);
  }
  // Once nothing is left to happen (every fault stopped with the clients' operations, every timer
  // ran out), every replica must be back: voting (or learning), repairing nothing. A replica stuck
  // short of that is a liveness bug (the kind a review found in the first epoch-fence code: a
  // replica repairing the configuration key never caught up). A replica a step behind the last
  // epoch is not stuck: nothing told it yet, and the next message of that epoch will (counted).
  if (violations.length === 0 && drained) {
    stats.settledRuns++;
    const last = Math.max(1, ...[...configurations.keys()]);
    for (const node of nodes.values()) {
      const core = node.core;
      // Removed and stopped; or started to join and never added (the change that would have failed).
      if (node.retired || (core?.mode === 'joining' && roleOf(lastConfiguration, node.id) === 'removed')) continue;
      const role = core === undefined ? undefined : roleOf(core.membership, node.id);
      const why =
        core === undefined
          ? 'is down'
          : core.mode !== 'voter' && core.mode !== 'learner'
            ? `is ${core.mode}${core.failure === undefined ? '' : ` (${core.failure})`}`
            : core.mode !== role
              ? `is a ${core.mode} but its configuration (${describeConfiguration(core.membership)}) makes it a ${role ?? ''}`
              : core.lostKeyCounts.repairing > 0
                ? `still repairs ${core.lostKeyCounts.repairing} key(s)`
                : undefined;
      if (why !== undefined) violation(`replica ${node.id} ${why} once nothing was left to happen (at ${now.toFixed(0)} ms)`);
      else if (core!.membership.epoch !== last) stats.epochBehindAtEnd++;
    }
  }
  return { history, violations, spuriousStops, chosen: chosenAt, stats };
}

/** A run judged: see {@link runAndCheck}. */
export interface CheckedRun {
  /** What broke, when something did: an invariant, or the history's linearizability. */
  problem?: { kind: 'invariant' | 'history'; text: string };
  /** Replicas that stopped on intact data (see {@link SimResult.spuriousStops}). */
  spuriousStops: string[];
  stats: SimStats;
}

/**
 * Runs one simulation and checks its client history for linearizability (when no invariant broke).
 * @param options - what to run.
 * @param trace - as for {@link simulate}.
 */
export function runAndCheck(options: SimOptions, trace?: (line: string) => void): CheckedRun {
  const result = simulate(options, trace);
  const base = { spuriousStops: result.spuriousStops, stats: result.stats };
  if (result.violations.length > 0) return { ...base, problem: { kind: 'invariant', text: result.violations.join('; ') } };
  const check = checkKvHistory(result.history);
  if (check.verdict !== 'linearizable') {
    return { ...base, problem: { kind: 'history', text: `history ${check.verdict} on key ${check.key}: ${check.explanation ?? ''}` } };
  }
  return base;
}

/** Applies a step's meta patch to a data dir's meta as the real store does (peer incarnations merged by max). */
function applyMeta(meta: DurableMeta, patch: MetaPatch): void {
  if (patch.incarnation !== undefined) meta.incarnation = patch.incarnation;
  if (patch.announced !== undefined) meta.announced = [...patch.announced];
  if (patch.rejoining !== undefined) meta.rejoining = patch.rejoining;
  if (patch.configuration !== undefined && patch.configuration.epoch > (meta.configuration?.epoch ?? 1)) meta.configuration = patch.configuration;
  for (const [member, incarnation] of patch.peerIncarnations ?? []) {
    if (incarnation > (meta.peerIncarnations.get(member) ?? -1)) meta.peerIncarnations.set(member, incarnation);
  }
}

function toOutput(result: ClientResult): KvOutput {
  if (!result.ok) return { failed: 'FAILED_PRECONDITION' };
  if (result.kind === 'get') return result.value === null ? null : { value: result.value, version: BigInt(result.version) };
  return { version: BigInt(result.version) };
}

function describe(e: Entry): string {
  const writer = e.writer === null ? 'no writer' : `write ${e.writer.client}#${e.writer.seq}`;
  return `{index ${e.index}, ${writer}, proposer ${e.proposer}, time ${e.time - CLOCK_BASE}, value ${e.value === null ? 'null' : new TextDecoder().decode(e.value)}}`;
}

function describeInput(input: KvInput): string {
  switch (input.kind) {
    case 'get':
      return 'get';
    case 'delete':
      return 'delete';
    case 'put':
      return `put ${new TextDecoder().decode(input.value)}`;
    case 'cas':
      return `cas@${input.expectedVersion} ${new TextDecoder().decode(input.value)}`;
  }
}

function describeResult(result: ClientResult): string {
  if (!result.ok) return `${result.status}: ${result.message}`;
  if (result.kind === 'write') return `ok, version ${result.version}`;
  return `got ${result.value === null ? 'null' : new TextDecoder().decode(result.value)} at version ${result.version}`;
}

function describeMessage(m: PeerMessage): string {
  switch (m.type) {
    case 'prepare':
      return `prepare ${m.key}#${m.index} ballot ${m.ballot} epoch ${m.epoch}`;
    case 'accepted':
      return `${m.type} ${m.key}#${m.index} ballot ${m.ballot}`;
    case 'accept':
      return `accept ${m.key}#${m.index} ballot ${m.ballot} epoch ${m.epoch} ${describe(m.entry)}`;
    case 'promise':
      return `promise ${m.key}#${m.index} ballot ${m.ballot}, accepted ${m.accepted}${m.acceptedEntry === null ? '' : ` ${describe(m.acceptedEntry)}`}`;
    case 'reject':
      return `reject ${m.key}#${m.index} ballot ${m.ballot}, promised ${m.promised}`;
    case 'chosen':
    case 'learn':
      return `${m.type} ${m.key} ${describe(m.entry)}`;
    case 'behind':
      return `behind ${m.key}#${m.index}, chosen ${m.chosenIndex}`;
    case 'read':
      return `read ${m.key} #${m.readId} of life ${m.readerIncarnation}, known ${m.knownIndex}`;
    case 'readState':
      return `readState ${m.key} #${m.readId} of life ${m.readerIncarnation}, chosen ${m.chosenIndex}, pending ${m.pendingAccepted}`;
    case 'catchUp':
      return `catchUp ${m.key}, known ${m.knownIndex}`;
    case 'hello':
      return `hello, incarnation ${m.incarnation}`;
    case 'helloAck':
      return `helloAck, incarnation ${m.incarnation}, recorded ${m.recorded}${m.ok ? '' : ' (not known to its data dir)'}`;
    case 'listKeys':
      return `listKeys #${m.listId} after '${m.after}'`;
    case 'keyList':
      return `keyList #${m.listId}: ${m.keys.map((k) => `${k.key}@${k.chosenIndex}${k.pending ? '+' : ''}`).join(' ')}${m.done ? ' (done)' : ''}`;
    case 'finish':
      return `finish ${m.key}`;
    case 'finished':
      return `finished ${m.key}, chosen ${m.chosenIndex}`;
    case 'staleEpoch':
      return `staleEpoch ${m.key}: epoch ${m.epoch}`;
    case 'synced':
      return `synced, epoch ${m.epoch}`;
  }
}
