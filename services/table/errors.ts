/**
 * The table's error catalogue (made with the framework's `defineErrors`, so each error carries its
 * name in `RpcError.reason`, and a service that passes one on sends the name over the wire).
 */
import { defineErrors, Status } from '../../framework/index.js';

/** Every error the table raises. */
export const tableErrors = defineErrors({
  /** A bad table name, row key, column key, value or limit (the message says which and why). */
  INVALID_TABLE_REQUEST: { status: Status.INVALID_ARGUMENT, message: (why: string) => why },
  /** A conditional write found the row at another version (metadata `x-version` has it). */
  ROW_VERSION_MISMATCH: {
    status: Status.FAILED_PRECONDITION,
    message: (row: string, expected: bigint, actual: bigint) => `row ${JSON.stringify(row)} is at version ${actual}, not ${expected}`,
  },
  /** A row that would exceed PaxosKV's 1 MiB value. */
  ROW_TOO_LARGE: { status: Status.INVALID_ARGUMENT, message: (row: string, bytes: number, max: number) => `row ${JSON.stringify(row)} would take ${bytes} bytes, over the ${max}-byte limit` },
  /** A stored row that does not decode: the key was written by something else, or damaged. */
  ROW_RECORD_MALFORMED: { status: Status.DATA_LOSS, message: (key: string, why: string) => `table record ${JSON.stringify(key)} is malformed: ${why}` },
});
