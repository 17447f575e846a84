/**
 * TLS between services (node:tls), with certificates made by openssl (test/support/certs.ts), on
 * 127.0.0.1: calls over TLS; a client certificate's subject and SPIFFE URI in
 * `currentCall().peerIdentity`; a client trusting another CA refused; a client without a
 * certificate refused where one is required; a plain client and a TLS server (and the reverse)
 * failing instead of hanging; random bytes in place of a handshake leaving the server serving;
 * tickets over TLS; and `svrkit run --tls-cert --tls-key` called by `svrkit call --tls-ca`.
 */
import { connect } from 'node:net';
import path from 'node:path';
import { promises as fsp } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, parseKeyRing, RpcError, Server, Status, TicketIssuer } from '../../index.js';
import { VaultClient } from '../.tmp/gen/vault/vault.js';
import { makeCerts, type TestCerts } from '../support/certs.js';
import { repoRoot, runSvrkit, startSvrkit, stopAllSvrkit } from '../support/processes.js';
import { Vault } from '../support/vault-service.js';
import { rpcFailure } from '../support/rpc-failure.js';

const DIR = path.join(repoRoot, 'test', '.tmp', `tls-${process.pid}`);

describe('TLS between services', () => {
  let certs: TestCerts;
  let open: Server; // TLS, client certificates optional
  let strict: Server; // TLS, client certificates required
  let plain: Server;
  const channels: Channel[] = [];
  const vault = (address: string, tls?: ConstructorParameters<typeof Channel>[1]) => {
    const c = new Channel(address, { connectTimeoutMs: 3000, ...tls });
    channels.push(c);
    return new VaultClient(c);
  };

  beforeAll(async () => {
    certs = await makeCerts(DIR);
    open = new Server({ tls: { cert: certs.serverCert, key: certs.serverKey, ca: certs.ca } });
    strict = new Server({ tls: { cert: certs.serverCert, key: certs.serverKey, ca: certs.ca, requireClientCert: true } });
    plain = new Server();
    for (const s of [open, strict, plain]) {
      s.addService(new Vault());
      await s.listen(0, '127.0.0.1');
    }
  });
  afterAll(async () => {
    for (const c of channels) c.close();
    for (const s of [open, strict, plain]) await s.close();
    await stopAllSvrkit();
    await fsp.rm(DIR, { recursive: true, force: true });
  });

  it('calls go over TLS; a client certificate\'s subject and SPIFFE URI reach the handler as peerIdentity', async () => {
    expect(await vault(open.address, { tls: { ca: certs.ca } }).open({})).toMatchObject({ peerSubject: '', peerUris: [] });
    const me = await vault(strict.address, { tls: { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey } }).open({});
    expect(me.peerSubject).toMatch(/CN=frontend/);
    expect(me.peerSubject).toMatch(/O=shop/);
    expect(me.peerUris).toEqual(['spiffe://svrkit.test/shop/frontend']);
  });

  it('a client that trusts another CA is refused; so is one without a certificate where one is required', async () => {
    const wrongCa = await rpcFailure(vault(open.address, { tls: { ca: certs.otherCa } }).open({}, { timeoutMs: 3000 }));
    expect(wrongCa.code).toBe(Status.UNAVAILABLE);
    expect(wrongCa.message).toMatch(/certificate|self.signed|verify/i);
    const noCert = await rpcFailure(vault(strict.address, { tls: { ca: certs.ca } }).open({}, { timeoutMs: 3000 }));
    expect([Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED]).toContain(noCert.code);
    // Still serving the client that has one.
    expect((await vault(strict.address, { tls: { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey } }).open({})).peerUris).toHaveLength(1);
  });

  it('plain to TLS and TLS to plain fail within the deadline instead of hanging', async () => {
    const started = Date.now();
    const a = await rpcFailure(vault(open.address).open({}, { timeoutMs: 2000 }));
    const b = await rpcFailure(vault(plain.address, { tls: { ca: certs.ca } }).open({}, { timeoutMs: 2000 }));
    expect([Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED]).toContain(a.code);
    expect([Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED]).toContain(b.code);
    expect(Date.now() - started).toBeLessThan(6000);
  });

  it('random bytes in place of a handshake neither crash nor stall the server', async () => {
    const port = Number(open.address.split(':')[1]);
    await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        new Promise<void>((resolve) => {
          const s = connect(port, '127.0.0.1', () => s.end(Buffer.from(Array.from({ length: 512 + i * 97 }, (_, j) => (j * 131 + i) & 0xff))));
          s.on('error', () => resolve());
          s.on('close', () => resolve());
        }),
      ),
    );
    expect(await vault(open.address, { tls: { ca: certs.ca } }).open({})).toBeDefined();
  });

  it('tickets over TLS: both checks at once', async () => {
    const ring = parseKeyRing({ signing: 'k', keys: [{ kid: 'k', alg: 'HS256', secret: Buffer.alloc(32, 7).toString('base64url') }] });
    const server = new Server({ tls: { cert: certs.serverCert, key: certs.serverKey, ca: certs.ca }, tickets: { keys: ring } });
    server.addService(new Vault());
    await server.listen(0, '127.0.0.1');
    try {
      const ticket = new TicketIssuer(ring).issue({ userId: 'tls-user', ttlMs: 60_000 });
      const me = await vault(server.address, { tls: { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey }, ticket }).whoami({});
      expect(me).toMatchObject({ userId: 'tls-user', authenticated: true, peerUris: ['spiffe://svrkit.test/shop/frontend'] });
      expect(await rpcFailure(vault(server.address, { tls: { ca: certs.ca } }).whoami({}))).toMatchObject({ code: Status.UNAUTHENTICATED });
    } finally {
      await server.close();
    }
  });

  it('svrkit run --tls-cert --tls-key, called by svrkit call --tls-ca (and refused without it)', async () => {
    const srv = await startSvrkit(['run', 'examples/helloworld/greeter.ts', '--port', '0', '--tls-cert', certs.file('server.crt'), '--tls-key', certs.file('server.key')]);
    const ok = await runSvrkit(['call', srv.address, 'helloworld.Greeter/SayHello', '{"name":"tls"}', '--tls-ca', certs.file('ca.crt')]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ message: 'Hello tls' });
    const plainCall = await runSvrkit(['call', srv.address, 'helloworld.Greeter/SayHello', '{}', '--timeout', '2000']);
    expect(plainCall.code).toBe(1);
    const bad = await runSvrkit(['run', 'examples/helloworld/greeter.ts', '--port', '0', '--tls-cert', certs.file('server.crt')]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/--tls-cert and --tls-key go together/);
  }, 60_000);
});
