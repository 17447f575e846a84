/**
 * Instances as the `svrkit.registry.Registry` service carries them (proto/svrkit/registry/registry.proto),
 * and the checks of its request fields: shared by the service (registry-service.ts) and its client
 * (remote-registry.ts). Pure.
 */
import { DEFAULT_ETCD_PREFIX, normalizeInstance, type Instance } from '../../framework/index.js';
import type { Instance as WireInstance } from './gen/svrkit/registry/registry.js';

/**
 * An instance as sent.
 * @returns the message fields of `instance`.
 */
export function toWire(instance: Instance): WireInstance {
  return { service: instance.service, address: instance.address, zone: instance.zone, labels: { ...instance.labels }, weight: instance.weight };
}

/**
 * An instance as received, checked.
 * @param where - names the instance in error messages.
 * @returns the normalized instance (a weight of 0 is the default, 1).
 * @throws Error naming the bad field (see `normalizeInstance`).
 */
export function fromWire(wire: WireInstance | undefined, where: string): Instance {
  if (wire === undefined) throw new Error(`${where}: no instance`);
  return normalizeInstance({ ...wire, weight: wire.weight === 0 ? 1 : wire.weight }, where);
}

/** Longest lease TTL a `Register` may carry (ms): one day. Clients and servers hold to the same bound. */
export const MAX_SERVED_TTL_MS = 24 * 60 * 60 * 1000;

/**
 * Checks a registry key prefix: `/` and segments of printable ASCII, no empty segment, no trailing `/`.
 * @param prefix - the prefix sent; "" means the default `/svrkit/services`.
 * @returns the prefix to use.
 * @throws Error naming the prefix when it is malformed or longer than 512 characters.
 */
export function checkPrefix(prefix: string): string {
  if (prefix === '') return DEFAULT_ETCD_PREFIX;
  if (prefix.length > 512 || !/^[\x21-\x7e]+$/.test(prefix) || !prefix.startsWith('/') || prefix.slice(1).split('/').some((seg) => seg === '')) {
    throw new Error(`registry prefix ${JSON.stringify(prefix.slice(0, 80))}: expected /segment[/segment...] of printable ASCII with no empty segment, e.g. ${DEFAULT_ETCD_PREFIX}`);
  }
  return prefix;
}

/**
 * Checks a service name as a registry request names it: 1 to 256 printable ASCII characters
 * (so its PaxosKV key, with a 512-character prefix, stays under PaxosKV's 1 KiB key limit).
 * @returns the name.
 * @throws Error naming the service when it is empty, too long or holds other characters.
 */
export function checkService(service: string): string {
  if (!/^[\x21-\x7e]{1,256}$/.test(service)) {
    throw new Error(`service ${JSON.stringify(service.slice(0, 80))}: expected 1 to 256 printable ASCII characters, e.g. helloworld.Greeter`);
  }
  return service;
}
