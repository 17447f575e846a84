/**
 * The watchers of a replica's keys: who waits for a key's next chosen version, and what each has
 * been sent. The replica offers every chosen entry it makes durable (`offer`); each watcher gets
 * the versions after the last one it was sent, in order. PaxosKV keeps only a key's latest chosen
 * entry ("PLog as DB"), so a version this replica never held (it learned a later one first, or
 * caught up) cannot be sent: the next event then says so (`gap`). A watcher whose consumer is slow
 * holds one pending event, the latest, not a queue: what it skipped is a gap too. No I/O, no
 * timers: the replica drives it.
 */
/** One event of a key's watch. */
export interface WatchEvent {
  /** The key's version (the index of its chosen entry; 0: never written). */
  readonly version: number;
  /** The value, or null when the key is absent (deleted, or never written). */
  readonly value: Uint8Array | null;
  /** Versions between the previous event (or the watch's `fromVersion`) and this one were not sent. */
  readonly gap: boolean;
}

/** A registered watch; see {@link Watchers.add}. */
export interface Watch {
  /** The key watched. */
  readonly key: string;
  /** Resolves with the next event, or undefined once the watch is closed. One `next` at a time. */
  next(): Promise<WatchEvent | undefined>;
  /** Ends the watch: a pending `next` resolves undefined. Idempotent. */
  close(): void;
}

class KeyWatch implements Watch {
  private pending: { version: number; value: Uint8Array | null } | undefined;
  private waiter: ((e: WatchEvent | undefined) => void) | undefined;
  private closed = false;

  constructor(
    readonly key: string,
    /** The last version sent (or the watch's `fromVersion`). */
    private sent: number,
    private readonly onClose: (w: KeyWatch) => void,
  ) {}

  /** The highest version offered so far (sent or pending). */
  get latest(): number {
    return this.pending?.version ?? this.sent;
  }

  offer(version: number, value: Uint8Array | null): void {
    if (this.closed || version <= this.latest) return;
    this.pending = { version, value };
    if (this.waiter !== undefined) {
      const w = this.waiter;
      this.waiter = undefined;
      w(this.take());
    }
  }

  next(): Promise<WatchEvent | undefined> {
    if (this.closed) return Promise.resolve(undefined);
    if (this.pending !== undefined) return Promise.resolve(this.take());
    return new Promise((resolve) => (this.waiter = resolve));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.pending = undefined;
    this.onClose(this);
    const w = this.waiter;
    this.waiter = undefined;
    w?.(undefined);
  }

  private take(): WatchEvent {
    const p = this.pending!;
    this.pending = undefined;
    const event = { version: p.version, value: p.value, gap: p.version > this.sent + 1 };
    this.sent = p.version;
    return event;
  }
}

/** The watches of one replica, by key. */
export class Watchers {
  private readonly byKey = new Map<string, Set<KeyWatch>>();
  /** When each watched key last changed or was checked (the driver's clock, ms). */
  private readonly checkedAt = new Map<string, number>();

  /**
   * Registers a watch of `key` that sends the versions after `fromVersion`.
   * @param key - the key; `fromVersion` - the last version the watcher has (0: none).
   * @param now - the driver's clock (ms).
   * @returns the watch; close it when the stream ends.
   */
  add(key: string, fromVersion: number, now: number): Watch {
    let set = this.byKey.get(key);
    if (set === undefined) {
      this.byKey.set(key, (set = new Set()));
      this.checkedAt.set(key, now);
    }
    const w = new KeyWatch(key, fromVersion, (closed) => {
      const s = this.byKey.get(key);
      if (s === undefined) return;
      s.delete(closed);
      if (s.size === 0) {
        this.byKey.delete(key);
        this.checkedAt.delete(key);
      }
    });
    set.add(w);
    return w;
  }

  /** Whether any watch is open on `key`. */
  has(key: string): boolean {
    return this.byKey.has(key);
  }

  /** Open watches, over all keys. */
  get size(): number {
    let n = 0;
    for (const s of this.byKey.values()) n += s.size;
    return n;
  }

  /**
   * A chosen version of `key` this replica holds (made durable, or read linearizably): every
   * watch of the key that has not had it gets it (coalesced with what it has not taken yet).
   * @param now - the driver's clock (ms): the key counts as checked then.
   */
  offer(key: string, version: number, value: Uint8Array | null, now: number): void {
    const set = this.byKey.get(key);
    if (set === undefined) return;
    this.checkedAt.set(key, now);
    for (const w of set) w.offer(version, value);
  }

  /**
   * Watched keys that neither changed nor were checked for `intervalMs`: the driver reads them
   * linearizably, so that a change whose `learn` message this replica lost still reaches its
   * watchers (the read catches the replica up). Marks them checked at `now`.
   * @returns the keys, in no particular order.
   */
  due(now: number, intervalMs: number): string[] {
    const out: string[] = [];
    for (const [key, at] of this.checkedAt) {
      if (now - at >= intervalMs) {
        out.push(key);
        this.checkedAt.set(key, now);
      }
    }
    return out;
  }

  /** Ends every watch of `key` (their clients then resume elsewhere). */
  end(key: string): void {
    for (const w of [...(this.byKey.get(key) ?? [])]) w.close();
  }

  /** Ends every watch (the replica is closing). */
  closeAll(): void {
    for (const set of [...this.byKey.values()]) for (const w of [...set]) w.close();
  }
}
