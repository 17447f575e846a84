/**
 * Plans: multi-step operations over PaxosKV written as pure code. A plan is a generator that
 * yields the key-value steps it needs (a linearizable read, a compare-and-set) and receives each
 * step's outcome; it returns the operation's result. It does no I/O and reads no clock: a driver
 * runs the steps. {@link runPlan} (run-plan.ts) runs a plan against a real cluster through
 * `PaxosKVClient`; the deterministic simulator (test/paxoskv/simulator.ts) runs the same plan
 * against simulated replicas with crashes, partitions and lost replies. The queue and table models
 * (services/queue, services/table) are plans.
 *
 * Why generators: the data models are read-modify-write loops over single-key compare-and-sets,
 * and their correctness rests on the order of those steps. Written once as a plan, the code the
 * simulator checks is the code that runs (the design of etcd-io/raft's pure core, applied to the
 * client side).
 */

/** One step a plan asks its driver to run. Keys as PaxosKV's (UTF-8, at most 1 KiB, not starting with NUL). */
export type KvStep =
  /** A linearizable read of `key`. */
  | { kind: 'get'; key: string }
  /** Writes `value` (at most 1 MiB) only if `key` is at `expectedVersion` (0n: never written). */
  | { kind: 'cas'; key: string; expectedVersion: bigint; value: Uint8Array };

/** What a step returned. */
export type KvStepReply =
  /** A get: the value and version, or `value: null, version: 0n` for a key never written. */
  | { kind: 'value'; value: Uint8Array | null; version: bigint }
  /** A compare-and-set that took effect: the key's new version. */
  | { kind: 'written'; version: bigint }
  /**
   * A compare-and-set that did not take effect: the key was at another version. `unknown: true`
   * when an earlier attempt of the same compare-and-set was lost on the way (PaxosKV's
   * `CAS_OUTCOME_UNKNOWN`): it may have taken effect; read the key to tell.
   */
  | { kind: 'conflict'; unknown: boolean };

/**
 * A plan: yields steps, receives their replies, returns `T`. A step that fails outright (no
 * replica answered by the deadline, a bad key) ends the plan: the driver stops it (`return()`) and
 * raises the step's error, so a plan never sees those failures and a step's effect is then unknown.
 */
export type KvPlan<T> = Generator<KvStep, T, KvStepReply>;
