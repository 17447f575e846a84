/**
 * The `svrkit kv` CLI as real processes: `kv serve` refusing bad data dirs and bad flags (exit 1,
 * a clear message, the data untouched), `kv up` running a local cluster, and the client commands
 * (get, put, delete, cas, status) with their output formats and exit codes.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PaxosKVClient } from '../../index.js';
import { DataDirError, KeyStore } from '../../services/paxoskv/storage.js';
import { alive, freePort, freePortRange, freePorts, killStarted, runSvrkit as run, spawnSvrkit, stopProc, waitServing, waitVoting, type Proc, type Run } from '../support/kv-processes.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BIN = path.join(ROOT, 'bin', 'svrkit.js');
const BASE = path.join(ROOT, 'test', '.tmp', `paxoskv-kv-cli-${process.pid}`);

async function sha256(file: string): Promise<string> {
  return createHash('sha256').update(await fsp.readFile(file)).digest('hex');
}

/** Pids of replicas that `kv up` started (its children, not ours): checked and, if left over, killed. */
const grandchildren = new Set<number>();

afterAll(async () => {
  await killStarted();
  // Replicas of a `kv up` that did not stop them (only when a test already failed).
  for (const pid of grandchildren) if (alive(pid)) process.kill(pid, 'SIGKILL');
  await fsp.rm(BASE, { recursive: true, force: true });
});

// -----------------------------------------------------------------------------------------------

describe('svrkit kv serve refuses bad data dirs and bad flags, without destroying data', () => {
  const dirs = new Map<number, string>();
  let peers = '';
  let fivePeers = '';
  let ports: number[] = [];

  const serve = (id: number, dataDir: string, peerList = peers) => ['kv', 'serve', '--id', String(id), '--peers', peerList, '--data-dir', dataDir];

  const startCluster = async (): Promise<Proc[]> => {
    const ps = [1, 2, 3].map((id) => spawnSvrkit(serve(id, dirs.get(id)!)));
    await Promise.all(ps.map((p, i) => waitServing(p, `replica ${i + 1}`)));
    return ps;
  };
  const stopCluster = async (ps: Proc[]): Promise<void> => {
    for (const p of ps) expect(await stopProc(p, 'SIGTERM'), p.stderr()).toEqual({ code: 0, signal: null });
  };
  const dataHashes = async () => Promise.all([1, 2, 3].map((id) => sha256(path.join(dirs.get(id)!, 'data.mdb'))));

  beforeAll(async () => {
    ports = await freePorts(5);
    peers = [1, 2, 3].map((id) => `${id}=127.0.0.1:${ports[id - 1]}`).join(',');
    fivePeers = [1, 2, 3, 4, 5].map((id) => `${id}=127.0.0.1:${ports[id - 1]}`).join(',');
    for (const id of [1, 2, 3]) dirs.set(id, path.join(BASE, 'serve', `replica-${id}`));
    // A cluster with one acknowledged write, then stopped cleanly.
    const ps = await startCluster();
    const put = await run(['kv', 'put', 'keep', 'precious', '--peers', peers]);
    expect(put.code, put.stderr).toBe(0);
    expect(JSON.parse(put.stdout)).toEqual({ key: 'keep', version: '1' });
    await stopCluster(ps);
  });

  it('refuses a data dir of another member, and one created for another peer list; the data survives', async () => {
    const before = await dataHashes();

    const wrongMember = await run(serve(1, dirs.get(2)!));
    expect(wrongMember.code, wrongMember.stderr).toBe(1);
    expect(wrongMember.signal).toBeNull();
    expect(wrongMember.stdout).not.toMatch(/serving/);
    expect(wrongMember.stderr).toMatch(/belongs to member 2 of cluster \[1,2,3\]; this replica is member 1 of \[1,2,3\]: wrong --data-dir or --id\?/);

    const wrongPeers = await run(serve(1, dirs.get(1)!, fivePeers));
    expect(wrongPeers.code, wrongPeers.stderr).toBe(1);
    expect(wrongPeers.signal).toBeNull();
    expect(wrongPeers.stdout).not.toMatch(/serving/);
    expect(wrongPeers.stderr).toMatch(/belongs to member 1 of cluster \[1,2,3\]; this replica is member 1 of \[1,2,3,4,5\]/);
    expect(wrongPeers.stderr).toMatch(/keep the first member list: changes of members are made with svrkit kv member/);

    expect(await dataHashes()).toEqual(before);
    // The right replicas on the same dirs still have the write.
    const ps = await startCluster();

    // A second replica 1 (on another port) on the dir replica 1 is using: refused, and replica 1 serves on.
    const twin = await run(serve(1, dirs.get(1)!, `1=127.0.0.1:${ports[3]},2=127.0.0.1:${ports[1]},3=127.0.0.1:${ports[2]}`));
    expect({ code: twin.code, signal: twin.signal }, twin.stderr).toEqual({ code: 1, signal: null });
    expect(twin.stderr).toMatch(new RegExp(`is in use by process ${ps[0]!.child.pid}: is another replica running with this --data-dir\\?`));
    expect(ps[0]!.child.exitCode).toBeNull();
    const got = await run(['kv', 'get', 'keep', '--peers', peers]);
    expect(got.code, got.stderr).toBe(0);
    expect(JSON.parse(got.stdout)).toEqual({ key: 'keep', found: true, version: '1', value: 'precious' });
    await stopCluster(ps);
  });

  it('refuses a truncated data file (half, a few bytes, empty) with a DataDirError message, and never reinitialises it', async () => {
    const original = path.join(dirs.get(1)!, 'data.mdb');
    const size = (await fsp.stat(original)).size;
    expect(size).toBeGreaterThan(4096);
    const cases = [
      { name: 'half', bytes: Math.floor(size / 2), message: /data\.mdb is truncated: \d+ bytes, but LMDB's meta page uses pages/ },
      { name: 'few', bytes: 5, message: /data\.mdb \(5 bytes\) is corrupt|data\.mdb is truncated/ },
      { name: 'empty', bytes: 0, message: /data\.mdb is empty \(0 bytes\); the data file was truncated/ },
    ];
    for (const c of cases) {
      const dir = path.join(BASE, 'truncated', c.name);
      await fsp.mkdir(dir, { recursive: true });
      await fsp.copyFile(original, path.join(dir, 'data.mdb'));
      await fsp.truncate(path.join(dir, 'data.mdb'), c.bytes);
      const before = await sha256(path.join(dir, 'data.mdb'));

      const r = await run(serve(1, dir));
      expect({ code: r.code, signal: r.signal }, `${c.name}: ${r.stderr}`).toEqual({ code: 1, signal: null });
      expect(r.stdout).not.toMatch(/serving/);
      expect(r.stderr, c.name).toMatch(c.message);
      expect(r.stderr, c.name).toContain(`data dir ${dir}`);
      expect((await fsp.stat(path.join(dir, 'data.mdb'))).size, `${c.name}: the data file was rewritten`).toBe(c.bytes);
      expect(await sha256(path.join(dir, 'data.mdb'))).toBe(before);

      // The same refusal in this process: a DataDirError, no SIGBUS.
      await expect(KeyStore.open(dir, { memberId: 1, members: [1, 2, 3] })).rejects.toBeInstanceOf(DataDirError);
    }
  });

  it('refuses bad flags (--id not in --peers, an even peer count, a malformed peer) and creates no data dir', async () => {
    const fresh = path.join(BASE, 'bad-flags', 'never-created');
    const notMember = await run(serve(4, fresh));
    expect(notMember.code, notMember.stderr).toBe(1);
    expect(notMember.stderr).toMatch(/--id 4 is not in --peers/);

    const even = await run(serve(1, fresh, '1=127.0.0.1:1,2=127.0.0.1:2'));
    expect(even.code, even.stderr).toBe(1);
    expect(even.stderr).toMatch(/a cluster needs an odd number of voters, got 2/);

    const malformed = await run(serve(1, fresh, '1=nohostport,2=127.0.0.1:2,3=127.0.0.1:3'));
    expect(malformed.code, malformed.stderr).toBe(1);
    expect(malformed.stderr).toMatch(/peer '1=nohostport': invalid address 'nohostport'/);

    const badId = await run(['kv', 'serve', '--id', 'one', '--peers', peers, '--data-dir', fresh]);
    expect(badId.code, badId.stderr).toBe(1);
    expect(badId.stderr).toMatch(/id must be a whole number/);

    // Joining a running cluster (issue 16): --peers or --join, --address with --join only, no --rejoin or --learners with it.
    const usage: Array<[string[], RegExp]> = [
      [['kv', 'serve', '--id', '4', '--data-dir', fresh], /give --peers \(a founding member\) or --join/],
      [['kv', 'serve', '--id', '4', '--peers', peers, '--join', '1=127.0.0.1:1', '--data-dir', fresh], /give --peers \(a founding member\) or --join/],
      [['kv', 'serve', '--id', '4', '--join', '1=127.0.0.1:1', '--data-dir', fresh], /--join needs --address/],
      [['kv', 'serve', '--id', '1', '--peers', peers, '--address', '127.0.0.1:9', '--data-dir', fresh], /--address is for --join/],
      [['kv', 'serve', '--id', '4', '--join', '4=127.0.0.1:1', '--address', '127.0.0.1:9', '--data-dir', fresh], /--join names member 4, this replica/],
      [['kv', 'serve', '--id', '4', '--join', '1=127.0.0.1:1', '--address', '127.0.0.1:9', '--rejoin', '--data-dir', fresh], /--join takes no --rejoin/],
      [['kv', 'serve', '--id', '4', '--join', '1=127.0.0.1:1', '--address', '127.0.0.1:9', '--learners', '1', '--data-dir', fresh], /--join takes no --learners/],
    ];
    const refused: Run[] = [];
    for (const [args, message] of usage) {
      const r = await run(args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(message);
      refused.push(r);
    }
    const badAddress = await run(['kv', 'serve', '--id', '4', '--join', '1=127.0.0.1:1', '--address', 'nohostport', '--data-dir', fresh]);
    expect(badAddress.code).toBe(1);
    expect(badAddress.stderr).toMatch(/'nohostport' is not host:port/);

    for (const r of [notMember, even, malformed, badId, badAddress, ...refused]) {
      expect(r.signal).toBeNull();
      expect(r.stdout).not.toMatch(/serving/);
    }
    await expect(fsp.stat(fresh)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('svrkit kv up and the client commands', () => {
  it('starts a cluster, serves put/get/cas/delete/status from the CLI, and stops on SIGINT', async () => {
    const base = await freePortRange(3);
    const dataDir = path.join(BASE, 'up');
    const up = spawnSvrkit(['kv', 'up', '--replicas', '3', '--data-dir', dataDir, '--base-port', String(base)]);
    const serving = await waitServing(up, 'kv up', 3);
    for (const m of serving) grandchildren.add(Number(m[3]));
    expect(serving.map((m) => Number(m[1])).sort()).toEqual([1, 2, 3]);
    for (const m of serving) expect(m[2]).toBe(`127.0.0.1:${base + Number(m[1]) - 1}`);
    const peers = `1=127.0.0.1:${base},2=127.0.0.1:${base + 1},3=127.0.0.1:${base + 2}`;
    expect(up.stdout()).toContain(`clients use --peers ${peers}`);
    // Each replica votes once the other two confirmed its incarnation.
    await waitVoting(up, 'kv up', 3);

    const kv = async (args: string[], stdin?: string | Uint8Array): Promise<Run> => run(['kv', ...args, '--peers', peers], { stdin });
    const ok = (r: Run): unknown => {
      expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
      const lines = r.stdout.trim().split('\n');
      expect(lines).toHaveLength(1);
      return JSON.parse(lines[0]!);
    };

    expect(ok(await kv(['put', 'k', 'hello']))).toEqual({ key: 'k', version: '1' });
    expect(ok(await kv(['get', 'k']))).toEqual({ key: 'k', found: true, version: '1', value: 'hello' });

    expect(ok(await kv(['put', 'k2'], 'from\nstdin \u00e9'))).toEqual({ key: 'k2', version: '1' });
    expect(ok(await kv(['get', 'k2']))).toEqual({ key: 'k2', found: true, version: '1', value: 'from\nstdin \u00e9' });

    // Bytes that are not UTF-8 come back as base64, in their own property.
    expect(ok(await kv(['put', 'bin'], new Uint8Array([0xff, 0x00, 0x80])))).toEqual({ key: 'bin', version: '1' });
    expect(ok(await kv(['get', 'bin']))).toEqual({ key: 'bin', found: true, version: '1', valueBase64: '/wCA' });

    expect(ok(await kv(['cas', 'k', '1', 'world']))).toEqual({ key: 'k', version: '2' });
    const stale = await kv(['cas', 'k', '1', 'x']);
    expect(stale.code).toBe(1);
    expect(stale.stdout).toBe('');
    expect(stale.stderr).toMatch(/^ERROR: FAILED_PRECONDITION: /);
    expect(stale.stderr).toMatch(/^ {2}x-version: 2$/m);
    expect(ok(await kv(['get', 'k']))).toEqual({ key: 'k', found: true, version: '2', value: 'world' });

    expect(ok(await kv(['delete', 'k']))).toEqual({ key: 'k', version: '3' });
    expect(ok(await kv(['get', 'k']))).toEqual({ key: 'k', found: false });
    expect(ok(await kv(['cas', 'k', '0', 'back']))).toEqual({ key: 'k', version: '4' });

    // kv list: one line per key with the prefix, in key order; kv watch: one line per version until SIGINT.
    const listed = await kv(['list', 'k']);
    expect({ code: listed.code, stderr: listed.stderr }).toEqual({ code: 0, stderr: '' });
    expect(listed.stdout.trim().split('\n').map((l) => JSON.parse(l) as unknown)).toEqual([
      { key: 'k', version: '4', value: 'back' },
      { key: 'k2', version: '1', value: 'from\nstdin \u00e9' },
    ]);
    const watch = spawnSvrkit(['kv', 'watch', 'k', '--peers', peers]);
    for (let i = 0; i < 250 && !watch.stdout().includes('"version":"4"'); i++) await new Promise((r) => setTimeout(r, 20));
    expect(ok(await kv(['put', 'k', 'watched']))).toEqual({ key: 'k', version: '5' });
    for (let i = 0; i < 250 && !watch.stdout().includes('"version":"5"'); i++) await new Promise((r) => setTimeout(r, 20));
    expect(await stopProc(watch, 'SIGINT')).toEqual({ code: 0, signal: null });
    expect(watch.stdout().trim().split('\n').map((l) => JSON.parse(l) as unknown)).toEqual([
      { key: 'k', version: '4', found: true, value: 'back', gap: true },
      { key: 'k', version: '5', found: true, value: 'watched' },
    ]);

    const badVersion = await kv(['cas', 'k', 'v1', 'x']);
    expect(badVersion.code).toBe(1);
    expect(badVersion.stderr).toMatch(/version 'v1' is not a whole number/);

    const status = await kv(['status']);
    expect(status.code, status.stderr).toBe(0);
    const rows = status.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(rows).toHaveLength(3);
    for (const [i, row] of rows.entries()) {
      expect(row).toMatchObject({ id: i + 1, address: `127.0.0.1:${base + i}`, up: true, mode: 'voter', votes: true, voters: [1, 2, 3], learnerOnly: false });
    }

    // SIGINT: `kv up` stops its replicas and exits 0.
    const exit = await stopProc(up, 'SIGINT');
    expect(exit, up.stderr()).toEqual({ code: 0, signal: null });
    for (const id of [1, 2, 3]) expect(up.stdout()).toContain(`closing replica ${id}`);
    expect(up.stderr()).not.toMatch(/exited/);
    for (const pid of grandchildren) expect(alive(pid), `replica pid ${pid} still running after kv up exited`).toBe(false);
    // And nothing answers any more.
    const after = await kv(['get', 'k', '--timeout', '300']);
    expect(after.code).toBe(1);
  });

  it('kv get with no replica listening: exit 1, UNAVAILABLE', async () => {
    const peers = (await freePorts(3)).map((p) => `127.0.0.1:${p}`).join(',');
    const r = await run(['kv', 'get', 'k', '--peers', peers, '--timeout', '300'], { timeoutMs: 15_000 });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^ERROR: UNAVAILABLE: /);

    const status = await run(['kv', 'status', '--peers', peers, '--timeout', '300'], { timeoutMs: 15_000 });
    expect(status.code).toBe(1);
    const rows = status.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(rows.map((row) => row.up)).toEqual([false, false, false]);
    expect(status.stderr).toMatch(/ERROR: UNAVAILABLE: 3 of 3 replicas are down: no majority/);
  });
});

describe('svrkit kv serve: learners, a lost disk, --rejoin', () => {
  it('refuses an even number of voters and bad learner lists; a learner shows in status as not voting', async () => {
    const dir = path.join(BASE, 'learners');
    const ports = await freePorts(4);
    const peers = ports.map((p, i) => `${i + 1}=127.0.0.1:${p}`).join(',');
    const twoVoters = await run(['kv', 'serve', '--id', '1', '--peers', peers.split(',').slice(0, 3).join(','), '--learners', '3', '--data-dir', path.join(dir, 'x')]);
    expect(twoVoters.code).toBe(1);
    expect(twoVoters.stderr).toMatch(/a cluster needs an odd number of voters, got 2/);
    const notMember = await run(['kv', 'serve', '--id', '1', '--peers', peers, '--learners', '7', '--data-dir', path.join(dir, 'x')]);
    expect(notMember.stderr).toMatch(/--learners: 7 is not in --peers/);
    const bad = await run(['kv', 'serve', '--id', '1', '--peers', peers, '--learners', 'four', '--data-dir', path.join(dir, 'x')]);
    expect(bad.stderr).toMatch(/learner 'four' is not a member id/);

    const ps = [1, 2, 3, 4].map((id) => spawnSvrkit(['kv', 'serve', '--id', String(id), '--peers', peers, '--learners', '4', '--data-dir', path.join(dir, `r${id}`)]));
    await Promise.all(ps.slice(0, 3).map((p, i) => waitVoting(p, `replica ${i + 1}`)));
    await waitServing(ps[3]!, 'learner 4');
    expect(ps[3]!.stdout()).toMatch(/paxoskv replica 4 \(learner\) of \[1,2,3,4\]/);
    const put = await run(['kv', 'put', 'k', 'v', '--peers', peers]);
    expect(put.code, put.stderr).toBe(0);
    const status = await run(['kv', 'status', '--peers', peers]);
    const rows = status.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(rows.map((r) => [r.id, r.mode, r.votes])).toEqual([[1, 'voter', true], [2, 'voter', true], [3, 'voter', true], [4, 'learner', false]]);
    for (const r of rows) expect(r.voters).toEqual([1, 2, 3]);
    // The learner list is part of the data dir: a restart under another list is refused.
    expect(await stopProc(ps[0]!, 'SIGTERM')).toEqual({ code: 0, signal: null });
    const changed = await run(['kv', 'serve', '--id', '1', '--peers', peers, '--learners', '3', '--data-dir', path.join(dir, 'r1')]);
    expect(changed.code).toBe(1);
    expect(changed.stderr).toMatch(/whose learners are \[4\]; this replica was started with --learners \[3\]/);
    for (const p of ps.slice(1)) await stopProc(p, 'SIGTERM');
  });

  it('a replica whose data dir was emptied refuses to vote and says to rejoin; with --rejoin it fences, catches up and votes', async () => {
    const dir = path.join(BASE, 'lost-disk');
    const ports = await freePorts(3);
    const peers = ports.map((p, i) => `${i + 1}=127.0.0.1:${p}`).join(',');
    const serve = (id: number, ...extra: string[]) => spawnSvrkit(['kv', 'serve', '--id', String(id), '--peers', peers, '--data-dir', path.join(dir, `r${id}`), ...extra]);
    const ps = [1, 2, 3].map((id) => serve(id));
    await Promise.all(ps.map((p, i) => waitVoting(p, `replica ${i + 1}`)));
    for (let i = 0; i < 8; i++) expect((await run(['kv', 'put', `k${i}`, `v${i}`, '--peers', peers])).code).toBe(0);
    // Replica 3 loses its disk.
    await stopProc(ps[2]!, 'SIGKILL');
    await fsp.rm(path.join(dir, 'r3'), { recursive: true, force: true });
    const forgot = serve(3);
    const exit = await forgot.exited;
    expect(exit.code).toBe(1);
    expect(forgot.stderr()).toMatch(/error: paxoskv replica 3 refuses to vote: its data dir is new, but member [12] has seen start 1 of it: this replica lost its data\. Restart it with --rejoin/);
    expect(forgot.stderr()).not.toMatch(/storage failed|\n\s+at /);
    // As told: --rejoin (the dir the refused start left behind never voted, so it is taken).
    const rejoined = serve(3, '--rejoin');
    await waitVoting(rejoined, 'replica 3 (rejoin)');
    expect(rejoined.stdout()).toMatch(/replica 3 starting after a data loss \(--rejoin\)/);
    expect(rejoined.stdout()).toMatch(/replica 3 rejoining: it lost its data; fencing every key/);
    const status = await run(['kv', 'status', '--peers', peers]);
    const row3 = JSON.parse(status.stdout.trim().split('\n')[2]!) as Record<string, unknown>;
    expect(row3).toMatchObject({ id: 3, mode: 'voter', votes: true, keys: '8', incarnation: '2' });
    // It holds every key again: with replica 1 down, 2 and 3 serve them all.
    await stopProc(ps[0]!, 'SIGKILL');
    for (let i = 0; i < 8; i++) {
      const got = await run(['kv', 'get', `k${i}`, '--peers', peers.split(',').slice(1).join(',')]);
      expect(JSON.parse(got.stdout)).toMatchObject({ key: `k${i}`, found: true, value: `v${i}` });
    }
    await stopProc(rejoined, 'SIGTERM');
    await stopProc(ps[1]!, 'SIGTERM');
  });

  it('kv verify finds lagging replicas and an entry that differs from the majority, and --repair fixes both', async () => {
    const dir = path.join(BASE, 'verify');
    const ports = await freePorts(3);
    const peers = ports.map((p, i) => `${i + 1}=127.0.0.1:${p}`).join(',');
    const serve = (id: number) => spawnSvrkit(['kv', 'serve', '--id', String(id), '--peers', peers, '--data-dir', path.join(dir, `r${id}`)]);
    const ps = [1, 2, 3].map((id) => serve(id));
    await Promise.all(ps.map((p, i) => waitVoting(p, `replica ${i + 1}`)));
    const lines = (r: Run) => r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    for (let i = 0; i < 4; i++) expect((await run(['kv', 'put', `k${i}`, `a${i}`, '--peers', peers])).code).toBe(0);
    // Let replica 3 learn them, then stop it; the others move on.
    for (let i = 0; i < 50; i++) {
      const all = lines(await run(['kv', 'verify', '--peers', peers]));
      if (all.at(-1)!.ok === 4) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    await stopProc(ps[2]!, 'SIGTERM');
    for (let i = 0; i < 2; i++) expect((await run(['kv', 'put', `k${i}`, `b${i}`, '--peers', peers])).code).toBe(0);
    expect((await run(['kv', 'put', 'k9', 'new', '--peers', peers])).code).toBe(0);
    // Replica 3's entry of k3 is rewritten on disk with another value at the same version, with a
    // valid checksum: damage only a comparison across replicas can see.
    const store = await KeyStore.open(path.join(dir, 'r3'), { memberId: 3, members: [1, 2, 3] });
    const rec = store.get('k3')!;
    await store.write(new Map([['k3', { ...rec, chosen: { ...rec.chosen!, value: new TextEncoder().encode('forged') } }]]));
    await store.close();
    const back = serve(3);
    await waitVoting(back, 'replica 3 (back)');
    const found = await run(['kv', 'verify', '--peers', peers]);
    expect(found.code).toBe(1); // a divergence not repaired
    const diffs = lines(found);
    expect(diffs.slice(0, -1)).toEqual([
      { key: 'k0', kind: 'lagging', version: '2', replicas: [3] },
      { key: 'k1', kind: 'lagging', version: '2', replicas: [3] },
      { key: 'k3', kind: 'diverged', version: '1', replicas: [3], majority: true },
      { key: 'k9', kind: 'lagging', version: '1', replicas: [3] },
    ]);
    expect(diffs.at(-1)).toEqual({ keys: 5, ok: 1, lagging: 3, diverged: 1, lost: 0, repaired: 0, down: [] });
    const repaired = await run(['kv', 'verify', '--repair', '--peers', peers]);
    expect(repaired.code, repaired.stderr).toBe(0);
    expect(lines(repaired).at(-1)).toMatchObject({ repaired: 4 });
    // Replica 3 repairs k3 from the others (it asks them, then writes the majority's entry).
    let last: Record<string, unknown> = {};
    for (let i = 0; i < 50; i++) {
      last = lines(await run(['kv', 'verify', '--peers', peers])).at(-1)!;
      if (last.ok === 5) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(last).toEqual({ keys: 5, ok: 5, lagging: 0, diverged: 0, lost: 0, repaired: 0, down: [] });
    const got = await run(['kv', 'get', 'k3', '--peers', peers.split(',').slice(2).join(',') + ',' + peers.split(',')[0]]);
    expect(JSON.parse(got.stdout)).toMatchObject({ key: 'k3', value: 'a3', version: '1' });
    await stopProc(back, 'SIGTERM');
    for (const p of ps.slice(0, 2)) await stopProc(p, 'SIGTERM');
  }, 90_000);

  it('a 4 KiB page overwritten inside a 1 MiB value on disk is never served: the replica names the key and repairs it from the others', async () => {
    const dir = path.join(BASE, 'bad-page');
    const [metricsPort, ...ports] = await freePorts(4);
    const peers = ports.map((p, i) => `${i + 1}=127.0.0.1:${p}`).join(',');
    const addresses = ports.map((p) => `127.0.0.1:${p}`);
    const serve = (id: number, ...extra: string[]) => spawnSvrkit(['kv', 'serve', '--id', String(id), '--peers', peers, '--data-dir', path.join(dir, `r${id}`), ...extra]);
    const ps = [1, 2, 3].map((id) => serve(id));
    await Promise.all(ps.map((p, i) => waitVoting(p, `replica ${i + 1}`)));
    const value = new Uint8Array(1024 * 1024);
    for (let i = 0; i < value.length; i++) value[i] = (i * 13 + 5) & 0xff;
    const kv = new PaxosKVClient({ peers: addresses });
    try {
      expect(await kv.put('big', value, { timeoutMs: 10_000 })).toBe(1n);
    } finally {
      kv.close();
    }
    // Replica 3 stops (it learned the value: every replica is sent the chosen entry), and a page in
    // the middle of the value is overwritten on its disk.
    const waitLearned = async (): Promise<void> => {
      for (let i = 0; i < 100; i++) {
        const r3 = new PaxosKVClient({ peers: [addresses[2]!] });
        try {
          if ((await r3.status(0)).keys === 1n) return;
        } finally {
          r3.close();
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    await waitLearned();
    expect(await stopProc(ps[2]!, 'SIGTERM')).toEqual({ code: 0, signal: null });
    const file = path.join(dir, 'r3', 'data.mdb');
    // The value is in the file more than once (LMDB copies on write: the accepted entry, then the
    // chosen one, and freed pages keep old copies). Every copy gets a page overwritten, so the live
    // record surely has one.
    const data = await fsp.readFile(file);
    const probe = Buffer.from(value.subarray(300_000, 300_064));
    const copies: number[] = [];
    for (let at = data.indexOf(probe); at >= 0; at = data.indexOf(probe, at + 1)) copies.push(at);
    expect(copies.length).toBeGreaterThan(0);
    // Only pages that hold value bytes (a stale copy may be partly overwritten by LMDB's own pages).
    const fh = await fsp.open(file, 'r+');
    let overwritten = 0;
    for (const at of copies) {
      const start = at - 300_000;
      const page = (Math.floor((start + 700_000) / 4096) + 1) * 4096;
      if (!data.subarray(page, page + 4096).equals(Buffer.from(value.subarray(page - start, page - start + 4096)))) continue;
      await fh.write(Buffer.alloc(4096, 0x5a), 0, 4096, page);
      overwritten++;
    }
    await fh.close();
    expect(overwritten).toBeGreaterThan(0);
    const restarted = serve(3, '--metrics-port', String(metricsPort));
    await waitVoting(restarted, 'replica 3 (restarted on the damaged dir)');
    expect(restarted.stdout()).toContain(`metrics on http://127.0.0.1:${metricsPort}/metrics`);
    expect(restarted.stdout()).toMatch(/found 1 record\(s\) failing their checksum: "big" \(checksum mismatch: stored CRC-32 [0-9a-f]{8}, computed [0-9a-f]{8}/);
    // It repairs the key from the other voters (status counts it), then, alone with replica 1
    // (replica 2 down), serves the value byte for byte.
    const r3 = new PaxosKVClient({ peers: [addresses[2]!] });
    try {
      let status = await r3.status(0);
      for (let i = 0; i < 100 && status.lostKeysRepaired < 1n; i++) {
        await new Promise((r) => setTimeout(r, 100));
        status = await r3.status(0);
      }
      expect(status).toMatchObject({ lostKeysFound: 1n, lostKeysRepaired: 1n, lostKeysRepairing: 0n });
    } finally {
      r3.close();
    }
    // Its Prometheus metrics count the same, and the record that failed its checksum at open.
    const scraped = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    const sample = (name: string): number | undefined => {
      const line = scraped.split('\n').find((l) => l.startsWith(`${name} `));
      return line === undefined ? undefined : Number(line.slice(name.length + 1));
    };
    expect(sample('svrkit_paxoskv_lost_keys_found_total')).toBe(1);
    expect(sample('svrkit_paxoskv_lost_keys_repaired_total')).toBe(1);
    expect(sample('svrkit_paxoskv_lost_keys_repairing')).toBe(0);
    expect(sample('svrkit_paxoskv_corrupt_reads_total')).toBeGreaterThanOrEqual(1);
    expect(sample('svrkit_paxoskv_keys')).toBe(1);
    expect(sample('svrkit_paxoskv_mode{mode="voter"}')).toBe(1);
    expect(scraped).toMatch(/^svrkit_server_handled_total\{service="svrkit\.paxoskv\.PaxosKV",method="Status",code="OK"\} [1-9]/m);
    await stopProc(ps[1]!, 'SIGKILL');
    const reader = new PaxosKVClient({ peers: [addresses[2]!, addresses[0]!] });
    try {
      const got = await reader.get('big', { timeoutMs: 10_000 });
      expect(got?.version).toBe(1n);
      expect(Buffer.from(got!.value).equals(Buffer.from(value))).toBe(true);
    } finally {
      reader.close();
    }
    // It votes on the key again past its fence: it may have promised in instance 2 before the
    // damage, so instance 2 is decided without it (replica 2 back), and instance 3 with it
    // (replica 2 down again).
    const back = serve(2);
    await waitVoting(back, 'replica 2 (back)');
    const writer = new PaxosKVClient({ peers: addresses });
    try {
      expect(await writer.put('big', new Uint8Array([2]), { timeoutMs: 10_000 })).toBe(2n);
      await stopProc(back, 'SIGKILL');
      expect(await writer.put('big', new Uint8Array([3]), { timeoutMs: 10_000 })).toBe(3n);
    } finally {
      writer.close();
    }
    await stopProc(restarted, 'SIGTERM');
    await stopProc(ps[0]!, 'SIGTERM');
  }, 60_000);
});
