/**
 * The `svrkit` command as real processes on 127.0.0.1: `run` serves a module and closes gracefully
 * on SIGTERM, `call` and `bench` talk to it through reflection, `gen` compiles .proto files, bad
 * flags and bad modules fail with a message, and the chain example propagates deadline, trace id,
 * metadata and cancellation across three processes.
 *
 * Needs a fresh dist/ (`npm test` builds first; else run `npm run build`).
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RpcError, Status } from '../framework/index.js';
import { BackendClient, FrontendClient } from '../examples/chain/gen/chain.js';
import { GreeterClient } from '../examples/helloworld/gen/greeter.js';
import { ProbeClient } from './.tmp/gen/probe/probe.js';
import { repoRoot, runSvrkit, startSvrkit, stopAllSvrkit, type SvrkitProcess } from './support/processes.js';

/** Scratch space under test/.tmp (gitignored), removed afterwards. */
const tmp = path.join(repoRoot, 'test', '.tmp', `cli-${process.pid}-${Date.now().toString(36)}`);
/** `tmp` as the CLI shows it (paths relative to its working directory, the repository root). */
const tmpRel = path.relative(repoRoot, tmp);
const clients: Array<{ close(): void }> = [];

beforeAll(() => {
  mkdirSync(tmp, { recursive: true });
});

afterAll(async () => {
  for (const c of clients) c.close();
  await stopAllSvrkit();
  rmSync(tmp, { recursive: true, force: true });
});

/** Parses a command's stdout as JSON, with the whole output in the error when it is not. */
function json(r: { stdout: string; stderr: string }): unknown {
  try {
    return JSON.parse(r.stdout);
  } catch {
    throw new Error(`stdout is not JSON\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`);
  }
}

/** A loopback port that nothing listens on (bound, then released). */
async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

async function rpcError(p: Promise<unknown>): Promise<RpcError> {
  const err = await p.then(
    (v) => new Error(`expected the call to fail, got ${JSON.stringify(v, (_, x) => (typeof x === 'bigint' ? String(x) : x))}`),
    (e: unknown) => e,
  );
  if (!(err instanceof RpcError)) throw err;
  return err;
}

describe('svrkit run examples/helloworld/greeter.ts', () => {
  let greeter: SvrkitProcess;

  beforeAll(async () => {
    greeter = await startSvrkit(['run', 'examples/helloworld/greeter.ts', '--port', '0']);
  });

  it('prints its serving line and answers a generated GreeterClient', async () => {
    expect(greeter.services).toEqual(['helloworld.Greeter']);
    expect(greeter.address).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(greeter.output().stdout).toContain(`(pid ${greeter.process.pid})`);
    const client = new GreeterClient(greeter.address);
    clients.push(client);
    expect(await client.sayHello({ name: 'ada' }, { timeoutMs: 5000 })).toEqual({ message: 'Hello ada' });
    const err = await rpcError(client.sayHello({ name: '' }, { timeoutMs: 5000 }));
    expect(err.code).toBe(Status.INVALID_ARGUMENT);
    expect(err.message).toBe('name must not be empty');
  });

  it('svrkit call prints the JSON reply and exits 0', async () => {
    const r = await runSvrkit(['call', greeter.address, 'helloworld.Greeter/SayHello', '{"name":"ada"}']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(json(r)).toEqual({ message: 'Hello ada' });
  });

  it('svrkit call of a failing call: exit 1, "ERROR: INVALID_ARGUMENT: ..." on stderr', async () => {
    const r = await runSvrkit(['call', greeter.address, 'helloworld.Greeter/SayHello', '{"name":""}']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe('ERROR: INVALID_ARGUMENT: name must not be empty\n');
  });

  it('svrkit call of an unknown method or service: exit 1, NOT_FOUND naming what exists', async () => {
    const [method, service] = await Promise.all([
      runSvrkit(['call', greeter.address, 'helloworld.Greeter/SayGoodbye', '{}']),
      runSvrkit(['call', greeter.address, 'helloworld.Nobody/SayHello', '{}']),
    ]);
    expect(method.code).toBe(1);
    expect(method.stderr).toMatch(/^ERROR: NOT_FOUND: .*'SayGoodbye'.*SayHello/);
    expect(service.code).toBe(1);
    expect(service.stderr).toMatch(/^ERROR: NOT_FOUND: .*'helloworld\.Nobody'.*helloworld\.Greeter/);
  });

  it('svrkit call with a request that does not fit the type: exit 1, INVALID_ARGUMENT', async () => {
    const r = await runSvrkit(['call', greeter.address, 'helloworld.Greeter/SayHello', '{"nom":"ada"}']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^ERROR: INVALID_ARGUMENT: request does not fit helloworld\.HelloRequest/);
  });

  it('svrkit call with `-` reads the request from stdin: an empty stdin is not JSON, exit 1', async () => {
    const r = await runSvrkit(['call', greeter.address, 'helloworld.Greeter/SayHello', '-']); // stdin: /dev/null
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^error: the request on stdin is not valid JSON: /);
  });

  it('svrkit call of the built-in svrkit.Health/Check and svrkit.Reflection/ListServices', async () => {
    const [health, list] = await Promise.all([
      runSvrkit(['call', greeter.address, 'svrkit.Health/Check']),
      runSvrkit(['call', greeter.address, 'svrkit.Reflection/ListServices', '{}']),
    ]);
    expect(health.code).toBe(0);
    expect(json(health)).toEqual({ status: 'SERVING' });
    expect(list.code).toBe(0);
    const services = (json(list) as { services: string[] }).services;
    expect([...services].sort()).toEqual(['grpc.health.v1.Health', 'grpc.reflection.v1.ServerReflection', 'grpc.reflection.v1alpha.ServerReflection', 'helloworld.Greeter', 'svrkit.Health', 'svrkit.Reflection']);
  });

  it('svrkit bench --json: 2000 calls, all ok, latency percentiles present and ordered', async () => {
    const r = await runSvrkit([
      'bench', greeter.address, 'helloworld.Greeter/SayHello', '{"name":"ada"}',
      '--concurrency', '50', '--requests', '2000', '--connections', '2', '--json',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const result = json(r) as {
      method: string;
      address: string;
      connections: number;
      calls: number;
      ok: number;
      errors: Record<string, number>;
      concurrency: number;
      durationMs: number;
      callsPerSecond: number;
      latencyMs: Record<'min' | 'mean' | 'p50' | 'p90' | 'p99' | 'p999' | 'max', number>;
    };
    expect(result).toMatchObject({
      method: 'helloworld.Greeter/SayHello',
      address: greeter.address,
      connections: 2,
      concurrency: 50,
      calls: 2000,
      ok: 2000,
      errors: {},
    });
    expect(result.durationMs).toBeGreaterThan(0);
    expect(result.callsPerSecond).toBeGreaterThan(0);
    // Message counts are for streaming methods only (test/streaming/cli.test.ts).
    expect(result).not.toHaveProperty('messages');
    expect(result).not.toHaveProperty('messagesPerSecond');
    const l = result.latencyMs;
    for (const k of ['min', 'mean', 'p50', 'p90', 'p99', 'p999', 'max'] as const) {
      expect(Number.isFinite(l[k]), `latencyMs.${k} = ${l[k]}`).toBe(true);
    }
    expect(l.min).toBeGreaterThan(0);
    const ordered = [l.min, l.p50, l.p90, l.p99, l.p999, l.max];
    expect(ordered).toEqual([...ordered].sort((a, b) => a - b));
    expect(l.mean).toBeGreaterThanOrEqual(l.min);
    expect(l.mean).toBeLessThanOrEqual(l.max);
  });

  it('svrkit bench --rate paces the calls: 40 calls at 400/s take at least 97.5 ms', async () => {
    const r = await runSvrkit([
      'bench', greeter.address, 'helloworld.Greeter/SayHello', '{"name":"ada"}',
      '--concurrency', '8', '--requests', '40', '--rate', '400', '--json',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const result = json(r) as { calls: number; ok: number; durationMs: number };
    expect(result).toMatchObject({ calls: 40, ok: 40 });
    // The 40th call's slot is 39 x 2.5 ms after the start: a lower bound, not a speed claim.
    expect(result.durationMs).toBeGreaterThanOrEqual(97.5);
  });

  it('a second `svrkit run` on the same port fails with exit 1 and says why', async () => {
    const port = greeter.address.split(':').pop()!;
    const r = await runSvrkit(['run', 'examples/helloworld/greeter.ts', '--port', port]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/EADDRINUSE/);
    expect(r.stdout).not.toMatch(/svrkit: serving/);
  });

  it('SIGTERM: logs that it is closing and that it closed, then exits 0', async () => {
    const status = await greeter.stop('SIGTERM');
    expect(status).toEqual({ code: 0, signal: null });
    const { stdout, stderr } = greeter.output();
    expect(stdout).toMatch(/^svrkit: SIGTERM: closing, \d+ calls in flight, grace 5000 ms$/m);
    expect(stdout.trimEnd().split('\n').pop()).toBe('svrkit: closed');
    expect(stderr).toBe('');
  });
});

describe('svrkit run test/support/probe.ts', () => {
  let proc: SvrkitProcess;

  beforeAll(async () => {
    proc = await startSvrkit(['run', 'test/support/probe.ts', '--port', '0']);
  });

  it('svrkit call passes --metadata and prints every field, 64-bit integers as strings', async () => {
    const r = await runSvrkit(['call', proc.address, 'probe.Probe/Echo', '{"text":"hi","delayMs":1}', '-m', 'x-user=ada', '--timeout', '5000']);
    expect(r.code, r.stderr).toBe(0);
    const reply = json(r) as Record<string, unknown>;
    expect(reply).toMatchObject({ text: 'hi', metadata: { 'x-user': 'ada' }, method: 'probe.Probe/Echo', padding: '' });
    expect(reply.deadlineLeftMs).toMatch(/^\d+$/);
    expect(Number(reply.deadlineLeftMs)).toBeLessThanOrEqual(5000);
  });

  it('svrkit call --timeout shorter than the call: exit 1, DEADLINE_EXCEEDED', async () => {
    const r = await runSvrkit(['call', proc.address, 'probe.Probe/Echo', '{"text":"too slow","delayMs":3000}', '--timeout', '300']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^ERROR: DEADLINE_EXCEEDED: /);
  });

  it('a call in flight when SIGTERM arrives completes, then the process exits 0', async () => {
    expect(proc.services).toEqual(['probe.Probe']);
    const client = new ProbeClient(proc.address);
    clients.push(client);
    // Connect first, so the slow call goes out at once.
    expect((await client.echo({ text: 'warm-up' }, { timeoutMs: 5000 })).text).toBe('warm-up');
    const slow = client.echo({ text: 'in flight at SIGTERM', delayMs: 500 }, { timeoutMs: 10_000 });
    await sleep(100);
    const stopped = proc.stop('SIGTERM');
    const reply = await slow;
    expect(reply.text).toBe('in flight at SIGTERM');
    expect(await stopped).toEqual({ code: 0, signal: null });
    const { stdout } = proc.output();
    expect(stdout).toContain('svrkit: SIGTERM: closing, 1 calls in flight, grace 5000 ms');
    expect(stdout.trimEnd().split('\n').pop()).toBe('svrkit: closed');
  });

  it('with --grace-ms 200, a call that outlasts the grace period is cut (UNAVAILABLE) and the process still exits 0', async () => {
    const short = await startSvrkit(['run', 'test/support/probe.ts', '--port', '0', '--grace-ms', '200']);
    const client = new ProbeClient(short.address);
    clients.push(client);
    expect((await client.echo({ text: 'warm-up' }, { timeoutMs: 5000 })).text).toBe('warm-up');
    const slow = rpcError(client.echo({ text: 'outlasts the grace period', delayMs: 5000 }, { timeoutMs: 10_000 }));
    await sleep(100);
    const stopped = short.stop('SIGTERM');
    const err = await slow;
    expect(err.code).toBe(Status.UNAVAILABLE);
    expect(await stopped).toEqual({ code: 0, signal: null });
    const { stdout } = short.output();
    expect(stdout).toContain('svrkit: SIGTERM: closing, 1 calls in flight, grace 200 ms');
    expect(stdout.trimEnd().split('\n').pop()).toBe('svrkit: closed');
  });
});

describe('svrkit call to nothing', () => {
  it('exits 1 with UNAVAILABLE when nothing listens at the address', async () => {
    const port = await freePort();
    const r = await runSvrkit(['call', `127.0.0.1:${port}`, 'helloworld.Greeter/SayHello', '{"name":"ada"}', '--timeout', '5000']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(new RegExp(`^ERROR: UNAVAILABLE: .*127\\.0\\.0\\.1:${port}`));
  });
});

describe('bad modules, bad flags, help', () => {
  it('svrkit run of a module whose default export is not a service: exit 1 with a clear message', async () => {
    const notService = path.join(tmp, 'not-a-service.ts');
    writeFileSync(notService, 'export default { sayHello() { return { message: "hi" }; } };\n');
    const noDefault = path.join(tmp, 'no-default.ts');
    writeFileSync(noDefault, 'export const greeting = "hi";\n');
    const throws = path.join(tmp, 'throws.ts');
    writeFileSync(throws, 'throw new Error("broken at load time");\nexport default 1;\n');
    const [a, b, c, d] = await Promise.all([
      runSvrkit(['run', path.relative(repoRoot, notService), '--port', '0']),
      runSvrkit(['run', path.relative(repoRoot, noDefault), '--port', '0']),
      runSvrkit(['run', path.relative(repoRoot, throws), '--port', '0']),
      runSvrkit(['run', path.join(tmpRel, 'does-not-exist.ts'), '--port', '0']),
    ]);
    for (const r of [a, b, c, d]) {
      expect(r.code, r.stderr).toBe(1);
      expect(r.stdout).not.toMatch(/svrkit: serving/);
    }
    expect(a.stderr).toMatch(/not-a-service\.ts: default export is not a service implementation: expected an instance of a class extending a generated XService/);
    expect(b.stderr).toMatch(/no-default\.ts has no default export/);
    expect(c.stderr).toMatch(/broken at load time/);
    expect(d.stderr).toMatch(/does-not-exist\.ts/);
  });

  it('bad flags exit non-zero with a message', async () => {
    const [port, duration, both, badConcurrency, badRate] = await Promise.all([
      runSvrkit(['run', 'examples/helloworld/greeter.ts', '--port', 'abc']),
      runSvrkit(['bench', '127.0.0.1:1', 'helloworld.Greeter/SayHello', '--duration', '10']),
      runSvrkit(['bench', '127.0.0.1:1', 'helloworld.Greeter/SayHello', '--concurrency', '1', '--duration', '1s', '--requests', '10']),
      runSvrkit(['bench', '127.0.0.1:1', 'helloworld.Greeter/SayHello', '--concurrency', '0', '--requests', '10']),
      runSvrkit(['bench', '127.0.0.1:1', 'helloworld.Greeter/SayHello', '--rate', '0', '--requests', '10']),
    ]);
    expect(port.code).not.toBe(0);
    expect(port.stderr).toMatch(/--port <port>.*'abc' is invalid/);
    expect(duration.code).not.toBe(0);
    expect(duration.stderr).toMatch(/--duration 10: give a unit, e\.g\. 10s or 500ms/);
    expect(both.code).not.toBe(0);
    expect(both.stderr).toMatch(/--duration <time>' cannot be used with option '-n, --requests <n>'/);
    expect(badConcurrency.code).not.toBe(0);
    expect(badConcurrency.stderr).toMatch(/concurrency must be a whole number/);
    expect(badRate.code).not.toBe(0);
    expect(badRate.stderr).toMatch(/rate must be a whole number from 1/);
    for (const r of [port, duration, both, badConcurrency, badRate]) expect(r.stdout).toBe('');
  });

  it('svrkit call with a request that is not JSON exits 1 with a message', async () => {
    const r = await runSvrkit(['call', '127.0.0.1:1', 'helloworld.Greeter/SayHello', '{name: ada}']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/request is not valid JSON/);
  });

  it('bench with neither --duration nor --requests exits non-zero with a message', async () => {
    const r = await runSvrkit(['bench', '127.0.0.1:1', 'helloworld.Greeter/SayHello', '--concurrency', '1']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/exactly one of --duration and --requests/);
  });

  it('svrkit <cmd> --help prints usage and exits 0 for gen, run, call and bench', async () => {
    const cmds = ['gen', 'run', 'call', 'bench'];
    const results = await Promise.all(cmds.map((cmd) => runSvrkit([cmd, '--help'])));
    cmds.forEach((cmd, i) => {
      const r = results[i]!;
      expect(r.code, `${cmd}: ${r.stderr}`).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^Usage: svrkit ${cmd} `));
      expect(r.stdout).toContain('Options:');
    });
    expect(results[3]!.stdout).toContain('--concurrency <n>');
    expect(results[2]!.stdout).toContain('NDJSON'); // streaming methods
    expect(results[3]!.stdout).toContain('messages/s');
  });
});

describe('svrkit gen', () => {
  it('writes the generated code for a good .proto', async () => {
    const out = path.join(tmpRel, 'gen-good');
    const r = await runSvrkit(['gen', 'examples/helloworld/greeter.proto', '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^svrkit gen: wrote \\d+ files to ${out.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\n$`));
    const code = readFileSync(path.join(repoRoot, out, 'greeter.ts'), 'utf8');
    expect(code).toContain('export class GreeterClient');
    expect(code).toContain('export abstract class GreeterService');
    expect(code).toContain("path: 'helloworld.Greeter/SayHello'");
  });

  it('exits 1 on a broken .proto and prints file:line:column: message; writes nothing', async () => {
    const proto = path.join(tmpRel, 'broken.proto');
    writeFileSync(
      path.join(repoRoot, proto),
      ['syntax = "proto3";', 'package broken;', 'message Broken {', '  NoSuchType field = 1;', '}', ''].join('\n'),
    );
    const out = path.join(tmpRel, 'gen-broken');
    const r = await runSvrkit(['gen', proto, '--out', out]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`${proto}:4:3: cannot find \`NoSuchType\` in this scope\n`);
    expect(existsSync(path.join(repoRoot, out))).toBe(false);
  });
});

describe('the chain example as three processes', () => {
  let backend: SvrkitProcess;
  let frontend: SvrkitProcess;
  let client: FrontendClient;
  let backendClient: BackendClient;

  beforeAll(async () => {
    backend = await startSvrkit(['run', 'examples/chain/backend.ts', '--port', '0']);
    frontend = await startSvrkit(['run', 'examples/chain/frontend.ts', '--port', '0'], { CHAIN_BACKEND: backend.address });
    client = new FrontendClient(frontend.address);
    backendClient = new BackendClient(backend.address);
    clients.push(client, backendClient);
  });

  afterAll(async () => {
    if (frontend === undefined || backend === undefined) return; // start-up failed; stopAllSvrkit() cleans up
    // Both stop gracefully (the client's calls are all over by now).
    const statuses = await Promise.all([frontend.stop(), backend.stop()]);
    expect(statuses).toEqual([{ code: 0, signal: null }, { code: 0, signal: null }]);
  });

  /** Polls Backend.Outcome until it reports something other than 'unknown' (up to ~2 s). */
  async function outcomeOf(requestId: string): Promise<string> {
    let outcome = 'unknown';
    for (let i = 0; i < 40 && outcome === 'unknown'; i++) {
      if (i > 0) await sleep(50);
      outcome = (await backendClient.outcome({ requestId }, { timeoutMs: 2000 })).outcome;
    }
    return outcome;
  }

  it('Relay carries the trace id, the propagated metadata (only those keys) and the deadline to the backend', async () => {
    const reply = await client.relay(
      { user: 'ada' },
      {
        timeoutMs: 5000,
        metadata: { 'x-request-id': 'r1', 'x-user': 'ada', 'x-local': 'not propagated' },
        propagate: ['x-request-id', 'x-user'],
      },
    );
    const { frontend: f, backend: b } = reply;
    expect(f).toBeDefined();
    expect(b).toBeDefined();
    expect(f!.service).toBe('chain.Frontend');
    expect(b!.service).toBe('chain.Backend');
    expect(f!.traceId).not.toBe('');
    expect(b!.traceId).toBe(f!.traceId);
    expect(f!.metadata).toEqual({ 'x-request-id': 'r1', 'x-user': 'ada', 'x-local': 'not propagated' });
    expect(b!.metadata).toEqual({ 'x-request-id': 'r1', 'x-user': 'ada' });
    expect(f!.deadlineLeftMs).toBeGreaterThan(0n);
    expect(f!.deadlineLeftMs).toBeLessThanOrEqual(5000n);
    expect(b!.deadlineLeftMs).toBeGreaterThan(0n);
    expect(b!.deadlineLeftMs).toBeLessThanOrEqual(f!.deadlineLeftMs);
    expect(b!.user).toBe('ada');
    expect(reply.localAfterCall).toBe('ada');
    expect(await outcomeOf('r1')).toBe('completed');
  });

  it('without a client deadline, neither hop has one', async () => {
    const reply = await client.relay({ user: 'bob' }, { metadata: { 'x-request-id': 'r-nodeadline' }, propagate: ['x-request-id'] });
    expect(reply.frontend!.deadlineLeftMs).toBe(-1n);
    expect(reply.backend!.deadlineLeftMs).toBe(-1n);
    expect(reply.backend!.metadata).toEqual({ 'x-request-id': 'r-nodeadline' });
  });

  it('a client deadline shorter than the backend\'s work: DEADLINE_EXCEEDED, and the backend\'s own deadline fires', async () => {
    const err = await rpcError(
      client.relay(
        { user: 'ada', backendDelayMs: 3000 },
        { timeoutMs: 300, metadata: { 'x-request-id': 'r-deadline' }, propagate: ['x-request-id'] },
      ),
    );
    expect(err.code).toBe(Status.DEADLINE_EXCEEDED);
    expect(await outcomeOf('r-deadline')).toBe('DEADLINE_EXCEEDED');
  });

  it('a call cancelled by the client through an AbortSignal: CANCELLED, and the backend\'s call is cancelled too', async () => {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 100);
    const err = await rpcError(
      client.relay(
        { user: 'ada', backendDelayMs: 3000 },
        { signal: abort.signal, metadata: { 'x-request-id': 'r-cancel' }, propagate: ['x-request-id'] },
      ),
    ).finally(() => clearTimeout(timer));
    expect(err.code).toBe(Status.CANCELLED);
    expect(await outcomeOf('r-cancel')).toBe('CANCELLED');
  });
});
