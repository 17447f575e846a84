/**
 * The Sync server's connected clients: for each user, the Notify streams open on this server and
 * the highest sequence number their inbox reached that they have not been told yet. A poke (from
 * the Message service) wakes the user's streams; a stream that is busy sending finds the poke
 * waiting when it next asks. Kept small: an idle stream costs one entry in a set and one pending
 * promise.
 */

/** One Notify stream's place in the hub. */
export interface Subscription {
  /**
   * Waits until the inbox reaches a sequence number above `known`.
   * @returns that sequence number; rejects when `signal` aborts (the stream ended).
   */
  next(known: number, signal: AbortSignal): Promise<number>;
  /** Leaves the hub. */
  close(): void;
}

interface Waiter {
  /** The highest sequence number poked since the stream last asked. */
  seq: number;
  wake: ((seq: number) => void) | undefined;
}

/** The Notify streams of this server, by user. */
export class NotifyHub {
  private readonly byUser = new Map<string, Set<Waiter>>();

  /** How many users have a stream open. */
  get users(): number {
    return this.byUser.size;
  }

  /** Joins `user`'s streams (before reading the inbox, so that no poke falls in between). */
  subscribe(user: string): Subscription {
    const w: Waiter = { seq: 0, wake: undefined };
    let set = this.byUser.get(user);
    if (set === undefined) this.byUser.set(user, (set = new Set()));
    set.add(w);
    return {
      next: (known, signal) => {
        if (w.seq > known) return Promise.resolve(w.seq);
        return new Promise<number>((resolve, reject) => {
          const onAbort = () => {
            w.wake = undefined;
            reject(signal.reason);
          };
          if (signal.aborted) return onAbort();
          signal.addEventListener('abort', onAbort, { once: true });
          w.wake = (seq) => {
            if (seq <= known) return;
            w.wake = undefined;
            signal.removeEventListener('abort', onAbort);
            resolve(seq);
          };
        });
      },
      close: () => {
        set.delete(w);
        if (set.size === 0 && this.byUser.get(user) === set) this.byUser.delete(user);
      },
    };
  }

  /**
   * `user`'s inbox reached `seq`: wakes their streams.
   * @returns whether the user has a stream open here.
   */
  poke(user: string, seq: number): boolean {
    const set = this.byUser.get(user);
    if (set === undefined) return false;
    for (const w of set) {
      if (seq > w.seq) w.seq = seq;
      w.wake?.(w.seq);
    }
    return true;
  }
}
