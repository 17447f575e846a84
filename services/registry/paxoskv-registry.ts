/**
 * The service registry on PaxosKV (`paxoskv://host:port[,host:port...]/prefix`), behind the
 * framework's `Registry` interface, so `svrkit run --register`, `svrkit registry list` and any
 * client target work with it as with `file://` and `etcd://`. Layout:
 *
 *   key   `registry${prefix}/${service}`, e.g. `registry/svrkit/services/helloworld.Greeter`
 *   value JSON `{ "instances": [{ service, address, zone, labels, weight, lease, expiresAt }] }`
 *
 * One key per service holds all its instances, so a resolver follows a service with one PaxosKV
 * watch, and every change (an instance added, removed, or gone quiet) is one compare-and-set:
 * concurrent registrations retry on conflict and none is lost.
 *
 * Leases: each registration has a random lease id and renews its entry's `expiresAt` (the
 * registering process's wall clock plus the TTL) every TTL/3. Readers leave out entries whose
 * `expiresAt` has passed on their own clock, and a watch re-checks at the next expiry, so a
 * SIGKILLed instance disappears from every client within its TTL of its last renewal. The hosts'
 * clocks must agree to well within a TTL (NTP does). Writers drop entries that expired more than a
 * TTL ago. `setup()` registers this implementation for `paxoskv:` URIs; the package root
 * (`index.ts`) and the CLI call it.
 */
import { randomBytes } from 'node:crypto';
import {
  compareInstances,
  DEFAULT_LEASE_TTL_MS,
  leaseTtlMs,
  normalizeInstance,
  registerRegistry,
  RpcError,
  sameInstances,
  Status,
  withoutCall,
  type HostsLocation,
  type Instance,
  type InstanceInput,
  type RegisterOptions,
  type Registration,
  type Registry,
} from '../../framework/index.js';
import { PaxosKVClient } from '../paxoskv/client.js';
import { keepLease } from './lease-renewal.js';

/** An instance as stored: with its lease. */
export interface LeasedInstance extends Instance {
  /** The registration's lease id. */
  readonly lease: string;
  /** When the lease ends unless renewed (epoch ms, the registering process's clock). */
  readonly expiresAt: number;
}

/**
 * The PaxosKV key of a service's instances.
 * @param prefix - the registry's key prefix (`/svrkit/services`); `service` - the service.
 * @returns `registry<prefix>/<service>`.
 */
export function serviceKey(prefix: string, service: string): string {
  return `registry${prefix}/${service}`;
}

/**
 * Decodes a service's stored instances (pure).
 * @throws Error naming the key when the value is not JSON or holds an invalid instance.
 */
export function decodeInstances(key: string, bytes: Uint8Array): LeasedInstance[] {
  let doc: { instances?: unknown };
  try {
    doc = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes)) as { instances?: unknown };
  } catch (err) {
    throw new Error(`paxoskv registry key ${key}: not JSON: ${(err as Error).message}`);
  }
  if (doc === null || typeof doc !== 'object' || !Array.isArray(doc.instances)) throw new Error(`paxoskv registry key ${key}: expected { instances: [...] }`);
  return doc.instances.map((raw: unknown, i: number) => {
    const r = raw as Record<string, unknown>;
    const where = `paxoskv registry key ${key}, instance ${i}`;
    const inst = normalizeInstance(raw, where);
    if (typeof r?.lease !== 'string' || typeof r.expiresAt !== 'number') throw new Error(`${where}: no lease`);
    return { ...inst, lease: r.lease, expiresAt: r.expiresAt };
  });
}

/**
 * The live instances of a stored list (pure).
 * @param stored - the stored instances; `now` - the reader's clock (epoch ms).
 * @returns the unexpired ones, sorted, without their lease fields.
 */
export function liveInstances(stored: readonly LeasedInstance[], now: number): Instance[] {
  return stored
    .filter((i) => i.expiresAt > now)
    .map(({ service, address, zone, labels, weight }) => ({ service, address, zone, labels, weight }))
    .sort(compareInstances);
}

const encode = (instances: readonly LeasedInstance[]): Uint8Array => new TextEncoder().encode(JSON.stringify({ instances }));

/** The longest delay Node's timers take (ms); longer ones fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

interface QueuedChange {
  readonly ttl: number;
  readonly change: (list: LeasedInstance[]) => LeasedInstance[];
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

interface KeyQueue {
  readonly changes: QueuedChange[];
  running: boolean;
}

/** A registry on a PaxosKV cluster; see the module comment. */
export class PaxosKVRegistry implements Registry {
  /** The registry's URI in canonical form. */
  readonly uri: string;
  private readonly prefix: string;
  private kvClient: PaxosKVClient | undefined;
  private closed = false;
  private readonly stops = new Set<() => void>();
  /** Changes waiting to be written, per key (see `update`). */
  private readonly queues = new Map<string, KeyQueue>();

  /** Whether the PaxosKV client was given (not closed by `close()`). */
  private readonly sharedKv: boolean;

  /**
   * @param location - a parsed `paxoskv:` location. Nothing connects until first use.
   * @param now - the clock of leases (epoch ms). Default `Date.now`.
   * @param kv - a PaxosKV client to use instead of one made for `location.hosts` (a registry
   *   server's, shared by its prefixes; not closed by `close()`).
   */
  constructor(
    private readonly location: HostsLocation<'paxoskv'>,
    private readonly now: () => number = Date.now,
    kv?: PaxosKVClient,
  ) {
    this.uri = location.uri;
    this.prefix = location.prefix;
    this.kvClient = kv;
    this.sharedKv = kv !== undefined;
  }

  private get kv(): PaxosKVClient {
    if (this.closed) throw new Error(`registry ${this.uri} is closed`);
    return (this.kvClient ??= new PaxosKVClient({ peers: this.location.hosts }));
  }

  /**
   * Stores one lease's entry: the instance (replacing its service's entry at the same address)
   * until `ttlMs` from now on this registry's clock. What `register` does at once and at each
   * renewal; a registry server calls it for its clients' `Register` calls.
   * @param instance - a normalized instance.
   * @param lease - the lease id.
   * @param ttlMs - the lease's TTL (ms).
   * @throws Error (rejection) when the registry is closed, PaxosKV does not answer, or holds malformed data.
   */
  storeLease(instance: Instance, lease: string, ttlMs: number): Promise<void> {
    return this.update(serviceKey(this.prefix, instance.service), ttlMs, (list) => [
      ...list.filter((i) => i.address !== instance.address),
      { ...instance, lease, expiresAt: this.now() + ttlMs },
    ]);
  }

  /**
   * Removes a service's entry held under `lease` (nothing when there is none).
   * @throws Error (rejection) as `storeLease`.
   */
  dropLease(service: string, lease: string): Promise<void> {
    // The default TTL bounds the pruning of long-expired entries, as a registration's own would.
    return this.update(serviceKey(this.prefix, service), DEFAULT_LEASE_TTL_MS, (list) => list.filter((i) => i.lease !== lease));
  }

  /**
   * Registers the instance (replacing an entry of the same address) and renews its lease every
   * TTL/3 until `deregister()` or `close()`.
   * @returns the registration, once the instance is stored.
   * @throws Error (rejection) for an invalid instance or TTL, a closed registry, or when PaxosKV does not answer.
   */
  async register(input: InstanceInput, options: RegisterOptions = {}): Promise<Registration> {
    const instance = normalizeInstance(input);
    const ttl = leaseTtlMs(options.ttlMs);
    const lease = randomBytes(8).toString('hex');
    const write = (): Promise<void> => this.storeLease(instance, lease, ttl);
    await write();
    if (this.closed) throw new Error(`registry ${this.uri} was closed while registering ${instance.service} at ${instance.address} (its lease expires in ${ttl} ms)`);
    return keepLease(this.uri, instance, ttl, write, () => this.dropLease(instance.service, lease), options, this.stops);
  }

  /**
   * The live instances of a service (a linearizable read), or of every service (a listing of the
   * registry's keys: PaxosKV's local listing, not linearizable).
   * @throws Error (rejection) when PaxosKV does not answer or holds malformed data, or the registry is closed.
   */
  async list(service?: string): Promise<Instance[]> {
    const now = this.now();
    if (service !== undefined) {
      const key = serviceKey(this.prefix, service);
      const got = await this.kv.get(key);
      return got === null ? [] : liveInstances(decodeInstances(key, got.value), now);
    }
    const out: Instance[] = [];
    let after = '';
    for (;;) {
      const page = await this.kv.list(`registry${this.prefix}/`, { after, limit: 1000 });
      for (const item of page.items) out.push(...liveInstances(decodeInstances(item.key, item.value), now));
      if (!page.more || page.items.length === 0) break;
      after = page.items[page.items.length - 1]!.key;
    }
    return out.sort(compareInstances);
  }

  /**
   * Reports the service's current list (a linearizable read), then follows it over PaxosKV's
   * watch (which moves to another replica when one fails), re-checking at each lease's expiry.
   * @returns a function that stops the watch.
   * @throws Error when the registry is closed or `service` is empty.
   */
  watch(service: string, onInstances: (instances: Instance[]) => void, onError: (error: Error) => void): () => void {
    if (typeof service !== 'string' || service === '') throw new Error(`registry ${this.uri}: watch needs a service name`);
    const kv = this.kv;
    const key = serviceKey(this.prefix, service);
    const ac = new AbortController();
    let stored: LeasedInstance[] = [];
    let reported: Instance[] | undefined;
    let expiryTimer: NodeJS.Timeout | undefined;
    // The caller's callbacks must not end the watch, nor throw out of a timer.
    const tell = (error: Error): void => {
      try {
        onError(error);
      } catch {
        // nothing left to tell
      }
    };
    const report = (): void => {
      if (ac.signal.aborted) return;
      const now = this.now();
      const live = liveInstances(stored, now);
      if (reported === undefined || !sameInstances(reported, live)) {
        reported = live;
        try {
          onInstances(live);
        } catch (err) {
          tell(new Error(`registry ${this.uri}: the watch callback of ${service} threw: ${(err as Error)?.message ?? String(err)}`));
        }
      }
      clearTimeout(expiryTimer);
      const next = Math.min(...stored.filter((i) => i.expiresAt > now).map((i) => i.expiresAt));
      if (Number.isFinite(next)) {
        expiryTimer = withoutCall(() => setTimeout(report, Math.min(MAX_TIMER_MS, next - now + 1)));
        expiryTimer.unref();
      }
    };
    void withoutCall(async () => {
      // The current list first (a linearizable read; a key never written has none), then the watch.
      let from = 0n;
      try {
        const got = await kv.get(key);
        if (got !== null) {
          stored = decodeInstances(key, got.value);
          from = got.version;
        }
        report();
      } catch (err) {
        if (!ac.signal.aborted) tell(err as Error);
      }
      try {
        for await (const e of kv.watch(key, { fromVersion: from, signal: ac.signal })) {
          try {
            stored = e.value === null ? [] : decodeInstances(key, e.value);
          } catch (err) {
            tell(err as Error);
            continue;
          }
          report();
        }
      } catch (err) {
        if (!ac.signal.aborted) tell(err as Error);
      }
    });
    const stop = (): void => {
      ac.abort();
      clearTimeout(expiryTimer);
      this.stops.delete(stop);
    };
    this.stops.add(stop);
    return stop;
  }

  /** Stops renewals and watches (does not deregister) and closes the PaxosKV client it made. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    for (const stop of [...this.stops]) stop();
    this.closed = true;
    if (!this.sharedKv) this.kvClient?.close();
  }

  /**
   * Rewrites a service's list with `change`. The changes this process asks for one key while a
   * write of it is on its way are applied together in the next write (registrations and renewals
   * of many instances cost one compare-and-set, not one each), retried on conflict; entries that
   * expired a TTL ago are dropped.
   */
  private update(key: string, ttl: number, change: (list: LeasedInstance[]) => LeasedInstance[]): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let q = this.queues.get(key);
      if (q === undefined) this.queues.set(key, (q = { changes: [], running: false }));
      q.changes.push({ ttl, change, resolve, reject });
      if (!q.running) void this.drain(key, q);
    });
  }

  private async drain(key: string, q: KeyQueue): Promise<void> {
    q.running = true;
    while (q.changes.length > 0) {
      const batch = q.changes.splice(0);
      try {
        await this.write(key, batch);
        for (const c of batch) c.resolve();
      } catch (err) {
        for (const c of batch) c.reject(err as Error);
      }
    }
    q.running = false;
    this.queues.delete(key);
  }

  private async write(key: string, batch: readonly QueuedChange[]): Promise<void> {
    const ttl = Math.max(...batch.map((c) => c.ttl));
    for (let attempt = 1; ; attempt++) {
      const got = await this.kv.get(key);
      const now = this.now();
      let list = got === null ? [] : decodeInstances(key, got.value).filter((i) => i.expiresAt + ttl > now);
      for (const c of batch) list = c.change(list);
      try {
        await this.kv.compareAndSet(key, got?.version ?? 0n, encode(list));
        return;
      } catch (err) {
        if (!(err instanceof RpcError) || (err.code !== Status.FAILED_PRECONDITION && err.code !== Status.UNKNOWN) || attempt >= 50) throw err;
        // Another process wrote first (or the outcome is unknown): back off a little, with jitter, and redo.
        await new Promise((r) => setTimeout(r, Math.random() * Math.min(100, 10 * attempt)));
      }
    }
  }
}

/** Makes `openRegistry` use this registry for `paxoskv:` URIs. Idempotent. */
export function setup(): void {
  registerRegistry('paxoskv', (location) => new PaxosKVRegistry(location));
}
