/**
 * The PaxosKV client: linearizable get, put, delete and compare-and-set against any replica of a
 * cluster, with failover. A call sticks to one replica; when that replica answers UNAVAILABLE or
 * does not answer within the attempt timeout, the call moves to the next replica, until the
 * call's own deadline. Writes carry one request id across attempts, so a retried write that was
 * already chosen returns its original version instead of being applied again.
 */
import { randomUUID } from 'node:crypto';
import { Channel, currentCall, RpcError, Status, type CallOptions, type ChannelOptions } from '../../framework/index.js';
import { PaxosKVClient as PaxosKVStub, type StatusReply } from './gen/svrkit/paxoskv/paxoskv.js';

/** How to reach a cluster. */
export interface PaxosKVClientOptions {
  /** Replica addresses `host:port` (any order; the first is tried first). */
  peers: readonly string[];
  /** Time one replica gets before the call moves to the next (ms). Default 1000. */
  attemptTimeoutMs?: number;
  /** Deadline of calls that set none, and are not made inside a call that has one (ms). Default 5000. */
  defaultTimeoutMs?: number;
  /** Options of the channel to each replica. */
  channel?: ChannelOptions;
}

/** A value with its version. */
export interface VersionedValue {
  /** The bytes stored. */
  value: Uint8Array;
  /** The key's version: the index of its latest chosen write. */
  version: bigint;
}

/**
 * A PaxosKV client; see the module comment.
 *
 * ```ts
 * const kv = new PaxosKVClient({ peers: ['127.0.0.1:7101', '127.0.0.1:7102', '127.0.0.1:7103'] });
 * const v1 = await kv.put('greeting', new TextEncoder().encode('hello'));   // 1n
 * const got = await kv.get('greeting');                                      // { value, version: 1n }
 * await kv.compareAndSet('greeting', v1, new TextEncoder().encode('hi'));    // 2n
 * ```
 */
export class PaxosKVClient {
  private readonly channels: Channel[];
  private readonly stubs: PaxosKVStub[];
  private readonly attemptTimeoutMs: number;
  private readonly defaultTimeoutMs: number;
  private current = 0;

  /**
   * @param options - the replicas and timeouts.
   * @throws Error when no peer is given or an address is malformed.
   */
  constructor(options: PaxosKVClientOptions) {
    if (options.peers.length === 0) throw new Error('PaxosKVClient needs at least one peer address');
    // The client fails over between replicas itself; channel-level retries would only double the attempts.
    this.channels = options.peers.map((p) => new Channel(p, { connectTimeoutMs: 1000, retryPolicy: false, ...options.channel }));
    this.stubs = this.channels.map((c) => new PaxosKVStub(c));
    this.attemptTimeoutMs = options.attemptTimeoutMs ?? 1000;
    this.defaultTimeoutMs = options.defaultTimeoutMs ?? 5000;
  }

  /**
   * Reads a key.
   * @returns the value and version, or null when the key is absent (never written, or deleted).
   * @throws RpcError INVALID_ARGUMENT for a bad key; UNAVAILABLE or DEADLINE_EXCEEDED when no
   *   replica answered in time.
   */
  async get(key: string, options?: CallOptions): Promise<VersionedValue | null> {
    const r = await this.call(options, (stub, o) => stub.get({ key }, o));
    return r.found ? { value: r.value, version: r.version } : null;
  }

  /**
   * Writes a value (at most 1 MiB).
   * @returns the new version.
   * @throws RpcError INVALID_ARGUMENT for a bad key or an oversized value; UNAVAILABLE or
   *   DEADLINE_EXCEEDED when no replica answered in time (the write may or may not have happened).
   */
  async put(key: string, value: Uint8Array, options?: CallOptions): Promise<bigint> {
    const requestId = randomUUID();
    return (await this.call(options, (stub, o) => stub.put({ key, value, requestId }, o))).version;
  }

  /**
   * Deletes a key.
   * @returns the new version (the key then reads as absent).
   * @throws RpcError as `put`.
   */
  async delete(key: string, options?: CallOptions): Promise<bigint> {
    const requestId = randomUUID();
    return (await this.call(options, (stub, o) => stub.delete({ key, requestId }, o))).version;
  }

  /**
   * Writes `value` only if the key is at `expectedVersion` (0n = absent).
   * @returns the new version.
   * @throws RpcError FAILED_PRECONDITION when the key is at another version (metadata
   *   `x-version` carries it); UNKNOWN when an earlier attempt's outcome is unknown and a later
   *   one found the precondition false (the earlier attempt may still apply, so "not applied"
   *   cannot be promised: read the key to find out); otherwise as `put`.
   */
  async compareAndSet(key: string, expectedVersion: bigint, value: Uint8Array, options?: CallOptions): Promise<bigint> {
    const requestId = randomUUID();
    let ambiguous = false;
    try {
      return (
        await this.call(options, (stub, o) => stub.compareAndSet({ key, expectedVersion, value, requestId }, o), () => (ambiguous = true))
      ).version;
    } catch (err) {
      if (ambiguous && err instanceof RpcError && err.code === Status.FAILED_PRECONDITION) {
        throw new RpcError(
          Status.UNKNOWN,
          `compareAndSet outcome unknown: a replica reported ${err.message}, but an earlier attempt's outcome is unknown and may still apply`,
          err.metadata,
        );
      }
      throw err;
    }
  }

  /**
   * Asks one replica about itself.
   * @param index - which peer, in the order given to the constructor.
   */
  status(index: number, options?: CallOptions): Promise<StatusReply> {
    const stub = this.stubs[index];
    if (stub === undefined) throw new Error(`no peer ${index}`);
    return stub.status({}, { timeoutMs: this.attemptTimeoutMs, ...options });
  }

  /** Closes the channels (calls in flight finish first). */
  close(): void {
    // The stubs were handed these channels, so closing a stub would not close its channel.
    for (const c of this.channels) c.close();
  }

  /**
   * Runs `attempt` on one replica after another until one answers, within the deadline.
   * `onRetry` is told when an attempt failed in a way that leaves its outcome unknown.
   */
  private async call<T>(
    options: CallOptions | undefined,
    attempt: (stub: PaxosKVStub, o: CallOptions) => Promise<T>,
    onRetry?: () => void,
  ): Promise<T> {
    const now = Date.now();
    let deadline = options?.deadline ?? (options?.timeoutMs !== undefined ? now + options.timeoutMs : Infinity);
    const parent = currentCall();
    if (parent !== undefined && parent.deadline < deadline) deadline = parent.deadline;
    if (deadline === Infinity) deadline = now + this.defaultTimeoutMs;
    let lastError: RpcError | undefined;
    for (let tries = 0; ; tries++) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw lastError ?? new RpcError(Status.DEADLINE_EXCEEDED, 'deadline exceeded before any replica answered');
      }
      const index = this.current;
      const stub = this.stubs[index]!;
      try {
        return await attempt(stub, { ...options, deadline: Date.now() + Math.min(left, this.attemptTimeoutMs), timeoutMs: undefined });
      } catch (err) {
        if (!(err instanceof RpcError) || !retryable(err)) throw err;
        lastError = err;
        onRetry?.();
        // Move on to the next replica (unless another call already did).
        if (this.current === index) this.current = (index + 1) % this.stubs.length;
        // Every replica failed once: pause briefly rather than spin.
        if ((tries + 1) % this.stubs.length === 0) await new Promise((r) => setTimeout(r, Math.min(50, Math.max(0, deadline - Date.now()))));
      }
    }
  }
}

function retryable(err: RpcError): boolean {
  return err.code === Status.UNAVAILABLE || err.code === Status.DEADLINE_EXCEEDED;
}
