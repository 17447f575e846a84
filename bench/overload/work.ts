/**
 * The Work service: each call spins the CPU for `cpuUs` microseconds (synchronously, so calls
 * queue behind each other as they would behind real CPU-bound handlers). Served by
 * `svrkit run bench/overload/work.ts` for the FastReject benchmark and tests.
 */
import type { CallContext } from 'svrkit';
import { WorkService, type WorkReply, type WorkRequest } from './gen/work.js';

/** Burns CPU, then answers with the priorities the server assigned. */
export class Work extends WorkService {
  override async do(request: WorkRequest, call: CallContext): Promise<WorkReply> {
    const end = process.hrtime.bigint() + BigInt(request.cpuUs) * 1000n;
    while (process.hrtime.bigint() < end) {
      // spin
    }
    return { tag: request.tag, businessPriority: call.businessPriority, userPriority: call.userPriority };
  }
}

export default new Work();
