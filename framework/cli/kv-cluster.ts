/**
 * The cluster of `svrkit kv`: peer lists, the record `kv up` keeps in `<data-dir>/cluster.json`
 * ({@link ClusterRecord}), checking flags against it before anything starts, and finding the
 * replicas a client command talks to ({@link resolveClientPeers}).
 */
import { promises as fsp } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { InvalidArgumentError } from 'commander';
import { readClientTls } from '../../services/paxoskv/tls.js';
import { parseAddress } from '../client/resolver.js';
import type { ChannelOptions } from '../client/channel.js';

/**
 * Parses a peer list: `1=127.0.0.1:7101,2=127.0.0.1:7102` (ids given) or
 * `127.0.0.1:7101,127.0.0.1:7102` (ids 1, 2, ... in order).
 * @returns member id -> address.
 * @throws InvalidArgumentError for malformed entries or duplicate ids.
 */
export function parsePeers(text: string): Map<number, string> {
  const peers = new Map<number, string>();
  const items = text.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  items.forEach((item, i) => {
    const m = /^(\d+)=(.+)$/.exec(item);
    const id = m === null ? i + 1 : Number(m[1]);
    const address = m === null ? item : m[2]!;
    if (!Number.isInteger(id) || id < 1 || id > 0xffff) throw new InvalidArgumentError(`peer '${item}': member ids are 1-65535`);
    try {
      parseAddress(address);
    } catch (err) {
      throw new InvalidArgumentError(`peer '${item}': ${(err as Error).message}`);
    }
    if (peers.has(id)) throw new InvalidArgumentError(`peer id ${id} appears twice`);
    peers.set(id, address);
  });
  if (peers.size === 0) throw new InvalidArgumentError('the peer list is empty');
  return peers;
}

/**
 * A `kv` command refused before it did anything: flags that contradict each other or the data
 * dir's record, or no cluster to talk to. The command exits 2.
 */
export class KvUsageError extends Error {
  override name = 'KvUsageError';
}

/** The file in a `kv up` data dir that records its cluster ({@link ClusterRecord}). */
export const CLUSTER_FILE = 'cluster.json';
/** `kv up`'s default data dir, where the client commands look for a cluster by default. */
export const DEFAULT_KV_DATA_DIR = './data/paxoskv';
/** The environment variable the client commands take their peer list from (the `--peers` syntax). */
export const KV_PEERS_ENV = 'SVRKIT_KV_PEERS';
/** The environment variable the client commands take the cluster's TLS dir from (as `--tls-dir`), with `SVRKIT_KV_PEERS`. */
export const KV_TLS_DIR_ENV = 'SVRKIT_KV_TLS_DIR';
const CLUSTER_FORMAT = 'svrkit-kv-up/1';
/** The format of a record with a TLS dir: an svrkit that predates TLS refuses it instead of running the cluster in plain TCP. */
const CLUSTER_FORMAT_TLS = 'svrkit-kv-up/2';

/** What `kv up` records in `<data-dir>/cluster.json` before its first start. */
export interface ClusterRecord {
  /** `svrkit-kv-up/1`, or `svrkit-kv-up/2` for a cluster over TLS (with `tlsDir`). */
  format: string;
  /**
   * Replicas (odd) per group; replica i keeps its data in `<data-dir>/replica-i` (one group), or
   * replica i of group g in `<data-dir>/group-g/replica-i` (many).
   */
  replicas: number;
  /** Groups of replicas keys are routed over (services/paxoskv/routing.ts); absent: 1. */
  groups?: number;
  /** Interface and address of every replica. */
  host: string;
  /** Port of replica 1; replica i (of group g) listens on basePort+(g-1)*replicas+i-1. */
  basePort: number;
  /** The peer list, as `--peers` takes it: `1=host:port,2=host:port,...` (group 1's, the system group's, with many). */
  peers: string;
  /** The TLS dir (absolute) when the cluster runs over TLS (`kv up --tls-dir`); absent for plain TCP. */
  tlsDir?: string;
}

/** The flags of `kv up` that make its cluster. */
export interface UpFlags {
  /** `--replicas`: how many replicas (odd) per group. */
  replicas: number;
  /** `--groups`: how many groups (1: one group, nothing routed). */
  groups: number;
  /** `--host`: interface and address of every replica. */
  host: string;
  /** `--base-port`: port of replica 1. */
  basePort: number;
}

/**
 * The peer list of group `group` of a `kv up` cluster: `1=host:p,2=host:p+1,...` from
 * p = base + (group-1) * replicas.
 */
export function upPeers(flags: Omit<UpFlags, 'groups'>, group = 1): string {
  const first = flags.basePort + (group - 1) * flags.replicas;
  return Array.from({ length: flags.replicas }, (_, i) => `${i + 1}=${flags.host}:${first + i}`).join(',');
}

/** The data dir of replica `id` of group `group` of the cluster `record` in `dataDir`. */
export function replicaDataDir(dataDir: string, record: ClusterRecord, group: number, id: number): string {
  return (record.groups ?? 1) === 1 ? path.join(dataDir, `replica-${id}`) : path.join(dataDir, `group-${group}`, `replica-${id}`);
}

function newRecord(flags: UpFlags): ClusterRecord {
  return { format: CLUSTER_FORMAT, replicas: flags.replicas, ...(flags.groups === 1 ? {} : { groups: flags.groups }), host: flags.host, basePort: flags.basePort, peers: upPeers(flags) };
}

/**
 * Reads the cluster `kv up` recorded in `dataDir`.
 * @param dataDir - a `kv up` data dir.
 * @returns the record, or undefined when the dir holds none.
 * @throws Error when `cluster.json` cannot be read or is not a record `kv up` wrote.
 */
export async function readClusterRecord(dataDir: string): Promise<ClusterRecord | undefined> {
  const file = path.join(dataDir, CLUSTER_FILE);
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new Error(`cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  const bad = (why: string): Error =>
    new Error(`${file} is not a cluster record svrkit kv up wrote (${why}): remove it, then run svrkit kv up with the flags this cluster was started with to record it again`);
  let r: Partial<ClusterRecord>;
  try {
    r = JSON.parse(text) as Partial<ClusterRecord>;
  } catch (err) {
    throw bad(`not JSON: ${(err as Error).message}`);
  }
  if (r === null || typeof r !== 'object' || (r.format !== CLUSTER_FORMAT && r.format !== CLUSTER_FORMAT_TLS)) throw bad(`format is not ${CLUSTER_FORMAT} or ${CLUSTER_FORMAT_TLS}`);
  const { replicas, host, basePort, peers, tlsDir, groups } = r;
  if (!Number.isInteger(replicas) || replicas! < 1 || typeof host !== 'string' || !Number.isInteger(basePort) || typeof peers !== 'string') {
    throw bad('replicas, host, basePort or peers missing');
  }
  if (groups !== undefined && (!Number.isInteger(groups) || groups < 2 || groups > MAX_UP_GROUPS)) throw bad(`groups is not 2-${MAX_UP_GROUPS}`);
  if (tlsDir !== undefined && (typeof tlsDir !== 'string' || !path.isAbsolute(tlsDir))) throw bad('tlsDir is not an absolute path');
  if ((r.format === CLUSTER_FORMAT_TLS) !== (tlsDir !== undefined)) throw bad(`${r.format} ${tlsDir === undefined ? 'without' : 'with'} tlsDir`);
  if (peers !== upPeers({ replicas: replicas!, host, basePort: basePort! })) throw bad('peers do not match replicas, host and basePort');
  return { format: r.format, replicas: replicas!, ...(groups === undefined ? {} : { groups }), host, basePort: basePort!, peers, ...(tlsDir === undefined ? {} : { tlsDir }) };
}

/** The member ids of the `replica-N` dirs in `dataDir`, ascending (none when it does not exist). */
async function replicaDirIds(dataDir: string): Promise<number[]> {
  let names: string[];
  try {
    names = await fsp.readdir(dataDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  return names.flatMap((n) => {
    const m = /^replica-(\d+)$/.exec(n);
    return m === null ? [] : [Number(m[1])];
  }).sort((a, b) => a - b);
}

const FLAG_NAMES: Record<keyof UpFlags, string> = { replicas: '--replicas', groups: '--groups', basePort: '--base-port', host: '--host' };

/** The most groups `kv up` runs. */
export const MAX_UP_GROUPS = 16;

/** What `kv up` is to run: the cluster, and whether `cluster.json` already holds it. */
export interface UpPlan {
  record: ClusterRecord;
  /** False when `kv up` must write `cluster.json` (a new data dir, or one an earlier svrkit made without it). */
  recorded: boolean;
}

/**
 * Refuses flags that differ from the cluster a data dir holds.
 * @param dataDir - the data dir, as given.
 * @param record - the cluster it holds.
 * @param flags - `kv up`'s flags.
 * @param given - the flags given on the command line; the others take the record's values.
 * @throws KvUsageError naming each flag that differs and the value that would work.
 */
export function checkAgainst(dataDir: string, record: ClusterRecord, flags: UpFlags, given: ReadonlySet<keyof UpFlags>): void {
  const recorded = (k: keyof UpFlags): number | string => (k === 'groups' ? (record.groups ?? 1) : record[k]);
  const differ = (['replicas', 'groups', 'basePort', 'host'] as const).filter((k) => given.has(k) && flags[k] !== recorded(k));
  if (differ.length === 0) return;
  const one = differ.length === 1;
  const groups = record.groups ?? 1;
  throw new KvUsageError(
    `data dir ${dataDir} holds a ${groups === 1 ? '' : `${groups}-group, `}${record.replicas}-replica cluster (peers ${record.peers}); ` +
      `${differ.map((k) => `${FLAG_NAMES[k]} ${flags[k]}`).join(' and ')} ${one ? 'differs' : 'differ'}: ` +
      `use ${differ.map((k) => `${FLAG_NAMES[k]} ${recorded(k)}`).join(' ')} (or leave ${one ? 'it' : 'them'} out), or a new --data-dir ` +
      `(a cluster's groups, replicas and peer list cannot change)`,
  );
}

/**
 * Decides the cluster `kv up` runs on `dataDir`, before it creates or starts anything. A data dir
 * with a `cluster.json` runs that cluster: flags left out take its values, and a flag given with
 * another value is refused. A data dir an earlier svrkit made (`replica-1` ... `replica-N`, no
 * `cluster.json`) runs N replicas with the given host and base port. Otherwise the flags make a new
 * cluster.
 * @param dataDir - `kv up`'s `--data-dir`.
 * @param flags - `kv up`'s flags (defaults filled in).
 * @param given - the flags given on the command line.
 * @returns the cluster, and whether it still has to be recorded.
 * @throws KvUsageError when a flag differs from what the data dir holds, or its replica dirs are
 *   not those of one `kv up` cluster; Error when `cluster.json` cannot be read.
 */
export async function planCluster(dataDir: string, flags: UpFlags, given: ReadonlySet<keyof UpFlags>): Promise<UpPlan> {
  const record = await readClusterRecord(dataDir);
  if (record !== undefined) {
    checkAgainst(dataDir, record, flags, given);
    return { record, recorded: true };
  }
  const ids = await replicaDirIds(dataDir);
  if (ids.length === 0) return { record: newRecord(flags), recorded: false };
  const n = ids.length;
  if (ids.some((id, i) => id !== i + 1) || n % 2 === 0) {
    throw new KvUsageError(
      `data dir ${dataDir} holds replica dirs ${ids.map((id) => `replica-${id}`).join(', ')} and no ${CLUSTER_FILE}, which is not one cluster of an odd number of replicas ` +
        `made by kv up: move the dirs that do not belong out of it, or use a new --data-dir`,
    );
  }
  if (given.has('replicas') && flags.replicas !== n) {
    throw new KvUsageError(
      `data dir ${dataDir} holds a ${n}-replica cluster (replica-1 ... replica-${n}); --replicas ${flags.replicas} differs: ` +
        `use --replicas ${n} (or leave it out), or a new --data-dir (a cluster's replicas and peer list cannot change)`,
    );
  }
  if (given.has('groups') && flags.groups !== 1) {
    throw new KvUsageError(`data dir ${dataDir} holds a one-group cluster (replica-1 ... replica-${n}); --groups ${flags.groups} differs: leave it out, or use a new --data-dir`);
  }
  return { record: newRecord({ ...flags, groups: 1, replicas: n }), recorded: false };
}

/**
 * Writes `<dataDir>/cluster.json` atomically and only if it is absent (a temporary file, fsync'd,
 * hard-linked into place, the dir fsync'd), creating the dir.
 * @param dataDir - the `kv up` data dir (created if missing).
 * @param record - the cluster to record.
 * @returns the record now in the dir: `record`, or the one a concurrent `kv up` wrote first.
 * @throws Error (rejection) when the dir cannot be created or written (fs errors: EACCES, ENOSPC,
 *   ...), or when a record written concurrently cannot be read back.
 */
export async function writeClusterRecord(dataDir: string, record: ClusterRecord): Promise<ClusterRecord> {
  await fsp.mkdir(dataDir, { recursive: true });
  const file = path.join(dataDir, CLUSTER_FILE);
  const tmp = path.join(dataDir, `.${CLUSTER_FILE}.${process.pid}.tmp`);
  const fh = await fsp.open(tmp, 'w');
  try {
    await fh.writeFile(JSON.stringify(record, null, 2) + '\n');
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await fsp.link(tmp, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return (await readClusterRecord(dataDir))!;
  } finally {
    await fsp.rm(tmp, { force: true });
  }
  const dir = await fsp.open(dataDir, 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
  return record;
}

/**
 * Checks that a port is free by listening on it and closing again.
 * @param host - the interface, e.g. `127.0.0.1`.
 * @param port - the TCP port.
 * @returns resolves when `host:port` can be listened on.
 * @throws the listen error (rejection), e.g. EADDRINUSE or EACCES.
 */
export async function portFree(host: string, port: number): Promise<void> {
  const s = createServer();
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.listen(port, host, resolve);
  });
  await new Promise((r) => s.close(r));
}

/** The cluster a client command talks to. */
export interface ClientCluster {
  /** Member id -> address. */
  peers: Map<number, string>;
  /** The cluster's TLS dir, when it runs over TLS (the client trusts its `ca.pem`). */
  tlsDir?: string;
}

/**
 * The replicas a client command talks to: `--peers`; else the cluster recorded in `--data-dir`;
 * else the `SVRKIT_KV_PEERS` environment variable; else the cluster `kv up` recorded in
 * `./data/paxoskv`. The TLS dir is `--tls-dir`; else the record's (when the peers came from one),
 * or `SVRKIT_KV_TLS_DIR` (with `SVRKIT_KV_PEERS`); else none (plain TCP).
 * @param flags - the command's `--peers` (parsed), `--data-dir` and `--tls-dir`, when given.
 * @param env - the environment (default `process.env`).
 * @returns the peers (member id -> address) and the TLS dir.
 * @throws KvUsageError when both flags are given, `SVRKIT_KV_PEERS` is malformed, or no cluster is
 *   found (the message says how to name one); Error when a `cluster.json` cannot be read.
 */
export async function resolveClientCluster(flags: { peers?: Map<number, string>; dataDir?: string; tlsDir?: string }, env: NodeJS.ProcessEnv = process.env): Promise<ClientCluster> {
  const found = await findClientCluster(flags, env);
  return flags.tlsDir === undefined ? found : { peers: found.peers, tlsDir: path.resolve(flags.tlsDir) };
}

async function findClientCluster(flags: { peers?: Map<number, string>; dataDir?: string }, env: NodeJS.ProcessEnv): Promise<ClientCluster> {
  if (flags.peers !== undefined && flags.dataDir !== undefined) throw new KvUsageError('give --peers or --data-dir, not both');
  if (flags.peers !== undefined) return { peers: flags.peers };
  const fromRecord = async (dataDir: string): Promise<ClientCluster | undefined> => {
    const record = await readClusterRecord(dataDir);
    return record === undefined ? undefined : { peers: parsePeers(record.peers), ...(record.tlsDir === undefined ? {} : { tlsDir: record.tlsDir }) };
  };
  const legacy = async (dataDir: string): Promise<string> =>
    (await replicaDirIds(dataDir).catch(() => [])).length > 0 ? ` (it holds replicas of an earlier svrkit kv up, which did not record its cluster: restart them with svrkit kv up${dataDir === DEFAULT_KV_DATA_DIR ? '' : ` --data-dir ${dataDir}`} to record it)` : '';
  if (flags.dataDir !== undefined) {
    const cluster = await fromRecord(flags.dataDir);
    if (cluster !== undefined) return cluster;
    throw new KvUsageError(
      `no cluster recorded in ${path.join(flags.dataDir, CLUSTER_FILE)}${await legacy(flags.dataDir)}: start one with svrkit kv up --data-dir ${flags.dataDir}, or pass --peers`,
    );
  }
  const fromEnv = env[KV_PEERS_ENV];
  if (fromEnv !== undefined && fromEnv.trim() !== '') {
    let peers: Map<number, string>;
    try {
      peers = parsePeers(fromEnv);
    } catch (err) {
      throw new KvUsageError(`${KV_PEERS_ENV}='${fromEnv}': ${(err as Error).message}`);
    }
    const tlsDir = env[KV_TLS_DIR_ENV];
    return { peers, ...(tlsDir === undefined || tlsDir.trim() === '' ? {} : { tlsDir: path.resolve(tlsDir) }) };
  }
  const cluster = await fromRecord(DEFAULT_KV_DATA_DIR);
  if (cluster !== undefined) return cluster;
  throw new KvUsageError(
    `no cluster to talk to: pass --peers 1=host:port,2=host:port,..., set ${KV_PEERS_ENV}, or start one with svrkit kv up in this directory ` +
      `(it records its cluster in ${path.join(DEFAULT_KV_DATA_DIR, CLUSTER_FILE)}; for kv up --data-dir DIR, pass --data-dir DIR)${await legacy(DEFAULT_KV_DATA_DIR)}`,
  );
}

/**
 * The options of a client's channels to a cluster with TLS dir `tlsDir`.
 * @param tlsDir - the cluster's TLS dir, or undefined for plain TCP.
 * @returns undefined for plain TCP; else `{ tls }` from the dir (the CA, and `client.pem` when present).
 * @throws KvUsageError when the TLS dir's `ca.pem` cannot be read.
 */
export async function clusterChannel(tlsDir: string | undefined): Promise<ChannelOptions | undefined> {
  if (tlsDir === undefined) return undefined;
  try {
    return { tls: await readClientTls(tlsDir) };
  } catch (err) {
    throw new KvUsageError((err as Error).message);
  }
}

/**
 * A record with its TLS dir set (the format that says so).
 * @param record - a record without one.
 * @param tlsDir - the TLS dir, absolute.
 * @returns the record in format `svrkit-kv-up/2` with `tlsDir`.
 */
export function withTlsDir(record: ClusterRecord, tlsDir: string): ClusterRecord {
  return { ...record, format: CLUSTER_FORMAT_TLS, tlsDir };
}
