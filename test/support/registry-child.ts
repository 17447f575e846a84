/**
 * A registering process for discovery tests, run as
 * `node --import tsx test/support/registry-child.ts <registry URI> <ttlMs> <service@host:port>...`.
 *
 * Registers every instance concurrently, prints `registered <n>` on stdout, then keeps the leases
 * alive until SIGTERM/SIGINT, when it deregisters them all, prints `deregistered <n>` and exits 0.
 * Any failure prints `error: <message>` on stderr and exits 1.
 */
import '../../framework/setup.js';
import { openRegistry, type Registration } from '../../framework/discovery/registry.js';
import { setup as setupPaxosKVRegistry } from '../../services/registry/paxoskv-registry.js';
import { setup as setupRemoteRegistry } from '../../services/registry/remote-registry.js';

setupPaxosKVRegistry(); // paxoskv: URIs (the package root does this for apps)
setupRemoteRegistry(); // registry: URIs

const [uri, ttlText, ...specs] = process.argv.slice(2);

async function main(): Promise<void> {
  if (uri === undefined || ttlText === undefined || specs.length === 0) throw new Error('usage: registry-child.ts <uri> <ttlMs> <service@host:port>...');
  const registry = openRegistry(uri);
  const keepAlive = setInterval(() => {}, 1 << 30);
  const registrations: Registration[] = await Promise.all(
    specs.map((spec) => {
      const at = spec.indexOf('@');
      return registry.register({ service: spec.slice(0, at), address: spec.slice(at + 1), labels: { pid: String(process.pid) } }, {
        ttlMs: Number(ttlText),
        onError: (err) => process.stderr.write(`renewal: ${err.message}\n`),
      });
    }),
  );
  process.stdout.write(`registered ${registrations.length}\n`);
  const stop = async (): Promise<void> => {
    await Promise.all(registrations.map((r) => r.deregister()));
    await registry.close();
    clearInterval(keepAlive);
    process.stdout.write(`deregistered ${registrations.length}\n`);
    process.exit(0);
  };
  process.once('SIGTERM', () => void stop().catch(fail));
  process.once('SIGINT', () => void stop().catch(fail));
}

function fail(err: unknown): void {
  process.stderr.write(`error: ${(err as Error)?.message ?? String(err)}\n`);
  process.exit(1);
}

main().catch(fail);
