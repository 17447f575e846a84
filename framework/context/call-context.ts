/**
 * Per-call context: libco's coroutine-private variables (`CO_ROUTINE_SPECIFIC`, `co_getspecific`),
 * carried by Node's AsyncLocalStorage instead of a coroutine stack.
 *
 * The server runs each inbound call inside `callStorage.run(context, handler)`, so everything the
 * handler awaits, including outbound calls through a svrkit client, sees the same context without
 * passing it along by hand.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomBytes } from 'node:crypto';
import type { RpcError } from '../wire/status.js';
import type { Metadata } from '../wire/status.js';
import { configErrors } from '../errors.js';

/** What a handler can learn about the call it is serving. `currentCall()` returns it. */
export interface CallContext {
  /** Full method name, e.g. `'helloworld.Greeter/SayHello'`. */
  readonly method: string;
  /**
   * The caller's address, `host:port` (`[v6]:port` for IPv6), read from the connection the first
   * time it is asked for; `unknown:0` when that is after the connection closed (as grpc-js's
   * `getPeer()` says `unknown`). Read it early to log it once the client is gone.
   */
  readonly peer: string;
  /** Request metadata sent by the caller (including keys propagated from further upstream). */
  readonly metadata: Readonly<Metadata>;
  /** Metadata keys marked for propagation: outbound calls made inside this call carry them on. */
  readonly propagate: readonly string[];
  /** Absolute deadline in epoch milliseconds; `Infinity` when the caller set none. */
  readonly deadline: number;
  /** Trace id shared by every call in one request chain (32 lower-case hex digits). */
  readonly traceId: string;
  /**
   * The service that made this call from inside one of its handlers (`package.Service`), as its
   * svrkit channel stated it; undefined for a call made outside any handler (or by another
   * client). Not verified: a claim of the caller, like its metadata.
   */
  readonly caller: string | undefined;
  /** Fires when the call is cancelled by the client or its deadline passes; `reason` is an `RpcError`. */
  readonly signal: AbortSignal;
  /** True once the call was cancelled or its deadline passed. */
  readonly cancelled: boolean;
  /** Metadata to send back with the response (success or error). Handlers may add keys. */
  readonly responseMetadata: Metadata;
  /**
   * Business priority of the call, 0 (most important) .. 127: the caller's (inherited down the call
   * chain), else the method's `(svrkit.method).priority`, else 64. Outbound calls made inside this
   * call carry it on, so a whole chain is shed alike under overload (DAGOR).
   */
  readonly businessPriority: number;
  /**
   * User priority, 0..127: a hash that changes hourly of the user id, the ticket's verified one
   * when the server checks tickets, else the caller's `x-user-id` metadata; inherited like `businessPriority`.
   */
  readonly userPriority: number;
  /**
   * The identity the call's ticket proves, when the server checked it (`new Server({ tickets })`);
   * undefined when the server checks no tickets, or the method is public and the call carried none.
   */
  readonly auth: CallAuth | undefined;
  /** The ticket the call carried (checked or not): outbound calls made inside this call carry it on. */
  readonly ticket: string | undefined;
  /**
   * The verified TLS client certificate of the connection the call came on: its subject and URI
   * SANs (e.g. `spiffe://prod.example/shop/cart`), so a service can allow callers by identity;
   * undefined without TLS or without a client certificate.
   */
  readonly peerIdentity: { readonly subject: string; readonly uris: readonly string[] } | undefined;
  /** Milliseconds left until the deadline (`Infinity` without one, 0 once past). */
  timeRemaining(): number;
}

/** A verified ticket's identity (framework/tickets `TicketAuth`). */
export interface CallAuth {
  /** The user the ticket is for. */
  readonly userId: string;
  /** What the holder may do. */
  readonly scopes: readonly string[];
  /** When the ticket expires (epoch ms). */
  readonly expiresAt: number;
  /** The key it was signed with. */
  readonly keyId: string;
}

/**
 * The call context the server creates per inbound call (the server's `InboundCall` extends it and
 * says where `peer` comes from). Handlers see it through the `CallContext` interface.
 *
 * Cheap by design: the AbortController behind `signal`, the map behind coroutine-locals and the
 * peer's address are made only on first use, since most handlers touch none of them.
 */
export abstract class ServerCallContext implements CallContext {
  /** Epoch ms at which the request frame was read off the socket. */
  readonly arrivalTime: number;
  /** @see CallContext.businessPriority (set by the server before the handler starts). */
  businessPriority = 64;
  /** @see CallContext.userPriority (set by the server before the handler starts). */
  userPriority = 127;
  /** @see CallContext.caller (set by the server before the handler starts). */
  caller: string | undefined = undefined;
  /** @see CallContext.auth (set by the server before the handler starts). */
  auth: CallAuth | undefined = undefined;
  /** @see CallContext.ticket (set by the server before the handler starts). */
  ticket: string | undefined = undefined;
  /** @see CallContext.peerIdentity (set by the server before the handler starts). */
  peerIdentity: { readonly subject: string; readonly uris: readonly string[] } | undefined = undefined;
  private controller: AbortController | undefined;
  private abortReason: RpcError | undefined;
  private abortListeners: Array<(reason: RpcError) => void> | undefined;
  private responseMd: Metadata | undefined;
  /** Storage of coroutine-locals, created on first `set`. */
  locals: Map<string, unknown> | undefined;
  private trace: string | undefined;

  /** @see CallContext.peer (read from the connection on first use). */
  abstract get peer(): string;

  /**
   * @param method - full method name `package.Service/Method`.
   * @param metadata - request metadata.
   * @param propagate - metadata keys marked for propagation downstream.
   * @param deadline - absolute deadline, epoch ms (`Infinity` for none).
   * @param traceId - the chain's trace id; `undefined` when this call starts the chain, in which
   *   case one is made on first read.
   * @param arrivalTime - epoch ms when the frame arrived (used for queueing-time measurement).
   */
  constructor(
    readonly method: string,
    readonly metadata: Readonly<Metadata>,
    readonly propagate: readonly string[],
    readonly deadline: number,
    traceId: string | undefined,
    arrivalTime: number,
  ) {
    this.trace = traceId;
    this.arrivalTime = arrivalTime;
  }

  get traceId(): string {
    return (this.trace ??= newTraceId());
  }

  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController();
      if (this.abortReason !== undefined) this.controller.abort(this.abortReason);
    }
    return this.controller.signal;
  }

  get cancelled(): boolean {
    return this.abortReason !== undefined;
  }

  get responseMetadata(): Metadata {
    return (this.responseMd ??= {});
  }

  /** The response metadata if a handler set any, else undefined (no allocation). */
  peekResponseMetadata(): Metadata | undefined {
    return this.responseMd;
  }

  timeRemaining(): number {
    if (this.deadline === Infinity) return Infinity;
    return Math.max(0, this.deadline - Date.now());
  }

  /**
   * Cancels the call: fires `signal` with `reason` and notifies outbound calls made inside it.
   * Idempotent: only the first reason counts.
   */
  abort(reason: RpcError): void {
    if (this.abortReason !== undefined) return;
    this.abortReason = reason;
    this.controller?.abort(reason);
    const listeners = this.abortListeners;
    if (listeners !== undefined) {
      this.abortListeners = undefined;
      for (const l of listeners) l(reason);
    }
  }

  /**
   * Registers `listener` to run when the call is aborted (immediately if it already was).
   * Used by outbound calls to cancel themselves with their parent without creating an AbortSignal.
   * @returns a function that removes the listener.
   */
  onAbort(listener: (reason: RpcError) => void): () => void {
    if (this.abortReason !== undefined) {
      listener(this.abortReason);
      return noop;
    }
    (this.abortListeners ??= []).push(listener);
    return () => {
      const ls = this.abortListeners;
      if (ls === undefined) return;
      const i = ls.indexOf(listener);
      if (i >= 0) ls.splice(i, 1);
      // A long call (a stream) keeps no empty array after its outbound calls are done.
      if (ls.length === 0) this.abortListeners = undefined;
    };
  }
}

function noop(): void {}

const STORAGE_KEY = Symbol.for('svrkit.callStorage');
const globalSlot = globalThis as unknown as Record<symbol, AsyncLocalStorage<ServerCallContext> | undefined>;

/**
 * The AsyncLocalStorage holding the current inbound call. It lives on `globalThis` under a
 * registered symbol so that two copies of svrkit in one process (say, the CLI's and a user
 * project's) share one context.
 */
export const callStorage: AsyncLocalStorage<ServerCallContext> = (globalSlot[STORAGE_KEY] ??=
  new AsyncLocalStorage<ServerCallContext>());

/**
 * The context of the inbound call the caller is running in.
 * @returns the call context, or `undefined` outside any call (e.g. at start-up or in a timer that
 *   was scheduled outside a handler).
 */
export function currentCall(): CallContext | undefined {
  return callStorage.getStore();
}

/**
 * Runs `fn` outside any inbound call: inside it `currentCall()` is undefined, so outbound calls
 * made there (and timers or promises started there) inherit no deadline, trace id, metadata or
 * cancellation. Use it for background work a handler starts but that must outlive the call, such
 * as a replication or flush loop (like Go's `context.WithoutCancel`).
 * @returns what `fn` returns.
 */
export function withoutCall<T>(fn: () => T): T {
  return callStorage.exit(fn);
}

/** A typed per-call variable; see `coroutineLocal`. */
export interface CoroutineLocal<T> {
  /** The variable's name; locals with the same name are the same variable. */
  readonly name: string;
  /** The value set in the current call, or `undefined` when unset or outside a call. */
  get(): T | undefined;
  /**
   * Sets the value for the current call only; other concurrent calls keep their own.
   * @throws Error when called outside a call.
   */
  set(value: T): void;
}

/**
 * A per-call variable, the analogue of libco's `CO_ROUTINE_SPECIFIC(name)`: each call served by
 * this process sees its own value, however many run concurrently, and the value follows the
 * call through every `await`.
 * @param name - names the variable; two locals with the same name share a slot.
 * @returns an accessor with `get()` and `set(value)`.
 */
export function coroutineLocal<T>(name: string): CoroutineLocal<T> {
  return {
    name,
    get(): T | undefined {
      return callStorage.getStore()?.locals?.get(name) as T | undefined;
    },
    set(value: T): void {
      const ctx = callStorage.getStore();
      if (ctx === undefined) {
        throw configErrors.LOCAL_OUTSIDE_CALL(name);
      }
      (ctx.locals ??= new Map()).set(name, value);
    },
  };
}

const tracePrefix = randomBytes(8).toString('hex');
let traceCounter = 0;

/**
 * A new trace id: 16 hex digits random per process, then a 16-hex-digit counter, so ids are unique
 * across processes with overwhelming probability and cost no entropy per call.
 * @returns 32 lower-case hex digits (the W3C trace-context trace-id format).
 */
export function newTraceId(): string {
  traceCounter = (traceCounter + 1) % Number.MAX_SAFE_INTEGER;
  return tracePrefix + traceCounter.toString(16).padStart(16, '0');
}
