/**
 * The error catalogue: every error svrkit raises about a call, and every configuration error of
 * its channel, server and their options, by name, in one place (fastify's lib/errors.js does the
 * same). Code elsewhere in the framework creates those errors only through these entries.
 *
 * Two kinds:
 * - `errors`: call outcomes, each an `RpcError` with a gRPC status, a message template and
 *   whether the call is known not processed. Creating one: `errors.CHANNEL_CLOSED(target)`; the
 *   result's `reason` is the entry's name (`'CHANNEL_CLOSED'`), and it travels on the wire (`r` in
 *   the status header), so a caller sees the reason of an error its server raised too.
 * - `configErrors`: programmer errors found at construction or setup (bad options, a service
 *   registered twice, a port out of range), each a `ConfigError` (a plain `Error` with a
 *   `reason`). They are thrown synchronously where the mistake is made and never reach a peer,
 *   so they have no status.
 *
 * Errors that stay outside the catalogue, and why:
 * - errors whose status comes from the wire (a server's reply, a GOAWAY): they carry the code,
 *   message and reason the peer sent (`new RpcError` straight from the header);
 * - `toRpcError` wrapping a value a handler threw (`INTERNAL`, with the value as `cause`): the
 *   failure is the handler's, so it has no reason; wire/status.ts, below this module, does it;
 * - errors internal to a layer that never escape it as such: the wire's `HeaderError` and
 *   `FrameError` (they become `MALFORMED_REQUEST_HEADER`, `MALFORMED_RESPONSE_HEADER`,
 *   `FRAME_TOO_LARGE`, `MALFORMED_FRAME`), `parseStatus`'s (wire imports no other module);
 * - the own errors of registries (framework/discovery), metrics, the CLI and the PaxosKV storage:
 *   about the environment (a registry file, etcd, a port, a data dir) or their own inputs (a
 *   registry URI, an instance entry, a flag). They report through `onError`, a rejected promise or
 *   the CLI's exit, and reach callers of a channel, if at all, as `RESOLVE_FAILED` or
 *   `NO_CONNECTION` (with the original as `cause`). Not catalogued (yet): plain `Error`s.
 *
 * Services catalogue their own errors the same way with `defineErrors` (services/paxoskv/errors.ts).
 * Reasons are UPPER_SNAKE_CASE, 2 to 63 characters (google.rpc.ErrorInfo's rule).
 */
import { isErrorReason, RpcError, Status, type Metadata } from './wire/status.js';

/** What `defineErrors` takes per entry: the status, the message template and the not-processed flag. */
export interface RpcErrorSpec<A extends unknown[] = any[]> {
  /** The status every error of this entry has. */
  readonly status: Status;
  /** The message template: the entry's parameters in, the message out. */
  readonly message: (...args: A) => string;
  /** The call provably reached no handler (`RpcError.notProcessed`), so it may be retried elsewhere. Default false. */
  readonly notProcessed?: boolean;
}

/** What an error may carry beyond its template's arguments. */
export interface CreateErrorOptions {
  /** Metadata sent with the status (e.g. retry pushback). Default none. */
  readonly metadata?: Metadata;
  /** The error this one wraps (`Error.cause`; local only, never sent). */
  readonly cause?: unknown;
}

/**
 * A catalogue entry for call outcomes. Call it with the template's arguments to create the error:
 * `errors.UNKNOWN_METHOD('pkg.Svc/Nope')` is an RpcError with code `UNIMPLEMENTED`, message
 * `unknown method 'pkg.Svc/Nope'` and reason `'UNKNOWN_METHOD'`.
 */
export interface RpcErrorEntry<A extends unknown[] = any[], R extends string = string> {
  /**
   * Creates the error.
   * @returns an RpcError with the entry's status, reason and not-processed flag, and the message
   *   the template makes of `args`.
   */
  (...args: A): RpcError;
  /** The entry's name, UPPER_SNAKE_CASE: the `reason` of every error it makes. */
  readonly reason: R;
  /** The status of every error it makes. */
  readonly status: Status;
  /** The message template. */
  readonly message: (...args: A) => string;
  /** Whether its errors mark the call not processed. */
  readonly notProcessed: boolean;
  /**
   * Creates the error with metadata and/or a cause.
   * @param options - metadata to send, the wrapped error.
   * @returns as calling the entry, plus `options`.
   */
  with(options: CreateErrorOptions, ...args: A): RpcError;
}

/** The arguments of a spec's message template. */
type TemplateArgs<S> = S extends { readonly message: (...args: infer A) => string } ? A : never;

/** A catalogue made by `defineErrors`: one entry per spec, under the same name. */
export type RpcErrorCatalogue<T> = { readonly [K in keyof T & string]: RpcErrorEntry<TemplateArgs<T[K]>, K> };

/**
 * Makes a catalogue of call outcomes: each spec becomes an entry named by its key.
 * @param specs - name (UPPER_SNAKE_CASE) -> status, message template, not-processed flag.
 * @returns the catalogue, frozen.
 * @throws TypeError when a name is not UPPER_SNAKE_CASE (2-63 characters).
 */
export function defineErrors<const T extends Record<string, RpcErrorSpec<any[]>>>(specs: T): RpcErrorCatalogue<T> {
  const out: Record<string, RpcErrorEntry> = {};
  for (const [reason, spec] of Object.entries(specs)) {
    checkName(reason);
    const { status, message } = spec;
    const notProcessed = spec.notProcessed === true;
    const plain = { reason, notProcessed };
    const entry = (...args: unknown[]): RpcError => new RpcError(status, message(...args), {}, plain);
    const withOptions = (options: CreateErrorOptions, ...args: unknown[]): RpcError =>
      new RpcError(status, message(...args), options.metadata ?? {}, 'cause' in options ? { reason, notProcessed, cause: options.cause } : plain);
    out[reason] = Object.freeze(Object.assign(entry, { reason, status, message, notProcessed, with: withOptions }));
  }
  return Object.freeze(out) as RpcErrorCatalogue<T>;
}

/**
 * A programmer error found at construction or setup: a bad option, a service registered twice,
 * a call of an API outside its context. Thrown synchronously, never sent to a peer.
 */
export class ConfigError extends Error {
  /** The name of its `configErrors` entry, e.g. `'INVALID_OPTION'`. */
  readonly reason: string;

  /**
   * @param reason - the entry's name (UPPER_SNAKE_CASE).
   * @param message - what is wrong and what was expected.
   */
  constructor(reason: string, message: string) {
    super(message);
    this.name = 'ConfigError';
    this.reason = reason;
  }
}

/** A catalogue entry for configuration errors: call it with the template's arguments to create one. */
export interface ConfigErrorEntry<A extends unknown[] = any[], R extends string = string> {
  /** @returns a ConfigError with the entry's reason and the message the template makes of `args`. */
  (...args: A): ConfigError;
  /** The entry's name: the `reason` of every error it makes. */
  readonly reason: R;
  /** The message template. */
  readonly message: (...args: A) => string;
}

/** A catalogue made by `defineConfigErrors`. */
export type ConfigErrorCatalogue<T> = {
  readonly [K in keyof T & string]: T[K] extends (...args: infer A) => string ? ConfigErrorEntry<A, K> : never;
};

/**
 * Makes a catalogue of configuration errors.
 * @param templates - name (UPPER_SNAKE_CASE) -> message template.
 * @returns the catalogue, frozen.
 * @throws TypeError when a name is not UPPER_SNAKE_CASE.
 */
function defineConfigErrors<const T extends Record<string, (...args: any[]) => string>>(templates: T): ConfigErrorCatalogue<T> {
  const out: Record<string, ConfigErrorEntry> = {};
  for (const [reason, message] of Object.entries(templates)) {
    checkName(reason);
    const entry = (...args: unknown[]): ConfigError => new ConfigError(reason, message(...args));
    out[reason] = Object.freeze(Object.assign(entry, { reason, message }));
  }
  return Object.freeze(out) as ConfigErrorCatalogue<T>;
}

function checkName(name: string): void {
  if (!isErrorReason(name)) throw new TypeError(`error name ${JSON.stringify(name)} is not UPPER_SNAKE_CASE (2-63 characters)`);
}

/** An error's message, for templates that quote a wrapped error: its `message` when it has one, else the value as a string. */
function messageOf(err: unknown): string {
  const m = typeof err === 'object' && err !== null ? (err as { message?: unknown }).message : undefined;
  return typeof m === 'string' ? m : String(err);
}

/** An optional number at the end of a message: `' N'`, or nothing when it is undefined. */
function optional(value: number | undefined): string {
  return value === undefined ? '' : ` ${value}`;
}

const KIND_NAMES = ['unary', 'server-streaming', 'client-streaming', 'bidi-streaming'] as const;

/** A call kind's wire code (0 unary .. 3 bidi) as a word; codes out of range read as their number. */
function kindName(code: number): string {
  return KIND_NAMES[code] ?? String(code);
}

/**
 * Every call outcome svrkit raises. Names are the errors' `reason`s; the section comments say
 * where each is raised. Parameters are typed: `errors.DEADLINE_BEFORE_CALL(method.path)`.
 */
export const errors = defineErrors({
  // --- Client: before anything is sent (framework/client/channel.ts) ---
  /** A call, stream or `waitForReady` on a closed channel. */
  CHANNEL_CLOSED: { status: Status.UNAVAILABLE, notProcessed: true, message: (target: string) => `channel to ${target} is closed` },
  /** A call still waiting for a connection when its channel was closed. */
  CHANNEL_CLOSED_WHILE_QUEUED: { status: Status.UNAVAILABLE, notProcessed: true, message: (target: string) => `channel to ${target} was closed` },
  /** The call's deadline (its own, the method's, the channel's or the parent call's) had passed before it was sent. */
  DEADLINE_BEFORE_CALL: { status: Status.DEADLINE_EXCEEDED, message: (method: string) => `deadline exceeded before calling ${method}` },
  /** `CallOptions.priority` is not an integer 0..127. */
  INVALID_PRIORITY: { status: Status.INVALID_ARGUMENT, message: (priority: unknown) => `priority must be an integer 0..127, got ${String(priority)}` },
  /** A channel with interceptors could not build the full request message from the partial given (the cause is the error). */
  REQUEST_NOT_BUILDABLE: { status: Status.INVALID_ARGUMENT, message: (typeName: string, err: unknown) => `cannot build ${typeName}: ${messageOf(err)}` },
  /** The request cannot be encoded as the method's request type (the cause is the encoder's error). */
  REQUEST_NOT_ENCODABLE: { status: Status.INVALID_ARGUMENT, message: (typeName: string, err: unknown) => `cannot encode ${typeName}: ${messageOf(err)}` },
  /** A streaming method called through the wrong channel method (e.g. `serverStream` on a bidi method). */
  STREAM_KIND_MISMATCH: {
    status: Status.INVALID_ARGUMENT,
    message: (method: string, kind: string) => `${method} is a ${kind} method; call it with the matching client method`,
  },
  /** The SRE adaptive throttle refused the call locally: the backend rejects most calls (metadata: pushback `stop`). */
  THROTTLED_LOCALLY: {
    status: Status.RESOURCE_EXHAUSTED,
    notProcessed: true,
    message: (method: string, target: string) => `throttled locally: ${method} on ${target} is rejecting most calls (adaptive throttle)`,
  },
  /** Collaborative shedding: every ready instance advertised an admission level that refuses this call's priority (metadata: pushback `stop`). */
  SHED_LOCALLY: {
    status: Status.RESOURCE_EXHAUSTED,
    notProcessed: true,
    message: (service: string) => `shed locally: every instance of ${service} is refusing calls of this priority (overloaded)`,
  },

  // --- Client: finding an instance (framework/client/pool.ts) ---
  /** The target's resolver failed, or listed only unusable addresses. */
  RESOLVE_FAILED: { status: Status.UNAVAILABLE, notProcessed: true, message: (target: string, why: string) => `${target}: ${why}` },
  /** The resolver lists no instance of the service. */
  NO_INSTANCES: { status: Status.UNAVAILABLE, notProcessed: true, message: (target: string, service: string) => `${target}: no instances of ${service}` },
  /** Instances are known but none has a connection, nor will soon (the last connection error, when there is one). */
  NO_CONNECTION: {
    status: Status.UNAVAILABLE,
    notProcessed: true,
    message: (target: string, lastError?: string) => `${target}: ${lastError ?? 'no connection available'}`,
  },

  // --- Client: during the call (framework/client/call.ts, stream-call.ts, client-connection.ts) ---
  /** The call's deadline passed while it was in flight (or queued, or between retries). */
  DEADLINE_DURING_CALL: { status: Status.DEADLINE_EXCEEDED, message: (method: string, target: string) => `deadline exceeded calling ${method} on ${target}` },
  /** The caller's AbortSignal fired (with the signal's reason, when it is an Error). */
  CANCELLED_BY_CALLER: { status: Status.CANCELLED, message: (why?: string) => (why === undefined ? 'cancelled by the caller' : `cancelled: ${why}`) },
  /** The inbound call this call was made in was cancelled, so this one is too. */
  PARENT_CANCELLED: { status: Status.CANCELLED, message: (why: string) => `parent call ended: ${why}` },
  /** The inbound call this call was made in ran out of time, so this one does too. */
  PARENT_DEADLINE_EXCEEDED: { status: Status.DEADLINE_EXCEEDED, message: (why: string) => `parent call ended: ${why}` },
  /** The caller stopped reading a response stream (left its `for await` loop). */
  STREAM_ABANDONED: { status: Status.CANCELLED, message: () => 'cancelled: the caller stopped reading the stream' },
  /** The caller's request iterable threw (the cause is what it threw). */
  REQUEST_STREAM_FAILED: { status: Status.CANCELLED, message: (err: unknown) => `cancelled: the request stream failed: ${messageOf(err)}` },
  /** A client-streaming call's server answered with no message, or several. */
  WRONG_RESPONSE_COUNT: {
    status: Status.INTERNAL,
    message: (method: string, count: number) => `${method}: a client-streaming call must answer exactly one message, got ${count}`,
  },
  /** The server's status header is not valid msgpack of the expected shape. */
  MALFORMED_RESPONSE_HEADER: { status: Status.INTERNAL, message: (address: string, err: unknown) => `malformed response header from ${address}: ${messageOf(err)}` },
  /** A unary reply does not decode as the method's response type. */
  INVALID_RESPONSE_BODY: { status: Status.INTERNAL, message: (typeName: string, err: unknown) => `response body is not a valid ${typeName}: ${messageOf(err)}` },
  /** A streamed reply message does not decode as the method's response type. */
  INVALID_RESPONSE_MESSAGE: { status: Status.INTERNAL, message: (typeName: string, err: unknown) => `response message is not a valid ${typeName}: ${messageOf(err)}` },
  /** The connection closed under the call (no GOAWAY reason from the server). */
  CONNECTION_CLOSED: {
    status: Status.UNAVAILABLE,
    message: (address: string, method?: string) => `connection closed (${address}${method === undefined ? '' : `, calling ${method}`})`,
  },
  /**
   * The connection closed before the server sent a single frame: not a svrkit server on that
   * port, or one that expects TLS from a plain client (its TLS handshake drops the plain bytes).
   */
  CONNECTION_CLOSED_SILENT: {
    status: Status.UNAVAILABLE,
    message: (address: string, method?: string) =>
      `connection to ${address} closed before the server sent anything (does the server expect TLS? then give the channel tls options, or --tls-ca)${method === undefined ? '' : ` (calling ${method})`}`,
  },
  /** The connection failed under the call: reset, keepalive timeout, connect timeout. */
  CONNECTION_LOST: {
    status: Status.UNAVAILABLE,
    message: (err: unknown, address: string, method?: string) => `connection lost: ${messageOf(err)} (${address}${method === undefined ? '' : `, calling ${method}`})`,
  },

  // --- Both sides: frame size limits (`maxFrameBytes`) ---
  /** A request frame over the limit: the client's own (not sent; no limit quoted) or the server's. */
  REQUEST_TOO_LARGE: {
    status: Status.RESOURCE_EXHAUSTED,
    message: (bytes: number, limit?: number) => `request of ${bytes} bytes exceeds the maximum frame size${optional(limit)}`,
  },
  /** A request stream's message over the limit: the client's own (no limit quoted) or the server's. */
  REQUEST_MESSAGE_TOO_LARGE: {
    status: Status.RESOURCE_EXHAUSTED,
    message: (bytes: number, limit?: number) => `request message of ${bytes} bytes exceeds the maximum frame size${optional(limit)}`,
  },
  /** A unary reply over the limit: the server's own, or the client's (`from` names the server). */
  RESPONSE_TOO_LARGE: {
    status: Status.RESOURCE_EXHAUSTED,
    message: (bytes: number, limit: number, from?: string) => `response of ${bytes} bytes${from === undefined ? '' : ` from ${from}`} exceeds the maximum frame size ${limit}`,
  },
  /** A response stream's message over the limit: the server's own (no limit quoted), or the client's (`from` names the server). */
  RESPONSE_MESSAGE_TOO_LARGE: {
    status: Status.RESOURCE_EXHAUSTED,
    message: (bytes: number, limit?: number, from?: string) =>
      `response message of ${bytes} bytes${from === undefined ? '' : ` from ${from}`} exceeds the maximum frame size${optional(limit)}`,
  },

  // --- Transport: framing violations, answered with GOAWAY (framework/transport/connection.ts) ---
  /** A frame (other than a request or reply) over the peer's limit: the connection is closed. */
  FRAME_TOO_LARGE: { status: Status.RESOURCE_EXHAUSTED, message: (err: unknown) => `protocol error: ${messageOf(err)}` },
  /** A malformed frame: the connection is closed. */
  MALFORMED_FRAME: { status: Status.INTERNAL, message: (err: unknown) => `protocol error: ${messageOf(err)}` },
  /** A frame started arriving and did not finish within `ServerOptions.frameTimeoutMs` (a slow or stalled sender): the connection is closed. */
  FRAME_TIMEOUT: {
    status: Status.UNAVAILABLE,
    message: (ms: number, limitMs: number) => `protocol error: a frame started arriving ${ms} ms ago and is not complete (limit ${limitMs} ms)`,
  },
  /**
   * More than `ServerOptions.maxQueuedResponseBytes` of replies waited and the client took none of
   * them for `frameTimeoutMs`: it does not read, and the connection is closed.
   */
  CLIENT_NOT_READING: {
    status: Status.UNAVAILABLE,
    message: (bytes: number, ms: number, limitMs: number) => `the client read none of ${bytes} bytes of replies for ${ms} ms (limit ${limitMs} ms)`,
  },
  /** No call and no PING on the connection for `ServerOptions.idleTimeoutMs`: the connection is closed. */
  CONNECTION_IDLE: {
    status: Status.UNAVAILABLE,
    message: (ms: number, limitMs: number) => `connection idle for ${ms} ms, with no call and no PING (limit ${limitMs} ms)`,
  },

  // --- Server: a gRPC call that cannot be read (framework/transport/grpc-server-bridge.ts) ---
  /** A gRPC request's `grpc-timeout` header is not 1 to 8 digits and a unit (H, M, S, m, u, n). */
  GRPC_MALFORMED_TIMEOUT: { status: Status.INTERNAL, notProcessed: true, message: (value: string) => `malformed grpc-timeout ${JSON.stringify(value)}` },
  /** A gRPC request's headers (method, metadata, ticket) do not fit in one svrkit frame (`ServerOptions.maxFrameBytes`). */
  GRPC_HEADERS_TOO_LARGE: {
    status: Status.RESOURCE_EXHAUSTED,
    notProcessed: true,
    message: (bytes: number, maxBytes: number) => `the request's method and metadata take ${bytes} bytes, over the maximum of ${maxBytes}`,
  },
  /** A gRPC request message over the maximum size (`ServerOptions.maxFrameBytes`, less the frame's prefix and, for unary and server-streaming calls, the request header). */
  GRPC_MESSAGE_TOO_LARGE: { status: Status.RESOURCE_EXHAUSTED, message: (detail: string) => `${detail}` },
  /** A compressed gRPC request message: svrkit accepts no `grpc-encoding`. */
  GRPC_MESSAGE_COMPRESSED: { status: Status.UNIMPLEMENTED, message: (detail: string) => `${detail}` },
  /** A gRPC request message prefix with an unknown flag byte. */
  GRPC_MALFORMED_MESSAGE: { status: Status.INTERNAL, message: (detail: string) => `${detail}` },
  /** A unary or server-streaming gRPC request that ended with no message or more than one. */
  GRPC_MESSAGE_COUNT: { status: Status.INTERNAL, notProcessed: true, message: (method: string, count: number) => `${method} takes one request message, got ${count}` },
  /** A gRPC request stream that ended inside a message (its length prefix announced more than came). */
  GRPC_TRUNCATED_MESSAGE: { status: Status.INTERNAL, message: (bytes: number) => `the request stream ended inside a message (${bytes} bytes of it came)` },
  /**
   * A unary or server-streaming gRPC request made no progress (no DATA, no END_STREAM) for
   * `ServerOptions.frameTimeoutMs`: the call fails before any handler, the session stays.
   */
  GRPC_REQUEST_STALLED: {
    status: Status.UNAVAILABLE,
    notProcessed: true,
    message: (ms: number, limitMs: number) => `the request stream made no progress for ${ms} ms and did not end (limit ${limitMs} ms)`,
  },
  /**
   * A gRPC request message started arriving and did not finish within `ServerOptions.frameTimeoutMs`
   * (a slow or stalled sender): the call fails, the session stays.
   */
  GRPC_MESSAGE_TIMEOUT: {
    status: Status.UNAVAILABLE,
    message: (ms: number, limitMs: number) => `a request message started arriving ${ms} ms ago and is not complete (limit ${limitMs} ms)`,
  },

  // --- Server: refusing a call before any handler runs (framework/server/server.ts) ---
  /** The request header is not valid msgpack of the expected shape (the message says which field). */
  MALFORMED_REQUEST_HEADER: { status: Status.INVALID_ARGUMENT, message: (err: unknown) => messageOf(err) },
  /** The client was given a ticket that is empty or longer than any valid one (8 KiB). */
  TICKET_TOO_LONG: { status: Status.INVALID_ARGUMENT, message: (length: number, max: number) => `a ticket of ${length} characters: a ticket is 1 to ${max}` },
  /** A server that requires tickets got a call without one, to a method that is not public. */
  TICKET_MISSING: { status: Status.UNAUTHENTICATED, message: (method: string) => `method ${method} needs a ticket (CallOptions.ticket or ChannelOptions.ticket), and the call carried none` },
  /** The call's ticket did not verify: malformed, forged, expired, or signed with a key the server does not hold. */
  TICKET_REJECTED: { status: Status.UNAUTHENTICATED, message: (why: string, detail: string) => `ticket refused (${why}): ${detail}` },
  /** The ticket is valid but does not grant the scope the method needs (`option (svrkit.method) = { scope: ... }`). */
  TICKET_SCOPE_MISSING: {
    status: Status.PERMISSION_DENIED,
    message: (method: string, scope: string) => `method ${method} needs scope '${scope}', which the call's ticket does not grant`,
  },
  /** No service registered on the server has this method. */
  UNKNOWN_METHOD: { status: Status.UNIMPLEMENTED, message: (method: string) => `unknown method '${method}'` },
  /** The client called the method as another kind (e.g. unary on a server-streaming method). */
  METHOD_KIND_MISMATCH: {
    status: Status.UNIMPLEMENTED,
    message: (method: string, kind: number, calledAs: number) => `method '${method}' is ${kindName(kind)}, but was called as ${kindName(calledAs)}`,
  },
  /** A client reused the id of a call still open on the connection. */
  DUPLICATE_CALL_ID: { status: Status.INVALID_ARGUMENT, message: (callId: number) => `call id ${callId} is already in use on this connection` },
  /** The header's business or user priority is not an integer 0..127. */
  INVALID_PRIORITY_HEADER: {
    status: Status.INVALID_ARGUMENT,
    message: (business: unknown, user: unknown) => `request header priority is not an integer 0..127 (business ${String(business)}, user ${String(user)})`,
  },
  /** The request body does not decode as the method's request type. */
  INVALID_REQUEST_BODY: { status: Status.INVALID_ARGUMENT, message: (typeName: string, err: unknown) => `request body is not a valid ${typeName}: ${messageOf(err)}` },
  /** The call waited in buffers and queues past its deadline; it was dropped unread. */
  DEADLINE_WHILE_QUEUED: { status: Status.DEADLINE_EXCEEDED, notProcessed: true, message: (waitedMs: number) => `deadline exceeded while queued (${waitedMs} ms)` },
  /** The call arrived with no time left (deadline <= 0). */
  DEADLINE_BEFORE_START: { status: Status.DEADLINE_EXCEEDED, message: () => 'deadline exceeded before the call started' },
  /** A connection already has as many open streams as the server allows (`ServerOptions.maxStreamsPerConnection`). */
  TOO_MANY_STREAMS: {
    status: Status.RESOURCE_EXHAUSTED,
    notProcessed: true,
    message: (open: number) => `this connection already has ${open} open streams (the server's limit)`,
  },
  /** FastReject: more calls in flight than `overload.maxInflight` (a fixed cap, off by default). */
  OVERLOADED_INFLIGHT: {
    status: Status.RESOURCE_EXHAUSTED,
    notProcessed: true,
    message: (inflight: number, limit: number) => `overloaded: ${inflight} calls in flight (limit ${limit})`,
  },
  /** FastReject's memory backstop: the heap or resident memory is above `overload.maxMemoryFraction` of its limit. */
  OVERLOADED_MEMORY: {
    status: Status.RESOURCE_EXHAUSTED,
    notProcessed: true,
    message: (usedMiB: number, limitMiB: number) => `overloaded: memory ${usedMiB} MiB in use of a ${limitMiB} MiB limit`,
  },
  /** FastReject's early drop: admitted, the call waited in the server's queue longer than it allows while it sheds load. */
  OVERLOADED_QUEUE_WAIT: {
    status: Status.RESOURCE_EXHAUSTED,
    notProcessed: true,
    message: (waitedMs: number, limitMs: number) => `overloaded: waited ${waitedMs} ms in the server's queue (limit ${limitMs} ms while shedding)`,
  },
  /**
   * A large request frame that does not fit the server-wide budget for partly received frames and
   * queued responses (`ServerOptions.bufferBudgetBytes`): refused before it is buffered.
   */
  OVERLOADED_BUFFERS: {
    status: Status.RESOURCE_EXHAUSTED,
    notProcessed: true,
    message: (bytes: number, usedBytes: number, budgetBytes: number) =>
      `overloaded: a frame of ${bytes} bytes does not fit the server's buffer budget (${usedBytes} of ${budgetBytes} bytes in use)`,
  },
  /** FastReject: the call's priority level is above the server's admission level. */
  OVERLOADED_PRIORITY: {
    status: Status.RESOURCE_EXHAUSTED,
    notProcessed: true,
    message: (level: number, admissionLevel: number) => `overloaded: priority level ${level} is above the admission level ${admissionLevel}`,
  },
  /** The call arrived after the client had acknowledged the server's GOAWAY. */
  REFUSED_AFTER_GOAWAY: { status: Status.UNAVAILABLE, notProcessed: true, message: () => 'server is shutting down: call refused after GOAWAY' },
  /** The GOAWAY a closing server sends (and, through it, calls cut when its grace period ends). */
  SERVER_SHUTTING_DOWN: { status: Status.UNAVAILABLE, message: () => 'server is shutting down' },

  // --- Server: ending a call that started (framework/server/server.ts, stream-call.ts) ---
  /** The call's deadline passed while its handler ran. */
  DEADLINE_WHILE_SERVING: { status: Status.DEADLINE_EXCEEDED, message: (method: string) => `deadline exceeded while serving ${method}` },
  /** The client gave up because its deadline passed (its CANCEL said so); the handler's signal fires with it. */
  DEADLINE_CLIENT_GAVE_UP: { status: Status.DEADLINE_EXCEEDED, message: () => 'deadline exceeded: the client gave up' },
  /** The client cancelled the call; the handler's signal fires with it. */
  CANCELLED_BY_CLIENT: { status: Status.CANCELLED, message: () => 'cancelled by the client' },
  /** The client's connection closed while the call ran. */
  CLIENT_DISCONNECTED: { status: Status.CANCELLED, message: () => 'client disconnected' },
  /** `Server.close`'s grace period ended before the call did. */
  SHUTDOWN_GRACE_EXPIRED: { status: Status.CANCELLED, message: (graceMs: number) => `server shut down before the call finished (grace ${graceMs} ms)` },
  /** The handler's response (or a streamed message) cannot be encoded as the response type. */
  RESPONSE_NOT_ENCODABLE: { status: Status.INTERNAL, message: (err: unknown) => `cannot encode response: ${messageOf(err)}` },
  /** The handler set response metadata that is not a map of strings. */
  INVALID_RESPONSE_METADATA: { status: Status.INTERNAL, message: (err: unknown) => `response metadata cannot be sent: ${messageOf(err)}` },
  /** A server-streaming call got request MESSAGE frames. */
  UNEXPECTED_REQUEST_STREAM: {
    status: Status.INVALID_ARGUMENT,
    message: (method: string) => `${method} takes one request, but the client sent a request stream`,
  },
  /** A request stream's message does not decode as the method's request type. */
  INVALID_REQUEST_MESSAGE: { status: Status.INVALID_ARGUMENT, message: (typeName: string, err: unknown) => `request message is not a valid ${typeName}: ${messageOf(err)}` },
  /** The peer sent more stream messages than the credit it was granted (flow control violated). */
  STREAM_WINDOW_EXCEEDED: {
    status: Status.RESOURCE_EXHAUSTED,
    message: (messages: number, bytes: number) => `the peer sent past its stream credit: ${messages} messages and ${bytes} bytes queued unread (flow control violated)`,
  },
  /** What a handler reading its request stream sees once the call ended. */
  CALL_ENDED: { status: Status.CANCELLED, message: () => 'the call ended' },

  // --- Hedging: cancelling the attempts that lost (framework/client/channel.ts) ---
  /** Another attempt of the hedged call answered first. */
  HEDGE_LOST: { status: Status.CANCELLED, message: () => 'another hedged attempt answered first' },
  /** An attempt of the hedged call failed with a fatal status, ending the others. */
  HEDGE_FAILED: { status: Status.CANCELLED, message: (codeName: string) => `a hedged attempt failed with ${codeName}` },
  /** The channel closed while the hedged call was in flight. */
  HEDGE_CHANNEL_CLOSED: { status: Status.CANCELLED, message: () => 'the channel was closed' },

  // --- Built-in services (framework/server/health.ts, reflection.ts) ---
  /** `svrkit.Health/Check` for a service the server does not serve. */
  UNKNOWN_SERVICE: { status: Status.NOT_FOUND, message: (service: string) => `unknown service '${service}'` },
  /** `svrkit.Reflection` asked for a symbol no registered file defines. */
  UNKNOWN_SYMBOL: { status: Status.NOT_FOUND, message: (symbol: string) => `no file defines symbol '${symbol}'` },

  // --- Dynamic calls through reflection (framework/client/dynamic.ts, the CLI) ---
  /** The server does not serve the named service. */
  SERVICE_NOT_SERVED: {
    status: Status.NOT_FOUND,
    message: (service: string, target: string, served: readonly string[]) => `service '${service}' not found on ${target}; it serves: ${served.join(', ')}`,
  },
  /** The descriptors the server sent do not define the service. */
  SERVICE_NOT_DESCRIBED: { status: Status.NOT_FOUND, message: (service: string) => `service '${service}' not found in the descriptors served` },
  /** The service has no method of that name. */
  METHOD_NOT_FOUND: {
    status: Status.NOT_FOUND,
    message: (service: string, method: string, methods: readonly string[]) => `service '${service}' has no method '${method}'; it has: ${methods.join(', ')}`,
  },
  /** JSON that does not fit the method's request type. */
  REQUEST_DOES_NOT_FIT: { status: Status.INVALID_ARGUMENT, message: (typeName: string, err: unknown) => `request does not fit ${typeName}: ${messageOf(err)}` },
  /**
   * `svrkit call`: a line of the NDJSON requests does not fit the request type. They come from
   * stdin, or from the file of an `@file` argument (`source`, the file as the user named it).
   */
  INVALID_STDIN_LINE: {
    status: Status.INVALID_ARGUMENT,
    message: (line: number, err: unknown, source = 'stdin') => `${source} line ${line}: ${messageOf(err)}`,
  },
  /** `svrkit call`: stdout's reader went away, so the stream was cancelled. */
  STDOUT_CLOSED: { status: Status.CANCELLED, message: () => 'cancelled: stdout was closed' },
});

/**
 * Every configuration error svrkit raises (a `ConfigError`, thrown where the mistake is made).
 * `INVALID_OPTION` covers options out of range: `configErrors.INVALID_OPTION('retryPolicy.maxAttempts', 'an integer 1..10', n)`.
 */
export const configErrors = defineConfigErrors({
  // --- Options (Channel, Server, AdmissionController, AdaptiveThrottle, retry policies) ---
  /** An option out of range: `<option> must be <requirement>, got <value>`. */
  INVALID_OPTION: (option: string, requirement: string, got: unknown) => `${option} must be ${requirement}, got ${String(got)}`,
  /** `balancer` names no balancer. */
  UNKNOWN_BALANCER: (name: unknown, known: string) => `unknown balancer '${String(name)}': expected ${known}`,
  /** A `methodConfig` entry names no method. */
  METHOD_CONFIG_WITHOUT_NAME: (index: number) => `methodConfig[${index}].name must list at least one { service, method? }`,
  /** A `methodConfig` name lacks its service. */
  METHOD_CONFIG_WITHOUT_SERVICE: (index: number) => `methodConfig[${index}].name: every entry needs a service, e.g. { service: 'helloworld.Greeter' }`,
  /** A `methodConfig` timeout is not positive. */
  METHOD_CONFIG_TIMEOUT: (index: number) => `methodConfig[${index}].timeoutMs must be > 0 ms`,
  /** A `methodConfig` entry sets both retries and hedging. */
  RETRY_AND_HEDGING: (index: number) => `methodConfig[${index}] sets both retryPolicy and hedgingPolicy; a method is either retried or hedged (gRFC A6)`,

  // --- Targets and addresses (framework/client/resolver.ts, dynamic.ts) ---
  /** `registerResolver` with a scheme that is not a URI scheme. */
  INVALID_RESOLVER_SCHEME: (scheme: string) => `invalid resolver scheme '${scheme}'`,
  /** A target with `://` that is not `scheme://authority/endpoint`. */
  MALFORMED_TARGET: (target: string) => `malformed target '${target}': expected host:port or scheme:///endpoint`,
  /** An address that is not `host:port`. */
  INVALID_ADDRESS: (address: string) => `invalid address '${address}': expected host:port, e.g. 127.0.0.1:7000`,
  /** A target whose scheme has no registered resolver. */
  NO_RESOLVER: (scheme: string, target: string, known: readonly string[], hint: string) =>
    `no resolver for scheme '${scheme}' in target '${target}' (known: ${known.join(', ')})${hint}`,
  /** `static:///` with no address. */
  EMPTY_STATIC_TARGET: (endpoint: string) => `static target lists no addresses: 'static:///${endpoint}'`,
  /** A method name that is not `package.Service/Method`. */
  INVALID_METHOD_NAME: (name: string) => `invalid method name '${name}': expected package.Service/Method, e.g. helloworld.Greeter/SayHello`,

  // --- Server setup (framework/server/server.ts) ---
  /** `addService(impl)` with an object that is not an instance of a generated `XService` class. */
  NOT_A_SERVICE: () => 'addService(impl): impl carries no service definition; extend a generated XService class or call addService(definition, impl)',
  /** `addService` of a service already registered. */
  SERVICE_ALREADY_REGISTERED: (service: string) => `service ${service} is already registered`,
  /** `addService` with an implementation that lacks a method. */
  MISSING_HANDLER: (service: string, localName: string, rpc: string) => `${service} implementation has no method ${localName}() for rpc ${rpc}`,
  /** `listen` on a server already listening. */
  ALREADY_LISTENING: () => 'server is already listening',
  /** `listen` with a port outside 0-65535. */
  INVALID_PORT: (port: unknown) => `invalid port ${String(port)}: expected 0-65535`,
  /** `address` or `port` before `listen`. */
  NOT_LISTENING: () => 'server is not listening',

  // --- Calls and streams (framework/context, framework/transport) ---
  /** `coroutineLocal(name).set()` outside an inbound call. */
  LOCAL_OUTSIDE_CALL: (name: string) => `coroutineLocal '${name}'.set() called outside a call: locals belong to an inbound call`,
  /** A stream's `next()` called again before the previous one settled. */
  CONCURRENT_NEXT: () => 'InboundMessages: next() called again before the previous call settled',
});
