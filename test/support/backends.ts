/**
 * Test backends for channel tests: in-process svrkit servers (Probe service) on 127.0.0.1 that
 * count calls, fail on demand or take extra time, plus the channels made against them; both are
 * closed by `closeAll()`.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Channel, RpcError, Server, type ChannelOptions, type ServerInterceptor } from '../../framework/index.js';
import { ProbeDefinition } from '../.tmp/gen/probe/probe.js';
import { Probe } from './probe.js';

export const echo = ProbeDefinition.methods.echo;
export const SERVICE = 'probe.Probe';
export const idempotentEcho: ChannelOptions['methodConfig'] = [{ name: [{ service: SERVICE }], idempotent: true }];

export interface Backend {
  server: Server;
  probe: Probe;
  /** Calls that reached this server's handler chain. */
  calls: number;
  /** When set, every call fails with this error before the handler. */
  failWith: RpcError | undefined;
  /** Extra time every call takes before the handler (ms). */
  delayMs: number;
  /** Calls whose delay was cut short by cancellation. */
  cancelled: number;
  address: string;
}

export const started: Backend[] = [];
export const channels: Channel[] = [];

export async function backend(): Promise<Backend> {
  const b = { calls: 0, failWith: undefined, delayMs: 0, cancelled: 0 } as Backend;
  const count: ServerInterceptor = (next) => async (req, call) => {
    b.calls++;
    if (b.failWith !== undefined) throw b.failWith;
    if (b.delayMs > 0) {
      try {
        await sleep(b.delayMs, undefined, { signal: call.signal });
      } catch (err) {
        b.cancelled++;
        throw err;
      }
    }
    return next(req, call);
  };
  b.probe = new Probe();
  b.server = new Server({ interceptors: [count] }).addService(b.probe);
  await b.server.listen(0);
  b.address = b.server.address;
  started.push(b);
  return b;
}

export function channel(target: string, options: ChannelOptions = {}): Channel {
  const ch = new Channel(target, options);
  channels.push(ch);
  return ch;
}

export async function settle<T>(p: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: RpcError }> {
  try {
    return { ok: true, value: await p };
  } catch (error) {
    return { ok: false, error: error as RpcError };
  }
}

export async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Closes every channel and backend made since the last call. */
export async function closeAll(): Promise<void> {
  for (const c of channels.splice(0)) c.close();
  await Promise.all(started.splice(0).map((b) => b.server.close({ graceMs: 100 })));
}
