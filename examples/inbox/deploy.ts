/**
 * The whole inbox on this machine, as real processes on 127.0.0.1: a PaxosKV cluster (`svrkit kv
 * serve` replicas), a ticket key ring, the `inbox` config namespace (`max_group_size`, with a gray
 * release for some users), a Sync server, and a front server with Login and Message. `npm start`,
 * the end-to-end test and the benchmarks start it from here; each process can be killed and
 * restarted on its port.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigAdmin, parseRule, PaxosKVClient } from 'svrkit';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = path.join(ROOT, 'bin', 'svrkit.js');
const SERVER = path.join(ROOT, 'examples', 'inbox', 'server.ts');

/** What {@link startInbox} starts. */
export interface InboxOptions {
  /** A directory for the replicas' data and the key ring. */
  dir: string;
  /** PaxosKV replicas (default 3). */
  replicas?: number;
  /** `max_group_size` of the release every user gets (default 8). */
  maxGroupSize?: number;
  /** A gray release of `max_group_size` (default 64) for these users (default none). */
  grayUsers?: readonly string[];
  grayMaxGroupSize?: number;
  /** Each line a process prints, with the process's name. */
  log?: (line: string) => void;
  /** More environment for the inbox servers (e.g. NODE_OPTIONS). */
  env?: Record<string, string>;
}

/** A running inbox (see the module comment). */
export interface InboxDeployment {
  /** PaxosKV replica addresses, member 1 first. */
  readonly kv: readonly string[];
  /** The front server (Login and Message). */
  readonly front: string;
  /** The Sync server. */
  readonly sync: string;
  /** Process ids by name (`kv1`.., `front`, `sync`). */
  pid(name: string): number | undefined;
  /** Kills a process (`kv1`.., `front`, `sync`) with `signal` and waits for it to exit. */
  kill(name: string, signal?: NodeJS.Signals): Promise<void>;
  /** Starts a killed process again on its port (and data dir); resolves once it serves. */
  restart(name: string): Promise<void>;
  /** Stops everything (SIGKILL for what does not stop on SIGTERM within 3 s). */
  stop(): Promise<void>;
}

interface Running {
  child: ChildProcess;
  exited: Promise<void>;
}

/** A free TCP port on 127.0.0.1. */
async function freePort(): Promise<number> {
  const s = createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as { port: number }).port;
  s.close();
  await once(s, 'close');
  return port;
}

/** Runs `svrkit <args>` to completion. @returns its stdout. @throws Error on a non-zero exit. */
async function svrkit(args: string[]): Promise<string> {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (err += s));
  const [code] = (await once(child, 'close')) as [number | null];
  if (code !== 0) throw new Error(`svrkit ${args.join(' ')} exited with ${code}: ${err}`);
  return out;
}

/** Starts the whole inbox (see the module comment). @throws Error when a process does not come up within 30 s. */
export async function startInbox(options: InboxOptions): Promise<InboxDeployment> {
  const n = options.replicas ?? 3;
  mkdirSync(options.dir, { recursive: true });
  const ports = await Promise.all(Array.from({ length: n + 2 }, freePort));
  const kv = ports.slice(0, n).map((p) => `127.0.0.1:${p}`);
  const peers = kv.map((a, i) => `${i + 1}=${a}`).join(',');
  const front = `127.0.0.1:${ports[n]}`;
  const sync = `127.0.0.1:${ports[n + 1]}`;
  const keys = path.join(options.dir, 'keys.json');
  const publicKeys = path.join(options.dir, 'public.json');
  writeFileSync(keys, await svrkit(['ticket', 'keygen', '--kid', 'inbox1']));
  writeFileSync(publicKeys, await svrkit(['ticket', 'public', '--keys', keys]));

  const commands = new Map<string, { argv: string[]; ready: RegExp }>();
  for (let i = 1; i <= n; i++) {
    commands.set(`kv${i}`, { argv: [CLI, 'kv', 'serve', '--id', String(i), '--peers', peers, '--data-dir', path.join(options.dir, `r${i}`)], ready: /paxoskv replica \d+ .*voting/ });
  }
  const inbox = (services: string, port: number, ring: string, extra: string[] = []) => ['--import', 'tsx', SERVER, '--services', services, '--kv', kv.join(','), '--keys', ring, '--port', String(port), ...extra];
  commands.set('sync', { argv: inbox('sync', ports[n + 1]!, publicKeys), ready: /^serving on / });
  commands.set('front', { argv: inbox('login,message', ports[n]!, keys, ['--sync', sync]), ready: /^serving on / });

  const running = new Map<string, Running>();
  const start = async (name: string): Promise<void> => {
    const c = commands.get(name);
    if (c === undefined) throw new Error(`no process ${name}`);
    const child = spawn(process.execPath, c.argv, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...options.env } });
    const exited = once(child, 'close').then(() => undefined);
    running.set(name, { child, exited });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${name} did not start within 30 s`)), 30_000);
      let buffered = '';
      const onData = (s: string) => {
        buffered += s;
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          options.log?.(`${name}: ${line}`);
          if (c.ready.test(line)) {
            clearTimeout(timer);
            resolve();
          }
        }
      };
      child.stdout!.setEncoding('utf8').on('data', onData);
      child.stderr!.setEncoding('utf8').on('data', onData);
      void exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`${name} exited before it served`));
      });
    });
  };
  const kill = async (name: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> => {
    const r = running.get(name);
    if (r === undefined || r.child.exitCode !== null || r.child.signalCode !== null) return;
    r.child.kill(signal);
    await r.exited;
  };
  const stop = async (): Promise<void> => {
    await Promise.all(
      [...running.keys()].map(async (name) => {
        const r = running.get(name)!;
        const timer = setTimeout(() => r.child.kill('SIGKILL'), 3000);
        await kill(name, 'SIGTERM');
        clearTimeout(timer);
      }),
    );
  };

  try {
    await Promise.all(kv.map((_, i) => start(`kv${i + 1}`)));
    // The config the Message service reads: a release for everyone, a gray one for some users.
    const client = new PaxosKVClient({ peers: kv });
    try {
      const admin = new ConfigAdmin(client, { by: 'inbox-deploy' });
      await admin.publish('inbox', { set: { max_group_size: String(options.maxGroupSize ?? 8) }, delete: [] });
      if ((options.grayUsers ?? []).length > 0) {
        await admin.gray('inbox', { set: { max_group_size: String(options.grayMaxGroupSize ?? 64) }, delete: [] }, [parseRule(`users:${options.grayUsers!.join(',')}`)]);
      }
      await admin.flush();
    } finally {
      client.close();
    }
    await start('sync');
    await start('front');
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    kv,
    front,
    sync,
    pid: (name) => running.get(name)?.child.pid,
    kill,
    restart: start,
    stop,
  };
}
