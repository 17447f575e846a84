import { setTimeout as sleep } from 'node:timers/promises';
import { mkdtempSync } from 'node:fs';
import os from 'node:os'; import path from 'node:path';
import { Channel } from '../../index.js';
import { startInbox } from '../../examples/inbox/deploy.js';
import { LoginClient, SyncClient } from '../../examples/inbox/gen/inbox.js';
const d = await startInbox({ dir: mkdtempSync(path.join(os.tmpdir(), 'hx-')), env: { NODE_OPTIONS: '--expose-gc --heapsnapshot-signal=SIGUSR1' } });
const login = new LoginClient(d.front);
const chans = Array.from({ length: 10 }, () => new Channel(d.sync));
const stop = new AbortController();
const open = async (i: number) => {
  const t = (await login.login({ user: `c${i}`, password: `c${i}-pw` })).ticket;
  void (async () => { try { for await (const _ of new SyncClient(chans[i % 10]!).notify({ userId: `c${i}`, lastSeq: 0n }, { ticket: t, signal: stop.signal, deadline: Infinity })) {} } catch {} })();
};
for (let i = 0; i < 100; i++) await open(i);
await sleep(2000); process.kill(d.pid('sync')!, 'SIGUSR1'); await sleep(4000);
for (let i = 100; i < 1100; i++) await open(i);
await sleep(2000); process.kill(d.pid('sync')!, 'SIGUSR1'); await sleep(6000);
stop.abort(); await d.stop(); process.exit(0);
