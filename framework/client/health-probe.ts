/**
 * The health probe an ejected address must pass before it returns to balancing (outlier
 * ejection, outlier.ts): `svrkit.Health/Check` for the whole server over a short-lived channel.
 * It imports the generated Health client, which imports the runtime (and so the channel), so the
 * channel does not import it: the composition root (framework/setup.ts) registers it.
 */
import { HealthDefinition } from '../builtin/gen/svrkit/health.js';
import { HealthDefinition as GrpcHealthDefinition } from '../builtin/gen/grpc/health/v1/health.js';
import type { BackoffOptions } from './client-connection.js';
import type { Transport } from '../transport/transport.js';
import { Channel, registerHealthProbe } from './channel.js';
import { withoutCall } from '../context/call-context.js';
import { RpcError, Status } from '../wire/status.js';

/**
 * Sends `svrkit.Health/Check` (service `''`) to `address`, or `grpc.health.v1.Health/Check` over gRPC.
 * @param address - `host:port`.
 * @param settings - the reconnect backoff and transport of the channel that ejected the address.
 * @returns true when it answers SERVING within 1 s (or, over gRPC, UNIMPLEMENTED: a gRPC server
 *   without the health service); false on any other outcome (never throws).
 */
export async function probeHealth(address: string, settings: { readonly backoff: BackoffOptions; readonly transport: Transport; readonly protocol?: 'svrkit' | 'grpc' }): Promise<boolean> {
  const ch = new Channel(address, { retryPolicy: false, outlierDetection: false, connectTimeoutMs: 1000, backoff: settings.backoff, keepalive: false, transport: settings.transport });
  try {
    // Outside any call: a probe started from a handler's context must not carry its deadline or ticket.
    // A gRPC server answers gRPC's standard health service (a svrkit server serves both).
    const check = settings.protocol === 'grpc' ? GrpcHealthDefinition.methods.check : HealthDefinition.methods.check;
    const res = await withoutCall(() => ch.unary(check, { service: '' }, { timeoutMs: 1000 }));
    return res.status === 1; // SERVING
  } catch (err) {
    // A gRPC server without the health service answered all the same, in gRPC: it is up.
    return settings.protocol === 'grpc' && err instanceof RpcError && err.code === Status.UNIMPLEMENTED;
  } finally {
    ch.close();
  }
}

/** Registers `probeHealth` as every channel's health probe. Takes nothing, returns nothing. */
export function setup(): void {
  registerHealthProbe(probeHealth);
}
