/**
 * Dynamic calls: call any method of a svrkit server knowing only its name, with messages written
 * as JSON (the proto3 JSON mapping, protobuf.dev/programming-guides/json), using the server's
 * reflection service for the descriptors. This is what `svrkit call` and `svrkit bench` use, so
 * neither needs the .proto files or generated code.
 *
 * Descriptors are turned into codecs by @bufbuild/protobuf (createFileRegistry, fromJson, toBinary).
 * A method's `(svrkit.method)` option (svrkit/options.proto) is read from the same descriptors
 * (getOption), so the definitions carry `options` as generated ones do.
 */
import {
  create,
  createFileRegistry,
  fromBinary,
  fromJson,
  getOption,
  hasOption,
  ScalarType,
  toBinary,
  toJson,
  type DescMethod,
  type FileRegistry,
  type JsonValue,
  type Message,
} from '@bufbuild/protobuf';
import { reflect } from '@bufbuild/protobuf/reflect';
import { FileDescriptorProtoSchema, FileDescriptorSetSchema, type DescriptorProto, type FileDescriptorProto } from '@bufbuild/protobuf/wkt';
import { ReflectionClient } from '../builtin/gen/svrkit/reflection.js';
import { ServerReflectionClient as GrpcReflectionV1Client, type ServerReflectionRequest, type ServerReflectionResponse } from '../builtin/gen/grpc/reflection/v1/reflection.js';
import { ServerReflectionClient as GrpcReflectionV1AlphaClient } from '../builtin/gen/grpc/reflection/v1alpha/reflection.js';
import type { MessageType, MethodDefinition, MethodKind, MethodOptions } from '../wire/definition.js';
import { RpcError, Status } from '../wire/status.js';
import { configErrors, errors } from '../errors.js';
import type { CallOptions, Channel } from './channel.js';

/** A method resolved through reflection, with JSON and raw-bytes codecs. */
export interface DynamicMethod {
  /** `package.Service/Method`. */
  readonly path: string;
  /** Fully-qualified request and response type names. */
  readonly requestTypeName: string;
  readonly responseTypeName: string;
  /**
   * The kind of rpc, from the descriptor's `client_streaming`/`server_streaming` flags. `json` and
   * `raw` carry it too, so the channel's matching method (`unary`, `serverStream`, `clientStream`,
   * `bidiStream`) accepts them.
   */
  readonly kind: MethodKind;
  /**
   * A definition whose request is a JSON value (proto3 JSON mapping) and whose response is the
   * JSON of the reply (every field shown, defaults included; 64-bit integers as strings). Like
   * `raw`, it carries the method's `options` when the served descriptors have a `(svrkit.method)`
   * option on it (see {@link readMethodOptions}).
   */
  readonly json: MethodDefinition<JsonValue, JsonValue>;
  /**
   * A definition whose request is already-encoded protobuf bytes and whose response is the raw
   * reply bytes (a view, not copied, not decoded): the cheapest possible client, for load tests.
   */
  readonly raw: MethodDefinition<Uint8Array, Uint8Array>;
  /**
   * Encodes a JSON request to protobuf bytes.
   * @throws RpcError INVALID_ARGUMENT when the JSON does not fit the request type.
   */
  encodeRequest(json: JsonValue): Uint8Array;
  /**
   * Decodes reply bytes to JSON.
   * @throws Error when the bytes are not a valid reply message.
   */
  decodeResponse(bytes: Uint8Array): JsonValue;
}

/**
 * Splits a method name: `pkg.Service/Method` or `pkg.Service.Method`.
 * @returns the fully-qualified service name and the method name.
 * @throws Error when the name has no service part.
 */
export function parseMethodName(name: string): { service: string; method: string } {
  const m = /^\.?([A-Za-z_][\w.]*)[/.]([A-Za-z_]\w*)$/.exec(name.trim());
  if (m === null || !m[1]!.includes('.') && !name.includes('/')) {
    throw configErrors.INVALID_METHOD_NAME(name);
  }
  return { service: m[1]!, method: m[2]! };
}

/**
 * Looks a method up through the server's reflection service and builds codecs for it. Methods
 * of every kind resolve; the result's `kind` (also set on `json` and `raw`) says which channel
 * method calls it: `unary`, `serverStream`, `clientStream` or `bidiStream`.
 * @param channel - a channel to the server.
 * @param name - `package.Service/Method`.
 * @param options - call options for the reflection call (deadline, metadata). The call goes to an
 *   instance of the named service (`instancesOf`), so registry targets work too.
 * @returns the method's path, type names, kind, codecs and definitions (see `DynamicMethod`).
 * @throws RpcError NOT_FOUND when the server has no such service or method (or whatever status
 *   the reflection call failed with, e.g. UNAVAILABLE); Error for a malformed name.
 */
export async function resolveMethod(channel: Channel, name: string, options?: CallOptions): Promise<DynamicMethod> {
  const { service, method } = parseMethodName(name);
  // Ask an instance of the service itself (a registry lists application services, not reflection).
  options = { ...options, instancesOf: service };
  const files = channel.protocol === 'grpc' ? await grpcReflectionFiles(channel, service, options) : await svrkitReflectionFiles(channel, service, options);
  const registry = createFileRegistry(
    create(FileDescriptorSetSchema, { file: files.map((b) => withJsonNames(fromBinary(FileDescriptorProtoSchema, b))) }),
  );
  const svc = registry.getService(service);
  if (svc === undefined) throw errors.SERVICE_NOT_DESCRIBED(service);
  const m = svc.methods.find((x) => x.name === method);
  if (m === undefined) {
    throw errors.METHOD_NOT_FOUND(service, method, svc.methods.map((x) => x.name));
  }
  const input = m.input;
  const output = m.output;
  const path = `${service}/${method}`;
  const encodeRequest = (json: JsonValue): Uint8Array => {
    try {
      return toBinary(input, fromJson(input, json, { registry }));
    } catch (err) {
      throw errors.REQUEST_DOES_NOT_FIT.with({ cause: err }, input.typeName, err);
    }
  };
  const decodeResponse = (bytes: Uint8Array): JsonValue =>
    toJson(output, fromBinary(output, bytes), { alwaysEmitImplicit: true, registry });
  const methodOptions = readMethodOptions(m, registry);
  const kind = methodKindOf(m.proto.clientStreaming, m.proto.serverStreaming);
  const base = {
    name: method,
    localName: method,
    path,
    kind,
    requestTypeName: input.typeName,
    responseTypeName: output.typeName,
    ...(methodOptions ? { options: methodOptions } : {}),
  };
  return {
    path,
    requestTypeName: input.typeName,
    responseTypeName: output.typeName,
    kind,
    encodeRequest,
    decodeResponse,
    json: { ...base, requestType: jsonCodec(encodeRequest), responseType: { ...jsonCodec(encodeRequest), decode: decodeResponse } },
    raw: { ...base, requestType: rawCodec, responseType: rawCodec },
  };
}

/** The files that define `service` and their imports, from `svrkit.Reflection`. */
async function svrkitReflectionFiles(channel: Channel, service: string, options: CallOptions): Promise<Uint8Array[]> {
  const reflection = new ReflectionClient(channel);
  try {
    return (await reflection.fileContainingSymbol({ symbol: service }, options)).fileDescriptorProto;
  } catch (err) {
    if (err instanceof RpcError && err.code === Status.NOT_FOUND) {
      const { services } = await reflection.listServices({}, options);
      throw errors.SERVICE_NOT_SERVED(service, channel.target, services);
    }
    throw err;
  }
}

/**
 * The files that define `service` and their imports, from gRPC's server reflection
 * (grpc/grpc doc/server-reflection.md): `grpc.reflection.v1`, else `v1alpha` for servers that
 * only have that. Imports a response left out are asked for by name.
 */
async function grpcReflectionFiles(channel: Channel, service: string, options: CallOptions): Promise<Uint8Array[]> {
  const first = (await grpcReflect(channel, [{ host: '', messageRequest: { $case: 'fileContainingSymbol', value: service } }], options))[0];
  const found = first?.messageResponse;
  if (found?.$case !== 'fileDescriptorResponse') {
    if (found?.$case === 'errorResponse' && found.value.errorCode !== Status.NOT_FOUND) {
      throw new RpcError(found.value.errorCode, `server reflection: ${found.value.errorMessage}`);
    }
    const listed = (await grpcReflect(channel, [{ host: '', messageRequest: { $case: 'listServices', value: '' } }], options))[0]?.messageResponse;
    const services = listed?.$case === 'listServicesResponse' ? listed.value.service.map((s) => s.name) : [];
    throw errors.SERVICE_NOT_SERVED(service, channel.target, services);
  }
  const files = new Map<string, Uint8Array>();
  const add = (bytes: Uint8Array[]): void => {
    for (const b of bytes) files.set(fromBinary(FileDescriptorProtoSchema, b).name, b);
  };
  add(found.value.fileDescriptorProto);
  // Servers may send only the files not sent before on the stream: fetch missing imports by name.
  for (let round = 0; round < 16; round++) {
    const missing = new Set<string>();
    for (const b of files.values()) for (const dep of fromBinary(FileDescriptorProtoSchema, b).dependency) if (!files.has(dep)) missing.add(dep);
    if (missing.size === 0) break;
    const answers = await grpcReflect(channel, [...missing].map((f) => ({ host: '', messageRequest: { $case: 'fileByFilename' as const, value: f } })), options);
    const before = files.size;
    for (const a of answers) if (a.messageResponse?.$case === 'fileDescriptorResponse') add(a.messageResponse.value.fileDescriptorProto);
    if (files.size === before) break; // the server does not have them: the registry says which
  }
  return [...files.values()];
}

/** Sends reflection requests on one ServerReflectionInfo stream (v1, or v1alpha when v1 is UNIMPLEMENTED) and collects the responses. */
async function grpcReflect(channel: Channel, requests: ServerReflectionRequest[], options: CallOptions): Promise<ServerReflectionResponse[]> {
  try {
    return await collect(new GrpcReflectionV1Client(channel).serverReflectionInfo(requests, options));
  } catch (err) {
    if (!(err instanceof RpcError) || err.code !== Status.UNIMPLEMENTED) throw err;
    return (await collect(new GrpcReflectionV1AlphaClient(channel).serverReflectionInfo(requests, options))) as ServerReflectionResponse[];
  }
}

/**
 * A file descriptor whose fields all have a JSON name: protoc always sets `json_name`, but some
 * reflection servers (@grpc/reflection, from protobufjs) send it empty, which would make every
 * field's JSON key "". An empty one is replaced by what protoc computes (lowerCamelCase).
 */
function withJsonNames(file: FileDescriptorProto): FileDescriptorProto {
  const visit = (m: DescriptorProto): void => {
    for (const f of m.field) if (f.jsonName === '') f.jsonName = protocJsonName(f.name);
    for (const n of m.nestedType) visit(n);
  };
  for (const m of file.messageType) visit(m);
  return file;
}

/** protoc's ToJsonName: underscores dropped, the letter after each upper-cased (`foo_bar` is `fooBar`). */
function protocJsonName(name: string): string {
  let out = '';
  let upper = false;
  for (const c of name) {
    if (c === '_') {
      upper = true;
      continue;
    }
    out += upper ? c.toUpperCase() : c;
    upper = false;
  }
  return out;
}

/** Every item of an async iterable, in order. */
async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

/**
 * The kind of a method from its descriptor's flags (`rpc M(stream A) returns (stream B)`).
 * @param clientStreaming - `MethodDescriptorProto.client_streaming`: the requests stream.
 * @param serverStreaming - `MethodDescriptorProto.server_streaming`: the responses stream.
 * @returns `'unary'`, `'server_streaming'`, `'client_streaming'` or `'bidi_streaming'`.
 */
export function methodKindOf(clientStreaming: boolean, serverStreaming: boolean): MethodKind {
  if (clientStreaming) return serverStreaming ? 'bidi_streaming' : 'client_streaming';
  return serverStreaming ? 'server_streaming' : 'unary';
}

/**
 * Reads a method's `(svrkit.method)` option (svrkit/options.proto) from reflection descriptors, as
 * `svrkit gen` does from compiled ones: only the keys that are set (`idempotent` only when true).
 *
 * The descriptors come from a server, not from the user, so nothing here throws: a value svrkit gen
 * would refuse (a priority outside 0..127) is left out, and so is the whole option when the served
 * `svrkit.method` is not svrkit's (not a message with bool `idempotent` and int32 `priority`).
 *
 * @param method - a method of `registry`.
 * @param registry - the registry built from the served descriptors (it has the extension when the
 *   method's file imports svrkit/options.proto).
 * @returns the option's keys that are set, `{}` when the option is present with defaults only, or
 *   undefined when the method has no such option.
 */
export function readMethodOptions(method: DescMethod, registry: FileRegistry): MethodOptions | undefined {
  const ext = registry.getExtension('svrkit.method');
  if (ext === undefined || ext.fieldKind !== 'message' || !hasOption(method, ext)) return undefined;
  const idempotent = ext.message.fields.find((f) => f.name === 'idempotent');
  const priority = ext.message.fields.find((f) => f.name === 'priority');
  if (idempotent?.fieldKind !== 'scalar' || idempotent.scalar !== ScalarType.BOOL) return undefined;
  if (priority?.fieldKind !== 'scalar' || priority.scalar !== ScalarType.INT32) return undefined;
  let value;
  try {
    value = reflect(ext.message, getOption(method, ext) as Message);
  } catch {
    return undefined; // undecodable option bytes
  }
  const p = value.isSet(priority) ? value.get(priority) : undefined;
  // scope and public came later: a server built with an older svrkit/options.proto lacks them.
  const scopeField = ext.message.fields.find((f) => f.name === 'scope' && f.fieldKind === 'scalar' && f.scalar === ScalarType.STRING);
  const publicField = ext.message.fields.find((f) => f.name === 'public' && f.fieldKind === 'scalar' && f.scalar === ScalarType.BOOL);
  const scope = scopeField !== undefined && value.isSet(scopeField) ? value.get(scopeField) : undefined;
  return {
    ...(value.get(idempotent) === true ? { idempotent: true } : {}),
    ...(typeof p === 'number' && Number.isInteger(p) && p >= 0 && p <= 127 ? { priority: p } : {}),
    ...(typeof scope === 'string' && scope !== '' ? { scope } : {}),
    ...(publicField !== undefined && value.get(publicField) === true ? { public: true } : {}),
  };
}

/** Passes bytes through untouched; `decode` returns a view into the read buffer. */
const rawCodec: MessageType<Uint8Array> = {
  encode: (bytes) => new Encoded(bytes),
  decode: (bytes) => bytes,
  fromPartial: (bytes) => bytes,
};

/** Already-encoded bytes, in the shape of an encoder's result. */
class Encoded {
  constructor(private readonly bytes: Uint8Array) {}
  finish(): Uint8Array {
    return this.bytes;
  }
}

function jsonCodec(encode: (json: JsonValue) => Uint8Array): MessageType<JsonValue> {
  return {
    encode: (json) => ({ finish: () => encode(json) }),
    decode: () => {
      throw new Error('not a response codec');
    },
    fromPartial: (json) => json,
  };
}

export type { JsonValue };
