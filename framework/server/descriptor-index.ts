/**
 * The protobuf descriptors of a server's services, indexed for reflection: the
 * FileDescriptorProtos that generated code embeds in each service definition (imports first),
 * by file name, by the symbols they define, and by the extensions they declare. Both reflection
 * services use it: svrkit's (`svrkit.Reflection`) and gRPC's (`grpc.reflection.v1` and
 * `v1alpha`, grpc/grpc doc/server-reflection.md).
 */
import { fromBinary } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema, type DescriptorProto, type FieldDescriptorProto, type FileDescriptorProto } from '@bufbuild/protobuf/wkt';
import type { ServiceDefinition } from '../wire/definition.js';

/** What the index is built from: the server's registered services. */
export interface DescriptorSource {
  /** Registered services by full name. */
  readonly services: ReadonlyMap<string, ServiceDefinition>;
}

interface Index {
  /** File bytes by file name. */
  files: Map<string, Uint8Array>;
  /** Parsed file descriptors by file name. */
  parsed: Map<string, FileDescriptorProto>;
  /** Defining file by fully-qualified symbol (no leading dot). */
  symbols: Map<string, string>;
  /** Declaring file by `extendee:number` (extendee fully qualified, no leading dot). */
  extensions: Map<string, string>;
  /** Extension numbers by extendee. */
  extensionNumbers: Map<string, number[]>;
}

/**
 * An index of a server's descriptors, rebuilt when its number of services changes (services are
 * only ever added).
 */
export class DescriptorIndex {
  private index: Index | undefined;
  private indexedCount = -1;

  /** @param source - the server whose services are described. */
  constructor(private readonly source: DescriptorSource) {}

  /** The full names of the registered services, sorted. */
  serviceNames(): string[] {
    return [...this.source.services.keys()].sort();
  }

  /**
   * The file that defines a symbol, with every file it imports.
   * @param symbol - a fully-qualified service, method, message, enum or field name
   *   (`pkg.Svc`, `pkg.Svc.Method` or `pkg.Svc/Method`, `pkg.Msg`, `pkg.Msg.field`); a leading dot is ignored.
   * @returns serialized FileDescriptorProtos, imports before their users, or undefined when no file defines it.
   */
  fileContainingSymbol(symbol: string): Uint8Array[] | undefined {
    const index = this.get();
    const file = index.symbols.get(symbol.replace(/^\./, '').replace('/', '.'));
    return file === undefined ? undefined : this.withImports(index, file);
  }

  /**
   * A file by its name, with every file it imports.
   * @param name - the file's path as imported, e.g. `helloworld/helloworld.proto`.
   * @returns serialized FileDescriptorProtos, imports first, or undefined for a file not served.
   */
  fileByName(name: string): Uint8Array[] | undefined {
    const index = this.get();
    return index.files.has(name) ? this.withImports(index, name) : undefined;
  }

  /**
   * The file that declares an extension, with every file it imports.
   * @param extendee - the extended message's full name (`google.protobuf.MethodOptions`).
   * @param number - the extension's field number.
   * @returns serialized FileDescriptorProtos, or undefined when no served file declares it.
   */
  fileContainingExtension(extendee: string, number: number): Uint8Array[] | undefined {
    const index = this.get();
    const file = index.extensions.get(`${extendee.replace(/^\./, '')}:${number}`);
    return file === undefined ? undefined : this.withImports(index, file);
  }

  /**
   * The field numbers of the extensions the served files declare for a message.
   * @param extendee - the message's full name.
   * @returns the numbers, ascending, or undefined when no served file defines the message.
   */
  extensionNumbers(extendee: string): number[] | undefined {
    const index = this.get();
    const name = extendee.replace(/^\./, '');
    if (!index.symbols.has(name)) return undefined;
    return [...(index.extensionNumbers.get(name) ?? [])].sort((a, b) => a - b);
  }

  private withImports(index: Index, file: string): Uint8Array[] {
    const ordered: Uint8Array[] = [];
    const seen = new Set<string>();
    const visit = (name: string): void => {
      if (seen.has(name)) return;
      seen.add(name);
      for (const dep of index.parsed.get(name)?.dependency ?? []) visit(dep);
      const bytes = index.files.get(name);
      if (bytes !== undefined) ordered.push(bytes);
    };
    visit(file);
    return ordered;
  }

  private get(): Index {
    if (this.index !== undefined && this.indexedCount === this.source.services.size) return this.index;
    const index: Index = { files: new Map(), parsed: new Map(), symbols: new Map(), extensions: new Map(), extensionNumbers: new Map() };
    for (const def of this.source.services.values()) {
      for (const b64 of def.files) {
        const bytes = Buffer.from(b64, 'base64');
        const fd = fromBinary(FileDescriptorProtoSchema, bytes);
        if (index.files.has(fd.name)) continue;
        index.files.set(fd.name, bytes);
        index.parsed.set(fd.name, fd);
        const prefix = fd.package === '' ? '' : fd.package + '.';
        for (const m of fd.messageType) indexMessage(m, prefix, fd.name, index);
        for (const e of fd.enumType) index.symbols.set(prefix + e.name, fd.name);
        for (const x of fd.extension) indexExtension(x, prefix, fd.name, index);
        for (const s of fd.service) {
          index.symbols.set(prefix + s.name, fd.name);
          for (const m of s.method) index.symbols.set(`${prefix}${s.name}.${m.name}`, fd.name);
        }
      }
    }
    this.index = index;
    this.indexedCount = this.source.services.size;
    return index;
  }
}

function indexMessage(m: DescriptorProto, prefix: string, file: string, index: Index): void {
  const name = prefix + m.name;
  index.symbols.set(name, file);
  for (const f of m.field) index.symbols.set(`${name}.${f.name}`, file);
  for (const n of m.nestedType) indexMessage(n, name + '.', file, index);
  for (const e of m.enumType) index.symbols.set(`${name}.${e.name}`, file);
  for (const x of m.extension) indexExtension(x, name + '.', file, index);
}

function indexExtension(x: FieldDescriptorProto, prefix: string, file: string, index: Index): void {
  index.symbols.set(prefix + x.name, file);
  const extendee = x.extendee.replace(/^\./, '');
  index.extensions.set(`${extendee}:${x.number}`, file);
  const numbers = index.extensionNumbers.get(extendee);
  if (numbers === undefined) index.extensionNumbers.set(extendee, [x.number]);
  else if (!numbers.includes(x.number)) numbers.push(x.number);
}
