/**
 * The Sync server's Notify streams (examples/inbox/notify-hub.ts), without a server: what a
 * stream yields, and when, for pokes before, during and after its first read of the inbox.
 */
import { describe, expect, it } from 'vitest';
import { NotifyHub, NotifyStream } from '../../examples/inbox/notify-hub.js';

/** A promise and its resolve and reject. */
function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

/** Whether `p` settled within a few event-loop turns. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  void p.then(
    () => (done = true),
    () => (done = true),
  );
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  return done;
}

describe('NotifyStream', () => {
  it('yields at once when the inbox is past the client, then once per move, folding pokes in between', async () => {
    const hub = new NotifyHub();
    const s = new NotifyStream(hub, 'u', 3, async () => 5);
    expect(hub.users).toBe(1);
    expect(await s.next()).toEqual({ done: false, value: { seq: 5n } });
    const next = s.next();
    expect(await settled(next)).toBe(false);
    hub.poke('u', 4); // not past what the client was told
    expect(await settled(next)).toBe(false);
    hub.poke('u', 6);
    expect(await next).toEqual({ done: false, value: { seq: 6n } });
    hub.poke('u', 7);
    hub.poke('u', 9);
    expect(await s.next()).toEqual({ done: false, value: { seq: 9n } });
    expect(await s.return()).toEqual({ done: true, value: undefined });
    expect(hub.users).toBe(0);
    expect(hub.poke('u', 10)).toBe(false);
  });

  it('a poke that comes while the first read is under way is not lost, whichever finishes first', async () => {
    const hub = new NotifyHub();
    const read = deferred<number>();
    const s = new NotifyStream(hub, 'u', 0, () => read.promise);
    const first = s.next();
    hub.poke('u', 2);
    expect(await first).toEqual({ done: false, value: { seq: 2n } });
    read.resolve(1); // older than the poke: nothing more to say
    expect(await settled(s.next())).toBe(false);
  });

  it('waits when the inbox is not past the client, and a failed first read fails the stream', async () => {
    const hub = new NotifyHub();
    const quiet = new NotifyStream(hub, 'a', 4, async () => 4);
    expect(await settled(quiet.next())).toBe(false);
    const broken = new NotifyStream(hub, 'b', 0, () => Promise.reject(new Error('replica down')));
    await expect(broken.next()).rejects.toThrow('replica down');
  });

  it('return() ends a next() that waits, and later ones', async () => {
    const hub = new NotifyHub();
    const s = new NotifyStream(hub, 'u', 0, async () => 0);
    const waiting = s.next();
    expect(await settled(waiting)).toBe(false);
    await s.return();
    expect(await waiting).toEqual({ done: true, value: undefined });
    expect(await s.next()).toEqual({ done: true, value: undefined });
  });

  it('several streams of one user are all woken, and each leaves the hub on its own', async () => {
    const hub = new NotifyHub();
    const a = new NotifyStream(hub, 'u', 0, async () => 0);
    const b = new NotifyStream(hub, 'u', 0, async () => 0);
    const [na, nb] = [a.next(), b.next()];
    await settled(na);
    hub.poke('u', 1);
    expect(await na).toEqual({ done: false, value: { seq: 1n } });
    expect(await nb).toEqual({ done: false, value: { seq: 1n } });
    await a.return();
    expect(hub.users).toBe(1);
    const nb2 = b.next();
    hub.poke('u', 2);
    expect(await nb2).toEqual({ done: false, value: { seq: 2n } });
    await b.return();
    expect(hub.users).toBe(0);
  });
});
