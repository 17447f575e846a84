/**
 * encodeMessage (framework/wire/encode.ts), the encoder of what handlers return or yield:
 * - a deep-partial message encodes with every field it leaves out at its proto3 default, never as
 *   the text "undefined", NaN or "null" (what ts-proto's encode writes for such a value);
 * - a complete message encodes byte for byte as ts-proto's encode, without fromPartial;
 * - an int64 given as a number or a string (DeepPartial allows both) encodes as the bigint;
 * - a value that cannot be encoded throws EncodeError naming the type, the field path and the reason;
 * - without registered descriptors, top-level fields are still checked and nested partials still
 *   completed; registering them later names nested paths too.
 *
 * The messages come from test/protos/partial/v1/kinds.proto, generated here into test/.tmp.
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { generate } from '../../codegen/index.js';
import { encodeMessage, registerDescriptors } from '../../framework/wire/encode.js';
import { encodeError } from '../support/encode-error.js';
import { repoRoot, tempDir } from '../codegen/helpers.js';
import { kindsDefaults } from '../support/kinds-defaults.js';

/** A generated ts-proto codec, loosely typed (the module is generated at run time). */
interface Codec {
  encode(message: unknown): { finish(): Uint8Array };
  decode(bytes: Uint8Array): Record<string, unknown>;
  fromPartial(object: unknown): Record<string, unknown>;
}

let Kinds: Codec;
let Wkt: Codec;
let Tree: Codec;
let files: readonly string[];
const K = 'partial.v1.Kinds';
const tmp = tempDir('encode');

beforeAll(async () => {
  await generate({
    files: [path.join(repoRoot, 'test', 'protos', 'partial', 'v1', 'kinds.proto')],
    includeDirs: [path.join(repoRoot, 'test', 'protos')],
    outDir: tmp.dir,
  });
  const mod = (await import(pathToFileURL(path.join(tmp.dir, 'partial', 'v1', 'kinds.ts')).href)) as Record<string, unknown>;
  Kinds = mod.Kinds as Codec;
  Wkt = mod.Wkt as Codec;
  Tree = mod.Tree as Codec;
  files = (mod.PartialDefinition as { files: readonly string[] }).files;
});

afterAll(() => tmp.cleanup());

/** A Kinds with every field set to something other than its default (one oneof member). */
function full(): Record<string, unknown> {
  return Kinds.fromPartial({
    fString: 's',
    fBool: true,
    fInt32: -5,
    fInt64: -(2n ** 40n),
    fUint64: 2n ** 63n,
    fSint32: -7,
    fSint64: -9n,
    fFixed32: 4_000_000_000,
    fFixed64: 2n ** 64n - 1n,
    fSfixed64: -1n,
    fDouble: 1.25,
    fFloat: 0.5,
    fBytes: new Uint8Array([1, 2]),
    fEnum: 2,
    fChild: { name: 'c', count: 3n, tags: ['t'] },
    rInt64: [1n, -2n],
    rString: ['a', ''],
    rChild: [{ name: 'r', count: 1n, tags: ['x'] }, {}],
    mCounts: { a: 1n, b: 0n },
    mChildren: new Map([[7n, { name: 'm' }]]),
    choice: { $case: 'cNumber', value: 12n },
    oInt32: 0,
    oInt64: 0n,
    oString: '',
    oEnum: 0,
    fUint32: 4_294_967_295,
    rBytes: [new Uint8Array([9])],
    rEnum: [1, 2],
    mFlags: new Map([[true, 'yes']]),
    mLevels: new Map([[3n, 1]]),
    mBlobs: { 5: new Uint8Array([5]) },
    fSfixed32: -3,
    rDouble: [0.5],
    rUint64: [5n],
    oBytes: new Uint8Array(0),
    oDouble: 0,
    HTTPCode: 404,
  });
}


function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}


/** For each top-level field: the message without it (or with it null) encodes as with its default. */
function expectEveryFieldLeftOutEncodesAsItsDefault(): void {
  const defaults = Kinds.fromPartial({});
  for (const key of Object.keys(full())) {
    const expected = hex(Kinds.encode({ ...full(), [key]: defaults[key] }).finish());
    const without = full();
    delete without[key];
    expect(hex(encodeMessage(Kinds, K, without)), `${key} left out`).toBe(expected);
    expect(hex(encodeMessage(Kinds, K, { ...full(), [key]: null })), `${key}: null`).toBe(expected);
  }
}

describe('a type whose descriptors were not registered (top-level checks only)', () => {
  it('encodes {} with every default, and each field left out as its default', () => {
    expect(encodeMessage(Kinds, K, {})).toHaveLength(0);
    expect(Kinds.decode(encodeMessage(Kinds, K, {}))).toEqual(kindsDefaults);
    expectEveryFieldLeftOutEncodesAsItsDefault();
  });

  it('completes nested partial messages (through fromPartial)', () => {
    const decoded = Kinds.decode(encodeMessage(Kinds, K, { fChild: { name: 'x' }, rChild: [{ tags: ['t'] }] }));
    expect(decoded.fChild).toEqual({ name: 'x', count: 0n, tags: [] });
    expect(decoded.rChild).toEqual([{ name: '', count: 0n, tags: ['t'] }]);
  });

  it('names a bad top-level field; a bad nested one without its path', () => {
    const top = encodeError(() => encodeMessage(Kinds, K, { fString: { text: 'x' } }));
    expect(top.message).toBe('partial.v1.Kinds.fString: expected string, got object');
    expect(top.path).toBe('.fString');
    const nested = encodeError(() => encodeMessage(Kinds, K, { fChild: { count: 'abc' } }));
    expect(nested.message).toMatch(/^partial\.v1\.Kinds: /);
    expect(nested.message).toContain('abc');
    expect(nested.typeName).toBe(K);
  });

  it('ignores descriptors that cannot be decoded', () => {
    registerDescriptors(['this is not a FileDescriptorProto']);
    expect(Kinds.decode(encodeMessage(Kinds, K, { fInt64: 5 })).fInt64).toBe(5n);
  });

  it('once the descriptors are registered, names nested paths too', () => {
    registerDescriptors(files);
    const nested = encodeError(() => encodeMessage(Kinds, K, { fChild: { count: 'abc' } }));
    expect(nested.message).toBe(
      'partial.v1.Kinds.fChild.count: expected int64 (a bigint, or an integer number or string, from -2^63 to 2^63-1), got string "abc"',
    );
    expect(nested.path).toBe('.fChild.count');
  });
});

describe('with descriptors', () => {
  beforeAll(() => registerDescriptors(files));

  it('encodes a complete message byte for byte as ts-proto, without calling fromPartial', () => {
    const value = full();
    expect(hex(encodeMessage(Kinds, K, value))).toBe(hex(Kinds.encode(value).finish()));
    expect(Kinds.decode(encodeMessage(Kinds, K, value))).toEqual(value);
    // A codec object of its own, so that its plan is built here; then count fromPartial calls.
    const spy = { ...Kinds, fromPartial: vi.fn((o: unknown) => Kinds.fromPartial(o)) };
    encodeMessage(spy, K, value); // builds the plan (which probes fromPartial)
    spy.fromPartial.mockClear();
    for (let i = 0; i < 3; i++) encodeMessage(spy, K, full());
    expect(spy.fromPartial).not.toHaveBeenCalled();
    encodeMessage(spy, K, {});
    expect(spy.fromPartial).toHaveBeenCalledTimes(1);
  });

  it('encodes {}, undefined and null as the message with every proto3 default', () => {
    for (const value of [{}, undefined, null]) {
      const bytes = encodeMessage(Kinds, K, value);
      expect(bytes).toHaveLength(0);
      expect(Kinds.decode(bytes)).toEqual(kindsDefaults);
    }
  });

  it('encodes each field left out (or null) as its default, never as "undefined", NaN or "null"', () => {
    expectEveryFieldLeftOutEncodesAsItsDefault();
    // ts-proto's encode alone writes these wrongly without an error:
    const noString = full();
    delete noString.fString;
    expect(Kinds.decode(Kinds.encode(noString).finish()).fString).toBe('undefined');
    expect(Kinds.decode(encodeMessage(Kinds, K, noString)).fString).toBe('');
    const noDouble = full();
    delete noDouble.fDouble;
    expect(Kinds.decode(Kinds.encode(noDouble).finish()).fDouble).toBeNaN();
    expect(Kinds.decode(encodeMessage(Kinds, K, noDouble)).fDouble).toBe(0);
  });

  it('completes nested messages, list elements and map values', () => {
    const decoded = Kinds.decode(
      encodeMessage(Kinds, K, {
        fChild: { name: 'x' },
        rChild: [{}, { count: 2n }],
        mChildren: new Map([[1n, { tags: ['t'] }]]),
        choice: { $case: 'cChild', value: {} },
      }),
    );
    expect(decoded.fChild).toEqual({ name: 'x', count: 0n, tags: [] });
    expect(decoded.rChild).toEqual([
      { name: '', count: 0n, tags: [] },
      { name: '', count: 2n, tags: [] },
    ]);
    expect(decoded.mChildren).toEqual(new Map([[1n, { name: '', count: 0n, tags: ['t'] }]]));
    expect(decoded.choice).toEqual({ $case: 'cChild', value: { name: '', count: 0n, tags: [] } });
  });

  it('takes an int64 as a number or a decimal string, as DeepPartial allows', () => {
    const decoded = Kinds.decode(
      encodeMessage(Kinds, K, {
        fInt64: 42,
        fUint64: '18446744073709551615',
        fSint64: -3,
        rInt64: [1, '2', 3n],
        mCounts: { a: 4, b: '5' },
        choice: { $case: 'cNumber', value: '6' },
        oInt64: 7,
        fChild: { count: '8' },
        rUint64: [9],
      }),
    );
    expect(decoded).toMatchObject({
      fInt64: 42n,
      fUint64: 2n ** 64n - 1n,
      fSint64: -3n,
      rInt64: [1n, 2n, 3n],
      mCounts: { a: 4n, b: 5n },
      choice: { $case: 'cNumber', value: 6n },
      oInt64: 7n,
      fChild: { name: '', count: 8n, tags: [] },
      rUint64: [9n],
    });
  });

  it('accepts the edge values the types allow', () => {
    const value = {
      ...full(),
      fDouble: Number.NaN,
      fFloat: -Infinity,
      rDouble: [Infinity, -0],
      fInt32: -(2 ** 31),
      fUint32: 0,
      fBytes: Buffer.from('hi'),
      mCounts: Object.assign(Object.create(null) as object, { x: 1n }),
      fChild: new (class Child {
        name = 'class instance';
        count = 1n;
        tags: string[] = [];
      })(),
      fInt64: -(2n ** 63n),
      fUint64: 2n ** 64n - 1n,
    };
    const decoded = Kinds.decode(encodeMessage(Kinds, K, value));
    expect(decoded.fDouble).toBeNaN();
    expect(decoded.fFloat).toBe(-Infinity);
    expect(decoded.rDouble).toEqual([Infinity, -0]);
    expect(decoded.fInt32).toBe(-(2 ** 31));
    expect(decoded.fBytes).toEqual(new Uint8Array(Buffer.from('hi')));
    expect(decoded.mCounts).toEqual({ x: 1n });
    expect(decoded.fChild).toEqual({ name: 'class instance', count: 1n, tags: [] });
    expect(decoded.fInt64).toBe(-(2n ** 63n));
    expect(decoded.fUint64).toBe(2n ** 64n - 1n);
  });

  const int64 = 'int64 (a bigint, or an integer number or string, from -2^63 to 2^63-1)';
  const uint64 = 'uint64 (a bigint, or an integer number or string, from 0 to 2^64-1)';
  const int32 = 'int32 (an integer number from -2147483648 to 2147483647)';
  const bad: Array<[string, unknown, string]> = [
    ['int64 not a number', { fInt64: 'abc' }, `.fInt64: expected ${int64}, got string "abc"`],
    ['int64 fraction', { fInt64: 1.5 }, `.fInt64: expected ${int64}, got number 1.5`],
    ['int64 out of range', { fInt64: 2n ** 63n }, `.fInt64: expected ${int64}, got bigint 9223372036854775808n`],
    ['uint64 negative', { fUint64: -1 }, `.fUint64: expected ${uint64}, got number -1`],
    ['int64 boolean', { fSint64: true }, `.fSint64: expected sint64 (a bigint, or an integer number or string, from -2^63 to 2^63-1), got boolean true`],
    ['object for a string', { fString: { text: 'x' } }, '.fString: expected string, got object'],
    ['number for a string', { fString: 7 }, '.fString: expected string, got number 7'],
    ['number for bytes', { fBytes: 42 }, '.fBytes: expected bytes (a Uint8Array), got number 42'],
    ['string for bytes', { fBytes: 'AQI=' }, '.fBytes: expected bytes (a Uint8Array), got string "AQI="'],
    ['array for bytes', { fBytes: [1, 2] }, '.fBytes: expected bytes (a Uint8Array), got array (length 2)'],
    ['int32 fraction', { fInt32: 1.5 }, `.fInt32: expected ${int32}, got number 1.5`],
    ['int32 too big', { fInt32: 2 ** 31 }, `.fInt32: expected ${int32}, got number 2147483648`],
    ['int32 NaN', { fSint32: Number.NaN }, '.fSint32: expected sint32 (an integer number from -2147483648 to 2147483647), got number NaN'],
    ['uint32 negative', { fUint32: -1 }, '.fUint32: expected uint32 (an integer number from 0 to 4294967295), got number -1'],
    ['fixed32 too big', { fFixed32: 2 ** 32 }, '.fFixed32: expected fixed32 (an integer number from 0 to 4294967295), got number 4294967296'],
    ['float out of range', { fFloat: 1e39 }, '.fFloat: expected float (a number within float range), got number 1e+39'],
    ['string for a double', { fDouble: '1.5' }, '.fDouble: expected double (a number), got string "1.5"'],
    ['string for a bool', { fBool: 'true' }, '.fBool: expected boolean, got string "true"'],
    ['enum by name', { fEnum: 'LEVEL_LOW' }, '.fEnum: expected enum partial.v1.Level (an integer number), got string "LEVEL_LOW"'],
    ['string for a message', { fChild: 'c' }, '.fChild: expected message partial.v1.Child (an object), got string "c"'],
    ['array for a message', { fChild: [] }, '.fChild: expected message partial.v1.Child (an object), got array (length 0)'],
    ['nested field', { fChild: { count: 1.5 } }, `.fChild.count: expected ${int64}, got number 1.5`],
    ['string for a list', { rString: 'a' }, '.rString: expected repeated string (an array), got string "a"'],
    ['undefined in a list', { rString: ['a', undefined] }, '.rString[1]: expected string, got undefined'],
    ['null in a message list', { rChild: [{}, null] }, '.rChild[1]: expected message partial.v1.Child (an object), got null'],
    ['deep in a list', { rChild: [{}, { tags: [7] }] }, '.rChild[1].tags[0]: expected string, got number 7'],
    ['enum list', { rEnum: [1, 2.5] }, '.rEnum[1]: expected enum partial.v1.Level (an integer number), got number 2.5'],
    ['map value', { mCounts: { 'a b': 'x' } }, `.mCounts["a b"]: expected ${int64}, got string "x"`],
    ['null map value', { mCounts: { a: null } }, `.mCounts["a"]: expected ${int64}, got null`],
    ['array for a map', { mCounts: [] }, '.mCounts: expected map<string, int64> (a plain object), got array (length 0)'],
    ['object for a Map', { mChildren: { 1: {} } }, '.mChildren: expected map<int64, partial.v1.Child> (a Map), got object'],
    ['Map key type', { mChildren: new Map([[1, {}]]) }, '.mChildren[1]: expected a map key of type int64 (a bigint), got number 1'],
    ['Map value field', { mChildren: new Map([[1n, { name: 5 }]]) }, '.mChildren[1].name: expected string, got number 5'],
    ['bool Map key', { mFlags: new Map([['true', 'x']]) }, '.mFlags["true"]: expected a map key of type bool (a boolean), got string "true"'],
    ['bytes map value', { mBlobs: { 1: 'x' } }, '.mBlobs["1"]: expected bytes (a Uint8Array), got string "x"'],
    ['optional', { oInt32: '1' }, `.oInt32: expected ${int32}, got string "1"`],
    ['optional bytes', { oBytes: 'x' }, '.oBytes: expected bytes (a Uint8Array), got string "x"'],
    ['unknown oneof $case', { choice: { $case: 'cFoo', value: 'a' } }, ".choice: unknown $case 'cFoo' (oneof choice: 'cText', 'cNumber' or 'cChild')"],
    ['oneof member by its field name', { choice: { $case: 'c_text', value: 'a' } }, ".choice: unknown $case 'c_text' (oneof choice: 'cText', 'cNumber' or 'cChild')"],
    ['oneof without $case', { choice: { value: 'a' } }, ".choice.$case: expected $case 'cText', 'cNumber' or 'cChild', got undefined"],
    ['oneof $case not a string', { choice: { $case: 1, value: 'a' } }, ".choice.$case: expected $case 'cText', 'cNumber' or 'cChild', got number 1"],
    ['oneof not an object', { choice: 'a' }, '.choice: expected oneof choice (an object { $case, value }, or undefined), got string "a"'],
    ['oneof member of the wrong type', { choice: { $case: 'cText', value: 5 } }, '.choice.value: expected string, got number 5'],
    ['oneof member without its value', { choice: { $case: 'cChild' } }, '.choice.value: expected message partial.v1.Child (an object), got undefined'],
    ['oneof member null', { choice: { $case: 'cText', value: null } }, '.choice.value: expected string, got null'],
    ['oneof int64 member', { choice: { $case: 'cNumber', value: 1.5 } }, `.choice.value: expected ${int64}, got number 1.5`],
    ['inside a oneof message member', { choice: { $case: 'cChild', value: { tags: ['a', 7] } } }, '.choice.value.tags[1]: expected string, got number 7'],
    ['not an object', 'hello', ': expected message partial.v1.Kinds (an object), got string "hello"'],
    ['an array', [], ': expected message partial.v1.Kinds (an object), got array (length 0)'],
    ['a long string is cut', { fInt64: 'x'.repeat(100) }, `.fInt64: expected ${int64}, got string "${'x'.repeat(40)}..."`],
  ];
  it.each(bad)('refuses %s with type, path and reason', (_, value, rest) => {
    const err = encodeError(() => encodeMessage(Kinds, K, value));
    expect(err.message).toBe(K + rest);
    expect(err.typeName).toBe(K);
    expect(err.path).toBe(rest.slice(0, rest.indexOf(':')));
  });

  it('checks recursive messages at any depth', () => {
    const T = 'partial.v1.Tree';
    const partial = { children: [{ children: [{ name: 'leaf' }] }], parent: { named: { x: {} } } };
    expect(Tree.decode(encodeMessage(Tree, T, partial))).toEqual(Tree.fromPartial(partial));
    const err = encodeError(() => encodeMessage(Tree, T, { children: [{ children: [{}, { name: 1 }] }] }));
    expect(err.message).toBe('partial.v1.Tree.children[0].children[1].name: expected string, got number 1');
    const viaMap = encodeError(() => encodeMessage(Tree, T, { parent: { named: { k: { parent: 'p' } } } }));
    expect(viaMap.message).toBe('partial.v1.Tree.parent.named["k"].parent: expected message partial.v1.Tree (an object), got string "p"');
  });

  it('encodes well-known types as ts-proto maps them (Date, primitives, plain objects)', () => {
    const W = 'partial.v1.Wkt';
    const partial = {
      at: new Date(1_700_000_000_123),
      took: { seconds: 5n },
      meta: { a: 1, b: [true, null], c: { d: 'e' } },
      value: 'text',
      list: [1, 'a'],
      wInt64: 5,
      wString: '',
      wBool: false,
      empty: {},
      packed: { typeUrl: 'type.googleapis.com/partial.v1.Child' },
      mask: ['a.b', 'c'],
      times: [new Date(0)],
      durations: { d: { nanos: 1 } },
    };
    const complete = Wkt.fromPartial(partial);
    expect(hex(encodeMessage(Wkt, W, complete))).toBe(hex(Wkt.encode(complete).finish()));
    expect(hex(encodeMessage(Wkt, W, partial))).toBe(hex(Wkt.encode(complete).finish()));
    expect(encodeMessage(Wkt, W, {})).toHaveLength(0);
    expect(Wkt.decode(encodeMessage(Wkt, W, { took: {} })).took).toEqual({ seconds: 0n, nanos: 0 });
    const err = encodeError(() => encodeMessage(Wkt, W, { took: { seconds: 'soon' } }));
    expect(err.message).toBe('partial.v1.Wkt.took.seconds: expected int64 (a bigint, or an integer number or string, from -2^63 to 2^63-1), got string "soon"');
  });
});
