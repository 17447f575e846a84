/**
 * The table's sequential specification, for the linearizability checker (`checkPartition` in
 * linearizability.ts): one partition per row (a row is one PaxosKV key, and rows are independent).
 * A row has columns and a version (0n: never written); every write that takes effect adds one to
 * the version (PaxosKV's versions are the key's log index), and a conditional write applies only
 * at its expected version, failing otherwise with the row's version.
 */
import { compareColumns } from '../../services/table/row.js';
import type { PartitionModel } from './linearizability.js';

/** A row operation's input; values are text. */
export type TableInput =
  | { kind: 'get'; column: string }
  | { kind: 'scan'; fromColumn: string; limit: number }
  | { kind: 'update'; set: Array<[string, string]>; delete: string[]; ifVersion?: bigint };

/** A row operation's output (`unknown` for an unknown outcome). */
export type TableOutput =
  | { kind: 'get'; value: string | null; version: bigint }
  | { kind: 'scan'; cells: Array<[string, string]>; version: bigint; more: boolean }
  | { kind: 'written'; version: bigint }
  | { kind: 'mismatch'; version: bigint }
  | { kind: 'unknown' };

/** A row: its version and its columns. */
export interface RowState {
  readonly version: bigint;
  readonly cells: ReadonlyMap<string, string>;
}


/** The table row's sequential specification. */
export const tableRowModel: PartitionModel<RowState, TableInput, TableOutput> = {
  init: () => ({ version: 0n, cells: new Map() }),
  step(s, input, output) {
    if (input.kind === 'update') {
      const holds = input.ifVersion === undefined || input.ifVersion === s.version;
      const cells = new Map(s.cells);
      for (const [c, v] of input.set) cells.set(c, v);
      for (const c of input.delete) cells.delete(c);
      const after: RowState = holds ? { version: s.version + 1n, cells } : s;
      if (output.kind === 'unknown') return { ok: true, state: after };
      if (output.kind === 'mismatch') return { ok: !holds && output.version === s.version, state: s };
      return { ok: holds && output.kind === 'written' && output.version === s.version + 1n, state: after };
    }
    if (output.kind === 'unknown') return { ok: true, state: s };
    if (input.kind === 'get') return { ok: output.kind === 'get' && output.version === s.version && output.value === (s.cells.get(input.column) ?? null), state: s };
    if (output.kind !== 'scan' || output.version !== s.version) return { ok: false, state: s };
    const from = [...s.cells].filter(([c]) => compareColumns(c, input.fromColumn) >= 0).sort(([a], [b]) => compareColumns(a, b));
    const want = from.slice(0, input.limit);
    const ok = output.more === from.length > input.limit && output.cells.length === want.length && output.cells.every(([c, v], n) => c === want[n]![0] && v === want[n]![1]);
    return { ok, state: s };
  },
  key: (s) => `${s.version}|${[...s.cells].sort(([a], [b]) => compareColumns(a, b)).map(([c, v]) => `${c}=${v}`).join('\u0000')}`,
  readOnly: (input, output) => input.kind !== 'update' || output.kind === 'mismatch',
  progress: {
    of: (s) => s.version,
    bound: (input, output, unknown) => {
      if (unknown) return input.kind === 'update' && input.ifVersion !== undefined ? input.ifVersion : undefined;
      if (output.kind === 'get' || output.kind === 'scan' || output.kind === 'mismatch') return output.version;
      if (output.kind === 'written') return output.version - 1n;
      return undefined;
    },
  },
};
