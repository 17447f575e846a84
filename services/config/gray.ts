/**
 * Gray rules: which readers of a namespace see its gray (candidate) release instead of the full one.
 * Pure and deterministic: the same rules, salt and context give the same answer in every process.
 *
 * A rule matches one of:
 * - `label`: the reading process's instance label `key` has the value `value`;
 * - `zone`: the reading process's zone;
 * - `caller`: the service that called the handler reading the config (`CallContext.caller`,
 *   which svrkit channels state; else `x-caller-service` metadata, or set in the context);
 * - `users`: the user id is in a list;
 * - `percent`: the user id falls in the first `percent` of 100 buckets. The bucket is Unleash's
 *   (unleash-client-node `src/strategy/util.ts`, `normalizedValue`): MurmurHash3 x86 32-bit, seed
 *   0, of `"${salt}:${userId}"` (UTF-8), `% 100 + 1`, so 1..100, and the rule matches when the
 *   bucket is at most `percent`. The same user gets the same bucket everywhere; a user inside 10%
 *   stays inside when the gray widens to 20% (same salt); a different salt (another gray) picks
 *   other users first. A reader without a user id is outside every percentage.
 * A rule set matches when any of its rules matches (an empty set matches nobody).
 */
import murmurhash from 'murmurhash';

/** One gray rule; see the module comment. */
export type GrayRule =
  | { readonly kind: 'label'; readonly key: string; readonly value: string }
  | { readonly kind: 'zone'; readonly zone: string }
  | { readonly kind: 'caller'; readonly service: string }
  | { readonly kind: 'users'; readonly users: readonly string[] }
  | { readonly kind: 'percent'; readonly percent: number };

/** What a rule looks at: the reading process and the call being served. */
export interface GrayContext {
  /** The reading process's instance labels. */
  readonly labels?: Readonly<Record<string, string>>;
  /** The reading process's zone. */
  readonly zone?: string;
  /** The service that made the call being served. */
  readonly caller?: string;
  /** The user the call is for (the stable key of percentages). */
  readonly userId?: string;
}

/**
 * Unleash's normalized bucket of `id` in group `salt`: MurmurHash3 x86 32-bit (seed 0) of
 * `"${salt}:${id}"`, `% 100 + 1`.
 * @param salt - the group (Unleash's groupId; here the gray's salt); `id` - the stickiness key (a user id).
 * @returns 1..100.
 */
export function bucket(salt: string, id: string): number {
  const text = `${salt}:${id}`;
  // The library hashes bytes; encoding into a reused buffer (UTF-8 takes at most 3 bytes per
  // UTF-16 unit) saves the allocation it would make per call: a percentage is evaluated per read.
  if (scratch.length < text.length * 3) scratch = new Uint8Array(text.length * 3);
  const { written } = encoder.encodeInto(text, scratch);
  return (murmurhash.v3(scratch.subarray(0, written), 0) % 100) + 1;
}

const encoder = new TextEncoder();
let scratch = new Uint8Array(256);

/**
 * Whether `rule` matches `ctx` (pure).
 * @param rule - the rule; `ctx` - the reader; `salt` - the gray's salt (percentages only).
 * @returns true when it matches.
 */
export function ruleMatches(rule: GrayRule, ctx: GrayContext, salt: string): boolean {
  switch (rule.kind) {
    case 'label':
      return ctx.labels !== undefined && Object.prototype.hasOwnProperty.call(ctx.labels, rule.key) && ctx.labels[rule.key] === rule.value;
    case 'zone':
      return ctx.zone !== undefined && ctx.zone === rule.zone;
    case 'caller':
      return ctx.caller !== undefined && ctx.caller === rule.service;
    case 'users':
      return ctx.userId !== undefined && rule.users.includes(ctx.userId);
    case 'percent':
      return ctx.userId !== undefined && ctx.userId !== '' && rule.percent > 0 && bucket(salt, ctx.userId) <= rule.percent;
  }
}

/**
 * Whether any of `rules` matches `ctx` (the reader is in the gray; pure).
 * @param rules - the gray's rules; `ctx` - the reader; `salt` - the gray's salt.
 * @returns true when one of the rules matches (false for no rules).
 */
export function inGray(rules: readonly GrayRule[], ctx: GrayContext, salt: string): boolean {
  for (const r of rules) if (ruleMatches(r, ctx, salt)) return true;
  return false;
}

/**
 * Parses the CLI's rule syntax: `label:k=v`, `zone:z`, `caller:svc`, `users:u1,u2`, `percent:10`.
 * @returns the rule.
 * @throws Error naming what is wrong (unknown kind, empty parts, a percentage outside 0..100).
 */
export function parseRule(text: string): GrayRule {
  const colon = text.indexOf(':');
  if (colon < 0) throw new Error(`rule '${text}': expected kind:argument (label:k=v, zone:z, caller:svc, users:u1,u2, percent:10)`);
  const kind = text.slice(0, colon);
  const arg = text.slice(colon + 1);
  switch (kind) {
    case 'label': {
      const eq = arg.indexOf('=');
      if (eq <= 0) throw new Error(`rule '${text}': a label rule is label:key=value`);
      return { kind: 'label', key: arg.slice(0, eq), value: arg.slice(eq + 1) };
    }
    case 'zone':
      if (arg === '') throw new Error(`rule '${text}': the zone is empty`);
      return { kind: 'zone', zone: arg };
    case 'caller':
      if (arg === '') throw new Error(`rule '${text}': the caller service is empty`);
      return { kind: 'caller', service: arg };
    case 'users': {
      const users = arg.split(',').map((u) => u.trim()).filter((u) => u !== '');
      if (users.length === 0) throw new Error(`rule '${text}': the user list is empty`);
      return { kind: 'users', users };
    }
    case 'percent': {
      const n = Number(arg);
      if (!/^\d+(\.\d+)?$/.test(arg) || n < 0 || n > 100) throw new Error(`rule '${text}': a percentage is a number from 0 to 100`);
      return { kind: 'percent', percent: n };
    }
    default:
      throw new Error(`rule '${text}': unknown kind '${kind}' (label, zone, caller, users, percent)`);
  }
}

/**
 * Checks a rule read from storage or the wire (an object of unknown shape).
 * @returns the rule.
 * @throws Error naming the field that is wrong.
 */
export function checkRule(raw: unknown): GrayRule {
  const r = raw as Record<string, unknown> | null;
  if (r === null || typeof r !== 'object') throw new Error('a gray rule must be an object');
  const str = (k: string): string => {
    if (typeof r[k] !== 'string') throw new Error(`gray rule ${String(r.kind)}: ${k} must be a string`);
    return r[k] as string;
  };
  switch (r.kind) {
    case 'label':
      return { kind: 'label', key: str('key'), value: str('value') };
    case 'zone':
      return { kind: 'zone', zone: str('zone') };
    case 'caller':
      return { kind: 'caller', service: str('service') };
    case 'users':
      if (!Array.isArray(r.users) || !r.users.every((u) => typeof u === 'string')) throw new Error('gray rule users: users must be a list of strings');
      return { kind: 'users', users: [...(r.users as string[])] };
    case 'percent':
      if (typeof r.percent !== 'number' || !(r.percent >= 0 && r.percent <= 100)) throw new Error('gray rule percent: percent must be a number from 0 to 100');
      return { kind: 'percent', percent: r.percent };
    default:
      throw new Error(`unknown gray rule kind ${JSON.stringify(r.kind)}`);
  }
}

/**
 * The CLI's syntax of a rule (the inverse of {@link parseRule}).
 * @returns e.g. `percent:10`.
 */
export function formatRule(rule: GrayRule): string {
  switch (rule.kind) {
    case 'label':
      return `label:${rule.key}=${rule.value}`;
    case 'zone':
      return `zone:${rule.zone}`;
    case 'caller':
      return `caller:${rule.service}`;
    case 'users':
      return `users:${rule.users.join(',')}`;
    case 'percent':
      return `percent:${rule.percent}`;
  }
}
