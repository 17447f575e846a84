/**
 * An OpenFeature provider over a `ConfigClient`, so feature flags kept in the config center are
 * read through the standard API (`@openfeature/server-sdk`, an optional peer dependency: this file
 * imports only its types, so svrkit runs without it).
 *
 * ```ts
 * import { OpenFeature } from '@openfeature/server-sdk';
 * await OpenFeature.setProviderAndWait(new ConfigFlagProvider(config));
 * const flags = OpenFeature.getClient();
 * await flags.getBooleanValue('new-checkout', false);              // in a handler: the call's user decides a percentage gray
 * await flags.getNumberValue('limit', 10, { targetingKey: 'u42' }); // or an explicit context
 * ```
 *
 * A flag is a key of the namespace; its string value is parsed for the type asked: `true`/`false`
 * for booleans, a number for numbers, JSON for objects. The evaluation context maps onto the gray
 * rules: `targetingKey` (else `userId`) is the user, `caller` the calling service; the instance's
 * labels and zone are the `ConfigClient`'s. A context without them falls back to the call being
 * served (svrkit's call context is the transaction context), as `ConfigClient.get` does.
 * Resolution reasons: `TARGETING_MATCH` for a reader in the gray (variant `gray`), `STATIC`
 * otherwise (variant `release-<n>`); a missing key returns the default with `FLAG_NOT_FOUND`, a
 * value of the wrong type with `TYPE_MISMATCH` (reason `ERROR`).
 */
import type { EvaluationContext, JsonValue, Logger, Provider, ResolutionDetails } from '@openfeature/server-sdk';
import type { ConfigClient } from './client.js';

/** The OpenFeature provider; see the module comment. */
export class ConfigFlagProvider implements Provider {
  /** The provider's name, `svrkit-config`. */
  readonly metadata = { name: 'svrkit-config' } as const;
  /** It runs in servers (`@openfeature/server-sdk`). */
  readonly runsOn = 'server' as const;

  /** @param config - the client of the namespace that holds the flags (not closed by `onClose`). */
  constructor(private readonly config: ConfigClient) {}

  /** Waits for the client's first head (`ConfigClient.ready`). */
  async initialize(): Promise<void> {
    await this.config.ready();
  }

  /**
   * A boolean flag: the key's value `true` or `false`.
   * @returns the value with its reason and variant, or the default with an error code (see the module comment).
   */
  resolveBooleanEvaluation(flagKey: string, defaultValue: boolean, context: EvaluationContext, _logger?: Logger): Promise<ResolutionDetails<boolean>> {
    return Promise.resolve(
      this.resolve(flagKey, defaultValue, context, (v) => {
        if (v === 'true') return true;
        if (v === 'false') return false;
        return undefined;
      }),
    );
  }

  /**
   * A string flag: the key's value as it is.
   * @returns as `resolveBooleanEvaluation`.
   */
  resolveStringEvaluation(flagKey: string, defaultValue: string, context: EvaluationContext, _logger?: Logger): Promise<ResolutionDetails<string>> {
    return Promise.resolve(this.resolve(flagKey, defaultValue, context, (v) => v));
  }

  /**
   * A number flag: the key's value parsed as a finite number.
   * @returns as `resolveBooleanEvaluation`.
   */
  resolveNumberEvaluation(flagKey: string, defaultValue: number, context: EvaluationContext, _logger?: Logger): Promise<ResolutionDetails<number>> {
    return Promise.resolve(
      this.resolve(flagKey, defaultValue, context, (v) => {
        const n = v.trim() === '' ? NaN : Number(v);
        return Number.isFinite(n) ? n : undefined;
      }),
    );
  }

  /**
   * An object flag: the key's value parsed as a JSON object or array.
   * @returns as `resolveBooleanEvaluation`.
   */
  resolveObjectEvaluation<T extends JsonValue>(flagKey: string, defaultValue: T, context: EvaluationContext, _logger?: Logger): Promise<ResolutionDetails<T>> {
    return Promise.resolve(
      this.resolve(flagKey, defaultValue, context, (v) => {
        try {
          const parsed = JSON.parse(v) as unknown;
          return parsed !== null && typeof parsed === 'object' ? (parsed as T) : undefined;
        } catch {
          return undefined;
        }
      }),
    );
  }

  private resolve<T>(flagKey: string, defaultValue: T, context: EvaluationContext, parse: (value: string) => T | undefined): ResolutionDetails<T> {
    const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);
    const seen = this.config.snapshot({ userId: str(context.targetingKey) ?? str(context.userId), caller: str(context.caller) });
    const variant = seen.gray ? 'gray' : `release-${seen.release}`;
    if (!Object.prototype.hasOwnProperty.call(seen.values, flagKey)) {
      return { value: defaultValue, reason: 'ERROR', errorCode: 'FLAG_NOT_FOUND' as ResolutionDetails<T>['errorCode'], errorMessage: `no key '${flagKey}' in namespace ${this.config.head.namespace}` };
    }
    const raw = seen.values[flagKey]!;
    const value = parse(raw);
    if (value === undefined) {
      return { value: defaultValue, reason: 'ERROR', errorCode: 'TYPE_MISMATCH' as ResolutionDetails<T>['errorCode'], errorMessage: `key '${flagKey}' holds ${JSON.stringify(raw.slice(0, 80))}, not the type asked for` };
    }
    return { value, variant, reason: seen.gray ? 'TARGETING_MATCH' : 'STATIC', flagMetadata: { release: seen.release } };
  }
}
