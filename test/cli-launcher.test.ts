/**
 * `svrkit run` started through npm stops when its launcher goes away (framework/cli/launcher.ts):
 * npm forwards a signal to the shell it runs commands with, never to the server below it.
 *
 * - `launchChain`: which processes are watched, from the environment and the process table.
 * - Real processes under a stand-in for npm (a node process titled `npm exec svrkit` that runs
 *   `sh -c '<command>'` and forwards SIGTERM to that shell only, as npm does): SIGTERM to it stops
 *   the server; a server started in the background of the script, or with
 *   SVRKIT_NO_LAUNCHER_WATCH=1, keeps serving (then this test stops it). The whole path through
 *   the real `npx` is in test/package/new-app.test.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { launchChain, type ProcessTable } from '../framework/cli/launcher.js';
import { alive } from './support/kv-processes.js';
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
    // npx: npm's title, its shell running one command, and the server below.
    50: { parent: 1, cmd: ['npm exec svrkit run src/greeter.ts'] },
    100: { parent: 50, cmd: ['sh', '-c', "'svrkit' run src/greeter.ts"] },
    200: { parent: 50, cmd: ['/usr/bin/node', 'x.js'] },
    // npm before it set its title.
    60: { parent: 1, cmd: ['/usr/bin/node', '/usr/lib/node_modules/npm/bin/npm-cli.js', 'start'] },
    110: { parent: 60, cmd: ['/bin/sh', '-c', 'svrkit run src/greeter.ts --port 7000'] },
    // An npm script that starts the server in the background, or several commands.
    120: { parent: 50, cmd: ['sh', '-c', 'svrkit run mock.ts & sleep 4'] },
    130: { parent: 50, cmd: ['sh', '-c', 'svrkit run a.ts; echo done'] },
    // A shell whose parent is not npm (a launcher script of the user's).
    70: { parent: 1, cmd: ['/usr/bin/node', 'scripts/dev.js'] },
    140: { parent: 70, cmd: ['sh', '-c', 'svrkit run src/greeter.ts'] },
  });
  const npx = { npm_command: 'exec' };

  it('watches nothing unless the environment says npm', () => {
    expect(launchChain({}, 100, procs)).toEqual([]);
    expect(launchChain({ HOME: '/root' }, 100, procs)).toEqual([]);
  });

  it("watches npm's one-command shell and npm above it (npx, npm scripts)", () => {
    expect(launchChain(npx, 100, procs)).toEqual([100, 50]);
    expect(launchChain({ npm_lifecycle_event: 'start' }, 110, procs)).toEqual([110, 60]);
  });

  it('watches npm alone when it is the parent', () => {
    expect(launchChain(npx, 50, procs)).toEqual([50]);
    expect(launchChain(npx, 60, procs)).toEqual([60]);
  });

  it('does not watch a server an npm script starts in the background or among other commands', () => {
    expect(launchChain(npx, 120, procs)).toEqual([]);
    expect(launchChain(npx, 130, procs)).toEqual([]);
  });

  it('does not watch a parent that is not npm, nor a shell whose parent is not npm', () => {
    expect(launchChain(npx, 200, procs)).toEqual([]);
    expect(launchChain(npx, 70, procs)).toEqual([]);
    expect(launchChain(npx, 140, procs)).toEqual([]);
    expect(launchChain(npx, 999, procs)).toEqual([]);
    expect(launchChain(npx, 1, procs)).toEqual([]);
  });

  it('SVRKIT_NO_LAUNCHER_WATCH=1 turns the watch off', () => {
    expect(launchChain({ ...npx, SVRKIT_NO_LAUNCHER_WATCH: '1' }, 100, procs)).toEqual([]);
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

async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return cond();
}

/**
 * A stand-in for npm: a node process titled `npm exec svrkit` that runs `sh -c '<svrkit run ...>'`
 * and, as npm's signal-manager does, forwards SIGTERM to that shell only. Resolves with the
 * server's pid once it serves.
 * @param script - the shell's `-c` script; `$SVRKIT` stands for `node bin/svrkit.js`.
 */
async function serveUnderNpm(script: string, env: NodeJS.ProcessEnv): Promise<{ npm: ChildProcess; pid: number; output: () => string }> {
  const clean: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k)) clean[k] = v;
  const svrkit = `"${process.execPath}" "${svrkitBin}"`;
  const fakeNpm = [
    "process.title = 'npm exec svrkit';",
    "const { spawn } = require('node:child_process');",
    "const sh = spawn('/bin/sh', ['-c', process.env.SCRIPT], { stdio: 'inherit' });",
    "process.on('SIGTERM', () => sh.kill('SIGTERM'));",
    'sh.on(\'exit\', () => setTimeout(() => process.exit(0), 200));',
  ].join('\n');
  const npm = spawn(process.execPath, ['-e', fakeNpm, '--', 'padding so that the process title fits in argv'], {
    cwd: repoRoot,
    env: { ...clean, ...env, SCRIPT: script.replaceAll('$SVRKIT', svrkit) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  started.push(npm);
  let out = '';
  npm.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  npm.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  let pid = 0;
  const ok = await waitFor(() => {
    const m = /serving .* \(pid (\d+)\)/.exec(out);
    if (m !== null) pid = Number(m[1]);
    return pid > 0;
  }, 30_000);
  if (!ok) throw new Error(`the server did not start:\n${out}`);
  serverPids.push(pid);
  return { npm, pid, output: () => out };
}

describe('svrkit run under npm', () => {
  it("SIGTERM to npm (forwarded to its shell only) stops the server gracefully", async () => {
    const { npm, pid, output } = await serveUnderNpm('$SVRKIT run test/support/probe.ts --port 0', { npm_command: 'exec' });
    npm.kill('SIGTERM');
    expect(await waitFor(() => !alive(pid), 10_000)).toBe(true);
    expect(output()).toMatch(/svrkit: the shell npm started \(pid \d+\) exited: closing/);
    expect(output()).toMatch(/svrkit: closed/);
  }, 60_000);

  it('a server an npm script starts in the background keeps serving after the script ends', async () => {
    const { pid } = await serveUnderNpm('$SVRKIT run test/support/probe.ts --port 0 & sleep 1', { npm_lifecycle_event: 'pretest' });
    await new Promise((r) => setTimeout(r, 2500));
    expect(alive(pid)).toBe(true);
    process.kill(pid, 'SIGTERM');
    expect(await waitFor(() => !alive(pid), 10_000)).toBe(true);
  }, 60_000);

  it('SVRKIT_NO_LAUNCHER_WATCH=1: the server keeps serving after npm is gone', async () => {
    const { npm, pid } = await serveUnderNpm('$SVRKIT run test/support/probe.ts --port 0', { npm_command: 'exec', SVRKIT_NO_LAUNCHER_WATCH: '1' });
    npm.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 2000));
    expect(alive(pid)).toBe(true);
    process.kill(pid, 'SIGTERM');
    expect(await waitFor(() => !alive(pid), 10_000)).toBe(true);
  }, 60_000);
});
