/**
 * The client-streaming and bidi halves of the Streams service, checked through a generated
 * StreamsClient on any channel (svrkit's protocol or `grpc://`): 300 chunks of 1,000 bytes
 * uploaded, and 200 items echoed back in order. Shared by the gRPC interop tests.
 */
import { expect } from 'vitest';
import type { StreamsClient } from '../.tmp/gen/streams/streams.js';

/**
 * Uploads 300 chunks of 1000 bytes (expects a summary of 300,000 bytes in 300 chunks), then
 * echoes items with seq 0..199 through the bidi method (expects them back in order).
 * @param streams - a client of streams.v1.Streams.
 * @throws the assertion's error when a reply differs.
 */
export async function expectUploadAndEcho(streams: StreamsClient): Promise<void> {
  async function* chunks() {
    for (let i = 0; i < 300; i++) yield { data: Buffer.alloc(1000, i % 256) };
  }
  expect(await streams.upload(chunks())).toMatchObject({ bytes: 300000n, chunks: 300 });

  async function* seqs() {
    for (let i = 0; i < 200; i++) yield { seq: BigInt(i), payload: new Uint8Array() };
  }
  const echoed: number[] = [];
  for await (const item of streams.echo(seqs())) echoed.push(Number(item.seq));
  expect(echoed).toEqual(Array.from({ length: 200 }, (_, i) => i));
}
