/**
 * gRPC's standard health service (`grpc.health.v1.Health`, grpc/grpc doc/health-checking.md),
 * served by every svrkit server so that Kubernetes `grpc:` probes, Envoy and grpc-health-probe
 * can check it. It reports the same state as `svrkit.Health`: SERVING for the server (empty
 * name) and each registered service, NOT_SERVING once the server begins shutting down.
 */
import { errors } from '../errors.js';
import type { CallContext } from '../context/call-context.js';
import {
  HealthCheckResponse_ServingStatus as ServingStatus,
  HealthService,
  type HealthCheckRequest,
  type HealthCheckResponse,
} from '../builtin/gen/grpc/health/v1/health.js';
import type { HealthSource } from './health.js';

/** What gRPC's Watch needs beyond `HealthSource`: a signal that fires when the server begins shutting down. */
export interface WatchableHealthSource extends HealthSource {
  /** Aborted when the server begins shutting down (`close()`). */
  readonly closingSignal: AbortSignal;
}

/**
 * `grpc.health.v1.Health`: Check answers now; Watch answers now and then on each change, which
 * for a svrkit server is one: SERVING to NOT_SERVING at shutdown, after which the stream ends
 * (so that a graceful shutdown does not wait out its grace period for watchers).
 */
export class GrpcHealth extends HealthService {
  /** @param server - the server whose health is reported. */
  constructor(private readonly server: WatchableHealthSource) {
    super();
  }

  /**
   * @returns SERVING, or NOT_SERVING while the server shuts down.
   * @throws RpcError NOT_FOUND (reason `UNKNOWN_SERVICE`) when `request.service` names no registered service, as the protocol asks.
   */
  override async check(request: HealthCheckRequest): Promise<HealthCheckResponse> {
    if (!this.known(request.service)) throw errors.UNKNOWN_SERVICE(request.service);
    return { status: this.server.isClosing ? ServingStatus.NOT_SERVING : ServingStatus.SERVING };
  }

  /**
   * Yields the status now (SERVICE_UNKNOWN for a service not registered, which the protocol says
   * is not an error), then NOT_SERVING when the server begins shutting down, and ends. Ends
   * early when the call is cancelled.
   */
  override async *watch(request: HealthCheckRequest, call: CallContext): AsyncIterable<HealthCheckResponse> {
    const closing = this.server.closingSignal;
    if (!this.known(request.service)) {
      yield { status: ServingStatus.SERVICE_UNKNOWN };
      await untilAborted(closing, call.signal);
      return;
    }
    if (closing.aborted) {
      yield { status: ServingStatus.NOT_SERVING };
      return;
    }
    yield { status: ServingStatus.SERVING };
    await untilAborted(closing, call.signal);
    if (call.signal.aborted) return;
    yield { status: ServingStatus.NOT_SERVING };
  }

  private known(service: string): boolean {
    return service === '' || this.server.services.has(service);
  }
}

/** Resolves when either signal is aborted (its listeners removed then). */
function untilAborted(a: AbortSignal, b: AbortSignal): Promise<void> {
  if (a.aborted || b.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      a.removeEventListener('abort', done);
      b.removeEventListener('abort', done);
      resolve();
    };
    a.addEventListener('abort', done, { once: true });
    b.addEventListener('abort', done, { once: true });
  });
}
