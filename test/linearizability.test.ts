/**
 * The linearizability checker (test/support/linearizability.ts): hand-written histories that must
 * be accepted or rejected, generated linearizable histories (a sequential model whose operations
 * take effect at random points inside random intervals) that must be accepted, corruptions of them
 * that are provably impossible and must be rejected, a differential test against a brute-force
 * checker on small histories, and a performance sanity check.
 */
import { describe, expect, it } from 'vitest';
import {
  checkKvHistory,
  checkPartition,
  HistoryRecorder,
  precedes,
  type CheckResult,
  type KvInput,
  type KvOperation,
  type KvOutput,
  type PartitionModel,
} from './support/linearizability.js';
import { mulberry32 } from './support/prng.js';

// ---------------------------------------------------------------------------------------------
// Builders

const enc = new TextEncoder();
const b = (s: string): Uint8Array => enc.encode(s);
let nextId = 1;
type Span = [call: number, ret: number];

function op(key: string, input: KvInput, output: KvOutput, [call, ret]: Span, client = 0): KvOperation {
  const unknown = output !== null && 'unknown' in output;
  return { id: nextId++, client, key, input, output, call, return: unknown ? Infinity : ret };
}
const U = 'unknown' as const;
const unknownOut: KvOutput = { unknown: true };
function get(key: string, out: [string, bigint] | null | typeof U, span: Span, client = 0): KvOperation {
  const output: KvOutput = out === U ? unknownOut : out === null ? null : { value: b(out[0]), version: out[1] };
  return op(key, { kind: 'get' }, output, span, client);
}
function put(key: string, value: string, out: bigint | typeof U, span: Span, client = 0): KvOperation {
  return op(key, { kind: 'put', value: b(value) }, out === U ? unknownOut : { version: out }, span, client);
}
function del(key: string, out: bigint | typeof U, span: Span, client = 0): KvOperation {
  return op(key, { kind: 'delete' }, out === U ? unknownOut : { version: out }, span, client);
}
function cas(key: string, expected: bigint, value: string, out: bigint | 'failed' | typeof U, span: Span, client = 0): KvOperation {
  const output: KvOutput = out === U ? unknownOut : out === 'failed' ? { failed: 'FAILED_PRECONDITION' } : { version: out };
  return op(key, { kind: 'cas', expectedVersion: expected, value: b(value) }, output, span, client);
}

function expectOk(history: KvOperation[]): CheckResult {
  const result = checkKvHistory(history);
  expect(result.explanation ?? '').toBe('');
  expect(result).toMatchObject({ ok: true, verdict: 'linearizable', operationsChecked: history.length });
  return result;
}
function expectBad(history: KvOperation[], key: string): CheckResult {
  const result = checkKvHistory(history);
  expect(result).toMatchObject({ ok: false, verdict: 'not-linearizable', key });
  expect(result.explanation).toContain(JSON.stringify(key));
  return result;
}

// ---------------------------------------------------------------------------------------------
// Hand-written histories

describe('accepts linearizable histories', () => {
  it('accepts the empty history', () => {
    expect(checkKvHistory([])).toEqual({ ok: true, verdict: 'linearizable', operationsChecked: 0 });
  });

  it('accepts a sequential history of every kind of operation', () => {
    expectOk([
      get('k', null, [0, 1]),
      put('k', 'a', 1n, [2, 3]),
      get('k', ['a', 1n], [4, 5]),
      put('k', 'b', 2n, [6, 7]),
      get('k', ['b', 2n], [8, 9]),
      del('k', 3n, [10, 11]),
      get('k', null, [12, 13]),
      del('k', 4n, [14, 15]), // deleting an absent key is a write too
      cas('k', 0n, 'c', 5n, [16, 17]),
      get('k', ['c', 5n], [18, 19]),
      cas('k', 5n, 'd', 6n, [20, 21]),
      cas('k', 5n, 'e', 'failed', [22, 23]),
      cas('k', 0n, 'f', 'failed', [24, 25]),
      get('k', ['d', 6n], [26, 27]),
    ]);
  });

  it('accepts concurrent writes in either order, with reads that see either', () => {
    // Two overlapping puts; the read after both sees the one that went second.
    for (const [first, second] of [['x', 'y'], ['y', 'x']] as const) {
      expectOk([
        put('k', 'x', first === 'x' ? 1n : 2n, [0, 10], 1),
        put('k', 'y', first === 'y' ? 1n : 2n, [1, 9], 2),
        get('k', [second, 2n], [11, 12], 3),
      ]);
    }
    // Reads overlapping a write may see the old or the new value, as long as they never go back.
    expectOk([
      put('k', 'a', 1n, [0, 100], 1),
      get('k', null, [10, 20], 2),
      get('k', ['a', 1n], [15, 30], 3),
      get('k', ['a', 1n], [40, 50], 2),
    ]);
    expectOk([
      put('k', 'a', 1n, [0, 100], 1),
      get('k', ['a', 1n], [10, 20], 2),
      get('k', null, [15, 30], 3), // overlaps the first read: may come before it
    ]);
  });

  it('accepts a CAS race where exactly one succeeds', () => {
    for (const winner of ['x', 'y']) {
      expectOk([
        put('k', 'a', 1n, [0, 1]),
        cas('k', 1n, 'x', winner === 'x' ? 2n : 'failed', [10, 20], 1),
        cas('k', 1n, 'y', winner === 'y' ? 2n : 'failed', [11, 19], 2),
        get('k', [winner, 2n], [21, 22]),
      ]);
    }
  });

  it('accepts cas(0) on an absent key and on a deleted key', () => {
    expectOk([cas('k', 0n, 'a', 1n, [0, 1]), get('k', ['a', 1n], [2, 3])]);
    expectOk([
      put('k', 'a', 1n, [0, 1]),
      del('k', 2n, [2, 3]),
      cas('k', 0n, 'b', 3n, [4, 5]),
      get('k', ['b', 3n], [6, 7]),
    ]);
  });

  it('accepts a put after a delete continuing the version', () => {
    expectOk([
      put('k', 'a', 1n, [0, 1]),
      put('k', 'b', 2n, [2, 3]),
      del('k', 3n, [4, 5]),
      get('k', null, [6, 7]),
      put('k', 'c', 4n, [8, 9]),
      get('k', ['c', 4n], [10, 11]),
      cas('k', 4n, 'd', 5n, [12, 13]),
    ]);
  });

  it('accepts unknown-outcome writes that took effect, late or not at all', () => {
    // Took effect before a later read.
    expectOk([put('k', 'a', 1n, [0, 1]), put('k', 'b', U, [10, Infinity], 1), get('k', ['b', 2n], [20, 30]), put('k', 'c', 3n, [40, 50])]);
    // Never took effect.
    expectOk([
      put('k', 'a', 1n, [0, 1]),
      put('k', 'b', U, [10, Infinity], 1),
      get('k', ['a', 1n], [20, 30]),
      put('k', 'c', 2n, [40, 50]),
      get('k', ['c', 2n], [60, 70]),
    ]);
    // Took effect long after its client gave up, after later operations.
    expectOk([
      put('k', 'a', 1n, [0, 1]),
      put('k', 'b', U, [5, Infinity], 1),
      put('k', 'c', 2n, [10, 20]),
      get('k', ['c', 2n], [21, 22]),
      get('k', ['b', 3n], [30, 40]),
    ]);
    // Unknown delete and cas, one effective each.
    expectOk([
      put('k', 'a', 1n, [0, 1]),
      del('k', U, [2, Infinity]),
      cas('k', 0n, 'x', U, [3, Infinity]),
      cas('k', 1n, 'y', U, [4, Infinity]),
      get('k', ['x', 3n], [10, 11]),
    ]);
    // An unknown cas that can only have failed, and an unknown get (unconstrained).
    expectOk([
      put('k', 'a', 1n, [0, 1]),
      cas('k', 7n, 'z', U, [2, Infinity]),
      get('k', U, [2, Infinity]),
      get('k', ['a', 1n], [10, 11]),
      put('k', 'b', 2n, [12, 13]),
    ]);
    // Many blind unknown writes, some effective (the version counts them), none ever read.
    const h = [put('k', 'a', 1n, [0, 1])];
    for (let i = 0; i < 30; i++) h.push(put('k', `u${i}`, U, [2 + i, Infinity], i));
    h.push(put('k', 'b', 12n, [100, 101]), get('k', ['b', 12n], [102, 103]));
    expectOk(h);
  });

  it('accepts two keys interleaved', () => {
    expectOk([
      put('a', '1', 1n, [0, 10], 1),
      put('b', '1', 1n, [1, 11], 2),
      get('a', null, [2, 3], 3),
      get('b', ['1', 1n], [5, 12], 3),
      put('a', '2', 2n, [12, 20], 2),
      get('a', ['2', 2n], [21, 22], 1),
      del('b', 2n, [13, 14], 1),
      get('b', null, [15, 16], 3),
    ]);
  });

  it('accepts values that differ from earlier ones only in their bytes, compared by bytes', () => {
    const h = [
      op('k', { kind: 'put', value: new Uint8Array([1, 2, 3]) }, { version: 1n }, [0, 1]),
      // A different Uint8Array object (a subarray of a bigger buffer) with the same bytes.
      op('k', { kind: 'get' }, { value: new Uint8Array([9, 1, 2, 3, 9]).subarray(1, 4), version: 1n }, [2, 3]),
      op('k', { kind: 'put', value: new Uint8Array(0) }, { version: 2n }, [4, 5]),
      op('k', { kind: 'get' }, { value: new Uint8Array(0), version: 2n }, [6, 7]),
    ];
    expectOk(h);
    h.push(op('k', { kind: 'get' }, { value: new Uint8Array([1, 2, 3]), version: 2n }, [8, 9]));
    expectBad(h, 'k');
  });
});

describe('rejects non-linearizable histories', () => {
  it('rejects a stale read after an acknowledged write', () => {
    const r = expectBad([put('k', 'a', 1n, [0, 10]), put('k', 'b', 2n, [20, 30]), get('k', ['a', 1n], [40, 50])], 'k');
    expect(r.explanation).toContain('get -> "a" v1');
    expect(r.explanation).toContain('the state is "b" v2');
  });

  it('rejects a lost write (acknowledged, never visible)', () => {
    expectBad(
      [
        put('k', 'a', 1n, [0, 10]),
        put('k', 'b', 2n, [20, 30]),
        get('k', ['a', 1n], [40, 50], 1),
        put('k', 'c', 2n, [60, 70], 2),
        get('k', ['c', 2n], [80, 90]),
      ],
      'k',
    );
  });

  it('rejects a read of a value that was never written', () => {
    expectBad([put('k', 'a', 1n, [0, 10]), get('k', ['z', 1n], [5, 15])], 'k');
    expectBad([get('k', ['z', 1n], [0, 1])], 'k');
  });

  it('rejects a version that skips or repeats', () => {
    expectBad([put('k', 'a', 1n, [0, 1]), put('k', 'b', 3n, [2, 3])], 'k');
    expectBad([put('k', 'a', 1n, [0, 1]), put('k', 'b', 1n, [2, 3])], 'k');
    expectBad([put('k', 'a', 1n, [0, 10], 1), put('k', 'b', 1n, [0, 10], 2)], 'k'); // concurrent, same version
    expectBad([put('k', 'a', 2n, [0, 1])], 'k'); // the first write of a key is version 1
    expectBad([put('k', 'a', 1n, [0, 1]), get('k', ['a', 2n], [2, 3])], 'k');
  });

  it('rejects two CAS with the same expectedVersion both succeeding', () => {
    expectBad([put('k', 'a', 1n, [0, 1]), cas('k', 1n, 'x', 2n, [10, 20], 1), cas('k', 1n, 'y', 3n, [11, 19], 2)], 'k');
    expectBad([put('k', 'a', 1n, [0, 1]), cas('k', 1n, 'x', 2n, [10, 20], 1), cas('k', 1n, 'y', 2n, [11, 19], 2)], 'k');
    expectBad([cas('k', 0n, 'x', 1n, [10, 20], 1), cas('k', 0n, 'y', 2n, [11, 19], 2)], 'k');
  });

  it('rejects a read that goes back in time', () => {
    expectBad([put('k', 'a', 1n, [0, 100], 1), get('k', ['a', 1n], [10, 20], 2), get('k', null, [30, 40], 3)], 'k');
    expectBad(
      [put('k', 'a', 1n, [0, 1]), put('k', 'b', 2n, [5, 100], 1), get('k', ['b', 2n], [10, 20], 2), get('k', ['a', 1n], [30, 40], 2)],
      'k',
    );
  });

  it('rejects cas(0) succeeding on a present key', () => {
    expectBad([put('k', 'a', 1n, [0, 1]), cas('k', 0n, 'b', 2n, [2, 3])], 'k');
  });

  it('rejects a failed cas whose precondition held throughout', () => {
    expectBad([put('k', 'a', 1n, [0, 1]), cas('k', 1n, 'b', 'failed', [2, 3])], 'k');
    expectBad([cas('k', 0n, 'b', 'failed', [2, 3])], 'k');
  });

  it('rejects a delete whose effect is not visible to a later get', () => {
    expectBad([put('k', 'a', 1n, [0, 1]), del('k', 2n, [10, 20]), get('k', ['a', 1n], [30, 40])], 'k');
    expectBad([put('k', 'a', 1n, [0, 1]), del('k', 2n, [10, 20]), get('k', ['a', 2n], [30, 40])], 'k');
  });

  it('rejects a read of an unknown write that cannot have happened yet, or twice', () => {
    // The unknown put was called after the read returned.
    expectBad([get('k', ['b', 1n], [0, 10]), put('k', 'b', U, [20, Infinity])], 'k');
    // One unknown put cannot produce two versions.
    expectBad(
      [put('k', 'b', U, [0, Infinity]), get('k', ['b', 1n], [10, 11]), put('k', 'c', 2n, [12, 13]), get('k', ['b', 3n], [14, 15])],
      'k',
    );
  });

  it('reports the first failing key among several', () => {
    const r = expectBad(
      [
        put('good', 'a', 1n, [0, 1]),
        put('bad', 'a', 1n, [0, 1]),
        get('good', ['a', 1n], [2, 3]),
        get('bad', null, [2, 3]),
        put('worse', 'a', 5n, [0, 1]),
      ],
      'bad',
    );
    expect(r.operationsChecked).toBe(5);
  });

  it('explains a failure with the longest linearizable prefix and the operations that could not be placed', () => {
    const r = expectBad(
      [
        put('k', 'a', 1n, [0, 10], 1),
        put('k', 'b', 2n, [20, 30], 1),
        get('k', ['b', 2n], [25, 35], 2),
        get('k', ['a', 1n], [40, 50], 2),
        put('k', 'c', 3n, [60, 70], 1),
      ],
      'k',
    );
    expect(r.explanation).toMatch(/Longest linearizable prefix found: 3 of 5 operations/);
    expect(r.explanation).toContain('put("b") -> v2');
    expect(r.explanation).toMatch(/get -> "a" v1 \[40, 50\]: the state is "b" v2/);
    expect(r.explanation).toMatch(/must take effect by its return at 50/);
  });
});

describe('time ties and bookkeeping', () => {
  it('orders an operation returning at time t before one called at t (half-open intervals)', () => {
    expectBad([put('k', 'a', 1n, [0, 10]), get('k', null, [10, 20])], 'k');
    expectOk([put('k', 'a', 1n, [0, 10]), get('k', null, [9, 20])]);
    expect(precedes({ call: 0, return: 10 }, { call: 10, return: 20 })).toBe(true);
    expect(precedes({ call: 0, return: 10 }, { call: 9, return: 20 })).toBe(false);
  });

  it('handles zero-length operations: ordered against others by the tie rule, concurrent with each other', () => {
    // A zero-length put at 10 follows an operation returning at 10 and precedes one called at 10.
    expectBad([put('k', 'a', 1n, [0, 10]), put('k', 'b', 1n, [10, 10])], 'k');
    expectBad([put('k', 'a', 1n, [10, 10]), get('k', null, [10, 20])], 'k');
    expectOk([put('k', 'a', 1n, [0, 10]), put('k', 'b', 2n, [10, 10]), get('k', ['b', 2n], [10, 20])]);
    // Two zero-length operations at the same instant may go in either order.
    expectOk([get('k', ['a', 1n], [10, 10]), put('k', 'a', 1n, [10, 10])]);
    expect(precedes({ call: 10, return: 10 }, { call: 10, return: 10 })).toBe(false);
    expect(precedes({ call: 10, return: 10 }, { call: 10, return: 11 })).toBe(true);
  });

  it('treats an unknown outcome as returning never, whatever return time it carries', () => {
    const late = op('k', { kind: 'put', value: b('b') }, { unknown: true }, [0, 1]);
    late.return = 1;
    expectOk([late, get('k', null, [5, 6]), get('k', ['b', 1n], [7, 8])]);
  });

  it('rejects malformed operations with a TypeError', () => {
    expect(() => checkKvHistory([op('k', { kind: 'put', value: b('a') }, null, [0, 1])])).toThrow(TypeError);
    expect(() => checkKvHistory([op('k', { kind: 'put', value: b('a') }, { failed: 'FAILED_PRECONDITION' }, [0, 1])])).toThrow(TypeError);
    expect(() => checkKvHistory([op('k', { kind: 'get' }, { version: 1n }, [0, 1])])).toThrow(TypeError);
    expect(() => checkKvHistory([op('k', { kind: 'delete' }, { version: 1 as unknown as bigint }, [0, 1])])).toThrow(TypeError);
    expect(() => checkKvHistory([op('k', { kind: 'get' }, null, [5, 1])])).toThrow(TypeError);
    expect(() => checkKvHistory([op('k', { kind: 'get' }, null, [NaN, 1])])).toThrow(TypeError);
  });

  it('answers unknown when the search budget is exceeded', () => {
    // PaxosKV versions pin most orders, so its histories rarely need many configurations; a tiny
    // budget shows the mechanism.
    const h = generate({ seed: 5, clients: 6, keys: 2, ops: 300, unknownRate: 0.05, maxDuration: 8 });
    const limited = checkKvHistory(h, { maxStatesPerKey: 10 });
    expect(limited).toMatchObject({ ok: false, verdict: 'unknown', key: h[0]!.key, operationsChecked: 300 });
    expect(limited.explanation).toMatch(/budget/);
    expect(checkKvHistory(h).verdict).toBe('linearizable');
    // A non-linearizable key wins over one whose budget ran out.
    const both = [...h, put('z', 'a', 2n, [0, 1])];
    expect(checkKvHistory(both, { maxStatesPerKey: 10 })).toMatchObject({ verdict: 'not-linearizable', key: 'z' });

    // A genuinely exponential search through the generic core: 14 concurrent increments of a
    // counter (a model without hints), then an impossible read: every subset gets visited.
    const counter: PartitionModel<number, number | 'read', number | undefined> = {
      init: () => 0,
      step: (s, input, output) => (input === 'read' ? { ok: output === s, state: s } : { ok: true, state: s + input }),
      key: (s) => String(s),
    };
    const ops = Array.from({ length: 14 }, (_, i) => ({ input: 2 ** i, output: undefined, call: 0, return: 10 }));
    ops.push({ input: 'read' as unknown as number, output: -1 as unknown as undefined, call: 5, return: 20 });
    expect(checkPartition(ops, counter, 1000)).toMatchObject({ verdict: 'unknown', statesExplored: 1000 });
    const full = checkPartition(ops, counter);
    expect(full.verdict).toBe('not-linearizable');
    expect(full.statesExplored).toBe(2 ** 14 - 1); // every non-empty subset of the increments
  });

  it('records histories with HistoryRecorder, keeping the observed order at equal clock readings', () => {
    // The get is invoked before the put completes, at the same clock reading: they overlap.
    let r = new HistoryRecorder();
    let p = r.invoke(1, 'k', { kind: 'put', value: b('a') }, 0);
    let g = r.invoke(2, 'k', { kind: 'get' }, 5);
    r.complete(p, { version: 1n }, 5);
    r.complete(g, null, 6);
    expectOk(r.operations());
    // The put completes before the get is invoked, at the same clock reading: the get must see it.
    r = new HistoryRecorder();
    p = r.invoke(1, 'k', { kind: 'put', value: b('a') }, 0);
    r.complete(p, { version: 1n }, 5);
    g = r.invoke(2, 'k', { kind: 'get' }, 5);
    r.complete(g, null, 5);
    expectBad(r.operations(), 'k');
    expect(r.operations().map((o) => o.call)).toEqual([0, expect.any(Number)]);
    expect(r.operations()[1]!.call).toBeGreaterThan(5);

    // Unknown, pending and discarded operations; copied input bytes.
    r = new HistoryRecorder();
    const value = b('a');
    p = r.invoke(1, 'k', { kind: 'put', value }, 0);
    value[0] = 0x7a; // the caller reusing its buffer must not change the history
    r.unknown(p);
    const bad = r.invoke(2, 'k', { kind: 'cas', expectedVersion: 1n, value: b('x') }, 1);
    r.discard(bad);
    const pending = r.invoke(3, 'k', { kind: 'delete' }, 2);
    g = r.invoke(2, 'k', { kind: 'get' }, 3);
    r.complete(g, { value: b('a'), version: 1n }, 4);
    const ops = r.operations();
    expect(ops.map((o) => o.id)).toEqual([p, pending, g]);
    expect(ops[0]).toMatchObject({ output: { unknown: true }, return: Infinity });
    expect(ops[1]).toMatchObject({ output: { unknown: true }, return: Infinity });
    expectOk(ops);
    expect(() => r.complete(g, null, 5)).toThrow(/already completed/);
    expect(() => r.unknown(bad)).toThrow(/no operation/);
  });

  it('checks other models through checkPartition (a counter with increments and reads)', () => {
    type In = { add: number } | { read: true };
    const counter: PartitionModel<number, In, number | undefined> = {
      init: () => 0,
      step: (s, input, output) => ('add' in input ? { ok: true, state: s + input.add } : { ok: output === s, state: s }),
      key: (s) => String(s),
    };
    const ops = [
      { input: { add: 1 }, output: undefined, call: 0, return: 10 },
      { input: { add: 2 }, output: undefined, call: 0, return: 10 },
      { input: { read: true as const }, output: 2, call: 1, return: 5 },
      { input: { read: true as const }, output: 3, call: 11, return: 12 },
    ];
    const good = checkPartition(ops, counter);
    expect(good.verdict).toBe('linearizable');
    expect(good.linearization).toEqual([1, 2, 0, 3]);
    const bad = checkPartition([...ops, { input: { read: true as const }, output: 1, call: 13, return: 14 }], counter);
    expect(bad).toMatchObject({ verdict: 'not-linearizable', longestPrefix: [1, 2, 0, 3] });
  });
});

// ---------------------------------------------------------------------------------------------
// Generated histories


interface GenOptions {
  seed: number;
  clients: number;
  keys: number;
  ops: number;
  /** Probability that an operation's outcome is unknown. */
  unknownRate: number;
  /** Longest operation, in ticks. */
  maxDuration: number;
}

/**
 * Runs `clients` sequential clients against an in-memory PaxosKV; each operation takes effect at a
 * random half-tick strictly inside its integer [call, return] interval (calls and returns fall on
 * whole ticks, so a return and a later call at the same tick exercise the tie rule). An unknown
 * operation takes effect at a random point after its call, possibly after its client gave up, or
 * never. Every written value is unique.
 */
function generate(o: GenOptions): KvOperation[] {
  const rand = mulberry32(o.seed);
  const int = (lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1));
  const state = new Map<string, { value: Uint8Array | null; version: bigint }>();
  const stateOf = (key: string) => state.get(key) ?? { value: null, version: 0n };
  const seen = new Map<string, bigint>(); // `${client}/${key}` -> last version that client saw
  type Ev = { t: number; seq: number; run: () => void };
  const heap: Ev[] = [];
  let seq = 0;
  const schedule = (t: number, run: () => void): void => {
    heap.push({ t, seq: seq++, run });
    for (let i = heap.length - 1; i > 0; ) {
      const parent = (i - 1) >> 1;
      if (less(heap[parent]!, heap[i]!)) break;
      [heap[parent], heap[i]] = [heap[i]!, heap[parent]!];
      i = parent;
    }
  };
  const less = (x: Ev, y: Ev): boolean => x.t < y.t || (x.t === y.t && x.seq < y.seq);
  const pop = (): Ev => {
    const top = heap[0]!;
    const end = heap.pop()!;
    if (heap.length > 0) {
      heap[0] = end;
      for (let i = 0; ; ) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < heap.length && less(heap[l]!, heap[m]!)) m = l;
        if (r < heap.length && less(heap[r]!, heap[m]!)) m = r;
        if (m === i) break;
        [heap[m], heap[i]] = [heap[i]!, heap[m]!];
        i = m;
      }
    }
    return top;
  };

  const history: KvOperation[] = [];
  let issued = 0;
  const apply = (key: string, input: KvInput): KvOutput => {
    const s = stateOf(key);
    switch (input.kind) {
      case 'get':
        return s.value === null ? null : { value: s.value, version: s.version };
      case 'put':
        state.set(key, { value: input.value, version: s.version + 1n });
        return { version: s.version + 1n };
      case 'delete':
        state.set(key, { value: null, version: s.version + 1n });
        return { version: s.version + 1n };
      case 'cas': {
        const holds = input.expectedVersion === 0n ? s.value === null : s.value !== null && s.version === input.expectedVersion;
        if (!holds) return { failed: 'FAILED_PRECONDITION' };
        state.set(key, { value: input.value, version: s.version + 1n });
        return { version: s.version + 1n };
      }
    }
  };
  const call = (client: number, t: number): void => {
    if (issued >= o.ops) return;
    const n = issued++;
    const key = `k${int(0, o.keys - 1)}`;
    const value = b(`${key}:${client}:${n}`);
    const roll = rand();
    const current = stateOf(key).version;
    const input: KvInput =
      roll < 0.35
        ? { kind: 'get' }
        : roll < 0.6
          ? { kind: 'put', value }
          : roll < 0.7
            ? { kind: 'delete' }
            : {
                kind: 'cas',
                value,
                // Mostly the current version (likely to succeed), else 0, the client's last-seen one, or any.
                expectedVersion: [current, current, 0n, seen.get(`${client}/${key}`) ?? 0n, BigInt(int(0, Number(current) + 1))][
                  int(0, 4)
                ]!,
              };
    const duration = int(1, o.maxDuration);
    const unknown = rand() < o.unknownRate;
    const operation: KvOperation = { id: n, client, key, input, output: { unknown: true }, call: t, return: Infinity };
    history.push(operation);
    let output: KvOutput = null;
    if (!unknown) schedule(t + int(0, duration - 1) + 0.5, () => (output = apply(key, input)));
    else if (rand() < 0.7) schedule(t + int(0, duration + 20) + 0.5, () => void apply(key, input));
    schedule(t + duration, () => {
      if (!unknown) {
        operation.output = output;
        operation.return = t + duration;
        if (output !== null && 'version' in output) seen.set(`${client}/${key}`, output.version);
      }
      const next = t + duration + int(0, 2);
      schedule(next, () => call(client, next));
    });
  };
  for (let c = 0; c < o.clients; c++) {
    const start = int(0, 3);
    schedule(start, () => call(c, start));
  }
  while (heap.length > 0) pop().run();
  return history;
}

const isWrite = (o: KvOperation): boolean => o.input.kind !== 'get';
const known = (o: KvOperation): boolean => !(o.output !== null && 'unknown' in o.output);
const writtenVersion = (o: KvOperation): bigint | undefined =>
  isWrite(o) && o.output !== null && 'version' in o.output ? o.output.version : undefined;
const hex = (v: Uint8Array): string => Buffer.from(v).toString('hex');

/**
 * Corrupts one output of a linearizable history so that it provably is not linearizable any more.
 * Returns the corrupted key and a description, or undefined when no corruption of that kind applies.
 *  - `never-written`: a read returns bytes no operation ever wrote (the value is only ever set from
 *    put/cas inputs);
 *  - `beyond`: a write or read reports a version greater than the number of writes that could have
 *    succeeded on the key (each successful write adds exactly 1);
 *  - `duplicate`: a write reports the version another acknowledged write reported (versions strictly
 *    increase, so two writes never produce the same one);
 *  - `cas-flip`: a successful cas whose (unique) value a read returned is reported as failed (then
 *    nothing wrote the bytes that read returned).
 */
function corrupt(history: KvOperation[], kind: number, rand: () => number): { key: string; what: string } | undefined {
  const pick = <T,>(xs: T[]): T | undefined => (xs.length === 0 ? undefined : xs[Math.floor(rand() * xs.length)]);
  switch (kind % 4) {
    case 0: {
      const target = pick(history.filter((o) => o.input.kind === 'get' && known(o)));
      if (target === undefined) return undefined;
      const version = target.output !== null && 'version' in target.output ? target.output.version : 1n;
      target.output = { value: b('never written'), version };
      return { key: target.key, what: `never-written #${target.id}` };
    }
    case 1: {
      const target = pick(history.filter((o) => known(o) && o.output !== null && 'version' in o.output));
      if (target === undefined) return undefined;
      const writes = history.filter((o) => o.key === target.key && isWrite(o) && !(o.output !== null && 'failed' in o.output));
      const version = BigInt(writes.length + 1 + Math.floor(rand() * 3));
      target.output = target.input.kind === 'get' ? { value: (target.output as { value: Uint8Array }).value, version } : { version };
      return { key: target.key, what: `beyond #${target.id} -> v${version}` };
    }
    case 2: {
      const writes = history.filter((o) => known(o) && writtenVersion(o) !== undefined);
      const target = pick(writes);
      if (target === undefined) return undefined;
      const other = pick(writes.filter((o) => o.key === target.key && writtenVersion(o) !== writtenVersion(target)));
      if (other === undefined) return undefined;
      target.output = { version: writtenVersion(other)! };
      return { key: target.key, what: `duplicate #${target.id} -> v${writtenVersion(other)}` };
    }
    default: {
      const read = new Set(
        history.flatMap((o) =>
          o.input.kind === 'get' && o.output !== null && 'value' in o.output ? [`${o.key}/${hex(o.output.value)}`] : [],
        ),
      );
      const target = pick(
        history.filter((o) => o.input.kind === 'cas' && writtenVersion(o) !== undefined && read.has(`${o.key}/${hex(o.input.value)}`)),
      );
      if (target === undefined) return undefined;
      target.output = { failed: 'FAILED_PRECONDITION' };
      return { key: target.key, what: `cas-flip #${target.id}` };
    }
  }
}

/** An independent, obviously correct (and exponential) checker for small histories. */
function bruteForce(history: KvOperation[]): boolean {
  const keys = new Set(history.map((o) => o.key));
  for (const key of keys) {
    const ops = history.filter((o) => o.key === key);
    const failed = new Set<string>();
    const before = (y: KvOperation, x: KvOperation): boolean => {
      const yr = known(y) ? y.return : Infinity;
      const xr = known(x) ? x.return : Infinity;
      return yr < x.call || (yr === x.call && !(y.call === yr && x.call === xr));
    };
    const search = (left: number, value: Uint8Array | null, version: bigint): boolean => {
      if (left === 0) return true;
      const memo = `${left}|${value === null ? '-' : hex(value)}|${version}`;
      if (failed.has(memo)) return false;
      for (let i = 0; i < ops.length; i++) {
        if (!(left & (1 << i))) continue;
        const x = ops[i]!;
        if (ops.some((y, j) => j !== i && left & (1 << j) && before(y, x))) continue;
        const out = x.output;
        const any = !known(x);
        let next: [Uint8Array | null, bigint] | undefined;
        const wrote = (v: Uint8Array | null): [Uint8Array | null, bigint] | undefined =>
          any || (out !== null && 'version' in out && out.version === version + 1n) ? [v, version + 1n] : undefined;
        switch (x.input.kind) {
          case 'get':
            const sees =
              out === null ? value === null : 'value' in out && value !== null && hex(out.value) === hex(value) && out.version === version;
            if (any || sees) next = [value, version];
            break;
          case 'put':
            next = wrote(x.input.value);
            break;
          case 'delete':
            next = wrote(null);
            break;
          case 'cas': {
            const e = x.input.expectedVersion;
            const holds = e === 0n ? value === null : value !== null && version === e;
            if (holds) next = wrote(x.input.value);
            else if (any || (out !== null && 'failed' in out)) next = [value, version];
            break;
          }
        }
        if (next !== undefined && search(left & ~(1 << i), next[0], next[1])) return true;
      }
      failed.add(memo);
      return false;
    };
    if (!search((1 << ops.length) - 1, null, 0n)) return false;
  }
  return true;
}

describe('generated histories', () => {
  const SEEDS = 300;

  it(`accepts ${SEEDS} random linearizable histories and rejects a provably impossible corruption of each`, () => {
    const kinds = [0, 0, 0, 0];
    for (let seed = 1; seed <= SEEDS; seed++) {
      const history = generate({
        seed,
        clients: 2 + (seed % 5),
        keys: 1 + (seed % 3),
        ops: 40 + (seed % 80),
        unknownRate: 0.08,
        maxDuration: 1 + (seed % 12),
      });
      const good = checkKvHistory(history);
      expect(good.verdict, `seed ${seed}: ${good.explanation}`).toBe('linearizable');

      const rand = mulberry32(seed * 7919);
      for (let attempt = 0; attempt < 4; attempt++) {
        const kind = (seed + attempt) % 4;
        const copy = history.map((o) => ({ ...o }));
        const c = corrupt(copy, kind, rand);
        if (c === undefined) continue;
        kinds[kind]!++;
        const bad = checkKvHistory(copy);
        expect({ seed, ...c, verdict: bad.verdict, key: bad.key }).toEqual({ seed, ...c, verdict: 'not-linearizable', key: c.key });
        break;
      }
    }
    // Every kind of corruption was exercised a fair number of times.
    for (const n of kinds) expect(n).toBeGreaterThan(SEEDS / 10);
  });

  it('agrees with a brute-force checker on small histories, corrupted in arbitrary (not necessarily impossible) ways', () => {
    let accepted = 0;
    let rejected = 0;
    for (let seed = 1; seed <= 600; seed++) {
      const history = generate({ seed, clients: 3, keys: 1 + (seed % 2), ops: 6 + (seed % 9), unknownRate: 0.15, maxDuration: 6 });
      expect(bruteForce(history), `seed ${seed}`).toBe(true);
      expect(checkKvHistory(history).verdict, `seed ${seed}`).toBe('linearizable');
      const rand = mulberry32(seed ^ 0x5eed);
      const target = history[Math.floor(rand() * history.length)]!;
      const out = target.output;
      const delta = rand() < 0.5 ? -1n : 1n;
      const others = history.flatMap((o) =>
        o.key === target.key && (o.input.kind === 'put' || o.input.kind === 'cas') ? [o.input.value] : [],
      );
      if (out === null || 'unknown' in out) {
        // Null read -> some written value; unknown -> a guessed definite outcome.
        target.output =
          target.input.kind === 'get'
            ? others.length > 0
              ? { value: others[Math.floor(rand() * others.length)]!, version: BigInt(1 + Math.floor(rand() * 4)) }
              : { value: b('?'), version: 1n }
            : target.input.kind === 'cas' && rand() < 0.5
              ? { failed: 'FAILED_PRECONDITION' }
              : { version: BigInt(1 + Math.floor(rand() * 4)) };
      } else if ('failed' in out) {
        target.output = { version: BigInt(1 + Math.floor(rand() * 4)) }; // flip a failed cas to success
      } else if ('value' in out) {
        const r = rand();
        target.output =
          r < 0.3
            ? null
            : r < 0.6
              ? { value: out.value, version: out.version + delta }
              : { value: others[Math.floor(rand() * others.length)] ?? b('?'), version: out.version };
      } else if (target.input.kind === 'cas' && rand() < 0.5) {
        target.output = { failed: 'FAILED_PRECONDITION' }; // flip a successful cas to failure
      } else {
        target.output = { version: out.version + delta }; // shift a version
      }
      if (rand() < 0.2) target.output = { unknown: true }; // weaken instead: always still linearizable
      if ('unknown' in (target.output ?? {})) target.return = Infinity;
      const expected = bruteForce(history);
      const actual = checkKvHistory(history);
      expect(actual.verdict, `seed ${seed}: ${actual.explanation}`).toBe(expected ? 'linearizable' : 'not-linearizable');
      if (expected) accepted++;
      else rejected++;
    }
    // The comparison is not vacuous: both answers occur often.
    expect(rejected).toBeGreaterThan(150);
    expect(accepted).toBeGreaterThan(100);
  });

  it('agrees with a brute-force checker on arbitrary small histories (ties, zero-length, repeated values, lost and late unknowns)', () => {
    let accepted = 0;
    let rejected = 0;
    for (let seed = 1; seed <= 3000; seed++) {
      const rand = mulberry32(seed * 31 + 7);
      const int = (lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1));
      const values = ['a', 'b', 'c'];
      const history: KvOperation[] = [];
      const n = int(1, 12);
      for (let id = 0; id < n; id++) {
        const call = int(0, 12);
        const r = rand();
        const input: KvInput =
          r < 0.35
            ? { kind: 'get' }
            : r < 0.6
              ? { kind: 'put', value: b(values[int(0, 2)]!) }
              : r < 0.7
                ? { kind: 'delete' }
                : { kind: 'cas', expectedVersion: BigInt(int(0, 3)), value: b(values[int(0, 2)]!) };
        history.push({ id, client: id, key: `k${int(0, seed % 2)}`, input, output: null, call, return: call + int(0, 5) });
      }
      // Outputs from a sequential run in the order of random effect points: inside the interval for
      // known outcomes; later, or never, for unknown ones. Then a few outputs are perturbed at random.
      const unknown = history.map(() => rand() < 0.3);
      const effect = history.map((o, i) =>
        unknown[i] ? (rand() < 0.4 ? Infinity : o.call + rand() * 20) : o.call + rand() * (o.return - o.call),
      );
      const state = new Map<string, { value: Uint8Array | null; version: bigint }>();
      for (const i of history.map((_, i) => i).sort((x, y) => effect[x]! - effect[y]!)) {
        if (effect[i] === Infinity) continue;
        const o = history[i]!;
        const s = state.get(o.key) ?? { value: null, version: 0n };
        const write = (value: Uint8Array | null): KvOutput => {
          state.set(o.key, { value, version: s.version + 1n });
          return { version: s.version + 1n };
        };
        const e = o.input.kind === 'cas' ? o.input.expectedVersion : 0n;
        o.output =
          o.input.kind === 'get'
            ? s.value === null
              ? null
              : { value: s.value, version: s.version }
            : o.input.kind === 'put'
              ? write(o.input.value)
              : o.input.kind === 'delete'
                ? write(null)
                : (e === 0n ? s.value === null : s.value !== null && s.version === e)
                  ? write(o.input.value)
                  : { failed: 'FAILED_PRECONDITION' };
      }
      history.forEach((o, i) => {
        if (unknown[i]) {
          o.output = { unknown: true };
          o.return = Infinity;
        } else if (rand() < 0.1) {
          if (o.input.kind === 'get') o.output = rand() < 0.3 ? null : { value: b(values[int(0, 2)]!), version: BigInt(int(0, 4)) };
          else if (o.input.kind === 'cas' && rand() < 0.5) o.output = { failed: 'FAILED_PRECONDITION' };
          else o.output = { version: BigInt(int(0, 5)) };
        }
      });
      const expected = bruteForce(history);
      expect(checkKvHistory(history).verdict, `seed ${seed}`).toBe(expected ? 'linearizable' : 'not-linearizable');
      if (expected) accepted++;
      else rejected++;
    }
    expect(rejected).toBeGreaterThan(300);
    expect(accepted).toBeGreaterThan(300);
  });

  it('checks a 5,000-operation history over 20 keys with 8 clients, and rejects a corruption of it', () => {
    const history = generate({ seed: 42, clients: 8, keys: 20, ops: 5000, unknownRate: 0.05, maxDuration: 10 });
    expect(history).toHaveLength(5000);
    expect(checkKvHistory(history)).toMatchObject({ ok: true, verdict: 'linearizable', operationsChecked: 5000 });
    for (let kind = 0; kind < 4; kind++) {
      const copy = history.map((o) => ({ ...o }));
      const c = corrupt(copy, kind, mulberry32(kind + 1))!;
      expect(checkKvHistory(copy)).toMatchObject({ verdict: 'not-linearizable', key: c.key });
    }
  });

  it('checks thousands of operations on a single key with 10 concurrent clients', () => {
    const history = generate({ seed: 7, clients: 10, keys: 1, ops: 3000, unknownRate: 0.05, maxDuration: 10 });
    expect(checkKvHistory(history)).toMatchObject({ ok: true, verdict: 'linearizable' });
    const copy = history.map((o) => ({ ...o }));
    const c = corrupt(copy, 0, mulberry32(3))!;
    expect(checkKvHistory(copy)).toMatchObject({ verdict: 'not-linearizable', key: c.key });
  });
});
