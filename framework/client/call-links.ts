/**
 * What ends an outbound call from outside, for unary calls (retrying-call.ts) and streams
 * (stream-call.ts) alike: its one deadline, the caller's AbortSignal, and the cancellation of the
 * inbound call it is made in (gRPC's cancellation propagation).
 */
import type { ServerCallContext } from '../context/call-context.js';
import type { DeadlineEntry, DeadlineTimers } from '../context/deadline-timers.js';
import { errors } from '../errors.js';
import { RpcError, Status } from '../wire/status.js';

/** An outbound call as its links see it. */
export interface LinkedCall extends DeadlineEntry {
  /** Absolute deadline, epoch ms (`Infinity` for none); `onDeadline` runs when it passes. */
  readonly deadline: number;
  /** Ends the call from outside with `error`. */
  cancel(error: RpcError): void;
  /** True once the call ended. */
  readonly done: boolean;
}

/**
 * Arms a call's deadline timer, the caller's signal and the parent call's cancellation. A signal
 * that already fired cancels the call at once.
 * @param timers - the channel's deadline timers (on its clock).
 * @param now - epoch ms, on that clock.
 * @returns what `unlinkCall` needs to undo the signal and parent links (undefined when there are none).
 */
export function linkCall(call: LinkedCall, timers: DeadlineTimers, now: number, signal: AbortSignal | undefined, parent: ServerCallContext | undefined): (() => void) | undefined {
  if (call.deadline !== Infinity) timers.add(call, now);
  if (signal === undefined && parent === undefined) return undefined;
  // The parent first: one already aborted cancels the call at once, before any listener is added.
  const unlinkParent = parent?.onAbort((reason) => call.cancel(parentEnded(reason)));
  if (call.done) return undefined;
  let onAbort: (() => void) | undefined;
  if (signal !== undefined) {
    if (signal.aborted) {
      unlinkParent?.();
      call.cancel(cancelledBy(signal));
      return undefined;
    }
    onAbort = () => call.cancel(cancelledBy(signal));
    signal.addEventListener('abort', onAbort, { once: true });
  }
  return () => {
    if (onAbort !== undefined) signal!.removeEventListener('abort', onAbort);
    unlinkParent?.();
  };
}

/**
 * Undoes `linkCall` once the call ended: stops its deadline timer and drops its listeners.
 * @param timers - the timers `linkCall` used.
 * @param unlink - what `linkCall` returned.
 */
export function unlinkCall(call: LinkedCall, timers: DeadlineTimers, unlink: (() => void) | undefined): void {
  if (call.deadlineList !== undefined) timers.remove(call);
  unlink?.();
}

/** The error a call ends with when the caller's signal fires: its reason when that is an RpcError, else CANCELLED_BY_CALLER. */
function cancelledBy(signal: AbortSignal): RpcError {
  const r: unknown = signal.reason;
  if (r instanceof RpcError) return r;
  return r instanceof Error ? errors.CANCELLED_BY_CALLER.with({ cause: r }, r.message) : errors.CANCELLED_BY_CALLER();
}

/** The error a call made inside an inbound call ends with when that call is aborted (cancelled or out of time). */
function parentEnded(reason: RpcError): RpcError {
  return reason.code === Status.DEADLINE_EXCEEDED ? errors.PARENT_DEADLINE_EXCEEDED(reason.message) : errors.PARENT_CANCELLED(reason.message);
}
