/**
 * A service instance as registries store it and resolvers report it: `{ service, address, zone,
 * labels, weight }` (DESIGN.md section 7). This module is a leaf: it imports nothing, so the
 * client (resolvers, balancers) and the registries can both depend on it.
 */

/** One running instance of one service. */
export interface Instance {
  /** Fully-qualified service name, e.g. `'helloworld.Greeter'`. */
  readonly service: string;
  /** `host:port` the instance serves on. */
  readonly address: string;
  /** Zone (data centre, availability zone) the instance runs in; `''` for none. */
  readonly zone: string;
  /** Free-form labels, e.g. `{ version: '1.4.2', canary: 'true' }`. */
  readonly labels: Readonly<Record<string, string>>;
  /** Relative share of traffic, > 0 and <= 1000. Default 1. */
  readonly weight: number;
}

/** The largest weight an instance may have (bounds the consistent-hash ring: 160 points per unit). */
export const MAX_WEIGHT = 1000;

/** What `normalizeInstance` accepts: an instance with `zone`, `labels` and `weight` optional. */
export interface InstanceInput {
  service: string;
  address: string;
  zone?: string;
  labels?: Record<string, string>;
  weight?: number;
}

/**
 * Validates an instance and fills the defaults (`zone: ''`, `labels: {}`, `weight: 1`).
 * @param value - anything (e.g. an entry parsed from a registry file).
 * @param where - names the value in error messages, e.g. `'registry.json entry 3'`.
 * @returns a frozen `Instance`.
 * @throws Error when a field is missing or has the wrong type: `service` and `address` must be
 *   non-empty strings, `address` must be `host:port` with a port 0-65535, `zone` a string, `labels`
 *   a map of strings, `weight` a finite number in (0, 1000].
 */
export function normalizeInstance(value: unknown, where = 'instance'): Instance {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error(`${where}: expected an object { service, address, zone?, labels?, weight? }`);
  const v = value as Record<string, unknown>;
  if (typeof v['service'] !== 'string' || v['service'].length === 0) throw new Error(`${where}: 'service' must be a non-empty string`);
  const port = typeof v['address'] === 'string' ? /^(?:\[[^\]]+\]|[^:/\s]+):(\d{1,5})$/.exec(v['address'])?.[1] : undefined;
  if (port === undefined || Number(port) > 65535) {
    throw new Error(`${where}: 'address' must be host:port with a port 0-65535, e.g. 127.0.0.1:7000 (got ${JSON.stringify(v['address'])})`);
  }
  const zone = v['zone'] ?? '';
  if (typeof zone !== 'string') throw new Error(`${where}: 'zone' must be a string`);
  const labels = v['labels'] ?? {};
  if (labels === null || typeof labels !== 'object' || Array.isArray(labels) || Object.values(labels).some((x) => typeof x !== 'string')) {
    throw new Error(`${where}: 'labels' must be an object of string values`);
  }
  const weight = v['weight'] ?? 1;
  if (typeof weight !== 'number' || !Number.isFinite(weight) || weight <= 0 || weight > MAX_WEIGHT) {
    throw new Error(`${where}: 'weight' must be a number > 0 and <= ${MAX_WEIGHT}`);
  }
  return Object.freeze({
    service: v['service'],
    address: v['address'] as string,
    zone,
    labels: Object.freeze({ ...(labels as Record<string, string>) }),
    weight,
  });
}

/**
 * Orders instances by service, then address (the order registries report them in).
 * @returns a negative number, zero or a positive number, as `Array.prototype.sort` expects.
 */
export function compareInstances(a: Instance, b: Instance): number {
  if (a.service !== b.service) return a.service < b.service ? -1 : 1;
  if (a.address !== b.address) return a.address < b.address ? -1 : 1;
  return 0;
}

/**
 * Whether two instance lists are equal field by field (service, address, zone, weight, labels),
 * in order. Registries use it to notify watchers only when a list actually changed.
 * @returns true when both lists have the same length and equal instances at every index.
 */
export function sameInstances(a: readonly Instance[], b: readonly Instance[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x.service !== y.service || x.address !== y.address || x.zone !== y.zone || x.weight !== y.weight) return false;
    const xk = Object.keys(x.labels);
    if (xk.length !== Object.keys(y.labels).length) return false;
    for (const k of xk) if (x.labels[k] !== y.labels[k]) return false;
  }
  return true;
}

/** A registration's lease TTL when none is given (ms). */
export const DEFAULT_LEASE_TTL_MS = 10_000;

/**
 * Checks a registration's lease TTL and applies the default.
 * @param ttlMs - the TTL asked for (ms), or undefined for `DEFAULT_LEASE_TTL_MS`.
 * @returns the TTL to use (ms).
 * @throws Error when `ttlMs` is not a finite number of at least 10 ms.
 */
export function leaseTtlMs(ttlMs: number | undefined): number {
  if (ttlMs === undefined) return DEFAULT_LEASE_TTL_MS;
  if (typeof ttlMs !== 'number' || !Number.isFinite(ttlMs) || ttlMs < 10) {
    throw new Error(`lease ttl must be a number of milliseconds >= 10 (got ${String(ttlMs)})`);
  }
  return ttlMs;
}
