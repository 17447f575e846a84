/**
 * Runs once before the test files: generates the examples' code, which several tests import and
 * the CLI tests serve (`npm start` does the same), and the overload benchmark's Work service.
 */
import { generate } from '../codegen/index.js';

export default async function setup(): Promise<void> {
  await generate({ files: ['examples/helloworld/greeter.proto'], outDir: 'examples/helloworld/gen' });
  await generate({ files: ['examples/chain/chain.proto'], outDir: 'examples/chain/gen' });
  await generate({ files: ['test/protos/runtime/probe.proto'], outDir: 'test/.tmp/gen/probe' });
  await generate({ files: ['test/protos/runtime/streams.proto'], outDir: 'test/.tmp/gen/streams' });
  await generate({ files: ['bench/overload/work.proto'], outDir: 'bench/overload/gen' });
}
