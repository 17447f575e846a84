/**
 * The etcd registry (`etcd://host:port[,host:port...]/key/prefix`), for users who already run
 * etcd (v3 API). Layout:
 *
 *   key   `${prefix}/${service}/${address}`, e.g. `/svrkit/services/helloworld.Greeter/10.0.0.5:7000`
 *   value the instance as JSON: `{"service":..,"address":..,"zone":..,"labels":{..},"weight":..}`
 *
 * Each registration puts its key under its own lease (TTL = ttlMs rounded up to whole seconds,
 * at least 1; etcd raises it to its minimum TTL, which is 2 s with the default
 * `--heartbeat-interval 100 --election-timeout 1000`, so a crashed process's key disappears 2 s
 * after its last renewal at the earliest). The `etcd3` package renews the lease every TTL/3; if the
 * lease is lost (etcd restarted, a long partition) the registration grants a new lease and puts
 * the key again, with backoff, until it is deregistered or the registry closed.
 *
 * A watch lists the service's keys (`getAll`) and follows a prefix watch from there; etcd3's
 * watcher reconnects by itself, and every (re)connection re-lists, so nothing is missed.
 * An unreachable etcd is reported to `onError` (and as rejections), never thrown at the process.
 *
 * The `etcd3` package is imported lazily, on the first use of an etcd registry. `setup()` makes
 * `openRegistry` use this registry for `etcd:` URIs (`framework/setup.ts` calls it).
 */
import type { Etcd3, IKeyValue, IRangeResponse, Lease, Watcher } from 'etcd3';
import { compareInstances, leaseTtlMs, normalizeInstance, sameInstances, type Instance, type InstanceInput } from './instance.js';
import { registerRegistry, type RegisterOptions, type Registration, type Registry, type RegistryLocation } from './registry.js';

// ---------------------------------------------------------------------------------------------
// Pure: keys and values.
// ---------------------------------------------------------------------------------------------

/**
 * The key of an instance (pure).
 * @param prefix - the registry's key prefix, e.g. `'/svrkit/services'`.
 * @returns `${prefix}/${service}/${address}`.
 */
export function etcdKey(prefix: string, service: string, address: string): string {
  return `${prefix}/${service}/${address}`;
}

/**
 * The key prefix of a service's instances, or of all instances (pure).
 * @returns `${prefix}/${service}/`, or `${prefix}/` when `service` is omitted.
 */
export function etcdServicePrefix(prefix: string, service?: string): string {
  return service === undefined ? `${prefix}/` : `${prefix}/${service}/`;
}

/**
 * The value stored for an instance (pure).
 * @returns JSON `{ service, address, zone, labels, weight }`.
 */
export function etcdValue(instance: Instance): string {
  const { service, address, zone, labels, weight } = instance;
  return JSON.stringify({ service, address, zone, labels, weight });
}

/**
 * Parses one registry key and its value (pure).
 * @param prefix - the registry's key prefix.
 * @returns the instance.
 * @throws Error naming the key when it is not `${prefix}/${service}/${address}`, the value is not
 *   JSON or not a valid instance, or the value's service/address differ from the key's.
 */
export function parseEtcdEntry(prefix: string, key: string, value: string): Instance {
  const where = `etcd key ${key}`;
  const rest = key.startsWith(`${prefix}/`) ? key.slice(prefix.length + 1) : '';
  const slash = rest.indexOf('/');
  if (slash <= 0 || slash === rest.length - 1) throw new Error(`${where}: expected ${prefix}/<service>/<host:port>`);
  let doc: unknown;
  try {
    doc = JSON.parse(value);
  } catch (err) {
    throw new Error(`${where}: value is not JSON: ${(err as Error).message}`);
  }
  const instance = normalizeInstance(doc, where);
  if (instance.service !== rest.slice(0, slash) || instance.address !== rest.slice(slash + 1)) {
    throw new Error(`${where}: the value names ${instance.service} at ${instance.address}, the key ${rest.slice(0, slash)} at ${rest.slice(slash + 1)}`);
  }
  return instance;
}

/**
 * The instances in a set of registry keys (pure).
 * @param entries - `[key, value]` pairs.
 * @param service - keep only this service's instances; all when omitted.
 * @returns instances sorted by service then address.
 * @throws Error from `parseEtcdEntry` for the first malformed entry.
 */
export function etcdInstances(prefix: string, entries: Iterable<readonly [string, string]>, service?: string): Instance[] {
  const out: Instance[] = [];
  for (const [key, value] of entries) {
    const instance = parseEtcdEntry(prefix, key, value);
    if (service === undefined || instance.service === service) out.push(instance);
  }
  return out.sort(compareInstances);
}

// ---------------------------------------------------------------------------------------------
// I/O: EtcdRegistry.
// ---------------------------------------------------------------------------------------------

/** Deadline of each unary etcd call (ms). Streams (watch, keepalive) have none. */
const CALL_TIMEOUT_MS = 5_000;
/** Re-registration after a lost lease: first delay and cap (ms), doubling in between. */
const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 5_000;
/** How long `close()` waits for each watch cancellation (ms). */
const CANCEL_WAIT_MS = 1_000;

function message(err: unknown): string {
  return (err as Error)?.message ?? String(err);
}

function safeCall(fn: ((error: Error) => void) | undefined, error: Error): void {
  try {
    fn?.(error);
  } catch {
    // A throwing callback must not break the registry.
  }
}

/**
 * Registers the etcd registry with `registerRegistry`, so that `openRegistry` opens `etcd:` URIs
 * with `EtcdRegistry` (nothing is loaded or connected until first use). Called once by the
 * composition root, `framework/setup.ts`; idempotent. Takes nothing, returns nothing, throws nothing.
 */
export function setup(): void {
  registerRegistry('etcd', (location) => new EtcdRegistry(location));
}

/**
 * A registry in etcd (see the module comment). Construct it with `openRegistry`.
 */
export class EtcdRegistry implements Registry {
  /** The registry's URI (`etcd://h:p,h:p/prefix`). */
  readonly uri: string;
  /** etcd endpoints (`host:port`). */
  readonly hosts: readonly string[];
  /** Key prefix, e.g. `'/svrkit/services'`. */
  readonly prefix: string;
  private closed = false;
  private client: Promise<Etcd3> | undefined;
  private readonly registrations = new Set<EtcdRegistration>();
  private readonly watches = new Set<EtcdWatch>();
  private readonly cancellations = new Set<Promise<void>>();

  /**
   * @param location - a parsed `etcd:` location (from `parseRegistryUri`). Nothing is loaded or
   *   connected until first use.
   */
  constructor(location: Extract<RegistryLocation, { kind: 'etcd' }>) {
    this.uri = location.uri;
    this.hosts = location.hosts;
    this.prefix = location.prefix;
  }

  /**
   * Registers `input`: grants a lease of ceil(ttlMs / 1000) s (default 10 s; etcd may raise it to
   * its minimum) and puts the instance's key under it; the lease is kept alive until
   * `deregister()` or `close()`, and re-granted (key put again) if it is lost.
   * @returns the registration, once the key is in etcd.
   * @throws Error (rejection) for an invalid instance or TTL, a service name containing `/`, a
   *   closed registry, or when etcd cannot be reached (the message names the registry).
   */
  async register(input: InstanceInput, options: RegisterOptions = {}): Promise<Registration> {
    this.checkOpen();
    const instance = normalizeInstance(input);
    if (instance.service.includes('/')) throw new Error(`instance: service '${instance.service}' must not contain '/' (it is part of an etcd key)`);
    const ttlSeconds = Math.max(1, Math.ceil(leaseTtlMs(options.ttlMs) / 1000));
    const client = await this.connect();
    const registration = new EtcdRegistration(this, client, instance, ttlSeconds, options.onError);
    try {
      await registration.start();
    } catch (err) {
      throw new Error(`etcd registry ${this.uri}: cannot register ${instance.service} at ${instance.address}: ${message(err)}`);
    }
    if (this.closed) {
      registration.stop();
      throw new Error(`registry ${this.uri} is closed`);
    }
    this.registrations.add(registration);
    return registration;
  }

  /**
   * Lists the live instances (of `service`, or all) with one range read.
   * @returns instances sorted by service then address.
   * @throws Error (rejection) naming the registry when etcd cannot be reached (each call has a
   *   5 s deadline) or naming the key when a value is malformed, or when the registry is closed.
   */
  async list(service?: string): Promise<Instance[]> {
    this.checkOpen();
    const client = await this.connect();
    let res: IRangeResponse;
    try {
      res = await client.getAll().prefix(etcdServicePrefix(this.prefix, service)).exec();
    } catch (err) {
      throw new Error(`etcd registry ${this.uri}: cannot list instances: ${message(err)}`);
    }
    return etcdInstances(this.prefix, res.kvs.map((kv) => [kv.key.toString(), kv.value.toString()] as const), service);
  }

  /**
   * Watches `service`: `onInstances` gets the current list once etcd answers, then each changed
   * list (a key put, deleted or expired). While etcd is unreachable, `onError` is told (once per
   * outage) and the last list stays valid; on reconnection the list is read afresh.
   * @returns unsubscribe.
   * @throws Error when the registry is closed or `service` is empty.
   */
  watch(service: string, onInstances: (instances: Instance[]) => void, onError: (error: Error) => void): () => void {
    this.checkOpen();
    if (typeof service !== 'string' || service === '') throw new Error('watch: service must be a non-empty string');
    const w = new EtcdWatch(this, service, onInstances, onError);
    this.watches.add(w);
    w.start();
    return () => {
      if (!this.watches.delete(w)) return;
      this.trackCancel(w.stop());
    };
  }

  /**
   * Stops lease keepalives (keys stay until their leases expire; it does NOT deregister), cancels
   * watches and closes the etcd client. Idempotent; never rejects.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const r of this.registrations) r.stop();
    this.registrations.clear();
    for (const w of this.watches) this.trackCancel(w.stop());
    this.watches.clear();
    await Promise.all([...this.cancellations]);
    const client = await this.client?.catch(() => undefined);
    client?.close();
  }

  // --- internals -----------------------------------------------------------------------------

  private checkOpen(): void {
    if (this.closed) throw new Error(`registry ${this.uri} is closed`);
  }

  /** @internal Loads etcd3 (once) and makes the client. */
  connect(): Promise<Etcd3> {
    this.client ??= import('etcd3').then(
      (mod) =>
        new mod.Etcd3({
          hosts: [...this.hosts],
          defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + CALL_TIMEOUT_MS }),
        }),
      (err: unknown) => {
        throw new Error(`etcd registry ${this.uri}: cannot load the etcd3 package (npm install etcd3): ${message(err)}`);
      },
    );
    return this.client;
  }

  /** @internal */
  forget(registration: EtcdRegistration): void {
    this.registrations.delete(registration);
  }

  private trackCancel(p: Promise<void>): void {
    const bounded = Promise.race([p.catch(() => {}), new Promise<void>((r) => setTimeout(r, CANCEL_WAIT_MS).unref())]);
    this.cancellations.add(bounded);
    void bounded.then(() => this.cancellations.delete(bounded));
  }
}

/** A registration in etcd: a key under a lease, re-put under a new lease if the lease is lost. */
class EtcdRegistration implements Registration {
  private lease: Lease | undefined;
  private stopped = false;
  private started = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryMs = RETRY_MIN_MS;
  private lastError: string | undefined;
  private deregistered: Promise<void> | undefined;
  private readonly key: string;

  constructor(
    private readonly registry: EtcdRegistry,
    private readonly client: Etcd3,
    readonly instance: Instance,
    private readonly ttlSeconds: number,
    private readonly onError: ((error: Error) => void) | undefined,
  ) {
    this.key = etcdKey(registry.prefix, instance.service, instance.address);
  }

  /** Grants the first lease and puts the key. @throws Error (rejection) when etcd refuses or is unreachable. */
  async start(): Promise<void> {
    try {
      await this.attach();
      this.started = true;
    } catch (err) {
      this.stop();
      throw err;
    }
  }

  /** A new lease, and the key put under it. */
  private async attach(): Promise<void> {
    const lease = this.client.lease(this.ttlSeconds);
    this.lease = lease;
    lease.on('lost', (err) => {
      if (lease === this.lease) this.lost(`lease lost: ${message(err)}`);
    });
    try {
      await lease.put(this.key).value(etcdValue(this.instance));
    } catch (err) {
      if (lease === this.lease) this.lease = undefined;
      lease.release();
      throw err;
    }
  }

  /** The lease is gone (or re-registering failed): try again with backoff. */
  private lost(why: string): void {
    if (this.stopped || !this.started || this.retryTimer !== undefined) return;
    this.report(new Error(`etcd registry ${this.registry.uri}: ${this.instance.service} at ${this.instance.address}: ${why}; re-registering`));
    const delay = this.retryMs;
    this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (this.stopped) return;
      this.attach().then(
        () => {
          this.retryMs = RETRY_MIN_MS;
          this.lastError = undefined;
        },
        (err: unknown) => this.lost(`re-registering failed: ${message(err)}`),
      );
    }, delay);
    this.retryTimer.unref();
  }

  private report(error: Error): void {
    if (error.message === this.lastError) return;
    this.lastError = error.message;
    safeCall(this.onError, error);
  }

  /** Stops keepalives and retries; the key expires with its lease. */
  stop(): void {
    this.stopped = true;
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.lease?.release();
    this.registry.forget(this);
  }

  /**
   * Revokes the lease, which deletes the key at once. Idempotent once it succeeded; after a
   * failure it may be called again.
   * @throws Error (rejection) when etcd cannot be reached; keepalives are stopped anyway, so the
   *   key expires with its lease (within its TTL).
   */
  deregister(): Promise<void> {
    this.deregistered ??= (async () => {
      const lease = this.lease;
      this.stop();
      if (lease === undefined) return;
      try {
        await lease.revoke();
      } catch (err) {
        throw new Error(
          `etcd registry ${this.registry.uri}: cannot deregister ${this.instance.service} at ${this.instance.address}: ${message(err)} ` +
            `(its key expires with its lease within ${this.ttlSeconds} s)`,
        );
      }
    })().catch((err: unknown) => {
      this.deregistered = undefined;
      throw err;
    });
    return this.deregistered;
  }
}

interface KeyEvent {
  readonly type: 'put' | 'delete';
  readonly key: string;
  readonly value: string;
  readonly revision: bigint;
}

/** One watch of one service: a snapshot (`getAll`) plus the prefix watcher's events after it. */
class EtcdWatch {
  private active = true;
  private watcher: Watcher | undefined;
  private client: Etcd3 | undefined;
  /** key -> value: the snapshot plus every event after it. */
  private state = new Map<string, string>();
  /** The snapshot's revision: events at or below it are already in `state`. (Several events can share one revision: a transaction, a prefix delete.) */
  private revision: bigint | undefined;
  /** Events that arrived while a snapshot was being read. */
  private buffered: KeyEvent[] | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  private last: Instance[] | undefined;
  private lastError: string | undefined;
  private down = false;
  private readonly keyPrefix: string;

  constructor(
    private readonly registry: EtcdRegistry,
    private readonly service: string,
    private readonly onInstances: (instances: Instance[]) => void,
    private readonly onError: (error: Error) => void,
  ) {
    this.keyPrefix = etcdServicePrefix(registry.prefix, service);
  }

  start(): void {
    this.registry.connect().then(
      (client) => {
        this.client = client;
        if (this.active) this.createWatcher();
      },
      (err: unknown) => this.report(err as Error),
    );
  }

  private createWatcher(): void {
    const client = this.client!;
    let w: Watcher;
    try {
      w = client.watch().prefix(this.keyPrefix).watcher();
    } catch (err) {
      this.report(new Error(`etcd registry ${this.registry.uri}: cannot watch ${this.service}: ${message(err)}`));
      return;
    }
    this.watcher = w;
    w.on('connected', () => {
      if (w !== this.watcher || !this.active) return;
      this.down = false;
      this.resync(w);
    });
    w.on('put', (kv: IKeyValue) => this.onEvent(w, 'put', kv));
    w.on('delete', (kv: IKeyValue) => this.onEvent(w, 'delete', kv));
    w.on('disconnected', (err) => {
      if (w !== this.watcher || !this.active || this.down) return;
      this.down = true;
      this.report(new Error(`etcd registry ${this.registry.uri}: watch of ${this.service} lost its connection (${message(err)}); reconnecting`));
    });
    w.on('error', (err) => {
      // etcd cancelled the watch (e.g. its revision was compacted): start a new one, which re-lists.
      if (w !== this.watcher || !this.active) return;
      this.watcher = undefined;
      this.report(new Error(`etcd registry ${this.registry.uri}: watch of ${this.service} was cancelled (${message(err)}); restarting it`));
      setTimeout(() => {
        if (this.active && this.watcher === undefined) this.createWatcher();
      }, 1000).unref();
    });
  }

  /** Reads the service's keys afresh; events arriving meanwhile are applied after it. */
  private resync(w: Watcher): void {
    if (this.resyncTimer !== undefined) clearTimeout(this.resyncTimer);
    this.resyncTimer = undefined;
    this.buffered = [];
    this.client!
      .getAll()
      .prefix(this.keyPrefix)
      .exec()
      .then(
        (res) => {
          if (w !== this.watcher || !this.active) return;
          const revision = BigInt(res.header.revision);
          const state = new Map(res.kvs.map((kv) => [kv.key.toString(), kv.value.toString()] as const));
          for (const ev of this.buffered ?? []) if (ev.revision > revision) apply(state, ev);
          this.buffered = undefined;
          this.state = state;
          this.revision = revision;
          this.publish();
        },
        (err: unknown) => {
          if (w !== this.watcher || !this.active) return;
          this.report(new Error(`etcd registry ${this.registry.uri}: cannot list ${this.service}: ${message(err)}; retrying`));
          this.resyncTimer = setTimeout(() => {
            this.resyncTimer = undefined;
            if (w === this.watcher && this.active) this.resync(w);
          }, 1000);
          this.resyncTimer.unref();
        },
      );
  }

  private onEvent(w: Watcher, type: 'put' | 'delete', kv: IKeyValue): void {
    if (w !== this.watcher || !this.active) return;
    const ev: KeyEvent = { type, key: kv.key.toString(), value: kv.value?.toString() ?? '', revision: BigInt(kv.mod_revision) };
    if (this.buffered !== undefined) {
      this.buffered.push(ev);
      return;
    }
    if (this.revision !== undefined && ev.revision <= this.revision) return;
    apply(this.state, ev);
    this.publish();
  }

  private publish(): void {
    let list: Instance[];
    try {
      list = etcdInstances(this.registry.prefix, this.state, this.service);
    } catch (err) {
      this.report(err as Error);
      return;
    }
    this.lastError = undefined;
    if (this.last !== undefined && sameInstances(this.last, list)) return;
    this.last = list;
    try {
      this.onInstances(list.slice());
    } catch (err) {
      safeCall(this.onError, new Error(`watch(${this.service}): onInstances threw: ${message(err)}`));
    }
  }

  private report(error: Error): void {
    if (!this.active || error.message === this.lastError) return;
    this.lastError = error.message;
    safeCall(this.onError, error);
  }

  /** Stops the watch: no callbacks after this; resolves when etcd confirmed the cancellation. */
  stop(): Promise<void> {
    this.active = false;
    if (this.resyncTimer !== undefined) clearTimeout(this.resyncTimer);
    const w = this.watcher;
    this.watcher = undefined;
    return w === undefined ? Promise.resolve() : w.cancel().catch(() => {});
  }
}

function apply(state: Map<string, string>, ev: KeyEvent): void {
  if (ev.type === 'put') state.set(ev.key, ev.value);
  else state.delete(ev.key);
}
