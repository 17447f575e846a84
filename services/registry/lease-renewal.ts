/**
 * A registration's lease kept alive: the write that stores it, repeated every TTL/3 until the
 * registration ends. Shared by the `paxoskv://` registry and the `registry://` client, which
 * differ only in what one write does.
 */
import { withoutCall, type Instance, type RegisterOptions, type Registration } from '../../framework/index.js';

/** The longest delay Node's timers take (ms); longer ones fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Renews a stored registration every `ttlMs`/3 (at least every 10 ms, at most every 2^31-1 ms).
 * A failed renewal is reported to `options.onError` once per distinct message (again only after
 * one succeeded), named with the registry's URI and the instance; the lease runs on meanwhile.
 * @param uri - the registry's URI (for messages).
 * @param instance - the registered instance.
 * @param ttlMs - the lease's TTL (ms).
 * @param write - stores the lease again (the same as the first write).
 * @param remove - removes the lease (what `deregister` does after stopping the renewals).
 * @param options - the registration's options (`onError`).
 * @param stops - the registry's set of stop functions (for its `close()`); the renewal adds its own and removes it when it stops.
 * @returns the registration: `deregister()` stops the renewals and runs `remove` (once).
 */
export function keepLease(
  uri: string,
  instance: Instance,
  ttlMs: number,
  write: () => Promise<void>,
  remove: () => Promise<void>,
  options: RegisterOptions,
  stops: Set<() => void>,
): Registration {
  let stopped = false;
  let lastError: string | undefined;
  const timer = withoutCall(() =>
    setInterval(() => {
      write().then(
        () => (lastError = undefined),
        (err: Error) => {
          if (stopped || err.message === lastError) return;
          lastError = err.message;
          options.onError?.(new Error(`registry ${uri}: renewing ${instance.service} at ${instance.address}: ${err.message}`));
        },
      );
    }, Math.min(MAX_TIMER_MS, Math.max(10, Math.floor(ttlMs / 3)))),
  );
  timer.unref();
  const stop = (): void => {
    stopped = true;
    clearInterval(timer);
    stops.delete(stop);
  };
  stops.add(stop);
  return {
    instance,
    deregister: async () => {
      if (stopped) return;
      stop();
      await remove();
    },
  };
}
