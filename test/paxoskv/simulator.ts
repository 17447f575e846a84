/**
 * A deterministic simulator for PaxosKV's core: replicas, a hostile network, crashing disks and
 * retrying clients, all driven by one seeded PRNG and a virtual clock, in the style of
 * FoundationDB's and TigerBeetle's simulation testing.
 *
 * It mirrors the real driver's contract: each core step's records go to a write overlay and
 * become durable at the next group commit (after a random fsync delay); the step's messages and
 * replies leave only after that commit. A crash loses the overlay and everything not yet sent;
 * the replica restarts with its durable records only. The network drops, duplicates, delays
 * (hence reorders) and partitions messages. Clients time out and retry on another replica with
 * the same request id, and record a history for the linearizability checker.
 *
 * Invariants checked on every persist: a replica's chosen index never goes back, and no two
 * replicas ever hold different chosen entries for the same key and index.
 */
import { sameEntry } from '../../services/paxoskv/core/acceptor.js';
import { Replica } from '../../services/paxoskv/core/replica.js';
import type { ClientOp, ClientResult, Entry, KeyRecord, MemberId, Output, PeerMessage } from '../../services/paxoskv/core/types.js';
import type { KvInput, KvOperation, KvOutput } from '../support/linearizability.js';
import { mulberry32 } from '../support/prng.js';

export { mulberry32 } from '../support/prng.js';

/** What a simulation run does. Times are virtual milliseconds. */
export interface SimOptions {
  seed: number;
  replicas: 3 | 5;
  clients: number;
  keys: number;
  opsPerClient: number;
  /** Probability that a message is lost. */
  dropRate: number;
  /** Probability that a message is delivered twice. */
  duplicateRate: number;
  /** Network delay range (ms). */
  minDelayMs: number;
  maxDelayMs: number;
  /** Group-commit (fsync) delay range (ms). */
  minFsyncMs: number;
  maxFsyncMs: number;
  /** Mean time between replica crashes (ms); 0 for none. */
  crashEveryMs: number;
  /** Mean time between network partitions (ms); 0 for none. */
  partitionEveryMs: number;
  /** Client attempt timeout and whole-operation deadline (ms). */
  attemptTimeoutMs: number;
  operationDeadlineMs: number;
  /** Give up the run at this virtual time (ms). */
  maxTimeMs: number;
}

/** Sensible defaults: small key space (conflicts), a lossy network, crashes and partitions. */
export function defaultSimOptions(seed: number): SimOptions {
  const r = mulberry32(seed ^ 0x9e3779b9);
  return {
    seed,
    replicas: r() < 0.7 ? 3 : 5,
    clients: 3 + Math.floor(r() * 4),
    keys: 1 + Math.floor(r() * 4),
    opsPerClient: 25,
    dropRate: r() * 0.15,
    duplicateRate: r() * 0.1,
    minDelayMs: 1,
    maxDelayMs: 5 + Math.floor(r() * 40),
    minFsyncMs: 0,
    maxFsyncMs: 1 + Math.floor(r() * 10),
    crashEveryMs: r() < 0.6 ? 300 + Math.floor(r() * 1500) : 0,
    partitionEveryMs: r() < 0.4 ? 500 + Math.floor(r() * 2000) : 0,
    attemptTimeoutMs: 400,
    operationDeadlineMs: 3000,
    maxTimeMs: 120_000,
  };
}

/** The outcome of a run. */
export interface SimResult {
  history: KvOperation[];
  violations: string[];
  /** Every chosen entry any replica held, by `key#index`. */
  chosen: ReadonlyMap<string, Entry>;
  stats: { messages: number; dropped: number; crashes: number; partitions: number; completed: number; unknown: number; failedPreconditions: number; timeMs: number };
}

interface SimEvent {
  at: number;
  seq: number;
  run: () => void;
}

/** A binary min-heap of events by (time, sequence). */
class EventQueue {
  private heap: SimEvent[] = [];
  private seq = 0;
  get size(): number {
    return this.heap.length;
  }
  push(at: number, run: () => void): void {
    const e = { at, seq: this.seq++, run };
    const h = this.heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (less(h[p]!, h[i]!)) break;
      [h[p], h[i]] = [h[i]!, h[p]!];
      i = p;
    }
  }
  pop(): SimEvent | undefined {
    const h = this.heap;
    if (h.length === 0) return undefined;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && less(h[l]!, h[m]!)) m = l;
        if (r < h.length && less(h[r]!, h[m]!)) m = r;
        if (m === i) break;
        [h[m], h[i]] = [h[i]!, h[m]!];
        i = m;
      }
    }
    return top;
  }
}

function less(a: SimEvent, b: SimEvent): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}

interface SimNode {
  id: MemberId;
  durable: Map<string, KeyRecord>;
  overlay: Map<string, KeyRecord>;
  pending: Output[];
  flushScheduled: boolean;
  core: Replica | undefined;
  epoch: number;
  tickAt: number;
}

interface ClientOpState {
  op: KvOperation;
  core: ClientOp;
  attempt: number;
  done: boolean;
  deadline: number;
}

/** Runs one seeded simulation. */
export function simulate(options: SimOptions, trace?: (line: string) => void): SimResult {
  const rand = mulberry32(options.seed);
  const q = new EventQueue();
  let now = 0;
  const members = Array.from({ length: options.replicas }, (_, i) => i + 1);
  const nodes = new Map<MemberId, SimNode>();
  const violations: string[] = [];
  const chosenAt = new Map<string, Entry>();
  const stats = { messages: 0, dropped: 0, crashes: 0, partitions: 0, completed: 0, unknown: 0, failedPreconditions: 0, timeMs: 0 };
  let partition: Set<MemberId> | undefined;
  const refs = new Map<number, { client: ClientOpState; attempt: number }>();
  let nextRef = 1;
  const history: KvOperation[] = [];
  let opsLeft = options.clients * options.opsPerClient;
  const log = (s: string) => trace?.(`${now.toString().padStart(6)} ${s}`);

  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const between = (a: number, b: number) => a + rand() * (b - a);

  // --- replicas -----------------------------------------------------------------------------
  function boot(id: MemberId): void {
    const node = nodes.get(id)!;
    node.core = new Replica(
      { id, members, phaseTimeoutMs: 100, maxAttempts: 8, backoffMs: 5 },
      { get: (k) => node.overlay.get(k) ?? node.durable.get(k) },
      rand,
    );
    node.tickAt = Infinity;
  }
  for (const id of members) {
    nodes.set(id, { id, durable: new Map(), overlay: new Map(), pending: [], flushScheduled: false, core: undefined, epoch: 0, tickAt: Infinity });
    boot(id);
  }

  function checkRecord(id: MemberId, key: string, before: KeyRecord | undefined, after: KeyRecord): void {
    const b = before?.chosen?.index ?? 0;
    const a = after.chosen?.index ?? 0;
    if (a < b) violations.push(`replica ${id} key ${key}: chosen index went back from ${b} to ${a}`);
    if (after.chosen !== null) {
      const slot = `${key}#${after.chosen.index}`;
      const known = chosenAt.get(slot);
      if (known === undefined) chosenAt.set(slot, after.chosen);
      else if (!sameEntry(known, after.chosen)) {
        violations.push(`key ${key} index ${after.chosen.index}: replica ${id} chose ${describe(after.chosen)}, another replica chose ${describe(known)}`);
      }
    }
  }

  function handle(node: SimNode, out: Output): void {
    for (const [k, r] of out.persist) {
      checkRecord(node.id, k, node.overlay.get(k) ?? node.durable.get(k), r);
      node.overlay.set(k, r);
    }
    if (node.pending.length === 0 && out.persist.size === 0) release(node, out);
    else {
      node.pending.push(out);
      if (!node.flushScheduled) {
        node.flushScheduled = true;
        const epoch = node.epoch;
        q.push(now + between(options.minFsyncMs, options.maxFsyncMs), () => flush(node, epoch));
      }
    }
    scheduleTick(node);
  }

  function flush(node: SimNode, epoch: number): void {
    if (node.epoch !== epoch) return;
    node.flushScheduled = false;
    const batch = node.pending;
    node.pending = [];
    for (const out of batch) for (const [k, r] of out.persist) node.durable.set(k, r);
    node.overlay.clear();
    for (const out of batch) release(node, out);
  }

  function release(node: SimNode, out: Output): void {
    for (const s of out.send) send(node.id, s.to, s.message);
    for (const r of out.replies) deliverReply(r.requestRef, r.result);
  }

  function scheduleTick(node: SimNode): void {
    const wake = node.core?.nextWake();
    if (wake === undefined || wake >= node.tickAt) return;
    node.tickAt = wake;
    const epoch = node.epoch;
    q.push(Math.max(wake, now), () => {
      if (node.epoch !== epoch || node.core === undefined) return;
      node.tickAt = Infinity;
      handle(node, node.core.tick(now));
    });
  }

  // --- network ------------------------------------------------------------------------------
  function cut(a: MemberId, b: MemberId): boolean {
    return partition !== undefined && partition.has(a) !== partition.has(b);
  }

  function send(from: MemberId, to: MemberId, msg: PeerMessage): void {
    stats.messages++;
    const copies = rand() < options.duplicateRate ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      if (rand() < options.dropRate) {
        stats.dropped++;
        continue;
      }
      q.push(now + between(options.minDelayMs, options.maxDelayMs), () => {
        if (cut(from, to)) {
          stats.dropped++;
          return;
        }
        const node = nodes.get(to)!;
        if (node.core === undefined) return;
        handle(node, node.core.receive(from, msg, now));
      });
    }
  }

  // --- faults -------------------------------------------------------------------------------
  function scheduleCrash(): void {
    if (options.crashEveryMs <= 0) return;
    q.push(now + between(0.5, 1.5) * options.crashEveryMs, () => {
      if (opsLeft <= 0) return;
      const node = nodes.get(pick(members))!;
      if (node.core !== undefined) {
        stats.crashes++;
        log(`crash replica ${node.id} (${node.pending.length} batches not yet durable)`);
        node.core = undefined;
        node.epoch++;
        node.overlay.clear();
        node.pending = [];
        node.flushScheduled = false;
        q.push(now + between(50, 600), () => {
          log(`restart replica ${node.id}`);
          boot(node.id);
        });
      }
      scheduleCrash();
    });
  }

  function schedulePartition(): void {
    if (options.partitionEveryMs <= 0) return;
    q.push(now + between(0.5, 1.5) * options.partitionEveryMs, () => {
      if (opsLeft <= 0) return;
      const side = new Set(members.filter(() => rand() < 0.5));
      partition = side;
      stats.partitions++;
      log(`partition {${[...side].join(',')}} | rest`);
      q.push(now + between(100, 800), () => {
        partition = undefined;
        log('partition healed');
      });
      schedulePartition();
    });
  }

  // --- clients ------------------------------------------------------------------------------
  let opId = 0;
  function startOp(client: number, remaining: number): void {
    if (remaining === 0) return;
    const key = `key${Math.floor(rand() * options.keys)}`;
    const value = new TextEncoder().encode(`c${client}-o${remaining}-s${options.seed}`);
    const requestId = `c${client}-${opId}`;
    const roll = rand();
    let input: KvInput;
    let core: ClientOp;
    if (roll < 0.35) {
      input = { kind: 'get' };
      core = { kind: 'get' };
    } else if (roll < 0.65) {
      input = { kind: 'put', value };
      core = { kind: 'put', value, requestId };
    } else if (roll < 0.75) {
      input = { kind: 'delete' };
      core = { kind: 'delete', requestId };
    } else {
      const expected = BigInt(Math.floor(rand() * 4));
      input = { kind: 'cas', expectedVersion: expected, value };
      core = { kind: 'cas', expectedVersion: Number(expected), value, requestId };
    }
    const op: KvOperation = { id: opId++, client, key, input, output: { unknown: true }, call: now, return: Infinity };
    const state: ClientOpState = { op, core, attempt: 0, done: false, deadline: now + options.operationDeadlineMs };
    history.push(op);
    attempt(state, () => startOp(client, remaining - 1));
  }

  const nextOp = new Map<ClientOpState, () => void>();
  function attempt(state: ClientOpState, next?: () => void): void {
    if (next !== undefined) nextOp.set(state, next);
    if (state.done) return;
    if (now >= state.deadline) return giveUp(state);
    state.attempt++;
    const a = state.attempt;
    const node = nodes.get(pick(members))!;
    const ref = nextRef++;
    refs.set(ref, { client: state, attempt: a });
    const delay = between(options.minDelayMs, options.maxDelayMs);
    q.push(now + delay, () => {
      if (node.core === undefined || state.done) return;
      // The deadline travels as time remaining, as on the wire: it ends later than the client's
      // own timer by the network delay.
      handle(node, node.core.request(ref, state.op.key, state.core, now, now + options.attemptTimeoutMs));
    });
    q.push(now + options.attemptTimeoutMs, () => {
      if (!state.done && state.attempt === a) attempt(state);
    });
  }

  function giveUp(state: ClientOpState): void {
    state.done = true;
    stats.unknown++;
    opsLeft--;
    if (state.op.input.kind === 'get') history.splice(history.indexOf(state.op), 1); // a read that never answered changed nothing
    nextOp.get(state)?.();
  }

  function deliverReply(ref: number, result: ClientResult): void {
    const r = refs.get(ref);
    if (r === undefined) return;
    refs.delete(ref);
    q.push(now + between(options.minDelayMs, options.maxDelayMs), () => {
      const state = r.client;
      if (state.done) return;
      if (!result.ok && result.status !== 'FAILED_PRECONDITION') {
        if (state.attempt === r.attempt) attempt(state);
        return;
      }
      state.done = true;
      opsLeft--;
      if (!result.ok && state.attempt > 1) {
        // As PaxosKVClient: after an attempt whose outcome is unknown, a later FAILED_PRECONDITION
        // does not prove the operation did not happen (the earlier attempt may still apply), so
        // the outcome is reported unknown.
        stats.unknown++;
        nextOp.get(state)?.();
        return;
      }
      stats.completed++;
      state.op.return = now;
      state.op.output = toOutput(result);
      if (!result.ok) stats.failedPreconditions++;
      nextOp.get(state)?.();
    });
  }

  for (let c = 0; c < options.clients; c++) q.push(between(0, 10), () => startOp(c, options.opsPerClient));
  scheduleCrash();
  schedulePartition();

  for (;;) {
    const e = q.pop();
    if (e === undefined || e.at > options.maxTimeMs) break;
    now = e.at;
    e.run();
    if (violations.length > 0) break;
  }
  stats.timeMs = now;
  return { history, violations, chosen: chosenAt, stats };
}

function toOutput(result: ClientResult): KvOutput {
  if (!result.ok) return { failed: 'FAILED_PRECONDITION' };
  if (result.kind === 'get') return result.value === null ? null : { value: result.value, version: BigInt(result.version) };
  return { version: BigInt(result.version) };
}

function describe(e: Entry): string {
  return `{request ${e.requestId}, proposer ${e.proposer}, value ${e.value === null ? 'null' : new TextDecoder().decode(e.value)}}`;
}
