/**
 * Service registries (DESIGN.md section 7): where running instances announce themselves under a
 * lease and where clients find and watch them. One interface, several implementations:
 *
 * - `file:///abs/path/registry.json` — a JSON file on the local disk, the embedded default
 *   (`file-registry.ts`); several processes on one host share it safely.
 * - `etcd://host:port[,host:port...]/key/prefix` — lease-bound keys in etcd plus a prefix watch
 *   (`etcd-registry.ts`); the `etcd3` package is loaded only when such a registry is used.
 * - `paxoskv://host:port[,host:port...]/prefix` — one PaxosKV key per service, followed with
 *   PaxosKV's watch (`services/registry/paxoskv-registry.ts`, a flagship service built on the
 *   framework; the package root `index.ts` and the CLI register it).
 *
 * This module holds the interface, the URI syntax and a table of implementations; it never
 * imports them. Each implementation exports `setup()`, which calls `registerRegistry`, and the
 * composition root (`framework/setup.ts`, imported by `framework/index.ts` and
 * `framework/runtime.ts`) calls them all, as grpc-js's `index.ts` calls its resolvers' `setup()`.
 */
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseAddress } from '../client/resolver.js';
import type { Instance, InstanceInput } from './instance.js';

/** A live registration made by `Registry.register`. */
export interface Registration {
  /** The registered instance (defaults filled in). */
  readonly instance: Instance;
  /**
   * Removes the instance from the registry and stops its lease keepalive. Idempotent: later
   * calls resolve at once.
   * @throws Error (rejection) when the registry cannot be reached or written; the keepalive is
   *   stopped anyway, so the entry disappears when its lease expires.
   */
  deregister(): Promise<void>;
}

/** Options of `Registry.register`. */
export interface RegisterOptions {
  /**
   * Lease TTL (ms), default 10000: when the registering process stops renewing (it crashed or
   * hung), the instance disappears this long after the last renewal. Renewed every ttl/3.
   * etcd rounds it up to whole seconds, and to its own minimum (2 s with default settings).
   */
  ttlMs?: number;
  /**
   * Called when a lease renewal fails (the registry keeps retrying), e.g. to log it. Called once
   * per distinct failure, not on every retry. Default: ignore.
   */
  onError?: (error: Error) => void;
}

/** A service registry: instances under leases, listed and watched per service. */
export interface Registry {
  /** The URI the registry was opened with, e.g. `'file:///srv/registry.json'`. */
  readonly uri: string;
  /**
   * Registers an instance and keeps its lease alive (renewing every ttl/3) until `deregister()`
   * or `close()`. Registering the same service and address again replaces the entry.
   * @param instance - `{ service, address, zone?, labels?, weight? }`.
   * @returns the registration, once the instance is visible to `list` and `watch`.
   * @throws Error (rejection) for an invalid instance or TTL, a closed registry, or when the
   *   registry cannot be reached or written (the error names the registry).
   */
  register(instance: InstanceInput, options?: RegisterOptions): Promise<Registration>;
  /**
   * Lists the live instances.
   * @param service - a fully-qualified service name; all services when omitted.
   * @returns the live instances, sorted by service then address.
   * @throws Error (rejection) when the registry cannot be read or holds malformed data (the
   *   message names the file and entry index, or the etcd key), or the registry is closed.
   */
  list(service?: string): Promise<Instance[]>;
  /**
   * Watches one service's live instances.
   * @param onInstances - called first with the current list, then with the complete new list on
   *   every change of the live set (not on lease renewals).
   * @param onError - called when the registry cannot be read or holds malformed data; the last
   *   reported list stays valid until a new one arrives.
   * @returns a function that stops the watch (no calls after it returns).
   * @throws Error when the registry is closed or `service` is empty.
   */
  watch(service: string, onInstances: (instances: Instance[]) => void, onError: (error: Error) => void): () => void;
  /**
   * Stops this object's lease keepalives and watches and releases its resources. It does NOT
   * deregister: instances registered through it stay listed until their leases expire (ttl), just
   * as when the process crashes. Call `deregister()` first for a clean, immediate removal.
   * Idempotent; never rejects.
   */
  close(): Promise<void>;
}

/** Where a registry lives, parsed from its URI by `parseRegistryUri`. */
export type RegistryLocation =
  | {
      readonly kind: 'file';
      /** The URI in canonical form (`file:///abs/path.json`). */
      readonly uri: string;
      /** Absolute path of the JSON file. */
      readonly path: string;
    }
  | HostsLocation<'etcd'>
  | HostsLocation<'paxoskv'>
  | HostsLocation<'registry'>;

/** A registry reached through a list of endpoints, with a key prefix (`etcd:`, `paxoskv:`, `registry:`). */
export interface HostsLocation<K extends 'etcd' | 'paxoskv' | 'registry'> {
  readonly kind: K;
  /** The URI in canonical form (`etcd://h:p,h:p/prefix`, `paxoskv://h:p,h:p/prefix`, `registry://h:p,h:p/prefix`). */
  readonly uri: string;
  /** Client endpoints (etcd members, PaxosKV replicas, registry servers), `host:port` each. */
  readonly hosts: readonly string[];
  /** The key prefix, starting with `/` and without a trailing `/`, e.g. `'/svrkit/services'`. */
  readonly prefix: string;
}

/** The key prefix of an `etcd://host:port` URI that gives none. */
export const DEFAULT_ETCD_PREFIX = '/svrkit/services';

const USAGE =
  'expected file:///abs/path/registry.json, etcd://host:port[,host:port]/key/prefix, paxoskv://host:port[,host:port]/prefix or registry://host:port[,host:port]/prefix';

/**
 * Parses a registry URI (pure: no I/O).
 * - `file:///abs/path/registry.json` (also `file://localhost/...`; percent-escapes are decoded).
 * - `etcd://host:port[,host:port...][/key/prefix]` (prefix default `/svrkit/services`).
 * - `paxoskv://...` (PaxosKV replicas) and `registry://...` (registry servers: PaxosKV replica
 *   processes or `svrkit config serve`), the same way.
 * @returns the location.
 * @throws Error naming the URI and the expected forms when the scheme is unknown or the URI is
 *   malformed (relative file path, a path ending in `/`, no etcd endpoint, an endpoint that is
 *   not host:port, an empty prefix segment).
 */
export function parseRegistryUri(uri: string): RegistryLocation {
  if (typeof uri !== 'string' || uri.trim() === '') throw new Error(`empty registry URI: ${USAGE}`);
  const text = uri.trim();
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(text)?.[1]?.toLowerCase();
  if (scheme === 'file') {
    if (!/^file:\/\/(localhost)?\//i.test(text)) {
      throw new Error(`registry URI '${uri}': a file registry needs an absolute path, e.g. file:///var/lib/svrkit/registry.json`);
    }
    let path: string;
    try {
      path = fileURLToPath(text);
    } catch (err) {
      throw new Error(`registry URI '${uri}': ${(err as Error).message}`);
    }
    if (path.endsWith('/')) throw new Error(`registry URI '${uri}': names a directory; give the JSON file, e.g. file://${path}registry.json`);
    return { kind: 'file', uri: pathToFileURL(path).href, path };
  }
  if (scheme === 'etcd' || scheme === 'paxoskv' || scheme === 'registry') {
    const m = /^[a-z]+:\/\/([^/?#]*)(\/[^?#]*)?$/i.exec(text);
    if (m === null) throw new Error(`registry URI '${uri}': ${USAGE}`);
    const what = scheme === 'etcd' ? 'etcd endpoint' : scheme === 'paxoskv' ? 'PaxosKV replica' : 'registry server';
    const hosts = m[1]!.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
    if (hosts.length === 0) throw new Error(`registry URI '${uri}': no ${what}; expected ${scheme}://127.0.0.1:${scheme === 'etcd' ? 2379 : 7101}/svrkit/services`);
    for (const h of hosts) {
      try {
        parseAddress(h);
      } catch {
        throw new Error(`registry URI '${uri}': ${what} '${h}' is not host:port`);
      }
    }
    let path: string;
    try {
      path = decodeURIComponent(m[2] ?? '');
    } catch {
      throw new Error(`registry URI '${uri}': bad percent-escape in the key prefix`);
    }
    const trimmed = path.replace(/\/+$/, '');
    const prefix = trimmed === '' ? DEFAULT_ETCD_PREFIX : trimmed;
    if (prefix.slice(1).split('/').some((seg) => seg === '')) throw new Error(`registry URI '${uri}': the key prefix '${prefix}' has an empty segment`);
    const canonical = `${scheme}://${hosts.join(',')}${encodeURI(prefix)}`;
    return { kind: scheme, uri: canonical, hosts, prefix } as HostsLocation<typeof scheme>;
  }
  throw new Error(`unsupported registry URI '${uri}': ${USAGE}`);
}

/** The kinds of registry URI that `parseRegistryUri` knows: `'file'`, `'etcd'`, `'paxoskv'` and `'registry'`. */
export type RegistryKind = RegistryLocation['kind'];

/**
 * Makes the registry for one parsed location; what an implementation hands `registerRegistry`.
 * Must not read, connect or load anything (see `openRegistry`).
 */
export type RegistryFactory<K extends RegistryKind = RegistryKind> = (location: Extract<RegistryLocation, { kind: K }>) => Registry;

/** Registry implementations by URI kind, filled by the implementations' `setup()` functions. */
const factories = new Map<RegistryKind, RegistryFactory>();

/**
 * Registers the implementation that `openRegistry` uses for one kind of URI. Implementations call
 * it from their `setup()` (e.g. `file-registry.ts`), and `framework/setup.ts` calls those; a later
 * registration for the same kind replaces the earlier one.
 * @param kind - `'file'`, `'etcd'`, `'paxoskv'` or `'registry'`.
 * @param factory - makes the registry for a parsed location of that kind.
 * @throws Error when `kind` is not a kind `parseRegistryUri` knows, or `factory` is not a function.
 */
export function registerRegistry<K extends RegistryKind>(kind: K, factory: RegistryFactory<K>): void {
  if (kind !== 'file' && kind !== 'etcd' && kind !== 'paxoskv' && kind !== 'registry') {
    throw new Error(`registerRegistry: unknown registry kind '${String(kind)}' (expected 'file', 'etcd', 'paxoskv' or 'registry')`);
  }
  if (typeof factory !== 'function') throw new Error(`registerRegistry('${kind}'): factory must be a function`);
  // openRegistry looks factories up by the location's own kind, so the narrowing holds.
  factories.set(kind, (location) => factory(location as Extract<RegistryLocation, { kind: K }>));
}

/**
 * Opens a registry. Nothing is read, connected or loaded until the registry is first used, so
 * opening never fails for an unreachable or missing registry; the first `register`, `list` or
 * `watch` reports that.
 * @param uri - `file:///abs/path/registry.json`, `etcd://host:port[,host:port]/key/prefix`, `paxoskv://host:port[,host:port]/prefix` or `registry://host:port[,host:port]/prefix`.
 * @returns the registry; `close()` it when done.
 * @throws Error for a malformed or unsupported URI (see `parseRegistryUri`), or when no
 *   implementation is registered for its kind (nothing imported `framework/setup.ts`, which
 *   `'svrkit'`, `framework/index.ts` and `framework/runtime.ts` do).
 */
export function openRegistry(uri: string): Registry {
  const location = parseRegistryUri(uri);
  const factory = factories.get(location.kind);
  if (factory === undefined) {
    throw new Error(
      `registry URI '${uri}': no '${location.kind}' registry implementation is registered; import 'svrkit' (or framework/setup.js), which registers the built-in ones`,
    );
  }
  return factory(location);
}
