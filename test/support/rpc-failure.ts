/**
 * The RpcError a call fails with, for tests that check refusals by status, reason and message.
 */
import { expect } from 'vitest';
import { RpcError } from '../../framework/index.js';

/**
 * Awaits a call that must fail.
 * @returns its RpcError; the test fails (an expectation) when the call succeeds or fails otherwise.
 */
export async function rpcFailure(p: Promise<unknown>): Promise<RpcError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(RpcError);
  return err as RpcError;
}
