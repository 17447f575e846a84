/**
 * Waiting for a condition in tests without assuming how fast a loaded machine is: poll until it
 * holds, with a generous deadline.
 */
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Calls `probe` every `intervalMs` until it returns a value for which `done` is true.
 * @param probe - produces the current value (may be async; a throw counts as "not yet").
 * @param done - the condition; default: truthy.
 * @param timeoutMs - deadline (default 20000 ms).
 * @returns the first value satisfying `done`.
 * @throws Error (rejection) after `timeoutMs`, describing `what`, the last value and the last error.
 */
export async function eventually<T>(
  what: string,
  probe: () => T | Promise<T>,
  done: (value: T) => boolean = (v) => Boolean(v),
  timeoutMs = 20_000,
  intervalMs = 25,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  let lastError: unknown;
  for (;;) {
    try {
      last = await probe();
      lastError = undefined;
      if (done(last)) return last;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}; last value: ${JSON.stringify(last)}` +
          (lastError === undefined ? '' : `; last error: ${(lastError as Error)?.message ?? String(lastError)}`),
      );
    }
    await sleep(intervalMs);
  }
}

/** Records what a watch reports: every list (`lists`) and every error (`errors`). */
export class WatchLog<T> {
  readonly lists: T[][] = [];
  readonly errors: Error[] = [];
  readonly onInstances = (list: readonly T[]): void => void this.lists.push([...list]);
  readonly onError = (error: Error): void => void this.errors.push(error);
  /** The last list reported, or undefined before the first. */
  get latest(): T[] | undefined {
    return this.lists[this.lists.length - 1];
  }
}
