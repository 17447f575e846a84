/**
 * Crash-test child for storage.test.ts: `node --import tsx test/paxoskv/storage-child.ts <dir>
 * <firstId>`. Opens a KeyStore (member 1 of [1,2,3]), prints `ready`, then writes forever, several
 * writes per event-loop turn, each write `w` holding:
 * - `ack-<w>`: chosen entry index 1, value `v<w>` (every 10th write: 64 KiB of `w % 251`),
 * - `hot-<w % 5>`: chosen entry index `w + 1` (so the newest write of a hot key has the highest index),
 * and every write with `w % 3 == 0` also the meta patch {@link metaPatch}(w), in the same write()
 * (so the durable meta must match the newest durable write: they share one LMDB transaction).
 * After `await write()` resolves it prints `ack <w>` (process.stdout is synchronous for pipes on
 * Linux, so a printed id was durable before the line left). The parent SIGKILLs it at some point.
 */
import { writeSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import type { KeyRecord, MetaPatch } from '../../services/paxoskv/core/types.js';
import { KeyStore } from '../../services/paxoskv/storage.js';

/** The record `ack-<id>` holds. */
export function ackRecord(id: number): KeyRecord {
  const value = id % 10 === 0 ? new Uint8Array(64 * 1024).fill(id % 251) : new TextEncoder().encode(`v${id}`);
  return {
    chosen: {
      index: 1,
      value,
      writer: { client: 'crash-client', seq: id + 1 },
      proposer: 1,
      time: id,
      sessions: [{ client: 'crash-client', floor: id, expiresAt: id + 60_000, writes: [{ seq: id + 1, version: 1 }] }],
    },
    promised: 0,
    accepted: 0,
    acceptedEntry: null,
    fence: 0,
  };
}

/** The record `hot-<id % 5>` gets from write `id`. */
export function hotRecord(id: number): KeyRecord {
  return {
    chosen: { index: id + 1, value: new TextEncoder().encode(`h${id}`), writer: null, proposer: 1, time: id, sessions: [] },
    promised: 65537,
    accepted: 0,
    acceptedEntry: null,
    fence: id,
  };
}

/** Whether write `id` carries a meta patch, and the patch. */
export function metaPatch(id: number): MetaPatch | undefined {
  return id % 3 === 0 ? { incarnation: id, peerIncarnations: new Map([[2, id]]), rejoining: id % 2 === 0 } : undefined;
}

async function main(): Promise<void> {
  const [dir, first] = process.argv.slice(2);
  if (dir === undefined || first === undefined) throw new Error('usage: storage-child.ts <dir> <firstId>');
  const store = await KeyStore.open(dir, { memberId: 1, members: [1, 2, 3] });
  process.stdout.write('ready\n');
  let id = Number(first);
  for (;;) {
    let last: Promise<void> | undefined;
    const perTurn = 1 + (id % 7);
    for (let i = 0; i < perTurn; i++, id++) {
      const w = id;
      last = store.write(new Map([[`ack-${w}`, ackRecord(w)], [`hot-${w % 5}`, hotRecord(w)]]), metaPatch(w)).then(() => {
        process.stdout.write(`ack ${w}\n`);
      });
    }
    await last;
  }
}

// Only when run as the child process, not when the test imports the record helpers.
if (process.argv[1] !== undefined && pathToFileURL(process.argv[1]).href === import.meta.url) {
  main().catch((err: unknown) => {
    writeSync(2, `storage-child: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
