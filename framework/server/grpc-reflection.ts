/**
 * gRPC's server reflection (`grpc.reflection.v1.ServerReflection` and its older twin
 * `grpc.reflection.v1alpha.ServerReflection`, grpc/grpc doc/server-reflection.md), served by every
 * svrkit server so that grpcurl, Postman and gRPC UIs can list its services and fetch their
 * descriptors without .proto files. Both versions answer from the same `DescriptorIndex` as
 * `svrkit.Reflection`. (@grpc/reflection serves a grpc-js server from a proto-loader package
 * definition; svrkit's descriptors are the bytes its generated code embeds, so this is a thin
 * handler over those instead.)
 */
import { Status } from '../wire/status.js';
import type { CallContext } from '../context/call-context.js';
import type { DeepPartial } from '../builtin/gen/grpc/reflection/v1/reflection.js';
import { ServerReflectionService as V1Service, type ServerReflectionRequest, type ServerReflectionResponse } from '../builtin/gen/grpc/reflection/v1/reflection.js';
import { ServerReflectionService as V1AlphaService } from '../builtin/gen/grpc/reflection/v1alpha/reflection.js';
import type { DescriptorIndex } from './descriptor-index.js';

/**
 * Answers one reflection request (the v1 and v1alpha messages have the same shape).
 * @param index - the server's descriptors.
 * @param request - a `ServerReflectionRequest`.
 * @returns the response: the files asked for (each with its imports), the services, the
 *   extension numbers, or an `error_response` with NOT_FOUND (5) for an unknown file, symbol or
 *   type and INVALID_ARGUMENT (3) for a request with no known field, as grpc-go answers.
 */
export function answerReflection(index: DescriptorIndex, request: ServerReflectionRequest): DeepPartial<ServerReflectionResponse> {
  const base = { validHost: request.host, originalRequest: request };
  const files = (found: Uint8Array[] | undefined, what: string): DeepPartial<ServerReflectionResponse> =>
    found === undefined
      ? { ...base, messageResponse: { $case: 'errorResponse', value: { errorCode: Status.NOT_FOUND, errorMessage: `${what} not found` } } }
      : { ...base, messageResponse: { $case: 'fileDescriptorResponse', value: { fileDescriptorProto: found } } };
  const r = request.messageRequest;
  switch (r?.$case) {
    case 'listServices':
      return { ...base, messageResponse: { $case: 'listServicesResponse', value: { service: index.serviceNames().map((name) => ({ name })) } } };
    case 'fileByFilename':
      return files(index.fileByName(r.value), `file ${JSON.stringify(r.value)}`);
    case 'fileContainingSymbol':
      return files(index.fileContainingSymbol(r.value), `symbol ${JSON.stringify(r.value)}`);
    case 'fileContainingExtension':
      return files(index.fileContainingExtension(r.value.containingType, r.value.extensionNumber), `extension ${r.value.extensionNumber} of ${JSON.stringify(r.value.containingType)}`);
    case 'allExtensionNumbersOfType': {
      const numbers = index.extensionNumbers(r.value);
      if (numbers === undefined) return { ...base, messageResponse: { $case: 'errorResponse', value: { errorCode: Status.NOT_FOUND, errorMessage: `type ${JSON.stringify(r.value)} not found` } } };
      return { ...base, messageResponse: { $case: 'allExtensionNumbersResponse', value: { baseTypeName: r.value.replace(/^\./, ''), extensionNumber: numbers } } };
    }
    default:
      return { ...base, messageResponse: { $case: 'errorResponse', value: { errorCode: Status.INVALID_ARGUMENT, errorMessage: 'a reflection request names no known message_request' } } };
  }
}

/** `grpc.reflection.v1.ServerReflection`: one response per request, in order, until the client half-closes. */
export class GrpcReflectionV1 extends V1Service {
  /** @param index - the server's descriptors. */
  constructor(private readonly index: DescriptorIndex) {
    super();
  }

  override async *serverReflectionInfo(requests: AsyncIterable<ServerReflectionRequest>, _call: CallContext): AsyncIterable<DeepPartial<ServerReflectionResponse>> {
    for await (const request of requests) yield answerReflection(this.index, request);
  }
}

/** `grpc.reflection.v1alpha.ServerReflection` (what older grpcurl and tools call): as v1. */
export class GrpcReflectionV1Alpha extends V1AlphaService {
  /** @param index - the server's descriptors. */
  constructor(private readonly index: DescriptorIndex) {
    super();
  }

  override async *serverReflectionInfo(requests: AsyncIterable<ServerReflectionRequest>, _call: CallContext): AsyncIterable<DeepPartial<ServerReflectionResponse>> {
    for await (const request of requests) yield answerReflection(this.index, request);
  }
}
