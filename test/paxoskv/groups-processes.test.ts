/**
 * PaxosKV over many groups (issue 16), as real processes on 127.0.0.1: three groups of three
 * `svrkit kv serve --group G --routing <system group>` replicas, the routing table written with
 * `svrkit kv routing --set`. Under load on every group (one load per group, so a stall in one
 * cannot hold back the others' clients):
 * - keys are routed: a replica answers another group's key with WRONG_GROUP and its table, and a
 *   client that knows only one group's replicas finds every key's group;
 * - one replica of group 2 is SIGKILLed: for the 3 s that follow, groups 1 and 3 (and group 2,
 *   with two of three) never go 100 ms without an acknowledged write, and nothing fails;
 * - it is replaced (`kv member replace --group 2`, under the same load), which publishes routing
 *   epoch 2;
 * - a client holding an older table whose addresses now belong to other groups is corrected;
 * - every group's history is linearizable, and no acknowledged write is lost;
 * - the config center and the registry work unchanged over the groups.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { openRegistry, PaxosKVClient, RpcError, Status } from '../../index.js';
import { PaxosKVClient as PaxosKVStub } from '../../services/paxoskv/gen/svrkit/paxoskv/paxoskv.js';
import { decodeRoutingTable, ROUTING_METADATA, RoutingRing, type RoutingTable } from '../../services/paxoskv/routing.js';
import { ConfigAdmin, headKey as headKeyOf } from '../../services/config/admin.js';
import { checkKvHistory } from '../support/linearizability.js';
import { freePorts, killStarted, runSvrkit, spawnSvrkit, stopProc, waitServing, type Proc } from '../support/kv-processes.js';
import { KvLoad } from '../support/kv-load.js';
import { exclusively } from '../support/exclusive.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BASE = path.join(ROOT, 'test', '.tmp', `paxoskv-groups-${process.pid}`);
const GROUPS = [1, 2, 3];
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

afterAll(async () => {
  await killStarted();
  await fsp.rm(BASE, { recursive: true, force: true });
});

/**
 * Checks a load's run: no empty 100 ms bucket from `from` to `to`, nothing unexpected,
 * linearizable and nothing lost to `end` (final reads through the group's replicas, raw: a deleted
 * key's version too).
 */
async function checkLoad(load: KvLoad, keys: readonly string[], replicas: readonly string[], from: number, to: number, end: number, what: string): Promise<void> {
  const empty = load.emptyWriteBuckets(from, to);
  const gap = load.longestWriteGap(from, to);
  const after = load.longestWriteGap(to, end);
  console.log(
    `paxoskv groups (${what}): ${JSON.stringify(load.counts)}; ${load.writesBetween(from, to)} writes acknowledged over the ${Math.round(to - from)} ms from the kill; ` +
      `longest stretch without one ${Math.round(gap.ms)} ms (during the replace: ${Math.round(after.ms)} ms)`,
  );
  expect(load.unexpected, `${what}: errors other than FAILED_PRECONDITION (cas), UNKNOWN, UNAVAILABLE, DEADLINE_EXCEEDED`).toEqual([]);
  expect(empty, `${what}: 100 ms buckets without an acknowledged write (ms after the kill); the longest stretch was ${Math.round(gap.ms)} ms`).toEqual([]);
  for (const [k, key] of keys.entries()) {
    for (let attempt = 0; ; attempt++) {
      const stub = new PaxosKVStub(replicas[(k + attempt) % replicas.length]!);
      const op = load.history.invoke(99, key, { kind: 'get' }, performance.now());
      try {
        const got = await stub.get({ key }, { timeoutMs: 2000 });
        load.history.complete(op, got.found ? { value: got.value, version: got.version } : null, performance.now());
        const highest = load.acked.filter((w) => w.key === key).reduce((m, w) => (w.version > m ? w.version : m), 0n);
        expect(got.version, `${what}: ${key} lost an acknowledged write (version ${highest})`).toBeGreaterThanOrEqual(highest);
        break;
      } catch (err) {
        load.history.discard(op);
        if (attempt >= 8) throw new Error(`${what}: no replica served the final read of ${key}: ${String(err)}`);
      } finally {
        stub.close();
      }
    }
  }
  const result = checkKvHistory(load.history.operations());
  expect(result.verdict, `${what}: ${result.explanation}`).toBe('linearizable');
}

describe('PaxosKV over many groups, as real processes', () => {
  it(
    'three groups of three: keys are routed, one group loses a replica and the others go on, a stale client is corrected, config and registry work across groups',
    { timeout: 180_000 },
    () =>
      exclusively('timing', async () => {
        const ports = await freePorts(10);
        const address = (g: number, i: number) => `127.0.0.1:${ports[(g - 1) * 3 + i - 1]}`;
        const peersOf = (g: number) => [1, 2, 3].map((i) => `${i}=${address(g, i)}`).join(',');
        const system = peersOf(1);
        const dir = (g: number, i: number) => path.join(BASE, `group-${g}`, `replica-${i}`);
        const procs = new Map<string, Proc>();
        const clients: PaxosKVClient[] = [];
        const client = (peers: readonly string[], routing?: RoutingTable) => {
          const c = new PaxosKVClient({ peers, ...(routing === undefined ? {} : { routing }) });
          clients.push(c);
          return c;
        };
        try {
          await Promise.all(
            GROUPS.flatMap((g) =>
              [1, 2, 3].map(async (i) => {
                const p = spawnSvrkit(['kv', 'serve', '--id', String(i), '--peers', peersOf(g), '--group', String(g), '--routing', system, '--data-dir', dir(g, i), '--no-services']);
                procs.set(`${g}/${i}`, p);
                await waitServing(p, `replica ${i} of group ${g}`);
              }),
            ),
          );
          // The first routing table, written into the system group with the CLI.
          const first: RoutingTable = { epoch: 1, groups: GROUPS.map((g) => ({ id: g, replicas: [1, 2, 3].map((i) => address(g, i)) })) };
          await fsp.writeFile(path.join(BASE, 'routing.json'), JSON.stringify(first));
          const set = await runSvrkit(['kv', 'routing', '--set', path.join(BASE, 'routing.json'), '--peers', system]);
          expect(set.code, set.stderr).toBe(0);
          expect(JSON.parse(set.stdout)).toMatchObject({ epoch: 1 });
          const ring = new RoutingRing(first);
          /** Three keys of each group: `<prefix>-<n>`, the first that hash there. */
          const keysBy = (prefix: string) => {
            const by = new Map<number, string[]>(GROUPS.map((g) => [g, []]));
            for (let n = 0; [...by.values()].some((k) => k.length < 3); n++) {
              const list = by.get(ring.groupOf(`${prefix}-${n}`))!;
              if (list.length < 3) list.push(`${prefix}-${n}`);
            }
            return by;
          };
          const keysOf = keysBy('key');
          const loadKeys = keysBy('load');

          // A replica answers a key of another group with WRONG_GROUP and its table (once it read it).
          const stub = new PaxosKVStub(address(3, 1));
          try {
            const other = keysOf.get(1)![0]!;
            let refused: RpcError | undefined;
            for (let attempt = 0; attempt < 50 && refused?.reason !== 'WRONG_GROUP'; attempt++) {
              refused = await stub.get({ key: other }, { timeoutMs: 2000 }).then(
                () => undefined,
                (err: RpcError) => err,
              );
              if (refused?.reason !== 'WRONG_GROUP') await sleep(100);
            }
            expect(refused?.code).toBe(Status.FAILED_PRECONDITION);
            expect(refused?.message).toMatch(/belongs to group 1, not to group 3 of this replica \(routing table epoch 1/);
            expect(decodeRoutingTable(new TextEncoder().encode(refused!.metadata[ROUTING_METADATA]!))).toEqual(first);
            // Lists name their group.
            const list = await stub.list({ prefix: '', after: '', limit: 10 }, { timeoutMs: 2000 }).then(
              () => undefined,
              (err: RpcError) => err,
            );
            expect(list?.reason).toBe('LIST_NEEDS_GROUP');
          } finally {
            stub.close();
          }

          // A client that knows only group 3's replicas finds every key's group.
          const viaThree = client([1, 2, 3].map((i) => address(3, i)));
          for (const g of GROUPS) for (const k of keysOf.get(g)!) expect(await viaThree.put(k, new TextEncoder().encode(`first ${k}`))).toBe(1n);
          expect(viaThree.routing?.epoch).toBe(1);
          const listed = await viaThree.list('key-', { limit: 100 });
          expect(listed.items.map((i) => i.key).sort()).toEqual([...keysOf.values()].flat().sort());
          // Paged across groups: two keys a page, in key order, none twice.
          const paged: string[] = [];
          for (let after = '', more = true; more; ) {
            const page = await viaThree.list('key-', { after, limit: 2 });
            paged.push(...page.items.map((i) => i.key));
            more = page.more && page.items.length > 0;
            after = page.items.at(-1)?.key ?? after;
          }
          expect(paged).toEqual(listed.items.map((i) => i.key));

          // A watch follows a key of another group than the replicas the client was given.
          const watched = keysOf.get(3)![0]!;
          const watcher = client([address(1, 1)]);
          const ac = new AbortController();
          const seen: bigint[] = [];
          const watching = (async () => {
            for await (const e of watcher.watch(watched, { fromVersion: 1n, signal: ac.signal })) {
              seen.push(e.version);
              if (e.version >= 2n) ac.abort();
            }
          })();
          await sleep(300);
          expect(await viaThree.put(watched, new TextEncoder().encode('watched'))).toBe(2n);
          await Promise.race([watching, sleep(10_000)]);
          ac.abort();
          expect(seen).toEqual([2n]);

          // The replacement for group 2 is started first (a new machine, empty, waiting to be added):
          // a node process starting takes one of this machine's two cores for a while.
          const joiner = spawnSvrkit(['kv', 'serve', '--id', '4', '--address', `127.0.0.1:${ports[9]}`, '--join', `1=${address(2, 1)},2=${address(2, 2)}`, '--group', '2', '--routing', system, '--data-dir', dir(2, 4), '--no-services']);
          procs.set('2/4', joiner);
          await waitServing(joiner, 'replica 4 of group 2', 1, 20_000, /joining: waiting to be added/gm);

          // Load on every group, through clients that start knowing group 1's replicas only.
          const loads = new Map(GROUPS.map((g) => [g, new KvLoad(() => [1, 2, 3].map((i) => address(1, i)), { clients: 3, keys: loadKeys.get(g)!, seed: 0x9000 + g })]));
          await sleep(1500);
          const from = performance.now();
          const victim = procs.get('2/3')!;
          victim.child.kill('SIGKILL');
          expect((await victim.exited).signal).toBe('SIGKILL');
          await sleep(3000);
          // Every group went on (group 2 with two of three) until the replace, whose own pauses are
          // membership-processes.test.ts's (and the CLI processes it spawns take a core here).
          const replacing = performance.now();

          // Replace it: the new replica joins group 2, and the routing table gets its address.
          const replace = await runSvrkit(['kv', 'member', 'replace', '3', '4', '--address', `127.0.0.1:${ports[9]}`, '--group', '2', '--peers', system, '--timeout', '30000'], { timeoutMs: 40_000 });
          expect(replace.code, replace.stderr).toBe(0);
          expect(JSON.parse(replace.stdout)).toMatchObject({ group: 2, routingEpoch: 2, voters: [1, 2, 4] });
          const routing = await runSvrkit(['kv', 'routing', '--peers', `1=${address(3, 2)}`, '--key', keysOf.get(2)![0]!]);
          expect(routing.code, routing.stderr).toBe(0);
          const second = JSON.parse(routing.stdout) as RoutingTable & { group: number };
          expect(second).toMatchObject({ epoch: 2, group: 2 });
          expect(second.groups.find((g) => g.id === 2)!.replicas).toEqual([address(2, 1), address(2, 2), `127.0.0.1:${ports[9]}`]);
          await sleep(1000);
          const to = performance.now();
          for (const load of loads.values()) await load.stop();

          // A client with an older table, in which groups 2 and 3 have each other's addresses
          // (ports reused after a move), is corrected by the first replica it asks.
          const stale: RoutingTable = {
            epoch: 1,
            groups: [first.groups[0]!, { id: 2, replicas: first.groups[2]!.replicas }, { id: 3, replicas: first.groups[1]!.replicas.slice(0, 2) }],
          };
          const staleClient = client([address(1, 1)], stale);
          const k2 = keysOf.get(2)![1]!;
          const k3 = keysOf.get(3)![1]!;
          const v2 = await staleClient.put(k2, new TextEncoder().encode('from a stale client'));
          expect(staleClient.routing?.epoch).toBe(2);
          expect((await staleClient.get(k2))?.version).toBe(v2);
          expect((await staleClient.get(k3))?.version).toBe(1n);

          // Per group: never 100 ms without a write from the kill on, linearizable, nothing lost.
          const final = (g: number) => (g === 2 ? [address(2, 1), address(2, 2), `127.0.0.1:${ports[9]}`] : [1, 2, 3].map((i) => address(g, i)));
          for (const g of GROUPS) await checkLoad(loads.get(g)!, loadKeys.get(g)!, final(g), from, replacing, to, `group ${g}`);

          // The config center and the registry, unchanged, over the groups.
          const admin = new ConfigAdmin(client([address(1, 1)]), { by: 'test' });
          const namespaces = Array.from({ length: 6 }, (_, n) => `app${n}`);
          for (const ns of namespaces) await admin.publish(ns, { set: { greeting: `hello ${ns}` }, delete: [] });
          await admin.flush();
          for (const ns of namespaces) expect((await admin.head(ns)).head.release).toMatchObject({ number: 1, values: { greeting: `hello ${ns}` } });
          // Their heads are spread over more than one group.
          expect(new Set(namespaces.map((ns) => ring.groupOf(headKeyOf(ns)))).size).toBeGreaterThan(1);
          const registry = openRegistry(`paxoskv://${address(2, 1)}/svrkit/services`);
          try {
            const services = Array.from({ length: 6 }, (_, n) => `svc.S${n}`);
            const regs = await Promise.all(services.map((service, n) => registry.register({ service, address: `127.0.0.1:${20000 + n}` }, { ttlMs: 30_000 })));
            const all = await registry.list();
            expect(all.map((i) => i.service).sort()).toEqual(services);
            // Their keys are spread over more than one group.
            expect(new Set(services.map((s) => ring.groupOf(`registry/svrkit/services/${s}`))).size).toBeGreaterThan(1);
            for (const r of regs) await r.deregister();
          } finally {
            await registry.close();
          }
        } finally {
          for (const c of clients) c.close();
          for (const p of procs.values()) await stopProc(p, 'SIGKILL').catch(() => undefined);
        }
      }),
  );
});
