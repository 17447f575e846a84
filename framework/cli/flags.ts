/**
 * Parsers for command-line flag values, shared by the `svrkit` commands (commander's
 * `argParser`): each returns the parsed value or throws `InvalidArgumentError`, which commander
 * reports as a usage error (exit code 1).
 */
import { InvalidArgumentError } from 'commander';

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

/** Collects a repeatable flag's values into an array. */
export function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}
