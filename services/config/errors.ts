/**
 * The config center's error catalogue: what its service (service.ts) answers, made with the
 * framework's `defineErrors`, so each error carries its name in `RpcError.reason` over the wire.
 * The SDK and the admin library throw plain `Error`s at their callers (a bad namespace, no gray to
 * promote); the service turns them into these.
 */
import { defineErrors, Status } from '../../framework/index.js';

/** Every error the config service raises. */
export const configErrors = defineErrors({
  /** A request naming a bad namespace, key or rule (the message says which and why). */
  INVALID_CONFIG_REQUEST: { status: Status.INVALID_ARGUMENT, message: (why: string) => why },
  /** An operation the namespace's state refuses: no change, no gray to promote, no such release, a namespace over 1 MiB. */
  CONFIG_OP_REFUSED: { status: Status.FAILED_PRECONDITION, message: (why: string) => why },
  /** The stored head does not decode (it is never served). */
  CONFIG_HEAD_MALFORMED: { status: Status.DATA_LOSS, message: (why: string) => why },
});
