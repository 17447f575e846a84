import { describe, expect, it } from 'vitest';
import { CallTable } from '../../framework/server/call-table.js';

describe('CallTable', () => {
  it('holds one call, then many, and finds, replaces and removes each by id', () => {
    const t = new CallTable<string>();
    expect(t.size).toBe(0);
    expect(t.get(0)).toBeUndefined();
    expect(t.has(0)).toBe(false);
    t.set(0, 'a'); // id 0 is a valid id
    expect([t.size, t.get(0), t.has(0), t.has(1)]).toEqual([1, 'a', true, false]);
    t.set(7, 'b');
    t.set(0xffffffff, 'c');
    expect(t.size).toBe(3);
    expect([t.get(0), t.get(7), t.get(0xffffffff)]).toEqual(['a', 'b', 'c']);
    t.set(7, 'b2'); // replaces, in the map
    t.set(0, 'a2'); // replaces, in the fields
    expect([t.size, t.get(0), t.get(7)]).toEqual([3, 'a2', 'b2']);
    expect(t.delete(0)).toBe(true);
    expect(t.delete(0)).toBe(false);
    expect([t.size, t.get(0), t.has(0)]).toEqual([2, undefined, false]);
    // The fields are free again: a new call goes there, and an id already in the map is replaced there.
    t.set(9, 'd');
    t.set(7, 'b3');
    expect([t.size, t.get(9), t.get(7)]).toEqual([3, 'd', 'b3']);
    expect(t.toArray().sort()).toEqual(['b3', 'c', 'd']);
    for (const id of [9, 7, 0xffffffff]) expect(t.delete(id)).toBe(true);
    expect([t.size, t.toArray()]).toEqual([0, []]);
  });

  it('toArray is a copy: removing calls while going through it is safe', () => {
    const t = new CallTable<number>();
    for (let id = 1; id <= 100; id++) t.set(id, id);
    let ended = 0;
    for (const c of t.toArray()) if (t.delete(c)) ended++;
    expect([ended, t.size]).toEqual([100, 0]);
  });
});
