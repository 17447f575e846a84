/**
 * A PaxosKV cluster's TLS dir, in process: making it (services/paxoskv/certificates.ts), checking a
 * replica's material (tls.ts), and which TLS dir the kv commands use (framework/cli/kv-cluster.ts).
 * Certificates of a CA made elsewhere come from the `openssl` command.
 */
import { execFileSync } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { promises as fsp, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { subjectAltNameUris } from '../../index.js';
import { createClusterCertificates } from '../../services/paxoskv/certificates.js';
import { checkReplicaTls, memberNamed, memberUri, readClientTls, readReplicaTls } from '../../services/paxoskv/tls.js';
import { KV_PEERS_ENV, KV_TLS_DIR_ENV, readClusterRecord, resolveClientCluster, writeClusterRecord } from '../../framework/cli/kv-cluster.js';

let base: string;
beforeAll(async () => {
  base = await fsp.mkdtemp(path.join(os.tmpdir(), 'svrkit-tls-dir-'));
});
afterAll(async () => {
  await fsp.rm(base, { recursive: true, force: true });
});

const members = new Map([
  [1, '127.0.0.1:7101'],
  [2, '127.0.0.1:7102'],
  [3, 'db3.example:7103'],
]);
const read = (dir: string, f: string) => readFileSync(path.join(dir, f), 'utf8');
const uris = (pem: string) => subjectAltNameUris(new X509Certificate(pem).subjectAltName);
const openssl = (cwd: string, args: string[]) => execFileSync('openssl', args, { cwd, stdio: 'pipe' }).toString();
const replicaTls = (dir: string, id: number) => ({ ca: read(dir, 'ca.pem'), cert: read(dir, `member-${id}.pem`), key: read(dir, `member-${id}-key.pem`) });

describe('createClusterCertificates', () => {
  it('makes a CA, a certificate per member naming its URI and host, and a client certificate', async () => {
    const dir = path.join(base, 'fresh');
    const made = await createClusterCertificates(dir, members);
    expect(made.newCa).toBe(true);
    expect(made.written.map((f) => path.basename(f)).sort()).toEqual(
      ['ca-key.pem', 'ca.pem', 'client-key.pem', 'client.pem', 'member-1-key.pem', 'member-1.pem', 'member-2-key.pem', 'member-2.pem', 'member-3-key.pem', 'member-3.pem'].sort(),
    );
    expect((await fsp.stat(dir)).mode & 0o777).toBe(0o700);
    for (const f of ['ca-key.pem', 'member-1-key.pem', 'client-key.pem']) expect((await fsp.stat(path.join(dir, f))).mode & 0o777, f).toBe(0o600);
    const ca = new X509Certificate(read(dir, 'ca.pem'));
    expect(ca.ca).toBe(true);
    for (const id of [1, 2, 3]) {
      const cert = new X509Certificate(read(dir, `member-${id}.pem`));
      expect(cert.checkIssued(ca) && cert.verify(ca.publicKey), `member ${id}`).toBe(true);
      expect(memberNamed(uris(read(dir, `member-${id}.pem`)))).toBe(id);
      expect(() => checkReplicaTls(replicaTls(dir, id), id)).not.toThrow();
    }
    expect(new X509Certificate(read(dir, 'member-1.pem')).subjectAltName).toBe(`URI:${memberUri(1)}, IP Address:127.0.0.1, DNS:localhost`);
    expect(new X509Certificate(read(dir, 'member-3.pem')).subjectAltName).toBe(`URI:${memberUri(3)}, DNS:db3.example`);
    expect(memberNamed(uris(read(dir, 'client.pem')))).toBeUndefined();
    expect(openssl(dir, ['verify', '-CAfile', 'ca.pem', 'member-1.pem', 'client.pem'])).toMatch(/member-1.pem: OK\n.*client.pem: OK/);
    // A member's material does not pass for another's.
    expect(() => checkReplicaTls(replicaTls(dir, 2), 1)).toThrow(/names member 2; it must carry exactly one member URI, spiffe:\/\/svrkit.paxoskv\/member\/1/);
    expect(() => checkReplicaTls({ ...replicaTls(dir, 1), key: read(dir, 'member-2-key.pem') }, 1)).toThrow(/not the key of its certificate/);
  });

  it('issues only what is missing, with the same CA, when members are added', async () => {
    const dir = path.join(base, 'grow');
    await createClusterCertificates(dir, members);
    const before = read(dir, 'member-1.pem');
    const again = await createClusterCertificates(dir, members);
    expect(again).toEqual({ written: [], newCa: false });
    const grown = await createClusterCertificates(dir, new Map([...members, [4, '127.0.0.1:7104']]));
    expect(grown.newCa).toBe(false);
    expect(grown.written.map((f) => path.basename(f))).toEqual(['member-4-key.pem', 'member-4.pem']);
    expect(read(dir, 'member-1.pem')).toBe(before);
    expect(() => checkReplicaTls(replicaTls(dir, 4), 4)).not.toThrow();
  });

  it('refuses a dir whose CA is gone, or with a certificate without its key, writing nothing', async () => {
    const dir = path.join(base, 'broken');
    await createClusterCertificates(dir, members);
    await fsp.rm(path.join(dir, 'member-2-key.pem'));
    await expect(createClusterCertificates(dir, members)).rejects.toThrow(/has member-2.pem without member-2-key.pem/);
    await fsp.rm(path.join(dir, 'member-2.pem'));
    await fsp.rm(path.join(dir, 'ca.pem'));
    const list = (await fsp.readdir(dir)).sort();
    await expect(createClusterCertificates(dir, members)).rejects.toThrow(/has no ca.pem but holds .*member-1.pem/);
    expect((await fsp.readdir(dir)).sort()).toEqual(list);
  });

  it('issues with a CA made by openssl (PKCS#8 or SEC1 key), and goes without a client certificate when only the CA certificate is there', async () => {
    const dir = path.join(base, 'openssl-ca');
    await fsp.mkdir(dir, { recursive: true });
    openssl(dir, ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-keyout', 'ca-key.pem', '-out', 'ca.pem', '-subj', '/CN=company-ca']);
    const made = await createClusterCertificates(dir, new Map([...members].slice(0, 2)));
    expect(made.newCa).toBe(false);
    expect(openssl(dir, ['verify', '-CAfile', 'ca.pem', 'member-1.pem', 'member-2.pem', 'client.pem'])).toMatch(/member-1.pem: OK\n.*member-2.pem: OK\n.*client.pem: OK/);

    // The same CA key as SEC1 ('EC PRIVATE KEY'), as `openssl ecparam -genkey` writes it.
    const sec1 = createPrivateKey(read(dir, 'ca-key.pem')).export({ format: 'pem', type: 'sec1' }).toString();
    expect(sec1).toContain('BEGIN EC PRIVATE KEY');
    await fsp.writeFile(path.join(dir, 'ca-key.pem'), sec1, { mode: 0o600 });
    const more = await createClusterCertificates(dir, members);
    expect(more.written.map((f) => path.basename(f))).toEqual(['member-3-key.pem', 'member-3.pem']);
    expect(openssl(dir, ['verify', '-CAfile', 'ca.pem', 'member-3.pem'])).toMatch(/OK/);

    // A dir brought without the CA key and without a client certificate: nothing to make, no error.
    const byo = path.join(base, 'byo');
    await fsp.mkdir(byo);
    for (const f of ['ca.pem', 'member-1.pem', 'member-1-key.pem', 'member-2.pem', 'member-2-key.pem']) await fsp.copyFile(path.join(dir, f), path.join(byo, f));
    expect(await createClusterCertificates(byo, new Map([...members].slice(0, 2)))).toEqual({ written: [], newCa: false });
    await expect(createClusterCertificates(byo, members)).rejects.toThrow(/has a CA \(ca.pem\) but not its key \(ca-key.pem\), and lacks member-3.pem/);
    expect(await readClientTls(byo)).toEqual({ ca: read(byo, 'ca.pem') });
  });

  it('refuses an RSA CA key with a message saying what to do', async () => {
    const dir = path.join(base, 'rsa-ca');
    await fsp.mkdir(dir, { recursive: true });
    openssl(dir, ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-keyout', 'ca-key.pem', '-out', 'ca.pem', '-subj', '/CN=rsa-ca']);
    await expect(createClusterCertificates(dir, members)).rejects.toThrow(/ca-key.pem is a rsa key; svrkit issues with ECDSA P-256 CAs only/);
  });

  it('two runs at once on a new dir leave one CA that signed every certificate', async () => {
    const dir = path.join(base, 'race');
    // Six at once, with different member lists: without the lock, their CAs and leaves interleave.
    await Promise.all(Array.from({ length: 6 }, (_, i) => createClusterCertificates(dir, new Map([...members, [4 + (i % 2), `127.0.0.1:${7104 + (i % 2)}`]]))));
    const ca = new X509Certificate(read(dir, 'ca.pem'));
    for (const id of [1, 2, 3, 4, 5]) expect(new X509Certificate(read(dir, `member-${id}.pem`)).verify(ca.publicKey), `member ${id}`).toBe(true);
    expect(new X509Certificate(read(dir, 'client.pem')).verify(ca.publicKey)).toBe(true);
  });
});

describe('memberNamed and readReplicaTls', () => {
  it('takes exactly one member URI in canonical form', () => {
    expect(memberNamed([memberUri(7)])).toBe(7);
    expect(memberNamed(['spiffe://other/x', memberUri(7)])).toBe(7);
    expect(memberNamed([memberUri(7), memberUri(8)])).toBeUndefined();
    expect(memberNamed(['spiffe://svrkit.paxoskv/member/07'])).toBeUndefined();
    expect(memberNamed(['spiffe://svrkit.paxoskv/member/0'])).toBeUndefined();
    expect(memberNamed(['spiffe://svrkit.paxoskv/member/65536'])).toBeUndefined();
    expect(memberNamed([])).toBeUndefined();
  });

  it('names the file it cannot read, and the member whose material does not fit', async () => {
    const dir = path.join(base, 'read');
    await createClusterCertificates(dir, members);
    await expect(readReplicaTls(dir, 9)).rejects.toThrow(/cannot read member 9's certificate .*member-9.pem \(ENOENT\); svrkit kv certs --tls-dir/);
    await fsp.copyFile(path.join(dir, 'member-2.pem'), path.join(dir, 'member-1.pem'));
    await expect(readReplicaTls(dir, 1)).rejects.toThrow(/member 1's certificate names member 2/);
  });
});

describe('which TLS dir the kv commands use', () => {
  it('--tls-dir, else the recorded cluster\'s, else SVRKIT_KV_TLS_DIR beside SVRKIT_KV_PEERS; an old record without one is plain', async () => {
    const dataDir = path.join(base, 'record');
    const record = { format: 'svrkit-kv-up/1', replicas: 3, host: '127.0.0.1', basePort: 7101, peers: '1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103' };
    await writeClusterRecord(dataDir, record);
    expect(await readClusterRecord(dataDir)).toEqual(record);
    expect((await resolveClientCluster({ dataDir }, {})).tlsDir).toBeUndefined();
    expect((await resolveClientCluster({ dataDir, tlsDir: 'x' }, {})).tlsDir).toBe(path.resolve('x'));

    const tlsRecordDir = path.join(base, 'record-tls');
    await writeClusterRecord(tlsRecordDir, { ...record, format: 'svrkit-kv-up/2', tlsDir: '/srv/tls' });
    expect((await resolveClientCluster({ dataDir: tlsRecordDir }, {})).tlsDir).toBe('/srv/tls');
    expect((await resolveClientCluster({ dataDir: tlsRecordDir, tlsDir: '/other' }, {})).tlsDir).toBe('/other');

    const env = { [KV_PEERS_ENV]: '127.0.0.1:7101', [KV_TLS_DIR_ENV]: '/env/tls' };
    expect(await resolveClientCluster({}, env)).toEqual({ peers: new Map([[1, '127.0.0.1:7101']]), tlsDir: '/env/tls' });
    expect((await resolveClientCluster({ tlsDir: '/flag' }, env)).tlsDir).toBe('/flag');
    // --peers is explicit: the environment's TLS dir does not come with it.
    expect((await resolveClientCluster({ peers: new Map([[1, '127.0.0.1:7101']]) }, env)).tlsDir).toBeUndefined();

    await fsp.writeFile(path.join(tlsRecordDir, 'cluster.json'), JSON.stringify({ ...record, format: 'svrkit-kv-up/2', tlsDir: 'relative/tls' }));
    await expect(readClusterRecord(tlsRecordDir)).rejects.toThrow(/tlsDir is not an absolute path/);
    // A TLS dir in the old format (which an svrkit without TLS would run in plain TCP) is not a record svrkit writes.
    await fsp.writeFile(path.join(tlsRecordDir, 'cluster.json'), JSON.stringify({ ...record, tlsDir: '/srv/tls' }));
    await expect(readClusterRecord(tlsRecordDir)).rejects.toThrow(/svrkit-kv-up\/1 with tlsDir/);
  });
});
