/**
 * Wire compatibility of the generated message code with protobufjs, the reference JavaScript
 * implementation most svrkit peers (grpc-js, @grpc/proto-loader) use. For each field kind:
 * - bytes encoded by the generated code decode with protobufjs to the same values;
 * - bytes encoded by protobufjs decode with the generated code to the same values;
 * - both encodings of the same message are byte-identical (fixtures declare fields in field-number
 *   order, the order protobufjs writes in).
 * The exceptions (where bytes legitimately differ) have their own tests at the end.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import protobuf from 'protobufjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generate } from '../../codegen/index.js';
import { apiDir, sharedDir, tempDir } from './helpers.js';

const tmp = tempDir('bytes');
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Codec = { encode(m: any): { finish(): Uint8Array }; decode(b: Uint8Array): any; fromPartial(o: any): any };
let kinds: Record<string, Codec> & Record<string, any>;
let moneyCodec: Codec;
let root: protobuf.Root;

beforeAll(async () => {
  const { written } = await generate({ files: [path.join(apiDir, 'kinds/kinds.proto')], outDir: tmp.dir, includeDirs: [apiDir, sharedDir] });
  expect(written.length).toBeGreaterThan(1);
  kinds = await import(pathToFileURL(path.join(tmp.dir, 'kinds/kinds.ts')).href);
  moneyCodec = (await import(pathToFileURL(path.join(tmp.dir, 'common/v1/money.ts')).href)).Money;

  // protobufjs reads the same .proto files; google/protobuf/* imports come from its bundled copies.
  root = new protobuf.Root();
  root.resolvePath = (_origin, target) => {
    for (const dir of [apiDir, sharedDir]) {
      const candidate = path.join(dir, target);
      if (existsSync(candidate)) return candidate;
    }
    return target;
  };
  root.loadSync('kinds/kinds.proto');
  root.resolveAll();
}, 30_000);

afterAll(() => tmp.cleanup());

/** protobufjs -> plain object, in a form that compares well: 64-bit as decimal strings, bytes as base64. */
const conv: protobuf.IConversionOptions = { longs: String, enums: Number, bytes: String, defaults: false };
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

interface Encoded {
  ts: Uint8Array;
  pb: Uint8Array;
}

/**
 * Checks one message both ways: `tsValue` is the message as the generated code types it (a deep
 * partial, completed with fromPartial), `pbObject` the same message as protobufjs' `fromObject` takes it.
 */
function roundTrip(type: string, tsValue: object, pbObject: object, opts: { identical?: boolean } = {}): Encoded {
  const gen = kinds[type] as Codec;
  const pbType = root.lookupType(`svrkit.kinds.${type}`);
  const tsMessage = gen.fromPartial(tsValue);
  const pbMessage = pbType.fromObject(pbObject);
  expect(pbType.verify(pbMessage), 'fixture is valid for protobufjs').toBeNull();

  const ts = gen.encode(tsMessage).finish();
  // protobufjs returns a Node Buffer; the generated decoder returns `bytes` fields as views of its input
  // (see the last test), so hand it a plain Uint8Array to get plain Uint8Array fields back.
  const pb = Uint8Array.from(pbType.encode(pbMessage).finish());
  // generated -> protobufjs
  expect(pbType.toObject(pbType.decode(ts), conv)).toEqual(pbType.toObject(pbMessage, conv));
  // protobufjs -> generated
  expect(gen.decode(pb)).toEqual(tsMessage);
  // and each side reads its own bytes back
  expect(gen.decode(ts)).toEqual(tsMessage);
  if (opts.identical !== false) expect(hex(ts)).toBe(hex(pb));
  return { ts, pb };
}

const bytes = (...b: number[]) => new Uint8Array(b);

describe('scalars', () => {
  it('extremes of every integer kind, float and double, bool, unicode string, bytes', () => {
    roundTrip(
      'Scalars',
      {
        fDouble: -1.7976931348623157e308,
        fFloat: 1.5,
        fInt32: -2147483648,
        fInt64: -9223372036854775808n,
        fUint32: 4294967295,
        fUint64: 18446744073709551615n,
        fSint32: -2147483648,
        fSint64: -9223372036854775808n,
        fFixed32: 4294967295,
        fFixed64: 18446744073709551615n,
        fSfixed32: -2147483648,
        fSfixed64: -9223372036854775808n,
        fBool: true,
        fString: 'héllo, 世界 👋',
        fBytes: bytes(0, 1, 127, 128, 255),
      },
      {
        fDouble: -1.7976931348623157e308,
        fFloat: 1.5,
        fInt32: -2147483648,
        fInt64: '-9223372036854775808',
        fUint32: 4294967295,
        fUint64: '18446744073709551615',
        fSint32: -2147483648,
        fSint64: '-9223372036854775808',
        fFixed32: 4294967295,
        fFixed64: '18446744073709551615',
        fSfixed32: -2147483648,
        fSfixed64: '-9223372036854775808',
        fBool: true,
        fString: 'héllo, 世界 👋',
        fBytes: bytes(0, 1, 127, 128, 255),
      },
    );
  });

  it('positive maxima, small values, NaN and infinities', () => {
    roundTrip(
      'Scalars',
      {
        fDouble: Number.NaN,
        fFloat: Number.NEGATIVE_INFINITY,
        fInt32: 2147483647,
        fInt64: 9223372036854775807n,
        fUint32: 1,
        fUint64: 300n,
        fSint32: 2147483647,
        fSint64: 9223372036854775807n,
        fFixed32: 1,
        fFixed64: 1n,
        fSfixed32: 2147483647,
        fSfixed64: 9223372036854775807n,
        fString: 'a',
        fBytes: bytes(0),
      },
      {
        fDouble: Number.NaN,
        fFloat: Number.NEGATIVE_INFINITY,
        fInt32: 2147483647,
        fInt64: '9223372036854775807',
        fUint32: 1,
        fUint64: '300',
        fSint32: 2147483647,
        fSint64: '9223372036854775807',
        fFixed32: 1,
        fFixed64: '1',
        fSfixed32: 2147483647,
        fSfixed64: '9223372036854775807',
        fString: 'a',
        fBytes: bytes(0),
      },
    );
  });

  it('proto3 defaults are not written by either side', () => {
    const { ts } = roundTrip('Scalars', { fInt32: 0, fInt64: 0n, fString: '', fBool: false, fBytes: bytes() }, { fInt32: 0, fInt64: '0', fString: '', fBool: false });
    expect(ts.length).toBe(0);
  });

  it('int64 fields are bigint in the generated code', () => {
    const decoded = kinds['Scalars']!.decode(kinds['Scalars']!.encode(kinds['Scalars']!.fromPartial({ fUint64: '18446744073709551615' })).finish());
    expect(decoded.fUint64).toBe(18446744073709551615n);
    expect(typeof decoded.fInt64).toBe('bigint');
  });
});

describe('enums, nested messages, recursion', () => {
  it('nested messages and enums three levels deep, a negative enum value, a recursive field', () => {
    roundTrip(
      'Outer',
      {
        middle: { inner: { label: 'in', kind: 2 }, inners: [{ label: 'a', kind: 1 }, { label: 'b' }], depth: 3 },
        kind: 2,
        color: kinds['Color'].COLOR_INFRARED,
        directInner: { label: 'd' },
        child: { kind: 1, child: { color: 3 } },
      },
      {
        middle: { inner: { label: 'in', kind: 2 }, inners: [{ label: 'a', kind: 1 }, { label: 'b' }], depth: 3 },
        kind: 2,
        color: -1,
        directInner: { label: 'd' },
        child: { kind: 1, child: { color: 3 } },
      },
    );
  });

  it('enum values unknown to the schema pass through', () => {
    roundTrip('Outer', { color: 42, middle: { inner: { kind: 7 } } }, { color: 42, middle: { inner: { kind: 7 } } });
  });

  it('an empty nested message is still written (presence)', () => {
    const { ts } = roundTrip('Outer', { middle: {} }, { middle: {} });
    expect(hex(ts)).toBe('0a00');
  });
});

describe('repeated', () => {
  it('packed scalars and enums, unpacked scalars, strings, bytes and messages', () => {
    const { ts } = roundTrip(
      'Repeated',
      {
        doubles: [1.5, -2.25, 0],
        floats: [0.5, -8],
        int32s: [1, -1, 2147483647, 0],
        int64s: [-9223372036854775808n, 0n, 5n],
        uint32s: [0, 4294967295],
        uint64s: [18446744073709551615n, 1n],
        sint32s: [-1, 1, -2147483648],
        sint64s: [-1n, 9223372036854775807n],
        fixed32s: [1, 4294967295],
        fixed64s: [18446744073709551615n],
        sfixed32s: [-5, 5],
        sfixed64s: [-5n, 5n],
        bools: [true, false, true],
        colors: [1, -1, 3, 0],
        unpackedInt32s: [7, -7, 0],
        unpackedSint64s: [-3n, 3n],
        strings: ['x', '', 'z'],
        blobs: [bytes(1, 2), bytes()],
        monies: [{ currency: 1, units: 10n, nanos: 5 }, {}],
      },
      {
        doubles: [1.5, -2.25, 0],
        floats: [0.5, -8],
        int32s: [1, -1, 2147483647, 0],
        int64s: ['-9223372036854775808', '0', '5'],
        uint32s: [0, 4294967295],
        uint64s: ['18446744073709551615', '1'],
        sint32s: [-1, 1, -2147483648],
        sint64s: ['-1', '9223372036854775807'],
        fixed32s: [1, 4294967295],
        fixed64s: ['18446744073709551615'],
        sfixed32s: [-5, 5],
        sfixed64s: ['-5', '5'],
        bools: [true, false, true],
        colors: [1, -1, 3, 0],
        unpackedInt32s: [7, -7, 0],
        unpackedSint64s: ['-3', '3'],
        strings: ['x', '', 'z'],
        blobs: [bytes(1, 2), bytes()],
        monies: [{ currency: 1, units: '10', nanos: 5 }, {}],
      },
    );
    // field 15 (unpacked int32s) is written as three separate varint fields: tag 0x78 each.
    expect(hex(ts)).toContain('7807' + '78f9ffffffffffffffff01' + '7800');
    // field 3 (packed int32s) is one length-delimited field: tag 0x1a.
    expect(hex(ts)).toContain('1a11' + '01' + 'ffffffffffffffffff01' + 'ffffffff07' + '00');
  });
});

describe('maps', () => {
  it('string, int32, int64, uint32, uint64, sint32, sint64, fixed32, fixed64, sfixed32, sfixed64 and bool keys', () => {
    // Both encoders write entries in iteration order; for protobufjs that is object-key order (integer-like
    // keys ascending, then the rest in insertion order), so the generated Maps get their entries in that order.
    roundTrip(
      'Maps',
      {
        stringToString: { b: 'y', a: 'x' },
        int32ToString: { 1: 'one', 7: 'seven' },
        int64ToString: new Map([
          [3n, 'c'],
          [10n, 'b'],
          [-5n, 'a'],
        ]),
        uint32ToInt32: { 1: -1, 4294967295: 5 },
        uint64ToBool: new Map([
          [1n, true],
          [18446744073709551615n, true],
        ]),
        sint32ToDouble: { 4: -1.25, [-3]: 2.5 },
        sint64ToInt64: new Map([[-9223372036854775808n, 9223372036854775807n]]),
        fixed32ToBytes: { 5: bytes(5, 5) },
        fixed64ToColor: new Map([
          [2n, -1],
          [18446744073709551615n, 3],
        ]),
        sfixed32ToFloat: { [-1]: 0.25 },
        sfixed64ToUint64: new Map([[-1n, 18446744073709551615n]]),
        boolToString: new Map([[true, 'yes']]),
        stringToMoney: { eur: { currency: 1, units: 5n, nanos: 1 } },
        stringToNested: { n: { inner: { label: 'l', kind: 1 }, inners: [{ label: 'i2' }], depth: 2 } },
      },
      {
        stringToString: { b: 'y', a: 'x' },
        int32ToString: { 1: 'one', 7: 'seven' },
        int64ToString: { 3: 'c', 10: 'b', '-5': 'a' },
        uint32ToInt32: { 1: -1, 4294967295: 5 },
        uint64ToBool: { 1: true, '18446744073709551615': true },
        sint32ToDouble: { 4: -1.25, '-3': 2.5 },
        sint64ToInt64: { '-9223372036854775808': '9223372036854775807' },
        fixed32ToBytes: { 5: bytes(5, 5) },
        fixed64ToColor: { 2: -1, '18446744073709551615': 3 },
        sfixed32ToFloat: { '-1': 0.25 },
        sfixed64ToUint64: { '-1': '18446744073709551615' },
        boolToString: { true: 'yes' },
        stringToMoney: { eur: { currency: 1, units: '5', nanos: 1 } },
        stringToNested: { n: { inner: { label: 'l', kind: 1 }, inners: [{ label: 'i2' }], depth: 2 } },
      },
    );
  });

  it('64-bit and bool keys are Map keys of the right type in the generated code', () => {
    const m = kinds['Maps']!.decode(
      root.lookupType('svrkit.kinds.Maps').encode({ int64ToString: { '-5': 'a' }, boolToString: { true: 'yes' } }).finish(),
    );
    expect(m.int64ToString).toEqual(new Map([[-5n, 'a']]));
    expect(m.boolToString).toEqual(new Map([[true, 'yes']]));
  });
});

describe('oneof', () => {
  // The generated code holds a oneof as one property, `{ $case, value }` (oneof=unions-value).
  const cases: [string, object, object][] = [
    ['text', { $case: 'text', value: 'hi' }, { text: 'hi' }],
    ['number', { $case: 'number', value: -9223372036854775808n }, { number: '-9223372036854775808' }],
    ['raw', { $case: 'raw', value: bytes(1, 2, 3) }, { raw: bytes(1, 2, 3) }],
    ['color', { $case: 'color', value: 2 }, { color: 2 }],
    ['money', { $case: 'money', value: { currency: 3, units: 1n } }, { money: { currency: 3, units: '1' } }],
    ['nothing (google.protobuf.Empty)', { $case: 'nothing', value: {} }, { nothing: {} }],
    ['a member set to its default value is still written', { $case: 'text', value: '' }, { text: '' }],
    ['an int64 member set to 0', { $case: 'number', value: 0n }, { number: '0' }],
  ];
  for (const [name, tsMember, pbMember] of cases) {
    it(name, () => {
      roundTrip('Choice', { id: 'c1', value: tsMember, after: 9 }, { id: 'c1', ...pbMember, after: 9 });
    });
  }

  it('no member set', () => {
    roundTrip('Choice', { id: 'c2', after: 1 }, { id: 'c2', after: 1 });
  });
});

describe('proto3 optional', () => {
  it('values set to their defaults are written (explicit presence)', () => {
    const { ts } = roundTrip(
      'Optionals',
      { oInt32: 0, oInt64: 0n, oString: '', oBool: false, oBytes: bytes(), oColor: 0, oDouble: 0, oUint64: 0n, oMoney: {} },
      { oInt32: 0, oInt64: '0', oString: '', oBool: false, oBytes: bytes(), oColor: 0, oDouble: 0, oUint64: '0', oMoney: {} },
    );
    expect(ts.length).toBeGreaterThan(0);
  });

  it('other values', () => {
    roundTrip(
      'Optionals',
      { oInt32: -1, oInt64: 12n, oString: 's', oBool: true, oBytes: bytes(7), oColor: -1, oDouble: 0.1, oUint64: 18446744073709551615n, oMoney: { units: 2n } },
      { oInt32: -1, oInt64: '12', oString: 's', oBool: true, oBytes: bytes(7), oColor: -1, oDouble: 0.1, oUint64: '18446744073709551615', oMoney: { units: '2' } },
    );
  });

  it('unset fields stay undefined', () => {
    const { ts } = roundTrip('Optionals', {}, {});
    expect(ts.length).toBe(0);
    const decoded = kinds['Optionals']!.decode(ts);
    expect(decoded.oInt32).toBeUndefined();
    expect(decoded.oMoney).toBeUndefined();
  });
});

describe('well-known types', () => {
  it('Timestamp (Date), Duration, Empty, Struct, Value, ListValue, all wrappers, Any, FieldMask', () => {
    const created = Date.UTC(2024, 4, 6, 7, 8, 9, 123);
    const money = moneyCodec.encode(moneyCodec.fromPartial({ currency: 1, units: 3n })).finish();
    roundTrip(
      'WellKnown',
      {
        timestamp: new Date(created),
        duration: { seconds: 3600n, nanos: 5_000_000 },
        empty: {},
        struct: { a: 1, b: 'two', c: true, d: null, e: [1, 'x', { f: false }], g: { h: 2.5 } },
        value: { k: [1, 'two'] },
        list: [1, 'a', null, true],
        wDouble: 1.25,
        wFloat: 0.5,
        wInt64: -5n,
        wUint64: 18446744073709551615n,
        wInt32: -7,
        wUint32: 7,
        wBool: true,
        wString: 'w',
        wBytes: bytes(9, 8),
        any: { typeUrl: 'type.googleapis.com/common.v1.Money', value: money },
        fieldMask: ['a.b', 'c'],
        timestamps: [new Date(1000), new Date(Date.UTC(2000, 0, 1, 0, 0, 0, 500))],
        durations: { x: { seconds: 1n, nanos: 0 }, y: { seconds: -2n, nanos: -500 } },
      },
      {
        timestamp: { seconds: String(Math.floor(created / 1000)), nanos: 123_000_000 },
        duration: { seconds: '3600', nanos: 5_000_000 },
        empty: {},
        struct: {
          fields: {
            a: { numberValue: 1 },
            b: { stringValue: 'two' },
            c: { boolValue: true },
            d: { nullValue: 0 },
            e: { listValue: { values: [{ numberValue: 1 }, { stringValue: 'x' }, { structValue: { fields: { f: { boolValue: false } } } }] } },
            g: { structValue: { fields: { h: { numberValue: 2.5 } } } },
          },
        },
        value: { structValue: { fields: { k: { listValue: { values: [{ numberValue: 1 }, { stringValue: 'two' }] } } } } },
        list: { values: [{ numberValue: 1 }, { stringValue: 'a' }, { nullValue: 0 }, { boolValue: true }] },
        wDouble: { value: 1.25 },
        wFloat: { value: 0.5 },
        wInt64: { value: '-5' },
        wUint64: { value: '18446744073709551615' },
        wInt32: { value: -7 },
        wUint32: { value: 7 },
        wBool: { value: true },
        wString: { value: 'w' },
        wBytes: { value: bytes(9, 8) },
        // protobufjs' bundled any.proto is JSON with the original field name, so its property is type_url.
        any: { type_url: 'type.googleapis.com/common.v1.Money', value: money },
        fieldMask: { paths: ['a.b', 'c'] },
        timestamps: [{ seconds: '1' }, { seconds: '946684800', nanos: 500_000_000 }],
        durations: { x: { seconds: '1' }, y: { seconds: '-2', nanos: -500 } },
      },
    );
  });

  it('a wrapper holding its default value is an empty wrapper message on both sides', () => {
    const { ts } = roundTrip('WellKnown', { wInt32: 0, wString: '' }, { wInt32: { value: 0 }, wString: { value: '' } });
    expect(hex(ts)).toBe('5a00' + '7200');
    expect(kinds['WellKnown']!.decode(ts).wInt32).toBe(0);
  });

  it('a scalar Value, and wrappers holding non-default values each', () => {
    roundTrip('WellKnown', { value: 'hello', wBool: true, wInt32: 1 }, { value: { stringValue: 'hello' }, wBool: { value: true }, wInt32: { value: 1 } });
    roundTrip('WellKnown', { value: 42.5 }, { value: { numberValue: 42.5 } });
    roundTrip('WellKnown', { value: null }, { value: { nullValue: 0 } });
  });
});

describe('where the bytes differ (documented exceptions; both sides still read each other)', () => {
  it('map entries with a default key or value: protobufjs writes them, the generated code omits them', () => {
    const { ts, pb } = roundTrip(
      'Maps',
      { stringToString: { '': '' }, int32ToString: { 0: 'zero' }, boolToString: new Map([[false, '']]), stringToMoney: { k: {} } },
      { stringToString: { '': '' }, int32ToString: { 0: 'zero' }, boolToString: { false: '' }, stringToMoney: { k: {} } },
      { identical: false },
    );
    // Inside an entry both key and value are ordinary proto3 fields, so leaving them out is valid;
    // each side decodes the other's bytes (checked above), the generated bytes are just shorter.
    expect(ts.length).toBeLessThan(pb.length);
  });

  it('-0.0 in a double or float field: protobufjs writes it, the generated code drops it (the sign is lost)', () => {
    const pbType = root.lookupType('svrkit.kinds.Scalars');
    const pb = Uint8Array.from(pbType.encode(pbType.fromObject({ fDouble: -0, fFloat: -0 })).finish());
    expect(hex(pb)).toBe('090000000000000080' + '1500000080');
    // The generated decoder reads the sign back...
    const decoded = kinds['Scalars']!.decode(pb);
    expect(Object.is(decoded.fDouble, -0)).toBe(true);
    expect(Object.is(decoded.fFloat, -0)).toBe(true);
    // ...but its encoder treats -0 as the default value 0 and writes nothing, so the peer reads +0.
    const ts = kinds['Scalars']!.encode(decoded).finish();
    expect(ts.length).toBe(0);
    const back = pbType.decode(ts) as unknown as { fDouble: number };
    expect(Object.is(back.fDouble, 0)).toBe(true);
  });

  it('Timestamp as Date keeps milliseconds: nanoseconds below 1 ms are dropped on decode', () => {
    const pbType = root.lookupType('svrkit.kinds.WellKnown');
    const pb = pbType.encode(pbType.fromObject({ timestamp: { seconds: '1', nanos: 123_456_789 } })).finish();
    const decoded = kinds['WellKnown']!.decode(pb);
    expect(decoded.timestamp).toEqual(new Date(1123));
    const again = pbType.toObject(pbType.decode(kinds['WellKnown']!.encode(decoded).finish()), conv);
    expect(again['timestamp']).toEqual({ seconds: '1', nanos: 123_000_000 });
  });

  it('a Date before 1970 with a sub-second part is written with negative nanos (ts-proto), read back as the same instant', () => {
    const instant = new Date(-1500); // 1969-12-31T23:59:58.500Z
    const pbType = root.lookupType('svrkit.kinds.WellKnown');
    const ts = kinds['WellKnown']!.encode(kinds['WellKnown']!.fromPartial({ timestamp: instant })).finish();
    // Canonical form is {seconds: -2, nanos: 500000000}; ts-proto writes {seconds: -1, nanos: -500000000}.
    expect(pbType.toObject(pbType.decode(ts), conv)['timestamp']).toEqual({ seconds: '-1', nanos: -500_000_000 });
    // The canonical encoding decodes to the same Date, and so does ts-proto's own.
    const canonical = pbType.encode(pbType.fromObject({ timestamp: { seconds: '-2', nanos: 500_000_000 } })).finish();
    expect(kinds['WellKnown']!.decode(canonical).timestamp).toEqual(instant);
    expect(kinds['WellKnown']!.decode(ts).timestamp).toEqual(instant);
  });

  it('decoded bytes fields are views of the input buffer, not copies (@bufbuild/protobuf BinaryReader)', () => {
    const input = Uint8Array.from(kinds['Scalars']!.encode(kinds['Scalars']!.fromPartial({ fBytes: bytes(1, 2, 3) })).finish());
    const decoded = kinds['Scalars']!.decode(input);
    expect(decoded.fBytes.buffer).toBe(input.buffer);
    input[input.length - 1] = 9; // so whoever reuses a receive buffer must copy first
    expect([...decoded.fBytes]).toEqual([1, 2, 9]);
  });
});
