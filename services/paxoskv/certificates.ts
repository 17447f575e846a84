/**
 * Makes a cluster's TLS dir (tls.ts has its layout): a CA of its own, a certificate per member
 * naming its member URI and its host, and a client certificate. `svrkit kv certs` and
 * `svrkit kv up --tls-dir` use it; production clusters may bring certificates from their own CA
 * instead, with the same file names and URI SANs.
 *
 * The certificates are X.509 v3 (RFC 5280), ECDSA P-256 with SHA-256, built by @peculiar/x509 over
 * Node's WebCrypto; svrkit writes no cryptography of its own. @peculiar/x509 (with its
 * reflect-metadata polyfill) is an optional peer dependency, loaded only here: a developer tool,
 * so an app that runs PaxosKV with certificates it already has does not install it.
 */
import { createPrivateKey, randomBytes, webcrypto, X509Certificate } from 'node:crypto';
import { mkdir, readdir, readFile, stat } from 'node:fs/promises';
import { isIP } from 'node:net';
import path from 'node:path';
import type * as X509Module from '@peculiar/x509';
import lockfile from 'proper-lockfile';
import writeFileAtomic from 'write-file-atomic';
import type { MemberId } from './core/types.js';
import { memberUri, TLS_FILES } from './tls.js';

/** How long the CA is valid (days). */
export const CA_VALID_DAYS = 3650;
/** How long a member or client certificate is valid (days). */
export const LEAF_VALID_DAYS = 825;

/** What {@link createClusterCertificates} made. */
export interface CreatedCertificates {
  /** The files written (absolute paths), empty when everything was there already. */
  written: string[];
  /** True when it made a new CA (false: it issued from the dir's CA, or issued nothing). */
  newCa: boolean;
}

type X509 = typeof X509Module;

async function loadX509(): Promise<X509> {
  try {
    await import('reflect-metadata');
    const x509 = await import('@peculiar/x509');
    x509.cryptoProvider.set(webcrypto as unknown as Parameters<X509["cryptoProvider"]["set"]>[0]);
    return x509;
  } catch (err) {
    throw new Error(
      `making certificates needs @peculiar/x509 and reflect-metadata (npm install --save-dev @peculiar/x509 reflect-metadata), or bring your own: ${(err as Error).message}`,
      { cause: err },
    );
  }
}

const exists = (file: string): Promise<boolean> =>
  stat(file).then(
    () => true,
    (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return false;
      throw err;
    },
  );

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

/** A positive 128-bit serial number, hex (RFC 5280 4.1.2.2: at most 20 octets, positive). */
function serial(): string {
  const b = randomBytes(16);
  b[0]! &= 0x7f;
  return b.toString('hex');
}

/** A PKCS#8 DER private key as PEM (node:crypto's encoder). */
function pemKey(der: ArrayBuffer): string {
  return createPrivateKey({ key: Buffer.from(der), format: 'der', type: 'pkcs8' }).export({ format: 'pem', type: 'pkcs8' }).toString();
}

/**
 * Makes whatever a TLS dir lacks for these members: the CA (when `ca.pem` is absent), then each
 * member's certificate and the client certificate that are absent. Certificates already there
 * are kept, so adding a member issues only its own.
 * @param dir - the TLS dir (created, mode 0700, when absent).
 * @param members - member id -> `host:port`; a member's certificate names its URI and its host (an
 *   IP SAN, or a DNS SAN for a name; `localhost` is added for 127.0.0.1 and ::1).
 * @param now - the issue time (default: now); certificates are valid from a minute before it.
 * @returns the files written, and whether the CA is new.
 * The client certificate is made only with the dir's CA key: a dir brought with its own CA and no
 * `ca-key.pem` goes without one. The dir is locked (`proper-lockfile`) while certificates are made.
 * @throws Error when a member's certificate is missing but the CA's key is not in the dir (the CA
 *   came from elsewhere: issue with that CA); when a certificate is there without its key, or the
 *   other way round; when `ca.pem` is missing but other .pem files are there (a new CA would not
 *   match them); when the CA key does not match `ca.pem` or is not ECDSA P-256; when another run
 *   holds the dir's lock; when @peculiar/x509 is not installed; or when a file cannot be written.
 */
export async function createClusterCertificates(dir: string, members: ReadonlyMap<MemberId, string>, now: Date = new Date()): Promise<CreatedCertificates> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  // One maker at a time: two runs on a new dir must not leave a CA and certificates of different CAs.
  let release: () => Promise<void>;
  try {
    release = await lockfile.lock(path.resolve(dir), { retries: { retries: 100, minTimeout: 20, maxTimeout: 200 }, stale: 30_000, realpath: false });
  } catch (err) {
    throw new Error(`TLS dir ${dir} is locked by another svrkit making certificates (${(err as Error).message}); run again once it is done`, { cause: err });
  }
  try {
    return await create(dir, members, now);
  } finally {
    await release().catch(() => undefined);
  }
}

async function create(dir: string, members: ReadonlyMap<MemberId, string>, now: Date): Promise<CreatedCertificates> {
  const at = (name: string) => path.resolve(dir, name);
  /** A certificate and its key: both there (keep), neither (issue), or one alone (refuse). */
  const pair = async (cert: string, key: string): Promise<boolean> => {
    const [c, k] = [await exists(at(cert)), await exists(at(key))];
    if (c !== k) throw new Error(`TLS dir ${dir} has ${c ? cert : key} without ${c ? key : cert}: remove it to have both made again, or bring the missing one`);
    return c;
  };
  const missing: Array<{ file: string; key: string; id: MemberId | 'client' }> = [];
  for (const id of [...members.keys()].sort((a, b) => a - b)) {
    if (!(await pair(TLS_FILES.member(id), TLS_FILES.memberKey(id)))) missing.push({ file: at(TLS_FILES.member(id)), key: at(TLS_FILES.memberKey(id)), id });
  }
  const clientMissing = !(await pair(TLS_FILES.client, TLS_FILES.clientKey));
  const haveCa = await exists(at(TLS_FILES.ca));
  const haveCaKey = await exists(at(TLS_FILES.caKey));
  if (!haveCa) {
    // A new CA beside certificates of an old one would make every handshake fail.
    const old = (await readdir(dir)).filter((f) => f.endsWith('.pem'));
    if (old.length > 0) {
      throw new Error(`TLS dir ${dir} has no ${TLS_FILES.ca} but holds ${old.join(', ')}: bring the CA certificate back, or empty the dir to make a new CA and all certificates`);
    }
  }
  // The client certificate is optional: a dir brought with its own CA (and no CA key) goes without.
  if (clientMissing && (!haveCa || haveCaKey)) missing.push({ file: at(TLS_FILES.client), key: at(TLS_FILES.clientKey), id: 'client' });
  if (haveCa && missing.length === 0) return { written: [], newCa: false };

  const x509 = await loadX509();
  const subtle = webcrypto.subtle;
  const written: string[] = [];
  const write = async (file: string, text: string, secret: boolean) => {
    await writeFileAtomic(file, text, { mode: secret ? 0o600 : 0o644, fsync: true });
    written.push(file);
  };
  const from = new Date(now.getTime() - 60_000);
  const until = (days: number) => new Date(now.getTime() + days * 86_400_000);

  let caCert: InstanceType<X509['X509Certificate']>;
  let caKey: webcrypto.CryptoKey;
  if (haveCa) {
    let keyPem: string;
    try {
      keyPem = await readFile(at(TLS_FILES.caKey), 'utf8');
    } catch (err) {
      throw new Error(
        `TLS dir ${dir} has a CA (${TLS_FILES.ca}) but not its key (${TLS_FILES.caKey}), and lacks ${missing.map((m) => path.basename(m.file)).join(', ')}: ` +
          `issue those with the CA that made ${TLS_FILES.ca}, or use a new dir`,
        { cause: err },
      );
    }
    caCert = new x509.X509Certificate(await readFile(at(TLS_FILES.ca), 'utf8'));
    let key: ReturnType<typeof createPrivateKey>;
    try {
      key = createPrivateKey(keyPem); // PKCS#8 or SEC1 ('EC PRIVATE KEY') PEM
    } catch (err) {
      throw new Error(`TLS dir ${dir}: ${TLS_FILES.caKey} is not a PEM private key: ${(err as Error).message}`, { cause: err });
    }
    if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
      throw new Error(
        `TLS dir ${dir}: ${TLS_FILES.caKey} is a ${key.asymmetricKeyType} key${key.asymmetricKeyDetails?.namedCurve === undefined ? '' : ` on ${key.asymmetricKeyDetails.namedCurve}`}; ` +
          'svrkit issues with ECDSA P-256 CAs only: issue with your own tools, using these file names and URI SANs',
      );
    }
    if (!new X509Certificate(caCert.toString('pem')).checkPrivateKey(key)) throw new Error(`TLS dir ${dir}: ${TLS_FILES.caKey} is not the key of ${TLS_FILES.ca}`);
    caKey = await subtle.importKey('pkcs8', key.export({ format: 'der', type: 'pkcs8' }), ALG, true, ['sign']);
  } else {
    const keys = (await subtle.generateKey(ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    caKey = keys.privateKey;
    caCert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: serial(),
      name: `CN=svrkit paxoskv cluster CA ${now.toISOString()}`,
      notBefore: from,
      notAfter: until(CA_VALID_DAYS),
      keys,
      signingAlgorithm: ALG,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    await write(at(TLS_FILES.caKey), pemKey(await subtle.exportKey('pkcs8', keys.privateKey)), true);
    await write(at(TLS_FILES.ca), caCert.toString('pem') + '\n', false);
  }

  const caSki = caCert.getExtension(x509.SubjectKeyIdentifierExtension);
  for (const m of missing) {
    const keys = (await subtle.generateKey(ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    const names: Array<{ type: 'ip' | 'dns' | 'url'; value: string }> = [];
    let subject = 'CN=svrkit paxoskv client';
    if (m.id !== 'client') {
      const address = members.get(m.id)!;
      const host = address.slice(0, address.lastIndexOf(':')).replace(/^\[|\]$/g, '');
      subject = `CN=svrkit paxoskv member ${m.id}`;
      names.push({ type: 'url', value: memberUri(m.id) }, { type: isIP(host) === 0 ? 'dns' : 'ip', value: host });
      if (host === '127.0.0.1' || host === '::1') names.push({ type: 'dns', value: 'localhost' });
    }
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial(),
      subject,
      issuer: caCert.subjectName,
      notBefore: from,
      // Never past the CA's own expiry.
      notAfter: new Date(Math.min(until(LEAF_VALID_DAYS).getTime(), caCert.notAfter.getTime())),
      publicKey: keys.publicKey,
      signingKey: caKey,
      signingAlgorithm: ALG,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension(m.id === 'client' ? [x509.ExtendedKeyUsage.clientAuth] : [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
        // The CA's own key identifier when it has one (a CA made elsewhere may derive it otherwise).
        caSki !== null ? new x509.AuthorityKeyIdentifierExtension(caSki.keyId) : await x509.AuthorityKeyIdentifierExtension.create(caCert.publicKey),
        ...(names.length === 0 ? [] : [new x509.SubjectAlternativeNameExtension(names)]),
      ],
    });
    await write(m.key, pemKey(await subtle.exportKey('pkcs8', keys.privateKey)), true);
    await write(m.file, cert.toString('pem') + '\n', false);
  }
  return { written, newCa: !haveCa };
}
