/**
 * What the two stream clients (svrkit-client.ts, grpc-client.ts) share: their command line, how
 * the messages are split over the streams, the run (warm-up, then the measured streams) and the
 * JSON result they print.
 */
import { Command, InvalidArgumentError } from 'commander';
import { MESSAGE_BYTES, PAYLOAD_BYTES } from './payload.js';

export interface ClientOptions {
  address: string;
  /** Messages in the measured run, over all streams. */
  messages: number;
  /** Streams, each on its own connection. */
  streams: number;
  /** Messages in the warm-up run (same streams, not measured). */
  warmup: number;
}

/** What one stream saw. */
export interface StreamTally {
  messages: number;
  lastSeq: number;
  bytes: number;
}

/** The result a client prints (JSON on stdout). */
export interface StreamResult {
  stack: string;
  streams: number;
  messages: number;
  seconds: number;
  messagesPerSecond: number;
  /** MESSAGE_BYTES x messages/s, in 10^6 bytes/s. */
  megabytesPerSecond: number;
  messageBytes: number;
  /** CPU seconds (user+sys) this process used during the measured run. */
  clientCpuS: number;
}

function positiveInt(what: string, min = 1) {
  return (text: string): number => {
    const n = Number(text);
    if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(n) || n < min) {
      throw new InvalidArgumentError(`${what} must be an integer >= ${min}, got '${text}'`);
    }
    return n;
  };
}

export function parseClientArgs(name: string): ClientOptions {
  const program = new Command()
    .name(name)
    .argument('<address>', 'server address host:port')
    .option('-n, --messages <n>', 'messages to receive in the measured run, over all streams', positiveInt('--messages'), 2_000_000)
    .option('-s, --streams <n>', 'concurrent streams, each on its own connection', positiveInt('--streams'), 1)
    .option('-w, --warmup <n>', 'messages of an unmeasured warm-up run first (same streams)', positiveInt('--warmup', 0), 200_000)
    .showHelpAfterError()
    .parse();
  const o = program.opts<{ messages: number; streams: number; warmup: number }>();
  return { address: program.args[0]!, ...o };
}

/** Splits `total` messages over `streams` streams as evenly as possible. */
export function split(total: number, streams: number): number[] {
  const base = Math.floor(total / streams);
  return Array.from({ length: streams }, (_, i) => base + (i < total % streams ? 1 : 0));
}

/** Checks that a stream got every message, in order, of the right size. */
export function check(tally: StreamTally, expected: number, stream: number): void {
  if (tally.messages !== expected || tally.lastSeq !== expected || tally.bytes !== PAYLOAD_BYTES) {
    throw new Error(`stream ${stream}: expected ${expected} messages ending at seq ${expected} with ${PAYLOAD_BYTES}-byte payloads, got ${tally.messages} ending at ${tally.lastSeq} (${tally.bytes} bytes)`);
  }
}

/**
 * Runs the warm-up, then the measured run, and prints the result as JSON. The measured run is
 * framed by `measuring` and `measured` lines on stdout, for run.ts to sample the server's CPU time.
 * @param openStream - opens stream `index` asking for `count` messages; resolves with what it read.
 */
export async function runStreams(stack: string, opts: ClientOptions, openStream: (index: number, count: number) => Promise<StreamTally>): Promise<void> {
  const once = async (total: number): Promise<number> => {
    const counts = split(total, opts.streams);
    const t0 = process.hrtime.bigint();
    const tallies = await Promise.all(counts.map((c, i) => openStream(i, c)));
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    tallies.forEach((t, i) => check(t, counts[i]!, i));
    return seconds;
  };
  if (opts.warmup > 0) await once(Math.max(opts.warmup, opts.streams));
  // run.ts samples the server's CPU time when it reads these two lines (stdout to a pipe is synchronous on Linux).
  process.stdout.write('measuring\n');
  const cpu0 = process.cpuUsage();
  const seconds = await once(opts.messages);
  const cpu = process.cpuUsage(cpu0);
  process.stdout.write('measured\n');
  const messagesPerSecond = opts.messages / seconds;
  const result: StreamResult = {
    stack,
    streams: opts.streams,
    messages: opts.messages,
    seconds,
    messagesPerSecond,
    megabytesPerSecond: (messagesPerSecond * MESSAGE_BYTES) / 1e6,
    messageBytes: MESSAGE_BYTES,
    clientCpuS: (cpu.user + cpu.system) / 1e6,
  };
  process.stdout.write(JSON.stringify(result) + '\n');
}
