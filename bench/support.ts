/**
 * Helpers shared by the benchmark scripts: latency histograms, per-process CPU time, and starting
 * server processes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { build, type Histogram } from 'hdr-histogram-js';

/**
 * A latency histogram (hdr-histogram-js) for microsecond values up to 60 s, 3 significant digits.
 * @returns a new, empty histogram.
 */
export function newHistogram(): Histogram {
  return build({
    bitBucketSize: 64,
    lowestDiscernibleValue: 1,
    highestTrackableValue: 60_000_000,
    numberOfSignificantValueDigits: 3,
    autoResize: true,
    useWebAssembly: false,
  });
}

/**
 * CPU seconds (user+sys) a live process has used, from /proc (Linux).
 * @param pid - the process id.
 * @returns seconds; NaN when /proc cannot tell (another OS, or the process is gone).
 */
export function cpuSeconds(pid: number | undefined): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
  } catch {
    return NaN;
  }
}

/**
 * Spawns `node args` with stdout and stderr piped, pinned to `cpu` (a `taskset -c` CPU list) when
 * given. taskset(1) execs node, so the child's pid is node's (for `cpuSeconds`).
 * @returns the child process.
 */
export function spawnNode(args: string[], cwd: string, cpu?: string): ChildProcess {
  return cpu === undefined
    ? spawn(process.execPath, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn('taskset', ['-c', cpu, process.execPath, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * Starts a server process and waits for its "listening" line.
 * @param args - `node` arguments (script and flags).
 * @param pattern - matches the line that gives the address; group 1 is the address (`host:port`).
 * @param cwd - the working directory.
 * @param cpu - when given, the CPU list the process (all its threads) may run on, as `taskset -c`
 *   takes it (`'1'`, `'0,1'`); it runs under taskset(1), which keeps the pid.
 * @returns the child and the address it printed.
 * @throws Error (rejection) when it exits first, or prints nothing matching within 30 s (it is then killed).
 */
export async function startServer(args: string[], pattern: RegExp, cwd: string, cpu?: string): Promise<{ child: ChildProcess; address: string }> {
  const child = spawnNode(args, cwd, cpu);
  let out = '';
  const address = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start: ${out}`)), 30_000);
    const onData = (d: Buffer): void => {
      out += d.toString();
      const m = pattern.exec(out);
      if (m !== null) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}: ${out}`));
    });
  }).catch((err: unknown) => {
    child.kill('SIGKILL');
    throw err;
  });
  return { child, address };
}

/**
 * CPU seconds the whole machine has been busy since boot: all CPUs, not idle and not iowait, from
 * /proc/stat (in USER_HZ ticks of 10 ms).
 * @returns seconds; NaN where /proc/stat cannot be read (not Linux).
 */
export function machineBusySeconds(): number {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
    return (total - f[3]! - f[4]!) / 100;
  } catch {
    return NaN;
  }
}
