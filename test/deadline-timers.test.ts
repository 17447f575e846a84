import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { DeadlineTimers, type DeadlineEntry, type DeadlineList } from '../framework/context/deadline-timers.js';

class Entry implements DeadlineEntry {
  deadlineList: DeadlineList | undefined;
  deadlinePrev: DeadlineEntry | undefined;
  deadlineNext: DeadlineEntry | undefined;
  constructor(
    readonly name: string,
    readonly deadline: number,
    private readonly fired: Array<[string, number]>,
    private readonly then?: () => void,
  ) {}
  onDeadline(now: number): void {
    this.fired.push([this.name, now]);
    this.then?.();
  }
}

describe('DeadlineTimers', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('fires each entry at its deadline, in order, sharing one list per relative timeout', () => {
    const timers = new DeadlineTimers();
    const fired: Array<[string, number]> = [];
    const t0 = Date.now();
    timers.add(new Entry('a', t0 + 100, fired), t0);
    vi.advanceTimersByTime(10);
    timers.add(new Entry('b', t0 + 110, fired), Date.now());
    timers.add(new Entry('c', t0 + 60, fired), Date.now());
    expect(timers.size).toBe(3);
    vi.advanceTimersByTime(48);
    expect(fired).toEqual([]);
    vi.advanceTimersByTime(2);
    expect(fired).toEqual([['c', t0 + 60]]);
    vi.advanceTimersByTime(40);
    expect(fired.map((f) => f[0])).toEqual(['c', 'a']);
    vi.advanceTimersByTime(10);
    expect(fired).toEqual([['c', t0 + 60], ['a', t0 + 100], ['b', t0 + 110]]);
    expect(timers.size).toBe(0);
  });

  it('never fires a removed entry, and re-arms for the next one when the head is removed', () => {
    const timers = new DeadlineTimers();
    const fired: Array<[string, number]> = [];
    const t0 = Date.now();
    const a = new Entry('a', t0 + 50, fired);
    const b = new Entry('b', t0 + 80, fired);
    timers.add(a, t0);
    vi.advanceTimersByTime(30);
    timers.add(b, Date.now());
    timers.remove(a);
    timers.remove(a); // idempotent
    expect(timers.size).toBe(1);
    vi.advanceTimersByTime(49);
    expect(fired).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(fired).toEqual([['b', t0 + 80]]);
    timers.remove(b);
    expect(timers.size).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('waits out deadlines longer than a Node timer can (2^31 ms) without firing early', () => {
    const timers = new DeadlineTimers();
    const fired: Array<[string, number]> = [];
    const t0 = Date.now();
    const far = t0 + 2 ** 31 + 5000;
    timers.add(new Entry('far', far, fired), t0);
    vi.advanceTimersByTime(2 ** 31);
    expect(fired).toEqual([]);
    vi.advanceTimersByTime(5000);
    expect(fired).toEqual([['far', far]]);
  });

  it('copes with an onDeadline that removes other entries of the same list', () => {
    const timers = new DeadlineTimers();
    const fired: Array<[string, number]> = [];
    const t0 = Date.now();
    const child = new Entry('child', t0 + 100, fired);
    const parent = new Entry('parent', t0 + 100, fired, () => timers.remove(child));
    timers.add(parent, t0);
    timers.add(child, t0);
    vi.advanceTimersByTime(100);
    expect(fired).toEqual([['parent', t0 + 100]]);
    expect(timers.size).toBe(0);
  });

  it('keeps deadlines of one key sorted even when inserted out of order', () => {
    const timers = new DeadlineTimers();
    const fired: Array<[string, number]> = [];
    const t0 = Date.now();
    // Same relative key (100 ms) but absolute deadlines out of order, as after a clock step.
    timers.add(new Entry('late', t0 + 100, fired), t0);
    timers.add(new Entry('early', t0 + 99, fired), t0 - 1);
    vi.advanceTimersByTime(100);
    expect(fired.map((f) => f[0])).toEqual(['early', 'late']);
  });
});
