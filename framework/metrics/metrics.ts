/**
 * Prometheus metrics for svrkit servers and channels (prom-client), named after
 * grpc-ecosystem/go-grpc-prometheus: `SvrkitMetrics` is a `ServerObserver` (`metrics.server`) and a
 * `ClientObserver` (`metrics.client`), reads in-flight calls and the admission level of watched
 * servers at scrape time, and serves `GET /metrics`.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ClientObserver, ThrottleReason } from '../client/observer.js';
import type { RejectReason, ServerObserver } from '../server/observer.js';
import { statusName } from '../wire/status.js';

/** Number of FastReject admission levels (0..16383) a server reports when it does not say. */
export const DEFAULT_ADMISSION_LEVELS = 16384;

/** Buckets of the handling-time histograms (s): 100 µs to 10 s. */
export const HANDLING_BUCKETS: readonly number[] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Buckets of the queueing-time histogram (s): 0.5 ms to 2 s, for ms-scale queueing. */
export const QUEUEING_BUCKETS: readonly number[] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2];

/**
 * Distinct methods tracked per direction by default; calls of further methods are counted under
 * `service=""`, `method="_other"` (a bound on label cardinality).
 */
export const DEFAULT_MAX_METHODS = 1000;

/** What `watchServer` reads from a server at scrape time (a svrkit `Server` fits). */
export interface WatchedServer {
  /** Calls currently being handled. */
  readonly inflightCalls: number;
  /** The highest priority level admitted (0..admissionLevels-1); absent on a server without admission control. */
  readonly admissionLevel?: number;
  /** How many admission levels there are (default 16384). */
  readonly admissionLevels?: number;
  /** Bytes it holds for its connections (a svrkit `Server`'s `bufferedBytes`); absent: not reported. */
  readonly bufferedBytes?: number;
}

/** Options of `SvrkitMetrics`. */
export interface SvrkitMetricsOptions {
  /** Register prom-client's default process metrics (CPU, memory, GC, event-loop lag). Default true; turn off when the registry already has them. */
  defaultMetrics?: boolean;
  /** Distinct methods tracked per direction (see `DEFAULT_MAX_METHODS`). Default 1000. */
  maxMethods?: number;
}

/** A running `/metrics` endpoint. */
export interface MetricsEndpoint {
  /** The bound address, `host:port` (IPv6 hosts in brackets). */
  readonly address: string;
  /** The bound port. */
  readonly port: number;
  /** The scrape URL, `http://<address>/metrics`. */
  readonly url: string;
  /** Stops listening and closes open connections; resolves once closed. Idempotent. */
  close(): Promise<void>;
}

type Inc = { inc(value?: number): void };
type Observe = { observe(value: number): void };

/** Per-method server state: split labels and cached label children. */
interface ServerMethod {
  readonly service: string;
  readonly method: string;
  /** Counter children by status code (0..16). */
  readonly handled: Array<Inc | undefined>;
  readonly handling: Observe;
  readonly queueing: Observe;
  /** Counter children by `${reason}/${dryRun}`. */
  readonly rejected: Map<string, Inc>;
  /** Stream messages sent and received (children made on first use). */
  sent?: Inc;
  received?: Inc;
}

/** Per-method client state. */
interface ClientMethod {
  readonly service: string;
  readonly method: string;
  readonly handled: Array<Inc | undefined>;
  readonly handling: Observe;
  readonly retries: Inc;
  readonly throttled: Map<ThrottleReason, Inc>;
  /** Stream messages sent and received (children made on first use). */
  sent?: Inc;
  received?: Inc;
}

const OTHER = '\u0000other';

/**
 * Splits `pkg.Service/Method` into `{ service: 'pkg.Service', method: 'Method' }`; a name without
 * `/` gives `service: ''` and the whole name as `method`.
 */
export function splitMethodName(fullName: string): { service: string; method: string } {
  const i = fullName.lastIndexOf('/');
  return i < 0 ? { service: '', method: fullName } : { service: fullName.slice(0, i), method: fullName.slice(i + 1) };
}

/** Status code to the array index used for cached children; codes outside 0..16 count as UNKNOWN (2). */
function codeIndex(code: number): number {
  return code >= 0 && code <= 16 && Number.isInteger(code) ? code : 2;
}

/**
 * Prometheus metrics of the servers and channels in this process.
 *
 * Metrics (all in `registry`):
 * - `svrkit_server_handled_total{service,method,code}` counter: calls that reached a handler, by
 *   status name (`OK`, `NOT_FOUND`, ...);
 * - `svrkit_server_handling_seconds{service,method}` histogram: handler start to end (s);
 * - `svrkit_server_queueing_seconds{service,method}` histogram: frame arrival to handler start (s);
 * - `svrkit_server_rejected_total{service,method,reason,dry_run}` counter: calls refused before
 *   a handler (`reason` `priority`, `inflight`, `memory`, `queue`, `goaway` or `expired`; `dry_run` `"true"` when the call was
 *   only counted and served anyway);
 * - `svrkit_server_inflight_calls` gauge: calls being handled by the watched servers (sum);
 * - `svrkit_server_admission_level` gauge: the lowest admission level of the watched servers
 *   (levels-1, e.g. 16383, = admit everything; a server without admission control reports that);
 * - `svrkit_server_admission_levels` gauge: the number of admission levels (16384);
 * - `svrkit_server_buffered_bytes` gauge: bytes the watched servers hold for their connections
 *   (`Server.bufferedBytes`: partly received frames, responses waiting, requests parked or queued);
 * - `svrkit_client_handled_total{service,method,code}` counter: channel calls, after all attempts;
 * - `svrkit_client_handling_seconds{service,method}` histogram: a call's start to end (s);
 * - `svrkit_client_retries_total{service,method}` counter: retries and hedged attempts sent;
 * - `svrkit_client_throttled_total{service,method,reason}` counter: calls or attempts not sent
 *   (`retry_budget`, `hedge_budget`, `adaptive`, `shed`);
 * - `svrkit_server_stream_messages_total{service,method,direction}` and
 *   `svrkit_client_stream_messages_total{service,method,direction}` counters: messages of
 *   streaming calls, `direction` `sent` or `received` from that side's point of view;
 * - prom-client's default process metrics (`process_*`, `nodejs_*`, including event-loop lag
 *   `nodejs_eventloop_lag_p50_seconds`/`_p90_`/`_p99_` over the time since the previous scrape),
 *   unless `defaultMetrics: false`.
 *
 * Observer calls cost a Map lookup and prom-client's increments: label children are cached per
 * method and code, and `pkg.Service/Method` is split once per method.
 */
export class SvrkitMetrics {
  /** The registry every metric is in. */
  readonly registry: Registry;
  /** Pass as `ServerOptions.observer`. */
  readonly server: ServerObserver;
  /** Pass as `ChannelOptions.observer` (or make it the default client observer). */
  readonly client: ClientObserver;

  private readonly maxMethods: number;
  private readonly serverMethods = new Map<string, ServerMethod>();
  private readonly clientMethods = new Map<string, ClientMethod>();
  private readonly watched = new Set<WatchedServer>();

  private readonly serverHandled: Counter<'service' | 'method' | 'code'>;
  private readonly serverHandling: Histogram<'service' | 'method'>;
  private readonly serverQueueing: Histogram<'service' | 'method'>;
  private readonly serverRejected: Counter<'service' | 'method' | 'reason' | 'dry_run'>;
  private readonly clientHandled: Counter<'service' | 'method' | 'code'>;
  private readonly clientHandling: Histogram<'service' | 'method'>;
  private readonly clientRetries: Counter<'service' | 'method'>;
  private readonly clientThrottled: Counter<'service' | 'method' | 'reason'>;
  private readonly serverStreamMessages: Counter<'service' | 'method' | 'direction'>;
  private readonly clientStreamMessages: Counter<'service' | 'method' | 'direction'>;

  /**
   * @param registry - where to register the metrics; default a new `Registry` (not prom-client's
   *   global one).
   * @param options - see `SvrkitMetricsOptions`.
   * @throws Error when `registry` already holds a metric of the same name (e.g. a second
   *   `SvrkitMetrics` on one registry, or default metrics registered twice: pass
   *   `defaultMetrics: false`), or `maxMethods` is not a positive integer.
   */
  constructor(registry: Registry = new Registry(), options: SvrkitMetricsOptions = {}) {
    this.registry = registry;
    const maxMethods = options.maxMethods ?? DEFAULT_MAX_METHODS;
    if (!Number.isInteger(maxMethods) || maxMethods < 1) throw new Error(`maxMethods must be a positive integer, got ${maxMethods}`);
    this.maxMethods = maxMethods;
    const registers = [registry];

    this.serverHandled = new Counter({
      name: 'svrkit_server_handled_total',
      help: 'Calls that reached a handler and ended, by status code.',
      labelNames: ['service', 'method', 'code'],
      registers,
    });
    this.serverHandling = new Histogram({
      name: 'svrkit_server_handling_seconds',
      help: 'Time from handler start to the end of the call (seconds).',
      labelNames: ['service', 'method'],
      buckets: [...HANDLING_BUCKETS],
      registers,
    });
    this.serverQueueing = new Histogram({
      name: 'svrkit_server_queueing_seconds',
      help: 'Time from the arrival of the request frame to handler start (seconds).',
      labelNames: ['service', 'method'],
      buckets: [...QUEUEING_BUCKETS],
      registers,
    });
    this.serverRejected = new Counter({
      name: 'svrkit_server_rejected_total',
      help: 'Calls refused before any handler saw them (dry_run="true": counted only, served anyway).',
      labelNames: ['service', 'method', 'reason', 'dry_run'],
      registers,
    });
    const watched = this.watched;
    new Gauge({
      name: 'svrkit_server_inflight_calls',
      help: 'Calls being handled now (sum over the watched servers).',
      registers,
      collect() {
        let sum = 0;
        for (const s of watched) sum += s.inflightCalls;
        this.set(sum);
      },
    });
    new Gauge({
      name: 'svrkit_server_admission_level',
      help: 'Highest priority level admitted (lowest over the watched servers); admission_levels-1 admits everything.',
      registers,
      collect() {
        let level = Infinity;
        let levels = DEFAULT_ADMISSION_LEVELS;
        for (const s of watched) {
          if (s.admissionLevels !== undefined) levels = Math.max(levels, s.admissionLevels);
          if (s.admissionLevel !== undefined) level = Math.min(level, s.admissionLevel);
        }
        this.set(level === Infinity ? levels - 1 : level);
      },
    });
    new Gauge({
      name: 'svrkit_server_buffered_bytes',
      help: 'Bytes held for connections: partly received frames, responses waiting for clients, requests parked or queued (sum over the watched servers).',
      registers,
      collect() {
        let sum = 0;
        for (const s of watched) sum += s.bufferedBytes ?? 0;
        this.set(sum);
      },
    });
    new Gauge({
      name: 'svrkit_server_admission_levels',
      help: 'Number of admission levels (levels are 0..admission_levels-1).',
      registers,
      collect() {
        let levels = DEFAULT_ADMISSION_LEVELS;
        for (const s of watched) if (s.admissionLevels !== undefined) levels = Math.max(levels, s.admissionLevels);
        this.set(levels);
      },
    });

    this.clientHandled = new Counter({
      name: 'svrkit_client_handled_total',
      help: 'Channel calls that ended (after all attempts), by status code.',
      labelNames: ['service', 'method', 'code'],
      registers,
    });
    this.clientHandling = new Histogram({
      name: 'svrkit_client_handling_seconds',
      help: "Time from a call's start to its end, all attempts included (seconds).",
      labelNames: ['service', 'method'],
      buckets: [...HANDLING_BUCKETS],
      registers,
    });
    this.clientRetries = new Counter({
      name: 'svrkit_client_retries_total',
      help: 'Retries and hedged attempts sent (attempts after the first).',
      labelNames: ['service', 'method'],
      registers,
    });
    this.clientThrottled = new Counter({
      name: 'svrkit_client_throttled_total',
      help: 'Calls or attempts not sent: retry_budget, hedge_budget, adaptive (client-side throttle), shed (every instance sheds the priority).',
      labelNames: ['service', 'method', 'reason'],
      registers,
    });

    this.serverStreamMessages = new Counter({
      name: 'svrkit_server_stream_messages_total',
      help: 'Messages of streaming calls, by direction (sent: responses, received: requests).',
      labelNames: ['service', 'method', 'direction'],
      registers,
    });
    this.clientStreamMessages = new Counter({
      name: 'svrkit_client_stream_messages_total',
      help: 'Messages of streaming calls, by direction (sent: requests, received: responses).',
      labelNames: ['service', 'method', 'direction'],
      registers,
    });

    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: registry });

    this.server = {
      callEnded: (method: string, code: number, seconds: number, queueSeconds: number): void => {
        const m = this.serverMethod(method);
        const i = codeIndex(code);
        (m.handled[i] ??= this.serverHandled.labels(m.service, m.method, statusName(i))).inc();
        m.handling.observe(seconds);
        m.queueing.observe(queueSeconds);
      },
      rejected: (method: string, reason: RejectReason, dryRun: boolean): void => {
        const m = this.serverMethod(method);
        const key = dryRun ? `${reason}/true` : reason;
        let c = m.rejected.get(key);
        if (c === undefined) m.rejected.set(key, (c = this.serverRejected.labels(m.service, m.method, reason, dryRun ? 'true' : 'false')));
        c.inc();
      },
      streamMessage: (method: string, direction: 'sent' | 'received'): void => {
        const m = this.serverMethod(method);
        (m[direction] ??= this.serverStreamMessages.labels(m.service, m.method, direction)).inc();
      },
    };
    this.client = {
      callEnded: (method: string, code: number, seconds: number): void => {
        const m = this.clientMethod(method);
        const i = codeIndex(code);
        (m.handled[i] ??= this.clientHandled.labels(m.service, m.method, statusName(i))).inc();
        m.handling.observe(seconds);
      },
      retried: (method: string): void => {
        this.clientMethod(method).retries.inc();
      },
      throttled: (method: string, reason: ThrottleReason): void => {
        const m = this.clientMethod(method);
        let c = m.throttled.get(reason);
        if (c === undefined) m.throttled.set(reason, (c = this.clientThrottled.labels(m.service, m.method, reason)));
        c.inc();
      },
      streamMessage: (method: string, direction: 'sent' | 'received'): void => {
        const m = this.clientMethod(method);
        (m[direction] ??= this.clientStreamMessages.labels(m.service, m.method, direction)).inc();
      },
    };
  }

  /**
   * Reports a server's in-flight calls and admission level at every scrape (read then, not
   * copied). With several servers watched, in-flight calls are summed and the lowest admission
   * level is reported.
   * @param server - anything with `inflightCalls` (and optionally `admissionLevel`,
   *   `admissionLevels`), such as a svrkit `Server`.
   * @returns a function that stops watching it.
   */
  watchServer(server: WatchedServer): () => void {
    this.watched.add(server);
    return () => {
      this.watched.delete(server);
    };
  }

  /**
   * The current exposition in the Prometheus text format.
   * @returns the text (content type `registry.contentType`).
   */
  metrics(): Promise<string> {
    return this.registry.metrics();
  }

  /**
   * Serves `GET /metrics` (Prometheus text format, content type from the registry) over HTTP;
   * other paths answer 404, other methods on `/metrics` 405.
   * @param port - TCP port; 0 picks a free one.
   * @param host - interface to bind (default `127.0.0.1`).
   * @returns the running endpoint once it listens.
   * @throws Error (rejection) when the port cannot be bound, e.g. `metrics port 9464 on 127.0.0.1: address in use`.
   */
  serve(port: number, host = '127.0.0.1'): Promise<MetricsEndpoint> {
    const http = createServer((req, res) => {
      this.handle(req, res);
    });
    return new Promise<MetricsEndpoint>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        const why = err.code === 'EADDRINUSE' ? 'address in use' : err.code === 'EACCES' ? 'permission denied' : err.message;
        reject(new Error(`metrics port ${port} on ${host}: ${why}`));
      };
      http.once('error', onError);
      http.listen(port, host, () => {
        http.off('error', onError);
        const a = http.address() as AddressInfo;
        const address = `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
        let closing: Promise<void> | undefined;
        resolve({
          address,
          port: a.port,
          url: `http://${address}/metrics`,
          close: () =>
            (closing ??= new Promise<void>((done) => {
              http.close(() => done());
              http.closeAllConnections();
            })),
        });
      });
    });
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found: metrics are at /metrics\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { 'content-type': 'text/plain; charset=utf-8', allow: 'GET, HEAD' }).end('method not allowed\n');
      return;
    }
    this.registry.metrics().then(
      (text) => {
        res.writeHead(200, { 'content-type': this.registry.contentType });
        res.end(req.method === 'HEAD' ? undefined : text);
      },
      (err: unknown) => {
        res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end(`collecting metrics failed: ${(err as Error)?.message ?? String(err)}\n`);
      },
    );
  }

  private serverMethod(fullName: string): ServerMethod {
    let m = this.serverMethods.get(fullName);
    if (m === undefined) {
      if (this.serverMethods.size >= this.maxMethods && fullName !== OTHER) return this.serverMethod(OTHER);
      const { service, method } = fullName === OTHER ? { service: '', method: '_other' } : splitMethodName(fullName);
      m = {
        service,
        method,
        handled: [],
        handling: this.serverHandling.labels(service, method),
        queueing: this.serverQueueing.labels(service, method),
        rejected: new Map(),
      };
      this.serverMethods.set(fullName, m);
    }
    return m;
  }

  private clientMethod(fullName: string): ClientMethod {
    let m = this.clientMethods.get(fullName);
    if (m === undefined) {
      if (this.clientMethods.size >= this.maxMethods && fullName !== OTHER) return this.clientMethod(OTHER);
      const { service, method } = fullName === OTHER ? { service: '', method: '_other' } : splitMethodName(fullName);
      m = {
        service,
        method,
        handled: [],
        handling: this.clientHandling.labels(service, method),
        retries: this.clientRetries.labels(service, method),
        throttled: new Map(),
      };
      this.clientMethods.set(fullName, m);
    }
    return m;
  }
}
