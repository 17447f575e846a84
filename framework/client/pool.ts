/**
 * The instances of one service as a channel sees them: the resolver that lists them, the
 * subchannel (connections) of each, and the balancer that picks one per call.
 *
 * Picking goes through widening filters, the first that finds an instance wins:
 * 1. ready, not ejected, in the caller's zone, not tried before by this call;
 * 2. the same in any zone (zone spill-over: the local zone has no healthy instance);
 * 3. ready and not ejected, even if tried before (a retry goes elsewhere only when it can);
 * 4. ready, even if ejected ("panic mode", as Envoy does: better a suspect instance than none).
 */
import type { Instance } from '../discovery/instance.js';
import { ADMIT_ALL } from '../overload/admission.js';
import { PRIORITY_LEVELS, priorityLevel } from '../overload/priority.js';
import type { RpcError } from '../wire/status.js';
import { errors } from '../errors.js';
import { createBalancer, type Balancer, type BalancerName } from './balancer.js';

/**
 * Where a call goes, decided by `ServicePool.pick` (grpc-js's `PickResult`: COMPLETE, QUEUE,
 * DROP, TRANSIENT_FAILURE):
 * - `connection`: send it on `connection` now;
 * - `queue`: no instance is ready, but one is connecting (or resolution is pending): wait;
 * - `shed`: every ready instance advertises an admission level that refuses the call's priority
 *   (collaborative shedding): fail it locally with RESOURCE_EXHAUSTED, not processed;
 * - `unavailable`: no instance can be reached: fail it with `error` (UNAVAILABLE, not processed).
 */
export type Pick =
  | { readonly type: 'connection'; readonly connection: ClientConnection }
  | { readonly type: 'queue' }
  | { readonly type: 'shed' }
  | { readonly type: 'unavailable'; readonly error: RpcError };

const QUEUE_PICK: Pick = Object.freeze({ type: 'queue' });
const SHED_PICK: Pick = Object.freeze({ type: 'shed' });

/** What the balancer reads from a call to pick for it. */
export interface PickTarget {
  /** Sticky key for `consistent_hash`. */
  readonly hashKey: string | undefined;
  /** Addresses this call already failed on (a retry prefers others). */
  readonly tried: readonly string[] | undefined;
  /** Business and user priority, when known (collaborative shedding). */
  readonly business: number | undefined;
  readonly user: number | undefined;
}

/** A call attempt that waits in a pool's queue for a connection: a unary call or a stream. */
export interface QueuedAttempt extends PickTarget {
  /** The method called (its `path`, `pkg.Service/Method`, names it in errors and metrics). */
  readonly method: { readonly path: string };
  /** True once the call ended (a queued call that ended is skipped). */
  readonly done: boolean;
  /** Sends the attempt on a ready connection. */
  startOn(conn: ClientConnection): void;
  /** Fails the attempt without sending it (the call may retry). */
  fail(error: RpcError): void;
  /** Fails the whole call without sending it and without retrying (the channel closed). */
  abandon(error: RpcError): void;
}
import { parseAddress, type Resolver, type ResolverFactory, type ParsedTarget } from './resolver.js';
import type { ClientConnection } from './client-connection.js';
import type { Subchannel } from './subchannel.js';

/** One instance in a pool: what the balancer sees. */
export class PoolItem {
  /** @param instance - as the resolver reported it. @param sub - the subchannel to its address. */
  constructor(
    readonly instance: Instance,
    readonly sub: Subchannel,
  ) {}
  /** The instance's `host:port`. */
  get address(): string {
    return this.instance.address;
  }
  /** The instance's relative share of traffic (> 0). */
  get weight(): number {
    return this.instance.weight;
  }
  /** Calls in flight to the instance's address now (over all its connections). */
  get activeCalls(): number {
    return this.sub.activeCalls;
  }
}

/** What a pool needs from its channel. */
export interface PoolHost {
  /** Takes a reference on the subchannel of an address (creating it). */
  acquire(address: string): Subchannel;
  /** Drops a reference; the last one closes the subchannel. */
  release(address: string): void;
  /** The pool's instance list changed. */
  changed(): void;
}

/** The instances of one service; see the module comment. */
export class ServicePool {
  private items: PoolItem[] = [];
  private readonly balancer: Balancer<PoolItem>;
  private readonly resolver: Resolver | undefined;
  /** Set when resolution failed and no instance list ever came. */
  private resolveError: Error | undefined;
  private resolved = false;
  private closed = false;
  /** Calls waiting for a connection of this pool. */
  queue: QueuedAttempt[] = [];
  // Filter state read by the closures below (set by pick; avoids a closure per call).
  private exclude: readonly string[] | undefined;
  private call: PickTarget | undefined;
  private now = 0;
  /** The call's priority level, computed only when some instance restricts admission (-1: not yet). */
  private level = -1;
  /** During a pick: some ready instance was skipped only because it would refuse the call. */
  private refused = false;
  private readonly zone: string;
  private readonly random: () => number;
  private readonly usableLocal = (it: PoolItem): boolean =>
    it.sub.ready && it.sub.usable && it.instance.zone === this.zone && !this.excluded(it) && this.admitted(it);
  private readonly usableAny = (it: PoolItem): boolean => it.sub.ready && it.sub.usable && !this.excluded(it) && this.admitted(it);
  private readonly usableTried = (it: PoolItem): boolean => it.sub.ready && it.sub.usable && this.admitted(it);
  private readonly usablePanic = (it: PoolItem): boolean => it.sub.ready && this.admitted(it);

  /** Collaborative shedding: would the instance admit the call being picked for? */
  private admitted(it: PoolItem): boolean {
    const sub = it.sub;
    if (sub.admissionLevel === ADMIT_ALL) return true;
    const call = this.call!;
    // A call whose priority the server will choose itself (its default) cannot be judged here.
    if (call.business === undefined) return true;
    if (this.level < 0) this.level = priorityLevel(call.business, call.user ?? Math.floor(this.random() * PRIORITY_LEVELS));
    if (sub.admits(this.level, this.now)) return true;
    this.refused = true;
    return false;
  }

  /**
   * @param service - the fully-qualified service name this pool resolves.
   * @param target - the channel's parsed target and resolver factory.
   * @param options - balancer name, caller zone, randomness.
   * @param host - the channel.
   */
  constructor(
    readonly service: string,
    target: { parsed: ParsedTarget; factory: ResolverFactory; text: string },
    options: { balancer: BalancerName; zone: string; random: () => number },
    private readonly host: PoolHost,
  ) {
    this.zone = options.zone;
    this.random = options.random;
    this.balancer = createBalancer<PoolItem>(options.balancer, options.random);
    try {
      this.resolver = target.factory(target.parsed, service);
      this.resolver.start({
        onInstances: (instances) => this.setInstances(instances),
        onError: (err) => {
          this.resolveError = err;
          this.host.changed();
        },
      });
    } catch (err) {
      this.resolveError = new Error(`cannot resolve ${service} via ${target.text}: ${(err as Error).message}`);
    }
  }

  /** The current instances (with their subchannels). */
  get instances(): readonly PoolItem[] {
    return this.items;
  }

  private excluded(it: PoolItem): boolean {
    const ex = this.exclude;
    return ex !== undefined && ex.includes(it.instance.address);
  }

  /**
   * Decides where a call goes, as grpc-js's picker does: a ready connection, a wait in the queue
   * while one is being made, local shedding, or failure. Picks by the call's sticky key
   * (`hashKey`, consistent_hash), avoiding the addresses it already tried (`tried`) when it can,
   * and skipping instances whose advertised admission level is below the call's priority level
   * (collaborative shedding, DAGOR). When no instance is ready it starts connecting them.
   * @param now - epoch ms (the age of advertised admission levels).
   * @param call - what the balancer reads from the call.
   * @param target - the channel target, for the error of an `unavailable` pick.
   * @returns the tagged pick.
   */
  pick(now: number, call: PickTarget, target: string): Pick {
    let conn = this.pickConnection(now, call);
    if (conn === undefined && !this.refused) {
      this.connectAll();
      conn = this.pickConnection(now, call);
    }
    if (conn !== undefined) return conn.picked;
    if (this.refused) return SHED_PICK;
    if (this.canConnectSoon()) return QUEUE_PICK;
    return { type: 'unavailable', error: this.unavailable(target) };
  }

  /**
   * A ready connection for a call (see `pick`), without connecting anything.
   * @returns a connection, or undefined when no instance is ready right now (`refused` tells
   *   whether one was ready but would refuse the call).
   */
  pickConnection(now: number, call: PickTarget): ClientConnection | undefined {
    const hashKey = call.hashKey;
    const tried = call.tried;
    this.exclude = tried;
    this.call = call;
    this.now = now;
    this.level = -1;
    this.refused = false;
    const b = this.balancer;
    let item = this.zone !== '' ? b.pick(this.usableLocal, hashKey) : undefined;
    item ??= b.pick(this.usableAny, hashKey);
    if (item === undefined && tried !== undefined) item = b.pick(this.usableTried, hashKey);
    item ??= b.pick(this.usablePanic, hashKey);
    this.exclude = undefined;
    this.call = undefined;
    if (item !== undefined) this.refused = false;
    return item?.sub.pick();
  }

  /** True when a connection may become ready soon (some instance is connecting, or none is known yet). */
  canConnectSoon(): boolean {
    if (this.closed) return false;
    if (this.items.length === 0) return !this.resolved && this.resolveError === undefined;
    for (const it of this.items) {
      const st = it.sub.state();
      if (st === 'connecting' || st === 'ready') return true;
    }
    return false;
  }

  /** Starts connecting every instance that is not backing off. */
  connectAll(): void {
    for (const it of this.items) it.sub.connect();
  }

  /**
   * The error for a call that found no instance: UNAVAILABLE, marked not processed; its reason
   * says why: `RESOLVE_FAILED`, `NO_INSTANCES` or `NO_CONNECTION` (with the last connection error).
   */
  unavailable(target: string): RpcError {
    if (this.items.length === 0) {
      const e = this.resolveError;
      return e === undefined ? errors.NO_INSTANCES(target, this.service) : errors.RESOLVE_FAILED.with({ cause: e }, target, e.message);
    }
    const last = this.items.find((it) => it.sub.lastError !== undefined)?.sub.lastError;
    return last === undefined ? errors.NO_CONNECTION(target) : errors.NO_CONNECTION.with({ cause: last }, target, last.message);
  }

  /** Counts instances currently ejected by outlier detection. */
  ejectedCount(): number {
    let n = 0;
    for (const it of this.items) if (!it.sub.usable) n++;
    return n;
  }

  /** Stops resolving and releases every subchannel. */
  close(): void {
    this.closed = true;
    this.resolver?.close();
    for (const it of this.items) this.host.release(it.instance.address);
    this.items = [];
  }

  private setInstances(instances: readonly Instance[]): void {
    if (this.closed) return;
    const old = new Map(this.items.map((it) => [it.instance.address, it]));
    const next: PoolItem[] = [];
    const seen = new Set<string>();
    let bad: Error | undefined;
    for (const inst of instances) {
      if (seen.has(inst.address)) continue; // the same address twice: keep the first
      try {
        parseAddress(inst.address);
      } catch (err) {
        bad ??= err as Error; // one bad entry from a resolver must not hide the good ones
        continue;
      }
      seen.add(inst.address);
      const prev = old.get(inst.address);
      if (prev !== undefined) {
        old.delete(inst.address);
        next.push(prev.instance === inst ? prev : new PoolItem(inst, prev.sub));
      } else {
        const item = new PoolItem(inst, this.host.acquire(inst.address));
        item.sub.connect();
        next.push(item);
      }
    }
    for (const gone of old.values()) this.host.release(gone.instance.address);
    this.items = next;
    this.balancer.update(next);
    this.resolved = true;
    this.resolveError = next.length === 0 ? bad : undefined;
    this.host.changed();
  }
}
