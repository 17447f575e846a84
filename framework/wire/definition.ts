/**
 * Service and method definitions: what `svrkit gen` emits for each service in a .proto file, and
 * what the server and the client read to encode, decode and route calls.
 *
 * Generated code builds these objects; user code rarely touches them directly.
 */

/**
 * The codec of one protobuf message type. ts-proto's generated `MessageFns<T>` objects satisfy
 * this shape, so a generated message constant (e.g. `HelloRequest`) is a `MessageType<HelloRequest>`.
 */
export interface MessageType<T> {
  /**
   * Encodes `message` (a complete message, not a partial one). `finish()` returns the bytes. svrkit
   * passes a shared writer as the second argument (ts-proto's `encode(message, writer)`); a codec
   * may ignore it and use its own.
   */
  encode(message: T, writer?: any): { finish(): Uint8Array };
  /** Decodes protobuf bytes. Throws on malformed input (truncated varint, bad wire type, ...). */
  decode(input: Uint8Array): T;
  /** Builds a complete message from a deep-partial object, filling proto3 defaults. */
  fromPartial(object: any): T;
}

/**
 * svrkit's per-method options, from `option (svrkit.method) = {...}` in the .proto (the option is
 * defined in svrkit's `svrkit/options.proto`, which `svrkit gen` finds without `-I`). A key is
 * present only when the .proto sets it.
 */
export interface MethodOptions {
  /**
   * `true`: the method may be retried or hedged after the request may have reached the server
   * (running it twice has the effect of running it once). Absent: not idempotent.
   */
  readonly idempotent?: boolean;
  /**
   * The method's business priority for overload control, DAGOR convention: a lower number is more
   * important; an integer in 0..127 (`svrkit gen` refuses anything else). Absent: the server's default.
   */
  readonly priority?: number;
  /** The scope a caller's ticket must grant (servers that check tickets refuse others with PERMISSION_DENIED). Absent: any valid ticket. */
  readonly scope?: string;
  /** `true`: the method needs no ticket, even on a server that requires them. */
  readonly public?: boolean;
}

/**
 * The four kinds of rpc, named as connect-es names them (`MethodKind`):
 * - `unary`: one request, one response;
 * - `server_streaming`: one request, a stream of responses (`rpc Watch(Req) returns (stream Res)`);
 * - `client_streaming`: a stream of requests, one response;
 * - `bidi_streaming`: a stream each way, independent of each other.
 */
export type MethodKind = 'unary' | 'server_streaming' | 'client_streaming' | 'bidi_streaming';

/** One rpc of a service. */
export interface MethodDefinition<Req = any, Res = any> {
  /** The rpc name as written in the .proto file, e.g. `'SayHello'`. */
  readonly name: string;
  /** The camelCase name of the handler and client method, e.g. `'sayHello'`. */
  readonly localName: string;
  /** The full method name on the wire: `package.Service/Method`, e.g. `'helloworld.Greeter/SayHello'`. */
  readonly path: string;
  /** The kind of rpc; absent means `'unary'` (definitions written before streaming existed). */
  readonly kind?: MethodKind;
  /** Codec of the request message. */
  readonly requestType: MessageType<Req>;
  /** Codec of the response message. */
  readonly responseType: MessageType<Res>;
  /** Fully-qualified request type name without a leading dot, e.g. `'helloworld.HelloRequest'`. */
  readonly requestTypeName: string;
  /** Fully-qualified response type name without a leading dot. */
  readonly responseTypeName: string;
  /**
   * The method's `(svrkit.method)` option, with only the keys the .proto sets (`{}` when the option
   * sets nothing but defaults, such as `idempotent: false`). Absent when the method has no such option.
   */
  readonly options?: MethodOptions;
}

/** A service: its name, its methods and the descriptors that describe it (for reflection). */
export interface ServiceDefinition {
  /** The service name as written in the .proto file, e.g. `'Greeter'`. */
  readonly name: string;
  /** The fully-qualified service name, e.g. `'helloworld.Greeter'`. */
  readonly fullName: string;
  /** The methods, keyed by their camelCase `localName`. */
  readonly methods: Readonly<Record<string, MethodDefinition>>;
  /**
   * Base64 of the serialized `google.protobuf.FileDescriptorProto` of the file that defines the
   * service and of every file it imports, transitively; imports come before the files that use them.
   * The reflection service serves these so that `svrkit call` needs no local .proto.
   */
  readonly files: readonly string[];
}

/**
 * The property key under which a service implementation carries its definition. Generated
 * `XService` base classes set it, so `server.addService(new MyGreeter())` knows what it serves.
 * It is a registered symbol (`Symbol.for`), so two copies of svrkit in one process agree on it.
 */
export const serviceDefinition: unique symbol = Symbol.for('svrkit.serviceDefinition') as any;

/**
 * A unary handler as the server invokes it. It may return a deep-partial response: fields left
 * out encode as their proto3 defaults.
 */
export type UnaryHandler<Req = any, Res = any, Call = unknown> = (request: Req, call: Call) => Promise<Res>;

/**
 * A server-streaming handler: one request in, an async iterable of (deep-partial) responses out,
 * usually an `async *` generator. The server pulls the next response only while the client has
 * granted credit (flow control), so a generator is paused, not buffered, behind a slow reader.
 */
export type ServerStreamingHandler<Req = any, Res = any, Call = unknown> = (request: Req, call: Call) => AsyncIterable<Res>;

/**
 * A client-streaming handler: an async iterable of requests in (it ends when the client
 * half-closes), one (deep-partial) response out.
 */
export type ClientStreamingHandler<Req = any, Res = any, Call = unknown> = (requests: AsyncIterable<Req>, call: Call) => Promise<Res>;

/** A bidi-streaming handler: an async iterable of requests in, an async iterable of (deep-partial) responses out. */
export type BidiStreamingHandler<Req = any, Res = any, Call = unknown> = (requests: AsyncIterable<Req>, call: Call) => AsyncIterable<Res>;

/**
 * The kind of a method definition, `'unary'` when the definition does not say.
 * @param method - a method definition.
 * @returns its `kind`, or `'unary'`.
 */
export function methodKind(method: MethodDefinition): MethodKind {
  return method.kind ?? 'unary';
}

/** An object that implements a service and says which one (generated base classes do this). */
export interface ServiceImplementation {
  readonly [serviceDefinition]: ServiceDefinition;
}

/** The wire code of each method kind (the request header's `k`; see header.ts). */
export const METHOD_KIND_CODE: Readonly<Record<MethodKind, number>> = Object.freeze({
  unary: 0,
  server_streaming: 1,
  client_streaming: 2,
  bidi_streaming: 3,
});
