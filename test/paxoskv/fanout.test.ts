/**
 * Fanout (services/paxoskv/fanout.ts): one follower per key, its latest state handed to every
 * subscriber; a slow subscriber skips to the newest; the follower stops after the last subscriber
 * leaves (and its linger), and its end ends the subscriptions.
 */
import { describe, expect, it } from 'vitest';
import { Fanout } from '../../services/paxoskv/fanout.js';

/** A controllable follower: records starts and stops, and exposes each key's emit. */
function follower() {
  const emits = new Map<string, (v: number) => void>();
  const ends = new Map<string, () => void>();
  const log: string[] = [];
  const follow = (key: string, emit: (v: number) => void, signal: AbortSignal): Promise<void> => {
    log.push(`start ${key}`);
    emits.set(key, emit);
    return new Promise<void>((resolve) => {
      ends.set(key, resolve);
      signal.addEventListener('abort', () => {
        log.push(`stop ${key}`);
        resolve();
      });
    });
  };
  return { follow, emits, ends, log };
}

const tick = () => new Promise<void>((r) => setImmediate(r));

describe('Fanout', () => {
  it('starts one follower per key for many subscribers, and hands each the latest state', async () => {
    const f = follower();
    const fan = new Fanout<number>(f.follow, 10);
    const ac = new AbortController();
    const got: number[][] = [[], [], []];
    const runs = got.map(async (list, i) => {
      for await (const v of fan.subscribe(i < 2 ? 'a' : 'b', ac.signal)) list.push(v);
    });
    await tick();
    expect(f.log).toEqual(['start a', 'start b']);
    expect([fan.upstreams, fan.subscribers]).toEqual([2, 3]);
    f.emits.get('a')!(1);
    await tick();
    f.emits.get('a')!(2);
    f.emits.get('b')!(7);
    await tick();
    // A late subscriber gets the latest at once.
    const late: number[] = [];
    const lateRun = (async () => {
      for await (const v of fan.subscribe('a', ac.signal)) late.push(v);
    })();
    await tick();
    ac.abort();
    await Promise.all([...runs, lateRun]);
    expect(got).toEqual([[1, 2], [1, 2], [7]]);
    expect(late).toEqual([2]);
  });

  it('a subscriber that does not keep up skips to the newest state (one pending value, no queue)', async () => {
    const f = follower();
    const fan = new Fanout<number>(f.follow, 10);
    const ac = new AbortController();
    const it = fan.subscribe('k', ac.signal)[Symbol.asyncIterator]();
    const first = it.next();
    await tick();
    for (let i = 1; i <= 1000; i++) f.emits.get('k')!(i);
    expect((await first).value).toBe(1000);
    f.emits.get('k')!(1001);
    f.emits.get('k')!(1002);
    expect((await it.next()).value).toBe(1002);
    ac.abort();
    expect((await it.next()).done).toBe(true);
  });

  it('stops a follower only after its last subscriber left and the linger passed; a returning subscriber keeps it', async () => {
    const f = follower();
    const fan = new Fanout<number>(f.follow, 50);
    const sub = async (signal: AbortSignal) => {
      for await (const _ of fan.subscribe('k', signal));
    };
    const a = new AbortController();
    const run = sub(a.signal);
    await tick();
    a.abort();
    await run;
    const b = new AbortController();
    const again = sub(b.signal); // within the linger: the same follower
    await new Promise((r) => setTimeout(r, 80));
    expect(f.log).toEqual(['start k']);
    b.abort();
    await again;
    await new Promise((r) => setTimeout(r, 80));
    expect(f.log).toEqual(['start k', 'stop k']);
    expect(fan.upstreams).toBe(0);
  });

  it('a follower that ends ends its subscriptions; close() ends them all', async () => {
    const f = follower();
    const fan = new Fanout<number>(f.follow, 10);
    const never = new AbortController();
    const one = (async () => {
      const seen: number[] = [];
      for await (const v of fan.subscribe('x', never.signal)) seen.push(v);
      return seen;
    })();
    const two = (async () => {
      for await (const _ of fan.subscribe('y', never.signal));
      return 'ended';
    })();
    await tick();
    f.emits.get('x')!(5);
    await tick();
    f.ends.get('x')!();
    expect(await one).toEqual([5]);
    fan.close();
    expect(await two).toBe('ended');
    expect(fan.upstreams).toBe(0);
  });
});
