/**
 * `svrkit kv member list|add|remove|replace|abort`: the members of a PaxosKV cluster, changed online
 * (services/paxoskv/core/membership.ts). A change goes through a joint configuration and ends once
 * its new voters have synced every key; the commands wait for that (`--timeout`, default 60 s).
 *
 *   svrkit kv member list
 *   svrkit kv serve --id 4 --address 127.0.0.1:7104 --join 1=127.0.0.1:7101 --data-dir DIR   (first)
 *   svrkit kv member add 4 --address 127.0.0.1:7104 [--learner]
 *   svrkit kv member replace 3 4 --address 127.0.0.1:7104
 *   svrkit kv member remove 3
 *   svrkit kv member abort        (a change whose new member never came up: back to the first half)
 *
 * In a cluster of many groups, `--group G` names the group (each has its own members); after a
 * change, the routing table gets the group's new addresses (a new routing epoch).
 */
import { InvalidArgumentError, type Command } from 'commander';
import { PaxosKVClient } from '../../services/paxoskv/client.js';
import type { Configuration, MembershipChange } from '../../services/paxoskv/core/membership.js';
import { membershipFromPb } from '../../services/paxoskv/membership-codec.js';
import { RpcError, Status, statusName } from '../wire/status.js';
import { clusterChannel, resolveClientCluster } from './kv-cluster.js';
import { jsonLine, refuse, withClient, withClientOptions, type ClientFlags } from './kv-client-command.js';
import { intOption, reportError } from './flags.js';

const memberId = intOption('member id', 1, 0xffff);

/**
 * Parses `--address host:port`.
 * @throws InvalidArgumentError when it is not host:port with a port in 1..65535.
 */
export function parseMemberAddress(text: string): string {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^\s:/[\]]+):(\d{1,5})$/.exec(text.trim());
  if (m === null || Number(m[2]) < 1 || Number(m[2]) > 65535) throw new InvalidArgumentError(`'${text}' is not host:port`);
  return text.trim();
}

/** A configuration as one JSON object: epoch, voters, learners, the change under way, addresses. */
function configurationJson(c: Configuration): Record<string, unknown> {
  return {
    epoch: c.epoch,
    voters: c.voters,
    learners: c.learners,
    ...(c.next === undefined ? {} : { changing: true, next: { voters: c.next.voters, learners: c.next.learners } }),
    ...(c.addresses === undefined ? {} : { addresses: c.addresses }),
  };
}

/** The highest-epoch configuration the `n` replicas of `kv` report in their own status (not linearizable), or undefined when none answers. */
async function newestLocalConfiguration(kv: PaxosKVClient, n: number, timeoutMs: number): Promise<Configuration | undefined> {
  let best: Configuration | undefined;
  for (let i = 0; i < n; i++) {
    try {
      const s = await kv.status(i, { timeoutMs: Math.min(timeoutMs, 2000) });
      if (s.configuration !== undefined && (best === undefined || Number(s.configuration.epoch) > best.epoch)) best = membershipFromPb(s.configuration);
    } catch {
      // down: the next one
    }
  }
  return best;
}

/** The flags of the member commands. */
type MemberFlags = ClientFlags & { group?: number };

/** Runs a change and prints the configuration it led to, with the time it took (ms) and, in a cluster of many groups, the routing epoch after it. */
function change(flags: MemberFlags, what: MembershipChange): Promise<void> {
  return withClient(flags, async () => undefined, async (kv) => {
    const started = Date.now();
    const c = await kv.changeMembers(what, { timeoutMs: flags.timeout, ...(flags.group === undefined ? {} : { group: flags.group }) });
    return { ...(flags.group === undefined ? {} : { group: flags.group, routingEpoch: kv.routing?.epoch }), ...configurationJson(c), ms: Date.now() - started };
  });
}

/** Adds `--group <n>`. */
const withGroup = (cmd: Command): Command => cmd.option('--group <n>', 'in a cluster of many groups: the group (each has its own members)', intOption('group', 1, 0xffff));

/**
 * Adds `svrkit kv member ...` to the `kv` command.
 * @param kv - the `svrkit kv` command.
 */
export function addKvMemberCommands(kv: Command): void {
  const member = kv.command('member').description('the members of the cluster, changed online: list, add, remove, replace (a change waits until its new voters have copied every key)');
  const sub = (name: string, description: string) => withGroup(withClientOptions(member.command(name).description(description), 60_000));

  withGroup(withClientOptions(member.command('list').description('the configuration (read linearizably), then one JSON line per member: address, role, and its own view (mode, epoch, keys, sync)')))
    .action(async (flags: MemberFlags) => {
      let kv: PaxosKVClient;
      let tls: Awaited<ReturnType<typeof clusterChannel>>;
      let peerCount = 0;
      try {
        const cluster = await resolveClientCluster(flags);
        tls = await clusterChannel(cluster.tlsDir);
        kv = new PaxosKVClient({ peers: [...cluster.peers.values()], defaultTimeoutMs: flags.timeout, channel: tls });
        peerCount = cluster.peers.size;
      } catch (err) {
        refuse(err);
        return;
      }
      try {
        let c: Configuration;
        const group = flags.group === undefined ? {} : { group: flags.group };
        try {
          c = await kv.members(group);
          process.stdout.write(jsonLine({ ...group, ...configurationJson(c) }));
        } catch (err) {
          // No linearizable read (most members down, say): the newest configuration any replica
          // holds, marked as such, so that the rows below still show who is up.
          // A group the table lacks, or no table: nothing of that group to show.
          if (err instanceof RpcError && err.code === Status.INVALID_ARGUMENT) throw err;
          const replicas = flags.group === undefined ? undefined : kv.routing?.groups.find((g) => g.id === flags.group)?.replicas;
          if (flags.group !== undefined && replicas === undefined) throw err;
          const ofGroup = replicas === undefined ? undefined : new PaxosKVClient({ peers: replicas, channel: tls });
          const seen = await newestLocalConfiguration(ofGroup ?? kv, replicas?.length ?? peerCount, flags.timeout).finally(() => ofGroup?.close());
          if (seen === undefined) throw err;
          c = seen;
          process.stderr.write(`svrkit: the configuration could not be read through a quorum (${err instanceof RpcError ? `${statusName(err.code)}: ${err.message}` : String(err)}); showing the newest one a replica holds\n`);
          process.stdout.write(jsonLine({ ...group, ...configurationJson(c), linearizable: false }));
        }
        const roles = new Map<number, string>();
        for (const l of [...c.learners, ...(c.next?.learners ?? [])]) roles.set(l, 'learner');
        for (const v of [...c.voters, ...(c.next?.voters ?? [])]) roles.set(v, 'voter');
        const ids = [...roles.keys()].sort((a, b) => a - b);
        const addresses = ids.map((id) => c.addresses?.[id]);
        const known = ids.filter((_, i) => addresses[i] !== undefined);
        // Each member's own view, asked of that member.
        const each = known.length === 0 ? undefined : new PaxosKVClient({ peers: known.map((id) => c.addresses![id]!), channel: tls });
        try {
          for (const id of ids) {
            const address = c.addresses?.[id];
            const row: Record<string, unknown> = { id, address: address ?? null, role: roles.get(id) };
            if (c.next !== undefined) row.change = c.voters.includes(id) ? (c.next.voters.includes(id) ? 'stays' : 'leaves') : c.next.voters.includes(id) ? 'joins' : 'learner';
            if (each !== undefined && address !== undefined) {
              try {
                const s = await each.status(known.indexOf(id), { timeoutMs: Math.min(flags.timeout, 2000) });
                Object.assign(row, {
                  up: true,
                  mode: s.mode,
                  epoch: s.epoch.toString(),
                  keys: s.keys.toString(),
                  ...(s.syncing ? { sync: { listed: s.syncListed, of: s.syncSources, keysWaiting: s.syncKeysWaiting.toString() } } : {}),
                  ...(s.failure === '' ? {} : { failure: s.failure }),
                });
              } catch (err) {
                Object.assign(row, { up: false, error: err instanceof RpcError ? `${statusName(err.code)}: ${err.message}` : String(err) });
              }
            }
            process.stdout.write(jsonLine(row));
          }
        } finally {
          each?.close();
        }
      } catch (err) {
        reportError(err);
      } finally {
        kv.close();
      }
    });

  sub('add', 'add a member (start it first: svrkit kv serve --id <id> --address <host:port> --join <peers>); it copies every key before it counts toward a quorum')
    .argument('<id>', 'the new member\'s id (1-65535)', memberId)
    .option('--address <host:port>', 'where the new member listens (needed for a new member)', parseMemberAddress)
    .option('--learner', 'it only learns (no votes, no clients)')
    .action((id: number, flags: MemberFlags & { address?: string; learner?: boolean }) =>
      change(flags, { kind: 'add', member: id, ...(flags.learner === true ? { learner: true } : {}), ...(flags.address === undefined ? {} : { address: flags.address }) }),
    );

  sub('remove', 'remove a member; it stops serving and says why (keep its process up until every member shows the new epoch: it tells the configuration to any that missed it)')
    .argument('<id>', 'the member to remove', memberId)
    .action((id: number, flags: MemberFlags) => change(flags, { kind: 'remove', member: id }));

  sub('replace', 'replace a member (a dead one, say) by a new one, in one change: start the new one first with kv serve --join')
    .argument('<old>', 'the member to remove', memberId)
    .argument('<new>', 'the new member\'s id', memberId)
    .requiredOption('--address <host:port>', 'where the new member listens', parseMemberAddress)
    .action((old: number, added: number, flags: MemberFlags & { address: string }) => change(flags, { kind: 'replace', remove: old, add: added, address: flags.address }));

  sub('abort', 'take the change under way back to its first half (one whose new member never came up or cannot catch up); nothing when none is under way')
    .action((flags: MemberFlags) => change(flags, { kind: 'abort' }));
}
