/**
 * A linearizability checker for PaxosKV histories (and, through {@link checkPartition}, for any
 * sequential model), after porcupine (github.com/anishathalye/porcupine, `checker.go`).
 *
 * ## Algorithm
 * Wing & Gong's backtracking search ("Testing and verifying concurrent objects", 1993) with Lowe's
 * memoisation ("Testing for linearizability", 2017), as porcupine implements it:
 *  - every operation contributes a call entry and a return entry; the entries are sorted by time
 *    (see the tie rule below) into a doubly-linked list;
 *  - the search walks the list from its head: a call entry met before the first return entry is a
 *    *candidate* (every operation that must precede it has been linearized). It applies a candidate
 *    to the model; when the model accepts the operation's output, it *lifts* the operation's call
 *    and return entries out of the list, records the operation in a bitset of linearized operations
 *    and restarts from the head. When it reaches a return entry without success, the operation of
 *    that return entry cannot be linearized on this path: it backtracks (pops the last linearized
 *    operation, *unlifts* its entries and restores the model state) and tries the next candidate;
 *  - a cache of (linearized bitset, model state) configurations already visited (Lowe) prunes
 *    repeats: a configuration reached again is known to lead nowhere;
 *  - the history is linearizable when the list empties; it is not when the search backtracks past
 *    the first operation.
 *
 * P-compositionality: linearizability is local (Herlihy & Wing, "Linearizability: a correctness
 * condition for concurrent objects", 1990), so {@link checkKvHistory} partitions the history by key
 * and checks each key on its own: a history is linearizable iff each key's sub-history is.
 *
 * Additions to porcupine. Each is sound: it only skips branches that cannot succeed or that are
 * equivalent to branches explored anyway, so the verdict is the same as without them (a fuzz test
 * compares the checker with a brute-force one).
 *  - *Unknown outcomes* (timeouts, lost connections) are operations with return time +Infinity whose
 *    output the model accepts from any state, as in porcupine. Such an operation may take effect at
 *    any point after its call; "never took effect" is the same as "took effect after everything".
 *    So: the history is linearizable as soon as every known outcome is linearized (the unknown ones
 *    go last); an unknown operation is never applied where it would not change the state (placing
 *    it last instead is as good); known operations are tried before unknown ones. Unknown operations
 *    are kept out of the entry list, in a list of their own (they return after every known one).
 *  - *Read-only operations* (a get, a failed cas) that the current state accepts are linearized at
 *    once, without trying alternatives: a linearization that places one later can move it here.
 *  - *Interchangeable unknown operations* (same effect from every state, see
 *    {@link PartitionModel.interchangeable}) are only linearized in call order, and the memo records
 *    how many of each class were applied rather than which.
 *  - *Progress pruning*: when the model names a measure that never decreases (PaxosKV: the version)
 *    and an operation's output pins the measure it needs (a put that returned version 7 needs
 *    version 6 before it), a branch whose measure has passed what a pending operation needs is
 *    abandoned at once; and unknown operations that can no longer change the state (PaxosKV: a cas
 *    expecting a version already passed) are left out of the memo (see
 *    {@link PartitionModel.progress}).
 *  - For PaxosKV, values that no read ever returned are all the same value to the model (nothing
 *    can tell them apart), which merges states and makes blind writes interchangeable; unknown gets
 *    constrain nothing and are dropped.
 * With these, a PaxosKV key's search is close to linear in its number of operations: versions pin
 * the order of writes, reads need no branching, and blind unknown writes are counted rather than chosen.
 *
 * ## The tie rule (how equal times are ordered)
 * Intervals are half-open, [call, return): an operation whose return time equals another's call
 * time precedes it (it must take effect first). Formally, `a` precedes `b` when
 * `a.return < b.call`, or `a.return === b.call` unless both `a` and `b` take zero time
 * (`call === return`) at that same instant: two such instantaneous operations are treated as
 * concurrent (each would otherwise have to precede the other). See {@link precedes}.
 * In the entry list, at one time t: returns of operations called before t, then calls of
 * zero-length operations at t, then their returns, then calls of operations returning after t.
 * {@link HistoryRecorder} never produces ties: it makes its times strictly increasing in the order
 * its methods are called, so the recorded real-time order is exactly the observed one.
 *
 * Pure code: no I/O, no timers, no randomness.
 */

// =============================================================================================
// PaxosKV histories

/** An operation on one key of PaxosKV. `expectedVersion` 0n means "the key is absent (null)". */
export type KvInput =
  | { kind: 'get' }
  | { kind: 'put'; value: Uint8Array }
  | { kind: 'delete' }
  | { kind: 'cas'; expectedVersion: bigint; value: Uint8Array };

/**
 * What an operation returned:
 *  - `get`: `{ value, version }`, or `null` when the key's value is null (never written, or deleted);
 *  - `put`, `delete`, successful `cas`: `{ version }`, the key's new version;
 *  - failed `cas`: `{ failed: 'FAILED_PRECONDITION' }` (the key is unchanged);
 *  - any kind: `{ unknown: true }` when the outcome is unknown (timeout, connection lost): the
 *    operation may or may not have taken effect, at any time after its call.
 */
export type KvOutput =
  | { value: Uint8Array; version: bigint }
  | null
  | { version: bigint }
  | { failed: 'FAILED_PRECONDITION' }
  | { unknown: true };

/**
 * One operation of a history.
 *
 * Times (`call`, `return`) are numbers in any unit (milliseconds, virtual ticks, event counters), as
 * long as one history uses one clock. `call` is when the client sent the request (before it could
 * take effect), `return` when the client received the answer (after it took effect). An operation
 * whose output is `{ unknown: true }` has `return: Infinity` (any finite `return` given for it is
 * ignored: it may take effect later). An operation that failed with a definite error meaning "not
 * applied" (e.g. INVALID_ARGUMENT, or a FAILED_PRECONDITION of anything but `cas`) must be left out
 * of the history by the caller (see {@link HistoryRecorder.discard}).
 */
export interface KvOperation {
  /** Caller's identifier, used only in explanations. */
  id: number;
  /** Client (process, connection) that issued it; used only in explanations. */
  client: number;
  key: string;
  input: KvInput;
  output: KvOutput;
  /** Invocation time. */
  call: number;
  /** Response time; `Infinity` when the outcome is unknown. */
  return: number;
}

/** The checker's verdict on a whole history. */
export interface CheckResult {
  /** `verdict === 'linearizable'`. */
  ok: boolean;
  /** `'unknown'`: some key's search exceeded its budget and no key was found non-linearizable. */
  verdict: 'linearizable' | 'not-linearizable' | 'unknown';
  /** The first failing key, in order of first appearance in the history (or the first key whose budget ran out). */
  key?: string;
  /**
   * A human-readable account of the failure: the longest linearizable prefix of that key's
   * operations found by the search, the state after it, and the operations that could not be placed
   * next (with why each was rejected).
   */
  explanation?: string;
  /** Number of operations in the history (all keys). */
  operationsChecked: number;
}

/** Options of {@link checkKvHistory}. */
export interface CheckOptions {
  /**
   * Search budget per key: the number of distinct (linearized set, state) configurations the search
   * may visit before giving up with verdict `'unknown'`. Default {@link DEFAULT_MAX_STATES_PER_KEY}.
   * Memory grows with it (each visited configuration is cached).
   */
  maxStatesPerKey?: number;
}

/** Default search budget per key (visited configurations). */
export const DEFAULT_MAX_STATES_PER_KEY = 1_000_000;

/**
 * Checks that a PaxosKV history is linearizable: that there is one sequential order of all its
 * operations, consistent with real time (an operation that returned before another was called
 * comes first; see the tie rule in this module's documentation), in which every output is what the
 * PaxosKV model returns. Unknown outcomes may be placed anywhere after their call (including "never").
 *
 * Each key is checked on its own (linearizability is local); keys are checked in order of first
 * appearance, and the first non-linearizable key is reported.
 *
 * Model: per key `{ value: bytes | null, version: bigint }`, initially `{ null, 0n }`. Every
 * successful put, delete and cas adds 1 to the version; a failed cas changes nothing; a get returns
 * `null` when the value is null. `cas(expectedVersion, value)` succeeds exactly when
 * `expectedVersion === 0n ? value === null : (value !== null && version === expectedVersion)`.
 * Values are compared by bytes.
 *
 * @param history - the operations, in any order.
 * @param options - the search budget.
 * @returns the verdict; for a failure, the key and an explanation.
 * @throws TypeError when an operation is malformed (an output that does not fit its input's kind,
 *   a version that is not a bigint, a non-finite call time, a return before the call).
 */
export function checkKvHistory(history: KvOperation[], options: CheckOptions = {}): CheckResult {
  const budget = options.maxStatesPerKey ?? DEFAULT_MAX_STATES_PER_KEY;
  const byKey = new Map<string, KvOperation[]>();
  for (const op of history) {
    validate(op);
    let ops = byKey.get(op.key);
    if (ops === undefined) byKey.set(op.key, (ops = []));
    ops.push(op);
  }
  let firstUnknown: { key: string; explanation: string } | undefined;
  for (const [key, ops] of byKey) {
    const partition = kvPartition(ops);
    const result = checkPartition(partition.ops, KV_MODEL, budget);
    if (result.verdict === 'not-linearizable') {
      // Progress pruning abandons branches early, which makes the longest prefix it found short and
      // unhelpful; search again without it (bounded) for the explanation.
      const plain = checkPartition(partition.ops, KV_MODEL, Math.min(budget, EXPLAIN_BUDGET), { boundPruning: false });
      const prefix = (plain.verdict === 'not-linearizable' ? plain : result).longestPrefix ?? [];
      return {
        ok: false,
        verdict: 'not-linearizable',
        key,
        explanation: explainFailure(key, partition.sources, prefix, result.statesExplored),
        operationsChecked: history.length,
      };
    }
    if (result.verdict === 'unknown' && firstUnknown === undefined) {
      firstUnknown = {
        key,
        explanation:
          `key ${JSON.stringify(key)}: search budget exceeded (${result.statesExplored} configurations ` +
          `visited, maxStatesPerKey ${budget}) among ${ops.length} operations; the verdict is unknown.`,
      };
    }
  }
  if (firstUnknown !== undefined) {
    return { ok: false, verdict: 'unknown', ...firstUnknown, operationsChecked: history.length };
  }
  return { ok: true, verdict: 'linearizable', operationsChecked: history.length };
}

/**
 * Whether operation `a` must take effect before operation `b` (real-time order, with the tie rule:
 * intervals are half-open, so `a.return === b.call` means `a` first, except between two
 * zero-length operations at the same instant, which are concurrent). Unknown outcomes
 * (`return === Infinity`) precede nothing.
 */
export function precedes(a: { call: number; return: number }, b: { call: number; return: number }): boolean {
  if (a.return < b.call) return true;
  if (a.return !== b.call) return false;
  return !(a.call === a.return && b.call === b.return);
}

// =============================================================================================
// Recorder

/**
 * Records a PaxosKV history as a client (or a simulator) runs it.
 *
 * Call {@link invoke} just before sending a request and {@link complete} just after receiving its
 * answer, with the current time. Times are made strictly increasing in the order of the calls to
 * this recorder (a time not greater than the previous one is nudged up by the smallest representable
 * step), so the recorded real-time order is exactly the order the recorder observed and equal
 * clock readings (common in simulations) never create false orderings: a completion recorded before
 * an invocation comes before it; an invocation recorded before a completion overlaps it.
 *
 * Operations never completed are reported with an unknown outcome. Input bytes are copied.
 */
export class HistoryRecorder {
  private readonly ops = new Map<number, KvOperation & { done: boolean }>();
  private nextId = 0;
  private last = -Infinity;

  /**
   * Records an invocation.
   * @param client - the client issuing it (for explanations).
   * @param key - the key it operates on.
   * @param input - the operation.
   * @param now - the current time (finite; any unit, one clock for the whole history).
   * @returns the operation's id, to pass to {@link complete}, {@link unknown} or {@link discard}.
   */
  invoke(client: number, key: string, input: KvInput, now: number): number {
    const id = this.nextId++;
    const copy: KvInput =
      input.kind === 'put' || input.kind === 'cas' ? { ...input, value: input.value.slice() } : { ...input };
    this.ops.set(id, {
      id,
      client,
      key,
      input: copy,
      output: { unknown: true },
      call: this.stamp(now),
      return: Infinity,
      done: false,
    });
    return id;
  }

  /**
   * Records an operation's answer. An output of `{ unknown: true }` is the same as {@link unknown}.
   * @param id - from {@link invoke}.
   * @param output - what the operation returned (bytes are copied).
   * @param now - the current time.
   * @throws Error when `id` is unknown or already completed.
   */
  complete(id: number, output: KvOutput, now: number): void {
    const op = this.pending(id);
    const t = this.stamp(now);
    op.done = true;
    if (output !== null && 'unknown' in output) return;
    op.output = output !== null && 'value' in output ? { value: output.value.slice(), version: output.version } : output;
    op.return = t;
  }

  /**
   * Records that an operation's outcome is unknown (timeout, connection lost): it may take effect
   * at any time after its call, or never.
   * @throws Error when `id` is unknown or already completed.
   */
  unknown(id: number): void {
    this.pending(id).done = true;
  }

  /**
   * Forgets an operation that failed with a definite error meaning "not applied" (e.g.
   * INVALID_ARGUMENT): such operations are left out of the history.
   * @throws Error when `id` is unknown or already completed.
   */
  discard(id: number): void {
    this.pending(id);
    this.ops.delete(id);
  }

  /** The history so far, in invocation order (copies); operations still pending are reported as unknown. */
  operations(): KvOperation[] {
    return [...this.ops.values()].map(({ done: _done, ...op }) => ({ ...op }));
  }

  private pending(id: number): KvOperation & { done: boolean } {
    const op = this.ops.get(id);
    if (op === undefined) throw new Error(`HistoryRecorder: no operation ${id}`);
    if (op.done) throw new Error(`HistoryRecorder: operation ${id} already completed`);
    return op;
  }

  private stamp(now: number): number {
    if (!Number.isFinite(now)) throw new TypeError(`HistoryRecorder: time must be finite, got ${now}`);
    this.last = now > this.last ? now : nextUp(this.last);
    return this.last;
  }
}

/** The smallest double greater than `x` (finite `x`). */
function nextUp(x: number): number {
  if (x === 0) return Number.MIN_VALUE;
  const f = new Float64Array([x]);
  const bits = new BigInt64Array(f.buffer);
  bits[0] = bits[0]! + (x > 0 ? 1n : -1n);
  return f[0]!;
}

// =============================================================================================
// Generic core

/**
 * One operation of a partition, for {@link checkPartition}. Times as in {@link KvOperation}.
 * `unknown: true` marks an unknown outcome: its return time is taken as +Infinity, and the model's
 * `step` must accept it from every state (it may still change the state).
 */
export interface PartitionOperation<I, O> {
  input: I;
  output: O;
  call: number;
  return: number;
  unknown?: boolean;
}

/** A sequential specification, for {@link checkPartition}. */
export interface PartitionModel<S, I, O> {
  /** The initial state. */
  init(): S;
  /**
   * Applies one operation: `ok` is whether `output` is what the operation returns from `state`,
   * `state` the state after it. Must not mutate its arguments. Must return `ok: true` for unknown
   * outcomes.
   */
  step(state: S, input: I, output: O): { ok: boolean; state: S };
  /** A string identifying the state (equal states, equal strings), for memoisation. */
  key(state: S): string;
  /**
   * Optional pruning hint: a measure of states that no `step` ever decreases (PaxosKV: the
   * version), and a bound per operation, or `undefined` for none:
   *  - for a known outcome, the largest measure it can be applied from (`step` fails from any
   *    state with a greater measure). The search abandons a branch once its measure exceeds the
   *    bound of a known operation still to be linearized;
   *  - for an unknown outcome, the largest measure from which it can still change the state. Past
   *    it the operation is dead, and whether it was applied no longer matters to the memo.
   */
  progress?: {
    of(state: S): bigint;
    bound(input: I, output: O, unknown: boolean): bigint | undefined;
  };
  /**
   * Optional hint: whether an operation with this output never changes the state when `step`
   * accepts it (PaxosKV: a get, a failed cas). Such an operation, once it is a candidate and
   * accepted by the current state, is linearized at once without trying alternatives: any
   * linearization that places it later can move it to here (it must follow nothing still pending,
   * and nothing else sees a difference).
   */
  readOnly?(input: I, output: O): boolean;
  /**
   * Optional symmetry hint, for unknown outcomes only: operations with the same (defined) string
   * have the same effect from every state, so the search linearizes them only in call order.
   */
  interchangeable?(input: I): string | undefined;
}

/** The outcome of {@link checkPartition}. Operation numbers are indices into its `ops` argument. */
export interface PartitionResult {
  verdict: 'linearizable' | 'not-linearizable' | 'unknown';
  /**
   * When linearizable: the operations in a valid linearization order (unknown outcomes that never
   * needed to take effect come last).
   */
  linearization?: number[];
  /**
   * When not linearizable (or unknown): the longest sequence of operations the search could
   * linearize (a valid linearization of a prefix of the history, in order), after which it was stuck.
   */
  longestPrefix?: number[];
  /** Distinct (linearized set, state) configurations visited. */
  statesExplored: number;
}

/**
 * Checks one partition (e.g. one key's operations) against a sequential model: Wing & Gong's search
 * with Lowe's memoisation, after porcupine's `checkSingle` (see this module's documentation, also
 * for the tie rule and the reductions).
 *
 * Besides porcupine's search, with the model's optional hints: read-only operations the state
 * accepts are linearized at once; an unknown outcome is never applied where it would not change the
 * state (putting it at the end instead is always as good); once every known outcome is linearized
 * the history is (the unknown ones go last); interchangeable unknown outcomes are applied in call
 * order; progress bounds abandon hopeless branches and drop dead unknown outcomes from the memo.
 *
 * @param ops - the operations, in any order.
 * @param model - the sequential specification.
 * @param budget - the most (linearized set, state) configurations to visit before answering
 *   `'unknown'` (default {@link DEFAULT_MAX_STATES_PER_KEY}).
 * @param options - `boundPruning: false` keeps the progress measure for the memo but does not
 *   abandon branches on bounds (slower; its `longestPrefix` is more telling, for explanations).
 * @throws TypeError when an operation's call time is not finite or its return is before its call.
 */
export function checkPartition<S, I, O>(
  ops: ReadonlyArray<PartitionOperation<I, O>>,
  model: PartitionModel<S, I, O>,
  budget: number = DEFAULT_MAX_STATES_PER_KEY,
  options: { boundPruning?: boolean } = {},
): PartitionResult {
  const n = ops.length;
  const unknown = new Uint8Array(n);
  const ret = new Float64Array(n);
  let knownLeft = 0;
  for (let i = 0; i < n; i++) {
    const op = ops[i]!;
    unknown[i] = op.unknown === true ? 1 : 0;
    ret[i] = op.unknown === true ? Infinity : op.return;
    if (!unknown[i]) knownLeft++;
    if (!Number.isFinite(op.call) || !(ret[i]! >= op.call)) {
      throw new TypeError(`checkPartition: operation ${i} has call ${op.call} and return ${op.return}`);
    }
  }

  // ---- Entries, sorted with the tie rule. Node 0 is the list head; op i's call is node 2i+1 and
  // its return node 2i+2; `pos` is a node's place in the sorted order. The list holds the known
  // outcomes only: an unknown one returns at +Infinity, after every known return, so it is a
  // candidate whenever its call comes before the first return left in the list. Those are kept in
  // call order in a second list (`unext`/`uprev`, sentinel n) of the ones not yet linearized.
  const order: number[] = [];
  for (let i = 0; i < n; i++) order.push(2 * i + 1, 2 * i + 2);
  const time = (node: number): number => (node & 1 ? ops[(node - 1) >> 1]!.call : ret[(node - 2) >> 1]!);
  const tieClass = (node: number): number => {
    const i = (node - 1) >> 1;
    const zero = ops[i]!.call === ret[i]!;
    if (node & 1) return zero ? 1 : 3; // call
    return zero ? 2 : 0; // return
  };
  // (Infinity - Infinity is NaN, which || passes over: unknown returns sort by class, then node.)
  order.sort((a, b) => time(a) - time(b) || tieClass(a) - tieClass(b) || a - b);
  const pos = new Int32Array(2 * n + 1);
  order.forEach((node, p) => (pos[node] = p));
  const next = new Int32Array(2 * n + 1);
  const prev = new Int32Array(2 * n + 1);
  const unext = new Int32Array(n + 1);
  const uprev = new Int32Array(n + 1);
  let last = 0;
  let ulast = n;
  for (const node of order) {
    const i = (node - 1) >> 1;
    if (unknown[i]) {
      if (node & 1) {
        unext[ulast] = i;
        uprev[i] = ulast;
        ulast = i;
      }
      continue;
    }
    next[last] = node;
    prev[node] = last;
    last = node;
  }
  next[last] = -1;
  unext[ulast] = n;
  uprev[n] = ulast;
  const lift = (i: number): void => {
    if (unknown[i]) {
      unext[uprev[i]!] = unext[i]!;
      uprev[unext[i]!] = uprev[i]!;
      return;
    }
    const c = 2 * i + 1;
    const r = c + 1;
    next[prev[c]!] = next[c]!;
    prev[next[c]!] = prev[c]!; // a call is always followed by something (at least its return)
    next[prev[r]!] = next[r]!;
    if (next[r]! !== -1) prev[next[r]!] = prev[r]!;
  };
  /** Undoes `lift(i)`; undos come in the reverse order of lifts. */
  const unlift = (i: number): void => {
    if (unknown[i]) {
      unext[uprev[i]!] = i;
      uprev[unext[i]!] = i;
      return;
    }
    const c = 2 * i + 1;
    const r = c + 1;
    next[prev[r]!] = r;
    if (next[r]! !== -1) prev[next[r]!] = r;
    next[prev[c]!] = c;
    prev[next[c]!] = c;
  };
  /** The sorted position of the first return entry left in the list (there is one while known outcomes are left). */
  const firstReturnPos = (): number => {
    let e = next[0]!;
    while (e & 1) e = next[e]!;
    return pos[e]!;
  };

  // ---- Linearized set.
  const words = new Uint32Array((n + 31) >>> 5);
  const isSet = (i: number): boolean => (words[i >>> 5]! & (1 << (i & 31))) !== 0;
  const set = (i: number): void => void (words[i >>> 5]! |= 1 << (i & 31));
  const clear = (i: number): void => void (words[i >>> 5]! &= ~(1 << (i & 31)));

  // ---- Symmetry: unknown operations of one class are linearized in call order.
  const classOf = new Int32Array(n).fill(-1);
  const rankInClass = new Int32Array(n);
  const appliedInClass: number[] = [];
  const firstInClass: number[] = [];
  // Which members of a class are linearized follows from their number: the memo uses the counts.
  const classed = new Uint32Array((n + 31) >>> 5);
  if (model.interchangeable !== undefined) {
    const classes = new Map<string, number[]>();
    for (let i = 0; i < n; i++) {
      if (!unknown[i]) continue;
      const k = model.interchangeable(ops[i]!.input);
      if (k === undefined) continue;
      let members = classes.get(k);
      if (members === undefined) classes.set(k, (members = []));
      members.push(i);
    }
    for (const members of classes.values()) {
      if (members.length < 2) continue; // (a class of one is just an operation)
      members.sort((a, b) => ops[a]!.call - ops[b]!.call || a - b); // the order of their call entries
      const c = appliedInClass.length;
      appliedInClass.push(0);
      firstInClass.push(members[0]!);
      members.forEach((i, rank) => {
        classOf[i] = c;
        rankInClass[i] = rank;
        classed[i >>> 5]! |= 1 << (i & 31);
      });
    }
  }

  // ---- Progress bounds. Known operations sorted by bound, `lowest` the first position whose
  // operation is not linearized (every earlier one is). Unknown operations sorted by bound, the
  // first `deadCount` of them dead (bound below the current measure), marked in `dead`.
  const progress = model.progress;
  const pruneOnBounds = progress !== undefined && options.boundPruning !== false;
  const bounds: (bigint | undefined)[] = new Array<bigint | undefined>(n);
  const byBound: number[] = [];
  const boundPos = new Int32Array(n).fill(-1);
  const unknownByBound: number[] = [];
  if (progress !== undefined) {
    for (let i = 0; i < n; i++) {
      bounds[i] = progress.bound(ops[i]!.input, ops[i]!.output, unknown[i] === 1);
      if (bounds[i] !== undefined) (unknown[i] ? unknownByBound : byBound).push(i);
    }
    const byItsBound = (a: number, b: number): number => (bounds[a]! < bounds[b]! ? -1 : bounds[a]! > bounds[b]! ? 1 : a - b);
    byBound.sort(byItsBound);
    unknownByBound.sort(byItsBound);
    byBound.forEach((i, pos) => (boundPos[i] = pos));
  }
  let lowest = 0;
  const advanceLowest = (): void => {
    while (lowest < byBound.length && isSet(byBound[lowest]!)) lowest++;
  };
  /** The smallest bound among pending known operations other than `except`. */
  const lowestBound = (except: number): bigint | undefined => {
    let pos = lowest;
    while (pos < byBound.length && (isSet(byBound[pos]!) || byBound[pos] === except)) pos++;
    return pos < byBound.length ? bounds[byBound[pos]!] : undefined;
  };
  const dead = new Uint32Array(words.length);
  let deadCount = 0;
  /** Marks exactly the unknown operations whose bound is below `measure` as dead. */
  const markDead = (measure: bigint): void => {
    while (deadCount < unknownByBound.length && bounds[unknownByBound[deadCount]!]! < measure) {
      const i = unknownByBound[deadCount++]!;
      dead[i >>> 5]! |= 1 << (i & 31);
    }
    while (deadCount > 0 && bounds[unknownByBound[deadCount - 1]!]! >= measure) {
      const i = unknownByBound[--deadCount]!;
      dead[i >>> 5]! &= ~(1 << (i & 31));
    }
  };

  // ---- Read-only operations.
  const readOnly = new Uint8Array(n);
  if (model.readOnly !== undefined) for (let i = 0; i < n; i++) readOnly[i] = model.readOnly(ops[i]!.input, ops[i]!.output) ? 1 : 0;

  // ---- Search. At each node the candidates are tried in phases: READS looks for a read-only
  // operation the state accepts (linearized at once, FORCED: if that fails, the node fails); then
  // KNOWN tries the other operations with known outcomes; then UNKNOWN the unknown outcomes.
  // `cursor` is the next entry of the list to consider in READS and KNOWN, the next operation of
  // the unknown list in UNKNOWN (candidates while their call's position is below `limit`).
  const READS = 0;
  const KNOWN = 1;
  const UNKNOWN = 2;
  const FORCED = 3;
  const cache = new Set<string>();
  const stack: { op: number; state: S; phase: number }[] = [];
  // The longest prefix at a dead end so far: best[0, bestLength). Entries below `stable` have not
  // changed in the stack since it was copied, so only the rest is copied again.
  const best = new Int32Array(n);
  let bestLength = 0;
  let stable = 0;
  const bestPrefix = (): number[] => Array.from(best.subarray(0, bestLength));
  let state = model.init();
  let stateKey = model.key(state);
  let explored = 0;
  let cursor = next[0]!;
  let phase = READS;
  let limit = 0;
  for (;;) {
    if (knownLeft === 0) {
      // Every known outcome is linearized: the unknown ones left can all take effect last.
      const linearization = stack.map((e) => e.op);
      for (let u = unext[n]!; u !== n; u = unext[u]!) linearization.push(u);
      return { verdict: 'linearizable', linearization, statesExplored: explored };
    }
    // The next candidate of this phase, or -1 when the phase has none left.
    let i = -1;
    if (phase !== UNKNOWN) {
      while (cursor & 1) {
        const j = (cursor - 1) >> 1;
        if (readOnly[j] === (phase === READS ? 1 : 0)) {
          i = j;
          break;
        }
        cursor = next[cursor]!;
      }
    } else {
      if (progress !== undefined) markDead(progress.of(state));
      while (cursor !== n && pos[2 * cursor + 1]! < limit) {
        const j = cursor;
        // Skip dead unknown outcomes (they could only change nothing), and all but the first
        // unapplied one of each class of interchangeable ones.
        if ((dead[j >>> 5]! & (1 << (j & 31))) === 0 && (classOf[j] === -1 || appliedInClass[classOf[j]!] === rankInClass[j])) {
          i = j;
          break;
        }
        cursor = unext[cursor]!;
      }
    }
    if (i === -1) {
      if (phase === READS) {
        phase = KNOWN;
        cursor = next[0]!;
        continue;
      }
      if (phase === KNOWN) {
        phase = UNKNOWN;
        limit = pos[cursor]!;
        cursor = unext[n]!;
        continue;
      }
    } else {
      const result = model.step(state, ops[i]!.input, ops[i]!.output);
      let ok = result.ok;
      let key = stateKey;
      if (ok && phase !== READS) {
        key = model.key(result.state);
        // An unknown outcome that changes nothing here is better placed at the end.
        if (phase === UNKNOWN && key === stateKey) ok = false;
        // Progress pruning (a read-only step cannot pass a bound the state had not passed already).
        if (ok && pruneOnBounds) {
          const bound = lowestBound(i);
          ok = bound === undefined || progress!.of(result.state) <= bound;
        }
      }
      let failed = false;
      if (ok) {
        set(i);
        if (progress !== undefined) markDead(progress.of(result.state));
        if (classOf[i] !== -1) appliedInClass[classOf[i]!]!++;
        const memo = memoKey(runs(words, dead, classed), appliedInClass, firstInClass, dead, key);
        if (classOf[i] !== -1) appliedInClass[classOf[i]!]!--;
        if (!cache.has(memo)) {
          if (++explored > budget) {
            clear(i);
            return { verdict: 'unknown', longestPrefix: bestPrefix(), statesExplored: explored - 1 };
          }
          cache.add(memo);
          stack.push({ op: i, state, phase: phase === READS ? FORCED : phase });
          state = result.state;
          stateKey = key;
          lift(i);
          if (!unknown[i]) knownLeft--;
          if (classOf[i] !== -1) appliedInClass[classOf[i]!]!++;
          if (boundPos[i] === lowest) advanceLowest();
          cursor = next[0]!;
          phase = READS;
          continue;
        }
        clear(i);
        // Already explored (and failed); for a read-only operation, this node fails with it.
        failed = phase === READS;
      }
      if (!failed) {
        cursor = phase === UNKNOWN ? unext[cursor]! : next[cursor]!;
        continue;
      }
    }
    // A dead end: backtrack, past every operation that was linearized at once (FORCED).
    if (stack.length > bestLength) {
      for (let k = stable; k < stack.length; k++) best[k] = stack[k]!.op;
      bestLength = stable = stack.length;
    }
    for (;;) {
      const top = stack.pop();
      if (top === undefined) return { verdict: 'not-linearizable', longestPrefix: bestPrefix(), statesExplored: explored };
      if (stack.length < stable) stable = stack.length;
      const j = top.op;
      unlift(j);
      clear(j);
      if (!unknown[j]) knownLeft++;
      if (classOf[j] !== -1) appliedInClass[classOf[j]!]!--;
      if (boundPos[j] !== -1 && boundPos[j]! < lowest) lowest = boundPos[j]!;
      state = top.state;
      stateKey = model.key(state);
      if (top.phase === FORCED) continue;
      phase = top.phase;
      if (phase === UNKNOWN) {
        cursor = unext[j]!;
        limit = firstReturnPos();
      } else {
        cursor = next[2 * j + 1]!;
      }
      break;
    }
  }
}

/**
 * The memo key of a configuration, exact (distinct configurations, distinct strings): the length
 * of `set`, `set`, the count of each class (two code units each, a fixed number of them; classes
 * whose members are dead count as equal), the state's key.
 */
function memoKey(set: string, counts: number[], first: number[], dead: Uint32Array, state: string): string {
  let s = String.fromCharCode(set.length & 0x7fff, set.length >>> 15) + set;
  for (let c = 0; c < counts.length; c++) {
    // A dead class (its members share their bound) no longer matters: a marker no count can equal.
    const i = first[c]!;
    s += dead[i >>> 5]! & (1 << (i & 31)) ? '\uffff\uffff' : String.fromCharCode(counts[c]! & 0x7fff, counts[c]! >>> 15);
  }
  return s + state;
}

let scratch = new Uint16Array(1024);

/**
 * A compact exact encoding of the bitset `words` on the positions outside `maskA` and `maskB`
 * (masked positions extend the current run): the distances between the positions where it flips,
 * as UTF-16 code units (15 bits a unit). Exact for configurations with the same masks.
 */
function runs(words: Uint32Array, maskA: Uint32Array, maskB: Uint32Array): string {
  let length = 0;
  let inside = false;
  let lastFlip = 0;
  for (let w = 0; w < words.length; w++) {
    const mask = (maskA[w]! | maskB[w]!) >>> 0;
    const word = words[w]!;
    if (inside ? ((word | mask) >>> 0) === 0xffffffff : (word & ~mask) === 0) continue;
    for (let b = 0; b < 32; b++) {
      if ((mask >>> b) & 1 || (((word >>> b) & 1) === 1) === inside) continue;
      inside = !inside;
      let d = w * 32 + b + 1 - lastFlip;
      lastFlip += d;
      if (length + 3 > scratch.length) {
        const bigger = new Uint16Array(scratch.length * 2);
        bigger.set(scratch);
        scratch = bigger;
      }
      while (d >= 0x8000) {
        scratch[length++] = (d & 0x7fff) | 0x8000;
        d >>>= 15;
      }
      scratch[length++] = d;
    }
  }
  let out = '';
  for (let k = 0; k < length; k += 8192) out += String.fromCharCode(...scratch.subarray(k, Math.min(length, k + 8192)));
  return out;
}

// =============================================================================================
// The PaxosKV model (internal form)

/** Value ids: NULL for null, UNREAD for any value that no get returned, 1.. for values gets returned. */
const NULL = -1;
const UNREAD = 0;

const enum Kind {
  Get,
  Put,
  Delete,
  Cas,
}
const enum Out {
  Null,
  Value,
  Version,
  Failed,
  Unknown,
}

interface KvIn {
  kind: Kind;
  value: number;
  expected: bigint;
}
interface KvOut {
  tag: Out;
  value: number;
  version: bigint;
}
interface KvState {
  value: number;
  version: bigint;
}

const KV_MODEL: PartitionModel<KvState, KvIn, KvOut> = {
  init: () => ({ value: NULL, version: 0n }),
  step(s, input, output) {
    switch (input.kind) {
      case Kind.Get:
        if (output.tag === Out.Unknown) return { ok: true, state: s };
        if (output.tag === Out.Null) return { ok: s.value === NULL, state: s };
        return { ok: s.value === output.value && s.value !== UNREAD && s.version === output.version, state: s };
      case Kind.Put:
      case Kind.Delete: {
        const after = { value: input.kind === Kind.Put ? input.value : NULL, version: s.version + 1n };
        return { ok: output.tag === Out.Unknown || output.version === after.version, state: after };
      }
      case Kind.Cas: {
        const holds = input.expected === 0n ? s.value === NULL : s.value !== NULL && s.version === input.expected;
        const after = holds ? { value: input.value, version: s.version + 1n } : s;
        if (output.tag === Out.Unknown) return { ok: true, state: after };
        if (output.tag === Out.Failed) return { ok: !holds, state: s };
        return { ok: holds && output.version === after.version, state: after };
      }
    }
  },
  key: (s) => `${s.value}:${s.version}`,
  progress: {
    of: (s) => s.version,
    bound(input, output, unknown) {
      // An unknown cas(e != 0) can only change the key at version e.
      if (unknown) return input.kind === Kind.Cas && input.expected !== 0n ? input.expected : undefined;
      if (output.tag === Out.Version) return output.version - 1n;
      if (output.tag === Out.Value) return output.version;
      return undefined;
    },
  },
  readOnly: (input, output) => input.kind === Kind.Get || output.tag === Out.Failed,
  interchangeable(input) {
    if (input.kind === Kind.Get) return undefined;
    return `${input.kind}:${input.value}:${input.expected}`;
  },
};

/** Converts one key's operations to the internal model's form (unknown gets, which constrain nothing, are dropped). */
function kvPartition(ops: KvOperation[]): { ops: PartitionOperation<KvIn, KvOut>[]; sources: KvOperation[] } {
  const ids = new Map<string, number>();
  for (const op of ops) {
    if (op.input.kind === 'get' && op.output !== null && 'value' in op.output) {
      const k = bytesKey(op.output.value);
      if (!ids.has(k)) ids.set(k, ids.size + 1);
    }
  }
  const idOf = (v: Uint8Array): number => ids.get(bytesKey(v)) ?? UNREAD;
  const out: PartitionOperation<KvIn, KvOut>[] = [];
  const sources: KvOperation[] = [];
  for (const op of ops) {
    const o = op.output;
    const unknown = o !== null && 'unknown' in o;
    if (unknown && op.input.kind === 'get') continue;
    const input: KvIn =
      op.input.kind === 'get'
        ? { kind: Kind.Get, value: NULL, expected: 0n }
        : op.input.kind === 'put'
          ? { kind: Kind.Put, value: idOf(op.input.value), expected: 0n }
          : op.input.kind === 'delete'
            ? { kind: Kind.Delete, value: NULL, expected: 0n }
            : { kind: Kind.Cas, value: idOf(op.input.value), expected: op.input.expectedVersion };
    const output: KvOut =
      o === null
        ? { tag: Out.Null, value: NULL, version: 0n }
        : 'unknown' in o
          ? { tag: Out.Unknown, value: NULL, version: 0n }
          : 'failed' in o
            ? { tag: Out.Failed, value: NULL, version: 0n }
            : 'value' in o
              ? { tag: Out.Value, value: idOf(o.value), version: o.version }
              : { tag: Out.Version, value: NULL, version: o.version };
    out.push({ input, output, call: op.call, return: unknown ? Infinity : op.return, unknown });
    sources.push(op);
  }
  return { ops: out, sources };
}

function bytesKey(v: Uint8Array): string {
  let s = '';
  for (let i = 0; i < v.length; i += 4096) s += String.fromCharCode(...v.subarray(i, i + 4096));
  return s;
}

function validate(op: KvOperation): void {
  const where = `operation ${op.id} (key ${JSON.stringify(op.key)})`;
  const fail = (why: string): never => {
    throw new TypeError(`checkKvHistory: ${where}: ${why}`);
  };
  if (typeof op.key !== 'string') fail('key must be a string');
  if (!Number.isFinite(op.call)) fail(`call time must be finite, got ${op.call}`);
  const o = op.output;
  const unknown = o !== null && typeof o === 'object' && 'unknown' in o;
  if (!unknown && !(op.return >= op.call)) fail(`return time ${op.return} is before call time ${op.call}`);
  // Impossible versions (0 with a value, negative) are not malformed: the model rejects them.
  const isVersion = (v: unknown): boolean => typeof v === 'bigint';
  const input = op.input;
  if ((input.kind === 'put' || input.kind === 'cas') && !(input.value instanceof Uint8Array)) fail('value must be a Uint8Array');
  if (input.kind === 'cas' && !isVersion(input.expectedVersion)) fail('expectedVersion must be a bigint');
  if (unknown) return;
  switch (input.kind) {
    case 'get':
      if (o === null) return;
      if ('value' in o && o.value instanceof Uint8Array && isVersion(o.version)) return;
      return fail('a get returns null or { value: Uint8Array, version: bigint }');
    case 'put':
    case 'delete':
    case 'cas':
      if (o !== null && 'version' in o && !('value' in o) && isVersion(o.version)) return;
      if (input.kind === 'cas' && o !== null && 'failed' in o && o.failed === 'FAILED_PRECONDITION') return;
      return fail(`a ${input.kind} returns { version: bigint }${input.kind === 'cas' ? " or { failed: 'FAILED_PRECONDITION' }" : ''}`);
    default:
      return fail(`unknown input kind ${JSON.stringify((input as { kind: unknown }).kind)}`);
  }
}

// =============================================================================================
// Explanations

interface ConcreteState {
  value: Uint8Array | null;
  version: bigint;
}

/** Applies `op` to a concrete state: the state after, or a reason why its output is impossible from `s`. */
function concreteStep(s: ConcreteState, op: KvOperation): { state: ConcreteState; reason?: string } {
  const o = op.output;
  const unknown = o !== null && 'unknown' in o;
  const input = op.input;
  const now = `the state is ${showState(s)}`;
  switch (input.kind) {
    case 'get':
      if (unknown) return { state: s };
      if (o === null) return s.value === null ? { state: s } : { state: s, reason: now };
      if ('value' in o && s.value !== null && sameBytes(s.value, o.value) && s.version === o.version) return { state: s };
      return { state: s, reason: now };
    case 'put':
    case 'delete': {
      const after = { value: input.kind === 'put' ? input.value : null, version: s.version + 1n };
      if (unknown || (o !== null && 'version' in o && o.version === after.version)) return { state: after };
      return { state: after, reason: `${now}, so it would return version ${after.version}` };
    }
    case 'cas': {
      const holds = input.expectedVersion === 0n ? s.value === null : s.value !== null && s.version === input.expectedVersion;
      const after = holds ? { value: input.value, version: s.version + 1n } : s;
      if (unknown) return { state: after };
      if (o !== null && 'failed' in o) return holds ? { state: s, reason: `${now}, so it would succeed` } : { state: s };
      if (!holds) return { state: s, reason: `${now}, so it would fail` };
      if (o !== null && 'version' in o && o.version === after.version) return { state: after };
      return { state: after, reason: `${now}, so it would return version ${after.version}` };
    }
  }
}

/** Search budget of the second search that finds the longest prefix for an explanation. */
const EXPLAIN_BUDGET = 20_000;

function explainFailure(key: string, sources: KvOperation[], prefix: number[], statesExplored: number): string {
  const lines: string[] = [];
  lines.push(
    `key ${JSON.stringify(key)} is not linearizable (${sources.length} operations checked on it, ` +
      `${statesExplored} configurations visited).`,
  );
  let state: ConcreteState = { value: null, version: 0n };
  const shown = 12;
  lines.push(`Longest linearizable prefix found: ${prefix.length} of ${sources.length} operations${prefix.length ? ':' : '.'}`);
  if (prefix.length > shown) lines.push(`  ... ${prefix.length - shown} earlier operations`);
  prefix.forEach((i, n) => {
    state = concreteStep(state, sources[i]!).state;
    if (n >= prefix.length - shown) lines.push(`  ${n + 1}. ${showOp(sources[i]!)}  => ${showState(state)}`);
  });
  // The operations that could come next: those that no remaining operation must precede.
  const placed = new Set(prefix);
  const remaining = sources.map((_, i) => i).filter((i) => !placed.has(i));
  const isUnknown = (i: number): boolean => {
    const o = sources[i]!.output;
    return o !== null && 'unknown' in o;
  };
  const timing = (i: number) => ({ call: sources[i]!.call, return: isUnknown(i) ? Infinity : sources[i]!.return });
  const candidates = remaining.filter((x) => !remaining.some((y) => y !== x && precedes(timing(y), timing(x))));
  // The largest version a remaining known operation can be linearized from (versions never decrease).
  const bound = (i: number): bigint | undefined => {
    const o = sources[i]!.output;
    if (o === null || 'unknown' in o || 'failed' in o) return undefined;
    return 'value' in o ? o.version : o.version - 1n;
  };
  lines.push(`After it the state is ${showState(state)}, and no operation can be linearized next:`);
  const known = candidates.filter((i) => !isUnknown(i));
  const shownCandidates = 20;
  for (const i of known.slice(0, shownCandidates)) {
    const step = concreteStep(state, sources[i]!);
    let reason = step.reason;
    if (reason === undefined) {
      let blocker: number | undefined;
      for (const j of remaining) {
        const b = bound(j);
        if (j !== i && b !== undefined && b < step.state.version && (blocker === undefined || b < bound(blocker)!)) blocker = j;
      }
      reason =
        blocker === undefined
          ? 'possible here, but then the remaining operations cannot all be linearized'
          : `possible here (=> ${showState(step.state)}), but ${showOp(sources[blocker]!)} is still to come and needs ` +
            `version ${bound(blocker)} or less, and versions never decrease`;
    }
    lines.push(`  ${showOp(sources[i]!)}: ${reason}`);
  }
  if (known.length > shownCandidates) lines.push(`  ... ${known.length - shownCandidates} more`);
  const unknownPending = candidates.length - known.length;
  if (unknownPending > 0) {
    lines.push(`  (and ${unknownPending} operations with unknown outcome, which may take effect here or later, or never)`);
  }
  let deadline = remaining[0];
  for (const i of remaining) if (timing(i).return < timing(deadline!).return) deadline = i;
  if (deadline !== undefined && Number.isFinite(timing(deadline).return)) {
    const later = remaining.filter((i) => precedes(timing(deadline!), timing(i))).length;
    lines.push(
      `Operation #${sources[deadline]!.id} must take effect by its return at ${sources[deadline]!.return}` +
        (later > 0 ? `; the ${later} other operations left were called after that.` : '.'),
    );
  }
  return lines.join('\n');
}

function showOp(op: KvOperation): string {
  const i = op.input;
  const call =
    i.kind === 'get'
      ? 'get'
      : i.kind === 'put'
        ? `put(${showBytes(i.value)})`
        : i.kind === 'delete'
          ? 'delete'
          : `cas(${i.expectedVersion}, ${showBytes(i.value)})`;
  const o = op.output;
  const result =
    o === null
      ? 'null'
      : 'unknown' in o
        ? 'unknown'
        : 'failed' in o
          ? o.failed
          : 'value' in o
            ? `${showBytes(o.value)} v${o.version}`
            : `v${o.version}`;
  const ret = o !== null && 'unknown' in o ? 'unknown' : String(op.return);
  return `#${op.id} client ${op.client} ${call} -> ${result} [${op.call}, ${ret}]`;
}

function showState(s: ConcreteState): string {
  return `${s.value === null ? 'null' : showBytes(s.value)} v${s.version}`;
}

function showBytes(v: Uint8Array): string {
  const head = v.subarray(0, 32);
  const printable = head.every((c) => c >= 0x20 && c < 0x7f);
  const text = printable
    ? JSON.stringify(String.fromCharCode(...head))
    : `0x${[...head].map((c) => c.toString(16).padStart(2, '0')).join('')}`;
  return v.length > 32 ? `${text}... (${v.length} bytes)` : text;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
