/**
 * The config center and registry services one process serves over a PaxosKV cluster: every
 * `svrkit kv serve` replica (unless `--no-services`), and `svrkit config serve` (a stateless
 * process). Both are PaxosKV clients of the cluster, over one client.
 */
import { ConfigCenterServer } from '../../services/config/service.js';
import { PaxosKVClient } from '../../services/paxoskv/client.js';
import { RegistryServer } from '../../services/registry/registry-service.js';
import type { ChannelOptions } from '../client/channel.js';

/** The services, and how to stop them. */
export interface CenterServices {
  readonly config: ConfigCenterServer;
  readonly registry: RegistryServer;
  /** Ends their watches and closes their PaxosKV client. */
  close(): Promise<void>;
}

/**
 * Makes the services for a cluster (nothing connects until a call comes).
 * @param peers - the PaxosKV voters' addresses, `host:port` each; the first is tried first (a
 *   replica process puts itself first).
 * @param channel - options of the channels to them (`tls` for a cluster over TLS).
 * @returns the services, to add to a server.
 */
export function centerServices(peers: readonly string[], channel?: ChannelOptions): CenterServices {
  const kv = new PaxosKVClient({ peers, channel });
  const config = new ConfigCenterServer(kv);
  const registry = new RegistryServer(kv);
  return {
    config,
    registry,
    close: async () => {
      config.close();
      await registry.close();
      kv.close();
    },
  };
}
