/**
 * The table's operations as plans (services/paxoskv/plan.ts). Pure: no I/O, no clock, no
 * randomness (a write's id comes in as an argument).
 *
 * Every operation touches one row, one key: a read is one linearizable get; a write reads the row,
 * applies its change and writes it back with a compare-and-set on the version it read, again after
 * a conflict. So each operation takes effect at one single-key step, and the table is linearizable
 * per row (and, rows being independent objects, as a whole: linearizability is local).
 *
 * A compare-and-set whose outcome was lost on the way (PaxosKV's `CAS_OUTCOME_UNKNOWN`) is
 * resolved by reading the row again: the record carries the id of the write that made it. If the
 * row holds another write's id, the lost attempt did not take effect and never will: a lost
 * attempt that was chosen is recognised by PaxosKV's write sessions and reported as written, and
 * one that was not cannot be chosen later, since the row's version moved past the one it expected.
 */
import type { KvPlan } from '../paxoskv/plan.js';
import { tableErrors } from './errors.js';
import { compareColumns, decodeRow, EMPTY_ROW, encodeRow, MAX_ROW_BYTES, rowKey, type Cell, type RowRecord } from './row.js';

/** Where a row is. */
export interface RowAddress {
  readonly prefix: string;
  readonly table: string;
  readonly row: string;
}

/** A row as read: its version (0n: never written) and record. */
export interface RowState {
  readonly version: bigint;
  readonly record: RowRecord;
}

/** A change to one row: columns to set, then columns to delete. */
export interface RowChange {
  readonly set?: ReadonlyArray<readonly [column: string, value: Uint8Array]>;
  readonly delete?: readonly string[];
}

/**
 * Reads a row.
 * @returns its version (0n: never written) and record (empty when never written).
 * @throws RpcError DATA_LOSS (`ROW_RECORD_MALFORMED`) when the stored record does not decode.
 */
export function* readRow(at: RowAddress): KvPlan<RowState> {
  const key = rowKey(at.prefix, at.table, at.row);
  const r = yield { kind: 'get', key };
  if (r.kind !== 'value') throw new TypeError(`a get of ${key} was answered with ${r.kind}`);
  return { version: r.version, record: r.value === null ? EMPTY_ROW : decodeRow(key, r.value) };
}

/** `cells` with `change` applied, in column order. */
export function applyChange(cells: readonly Cell[], change: RowChange): Cell[] {
  const byColumn = new Map(cells.map((c) => [c.column, c.value]));
  for (const [column, value] of change.set ?? []) byColumn.set(column, value);
  for (const column of change.delete ?? []) byColumn.delete(column);
  return [...byColumn].map(([column, value]) => ({ column, value })).sort((a, b) => compareColumns(a.column, b.column));
}

/**
 * Changes one row atomically.
 * @param change - the columns to set and to delete.
 * @param writeId - a fresh unique id for this write.
 * @param ifVersion - apply only if the row is at this version (0n: never written); undefined: always.
 * @returns the row's new version.
 * @throws RpcError FAILED_PRECONDITION (`ROW_VERSION_MISMATCH`) when the row is not at `ifVersion`;
 *   INVALID_ARGUMENT (`ROW_TOO_LARGE`) when the row would exceed 1 MiB; DATA_LOSS
 *   (`ROW_RECORD_MALFORMED`) for a record that does not decode.
 */
export function* updatePlan(at: RowAddress, change: RowChange, writeId: string, ifVersion?: bigint): KvPlan<bigint> {
  const key = rowKey(at.prefix, at.table, at.row);
  let row = yield* readRow(at);
  for (;;) {
    if (row.record.writeId === writeId) return row.version; // our attempt whose outcome was lost
    if (ifVersion !== undefined && row.version !== ifVersion) {
      throw tableErrors.ROW_VERSION_MISMATCH.with({ metadata: { 'x-version': String(row.version) } }, at.row, ifVersion, row.version);
    }
    const value = encodeRow({ cells: applyChange(row.record.cells, change), writeId });
    if (value.length > MAX_ROW_BYTES) throw tableErrors.ROW_TOO_LARGE(at.row, value.length, MAX_ROW_BYTES);
    const r = yield { kind: 'cas', key, expectedVersion: row.version, value };
    if (r.kind === 'written') return r.version;
    if (r.kind !== 'conflict') throw new TypeError(`a compare-and-set of ${key} was answered with ${r.kind}`);
    row = yield* readRow(at);
  }
}

/** What a scan returned. */
export interface ScanOutcome {
  /** Columns from `fromColumn` on, in column order, at most the limit. */
  readonly cells: Cell[];
  /** The row's version. */
  readonly version: bigint;
  /** Whether more columns follow (scan again from the last column's successor). */
  readonly more: boolean;
}

/**
 * Reads the columns of a row from `fromColumn` (inclusive; "" from the first), at most `limit`.
 * @throws RpcError DATA_LOSS (`ROW_RECORD_MALFORMED`) for a record that does not decode.
 */
export function* scanPlan(at: RowAddress, fromColumn: string, limit: number): KvPlan<ScanOutcome> {
  const row = yield* readRow(at);
  const from = row.record.cells.filter((c) => compareColumns(c.column, fromColumn) >= 0);
  return { cells: from.slice(0, limit), version: row.version, more: from.length > limit };
}
