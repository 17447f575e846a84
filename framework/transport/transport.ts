/**
 * Transports: how a server listens and a client connects, as byte streams. The framed connection
 * (connection.ts) runs on any `ByteStream`; two transports make them:
 * - `tcpTransport`: Node's `net` sockets, the default;
 * - `MemoryTransport` (memory.ts): in-process pairs, so that tests of the whole call path
 *   (framing, flow control, retries, balancing) run without sockets, as connect-es's
 *   `createRouterTransport` does.
 */
import { connect, createServer, type Server as NetServer } from 'node:net';

/** What the framed connection needs of a socket: the subset of `net.Socket` it uses. */
export interface ByteStream {
  /** Remote address and port (for `peer` and logs). */
  readonly remoteAddress?: string | undefined;
  readonly remotePort?: number | undefined;
  /** Bytes read and written so far (keepalive counts progress with them). */
  readonly bytesRead: number;
  readonly bytesWritten: number;
  /** Bytes queued and not yet handed to the peer. */
  readonly writableLength: number;
  /** Disables Nagle's algorithm where there is one. */
  setNoDelay(noDelay?: boolean): unknown;
  /** Writes a chunk; false when the buffer is full (wait for `'drain'`). */
  write(chunk: Uint8Array): boolean;
  /** Half-closes after what is queued. */
  end(): unknown;
  /** Closes at once. */
  destroy(error?: Error): unknown;
  /** Stops and restarts `'data'` events. */
  pause(): unknown;
  resume(): unknown;
  /**
   * Adds a listener. On a stream that is an EventEmitter (and extensible), the connection sets a
   * property on it and registers shared listeners that find it there through `this`: such a
   * stream's `on` must register the listener given, not a wrapper that calls it without `this`
   * (a Proxy that forwards property writes to the emitter it registers on is fine). Any other
   * stream may wrap listeners as it likes.
   */
  on(event: 'data', listener: (chunk: Buffer) => void): unknown;
  on(event: 'drain' | 'close' | 'connect', listener: () => void): unknown;
  on(event: 'error', listener: (error: Error) => void): unknown;
  once(event: 'connect' | 'close', listener: () => void): unknown;
  /** The verified peer certificate's identity, on a TLS stream with one (tls-transport.ts). */
  peerIdentity?(): PeerIdentity | undefined;
}

/** A TLS peer's verified certificate: its subject (`CN=...,O=...`) and URI SANs (e.g. `spiffe://...`). */
export interface PeerIdentity {
  readonly subject: string;
  readonly uris: readonly string[];
}

/** A listening endpoint. */
export interface TransportListener {
  /** The bound address and port. */
  readonly address: { readonly address: string; readonly port: number };
  /** Stops accepting connections (open ones stay). */
  close(): void;
  /** Called with errors after listening started (e.g. EMFILE). */
  onError(listener: (error: Error) => void): void;
}

/** Makes connections and listens for them. */
export interface Transport {
  /**
   * Opens a connection. The stream emits `'connect'` once open, or `'error'` then `'close'`.
   * @param host - host name or address.
   * @param port - port.
   */
  connect(host: string, port: number): ByteStream;
  /**
   * Listens.
   * @param port - port; 0 picks a free one.
   * @param host - interface.
   * @param onConnection - called with each accepted stream.
   * @returns the listener, once bound.
   * @throws Error (rejection) when the address cannot be bound (in use, not permitted).
   */
  listen(port: number, host: string, onConnection: (stream: ByteStream) => void): Promise<TransportListener>;
}

/** TCP through `node:net`: the default transport of servers and channels. */
export const tcpTransport: Transport = {
  connect(host, port) {
    return connect({ host, port, noDelay: true });
  },
  listen(port, host, onConnection) {
    return listenOn(createServer({ noDelay: true }, onConnection), port, host);
  },
};

/**
 * Binds a `net.Server` (or a `tls.Server`, which is one) and describes it as a listener.
 * @param srv - the server, not yet listening.
 * @param port - the TCP port (0 picks a free one); `host` - the interface.
 * @returns the listener once bound: its address, `close`, and `onError` for later errors.
 * @throws Error (rejection) when the address cannot be bound (in use, not permitted).
 */
export async function listenOn(srv: NetServer, port: number, host: string): Promise<TransportListener> {
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(port, host, () => {
      srv.off('error', reject);
      resolve();
    });
  });
  const a = srv.address();
  const address = a !== null && typeof a === 'object' ? { address: a.address, port: a.port } : { address: String(a), port: 0 };
  return { address, close: () => srv.close(), onError: (listener) => srv.on('error', listener) };
}
