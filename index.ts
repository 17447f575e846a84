/// <reference types="node" preserve="true" />
// svrkit's declarations use Node types (Buffer, NodeJS.Timeout, node:* modules): apps need @types/node.
/**
 * The `svrkit` package root: the framework's public API (framework/index.ts) and the clients of
 * the flagship services built on it. Generated code and user code import from here (`'svrkit'`).
 * The framework itself never imports services; this file is the only place they meet.
 */
export * from './framework/index.js';
export { PaxosKVClient, type KvListItem, type KvWatchEvent, type PaxosKVClientOptions, type VersionedValue } from './services/paxoskv/client.js';
