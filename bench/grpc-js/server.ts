/**
 * The grpc-js baseline server: helloworld.Greeter/SayHello from examples/helloworld/greeter.proto, loaded at run time
 * with @grpc/proto-loader, answering `{ message: 'Hello ' + name }` (the same handler as svrkit's
 * helloworld example).
 *
 *   npx tsx bench/grpc-js/server.ts [port] [--tls-cert FILE --tls-key FILE] [--als]
 *
 * Port 0 (the default) picks a free one; with --tls-cert and --tls-key (PEM) it serves over TLS.
 * With --als each call's handler runs in an AsyncLocalStorage context of its own, as a svrkit
 * handler does (its call context): on Node 20 that turns on async_hooks for the whole process,
 * and this baseline shows what that costs grpc-js.
 *
 * Binds 127.0.0.1 only, prints `listening 127.0.0.1:<port>` once bound, and shuts down on
 * SIGTERM/SIGINT (in-flight calls get up to 2 s, then connections are cut) and exits 0.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { parsePort, serveUntilSignalled } from './serve.js';
import * as protoLoader from '@grpc/proto-loader';

// The helloworld example's own .proto, so both stacks serve exactly the same rpc.
const PROTO = fileURLToPath(new URL('../../examples/helloworld/greeter.proto', import.meta.url));
// It imports svrkit/options.proto, which lives in svrkit's builtin proto dir.
const INCLUDE_DIRS = [fileURLToPath(new URL('../../framework/builtin/proto', import.meta.url))];

interface HelloRequest {
  name: string;
}
interface HelloReply {
  message: string;
}


async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const flag = (name: string): string | undefined => {
    const i = args.indexOf(name);
    if (i < 0) return undefined;
    const v = args[i + 1];
    if (v === undefined) throw new Error(`${name} needs a file`);
    args.splice(i, 2);
    return v;
  };
  const alsAt = args.indexOf('--als');
  if (alsAt >= 0) args.splice(alsAt, 1);
  const als = alsAt >= 0 ? new AsyncLocalStorage<{ call: unknown }>() : undefined;
  const cert = flag('--tls-cert');
  const key = flag('--tls-key');
  if ((cert === undefined) !== (key === undefined)) throw new Error('--tls-cert and --tls-key go together');
  const port = parsePort(args[0]);
  const credentials =
    cert === undefined ? grpc.ServerCredentials.createInsecure() : grpc.ServerCredentials.createSsl(null, [{ cert_chain: readFileSync(cert), private_key: readFileSync(key!) }], false);
  const definition = protoLoader.loadSync(PROTO, { includeDirs: INCLUDE_DIRS, keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
  const proto = grpc.loadPackageDefinition(definition) as any;
  const service: grpc.ServiceDefinition = proto.helloworld.Greeter.service;

  const server = new grpc.Server();
  server.addService(service, {
    sayHello(call: grpc.ServerUnaryCall<HelloRequest, HelloReply>, callback: grpc.sendUnaryData<HelloReply>) {
      const reply = () => callback(null, { message: 'Hello ' + call.request.name });
      if (als === undefined) reply();
      else als.run({ call }, reply);
    },
  });

  await serveUntilSignalled(server, port, credentials);
}

main().catch((err: unknown) => {
  console.error(`grpc-js server: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
