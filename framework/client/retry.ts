/**
 * Retry policy, hedging policy and retry throttling, after gRFC A6 ("gRPC Retry Design"). Pure
 * code: randomness and time come in as arguments.
 *
 * - maxAttempts counts the first attempt.
 * - The n-th retry waits a random time in `[0, min(initialBackoffMs * multiplier^(n-1), maxBackoffMs)]`
 *   ("full jitter"), unless the server pushed back with an explicit delay.
 * - Every attempt shares the call's one deadline.
 * - Throttling is a token bucket per channel: it starts full at `maxTokens`; every failed attempt
 *   (a retryable status, or pushback) costs 1, every success adds `tokenRatio`; no retry or hedge
 *   is sent while `tokens <= maxTokens / 2`.
 * - Safety: a failure is retried only when the method is idempotent, or the call provably never
 *   reached a handler (`RpcError.notProcessed`).
 */
import { RpcError, Status, type Metadata } from '../wire/status.js';
import { configErrors } from '../errors.js';

/** How failed calls are retried (gRPC service-config names). */
export interface RetryPolicy {
  /** Attempts in all, the first one included; 1 turns retries off. Default 3. */
  maxAttempts?: number;
  /** Upper bound of the first retry's random delay (ms). Default 10. */
  initialBackoffMs?: number;
  /** Cap on the delay bound (ms). Default 200. */
  maxBackoffMs?: number;
  /** Growth of the delay bound per retry. Default 2. */
  backoffMultiplier?: number;
  /** Status codes that may be retried. Default `[UNAVAILABLE]`. */
  retryableStatusCodes?: readonly Status[];
}

/** How idempotent calls are hedged: more attempts are sent before the first one answers. */
export interface HedgingPolicy {
  /** Attempts in all, the first one included. Default 2. */
  maxAttempts?: number;
  /** Wait before each further attempt (ms). 0 sends all at once. Default 10. */
  hedgingDelayMs?: number;
  /**
   * Codes after which the next hedged attempt is sent at once instead of failing the call.
   * Any other failure ends the call. Default `[UNAVAILABLE]`.
   */
  nonFatalStatusCodes?: readonly Status[];
}

/** Retry throttling: a token bucket per channel. */
export interface RetryThrottleOptions {
  /** Bucket size, 1..1000. Default 100: a burst of 50 failures (an instance dying under load) is still retried. */
  maxTokens?: number;
  /** Tokens a success adds back. Default 0.1. */
  tokenRatio?: number;
}

/** The defaults, filled in. */
export const DEFAULT_RETRY_POLICY: Readonly<Required<RetryPolicy>> = Object.freeze({
  maxAttempts: 3,
  initialBackoffMs: 10,
  maxBackoffMs: 200,
  backoffMultiplier: 2,
  retryableStatusCodes: Object.freeze([Status.UNAVAILABLE]),
});

/** The defaults, filled in. */
export const DEFAULT_HEDGING_POLICY: Readonly<Required<HedgingPolicy>> = Object.freeze({
  maxAttempts: 2,
  hedgingDelayMs: 10,
  nonFatalStatusCodes: Object.freeze([Status.UNAVAILABLE]),
});

/** Metadata key of server pushback (gRFC A6's `grpc-retry-pushback-ms`). */
export const PUSHBACK_KEY = 'svrkit-retry-pushback-ms';

/**
 * Fills a retry policy's defaults and checks it.
 * @throws ConfigError INVALID_OPTION when a value is out of range: maxAttempts must be an integer 1..10 (gRPC caps at
 *   5; we allow 10), backoff values finite and >= 0, multiplier >= 1.
 */
export function normalizeRetryPolicy(p: RetryPolicy | undefined): Readonly<Required<RetryPolicy>> {
  const r = { ...DEFAULT_RETRY_POLICY, ...definedOnly(p) };
  if (!Number.isInteger(r.maxAttempts) || r.maxAttempts < 1 || r.maxAttempts > 10) throw configErrors.INVALID_OPTION('retryPolicy.maxAttempts', 'an integer 1..10', r.maxAttempts);
  if (!(r.initialBackoffMs >= 0) || !Number.isFinite(r.initialBackoffMs)) throw configErrors.INVALID_OPTION('retryPolicy.initialBackoffMs', '>= 0 ms', r.initialBackoffMs);
  if (!(r.maxBackoffMs >= 0) || !Number.isFinite(r.maxBackoffMs)) throw configErrors.INVALID_OPTION('retryPolicy.maxBackoffMs', '>= 0 ms', r.maxBackoffMs);
  if (!(r.backoffMultiplier >= 1) || !Number.isFinite(r.backoffMultiplier)) throw configErrors.INVALID_OPTION('retryPolicy.backoffMultiplier', '>= 1', r.backoffMultiplier);
  return Object.freeze(r);
}

/**
 * Fills a hedging policy's defaults and checks it.
 * @throws ConfigError INVALID_OPTION when maxAttempts is not an integer 1..10 or hedgingDelayMs is negative.
 */
export function normalizeHedgingPolicy(p: HedgingPolicy | undefined): Readonly<Required<HedgingPolicy>> {
  const r = { ...DEFAULT_HEDGING_POLICY, ...definedOnly(p) };
  if (!Number.isInteger(r.maxAttempts) || r.maxAttempts < 1 || r.maxAttempts > 10) throw configErrors.INVALID_OPTION('hedgingPolicy.maxAttempts', 'an integer 1..10', r.maxAttempts);
  if (!(r.hedgingDelayMs >= 0) || !Number.isFinite(r.hedgingDelayMs)) throw configErrors.INVALID_OPTION('hedgingPolicy.hedgingDelayMs', '>= 0 ms', r.hedgingDelayMs);
  return Object.freeze(r);
}

function definedOnly<T extends object>(o: T | undefined): Partial<T> {
  const out: Partial<T> = {};
  if (o === undefined) return out;
  for (const k of Object.keys(o) as Array<keyof T>) if (o[k] !== undefined) out[k] = o[k];
  return out;
}

/**
 * The delay before retry number `retry` (1 = the first retry): full jitter.
 * @param random - uniform in [0, 1).
 * @returns ms in `[0, min(initial * multiplier^(retry-1), max)]`.
 */
export function retryBackoffMs(retry: number, policy: Readonly<Required<RetryPolicy>>, random: number): number {
  const bound = Math.min(policy.initialBackoffMs * Math.pow(policy.backoffMultiplier, Math.max(0, retry - 1)), policy.maxBackoffMs);
  return random * bound;
}

/**
 * Reads server pushback from response metadata (gRFC A6): a non-negative integer is the delay (ms)
 * before the next attempt; any other value means "do not retry".
 * @returns the delay, `'stop'`, or undefined when the server sent none.
 */
export function parsePushback(metadata: Metadata): number | 'stop' | undefined {
  const v = metadata[PUSHBACK_KEY];
  if (v === undefined) return undefined;
  return /^\d{1,9}$/.test(v.trim()) ? Number(v.trim()) : 'stop';
}

/** The retry token bucket; see the module comment. */
export class RetryThrottle {
  /** Current tokens. */
  tokens: number;
  private readonly maxTokens: number;
  private readonly tokenRatio: number;

  /**
   * @param options - bucket size and refill ratio.
   * @throws ConfigError INVALID_OPTION when maxTokens is not in 1..1000 or tokenRatio is not in (0, 1].
   */
  constructor(options: RetryThrottleOptions = {}) {
    this.maxTokens = options.maxTokens ?? 100;
    this.tokenRatio = options.tokenRatio ?? 0.1;
    if (!(this.maxTokens >= 1 && this.maxTokens <= 1000)) throw configErrors.INVALID_OPTION('retryThrottle.maxTokens', '1..1000', this.maxTokens);
    if (!(this.tokenRatio > 0 && this.tokenRatio <= 1)) throw configErrors.INVALID_OPTION('retryThrottle.tokenRatio', 'in (0, 1]', this.tokenRatio);
    this.tokens = this.maxTokens;
  }

  /** A successful attempt adds `tokenRatio`, up to `maxTokens`. */
  onSuccess(): void {
    const t = this.tokens + this.tokenRatio;
    this.tokens = t > this.maxTokens ? this.maxTokens : t;
  }

  /** A failed attempt (retryable status or pushback) costs one token, down to 0. */
  onFailure(): void {
    this.tokens = this.tokens > 1 ? this.tokens - 1 : 0;
  }

  /** True when a retry or hedge may be sent: `tokens > maxTokens / 2`. */
  get allowsRetry(): boolean {
    return this.tokens > this.maxTokens / 2;
  }
}

/** What happened to an attempt, as `decideRetry` needs it. */
export interface AttemptFailure {
  /** The attempt's error. */
  readonly error: RpcError;
  /** Attempts made so far, this one included. */
  readonly attempts: number;
  /** Whether the method may be retried after it may have reached a handler. */
  readonly idempotent: boolean;
  /** The call's deadline (epoch ms; Infinity for none) and now. */
  readonly deadline: number;
  readonly now: number;
}

/** The verdict: retry after `delayMs`, or give up and say why (for logs and tests). */
export type RetryDecision =
  | { retry: true; delayMs: number }
  | { retry: false; why: string; throttled?: boolean; fatal?: boolean };

/**
 * Decides what follows a failed attempt, in both of gRFC A6's modes, so that both read server
 * pushback, local shedding and the throttle the same way. Also charges the throttle for a
 * failure that counts against it.
 *
 * - Retry mode (`policy` is a retry policy): retry a retryable status (or a call that never
 *   reached a handler) after the pushback delay or a jittered backoff, within maxAttempts, the
 *   throttle and the deadline; only idempotent methods after they may have run.
 * - Hedging mode (`policy` is a hedging policy; hedged methods are idempotent): a failure that is
 *   not non-fatal ends the call (`fatal: true`); after a non-fatal one the next hedge goes at
 *   once, or after the pushback delay. Pushback "stop" (which local shedding also sets) sends
 *   no further attempt in either mode: the call waits for the attempts already sent.
 * @param random - uniform in [0, 1), for the jitter.
 * @returns the decision.
 */
export function decideRetry(
  f: AttemptFailure,
  policy: Readonly<Required<RetryPolicy>> | Readonly<Required<HedgingPolicy>>,
  throttle: RetryThrottle | undefined,
  random: number,
): RetryDecision {
  const { error } = f;
  const pushback = parsePushback(error.metadata);
  const hedging = 'hedgingDelayMs' in policy;
  const retryableCode = hedging ? policy.nonFatalStatusCodes.includes(error.code) : policy.retryableStatusCodes.includes(error.code);
  // gRFC A6: a retryable status or any pushback counts as a failure for the throttle.
  if (throttle !== undefined && (retryableCode || pushback !== undefined || error.notProcessed)) throttle.onFailure();
  if (!retryableCode && !error.notProcessed) {
    return hedging ? { retry: false, why: `${error.codeName} is fatal for hedging`, fatal: true } : { retry: false, why: `${error.codeName} is not retryable` };
  }
  if (pushback === 'stop') return { retry: false, why: 'the server pushed back: do not retry' };
  if (!hedging && !f.idempotent && !error.notProcessed) return { retry: false, why: 'the method is not idempotent and the call may have been processed' };
  if (f.attempts >= policy.maxAttempts) return { retry: false, why: `${f.attempts} of ${policy.maxAttempts} attempts made` };
  if (throttle !== undefined && !throttle.allowsRetry) return { retry: false, why: 'retries are throttled (token bucket at or below half)', throttled: true };
  const delayMs = pushback ?? (hedging ? 0 : retryBackoffMs(f.attempts, policy, random));
  if (f.now + delayMs >= f.deadline) return { retry: false, why: 'the deadline would pass before the retry' };
  return { retry: true, delayMs };
}
