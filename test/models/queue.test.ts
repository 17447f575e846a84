/**
 * The queue (services/queue) through its public class, on a three-replica PaxosKV cluster in this
 * process over loopback sockets: dense sequence numbers across segments and concurrent pushers,
 * reads with limits, request ids, trims, bad input and damaged records.
 */
import { describe, expect, it } from 'vitest';
import { Status } from '../../index.js';
import { PaxosQueue } from '../../services/queue/queue.js';
import { MAX_ITEM_BYTES, SEGMENT_ITEMS } from '../../services/queue/segment.js';
import { useInProcessCluster } from '../support/kv-cluster.js';
import { rpcFailure } from '../support/rpc-failure.js';

const text = (s: string) => new TextEncoder().encode(s);
const str = (b: Uint8Array) => new TextDecoder().decode(b);
const file = useInProcessCluster('queue');

describe('PaxosQueue', () => {
  it('numbers items 1, 2, 3, ... across segments, and reads them back in order with limits', async () => {
    const q = new PaxosQueue(file.kv);
    const n = SEGMENT_ITEMS * 2 + 5;
    for (let i = 1; i <= n; i++) expect((await q.push('dense', text(`item ${i}`))).seq).toBe(i);
    // A second client with nothing cached finds the tail and goes on.
    expect((await new PaxosQueue(file.kv2).push('dense', text(`item ${n + 1}`))).seq).toBe(n + 1);
    const all = await q.read('dense', 0, { limit: 1000 });
    expect(all.items.map((it) => it.seq)).toEqual(Array.from({ length: n + 1 }, (_, i) => i + 1));
    expect(all.items.map((it) => str(it.value))).toEqual(Array.from({ length: n + 1 }, (_, i) => `item ${i + 1}`));
    expect(all).toMatchObject({ lastSeq: n + 1, trimmedUpto: 0, more: false });
    // Any suffix, in pages.
    const page = await q.read('dense', 60, { limit: 10 });
    expect(page.items.map((it) => it.seq)).toEqual([61, 62, 63, 64, 65, 66, 67, 68, 69, 70]);
    expect(page.more).toBe(true);
    // After the last item, and past it.
    expect(await q.read('dense', n + 1)).toMatchObject({ items: [], lastSeq: n + 1, more: false });
    expect(await q.read('dense', n + 50)).toMatchObject({ items: [], lastSeq: n + 1, more: false });
    expect(await q.read('never-pushed', 0)).toMatchObject({ items: [], lastSeq: 0, trimmedUpto: 0, more: false });
  }, 60_000);

  it('gives concurrent pushers from two clients every sequence number once, in push order', async () => {
    const a = new PaxosQueue(file.kv);
    const b = new PaxosQueue(file.kv2);
    const pushes = await Promise.all(Array.from({ length: 80 }, (_, i) => (i % 2 === 0 ? a : b).push('contended', text(`p${i}`))));
    const seqs = pushes.map((p) => p.seq).sort((x, y) => x - y);
    expect(seqs).toEqual(Array.from({ length: 80 }, (_, i) => i + 1));
    const read = await a.read('contended', 0, { limit: 1000 });
    // Each item sits at the sequence number its push returned.
    const bySeq = new Map(read.items.map((it) => [it.seq, str(it.value)]));
    pushes.forEach((p, i) => expect(bySeq.get(p.seq)).toBe(`p${i}`));
  }, 60_000);

  it('applies a push retried with the same request id once, from any client', async () => {
    const q = new PaxosQueue(file.kv);
    const first = await q.push('retried', text('hello'), { requestId: 'msg-1' });
    await q.push('retried', text('other'));
    expect(first).toEqual({ seq: 1, duplicate: false });
    // A retry from a client with nothing cached, and one that says where to look.
    expect(await new PaxosQueue(file.kv2).push('retried', text('hello'), { requestId: 'msg-1' })).toEqual({ seq: 1, duplicate: true });
    expect(await q.push('retried', text('hello'), { requestId: 'msg-1', since: 0 })).toEqual({ seq: 1, duplicate: true });
    const read = await q.read('retried', 0);
    expect(read.items.map((it) => str(it.value))).toEqual(['hello', 'other']);
    // Found across full segments too.
    for (let i = 0; i < SEGMENT_ITEMS + 3; i++) await q.push('retried', text(`x${i}`), { requestId: `r-${i}` });
    expect(await new PaxosQueue(file.kv2).push('retried', text('x1'), { requestId: 'r-1' })).toEqual({ seq: 4, duplicate: true });
    expect((await q.read('retried', 0, { limit: 1000 })).lastSeq).toBe(SEGMENT_ITEMS + 5);
  }, 60_000);

  it('batches concurrent pushes to one queue: one request id pushed many times at once lands once', async () => {
    const q = new PaxosQueue(file.kv);
    const same = await Promise.all(Array.from({ length: 20 }, () => q.push('batched', text('once'), { requestId: 'r-same' })));
    expect(new Set(same.map((r) => r.seq))).toEqual(new Set([1]));
    expect(same.filter((r) => !r.duplicate)).toHaveLength(1);
    const mixed = await Promise.all(Array.from({ length: 100 }, (_, i) => q.push('batched', text(`m${i}`))));
    expect(mixed.map((r) => r.seq).sort((a, b) => a - b)).toEqual(Array.from({ length: 100 }, (_, i) => i + 2));
    const read = await q.read('batched', 0, { limit: 1000 });
    expect(read.lastSeq).toBe(101);
    // Each item sits at the sequence number its push returned.
    const bySeq = new Map(read.items.map((it) => [it.seq, str(it.value)]));
    mixed.forEach((r, i) => expect(bySeq.get(r.seq)).toBe(`m${i}`));
  }, 60_000);

  it('refuses, unsent, a push whose deadline passes while it waits for the batch before it', async () => {
    const q = new PaxosQueue(file.kv);
    const first = q.push('deadline', text('a'));
    const late = q.push('deadline', text('b'), { deadline: Date.now() - 1 });
    expect((await first).seq).toBe(1);
    const err = await rpcFailure(late);
    expect(err.code).toBe(Status.DEADLINE_EXCEEDED);
    expect(err.reason).toBe('PUSH_DEADLINE_EXCEEDED');
    expect(err.notProcessed).toBe(true);
    expect((await q.read('deadline', 0)).lastSeq).toBe(1);
  });

  it('trims: reads start after the trim point, numbering goes on, and it never passes the last item', async () => {
    const q = new PaxosQueue(file.kv);
    for (let i = 1; i <= SEGMENT_ITEMS * 2 + 10; i++) await q.push('trimmed', text(`t${i}`));
    expect(await q.trim('trimmed', SEGMENT_ITEMS + 3)).toBe(SEGMENT_ITEMS + 3);
    const read = await new PaxosQueue(file.kv2).read('trimmed', 0, { limit: 5 });
    expect(read.items.map((it) => it.seq)).toEqual([68, 69, 70, 71, 72]);
    expect(read.trimmedUpto).toBe(SEGMENT_ITEMS + 3);
    // A trim below the point changes nothing; one past the last item stops at it.
    expect(await q.trim('trimmed', 10)).toBe(SEGMENT_ITEMS + 3);
    expect(await q.trim('trimmed', 10_000)).toBe(SEGMENT_ITEMS * 2 + 10);
    expect(await q.read('trimmed', 0)).toMatchObject({ items: [], lastSeq: SEGMENT_ITEMS * 2 + 10, more: false });
    expect((await q.push('trimmed', text('next'))).seq).toBe(SEGMENT_ITEMS * 2 + 11);
    expect((await q.read('trimmed', 0)).items.map((it) => str(it.value))).toEqual(['next']);
    // The emptied segments are small tombstones now.
    const first = await file.kv.get('queue/trimmed/0');
    expect(first!.value.length).toBeLessThan(16);
  }, 60_000);

  it('refuses bad input with INVALID_ARGUMENT, naming what is wrong', async () => {
    const q = new PaxosQueue(file.kv);
    const cases: Array<[() => Promise<unknown>, RegExp]> = [
      [() => q.push('', text('x')), /queue name/],
      [() => q.push('q', new Uint8Array(MAX_ITEM_BYTES + 1)), /exceeds the maximum/],
      [() => q.push('q', 'text' as unknown as Uint8Array), /must be bytes/],
      [() => q.push('q', text('x'), { requestId: '' }), /request id/],
      [() => q.push('q', text('x'), { requestId: 'r', since: -1 }), /since/],
      [() => q.read('q', 1.5), /afterSeq/],
      [() => q.read('q', 0, { limit: 0 }), /limit/],
      [() => q.read('q', 0, { limit: 1001 }), /limit/],
      [() => q.trim('q', -3), /uptoSeq/],
    ];
    for (const [call, message] of cases) {
      const err = await rpcFailure(call());
      expect(err.code).toBe(Status.INVALID_ARGUMENT);
      expect(err.reason).toBe('INVALID_QUEUE_REQUEST');
      expect(err.message).toMatch(message);
    }
  });

  it('reports a damaged segment as DATA_LOSS, and the cluster serves on', async () => {
    const q = new PaxosQueue(file.kv);
    await q.push('damaged', text('a'));
    await file.kv.put('queue/damaged/0', text('not msgpack at all'));
    const err = await rpcFailure(q.read('damaged', 0));
    expect(err.code).toBe(Status.DATA_LOSS);
    expect(err.reason).toBe('QUEUE_RECORD_MALFORMED');
    expect(err.message).toContain('queue/damaged/0');
    expect((await rpcFailure(q.push('damaged', text('b')))).code).toBe(Status.DATA_LOSS);
    expect((await q.push('healthy', text('c'))).seq).toBe(1);
  });
});
