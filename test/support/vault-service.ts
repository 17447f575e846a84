/**
 * The Vault test service (test/protos/runtime/vault.proto), as a module `svrkit run` serves:
 * `svrkit run test/support/vault-service.ts --port 0 --ticket-keys keys.json`. Each method answers
 * the identity its server verified; `Relay` calls the next Vault of a chain with no ticket passed
 * by hand (it flows through the call context).
 */
import { currentCall, Channel } from '../../index.js';
import { VaultClient, VaultService, type Identity, type RelayRequest } from '../.tmp/gen/vault/vault.js';

/** Channels to the next hops, by address. */
const channels = new Map<string, VaultClient>();

function identity(hops: string[] = []): Identity {
  const call = currentCall()!;
  return {
    userId: call.auth?.userId ?? '',
    scopes: [...(call.auth?.scopes ?? [])],
    authenticated: call.auth !== undefined,
    keyId: call.auth?.keyId ?? '',
    userPriority: call.userPriority,
    hops: [...hops, process.env['VAULT_NAME'] ?? String(process.pid)],
    peerSubject: call.peerIdentity?.subject ?? '',
    peerUris: [...(call.peerIdentity?.uris ?? [])],
  };
}

/** The Vault: see the module comment. */
export class Vault extends VaultService {
  override async whoami(): Promise<Identity> {
    return identity();
  }

  override async readInbox(): Promise<Identity> {
    return identity();
  }

  override async open(): Promise<Identity> {
    return identity();
  }

  override async relay(request: RelayRequest): Promise<Identity> {
    const [next, ...rest] = request.targets;
    if (next === undefined) return identity();
    let client = channels.get(next);
    if (client === undefined) channels.set(next, (client = new VaultClient(new Channel(next))));
    const reply = rest.length > 0 ? await client.relay({ targets: rest, method: request.method }) : request.method === 'ReadInbox' ? await client.readInbox({}) : await client.whoami({});
    return { ...reply, hops: [...reply.hops, process.env['VAULT_NAME'] ?? String(process.pid)] };
  }
}

export default new Vault();
