/**
 * The keys tickets are signed and verified with: a key ring, with a key id (`kid`) per key, so that
 * several keys can be active during a rotation (add the new key everywhere, move signing to it,
 * retire the old one once its tickets have expired). Pure: parsing and checks, no I/O.
 *
 * File form (`svrkit run --ticket-keys keys.json`):
 *
 *   { "signing": "k2",
 *     "keys": [ { "kid": "k1", "alg": "HS256", "secret": "<base64url, 32 bytes or more>" },
 *               { "kid": "k2", "alg": "EdDSA", "publicKey": "-----BEGIN PUBLIC KEY-----...", "privateKey": "-----BEGIN PRIVATE KEY-----..." } ] }
 *
 * HS256 (HMAC-SHA-256, RFC 7518 section 3.2) shares one secret between issuers and verifiers;
 * EdDSA (Ed25519, RFC 8037) lets verifiers hold only the public key. `signing` names the key an
 * issuer signs with; a verifier needs none. A verifier should hold public keys only (`svrkit
 * ticket public`): a service that holds a signing key (an HS256 secret, an EdDSA private key) can
 * issue tickets for any user.
 */
import { createPrivateKey, createPublicKey } from 'node:crypto';

/** One key of a ring. */
export interface TicketKey {
  /** Key id, carried in every ticket's header (`kid`): 1 to 64 of `[A-Za-z0-9._-]`. */
  readonly kid: string;
  /** `HS256` (a shared secret) or `EdDSA` (Ed25519). */
  readonly alg: 'HS256' | 'EdDSA';
  /** HS256: the secret, base64url (or base64), at least 32 bytes decoded. */
  readonly secret?: string;
  /** EdDSA: the public key, PEM (SPKI). */
  readonly publicKey?: string;
  /** EdDSA: the private key, PEM (PKCS#8); only issuers need it. */
  readonly privateKey?: string;
}

/** A key ring. */
export interface KeyRing {
  /** The keys, each with a distinct `kid`. */
  readonly keys: readonly TicketKey[];
  /** The key id issuers sign with (absent: the ring only verifies). */
  readonly signing?: string;
}

/** The most keys a ring may hold. */
export const MAX_RING_KEYS = 64;

/**
 * Checks a key ring (parsed JSON, or one built in code).
 * @param value - anything.
 * @param where - names the ring in messages, e.g. the file's path.
 * @returns the ring, frozen.
 * @throws Error naming the key and the field that is wrong: no keys, a bad or repeated `kid`, an
 *   unknown `alg`, an HS256 secret shorter than 32 bytes, an EdDSA key without `publicKey` or
 *   `privateKey`, a key that is not PEM, does not parse or is not Ed25519, or a `signing` that
 *   names no key (or one that cannot sign).
 */
export function parseKeyRing(value: unknown, where = 'ticket key ring'): KeyRing {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error(`${where}: expected { "signing"?: kid, "keys": [...] }`);
  const v = value as Record<string, unknown>;
  if (!Array.isArray(v['keys']) || v['keys'].length === 0) throw new Error(`${where}: "keys" must be a non-empty array`);
  if (v['keys'].length > MAX_RING_KEYS) throw new Error(`${where}: at most ${MAX_RING_KEYS} keys (got ${v['keys'].length})`);
  const seen = new Set<string>();
  const keys = v['keys'].map((raw: unknown, i: number): TicketKey => {
    const k = raw as Record<string, unknown>;
    const at = `${where}: key ${i}`;
    if (k === null || typeof k !== 'object') throw new Error(`${at}: expected { kid, alg, ... }`);
    const kid = k['kid'];
    if (typeof kid !== 'string' || !/^[A-Za-z0-9._-]{1,64}$/.test(kid)) throw new Error(`${at}: "kid" must be 1 to 64 letters, digits, '.', '_' or '-'`);
    if (seen.has(kid)) throw new Error(`${at}: kid '${kid}' is repeated`);
    seen.add(kid);
    if (k['alg'] === 'HS256') {
      const secret = k['secret'];
      if (typeof secret !== 'string' || Buffer.from(secret, 'base64url').length < 32) {
        throw new Error(`${where}: key '${kid}': an HS256 "secret" must be base64url of at least 32 bytes`);
      }
      return Object.freeze({ kid, alg: 'HS256', secret });
    }
    if (k['alg'] === 'EdDSA') {
      const pem = (field: 'publicKey' | 'privateKey', label: string): string | undefined => {
        const p = k[field];
        if (p === undefined) return undefined;
        if (typeof p !== 'string' || !p.includes(`-----BEGIN ${label}-----`)) throw new Error(`${where}: key '${kid}': "${field}" must be a PEM ${label}`);
        return p;
      };
      const publicKey = pem('publicKey', 'PUBLIC KEY');
      const privateKey = pem('privateKey', 'PRIVATE KEY');
      // Parsed now (node:crypto), so a broken or non-Ed25519 key is refused here, not when a server uses it.
      for (const [field, text, make] of [['publicKey', publicKey, createPublicKey], ['privateKey', privateKey, createPrivateKey]] as const) {
        if (text === undefined) continue;
        let type: string | undefined;
        try {
          type = make(text).asymmetricKeyType;
        } catch (err) {
          throw new Error(`${where}: key '${kid}': "${field}" does not parse: ${(err as Error).message}`);
        }
        if (type !== 'ed25519') throw new Error(`${where}: key '${kid}': "${field}" is a ${type ?? 'non-asymmetric'} key; EdDSA needs Ed25519`);
      }
      if (publicKey === undefined && privateKey === undefined) throw new Error(`${where}: key '${kid}': an EdDSA key needs "publicKey" (to verify) and/or "privateKey" (to sign)`);
      return Object.freeze({ kid, alg: 'EdDSA', ...(publicKey === undefined ? {} : { publicKey }), ...(privateKey === undefined ? {} : { privateKey }) });
    }
    throw new Error(`${where}: key '${kid}': "alg" must be "HS256" or "EdDSA" (got ${JSON.stringify(k['alg'])})`);
  });
  const signing = v['signing'];
  if (signing !== undefined) {
    if (typeof signing !== 'string' || !seen.has(signing)) throw new Error(`${where}: "signing" must name one of the keys (${[...seen].join(', ')})`);
    const key = keys.find((k) => k.kid === signing)!;
    if (key.alg === 'EdDSA' && key.privateKey === undefined) throw new Error(`${where}: the signing key '${signing}' has no "privateKey"`);
  }
  return Object.freeze({ keys: Object.freeze(keys), ...(signing === undefined ? {} : { signing: signing as string }) });
}
