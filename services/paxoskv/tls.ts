/**
 * PaxosKV over TLS: the files of a cluster's TLS dir, the identity a replica's certificate names,
 * and the TLS settings a replica and a client make from them.
 *
 * A replica proves its member id with one URI SAN, `spiffe://svrkit.paxoskv/member/<id>` (SPIFFE's
 * id syntax: a trust domain and a path), in a certificate signed by the cluster's CA. A replica
 * asks every caller for a certificate: client calls need none, but a peer batch is accepted only
 * from a caller whose verified certificate names the member the batch says it is from
 * (replica-server.ts). A replica dialling a peer checks that the peer's certificate names the
 * member it dialled; a client checks the replica's host name against the certificate (Node's
 * default). The CA must be the cluster's own: any certificate it signs with a member's URI is
 * that member.
 *
 * A TLS dir (`svrkit kv certs` and `svrkit kv up --tls-dir` make one; see certificates.ts):
 *
 *   ca.pem                          the cluster's CA certificate (every process reads it)
 *   ca-key.pem                      its private key (only to issue more certificates; mode 0600)
 *   member-<id>.pem, member-<id>-key.pem   replica <id>'s certificate and key
 *   client.pem, client-key.pem      a client certificate (no member URI), optional
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { PeerCertificate } from 'node:tls';
import { certificateUris, subjectAltNameUris, type TlsClientOptions, type TlsServerOptions } from '../../framework/index.js';
import type { MemberId } from './core/types.js';

/** The trust domain of member URIs. */
export const MEMBER_URI_PREFIX = 'spiffe://svrkit.paxoskv/member/';

/** The file names in a TLS dir. */
export const TLS_FILES = {
  ca: 'ca.pem',
  caKey: 'ca-key.pem',
  member: (id: MemberId) => `member-${id}.pem`,
  memberKey: (id: MemberId) => `member-${id}-key.pem`,
  client: 'client.pem',
  clientKey: 'client-key.pem',
} as const;

/**
 * The URI SAN a member's certificate carries.
 * @param id - a member id (1-65535).
 * @returns `spiffe://svrkit.paxoskv/member/<id>`.
 */
export function memberUri(id: MemberId): string {
  return `${MEMBER_URI_PREFIX}${id}`;
}

/**
 * The member a verified certificate names: its one URI SAN in the member trust domain, in
 * canonical form (`spiffe://svrkit.paxoskv/member/7`, no leading zeros).
 * @param uris - the URI SANs (`currentCall().peerIdentity.uris`).
 * @returns the member id, or undefined when the certificate names no member (a client
 *   certificate, another trust domain's), more than one, or one in another form.
 */
export function memberNamed(uris: readonly string[]): MemberId | undefined {
  const named = uris.filter((u) => u.startsWith(MEMBER_URI_PREFIX));
  if (named.length !== 1) return undefined;
  const t = named[0]!.slice(MEMBER_URI_PREFIX.length);
  const id = Number(t);
  return /^[1-9]\d*$/.test(t) && id <= 0xffff && String(id) === t ? id : undefined;
}

/** A replica's TLS material (PEM). */
export interface ReplicaTls {
  /** The cluster's CA certificate: peers' and clients' certificates are verified against it. */
  ca: string;
  /** This replica's certificate, naming its member URI (and its host, for clients). */
  cert: string;
  /** Its private key. */
  key: string;
}

/**
 * The server side of a replica: it asks callers for a certificate but does not require one
 * (clients need none); the peer API checks it.
 * @param tls - the replica's material.
 * @returns settings for `ServerOptions.tls`.
 */
export function replicaServerTls(tls: ReplicaTls): TlsServerOptions {
  return { cert: tls.cert, key: tls.key, ca: tls.ca, requireClientCert: false };
}

/**
 * The channel to peer `peer`: it presents this replica's certificate, and accepts only a
 * certificate from the cluster's CA that names `peer` (whatever host it is on).
 * @param tls - this replica's material.
 * @param peer - the member the channel dials.
 * @returns settings for `ChannelOptions.tls`; a connection to a server that is not `peer` fails
 *   its handshake with an Error saying which member it named.
 */
export function peerChannelTls(tls: ReplicaTls, peer: MemberId): TlsClientOptions {
  return {
    ca: tls.ca,
    cert: tls.cert,
    key: tls.key,
    checkServerIdentity: (_host: string, cert: PeerCertificate) => {
      const named = memberNamed(certificateUris(cert));
      return named === peer ? undefined : new Error(`the server's certificate names ${named === undefined ? 'no member' : `member ${named}`}, not member ${peer} (${memberUri(peer)})`);
    },
  };
}

async function pem(dir: string, name: string, what: string): Promise<string> {
  const file = path.join(dir, name);
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(`TLS dir ${dir}: cannot read ${what} ${file} (${code ?? (err as Error).message}); svrkit kv certs --tls-dir ${dir} --peers ... makes one`, { cause: err });
  }
}

/**
 * Reads replica `id`'s TLS material from a TLS dir.
 * @param dir - the TLS dir.
 * @param id - the replica's member id.
 * @returns its CA, certificate and key (PEM).
 * @throws Error naming the file that cannot be read.
 */
export async function readReplicaTls(dir: string, id: MemberId): Promise<ReplicaTls> {
  const tls = {
    ca: await pem(dir, TLS_FILES.ca, 'the cluster CA'),
    cert: await pem(dir, TLS_FILES.member(id), `member ${id}'s certificate`),
    key: await pem(dir, TLS_FILES.memberKey(id), `member ${id}'s key`),
  };
  try {
    checkReplicaTls(tls, id);
  } catch (err) {
    throw new Error(`TLS dir ${dir}: ${(err as Error).message}`, { cause: err });
  }
  return tls;
}

/**
 * Checks that a replica's material fits it, so a mix-up fails at start rather than as peers
 * silently refusing it: the certificate names member `id` (and no other), chains to the CA
 * (issued by it and signed with its key), is valid now, and matches the key.
 * @param tls - the material; `id` - the member it is for; `now` - the time to check validity at.
 * @throws Error saying what does not fit.
 */
export function checkReplicaTls(tls: ReplicaTls, id: MemberId, now: Date = new Date()): void {
  let cert: X509Certificate;
  let ca: X509Certificate;
  try {
    cert = new X509Certificate(tls.cert);
    ca = new X509Certificate(tls.ca);
  } catch (err) {
    throw new Error(`member ${id}'s certificate or the CA is not a PEM certificate: ${(err as Error).message}`, { cause: err });
  }
  const named = memberNamed(subjectAltNameUris(cert.subjectAltName));
  if (named !== id) throw new Error(`member ${id}'s certificate names ${named === undefined ? 'no member (or several)' : `member ${named}`}; it must carry exactly one member URI, ${memberUri(id)}`);
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) throw new Error(`member ${id}'s certificate is not signed by the CA in ${TLS_FILES.ca}`);
  if (new Date(cert.validTo) < now || new Date(cert.validFrom) > now) throw new Error(`member ${id}'s certificate is valid only from ${cert.validFrom} to ${cert.validTo}`);
  let key: ReturnType<typeof createPrivateKey>;
  try {
    key = createPrivateKey(tls.key);
  } catch (err) {
    throw new Error(`member ${id}'s key is not a PEM private key: ${(err as Error).message}`, { cause: err });
  }
  if (!cert.checkPrivateKey(key)) throw new Error(`member ${id}'s key is not the key of its certificate`);
}

/**
 * A client's TLS settings from a TLS dir: it trusts the cluster's CA, and presents `client.pem`
 * when the dir has one.
 * @param dir - the TLS dir.
 * @returns settings for `ChannelOptions.tls` (or `PaxosKVClientOptions.channel.tls`).
 * @throws Error when `ca.pem` cannot be read, or `client.pem` is there without its key.
 */
export async function readClientTls(dir: string): Promise<TlsClientOptions> {
  const ca = await pem(dir, TLS_FILES.ca, 'the cluster CA');
  let cert: string;
  try {
    cert = await readFile(path.join(dir, TLS_FILES.client), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { ca };
    throw new Error(`TLS dir ${dir}: cannot read the client certificate ${path.join(dir, TLS_FILES.client)} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, { cause: err });
  }
  return { ca, cert, key: await pem(dir, TLS_FILES.clientKey, "the client certificate's key") };
}
