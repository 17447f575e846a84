/**
 * `generate()` end to end: the files written, the shape of the generated services and clients, their
 * JSDoc, a type-check of the output with tsc (plus a user file), and the output wired to the runtime.
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { fromBinary } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generate, GENERATED_MARKER, type GenerateResult } from '../../codegen/index.js';
import { apiDir, frameworkIndex, typecheckStrictAndPedantic, repoRoot, sharedDir, tempDir, tsc, type TscDiagnostic } from './helpers.js';

const inputs = ['helloworld/greeter.proto', 'helloworld/echo.proto', 'shop/shop.proto', 'kinds/kinds.proto'].map((f) =>
  path.join(apiDir, f),
);
const expectedFiles = [
  'common/v1/money.ts',
  'google/protobuf/any.ts',
  'google/protobuf/duration.ts',
  'google/protobuf/empty.ts',
  'google/protobuf/field_mask.ts',
  'google/protobuf/struct.ts',
  'google/protobuf/timestamp.ts',
  'google/protobuf/wrappers.ts',
  'helloworld/echo.ts',
  'helloworld/greeter.ts',
  'kinds/kinds.ts',
  'shop/shop.ts',
];

const tmp = tempDir('generate');
const genDir = path.join(tmp.dir, 'gen'); // imports 'svrkit' (the default): for tsc
const rtDir = path.join(tmp.dir, 'rt'); // imports the framework by relative path: for runtime tests
let result: GenerateResult;
let rtResult: GenerateResult;
let strictCheck: { diagnostics: TscDiagnostic[]; output: string };
let pedanticCheck: { diagnostics: TscDiagnostic[]; output: string };
const read = (rel: string) => readFileSync(path.join(genDir, rel), 'utf8');

beforeAll(async () => {
  const runtimeImport = path.relative(rtDir, frameworkIndex).split(path.sep).join('/').replace(/\.ts$/, '.js');
  [result, rtResult] = await Promise.all([
    generate({ files: inputs, outDir: genDir, includeDirs: [apiDir, sharedDir] }),
    generate({ files: inputs, outDir: rtDir, includeDirs: [apiDir, sharedDir], runtimeImport }),
  ]);

  // Type-check the generated code and a user's file with tsc, `'svrkit'` mapped to the framework source.
  mkdirSync(path.join(tmp.dir, 'app'));
  copyFileSync(path.join(repoRoot, 'test', 'codegen', 'fixtures', 'usage.ts.txt'), path.join(tmp.dir, 'app', 'usage.ts'));
  // A control: one deliberate error, to prove tsc really checks these files against the generated types.
  writeFileSync(
    path.join(tmp.dir, 'app', 'broken.ts'),
    "import type { HelloReply } from '../gen/helloworld/greeter.js';\nexport const reply: HelloReply = { message: 1, createdAt: undefined, elapsed: undefined };\n",
  );
  [strictCheck, pedanticCheck] = await typecheckStrictAndPedantic(tmp.dir, ['gen/**/*.ts', 'app/**/*.ts']);
}, 60_000);

afterAll(() => tmp.cleanup());

/** The JSDoc block that ends right before the first line starting with `declaration` (after indentation). */
function docBefore(source: string, declaration: string): string {
  const lines = source.split('\n');
  const at = lines.findIndex((l) => l.trimStart().startsWith(declaration));
  expect(at, `declaration ${declaration}`).toBeGreaterThan(0);
  let start = at - 1;
  if (!lines[start]!.trim().endsWith('*/')) return '';
  while (start > 0 && !lines[start]!.trim().startsWith('/**')) start--;
  return lines
    .slice(start, at)
    .map((l) => l.trim().replace(/^\/\*\*\s?|^\*\/$|^\*\s?|\s*\*\/$/g, ''))
    .filter((l) => l !== '')
    .join('\n');
}

describe('generated files', () => {
  it('writes every input and every file they import, each starting with the marker', () => {
    const rel = result.written.map((f) => path.relative(genDir, f).split(path.sep).join('/')).sort();
    expect(rel).toEqual(expectedFiles);
    for (const f of result.written) {
      expect(readFileSync(f, 'utf8').split('\n', 1)[0]).toBe(GENERATED_MARKER);
    }
  });

  it('generates the streaming rpc (bidi) like the others, without a warning', () => {
    expect(result.warnings).toEqual([]);
    const src = read('helloworld/greeter.ts');
    expect(src).toContain("      kind: 'bidi_streaming',\n");
    expect(src).toContain('  abstract chat(requests: AsyncIterable<ChatMessage>, call: CallContext): AsyncIterable<DeepPartial<ChatMessage>>;');
    expect(src).toContain(
      '  chat(requests: AsyncIterable<DeepPartial<ChatMessage>> | DeepPartial<ChatMessage>[], options?: CallOptions): AsyncIterable<ChatMessage> {\n' +
        '    return this.channel.bidiStream(GreeterDefinition.methods.chat, requests, options);\n',
    );
    for (const decl of ['export const GreeterDefinition', 'export abstract class GreeterService', 'export class GreeterClient']) {
      expect(docBefore(src, decl)).not.toMatch(/streaming/i);
    }
  });

  it('emits Definition, Service and Client for each of several services in one file', () => {
    const src = read('helloworld/greeter.ts');
    for (const s of ['Greeter', 'Admin']) {
      expect(src).toContain(`export const ${s}Definition = {`);
      expect(src).toContain(`export abstract class ${s}Service {`);
      expect(src).toContain(`export class ${s}Client {`);
      expect(src).toContain(`readonly [serviceDefinition] = ${s}Definition;`);
    }
    expect(src).toContain("import { serviceDefinition, Channel, type CallContext, type CallOptions, type ChannelOptions, type ServiceDefinition } from 'svrkit';");
    expect(src).toContain('} as const satisfies ServiceDefinition;');
    // Handlers may return deep-partial responses; clients send deep-partial requests and get complete responses.
    expect(src).toContain('  abstract sayHello(request: HelloRequest, call: CallContext): Promise<DeepPartial<HelloReply>>;');
    expect(src).toContain('  abstract sayHelloAgain(request: HelloRequest, call: CallContext): Promise<DeepPartial<Empty>>;');
    expect(src).toContain('  abstract getBalance(request: PageRequest, call: CallContext): Promise<DeepPartial<Balance>>;');
    expect(src).toContain('  sayHello(request: DeepPartial<HelloRequest>, options?: CallOptions): Promise<HelloReply> {');
    expect(src).toContain('    return this.channel.unary(GreeterDefinition.methods.sayHello, request, options);');
    expect(src).toContain('  abstract now(request: Empty, call: CallContext): Promise<DeepPartial<Timestamp>>;');
    expect(src).toContain('  constructor(target: string | Channel, options?: ChannelOptions) {');
    expect(src).toContain('  close(): void {');
    // Types from other files and packages are imported from ts-proto's module for them.
    expect(src).toMatch(/^import \{ Empty \} from '\.\.\/google\/protobuf\/empty\.js';$/m);
    expect(src).toMatch(/^import \{ PageRequest \} from '\.\.\/common\/v1\/money\.js';$/m);
    // DeepPartial comes from ts-proto's output of the same file.
    expect(src.match(/^export type DeepPartial<T>/gm)).toHaveLength(1);
  });

  it('turns service and method comments into JSDoc (and ts-proto keeps message and field comments)', () => {
    const src = read('helloworld/greeter.ts');
    for (const decl of ['export const GreeterDefinition', 'export abstract class GreeterService', 'export class GreeterClient']) {
      expect(docBefore(src, decl)).toMatch(/^Greets people\.\nSecond line of the service comment\.\n/);
    }
    expect(docBefore(src, 'export abstract class GreeterService')).toContain('Extend this class and implement every method.');
    expect(docBefore(src, 'abstract sayHello(')).toBe('Sends a greeting.');
    expect(docBefore(src, 'sayHello(request: DeepPartial')).toBe('Sends a greeting.');
    expect(docBefore(src, 'abstract getBalance(')).toBe('Returns the caller\'s balance; the request type lives in another package and include dir.');
    expect(docBefore(src, 'export const AdminDefinition')).toMatch(/^Administrative operations, a second service in the same file\./);
    expect(docBefore(src, 'export interface HelloRequest')).toBe("The request message containing the user's name.");
    expect(docBefore(src, 'name: string;')).toBe('The name of the person to greet.');
    const echo = read('helloworld/echo.ts');
    expect(docBefore(echo, 'abstract oldEcho(')).toBe('A deprecated rpc.\n@deprecated');
    expect(docBefore(echo, 'oldEcho(request: DeepPartial')).toBe('A deprecated rpc.\n@deprecated');
  });

  it('imports around name collisions: ts-proto\'s own alias, an aliased runtime Channel, nested and snake_case names', () => {
    const src = read('shop/shop.ts');
    // ts-proto imported common.v1.Money as Money1 (shop.Money exists); the service code reuses that binding.
    expect(src).toMatch(/^import \{ Money as Money1 \} from "\.\.\/common\/v1\/money\.js";$/m);
    // shop.proto declares a message named Promise, so the signatures name the global one explicitly.
    expect(src).toContain('  abstract convert(request: Money1, call: CallContext): globalThis.Promise<DeepPartial<Money>>;');
    expect(src).toContain('  abstract reserve(request: Promise, call: CallContext): globalThis.Promise<DeepPartial<Promise>>;');
    // The message `Channel` wins the name; svrkit's Channel is imported under an alias.
    expect(src).toContain('Channel as svrkit_Channel');
    expect(src).toContain('  readonly channel: svrkit_Channel;');
    expect(src).toContain('  abstract listChannels(request: PageRequest, call: CallContext): globalThis.Promise<DeepPartial<Channel>>;');
    expect(src).toContain('  abstract getVariant(request: Item_Variant, call: CallContext): globalThis.Promise<DeepPartial<Item_Variant>>;');
    expect(src).toContain("      path: 'shop.Shop/get_item_by_id',");
    expect(src).toContain('  abstract getItemById(request: Item, call: CallContext): globalThis.Promise<DeepPartial<Item>>;');
  });

  it('defines DeepPartial in a service file without messages of its own', () => {
    const src = read('helloworld/echo.ts');
    expect(src).toMatch(/^export type DeepPartial<T> = T extends bigint \? string \| number \| bigint$/m);
    expect(src).toMatch(/^import \{ HelloRequest, HelloReply \} from '\.\/greeter\.js';$/m);
  });

  it('leaves messages-only files free of svrkit imports', () => {
    expect(read('kinds/kinds.ts')).not.toContain('svrkit\'');
    expect(read('common/v1/money.ts')).not.toContain('svrkit\'');
  });
});

describe('tsc', () => {
  const broken = () => path.join(tmp.dir, 'app', 'broken.ts');

  it('type-checks the output and a user file (strict, NodeNext, svrkit mapped to framework/index.ts)', () => {
    expect(strictCheck.diagnostics.filter((d) => d.file !== broken()), strictCheck.output).toEqual([]);
    // The control file's one error is found, at its place.
    expect(strictCheck.diagnostics.filter((d) => d.file === broken()).map((d) => [d.line, d.column, d.code])).toEqual([[2, 36, 'TS2322']]);
  });

  it('type-checks the output and the user file under stricter user settings too', () => {
    // verbatimModuleSyntax, exactOptionalPropertyTypes, noUncheckedIndexedAccess, noUnused*, ...: only the
    // generated files and the user's file are judged here, not the framework's own sources.
    const ours = pedanticCheck.diagnostics.filter((d) => d.file === '' || !path.relative(tmp.dir, d.file).startsWith('..'));
    expect(ours.filter((d) => d.file !== broken()), pedanticCheck.output).toEqual([]);
    expect(ours.filter((d) => d.file === broken()).map((d) => d.code)).toEqual(['TS2322']);
  });
});

describe('runtime', () => {
  const load = async (rel: string) => import(pathToFileURL(path.join(rtDir, rel)).href);

  it('rewrites a relative runtime import for each file\'s depth', () => {
    const src = readFileSync(path.join(rtDir, 'helloworld/greeter.ts'), 'utf8');
    const expected = path.relative(path.join(rtDir, 'helloworld'), frameworkIndex).split(path.sep).join('/').replace(/\.ts$/, '.js');
    expect(src).toContain(`} from '${expected}';`);
    expect(rtResult.warnings).toEqual(result.warnings);
  });

  it('exports definitions that name methods, paths, codecs and type names', async () => {
    const g = await load('helloworld/greeter.ts');
    const money = await load('common/v1/money.ts');
    const empty = await load('google/protobuf/empty.ts');
    expect(g.GreeterDefinition.name).toBe('Greeter');
    expect(g.GreeterDefinition.fullName).toBe('helloworld.Greeter');
    expect(Object.keys(g.GreeterDefinition.methods)).toEqual(['sayHello', 'sayHelloAgain', 'getBalance', 'chat']);
    expect(g.GreeterDefinition.methods.sayHello).toEqual({
      name: 'SayHello',
      localName: 'sayHello',
      path: 'helloworld.Greeter/SayHello',
      kind: 'unary',
      requestType: g.HelloRequest,
      responseType: g.HelloReply,
      requestTypeName: 'helloworld.HelloRequest',
      responseTypeName: 'helloworld.HelloReply',
    });
    expect(g.GreeterDefinition.methods.sayHelloAgain.responseType).toBe(empty.Empty);
    expect(g.GreeterDefinition.methods.getBalance.requestType).toBe(money.PageRequest);
    expect(g.GreeterDefinition.methods.getBalance.requestTypeName).toBe('common.v1.PageRequest');
    expect(g.GreeterDefinition.methods.chat).toEqual({
      name: 'Chat',
      localName: 'chat',
      path: 'helloworld.Greeter/Chat',
      kind: 'bidi_streaming',
      requestType: g.ChatMessage,
      responseType: g.ChatMessage,
      requestTypeName: 'helloworld.ChatMessage',
      responseTypeName: 'helloworld.ChatMessage',
    });
    expect(Object.keys(g.AdminDefinition.methods)).toEqual(['now', 'echoMoney']);
    expect(g.AdminDefinition.methods.echoMoney.requestType).toBe(money.Money);
    const shop = await load('shop/shop.ts');
    expect(shop.ShopDefinition.methods.getVariant.requestType).toBe(shop.Item_Variant);
    expect(shop.ShopDefinition.methods.getVariant.requestTypeName).toBe('shop.Item.Variant');
  });

  it('carries the descriptors of the file and its imports, imports first, without source info', async () => {
    const g = await load('helloworld/greeter.ts');
    const files = (g.GreeterDefinition.files as string[]).map((b64) => fromBinary(FileDescriptorProtoSchema, Buffer.from(b64, 'base64')));
    expect(files.map((f) => f.name)).toEqual([
      'common/v1/money.proto',
      'google/protobuf/duration.proto',
      'google/protobuf/empty.proto',
      'google/protobuf/timestamp.proto',
      'helloworld/greeter.proto',
    ]);
    for (const [i, f] of files.entries()) {
      expect(f.sourceCodeInfo).toBeUndefined();
      for (const dep of f.dependency) expect(files.findIndex((x) => x.name === dep)).toBeLessThan(i);
    }
    const greeter = files[4]!;
    expect(greeter.package).toBe('helloworld');
    expect(greeter.service.map((s) => s.name)).toEqual(['Greeter', 'Admin']);
    expect(greeter.service[0]!.method.map((m) => m.name)).toEqual(['SayHello', 'SayHelloAgain', 'GetBalance', 'Chat']);
    expect(g.AdminDefinition.files).toBe(g.GreeterDefinition.files);
    const echo = await load('helloworld/echo.ts');
    const echoFiles = (echo.EchoDefinition.files as string[]).map((b64) => fromBinary(FileDescriptorProtoSchema, Buffer.from(b64, 'base64')).name);
    expect(echoFiles).toEqual([
      'common/v1/money.proto',
      'google/protobuf/wrappers.proto',
      'google/protobuf/duration.proto',
      'google/protobuf/empty.proto',
      'google/protobuf/timestamp.proto',
      'helloworld/greeter.proto',
      'helloworld/echo.proto',
    ]);
  });

  it('wires clients to channel.unary and services to their definition', async () => {
    const g = await load('helloworld/greeter.ts');
    const svrkit = await import(pathToFileURL(frameworkIndex).href);
    const calls: unknown[][] = [];
    let closed = 0;
    const channel = {
      unary: (...args: unknown[]) => {
        calls.push(args);
        return Promise.resolve({ message: 'ok' });
      },
      close: () => closed++,
    };
    const client = new g.GreeterClient(channel);
    expect(client.channel).toBe(channel);
    const opts = { timeoutMs: 5 };
    await expect(client.sayHello({ name: 'ada' }, opts)).resolves.toEqual({ message: 'ok' });
    await client.getBalance({ pageSize: 3 });
    expect(calls).toEqual([
      [g.GreeterDefinition.methods.sayHello, { name: 'ada' }, opts],
      [g.GreeterDefinition.methods.getBalance, { pageSize: 3 }, undefined],
    ]);
    client.close();
    expect(closed).toBe(0); // a channel passed in is shared, not closed by the client

    class Greeter extends g.GreeterService {
      async sayHello() {
        return {};
      }
    }
    expect(new Greeter()[svrkit.serviceDefinition]).toBe(g.GreeterDefinition);
  });

  it('serves and calls through the real runtime', async () => {
    const g = await load('helloworld/greeter.ts');
    const svrkit = await import(pathToFileURL(frameworkIndex).href);
    class Greeter extends g.GreeterService {
      async sayHello(req: { name: string; times: number }, call: { method: string }) {
        return { message: `hello ${req.name} x${req.times} via ${call.method}`, createdAt: new Date(1_700_000_000_123), elapsed: { seconds: 2n, nanos: 5 } };
      }
      async sayHelloAgain() {
        return {};
      }
      async getBalance(req: { pageSize: number }) {
        return { amount: { currency: 2, units: BigInt(req.pageSize) * 10n ** 15n, nanos: -1 }, history: [] };
      }
      async *chat() {}
    }
    const server = new svrkit.Server();
    server.addService(new Greeter());
    await server.listen(0);
    const client = new g.GreeterClient(server.address);
    try {
      const reply = await client.sayHello({ name: 'ada', times: 2 });
      expect(reply).toEqual({
        message: 'hello ada x2 via helloworld.Greeter/SayHello',
        createdAt: new Date(1_700_000_000_123),
        elapsed: { seconds: 2n, nanos: 5 },
      });
      expect(await client.sayHelloAgain({})).toEqual({});
      expect(await client.getBalance({ pageSize: 7 })).toEqual({ amount: { currency: 2, units: 7n * 10n ** 15n, nanos: -1 }, history: [] });
    } finally {
      client.close();
      await server.close();
    }
  });
});
