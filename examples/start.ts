/**
 * The main job, `npm start`: the whole svrkit workflow on this machine, end to end, with real
 * processes on 127.0.0.1:
 *
 * 1. `svrkit gen` generates typed code for the helloworld and chain examples from their .proto files;
 * 2. `svrkit run` serves helloworld, the chain backend and the chain frontend as three processes;
 * 3. generated clients call them (the chain shows deadline, trace id and metadata crossing a hop);
 * 4. `svrkit call` calls by name with JSON, using server reflection;
 * 5. `svrkit bench` loads helloworld for 3 s at concurrency 1000 over 4 connections;
 * 6. discovery: two helloworld instances register in a file registry (`svrkit run --register`);
 *    `svrkit registry list` shows them; a client resolves the service through the registry, keeps
 *    calling while one instance is SIGKILLed, and sees no failure (SayHello is idempotent, so calls
 *    cut off with it are retried on the other);
 * 7. every server is stopped with SIGTERM and shuts down gracefully (deregistering first);
 * 8. `svrkit kv up` brings up a local 3-replica PaxosKV cluster; writes and reads go through it
 *    (CLI and PaxosKVClient), one replica is SIGKILLed and writes carry on, its disk is replaced
 *    and it rejoins with `kv serve --rejoin` (fencing every key before it votes), then it stops;
 * 9. the inbox example (examples/inbox/demo.ts): three users and a group send messages through
 *    Login, Message and Sync servers on a new PaxosKV cluster, one replica is SIGKILLed halfway,
 *    and every client receives every message sent to it once and in order.
 *
 * Exits 0 when every step worked, 1 otherwise.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const cli = fileURLToPath(new URL('../bin/svrkit.js', import.meta.url));
const started: ChildProcess[] = [];

function section(title: string): void {
  process.stdout.write(`\n== ${title}\n`);
}

function show(line: string): void {
  process.stdout.write(`   ${line}\n`);
}

/** Runs `svrkit <args>` to completion, echoing its output line by line; throws on a non-zero exit. */
async function svrkit(args: string[]): Promise<void> {
  show(`$ svrkit ${args.map((a) => (/[\s{}"]/.test(a) ? `'${a}'` : a)).join(' ')}`);
  const child = spawn(process.execPath, [cli, ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  for (const stream of [child.stdout, child.stderr]) {
    createInterface({ input: stream }).on('line', (line) => {
      lines.push(line);
      process.stdout.write(`   | ${line}\n`);
    });
  }
  const [code] = (await once(child, 'close')) as [number | null];
  if (code !== 0) throw new Error(`svrkit ${args[0]} exited with ${code}: ${lines.slice(-5).join(' / ')}`);
}

/** Starts `svrkit run <entry> --port 0`; resolves with the address it serves on. */
async function serve(entry: string, env: Record<string, string> = {}, extraArgs: string[] = []): Promise<{ address: string; child: ChildProcess }> {
  const child = spawn(process.execPath, [cli, 'run', entry, '--port', '0', ...extraArgs], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  started.push(child);
  let output = '';
  const address = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${entry} did not start in 30 s:\n${output}`)), 30_000);
    const onData = (d: Buffer): void => {
      output += d.toString();
      const m = /svrkit: serving .* on (\S+) \(pid/.exec(output);
      if (m !== null) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${entry} exited with ${code} before serving:\n${output}`));
    });
  });
  show(`svrkit run ${[entry, ...extraArgs].join(' ')}  ->  ${address} (pid ${child.pid})`);
  return { address, child };
}

async function stopAll(): Promise<void> {
  for (const child of started) {
    if (child.exitCode !== null || child.signalCode !== null) continue;
    const exited = once(child, 'exit') as Promise<[number | null, string | null]>;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    const [code, signal] = await exited;
    clearTimeout(timer);
    show(`pid ${child.pid} exited with ${code ?? signal}`);
  }
}

async function main(): Promise<void> {
  process.stdout.write('svrkit: proto-first RPC for Node.js, end to end on 127.0.0.1\n');

  section('1. generate typed code from .proto (svrkit gen)');
  await svrkit(['gen', 'examples/helloworld/greeter.proto', '--out', 'examples/helloworld/gen']);
  await svrkit(['gen', 'examples/chain/chain.proto', '--out', 'examples/chain/gen']);
  await svrkit(['gen', 'examples/inbox/inbox.proto', '--out', 'examples/inbox/gen']);

  section('2. serve (svrkit run), one process each');
  const hello = await serve('examples/helloworld/greeter.ts');
  const backend = await serve('examples/chain/backend.ts');
  const frontend = await serve('examples/chain/frontend.ts', { CHAIN_BACKEND: backend.address });

  section('3. call through the generated clients');
  const { GreeterClient } = await import('./helloworld/gen/greeter.js');
  const { FrontendClient } = await import('./chain/gen/chain.js');
  const { RpcError, statusName } = await import('svrkit');
  const greeter = new GreeterClient(hello.address);
  const reply = await greeter.sayHello({ name: 'ada' }, { timeoutMs: 2000 });
  show(`GreeterClient.sayHello({ name: 'ada' }) -> ${JSON.stringify(reply)}`);
  try {
    await greeter.sayHello({ name: '' });
    throw new Error('an empty name should have failed');
  } catch (err) {
    if (!(err instanceof RpcError)) throw err;
    show(`GreeterClient.sayHello({ name: '' }) -> RpcError ${statusName(err.code)}: ${err.message}`);
  }
  greeter.close();

  const chain = new FrontendClient(frontend.address);
  const relay = await chain.relay(
    { user: 'ada' },
    { timeoutMs: 1500, metadata: { 'x-request-id': 'start-1', 'x-user': 'ada', 'x-debug': 'frontend only' }, propagate: ['x-request-id', 'x-user'] },
  );
  show('FrontendClient.relay (the frontend handler calls the backend; nothing passed by hand):');
  for (const hop of [relay.frontend!, relay.backend!]) {
    show(`  ${hop.service.padEnd(15)} trace ${hop.traceId}  deadline in ${hop.deadlineLeftMs} ms  metadata ${JSON.stringify(hop.metadata)}`);
  }
  show(`  coroutine-local after the downstream await: '${relay.localAfterCall}'`);
  try {
    await chain.relay({ user: 'slow', backendDelayMs: 2000 }, { timeoutMs: 200 });
    throw new Error('the slow relay should have timed out');
  } catch (err) {
    if (!(err instanceof RpcError)) throw err;
    show(`relay with a 200 ms deadline and a 2 s backend -> ${statusName(err.code)}: ${err.message}`);
  }
  chain.close();

  section('4. call by name with JSON (svrkit call, via server reflection)');
  await svrkit(['call', hello.address, 'helloworld.Greeter/SayHello', '{"name":"grace"}']);
  await svrkit(['call', hello.address, 'svrkit.Health/Check']);
  await svrkit(['call', frontend.address, 'svrkit.Reflection/ListServices']);

  section('5. benchmark (svrkit bench, 3 s, concurrency 1000, 4 connections)');
  await svrkit(['bench', hello.address, 'helloworld.Greeter/SayHello', '{"name":"ada"}', '--concurrency', '1000', '--duration', '3s', '--connections', '4']);

  const registryDir = mkdtempSync(path.join(tmpdir(), 'svrkit-registry-'));
  try {
    await discovery(GreeterClient, `file://${path.join(registryDir, 'registry.json')}`);
    section('7. graceful shutdown (SIGTERM; registered instances deregister first)');
    await stopAll();
  } finally {
    rmSync(registryDir, { recursive: true, force: true });
  }

  await paxoskv();
  section('9. the WeChat inbox (examples/inbox): queues and tables on PaxosKV, tickets, config, Notify streams');
  const { runDemo } = await import('./inbox/demo.js');
  await runDemo(show);
  process.stdout.write('\nsvrkit: all steps passed\n');
}

/**
 * Step 6: two registered instances, a client that resolves them through the file registry, and a
 * SIGKILL of one of them under load.
 */
async function discovery(GreeterClient: typeof import('./helloworld/gen/greeter.js').GreeterClient, registry: string): Promise<void> {
  section('6. discovery, balancing and retries (file registry; SIGKILL of one instance under load)');
  {
    const a = await serve('examples/helloworld/greeter.ts', {}, ['--register', registry, '--zone', 'z1', '--label', 'version=1']);
    await serve('examples/helloworld/greeter.ts', {}, ['--register', registry, '--zone', 'z1', '--label', 'version=1']);
    await svrkit(['registry', 'list', registry]);
    await svrkit(['call', registry, 'helloworld.Greeter/SayHello', '{"name":"lin"}']);
    const greeter = new GreeterClient(registry, { zone: 'z1' });
    let ok = 0;
    const failures: string[] = [];
    let running = true;
    const workers = Array.from({ length: 32 }, async (_, w) => {
      for (let i = 0; running; i++) {
        try {
          await greeter.sayHello({ name: `w${w}-${i}` }, { timeoutMs: 5000 });
          ok++;
        } catch (err) {
          failures.push(String(err));
        }
      }
    });
    await new Promise((r) => setTimeout(r, 500));
    a.child.kill('SIGKILL');
    show(`SIGKILLed pid ${a.child.pid} (${a.address}) with calls in flight`);
    await new Promise((r) => setTimeout(r, 1000));
    running = false;
    await Promise.all(workers);
    greeter.close();
    show(`GreeterClient over ${registry}: ${ok} calls succeeded, ${failures.length} failed across the SIGKILL`);
    if (failures.length > 0) throw new Error(`calls failed across the SIGKILL: ${failures.slice(0, 3).join(' / ')}`);
  }
}

/** True when `port` can be bound on 127.0.0.1 right now. */
async function portFree(port: number): Promise<boolean> {
  const s = createServer();
  return new Promise((resolve) => {
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** Section 7: a local PaxosKV cluster. */
async function paxoskv(): Promise<void> {
  section('8. PaxosKV: a local 3-replica cluster (svrkit kv up), leaseless per-key Paxos');
  let base = 7101;
  while (!(await portFree(base)) || !(await portFree(base + 1)) || !(await portFree(base + 2))) base += 3;
  const dataDir = mkdtempSync(path.join(tmpdir(), 'svrkit-paxoskv-'));
  const peers = `1=127.0.0.1:${base},2=127.0.0.1:${base + 1},3=127.0.0.1:${base + 2}`;
  show(`$ svrkit kv up --replicas 3 --data-dir ${dataDir} --base-port ${base}`);
  const up = spawn(process.execPath, [cli, 'kv', 'up', '--replicas', '3', '--data-dir', dataDir, '--base-port', String(base)], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  started.push(up);
  const pids = new Map<number, number>();
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the cluster did not start in 30 s')), 30_000);
    for (const stream of [up.stdout!, up.stderr!]) {
      createInterface({ input: stream }).on('line', (line) => {
        process.stdout.write(`   | ${line}\n`);
        const m = /paxoskv replica (\d+) .* serving on \S+ \(pid (\d+)\)/.exec(line);
        if (m !== null) pids.set(Number(m[1]), Number(m[2]));
        if (pids.size === 3) {
          clearTimeout(timer);
          resolve();
        }
      });
    }
    up.once('exit', (code) => reject(new Error(`kv up exited with ${code}`)));
  });
  try {
    await svrkit(['kv', 'put', 'greeting', 'hello', '--peers', peers]);
    await svrkit(['kv', 'get', 'greeting', '--peers', peers]);
    await svrkit(['kv', 'cas', 'greeting', '1', 'hello again', '--peers', peers]);
    show('from code: PaxosKVClient (every replica serves reads and writes; no leader)');
    const { PaxosKVClient } = await import('svrkit');
    const kv = new PaxosKVClient({ peers: peers.split(',').map((p) => p.split('=')[1]!), attemptTimeoutMs: 300 });
    try {
      const v = await kv.put('counter', new TextEncoder().encode('0'));
      show(`  put counter -> version ${v}`);
      show(`  SIGKILL replica 1 (pid ${pids.get(1)})`);
      process.kill(pids.get(1)!, 'SIGKILL');
      for (let i = 1; i <= 5; i++) {
        const t0 = performance.now();
        const version = await kv.compareAndSet('counter', v + BigInt(i - 1), new TextEncoder().encode(String(i)));
        show(`  compareAndSet counter ${v + BigInt(i - 1)} -> ${version} with replica 1 down (${(performance.now() - t0).toFixed(1)} ms)`);
      }
      const got = await kv.get('counter');
      show(`  get counter -> '${new TextDecoder().decode(got!.value)}' at version ${got!.version}`);
    } finally {
      kv.close();
    }
    await svrkit(['kv', 'status', '--peers', peers]).catch((err: Error) => show(`(status: ${err.message})`));
    // Replica 1's disk is replaced: an empty data dir, started with --rejoin. It fences every key
    // the other voters hold before it votes again (it may have voted before the loss).
    const dir1 = path.join(dataDir, 'replica-1');
    rmSync(dir1, { recursive: true, force: true });
    show(`replica 1 lost its disk: $ svrkit kv serve --id 1 --peers ${peers} --data-dir ${dir1} --rejoin`);
    const rejoined = spawn(process.execPath, [cli, 'kv', 'serve', '--id', '1', '--peers', peers, '--data-dir', dir1, '--rejoin'], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    started.push(rejoined);
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('the rejoining replica did not vote within 30 s')), 30_000);
        for (const stream of [rejoined.stdout!, rejoined.stderr!]) {
          createInterface({ input: stream }).on('line', (line) => {
            process.stdout.write(`   | ${line}\n`);
            if (/paxoskv replica 1 voting/.test(line)) {
              clearTimeout(timer);
              resolve();
            }
          });
        }
        rejoined.once('exit', (code) => reject(new Error(`the rejoining replica exited with ${code}`)));
      });
      await svrkit(['kv', 'get', 'counter', '--peers', peers]);
      await svrkit(['kv', 'status', '--peers', peers]);
    } finally {
      const gone = once(rejoined, 'exit');
      rejoined.kill('SIGTERM');
      await gone;
    }
  } finally {
    const exited = once(up, 'exit');
    up.kill('SIGINT');
    await exited;
    rmSync(dataDir, { recursive: true, force: true });
  }
  show('cluster stopped; data dir removed');
}

main().catch(async (err: unknown) => {
  process.stderr.write(`\nsvrkit start failed: ${(err as Error).stack ?? String(err)}\n`);
  await stopAll();
  process.exit(1);
});
