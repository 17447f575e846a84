/**
 * Client connections and subchannels.
 *
 * A `ClientConnection` multiplexes calls over one socket by call id. A `Subchannel` is one server
 * address with a fixed number of connections, picked round robin, reconnected lazily (the next
 * call after a loss connects again) with exponential backoff after failed connects, following
 * gRPC's connection backoff (grpc/grpc doc/connection-backoff.md).
 */
import { connect } from 'node:net';
import { Connection } from '../transport/connection.js';
import { FrameKind } from '../wire/frame.js';
import { decodeStatusHeader, encodeStatusHeader } from '../wire/header.js';
import { RpcError, Status } from '../wire/status.js';
import type { CallCarrier, PendingCall } from './call.js';
import { parseAddress } from './resolver.js';

/** Exponential backoff settings (gRPC names; the defaults are shorter than gRPC's 1 s / 120 s). */
export interface BackoffOptions {
  /** Delay after the first failure (ms). Default 100. */
  initialMs?: number;
  /** Upper bound of the delay (ms). Default 10000. */
  maxMs?: number;
  /** Growth per failure. Default 1.6 (gRPC's). */
  multiplier?: number;
  /** Relative random spread, 0..1. Default 0.2 (gRPC's). */
  jitter?: number;
}

/**
 * The delay before reconnect attempt `failures` (1 = after the first failure):
 * `min(initial * multiplier^(failures-1), max) * (1 + jitter * (2*random - 1))`.
 * Pure: `random` is a number in [0, 1).
 * @returns milliseconds.
 */
export function backoffDelay(failures: number, options: BackoffOptions, random: number): number {
  const initial = options.initialMs ?? 100;
  const max = options.maxMs ?? 10_000;
  const mult = options.multiplier ?? 1.6;
  const jitter = options.jitter ?? 0.2;
  const base = Math.min(initial * Math.pow(mult, Math.max(0, failures - 1)), max);
  return Math.max(0, base * (1 + jitter * (2 * random - 1)));
}

/** Settings shared by a channel's connections. */
export interface ConnectionSettings {
  maxFrameBytes: number;
  connectTimeoutMs: number;
  backoff: BackoffOptions;
}

type ConnState = 'connecting' | 'ready' | 'draining' | 'closed';

/** One client socket carrying many calls. */
export class ClientConnection implements CallCarrier {
  state: ConnState = 'connecting';
  /** True once the socket connected (a later loss is then not a connect failure). */
  established = false;
  /** Why the connection closed or failed to open, if it did. */
  error: Error | undefined;
  private readonly calls = new Map<number, PendingCall>();
  /** The status and reason the server gave in GOAWAY, if it gave one. */
  private goawayReason: RpcError | undefined;
  private nextCallId = 1;
  private readonly conn: Connection;
  private connectTimer: NodeJS.Timeout | undefined;

  /**
   * @param address - `host:port` to connect to.
   * @param settings - frame limit and connect timeout.
   * @param onChange - called when the connection becomes ready or closes.
   */
  constructor(
    readonly address: string,
    settings: ConnectionSettings,
    private readonly onChange: (c: ClientConnection) => void,
  ) {
    const { host, port } = parseAddress(address);
    const socket = connect({ host, port, noDelay: true });
    this.conn = new Connection(
      socket,
      { maxFrameBytes: settings.maxFrameBytes, pauseReadsWhileBlocked: false },
      {
        onFrame: (kind, callId, header, body) => this.onFrame(kind, callId, header, body),
        onOversized: (kind, callId, size) => {
          const call = kind === FrameKind.RESPONSE ? this.calls.get(callId) : undefined;
          if (call === undefined) return;
          this.calls.delete(callId);
          call.fail(new RpcError(Status.RESOURCE_EXHAUSTED, `response of ${size} bytes from ${address} exceeds the maximum frame size ${settings.maxFrameBytes}`));
          this.maybeCloseDrained();
        },
        onClose: (err) => this.onClose(err),
      },
    );
    this.connectTimer = setTimeout(() => {
      this.conn.destroy(new Error(`connect to ${address} timed out after ${settings.connectTimeoutMs} ms`));
    }, settings.connectTimeoutMs);
    socket.once('connect', () => {
      clearTimeout(this.connectTimer);
      if (this.state !== 'connecting') return;
      this.state = 'ready';
      this.established = true;
      this.onChange(this);
    });
  }

  /** Calls in flight on this connection. */
  get activeCalls(): number {
    return this.calls.size;
  }

  /** Sends a call; the connection must be ready. */
  start(call: PendingCall): void {
    if (!this.conn.fits(call.header, call.body)) {
      call.fail(new RpcError(Status.RESOURCE_EXHAUSTED, `request of ${call.body.length} bytes exceeds the maximum frame size`));
      return;
    }
    let id = this.nextCallId;
    while (this.calls.has(id)) id = id === 0xffffffff ? 1 : id + 1;
    this.nextCallId = id === 0xffffffff ? 1 : id + 1;
    call.callId = id;
    call.carrier = this;
    this.calls.set(id, call);
    this.conn.send(FrameKind.REQUEST, id, call.header, call.body);
  }

  /** @see CallCarrier.cancel */
  cancel(call: PendingCall, reason: RpcError): void {
    if (this.calls.get(call.callId) !== call) return;
    this.calls.delete(call.callId);
    this.conn.send(FrameKind.CANCEL, call.callId, encodeStatusHeader(reason.code));
    this.maybeCloseDrained();
  }

  /** Stops new calls; closes once in-flight calls finish. */
  drain(): void {
    if (this.state === 'closed') return;
    if (this.state === 'connecting') {
      this.conn.destroy();
      return;
    }
    this.state = 'draining';
    this.maybeCloseDrained();
  }

  /** Closes at once, failing calls in flight with UNAVAILABLE. */
  destroy(reason?: Error): void {
    this.conn.destroy(reason);
  }

  private onFrame(kind: number, callId: number, header: Buffer, body: Buffer): void {
    if (kind === FrameKind.RESPONSE) {
      const call = this.calls.get(callId);
      if (call === undefined) return; // cancelled or timed out already
      this.calls.delete(callId);
      let h;
      try {
        h = decodeStatusHeader(header);
      } catch (err) {
        call.fail(new RpcError(Status.INTERNAL, `malformed response header from ${this.address}: ${(err as Error).message}`));
        return;
      }
      if (h.s === Status.OK) {
        let message: unknown;
        try {
          message = call.method.responseType.decode(body);
        } catch (err) {
          call.fail(new RpcError(Status.INTERNAL, `response body is not a valid ${call.method.responseTypeName}: ${(err as Error).message}`));
          return;
        }
        call.succeed(message);
      } else {
        call.fail(new RpcError(h.s, h.e ?? '', h.md ?? {}));
      }
      this.maybeCloseDrained();
    } else if (kind === FrameKind.GOAWAY) {
      try {
        const h = decodeStatusHeader(header);
        if (h.s !== Status.OK) this.goawayReason = new RpcError(h.s, h.e ?? 'the server sent GOAWAY');
      } catch {
        // A malformed reason still means GOAWAY.
      }
      if (this.state === 'ready') {
        this.state = 'draining';
        this.onChange(this);
      }
      this.maybeCloseDrained();
    } else if (kind === FrameKind.PING) {
      this.conn.send(FrameKind.PONG, callId);
    }
  }

  private maybeCloseDrained(): void {
    if (this.state === 'draining' && this.calls.size === 0) this.conn.end();
  }

  private onClose(err: Error | undefined): void {
    clearTimeout(this.connectTimer);
    const wasConnecting = this.state === 'connecting';
    this.state = 'closed';
    this.error = err ?? (wasConnecting ? new Error(`connection to ${this.address} closed before it was established`) : undefined);
    if (this.calls.size > 0) {
      // The server's GOAWAY reason, when it gave one, says more than the bare close.
      const code = this.goawayReason?.code ?? Status.UNAVAILABLE;
      const why = this.goawayReason !== undefined
        ? `connection closed by the server: ${this.goawayReason.message}`
        : err === undefined ? 'connection closed' : `connection lost: ${err.message}`;
      const calls = [...this.calls.values()];
      this.calls.clear();
      for (const c of calls) c.fail(new RpcError(code, `${why} (${this.address}, calling ${c.method.path})`));
    }
    this.onChange(this);
  }
}

/** Connectivity of a subchannel, after gRPC's states. */
export type SubchannelState = 'idle' | 'connecting' | 'ready' | 'transient_failure';

/** One address with `count` connections to it. */
export class Subchannel {
  private readonly slots: Array<ClientConnection | undefined>;
  private rr = 0;
  private failures = 0;
  private retryAt = 0;
  /** The last connect error, reported to calls that fail fast. */
  lastError: Error | undefined;
  private closed = false;

  /**
   * @param address - `host:port`.
   * @param count - connections to keep to this address (>= 1).
   * @param settings - connection settings and backoff.
   * @param onChange - called whenever a connection becomes ready or closes.
   * @param random - source of jitter in [0, 1).
   */
  constructor(
    readonly address: string,
    count: number,
    private readonly settings: ConnectionSettings,
    private readonly onChange: () => void,
    private readonly random: () => number = Math.random,
  ) {
    this.slots = new Array<ClientConnection | undefined>(Math.max(1, count)).fill(undefined);
  }

  /** The aggregate state: ready if any connection is, else connecting, else backoff or idle. */
  state(now: number): SubchannelState {
    let connecting = false;
    for (const c of this.slots) {
      if (c === undefined) continue;
      if (c.state === 'ready') return 'ready';
      if (c.state === 'connecting') connecting = true;
    }
    if (connecting) return 'connecting';
    return now < this.retryAt ? 'transient_failure' : 'idle';
  }

  /**
   * A ready connection, round robin, or undefined. Starts connecting any empty slot unless the
   * subchannel is backing off after a failed connect.
   */
  pick(now: number): ClientConnection | undefined {
    const slots = this.slots;
    const n = slots.length;
    let found: ClientConnection | undefined;
    for (let i = 0; i < n; i++) {
      const idx = (this.rr + i) % n;
      const c = slots[idx];
      if (c !== undefined && c.state === 'ready') {
        if (found === undefined) {
          found = c;
          this.rr = idx + 1;
        }
      } else if ((c === undefined || c.state === 'closed' || c.state === 'draining') && !this.closed && now >= this.retryAt) {
        this.connectSlot(idx);
      }
    }
    return found;
  }

  /** Starts connecting every empty slot (unless backing off). */
  connect(now: number): void {
    this.pick(now);
  }

  /** Drains every connection: in-flight calls finish, no new ones start. */
  close(): void {
    this.closed = true;
    for (const c of this.slots) c?.drain();
  }

  private connectSlot(idx: number): void {
    const conn = new ClientConnection(this.address, this.settings, (c) => this.onConnectionChange(idx, c));
    this.slots[idx] = conn;
  }

  private onConnectionChange(idx: number, c: ClientConnection): void {
    if (c.state === 'ready') {
      this.failures = 0;
      this.retryAt = 0;
    } else if (c.state === 'closed') {
      if (this.slots[idx] === c) this.slots[idx] = undefined;
      if (!c.established) {
        this.failures++;
        this.lastError = c.error;
        this.retryAt = Date.now() + backoffDelay(this.failures, this.settings.backoff, this.random());
      }
    } else if (c.state === 'draining') {
      // GOAWAY: the slot is reconnected on the next pick while this one finishes its calls.
      if (this.slots[idx] === c) this.slots[idx] = undefined;
    }
    this.onChange();
  }
}
