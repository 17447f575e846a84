/**
 * The Sync server's connected clients: each Notify stream is a {@link NotifyStream}, registered
 * under its user in a {@link NotifyHub}; a poke (from the Message service) wakes the user's streams.
 *
 * Kept small, since a Sync server holds every connected client's stream (seed 003's access layer
 * holds millions of long connections): a stream is one object and, while idle, one pending
 * promise (its first read of the inbox settles that same promise, and is then let go). It is a
 * hand-written async iterator rather than an async generator: the server ends a stream by calling
 * `return()`, which an iterator can honour at once while a `next()` waits, so a stream needs
 * neither a generator frame nor a listener on the call's abort signal.
 */

/** What a Notify stream yields: the inbox holds messages up to `seq`. */
export interface Moved {
  seq: bigint;
}

/** The Notify streams of this server, by user. */
export class NotifyHub {
  /** A user's stream, or their streams when they have several open. */
  private readonly byUser = new Map<string, NotifyStream | Set<NotifyStream>>();

  /** How many users have a stream open. */
  get users(): number {
    return this.byUser.size;
  }

  /** Adds a stream (before it reads the inbox, so that no poke falls in between). */
  add(s: NotifyStream): void {
    const e = this.byUser.get(s.user);
    if (e === undefined) this.byUser.set(s.user, s);
    else if (e instanceof Set) e.add(s);
    else this.byUser.set(s.user, new Set([e, s]));
  }

  /** Removes a stream. */
  remove(s: NotifyStream): void {
    const e = this.byUser.get(s.user);
    if (e === s) this.byUser.delete(s.user);
    else if (e instanceof Set) {
      e.delete(s);
      if (e.size === 1) this.byUser.set(s.user, e.values().next().value!);
    }
  }

  /**
   * `user`'s inbox reached `seq`: wakes their streams.
   * @returns whether the user has a stream open here.
   */
  poke(user: string, seq: number): boolean {
    const e = this.byUser.get(user);
    if (e === undefined) return false;
    if (e instanceof Set) for (const s of e) s.wake(seq);
    else e.wake(seq);
    return true;
  }
}

/**
 * One Notify stream: yields the inbox's sequence number each time it moves past the last one the
 * client knows (the first time at once when the inbox is already past the client's `last_seq`).
 * Several pokes while the client is being sent one are folded into the next event.
 */
export class NotifyStream implements AsyncIterableIterator<Moved> {
  /** The highest sequence number poked (or read) so far. */
  private reached = 0;
  private resolve: ((r: IteratorResult<Moved>) => void) | undefined;
  private closed = false;
  /** Reads the inbox's last sequence number; dropped once the first `next()` ran it. */
  private current: (() => Promise<number>) | undefined;

  /**
   * @param hub - where it registers (now, until `return()`).
   * @param user - whose inbox.
   * @param known - the last sequence number the client has.
   * @param current - reads the inbox's last sequence number: run once, by the first `next()` that
   *   has to wait (a poke that came before answers the first at once).
   */
  constructor(
    private readonly hub: NotifyHub,
    readonly user: string,
    private known: number,
    current: () => Promise<number>,
  ) {
    this.current = current;
    hub.add(this);
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<Moved>> {
    if (this.closed) return Promise.resolve({ done: true, value: undefined });
    if (this.reached > this.known) {
      this.known = this.reached;
      return Promise.resolve({ done: false, value: { seq: BigInt(this.known) } });
    }
    const current = this.current;
    this.current = undefined;
    return new Promise((resolve, reject) => {
      this.resolve = resolve;
      // The first call reads the inbox; a poke may settle the promise first.
      current?.().then(
        (last) => this.wake(last),
        (err: unknown) => {
          if (this.resolve !== resolve) return;
          this.resolve = undefined;
          reject(err);
        },
      );
    });
  }

  /** Ends the stream (the server calls it when the call ends, cancelled or not). */
  return(): Promise<IteratorResult<Moved>> {
    if (!this.closed) {
      this.closed = true;
      this.hub.remove(this);
    }
    const r = this.resolve;
    this.resolve = undefined;
    r?.({ done: true, value: undefined });
    return Promise.resolve({ done: true, value: undefined });
  }

  /** The inbox reached `seq`. */
  wake(seq: number): void {
    if (seq > this.reached) this.reached = seq;
    const r = this.resolve;
    if (r === undefined || this.reached <= this.known) return;
    this.resolve = undefined;
    this.known = this.reached;
    r({ done: false, value: { seq: BigInt(this.known) } });
  }
}
