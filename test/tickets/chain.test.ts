/**
 * Tickets through a three-hop chain of real processes (`svrkit run test/support/vault-service.ts
 * --ticket-keys keys.json`, A -> B -> C on 127.0.0.1), with keys and tickets from the CLI
 * (`svrkit ticket keygen`, `svrkit ticket issue`) and calls from `svrkit call --ticket` and this
 * process: a valid ticket passes every hop; a tampered, expired, unknown-key or missing ticket
 * fails at the first server, and at a backend called directly; a ticket without the method's scope
 * gets PERMISSION_DENIED; a key rotation (add k2, sign with k2, retire k1: edits of the key file
 * the servers pick up) under load fails no call.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, parseKeyRing, RpcError, Status, TicketIssuer, type KeyRing } from '../../index.js';
import { VaultClient } from '../.tmp/gen/vault/vault.js';
import { eventually } from '../support/poll.js';
import { repoRoot, runSvrkit, startSvrkit, stopAllSvrkit, type SvrkitProcess } from '../support/processes.js';

const DIR = path.join(repoRoot, 'test', '.tmp', `tickets-chain-${process.pid}`);
const KEYS = path.join(DIR, 'keys.json');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function keygen(kid: string, alg = 'HS256'): Promise<KeyRing> {
  const r = await runSvrkit(['ticket', 'keygen', '--kid', kid, '--alg', alg]);
  expect(r.code, r.stderr).toBe(0);
  return parseKeyRing(JSON.parse(r.stdout));
}

async function writeRing(ring: KeyRing): Promise<void> {
  const tmp = `${KEYS}.${Math.random().toString(36).slice(2)}`;
  await fsp.writeFile(tmp, JSON.stringify(ring));
  await fsp.rename(tmp, KEYS);
}

async function issue(keys: string, user: string, extra: string[] = []): Promise<string> {
  const r = await runSvrkit(['ticket', 'issue', '--keys', keys, '--user', user, ...extra]);
  expect(r.code, r.stderr).toBe(0);
  return r.stdout.trim();
}

describe('tickets through a three-hop chain of svrkit run processes', () => {
  let k1: KeyRing;
  const hops: SvrkitProcess[] = [];
  const addr = (i: number) => hops[i]!.address;

  beforeAll(async () => {
    await fsp.mkdir(DIR, { recursive: true });
    k1 = await keygen('k1');
    await writeRing(k1);
    for (const name of ['A', 'B', 'C']) hops.push(await startSvrkit(['run', 'test/support/vault-service.ts', '--port', '0', '--ticket-keys', KEYS], { VAULT_NAME: name }));
  }, 60_000);
  afterAll(async () => {
    await stopAllSvrkit();
    await fsp.rm(DIR, { recursive: true, force: true });
  });

  const relay = (ticket: string | undefined, method = 'Whoami') =>
    runSvrkit(['call', addr(0), 'vault.v1.Vault/Relay', JSON.stringify({ targets: [addr(1), addr(2)], method }), ...(ticket === undefined ? [] : ['--ticket', ticket])]);

  it('a valid ticket passes every hop, and each hop sees its user', async () => {
    const ticket = await issue(KEYS, 'alice', ['--scope', 'inbox.read', '--ttl', '1h']);
    const r = await relay(ticket, 'ReadInbox');
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ userId: 'alice', scopes: ['inbox.read'], authenticated: true, keyId: 'k1', hops: ['C', 'B', 'A'] });
  });

  it('tampered, expired, unknown-key and missing tickets fail at the first server, and at a backend called directly', async () => {
    const good = await issue(KEYS, 'alice');
    const [h, , sig] = good.split('.');
    const claims = Buffer.from(JSON.stringify({ sub: 'admin', scp: ['inbox.read'], exp: Math.floor(Date.now() / 1000) + 3600 })).toString('base64url');
    const tampered = `${h}.${claims}.${sig}`;
    const expired = await issue(KEYS, 'alice', ['--ttl', '1s']);
    const otherKeys = path.join(DIR, 'other.json');
    await fsp.writeFile(otherKeys, JSON.stringify(await keygen('k1'))); // the same key id, another secret
    const foreign = await issue(otherKeys, 'alice');
    await fsp.writeFile(otherKeys, JSON.stringify(await keygen('k7')));
    const unknownKey = await issue(otherKeys, 'alice');
    await sleep(2100); // `expired` is past its expiry (whole seconds)
    for (const [what, ticket, pattern] of [
      ['tampered', tampered, /ticket refused \(forged\)/],
      ['expired', expired, /ticket refused \(expired\)/],
      ['another secret', foreign, /ticket refused \(forged\)/],
      ['unknown key', unknownKey, /ticket refused \(unknown-key\)/],
      ['missing', undefined, /needs a ticket/],
    ] as const) {
      const r = await relay(ticket);
      expect(r.code, what).toBe(1);
      expect(r.stderr, what).toMatch(/UNAUTHENTICATED/);
      expect(r.stderr, what).toMatch(pattern);
      // A backend called directly (the frontend bypassed) refuses it too.
      const direct = await runSvrkit(['call', addr(2), 'vault.v1.Vault/Whoami', '{}', ...(ticket === undefined ? [] : ['--ticket', ticket])]);
      expect(direct.code, what).toBe(1);
      expect(direct.stderr, what).toMatch(/UNAUTHENTICATED/);
    }
  }, 60_000);

  it('a ticket without the method\'s scope gets PERMISSION_DENIED, at the hop whose method needs it', async () => {
    const ticket = await issue(KEYS, 'bob');
    expect((await relay(ticket, 'Whoami')).code).toBe(0);
    const r = await relay(ticket, 'ReadInbox');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/PERMISSION_DENIED.*needs scope 'inbox\.read'/);
  });

  it('a key rotation under load fails no call', async () => {
    const k2 = await keygen('k2', 'EdDSA');
    let issuer = new TicketIssuer(k1);
    let ticket = issuer.issue({ userId: 'load', ttlMs: 600_000 });
    const channel = new Channel(addr(0));
    const vault = new VaultClient(channel);
    let ok = 0;
    const failures: string[] = [];
    const keyIds = new Set<string>();
    let stop = false;
    const workers = Array.from({ length: 8 }, async () => {
      while (!stop) {
        try {
          const me = await vault.relay({ targets: [addr(1), addr(2)], method: 'Whoami' }, { ticket, timeoutMs: 5000 });
          keyIds.add(me.keyId);
          ok++;
        } catch (err) {
          failures.push(err instanceof RpcError ? `${err.codeName}: ${err.message}` : String(err));
        }
      }
    });
    const reloads = (n: number) => eventually(`every hop to reload its keys ${n} time(s)`, () => hops.every((p) => (p.output().stdout.match(/ticket keys reloaded/g) ?? []).length >= n), (v) => v, 15_000);
    try {
      await eventually('calls to succeed', () => ok > 50);
      // 1. Every server learns k2 (k1 still signs).
      const both = parseKeyRing({ keys: [...k1.keys, ...k2.keys] });
      await writeRing(both);
      await reloads(1);
      // 2. Issuers sign with k2: new tickets.
      issuer = new TicketIssuer(parseKeyRing({ signing: 'k2', keys: both.keys }));
      ticket = issuer.issue({ userId: 'load', ttlMs: 600_000 });
      const before = ok;
      await eventually('calls with the k2 ticket', () => ok > before + 50);
      // 3. k1 retired (no k1 ticket is in use any more).
      await sleep(200);
      await writeRing(parseKeyRing({ keys: k2.keys.map(({ privateKey: _p, ...pub }) => pub) }));
      await reloads(2);
      const after = ok;
      await eventually('calls after k1 was retired', () => ok > after + 50);
    } finally {
      stop = true;
      await Promise.all(workers);
      channel.close();
    }
    expect(failures).toEqual([]);
    expect([...keyIds].sort()).toEqual(['k1', 'k2']);
    // A k1 ticket now fails.
    const late = new Channel(addr(0));
    try {
      const old = new TicketIssuer(k1).issue({ userId: 'late', ttlMs: 60_000 });
      const err = await new VaultClient(late).whoami({}, { ticket: old }).then(() => undefined, (e: unknown) => e);
      expect(err).toMatchObject({ code: Status.UNAUTHENTICATED });
      expect((err as RpcError).message).toMatch(/unknown-key/);
    } finally {
      late.close();
    }
  }, 90_000);
});
