/**
 * The `svrkit` command line (commander): gen, run, call, bench, top, kv, registry.
 *
 * Exit codes: 0 on success; 1 for a failed call, bad flags, a bad .proto, a `svrkit bench` run in
 * which every call failed (its report is printed all the same), or any other error.
 * `svrkit call` whose stdout reader goes away mid-stream (EPIPE, `| head -3`) exits 0, quietly.
 */
import '../setup.js'; // the composition root: registers the file and etcd registries and resolvers
import { setup as setupPaxosKVRegistry } from '../../services/registry/paxoskv-registry.js';
import { setup as setupRemoteRegistry } from '../../services/registry/remote-registry.js';
import { readFile } from 'node:fs/promises';
import { Command, InvalidArgumentError, Option } from 'commander';
import { generate } from '../../codegen/index.js';
import { Channel } from '../client/channel.js';
import { parseMethodName, resolveMethod } from '../client/dynamic.js';
import type { Metadata } from '../wire/status.js';
import { DEFAULT_BENCH_CONCURRENCY, errorSummary, formatBenchResult, formatProgress, runBench, type ErrorSummary } from './bench.js';
import { benchCallFor, benchSample, callCommand } from './call.js';
import { collect, durationOption, intOption, parseJsonArgument, pemFile, positiveMs, reportError } from './flags.js';
import { addConfigCommands } from './config.js';
import { addTicketCommands, followKeyRing, loadKeyRing } from './tickets.js';
import { TicketVerifier } from '../tickets/ticket-verifier.js';
import type { TlsClientOptions } from '../transport/tls-transport.js';
import { addKvCommands } from './kv.js';
import { addRegistryCommands, addressOption, labelOption, positiveNumber, registryUriOption } from './registry.js';
import { serve } from './run.js';
import { DEFAULT_MAX_STREAMS_PER_CONNECTION } from '../server/server.js';
import { addTopCommand } from './top.js';
import { svrkitVersion } from './version.js';

// The PaxosKV registry and the registry service's client (services built on the framework)
// register themselves for paxoskv: and registry: URIs.
setupPaxosKVRegistry();
setupRemoteRegistry();

function metadataOption(value: string, previous: Metadata): Metadata {
  const i = value.indexOf('=');
  if (i <= 0) throw new InvalidArgumentError(`metadata '${value}' is not key=value`);
  return { ...previous, [value.slice(0, i).trim().toLowerCase()]: value.slice(i + 1) };
}


/** Builds the commander program. */
function buildProgram(): Command {
  const program = new Command()
    .name('svrkit')
    .description('svrkit: proto-first RPC services for Node.js — generate, run, call, benchmark')
    .version(svrkitVersion() ?? 'unknown', '-V, --version', "print svrkit's version")
    .showHelpAfterError('(run with --help for usage)');

  program
    .command('gen')
    .description('generate TypeScript messages (ts-proto), XService base classes and XClient classes from .proto files')
    .argument('<files...>', '.proto files')
    .requiredOption('-o, --out <dir>', 'output directory (generated files are overwritten; other files are never touched)')
    .option('-I, --include <dir>', "include directory for imports (repeatable; default: each file's directory)", collect, [] as string[])
    .option('--runtime-import <spec>', 'module generated services import the runtime from', 'svrkit')
    .action(async (files: string[], opts: { out: string; include: string[]; runtimeImport: string }) => {
      try {
        const result = await generate({ files, outDir: opts.out, includeDirs: opts.include, runtimeImport: opts.runtimeImport });
        for (const w of result.warnings) process.stderr.write(w + '\n');
        process.stdout.write(`svrkit gen: wrote ${result.written.length} files to ${opts.out}\n`);
      } catch (err) {
        process.stderr.write(`${(err as Error).message}\n`);
        process.exitCode = 1;
      }
    });

  program
    .command('run')
    .description('serve the service implementation(s) default-exported by a .ts or .js module')
    .argument('<entry>', 'module whose default export is a service implementation or an array of them')
    .option('-p, --port <port>', 'TCP port (0 picks a free one)', intOption('port', 0, 65535), 7000)
    .option('-H, --host <host>', 'interface to bind', '127.0.0.1')
    .option('--grace-ms <ms>', 'on SIGTERM/SIGINT, time allowed for in-flight calls (ms)', positiveMs, 5000)
    .option('--register <registry>', 'register the served services in a registry: file:///abs/path.json or etcd://host:port/prefix', registryUriOption)
    .option('--zone <zone>', 'zone of the registered instances (with --register)')
    .option('--label <key=value>', 'label of the registered instances (repeatable; with --register)', labelOption, {} as Record<string, string>)
    .option('--weight <n>', 'weight of the registered instances, > 0 (with --register; default 1)', positiveNumber)
    .option('--advertise <host:port>', 'address to register (default: the bound address; required when binding 0.0.0.0 or ::)', addressOption)
    .option('--ttl-ms <ms>', 'lease TTL of the registrations (ms; with --register; default 10000)', positiveMs)
    .option('--metrics-port <port>', 'serve Prometheus metrics at http://<metrics-host>:<port>/metrics (0 picks a free port)', intOption('metrics-port', 0, 65535))
    .option('--metrics-host <host>', 'interface of the metrics endpoint (not --host: metrics stay on loopback unless told otherwise)', '127.0.0.1')
    .addOption(new Option('--fast-reject <mode>', 'FastReject overload control: on, off, or dry-run (decide and log, reject nothing)').choices(['on', 'off', 'dry-run']).default('on'))
    .option('--queue-threshold-ms <ms>', 'FastReject: the wait that counts as a standing queue when no call in a window waited less (ms; default 20)', positiveMs)
    .option('--max-inflight <n>', 'FastReject: a fixed cap on calls in flight (default none: the backstop is memory)', intOption('max-inflight', 1, 10_000_000))
    .option('--max-queued-response-mb <n>', 'response bytes that may wait for one client before the server stops reading it (MiB; default 8)', positiveNumber)
    .option('--buffer-budget-mb <n>', 'server-wide budget for partly received frames and queued responses; large requests beyond it are refused before they are buffered (MiB; default a quarter of the heap limit)', positiveNumber)
    .option('--frame-timeout-ms <ms>', 'a frame that started arriving must be complete within this long, or the connection is closed (ms; default 30000)', positiveMs)
    .option('--idle-timeout-ms <ms>', 'a connection with no call and no frame for this long is closed (ms; default 300000)', positiveMs)
    .option('--ticket-keys <file>', 'check every call\'s ticket against this key ring (svrkit ticket keygen); edits of the file apply while serving (a key rotation)')
    .option('--tickets-optional', 'with --ticket-keys: a call without a ticket runs (unauthenticated) instead of failing UNAUTHENTICATED')
    .option('--grpc-port <port>', 'also serve gRPC alone on this port (0 picks a free one; over TLS with --tls-cert). gRPC clients can use --port too, unless --no-grpc', intOption('grpc-port', 0, 65535))
    .option('--no-grpc', "--port speaks svrkit's protocol only, not also gRPC (HTTP/2)")
    .option('--tls-cert <file>', 'serve over TLS with this certificate chain (PEM; with --tls-key)')
    .option('--tls-key <file>', 'the private key of --tls-cert (PEM)')
    .option('--tls-ca <file>', 'with --tls-cert: ask clients for a certificate signed by these CAs (PEM); currentCall().peerIdentity gives it')
    .option('--require-client-cert', 'with --tls-ca: refuse a client without such a certificate')
    .action(async (entry: string, opts: RunFlags) => {
      let stopFollowing: (() => void) | undefined;
      try {
        if (opts.ticketsOptional === true && opts.ticketKeys === undefined) throw new InvalidArgumentError('--tickets-optional needs --ticket-keys <file>');
        if ((opts.tlsCert === undefined) !== (opts.tlsKey === undefined)) throw new InvalidArgumentError('--tls-cert and --tls-key go together');
        if (opts.tlsCert === undefined && (opts.tlsCa !== undefined || opts.requireClientCert === true)) throw new InvalidArgumentError('--tls-ca and --require-client-cert need --tls-cert and --tls-key');
        if (opts.requireClientCert === true && opts.tlsCa === undefined) throw new InvalidArgumentError('--require-client-cert needs --tls-ca <file> (the CAs client certificates must chain to)');
        const tls =
          opts.tlsCert === undefined
            ? undefined
            : { cert: await pemFile('--tls-cert', opts.tlsCert), key: await pemFile('--tls-key', opts.tlsKey!), ca: opts.tlsCa === undefined ? undefined : await pemFile('--tls-ca', opts.tlsCa), requireClientCert: opts.requireClientCert === true };
        let verifier: TicketVerifier | undefined;
        if (opts.ticketKeys !== undefined) {
          verifier = new TicketVerifier(await loadKeyRing(opts.ticketKeys));
          stopFollowing = followKeyRing(opts.ticketKeys, verifier, (line) => process.stdout.write(line + '\n'));
        }
        const registerOnly = (['zone', 'weight', 'advertise', 'ttlMs'] as const).filter((k) => opts[k] !== undefined);
        if (opts.register === undefined && (registerOnly.length > 0 || Object.keys(opts.label).length > 0)) {
          throw new InvalidArgumentError('--zone, --label, --weight, --advertise and --ttl-ms need --register <registry>');
        }
        if (opts.fastReject === 'off' && (opts.queueThresholdMs !== undefined || opts.maxInflight !== undefined)) {
          throw new InvalidArgumentError('--queue-threshold-ms and --max-inflight need FastReject on (or dry-run)');
        }
        const { closed } = await serve(entry, {
          port: opts.port,
          host: opts.host,
          graceMs: opts.graceMs,
          server: {
            overload:
              opts.fastReject === 'off'
                ? false
                : { dryRun: opts.fastReject === 'dry-run', queueThresholdMs: opts.queueThresholdMs, maxInflight: opts.maxInflight },
            maxQueuedResponseBytes: opts.maxQueuedResponseMb === undefined ? undefined : Math.round(opts.maxQueuedResponseMb * 1024 * 1024),
            bufferBudgetBytes: opts.bufferBudgetMb === undefined ? undefined : Math.round(opts.bufferBudgetMb * 1024 * 1024),
            frameTimeoutMs: opts.frameTimeoutMs,
            idleTimeoutMs: opts.idleTimeoutMs,
            tickets: verifier === undefined ? undefined : { keys: verifier, required: opts.ticketsOptional !== true },
            tls,
            grpc: opts.grpc,
            grpcPort: opts.grpcPort,
          },
          metricsPort: opts.metricsPort,
          metricsHost: opts.metricsHost,
          register:
            opts.register === undefined
              ? undefined
              : { uri: opts.register, zone: opts.zone, labels: opts.label, weight: opts.weight, advertise: opts.advertise, ttlMs: opts.ttlMs },
        });
        await closed;
        stopFollowing?.();
        process.exit(0);
      } catch (err) {
        stopFollowing?.();
        reportError(err);
        process.exit(1);
      }
    });

  program
    .command('call')
    .description(
      'call a method with a JSON request and print the JSON reply (descriptors come from server reflection). ' +
        'Server-streaming and bidi methods print one JSON object per line (NDJSON) as responses arrive; ' +
        'client-streaming and bidi methods read their requests from stdin, one JSON object per line',
    )
    .argument('<address>', 'host:port or a resolver URI such as static:///h1:p1,h2:p2')
    .argument('<method>', 'package.Service/Method, e.g. helloworld.Greeter/SayHello')
    .argument(
      '[json]',
      'request as JSON (proto3 JSON mapping); default {}; - reads it from stdin; @file reads it from that file. ' +
        'For client-streaming and bidi methods leave it out or give - (requests come from stdin as NDJSON), or @file (the file holds the NDJSON requests)',
    )
    .option('-t, --timeout <ms>', 'deadline for the call, a whole stream included (ms)', positiveMs, 10_000)
    .option('-m, --metadata <key=value>', 'request metadata (repeatable)', metadataOption, {} as Metadata)
    .option('-P, --propagate <key>', 'mark a metadata key to flow on to downstream calls (repeatable)', collect, [] as string[])
    .option('--ticket <ticket>', 'the ticket to send (svrkit ticket issue); @file reads it from a file')
    .option('--tls-ca <file>', 'connect over TLS, trusting these CAs (PEM)')
    .option('--tls-cert <file>', 'with --tls-ca: the client certificate to present (PEM; with --tls-key)')
    .option('--tls-key <file>', 'the private key of --tls-cert (PEM)')
    .action(async (address: string, method: string, json: string | undefined, opts: { timeout: number; metadata: Metadata; propagate: string[]; ticket?: string } & TlsFlags) => {
      let channel: Channel | undefined;
      try {
        if (json !== undefined && json !== '-' && !json.startsWith('@')) parseJsonArgument(json); // fail before connecting
        channel = new Channel(address, { ticket: await ticketArgument(opts.ticket), tls: await clientTls(opts) });
        await callCommand(channel, method, json, { timeoutMs: opts.timeout, metadata: opts.metadata, propagate: opts.propagate });
      } catch (err) {
        reportError(err);
      } finally {
        channel?.close();
      }
    });

  program
    .command('bench')
    .description(
      'load a method with N calls kept in flight; print calls/s, latency percentiles and errors by status. ' +
        'On a server-streaming or bidi method each call is one stream read to its end, and messages/s is reported too; ' +
        'client-streaming and bidi streams send the one request given, then half-close',
    )
    .argument('<address>', 'host:port or a resolver URI')
    .argument('<method>', 'package.Service/Method')
    .argument('[json]', 'request as JSON (encoded once, sent on every call, or as the only message of every stream)', '{}')
    .option(
      '-c, --concurrency <n>',
      `calls kept in flight; on a streaming method at most ${DEFAULT_MAX_STREAMS_PER_CONNECTION} x --connections (a server's default limit of open streams per connection)`,
      intOption('concurrency', 1, 1_000_000),
      DEFAULT_BENCH_CONCURRENCY,
    )
    .addOption(new Option('-d, --duration <time>', 'run time, with a unit: 10s, 500ms, 2m (a bare number is refused)').argParser(durationOption('--duration')).conflicts('requests'))
    .addOption(new Option('-n, --requests <n>', 'total calls to make').argParser(intOption('requests', 1, Number.MAX_SAFE_INTEGER)))
    .option('--connections <n>', 'TCP connections to open to each address', intOption('connections', 1, 1024), 1)
    .option('--rate <calls/s>', 'start at most this many calls per second on average (default: as fast as the calls in flight end)', intOption('rate', 1, 100_000_000))
    .option('-t, --timeout <ms>', 'deadline per call, a whole stream for a streaming method (ms)', positiveMs, 10_000)
    .option('-m, --metadata <key=value>', 'request metadata (repeatable)', metadataOption, {} as Metadata)
    .option('--json', 'print the result as JSON (with messages and messagesPerSecond for a server-streaming or bidi method)')
    .option('--ticket <ticket>', 'the ticket every call sends (svrkit ticket issue); @file reads it from a file')
    .option('--tls-ca <file>', 'connect over TLS, trusting these CAs (PEM)')
    .option('--tls-cert <file>', 'with --tls-ca: the client certificate to present (PEM; with --tls-key)')
    .option('--tls-key <file>', 'the private key of --tls-cert (PEM)')
    .action(async (address: string, method: string, json: string, opts: BenchFlags) => {
      let channel: Channel | undefined;
      try {
        if ((opts.duration === undefined) === (opts.requests === undefined)) {
          throw new InvalidArgumentError('give exactly one of --duration and --requests');
        }
        const request = parseJsonArgument(json);
        channel = new Channel(address, { connections: opts.connections, ticket: await ticketArgument(opts.ticket), tls: await clientTls(opts) });
        const m = await resolveMethod(channel, method, { timeoutMs: opts.timeout });
        const bytes = m.encodeRequest(request);
        await channel.waitForReady(opts.timeout, parseMethodName(method).service);
        const callOptions = { timeoutMs: opts.timeout, metadata: opts.metadata };
        // One decoded call up front shows what comes back. When it fails, the run goes ahead all
        // the same: its report counts the errors by status, and says what the sample's was.
        let sampleError: ErrorSummary | undefined;
        const sample = await benchSample(channel, m, bytes, callOptions).catch((err: unknown) => {
          sampleError = errorSummary(err);
          return `sample call failed: ${sampleError.status}: ${sampleError.message} (benchmarking anyway; errors are counted by status)`;
        });
        if (!opts.json) {
          process.stderr.write(`bench ${m.path}${m.kind === 'unary' ? '' : ` (${m.kind.replace('_', '-')})`} on ${address}: concurrency ${opts.concurrency}, ${opts.connections} connection(s), ${opts.rate !== undefined ? `at most ${opts.rate} calls/s, ` : ''}` +
            `${opts.duration !== undefined ? `${opts.duration} ms` : `${opts.requests} calls`}\n${sample}\n`);
        }
        const { call, messageCount } = benchCallFor(channel, m, bytes, callOptions);
        const result = await runBench({
          call,
          messageCount,
          concurrency: opts.concurrency,
          durationMs: opts.duration,
          requests: opts.requests,
          rate: opts.rate,
          onProgress: opts.json ? undefined : (p) => process.stderr.write(formatProgress(p) + '\n'),
        });
        process.stdout.write(
          opts.json
            ? JSON.stringify({ method: m.path, address, connections: opts.connections, ...result, ...(sampleError !== undefined ? { sampleError } : {}) }) + '\n'
            : formatBenchResult(result, `${m.path} @ ${address}`) + '\n',
        );
        if (result.ok === 0) {
          // The report is printed; the exit code tells a script that nothing worked.
          const counts = Object.entries(result.errors).map(([status, n]) => `${status} x${n}`).join(', ');
          process.stderr.write(`error: every call failed (${counts || 'no call completed'})\n`);
          process.exitCode = 1;
        }
      } catch (err) {
        reportError(err);
      } finally {
        channel?.close();
      }
    });

  addTopCommand(program);
  addKvCommands(program);
  addConfigCommands(program);
  addTicketCommands(program);
  addRegistryCommands(program);
  return program;
}

interface RunFlags {
  port: number;
  grpcPort?: number;
  grpc: boolean;
  host: string;
  graceMs: number;
  register?: string;
  zone?: string;
  label: Record<string, string>;
  weight?: number;
  advertise?: string;
  ttlMs?: number;
  metricsPort?: number;
  metricsHost: string;
  fastReject: 'on' | 'off' | 'dry-run';
  queueThresholdMs?: number;
  maxInflight?: number;
  maxQueuedResponseMb?: number;
  bufferBudgetMb?: number;
  frameTimeoutMs?: number;
  idleTimeoutMs?: number;
  ticketKeys?: string;
  ticketsOptional?: boolean;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  requireClientCert?: boolean;
}

interface BenchFlags {
  concurrency: number;
  duration?: number;
  requests?: number;
  connections: number;
  rate?: number;
  timeout: number;
  metadata: Metadata;
  json?: boolean;
  ticket?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
}

/** The TLS flags of `call` and `bench`. */
interface TlsFlags {
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
}


/** The channel's TLS settings from `--tls-ca`, `--tls-cert` and `--tls-key`, or undefined for plain TCP. */
async function clientTls(opts: TlsFlags): Promise<TlsClientOptions | undefined> {
  if ((opts.tlsCert === undefined) !== (opts.tlsKey === undefined)) throw new InvalidArgumentError('--tls-cert and --tls-key go together');
  if (opts.tlsCa === undefined) {
    if (opts.tlsCert !== undefined) throw new InvalidArgumentError('--tls-cert needs --tls-ca <file> (the CAs the server\'s certificate must chain to)');
    return undefined;
  }
  return {
    ca: await pemFile('--tls-ca', opts.tlsCa),
    ...(opts.tlsCert === undefined ? {} : { cert: await pemFile('--tls-cert', opts.tlsCert), key: await pemFile('--tls-key', opts.tlsKey!) }),
  };
}

/** A `--ticket` value: the ticket, or `@file` (its first line). */
async function ticketArgument(value: string | undefined): Promise<string | undefined> {
  if (value === undefined || !value.startsWith('@')) return value;
  const text = await readFile(value.slice(1), 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw new InvalidArgumentError(`--ticket ${value}: ${err.code ?? err.message}`);
  });
  return text.trim();
}

await buildProgram().parseAsync(process.argv);
