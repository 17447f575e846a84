/**
 * Server-streaming throughput, svrkit against grpc-js, side by side in one run, on 127.0.0.1.
 *
 *   npm run build                        # the svrkit server runs dist/ (bin/svrkit.js)
 *   npx tsx bench/stream/run.ts [--messages 2000000] [--rounds 3] [--warmup 200000] [--streams 1,4] [--cpu-prof <dir>]
 *
 * The rpc is streambench.Feed/Watch (feed.proto): one request, then `count` Events of exactly 64
 * bytes each, protobuf-encoded (fixed32 seq + a 57-byte payload; payload.ts), not counting either
 * transport's framing. run.ts generates bench/stream/gen with `svrkit gen` first.
 *
 * - svrkit: `node bin/svrkit.js run bench/stream/feed.ts --port 0` (an `async *` handler), read by
 *   svrkit-client.ts (the generated FeedClient, `connections: <streams>`, `for await`).
 * - grpc-js: grpc-server.ts (`call.write()` honouring 'drain'), read by grpc-client.ts (one grpc-js
 *   client per stream, each with its own subchannel pool, hence its own connection; 'data' events).
 *
 * For each round and each stream count (1 stream on 1 connection; 4 streams on 4 connections), it
 * runs svrkit, then grpc-js, each with a fresh server and client process. The client first runs an
 * unmeasured warm-up of `--warmup` messages with the same streams, then receives `--messages`
 * messages split evenly over the streams, timed from opening the streams to the end of the last.
 * A pair is one svrkit run and the grpc-js run right after it. Every pair is printed, then the
 * means, the ratio of the means, and the targets of issue 10 (4 streams: >= 1,000,000 messages/s
 * and >= 10x grpc-js). Per run: messages/s, MB/s (64 bytes x messages/s, in 10^6 B/s), and, over
 * the measured run only (the client frames it with `measuring`/`measured` lines): the CPU time
 * (user+sys) per message of the server (from /proc) and of the client (process.cpuUsage), and the
 * CPU the rest of the machine used meanwhile, in cores (/proc/stat minus server and client). CPU
 * per message does not depend on how much of a core a process got, so it survives a noisy machine
 * better than messages/s: 1e6 / max(server, client µs/msg) is what one core each would allow.
 *
 * `--cpu-prof <dir>` runs the svrkit server and client under `node --cpu-prof` (profiles in <dir>;
 * the server writes its profile when it exits after SIGTERM). Every process it starts is stopped
 * when its run ends, and on errors and Ctrl-C.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import { cpuSeconds, machineBusySeconds, startServer as startServerIn } from '../support.js';
import { MESSAGE_BYTES, PAYLOAD_BYTES } from './payload.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const svrkitBin = fileURLToPath(new URL('../../bin/svrkit.js', import.meta.url));
const tsx = ['--import', 'tsx'];
type Stack = 'svrkit' | 'grpc-js';

interface Run {
  stack: Stack;
  streams: number;
  messagesPerSecond: number;
  megabytesPerSecond: number;
  seconds: number;
  /** Server CPU (user+sys) per message during the measured run, µs. */
  serverUsPerMessage: number;
  /** Client CPU (user+sys) per message during the measured run, µs. */
  clientUsPerMessage: number;
  /** CPU the rest of the machine used during the measured run, in cores (other processes: noise). */
  otherCores: number;
}

interface Flags {
  messages: number;
  rounds: number;
  warmup: number;
  streams: number[];
  cpuProf?: string;
}

const live = new Set<ChildProcess>();
function killAll(): void {
  for (const c of live) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
}
process.on('SIGINT', () => {
  killAll();
  process.exit(130);
});
process.on('SIGTERM', () => {
  killAll();
  process.exit(143);
});

function track(child: ChildProcess): ChildProcess {
  live.add(child);
  child.once('exit', () => live.delete(child));
  return child;
}


/** Starts a server process (killed with the others at exit). */
async function startServer(args: string[], pattern: RegExp): Promise<{ child: ChildProcess; address: string }> {
  const started = await startServerIn(args, pattern, root);
  track(started.child);
  return started;
}


/**
 * Runs a client to completion; returns its JSON result. `onLine` sees each stdout line as it
 * arrives (the client frames its measured run with `measuring` and `measured`).
 */
async function runClient(args: string[], onLine: (line: string) => void): Promise<Record<string, any>> {
  const child = track(spawn(process.execPath, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] }));
  let out = '';
  let pending = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    pending += d.toString();
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      onLine(pending.slice(0, nl));
      pending = pending.slice(nl + 1);
    }
  });
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`client exited with ${code}: ${err}${out}`);
  return JSON.parse(out.slice(out.lastIndexOf('\n{') + 1));
}

interface Snapshot {
  server: number;
  machine: number;
  at: bigint;
}

async function measure(stack: Stack, streams: number, flags: Flags): Promise<Run> {
  const prof = stack === 'svrkit' && flags.cpuProf !== undefined ? ['--cpu-prof', '--cpu-prof-dir', flags.cpuProf] : [];
  const server =
    stack === 'svrkit'
      ? await startServer([...prof, svrkitBin, 'run', 'bench/stream/feed.ts', '--port', '0'], /serving .* on (\S+) \(pid/)
      : await startServer([...tsx, 'bench/stream/grpc-server.ts', '0'], /listening (\S+)/);
  try {
    const snap = (): Snapshot => ({ server: cpuSeconds(server.child.pid), machine: machineBusySeconds(), at: process.hrtime.bigint() });
    let start: Snapshot | undefined;
    let end: Snapshot | undefined;
    const load = [server.address, '--messages', String(flags.messages), '--streams', String(streams), '--warmup', String(flags.warmup)];
    const r = await runClient([...prof, ...tsx, stack === 'svrkit' ? 'bench/stream/svrkit-client.ts' : 'bench/stream/grpc-client.ts', ...load], (line) => {
      if (line === 'measuring') start = snap();
      else if (line === 'measured') end = snap();
    });
    if (start === undefined || end === undefined) throw new Error(`${stack} client did not frame its measured run`);
    const serverCpuS = end.server - start.server;
    const wallS = Number(end.at - start.at) / 1e9;
    return {
      stack,
      streams,
      messagesPerSecond: r.messagesPerSecond,
      megabytesPerSecond: r.megabytesPerSecond,
      seconds: r.seconds,
      serverUsPerMessage: (serverCpuS * 1e6) / flags.messages,
      clientUsPerMessage: (r.clientCpuS * 1e6) / flags.messages,
      otherCores: Math.max(0, end.machine - start.machine - serverCpuS - r.clientCpuS) / wallS,
    };
  } finally {
    if (server.child.exitCode === null) {
      server.child.kill('SIGTERM');
      const timer = setTimeout(() => server.child.kill('SIGKILL'), 10_000);
      await once(server.child, 'exit');
      clearTimeout(timer);
    }
  }
}

function int(what: string, min: number) {
  return (text: string): number => {
    const n = Number(text);
    if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`${what} must be an integer >= ${min}, got '${text}'`);
    return n;
  };
}

const fmt = (n: number, d = 0): string => (Number.isNaN(n) ? '-' : n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }));
const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
const label = (streams: number): string => (streams === 1 ? '1 stream, 1 conn' : `${streams} streams, ${streams} conns`);

async function main(): Promise<void> {
  const flags = new Command()
    .option('-n, --messages <n>', 'messages per measured run, split over the streams', int('--messages', 1), 2_000_000)
    .option('-r, --rounds <n>', 'pairs (svrkit run, then grpc-js run) per stream count', int('--rounds', 1), 3)
    .option('-w, --warmup <n>', 'unmeasured warm-up messages before each measured run', int('--warmup', 0), 200_000)
    .option('--streams <list>', 'stream counts to run, comma-separated', (t) => t.split(',').map((s) => int('--streams', 1)(s)), [1, 4])
    .option('--cpu-prof <dir>', 'profile the svrkit server and client (node --cpu-prof) into <dir>')
    .parse(process.argv)
    .opts<Flags>();
  if (!existsSync(path.join(root, 'dist/framework/cli/main.js'))) throw new Error('dist/ is missing: run `npm run build` first');
  if (flags.cpuProf !== undefined) {
    flags.cpuProf = path.resolve(flags.cpuProf);
    mkdirSync(flags.cpuProf, { recursive: true });
  }
  const gen = spawnSync(process.execPath, [svrkitBin, 'gen', 'bench/stream/feed.proto', '--out', 'bench/stream/gen'], { cwd: root, encoding: 'utf8' });
  if (gen.status !== 0) throw new Error(`svrkit gen failed: ${gen.stderr}${gen.stdout}`);

  const command = `npx tsx bench/stream/run.ts ${process.argv.slice(2).join(' ')}`.trim();
  const runs: Run[] = [];
  for (let round = 1; round <= flags.rounds; round++) {
    for (const streams of flags.streams) {
      for (const stack of ['svrkit', 'grpc-js'] as const) {
        const run = await measure(stack, streams, flags);
        runs.push(run);
        process.stderr.write(
          `round ${round} ${label(streams)} ${stack}: ${fmt(run.messagesPerSecond)} msg/s, ${fmt(run.megabytesPerSecond, 1)} MB/s, ` +
            `CPU/msg server ${fmt(run.serverUsPerMessage, 2)} µs, client ${fmt(run.clientUsPerMessage, 2)} µs, other processes ${fmt(run.otherCores, 2)} cores\n`,
        );
      }
    }
  }

  const out: string[] = [];
  out.push('');
  out.push(`$ ${command}`);
  out.push(
    `${os.cpus().length} CPUs. streambench.Feed/Watch (server streaming), ${fmt(flags.messages)} messages per run split over the streams (after ${fmt(flags.warmup)} unmeasured), ` +
      `${MESSAGE_BYTES}-byte messages (protobuf encoding of fixed32 seq + ${PAYLOAD_BYTES}-byte payload, without framing), ` +
      `MB/s = ${MESSAGE_BYTES} B x msg/s / 10^6, node ${process.version}, 127.0.0.1, ${flags.rounds} pair(s) per row group, svrkit first in each pair`,
  );
  out.push('');
  out.push('| streams | pair | svrkit msg/s | svrkit MB/s | grpc-js msg/s | grpc-js MB/s | svrkit / grpc-js | svrkit CPU µs/msg (server / client) | grpc-js CPU µs/msg (server / client) | other processes, cores (svrkit / grpc-js run) |');
  out.push('|---|---|---|---|---|---|---|---|---|---|');
  const cpu = (r: Run): string => `${fmt(r.serverUsPerMessage, 2)} / ${fmt(r.clientUsPerMessage, 2)}`;
  const summary: { streams: number; svrkit: number; grpc: number }[] = [];
  for (const streams of flags.streams) {
    const s = runs.filter((r) => r.stack === 'svrkit' && r.streams === streams);
    const g = runs.filter((r) => r.stack === 'grpc-js' && r.streams === streams);
    for (let i = 0; i < s.length; i++) {
      const a = s[i]!;
      const b = g[i]!;
      out.push(
        `| ${label(streams)} | ${i + 1} | ${fmt(a.messagesPerSecond)} | ${fmt(a.megabytesPerSecond, 1)} | ${fmt(b.messagesPerSecond)} | ${fmt(b.megabytesPerSecond, 1)} | ` +
          `${fmt(a.messagesPerSecond / b.messagesPerSecond, 1)}x | ${cpu(a)} | ${cpu(b)} | ${fmt(a.otherCores, 2)} / ${fmt(b.otherCores, 2)} |`,
      );
    }
    const ms = mean(s.map((r) => r.messagesPerSecond));
    const mg = mean(g.map((r) => r.messagesPerSecond));
    const avg = (rs: Run[]): Run => ({
      ...rs[0]!,
      serverUsPerMessage: mean(rs.map((r) => r.serverUsPerMessage)),
      clientUsPerMessage: mean(rs.map((r) => r.clientUsPerMessage)),
      otherCores: mean(rs.map((r) => r.otherCores)),
    });
    summary.push({ streams, svrkit: ms, grpc: mg });
    out.push(
      `| **${label(streams)}** | **mean** | **${fmt(ms)}** | **${fmt((ms * MESSAGE_BYTES) / 1e6, 1)}** | **${fmt(mg)}** | **${fmt((mg * MESSAGE_BYTES) / 1e6, 1)}** | ` +
        `**${fmt(ms / mg, 1)}x** | ${cpu(avg(s))} | ${cpu(avg(g))} | ${fmt(avg(s).otherCores, 2)} / ${fmt(avg(g).otherCores, 2)} |`,
    );
  }
  const four = summary.find((x) => x.streams === 4);
  if (four !== undefined) {
    out.push('');
    out.push(`target, 4 streams: svrkit >= 1,000,000 msg/s: ${fmt(four.svrkit)} -> ${four.svrkit >= 1_000_000 ? 'PASS' : 'FAIL'}`);
    out.push(`target, 4 streams: svrkit >= 10x grpc-js: ${fmt(four.svrkit / four.grpc, 1)}x -> ${four.svrkit >= 10 * four.grpc ? 'PASS' : 'FAIL'}`);
  }
  process.stdout.write(out.join('\n') + '\n');
}

main().catch((err: unknown) => {
  killAll();
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
