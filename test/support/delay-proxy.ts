/**
 * A TCP proxy on 127.0.0.1 for tests that models a link which now and then holds replies back.
 *
 * Each connection accepted on the proxy's port is paired with one connection to the target.
 *  - Client -> server bytes pass straight through (with backpressure), never held.
 *  - Server -> client bytes pass through in order, but for each chunk read from the server while
 *    the connection is not already held, the proxy starts a *hold* with probability
 *    `holdProbability`: that chunk and everything after it in that direction of that connection
 *    are queued for a random interval in [minHoldMs, maxHoldMs], then released together, in order.
 *    A client whose attempt timeout is shorter than the hold gives up on the attempt although the
 *    server already answered (and, for a write, may already have applied it).
 *  - Bytes are never reordered, duplicated or dropped while both ends are open. The server's end of
 *    stream (FIN, or the connection failing) travels behind held bytes: the client's side is ended
 *    only after everything queued before it was written.
 *  - When either side closes, the other is closed too: the client going away destroys the server
 *    connection at once (queued reply bytes have nobody to go to); the server going away ends the
 *    client connection once the queue is flushed. A connection to a target that refuses or fails is
 *    closed on the client's side.
 *  - `close()` stops listening, destroys every connection and clears every timer.
 *
 * Only node:net; the randomness comes from the caller (use the seeded PRNG of ./prng.ts, so the
 * sequence of hold decisions replays from a seed, although the chunking of the byte stream, and so
 * which reply a hold lands on, depends on timing).
 */
import { createServer, connect, type Server, type Socket } from 'node:net';

/** Where the proxy forwards to. */
export interface ProxyTarget {
  /** Host name or address of the target, e.g. `'127.0.0.1'`. */
  host: string;
  /** TCP port of the target (1-65535). */
  port: number;
}

/** How often and how long the proxy holds server -> client bytes back. */
export interface DelayProxyOptions {
  /**
   * Probability, in [0, 1], that a chunk read from the server (while its connection is not held
   * already) starts a hold. 0 = never hold; 1 = hold at every chance.
   */
  holdProbability: number;
  /** Shortest hold, in milliseconds (>= 0). */
  minHoldMs: number;
  /** Longest hold, in milliseconds (>= minHoldMs). A hold lasts `minHoldMs + random() * (maxHoldMs - minHoldMs)`. */
  maxHoldMs: number;
  /** Uniform numbers in [0, 1), e.g. `mulberry32(seed)` from ./prng.ts. Called once per hold decision and once per hold length. */
  random: () => number;
}

/** Counters of one proxy since it started (all totals, over every connection). */
export interface DelayProxyStats {
  /** Connections accepted from clients. */
  connections: number;
  /** Connections currently open (client side or server side not yet closed). */
  open: number;
  /** Holds started (server -> client direction). */
  holds: number;
  /** Sum of the hold lengths drawn, in milliseconds (a hold cut short by a close still counts in full). */
  heldMs: number;
  /** Chunks read from servers that waited in a hold queue. */
  heldChunks: number;
  /** Chunks read from servers (held or not). */
  serverChunks: number;
  /** Bytes read from servers (server -> client). */
  serverBytes: number;
  /** Bytes read from clients (client -> server). */
  clientBytes: number;
  /** Largest number of bytes ever queued on one connection during a hold. */
  maxQueuedBytes: number;
  /** Connections to the target that failed (refused, reset, ...). */
  upstreamErrors: number;
}

/** A running proxy; see the module comment. */
export interface DelayProxy {
  /** The port the proxy listens on, on 127.0.0.1. */
  readonly port: number;
  /** `127.0.0.1:<port>`, for client configuration. */
  readonly address: string;
  /**
   * Stops listening, destroys every open connection (both sides) and clears every hold timer.
   * Idempotent.
   * @returns resolves once the listening socket and every connection are closed; never rejects.
   */
  close(): Promise<void>;
  /** A snapshot of the counters (a fresh object on every call). */
  stats(): DelayProxyStats;
}

/** Half-closed client sockets are destroyed when the client has not closed its side this long after ours (ms). */
const HALF_OPEN_GRACE_MS = 5000;

/**
 * Starts a delay proxy on 127.0.0.1 (an ephemeral port) in front of `target`.
 * @param target - where to forward each connection (a new connection per accepted one).
 * @param options - how often and how long to hold server -> client bytes; see {@link DelayProxyOptions}.
 * @returns the running proxy, once it listens.
 * @throws RangeError (synchronously) when `holdProbability` is outside [0, 1], `minHoldMs` is
 *   negative or `maxHoldMs < minHoldMs`, or `target.port` is not in 1-65535; Error (rejection)
 *   when the proxy cannot listen.
 */
export function startDelayProxy(target: ProxyTarget, options: DelayProxyOptions): Promise<DelayProxy> {
  const { holdProbability, minHoldMs, maxHoldMs, random } = options;
  if (!(holdProbability >= 0 && holdProbability <= 1)) throw new RangeError(`holdProbability must be in [0, 1], got ${holdProbability}`);
  if (!(minHoldMs >= 0)) throw new RangeError(`minHoldMs must be >= 0, got ${minHoldMs}`);
  if (!(maxHoldMs >= minHoldMs)) throw new RangeError(`maxHoldMs must be >= minHoldMs (${minHoldMs}), got ${maxHoldMs}`);
  if (!Number.isInteger(target.port) || target.port < 1 || target.port > 65535) throw new RangeError(`target port must be in 1-65535, got ${target.port}`);

  const counters: DelayProxyStats = {
    connections: 0,
    open: 0,
    holds: 0,
    heldMs: 0,
    heldChunks: 0,
    serverChunks: 0,
    serverBytes: 0,
    clientBytes: 0,
    maxQueuedBytes: 0,
    upstreamErrors: 0,
  };
  const conns = new Set<ProxiedConnection>();
  let closing = false;

  const server: Server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
    if (closing) {
      client.destroy();
      return;
    }
    counters.connections++;
    const conn = new ProxiedConnection(client, target, options, counters, () => conns.delete(conn));
    conns.add(conn);
  });

  return new Promise<DelayProxy>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      // After listening, errors on the server socket (rare: EMFILE on accept) must not crash the test run.
      server.on('error', () => undefined);
      const port = (server.address() as { port: number }).port;
      let closed: Promise<void> | undefined;
      resolve({
        port,
        address: `127.0.0.1:${port}`,
        stats: () => ({ ...counters, open: conns.size }),
        close: () => {
          closed ??= (async () => {
            closing = true;
            const listening = new Promise<void>((r) => server.close(() => r()));
            await Promise.all([...conns].map((c) => c.destroy()));
            await listening;
          })();
          return closed;
        },
      });
    });
  });
}

/** One client connection and its connection to the target. */
class ProxiedConnection {
  private readonly upstream: Socket;
  /** Server -> client chunks waiting for the current hold to end. */
  private queue: Buffer[] = [];
  private queuedBytes = 0;
  private holdTimer: NodeJS.Timeout | undefined;
  private graceTimer: NodeJS.Timeout | undefined;
  /** The server's side ended (FIN) or failed; passed on to the client behind the queue. */
  private upstreamDone = false;
  /** The client's side was ended or destroyed by us. */
  private clientEnded = false;
  /** Waiting for the client socket to drain before reading more from the server. */
  private waitingDrain = false;
  private readonly clientClosed: Promise<void>;
  private readonly upstreamClosed: Promise<void>;

  constructor(
    private readonly client: Socket,
    target: ProxyTarget,
    private readonly options: DelayProxyOptions,
    private readonly counters: DelayProxyStats,
    onGone: () => void,
  ) {
    this.upstream = connect({ host: target.host, port: target.port, allowHalfOpen: true, noDelay: true });
    client.setNoDelay(true);
    this.clientClosed = new Promise((r) => client.once('close', () => r()));
    this.upstreamClosed = new Promise((r) => this.upstream.once('close', () => r()));
    void Promise.all([this.clientClosed, this.upstreamClosed]).then(() => {
      this.clearTimers();
      onGone();
    });

    // Client -> server: straight through, with backpressure, FIN included.
    client.on('data', (chunk: Buffer) => {
      counters.clientBytes += chunk.length;
      if (this.upstream.destroyed || this.upstream.writableEnded) return; // the server is gone (its 'close' ends the client next)
      if (!this.upstream.write(chunk)) {
        client.pause();
        this.upstream.once('drain', () => client.resume());
      }
    });
    client.on('end', () => {
      if (!this.upstream.destroyed) this.upstream.end();
    });
    client.on('error', () => undefined); // 'close' follows
    client.once('close', () => {
      // Nobody left to deliver to: drop the queue, close the server side at once.
      this.clearTimers();
      this.queue = [];
      this.queuedBytes = 0;
      this.upstream.destroy();
    });

    // Server -> client: in order, sometimes held.
    this.upstream.on('data', (chunk: Buffer) => this.fromServer(chunk));
    this.upstream.on('end', () => this.serverDone());
    this.upstream.on('error', () => {
      counters.upstreamErrors++;
    });
    this.upstream.once('close', () => this.serverDone());
    client.resume(); // accepted paused (pauseOnConnect): start reading now that handlers are set
  }

  /** Destroys both sides at once (proxy shutdown); resolves when both are closed. */
  destroy(): Promise<void> {
    this.clearTimers();
    this.queue = [];
    this.queuedBytes = 0;
    this.client.destroy();
    this.upstream.destroy();
    return Promise.all([this.clientClosed, this.upstreamClosed]).then(() => undefined);
  }

  private get holding(): boolean {
    return this.holdTimer !== undefined;
  }

  private fromServer(chunk: Buffer): void {
    const c = this.counters;
    c.serverChunks++;
    c.serverBytes += chunk.length;
    if (this.clientEnded) return; // the client is gone (its 'close' destroys us next)
    if (!this.holding && this.options.holdProbability > 0 && this.options.random() < this.options.holdProbability) {
      const { minHoldMs, maxHoldMs } = this.options;
      const ms = minHoldMs + this.options.random() * (maxHoldMs - minHoldMs);
      c.holds++;
      c.heldMs += ms;
      this.holdTimer = setTimeout(() => this.release(), ms);
    }
    if (this.holding) {
      c.heldChunks++;
      this.queue.push(chunk);
      this.queuedBytes += chunk.length;
      if (this.queuedBytes > c.maxQueuedBytes) c.maxQueuedBytes = this.queuedBytes;
      return;
    }
    this.toClient(chunk);
  }

  /** Ends the hold: writes the queue in order, then passes on the server's end if it came meanwhile. */
  private release(): void {
    this.holdTimer = undefined;
    const queue = this.queue;
    this.queue = [];
    this.queuedBytes = 0;
    for (const chunk of queue) this.toClient(chunk);
    if (this.upstreamDone) this.endClient();
  }

  private toClient(chunk: Buffer): void {
    if (this.clientEnded || this.client.destroyed) return;
    if (!this.client.write(chunk) && !this.waitingDrain) {
      this.waitingDrain = true;
      this.upstream.pause();
      this.client.once('drain', () => {
        this.waitingDrain = false;
        this.upstream.resume();
      });
    }
  }

  /** The server's side ended or closed: end the client's side once nothing is held before it. */
  private serverDone(): void {
    if (this.upstreamDone) return;
    this.upstreamDone = true;
    if (!this.holding) this.endClient();
  }

  private endClient(): void {
    if (this.clientEnded) return;
    this.clientEnded = true;
    if (this.client.destroyed) return;
    // end() flushes what was written, then sends FIN; a client that never closes its own side is
    // destroyed after a grace period, so no socket outlives its server connection for long.
    this.client.end();
    this.graceTimer = setTimeout(() => this.client.destroy(), HALF_OPEN_GRACE_MS);
  }

  private clearTimers(): void {
    if (this.holdTimer !== undefined) clearTimeout(this.holdTimer);
    if (this.graceTimer !== undefined) clearTimeout(this.graceTimer);
    this.holdTimer = undefined;
    this.graceTimer = undefined;
  }
}
