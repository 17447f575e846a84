/**
 * `svrkit registry`: look into a service registry, and the flag parsers `svrkit run --register`
 * shares with it.
 *
 *   svrkit registry list <registry URI> [service] [--json]
 *
 * Registry URIs: `file:///abs/path/registry.json` or `etcd://host:port[,host:port]/key/prefix`.
 * Errors print `error: <message>` on stderr and exit 1.
 */
import '../setup.js'; // the composition root: registers the file and etcd registries and resolvers
import { Command, InvalidArgumentError } from 'commander';
import { parseAddress } from '../client/resolver.js';
import type { Instance } from '../discovery/instance.js';
import { openRegistry, parseRegistryUri } from '../discovery/registry.js';
import { reportError } from './flags.js';

/**
 * Parses a registry URI flag or argument (commander `argParser`).
 * @returns the URI as given (trimmed).
 * @throws InvalidArgumentError with `parseRegistryUri`'s message for a malformed or unsupported URI.
 */
export function registryUriOption(value: string): string {
  try {
    parseRegistryUri(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
  return value.trim();
}

/**
 * Collects a repeatable `--label key=value` flag into a map (commander `argParser`).
 * @returns `previous` plus the label (a repeated key takes the last value).
 * @throws InvalidArgumentError when the value is not `key=value` with a non-empty key.
 */
export function labelOption(value: string, previous: Record<string, string>): Record<string, string> {
  const i = value.indexOf('=');
  if (i <= 0 || value.slice(0, i).trim() === '') throw new InvalidArgumentError(`label '${value}' is not key=value`);
  return { ...previous, [value.slice(0, i).trim()]: value.slice(i + 1) };
}

/**
 * Parses a `host:port` flag (commander `argParser`).
 * @returns the address, trimmed.
 * @throws InvalidArgumentError when it is not host:port with a port 0-65535.
 */
export function addressOption(value: string): string {
  try {
    parseAddress(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
  return value.trim();
}

/**
 * Parses a positive (possibly fractional) number, e.g. a weight (commander `argParser`).
 * @throws InvalidArgumentError for zero, negatives and non-numbers.
 */
export function positiveNumber(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`expected a number > 0, got '${value}'`);
  return n;
}

/**
 * Whether a host is an unspecified ("any") address, `0.0.0.0` or `::`, which clients cannot
 * connect to.
 * @param host - a host without brackets.
 */
export function isUnspecifiedHost(host: string): boolean {
  if (host === '0.0.0.0') return true;
  return host.includes(':') && /^[0:]+$/.test(host);
}

/**
 * Formats an instance as one line (pure): service, address, zone, weight and labels, separated
 * by two spaces, e.g. `helloworld.Greeter  127.0.0.1:7000  zone=sh-1  weight=1  labels=version=1.4`.
 * An empty zone shows as `zone=-`, no labels as `labels=-`.
 */
export function formatInstanceLine(instance: Instance): string {
  const labels = Object.entries(instance.labels)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
  return [instance.service, instance.address, `zone=${instance.zone || '-'}`, `weight=${instance.weight}`, `labels=${labels || '-'}`].join('  ');
}

/**
 * Adds `svrkit registry list` to the program.
 * @param program - the root commander program.
 */
export function addRegistryCommands(program: Command): void {
  const registry = program.command('registry').description('look into a service registry (file:///abs/path.json, etcd://host:port/prefix or paxoskv://host:port,host:port/prefix or registry://host:port,host:port/prefix)');

  registry
    .command('list')
    .description('print the live instances: one line each (service, address, zone, weight, labels), or a JSON array with --json')
    .argument('<registry>', 'registry URI, e.g. file:///var/lib/svrkit/registry.json or etcd://127.0.0.1:2379/svrkit/services', registryUriOption)
    .argument('[service]', 'only this service (fully-qualified, e.g. helloworld.Greeter)')
    .option('--json', 'print a JSON array of instances')
    .action(async (uri: string, service: string | undefined, opts: { json?: boolean }) => {
      const reg = openRegistry(uri);
      try {
        const instances = await reg.list(service);
        if (opts.json) {
          process.stdout.write(JSON.stringify(instances) + '\n');
        } else {
          for (const i of instances) process.stdout.write(formatInstanceLine(i) + '\n');
          if (instances.length === 0) process.stderr.write(`(no live instances${service === undefined ? '' : ` of ${service}`} in ${reg.uri})\n`);
        }
      } catch (err) {
        reportError(err);
      } finally {
        await reg.close();
      }
    });
}
