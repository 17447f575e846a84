/**
 * Per-stream flow control: credit counted in messages and in bytes, granted by the receiver as
 * its consumer takes messages, after HTTP/2's WINDOW_UPDATE (RFC 9113 section 5.2 and 6.9).
 *
 * The sender starts with `INITIAL_STREAM_WINDOW` and may send while it holds at least one message
 * and one byte of credit; each message spends one message and its size. The receiver queues what
 * arrives and, each time its consumer has taken half a window since the last grant, sends a
 * WINDOW frame giving that much back. So at most one window (plus one message) per stream is ever
 * queued at the receiver, however slow its consumer, and a sender without credit waits: a server
 * generator is not resumed, a client writing a request stream awaits.
 *
 * Pure bookkeeping: no sockets, no timers.
 */
import { INITIAL_STREAM_WINDOW } from '../wire/frame.js';

/** A window size: messages and bytes. */
export interface StreamWindow {
  /** Messages (>= 1). */
  readonly messages: number;
  /** Message body bytes (>= 1). */
  readonly bytes: number;
}

/** The sending side's credit for one stream. */
export class SendCredit {
  private messages: number;
  private bytes: number;
  /** Senders waiting for credit (created when the first waits: most streams never do). */
  private waiters: Array<() => void> | undefined;
  private closed = false;

  /** @param window - the credit to start with; default `INITIAL_STREAM_WINDOW`. */
  constructor(window: StreamWindow = INITIAL_STREAM_WINDOW) {
    this.messages = window.messages;
    this.bytes = window.bytes;
  }

  /** True while a message may be sent now (or once closed, so that waiting senders wake up and see it). */
  get available(): boolean {
    return this.closed || (this.messages > 0 && this.bytes > 0);
  }

  /**
   * Records a message sent.
   * @param bytes - its body size in bytes.
   */
  spend(bytes: number): void {
    this.messages--;
    this.bytes -= bytes;
  }

  /**
   * Adds credit from a WINDOW frame and wakes senders waiting for it.
   * @param messages - messages granted.
   * @param bytes - bytes granted.
   */
  grant(messages: number, bytes: number): void {
    this.messages += messages;
    this.bytes += bytes;
    if (this.waiters !== undefined && this.available) this.wake();
  }

  /**
   * Resolves once a message may be sent, or the stream ended (check the stream's own state after).
   * @returns a promise; already resolved when credit is available.
   */
  wait(): Promise<void> {
    if (this.available) return Promise.resolve();
    return new Promise<void>((resolve) => (this.waiters ??= []).push(resolve));
  }

  /** The stream ended: wakes every waiting sender for good. */
  close(): void {
    this.closed = true;
    this.wake();
  }

  private wake(): void {
    const ws = this.waiters;
    if (ws === undefined) return;
    this.waiters = undefined;
    for (const w of ws) w();
  }
}

/** The receiving side's accounting for one stream: when to grant credit back. */
export class ReceiveCredit {
  private messages = 0;
  private bytes = 0;
  private readonly halfMessages: number;
  private readonly halfBytes: number;

  /** @param window - the sender's window (what it started with); default `INITIAL_STREAM_WINDOW`. */
  constructor(window: StreamWindow = INITIAL_STREAM_WINDOW) {
    this.halfMessages = Math.max(1, Math.floor(window.messages / 2));
    this.halfBytes = Math.max(1, Math.floor(window.bytes / 2));
  }

  /**
   * Records that the consumer took a message.
   * @param bytes - its body size in bytes.
   * @returns the grant to send now (messages and bytes taken since the last grant), or undefined
   *   while less than half a window was taken.
   */
  consumed(bytes: number): StreamWindow | undefined {
    this.messages++;
    this.bytes += bytes;
    if (this.messages < this.halfMessages && this.bytes < this.halfBytes) return undefined;
    const grant = { messages: this.messages, bytes: this.bytes };
    this.messages = 0;
    this.bytes = 0;
    return grant;
  }
}
