/**
 * `svrkit config ...`: the config center's commands (services/config) against a PaxosKV cluster,
 * found as the `kv` client commands find it (`--peers`, `--data-dir`, `SVRKIT_KV_PEERS`, or the
 * cluster `kv up` recorded in ./data/paxoskv). Each prints JSON: one line per result, NDJSON for
 * `history` and `watch`.
 */
import { Command, InvalidArgumentError } from 'commander';
import { ConfigAdmin } from '../../services/config/admin.js';
import { ConfigClient } from '../../services/config/client.js';
import { formatRule, parseRule, type GrayRule } from '../../services/config/gray.js';
import { resolve, type ConfigChanges, type NamespaceHead } from '../../services/config/model.js';
import { PaxosKVClient } from '../../services/paxoskv/client.js';
import { clusterChannel, KvUsageError, parsePeers, resolveClientCluster } from './kv-cluster.js';
import type { ChannelOptions } from '../client/channel.js';
import { intOption, pemFile, positiveMs, reportError } from './flags.js';
import { SvrkitMetrics, type MetricsEndpoint } from '../metrics/metrics.js';
import { Server } from '../server/server.js';
import { centerServices } from './center-services.js';
import { watchLauncher } from './launcher.js';

interface Flags {
  peers?: Map<number, string>;
  dataDir?: string;
  tlsDir?: string;
  timeout: number;
  by?: string;
}

const line = (v: unknown): void => {
  process.stdout.write(JSON.stringify(v) + '\n');
};

/** `key=value` pairs, and `--delete` keys, as changes. */
function changes(pairs: readonly string[], deletes: readonly string[] = []): ConfigChanges {
  const set: Record<string, string> = {};
  for (const p of pairs) {
    const eq = p.indexOf('=');
    if (eq <= 0) throw new KvUsageError(`'${p}' is not key=value`);
    set[p.slice(0, eq)] = p.slice(eq + 1);
  }
  return { set, delete: [...deletes] };
}

function collectRule(text: string, rules: GrayRule[] = []): GrayRule[] {
  try {
    return [...rules, parseRule(text)];
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

function collect(text: string, list: string[] = []): string[] {
  return [...list, text];
}

function label(text: string, labels: Record<string, string> = {}): Record<string, string> {
  const eq = text.indexOf('=');
  if (eq <= 0) throw new InvalidArgumentError(`--label ${text}: expected key=value`);
  return { ...labels, [text.slice(0, eq)]: text.slice(eq + 1) };
}

/** What a head is, printed. */
function headJson(head: NamespaceHead): unknown {
  return {
    namespace: head.namespace,
    release: head.release?.number ?? 0,
    values: head.release?.values ?? {},
    gray:
      head.gray === null
        ? null
        : { id: head.gray.id, set: head.gray.overrides.set, delete: head.gray.overrides.delete, rules: head.gray.rules.map(formatRule), by: head.gray.by, at: new Date(head.gray.at).toISOString() },
    lastOp: head.lastOp === null ? null : { ...head.lastOp, at: new Date(head.lastOp.at).toISOString() },
  };
}

/** Reports a command's failure: a usage error (exit 2) or any other (reportError, exit 1). */
function fail(err: unknown): void {
  if (err instanceof KvUsageError) {
    process.stderr.write(`error: ${err.message}\n`);
    process.exitCode = 2;
  } else reportError(err);
}

/**
 * The PaxosKV cluster the flags name (as `svrkit kv get` finds it): its peers, and the options of
 * channels to them (TLS for a cluster with a TLS dir); undefined after reporting why there is none.
 */
async function clusterOf(flags: { peers?: Map<number, string>; dataDir?: string; tlsDir?: string }): Promise<{ peers: Map<number, string>; channel: ChannelOptions | undefined } | undefined> {
  try {
    const cluster = await resolveClientCluster(flags);
    return { peers: cluster.peers, channel: await clusterChannel(cluster.tlsDir) };
  } catch (err) {
    fail(err);
    return undefined;
  }
}

async function withAdmin(flags: Flags, fn: (admin: ConfigAdmin, kv: PaxosKVClient) => Promise<void>): Promise<void> {
  const cluster = await clusterOf(flags);
  if (cluster === undefined) return;
  const kv = new PaxosKVClient({ peers: [...cluster.peers.values()], defaultTimeoutMs: flags.timeout, channel: cluster.channel });
  const admin = new ConfigAdmin(kv, { by: flags.by });
  try {
    await fn(admin, kv);
    await admin.flush(); // the operation's snapshot and log entry, before the client closes
  } catch (err) {
    fail(err);
  } finally {
    kv.close();
  }
}

/** Adds `svrkit config ...` to a commander program. */
export function addConfigCommands(program: Command): void {
  const config = program.command('config').description('the config center on PaxosKV: releases, gray releases by rule, promote, rollback, history, watch');
  const command = (name: string, description: string) =>
    config
      .command(name)
      .description(description)
      .option('--peers <list>', 'PaxosKV replicas: 1=host:port,2=host:port,... (default: as svrkit kv get finds them)', parsePeers)
      .option('--data-dir <dir>', 'use the cluster svrkit kv up --data-dir <dir> recorded there')
      .option('--tls-dir <dir>', "the PaxosKV cluster's TLS dir: trust its ca.pem (default: the recorded cluster's, or $SVRKIT_KV_TLS_DIR)")
      .option('-t, --timeout <ms>', 'deadline of each PaxosKV call (ms)', positiveMs, 5000)
      .option('--by <who>', 'who the operation is recorded as done by (default user@host)');

  config
    .command('serve')
    .description('serve the config center and the registry (svrkit.config.ConfigCenter, svrkit.registry.Registry) as a stateless process over a PaxosKV cluster; clients use config://host:port and registry://host:port/prefix')
    .option('--peers <list>', 'PaxosKV replicas: 1=host:port,2=host:port,... (default: as svrkit kv get finds them)', parsePeers)
    .option('--data-dir <dir>', 'use the cluster svrkit kv up --data-dir <dir> recorded there')
    .option('--tls-dir <dir>', "the PaxosKV cluster's TLS dir: trust its ca.pem (default: the recorded cluster's, or $SVRKIT_KV_TLS_DIR)")
    .option('-p, --port <port>', 'port to listen on (0 picks a free one)', intOption('port', 0, 65535), 7201)
    .option('--host <host>', 'interface to listen on', '127.0.0.1')
    .option('--metrics-port <port>', 'serve Prometheus metrics at http://<metrics-host>:<port>/metrics (0 picks a free port)', intOption('metrics-port', 0, 65535))
    .option('--metrics-host <host>', 'interface of the metrics endpoint', '127.0.0.1')
    .option('--tls-cert <file>', 'serve over TLS with this certificate chain (PEM; with --tls-key)')
    .option('--tls-key <file>', 'the private key of --tls-cert (PEM)')
    .action(async (flags: { peers?: Map<number, string>; dataDir?: string; tlsDir?: string; port: number; host: string; metricsPort?: number; metricsHost: string; tlsCert?: string; tlsKey?: string }) => {
      let serverTls: { cert: string; key: string } | undefined;
      try {
        if ((flags.tlsCert === undefined) !== (flags.tlsKey === undefined)) throw new InvalidArgumentError('--tls-cert and --tls-key go together');
        serverTls = flags.tlsCert === undefined ? undefined : { cert: await pemFile('--tls-cert', flags.tlsCert), key: await pemFile('--tls-key', flags.tlsKey!) };
      } catch (err) {
        fail(err);
        return;
      }
      const cluster = await clusterOf(flags);
      if (cluster === undefined) return;
      const peers = cluster.peers;
      const center = centerServices([...peers.values()], cluster.channel);
      const metrics = flags.metricsPort === undefined ? undefined : new SvrkitMetrics();
      // Watches are streams: a process with many ConfigClients (or registry watches) may hold many on one connection.
      const server = new Server({ maxStreamsPerConnection: 10_000, ...(metrics === undefined ? {} : { observer: metrics.server }), ...(serverTls === undefined ? {} : { tls: serverTls }) });
      server.addService(center.config).addService(center.registry);
      let endpoint: MetricsEndpoint | undefined;
      try {
        await server.listen(flags.port, flags.host);
        if (metrics !== undefined) {
          metrics.watchServer(server);
          endpoint = await metrics.serve(flags.metricsPort!, flags.metricsHost);
        }
      } catch (err) {
        await Promise.all([center.close(), server.close()]);
        reportError(err);
        process.exit(1);
      }
      process.stdout.write(
        `svrkit: config serve on ${server.address} (pid ${process.pid})${serverTls === undefined ? '' : ' over TLS'}: the config center and the registry over PaxosKV ${[...peers.values()].join(',')}${cluster.channel === undefined ? '' : ' (over TLS)'}\n`,
      );
      if (endpoint !== undefined) process.stdout.write(`svrkit: metrics on ${endpoint.url}\n`);
      let closing = false;
      const stop = (why: string): void => {
        if (closing) return;
        closing = true;
        process.stdout.write(`svrkit: ${why}: closing the config server\n`);
        void Promise.all([center.close(), server.close({ graceMs: 2000 }), endpoint?.close()]).then(() => process.exit(0));
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
      watchLauncher(stop);
    });

  command('publish', 'publish a new release: the current one with keys set (key=value) and --delete keys')
    .argument('<namespace>')
    .argument('[pairs...]', 'key=value')
    .option('--delete <key>', 'delete a key (repeat)', collect)
    .action((ns: string, pairs: string[], flags: Flags & { delete?: string[] }) =>
      withAdmin(flags, async (admin) => line(headJson(await admin.publish(ns, changes(pairs, flags.delete))))),
    );

  command('gray', 'start a gray release (or change the running one) for readers matching any --rule')
    .argument('<namespace>')
    .argument('[pairs...]', 'key=value')
    .option('--delete <key>', 'delete a key for gray readers (repeat)', collect)
    .option('--rule <rule>', 'label:k=v, zone:z, caller:service, users:u1,u2, percent:10 (repeat; any one matching puts a reader in)', collectRule)
    .action((ns: string, pairs: string[], flags: Flags & { delete?: string[]; rule?: GrayRule[] }) =>
      withAdmin(flags, async (admin) => {
        if (flags.rule === undefined) throw new KvUsageError('a gray needs at least one --rule');
        line(headJson(await admin.gray(ns, changes(pairs, flags.delete), flags.rule)));
      }),
    );

  command('promote', 'the gray release becomes the next full release (one write)')
    .argument('<namespace>')
    .action((ns: string, flags: Flags) => withAdmin(flags, async (admin) => line(headJson(await admin.promote(ns)))));

  command('abandon', 'drop the gray release')
    .argument('<namespace>')
    .action((ns: string, flags: Flags) => withAdmin(flags, async (admin) => line(headJson(await admin.abandon(ns)))));

  command('rollback', 'publish a new release equal to an earlier one')
    .argument('<namespace>')
    .argument('<release>', 'the release to go back to', (v: string) => {
      if (!/^\d+$/.test(v)) throw new InvalidArgumentError(`release '${v}' is not a release number`);
      return Number(v);
    })
    .action((ns: string, to: number, flags: Flags) => withAdmin(flags, async (admin) => line(headJson(await admin.rollback(ns, to)))));

  command('history', 'the namespace\'s operations, oldest first, one JSON line each')
    .argument('<namespace>')
    .action((ns: string, flags: Flags) =>
      withAdmin(flags, async (admin) => {
        for (const op of await admin.history(ns)) line({ ...op, at: new Date(op.at).toISOString() });
      }),
    );

  command('get', 'what a reader sees (linearizable): every key, or one; --label, --zone, --user and --caller describe the reader')
    .argument('<namespace>')
    .argument('[key]')
    .option('--label <k=v>', 'an instance label of the reader (repeat)', label)
    .option('--zone <zone>', 'the reader\'s zone')
    .option('--user <id>', 'the user the call is for')
    .option('--caller <service>', 'the calling service')
    .action((ns: string, key: string | undefined, flags: Flags & { label?: Record<string, string>; zone?: string; user?: string; caller?: string }) =>
      withAdmin(flags, async (admin) => {
        const { head } = await admin.head(ns);
        const seen = resolve(head, { labels: flags.label, zone: flags.zone, userId: flags.user, caller: flags.caller });
        if (key === undefined) line({ namespace: ns, ...seen });
        else line({ namespace: ns, release: seen.release, gray: seen.gray, key, found: Object.prototype.hasOwnProperty.call(seen.values, key), ...(Object.prototype.hasOwnProperty.call(seen.values, key) ? { value: seen.values[key] } : {}) });
      }),
    );

  command('watch', 'follow a namespace: one JSON line per change of what the reader sees, until Ctrl-C')
    .argument('<namespace>')
    .option('--label <k=v>', 'an instance label of the reader (repeat)', label)
    .option('--zone <zone>', 'the reader\'s zone')
    .option('--user <id>', 'the user the reads are for')
    .option('--caller <service>', 'the calling service')
    .option('--server <list>', 'follow through config servers (host:port,...: kv serve replicas or svrkit config serve) instead of PaxosKV')
    .action(async (ns: string, flags: Flags & { label?: Record<string, string>; zone?: string; user?: string; caller?: string; server?: string }) => {
      const follow = async (target: string | PaxosKVClient, channel?: ChannelOptions): Promise<void> => {
        const client = new ConfigClient({ target, channel, namespace: ns, instance: { labels: flags.label, zone: flags.zone } });
        const print = (): void => line({ namespace: ns, opSeq: client.head.opSeq, source: client.source, ...client.snapshot({ userId: flags.user, caller: flags.caller }) });
        await client.ready();
        print();
        client.onChange(print);
        await new Promise<void>((done) => {
          process.once('SIGINT', done);
          process.once('SIGTERM', done);
        });
        await client.close();
      };
      if (flags.server === undefined) return withAdmin(flags, (_admin, kv) => follow(kv));
      // Through config servers: no PaxosKV client here. Over TLS when the cluster has a TLS dir
      // (--tls-dir, the recorded cluster's, or $SVRKIT_KV_TLS_DIR): the servers are its replicas.
      try {
        const tlsDir = flags.tlsDir ?? (await resolveClientCluster(flags).then((c) => c.tlsDir, () => undefined));
        await follow(`config://${flags.server.replace(/^config:\/\//i, '')}`, await clusterChannel(tlsDir));
      } catch (err) {
        fail(err);
      }
    });
}
