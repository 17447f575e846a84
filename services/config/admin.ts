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
  type ConfigChanges,
  type ConfigValues,
  type NamespaceHead,
  type OpRecord,
  type Release,
} from './model.js';

/** Operations the log keeps (older ones are dropped). */
export const MAX_HISTORY = 1000;

/** The PaxosKV key of a namespace's head. */
export function headKey(namespace: string): string {
  return `config/${namespace}`;
}

const releaseKey = (namespace: string, n: number): string => `config/${namespace}/release/${n}`;
const logKey = (namespace: string): string => `config/${namespace}/log`;
const json = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v));
const parse = <T>(b: Uint8Array): T => JSON.parse(new TextDecoder().decode(b)) as T;

/** Options of {@link ConfigAdmin}. */
export interface ConfigAdminOptions {
  /** Who the operations are recorded as done by. Default `user@host` of this process. */
  by?: string;
  /** Clock for the records (epoch ms). Default `Date.now`. */
  now?: () => number;
}

/**
 * Publishes, grays, promotes, rolls back and abandons releases of config namespaces, and lists
 * their history, through a PaxosKV client (the caller's; not closed here).
 */
export class ConfigAdmin {
  private readonly by: string;
  private readonly now: () => number;

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
   * @returns the new head.
   * @throws Error for no change or a bad key; RpcError when PaxosKV does not answer.
   */
  publish(namespace: string, changes: ConfigChanges): Promise<NamespaceHead> {
    return this.apply(namespace, (h) => publish(h, changes, this.by, this.now()));
  }

  /**
   * A new full release equal to release `to`.
   * @throws Error when `to` is not an earlier release, or its snapshot is missing.
   */
  rollback(namespace: string, to: number): Promise<NamespaceHead> {
    return this.apply(namespace, async (h) => {
      const current = h.release?.number ?? 0;
      if (!Number.isInteger(to) || to < 1 || to >= current) return rollback(h, to, {}, this.by, this.now()); // throws the model's message
      const snap = await this.kv.get(releaseKey(namespace, to));
      if (snap === null) throw new Error(`namespace ${namespace}: the snapshot of release ${to} is missing`);
      return rollback(h, to, parse<Release>(snap.value).values, this.by, this.now());
    });
  }

  /**
   * Starts a gray release with `changes` for readers matching `rules`, or changes the running one
   * (its overrides merged with `changes`, its rules replaced; a widened percentage keeps its users).
   * @throws Error before the first release, without rules, or for a bad key or rule.
   */
  gray(namespace: string, changes: ConfigChanges, rules: readonly GrayRule[]): Promise<NamespaceHead> {
    const id = randomBytes(6).toString('hex');
    return this.apply(namespace, (h) => gray(h, changes, rules, id, this.by, this.now()));
  }

  /**
   * The gray becomes the next full release, atomically (one compare-and-set of the head).
   * @throws Error when no gray runs.
   */
  promote(namespace: string): Promise<NamespaceHead> {
    return this.apply(namespace, (h) => promote(h, this.by, this.now()));
  }

  /**
   * Drops the gray.
   * @throws Error when no gray runs.
   */
  abandon(namespace: string): Promise<NamespaceHead> {
    return this.apply(namespace, (h) => abandon(h, this.by, this.now()));
  }

  /**
   * The namespace's operations, oldest first (the last {@link MAX_HISTORY}).
   * @throws RpcError when PaxosKV does not answer.
   */
  async history(namespace: string): Promise<OpRecord[]> {
    const { head } = await this.head(namespace);
    await this.materialize(head);
    const log = await this.kv.get(logKey(namespace));
    return log === null ? [] : parse<OpRecord[]>(log.value).filter((o) => o.seq <= head.opSeq);
  }

  /**
   * A release's values: the current one from the head, an earlier one from its snapshot.
   * @returns the values, or undefined when there is no such release.
   */
  async release(namespace: string, n: number): Promise<ConfigValues | undefined> {
    const { head } = await this.head(namespace);
    if (head.release !== null && n === head.release.number) return head.release.values;
    const snap = await this.kv.get(releaseKey(namespace, n));
    return snap === null ? undefined : parse<Release>(snap.value).values;
  }

  /** Reads the head, writes what the last operation left unwritten, and compare-and-sets the next head. */
  private async apply(namespace: string, step: (head: NamespaceHead) => NamespaceHead | Promise<NamespaceHead>): Promise<NamespaceHead> {
    for (let attempt = 1; ; attempt++) {
      const { head, version } = await this.head(namespace);
      await this.materialize(head);
      const next = await step(head);
      try {
        await this.kv.compareAndSet(headKey(namespace), version, encodeHead(next));
      } catch (err) {
        if (!(err instanceof RpcError) || attempt >= 20) throw err;
        if (err.code === Status.FAILED_PRECONDITION) continue; // another operation came first: redo on its head
        if (err.code === Status.UNKNOWN) {
          // The write may have applied: it did exactly when the head is now ours.
          const now = await this.head(namespace);
          if (now.head.opSeq === next.opSeq && JSON.stringify(now.head.lastOp) === JSON.stringify(next.lastOp)) {
            void this.materialize(now.head).catch(() => undefined);
            return now.head;
          }
          continue;
        }
        throw err;
      }
      // The operation is done once the head is written; its snapshot and log entry follow in the
      // background (the next operation, or `history`, writes them if this process stops first).
      void this.materialize(next).catch(() => undefined);
      return next;
    }
  }

  /** Writes the current release's snapshot and the last operation's log entry, when missing. */
  private async materialize(head: NamespaceHead): Promise<void> {
    if (head.release !== null) {
      const key = releaseKey(head.namespace, head.release.number);
      try {
        await this.kv.compareAndSet(key, 0n, json(head.release));
      } catch (err) {
        if (!(err instanceof RpcError) || (err.code !== Status.FAILED_PRECONDITION && err.code !== Status.UNKNOWN)) throw err;
      }
    }
    const op = head.lastOp;
    if (op === null) return;
    for (let attempt = 0; attempt < 5; attempt++) {
      const got = await this.kv.get(logKey(head.namespace));
      const log = got === null ? [] : parse<OpRecord[]>(got.value);
      if ((log.at(-1)?.seq ?? 0) >= op.seq) return;
      const next = [...log, op].slice(-MAX_HISTORY);
      try {
        await this.kv.compareAndSet(logKey(head.namespace), got?.version ?? 0n, json(next));
        return;
      } catch (err) {
        if (!(err instanceof RpcError) || (err.code !== Status.FAILED_PRECONDITION && err.code !== Status.UNKNOWN)) throw err;
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
