/**
 * The server's connection stage: one client connection, and the connection-level protocol that
 * involves no call. It answers PING, sends GOAWAY and the PING that follows it, notes the PONG
 * that shows the client saw the GOAWAY (after which no call it sends is taken), closes the
 * connection once it is draining and idle, refuses oversized request frames, and tracks the
 * connection's base one-way delay (how long a call waited before it was read). Every frame that
 * belongs to a call goes to the owner (the server).
 */
import type { QueuedCall } from '../overload/call-queue.js';
import { CallTable } from './call-table.js';
import type { RpcErrorEntry } from '../errors.js';
import { Connection, type ConnectionEvents, type ConnectionOptions } from '../transport/connection.js';
import type { ByteStream, PeerIdentity } from '../transport/transport.js';
import type { TicketAuth, TicketCheck } from '../tickets/ticket-verifier.js';
import { FrameKind, MAX_CONNECTION_TICKETS, MAX_TICKET_LENGTH } from '../wire/frame.js';
import { decodeTicketHeader, encodeStatusHeader, HeaderError } from '../wire/header.js';
import type { RpcError } from '../wire/status.js';
import { errors } from '../errors.js';

/** Call id of the PING sent after GOAWAY; its PONG means the client has seen the GOAWAY. */
export const GOAWAY_PING_ID = 0xffffffff;

/** What a connection hands its owner. */
export interface ConnectionOwner<C> {
  /**
   * A frame of a call: REQUEST, MESSAGE, WINDOW, HALF_CLOSE or CANCEL. `header` and `body` are
   * views valid only during the call.
   */
  onCallFrame(sc: ServerConnection<C>, kind: number, callId: number, header: Buffer, body: Buffer): void;
  /** A request MESSAGE frame over the maximum size (`size` bytes) was skipped: fail its call. */
  onOversizedMessage(sc: ServerConnection<C>, callId: number, size: number): void;
  /** The socket closed. */
  onClosed(sc: ServerConnection<C>): void;
  /**
   * Parked calls may start: the bytes waiting for the client fell to half the cap, or a call
   * ended (so fewer replies are expected). Start those that fit.
   */
  onWritable?(sc: ServerConnection<C>): void;
  /** May a large REQUEST or MESSAGE frame be buffered (see `LargeFrameListener`)? False: the owner answered it. */
  admitLarge?(sc: ServerConnection<C>, kind: number, callId: number, size: number): boolean;
  /** The client's first bytes were another protocol's (`description` says which, and what to do); the connection closes. */
  onForeignProtocol?(sc: ServerConnection<C>, description: string): void;
}

/**
 * A unary call read and admitted, held back because its client is not reading its responses:
 * `start(now)` starts it (or answers it, when its deadline passed while it was held).
 */
export interface ParkedCall {
  /** Bytes of its request body (a copy). */
  readonly bytes: number;
  /** Starts it (epoch ms now). */
  start(now: number): void;
}

/** Connection limits of a server. */
export interface ConnectionLimits {
  /** Largest frame accepted or sent, prefix included (bytes). */
  readonly maxFrameBytes: number;
  /** Bytes that may wait for the client before the server stops reading the connection (bytes). */
  readonly maxQueuedBytes: number;
  /**
   * The server's estimate of a reply's size (bytes), shared by its connections: a new connection
   * starts from it, and every connection's replies update it (see `ServerConnection.replyEstimate`).
   */
  readonly replyEstimate: { bytes: number };
}

/**
 * The first estimate of a reply's size, before a server sent any (bytes): high, so a new server
 * starts at most cap / 64 KiB (128) unary calls of one connection per event-loop turn until it
 * has seen replies; the estimate falls toward the real sizes within a few hundred replies.
 */
export const INITIAL_REPLY_ESTIMATE_BYTES = 64 * 1024;

/**
 * The next estimate of a reply's size after a reply of `bytes`: a larger reply raises it at once,
 * a smaller one lowers it by 1/64 of the difference, rounded down (so it stays near the largest
 * recent reply, and an integer: a small integer field needs no heap box).
 */
function nextEstimate(estimate: number, bytes: number): number {
  return bytes >= estimate ? bytes : Math.floor(estimate - (estimate - bytes) / 64);
}

/**
 * The status header of a catalogue error, without making an RpcError (no stack trace to capture
 * on the refusal paths, which overload makes hot).
 * @param admissionLevel - the level to advertise (`al`), or undefined.
 * @param error - the catalogue entry; `args` - its message template's arguments.
 * @returns the encoded header: the entry's status, message, not-processed flag and reason.
 */
export function errorHeader<A extends unknown[]>(admissionLevel: number | undefined, error: RpcErrorEntry<A>, ...args: A): Uint8Array {
  return encodeStatusHeader(error.status, error.message(...args), undefined, error.notProcessed, admissionLevel, error.reason);
}

/** `ServerConnection`'s identity before it was read. */
const NOT_READ: unique symbol = Symbol('not read');

/** The characters of a JWS compact string (base64url and dots). */
const JWS_CHARACTERS = /^[A-Za-z0-9_.-]*$/;

/** A ticket defined on a connection, with its last check (valid while `generation` is the verifier's and, for `auth`, until it expires). */
export interface TicketSlot {
  /** Its id on the connection (the TICKET frame's call id). */
  readonly id: number;
  readonly ticket: string;
  /** The ticket defined was longer than `MAX_TICKET_LENGTH`, or not a JWS's characters (not kept). */
  readonly oversized: boolean;
  /** The verifier's key generation when it was checked (-1: not checked). */
  generation: number;
  /** The identity it proved, when its check passed. */
  auth: TicketAuth | undefined;
  /** Why its check failed, when it failed (a forged ticket referred to again costs no new check). */
  failure: Extract<TicketCheck, { ok: false }> | undefined;
}

/**
 * One client connection, with the calls on it (`C`, the server's call type). It is its framed
 * connection's event sink itself, and creates its maps of tickets, waiting and parked calls on
 * first use: an idle client costs the server little (bench/inbox/notify.ts measures it).
 */
export class ServerConnection<C> implements ConnectionEvents {
  /** The calls in flight on this connection, by call id. */
  readonly calls = new CallTable<C>();
  /**
   * The tickets defined on this connection, oldest first (a client defines few: an array costs an
   * idle connection less than a map, and a lookup scans at most `MAX_CONNECTION_TICKETS`).
   */
  private ticketSlots: TicketSlot[] | undefined;
  private waitingCalls: Map<number, QueuedCall> | undefined;
  private parkedCalls: Map<number, ParkedCall> | undefined;
  /** The peer's identity once read (`NOT_READ` before). */
  private identity: PeerIdentity | undefined | typeof NOT_READ = NOT_READ;

  /** The verified TLS client certificate's identity (read once per connection), or undefined. */
  get peerIdentity(): PeerIdentity | undefined {
    if (this.identity === NOT_READ) this.identity = this.conn.socket.peerIdentity?.();
    return this.identity;
  }
  /** The framed connection. */
  readonly conn: Connection;
  /** Streaming calls open on this connection (capped by `ServerOptions.maxStreamsPerConnection`). */
  streams = 0;

  /**
   * The ticket the client defined under `id` on this connection (a TICKET frame), with the result
   * of its last check (see request-decoder.ts), or undefined. A connection keeps the last
   * `MAX_CONNECTION_TICKETS` defined.
   */
  ticket(id: number): TicketSlot | undefined {
    const slots = this.ticketSlots;
    if (slots === undefined) return undefined;
    for (let i = slots.length - 1; i >= 0; i--) if (slots[i]!.id === id) return slots[i];
    return undefined;
  }

  /**
   * Admitted unary calls of this connection waiting for their handler (scheduler.ts), by call id:
   * their places in its queue. Reading it makes the map: to ask, use `waitingCount` or `hasCall`;
   * to remove, `deleteWaiting` and `clearWaiting`, which let an empty map go.
   */
  get waiting(): Map<number, QueuedCall> {
    return (this.waitingCalls ??= new Map());
  }

  /** Removes a waiting call. @returns its place in the queue, or undefined if it was not waiting. */
  deleteWaiting(callId: number): QueuedCall | undefined {
    const m = this.waitingCalls;
    const q = m?.get(callId);
    if (q === undefined) return undefined;
    m!.delete(callId);
    if (m!.size === 0) this.waitingCalls = undefined;
    return q;
  }

  /** Forgets every waiting call (the connection closed). */
  clearWaiting(): void {
    this.waitingCalls = undefined;
  }

  /**
   * Unary calls held back, by call id in arrival order, because more than the cap of response
   * bytes waited for this client (it does not read) when they were read: they start once half of
   * those bytes have drained. Reading it makes the map: to ask, use `parkedCount` or `hasCall`; to
   * remove, `deleteParked`, which lets an empty map go.
   */
  get parked(): Map<number, ParkedCall> {
    return (this.parkedCalls ??= new Map());
  }

  /** Removes a parked call. @returns it, or undefined if it was not parked. */
  deleteParked(callId: number): ParkedCall | undefined {
    const m = this.parkedCalls;
    const p = m?.get(callId);
    if (p === undefined) return undefined;
    m!.delete(callId);
    if (m!.size === 0) this.parkedCalls = undefined;
    return p;
  }

  /** How many calls are parked (see `parked`). */
  get parkedCount(): number {
    return this.parkedCalls === undefined ? 0 : this.parkedCalls.size;
  }

  /** How many calls wait for their handler (see `waiting`). */
  get waitingCount(): number {
    return this.waitingCalls === undefined ? 0 : this.waitingCalls.size;
  }

  /** Whether `callId` names a call of this connection: running, waiting or parked. */
  hasCall(callId: number): boolean {
    return this.calls.has(callId) || this.waitingCalls?.has(callId) === true || this.parkedCalls?.has(callId) === true;
  }
  /** Bytes of the request bodies of the parked calls. */
  parkedBytes = 0;
  /**
   * What the calls waiting in the scheduler's queue hold (bytes, as the scheduler counts them:
   * `waitingCost`). Past the cap, this connection is not read until it is down to half.
   */
  waitingBytes = 0;
  /** The server's limits, shared by its connections. */
  private readonly limits: ConnectionLimits;
  /**
   * The size a reply on this connection is expected to have (bytes): near the largest recent one
   * (see `nextEstimate`); the server's estimate until this connection sent a reply. The unary
   * calls started in one event-loop turn whose replies would, by it, take the bytes waiting for
   * the client past the cap are parked (`repliesFull`): a flood of small requests with large
   * replies, read in one chunk, does not start more calls than the cap can answer.
   */
  private replyEstimate = 0;
  /** Unary calls of this connection started in this event-loop turn (their replies are not queued yet). */
  private burst = 0;
  /** GOAWAY was sent (the server is closing). */
  draining = false;
  /** The client answered the PING sent after GOAWAY: every call it sent before seeing GOAWAY has arrived. */
  goawayAcked = false;
  /**
   * Base one-way offset (server receive time minus client send time, ms) over the last 1-2
   * minutes: the minimum, taken as "no queueing" (LEDBAT's base delay, RFC 6817). It absorbs
   * clock skew between the hosts; a clock step is forgotten within two minutes. `minCur` is the
   * minimum of the current minute of the clock (number `minute`), `minPrev` of the last minute
   * before it that had calls (undefined: none).
   */
  private minCur: number | undefined;
  private minPrev: number | undefined;
  private minute = 0;

  /**
   * @param socket - the accepted byte stream.
   * @param owner - where call frames go.
   * @param limits - the largest frame (bytes) and the cap of bytes waiting for the client (bytes).
   * @param options - the framed connection's settings (`connectionOptions(limits, now)`, made
   *   once per server and shared by its connections).
   */
  constructor(
    socket: ByteStream,
    private readonly owner: ConnectionOwner<C>,
    limits: ConnectionLimits,
    options: ConnectionOptions,
  ) {
    this.limits = limits;
    this.conn = new Connection(socket, options, this);
  }

  /**
   * The settings of a server's framed connections, made once per server.
   * @param limits - the largest frame and the cap of bytes waiting for the client (bytes).
   * @param now - the server's clock (epoch ms), which stamps each chunk's arrival.
   * @returns `ConnectionOptions` with those, and reads paused while writes are blocked.
   */
  static connectionOptions(limits: ConnectionLimits, now: () => number): ConnectionOptions {
    return { maxFrameBytes: limits.maxFrameBytes, pauseReadsWhileBlocked: true, now, maxQueuedBytes: limits.maxQueuedBytes };
  }

  /** @internal ConnectionEvents: a REQUEST or MESSAGE frame over the maximum is skipped; its call is answered or failed. */
  onOversized(kind: number, callId: number, size: number): void {
    if (kind === FrameKind.REQUEST) this.conn.send(FrameKind.RESPONSE, callId, errorHeader(undefined, errors.REQUEST_TOO_LARGE, size, this.limits.maxFrameBytes));
    else if (kind === FrameKind.MESSAGE) this.owner.onOversizedMessage(this, callId, size);
  }

  /** @internal ConnectionEvents: the socket closed. */
  onClose(): void {
    this.owner.onClosed(this);
  }

  /** @internal ConnectionEvents: the bytes waiting for the client fell to half the cap. */
  onWritable(): void {
    this.owner.onWritable?.(this);
  }

  /** @internal ConnectionEvents: the client speaks another protocol; the owner logs it. */
  onForeignProtocol(_protocol: string, description: string): void {
    this.owner.onForeignProtocol?.(this, description);
  }

  /** @internal ConnectionEvents: may a large frame be buffered? (Yes, unless the owner says no.) */
  onLarge(kind: number, callId: number, size: number): boolean {
    return this.owner.admitLarge === undefined || this.owner.admitLarge(this, kind, callId, size);
  }

  /** The end of an event-loop turn that started unary calls (`setImmediate(endBurst, connection)`). */
  private static endBurst(sc: ServerConnection<unknown>): void {
    sc.burst = 0;
    if (sc.parkedCount > 0 && !sc.conn.closed) sc.owner.onWritable?.(sc);
  }

  /**
   * A call of this connection starts to wait for its handler (it costs `bytes`): past the cap
   * (the one on bytes waiting for the client), the connection is not read until the calls that
   * wait are down to half of it. A client that sends faster than its calls start then waits in
   * its own buffers, not in this server's memory.
   */
  addWaiting(bytes: number): void {
    this.waitingBytes += bytes;
    if (this.waitingBytes > this.limits.maxQueuedBytes) this.conn.holdReads('waiting');
  }

  /** A waiting call of this connection left the queue (started, answered or dropped). */
  removeWaiting(bytes: number): void {
    this.waitingBytes -= bytes;
    if (this.waitingBytes <= this.limits.maxQueuedBytes / 2) this.conn.releaseReads('waiting');
  }

  /** A unary call's reply of `bytes` (header and body) is queued: updates the reply estimates. */
  noteReply(bytes: number): void {
    this.replyEstimate = nextEstimate(this.replyEstimate === 0 ? this.limits.replyEstimate.bytes : this.replyEstimate, bytes);
    this.limits.replyEstimate.bytes = nextEstimate(this.limits.replyEstimate.bytes, bytes);
  }

  /**
   * Whether one more unary call, started now, could by the reply estimate take the bytes waiting
   * for the client past the cap, counting the calls started in this event-loop turn (their
   * replies are queued only after the turn's synchronous work). Calls of earlier turns are not
   * counted: a call that waits on I/O holds back no other. The turn's first call may always start;
   * the next turn starts the parked calls that then fit (`ConnectionOwner.onWritable`).
   */
  get repliesFull(): boolean {
    return this.burst > 0 && this.conn.queuedBytes + (this.burst + 1) * (this.replyEstimate || this.limits.replyEstimate.bytes) > this.limits.maxQueuedBytes;
  }

  /** A unary call of this connection starts (see `repliesFull`). */
  startedUnary(): void {
    if (this.burst++ === 0) setImmediate(ServerConnection.endBurst, this);
  }

  /** A call of this connection ended: parked calls may start now (`ConnectionOwner.onWritable`). */
  callEnded(): void {
    if (this.parkedCount > 0) this.owner.onWritable?.(this);
  }

  /** Whether no call is running, waiting or parked on this connection. */
  get idle(): boolean {
    return this.calls.size === 0 && this.waitingCount === 0 && this.parkedCount === 0;
  }

  /**
   * How long a call sent at `sentAt` (client clock) has waited before `now` (server clock),
   * beyond the fastest call seen on this connection lately: time in the client's send buffer,
   * the kernel's queues, and this server's read queue.
   * @returns ms, >= 0.
   */
  queuedFor(sentAt: number, now: number): number {
    const offset = now - sentAt;
    const minute = Math.floor(now / 60_000);
    if (minute !== this.minute) {
      // Keep two one-minute minima: a clock step (NTP) is forgotten within two minutes, while a
      // real queue shows in every minute (FastReject keeps it short, so minima stay at the base).
      this.minPrev = this.minCur;
      this.minCur = undefined;
      this.minute = minute;
    }
    if (this.minCur === undefined || offset < this.minCur) this.minCur = offset;
    const base = this.minPrev === undefined || this.minCur < this.minPrev ? this.minCur : this.minPrev;
    return offset - base;
  }

  /**
   * Answers a call no handler saw with a catalogue error (status, message, reason, and the
   * entry's not-processed flag, which tells the client it may retry the call elsewhere).
   * @param admissionLevel - the level to advertise, or undefined.
   */
  refuse<A extends unknown[]>(callId: number, admissionLevel: number | undefined, error: RpcErrorEntry<A>, ...args: A): void {
    this.conn.send(FrameKind.RESPONSE, callId, errorHeader(admissionLevel, error, ...args));
  }

  /** Starts draining: sends GOAWAY with `reason`, then the PING whose PONG marks the last call. */
  goaway(reason: RpcError): void {
    this.draining = true;
    this.conn.goaway(reason);
    this.conn.send(FrameKind.PING, GOAWAY_PING_ID);
  }

  /** Ends a draining connection once its client has seen GOAWAY and no call is left on it (running or waiting). */
  endIfDrained(): void {
    if (this.draining && this.goawayAcked && this.idle) this.conn.end();
  }

  /** @internal ConnectionEvents: a frame arrived (connection-level ones are handled here, the rest go to the owner). */
  onFrame(kind: number, callId: number, header: Buffer, body: Buffer): void {
    switch (kind) {
      case FrameKind.PING:
        this.conn.send(FrameKind.PONG, callId);
        return;
      case FrameKind.PONG:
        if (callId === GOAWAY_PING_ID && this.draining) {
          this.goawayAcked = true;
          this.endIfDrained();
        }
        return;
      case FrameKind.TICKET: {
        // A definition that does not decode is dropped: a request that refers to it is refused.
        let ticket: string;
        try {
          ticket = decodeTicketHeader(header);
        } catch (err) {
          if (err instanceof HeaderError) return;
          throw err;
        }
        // The client drops its oldest definition past the limit, and so does this side.
        const tickets = this.ticketSlots;
        if (tickets !== undefined) {
          const old = tickets.findIndex((t) => t.id === callId);
          if (old >= 0) tickets.splice(old, 1);
          if (tickets.length >= MAX_CONNECTION_TICKETS) tickets.shift();
        }
        // A ticket longer than any valid one, or with characters no JWS has, is kept as a marker
        // only (a reference to it is refused as malformed): 64 definitions hold at most 512 KiB.
        const oversized = ticket.length > MAX_TICKET_LENGTH || !JWS_CHARACTERS.test(ticket);
        const slot: TicketSlot = { id: callId, ticket: oversized ? '' : ticket, oversized, generation: -1, auth: undefined, failure: undefined };
        // The first as a one-element array literal (a push would reserve room for 17).
        if (tickets === undefined) this.ticketSlots = [slot];
        else tickets.push(slot);
        return;
      }
      case FrameKind.REQUEST:
      case FrameKind.MESSAGE:
      case FrameKind.WINDOW:
      case FrameKind.HALF_CLOSE:
      case FrameKind.CANCEL:
        this.owner.onCallFrame(this, kind, callId, header, body);
        return;
      default:
        // GOAWAY from a client means nothing to a server; unknown kinds are ignored for forward
        // compatibility, like unknown HTTP/2 frame types.
        return;
    }
  }
}
