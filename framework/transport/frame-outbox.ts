/**
 * The frames a bridge hands up to the svrkit connection that reads it as a `ByteStream`
 * (grpc-server-bridge.ts, grpc-client-transport.ts): each encoded as its own `'data'` chunk, and
 * delivered at once unless the connection paused reading or is inside the bridge's `write`
 * (delivering then would re-enter it); those wait, in order, for `flush`.
 */
import { FrameEncoder } from '../wire/frame.js';

/** An ordered queue of encoded frames on their way up to a connection. */
export class FrameOutbox {
  private readonly encoder = new FrameEncoder();
  private held: Buffer[] = [];
  private head = 0;
  /** The connection stopped reading (the bridge's `pause`/`resume` set this). */
  paused = false;
  private writing = false;
  /** Bytes of frames waiting (not yet delivered). */
  heldBytes = 0;
  /** Bytes of every frame sent so far, delivered or waiting (the bridge's `bytesRead`). */
  totalBytes = 0;

  /** @param deliver - hands one chunk to the connection (the bridge's `emit('data', chunk)`). */
  constructor(private readonly deliver: (chunk: Buffer) => void) {}

  /**
   * Encodes a frame and delivers it, or queues it behind the ones waiting.
   * @param kind - the frame kind; `callId` - its call; `header`, `body` - its parts (bytes).
   */
  send(kind: number, callId: number, header?: Uint8Array, body?: Uint8Array): void {
    this.encoder.write(kind, callId, header, body);
    const chunk = this.encoder.take()!;
    this.totalBytes += chunk.length;
    if (this.paused || this.writing || this.head < this.held.length) {
      this.held.push(chunk);
      this.heldBytes += chunk.length;
    } else this.deliver(chunk);
  }

  /**
   * Runs `fn` (the bridge's handling of the connection's own write) with delivery held, then
   * delivers what it queued.
   * @param fn - the work; its exceptions propagate, after delivery is released.
   */
  whileWriting(fn: () => void): void {
    this.writing = true;
    try {
      fn();
    } finally {
      this.writing = false;
    }
    this.flush();
  }

  /** Delivers waiting frames while the connection reads. */
  flush(): void {
    while (!this.paused && !this.writing && this.head < this.held.length) {
      const chunk = this.held[this.head]!;
      this.held[this.head++] = EMPTY;
      this.heldBytes -= chunk.length;
      this.deliver(chunk);
    }
    if (this.head === this.held.length) this.clear();
    else if (this.head > 1024 && this.head * 2 > this.held.length) {
      this.held = this.held.slice(this.head);
      this.head = 0;
    }
  }

  /** Drops the waiting frames (the connection is gone). */
  clear(): void {
    this.held = [];
    this.head = 0;
    this.heldBytes = 0;
  }
}

const EMPTY = Buffer.alloc(0);
