import { describe, expect, it } from 'vitest';
import { ConsistentHashBalancer, createBalancer, hashOf, type BalancerItem } from '../../framework/client/balancer.js';
import { mulberry32 } from '../support/prng.js';

interface Item extends BalancerItem {
  address: string;
  weight: number;
  activeCalls: number;
}

function items(n: number, weights: number[] = []): Item[] {
  return Array.from({ length: n }, (_, i) => ({ address: `10.0.0.${i + 1}:7000`, weight: weights[i] ?? 1, activeCalls: 0 }));
}

const all = (): boolean => true;

describe('round_robin', () => {
  it('rotates evenly over equal weights and skips unusable items', () => {
    const b = createBalancer<Item>('round_robin');
    const xs = items(3);
    b.update(xs);
    const seq = Array.from({ length: 6 }, () => b.pick(all, undefined)!.address);
    expect(new Set(seq.slice(0, 3)).size).toBe(3);
    expect(seq.slice(3)).toEqual(seq.slice(0, 3));
    const down = xs[1]!.address;
    const picks = Array.from({ length: 10 }, () => b.pick((it) => it.address !== down, undefined)!.address);
    expect(picks).not.toContain(down);
    expect(b.pick(() => false, undefined)).toBeUndefined();
  });

  it('smooth weighted: 5:1:1 gives 5:1:1 per cycle, interleaved', () => {
    const b = createBalancer<Item>('round_robin');
    const xs = items(3, [5, 1, 1]);
    b.update(xs);
    const seq = Array.from({ length: 7 }, () => b.pick(all, undefined)!.address);
    const count = (a: string) => seq.filter((x) => x === a).length;
    expect([count(xs[0]!.address), count(xs[1]!.address), count(xs[2]!.address)]).toEqual([5, 1, 1]);
    // nginx's sequence for 5:1:1 is a a b a c a a: the heavy item never runs 5 times in a row.
    expect(seq.join(',')).not.toContain(Array(5).fill(xs[0]!.address).join(','));
  });
});

describe('p2c', () => {
  it('prefers the less loaded of two random items', () => {
    const b = createBalancer<Item>('p2c', mulberry32(7));
    const xs = items(2);
    xs[0]!.activeCalls = 10;
    b.update(xs);
    for (let i = 0; i < 50; i++) expect(b.pick(all, undefined)).toBe(xs[1]);
  });

  it('spreads load: with in-flight counts updated, 3 items end within a few calls of each other', () => {
    const b = createBalancer<Item>('p2c', mulberry32(11));
    const xs = items(3);
    b.update(xs);
    for (let i = 0; i < 300; i++) b.pick(all, undefined)!.activeCalls++;
    const counts = xs.map((x) => x.activeCalls);
    expect(Math.max(...counts) - Math.min(...counts)).toBeLessThanOrEqual(3);
  });

  it('weights count: an item of weight 2 carries about twice the calls', () => {
    const b = createBalancer<Item>('p2c', mulberry32(3));
    const xs = items(2, [2, 1]);
    b.update(xs);
    for (let i = 0; i < 300; i++) b.pick(all, undefined)!.activeCalls++;
    expect(xs[0]!.activeCalls / xs[1]!.activeCalls).toBeGreaterThan(1.7);
    expect(xs[0]!.activeCalls / xs[1]!.activeCalls).toBeLessThan(2.3);
  });

  it('falls back to the usable items when random draws hit unusable ones', () => {
    const b = createBalancer<Item>('p2c', mulberry32(5));
    const xs = items(5);
    b.update(xs);
    const only = xs[3]!;
    for (let i = 0; i < 20; i++) expect(b.pick((it) => it === only, undefined)).toBe(only);
    expect(b.pick(() => false, undefined)).toBeUndefined();
  });
});

describe('consistent_hash', () => {
  it('maps a key to the same item, independent of list order', () => {
    const xs = items(5);
    const a = new ConsistentHashBalancer<Item>(mulberry32(1));
    const b = new ConsistentHashBalancer<Item>(mulberry32(2));
    a.update(xs);
    b.update([...xs].reverse());
    for (let k = 0; k < 200; k++) {
      const key = `user-${k}`;
      expect(a.pick(all, key)!.address).toBe(b.pick(all, key)!.address);
      expect(a.pick(all, key)).toBe(a.pick(all, key));
    }
  });

  it('when an item fails, only its keys move, and they spread over the rest', () => {
    const xs = items(4);
    const b = new ConsistentHashBalancer<Item>(mulberry32(1));
    b.update(xs);
    const keys = Array.from({ length: 2000 }, (_, i) => `k${i}`);
    const before = new Map(keys.map((k) => [k, b.pick(all, k)!.address]));
    const dead = xs[2]!.address;
    const after = new Map(keys.map((k) => [k, b.pick((it) => it.address !== dead, k)!.address]));
    const moved = keys.filter((k) => before.get(k) !== after.get(k));
    expect(moved.every((k) => before.get(k) === dead)).toBe(true);
    expect(moved.length).toBe(keys.filter((k) => before.get(k) === dead).length);
    const targets = new Set(moved.map((k) => after.get(k)));
    expect(targets.size).toBe(3);
    // Balance: every item owns a fair share (160 points per item).
    for (const x of xs) {
      const share = keys.filter((k) => before.get(k) === x.address).length / keys.length;
      expect(share).toBeGreaterThan(0.15);
      expect(share).toBeLessThan(0.35);
    }
  });

  it('calls without a key are spread like p2c; no usable item gives undefined', () => {
    const b = new ConsistentHashBalancer<Item>(mulberry32(1));
    const xs = items(3);
    b.update(xs);
    const seen = new Set(Array.from({ length: 50 }, () => b.pick(all, undefined)!.address));
    expect(seen.size).toBe(3);
    expect(b.pick(() => false, 'k')).toBeUndefined();
  });

  it('hashOf is libketama-style MD5 (stable across runs)', () => {
    expect(hashOf('user-1')).toBe(hashOf('user-1'));
    expect(hashOf('a')).toBe(Buffer.from('0cc175b9', 'hex').readUInt32LE(0));
  });
});

describe('createBalancer', () => {
  it('rejects an unknown name', () => {
    expect(() => createBalancer('random' as never)).toThrow(/unknown balancer 'random'/);
  });
});
