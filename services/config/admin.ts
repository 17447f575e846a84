/**
 * The config center's writes and history, stored in PaxosKV (model.ts has the rules):
 * - `config/<namespace>`: the namespace's head (current release with its values, the gray, the
 *   last operation), JSON. Every operation is one compare-and-set of the head, so a promote (the
 *   gray becoming the next release) is one Paxos write: no reader can see half of it.
 *   `ConfigClient`s watch this key.
 * - `config/<namespace>/release/<n>`: release n's snapshot, immutable (for rollback).
 * - `config/<namespace>/log`: the operations, oldest first (the last `MAX_HISTORY`).
 * The snapshot and the log entry of an operation are written after its head, from the head (which
 * holds both), in the background: an operation resolves once its head is written. One that
 * stopped in between leaves them to the next operation or `history` call, which writes them
 * first. The head is the truth; the others are derived from it.
 */
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { RpcError, Status } from '../../framework/index.js';
import type { PaxosKVClient } from '../paxoskv/client.js';
import type { GrayRule } from './gray.js';
import {
  abandon,
  checkNamespace,
  decodeHead,
  emptyHead,
  encodeHead,
  gray,
  promote,
  publish,
  rollback,
  withOpId,
  type ConfigChanges,
  type ConfigValues,
  type NamespaceHead,
  type OpRecord,
  type Release,
} from './model.js';

/** Operations the log keeps (older ones are dropped). */
export const MAX_HISTORY = 1000;

/**
 * The PaxosKV key of a namespace's head.
 * @returns `config/<namespace>`.
 */
export function headKey(namespace: string): string {
  return `config/${namespace}`;
}

const releaseKey = (namespace: string, n: number): string => `config/${namespace}/release/${n}`;
const logKey = (namespace: string): string => `config/${namespace}/log`;
const json = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v));

/** The most a namespace's head may take (bytes): PaxosKV's value limit, 1 MiB. */
export const MAX_HEAD_BYTES = 1024 * 1024;

function parseJson(what: string, bytes: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (err) {
    throw new Error(`${what} is not JSON: ${(err as Error).message}`);
  }
}

/** Decodes and checks a stored release snapshot. */
function decodeRelease(namespace: string, n: number, bytes: Uint8Array): Release {
  const r = parseJson(`namespace ${namespace}: the snapshot of release ${n}`, bytes) as Release;
  if (r === null || typeof r !== 'object' || r.number !== n || r.values === null || typeof r.values !== 'object' || Array.isArray(r.values) || !Object.values(r.values).every((v) => typeof v === 'string')) {
    throw new Error(`namespace ${namespace}: the snapshot of release ${n} is malformed`);
  }
  return r;
}

/** Decodes and checks a stored history log. */
function decodeLog(namespace: string, bytes: Uint8Array): OpRecord[] {
  const log = parseJson(`namespace ${namespace}: the history log`, bytes);
  if (!Array.isArray(log) || !log.every((o) => o !== null && typeof o === 'object' && Number.isSafeInteger((o as OpRecord).seq) && typeof (o as OpRecord).op === 'string')) {
    throw new Error(`namespace ${namespace}: the history log is malformed`);
  }
  return log as OpRecord[];
}

/** Options of {@link ConfigAdmin}. */
export interface ConfigAdminOptions {
  /** Who the operations are recorded as done by. Default `user@host` of this process. */
  by?: string;
  /** Clock for the records (epoch ms). Default `Date.now`. */
  now?: () => number;
}

/** Per-operation options of {@link ConfigAdmin}'s writes. */
export interface OpOptions {
  /** Who the operation is recorded as done by. Default: the admin's `by`. */
  by?: string;
}

/**
 * Publishes, grays, promotes, rolls back and abandons releases of config namespaces, and lists
 * their history, through a PaxosKV client (the caller's; not closed here).
 */
export class ConfigAdmin {
  private readonly by: string;
  private readonly now: () => number;
  /** Snapshot and log writes started after an operation resolved (see `flush`). */
  private readonly background = new Set<Promise<void>>();

  /**
   * @param kv - a client of the PaxosKV cluster that holds the config.
   * @param options - see {@link ConfigAdminOptions}.
   */
  constructor(
    private readonly kv: PaxosKVClient,
    options: ConfigAdminOptions = {},
  ) {
    this.by = options.by ?? `${safeUser()}@${os.hostname()}`;
    this.now = options.now ?? Date.now;
  }

  /**
   * The namespace's head as stored (linearizable), with its PaxosKV version.
   * @throws Error for a bad namespace name or a stored head that does not decode; RpcError when PaxosKV does not answer.
   */
  async head(namespace: string): Promise<{ head: NamespaceHead; version: bigint }> {
    checkNamespace(namespace);
    const got = await this.kv.get(headKey(namespace));
    if (got === null) return { head: emptyHead(namespace), version: 0n };
    return { head: decodeHead(got.value, namespace), version: got.version };
  }

  /**
   * A new full release: the current one with `changes` (`set` keys, `delete` keys).
   * @param namespace - the namespace; `changes` - what to set and delete.
   * @returns the new head, once it is written.
   * @throws Error for a bad namespace, no change, a bad key, or a namespace over 1 MiB; RpcError
   *   when PaxosKV does not answer. (The same holds for the operations below.)
   * `op.by` records who did it, instead of the admin's `by` (a config server records its caller).
   */
  publish(namespace: string, changes: ConfigChanges, op: OpOptions = {}): Promise<NamespaceHead> {
    return this.apply(namespace, (h) => publish(h, changes, op.by ?? this.by, this.now()));
  }

  /**
   * A new full release equal to release `to`.
   * @returns the new head.
   * @throws Error when `to` is not an earlier release, or its snapshot is missing or malformed.
   */
  rollback(namespace: string, to: number, op: OpOptions = {}): Promise<NamespaceHead> {
    const by = op.by ?? this.by;
    return this.apply(namespace, async (h) => {
      const current = h.release?.number ?? 0;
      if (!Number.isInteger(to) || to < 1 || to >= current) return rollback(h, to, {}, by, this.now()); // throws the model's message
      const snap = await this.kv.get(releaseKey(namespace, to));
      if (snap === null) throw new Error(`namespace ${namespace}: the snapshot of release ${to} is missing`);
      return rollback(h, to, decodeRelease(namespace, to, snap.value).values, by, this.now());
    });
  }

  /**
   * Starts a gray release with `changes` for readers matching `rules`, or changes the running one
   * (its overrides merged with `changes`, its rules replaced; a widened percentage keeps its users).
   * @returns the new head.
   * @throws Error before the first release, without rules, or for a bad key or rule.
   */
  gray(namespace: string, changes: ConfigChanges, rules: readonly GrayRule[], op: OpOptions = {}): Promise<NamespaceHead> {
    const id = randomBytes(6).toString('hex');
    return this.apply(namespace, (h) => gray(h, changes, rules, id, op.by ?? this.by, this.now()));
  }

  /**
   * The gray becomes the next full release, atomically (one compare-and-set of the head).
   * @returns the new head.
   * @throws Error when no gray runs.
   */
  promote(namespace: string, op: OpOptions = {}): Promise<NamespaceHead> {
    return this.apply(namespace, (h) => promote(h, op.by ?? this.by, this.now()));
  }

  /**
   * Drops the gray.
   * @returns the new head.
   * @throws Error when no gray runs.
   */
  abandon(namespace: string, op: OpOptions = {}): Promise<NamespaceHead> {
    return this.apply(namespace, (h) => abandon(h, op.by ?? this.by, this.now()));
  }

  /**
   * The namespace's operations, oldest first (the last {@link MAX_HISTORY}), after writing the
   * entries the log lacks.
   * @returns the operations.
   * @throws Error for a bad namespace or a malformed log; RpcError when PaxosKV does not answer.
   */
  async history(namespace: string): Promise<OpRecord[]> {
    const { head } = await this.head(namespace);
    await this.materialize(head);
    const log = await this.kv.get(logKey(namespace));
    return log === null ? [] : decodeLog(namespace, log.value).filter((o) => o.seq <= head.opSeq);
  }

  /**
   * A release's values: the current one from the head, an earlier one from its snapshot.
   * @returns the values, or undefined when there is no such release.
   */
  async release(namespace: string, n: number): Promise<ConfigValues | undefined> {
    const { head } = await this.head(namespace);
    if (head.release !== null && n === head.release.number) return head.release.values;
    const snap = await this.kv.get(releaseKey(namespace, n));
    return snap === null ? undefined : decodeRelease(namespace, n, snap.value).values;
  }

  /**
   * Waits for the snapshot and log writes of the operations that resolved already (they run in the
   * background; a process about to close its PaxosKV client, like the CLI, waits for them).
   * Never rejects (a write that failed is left to the next operation or `history`).
   */
  async flush(): Promise<void> {
    while (this.background.size > 0) await Promise.all([...this.background]);
  }

  private later(head: NamespaceHead): void {
    const p = this.materialize(head).catch(() => undefined);
    this.background.add(p);
    void p.then(() => this.background.delete(p));
  }

  /** Reads the head, writes what the last operation left unwritten, and compare-and-sets the next head. */
  private async apply(namespace: string, step: (head: NamespaceHead) => NamespaceHead | Promise<NamespaceHead>): Promise<NamespaceHead> {
    // One id for every attempt of this operation: an attempt whose outcome was unknown may still
    // land, and a later attempt that finds it in the head's recent operations is done, not redone.
    const opId = randomBytes(8).toString('hex');
    for (let attempt = 1; ; attempt++) {
      const { head, version } = await this.head(namespace);
      if (attempt > 1 && head.recent?.some((o) => o.id === opId)) {
        this.later(head);
        return head;
      }
      await this.materialize(head);
      const next = withOpId(await step(head), opId);
      const bytes = encodeHead(next);
      if (bytes.length > MAX_HEAD_BYTES) {
        throw new Error(`namespace ${namespace} would hold ${bytes.length} bytes with this change; a namespace holds at most ${MAX_HEAD_BYTES} (PaxosKV's value limit)`);
      }
      try {
        await this.kv.compareAndSet(headKey(namespace), version, bytes);
      } catch (err) {
        if (!(err instanceof RpcError) || attempt >= 20) throw err;
        // Another operation came first, or this write's outcome is unknown: read again (the check
        // above finds this operation if it landed) and redo on the head found.
        if (err.code === Status.FAILED_PRECONDITION || err.code === Status.UNKNOWN) continue;
        throw err;
      }
      // The operation is done once the head is written; its snapshot and log entry follow in the
      // background (the next operation, or `history`, writes them if this process stops first).
      this.later(next);
      return next;
    }
  }

  /**
   * Writes the current release's snapshot, and the log entries of the head's recent operations
   * the log lacks, when missing (their content comes from the head, so concurrent writers write
   * the same).
   * @throws RpcError when PaxosKV does not answer; Error when the log stays contended.
   */
  private async materialize(head: NamespaceHead): Promise<void> {
    if (head.release !== null) {
      const key = releaseKey(head.namespace, head.release.number);
      for (let attempt = 1; ; attempt++) {
        try {
          await this.kv.compareAndSet(key, 0n, json(head.release));
          break;
        } catch (err) {
          if (!(err instanceof RpcError)) throw err;
          if (err.code === Status.FAILED_PRECONDITION) break; // written already
          // Unknown: written exactly when it is there now.
          if (err.code !== Status.UNKNOWN || attempt >= 5) throw err;
          if ((await this.kv.get(key)) !== null) break;
        }
      }
    }
    const recent = head.recent ?? (head.lastOp === null ? [] : [head.lastOp]);
    if (recent.length === 0) return;
    for (let attempt = 1; ; attempt++) {
      const got = await this.kv.get(logKey(head.namespace));
      const log = got === null ? [] : decodeLog(head.namespace, got.value);
      const last = log.at(-1)?.seq ?? 0;
      const missing = recent.filter((o) => o.seq > last);
      if (missing.length === 0) return;
      try {
        await this.kv.compareAndSet(logKey(head.namespace), got?.version ?? 0n, json([...log, ...missing].slice(-MAX_HISTORY)));
        return;
      } catch (err) {
        if (!(err instanceof RpcError) || (err.code !== Status.FAILED_PRECONDITION && err.code !== Status.UNKNOWN)) throw err;
        if (attempt >= 20) throw new Error(`namespace ${head.namespace}: the history log stayed contended over ${attempt} writes`);
      }
    }
  }
}

function safeUser(): string {
  try {
    return os.userInfo().username;
  } catch {
    return 'unknown';
  }
}
