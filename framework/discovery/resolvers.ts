/**
 * Resolvers for registry targets: `setup()` registers the `file`, `etcd`, `paxoskv` and `registry` schemes with
 * `registerResolver`, so a channel can be made for `file:///srv/registry.json` or
 * `etcd://127.0.0.1:2379/svrkit/services`. Importing this module registers nothing; the
 * composition root, `framework/setup.ts`, calls `setup()`.
 *
 * A resolver for (target, service) watches that service in the target's registry. All resolvers
 * of one process that name the same registry share one `Registry` object (one file watcher, one
 * etcd client), reference-counted and closed when the last of them closes.
 */
import { registerResolver, type ParsedTarget, type Resolver, type ResolverListener } from '../client/resolver.js';
import type { Instance } from './instance.js';
import { openRegistry, parseRegistryUri, type Registry } from './registry.js';

interface Shared {
  readonly registry: Registry;
  refs: number;
}

/** Registries in use by resolvers, by canonical URI. */
const shared = new Map<string, Shared>();

/**
 * Takes a reference to the process-wide registry for `uri`, opening it on first use.
 * @param uri - a registry URI (see `parseRegistryUri`); equivalent spellings share one registry.
 * @returns the registry and `release()`, which drops the reference (idempotent) and closes the
 *   registry when no reference is left. Do not call `registry.close()` directly.
 * @throws Error for a malformed or unsupported URI.
 */
export function acquireRegistry(uri: string): { registry: Registry; release: () => void } {
  const key = parseRegistryUri(uri).uri;
  let entry = shared.get(key);
  if (entry === undefined) {
    entry = { registry: openRegistry(key), refs: 0 };
    shared.set(key, entry);
  }
  entry.refs++;
  const e = entry;
  let released = false;
  return {
    registry: e.registry,
    release: () => {
      if (released) return;
      released = true;
      if (--e.refs > 0) return;
      if (shared.get(key) === e) shared.delete(key);
      void e.registry.close();
    },
  };
}

/**
 * The registries resolvers hold open right now (for diagnostics and tests).
 * @returns `{ uri, refs }` per open registry: its canonical URI and how many references it has.
 */
export function openSharedRegistries(): Array<{ uri: string; refs: number }> {
  return [...shared].map(([uri, e]) => ({ uri, refs: e.refs }));
}

/** Rebuilds the URI of a parsed `file:` or `etcd:` target. */
function targetUri(t: ParsedTarget): string {
  return `${t.scheme}://${t.authority}/${t.endpoint}`;
}

/**
 * Makes the resolver of one service in a registry target (a `ResolverFactory`).
 * @param target - a parsed `file:///...` or `etcd://...` target.
 * @param service - fully-qualified service name.
 * @returns a resolver; `start(listener)` opens (or shares) the registry and watches the service,
 *   `close()` stops the watch and releases the registry.
 * @throws Error for a malformed registry URI or an empty service name.
 */
export function registryResolver(target: ParsedTarget, service: string): Resolver {
  const uri = parseRegistryUri(targetUri(target)).uri;
  if (typeof service !== 'string' || service === '') throw new Error(`resolver for ${uri}: service must be a non-empty string`);
  let state: 'new' | 'started' | 'closed' = 'new';
  let release: (() => void) | undefined;
  let unsubscribe: (() => void) | undefined;
  return {
    start(listener: ResolverListener): void {
      if (state !== 'new') return;
      state = 'started';
      try {
        const ref = acquireRegistry(uri);
        release = ref.release;
        unsubscribe = ref.registry.watch(
          service,
          (instances: Instance[]) => {
            if (state === 'started') listener.onInstances(instances);
          },
          (error: Error) => {
            if (state === 'started') listener.onError(error);
          },
        );
      } catch (err) {
        listener.onError(err as Error);
      }
    },
    close(): void {
      if (state === 'closed') return;
      state = 'closed';
      unsubscribe?.();
      release?.();
    },
  };
}

/** Checks a registry target's syntax when a channel is made for it (throws for a malformed URI). */
function validateTarget(t: ParsedTarget): void {
  parseRegistryUri(targetUri(t));
}

/**
 * Registers the resolvers of registry targets, for the `file`, `etcd`, `paxoskv` and `registry` schemes, with
 * `registerResolver` (replacing any earlier resolver of those schemes). Called once by the
 * composition root, `framework/setup.ts`; idempotent. The registries themselves come from
 * `openRegistry`, so their implementations must be registered too (`setup.ts` does both).
 * Takes nothing, returns nothing, throws nothing.
 */
export function setup(): void {
  registerResolver('file', registryResolver, validateTarget);
  registerResolver('etcd', registryResolver, validateTarget);
  registerResolver('paxoskv', registryResolver, validateTarget);
  registerResolver('registry', registryResolver, validateTarget);
}
