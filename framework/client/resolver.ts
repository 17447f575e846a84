/**
 * Resolvers turn a target string and a service name into the instances a channel connects to,
 * following gRPC's naming (grpc/grpc doc/naming.md): a target is either `host:port` or a URI
 * `scheme://authority/endpoint` whose scheme names a resolver.
 *
 * A channel resolves each service it calls separately (a registry lists instances per service),
 * so a resolver is made per (target, service). Resolvers that know no services, like `static`,
 * report the same instances for every service.
 *
 * Built in: `static:///h1:p1,h2:p2` (a fixed list) and a plain `host:port`. This module is the
 * table of schemes and never imports what fills it: `framework/discovery/resolvers.ts` exports a
 * `setup()` that adds `file:` and `etcd:`, called by the composition root `framework/setup.ts`
 * (imported by `'svrkit'`, `framework/runtime.ts` and the CLI); other schemes are added with
 * `registerResolver`. The only thing it takes from `discovery/` is the `Instance` type, from
 * `discovery/instance.ts`, a leaf that imports nothing.
 */
import type { Instance } from '../discovery/instance.js';
import { configErrors } from '../errors.js';

/** Receives instance lists from a resolver. */
export interface ResolverListener {
  /** A new complete list of instances of the service (replaces the previous one; may be empty). */
  onInstances(instances: readonly Instance[]): void;
  /** Resolution failed; the channel keeps its previous instances. */
  onError(error: Error): void;
}

/** A running resolution of one target. */
export interface Resolver {
  /** Starts resolving; may call the listener synchronously. */
  start(listener: ResolverListener): void;
  /** Stops resolving; no listener calls after this. */
  close(): void;
}

/**
 * Makes a resolver for a parsed target and a fully-qualified service name (e.g.
 * `'helloworld.Greeter'`). May throw an Error for a malformed target; the channel reports it
 * to the calls as UNAVAILABLE.
 */
export type ResolverFactory = (target: ParsedTarget, service: string) => Resolver;

/** A target split into its parts. */
export interface ParsedTarget {
  /** The scheme, e.g. `'static'`; `'static'` for a plain `host:port`. */
  scheme: string;
  /** The URI authority (between `//` and the next `/`), usually empty. */
  authority: string;
  /** The endpoint (after `scheme:///`), e.g. `'h1:7000,h2:7000'`. */
  endpoint: string;
}

const factories = new Map<string, ResolverFactory>();
const validators = new Map<string, (target: ParsedTarget) => void>();

/**
 * Registers the resolver for a URI scheme (e.g. a registry-backed one), replacing any earlier
 * resolver of that scheme.
 * @param scheme - a lower-case URI scheme, e.g. `'file'`.
 * @param factory - makes a resolver per (target, service).
 * @param validate - optional check of a target's syntax, run when a channel is created (so a
 *   malformed target fails at once instead of at the first call); throws an Error to reject it.
 * @throws Error when the scheme is not a valid URI scheme.
 */
export function registerResolver(scheme: string, factory: ResolverFactory, validate?: (target: ParsedTarget) => void): void {
  if (!/^[a-z][a-z0-9+.-]*$/.test(scheme)) throw configErrors.INVALID_RESOLVER_SCHEME(scheme);
  factories.set(scheme, factory);
  if (validate !== undefined) validators.set(scheme, validate);
  else validators.delete(scheme);
}

/**
 * Splits a target into scheme, authority and endpoint.
 * @throws Error when the target is empty or malformed.
 */
export function parseTarget(target: string): ParsedTarget {
  // The scheme is case-insensitive (RFC 3986 section 3.1); the endpoint may be empty ('etcd://h:2379').
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/]*)(?:\/(.*))?$/.exec(target);
  if (m !== null) return { scheme: m[1]!.toLowerCase(), authority: m[2]!, endpoint: m[3] ?? '' };
  if (target.includes('://')) throw configErrors.MALFORMED_TARGET(target);
  parseAddress(target);
  return { scheme: 'static', authority: '', endpoint: target };
}

/**
 * Parses `host:port` (IPv6 hosts in brackets: `[::1]:7000`).
 * @returns the host (without brackets) and the port.
 * @throws Error when the address has no valid port.
 */
export function parseAddress(address: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:/\s]+)):(\d{1,5})$/.exec(address.trim());
  const port = m === null ? NaN : Number(m[3]);
  if (m === null || port > 65535) {
    throw configErrors.INVALID_ADDRESS(address);
  }
  return { host: m[1] ?? m[2]!, port };
}

/**
 * Finds the resolver factory for a target and checks the target's syntax, without starting anything.
 * @returns the parsed target and its scheme's factory.
 * @throws Error when the target is malformed or its scheme has no registered resolver.
 */
export function resolverFor(target: string): { parsed: ParsedTarget; factory: ResolverFactory } {
  const parsed = parseTarget(target);
  const factory = factories.get(parsed.scheme);
  if (factory === undefined) {
    const hint = parsed.scheme === 'file' || parsed.scheme === 'etcd' ? "; registry schemes are registered by importing 'svrkit' (or framework/setup.js)" : '';
    throw configErrors.NO_RESOLVER(parsed.scheme, target, [...factories.keys()], hint);
  }
  validators.get(parsed.scheme)?.(parsed);
  return { parsed, factory };
}

/**
 * Parses the address list of a `static:///h1:p1,h2:p2` endpoint.
 * @throws Error when the list is empty or an address is not host:port.
 */
export function parseStaticEndpoint(endpoint: string): string[] {
  const addresses = endpoint
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (addresses.length === 0) throw configErrors.EMPTY_STATIC_TARGET(endpoint);
  for (const a of addresses) parseAddress(a);
  return addresses;
}

/** `grpc://host:port` (or `grpc:///h1:p1,h2:p2`): fixed addresses, spoken to in gRPC (the channel selects the protocol). */
registerResolver('grpc', (t, service) => {
  const instances: Instance[] = parseStaticEndpoint(t.authority !== '' ? t.authority : t.endpoint).map((address) =>
    Object.freeze({ service, address, zone: '', labels: Object.freeze({}), weight: 1 }),
  );
  return {
    start: (listener) => listener.onInstances(instances),
    close: () => {},
  };
}, (t) => {
  parseStaticEndpoint(t.authority !== '' ? t.authority : t.endpoint);
});

registerResolver('static', (t, service) => {
  const instances: Instance[] = parseStaticEndpoint(t.endpoint).map((address) =>
    Object.freeze({ service, address, zone: '', labels: Object.freeze({}), weight: 1 }),
  );
  return {
    start: (listener) => listener.onInstances(instances),
    close: () => {},
  };
}, (t) => {
  parseStaticEndpoint(t.endpoint);
});
