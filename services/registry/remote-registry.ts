/**
 * The registry reached through registry servers (`registry://host:port[,host:port...]/prefix`):
 * PaxosKV replica processes, or `svrkit config serve` processes, serving `svrkit.registry.Registry`
 * (registry-service.ts). Behind the framework's `Registry` interface, so `svrkit run --register`,
 * `svrkit registry list` and any client target work with it as with `paxoskv://`, and see the same
 * instances (the servers store them as the `paxoskv://` registry does).
 *
 * A client needs no PaxosKV client of its own and holds no connection to the replicas: the
 * servers fan one PaxosKV watch per service out to every client watching it. Leases: each
 * registration has a random lease id and calls `Register` again every TTL/3; the entry expires a
 * TTL after the last call that reached a server (the server's clock). `setup()` registers this
 * implementation for `registry:` URIs; the package root (`index.ts`) and the CLI call it.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  leaseTtlMs,
  normalizeInstance,
  registerRegistry,
  sameInstances,
  withoutCall,
  type HostsLocation,
  type Instance,
  type InstanceInput,
  type RegisterOptions,
  type Registration,
  type Registry,
} from '../../framework/index.js';
import { RegistryClient } from './gen/svrkit/registry/registry.js';
import { keepLease } from './lease-renewal.js';
import { fromWire, MAX_SERVED_TTL_MS, toWire } from './wire.js';

/** A registry behind registry servers; see the module comment. */
export class RemoteRegistry implements Registry {
  /** The registry's URI in canonical form. */
  readonly uri: string;
  private readonly prefix: string;
  private client: RegistryClient | undefined;
  private closed = false;
  private readonly stops = new Set<() => void>();

  /** @param location - a parsed `registry:` location. Nothing connects until first use. */
  constructor(private readonly location: HostsLocation<'registry'>) {
    this.uri = location.uri;
    this.prefix = location.prefix;
  }

  private get stub(): RegistryClient {
    if (this.closed) throw new Error(`registry ${this.uri} is closed`);
    return (this.client ??= new RegistryClient(`static:///${this.location.hosts.join(',')}`, { connectTimeoutMs: 1000 }));
  }

  /**
   * Registers the instance (replacing an entry of the same address) and renews its lease every
   * TTL/3 until `deregister()` or `close()`.
   * @returns the registration, once a server stored the instance.
   * @throws Error (rejection) for an invalid instance or TTL (10 ms to one day, rounded up to whole
   *   ms), a closed registry, or when no server answers or the server refuses (RpcError).
   */
  async register(input: InstanceInput, options: RegisterOptions = {}): Promise<Registration> {
    const instance = normalizeInstance(input);
    const ttl = Math.ceil(leaseTtlMs(options.ttlMs));
    if (ttl > MAX_SERVED_TTL_MS) throw new Error(`lease ttl must be at most ${MAX_SERVED_TTL_MS} ms (one day) for a registry service (got ${ttl})`);
    const lease = randomBytes(8).toString('hex');
    const stub = this.stub;
    const write = async (): Promise<void> => {
      await stub.register({ prefix: this.prefix, instance: toWire(instance), lease, ttlMs: ttl }, { timeoutMs: Math.max(1000, Math.min(ttl, 10_000)) });
    };
    await write();
    if (this.closed) throw new Error(`registry ${this.uri} was closed while registering ${instance.service} at ${instance.address} (its lease expires in ${ttl} ms)`);
    const remove = async (): Promise<void> => {
      await stub.deregister({ prefix: this.prefix, service: instance.service, lease });
    };
    return keepLease(this.uri, instance, ttl, write, remove, options, this.stops);
  }

  /**
   * The live instances of a service (a linearizable read on the server), or of every service (a
   * listing, not linearizable).
   * @throws Error (rejection) when no server answers, the data is malformed, or the registry is closed.
   */
  async list(service?: string): Promise<Instance[]> {
    const reply = await this.stub.list({ prefix: this.prefix, service: service ?? '' });
    return reply.instances.map((w, i) => fromWire(w, `registry ${this.uri}, instance ${i}`));
  }

  /**
   * Reports the service's current list, then each change, over a server's `Watch` stream; a
   * stream that fails is opened again (on another server, as the channel picks) after a pause
   * that grows from 50 ms to 1 s while none answers. A stream that moves to another server is no
   * error: `onError` hears once, when as many attempts in a row as there are servers failed (and
   * again only after a list arrived).
   * @returns a function that stops the watch.
   * @throws Error when the registry is closed or `service` is empty.
   */
  watch(service: string, onInstances: (instances: Instance[]) => void, onError: (error: Error) => void): () => void {
    if (typeof service !== 'string' || service === '') throw new Error(`registry ${this.uri}: watch needs a service name`);
    const stub = this.stub;
    const ac = new AbortController();
    let reported: Instance[] | undefined;
    const tell = (error: Error): void => {
      try {
        onError(error);
      } catch {
        // nothing left to tell
      }
    };
    void withoutCall(async () => {
      let pauseMs = 50;
      let failedInRow = 0;
      while (!ac.signal.aborted) {
        try {
          for await (const reply of stub.watch({ prefix: this.prefix, service }, { signal: ac.signal, deadline: Infinity, timeoutMs: undefined })) {
            pauseMs = 50;
            failedInRow = 0;
            let live: Instance[];
            try {
              live = reply.instances.map((w, i) => fromWire(w, `registry ${this.uri}, ${service} instance ${i}`));
            } catch (err) {
              tell(err as Error);
              continue;
            }
            if (reported !== undefined && sameInstances(reported, live)) continue;
            reported = live;
            try {
              onInstances(live);
            } catch (err) {
              tell(new Error(`registry ${this.uri}: the watch callback of ${service} threw: ${(err as Error)?.message ?? String(err)}`));
            }
          }
        } catch (err) {
          if (ac.signal.aborted) return;
          failedInRow++;
          if (failedInRow === this.location.hosts.length) tell(new Error(`registry ${this.uri}: watching ${service}: no server answers (last: ${(err as Error).message})`));
        }
        if (ac.signal.aborted) return;
        await sleep(pauseMs, undefined, { signal: ac.signal }).catch(() => undefined);
        pauseMs = Math.min(1000, pauseMs * 2);
      }
    });
    const stop = (): void => {
      ac.abort();
      this.stops.delete(stop);
    };
    this.stops.add(stop);
    return stop;
  }

  /** Stops renewals and watches (does not deregister) and closes the channel. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    for (const stop of [...this.stops]) stop();
    this.closed = true;
    this.client?.close();
  }
}

/** Makes `openRegistry` use this registry for `registry:` URIs. Idempotent. */
export function setup(): void {
  registerRegistry('registry', (location) => new RemoteRegistry(location));
}
