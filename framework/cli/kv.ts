/**
 * `svrkit kv`: run and use PaxosKV clusters.
 *
 *   svrkit kv serve --id N --peers 1=h:p,2=h:p,3=h:p --data-dir DIR [--learners IDS] [--rejoin]
 *   svrkit kv serve --id N --address h:p --join 1=h:p,... --data-dir DIR     (a new member)
 *   svrkit kv serve ... --group G --routing 1=h:p,...                         (a replica of group G of many)
 *   svrkit kv up [--replicas 3] [--groups 1] [--data-dir ./data/paxoskv] [--base-port 7101] [--host 127.0.0.1]
 *   svrkit kv routing                                                          (the routing table of many groups)
 *   svrkit kv get|put|delete|cas|status [--peers <list> | --data-dir DIR] ...
 *   svrkit kv member list|add|remove|replace|abort ...                       (kv-member.ts)
 *
 * `kv up` records its cluster in `<data-dir>/cluster.json` ({@link ClusterRecord}) before it starts
 * a replica, and refuses (exit 2, nothing started, nothing created) flags that differ from the
 * record. The client commands find their replicas in `--peers`, else `--data-dir`'s record, else
 * `SVRKIT_KV_PEERS`, else the record in `./data/paxoskv` (see {@link resolveClientPeers}).
 *
 * Client commands print one JSON object per result on stdout; a value prints as `"value"` (text)
 * when it is valid UTF-8 and as `"valueBase64"` otherwise (see {@link valueJson}). Errors print
 * `ERROR: <STATUS>: <message>` on stderr and exit 1; a missing or contradictory cluster exits 2.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import { PaxosKVClient } from '../../services/paxoskv/client.js';
import { PaxosKVReplica } from '../../services/paxoskv/replica-server.js';
import { registerReplicaMetrics } from '../../services/paxoskv/metrics.js';
import { verifyCluster } from '../../services/paxoskv/verify.js';
import { createClusterCertificates } from '../../services/paxoskv/certificates.js';
import { readReplicaTls, type ReplicaTls } from '../../services/paxoskv/tls.js';
import { SvrkitMetrics, type MetricsEndpoint } from '../metrics/metrics.js';
import { RpcError, statusName } from '../wire/status.js';
import type { ChannelOptions } from '../client/channel.js';
import { decodeRoutingTable, RoutingRing, type RoutingTable } from '../../services/paxoskv/routing.js';
import {
  checkAgainst,
  CLUSTER_FILE,
  DEFAULT_KV_DATA_DIR,
  clusterChannel,
  KV_PEERS_ENV,
  KV_TLS_DIR_ENV,
  KvUsageError,
  parsePeers,
  planCluster,
  MAX_UP_GROUPS,
  portFree,
  replicaDataDir,
  resolveClientCluster,
  upPeers,
  withTlsDir,
  writeClusterRecord,
  type ClusterRecord,
  type UpFlags,
} from './kv-cluster.js';
import { valueInput, valueJson } from './kv-values.js';
import { jsonLine, refuse, withClient, withClientOptions, withReplicas, type ClientFlags } from './kv-client-command.js';
import { addKvMemberCommands, parseMemberAddress } from './kv-member.js';
import { centerServices, type CenterServices } from './center-services.js';
import { watchLauncher } from './launcher.js';
import { intOption, positiveMs, reportError } from './flags.js';

/** The environment variable `kv up` names itself in for its replicas (they stop when it is gone). */
const KV_UP_PID_ENV = 'SVRKIT_KV_UP_PID';

/**
 * Parses `--learners 3` or `--learners 4,5`.
 * @returns the member ids.
 * @throws InvalidArgumentError for an id that is not 1-65535, or a repeated id.
 */
export function parseLearners(text: string): number[] {
  const ids = text.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  const out: number[] = [];
  for (const t of ids) {
    const id = Number(t);
    if (!/^\d+$/.test(t) || id < 1 || id > 0xffff) throw new InvalidArgumentError(`learner '${t}' is not a member id (1-65535)`);
    if (out.includes(id)) throw new InvalidArgumentError(`learner ${id} appears twice`);
    out.push(id);
  }
  if (out.length === 0) throw new InvalidArgumentError('--learners is empty');
  return out;
}

function version(v: string): bigint {
  if (!/^\d+$/.test(v.trim())) throw new InvalidArgumentError(`version '${v}' is not a whole number (0 = absent)`);
  return BigInt(v.trim());
}



/**
 * The fingerprint of the cluster a new replica joins, from the first of `join` that answers
 * (`Status.cluster`); asks again every second until one does.
 */
async function clusterToJoin(join: ReadonlyMap<number, string>, tls: ReplicaTls | undefined, say: (line: string) => void): Promise<string> {
  const client = new PaxosKVClient({ peers: [...join.values()], channel: tls === undefined ? undefined : { tls: { ca: tls.ca, cert: tls.cert, key: tls.key } } });
  try {
    for (let waited = false; ; waited = true) {
      for (let i = 0; i < join.size; i++) {
        try {
          const s = await client.status(i, { timeoutMs: 1000 });
          if (s.cluster !== '') return s.cluster;
        } catch {
          // the next one
        }
      }
      if (!waited) say(`waiting for a replica of --join to answer (${[...join.values()].join(', ')})`);
      await new Promise((r) => setTimeout(r, 1000));
    }
  } finally {
    client.close();
  }
}

/**
 * `kv up` of many groups: writes the first routing table (epoch 1: group g at its `kv up`
 * addresses) into the system group once it serves, unless one is there already (a restart; later
 * epochs came from membership changes). Tries again every second until it is written or `stopped()`.
 */
async function publishFirstRouting(record: ClusterRecord, channel: ChannelOptions | undefined, stopped: () => boolean): Promise<void> {
  const groups = record.groups ?? 1;
  const table: RoutingTable = {
    epoch: 1,
    groups: Array.from({ length: groups }, (_, i) => ({ id: i + 1, replicas: [...parsePeers(upPeers(record, i + 1)).values()] })),
  };
  const client = new PaxosKVClient({ peers: [...parsePeers(record.peers).values()], ...(channel === undefined ? {} : { channel }) });
  try {
    for (let attempt = 1; !stopped(); attempt++) {
      try {
        const current = (await client.routingTable({ timeoutMs: 3000 })) ?? (await client.setRoutingTable(table, { timeoutMs: 3000 }));
        process.stdout.write(`svrkit: routing table epoch ${current.epoch}: keys hashed over groups ${current.groups.map((g) => g.id).join(', ')} (svrkit kv routing shows it)\n`);
        return;
      } catch (err) {
        // Group 1 still starting is the usual reason; anything that lasts is said every 10 tries.
        if (attempt % 10 === 0) process.stderr.write(`svrkit: the routing table is not written yet (try ${attempt}): ${err instanceof Error ? err.message : String(err)}\n`);
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  } finally {
    client.close();
  }
}

/**
 * Reads a routing table for `kv routing --set` from a file (`-`: stdin).
 * @throws KvUsageError naming the file and what is wrong with it.
 */
async function tableInput(file: string): Promise<RoutingTable> {
  let bytes: Uint8Array;
  try {
    bytes = file === '-' ? await valueInput(undefined, false) : await readFile(file);
  } catch (err) {
    throw new KvUsageError(`--set ${file}: ${(err as Error).message}`);
  }
  try {
    return decodeRoutingTable(bytes);
  } catch (err) {
    throw new KvUsageError(`--set ${file}: ${(err as Error).message}`);
  }
}

/** Adds `svrkit kv ...` to a commander program. */
export function addKvCommands(program: Command): void {
  const kv = program.command('kv').description('PaxosKV: a leaseless per-key Paxos key-value store (serve, up, certs, get, put, delete, cas, list, watch, status, verify, member, routing)');
  const peersOption = ['--peers <list>', 'replicas: 1=host:port,2=host:port,... (or host:port,... for ids 1, 2, ...)', parsePeers] as const;

  kv.command('serve')
    .description('run one replica in the foreground; it listens on its own entry of --peers (or on --address, joining a running cluster with --join)')
    .requiredOption('--id <n>', 'this replica\'s member id', intOption('id', 1, 0xffff))
    .option(...peersOption)
    .option('--join <list>', 'join a running cluster (instead of --peers): some of its replicas, 1=host:port,...; the replica waits until svrkit kv member add|replace names it, then copies every key', parsePeers)
    .option('--address <host:port>', 'with --join: where this replica listens (give kv member add the same)', parseMemberAddress)
    .requiredOption('--data-dir <dir>', 'where this replica keeps its records (created when absent)')
    .option('--learners <ids>', 'members that only learn (no votes, no clients; outside the majority); give every replica the same list', parseLearners)
    .option('--rejoin', 'this replica lost its data: start it on an empty --data-dir; it catches up and votes only once that is safe')
    .option('--metrics-port <port>', 'serve Prometheus metrics (RPC and PaxosKV: lost keys, corrupt reads, lagging keys, mode) at http://<metrics-host>:<port>/metrics (0 picks a free port)', intOption('metrics-port', 0, 65535))
    .option('--metrics-host <host>', 'interface of the metrics endpoint', '127.0.0.1')
    .option('--tls-dir <dir>', 'serve and reach the peers over TLS with the certificates in <dir> (ca.pem, member-<id>.pem, member-<id>-key.pem: svrkit kv certs makes them); peer batches are accepted only from certificates naming their member')
    .option('--no-services', 'serve PaxosKV only, not the config center and registry services (svrkit.config.ConfigCenter, svrkit.registry.Registry)')
    .option('--group <n>', 'many groups: this replica belongs to group <n> (1 is the system group, which holds the routing table); keys of other groups are answered with the table', intOption('group', 1, 0xffff))
    .option('--routing <list>', 'with --group: the system group\'s replicas (1=host:port,...), where the routing table is read; default for group 1: --peers', parsePeers)
    .action(async (opts: { id: number; peers?: Map<number, string>; join?: Map<number, string>; address?: string; dataDir: string; learners?: number[]; rejoin?: boolean; metricsPort?: number; metricsHost: string; tlsDir?: string; services: boolean; group?: number; routing?: Map<number, string> }) => {
      let replica: PaxosKVReplica;
      let endpoint: MetricsEndpoint | undefined;
      let center: CenterServices | undefined;
      const learners = opts.learners ?? [];
      const say = (line: string) => process.stdout.write(`svrkit: paxoskv replica ${opts.id}${opts.group === undefined ? '' : ` of group ${opts.group}`} ${line}\n`);
      let peers: Map<number, string>;
      let joining: { ids: number[]; cluster: string } | undefined;
      try {
        if ((opts.peers === undefined) === (opts.join === undefined)) throw new KvUsageError('give --peers (a founding member) or --join (a new member of a running cluster)');
        if (opts.routing !== undefined && opts.group === undefined) throw new KvUsageError('--routing is for a replica of many groups: give its --group too');
        if (opts.group !== undefined && opts.group !== 1 && opts.routing === undefined) throw new KvUsageError(`--group ${opts.group} needs --routing: the system group's replicas (group 1), where the routing table is`);
        const tls: ReplicaTls | undefined = opts.tlsDir === undefined ? undefined : await readReplicaTls(opts.tlsDir, opts.id);
        if (opts.join !== undefined) {
          if (opts.address === undefined) throw new KvUsageError('--join needs --address: where this replica listens');
          if (opts.learners !== undefined) throw new KvUsageError('--join takes no --learners: the cluster\'s configuration says who learns');
          if (opts.join.has(opts.id)) throw new KvUsageError(`--join names member ${opts.id}, this replica: list the running replicas to ask`);
          if (opts.rejoin === true) throw new KvUsageError(`--join takes no --rejoin: a member that joined and lost its data is replaced by a new member id (svrkit kv member replace ${opts.id} <new id>)`);
          peers = new Map([...opts.join, [opts.id, opts.address]]);
          joining = { ids: [...opts.join.keys()], cluster: await clusterToJoin(opts.join, tls, say) };
        } else {
          peers = opts.peers!;
          if (opts.address !== undefined) throw new KvUsageError('--address is for --join; a founding member listens on its own entry of --peers');
          if (!peers.has(opts.id)) throw new InvalidArgumentError(`--id ${opts.id} is not in --peers`);
          for (const l of learners) if (!peers.has(l)) throw new InvalidArgumentError(`--learners: ${l} is not in --peers`);
          const voters = peers.size - learners.length;
          if (voters === 0) throw new InvalidArgumentError('--learners names every member: at least one must vote');
          if (voters % 2 === 0) throw new InvalidArgumentError(`a cluster needs an odd number of voters, got ${voters} (make one more a learner, or add a voter)`);
        }
        const metrics = opts.metricsPort === undefined ? undefined : new SvrkitMetrics();
        // The config center and the registry, as clients of the voters (this replica first).
        const voterAddresses = [...peers].filter(([id]) => !learners.includes(id)).sort(([a], [b]) => (a === opts.id ? -1 : b === opts.id ? 1 : a - b)).map(([, address]) => address);
        center = opts.services ? centerServices(voterAddresses, tls === undefined ? undefined : { tls: { ca: tls.ca, cert: tls.cert, key: tls.key } }) : undefined;
        replica = await PaxosKVReplica.start({
          tls,
          services: center === undefined ? [] : [center.config, center.registry],
          id: opts.id,
          members: peers,
          learners,
          ...(joining === undefined ? {} : { join: joining.ids, cluster: joining.cluster }),
          dataDir: opts.dataDir,
          rejoin: opts.rejoin === true,
          ...(opts.group === undefined ? {} : { routing: { group: opts.group, system: [...(opts.routing ?? peers).values()] } }),
          server: metrics === undefined ? undefined : { observer: metrics.server },
          onModeChange: (mode, r) => {
            if (mode === 'rejoining') say(`rejoining: it lost its data; fencing every key the other voters hold before it votes (see kv status)`);
            else if (mode === 'voter') say(`voting (incarnation ${r.status().incarnation}, epoch ${r.status().epoch})`);
            else if (mode === 'learner' && joining !== undefined) say(`added as a learner (epoch ${r.status().epoch}): copying every key`);
          },
          onRemoved: (why) => say(why.replace(/^paxoskv replica \d+ /, '')),
        });
        if (metrics !== undefined) {
          metrics.watchServer(replica);
          registerReplicaMetrics(metrics.registry, replica);
          try {
            endpoint = await metrics.serve(opts.metricsPort!, opts.metricsHost);
          } catch (err) {
            await replica.close();
            throw err;
          }
        }
      } catch (err) {
        // A usage error (the flags contradict each other) exits 2, as the client commands do.
        refuse(err);
        process.exit(process.exitCode === 2 ? 2 : 1);
      }
      const role = `${learners.includes(opts.id) ? ' (learner)' : ''}${opts.group === undefined ? '' : ` of group ${opts.group}`}`;
      process.stdout.write(
        `svrkit: paxoskv replica ${opts.id}${role} of ${joining === undefined ? `[${[...peers.keys()].join(',')}]` : `the cluster of ${[...opts.join!.values()].join(',')}`} ` +
          `serving on ${replica.address} (pid ${process.pid})${opts.tlsDir === undefined ? '' : ' over TLS'}, data in ${opts.dataDir}${center === undefined ? '' : '; also the config center and the registry'}\n`,
      );
      if (endpoint !== undefined) say(`metrics on ${endpoint.url}`);
      const lost = replica.lostAtOpen;
      if (lost.length > 0) {
        say(
          `found ${lost.length} record(s) failing their checksum: ${lost.slice(0, 5).map((l) => `${JSON.stringify(l.key)} (${l.reason})`).join(', ')}${lost.length > 5 ? ', ...' : ''}; ` +
            'it serves and votes on none of them until it has repaired them from the other voters (see kv status)',
        );
      }
      if (replica.mode === 'joining') say(`joining: waiting to be added (svrkit kv member add ${opts.id} --address ${opts.address!}, or kv member replace <old> ${opts.id} --address ${opts.address!})`);
      if (replica.mode === 'checking') say(opts.rejoin ? 'starting after a data loss (--rejoin): confirming a new incarnation with the other voters' : 'confirming its incarnation with a majority of the other voters before it votes');
      let closing = false;
      const stop = (signal: string): void => {
        if (closing) return;
        closing = true;
        process.stdout.write(`svrkit: ${signal}: closing replica ${opts.id}\n`);
        void Promise.all([center?.close(), replica.close(), endpoint?.close()]).then(() => process.exit(0));
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
      // Started by `kv up` (which names itself in the environment), or through npm: stop when that
      // parent goes (launcher.ts).
      watchLauncher((why) => stop(why), { parentPid: Number(process.env[KV_UP_PID_ENV]) });
    });

  kv.command('up')
    .description(
      'run a local cluster as child processes, in the foreground until Ctrl-C. The first start records the cluster in <data-dir>/cluster.json; ' +
        'later starts run that cluster (flags left out take its values) and refuse a flag that differs',
    )
    .option('--replicas <n>', 'replicas (odd) per group', intOption('replicas', 1, 9), 3)
    .option('--groups <n>', `groups of --replicas replicas each; keys are routed over them by consistent hashing (group 1 also holds the routing table). Replica i of group g listens on base+(g-1)*replicas+i-1`, intOption('groups', 1, MAX_UP_GROUPS), 1)
    .option('--data-dir <dir>', 'parent of the replicas\' data dirs', DEFAULT_KV_DATA_DIR)
    .option('--base-port <port>', 'port of replica 1; replica i listens on base+i-1', intOption('base port', 1, 65535), 7101)
    .option('--host <host>', 'interface and address of every replica', '127.0.0.1')
    .option('--metrics-base-port <port>', 'serve each replica\'s Prometheus metrics: replica i on base+i-1 (see kv serve --metrics-port)', intOption('metrics base port', 1, 65535))
    .option('--metrics-host <host>', 'interface of the metrics endpoints', '127.0.0.1')
    .option(
      '--tls-dir <dir>',
      'run the cluster over TLS with the certificates in <dir>; what it lacks (a CA of its own, a certificate per replica, a client certificate) is made on the first start. Recorded: later starts and the kv commands use it',
    )
    .action(async (opts: UpFlags & { dataDir: string; metricsBasePort?: number; metricsHost: string; tlsDir?: string }, cmd: Command) => {
      const given = new Set((['replicas', 'groups', 'basePort', 'host'] as const).filter((k) => cmd.getOptionValueSource(k) === 'cli'));
      let record: ClusterRecord;
      try {
        if (opts.replicas % 2 === 0) throw new KvUsageError(`--replicas must be odd, got ${opts.replicas}`);
        const count = opts.replicas * opts.groups;
        if (opts.basePort + count - 1 > 65535) throw new KvUsageError(`--base-port ${opts.basePort} leaves no port for replica ${count} (ports end at 65535)`);
        if (opts.metricsBasePort !== undefined && opts.metricsBasePort + count - 1 > 65535) {
          throw new KvUsageError(`--metrics-base-port ${opts.metricsBasePort} leaves no port for replica ${count} (ports end at 65535)`);
        }
        const plan = await planCluster(opts.dataDir, opts, given);
        record = plan.record;
        const tlsDir = opts.tlsDir === undefined ? undefined : path.resolve(opts.tlsDir);
        if (plan.recorded && tlsDir !== undefined && record.tlsDir !== tlsDir) {
          throw new KvUsageError(
            `data dir ${opts.dataDir} holds a cluster ${record.tlsDir === undefined ? 'recorded without TLS' : `recorded with --tls-dir ${record.tlsDir}`}; --tls-dir ${tlsDir} differs: ` +
              `${record.tlsDir === undefined ? 'leave it out' : `use --tls-dir ${record.tlsDir} (or leave it out)`}, or a new --data-dir`,
          );
        }
        if (!plan.recorded && tlsDir !== undefined) record = withTlsDir(record, tlsDir);
        const peers = parsePeers(record.peers);
        for (let g = 1; g <= (record.groups ?? 1); g++) {
          for (const [id, address] of parsePeers(upPeers(record, g))) {
            await portFree(record.host, Number(address.slice(address.lastIndexOf(':') + 1))).catch((err: NodeJS.ErrnoException) => {
              throw new Error(
                `replica ${id}${(record.groups ?? 1) === 1 ? '' : ` of group ${g}`} cannot listen on ${address}: ${err.code ?? err.message}` +
                  (plan.recorded ? ' (is this cluster already up? its addresses are recorded in the data dir)' : '; pick another --base-port'),
              );
            });
          }
        }
        if (record.tlsDir !== undefined) {
          const made = await createClusterCertificates(record.tlsDir, peers);
          if (made.written.length > 0) {
            process.stdout.write(
              `svrkit: ${made.newCa ? 'made a CA and ' : ''}certificates in ${record.tlsDir}: ${made.written.map((f) => path.basename(f)).join(', ')} ` +
                `(the replicas accept peer batches only from certificates that name their member; clients trust ca.pem)\n`,
            );
          }
        }
        if (!plan.recorded) {
          const written = await writeClusterRecord(opts.dataDir, record);
          if (written.peers !== record.peers || written.groups !== record.groups) checkAgainst(opts.dataDir, written, { ...record, groups: record.groups ?? 1 }, new Set(['replicas', 'groups', 'basePort', 'host']));
          if (written.tlsDir !== record.tlsDir) throw new KvUsageError(`a concurrent svrkit kv up recorded this cluster in ${opts.dataDir} with ${written.tlsDir === undefined ? 'no TLS' : `--tls-dir ${written.tlsDir}`}`);
          process.stdout.write(`svrkit: recorded the cluster in ${path.join(opts.dataDir, CLUSTER_FILE)}: later starts run it, and refuse another --replicas, --groups, --base-port, --host or --tls-dir\n`);
        }
      } catch (err) {
        refuse(err);
        return;
      }
      const ids = Array.from({ length: record.replicas }, (_, i) => i + 1);
      const groups = record.groups ?? 1;
      const cli = fileURLToPath(new URL('../../../bin/svrkit.js', import.meta.url));
      const children = new Map<string, ChildProcess>();
      let stopping = false;
      for (let g = 1; g <= groups; g++) {
        const groupPeers = upPeers(record, g);
        for (const id of ids) {
          const name = groups === 1 ? String(id) : `${g}/${id}`;
          const n = (g - 1) * record.replicas + id - 1;
          const metricsArgs = opts.metricsBasePort === undefined ? [] : ['--metrics-port', String(opts.metricsBasePort + n), '--metrics-host', opts.metricsHost];
          const tlsArgs = record.tlsDir === undefined ? [] : ['--tls-dir', record.tlsDir];
          const groupArgs = groups === 1 ? [] : ['--group', String(g), '--routing', record.peers];
          const child = spawn(process.execPath, [cli, 'kv', 'serve', '--id', String(id), '--peers', groupPeers, '--data-dir', replicaDataDir(opts.dataDir, record, g, id), ...groupArgs, ...metricsArgs, ...tlsArgs], {
            stdio: ['ignore', 'inherit', 'inherit'],
            // The replicas stop when this process is gone, however it was started (SIGKILL included).
            env: { ...process.env, [KV_UP_PID_ENV]: String(process.pid) },
          });
          children.set(name, child);
          child.on('exit', (code, signal) => {
            children.delete(name);
            if (!stopping) process.stderr.write(`svrkit: replica ${groups === 1 ? id : `${id} of group ${g}`} exited (${code ?? signal}); the others keep serving\n`);
            if (children.size === 0) process.exit(stopping ? 0 : 1);
          });
        }
      }
      const pids = [...children].map(([id, c]) => `${id}=${c.pid ?? '?'}`).join(',');
      const here = path.resolve(opts.dataDir) === path.resolve(DEFAULT_KV_DATA_DIR);
      process.stdout.write(
        `svrkit: kv up (pid ${process.pid}): paxoskv cluster of ${groups === 1 ? '' : `${groups} groups of `}${record.replicas} starting${record.tlsDir === undefined ? '' : ' over TLS'}, replica pids ${pids}, data in ${opts.dataDir}; ` +
          `clients use --peers ${record.peers}${record.tlsDir === undefined ? '' : ` --tls-dir ${record.tlsDir}`}\n` +
          `svrkit: kv commands find this cluster without --peers ${here ? 'when run in this directory' : `given --data-dir ${opts.dataDir}`} ` +
          `(or with ${KV_PEERS_ENV}=${record.peers}${record.tlsDir === undefined ? '' : ` ${KV_TLS_DIR_ENV}=${record.tlsDir}`})\n` +
          (record.tlsDir === undefined
            ? `svrkit: every replica also serves the config center and the registry: config://${[...parsePeers(record.peers).values()].join(',')} and registry://${[...parsePeers(record.peers).values()].join(',')}/svrkit/services\n`
            : `svrkit: every replica also serves the config center and the registry, over TLS: config://${[...parsePeers(record.peers).values()].join(',')} with ConfigClientOptions.channel.tls (the registry:// scheme does not speak TLS yet)\n`),
      );
      const stop = (): void => {
        stopping = true;
        for (const c of children.values()) c.kill('SIGTERM');
      };
      if (groups > 1) void publishFirstRouting(record, await clusterChannel(record.tlsDir), () => stopping);
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      // Started through npm: a SIGTERM to npm stops at npm's shell; stop the replicas when it goes (launcher.ts).
      watchLauncher((why) => {
        process.stdout.write(`svrkit: ${why}: stopping the replicas\n`);
        stop();
      });
      await Promise.all([...children.values()].map((c) => once(c, 'exit')));
    });

  kv.command('certs')
    .description(
      "make a cluster's TLS dir for kv serve --tls-dir: a CA of its own (ca.pem, ca-key.pem), a certificate per member naming spiffe://svrkit.paxoskv/member/<id> and its host, and a client certificate. " +
        'Files already there are kept: run it again with more members to issue only theirs',
    )
    .requiredOption('--tls-dir <dir>', 'the dir to write (created when absent, mode 0700)')
    .requiredOption(...peersOption)
    .action(async (opts: { tlsDir: string; peers: Map<number, string> }) => {
      try {
        const made = await createClusterCertificates(opts.tlsDir, opts.peers);
        if (made.written.length === 0) process.stdout.write(`svrkit: ${opts.tlsDir} already holds certificates for members ${[...opts.peers.keys()].join(', ')} and a client\n`);
        else process.stdout.write(`svrkit: ${made.newCa ? 'made a CA and ' : `issued with the CA in ${opts.tlsDir}: `}${made.written.map((f) => path.basename(f)).join(', ')}\n`);
      } catch (err) {
        reportError(err);
      }
    });

  const clientCommand = (name: string, description: string) => withClientOptions(kv.command(name).description(description));
  const base64Option = ['--base64', 'the value (argument or stdin) is base64, as kv get prints valueBase64: for bytes that are not UTF-8 text'] as const;
  const noInput = async (): Promise<void> => undefined;

  clientCommand('get', 'read a key (linearizable); the value prints as "value" when it is UTF-8 text, else as "valueBase64"')
    .argument('<key>')
    .action((key: string, flags: ClientFlags) =>
      withClient(flags, noInput, async (c) => {
        const r = await c.get(key);
        return r === null ? { key, found: false } : { key, found: true, version: r.version, ...valueJson(r.value) };
      }),
    );

  clientCommand('routing', 'the routing table of a cluster of many groups (read linearizably from the system group): its epoch, and each group\'s replicas; with --key, the group of a key; with --set, write the next table')
    .option('--key <key>', 'also print which group this key belongs to')
    .option('--set <file>', 'write this table (JSON as this command prints it; - for stdin): the first one (epoch 1, for replicas started with kv serve --group), or the next epoch with the same groups and new addresses. --peers then names the system group (group 1)')
    .action((flags: ClientFlags & { key?: string; set?: string }) =>
      withClient(
        flags,
        async () => (flags.set === undefined ? undefined : tableInput(flags.set)),
        async (c, table) => {
          const t = table === undefined ? await c.routingTable() : await c.setRoutingTable(table);
          if (t === null) return { epoch: 0, groups: [], note: 'a cluster of one group: nothing is routed' };
          return { ...t, ...(flags.key === undefined ? {} : { key: flags.key, group: new RoutingRing(t).groupOf(flags.key) }) };
        },
      ),
    );

  clientCommand('put', 'write a value, from the argument or from stdin')
    .argument('<key>')
    .argument('[value]', 'the value as UTF-8 text (taken as is), or base64 with --base64; read from stdin when absent (bytes as they are)')
    .option(...base64Option)
    .action((key: string, value: string | undefined, flags: ClientFlags & { base64?: boolean }) =>
      withClient(flags, () => valueInput(value, flags.base64 === true), async (c, bytes) => ({ key, version: await c.put(key, bytes) })),
    );

  clientCommand('delete', 'delete a key')
    .argument('<key>')
    .action((key: string, flags: ClientFlags) => withClient(flags, noInput, async (c) => ({ key, version: await c.delete(key) })));

  clientCommand('cas', 'write only if the key is at <expected-version> (0 = absent)')
    .argument('<key>')
    .argument('<expected-version>', 'the version the key must have; 0 for absent', version)
    .argument('[value]', 'the value as UTF-8 text (taken as is), or base64 with --base64; read from stdin when absent (bytes as they are)')
    .option(...base64Option)
    .action((key: string, expected: bigint, value: string | undefined, flags: ClientFlags & { base64?: boolean }) =>
      withClient(flags, () => valueInput(value, flags.base64 === true), async (c, bytes) => ({ key, version: await c.compareAndSet(key, expected, bytes) })),
    );

  clientCommand('list', 'list keys with a prefix and their values, one JSON line per key, in key order (a replica\'s local state: not linearizable)')
    .argument('[prefix]', 'the keys\' prefix; every key when absent', '')
    .option('--limit <n>', 'at most this many keys', intOption('limit', 1, 1_000_000), 1000)
    .action((prefix: string, flags: ClientFlags & { limit: number }) =>
      withReplicas(flags, async (_peers, c) => {
        try {
          let after = '';
          for (let left = flags.limit; left > 0; ) {
            const page = await c.list(prefix, { after, limit: Math.min(left, 1000), timeoutMs: flags.timeout });
            for (const i of page.items) process.stdout.write(jsonLine({ key: i.key, version: i.version, ...valueJson(i.value) }));
            left -= page.items.length;
            if (!page.more || page.items.length === 0) break;
            after = page.items[page.items.length - 1]!.key;
          }
        } catch (err) {
          reportError(err);
        }
      }),
    );

  clientCommand('watch', 'follow a key: one JSON line per version after --from-version (0: from the current one), until Ctrl-C; moves to another replica when one fails')
    .argument('<key>')
    .option('--from-version <n>', 'the last version you have (0 = none: the current version first)', version, 0n)
    .action((key: string, flags: ClientFlags & { fromVersion: bigint }) =>
      withReplicas(flags, async (_peers, c) => {
        const ac = new AbortController();
        const stop = (): void => ac.abort();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
        try {
          for await (const e of c.watch(key, { fromVersion: flags.fromVersion, signal: ac.signal })) {
            process.stdout.write(jsonLine({ key, version: e.version, found: e.value !== null, ...(e.value === null ? {} : valueJson(e.value)), ...(e.gap ? { gap: true } : {}) }));
          }
        } catch (err) {
          reportError(err);
        } finally {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
        }
      }),
    );

  clientCommand('verify', "compare every key's chosen version and entry checksum across the replicas (full-data verification); with --repair, bring lagging replicas up to date and have a replica whose entry differs from the majority's repair the key")
    .option('--repair', 'repair what differs (lagging replicas, and diverged minorities when a majority agrees)')
    .action((flags: ClientFlags & { repair?: boolean }) =>
      withReplicas(flags, async (peers, c) => {
        const ids = [...peers.keys()];
        try {
          const report = await verifyCluster(c, ids.length, { repair: flags.repair === true, timeoutMs: flags.timeout });
          const counts = { lagging: 0, diverged: 0, lost: 0 };
          let unresolved = 0;
          for (const d of report.differences) {
            counts[d.kind as keyof typeof counts]++;
            if (d.kind === 'diverged' && d.repaired !== true) unresolved++;
            process.stdout.write(jsonLine({ ...d, replicas: d.replicas.map((i) => ids[i]) }));
          }
          for (const d of report.down) process.stderr.write(`ERROR: replica ${ids[d.replica]} did not answer: ${d.error}\n`);
          process.stdout.write(jsonLine({ keys: report.keys, ok: report.ok, ...counts, repaired: report.differences.filter((d) => d.repaired === true).length, down: report.down.map((d) => ids[d.replica]) }));
          if (unresolved > 0 || report.down.length > 0) process.exitCode = 1;
        } catch (err) {
          refuse(err);
        }
      }),
    );

  addKvMemberCommands(kv);

  clientCommand('status', 'show each replica: mode (voter, learner, checking, rejoining), who votes, keys, lagging keys')
    .action((flags: ClientFlags) =>
      withReplicas(flags, async (peers, c) => {
        const rows: unknown[] = [];
        let down = 0;
        for (const [i, [id, address]] of [...peers].entries()) {
          try {
            const s = await c.status(i, { timeoutMs: Math.min(flags.timeout, 2000) });
            rows.push({
              id,
              address,
              up: true,
              mode: s.mode,
              votes: s.voters.includes(id) && s.mode === 'voter',
              voters: s.voters,
              incarnation: s.incarnation.toString(),
              epoch: s.epoch.toString(),
              learnerOnly: s.learnerOnly,
              keys: s.keys.toString(),
              laggingKeys: s.laggingKeys.toString(),
              pendingOperations: s.pendingOperations.toString(),
              ...(s.lostKeysFound > 0n
                ? { lostKeys: { repairing: s.lostKeysRepairing.toString(), found: s.lostKeysFound.toString(), repaired: s.lostKeysRepaired.toString() } }
                : {}),
              ...(s.failure === '' ? {} : { failure: s.failure, removed: s.removed }),
              ...(s.syncing ? { sync: { listed: s.syncListed, of: s.syncSources, keysWaiting: s.syncKeysWaiting.toString() } } : {}),
              ...(s.mode === 'rejoining' ? { rejoin: { peersDone: s.rejoinPeersDone, peers: s.rejoinPeers, keysFenced: s.rejoinKeysFenced.toString() } } : {}),
            });
          } catch (err) {
            down++;
            rows.push({ id, address, up: false, error: err instanceof RpcError ? `${statusName(err.code)}: ${err.message}` : String(err) });
          }
        }
        for (const r of rows) process.stdout.write(JSON.stringify(r) + '\n');
        if (down > Math.floor(peers.size / 2)) {
          process.stderr.write(`ERROR: UNAVAILABLE: ${down} of ${peers.size} replicas are down: no majority\n`);
          process.exitCode = 1;
        }
      }),
    );
}
