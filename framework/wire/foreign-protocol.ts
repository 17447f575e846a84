/**
 * Telling another protocol from svrkit's by a connection's first bytes, as pure functions: so a
 * svrkit server can serve an HTTP/2 (gRPC) client on its own port and answer an HTTP/1.x or TLS
 * client in its own terms, and a svrkit endpoint that gets an HTTP/2, HTTP/1.x or TLS peer can say
 * so instead of "malformed frame". A svrkit frame starts with its length, under 16 MiB by default:
 * a zero byte (at most 0x7f for any frame size svrkit accepts), so none of these can be mistaken
 * for one.
 */
import { HTTP2_PREFACE } from './grpc-codec.js';

/** Protocols recognised by their first bytes. */
export type ForeignProtocol = 'HTTP/2 client' | 'HTTP/2 server' | 'HTTP/1.x request' | 'HTTP/1.x response' | 'TLS';

/** HTTP/1.x request lines start so (RFC 9110 methods, and a space). */
const HTTP1_METHODS = ['GET ', 'POST ', 'PUT ', 'HEAD ', 'DELETE ', 'OPTIONS ', 'PATCH ', 'CONNECT ', 'TRACE '].map((m) => Buffer.from(m, 'latin1'));
const HTTP1_RESPONSE = Buffer.from('HTTP/1.', 'latin1');

/**
 * Names the protocol a peer's first bytes belong to.
 * @param first - the first bytes the peer sent (any length).
 * @returns the protocol; `'more'` when the bytes so far fit one but are too few to tell; undefined
 *   when they fit none (svrkit's own frames, or garbage).
 *   - `'HTTP/2 client'`: the client connection preface `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n` (RFC 9113 section 3.4);
 *   - `'HTTP/2 server'`: a SETTINGS frame on stream 0, what a server sends first (RFC 9113 section 3.4, 6.5);
 *   - `'HTTP/1.x request'` / `'HTTP/1.x response'`: a request line's method, or `HTTP/1.`;
 *   - `'TLS'`: a handshake or alert record of TLS 1.x (RFC 8446 section 5.1: type 22 or 21, version 3.x).
 */
export function detectForeignProtocol(first: Uint8Array): ForeignProtocol | 'more' | undefined {
  if (first.length === 0) return 'more';
  const b = Buffer.from(first.buffer, first.byteOffset, first.length);
  const n = Math.min(b.length, HTTP2_PREFACE.length);
  if (b.subarray(0, n).equals(HTTP2_PREFACE.subarray(0, n))) return n >= 4 ? 'HTTP/2 client' : 'more';
  if (b[0] === 0x16 || b[0] === 0x15) {
    if (b.length < 2) return 'more';
    return b[1] === 0x03 ? 'TLS' : undefined;
  }
  for (const m of [...HTTP1_METHODS, HTTP1_RESPONSE]) {
    const k = Math.min(b.length, m.length);
    if (b.subarray(0, k).equals(m.subarray(0, k))) {
      if (k < m.length) return 'more';
      return m === HTTP1_RESPONSE ? 'HTTP/1.x response' : 'HTTP/1.x request';
    }
  }
  // An HTTP/2 frame header: 24-bit length, type, flags, 31-bit stream id. A server's first frame
  // is SETTINGS (type 4) on stream 0, its length a multiple of 6 up to 16384.
  if (b[0] === 0 && b.length >= 9) {
    const length = b.readUIntBE(0, 3);
    if (b[3] === 0x04 && (b[4]! & ~0x01) === 0 && b.readUInt32BE(5) === 0 && length % 6 === 0 && length <= 16384) return 'HTTP/2 server';
  }
  return undefined;
}

/**
 * What to tell the user of a svrkit endpoint whose peer spoke `protocol`.
 * @param protocol - what the peer spoke.
 * @returns one sentence naming the peer's protocol and what to do about it.
 */
export function describeForeignProtocol(protocol: ForeignProtocol): string {
  switch (protocol) {
    case 'HTTP/2 server':
      return "the peer speaks HTTP/2 (a gRPC server?), not svrkit's protocol: call it with a grpc://host:port target or ChannelOptions.protocol 'grpc'";
    case 'HTTP/2 client':
      return "the peer speaks HTTP/2 (a gRPC client?), and gRPC is off on this port (ServerOptions.grpc; over TLS, gRPC is served on grpcPort)";
    case 'HTTP/1.x request':
    case 'HTTP/1.x response':
      return "the peer speaks HTTP/1.x, not svrkit's protocol";
    case 'TLS':
      return 'the peer speaks TLS, and this end speaks plaintext (ChannelOptions.tls, ServerOptions.tls)';
  }
}
