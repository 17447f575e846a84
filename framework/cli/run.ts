/**
 * `svrkit run`: load a user module, serve what it exports, close gracefully on SIGTERM/SIGINT.
 */
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Server, type ServerOptions } from '../server/server.js';
import { serviceDefinition, type ServiceImplementation } from '../wire/definition.js';

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
}

/**
 * Loads `entry` (TypeScript is compiled on the fly by tsx; JavaScript is imported as is). Its
 * default export must be a service implementation (an instance of a class extending a generated
 * `XService`), such a class (instantiated with no arguments), or an array of these.
 * @returns the implementations.
 * @throws Error when the module cannot be loaded or exports nothing servable.
 */
export async function loadImplementations(entry: string): Promise<ServiceImplementation[]> {
  const { register } = await import('tsx/esm/api');
  register();
  const url = pathToFileURL(resolve(entry)).href;
  const mod = (await import(url)) as { default?: unknown };
  if (mod.default === undefined) {
    throw new Error(`${entry} has no default export: export default a service implementation (new MyGreeter()) or an array of them`);
  }
  const items = Array.isArray(mod.default) ? mod.default : [mod.default];
  return items.map((item, i) => {
    let impl = item as unknown;
    if (typeof impl === 'function' && (impl as { prototype?: object }).prototype !== undefined && serviceDefinition in (impl as { prototype: object }).prototype) {
      impl = new (impl as new () => unknown)();
    }
    if (impl === null || typeof impl !== 'object' || !(serviceDefinition in impl)) {
      throw new Error(`${entry}: default export${items.length > 1 ? `[${i}]` : ''} is not a service implementation: expected an instance of a class extending a generated XService`);
    }
    return impl as ServiceImplementation;
  });
}

/**
 * Serves the implementations exported by `entry` until SIGTERM or SIGINT, then closes gracefully
 * (GOAWAY, in-flight calls finish within `graceMs`) and resolves.
 * @returns the running server and a promise that settles once it has shut down.
 * @throws Error when loading fails or the port cannot be bound.
 */
export async function serve(entry: string, options: ServeOptions): Promise<{ server: Server; closed: Promise<void> }> {
  const log = options.log ?? ((line: string) => process.stdout.write(line + '\n'));
  const impls = await loadImplementations(entry);
  const server = new Server(options.server);
  for (const impl of impls) server.addService(impl);
  await server.listen(options.port, options.host);
  const names = impls.map((i) => i[serviceDefinition].fullName).join(', ');
  log(`svrkit: serving ${names} on ${server.address} (pid ${process.pid})`);
  const closed = new Promise<void>((resolveClosed) => {
    const stop = (signal: string): void => {
      process.off('SIGTERM', onTerm);
      process.off('SIGINT', onInt);
      log(`svrkit: ${signal}: closing, ${server.inflightCalls} calls in flight, grace ${options.graceMs} ms`);
      void server.close({ graceMs: options.graceMs }).then(() => {
        log('svrkit: closed');
        resolveClosed();
      });
    };
    const onTerm = (): void => stop('SIGTERM');
    const onInt = (): void => stop('SIGINT');
    process.on('SIGTERM', onTerm);
    process.on('SIGINT', onInt);
  });
  return { server, closed };
}
