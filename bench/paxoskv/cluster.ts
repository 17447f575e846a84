/**
 * Local 3-member clusters on 127.0.0.1 for the benchmark: PaxosKV (`svrkit kv serve` processes,
 * the built CLI in dist/) and etcd (`etcd` processes). Every process started here is tracked, and
 * `stopAll()` (also run on exit and on SIGINT/SIGTERM) stops the ones still running.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { accessSync, constants, mkdirSync, openSync, closeSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuSeconds } from '../support.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
export const svrkitBin = path.join(root, 'bin', 'svrkit.js');

/** A process of a cluster. */
export class Member {
  readonly exited: Promise<void>;
  private gone = false;

  constructor(
    /** e.g. `paxoskv-1`, `etcd-2`. */
    readonly name: string,
    readonly child: ChildProcess,
    /** Where its stdout and stderr go. */
    readonly logFile: string,
  ) {
    this.exited = once(child, 'exit').then(() => {
      this.gone = true;
      live.delete(this);
    });
    live.add(this);
  }

  get alive(): boolean {
    return !this.gone;
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** CPU seconds (user+sys) used so far, from /proc; NaN when unreadable (exited, not Linux). */
  cpuSeconds(): number {
    return cpuSeconds(this.pid);
  }

  log(): string {
    try {
      return readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  /** SIGKILL, no waiting for anything but the exit. */
  async kill(): Promise<void> {
    if (this.gone) return;
    this.child.kill('SIGKILL');
    await this.exited;
  }

  /** SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs = 5000): Promise<void> {
    if (this.gone) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

const live = new Set<Member>();

/** Stops every process this module started that is still running. */
export async function stopAll(): Promise<void> {
  await Promise.all([...live].map((m) => m.stop()));
}

let hooksInstalled = false;
function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  // Last resort: a synchronous kill of whatever is left when this process exits.
  process.on('exit', () => {
    for (const m of live) m.child.kill('SIGKILL');
  });
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      process.stderr.write(`\n${sig}: stopping the clusters\n`);
      void stopAll().finally(() => process.exit(130));
    });
  }
}

export { cpuSeconds };

/**
 * CPU seconds the whole machine has spent busy (all CPUs, everything but idle and iowait), from
 * /proc/stat (Linux); NaN elsewhere. The difference to what the benchmark's own processes used
 * shows load from other processes, which skews the figures on a small machine.
 */
export function machineBusySeconds(): number {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    const total = f.slice(0, 8).reduce((a, b) => a + b, 0); // user nice system idle iowait irq softirq steal
    return (total - f[3]! - f[4]!) / 100;
  } catch {
    return NaN;
  }
}

/** `n` distinct ports that were free on 127.0.0.1 a moment ago. */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, async () => {
      const s = createServer();
      s.listen(0, '127.0.0.1');
      await once(s, 'listening');
      return s;
    }),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

function startProcess(name: string, command: string, args: string[], logFile: string): Member {
  installHooks();
  const fd = openSync(logFile, 'a');
  try {
    const child = spawn(command, args, { cwd: root, stdio: ['ignore', fd, fd] });
    return new Member(name, child, logFile);
  } finally {
    closeSync(fd);
  }
}

async function waitFor(what: string, members: readonly Member[], ready: () => Promise<boolean> | boolean, timeoutMs = 30_000): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    const dead = members.find((m) => !m.alive);
    if (dead !== undefined) throw new Error(`${dead.name} exited while ${what}; its log:\n${dead.log()}`);
    if (await ready()) return;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out ${what}; logs:\n${members.map((m) => `--- ${m.name}\n${m.log()}`).join('\n')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A running 3-replica PaxosKV cluster. */
export interface PaxosKVCluster {
  /** Replica addresses in member-id order (replica 1 first). */
  peers: string[];
  members: Member[];
}

/**
 * Starts `n` PaxosKV replicas, `node bin/svrkit.js kv serve --id i --peers ... --data-dir
 * <dir>/replica-i`, and waits until every one says it is serving.
 */
export async function startPaxosKV(dir: string, n = 3): Promise<PaxosKVCluster> {
  try {
    accessSync(path.join(root, 'dist', 'framework', 'cli', 'main.js'), constants.R_OK);
  } catch {
    throw new Error('dist/ is missing: run `npm run build` first (the replicas run the built CLI)');
  }
  mkdirSync(dir, { recursive: true });
  const ports = await freePorts(n);
  const peers = ports.map((p) => `127.0.0.1:${p}`);
  const peerList = peers.map((a, i) => `${i + 1}=${a}`).join(',');
  const members = peers.map((_, i) =>
    startProcess(
      `paxoskv-${i + 1}`,
      process.execPath,
      [svrkitBin, 'kv', 'serve', '--id', String(i + 1), '--peers', peerList, '--data-dir', path.join(dir, `replica-${i + 1}`)],
      path.join(dir, `replica-${i + 1}.log`),
    ),
  );
  await waitFor('starting PaxosKV', members, () => members.every((m) => /serving on/.test(m.log())));
  return { peers, members };
}

/** A running cluster of many groups (each a 3-replica PaxosKV group). */
export interface PaxosKVGroups {
  /** Each group's replica addresses, group 1 (the system group) first. */
  groups: string[][];
  members: Member[];
}

/**
 * Starts `groups` groups of `n` replicas: replica i of group g is `kv serve --id i --peers <group
 * g> --group g --routing <group 1> --data-dir <dir>/group-g/replica-i`; waits until every one
 * serves. The caller writes the routing table (`PaxosKVClient.setRoutingTable`). One group with
 * `routed` false is a plain cluster (no --group: nothing routed), the baseline.
 */
export async function startPaxosKVGroups(dir: string, groups: number, n = 3, routed = groups > 1): Promise<PaxosKVGroups> {
  accessSync(path.join(root, 'dist', 'framework', 'cli', 'main.js'), constants.R_OK);
  const ports = await freePorts(groups * n);
  const addresses = Array.from({ length: groups }, (_, g) => ports.slice(g * n, (g + 1) * n).map((p) => `127.0.0.1:${p}`));
  const list = (g: number) => addresses[g]!.map((a, i) => `${i + 1}=${a}`).join(',');
  const members: Member[] = [];
  for (let g = 0; g < groups; g++) {
    mkdirSync(path.join(dir, `group-${g + 1}`), { recursive: true });
    for (let i = 0; i < n; i++) {
      members.push(
        startProcess(
          `paxoskv-${g + 1}-${i + 1}`,
          process.execPath,
          [svrkitBin, 'kv', 'serve', '--id', String(i + 1), '--peers', list(g), ...(routed ? ['--group', String(g + 1), '--routing', list(0)] : []), '--data-dir', path.join(dir, `group-${g + 1}`, `replica-${i + 1}`), '--no-services'],
          path.join(dir, `group-${g + 1}`, `replica-${i + 1}.log`),
        ),
      );
    }
  }
  await waitFor('starting PaxosKV groups', members, () => members.every((m) => /serving on/.test(m.log())));
  return { groups: addresses, members };
}

/**
 * Starts a new replica that joins `cluster` (`kv serve --id <id> --address <free port> --join
 * <the first replicas> --data-dir <dir>/replica-<id>`) and waits until it says it waits to be added.
 * @returns its address `host:port` and its process.
 */
export async function startJoiningReplica(dir: string, cluster: PaxosKVCluster, id: number, askable: readonly number[]): Promise<{ address: string; member: Member }> {
  const [port] = await freePorts(1);
  const address = `127.0.0.1:${port}`;
  const join = askable.map((m) => `${m}=${cluster.peers[m - 1]}`).join(',');
  const member = startProcess(
    `paxoskv-${id}`,
    process.execPath,
    [svrkitBin, 'kv', 'serve', '--id', String(id), '--address', address, '--join', join, '--data-dir', path.join(dir, `replica-${id}`)],
    path.join(dir, `replica-${id}.log`),
  );
  await waitFor('starting a joining replica', [member], () => /joining: waiting to be added/.test(member.log()));
  return { address, member };
}

/**
 * Starts `svrkit config serve --peers <the cluster> --port <free>` (the config center and registry
 * as a stateless process) and waits until it serves.
 * @returns its address `host:port` and its process.
 */
export async function startConfigServe(dir: string, cluster: PaxosKVCluster): Promise<{ address: string; member: Member }> {
  const [port] = await freePorts(1);
  const peerList = cluster.peers.map((a, i) => `${i + 1}=${a}`).join(',');
  const member = startProcess('config-serve', process.execPath, [svrkitBin, 'config', 'serve', '--peers', peerList, '--port', String(port)], path.join(dir, 'config-serve.log'));
  await waitFor('starting config serve', [member], () => /config serve on/.test(member.log()));
  return { address: `127.0.0.1:${port}`, member };
}

/** Path of the etcd binary, or undefined when there is none. */
export function findEtcd(): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter).concat(['/usr/bin', '/usr/local/bin'])) {
    const p = path.join(dir, 'etcd');
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  return undefined;
}

/** The first line of `etcd --version` (e.g. `etcd Version: 3.4.23`). */
export async function etcdVersion(bin: string): Promise<string> {
  const child = spawn(bin, ['--version'], { stdio: ['ignore', 'pipe', 'ignore'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  await once(child, 'exit');
  return (/etcd Version:\s*(\S+)/.exec(out)?.[1]) ?? out.split('\n')[0] ?? '?';
}

/** A running 3-member etcd cluster. */
export interface EtcdCluster {
  /** Client URLs `http://127.0.0.1:port`, in member order. */
  endpoints: string[];
  members: Member[];
}

/**
 * Starts `n` etcd members on 127.0.0.1 (data dirs `<dir>/etcd-i`, default heartbeat 100 ms and
 * election timeout 1000 ms, fsync as etcd always does). `ready` is polled until it says yes.
 */
export async function startEtcd(bin: string, dir: string, ready: (endpoints: string[]) => Promise<boolean>, n = 3): Promise<EtcdCluster> {
  mkdirSync(dir, { recursive: true });
  const ports = await freePorts(2 * n);
  const clientUrls = ports.slice(0, n).map((p) => `http://127.0.0.1:${p}`);
  const peerUrls = ports.slice(n).map((p) => `http://127.0.0.1:${p}`);
  const initialCluster = peerUrls.map((u, i) => `etcd-${i + 1}=${u}`).join(',');
  const token = `svrkit-bench-${path.basename(dir)}-${Date.now()}`;
  const members = clientUrls.map((clientUrl, i) =>
    startProcess(
      `etcd-${i + 1}`,
      bin,
      [
        '--name', `etcd-${i + 1}`,
        '--data-dir', path.join(dir, `etcd-${i + 1}`),
        '--listen-client-urls', clientUrl,
        '--advertise-client-urls', clientUrl,
        '--listen-peer-urls', peerUrls[i]!,
        '--initial-advertise-peer-urls', peerUrls[i]!,
        '--initial-cluster', initialCluster,
        '--initial-cluster-state', 'new',
        '--initial-cluster-token', token,
        '--logger', 'zap',
        '--log-level', 'warn',
      ],
      path.join(dir, `etcd-${i + 1}.log`),
    ),
  );
  await waitFor('starting etcd', members, () => ready(clientUrls));
  return { endpoints: clientUrls, members };
}
