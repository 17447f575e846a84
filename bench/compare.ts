/**
 * svrkit against grpc-js, side by side in one run, on 127.0.0.1.
 *
 *   npx tsx bench/compare.ts [--duration 5s] [--rounds 2] [--stacks svrkit,grpc-js,...]
 *                            [--rate 4000] [--pin] [--loads 64x1,1000x4] [--gc]
 *                            [--server-node-args "--allocation-site-pretenuring"]
 *
 * For each load (concurrency 64 over 1 connection; concurrency 1000 over 4 connections) and each
 * round, it runs every stack in turn on helloworld.Greeter/SayHello:
 * - `svrkit`: `svrkit run examples/helloworld`, loaded by `svrkit bench` (svrkit's protocol);
 * - `grpc-js`: the same rpc served by grpc-js (bench/grpc-js/server.ts), loaded by the grpc-js
 *   client driven by the same engine (bench/grpc-js/client.ts);
 * - `grpc-js+als`: the same, with each handler run in an AsyncLocalStorage context of its own, as
 *   svrkit's handlers are (`bench/grpc-js/server.ts --als`);
 * - `grpc-js>svrkit`: the grpc-js client against the svrkit server's own port (gRPC told by its
 *   preface); `grpc-js>svrkit:grpc-port`: the same against its gRPC-only port (`--grpc-port`);
 * - `svrkit-grpc`: `svrkit bench grpc://...` against the svrkit server's gRPC-only port (svrkit's
 *   client speaking gRPC).
 * Stacks alternate so that machine noise hits all. Each row is one run; the table also shows the
 * CPU time the server and the client used (user+sys, from /proc), which tells which side was the
 * bottleneck, and the server's CPU per call (after a warm-up run on the same server, so it is the
 * steady cost, not start-up and JIT).
 *
 * The servers' CPU per call depends on their throughput (at more calls/s, more of them share each
 * read, write and wake-up), and without a limit each stack runs at what its client can drive. For a
 * like-for-like figure, `--rate N` paces every client to N calls/s (`svrkit bench --rate`), so that
 * every server does the same work per second; `--pin` runs each server on CPU 1 and each client on
 * CPU 0 (taskset), so that neither takes the other's core. `--loads` lists the loads to run, as
 * concurrency x connections. `--gc` starts every server with `node --trace-gc` and adds the time
 * its garbage collections took during the measured run (ms, the sum of the pauses V8 prints) to
 * the table; `--server-node-args` passes more node options to every server (for an A/B of a V8
 * flag: the svrkit command turns allocation-site pretenuring off unless told otherwise, see
 * bin/svrkit.js). Needs `npm run build` first (it runs dist/) and the examples' generated code
 * (`npm start` or `npm test` make it).
 */
import { once } from 'node:events';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { parseDuration } from '../framework/cli/bench.js';
import { cpuSeconds, spawnNode, startServer as startServerIn } from './support.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const svrkitBin = fileURLToPath(new URL('../bin/svrkit.js', import.meta.url));
const tsx = ['--import', 'tsx'];

/** The stacks compare.ts knows, in the order it runs them. */
const STACKS = ['svrkit', 'grpc-js', 'grpc-js+als', 'grpc-js>svrkit', 'grpc-js>svrkit:grpc-port', 'svrkit-grpc'] as const;
type Stack = (typeof STACKS)[number];

interface Row {
  stack: string;
  calls: number;
  load: string;
  callsPerSecond: number;
  p50: number;
  p99: number;
  p999: number;
  errors: number;
  serverCpuS: number;
  clientCpuS: number;
  /** ms of garbage collection in the server during the measured run (`--gc`), else undefined. */
  serverGcMs: number | undefined;
}

/** The CPUs servers and clients run on with `--pin` (undefined: wherever the kernel puts them). */
let serverCpu: string | undefined;
let clientCpu: string | undefined;

/** More node options for every server (`--server-node-args`), and `--trace-gc` with `--gc`. */
let serverNodeArgs: string[] = [];
let traceGc = false;

/** Starts a server process from the repository root (see support.ts). */
const startServer = (args: string[], pattern: RegExp) => startServerIn([...(traceGc ? ['--trace-gc'] : []), ...serverNodeArgs, ...args], pattern, root, serverCpu);

/**
 * The GC pauses in `--trace-gc` output: the sum of the ms each Scavenge or Mark-Compact line gives
 * (`... MB, 9.27 / 0.00 ms ...`: the pause, then the part of it spent in external callbacks).
 * @param text - lines V8 printed.
 * @returns ms.
 */
function gcPauseMs(text: string): number {
  let ms = 0;
  for (const m of text.matchAll(/: (?:Scavenge|Mark-Compact|Mark-sweep|Minor Mark-Compact)\b[^\n]*? MB, ([\d.]+) \//g)) ms += Number(m[1]);
  return ms;
}

/** Runs a client to completion; returns its JSON result and the CPU seconds it used. */
async function runClient(args: string[]): Promise<{ result: Record<string, any>; cpuS: number }> {
  const child = spawnNode(args, root, clientCpu);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  let cpuS = 0;
  const sampler = setInterval(() => {
    const c = cpuSeconds(child.pid);
    if (!Number.isNaN(c)) cpuS = c;
  }, 50);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearInterval(sampler);
  if (code !== 0) throw new Error(`client exited with ${code}: ${err}`);
  return { result: JSON.parse(out.slice(out.indexOf('{'))), cpuS };
}

async function measure(stack: Stack, concurrency: number, connections: number, duration: string, warmup: string, rate: number | undefined): Promise<Row> {
  const server =
    stack === 'grpc-js' || stack === 'grpc-js+als'
      ? await startServer([...tsx, 'bench/grpc-js/server.ts', '0', ...(stack === 'grpc-js+als' ? ['--als'] : [])], /listening (\S+)/)
      : stack === 'grpc-js>svrkit:grpc-port' || stack === 'svrkit-grpc'
        ? await startServer([svrkitBin, 'run', 'examples/helloworld/greeter.ts', '--port', '0', '--grpc-port', '0'], /gRPC-only port on (\S+)/)
        : await startServer([svrkitBin, 'run', 'examples/helloworld/greeter.ts', '--port', '0'], /serving .* on (\S+) \(pid/);
  const run = (time: string) => {
    const load = ['--concurrency', String(concurrency), '--duration', time, '--connections', String(connections), '--json'];
    if (rate !== undefined) load.push('--rate', String(rate));
    return stack === 'svrkit'
      ? runClient([svrkitBin, 'bench', server.address, 'helloworld.Greeter/SayHello', '{"name":"ada"}', ...load])
      : stack === 'svrkit-grpc'
        ? runClient([svrkitBin, 'bench', `grpc://${server.address}`, 'helloworld.Greeter/SayHello', '{"name":"ada"}', ...load])
        : runClient([...tsx, 'bench/grpc-js/client.ts', server.address, ...load]);
  };
  // A warm-up run first: the server's CPU per call is then its steady cost, not its JIT's.
  if (warmup !== '0s') await run(warmup);
  let gcLog: string | undefined;
  const onServerOutput = (d: Buffer): void => void (gcLog += d.toString());
  if (traceGc) {
    gcLog = '';
    server.child.stdout!.on('data', onServerOutput);
  }
  const cpu0 = cpuSeconds(server.child.pid);
  const client = await run(duration);
  const serverCpuS = cpuSeconds(server.child.pid) - cpu0;
  server.child.stdout!.off('data', onServerOutput);
  server.child.kill('SIGTERM');
  await once(server.child, 'exit');
  const r = client.result;
  return {
    stack,
    calls: Number(r.calls),
    load: `c=${concurrency}, ${connections} conn${rate !== undefined ? `, ${rate}/s` : ''}`,
    callsPerSecond: Math.round(r.callsPerSecond),
    p50: r.latencyMs.p50,
    p99: r.latencyMs.p99,
    p999: r.latencyMs.p999,
    errors: Object.values(r.errors as Record<string, number>).reduce((a, b) => a + b, 0),
    serverCpuS,
    clientCpuS: client.cpuS,
    serverGcMs: gcLog === undefined ? undefined : gcPauseMs(gcLog),
  };
}

async function main(): Promise<void> {
  const opts = new Command()
    .option('-d, --duration <time>', 'length of each run', '5s')
    .option('-r, --rounds <n>', 'rounds (each runs every stack at both loads)', '1')
    .option('-w, --warmup <time>', 'a run before each measured one, on the same server, not counted (0s: none)', '2s')
    .option('-s, --stacks <list>', `stacks to run, comma-separated: ${STACKS.join(', ')}`, STACKS.join(','))
    .option('--rate <calls/s>', 'pace every client to this many calls per second (svrkit bench --rate)')
    .option('--pin', 'run servers on CPU 1 and clients on CPU 0 (taskset)')
    .option('--loads <list>', 'loads to run, comma-separated concurrency x connections', '64x1,1000x4')
    .option('--gc', "start servers with node --trace-gc and report their GC pauses (ms) during each measured run")
    .option('--server-node-args <args>', 'more node options for every server, space-separated', '')
    .parse(process.argv)
    .opts<{ duration: string; rounds: string; stacks: string; warmup: string; rate?: string; pin?: boolean; loads: string; gc?: boolean; serverNodeArgs: string }>();
  traceGc = opts.gc === true;
  serverNodeArgs = opts.serverNodeArgs.split(/\s+/).filter((a) => a !== '');
  for (const a of serverNodeArgs) if (!a.startsWith('-')) throw new Error(`--server-node-args: ${JSON.stringify(a)} is not a node option`);
  parseDuration(opts.duration);
  if (opts.warmup !== '0s') parseDuration(opts.warmup);
  const stacks = opts.stacks.split(',').map((x) => x.trim()) as Stack[];
  for (const x of stacks) if (!STACKS.includes(x)) throw new Error(`--stacks: unknown stack ${JSON.stringify(x)} (known: ${STACKS.join(', ')})`);
  const rounds = Math.max(1, Number(opts.rounds) || 1);
  const rate = opts.rate === undefined ? undefined : Number(opts.rate);
  if (rate !== undefined && !(Number.isInteger(rate) && rate >= 1)) throw new Error(`--rate: a whole number of calls per second, got ${JSON.stringify(opts.rate)}`);
  const loads = opts.loads.split(',').map((l) => {
    const m = /^(\d+)x(\d+)$/.exec(l.trim());
    if (m === null || Number(m[1]) < 1 || Number(m[2]) < 1) throw new Error(`--loads: ${JSON.stringify(l)} is not concurrency x connections, e.g. 64x1`);
    return [Number(m[1]), Number(m[2])] as const;
  });
  if (opts.pin) {
    if (availableParallelism() < 2) throw new Error('--pin needs two CPUs (servers on CPU 1, clients on CPU 0)');
    serverCpu = '1';
    clientCpu = '0';
  }
  const rows: Row[] = [];
  for (let round = 0; round < rounds; round++) {
    for (const [c, conns] of loads) {
      for (const stack of stacks) {
        const row = await measure(stack, c, conns, opts.duration, opts.warmup, rate);
        rows.push(row);
        process.stderr.write(`${row.stack} ${row.load}: ${row.callsPerSecond} calls/s, p99 ${row.p99} ms\n`);
      }
    }
  }
  const fmt = (n: number, d = 0) => (Number.isNaN(n) ? '-' : n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }));
  process.stdout.write(
    `\nhelloworld.Greeter/SayHello, ${opts.duration} per run after a ${opts.warmup} warm-up, node ${process.version}, ${rounds} round(s)` +
      `${rate !== undefined ? `, paced to ${rate} calls/s` : ''}${opts.pin ? ', servers on CPU 1 and clients on CPU 0' : ''}` +
      `${serverNodeArgs.length > 0 ? `, servers started with node ${serverNodeArgs.join(' ')}` : ''}\n\n`,
  );
  const gcColumn = traceGc ? ' server GC ms |' : '';
  process.stdout.write(`| stack | load | calls/s | p50 ms | p99 ms | p99.9 ms | errors | server CPU s | client CPU s | server CPU µs/call |${gcColumn}\n|---|---|---|---|---|---|---|---|---|---|${traceGc ? '---|' : ''}\n`);
  for (const r of rows) {
    process.stdout.write(
      `| ${r.stack} | ${r.load} | ${fmt(r.callsPerSecond)} | ${fmt(r.p50, 2)} | ${fmt(r.p99, 2)} | ${fmt(r.p999, 2)} | ${r.errors} | ${fmt(r.serverCpuS, 2)} | ${fmt(r.clientCpuS, 2)} | ${fmt((r.serverCpuS * 1e6) / r.calls, 1)} |` +
        `${r.serverGcMs === undefined ? '' : ` ${fmt(r.serverGcMs)} |`}\n`,
    );
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
