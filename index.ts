/// <reference types="node" preserve="true" />
// svrkit's declarations use Node types (Buffer, NodeJS.Timeout, node:* modules): apps need @types/node.
/**
 * The `svrkit` package root: the framework's public API (framework/index.ts) and the clients of
 * the flagship services built on it. Generated code and user code import from here (`'svrkit'`).
 * The framework itself never imports services; this file is the only place they meet.
 */
export * from './framework/index.js';
export { PaxosKVClient, type KvListItem, type KvWatchEvent, type PaxosKVClientOptions, type VersionedValue } from './services/paxoskv/client.js';
export type { Configuration as PaxosKVConfiguration, MembershipChange as PaxosKVMembershipChange } from './services/paxoskv/core/membership.js';
export { ConfigClient, type ConfigChange, type ConfigClientOptions, type ConfigInstance, type ConfigReadContext, type ConfigSource } from './services/config/client.js';
export { ConfigAdmin, MAX_HISTORY, type ConfigAdminOptions, type OpOptions } from './services/config/admin.js';
export { ConfigCenterServer, type ConfigCenterServerOptions } from './services/config/service.js';
export { ConfigCenterClient } from './services/config/gen/svrkit/config/config.js';
export { RegistryClient } from './services/registry/gen/svrkit/registry/registry.js';
export { configErrors } from './services/config/errors.js';
export { bucket, parseRule, type GrayContext, type GrayRule } from './services/config/gray.js';
export type { ConfigChanges, ConfigOp, ConfigValues, Gray, NamespaceHead, OpRecord, Release, Resolved } from './services/config/model.js';
export { PaxosQueue, MAX_READ_LIMIT, type PaxosQueueOptions, type PushOptions, type QueueItem, type QueueReadResult } from './services/queue/queue.js';
export { queueErrors } from './services/queue/errors.js';
export { PaxosTable, MAX_SCAN_LIMIT, type Row, type WriteOptions } from './services/table/table.js';
export type { RowChange } from './services/table/table-plan.js';
export { tableErrors } from './services/table/errors.js';
export { runPlan } from './services/paxoskv/run-plan.js';
export type { KvPlan, KvStep, KvStepReply } from './services/paxoskv/plan.js';
export { PaxosKVRegistry } from './services/registry/paxoskv-registry.js';
export { RemoteRegistry } from './services/registry/remote-registry.js';
export { RegistryServer, type RegistryServerOptions } from './services/registry/registry-service.js';
export { registryErrors } from './services/registry/errors.js';

// The services' implementations of framework tables: this package root is their composition root
// (the framework itself never imports services).
import { setup as setupPaxosKVRegistry } from './services/registry/paxoskv-registry.js';
import { setup as setupRemoteRegistry } from './services/registry/remote-registry.js';
setupPaxosKVRegistry();
setupRemoteRegistry();
