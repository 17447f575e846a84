/**
 * A throwaway etcd server for tests: `/usr/bin/etcd` on 127.0.0.1 with free client and peer
 * ports and a temporary data directory, started and stopped by the test that uses it.
 *
 * `etcdBinary` is undefined when etcd is not installed (Debian: `apt-get install etcd-server`);
 * tests then skip themselves with that reason.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** Path of the etcd binary, or undefined when it is not installed. */
export const etcdBinary: string | undefined = existsSync('/usr/bin/etcd') ? '/usr/bin/etcd' : undefined;

/** A running etcd. */
export interface EtcdServer {
  /** Client endpoint, `127.0.0.1:port`. */
  readonly endpoint: string;
  /** Its data directory (removed by `stop()`). */
  readonly dataDir: string;
  /** The etcd process (changes after `restart()`). */
  readonly process: ChildProcess;
  /** Everything it logged so far. */
  output(): string;
  /** Kills etcd (SIGKILL) and waits for it to exit; keeps the data directory. */
  kill(): Promise<void>;
  /** Starts etcd again on the same ports and data directory (after `kill()`), and waits until healthy. */
  restart(): Promise<void>;
  /** Kills etcd and removes its data directory. Idempotent. */
  stop(): Promise<void>;
}

/** Running etcd processes started here, killed on exit as a last resort. */
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

/** A loopback port nothing listens on (bound, then released). */
export async function freeLoopbackPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', resolve);
  });
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

/** Whether etcd answers `GET /health` with `{"health":"true"}`. */
async function healthy(endpoint: string): Promise<boolean> {
  try {
    const res = await fetch(`http://${endpoint}/health`, { signal: AbortSignal.timeout(1000) });
    const body = (await res.json()) as { health?: string };
    return body.health === 'true';
  } catch {
    return false;
  }
}

function launch(dataDir: string, clientPort: number, peerPort: number): { child: ChildProcess; log: () => string; exited: Promise<void> } {
  const client = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const child = spawn(
    etcdBinary!,
    [
      '--name', 'test',
      '--data-dir', dataDir,
      '--listen-client-urls', client,
      '--advertise-client-urls', client,
      '--listen-peer-urls', peer,
      '--initial-advertise-peer-urls', peer,
      '--initial-cluster', `test=${peer}`,
      '--initial-cluster-state', 'new',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  live.add(child);
  let log = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (log += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (log += s));
  const exited = new Promise<void>((resolve) => {
    child.once('error', (err) => (log += `\n[spawn error: ${err.message}]`));
    child.once('close', () => {
      live.delete(child);
      resolve();
    });
  });
  return { child, log: () => log, exited };
}

async function waitHealthy(endpoint: string, run: { child: ChildProcess; log: () => string }, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (run.child.exitCode !== null || run.child.signalCode !== null) throw new Error(`etcd exited before it was healthy\n${run.log()}`);
    if (await healthy(endpoint)) return;
    await sleep(100);
  }
  throw new Error(`etcd was not healthy within ${timeoutMs} ms\n${run.log()}`);
}

/**
 * Starts etcd on 127.0.0.1 (free ports, a fresh data directory) and waits until it is healthy.
 * @param timeoutMs - time allowed to become healthy (default 30000).
 * @returns the server; call `stop()` in `afterAll`.
 * @throws Error (rejection) when etcd is not installed or does not become healthy (it is killed).
 */
export async function startEtcd(timeoutMs = 30_000): Promise<EtcdServer> {
  if (etcdBinary === undefined) throw new Error('etcd is not installed (/usr/bin/etcd; apt-get install etcd-server)');
  let lastError: Error | undefined;
  for (let attempt = 0; attempt < 3; attempt++) {
    const clientPort = await freeLoopbackPort();
    let peerPort = await freeLoopbackPort();
    while (peerPort === clientPort) peerPort = await freeLoopbackPort();
    const dataDir = mkdtempSync(path.join(tmpdir(), 'svrkit-etcd-'));
    const endpoint = `127.0.0.1:${clientPort}`;
    let run = launch(dataDir, clientPort, peerPort);
    try {
      await waitHealthy(endpoint, run, timeoutMs);
    } catch (err) {
      // Perhaps a port was taken between choosing and binding it: try other ports.
      lastError = err as Error;
      run.child.kill('SIGKILL');
      await run.exited;
      rmSync(dataDir, { recursive: true, force: true });
      continue;
    }
    let stopped = false;
    const kill = async (): Promise<void> => {
      if (run.child.exitCode === null && run.child.signalCode === null) run.child.kill('SIGKILL');
      await run.exited;
    };
    return {
      endpoint,
      dataDir,
      get process() {
        return run.child;
      },
      output: () => run.log(),
      kill,
      restart: async () => {
        await kill();
        run = launch(dataDir, clientPort, peerPort);
        await waitHealthy(endpoint, run, timeoutMs);
      },
      stop: async () => {
        if (stopped) return;
        stopped = true;
        await kill();
        rmSync(dataDir, { recursive: true, force: true });
      },
    };
  }
  throw lastError ?? new Error('etcd did not start');
}
