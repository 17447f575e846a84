/**
 * The queue's sequential specification, for the linearizability checker (`checkPartition` in
 * linearizability.ts): one partition per queue. What it says:
 *  - a push appends its item with the next sequence number (1, 2, 3, ...), unless its request id is
 *    already among the items after its `since` that are not trimmed: then it adds nothing and
 *    returns that item's sequence number. When the item with its id was trimmed, either may happen
 *    (a trimmed segment may or may not be emptied yet);
 *  - a read returns the items after `max(after, trim point)`, at most `limit`, with the queue's
 *    last sequence number and trim point;
 *  - a trim sets the trim point to `max(trim point, min(upto, last sequence number))` and returns it.
 * So no item is lost, duplicated or reordered, and sequence numbers are dense and never reused.
 */
import type { PartitionModel } from './linearizability.js';

/** A queue operation's input. Values are text (unique per push request), ids are request ids. */
export type QueueInput =
  | { kind: 'push'; id: string; value: string; since: number; dedupe: boolean }
  | { kind: 'read'; after: number; limit: number }
  | { kind: 'trim'; upto: number };

/** A queue operation's output (`unknown` for an unknown outcome). */
export type QueueOutput =
  | { kind: 'push'; seq: number }
  | { kind: 'read'; items: Array<{ seq: number; value: string }>; lastSeq: number; trimmedUpto: number }
  | { kind: 'trim'; point: number }
  | { kind: 'unknown' };

/**
 * The id (and value) of a push whose outcome is unknown, whose request id had no known outcome,
 * and whose value no read returned: such pushes are all alike (appending an item no one saw), so
 * the checker treats them as interchangeable (see {@link anonymize}).
 */
export const ANONYMOUS = '\u0000anonymous';

/**
 * Rewrites a queue's history for the checker: pushes whose outcome is unknown, whose request id
 * no push with a known outcome had, and whose value no read returned become anonymous (id and
 * value {@link ANONYMOUS}, no dedupe). Nothing can tell such items apart, so this loses nothing
 * but the (unobservable) difference between two attempts of one request id both applying.
 */
export function anonymize<T extends { input: QueueInput; output: QueueOutput }>(ops: readonly T[]): T[] {
  const read = new Set<string>();
  const known = new Set<string>();
  for (const op of ops) {
    if (op.output.kind === 'read') for (const it of op.output.items) read.add(it.value);
    if (op.input.kind === 'push' && op.output.kind === 'push') known.add(op.input.id);
  }
  return ops.map((op) =>
    op.input.kind === 'push' && op.output.kind === 'unknown' && !known.has(op.input.id) && !read.has(op.input.value)
      ? { ...op, input: { kind: 'push', id: ANONYMOUS, value: ANONYMOUS, since: 0, dedupe: false } }
      : op,
  );
}

/**
 * Rewrites a queue's history for the checker: the attempts of one request id (a push retried after
 * an unknown outcome, as many times as it took) become one push, called when the first attempt was
 * and returning what the last one did (unknown if none had a known outcome). The request id makes
 * the attempts one push that takes effect once, between those times: the specification this
 * checks. An id is left alone when a read returned its value at two sequence numbers (a retry
 * after a trim emptied the first item's segment may push it again, which the specification allows).
 */
export function mergeAttempts<T extends { input: QueueInput; output: QueueOutput; call: number; return: number; unknown?: boolean }>(ops: readonly T[]): T[] {
  const seqsOf = new Map<string, Set<number>>();
  for (const op of ops) {
    if (op.output.kind !== 'read') continue;
    for (const it of op.output.items) {
      const seqs = seqsOf.get(it.value) ?? new Set();
      seqs.add(it.seq);
      seqsOf.set(it.value, seqs);
    }
  }
  const attempts = new Map<string, T[]>();
  const out: T[] = [];
  for (const op of ops) {
    const i = op.input;
    if (i.kind !== 'push' || !i.dedupe || (seqsOf.get(i.value)?.size ?? 0) > 1) out.push(op);
    else attempts.set(i.id, [...(attempts.get(i.id) ?? []), op]);
  }
  for (const group of attempts.values()) {
    const first = group.reduce((a, b) => (b.call < a.call ? b : a));
    const known = group.filter((op) => op.output.kind !== 'unknown');
    if (known.length > 1 && new Set(known.map((op) => (op.output as { seq: number }).seq)).size > 1) {
      out.push(...group);
      continue;
    }
    const last = known.at(-1);
    out.push(last === undefined ? { ...first } : { ...last, call: first.call, input: first.input });
  }
  return out;
}

/** The state: every item ever pushed (ids and values, seq = index + 1) and the trim point. */
export interface QueueState {
  readonly ids: readonly string[];
  readonly values: readonly string[];
  readonly trimmedUpto: number;
}

const append = (s: QueueState, id: string, value: string): QueueState => ({ ids: [...s.ids, id], values: [...s.values, value], trimmedUpto: s.trimmedUpto });

/** The queue's sequential specification. */
export const queueModel: PartitionModel<QueueState, QueueInput, QueueOutput> = {
  init: () => ({ ids: [], values: [], trimmedUpto: 0 }),
  step(s, input, output) {
    if (input.kind === 'push') {
      // The earlier push of this request id (after `since`), if any.
      let earlier = -1;
      if (input.dedupe) for (let n = input.since; n < s.ids.length; n++) if (s.ids[n] === input.id) { earlier = n + 1; break; }
      if (output.kind === 'unknown') return { ok: true, state: earlier > s.trimmedUpto ? s : append(s, input.id, input.value) };
      if (output.kind !== 'push') return { ok: false, state: s };
      if (earlier > s.trimmedUpto) return { ok: output.seq === earlier, state: s };
      if (earlier > 0 && output.seq === earlier) return { ok: true, state: s };
      return { ok: output.seq === s.ids.length + 1, state: append(s, input.id, input.value) };
    }
    if (input.kind === 'trim') {
      const point = Math.max(s.trimmedUpto, Math.min(input.upto, s.ids.length));
      const next = { ...s, trimmedUpto: point };
      if (output.kind === 'unknown') return { ok: true, state: next };
      return { ok: output.kind === 'trim' && output.point === point, state: next };
    }
    if (output.kind === 'unknown') return { ok: true, state: s };
    if (output.kind !== 'read' || output.lastSeq !== s.ids.length || output.trimmedUpto !== s.trimmedUpto) return { ok: false, state: s };
    const from = Math.max(input.after, s.trimmedUpto);
    const want = s.values.slice(from, from + input.limit);
    const ok = output.items.length === want.length && output.items.every((it, n) => it.seq === from + n + 1 && it.value === want[n]);
    return { ok, state: s };
  },
  key: (s) => `${s.trimmedUpto}|${s.ids.join('\u0000')}`,
  readOnly: (input) => input.kind === 'read',
  interchangeable: (input) => (input.kind === 'push' && input.id === ANONYMOUS ? 'anonymous push' : undefined),
  progress: {
    // Items pushed and the trim point never decrease; a read pins both.
    of: (s) => (BigInt(s.ids.length) << 32n) + BigInt(s.trimmedUpto),
    bound: (input, output, unknown) =>
      !unknown && input.kind === 'read' && output.kind === 'read' ? (BigInt(output.lastSeq) << 32n) + BigInt(output.trimmedUpto) : undefined,
  },
};
