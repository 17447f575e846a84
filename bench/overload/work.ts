/**
 * The Work service: each call spins the CPU for `cpuUs` microseconds (synchronously, so calls
 * queue behind each other as they would behind real CPU-bound handlers), allocates `allocKb` KiB
 * of short-lived garbage (so the server's GC works), then waits `waitMs` ms on a timer (an
 * I/O-bound handler: no CPU while it waits). Served by `svrkit run bench/overload/work.ts` for the
 * FastReject benchmark and tests. With `allocKb` and `waitMs` 0 it only spins.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { CallContext } from 'svrkit';
import { WorkService, type WorkReply, type WorkRequest } from './gen/work.js';

/** One node of the garbage: 3 fields, about 49 bytes on a 64-bit V8 heap (21 of them ~ 1 KiB). */
interface Node {
  v: number;
  w: number;
  next: Node | null;
}

/** Small objects per KiB of `allocKb` (measured: ~1,040 bytes of heap per 21 nodes on Node 20 x64). */
export const NODES_PER_KIB = 21;

/** The walks' results, kept observable so that the allocation is not optimised away. */
export let garbageChecksum = 0;

/**
 * Allocates about `kib` KiB of small objects, linked into one list that stays reachable until the
 * end (so a scavenge in the middle copies what the call built so far), and walks it once.
 * @param kib - KiB to allocate.
 * @returns the walk's sum (meaningless; it only keeps the work observable).
 */
export function makeGarbage(kib: number): number {
  let head: Node | null = null;
  for (let k = 0; k < kib; k++) {
    for (let i = 0; i < NODES_PER_KIB; i++) head = { v: i, w: k, next: head };
  }
  let sum = 0;
  for (let n = head; n !== null; n = n.next) sum += n.v + n.w;
  garbageChecksum = (garbageChecksum + sum) | 0;
  return sum;
}

/** Burns CPU, makes garbage, waits, then answers with the priorities the server assigned. */
export class Work extends WorkService {
  override async do(request: WorkRequest, call: CallContext): Promise<WorkReply> {
    const end = process.hrtime.bigint() + BigInt(request.cpuUs) * 1000n;
    while (process.hrtime.bigint() < end) {
      // spin
    }
    if (request.allocKb > 0) makeGarbage(request.allocKb);
    if (request.waitMs > 0) await sleep(request.waitMs);
    return { tag: request.tag, businessPriority: call.businessPriority, userPriority: call.userPriority };
  }
}

export default new Work();
