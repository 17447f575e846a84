/**
 * Shared by the `svrkit` commands: parsers for flag values (commander's `argParser`; each returns
 * the parsed value or throws `InvalidArgumentError`, which commander reports as a usage error with
 * exit code 1) and the one way a command reports failure.
 */
import { readFile } from 'node:fs/promises';
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

const DURATION_UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * Parses a duration that carries its unit: a number (whole or decimal) followed by `ms`, `s`, `m`
 * (minutes) or `h`, e.g. `'500ms'` -> 500, `'3s'` -> 3000, `'1.5s'` -> 1500, `'2m'` -> 120000.
 * Surrounding spaces and a space before the unit are allowed; combinations (`1m30s`) are not.
 *
 * A bare number is refused, because it is ambiguous (`--duration 3` once meant 3 ms to svrkit and
 * 3 s to its user): the message asks for a unit.
 *
 * @param text - the text to parse, as given on the command line.
 * @param flag - the flag it came from, named at the start of messages (e.g. `'--duration'`);
 *   default `'duration'`.
 * @returns the duration in milliseconds: finite and > 0.
 * @throws InvalidArgumentError `<flag> <text>: give a unit, e.g. 3s or 500ms` for a bare number;
 *   `<flag> <text>: not a duration; ...` for anything that is not a number with a unit; and
 *   `<flag> <text>: must be greater than zero` for a zero duration.
 */
export function parseDuration(text: string, flag = 'duration'): number {
  const t = String(text).trim();
  if (/^(\d+(\.\d*)?|\.\d+)$/.test(t)) {
    throw new InvalidArgumentError(`${flag} ${t}: give a unit, e.g. ${Number(t)}s or 500ms (units: ms, s, m, h)`);
  }
  const m = /^(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)$/i.exec(t);
  if (m === null) {
    throw new InvalidArgumentError(`${flag} ${t}: not a duration; give a number with a unit ms, s, m or h, e.g. 3s, 500ms, 2m, 1.5s`);
  }
  const ms = Number(m[1]) * DURATION_UNITS[m[2]!.toLowerCase()]!;
  if (!Number.isFinite(ms) || ms <= 0) throw new InvalidArgumentError(`${flag} ${t}: must be greater than zero`);
  return ms;
}

/**
 * A commander parser for a duration flag (see {@link parseDuration}).
 * @param flag - the flag's long name with its dashes, e.g. `'--duration'`, named in messages.
 * @returns a parser returning milliseconds.
 */
export function durationOption(flag: string): (value: string) => number {
  return (value: string): number => parseDuration(value, flag);
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

/**
 * Reads the PEM file a flag names.
 * @param flag - the flag, for the message (`--tls-cert`).
 * @param file - the path.
 * @returns the file's text.
 * @throws InvalidArgumentError naming the flag when it cannot be read or holds no PEM.
 */
export async function pemFile(flag: string, file: string): Promise<string> {
  const text = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw new InvalidArgumentError(`${flag} ${file}: ${err.code ?? err.message}`);
  });
  if (!text.includes('-----BEGIN ')) throw new InvalidArgumentError(`${flag} ${file}: not PEM (no -----BEGIN line)`);
  return text;
}
