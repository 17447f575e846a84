/**
 * A cross-process mutex for test files: the tests that assert on timings (a call reaching a new
 * instance within 1 s, no 100 ms without a write) and the tests that keep a core busy for seconds
 * (load tests, the simulator, the compiler) take the same named lock. Within one `npm test` they
 * already run alone (vitest.config.ts's `timing` project); the lock keeps such files of two
 * vitest runs in one checkout (a long simulator run and a membership test) apart. A holder
 * must let timers run at least every few seconds (the lock is refreshed from one). A lock file
 * under test/.tmp, held with proper-lockfile (the library the file registry uses), which frees it
 * when its holder dies.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import lockfile from 'proper-lockfile';

const DIR = fileURLToPath(new URL('../.tmp', import.meta.url));

/**
 * Runs `fn` while holding the lock `name`; waits for it (polling, up to `waitMs`) first.
 * @param name - the lock's name (a file name under test/.tmp).
 * @param fn - the work to do alone.
 * @param waitMs - the longest wait for the lock (ms). Default 120,000.
 * @returns what `fn` returns.
 * @throws the error of `fn`, or proper-lockfile's ELOCKED error when the wait ran out.
 */
export async function exclusively<T>(name: string, fn: () => Promise<T>, waitMs = 120_000): Promise<T> {
  mkdirSync(DIR, { recursive: true });
  const file = path.join(DIR, `${name}.lock-target`);
  writeFileSync(file, '', { flag: 'a' });
  const release = await lockfile.lock(file, { stale: 10_000, update: 2_000, retries: { retries: Math.ceil(waitMs / 250), minTimeout: 250, maxTimeout: 250, factor: 1 } });
  try {
    return await fn();
  } finally {
    await release().catch(() => undefined);
  }
}
