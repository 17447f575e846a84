/**
 * Oneofs (issue 11, item 8). `svrkit gen` passes ts-proto `oneof=unions-value`, so a oneof is one
 * property holding `{ $case: 'member', value }` or `undefined`:
 * - the generated types allow one member at a time: two members, an unknown `$case` or a value of
 *   the wrong type do not compile (generated code and a user's file, type-checked here with tsc);
 * - encodeMessage (what handlers' replies go through) sends exactly the one member, accepts a
 *   partial value inside it, and refuses a bad `$case` or member value naming the field path;
 * - a member survives a round trip through binary and through JSON, both ts-proto's generated
 *   `toJSON`/`fromJSON` and @bufbuild/protobuf's proto3 JSON (what `svrkit call` speaks), which
 *   refuses two members in one JSON object;
 * - PaxosKV's peer messages (the repository's own oneof) convert to and from the union form;
 * - a project that passes `oneof=unions` or `oneof=properties` itself still gets its values checked;
 * - a member of a well-known type holds the plain value ts-proto maps it to (a wrapper its scalar or
 *   `undefined`, which is sent as the empty wrapper; a Timestamp a Date; ...) and is checked as
 *   that, the compiled check giving the interpreter's verdicts; a member whose value cannot be
 *   planned (a Timestamp with `useDate=string`) leaves that value unchecked, not the oneof.
 *
 * The messages come from test/protos/partial/v1/kinds.proto (`oneof choice { string c_text;
 * int64 c_number; Child c_child; }`) and test/protos/choices/v1/members.proto (`oneof kind` with
 * wrapper, Timestamp, Struct, ListValue, Value, FieldMask, message and double members), generated
 * here into test/.tmp.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { create, createFileRegistry, fromBinary, fromJson, toBinary, toJson, type DescMessage, type FileRegistry } from '@bufbuild/protobuf';
import { base64Decode, BinaryReader } from '@bufbuild/protobuf/wire';
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import { afterAll, beforeAll, describe, expect, it, vi, type Mock } from 'vitest';
import { generate } from '../../codegen/index.js';
import { EncodeError, encodeMessage, registerDescriptors } from '../../framework/wire/encode.js';
import { encodeError } from '../support/encode-error.js';
import { messageFromPb, messageToPb } from '../../services/paxoskv/codec.js';
import type { PeerMessage as CorePeerMessage } from '../../services/paxoskv/core/types.js';
import { PaxosPeerDefinition, PeerMessage } from '../../services/paxoskv/gen/svrkit/paxoskv/paxoskv.js';
import { repoRoot, tempDir, typecheckStrictAndPedantic, type TscDiagnostic } from '../codegen/helpers.js';

/** A generated ts-proto codec, loosely typed (the module is generated at run time). */
interface Codec {
  encode(message: unknown): { finish(): Uint8Array };
  decode(bytes: Uint8Array): Record<string, unknown>;
  fromPartial(object: unknown): Record<string, unknown>;
  fromJSON(object: unknown): Record<string, unknown>;
  toJSON(message: unknown): unknown;
}

const K = 'partial.v1.Kinds';
const tmp = tempDir('oneof');
const proto = path.join(repoRoot, 'test', 'protos', 'partial', 'v1', 'kinds.proto');
const P = 'choices.v1.Pick';
const choicesProto = path.join(repoRoot, 'test', 'protos', 'choices', 'v1', 'members.proto');
/** Kinds as `svrkit gen` generates it (unions-value), with `oneof=unions`, and with `oneof=properties`. */
let Kinds: Codec;
let KindsUnions: Codec;
let KindsFlat: Codec;
let source: string;
let schema: DescMessage;
let registry: FileRegistry;
/** choices.v1.Pick as `svrkit gen` generates it, with `useDate=string`, and with `oneof=unions`. */
let Pick: Codec;
let PickDateString: Codec;
let PickUnions: Codec;
let pickSource: string;
let strict: { diagnostics: TscDiagnostic[]; output: string };
let pedantic: { diagnostics: TscDiagnostic[]; output: string };

/** The user's files type-checked against the generated code (`// WRONG` lines must be errors). */
const rightFile = `import type { CallContext } from 'svrkit';
import { Kinds, PartialClient, PartialService, type Child, type DeepPartial, type GetRequest, type Tree, type Wkt } from '../gen/partial/v1/kinds.js';

// Setting a member: one property, the member named by $case.
export const complete: Kinds = { ...Kinds.fromPartial({}), choice: { $case: 'cText', value: 'a' } };
export const partialInside: DeepPartial<Kinds> = { choice: { $case: 'cChild', value: { name: 'c' } } };
export const int64AsString: DeepPartial<Kinds> = { choice: { $case: 'cNumber', value: '12' } };
export const none: DeepPartial<Kinds> = { choice: undefined };
export const viaFromPartial: Kinds = Kinds.fromPartial({ choice: { $case: 'cNumber', value: 12n } });

// Reading: narrow on $case; each branch has the member's type.
export function describeChoice(k: Kinds): string {
  switch (k.choice?.$case) {
    case 'cText':
      return k.choice.value;
    case 'cNumber': {
      const n: bigint = k.choice.value;
      return n.toString();
    }
    case 'cChild': {
      const child: Child = k.choice.value;
      return child.name;
    }
    case undefined:
      return 'none';
  }
}

export class Handlers extends PartialService {
  override async get(request: GetRequest, _call: CallContext): Promise<DeepPartial<Kinds>> {
    return request.mode === 'child' ? { choice: { $case: 'cChild', value: {} } } : { choice: { $case: 'cText', value: request.mode } };
  }
  override async getWkt(): Promise<DeepPartial<Wkt>> {
    return {};
  }
  override async getTree(): Promise<DeepPartial<Tree>> {
    return {};
  }
}

export async function read(client: PartialClient): Promise<string | undefined> {
  const reply = await client.get({ mode: 'x' });
  return reply.choice?.$case === 'cText' ? reply.choice.value : undefined;
}
`;

const wrongFile = `import { Kinds, PartialService, type DeepPartial, type GetRequest, type Tree, type Wkt } from '../gen/partial/v1/kinds.js';

const base: Kinds = Kinds.fromPartial({});
export const twoMembersFlat: Kinds = { ...base, cText: 'a', cNumber: 1n }; // WRONG
export const twoMembersInOne: DeepPartial<Kinds> = { choice: { $case: 'cText', value: 'a', cNumber: 1n } }; // WRONG
export const twoMembersNamed: Kinds = { ...base, choice: { $case: 'cText', cText: 'a', cNumber: 1n } }; // WRONG
export const unknownCase: DeepPartial<Kinds> = { choice: { $case: 'cFoo', value: 'a' } }; // WRONG
export const wrongValue: DeepPartial<Kinds> = { choice: { $case: 'cText', value: 1 } }; // WRONG
export const noCase: DeepPartial<Kinds> = { choice: { value: 'a' } }; // WRONG
export function wrongBranch(k: Kinds): string | undefined {
  if (k.choice?.$case === 'cNumber') return k.choice.value; // WRONG
  return undefined;
}
export class Handlers extends PartialService {
  override async get(_request: GetRequest): Promise<DeepPartial<Kinds>> {
    return { cText: 'a', cNumber: 1n }; // WRONG
  }
  override async getWkt(): Promise<DeepPartial<Wkt>> {
    return {};
  }
  override async getTree(): Promise<DeepPartial<Tree>> {
    return {};
  }
}
`;

const wrongLines = wrongFile.split('\n').flatMap((l, i) => (/\/\/ WRONG$/.test(l) ? [i + 1] : []));

beforeAll(async () => {
  const gen = async (dir: string, tsProtoOptions: string[]): Promise<Record<string, unknown>> => {
    await generate({ files: [proto], includeDirs: [path.join(repoRoot, 'test', 'protos')], outDir: path.join(tmp.dir, dir), tsProtoOptions });
    return (await import(pathToFileURL(path.join(tmp.dir, dir, 'partial', 'v1', 'kinds.ts')).href)) as Record<string, unknown>;
  };
  const genChoices = async (dir: string, tsProtoOptions: string[]): Promise<Record<string, unknown>> => {
    await generate({ files: [choicesProto], includeDirs: [path.join(repoRoot, 'test', 'protos')], outDir: path.join(tmp.dir, dir), tsProtoOptions });
    return (await import(pathToFileURL(path.join(tmp.dir, dir, 'choices', 'v1', 'members.ts')).href)) as Record<string, unknown>;
  };
  const [mod, unions, flat, choices, choicesDateString, choicesUnions] = await Promise.all([
    gen('gen', []),
    gen('gen-unions', ['oneof=unions']),
    gen('gen-properties', ['oneof=properties']),
    genChoices('choices', []),
    genChoices('choices-date-string', ['useDate=string']),
    genChoices('choices-unions', ['oneof=unions']),
  ]);
  Pick = choices.Pick as Codec;
  PickDateString = choicesDateString.Pick as Codec;
  PickUnions = choicesUnions.Pick as Codec;
  pickSource = readFileSync(path.join(tmp.dir, 'choices', 'choices', 'v1', 'members.ts'), 'utf8');
  registerDescriptors((choices.PickerDefinition as { files: readonly string[] }).files);
  Kinds = mod.Kinds as Codec;
  KindsUnions = unions.Kinds as Codec;
  KindsFlat = flat.Kinds as Codec;
  source = readFileSync(path.join(tmp.dir, 'gen', 'partial', 'v1', 'kinds.ts'), 'utf8');
  const files = (mod.PartialDefinition as { files: readonly string[] }).files;
  registerDescriptors(files);
  registry = createFileRegistry(create(FileDescriptorSetSchema, { file: files.map((b) => fromBinary(FileDescriptorProtoSchema, base64Decode(b))) }));
  schema = registry.getMessage(K)!;

  mkdirSync(path.join(tmp.dir, 'app'));
  writeFileSync(path.join(tmp.dir, 'app', 'right.ts'), rightFile);
  writeFileSync(path.join(tmp.dir, 'app', 'wrong.ts'), wrongFile);
  [strict, pedantic] = await typecheckStrictAndPedantic(tmp.dir, ['app/**/*.ts']);
}, 120_000);

afterAll(() => tmp.cleanup());

/** The field numbers of a message's top-level fields, in the order they are on the wire. */
function fieldNumbers(bytes: Uint8Array): number[] {
  const reader = new BinaryReader(bytes);
  const out: number[] = [];
  while (reader.pos < reader.len) {
    const [no, wireType] = reader.tag();
    reader.skip(wireType, no);
    out.push(no);
  }
  return out;
}


describe('the generated type', () => {
  it('is one property, a union of { $case, value } per member, or undefined', () => {
    expect(source).toContain(
      '  choice:\n' +
        '    | { $case: "cText"; value: string }\n' +
        '    | { $case: "cNumber"; value: bigint }\n' +
        '    | { $case: "cChild"; value: Child }\n' +
        '    | undefined;\n',
    );
    expect(source).not.toMatch(/^\s+cText\??:/m);
    expect(Kinds.fromPartial({}).choice).toBeUndefined();
  });

  it('sets and reads one member at a time in user code (strict, and stricter user settings)', () => {
    const right = path.join(tmp.dir, 'app', 'right.ts');
    expect(strict.diagnostics.filter((d) => d.file !== path.join(tmp.dir, 'app', 'wrong.ts')), strict.output).toEqual([]);
    // Stricter settings judge the generated files and the user's, not the framework's own sources.
    const ours = pedantic.diagnostics.filter((d) => d.file === '' || !path.relative(tmp.dir, d.file).startsWith('..'));
    expect(ours.filter((d) => d.file !== path.join(tmp.dir, 'app', 'wrong.ts')), pedantic.output).toEqual([]);
    expect(strict.diagnostics.some((d) => d.file === right)).toBe(false);
  });

  it('refuses two members at once, an unknown $case, a wrong value type, and a member read in the wrong branch', () => {
    expect(wrongLines).toHaveLength(8);
    const wrong = path.join(tmp.dir, 'app', 'wrong.ts');
    for (const check of [strict, pedantic]) {
      const lines = check.diagnostics.filter((d) => d.file === wrong).map((d) => d.line);
      expect([...new Set(lines)], check.output).toEqual(wrongLines);
    }
  });
});

describe('encodeMessage', () => {
  const members: Array<[string, unknown, number, unknown, unknown]> = [
    // [$case, value given, field number, value decoded, proto3 JSON]
    ['cText', 'hi', 21, 'hi', 'hi'],
    ['cText', '', 21, '', ''], // a member at its default value is still sent
    ['cNumber', 2n ** 63n - 1n, 22, 2n ** 63n - 1n, '9223372036854775807'],
    ['cNumber', '-5', 22, -5n, '-5'], // an int64 given as a string, as DeepPartial allows
    ['cChild', { name: 'c' }, 23, { name: 'c', count: 0n, tags: [] }, { name: 'c' }], // a partial message inside
    ['cChild', {}, 23, { name: '', count: 0n, tags: [] }, {}],
  ];

  it.each(members)('sends exactly the one member %s (%s), which survives binary and JSON round trips', (name, given, no, decoded, json) => {
    const bytes = encodeMessage(Kinds, K, { fString: 's', choice: { $case: name, value: given } });
    expect(fieldNumbers(bytes)).toEqual([1, no]);
    const message = Kinds.decode(bytes);
    const choice = { $case: name, value: decoded };
    expect(message.choice).toEqual(choice);

    // ts-proto's generated JSON: the member under its own name.
    const generatedJson = Kinds.toJSON(message) as Record<string, unknown>;
    expect(generatedJson).toEqual({ fString: 's', [name]: json });
    expect(Kinds.fromJSON(generatedJson).choice).toEqual(choice);

    // @bufbuild/protobuf's proto3 JSON (what `svrkit call` reads and prints), from the same bytes.
    const protoJson = toJson(schema, fromBinary(schema, bytes), { registry });
    expect(protoJson).toEqual({ fString: 's', [name]: json });
    const back = toBinary(schema, fromJson(schema, protoJson, { registry }));
    expect(Kinds.decode(back).choice).toEqual(choice);
  });

  it('encodes a complete message with a member byte for byte as ts-proto', () => {
    const value = Kinds.fromPartial({ fInt64: 3n, choice: { $case: 'cChild', value: { name: 'n', tags: ['t'] } } });
    const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
    expect(hex(encodeMessage(Kinds, K, value))).toBe(hex(Kinds.encode(value).finish()));
  });

  it('sends no member for undefined or null, and one even when a value carries stale per-member properties', () => {
    expect(fieldNumbers(encodeMessage(Kinds, K, { fString: 's', choice: undefined }))).toEqual([1]);
    expect(fieldNumbers(encodeMessage(Kinds, K, { fString: 's', choice: null }))).toEqual([1]);
    // The shape before unions (per-member properties) is not a field any more: it is ignored.
    const stale = { choice: { $case: 'cText', value: 'a' }, cNumber: 5n, cChild: {} };
    expect(fieldNumbers(encodeMessage(Kinds, K, stale))).toEqual([21]);
  });

  it('refuses a bad $case or member value, naming the field path', () => {
    const cases: Array<[unknown, string]> = [
      [{ $case: 'cFoo', value: 'a' }, ".choice: unknown $case 'cFoo' (oneof choice: 'cText', 'cNumber' or 'cChild')"],
      [{ value: 'a' }, ".choice.$case: expected $case 'cText', 'cNumber' or 'cChild', got undefined"],
      ['cText', '.choice: expected oneof choice (an object { $case, value }, or undefined), got string "cText"'],
      [{ $case: 'cText', value: 7 }, '.choice.value: expected string, got number 7'],
      [{ $case: 'cChild' }, '.choice.value: expected message partial.v1.Child (an object), got undefined'],
      [{ $case: 'cChild', value: { count: 'many' } }, '.choice.value.count: expected int64 (a bigint, or an integer number or string, from -2^63 to 2^63-1), got string "many"'],
    ];
    for (const [choice, rest] of cases) {
      const err = encodeError(() => encodeMessage(Kinds, K, { choice }));
      expect(err.message).toBe(K + rest);
      expect(err.path).toBe(rest.slice(0, rest.indexOf(':')));
    }
    // Nested: the path goes through the message that holds the oneof.
    registerDescriptors(PaxosPeerDefinition.files);
    const T = 'svrkit.paxoskv.PeerMessage';
    const err = encodeError(() => encodeMessage(PeerMessage, T, { key: 'k', kind: { $case: 'foo', value: {} } }));
    expect(err.message).toMatch(/^svrkit\.paxoskv\.PeerMessage\.kind: unknown \$case 'foo' \(oneof kind: 'prepare', 'accept', .* or 'synced'\)$/);
    const deep = encodeError(() => encodeMessage(PeerMessage, T, { key: 'k', kind: { $case: 'accept', value: { entry: { index: 'x' } } } }));
    expect(deep.path).toBe('.kind.value.entry.index');
  });

  it('the proto3 JSON path refuses two members in one object', () => {
    expect(() => fromJson(schema, { cText: 'a', cNumber: '1' }, { registry })).toThrow(/oneof/);
  });
});

describe('PaxosKV peer messages', () => {
  const entry = { index: 3, value: new Uint8Array([1]), writer: { client: 'c', seq: 2 }, proposer: 1, time: 5, sessions: [] };
  const messages: CorePeerMessage[] = [
    { type: 'prepare', key: 'k', index: 1, ballot: 65537, epoch: 1 },
    { type: 'accept', key: 'k', index: 3, ballot: 65537, entry, epoch: 4 },
    { type: 'promise', key: 'k', index: 3, ballot: 65537, accepted: 0, acceptedEntry: null },
    { type: 'reject', key: 'k', index: 3, ballot: 65537, promised: 131073 },
    { type: 'read', key: 'k', readId: 9, knownIndex: 2, readerIncarnation: 2097153, epoch: 2 },
    { type: 'readState', key: 'k', readId: 9, chosenIndex: 3, entry, pendingAccepted: 0, readerIncarnation: 2097153 },
    { type: 'hello', key: '', incarnation: 1048576, confirmed: 0, announced: [1048576], rejoin: false },
    { type: 'keyList', key: '', listId: 1, keys: [{ key: 'a', chosenIndex: 2, pending: true }], done: true },
    { type: 'finished', key: 'k', chosenIndex: 4 },
    { type: 'listKeys', key: '', listId: 2, after: 'a', limit: 10, epoch: 3 },
    { type: 'staleEpoch', key: 'k', epoch: 7 },
    { type: 'staleEpoch', key: '', epoch: 3 },
  ];

  it.each(messages.map((m) => [m.type, m] as const))('%s: one member on the wire, the same message back', (type, m) => {
    const pb = messageToPb(m);
    expect(pb.kind?.$case).toBe(type);
    const bytes = encodeMessage(PeerMessage, 'svrkit.paxoskv.PeerMessage', pb);
    expect(fieldNumbers(bytes).filter((no) => no >= 10)).toHaveLength(1);
    expect(messageFromPb(PeerMessage.decode(bytes))).toEqual(m);
  });

  it('a message without a member is refused', () => {
    expect(() => messageFromPb(PeerMessage.fromPartial({ key: 'k' }))).toThrow('peer message has no kind');
    expect(() => messageFromPb(PeerMessage.fromPartial({ key: '', kind: { $case: 'prepare', value: {} } }))).toThrow('peer message has an empty key');
  });
});

describe('a project that chooses another oneof option', () => {
  it('oneof=unions ({ $case, <member> }): checked the same way', () => {
    const bytes = encodeMessage(KindsUnions, K, { choice: { $case: 'cNumber', cNumber: '7' } });
    expect(fieldNumbers(bytes)).toEqual([22]);
    expect(KindsUnions.decode(bytes).choice).toEqual({ $case: 'cNumber', cNumber: 7n });
    const err = encodeError(() => encodeMessage(KindsUnions, K, { choice: { $case: 'cText', cText: 5 } }));
    expect(err.message).toBe(`${K}.choice.cText: expected string, got number 5`);
    const form = encodeError(() => encodeMessage(KindsUnions, K, { choice: 5 }));
    expect(form.message).toBe(`${K}.choice: expected oneof choice (an object { $case, <member> }, or undefined), got number 5`);
  });

  it('oneof=properties (one optional property per member): two members set are refused', () => {
    expect(fieldNumbers(encodeMessage(KindsFlat, K, { cText: 'a' }))).toEqual([21]);
    const err = encodeError(() => encodeMessage(KindsFlat, K, { cText: 'a', cChild: {} }));
    expect(err.message).toBe(`${K}: oneof choice has more than one field set: cText, cChild`);
  });
});

/** Bytes as hex, to compare encodings. */
function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

/** A codec copy whose `fromPartial` records its calls. */
type SpyCodec = Codec & { fromPartial: Mock<(object: unknown) => Record<string, unknown>> };

/**
 * A copy of `codec` (encodeMessage builds plans per codec object, so the copy gets a plan of its
 * own) whose `fromPartial` records its calls, with its plan built now: compiled as always, or with
 * `compiled` false, built while the Function constructor is refused (as under a CSP without
 * 'unsafe-eval'), so that the interpreting check stays.
 */
function freshCodec(codec: Codec, typeName: string, compiled: boolean): SpyCodec {
  const copy: SpyCodec = { ...codec, fromPartial: vi.fn((o: unknown) => codec.fromPartial(o)) };
  const original = globalThis.Function;
  let compilations = 0;
  globalThis.Function = compiled
    ? new Proxy(original, {
        construct(target, args: unknown[]) {
          compilations++;
          return Reflect.construct(target, args) as object;
        },
      })
    : (function refused(): never {
        throw new EvalError('code generation from strings is not allowed');
      } as unknown as FunctionConstructor);
  try {
    encodeMessage(copy, typeName, undefined); // builds the plan
  } finally {
    globalThis.Function = original;
  }
  expect(compilations > 0).toBe(compiled);
  return copy;
}

/**
 * What encodeMessage does with `value`: `as is: <hex>` (the check passed it to `encode`
 * untouched), `completed: <hex>` (through `fromPartial` first) or `refused: <message>`.
 */
function verdictOf(codec: SpyCodec, typeName: string, value: unknown): string {
  codec.fromPartial.mockClear();
  let bytes: Uint8Array;
  try {
    bytes = encodeMessage(codec, typeName, value);
  } catch (err) {
    if (err instanceof EncodeError) return `refused: ${err.message}`;
    throw err;
  }
  return `${codec.fromPartial.mock.calls.length === 0 ? 'as is' : 'completed'}: ${hex(bytes)}`;
}

describe('members of well-known types (choices.v1.Pick)', () => {
  it('hold the plain value ts-proto maps each type to; a wrapper, Struct, ListValue, Value or FieldMask member may be undefined', () => {
    for (const line of [
      '{ $case: "wBool"; value: boolean | undefined }',
      '{ $case: "wString"; value: string | undefined }',
      '{ $case: "wInt64"; value: bigint | undefined }',
      '{ $case: "wBytes"; value: Uint8Array | undefined }',
      '{ $case: "at"; value: Date }',
      '{ $case: "part"; value: Part }',
      '{ $case: "ratio"; value: number }',
      '{ $case: "meta"; value: { [key: string]: any } | undefined }',
      '{ $case: "list"; value: Array<any> | undefined }',
      '{ $case: "json"; value: any | undefined }',
      '{ $case: "mask"; value: string[] | undefined }',
    ]) {
      expect(pickSource).toContain(`    | ${line}\n`);
    }
  });

  // [$case, value given, the member on the wire (tag, length, wrapper or message), the value decoded]
  const valid: Array<[string, unknown, string, unknown]> = [
    ['wBool', true, '12020801', true],
    ['wBool', false, '1200', false],
    // undefined (the generated type allows it): the member with its wrapper empty, as ts-proto
    // encodes the wrapper's default (its own encode would write "undefined", NaN, or throw).
    ['wBool', undefined, '1200', false],
    ['wString', 'hi', '1a040a026869', 'hi'],
    ['wString', undefined, '1a00', ''],
    ['wInt64', 5n, '22020805', 5n],
    ['wInt64', '7', '22020807', 7n], // a string, as DeepPartial allows, converted by fromPartial
    ['wInt64', undefined, '2200', 0n],
    ['wUint64', 7, '2a020807', 7n],
    ['wUint64', undefined, '2a00', 0n],
    ['wInt32', 7, '32020807', 7],
    ['wInt32', undefined, '3200', 0],
    ['wUint32', 7, '3a020807', 7],
    ['wUint32', undefined, '3a00', 0],
    ['wDouble', 1.5, '4209090000000000' + '00f83f', 1.5],
    ['wDouble', undefined, '4200', 0],
    ['wFloat', 1.5, '4a050d0000c03f', 1.5],
    ['wFloat', undefined, '4a00', 0],
    ['wBytes', new Uint8Array([1]), '52030a0101', new Uint8Array([1])],
    ['wBytes', undefined, '5200', new Uint8Array(0)],
    ['at', new Date(1500), '5a0808011080cab5ee01', new Date(1500)],
    ['part', { name: 'p' }, '62030a0170', { name: 'p', count: 0n }],
    ['part', {}, '6200', { name: '', count: 0n }],
    ['ratio', 0.5, '69000000000000e03f', 0.5],
    ['meta', { a: 1 }, '72100a0e0a0161120911000000000000f03f', { a: 1 }],
    ['meta', undefined, '7200', {}],
    ['list', [1], '7a0b0a0911000000000000f03f', [1]],
    ['list', undefined, '7a00', []],
    ['json', 'x', '8201031a0178', 'x'],
    ['json', null, '8201020800', null],
    ['json', undefined, '820100', undefined],
    ['mask', ['a.b'], '8a01050a03612e62', ['a.b']],
    ['mask', undefined, '8a0100', []],
  ];

  it.each(valid)('%s = %s: sends the member, which decodes as the value (or its empty value)', (name, given, member, decoded) => {
    const complete = { ...Pick.fromPartial({}), id: 'i', kind: { $case: name, value: given } };
    const partial = { id: 'i', kind: { $case: name, value: given } };
    for (const value of [complete, partial]) {
      const bytes = encodeMessage(Pick, P, value);
      expect(hex(bytes)).toBe('0a0169' + member);
      expect(Pick.decode(bytes).kind).toEqual({ $case: name, value: decoded });
    }
    if (given !== undefined && given !== null) {
      // What ts-proto writes for the value completed (its fromPartial would drop a missing one).
      expect(hex(encodeMessage(Pick, P, complete))).toBe(hex(Pick.encode(Pick.fromPartial(partial)).finish()));
    }
  });

  it('keeps a member sent empty at any depth (a message field, a list element, a map value)', () => {
    const bytes = encodeMessage(Pick, P, {
      child: { kind: { $case: 'wBool' } },
      children: [{ kind: { $case: 'wString', value: undefined } }, { kind: { $case: 'json', value: null } }],
      named: { a: { kind: { $case: 'mask' } } },
    });
    const back = Pick.decode(bytes) as { child: { kind: unknown }; children: { kind: unknown }[]; named: Record<string, { kind: unknown }> };
    expect(back.child.kind).toEqual({ $case: 'wBool', value: false });
    expect(back.children.map((c) => c.kind)).toEqual([
      { $case: 'wString', value: '' },
      { $case: 'json', value: null },
    ]);
    expect(back.named['a']!.kind).toEqual({ $case: 'mask', value: [] });
  });

  const members = "'wBool', 'wString', 'wInt64', 'wUint64', 'wInt32', 'wUint32', 'wDouble', 'wFloat', 'wBytes', 'at', 'part', 'ratio', 'meta', 'list', 'json' or 'mask'";
  // [kind, the error after the type name]
  const refused: Array<[unknown, string]> = [
    [{ $case: 'wFoo', value: true }, `.kind: unknown $case 'wFoo' (oneof kind: ${members})`],
    [{ value: true }, `.kind.$case: expected $case ${members}, got undefined`],
    [{ $case: 'wBool', value: 'x' }, '.kind.value: expected google.protobuf.BoolValue (a boolean, or undefined), got string "x"'],
    [{ $case: 'wString', value: 5 }, '.kind.value: expected google.protobuf.StringValue (a string, or undefined), got number 5'],
    [{ $case: 'wInt64', value: 'x' }, '.kind.value: expected google.protobuf.Int64Value (a bigint or an integer number or string from -2^63 to 2^63-1, or undefined), got string "x"'],
    [{ $case: 'wInt64', value: 2n ** 63n }, '.kind.value: expected google.protobuf.Int64Value (a bigint or an integer number or string from -2^63 to 2^63-1, or undefined), got bigint 9223372036854775808n'],
    [{ $case: 'wUint64', value: -1 }, '.kind.value: expected google.protobuf.UInt64Value (a bigint or an integer number or string from 0 to 2^64-1, or undefined), got number -1'],
    [{ $case: 'wInt32', value: 1.5 }, '.kind.value: expected google.protobuf.Int32Value (an integer number from -2147483648 to 2147483647, or undefined), got number 1.5'],
    [{ $case: 'wUint32', value: -1 }, '.kind.value: expected google.protobuf.UInt32Value (an integer number from 0 to 4294967295, or undefined), got number -1'],
    [{ $case: 'wDouble', value: 'x' }, '.kind.value: expected google.protobuf.DoubleValue (a number, or undefined), got string "x"'],
    [{ $case: 'wFloat', value: 1e300 }, '.kind.value: expected google.protobuf.FloatValue (a number within float range, or undefined), got number 1e+300'],
    [{ $case: 'wBytes', value: 'x' }, '.kind.value: expected google.protobuf.BytesValue (a Uint8Array, or undefined), got string "x"'],
    [{ $case: 'at' }, '.kind.value: expected google.protobuf.Timestamp (a Date), got undefined'],
    [{ $case: 'at', value: '2024-01-01T00:00:00Z' }, '.kind.value: expected google.protobuf.Timestamp (a Date), got string "2024-01-01T00:00:00Z"'],
    [{ $case: 'at', value: new Date(NaN) }, '.kind.value: expected google.protobuf.Timestamp (a Date), got invalid Date'],
    [{ $case: 'part' }, '.kind.value: expected message choices.v1.Part (an object), got undefined'],
    [{ $case: 'part', value: 'p' }, '.kind.value: expected message choices.v1.Part (an object), got string "p"'],
    [{ $case: 'part', value: { count: 'many' } }, '.kind.value.count: expected int64 (a bigint, or an integer number or string, from -2^63 to 2^63-1), got string "many"'],
    [{ $case: 'ratio' }, '.kind.value: expected double (a number), got undefined'],
    [{ $case: 'ratio', value: 'x' }, '.kind.value: expected double (a number), got string "x"'],
    [{ $case: 'meta', value: 5 }, '.kind.value: expected google.protobuf.Struct (a plain object, or undefined), got number 5'],
    [{ $case: 'list', value: 'x' }, '.kind.value: expected google.protobuf.ListValue (an array, or undefined), got string "x"'],
    [{ $case: 'mask', value: 'a.b' }, '.kind.value: expected google.protobuf.FieldMask (an array of strings, or undefined), got string "a.b"'],
    [{ $case: 'mask', value: ['a', 5] }, '.kind.value[1]: expected string, got number 5'],
  ];

  it('refuses an unknown $case, a missing value where the type needs one, and a value of the wrong type, naming the field path', () => {
    for (const [kind, rest] of refused) {
      const err = encodeError(() => encodeMessage(Pick, P, { kind }));
      expect(err.message).toBe(P + rest);
      expect(err.path).toBe(rest.slice(0, rest.indexOf(':')));
    }
    const deep = encodeError(() => encodeMessage(Pick, P, { children: [{}, { kind: { $case: 'wBool', value: 'x' } }] }));
    expect(deep.path).toBe('.children[1].kind.value');
  });

  it('the compiled check gives the verdicts of the interpreting one', () => {
    const compiled = freshCodec(Pick, P, true);
    const interpreted = freshCodec(Pick, P, false);
    const base = Pick.fromPartial({});
    const values: unknown[] = [
      ...valid.flatMap(([name, given]) => [{ ...base, kind: { $case: name, value: given } }, { kind: { $case: name, value: given } }]),
      ...refused.flatMap(([kind]) => [{ ...base, kind }, { kind }]),
      { ...base, children: [{ ...base, kind: { $case: 'wBool', value: 'x' } }] },
      { ...base, named: { a: { ...base, kind: { $case: 'mask' } } } },
    ];
    for (const value of values) expect(verdictOf(compiled, P, value)).toBe(verdictOf(interpreted, P, value));
    // A complete message is encoded as it is; a wrapper member without its value needs its empty
    // wrapper put in (fromPartial, then the member kept); a Value member's null is sent as it is.
    expect(verdictOf(compiled, P, { ...base, kind: { $case: 'wBool', value: true } })).toBe('as is: 12020801');
    expect(verdictOf(compiled, P, { ...base, kind: { $case: 'wBool', value: undefined } })).toBe('completed: 1200');
    expect(verdictOf(compiled, P, { ...base, kind: { $case: 'json', value: null } })).toBe('as is: 8201020800');
    expect(verdictOf(compiled, P, { ...base, kind: { $case: 'at', value: new Date(1500) } })).toBe('as is: 5a0808011080cab5ee01');
  });

  it('a member whose value cannot be planned (Timestamp with useDate=string) leaves that value unchecked, not the oneof', () => {
    const iso = '1970-01-01T00:00:01.500Z';
    const bytes = encodeMessage(PickDateString, P, { kind: { $case: 'at', value: iso } });
    expect(hex(bytes)).toBe('5a0808011080cab5ee01');
    expect(PickDateString.decode(bytes).kind).toEqual({ $case: 'at', value: iso });
    const cases: Array<[unknown, string]> = [
      [{ $case: 'at' }, '.kind.value: expected google.protobuf.Timestamp, got undefined'],
      [{ $case: 'wFoo', value: true }, `.kind: unknown $case 'wFoo' (oneof kind: ${members})`],
      [{ $case: 'ratio', value: 'x' }, '.kind.value: expected double (a number), got string "x"'],
      [{ $case: 'wBool', value: 'x' }, '.kind.value: expected google.protobuf.BoolValue (a boolean, or undefined), got string "x"'],
    ];
    for (const [kind, rest] of cases) expect(encodeError(() => encodeMessage(PickDateString, P, { kind })).message).toBe(P + rest);
    expect(hex(encodeMessage(PickDateString, P, { kind: { $case: 'wString' } }))).toBe('1a00');
    const compiled = freshCodec(PickDateString, P, true);
    const interpreted = freshCodec(PickDateString, P, false);
    for (const kind of [...cases.map(([k]) => k), { $case: 'at', value: iso }, { $case: 'at', value: 5 }]) {
      expect(verdictOf(compiled, P, { kind })).toBe(verdictOf(interpreted, P, { kind }));
    }
  });

  it('oneof=unions ({ $case, <member> }): a wrapper member without its value is sent empty, a wrong one refused', () => {
    const bytes = encodeMessage(PickUnions, P, { kind: { $case: 'wBool' } });
    expect(hex(bytes)).toBe('1200');
    expect(PickUnions.decode(bytes).kind).toEqual({ $case: 'wBool', wBool: false });
    const err = encodeError(() => encodeMessage(PickUnions, P, { kind: { $case: 'wBool', wBool: 'x' } }));
    expect(err.message).toBe(`${P}.kind.wBool: expected google.protobuf.BoolValue (a boolean, or undefined), got string "x"`);
  });
});
