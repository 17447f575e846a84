/**
 * Which Paxos group a key belongs to (issue 16, many groups), as pure functions: a routing table
 * with an epoch, and consistent hashing of keys over it.
 *
 * PaxosStore routes each key to one of many replica groups (Tencent/paxosstore's `clsSvrRoute`
 * hashes the key over a server list). svrkit uses a consistent-hash ring (Karger et al., STOC
 * 1997) with virtual nodes: each group owns `vnodes` points on a 32-bit ring, placed by
 * MurmurHash3 (x86, 32-bit) of `"<group id>#<n>"`, and a key belongs to the group of the first
 * point at or after MurmurHash3 of its UTF-8 bytes (wrapping around). Adding a group then moves
 * only the keys its new points take, about 1/(G+1) of them, and only to it.
 *
 * The table itself is a value chosen in PaxosKV (in a system group), numbered by an epoch that
 * rises with every change; clients and replicas cache it, and a replica that gets a key it does
 * not own answers with its table, so a stale client is corrected within the call.
 */
import murmurhash from 'murmurhash';

/** Virtual nodes per group unless the table says otherwise. */
export const DEFAULT_VNODES = 64;

/** One group of replicas. */
export interface RoutingGroup {
  /** The group's id (1..65535; unique in the table). */
  readonly id: number;
  /** Its replicas' addresses, `host:port` (voters first; a client tries them in this order). */
  readonly replicas: readonly string[];
}

/** A routing table. */
export interface RoutingTable {
  /** 1 for a cluster's first table; +1 with every change. */
  readonly epoch: number;
  /** The data groups (at least one). */
  readonly groups: readonly RoutingGroup[];
  /** Virtual nodes per group on the ring. Default {@link DEFAULT_VNODES}. */
  readonly vnodes?: number;
}

/** A routing table that breaks a rule; the message says which. */
export class RoutingError extends Error {
  override name = 'RoutingError';
}

/**
 * Checks a routing table's rules.
 * @throws RoutingError for an epoch that is not a positive integer, no group, a bad or repeated
 *   group id, a group without replicas, or vnodes outside 1..4096.
 */
export function validateRoutingTable(t: RoutingTable): void {
  if (!Number.isSafeInteger(t.epoch) || t.epoch < 1) throw new RoutingError(`routing epoch ${t.epoch} is not a positive integer`);
  if (t.groups.length === 0) throw new RoutingError('a routing table needs at least one group');
  const ids = new Set<number>();
  for (const g of t.groups) {
    if (!Number.isInteger(g.id) || g.id < 1 || g.id > 0xffff) throw new RoutingError(`group id ${g.id} is not 1-65535`);
    if (ids.has(g.id)) throw new RoutingError(`group ${g.id} appears twice`);
    ids.add(g.id);
    if (g.replicas.length === 0) throw new RoutingError(`group ${g.id} has no replica`);
  }
  const v = t.vnodes ?? DEFAULT_VNODES;
  if (!Number.isInteger(v) || v < 1 || v > 4096) throw new RoutingError(`vnodes ${v} is not 1-4096`);
}

const encoder = new TextEncoder();

/** MurmurHash3 x86 32-bit (seed 0) of a string's UTF-8 bytes. */
function hash(text: string): number {
  return murmurhash.v3(encoder.encode(text), 0) >>> 0;
}

/** A table's ring: points ascending, each with its group. Built once per table. */
export class RoutingRing {
  private readonly points: Uint32Array;
  private readonly owners: Uint16Array;

  /**
   * @param table - a valid table ({@link validateRoutingTable}).
   * @throws RoutingError when it is not.
   */
  constructor(readonly table: RoutingTable) {
    validateRoutingTable(table);
    const v = table.vnodes ?? DEFAULT_VNODES;
    const all: Array<[number, number]> = [];
    for (const g of table.groups) for (let n = 0; n < v; n++) all.push([hash(`${g.id}#${n}`), g.id]);
    // Ties (two points at one hash) go to the lower group id, so every process builds the same ring.
    all.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    this.points = Uint32Array.from(all.map((p) => p[0]));
    this.owners = Uint16Array.from(all.map((p) => p[1]));
  }

  /**
   * The group a key belongs to.
   * @param key - the key (any string; hashed as UTF-8).
   * @returns the group's id.
   */
  groupOf(key: string): number {
    const h = hash(key);
    // First point at or after h, wrapping to the first point.
    let lo = 0;
    let hi = this.points.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.points[mid]! < h) lo = mid + 1;
      else hi = mid;
    }
    return this.owners[lo === this.points.length ? 0 : lo]!;
  }

  /**
   * The group a key belongs to, with its replicas.
   * @returns the group of {@link groupOf}.
   */
  route(key: string): RoutingGroup {
    const id = this.groupOf(key);
    return this.table.groups.find((g) => g.id === id)!;
  }
}

/**
 * Encodes a table as the routing key's value: UTF-8 JSON `{"epoch":1,"groups":[{"id":1,"replicas":[...]}],"vnodes":64}`.
 * @returns the bytes.
 */
export function encodeRoutingTable(t: RoutingTable): Uint8Array {
  return encoder.encode(JSON.stringify({ epoch: t.epoch, groups: t.groups.map((g) => ({ id: g.id, replicas: [...g.replicas] })), ...(t.vnodes === undefined ? {} : { vnodes: t.vnodes }) }));
}

/**
 * Decodes the routing key's value.
 * @returns the table.
 * @throws RoutingError when the bytes are not such JSON or break a rule of {@link validateRoutingTable}.
 */
export function decodeRoutingTable(bytes: Uint8Array): RoutingTable {
  let o: unknown;
  try {
    o = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (err) {
    throw new RoutingError(`a routing table is UTF-8 JSON: ${(err as Error).message}`);
  }
  const r = o as { epoch?: unknown; groups?: unknown; vnodes?: unknown } | null;
  if (r === null || typeof r !== 'object' || typeof r.epoch !== 'number' || !Array.isArray(r.groups)) throw new RoutingError('a routing table has a numeric epoch and a list of groups');
  const groups = r.groups.map((g: unknown, i: number): RoutingGroup => {
    const x = g as { id?: unknown; replicas?: unknown } | null;
    if (x === null || typeof x !== 'object' || typeof x.id !== 'number' || !Array.isArray(x.replicas) || x.replicas.some((a) => typeof a !== 'string')) {
      throw new RoutingError(`group ${i} of the routing table has no numeric id or no list of replica addresses`);
    }
    return { id: x.id, replicas: x.replicas as string[] };
  });
  if (r.vnodes !== undefined && typeof r.vnodes !== 'number') throw new RoutingError('vnodes is not a number');
  const t: RoutingTable = { epoch: r.epoch, groups, ...(r.vnodes === undefined ? {} : { vnodes: r.vnodes as number }) };
  validateRoutingTable(t);
  return t;
}

/**
 * The system group: it holds the routing table under {@link ROUTING_KEY} (as PaxosStore keeps its
 * route in a system table). It is also a data group like the others.
 */
export const SYSTEM_GROUP = 1;

/**
 * The system key that holds the routing table in the system group ({@link encodeRoutingTable}).
 * Clients may read and watch it; only `SetRouting` writes it.
 */
export const ROUTING_KEY = '\u0000svrkit/routing';

/**
 * Checks that `next` may follow `current` as the cluster's routing table. Keys never move between
 * groups here (moving a key range online is not built; see the README): so a next table keeps the
 * same group ids and virtual nodes, and only the replica addresses may change.
 * @param current - the table now chosen, or undefined when there is none yet.
 * @param next - the table to write.
 * @throws RoutingError when `next` breaks a rule of {@link validateRoutingTable}; has no group
 *   {@link SYSTEM_GROUP}; is a first table whose epoch is not 1; or is not `current`'s epoch + 1,
 *   or has other groups or vnodes than `current` (it would move keys).
 */
export function checkNextRoutingTable(current: RoutingTable | undefined, next: RoutingTable): void {
  validateRoutingTable(next);
  if (!next.groups.some((g) => g.id === SYSTEM_GROUP)) throw new RoutingError(`a routing table needs group ${SYSTEM_GROUP}, the system group (it holds the table)`);
  if (current === undefined) {
    if (next.epoch !== 1) throw new RoutingError(`the first routing table has epoch 1, not ${next.epoch}`);
    return;
  }
  if (next.epoch !== current.epoch + 1) throw new RoutingError(`the routing table is at epoch ${current.epoch}: the next one has epoch ${current.epoch + 1}, not ${next.epoch}`);
  const ids = (t: RoutingTable) => t.groups.map((g) => g.id).sort((a, b) => a - b).join(',');
  if (ids(current) !== ids(next) || (current.vnodes ?? DEFAULT_VNODES) !== (next.vnodes ?? DEFAULT_VNODES)) {
    throw new RoutingError(
      `groups [${ids(next)}] with ${next.vnodes ?? DEFAULT_VNODES} vnodes would move keys from groups [${ids(current)}] with ${current.vnodes ?? DEFAULT_VNODES} vnodes: ` +
        'only replica addresses may change (moving keys between groups is not supported)',
    );
  }
}

/**
 * The table of the next epoch in which group `group` has the replicas `replicas` (after a
 * membership change of that group).
 * @returns a new table (epoch + 1), or `table` itself when the group already has those replicas.
 * @throws RoutingError when the table has no group `group`, or `replicas` is empty.
 */
export function withGroupReplicas(table: RoutingTable, group: number, replicas: readonly string[]): RoutingTable {
  const g = table.groups.find((x) => x.id === group);
  if (g === undefined) throw new RoutingError(`the routing table has no group ${group}`);
  if (replicas.length === 0) throw new RoutingError(`group ${group} has no replica`);
  if (g.replicas.length === replicas.length && g.replicas.every((a, i) => a === replicas[i])) return table;
  return { ...table, epoch: table.epoch + 1, groups: table.groups.map((x) => (x.id === group ? { id: group, replicas: [...replicas] } : x)) };
}

/** Response metadata of a wrong-group answer: the replica's routing table, as {@link encodeRoutingTable}'s JSON text. */
export const ROUTING_METADATA = 'x-routing-table';

/** Request metadata of a list in a cluster of many groups: the group it is for (decimal). */
export const GROUP_METADATA = 'x-kv-group';
