/**
 * `svrkit kv`: run and use PaxosKV clusters.
 *
 *   svrkit kv serve --id N --peers 1=h:p,2=h:p,3=h:p --data-dir DIR [--learners IDS] [--rejoin]
 *   svrkit kv up [--replicas 3] [--data-dir ./data/paxoskv] [--base-port 7101]
 *   svrkit kv get|put|delete|cas|status --peers <list> ...
 *
 * Client commands print one JSON object per result on stdout; errors print `ERROR: <STATUS>:
 * <message>` on stderr and exit 1.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import { PaxosKVClient } from '../../services/paxoskv/client.js';
import { PaxosKVReplica } from '../../services/paxoskv/replica-server.js';
import { parseAddress } from '../client/resolver.js';
import { RpcError, statusName } from '../wire/status.js';
import { intOption, positiveMs, reportError } from './flags.js';

/**
 * Parses a peer list: `1=127.0.0.1:7101,2=127.0.0.1:7102` (ids given) or
 * `127.0.0.1:7101,127.0.0.1:7102` (ids 1, 2, ... in order).
 * @returns member id -> address.
 * @throws InvalidArgumentError for malformed entries or duplicate ids.
 */
export function parsePeers(text: string): Map<number, string> {
  const peers = new Map<number, string>();
  const items = text.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  items.forEach((item, i) => {
    const m = /^(\d+)=(.+)$/.exec(item);
    const id = m === null ? i + 1 : Number(m[1]);
    const address = m === null ? item : m[2]!;
    if (!Number.isInteger(id) || id < 1 || id > 0xffff) throw new InvalidArgumentError(`peer '${item}': member ids are 1-65535`);
    try {
      parseAddress(address);
    } catch (err) {
      throw new InvalidArgumentError(`peer '${item}': ${(err as Error).message}`);
    }
    if (peers.has(id)) throw new InvalidArgumentError(`peer id ${id} appears twice`);
    peers.set(id, address);
  });
  if (peers.size === 0) throw new InvalidArgumentError('the peer list is empty');
  return peers;
}

/**
 * Parses `--learners 3` or `--learners 4,5`.
 * @returns the member ids.
 * @throws InvalidArgumentError for an id that is not 1-65535, or a repeated id.
 */
export function parseLearners(text: string): number[] {
  const ids = text.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  const out: number[] = [];
  for (const t of ids) {
    const id = Number(t);
    if (!/^\d+$/.test(t) || id < 1 || id > 0xffff) throw new InvalidArgumentError(`learner '${t}' is not a member id (1-65535)`);
    if (out.includes(id)) throw new InvalidArgumentError(`learner ${id} appears twice`);
    out.push(id);
  }
  if (out.length === 0) throw new InvalidArgumentError('--learners is empty');
  return out;
}

function version(v: string): bigint {
  if (!/^\d+$/.test(v.trim())) throw new InvalidArgumentError(`version '${v}' is not a whole number (0 = absent)`);
  return BigInt(v.trim());
}

async function readStdin(): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** Shows bytes as UTF-8 text when they are valid UTF-8, else as `base64:...`. */
function showValue(bytes: Uint8Array): string {
  const decoded = new TextDecoder('utf-8', { fatal: false }).decode(bytes);
  return Buffer.from(decoded, 'utf8').equals(Buffer.from(bytes)) ? decoded : `base64:${Buffer.from(bytes).toString('base64')}`;
}


interface ClientFlags {
  peers: Map<number, string>;
  timeout: number;
}

async function withClient(flags: ClientFlags, fn: (kv: PaxosKVClient) => Promise<unknown>): Promise<void> {
  const kv = new PaxosKVClient({ peers: [...flags.peers.values()], defaultTimeoutMs: flags.timeout });
  try {
    const out = await fn(kv);
    process.stdout.write(JSON.stringify(out, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)) + '\n');
  } catch (err) {
    reportError(err);
  } finally {
    kv.close();
  }
}

/** Adds `svrkit kv ...` to a commander program. */
export function addKvCommands(program: Command): void {
  const kv = program.command('kv').description('PaxosKV: a leaseless per-key Paxos key-value store (serve, up, get, put, delete, cas, status)');
  const peersOption = ['--peers <list>', 'replicas: 1=host:port,2=host:port,... (or host:port,... for ids 1, 2, ...)', parsePeers] as const;

  kv.command('serve')
    .description('run one replica in the foreground; it listens on its own entry of --peers')
    .requiredOption('--id <n>', 'this replica\'s member id', intOption('id', 1, 0xffff))
    .requiredOption(...peersOption)
    .requiredOption('--data-dir <dir>', 'where this replica keeps its records (created when absent)')
    .option('--learners <ids>', 'members that only learn (no votes, no clients; outside the majority); give every replica the same list', parseLearners)
    .option('--rejoin', 'this replica lost its data: start it on an empty --data-dir; it catches up and votes only once that is safe')
    .action(async (opts: { id: number; peers: Map<number, string>; dataDir: string; learners?: number[]; rejoin?: boolean }) => {
      let replica: PaxosKVReplica;
      const learners = opts.learners ?? [];
      const say = (line: string) => process.stdout.write(`svrkit: paxoskv replica ${opts.id} ${line}\n`);
      try {
        if (!opts.peers.has(opts.id)) throw new InvalidArgumentError(`--id ${opts.id} is not in --peers`);
        for (const l of learners) if (!opts.peers.has(l)) throw new InvalidArgumentError(`--learners: ${l} is not in --peers`);
        const voters = opts.peers.size - learners.length;
        if (voters === 0) throw new InvalidArgumentError('--learners names every member: at least one must vote');
        if (voters % 2 === 0) throw new InvalidArgumentError(`a cluster needs an odd number of voters, got ${voters} (make one more a learner, or add a voter)`);
        replica = await PaxosKVReplica.start({
          id: opts.id,
          members: opts.peers,
          learners,
          dataDir: opts.dataDir,
          rejoin: opts.rejoin === true,
          onModeChange: (mode, r) => {
            if (mode === 'rejoining') say(`rejoining: it lost its data; fencing every key the other voters hold before it votes (see kv status)`);
            else if (mode === 'voter') say(`voting (incarnation ${r.status().incarnation})`);
          },
        });
      } catch (err) {
        reportError(err);
        process.exit(1);
      }
      const role = learners.includes(opts.id) ? ' (learner)' : '';
      process.stdout.write(
        `svrkit: paxoskv replica ${opts.id}${role} of [${[...opts.peers.keys()].join(',')}] ` +
          `serving on ${replica.address} (pid ${process.pid}), data in ${opts.dataDir}\n`,
      );
      if (replica.mode === 'checking') say(opts.rejoin ? 'starting after a data loss (--rejoin): confirming a new incarnation with the other voters' : 'confirming its incarnation with a majority of the other voters before it votes');
      const stop = (signal: string): void => {
        process.stdout.write(`svrkit: ${signal}: closing replica ${opts.id}\n`);
        void replica.close().then(() => process.exit(0));
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
    });

  kv.command('up')
    .description('run a local cluster as child processes, in the foreground until Ctrl-C')
    .option('--replicas <n>', 'replicas (odd)', intOption('replicas', 1, 9), 3)
    .option('--data-dir <dir>', 'parent of the replicas\' data dirs', './data/paxoskv')
    .option('--base-port <port>', 'port of replica 1; replica i listens on base+i-1', intOption('base port', 1, 65535), 7101)
    .option('--host <host>', 'interface and address of every replica', '127.0.0.1')
    .action(async (opts: { replicas: number; dataDir: string; basePort: number; host: string }) => {
      if (opts.replicas % 2 === 0) {
        reportError(new InvalidArgumentError(`--replicas must be odd, got ${opts.replicas}`));
        return;
      }
      const ids = Array.from({ length: opts.replicas }, (_, i) => i + 1);
      const peers = ids.map((id) => `${id}=${opts.host}:${opts.basePort + id - 1}`).join(',');
      const cli = fileURLToPath(new URL('../../../bin/svrkit.js', import.meta.url));
      const children = new Map<number, ChildProcess>();
      let stopping = false;
      for (const id of ids) {
        const child = spawn(process.execPath, [cli, 'kv', 'serve', '--id', String(id), '--peers', peers, '--data-dir', path.join(opts.dataDir, `replica-${id}`)], {
          stdio: ['ignore', 'inherit', 'inherit'],
        });
        children.set(id, child);
        child.on('exit', (code, signal) => {
          children.delete(id);
          if (!stopping) process.stderr.write(`svrkit: replica ${id} exited (${code ?? signal}); the others keep serving\n`);
          if (children.size === 0) process.exit(stopping ? 0 : 1);
        });
      }
      process.stdout.write(`svrkit: paxoskv cluster of ${opts.replicas} starting; clients use --peers ${peers}\n`);
      const stop = (): void => {
        stopping = true;
        for (const c of children.values()) c.kill('SIGTERM');
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      await Promise.all([...children.values()].map((c) => once(c, 'exit')));
    });

  const clientCommand = (name: string, description: string) =>
    kv.command(name).description(description).requiredOption(...peersOption).option('-t, --timeout <ms>', 'deadline of the operation (ms)', positiveMs, 5000);

  clientCommand('get', 'read a key (linearizable)')
    .argument('<key>')
    .action((key: string, flags: ClientFlags) =>
      withClient(flags, async (c) => {
        const r = await c.get(key);
        return r === null ? { key, found: false } : { key, found: true, version: r.version, value: showValue(r.value) };
      }),
    );

  clientCommand('put', 'write a value, from the argument or from stdin')
    .argument('<key>')
    .argument('[value]', 'the value (UTF-8); read from stdin when absent')
    .action(async (key: string, value: string | undefined, flags: ClientFlags) => {
      const bytes = value === undefined ? await readStdin() : new TextEncoder().encode(value);
      await withClient(flags, async (c) => ({ key, version: await c.put(key, bytes) }));
    });

  clientCommand('delete', 'delete a key')
    .argument('<key>')
    .action((key: string, flags: ClientFlags) => withClient(flags, async (c) => ({ key, version: await c.delete(key) })));

  clientCommand('cas', 'write only if the key is at <expected-version> (0 = absent)')
    .argument('<key>')
    .argument('<expected-version>', 'the version the key must have; 0 for absent', version)
    .argument('[value]', 'the value (UTF-8); read from stdin when absent')
    .action(async (key: string, expected: bigint, value: string | undefined, flags: ClientFlags) => {
      const bytes = value === undefined ? await readStdin() : new TextEncoder().encode(value);
      await withClient(flags, async (c) => ({ key, version: await c.compareAndSet(key, expected, bytes) }));
    });

  clientCommand('status', 'show each replica: mode (voter, learner, checking, rejoining), who votes, keys, lagging keys')
    .action(async (flags: ClientFlags) => {
      const c = new PaxosKVClient({ peers: [...flags.peers.values()] });
      const rows: unknown[] = [];
      let down = 0;
      for (const [i, [id, address]] of [...flags.peers].entries()) {
        try {
          const s = await c.status(i, { timeoutMs: Math.min(flags.timeout, 2000) });
          rows.push({
            id,
            address,
            up: true,
            mode: s.mode,
            votes: s.voters.includes(id) && s.mode === 'voter',
            voters: s.voters,
            incarnation: s.incarnation.toString(),
            learnerOnly: s.learnerOnly,
            keys: s.keys.toString(),
            laggingKeys: s.laggingKeys.toString(),
            pendingOperations: s.pendingOperations.toString(),
            ...(s.mode === 'rejoining' ? { rejoin: { peersDone: s.rejoinPeersDone, peers: s.rejoinPeers, keysFenced: s.rejoinKeysFenced.toString() } } : {}),
          });
        } catch (err) {
          down++;
          rows.push({ id, address, up: false, error: err instanceof RpcError ? `${statusName(err.code)}: ${err.message}` : String(err) });
        }
      }
      c.close();
      for (const r of rows) process.stdout.write(JSON.stringify(r) + '\n');
      if (down > Math.floor(flags.peers.size / 2)) {
        process.stderr.write(`ERROR: UNAVAILABLE: ${down} of ${flags.peers.size} replicas are down: no majority\n`);
        process.exitCode = 1;
      }
    });
}
