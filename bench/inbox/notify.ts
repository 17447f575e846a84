/**
 * Notify delay and the Sync server's memory per connected client, on examples/inbox as real
 * processes (examples/inbox/deploy.ts). `--clients` users log in and each opens a Notify stream
 * on its own connection (`--connections` lower shares connections among them, as an access layer
 * in front of Sync would); the Sync server's memory is read, idle and after a full GC, before they
 * connect, with half of them, and with all (the second half's cost is the marginal one).
 * Then one message is sent to each of `--messages` distinct users, `--rate` a second, and the
 * delay from each send's acknowledgement to its recipient's Notify event is recorded (an event
 * can come before the acknowledgement: the poke leaves before the reply; those count as 0).
 *
 *   npm run build && npx tsx bench/inbox/notify.ts [--clients 10000] [--connections 10000] [--messages 2000] [--rate 200]
 *
 * Everything on 127.0.0.1; every process it starts it stops.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { setMaxListeners } from 'node:events';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Command } from 'commander';
import { intOption } from '../../framework/cli/flags.js';
import { Channel } from 'svrkit';
import { startInbox } from '../../examples/inbox/deploy.js';
import { InboxClient } from '../../examples/inbox/client.js';
import { LoginClient, SyncClient } from '../../examples/inbox/gen/inbox.js';
import { newHistogram } from '../support.js';
import { rss } from '../../test/support/rss.js';

const program = new Command()
  .option('--clients <n>', 'connected clients (users), each with a Notify stream', intOption('--clients', 1, 100_000), 10_000)
  .option('--connections <n>', 'connections they share (default: one each)', intOption('--connections', 1, 100_000))
  .option('--messages <n>', 'messages sent, each to a different user', intOption('--messages', 1, 100_000), 2000)
  .option('--rate <n>', 'messages a second', intOption('--rate', 1, 100_000), 200)
  .parse();
const opts = program.opts<{ clients: number; connections?: number; messages: number; rate: number }>();
const connections = Math.min(opts.connections ?? opts.clients, opts.clients);
const messages = Math.min(opts.messages, opts.clients);

const dir = mkdtempSync(path.join(os.tmpdir(), 'svrkit-inbox-notify-'));
let onMemory: ((line: string) => void) | undefined;
const d = await startInbox({ dir, env: { NODE_OPTIONS: '--expose-gc' }, log: (line) => line.startsWith('sync: memory ') && onMemory?.(line) });

/** The Sync server's memory after a full GC (its SIGUSR2 line), bytes. */
async function syncMemory(): Promise<{ rss: number; heap: number; heapTotal: number; external: number }> {
  const line = await new Promise<string>((resolve) => {
    onMemory = resolve;
    process.kill(d.pid('sync')!, 'SIGUSR2');
  });
  const n = (k: string) => Number(new RegExp(`${k} (\\d+)`).exec(line)![1]);
  return { rss: n('rss'), heap: n('heapUsed'), heapTotal: n('heapTotal'), external: n('external') };
}
const stop = new AbortController();
setMaxListeners(0, stop.signal);
const channels = Array.from({ length: connections }, () => new Channel(d.sync));
const streams: Array<Promise<void>> = [];
try {
  // Tickets for every user (100 logins at a time).
  const login = new LoginClient(d.front);
  const tickets: string[] = new Array(opts.clients);
  let next = 0;
  await Promise.all(
    Array.from({ length: 100 }, async () => {
      while (next < opts.clients) {
        const i = next++;
        tickets[i] = (await login.login({ user: `c${i}`, password: `c${i}-pw` })).ticket;
      }
    }),
  );
  login.close();
  // A few streams first (the server's code and buffers warm), then the baseline.
  const arrivals = new Map<string, number>();
  let reopened = 0;
  const open = (i: number) => {
    const sync = new SyncClient(channels[i % connections]!);
    streams.push(
      (async () => {
        // As the example's client: a stream that fails is opened again (after a pause).
        while (!stop.signal.aborted) {
          try {
            for await (const e of sync.notify({ userId: `c${i}`, lastSeq: 0n }, { ticket: tickets[i], signal: stop.signal, deadline: Infinity })) {
              if (e.seq > 0n && !arrivals.has(`c${i}`)) arrivals.set(`c${i}`, performance.now());
            }
          } catch {
            if (stop.signal.aborted) return;
            reopened++;
            await sleep(200);
          }
        }
      })(),
    );
  };
  for (let i = 0; i < Math.min(100, opts.clients); i++) open(i);
  await sleep(2000);
  const before = rss(d.pid('sync')!);
  const memBefore = await syncMemory();
  /** Opens clients [from, to), then waits until the Sync server's RSS stops moving (idle). @returns that RSS (bytes). */
  const openIdle = async (from: number, to: number): Promise<number> => {
    for (let i = from; i < to; i++) {
      open(i);
      if (i % 500 === 0) await sleep(50); // let the server keep up with the first reads
    }
    let last = rss(d.pid('sync')!);
    for (let k = 0; k < 20; k++) {
      await sleep(1000);
      const now = rss(d.pid('sync')!);
      if (Math.abs(now - last) < 256 * 1024) break;
      last = now;
    }
    return rss(d.pid('sync')!);
  };
  // In two halves: the second half's cost is the marginal one (a server's heap and buffers grow
  // by steps, whose fixed part the first half pays).
  const middle = 100 + Math.floor((opts.clients - 100) / 2);
  await openIdle(100, middle);
  const memMiddle = await syncMemory();
  const after = await openIdle(middle, opts.clients);
  const memAfter = await syncMemory();
  const added = opts.clients - Math.min(100, opts.clients);
  const per = (a: number, b: number, n = added) => ((a - b) / Math.max(1, n) / 1024).toFixed(2);
  console.log(
    `Sync server after a full GC, per idle client: RSS ${per(memAfter.rss, memBefore.rss)} KiB, JS heap ${per(memAfter.heap, memBefore.heap)} KiB ` +
      `(committed ${per(memAfter.heapTotal, memBefore.heapTotal)} KiB), external ${per(memAfter.external, memBefore.external)} KiB`,
  );
  const secondHalf = opts.clients - middle;
  console.log(
    `  the second ${secondHalf} clients alone (marginal): RSS ${per(memAfter.rss, memMiddle.rss, secondHalf)} KiB, ` +
      `JS heap ${per(memAfter.heap, memMiddle.heap, secondHalf)} KiB (committed ${per(memAfter.heapTotal, memMiddle.heapTotal, secondHalf)} KiB), external ${per(memAfter.external, memMiddle.external, secondHalf)} KiB`,
  );
  console.log(
    `Sync server RSS: ${(before / 2 ** 20).toFixed(1)} MiB with 100 streams, ${(after / 2 ** 20).toFixed(1)} MiB with ${opts.clients} ` +
      `(${connections} connections): ${((after - before) / Math.max(1, added) / 1024).toFixed(2)} KiB per idle client`,
  );

  // One message to each of `messages` distinct users, `rate` a second.
  const sender = new InboxClient({ user: 'sender', login: d.front, message: d.front, sync: d.sync });
  await sender.logIn();
  const acks = new Map<string, number>();
  const calls = new Map<string, number>();
  const began = performance.now();
  const inFlight: Array<Promise<unknown>> = [];
  for (let k = 0; k < messages; k++) {
    const due = began + (k * 1000) / opts.rate;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    const user = `c${Math.floor((k * opts.clients) / messages)}`;
    calls.set(user, performance.now());
    inFlight.push(sender.sendToUser(user, `hello ${k}`).then(() => acks.set(user, performance.now())));
  }
  await Promise.all(inFlight);
  const deadline = performance.now() + 10_000;
  while (arrivals.size < messages && performance.now() < deadline) await sleep(50);
  const fromAck = newHistogram();
  const fromCall = newHistogram();
  let beforeAck = 0;
  for (const [user, ack] of acks) {
    const at = arrivals.get(user);
    if (at === undefined) continue;
    if (at < ack) beforeAck++;
    fromAck.recordValue(Math.max(1, Math.round((at - ack) * 1000)));
    fromCall.recordValue(Math.max(1, Math.round((at - calls.get(user)!) * 1000)));
  }
  const ms = (h: ReturnType<typeof newHistogram>, p: number) => (h.getValueAtPercentile(p) / 1000).toFixed(1);
  console.log(
    `notify delay with ${opts.clients} connected clients, ${messages} messages at ${opts.rate}/s: from the send's acknowledgement p50 ${ms(fromAck, 50)} ms, p99 ${ms(fromAck, 99)} ms ` +
      `(${beforeAck} arrived before it); from the send's start p50 ${ms(fromCall, 50)} ms, p99 ${ms(fromCall, 99)} ms; ${messages - arrivals.size} not notified within 10 s; ` +
      `streams that failed and were opened again: ${reopened}`,
  );
  sender.close();
} finally {
  stop.abort();
  await Promise.allSettled(streams);
  for (const c of channels) c.close();
  await d.stop();
  rmSync(dir, { recursive: true, force: true });
}
