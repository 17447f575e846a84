/**
 * The registry service's error catalogue (registry-service.ts), made with the framework's
 * `defineErrors`, so each error carries its name in `RpcError.reason` over the wire.
 */
import { defineErrors, Status } from '../../framework/index.js';

/** Every error the registry service raises. */
export const registryErrors = defineErrors({
  /** A request with a bad prefix, instance, lease or TTL (the message says which and why). */
  INVALID_REGISTRY_REQUEST: { status: Status.INVALID_ARGUMENT, message: (why: string) => why },
  /** The stored instances of a service do not decode. */
  REGISTRY_DATA_MALFORMED: { status: Status.DATA_LOSS, message: (why: string) => why },
});
