/**
 * The config center's model (services/config/model.ts): releases, gray, promote, rollback,
 * abandon, and what each reader sees; pure, so no storage here.
 */
import { describe, expect, it } from 'vitest';
import { abandon, decodeHead, emptyHead, encodeHead, gray, promote, publish, resolve, rollback } from '../../services/config/model.js';

const set = (o: Record<string, string>) => ({ set: o, delete: [] as string[] });

describe('config model', () => {
  it('publishes numbered full releases, each a snapshot of the whole namespace, and records who and when', () => {
    let h = emptyHead('shop.checkout');
    h = publish(h, set({ limit: '10', color: 'red' }), 'ada', 1000);
    h = publish(h, { set: { limit: '20' }, delete: ['color'] }, 'bob', 2000);
    expect(h.release).toEqual({ number: 2, values: { limit: '20' }, by: 'bob', at: 2000 });
    expect(h.lastOp).toEqual({ seq: 2, op: 'publish', by: 'bob', at: 2000, release: 2, keys: ['limit', 'color'] });
    expect(() => publish(h, set({}), 'ada', 3000)).toThrow(/no change/);
    expect(() => publish(h, set({ 'a=b': 'x' }), 'ada', 3000)).toThrow(/without '='/);
    expect(() => emptyHead('bad name')).toThrow(/namespace 'bad name'/);
  });

  it('a gray shows its overrides to matching readers only; promote makes them the next release in one step', () => {
    let h = publish(emptyHead('ns'), set({ limit: '10', color: 'red' }), 'ada', 1);
    h = gray(h, set({ limit: '50' }), [{ kind: 'zone', zone: 'z1' }], 'g1', 'ada', 2);
    expect(resolve(h, { zone: 'z1' })).toEqual({ release: 1, gray: true, grayId: 'g1', values: { limit: '50', color: 'red' } });
    expect(resolve(h, { zone: 'z2' })).toEqual({ release: 1, gray: false, values: { limit: '10', color: 'red' } });
    const before = resolve(h, { zone: 'z1' }).values;
    h = promote(h, 'ada', 3);
    expect(h.gray).toBeNull();
    expect(h.release!.number).toBe(2);
    // A gray reader sees the same values under a higher release number; everyone else too.
    expect(resolve(h, { zone: 'z1' })).toEqual({ release: 2, gray: false, values: before });
    expect(resolve(h, { zone: 'z2' }).values).toEqual(before);
    expect(() => promote(h, 'ada', 4)).toThrow(/no gray release to promote/);
    expect(() => abandon(h, 'ada', 4)).toThrow(/no gray release to abandon/);
  });

  it('a full release published during a gray never undoes a key under gray (Apollo #1677), and changes the others for gray readers too', () => {
    let h = publish(emptyHead('ns'), set({ limit: '10', color: 'red' }), 'ada', 1);
    h = gray(h, set({ limit: '50' }), [{ kind: 'users', users: ['u1'] }], 'g1', 'ada', 2);
    h = publish(h, set({ limit: '11', color: 'blue' }), 'bob', 3);
    expect(resolve(h, { userId: 'u1' }).values).toEqual({ limit: '50', color: 'blue' });
    expect(resolve(h, { userId: 'u2' }).values).toEqual({ limit: '11', color: 'blue' });
    h = promote(h, 'ada', 4);
    expect(h.release!.values).toEqual({ limit: '50', color: 'blue' });
  });

  it('widening a gray keeps its id and salt (so its users stay in), merges its overrides, replaces its rules', () => {
    let h = publish(emptyHead('ns'), set({ a: '1', b: '1' }), 'ada', 1);
    h = gray(h, set({ a: '2' }), [{ kind: 'percent', percent: 10 }], 'g1', 'ada', 2);
    const { id, salt } = h.gray!;
    h = gray(h, { set: {}, delete: [] }, [{ kind: 'percent', percent: 20 }], 'other', 'ada', 3);
    expect(h.gray).toMatchObject({ id, salt, overrides: { set: { a: '2' }, delete: [] }, rules: [{ kind: 'percent', percent: 20 }] });
    h = gray(h, { set: { b: '2' }, delete: ['a'] }, [{ kind: 'percent', percent: 20 }], 'other', 'ada', 4);
    expect(h.gray!.overrides).toEqual({ set: { b: '2' }, delete: ['a'] });
    expect(() => gray(h, set({ a: '3' }), [], 'x', 'ada', 5)).toThrow(/at least one rule/);
    expect(() => gray(emptyHead('ns'), set({ a: '3' }), [{ kind: 'zone', zone: 'z' }], 'x', 'ada', 5)).toThrow(/no release yet/);
    h = abandon(h, 'ada', 6);
    expect(h.gray).toBeNull();
    expect(resolve(h, { userId: 'anyone' }).values).toEqual({ a: '1', b: '1' });
  });

  it('rolls back to an earlier release as a new release; a running gray stays on top', () => {
    let h = publish(emptyHead('ns'), set({ a: '1' }), 'ada', 1);
    h = publish(h, set({ a: '2' }), 'ada', 2);
    h = gray(h, set({ b: 'g' }), [{ kind: 'zone', zone: 'z1' }], 'g1', 'ada', 3);
    h = rollback(h, 1, { a: '1' }, 'bob', 4);
    expect(h.release).toEqual({ number: 3, values: { a: '1' }, by: 'bob', at: 4 });
    expect(h.lastOp).toMatchObject({ op: 'rollback', release: 3, to: 1 });
    expect(resolve(h, { zone: 'z1' }).values).toEqual({ a: '1', b: 'g' });
    expect(() => rollback(h, 3, {}, 'bob', 5)).toThrow(/roll back to 1..2/);
  });

  it('encodes and decodes a head; a damaged or foreign one is refused', () => {
    const h = gray(publish(emptyHead('ns'), set({ a: '1' }), 'ada', 1), set({ a: '2' }), [{ kind: 'percent', percent: 5 }], 'g', 'ada', 2);
    expect(decodeHead(encodeHead(h), 'ns')).toEqual(h);
    expect(() => decodeHead(encodeHead(h), 'other')).toThrow(/not a namespace head/);
    expect(() => decodeHead(new TextEncoder().encode('{'), 'ns')).toThrow(/not JSON/);
    const bad = JSON.parse(new TextDecoder().decode(encodeHead(h))) as { gray: { rules: unknown[] } };
    bad.gray.rules = [{ kind: 'percent', percent: 200 }];
    expect(() => decodeHead(new TextEncoder().encode(JSON.stringify(bad)), 'ns')).toThrow(/percent must be a number from 0 to 100/);
  });
});
