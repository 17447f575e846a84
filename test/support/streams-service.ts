/**
 * The Streams test service (test/protos/runtime/streams.proto): every kind of stream, with knobs
 * to fail, hang and report what the server saw. Used in-process by pipeline tests and in its own
 * process (streams-server.ts) by the real-process streaming tests.
 */
import { RpcError, type CallContext } from '../../framework/index.js';
import {
  StreamsService,
  type Chunk,
  type CountRequest,
  type Item,
  type StatsReply,
  type UploadSummary,
} from '../.tmp/gen/streams/streams.js';

/** Serves Streams; counts generators closed and streams open. */
export class Streams extends StreamsService {
  closed = 0;
  open = 0;
  lastAbort = '';

  override async *count(request: CountRequest, call: CallContext): AsyncIterable<Item> {
    this.open++;
    try {
      for (const [k, v] of Object.entries(request.headers)) call.responseMetadata[k] = v;
      const payload = Buffer.alloc(request.payloadBytes, 0x61);
      const n = Number(request.count);
      const failAfter = Number(request.failAfter);
      for (let i = 0; i < n; i++) {
        if (failAfter > 0 && i === failAfter) throw new RpcError(request.failCode, `failed after ${failAfter} items`);
        yield { seq: BigInt(i), payload };
      }
      if (request.hang) {
        await new Promise<void>((resolve) => call.signal.addEventListener('abort', () => resolve(), { once: true }));
      }
      for (const [k, v] of Object.entries(request.trailers)) call.responseMetadata[k] = v;
    } finally {
      this.open--;
      this.closed++;
      this.lastAbort = call.cancelled ? String((call.signal.reason as RpcError).codeName) : '';
    }
  }

  override async upload(requests: AsyncIterable<Chunk>): Promise<UploadSummary> {
    let bytes = 0;
    let chunks = 0;
    let checksum = 0;
    for await (const c of requests) {
      bytes += c.data.length;
      chunks++;
      for (let i = 0; i < c.data.length; i++) checksum = (checksum + c.data[i]!) >>> 0;
    }
    return { bytes: BigInt(bytes), chunks, checksum };
  }

  override async *echo(requests: AsyncIterable<Item>, call: CallContext): AsyncIterable<Item> {
    this.open++;
    try {
      for await (const item of requests) yield item;
    } finally {
      this.open--;
      this.closed++;
      this.lastAbort = call.cancelled ? String((call.signal.reason as RpcError).codeName) : '';
    }
  }

  override async stats(): Promise<StatsReply> {
    return { closed: BigInt(this.closed), open: BigInt(this.open), rss: BigInt(process.memoryUsage.rss()), lastAbort: this.lastAbort };
  }
}
