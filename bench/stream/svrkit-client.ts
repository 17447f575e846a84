/**
 * The svrkit client of the server-streaming benchmark: opens `--streams` streambench.Feed/Watch
 * streams through one generated FeedClient whose Channel has `connections: streams` (the channel
 * spreads calls over its connections round robin, so each stream has a connection to itself),
 * reads every Event with `for await`, checks the count and the last seq, and prints
 * `{ messagesPerSecond, megabytesPerSecond, ... }` as JSON. A warm-up run of the same shape
 * (`--warmup` messages) comes first, unmeasured.
 *
 *   node --import tsx bench/stream/svrkit-client.ts 127.0.0.1:<port> --messages 2000000 --streams 4
 */
import { FeedClient } from './gen/feed.js';
import { parseClientArgs, runStreams, type StreamTally } from './common.js';

const opts = parseClientArgs('svrkit-stream-client');
const client = new FeedClient(opts.address, { connections: opts.streams });
try {
  await runStreams('svrkit', opts, async (_index, count) => {
    const tally: StreamTally = { messages: 0, lastSeq: 0, bytes: 0 };
    for await (const event of client.watch({ count }, { timeoutMs: 600_000 })) {
      tally.messages++;
      tally.lastSeq = event.seq;
      if (tally.messages === 1) tally.bytes = event.payload.length;
    }
    return tally;
  });
} finally {
  client.close();
}
