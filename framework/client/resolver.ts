/**
 * Resolvers turn a target string into the addresses a channel connects to, following gRPC's
 * naming (grpc/grpc doc/naming.md): a target is either `host:port` or a URI `scheme:///endpoint`
 * whose scheme names a resolver.
 *
 * Built in: `static:///h1:p1,h2:p2` (a fixed list) and a plain `host:port`. Other schemes are
 * added with `registerResolver`.
 */

/** Receives address lists from a resolver. */
export interface ResolverListener {
  /** A new complete list of `host:port` addresses (replaces the previous one). */
  onAddresses(addresses: string[]): void;
  /** Resolution failed; the channel keeps its previous addresses. */
  onError(error: Error): void;
}

/** A running resolution of one target. */
export interface Resolver {
  /** Starts resolving; may call the listener synchronously. */
  start(listener: ResolverListener): void;
  /** Stops resolving; no listener calls after this. */
  close(): void;
}

/** Makes a resolver for a parsed target. */
export type ResolverFactory = (target: ParsedTarget) => Resolver;

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

/**
 * Registers the resolver for a URI scheme (e.g. a registry-backed one).
 * @throws Error when the scheme is not a valid URI scheme.
 */
export function registerResolver(scheme: string, factory: ResolverFactory): void {
  if (!/^[a-z][a-z0-9+.-]*$/.test(scheme)) throw new Error(`invalid resolver scheme '${scheme}'`);
  factories.set(scheme, factory);
}

/**
 * Splits a target into scheme, authority and endpoint.
 * @throws Error when the target is empty or malformed.
 */
export function parseTarget(target: string): ParsedTarget {
  const m = /^([a-z][a-z0-9+.-]*):\/\/([^/]*)\/(.*)$/.exec(target);
  if (m !== null) return { scheme: m[1]!, authority: m[2]!, endpoint: m[3]! };
  if (target.includes('://')) throw new Error(`malformed target '${target}': expected host:port or scheme:///endpoint`);
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
    throw new Error(`invalid address '${address}': expected host:port, e.g. 127.0.0.1:7000`);
  }
  return { host: m[1] ?? m[2]!, port };
}

/**
 * Creates the resolver for a target.
 * @throws Error when the target is malformed or its scheme has no registered resolver.
 */
export function createResolver(target: string): Resolver {
  const parsed = parseTarget(target);
  const factory = factories.get(parsed.scheme);
  if (factory === undefined) {
    throw new Error(`no resolver for scheme '${parsed.scheme}' in target '${target}' (known: ${[...factories.keys()].join(', ')})`);
  }
  return factory(parsed);
}

registerResolver('static', (t) => {
  const addresses = t.endpoint
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (addresses.length === 0) throw new Error(`static target lists no addresses: 'static:///${t.endpoint}'`);
  for (const a of addresses) parseAddress(a);
  return {
    start: (listener) => listener.onAddresses(addresses),
    close: () => {},
  };
});
