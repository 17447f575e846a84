/**
 * Shared by the `svrkit` commands: parsers for flag values (commander's `argParser`; each returns
 * the parsed value or throws `InvalidArgumentError`, which commander reports as a usage error with
 * exit code 1) and the one way a command reports failure.
 */
import { InvalidArgumentError } from 'commander';
import type { JsonValue } from '../client/dynamic.js';
import { RpcError, statusName } from '../wire/status.js';

/**
 * A parser for a whole number within [min, max].
 * @param name - the flag's name, for the message.
 * @throws InvalidArgumentError (from the returned parser) for anything else.
 */
export function intOption(name: string, min: number, max: number): (value: string) => number {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\d+$/.test(value.trim()) || n < min || n > max) {
      throw new InvalidArgumentError(`${name} must be a whole number from ${min} to ${max}`);
    }
    return n;
  };
}

/**
 * Parses a positive number of milliseconds.
 * @throws InvalidArgumentError for zero, negatives and non-numbers.
 */
export function positiveMs(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a positive number of milliseconds');
  return n;
}

/**
 * Parses a request given on the command line as JSON.
 * @param text - the argument.
 * @param what - what it is, for the message (default `'request'`).
 * @returns the parsed value.
 * @throws InvalidArgumentError `<what> is not valid JSON: ...` when it is not JSON.
 */
export function parseJsonArgument(text: string, what = 'request'): JsonValue {
  try {
    return JSON.parse(text) as JsonValue;
  } catch (err) {
    throw new InvalidArgumentError(`${what} is not valid JSON: ${(err as Error).message}`);
  }
}

/** Collects a repeatable flag's values into an array. */
export function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/**
 * Reports a command's failure on stderr and sets exit code 1: `ERROR: <STATUS>: <message>` and
 * the error's metadata for an RpcError, `error: <message>` for anything else.
 */
export function reportError(err: unknown): void {
  if (err instanceof RpcError) {
    process.stderr.write(`ERROR: ${statusName(err.code)}: ${err.message}\n`);
    for (const [k, v] of Object.entries(err.metadata)) process.stderr.write(`  ${k}: ${v}\n`);
  } else {
    process.stderr.write(`error: ${(err as Error)?.message ?? String(err)}\n`);
  }
  process.exitCode = 1;
}
