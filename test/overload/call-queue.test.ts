/**
 * The call queue (pure): the order it serves in, the oldest-wait signal, and its removals.
 */
import { describe, expect, it } from 'vitest';
import { priorityLevel } from '../../framework/overload/admission.js';
import { CallQueue } from '../../framework/overload/call-queue.js';

describe('CallQueue', () => {
  it('serves the most important business priority first, first come first served within one (not by user priority)', () => {
    const q = new CallQueue<string>();
    q.push('b64-u5', priorityLevel(64, 5), 0, Infinity);
    q.push('b1-u100', priorityLevel(1, 100), 1, Infinity);
    q.push('b64-u0', priorityLevel(64, 0), 2, Infinity);
    q.push('b1-u3', priorityLevel(1, 3), 3, Infinity);
    const order: string[] = [];
    for (let x = q.shift(); x !== undefined; x = q.shift()) order.push(x);
    expect(order).toEqual(['b1-u100', 'b1-u3', 'b64-u5', 'b64-u0']);
    expect(q.size).toBe(0);
    expect(q.oldestSince()).toBeUndefined();
  });

  it('tells when the oldest waiting call started waiting, whatever was served first', () => {
    const q = new CallQueue<string>();
    q.push('old-low', priorityLevel(96, 0), 100, Infinity);
    q.push('new-top', priorityLevel(1, 0), 150, Infinity);
    expect(q.oldestSince()).toBe(100);
    expect(q.shift()).toBe('new-top');
    expect(q.oldestSince()).toBe(100);
    expect(q.shift()).toBe('old-low');
    expect(q.oldestSince()).toBeUndefined();
  });

  it('removes the calls above a level, and from the oldest on while a predicate holds', () => {
    const q = new CallQueue<number>();
    for (let i = 0; i < 10; i++) q.push(i, priorityLevel(i < 5 ? 1 : 64, i), i * 10, i * 10 + 50);
    expect(q.removeAbove(priorityLevel(32, 0)).sort((a, b) => a - b)).toEqual([5, 6, 7, 8, 9]);
    expect(q.size).toBe(5);
    // Deadlines passed by t = 75: calls 0, 1 and 2 (deadlines 50, 60, 70).
    expect(q.removeOldestWhile((_, _since, deadline) => deadline <= 75)).toEqual([0, 1, 2]);
    expect(q.oldestSince()).toBe(30);
    expect([q.shift(), q.shift(), q.shift()]).toEqual([3, 4, undefined]);
  });

  it('keeps its order through many pushes, shifts and removals (a heap, rebuilt after removals)', () => {
    const q = new CallQueue<{ b: number; seq: number }>();
    let seq = 0;
    let x = 12345;
    const rand = () => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) % 1000) / 1000;
    const out: Array<{ b: number; seq: number }> = [];
    for (let round = 0; round < 200; round++) {
      for (let i = 0; i < 20; i++) {
        const b = Math.floor(rand() * 4) * 32;
        q.push({ b, seq: seq++ }, priorityLevel(b, Math.floor(rand() * 128)), round, Infinity);
      }
      if (round % 50 === 49) q.removeAbove(priorityLevel(64, 127));
      for (let i = 0; i < 15; i++) {
        const v = q.shift();
        if (v !== undefined) out.push(v);
      }
      // Within a round's shifts: business priority never gets worse... until the queue runs dry of it.
      for (let i = out.length - 14; i < out.length; i++) {
        const [a, b] = [out[i - 1]!, out[i]!];
        if (a.b === b.b) expect(a.seq).toBeLessThan(b.seq);
        else expect(a.b).toBeLessThan(b.b);
      }
    }
  });

  it('one old call at the front holds nothing served after it: 50,000 pushes and shifts later it is still the oldest, alone', () => {
    const q = new CallQueue<number>();
    q.push(-1, priorityLevel(96, 0), 0, Infinity);
    for (let i = 0; i < 50_000; i++) {
      q.push(i, priorityLevel(1, 0), i + 1, Infinity);
      expect(q.shift()).toBe(i);
    }
    expect(q.size).toBe(1);
    expect(q.oldestSince()).toBe(0);
    expect(q.removeAbove(priorityLevel(64, 0))).toEqual([-1]);
    expect(q.size).toBe(0);
  });

  it('counts the waiting calls per level and the calls served before a newcomer of each business priority, through every removal', () => {
    const q = new CallQueue<string>();
    q.push('b1', priorityLevel(1, 7), 0, 50);
    q.push('b32-a', priorityLevel(32, 0), 1, Infinity);
    q.push('b32-b', priorityLevel(32, 0), 2, Infinity);
    q.push('b96', priorityLevel(96, 9), 3, Infinity);
    expect(q.byLevel[priorityLevel(32, 0)]).toBe(2);
    expect(q.byLevel[priorityLevel(96, 9)]).toBe(1);
    expect(q.ahead(priorityLevel(0, 0))).toBe(0);
    expect(q.ahead(priorityLevel(1, 127))).toBe(1);
    expect(q.ahead(priorityLevel(32, 99))).toBe(3); // its own business priority counts whatever the user priority
    expect(q.ahead(priorityLevel(127, 127))).toBe(4);
    expect(q.shift()).toBe('b1');
    expect(q.removeAbove(priorityLevel(64, 0))).toEqual(['b96']);
    expect(q.removeOldestWhile((x) => x === 'b32-a')).toEqual(['b32-a']);
    expect(q.byLevel[priorityLevel(1, 7)]).toBe(0);
    expect(q.byLevel[priorityLevel(32, 0)]).toBe(1);
    expect(q.byLevel[priorityLevel(96, 9)]).toBe(0);
    expect(q.ahead(priorityLevel(127, 127))).toBe(1);
    // One call removed by its handle (its client cancelled it), whatever its place; twice is a no-op.
    const h = q.push('b40', priorityLevel(40, 1), 5, Infinity);
    q.push('b50', priorityLevel(50, 1), 6, Infinity);
    expect(q.removeCall(h)).toBe('b40');
    expect(h.gone).toBe(true);
    expect(q.removeCall(h)).toBeUndefined();
    expect(q.byLevel[priorityLevel(40, 1)]).toBe(0);
    expect(q.ahead(priorityLevel(127, 127))).toBe(2);
    expect(q.shift()).toBe('b32-b');
    expect(q.shift()).toBe('b50');
    expect(() => q.push('bad', 16384, 4, Infinity)).toThrow(/level 16384/);
    expect(() => q.push('bad', 1.5, 4, Infinity)).toThrow(/level 1.5/);
    expect(q.size).toBe(0);
  });
});
