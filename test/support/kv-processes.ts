/**
 * Real `svrkit` processes for tests: spawn `node bin/svrkit.js ...`, wait for a PaxosKV replica's
 * serving line, run a command to completion, stop what was started. Every child is tracked until
 * it exits; `killStarted()` (for afterAll) kills any that are left. Also free loopback ports.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { RpcError, Status } from '../../framework/wire/status.js';
import type { HistoryRecorder, KvInput } from './linearizability.js';
import { killAll } from './processes.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BIN = path.join(ROOT, 'bin', 'svrkit.js');

/** A free port on 127.0.0.1 (the given one if free; 0 picks any). @throws when `port` is taken. */
export async function freePort(port = 0): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.listen(port, '127.0.0.1', resolve);
  });
  const got = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return got;
}

/** `n` distinct free ports. */
export async function freePorts(n: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < n) ports.add(await freePort());
  return [...ports];
}

/** A base port with `n` consecutive free ports (base, base+1, ...). */
export async function freePortRange(n: number): Promise<number> {
  for (let tries = 0; tries < 50; tries++) {
    const base = await freePort();
    if (base + n - 1 > 65535) continue;
    let ok = true;
    for (let i = 1; i < n && ok; i++) ok = await freePort(base + i).then(() => true, () => false);
    if (ok) return base;
  }
  throw new Error(`no ${n} consecutive free ports found`);
}

/** How a process ended. */
export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A started process and what it printed so far. */
export interface Proc {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  exited: Promise<Exit>;
}

/** A finished command and its output. */
export interface Run extends Exit {
  stdout: string;
  stderr: string;
}

const live = new Set<ChildProcess>();

process.once('exit', () => {
  // Last resort only (a crashed worker): the tests stop what they start.
  for (const child of live) child.kill('SIGKILL');
});

/** Starts `svrkit <args>` (stdin from `stdin` when given), tracked until it exits. */
export function spawnSvrkit(args: string[], stdin?: string | Uint8Array): Proc {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, stdio: [stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
  live.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  if (stdin !== undefined) child.stdin!.end(stdin);
  const exited = new Promise<Exit>((resolve) => {
    child.once('error', (err) => (stderr += `\n[spawn error: ${err.message}]`));
    child.once('close', (code, signal) => {
      live.delete(child);
      resolve({ code, signal });
    });
  });
  return { child, stdout: () => stdout, stderr: () => stderr, exited };
}

/** Runs `svrkit <args>` to completion (SIGKILLed and rejected after `timeoutMs`). */
export async function runSvrkit(args: string[], options: { stdin?: string | Uint8Array; timeoutMs?: number } = {}): Promise<Run> {
  const p = spawnSvrkit(args, options.stdin);
  const timeoutMs = options.timeoutMs ?? 30_000;
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      p.child.kill('SIGKILL');
      reject(new Error(`svrkit ${args.join(' ')} did not finish within ${timeoutMs} ms\nstdout: ${p.stdout()}\nstderr: ${p.stderr()}`));
    }, timeoutMs);
  });
  try {
    const e = await Promise.race([p.exited, late]);
    return { ...e, stdout: p.stdout(), stderr: p.stderr() };
  } finally {
    clearTimeout(timer);
  }
}

/** A PaxosKV replica's serving line: member id, address, pid. */
export const SERVING = /^svrkit: paxoskv replica (\d+) .*serving on (\S+) \(pid (\d+)\)/gm;

/** A PaxosKV replica's line once it votes (after its start check, or its rejoin): member id, incarnation. */
export const VOTING = /^svrkit: paxoskv replica (\d+)(?: of group \d+)? voting \(incarnation (\d+), epoch (\d+)\)/gm;

/** Waits until `p` has printed `count` voting lines (see VOTING); as waitServing otherwise. */
export function waitVoting(p: Proc, what: string, count = 1, timeoutMs = 20_000): Promise<RegExpExecArray[]> {
  return waitServing(p, what, count, timeoutMs, VOTING);
}

/**
 * Waits until `p` has printed `count` serving lines (or lines matching `pattern`); rejects (after
 * SIGKILLing it) if it exits first or takes too long.
 */
export async function waitServing(p: Proc, what: string, count = 1, timeoutMs = 20_000, pattern: RegExp = SERVING): Promise<RegExpExecArray[]> {
  const lines = (): RegExpExecArray[] => [...p.stdout().matchAll(pattern)];
  return new Promise<RegExpExecArray[]>((resolve, reject) => {
    const check = (): void => {
      const found = lines();
      if (found.length >= count) done(() => resolve(found));
    };
    const timer = setTimeout(() => {
      p.child.kill('SIGKILL');
      done(() => reject(new Error(`${what} did not print ${count} lines matching ${pattern.source} within ${timeoutMs} ms\nstdout: ${p.stdout()}\nstderr: ${p.stderr()}`)));
    }, timeoutMs);
    const done = (f: () => void): void => {
      clearTimeout(timer);
      p.child.stdout!.off('data', check);
      f();
    };
    p.child.stdout!.on('data', check);
    void p.exited.then((e) => done(() => reject(new Error(`${what} exited (${e.code ?? e.signal}) before serving\nstdout: ${p.stdout()}\nstderr: ${p.stderr()}`))));
    check();
  });
}

/** Sends `signal` and waits for the exit (SIGKILL and reject after `timeoutMs`). */
export async function stopProc(p: Proc, signal: NodeJS.Signals, timeoutMs = 15_000): Promise<Exit> {
  if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill(signal);
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      p.child.kill('SIGKILL');
      reject(new Error(`process did not exit within ${timeoutMs} ms of ${signal}\nstdout: ${p.stdout()}\nstderr: ${p.stderr()}`));
    }, timeoutMs);
  });
  try {
    return await Promise.race([p.exited, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Whether a pid is alive. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}


/** Kills every child still running (for afterAll) and waits until each has exited. */
export async function killStarted(): Promise<void> {
  await killAll(live);
}

/** What {@link recordFailure} recorded for a PaxosKV client call that threw. */
export interface RecordedFailure {
  /** `failed`: a compare-and-set's FAILED_PRECONDITION; `discarded`: a get that did not answer; `unknown`: anything else. */
  recorded: 'failed' | 'discarded' | 'unknown';
  /** The key's version a FAILED_PRECONDITION reported (metadata `x-version`), when it did. */
  version?: bigint;
  /** Set for an error no PaxosKV call should raise under these faults (the test should fail). */
  unexpected?: string;
}

/**
 * Records a PaxosKV client call that threw in a linearizability history: a compare-and-set's
 * FAILED_PRECONDITION as that outcome, a get that did not answer (UNAVAILABLE, DEADLINE_EXCEEDED,
 * CANCELLED) as nothing, and anything else as unknown (it may or may not have happened).
 * @param history - the recorder.
 * @param id - the operation's id from `history.invoke`.
 * @param input - the operation.
 * @param err - what the call threw.
 * @param now - the current time, on the history's clock.
 * @returns what was recorded (see RecordedFailure).
 */
export function recordFailure(history: HistoryRecorder, id: number, input: KvInput, err: unknown, now: number): RecordedFailure {
  const code = err instanceof RpcError ? err.code : undefined;
  if (input.kind === 'cas' && code === Status.FAILED_PRECONDITION) {
    history.complete(id, { failed: 'FAILED_PRECONDITION' }, now);
    const v = err instanceof RpcError ? err.metadata['x-version'] : undefined;
    return { recorded: 'failed', ...(v !== undefined && /^\d+$/.test(v) ? { version: BigInt(v) } : {}) };
  }
  if (input.kind === 'get' && (code === Status.UNAVAILABLE || code === Status.DEADLINE_EXCEEDED || code === Status.CANCELLED)) {
    history.discard(id);
    return { recorded: 'discarded' };
  }
  history.unknown(id);
  if (code !== Status.UNKNOWN && code !== Status.UNAVAILABLE && code !== Status.DEADLINE_EXCEEDED && code !== Status.CANCELLED) {
    return { recorded: 'unknown', unexpected: `${input.kind}: ${err instanceof RpcError ? `${err.codeName}: ${err.message}` : String(err)}` };
  }
  return { recorded: 'unknown' };
}
