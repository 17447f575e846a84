/**
 * The grpc-js side of the server-streaming benchmark: streambench.Feed/Watch from
 * bench/stream/feed.proto (loaded at run time with @grpc/proto-loader) streams `count` Events
 * (seq 1..count, the same 57-byte payload: 64 bytes encoded) with `call.write()`, honouring its
 * return value: when it returns false the handler waits for 'drain' before writing more, as a
 * correct grpc-js server must (otherwise grpc-js buffers without bound).
 *
 *   npx tsx bench/stream/grpc-server.ts [port]      # port 0 (the default) picks a free one
 *
 * Binds 127.0.0.1 only, prints `listening 127.0.0.1:<port>` once bound, and shuts down on
 * SIGTERM/SIGINT and exits 0.
 */
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { parsePort, serveUntilSignalled } from '../grpc-js/serve.js';
import * as protoLoader from '@grpc/proto-loader';
import { PAYLOAD } from './payload.js';

const PROTO = fileURLToPath(new URL('./feed.proto', import.meta.url));

interface WatchRequest {
  count: number;
}
interface Event {
  seq: number;
  payload: Buffer;
}


async function main(): Promise<void> {
  const port = parsePort(process.argv[2]);
  const definition = protoLoader.loadSync(PROTO, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
  const service: grpc.ServiceDefinition = (grpc.loadPackageDefinition(definition) as any).streambench.Feed.service;

  const server = new grpc.Server();
  server.addService(service, {
    watch(call: grpc.ServerWritableStream<WatchRequest, Event>) {
      const n = call.request.count;
      let seq = 1;
      let cancelled = false;
      call.on('cancelled', () => (cancelled = true));
      const pump = (): void => {
        while (seq <= n) {
          if (cancelled) return;
          if (!call.write({ seq: seq++, payload: PAYLOAD })) {
            call.once('drain', pump);
            return;
          }
        }
        call.end();
      };
      pump();
    },
  });

  await serveUntilSignalled(server, port);
}

main().catch((err: unknown) => {
  console.error(`grpc-js stream server: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
