/**
 * PaxosStore's FIFO queue on PaxosKV: `push`, `read` and `trim` on named queues, with dense
 * sequence numbers that are never reused, linearizable pushes and reads, and request ids that make
 * a retried push take effect once. How it lies in PaxosKV and why it is correct: segment.ts and
 * queue-plan.ts; the operations run as plans (services/paxoskv/plan.ts) through `runPlan`.
 *
 * The client keeps two bounded caches, neither needed for correctness: each queue's tail as last
 * seen (a push first tries it without reading it), and the item ids of full segments (which never
 * change), so a push with a request id reads each full segment once.
 */
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import type { CallOptions } from '../../framework/index.js';
import type { PaxosKVClient } from '../paxoskv/client.js';
import { runPlan } from '../paxoskv/run-plan.js';
import { queueErrors } from './errors.js';
import { pushPlan, readPlan, trimPlan, type FullSegmentIds, type TailState } from './queue-plan.js';
import { MAX_ITEM_BYTES, MAX_QUEUE_NAME_BYTES, MAX_REQUEST_ID_BYTES, SEGMENT_ITEMS } from './segment.js';

// mnemonist exports its single structures to require() only (as framework/tickets does).
type LRUClass = (typeof import('mnemonist/lru-cache-with-delete.js'))['default'];
const LRU = createRequire(import.meta.url)('mnemonist/lru-cache-with-delete.js') as LRUClass;

/** Largest `limit` of one read. */
export const MAX_READ_LIMIT = 1000;

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
   * @param options - the request id, `since`, and the call's options (deadline, metadata).
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
    const at = { prefix: this.prefix, queue, per: SEGMENT_ITEMS };
    try {
      const r = await runPlan(pushPlan(at, value, requestId ?? randomUUID(), requestId !== undefined, since, this.tails.get(queue), this.idsOf(queue)), this.kv, call);
      if (r.tail !== undefined) this.tails.set(queue, r.tail);
      return { seq: r.seq, duplicate: r.duplicate };
    } catch (err) {
      this.forgetTail(queue);
      throw err;
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
