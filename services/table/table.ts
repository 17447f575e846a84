/**
 * PaxosStore's two-dimensional table on PaxosKV: row key and column key to value. Each row is one
 * PaxosKV key (row.ts), so a row is read and written atomically and has a version; the operations
 * run as plans (table-plan.ts) through `runPlan`.
 */
import { randomUUID } from 'node:crypto';
import type { CallOptions } from '../../framework/index.js';
import type { PaxosKVClient } from '../paxoskv/client.js';
import { runPlan } from '../paxoskv/run-plan.js';
import { tableErrors } from './errors.js';
import { MAX_COLUMN_KEY_BYTES, MAX_ROW_KEY_BYTES, MAX_TABLE_NAME_BYTES } from './row.js';
import { readRow, scanPlan, updatePlan, type RowAddress, type RowChange } from './table-plan.js';

/** Largest `limit` of one scan. */
export const MAX_SCAN_LIMIT = 10_000;

/** Options of a write. */
export interface WriteOptions extends CallOptions {
  /** Apply only if the row is at this version (0n: never written); otherwise fail with FAILED_PRECONDITION. */
  ifVersion?: bigint;
}

/** A row: its columns in column order (UTF-8 byte order) and its version (0n: never written). */
export interface Row {
  readonly columns: Array<{ readonly column: string; readonly value: Uint8Array }>;
  readonly version: bigint;
}

/**
 * Tables on a PaxosKV cluster.
 *
 * @example
 * const groups = new PaxosTable(new PaxosKVClient({ peers }));
 * const v = await groups.put('groups', 'g1', 'member:ada', new Uint8Array());
 * await groups.put('groups', 'g1', 'member:bob', new Uint8Array(), { ifVersion: v });
 * const { columns } = await groups.scan('groups', 'g1', { fromColumn: 'member:' });
 */
export class PaxosTable {
  private readonly prefix: string;

  /**
   * @param kv - the cluster's client (shared; not closed by the table).
   * @param options - `prefix`: the key prefix of every table (default `table/`): row `r` of table
   *   `t` is the key `<prefix>t/r`.
   * @throws RpcError INVALID_ARGUMENT for a bad prefix.
   */
  constructor(
    private readonly kv: PaxosKVClient,
    options: { prefix?: string } = {},
  ) {
    this.prefix = options.prefix ?? 'table/';
    if (this.prefix === '' || this.prefix.startsWith('\u0000')) throw tableErrors.INVALID_TABLE_REQUEST('prefix must be non-empty and must not start with NUL');
  }

  /**
   * Reads one column.
   * @returns the value (null when the column is absent) and the row's version.
   * @throws RpcError INVALID_ARGUMENT for a bad name or key; UNAVAILABLE or DEADLINE_EXCEEDED
   *   when PaxosKV did not answer in time; DATA_LOSS for a damaged row.
   */
  async get(table: string, row: string, column: string, options: CallOptions = {}): Promise<{ value: Uint8Array | null; version: bigint }> {
    checkColumn(column);
    const r = await runPlan(readRow(this.address(table, row)), this.kv, options);
    return { value: r.record.cells.find((c) => c.column === column)?.value ?? null, version: r.version };
  }

  /**
   * Reads a whole row.
   * @throws RpcError as {@link PaxosTable.get}.
   */
  async getRow(table: string, row: string, options: CallOptions = {}): Promise<Row> {
    const r = await runPlan(readRow(this.address(table, row)), this.kv, options);
    return { columns: r.record.cells.map((c) => ({ column: c.column, value: c.value })), version: r.version };
  }

  /**
   * Reads the columns of a row from `fromColumn` (inclusive), in column order.
   * @param options - `fromColumn` (default "": the first), `limit` (1..10000, default 1000).
   * @returns the columns, the row's version and whether more follow (scan again from the
   *   successor of the last column, e.g. `last + '\0'`).
   * @throws RpcError as {@link PaxosTable.get}.
   */
  async scan(table: string, row: string, options: CallOptions & { fromColumn?: string; limit?: number } = {}): Promise<Row & { more: boolean }> {
    const { fromColumn = '', limit = 1000, ...call } = options;
    if (typeof fromColumn !== 'string') throw tableErrors.INVALID_TABLE_REQUEST('fromColumn must be a string');
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_SCAN_LIMIT) throw tableErrors.INVALID_TABLE_REQUEST(`limit must be an integer from 1 to ${MAX_SCAN_LIMIT}, not ${limit}`);
    const r = await runPlan(scanPlan(this.address(table, row), fromColumn, limit), this.kv, call);
    return { columns: r.cells.map((c) => ({ column: c.column, value: c.value })), version: r.version, more: r.more };
  }

  /**
   * Writes one column (conditionally with `ifVersion`).
   * @returns the row's new version.
   * @throws RpcError FAILED_PRECONDITION (`ROW_VERSION_MISMATCH`, metadata `x-version`) when the
   *   row is not at `ifVersion`; INVALID_ARGUMENT for a bad name or key, or a row over 1 MiB;
   *   UNAVAILABLE or DEADLINE_EXCEEDED when PaxosKV did not answer in time (the write may or may
   *   not have happened); DATA_LOSS for a damaged row.
   */
  async put(table: string, row: string, column: string, value: Uint8Array, options: WriteOptions = {}): Promise<bigint> {
    checkColumn(column);
    if (!(value instanceof Uint8Array)) throw tableErrors.INVALID_TABLE_REQUEST('a value must be bytes (a Uint8Array)');
    return this.update(table, row, { set: [[column, value]] }, options);
  }

  /**
   * Deletes one column (the row stays, perhaps empty, with a new version).
   * @returns the row's new version.
   * @throws RpcError as {@link PaxosTable.put}.
   */
  async delete(table: string, row: string, column: string, options: WriteOptions = {}): Promise<bigint> {
    checkColumn(column);
    return this.update(table, row, { delete: [column] }, options);
  }

  /**
   * Changes several columns of one row atomically: sets `change.set`, then deletes `change.delete`.
   * @returns the row's new version.
   * @throws RpcError as {@link PaxosTable.put}.
   */
  async update(table: string, row: string, change: RowChange, options: WriteOptions = {}): Promise<bigint> {
    const { ifVersion, ...call } = options;
    for (const [column, value] of change.set ?? []) {
      checkColumn(column);
      if (!(value instanceof Uint8Array)) throw tableErrors.INVALID_TABLE_REQUEST(`the value of column ${JSON.stringify(column)} must be bytes (a Uint8Array)`);
    }
    for (const column of change.delete ?? []) checkColumn(column);
    if (ifVersion !== undefined && (typeof ifVersion !== 'bigint' || ifVersion < 0n)) throw tableErrors.INVALID_TABLE_REQUEST('ifVersion must be a bigint >= 0n');
    return runPlan(updatePlan(this.address(table, row), change, randomUUID(), ifVersion), this.kv, call);
  }

  private address(table: string, row: string): RowAddress {
    if (typeof table !== 'string' || table === '' || table.includes('/') || Buffer.byteLength(table) > MAX_TABLE_NAME_BYTES) {
      throw tableErrors.INVALID_TABLE_REQUEST(`a table name must be 1..${MAX_TABLE_NAME_BYTES} bytes without '/'`);
    }
    if (typeof row !== 'string' || row === '' || Buffer.byteLength(row) > MAX_ROW_KEY_BYTES) throw tableErrors.INVALID_TABLE_REQUEST(`a row key must be 1..${MAX_ROW_KEY_BYTES} bytes`);
    return { prefix: this.prefix, table, row };
  }
}

function checkColumn(column: string): void {
  if (typeof column !== 'string' || column === '' || Buffer.byteLength(column) > MAX_COLUMN_KEY_BYTES) {
    throw tableErrors.INVALID_TABLE_REQUEST(`a column key must be 1..${MAX_COLUMN_KEY_BYTES} bytes`);
  }
}
