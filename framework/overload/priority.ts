/**
 * The priority rules of overload control, in one place (DAGOR, Zhou et al., SoCC 2018, section 4):
 *
 * - A call has a **business priority** 0..127 (0 most important) and a **user priority** 0..127.
 *   Its **level** is `business * 128 + user`: lower levels are shed last.
 * - Business priority: the caller's (given or inherited down the call chain), but **never less
 *   important than the method's own** `(svrkit.method).priority`: a priority-0 method (health
 *   checks, replica traffic) stays priority 0 whoever calls it. With neither, the server's default (64).
 * - User priority: inherited down the chain, else a hash of the caller's user id (metadata key
 *   `x-user-id` by default) with a salt that changes every hour, so no user is always the first shed.
 *
 * Pure code: time comes in as an argument.
 */
import { configErrors } from '../errors.js';

/** Business priorities, and user priorities: 0 (most important) .. 127. */
export const PRIORITY_LEVELS = 128;
/** The least important priority, 127. */
export const LOWEST_PRIORITY = PRIORITY_LEVELS - 1;
/** Business priority of calls whose method and caller give none. */
export const DEFAULT_BUSINESS_PRIORITY = 64;
/** The metadata key whose value user priority is hashed from, unless configured otherwise. */
export const DEFAULT_USER_ID_KEY = 'x-user-id';

/**
 * Whether `value` is a valid priority.
 * @returns true for an integer 0..127.
 */
export function isPriority(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= LOWEST_PRIORITY;
}

/**
 * Checks a priority given in options or on the wire.
 * @param value - the value to check.
 * @param what - names it in the error, e.g. `'priority'` or `'request header business priority (b)'`.
 * @returns the value.
 * @throws ConfigError INVALID_OPTION `<what> must be an integer 0..127, got <value>` when it is not.
 */
export function checkPriority(value: unknown, what: string): number {
  if (!isPriority(value)) throw configErrors.INVALID_OPTION(what, 'an integer 0..127', value);
  return value;
}

/**
 * The business priority a call runs with: the caller's, but never less important than the method's own.
 * @param given - the caller's (explicit or inherited) business priority, if any.
 * @param own - the method's `(svrkit.method).priority`, if any.
 * @returns the smaller of the two, the one that is known, or undefined when neither is (the
 *   server then uses its default).
 */
export function effectiveBusinessPriority(given: number | undefined, own: number | undefined): number | undefined {
  if (given === undefined) return own;
  return own !== undefined && own < given ? own : given;
}

/**
 * A call's priority level.
 * @param business - business priority 0..127 (clamped).
 * @param user - user priority 0..127 (clamped).
 * @returns `business * 128 + user`, 0..16383; lower is more important.
 */
export function priorityLevel(business: number, user: number): number {
  const b = business < 0 ? 0 : business > LOWEST_PRIORITY ? LOWEST_PRIORITY : business | 0;
  const u = user < 0 ? 0 : user > LOWEST_PRIORITY ? LOWEST_PRIORITY : user | 0;
  return b * PRIORITY_LEVELS + u;
}

/**
 * The user priority of a user id: FNV-1a (32-bit) of the id and a salt that changes every hour,
 * then murmur3's fmix32, modulo 128. The same user keeps one priority for an hour, and a
 * different one the next, so no user is always the first shed (DAGOR section 4.2). Every svrkit
 * process computes the same value for the same id in the same hour, so shedding is consistent
 * along a call chain.
 * @param userId - any string (e.g. the `x-user-id` metadata value).
 * @param nowMs - epoch ms (picks the hour).
 * @returns 0..127.
 */
export function userPriority(userId: string, nowMs: number): number {
  let h = 0x811c9dc5 ^ Math.floor(nowMs / 3_600_000);
  h = Math.imul(h, 0x01000193) >>> 0;
  for (let i = 0; i < userId.length; i++) {
    h ^= userId.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  // Final avalanche (murmur3's fmix32), so that the low bits depend on every input bit.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) % PRIORITY_LEVELS;
}

/**
 * The user priority of a call from its metadata.
 * @param metadata - the call's metadata, if any.
 * @param userIdKey - the key holding the user id (default `x-user-id`).
 * @param nowMs - epoch ms (picks the hour).
 * @returns the hash of the user id, or undefined when the metadata names no user.
 */
export function metadataUserPriority(metadata: Readonly<Record<string, string>> | undefined, userIdKey: string, nowMs: number): number | undefined {
  const id = metadata?.[userIdKey];
  return id === undefined ? undefined : userPriority(id, nowMs);
}
