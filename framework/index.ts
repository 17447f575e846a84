/**
 * svrkit's public API. Generated code and user code import only from here (`from 'svrkit'`).
 * Importing it runs the composition root (`setup.ts`), which registers the `file` and `etcd`
 * registries and their resolvers.
 */
import './setup.js';
export { Status, statusName, parseStatus, RpcError, toRpcError, isErrorReason, type Metadata, type RpcErrorOptions } from './wire/status.js';
export {
  errors,
  configErrors,
  defineErrors,
  ConfigError,
  type RpcErrorEntry,
  type RpcErrorSpec,
  type RpcErrorCatalogue,
  type CreateErrorOptions,
  type ConfigErrorEntry,
  type ConfigErrorCatalogue,
} from './errors.js';
export {
  serviceDefinition,
  type MessageType,
  type MethodDefinition,
  type MethodOptions,
  type ServiceDefinition,
  type ServiceImplementation,
  type UnaryHandler,
  type ServerStreamingHandler,
  type ClientStreamingHandler,
  type BidiStreamingHandler,
  type MethodKind,
  methodKind,
} from './wire/definition.js';
export { currentCall, coroutineLocal, withoutCall, type CallAuth, type CallContext, type CoroutineLocal } from './context/call-context.js';
export { MAX_RING_KEYS, parseKeyRing, type KeyRing, type TicketKey } from './tickets/key-ring.js';
export { TicketIssuer, type TicketClaims, type TicketIssuerOptions } from './tickets/ticket-issuer.js';
export { MAX_TICKET_LENGTH, TicketVerifier, type TicketAuth, type TicketCheck, type TicketFailure, type TicketVerifierOptions } from './tickets/ticket-verifier.js';
export { Channel, createChannel, setDefaultClientObserver, type CallOptions, type ChannelOptions } from './client/channel.js';
export { type ClientObserver, type ThrottleReason } from './client/observer.js';
export { type ServerObserver, type RejectReason } from './server/observer.js';
export {
  AdmissionController,
  priorityLevel,
  userPriority,
  ADMIT_ALL,
  DEFAULT_BUSINESS_PRIORITY,
  type AdmissionOptions,
  type WindowLoad,
  type WindowReport,
} from './overload/admission.js';
export { AdaptiveThrottle, type AdaptiveThrottleOptions } from './overload/throttle.js';
export { SvrkitMetrics, type SvrkitMetricsOptions, type MetricsEndpoint, type WatchedServer } from './metrics/metrics.js';
export { resolveMethod, parseMethodName, type DynamicMethod, type JsonValue } from './client/dynamic.js';
export {
  Server,
  type ServerOptions,
  type OverloadOptions,
  type ServerInterceptor,
  type ServerHandler,
  type ServerLogger,
  type CloseOptions,
} from './server/server.js';
export { type ClientCall, type ClientInvoker, type ClientInterceptor, type ClientStreamInvoker, type ClientStreamInterceptor } from './client/channel.js';
export { type ServerStreamHandler, type ServerStreamInterceptor } from './server/stream-call.js';
export { INITIAL_STREAM_WINDOW } from './wire/frame.js';
export { tcpTransport, type Transport, type TransportListener, type ByteStream, type PeerIdentity } from './transport/transport.js';
export { certificateUris, subjectAltNameUris, tlsClientTransport, tlsServerTransport, type Pem, type TlsClientOptions, type TlsServerOptions } from './transport/tls-transport.js';
export { MemoryTransport } from './transport/memory.js';
export { registerResolver, parseTarget, parseAddress, type Resolver, type ResolverFactory, type ResolverListener, type ParsedTarget } from './client/resolver.js';
export { type BackoffOptions, type KeepaliveOptions } from './client/client-connection.js';
export { type BalancerName } from './client/balancer.js';
export { type MethodConfig } from './client/method-config.js';
export { type OutlierDetectionOptions } from './client/outlier.js';
export { PUSHBACK_KEY, type RetryPolicy, type HedgingPolicy, type RetryThrottleOptions } from './client/retry.js';
export { DEFAULT_MAX_FRAME_BYTES } from './wire/frame.js';
export { compareInstances, DEFAULT_LEASE_TTL_MS, leaseTtlMs, normalizeInstance, sameInstances, type Instance, type InstanceInput } from './discovery/instance.js';
export {
  DEFAULT_ETCD_PREFIX,
  openRegistry,
  parseRegistryUri,
  registerRegistry,
  type HostsLocation,
  type Registry,
  type RegistryFactory,
  type RegistryLocation,
  type Registration,
  type RegisterOptions,
} from './discovery/registry.js';
