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
 */
import { learn, onAccept, onPrepare, readState, sameEntry } from './acceptor.js';
import {
  ballotOf,
  chosenIndex,
  EMPTY_RECORD,
  emptyOutput,
  nextEntry,
  roundOf,
  versionOfRequest,
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
}

/** Replica settings. Times are in ms of the `now` the driver passes. */
export interface ReplicaConfig {
  /** This replica's member id. */
  id: MemberId;
  /** Every member of the cluster, this one included (odd count: 3, 5, ...). */
  members: readonly MemberId[];
  /** Learn chosen entries only: no votes, no client requests. */
  learnerOnly?: boolean;
  /** How long a phase waits for a majority before it retries (ms). Default 200. */
  phaseTimeoutMs?: number;
  /** Phases tried per operation before it fails with UNAVAILABLE. Default 10. */
  maxAttempts?: number;
  /** Base of the randomized backoff after a lost round (ms). Default 10. */
  backoffMs?: number;
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
  promises: Map<MemberId, { accepted: Ballot; acceptedEntry: Entry | null }>;
  accepts: Set<MemberId>;
  /** Members that refused the current phase's ballot. */
  rejects: Set<MemberId>;
}

/** One replica's core; see the module comment. */
export class Replica {
  private readonly majority: number;
  private readonly peers: readonly MemberId[];
  private readonly phaseTimeoutMs: number;
  private readonly maxAttempts: number;
  private readonly backoffMs: number;
  /** The running task of each key, and the queue behind it. */
  private readonly tasks = new Map<string, Task>();
  private readonly queues = new Map<string, Array<{ ref: number; op: ClientOp; deadline: number }>>();
  /** Keys this replica knows it is missing entries of: key -> the index it has seen exist. */
  private readonly laggingKeys = new Map<string, number>();
  private nextReadId = 1;
  private out: Output = emptyOutput();

  /**
   * @param config - membership and timing.
   * @param store - where records are read.
   * @param random - uniform [0, 1) source for backoff (seeded in simulations).
   * @throws Error when the configuration is inconsistent (id not a member, even or empty membership).
   */
  constructor(
    private readonly config: ReplicaConfig,
    private readonly store: RecordSource,
    private readonly random: () => number,
  ) {
    const members = config.members;
    if (!members.includes(config.id)) throw new Error(`member ${config.id} is not in the membership [${members.join(', ')}]`);
    if (members.length % 2 === 0) throw new Error(`membership must have an odd number of members, got ${members.length}`);
    if (new Set(members).size !== members.length) throw new Error(`duplicate member ids in [${members.join(', ')}]`);
    this.majority = Math.floor(members.length / 2) + 1;
    this.peers = members.filter((m) => m !== config.id);
    this.phaseTimeoutMs = config.phaseTimeoutMs ?? 200;
    this.maxAttempts = config.maxAttempts ?? 10;
    this.backoffMs = config.backoffMs ?? 10;
  }

  /** This replica's member id. */
  get id(): MemberId {
    return this.config.id;
  }

  /** Keys this replica knows it lags on (catch-up requested, not yet learned). */
  get laggingCount(): number {
    return this.laggingKeys.size;
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
    return min;
  }

  /**
   * A client operation on `key`. The reply comes in this or a later Output, tagged with `ref`.
   * @param ref - the driver's handle for the reply.
   * @param deadline - the caller's deadline (epoch ms, Infinity for none): past it, the operation
   *   starts no new decision (it ends with DEADLINE_EXCEEDED), so a client's abandoned attempt does
   *   not linger and apply after the client was told otherwise by another replica.
   */
  request(ref: number, key: string, op: ClientOp, now: number, deadline = Infinity): Output {
    if (this.config.learnerOnly) {
      this.reply(ref, { ok: false, status: 'UNAVAILABLE', message: `replica ${this.config.id} is learner-only; ask another replica` });
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
    switch (msg.type) {
      case 'prepare':
      case 'accept':
        this.onAcceptorMessage(from, msg);
        break;
      case 'learn':
        this.learnEntry(msg.key, msg.entry, now);
        break;
      case 'catchUp': {
        const rec = this.record(msg.key);
        if (chosenIndex(rec) > msg.knownIndex) this.send(from, { type: 'learn', key: msg.key, entry: rec.chosen! });
        break;
      }
      case 'read':
        if (!this.config.learnerOnly) this.send(from, readState(this.record(msg.key), msg));
        break;
      case 'chosen':
        this.learnEntry(msg.key, msg.entry, now);
        break;
      case 'behind':
      case 'promise':
      case 'accepted':
      case 'reject':
      case 'readState':
        this.onProposerReply(from, msg, now);
        break;
    }
    return this.flush();
  }

  /** Advances timers: retries phases whose time ran out, ends backoffs. */
  tick(now: number): Output {
    for (const task of [...this.tasks.values()]) {
      if (task.wakeAt > now || this.tasks.get(task.key) !== task) continue;
      if (task.phase === 'backoff') this.plan(task, now);
      else this.retry(task, now, 'no majority answered in time');
    }
    return this.flush();
  }

  // ---------------------------------------------------------------------------------------------
  // Acceptor side

  private onAcceptorMessage(from: MemberId, msg: Extract<PeerMessage, { type: 'prepare' | 'accept' }>): void {
    const rec = this.record(msg.key);
    if (this.config.learnerOnly) {
      if (msg.index > chosenIndex(rec) + 1) this.catchUpFrom(from, msg.key, msg.index - 1);
      return;
    }
    const step = msg.type === 'prepare' ? onPrepare(rec, msg) : onAccept(rec, msg);
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

  private learnEntry(key: string, entry: Entry, now: number): void {
    const next = learn(this.record(key), entry);
    if (next !== undefined) this.persist(key, next);
    const wanted = this.laggingKeys.get(key);
    if (wanted !== undefined && chosenIndex(this.record(key)) >= wanted) this.laggingKeys.delete(key);
    const task = this.tasks.get(key);
    if (task !== undefined && next !== undefined) this.onNewerChosen(task, now);
  }

  // ---------------------------------------------------------------------------------------------
  // Coordinator side: one task per key at a time

  private startTask(ref: number, key: string, op: ClientOp, now: number, deadline: number): void {
    const task: Task = {
      ref, key, op, deadline, phase: 'read', attempts: 0, wakeAt: now, confirmed: false, maxRound: 0,
      readId: 0, readReplies: new Map(), index: 0, ballot: 0, entry: null, own: null, promises: new Map(), accepts: new Set(),
      rejects: new Set(),
    };
    this.tasks.set(key, task);
    this.plan(task, now);
  }

  /** Decides the task's next step from the local record. */
  private plan(task: Task, now: number): void {
    if (now >= task.deadline) {
      this.finish(task, { ok: false, status: 'DEADLINE_EXCEEDED', message: `replica ${this.config.id}: the caller's deadline passed` }, now);
      return;
    }
    const rec = this.record(task.key);
    const latest = rec.chosen;
    const op = task.op;
    if (op.kind === 'get') {
      if (!task.confirmed) return this.startRead(task, now);
      return this.finish(task, { ok: true, kind: 'get', value: latest?.value ?? null, version: chosenIndex(rec) }, now);
    }
    const done = versionOfRequest(latest, op.requestId);
    if (done !== undefined) return this.finish(task, { ok: true, kind: 'write', version: done }, now);
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
    this.propose(task, nextEntry(latest, value, op.requestId, this.config.id, now), now);
  }

  private startRead(task: Task, now: number): void {
    if (!this.countAttempt(task, now)) return;
    task.phase = 'read';
    task.readId = this.nextReadId++;
    task.readReplies = new Map();
    task.wakeAt = now + this.phaseTimeoutMs;
    const rec = this.record(task.key);
    task.readReplies.set(this.config.id, { chosenIndex: chosenIndex(rec), pendingAccepted: rec.accepted });
    for (const p of this.peers) this.send(p, { type: 'read', key: task.key, readId: task.readId, knownIndex: chosenIndex(rec) });
    this.checkRead(task, now);
  }

  private checkRead(task: Task, now: number): void {
    if (task.readReplies.size < this.majority) return;
    const rec = this.record(task.key);
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
    task.index = chosenIndex(rec) + 1;
    task.own = entry;
    task.entry = null;
    task.promises = new Map();
    task.accepts = new Set();
    task.rejects = new Set();
    task.wakeAt = now + this.phaseTimeoutMs;
    const fast = entry !== null && rec.chosen !== null && rec.chosen.proposer === this.config.id && rec.promised === 0 && rec.accepted === 0;
    if (fast) {
      task.ballot = ballotOf(0, this.config.id);
      this.startAccept(task, entry);
      return;
    }
    task.phase = 'prepare';
    task.ballot = ballotOf(Math.max(roundOf(rec.promised), task.maxRound) + 1, this.config.id);
    const local = onPrepare(rec, { key: task.key, index: task.index, ballot: task.ballot });
    if (local.record !== undefined) this.persist(task.key, local.record);
    if (local.reply.type === 'promise') {
      task.promises.set(this.config.id, { accepted: local.reply.accepted, acceptedEntry: local.reply.acceptedEntry });
    }
    for (const p of this.peers) this.send(p, { type: 'prepare', key: task.key, index: task.index, ballot: task.ballot });
    this.checkPromises(task, now);
  }

  private checkPromises(task: Task, now: number): void {
    if (task.phase !== 'prepare' || task.promises.size < this.majority) return;
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
    this.startAccept(task, value);
  }

  private startAccept(task: Task, entry: Entry): void {
    task.phase = 'accept';
    task.entry = entry;
    task.accepts = new Set();
    task.rejects = new Set();
    const msg = { key: task.key, index: task.index, ballot: task.ballot, entry };
    const local = onAccept(this.record(task.key), msg);
    if (local.record !== undefined) this.persist(task.key, local.record);
    if (local.reply.type === 'accepted') task.accepts.add(this.config.id);
    for (const p of this.peers) this.send(p, { type: 'accept', ...msg });
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
    if (msg.type === 'behind') return; // that acceptor is catching up; it cannot vote this round
    if (msg.ballot !== task.ballot) return;
    if (msg.type === 'reject') {
      task.maxRound = Math.max(task.maxRound, roundOf(msg.promised));
      if (task.phase !== 'prepare' && task.phase !== 'accept') return;
      task.rejects.add(from);
      // Give up on this ballot only once a majority can no longer say yes.
      if (this.config.members.length - task.rejects.size < this.majority) this.backoff(task, now);
      return;
    }
    if (msg.type === 'promise' && task.phase === 'prepare') {
      task.promises.set(from, { accepted: msg.accepted, acceptedEntry: msg.acceptedEntry });
      this.checkPromises(task, now);
    } else if (msg.type === 'accepted' && task.phase === 'accept') {
      task.accepts.add(from);
      if (task.accepts.size >= this.majority) this.onChosen(task, now);
    }
  }

  private onChosen(task: Task, now: number): void {
    const entry = task.entry!;
    const next = learn(this.record(task.key), entry);
    if (next !== undefined) this.persist(task.key, next);
    for (const p of this.peers) this.send(p, { type: 'learn', key: task.key, entry });
    const own = task.own !== null && sameEntry(task.own, entry);
    if (own) {
      this.finish(task, { ok: true, kind: 'write', version: entry.index }, now);
      return;
    }
    // Someone else's value took this index (or a read finished a pending write): decide again.
    task.confirmed = task.op.kind === 'get' ? true : task.confirmed;
    this.plan(task, now);
  }

  /** A newer chosen entry arrived while the task runs: its current round is moot; decide again. */
  private onNewerChosen(task: Task, now: number): void {
    if (task.phase === 'backoff') return; // plan() runs when the backoff ends
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
    this.reply(task.ref, result);
    const q = this.queues.get(task.key);
    const next = q?.shift();
    if (q !== undefined && q.length === 0) this.queues.delete(task.key);
    if (next !== undefined) this.startTask(next.ref, task.key, next.op, now, next.deadline);
  }

  // ---------------------------------------------------------------------------------------------
  // Output

  private record(key: string): KeyRecord {
    return this.out.persist.get(key) ?? this.store.get(key) ?? EMPTY_RECORD;
  }

  private persist(key: string, record: KeyRecord): void {
    this.out.persist.set(key, record);
  }

  private send(to: MemberId, message: PeerMessage): void {
    this.out.send.push({ to, message });
  }

  private reply(requestRef: number, result: ClientResult): void {
    this.out.replies.push({ requestRef, result });
  }

  private flush(): Output {
    const out = this.out;
    this.out = emptyOutput();
    return out;
  }
}
