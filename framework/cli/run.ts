/**
 * `svrkit run`: load a user module, serve what it exports, close gracefully on SIGTERM/SIGINT.
 */
import { createRequire } from 'node:module';
import { join, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseAddress } from '../client/resolver.js';
import { DEFAULT_LEASE_TTL_MS } from '../discovery/instance.js';
import { openRegistry, parseRegistryUri, type Registration, type Registry } from '../discovery/registry.js';
import { setDefaultClientObserver } from '../client/channel.js';
import { SvrkitMetrics, type MetricsEndpoint } from '../metrics/metrics.js';
import { Server, type ServerOptions } from '../server/server.js';
import { serviceDefinition, type ServiceImplementation } from '../wire/definition.js';
import { watchLauncher } from './launcher.js';
import { isUnspecifiedHost } from './registry.js';

/** Services every server adds by itself; `--register` never registers them. */
const BUILTIN_SERVICES = new Set(['svrkit.Health', 'svrkit.Reflection', 'grpc.health.v1.Health', 'grpc.reflection.v1.ServerReflection', 'grpc.reflection.v1alpha.ServerReflection']);
/** On shutdown, how long deregistration may take before the server closes anyway (ms). */
const DEREGISTER_TIMEOUT_MS = 5_000;

/** What `serve` registers, and where (`svrkit run --register ...`). */
export interface RegisterSettings {
  /** Registry URI: `file:///abs/path.json` or `etcd://host:port[,host:port]/prefix`. */
  uri: string;
  /** Zone of the instances; default `''`. */
  zone?: string;
  /** Labels of the instances; default none. */
  labels?: Record<string, string>;
  /** Weight of the instances (> 0); default 1. */
  weight?: number;
  /** `host:port` clients should dial; default the server's bound address (refused when it is 0.0.0.0 or ::). */
  advertise?: string;
  /** Lease TTL (ms); default 10000. */
  ttlMs?: number;
}

/** Options of `serve`. */
export interface ServeOptions {
  /** TCP port; 0 picks a free one. */
  port: number;
  /** Interface to bind. */
  host: string;
  /** Grace period for in-flight calls on shutdown (ms). */
  graceMs: number;
  /** Server options. */
  server?: ServerOptions;
  /** Where to log (default: stdout). */
  log?: (line: string) => void;
  /** Where to log problems (default: stderr). */
  logError?: (line: string) => void;
  /** Register the served services in a registry once listening (and deregister them first on shutdown). */
  register?: RegisterSettings;
  /**
   * Serve Prometheus metrics (`SvrkitMetrics`) on this port of `metricsHost` (0 picks a free one): the
   * server reports to it, and it becomes the process-wide default client observer.
   */
  metricsPort?: number;
  /** Interface of the metrics endpoint. Default `127.0.0.1`, whatever `host` the server binds. */
  metricsHost?: string;
}

/**
 * Loads `entry` and returns the service implementations it exports. JavaScript (`.js`, `.mjs`,
 * `.cjs`) is imported as it is; TypeScript (`.ts`, `.mts`, `.cts`, `.tsx`) is compiled on the fly
 * by tsx, which the app installs as a dev dependency (`npm install --save-dev tsx`): production
 * serves compiled JavaScript. Both module systems work: in a CommonJS package (`"type":
 * "commonjs"`, what `npm init -y` writes) a TypeScript entry is compiled to CommonJS, and its
 * `export default` is found under the module's `default` property.
 *
 * The default export must be a service implementation (an instance of a class extending a
 * generated `XService`), such a class, or an array of these. A class is instantiated with no
 * arguments (`new Greeter()`): generated `XService` classes carry their definition as an instance
 * field, so only an instance shows which service it implements.
 * @returns the implementations.
 * @throws Error when the module cannot be loaded: `cannot load <entry>: <the error's stack>` (a
 *   syntax error, a module that throws while loading, a missing import), or `<entry> is TypeScript:
 *   svrkit run needs tsx to load it: npm install --save-dev tsx` when tsx is not installed.
 * @throws Error when it exports nothing servable: no default export; a value that is neither a
 *   service implementation nor a class; a class whose constructor declares parameters, throws, or
 *   makes something that does not extend a generated XService.
 */
export async function loadImplementations(entry: string): Promise<ServiceImplementation[]> {
  const file = resolve(entry);
  if (TYPESCRIPT.test(file)) await registerTsx(entry);
  let mod: { default?: unknown };
  try {
    mod = (await import(pathToFileURL(file).href)) as { default?: unknown };
  } catch (err) {
    throw new Error(`cannot load ${entry}: ${describeLoadError(err)}`);
  }
  // A CommonJS module's exports arrive as the namespace's `default`; TypeScript's `export default`
  // compiled to CommonJS sits one level down, under `__esModule`'s `default`.
  let exported = mod.default;
  if (exported !== null && typeof exported === 'object' && (exported as { __esModule?: unknown }).__esModule === true) {
    exported = (exported as { default?: unknown }).default;
  }
  if (exported === undefined) {
    throw new Error(`${entry} has no default export: export default a service implementation (new MyGreeter()) or an array of them`);
  }
  const items = Array.isArray(exported) ? exported : [exported];
  return items.map((item, i) => {
    const what = `${entry}: default export${items.length > 1 ? `[${i}]` : ''}`;
    let impl = item as unknown;
    if (isConstructor(impl)) impl = instantiate(impl, what);
    if (impl === null || typeof impl !== 'object' || !(serviceDefinition in impl)) {
      throw new Error(`${what} is not a service implementation: expected an instance of a class extending a generated XService`);
    }
    return impl as ServiceImplementation;
  });
}

/** File names tsx compiles. */
const TYPESCRIPT = /\.(ts|mts|cts|tsx)$/;

let tsxRegistered = false;

/**
 * Registers tsx's loaders once per process: the ESM hooks (`tsx/esm/api`) and the CommonJS hooks
 * (`tsx/cjs/api`), since a `.ts` file in a CommonJS package is loaded by `require`.
 * @param entry - the entry being loaded, for the message.
 * @throws Error with the install command when tsx is not installed.
 */
async function registerTsx(entry: string): Promise<void> {
  if (tsxRegistered) return;
  let esm: { register: () => unknown };
  let cjs: { register: () => unknown };
  try {
    esm = (await importFromAppOrSvrkit('tsx/esm/api')) as { register: () => unknown };
    cjs = (await importFromAppOrSvrkit('tsx/cjs/api')) as { register: () => unknown };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') {
      throw new Error(`${entry} is TypeScript: svrkit run needs tsx to load it: npm install --save-dev tsx (or compile it and run the .js)`);
    }
    throw err;
  }
  esm.register();
  cjs.register();
  tsxRegistered = true;
}

/**
 * Imports an optional package: from where svrkit is installed (an app's node_modules), else from
 * the app in the working directory (svrkit linked or installed elsewhere).
 * @param specifier - a package specifier, e.g. `'tsx/esm/api'`.
 * @returns the module namespace.
 * @throws the import error when neither place has it (`ERR_MODULE_NOT_FOUND` or `MODULE_NOT_FOUND`).
 */
async function importFromAppOrSvrkit(specifier: string): Promise<unknown> {
  try {
    return await import(specifier);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ERR_MODULE_NOT_FOUND' && code !== 'MODULE_NOT_FOUND') throw err;
    const fromApp = createRequire(join(process.cwd(), 'package.json')).resolve(specifier);
    return import(pathToFileURL(fromApp).href);
  }
}

/** A load failure as the user needs it: the stack (which names the file and line) or the value. */
function describeLoadError(err: unknown): string {
  if (err instanceof Error) {
    if (err.stack === undefined) return `${err.name}: ${err.message}`;
    // The frames of Node's module loader and of svrkit's own CLI say nothing about the user's code.
    const here = fileURLToPath(new URL('.', import.meta.url));
    return err.stack
      .split('\n')
      .filter((line) => !/^\s+at /.test(line) || !(line.includes('node:internal/modules/') || line.includes(here) || line.includes(`${sep}commander${sep}`)))
      .join('\n');
  }
  return `non-Error value thrown: ${String(err)}`;
}

/** Whether `value` can be called with `new`: a class or an ordinary function (not an arrow or a method). */
function isConstructor(value: unknown): value is new () => unknown {
  return typeof value === 'function' && typeof (value as { prototype?: unknown }).prototype === 'object';
}

/**
 * `new Class()` for a default export that is a class.
 * @throws Error naming the export when the constructor declares parameters or throws, or when the
 *   instance does not extend a generated XService.
 */
function instantiate(cls: new () => unknown, what: string): unknown {
  const name = cls.name || 'the class';
  if (cls.length > 0) {
    throw new Error(
      `${what} is ${name}, whose constructor takes ${cls.length} argument${cls.length > 1 ? 's' : ''}; ` +
        `svrkit run can only call new ${name}() with none: export default an instance (export default new ${name}(...))`,
    );
  }
  let impl: unknown;
  try {
    impl = new cls();
  } catch (err) {
    throw new Error(`${what}: new ${name}() threw: ${(err as Error)?.message ?? String(err)}`);
  }
  if (impl === null || typeof impl !== 'object' || !(serviceDefinition in impl)) {
    throw new Error(`${what} is ${name}, which is not a service implementation: expected a class extending a generated XService`);
  }
  return impl;
}

/**
 * Serves the implementations exported by `entry` until SIGTERM or SIGINT, then closes gracefully
 * (GOAWAY, in-flight calls finish within `graceMs`) and resolves. Started by npm in the foreground
 * (`npx svrkit run`, an npm script), it closes the same way when npm goes away (launcher.ts).
 *
 * With `options.register`, each served service (not the built-in `svrkit.Health` and
 * `svrkit.Reflection`) is registered once the server listens, before the serving line is
 * logged; on SIGTERM/SIGINT the services are deregistered first (waiting at most 5000 ms), then
 * the server closes.
 *
 * With `options.metricsPort`, a `SvrkitMetrics` observes the server (and, as the process-wide
 * default client observer, every channel the process makes) and serves `GET /metrics` on
 * `metricsHost:metricsPort` (default 127.0.0.1, whatever `host` the server binds) once the server listens; it logs `svrkit: metrics on http://host:port/metrics`
 * before the serving line, and closes after the server on shutdown.
 * @returns the running server, a promise that settles once it has shut down, and the metrics and
 *   their endpoint when `metricsPort` was given.
 * @throws Error when loading fails, the port or the metrics port cannot be bound, or registering fails: a malformed
 *   registry URI or `advertise` address, a server bound to 0.0.0.0/:: without `advertise`, or an
 *   unreachable or unwritable registry (the server is closed again then).
 */
export async function serve(
  entry: string,
  options: ServeOptions,
): Promise<{ server: Server; closed: Promise<void>; metrics?: { metrics: SvrkitMetrics; endpoint: MetricsEndpoint } }> {
  const log = options.log ?? ((line: string) => process.stdout.write(line + '\n'));
  const logError = options.logError ?? ((line: string) => process.stderr.write(line + '\n'));
  if (options.register !== undefined) checkRegisterSettings(options.register, options.host);
  const metrics = options.metricsPort === undefined ? undefined : new SvrkitMetrics();
  // Before loading the entry: channels it creates at import time get the default observer too.
  if (metrics !== undefined) setDefaultClientObserver(metrics.client);
  let impls: ServiceImplementation[];
  let server: Server;
  try {
    impls = await loadImplementations(entry);
    server = new Server(metrics === undefined ? options.server : { ...options.server, observer: metrics.server });
    for (const impl of impls) server.addService(impl);
    await server.listen(options.port, options.host);
  } catch (err) {
    if (metrics !== undefined) setDefaultClientObserver(undefined);
    throw err;
  }
  let endpoint: MetricsEndpoint | undefined;
  if (metrics !== undefined) {
    metrics.watchServer(server);
    try {
      endpoint = await metrics.serve(options.metricsPort!, options.metricsHost ?? '127.0.0.1');
    } catch (err) {
      setDefaultClientObserver(undefined);
      await server.close({ graceMs: 0 }).catch(() => {});
      throw err;
    }
    log(`svrkit: metrics on ${endpoint.url}`);
  }
  const names = impls.map((i) => i[serviceDefinition].fullName).join(', ');
  let registry: Registry | undefined;
  let registrations: Registration[] = [];
  if (options.register !== undefined) {
    const services = [...new Set(impls.map((i) => i[serviceDefinition].fullName))].filter((n) => !BUILTIN_SERVICES.has(n));
    try {
      ({ registry, registrations } = await registerServices(server, services, options.register, log, logError));
    } catch (err) {
      if (metrics !== undefined) setDefaultClientObserver(undefined);
      await server.close({ graceMs: 0 }).catch(() => {});
      await endpoint?.close();
      throw err;
    }
  }
  if (server.grpcAddress !== undefined) log(`svrkit: gRPC-only port on ${server.grpcAddress}`);
  log(`svrkit: serving ${names} on ${server.address} (pid ${process.pid})`);
  const closed = new Promise<void>((resolveClosed) => {
    const stop = async (signal: string): Promise<void> => {
      process.off('SIGTERM', onTerm);
      process.off('SIGINT', onInt);
      stopWatch();
      if (registry !== undefined) {
        // Deregister first, so that clients stop picking this instance before it goes away. An
        // unreachable registry must not hold the shutdown: the entries then expire with their leases.
        const deregistered = Promise.all(
          registrations.map((r) =>
            r.deregister().then(
              () => log(`svrkit: deregistered ${r.instance.service} at ${r.instance.address}`),
              (err: unknown) => logError(`svrkit: ${(err as Error).message}`),
            ),
          ),
        );
        let timer: NodeJS.Timeout | undefined;
        const timedOut = new Promise<void>((resolveTimeout) => {
          timer = setTimeout(() => {
            logError(`svrkit: deregistration did not finish within ${DEREGISTER_TIMEOUT_MS} ms; the entries expire with their leases`);
            resolveTimeout();
          }, DEREGISTER_TIMEOUT_MS);
        });
        await Promise.race([deregistered, timedOut]);
        clearTimeout(timer);
        await registry.close();
      }
      log(`svrkit: ${signal}: closing, ${server.inflightCalls} calls in flight, grace ${options.graceMs} ms`);
      await server.close({ graceMs: options.graceMs });
      await endpoint?.close();
      log('svrkit: closed');
      resolveClosed();
    };
    const stopSafely = (signal: string): void => {
      stop(signal).catch((err: unknown) => {
        logError(`svrkit: shutdown failed: ${(err as Error)?.message ?? String(err)}`);
        resolveClosed();
      });
    };
    const onTerm = (): void => stopSafely('SIGTERM');
    const onInt = (): void => stopSafely('SIGINT');
    process.on('SIGTERM', onTerm);
    process.on('SIGINT', onInt);
    // Started by npm (npx, an npm script): a signal sent to npm stops at npm's shell, so stop when
    // the launcher goes away instead of serving on as an orphan (launcher.ts).
    const stopWatch = watchLauncher((why) => stopSafely(why));
  });
  return { server, closed, metrics: metrics === undefined ? undefined : { metrics, endpoint: endpoint! } };
}

/** Checks the register settings before anything is started. */
function checkRegisterSettings(settings: RegisterSettings, host: string): void {
  parseRegistryUri(settings.uri);
  if (settings.advertise !== undefined) {
    const { host: h } = parseAddress(settings.advertise);
    if (isUnspecifiedHost(h)) throw new Error(`--advertise ${settings.advertise}: give an address clients can dial, not 0.0.0.0 or ::`);
  } else if (isUnspecifiedHost(host.replace(/^\[|\]$/g, ''))) {
    throw new Error(`--register: the server binds ${host}, an address clients cannot dial; give --advertise host:port (e.g. --advertise 10.0.0.5:7000)`);
  }
}

/** Registers `services`; on a failure deregisters those done and closes the registry. */
async function registerServices(
  server: Server,
  services: string[],
  settings: RegisterSettings,
  log: (line: string) => void,
  logError: (line: string) => void,
): Promise<{ registry: Registry; registrations: Registration[] }> {
  const address = settings.advertise ?? server.address;
  if (isUnspecifiedHost(parseAddress(address).host)) {
    throw new Error(`--register: the server is bound to ${address}, an address clients cannot dial; give --advertise host:port`);
  }
  const registry = openRegistry(settings.uri);
  const registrations: Registration[] = [];
  try {
    for (const service of services) {
      const r = await registry.register(
        { service, address, zone: settings.zone, labels: settings.labels, weight: settings.weight },
        { ttlMs: settings.ttlMs, onError: (err) => logError(`svrkit: registry: ${err.message}`) },
      );
      registrations.push(r);
      const { zone, weight, labels } = r.instance;
      const labelText = Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(',');
      log(
        `svrkit: registered ${service} at ${address} in ${registry.uri} (zone ${zone || '-'}, weight ${weight}, labels ${labelText || '-'}, ` +
          `ttl ${settings.ttlMs ?? DEFAULT_LEASE_TTL_MS} ms)`,
      );
    }
  } catch (err) {
    await Promise.all(registrations.map((r) => r.deregister().catch(() => {})));
    await registry.close();
    throw new Error(`--register ${settings.uri}: ${(err as Error).message}`);
  }
  return { registry, registrations };
}
