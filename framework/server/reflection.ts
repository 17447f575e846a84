/**
 * The built-in reflection service (`svrkit.Reflection`), a unary take on
 * grpc.reflection.v1.ServerReflection: lists services and serves the FileDescriptorProtos that
 * generated code embeds in each service definition, so tools need no local .proto files.
 */
import type { ServiceDefinition } from '../wire/definition.js';
import { errors } from '../errors.js';
import {
  ReflectionService,
  type FileContainingSymbolRequest,
  type FileDescriptorResponse,
  type ListServicesRequest,
  type ListServicesResponse,
} from '../builtin/gen/svrkit/reflection.js';
import { DescriptorIndex } from './descriptor-index.js';

/** What the reflection service needs: the server's registered services. */
export interface ReflectionSource {
  /** Registered services by full name. */
  readonly services: ReadonlyMap<string, ServiceDefinition>;
}

/** Serves ListServices and FileContainingSymbol from the registered services' definitions. */
export class Reflection extends ReflectionService {
  private readonly index: DescriptorIndex;

  /**
   * @param server - the server whose services are described.
   * @param index - its descriptor index (shared with gRPC's reflection); default a new one.
   */
  constructor(server: ReflectionSource, index = new DescriptorIndex(server)) {
    super();
    this.index = index;
  }

  override async listServices(_request: ListServicesRequest): Promise<ListServicesResponse> {
    return { services: this.index.serviceNames() };
  }

  /**
   * @throws RpcError NOT_FOUND (reason `UNKNOWN_SYMBOL`) when no registered file defines `request.symbol`.
   */
  override async fileContainingSymbol(request: FileContainingSymbolRequest): Promise<FileDescriptorResponse> {
    const files = this.index.fileContainingSymbol(request.symbol);
    if (files === undefined) throw errors.UNKNOWN_SYMBOL(request.symbol);
    return { fileDescriptorProto: files };
  }
}
