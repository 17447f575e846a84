/**
 * The CLI and gRPC, in real processes on 127.0.0.1: `svrkit run --grpc-port` and `--no-grpc`
 * (a grpc-js client calls the example greeter on the gRPC-only port and on the main port, and
 * cannot reach the main port with `--no-grpc`), and `svrkit call` and `svrkit bench` on a plain
 * grpc-js server whose descriptors come from its reflection service (@grpc/reflection).
 */
import * as grpc from '@grpc/grpc-js';
import * as loader from '@grpc/proto-loader';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ReflectionService } from '@grpc/reflection';
import { runSvrkit, startSvrkit, stopAllSvrkit } from '../support/processes.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const definition = loader.loadSync(['examples/helloworld/greeter.proto'], { includeDirs: ['framework/builtin/proto', '.'] });
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const pkg = grpc.loadPackageDefinition(definition) as any;

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

describe('svrkit call and bench on a plain grpc-js server with reflection', () => {
  let server: grpc.Server;
  let address: string;
  let calls = 0;
  beforeAll(async () => {
    server = new grpc.Server();
    server.addService(pkg.helloworld.Greeter.service, {
      sayHello(call: grpc.ServerUnaryCall<{ name: string }, unknown>, callback: grpc.sendUnaryData<unknown>) {
        calls++;
        callback(null, { message: `grpc-js says hi to ${call.request.name}` });
      },
    });
    new ReflectionService(definition).addToServer(server);
    const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err !== null ? reject(err) : resolve(p))));
    address = `127.0.0.1:${port}`;
  });
  afterAll(() => server.forceShutdown());

  it('svrkit call grpc://: the reply as JSON; an unknown service lists the ones served', async () => {
    const r = await runSvrkit(['call', `grpc://${address}`, 'helloworld.Greeter/SayHello', '{"name":"ada"}']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ message: 'grpc-js says hi to ada' });
    const missing = await runSvrkit(['call', `grpc://${address}`, 'no.Such/Method', '{}']);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(/helloworld\.Greeter/);
  });

  it('svrkit bench grpc://: 2000 calls, all ok', async () => {
    const before = calls;
    const r = await runSvrkit(['bench', `grpc://${address}`, 'helloworld.Greeter/SayHello', '{"name":"b"}', '--concurrency', '50', '--requests', '2000', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ calls: 2000, ok: 2000, errors: {} });
    // The sample call and the 2000.
    expect(calls - before).toBe(2001);
  });
});
