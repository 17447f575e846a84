/**
 * The queue's sequential specification, for the linearizability checker (`checkPartition` in
 * linearizability.ts): one partition per queue. What it says:
 *  - a push appends its item with the next sequence number (1, 2, 3, ...), unless its request id is
 *    already among the items after its `since` that are not trimmed: then it adds nothing and
 *    returns the sequence number of one of the items with that id. When every item with its id was
 *    trimmed, either may happen (a trimmed segment may or may not be emptied yet);
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
      /**
       * For an unknown outcome: the values reads and pushes showed at sequence numbers (see
       * {@link prepare}); the push cannot have taken a place known to hold another value.
       */
      taken?: ReadonlyMap<number, string>;
      /**
       * For an unknown outcome of a push tried once: the one place reads saw its value at (it can
       * only have taken effect there, see {@link prepare}).
       */
      seenAt?: number;
    }
  | { kind: 'read'; after: number; limit: number }
  | { kind: 'trim'; upto: number };

/** A queue operation's output (`unknown` for an unknown outcome). */
export type QueueOutput =
  | { kind: 'push'; seq: number; /** The push found its request id already in the queue (informational; see {@link prepare}). */ duplicate?: boolean }
  | { kind: 'read'; items: Array<{ seq: number; value: string }>; lastSeq: number; trimmedUpto: number }
  | { kind: 'trim'; point: number }
  | { kind: 'unknown' };

/**
 * The id and value of an anonymous push (see {@link prepare}): such pushes are all alike, so the
 * checker treats them as interchangeable.
 */
export const ANONYMOUS = '\u0000anonymous';

/**
 * Rewrites a queue's history for the checker, to spare the search choices that cannot matter;
 * each rewrite keeps exactly the behaviours the specification allows:
 *  - every push with an unknown outcome gets `taken`: the value each sequence number is known to
 *    hold (a read returned it, or a push returned that place). Values are unique to a push
 *    request, so such a push cannot have taken a place known to hold another value;
 *  - a push with an unknown outcome that was its request id's only attempt, and whose value no
 *    read returned, becomes anonymous (id and value {@link ANONYMOUS}, no dedupe): its id can
 *    match nothing else, so all that can be known of it is that it appended an item nobody saw;
 *    if reads saw its value at one place only, it is marked `seenAt` that place: one attempt
 *    places its item once, so that is where it took effect, if anywhere;
 *  - when a retry found its request id in the queue (`duplicate`) at `k`, and reads saw the value
 *    at `k` only, one of the earlier attempts took effect at `k`: the attempts before it and it
 *    are one push, called when the first was (an earlier attempt that also took effect elsewhere,
 *    after a trim, would be seen or would leave a place unexplained: the check then fails, it
 *    never passes wrongly).
 */
export function prepare<T extends { input: QueueInput; output: QueueOutput; call: number; return: number; unknown?: boolean }>(ops: readonly T[]): T[] {
  const taken = new Map<number, string>();
  const readAt = new Map<string, Set<number>>();
  for (const op of ops) {
    if (op.output.kind === 'read') {
      for (const it of op.output.items) {
        taken.set(it.seq, it.value);
        readAt.set(it.value, (readAt.get(it.value) ?? new Set()).add(it.seq));
      }
    }
    if (op.input.kind === 'push' && op.output.kind === 'push') taken.set(op.output.seq, op.input.value);
  }
  const attempts = new Map<string, T[]>();
  for (const op of ops) if (op.input.kind === 'push') attempts.set(op.input.id, [...(attempts.get(op.input.id) ?? []), op]);
  const out: T[] = [];
  for (const op of ops) {
    const i = op.input;
    if (i.kind !== 'push' || attempts.get(i.id)?.[0] !== op) {
      if (i.kind !== 'push') out.push(op);
      continue;
    }
    const group = attempts.get(i.id)!;
    const withTaken = (o: T): T => (o.output.kind === 'unknown' && o.input.kind === 'push' ? { ...o, input: { ...o.input, taken } } : o);
    if (group.length === 1) {
      const only = group[0]!;
      const at = readAt.get(i.value);
      if (only.output.kind === 'unknown' && at === undefined) {
        out.push({ ...only, input: { kind: 'push', id: ANONYMOUS, value: ANONYMOUS, since: 0, dedupe: false, taken } });
      } else if (only.output.kind === 'unknown' && at !== undefined && at.size === 1 && i.kind === 'push') {
        out.push({ ...only, input: { ...i, taken, seenAt: [...at][0]! } });
      } else out.push(withTaken(only));
      continue;
    }
    const dup = group.find((o) => o.output.kind === 'push' && o.output.duplicate === true);
    const seen = readAt.get(i.value);
    if (dup !== undefined && dup.output.kind === 'push' && (seen === undefined || (seen.size === 1 && seen.has(dup.output.seq)))) {
      const before = group.filter((o) => o.output.kind === 'unknown' && o.call < dup.call);
      out.push({ ...dup, call: Math.min(dup.call, ...before.map((o) => o.call)) });
      out.push(...group.filter((o) => o !== dup && !before.includes(o)).map(withTaken));
      continue;
    }
    out.push(...group.map(withTaken));
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
      // Earlier pushes of this request id (after `since`): any of them may be returned (one
      // trimmed but not yet emptied too); a new item only when every one of them is trimmed.
      const copies: number[] = [];
      if (input.dedupe) for (let n = input.since; n < s.ids.length; n++) if (s.ids[n] === input.id) copies.push(n + 1);
      const live = copies.some((seq) => seq > s.trimmedUpto);
      if (output.kind === 'unknown') {
        if (live) return { ok: true, state: s };
        if (input.seenAt !== undefined && input.seenAt !== s.ids.length + 1) return { ok: false, state: s };
        const held = input.taken?.get(s.ids.length + 1);
        if (held !== undefined && held !== input.value) return { ok: false, state: s };
        return { ok: true, state: append(s, input.id, input.value) };
      }
      if (output.kind !== 'push') return { ok: false, state: s };
      if (copies.includes(output.seq)) return { ok: true, state: s };
      if (live) return { ok: false, state: s };
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
  // Anonymous pushes are all alike; so are the attempts of one push (one request id, value and
  // `since`), and trims to one sequence number.
  interchangeable: (input) =>
    input.kind === 'push' ? (input.id === ANONYMOUS ? 'anonymous push' : `push ${input.id}\u0000${input.value}\u0000${input.since}\u0000${input.dedupe}`) : input.kind === 'trim' ? `trim ${input.upto}` : undefined,
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
