/**
 * Concurrent client load on a PaxosKV cluster for real-process tests: seeded get, put, delete and
 * compare-and-set over a few keys, every operation recorded for the linearizability checker and
 * every acknowledged write kept (key, version, when), so a test can check that no acknowledged
 * write was lost and that writes never stopped (no time bucket without a successful write).
 */
import { performance } from 'node:perf_hooks';
import { PaxosKVClient, type ChannelOptions } from '../../index.js';
import { HistoryRecorder, type KvInput, type KvOutput } from './linearizability.js';
import { recordFailure } from './kv-processes.js';
import { mulberry32 } from './prng.js';

/** A write a client saw acknowledged: its key, version, and when it was called and answered (ms, `performance.now`). */
export interface AckedWrite {
  key: string;
  version: bigint;
  call: number;
  ret: number;
}

/** What {@link KvLoad} counts per kind of outcome. */
export interface LoadCounts {
  get: number;
  put: number;
  delete: number;
  cas: number;
  casFailed: number;
  unknown: number;
  failedGets: number;
}

/** Seeded concurrent load: `clients` loops until `stop()`. */
export class KvLoad {
  readonly history = new HistoryRecorder();
  readonly acked: AckedWrite[] = [];
  /** Errors no PaxosKV call should raise under these faults. */
  readonly unexpected: string[] = [];
  readonly counts: LoadCounts = { get: 0, put: 0, delete: 0, cas: 0, casFailed: 0, unknown: 0, failedGets: 0 };
  private stopped = false;
  private readonly done: Promise<void>;

  /**
   * Starts the loops.
   * @param peers - replica addresses; client c starts at peer c mod n.
   * @param options - clients (default 6), keys, seed, per-call deadline (ms) and channel options.
   */
  constructor(
    peers: () => readonly string[],
    private readonly options: { clients?: number; keys?: readonly string[]; seed?: number; callTimeoutMs?: number; attemptTimeoutMs?: number; channel?: ChannelOptions } = {},
  ) {
    const n = options.clients ?? 6;
    this.done = Promise.all(Array.from({ length: n }, (_, c) => this.loop(c, peers()))).then(() => undefined);
    // A loop that throws fails `stop()`; until then the rejection is held, not unhandled.
    this.done.catch(() => undefined);
  }

  /** When the loops started (ms, `performance.now`). */
  readonly startedAt = performance.now();

  private async loop(c: number, list: readonly string[]): Promise<void> {
    const keys = this.options.keys ?? ['k0', 'k1', 'k2', 'k3'];
    const peers = [...list.slice(c % list.length), ...list.slice(0, c % list.length)];
    const kv = new PaxosKVClient({ peers, attemptTimeoutMs: this.options.attemptTimeoutMs ?? 400, channel: this.options.channel });
    const rnd = mulberry32((this.options.seed ?? 0x5eed) + c);
    const lastSeen = new Map<string, bigint>();
    const now = () => performance.now();
    let seq = 0;
    try {
      while (!this.stopped) {
        const key = keys[Math.floor(rnd() * keys.length)]!;
        const r = rnd();
        const value = new TextEncoder().encode(`c${c}-${seq++}`);
        const input: KvInput =
          r < 0.35
            ? { kind: 'get' }
            : r < 0.6
              ? { kind: 'put', value }
              : r < 0.7
                ? { kind: 'delete' }
                : { kind: 'cas', expectedVersion: rnd() < 0.2 ? 0n : (lastSeen.get(key) ?? 0n), value };
        const opts = { timeoutMs: this.options.callTimeoutMs ?? 3000 };
        const id = this.history.invoke(c, key, input, now());
        const callT = now();
        try {
          let output: KvOutput;
          switch (input.kind) {
            case 'get': {
              const got = await kv.get(key, opts);
              output = got === null ? null : { value: got.value, version: got.version };
              lastSeen.set(key, got === null ? 0n : got.version);
              break;
            }
            case 'put':
              output = { version: await kv.put(key, input.value, opts) };
              break;
            case 'delete':
              output = { version: await kv.delete(key, opts) };
              break;
            case 'cas':
              output = { version: await kv.compareAndSet(key, input.expectedVersion, input.value, opts) };
              break;
          }
          const retT = now();
          this.history.complete(id, output, retT);
          this.counts[input.kind]++;
          if (output !== null && input.kind !== 'get' && 'version' in output) {
            this.acked.push({ key, version: output.version, call: callT, ret: retT });
            lastSeen.set(key, input.kind === 'delete' ? 0n : output.version);
          }
        } catch (err) {
          const f = recordFailure(this.history, id, input, err, now());
          if (f.recorded === 'failed') {
            this.counts.casFailed++;
            if (f.version !== undefined) lastSeen.set(key, f.version);
          } else if (f.recorded === 'discarded') this.counts.failedGets++;
          else this.counts.unknown++;
          if (f.unexpected !== undefined) this.unexpected.push(`client ${c} ${key}: ${f.unexpected}`);
        }
      }
    } finally {
      kv.close();
    }
  }

  /** Acknowledged writes called after `from` and answered before `to` (ms). */
  writesBetween(from: number, to = Infinity): number {
    return this.acked.filter((w) => w.call > from && w.ret < to).length;
  }

  /**
   * The longest stretch with no write answered, between `from` and `to` (ms; `performance.now`):
   * the gap between consecutive acknowledgements, and from `from` to the first.
   */
  longestWriteGap(from: number, to: number): { ms: number; at: number } {
    const rets = this.acked.map((w) => w.ret).filter((t) => t >= from && t <= to).sort((a, b) => a - b);
    let best = { ms: (rets[0] ?? to) - from, at: from };
    for (let i = 1; i < rets.length; i++) if (rets[i]! - rets[i - 1]! > best.ms) best = { ms: rets[i]! - rets[i - 1]!, at: rets[i - 1]! };
    if (rets.length > 0 && to - rets[rets.length - 1]! > best.ms) best = { ms: to - rets[rets.length - 1]!, at: rets[rets.length - 1]! };
    return best;
  }

  /**
   * The 100 ms buckets (or `bucketMs`) between `from` and `to` in which no write was answered.
   * @returns the start of each empty bucket, ms after `from`.
   */
  emptyWriteBuckets(from: number, to: number, bucketMs = 100): number[] {
    const full = new Set<number>();
    for (const w of this.acked) if (w.ret >= from && w.ret < to) full.add(Math.floor((w.ret - from) / bucketMs));
    const empty: number[] = [];
    for (let b = 0; b < Math.floor((to - from) / bucketMs); b++) if (!full.has(b)) empty.push(b * bucketMs);
    return empty;
  }

  /**
   * Stops the loops and waits for them (each call has its own deadline).
   * @throws Error when a loop does not end within 15 s of that deadline.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    let timer: NodeJS.Timeout | undefined;
    const hung = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('a client call did not end within 15 s of its deadline')), 15_000 + (this.options.callTimeoutMs ?? 3000));
    });
    try {
      await Promise.race([this.done, hung]);
    } finally {
      clearTimeout(timer);
    }
  }
}
