/**
 * How a table lies in PaxosKV: one key per row, `<prefix><table>/<row>`, whose value holds every
 * column of the row (msgpackr). A row is therefore read and written atomically, and its version is
 * the key's PaxosKV version (0n: never written). A row whose last column is deleted stays, empty,
 * so its version keeps growing and a conditional write on it stays meaningful.
 */
import { pack, unpack } from 'msgpackr';
import { tableErrors } from './errors.js';

/** Largest row record (bytes): PaxosKV's largest value. */
export const MAX_ROW_BYTES = 1024 * 1024;
/** Longest table name (UTF-8 bytes). */
export const MAX_TABLE_NAME_BYTES = 256;
/** Longest row key (UTF-8 bytes), so that the key stays under PaxosKV's 1 KiB. */
export const MAX_ROW_KEY_BYTES = 512;
/** Longest column key (UTF-8 bytes). */
export const MAX_COLUMN_KEY_BYTES = 1024;

/** One column of a row. */
export interface Cell {
  readonly column: string;
  readonly value: Uint8Array;
}

/** A row's record: its columns in column order (UTF-8 byte order), and the id of the write that made it. */
export interface RowRecord {
  readonly cells: readonly Cell[];
  /** The id of the write that produced this record (tells a write whose outcome was lost whether it took effect). */
  readonly writeId: string;
}

/** The empty row (never written). */
export const EMPTY_ROW: RowRecord = Object.freeze({ cells: Object.freeze([]), writeId: '' });

/** The key of row `row` of table `table`. */
export function rowKey(prefix: string, table: string, row: string): string {
  return `${prefix}${table}/${row}`;
}

/** Orders column keys by their UTF-8 bytes (as PaxosKV orders keys). */
export function compareColumns(a: string, b: string): number {
  return a === b ? 0 : Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** Encodes a row's record. */
export function encodeRow(r: RowRecord): Uint8Array {
  return pack({ v: 1, c: r.cells.map((c) => [c.column, c.value]), w: r.writeId });
}

/**
 * Decodes a row's record.
 * @param key - the key it was read from (for the error).
 * @throws RpcError DATA_LOSS (`ROW_RECORD_MALFORMED`) when the bytes are not a row record.
 */
export function decodeRow(key: string, bytes: Uint8Array): RowRecord {
  let raw: unknown;
  try {
    raw = unpack(bytes);
  } catch (err) {
    throw tableErrors.ROW_RECORD_MALFORMED(key, `not msgpack (${(err as Error).message})`);
  }
  const bad = (why: string) => tableErrors.ROW_RECORD_MALFORMED(key, why);
  if (typeof raw !== 'object' || raw === null || (raw as { v?: unknown }).v !== 1) throw bad('not a version 1 row record');
  const r = raw as { c?: unknown; w?: unknown };
  if (!Array.isArray(r.c) || typeof r.w !== 'string') throw bad('no column list or write id');
  const cells = r.c.map((c: unknown, n: number): Cell => {
    if (!Array.isArray(c) || c.length !== 2 || typeof c[0] !== 'string' || !(c[1] instanceof Uint8Array)) throw bad(`column ${n} is not [column key, bytes]`);
    return { column: c[0], value: c[1] };
  });
  return { cells, writeId: r.w };
}
