/**
 * What PaxosKV's record checksums cost, by decomposition rather than by an A/B of two trees (whose
 * run-to-run spread on these machines, ±10%, is larger than the cost):
 *
 *   npx tsx bench/paxoskv/checksum-cost.ts [--duration 10s] [--concurrency 64]
 *
 * 1. a 3-replica cluster in this process (`PaxosKVReplica`, data in a temp dir), the seed
 *    workload (workload.ts: 10,000 keys, 120-byte values, reads:writes 3.3:1) for `--duration`,
 *    counting every record the replicas read (`KeyStore.get` from LMDB) and write
 *    (`KeyStore.write`), their sizes, and this process's CPU time;
 * 2. the time of one CRC-32 (`node:zlib` `crc32`, what storage.ts computes on every record read
 *    and written) over records of the mean size seen, and of a whole `decodeRecord` /
 *    `encodeRecord` for scale;
 * 3. prints checksum µs per operation (records read and written per operation times the CRC time)
 *    beside the CPU µs per operation of the whole process. The client runs in the same process,
 *    so the share printed is of replicas and client together: the replicas' own share is somewhat
 *    higher (in the multi-process bench the client takes about a tenth of the CPU).
 *
 * Reads served from records not yet durable (handed to `write()` and not committed) are checked by
 * no CRC but are counted as read, so the figure is an upper bound.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import { Command, InvalidArgumentError } from 'commander';
import { PaxosKVClient } from '../../services/paxoskv/client.js';
import { PaxosKVReplica } from '../../services/paxoskv/replica-server.js';
import { decodeRecord, encodeRecord, KeyStore } from '../../services/paxoskv/storage.js';
import { LOST_RECORD, type KeyRecord } from '../../services/paxoskv/core/types.js';
import { freePort } from '../../test/support/kv-processes.js';
import { PAXOSSTORE_STRESS, preload, runWorkload, type KvTarget } from './workload.js';

const program = new Command()
  .option('--duration <d>', 'run length, e.g. 10s', (v) => {
    const m = /^(\d+)(ms|s)$/.exec(v);
    if (m === null) throw new InvalidArgumentError(`--duration: expected e.g. 10s or 500ms, got ${v}`);
    return Number(m[1]) * (m[2] === 's' ? 1000 : 1);
  }, 10_000)
  .option('--concurrency <n>', 'operations in flight', (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`--concurrency: expected a positive integer, got ${v}`);
    return n;
  }, 64)
  .parse();
const opts = program.opts<{ duration: number; concurrency: number }>();

// Count what the stores read and write. The counting itself costs a little CPU in the run.
let reads = 0;
let readBytes = 0;
let sampled = 0;
let writes = 0;
let writeBytes = 0;
let lastRecord: KeyRecord | undefined;
const sampleEvery = 64;
const originalGet = KeyStore.prototype.get;
const originalWrite = KeyStore.prototype.write;
KeyStore.prototype.get = function (this: KeyStore, key: string) {
  const rec = originalGet.call(this, key);
  if (rec !== undefined && rec !== LOST_RECORD) {
    reads++;
    if (reads % sampleEvery === 0) {
      readBytes += encodeRecord(rec).length;
      sampled++;
      lastRecord = rec;
    }
  }
  return rec;
};
KeyStore.prototype.write = function (this: KeyStore, records: ReadonlyMap<string, KeyRecord>, ...rest: unknown[]) {
  for (const rec of records.values()) {
    writes++;
    writeBytes += encodeRecord(rec).length;
  }
  return (originalWrite as (...a: unknown[]) => Promise<void>).call(this, records, ...rest);
} as typeof KeyStore.prototype.write;

const dir = mkdtempSync(path.join(os.tmpdir(), 'paxoskv-checksum-'));
const members = new Map<number, string>();
for (const id of [1, 2, 3]) members.set(id, `127.0.0.1:${await freePort()}`);
const replicas = await Promise.all([1, 2, 3].map((id) => PaxosKVReplica.start({ id, members, dataDir: path.join(dir, `r${id}`) })));
const clients: PaxosKVClient[] = [];
try {
  await Promise.all(replicas.map((r) => r.ready(10_000)));
  for (let j = 0; j < 6; j++) {
    const order = [...members.values()];
    clients.push(new PaxosKVClient({ peers: [...order.slice(j % 3), ...order.slice(0, j % 3)], attemptTimeoutMs: 500 }));
  }
  const targets: KvTarget[] = clients.map((c) => ({ get: (k) => c.get(k), put: (k, v) => c.put(k, v) }));
  const loaded = await preload(targets, opts.concurrency);
  reads = readBytes = sampled = writes = writeBytes = 0;
  const cpu0 = process.cpuUsage();
  const result = await runWorkload({ targets, concurrency: opts.concurrency, durationMs: opts.duration });
  const cpu = process.cpuUsage(cpu0);
  const ops = result.reads.ok + result.writes.ok;
  const meanRead = sampled > 0 ? readBytes / sampled : 0;
  const meanWrite = writes > 0 ? writeBytes / writes : 0;

  // The CRC over records of those sizes, and a whole decode/encode for scale.
  const sample = (n: number) => Buffer.alloc(Math.max(1, Math.round(n)), 0x5a);
  const time = (fn: () => void, n: number): number => {
    for (let i = 0; i < 10_000; i++) fn();
    const t = performance.now();
    for (let i = 0; i < n; i++) fn();
    return ((performance.now() - t) * 1000) / n;
  };
  const readBuf = sample(meanRead);
  const writeBuf = sample(meanWrite);
  let sink = 0;
  const crcRead = time(() => (sink ^= crc32(readBuf)), 200_000);
  const crcWrite = time(() => (sink ^= crc32(writeBuf)), 200_000);
  const someRecord = lastRecord;
  const encoded = someRecord === undefined ? undefined : encodeRecord(someRecord);
  const decodeUs = encoded === undefined ? NaN : time(() => decodeRecord(encoded), 100_000);
  const encodeUs = someRecord === undefined ? NaN : time(() => encodeRecord(someRecord), 100_000);

  const cpuUsPerOp = (cpu.user + cpu.system) / ops;
  const readsPerOp = reads / ops;
  const writesPerOp = writes / ops;
  const crcPerOp = readsPerOp * crcRead + writesPerOp * crcWrite;
  console.log(`PaxosKV checksum cost: node ${process.version}, ${os.cpus().length} CPUs; 3 replicas and the client in this process; preload ${loaded.ms.toFixed(0)} ms`);
  console.log(`workload: ${PAXOSSTORE_STRESS.keys} keys, ${PAXOSSTORE_STRESS.valueBytes}-byte values, reads:writes ${PAXOSSTORE_STRESS.readsPerWrite}:1, c=${opts.concurrency}, ${(result.durationMs / 1000).toFixed(1)} s`);
  console.log(`ok ops/s ${Math.round(result.okPerSecond)} (${result.reads.ok} reads, ${result.writes.ok} writes ok); process CPU ${(cpuUsPerOp).toFixed(1)} µs per operation`);
  console.log(`records read from LMDB (each CRC-checked): ${readsPerOp.toFixed(2)} per operation, mean ${meanRead.toFixed(0)} bytes; records written (each CRC-sealed): ${writesPerOp.toFixed(2)} per operation, mean ${meanWrite.toFixed(0)} bytes`);
  console.log(`one crc32: ${crcRead.toFixed(3)} µs over ${meanRead.toFixed(0)} bytes, ${crcWrite.toFixed(3)} µs over ${meanWrite.toFixed(0)} bytes; a whole decodeRecord ${decodeUs.toFixed(2)} µs, encodeRecord ${encodeUs.toFixed(2)} µs`);
  console.log(`checksums: ${crcPerOp.toFixed(2)} µs per operation = ${((100 * crcPerOp) / cpuUsPerOp).toFixed(2)}% of the process's CPU per operation`);
  if (sink === 0.5) console.log(''); // keep the CRC loops from being optimised away
} finally {
  for (const c of clients) c.close();
  await Promise.all(replicas.map((r) => r.close()));
  rmSync(dir, { recursive: true, force: true });
}
