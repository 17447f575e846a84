/**
 * The server's scheduling stage (with FastReject on): when an admitted unary call's handler starts.
 *
 * A handler that burns CPU blocks the event loop, and while it does, nothing is read: new calls
 * wait in the kernel's socket buffers, where no one can count, order or refuse them. So handlers
 * run in slices of at most `sliceMs` (5 ms) of one event-loop turn:
 * - while nothing waits and the turn's slice has time left, a call starts at once, inline, as it
 *   is read (the fast path: no queue, no extra hop);
 * - otherwise it waits in the call queue (overload/call-queue.ts: most important first), and the
 *   queue is served after the turn's I/O (`setImmediate`), for a slice, or for as long as the
 *   turn spent reading if that was longer (at most 10 slices). Between slices the
 *   event loop reads every socket, so calls arrive into FastReject within about a slice, where
 *   their waiting is measured, the most important are served first, and the rest can be refused.
 *   (Seastar's reactor does the same with its task quota: run tasks for a bounded time, then
 *   poll for I/O.) A handler's CPU after its first `await` runs as a promise continuation,
 *   outside the slices.
 *
 * Each start reports what the controller's signal is made of: how long the call waited since it
 * was read, and how many calls are still waiting (server-measured: a client's clock, which it
 * may set as it likes, only decides its own call's deadline). A call whose deadline passed
 * while it waited is answered DEADLINE_EXCEEDED unprocessed instead of started. While the server
 * sheds load, a call that waited longer than the controller allows (`maxWaitMs`) is refused
 * RESOURCE_EXHAUSTED unprocessed, and when the admission level drops, the waiting calls above it
 * are refused at once (both are Breakwater's early drops).
 * A call its client cancels while it waits leaves the queue unstarted and unanswered, as do the
 * waiting calls of a connection that closes; and a call id that is waiting is not reused: a
 * REQUEST with it is refused as a duplicate.
 * What waiting calls hold is counted per connection (`waitingCost`): past the connection's cap
 * the server stops reading it until its waiting calls are down to half (server-connection.ts), so
 * one client cannot fill the server's memory with calls read faster than they start.
 * Streams are not queued: they start as they arrive (their messages need the call in place).
 */
import { CallQueue } from '../overload/call-queue.js';
import { priorityLevel } from '../overload/priority.js';
import type { DecodedHeader } from './request-decoder.js';
import type { InboundCall } from './inbound-call.js';
import type { ServerConnection } from './server-connection.js';

/**
 * What a waiting call is counted to hold beyond its frame's bytes: its decoded header and
 * metadata objects, its queue entry, and its body copy's share of a pool slab (an estimate, bytes).
 */
export const WAITING_CALL_OVERHEAD_BYTES = 1024;

/**
 * What a waiting call is counted to hold, against its connection's cap.
 * @param headerBytes - its frame's header (bytes); `bodyBytes` - its body (bytes).
 * @returns bytes: both plus `WAITING_CALL_OVERHEAD_BYTES`.
 */
export function waitingCost(headerBytes: number, bodyBytes: number): number {
  return headerBytes + bodyBytes + WAITING_CALL_OVERHEAD_BYTES;
}

/** An admitted unary call, read and waiting. */
export interface WaitingCall {
  /** Its connection. */
  readonly sc: ServerConnection<InboundCall>;
  /** Its id on that connection. */
  readonly callId: number;
  /** What the decoding stage found (its `queued` and `waited` as of `at`). */
  readonly decoded: DecodedHeader;
  /** The request body (a copy once it waits: the frame's buffer is reused). */
  readonly body: Buffer;
  /** Epoch ms the frame's chunk was read. */
  readonly arrival: number;
  /** Epoch ms the header was decoded (`decoded.waited` and `queued` were measured then). */
  readonly at: number;
  /** What it is counted to hold (`waitingCost`, bytes). */
  readonly cost: number;
}

/** What the scheduler calls; the server implements it. */
export interface SchedulerHooks {
  /**
   * Start a queued call's handler now.
   * @param call - the call; `now` - epoch ms.
   * @param inQueueMs - how long it waited in this queue since its header was decoded (ms).
   * @param queued - calls still waiting as it starts.
   */
  start(call: WaitingCall, now: number, inQueueMs: number, queued: number): void;
  /** The call's deadline passed while it waited (`inQueueMs` in this queue): answer it. */
  expired(call: WaitingCall, inQueueMs: number): void;
  /** The admission level dropped below the call's `level`: refuse it. */
  refused(call: WaitingCall, level: number): void;
  /** How long the call may wait (ms; Infinity while the server admits everything). */
  maxWaitMs(call: WaitingCall): number;
  /** The call waited longer than that (`inQueueMs` in this queue): refuse it. */
  dropped(call: WaitingCall, inQueueMs: number): void;
}

/** The scheduling stage; see the module comment. */
export class Scheduler {
  private readonly queue = new CallQueue<WaitingCall>();
  /** An end-of-turn callback is pending (set when a slice starts or calls wait). */
  private pending = false;
  /** Time spent serving the queue (ms) and the calls started from it, since `serviceSample`. */
  private drainMs = 0;
  private drained = 0;
  /** Epoch ms the current slice started, and the last drain ended. */
  private sliceStart = 0;
  private drainEnd = 0;
  private readonly turnEnd = (): void => this.drain();

  /**
   * @param sliceMs - handler time per event-loop turn before reading again (ms).
   * @param now - the server's clock, epoch ms.
   * @param hooks - see `SchedulerHooks`.
   */
  constructor(
    private readonly sliceMs: number,
    private readonly now: () => number,
    private readonly hooks: SchedulerHooks,
  ) {}

  /** Calls waiting. */
  get size(): number {
    return this.queue.size;
  }

  /** The calls waiting at each priority level, 0..16383 (a live view, to read only). */
  get byLevel(): ArrayLike<number> {
    return this.queue.byLevel;
  }

  /**
   * Calls waiting that are served before a call of `level` that joins now (its business priority and more important ones).
   * @param level - a priority level, 0..16383.
   * @returns a count.
   */
  ahead(level: number): number {
    return this.queue.size === 0 ? 0 : this.queue.ahead(level);
  }

  /**
   * The time it took to start a queued call (its handler's synchronous part, and the queue's own
   * work), averaged since the last sample: what one waiting call costs the queue.
   * @returns ms per call, or undefined when no queued call started since.
   */
  serviceSample(): number | undefined {
    const ms = this.drained > 0 ? this.drainMs / this.drained : undefined;
    this.drainMs = 0;
    this.drained = 0;
    return ms;
  }

  /**
   * How long the oldest waiting call has waited since it was read.
   * @param now - epoch ms.
   * @returns ms, 0 when none waits.
   */
  oldestWaitMs(now: number): number {
    const since = this.queue.oldestSince();
    return since === undefined ? 0 : now - since;
  }

  /**
   * An admitted unary call: says to start it now when nothing waits and the turn's slice has time
   * left, else queues it (the fast path allocates nothing).
   * @param sc - its connection; `callId` - its id; `decoded` - its header.
   * @param body - its request body (a view valid only now: copied if it waits).
   * @param headerBytes - the size of its frame's header (bytes).
   * @param arrival - epoch ms its chunk was read; `now` - epoch ms its header was decoded.
   * @returns true when the caller is to start it now; false when it was queued.
   */
  submit(sc: ServerConnection<InboundCall>, callId: number, decoded: DecodedHeader, body: Buffer, headerBytes: number, arrival: number, now: number): boolean {
    if (this.queue.size === 0) {
      if (!this.pending) {
        this.pending = true;
        this.sliceStart = now;
        setImmediate(this.turnEnd);
      }
      if (now - this.sliceStart < this.sliceMs) return true;
    }
    const d = decoded.header.d;
    const deadline = d !== undefined && d > 0 ? now - decoded.waited + d : Infinity;
    const call: WaitingCall = { sc, callId, decoded, body: Buffer.from(body), arrival, at: now, cost: waitingCost(headerBytes, body.length) };
    sc.waiting.set(callId, this.queue.push(call, priorityLevel(decoded.business, decoded.user), now - decoded.queued, deadline));
    sc.addWaiting(call.cost);
    return false;
  }

  /**
   * Removes a waiting call its client cancelled (no answer is sent: the client gave up).
   * @param sc - its connection; `callId` - its id.
   * @returns true if it was waiting here; false if it is not (running, answered, or unknown).
   */
  cancel(sc: ServerConnection<InboundCall>, callId: number): boolean {
    const handle = sc.deleteWaiting(callId);
    if (handle === undefined) return false;
    const call = this.queue.removeCall(handle);
    if (call !== undefined) sc.removeWaiting(call.cost);
    return true;
  }

  /**
   * Removes every waiting call of a connection that closed (nobody is left to answer).
   * @param sc - the connection.
   * @returns how many were removed.
   */
  dropConnection(sc: ServerConnection<InboundCall>): number {
    if (sc.waitingCount === 0) return 0;
    let n = 0;
    for (const handle of sc.waiting.values()) if (this.queue.removeCall(handle) !== undefined) n++;
    sc.clearWaiting();
    sc.waitingBytes = 0;
    return n;
  }

  /**
   * Refuses every waiting call above `level` (the admission level dropped to it).
   * @returns how many were refused.
   */
  refuseAbove(level: number): number {
    const out = this.queue.removeAbove(level);
    for (const call of out) {
      left(call);
      this.hooks.refused(call, priorityLevel(call.decoded.business, call.decoded.user));
    }
    return out.length;
  }

  /** Serves the queue for one slice after the turn's I/O, and comes back next turn if calls are left. */
  private drain(): void {
    this.pending = false;
    if (this.queue.size === 0) return;
    const start = this.now();
    let t = start;
    this.sliceStart = start;
    // As long as the turn spent outside the queue (reading, mostly), up to 10 slices: reading a
    // flood of cheap calls must not starve starting them.
    const budget = Math.min(10 * this.sliceMs, Math.max(this.sliceMs, start - this.drainEnd));
    const q = this.queue;
    while (q.size > 0) {
      for (const call of q.removeOldestWhile((c, since, deadline) => deadline <= t || t - since > this.hooks.maxWaitMs(c))) {
        left(call);
        if (call.sc.conn.closed) continue;
        const inQueue = t - call.at;
        const d = call.decoded.header.d;
        if (d !== undefined && d > 0 && call.decoded.waited + inQueue >= d) this.hooks.expired(call, inQueue);
        else this.hooks.dropped(call, inQueue);
      }
      const call = q.shift();
      if (call === undefined) break;
      left(call);
      if (call.sc.conn.closed) continue;
      const inQueue = t - call.at;
      const waited = call.decoded.waited + inQueue;
      const d = call.decoded.header.d;
      if (d !== undefined && d > 0 && waited >= d) {
        this.hooks.expired(call, inQueue);
        continue;
      }
      this.hooks.start(call, t, inQueue, q.size);
      this.drained++;
      t = this.now();
      if (t - start >= budget) break;
    }
    this.drainMs += t - start;
    this.drainEnd = t;
    if (q.size > 0) {
      this.pending = true;
      setImmediate(this.turnEnd);
    }
  }
}

/** A call left the queue: its connection no longer counts it as waiting. */
function left(call: WaitingCall): void {
  call.sc.deleteWaiting(call.callId);
  call.sc.removeWaiting(call.cost);
}
