/**
 * The svrkit side of the server-streaming benchmark: streambench.Feed/Watch streams `count` Events
 * (seq 1..count, a fixed 57-byte payload: 64 bytes encoded, see feed.proto) from an `async *`
 * handler, as fast as the transport's flow control lets it. Served by bench/stream/run.ts with
 *
 *   node bin/svrkit.js run bench/stream/feed.ts --port 0
 *
 * (generate bench/stream/gen first: `node bin/svrkit.js gen bench/stream/feed.proto --out bench/stream/gen`;
 * run.ts does it).
 */
import type { CallContext } from 'svrkit';
import { FeedService, type Event, type WatchRequest } from './gen/feed.js';
import { PAYLOAD } from './payload.js';

export class Feed extends FeedService {
  // A cancelled call (the client left, its deadline passed) returns the generator at its next
  // yield: no need to watch call.signal here.
  override async *watch(request: WatchRequest, _call: CallContext): AsyncIterable<Event> {
    const n = request.count;
    for (let seq = 1; seq <= n; seq++) yield { seq, payload: PAYLOAD };
  }
}

export default new Feed();
