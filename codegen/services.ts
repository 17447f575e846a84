/**
 * Step 3 of `svrkit gen`: svrkit's service code, appended to ts-proto's module for the same .proto.
 *
 * For each service `Greeter` of package `helloworld` it emits
 * - `GreeterDefinition`: names, paths, kinds and codecs of the methods (and each method's
 *   `(svrkit.method)` option as `options`, when it has one), and the serialized descriptors (`files`)
 *   the reflection service serves; it `satisfies ServiceDefinition`;
 * - `GreeterService`: an abstract class servers extend, one abstract method per rpc;
 * - `GreeterClient`: a client with one method per rpc, calling through a `Channel`.
 *
 * All four kinds of rpc are emitted, with the shapes connect-es uses (async iterables both ways).
 * Handlers may return deep-partial messages (the server fills proto3 defaults); clients accept
 * deep-partial requests and get complete messages back:
 *
 * | rpc | handler (`GreeterService`) | client (`GreeterClient`) |
 * |---|---|---|
 * | unary | `(request, call) => Promise<DeepPartial<Res>>` | `(request: DeepPartial<Req>, options?) => Promise<Res>` |
 * | server streaming | `(request, call) => AsyncIterable<DeepPartial<Res>>` (an `async *` method) | `(request: DeepPartial<Req>, options?) => AsyncIterable<Res>` |
 * | client streaming | `(requests: AsyncIterable<Req>, call) => Promise<DeepPartial<Res>>` | `(requests: AsyncIterable<DeepPartial<Req>> \| DeepPartial<Req>[], options?) => Promise<Res>` |
 * | bidi streaming | `(requests: AsyncIterable<Req>, call) => AsyncIterable<DeepPartial<Res>>` | `(requests: AsyncIterable<DeepPartial<Req>> \| DeepPartial<Req>[], options?) => AsyncIterable<Res>` |
 */
import { clone, toBinary } from '@bufbuild/protobuf';
import {
  FileDescriptorProtoSchema,
  type DescriptorProto,
  type FileDescriptorProto,
  type MethodDescriptorProto,
} from '@bufbuild/protobuf/wkt';
import { METHOD_OPTION_NUMBER, type MethodOptionsReader, type MethodOptionValues } from './method-options.js';
import { messageTsName, methodLocalName, moduleSpecifier, outputPath, runtimeSpecifier, type NamingOptions } from './naming.js';
import { scanModule, type ModuleScan } from './source-scan.js';

/** Where a message type is generated. */
export interface MessageLocation {
  /** The .proto file (descriptor name) that defines it. */
  readonly protoFile: string;
  /** Its TypeScript name in that file's module, e.g. `Outer_Inner`. */
  readonly tsName: string;
}

/** Indexes every message of a descriptor set by fully-qualified name with a leading dot (`.pkg.Outer.Inner`). */
export function indexMessages(files: readonly FileDescriptorProto[], naming: NamingOptions): Map<string, MessageLocation> {
  const index = new Map<string, MessageLocation>();
  const visit = (file: FileDescriptorProto, scope: string, namePath: string[], messages: readonly DescriptorProto[]) => {
    for (const m of messages) {
      const fullName = `${scope}.${m.name}`;
      const path = [...namePath, m.name];
      index.set(fullName, { protoFile: file.name, tsName: messageTsName(path, naming) });
      visit(file, fullName, path, m.nestedType);
    }
  };
  for (const f of files) visit(f, f.package ? `.${f.package}` : '', [], f.messageType);
  return index;
}

/** Everything the emitter needs besides the file itself. */
export interface EmitContext {
  /** Every file of the descriptor set, by name. */
  readonly files: ReadonlyMap<string, FileDescriptorProto>;
  /** Every message of the set (see {@link indexMessages}). */
  readonly messages: ReadonlyMap<string, MessageLocation>;
  /** ts-proto's output per .proto file name (to check that codecs exist in the modules we import from). */
  readonly generated: ReadonlyMap<string, string>;
  /** Import specifier of the svrkit runtime (see {@link runtimeSpecifier}). */
  readonly runtimeImport: string;
  readonly naming: NamingOptions;
  /** How to name a .proto file in error messages (default: its import path). */
  readonly label?: (protoName: string) => string;
  /**
   * Reads a method's `(svrkit.method)` option (see {@link MethodOptionsReader}); its result becomes the
   * definition's `options`. Default: no method has options.
   */
  readonly methodOptions?: MethodOptionsReader;
}

/** The result of {@link emitServices}. */
export interface EmitResult {
  /** ts-proto's module with svrkit's imports and service code added (unchanged when the file has no services). */
  readonly content: string;
  /**
   * Problems that did not stop emitting, one line each, ready for stderr (`svrkit gen: ...`). Every
   * kind of rpc is emitted, so this is empty today; it is kept for problems that are not errors.
   */
  readonly warnings: string[];
}

const runtimeNames = ['serviceDefinition', 'Channel', 'CallContext', 'CallOptions', 'ChannelOptions', 'ServiceDefinition'] as const;
type RuntimeName = (typeof runtimeNames)[number];
const runtimeTypeOnly: ReadonlySet<RuntimeName> = new Set(['CallContext', 'CallOptions', 'ChannelOptions', 'ServiceDefinition']);
/**
 * The four kinds of rpc, as the definitions' `kind` names them (the runtime's `MethodKind`, in
 * framework/wire/definition.ts; spelled out here so the code generator does not import the runtime).
 */
export type MethodKind = 'unary' | 'server_streaming' | 'client_streaming' | 'bidi_streaming';

/** The kind of an rpc from its descriptor's `client_streaming` and `server_streaming` flags. */
export function methodKind(method: Pick<MethodDescriptorProto, 'clientStreaming' | 'serverStreaming'>): MethodKind {
  if (method.clientStreaming) return method.serverStreaming ? 'bidi_streaming' : 'client_streaming';
  return method.serverStreaming ? 'server_streaming' : 'unary';
}

/** Member names the generated client class uses itself. */
const clientMembers = new Set(['channel', 'ownsChannel', 'close', 'constructor']);

/**
 * Adds the service code of `file` to `tsProtoContent` (ts-proto's module for it).
 *
 * @throws Error naming the file and the symbol when a generated name (`GreeterService`, ...) is
 *   already taken in the module, two rpcs of a service map to the same method name, an rpc's method
 *   name collides with a client member (`channel`, `close`), or a message codec cannot be found in
 *   ts-proto's output; naming the file and the rpc when its `(svrkit.method)` option is invalid
 *   (whatever `ctx.methodOptions` throws).
 */
export function emitServices(file: FileDescriptorProto, tsProtoContent: string, ctx: EmitContext): EmitResult {
  if (file.service.length === 0) return { content: tsProtoContent, warnings: [] };
  const scan = scanModule(tsProtoContent);
  const thisOutput = outputPath(file.name, ctx.naming);
  const label = ctx.label?.(file.name) ?? file.name;
  const names = new Namer(label, scan);
  // A message named Promise or AsyncIterable (or any local binding of that name) shadows the global one.
  const promise = scan.bound.has('Promise') ? 'globalThis.Promise' : 'Promise';
  const asyncIterable = scan.bound.has('AsyncIterable') ? 'globalThis.AsyncIterable' : 'AsyncIterable';

  // Public names first: they must be exactly these.
  for (const s of file.service) {
    for (const suffix of ['Definition', 'Service', 'Client']) names.claimPublic(`${s.name}${suffix}`, `service ${qualified(file, s.name)}`);
  }

  const runtime = new Map<RuntimeName, string>();
  const useRuntime = (n: RuntimeName): string => {
    let local = runtime.get(n);
    if (!local) runtime.set(n, (local = names.fresh(n, `svrkit_${n}`)));
    return local;
  };

  const exportScans = new Map<string, ReadonlySet<string> | undefined>();
  const exportsOf = (protoFile: string): ReadonlySet<string> | undefined => {
    if (!exportScans.has(protoFile)) {
      const module = protoFile === file.name ? tsProtoContent : ctx.generated.get(protoFile);
      exportScans.set(protoFile, module === undefined ? undefined : scanModule(module).exported);
    }
    return exportScans.get(protoFile);
  };

  // Message imports: reuse ts-proto's own bindings, else import with a fresh local name.
  const extraImports = new Map<string, Map<string, string>>();
  const messageRef = (typeName: string, where: string): string => {
    const loc = ctx.messages.get(typeName);
    if (!loc) throw new Error(`svrkit gen: ${label}: ${where}: unknown message type ${typeName.slice(1)}`);
    const exported = exportsOf(loc.protoFile);
    if (exported !== undefined && !exported.has(loc.tsName)) {
      throw new Error(
        `svrkit gen: ${label}: ${where}: ts-proto's module for ${loc.protoFile} does not export ${loc.tsName} ` +
          `(the codec of ${typeName.slice(1)}); a tsProtoOptions entry may have renamed or removed it`,
      );
    }
    if (loc.protoFile === file.name) return loc.tsName;
    const spec = moduleSpecifier(thisOutput, outputPath(loc.protoFile, ctx.naming), ctx.naming);
    const existing = scan.namedImports.get(spec)?.get(loc.tsName) ?? extraImports.get(spec)?.get(loc.tsName);
    if (existing) return existing;
    const pkg = ctx.files.get(loc.protoFile)?.package ?? '';
    const local = names.fresh(loc.tsName, `${pkg.replace(/\./g, '_')}_${loc.tsName}`);
    const forSpec = extraImports.get(spec) ?? new Map<string, string>();
    extraImports.set(spec, forSpec);
    forSpec.set(loc.tsName, local);
    return local;
  };

  const sections: string[] = [];
  const filesConst = names.fresh('svrkitFileDescriptors', 'svrkitFileDescriptors_');
  sections.push(
    `/** Serialized FileDescriptorProtos of ${file.name} and its imports (imports first), for reflection. */\n` +
      `const ${filesConst}: readonly string[] = [\n${fileDescriptors(file, ctx.files)
        .map((b64) => `  '${b64}',\n`)
        .join('')}];`,
  );

  let deepPartialUsed = false;
  const deepPartial = (): string => {
    deepPartialUsed = true;
    return scan.bound.has('DeepPartial') ? 'DeepPartial' : names.reserved('DeepPartial');
  };

  file.service.forEach((service, serviceIndex) => {
    const full = qualified(file, service.name);
    const methods: { method: MethodDescriptorProto; index: number; localName: string; kind: MethodKind }[] = [];
    const localNames = new Map<string, string>();
    service.method.forEach((method, index) => {
      const localName = methodLocalName(method.name);
      const other = localNames.get(localName);
      if (other !== undefined) {
        throw new Error(`svrkit gen: ${label}: rpcs ${full}/${other} and ${full}/${method.name} both map to method name ${localName}; rename one`);
      }
      if (clientMembers.has(localName)) {
        throw new Error(
          `svrkit gen: ${label}: rpc ${full}/${method.name} maps to method name ${localName}, which ${service.name}Client uses itself; rename the rpc`,
        );
      }
      localNames.set(localName, method.name);
      methods.push({ method, index, localName, kind: methodKind(method) });
    });

    const serviceDoc = leadingComment(file, [6, serviceIndex]);
    const deprecated = service.options?.deprecated === true;
    const defName = `${service.name}Definition`;

    // Definition.
    const methodEntries = methods.map(({ method, index, localName, kind }) => {
      const where = `rpc ${full}/${method.name}`;
      // Problems with the option point at it: `file:line:column: rpc ...`.
      const at = sourcePosition(file, [6, serviceIndex, 2, index, 4, METHOD_OPTION_NUMBER], true) ?? sourcePosition(file, [6, serviceIndex, 2, index]);
      const options = ctx.methodOptions?.(method, `${label}${at ?? ''}: ${where}`);
      return (
        `    ${localName}: {\n` +
        `      name: ${str(method.name)},\n` +
        `      localName: ${str(localName)},\n` +
        `      path: ${str(`${full}/${method.name}`)},\n` +
        `      kind: ${str(kind)},\n` +
        `      requestType: ${messageRef(method.inputType, where)},\n` +
        `      responseType: ${messageRef(method.outputType, where)},\n` +
        `      requestTypeName: ${str(method.inputType.replace(/^\./, ''))},\n` +
        `      responseTypeName: ${str(method.outputType.replace(/^\./, ''))},\n` +
        (options ? `      options: ${optionsLiteral(options)},\n` : '') +
        `    },\n`
      );
    });
    sections.push(
      jsdoc([...withFallback(serviceDoc, `The ${full} service.`), '', `Definition of ${full}: its methods, their kinds and codecs, and its descriptors.`], '', deprecated) +
        `export const ${defName} = {\n` +
        `  name: ${str(service.name)},\n` +
        `  fullName: ${str(full)},\n` +
        `  methods: {${methodEntries.length ? '\n' + methodEntries.join('') + '  ' : ''}},\n` +
        `  files: ${filesConst},\n` +
        `} as const satisfies ${useRuntime('ServiceDefinition')};`,
    );

    // Abstract service class.
    const abstractMethods = methods.map(({ method, index, localName, kind }) => {
      const doc = withFallback(leadingComment(file, [6, serviceIndex, 2, index]), `Handles ${full}/${method.name}.`);
      const req = messageRef(method.inputType, `rpc ${full}/${method.name}`);
      const res = `${deepPartial()}<${messageRef(method.outputType, `rpc ${full}/${method.name}`)}>`;
      const params = kind === 'unary' || kind === 'server_streaming' ? `request: ${req}` : `requests: ${asyncIterable}<${req}>`;
      const returns = kind === 'unary' || kind === 'client_streaming' ? `${promise}<${res}>` : `${asyncIterable}<${res}>`;
      return (
        jsdoc([...doc, ...handlerNote[kind]], '  ', method.options?.deprecated === true) +
        `  abstract ${localName}(${params}, call: ${useRuntime('CallContext')}): ${returns};\n`
      );
    });
    sections.push(
      jsdoc([...withFallback(serviceDoc, `The ${full} service.`), '', ...serviceClassNote], '', deprecated) +
        `export abstract class ${service.name}Service {\n` +
        `  readonly [${useRuntime('serviceDefinition')}] = ${defName};\n` +
        abstractMethods.join('') +
        `}`,
    );

    // Client class.
    const channel = useRuntime('Channel');
    const clientMethods = methods.map(({ method, index, localName, kind }) => {
      const doc = withFallback(leadingComment(file, [6, serviceIndex, 2, index]), `Calls ${full}/${method.name}.`);
      const req = `${deepPartial()}<${messageRef(method.inputType, `rpc ${full}/${method.name}`)}>`;
      const res = messageRef(method.outputType, `rpc ${full}/${method.name}`);
      const streamsRequests = kind === 'client_streaming' || kind === 'bidi_streaming';
      const param = streamsRequests ? `requests: ${asyncIterable}<${req}> | ${req}[]` : `request: ${req}`;
      const returns = kind === 'unary' || kind === 'client_streaming' ? `${promise}<${res}>` : `${asyncIterable}<${res}>`;
      return (
        jsdoc([...doc, ...clientNote[kind]], '  ', method.options?.deprecated === true) +
        `  ${localName}(${param}, options?: ${useRuntime('CallOptions')}): ${returns} {\n` +
        `    return this.channel.${channelMethod[kind]}(${defName}.methods.${localName}, ${streamsRequests ? 'requests' : 'request'}, options);\n` +
        `  }\n`
      );
    });
    sections.push(
      jsdoc([...withFallback(serviceDoc, `The ${full} service.`), '', `Client of ${full}.`], '', deprecated) +
        `export class ${service.name}Client {\n` +
        `  /** The channel calls go through. */\n` +
        `  readonly channel: ${channel};\n` +
        `  private readonly ownsChannel: boolean;\n` +
        `  /** \`target\`: 'host:port', a resolver URI such as 'static:///h1:p1,h2:p2', or an existing Channel (shared, not closed by close()). */\n` +
        `  constructor(target: string | ${channel}, options?: ${useRuntime('ChannelOptions')}) {\n` +
        `    this.ownsChannel = typeof target === 'string';\n` +
        `    this.channel = typeof target === 'string' ? new ${channel}(target, options) : target;\n` +
        `  }\n` +
        clientMethods.join('') +
        `  /** Closes the channel if this client created it. */\n` +
        `  close(): void {\n` +
        `    if (this.ownsChannel) this.channel.close();\n` +
        `  }\n` +
        `}`,
    );
  });

  if (deepPartialUsed && !scan.bound.has('DeepPartial')) sections.push(deepPartialSource(names));

  const importLines: string[] = [];
  const specifiers = runtimeNames
    .filter((n) => runtime.has(n))
    .map((n) => {
      const local = runtime.get(n)!;
      return `${runtimeTypeOnly.has(n) ? 'type ' : ''}${n}${local === n ? '' : ` as ${local}`}`;
    });
  importLines.push(`import { ${specifiers.join(', ')} } from ${str(runtimeSpecifier(ctx.runtimeImport, thisOutput))};`);
  for (const [spec, imported] of extraImports) {
    const list = [...imported].map(([name, local]) => (name === local ? name : `${name} as ${local}`));
    importLines.push(`import { ${list.join(', ')} } from ${str(spec)};`);
  }

  const at = scan.importsEnd > 0 ? scan.importsEnd : headerEnd(tsProtoContent);
  const head = tsProtoContent.slice(0, at);
  const tail = tsProtoContent.slice(at).trim();
  const content =
    head.replace(/\s*$/, '\n') +
    importLines.join('\n') +
    '\n\n' +
    (tail ? tail + '\n\n' : '') +
    '// svrkit services\n\n' +
    sections.join('\n\n') +
    '\n';
  return { content, warnings: [] };
}

/** The JSDoc lines of every generated `XService` class, after the service's own comment. */
const serviceClassNote: readonly string[] = [
  'Extend this class and implement every method.',
  'Handlers may return deep-partial messages: fields left out are sent as their proto3 defaults.',
];

/** The `Channel` method a client method of each kind calls. */
const channelMethod: Readonly<Record<MethodKind, string>> = {
  unary: 'unary',
  server_streaming: 'serverStream',
  client_streaming: 'clientStream',
  bidi_streaming: 'bidiStream',
};

/** Lines added to a streaming handler's JSDoc (after the .proto comment). */
const handlerNote: Readonly<Record<MethodKind, readonly string[]>> = {
  unary: [],
  server_streaming: ['', 'Server streaming: yield the responses (write it as an `async *` method); the stream ends when it returns.'],
  client_streaming: ['', 'Client streaming: `requests` ends when the client half-closes; return the one response.'],
  bidi_streaming: ['', 'Bidi streaming: read `requests` and yield the responses; the two flow independently.'],
};

/** Lines added to a streaming client method's JSDoc (after the .proto comment). */
const clientNote: Readonly<Record<MethodKind, readonly string[]>> = {
  unary: [],
  server_streaming: ['', 'Server streaming: iterate the responses with `for await`; breaking out of the loop cancels the call.'],
  client_streaming: ['', 'Client streaming: `requests` (an array or an async iterable) is sent in order, and the stream half-closes when it ends.'],
  bidi_streaming: [
    '',
    'Bidi streaming: `requests` (an array or an async iterable) is sent in order while the responses arrive; iterate them with `for await`',
    '(breaking out of the loop cancels the call).',
  ],
};

/** Allocates top-level names in one generated module without colliding with ts-proto's. */
class Namer {
  private readonly taken = new Set<string>();
  constructor(
    private readonly protoFile: string,
    scan: ModuleScan,
  ) {
    for (const n of scan.bound) this.taken.add(n);
  }
  /** Claims an exact public name; throws when it is taken. */
  claimPublic(name: string, by: string): void {
    if (this.taken.has(name)) {
      throw new Error(
        `svrkit gen: ${this.protoFile}: ${by} generates ${name}, but the generated module already has a symbol named ${name} ` +
          `(a message, enum or service with that name); rename one of them`,
      );
    }
    this.taken.add(name);
  }
  /** `preferred` if free, else `fallback`, else `fallback2`, `fallback3`, ... */
  fresh(preferred: string, fallback: string): string {
    let name = preferred;
    for (let i = 1; this.taken.has(name); i++) name = i === 1 ? fallback : `${fallback}${i}`;
    this.taken.add(name);
    return name;
  }
  /** `name`, claimed now if free; a fresh variant otherwise (stable across calls). */
  private readonly memo = new Map<string, string>();
  reserved(name: string): string {
    let local = this.memo.get(name);
    if (!local) this.memo.set(name, (local = this.fresh(name, `svrkit_${name}`)));
    return local;
  }
}

/** `DeepPartial` as ts-proto defines it (with forceLong=bigint), for modules where ts-proto did not emit it. */
function deepPartialSource(names: Namer): string {
  const deep = names.reserved('DeepPartial');
  const builtin = names.reserved('Builtin');
  return (
    `type ${builtin} = Date | Function | Uint8Array | string | number | boolean | bigint | undefined;\n\n` +
    `/** A message in which every field, at every depth, may be left out; what clients accept as a request and handlers may return. */\n` +
    `export type ${deep}<T> = T extends bigint ? string | number | bigint\n` +
    `  : T extends ${builtin} ? T : T extends globalThis.Array<infer U> ? globalThis.Array<${deep}<U>>\n` +
    `  : T extends ReadonlyArray<infer U> ? ReadonlyArray<${deep}<U>>\n` +
    `  : T extends {} ? { [K in keyof T]?: ${deep}<T[K]> }\n` +
    `  : Partial<T>;`
  );
}

/**
 * Base64 of the serialized FileDescriptorProto of `file` and of every file it imports, transitively,
 * imports first, each once, without SourceCodeInfo.
 */
export function fileDescriptors(file: FileDescriptorProto, files: ReadonlyMap<string, FileDescriptorProto>): string[] {
  const order: FileDescriptorProto[] = [];
  const seen = new Set<string>();
  const visit = (f: FileDescriptorProto) => {
    if (seen.has(f.name)) return;
    seen.add(f.name);
    for (const dep of f.dependency) {
      const d = files.get(dep);
      if (!d) throw new Error(`svrkit gen: ${f.name} imports ${dep}, which is not in the compiled descriptor set`);
      visit(d);
    }
    order.push(f);
  };
  visit(file);
  return order.map((f) => {
    const copy = clone(FileDescriptorProtoSchema, f);
    copy.sourceCodeInfo = undefined;
    return Buffer.from(toBinary(FileDescriptorProtoSchema, copy)).toString('base64');
  });
}

/**
 * `:line:column` (1-based) of the element at `path` in SourceCodeInfo, or undefined when it has no
 * location. With `orInside`, else of the first element found inside it (`option (x).key = v;` has a
 * location for the key, not for the option).
 */
function sourcePosition(file: FileDescriptorProto, path: readonly number[], orInside = false): string | undefined {
  const locations = file.sourceCodeInfo?.location ?? [];
  const startsWith = (p: readonly number[]) => p.length >= path.length && path.every((v, i) => v === p[i]);
  const loc =
    locations.find((l) => l.path.length === path.length && startsWith(l.path)) ??
    (orInside ? locations.find((l) => startsWith(l.path)) : undefined);
  return loc && loc.span.length >= 3 ? `:${loc.span[0]! + 1}:${loc.span[1]! + 1}` : undefined;
}

/** The leading comment (else the trailing one) of the element at `path` in SourceCodeInfo, as lines. */
export function leadingComment(file: FileDescriptorProto, path: readonly number[]): string[] {
  const loc = file.sourceCodeInfo?.location.find((l) => l.path.length === path.length && l.path.every((v, i) => v === path[i]));
  const text = loc?.leadingComments || loc?.trailingComments || '';
  const lines = text.replace(/\r\n?/g, '\n').split('\n').map((l) => l.replace(/^ /, '').replace(/\s+$/, ''));
  while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  while (lines.length > 0 && lines[0] === '') lines.shift();
  return lines;
}

function withFallback(lines: string[], fallback: string): string[] {
  return lines.length > 0 ? lines : [fallback];
}

/** A JSDoc block (ends with a newline). */
function jsdoc(lines: readonly string[], indent: string, deprecated = false): string {
  const all = [...lines];
  if (deprecated) all.push(...(all.length ? [''] : []), '@deprecated');
  const safe = all.map((l) => l.replace(/\*\//g, '*\\/'));
  if (safe.length === 1) return `${indent}/** ${safe[0]} */\n`;
  return `${indent}/**\n${safe.map((l) => (l ? `${indent} * ${l}` : `${indent} *`)).join('\n')}\n${indent} */\n`;
}

/** The `options` of a method definition as an object literal, only the keys that are set: `{ idempotent: true, priority: 3 }`. */
function optionsLiteral(options: MethodOptionValues): string {
  const entries: string[] = [];
  if (options.idempotent !== undefined) entries.push(`idempotent: ${options.idempotent}`);
  if (options.priority !== undefined) entries.push(`priority: ${options.priority}`);
  if (options.scope !== undefined) entries.push(`scope: ${JSON.stringify(options.scope)}`);
  if (options.public !== undefined) entries.push(`public: ${options.public}`);
  return entries.length ? `{ ${entries.join(', ')} }` : '{}';
}

/** A single-quoted string literal. */
function str(s: string): string {
  return `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

function qualified(file: FileDescriptorProto, name: string): string {
  return file.package ? `${file.package}.${name}` : name;
}

/** Offset after ts-proto's header comments and `/* eslint-disable *\/` line, where imports would go. */
function headerEnd(content: string): number {
  const m = /^(?:\/\/[^\n]*\n|\/\*[^\n]*\*\/\n|\s*\n)*/.exec(content);
  return m ? m[0].length : 0;
}
