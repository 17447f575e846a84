/**
 * The client channel: target -> resolver -> subchannels (one per address) -> connections, with
 * round-robin balancing, per-call deadlines and cancellation, and inheritance of the current
 * call's context (deadline, trace id, propagated metadata) for calls made inside a handler.
 *
 * The effective deadline of an outbound call is the earliest of: its own `timeoutMs`/`deadline`,
 * the channel's default timeout, and the deadline of the call it is made in (tRPC's "full-link
 * timeout" rule; gRPC's deadline propagation).
 */
import { callStorage, type ServerCallContext } from '../context/call-context.js';
import type { MethodDefinition } from '../wire/definition.js';
import { DEFAULT_MAX_FRAME_BYTES } from '../wire/frame.js';
import { encodeRequestHeader, type RequestHeader } from '../wire/header.js';
import { RpcError, Status, type Metadata } from '../wire/status.js';
import { PendingCall } from './call.js';
import { createResolver, type Resolver } from './resolver.js';
import { Subchannel, type BackoffOptions, type ConnectionSettings } from './subchannel.js';

/** Per-call options of a client call. */
export interface CallOptions {
  /** Time allowed for the call (ms). The earliest of this, `deadline` and the parent's deadline wins. */
  timeoutMs?: number;
  /** Absolute deadline (epoch ms). */
  deadline?: number;
  /** Request metadata. */
  metadata?: Metadata;
  /**
   * Metadata keys to mark for propagation: the callee's own outbound calls carry them on, and so
   * on down the chain. Keys the current call already propagates are carried on automatically.
   */
  propagate?: readonly string[];
  /** Cancels the call when aborted (the client sends CANCEL; the call fails with CANCELLED). */
  signal?: AbortSignal;
}

/** Describes the call passed to client interceptors. */
export interface ClientCall {
  /** The method being called. */
  readonly method: MethodDefinition;
  /** The call's options; an interceptor may pass modified options to `next`. */
  readonly options: CallOptions;
}

/** Invokes a unary call: a complete request message in, the response message out. */
export type ClientInvoker = (request: any, call: ClientCall) => Promise<any>;

/**
 * A client interceptor: `(next) => async (request, call) => next(request, call)`. Interceptors run
 * outermost first, in the order given, before the call is encoded and sent.
 */
export type ClientInterceptor = (next: ClientInvoker) => ClientInvoker;

/** Channel settings. */
export interface ChannelOptions {
  /** Connections per address; calls are spread over them round robin. Default 1. */
  connections?: number;
  /** Timeout applied to calls that set none (ms). Default: none. */
  defaultTimeoutMs?: number;
  /** Largest frame sent or accepted, prefix included (bytes). Default 16 MiB. */
  maxFrameBytes?: number;
  /** How long a connect attempt may take (ms). Default 20000 (gRPC's MIN_CONNECT_TIMEOUT). */
  connectTimeoutMs?: number;
  /** Reconnect backoff after failed connects. */
  backoff?: BackoffOptions;
  /** Interceptors around every call, outermost first. */
  interceptors?: ClientInterceptor[];
}

const NO_OPTIONS: CallOptions = Object.freeze({});

/**
 * A channel to one target. Calls made before a connection is up wait for it (until their deadline);
 * when every address is backing off after failed connects, calls fail fast with UNAVAILABLE.
 *
 * ```ts
 * const ch = new Channel('static:///127.0.0.1:7000,127.0.0.1:7001', { connections: 2 });
 * const client = new GreeterClient(ch);
 * ```
 */
export class Channel {
  /** The target this channel was created for. */
  readonly target: string;
  private readonly settings: ConnectionSettings;
  private readonly connectionsPerAddress: number;
  private readonly defaultTimeoutMs: number | undefined;
  private readonly resolver: Resolver;
  private subchannels: Subchannel[] = [];
  private rr = 0;
  private queue: PendingCall[] = [];
  private closed = false;
  private resolveError: Error | undefined;
  private readonly invoke: ClientInvoker | undefined;
  private readyWaiters: Array<() => void> = [];

  /**
   * @param target - `host:port`, or a resolver URI such as `static:///h1:p1,h2:p2`.
   * @param options - see `ChannelOptions`.
   * @throws Error when the target is malformed or names an unknown resolver scheme.
   */
  constructor(target: string, options: ChannelOptions = {}) {
    this.target = target;
    this.settings = {
      maxFrameBytes: options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES,
      connectTimeoutMs: options.connectTimeoutMs ?? 20_000,
      backoff: options.backoff ?? {},
    };
    this.connectionsPerAddress = Math.max(1, Math.floor(options.connections ?? 1));
    this.defaultTimeoutMs = options.defaultTimeoutMs;
    const interceptors = options.interceptors ?? [];
    if (interceptors.length > 0) {
      let inv: ClientInvoker = (request, call) => this.start(call.method, request, call.options);
      for (let i = interceptors.length - 1; i >= 0; i--) inv = interceptors[i]!(inv);
      this.invoke = inv;
    }
    this.resolver = createResolver(target);
    this.resolver.start({
      onAddresses: (addresses) => this.setAddresses(addresses),
      onError: (err) => {
        this.resolveError = err;
        this.process();
      },
    });
  }

  /**
   * Makes a unary call.
   * @param method - the method definition (from generated code, e.g. `GreeterDefinition.methods.sayHello`).
   * @param request - the request message or a deep-partial of it (proto3 defaults fill the rest).
   * @param options - deadline, metadata, cancellation.
   * @returns the response message.
   * @throws RpcError (as a rejection) for every failure: the server's status, DEADLINE_EXCEEDED,
   *   CANCELLED, UNAVAILABLE when no connection can be made or it breaks mid-call,
   *   INVALID_ARGUMENT when the request cannot be encoded, RESOURCE_EXHAUSTED when it exceeds the
   *   maximum frame size.
   */
  unary<Req, Res>(method: MethodDefinition<Req, Res>, request: unknown, options?: CallOptions): Promise<Res> {
    if (this.invoke !== undefined) {
      let full: Req;
      try {
        full = method.requestType.fromPartial(request);
      } catch (err) {
        return Promise.reject(new RpcError(Status.INVALID_ARGUMENT, `cannot build ${method.requestTypeName}: ${(err as Error).message}`));
      }
      return this.invoke(full, { method, options: options ?? NO_OPTIONS });
    }
    return this.start(method, request, options ?? NO_OPTIONS) as Promise<Res>;
  }

  /**
   * Waits until at least one connection is ready.
   * @param timeoutMs - how long to wait (ms).
   * @throws RpcError UNAVAILABLE when no connection is ready in time or the channel is closed.
   */
  async waitForReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.closed) throw new RpcError(Status.UNAVAILABLE, `channel to ${this.target} is closed`);
      const now = Date.now();
      for (const s of this.subchannels) s.connect(now);
      if (this.subchannels.some((s) => s.state(now) === 'ready')) return;
      if (now >= deadline) {
        const why = this.subchannels.find((s) => s.lastError !== undefined)?.lastError?.message ?? 'no connection ready';
        throw new RpcError(Status.UNAVAILABLE, `${this.target}: ${why}`);
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, Math.min(50, deadline - now));
        this.readyWaiters.push(done);
        function done(): void {
          clearTimeout(t);
          resolve();
        }
      });
    }
  }

  /** Stops the channel: new calls fail with UNAVAILABLE; calls in flight finish, then connections close. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.resolver.close();
    for (const s of this.subchannels) s.close();
    this.failQueue(new RpcError(Status.UNAVAILABLE, `channel to ${this.target} was closed`));
  }

  private start(method: MethodDefinition, request: unknown, options: CallOptions): Promise<unknown> {
    if (this.closed) return Promise.reject(new RpcError(Status.UNAVAILABLE, `channel to ${this.target} is closed`));
    const now = Date.now();
    const parent: ServerCallContext | undefined = callStorage.getStore();
    let deadline = Infinity;
    const timeout = options.timeoutMs ?? this.defaultTimeoutMs;
    if (timeout !== undefined) deadline = now + timeout;
    if (options.deadline !== undefined && options.deadline < deadline) deadline = options.deadline;
    if (parent !== undefined && parent.deadline < deadline) deadline = parent.deadline;
    if (deadline <= now) {
      return Promise.reject(new RpcError(Status.DEADLINE_EXCEEDED, `deadline exceeded before calling ${method.path}`));
    }
    let body: Uint8Array;
    try {
      body = method.requestType.encode(method.requestType.fromPartial(request)).finish();
    } catch (err) {
      if (err instanceof RpcError) return Promise.reject(err);
      return Promise.reject(new RpcError(Status.INVALID_ARGUMENT, `cannot encode ${method.requestTypeName}: ${(err as Error).message}`));
    }
    const d = deadline === Infinity ? undefined : deadline - now;
    let metadata = options.metadata;
    let propagate = options.propagate;
    if (parent !== undefined && parent.propagate.length > 0) {
      const inherited: Metadata = {};
      for (const k of parent.propagate) {
        // Own properties only: a propagated key such as 'constructor' must not pick up Object.prototype's.
        if (Object.hasOwn(parent.metadata, k)) inherited[k] = parent.metadata[k]!;
      }
      metadata = metadata === undefined ? inherited : { ...inherited, ...metadata };
      propagate = propagate === undefined ? parent.propagate : [...new Set([...parent.propagate, ...propagate])];
    }
    const withMetadata = metadata !== undefined && hasKeys(metadata);
    const withPropagate = propagate !== undefined && propagate.length > 0;
    let headerBytes: Uint8Array;
    if (parent === undefined && !withMetadata && !withPropagate) {
      // A root call without metadata: the header depends on the method and deadline only.
      headerBytes = rootHeader(method, d);
    } else {
      // A root call carries no trace id: the first server assigns one (lazily, when it is read).
      const header: RequestHeader = parent === undefined ? { m: method.path } : { m: method.path, t: parent.traceId };
      if (d !== undefined) header.d = d;
      if (withMetadata) header.md = metadata!;
      if (withPropagate) header.pm = propagate as string[];
      headerBytes = encodeRequestHeader(header);
    }
    const call = new PendingCall(method, headerBytes, body, deadline, this.target);
    call.arm(now, options.signal, parent);
    if (!call.done) this.dispatch(call, now);
    return call.promise;
  }

  /** Sends a call on a ready connection, queues it while connecting, or fails it fast. */
  private dispatch(call: PendingCall, now: number): void {
    const conn = this.pickConnection(now);
    if (conn !== undefined) {
      conn.start(call);
      return;
    }
    if (this.canConnectSoon(now)) {
      this.queue.push(call);
      return;
    }
    call.fail(this.unavailable());
  }

  private pickConnection(now: number) {
    const subs = this.subchannels;
    const n = subs.length;
    for (let i = 0; i < n; i++) {
      const idx = (this.rr + i) % n;
      const c = subs[idx]!.pick(now);
      if (c !== undefined) {
        this.rr = idx + 1;
        return c;
      }
    }
    return undefined;
  }

  private canConnectSoon(now: number): boolean {
    if (this.subchannels.length === 0) return this.resolveError === undefined;
    return this.subchannels.some((s) => {
      const st = s.state(now);
      return st === 'connecting' || st === 'ready';
    });
  }

  private unavailable(): RpcError {
    if (this.subchannels.length === 0) {
      return new RpcError(Status.UNAVAILABLE, `${this.target}: ${this.resolveError?.message ?? 'no addresses'}`);
    }
    const err = this.subchannels.find((s) => s.lastError !== undefined)?.lastError;
    return new RpcError(Status.UNAVAILABLE, `${this.target}: ${err?.message ?? 'no connection available'}`);
  }

  private setAddresses(addresses: string[]): void {
    if (this.closed) return;
    const keep = new Map(this.subchannels.map((s) => [s.address, s]));
    const next: Subchannel[] = [];
    for (const a of addresses) {
      let s = keep.get(a);
      if (s === undefined) s = new Subchannel(a, this.connectionsPerAddress, this.settings, () => this.process());
      else keep.delete(a);
      next.push(s);
    }
    for (const s of keep.values()) s.close();
    this.subchannels = next;
    this.resolveError = undefined;
    this.process();
  }

  /** Re-examines queued calls after a connectivity change. */
  private process(): void {
    if (this.readyWaiters.length > 0) {
      const ws = this.readyWaiters;
      this.readyWaiters = [];
      for (const w of ws) w();
    }
    if (this.queue.length === 0) return;
    const now = Date.now();
    const queued = this.queue;
    this.queue = [];
    for (const call of queued) {
      if (call.done) continue;
      const conn = this.pickConnection(now);
      if (conn !== undefined) conn.start(call);
      else this.queue.push(call);
    }
    if (this.queue.length > 0 && !this.canConnectSoon(now)) this.failQueue(this.unavailable());
  }

  private failQueue(error: RpcError): void {
    const queued = this.queue;
    this.queue = [];
    for (const call of queued) call.fail(error);
  }
}

/** Encoded headers of root calls without metadata, per method, by deadline ms (few distinct values). */
const rootHeaders = new WeakMap<MethodDefinition, Map<number | undefined, Uint8Array>>();

function rootHeader(method: MethodDefinition, d: number | undefined): Uint8Array {
  let byDeadline = rootHeaders.get(method);
  if (byDeadline === undefined) rootHeaders.set(method, (byDeadline = new Map()));
  let bytes = byDeadline.get(d);
  if (bytes === undefined) {
    // Inherited or computed deadlines vary per call; keep the cache small.
    if (byDeadline.size >= 64) byDeadline.clear();
    bytes = encodeRequestHeader(d === undefined ? { m: method.path } : { m: method.path, d });
    byDeadline.set(d, bytes);
  }
  return bytes;
}

function hasKeys(o: object): boolean {
  for (const _ in o) return true;
  return false;
}

/**
 * Creates a channel; same as `new Channel(target, options)`.
 * @throws Error when the target is malformed or names an unknown resolver scheme.
 */
export function createChannel(target: string, options?: ChannelOptions): Channel {
  return new Channel(target, options);
}
