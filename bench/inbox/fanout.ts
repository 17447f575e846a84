/**
 * Fan-out throughput of examples/inbox: messages sent to one group, written into every member's
 * inbox, on the whole inbox as real processes (examples/inbox/deploy.ts: 3 PaxosKV replicas with
 * fsync, a Sync server, a front server with Login and Message). Every member runs the example's
 * client (syncing each time Notify says its inbox moved), so syncs run under the fan-out load.
 * It prints, per group size: group messages/s and inbox writes/s (messages times members), the
 * send latency (the Message call, all inboxes written), the Sync call latency, and CPU per inbox write.
 *
 *   npm run build && npx tsx bench/inbox/fanout.ts [--groups 10,100] [--concurrency 8] [--duration 10s]
 *
 * Each group size gets a fresh deployment. Everything on 127.0.0.1; every process it starts it stops.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Command } from 'commander';
import { durationOption, intOption } from '../../framework/cli/flags.js';
import { InboxClient } from '../../examples/inbox/client.js';
import { startInbox } from '../../examples/inbox/deploy.js';
import { cpuSeconds, newHistogram } from '../support.js';

const program = new Command()
  .option('--groups <sizes>', 'group sizes, comma-separated', '10,100')
  .option('--concurrency <n>', 'group sends in flight', intOption('--concurrency', 1, 1000), 8)
  .option('--duration <d>', 'how long each group size is measured', durationOption('--duration'), 10_000)
  .parse();
const opts = program.opts<{ groups: string; concurrency: number; duration: number }>();
const sizes = opts.groups.split(',').map(Number);
if (sizes.some((n) => !Number.isInteger(n) || n < 2 || n > 1000)) program.error(`--groups: comma-separated group sizes from 2 to 1000, not ${opts.groups}`);

const q = (h: ReturnType<typeof newHistogram>, p: number) => (h.getValueAtPercentile(p) / 1000).toFixed(1);

for (const size of sizes) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'svrkit-inbox-fanout-'));
  const d = await startInbox({ dir, grayUsers: ['owner'], grayMaxGroupSize: Math.max(size, 8) });
  const stop = new AbortController();
  const runs: Array<Promise<void>> = [];
  const syncMs = newHistogram();
  const sendMs = newHistogram();
  const users = ['owner', ...Array.from({ length: size - 1 }, (_, i) => `m${i}`)];
  const clients = users.map((u) => new InboxClient({ user: u, login: d.front, message: d.front, sync: d.sync, onSyncCall: (ms) => syncMs.recordValue(Math.max(1, Math.round(ms * 1000))) }));
  try {
    for (const c of clients) await c.logIn();
    await clients[0]!.createGroup('g', users.slice(1));
    for (const c of clients) runs.push(c.run(() => undefined, stop.signal));
    // Warm up (connections, caches), then measure.
    const send = async (until: number, record: boolean) => {
      let n = 0;
      while (performance.now() < until) {
        const c = clients[Math.floor(Math.random() * clients.length)]!;
        const began = performance.now();
        await c.sendToGroup('g', `message ${n++}`);
        if (record) sendMs.recordValue(Math.max(1, Math.round((performance.now() - began) * 1000)));
      }
      return n;
    };
    await Promise.all(Array.from({ length: opts.concurrency }, () => send(performance.now() + 2000, false)));
    syncMs.reset();
    const names = ['kv1', 'kv2', 'kv3', 'front', 'sync'];
    const cpu0 = names.map((n) => cpuSeconds(d.pid(n)));
    const began = performance.now();
    const counts = await Promise.all(Array.from({ length: opts.concurrency }, () => send(began + opts.duration, true)));
    const seconds = (performance.now() - began) / 1000;
    const cpu = names.map((n, i) => cpuSeconds(d.pid(n)) - cpu0[i]!);
    const sent = counts.reduce((a, b) => a + b, 0);
    const writes = sent * size;
    const cpuText = names.map((n, i) => `${n} ${cpu[i]!.toFixed(1)}`).join(', ');
    console.log(
      `group of ${size}: ${(sent / seconds).toFixed(0)} messages/s, ${(writes / seconds).toFixed(0)} inbox writes/s; ` +
        `send p50 ${q(sendMs, 50)} ms p99 ${q(sendMs, 99)} ms; sync p50 ${q(syncMs, 50)} ms p99 ${q(syncMs, 99)} ms (${syncMs.totalCount} syncs); ` +
        `CPU ${(cpu.reduce((a, b) => a + b, 0) * 1000 / writes).toFixed(2)} ms per inbox write (s: ${cpuText})`,
    );
  } finally {
    stop.abort();
    await Promise.allSettled(runs);
    for (const c of clients) c.close();
    await d.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
