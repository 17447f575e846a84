/**
 * The service registry as an RPC service (`svrkit.registry.Registry`,
 * proto/svrkit/registry/registry.proto), over a PaxosKV client: every PaxosKV replica process
 * serves it (`svrkit kv serve`), and so does a stateless process pointed at a PaxosKV cluster
 * (`svrkit config serve --peers ...`). Clients reach it as `registry://h:p[,h:p...]/prefix`
 * (remote-registry.ts).
 *
 * It keeps instances exactly as the `paxoskv://` registry does (it is one, per prefix, on a shared
 * PaxosKV client): one key per service, each entry with a lease and an expiry on this server's
 * clock, renewed by the registering process's `Register` calls. A server holds no lease state of
 * its own, so a client may renew through any server. Watches fan out: one PaxosKV watch per
 * watched service, however many clients watch it.
 */
import { RpcError, Status, type CallContext, type Instance } from '../../framework/index.js';
import { Fanout } from '../paxoskv/fanout.js';
import type { PaxosKVClient } from '../paxoskv/client.js';
import { registryErrors } from './errors.js';
import {
  RegistryService,
  type DeregisterReply,
  type DeregisterRequest,
  type ListReply,
  type ListRequest,
  type RegisterReply,
  type RegisterRequest,
} from './gen/svrkit/registry/registry.js';
import { PaxosKVRegistry } from './paxoskv-registry.js';
import { checkPrefix, checkService, fromWire, MAX_SERVED_TTL_MS, toWire } from './wire.js';

/**
 * Distinct prefixes one server keeps a registry object for (each batches its writes); calls for
 * other prefixes beyond it are served by a registry made for the call (bounds what clients can
 * make a server hold, and locks no prefix out).
 */
export const MAX_PREFIXES = 1024;

/** Options of {@link RegistryServer}. */
export interface RegistryServerOptions {
  /** How long a service's PaxosKV watch outlives its last watcher (ms). Default 5000. */
  lingerMs?: number;
  /** The clock of leases (epoch ms). Default `Date.now`. */
  now?: () => number;
}

/** A request's field, checked, or INVALID_ARGUMENT naming it. */
function checked<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw registryErrors.INVALID_REGISTRY_REQUEST((err as Error).message);
  }
}

/** A PaxosKV failure as it is; a malformed stored list as DATA_LOSS. */
function failure(err: unknown): Error {
  if (err instanceof RpcError) return err;
  return registryErrors.REGISTRY_DATA_MALFORMED((err as Error)?.message ?? String(err));
}

/**
 * Serves `Registry` over a PaxosKV cluster; add it to a `Server` with `addService`.
 *
 * ```ts
 * server.addService(new RegistryServer(new PaxosKVClient({ peers: ['127.0.0.1:7101', '127.0.0.1:7102', '127.0.0.1:7103'] })));
 * ```
 */
export class RegistryServer extends RegistryService {
  /** One `paxoskv` registry per prefix, on the shared client. */
  private readonly registries = new Map<string, PaxosKVRegistry>();
  /** One PaxosKV watch per watched (prefix, service). */
  readonly fanout: Fanout<Instance[]>;
  private readonly now: () => number;

  /**
   * @param kv - the PaxosKV cluster's client (the caller's; `close()` does not close it).
   * @param options - see {@link RegistryServerOptions}.
   */
  constructor(
    private readonly kv: PaxosKVClient,
    options: RegistryServerOptions = {},
  ) {
    super();
    this.now = options.now ?? Date.now;
    this.fanout = new Fanout<Instance[]>((key, emit, signal) => {
      const [prefix, service] = JSON.parse(key) as [string, string];
      // A registry of its own for the follower (on the shared client), closed with it.
      const registry = this.makeRegistry(prefix);
      return new Promise<void>((resolve) => {
        const end = (): void => {
          stop();
          void registry.close();
          resolve();
        };
        // The paxoskv registry's watch moves between replicas and retries by itself; a malformed
        // list leaves the last one standing, as for any registry watch. A refused key cannot
        // recover: the follower ends, and so do its subscriptions.
        const stop = registry.watch(service, emit, (err) => {
          if (err instanceof RpcError && err.code === Status.INVALID_ARGUMENT) end();
        });
        signal.addEventListener('abort', end, { once: true });
      });
    }, options.lingerMs ?? 5000);
  }

  /**
   * Stores the instance under its lease until `ttl_ms` from now (this server's clock).
   * @throws RpcError INVALID_ARGUMENT (`INVALID_REGISTRY_REQUEST`) for a bad prefix, instance,
   *   service name, lease (1 to 64 of `[A-Za-z0-9_-]`) or TTL (10 ms to one day); DATA_LOSS for a
   *   stored list that does not decode; PaxosKV's errors when it does not answer.
   */
  override async register(request: RegisterRequest): Promise<RegisterReply> {
    const prefix = checked(() => checkPrefix(request.prefix));
    const instance = checked(() => fromWire(request.instance, 'instance'));
    checked(() => checkService(instance.service));
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(request.lease)) throw registryErrors.INVALID_REGISTRY_REQUEST('lease: expected 1 to 64 letters, digits, _ or -');
    if (request.ttlMs < 10 || request.ttlMs > MAX_SERVED_TTL_MS) throw registryErrors.INVALID_REGISTRY_REQUEST(`ttl_ms must be 10..${MAX_SERVED_TTL_MS} (got ${request.ttlMs})`);
    await this.withRegistry(prefix, (r) => r.storeLease(instance, request.lease, request.ttlMs));
    return {};
  }

  /**
   * Removes the service's entry held under the lease (nothing when there is none).
   * @throws RpcError as `register`.
   */
  override async deregister(request: DeregisterRequest): Promise<DeregisterReply> {
    const prefix = checked(() => checkPrefix(request.prefix));
    const service = checked(() => checkService(request.service));
    await this.withRegistry(prefix, (r) => r.dropLease(service, request.lease));
    return {};
  }

  /**
   * The live instances of a service (linearizable), or of every service ("": a listing, not linearizable).
   * @throws RpcError as `register`.
   */
  override async list(request: ListRequest): Promise<ListReply> {
    const prefix = checked(() => checkPrefix(request.prefix));
    const service = request.service === '' ? undefined : checked(() => checkService(request.service));
    const list = await this.withRegistry(prefix, (r) => r.list(service));
    return { instances: list.map(toWire) };
  }

  /**
   * The service's live instances now, then at each change, from its shared PaxosKV watch.
   * @throws RpcError INVALID_ARGUMENT for a bad prefix or service name.
   */
  override async *watch(request: ListRequest, call: CallContext): AsyncGenerator<ListReply> {
    const prefix = checked(() => checkPrefix(request.prefix));
    const service = checked(() => checkService(request.service));
    for await (const list of this.fanout.subscribe(JSON.stringify([prefix, service]), call.signal)) yield { instances: list.map(toWire) };
  }

  /** Ends every watch (the PaxosKV client stays open). */
  async close(): Promise<void> {
    this.fanout.close();
    await Promise.all([...this.registries.values()].map((r) => r.close()));
    this.registries.clear();
  }

  /** Runs `fn` on the prefix's registry: the kept one, or, past `MAX_PREFIXES`, one made for this call. */
  private async withRegistry<T>(prefix: string, fn: (r: PaxosKVRegistry) => Promise<T>): Promise<T> {
    let r = this.registries.get(prefix);
    const kept = r !== undefined || this.registries.size < MAX_PREFIXES;
    if (r === undefined) {
      r = this.makeRegistry(prefix);
      if (kept) this.registries.set(prefix, r);
    }
    try {
      return await fn(r);
    } catch (err) {
      throw failure(err);
    } finally {
      if (!kept) await r.close();
    }
  }

  private makeRegistry(prefix: string): PaxosKVRegistry {
    return new PaxosKVRegistry({ kind: 'paxoskv', uri: `paxoskv://(served)${prefix}`, hosts: [], prefix }, this.now, this.kv);
  }
}
