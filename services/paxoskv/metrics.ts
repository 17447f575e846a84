/**
 * Prometheus metrics of a PaxosKV replica (prom-client), read from the replica at scrape time: its
 * keys, the keys it lags on, its operations in flight, its mode, and what its checksums caught
 * (records that failed them, and the lost keys it found and repaired). `svrkit kv serve
 * --metrics-port` serves them next to the framework's RPC metrics (`SvrkitMetrics`).
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { StatusReply } from './gen/svrkit/paxoskv/paxoskv.js';

/** What the metrics read from a replica at each scrape (a `PaxosKVReplica` fits). */
export interface ObservedReplica {
  /** The replica's status (`PaxosKVReplica.status()`). */
  status(): StatusReply;
  /** Reads that met a record failing its checksum since the store opened (`PaxosKVReplica.corruptReads`). */
  readonly corruptReads: number;
}

/** The modes `svrkit_paxoskv_mode` reports, one series each (1 for the current one, else 0). */
export const REPLICA_MODES: readonly string[] = ['checking', 'rejoining', 'voter', 'learner', 'failed'];

/**
 * Registers the replica's metrics on `registry`; each reads `replica` when scraped:
 * - `svrkit_paxoskv_keys` (gauge): keys in the store;
 * - `svrkit_paxoskv_lagging_keys` (gauge): keys on which it knows it lags its peers;
 * - `svrkit_paxoskv_pending_operations` (gauge): client operations in flight or queued;
 * - `svrkit_paxoskv_mode{mode}` (gauge): 1 for the current mode (see {@link REPLICA_MODES});
 * - `svrkit_paxoskv_lost_keys_found_total` (counter): keys whose record failed its checksum (or
 *   did not decode) and that the replica began to repair, since it started;
 * - `svrkit_paxoskv_lost_keys_repaired_total` (counter): of those, the ones repaired;
 * - `svrkit_paxoskv_lost_keys_repairing` (gauge): keys being repaired now (the replica serves and
 *   votes on none of them);
 * - `svrkit_paxoskv_corrupt_reads_total` (counter): reads of a record that failed its checksum.
 * @param registry - where to register them (e.g. `SvrkitMetrics.registry`).
 * @param replica - the replica to read.
 * @throws Error when `registry` already holds a metric of one of these names.
 */
export function registerReplicaMetrics(registry: Registry, replica: ObservedReplica): void {
  const registers = [registry];
  // status() reads counters the replica keeps; a scrape calls it once per metric.
  const status = (): StatusReply => replica.status();
  const gauge = (name: string, help: string, read: (s: StatusReply) => number | bigint): void => {
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(Number(read(status())));
      },
    });
  };
  const counter = (name: string, help: string, read: () => number | bigint): void => {
    new Counter({
      name,
      help,
      registers,
      collect() {
        this.reset();
        this.inc(Number(read()));
      },
    });
  };
  gauge('svrkit_paxoskv_keys', 'Keys in the replica\'s store.', (s) => s.keys);
  gauge('svrkit_paxoskv_lagging_keys', 'Keys on which the replica knows it lags its peers.', (s) => s.laggingKeys);
  gauge('svrkit_paxoskv_pending_operations', 'Client operations in flight or queued on the replica.', (s) => s.pendingOperations);
  new Gauge({
    name: 'svrkit_paxoskv_mode',
    help: 'The replica\'s mode: 1 for the current one (checking, rejoining, voter, learner, failed).',
    labelNames: ['mode'] as const,
    registers,
    collect() {
      const mode = status().mode;
      for (const m of REPLICA_MODES) this.set({ mode: m }, m === mode ? 1 : 0);
    },
  });
  counter('svrkit_paxoskv_lost_keys_found_total', 'Keys whose record failed its checksum and that the replica began to repair from its peers.', () => status().lostKeysFound);
  counter('svrkit_paxoskv_lost_keys_repaired_total', 'Lost keys the replica repaired from its peers.', () => status().lostKeysRepaired);
  gauge('svrkit_paxoskv_lost_keys_repairing', 'Lost keys being repaired now (the replica serves and votes on none of them).', (s) => s.lostKeysRepairing);
  counter('svrkit_paxoskv_corrupt_reads_total', 'Reads of a record that failed its checksum (each read counts).', () => replica.corruptReads);
}
