/**
 * PaxosKV over TLS (issue 15), with real processes on 127.0.0.1:
 *
 * - `svrkit kv up --tls-dir` makes a CA and per-replica certificates, records the TLS dir, and the
 *   kv commands then talk TLS by themselves; a plain client and a client trusting another CA are
 *   refused, and a restart with another --tls-dir is refused before anything starts.
 * - Three `svrkit kv serve --tls-dir` replicas (certificates from `svrkit kv certs`) refuse peer
 *   batches from a caller whose certificate does not name the member the batch claims to be from:
 *   another CA's certificate for that member, the cluster's client certificate, another member's,
 *   or none. The cluster goes on serving, and a replica never delivers to an impostor listening
 *   on a member's address with a certificate of another member.
 *
 * The SIGKILL load test runs over TLS as well (processes.test.ts).
 */
import { promises as fsp, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, ConfigClient, PaxosKVClient, RpcError, Server, Status, type TlsClientOptions } from '../../index.js';
import { PaxosKVClient as PaxosKVStub } from '../../services/paxoskv/gen/svrkit/paxoskv/paxoskv.js';
import { clusterFingerprint } from '../../services/paxoskv/codec.js';
import { PaxosPeerClient, PaxosPeerService, type PeerBatch } from '../../services/paxoskv/gen/svrkit/paxoskv/paxoskv.js';
import { freePortRange, killStarted, runSvrkit, spawnSvrkit, stopProc, waitServing, waitVoting, type Proc } from '../support/kv-processes.js';
import { rpcFailure } from '../support/rpc-failure.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BASE = path.join(ROOT, 'test', '.tmp', `paxoskv-tls-${process.pid}`);
const text = (s: string) => new TextEncoder().encode(s);
const decode = (b: Uint8Array) => new TextDecoder().decode(b);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

afterAll(async () => {
  await killStarted();
  await fsp.rm(BASE, { recursive: true, force: true });
});

describe('svrkit kv up --tls-dir', () => {
  const dataDir = path.join(BASE, 'up-data');
  const tlsDir = path.join(BASE, 'up-tls');
  let up: Proc;
  let peers = '';

  beforeAll(async () => {
    const base = await freePortRange(3);
    peers = [1, 2, 3].map((id) => `${id}=127.0.0.1:${base + id - 1}`).join(',');
    up = spawnSvrkit(['kv', 'up', '--data-dir', dataDir, '--tls-dir', tlsDir, '--base-port', String(base)]);
    await waitVoting(up, 'kv up', 3, 30_000);
  });

  afterAll(async () => {
    await stopProc(up, 'SIGTERM');
  });

  it('makes a CA and a certificate per replica, records the TLS dir, and the kv commands use it', async () => {
    expect(up.stdout()).toMatch(/made a CA and certificates in .*ca-key\.pem, ca\.pem, member-1-key\.pem, member-1\.pem/);
    expect(up.stdout()).toContain('over TLS');
    const files = (await fsp.readdir(tlsDir)).sort();
    expect(files).toEqual(['ca-key.pem', 'ca.pem', 'client-key.pem', 'client.pem', 'member-1-key.pem', 'member-1.pem', 'member-2-key.pem', 'member-2.pem', 'member-3-key.pem', 'member-3.pem']);
    expect((await fsp.stat(path.join(tlsDir, 'ca-key.pem'))).mode & 0o077).toBe(0);
    const record = JSON.parse(await fsp.readFile(path.join(dataDir, 'cluster.json'), 'utf8')) as { tlsDir?: string };
    expect(record.tlsDir).toBe(tlsDir);

    const put = await runSvrkit(['kv', 'put', '--data-dir', dataDir, 'greeting', 'hello over tls']);
    expect(put.code, put.stderr).toBe(0);
    const get = await runSvrkit(['kv', 'get', '--data-dir', dataDir, 'greeting']);
    expect(get.code, get.stderr).toBe(0);
    expect(JSON.parse(get.stdout)).toMatchObject({ key: 'greeting', found: true, value: 'hello over tls' });
    // --peers with --tls-dir, as kv up prints it.
    const explicit = await runSvrkit(['kv', 'get', '--peers', peers, '--tls-dir', tlsDir, 'greeting']);
    expect(explicit.code, explicit.stderr).toBe(0);
  });

  it('refuses a plain client, and a client that trusts another CA', async () => {
    const plain = await runSvrkit(['kv', 'get', '--peers', peers, '--timeout', '2000', 'greeting']);
    expect(plain.code).toBe(1);
    expect(plain.stderr).toMatch(/UNAVAILABLE.*expect TLS/);

    const otherTls = path.join(BASE, 'other-ca');
    const made = await runSvrkit(['kv', 'certs', '--tls-dir', otherTls, '--peers', peers]);
    expect(made.code, made.stderr).toBe(0);
    const foreign = await runSvrkit(['kv', 'get', '--peers', peers, '--tls-dir', otherTls, '--timeout', '2000', 'greeting']);
    expect(foreign.code).toBe(1);
    expect(foreign.stderr).toMatch(/UNAVAILABLE.*(certificate|self[- ]signed)/i);
  });

  it('the config commands, config watch --server and a ConfigClient with channel.tls reach the config center over TLS', async () => {
    const published = await runSvrkit(['config', 'publish', '--data-dir', dataDir, 'shop', 'color=blue']);
    expect(published.code, published.stderr).toBe(0);
    const got = await runSvrkit(['config', 'get', '--data-dir', dataDir, 'shop']);
    expect(got.code, got.stderr).toBe(0);
    expect(got.stdout).toContain('"color":"blue"');
    // Through a replica's ConfigCenter service: the TLS dir comes from the recorded cluster.
    const watch = spawnSvrkit(['config', 'watch', 'shop', '--server', peers.split(',')[0]!.split('=')[1]!, '--data-dir', dataDir]);
    try {
      await waitServing(watch, 'config watch', 1, 20_000, /"source":"server".*"color":"blue"/g);
    } finally {
      await stopProc(watch, 'SIGTERM');
    }
    const client = new ConfigClient({ target: `config://${peers.split(',')[1]!.split('=')[1]!}`, channel: { tls: { ca: readFileSync(path.join(tlsDir, 'ca.pem'), 'utf8') } }, namespace: 'shop' });
    try {
      await client.ready();
      expect(client.source).toBe('server');
      expect(client.get('color')).toBe('blue');
    } finally {
      await client.close();
    }
  });

  it('refuses a second start with another --tls-dir before starting anything', async () => {
    const r = await runSvrkit(['kv', 'up', '--data-dir', dataDir, '--tls-dir', path.join(BASE, 'elsewhere')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`recorded with --tls-dir ${tlsDir}`);
    await expect(fsp.stat(path.join(BASE, 'elsewhere'))).rejects.toThrow(/ENOENT/);
  });
});

describe('kv serve --tls-dir: peer traffic only from certificates of the cluster', () => {
  const tlsDir = path.join(BASE, 'serve-tls');
  const otherDir = path.join(BASE, 'serve-other');
  const addresses = new Map<number, string>();
  const replicas = new Map<number, Proc>();
  let peersFlag = '';
  const ca = () => readFileSync(path.join(tlsDir, 'ca.pem'), 'utf8');
  const pem = (dir: string, name: string) => readFileSync(path.join(dir, name), 'utf8');

  const start = async (id: number): Promise<void> => {
    const p = spawnSvrkit(['kv', 'serve', '--id', String(id), '--peers', peersFlag, '--data-dir', path.join(BASE, `serve-r${id}`), '--tls-dir', tlsDir]);
    replicas.set(id, p);
    await waitVoting(p, `replica ${id}`);
  };

  beforeAll(async () => {
    const base = await freePortRange(3);
    for (const id of [1, 2, 3]) addresses.set(id, `127.0.0.1:${base + id - 1}`);
    peersFlag = [...addresses].map(([id, a]) => `${id}=${a}`).join(',');
    for (const dir of [tlsDir, otherDir]) {
      const r = await runSvrkit(['kv', 'certs', '--tls-dir', dir, '--peers', peersFlag]);
      expect(r.code, r.stderr).toBe(0);
    }
    await Promise.all([1, 2, 3].map(start));
  });

  afterAll(async () => {
    for (const p of replicas.values()) await stopProc(p, 'SIGKILL').catch(() => undefined);
  });

  /** Delivers an empty batch to replica 1 as member `from`, over a connection presenting `client`. */
  const deliverAs = async (from: number, client: Omit<TlsClientOptions, 'ca'>): Promise<PeerBatch> => {
    const stub = new PaxosPeerClient(new Channel(addresses.get(1)!, { tls: { ca: ca(), ...client }, retryPolicy: false }));
    try {
      return await stub.deliver({ from, cluster: clusterFingerprint([1, 2, 3]), messages: [] }, { timeoutMs: 3000 });
    } finally {
      stub.close();
    }
  };

  it('refuses a batch from another CA\'s certificate, the client certificate, another member\'s, or none', async () => {
    const cases: Array<[string, Omit<TlsClientOptions, 'ca'>, RegExp]> = [
      ['another CA\'s certificate for member 2', { cert: pem(otherDir, 'member-2.pem'), key: pem(otherDir, 'member-2-key.pem') }, /presented no certificate signed by the cluster CA/],
      ['the cluster\'s client certificate', { cert: pem(tlsDir, 'client.pem'), key: pem(tlsDir, 'client-key.pem') }, /certificate of no member/],
      ['member 3\'s certificate', { cert: pem(tlsDir, 'member-3.pem'), key: pem(tlsDir, 'member-3-key.pem') }, /certificate of member 3/],
      ['no certificate', {}, /presented no certificate/],
    ];
    for (const [what, client, message] of cases) {
      const err = await rpcFailure(deliverAs(2, client));
      expect(err.code, what).toBe(Status.UNAUTHENTICATED);
      expect(err.reason, what).toBe('PEER_NOT_AUTHENTICATED');
      expect(err.message, what).toMatch(message);
    }
    // The check is not a blanket refusal: member 2's own certificate is let through.
    const ok = await deliverAs(2, { cert: pem(tlsDir, 'member-2.pem'), key: pem(tlsDir, 'member-2-key.pem') });
    expect(ok.from).toBe(1);
  });

  it('refuses Repair (an operator call) from a caller without a certificate of the cluster', async () => {
    const repairAs = async (client: Omit<TlsClientOptions, 'ca'>) => {
      const stub = new PaxosKVStub(new Channel(addresses.get(2)!, { tls: { ca: ca(), ...client }, retryPolicy: false }));
      try {
        return await stub.repair({ key: 'repair-me' }, { timeoutMs: 3000 });
      } finally {
        stub.close();
      }
    };
    const err = await rpcFailure(repairAs({}));
    expect(err.code).toBe(Status.UNAUTHENTICATED);
    expect(err.reason).toBe('ADMIN_NOT_AUTHENTICATED');
    expect(err.message).toMatch(/Repair needs a certificate signed by the cluster CA/);
    const foreign = await rpcFailure(repairAs({ cert: pem(otherDir, 'client.pem'), key: pem(otherDir, 'client-key.pem') }));
    expect(foreign.reason).toBe('ADMIN_NOT_AUTHENTICATED');
    // With the cluster's client certificate (what kv verify --repair presents) it is served.
    expect(await repairAs({ cert: pem(tlsDir, 'client.pem'), key: pem(tlsDir, 'client-key.pem') })).toEqual({ repairing: true });
  });

  it('still serves, and never delivers to an impostor on a member\'s address', async () => {
    const kv = new PaxosKVClient({ peers: [...addresses.values()], channel: { tls: { ca: ca() } } });
    try {
      expect(await kv.put('before', text('1'))).toBeGreaterThan(0n);
      // Replica 3 is SIGKILLed; an impostor takes its address with member 2's certificate (same CA).
      const victim = replicas.get(3)!;
      await stopProc(victim, 'SIGKILL');
      let delivered = 0;
      class Impostor extends PaxosPeerService {
        override async deliver(batch: PeerBatch): Promise<PeerBatch> {
          delivered++;
          return { from: 3, cluster: batch.cluster, messages: [] };
        }
      }
      const impostor = new Server({ tls: { cert: pem(tlsDir, 'member-2.pem'), key: pem(tlsDir, 'member-2-key.pem') } }).addService(new Impostor());
      const port = Number(addresses.get(3)!.split(':')[1]);
      await impostor.listen(port, '127.0.0.1');
      try {
        for (let i = 0; i < 20; i++) expect(await kv.put(`during-${i}`, text(String(i)))).toBeGreaterThan(0n);
        await sleep(500); // the replicas' reconnect attempts to member 3
        expect(delivered, 'a replica delivered a peer batch to a server whose certificate names another member').toBe(0);
      } finally {
        await impostor.close();
      }
      // Replica 3 comes back and catches up.
      await start(3);
      const direct = new PaxosKVClient({ peers: [addresses.get(3)!], channel: { tls: { ca: ca() } } });
      try {
        const got = await direct.get('during-19', { timeoutMs: 10_000 });
        expect(got === null ? null : decode(got.value)).toBe('19');
      } finally {
        direct.close();
      }
    } finally {
      kv.close();
    }
  });
});
