/**
 * The RPC server: accepts TCP connections, decodes request frames, dispatches each call to its
 * handler inside a per-call context, and writes the response.
 *
 * The hot path (frame parse, header decode, method lookup, body decode, handler start) runs
 * synchronously in the socket's data callback; the only promise per call is the handler's own.
 */
import { callStorage, ServerCallContext, type CallContext } from '../context/call-context.js';
import { DeadlineTimers, type DeadlineEntry, type DeadlineList } from '../context/deadline-timers.js';
import { Connection, formatAddress } from '../transport/connection.js';
import { tcpTransport, type ByteStream, type Transport, type TransportListener } from '../transport/transport.js';
import {
  serviceDefinition,
  type MethodDefinition,
  type ServiceDefinition,
  type ServiceImplementation,
  type UnaryHandler,
  METHOD_KIND_CODE,
  methodKind,
  type MethodKind,
} from '../wire/definition.js';
import { encodeMessage, registerDescriptors } from '../wire/encode.js';
import { ServerStream, type ServerStreamHandler, type ServerStreamInterceptor, type StreamHost } from './stream-call.js';
import { DEFAULT_MAX_FRAME_BYTES, FrameKind } from '../wire/frame.js';
import { decodeRequestHeader, decodeStatusHeader, encodeStatusHeader, HeaderError } from '../wire/header.js';
import { RpcError, Status, toRpcError, type Metadata } from '../wire/status.js';
import { configErrors, errors, type RpcErrorEntry } from '../errors.js';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import {
  ADMIT_ALL,
  AdmissionController,
  LEVELS,
  type AdmissionOptions,
  type WindowReport,
} from '../overload/admission.js';
import {
  checkPriority,
  DEFAULT_BUSINESS_PRIORITY,
  DEFAULT_USER_ID_KEY,
  effectiveBusinessPriority,
  isPriority,
  metadataUserPriority,
  priorityLevel,
} from '../overload/priority.js';
import { Health } from './health.js';
import type { RejectReason, ServerObserver } from './observer.js';
import { Reflection } from './reflection.js';

/** A server-side unary handler: the request and the call's context in, the response out. */
export type ServerHandler = UnaryHandler<any, any, CallContext>;

/**
 * A server interceptor wraps every handler: `(next) => async (request, call) => { ...; return next(request, call); }`.
 * Interceptors run outermost first, in the order given, inside the call's context.
 */
export type ServerInterceptor = (next: ServerHandler) => ServerHandler;

/** Where the server reports handler failures that are not `RpcError`s. */
export interface ServerLogger {
  /** Called with a one-line description and the thrown value. */
  error(message: string, error?: unknown): void;
}

/** Server settings. */
export interface ServerOptions {
  /** Largest frame accepted or sent, prefix included (bytes). Default 16 MiB. */
  maxFrameBytes?: number;
  /** Interceptors applied to every unary method, outermost first. */
  interceptors?: ServerInterceptor[];
  /**
   * Interceptors applied to every streaming method (all three kinds, in one form: request
   * messages in, response messages out), outermost first.
   */
  streamInterceptors?: ServerStreamInterceptor[];
  /** Receives unexpected handler errors (those that become INTERNAL). Default: `console.error`. */
  logger?: ServerLogger;
  /** Serve the built-in `svrkit.Health` and `svrkit.Reflection` services. Default true. */
  builtinServices?: boolean;
  /** FastReject overload control (on by default); `false` turns it off. */
  overload?: OverloadOptions | false;
  /** Receives call events (metrics). */
  observer?: ServerObserver;
  /** How it listens: TCP (`tcpTransport`, the default) or in-process (`new MemoryTransport()`, for tests). */
  transport?: Transport;
  /**
   * The wall clock, epoch ms (tests inject one): deadlines, queueing time, admission windows,
   * user-priority hours. Default `Date.now`.
   */
  now?: () => number;
}

/** FastReject settings: the admission controller's (see `AdmissionOptions`) and the server's own. */
export interface OverloadOptions extends AdmissionOptions {
  /** Decide and report, but reject nothing (rejections are only logged and counted). Default false. */
  dryRun?: boolean;
  /** Backstop: calls in flight beyond this are refused whatever their priority. Default 10000. */
  maxInflight?: number;
  /** Metadata key holding the user id that user priority is hashed from. Default `'x-user-id'`. */
  userIdKey?: string;
  /** Business priority of calls whose caller and method give none, 0..127. Default 64. */
  defaultPriority?: number;
  /** Called with each closed window (e.g. to log level changes). Default: logs level changes in dry-run mode. */
  onWindow?: (report: WindowReport) => void;
}

/** Options of `Server.close`. */
export interface CloseOptions {
  /** How long in-flight calls may take to finish before their connections are cut (ms). Default 5000. */
  graceMs?: number;
}

interface RegisteredMethod {
  readonly def: MethodDefinition;
  /** The method's kind as a wire code (`METHOD_KIND_CODE`). */
  readonly kind: number;
  /** Unary calls, and streaming calls when no stream interceptor is set: the implementation's own method. */
  readonly handler: ServerHandler;
  /** Streaming calls when stream interceptors are set: the implementation in stream form, wrapped. */
  readonly streamHandler: ServerStreamHandler | undefined;
}

/** An inbound call: its public context plus the server's bookkeeping. */
class InboundCall extends ServerCallContext implements DeadlineEntry {
  deadlineList: DeadlineList | undefined = undefined;
  deadlinePrev: DeadlineEntry | undefined = undefined;
  deadlineNext: DeadlineEntry | undefined = undefined;
  done = false;
  /** Epoch ms the handler started (set only when an observer wants durations). */
  startedAt = 0;
  /** How long the call queued before its handler started (ms; set only when observed). */
  queuedMs = 0;
  /** The stream stage of a streaming call. */
  stream: ServerStream | undefined = undefined;
  constructor(
    method: string,
    peer: string,
    metadata: Readonly<Metadata>,
    propagate: readonly string[],
    deadline: number,
    traceId: string | undefined,
    arrivalTime: number,
    readonly conn: ServerConnection,
    readonly callId: number,
    readonly registered: RegisteredMethod,
  ) {
    super(method, peer, metadata, propagate, deadline, traceId, arrivalTime);
  }

  /** @see DeadlineEntry.onDeadline */
  onDeadline(): void {
    this.conn.server.endCall(this, errors.DEADLINE_WHILE_SERVING(this.method), true);
  }
}

/** The server's view of one client connection. */
class ServerConnection {
  readonly calls = new Map<number, InboundCall>();
  readonly conn: Connection;
  /** GOAWAY was sent (the server is closing). */
  draining = false;
  /** The client answered the PING sent after GOAWAY: every call it sent before seeing GOAWAY has arrived. */
  goawayAcked = false;
  /**
   * Base one-way offset (server receive time minus client send time, ms) over the last 1-2
   * minutes: the minimum, taken as "no queueing" (LEDBAT's base delay, RFC 6817). It absorbs
   * clock skew between the hosts; a clock step is forgotten within two minutes.
   */
  private minCur = Infinity;
  private minPrev = Infinity;
  private epochStart = 0;

  /**
   * How long a call sent at `sentAt` (client clock) has waited before `now` (server clock),
   * beyond the fastest call seen on this connection lately: time in the client's send buffer,
   * the kernel's queues, and this server's read queue.
   * @returns ms, >= 0.
   */
  queuedFor(sentAt: number, now: number): number {
    const offset = now - sentAt;
    if (now - this.epochStart >= 60_000) {
      // Keep two one-minute minima: a clock step (NTP) is forgotten within two minutes, while a
      // real queue shows in every minute (FastReject keeps it short, so minima stay at the base).
      this.minPrev = this.minCur;
      this.minCur = Infinity;
      this.epochStart = now;
    }
    if (offset < this.minCur) this.minCur = offset;
    const base = this.minCur < this.minPrev ? this.minCur : this.minPrev;
    return offset - base;
  }
  constructor(socket: ByteStream, readonly server: Server, maxFrameBytes: number, now: () => number) {
    this.conn = new Connection(
      socket,
      { maxFrameBytes, pauseReadsWhileBlocked: true, now },
      {
        onFrame: (kind, callId, header, body) => server.onFrame(this, kind, callId, header, body),
        onOversized: (kind, callId, size) => {
          if (kind === FrameKind.REQUEST) {
            this.conn.send(FrameKind.RESPONSE, callId, errorHeader(undefined, errors.REQUEST_TOO_LARGE, size, maxFrameBytes));
          } else if (kind === FrameKind.MESSAGE) {
            const call = this.calls.get(callId);
            if (call !== undefined) {
              server.endCall(call, errors.REQUEST_MESSAGE_TOO_LARGE(size, maxFrameBytes), true);
            }
          }
        },
        onClose: () => server.onConnectionClose(this),
      },
    );
  }
}

const EMPTY_METADATA: Readonly<Metadata> = Object.freeze({});
/** Call id of the PING sent after GOAWAY; its PONG means the client has seen the GOAWAY. */
const GOAWAY_PING_ID = 0xffffffff;
const EMPTY_KEYS: readonly string[] = Object.freeze([]);

/**
 * A svrkit server.
 *
 * ```ts
 * const server = new Server();
 * server.addService(new Greeter());          // a class extending the generated GreeterService
 * await server.listen(7000);                 // port 0 picks a free port; see server.address
 * ...
 * await server.close({ graceMs: 5000 });
 * ```
 */
export class Server {
  private readonly methods = new Map<string, RegisteredMethod>();
  private readonly serviceDefs = new Map<string, ServiceDefinition>();
  private readonly connections = new Set<ServerConnection>();
  private readonly timers = new DeadlineTimers();
  private readonly maxFrameBytes: number;
  private readonly interceptors: ServerInterceptor[];
  private readonly streamInterceptors: ServerStreamInterceptor[];
  private readonly streamHost: StreamHost;
  private readonly logger: ServerLogger;
  private readonly observer: ServerObserver | undefined;
  private readonly now: () => number;
  private readonly admission: AdmissionController | undefined;
  private readonly overload: Readonly<Required<Omit<OverloadOptions, keyof AdmissionOptions | 'onWindow'>>> & { onWindow: ((r: WindowReport) => void) | undefined };
  private eventLoopDelay: IntervalHistogram | undefined;
  private windowTimer: NodeJS.Timeout | undefined;
  /** The admission level sent to clients: undefined while admitting everything (and always in dry-run). */
  private advertisedLevel: number | undefined;
  private userSeed = 0x9e3779b9;
  private listener: TransportListener | undefined;
  private listening = false;
  private readonly transport: Transport;
  private boundAddress: string | undefined;
  private inflight = 0;
  private closing = false;
  /** Called when the last connection closes during `close()`. */
  private drainedWaiters: Array<() => void> = [];

  /** @param options - see `ServerOptions`. */
  constructor(options: ServerOptions = {}) {
    this.maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    this.interceptors = options.interceptors ?? [];
    this.streamInterceptors = options.streamInterceptors ?? [];
    this.streamHost = {
      endStream: (call, error) => this.endStream(call as InboundCall, error),
      logError: (m, e) => this.logger.error(m, e),
      counted: options.observer?.streamMessage === undefined ? undefined : (method, direction) => options.observer!.streamMessage!(method, direction),
    };
    this.logger = options.logger ?? { error: (m, e) => console.error(m, e) };
    this.observer = options.observer;
    this.now = options.now ?? Date.now;
    this.transport = options.transport ?? tcpTransport;
    const ov = options.overload === false ? undefined : (options.overload ?? {});
    this.overload = {
      dryRun: ov?.dryRun ?? false,
      maxInflight: ov?.maxInflight ?? 10_000,
      userIdKey: ov?.userIdKey ?? DEFAULT_USER_ID_KEY,
      defaultPriority: ov?.defaultPriority ?? DEFAULT_BUSINESS_PRIORITY,
      onWindow: ov?.onWindow,
    };
    if (!(this.overload.maxInflight >= 1)) throw configErrors.INVALID_OPTION('overload.maxInflight', '>= 1', this.overload.maxInflight);
    checkPriority(this.overload.defaultPriority, 'overload.defaultPriority');
    if (ov !== undefined) this.admission = new AdmissionController(this.now(), ov);
    if (options.builtinServices !== false) {
      this.addService(new Health(this));
      this.addService(new Reflection(this));
    }
  }

  /**
   * Registers a service.
   * - `addService(impl)`: `impl` is an instance of a class extending a generated `XService`.
   * - `addService(definition, impl)`: `impl` is any object with one method per rpc (camelCase).
   * @returns this server, for chaining.
   * @throws Error when the service is already registered or `impl` lacks a method.
   */
  addService(impl: ServiceImplementation): this;
  addService(definition: ServiceDefinition, impl: object): this;
  addService(a: ServiceImplementation | ServiceDefinition, b?: object): this {
    let def: ServiceDefinition;
    let impl: Record<string, unknown>;
    if (b === undefined) {
      const d = (a as Partial<ServiceImplementation>)[serviceDefinition];
      if (d === undefined) {
        throw configErrors.NOT_A_SERVICE();
      }
      def = d;
      impl = a as unknown as Record<string, unknown>;
    } else {
      def = a as ServiceDefinition;
      impl = b as Record<string, unknown>;
    }
    if (this.serviceDefs.has(def.fullName)) throw configErrors.SERVICE_ALREADY_REGISTERED(def.fullName);
    const entries: Array<[string, RegisteredMethod]> = [];
    for (const m of Object.values(def.methods)) {
      const fn = impl[m.localName];
      if (typeof fn !== 'function') throw configErrors.MISSING_HANDLER(def.fullName, m.localName, m.name);
      const kind = methodKind(m);
      let handler: ServerHandler = (fn as ServerHandler).bind(impl);
      let streamHandler: ServerStreamHandler | undefined;
      if (kind === 'unary') {
        for (let i = this.interceptors.length - 1; i >= 0; i--) handler = this.interceptors[i]!(handler);
      } else if (this.streamInterceptors.length > 0) {
        streamHandler = streamForm(kind, handler);
        for (let i = this.streamInterceptors.length - 1; i >= 0; i--) streamHandler = this.streamInterceptors[i]!(streamHandler);
      }
      entries.push([m.path, { def: m, kind: METHOD_KIND_CODE[kind], handler, streamHandler }]);
    }
    this.serviceDefs.set(def.fullName, def);
    registerDescriptors(def.files);
    for (const [path, r] of entries) this.methods.set(path, r);
    return this;
  }

  /** Definitions of the registered services, by full name (used by the reflection service). */
  get services(): ReadonlyMap<string, ServiceDefinition> {
    return this.serviceDefs;
  }

  /** True once `close()` has begun. */
  get isClosing(): boolean {
    return this.closing;
  }

  /**
   * Starts accepting connections.
   * @param port - TCP port; 0 picks a free one.
   * @param host - interface to bind; default `'127.0.0.1'` (use `'0.0.0.0'` or `'::'` for all).
   * @throws Error when the port cannot be bound (EADDRINUSE, EACCES, ...) or the server is listening already.
   */
  async listen(port: number, host = '127.0.0.1'): Promise<void> {
    if (this.listening) throw configErrors.ALREADY_LISTENING();
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw configErrors.INVALID_PORT(port);
    this.listening = true;
    let listener: TransportListener;
    try {
      listener = await this.transport.listen(port, host, (socket) => this.onConnection(socket));
    } catch (err) {
      this.listening = false;
      throw err;
    }
    listener.onError((err) => this.logger.error('svrkit server: listener error', err));
    this.boundAddress = formatAddress(listener.address.address, listener.address.port);
    this.listener = listener;
    if (this.closing) {
      // close() ran while we were binding: stop listening, start nothing.
      listener.close();
      return;
    }
    if (this.admission !== undefined) {
      this.eventLoopDelay = monitorEventLoopDelay({ resolution: 10 });
      this.eventLoopDelay.enable();
      // Windows also close when no call arrives, so that an idle server's level recovers.
      this.windowTimer = setInterval(() => this.maybeCloseWindow(this.now()), 250);
      this.windowTimer.unref();
    }
  }

  /** Closes the admission window when it is due, and publishes the new level. */
  private maybeCloseWindow(now: number): void {
    const adm = this.admission!;
    if (!adm.windowDue(now)) return;
    const eld = this.eventLoopDelay;
    const delayMs = eld !== undefined && eld.count > 0 ? eld.mean / 1e6 : 0;
    eld?.reset();
    const report = adm.closeWindow(now, delayMs);
    if (!this.overload.dryRun) this.advertisedLevel = adm.level === ADMIT_ALL ? undefined : adm.level;
    if (this.overload.onWindow !== undefined) this.overload.onWindow(report);
    else if (this.overload.dryRun && report.levelAfter !== report.levelBefore) {
      this.logger.error(`svrkit server: FastReject dry run: admission level ${report.levelBefore} -> ${report.levelAfter} (mean queueing ${report.meanQueueMs.toFixed(1)} ms, event-loop delay ${report.eventLoopDelayMs.toFixed(1)} ms, ${report.arrived} calls)`);
    }
  }

  /** The bound address `host:port` (after `listen`), e.g. `'127.0.0.1:40123'`. */
  get address(): string {
    if (this.boundAddress === undefined) throw configErrors.NOT_LISTENING();
    return this.boundAddress;
  }

  /** The bound port (after `listen`). */
  get port(): number {
    if (this.listener === undefined) throw configErrors.NOT_LISTENING();
    return this.listener.address.port;
  }

  /** Calls being served right now. */
  get inflightCalls(): number {
    return this.inflight;
  }

  /**
   * FastReject's admission level: calls whose priority level (`business * 128 + user`, lower is
   * more important) is above it are refused. `admissionLevels - 1` (16383) admits everything, as
   * does a server with overload control off.
   */
  get admissionLevel(): number {
    return this.admission?.level ?? ADMIT_ALL;
  }

  /** The number of priority levels (16384). */
  get admissionLevels(): number {
    return LEVELS;
  }

  /**
   * Shuts down gracefully, the way gRPC servers do:
   * 1. stops accepting connections and sends every connection GOAWAY followed by a PING: clients
   *    send no new calls on it;
   * 2. keeps serving every call that arrives meanwhile (a client may have sent some before it saw
   *    the GOAWAY; the client's PONG marks the point after which no more will come);
   * 3. closes each connection once the client has answered the PING and no call is in flight on
   *    it (svrkit clients close their side themselves as soon as they are idle);
   * 4. after `graceMs`, closes whatever is left: calls still running are cancelled (their signal
   *    fires with CANCELLED) and their clients see UNAVAILABLE.
   * Resolves when every connection is closed. Calling it again waits for the same shutdown.
   */
  async close(options: CloseOptions = {}): Promise<void> {
    const graceMs = options.graceMs ?? 5000;
    if (!this.closing) {
      this.closing = true;
      clearInterval(this.windowTimer);
      this.eventLoopDelay?.disable();
      this.listener?.close();
      for (const c of this.connections) {
        c.draining = true;
        c.conn.goaway(errors.SERVER_SHUTTING_DOWN());
        c.conn.send(FrameKind.PING, GOAWAY_PING_ID);
      }
    }
    if (this.connections.size > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, graceMs);
        this.drainedWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    const closed: Promise<void>[] = [];
    const cut = errors.SHUTDOWN_GRACE_EXPIRED(graceMs);
    for (const c of this.connections) {
      closed.push(new Promise<void>((resolve) => c.conn.socket.once('close', () => resolve())));
      for (const call of [...c.calls.values()]) this.endCall(call, cut, false);
      c.conn.destroy();
    }
    await Promise.all(closed);
  }

  /** Ends a draining connection once its client has seen GOAWAY and no call is left on it. */
  private endIfDrained(sc: ServerConnection): void {
    if (sc.draining && sc.goawayAcked && sc.calls.size === 0) sc.conn.end();
  }

  /** @internal Called by connections for each frame. */
  onFrame(sc: ServerConnection, kind: number, callId: number, header: Buffer, body: Buffer): void {
    switch (kind) {
      case FrameKind.REQUEST:
        this.onRequest(sc, callId, header, body);
        return;
      case FrameKind.MESSAGE:
        sc.calls.get(callId)?.stream?.onMessage(body);
        return;
      case FrameKind.WINDOW:
        sc.calls.get(callId)?.stream?.onWindow(body);
        return;
      case FrameKind.HALF_CLOSE:
        sc.calls.get(callId)?.stream?.onHalfClose();
        return;
      case FrameKind.CANCEL: {
        const call = sc.calls.get(callId);
        if (call !== undefined) this.endCall(call, cancelReason(header), false);
        return;
      }
      case FrameKind.PING:
        sc.conn.send(FrameKind.PONG, callId);
        return;
      case FrameKind.PONG:
        if (callId === GOAWAY_PING_ID && sc.draining) {
          sc.goawayAcked = true;
          this.endIfDrained(sc);
        }
        return;
      case FrameKind.GOAWAY:
        return;
      default:
        // Unknown kinds are ignored for forward compatibility, like unknown HTTP/2 frame types.
        return;
    }
  }

  /** @internal Called when a connection's socket closes. */
  onConnectionClose(sc: ServerConnection): void {
    this.connections.delete(sc);
    if (this.closing && this.connections.size === 0 && this.drainedWaiters.length > 0) {
      const waiters = this.drainedWaiters;
      this.drainedWaiters = [];
      for (const w of waiters) w();
    }
    if (sc.calls.size === 0) return;
    const reason = errors.CLIENT_DISCONNECTED();
    for (const call of [...sc.calls.values()]) this.endCall(call, reason, false);
  }

  private onConnection(socket: ByteStream): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    socket.on('error', () => {
      // Reported through Connection.onClose; an unhandled 'error' would crash the process.
    });
    this.connections.add(new ServerConnection(socket, this, this.maxFrameBytes, this.now));
  }

  private onRequest(sc: ServerConnection, callId: number, headerBytes: Buffer, body: Buffer): void {
    const conn = sc.conn;
    // Arrival: when the chunk holding this frame was read; start: now, as the handler is about to run.
    const arrival = conn.chunkAt;
    const now = this.now();
    if (sc.goawayAcked) {
      // The client saw GOAWAY and still sent a call: refuse it unprocessed, so it may go elsewhere.
      this.reject(conn, callId, errors.REFUSED_AFTER_GOAWAY);
      this.observer?.rejected('', 'goaway', false);
      return;
    }
    let h;
    try {
      h = decodeRequestHeader(headerBytes);
    } catch (err) {
      this.reject(conn, callId, errors.MALFORMED_REQUEST_HEADER, err as HeaderError);
      return;
    }
    // Queueing time, the FastReject signal: since the frame's chunk was read (server-measured, so
    // no client can sway the admission level every client shares).
    const queued = now - arrival;
    // Time the call has waited since its client sent it (client buffer, kernel, our read queue),
    // from the client's send-time stamp relative to the fastest call on this connection. Used
    // only for this call's own deadline, so a skewed or lying clock hurts only its own calls.
    let waited = queued;
    if (h.st !== undefined) {
      const w = sc.queuedFor(h.st, now);
      if (w > waited) waited = w;
    }
    const registered = this.methods.get(h.m);
    if (registered === undefined) {
      this.reject(conn, callId, errors.UNKNOWN_METHOD, h.m);
      return;
    }
    if (sc.calls.has(callId)) {
      this.reject(conn, callId, errors.DUPLICATE_CALL_ID, callId);
      return;
    }
    if ((h.k ?? 0) !== registered.kind) {
      this.reject(conn, callId, errors.METHOD_KIND_MISMATCH, h.m, registered.kind, h.k ?? 0);
      return;
    }
    if (h.d !== undefined && h.d > 0 && waited >= h.d) {
      // It waited (in buffers and queues) past its deadline: nobody wants the answer any more,
      // and running it would only make the queue longer. Cheap: the body is not even decoded.
      this.reject(conn, callId, errors.DEADLINE_WHILE_QUEUED, waited);
      this.observer?.rejected(h.m, 'expired', false);
      return;
    }
    const def = registered.def;
    // Priorities, also without overload control here: outbound calls of the handler carry them on.
    // The caller's (inherited) priority, but never less important than the method's own: a
    // priority-0 method (health checks, replica traffic) stays priority 0 whoever calls it.
    if ((h.b !== undefined && !isPriority(h.b)) || (h.u !== undefined && !isPriority(h.u))) {
      this.reject(conn, callId, errors.INVALID_PRIORITY_HEADER, h.b, h.u);
      return;
    }
    const business = effectiveBusinessPriority(h.b, def.options?.priority) ?? this.overload.defaultPriority;
    const user = h.u ?? metadataUserPriority(h.md, this.overload.userIdKey, now) ?? this.anonymousUser(callId);
    const adm = this.admission;
    if (adm !== undefined) {
      // FastReject, before the body is decoded: refusing costs a header decode and one frame.
      if (this.inflight >= this.overload.maxInflight) {
        if (this.shed(conn, callId, h.m, 'inflight', errors.OVERLOADED_INFLIGHT, this.inflight, this.overload.maxInflight)) return;
      }
      if (adm.windowDue(now)) this.maybeCloseWindow(now);
      if (!adm.arrive(priorityLevel(business, user))) {
        if (this.shed(conn, callId, h.m, 'priority', errors.OVERLOADED_PRIORITY, priorityLevel(business, user), adm.level)) return;
      }
    }
    let request: unknown;
    try {
      // Client-streaming and bidi requests come as MESSAGE frames; the REQUEST frame only opens the call.
      request = registered.kind >= 2 ? undefined : def.requestType.decode(body);
    } catch (err) {
      this.reject(conn, callId, errors.INVALID_REQUEST_BODY, def.requestTypeName, err);
      return;
    }
    const d = h.d;
    if (d !== undefined && d <= 0) {
      this.reject(conn, callId, errors.DEADLINE_BEFORE_START);
      return;
    }
    const call = new InboundCall(
      h.m,
      conn.peer,
      h.md ?? EMPTY_METADATA,
      h.pm ?? EMPTY_KEYS,
      d === undefined ? Infinity : now - waited + d,
      h.t,
      arrival,
      sc,
      callId,
      registered,
    );
    call.businessPriority = business;
    call.userPriority = user;
    if (d !== undefined) this.timers.add(call, now);
    sc.calls.set(callId, call);
    this.inflight++;
    if (adm !== undefined) adm.queued(queued);
    if (this.observer !== undefined) {
      call.startedAt = now;
      call.queuedMs = queued;
    }
    if (registered.kind !== 0) {
      this.startStream(call, registered, request);
      return;
    }
    let result: Promise<unknown>;
    try {
      result = callStorage.run(call, registered.handler, request, call);
      if (typeof (result as Promise<unknown> | undefined)?.then !== 'function') result = Promise.resolve(result);
    } catch (err) {
      result = Promise.reject(err);
    }
    result
      .then(
        (response) => this.respond(call, response),
        (err) => this.fail(call, err),
      )
      .catch((err: unknown) => this.logger.error(`svrkit server: ${call.method}: failed to answer (trace ${call.traceId})`, err));
  }

  /** Starts a streaming call's handler and hands its output to the stream stage. */
  private startStream(call: InboundCall, registered: RegisteredMethod, request: unknown): void {
    const streamed = registered.kind >= 2;
    const stream = new ServerStream(call, call.callId, call.conn.conn, registered.def, this.streamHost, streamed);
    call.stream = stream;
    let output: AsyncIterable<unknown> | Promise<unknown>;
    try {
      if (registered.streamHandler !== undefined) {
        output = callStorage.run(call, registered.streamHandler, streamed ? stream.requests : oneMessage(request), call);
      } else {
        output = callStorage.run(call, registered.handler as (r: unknown, c: CallContext) => AsyncIterable<unknown> | Promise<unknown>, streamed ? stream.requests : request, call);
      }
    } catch (err) {
      output = Promise.reject(err);
    }
    stream.run(output);
  }

  /** StreamHost.endStream: a streaming call ended (its handler finished or failed). */
  private endStream(call: InboundCall, error: RpcError | undefined): void {
    if (call.done) return;
    if (error === undefined) {
      this.finish(call);
      if (this.observer !== undefined) this.observe(call, Status.OK);
      const header = this.statusHeader(call, Status.OK, undefined, call.peekResponseMetadata());
      if (header === undefined) return;
      call.conn.conn.send(FrameKind.RESPONSE, call.callId, header);
      this.released(call);
      return;
    }
    this.endCall(call, error, true);
  }

  private respond(call: InboundCall, response: unknown): void {
    if (call.done) return;
    this.finish(call);
    const def = call.registered.def;
    let body: Uint8Array;
    try {
      body = encodeMessage(def.responseType, def.responseTypeName, response);
    } catch (err) {
      this.logger.error(`svrkit server: ${call.method}: cannot encode the ${def.responseTypeName} the handler returned (trace ${call.traceId})`, err);
      if (this.observer !== undefined) this.observe(call, Status.INTERNAL);
      this.sendError(call, errors.RESPONSE_NOT_ENCODABLE.with({ cause: err }, err), undefined);
      return;
    }
    const header = this.statusHeader(call, Status.OK, undefined, call.peekResponseMetadata());
    if (header === undefined) {
      if (this.observer !== undefined) this.observe(call, Status.INTERNAL);
      return;
    }
    const conn = call.conn.conn;
    if (!conn.fits(header, body)) {
      if (this.observer !== undefined) this.observe(call, Status.RESOURCE_EXHAUSTED);
      this.sendError(call, errors.RESPONSE_TOO_LARGE(body.length, this.maxFrameBytes), undefined);
      return;
    }
    if (this.observer !== undefined) this.observe(call, Status.OK);
    conn.send(FrameKind.RESPONSE, call.callId, header, body);
    this.released(call);
  }


  private fail(call: InboundCall, err: unknown): void {
    if (call.done) return;
    if (!(err instanceof RpcError)) {
      this.logger.error(`svrkit server: ${call.method} failed (trace ${call.traceId})`, err);
    }
    this.endCall(call, toRpcError(err), true);
  }

  /**
   * Ends a call that did not produce a response: deadline, cancel, disconnect or handler error.
   * Fires the call's signal (except for handler errors, which the handler already knows about).
   */
  endCall(call: InboundCall, error: RpcError, sendResponse: boolean): void {
    if (call.done) return;
    this.finish(call);
    call.stream?.terminate(error);
    if (this.observer !== undefined) this.observe(call, error.code);
    if (error.code === Status.CANCELLED || error.code === Status.DEADLINE_EXCEEDED) call.abort(error);
    if (!sendResponse) {
      this.released(call);
      return;
    }
    const md = call.peekResponseMetadata();
    this.sendError(call, error, md === undefined ? error.metadata : { ...md, ...error.metadata });
  }

  /**
   * Sends a status-only response for a failed call (code, message, reason; never `notProcessed`,
   * which only refusals before any handler set), then releases the call's connection.
   */
  private sendError(call: InboundCall, error: RpcError, metadata: Metadata | undefined): void {
    const header = this.statusHeader(call, error.code, error.message, metadata, error.reason);
    if (header === undefined) return;
    call.conn.conn.send(FrameKind.RESPONSE, call.callId, header);
    this.released(call);
  }

  /**
   * Encodes a response header. Metadata a handler set that cannot be encoded (not a map of
   * strings) is the handler's bug: the call gets INTERNAL without it, and the server logs it.
   * @returns the header, or undefined when the INTERNAL reply was sent instead.
   */
  private statusHeader(call: InboundCall, status: Status, message: string | undefined, metadata: Metadata | undefined, reason?: string): Uint8Array | undefined {
    try {
      if (metadata !== undefined && !isStringMap(metadata)) throw new Error('metadata values must be strings');
      return encodeStatusHeader(status, message, metadata, false, this.advertisedLevel, reason);
    } catch (err) {
      this.logger.error(`svrkit server: ${call.method}: response metadata cannot be sent (trace ${call.traceId})`, err);
      call.conn.conn.send(FrameKind.RESPONSE, call.callId, errorHeader(undefined, errors.INVALID_RESPONSE_METADATA, err));
      this.released(call);
      return undefined;
    }
  }

  private observe(call: InboundCall, code: number): void {
    this.observer!.callEnded(call.method, code, (this.now() - call.startedAt) / 1000, call.queuedMs / 1000);
  }

  private finish(call: InboundCall): void {
    call.done = true;
    if (call.deadlineList !== undefined) this.timers.remove(call);
    call.conn.calls.delete(call.callId);
    this.inflight--;
  }

  /** After a call's last frame is queued: a draining connection may now close. */
  private released(call: InboundCall): void {
    if (call.conn.draining) this.endIfDrained(call.conn);
  }

  /**
   * Refuses a call for overload (RESOURCE_EXHAUSTED, not processed, with the admission level), or
   * in dry-run mode only reports it.
   * @returns true when the call was refused.
   */
  private shed<A extends unknown[]>(conn: Connection, callId: number, method: string, reason: RejectReason, error: RpcErrorEntry<A>, ...args: A): boolean {
    const dry = this.overload.dryRun;
    this.observer?.rejected(method, reason, dry);
    if (dry) return false;
    conn.send(FrameKind.RESPONSE, callId, errorHeader(this.advertisedLevel, error, ...args));
    return true;
  }

  /** A user priority for a call without a user id: a well-mixed function of a counter (no RNG per call). */
  private anonymousUser(callId: number): number {
    let x = (this.userSeed = (this.userSeed + 0x9e3779b9) | 0) ^ callId;
    x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
    x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
    return ((x ^ (x >>> 16)) >>> 0) % 128;
  }

  /**
   * Answers a call no handler saw with a catalogue error (status, message, reason, and the
   * entry's not-processed flag, which tells the client it may retry the call elsewhere).
   * @param error - the catalogue entry; `args` - its message template's arguments.
   */
  private reject<A extends unknown[]>(conn: Connection, callId: number, error: RpcErrorEntry<A>, ...args: A): void {
    conn.send(FrameKind.RESPONSE, callId, errorHeader(this.advertisedLevel, error, ...args));
  }
}

/**
 * The status header of a catalogue error, without making an RpcError (no stack trace to capture
 * on the refusal paths, which overload makes hot).
 * @param admissionLevel - the level to advertise (`al`), or undefined.
 * @returns the encoded header: the entry's status, message, not-processed flag and reason.
 */
function errorHeader<A extends unknown[]>(admissionLevel: number | undefined, error: RpcErrorEntry<A>, ...args: A): Uint8Array {
  return encodeStatusHeader(error.status, error.message(...args), undefined, error.notProcessed, admissionLevel, error.reason);
}

/**
 * Why the client gave up, from a CANCEL frame's header: a client whose own deadline timer fired
 * says DEADLINE_EXCEEDED, so the server reports the same whichever side's timer fires first.
 */
function isStringMap(o: object): boolean {
  for (const k in o) if (typeof (o as Record<string, unknown>)[k] !== 'string') return false;
  return true;
}

function cancelReason(header: Buffer): RpcError {
  let code: number = Status.CANCELLED;
  try {
    if (header.length > 0) code = decodeStatusHeader(header).s;
  } catch {
    // A malformed reason still cancels.
  }
  return code === Status.DEADLINE_EXCEEDED ? errors.DEADLINE_CLIENT_GAVE_UP() : errors.CANCELLED_BY_CLIENT();
}

/** A one-message async iterable (the request of a server-streaming call, for stream interceptors). */
async function* oneMessage(message: unknown): AsyncIterable<unknown> {
  yield message;
}

/**
 * Adapts a streaming implementation method to the stream form every stream interceptor sees:
 * request messages in, response messages out.
 */
function streamForm(kind: MethodKind, fn: ServerHandler): ServerStreamHandler {
  const impl = fn as unknown as (r: unknown, c: CallContext) => unknown;
  switch (kind) {
    case 'server_streaming':
      return async function* (requests, call) {
        let request: unknown;
        for await (const r of requests) {
          request = r;
          break;
        }
        yield* impl(request, call) as AsyncIterable<unknown>;
      };
    case 'client_streaming':
      return async function* (requests, call) {
        yield await (impl(requests, call) as Promise<unknown>);
      };
    default:
      return impl as ServerStreamHandler;
  }
}
