/**
 * Issues tickets: JWS compact tokens (RFC 7515) whose payload is a JWT claims set (RFC 7519)
 * `{ sub: user id, scp: [scopes], iat, exp }` (seconds since the epoch), with the key id in the
 * header (`kid`). Signing is fast-jwt's (HS256 or EdDSA, as the key says); svrkit writes no
 * cryptography of its own.
 */
import { createSigner } from 'fast-jwt';
import type { KeyRing, TicketKey } from './key-ring.js';

/** What a ticket says. */
export interface TicketClaims {
  /** The user the ticket is for (non-empty). */
  userId: string;
  /** What the holder may do, e.g. `['inbox.read']` (a method's `scope` option must be among them). */
  scopes?: readonly string[];
  /** How long the ticket is valid (ms, at least 1000). */
  ttlMs: number;
}

/** Options of {@link TicketIssuer}. */
export interface TicketIssuerOptions {
  /** The clock (epoch ms). Default `Date.now`. */
  now?: () => number;
}

type Sign = (payload: Record<string, unknown>) => string;

function signerFor(key: TicketKey): Sign {
  const secret = key.alg === 'HS256' ? Buffer.from(key.secret!, 'base64url') : key.privateKey!;
  return createSigner({ key: secret, algorithm: key.alg, kid: key.kid, noTimestamp: true }) as Sign;
}

/**
 * Signs tickets with a key ring's signing key.
 *
 * ```ts
 * const issuer = new TicketIssuer(parseKeyRing(JSON.parse(readFileSync('keys.json', 'utf8'))));
 * const ticket = issuer.issue({ userId: 'u42', scopes: ['inbox.read'], ttlMs: 3_600_000 });
 * ```
 */
export class TicketIssuer {
  private sign!: Sign;
  private kid!: string;
  private readonly now: () => number;

  /**
   * @param ring - the key ring; its `signing` key signs.
   * @param options - the clock (see {@link TicketIssuerOptions}).
   * @throws Error when the ring names no signing key.
   */
  constructor(ring: KeyRing, options: TicketIssuerOptions = {}) {
    this.now = options.now ?? Date.now;
    this.setKeys(ring);
  }

  /** The key id tickets are signed with now. */
  get keyId(): string {
    return this.kid;
  }

  /**
   * Moves signing to another ring (a rotation: the new key must already be on every verifier).
   * @throws Error when the ring names no signing key.
   */
  setKeys(ring: KeyRing): void {
    const key = ring.keys.find((k) => k.kid === ring.signing);
    if (key === undefined) throw new Error('TicketIssuer: the key ring names no signing key ("signing")');
    this.sign = signerFor(key);
    this.kid = key.kid;
  }

  /**
   * Issues a ticket.
   * @returns the ticket, a JWS compact string (`header.payload.signature`, base64url).
   * @throws Error for an empty or over-256-character user id, a scope that is not a 1 to 128
   *   character string, more than 64 scopes, or a TTL under 1000 ms.
   */
  issue(claims: TicketClaims): string {
    const { userId, scopes = [], ttlMs } = claims;
    if (typeof userId !== 'string' || userId === '' || userId.length > 256) throw new Error('TicketIssuer: userId must be 1 to 256 characters');
    if (!Array.isArray(scopes) || scopes.length > 64 || !scopes.every((s) => typeof s === 'string' && s.length > 0 && s.length <= 128)) {
      throw new Error('TicketIssuer: scopes must be at most 64 strings of 1 to 128 characters');
    }
    if (typeof ttlMs !== 'number' || !Number.isFinite(ttlMs) || ttlMs < 1000) throw new Error('TicketIssuer: ttlMs must be at least 1000');
    const now = this.now();
    return this.sign({ sub: userId, scp: [...scopes], iat: Math.floor(now / 1000), exp: Math.floor((now + ttlMs) / 1000) });
  }
}
