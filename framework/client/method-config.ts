/**
 * Per-service and per-method settings of a channel, after gRPC's service config
 * (grpc/grpc doc/service_config.md): a list of entries, each naming services or methods, with
 * idempotency, a retry or hedging policy and a timeout. Pure.
 *
 * Lookup, most specific first: an entry naming the method (`{ service, method }`), then one naming
 * the service (`{ service }`), then the channel's defaults. Each setting is looked up on its own,
 * except that the retry and hedging policies are one choice: the most specific entry that sets
 * either of them decides both. The `idempotent` flag of the proto
 * option `(svrkit.method) = { idempotent: true }` applies unless an entry sets `idempotent`.
 */
import type { MethodDefinition } from '../wire/definition.js';
import { configErrors } from '../errors.js';
import { normalizeHedgingPolicy, normalizeRetryPolicy, type HedgingPolicy, type RetryPolicy } from './retry.js';

/** One method-config entry. */
export interface MethodConfig {
  /** What the entry applies to: a service (`{ service: 'helloworld.Greeter' }`) or one method of it (`method: 'SayHello'`, the rpc name). */
  name: ReadonlyArray<{ service: string; method?: string }>;
  /** The method may be retried or hedged after it may have reached a handler. Overrides the proto option. */
  idempotent?: boolean;
  /** Timeout for calls that set none (ms). */
  timeoutMs?: number;
  /** Retry policy; `false` turns retries off for these methods. */
  retryPolicy?: RetryPolicy | false;
  /** Hedging policy (idempotent methods only; replaces the retry policy). */
  hedgingPolicy?: HedgingPolicy;
}

/** A method's settings after lookup. */
export interface ResolvedMethodConfig {
  readonly idempotent: boolean;
  readonly timeoutMs: number | undefined;
  /** Undefined when retries are off (or hedging is on). */
  readonly retry: Readonly<Required<RetryPolicy>> | undefined;
  /** Undefined unless hedging is configured and the method is idempotent. */
  readonly hedging: Readonly<Required<HedgingPolicy>> | undefined;
}

/**
 * Checks method-config entries.
 * @throws ConfigError when an entry names nothing (METHOD_CONFIG_WITHOUT_NAME), a name has no
 *   service (METHOD_CONFIG_WITHOUT_SERVICE), a timeout is not > 0 (METHOD_CONFIG_TIMEOUT), a policy
 *   is out of range (INVALID_OPTION), or an entry sets both a retry and a hedging policy (RETRY_AND_HEDGING).
 */
export function validateMethodConfig(entries: readonly MethodConfig[]): void {
  entries.forEach((e, i) => {
    if (!Array.isArray(e.name) || e.name.length === 0) throw configErrors.METHOD_CONFIG_WITHOUT_NAME(i);
    for (const n of e.name) {
      if (typeof n.service !== 'string' || n.service.length === 0) throw configErrors.METHOD_CONFIG_WITHOUT_SERVICE(i);
    }
    if (e.timeoutMs !== undefined && !(e.timeoutMs > 0)) throw configErrors.METHOD_CONFIG_TIMEOUT(i);
    if (e.retryPolicy && e.hedgingPolicy) throw configErrors.RETRY_AND_HEDGING(i);
    if (e.retryPolicy) normalizeRetryPolicy(e.retryPolicy);
    if (e.hedgingPolicy) normalizeHedgingPolicy(e.hedgingPolicy);
  });
}

/**
 * Resolves a method's settings.
 * @param method - the method (its path `pkg.Service/Method` and proto options).
 * @param entries - the channel's method config (validated).
 * @param defaultRetry - the channel's retry policy, or undefined when retries are off by default.
 * @returns the settings; hedging applies only to idempotent methods.
 */
export function resolveMethodConfig(
  method: MethodDefinition,
  entries: readonly MethodConfig[],
  defaultRetry: Readonly<Required<RetryPolicy>> | undefined,
): ResolvedMethodConfig {
  const slash = method.path.indexOf('/');
  const service = slash < 0 ? method.path : method.path.slice(0, slash);
  const rpc = slash < 0 ? '' : method.path.slice(slash + 1);
  const byMethod = entries.find((e) => e.name.some((n) => n.service === service && n.method === rpc));
  const byService = entries.find((e) => e.name.some((n) => n.service === service && (n.method === undefined || n.method === '')));
  const pick = <K extends keyof MethodConfig>(k: K): MethodConfig[K] | undefined => byMethod?.[k] ?? byService?.[k];
  const idempotent = pick('idempotent') ?? method.options?.idempotent ?? false;
  // Retry and hedging are one choice: the most specific entry that sets either decides both.
  const sets = (e: MethodConfig | undefined): e is MethodConfig => e !== undefined && (e.retryPolicy !== undefined || e.hedgingPolicy !== undefined);
  const policyEntry = sets(byMethod) ? byMethod : sets(byService) ? byService : undefined;
  const hedgingPolicy = policyEntry?.hedgingPolicy;
  const retryPolicy = policyEntry?.retryPolicy;
  const hedging = hedgingPolicy !== undefined && idempotent ? normalizeHedgingPolicy(hedgingPolicy) : undefined;
  let retry: Readonly<Required<RetryPolicy>> | undefined;
  if (hedging === undefined) {
    if (retryPolicy === false) retry = undefined;
    else if (retryPolicy !== undefined) retry = normalizeRetryPolicy(retryPolicy);
    else retry = defaultRetry;
    if (retry !== undefined && retry.maxAttempts <= 1) retry = undefined;
  }
  return { idempotent, timeoutMs: pick('timeoutMs'), retry, hedging };
}
