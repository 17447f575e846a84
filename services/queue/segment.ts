/**
 * How a queue lies in PaxosKV: its items in fixed-size segments, one key per segment, and the
 * codec of a segment's record (msgpackr).
 *
 * Segment `s` of queue `q` is the key `<prefix><q>/<s>` and holds the items with sequence numbers
 * `s * SEGMENT_ITEMS + 1` .. `(s + 1) * SEGMENT_ITEMS` (64 items a segment), in order: an item's sequence number is
 * its segment and its place in it, never stored. A segment is one of:
 *  - absent (never written): it and every later segment are empty;
 *  - items: fewer than `SEGMENT_ITEMS` (the tail, where pushes go) or exactly that many (full: no
 *    push changes it again); the tail also holds the queue's trim point (`trimmedUpto`: items up to
 *    it are gone) and the first segment no trim has emptied yet (`freedBelow`);
 *  - a tombstone: a full segment whose items a trim dropped, keeping the trim point it saw.
 * Keys are never deleted, so a compare-and-set from version 0 (absent) can only create a segment
 * that was never written: a sequence number is never given twice.
 */
import { pack, unpack } from 'msgpackr';
import { queueErrors } from './errors.js';

/**
 * Items per segment. Part of the stored format: every client of a queue must agree on it (the
 * plans take it as an argument so that tests can make segments small).
 */
export const SEGMENT_ITEMS = 64;
/** Largest item (bytes): a full segment of the largest items with the longest request ids stays under PaxosKV's 1 MiB. */
export const MAX_ITEM_BYTES = 15 * 1024;
/** Longest request id (UTF-8 bytes). */
export const MAX_REQUEST_ID_BYTES = 128;
/** Longest queue name (UTF-8 bytes), so that its keys stay under PaxosKV's 1 KiB. */
export const MAX_QUEUE_NAME_BYTES = 512;

/** One item as stored: the request id that pushed it and its bytes. */
export interface StoredItem {
  readonly id: string;
  readonly value: Uint8Array;
}

/** A segment that holds items (the tail, or a full one). */
export interface ItemsSegment {
  readonly kind: 'items';
  readonly items: readonly StoredItem[];
  /** The queue's trim point when this segment was last the tail (items up to it are gone). */
  readonly trimmedUpto: number;
  /** Every full segment below this one is a tombstone (as of this segment's last write). */
  readonly freedBelow: number;
}

/** A full segment a trim emptied. */
export interface Tombstone {
  readonly kind: 'tombstone';
  /** The trim point that emptied it (at least its last sequence number). */
  readonly trimmedUpto: number;
}

/** A segment's record. */
export type Segment = ItemsSegment | Tombstone;

/** The record of an empty queue's first segment. */
export const EMPTY_SEGMENT: ItemsSegment = Object.freeze({ kind: 'items', items: Object.freeze([]), trimmedUpto: 0, freedBelow: 0 });

/** The key of segment `segment` of queue `queue`. */
export function segmentKey(prefix: string, queue: string, segment: number): string {
  return `${prefix}${queue}/${segment}`;
}

/** The segment that holds sequence number `seq` (>= 1), with `per` items a segment. */
export function segmentOf(seq: number, per: number): number {
  return Math.floor((seq - 1) / per);
}

/** The sequence number of the item at `index` of segment `segment`, with `per` items a segment. */
export function seqAt(segment: number, index: number, per: number): number {
  return segment * per + index + 1;
}

/** Whether a segment is full (`per` items a segment): no push changes it again (a full items segment, or a tombstone). */
export function isFull(s: Segment, per: number): boolean {
  return s.kind === 'tombstone' || s.items.length >= per;
}

/** Encodes a segment's record. */
export function encodeSegment(s: Segment): Uint8Array {
  if (s.kind === 'tombstone') return pack({ v: 1, x: s.trimmedUpto });
  return pack({ v: 1, i: s.items.map((it) => [it.id, it.value]), t: s.trimmedUpto, f: s.freedBelow });
}

/**
 * Decodes a segment's record.
 * @param key - the key it was read from (for the error).
 * @throws RpcError DATA_LOSS (`QUEUE_RECORD_MALFORMED`) when the bytes are not a segment record.
 */
export function decodeSegment(key: string, bytes: Uint8Array): Segment {
  let raw: unknown;
  try {
    raw = unpack(bytes);
  } catch (err) {
    throw queueErrors.QUEUE_RECORD_MALFORMED(key, `not msgpack (${(err as Error).message})`);
  }
  const bad = (why: string) => queueErrors.QUEUE_RECORD_MALFORMED(key, why);
  if (typeof raw !== 'object' || raw === null || (raw as { v?: unknown }).v !== 1) throw bad('not a version 1 segment record');
  const r = raw as { x?: unknown; i?: unknown; t?: unknown; f?: unknown };
  const count = (v: unknown, name: string): number => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw bad(`${name} is not a count`);
    return v;
  };
  if (r.x !== undefined) return { kind: 'tombstone', trimmedUpto: count(r.x, 'the trim point') };
  if (!Array.isArray(r.i) || r.i.length > SEGMENT_ITEMS) throw bad(`items are not a list of at most ${SEGMENT_ITEMS}`);
  const items = r.i.map((it: unknown, n: number): StoredItem => {
    if (!Array.isArray(it) || it.length !== 2 || typeof it[0] !== 'string' || !(it[1] instanceof Uint8Array)) throw bad(`item ${n} is not [request id, bytes]`);
    return { id: it[0], value: it[1] };
  });
  return { kind: 'items', items, trimmedUpto: count(r.t, 'the trim point'), freedBelow: count(r.f, 'freedBelow') };
}
