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
  | {
      kind: 'push';
      id: string;
      value: string;
      since: number;
      dedupe: boolean;
      /** For an unknown outcome: the one sequence number a read returned its value at, if any (see {@link anonymize}). */
      seenAt?: number;
      /** For an anonymous push: the sequence numbers other items are known to hold (see {@link anonymize}). */
      taken?: ReadonlySet<number>;
    }
  | { kind: 'read'; after: number; limit: number }
  | { kind: 'trim'; upto: number };

/** A queue operation's output (`unknown` for an unknown outcome). */
export type QueueOutput =
  | { kind: 'push'; seq: number; /** The push found its request id already in the queue (informational; see {@link mergeAttempts}). */ duplicate?: boolean }
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
 * but the (unobservable) difference between two attempts of one request id both applying. Such a
 * push whose value reads returned at one sequence number only is marked `seenAt` it: it can only
 * have taken effect there (values are unique), which spares the search trying it anywhere else;
 * and an anonymous push cannot have taken a sequence number a read or a push showed another item at
 * (`taken`).
 */
export function anonymize<T extends { input: QueueInput; output: QueueOutput }>(ops: readonly T[]): T[] {
  const read = new Map<string, Set<number>>();
  const known = new Set<string>();
  const taken = new Set<number>();
  for (const op of ops) {
    if (op.output.kind === 'read') {
      for (const it of op.output.items) {
        read.set(it.value, (read.get(it.value) ?? new Set()).add(it.seq));
        taken.add(it.seq);
      }
    }
    if (op.input.kind === 'push' && op.output.kind === 'push') {
      known.add(op.input.id);
      taken.add(op.output.seq);
    }
  }
  return ops.map((op) => {
    const i = op.input;
    if (i.kind !== 'push' || op.output.kind !== 'unknown' || known.has(i.id)) return op;
    const seen = read.get(i.value);
    if (seen === undefined) return { ...op, input: { kind: 'push', id: ANONYMOUS, value: ANONYMOUS, since: 0, dedupe: false, taken } };
    // Its value was read at one place only: it took effect there (prunes the search: it is not tried elsewhere).
    return seen.size === 1 ? { ...op, input: { ...i, seenAt: [...seen][0]! } } : op;
  });
}

/**
 * Rewrites a queue's history for the checker, for the attempts of one request id (a push retried
 * after unknown outcomes) with its value read at one sequence number `k` at most. Nothing is lost:
 *  - a retry that found the id in the queue (`duplicate`) returned the place where an earlier
 *    attempt took effect: the attempts before it and it are one push, called when the first was;
 *  - a retry that pushed the item itself (at `k`) followed attempts that did not take effect, or
 *    took effect at another place and were trimmed before it looked: those are anonymous pushes
 *    (items no read saw, {@link ANONYMOUS}), which the search handles in bulk;
 *  - of attempts that all have unknown outcomes, at most one took effect at `k`: one push called
 *    when the first attempt was, the others anonymous.
 * Otherwise (the value read at two places) the attempts stay as they are. This only spares the
 * search trying, one by one, which attempt took effect.
 */
export function mergeAttempts<T extends { input: QueueInput; output: QueueOutput; call: number; return: number; unknown?: boolean }>(ops: readonly T[]): T[] {
  const seqsOf = new Map<string, Set<number>>();
  for (const op of ops) if (op.output.kind === 'read') for (const it of op.output.items) seqsOf.set(it.value, (seqsOf.get(it.value) ?? new Set()).add(it.seq));
  const attempts = new Map<string, T[]>();
  const out: T[] = [];
  for (const op of ops) {
    const i = op.input;
    if (i.kind !== 'push' || !i.dedupe || (seqsOf.get(i.value)?.size ?? 0) > 1) out.push(op);
    else attempts.set(i.id, [...(attempts.get(i.id) ?? []), op]);
  }
  const anonymous = (op: T): T => ({ ...op, input: { kind: 'push', id: ANONYMOUS, value: ANONYMOUS, since: 0, dedupe: false } });
  for (const group of attempts.values()) {
    const unknown = group.filter((op) => op.output.kind === 'unknown');
    const known = group.filter((op) => op.output.kind !== 'unknown');
    if (known.length > 1) {
      out.push(...group);
      continue;
    }
    const first = Math.min(...group.map((op) => op.call));
    const k = known[0];
    if (k === undefined) {
      // All unknown: one of them may be the item a read saw; the rest anonymous.
      const earliest = unknown.find((op) => op.call === first)!;
      out.push({ ...earliest }, ...unknown.filter((op) => op !== earliest).map(anonymous));
    } else if (k.output.kind === 'push' && k.output.duplicate === true) {
      out.push({ ...k, call: Math.min(k.call, ...unknown.filter((op) => op.call < k.call).map((op) => op.call)) }, ...unknown.filter((op) => op.call >= k.call).map(anonymous));
    } else {
      out.push(k, ...unknown.map(anonymous));
    }
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
      if (output.kind === 'unknown') {
        if (earlier > s.trimmedUpto) return { ok: true, state: s };
        // A read saw its value at `seenAt`: it took effect there, or it would be seen elsewhere.
        if (input.seenAt !== undefined && input.seenAt !== s.ids.length + 1) return { ok: false, state: s };
        if (input.taken?.has(s.ids.length + 1) === true) return { ok: false, state: s };
        return { ok: true, state: append(s, input.id, input.value) };
      }
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
  // Anonymous pushes are all alike; so are trims to one sequence number.
  interchangeable: (input) => (input.kind === 'push' && input.id === ANONYMOUS ? 'anonymous push' : input.kind === 'trim' ? `trim ${input.upto}` : undefined),
  progress: {
    // The trim point and the items pushed never decrease; a read pins both, and a trim to `upto`
    // whose outcome is unknown can change nothing once the trim point reached `upto`.
    of: (s) => (BigInt(s.trimmedUpto) << 32n) + BigInt(s.ids.length),
    bound: (input, output, unknown) => {
      if (!unknown && input.kind === 'read' && output.kind === 'read') return (BigInt(output.trimmedUpto) << 32n) + BigInt(output.lastSeq);
      if (unknown && input.kind === 'trim') return (BigInt(input.upto) << 32n) - 1n;
      return undefined;
    },
  },
};
