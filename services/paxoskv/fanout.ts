/**
 * One upstream follower per key, fanned out to many subscribers: what lets a config or registry
 * server hold one PaxosKV watch per namespace (or service) however many clients watch it.
 *
 * A value here is a whole state (a namespace's head, a service's instance list), so a subscriber
 * needs only the latest: each keeps one pending value, not a queue, and a slow one skips to the
 * newest (memory per subscriber is constant). The upstream starts with the key's first subscriber
 * and stops `lingerMs` after its last one leaves (a client that reconnects at once finds it still
 * running). No I/O of its own: what the upstream does is the `follow` function's.
 */

/**
 * Follows one key: calls `emit` with each new state until `signal` aborts. It should keep going
 * through failures (retrying) for as long as the signal is not aborted; if it returns or throws,
 * the key's subscribers end (they reconnect).
 */
export type Follow<T> = (key: string, emit: (value: T) => void, signal: AbortSignal) => Promise<void>;

interface Subscriber {
  /** The entry's sequence number of the last value given to this subscriber (0: none). */
  seen: number;
  wake: (() => void) | undefined;
}

interface Entry<T> {
  latest: T | undefined;
  /** Counts emits: a subscriber whose `seen` is below it has a value to take. */
  seq: number;
  ended: boolean;
  readonly subscribers: Set<Subscriber>;
  readonly abort: AbortController;
  linger: NodeJS.Timeout | undefined;
}

/** Fans one follower per key out to its subscribers; see the module comment. */
export class Fanout<T> {
  private readonly entries = new Map<string, Entry<T>>();
  private closed = false;

  /**
   * @param follow - starts following a key (see {@link Follow}).
   * @param lingerMs - how long a key's upstream outlives its last subscriber (ms). Default 5000.
   */
  constructor(
    private readonly follow: Follow<T>,
    private readonly lingerMs = 5000,
  ) {}

  /** How many keys are followed now (one upstream each). */
  get upstreams(): number {
    return this.entries.size;
  }

  /** How many subscribers all keys have now. */
  get subscribers(): number {
    let n = 0;
    for (const e of this.entries.values()) n += e.subscribers.size;
    return n;
  }

  /**
   * The key's latest state (at once, when the upstream already has one), then each newer one;
   * a subscriber that falls behind gets only the newest.
   * @param key - the key to follow.
   * @param signal - ends the subscription.
   * @returns the states, as an async generator; it ends when `signal` aborts, `close()` is
   *   called (or was: it then yields nothing), or the upstream gives up.
   */
  async *subscribe(key: string, signal: AbortSignal): AsyncGenerator<T> {
    if (signal.aborted || this.closed) return;
    const entry = this.entry(key);
    const sub: Subscriber = { seen: 0, wake: undefined };
    entry.subscribers.add(sub);
    const onAbort = (): void => sub.wake?.();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      for (;;) {
        if (signal.aborted) return;
        if (entry.seq > sub.seen && entry.latest !== undefined) {
          sub.seen = entry.seq;
          yield entry.latest;
          continue;
        }
        if (entry.ended) return;
        await new Promise<void>((resolve) => (sub.wake = resolve));
        sub.wake = undefined;
      }
    } finally {
      signal.removeEventListener('abort', onAbort);
      entry.subscribers.delete(sub);
      if (entry.subscribers.size === 0) this.release(key, entry);
    }
  }

  /** Stops every upstream and ends every subscription; later subscriptions end at once. */
  close(): void {
    this.closed = true;
    for (const [key, entry] of this.entries) this.end(key, entry);
  }

  private entry(key: string): Entry<T> {
    let entry = this.entries.get(key);
    if (entry !== undefined) {
      clearTimeout(entry.linger);
      entry.linger = undefined;
      return entry;
    }
    const e: Entry<T> = { latest: undefined, seq: 0, ended: false, subscribers: new Set(), abort: new AbortController(), linger: undefined };
    entry = e;
    this.entries.set(key, e);
    const emit = (value: T): void => {
      if (e.ended) return;
      e.latest = value;
      e.seq++;
      for (const s of e.subscribers) s.wake?.();
    };
    // Started on a later microtask, so a follower that throws at once ends the entry, not this call.
    void Promise.resolve()
      .then(() => this.follow(key, emit, e.abort.signal))
      .catch(() => undefined)
      .finally(() => this.end(key, e));
    return e;
  }

  private release(key: string, entry: Entry<T>): void {
    if (entry.ended) return;
    clearTimeout(entry.linger);
    entry.linger = setTimeout(() => {
      if (entry.subscribers.size === 0) this.end(key, entry);
    }, this.lingerMs);
    entry.linger.unref();
  }

  private end(key: string, entry: Entry<T>): void {
    if (entry.ended) return;
    entry.ended = true;
    clearTimeout(entry.linger);
    entry.abort.abort();
    if (this.entries.get(key) === entry) this.entries.delete(key);
    for (const s of entry.subscribers) s.wake?.();
  }
}
