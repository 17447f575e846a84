/**
 * PaxosKV clusters for tests, on 127.0.0.1: replicas in this process (`PaxosKVReplica`), or real
 * `svrkit kv serve` processes. Both wait until every replica votes.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll } from 'vitest';
import { PaxosKVClient } from '../../services/paxoskv/client.js';
import { PaxosKVReplica, type ReplicaOptions } from '../../services/paxoskv/replica-server.js';
import { freePorts, spawnSvrkit, stopProc, waitVoting, type Proc } from './kv-processes.js';

/** Replicas in this process. */
export interface InProcessCluster {
  /** Member id to `host:port`. */
  readonly members: Map<number, string>;
  /** The addresses, replica 1 first. */
  readonly addresses: string[];
  /** The running replicas by id (a restarted one replaces its entry). */
  readonly replicas: Map<number, PaxosKVReplica>;
  /** (Re)starts replica `id` on its data dir; resolves once it votes. */
  start(id: number): Promise<PaxosKVReplica>;
  /** Closes every replica. */
  close(): Promise<void>;
}

/**
 * Starts `n` replicas in this process, data under `dir/r<id>`.
 * @param extra - more replica options (e.g. `watchCheckMs`).
 * @returns the cluster, once every replica votes.
 */
export async function startInProcessCluster(dir: string, n = 3, extra: Partial<ReplicaOptions> = {}): Promise<InProcessCluster> {
  const ports = await freePorts(n);
  const members = new Map(ports.map((p, i) => [i + 1, `127.0.0.1:${p}`] as [number, string]));
  const replicas = new Map<number, PaxosKVReplica>();
  const start = async (id: number): Promise<PaxosKVReplica> => {
    const r = await PaxosKVReplica.start({ ...extra, id, members, dataDir: path.join(dir, `r${id}`) });
    replicas.set(id, r);
    await r.ready(10_000);
    return r;
  };
  await Promise.all([...members.keys()].map(start));
  return {
    members,
    addresses: [...members.values()],
    replicas,
    start,
    close: async () => {
      for (const r of replicas.values()) await r.close();
    },
  };
}

/** `svrkit kv serve` processes. */
export interface ProcessCluster {
  /** The `--peers` flag: `1=host:port,2=...`. */
  readonly peers: string;
  /** The addresses, replica 1 first. */
  readonly addresses: string[];
  /** The running processes by id (a restarted one replaces its entry). */
  readonly replicas: Map<number, Proc>;
  /** (Re)starts replica `id` on its data dir; resolves once it votes. */
  serve(id: number): Promise<Proc>;
  /** SIGKILLs every replica still running. */
  kill(): Promise<void>;
}

/**
 * Starts `n` `svrkit kv serve` replicas (the built CLI), data under `dir/r<id>`.
 * @returns the cluster, once every replica votes.
 */
export async function startProcessCluster(dir: string, n = 3): Promise<ProcessCluster> {
  const ports = await freePorts(n);
  const addresses = ports.map((p) => `127.0.0.1:${p}`);
  const peers = addresses.map((a, i) => `${i + 1}=${a}`).join(',');
  const replicas = new Map<number, Proc>();
  const serve = async (id: number): Promise<Proc> => {
    const p = spawnSvrkit(['kv', 'serve', '--id', String(id), '--peers', peers, '--data-dir', path.join(dir, `r${id}`)]);
    replicas.set(id, p);
    await waitVoting(p, `replica ${id}`);
    return p;
  };
  await Promise.all(addresses.map((_, i) => serve(i + 1)));
  return {
    peers,
    addresses,
    replicas,
    serve,
    kill: async () => {
      for (const p of replicas.values()) await stopProc(p, 'SIGKILL').catch(() => undefined);
    },
  };
}

/** A test file's cluster: see {@link useInProcessCluster}. */
export interface FileCluster {
  readonly cluster: InProcessCluster;
  /** A client of the replicas in order. */
  readonly kv: PaxosKVClient;
  /** A client of the replicas in reverse order (another client's view). */
  readonly kv2: PaxosKVClient;
}

/**
 * A three-replica cluster in this process for the whole test file: started in `beforeAll` (data
 * under `test/.tmp/<name>-<pid>`), closed and removed in `afterAll`.
 * @returns the cluster and two clients, set once `beforeAll` has run.
 */
export function useInProcessCluster(name: string): FileCluster {
  const dir = path.join(fileURLToPath(new URL('../..', import.meta.url)), 'test', '.tmp', `${name}-${process.pid}`);
  const file = {} as { cluster: InProcessCluster; kv: PaxosKVClient; kv2: PaxosKVClient };
  beforeAll(async () => {
    await fsp.rm(dir, { recursive: true, force: true });
    file.cluster = await startInProcessCluster(dir);
    file.kv = new PaxosKVClient({ peers: file.cluster.addresses });
    file.kv2 = new PaxosKVClient({ peers: [...file.cluster.addresses].reverse() });
  }, 30_000);
  afterAll(async () => {
    file.kv?.close();
    file.kv2?.close();
    await file.cluster?.close();
    await fsp.rm(dir, { recursive: true, force: true });
  });
  return file;
}
