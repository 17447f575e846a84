/**
 * `svrkit kv`: run and use PaxosKV clusters.
 *
 *   svrkit kv serve --id N --peers 1=h:p,2=h:p,3=h:p --data-dir DIR [--learners IDS] [--rejoin]
 *   svrkit kv up [--replicas 3] [--data-dir ./data/paxoskv] [--base-port 7101] [--host 127.0.0.1]
 *   svrkit kv get|put|delete|cas|status [--peers <list> | --data-dir DIR] ...
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
import { promises as fsp } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import { PaxosKVClient } from '../../services/paxoskv/client.js';
import { PaxosKVReplica } from '../../services/paxoskv/replica-server.js';
import { parseAddress } from '../client/resolver.js';
import { RpcError, statusName } from '../wire/status.js';
import { watchLauncher } from './launcher.js';
import { intOption, positiveMs, reportError } from './flags.js';

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

async function readStdin(): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/**
 * A `kv` command refused before it did anything: flags that contradict each other or the data
 * dir's record, or no cluster to talk to. The command exits 2.
 */
export class KvUsageError extends Error {
  override name = 'KvUsageError';
}

/** Reports `err` on stderr: a {@link KvUsageError} as `error: <message>` with exit code 2, anything else as {@link reportError} does (exit code 1). */
function refuse(err: unknown): void {
  if (err instanceof KvUsageError) {
    process.stderr.write(`error: ${err.message}\n`);
    process.exitCode = 2;
  } else {
    reportError(err);
  }
}

// ---- values ------------------------------------------------------------------------------------

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * The JSON form of a value, one of two properties so that no value can be mistaken for another:
 * `{ value: text }` when the bytes are valid UTF-8 (the text is exactly those bytes, a BOM
 * included), else `{ valueBase64: base64 }` (standard alphabet, padded). `kv put k text` and
 * `kv put k --base64 b64` are the inverses.
 * @param bytes - the value.
 * @returns `{ value }` or `{ valueBase64 }`.
 */
export function valueJson(bytes: Uint8Array): { value: string } | { valueBase64: string } {
  try {
    return { value: utf8.decode(bytes) };
  } catch {
    return { valueBase64: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64') };
  }
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Decodes base64 (standard alphabet, padded, as {@link valueJson} prints it); whitespace (the
 * newline `echo` adds) is ignored.
 * @param text - the base64 text.
 * @param what - where it came from, for the message.
 * @returns the bytes.
 * @throws KvUsageError when it is not such base64.
 */
export function decodeBase64(text: string, what: string): Uint8Array {
  const compact = text.replace(/\s+/g, '');
  if (!BASE64.test(compact)) throw new KvUsageError(`${what} is not base64 (A-Z a-z 0-9 + /, padded with = to a multiple of 4 characters)`);
  return new Uint8Array(Buffer.from(compact, 'base64'));
}

/**
 * The bytes `kv put` and `kv cas` write: the argument as UTF-8 text (as given: no prefix is
 * interpreted), or with `base64` the argument decoded from base64; with no argument, stdin's bytes
 * as they are, or with `base64` stdin decoded from base64.
 * @param value - the value argument, when given.
 * @param base64 - whether `--base64` was given.
 * @param stdin - reads stdin (called only when `value` is absent).
 * @returns the bytes to write.
 * @throws KvUsageError for `--base64` with text that is not base64.
 */
export async function valueInput(value: string | undefined, base64: boolean, stdin: () => Promise<Uint8Array> = readStdin): Promise<Uint8Array> {
  if (value !== undefined) return base64 ? decodeBase64(value, 'the value') : new TextEncoder().encode(value);
  const bytes = await stdin();
  return base64 ? decodeBase64(Buffer.from(bytes).toString('latin1'), 'stdin') : bytes;
}

// ---- the cluster kv up records -------------------------------------------------------------------

/** The file in a `kv up` data dir that records its cluster ({@link ClusterRecord}). */
export const CLUSTER_FILE = 'cluster.json';
/** `kv up`'s default data dir, where the client commands look for a cluster by default. */
export const DEFAULT_KV_DATA_DIR = './data/paxoskv';
/** The environment variable the client commands take their peer list from (the `--peers` syntax). */
export const KV_PEERS_ENV = 'SVRKIT_KV_PEERS';
const CLUSTER_FORMAT = 'svrkit-kv-up/1';

/** What `kv up` records in `<data-dir>/cluster.json` before its first start. */
export interface ClusterRecord {
  /** `svrkit-kv-up/1`. */
  format: string;
  /** Replicas (odd); replica i keeps its data in `<data-dir>/replica-i`. */
  replicas: number;
  /** Interface and address of every replica. */
  host: string;
  /** Port of replica 1; replica i listens on basePort+i-1. */
  basePort: number;
  /** The peer list, as `--peers` takes it: `1=host:port,2=host:port,...`. */
  peers: string;
}

/** The flags of `kv up` that make its cluster. */
export interface UpFlags {
  /** `--replicas`: how many replicas (odd). */
  replicas: number;
  /** `--host`: interface and address of every replica. */
  host: string;
  /** `--base-port`: port of replica 1. */
  basePort: number;
}

/** The peer list of a `kv up` cluster: `1=host:base,2=host:base+1,...`. */
export function upPeers(flags: UpFlags): string {
  return Array.from({ length: flags.replicas }, (_, i) => `${i + 1}=${flags.host}:${flags.basePort + i}`).join(',');
}

function newRecord(flags: UpFlags): ClusterRecord {
  return { format: CLUSTER_FORMAT, replicas: flags.replicas, host: flags.host, basePort: flags.basePort, peers: upPeers(flags) };
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
  if (r === null || typeof r !== 'object' || r.format !== CLUSTER_FORMAT) throw bad(`format is not ${CLUSTER_FORMAT}`);
  const { replicas, host, basePort, peers } = r;
  if (!Number.isInteger(replicas) || replicas! < 1 || typeof host !== 'string' || !Number.isInteger(basePort) || typeof peers !== 'string') {
    throw bad('replicas, host, basePort or peers missing');
  }
  if (peers !== upPeers({ replicas: replicas!, host, basePort: basePort! })) throw bad('peers do not match replicas, host and basePort');
  return { format: CLUSTER_FORMAT, replicas: replicas!, host, basePort: basePort!, peers };
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

const FLAG_NAMES: Record<keyof UpFlags, string> = { replicas: '--replicas', basePort: '--base-port', host: '--host' };

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
function checkAgainst(dataDir: string, record: ClusterRecord, flags: UpFlags, given: ReadonlySet<keyof UpFlags>): void {
  const differ = (['replicas', 'basePort', 'host'] as const).filter((k) => given.has(k) && flags[k] !== record[k]);
  if (differ.length === 0) return;
  const one = differ.length === 1;
  throw new KvUsageError(
    `data dir ${dataDir} holds a ${record.replicas}-replica cluster (peers ${record.peers}); ` +
      `${differ.map((k) => `${FLAG_NAMES[k]} ${flags[k]}`).join(' and ')} ${one ? 'differs' : 'differ'}: ` +
      `use ${differ.map((k) => `${FLAG_NAMES[k]} ${record[k]}`).join(' ')} (or leave ${one ? 'it' : 'them'} out), or a new --data-dir ` +
      `(a cluster's replicas and peer list cannot change)`,
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
  return { record: newRecord({ ...flags, replicas: n }), recorded: false };
}

/**
 * Writes `<dataDir>/cluster.json` atomically and only if it is absent (a temporary file, fsync'd,
 * hard-linked into place, the dir fsync'd), creating the dir.
 * @returns the record now in the dir: `record`, or the one a concurrent `kv up` wrote first.
 */
async function writeClusterRecord(dataDir: string, record: ClusterRecord): Promise<ClusterRecord> {
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

/** Resolves when `host:port` can be listened on; rejects with the listen error otherwise. */
async function portFree(host: string, port: number): Promise<void> {
  const s = createServer();
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.listen(port, host, resolve);
  });
  await new Promise((r) => s.close(r));
}

/**
 * The replicas a client command talks to: `--peers`; else the cluster recorded in `--data-dir`;
 * else the `SVRKIT_KV_PEERS` environment variable; else the cluster `kv up` recorded in
 * `./data/paxoskv`.
 * @param flags - the command's `--peers` (parsed) and `--data-dir`, when given.
 * @param env - the environment (default `process.env`).
 * @returns member id -> address.
 * @throws KvUsageError when both flags are given, `SVRKIT_KV_PEERS` is malformed, or no cluster is
 *   found (the message says how to name one); Error when a `cluster.json` cannot be read.
 */
export async function resolveClientPeers(flags: { peers?: Map<number, string>; dataDir?: string }, env: NodeJS.ProcessEnv = process.env): Promise<Map<number, string>> {
  if (flags.peers !== undefined && flags.dataDir !== undefined) throw new KvUsageError('give --peers or --data-dir, not both');
  if (flags.peers !== undefined) return flags.peers;
  const fromRecord = async (dataDir: string): Promise<Map<number, string> | undefined> => {
    const record = await readClusterRecord(dataDir);
    return record === undefined ? undefined : parsePeers(record.peers);
  };
  const legacy = async (dataDir: string): Promise<string> =>
    (await replicaDirIds(dataDir).catch(() => [])).length > 0 ? ` (it holds replicas of an earlier svrkit kv up, which did not record its cluster: restart them with svrkit kv up${dataDir === DEFAULT_KV_DATA_DIR ? '' : ` --data-dir ${dataDir}`} to record it)` : '';
  if (flags.dataDir !== undefined) {
    const peers = await fromRecord(flags.dataDir);
    if (peers !== undefined) return peers;
    throw new KvUsageError(
      `no cluster recorded in ${path.join(flags.dataDir, CLUSTER_FILE)}${await legacy(flags.dataDir)}: start one with svrkit kv up --data-dir ${flags.dataDir}, or pass --peers`,
    );
  }
  const fromEnv = env[KV_PEERS_ENV];
  if (fromEnv !== undefined && fromEnv.trim() !== '') {
    try {
      return parsePeers(fromEnv);
    } catch (err) {
      throw new KvUsageError(`${KV_PEERS_ENV}='${fromEnv}': ${(err as Error).message}`);
    }
  }
  const peers = await fromRecord(DEFAULT_KV_DATA_DIR);
  if (peers !== undefined) return peers;
  throw new KvUsageError(
    `no cluster to talk to: pass --peers 1=host:port,2=host:port,..., set ${KV_PEERS_ENV}, or start one with svrkit kv up in this directory ` +
      `(it records its cluster in ${path.join(DEFAULT_KV_DATA_DIR, CLUSTER_FILE)}; for kv up --data-dir DIR, pass --data-dir DIR)${await legacy(DEFAULT_KV_DATA_DIR)}`,
  );
}

interface ClientFlags {
  peers?: Map<number, string>;
  dataDir?: string;
  timeout: number;
}

const jsonLine = (out: unknown): string => JSON.stringify(out, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)) + '\n';

/**
 * Runs a client command: finds the replicas, runs `fn` (after `prepare`, which runs before any
 * connection, e.g. to read stdin) and prints its result as one JSON line.
 */
async function withClient<T>(flags: ClientFlags, prepare: () => Promise<T>, fn: (kv: PaxosKVClient, prepared: T) => Promise<unknown>): Promise<void> {
  let peers: Map<number, string>;
  let prepared: T;
  try {
    peers = await resolveClientPeers(flags);
    prepared = await prepare();
  } catch (err) {
    refuse(err);
    return;
  }
  const kv = new PaxosKVClient({ peers: [...peers.values()], defaultTimeoutMs: flags.timeout });
  try {
    process.stdout.write(jsonLine(await fn(kv, prepared)));
  } catch (err) {
    reportError(err);
  } finally {
    kv.close();
  }
}

/** Adds `svrkit kv ...` to a commander program. */
export function addKvCommands(program: Command): void {
  const kv = program.command('kv').description('PaxosKV: a leaseless per-key Paxos key-value store (serve, up, get, put, delete, cas, status)');
  const peersOption = ['--peers <list>', 'replicas: 1=host:port,2=host:port,... (or host:port,... for ids 1, 2, ...)', parsePeers] as const;

  kv.command('serve')
    .description('run one replica in the foreground; it listens on its own entry of --peers')
    .requiredOption('--id <n>', 'this replica\'s member id', intOption('id', 1, 0xffff))
    .requiredOption(...peersOption)
    .requiredOption('--data-dir <dir>', 'where this replica keeps its records (created when absent)')
    .option('--learners <ids>', 'members that only learn (no votes, no clients; outside the majority); give every replica the same list', parseLearners)
    .option('--rejoin', 'this replica lost its data: start it on an empty --data-dir; it catches up and votes only once that is safe')
    .action(async (opts: { id: number; peers: Map<number, string>; dataDir: string; learners?: number[]; rejoin?: boolean }) => {
      let replica: PaxosKVReplica;
      const learners = opts.learners ?? [];
      const say = (line: string) => process.stdout.write(`svrkit: paxoskv replica ${opts.id} ${line}\n`);
      try {
        if (!opts.peers.has(opts.id)) throw new InvalidArgumentError(`--id ${opts.id} is not in --peers`);
        for (const l of learners) if (!opts.peers.has(l)) throw new InvalidArgumentError(`--learners: ${l} is not in --peers`);
        const voters = opts.peers.size - learners.length;
        if (voters === 0) throw new InvalidArgumentError('--learners names every member: at least one must vote');
        if (voters % 2 === 0) throw new InvalidArgumentError(`a cluster needs an odd number of voters, got ${voters} (make one more a learner, or add a voter)`);
        replica = await PaxosKVReplica.start({
          id: opts.id,
          members: opts.peers,
          learners,
          dataDir: opts.dataDir,
          rejoin: opts.rejoin === true,
          onModeChange: (mode, r) => {
            if (mode === 'rejoining') say(`rejoining: it lost its data; fencing every key the other voters hold before it votes (see kv status)`);
            else if (mode === 'voter') say(`voting (incarnation ${r.status().incarnation})`);
          },
        });
      } catch (err) {
        reportError(err);
        process.exit(1);
      }
      const role = learners.includes(opts.id) ? ' (learner)' : '';
      process.stdout.write(
        `svrkit: paxoskv replica ${opts.id}${role} of [${[...opts.peers.keys()].join(',')}] ` +
          `serving on ${replica.address} (pid ${process.pid}), data in ${opts.dataDir}\n`,
      );
      if (replica.mode === 'checking') say(opts.rejoin ? 'starting after a data loss (--rejoin): confirming a new incarnation with the other voters' : 'confirming its incarnation with a majority of the other voters before it votes');
      let closing = false;
      const stop = (signal: string): void => {
        if (closing) return;
        closing = true;
        process.stdout.write(`svrkit: ${signal}: closing replica ${opts.id}\n`);
        void replica.close().then(() => process.exit(0));
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
      // Started through npm (or by an npm-started `kv up`): stop when the launcher goes (launcher.ts).
      watchLauncher((why) => stop(why));
    });

  kv.command('up')
    .description(
      'run a local cluster as child processes, in the foreground until Ctrl-C. The first start records the cluster in <data-dir>/cluster.json; ' +
        'later starts run that cluster (flags left out take its values) and refuse a flag that differs',
    )
    .option('--replicas <n>', 'replicas (odd)', intOption('replicas', 1, 9), 3)
    .option('--data-dir <dir>', 'parent of the replicas\' data dirs', DEFAULT_KV_DATA_DIR)
    .option('--base-port <port>', 'port of replica 1; replica i listens on base+i-1', intOption('base port', 1, 65535), 7101)
    .option('--host <host>', 'interface and address of every replica', '127.0.0.1')
    .action(async (opts: UpFlags & { dataDir: string }, cmd: Command) => {
      const given = new Set((['replicas', 'basePort', 'host'] as const).filter((k) => cmd.getOptionValueSource(k) === 'cli'));
      let record: ClusterRecord;
      try {
        if (opts.replicas % 2 === 0) throw new KvUsageError(`--replicas must be odd, got ${opts.replicas}`);
        if (opts.basePort + opts.replicas - 1 > 65535) throw new KvUsageError(`--base-port ${opts.basePort} leaves no port for replica ${opts.replicas} (ports end at 65535)`);
        const plan = await planCluster(opts.dataDir, opts, given);
        record = plan.record;
        const peers = parsePeers(record.peers);
        for (const [id, address] of peers) {
          const port = record.basePort + id - 1;
          await portFree(record.host, port).catch((err: NodeJS.ErrnoException) => {
            throw new Error(
              `replica ${id} cannot listen on ${address}: ${err.code ?? err.message}` +
                (plan.recorded ? ' (is this cluster already up? its addresses are recorded in the data dir)' : '; pick another --base-port'),
            );
          });
        }
        if (!plan.recorded) {
          const written = await writeClusterRecord(opts.dataDir, record);
          if (written.peers !== record.peers) checkAgainst(opts.dataDir, written, { ...record }, new Set(['replicas', 'basePort', 'host']));
          process.stdout.write(`svrkit: recorded the cluster in ${path.join(opts.dataDir, CLUSTER_FILE)}: later starts run it, and refuse another --replicas, --base-port or --host\n`);
        }
      } catch (err) {
        refuse(err);
        return;
      }
      const ids = Array.from({ length: record.replicas }, (_, i) => i + 1);
      const cli = fileURLToPath(new URL('../../../bin/svrkit.js', import.meta.url));
      const children = new Map<number, ChildProcess>();
      let stopping = false;
      for (const id of ids) {
        const child = spawn(process.execPath, [cli, 'kv', 'serve', '--id', String(id), '--peers', record.peers, '--data-dir', path.join(opts.dataDir, `replica-${id}`)], {
          stdio: ['ignore', 'inherit', 'inherit'],
        });
        children.set(id, child);
        child.on('exit', (code, signal) => {
          children.delete(id);
          if (!stopping) process.stderr.write(`svrkit: replica ${id} exited (${code ?? signal}); the others keep serving\n`);
          if (children.size === 0) process.exit(stopping ? 0 : 1);
        });
      }
      const pids = [...children].map(([id, c]) => `${id}=${c.pid ?? '?'}`).join(',');
      const here = path.resolve(opts.dataDir) === path.resolve(DEFAULT_KV_DATA_DIR);
      process.stdout.write(
        `svrkit: kv up (pid ${process.pid}): paxoskv cluster of ${record.replicas} starting, replica pids ${pids}, data in ${opts.dataDir}; ` +
          `clients use --peers ${record.peers}\n` +
          `svrkit: kv commands find this cluster without --peers ${here ? 'when run in this directory' : `given --data-dir ${opts.dataDir}`} (or with ${KV_PEERS_ENV}=${record.peers})\n`,
      );
      const stop = (): void => {
        stopping = true;
        for (const c of children.values()) c.kill('SIGTERM');
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      // Started through npm: a SIGTERM to npm stops at npm's shell; stop the replicas when it goes (launcher.ts).
      watchLauncher((why) => {
        process.stdout.write(`svrkit: ${why}: stopping the replicas\n`);
        stop();
      });
      await Promise.all([...children.values()].map((c) => once(c, 'exit')));
    });

  const clientCommand = (name: string, description: string) =>
    kv
      .command(name)
      .description(description)
      .option(
        '--peers <list>',
        `replicas: 1=host:port,2=host:port,... (or host:port,... for ids 1, 2, ...); default: $${KV_PEERS_ENV}, else the cluster kv up recorded in ${DEFAULT_KV_DATA_DIR}`,
        parsePeers,
      )
      .option('--data-dir <dir>', 'use the cluster svrkit kv up --data-dir <dir> recorded there (instead of --peers)')
      .option('-t, --timeout <ms>', 'deadline of the operation (ms)', positiveMs, 5000);
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

  clientCommand('status', 'show each replica: mode (voter, learner, checking, rejoining), who votes, keys, lagging keys')
    .action(async (flags: ClientFlags) => {
      let peers: Map<number, string>;
      try {
        peers = await resolveClientPeers(flags);
      } catch (err) {
        refuse(err);
        return;
      }
      const c = new PaxosKVClient({ peers: [...peers.values()] });
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
            learnerOnly: s.learnerOnly,
            keys: s.keys.toString(),
            laggingKeys: s.laggingKeys.toString(),
            pendingOperations: s.pendingOperations.toString(),
            ...(s.mode === 'rejoining' ? { rejoin: { peersDone: s.rejoinPeersDone, peers: s.rejoinPeers, keysFenced: s.rejoinKeysFenced.toString() } } : {}),
          });
        } catch (err) {
          down++;
          rows.push({ id, address, up: false, error: err instanceof RpcError ? `${statusName(err.code)}: ${err.message}` : String(err) });
        }
      }
      c.close();
      for (const r of rows) process.stdout.write(JSON.stringify(r) + '\n');
      if (down > Math.floor(peers.size / 2)) {
        process.stderr.write(`ERROR: UNAVAILABLE: ${down} of ${peers.size} replicas are down: no majority\n`);
        process.exitCode = 1;
      }
    });
}
