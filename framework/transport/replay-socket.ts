/**
 * A socket whose first bytes were already read, as a stream that yields them again: the server
 * reads a connection's first bytes to tell an HTTP/2 client (gRPC) from a svrkit one, and
 * node:http2 must then see the whole byte stream. (Node's http2 reads a net.Socket natively, past
 * anything pushed back with `unshift`, so it gets this JS stream instead.)
 */
import { Duplex } from 'node:stream';
import type { Socket } from 'node:net';

/**
 * Wraps `socket` so that reading it yields `first` and then what the socket reads; writes, end
 * and destroy go to the socket, and its address is the socket's.
 * @param socket - a connected socket, paused, whose bytes so far were `first`.
 * @param first - the bytes already read.
 * @returns a Duplex for `http2Server.emit('connection', ...)`.
 */
export function replaySocket(socket: Socket, first: Buffer): Duplex & { remoteAddress?: string; remotePort?: number } {
  const d = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk: Buffer, _encoding, callback) {
      if (socket.write(chunk)) callback();
      else socket.once('drain', () => callback());
    },
    final(callback) {
      socket.end();
      callback();
    },
    destroy(err, callback) {
      socket.destroy(err ?? undefined);
      callback(err);
    },
  }) as Duplex & { remoteAddress?: string; remotePort?: number };
  d.remoteAddress = socket.remoteAddress;
  d.remotePort = socket.remotePort;
  d.push(first);
  socket.on('data', (chunk: Buffer) => {
    if (!d.push(chunk)) socket.pause();
  });
  socket.on('end', () => d.push(null));
  socket.on('error', (err) => d.destroy(err));
  socket.on('close', () => d.destroy());
  socket.resume();
  return d;
}
