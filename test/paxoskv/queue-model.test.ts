/**
 * The queue's specification and the history rewrites of its checker (test/support/queue-model.ts),
 * on small hand-made histories: the rewrites must neither hide a push applied twice nor reject
 * what the specification allows.
 */
import { describe, expect, it } from 'vitest';
import { checkPartition, type PartitionOperation } from '../support/linearizability.js';
import { prepare, queueModel, type QueueInput, type QueueOutput } from '../support/queue-model.js';

type Op = PartitionOperation<QueueInput, QueueOutput>;
const push = (id: string, call: number, ret: number, seq: number | undefined, duplicate = false): Op => ({
  input: { kind: 'push', id, value: `v-${id}`, since: 0, dedupe: true },
  output: seq === undefined ? { kind: 'unknown' } : { kind: 'push', seq, duplicate },
  call,
  return: seq === undefined ? Infinity : ret,
  unknown: seq === undefined,
});
const read = (after: number, limit: number, call: number, ret: number, items: Array<[number, string]>, lastSeq: number, trimmedUpto = 0): Op => ({
  input: { kind: 'read', after, limit },
  output: { kind: 'read', items: items.map(([seq, id]) => ({ seq, value: `v-${id}` })), lastSeq, trimmedUpto },
  call,
  return: ret,
});
const trim = (upto: number, call: number, ret: number, point: number): Op => ({ input: { kind: 'trim', upto }, output: { kind: 'trim', point }, call, return: ret });
const verdict = (ops: Op[]) => checkPartition(prepare(ops), queueModel).verdict;

describe('queue checker', () => {
  it('catches a retried push applied twice although no trim allowed it (the retry pushed again)', () => {
    // X's first attempt (outcome lost) landed at 1; its retry pushed X again at 2; a read saw 2 only.
    const ops = [push('x', 0, 0, undefined), push('x', 10, 20, 2), read(1, 10, 30, 40, [[2, 'x']], 2)];
    expect(verdict(ops)).toBe('not-linearizable');
  });

  it('catches two lost attempts of one push both applied, seen only as the last sequence number', () => {
    const ops = [push('x', 0, 0, undefined), push('x', 10, 0, undefined), read(2, 10, 30, 40, [], 2)];
    expect(verdict(ops)).toBe('not-linearizable');
  });

  it('accepts a retry that pushes again after a trim dropped the first attempt\'s item', () => {
    const ops = [push('x', 0, 0, undefined), read(0, 10, 5, 6, [[1, 'x']], 1), trim(1, 7, 8, 1), push('x', 10, 20, 2), read(0, 10, 30, 40, [[2, 'x']], 2, 1)];
    expect(verdict(ops)).toBe('linearizable');
  });

  it('lets a push return any earlier copy of its id, and refuses a third copy while one is not trimmed', () => {
    const base = [push('x', 0, 1, 1), trim(1, 2, 3, 1), push('x', 4, 5, 2)];
    expect(verdict([...base, push('x', 6, 7, 2, true)])).toBe('linearizable');
    expect(verdict([...base, push('x', 6, 7, 3)])).toBe('not-linearizable');
  });

  it('folds lost attempts into the retry that found them, and still catches a duplicate', () => {
    // The retry found X at 1 (duplicate): one push, called with the first attempt.
    expect(verdict([push('x', 0, 0, undefined), push('y', 1, 2, 2), push('x', 10, 20, 1, true), read(0, 10, 30, 40, [[1, 'x'], [2, 'y']], 2)])).toBe('linearizable');
    // The retry claims X at 1, but a read saw X at 3 as well.
    expect(verdict([push('x', 0, 0, undefined), push('y', 1, 2, 2), push('x', 10, 20, 1, true), read(0, 10, 30, 40, [[1, 'x'], [2, 'y'], [3, 'x']], 3)])).toBe('not-linearizable');
  });
});
