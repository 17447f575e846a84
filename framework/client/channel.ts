/**
 * The client channel: target -> one pool per service called (resolver, balancer) -> subchannels
 * (one per address, shared by the pools) -> connections. It adds per-call deadlines and
 * cancellation, retries and hedging (gRFC A6) with a retry token bucket, outlier ejection, and
 * inheritance of the current call's context (deadline, trace id, propagated metadata) for calls
 * made inside a handler.
 *
 * The effective deadline of an outbound call is the earliest of: its own `timeoutMs`/`deadline`,
 * the method's configured timeout, the channel's default timeout, and the deadline of the call it
 * is made in (tRPC's "full-link timeout" rule; gRPC's deadline propagation). One deadline covers
 * every attempt of a retried or hedged call.
 */
import { performance } from 'node:perf_hooks';
import { callStorage, type ServerCallContext } from '../context/call-context.js';
import { DeadlineTimers } from '../context/deadline-timers.js';
import { METHOD_KIND_CODE, type MethodDefinition } from '../wire/definition.js';
import { DEFAULT_MAX_FRAME_BYTES, MAX_TICKET_LENGTH } from '../wire/frame.js';
import { decodeRequestHeader, encodeRequestHeader, type RequestHeader } from '../wire/header.js';
import { encodeComplete } from '../wire/encode.js';
import { RpcError, Status, type Metadata } from '../wire/status.js';
import { configErrors, errors } from '../errors.js';
import type { BalancerName } from './balancer.js';
import { RetryingCall, type CallDriver } from './retrying-call.js';
import { ClientStream, type StreamDriver } from './stream-call.js';
import { tcpTransport, type Transport } from '../transport/transport.js';
import { resolveMethodConfig, validateMethodConfig, type MethodConfig, type ResolvedMethodConfig } from './method-config.js';
import { DEFAULT_OUTLIER_DETECTION, mayEjectAnother, type OutlierDetectionOptions } from './outlier.js';
import { ServicePool, type QueuedAttempt } from './pool.js';
import { resolverFor, type ParsedTarget, type ResolverFactory } from './resolver.js';
import { decideRetry, normalizeRetryPolicy, RetryThrottle, type RetryPolicy, type RetryThrottleOptions } from './retry.js';
import type { BackoffOptions, ConnectionSettings, KeepaliveOptions } from './client-connection.js';
import { isInstanceFailure, Subchannel } from './subchannel.js';
import { AdaptiveThrottle, type AdaptiveThrottleOptions } from '../overload/throttle.js';
import { ADMIT_ALL } from '../overload/admission.js';
import { DEFAULT_USER_ID_KEY, effectiveBusinessPriority, isPriority, metadataUserPriority } from '../overload/priority.js';
import type { ClientObserver } from './observer.js';
import { PUSHBACK_KEY } from './retry.js';
import { ticketRef, type TicketRef } from './ticket-ids.js';
import { tlsClientTransport, type TlsClientOptions } from '../transport/tls-transport.js';
import { grpcClientTransport } from '../transport/grpc-client-transport.js';
import { FRAME_PREFIX_BYTES } from '../wire/frame.js';

/**
 * Probes an ejected address before it returns to balancing: true when it is healthy. Set by the
 * composition root (framework/setup.ts registers `svrkit.Health/Check`, client/health-probe.ts);
 * without one, an ejected address returns when its ejection period ends.
 */
export type HealthProbe = (address: string, settings: { readonly backoff: BackoffOptions; readonly transport: Transport; readonly protocol?: 'svrkit' | 'grpc' }) => Promise<boolean>;

let healthProbe: HealthProbe | undefined;

/**
 * Sets the probe every channel runs on an ejected address when its ejection period ends.
 * @param probe - the probe, or undefined for none.
 */
export function registerHealthProbe(probe: HealthProbe | undefined): void {
  healthProbe = probe;
}

/** The process-wide observer of channels made without one (`svrkit run --metrics-port` sets it). */
let defaultObserver: ClientObserver | undefined;

/**
 * Sets the observer every channel created afterwards reports to when its options name none
 * (e.g. Prometheus metrics for every client in a process).
 * @param observer - the observer, or undefined to stop.
 */
export function setDefaultClientObserver(observer: ClientObserver | undefined): void {
  defaultObserver = observer;
}

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
  /** Sticky key for the `consistent_hash` balancer (e.g. a user id): equal keys go to the same instance. */
  hashKey?: string;
  /**
   * Business priority of the call, 0 (most important) .. 127, for overload control. Default: the
   * priority of the call this one is made in (inherited down the chain), else the server decides
   * (the method's `(svrkit.method).priority`, else 64).
   */
  priority?: number;
  /**
   * Resolve the instances of this service instead of the method's own. For the built-in services
   * every svrkit server serves (`svrkit.Health`, `svrkit.Reflection`) over a registry target,
   * which lists only application services: e.g. reflection of `helloworld.Greeter`'s instances.
   */
  instancesOf?: string;
  /** Streaming calls: called once with the response metadata the server sent before its first message. */
  onHeader?: (metadata: Readonly<Metadata>) => void;
  /** Streaming calls: called once with the trailers the server sent with an OK status. */
  onTrailer?: (metadata: Readonly<Metadata>) => void;
  /**
   * The ticket to send (framework/tickets: `TicketIssuer.issue`). Default: inside a call, the
   * ticket of the call this one is made in (it flows down the chain like the deadline; none when
   * that call carried none); outside any call, `ChannelOptions.ticket`.
   */
  ticket?: string;
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

/**
 * Invokes a streaming call of any kind in one form: request messages in (one for
 * server-streaming), response messages out (one for client-streaming).
 */
export type ClientStreamInvoker = (requests: AsyncIterable<any> | Iterable<any>, call: ClientCall) => AsyncIterable<any>;

/**
 * A client stream interceptor, connect-es style:
 * `(next) => (requests, call) => next(requests, { ...call, options: { ...call.options, metadata } })`,
 * or an `async function*` that wraps `yield* next(requests, call)`. Interceptors run outermost
 * first, in the order given, before the stream opens.
 */
export type ClientStreamInterceptor = (next: ClientStreamInvoker) => ClientStreamInvoker;

/** Channel settings. */
export interface ChannelOptions {
  /** How connections are made: TCP (`tcpTransport`, the default) or in-process (`new MemoryTransport()`, for tests). Not with `protocol: 'grpc'`. */
  transport?: Transport;
  /**
   * The protocol spoken to the servers: svrkit's own (the default), or gRPC over HTTP/2, to call
   * any gRPC server (grpc-js, grpc-go, a svrkit server's gRPC side) with the same generated
   * clients, deadlines, metadata, streams, retries and balancing
   * (framework/transport/grpc-client-transport.ts). A `grpc://host:port` target selects `'grpc'`.
   * With `tls`, gRPC runs over TLS (ALPN h2).
   */
  protocol?: 'svrkit' | 'grpc';
  /** The ticket calls made outside any call send, unless they give one (`CallOptions.ticket`); calls made inside a call send that call's. */
  ticket?: string;
  /**
   * Connect over TLS (node:tls): `{ ca?, cert?, key?, servername? }` in PEM; `ca` is what the
   * server's certificate must chain to (default Node's roots), `cert`/`key` the client's own for
   * servers that ask. Not with `transport`.
   */
  tls?: TlsClientOptions;
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
  /** Interceptors around every unary call, outermost first. */
  interceptors?: ClientInterceptor[];
  /** Interceptors around every streaming call (all three kinds, in one form), outermost first. */
  streamInterceptors?: ClientStreamInterceptor[];
  /** Load-balancing policy. Default `'p2c'`. */
  balancer?: BalancerName;
  /** The caller's zone: instances in it are preferred while any is healthy. Default `''` (no preference). */
  zone?: string;
  /**
   * Retry policy for every method without one in `methodConfig`. Default: 3 attempts, UNAVAILABLE
   * retryable, 10 ms initial / 200 ms max backoff, multiplier 2. `false` turns retries off.
   */
  retryPolicy?: RetryPolicy | false;
  /** Retry throttling (token bucket). Default `{ maxTokens: 100, tokenRatio: 0.1 }`. `false` turns it off. */
  retryThrottle?: RetryThrottleOptions | false;
  /** Per-service or per-method settings (gRPC service-config style): idempotency, retries, hedging, timeout. */
  methodConfig?: MethodConfig[];
  /** Keepalive PINGs that detect dead connections. Default `{ intervalMs: 10000, timeoutMs: 5000 }`. `false` turns them off. */
  keepalive?: KeepaliveOptions | false;
  /** Outlier ejection. Default: 5 failures in a row eject for 1 s, doubling to 30 s, at most 50% of a pool. `false` turns it off. */
  outlierDetection?: OutlierDetectionOptions | false;
  /** Source of randomness in [0, 1) for balancing and jitter (tests inject a seeded one). Default `Math.random`. */
  random?: () => number;
  /**
   * The wall clock, epoch ms (tests inject one): deadlines, retry and hedging decisions, the
   * adaptive throttle, header send times. Default `Date.now`. Backoff and ejection periods run on
   * `performance.now()` (a monotonic clock).
   */
  now?: () => number;
  /**
   * Client-side adaptive throttling (Google SRE book): rejects calls locally with probability
   * `max(0, (requests - K * accepts) / (requests + 1))`. Default `{ k: 2, windowMs: 60000 }`. `false` turns it off.
   */
  adaptiveThrottle?: AdaptiveThrottleOptions | false;
  /** Metadata key holding the user id that user priority is hashed from. Default `'x-user-id'`. */
  userIdKey?: string;
  /** Receives call events (metrics). Default: the process-wide one (`setDefaultClientObserver`), if any. */
  observer?: ClientObserver;
}

const NO_OPTIONS: CallOptions = Object.freeze({});
/** Options of local refusals: retry pushback "stop" (no retry, no further hedge); fresh metadata each time. */
function pushbackStop(): { metadata: Metadata } {
  return { metadata: { [PUSHBACK_KEY]: 'stop' } };
}

/** What `prepare` hands the next stage of a call. */
interface PreparedCall {
  readonly state: MethodState;
  readonly pool: ServicePool;
  readonly parent: ServerCallContext | undefined;
  /** Absolute deadline, epoch ms (`Infinity` for none). */
  readonly deadline: number;
  readonly headerBytes: Uint8Array;
  readonly business: number | undefined;
  readonly user: number | undefined;
  /** The ticket the header refers to (`ti`), if any. */
  readonly ticket: TicketRef | undefined;
}

/** Per-method state a channel caches: the method's pool and resolved config. */
interface MethodState {
  readonly pool: ServicePool;
  readonly config: ResolvedMethodConfig;
  /** The policy its calls follow: the retry policy, else the hedging policy, else none. */
  readonly policy: ResolvedMethodConfig['retry'] | ResolvedMethodConfig['hedging'];
}

/**
 * A channel to one target. Calls made before a connection is up wait for it (until their deadline);
 * when every instance of the service is down or backing off, calls fail fast with UNAVAILABLE.
 *
 * ```ts
 * const ch = new Channel('file:///etc/svrkit/registry.json', { zone: 'sz', balancer: 'p2c' });
 * const client = new GreeterClient(ch);
 * ```
 */
export class Channel {
  /** The target this channel was created for. */
  readonly target: string;
  /** The protocol this channel speaks: svrkit's, or gRPC (`ChannelOptions.protocol`, a `grpc://` target). */
  get protocol(): 'svrkit' | 'grpc' {
    return this.settings.protocol;
  }
  private readonly settings: ConnectionSettings;
  private readonly connectionsPerAddress: number;
  private readonly defaultTimeoutMs: number | undefined;
  private readonly resolverTarget: { parsed: ParsedTarget; factory: ResolverFactory; text: string };
  private readonly subchannels = new Map<string, { sub: Subchannel; refs: number }>();
  private readonly pools = new Map<string, ServicePool>();
  private readonly methods = new WeakMap<MethodDefinition, MethodState>();
  /** Deadline timers of this channel's calls, on its clock (`ChannelOptions.now`). */
  private readonly timers = new DeadlineTimers(() => this.now());
  private readonly balancerName: BalancerName;
  private readonly zone: string;
  private readonly random: () => number;
  private readonly now: () => number;
  private readonly defaultRetry: Readonly<Required<RetryPolicy>> | undefined;
  private readonly methodConfig: readonly MethodConfig[];
  private readonly throttle: RetryThrottle | undefined;
  private readonly adaptive: AdaptiveThrottle | undefined;
  private readonly userIdKey: string;
  private readonly ticket: string | undefined;
  private readonly callObserver: ClientObserver | undefined;
  /** The unary calls' view of the channel (one for all calls). */
  private readonly callDriver: CallDriver;
  private closed = false;
  private readonly invoke: ClientInvoker | undefined;
  private readonly streamInvoke: ClientStreamInvoker | undefined;
  private readyWaiters: Array<() => void> = [];
  private processScheduled = false;

  /**
   * @param target - `host:port`, or a resolver URI: `static:///h1:p1,h2:p2`,
   *   `file:///abs/path/registry.json`, `etcd://127.0.0.1:2379/svrkit/services`.
   * @param options - see `ChannelOptions`.
   * @throws Error when the target is malformed or names an unknown resolver scheme, or an option
   *   is out of range (retry policy, throttle, method config).
   */
  constructor(target: string, options: ChannelOptions = {}) {
    this.target = target;
    const ka = options.keepalive;
    const od = options.outlierDetection;
    this.settings = {
      transport: channelTransport(target, options),
      protocol: channelProtocol(target, options),
      maxFrameBytes: options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES,
      connectTimeoutMs: options.connectTimeoutMs ?? 20_000,
      backoff: options.backoff ?? {},
      // Over gRPC, keepalive is off unless asked for, as in gRPC (gRFC A8): grpc-go and grpc-java
      // servers answer PINGs more often than every 5 minutes with GOAWAY too_many_pings.
      keepalive: ka === false || (ka === undefined && channelProtocol(target, options) === 'grpc') ? undefined : { intervalMs: ka?.intervalMs ?? 10_000, timeoutMs: ka?.timeoutMs ?? 5_000 },
      outlier: od === false ? undefined : { ...DEFAULT_OUTLIER_DETECTION, ...definedOnly(od ?? {}) },
    };
    this.connectionsPerAddress = Math.max(1, Math.floor(options.connections ?? 1));
    this.defaultTimeoutMs = options.defaultTimeoutMs;
    this.balancerName = options.balancer ?? 'p2c';
    if (!['p2c', 'round_robin', 'consistent_hash'].includes(this.balancerName)) {
      throw configErrors.UNKNOWN_BALANCER(this.balancerName, 'p2c, round_robin or consistent_hash');
    }
    this.zone = options.zone ?? '';
    this.random = options.random ?? Math.random;
    this.now = options.now ?? Date.now;
    this.defaultRetry = options.retryPolicy === false ? undefined : normalizeRetryPolicy(options.retryPolicy);
    this.methodConfig = options.methodConfig ?? [];
    validateMethodConfig(this.methodConfig);
    this.throttle = options.retryThrottle === false ? undefined : new RetryThrottle(options.retryThrottle ?? {});
    this.adaptive = options.adaptiveThrottle === false ? undefined : new AdaptiveThrottle(this.now(), options.adaptiveThrottle ?? {});
    this.userIdKey = options.userIdKey ?? DEFAULT_USER_ID_KEY;
    this.ticket = options.ticket;
    const obs = options.observer ?? defaultObserver;
    this.callObserver = obs;
    const throttle = this.throttle;
    this.callDriver = {
      timers: this.timers,
      dispatch: (attempt) => this.dispatch(attempt, attempt.call.pool, this.now()),
      decide: (call, error) =>
        this.closed
          ? { retry: false, why: 'the channel is closed' }
          : decideRetry({ error, attempts: call.attempts, idempotent: call.idempotent, deadline: call.deadline, now: this.now() }, call.policy!, throttle, this.random()),
      reheader: (call) => {
        const t = this.now();
        return withDeadline(call.firstHeader, call.deadline === Infinity ? undefined : call.deadline - t, t);
      },
      retried: (call) => this.callObserver?.retried(call.method.path),
      throttled: (call) => this.callObserver?.throttled(call.method.path, call.hedged ? 'hedge_budget' : 'retry_budget'),
      mayHedge: () => throttle === undefined || throttle.allowsRetry,
      succeeded: throttle === undefined ? () => {} : () => throttle.onSuccess(),
      ended: obs === undefined ? undefined : (call, code) => obs.callEnded(call.method.path, code, (this.now() - call.startedAt) / 1000),
    };
    const interceptors = options.interceptors ?? [];
    if (interceptors.length > 0) {
      let inv: ClientInvoker = (request, call) => this.start(call.method, request, call.options);
      for (let i = interceptors.length - 1; i >= 0; i--) inv = interceptors[i]!(inv);
      this.invoke = inv;
    }
    const streamInterceptors = options.streamInterceptors ?? [];
    if (streamInterceptors.length > 0) {
      let inv: ClientStreamInvoker = (requests, call) => {
        const kind = call.method.kind ?? 'unary';
        return this.openStream(call.method, requests, kind !== 'server_streaming', call.options);
      };
      for (let i = streamInterceptors.length - 1; i >= 0; i--) inv = streamInterceptors[i]!(inv);
      this.streamInvoke = inv;
    }
    const { parsed, factory } = resolverFor(target);
    this.resolverTarget = { parsed, factory, text: target };
  }

  /**
   * Makes a unary call.
   * @param method - the method definition (from generated code, e.g. `GreeterDefinition.methods.sayHello`).
   * @param request - the request message or a deep-partial of it (proto3 defaults fill the rest).
   * @param options - deadline, metadata, cancellation, hash key.
   * @returns the response message.
   * @throws RpcError (as a rejection) for every failure: the server's status, DEADLINE_EXCEEDED,
   *   CANCELLED, UNAVAILABLE when no instance can be reached or the connection breaks mid-call
   *   (after the retries the method's policy allows), INVALID_ARGUMENT when the request cannot be
   *   encoded, RESOURCE_EXHAUSTED when it exceeds the maximum frame size.
   */
  unary<Req, Res>(method: MethodDefinition<Req, Res>, request: unknown, options?: CallOptions): Promise<Res> {
    if (this.invoke !== undefined) {
      let full: Req;
      try {
        full = method.requestType.fromPartial(request);
      } catch (err) {
        return Promise.reject(errors.REQUEST_NOT_BUILDABLE.with({ cause: err }, method.requestTypeName, err));
      }
      return this.invoke(full, { method, options: options ?? NO_OPTIONS });
    }
    return this.start(method, request, options ?? NO_OPTIONS) as Promise<Res>;
  }

  /**
   * Calls a server-streaming method.
   * @param method - a method definition whose `kind` is `'server_streaming'`.
   * @param request - the request message or a deep-partial of it.
   * @param options - deadline (covering the whole stream), metadata, signal, ...
   * @returns the responses, in order, as they arrive; iteration throws the call's RpcError when it
   *   fails; breaking out of the loop cancels the call.
   */
  serverStream<Req, Res>(method: MethodDefinition<Req, Res>, request: unknown, options?: CallOptions): AsyncIterable<Res> {
    if (this.streamInvoke !== undefined) return this.streamInvoke([request], { method, options: options ?? NO_OPTIONS });
    return this.openStream(method, [request], false, options ?? NO_OPTIONS) as AsyncIterable<Res>;
  }

  /**
   * Calls a client-streaming method.
   * @param method - a method definition whose `kind` is `'client_streaming'`.
   * @param requests - the requests (deep-partials allowed), as an async iterable or an array; the
   *   stream half-closes when it ends.
   * @param options - deadline (covering the whole stream), metadata, signal, ...
   * @returns the response.
   * @throws RpcError (as a rejection) for every failure, as `unary` does.
   */
  async clientStream<Req, Res>(method: MethodDefinition<Req, Res>, requests: AsyncIterable<unknown> | Iterable<unknown>, options?: CallOptions): Promise<Res> {
    let last: unknown;
    let count = 0;
    const responses =
      this.streamInvoke !== undefined ? this.streamInvoke(requests, { method, options: options ?? NO_OPTIONS }) : this.openStream(method, requests, true, options ?? NO_OPTIONS);
    for await (const m of responses) {
      last = m;
      count++;
    }
    if (count !== 1) throw errors.WRONG_RESPONSE_COUNT(method.path, count);
    return last as Res;
  }

  /**
   * Calls a bidi-streaming method.
   * @param method - a method definition whose `kind` is `'bidi_streaming'`.
   * @param requests - the requests (deep-partials allowed), as an async iterable or an array; the
   *   stream half-closes when it ends. Requests and responses flow independently.
   * @param options - deadline (covering the whole stream), metadata, signal, ...
   * @returns the responses, as they arrive; breaking out of the loop cancels the call.
   */
  bidiStream<Req, Res>(method: MethodDefinition<Req, Res>, requests: AsyncIterable<unknown> | Iterable<unknown>, options?: CallOptions): AsyncIterable<Res> {
    if (this.streamInvoke !== undefined) return this.streamInvoke(requests, { method, options: options ?? NO_OPTIONS });
    return this.openStream(method, requests, true, options ?? NO_OPTIONS) as AsyncIterable<Res>;
  }

  /**
   * Opens a stream call: prepares it like a unary call, then hands it to the stream stage
   * (stream-call.ts), whose attempts the channel dispatches.
   * @param requests - the request messages; for server-streaming, a one-element array.
   * @param streamed - true for client-streaming and bidi (requests go as MESSAGE frames).
   */
  private openStream(method: MethodDefinition, requests: AsyncIterable<unknown> | Iterable<unknown>, streamed: boolean, options: CallOptions): AsyncIterable<unknown> {
    const kind = method.kind ?? 'unary';
    if (!streamed && !(Symbol.iterator in Object(requests))) {
      // A stream interceptor passed the one request of a server-streaming call as an async iterable.
      const channel = this;
      return (async function* () {
        let first: unknown;
        for await (const r of requests as AsyncIterable<unknown>) {
          first = r;
          break;
        }
        yield* channel.openStream(method, [first], false, options);
      })();
    }
    const expected = streamed ? (kind === 'client_streaming' || kind === 'bidi_streaming') : kind === 'server_streaming';
    if (!expected) return failedStream(errors.STREAM_KIND_MISMATCH(method.path, kind));
    const now = this.now();
    const p = this.prepare(method, options, now, METHOD_KIND_CODE[kind]);
    if (p instanceof RpcError) return failedStream(p);
    let body: Uint8Array | undefined;
    if (!streamed) {
      try {
        const [request] = requests as Iterable<unknown>;
        body = encodeComplete(method.requestType, method.requestType.fromPartial(request));
      } catch (err) {
        return failedStream(err instanceof RpcError ? err : errors.REQUEST_NOT_ENCODABLE.with({ cause: err }, method.requestTypeName, err));
      }
    }
    const stream = new ClientStream(method, p.headerBytes, body, streamed ? requests : undefined, p.deadline, this.target, this.streamDriver, options);
    stream.ticket = p.ticket;
    stream.hashKey = options.hashKey;
    stream.business = effectiveBusinessPriority(p.business, method.options?.priority);
    stream.user = p.user;
    stream.startedAt = now;
    stream.pool = p.pool;
    // The stream opens when the caller starts reading it (`for await` asks for the iterator), so
    // an iterable nobody reads costs nothing; its deadline was fixed now, at the call.
    stream.onFirstRead = () => {
      const t = this.now();
      if (stream.deadline <= t) {
        stream.cancel(errors.DEADLINE_BEFORE_CALL(method.path));
        return;
      }
      stream.arm(t, options.signal, p.parent);
      if (stream.done) return;
      if (t !== now) stream.header = withDeadline(stream.header, stream.deadline === Infinity ? undefined : stream.deadline - t, t);
      this.dispatch(stream, p.pool, t);
    };
    return stream;
  }

  /** The stream stage's view of the channel. */
  private readonly streamDriver: StreamDriver = {
    timers: this.timers,
    dispatch: (stream) => {
      const t = this.now();
      stream.header = withDeadline(stream.header, stream.deadline === Infinity ? undefined : stream.deadline - t, t);
      this.dispatch(stream, stream.pool, t);
    },
    retryDelay: (stream, error) => {
      if (this.closed) return undefined;
      const state = this.methodState(stream.method);
      // A stream is retried before it commits; a hedged method's streams are retried by its
      // hedging policy (the next attempt at once after a non-fatal status, or after pushback).
      const policy = state.config.retry ?? state.config.hedging;
      if (policy === undefined) return undefined;
      const decision = decideRetry(
        { error, attempts: stream.attempts, idempotent: state.config.idempotent, deadline: stream.deadline, now: this.now() },
        policy,
        this.throttle,
        this.random(),
      );
      if (!decision.retry) {
        if (decision.throttled) this.callObserver?.throttled(stream.method.path, 'retry_budget');
        return undefined;
      }
      this.callObserver?.retried(stream.method.path);
      return decision.delayMs;
    },
    ended: (stream, code) => {
      if (code === Status.OK) this.throttle?.onSuccess();
      this.callObserver?.callEnded(stream.method.path, code, (this.now() - stream.startedAt) / 1000);
    },
    counted: (method, direction) => this.callObserver?.streamMessage?.(method, direction),
  };

  /**
   * Waits until at least one connection to an instance of `service` is ready.
   * @param timeoutMs - how long to wait (ms).
   * @param service - fully-qualified service name; needed for registry targets (`file:`, `etcd:`),
   *   which list instances per service. Default `''`, fine for `host:port` and `static:` targets.
   * @throws RpcError UNAVAILABLE when no connection is ready in time or the channel is closed.
   */
  async waitForReady(timeoutMs: number, service = ''): Promise<void> {
    const deadline = this.now() + timeoutMs;
    for (;;) {
      if (this.closed) throw errors.CHANNEL_CLOSED(this.target);
      const pool = this.poolFor(service);
      const now = this.now();
      pool.connectAll();
      if (pool.instances.some((it) => it.sub.ready)) return;
      if (now >= deadline) throw pool.unavailable(this.target);
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

  /**
   * The instances the channel currently knows for a service, with their connection and ejection
   * state (for tools and tests). Starts resolving the service if the channel had not yet.
   * @returns `[]` once the channel is closed; otherwise one entry per instance: address, zone, weight, labels, `ready`, `ejected`, calls in flight.
   */
  instances(service = ''): Array<{ address: string; zone: string; weight: number; labels: Readonly<Record<string, string>>; ready: boolean; ejected: boolean; activeCalls: number }> {
    if (this.closed) return [];
    return this.poolFor(service).instances.map((it) => ({
      address: it.instance.address,
      zone: it.instance.zone,
      weight: it.instance.weight,
      labels: it.instance.labels,
      ready: it.sub.ready,
      ejected: !it.sub.usable,
      activeCalls: it.sub.activeCalls,
    }));
  }

  /** Stops the channel: new calls fail with UNAVAILABLE; calls in flight finish, then connections close. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const error = errors.CHANNEL_CLOSED_WHILE_QUEUED(this.target);
    for (const pool of this.pools.values()) {
      const queued = pool.queue;
      pool.queue = [];
      pool.close();
      for (const call of queued) call.abandon(error);
    }
    for (const { sub } of this.subchannels.values()) sub.close();
    this.subchannels.clear();
  }

  private poolFor(service: string): ServicePool {
    let pool = this.pools.get(service);
    if (pool === undefined) {
      pool = new ServicePool(service, this.resolverTarget, { balancer: this.balancerName, zone: this.zone, random: this.random }, {
        acquire: (address) => this.acquire(address),
        release: (address) => this.release(address),
        changed: () => this.scheduleProcess(),
      });
      this.pools.set(service, pool);
    }
    return pool;
  }

  private methodState(method: MethodDefinition): MethodState {
    let st = this.methods.get(method);
    if (st === undefined) {
      const slash = method.path.indexOf('/');
      const service = slash < 0 ? method.path : method.path.slice(0, slash);
      const pool = this.poolFor(service);
      const config = resolveMethodConfig(method, this.methodConfig, this.defaultRetry);
      st = { pool, config, policy: config.retry ?? config.hedging };
      this.methods.set(method, st);
    }
    return st;
  }

  private acquire(address: string): Subchannel {
    let e = this.subchannels.get(address);
    if (e === undefined) {
      const sub = new Subchannel(address, this.connectionsPerAddress, this.settings, () => this.scheduleProcess(), (s, status, np, al) => this.onResult(s, status, np, al), this.random);
      e = { sub, refs: 0 };
      this.subchannels.set(address, e);
    }
    e.refs++;
    return e.sub;
  }

  private release(address: string): void {
    const e = this.subchannels.get(address);
    if (e === undefined) return;
    if (--e.refs <= 0) {
      this.subchannels.delete(address);
      e.sub.close();
    }
  }

  /**
   * The stage every call starts with: the effective deadline, inherited metadata and priorities,
   * the local throttle, and the encoded request header.
   * @param kind - the call kind's wire code (`METHOD_KIND_CODE`), 0 for unary.
   * @returns what the call needs next, or the RpcError it fails with before anything is sent.
   */
  private prepare(method: MethodDefinition, options: CallOptions, now: number, kind: number): PreparedCall | RpcError {
    if (this.closed) return errors.CHANNEL_CLOSED(this.target);
    const state = this.methodState(method);
    const config = state.config;
    const parent: ServerCallContext | undefined = callStorage.getStore();
    let deadline = Infinity;
    const timeout = options.timeoutMs ?? config.timeoutMs ?? this.defaultTimeoutMs;
    if (timeout !== undefined) deadline = now + timeout;
    if (options.deadline !== undefined && options.deadline < deadline) deadline = options.deadline;
    if (parent !== undefined && parent.deadline < deadline) deadline = parent.deadline;
    if (deadline <= now) return errors.DEADLINE_BEFORE_CALL(method.path);
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
    // Priorities: explicit, else inherited from the call this one is made in, else the user id's.
    let business = options.priority;
    if (business !== undefined && !isPriority(business)) {
      return errors.INVALID_PRIORITY(business);
    }
    business ??= parent?.businessPriority;
    const user = parent?.userPriority ?? (withMetadata ? metadataUserPriority(metadata, this.userIdKey, now) : undefined);
    if (this.adaptive !== undefined && !this.adaptive.allow(now, this.random)) {
      this.callObserver?.throttled(method.path, 'adaptive');
      return errors.THROTTLED_LOCALLY.with(pushbackStop(), method.path, this.target);
    }
    // Inside a call, the caller's ticket (or none): never the channel's, which would lend this
    // service's identity to a caller who came without one.
    const ticketText = options.ticket ?? (parent !== undefined ? parent.ticket : this.ticket);
    if (ticketText !== undefined && (ticketText.length === 0 || ticketText.length > MAX_TICKET_LENGTH)) return errors.TICKET_TOO_LONG(ticketText.length, MAX_TICKET_LENGTH);
    const ticket = ticketText === undefined ? undefined : ticketRef(ticketText);
    let headerBytes: Uint8Array;
    if (parent === undefined && !withMetadata && !withPropagate && business === undefined && kind === 0) {
      // A root call without metadata: the header depends on the method, the deadline and the ticket only.
      headerBytes = rootHeader(method, d, now, ticket);
    } else {
      // A root call carries no trace id: the first server assigns one (lazily, when it is read).
      const header: RequestHeader = parent === undefined ? { m: method.path } : { m: method.path, t: parent.traceId };
      if (d !== undefined) header.d = d;
      if (withMetadata) header.md = metadata!;
      if (withPropagate) header.pm = propagate as string[];
      if (business !== undefined) header.b = business;
      if (user !== undefined) header.u = user;
      header.st = now;
      if (kind !== 0) header.k = kind;
      if (parent !== undefined) header.c = parent.method.slice(0, parent.method.lastIndexOf('/'));
      if (ticket !== undefined) header.ti = ticket.id;
      headerBytes = encodeRequestHeader(header);
    }
    const pool = options.instancesOf === undefined ? state.pool : this.poolFor(options.instancesOf);
    return { state, pool, parent, deadline, headerBytes, business, user, ticket };
  }

  private start(method: MethodDefinition, request: unknown, options: CallOptions): Promise<unknown> {
    const now = this.now();
    const p = this.prepare(method, options, now, 0);
    if (p instanceof RpcError) return Promise.reject(p);
    const { state, pool, parent, deadline, headerBytes, business, user, ticket } = p;
    const config = state.config;
    let body: Uint8Array;
    try {
      body = encodeComplete(method.requestType, method.requestType.fromPartial(request));
    } catch (err) {
      if (err instanceof RpcError) return Promise.reject(err);
      return Promise.reject(errors.REQUEST_NOT_ENCODABLE.with({ cause: err }, method.requestTypeName, err));
    }
    const call = new RetryingCall(method, headerBytes, body, deadline, this.target, state.policy, this.callDriver);
    call.pool = pool;
    call.idempotent = config.idempotent;
    call.hashKey = options.hashKey;
    call.ticket = ticket;
    // For collaborative shedding, judge the call as the server will: its method's priority when
    // neither the caller nor the parent call gave one.
    call.business = effectiveBusinessPriority(business, method.options?.priority);
    call.user = user;
    if (this.callDriver.ended !== undefined) call.startedAt = now;
    call.start(now, options.signal, parent);
    return call.promise;
  }

  /** Sends a call on a ready connection, queues it while connecting, or fails it fast. */
  private dispatch(call: QueuedAttempt, pool: ServicePool, now: number): void {
    if (this.closed) {
      call.fail(errors.CHANNEL_CLOSED(this.target));
      return;
    }
    const pick = pool.pick(now, call, this.target);
    switch (pick.type) {
      case 'connection':
        call.startOn(pick.connection);
        return;
      case 'queue':
        pool.queue.push(call);
        return;
      case 'shed':
        // Collaborative shedding: every ready instance advertised a level that refuses this call.
        this.callObserver?.throttled(call.method.path, 'shed');
        call.fail(errors.SHED_LOCALLY.with(pushbackStop(), call.method.path.split('/')[0]!));
        return;
      case 'unavailable':
        call.fail(pick.error);
        return;
    }
  }

  /** Outlier ejection: a response's status counts for or against its instance. */
  private onResult(sub: Subchannel, status: number, notProcessed: boolean, admissionLevel: number | undefined): void {
    if (admissionLevel === undefined) sub.admissionLevel = ADMIT_ALL;
    else {
      sub.admissionLevel = admissionLevel;
      sub.admissionAt = this.now();
    }
    // Adaptive throttle: everything but an overload rejection counts as accepted.
    // Adaptive throttle (SRE): an overload rejection counts against the backend, except one that
    // came with an admission level: collaborative shedding already acts on it, by priority, and
    // the priority-blind throttle would refuse the most important calls too.
    const rejected = notProcessed && status === Status.RESOURCE_EXHAUSTED;
    if (!(rejected && admissionLevel !== undefined)) this.adaptive?.completed(!rejected);
    const tracker = sub.outlier;
    if (tracker === undefined) return;
    // Ejection periods are durations: a monotonic clock, so a wall-clock step never stretches one.
    const now = performance.now();
    if (!isInstanceFailure(status)) {
      tracker.onSuccess(now);
      return;
    }
    // Ejection is limited per pool; use the strictest pool that holds the address.
    let may = true;
    for (const pool of this.pools.values()) {
      const items = pool.instances;
      if (!items.some((it) => it.sub === sub)) continue;
      if (!mayEjectAnother(pool.ejectedCount(), items.length, this.settings.outlier!.maxEjectionPercent)) may = false;
    }
    if (tracker.onFailure(now, may)) this.scheduleProbe(sub);
  }

  /** When an ejection ends, probes the address with svrkit.Health/Check before it returns. */
  private scheduleProbe(sub: Subchannel): void {
    const tracker = sub.outlier!;
    const inUse = (): boolean => !this.closed && this.subchannels.get(sub.address)?.sub === sub;
    const timer = setTimeout(() => {
      if (!inUse()) return;
      // Timers may fire a millisecond early: wait out the rest instead of giving up.
      if (performance.now() < tracker.ejectedUntil) {
        this.scheduleProbe(sub);
        return;
      }
      if (!tracker.probeDue(performance.now())) return;
      const probe = healthProbe ?? (() => Promise.resolve(true));
      void probe(sub.address, this.settings).then((ok) => {
        if (!inUse()) return;
        tracker.onProbeResult(ok, performance.now());
        if (!ok) this.scheduleProbe(sub);
        this.scheduleProcess();
      });
    }, Math.max(0, tracker.ejectedUntil - performance.now()) + 1);
    timer.unref();
  }

  private scheduleProcess(): void {
    if (this.processScheduled) return;
    this.processScheduled = true;
    queueMicrotask(() => {
      this.processScheduled = false;
      this.process();
    });
  }

  /** Re-examines queued calls after a connectivity or instance change. */
  private process(): void {
    if (this.readyWaiters.length > 0) {
      const ws = this.readyWaiters;
      this.readyWaiters = [];
      for (const w of ws) w();
    }
    if (this.closed) return;
    const now = this.now();
    for (const pool of this.pools.values()) {
      if (pool.queue.length === 0) continue;
      const queued = pool.queue;
      pool.queue = [];
      for (const call of queued) {
        if (call.done) continue;
        const conn = pool.pickConnection(now, call);
        if (conn !== undefined) call.startOn(conn);
        else pool.queue.push(call);
      }
      if (pool.queue.length > 0 && !pool.canConnectSoon()) {
        const error = pool.unavailable(this.target);
        const failed = pool.queue;
        pool.queue = [];
        for (const call of failed) call.fail(error);
      }
    }
  }
}

/** Re-encodes a request header with a new time left (ms; none when undefined) and send time `now` (epoch ms), for a retry or hedge. */
function withDeadline(header: Uint8Array, remainingMs: number | undefined, now: number): Uint8Array {
  const h = decodeRequestHeader(header);
  if (remainingMs !== undefined) h.d = Math.max(1, remainingMs);
  h.st = now;
  return encodeRequestHeader(h);
}

/** A stream that fails with `error` when read (errors of stream calls surface where the caller iterates). */
function failedStream(error: RpcError): AsyncIterable<never> {
  return {
    [Symbol.asyncIterator]: () => ({ next: () => Promise.reject(error) }),
  };
}

function definedOnly<T extends object>(o: T): Partial<T> {
  const out: Partial<T> = {};
  for (const k of Object.keys(o) as Array<keyof T>) if (o[k] !== undefined) out[k] = o[k];
  return out;
}

/**
 * Encoded headers of root calls without metadata, per method, by deadline ms, for the current
 * millisecond (the header carries the send time `st`, so the cache turns over every ms; at high
 * call rates most calls still share one encoding).
 */
const rootHeaders = new WeakMap<MethodDefinition, { st: number; ticket: TicketRef | undefined; byDeadline: Map<number | undefined, Uint8Array> }>();

function rootHeader(method: MethodDefinition, d: number | undefined, now: number, ticket: TicketRef | undefined): Uint8Array {
  let entry = rootHeaders.get(method);
  if (entry === undefined) rootHeaders.set(method, (entry = { st: now, ticket, byDeadline: new Map() }));
  else if (entry.st !== now || entry.ticket !== ticket) {
    entry.st = now;
    entry.ticket = ticket;
    entry.byDeadline.clear();
  }
  let bytes = entry.byDeadline.get(d);
  if (bytes === undefined) {
    // Inherited or computed deadlines vary per call; keep the cache small.
    if (entry.byDeadline.size >= 64) entry.byDeadline.clear();
    const header: RequestHeader = d === undefined ? { m: method.path, st: now } : { m: method.path, d, st: now };
    if (ticket !== undefined) header.ti = ticket.id;
    bytes = encodeRequestHeader(header);
    entry.byDeadline.set(d, bytes);
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

/**
 * The protocol a channel speaks: `options.protocol`, else gRPC for a `grpc://` target, else svrkit's.
 * @throws ConfigError (`INVALID_OPTION`) for `protocol: 'svrkit'` with a `grpc://` target.
 */
function channelProtocol(target: string, options: ChannelOptions): 'svrkit' | 'grpc' {
  const grpcTarget = /^grpc:\/\//i.test(target);
  if (options.protocol !== undefined && options.protocol !== 'svrkit' && options.protocol !== 'grpc') throw configErrors.INVALID_OPTION('protocol', "'svrkit' or 'grpc'", options.protocol);
  if (options.protocol === 'svrkit' && grpcTarget) throw configErrors.INVALID_OPTION('protocol', "'grpc' with a grpc:// target", options.protocol);
  return options.protocol ?? (grpcTarget ? 'grpc' : 'svrkit');
}

/**
 * The transport of a channel: gRPC's (over TLS with `tls`), TLS, the given one, or TCP.
 * @throws ConfigError (`INVALID_OPTION`) for a custom `transport` with gRPC.
 */
function channelTransport(target: string, options: ChannelOptions): Transport {
  if (channelProtocol(target, options) === 'grpc') {
    if (options.transport !== undefined) throw configErrors.INVALID_OPTION('transport', "not with protocol 'grpc' (it brings its own; use tls for TLS)", 'a transport');
    return grpcClientTransport({ tls: options.tls, maxMessageBytes: (options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES) - FRAME_PREFIX_BYTES });
  }
  return options.tls !== undefined ? tlsClientTransport(options.tls) : (options.transport ?? tcpTransport);
}
