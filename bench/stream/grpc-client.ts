/**
 * The grpc-js client of the server-streaming benchmark: opens `--streams` streambench.Feed/Watch
 * streams, one per grpc-js client, each with its own subchannel pool
 * (`grpc.use_local_subchannel_pool`) and a distinct channel option, so that no two share a
 * subchannel (an HTTP/2 connection). Reads every Event with the 'data' event (grpc-js's fastest
 * way), checks the count and the last seq, and prints `{ messagesPerSecond, megabytesPerSecond, ... }`
 * as JSON. A warm-up run of the same shape (`--warmup` messages) comes first, unmeasured.
 * grpc-js's default HTTP/2 receive window (65535 bytes) is kept; GRPC_STREAM_WINDOW=<bytes> in the
 * environment sets `grpc-node.flow_control_window` to try another (1 MiB made no difference in our runs).
 *
 *   node --import tsx bench/stream/grpc-client.ts 127.0.0.1:<port> --messages 2000000 --streams 4
 */
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { parseClientArgs, runStreams, type StreamTally } from './common.js';

const PROTO = fileURLToPath(new URL('./feed.proto', import.meta.url));

interface Event {
  seq: number;
  payload: Buffer;
}
type FeedClient = grpc.Client & {
  watch(request: { count: number }, options?: grpc.CallOptions): grpc.ClientReadableStream<Event>;
};

const opts = parseClientArgs('grpc-js-stream-client');
// GRPC_STREAM_WINDOW=<bytes> sets grpc-node.flow_control_window (HTTP/2 receive window; grpc-js's default is 65535).
const window = process.env.GRPC_STREAM_WINDOW === undefined ? {} : { 'grpc-node.flow_control_window': Number(process.env.GRPC_STREAM_WINDOW) };
const definition = protoLoader.loadSync(PROTO, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
const Feed = (grpc.loadPackageDefinition(definition) as any).streambench.Feed as grpc.ServiceClientConstructor;
const clients: FeedClient[] = [];
for (let i = 0; i < opts.streams; i++) {
  clients.push(new Feed(opts.address, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1, 'svrkit.bench.stream': i, ...window }) as unknown as FeedClient);
}
try {
  await Promise.all(clients.map((c) => new Promise<void>((resolve, reject) => c.waitForReady(Date.now() + 5000, (err) => (err ? reject(err) : resolve())))));
  await runStreams('grpc-js', opts, (index, count) =>
    new Promise<StreamTally>((resolve, reject) => {
      const tally: StreamTally = { messages: 0, lastSeq: 0, bytes: 0 };
      const call = clients[index]!.watch({ count }, { deadline: Date.now() + 600_000 });
      call.on('data', (event: Event) => {
        tally.messages++;
        tally.lastSeq = event.seq;
        if (tally.messages === 1) tally.bytes = event.payload.length;
      });
      call.on('error', reject);
      call.on('end', () => resolve(tally));
    }),
  );
} finally {
  for (const c of clients) c.close();
}
