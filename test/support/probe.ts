/**
 * The Probe service implementation used by runtime tests (and served by `svrkit run` in CLI tests).
 * Records how each call ended, by its `text`, so tests can see server-side cancellation.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { parseStatus, RpcError, type CallContext } from 'svrkit';
import { ProbeService, type EchoReply, type EchoRequest } from '../.tmp/gen/probe/probe.js';

/** How a call ended on the server: 'ok', 'error', or the status name of its abort reason. */
export type Ending = { outcome: string; detail: string };

/** Echoes the call context; fails, sleeps or pads on request. */
export class Probe extends ProbeService {
  /** Endings by request text (last one wins). */
  readonly endings = new Map<string, Ending>();
  /** Calls currently inside the handler. */
  active = 0;

  override async echo(request: EchoRequest, call: CallContext): Promise<EchoReply> {
    if (request.fail.startsWith('sync:')) throw new Error(request.fail.slice(5));
    this.active++;
    try {
      const view = {
        text: request.text,
        metadata: { ...call.metadata },
        traceId: call.traceId,
        deadlineLeftMs: call.deadline === Infinity ? -1n : BigInt(call.timeRemaining()),
        padding: new Uint8Array(request.replyBytes).fill(7),
        peer: call.peer,
        method: call.method,
      };
      if (request.delayMs > 0) await sleep(request.delayMs, undefined, { signal: call.signal });
      Object.assign(call.responseMetadata, request.setResponseMetadata);
      if (request.fail.startsWith('rpc:')) {
        const [, code, ...msg] = request.fail.split(':');
        throw new RpcError(parseStatus(code!), msg.join(':'), { 'x-failed': 'yes' });
      }
      if (request.fail.startsWith('plain:')) throw new Error(request.fail.slice(6));
      this.endings.set(request.text, { outcome: 'ok', detail: '' });
      return view;
    } catch (err) {
      const reason: unknown = call.signal.aborted ? call.signal.reason : err;
      this.endings.set(request.text, reason instanceof RpcError ? { outcome: reason.codeName, detail: reason.message } : { outcome: 'error', detail: String(err) });
      throw err;
    } finally {
      this.active--;
    }
  }
}

export default new Probe();
