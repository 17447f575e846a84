/**
 * The built-in health service (`svrkit.Health/Check`), after grpc.health.v1.Health.
 */
import { errors } from '../errors.js';
import {
  HealthService,
  HealthCheckResponse_ServingStatus as ServingStatus,
  type HealthCheckRequest,
  type HealthCheckResponse,
} from '../builtin/gen/svrkit/health.js';

/** What the health service needs to know about its server. */
export interface HealthSource {
  /** True once the server began shutting down. */
  readonly isClosing: boolean;
  /** Registered services by full name. */
  readonly services: ReadonlyMap<string, unknown>;
}

/**
 * Answers SERVING for the whole server (empty name) or a registered service, NOT_SERVING while the
 * server shuts down, and NOT_FOUND for a service it does not serve.
 */
export class Health extends HealthService {
  /** @param server - the server whose health is reported. */
  constructor(private readonly server: HealthSource) {
    super();
  }

  /** @throws RpcError NOT_FOUND (reason `UNKNOWN_SERVICE`) when `request.service` names no registered service. */
  override async check(request: HealthCheckRequest): Promise<HealthCheckResponse> {
    if (request.service !== '' && !this.server.services.has(request.service)) {
      throw errors.UNKNOWN_SERVICE(request.service);
    }
    return { status: this.server.isClosing ? ServingStatus.NOT_SERVING : ServingStatus.SERVING };
  }
}
