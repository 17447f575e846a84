/**
 * An in-process transport: `connect` and `listen` pair up byte streams inside one process, with
 * no socket, no port and no kernel. Everything above the byte stream (framing, multiplexing,
 * flow control, GOAWAY, keepalive, retries, balancing) runs as it does over TCP, which is what
 * pipeline tests want (connect-es's `createRouterTransport` plays the same role).
 *
 * Bytes written on one side arrive on the other in a later event-loop turn (`setImmediate`), in
 * order, as a socket's would; a side whose reader is paused or slow pushes back: `write()`
 * returns false past 64 KiB queued, and `'drain'` follows once the reader caught up.
 */
import { Duplex } from 'node:stream';
import type { ByteStream, Transport, TransportListener } from './transport.js';

/** Bytes queued on a side before `write()` returns false. */
const HIGH_WATER_MARK = 64 * 1024;

/** One end of an in-memory connection. */
class MemorySocket extends Duplex implements ByteStream {
  peer: MemorySocket | undefined;
  bytesRead = 0;
  bytesWritten = 0;
  /** The writer's callback held back until this side's reader wants more (back-pressure). */
  private readDemand: (() => void) | undefined;

  constructor(
    readonly remoteAddress: string,
    readonly remotePort: number,
  ) {
    super({ allowHalfOpen: false, highWaterMark: HIGH_WATER_MARK });
  }

  setNoDelay(): this {
    return this;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    const peer = this.peer;
    if (peer === undefined || peer.destroyed) {
      callback(new Error('connection reset by peer'));
      return;
    }
    this.bytesWritten += chunk.length;
    setImmediate(() => {
      if (peer.destroyed) return callback();
      peer.bytesRead += chunk.length;
      if (peer.push(chunk)) callback();
      else peer.readDemand = () => callback();
    });
  }

  override _read(): void {
    const demand = this.readDemand;
    this.readDemand = undefined;
    demand?.();
  }

  override _final(callback: (error?: Error | null) => void): void {
    const peer = this.peer;
    setImmediate(() => {
      peer?.push(null);
      callback();
    });
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const peer = this.peer;
    this.readDemand?.();
    this.readDemand = undefined;
    // A destroyed socket resets the connection: the other side closes too.
    if (peer !== undefined && !peer.destroyed) setImmediate(() => peer.destroy());
    callback(error);
  }
}

/**
 * A set of in-process endpoints: servers listen on `host:port` names inside it, channels connect
 * to them. Give the same instance to the servers (`ServerOptions.transport`) and channels
 * (`ChannelOptions.transport`) that should reach each other.
 */
export class MemoryTransport implements Transport {
  private readonly listeners = new Map<string, (stream: ByteStream) => void>();
  private nextPort = 40_000;
  private nextClientPort = 50_000;

  /** @see Transport.connect; a name nobody listens on fails with ECONNREFUSED, as TCP does. */
  connect(host: string, port: number): ByteStream {
    const client = new MemorySocket(host, port);
    const accept = this.listeners.get(`${host}:${port}`);
    setImmediate(() => {
      if (client.destroyed) return; // given up before the connection was made
      if (accept === undefined || this.listeners.get(`${host}:${port}`) !== accept) {
        const err = Object.assign(new Error(`connect ECONNREFUSED ${host}:${port} (in-memory transport)`), { code: 'ECONNREFUSED' });
        client.destroy(err);
        return;
      }
      const server = new MemorySocket('127.0.0.1', this.nextClientPort++);
      client.peer = server;
      server.peer = client;
      accept(server);
      client.emit('connect');
    });
    return client;
  }

  /** @see Transport.listen; port 0 picks an unused one. */
  async listen(port: number, host: string, onConnection: (stream: ByteStream) => void): Promise<TransportListener> {
    let p = port;
    if (p === 0) while (this.listeners.has(`${host}:${(p = this.nextPort++)}`));
    const key = `${host}:${p}`;
    if (this.listeners.has(key)) throw Object.assign(new Error(`listen EADDRINUSE: address already in use ${key} (in-memory transport)`), { code: 'EADDRINUSE' });
    this.listeners.set(key, onConnection);
    return {
      address: { address: host, port: p },
      close: () => {
        if (this.listeners.get(key) === onConnection) this.listeners.delete(key);
      },
      onError: () => {},
    };
  }
}
