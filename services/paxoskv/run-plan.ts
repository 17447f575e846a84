/**
 * Runs a plan (plan.ts) against a PaxosKV cluster: each step through `PaxosKVClient`, within one
 * deadline for the whole plan.
 */
import { RpcError, Status, type CallOptions } from '../../framework/index.js';
import type { PaxosKVClient } from './client.js';
import { kvErrors } from './errors.js';
import type { KvPlan, KvStep, KvStepReply } from './plan.js';

/**
 * Runs `plan` to its end.
 * @param plan - the plan (a started generator is not allowed: pass a fresh one).
 * @param kv - the cluster's client.
 * @param options - the call options of every step; `deadline` (epoch ms) or `timeoutMs` bound the
 *   whole plan, cut to the enclosing call's deadline (default: the client's `defaultTimeoutMs`;
 *   see `PaxosKVClient.deadlineFor`).
 * @returns what the plan returns.
 * @throws RpcError from a step that failed outright (UNAVAILABLE or DEADLINE_EXCEEDED when no
 *   replica answered in time, INVALID_ARGUMENT for a bad key or an oversized value): the step's
 *   effect, and so the operation's, is then unknown; whatever the plan itself throws.
 */
export async function runPlan<T>(plan: KvPlan<T>, kv: PaxosKVClient, options: CallOptions = {}): Promise<T> {
  const stepOptions: CallOptions = { ...options, deadline: kv.deadlineFor(options), timeoutMs: undefined };
  let next = plan.next();
  while (!next.done) {
    let reply: KvStepReply;
    try {
      reply = await runStep(next.value, kv, stepOptions);
    } catch (err) {
      plan.return(undefined as T);
      throw err;
    }
    next = plan.next(reply);
  }
  return next.value;
}

/** Runs one step; a failed precondition is a reply, any other failure throws. */
async function runStep(step: KvStep, kv: PaxosKVClient, options: CallOptions): Promise<KvStepReply> {
  if (step.kind === 'get') {
    const r = await kv.get(step.key, options);
    return r === null ? { kind: 'value', value: null, version: 0n } : { kind: 'value', value: r.value, version: r.version };
  }
  try {
    return { kind: 'written', version: await kv.compareAndSet(step.key, step.expectedVersion, step.value, options) };
  } catch (err) {
    if (err instanceof RpcError && err.code === Status.FAILED_PRECONDITION && err.reason === kvErrors.VERSION_MISMATCH.reason) return { kind: 'conflict', unknown: false };
    if (err instanceof RpcError && err.reason === kvErrors.CAS_OUTCOME_UNKNOWN.reason) return { kind: 'conflict', unknown: true };
    throw err;
  }
}
