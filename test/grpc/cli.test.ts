/**
 * `svrkit run --grpc-port` and `--no-grpc`, in a real process on 127.0.0.1: a grpc-js client
 * calls the example greeter on the gRPC-only port and on the main port, and cannot reach the main
 * port with `--no-grpc`.
 */
import * as grpc from '@grpc/grpc-js';
import * as loader from '@grpc/proto-loader';
import { afterAll, describe, expect, it } from 'vitest';
import { startSvrkit, stopAllSvrkit } from '../support/processes.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const pkg = grpc.loadPackageDefinition(loader.loadSync(['examples/helloworld/greeter.proto'], { includeDirs: ['framework/builtin/proto', '.'] })) as any;

/** SayHello through grpc-js: the reply's message, or `error <code>`. */
function sayHello(address: string, name: string): Promise<string> {
  const c = new pkg.helloworld.Greeter(address, grpc.credentials.createInsecure());
  return new Promise((resolve) => {
    c.sayHello({ name }, { deadline: Date.now() + 5000 }, (err: grpc.ServiceError | null, r: { message: string }) => {
      c.close();
      resolve(err !== null ? `error ${err.code}` : r.message);
    });
  });
}

afterAll(stopAllSvrkit);

describe('svrkit run and gRPC', () => {
  it('--grpc-port 0: prints the gRPC-only port, and grpc-js is served there and on --port', async () => {
    const srv = await startSvrkit(['run', 'examples/helloworld/greeter.ts', '--port', '0', '--grpc-port', '0']);
    const m = /svrkit: gRPC-only port on (\S+)/.exec(srv.output().stdout);
    expect(m).not.toBeNull();
    expect(m![1]).not.toBe(srv.address);
    expect(await sayHello(m![1]!, 'grpc port')).toMatch(/grpc port/);
    expect(await sayHello(srv.address, 'main port')).toMatch(/main port/);
    await srv.stop();
  });

  it('--no-grpc: the main port speaks svrkit only, and a grpc-js client fails UNAVAILABLE', async () => {
    const srv = await startSvrkit(['run', 'examples/helloworld/greeter.ts', '--port', '0', '--no-grpc']);
    expect(await sayHello(srv.address, 'nope')).toBe(`error ${grpc.status.UNAVAILABLE}`);
    await srv.stop();
  });
});
