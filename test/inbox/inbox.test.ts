/**
 * examples/inbox end to end, as real processes on 127.0.0.1 (examples/inbox/deploy.ts): three
 * PaxosKV replicas, a Sync server and a front server (Login, Message). Twenty users with clients
 * that sync and wait on Notify; five groups; 2,000 messages sent concurrently, direct and to
 * groups, while one replica is SIGKILLed and restarted and the Sync server is SIGKILLed and
 * restarted. Every inbox must then hold exactly the messages sent to its user, with no gap or
 * duplicate, in an order consistent with the order the sends were acknowledged; every client must
 * have received each of them once, in order; a sync from any earlier sequence number returns
 * exactly the suffix. And nobody reads another user's inbox, whatever they forge.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseKeyRing, Status, TicketIssuer } from 'svrkit';
import { InboxClient } from '../../examples/inbox/client.js';
import { startInbox, type InboxDeployment } from '../../examples/inbox/deploy.js';
import { LoginClient, SyncClient, type InboxMessage } from '../../examples/inbox/gen/inbox.js';
import { exclusively } from '../support/exclusive.js';
import { mulberry32 } from '../support/prng.js';
import { repoRoot, runSvrkit } from '../support/processes.js';
import { rpcFailure } from '../support/rpc-failure.js';

const DIR = path.join(repoRoot, 'test', '.tmp', `inbox-${process.pid}`);
const USERS = Array.from({ length: 20 }, (_, i) => `u${i}`);
const GROUPS = 5;
const MESSAGES = 2000;
const CONCURRENCY = 40;

let d: InboxDeployment;

beforeAll(async () => {
  await fsp.rm(DIR, { recursive: true, force: true });
  // u0 is in the gray release of max_group_size (20); everyone else gets 6.
  d = await startInbox({ dir: DIR, maxGroupSize: 6, grayUsers: ['u0'], grayMaxGroupSize: 20 });
}, 90_000);

afterAll(async () => {
  await d?.stop();
  await fsp.rm(DIR, { recursive: true, force: true });
});

interface Sent {
  from: string;
  id: string;
  recipients: string[];
  call: number;
  ack: number;
}

describe('examples/inbox end to end', () => {
  it('delivers 2,000 concurrent messages once and in order to 20 users across a replica SIGKILL and a Sync restart', { timeout: 300_000 }, () =>
    exclusively('timing', async () => {
      const rand = mulberry32(17);
      const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
      const clients = new Map(USERS.map((u) => [u, new InboxClient({ user: u, login: d.front, message: d.front, sync: d.sync })]));
      for (const c of clients.values()) await c.logIn();
      const received = new Map<string, InboxMessage[]>(USERS.map((u) => [u, []]));
      const stop = new AbortController();
      const runs = [...clients.values()].map((c) => c.run((m) => received.get(c.user)!.push(m), stop.signal));

      // Five groups of 4 to 12 members, made by u0 (whose gray max_group_size allows it).
      const groups = new Map<string, string[]>();
      for (let g = 0; g < GROUPS; g++) {
        const size = 4 + Math.floor(rand() * 9);
        const members = new Set(['u0']);
        while (members.size < size) members.add(pick(USERS));
        const made = await clients.get('u0')!.createGroup(`g${g}`, [...members].filter((m) => m !== 'u0'));
        expect(made.members.length).toBe(size);
        groups.set(`g${g}`, made.members);
      }

      // 2,000 sends, CONCURRENCY at a time; faults at set points.
      const sent: Sent[] = [];
      let next = 0;
      let acked = 0;
      const faults: Array<Promise<void>> = [];
      const onAck = () => {
        acked++;
        if (acked === 500) faults.push(d.kill('kv2', 'SIGKILL'));
        if (acked === 800) faults.push(d.kill('sync', 'SIGKILL').then(() => d.restart('sync')));
        if (acked === 1200) faults.push(Promise.all(faults).then(() => d.restart('kv2')));
      };
      const sender = async () => {
        while (next < MESSAGES) {
          const n = next++;
          const toGroup = rand() < 0.4;
          const group = pick([...groups.keys()]);
          const from = toGroup ? pick(groups.get(group)!) : pick(USERS);
          const to = pick(USERS);
          const id = `m${n}`;
          const call = performance.now();
          const c = clients.get(from)!;
          if (toGroup) await c.sendToGroup(group, `text ${n}`, id);
          else await c.sendToUser(to, `text ${n}`, id);
          sent.push({ from, id, recipients: toGroup ? groups.get(group)! : [to], call, ack: performance.now() });
          onAck();
        }
      };
      const pids = { kv2: d.pid('kv2'), sync: d.pid('sync') };
      await Promise.all(Array.from({ length: CONCURRENCY }, sender));
      await Promise.all(faults);
      // The faults happened: both processes are new ones.
      expect(d.pid('kv2')).not.toBe(pids.kv2);
      expect(d.pid('sync')).not.toBe(pids.sync);
      expect(sent.length).toBe(MESSAGES);

      // Every client receives what was sent to it.
      const expected = new Map<string, Sent[]>(USERS.map((u) => [u, []]));
      for (const s of sent) for (const r of s.recipients) expected.get(r)!.push(s);
      const deadline = Date.now() + 60_000;
      while (Date.now() < deadline && USERS.some((u) => received.get(u)!.length < expected.get(u)!.length)) await new Promise((r) => setTimeout(r, 100));
      stop.abort();
      await Promise.allSettled(runs);

      const bySend = new Map(sent.map((s) => [`${s.from}/${s.id}`, s]));
      for (const u of USERS) {
        const got = received.get(u)!;
        // No gap, no duplicate: 1, 2, 3, ...
        expect(got.map((m) => Number(m.seq)), u).toEqual(got.map((_, i) => i + 1));
        // Exactly the messages sent to u.
        expect(got.map((m) => `${m.from}/${m.clientMsgId}`).sort(), u).toEqual(expected.get(u)!.map((s) => `${s.from}/${s.id}`).sort());
        // In an order the acknowledgements allow: a send acknowledged before another was made comes first.
        let latestCall = -Infinity;
        for (const m of got) {
          const s = bySend.get(`${m.from}/${m.clientMsgId}`)!;
          expect(s.ack, `${u}: #${m.seq} (${m.clientMsgId}) was acknowledged before an earlier message's send began`).toBeGreaterThanOrEqual(latestCall);
          latestCall = Math.max(latestCall, s.call);
        }
        // A sync from any earlier sequence number returns exactly the suffix.
        const c = clients.get(u)!;
        for (const from of [0, Math.floor(got.length / 3), got.length - 1, got.length].filter((k) => k >= 0)) {
          const suffix = await syncAll(c, from);
          expect(suffix.map((m) => `${m.seq}:${m.clientMsgId}`), `${u} from ${from}`).toEqual(got.slice(from).map((m) => `${m.seq}:${m.clientMsgId}`));
        }
      }
      const total = USERS.reduce((n, u) => n + received.get(u)!.length, 0);
      console.log(`inbox e2e: ${MESSAGES} sends, ${total} inbox deliveries, ${[...clients.values()].reduce((n, c) => n + c.syncs, 0)} sync calls`);
      for (const c of clients.values()) c.close();
    }),
  );

  it('lets nobody read another user\'s inbox: not by naming them, nor with a forged user id, metadata or ticket', async () => {
    const login = new LoginClient(d.front);
    const sync = new SyncClient(d.sync);
    try {
      const { ticket } = await login.login({ user: 'u3', password: 'u3-pw' });
      // u3's ticket, u4's inbox.
      let err = await rpcFailure(sync.sync({ userId: 'u4', lastSeq: 0n }, { ticket }));
      expect(err.code).toBe(Status.PERMISSION_DENIED);
      err = await rpcFailure(sync.sync({ userId: 'u4', lastSeq: 0n }, { ticket, metadata: { 'x-user-id': 'u4' } }));
      expect(err.code).toBe(Status.PERMISSION_DENIED);
      err = await rpcFailure(collect(sync.notify({ userId: 'u4', lastSeq: 0n }, { ticket })));
      expect(err.code).toBe(Status.PERMISSION_DENIED);
      // No ticket; a ticket for u4 signed with another key (same key id); a garbage ticket.
      err = await rpcFailure(sync.sync({ userId: 'u4', lastSeq: 0n }));
      expect(err.code).toBe(Status.UNAUTHENTICATED);
      const other = await runSvrkit(['ticket', 'keygen', '--kid', 'inbox1']);
      const forged = new TicketIssuer(parseKeyRing(JSON.parse(other.stdout))).issue({ userId: 'u4', scopes: ['inbox'], ttlMs: 60_000 });
      err = await rpcFailure(sync.sync({ userId: 'u4', lastSeq: 0n }, { ticket: forged }));
      expect(err.code).toBe(Status.UNAUTHENTICATED);
      err = await rpcFailure(sync.sync({ userId: 'u4', lastSeq: 0n }, { ticket: `${ticket.slice(0, -4)}AAAA` }));
      expect(err.code).toBe(Status.UNAUTHENTICATED);
      // A user's ticket cannot poke (scope inbox.poke), nor log in as another.
      err = await rpcFailure(sync.poke({ moved: [{ userId: 'u4', seq: 1n }] }, { ticket }));
      expect(err.code).toBe(Status.PERMISSION_DENIED);
      err = await rpcFailure(login.login({ user: 'u4', password: 'u3-pw' }));
      expect(err.code).toBe(Status.UNAUTHENTICATED);
      // Their own inbox is fine.
      expect((await sync.sync({ userId: 'u3', lastSeq: 0n }, { ticket })).newSeq).toBeGreaterThanOrEqual(0n);
    } finally {
      login.close();
      sync.close();
    }
  });

  it('takes the maximum group size from the config center, gray release included', async () => {
    const u0 = new InboxClient({ user: 'u0', login: d.front, message: d.front, sync: d.sync });
    const u5 = new InboxClient({ user: 'u5', login: d.front, message: d.front, sync: d.sync });
    try {
      await u0.logIn();
      await u5.logIn();
      const seven = USERS.slice(6, 13);
      const err = await rpcFailure(u5.createGroup('too-big', seven));
      expect(err.code).toBe(Status.FAILED_PRECONDITION);
      expect(err.message).toContain('maximum size for u5, 6');
      const g = await u0.createGroup('big', seven);
      expect(g.maxSize).toBe(20);
      expect(g.members.length).toBe(8);
      // u5 may not add to a group past its own maximum either (and is not a member).
      expect((await rpcFailure(u5.addMember('big', 'u19'))).code).toBe(Status.PERMISSION_DENIED);
    } finally {
      u0.close();
      u5.close();
    }
  });
});

/** Syncs `c`'s inbox from `from` to its end, page by page, with the client's own ticket. */
async function syncAll(c: InboxClient, from: number): Promise<InboxMessage[]> {
  const saved = c.lastSeq;
  const out: InboxMessage[] = [];
  c.lastSeq = from;
  try {
    await c.sync((m) => out.push(m));
  } finally {
    c.lastSeq = saved;
  }
  return out;
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

