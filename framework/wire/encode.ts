/**
 * Encoding of messages a handler returned or yielded, which may be deep-partials: fields left out
 * encode as their proto3 defaults, as connect-es and nice-grpc handlers allow.
 *
 * Why not just `type.encode(value)`, or `encode` and `fromPartial` when it throws? ts-proto's
 * `encode` takes complete messages only and does not check types. Given a partial, it throws for
 * some fields but writes wrong bytes for others without a word: a missing string field is sent as
 * the text `"undefined"`, a missing double as NaN, a `null` string as `"null"`, an object given for
 * a string as `"[object Object]"`. So every value is checked first, against a *plan* of its message
 * type: for each field, the JavaScript value ts-proto's codec expects there.
 *
 * - The check reads the value and allocates nothing (but for iterating a `Map` field); it is
 *   compiled once per message type into a function that reads each field by name, a few ns a
 *   field. A complete, well-typed message (the common case) is then encoded as it is: one check,
 *   one encode, no `fromPartial`.
 * - A value with fields missing (`undefined` or `null`), or holding a form that `fromPartial`
 *   converts (an int64 given as a number or a string), goes through `fromPartial`, which fills the
 *   proto3 defaults, then `encode`.
 * - A value that cannot be encoded fails with an {@link EncodeError} that names the message type,
 *   the field path and what was expected against what was found.
 * - A oneof is one property, as `svrkit gen` has ts-proto generate it (`oneof=unions-value`):
 *   `undefined` (no member set) or `{ $case: 'member', value }`, whose value is checked as the
 *   member's type (a partial message is completed like any other). A `$case` that names no member,
 *   or a member without its value, is refused: ts-proto's `encode` and `fromPartial` would drop
 *   such a oneof without a word. A member of a well-known type that ts-proto maps to a plain value
 *   holds that value: a wrapper (`google.protobuf.BoolValue`, ...) its unwrapped scalar, which may
 *   also be `undefined` (the type allows it: the member is sent with the wrapper empty, which
 *   decodes as `false`, `''`, `0n`, ...), a `Timestamp` a valid `Date`, a `Struct` a plain object,
 *   a `ListValue` an array, a `FieldMask` an array of strings (these three may be `undefined` too:
 *   sent empty), a `Value` anything (`null` and `undefined` too). A member whose value cannot be
 *   planned (a form the generated codec does not show) leaves that value unchecked, not the oneof:
 *   its `$case` is still checked, and its value must be present unless its generated type allows
 *   `undefined`. The `oneof=unions` form (`{ $case: 'member', member: value }`) is checked the same
 *   way, and ts-proto's default form (an optional property per member) for at most one member set.
 *
 * Plans come from the message descriptors (FileDescriptorProtos) of the service, which the server
 * hands over once per service with {@link registerDescriptors}; they are built on first use of a
 * message type and cached by codec object. Without descriptors for a type, the plan knows only the
 * top-level fields (from the defaults `fromPartial({})` returns): they are checked the same way, and
 * a value that sets any nested message goes through `fromPartial` (safe; an allocation more), with
 * errors inside it reported without a field path.
 *
 * The plan follows what ts-proto's code does with the options `svrkit gen` uses (`forceLong=bigint`
 * among them). It checks each field against the defaults and conversions the generated codec shows,
 * so that a project that changes ts-proto options gets fields left unchecked, never a valid value refused.
 */
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { create, createFileRegistry, fromBinary, ScalarType, type DescField, type DescMessage, type DescOneof, type FileRegistry } from '@bufbuild/protobuf';
import { base64Decode } from '@bufbuild/protobuf/wire';
import { FeatureSet_FieldPresence, FileDescriptorProtoSchema, FileDescriptorSetSchema, isWrapperDesc } from '@bufbuild/protobuf/wkt';
import type { MessageType } from './definition.js';

/** A value that cannot be encoded as the message type it should be. */
export class EncodeError extends Error {
  /**
   * @param typeName - fully-qualified message type, e.g. `'notes.v1.Note'`.
   * @param reason - the whole message: type, field path and what was wrong, e.g.
   *   `'notes.v1.Note.revision: expected int64 (a bigint, or an integer number or string, from -2^63 to 2^63-1), got string "abc"'`.
   * @param path - the field path inside the message as written in JavaScript, e.g. `'.items[2].name'`
   *   (`''` for the message itself); `undefined` when the codec failed where no check could point.
   */
  constructor(
    readonly typeName: string,
    reason: string,
    readonly path?: string,
  ) {
    super(reason);
    this.name = 'EncodeError';
  }
}

/**
 * Encodes a complete or deep-partial message.
 *
 * The value is checked against its type's plan first (see the module comment); the check allocates
 * nothing. A complete message is encoded as it is; one with fields missing or in a convertible form
 * (int64 as a number or a decimal string) is completed with `fromPartial` first. `undefined` or
 * `null` encodes as the message with every field at its default.
 * @param type - the message codec (a ts-proto generated `MessageFns`).
 * @param typeName - the fully-qualified type name, e.g. `'helloworld.HelloReply'`; it names the type in
 *   errors, and finds its descriptor among those given to {@link registerDescriptors}.
 * @param value - a message or a deep-partial of one.
 * @returns the protobuf bytes.
 * @throws EncodeError when the value cannot be encoded: its message is
 *   `<type><path>: expected <what>, got <kind and value>` (e.g.
 *   `notes.v1.Note.tags[1]: expected string, got number 7`, or for a oneof member
 *   `notes.v1.Op.kind.value: expected string, got number 7`), `<type><path>: unknown $case 'x'
 *   (oneof <name>: 'a' or 'b')`, `<type><path>: oneof <name> has more than one field set: a, b` (with
 *   ts-proto's per-member form of oneofs), or, when the codec itself fails somewhere no check
 *   covers, `<type>: <its error>`.
 */
export function encodeMessage<T>(type: MessageType<T>, typeName: string, value: unknown): Uint8Array {
  const plan = planOf(type, typeName);
  const verdict = value === undefined || value === null ? FILL : isMessageObject(value) ? plan.check(value) : BAD;
  if (verdict === OK) {
    try {
      return encodeComplete(type, value as T);
    } catch {
      // A part no plan covers (a well-known type given partially, say) needs its defaults.
    }
  } else if (verdict === BAD) {
    const err = explain(plan, typeName, value);
    if (err !== undefined) throw err;
  }
  try {
    const full: unknown = type.fromPartial(value ?? {});
    if (plan.restores && isMessageObject(value) && isMessageObject(full)) restoreMembers(plan, value, full);
    return encodeComplete(type, full as T);
  } catch (err) {
    throw explain(plan, typeName, value) ?? new EncodeError(typeName, `${typeName}: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/**
 * The writer every encode in this process shares. ts-proto's `encode(message, writer?)` makes a
 * new `BinaryWriter` per message when given none, and that allocation costs several times the
 * encoding itself for small messages; `finish()` returns a copy and resets the writer for reuse.
 */
let sharedWriter = new BinaryWriter();

/**
 * Encodes a complete message (as its codec's `encode` would) through the shared writer.
 * @param type - the codec; ts-proto codecs take the writer as `encode`'s second argument (others
 *   may ignore it).
 * @param message - a complete message (see `encodeMessage` for partial ones).
 * @returns the protobuf bytes (a copy the caller owns).
 * @throws whatever the codec throws (the shared writer is replaced then, since a failed encode
 *   leaves it mid-message).
 */
export function encodeComplete<T>(type: MessageType<T>, message: T): Uint8Array {
  try {
    return (type.encode as (m: T, w: BinaryWriter) => { finish(): Uint8Array })(message, sharedWriter).finish();
  } catch (err) {
    sharedWriter = new BinaryWriter();
    throw err;
  }
}

/**
 * Makes the message descriptors of a service known to {@link encodeMessage}, so that it checks
 * nested messages too and names the field path of a bad value at any depth. Meant for the server,
 * once per service it registers, with its `ServiceDefinition.files`; calling it again with the same
 * array does nothing. Nothing is decoded until a type of these files is first encoded; plans built
 * before without descriptors are rebuilt then. Process-wide: descriptors describe types, not servers.
 * @param files - base64 serialized `google.protobuf.FileDescriptorProto`s, imports first (what
 *   `ServiceDefinition.files` holds). Files that cannot be decoded are ignored (their types are then
 *   checked at the top level only).
 */
export function registerDescriptors(files: readonly string[]): void {
  if (seenFiles.has(files)) return;
  seenFiles.add(files);
  pendingFiles.push(files);
  generation++;
}

// ---------------------------------------------------------------------------------------------
// Verdicts, value kinds and field shapes. Numbers, so that the check compares small integers.

/** The value can be encoded as it is. */
const OK = 0;
/** The value needs `fromPartial` first: a field is missing or in a form `fromPartial` converts. */
const FILL = 1;
/** The value cannot be encoded. */
const BAD = 2;

/**
 * Not checked: a representation the plan does not know (e.g. a list of Timestamps mapped to Dates),
 * or any value (a `google.protobuf.Value` member).
 */
const K_ANY = 0;
const K_STRING = 1;
const K_BOOL = 2;
/** int32, sint32, sfixed32 and enums: an integer number in int32 range. */
const K_INT32 = 3;
/** uint32, fixed32: an integer number in uint32 range. */
const K_UINT32 = 4;
const K_DOUBLE = 5;
const K_FLOAT = 6;
/** int64, sint64, sfixed64: a bigint, or an integer number or string (converted by fromPartial). */
const K_INT64 = 7;
/** uint64, fixed64. */
const K_UINT64 = 8;
const K_BYTES = 9;
const K_MESSAGE = 10;
/** Plans without descriptors: some number. */
const K_NUMBER = 11;
/** Plans without descriptors: a 64-bit integer of unknown signedness. */
const K_LONG = 12;
/** Plans without descriptors: unknown; an object (maybe a partial message) needs fromPartial. */
const K_UNKNOWN = 13;
/** A valid `Date` (`google.protobuf.Timestamp` with ts-proto's `useDate=true`). */
const K_DATE = 14;
/** A plain object (`google.protobuf.Struct`). */
const K_OBJECT = 15;
/** An array (`google.protobuf.ListValue`). */
const K_ARRAY = 16;
/** An array of strings (`google.protobuf.FieldMask`). */
const K_STRINGS = 17;

/** Implicit presence: missing means default (fill). */
const S_SINGULAR = 0;
/** Explicit presence (message, oneof member, proto3 `optional`): `undefined` means unset. */
const S_OPTIONAL = 1;
/** `repeated`: an array. */
const S_LIST = 2;
/** `map` as a plain object (string-keyed). */
const S_OBJECT_MAP = 3;
/** `map` as a `Map` (ts-proto's form for 64-bit keys). */
const S_MAP = 4;
/**
 * A oneof as one property (ts-proto's `oneof=unions-value`, which `svrkit gen` uses, or
 * `oneof=unions`): `undefined` (no member set) or `{ $case: 'member', value }` (`{ $case: 'member',
 * member }` with `unions`). The `FieldPlan` is the oneof's; `cases` has its members.
 */
const S_UNION = 5;

/** A oneof member's value that is missing (undefined or null) is refused: the member needs its value. */
const M_REQUIRED = 0;
/**
 * A missing member value stands for the member's type empty (a wrapper, `Struct`, `ListValue`,
 * `FieldMask`, whose generated type allows `undefined`): the member is sent with `CasePlan.empty`.
 * ts-proto's `encode` would write some of them wrong (`"undefined"`, NaN) or throw, and
 * `fromPartial` would drop the member, so the verdict is FILL and {@link restoreMembers} puts the
 * member back after `fromPartial`.
 */
const M_EMPTY = 1;
/**
 * A missing member value is sent as it is (`google.protobuf.Value`, where `null` is a JSON null, or
 * a member whose form the plan does not know but whose type allows `undefined`); `fromPartial` would
 * drop the member, so {@link restoreMembers} puts it back after `fromPartial`.
 */
const M_AS_IS = 2;

const FLOAT32_MAX = 3.4028234663852886e38;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const UINT64_MAX = 2n ** 64n - 1n;
const hasOwn = Object.prototype.hasOwnProperty;

/** What one field of a message must hold. */
interface FieldPlan {
  /** The property name in ts-proto's message objects, e.g. `'fooBar'` for `foo_bar`. */
  readonly key: string;
  readonly shape: number;
  /** Kind of the value, or of each element or map value. */
  kind: number;
  /** The plan of the (element or map value) message type, for `K_MESSAGE`. */
  readonly message: MessagePlan | undefined;
  /** What the value should be, for errors: `'string'`, `'int64 (a bigint, ...)'`, ... */
  readonly expected: string;
  /** The (element or map value) type's .proto name, for errors: `'int64'`, `'pkg.Child'`; `''` when unknown. */
  readonly typeText: string;
  /** For `S_MAP`: the kind of the keys (checked exactly: fromPartial does not convert keys). */
  keyKind: number;
  /** For maps: the key type's name, for errors. */
  readonly keyName: string;
  /** For `S_UNION`: the oneof's members, in declaration order. */
  readonly cases?: readonly CasePlan[];
}

/** One member of a oneof held as a union (`S_UNION`). */
interface CasePlan {
  /** Its `$case`: the member's property name, e.g. `'cText'` for `c_text`. */
  readonly name: string;
  /** The property of the union object holding the member's value: `'value'` (`unions-value`) or `name` (`unions`). */
  readonly valueKey: string;
  /** What the value must hold when present (neither undefined nor null). `key` is the value key. */
  readonly value: FieldPlan;
  /** What a missing value means: `M_REQUIRED`, `M_EMPTY` or `M_AS_IS`. */
  readonly missing: number;
  /** For `M_EMPTY`: the value sent in place of a missing one (e.g. `false` for a `BoolValue`). */
  readonly empty: unknown;
}

/** A oneof group whose members are separate properties (ts-proto's default `oneof` option): at most one may be set. */
interface OneofPlan {
  readonly name: string;
  readonly members: readonly FieldPlan[];
}

/** What a message value must hold. */
interface MessagePlan {
  readonly typeName: string;
  readonly fields: FieldPlan[];
  readonly oneofs: OneofPlan[];
  /** Built without descriptors (top-level fields only); rebuilt once new descriptors are registered. */
  readonly shallow: boolean;
  /** {@link generation} when built. */
  readonly generation: number;
  /**
   * Whether a value of this type may hold a oneof member that `fromPartial` drops but that is
   * sent (a missing value that is not `M_REQUIRED`), here or in a message it reaches; see
   * {@link restoreMembers}.
   */
  restores: boolean;
  /**
   * The hot-path check: the verdict for a message object, without explanation. Compiled from the
   * plan (see {@link compilePlans}); until then, the interpreting {@link checkMessage}.
   */
  check: (v: Record<string, unknown>) => number;
}

// ---------------------------------------------------------------------------------------------
// The check (hot path: no allocation unless `rep` is given, which happens only to explain an error).

/** Where an error explanation collects the reason and, while unwinding, the path. */
interface Report {
  reason: string;
  path: string;
}

function isMessageObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x) && !ArrayBuffer.isView(x) && !(x instanceof Map) && !(x instanceof Date);
}

function checkMessage(plan: MessagePlan, v: Record<string, unknown>, rep: Report | undefined): number {
  let verdict = OK;
  const fields = plan.fields;
  for (let i = 0; i < fields.length; i++) {
    const f = fields[i]!;
    const r = checkField(f, v[f.key], rep);
    if (r === BAD) {
      if (rep !== undefined) rep.path = '.' + f.key + rep.path;
      return BAD;
    }
    if (r > verdict) verdict = r;
  }
  const oneofs = plan.oneofs;
  for (let i = 0; i < oneofs.length; i++) {
    const members = oneofs[i]!.members;
    let set = 0;
    for (let j = 0; j < members.length; j++) {
      const x = v[members[j]!.key];
      if (x !== undefined && x !== null) set++;
    }
    if (set > 1) {
      if (rep !== undefined) {
        const names = members.filter((m) => v[m.key] !== undefined && v[m.key] !== null).map((m) => m.key);
        rep.reason = `oneof ${oneofs[i]!.name} has more than one field set: ${names.join(', ')}`;
      }
      return BAD;
    }
  }
  return verdict;
}

function checkField(f: FieldPlan, x: unknown, rep: Report | undefined): number {
  switch (f.shape) {
    case S_SINGULAR:
      return x === undefined || x === null ? FILL : checkValue(f, x, rep);
    case S_OPTIONAL:
      return x === undefined ? OK : x === null ? FILL : checkValue(f, x, rep);
    case S_UNION:
      return x === undefined ? OK : x === null ? FILL : checkUnion(f, x, rep);
    case S_LIST: {
      if (x === undefined || x === null) return FILL;
      if (!Array.isArray(x)) return wrong(f.typeText === '' ? 'an array' : `repeated ${f.typeText} (an array)`, x, rep);
      let verdict = OK;
      for (let i = 0; i < x.length; i++) {
        const e: unknown = x[i];
        const r = e === undefined || e === null ? wrong(f.expected, e, rep) : checkValue(f, e, rep);
        if (r === BAD) {
          if (rep !== undefined) rep.path = `[${i}]` + rep.path;
          return BAD;
        }
        if (r > verdict) verdict = r;
      }
      return verdict;
    }
    case S_OBJECT_MAP: {
      if (x === undefined || x === null) return FILL;
      if (!isMessageObject(x)) return wrong(`${mapText(f)} (a plain object)`, x, rep);
      let verdict = OK;
      for (const k in x) {
        if (!hasOwn.call(x, k)) continue;
        const e = x[k];
        // fromPartial drops undefined values; null it would convert to "null", 0n or throw on.
        const r = e === undefined ? FILL : e === null ? wrong(f.expected, e, rep) : checkValue(f, e, rep);
        if (r === BAD) {
          if (rep !== undefined) rep.path = `[${JSON.stringify(k)}]` + rep.path;
          return BAD;
        }
        if (r > verdict) verdict = r;
      }
      return verdict;
    }
    case S_MAP: {
      if (x === undefined || x === null) return FILL;
      if (!(x instanceof Map)) return wrong(`${mapText(f)} (a Map)`, x, rep);
      if (x.size === 0) return OK;
      let verdict = OK;
      for (const [k, e] of x as Map<unknown, unknown>) {
        let r: number;
        if (!keyFits(f.keyKind, k)) r = wrong(`a map key of type ${f.keyName}${keyForm(f.keyKind)}`, k, rep);
        else r = e === undefined ? FILL : e === null ? wrong(f.expected, e, rep) : checkValue(f, e, rep);
        if (r === BAD) {
          if (rep !== undefined) rep.path = `[${mapKeyText(k)}]` + rep.path;
          return BAD;
        }
        if (r > verdict) verdict = r;
      }
      return verdict;
    }
    default:
      return OK;
  }
}

/**
 * Checks a present (not undefined, not null) oneof union: an object whose `$case` names a member,
 * with that member's value of its type (a partial message is fine: fill) and present, unless the
 * member's type allows it missing (`CasePlan.missing`).
 */
function checkUnion(f: FieldPlan, x: unknown, rep: Report | undefined): number {
  if (!isMessageObject(x)) return wrong(f.expected, x, rep);
  const c = x['$case'];
  const cases = f.cases!;
  for (let i = 0; i < cases.length; i++) {
    const m = cases[i]!;
    if (m.name !== c) continue;
    const e = x[m.valueKey];
    let r: number;
    if (e !== undefined && e !== null) r = checkValue(m.value, e, rep);
    else r = m.missing === M_REQUIRED ? wrong(m.value.expected, e, rep) : m.missing === M_EMPTY ? FILL : OK;
    if (r === BAD && rep !== undefined) rep.path = '.' + m.valueKey + rep.path;
    return r;
  }
  if (rep !== undefined) {
    const names = cases.map((m) => `'${m.name}'`);
    const list = names.length === 1 ? names[0]! : `${names.slice(0, -1).join(', ')} or ${names[names.length - 1]!}`;
    if (typeof c === 'string') {
      rep.reason = `unknown $case ${describeCase(c)} (oneof ${f.typeText}: ${list})`;
    } else {
      wrong(`$case ${list}`, c, rep);
      rep.path = '.$case';
    }
  }
  return BAD;
}

/** A `$case` string for errors: `'foo'` (cut when long). */
function describeCase(c: string): string {
  const s = c.length > 40 ? c.slice(0, 40) + '...' : c;
  return /^[\w$]*$/.test(s) ? `'${s}'` : JSON.stringify(s);
}

/** Checks a present (not undefined, not null) value of kind `f.kind`. */
function checkValue(f: FieldPlan, x: unknown, rep: Report | undefined): number {
  switch (f.kind) {
    case K_STRING:
      if (typeof x === 'string') return OK;
      break;
    case K_BOOL:
      if (typeof x === 'boolean') return OK;
      break;
    case K_INT32:
      if (typeof x === 'number' && (x | 0) === x) return OK;
      break;
    case K_UINT32:
      if (typeof x === 'number' && x >>> 0 === x) return OK;
      break;
    case K_DOUBLE:
    case K_NUMBER:
      if (typeof x === 'number') return OK;
      break;
    case K_FLOAT:
      // NaN and the infinities are floats; a finite value beyond float range is not.
      if (typeof x === 'number' && !(x > FLOAT32_MAX || x < -FLOAT32_MAX) || x === Infinity || x === -Infinity) return OK;
      break;
    case K_INT64:
    case K_UINT64:
    case K_LONG: {
      // A bigint out of range makes encode throw; only an explanation needs the range checked here.
      if (typeof x === 'bigint' && rep === undefined) return OK;
      const r = checkLong(f.kind, x);
      if (r !== BAD) return r;
      break;
    }
    case K_BYTES:
      if (x instanceof Uint8Array) return OK;
      break;
    case K_MESSAGE:
      if (isMessageObject(x)) return checkMessage(f.message!, x, rep);
      break;
    case K_DATE:
      // An invalid Date (NaN time) makes ts-proto's toTimestamp throw.
      if (x instanceof Date && x.getTime() === x.getTime()) return OK;
      break;
    case K_OBJECT:
      if (isMessageObject(x)) return OK;
      break;
    case K_ARRAY:
      if (Array.isArray(x)) return OK;
      break;
    case K_STRINGS: {
      if (!Array.isArray(x)) break;
      for (let i = 0; i < x.length; i++) {
        const e: unknown = x[i];
        if (typeof e === 'string') continue;
        if (rep !== undefined) {
          wrong('string', e, rep);
          rep.path = `[${i}]`;
        }
        return BAD;
      }
      return OK;
    }
    case K_UNKNOWN:
      // Maybe a partial message: fromPartial completes it (a Date is a Timestamp, left as it is).
      return typeof x === 'object' && !(x instanceof Date) && !ArrayBuffer.isView(x) ? FILL : OK;
    default:
      return OK;
  }
  return wrong(f.expected, x, rep);
}

/** A 64-bit integer: a bigint in range is OK; an integer number or string in range needs fromPartial. */
function checkLong(kind: number, x: unknown): number {
  let b: bigint;
  let verdict = OK;
  if (typeof x === 'bigint') {
    b = x;
  } else if (typeof x === 'number') {
    if (!Number.isInteger(x)) return BAD;
    if (x < -(2 ** 63) || x >= 2 ** 64) return BAD;
    b = BigInt(x);
    verdict = FILL;
  } else if (typeof x === 'string') {
    try {
      b = BigInt(x); // what fromPartial does with it
    } catch {
      return BAD;
    }
    verdict = FILL;
  } else {
    return BAD;
  }
  const min = kind === K_UINT64 ? 0n : INT64_MIN;
  const max = kind === K_INT64 ? INT64_MAX : UINT64_MAX;
  return b >= min && b <= max ? verdict : BAD;
}

/** Whether `k` is a key of the given kind as ts-proto's `Map` fields hold them (not converted). */
function keyFits(kind: number, k: unknown): boolean {
  switch (kind) {
    case K_STRING:
      return typeof k === 'string';
    case K_BOOL:
      return typeof k === 'boolean';
    case K_INT32:
      return typeof k === 'number' && (k | 0) === k;
    case K_UINT32:
      return typeof k === 'number' && k >>> 0 === k;
    case K_INT64:
      return typeof k === 'bigint' && k >= INT64_MIN && k <= INT64_MAX;
    case K_UINT64:
      return typeof k === 'bigint' && k >= 0n && k <= UINT64_MAX;
    default:
      return true;
  }
}

function keyForm(kind: number): string {
  switch (kind) {
    case K_STRING:
      return ' (a string)';
    case K_BOOL:
      return ' (a boolean)';
    case K_INT32:
    case K_UINT32:
      return ' (an integer number)';
    case K_INT64:
    case K_UINT64:
      return ' (a bigint)';
    default:
      return '';
  }
}

function mapText(f: FieldPlan): string {
  return f.keyName === '' || f.typeText === '' ? 'a map' : `map<${f.keyName}, ${f.typeText}>`;
}

function mapKeyText(k: unknown): string {
  if (typeof k === 'string') return JSON.stringify(k);
  if (typeof k === 'bigint' || typeof k === 'number' || typeof k === 'boolean') return String(k);
  return describe(k);
}

/** Records `expected X, got Y` (when explaining) and returns BAD. */
function wrong(expected: string, x: unknown, rep: Report | undefined): number {
  if (rep !== undefined) rep.reason = `expected ${expected}, got ${describe(x)}`;
  return BAD;
}

/** A value's type and, for primitives, the value: `number 42`, `string "abc"`, `Uint8Array`, `null`. */
function describe(x: unknown): string {
  switch (typeof x) {
    case 'string':
      return `string ${JSON.stringify(x.length > 40 ? x.slice(0, 40) + '...' : x)}`;
    case 'number':
    case 'boolean':
      return `${typeof x} ${String(x)}`;
    case 'bigint':
      return `bigint ${x}n`;
    case 'undefined':
    case 'function':
    case 'symbol':
      return typeof x;
  }
  if (x === null) return 'null';
  if (Array.isArray(x)) return `array (length ${x.length})`;
  if (x instanceof Date && x.getTime() !== x.getTime()) return 'invalid Date';
  const ctor = (Object.getPrototypeOf(x) as { constructor?: { name?: unknown } } | null)?.constructor;
  return typeof ctor?.name === 'string' && ctor.name !== '' && ctor.name !== 'Object' ? ctor.name : 'object';
}

/**
 * Puts back into `made` (what `fromPartial` made of `given`, objects of its own) the oneof members
 * of `given` that `fromPartial` dropped but that are to be sent: a member whose value is missing
 * where its type allows that (`M_EMPTY`: sent with its type's empty value; `M_AS_IS`: as given).
 * Walks only where the plans reach such a member (`MessagePlan.restores`).
 */
function restoreMembers(plan: MessagePlan, given: Record<string, unknown>, made: Record<string, unknown>): void {
  for (const f of plan.fields) {
    const x = given[f.key];
    if (x === undefined || x === null) continue;
    const y = made[f.key];
    if (f.shape === S_UNION) {
      if (!isMessageObject(x)) continue;
      const m = f.cases!.find((c) => c.name === x['$case']);
      if (m === undefined) continue;
      const e = x[m.valueKey];
      if (e === undefined || e === null) {
        if (m.missing !== M_REQUIRED) made[f.key] = { $case: m.name, [m.valueKey]: m.missing === M_EMPTY ? m.empty : e };
      } else if (m.value.message?.restores === true && isMessageObject(e) && isMessageObject(y) && y['$case'] === m.name) {
        const out = y[m.valueKey];
        if (isMessageObject(out)) restoreMembers(m.value.message, e, out);
      }
      continue;
    }
    const nested = f.message;
    if (nested === undefined || !nested.restores) continue;
    const pair = (e: unknown, out: unknown): void => {
      if (isMessageObject(e) && isMessageObject(out)) restoreMembers(nested, e, out);
    };
    switch (f.shape) {
      case S_SINGULAR:
      case S_OPTIONAL:
        pair(x, y);
        break;
      case S_LIST:
        if (Array.isArray(x) && Array.isArray(y)) for (let i = 0; i < x.length; i++) pair(x[i], y[i]);
        break;
      case S_OBJECT_MAP:
        if (isMessageObject(x) && isMessageObject(y)) for (const k in x) if (hasOwn.call(x, k)) pair(x[k], y[k]);
        break;
      case S_MAP:
        if (x instanceof Map && y instanceof Map) for (const [k, e] of x as Map<unknown, unknown>) pair(e, y.get(k));
        break;
    }
  }
}

/**
 * The EncodeError that says what is wrong with `value` and where (the check run again, with a
 * report), or undefined when the check finds nothing wrong.
 */
function explain(plan: MessagePlan, typeName: string, value: unknown): EncodeError | undefined {
  const rep: Report = { reason: '', path: '' };
  if (value !== undefined && value !== null && !isMessageObject(value)) {
    wrong(`message ${typeName} (an object)`, value, rep);
  } else if (value !== undefined && value !== null) {
    checkMessage(plan, value, rep);
  }
  return rep.reason === '' ? undefined : new EncodeError(typeName, `${typeName}${rep.path}: ${rep.reason}`, rep.path);
}

// ---------------------------------------------------------------------------------------------
// Descriptors and plans (built once per message type, off the hot path).

/** Bumped whenever new descriptors arrive; plans built without descriptors are rebuilt then. */
let generation = 0;
const seenFiles = new WeakSet<readonly string[]>();
const pendingFiles: (readonly string[])[] = [];
const registries: FileRegistry[] = [];
const plans = new WeakMap<object, MessagePlan>();

function planOf(type: MessageType<unknown>, typeName: string): MessagePlan {
  const plan = plans.get(type);
  if (plan !== undefined && (!plan.shallow || plan.generation === generation)) return plan;
  const built = buildPlan(type, typeName);
  markRestores(built);
  try {
    compilePlans(built);
  } catch {
    // The interpreting check stays: slower, same verdicts.
  }
  plans.set(type, built);
  return built;
}

function newPlan(typeName: string, fields: FieldPlan[], shallow: boolean): MessagePlan {
  const plan: MessagePlan = { typeName, fields, oneofs: [], shallow, generation, restores: false, check: (v) => checkMessage(plan, v, undefined) };
  return plan;
}

/** `root` and every message plan it reaches (through fields, elements, map values and oneof members). */
function reachablePlans(root: MessagePlan): MessagePlan[] {
  const all: MessagePlan[] = [];
  const visit = (p: MessagePlan): void => {
    if (all.includes(p)) return;
    all.push(p);
    for (const f of p.fields) {
      if (f.message !== undefined) visit(f.message);
      if (f.cases !== undefined) for (const c of f.cases) if (c.value.message !== undefined) visit(c.value.message);
    }
  };
  visit(root);
  return all;
}

/** Sets `restores` on `root` and the plans it reaches (see {@link restoreMembers}). */
function markRestores(root: MessagePlan): void {
  const all = reachablePlans(root);
  const children = (p: MessagePlan): MessagePlan[] =>
    p.fields.flatMap((f) => [...(f.message === undefined ? [] : [f.message]), ...(f.cases ?? []).flatMap((c) => (c.value.message === undefined ? [] : [c.value.message]))]);
  for (const p of all) p.restores = p.fields.some((f) => f.cases?.some((c) => c.missing !== M_REQUIRED) === true);
  for (let changed = true; changed; ) {
    changed = false;
    for (const p of all) {
      if (!p.restores && children(p).some((c) => c.restores)) {
        p.restores = true;
        changed = true;
      }
    }
  }
}

/**
 * Compiles the hot-path check of `root` and of every message plan it reaches: one function per
 * message type whose property reads name the fields literally, so that V8 keeps one inline cache
 * per field (reading fields by a variable key goes megamorphic, about 20 ns a field). The compiled
 * function gives the same verdicts as {@link checkMessage} without a report; `Map` fields and the
 * explanation of a refused value stay with the interpreter.
 */
function compilePlans(root: MessagePlan): void {
  const all = reachablePlans(root);
  const compiled = all.map((p) => compileCheck(p, all));
  all.forEach((p, i) => (p.check = compiled[i]!));
}

/** The source of one message's check, made into a function; nested types are called through `plans[i].check`. */
function compileCheck(plan: MessagePlan, all: readonly MessagePlan[]): (v: Record<string, unknown>) => number {
  const lines: string[] = ['let vd = 0, x, e, r;'];
  plan.fields.forEach((f, i) => {
    const value = (target: string): string[] => valueCode(f, target, all);
    lines.push(`x = v[${JSON.stringify(f.key)}];`);
    switch (f.shape) {
      case S_SINGULAR:
        lines.push('if (x === undefined || x === null) vd = 1;', 'else {', ...value('x'), '}');
        break;
      case S_OPTIONAL:
        lines.push('if (x === null) vd = 1;', 'else if (x !== undefined) {', ...value('x'), '}');
        break;
      case S_UNION:
        lines.push('if (x === null) vd = 1;', 'else if (x !== undefined) {', 'if (!isMessageObject(x)) return 2;', 'switch (x.$case) {');
        for (const c of f.cases!) {
          const missing = c.missing === M_REQUIRED ? 'return 2;' : c.missing === M_EMPTY ? '{ vd = 1; break; }' : 'break;';
          lines.push(
            `case ${JSON.stringify(c.name)}:`,
            `e = x[${JSON.stringify(c.valueKey)}];`,
            `if (e === undefined || e === null) ${missing}`,
            ...valueCode(c.value, 'e', all),
            'break;',
          );
        }
        lines.push('default: return 2;', '}', '}');
        break;
      case S_LIST:
        lines.push(
          'if (x === undefined || x === null) vd = 1;',
          'else if (!Array.isArray(x)) return 2;',
          'else for (let i = 0; i < x.length; i++) {',
          'e = x[i];',
          'if (e === undefined || e === null) return 2;',
          ...value('e'),
          '}',
        );
        break;
      case S_OBJECT_MAP:
        lines.push(
          'if (x === undefined || x === null) vd = 1;',
          'else if (!isMessageObject(x)) return 2;',
          'else for (const k in x) {',
          'if (!hasOwn.call(x, k)) continue;',
          'e = x[k];',
          'if (e === undefined) { vd = 1; continue; }',
          'if (e === null) return 2;',
          ...value('e'),
          '}',
        );
        break;
      default:
        lines.push(`r = checkField(fields[${i}], x, undefined);`, 'if (r === 2) return 2;', 'if (r > vd) vd = r;');
    }
  });
  for (const o of plan.oneofs) {
    lines.push('r = 0;');
    for (const m of o.members) lines.push(`x = v[${JSON.stringify(m.key)}]; if (x !== undefined && x !== null) r++;`);
    lines.push('if (r > 1) return 2;');
  }
  lines.push('return vd;');
  const factory = new Function(
    'fields',
    'plans',
    'checkField',
    'checkLong',
    'isMessageObject',
    'hasOwn',
    `'use strict';\nreturn function check(v) {\n${lines.join('\n')}\n};`,
  ) as (...deps: unknown[]) => (v: Record<string, unknown>) => number;
  return factory(plan.fields, all, checkField, checkLong, isMessageObject, hasOwn);
}

/** Statements that check the present value in variable `t` for field `f`: `return 2`, or raise `vd`. */
function valueCode(f: FieldPlan, t: string, all: readonly MessagePlan[]): string[] {
  switch (f.kind) {
    case K_STRING:
      return [`if (typeof ${t} !== 'string') return 2;`];
    case K_BOOL:
      return [`if (typeof ${t} !== 'boolean') return 2;`];
    case K_INT32:
      return [`if (typeof ${t} !== 'number' || (${t} | 0) !== ${t}) return 2;`];
    case K_UINT32:
      return [`if (typeof ${t} !== 'number' || ${t} >>> 0 !== ${t}) return 2;`];
    case K_DOUBLE:
    case K_NUMBER:
      return [`if (typeof ${t} !== 'number') return 2;`];
    case K_FLOAT:
      return [
        `if (typeof ${t} !== 'number' || (${t} > ${FLOAT32_MAX} && ${t} !== Infinity) || (${t} < -${FLOAT32_MAX} && ${t} !== -Infinity)) return 2;`,
      ];
    case K_INT64:
    case K_UINT64:
    case K_LONG:
      return [`if (typeof ${t} !== 'bigint') { if (checkLong(${f.kind}, ${t}) === 2) return 2; vd = 1; }`];
    case K_BYTES:
      return [`if (!(${t} instanceof Uint8Array)) return 2;`];
    case K_MESSAGE:
      return [
        `if (!isMessageObject(${t})) return 2;`,
        `r = plans[${all.indexOf(f.message!)}].check(${t});`,
        'if (r === 2) return 2;',
        'if (r > vd) vd = r;',
      ];
    case K_UNKNOWN:
      return [`if (typeof ${t} === 'object' && !(${t} instanceof Date) && !ArrayBuffer.isView(${t})) vd = 1;`];
    case K_DATE:
      return [`if (!(${t} instanceof Date) || ${t}.getTime() !== ${t}.getTime()) return 2;`];
    case K_OBJECT:
      return [`if (!isMessageObject(${t})) return 2;`];
    case K_ARRAY:
      return [`if (!Array.isArray(${t})) return 2;`];
    case K_STRINGS:
      return [`if (!Array.isArray(${t})) return 2;`, `for (let j = 0; j < ${t}.length; j++) if (typeof ${t}[j] !== 'string') return 2;`];
    default:
      return [];
  }
}

/** The descriptor of `typeName` among the registered files, decoding pending ones as needed. */
function findMessage(typeName: string): DescMessage | undefined {
  for (const r of registries) {
    const m = r.getMessage(typeName);
    if (m !== undefined) return m;
  }
  while (pendingFiles.length > 0) {
    const files = pendingFiles.shift()!;
    let registry: FileRegistry;
    try {
      registry = createFileRegistry(
        create(FileDescriptorSetSchema, { file: files.map((b) => fromBinary(FileDescriptorProtoSchema, base64Decode(b))) }),
      );
    } catch {
      continue;
    }
    registries.push(registry);
    const m = registry.getMessage(typeName);
    if (m !== undefined) return m;
  }
  return undefined;
}

function buildPlan(type: MessageType<unknown>, typeName: string): MessagePlan {
  let defaults: unknown;
  try {
    defaults = type.fromPartial({});
  } catch {
    defaults = undefined;
  }
  if (!isMessageObject(defaults)) return newPlan(typeName, [], true);
  let desc: DescMessage | undefined;
  try {
    desc = findMessage(typeName);
  } catch {
    desc = undefined;
  }
  if (desc === undefined) return shallowPlan(typeName, defaults);
  try {
    return new PlanBuilder(type).build(desc, defaults);
  } catch {
    return shallowPlan(typeName, defaults);
  }
}

/** A plan from the defaults alone: top-level fields, kinds as the defaults show them. */
function shallowPlan(typeName: string, defaults: Record<string, unknown>): MessagePlan {
  const fields: FieldPlan[] = [];
  const field = (key: string, shape: number, kind: number, expected: string): FieldPlan => ({
    key,
    shape,
    kind,
    message: undefined,
    expected,
    typeText: '',
    keyKind: K_ANY,
    keyName: '',
  });
  for (const key of Object.keys(defaults)) {
    const d = defaults[key];
    if (typeof d === 'string') fields.push(field(key, S_SINGULAR, K_STRING, 'string'));
    else if (typeof d === 'boolean') fields.push(field(key, S_SINGULAR, K_BOOL, 'boolean'));
    else if (typeof d === 'number') fields.push(field(key, S_SINGULAR, K_NUMBER, 'number'));
    else if (typeof d === 'bigint') fields.push(field(key, S_SINGULAR, K_LONG, 'a 64-bit integer (a bigint, or an integer number or string)'));
    else if (d instanceof Uint8Array) fields.push(field(key, S_SINGULAR, K_BYTES, 'bytes (a Uint8Array)'));
    else if (Array.isArray(d)) fields.push(field(key, S_LIST, K_UNKNOWN, 'a value'));
    else if (d instanceof Map) fields.push(field(key, S_MAP, K_UNKNOWN, 'a value'));
    else if (d === undefined) fields.push(field(key, S_OPTIONAL, K_UNKNOWN, 'a value'));
    else if (isMessageObject(d) && Object.keys(d).length === 0) fields.push(field(key, S_OBJECT_MAP, K_UNKNOWN, 'a value'));
  }
  return newPlan(typeName, fields, true);
}

/**
 * Puts `v` where a value of the probed position goes in a partial of the root message, runs the
 * root's `fromPartial`, and returns what it made of it (see {@link PlanBuilder}).
 */
type Probe = (v: unknown) => unknown;

/**
 * Builds a message plan from descriptors. Each field's JavaScript key and form are confirmed
 * against what the generated `fromPartial` does: the defaults it fills in, and what it makes of a
 * sample value put at the field (`probe`). A nested message's defaults come the same way
 * (`fromPartial({ child: {} }).child`), and a field that `fromPartial` passes through untouched
 * (a well-known type mapped to a Date, a wrapper mapped to a primitive) is left unchecked. A oneof
 * member of such a type is planned as the plain value ts-proto keeps there, confirmed by what the
 * root's generated `encode` accepts (see {@link PlanBuilder.wellKnownMember}).
 */
class PlanBuilder {
  private readonly memo = new Map<DescMessage, MessagePlan>();
  private readonly enumFields: FieldPlan[] = [];
  private readonly longFields: FieldPlan[] = [];
  /** False once a field shows enums that are not numbers (ts-proto's `stringEnums`). */
  private enumsAreNumbers = true;
  /** False once a field shows 64-bit integers that are not bigints (another `forceLong`). */
  private longsAreBigints = true;
  /** What the root's `fromPartial` made in the last probe (see {@link PlanBuilder.encodes}). */
  private probed: unknown;
  /** The probe of the root message: its `fromPartial`. */
  private readonly root: Probe;

  /** @param type - the codec of the root message type. */
  constructor(private readonly type: MessageType<unknown>) {
    this.root = (v) => (this.probed = type.fromPartial(v));
  }

  build(desc: DescMessage, defaults: Record<string, unknown>): MessagePlan {
    const plan = this.message(desc, defaults, this.root);
    if (!this.enumsAreNumbers) for (const f of this.enumFields) f.kind = K_ANY;
    if (!this.longsAreBigints) {
      for (const f of this.longFields) {
        if (f.kind === K_INT64 || f.kind === K_UINT64) f.kind = K_ANY;
        if (f.keyKind === K_INT64 || f.keyKind === K_UINT64) f.keyKind = K_ANY;
      }
    }
    return plan;
  }

  private message(desc: DescMessage, defaults: Record<string, unknown>, probe: Probe): MessagePlan {
    const known = this.memo.get(desc);
    if (known !== undefined) return known;
    const plan = newPlan(desc.typeName, [], false);
    this.memo.set(desc, plan);
    const groups = new Map<string, FieldPlan[]>();
    for (const field of desc.fields) {
      let fp: FieldPlan | undefined;
      try {
        fp = this.field(field, defaults, probe);
      } catch {
        fp = undefined;
      }
      if (fp === undefined) continue;
      plan.fields.push(fp);
      if (field.oneof !== undefined) {
        const members = groups.get(field.oneof.name) ?? [];
        members.push(fp);
        groups.set(field.oneof.name, members);
      }
    }
    for (const [name, members] of groups) if (members.length > 1) plan.oneofs.push({ name, members });
    for (const oneof of desc.oneofs) {
      // Members as properties of their own (ts-proto's default oneof option): planned above.
      if (oneof.fields.some((f) => keyOf(f, defaults) !== undefined)) continue;
      let fp: FieldPlan | undefined;
      try {
        fp = this.union(oneof, defaults, probe);
      } catch {
        fp = undefined;
      }
      if (fp !== undefined) plan.fields.push(fp);
    }
    return plan;
  }

  /**
   * The plan of a oneof held as one property, `{ $case, value }` (`oneof=unions-value`) or
   * `{ $case, <member> }` (`oneof=unions`); undefined (the oneof left unchecked) when the defaults
   * have no such property or `fromPartial` does not keep a sample of every member.
   */
  private union(oneof: DescOneof, defaults: Record<string, unknown>, probe: Probe): FieldPlan | undefined {
    const key = [snakeToCamel(oneof.name), oneof.name, oneof.localName].find((k) => hasOwn.call(defaults, k));
    if (key === undefined || defaults[key] !== undefined) return undefined;
    const at: Probe = (v) => {
      const out = probe({ [key]: v });
      return isMessageObject(out) ? out[key] : undefined;
    };
    const cases: CasePlan[] = [];
    for (const field of oneof.fields) {
      // A member whose $case cannot be found (no sample kept) leaves the oneof unchecked: checking
      // it with a guessed $case could refuse a valid value.
      const c = this.member(field, at);
      if (c === undefined) return undefined;
      cases.push(c);
    }
    const form = cases.every((c) => c.valueKey === 'value') ? '{ $case, value }' : '{ $case, <member> }';
    return { key, shape: S_UNION, kind: K_ANY, message: undefined, expected: `oneof ${oneof.name} (an object ${form}, or undefined)`, typeText: oneof.name, keyKind: K_ANY, keyName: '', cases };
  }

  /**
   * The plan of one member of a union oneof: its `$case`, where its value goes, and what it must
   * hold; undefined when no sample value is kept by `fromPartial` under any candidate name. A value
   * that cannot be planned is left unchecked (its `$case` still is).
   */
  private member(field: DescField, at: Probe): CasePlan | undefined {
    if (field.fieldKind !== 'scalar' && field.fieldKind !== 'enum' && field.fieldKind !== 'message') return undefined;
    const names = [...new Set([field.jsonName, snakeToCamel(field.name), field.name, field.localName])];
    for (const sample of memberSamples(field)) {
      for (const name of names) {
        for (const valueKey of ['value', name]) {
          let out: unknown;
          try {
            out = at({ $case: name, [valueKey]: sample });
          } catch {
            continue; // e.g. BigInt({}) for an Int64Value
          }
          if (!isMessageObject(out) || out['$case'] !== name || out[valueKey] === undefined) continue;
          const value: Probe = (v) => {
            const o = at({ $case: name, [valueKey]: v });
            return isMessageObject(o) && o['$case'] === name ? o[valueKey] : undefined;
          };
          let planned: Pick<CasePlan, 'value' | 'missing' | 'empty'> | undefined;
          try {
            planned = this.memberValue(field, valueKey, value);
          } catch {
            planned = undefined;
          }
          if (planned === undefined) {
            const optional = field.fieldKind === 'message' && optionalMember(field.message);
            const expected = field.fieldKind === 'message' ? field.message.typeName : field.fieldKind === 'enum' ? `enum ${field.enum.typeName}` : scalarName(field.scalar);
            planned = { value: this.plan(valueKey, S_SINGULAR, K_ANY, '', expected, false, undefined), missing: optional ? M_AS_IS : M_REQUIRED, empty: undefined };
          }
          return { name, valueKey, ...planned };
        }
      }
    }
    return undefined;
  }

  /** What a member's value must hold (`value` probes it) and what a missing one means. */
  private memberValue(field: DescField, valueKey: string, value: Probe): Pick<CasePlan, 'value' | 'missing' | 'empty'> {
    if (field.fieldKind !== 'message') {
      const plan = this.element(valueKey, S_SINGULAR, field.fieldKind as 'scalar' | 'enum', field.scalar, field.enum?.typeName, undefined, value, K_ANY, '');
      return { value: plan!, missing: M_REQUIRED, empty: undefined };
    }
    const desc = field.message;
    let nested: MessagePlan | undefined;
    try {
      nested = this.nested(desc, value);
    } catch {
      nested = undefined; // fromPartial refused an object there (an Int64Value's BigInt({})): not a message
    }
    if (nested !== undefined) {
      const plan = this.plan(valueKey, S_SINGULAR, K_MESSAGE, desc.typeName, `message ${desc.typeName} (an object)`, false, nested);
      return { value: plan, missing: M_REQUIRED, empty: undefined };
    }
    return this.wellKnownMember(desc, valueKey, value);
  }

  /**
   * A member of a message type that `fromPartial` keeps as given rather than building a message:
   * a well-known type ts-proto maps to a plain value. Each form is confirmed with a sample that
   * `fromPartial` keeps and the root's `encode` accepts (and, for a `Timestamp`, a string that it
   * refuses: `useDate=string` holds strings); a form not confirmed, or a type not known, leaves the
   * value unchecked, missing allowed where ts-proto's type allows `undefined`.
   */
  private wellKnownMember(desc: DescMessage, valueKey: string, value: Probe): Pick<CasePlan, 'value' | 'missing' | 'empty'> {
    const name = desc.typeName;
    const keeps = (sample: unknown): boolean => value(sample) === sample && this.encodes(value, sample);
    const checked = (kind: number, expected: string, missing: number, empty: unknown): Pick<CasePlan, 'value' | 'missing' | 'empty'> => ({
      value: this.plan(valueKey, S_SINGULAR, kind, name, expected, false, undefined),
      missing,
      empty,
    });
    if (isWrapperDesc(desc)) {
      const scalar = desc.fields[0]!.scalar!;
      const kind = scalarKind(scalar);
      const sample = scalarSample(kind);
      const kept = isLong(kind) ? this.convertsLong(value(sample)) && this.encodes(value, sample) : keeps(sample);
      if (kept && kind !== K_ANY) return checked(kind, `${name} (${scalarForm(kind)}, or undefined)`, M_EMPTY, scalarEmpty(kind));
    } else if (name === 'google.protobuf.Timestamp') {
      const date = new Date(0);
      if (keeps(date) && !this.encodes(value, date.toISOString())) return checked(K_DATE, `${name} (a Date)`, M_REQUIRED, undefined);
    } else if (name === 'google.protobuf.Struct') {
      if (keeps({ a: 1 })) return checked(K_OBJECT, `${name} (a plain object, or undefined)`, M_EMPTY, EMPTY_OBJECT);
    } else if (name === 'google.protobuf.ListValue') {
      if (keeps([1])) return checked(K_ARRAY, `${name} (an array, or undefined)`, M_EMPTY, EMPTY_ARRAY);
    } else if (name === 'google.protobuf.FieldMask') {
      if (keeps(['a'])) return checked(K_STRINGS, `${name} (an array of strings, or undefined)`, M_EMPTY, EMPTY_ARRAY);
    }
    return checked(K_ANY, name, optionalMember(desc) ? M_AS_IS : M_REQUIRED, undefined);
  }

  /** Whether the root's `encode` takes what its `fromPartial` makes of `v` put where `probe` puts it. */
  private encodes(probe: Probe, v: unknown): boolean {
    try {
      this.probed = undefined;
      probe(v);
      this.type.encode(this.probed);
      return true;
    } catch {
      return false;
    }
  }

  private field(field: DescField, defaults: Record<string, unknown>, probe: Probe): FieldPlan | undefined {
    const key = keyOf(field, defaults);
    if (key === undefined) return undefined;
    const d = defaults[key];
    const at: Probe = (v) => {
      const out = probe({ [key]: v });
      return isMessageObject(out) ? out[key] : undefined;
    };
    switch (field.fieldKind) {
      case 'scalar':
      case 'enum': {
        const kind = field.fieldKind === 'enum' ? K_INT32 : scalarKind(field.scalar);
        const expected = field.fieldKind === 'enum' ? `enum ${field.enum.typeName} (an integer number)` : scalarExpected(field.scalar);
        const explicit = field.presence === FeatureSet_FieldPresence.EXPLICIT;
        if (explicit ? d !== undefined : !this.holds(kind, field.fieldKind === 'enum', d)) return undefined;
        if (explicit && isLong(kind) && !this.convertsLong(at('1'))) return undefined;
        const typeText = field.fieldKind === 'enum' ? field.enum.typeName : scalarName(field.scalar);
        return this.plan(key, explicit ? S_OPTIONAL : S_SINGULAR, kind, typeText, expected, field.fieldKind === 'enum', undefined);
      }
      case 'message': {
        if (d !== undefined) return undefined;
        const nested = this.nested(field.message, at);
        if (nested === undefined) return undefined;
        return this.plan(key, S_OPTIONAL, K_MESSAGE, field.message.typeName, `message ${field.message.typeName} (an object)`, false, nested);
      }
      case 'list': {
        if (!Array.isArray(d)) return undefined;
        const first: Probe = (v) => {
          const out = at([v]);
          return Array.isArray(out) ? out[0] : undefined;
        };
        return this.element(key, S_LIST, field.listKind, field.scalar, field.enum?.typeName, field.message, first, K_ANY, '');
      }
      case 'map': {
        const isMap = d instanceof Map;
        if (!isMap && !(isMessageObject(d) && Object.keys(d).length === 0)) return undefined;
        const keyKind = scalarKind(field.mapKey);
        const sampleKey = isLong(keyKind) ? 0n : keyKind === K_STRING ? '' : keyKind === K_BOOL ? false : 0;
        const value: Probe = isMap
          ? (v) => {
              const out = at(new Map([[sampleKey, v]]));
              return out instanceof Map ? out.get(sampleKey) : undefined;
            }
          : (v) => {
              const out = at({ '1': v });
              return isMessageObject(out) ? out['1'] : undefined;
            };
        const keyName = scalarName(field.mapKey);
        return this.element(key, isMap ? S_MAP : S_OBJECT_MAP, field.mapKind, field.scalar, field.enum?.typeName, field.message, value, isMap ? keyKind : K_ANY, keyName);
      }
      default:
        return undefined;
    }
  }

  /** The plan of a list or map field, from its element (value) type. */
  private element(
    key: string,
    shape: number,
    elementKind: 'scalar' | 'enum' | 'message',
    scalar: ScalarType | undefined,
    enumName: string | undefined,
    message: DescMessage | undefined,
    probe: Probe,
    keyKind: number,
    keyName: string,
  ): FieldPlan | undefined {
    if (elementKind === 'message') {
      const nested = this.nested(message!, probe);
      const expected = `message ${message!.typeName} (an object)`;
      return nested === undefined
        ? this.plan(key, shape, K_ANY, message!.typeName, expected, false, undefined, keyKind, keyName)
        : this.plan(key, shape, K_MESSAGE, message!.typeName, expected, false, nested, keyKind, keyName);
    }
    if (elementKind === 'enum') {
      return this.plan(key, shape, K_INT32, enumName!, `enum ${enumName!} (an integer number)`, true, undefined, keyKind, keyName);
    }
    let kind = scalarKind(scalar!);
    if (isLong(kind) && !this.convertsLong(probe('1'))) kind = K_ANY;
    return this.plan(key, shape, kind, scalarName(scalar!), scalarExpected(scalar!), false, undefined, keyKind, keyName);
  }

  /** The plan of a nested message type, or undefined when fromPartial does not build one there. */
  private nested(desc: DescMessage, probe: Probe): MessagePlan | undefined {
    const input = {};
    const out = probe(input);
    // Passed through untouched: not a ts-proto message object there (a Date, a wrapper's primitive, ...).
    if (out === input || !isMessageObject(out)) return undefined;
    return this.message(desc, out, probe);
  }

  private plan(
    key: string,
    shape: number,
    kind: number,
    typeText: string,
    expected: string,
    isEnum: boolean,
    message: MessagePlan | undefined,
    keyKind = K_ANY,
    keyName = '',
  ): FieldPlan {
    const fp: FieldPlan = { key, shape, kind, message, expected, typeText, keyKind, keyName };
    if (isEnum) this.enumFields.push(fp);
    if (isLong(kind) || isLong(keyKind)) this.longFields.push(fp);
    return fp;
  }

  /** Whether a singular field's default `d` has the JavaScript type of `kind`; records what it shows. */
  private holds(kind: number, isEnum: boolean, d: unknown): boolean {
    if (isEnum) {
      if (typeof d !== 'number') this.enumsAreNumbers = false;
      return typeof d === 'number';
    }
    switch (kind) {
      case K_STRING:
        return typeof d === 'string';
      case K_BOOL:
        return typeof d === 'boolean';
      case K_INT32:
      case K_UINT32:
      case K_DOUBLE:
      case K_FLOAT:
        return typeof d === 'number';
      case K_INT64:
      case K_UINT64:
        if (typeof d !== 'bigint') this.longsAreBigints = false;
        return typeof d === 'bigint';
      case K_BYTES:
        return d instanceof Uint8Array;
      default:
        return false;
    }
  }

  /** Whether fromPartial turned the sample `'1'` into `1n` (forceLong=bigint); records what it shows. */
  private convertsLong(out: unknown): boolean {
    if (out !== 1n) this.longsAreBigints = false;
    return out === 1n;
  }
}

/** What a missing `Struct` member stands for (ts-proto's `encode` only reads it). */
const EMPTY_OBJECT: Readonly<Record<string, never>> = Object.freeze({});
/** What a missing `ListValue` or `FieldMask` member stands for. */
const EMPTY_ARRAY: readonly never[] = Object.freeze([]);

/**
 * Values `fromPartial` may keep as a set oneof member of `field`'s type (to find where the value
 * goes), the likeliest first: for a well-known type, the plain value ts-proto maps it to.
 */
function memberSamples(field: DescField): unknown[] {
  if (field.fieldKind === 'enum') return [0];
  if (field.fieldKind === 'scalar') return [scalarSample(scalarKind(field.scalar))];
  const desc = field.message!;
  const plain = isWrapperDesc(desc)
    ? scalarSample(scalarKind(desc.fields[0]!.scalar!))
    : { 'google.protobuf.Timestamp': new Date(0), 'google.protobuf.ListValue': [], 'google.protobuf.FieldMask': [], 'google.protobuf.Value': 0 }[desc.typeName];
  return plain === undefined ? [{}] : [plain, {}];
}

/** Whether ts-proto's type for a member of type `desc` allows `undefined` (`T | undefined`). */
function optionalMember(desc: DescMessage): boolean {
  return isWrapperDesc(desc) || ['google.protobuf.Struct', 'google.protobuf.ListValue', 'google.protobuf.Value', 'google.protobuf.FieldMask'].includes(desc.typeName);
}

/** A value of scalar kind `kind` that is not its default (an int64 as `'1'`, which fromPartial converts). */
function scalarSample(kind: number): unknown {
  switch (kind) {
    case K_STRING:
      return 'a';
    case K_BOOL:
      return true;
    case K_INT64:
    case K_UINT64:
      return '1';
    case K_BYTES:
      return new Uint8Array([1]);
    default:
      return 1;
  }
}

/** The default of scalar kind `kind`, as ts-proto (`forceLong=bigint`) holds it: what an empty wrapper decodes to. */
function scalarEmpty(kind: number): unknown {
  switch (kind) {
    case K_STRING:
      return '';
    case K_BOOL:
      return false;
    case K_INT64:
    case K_UINT64:
      return 0n;
    case K_BYTES:
      return new Uint8Array(0);
    default:
      return 0;
  }
}

/** The property ts-proto gives `field`: the first candidate name the defaults object has. */
function keyOf(field: DescField, defaults: Record<string, unknown>): string | undefined {
  for (const name of [field.jsonName, snakeToCamel(field.name), field.name, field.localName]) {
    if (hasOwn.call(defaults, name)) return name;
  }
  return undefined;
}

/** ts-proto's `snakeToCamel`: `foo_bar` -> `fooBar`; an all-caps name is lowercased first. */
function snakeToCamel(s: string): string {
  const lower = /[a-z]/.test(s) ? s : s.toLowerCase();
  return lower
    .split('_')
    .map((w, i) => (i === 0 || w === '' ? w : w[0]!.toUpperCase() + w.slice(1)))
    .join('');
}

function isLong(kind: number): boolean {
  return kind === K_INT64 || kind === K_UINT64;
}

function scalarKind(t: ScalarType): number {
  switch (t) {
    case ScalarType.STRING:
      return K_STRING;
    case ScalarType.BOOL:
      return K_BOOL;
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return K_INT32;
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return K_UINT32;
    case ScalarType.DOUBLE:
      return K_DOUBLE;
    case ScalarType.FLOAT:
      return K_FLOAT;
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return K_INT64;
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return K_UINT64;
    case ScalarType.BYTES:
      return K_BYTES;
    default:
      return K_ANY;
  }
}

/** The .proto name of a scalar type: `'int64'`, `'sfixed32'`, ... */
function scalarName(t: ScalarType): string {
  return ScalarType[t]?.toLowerCase() ?? 'scalar';
}

/** The JavaScript value a scalar of kind `kind` is, for errors: `'a boolean'`, `'an integer number from 0 to 4294967295'`. */
function scalarForm(kind: number): string {
  switch (kind) {
    case K_STRING:
      return 'a string';
    case K_BOOL:
      return 'a boolean';
    case K_INT32:
      return 'an integer number from -2147483648 to 2147483647';
    case K_UINT32:
      return 'an integer number from 0 to 4294967295';
    case K_DOUBLE:
      return 'a number';
    case K_FLOAT:
      return 'a number within float range';
    case K_INT64:
      return 'a bigint or an integer number or string from -2^63 to 2^63-1';
    case K_UINT64:
      return 'a bigint or an integer number or string from 0 to 2^64-1';
    case K_BYTES:
      return 'a Uint8Array';
    default:
      return 'a value';
  }
}

/** What a field of scalar type `t` must hold, for errors. */
function scalarExpected(t: ScalarType): string {
  const name = scalarName(t);
  switch (scalarKind(t)) {
    case K_STRING:
      return 'string';
    case K_BOOL:
      return 'boolean';
    case K_INT32:
      return `${name} (an integer number from -2147483648 to 2147483647)`;
    case K_UINT32:
      return `${name} (an integer number from 0 to 4294967295)`;
    case K_DOUBLE:
      return 'double (a number)';
    case K_FLOAT:
      return 'float (a number within float range)';
    case K_INT64:
      return `${name} (a bigint, or an integer number or string, from -2^63 to 2^63-1)`;
    case K_UINT64:
      return `${name} (a bigint, or an integer number or string, from 0 to 2^64-1)`;
    case K_BYTES:
      return 'bytes (a Uint8Array)';
    default:
      return name;
  }
}
