/**
 * `svrkit run` started through npm stops when its launcher goes away (framework/cli/launcher.ts):
 * npm forwards a signal to the shell it runs commands with, never to the server below it.
 *
 * - `launchChain`: which processes are watched, from the environment and the process table.
 * - Real processes: `sh -c 'node bin/svrkit.js run ...; true'` (a shell that does not exec its
 *   command, as npm's does not) with npm's environment variable; SIGTERM to the shell stops the
 *   server. Without npm's variable the server is not watched and keeps serving (then this test
 *   stops it). The whole path through `npx` is in test/package/new-app.test.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { launchChain, type ProcessTable } from '../framework/cli/launcher.js';
import { repoRoot, svrkitBin } from './support/processes.js';

function table(procs: Record<number, { parent?: number; cmd?: string[] }>): ProcessTable {
  return {
    parentOf: (pid) => procs[pid]?.parent,
    commandOf: (pid) => procs[pid]?.cmd,
    alive: (pid) => procs[pid] !== undefined,
  };
}

describe('launchChain', () => {
  const procs = table({
    100: { parent: 50, cmd: ['sh', '-c', "'svrkit' run src/greeter.ts"] },
    50: { parent: 1, cmd: ['npm exec svrkit run src/greeter.ts'] },
    200: { parent: 50, cmd: ['/usr/bin/node', 'x.js'] },
  });

  it('watches nothing unless npm started the process', () => {
    expect(launchChain({}, 100, procs)).toEqual([]);
    expect(launchChain({ HOME: '/root' }, 100, procs)).toEqual([]);
  });

  it("watches npm's shell and npm above it (npx, npm scripts)", () => {
    expect(launchChain({ npm_command: 'exec' }, 100, procs)).toEqual([100, 50]);
    expect(launchChain({ npm_lifecycle_event: 'start' }, 100, procs)).toEqual([100, 50]);
  });

  it('watches only the parent when it is not a shell', () => {
    expect(launchChain({ npm_command: 'exec' }, 200, procs)).toEqual([200]);
  });

  it('watches nothing when already orphaned (parent 1) or when the parent cannot be read', () => {
    expect(launchChain({ npm_command: 'exec' }, 1, procs)).toEqual([]);
    expect(launchChain({ npm_command: 'exec' }, 999, procs)).toEqual([999]);
  });
});

const started: ChildProcess[] = [];
const serverPids: number[] = [];

afterAll(() => {
  for (const c of started) if (c.exitCode === null) c.kill('SIGKILL');
  for (const pid of serverPids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return cond();
}

/** `sh -c 'node bin/svrkit.js run test/support/probe.ts --port 0; true'`; resolves with the server's pid once it serves. */
async function serveUnderShell(env: NodeJS.ProcessEnv): Promise<{ shell: ChildProcess; pid: number; output: () => string }> {
  const clean: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k)) clean[k] = v;
  const shell = spawn('/bin/sh', ['-c', `"${process.execPath}" "${svrkitBin}" run test/support/probe.ts --port 0; true`], {
    cwd: repoRoot,
    env: { ...clean, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  started.push(shell);
  let out = '';
  shell.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  shell.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  let pid = 0;
  const ok = await waitFor(() => {
    const m = /\(pid (\d+)\)/.exec(out);
    if (m !== null) pid = Number(m[1]);
    return pid > 0;
  }, 30_000);
  if (!ok) throw new Error(`the server did not start:\n${out}`);
  serverPids.push(pid);
  return { shell, pid, output: () => out };
}

describe('svrkit run under a launcher shell', () => {
  it("started by npm: SIGTERM to npm's shell stops the server gracefully", async () => {
    const { shell, pid, output } = await serveUnderShell({ npm_command: 'exec' });
    expect(pid).not.toBe(shell.pid);
    shell.kill('SIGTERM');
    expect(await waitFor(() => !alive(pid), 10_000)).toBe(true);
    expect(output()).toMatch(/svrkit: the shell npm started \(pid \d+\) exited: closing/);
  }, 60_000);

  it('not started by npm: the server is not watched and keeps serving', async () => {
    const { shell, pid } = await serveUnderShell({});
    shell.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 1500));
    expect(alive(pid)).toBe(true);
    process.kill(pid, 'SIGTERM');
    expect(await waitFor(() => !alive(pid), 10_000)).toBe(true);
  }, 60_000);
});
