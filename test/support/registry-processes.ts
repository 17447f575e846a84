/**
 * Starts `test/support/registry-child.ts` processes (real processes that register instances in a
 * registry and keep their leases alive) and tracks them until they exit; `stopRegistryChildren()`
 * (for afterAll) kills any left.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { killAll } from './processes.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CHILD = path.join(ROOT, 'test', 'support', 'registry-child.ts');

/** A running registering process. */
export interface RegistryChild {
  readonly process: ChildProcess;
  /** What it printed so far. */
  output(): { stdout: string; stderr: string };
  /** Resolves with its exit code (null when killed by a signal) once it exited. */
  readonly exited: Promise<number | null>;
}

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

/**
 * Starts a child that registers `instances` (`service@host:port` each) in `uri` with a lease of
 * `ttlMs`, and waits until it printed `registered <n>`.
 * @param timeoutMs - time allowed to register (default 30000).
 * @throws Error (rejection) with its output when it exits first or takes too long (it is killed).
 */
export async function startRegistryChild(uri: string, ttlMs: number, instances: string[], timeoutMs = 30_000): Promise<RegistryChild> {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, uri, String(ttlMs), ...instances], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise<number | null>((resolve) => {
    child.once('error', (err) => (stderr += `\n[spawn error: ${err.message}]`));
    child.once('close', (code) => {
      live.delete(child);
      resolve(code);
    });
  });
  const describe = (): string => `--- stdout ---\n${stdout}\n--- stderr ---\n${stderr}`;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`registry child did not register within ${timeoutMs} ms\n${describe()}`));
    }, timeoutMs);
    const onData = (): void => {
      if (/^registered \d+$/m.test(stdout)) {
        clearTimeout(timer);
        child.stdout!.off('data', onData);
        resolve();
      }
    };
    child.stdout!.on('data', onData);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`registry child exited (code ${code}) before registering\n${describe()}`));
    });
  });
  return { process: child, output: () => ({ stdout, stderr }), exited };
}

/** Kills (SIGKILL) every registry child still running and waits for them to exit. */
export async function stopRegistryChildren(): Promise<void> {
  await killAll(live);
}
