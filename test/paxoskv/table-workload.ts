/**
 * The table's operations as a simulator workload (simulator.ts `SimWorkload`): simulated clients
 * get, scan and update (some conditionally, on the version they last saw) a few rows through the
 * production plans (services/table/table-plan.ts). The recorded history is checked against the
 * table's specification (test/support/table-model.ts), one row at a time.
 */
import { RpcError } from '../../framework/index.js';
import { tableErrors } from '../../services/table/errors.js';
import { applyChange, readRow, scanPlan, updatePlan, type RowAddress, type RowChange, type ScanOutcome, type RowState as PlanRowState } from '../../services/table/table-plan.js';
import { encodeRow, rowKey } from '../../services/table/row.js';
import { checkPartition, type PartitionOperation } from '../support/linearizability.js';
import { tableRowModel, type TableInput, type TableOutput } from '../support/table-model.js';
import type { KvPlan } from '../../services/paxoskv/plan.js';
import type { PlanOutcome, SimWorkload } from './simulator.js';

const COLUMNS = ['a', 'b', 'c', 'd', 'e'];
const text = (b: Uint8Array) => new TextDecoder().decode(b);

/** Statistics of a table workload run. */
export interface TableWorkloadStats {
  reads: number;
  writes: number;
  conditional: number;
  mismatches: number;
  unknown: number;
}

/** A table workload for one run. */
export class TableWorkload implements SimWorkload {
  readonly history: Array<PartitionOperation<TableInput, TableOutput> & { row: number; client: number }> = [];
  /** Plans that threw something unexpected: each is a bug. */
  readonly problems: string[] = [];
  readonly stats: TableWorkloadStats = { reads: 0, writes: 0, conditional: 0, mismatches: 0, unknown: 0 };
  /** The version each client last saw of each row. */
  private readonly seen = new Map<string, bigint>();
  private writes = 0;

  /**
   * @param seed - the run's seed (in values, so values differ across runs).
   * @param rows - how many rows the clients share.
   */
  constructor(
    private readonly seed: number,
    private readonly rows: number,
    /** For the mutation test: `lost-update` reports a write that lost its compare-and-set as written. */
    private readonly plantedBug?: 'lost-update',
  ) {}

  /** Writes under way: a run can end before they do, and their effects may show (see {@link check}). */
  private readonly open = new Set<{ row: number; client: number; input: TableInput; call: number }>();

  next(client: number, rand: () => number, now: number): { plan: KvPlan<unknown>; end(outcome: PlanOutcome, now: number): void } {
    const op = this.start(client, rand, now);
    if (op.write === undefined) return op;
    const entry = { ...op.write, client, call: now };
    this.open.add(entry);
    return {
      plan: op.plan,
      end: (o, t) => {
        this.open.delete(entry);
        op.end(o, t);
      },
    };
  }

  /** The next operation, and the write it makes if it is one. */
  private start(client: number, rand: () => number, now: number): { plan: KvPlan<unknown>; end(outcome: PlanOutcome, now: number): void; write?: { row: number; input: TableInput } } {
    const row = Math.floor(rand() * this.rows);
    const at: RowAddress = { prefix: 't/', table: 'sim', row: `row${row}` };
    const seenKey = `${client}/${row}`;
    const record = (input: TableInput, output: TableOutput, returned: number) => {
      this.history.push({ row, client, input, output, call: now, return: output.kind === 'unknown' ? Infinity : returned, unknown: output.kind === 'unknown' });
      if (output.kind !== 'unknown') this.seen.set(seenKey, output.version);
    };
    const unexpected = (what: string, error: unknown) => this.problems.push(`client ${client} ${what}: ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`);
    const column = () => COLUMNS[Math.floor(rand() * COLUMNS.length)]!;
    const roll = rand();
    if (roll < 0.25) {
      this.stats.reads++;
      const c = column();
      const input: TableInput = { kind: 'get', column: c };
      return {
        plan: readRow(at),
        end: (o, t) => {
          if (o.kind === 'returned') {
            const r = o.value as PlanRowState;
            const cell = r.record.cells.find((x) => x.column === c);
            record(input, { kind: 'get', value: cell === undefined ? null : text(cell.value), version: r.version }, t);
          } else if (o.kind === 'threw') unexpected('get threw', o.error);
        },
      };
    }
    if (roll < 0.4) {
      this.stats.reads++;
      const fromColumn = rand() < 0.3 ? '' : column();
      const limit = 1 + Math.floor(rand() * 4);
      const input: TableInput = { kind: 'scan', fromColumn, limit };
      return {
        plan: scanPlan(at, fromColumn, limit),
        end: (o, t) => {
          if (o.kind === 'returned') {
            const r = o.value as ScanOutcome;
            record(input, { kind: 'scan', cells: r.cells.map((x) => [x.column, text(x.value)]), version: r.version, more: r.more }, t);
          } else if (o.kind === 'threw') unexpected('scan threw', o.error);
        },
      };
    }
    this.stats.writes++;
    const id = `c${client}-w${this.writes++}-s${this.seed}`;
    const set: Array<[string, string]> = [];
    const del: string[] = [];
    const kind = rand();
    if (kind < 0.5) set.push([column(), id]);
    else if (kind < 0.75) del.push(column());
    else {
      set.push([column(), id], [column(), `${id}'`]);
      del.push(column());
    }
    const conditional = rand() < 0.35;
    const ifVersion = conditional ? (this.seen.get(seenKey) ?? 0n) : undefined;
    if (conditional) this.stats.conditional++;
    const input: TableInput = { kind: 'update', set, delete: del, ...(ifVersion === undefined ? {} : { ifVersion }) };
    const change = { set: set.map(([c, v]) => [c, new TextEncoder().encode(v)] as const), delete: del };
    return {
      write: { row, input },
      plan: this.plantedBug === 'lost-update' ? lostUpdatePlan(at, change, id, ifVersion) : updatePlan(at, change, id, ifVersion),
      end: (o, t) => {
        if (o.kind === 'returned') return record(input, { kind: 'written', version: o.value as bigint }, t);
        if (o.kind === 'unknown') {
          this.stats.unknown++;
          return record(input, { kind: 'unknown' }, t);
        }
        const e = o.error;
        if (e instanceof RpcError && e.reason === tableErrors.ROW_VERSION_MISMATCH.reason) {
          this.stats.mismatches++;
          return record(input, { kind: 'mismatch', version: BigInt(e.metadata['x-version'] as string) }, t);
        }
        unexpected('update threw', e);
      },
    };
  }

  /** Checks each row's history against the specification. @returns what is wrong, or undefined. */
  check(): string | undefined {
    if (this.problems.length > 0) return this.problems.slice(0, 3).join('; ');
    // Writes still under way when the run ended: their outcomes are unknown.
    for (const e of this.open) this.history.push({ row: e.row, client: e.client, input: e.input, output: { kind: 'unknown' }, call: e.call, return: Infinity, unknown: true });
    this.open.clear();
    for (let row = 0; row < this.rows; row++) {
      const ops = this.history.filter((o) => o.row === row);
      const r = checkPartition(ops, tableRowModel);
      if (r.verdict !== 'linearizable') {
        const prefix = (r.longestPrefix ?? []).map((i) => describe(ops[i]!)).slice(-8);
        return `row ${row}: history ${r.verdict} (${ops.length} operations); longest linearizable prefix ends: ${prefix.join(' | ')}`;
      }
    }
    return undefined;
  }
}

/** `updatePlan` with a planted bug: a conflict is taken for success at the version it expected plus one. */
function* lostUpdatePlan(at: RowAddress, change: RowChange, writeId: string, ifVersion?: bigint): KvPlan<bigint> {
  const row = yield* readRow(at);
  if (ifVersion !== undefined && row.version !== ifVersion) throw tableErrors.ROW_VERSION_MISMATCH.with({ metadata: { 'x-version': String(row.version) } }, at.row, ifVersion, row.version);
  const value = encodeRow({ cells: applyChange(row.record.cells, change), writeId });
  const r = yield { kind: 'cas', key: rowKey(at.prefix, at.table, at.row), expectedVersion: row.version, value };
  return r.kind === 'written' ? r.version : row.version + 1n;
}

function describe(op: PartitionOperation<TableInput, TableOutput> & { client: number }): string {
  const i = op.input;
  const o = op.output;
  const input =
    i.kind === 'get' ? `get ${i.column}` : i.kind === 'scan' ? `scan from ${JSON.stringify(i.fromColumn)} limit ${i.limit}` : `update set ${JSON.stringify(i.set)} delete ${i.delete.join(',')}${i.ifVersion === undefined ? '' : ` if v${i.ifVersion}`}`;
  const output = o.kind === 'unknown' ? 'unknown' : o.kind === 'get' ? `${o.value} v${o.version}` : o.kind === 'scan' ? `${JSON.stringify(o.cells)} v${o.version}${o.more ? ' more' : ''}` : `${o.kind} v${o.version}`;
  return `c${op.client} ${input} -> ${output} @${op.call.toFixed(1)}-${op.return.toFixed(1)}`;
}
