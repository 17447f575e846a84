/** Builds a CallView from the current call context (shared by both chain services). */
import type { CallContext } from 'svrkit';
import type { CallView } from './gen/chain.js';

/** @returns what `call` says about itself, for service `service` and user `user`. */
export function viewOf(service: string, call: CallContext, user: string): CallView {
  return {
    service,
    traceId: call.traceId,
    deadlineLeftMs: call.deadline === Infinity ? -1n : BigInt(call.timeRemaining()),
    metadata: { ...call.metadata },
    user,
    caller: call.caller ?? '',
  };
}
