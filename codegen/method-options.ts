/**
 * svrkit's per-method option `(svrkit.method)` (framework/builtin/proto/svrkit/options.proto), read
 * from the compiled descriptors for the generated `MethodDefinition.options`.
 *
 * buf writes a custom option into the descriptor as an extension field (number 50651) of
 * `google.protobuf.MethodOptions`; decoded with @bufbuild/protobuf's own MethodOptions schema it is an
 * unknown field. @bufbuild/protobuf reads it back with `getExtension`, given the extension's
 * descriptor, which we build (createFileRegistry) from the file of the set that declares it.
 */
import { LOWEST_PRIORITY } from '../framework/overload/priority.js';
import {
  createFileRegistry,
  getExtension,
  hasExtension,
  ScalarType,
  type DescExtension,
  type DescField,
  type DescMessage,
  type Message,
} from '@bufbuild/protobuf';
import { reflect } from '@bufbuild/protobuf/reflect';
import type { FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto } from '@bufbuild/protobuf/wkt';

/** The extension's fully-qualified name, as users write it: `option (svrkit.method) = {...}`. */
export const METHOD_OPTION = 'svrkit.method';
/** The extension's field number in `google.protobuf.MethodOptions` (svrkit's options.proto). */
export const METHOD_OPTION_NUMBER = 50651;
/** The lowest and highest valid `priority` (DAGOR convention: lower is more important; the rules are framework/overload/priority.ts's). */
export const PRIORITY_RANGE = { min: 0, max: LOWEST_PRIORITY } as const;

/** The keys of `(svrkit.method)` that are set on one method. */
export interface MethodOptionValues {
  /** Set (to true) when the option says `idempotent: true`; `idempotent: false` is the default and left out. */
  idempotent?: boolean;
  /** Set when the option has a `priority`, always within {@link PRIORITY_RANGE}. */
  priority?: number;
  /** Set when the option names a `scope`: a ticket must grant it to call the method. */
  scope?: string;
  /** Set (to true) when the option says `public: true`: the method needs no ticket. */
  public?: boolean;
}

/**
 * Reads `(svrkit.method)` of a method of one compiled descriptor set; see {@link methodOptionsReader}.
 * `where` prefixes error messages (`svrkit gen: <where>: ...`).
 */
export type MethodOptionsReader = (method: MethodDescriptorProto, where: string) => MethodOptionValues | undefined;

/**
 * Prepares reading `(svrkit.method)` from the methods of a compiled descriptor set.
 *
 * @param fileSet the set buf compiled (every file once, imports included).
 * @returns a function that takes a method of the set and `where` (a prefix for error messages, e.g.
 *   `greeter.proto: rpc helloworld.Greeter/SayHello`) and returns the keys of the method's
 *   `(svrkit.method)` option that are set, `{}` when the option is present but sets nothing but
 *   defaults, or undefined when the method has no such option (always, when no file of the set
 *   declares the extension).
 *   The function throws an Error (`svrkit gen: <where>: ...`) when `priority` is outside 0..127, or
 *   when the file that declares `svrkit.method` (a user's own `svrkit/options.proto`) does not
 *   declare it as svrkit's does (a message with `bool idempotent` and `optional int32 priority`).
 * @throws Error when the file declaring the extension cannot be turned into descriptors (a descriptor
 *   set buf would not produce, e.g. with a missing import).
 */
export function methodOptionsReader(fileSet: FileDescriptorSet): MethodOptionsReader {
  const declaring = fileSet.file.find(
    (f) => f.package === 'svrkit' && f.extension.some((e) => e.name === 'method' && e.extendee === '.google.protobuf.MethodOptions'),
  );
  if (declaring === undefined) return () => undefined;
  const byName = new Map<string, FileDescriptorProto>(fileSet.file.map((f) => [f.name, f]));
  let extension: DescExtension | undefined;
  try {
    extension = createFileRegistry(declaring, (name) => byName.get(name)).getExtension(METHOD_OPTION);
  } catch (e) {
    throw new Error(`svrkit gen: cannot read the descriptors of ${declaring.name}: ${(e as Error).message}`);
  }
  if (extension === undefined) return () => undefined;
  const ext = extension;
  let shape: Shape | undefined;

  return (method, where) => {
    const options = method.options;
    if (options === undefined || !hasExtension(options, ext)) return undefined;
    const fields = (shape ??= expectedShape(ext, declaring.name, where));
    let value;
    try {
      value = reflect(fields.message, getExtension(options, ext) as Message);
    } catch (e) {
      throw new Error(`svrkit gen: ${where}: cannot decode option (${METHOD_OPTION}): ${(e as Error).message}`);
    }
    const result: MethodOptionValues = {};
    if (value.isSet(fields.idempotent) && value.get(fields.idempotent) === true) result.idempotent = true;
    if (value.isSet(fields.priority)) {
      const priority = value.get(fields.priority) as number;
      if (!Number.isInteger(priority) || priority < PRIORITY_RANGE.min || priority > PRIORITY_RANGE.max) {
        throw new Error(
          `svrkit gen: ${where}: option (${METHOD_OPTION}).priority is ${priority}; it must be ` +
            `${PRIORITY_RANGE.min}..${PRIORITY_RANGE.max} (lower is more important)`,
        );
      }
      result.priority = priority;
    }
    // scope and public came later: a user's own copy of svrkit/options.proto may lack them.
    if (fields.scope !== undefined && value.isSet(fields.scope)) {
      const scope = value.get(fields.scope) as string;
      if (scope !== '') {
        if (scope.length > 128 || /\s/.test(scope)) throw new Error(`svrkit gen: ${where}: option (${METHOD_OPTION}).scope must be 1 to 128 characters without spaces`);
        result.scope = scope;
      }
    }
    if (fields.public !== undefined && value.isSet(fields.public) && value.get(fields.public) === true) result.public = true;
    if (result.public === true && result.scope !== undefined) throw new Error(`svrkit gen: ${where}: option (${METHOD_OPTION}) cannot be both public and need scope '${result.scope}'`);
    return result;
  };
}

/** The extension's message type and its fields (`scope` and `public` absent from older copies). */
interface Shape {
  readonly message: DescMessage;
  readonly idempotent: DescField;
  readonly priority: DescField;
  readonly scope: DescField | undefined;
  readonly public: DescField | undefined;
}

/** The extension's message and its `idempotent` and `priority` fields; throws when it is not svrkit's shape. */
function expectedShape(ext: DescExtension, file: string, where: string): Shape {
  const message = ext.fieldKind === 'message' ? ext.message : undefined;
  const idempotent = message?.fields.find((f) => f.name === 'idempotent');
  const priority = message?.fields.find((f) => f.name === 'priority');
  const scalar = (f: DescField | undefined, t: ScalarType) => f !== undefined && f.fieldKind === 'scalar' && f.scalar === t;
  if (!message || !scalar(idempotent, ScalarType.BOOL) || !scalar(priority, ScalarType.INT32)) {
    throw new Error(
      `svrkit gen: ${where}: ${file} declares option (${METHOD_OPTION}), but not as svrkit's svrkit/options.proto does ` +
        `(a message with bool idempotent and optional int32 priority); remove your own svrkit/options.proto to use svrkit's`,
    );
  }
  const scope = message.fields.find((f) => f.name === 'scope');
  const isPublic = message.fields.find((f) => f.name === 'public');
  return {
    message,
    idempotent: idempotent!,
    priority: priority!,
    scope: scalar(scope, ScalarType.STRING) ? scope : undefined,
    public: scalar(isPublic, ScalarType.BOOL) ? isPublic : undefined,
  };
}
