/**
 * Status codes and the error type that carries them.
 *
 * The codes, their numbers and their names are gRPC's (grpc/grpc doc/statuscodes.md), so a
 * svrkit status reads the same as in any gRPC stack and maps 1:1 onto it.
 */

/** gRPC status codes, by name and number (grpc/grpc doc/statuscodes.md). */
export enum Status {
  OK = 0,
  CANCELLED = 1,
  UNKNOWN = 2,
  INVALID_ARGUMENT = 3,
  DEADLINE_EXCEEDED = 4,
  NOT_FOUND = 5,
  ALREADY_EXISTS = 6,
  PERMISSION_DENIED = 7,
  RESOURCE_EXHAUSTED = 8,
  FAILED_PRECONDITION = 9,
  ABORTED = 10,
  OUT_OF_RANGE = 11,
  UNIMPLEMENTED = 12,
  INTERNAL = 13,
  UNAVAILABLE = 14,
  DATA_LOSS = 15,
  UNAUTHENTICATED = 16,
}

/**
 * The name of a status code, e.g. `statusName(14) === 'UNAVAILABLE'`.
 * @param code - a status number; numbers outside the gRPC set give `'UNKNOWN'`.
 * @returns the gRPC name of the code.
 */
export function statusName(code: number): string {
  return Status[code] ?? 'UNKNOWN';
}

/**
 * Parses a status given by name (`'NOT_FOUND'`, case-insensitive) or by number (`'5'`).
 * @returns the status number.
 * @throws Error when the text names no gRPC status.
 */
export function parseStatus(text: string): Status {
  const trimmed = text.trim();
  if (/^\d+$/.test(trimmed)) {
    const n = Number(trimmed);
    if (Status[n] !== undefined) return n as Status;
  } else {
    const v = (Status as unknown as Record<string, number | undefined>)[trimmed.toUpperCase()];
    if (typeof v === 'number') return v as Status;
  }
  throw new Error(`unknown status code '${text}': expected a gRPC status name such as UNAVAILABLE or a number 0-16`);
}

/** Metadata: string keys (lower-case by convention) to string values, carried in call headers. */
export type Metadata = Record<string, string>;

const RPC_ERROR_BRAND = Symbol.for('svrkit.RpcError');

/** google.rpc.ErrorInfo's rule for a reason: UPPER_SNAKE_CASE, 2 to 63 characters. */
const REASON_PATTERN = /^[A-Z][A-Z0-9_]{0,61}[A-Z0-9]$/;

/**
 * Whether `value` is a valid error reason (see `RpcError.reason`).
 * @returns true for an UPPER_SNAKE_CASE string of 2 to 63 characters (`[A-Z][A-Z0-9_]*[A-Z0-9]`),
 *   the format of google.rpc.ErrorInfo's `reason`.
 */
export function isErrorReason(value: unknown): value is string {
  return typeof value === 'string' && REASON_PATTERN.test(value);
}

/** Options of `new RpcError(...)` beyond code, message and metadata. */
export interface RpcErrorOptions {
  /** See `RpcError.notProcessed` (default false). */
  notProcessed?: boolean;
  /** See `RpcError.reason` (default none). Must be UPPER_SNAKE_CASE (`isErrorReason`). */
  reason?: string;
  /** The error this one wraps (the standard `Error.cause`); kept locally, never sent. */
  cause?: unknown;
}

/**
 * The error a failed call ends with, on both sides of the wire.
 *
 * A handler that throws an `RpcError` sends its code, message, metadata and reason to the caller
 * unchanged; any other thrown value reaches the caller as `INTERNAL`. A client call rejects with an
 * `RpcError` for every failure: remote status, deadline, cancellation, or a broken connection
 * (`UNAVAILABLE`). The errors svrkit raises itself come from its catalogue (framework/errors.ts)
 * and carry the entry's name in `reason`.
 */
export class RpcError extends Error {
  /** The gRPC status code. Never `OK`. */
  readonly code: Status;
  /** Metadata the server attached to the failure (empty when none). */
  readonly metadata: Metadata;
  /**
   * True when the call provably never reached a handler: the client never sent it (no connection
   * could be made), or the server refused it before processing (overload rejection, GOAWAY).
   * Such a call is safe to retry elsewhere even when its method is not idempotent. Only the
   * client sets this; a server never forwards it from a handler's error.
   */
  readonly notProcessed: boolean;
  /**
   * Why the call failed, finer than the status: the name of the error's catalogue entry,
   * UPPER_SNAKE_CASE (the `reason` of google.rpc.ErrorInfo), e.g. `'CHANNEL_CLOSED'`,
   * `'UNKNOWN_METHOD'`, `'DEADLINE_BEFORE_CALL'`. Every error svrkit raises has one (the list:
   * `errors` in framework/errors.ts); it travels on the wire (`r` in the status header), so a
   * caller also sees the reason of an error the server raised. Undefined for an error made
   * without one: a handler's own `new RpcError(code, message)`, a non-RpcError turned into
   * `INTERNAL` or `CANCELLED` (`toRpcError`), or a reply from a peer that sent none.
   */
  readonly reason: string | undefined;
  /** Marks svrkit errors so that `instanceof RpcError` holds across two copies of svrkit in one process. */
  readonly [RPC_ERROR_BRAND] = true;

  /**
   * `err instanceof RpcError` is true for an RpcError made by any copy of svrkit loaded in the
   * process (say, the globally installed CLI's and a project's own), not only this module's.
   */
  static override [Symbol.hasInstance](value: unknown): boolean {
    if (this !== RpcError) return Function.prototype[Symbol.hasInstance].call(this, value);
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[RPC_ERROR_BRAND] === true;
  }

  /**
   * @param code - the status code; `Status.OK` is not a failure and is turned into `UNKNOWN`.
   * @param message - human-readable detail, sent to the caller as is.
   * @param metadata - optional key/value pairs sent along with the status.
   * @param options - `notProcessed`, `reason` (see the properties) and `cause` (the standard
   *   `Error.cause`: the error this one wraps; never sent).
   * @throws TypeError when `options.reason` is not UPPER_SNAKE_CASE (see `isErrorReason`).
   */
  constructor(code: Status, message: string, metadata: Metadata = {}, options?: RpcErrorOptions) {
    super(message, options !== undefined && 'cause' in options ? { cause: options.cause } : undefined);
    this.name = 'RpcError';
    this.code = code === Status.OK ? Status.UNKNOWN : code;
    this.metadata = metadata;
    this.notProcessed = options?.notProcessed === true;
    const reason = options?.reason;
    if (reason !== undefined && !isErrorReason(reason)) {
      throw new TypeError(`RpcError reason must be UPPER_SNAKE_CASE (2-63 characters, e.g. 'KEY_NOT_FOUND'), got ${JSON.stringify(reason)}`);
    }
    this.reason = reason;
  }

  /** The status name, e.g. `'DEADLINE_EXCEEDED'`. */
  get codeName(): string {
    return statusName(this.code);
  }

  override toString(): string {
    return `RpcError: ${statusName(this.code)}: ${this.message}`;
  }
}

/**
 * Turns any thrown value into an `RpcError`: an `RpcError` passes through; an `AbortError` from a
 * cancelled signal becomes `CANCELLED`; anything else becomes `fallback` (default `INTERNAL`)
 * with the value's message. A wrapped value is kept as the result's `cause` (ES2022
 * `Error.cause`, local only: the wire carries code and message). The result has no `reason`:
 * the failure is the thrower's, not one of the catalogue's.
 * @param err - the thrown value.
 * @param fallback - the status of a value that is neither an RpcError nor an AbortError.
 * @returns `err` itself when it is an RpcError, else a new RpcError whose `cause` is `err`.
 */
export function toRpcError(err: unknown, fallback: Status = Status.INTERNAL): RpcError {
  if (err instanceof RpcError) return err;
  if (err instanceof Error) {
    if (err.name === 'AbortError') return new RpcError(Status.CANCELLED, err.message || 'cancelled', {}, { cause: err });
    return new RpcError(fallback, err.message || err.name, {}, { cause: err });
  }
  return new RpcError(fallback, String(err), {}, { cause: err });
}
