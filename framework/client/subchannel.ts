/**
 * Subchannels. A `Subchannel` is one server address with a fixed number of connections, picked round robin. It
 * reconnects by itself: at once after an established connection is lost, and with exponential
 * backoff after failed connects, following gRPC's connection backoff (grpc/grpc
 * doc/connection-backoff.md). It also keeps the address's outlier-ejection state (outlier.ts).
 */
import { performance } from 'node:perf_hooks';
import { Status } from '../wire/status.js';
import { errors } from '../errors.js';
import { ADMIT_ALL } from '../overload/admission.js';
import { ClientConnection, type BackoffOptions, type ConnectionSettings } from './client-connection.js';
import { OutlierTracker } from './outlier.js';

/** How long an advertised admission level is trusted without news from the server (ms): one window. */
export const ADMISSION_STALE_MS = 1000;

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

/** Status codes that count as a failure of the instance for outlier ejection. */
const INSTANCE_FAILURE_CODES: ReadonlySet<number> = new Set([Status.UNAVAILABLE, Status.INTERNAL, Status.UNKNOWN, Status.DATA_LOSS]);

/** Connectivity of a subchannel, after gRPC's states. */
export type SubchannelState = 'idle' | 'connecting' | 'ready' | 'transient_failure';

/** One address with `count` connections to it; see the module comment. */
export class Subchannel {
  private readonly slots: Array<ClientConnection | undefined>;
  private rr = 0;
  private failures = 0;
  /** When the connect backoff ends (ms of `performance.now()`: a wall-clock step cannot stretch it). */
  private retryAt = 0;
  private reconnectTimer: NodeJS.Timeout | undefined;
  /** The last connect error, reported to calls that fail fast. */
  lastError: Error | undefined;
  private closed = false;
  /** Outlier-ejection state of this address. */
  readonly outlier: OutlierTracker | undefined;

  /**
   * @param address - `host:port`.
   * @param count - connections to keep to this address (>= 1).
   * @param settings - connection settings, backoff, keepalive, outlier ejection.
   * @param onChange - called whenever a connection becomes ready or closes.
   * @param onResult - called with each response's status, `np` flag and advertised admission level.
   * @param random - source of jitter in [0, 1).
   */
  constructor(
    readonly address: string,
    count: number,
    private readonly settings: ConnectionSettings,
    private readonly onChange: () => void,
    private readonly onResult: (sub: Subchannel, status: number, notProcessed: boolean, admissionLevel: number | undefined) => void = () => {},
    private readonly random: () => number = Math.random,
  ) {
    this.slots = new Array<ClientConnection | undefined>(Math.max(1, count)).fill(undefined);
    this.outlier = settings.outlier === undefined ? undefined : new OutlierTracker(settings.outlier);
  }

  /** The aggregate state: ready if any connection is, else connecting, else backoff or idle. */
  state(): SubchannelState {
    let connecting = false;
    for (const c of this.slots) {
      if (c === undefined) continue;
      if (c.state === 'ready') return 'ready';
      if (c.state === 'connecting') connecting = true;
    }
    if (connecting) return 'connecting';
    return performance.now() < this.retryAt ? 'transient_failure' : 'idle';
  }

  /** True when some connection is ready (kept up to date on every connection change; read per pick). */
  ready = false;

  private updateReady(): void {
    let r = false;
    for (const c of this.slots) if (c !== undefined && c.state === 'ready') r = true;
    this.ready = r;
  }

  /** Calls in flight over all connections (for p2c). */
  get activeCalls(): number {
    let n = 0;
    for (const c of this.slots) if (c !== undefined) n += c.activeCalls;
    return n;
  }

  /**
   * The admission level the instance last advertised (FastReject): it refuses calls whose
   * priority level is higher. `ADMIT_ALL` (16383) while it admits everything.
   */
  admissionLevel = ADMIT_ALL;
  /** When `admissionLevel` was last advertised (epoch ms). */
  admissionAt = 0;

  /**
   * Whether the instance would admit a call of `level`, as far as the client knows. A level
   * older than `ADMISSION_STALE_MS` no longer counts (the server may have recovered, and a
   * client that sheds everything locally would never hear).
   */
  admits(level: number, now: number): boolean {
    return level <= this.admissionLevel || now - this.admissionAt > ADMISSION_STALE_MS;
  }

  /** True unless outlier ejection has taken the address out of the pool. */
  get usable(): boolean {
    return this.outlier === undefined || this.outlier.usable;
  }

  /**
   * A ready connection, round robin, or undefined. Starts connecting any empty slot unless the
   * subchannel is backing off after a failed connect.
   */
  pick(): ClientConnection | undefined {
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
      } else if ((c === undefined || c.state === 'closed' || c.state === 'draining') && !this.closed && performance.now() >= this.retryAt) {
        this.connectSlot(idx);
      }
    }
    return found;
  }

  /** Starts connecting every empty slot (unless backing off). */
  connect(): void {
    this.pick();
  }

  /** Drains every connection: in-flight calls finish, no new ones start. */
  close(): void {
    this.closed = true;
    this.ready = false;
    clearTimeout(this.reconnectTimer);
    for (const c of this.slots) c?.drain();
  }

  private connectSlot(idx: number): void {
    const conn = new ClientConnection(
      this.address,
      this.settings,
      (c) => this.onConnectionChange(idx, c),
      (status, np, al) => this.onResult(this, status, np, al),
    );
    this.slots[idx] = conn;
  }

  private onConnectionChange(idx: number, c: ClientConnection): void {
    this.onConnectionState(idx, c);
    this.updateReady();
    this.onChange();
  }

  private onConnectionState(idx: number, c: ClientConnection): void {
    if (c.state === 'ready') {
      this.retryAt = 0;
    } else if (c.state === 'closed') {
      if (this.slots[idx] === c) this.slots[idx] = undefined;
      if (!c.established || !c.healthy) {
        // A failed connect, or a peer that accepted and closed without a word (an L4 proxy with no
        // backend, a full server): back off, or we would redial it in a tight loop.
        this.failures++;
        this.lastError = c.error ?? errors.CONNECTION_CLOSED_SILENT(this.address);
        this.retryAt = performance.now() + backoffDelay(this.failures, this.settings.backoff, this.random());
      } else {
        this.failures = 0;
      }
      this.scheduleReconnect();
    } else if (c.state === 'draining') {
      // GOAWAY: the slot is reconnected on the next pick while this one finishes its calls.
      if (this.slots[idx] === c) this.slots[idx] = undefined;
    }
  }

  /** Reconnects empty slots once the backoff allows (gRPC subchannels leave TRANSIENT_FAILURE by themselves). */
  private scheduleReconnect(): void {
    if (this.closed || this.reconnectTimer !== undefined) return;
    const delay = Math.max(0, this.retryAt - performance.now());
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (this.closed) return;
      if (performance.now() < this.retryAt) this.scheduleReconnect(); // fired a millisecond early
      else this.connect();
    }, delay + 1);
    this.reconnectTimer.unref();
  }
}

/** @internal Status codes that count against an instance in outlier ejection. */
export function isInstanceFailure(status: number): boolean {
  return INSTANCE_FAILURE_CODES.has(status);
}
