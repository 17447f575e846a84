/**
 * The chain example's backend: `svrkit run examples/chain/backend.ts --port 7001`.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { RpcError, statusName, type CallContext } from 'svrkit';
import { BackendService, type CallView, type InspectRequest, type OutcomeReply, type OutcomeRequest } from './gen/chain.js';
import { viewOf } from './view.js';

/** Reports its call context; remembers how each call (by x-request-id) ended. */
export class Backend extends BackendService {
  private readonly outcomes = new Map<string, OutcomeReply>();

  override async inspect(request: InspectRequest, call: CallContext): Promise<CallView> {
    const view = viewOf('chain.Backend', call, request.user);
    const id = call.metadata['x-request-id'];
    try {
      // The call's signal fires on client cancel or deadline; sleep() rejects with its reason.
      if (request.delayMs > 0) await sleep(request.delayMs, undefined, { signal: call.signal });
      this.remember(id, { outcome: 'completed', detail: '' });
      return view;
    } catch (err) {
      const reason = call.signal.reason;
      this.remember(id, reason instanceof RpcError ? { outcome: statusName(reason.code), detail: reason.message } : { outcome: 'error', detail: String(err) });
      throw err;
    }
  }

  override async outcome(request: OutcomeRequest): Promise<OutcomeReply> {
    return this.outcomes.get(request.requestId) ?? { outcome: 'unknown', detail: '' };
  }

  private remember(id: string | undefined, outcome: OutcomeReply): void {
    if (id === undefined) return;
    this.outcomes.set(id, outcome);
    if (this.outcomes.size > 10_000) this.outcomes.delete(this.outcomes.keys().next().value!);
  }
}

export default new Backend();
