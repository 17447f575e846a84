/**
 * The queue of admitted calls waiting for their handler, served by business priority: the most
 * important business priority first, first come first served within one. (Not by the full level:
 * admission already shed the users above the cut-off, and serving the admitted users strictly by
 * their hashed user priority would let the last admitted ones starve behind a stream of slightly
 * better ones until their deadline.) It also keeps arrival order, to tell how long the oldest
 * waiting call has waited and to find calls to drop from the oldest on.
 *
 * Pure code: times come in as arguments. A binary heap (binary-heap.ts) on (business priority,
 * arrival sequence) and an array in arrival order; a removal marks the entry, and each structure
 * skips or compacts away marked entries once they outnumber the live ones (amortized O(1) per
 * removal; no removed call is held longer than that). It also counts the waiting calls per level,
 * for admission to tell whose calls stand in the queue.
 */

/** A handle to a queued call, from `push`, to remove it with `removeCall`. */
export interface QueuedCall {
  /** True once it left the queue (served, expired, dropped or removed). */
  readonly gone: boolean;
}

/** One waiting call, with what the queue orders and expires it by. */
interface Entry<T> extends QueuedCall {
  readonly item: T;
  readonly level: number;
  /** What it is served by: its business priority (`level >> 7`). */
  readonly rank: number;
  readonly seq: number;
  /** When it joined the queue, and when it had been waiting since (epoch ms). */
  readonly since: number;
  /** Epoch ms after which nobody wants its answer (`Infinity` for none). */
  readonly deadline: number;
  /** Removed: both orders drop removed entries lazily. */
  gone: boolean;
}

import { BinaryHeap } from './binary-heap.js';
import { PRIORITY_LEVELS } from './priority.js';

/** A priority queue of waiting calls; see the module comment. */
export class CallQueue<T> {
  private readonly heap = new BinaryHeap<Entry<T>>((a, b) => a.rank < b.rank || (a.rank === b.rank && a.seq < b.seq));
  /** Arrival order, with removed entries skipped from `head` and compacted now and then. */
  private arrivals: Entry<T>[] = [];
  private head = 0;
  private seq = 0;
  /** Calls waiting (entries not removed). */
  private live = 0;
  private readonly counts = new Uint32Array(PRIORITY_LEVELS * PRIORITY_LEVELS);
  private readonly bandCounts = new Uint32Array(PRIORITY_LEVELS);

  /** Calls waiting. */
  get size(): number {
    return this.live;
  }

  /**
   * The calls waiting at each priority level, 0..16383: a live view, to read, not to change.
   * @returns a 16384-entry array of counts.
   */
  get byLevel(): ArrayLike<number> {
    return this.counts;
  }

  /**
   * How many waiting calls are served before a call of `level` that joins now: those of its
   * business priority and of every more important one.
   * @param level - a priority level, 0..16383.
   * @returns a count.
   */
  ahead(level: number): number {
    let n = 0;
    for (let b = Math.min(level >> 7, PRIORITY_LEVELS - 1); b >= 0; b--) n += this.bandCounts[b]!;
    return n;
  }

  /**
   * Adds a call.
   * @param item - the call.
   * @param level - its priority level, an integer 0..16383 (a lower business priority, `level >> 7`, is served first).
   * @param since - epoch ms it has been waiting since (for the oldest-wait signal).
   * @param deadline - epoch ms after which it is expired (`Infinity` for none).
   * @returns its handle, for `removeCall`.
   * @throws RangeError when `level` is not an integer in 0..16383.
   */
  push(item: T, level: number, since: number, deadline: number): QueuedCall {
    if (!Number.isInteger(level) || level < 0 || level >= this.counts.length) throw new RangeError(`call queue: level ${level} is not an integer in 0..${this.counts.length - 1}`);
    const e: Entry<T> = { item, level, rank: level >> 7, seq: this.seq++, since, deadline, gone: false };
    this.arrivals.push(e);
    this.heap.push(e);
    this.live++;
    this.counts[level]!++;
    this.bandCounts[e.rank]!++;
    return e;
  }

  /**
   * Removes one call, whatever its place (its client cancelled it).
   * @param handle - what this queue's `push` returned for it (a handle from another queue is a programming error).
   * @returns the call if it was waiting; undefined if it had already left the queue.
   */
  removeCall(handle: QueuedCall): T | undefined {
    const e = handle as Entry<T>;
    if (e.gone) return undefined;
    this.remove(e);
    this.trim();
    return e.item;
  }

  /**
   * Removes the next call to serve (most important business priority, then earliest).
   * @returns it, or undefined when the queue is empty.
   */
  shift(): T | undefined {
    for (let e = this.heap.pop(); e !== undefined; e = this.heap.pop()) {
      if (e.gone) continue;
      this.remove(e);
      this.trim();
      return e.item;
    }
    return undefined;
  }

  /**
   * When the oldest waiting call started waiting.
   * @returns epoch ms, or undefined when none waits.
   */
  oldestSince(): number | undefined {
    this.trim();
    return this.head < this.arrivals.length ? this.arrivals[this.head]!.since : undefined;
  }

  /**
   * Removes calls from the oldest on while `drop` says so, stopping at the first it keeps (calls
   * mostly arrive in deadline order; one that does not is dropped when it is shifted, or in a
   * later sweep).
   * @param drop - given a call, when it started waiting and its deadline (epoch ms): true to remove it.
   * @returns the removed calls, oldest first.
   */
  removeOldestWhile(drop: (item: T, since: number, deadline: number) => boolean): T[] {
    const out: T[] = [];
    for (;;) {
      this.trim();
      if (this.head >= this.arrivals.length) break;
      const e = this.arrivals[this.head]!;
      if (!drop(e.item, e.since, e.deadline)) break;
      this.remove(e);
      out.push(e.item);
    }
    return out;
  }

  /**
   * Removes every call above `level` (after the admission level dropped).
   * @returns the removed calls, in no particular order.
   */
  removeAbove(level: number): T[] {
    const out: T[] = [];
    for (const e of this.heap.values()) {
      if (!e.gone && e.level > level) {
        this.remove(e);
        out.push(e.item);
      }
    }
    this.trim();
    return out;
  }

  /** Marks an entry removed, and compacts the heap once removed entries outnumber the live ones. */
  private remove(e: Entry<T>): void {
    e.gone = true;
    this.live--;
    this.counts[e.level]!--;
    this.bandCounts[e.rank]!--;
    if (this.heap.size > 2 * this.live + 1024) this.heap.retain((x) => !x.gone);
  }

  /** Skips removed entries at the front of the arrival order, and compacts it when they pile up behind. */
  private trim(): void {
    const a = this.arrivals;
    while (this.head < a.length && a[this.head]!.gone) this.head++;
    if (this.head === a.length) {
      a.length = 0;
      this.head = 0;
    } else if (a.length - this.head > 2 * this.live + 1024) {
      // One old call at the front would otherwise hold every entry served after it.
      this.arrivals = a.slice(this.head).filter((x) => !x.gone);
      this.head = 0;
    }
  }
}
