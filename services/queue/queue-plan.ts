/**
 * The queue's operations as plans (services/paxoskv/plan.ts): push, read and trim over the
 * segments of segment.ts, each a sequence of linearizable reads and compare-and-sets of single
 * keys. Pure: no I/O, no clock, no randomness (a push's item id comes in as an argument).
 *
 * ## Why it is correct
 * - Each segment only moves forward: absent -> items (growing one item per compare-and-set) ->
 *   full -> tombstone. Keys are never deleted.
 * - A push appends to the tail (the first segment that is not full) with a compare-and-set on the
 *   version it read, so two pushes never take the same place, and its item's sequence number is
 *   its place. A new segment is created only by a compare-and-set from version 0 (never written)
 *   made after reading the segment before it full; so sequence numbers are dense (no segment is
 *   skipped, no place left empty) and never given twice. A push takes effect at its
 *   compare-and-set: pushes are linearizable.
 * - The trim point lives in the tail, so a read, which always reads up to the tail, sees the trim
 *   point and the items of one moment: the moment it read the tail (every segment before the tail
 *   was full when read, and a full segment changes only into a tombstone, after the tail's trim
 *   point covers it). Reads are linearizable too.
 * - A trim never passes the last sequence number it read, so a later push is never hidden by it.
 * - Every item carries an id: the push's request id, or one made for it. A compare-and-set whose
 *   outcome is unknown (an attempt lost on the way) is resolved by reading its segment again and
 *   looking for the id; the lost attempt cannot take effect later, since the segment's version
 *   moved past the one it expected. A push given a request id first looks for the id among the
 *   queue's items (from `since`), so a retry returns the first push's sequence number.
 */
import type { KvPlan, KvStepReply } from '../paxoskv/plan.js';
import { queueErrors } from './errors.js';
import { decodeSegment, EMPTY_SEGMENT, encodeSegment, isFull, segmentKey, segmentOf, seqAt, type ItemsSegment, type Segment } from './segment.js';

/** Where a queue's keys are: `<prefix><queue>/<segment>`. */
export interface QueueAddress {
  readonly prefix: string;
  readonly queue: string;
  /** Items per segment: `SEGMENT_ITEMS` (segment.ts), smaller in tests. */
  readonly per: number;
}

/** A segment as read: its number, version (0n: absent) and record (null: absent). */
export interface SegmentState {
  readonly segment: number;
  readonly version: bigint;
  readonly record: Segment | null;
}

/**
 * The tail as found: the first segment that is not full, its version (0n: absent) and the
 * record a push or trim starts from (for an absent tail, an empty one carrying the trim point and
 * `freedBelow` of the full segment before it).
 */
export interface TailState {
  readonly segment: number;
  readonly version: bigint;
  readonly base: ItemsSegment;
}

/**
 * The ids of full segments' items, which never change (a full segment only becomes a tombstone):
 * a cache the caller may keep between pushes so that looking for a request id reads each full
 * segment once. `get` returns undefined for a segment it does not hold.
 */
export interface FullSegmentIds {
  get(segment: number): readonly string[] | undefined;
  set(segment: number, ids: readonly string[]): void;
}

/** What a read returned. */
export interface ReadOutcome {
  /** Items after the asked sequence number and the trim point, in order, at most the limit. */
  readonly items: ReadonlyArray<{ readonly seq: number; readonly value: Uint8Array }>;
  /** The queue's last sequence number (0: nothing was ever pushed). */
  readonly lastSeq: number;
  /** Items up to this sequence number were trimmed. */
  readonly trimmedUpto: number;
  /** The tail as read (a hint for a push). */
  readonly tail: TailState;
}

/**
 * Reads one segment.
 * @throws RpcError DATA_LOSS (`QUEUE_RECORD_MALFORMED`) when its record does not decode.
 */
export function* readSegment(at: QueueAddress, segment: number): KvPlan<SegmentState> {
  const key = segmentKey(at.prefix, at.queue, segment);
  const r = yield { kind: 'get', key };
  if (r.kind !== 'value') throw new TypeError(`a get of ${key} was answered with ${r.kind}`);
  return { segment, version: r.version, record: r.value === null ? null : decodeSegment(key, r.value) };
}

/**
 * Finds the tail: the first segment that is not full. Gallops from `guess` (a segment number, or
 * one already read) upward while segments are full and downward while they are not, then bisects:
 * about 2·log2(distance) reads from a far guess, one or two from a good one. The tail is read after
 * the full segment before it (read again if need be), so the result is the tail of one moment.
 * @throws RpcError DATA_LOSS (`QUEUE_RECORD_MALFORMED`) for a record that does not decode, or a
 *   tombstone with no segment after it (which this code never writes).
 */
export function* locateTail(at: QueueAddress, guess: number | SegmentState): KvPlan<TailState> {
  const full = (s: SegmentState) => s.record !== null && isFull(s.record, at.per);
  let tombstoneRetried = false;
  for (;;) {
    let lo: SegmentState | undefined; // the highest segment known full
    let hi: SegmentState | undefined; // the lowest segment known not full
    let hiReadFirst = false; // hi was read before lo
    const first = typeof guess === 'number' ? yield* readSegment(at, Math.max(0, guess)) : guess;
    if (full(first)) lo = first;
    else hi = first;
    for (let step = 1; hi === undefined; step *= 2) {
      const s: SegmentState = yield* readSegment(at, lo!.segment + step);
      if (full(s)) lo = s;
      else hi = s;
    }
    let top: SegmentState = hi;
    for (let step = 1; lo === undefined && top.segment > 0; step *= 2) {
      const s: SegmentState = yield* readSegment(at, Math.max(0, top.segment - step));
      if (full(s)) {
        lo = s;
        hiReadFirst = true;
      } else top = s;
    }
    while (lo !== undefined && top.segment - lo.segment > 1) {
      const s: SegmentState = yield* readSegment(at, Math.floor((lo.segment + top.segment) / 2));
      if (full(s)) {
        lo = s;
        hiReadFirst = true;
      } else top = s;
    }
    hi = top;
    if (hiReadFirst) {
      // Read the tail again, after the segment before it: it may have filled up meanwhile.
      const again = yield* readSegment(at, hi.segment);
      if (full(again)) {
        guess = again;
        continue;
      }
      hi = again;
    }
    if (hi.record !== null) return { segment: hi.segment, version: hi.version, base: hi.record as ItemsSegment };
    if (hi.segment === 0) return { segment: 0, version: 0n, base: EMPTY_SEGMENT };
    const prev = lo!.record!;
    // A tombstone's successor exists (the trim that made it wrote the tail first): read again,
    // once; still absent, the records were not written by this code.
    if (prev.kind === 'tombstone') {
      if (tombstoneRetried) throw queueErrors.QUEUE_RECORD_MALFORMED(segmentKey(at.prefix, at.queue, lo!.segment), 'a tombstone with no segment after it');
      tombstoneRetried = true;
      guess = hi.segment;
      continue;
    }
    return { segment: hi.segment, version: 0n, base: afterFull(prev) };
  }
}

/** The record an absent segment starts from, after the full segment `prev`. */
function afterFull(prev: ItemsSegment): ItemsSegment {
  return { kind: 'items', items: [], trimmedUpto: prev.trimmedUpto, freedBelow: prev.freedBelow };
}

/**
 * The segment after `from` (whose record is full), skipping tombstones, read one by one: for a
 * push looking for its request id, which must not skip a segment.
 */
function* nextSegment(at: QueueAddress, segment: number, before: ItemsSegment | undefined): KvPlan<TailState> {
  for (let s = segment + 1; ; s++) {
    const st = yield* readSegment(at, s);
    if (st.record === null) {
      // An absent segment follows a full one read just before (a tombstone's successor exists).
      return before === undefined ? yield* locateTail(at, st) : { segment: s, version: 0n, base: afterFull(before) };
    }
    if (st.record.kind === 'items') return { segment: s, version: st.version, base: st.record };
    before = undefined;
  }
}

/** One item of a push. */
export interface PushItem {
  /** The item's bytes (the caller checked the size). */
  readonly value: Uint8Array;
  /** The item's id: the caller's request id, or a fresh unique one. */
  readonly id: string;
  /** Whether `id` is a request id to look for first (the push may be a retry). */
  readonly dedupe: boolean;
  /**
   * With `dedupe`: a sequence number the queue had reached before the first push of this request
   * id began (0: look through the whole queue); the id is looked for after it only.
   */
  readonly since: number;
}

/** What a batch push did, item by item. */
export interface BatchOutcome {
  /** Each item's sequence number. */
  readonly seqs: number[];
  /** Each item's `duplicate` (its request id was already in the queue: nothing was added for it). */
  readonly duplicates: boolean[];
  /** The tail after the push, when known (a hint for the next push). */
  readonly tail?: TailState;
}

/**
 * Pushes several items, in order, as few compare-and-sets as the tail's room allows (one when they
 * fit): the items of one batch take consecutive sequence numbers, except those whose request id
 * was already in the queue (they keep the first push's). Two items of one batch with the same
 * request id are one push.
 * @param at - the queue.
 * @param items - the items (at least one).
 * @param hint - the tail as last seen (tried first without reading it), if any.
 * @param ids - the cache of full segments' ids.
 * @returns each item's sequence number and whether it was already there.
 * @throws RpcError UNKNOWN (`PUSH_OUTCOME_UNKNOWN`) when an attempt's outcome was lost and a trim
 *   has since emptied its segment; DATA_LOSS (`QUEUE_RECORD_MALFORMED`) for a record that does not
 *   decode. Then items the batch placed before are in the queue, the others may or may not be.
 */
export function* pushBatchPlan(at: QueueAddress, items: readonly PushItem[], hint: TailState | undefined, ids: FullSegmentIds): KvPlan<BatchOutcome> {
  const n = items.length;
  const seqs: number[] = new Array(n).fill(0);
  const duplicates: boolean[] = new Array(n).fill(false);
  // Items by id; an id given twice is placed once (the later ones follow the first).
  const first = new Map<string, number>();
  const sameAs: number[] = new Array(n).fill(-1);
  items.forEach((it, i) => {
    const f = first.get(it.id);
    if (f === undefined) first.set(it.id, i);
    else sameAs[i] = f;
  });
  const unplaced = new Set<number>(first.values());
  /** Items whose compare-and-set outcome was lost on the way (they may be in). */
  const ambiguous = new Set<number>();
  const place = (i: number, seq: number, duplicate: boolean) => {
    seqs[i] = seq;
    duplicates[i] = duplicate;
    unplaced.delete(i);
  };
  /**
   * Places the unplaced items `eligible` says may be there whose id is in `segment` (after their
   * `since`), with the `duplicate` flag it gives.
   */
  const found = (segment: number, segmentIds: readonly string[], eligible: (i: number) => boolean, duplicate: (i: number) => boolean) => {
    segmentIds.forEach((id, index) => {
      const i = first.get(id);
      const seq = seqAt(segment, index, at.per);
      // (`since` bounds where an earlier push may be; this batch's own lost attempt can be anywhere.)
      if (i !== undefined && unplaced.has(i) && eligible(i) && (seq > items[i]!.since || ambiguous.has(i))) place(i, seq, duplicate(i));
    });
  };
  const dedupe = items.some((it) => it.dedupe);
  let cur: TailState | undefined;
  if (dedupe) {
    // Look for the request ids in every full segment from the lowest `since` to the hint or the tail.
    const since = Math.min(...items.filter((it) => it.dedupe).map((it) => it.since));
    const wanted = (i: number) => items[i]!.dedupe;
    const yes = () => true;
    for (let s = segmentOf(since + 1, at.per); ; s++) {
      if (hint !== undefined && s >= hint.segment) {
        cur = hint;
        break;
      }
      const cached = ids.get(s);
      if (cached !== undefined) {
        found(s, cached, wanted, yes);
        continue;
      }
      const st: SegmentState = yield* readSegment(at, s);
      if (st.record === null) {
        const tail = yield* locateTail(at, st);
        // The segment was written since it was read (perhaps by an earlier attempt of these very
        // pushes): read it again rather than skip it.
        if (tail.segment > s) {
          s--;
          continue;
        }
        cur = tail;
        break;
      }
      if (st.record.kind === 'tombstone') continue;
      if (!isFull(st.record, at.per)) {
        cur = { segment: s, version: st.version, base: st.record };
        break;
      }
      const segmentIds = st.record.items.map((it) => it.id);
      ids.set(s, segmentIds);
      found(s, segmentIds, wanted, yes);
    }
  }
  cur ??= hint ?? (yield* locateTail(at, segmentOf(Math.min(...items.map((it) => it.since)) + 1, at.per)));
  for (;;) {
    // Our ids here: a request's earlier push (dedupe), or this batch's own lost attempt.
    found(
      cur.segment,
      cur.base.items.map((it) => it.id),
      () => true,
      (i) => items[i]!.dedupe && !ambiguous.has(i),
    );
    if (unplaced.size === 0) break;
    if (cur.base.items.length >= at.per) {
      ids.set(cur.segment, cur.base.items.map((it) => it.id));
      cur = dedupe ? yield* nextSegment(at, cur.segment, cur.base) : yield* locateTail(at, cur.segment + 1);
      continue;
    }
    const batch = [...unplaced].sort((a, b) => a - b).slice(0, at.per - cur.base.items.length);
    const next: ItemsSegment = { ...cur.base, items: [...cur.base.items, ...batch.map((i) => ({ id: items[i]!.id, value: items[i]!.value }))] };
    const key = segmentKey(at.prefix, at.queue, cur.segment);
    const r: KvStepReply = yield { kind: 'cas', key, expectedVersion: cur.version, value: encodeSegment(next) };
    if (r.kind === 'written') {
      batch.forEach((i, k) => place(i, seqAt(cur!.segment, cur!.base.items.length + k, at.per), false));
      cur = { segment: cur.segment, version: r.version, base: next };
      continue;
    }
    if (r.kind !== 'conflict') throw new TypeError(`a compare-and-set of ${key} was answered with ${r.kind}`);
    if (r.unknown) for (const i of batch) ambiguous.add(i);
    // Someone else wrote the segment first (or our lost attempt did): read it again.
    const st: SegmentState = yield* readSegment(at, cur.segment);
    if (st.record === null) throw queueErrors.QUEUE_RECORD_MALFORMED(key, 'a segment that was written reads as absent');
    if (st.record.kind === 'tombstone') {
      if ([...ambiguous].some((i) => unplaced.has(i))) throw queueErrors.PUSH_OUTCOME_UNKNOWN(at.queue);
      cur = dedupe ? yield* nextSegment(at, st.segment, undefined) : yield* locateTail(at, st);
      continue;
    }
    cur = { segment: st.segment, version: st.version, base: st.record };
  }
  for (let i = 0; i < n; i++) {
    const f = sameAs[i]!;
    if (f >= 0) {
      seqs[i] = seqs[f]!;
      duplicates[i] = true;
    }
  }
  return { seqs, duplicates, tail: cur };
}

/**
 * Reads the items after `after`.
 * @param after - the last sequence number the reader has (0: from the first).
 * @param limit - at most this many items (>= 1).
 * @param ids - the cache of full segments' ids (filled as segments are read).
 * @returns the items, the last sequence number and the trim point, all as of one moment.
 * @throws RpcError DATA_LOSS (`QUEUE_RECORD_MALFORMED`) for a record that does not decode.
 */
export function* readPlan(at: QueueAddress, after: number, limit: number, ids?: FullSegmentIds): KvPlan<ReadOutcome> {
  for (;;) {
    const r = yield* readOnce(at, after, limit, ids);
    // Items a trim covered were counted against the limit: read again from the trim point.
    if (r.items.length < limit && r.stoppedAtLimit && r.trimmedUpto > after) {
      after = r.trimmedUpto;
      continue;
    }
    return { items: r.items, lastSeq: r.lastSeq, trimmedUpto: r.trimmedUpto, tail: r.tail };
  }
}

/** One pass of {@link readPlan}: it may return fewer than `limit` items although more follow (`stoppedAtLimit`). */
function* readOnce(at: QueueAddress, after: number, limit: number, ids?: FullSegmentIds): KvPlan<ReadOutcome & { stoppedAtLimit: boolean }> {
  const out: Array<{ seq: number; value: Uint8Array }> = [];
  let s = segmentOf(after + 1, at.per);
  let tail: TailState;
  for (;;) {
    const st = yield* readSegment(at, s);
    const rec = st.record;
    if (rec === null) {
      const found = yield* locateTail(at, st);
      // Past the tail (the reader asked beyond it), or at it and still empty: done. Otherwise the
      // segment was written since it was read: read it again.
      if (found.segment < s || (found.segment === s && found.version === 0n)) {
        tail = found;
        break;
      }
      continue;
    }
    if (rec.kind === 'tombstone') {
      // Trimmed: skip to the segment of the first item not trimmed then.
      s = Math.max(s + 1, segmentOf(rec.trimmedUpto + 1, at.per));
      continue;
    }
    // A segment's trim point was the queue's once, and trim points only grow: skip what it covers.
    const from = Math.max(after, rec.trimmedUpto);
    for (let n = 0; n < rec.items.length && out.length < limit; n++) {
      const seq = seqAt(s, n, at.per);
      if (seq > from) out.push({ seq, value: rec.items[n]!.value });
    }
    if (!isFull(rec, at.per)) {
      tail = { segment: s, version: st.version, base: rec };
      break;
    }
    ids?.set(s, rec.items.map((it) => it.id));
    if (out.length >= limit) {
      // Enough items: the tail still gives the trim point and last sequence number of the moment.
      tail = yield* locateTail(at, s + 1);
      break;
    }
    s++;
  }
  const trimmedUpto = tail.base.trimmedUpto;
  return {
    items: out.filter((it) => it.seq > trimmedUpto),
    lastSeq: tail.segment * at.per + tail.base.items.length,
    trimmedUpto,
    tail,
    stoppedAtLimit: out.length >= limit,
  };
}

/**
 * Trims the queue: items up to `upto` (no further than the last sequence number) are dropped.
 * Moves the tail's trim point first (one compare-and-set), then turns the full segments it covers
 * into tombstones, then records that in the tail.
 * @param upto - drop items with sequence numbers up to this.
 * @param hint - the tail as last seen, if any (a guess where to look).
 * @returns the trim point this trim set, or found already past `upto`: `max(previous trim point,
 *   min(upto, last sequence number))` at the moment it took effect.
 * @throws RpcError DATA_LOSS (`QUEUE_RECORD_MALFORMED`) for a record that does not decode.
 */
export function* trimPlan(at: QueueAddress, upto: number, hint?: TailState): KvPlan<number> {
  let tail = yield* locateTail(at, hint?.segment ?? segmentOf(Math.max(1, upto), at.per));
  let point: number;
  for (;;) {
    const lastSeq = tail.segment * at.per + tail.base.items.length;
    point = Math.max(tail.base.trimmedUpto, Math.min(upto, lastSeq));
    if (point === tail.base.trimmedUpto) break;
    const key = segmentKey(at.prefix, at.queue, tail.segment);
    const r = yield { kind: 'cas', key, expectedVersion: tail.version, value: encodeSegment({ ...tail.base, trimmedUpto: point }) };
    if (r.kind === 'written') break;
    tail = yield* locateTail(at, tail.segment);
  }
  // Segments whose every item is trimmed become tombstones.
  const end = Math.floor(point / at.per);
  for (let s = tail.base.freedBelow; s < end; s++) {
    for (;;) {
      const st: SegmentState = yield* readSegment(at, s);
      if (st.record === null || st.record.kind === 'tombstone' || !isFull(st.record, at.per)) break;
      const r = yield { kind: 'cas', key: segmentKey(at.prefix, at.queue, s), expectedVersion: st.version, value: encodeSegment({ kind: 'tombstone', trimmedUpto: point }) };
      if (r.kind === 'written') break;
    }
  }
  // Record it, so that the next trim starts there.
  for (;;) {
    tail = yield* locateTail(at, tail.segment);
    if (tail.base.freedBelow >= end) break;
    const key = segmentKey(at.prefix, at.queue, tail.segment);
    const r = yield { kind: 'cas', key, expectedVersion: tail.version, value: encodeSegment({ ...tail.base, freedBelow: end }) };
    if (r.kind === 'written') break;
  }
  return point;
}
