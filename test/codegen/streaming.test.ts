/**
 * `generate()` for streaming rpcs (test/protos/streaming): all four kinds get a `kind` in their
 * definition, handler and client signatures with the shapes connect-es uses (async iterables both
 * ways), and the output type-checks with a user's servers and clients of every kind, while wrong
 * implementations (a `watch` that returns a Promise, ...) do not. The stream runtime is not exercised
 * here: clients are wired to a stand-in channel.
 */
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generate, type GenerateResult } from '../../codegen/index.js';
import { frameworkIndex, protos, repoRoot, tempDir, typecheckStrictAndPedantic, type TscDiagnostic } from './helpers.js';

/** Include dir with feed/v1/feed.proto (every kind), feed/v1/relay.proto (no messages) and shadow/shadow.proto. */
const streamingDir = path.join(protos, 'streaming');
const inputs = ['feed/v1/feed.proto', 'feed/v1/relay.proto', 'shadow/shadow.proto'].map((f) => path.join(streamingDir, f));

const tmp = tempDir('streaming');
const genDir = path.join(tmp.dir, 'gen'); // imports 'svrkit' (the default): for tsc
const rtDir = path.join(tmp.dir, 'rt'); // imports the framework by relative path: for loading
const usageFile = path.join(tmp.dir, 'app', 'usage.ts');
const wrongFile = path.join(tmp.dir, 'app', 'wrong.ts');
let result: GenerateResult;
let strictCheck: { diagnostics: TscDiagnostic[]; output: string };
let pedanticCheck: { diagnostics: TscDiagnostic[]; output: string };
const read = (rel: string) => readFileSync(path.join(genDir, rel), 'utf8');
const load = async (rel: string) => import(pathToFileURL(path.join(rtDir, rel)).href);

beforeAll(async () => {
  const runtimeImport = path.relative(rtDir, frameworkIndex).split(path.sep).join('/').replace(/\.ts$/, '.js');
  [result] = await Promise.all([
    generate({ files: inputs, outDir: genDir, includeDirs: [streamingDir] }),
    generate({ files: inputs, outDir: rtDir, includeDirs: [streamingDir], runtimeImport }),
  ]);
  mkdirSync(path.dirname(usageFile));
  copyFileSync(path.join(repoRoot, 'test', 'codegen', 'fixtures', 'streaming-usage.ts.txt'), usageFile);
  copyFileSync(path.join(repoRoot, 'test', 'codegen', 'fixtures', 'streaming-wrong.ts.txt'), wrongFile);
  [strictCheck, pedanticCheck] = await typecheckStrictAndPedantic(tmp.dir, ['gen/**/*.ts', 'app/**/*.ts']);
}, 60_000);

afterAll(() => tmp.cleanup());

/** The JSDoc block right before the first line starting with `declaration` (after indentation), as text lines. */
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
    .join('\n')
    .trim();
}

describe('generated code', () => {
  it('generates every kind of rpc, without warnings', () => {
    expect(result.warnings).toEqual([]);
    const rel = result.written.map((f) => path.relative(genDir, f).split(path.sep).join('/'));
    expect(rel).toEqual(expect.arrayContaining(['feed/v1/feed.ts', 'feed/v1/relay.ts', 'shadow/shadow.ts']));
  });

  it('gives every method definition its kind', async () => {
    const feed = await load('feed/v1/feed.ts');
    const kinds = Object.fromEntries(Object.entries(feed.StreamerDefinition.methods).map(([k, m]) => [k, (m as { kind: string }).kind]));
    expect(kinds).toEqual({
      ping: 'unary',
      watch: 'server_streaming',
      upload: 'client_streaming',
      chat: 'bidi_streaming',
      oldChat: 'bidi_streaming',
      noComment: 'bidi_streaming',
    });
    expect(feed.StreamerDefinition.methods.watch).toEqual({
      name: 'Watch',
      localName: 'watch',
      path: 'feed.v1.Streamer/Watch',
      kind: 'server_streaming',
      requestType: feed.WatchRequest,
      responseType: feed.Event,
      requestTypeName: 'feed.v1.WatchRequest',
      responseTypeName: 'feed.v1.Event',
      options: { idempotent: true },
    });
    const relay = await load('feed/v1/relay.ts');
    expect(relay.RelayDefinition.methods.forward.kind).toBe('bidi_streaming');
    expect(relay.RelayDefinition.methods.collect.kind).toBe('client_streaming');
    expect(relay.RelayDefinition.methods.fan.kind).toBe('server_streaming');
    expect(relay.RelayDefinition.methods.forward.requestType).toBe(feed.Msg);
    const src = read('feed/v1/feed.ts');
    expect(src).toContain("      path: 'feed.v1.Streamer/Upload',\n      kind: 'client_streaming',\n      requestType: Chunk,\n");
  });

  it('declares handlers: deep-partial responses, async iterables for streams', () => {
    const src = read('feed/v1/feed.ts');
    expect(src).toContain('  abstract ping(request: PingRequest, call: CallContext): Promise<DeepPartial<PingReply>>;\n');
    expect(src).toContain('  abstract watch(request: WatchRequest, call: CallContext): AsyncIterable<DeepPartial<Event>>;\n');
    expect(src).toContain('  abstract upload(requests: AsyncIterable<Chunk>, call: CallContext): Promise<DeepPartial<Summary>>;\n');
    expect(src).toContain('  abstract chat(requests: AsyncIterable<Msg>, call: CallContext): AsyncIterable<DeepPartial<Msg>>;\n');
  });

  it('declares client methods that call the matching Channel method', () => {
    const src = read('feed/v1/feed.ts');
    expect(src).toContain(
      '  ping(request: DeepPartial<PingRequest>, options?: CallOptions): Promise<PingReply> {\n' +
        '    return this.channel.unary(StreamerDefinition.methods.ping, request, options);\n  }\n',
    );
    expect(src).toContain(
      '  watch(request: DeepPartial<WatchRequest>, options?: CallOptions): AsyncIterable<Event> {\n' +
        '    return this.channel.serverStream(StreamerDefinition.methods.watch, request, options);\n  }\n',
    );
    expect(src).toContain(
      '  upload(requests: AsyncIterable<DeepPartial<Chunk>> | DeepPartial<Chunk>[], options?: CallOptions): Promise<Summary> {\n' +
        '    return this.channel.clientStream(StreamerDefinition.methods.upload, requests, options);\n  }\n',
    );
    expect(src).toContain(
      '  chat(requests: AsyncIterable<DeepPartial<Msg>> | DeepPartial<Msg>[], options?: CallOptions): AsyncIterable<Msg> {\n' +
        '    return this.channel.bidiStream(StreamerDefinition.methods.chat, requests, options);\n  }\n',
    );
  });

  it('keeps .proto comments and deprecation, and says how each kind of stream works', () => {
    const src = read('feed/v1/feed.ts');
    expect(docBefore(src, 'export abstract class StreamerService')).toBe(
      'Streams of every kind.\n\nExtend this class and implement every method.\n' +
        'Handlers may return deep-partial messages: fields left out are sent as their proto3 defaults.',
    );
    expect(docBefore(src, 'abstract ping(')).toBe('Answers once.');
    expect(docBefore(src, 'ping(request: DeepPartial')).toBe('Answers once.');
    expect(docBefore(src, 'abstract watch(')).toMatch(/^Streams the events of a key\.\n\nServer streaming: yield the responses \(write it as an `async \*` method\)/);
    expect(docBefore(src, 'watch(request: DeepPartial')).toMatch(/^Streams the events of a key\.\n\nServer streaming: iterate the responses with `for await`/);
    expect(docBefore(src, 'abstract upload(')).toMatch(/^Uploads chunks; answers with a summary\.\n\nClient streaming: `requests` ends when the client half-closes/);
    expect(docBefore(src, 'upload(requests:')).toMatch(/^Uploads chunks; answers with a summary\.\n\nClient streaming: `requests` \(an array or an async iterable\)/);
    expect(docBefore(src, 'abstract chat(')).toMatch(/^Chats both ways\.\n\nBidi streaming: /);
    expect(docBefore(src, 'chat(requests:')).toMatch(/^Chats both ways\.\n\nBidi streaming: /);
    expect(docBefore(src, 'abstract oldChat(')).toMatch(/^An old bidi stream\.\n\nBidi streaming: .*\n\n@deprecated$/s);
    expect(docBefore(src, 'oldChat(requests:')).toMatch(/^An old bidi stream\.\n\nBidi streaming: .*\n\n@deprecated$/s);
    expect(docBefore(src, 'abstract noComment(')).toMatch(/^Handles feed\.v1\.Streamer\/NoComment\.\n\nBidi streaming: /);
    expect(docBefore(src, 'noComment(requests:')).toMatch(/^Calls feed\.v1\.Streamer\/NoComment\.\n\nBidi streaming: /);
    expect(src).not.toMatch(/unary calls only|not generated/);
  });

  it('defines DeepPartial in a service file without messages, for handlers and clients alike', () => {
    const src = read('feed/v1/relay.ts');
    expect(src).toMatch(/^export type DeepPartial<T> = T extends bigint \? string \| number \| bigint$/m);
    expect(src).toMatch(/^import \{ Msg, Event, Summary, WatchRequest \} from '\.\/feed\.js';$/m);
    expect(src).toContain('  abstract collect(requests: AsyncIterable<Event>, call: CallContext): Promise<DeepPartial<Summary>>;\n');
    expect(src).toContain('  fan(request: DeepPartial<WatchRequest>, options?: CallOptions): AsyncIterable<Event> {\n');
  });

  it('names the global Promise and AsyncIterable where messages of those names shadow them', () => {
    const src = read('shadow/shadow.ts');
    expect(src).toMatch(/^export interface AsyncIterable \{$/m);
    expect(src).toMatch(/^export interface Promise \{$/m);
    expect(src).toContain('  abstract once(request: AsyncIterable, call: CallContext): globalThis.Promise<DeepPartial<Promise>>;\n');
    expect(src).toContain('  abstract many(request: AsyncIterable, call: CallContext): globalThis.AsyncIterable<DeepPartial<AsyncIterable>>;\n');
    expect(src).toContain(
      '  abstract gather(requests: globalThis.AsyncIterable<AsyncIterable>, call: CallContext): globalThis.Promise<DeepPartial<Promise>>;\n',
    );
    expect(src).toContain(
      '  both(requests: globalThis.AsyncIterable<DeepPartial<Promise>> | DeepPartial<Promise>[], options?: CallOptions): globalThis.AsyncIterable<AsyncIterable> {\n',
    );
    // No bare global reference is left in the service code.
    const services = src.slice(src.indexOf('// svrkit services'));
    expect(services).not.toMatch(/(?<!globalThis\.)\b(?:AsyncIterable|Promise)</);
  });
});

describe('tsc', () => {
  /** 1-based numbers of the lines of the wrong file marked `// WRONG`. */
  const wrongLines = readFileSync(path.join(repoRoot, 'test', 'codegen', 'fixtures', 'streaming-wrong.ts.txt'), 'utf8')
    .split('\n')
    .flatMap((l, i) => (/\/\/ WRONG$/.test(l) ? [i + 1] : []));

  it('marks several wrong lines (sanity)', () => {
    expect(wrongLines.length).toBe(8);
  });

  it('type-checks the output and servers and clients of every kind (strict, NodeNext, svrkit mapped to framework/index.ts)', () => {
    expect(strictCheck.diagnostics.filter((d) => d.file !== wrongFile), strictCheck.output).toEqual([]);
  });

  it('rejects each wrong implementation, once, at its line', () => {
    const wrong = strictCheck.diagnostics.filter((d) => d.file === wrongFile);
    expect(wrong.map((d) => d.line), strictCheck.output).toEqual(wrongLines);
    // A mismatched override (TS2416), or a yielded message of the wrong shape (TS2322).
    for (const d of wrong) expect(['TS2416', 'TS2322'], `${d.line}: ${d.message}`).toContain(d.code);
  });

  it('gives the same verdicts under stricter user settings', () => {
    // verbatimModuleSyntax, exactOptionalPropertyTypes, noUncheckedIndexedAccess, noUnused*, ...: only the
    // generated files and the user's files are judged here, not the framework's own sources.
    const ours = pedanticCheck.diagnostics.filter((d) => d.file === '' || !path.relative(tmp.dir, d.file).startsWith('..'));
    expect(ours.filter((d) => d.file !== wrongFile), pedanticCheck.output).toEqual([]);
    expect(ours.filter((d) => d.file === wrongFile).map((d) => d.line), pedanticCheck.output).toEqual(wrongLines);
  });
});

describe('wiring (a stand-in channel; the stream runtime is not exercised here)', () => {
  it('passes the definition, the request(s) and the options to the Channel method of each kind, and returns its result', async () => {
    const feed = await load('feed/v1/feed.ts');
    const calls: [string, ...unknown[]][] = [];
    const channel = Object.fromEntries(
      ['unary', 'serverStream', 'clientStream', 'bidiStream'].map((name) => [
        name,
        (...args: unknown[]) => {
          calls.push([name, ...args]);
          return `${name} result`;
        },
      ]),
    );
    const client = new feed.StreamerClient(channel);
    const opts = { timeoutMs: 5 };
    const requests = [{ text: 'a' }];
    expect(client.ping({ payload: 'p' }, opts)).toBe('unary result');
    expect(client.watch({ key: 'k' })).toBe('serverStream result');
    expect(client.upload(requests, opts)).toBe('clientStream result');
    expect(client.chat(requests)).toBe('bidiStream result');
    const m = feed.StreamerDefinition.methods;
    expect(calls).toEqual([
      ['unary', m.ping, { payload: 'p' }, opts],
      ['serverStream', m.watch, { key: 'k' }, undefined],
      ['clientStream', m.upload, requests, opts],
      ['bidiStream', m.chat, requests, undefined],
    ]);
    expect(calls[2]![2]).toBe(requests);
  });
});
