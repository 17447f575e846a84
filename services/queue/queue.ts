/**
 * PaxosStore's FIFO queue on PaxosKV: `push`, `read` and `trim` on named queues, with dense
 * sequence numbers that are never reused, linearizable pushes and reads, and request ids that make
 * a retried push take effect once. How it lies in PaxosKV and why it is correct: segment.ts and
 * queue-plan.ts; the operations run as plans (services/paxoskv/plan.ts) through `runPlan`.
 *
 * The client keeps two bounded caches, neither needed for correctness: each queue's tail as last
 * seen (a push first tries it without reading it), and the item ids of full segments (which never
 * change), so a push with a request id reads each full segment once. Concurrent pushes to one
 * queue go out in batches: one compare-and-set carries every push that arrived while the previous
 * one was in flight (group commit).
 */
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import { withoutCall, type CallOptions } from '../../framework/index.js';
import type { PaxosKVClient } from '../paxoskv/client.js';
import { runPlan } from '../paxoskv/run-plan.js';
import { queueErrors } from './errors.js';
import { pushBatchPlan, readPlan, trimPlan, type FullSegmentIds, type PushItem, type TailState } from './queue-plan.js';
import { MAX_ITEM_BYTES, MAX_QUEUE_NAME_BYTES, MAX_REQUEST_ID_BYTES, SEGMENT_ITEMS } from './segment.js';

// mnemonist exports its single structures to require() only (as framework/tickets does).
type LRUClass = (typeof import('mnemonist/lru-cache-with-delete.js'))['default'];
const LRU = createRequire(import.meta.url)('mnemonist/lru-cache-with-delete.js') as LRUClass;

/** Largest `limit` of one read. */
export const MAX_READ_LIMIT = 1000;

/** The most pushes one batch carries (one segment's worth). */
const MAX_BATCH_ITEMS = SEGMENT_ITEMS;

/** A push waiting for its batch. */
interface PendingPush {
  readonly item: PushItem;
  /** Epoch ms. */
  readonly deadline: number;
  resolve(r: { seq: number; duplicate: boolean }): void;
  reject(err: unknown): void;
}

/** Options of a {@link PaxosQueue}. */
export interface PaxosQueueOptions {
  /** Key prefix of every queue (default `queue/`): queue `q`'s segments are `<prefix>q/<n>`. */
  prefix?: string;
  /** Full segments whose item ids are cached (default 4096; each holds up to 64 ids). */
  cachedSegments?: number;
  /** Queues whose tail is cached (default 10,000). */
  cachedTails?: number;
}

/** Options of a push. */
export interface PushOptions extends CallOptions {
  /**
   * The request's id (1..128 UTF-8 bytes): a push whose id is already in the queue (after
   * `since`, and not trimmed) adds nothing and returns the first push's sequence number. Give the
   * same id to every retry of one push; without one, each call pushes a new item.
   */
  requestId?: string;
  /**
   * With `requestId`: a sequence number the queue had reached before this request's first push
   * began (the last one the caller saw; default 0: look through the whole queue). The id is looked
   * for after it only, which saves reading older segments.
   */
  since?: number;
}

/** One item read. */
export interface QueueItem {
  /** Its sequence number (1, 2, 3, ...: dense, in push order). */
  readonly seq: number;
  /** Its bytes. */
  readonly value: Uint8Array;
}

/** What {@link PaxosQueue.read} returns: items and the queue's state, all as of one moment. */
export interface QueueReadResult {
  /** The items after `afterSeq` (and after the trim point), in order, at most `limit`. */
  readonly items: QueueItem[];
  /** The queue's last sequence number (0: nothing pushed yet). */
  readonly lastSeq: number;
  /** Items up to here were trimmed (0: none). */
  readonly trimmedUpto: number;
  /** Whether items after the last one returned exist (read again from it). */
  readonly more: boolean;
}

/**
 * FIFO queues on a PaxosKV cluster.
 *
 * @example
 * const queue = new PaxosQueue(new PaxosKVClient({ peers }));
 * const { seq } = await queue.push('inbox/ada', bytes, { requestId: 'msg-42' });
 * const { items, lastSeq } = await queue.read('inbox/ada', 0);
 */
export class PaxosQueue {
  private readonly prefix: string;
  private readonly tails: InstanceType<typeof LRU<string, TailState>>;
  private readonly segmentIds: InstanceType<typeof LRU<string, readonly string[]>>;
  /** Pushes waiting for their queue's batch in flight, by queue. */
  private readonly waiting = new Map<string, PendingPush[]>();
  /** Queues with a batch in flight. */
  private readonly draining = new Set<string>();

  /**
   * @param kv - the cluster's client (shared; not closed by the queue).
   * @param options - key prefix and cache sizes.
   * @throws RpcError INVALID_ARGUMENT for a bad prefix or cache size.
   */
  constructor(
    private readonly kv: PaxosKVClient,
    options: PaxosQueueOptions = {},
  ) {
    this.prefix = options.prefix ?? 'queue/';
    if (this.prefix === '' || this.prefix.startsWith('\u0000')) throw queueErrors.INVALID_QUEUE_REQUEST('prefix must be non-empty and must not start with NUL');
    this.tails = new LRU(positive(options.cachedTails ?? 10_000, 'cachedTails'));
    this.segmentIds = new LRU(positive(options.cachedSegments ?? 4096, 'cachedSegments'));
  }

  /**
   * Appends an item.
   * @param queue - the queue's name (1..512 UTF-8 bytes).
   * @param value - the item (at most 15 KiB).
   * @param options - the request id, `since`, and the deadline (`deadline` or `timeoutMs`; default
   *   cut to the enclosing call's; else the PaxosKV client's default). A push that waits for another's batch runs in the next one,
   *   whose deadline is the latest of its pushes'; one whose deadline passes while it waits is
   *   refused unsent (DEADLINE_EXCEEDED, `PUSH_DEADLINE_EXCEEDED`).
   * @returns the item's sequence number, and `duplicate: true` when the request id was already
   *   there (nothing was added; `seq` is the first push's).
   * @throws RpcError INVALID_ARGUMENT (`INVALID_QUEUE_REQUEST`) for a bad name, item, request id or
   *   `since`; UNAVAILABLE or DEADLINE_EXCEEDED when PaxosKV did not answer in time (the item may
   *   or may not be in: retry with the same request id); UNKNOWN (`PUSH_OUTCOME_UNKNOWN`) as
   *   queue-plan.ts says; DATA_LOSS (`QUEUE_RECORD_MALFORMED`) for a damaged segment.
   */
  async push(queue: string, value: Uint8Array, options: PushOptions = {}): Promise<{ seq: number; duplicate: boolean }> {
    const { requestId, since = 0, ...call } = options;
    checkQueue(queue);
    if (!(value instanceof Uint8Array)) throw queueErrors.INVALID_QUEUE_REQUEST('an item must be bytes (a Uint8Array)');
    if (value.length > MAX_ITEM_BYTES) throw queueErrors.INVALID_QUEUE_REQUEST(`an item of ${value.length} bytes exceeds the maximum ${MAX_ITEM_BYTES}`);
    if (requestId !== undefined && (requestId === '' || Buffer.byteLength(requestId) > MAX_REQUEST_ID_BYTES)) {
      throw queueErrors.INVALID_QUEUE_REQUEST(`a request id must be 1..${MAX_REQUEST_ID_BYTES} bytes`);
    }
    checkSeq(since, 'since');
    const item: PushItem = { value, id: requestId ?? randomUUID(), dedupe: requestId !== undefined, since };
    return new Promise((resolve, reject) => {
      let waiting = this.waiting.get(queue);
      if (waiting === undefined) this.waiting.set(queue, (waiting = []));
      waiting.push({ item, deadline: this.kv.deadlineFor(call), resolve, reject });
      if (!this.draining.has(queue)) void this.drain(queue);
    });
  }

  /**
   * Pushes what waits for `queue`, a batch at a time (up to 64 items), until nothing waits: pushes
   * that arrive while a batch is in flight go together in the next (group commit), so concurrent
   * pushes to one queue from this client cost one compare-and-set per batch instead of dueling
   * over the tail.
   */
  private async drain(queue: string): Promise<void> {
    this.draining.add(queue);
    try {
      for (;;) {
        const waiting = this.waiting.get(queue);
        if (waiting === undefined || waiting.length === 0) break;
        const now = Date.now();
        const batch = waiting.splice(0, MAX_BATCH_ITEMS).filter((p) => {
          // A push whose deadline passed while it waited is not sent at all.
          if (p.deadline > now) return true;
          p.reject(queueErrors.PUSH_DEADLINE_EXCEEDED());
          return false;
        });
        if (waiting.length === 0) this.waiting.delete(queue);
        if (batch.length === 0) continue;
        const at = { prefix: this.prefix, queue, per: SEGMENT_ITEMS };
        // The batch's deadline is its latest push's, outside any caller's call (it serves several).
        const deadline = Math.max(...batch.map((p) => p.deadline));
        try {
          const r = await withoutCall(() => runPlan(pushBatchPlan(at, batch.map((p) => p.item), this.tails.get(queue), this.idsOf(queue)), this.kv, { deadline }));
          if (r.tail !== undefined) this.tails.set(queue, r.tail);
          batch.forEach((p, i) => p.resolve({ seq: r.seqs[i]!, duplicate: r.duplicates[i]! }));
        } catch (err) {
          this.forgetTail(queue);
          for (const p of batch) p.reject(err);
        }
      }
    } finally {
      this.draining.delete(queue);
    }
  }

  /**
   * Reads items after a sequence number (a linearizable read: it sees every push that finished
   * before it began).
   * @param queue - the queue's name.
   * @param afterSeq - the last sequence number the reader has (0: from the first item).
   * @param options - `limit` (1..1000, default 100) and the call's options.
   * @returns the items, the last sequence number, the trim point and whether more follow.
   * @throws RpcError INVALID_ARGUMENT for a bad name, `afterSeq` or limit; UNAVAILABLE or
   *   DEADLINE_EXCEEDED when PaxosKV did not answer in time; DATA_LOSS for a damaged segment.
   */
  async read(queue: string, afterSeq: number, options: CallOptions & { limit?: number } = {}): Promise<QueueReadResult> {
    const { limit = 100, ...call } = options;
    checkQueue(queue);
    checkSeq(afterSeq, 'afterSeq');
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_READ_LIMIT) throw queueErrors.INVALID_QUEUE_REQUEST(`limit must be an integer from 1 to ${MAX_READ_LIMIT}, not ${limit}`);
    const r = await runPlan(readPlan({ prefix: this.prefix, queue, per: SEGMENT_ITEMS }, afterSeq, limit, this.idsOf(queue)), this.kv, call);
    this.tails.set(queue, r.tail);
    const last = r.items.at(-1)?.seq ?? Math.max(afterSeq, r.trimmedUpto);
    return { items: [...r.items], lastSeq: r.lastSeq, trimmedUpto: r.trimmedUpto, more: last < r.lastSeq };
  }

  /**
   * Drops the items up to `uptoSeq` (never past the last one): later reads do not return them,
   * and full segments they filled are emptied (a small tombstone each stays).
   * @returns the queue's trim point after this trim.
   * @throws RpcError INVALID_ARGUMENT for a bad name or `uptoSeq`; UNAVAILABLE or DEADLINE_EXCEEDED
   *   when PaxosKV did not answer in time (the trim may or may not have happened: trimming is
   *   idempotent, so trim again); DATA_LOSS for a damaged segment.
   */
  async trim(queue: string, uptoSeq: number, options: CallOptions = {}): Promise<number> {
    checkQueue(queue);
    checkSeq(uptoSeq, 'uptoSeq');
    try {
      return await runPlan(trimPlan({ prefix: this.prefix, queue, per: SEGMENT_ITEMS }, uptoSeq, this.tails.get(queue)), this.kv, options);
    } finally {
      this.forgetTail(queue);
    }
  }

  private forgetTail(queue: string): void {
    this.tails.remove(queue);
  }

  private idsOf(queue: string): FullSegmentIds {
    return {
      get: (segment) => this.segmentIds.get(`${queue}\u0000${segment}`),
      set: (segment, ids) => this.segmentIds.set(`${queue}\u0000${segment}`, ids),
    };
  }
}

function positive(n: number, name: string): number {
  if (!Number.isSafeInteger(n) || n < 1) throw queueErrors.INVALID_QUEUE_REQUEST(`${name} must be a positive integer, not ${n}`);
  return n;
}

function checkQueue(queue: string): void {
  if (typeof queue !== 'string' || queue === '' || Buffer.byteLength(queue) > MAX_QUEUE_NAME_BYTES) {
    throw queueErrors.INVALID_QUEUE_REQUEST(`a queue name must be 1..${MAX_QUEUE_NAME_BYTES} bytes`);
  }
}

function checkSeq(seq: number, name: string): void {
  if (!Number.isSafeInteger(seq) || seq < 0) throw queueErrors.INVALID_QUEUE_REQUEST(`${name} must be a sequence number (an integer >= 0), not ${seq}`);
}
