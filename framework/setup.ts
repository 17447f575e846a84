/**
 * The composition root: the one place that plugs svrkit's implementations into the tables that
 * look them up, as grpc-js's `index.ts` calls each resolver's and balancer's `setup()`. Tables
 * never import what fills them (`discovery/registry.ts` does not import `file-registry.ts`; the
 * client's `resolver.ts` does not import `discovery/`), so the layers keep pointing down.
 *
 * Importing this module registers everything once: `framework/index.ts` (hence `'svrkit'`),
 * `framework/runtime.ts` (hence every generated client) and the CLI import it, so a channel made
 * through any of them resolves `file:` and `etcd:` targets and `openRegistry` opens both kinds.
 * Code that imports deeper modules directly (`framework/client/channel.js`,
 * `framework/discovery/registry.js`) must import this module too.
 */
import { setup as setupEtcdRegistry } from './discovery/etcd-registry.js';
import { setup as setupFileRegistry } from './discovery/file-registry.js';
import { setup as setupRegistryResolvers } from './discovery/resolvers.js';
import { setup as setupHealthProbe } from './client/health-probe.js';

/**
 * Registers the built-in implementations: the `file` and `etcd` registries (for `openRegistry`),
 * the resolvers of `file:` and `etcd:` targets (for channels), and the health probe of ejected
 * addresses (`svrkit.Health/Check`). Runs when this module is first
 * imported; calling it again re-registers the same implementations (idempotent), e.g. after a test
 * replaced one with `registerResolver`. Takes nothing, returns nothing, throws nothing.
 */
export function setupFramework(): void {
  setupFileRegistry();
  setupEtcdRegistry();
  setupRegistryResolvers();
  setupHealthProbe();
}

setupFramework();
