/**
 * Verifies tickets (see ticket-issuer.ts) synchronously, so a server checks a call's ticket in the
 * same step that decodes its header, before the body is touched. Signature checks are fast-jwt's
 * (HS256 or EdDSA, by the key the ticket's `kid` names; no cryptography of svrkit's own); expiry is
 * checked here against the injected clock, so tests can move time.
 *
 * Results are cached: a bounded LRU (mnemonist's, as fast-jwt uses) keyed by the ticket string, each entry valid only
 * until the ticket's expiry, so a ticket seen before costs a lookup. Failures are cached too (a
 * bounded LRU of their own), so a forged ticket sent again costs a lookup, not a signature check.
 * Changing the keys clears both, so a retired key's tickets fail at once.
 */
import { createPublicKey } from 'node:crypto';
import { createRequire } from 'node:module';
import { createDecoder, createVerifier } from 'fast-jwt';
import type { KeyRing, TicketKey } from './key-ring.js';

// mnemonist (fast-jwt's own cache library) exports its single structures to require() only.
type LRUClass = (typeof import('mnemonist/lru-cache-with-delete.js'))['default'];
const LRU = createRequire(import.meta.url)('mnemonist/lru-cache-with-delete.js') as LRUClass;
const newCache = (capacity: number) => new LRU<string, TicketAuth>(capacity);

/** The verified identity of a call (`currentCall().auth`). */
export interface TicketAuth {
  /** The user the ticket is for (its `sub`). */
  readonly userId: string;
  /** What the holder may do (its `scp`). */
  readonly scopes: readonly string[];
  /** When the ticket expires (epoch ms). */
  readonly expiresAt: number;
  /** The key it was signed with. */
  readonly keyId: string;
}

/** Why a ticket failed. */
export type TicketFailure = 'malformed' | 'unknown-key' | 'forged' | 'expired';

/** A verification's outcome. */
export type TicketCheck = { readonly ok: true; readonly auth: TicketAuth } | { readonly ok: false; readonly why: TicketFailure; readonly message: string };

/** The longest ticket looked at (characters); longer ones are malformed without parsing (the wire's limit). */
export const MAX_TICKET_LENGTH = 8192; // = wire/frame.ts MAX_TICKET_LENGTH (tickets imports no other layer)

/** Options of {@link TicketVerifier}. */
export interface TicketVerifierOptions {
  /** Verified tickets remembered at most. Default 100,000. */
  cacheSize?: number;
  /** The clock (epoch ms). Default `Date.now`. */
  now?: () => number;
}

type Verify = (token: string) => Record<string, unknown>;

function verifierFor(key: TicketKey): Verify {
  const material = key.alg === 'HS256' ? Buffer.from(key.secret!, 'base64url') : (key.publicKey ?? createPublicKey(key.privateKey!).export({ format: 'pem', type: 'spki' }).toString());
  // Expiry is ours (the injected clock); fast-jwt checks the signature, the algorithm and the claims' types.
  return createVerifier({ key: material, algorithms: [key.alg], ignoreExpiration: true, ignoreNotBefore: true, cache: false }) as Verify;
}

const decodeHeader = createDecoder({ complete: true }) as (token: string) => { header: { kid?: unknown } };

/** Checks tickets against a key ring; see the module comment. */
export class TicketVerifier {
  private verifiers = new Map<string, Verify>();
  private readonly cache: ReturnType<typeof newCache>;
  private readonly failures = new LRU<string, Extract<TicketCheck, { ok: false }>>(10_000);
  private readonly now: () => number;
  private keyGeneration = 0;

  /**
   * @param ring - the keys to accept (each by its `kid`).
   * @param options - see {@link TicketVerifierOptions}.
   */
  constructor(ring: KeyRing, options: TicketVerifierOptions = {}) {
    this.now = options.now ?? Date.now;
    this.cache = newCache(Math.max(1, options.cacheSize ?? 100_000));
    this.setKeys(ring);
  }

  /**
   * Replaces the keys (a rotation step) and forgets every cached result; on failure the keys in
   * force stay.
   * @throws Error when a key cannot be made into a verifier (a ring from `parseKeyRing` can).
   */
  setKeys(ring: KeyRing): void {
    const verifiers = new Map(ring.keys.map((k) => [k.kid, verifierFor(k)]));
    this.verifiers = verifiers;
    this.keyGeneration++;
    this.cache.clear();
    this.failures.clear();
  }

  /** Counts key changes (`setKeys`): a check made under another generation must be made again. */
  get generation(): number {
    return this.keyGeneration;
  }

  /** The verifier's clock (epoch ms). */
  clock(): number {
    return this.now();
  }

  /** How many verified tickets are cached now. */
  get cached(): number {
    return this.cache.size;
  }

  /**
   * Checks a ticket.
   * @param ticket - the ticket as the call carried it.
   * @returns `{ ok: true, auth }`, or `{ ok: false, why, message }`: `malformed` (not a JWS, over
   *   8 KiB, or claims of the wrong shape), `unknown-key` (a `kid` not in the ring), `forged` (the
   *   signature does not verify), `expired`. Never throws.
   */
  verify(ticket: string): TicketCheck {
    const now = this.now();
    const hit = this.cache.get(ticket);
    if (hit != null) {
      if (hit.expiresAt > now) return { ok: true, auth: hit };
      this.cache.delete(ticket);
      return { ok: false, why: 'expired', message: `the ticket expired at ${new Date(hit.expiresAt).toISOString()}` };
    }
    if (typeof ticket !== 'string' || ticket.length === 0 || ticket.length > MAX_TICKET_LENGTH) {
      return { ok: false, why: 'malformed', message: `a ticket is a JWS of 1 to ${MAX_TICKET_LENGTH} characters` };
    }
    const failed = this.failures.get(ticket);
    if (failed != null) return failed;
    const check = this.check(ticket, now);
    if (check.ok) this.cache.set(ticket, check.auth);
    else this.failures.set(ticket, check);
    return check;
  }

  /** A signature check and the claims' checks (no cache). */
  private check(ticket: string, now: number): TicketCheck {
    let kid: unknown;
    try {
      kid = decodeHeader(ticket).header.kid;
    } catch {
      return { ok: false, why: 'malformed', message: 'the ticket is not a JWS (header.payload.signature, base64url)' };
    }
    const verify = typeof kid === 'string' ? this.verifiers.get(kid) : undefined;
    if (verify === undefined) return { ok: false, why: 'unknown-key', message: `the ticket's key id ${JSON.stringify(kid)} is not one of this server's keys` };
    let claims: Record<string, unknown>;
    try {
      claims = verify(ticket);
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'FAST_JWT_INVALID_SIGNATURE' || code === 'FAST_JWT_INVALID_ALGORITHM' || code === 'FAST_JWT_MISSING_SIGNATURE') {
        return { ok: false, why: 'forged', message: 'the ticket\'s signature does not verify' };
      }
      return { ok: false, why: 'malformed', message: `the ticket is malformed (${code ?? 'unreadable'})` };
    }
    const { sub, scp, exp } = claims;
    if (typeof sub !== 'string' || sub === '' || typeof exp !== 'number' || !Number.isFinite(exp) || (scp !== undefined && !(Array.isArray(scp) && scp.every((s) => typeof s === 'string')))) {
      return { ok: false, why: 'malformed', message: 'the ticket\'s claims are not { sub, scp, exp }' };
    }
    const auth: TicketAuth = Object.freeze({ userId: sub, scopes: Object.freeze([...((scp as string[] | undefined) ?? [])]), expiresAt: exp * 1000, keyId: kid as string });
    if (auth.expiresAt <= now) return { ok: false, why: 'expired', message: `the ticket expired at ${new Date(auth.expiresAt).toISOString()}` };
    return { ok: true, auth };
  }
}
