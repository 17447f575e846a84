/**
 * The config center's model, after Apollo (apolloconfig/apollo, docs/zh/design/apollo-design.md):
 * a namespace (e.g. `shop.checkout`) holds string keys with string values; a release is an
 * immutable snapshot of the whole namespace, numbered 1, 2, 3, ...; a gray release is a candidate
 * with rules, which becomes the next full release when promoted. Pure: operations take the
 * namespace's head and return the next one; storage (admin.ts) writes it in one PaxosKV
 * compare-and-set, so a promote is one Paxos write.
 *
 * The gray keeps its changes (`overrides`) apart from the release it was cut from: a reader in the
 * gray sees the current release with the overrides applied, so a full release published while a
 * gray runs changes the other keys for gray readers too and never undoes a key under gray
 * (Apollo's bug #1677 was a later master release overwriting a key under gray). Promote makes the
 * current release plus the overrides the next release: a gray reader sees the same values before
 * and after, under a higher release number.
 */
import { checkRule, inGray, type GrayContext, type GrayRule } from './gray.js';

/** Keys and values of a namespace. */
export type ConfigValues = Readonly<Record<string, string>>;

/** A full release: an immutable snapshot. */
export interface Release {
  /** 1, 2, 3, ... */
  readonly number: number;
  readonly values: ConfigValues;
  /** Who made it, and when (epoch ms). */
  readonly by: string;
  readonly at: number;
}

/** Changes to a namespace: keys set, keys deleted. */
export interface ConfigChanges {
  readonly set: ConfigValues;
  readonly delete: readonly string[];
}

/** The gray (candidate) release. */
export interface Gray {
  /** Its id (random; stays when its rules or overrides change). */
  readonly id: string;
  /** The salt of its percentage buckets: stays when the gray widens, so its users stay in. */
  readonly salt: string;
  /** Its changes to the current release. */
  readonly overrides: ConfigChanges;
  readonly rules: readonly GrayRule[];
  readonly by: string;
  readonly at: number;
}

/** The kinds of operation. */
export type ConfigOp = 'publish' | 'rollback' | 'gray' | 'promote' | 'abandon';

/** One operation, as `history` lists it. */
export interface OpRecord {
  /** 1, 2, 3, ... over the namespace's operations. */
  readonly seq: number;
  /** The operation's id (random, set by the writer: see {@link withOpId}): tells a retried write that it already landed. */
  readonly id?: string;
  readonly op: ConfigOp;
  readonly by: string;
  readonly at: number;
  /** The release it made (publish, rollback, promote). */
  readonly release?: number;
  /** The release a rollback went back to. */
  readonly to?: number;
  /** The gray it made, changed, promoted or dropped. */
  readonly gray?: string;
  /** Keys set or deleted (publish, gray). */
  readonly keys?: readonly string[];
}

/** A namespace's current state: what readers watch. */
export interface NamespaceHead {
  readonly namespace: string;
  /** Operations so far (the last one's `seq`). */
  readonly opSeq: number;
  /** The current full release (null before the first publish). */
  readonly release: Release | null;
  /** The gray release, if one runs. */
  readonly gray: Gray | null;
  /** The last operation. */
  readonly lastOp: OpRecord | null;
  /** The last {@link RECENT_OPS} operations, oldest first (the history log is caught up from them). */
  readonly recent?: readonly OpRecord[];
}

/** Operations a head keeps (`NamespaceHead.recent`). */
export const RECENT_OPS = 32;

/** What a reader sees. */
export interface Resolved {
  /** The full release number (0 before the first publish). */
  readonly release: number;
  /** Whether the reader is in the gray (it sees the gray's overrides). */
  readonly gray: boolean;
  /** The gray's id when `gray`. */
  readonly grayId?: string;
  readonly values: ConfigValues;
}

/** Longest namespace name (characters). */
export const MAX_NAMESPACE_LENGTH = 200;
/** Longest key (UTF-16 code units). A namespace's whole head must also fit in one PaxosKV value (1 MiB): the writer checks. */
export const MAX_KEY_LENGTH = 256;

/**
 * The head of a namespace nothing was done to yet.
 * @param namespace - the namespace's name.
 * @returns a head with no release, no gray and no operation.
 * @throws Error for a bad namespace name (see {@link checkNamespace}).
 */
export function emptyHead(namespace: string): NamespaceHead {
  checkNamespace(namespace);
  return { namespace, opSeq: 0, release: null, gray: null, lastOp: null };
}

/**
 * Checks a namespace name: 1..200 characters of letters, digits, `.`, `_` and `-`.
 * @throws Error naming what is wrong.
 */
export function checkNamespace(namespace: string): void {
  if (!/^[A-Za-z0-9._-]{1,200}$/.test(namespace)) throw new Error(`namespace '${namespace}': use 1 to ${MAX_NAMESPACE_LENGTH} letters, digits, '.', '_' or '-'`);
}

/**
 * Applies changes to values (pure).
 * @param values - the values; `changes` - keys to set, then keys to delete.
 * @returns new values (the inputs are not modified).
 */
export function applyChanges(values: ConfigValues, changes: ConfigChanges): ConfigValues {
  const out: Record<string, string> = { ...values };
  for (const [k, v] of Object.entries(changes.set)) out[k] = v;
  for (const k of changes.delete) delete out[k];
  return out;
}

/**
 * Checks changes (pure): at least one key; each key 1 to 256 characters without `=` (and not
 * `__proto__`); values strings; no key both set and deleted.
 * @throws Error naming the first bad key, or saying there is no change.
 */
export function checkChanges(changes: ConfigChanges): void {
  const keys = [...Object.keys(changes.set), ...changes.delete];
  if (keys.length === 0) throw new Error('no change: give at least one key to set or delete');
  for (const k of keys) {
    if (k === '' || k.length > MAX_KEY_LENGTH || k.includes('=')) throw new Error(`key '${k}': use 1 to ${MAX_KEY_LENGTH} characters, without '='`);
    if (k === '__proto__') throw new Error(`key '__proto__' is not allowed`);
  }
  for (const [k, v] of Object.entries(changes.set)) if (typeof v !== 'string') throw new Error(`key '${k}': the value must be a string`);
  for (const k of changes.delete) if (Object.prototype.hasOwnProperty.call(changes.set, k)) throw new Error(`key '${k}' is both set and deleted`);
}

function next(head: NamespaceHead, op: Omit<OpRecord, 'seq'>, release: Release | null, gray: Gray | null): NamespaceHead {
  const lastOp: OpRecord = { seq: head.opSeq + 1, ...op };
  return { namespace: head.namespace, opSeq: lastOp.seq, release, gray, lastOp, recent: [...(head.recent ?? []), lastOp].slice(-RECENT_OPS) };
}

/**
 * The head with its last operation given the id `id` (the writer's, the same on every retry of
 * one operation; pure).
 * @param head - a head an operation returned.
 * @returns the head, its `lastOp` and the last of `recent` carrying `id`.
 */
export function withOpId(head: NamespaceHead, id: string): NamespaceHead {
  if (head.lastOp === null) return head;
  const lastOp = { ...head.lastOp, id };
  const recent = [...(head.recent ?? [])];
  if (recent.length > 0 && recent[recent.length - 1]!.seq === lastOp.seq) recent[recent.length - 1] = lastOp;
  return { ...head, lastOp, recent };
}

/**
 * Publishes a new full release: the current one with `changes`.
 * @param who - who does it; `at` - when (epoch ms).
 * @throws Error for no change or a bad key.
 */
export function publish(head: NamespaceHead, changes: ConfigChanges, who: string, at: number): NamespaceHead {
  checkChanges(changes);
  const number = (head.release?.number ?? 0) + 1;
  const release: Release = { number, values: applyChanges(head.release?.values ?? {}, changes), by: who, at };
  return next(head, { op: 'publish', by: who, at, release: number, keys: [...Object.keys(changes.set), ...changes.delete] }, release, head.gray);
}

/**
 * Rolls back: a new full release equal to release `to` (its values, given by the caller, who read
 * that release's snapshot). A running gray stays, on top of the new release.
 * @throws Error when `to` is not an earlier release.
 */
export function rollback(head: NamespaceHead, to: number, values: ConfigValues, who: string, at: number): NamespaceHead {
  const current = head.release?.number ?? 0;
  if (!Number.isInteger(to) || to < 1 || to >= current) throw new Error(`cannot roll back to release ${to}: the current release is ${current} (roll back to 1..${current - 1})`);
  const release: Release = { number: current + 1, values: { ...values }, by: who, at };
  return next(head, { op: 'rollback', by: who, at, release: release.number, to }, release, head.gray);
}

/**
 * Starts a gray release, or changes the running one: its overrides are merged with `changes`
 * (a key set again takes the new value) and its rules replaced by `rules`. Its id and salt stay,
 * so a percentage that widens keeps its users.
 * @param newId - id and salt for a new gray (used only when none runs).
 * @throws Error before the first release, for no rules, or for a bad key or rule.
 */
export function gray(head: NamespaceHead, changes: ConfigChanges, rules: readonly GrayRule[], newId: string, who: string, at: number): NamespaceHead {
  if (head.release === null) throw new Error(`namespace ${head.namespace} has no release yet: publish one before a gray`);
  const checked = rules.map(checkRule);
  if (checked.length === 0) throw new Error('a gray needs at least one rule');
  const old = head.gray;
  const hasChanges = Object.keys(changes.set).length + changes.delete.length > 0;
  if (hasChanges) checkChanges(changes);
  else if (old === null) throw new Error('no change: a new gray needs at least one key to set or delete');
  const set: Record<string, string> = { ...(old?.overrides.set ?? {}) };
  const del = new Set(old?.overrides.delete ?? []);
  for (const [k, v] of Object.entries(changes.set)) {
    set[k] = v;
    del.delete(k);
  }
  for (const k of changes.delete) {
    delete set[k];
    del.add(k);
  }
  const g: Gray = { id: old?.id ?? newId, salt: old?.salt ?? `${head.namespace}:${newId}`, overrides: { set, delete: [...del] }, rules: checked, by: who, at };
  return next(head, { op: 'gray', by: who, at, gray: g.id, keys: [...Object.keys(changes.set), ...changes.delete] }, head.release, g);
}

/**
 * Promotes the gray: the current release with its overrides becomes the next full release, and
 * the gray ends, in one step (one write).
 * @throws Error when no gray runs.
 */
export function promote(head: NamespaceHead, who: string, at: number): NamespaceHead {
  const g = head.gray;
  if (g === null || head.release === null) throw new Error(`namespace ${head.namespace} has no gray release to promote`);
  const release: Release = { number: head.release.number + 1, values: applyChanges(head.release.values, g.overrides), by: who, at };
  return next(head, { op: 'promote', by: who, at, release: release.number, gray: g.id }, release, null);
}

/**
 * Drops the gray: its readers see the current release again.
 * @throws Error when no gray runs.
 */
export function abandon(head: NamespaceHead, who: string, at: number): NamespaceHead {
  const g = head.gray;
  if (g === null) throw new Error(`namespace ${head.namespace} has no gray release to abandon`);
  return next(head, { op: 'abandon', by: who, at, gray: g.id }, head.release, null);
}

/**
 * What a head shows readers outside and inside its gray, computed once (pure): a reader's view is
 * then a rule check away (see {@link resolve}). The values are frozen.
 * @param head - the namespace's head.
 * @returns the release view, and the gray view when a gray runs.
 */
export function views(head: NamespaceHead): { release: Resolved; gray: Resolved | undefined } {
  const number = head.release?.number ?? 0;
  const values: ConfigValues = Object.freeze({ ...(head.release?.values ?? {}) });
  const release: Resolved = Object.freeze({ release: number, gray: false, values });
  const g = head.gray;
  if (g === null) return { release, gray: undefined };
  return { release, gray: Object.freeze({ release: number, gray: true, grayId: g.id, values: Object.freeze(applyChanges(values, g.overrides)) }) };
}

/**
 * What a reader with context `ctx` sees: the gray's values when it matches the gray's rules, the
 * current release's otherwise (pure).
 * @param head - the namespace's head; `ctx` - the reader (see `GrayContext`).
 * @returns the release number, whether the reader is in the gray, and the values.
 */
export function resolve(head: NamespaceHead, ctx: GrayContext): Resolved {
  const v = views(head);
  const g = head.gray;
  return v.gray !== undefined && g !== null && inGray(g.rules, ctx, g.salt) ? v.gray : v.release;
}

/**
 * Encodes a head for storage.
 * @returns its JSON, UTF-8.
 */
export function encodeHead(head: NamespaceHead): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(head));
}

/**
 * Decodes and checks a head read from storage.
 * @throws Error naming what is wrong (not JSON, a field of the wrong type, another namespace).
 */
export function decodeHead(bytes: Uint8Array, namespace: string): NamespaceHead {
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (err) {
    throw new Error(`namespace ${namespace}: the stored head is not JSON: ${(err as Error).message}`);
  }
  const h = raw as Record<string, unknown>;
  if (h === null || typeof h !== 'object' || h.namespace !== namespace || !Number.isSafeInteger(h.opSeq)) throw new Error(`namespace ${namespace}: the stored head is not a namespace head`);
  if (h.recent !== undefined && (!Array.isArray(h.recent) || !h.recent.every((o) => o !== null && typeof o === 'object' && Number.isSafeInteger((o as OpRecord).seq)))) {
    throw new Error(`namespace ${namespace}: the stored head's recent operations are malformed`);
  }
  const values = (v: unknown, what: string): ConfigValues => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error(`namespace ${namespace}: ${what} is not a key-value object`);
    for (const x of Object.values(v)) if (typeof x !== 'string') throw new Error(`namespace ${namespace}: ${what} holds a value that is not a string`);
    return v as ConfigValues;
  };
  const r = h.release as Record<string, unknown> | null;
  if (r !== null && (typeof r !== 'object' || !Number.isSafeInteger(r.number))) throw new Error(`namespace ${namespace}: the stored release is malformed`);
  if (r !== null) values(r.values, 'the release');
  const g = h.gray as Record<string, unknown> | null;
  if (g !== null) {
    if (typeof g !== 'object' || typeof g.id !== 'string' || typeof g.salt !== 'string' || !Array.isArray(g.rules)) throw new Error(`namespace ${namespace}: the stored gray is malformed`);
    (g.rules as unknown[]).forEach(checkRule);
    const o = g.overrides as Record<string, unknown>;
    values(o?.set, 'the gray');
    if (!Array.isArray(o?.delete)) throw new Error(`namespace ${namespace}: the stored gray is malformed`);
  }
  return raw as NamespaceHead;
}
