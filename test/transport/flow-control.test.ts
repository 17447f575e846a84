/**
 * Stream flow control, pure: the sender's credit, the receiver's grants, and the inbound queue
 * that grants as its consumer pulls (framework/transport/flow-control.ts, inbound-messages.ts).
 */
import { describe, expect, it } from 'vitest';
import { ReceiveCredit, SendCredit } from '../../framework/transport/flow-control.js';
import { InboundMessages } from '../../framework/transport/inbound-messages.js';

describe('SendCredit', () => {
  it('allows sending while a message and a byte of credit remain; one message may overshoot the bytes', () => {
    const c = new SendCredit({ messages: 2, bytes: 100 });
    expect(c.available).toBe(true);
    c.spend(150);
    expect(c.available).toBe(false);
    c.grant(0, 60);
    expect(c.available).toBe(true);
    c.spend(1);
    expect(c.available).toBe(false); // out of messages
  });

  it('wait() resolves on a grant that makes sending possible, and on close', async () => {
    const c = new SendCredit({ messages: 1, bytes: 10 });
    c.spend(10);
    let woke = 0;
    void c.wait().then(() => woke++);
    c.grant(1, 0); // bytes still exhausted
    await Promise.resolve();
    expect(woke).toBe(0);
    c.grant(0, 5);
    await Promise.resolve();
    expect(woke).toBe(1);
    c.spend(5);
    void c.wait().then(() => woke++);
    c.close();
    await Promise.resolve();
    expect(woke).toBe(2);
  });
});

describe('ReceiveCredit', () => {
  it('grants back what was consumed once half a window (messages or bytes) was taken', () => {
    const r = new ReceiveCredit({ messages: 4, bytes: 1000 });
    expect(r.consumed(10)).toBeUndefined();
    expect(r.consumed(10)).toEqual({ messages: 2, bytes: 20 });
    expect(r.consumed(600)).toEqual({ messages: 1, bytes: 600 });
  });
});

describe('InboundMessages', () => {
  it('hands queued messages to the consumer in order, then the end; grants as it pulls', async () => {
    const grants: Array<[number, number]> = [];
    const q = new InboundMessages<number>({ grant: (m, b) => grants.push([m, b]), abandoned: () => {} }, { messages: 4, bytes: 1 << 20 });
    for (let i = 0; i < 4; i++) q.push(i, 10);
    const got: number[] = [];
    for (let i = 0; i < 4; i++) got.push((await q.next()).value as number);
    q.push(4, 10);
    q.end();
    for await (const x of q) got.push(x);
    expect(got).toEqual([0, 1, 2, 3, 4]);
    // No grant once the stream has ended: the sender is done.
    expect(grants).toEqual([
      [2, 20],
      [2, 20],
    ]);
  });

  it('wakes a waiting consumer, and rejects with the error after the queued messages', async () => {
    const q = new InboundMessages<string>({ grant: () => {}, abandoned: () => {} });
    const first = q.next();
    q.push('a', 1);
    expect(await first).toEqual({ done: false, value: 'a' });
    q.push('b', 1);
    q.end(new Error('boom'));
    expect(await q.next()).toEqual({ done: false, value: 'b' });
    await expect(q.next()).rejects.toThrow('boom');
    expect(await q.next()).toEqual({ done: true, value: undefined });
  });

  it('a consumer that leaves early reports it once and drops what is queued', async () => {
    let abandoned = 0;
    const q = new InboundMessages<number>({ grant: () => {}, abandoned: () => abandoned++ });
    q.push(1, 1);
    q.push(2, 1);
    for await (const _ of q) break;
    expect(abandoned).toBe(1);
    expect(q.length).toBe(0);
    q.push(3, 1);
    expect(q.length).toBe(0);
    expect(await q.next()).toEqual({ done: true, value: undefined });
  });

  it('does not report leaving after the stream already ended', async () => {
    let abandoned = 0;
    const q = new InboundMessages<number>({ grant: () => {}, abandoned: () => abandoned++ });
    q.push(1, 1);
    q.end();
    for await (const _ of q) break;
    expect(abandoned).toBe(0);
  });
});

describe('InboundMessages against a peer that ignores its credit', () => {
  it('refuses a message beyond the window (messages or bytes) instead of queueing it', () => {
    const q = new InboundMessages<number>({ grant: () => {}, abandoned: () => {} }, { messages: 3, bytes: 100 });
    expect(q.push(1, 10)).toBe(true);
    expect(q.push(2, 10)).toBe(true);
    expect(q.push(3, 10)).toBe(true);
    expect(q.push(4, 10)).toBe(false);
    const b = new InboundMessages<number>({ grant: () => {}, abandoned: () => {} }, { messages: 100, bytes: 100 });
    expect(b.push(1, 150)).toBe(true); // one message may overshoot the byte credit
    expect(b.push(2, 1)).toBe(false);
    expect(b.queued).toEqual({ messages: 1, bytes: 150 });
  });
});
