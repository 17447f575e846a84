/**
 * Load balancers: which instance of a service gets the next call. Pure code: the candidates, the
 * key and the randomness come in as inputs, so every policy is unit-testable.
 *
 * - `round_robin`: smooth weighted round robin (nginx's algorithm, ngx_http_upstream_round_robin.c):
 *   every pick adds each usable item's weight to its running score, takes the highest score and
 *   subtracts the total weight from it. With equal weights it is plain rotation; with weights
 *   5:1:1 it interleaves (a a b a c a a) instead of sending bursts.
 * - `p2c`: power of two choices (Mitzenmacher, "The Power of Two Choices in Randomized Load
 *   Balancing", 2001; Finagle's and gRPC's least-request balancers): sample two distinct usable
 *   items at random and take the one with fewer calls in flight per unit of weight.
 * - `consistent_hash`: a Ketama ring (libketama: MD5 of `address-i`, four 32-bit points per digest,
 *   160 points per unit of weight). A key maps to the first point clockwise of its hash; if that
 *   item is not usable the walk goes on clockwise, so only the keys of a failed item move.
 */
import { createHash } from 'node:crypto';
import { configErrors } from '../errors.js';

/** The names of the built-in balancers. */
export type BalancerName = 'round_robin' | 'p2c' | 'consistent_hash';

/** What a balancer needs to know of an instance. */
export interface BalancerItem {
  /** `host:port`; identifies the item across updates. */
  readonly address: string;
  /** Relative share of traffic, > 0. */
  readonly weight: number;
  /** Calls in flight to the item now (used by `p2c`). */
  readonly activeCalls: number;
}

/** A load-balancing policy over a list of items. */
export interface Balancer<T extends BalancerItem> {
  /** Replaces the item list (called when the resolver reports new instances). */
  update(items: readonly T[]): void;
  /**
   * Picks an item among those for which `usable(item)` is true.
   * @param usable - filter (connection state, ejection, zone).
   * @param hashKey - the call's sticky key (`consistent_hash` only; others ignore it; a call
   *   without a key is balanced at random by `consistent_hash`).
   * @returns the item, or undefined when no item is usable.
   */
  pick(usable: (item: T) => boolean, hashKey: string | undefined): T | undefined;
}

/**
 * Creates a balancer.
 * @param name - the policy.
 * @param random - uniform source in [0, 1) (p2c sampling; consistent_hash for keyless calls).
 * @throws Error for an unknown policy name.
 */
export function createBalancer<T extends BalancerItem>(name: BalancerName, random: () => number = Math.random): Balancer<T> {
  switch (name) {
    case 'round_robin':
      return new RoundRobinBalancer<T>();
    case 'p2c':
      return new P2cBalancer<T>(random);
    case 'consistent_hash':
      return new ConsistentHashBalancer<T>(random);
    default:
      throw configErrors.UNKNOWN_BALANCER(name, 'round_robin, p2c or consistent_hash');
  }
}

/** Smooth weighted round robin; see the module comment. */
export class RoundRobinBalancer<T extends BalancerItem> implements Balancer<T> {
  private items: readonly T[] = [];
  private scores: number[] = [];

  /** @see Balancer.update */
  update(items: readonly T[]): void {
    const old = new Map(this.items.map((it, i) => [it.address, this.scores[i]!]));
    this.items = items;
    this.scores = items.map((it) => old.get(it.address) ?? 0);
  }

  /** @see Balancer.pick */
  pick(usable: (item: T) => boolean): T | undefined {
    const items = this.items;
    let total = 0;
    let best = -1;
    for (let i = 0; i < items.length; i++) {
      const it = items[i]!;
      if (!usable(it)) continue;
      this.scores[i]! += it.weight;
      total += it.weight;
      if (best < 0 || this.scores[i]! > this.scores[best]!) best = i;
    }
    if (best < 0) return undefined;
    this.scores[best]! -= total;
    return items[best];
  }
}

/** Power of two choices on in-flight calls per unit weight; see the module comment. */
export class P2cBalancer<T extends BalancerItem> implements Balancer<T> {
  private items: readonly T[] = [];
  private readonly scratch: T[] = [];

  /** @param random - uniform source in [0, 1). */
  constructor(private readonly random: () => number) {}

  /** @see Balancer.update */
  update(items: readonly T[]): void {
    this.items = items;
  }

  /** @see Balancer.pick */
  pick(usable: (item: T) => boolean): T | undefined {
    const items = this.items;
    const n = items.length;
    if (n === 0) return undefined;
    // Fast path: two random draws that are both usable (the common case: every item is healthy).
    if (n >= 2) {
      const i = Math.floor(this.random() * n);
      let j = Math.floor(this.random() * (n - 1));
      if (j >= i) j++;
      const a = items[i]!;
      const b = items[j]!;
      if (usable(a) && usable(b)) return lessLoaded(a, b);
    }
    const pool = this.scratch;
    pool.length = 0;
    for (const it of items) if (usable(it)) pool.push(it);
    let picked: T | undefined;
    if (pool.length === 1) picked = pool[0];
    else if (pool.length >= 2) {
      const i = Math.floor(this.random() * pool.length);
      let j = Math.floor(this.random() * (pool.length - 1));
      if (j >= i) j++;
      picked = lessLoaded(pool[i]!, pool[j]!);
    }
    pool.length = 0;
    return picked;
  }
}

function lessLoaded<T extends BalancerItem>(a: T, b: T): T {
  // Compare activeCalls/weight without dividing: a/wa <= b/wb  <=>  a*wb <= b*wa.
  return (a.activeCalls + 1) * b.weight <= (b.activeCalls + 1) * a.weight ? a : b;
}

/** Ketama points per unit of weight (libketama uses 160 per server of weight 1). */
const POINTS_PER_WEIGHT = 160;
/** Weights above this count as this much on the ring. */
const MAX_RING_WEIGHT = 1000;

/** Ketama consistent hashing; see the module comment. */
export class ConsistentHashBalancer<T extends BalancerItem> implements Balancer<T> {
  private items: readonly T[] = [];
  /** Sorted ring positions and, at the same index, the item that owns each. */
  private points = new Uint32Array(0);
  private owners: T[] = [];
  private readonly fallback: P2cBalancer<T>;

  /** @param random - used for calls without a hash key. */
  constructor(random: () => number) {
    this.fallback = new P2cBalancer<T>(random);
  }

  /** @see Balancer.update */
  update(items: readonly T[]): void {
    this.items = items;
    this.fallback.update(items);
    const ring: Array<{ point: number; item: T }> = [];
    for (const it of items) {
      // Weights are capped at 1000 (Instance), and here too for custom resolvers: ring size stays bounded.
      const count = Math.max(1, Math.round(POINTS_PER_WEIGHT * Math.min(it.weight, MAX_RING_WEIGHT)));
      for (let i = 0; i < Math.ceil(count / 4); i++) {
        const d = createHash('md5').update(`${it.address}-${i}`).digest();
        for (let k = 0; k < 4; k++) ring.push({ point: d.readUInt32LE(k * 4), item: it });
      }
    }
    // Ties are broken by address, so the ring does not depend on the order of `items`.
    ring.sort((x, y) => x.point - y.point || (x.item.address < y.item.address ? -1 : x.item.address > y.item.address ? 1 : 0));
    this.points = Uint32Array.from(ring.map((r) => r.point));
    this.owners = ring.map((r) => r.item);
  }

  /** @see Balancer.pick */
  pick(usable: (item: T) => boolean, hashKey: string | undefined): T | undefined {
    if (hashKey === undefined) return this.fallback.pick(usable);
    const n = this.points.length;
    if (n === 0) return undefined;
    let i = lowerBound(this.points, hashOf(hashKey));
    const first = this.owners[i % n]!;
    if (usable(first)) return first;
    const seen = new Set<T>([first]);
    for (let step = 1; step < n && seen.size < this.items.length; step++) {
      const it = this.owners[++i % n]!;
      if (seen.has(it)) continue;
      if (usable(it)) return it;
      seen.add(it);
    }
    return undefined;
  }
}

/** The ring position of a key: the first 32 bits (little-endian) of its MD5, as libketama. */
export function hashOf(key: string): number {
  return createHash('md5').update(key).digest().readUInt32LE(0);
}

function lowerBound(a: Uint32Array, x: number): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid]! < x) lo = mid + 1;
    else hi = mid;
  }
  return lo; // may be a.length: wraps to 0 in the caller's modulo
}
