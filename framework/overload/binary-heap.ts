/**
 * A binary min-heap (Williams, "Algorithm 232: Heapsort", CACM 1964; Floyd's O(n) build for
 * `retain`): the order is the caller's `less`. Pure data structure, for the call queue and the
 * deterministic simulators.
 */
export class BinaryHeap<T> {
  private items: T[] = [];

  /** @param less - true when `a` comes out before `b`; must be a strict weak order. */
  constructor(private readonly less: (a: T, b: T) => boolean) {}

  /** Items held. */
  get size(): number {
    return this.items.length;
  }

  /** Adds an item: O(log n). */
  push(item: T): void {
    const h = this.items;
    h.push(item);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(item, h[p]!)) break;
      h[i] = h[p]!;
      i = p;
    }
    h[i] = item;
  }

  /**
   * Removes the first item in `less` order: O(log n).
   * @returns it, or undefined when empty.
   */
  pop(): T | undefined {
    const h = this.items;
    if (h.length === 0) return undefined;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      this.down(0);
    }
    return top;
  }

  /** Keeps only the items `keep` accepts, in O(n) (Floyd's build). */
  retain(keep: (item: T) => boolean): void {
    this.items = this.items.filter(keep);
    for (let i = (this.items.length >> 1) - 1; i >= 0; i--) this.down(i);
  }

  /** Every item, in no particular order (a view: do not change it). */
  values(): readonly T[] {
    return this.items;
  }

  private down(i: number): void {
    const h = this.items;
    const n = h.length;
    const e = h[i]!;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && this.less(h[c + 1]!, h[c]!)) c++;
      if (!this.less(h[c]!, e)) break;
      h[i] = h[c]!;
      i = c;
    }
    h[i] = e;
  }
}
