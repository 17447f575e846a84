/**
 * The grpc-js baseline client: drives helloworld.Greeter/SayHello on a grpc-js server with the
 * same closed-loop engine as `svrkit bench` (framework/cli/bench.ts), so the figures compare.
 *
 *   npx tsx bench/grpc-js/client.ts <address> --concurrency N (--duration 10s | --requests N)
 *                                   [--connections C] [--rate R] [--json]
 *
 * Opens C distinct grpc-js channels (each with its own subchannel pool, hence its own TCP/HTTP2
 * connection), waits until all are connected, then spreads calls over them round robin, at most
 * R calls per second with --rate (`BenchOptions.rate`). Prints a
 * progress line on stderr every second and the result on stdout (`formatBenchResult`, or the
 * `BenchResult` as JSON with --json). Exit status: 0 after a run, 1 when it cannot connect,
 * 2 on bad arguments.
 */
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { Command, InvalidArgumentError } from 'commander';
import { formatBenchResult, formatProgress, parseDuration, runBench } from '../../framework/cli/bench.js';
import { RpcError, type Status } from '../../framework/wire/status.js';

// The helloworld example's own .proto, so both stacks serve exactly the same rpc.
const PROTO = fileURLToPath(new URL('../../examples/helloworld/greeter.proto', import.meta.url));
// It imports svrkit/options.proto, which lives in svrkit's builtin proto dir.
const INCLUDE_DIRS = [fileURLToPath(new URL('../../framework/builtin/proto', import.meta.url))];

interface HelloReply {
  message: string;
}
type GreeterClient = grpc.Client & {
  sayHello(request: { name: string }, callback: (err: grpc.ServiceError | null, reply?: HelloReply) => void): grpc.ClientUnaryCall;
};

function positiveInt(what: string) {
  return (text: string): number => {
    const n = Number(text);
    if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(n) || n < 1) {
      throw new InvalidArgumentError(`${what} must be a positive integer, got '${text}'`);
    }
    return n;
  };
}

function duration(text: string): number {
  try {
    return parseDuration(text);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

interface Options {
  concurrency: number;
  duration?: number;
  requests?: number;
  connections: number;
  rate?: number;
  json?: boolean;
}

async function main(): Promise<void> {
  const program = new Command()
    .name('grpc-js-bench')
    .description('closed-loop load on helloworld.Greeter/SayHello of a grpc-js server')
    .argument('<address>', 'server address host:port')
    .requiredOption('-c, --concurrency <n>', 'calls kept in flight', positiveInt('--concurrency'))
    .option('-d, --duration <time>', 'run this long, with a unit: 10s, 500ms, 1m', duration)
    .option('-n, --requests <n>', 'make this many calls in total', positiveInt('--requests'))
    .option('--connections <n>', 'grpc-js channels (TCP connections) to spread calls over', positiveInt('--connections'), 1)
    .option('--rate <calls/s>', 'start at most this many calls per second on average', positiveInt('--rate'))
    .option('--json', 'print the result as JSON')
    .showHelpAfterError()
    .parse();
  const address = program.args[0]!;
  const opts = program.opts<Options>();
  if ((opts.duration === undefined) === (opts.requests === undefined)) {
    program.error('error: give exactly one of --duration and --requests', { exitCode: 2 });
  }

  const definition = protoLoader.loadSync(PROTO, { includeDirs: INCLUDE_DIRS, keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
  const Greeter = (grpc.loadPackageDefinition(definition) as any).helloworld.Greeter as grpc.ServiceClientConstructor;

  // A local subchannel pool per channel: without it grpc-js shares one subchannel (one HTTP/2
  // connection) among all channels to the same address with the same options.
  const clients: GreeterClient[] = [];
  for (let i = 0; i < opts.connections; i++) {
    clients.push(new Greeter(address, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 }) as unknown as GreeterClient);
  }
  const closeAll = () => {
    for (const c of clients) c.close();
  };
  try {
    await Promise.all(
      clients.map((c) => new Promise<void>((resolve, reject) => c.waitForReady(Date.now() + 5000, (err) => (err ? reject(err) : resolve())))),
    );
  } catch (err) {
    closeAll();
    console.error(`cannot connect to ${address}: ${(err as Error).message}`);
    process.exit(1);
  }

  const request = { name: 'bench' };
  const n = clients.length;
  let next = 0;
  const call = (): Promise<HelloReply> =>
    new Promise<HelloReply>((resolve, reject) => {
      const client = clients[next]!;
      next = next + 1 === n ? 0 : next + 1;
      client.sayHello(request, (err, reply) => {
        // grpc-js status numbers are gRPC's, as are svrkit's: report errors by status name.
        if (err) reject(new RpcError(err.code as number as Status, err.details));
        else resolve(reply!);
      });
    });

  const result = await runBench({
    call,
    concurrency: opts.concurrency,
    ...(opts.rate !== undefined ? { rate: opts.rate } : {}),
    ...(opts.duration !== undefined ? { durationMs: opts.duration } : { requests: opts.requests! }),
    onProgress: (p) => process.stderr.write(formatProgress(p) + '\n'),
  });
  closeAll();

  const title = `grpc-js ${address} helloworld.Greeter/SayHello, ${opts.connections} connection${opts.connections === 1 ? '' : 's'}`;
  process.stdout.write((opts.json ? JSON.stringify({ ...result, connections: opts.connections }, null, 2) : formatBenchResult(result, title)) + '\n');
}

main().catch((err: unknown) => {
  console.error(`grpc-js bench: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
