/**
 * The built-in reflection service (`svrkit.Reflection`), a unary take on
 * grpc.reflection.v1.ServerReflection: lists services and serves the FileDescriptorProtos that
 * generated code embeds in each service definition, so tools need no local .proto files.
 */
import { fromBinary } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema, type DescriptorProto, type FileDescriptorProto } from '@bufbuild/protobuf/wkt';
import type { ServiceDefinition } from '../wire/definition.js';
import { errors } from '../errors.js';
import {
  ReflectionService,
  type FileContainingSymbolRequest,
  type FileDescriptorResponse,
  type ListServicesRequest,
  type ListServicesResponse,
} from '../builtin/gen/svrkit/reflection.js';

/** What the reflection service needs: the server's registered services. */
export interface ReflectionSource {
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
}

/** Serves ListServices and FileContainingSymbol from the registered services' definitions. */
export class Reflection extends ReflectionService {
  private index: Index | undefined;
  private indexedCount = -1;

  /** @param server - the server whose services are described. */
  constructor(private readonly server: ReflectionSource) {
    super();
  }

  override async listServices(_request: ListServicesRequest): Promise<ListServicesResponse> {
    return { services: [...this.server.services.keys()].sort() };
  }

  /**
   * @throws RpcError NOT_FOUND (reason `UNKNOWN_SYMBOL`) when no registered file defines `request.symbol`.
   */
  override async fileContainingSymbol(request: FileContainingSymbolRequest): Promise<FileDescriptorResponse> {
    const index = this.getIndex();
    const symbol = request.symbol.replace(/^\./, '').replace('/', '.');
    const file = index.symbols.get(symbol);
    if (file === undefined) throw errors.UNKNOWN_SYMBOL(request.symbol);
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
    return { fileDescriptorProto: ordered };
  }

  private getIndex(): Index {
    if (this.index !== undefined && this.indexedCount === this.server.services.size) return this.index;
    const files = new Map<string, Uint8Array>();
    const parsed = new Map<string, FileDescriptorProto>();
    const symbols = new Map<string, string>();
    for (const def of this.server.services.values()) {
      for (const b64 of def.files) {
        const bytes = Buffer.from(b64, 'base64');
        const fd = fromBinary(FileDescriptorProtoSchema, bytes);
        if (files.has(fd.name)) continue;
        files.set(fd.name, bytes);
        parsed.set(fd.name, fd);
        const prefix = fd.package === '' ? '' : fd.package + '.';
        for (const m of fd.messageType) indexMessage(m, prefix, fd.name, symbols);
        for (const e of fd.enumType) symbols.set(prefix + e.name, fd.name);
        for (const s of fd.service) {
          symbols.set(prefix + s.name, fd.name);
          for (const m of s.method) symbols.set(`${prefix}${s.name}.${m.name}`, fd.name);
        }
      }
    }
    this.index = { files, parsed, symbols };
    this.indexedCount = this.server.services.size;
    return this.index;
  }
}

function indexMessage(m: DescriptorProto, prefix: string, file: string, symbols: Map<string, string>): void {
  const name = prefix + m.name;
  symbols.set(name, file);
  for (const n of m.nestedType) indexMessage(n, name + '.', file, symbols);
  for (const e of m.enumType) symbols.set(`${name}.${e.name}`, file);
}
