/**
 * Helpers that start real `svrkit` processes (`node bin/svrkit.js ...`) for CLI tests.
 *
 * Every process started here is tracked until it exits; call `stopAllSvrkit()` in an `afterAll`
 * so that a failed test never leaves a process behind (a last-resort `exit` hook kills any that
 * remain when the test worker itself exits).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root, found from this file's location (test/support/processes.ts). */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The `svrkit` command's entry point (runs the compiled CLI in dist/; `npm run build` first). */
export const svrkitBin = path.join(repoRoot, 'bin', 'svrkit.js');

/** How a process ended: its exit code, or the signal that killed it. */
export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A `svrkit` process that printed its serving line. */
export interface SvrkitProcess {
  /** The address it serves on, `host:port`, as printed in its serving line. */
  readonly address: string;
  /** The service names from its serving line, e.g. `['helloworld.Greeter']`. */
  readonly services: string[];
  /** The child process. */
  readonly process: ChildProcess;
  /** Everything the process wrote so far: stdout and stderr separately. */
  output(): { stdout: string; stderr: string };
  /**
   * Sends `signal` (unless the process already exited) and waits for it to exit.
   * @param signal - default `'SIGTERM'`.
   * @param timeoutMs - how long to wait before killing it with SIGKILL and rejecting (default 15000).
   * @returns its exit code and signal.
   * @throws Error (rejection) when it did not exit within `timeoutMs`; it has been SIGKILLed then.
   */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<ExitStatus>;
  /** Resolves when the process exits (all its output collected). */
  readonly exited: Promise<ExitStatus>;
}

/** The outcome of a `svrkit` command run to completion. */
export interface RunResult extends ExitStatus {
  stdout: string;
  stderr: string;
}

/** Options of `startSvrkit` and `runSvrkit`. */
export interface SpawnOptions {
  /** Extra environment variables (merged over this process's environment). */
  env?: NodeJS.ProcessEnv;
  /** Working directory; default the repository root. */
  cwd?: string;
  /** Time allowed: to print the serving line (`startSvrkit`, default 20000) or to finish (`runSvrkit`, default 30000). */
  timeoutMs?: number;
}

/** Processes started and not yet exited. */
const live = new Set<ChildProcess>();

process.once('exit', () => {
  // Last resort only: tests stop their processes themselves (stop() / stopAllSvrkit()).
  for (const child of live) child.kill('SIGKILL');
});

/** The serving line printed by `svrkit run`: `svrkit: serving <names> on <host:port> (pid N)`. */
const SERVING_LINE = /^svrkit: serving (.+) on (\S+) \(pid (\d+)\)$/m;

interface Tracked {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<ExitStatus>;
}

function spawnSvrkit(args: string[], options: SpawnOptions): Tracked {
  const child = spawn(process.execPath, [svrkitBin, ...args], {
    cwd: options.cwd ?? repoRoot,
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise<ExitStatus>((resolve) => {
    let spawnError: Error | undefined;
    child.once('error', (err) => {
      // Spawn failure: 'close' still follows, with code null or -2.
      spawnError = err;
      stderr += `\n[spawn error: ${err.message}]`;
    });
    child.once('close', (code, signal) => {
      live.delete(child);
      resolve({ code: spawnError !== undefined && code === null ? -1 : code, signal });
    });
  });
  return { child, stdout: () => stdout, stderr: () => stderr, exited };
}

function describeRun(args: string[], stdout: string, stderr: string): string {
  return `svrkit ${args.join(' ')}\n--- stdout ---\n${stdout}\n--- stderr ---\n${stderr}`;
}

/**
 * Starts `svrkit <args>` (typically `run <module> --port 0`) and waits until it prints its serving
 * line.
 * @param args - the command line after `svrkit`.
 * @param env - extra environment variables, merged over this process's.
 * @param options - working directory and start-up timeout.
 * @returns the running process and the address it serves on.
 * @throws Error (rejection) when the process exits before serving or does not serve within the
 *   timeout (it is killed then); the message includes its stdout and stderr.
 */
export async function startSvrkit(args: string[], env?: NodeJS.ProcessEnv, options: SpawnOptions = {}): Promise<SvrkitProcess> {
  const t = spawnSvrkit(args, { ...options, env: { ...options.env, ...env } });
  const timeoutMs = options.timeoutMs ?? 20_000;
  const match = await new Promise<RegExpExecArray>((resolve, reject) => {
    const onData = (): void => {
      const m = SERVING_LINE.exec(t.stdout());
      if (m !== null) {
        cleanup();
        resolve(m);
      }
    };
    const timer = setTimeout(() => {
      cleanup();
      t.child.kill('SIGKILL');
      reject(new Error(`svrkit did not print its serving line within ${timeoutMs} ms\n${describeRun(args, t.stdout(), t.stderr())}`));
    }, timeoutMs);
    const cleanup = (): void => {
      clearTimeout(timer);
      t.child.stdout!.off('data', onData);
    };
    t.child.stdout!.on('data', onData);
    void t.exited.then((status) => {
      cleanup();
      // Settling twice is a no-op: this only matters when the line never came.
      reject(
        new Error(
          `svrkit exited (code ${status.code}, signal ${status.signal}) before serving\n${describeRun(args, t.stdout(), t.stderr())}`,
        ),
      );
    });
  });
  const stop = async (signal: NodeJS.Signals = 'SIGTERM', stopTimeoutMs = 15_000): Promise<ExitStatus> => {
    if (t.child.exitCode === null && t.child.signalCode === null) t.child.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        t.child.kill('SIGKILL');
        reject(new Error(`svrkit did not exit within ${stopTimeoutMs} ms of ${signal}\n${describeRun(args, t.stdout(), t.stderr())}`));
      }, stopTimeoutMs);
    });
    try {
      return await Promise.race([t.exited, timedOut]);
    } finally {
      clearTimeout(timer);
    }
  };
  return {
    address: match[2]!,
    services: match[1]!.split(',').map((s) => s.trim()),
    process: t.child,
    output: () => ({ stdout: t.stdout(), stderr: t.stderr() }),
    stop,
    exited: t.exited,
  };
}

/**
 * Runs `svrkit <args>` to completion.
 * @param args - the command line after `svrkit`.
 * @param options - environment, working directory, and the time allowed (default 30000 ms).
 * @returns its exit code and signal, stdout and stderr.
 * @throws Error (rejection) when it does not finish in time (it is killed then).
 */
export async function runSvrkit(args: string[], options: SpawnOptions = {}): Promise<RunResult> {
  const t = spawnSvrkit(args, options);
  const timeoutMs = options.timeoutMs ?? 30_000;
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      t.child.kill('SIGKILL');
      reject(new Error(`svrkit did not finish within ${timeoutMs} ms\n${describeRun(args, t.stdout(), t.stderr())}`));
    }, timeoutMs);
  });
  try {
    const status = await Promise.race([t.exited, timedOut]);
    return { ...status, stdout: t.stdout(), stderr: t.stderr() };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Kills every process started by this module that is still running (SIGKILL) and waits for them
 * to exit. For `afterAll`; tests that care how a process ends stop it themselves first.
 */
export async function stopAllSvrkit(): Promise<void> {
  const waits = [...live].map(
    (child) =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) {
          live.delete(child);
          resolve();
          return;
        }
        child.once('close', () => resolve());
        child.kill('SIGKILL');
      }),
  );
  await Promise.all(waits);
}

/**
 * SIGKILLs every child in `children` that is still running and waits until each has exited.
 * @param children - child processes (exited ones are skipped).
 */
export async function killAll(children: Iterable<ChildProcess>): Promise<void> {
  await Promise.all(
    [...children].map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once('close', () => resolve());
          child.kill('SIGKILL');
        }),
    ),
  );
}
