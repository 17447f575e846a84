/**
 * The EncodeError a call throws, for tests of `encodeMessage` and of generated code's encoding.
 */
import { expect } from 'vitest';
import { EncodeError } from '../../framework/wire/encode.js';

/**
 * Runs `fn` and returns the EncodeError it throws.
 * @param fn - the code that should throw.
 * @returns the error.
 * @throws Error when `fn` throws nothing; fails the test when it throws something else.
 */
export function encodeError(fn: () => unknown): EncodeError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(EncodeError);
    return err as EncodeError;
  }
  throw new Error('expected an EncodeError, nothing was thrown');
}
