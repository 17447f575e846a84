/**
 * Bytes the svrkit client allocates per call, by allocation site: the same closed loop as
 * `svrkit bench` (raw bytes, concurrency 1000, 4 connections), under V8's sampling heap profiler
 * with collected objects included (so garbage counts, not only what survives).
 *
 *   node bin/svrkit.js run examples/helloworld/greeter.ts --port 7000 &
 *   npx tsx bench/client-alloc.ts 127.0.0.1:7000
 *
 * Prints calls, calls/s (slowed by the profiler; not a throughput figure), bytes per call and the
 * top allocation sites.
 */
import { Session } from 'node:inspector/promises';
import { runBench } from '../framework/cli/bench.js';
import { Channel, resolveMethod } from '../framework/index.js';

interface ProfileNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: ProfileNode[];
}

const address = process.argv[2];
if (address === undefined) {
  process.stderr.write('usage: tsx bench/client-alloc.ts <host:port of a helloworld server>\n');
  process.exit(2);
}
const channel = new Channel(address, { connections: 4 });
const method = await resolveMethod(channel, 'helloworld.Greeter/SayHello');
const bytes = method.encodeRequest({ name: 'ada' });
await channel.waitForReady(5000);
// The options `svrkit bench` passes by default.
const options = { timeoutMs: 10_000, metadata: {} };
const load = (durationMs: number) => runBench({ call: () => channel.unary(method.raw, bytes, options), concurrency: 1000, durationMs });
await load(1000); // warm-up: JIT, connection buffers
const session = new Session();
session.connect();
await session.post('HeapProfiler.startSampling', {
  samplingInterval: 4096,
  includeObjectsCollectedByMajorGC: true,
  includeObjectsCollectedByMinorGC: true,
} as never);
const result = await load(3000);
const { profile } = (await session.post('HeapProfiler.stopSampling')) as unknown as { profile: { head: ProfileNode } };
const bySite = new Map<string, number>();
let total = 0;
const walk = (n: ProfileNode): void => {
  const site = `${n.callFrame.functionName || '(anonymous)'} ${n.callFrame.url.replace(/.*\/(node_modules\/)?/, '')}:${n.callFrame.lineNumber + 1}`;
  bySite.set(site, (bySite.get(site) ?? 0) + n.selfSize);
  total += n.selfSize;
  n.children.forEach(walk);
};
walk(profile.head);
process.stdout.write(`calls ${result.calls}, ${Math.round(result.callsPerSecond)} calls/s under the profiler\n`);
process.stdout.write(`allocated per call: ${Math.round(total / result.calls)} bytes\n`);
for (const [site, size] of [...bySite].sort((a, b) => b[1] - a[1]).slice(0, 12)) {
  process.stdout.write(`${String(Math.round(size / result.calls)).padStart(6)} B/call  ${site}\n`);
}
channel.close();
