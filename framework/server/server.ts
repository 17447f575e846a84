/**
 * The RPC server: registers services and composes the stages every call goes through, each in
 * its own file with one job:
 *
 * 1. the connection (server-connection.ts): framing, PING, GOAWAY and draining, the base delay;
 * 2. decoding, header first (request-decoder.ts): method, call kind, deadline spent in queues,
 *    priorities;
 * 3. admission (fast-reject.ts): FastReject, before the body is decoded;
 * 4. decoding of the body (request-decoder.ts);
 * 5. dispatch (dispatch.ts): the call's context, its deadline, the handler, the response; streams
 *    go on to the stream stage (stream-call.ts).
 *
 * The hot path (frame parse, header decode, method lookup, admission, body decode, handler start)
 * runs synchronously in the socket's data callback; the only promise per call is the handler's own.
 */
import { createSecureServer as createHttp2SecureServer, createServer as createHttp2Server, type Http2SecureServer, type Http2Server, type ServerHttp2Session } from 'node:http2';
import { Socket, type AddressInfo } from 'node:net';
import { getHeapStatistics } from 'node:v8';
import { configErrors, errors } from '../errors.js';
import type { AdmissionOptions, WindowReport } from '../overload/admission.js';
import { ADMIT_ALL, LEVELS } from '../overload/admission.js';
import { checkPriority, DEFAULT_BUSINESS_PRIORITY, DEFAULT_USER_ID_KEY } from '../overload/priority.js';
import { formatAddress, type ConnectionOptions } from '../transport/connection.js';
import { GrpcSessionBridge } from '../transport/grpc-server-bridge.js';
import type { TLSSocket } from 'node:tls';
import { tcpTransport, type ByteStream, type Transport, type TransportListener } from '../transport/transport.js';
import { METHOD_KIND_CODE, methodKind, serviceDefinition, type ServiceDefinition, type ServiceImplementation } from '../wire/definition.js';
import { registerDescriptors } from '../wire/encode.js';
import { DEFAULT_MAX_FRAME_BYTES, FrameKind } from '../wire/frame.js';
import { HTTP2_PREFACE } from '../wire/grpc-codec.js';
import { detectForeignProtocol } from '../wire/foreign-protocol.js';
import { Dispatcher, type ServerLogger } from './dispatch.js';
import { FastReject } from './fast-reject.js';
import { Health } from './health.js';
import { DescriptorIndex } from './descriptor-index.js';
import { GrpcHealth } from './grpc-health.js';
import { GrpcReflectionV1, GrpcReflectionV1Alpha } from './grpc-reflection.js';
import type { InboundCall, RegisteredMethod, ServerHandler } from './inbound-call.js';
import type { ServerObserver } from './observer.js';
import { Reflection } from './reflection.js';
import { REFUSED, RequestDecoder, type DecodedHeader } from './request-decoder.js';
import { Scheduler } from './scheduler.js';
import { INITIAL_REPLY_ESTIMATE_BYTES, ServerConnection, type ConnectionLimits, type ConnectionOwner } from './server-connection.js';
import { streamForm, type ServerStreamHandler, type ServerStreamInterceptor } from './stream-call.js';
import type { KeyRing } from '../tickets/key-ring.js';
import { TicketVerifier } from '../tickets/ticket-verifier.js';
import { tlsPeerIdentity, tlsServerSettings, tlsServerTransport, type TlsServerOptions } from '../transport/tls-transport.js';

export type { ServerHandler } from './inbound-call.js';
export type { ServerLogger } from './dispatch.js';

/**
 * A server interceptor wraps every handler: `(next) => async (request, call) => { ...; return next(request, call); }`.
 * Interceptors run outermost first, in the order given, inside the call's context.
 */
export type ServerInterceptor = (next: ServerHandler) => ServerHandler;

/** Streams a server takes at once per connection unless `maxStreamsPerConnection` says otherwise. */
export const DEFAULT_MAX_STREAMS_PER_CONNECTION = 100;

/** Default `ServerOptions.maxQueuedResponseBytes`: 8 MiB. */
export const DEFAULT_MAX_QUEUED_RESPONSE_BYTES = 8 * 1024 * 1024;

/** Default `ServerOptions.frameTimeoutMs` (ms). */
export const DEFAULT_FRAME_TIMEOUT_MS = 30_000;

/** Default `ServerOptions.idleTimeoutMs` (ms). */
export const DEFAULT_IDLE_TIMEOUT_MS = 300_000;

/** How often the read and idle timeouts are checked (ms). */
const SWEEP_MS = 1000;

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
  /**
   * Serve the built-in services: `svrkit.Health` and `svrkit.Reflection`, and gRPC's standard
   * `grpc.health.v1.Health` and `grpc.reflection.v1` / `v1alpha` `ServerReflection` (for
   * Kubernetes `grpc:` probes, grpcurl and the like). Default true.
   */
  builtinServices?: boolean;
  /**
   * Check every call's ticket (framework/tickets) before its body is decoded: `keys`, the key ring
   * to accept (or a `TicketVerifier`, whose keys can be changed while serving); `required` (default
   * true): a call without a ticket to a method that is not public gets UNAUTHENTICATED (false: it
   * runs with `auth` undefined). A ticket that does not verify is always refused (UNAUTHENTICATED),
   * one without the method's `scope` gets PERMISSION_DENIED. Absent: tickets are carried on, not checked.
   */
  tickets?: { keys: KeyRing | TicketVerifier; required?: boolean };
  /**
   * Serve over TLS (node:tls): `{ cert, key, ca?, requireClientCert? }` in PEM. With `ca`, clients
   * are asked for a certificate and `currentCall().peerIdentity` gives a verified one's subject and
   * URI SANs; with `requireClientCert`, a client without one is refused in the handshake. The
   * server then speaks TLS only (a plain client's connection fails its handshake). Not with `transport`.
   */
  tls?: TlsServerOptions;
  /** FastReject overload control (on by default); `false` turns it off. */
  overload?: OverloadOptions | false;
  /** Receives call events (metrics). */
  observer?: ServerObserver;
  /**
   * Streams one connection may have open at once (HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS); a
   * stream beyond it is refused with RESOURCE_EXHAUSTED, not processed. Each stream may hold a
   * window of credit each way (1 MiB), so this bounds what one client can make the server hold.
   * Default 100.
   */
  maxStreamsPerConnection?: number;
  /**
   * Response bytes that may wait for one client (queued in the server and in the socket) before
   * the server stops reading that connection and holds back the calls it already read, until
   * half of them have drained: a client that does not read costs about this much. Default 8 MiB.
   * The same cap bounds what a connection's calls waiting in FastReject's queue hold (counted as
   * their frames plus 1 KiB each, `WAITING_CALL_OVERHEAD_BYTES`): past it the connection is not
   * read until they are down to half.
   */
  maxQueuedResponseBytes?: number;
  /**
   * Server-wide budget (bytes) for partly received frames, responses waiting for clients, and
   * requests parked or waiting in FastReject's queue, over all connections (`bufferedBytes`): a
   * frame over 64 KiB that does not fit is not buffered.
   * A request is refused when its first bytes arrive (RESOURCE_EXHAUSTED, not processed; its
   * bytes are skipped), a stream message fails its call, any other kind closes the connection.
   * Default a quarter of the V8 heap limit (`svrkit run --buffer-budget-mb`).
   */
  bufferBudgetBytes?: number;
  /**
   * A frame that started arriving must be complete within this long (ms), or the connection is
   * closed with a GOAWAY saying why (a slow or stalled sender: slowloris; the clock stops while the
   * server itself is not reading that connection). A client over `maxQueuedResponseBytes` that
   * takes none of its replies for this long is disconnected too. Default 30000.
   */
  frameTimeoutMs?: number;
  /**
   * A connection with no call, no reply waiting and no frame (svrkit clients send keepalive PINGs
   * while idle) for this long (ms) is closed with a GOAWAY saying why. Default 300000 (5 min).
   */
  idleTimeoutMs?: number;
  /** How it listens: TCP (`tcpTransport`, the default) or in-process (`new MemoryTransport()`, for tests). */
  transport?: Transport;
  /**
   * Serve gRPC clients too (HTTP/2 with prior knowledge, plaintext) on the same TCP port: a
   * connection whose first bytes are HTTP/2's client preface is a gRPC session, served by the same
   * services, interceptors, admission and tickets (framework/transport/grpc-server-bridge.ts).
   * Default true. Only with the default TCP transport: over `tls` or another `transport` the port
   * speaks svrkit's protocol alone (use `grpcPort`).
   */
  grpc?: boolean;
  /**
   * Also listen for gRPC alone on this port, on the same host (0: a free one; `grpcAddress` names
   * it after `listen`), whatever `grpc` says. Over TLS (HTTP/2 by ALPN, with the same certificates
   * and client-certificate policy) when `tls` is set, else plaintext. node:http2 reads this port
   * natively, which makes it faster than the shared port. Not with a custom `transport`.
   */
  grpcPort?: number;
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
  /**
   * A fixed cap: calls in flight beyond this are refused whatever their priority. Default none:
   * the backstop is memory (`maxMemoryFraction`), and CPU-bound load is bounded by the admission level.
   */
  maxInflight?: number;
  /**
   * Memory backstop: while the V8 heap is above this share of its limit, or the resident set above
   * this share of the cgroup's (or machine's) memory, every new call is refused (RESOURCE_EXHAUSTED,
   * not processed). Sampled each admission window. Default 0.9.
   */
  maxMemoryFraction?: number;
  /**
   * Handler time per event-loop turn before the server reads its sockets again (ms): calls beyond
   * it wait in the server's priority queue, where FastReject sees and orders them. Default 5.
   */
  sliceMs?: number;
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
export class Server implements ConnectionOwner<InboundCall> {
  private readonly methods = new Map<string, RegisteredMethod>();
  private readonly serviceDefs = new Map<string, ServiceDefinition>();
  private readonly connections = new Set<ServerConnection<InboundCall>>();
  private readonly maxFrameBytes: number;
  private readonly interceptors: ServerInterceptor[];
  private readonly streamInterceptors: ServerStreamInterceptor[];
  private readonly logger: ServerLogger;
  private readonly observer: ServerObserver | undefined;
  private readonly now: () => number;
  private readonly transport: Transport;
  /** The stages. */
  private readonly fastReject: FastReject | undefined;
  private readonly decoder: RequestDecoder;
  private readonly dispatcher: Dispatcher;
  private readonly scheduler: Scheduler | undefined;
  private listener: TransportListener | undefined;
  /** Same-port gRPC (`ServerOptions.grpc`). */
  private readonly grpc: boolean;
  private readonly grpcPort: number | undefined;
  /** The HTTP/2 server of same-port gRPC sessions (made on the first one). */
  private h2: Http2Server | undefined;
  /** The HTTP/2 server listening on `grpcPort`. */
  private grpcListener: Http2Server | Http2SecureServer | undefined;
  private grpcBound: string | undefined;
  /** The gRPC sessions being served (their partly received messages count in `bufferedBytes`). */
  private readonly grpcSessions = new Set<GrpcSessionBridge>();
  /** Each session's client address, for the log line of a session that fails. */
  private readonly grpcPeers = new WeakMap<ServerHttp2Session, string>();
  private readonly maxStreamsPerConnection: number;
  private readonly tls: TlsServerOptions | undefined;
  /** Accepted sockets whose first bytes have not come yet (`sniff`): closed by `close()`. */
  private readonly sniffing = new Set<Socket>();
  private listening = false;
  private readonly closingController = new AbortController();
  /** Wrong-protocol log lines by protocol: when the last went out (epoch ms), and how many were left out since. */
  private readonly foreignLog = new Map<string, { at: number; unlogged: number }>();
  private boundAddress: string | undefined;
  private closing = false;
  /** Called when the last connection closes during `close()`. */
  private drainedWaiters: Array<() => void> = [];
  /** Connections whose parked calls `onWritable` is starting now (it does not re-enter). */
  private readonly starting = new Set<ServerConnection<InboundCall>>();
  /** The size a reply is expected to have (bytes), shared by the connections (server-connection.ts). */
  private readonly replyEstimate = { bytes: INITIAL_REPLY_ESTIMATE_BYTES };
  private readonly maxQueuedResponseBytes: number;
  /** The limits and settings every connection of this server shares (made on the first connection). */
  private connectionLimits: ConnectionLimits | undefined;
  private connectionOptions: ConnectionOptions | undefined;
  private readonly bufferBudgetBytes: number;
  private readonly frameTimeoutMs: number;
  private readonly idleTimeoutMs: number;
  private sweepTimer: NodeJS.Timeout | undefined;
  /** The ticket verifier (`ServerOptions.tickets`), or undefined when tickets are not checked. */
  readonly ticketVerifier: TicketVerifier | undefined;

  /**
   * @param options - see `ServerOptions`.
   * @throws ConfigError when an overload option is out of range.
   */
  constructor(options: ServerOptions = {}) {
    this.maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    this.interceptors = options.interceptors ?? [];
    this.streamInterceptors = options.streamInterceptors ?? [];
    const logger = (this.logger = options.logger ?? { error: (m, e) => console.error(m, e) });
    const now = (this.now = options.now ?? Date.now);
    this.observer = options.observer;
    if (options.tls !== undefined && options.transport !== undefined) throw configErrors.INVALID_OPTION('tls', 'not with transport', 'both');
    this.transport = options.tls !== undefined ? tlsServerTransport(options.tls) : (options.transport ?? tcpTransport);
    this.grpc = (options.grpc ?? true) && this.transport === tcpTransport;
    if (options.grpcPort !== undefined && (!Number.isInteger(options.grpcPort) || options.grpcPort < 0 || options.grpcPort > 65535)) throw configErrors.INVALID_PORT(options.grpcPort);
    if (options.grpcPort !== undefined && options.transport !== undefined) throw configErrors.INVALID_OPTION('grpcPort', 'not with transport (only with TCP or tls)', options.grpcPort);
    this.grpcPort = options.grpcPort;
    this.tls = options.tls;
    const ov = options.overload === false ? undefined : (options.overload ?? {});
    const maxInflight = ov?.maxInflight ?? Infinity;
    const maxMemoryFraction = ov?.maxMemoryFraction ?? 0.9;
    const sliceMs = ov?.sliceMs ?? 5;
    const defaultPriority = ov?.defaultPriority ?? DEFAULT_BUSINESS_PRIORITY;
    if (!(maxInflight >= 1)) throw configErrors.INVALID_OPTION('overload.maxInflight', '>= 1', maxInflight);
    if (!(maxMemoryFraction > 0 && maxMemoryFraction <= 1)) throw configErrors.INVALID_OPTION('overload.maxMemoryFraction', 'in (0, 1]', maxMemoryFraction);
    if (!(sliceMs > 0)) throw configErrors.INVALID_OPTION('overload.sliceMs', '> 0 ms', sliceMs);
    checkPriority(defaultPriority, 'overload.defaultPriority');
    this.maxQueuedResponseBytes = options.maxQueuedResponseBytes ?? DEFAULT_MAX_QUEUED_RESPONSE_BYTES;
    this.bufferBudgetBytes = options.bufferBudgetBytes ?? Math.floor(getHeapStatistics().heap_size_limit / 4);
    this.frameTimeoutMs = options.frameTimeoutMs ?? DEFAULT_FRAME_TIMEOUT_MS;
    this.idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    if (!(this.maxQueuedResponseBytes >= 1)) throw configErrors.INVALID_OPTION('maxQueuedResponseBytes', '>= 1 byte', this.maxQueuedResponseBytes);
    if (!(this.bufferBudgetBytes >= 1)) throw configErrors.INVALID_OPTION('bufferBudgetBytes', '>= 1 byte', this.bufferBudgetBytes);
    if (!(this.frameTimeoutMs > 0)) throw configErrors.INVALID_OPTION('frameTimeoutMs', '> 0 ms', this.frameTimeoutMs);
    if (!(this.idleTimeoutMs > 0)) throw configErrors.INVALID_OPTION('idleTimeoutMs', '> 0 ms', this.idleTimeoutMs);
    const maxStreamsPerConnection = options.maxStreamsPerConnection ?? DEFAULT_MAX_STREAMS_PER_CONNECTION;
    if (!(Number.isInteger(maxStreamsPerConnection) && maxStreamsPerConnection >= 1)) {
      throw configErrors.INVALID_OPTION('maxStreamsPerConnection', 'an integer >= 1', maxStreamsPerConnection);
    }
    this.maxStreamsPerConnection = maxStreamsPerConnection;
    const fastReject = (this.fastReject =
      ov === undefined
        ? undefined
        : new FastReject({ ...ov, dryRun: ov.dryRun ?? false, maxInflight, maxMemoryFraction, onWindow: ov.onWindow }, now, (m) => logger.error(m), options.observer));
    const admissionLevel = fastReject === undefined ? () => undefined : () => fastReject.advertisedLevel;
    const tickets =
      options.tickets === undefined
        ? undefined
        : {
            verifier: options.tickets.keys instanceof TicketVerifier ? options.tickets.keys : new TicketVerifier(options.tickets.keys, { now }),
            required: options.tickets.required !== false,
          };
    this.ticketVerifier = tickets?.verifier;
    this.decoder = new RequestDecoder(
      this.methods,
      { defaultPriority, userIdKey: ov?.userIdKey ?? DEFAULT_USER_ID_KEY, maxStreamsPerConnection, tickets },
      admissionLevel,
      options.observer,
      fastReject === undefined ? undefined : (business, user) => fastReject.arrivedExpired(business, user),
    );
    this.dispatcher = new Dispatcher({ maxFrameBytes: this.maxFrameBytes, logger, observer: options.observer, now, admissionLevel });
    if (fastReject !== undefined) {
      const scheduler = (this.scheduler = new Scheduler(sliceMs, now, {
        start: (c, t, inQueue, queued) => {
          fastReject.started(c.decoded.queued + inQueue, queued, c.decoded.header.d, c.decoded.business, c.decoded.user);
          const decoded = inQueue > 0 ? { ...c.decoded, queued: c.decoded.queued + inQueue, waited: c.decoded.waited + inQueue } : c.decoded;
          this.startCall(c.sc, c.callId, decoded, c.body, c.arrival, t);
        },
        expired: (c, inQueue) => {
          fastReject.expired(c.decoded.queued + inQueue, scheduler.size, c.decoded.business, c.decoded.user);
          c.sc.refuse(c.callId, fastReject.advertisedLevel, errors.DEADLINE_WHILE_QUEUED, Math.round(c.decoded.waited + inQueue));
          this.observer?.rejected(c.decoded.header.m, 'expired', false);
          c.sc.endIfDrained();
        },
        maxWaitMs: (c) => fastReject.maxWaitMs(c.decoded.header.d),
        dropped: (c, inQueue) => {
          const queued = c.decoded.queued + inQueue;
          fastReject.dropped(queued, scheduler.size, c.decoded.business, c.decoded.user);
          c.sc.refuse(c.callId, fastReject.advertisedLevel, errors.OVERLOADED_QUEUE_WAIT, Math.round(queued), Math.round(fastReject.maxWaitMs(c.decoded.header.d)));
          this.observer?.rejected(c.decoded.header.m, 'queue', false);
          c.sc.endIfDrained();
        },
        refused: (c, level) => {
          c.sc.refuse(c.callId, fastReject.advertisedLevel, errors.OVERLOADED_PRIORITY, level, fastReject.level);
          this.observer?.rejected(c.decoded.header.m, 'priority', false);
          c.sc.endIfDrained();
        },
      }));
      fastReject.queue = scheduler;
    }
    if (options.builtinServices !== false) {
      const index = new DescriptorIndex(this);
      this.addService(new Health(this));
      this.addService(new Reflection(this, index));
      this.addService(new GrpcHealth(this));
      this.addService(new GrpcReflectionV1(index));
      this.addService(new GrpcReflectionV1Alpha(index));
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

  /** Aborted when the server begins shutting down (`close()`): long-lived handlers such as health watchers end on it. */
  get closingSignal(): AbortSignal {
    return this.closingController.signal;
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
    if (this.grpcPort !== undefined) {
      const h2 = this.grpcPortServer();
      try {
        await new Promise<void>((resolve, reject) => {
          h2.once('error', reject);
          h2.listen(this.grpcPort, host, () => {
            h2.off('error', reject);
            resolve();
          });
        });
      } catch (err) {
        listener.close();
        this.listener = undefined;
        this.boundAddress = undefined;
        this.grpcListener = undefined;
        this.listening = false;
        throw err;
      }
      h2.on('error', (err) => this.logger.error('svrkit server: gRPC listener error', err));
      const a = h2.address() as AddressInfo;
      this.grpcBound = formatAddress(a.address, a.port);
    }
    if (this.closing) {
      // close() ran while we were binding: stop listening, start nothing.
      listener.close();
      this.grpcListener?.close();
      return;
    }
    this.fastReject?.start();
    this.sweepTimer = setInterval(() => this.sweep(), SWEEP_MS).unref();
  }

  /** Closes connections whose frame is taking too long to arrive, and idle ones (GOAWAY saying why). */
  private sweep(): void {
    const now = this.now();
    for (const b of this.grpcSessions) b.expire(now, this.frameTimeoutMs);
    for (const sc of this.connections) {
      const c = sc.conn;
      if (c.ending) continue;
      if (c.partialSince > 0 && !c.readPaused && now - c.partialSince > this.frameTimeoutMs) {
        c.abort(errors.FRAME_TIMEOUT(now - c.partialSince, this.frameTimeoutMs));
      } else if (c.stalledSince > 0 && now - c.stalledSince > this.frameTimeoutMs) {
        // Over its cap, and the client took none of it for that long: it does not read.
        c.abort(errors.CLIENT_NOT_READING(c.queuedBytes, now - c.stalledSince, this.frameTimeoutMs));
      } else if (sc.idle && sc.streams === 0 && c.queuedBytes === 0 && now - c.lastFrameAt > this.idleTimeoutMs) {
        c.abort(errors.CONNECTION_IDLE(now - c.lastFrameAt, this.idleTimeoutMs));
      }
    }
  }

  /** The address of the gRPC-only port (`ServerOptions.grpcPort`) after `listen`, or undefined without one. */
  get grpcAddress(): string | undefined {
    return this.grpcBound;
  }

  /** The HTTP/2 server of same-port gRPC sessions (plaintext; sockets come from `sniff`). */
  private http2(): Http2Server {
    if (this.h2 !== undefined) return this.h2;
    const h2 = createHttp2Server({ settings: { maxConcurrentStreams: this.maxStreamsPerConnection } });
    h2.on('session', (session) => this.onGrpcSession(session, undefined));
    h2.on('sessionError', (err, session) => this.onGrpcSessionError(err, session));
    return (this.h2 = h2);
  }

  /** The HTTP/2 server for `grpcPort`: over TLS (ALPN h2) with the server's certificates when `tls` is set. */
  private grpcPortServer(): Http2Server | Http2SecureServer {
    const settings = { maxConcurrentStreams: this.maxStreamsPerConnection };
    const tls = this.tls;
    const h2 =
      tls === undefined
        ? createHttp2Server({ settings })
        : createHttp2SecureServer({ ...tlsServerSettings(tls), settings, allowHTTP1: false });
    h2.on('session', (session: ServerHttp2Session) => this.onGrpcSession(session, tls === undefined ? undefined : () => tlsPeerIdentity(session.socket as TLSSocket)));
    h2.on('sessionError', (err, session) => this.onGrpcSessionError(err, session));
    // A failed handshake (a wrong or missing certificate, not TLS at all) ends that socket only, and is logged.
    h2.on('tlsClientError', (err: Error, socket: { destroy(): void; remoteAddress?: string; remotePort?: number }) => {
      this.logger.error(`svrkit server: ${formatAddress(socket.remoteAddress, socket.remotePort)}: TLS handshake on the gRPC port failed (${err.message}); connection closed`);
      socket.destroy();
    });
    return (this.grpcListener = h2);
  }

  /**
   * A gRPC session: bridged to a svrkit connection (`GrpcSessionBridge`) and accepted like any
   * other connection.
   */
  private onGrpcSession(session: ServerHttp2Session, peerIdentity: (() => ReturnType<typeof tlsPeerIdentity>) | undefined): void {
    if (this.closing) {
      // Not at once: node:http2 feeds a shared-port session the bytes read before it existed on
      // the next tick, and that throws (uncaught) for a session destroyed by then.
      setImmediate(() => session.destroy());
      return;
    }
    const bridge = new GrpcSessionBridge(session, {
      maxFrameBytes: this.maxFrameBytes,
      kindOf: (method) => this.methods.get(method)?.kind,
      now: this.now,
      admitLarge: (bytes) => {
        const used = this.bufferedBytes;
        if (used <= this.bufferBudgetBytes) return undefined;
        this.observer?.rejected('', 'buffers', false);
        return errors.OVERLOADED_BUFFERS(bytes, used - bytes, this.bufferBudgetBytes);
      },
      peerIdentity,
      pingTimeoutMs: this.frameTimeoutMs,
      log: (m, e) => this.logger.error(m, e),
    });
    this.grpcSessions.add(bridge);
    this.grpcPeers.set(session, formatAddress(bridge.remoteAddress, bridge.remotePort));
    bridge.once('close', () => this.grpcSessions.delete(bridge));
    this.acceptConnection(bridge);
  }

  /** An HTTP/2 session that failed (a bad preface or frame from the client): logged with the client's address, unless the client just went away. */
  private onGrpcSessionError(err: Error & { code?: string }, session: ServerHttp2Session | undefined): void {
    if (err.code === 'ECONNRESET' || err.code === 'EPIPE') return;
    const peer = (session !== undefined ? this.grpcPeers.get(session) : undefined) ?? formatAddress(session?.socket?.remoteAddress, session?.socket?.remotePort);
    this.logger.error(`svrkit server: ${peer}: a gRPC (HTTP/2) session failed`, err);
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
    return this.dispatcher.inflight;
  }

  /** Calls admitted and waiting in the scheduling stage for their turn (0 when overload control is off: no scheduling stage). */
  get queuedCalls(): number {
    return this.scheduler?.size ?? 0;
  }

  /**
   * FastReject's admission level: calls whose priority level (`business * 128 + user`, lower is
   * more important) is above it are refused. `admissionLevels - 1` (16383) admits everything, as
   * does a server with overload control off.
   */
  get admissionLevel(): number {
    return this.fastReject?.level ?? ADMIT_ALL;
  }

  /** The number of priority levels (16384). */
  get admissionLevels(): number {
    return LEVELS;
  }

  /**
   * Bytes this server holds for its connections now, what `bufferBudgetBytes` bounds: frames
   * partly received (their announced sizes), responses waiting for clients (in the server and the
   * sockets), requests parked for clients that do not read, and requests waiting in FastReject's
   * queue (counted as their frames plus `WAITING_CALL_OVERHEAD_BYTES` each). Sums over the
   * connections (a loop: read it per scrape, not per call).
   */
  get bufferedBytes(): number {
    let used = 0;
    for (const c of this.connections) used += c.conn.pendingFrameBytes + c.conn.queuedBytes + c.parkedBytes + c.waitingBytes;
    for (const b of this.grpcSessions) used += b.pendingRequestBytes;
    return used;
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
      this.closingController.abort();
      this.fastReject?.stop();
      if (this.sweepTimer !== undefined) clearInterval(this.sweepTimer);
      this.listener?.close();
      this.h2?.close();
      this.grpcListener?.close();
      // A connection that has not said which protocol it speaks has no call to finish.
      for (const socket of this.sniffing) socket.destroy();
      for (const c of this.connections) c.goaway(errors.SERVER_SHUTTING_DOWN());
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
      this.dispatcher.endAll(c, cut);
      c.conn.destroy();
    }
    await Promise.all(closed);
  }


  /** @internal ConnectionOwner: a frame of a call. REQUEST goes through the stages; the rest to dispatch. */
  onCallFrame(sc: ServerConnection<InboundCall>, kind: number, callId: number, header: Buffer, body: Buffer): void {
    if (kind !== FrameKind.REQUEST) {
      // A call cancelled while it waited for its handler leaves the queue unstarted.
      if (kind === FrameKind.CANCEL && (this.scheduler?.cancel(sc, callId) === true || this.unpark(sc, callId))) {
        sc.endIfDrained();
        return;
      }
      this.dispatcher.onCallFrame(sc, kind, callId, header, body);
      return;
    }
    // Arrival: when the chunk holding this frame was read; start: now, as the handler is about to run.
    const arrival = sc.conn.chunkAt;
    const now = this.now();
    const fastReject = this.fastReject;
    if (sc.goawayAcked) {
      // The client saw GOAWAY and still sent a call: refuse it unprocessed, so it may go elsewhere.
      sc.refuse(callId, fastReject?.advertisedLevel, errors.REFUSED_AFTER_GOAWAY);
      this.observer?.rejected('', 'goaway', false);
      return;
    }
    const decoded = this.decoder.header(sc, callId, header, arrival, now);
    if (decoded === undefined) return;
    if (fastReject === undefined) {
      this.startCall(sc, callId, decoded, body, arrival, now);
      return;
    }
    // FastReject, before the body is decoded: refusing costs a header decode and one frame.
    if (!fastReject.admit(sc, callId, decoded.header.m, this.dispatcher.inflight + this.scheduler!.size, decoded.business, decoded.user, now)) return;
    // Unary calls may wait in the scheduler's queue; streams start as they arrive (their
    // messages need the call in place).
    if (decoded.registered.kind === 0 && !this.scheduler!.submit(sc, callId, decoded, body, header.length, arrival, now)) return;
    fastReject.started(decoded.queued, this.scheduler!.size, decoded.header.d, decoded.business, decoded.user);
    this.startCall(sc, callId, decoded, body, arrival, now);
  }

  /**
   * Decodes an admitted call's body and hands it to dispatch. A unary call is parked instead, to
   * start later in arrival order, while its client has more than the cap of responses waiting (it
   * does not read), while calls of its connection are parked, or when the replies of the calls
   * its connection started in this event-loop turn would pass the cap (`repliesFull`).
   */
  private startCall(sc: ServerConnection<InboundCall>, callId: number, decoded: DecodedHeader, body: Buffer, arrival: number, now: number): void {
    if (decoded.registered.kind === 0 && (sc.conn.overCap || sc.parkedCount > 0 || sc.repliesFull)) {
      const copy = Buffer.from(body); // the frame's buffer is reused
      sc.parked.set(callId, { bytes: copy.length, start: (at: number) => this.startParked(sc, callId, decoded, copy, arrival, at - now) });
      sc.parkedBytes += copy.length;
      // Reading stops while calls are parked (over the cap, the connection stopped it already).
      sc.conn.holdReads('parked');
      return;
    }
    if (decoded.registered.kind === 0) sc.startedUnary();
    const request = this.decoder.body(sc, callId, decoded, body);
    if (request === REFUSED) {
      sc.endIfDrained(); // it may have been the last call a draining connection waited for
      return;
    }
    this.dispatcher.start(sc, callId, decoded, request, arrival, now);
  }

  /**
   * @internal ConnectionOwner: half of the replies waiting for the client have drained, a call
   * ended, or a new event-loop turn began: starts the parked calls in arrival order while they fit
   * (not over the cap, and not `repliesFull`; a parked call whose deadline passed is answered
   * DEADLINE_EXCEEDED, unprocessed), and reads again once none is left. Reading was paused while
   * they were parked, so they are the calls of the few chunks read before.
   */
  onWritable(sc: ServerConnection<InboundCall>): void {
    if (this.starting.has(sc)) return; // a parked call that ended at once, inside this loop
    if (sc.parkedCount === 0) {
      sc.endIfDrained();
      return;
    }
    this.starting.add(sc);
    try {
      for (const [callId, p] of sc.parked) {
        if (sc.conn.overCap || sc.conn.ending || sc.repliesFull) break;
        sc.deleteParked(callId);
        sc.parkedBytes -= p.bytes;
        sc.startedUnary();
        p.start(this.now());
      }
    } finally {
      this.starting.delete(sc);
    }
    if (sc.parkedCount === 0) sc.conn.releaseReads('parked');
    sc.endIfDrained();
  }

  /** Drops a parked call (its client cancelled it): true when it was parked. */
  private unpark(sc: ServerConnection<InboundCall>, callId: number): boolean {
    const p = sc.deleteParked(callId);
    if (p === undefined) return false;
    sc.parkedBytes -= p.bytes;
    if (sc.parkedCount === 0) sc.conn.releaseReads('parked');
    return true;
  }

  /** Starts a call that was parked for `held` ms, or answers it DEADLINE_EXCEEDED (unprocessed) when its deadline passed meanwhile. */
  private startParked(sc: ServerConnection<InboundCall>, callId: number, parked: DecodedHeader, body: Buffer, arrival: number, held: number): void {
    const now = this.now();
    const waited = parked.waited + held;
    const d = parked.header.d;
    if (d !== undefined && waited >= d) {
      sc.refuse(callId, this.fastReject?.advertisedLevel, errors.DEADLINE_WHILE_QUEUED, Math.round(waited));
      this.observer?.rejected(parked.header.m, 'expired', false);
      return;
    }
    const decoded = held > 0 ? { ...parked, queued: parked.queued + held, waited } : parked;
    const request = this.decoder.body(sc, callId, decoded, body);
    if (request !== REFUSED) this.dispatcher.start(sc, callId, decoded, request, arrival, now);
  }

  /**
   * @internal ConnectionOwner: may a large frame be buffered? It is while the bytes of partly
   * received frames, of responses waiting for clients and of parked and queued requests, over all
   * connections, leave room for it in `bufferBudgetBytes`. Else a REQUEST is refused
   * (RESOURCE_EXHAUSTED, not processed) and skipped, a stream MESSAGE fails its call and is
   * skipped, and any other kind closes the connection (GOAWAY).
   */
  admitLarge(sc: ServerConnection<InboundCall>, kind: number, callId: number, size: number): boolean {
    const used = this.bufferedBytes;
    if (used + size <= this.bufferBudgetBytes) return true;
    if (kind === FrameKind.REQUEST) {
      sc.refuse(callId, this.fastReject?.advertisedLevel, errors.OVERLOADED_BUFFERS, size, used, this.bufferBudgetBytes);
      this.observer?.rejected('', 'buffers', false);
    } else if (kind === FrameKind.MESSAGE) {
      // A stream's message that does not fit fails its call; other kinds close the connection.
      this.dispatcher.failCall(sc, callId, errors.OVERLOADED_BUFFERS(size, used, this.bufferBudgetBytes));
    }
    return false;
  }

  /** @internal ConnectionOwner: a client that speaks another protocol (HTTP/2 with gRPC off, HTTP/1.x, TLS): logged with its address. */
  onForeignProtocol(sc: ServerConnection<InboundCall>, description: string): void {
    this.logForeign(description, `svrkit server: ${formatAddress(sc.conn.socket.remoteAddress, sc.conn.socket.remotePort)}: ${description}; connection closed`);
  }

  /**
   * Logs a wrong-protocol client, at most one line a second per protocol (a port scanner or an
   * HTTP health checker would flood the log): the next line says how many were left out.
   * @param kind - which protocol (lines of one kind share the limit); `line` - the line.
   */
  private logForeign(kind: string, line: string): void {
    const now = this.now();
    let entry = this.foreignLog.get(kind);
    if (entry === undefined) this.foreignLog.set(kind, (entry = { at: -Infinity, unlogged: 0 }));
    if (now - entry.at < 1000) {
      entry.unlogged++;
      return;
    }
    entry.at = now;
    const more = entry.unlogged;
    entry.unlogged = 0;
    this.logger.error(more > 0 ? `${line} (and ${more} more such connections since the last line)` : line);
  }

  /** @internal ConnectionOwner: a request MESSAGE over the maximum size. */
  onOversizedMessage(sc: ServerConnection<InboundCall>, callId: number, size: number): void {
    this.dispatcher.onOversizedMessage(sc, callId, size);
  }

  /** @internal ConnectionOwner: a connection's socket closed. */
  onClosed(sc: ServerConnection<InboundCall>): void {
    this.connections.delete(sc);
    // Its waiting calls leave the queue: they would only count as load, and be skipped when served.
    this.scheduler?.dropConnection(sc);
    if (this.closing && this.connections.size === 0 && this.drainedWaiters.length > 0) {
      const waiters = this.drainedWaiters;
      this.drainedWaiters = [];
      for (const w of waiters) w();
    }
    this.dispatcher.endAll(sc, errors.CLIENT_DISCONNECTED());
  }

  private onConnection(socket: ByteStream): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    if (this.grpc && socket instanceof Socket) this.sniff(socket);
    else this.acceptConnection(socket);
  }

  /**
   * Reads a TCP connection's first bytes: HTTP/2's client preface (`PRI * HTTP/2.0...`) makes it
   * a gRPC session, anything else a svrkit connection (whose first four bytes, a frame's length,
   * would have to be 1.3 GB to read `PRI `). An HTTP/1.x request or a TLS handshake is neither:
   * it is logged and answered in its own protocol where it has one (`wrongProtocol`). A
   * connection that sends nothing for `frameTimeoutMs` is taken as svrkit's (an HTTP/2 client
   * sends its preface at once), whose idle timeout then runs.
   */
  private sniff(socket: Socket): void {
    let first: Buffer | undefined;
    const timer = setTimeout(() => {
      done();
      if (this.closing) socket.destroy();
      else this.takeAsSvrkit(socket, first);
    }, this.frameTimeoutMs);
    timer.unref();
    this.sniffing.add(socket);
    const done = (): void => {
      this.sniffing.delete(socket);
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      socket.off('error', ignoreError);
      socket.pause();
    };
    const onClose = (): void => {
      clearTimeout(timer);
      this.sniffing.delete(socket);
    };
    const onData = (chunk: Buffer): void => {
      first = first === undefined ? chunk : Buffer.concat([first, chunk]);
      const n = Math.min(first.length, HTTP2_PREFACE.length);
      const h2 = first.subarray(0, n).equals(HTTP2_PREFACE.subarray(0, n));
      if (h2 && first.length < 4) return; // too short to tell yet
      const detected = h2 ? undefined : detectForeignProtocol(first);
      if (detected === 'more') return;
      const other = detected === 'TLS' ? 'TLS' : detected === 'HTTP/1.x request' ? 'HTTP/1.x' : undefined;
      done();
      if (this.closing) {
        socket.destroy();
        return;
      }
      if (h2) {
        // node:http2 reads the socket natively, and takes the bytes already read (put back
        // here) from its buffer first (nodejs/node#41185, in every Node >= 20).
        socket.unshift(first);
        this.http2().emit('connection', socket);
        return;
      }
      if (other !== undefined) {
        this.wrongProtocol(socket, other, first);
        return;
      }
      this.takeAsSvrkit(socket, first);
    };
    socket.on('error', ignoreError);
    socket.on('close', onClose);
    socket.on('data', onData);
  }

  /** Takes over a sniffed socket as a svrkit connection, its first bytes put back. */
  private takeAsSvrkit(socket: Socket, first: Buffer | undefined): void {
    if (first !== undefined) socket.unshift(first);
    this.acceptConnection(socket);
    socket.resume();
  }

  /**
   * A client that speaks neither svrkit nor HTTP/2: logged with its address, told so in its own
   * protocol (an HTTP/1.x request gets a 400 naming what the port speaks; a TLS handshake, a
   * handshake-failure alert), and closed.
   */
  private wrongProtocol(socket: Socket, protocol: 'HTTP/1.x' | 'TLS', first: Buffer): void {
    const peer = formatAddress(socket.remoteAddress, socket.remotePort);
    const what = protocol === 'TLS' ? 'a TLS handshake (this port is plaintext)' : `an HTTP/1.x request (${JSON.stringify(first.subarray(0, Math.min(first.indexOf(13) >= 0 ? first.indexOf(13) : 64, 64)).toString('latin1'))})`;
    this.logForeign(protocol, `svrkit server: ${peer} sent ${what}; this port speaks svrkit's protocol and gRPC (HTTP/2 with prior knowledge): connection closed`);
    socket.on('error', ignoreError);
    if (protocol === 'TLS') {
      // A fatal handshake_failure alert (RFC 8446 section 6): the client reports a failed handshake.
      socket.end(Buffer.from([0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x28]));
    } else {
      const body = "svrkit: this port speaks svrkit's protocol and gRPC over HTTP/2 (prior knowledge, no Upgrade); HTTP/1.x is not served\n";
      socket.end(`HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
    }
    setTimeout(() => socket.destroy(), PROTOCOL_ERROR_LINGER_MS).unref();
    socket.resume();
  }

  /** Takes over an accepted byte stream as a svrkit connection. */
  private acceptConnection(socket: ByteStream): void {
    // Shared by every connection of this server (a server holds one connection per client).
    const limits = (this.connectionLimits ??= { maxFrameBytes: this.maxFrameBytes, maxQueuedBytes: this.maxQueuedResponseBytes, replyEstimate: this.replyEstimate });
    const options = (this.connectionOptions ??= ServerConnection.connectionOptions(limits, this.now));
    let sc: ServerConnection<InboundCall>;
    try {
      sc = new ServerConnection<InboundCall>(socket, this, limits, options);
    } catch (err) {
      // A stream the connection cannot take over (a custom transport's) is closed, not fatal.
      socket.on('error', ignoreError);
      socket.destroy();
      this.logger.error('svrkit server: cannot take over an accepted connection', err);
      return;
    }
    this.connections.add(sc);
  }
}

/** An 'error' listener that only keeps an error from being unhandled (it is reported elsewhere). */
function ignoreError(): void {}

/** How long a wrongly spoken-to client has to read its answer before its socket is destroyed (ms). */
const PROTOCOL_ERROR_LINGER_MS = 1000;


