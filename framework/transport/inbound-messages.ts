/**
 * The receiving end of a stream as an async iterable: frames push decoded messages in, one
 * consumer pulls them out with `for await`. Taking a message grants flow-control credit back to
 * the sender (see flow-control.ts), so the queue never holds more than a window.
 */
import { INITIAL_STREAM_WINDOW } from '../wire/frame.js';
import { ReceiveCredit, type StreamWindow } from './flow-control.js';
import { configErrors } from '../errors.js';

/** What the queue tells its stream. */
export interface InboundEvents {
  /** The consumer took half a window since the last grant: send a WINDOW frame with this grant. */
  grant(messages: number, bytes: number): void;
  /** The consumer stopped early (`break`, `return()`, or `throw()` on the iterator): cancel the stream. */
  abandoned(): void;
}

const DONE: IteratorReturnResult<undefined> = Object.freeze({ done: true, value: undefined });

/** A single-consumer queue of inbound stream messages; see the module comment. */
export class InboundMessages<T> implements AsyncIterableIterator<T> {
  private values: T[] = [];
  private sizes: number[] = [];
  private head = 0;
  private ended = false;
  private error: Error | undefined;
  private waiting: { resolve: (r: IteratorResult<T>) => void; reject: (e: Error) => void } | undefined;
  private readonly credit: ReceiveCredit;
  private finished = false;
  /** Bytes queued and not yet taken. */
  private queuedBytes = 0;
  private readonly window: StreamWindow;

  /**
   * @param events - where grants and early exits go.
   * @param window - the sender's window, for when to grant; default `INITIAL_STREAM_WINDOW`.
   */
  constructor(
    private readonly events: InboundEvents,
    window?: StreamWindow,
  ) {
    this.window = window ?? INITIAL_STREAM_WINDOW;
    this.credit = new ReceiveCredit(this.window);
  }

  /** Messages queued and not yet taken. */
  get length(): number {
    return this.values.length - this.head;
  }

  /** True once the stream ended (normally or not) or the consumer left. */
  get closed(): boolean {
    return this.ended || this.finished;
  }

  /**
   * Queues a message, or hands it to a waiting consumer.
   * @param value - the decoded message.
   * @param bytes - its encoded size (for credit).
   * @returns false when the sender went past its credit: more than a window's messages, or more
   *   than a window's bytes plus one message, queued unread (the caller fails the stream).
   */
  push(value: T, bytes: number): boolean {
    if (this.ended || this.finished) return true;
    const w = this.waiting;
    if (w !== undefined) {
      this.waiting = undefined;
      this.took(bytes);
      w.resolve({ done: false, value });
      return true;
    }
    if (this.length >= this.window.messages || this.queuedBytes >= this.window.bytes) return false;
    this.values.push(value);
    this.sizes.push(bytes);
    this.queuedBytes += bytes;
    return true;
  }

  /** Messages and bytes queued unread (for errors). */
  get queued(): { messages: number; bytes: number } {
    return { messages: this.length, bytes: this.queuedBytes };
  }

  /**
   * Ends the stream: the consumer gets what is queued, then the end (or `error`, thrown from `next()`).
   * @param error - why the stream failed; undefined for a normal end.
   */
  end(error?: Error): void {
    if (this.ended) return;
    this.ended = true;
    this.error = error;
    const w = this.waiting;
    if (w !== undefined && this.length === 0) {
      this.waiting = undefined;
      if (error !== undefined) w.reject(error);
      else w.resolve(DONE);
    }
  }

  /** @returns the next message; rejects with the stream's error once it failed and the queue is empty. */
  next(): Promise<IteratorResult<T>> {
    if (this.head < this.values.length) {
      const value = this.values[this.head]!;
      const bytes = this.sizes[this.head]!;
      this.head++;
      this.queuedBytes -= bytes;
      if (this.head === this.values.length) {
        this.values = [];
        this.sizes = [];
        this.head = 0;
      } else if (this.head >= 1024) {
        this.values = this.values.slice(this.head);
        this.sizes = this.sizes.slice(this.head);
        this.head = 0;
      }
      this.took(bytes);
      return Promise.resolve({ done: false, value });
    }
    if (this.finished) return Promise.resolve(DONE);
    if (this.ended) {
      if (this.error !== undefined) {
        const e = this.error;
        this.finished = true;
        return Promise.reject(e);
      }
      return Promise.resolve(DONE);
    }
    if (this.waiting !== undefined) return Promise.reject(configErrors.CONCURRENT_NEXT());
    return new Promise<IteratorResult<T>>((resolve, reject) => {
      this.waiting = { resolve, reject };
    });
  }

  /** The consumer stops early: drops what is queued and cancels the stream unless it already ended. */
  return(): Promise<IteratorResult<T>> {
    this.leave();
    return Promise.resolve(DONE);
  }

  /** Same as `return()` (the consumer's loop threw). */
  throw(): Promise<IteratorResult<T>> {
    this.leave();
    return Promise.resolve(DONE);
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  private leave(): void {
    if (this.finished) return;
    this.finished = true;
    this.values = [];
    this.sizes = [];
    this.head = 0;
    this.queuedBytes = 0;
    const w = this.waiting;
    this.waiting = undefined;
    w?.resolve(DONE);
    if (!this.ended) this.events.abandoned();
  }

  private took(bytes: number): void {
    const g = this.credit.consumed(bytes);
    if (g !== undefined && !this.ended) this.events.grant(g.messages, g.bytes);
  }
}
