/**
 * Tickets (framework/tickets): key rings, issuing and verifying (HS256 and EdDSA, through
 * fast-jwt), every way a ticket fails, the cache (a lookup for a ticket seen before, never past its
 * expiry), and a key rotation. Then a server that checks tickets, on real sockets in this process:
 * UNAUTHENTICATED, PERMISSION_DENIED, public methods, `currentCall().auth`, the ticket flowing to a
 * downstream call with nobody passing it, user priority from the verified user, and bad tickets
 * (garbage, 1 MiB) that neither crash nor stall the server.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { connect, createServer, type AddressInfo } from 'node:net';
import { FrameDecoder, FrameEncoder, FrameKind, MAX_CONNECTION_TICKETS } from '../../framework/wire/frame.js';
import { decodeStatusHeader, encodeRequestHeader, encodeTicketHeader } from '../../framework/wire/header.js';

async function eventuallyReplies(done: () => boolean, ms = 15_000): Promise<void> {
  for (let t = 0; t < ms && !done(); t += 20) await new Promise((r) => setTimeout(r, 20));
}
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, MAX_TICKET_LENGTH, parseKeyRing, RpcError, Server, Status, TicketIssuer, TicketVerifier, type KeyRing } from '../../index.js';
import { userPriority } from '../../framework/overload/priority.js';
import { VaultClient } from '../.tmp/gen/vault/vault.js';
import { Vault } from '../support/vault-service.js';
import { rpcFailure } from '../support/rpc-failure.js';

const hs = (kid: string) => ({ kid, alg: 'HS256' as const, secret: randomBytes(32).toString('base64url') });
function ed(kid: string) {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  return {
    kid,
    alg: 'EdDSA' as const,
    publicKey: publicKey.export({ format: 'pem', type: 'spki' }).toString(),
    privateKey: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
  };
}

describe('key rings', () => {
  it('accepts HS256 and EdDSA keys and names what is wrong with a bad ring', () => {
    const ring = parseKeyRing({ signing: 'a', keys: [hs('a'), ed('b')] });
    expect(ring.keys.map((k) => [k.kid, k.alg])).toEqual([['a', 'HS256'], ['b', 'EdDSA']]);
    expect(() => parseKeyRing({ keys: [] })).toThrow(/"keys" must be a non-empty array/);
    expect(() => parseKeyRing({ keys: [hs('a'), hs('a')] })).toThrow(/kid 'a' is repeated/);
    expect(() => parseKeyRing({ keys: [{ kid: 'a b', alg: 'HS256', secret: 'x' }] })).toThrow(/"kid" must be/);
    expect(() => parseKeyRing({ keys: [{ kid: 'a', alg: 'HS256', secret: 'c2hvcnQ' }] })).toThrow(/at least 32 bytes/);
    expect(() => parseKeyRing({ keys: [{ kid: 'a', alg: 'RS256' }] })).toThrow(/"alg" must be "HS256" or "EdDSA"/);
    expect(() => parseKeyRing({ keys: [{ kid: 'a', alg: 'EdDSA', publicKey: 'nope' }] })).toThrow(/PEM PUBLIC KEY/);
    expect(() => parseKeyRing({ keys: [{ kid: 'a', alg: 'EdDSA', publicKey: '-----BEGIN PUBLIC KEY-----\nbroken\n-----END PUBLIC KEY-----' }] })).toThrow(/"publicKey" does not parse/);
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ format: 'pem', type: 'spki' }).toString();
    expect(() => parseKeyRing({ keys: [{ kid: 'a', alg: 'EdDSA', publicKey: rsa }] })).toThrow(/is a rsa key; EdDSA needs Ed25519/);
    expect(() => parseKeyRing({ signing: 'z', keys: [hs('a')] })).toThrow(/"signing" must name one of the keys/);
    const { privateKey: _p, ...publicOnly } = ed('c');
    expect(() => parseKeyRing({ signing: 'c', keys: [publicOnly] })).toThrow(/signing key 'c' has no "privateKey"/);
  });
});

describe('issuing and verifying', () => {
  let clock = 1_800_000_000_000;
  const now = () => clock;

  it.each([['HS256', hs('k1')], ['EdDSA', ed('k1')]] as const)('%s: a ticket verifies, with its user, scopes, expiry and key', (_alg, key) => {
    const ring = parseKeyRing({ signing: 'k1', keys: [key] });
    const ticket = new TicketIssuer(ring, { now }).issue({ userId: 'u42', scopes: ['inbox.read'], ttlMs: 60_000 });
    expect(ticket.split('.')).toHaveLength(3);
    const check = new TicketVerifier(ring, { now }).verify(ticket);
    expect(check).toEqual({ ok: true, auth: { userId: 'u42', scopes: ['inbox.read'], expiresAt: clock + 60_000, keyId: 'k1' } });
  });

  it('refuses a tampered, expired, unknown-key, malformed or oversized ticket, each saying why', () => {
    const ring = parseKeyRing({ signing: 'k1', keys: [hs('k1')] });
    const issuer = new TicketIssuer(ring, { now });
    const verifier = new TicketVerifier(ring, { now });
    const ticket = issuer.issue({ userId: 'u1', ttlMs: 10_000 });
    const [h, p, sig] = ticket.split('.') as [string, string, string];
    // Another user's claims under the same signature: forged.
    const forgedClaims = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p, 'base64url').toString()), sub: 'admin' })).toString('base64url');
    expect(verifier.verify(`${h}.${forgedClaims}.${sig}`)).toMatchObject({ ok: false, why: 'forged' });
    expect(verifier.verify(`${h}.${p}.${sig.slice(0, -4)}AAAA`)).toMatchObject({ ok: false, why: 'forged' });
    const other = new TicketIssuer(parseKeyRing({ signing: 'k9', keys: [hs('k9')] }), { now }).issue({ userId: 'u1', ttlMs: 10_000 });
    expect(verifier.verify(other)).toMatchObject({ ok: false, why: 'unknown-key' });
    // Signed with another secret under the same key id: forged.
    const sameKid = new TicketIssuer(parseKeyRing({ signing: 'k1', keys: [hs('k1')] }), { now }).issue({ userId: 'u1', ttlMs: 10_000 });
    expect(verifier.verify(sameKid)).toMatchObject({ ok: false, why: 'forged' });
    for (const bad of ['', 'garbage', 'a.b.c', '....', '\u0000\u0001', 'x'.repeat(MAX_TICKET_LENGTH + 1), 'k'.repeat(1 << 20)]) {
      expect(verifier.verify(bad), JSON.stringify(bad.slice(0, 20))).toMatchObject({ ok: false, why: 'malformed' });
    }
    expect(verifier.verify(ticket).ok).toBe(true);
    clock += 10_001;
    expect(verifier.verify(ticket)).toMatchObject({ ok: false, why: 'expired' });
    clock -= 10_001;
  });

  it('caches verified tickets (a lookup next time), never past their expiry', () => {
    const ring = parseKeyRing({ signing: 'k1', keys: [ed('k1')] });
    const issuer = new TicketIssuer(ring, { now });
    const verifier = new TicketVerifier(ring, { now, cacheSize: 2 });
    const tickets = ['a', 'b', 'c'].map((u) => issuer.issue({ userId: u, ttlMs: 5_000 }));
    for (const t of tickets) expect(verifier.verify(t).ok).toBe(true);
    expect(verifier.cached).toBe(2); // bounded
    const start = clock;
    clock = start + 4_000;
    expect(verifier.verify(tickets[2]!).ok).toBe(true);
    clock = start + 5_000; // its expiry: refused although cached
    expect(verifier.verify(tickets[2]!)).toMatchObject({ ok: false, why: 'expired' });
    clock = start;
  });

  it('rotation: add the new key, move signing to it, retire the old one; tickets of a retired key fail at once', () => {
    const k1 = hs('k1');
    const k2 = ed('k2');
    const verifier = new TicketVerifier(parseKeyRing({ keys: [k1] }), { now });
    const issuer = new TicketIssuer(parseKeyRing({ signing: 'k1', keys: [k1] }), { now });
    const old = issuer.issue({ userId: 'u', ttlMs: 60_000 });
    verifier.setKeys(parseKeyRing({ keys: [k1, k2] })); // 1. every verifier learns k2
    issuer.setKeys(parseKeyRing({ signing: 'k2', keys: [k1, k2] })); // 2. issuers sign with k2
    const fresh = issuer.issue({ userId: 'u', ttlMs: 60_000 });
    expect(issuer.keyId).toBe('k2');
    expect([verifier.verify(old).ok, verifier.verify(fresh).ok]).toEqual([true, true]);
    verifier.setKeys(parseKeyRing({ keys: [k2] })); // 3. k1 retired
    expect(verifier.verify(old)).toMatchObject({ ok: false, why: 'unknown-key' });
    expect(verifier.verify(fresh).ok).toBe(true);
  });

  it('refuses to issue for an empty user, bad scopes or a short TTL', () => {
    const issuer = new TicketIssuer(parseKeyRing({ signing: 'k1', keys: [hs('k1')] }));
    expect(() => issuer.issue({ userId: '', ttlMs: 60_000 })).toThrow(/userId/);
    expect(() => issuer.issue({ userId: 'u', scopes: [''], ttlMs: 60_000 })).toThrow(/scopes/);
    expect(() => issuer.issue({ userId: 'u', ttlMs: 10 })).toThrow(/ttlMs/);
    expect(() => new TicketIssuer(parseKeyRing({ keys: [hs('k1')] }))).toThrow(/no signing key/);
  });
});

describe('a server that checks tickets (real sockets, this process)', () => {
  let ring: KeyRing;
  let issuer: TicketIssuer;
  let front: Server;
  let back: Server;
  let optional: Server;
  const channels: Channel[] = [];
  const client = (address: string, ticket?: string) => {
    const c = new Channel(address, ticket === undefined ? {} : { ticket });
    channels.push(c);
    return new VaultClient(c);
  };

  beforeAll(async () => {
    ring = parseKeyRing({ signing: 'k1', keys: [hs('k1')] });
    issuer = new TicketIssuer(ring);
    front = new Server({ tickets: { keys: ring } });
    back = new Server({ tickets: { keys: ring } });
    optional = new Server({ tickets: { keys: ring, required: false } });
    for (const s of [front, back, optional]) {
      s.addService(new Vault());
      await s.listen(0, '127.0.0.1');
    }
  });
  afterAll(async () => {
    for (const c of channels) c.close();
    for (const s of [front, back, optional]) await s.close();
  });

  it('a valid ticket passes; the handler reads the verified identity; user priority comes from it, not from metadata', async () => {
    const ticket = issuer.issue({ userId: 'alice', scopes: ['inbox.read'], ttlMs: 60_000 });
    const me = await client(front.address, ticket).whoami({}, { metadata: { 'x-user-id': 'mallory' } });
    expect(me).toMatchObject({ userId: 'alice', scopes: ['inbox.read'], authenticated: true, keyId: 'k1' });
    expect(me.userPriority).toBe(userPriority('alice', Date.now()));
    expect(await client(front.address).readInbox({}, { ticket })).toMatchObject({ userId: 'alice' }); // CallOptions.ticket
  });

  it('missing, malformed, forged and unknown-key tickets get UNAUTHENTICATED; a missing scope PERMISSION_DENIED; public methods need none', async () => {
    const vault = client(front.address);
    expect(await rpcFailure(vault.whoami({}))).toMatchObject({ code: Status.UNAUTHENTICATED, reason: 'TICKET_MISSING', notProcessed: false });
    expect(await rpcFailure(vault.whoami({}, { ticket: 'garbage' }))).toMatchObject({ code: Status.UNAUTHENTICATED, reason: 'TICKET_REJECTED' });
    const other = new TicketIssuer(parseKeyRing({ signing: 'k2', keys: [hs('k2')] })).issue({ userId: 'alice', ttlMs: 60_000 });
    const unknown = await rpcFailure(vault.whoami({}, { ticket: other }));
    expect(unknown).toMatchObject({ code: Status.UNAUTHENTICATED });
    expect(unknown.message).toMatch(/unknown-key/);
    const good = issuer.issue({ userId: 'alice', ttlMs: 60_000 });
    const [h, , sig] = good.split('.');
    const claims = Buffer.from(JSON.stringify({ sub: 'bob', scp: ['inbox.read'], exp: Math.floor(Date.now() / 1000) + 60 })).toString('base64url');
    expect((await rpcFailure(vault.whoami({}, { ticket: `${h}.${claims}.${sig}` }))).message).toMatch(/forged/);
    const noScope = await rpcFailure(vault.readInbox({}, { ticket: good }));
    expect(noScope).toMatchObject({ code: Status.PERMISSION_DENIED, reason: 'TICKET_SCOPE_MISSING' });
    expect(noScope.message).toMatch(/inbox\.read/);
    expect(await vault.open({})).toMatchObject({ authenticated: false });
    // The built-in health and reflection services are public.
    const health = new Channel(front.address);
    channels.push(health);
    expect(await health.unary((await import('../../framework/builtin/gen/svrkit/health.js')).HealthDefinition.methods.check, {})).toMatchObject({ status: 1 });
  });

  it('the ticket flows to a downstream call with nobody passing it; a backend called directly refuses another user\'s or no ticket', async () => {
    const ticket = issuer.issue({ userId: 'carol', scopes: ['inbox.read'], ttlMs: 60_000 });
    const relayed = await client(front.address, ticket).relay({ targets: [back.address], method: 'ReadInbox' });
    expect(relayed).toMatchObject({ userId: 'carol', authenticated: true });
    expect(relayed.hops).toHaveLength(2);
    expect(await rpcFailure(client(back.address).readInbox({}))).toMatchObject({ code: Status.UNAUTHENTICATED });
    const noScope = issuer.issue({ userId: 'dave', ttlMs: 60_000 });
    expect(await rpcFailure(client(back.address, noScope).readInbox({}))).toMatchObject({ code: Status.PERMISSION_DENIED });
  });

  it('a handler serving a call that came without a ticket sends none downstream, not its channel\'s (no identity lent)', async () => {
    const serviceTicket = issuer.issue({ userId: 'svc-profile', ttlMs: 60_000 });
    const downstream = new Channel(back.address, { ticket: serviceTicket });
    channels.push(downstream);
    class Lender extends Vault {
      override async relay() {
        return new VaultClient(downstream).whoami({});
      }
    }
    const lender = new Server({ tickets: { keys: ring, required: false } });
    lender.addService(new Lender());
    await lender.listen(0, '127.0.0.1');
    try {
      // Outside any call, the channel's ticket is sent.
      expect(await new VaultClient(downstream).whoami({})).toMatchObject({ userId: 'svc-profile' });
      // Inside a call that carried none: nothing is sent, and the backend refuses.
      expect(await rpcFailure(client(lender.address).relay({ targets: [], method: 'Whoami' }))).toMatchObject({ code: Status.UNAUTHENTICATED });
      // Inside a call that carried one: that one.
      const user = issuer.issue({ userId: 'ivy', ttlMs: 60_000 });
      expect(await client(lender.address, user).relay({ targets: [], method: 'Whoami' })).toMatchObject({ userId: 'ivy' });
    } finally {
      await lender.close();
    }
  });

  it('required: false runs a call without a ticket unauthenticated, and still refuses a bad one', async () => {
    expect(await client(optional.address).whoami({})).toMatchObject({ authenticated: false, userId: '' });
    expect(await rpcFailure(client(optional.address, 'garbage').whoami({}))).toMatchObject({ code: Status.UNAUTHENTICATED });
  });

  it('a ticket crosses a connection once (a TICKET frame), then calls refer to it by id: 2,000 calls cost no more bytes than without one', async () => {
    const ticket = issuer.issue({ userId: 'frank', ttlMs: 60_000 });
    // Count what the client sends, through a proxy on 127.0.0.1.
    let sent = 0;
    const proxy = createServer((inbound) => {
      const outbound = connect(Number(front.address.split(':')[1]), '127.0.0.1');
      inbound.on('data', (d: Buffer) => (sent += d.length));
      inbound.pipe(outbound).pipe(inbound);
      inbound.on('error', () => outbound.destroy());
      outbound.on('error', () => inbound.destroy());
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const via = `127.0.0.1:${(proxy.address() as AddressInfo).port}`;
    try {
      const run = async (t: string | undefined): Promise<number> => {
        const vault = client(via, t);
        await vault.open({}); // connected
        const before = sent;
        for (let i = 0; i < 20; i++) await Promise.all(Array.from({ length: 100 }, () => vault.open({})));
        return sent - before;
      };
      const without = await run(undefined);
      const withTicket = await run(ticket);
      // A few bytes per call for the id, not the ticket's 200-odd.
      expect(withTicket - without).toBeLessThan(2000 * 8);
    } finally {
      proxy.close();
    }
  });

  it('300 tickets over one connection (more than it keeps defined) each prove their own user; a key change or an expiry is seen at once', async () => {
    const vault = client(front.address);
    const users = Array.from({ length: 300 }, (_, i) => `user${i}`);
    const tickets = users.map((u) => issuer.issue({ userId: u, ttlMs: 60_000 }));
    for (let round = 0; round < 2; round++) {
      const got = await Promise.all(tickets.map((t) => vault.whoami({}, { ticket: t })));
      expect(got.map((g) => g.userId)).toEqual(users);
    }
    // A server whose keys change, and whose clock moves: the same connection, the same ticket.
    let clock = Date.now();
    const verifier = new TicketVerifier(ring, { now: () => clock });
    const server = new Server({ tickets: { keys: verifier } });
    server.addService(new Vault());
    await server.listen(0, '127.0.0.1');
    try {
      const v = client(server.address);
      const t = issuer.issue({ userId: 'gina', ttlMs: 10_000 });
      expect((await v.whoami({}, { ticket: t })).userId).toBe('gina');
      clock += 11_000;
      expect((await rpcFailure(v.whoami({}, { ticket: t }))).message).toMatch(/expired/);
      const t2 = new TicketIssuer(ring, { now: () => clock }).issue({ userId: 'hal', ttlMs: 10_000 });
      expect((await v.whoami({}, { ticket: t2 })).userId).toBe('hal');
      verifier.setKeys(parseKeyRing({ keys: [hs('other')] }));
      expect((await rpcFailure(v.whoami({}, { ticket: t2 }))).message).toMatch(/unknown-key/);
    } finally {
      await server.close();
    }
  });

  it('garbage tickets are refused; an empty or 1 MiB one is refused by the client before it is sent', async () => {
    const vault = client(front.address);
    const bad = ['x', '.', 'a.b', 'a.b.c.d', '\u0000'.repeat(100), 'eyJhbGciOiJub25lIn0.e30.', 'é'.repeat(5000)];
    const errs = await Promise.all(bad.map((t) => rpcFailure(vault.whoami({}, { ticket: t, timeoutMs: 5000 }))));
    for (const e of errs) expect(e.code).toBe(Status.UNAUTHENTICATED);
    for (const t of ['', 'k'.repeat(1 << 20)]) expect(await rpcFailure(vault.whoami({}, { ticket: t }))).toMatchObject({ code: Status.INVALID_ARGUMENT, reason: 'TICKET_TOO_LONG' });
    const ticket = issuer.issue({ userId: 'erin', ttlMs: 60_000 });
    expect(await vault.whoami({}, { ticket })).toMatchObject({ userId: 'erin' });
  });

  it('raw frames: a 1 MiB or garbage TICKET definition, an unknown ticket id, and a forged ticket referred to 5,000 times neither crash nor stall the server; an id defined again names the new ticket', async () => {
    const socket = connect(Number(front.address.split(':')[1]), '127.0.0.1');
    await new Promise<void>((r, j) => socket.once('connect', r).once('error', j));
    const replies = new Map<number, { s: number; e?: string }>();
    const decoder = new FrameDecoder(16 << 20, (kind, callId, header) => {
      // An empty header is plain OK.
      if (kind === FrameKind.RESPONSE) replies.set(callId, header.length > 0 ? (decodeStatusHeader(header) as { s: number; e?: string }) : { s: Status.OK });
    });
    socket.on('data', (d: Buffer) => decoder.push(d));
    const enc = new FrameEncoder();
    const req = (callId: number, ti: number) => enc.write(FrameKind.REQUEST, callId, encodeRequestHeader({ m: 'vault.v1.Vault/Whoami', ti }), new Uint8Array(0));
    enc.write(FrameKind.TICKET, 7, encodeTicketHeader('k'.repeat(1 << 20)), undefined);
    enc.write(FrameKind.TICKET, 8, new Uint8Array([0xc1, 0xff, 0x00]), undefined); // not msgpack
    const good = issuer.issue({ userId: 'x', ttlMs: 60_000 });
    const [h, , sig] = good.split('.');
    const forged = `${h}.${Buffer.from('{"sub":"admin","exp":9999999999}').toString('base64url')}.${sig}`;
    enc.write(FrameKind.TICKET, 9, encodeTicketHeader(forged), undefined);
    req(1, 7);
    req(2, 8);
    req(3, 12345);
    for (let i = 0; i < 5000; i++) req(100 + i, 9);
    const started = Date.now();
    socket.write(enc.take()!);
    await eventuallyReplies(() => replies.size >= 5003);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(replies.get(1)).toMatchObject({ s: Status.UNAUTHENTICATED, e: expect.stringMatching(/malformed/) });
    expect(replies.get(2)).toMatchObject({ s: Status.INVALID_ARGUMENT, e: expect.stringMatching(/names no ticket defined/) });
    expect(replies.get(3)).toMatchObject({ s: Status.INVALID_ARGUMENT });
    for (let i = 0; i < 5000; i++) expect(replies.get(100 + i)?.s).toBe(Status.UNAUTHENTICATED);
    // Id 9 defined again, now with a good ticket: a request that refers to it passes.
    enc.write(FrameKind.TICKET, 9, encodeTicketHeader(good), undefined);
    req(20_000, 9);
    socket.write(enc.take()!);
    await eventuallyReplies(() => replies.has(20_000));
    expect(replies.get(20_000)).toEqual({ s: Status.OK });
    socket.destroy();
    // Still serving.
    expect(await client(front.address).whoami({}, { ticket: good })).toMatchObject({ userId: 'x' });
  });

  it(`raw frames: a connection keeps the last ${MAX_CONNECTION_TICKETS} tickets defined, and a request that names an older one is refused`, async () => {
    const socket = connect(Number(front.address.split(':')[1]), '127.0.0.1');
    await new Promise<void>((r, j) => socket.once('connect', r).once('error', j));
    const replies = new Map<number, { s: number; e?: string }>();
    const decoder = new FrameDecoder(16 << 20, (kind, callId, header) => {
      if (kind === FrameKind.RESPONSE) replies.set(callId, header.length > 0 ? (decodeStatusHeader(header) as { s: number; e?: string }) : { s: Status.OK });
    });
    socket.on('data', (d: Buffer) => decoder.push(d));
    const enc = new FrameEncoder();
    const good = issuer.issue({ userId: 'k', ttlMs: 60_000 });
    // Ids 1 .. MAX + 1: id 1 is dropped when the last is defined.
    for (let id = 1; id <= MAX_CONNECTION_TICKETS + 1; id++) enc.write(FrameKind.TICKET, id, encodeTicketHeader(good), undefined);
    const req = (callId: number, ti: number) => enc.write(FrameKind.REQUEST, callId, encodeRequestHeader({ m: 'vault.v1.Vault/Whoami', ti }), new Uint8Array(0));
    req(1001, 1);
    req(1002, 2);
    req(1003, MAX_CONNECTION_TICKETS + 1);
    socket.write(enc.take()!);
    await eventuallyReplies(() => replies.size >= 3);
    expect(replies.get(1001)).toMatchObject({ s: Status.INVALID_ARGUMENT, e: expect.stringMatching(/names no ticket defined/) });
    expect(replies.get(1002)).toEqual({ s: Status.OK });
    expect(replies.get(1003)).toEqual({ s: Status.OK });
    socket.destroy();
  });
});
