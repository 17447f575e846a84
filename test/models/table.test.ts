/**
 * The table (services/table) through its public class, on a three-replica PaxosKV cluster in this
 * process over loopback sockets: columns and versions, conditional writes, scans, atomic
 * multi-column changes, no lost update under concurrent read-modify-write, bad input and damaged rows.
 */
import { describe, expect, it } from 'vitest';
import { Status } from '../../index.js';
import { PaxosTable } from '../../services/table/table.js';
import { useInProcessCluster } from '../support/kv-cluster.js';
import { rpcFailure } from '../support/rpc-failure.js';

const text = (s: string) => new TextEncoder().encode(s);
const str = (b: Uint8Array | null) => (b === null ? null : new TextDecoder().decode(b));
const file = useInProcessCluster('table');

describe('PaxosTable', () => {
  it('reads and writes columns of a row, each write a new row version', async () => {
    const t = new PaxosTable(file.kv);
    expect(await t.get('users', 'ada', 'name')).toEqual({ value: null, version: 0n });
    expect(await t.put('users', 'ada', 'name', text('Ada'))).toBe(1n);
    expect(await t.put('users', 'ada', 'lang', text('en'))).toBe(2n);
    const got = await t.get('users', 'ada', 'name');
    expect([str(got.value), got.version]).toEqual(['Ada', 2n]);
    const row = await t.getRow('users', 'ada');
    expect(row.columns.map((c) => [c.column, str(c.value)])).toEqual([['lang', 'en'], ['name', 'Ada']]);
    expect(row.version).toBe(2n);
    // A deleted column is gone; the row stays, with a new version.
    expect(await t.delete('users', 'ada', 'lang')).toBe(3n);
    expect((await t.getRow('users', 'ada')).columns.map((c) => c.column)).toEqual(['name']);
    expect(await t.delete('users', 'ada', 'name')).toBe(4n);
    expect(await t.getRow('users', 'ada')).toEqual({ columns: [], version: 4n });
    // Rows of one table and of different tables are apart.
    expect((await t.getRow('users', 'bob')).version).toBe(0n);
    expect((await t.getRow('groups', 'ada')).version).toBe(0n);
  });

  it('applies a conditional write only at the row version it names', async () => {
    const t = new PaxosTable(file.kv);
    const v = await t.put('cond', 'r', 'a', text('1'), { ifVersion: 0n });
    expect(v).toBe(1n);
    const err = await rpcFailure(t.put('cond', 'r', 'a', text('2'), { ifVersion: 0n }));
    expect(err.code).toBe(Status.FAILED_PRECONDITION);
    expect(err.reason).toBe('ROW_VERSION_MISMATCH');
    expect(err.metadata['x-version']).toBe('1');
    expect(await t.put('cond', 'r', 'b', text('2'), { ifVersion: 1n })).toBe(2n);
    expect(str((await t.get('cond', 'r', 'a')).value)).toBe('1');
  });

  it('changes several columns at once, and scans a row in column order with limits', async () => {
    const t = new PaxosTable(file.kv);
    await t.update('scan', 'r', { set: [['c', text('3')], ['a', text('1')], ['b', text('2')], ['é', text('5')], ['d', text('4')]] });
    const v = await t.update('scan', 'r', { set: [['e', text('e')]], delete: ['d'] });
    expect(v).toBe(2n);
    const all = await t.scan('scan', 'r');
    expect(all.columns.map((c) => c.column)).toEqual(['a', 'b', 'c', 'e', 'é']); // UTF-8 byte order
    expect(all).toMatchObject({ version: 2n, more: false });
    const page = await t.scan('scan', 'r', { fromColumn: 'b', limit: 2 });
    expect(page.columns.map((c) => [c.column, str(c.value)])).toEqual([['b', '2'], ['c', '3']]);
    expect(page.more).toBe(true);
    const next = await t.scan('scan', 'r', { fromColumn: 'c\u0000', limit: 2 });
    expect(next.columns.map((c) => c.column)).toEqual(['e', 'é']);
    expect(next.more).toBe(false);
  });

  it('loses no update when two clients read-modify-write one row at once', async () => {
    const a = new PaxosTable(file.kv);
    const b = new PaxosTable(file.kv2);
    const increment = async (t: PaxosTable) => {
      for (;;) {
        const { value, version } = await t.get('counters', 'c', 'n');
        const n = value === null ? 0 : Number(str(value));
        try {
          return await t.put('counters', 'c', 'n', text(String(n + 1)), { ifVersion: version });
        } catch (err) {
          if ((err as { reason?: string }).reason !== 'ROW_VERSION_MISMATCH') throw err;
        }
      }
    };
    await Promise.all(Array.from({ length: 30 }, (_, i) => increment(i % 2 === 0 ? a : b)));
    expect(str((await a.get('counters', 'c', 'n')).value)).toBe('30');
  }, 60_000);

  it('refuses bad input with INVALID_ARGUMENT, naming what is wrong', async () => {
    const t = new PaxosTable(file.kv);
    const cases: Array<[() => Promise<unknown>, RegExp]> = [
      [() => t.get('', 'r', 'c'), /table name/],
      [() => t.get('a/b', 'r', 'c'), /without '\/'/],
      [() => t.get('t', '', 'c'), /row key/],
      [() => t.get('t', 'r', ''), /column key/],
      [() => t.put('t', 'r', 'c', 'x' as unknown as Uint8Array), /must be bytes/],
      [() => t.put('t', 'r', 'c', text('x'), { ifVersion: -1n }), /ifVersion/],
      [() => t.scan('t', 'r', { limit: 0 }), /limit/],
      [() => t.put('t', 'big', 'c', new Uint8Array(1024 * 1024)), /over the/],
    ];
    for (const [call, message] of cases) {
      const err = await rpcFailure(call());
      expect(err.code).toBe(Status.INVALID_ARGUMENT);
      expect(err.message).toMatch(message);
    }
  });

  it('reports a damaged row as DATA_LOSS, and the cluster serves on', async () => {
    const t = new PaxosTable(file.kv);
    await file.kv.put('table/bad/r', text('garbage'));
    const err = await rpcFailure(t.getRow('bad', 'r'));
    expect(err.code).toBe(Status.DATA_LOSS);
    expect(err.reason).toBe('ROW_RECORD_MALFORMED');
    expect((await rpcFailure(t.put('bad', 'r', 'c', text('x')))).code).toBe(Status.DATA_LOSS);
    expect(await t.put('bad', 'other', 'c', text('x'))).toBe(1n);
  });
});
