/**
 * Issue 9, the real-process scenario: a retried write must be applied at most once, and a replica
 * that lost its disk must rejoin safely.
 *
 * Three `svrkit kv serve` replicas talk to each other directly; each has a delay proxy
 * (test/support/delay-proxy.ts) in front of it for client traffic only, which now and then holds a
 * connection's replies back for 0.3-1.2 s. 16 clients, each with the three proxy addresses (in a
 * rotated order) and a 275 ms attempt timeout, hammer 2 hot keys with puts of unique values
 * (`c<client>-<n>`), gets and some compare-and-sets, so attempts whose write was already chosen time
 * out and are retried on another replica. Mid-run, replica 3 is SIGKILLed, its data dir deleted,
 * and it is restarted with `--rejoin` on the empty dir; later replica 1 is SIGKILLed and restarted
 * on its own data.
 *
 * Checks: the whole history is linearizable; no value is ever seen at two versions (a value seen
 * twice means one write was applied twice: the bug of issue 9); enough operations succeeded; the
 * proxies did hold replies and calls did succeed only after a retry; no acknowledged write was lost;
 * and `svrkit kv status` shows replica 3 as "voter" again within a generous time (the modes it
 * reported on the way, and its own output, are printed).
 *
 * The run lasts EXACTLY_ONCE_MS ms of load (default 15000). The operation mix and the proxies' hold
 * decisions are seeded; timing is not, and nothing asserts on it beyond generous floors. It runs
 * over plain TCP and over TLS (`kv serve --tls-dir`).
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PaxosKVClient, type ChannelOptions } from '../../index.js';
import { startDelayProxy, type DelayProxy, type DelayProxyStats } from '../support/delay-proxy.js';
import { exclusively } from '../support/exclusive.js';
import { freePorts, killStarted, recordFailure, runSvrkit, spawnSvrkit, stopProc, waitServing, type Proc } from '../support/kv-processes.js';
import { checkKvHistory, HistoryRecorder, type KvInput, type KvOutput } from '../support/linearizability.js';
import { mulberry32 } from '../support/prng.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BASE = path.join(ROOT, 'test', '.tmp', `paxoskv-exactly-once-${process.pid}`);

/** Load duration (ms); the faults are placed at fixed fractions of it. */
const RUN_MS = Math.max(3000, Number(process.env.EXACTLY_ONCE_MS ?? 15_000));
const IDS = [1, 2, 3];
const CLIENTS = 16;
const KEYS = ['hot0', 'hot1'];
/** Per attempt: shorter than most holds, so a held reply makes the client retry elsewhere. */
const ATTEMPT_TIMEOUT_MS = 275;
const CALL_TIMEOUT_MS = 3000;
/** Hold chance per chunk of replies, and hold length (ms). */
const HOLD = { holdProbability: 0.08, minHoldMs: 300, maxHoldMs: 1200 };
/** How long replica 3 may take, from its restart with --rejoin, to report mode "voter" (ms). */
const REJOIN_TIMEOUT_MS = 60_000;
const SEED = 0x1ce9;

const text = (s: string) => new TextEncoder().encode(s);
const decode = (b: Uint8Array) => new TextDecoder().decode(b);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// Over plain TCP, and over TLS (issue 15: `kv serve --tls-dir`; the delay proxies forward the TLS bytes as they are).
describe.each([
  { transport: 'plain TCP', tls: false },
  { transport: 'TLS', tls: true },
])('PaxosKV (issue 9): exactly-once writes with held replies, a wiped replica rejoining, a kill, over $transport', ({ tls }) => {
  const realAddress = new Map<number, string>();
  const proxies = new Map<number, DelayProxy>();
  const replicas = new Map<number, Proc>();
  let peersFlag = '';
  const dir = path.join(BASE, tls ? 'tls' : 'plain');
  const tlsDir = path.join(dir, 'certs');
  const tlsArgs = tls ? ['--tls-dir', tlsDir] : [];
  /** Options of the clients' channels: TLS trusting the cluster's CA, or none. */
  let channel: ChannelOptions | undefined;

  const dataDir = (id: number) => path.join(dir, `replica-${id}`);
  const startReplica = async (id: number, extra: string[] = []): Promise<Proc> => {
    const p = spawnSvrkit(['kv', 'serve', '--id', String(id), '--peers', peersFlag, '--data-dir', dataDir(id), ...tlsArgs, ...extra]);
    replicas.set(id, p);
    await waitServing(p, `replica ${id}${extra.length > 0 ? ` (${extra.join(' ')})` : ''}`);
    return p;
  };

  beforeAll(async () => {
    await fsp.mkdir(dir, { recursive: true });
    const ports = await freePorts(IDS.length);
    for (const id of IDS) realAddress.set(id, `127.0.0.1:${ports[id - 1]}`);
    peersFlag = IDS.map((id) => `${id}=${realAddress.get(id)}`).join(',');
    if (tls) {
      const made = await runSvrkit(['kv', 'certs', '--tls-dir', tlsDir, '--peers', peersFlag]);
      expect(made.code, made.stderr).toBe(0);
      channel = { tls: { ca: await fsp.readFile(path.join(tlsDir, 'ca.pem'), 'utf8') } };
    }
    await Promise.all(IDS.map((id) => startReplica(id)));
    for (const id of IDS) {
      proxies.set(id, await startDelayProxy({ host: '127.0.0.1', port: ports[id - 1]! }, { ...HOLD, random: mulberry32(SEED + id) }));
    }
  });

  afterAll(async () => {
    await Promise.all([...proxies.values()].map((p) => p.close()));
    for (const p of replicas.values()) await stopProc(p, 'SIGKILL').catch(() => undefined);
    await killStarted();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it(
    'applies every write at most once and stays linearizable; replica 3 rejoins as a voter',
    // The heaviest load of the suite: tests that assert on timings do not run beside it.
    () => exclusively('timing', async () => {
      const history = new HistoryRecorder();
      const now = () => performance.now();
      const counts = { get: 0, put: 0, cas: 0, casFailed: 0, unknown: 0, failedGets: 0, afterRetry: 0 };
      /** Every (value -> versions) seen: from put and cas replies, and from gets. */
      const seen = new Map<string, Set<bigint>>();
      /** Where each (value, version) was seen first, for the failure message. */
      const seenHow = new Map<string, string>();
      const acked: Array<{ key: string; version: bigint }> = [];
      const unexpected: string[] = [];
      const observe = (value: string, version: bigint, how: string): void => {
        let versions = seen.get(value);
        if (versions === undefined) seen.set(value, (versions = new Set()));
        versions.add(version);
        const k = `${value}@${version}`;
        if (!seenHow.has(k)) seenHow.set(k, how);
      };

      /**
       * Runs one operation with `kv` and records it: history, counts, observed values.
       * @returns its output when it succeeded; undefined when it failed (recorded as such).
       */
      const runOp = async (kv: PaxosKVClient, client: number, key: string, input: KvInput, lastSeen: Map<string, bigint>): Promise<KvOutput | undefined> => {
        const op = history.invoke(client, key, input, now());
        const started = now();
        try {
          let output: KvOutput;
          switch (input.kind) {
            case 'get': {
              const got = await kv.get(key);
              output = got === null ? null : { value: got.value, version: got.version };
              lastSeen.set(key, got === null ? 0n : got.version);
              if (got !== null) observe(decode(got.value), got.version, `get ${key} by client ${client}`);
              break;
            }
            case 'put':
              output = { version: await kv.put(key, input.value) };
              observe(decode(input.value), output.version, `put ${key} reply to client ${client}`);
              break;
            case 'cas':
              output = { version: await kv.compareAndSet(key, input.expectedVersion, input.value) };
              observe(decode(input.value), output.version, `cas ${key} reply to client ${client}`);
              break;
            case 'delete':
              throw new Error('no deletes in this test');
          }
          const ended = now();
          history.complete(op, output, ended);
          counts[input.kind]++;
          // An attempt cannot outlive ATTEMPT_TIMEOUT_MS: a success after longer took a retry.
          if (ended - started > ATTEMPT_TIMEOUT_MS + 20) counts.afterRetry++;
          if (input.kind !== 'get' && output !== null && 'version' in output) {
            acked.push({ key, version: output.version });
            lastSeen.set(key, output.version);
          }
          return output;
        } catch (err) {
          const r = recordFailure(history, op, input, err, now());
          if (r.recorded === 'failed') {
            counts.casFailed++;
            if (r.version !== undefined) lastSeen.set(key, r.version);
          } else if (r.recorded === 'discarded') counts.failedGets++;
          else counts.unknown++;
          if (r.unexpected !== undefined) unexpected.push(`client ${client} ${key}: ${r.unexpected}`);
          return undefined;
        }
      };

      const proxyAddresses = IDS.map((id) => proxies.get(id)!.address);
      const newClient = (c: number) =>
        new PaxosKVClient({
          peers: [...proxyAddresses.slice(c % 3), ...proxyAddresses.slice(0, c % 3)], // clients start on different replicas
          attemptTimeoutMs: ATTEMPT_TIMEOUT_MS,
          defaultTimeoutMs: CALL_TIMEOUT_MS,
          channel,
        });

      let stopLoad = false;
      const clientLoop = async (c: number): Promise<void> => {
        const kv = newClient(c);
        const rnd = mulberry32(SEED * 31 + c);
        const lastSeen = new Map<string, bigint>();
        let n = 0;
        try {
          while (!stopLoad) {
            const key = KEYS[Math.floor(rnd() * KEYS.length)]!;
            const r = rnd();
            const value = text(`c${c}-${n++}`);
            const input: KvInput =
              r < 0.4 ? { kind: 'get' } : r < 0.88 ? { kind: 'put', value } : { kind: 'cas', expectedVersion: lastSeen.get(key) ?? 0n, value };
            await runOp(kv, c, key, input, lastSeen);
          }
        } finally {
          kv.close();
        }
      };

      // ---- replica 3's mode, from `svrkit kv status` (real addresses: status is not what is tested here)
      const modes: Array<{ atMs: number; mode: string }> = [];
      let rejoinStartedAt: number | undefined;
      let voterAfterMs: number | undefined;
      let stopPolling = false;
      const pollReplica3 = async (): Promise<void> => {
        while (!stopPolling && voterAfterMs === undefined) {
          try {
            const r = await runSvrkit(['kv', 'status', '--peers', peersFlag, ...tlsArgs, '--timeout', '2000'], { timeoutMs: 15_000 });
            for (const line of r.stdout.split('\n')) {
              if (!line.startsWith('{')) continue;
              const row = JSON.parse(line) as { id?: number; up?: boolean; mode?: unknown };
              if (row.id !== 3) continue;
              const mode = row.up === false ? 'down' : typeof row.mode === 'string' ? row.mode : `(no mode: ${line})`;
              const atMs = Math.round(now() - rejoinStartedAt!);
              if (modes.length === 0 || modes[modes.length - 1]!.mode !== mode) modes.push({ atMs, mode });
              if (mode === 'voter') voterAfterMs = atMs;
            }
          } catch (err) {
            modes.push({ atMs: Math.round(now() - rejoinStartedAt!), mode: `(status failed: ${String(err).slice(0, 200)})` });
          }
          if (voterAfterMs === undefined) await sleep(500);
        }
      };
      let poller: Promise<void> = Promise.resolve();

      const loadDone = Promise.all(Array.from({ length: CLIENTS }, (_, c) => clientLoop(c)));
      let loadError: unknown;
      const loadSettled = loadDone.catch((err: unknown) => {
        loadError = err;
      });
      /** Every call has a 3 s deadline, so the loops end soon after stopLoad; fail rather than hang. */
      const boundedLoadStop = async (): Promise<void> => {
        stopLoad = true;
        let timer: NodeJS.Timeout | undefined;
        const hung = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`a client call did not end within 15 s of its ${CALL_TIMEOUT_MS} ms deadline`)), 15_000);
        });
        try {
          await Promise.race([loadSettled, hung]);
        } finally {
          clearTimeout(timer);
        }
      };

      const t0 = now();
      const until = (fraction: number) => sleep(Math.max(0, t0 + fraction * RUN_MS - now()));
      let writesBeforeFaults = 0;
      try {
        // ~30%: replica 3 loses its disk: SIGKILL, delete the data dir, restart with --rejoin on an empty dir.
        await until(0.3);
        writesBeforeFaults = acked.length;
        const three = replicas.get(3)!;
        three.child.kill('SIGKILL');
        expect((await three.exited).signal).toBe('SIGKILL');
        await fsp.rm(dataDir(3), { recursive: true, force: true });
        await fsp.mkdir(dataDir(3), { recursive: true });
        rejoinStartedAt = now();
        await startReplica(3, ['--rejoin']);
        poller = pollReplica3();

        // ~60%: replica 1 crashes and comes back on its own data two seconds later.
        await until(0.6);
        const one = replicas.get(1)!;
        one.child.kill('SIGKILL');
        expect((await one.exited).signal).toBe('SIGKILL');
        await sleep(2000);
        await startReplica(1);

        await until(1);
        await boundedLoadStop();
        if (loadError !== undefined) throw loadError;

        // Replica 3 votes once its sweep has fenced and caught up every key (it asks the voters to
        // finish pending instances), with no writes needed; if it is not voting yet (e.g. replica 1's
        // restart held its sweep up), keep writing (recorded too) until it reports "voter", or the
        // rejoin timeout passes. How long it took is printed.
        const trickle = newClient(100);
        const lastSeen = new Map<string, bigint>();
        try {
          for (let n = 0; voterAfterMs === undefined && now() - rejoinStartedAt < REJOIN_TIMEOUT_MS; n++) {
            for (const key of KEYS) await runOp(trickle, 100, key, { kind: 'put', value: text(`t-${n}-${key}`) }, lastSeen);
            await sleep(200);
          }
        } finally {
          trickle.close();
        }
      } finally {
        await boundedLoadStop();
        stopPolling = true;
        await poller;
      }

      // Final reads of every key through each replica's own address (no proxy), recorded too.
      const finalVersion = new Map<string, bigint>();
      for (const id of IDS) {
        const kv = new PaxosKVClient({ peers: [realAddress.get(id)!, ...IDS.filter((i) => i !== id).map((i) => realAddress.get(i)!)], attemptTimeoutMs: 2000, defaultTimeoutMs: 10_000, channel });
        try {
          for (const key of KEYS) {
            const out = await runOp(kv, 200 + id, key, { kind: 'get' }, new Map());
            if (out === undefined) continue;
            const v = out !== null && 'version' in out ? out.version : 0n;
            if (v > (finalVersion.get(key) ?? -1n)) finalVersion.set(key, v);
          }
        } finally {
          kv.close();
        }
      }

      const proxyStats: Record<number, DelayProxyStats> = {};
      for (const id of IDS) proxyStats[id] = proxies.get(id)!.stats();
      const holds = IDS.reduce((s, id) => s + proxyStats[id]!.holds, 0);
      const twice = [...seen].filter(([, versions]) => versions.size > 1);
      const ops = history.operations();
      console.log(
        `paxoskv exactly-once: ${RUN_MS} ms of load; ${JSON.stringify(counts)}; ${ops.length} operations recorded; ` +
          `${writesBeforeFaults} writes acknowledged before the first fault, ${acked.length} in all; ` +
          `${seen.size} distinct values seen, ${twice.length} at two or more versions; ` +
          `proxy holds ${IDS.map((id) => `${id}:${proxyStats[id]!.holds} (${proxyStats[id]!.heldChunks} chunks)`).join(' ')}; ` +
          `replica 3 modes after --rejoin: ${JSON.stringify(modes)}; voter after ${voterAfterMs ?? 'never'} ms; ` +
          `its output: ${JSON.stringify(replicas.get(3)!.stdout().trim().split('\n'))}; ` +
          `final versions ${JSON.stringify(Object.fromEntries([...finalVersion].map(([k, v]) => [k, v.toString()])))}`,
      );

      // No write applied twice: each value was written once, so it has one version.
      expect(
        twice.map(([value, versions]) => `${value} at versions ${[...versions].sort((a, b) => (a < b ? -1 : 1)).map((v) => `${v} (${seenHow.get(`${value}@${v}`)})`).join(', ')}`),
        'values seen at two different versions: a write was applied twice',
      ).toEqual([]);

      const result = checkKvHistory(ops);
      expect(result.verdict, result.explanation).toBe('linearizable');

      for (const key of KEYS) {
        const highest = acked.filter((w) => w.key === key).reduce((m, w) => (w.version > m ? w.version : m), 0n);
        expect(finalVersion.has(key), `no final read of ${key} answered`).toBe(true);
        expect(finalVersion.get(key)! >= highest, `${key}: final version ${finalVersion.get(key)} < acknowledged write version ${highest}: a write was lost`).toBe(true);
      }

      expect(counts.get + counts.put + counts.cas + counts.casFailed, 'operations that succeeded').toBeGreaterThan(Math.round((500 * RUN_MS) / 15_000));
      expect(holds, 'the proxies held replies back').toBeGreaterThan(0);
      expect(counts.afterRetry, 'calls that succeeded only after a retry').toBeGreaterThan(0);
      expect(unexpected.slice(0, 20), 'errors other than FAILED_PRECONDITION (cas), UNKNOWN, UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED').toEqual([]);
      expect(
        voterAfterMs,
        `replica 3 did not report mode "voter" within ${REJOIN_TIMEOUT_MS} ms of its restart with --rejoin; modes seen: ${JSON.stringify(modes)}\n` +
          `its output (end): ${replicas.get(3)!.stdout().slice(-2000)}\n${replicas.get(3)!.stderr().slice(-2000)}`,
      ).toBeDefined();

      // Every replica still serves and stops cleanly.
      for (const id of IDS) {
        const e = await stopProc(replicas.get(id)!, 'SIGTERM');
        expect(e, `replica ${id}: ${replicas.get(id)!.stderr()}`).toEqual({ code: 0, signal: null });
      }
    }),
    RUN_MS + 225_000,
  );
});
