/**
 * Runs once before the test files: generates the examples' code, which several tests import and
 * the CLI tests serve (`npm start` does the same), and the benchmarks' services (overload, streaming).
 */
import { generate } from '../codegen/index.js';

export default async function setup(): Promise<void> {
  await generate({ files: ['examples/helloworld/greeter.proto'], outDir: 'examples/helloworld/gen' });
  await generate({ files: ['examples/chain/chain.proto'], outDir: 'examples/chain/gen' });
  await generate({ files: ['examples/tickets/tickets.proto'], outDir: 'examples/tickets/gen' });
  await generate({ files: ['examples/inbox/inbox.proto'], outDir: 'examples/inbox/gen' });
  await generate({ files: ['test/protos/runtime/probe.proto'], outDir: 'test/.tmp/gen/probe' });
  await generate({ files: ['test/protos/runtime/streams.proto'], outDir: 'test/.tmp/gen/streams' });
  await generate({ files: ['test/protos/runtime/vault.proto'], outDir: 'test/.tmp/gen/vault' });
  await generate({ files: ['bench/overload/work.proto'], outDir: 'bench/overload/gen' });
  // The streaming benchmark's code: the type-check of the whole project reads it.
  await generate({ files: ['bench/stream/feed.proto'], outDir: 'bench/stream/gen' });
}
