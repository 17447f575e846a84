/**
 * The queue's operations as a simulator workload (simulator.ts `SimWorkload`): simulated clients
 * push (most with request ids, retried with the same id after an unknown outcome), read and trim
 * one or two queues through the production plans (services/queue/queue-plan.ts), with segments of
 * 4 items so that runs cross many segments. The recorded history is checked against the queue's
 * specification (test/support/queue-model.ts).
 */
import { RpcError } from '../../framework/index.js';
import { queueErrors } from '../../services/queue/errors.js';
import { pushBatchPlan, readPlan, trimPlan, type BatchOutcome, type FullSegmentIds, type PushItem, type QueueAddress, type ReadOutcome, type TailState } from '../../services/queue/queue-plan.js';
import { checkPartition, type PartitionOperation } from '../support/linearizability.js';
import { prepare, queueModel, type QueueInput, type QueueOutput } from '../support/queue-model.js';
import type { KvPlan } from '../../services/paxoskv/plan.js';
import type { PlanOutcome, SimWorkload } from './simulator.js';

/** Items per segment in the simulation. */
export const SIM_SEGMENT_ITEMS = 4;

interface ClientState {
  /** The highest sequence number this client saw, per queue. */
  known: number[];
  /** The tail as last seen, per queue. */
  hints: Array<TailState | undefined>;
  ids: Array<Map<number, readonly string[]>>;
  /** A push (of one or more items) whose outcome was unknown, to retry with the same request ids. */
  retry?: { queue: number; items: Array<{ id: string; value: string; since: number }> };
  pushes: number;
}

/** Statistics of a queue workload run. */
export interface QueueWorkloadStats {
  pushes: number;
  /** Pushes of several items in one plan. */
  batches: number;
  retries: number;
  duplicates: number;
  reads: number;
  trims: number;
  unknown: number;
  segmentsFilled: number;
}

/** A queue workload for one run. */
export class QueueWorkload implements SimWorkload {
  readonly history: Array<PartitionOperation<QueueInput, QueueOutput> & { queue: number; client: number }> = [];
  /** Plans that threw something other than an unknown outcome: each is a bug. */
  readonly problems: string[] = [];
  readonly stats: QueueWorkloadStats = { pushes: 0, batches: 0, retries: 0, duplicates: 0, reads: 0, trims: 0, unknown: 0, segmentsFilled: 0 };
  private readonly clients = new Map<number, ClientState>();

  /**
   * @param seed - the run's seed (in item values, so values differ across runs).
   * @param queues - how many queues the clients share.
   */
  constructor(
    private readonly seed: number,
    private readonly queues: number,
    private readonly trimRate = 0.12,
    /** For the mutation test: `no-dedupe` runs pushes as if they had no request id (retries push again). */
    private readonly plantedBug?: 'no-dedupe',
  ) {}

  /** Writes under way: a run can end before they do, and their effects may show (see {@link check}). */
  private readonly open = new Set<{ queue: number; client: number; inputs: QueueInput[]; call: number }>();

  next(client: number, rand: () => number, now: number): { plan: KvPlan<unknown>; end(outcome: PlanOutcome, now: number): void } {
    const op = this.start(client, rand, now);
    const { inputs, queue } = op;
    if (inputs.length === 0) return op;
    const entry = { queue, client, inputs, call: now };
    this.open.add(entry);
    return {
      plan: op.plan,
      end: (o, t) => {
        this.open.delete(entry);
        op.end(o, t);
      },
    };
  }

  /** The next operation, with the writes it makes (pushes and trims: their inputs) and its queue. */
  private start(client: number, rand: () => number, now: number): { plan: KvPlan<unknown>; end(outcome: PlanOutcome, now: number): void; inputs: QueueInput[]; queue: number } {
    let c = this.clients.get(client);
    if (c === undefined) {
      c = { known: new Array(this.queues).fill(0), hints: [], ids: Array.from({ length: this.queues }, () => new Map()), pushes: 0 };
      this.clients.set(client, c);
    }
    const st = c;
    const ids = (q: number): FullSegmentIds => ({ get: (s) => st.ids[q]!.get(s), set: (s, v) => st.ids[q]!.set(s, v) });
    const at = (q: number): QueueAddress => ({ prefix: 'q/', queue: `queue${q}`, per: SIM_SEGMENT_ITEMS });
    const record = (queue: number, input: QueueInput, output: QueueOutput, returned: number) => {
      this.history.push({ queue, client, input, output, call: now, return: output.kind === 'unknown' ? Infinity : returned, unknown: output.kind === 'unknown' });
    };
    const unexpected = (what: string, error: unknown) => this.problems.push(`client ${client} ${what}: ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`);

    // A retry of a push whose outcome was unknown, most of the time.
    const roll = rand();
    if (st.retry !== undefined && roll < 0.85) {
      const { queue, items } = st.retry;
      this.stats.retries++;
      return this.push(st, at(queue), ids(queue), queue, items.map((it) => ({ ...it, dedupe: true })), record, unexpected);
    }
    st.retry = undefined;
    const q = Math.floor(rand() * this.queues);
    const r = rand();
    if (r < 0.55) {
      // One item mostly; sometimes a batch of 2 to 4 (one compare-and-set when they fit).
      const count = rand() < 0.75 ? 1 : 2 + Math.floor(rand() * 3);
      const items = Array.from({ length: count }, () => {
        const id = `c${client}-p${st.pushes++}`;
        return { id, value: `${id}-s${this.seed}`, since: rand() < 0.5 ? 0 : st.known[q]!, dedupe: rand() < 0.75 };
      });
      return this.push(st, at(q), ids(q), q, items, record, unexpected);
    }
    if (r < 1 - this.trimRate) {
      this.stats.reads++;
      const after = Math.floor(rand() * (st.known[q]! + 4));
      const limit = 1 + Math.floor(rand() * 3 * SIM_SEGMENT_ITEMS);
      const input: QueueInput = { kind: 'read', after, limit };
      return {
        inputs: [],
        queue: q,
        plan: readPlan(at(q), after, limit, ids(q)),
        end: (o, t) => {
          if (o.kind === 'returned') {
            const v = o.value as ReadOutcome;
            st.hints[q] = v.tail;
            st.known[q] = Math.max(st.known[q]!, v.lastSeq);
            record(q, input, { kind: 'read', items: v.items.map((it) => ({ seq: it.seq, value: new TextDecoder().decode(it.value) })), lastSeq: v.lastSeq, trimmedUpto: v.trimmedUpto }, t);
          } else if (o.kind === 'threw') unexpected('read threw', o.error);
          // An unknown read changed nothing: it is left out.
        },
      };
    }
    this.stats.trims++;
    const upto = Math.floor(rand() * (st.known[q]! + 2));
    const input: QueueInput = { kind: 'trim', upto };
    return {
      inputs: [input],
      queue: q,
      plan: trimPlan(at(q), upto, st.hints[q]),
      end: (o, t) => {
        st.hints[q] = undefined;
        if (o.kind === 'returned') record(q, input, { kind: 'trim', point: o.value as number }, t);
        else if (o.kind === 'unknown') {
          this.stats.unknown++;
          record(q, input, { kind: 'unknown' }, t);
        } else unexpected('trim threw', o.error);
      },
    };
  }

  private push(
    st: ClientState,
    at: QueueAddress,
    ids: FullSegmentIds,
    q: number,
    items: Array<{ id: string; value: string; since: number; dedupe: boolean }>,
    record: (queue: number, input: QueueInput, output: QueueOutput, returned: number) => void,
    unexpected: (what: string, error: unknown) => void,
  ): { plan: KvPlan<unknown>; end(outcome: PlanOutcome, now: number): void; inputs: QueueInput[]; queue: number } {
    this.stats.pushes += items.length;
    if (items.length > 1) this.stats.batches++;
    const dedupeOf = (it: { dedupe: boolean }) => (this.plantedBug === 'no-dedupe' ? false : it.dedupe);
    const batch: PushItem[] = items.map((it) => ({ value: new TextEncoder().encode(it.value), id: it.id, dedupe: dedupeOf(it), since: it.since }));
    const inputs: QueueInput[] = items.map((it) => ({ kind: 'push', id: it.id, value: it.value, since: it.since, dedupe: it.dedupe }));
    return {
      inputs,
      queue: q,
      plan: pushBatchPlan(at, batch, st.hints[q], ids),
      end: (o, t) => {
        st.retry = undefined;
        if (o.kind === 'returned') {
          const v = o.value as BatchOutcome;
          st.hints[q] = v.tail;
          v.seqs.forEach((seq, i) => {
            st.known[q] = Math.max(st.known[q]!, seq);
            if (v.duplicates[i]) this.stats.duplicates++;
            else if (seq % SIM_SEGMENT_ITEMS === 0) this.stats.segmentsFilled++;
            record(q, inputs[i]!, { kind: 'push', seq, duplicate: v.duplicates[i]! }, t);
          });
          return;
        }
        st.hints[q] = undefined;
        const lost = o.kind === 'unknown' || (o.error instanceof RpcError && o.error.reason === queueErrors.PUSH_OUTCOME_UNKNOWN.reason);
        if (!lost) return unexpected('push threw', (o as { error: unknown }).error);
        this.stats.unknown += items.length;
        for (const input of inputs) record(q, input, { kind: 'unknown' }, t);
        const retry = items.filter((it) => it.dedupe);
        if (retry.length > 0) st.retry = { queue: q, items: retry };
      },
    };
  }

  /** Queues whose history the checker could not decide within its budget (see {@link check}). */
  undecided = 0;

  /**
   * Checks each queue's history against the specification.
   * @returns what is wrong, or undefined. A history the search cannot decide within its budget
   *   (1,000,000 configurations) is not wrong: it is counted in `undecided`.
   */
  check(): string | undefined {
    if (this.problems.length > 0) return this.problems.slice(0, 3).join('; ');
    // Writes still under way when the run ended: their outcomes are unknown.
    for (const e of this.open) for (const input of e.inputs) this.history.push({ queue: e.queue, client: e.client, input, output: { kind: 'unknown' }, call: e.call, return: Infinity, unknown: true });
    this.open.clear();
    for (let q = 0; q < this.queues; q++) {
      const ops = prepare(this.history.filter((o) => o.queue === q));
      const r = checkPartition(ops, queueModel);
      if (r.verdict === 'unknown') this.undecided++;
      else if (r.verdict !== 'linearizable') {
        const prefix = (r.longestPrefix ?? []).map((i) => describe(ops[i]!)).slice(-8);
        return `queue ${q}: history ${r.verdict} (${ops.length} operations); longest linearizable prefix ends: ${prefix.join(' | ')}`;
      }
    }
    return undefined;
  }
}

function describe(op: PartitionOperation<QueueInput, QueueOutput> & { client: number }): string {
  const i = op.input;
  const o = op.output;
  const input = i.kind === 'push' ? `push ${i.id}${i.dedupe ? ` since ${i.since}` : ''}` : i.kind === 'read' ? `read after ${i.after} limit ${i.limit}` : `trim ${i.upto}`;
  const output =
    o.kind === 'push' ? `seq ${o.seq}` : o.kind === 'read' ? `[${o.items.map((it) => it.seq).join(',')}] last ${o.lastSeq} trimmed ${o.trimmedUpto}` : o.kind === 'trim' ? `point ${o.point}` : 'unknown';
  return `c${op.client} ${input} -> ${output} @${op.call.toFixed(1)}-${op.return.toFixed(1)}`;
}
