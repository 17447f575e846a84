/**
 * TLS through `node:tls` (TLS 1.2 and 1.3, Node's defaults): the transport of servers given
 * `ServerOptions.tls` and channels given `ChannelOptions.tls`. svrkit's framing runs inside the TLS
 * stream unchanged. Node verifies the chain and the host name; svrkit adds nothing of its own to
 * the cryptography. With client certificates, the server reads the peer's subject and URI SANs
 * (SPIFFE ids, `spiffe://trust-domain/path`) for `currentCall().peerIdentity`; Node does not check
 * URI SANs itself, so a service that allows callers by identity compares them.
 */
import { isIP } from 'node:net';
import { connect as tlsConnect, createServer as tlsCreateServer, type ConnectionOptions, type PeerCertificate, type TLSSocket } from 'node:tls';
import { listenOn, type ByteStream, type PeerIdentity, type Transport } from './transport.js';

/** PEM text or bytes, or several (a CA bundle). */
export type Pem = string | Buffer | ReadonlyArray<string | Buffer>;

/** TLS settings of a server. */
export interface TlsServerOptions {
  /** The server's certificate chain (PEM). */
  cert: Pem;
  /** Its private key (PEM). */
  key: Pem;
  /** CAs whose client certificates are accepted (PEM); with it, clients are asked for a certificate. */
  ca?: Pem;
  /** Refuse a client without a certificate signed by `ca` (mutual TLS). Default false. */
  requireClientCert?: boolean;
}

/** TLS settings of a client. */
export interface TlsClientOptions {
  /** CAs to trust for the server's certificate (PEM). Default: Node's bundled roots. */
  ca?: Pem;
  /** The client's certificate (PEM), for servers that ask for one. */
  cert?: Pem;
  /** Its private key (PEM). */
  key?: Pem;
  /** The name to verify the server's certificate against. Default: the host connected to. */
  servername?: string;
  /**
   * Replaces Node's host-name check of the server's certificate (`tls.checkServerIdentity`), after
   * the chain was verified against `ca`: return an Error to refuse the server, undefined to accept
   * it. PaxosKV's peer channels check the URI SAN of the member they dial instead of its host.
   */
  checkServerIdentity?: (host: string, cert: PeerCertificate) => Error | undefined;
}

/**
 * The subject and URI SANs of a TLS socket's verified peer certificate.
 * @param socket - a TLS socket (or node:http2's proxy of one).
 * @returns the identity, or undefined when the peer sent no certificate or it did not verify.
 */
export function tlsPeerIdentity(socket: TLSSocket): PeerIdentity | undefined {
  if (!socket.authorized) return undefined;
  const cert = socket.getPeerCertificate();
  if (cert === null || typeof cert !== 'object' || Object.keys(cert).length === 0) return undefined;
  const subject = Object.entries(cert.subject ?? {})
    .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join('+') : v}`)
    .join(',');
  return Object.freeze({ subject, uris: Object.freeze(certificateUris(cert)) });
}

/**
 * The URI SANs of a certificate as Node reports it (`subjectaltname`, e.g.
 * `IP Address:127.0.0.1, URI:spiffe://svrkit.test/shop/frontend`).
 * @param cert - a peer certificate (`TLSSocket.getPeerCertificate()`, or `checkServerIdentity`'s argument).
 * @returns its URI SANs, in certificate order (empty when it has none).
 */
export function certificateUris(cert: PeerCertificate): string[] {
  return subjectAltNameUris(cert.subjectaltname);
}

/**
 * The URI SANs in a subject-alternative-name text as Node writes it (`PeerCertificate.subjectaltname`,
 * `X509Certificate.subjectAltName`: `IP Address:127.0.0.1, URI:spiffe://...`).
 * @param text - the text, or undefined for a certificate without SANs.
 * @returns the URIs, in order.
 */
export function subjectAltNameUris(text: string | undefined): string[] {
  return (text ?? '')
    .split(/,\s*/)
    .filter((s) => s.startsWith('URI:'))
    .map((s) => s.slice(4));
}

/**
 * A TLS socket as a `ByteStream`: `'connect'` is the end of the handshake (`'secureConnect'`), so a
 * channel counts a refused certificate as a failed connect; `peerIdentity` reads the peer certificate.
 */
function stream(socket: TLSSocket, client: boolean): ByteStream {
  const event = (e: string): string => (client && e === 'connect' ? 'secureConnect' : e);
  const s = socket as unknown as ByteStream & { peerIdentity: () => PeerIdentity | undefined };
  // Methods are bound once per socket, not on every access (write and the flow-control calls are per flush).
  const own = new Map<PropertyKey, unknown>([
    ['on', (e: string, l: (...a: unknown[]) => void) => socket.on(event(e), l)],
    ['once', (e: string, l: (...a: unknown[]) => void) => socket.once(event(e), l)],
    ['peerIdentity', () => tlsPeerIdentity(socket)],
  ]);
  return new Proxy(s, {
    get(target, prop) {
      let v = own.get(prop);
      if (v !== undefined) return v;
      v = Reflect.get(target, prop, target) as unknown;
      if (typeof v !== 'function') return v;
      v = (v as (...a: unknown[]) => unknown).bind(target);
      own.set(prop, v);
      return v;
    },
  });
}

/**
 * What node:tls (or node:http2's secure server) takes for a svrkit server's TLS options: its
 * certificate and key, and with `ca` a request for the client's certificate, refused when missing
 * or unverified only with `requireClientCert`.
 * @param options - the server's `tls` option.
 * @returns options for `tls.createServer` or `http2.createSecureServer`.
 */
export function tlsServerSettings(options: TlsServerOptions): { cert: string; key: string; ca: string | undefined; requestCert: boolean; rejectUnauthorized: boolean } {
  return { cert: options.cert as string, key: options.key as string, ca: options.ca as string | undefined, requestCert: options.ca !== undefined || options.requireClientCert === true, rejectUnauthorized: options.requireClientCert === true };
}

/**
 * A server-side TLS transport (it also connects, as a client trusting `ca`).
 * @returns a `Transport` for `ServerOptions.transport`.
 */
export function tlsServerTransport(options: TlsServerOptions): Transport {
  return {
    connect: (host, port) => tlsClientTransport({ ca: options.ca }).connect(host, port),
    listen(port, host, onConnection) {
      const srv = tlsCreateServer(
        tlsServerSettings(options),
        (socket) => {
          socket.setNoDelay(true);
          onConnection(stream(socket, false));
        },
      );
      // A failed handshake (random bytes, a wrong or missing certificate) ends that socket only.
      srv.on('tlsClientError', (_err, socket) => socket.destroy());
      return listenOn(srv, port, host);
    },
  };
}

/**
 * A client-side TLS transport.
 * @returns a `Transport` for `ChannelOptions.transport`; its `listen` rejects (a client does not listen).
 */
export function tlsClientTransport(options: TlsClientOptions): Transport {
  return {
    connect(host, port) {
      const tlsOptions: ConnectionOptions = {
        host,
        port,
        ca: options.ca as string | undefined,
        cert: options.cert as string | undefined,
        key: options.key as string | undefined,
        servername: options.servername ?? (isIP(host) === 0 ? host : undefined),
        ...(options.checkServerIdentity === undefined ? {} : { checkServerIdentity: options.checkServerIdentity }),
      };
      const socket = tlsConnect(tlsOptions);
      socket.setNoDelay(true);
      return stream(socket, true);
    },
    listen: () => Promise.reject(new Error('a client TLS transport does not listen: give the server ServerOptions.tls')),
  };
}
