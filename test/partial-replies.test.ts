/**
 * Handlers may return partial messages (issue 10), end to end: a real `Server` on 127.0.0.1 and a
 * generated client in this process.
 * - A handler that returns `{}` (or nothing) for a message with a field of every kind: the client
 *   gets every proto3 default. Nested partials are completed; int64 given as numbers or strings arrive
 *   as bigints.
 * - A value that cannot be encoded fails that call with INTERNAL naming the message type, the field
 *   path and the reason, and the server carries on.
 * - `svrkit run`'s loader serves a module whose default export is the class (the README's form), as
 *   well as one that exports an instance.
 *
 * The service is test/protos/partial/v1/kinds.proto, generated here into test/.tmp.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generate } from '../codegen/index.js';
import { loadImplementations } from '../framework/cli/run.js';
import { RpcError, Server, Status } from '../framework/index.js';
import { GreeterClient } from '../examples/helloworld/gen/greeter.js';
import { repoRoot, tempDir } from './codegen/helpers.js';
import { startSvrkit, stopAllSvrkit } from './support/processes.js';
import { kindsDefaults } from './support/kinds-defaults.js';

/** What the generated module exports that this test uses (it is generated at run time). */
interface Generated {
  PartialService: abstract new () => object;
  PartialClient: new (target: string) => {
    get(request: { mode: string }): Promise<Record<string, unknown>>;
    getWkt(request: { mode: string }): Promise<Record<string, unknown>>;
    getTree(request: { mode: string }): Promise<Record<string, unknown>>;
    close(): void;
  };
}

/** What each `mode` makes the handlers return. */
const replies: Record<string, () => unknown> = {
  empty: () => ({}),
  nothing: () => undefined,
  nested: () => ({
    fString: 'x',
    fChild: {},
    rChild: [{ name: 'r' }, {}],
    mChildren: new Map([[1n, { tags: ['t'] }]]),
    mCounts: { a: 1 },
    choice: { $case: 'cChild', value: { count: 2 } },
    oInt32: 0,
  }),
  'int64-forms': () => ({ fInt64: 42, fUint64: '18446744073709551615', rInt64: [1, '2'], fChild: { count: '3' } }),
  'bad-int64': () => ({ fInt64: 'abc' }),
  'bad-string': () => ({ fString: { text: 'x' } }),
  'bad-bytes': () => ({ fBytes: 42 }),
  'bad-nested': () => ({ rChild: [{}, { count: 1.5 }] }),
  'bad-oneof': () => ({ choice: { $case: 'cNumber', value: 'abc' } }),
  'bad-oneof-case': () => ({ choice: { $case: 'cFoo', value: 'a' } }),
};


const int64 = 'int64 (a bigint, or an integer number or string, from -2^63 to 2^63-1)';
const tmp = tempDir('partial-replies');
const logged: string[] = [];
let gen: Generated;
let server: Server;
let client: InstanceType<Generated['PartialClient']>;

async function rpcError(p: Promise<unknown>): Promise<RpcError> {
  const err = await p.then(
    () => new Error('expected the call to fail, it succeeded'),
    (e: unknown) => e,
  );
  if (!(err instanceof RpcError)) throw err;
  return err;
}

beforeAll(async () => {
  await generate({
    files: [path.join(repoRoot, 'test', 'protos', 'partial', 'v1', 'kinds.proto')],
    includeDirs: [path.join(repoRoot, 'test', 'protos')],
    outDir: path.join(tmp.dir, 'gen'),
  });
  gen = (await import(pathToFileURL(path.join(tmp.dir, 'gen', 'partial', 'v1', 'kinds.ts')).href)) as Generated;
  class Handlers extends gen.PartialService {
    async get(request: { mode: string }): Promise<unknown> {
      return replies[request.mode]!();
    }
    async getWkt(request: { mode: string }): Promise<unknown> {
      return request.mode === 'partial' ? { took: { seconds: 5 }, at: new Date(1000), wInt64: 5, meta: { a: 1 } } : {};
    }
    async getTree(): Promise<unknown> {
      return { children: [{ children: [{}] }], named: { n: {} } };
    }
  }
  server = new Server({ logger: { error: (m: string) => logged.push(m) } });
  server.addService(new Handlers() as never);
  await server.listen(0);
  client = new gen.PartialClient(server.address);
});

afterAll(async () => {
  client?.close();
  await server?.close({ graceMs: 100 });
  await stopAllSvrkit();
  tmp.cleanup();
});

describe('a handler that returns a partial message', () => {
  it('returns {}: the client gets every proto3 default of every field kind', async () => {
    expect(await client.get({ mode: 'empty' })).toEqual(kindsDefaults);
  });

  it('returns nothing: the same', async () => {
    expect(await client.get({ mode: 'nothing' })).toEqual(kindsDefaults);
  });

  it('leaves fields out of nested messages, list elements and map values: they arrive as defaults', async () => {
    const reply = await client.get({ mode: 'nested' });
    const child = (c: object) => ({ name: '', count: 0n, tags: [], ...c });
    expect(reply).toEqual({
      ...kindsDefaults,
      fString: 'x',
      fChild: child({}),
      rChild: [child({ name: 'r' }), child({})],
      mChildren: new Map([[1n, child({ tags: ['t'] })]]),
      mCounts: { a: 1n },
      choice: { $case: 'cChild', value: child({ count: 2n }) },
      oInt32: 0,
    });
  });

  it('gives int64 fields as numbers or strings: they arrive as bigints', async () => {
    const reply = await client.get({ mode: 'int64-forms' });
    expect(reply).toMatchObject({ fInt64: 42n, fUint64: 2n ** 64n - 1n, rInt64: [1n, 2n], fChild: { count: 3n } });
  });

  it('returns partial well-known types and recursive messages', async () => {
    expect(await client.getWkt({ mode: 'empty' })).toMatchObject({ at: undefined, took: undefined, times: [], durations: {} });
    expect(await client.getWkt({ mode: 'partial' })).toMatchObject({
      took: { seconds: 5n, nanos: 0 },
      at: new Date(1000),
      wInt64: 5n,
      meta: { a: 1 },
    });
    const leaf = { name: '', children: [], parent: undefined, named: {} };
    expect(await client.getTree({ mode: '' })).toEqual({
      name: '',
      children: [{ ...leaf, children: [leaf] }],
      parent: undefined,
      named: { n: leaf },
    });
  });
});

describe('a handler that returns a value that cannot be encoded', () => {
  it('fails the call with INTERNAL naming the type, the field path and the reason', async () => {
    const cases: Array<[string, string]> = [
      ['bad-int64', `partial.v1.Kinds.fInt64: expected ${int64}, got string "abc"`],
      ['bad-string', 'partial.v1.Kinds.fString: expected string, got object'],
      ['bad-bytes', 'partial.v1.Kinds.fBytes: expected bytes (a Uint8Array), got number 42'],
    ];
    for (const [mode, reason] of cases) {
      const err = await rpcError(client.get({ mode }));
      expect(err.code, mode).toBe(Status.INTERNAL);
      expect(err.message, mode).toBe(`cannot encode response: ${reason}`);
    }
    expect(logged.some((l) => l.includes('cannot encode the partial.v1.Kinds'))).toBe(true);
  });

  it('names paths inside nested messages and oneofs (the server registers its descriptors)', async () => {
    const nested = await rpcError(client.get({ mode: 'bad-nested' }));
    expect(nested.code).toBe(Status.INTERNAL);
    expect(nested.message).toBe(`cannot encode response: partial.v1.Kinds.rChild[1].count: expected ${int64}, got number 1.5`);
    const oneof = await rpcError(client.get({ mode: 'bad-oneof' }));
    expect(oneof.message).toBe(`cannot encode response: partial.v1.Kinds.choice.value: expected ${int64}, got string "abc"`);
    const oneofCase = await rpcError(client.get({ mode: 'bad-oneof-case' }));
    expect(oneofCase.code).toBe(Status.INTERNAL);
    expect(oneofCase.message).toBe("cannot encode response: partial.v1.Kinds.choice: unknown $case 'cFoo' (oneof choice: 'cText', 'cNumber' or 'cChild')");
  });

  it('keeps serving', async () => {
    expect((await client.get({ mode: 'empty' })).fString).toBe('');
  });
});

describe('svrkit run: the default export may be the class', () => {
  const genImport = './gen/partial/v1/kinds.js';

  it('instantiates an exported class (the README form), serves it, and still takes an instance', async () => {
    const classModule = path.join(tmp.dir, 'as-class.ts');
    writeFileSync(
      classModule,
      `import { PartialService } from '${genImport}';\n` +
        `export class Kinds extends PartialService {\n` +
        `  override async get() { return { fString: 'from a class' }; }\n` +
        `  override async getWkt() { return {}; }\n` +
        `  override async getTree() { return {}; }\n` +
        `}\n` +
        `export default Kinds;\n`,
    );
    const instanceModule = path.join(tmp.dir, 'as-instance.ts');
    writeFileSync(instanceModule, `import { Kinds } from './as-class.js';\nexport default new Kinds();\n`);
    const arrayModule = path.join(tmp.dir, 'as-array.ts');
    writeFileSync(arrayModule, `import { Kinds } from './as-class.js';\nexport default [Kinds];\n`);

    const [fromClass] = await loadImplementations(classModule);
    const [fromInstance] = await loadImplementations(instanceModule);
    const [fromArray] = await loadImplementations(arrayModule);
    for (const impl of [fromClass, fromInstance, fromArray]) expect(impl!.constructor.name).toBe('Kinds');

    const other = new Server({ logger: { error: (m: string) => logged.push(m) } });
    other.addService(fromClass!);
    await other.listen(0);
    const c = new gen.PartialClient(other.address);
    try {
      expect(await c.get({ mode: '' })).toEqual({ ...kindsDefaults, fString: 'from a class' });
    } finally {
      c.close();
      await other.close({ graceMs: 100 });
    }
  });

  it('the README greeter exported as a class: loaded, and served by `svrkit run` (a real process; needs a fresh dist/)', async () => {
    const readme = path.join(tmp.dir, 'greeter.ts');
    const gen = path.relative(tmp.dir, path.join(repoRoot, 'examples', 'helloworld', 'gen', 'greeter.js')).split(path.sep).join('/');
    writeFileSync(
      readme,
      `import { RpcError, Status, type CallContext } from 'svrkit';\n` +
        `import { GreeterService, type HelloReply, type HelloRequest } from '${gen}';\n` +
        `export class Greeter extends GreeterService {\n` +
        `  override async sayHello(request: HelloRequest, call: CallContext): Promise<HelloReply> {\n` +
        `    if (request.name === '') throw new RpcError(Status.INVALID_ARGUMENT, 'name must not be empty');\n` +
        `    return { message: \`Hello \${request.name}\` };\n` +
        `  }\n` +
        `}\n` +
        `export default Greeter;\n`,
    );
    const [impl] = await loadImplementations(readme);
    expect(impl!.constructor.name).toBe('Greeter');

    const proc = await startSvrkit(['run', path.relative(repoRoot, readme), '--port', '0']);
    const greeter = new GreeterClient(proc.address);
    try {
      expect(proc.services).toEqual(['helloworld.Greeter']);
      expect(await greeter.sayHello({ name: 'ada' }, { timeoutMs: 5000 })).toEqual({ message: 'Hello ada' });
      const err = await rpcError(greeter.sayHello({ name: '' }, { timeoutMs: 5000 }));
      expect([err.codeName, err.message]).toEqual(['INVALID_ARGUMENT', 'name must not be empty']);
    } finally {
      greeter.close();
      expect((await proc.stop()).code).toBe(0);
    }
  });

  it('refuses a class that needs constructor arguments, or does not extend a generated service, with a clear message', async () => {
    const withArgs = path.join(tmp.dir, 'with-args.ts');
    writeFileSync(
      withArgs,
      `import { PartialService } from '${genImport}';\n` +
        `export default class Needy extends PartialService {\n` +
        `  constructor(readonly db: string) { super(); }\n` +
        `  async get() { return {}; } async getWkt() { return {}; } async getTree() { return {}; }\n` +
        `}\n`,
    );
    await expect(loadImplementations(withArgs)).rejects.toThrow(
      `${withArgs}: default export is Needy, whose constructor takes 1 argument; svrkit run can only call new Needy() with none: export default an instance (export default new Needy(...))`,
    );
    const plain = path.join(tmp.dir, 'plain-class.ts');
    writeFileSync(plain, `export default class Plain { sayHello() { return {}; } }\n`);
    await expect(loadImplementations(plain)).rejects.toThrow(
      `${plain}: default export is Plain, which is not a service implementation: expected a class extending a generated XService`,
    );
    const throws = path.join(tmp.dir, 'throws.ts');
    writeFileSync(
      throws,
      `import { PartialService } from '${genImport}';\n` +
        `export default class Broken extends PartialService {\n` +
        `  constructor() { super(); throw new Error('no database'); }\n` +
        `  async get() { return {}; } async getWkt() { return {}; } async getTree() { return {}; }\n` +
        `}\n`,
    );
    await expect(loadImplementations(throws)).rejects.toThrow(`${throws}: default export: new Broken() threw: no database`);
  });
});
