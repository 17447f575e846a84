/**
 * A Streams client in its own process, for streaming tests:
 * - `slow <address> <messages/s> <seconds> <payload bytes>`: reads an endless Count stream at the
 *   given rate, then prints one JSON line `{ received, rssStart, rssMax }` (bytes) and exits;
 * - `vanish <address>`: opens a hanging Count stream, prints `streaming` after the first item,
 *   and waits to be killed.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { StreamsClient } from '../.tmp/gen/streams/streams.js';

const [mode, address, ...rest] = process.argv.slice(2);
const client = new StreamsClient(address!);

if (mode === 'slow') {
  const rate = Number(rest[0]);
  const seconds = Number(rest[1]);
  const payloadBytes = Number(rest[2] ?? 64);
  const end = performance.now() + seconds * 1000;
  let received = 0;
  let rssStart = 0;
  let rssMax = 0;
  const batch = Math.max(1, Math.round(rate / 100));
  for await (const _ of client.count({ count: 1e12, payloadBytes })) {
    received++;
    if (received === 1) {
      // Let the first window arrive, then take the baseline.
      await sleep(200);
      rssStart = process.memoryUsage.rss();
    }
    if (received % batch === 0) {
      await sleep((batch / rate) * 1000);
      rssMax = Math.max(rssMax, process.memoryUsage.rss());
      if (performance.now() >= end) break;
    }
  }
  process.stdout.write(JSON.stringify({ received, rssStart, rssMax }) + '\n');
  client.close();
} else if (mode === 'vanish') {
  for await (const _ of client.count({ count: 1, hang: true })) {
    process.stdout.write('streaming\n');
  }
} else {
  process.stderr.write(`unknown mode ${mode}\n`);
  process.exit(2);
}
