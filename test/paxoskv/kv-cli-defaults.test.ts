/**
 * `svrkit kv up` and the client commands' defaults, as real processes on 127.0.0.1 (issue 11,
 * item 7): `kv up` prints its own pid and its replicas'; it records its cluster in
 * `<data-dir>/cluster.json` and refuses (exit 2, nothing started, no dir created) a replica count,
 * base port or host that differs from it; the client commands find the cluster without `--peers`
 * (`./data/paxoskv` of their working directory, `--data-dir`, or `SVRKIT_KV_PEERS`); a value prints
 * as `"value"` (UTF-8 text) or `"valueBase64"` (other bytes), never both ways for one output.
 *
 * Every process here runs in a temp dir of its own as working directory, with `SVRKIT_KV_PEERS`
 * removed from its environment unless a test sets it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { KvUsageError } from '../../framework/cli/kv-cluster.js';
import { decodeBase64, valueInput, valueJson } from '../../framework/cli/kv-values.js';
import { ConfigClient, openRegistry } from '../../index.js';
import { alive, freePortRange, freePorts, SERVING, stopProc, waitServing, waitVoting, type Exit, type Proc, type Run } from '../support/kv-processes.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BIN = path.join(ROOT, 'bin', 'svrkit.js');
const BASE = path.join(ROOT, 'test', '.tmp', `paxoskv-kv-cli-defaults-${process.pid}`);

/** Processes this file started, until they exit. */
const live = new Set<ChildProcess>();
/** Replica pids of the `kv up`s started here (their children): killed at the end if left over. */
const grandchildren = new Set<number>();
/** The `kv up`s started here, to find their replicas' pids in what they printed. */
const ups: Proc[] = [];

afterAll(async () => {
  // Only when a test failed before stopping what it started: each kv up's replicas (as it printed
  // them), then the kv ups (SIGTERM, so they stop their replicas), then anything left.
  for (const p of ups) {
    for (const m of p.stdout().matchAll(/replica pids (\S+)/g)) for (const e of m[1]!.split(',')) grandchildren.add(Number(e.split('=')[1]));
    for (const m of p.stdout().matchAll(SERVING)) grandchildren.add(Number(m[3]));
  }
  await Promise.all(ups.map((p) => stopProc(p, 'SIGTERM', 10_000).catch(() => undefined)));
  for (const child of live) child.kill('SIGKILL');
  await Promise.all([...live].map((c) => new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r(null) : c.once('close', r)))));
  for (const pid of grandchildren) if (Number.isInteger(pid) && pid > 0 && alive(pid)) process.kill(pid, 'SIGKILL');
  await fsp.rm(BASE, { recursive: true, force: true });
});

/** Starts `svrkit <args>` in `cwd`, with `env` on top of this process's environment minus SVRKIT_KV_PEERS. */
function start(args: string[], cwd: string, options: { env?: Record<string, string>; stdin?: string | Uint8Array } = {}): Proc {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.SVRKIT_KV_PEERS;
  Object.assign(env, options.env);
  const child = spawn(process.execPath, [BIN, ...args], { cwd, env, stdio: [options.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
  live.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  if (options.stdin !== undefined) child.stdin!.end(options.stdin);
  const exited = new Promise<Exit>((resolve) => {
    child.once('close', (code, signal) => {
      live.delete(child);
      resolve({ code, signal });
    });
  });
  const proc: Proc = { child, stdout: () => stdout, stderr: () => stderr, exited };
  if (args[0] === 'kv' && args[1] === 'up') ups.push(proc);
  return proc;
}

/**
 * Runs `svrkit <args>` in `cwd` to completion (SIGKILLed and failed after 30 s). A call a replica's
 * FastReject refused (RESOURCE_EXHAUSTED "overloaded": it was not applied; seen on a loaded test
 * machine just after the replicas start, and the PaxosKV client does not move to another replica
 * on it) is run again, up to 4 times.
 */
async function run(args: string[], cwd: string, options: { env?: Record<string, string>; stdin?: string | Uint8Array } = {}): Promise<Run> {
  for (let attempt = 1; ; attempt++) {
    const p = start(args, cwd, options);
    const exit = await stopProcAfter(p, 30_000);
    const r = { ...exit, stdout: p.stdout(), stderr: p.stderr() };
    if (attempt >= 5 || !/^ERROR: RESOURCE_EXHAUSTED: overloaded/.test(r.stderr)) return r;
    await new Promise((resolve) => setTimeout(resolve, 500 * attempt));
  }
}

async function stopProcAfter(p: Proc, ms: number): Promise<Exit> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      p.child.kill('SIGKILL');
      reject(new Error(`did not finish within ${ms} ms\nstdout: ${p.stdout()}\nstderr: ${p.stderr()}`));
    }, ms);
  });
  try {
    return await Promise.race([p.exited, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** A successful client command's one JSON line. */
function ok(r: Run): Record<string, unknown> {
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
  const lines = r.stdout.trim().split('\n');
  expect(lines).toHaveLength(1);
  return JSON.parse(lines[0]!) as Record<string, unknown>;
}

/** A `kv` command refused as a usage error: exit 2, nothing on stdout, the message on stderr. */
function refused(r: Run, message: RegExp): void {
  expect({ code: r.code, signal: r.signal }, r.stderr).toEqual({ code: 2, signal: null });
  expect(r.stdout).toBe('');
  expect(r.stderr).toMatch(message);
}

async function listing(dir: string): Promise<string[]> {
  return (await fsp.readdir(dir)).sort();
}

/** Starts `kv up` in `cwd` and waits until its replicas vote; records their pids. */
async function up(args: string[], cwd: string, replicas = 3): Promise<{ proc: Proc; replicaPids: Map<number, number> }> {
  const proc = start(['kv', 'up', ...args], cwd);
  const serving = await waitServing(proc, 'kv up', replicas);
  const replicaPids = new Map(serving.map((m) => [Number(m[1]), Number(m[3])]));
  for (const pid of replicaPids.values()) grandchildren.add(pid);
  await waitVoting(proc, 'kv up', replicas);
  return { proc, replicaPids };
}

// -----------------------------------------------------------------------------------------------

describe('value output and input (in process)', () => {
  it('prints valid UTF-8 as value and anything else as valueBase64; --base64 input is the inverse', async () => {
    const bytes = (...b: number[]) => new Uint8Array(b);
    expect(valueJson(new TextEncoder().encode('hi é'))).toEqual({ value: 'hi é' });
    expect(valueJson(new TextEncoder().encode('base64:AP8B'))).toEqual({ value: 'base64:AP8B' });
    expect(valueJson(bytes(0x00, 0xff, 0x01))).toEqual({ valueBase64: 'AP8B' });
    expect(valueJson(bytes())).toEqual({ value: '' });
    // A BOM is kept (the text is exactly the bytes); an encoded surrogate is not UTF-8.
    expect(valueJson(bytes(0xef, 0xbb, 0xbf, 0x41))).toEqual({ value: '\ufeffA' });
    expect(valueJson(bytes(0xed, 0xa0, 0x80))).toEqual({ valueBase64: '7aCA' });
    // A subarray prints only its own bytes.
    expect(valueJson(bytes(0x41, 0xff, 0x42).subarray(1, 2))).toEqual({ valueBase64: '/w==' });

    expect(await valueInput('base64:AP8B', false)).toEqual(new TextEncoder().encode('base64:AP8B'));
    expect(await valueInput('AP8B', true)).toEqual(bytes(0x00, 0xff, 0x01));
    expect(await valueInput(undefined, false, async () => bytes(0xff))).toEqual(bytes(0xff));
    expect(await valueInput(undefined, true, async () => new TextEncoder().encode('AP8B\n'))).toEqual(bytes(0x00, 0xff, 0x01));
    for (const bad of ['AP8', 'AP8B=', 'A?8B', '-_8B']) expect(() => decodeBase64(bad, 'the value')).toThrow(KvUsageError);
    expect(decodeBase64('', 'stdin')).toEqual(bytes());
  });
});

describe('svrkit kv up records its cluster, prints its pid, and refuses a different membership', () => {
  it('prints its own pid and its replicas\'; client commands work without --peers; a restart with other flags is refused before anything starts', async () => {
    const cwd = path.join(BASE, 'defaults');
    await fsp.mkdir(cwd, { recursive: true });
    const base = await freePortRange(3);
    const peers = `1=127.0.0.1:${base},2=127.0.0.1:${base + 1},3=127.0.0.1:${base + 2}`;
    const dataDir = path.join(cwd, 'data', 'paxoskv');

    // --- its own pid, and its replicas' ---------------------------------------------------------
    const first = await up(['--base-port', String(base)], cwd);
    const line = /^svrkit: kv up \(pid (\d+)\): paxoskv cluster of 3 starting, replica pids (\S+), data in \.\/data\/paxoskv; clients use --peers (\S+)$/m.exec(first.proc.stdout());
    expect(line, first.proc.stdout()).not.toBeNull();
    expect(Number(line![1])).toBe(first.proc.child.pid);
    expect(line![2]).toBe([1, 2, 3].map((id) => `${id}=${first.replicaPids.get(id)}`).join(','));
    expect(line![3]).toBe(peers);
    expect(first.proc.stdout()).toMatch(/kv commands find this cluster without --peers when run in this directory/);
    expect(first.proc.stdout()).toContain('svrkit: recorded the cluster in data/paxoskv/cluster.json');
    expect(JSON.parse(await fsp.readFile(path.join(dataDir, 'cluster.json'), 'utf8'))).toEqual({
      format: 'svrkit-kv-up/1',
      replicas: 3,
      host: '127.0.0.1',
      basePort: base,
      peers,
    });

    // --- client commands without --peers, from the cwd's ./data/paxoskv --------------------------
    const kv = (args: string[], options: { env?: Record<string, string>; stdin?: string | Uint8Array; in?: string } = {}) =>
      run(['kv', ...args], options.in ?? cwd, options);
    expect(ok(await kv(['put', 'greeting', 'hello']))).toEqual({ key: 'greeting', version: '1' });
    expect(ok(await kv(['get', 'greeting']))).toEqual({ key: 'greeting', found: true, version: '1', value: 'hello' });
    expect(ok(await kv(['put', 'greeting'], { stdin: 'hi' }))).toEqual({ key: 'greeting', version: '2' });
    expect(ok(await kv(['cas', 'greeting', '2', 'bye']))).toEqual({ key: 'greeting', version: '3' });
    expect(ok(await kv(['delete', 'greeting']))).toEqual({ key: 'greeting', version: '4' });
    expect(ok(await kv(['get', 'greeting']))).toEqual({ key: 'greeting', found: false });
    const status = await kv(['status']);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { address: string; mode: string }).address)).toEqual(peers.split(',').map((p) => p.slice(2)));

    // --- kv up brings up the config center and the registry too: config://, registry:// ----------
    const addrs = peers.split(',').map((p) => p.slice(2)).join(',');
    expect(first.proc.stdout()).toContain(`every replica also serves the config center and the registry: config://${addrs} and registry://${addrs}/svrkit/services`);
    expect(ok(await run(['config', 'publish', 'up.ns', 'limit=7'], cwd))).toMatchObject({ release: 1, values: { limit: '7' } });
    const config = new ConfigClient({ target: `config://${addrs}`, namespace: 'up.ns' });
    const registry = openRegistry(`registry://${addrs}/svrkit/services`);
    try {
      await config.ready();
      expect([config.source, config.get('limit')]).toEqual(['server', '7']);
      await registry.register({ service: 'up.Svc', address: '127.0.0.1:9' }, { ttlMs: 5000 });
      const listed = await run(['registry', 'list', `paxoskv://${addrs}/svrkit/services`, 'up.Svc', '--json'], cwd);
      expect(listed.code, listed.stderr).toBe(0);
      expect((JSON.parse(listed.stdout) as Array<{ address: string }>).map((i) => i.address)).toEqual(['127.0.0.1:9']);
    } finally {
      await config.close();
      await registry.close();
    }

    // --- binary and text print differently; --base64 puts what valueBase64 prints ------------------
    expect(ok(await kv(['put', 'text'], { stdin: 'base64:AP8B' }))).toEqual({ key: 'text', version: '1' });
    expect(ok(await kv(['put', 'bin'], { stdin: new Uint8Array([0x00, 0xff, 0x01]) }))).toEqual({ key: 'bin', version: '1' });
    expect(ok(await kv(['put', 'bin2', '--base64', 'AP8B']))).toEqual({ key: 'bin2', version: '1' });
    expect(ok(await kv(['put', 'bin3', '--base64'], { stdin: 'AP8B\n' }))).toEqual({ key: 'bin3', version: '1' });
    expect(ok(await kv(['put', 'text2', 'base64:AP8B']))).toEqual({ key: 'text2', version: '1' });
    expect(ok(await kv(['get', 'text']))).toEqual({ key: 'text', found: true, version: '1', value: 'base64:AP8B' });
    expect(ok(await kv(['get', 'text2']))).toEqual({ key: 'text2', found: true, version: '1', value: 'base64:AP8B' });
    for (const key of ['bin', 'bin2', 'bin3']) expect(ok(await kv(['get', key]))).toEqual({ key, found: true, version: '1', valueBase64: 'AP8B' });
    expect(ok(await kv(['cas', 'bin', '1', '--base64', '/w==']))).toEqual({ key: 'bin', version: '2' });
    expect(ok(await kv(['get', 'bin']))).toEqual({ key: 'bin', found: true, version: '2', valueBase64: '/w==' });
    refused(await kv(['put', 'bin', '--base64', 'AP8']), /^error: the value is not base64/);
    expect(ok(await kv(['get', 'bin']))).toMatchObject({ version: '2' });

    // --- elsewhere: --data-dir, SVRKIT_KV_PEERS, and which wins ----------------------------------
    const elsewhere = path.join(BASE, 'elsewhere');
    await fsp.mkdir(elsewhere, { recursive: true });
    refused(await kv(['get', 'text'], { in: elsewhere }), /^error: no cluster to talk to: pass --peers .*, set SVRKIT_KV_PEERS, or start one with svrkit kv up in this directory/);
    expect(ok(await kv(['get', 'text', '--data-dir', dataDir], { in: elsewhere }))).toMatchObject({ value: 'base64:AP8B' });
    expect(ok(await kv(['get', 'text'], { in: elsewhere, env: { SVRKIT_KV_PEERS: peers } }))).toMatchObject({ value: 'base64:AP8B' });
    const nobody = (await freePorts(3)).map((p) => `127.0.0.1:${p}`).join(',');
    // SVRKIT_KV_PEERS wins over ./data/paxoskv; --peers and --data-dir win over SVRKIT_KV_PEERS.
    const envWins = await kv(['get', 'text', '--timeout', '300'], { env: { SVRKIT_KV_PEERS: nobody } });
    expect(envWins.code).toBe(1);
    expect(envWins.stderr).toMatch(/^ERROR: UNAVAILABLE: /);
    expect(ok(await kv(['get', 'text', '--peers', peers], { env: { SVRKIT_KV_PEERS: nobody } }))).toMatchObject({ value: 'base64:AP8B' });
    expect(ok(await kv(['get', 'text', '--data-dir', dataDir], { in: elsewhere, env: { SVRKIT_KV_PEERS: nobody } }))).toMatchObject({ value: 'base64:AP8B' });
    refused(await kv(['get', 'text', '--peers', peers, '--data-dir', dataDir]), /^error: give --peers or --data-dir, not both/);
    refused(await kv(['get', 'text'], { env: { SVRKIT_KV_PEERS: 'nohostport' } }), /^error: SVRKIT_KV_PEERS='nohostport': peer 'nohostport': invalid address/);
    refused(await kv(['status', '--data-dir', elsewhere]), /^error: no cluster recorded in .*elsewhere\/cluster\.json: start one with svrkit kv up --data-dir/);

    // --- a second kv up while it runs: refused flags exit 2; the same flags find the ports taken --
    refused(await run(['kv', 'up', '--replicas', '5'], cwd), /--replicas 5 differs/);
    const twice = await run(['kv', 'up'], cwd);
    expect(twice.code, twice.stderr).toBe(1);
    expect(twice.stderr).toMatch(new RegExp(`replica 1 cannot listen on 127\\.0\\.0\\.1:${base}: EADDRINUSE \\(is this cluster already up\\?`));
    expect(twice.stdout).toBe('');

    expect(await stopProc(first.proc, 'SIGINT'), first.proc.stderr()).toEqual({ code: 0, signal: null });
    for (const pid of first.replicaPids.values()) expect(alive(pid)).toBe(false);

    // --- stopped: a different replica count, base port or host is refused, nothing started or made --
    const before = await listing(dataDir);
    expect(before).toEqual(['cluster.json', 'replica-1', 'replica-2', 'replica-3']);
    const recorded = `data dir \\./data/paxoskv holds a 3-replica cluster \\(peers ${peers}\\); `;
    const five = await run(['kv', 'up', '--replicas', '5'], cwd);
    refused(five, new RegExp(`^error: ${recorded}--replicas 5 differs: use --replicas 3 \\(or leave it out\\), or a new --data-dir`));
    const otherPort = await run(['kv', 'up', '--base-port', String(base + 10)], cwd);
    refused(otherPort, new RegExp(`^error: ${recorded}--base-port ${base + 10} differs: use --base-port ${base} \\(or leave it out\\), or a new --data-dir`));
    const otherHost = await run(['kv', 'up', '--host', 'localhost', '--replicas', '3', '--base-port', String(base)], cwd);
    refused(otherHost, new RegExp(`^error: ${recorded}--host localhost differs: use --host 127\\.0\\.0\\.1`));
    const both = await run(['kv', 'up', '--replicas', '7', '--base-port', String(base + 10)], cwd);
    refused(both, /--replicas 7 and --base-port \d+ differ: use --replicas 3 --base-port \d+ \(or leave them out\)/);
    expect(await listing(dataDir)).toEqual(before);
    for (const id of [1, 2, 3]) expect((await fsp.readdir(path.join(dataDir, `replica-${id}`))).sort()).toEqual(['data.mdb', 'lock.mdb']);

    // --- a restart without flags runs the recorded cluster, and the data is there ----------------
    const again = await up([], cwd);
    expect(again.proc.stdout()).not.toContain('recorded the cluster');
    expect(again.proc.stdout()).toContain(`clients use --peers ${peers}`);
    expect(ok(await kv(['get', 'text']))).toEqual({ key: 'text', found: true, version: '1', value: 'base64:AP8B' });
    expect(await stopProc(again.proc, 'SIGINT'), again.proc.stderr()).toEqual({ code: 0, signal: null });
  }, 150_000); // about 40 CLI processes

  it('kv up --groups 2: six replicas, the routing table written into group 1, keys of both groups through the client commands', async () => {
    const cwd = path.join(BASE, 'groups');
    await fsp.mkdir(cwd, { recursive: true });
    const base = await freePortRange(6);
    const first = await up(['--groups', '2', '--base-port', String(base)], cwd, 6);
    expect(first.proc.stdout()).toMatch(/paxoskv cluster of 2 groups of 3 starting, replica pids 1\/1=\d+,1\/2=\d+,1\/3=\d+,2\/1=\d+,2\/2=\d+,2\/3=\d+/);
    expect(JSON.parse(await fsp.readFile(path.join(cwd, 'data', 'paxoskv', 'cluster.json'), 'utf8'))).toMatchObject({ replicas: 3, groups: 2, basePort: base });
    expect(await listing(path.join(cwd, 'data', 'paxoskv'))).toEqual(['cluster.json', 'group-1', 'group-2']);
    const group2 = [3, 4, 5].map((i) => `127.0.0.1:${base + i}`);
    // The table is written once group 1 serves; kv routing reads it.
    let table: Record<string, unknown> | undefined;
    for (let i = 0; i < 50 && table?.epoch !== 1; i++) {
      const r = await run(['kv', 'routing', '--key', 'k0'], cwd);
      if (r.code === 0) table = JSON.parse(r.stdout) as Record<string, unknown>;
      else await new Promise((resolve) => setTimeout(resolve, 200));
    }
    expect(table).toMatchObject({ epoch: 1, groups: [{ id: 1 }, { id: 2, replicas: group2 }] });
    // Keys of both groups, through group 1's peers (the recorded ones): the client follows the table.
    const keys = Array.from({ length: 8 }, (_, n) => `k${n}`);
    const owners = new Set<number>();
    for (const key of keys) {
      expect(ok(await run(['kv', 'put', key, `v-${key}`], cwd))).toEqual({ key, version: '1' });
      owners.add(Number((JSON.parse((await run(['kv', 'routing', '--key', key], cwd)).stdout) as { group: number }).group));
    }
    expect([...owners].sort()).toEqual([1, 2]);
    const list = await run(['kv', 'list', 'k'], cwd);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { key: string }).key)).toEqual(keys);
    // Each group has its own members.
    const members = await run(['kv', 'member', 'list', '--group', '2'], cwd);
    expect(members.code, members.stderr).toBe(0);
    expect(JSON.parse(members.stdout.split('\n')[0]!)).toMatchObject({ group: 2, epoch: 1, voters: [1, 2, 3], addresses: { 1: group2[0], 2: group2[1], 3: group2[2] } });
    refused(await run(['kv', 'up', '--groups', '3'], cwd), /holds a 2-group, 3-replica cluster .*--groups 3 differs: use --groups 2/);
    expect(await stopProc(first.proc, 'SIGINT'), first.proc.stderr()).toEqual({ code: 0, signal: null });
  }, 120_000);

  it('refuses bad flags on a new data dir, and the replica dirs of an earlier kv up that differ, creating nothing', async () => {
    const cwd = path.join(BASE, 'refusals');
    await fsp.mkdir(cwd, { recursive: true });
    refused(await run(['kv', 'up', '--replicas', '4'], cwd), /^error: --replicas must be odd, got 4/);
    refused(await run(['kv', 'up', '--base-port', '65535'], cwd), /^error: --base-port 65535 leaves no port for replica 3/);
    await expect(fsp.stat(path.join(cwd, 'data'))).rejects.toMatchObject({ code: 'ENOENT' });

    // A data dir an earlier svrkit's kv up made: replica dirs, no cluster.json.
    const legacy = path.join(cwd, 'legacy');
    for (const id of [1, 2, 3]) await fsp.mkdir(path.join(legacy, `replica-${id}`), { recursive: true });
    refused(
      await run(['kv', 'up', '--data-dir', legacy, '--replicas', '5'], cwd),
      /^error: data dir .*legacy holds a 3-replica cluster \(replica-1 \.\.\. replica-3\); --replicas 5 differs: use --replicas 3/,
    );
    refused(await run(['kv', 'get', 'k', '--data-dir', legacy], cwd), /it holds replicas of an earlier svrkit kv up, which did not record its cluster/);
    expect(await listing(legacy)).toEqual(['replica-1', 'replica-2', 'replica-3']);
    // Stray dirs (what kv up --replicas 5 used to leave): not one cluster.
    await fsp.mkdir(path.join(legacy, 'replica-4'));
    refused(await run(['kv', 'up', '--data-dir', legacy], cwd), /holds replica dirs replica-1, replica-2, replica-3, replica-4 and no cluster\.json/);
    expect(await listing(legacy)).toEqual(['replica-1', 'replica-2', 'replica-3', 'replica-4']);

    // A cluster.json kv up did not write is reported, not overwritten.
    const broken = path.join(cwd, 'broken');
    await fsp.mkdir(broken);
    await fsp.writeFile(path.join(broken, 'cluster.json'), '{"replicas": 3');
    const r = await run(['kv', 'up', '--data-dir', broken], cwd);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/cluster\.json is not a cluster record svrkit kv up wrote \(not JSON: .*\): remove it/);
    expect(await listing(broken)).toEqual(['cluster.json']);
  });
});
