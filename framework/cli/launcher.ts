/**
 * The launcher watch: a server started through npm (`npx svrkit run`, an npm script) stops when
 * the npm that launched it goes away, so that no orphan keeps serving.
 *
 * npm runs a command through a shell (`npm exec` -> `sh -c 'svrkit' run ...` -> node). A signal a
 * supervisor sends to npm's pid is forwarded to that shell only (npm's run-script
 * signal-manager.js), never to the node process below it: on SIGTERM the shell dies, and the
 * server would be re-parented to init and keep serving. So when npm launched this process in the
 * foreground (its parent is npm, or a shell running just this command whose parent is npm; see
 * {@link launchChain}), the process watches that chain and stops as if it had received SIGTERM
 * once any of them is gone. A server started any other way (a terminal, systemd, `nohup ... &`, in
 * the background of an npm script, by a script of its own) is not watched: there an exiting parent
 * is no reason to stop. `SVRKIT_NO_LAUNCHER_WATCH=1` turns the watch off.
 *
 * A SIGINT sent to npm's pid alone cannot be seen from here: npm forwards it to the shell, and
 * dash (Debian's `sh`) waits for its child instead of passing it on. Ctrl-C in a terminal signals
 * the whole process group, this process included, and works; with `script-shell=bash` in the
 * project's .npmrc, bash replaces itself with the command, so npm signals the server directly.
 */
import { readFileSync } from 'node:fs';

/** What the watch needs to know about processes; the defaults read /proc (Linux) and use `kill(pid, 0)`. */
export interface ProcessTable {
  /** The parent pid of `pid`, or undefined when it cannot be read (not Linux, gone). */
  parentOf(pid: number): number | undefined;
  /** The command line of `pid` as its arguments, or undefined when it cannot be read. */
  commandOf(pid: number): string[] | undefined;
  /** Whether a process `pid` exists. */
  alive(pid: number): boolean;
}

/** Reads /proc/<pid>/stat and /proc/<pid>/cmdline; `kill(pid, 0)` for liveness. */
export const procTable: ProcessTable = {
  parentOf(pid) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      // "pid (comm) state ppid ...": comm may hold spaces and parentheses; the last ')' ends it.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const ppid = Number(fields[1]);
      return Number.isInteger(ppid) && ppid > 0 ? ppid : undefined;
    } catch {
      return undefined;
    }
  },
  commandOf(pid) {
    try {
      const raw = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      return raw.split('\0').filter((s) => s.length > 0);
    } catch {
      return undefined;
    }
  },
  alive(pid) {
    try {
      process.kill(pid, 0);
      return true;
    } catch (err) {
      // EPERM: it exists, owned by someone else.
      return (err as NodeJS.ErrnoException).code === 'EPERM';
    }
  },
};

/** Shells npm runs commands through (`script-shell`, default `sh`). */
const SHELLS = new Set(['sh', 'dash', 'bash', 'zsh', 'ash', 'ksh']);

/** Set to `1` to turn the watch off (a server an npm script deliberately leaves running). */
export const NO_WATCH_ENV = 'SVRKIT_NO_LAUNCHER_WATCH';

/**
 * Whether a command line is npm's (or npx's): npm sets its process title to `npm <command> ...`,
 * and runs as `node .../npm-cli.js` or `.../npx-cli.js` before it does.
 */
function isNpm(cmd: string[] | undefined): boolean {
  if (cmd === undefined || cmd.length === 0) return false;
  const first = baseName(cmd[0]!);
  return first === 'npm' || first === 'npx' || /^(npm|npx) /.test(cmd[0]!) || cmd.some((a) => /(^|\/)(npm|npx)-cli\.js$/.test(a));
}

/**
 * The pids to watch (see the module comment). Empty unless all of these hold:
 * - `env` says npm started the process (`npm_command` or `npm_lifecycle_event`), and
 *   `SVRKIT_NO_LAUNCHER_WATCH` is not `1`;
 * - the parent is npm itself (then `[parent]`), or a shell running `-c` with a single command
 *   (no `;`, `&`, `|` or newline: the shell waits for this process and only dies of a signal
 *   before it) whose own parent is npm (then `[shell, npm]`).
 * A server an npm script starts in the background (`svrkit run x.ts & ...`) or from a launcher
 * script of its own is therefore not watched. Pure but for the table's reads.
 * @param env - the environment (`process.env`).
 * @param ppid - this process's parent pid (`process.ppid`).
 * @param table - how to read other processes.
 * @returns the launch chain, nearest first; empty when there is nothing to watch.
 */
export function launchChain(env: Record<string, string | undefined>, ppid: number, table: ProcessTable): number[] {
  if (env.npm_command === undefined && env.npm_lifecycle_event === undefined) return [];
  if (env[NO_WATCH_ENV] === '1') return [];
  if (ppid <= 1) return [];
  const cmd = table.commandOf(ppid);
  if (isNpm(cmd)) return [ppid];
  const shell = cmd !== undefined && cmd.length >= 3 && SHELLS.has(baseName(cmd[0]!)) && cmd[1] === '-c';
  if (!shell || /[;&|\n]/.test(cmd[2]!)) return [];
  const grand = table.parentOf(ppid);
  if (grand === undefined || grand <= 1 || !isNpm(table.commandOf(grand))) return [];
  return [ppid, grand];
}

/** Options of {@link watchLauncher}. */
export interface LauncherWatchOptions {
  /** Default `process.env`. */
  env?: Record<string, string | undefined>;
  /** Default `process.ppid` (read on every check: the kernel re-parents an orphan). */
  ppid?: () => number;
  /** Default {@link procTable}. */
  table?: ProcessTable;
  /** How often to check (ms); default 500. */
  intervalMs?: number;
  /**
   * Watch this parent whatever started it (e.g. `kv up` for its replicas, which it names in their
   * environment): the process stops when that parent is gone. Ignored unless it is the parent.
   */
  parentPid?: number;
}

/**
 * Starts watching the launch chain (see the module comment).
 * @param onGone - called once, with which launcher went away (e.g. `'npm (pid 4242) exited'`).
 * @param options - see {@link LauncherWatchOptions}.
 * @returns a function that stops the watch; the watch holds no reference on the event loop.
 */
export function watchLauncher(onGone: (why: string) => void, options: LauncherWatchOptions = {}): () => void {
  const env = options.env ?? process.env;
  const ppidOf = options.ppid ?? (() => process.ppid);
  const table = options.table ?? procTable;
  const firstParent = ppidOf();
  const byParent = options.parentPid !== undefined && options.parentPid === firstParent;
  const chain = byParent ? [firstParent] : launchChain(env, firstParent, table);
  if (chain.length === 0) return () => {};
  const names = byParent ? ['the parent process'] : chain.length === 1 ? ['npm'] : ['the shell npm started', 'npm'];
  const timer = setInterval(() => {
    let gone: string | undefined;
    if (ppidOf() !== firstParent) gone = `${names[0]} (pid ${firstParent}) exited`;
    else {
      const i = chain.findIndex((pid) => !table.alive(pid));
      if (i >= 0) gone = `${names[i]} (pid ${chain[i]}) exited`;
    }
    if (gone !== undefined) {
      clearInterval(timer);
      onGone(gone);
    }
  }, options.intervalMs ?? 500);
  timer.unref();
  return () => clearInterval(timer);
}

function baseName(p: string): string {
  const i = p.lastIndexOf('/');
  return i < 0 ? p : p.slice(i + 1);
}
