/**
 * What every `svrkit kv` client command shares: the flags that find the cluster (`--peers`,
 * `--data-dir`, `--tls-dir`, `--timeout`), a client of it, and how results and errors print (one
 * JSON line per result on stdout; `ERROR: <STATUS>: <message>` on stderr, exit 1; a missing or
 * contradictory cluster exits 2).
 */
import type { Command } from 'commander';
import { PaxosKVClient } from '../../services/paxoskv/client.js';
import { clusterChannel, DEFAULT_KV_DATA_DIR, KV_PEERS_ENV, KV_TLS_DIR_ENV, KvUsageError, parsePeers, resolveClientCluster } from './kv-cluster.js';
import { positiveMs, reportError } from './flags.js';

/**
 * Adds the options every client command takes: `--peers`, `--data-dir`, `--tls-dir` and
 * `-t, --timeout <ms>` (default 5000).
 * @returns `cmd`.
 */
export function withClientOptions(cmd: Command, timeoutMs = 5000): Command {
  return cmd
    .option(
      '--peers <list>',
      `replicas: 1=host:port,2=host:port,... (or host:port,... for ids 1, 2, ...); default: $${KV_PEERS_ENV}, else the cluster kv up recorded in ${DEFAULT_KV_DATA_DIR}`,
      parsePeers,
    )
    .option('--data-dir <dir>', 'use the cluster svrkit kv up --data-dir <dir> recorded there (instead of --peers)')
    .option('--tls-dir <dir>', `connect over TLS, trusting <dir>/ca.pem (and presenting client.pem when there); default: the recorded cluster's, or $${KV_TLS_DIR_ENV} with $${KV_PEERS_ENV}`)
    .option('-t, --timeout <ms>', 'deadline of the operation (ms)', positiveMs, timeoutMs);
}

/** Reports `err` on stderr: a {@link KvUsageError} as `error: <message>` with exit code 2, anything else as {@link reportError} does (exit code 1). */
export function refuse(err: unknown): void {
  if (err instanceof KvUsageError) {
    process.stderr.write(`error: ${err.message}\n`);
    process.exitCode = 2;
  } else {
    reportError(err);
  }
}

/** The flags {@link withClientOptions} adds, as commander hands them to the action. */
export interface ClientFlags {
  peers?: Map<number, string>;
  dataDir?: string;
  tlsDir?: string;
  timeout: number;
}

/** A client of the cluster the flags name: over TLS when it has a TLS dir. */
export async function clientOf(flags: ClientFlags): Promise<{ peers: Map<number, string>; client: PaxosKVClient }> {
  const cluster = await resolveClientCluster(flags);
  return { peers: cluster.peers, client: new PaxosKVClient({ peers: [...cluster.peers.values()], channel: await clusterChannel(cluster.tlsDir) }) };
}

/** One JSON line of `out` (bigints as decimal strings). */
export const jsonLine = (out: unknown): string => JSON.stringify(out, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)) + '\n';

/**
 * Runs a command over every replica: finds them (refusing the command when it cannot), then runs
 * `fn` with them (id to address, in peer order) and a client of all of them, closed afterwards.
 */
export async function withReplicas(flags: ClientFlags, fn: (peers: Map<number, string>, client: PaxosKVClient) => Promise<void>): Promise<void> {
  let peers: Map<number, string>;
  let client: PaxosKVClient;
  try {
    ({ peers, client } = await clientOf(flags));
  } catch (err) {
    refuse(err);
    return;
  }
  try {
    await fn(peers, client);
  } finally {
    client.close();
  }
}

/**
 * Runs a client command: finds the replicas, runs `fn` (after `prepare`, which runs before any
 * connection, e.g. to read stdin) and prints its result as one JSON line.
 */
export async function withClient<T>(flags: ClientFlags, prepare: () => Promise<T>, fn: (kv: PaxosKVClient, prepared: T) => Promise<unknown>): Promise<void> {
  let prepared: T;
  let kv: PaxosKVClient;
  try {
    const cluster = await resolveClientCluster(flags);
    const channel = await clusterChannel(cluster.tlsDir);
    prepared = await prepare();
    kv = new PaxosKVClient({ peers: [...cluster.peers.values()], defaultTimeoutMs: flags.timeout, channel });
  } catch (err) {
    refuse(err);
    return;
  }
  try {
    process.stdout.write(jsonLine(await fn(kv, prepared)));
  } catch (err) {
    reportError(err);
  } finally {
    kv.close();
  }
}
