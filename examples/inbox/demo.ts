/**
 * The inbox in a minute (`npm start`, step 9): three users and a group on a 3-replica PaxosKV
 * cluster; messages to users and to the group, with one replica SIGKILLed halfway; every client
 * must receive every message sent to it once and in order.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { InboxClient } from './client.js';
import { startInbox } from './deploy.js';
import type { InboxMessage } from './gen/inbox.js';

/**
 * Runs the demo, printing through `show`.
 * @throws Error when a message is missing, duplicated or out of order.
 */
export async function runDemo(show: (line: string) => void): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), 'svrkit-inbox-'));
  const d = await startInbox({ dir, grayUsers: ['ada'] });
  const users = ['ada', 'bob', 'cy'];
  const clients = new Map(users.map((u) => [u, new InboxClient({ user: u, login: d.front, message: d.front, sync: d.sync })]));
  const stop = new AbortController();
  const runs: Array<Promise<void>> = [];
  try {
    show(`PaxosKV ${d.kv.join(', ')}; Login and Message on ${d.front}; Sync on ${d.sync}`);
    const received = new Map<string, InboxMessage[]>(users.map((u) => [u, []]));
    for (const c of clients.values()) {
      await c.logIn();
      runs.push(c.run((m) => received.get(c.user)!.push(m), stop.signal));
    }
    const group = await clients.get('ada')!.createGroup('friends', ['bob', 'cy']);
    show(`ada created group friends: ${group.members.join(', ')} (max size for ada ${group.maxSize}: the config center's gray release)`);
    const expected = new Map<string, string[]>(users.map((u) => [u, []]));
    const send = async (from: string, to: string, text: string) => {
      const c = clients.get(from)!;
      if (to === 'friends') {
        await c.sendToGroup('friends', text);
        for (const u of group.members) expected.get(u)!.push(`${from}: ${text}`);
      } else {
        await c.sendToUser(to, text);
        expected.get(to)!.push(`${from}: ${text}`);
      }
    };
    await send('ada', 'friends', 'hello, friends');
    await send('bob', 'ada', 'hi ada');
    await send('cy', 'friends', 'lunch at noon?');
    await d.kill('kv2', 'SIGKILL');
    show('PaxosKV replica 2 SIGKILLed; sending on');
    await send('ada', 'cy', 'yes, noon');
    await send('bob', 'friends', 'count me in');
    await send('cy', 'bob', 'see you');
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline && users.some((u) => received.get(u)!.length < expected.get(u)!.length)) await new Promise((r) => setTimeout(r, 50));
    for (const u of users) {
      const got = received.get(u)!;
      for (const m of got) show(`${u} #${m.seq} ${m.from}${m.group === '' ? '' : ` in ${m.group}`}: ${m.text}`);
      const texts = got.map((m) => `${m.from}: ${m.text}`);
      if (got.some((m, i) => Number(m.seq) !== i + 1)) throw new Error(`${u}'s inbox has a gap or a duplicate: ${got.map((m) => m.seq).join(',')}`);
      if (JSON.stringify([...texts].sort()) !== JSON.stringify([...expected.get(u)!].sort())) throw new Error(`${u} received ${JSON.stringify(texts)}, expected ${JSON.stringify(expected.get(u))}`);
      // The sends were made one after another: each inbox holds them in that order.
      if (JSON.stringify(texts) !== JSON.stringify(expected.get(u))) throw new Error(`${u} received ${JSON.stringify(texts)} out of order`);
    }
    show('every message delivered once and in order, across the replica SIGKILL');
  } finally {
    stop.abort();
    await Promise.allSettled(runs);
    for (const c of clients.values()) c.close();
    await d.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
