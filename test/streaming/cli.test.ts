/**
 * `svrkit call` and `svrkit bench` on streaming methods, as real processes on 127.0.0.1: a Streams
 * server (test/support/streams-server.ts) in its own process, the `svrkit` CLI in others, fed
 * through stdin and read through stdout as a shell pipeline would.
 *
 * Also, in-process: NDJSON reading and line writing (framework/cli/ndjson.ts), and the method
 * kinds `resolveMethod` reads from reflection.
 *
 * Needs a fresh dist/ (`npm test` builds first; else run `npm run build`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { PassThrough, Writable } from 'node:stream';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { LineWriter, NdjsonError, readAllText, readNdjson, type NdjsonLine } from '../../framework/cli/ndjson.js';
import { Channel, resolveMethod } from '../../framework/index.js';
import { StreamsClient } from '../.tmp/gen/streams/streams.js';
import { eventually } from '../support/poll.js';
import { killAll, repoRoot, svrkitBin } from '../support/processes.js';

/** Every process this file starts; all are killed in afterAll if still running. */
const children = new Set<ChildProcess>();
afterAll(() => killAll(children));

/** A process started by this file, with its output so far. */
interface Proc {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  /** Resolves with the exit code (null when killed by a signal) once all output is collected. */
  exited: Promise<number | null>;
}

function start(command: string, args: string[], stdin: 'pipe' | 'ignore' = 'ignore'): Proc {
  const child = spawn(command, args, { cwd: repoRoot, env: process.env, stdio: [stdin, 'pipe', 'pipe'] });
  children.add(child);
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (err += s));
  const exited = new Promise<number | null>((resolve) => {
    child.once('close', (code) => {
      children.delete(child);
      resolve(code);
    });
  });
  return { child, stdout: () => out, stderr: () => err, exited };
}

/** Starts `svrkit <args>`; with `stdin: 'pipe'` the test writes its stdin. */
function svrkit(args: string[], stdin: 'pipe' | 'ignore' = 'ignore'): Proc {
  return start(process.execPath, [svrkitBin, ...args], stdin);
}

/** Waits for `p` to exit (killing it after `timeoutMs`), then returns its code and output. */
async function finished(p: Proc, timeoutMs = 30_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      p.child.kill('SIGKILL');
      reject(new Error(`process did not exit within ${timeoutMs} ms\n--- stdout ---\n${p.stdout()}\n--- stderr ---\n${p.stderr()}`));
    }, timeoutMs);
  });
  try {
    const code = await Promise.race([p.exited, timedOut]);
    return { code, stdout: p.stdout(), stderr: p.stderr() };
  } finally {
    clearTimeout(timer);
  }
}

/** Runs `svrkit <args>` with `input` as its whole stdin (undefined: no stdin at all). */
async function run(args: string[], input?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = svrkit(args, input === undefined ? 'ignore' : 'pipe');
  if (input !== undefined) p.child.stdin!.end(input);
  return finished(p);
}

/** The non-empty lines of `text`, each parsed as JSON. */
function ndjson(text: string): unknown[] {
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      try {
        return JSON.parse(l) as unknown;
      } catch {
        throw new Error(`not NDJSON: ${JSON.stringify(l)} in\n${text}`);
      }
    });
}

let address: string;
let client: StreamsClient;
const COUNT = 'streams.v1.Streams/Count';
const UPLOAD = 'streams.v1.Streams/Upload';
const ECHO = 'streams.v1.Streams/Echo';

beforeAll(async () => {
  const server = start(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'test/support/streams-server.ts')]);
  const line = await eventually('the streams server to print its address', () => /serving on (\S+)/.exec(server.stdout())?.[1], (v) => v !== undefined, 20_000);
  address = line!;
  client = new StreamsClient(address);
}, 30_000);

afterAll(() => client?.close());

async function stats(): Promise<{ closed: number; open: number; lastAbort: string }> {
  const s = await client.stats({}, { timeoutMs: 5000 });
  return { closed: Number(s.closed), open: Number(s.open), lastAbort: s.lastAbort };
}

describe('resolveMethod reads the kind from the served descriptors', () => {
  it('unary, server-streaming, client-streaming and bidi', async () => {
    const channel = new Channel(address);
    try {
      const kinds: Record<string, unknown> = {};
      for (const name of ['Stats', 'Count', 'Upload', 'Echo']) {
        const m = await resolveMethod(channel, `streams.v1.Streams/${name}`, { timeoutMs: 5000 });
        expect(m.json.kind).toBe(m.kind);
        expect(m.raw.kind).toBe(m.kind);
        kinds[name] = m.kind;
      }
      expect(kinds).toEqual({ Stats: 'unary', Count: 'server_streaming', Upload: 'client_streaming', Echo: 'bidi_streaming' });
      // ...and the definitions work with the matching channel methods.
      const count = await resolveMethod(channel, COUNT, { timeoutMs: 5000 });
      const seqs: unknown[] = [];
      for await (const item of channel.serverStream(count.json, { count: 3 }, { timeoutMs: 5000 })) seqs.push((item as { seq: string }).seq);
      expect(seqs).toEqual(['0', '1', '2']);
      const upload = await resolveMethod(channel, UPLOAD, { timeoutMs: 5000 });
      expect(await channel.clientStream(upload.json, [{ data: 'YWJj' }, { data: 'ZA==' }], { timeoutMs: 5000 })).toEqual({ bytes: '4', chunks: 2, checksum: 97 + 98 + 99 + 100 });
    } finally {
      channel.close();
    }
  });
});

describe('svrkit call on a server-streaming method', () => {
  beforeEach(async () => {
    await eventually('earlier streams to close', async () => (await stats()).open === 0, (v) => v, 10_000);
  });

  it('prints one JSON object per line (NDJSON), exit 0', async () => {
    const r = await run(['call', address, COUNT, '{"count":5,"payloadBytes":2}']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout.endsWith('\n')).toBe(true);
    expect(r.stdout.split('\n').slice(0, -1).every((l) => !l.includes('  '))).toBe(true); // compact, one per line
    expect(ndjson(r.stdout)).toEqual([0, 1, 2, 3, 4].map((i) => ({ seq: String(i), payload: 'YWE=' })));
  });

  it('prints each message as it arrives; a deadline mid-stream prints the status after them, exit 1', async () => {
    // The server sends 3 items, then holds the stream open: they must show up before it ends.
    const p = svrkit(['call', address, COUNT, '{"count":3,"hang":true}', '--timeout', '4000']);
    await eventually('3 lines while the stream is still open', () => p.stdout().split('\n').length - 1, (n) => n >= 3, 20_000);
    expect(p.child.exitCode).toBeNull();
    const r = await finished(p);
    expect(r.code).toBe(1);
    expect(ndjson(r.stdout)).toEqual([0, 1, 2].map((i) => ({ seq: String(i), payload: '' })));
    expect(r.stderr).toMatch(/^ERROR: DEADLINE_EXCEEDED: /);
  });

  it('a server error mid-stream: the messages before it, then "ERROR: <STATUS>: ..." on stderr, exit 1 (as unary)', async () => {
    const r = await run(['call', address, COUNT, '{"count":10,"failAfter":2,"failCode":9}']);
    expect(r.code).toBe(1);
    expect(ndjson(r.stdout)).toEqual([{ seq: '0', payload: '' }, { seq: '1', payload: '' }]);
    expect(r.stderr).toBe('ERROR: FAILED_PRECONDITION: failed after 2 items\n');
  });

  it('piped into `head -3`: three lines, no error, exit 0, and the stream is cancelled on the server', async () => {
    // A POSIX shell pipeline; svrkit's exit code goes to stderr (no PIPESTATUS in sh).
    const cmd = `{ "$0" "$1" call "$2" ${COUNT} '{"count":1000000000}'; echo "svrkit exit $?" >&2; } | head -3`;
    const p = start('/bin/sh', ['-c', cmd, process.execPath, svrkitBin, address]);
    const r = await finished(p);
    expect(r.code, r.stderr).toBe(0);
    expect(ndjson(r.stdout)).toEqual([0, 1, 2].map((i) => ({ seq: String(i), payload: '' })));
    expect(r.stderr).toBe('svrkit exit 0\n');
    const s = await eventually('the server to see the stream cancelled', stats, (v) => v.open === 0, 10_000);
    expect(s.lastAbort).toBe('CANCELLED');
  });

  it('its reader closing the pipe mid-stream (EPIPE) ends the call quietly', async () => {
    const p = svrkit(['call', address, COUNT, '{"count":1000000000,"payloadBytes":100}']);
    await eventually('some output', () => p.stdout().length, (n) => n > 0, 20_000);
    p.child.stdout!.destroy(); // the reader goes away
    const r = await finished(p);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    await eventually('the server to see the stream cancelled', stats, (v) => v.open === 0, 10_000);
  });

  it('`-` reads the request from stdin', async () => {
    const r = await run(['call', address, COUNT, '-'], '{"count": 2}\n');
    expect(r.code, r.stderr).toBe(0);
    expect(ndjson(r.stdout)).toEqual([{ seq: '0', payload: '' }, { seq: '1', payload: '' }]);
  });
});

describe('svrkit call on client-streaming and bidi methods: requests from stdin as NDJSON', () => {
  beforeEach(async () => {
    await eventually('earlier streams to close', async () => (await stats()).open === 0, (v) => v, 10_000);
  });

  it('client-streaming: every line is a request, blank lines are skipped, stdin\'s end half-closes; the reply prints as for unary', async () => {
    const r = await run(['call', address, UPLOAD], '{"data":"YWJj"}\n\n   \r\n{"data":"ZA=="}\r\n{"data":""}');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(JSON.stringify({ bytes: '4', chunks: 3, checksum: 394 }, null, 2) + '\n');
  });

  it('client-streaming with an empty stdin sends no request at all', async () => {
    const r = await run(['call', address, UPLOAD, '-'], '');
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ bytes: '0', chunks: 0, checksum: 0 });
  });

  it('bidi: each response prints as it arrives, while stdin is still being read', async () => {
    const p = svrkit(['call', address, ECHO, '--timeout', '20000'], 'pipe');
    for (let i = 1; i <= 3; i++) {
      p.child.stdin!.write(`{"seq":${i}}\n`);
      await eventually(`the echo of request ${i}`, () => ndjson(p.stdout()).length, (n) => n === i, 20_000);
      expect(p.child.exitCode).toBeNull();
    }
    p.child.stdin!.end();
    const r = await finished(p);
    expect(r.code, r.stderr).toBe(0);
    expect(ndjson(r.stdout)).toEqual([1, 2, 3].map((i) => ({ seq: String(i), payload: '' })));
  });

  it('a line that is not JSON: an error naming its line number, exit 1, and the stream is cancelled', async () => {
    const p = svrkit(['call', address, ECHO, '--timeout', '20000'], 'pipe');
    p.child.stdin!.write('{"seq":1}\n\n');
    await eventually('the first echo', () => p.stdout(), (s) => s.includes('\n'), 20_000);
    expect((await stats()).open).toBe(1);
    p.child.stdin!.write('{"seq": 2,\n'); // line 3; stdin stays open: the error alone must end the call
    const r = await finished(p);
    expect(r.code).toBe(1);
    expect(ndjson(r.stdout)).toEqual([{ seq: '1', payload: '' }]);
    expect(r.stderr).toMatch(/^error: stdin line 3: not valid JSON: /);
    const s = await eventually('the server to see the stream cancelled', stats, (v) => v.open === 0, 10_000);
    expect(s.lastAbort).toBe('CANCELLED');
  });

  it('a line that does not fit the request type: INVALID_ARGUMENT naming the line, exit 1', async () => {
    const r = await run(['call', address, UPLOAD], '{"data":"YQ=="}\n{"bytes":1}\n');
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^ERROR: INVALID_ARGUMENT: stdin line 2: request does not fit streams\.v1\.Chunk: .*bytes/);
  });

  it('the deadline ends a bidi call whose stdin stays open: the responses so far, then DEADLINE_EXCEEDED, exit 1', async () => {
    const p = svrkit(['call', address, ECHO, '--timeout', '1500'], 'pipe');
    p.child.stdin!.write('{"seq":7}\n'); // and never end stdin
    const r = await finished(p, 20_000);
    expect(r.code).toBe(1);
    expect(ndjson(r.stdout)).toEqual([{ seq: '7', payload: '' }]);
    expect(r.stderr).toMatch(/^ERROR: DEADLINE_EXCEEDED: /);
  });

  it('a JSON request argument for a client-streaming or bidi method is refused, exit 1', async () => {
    const [upload, echo] = await Promise.all([run(['call', address, UPLOAD, '{"data":""}']), run(['call', address, ECHO, '{}'])]);
    expect(upload.code).toBe(1);
    expect(upload.stderr).toBe(
      `error: ${UPLOAD} is a client-streaming method: its requests are read from stdin, one JSON object per line (NDJSON); leave out the request argument (or give -), or give @file to read them from a file\n`,
    );
    expect(echo.code).toBe(1);
    expect(echo.stderr).toContain(`${ECHO} is a bidi-streaming method`);
  });

  it('a unary call is printed as before', async () => {
    const r = await run(['call', address, 'streams.v1.Streams/Stats']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^\{\n {2}"closed": "\d+",\n/);
  });
});

describe('svrkit bench on streaming methods', () => {
  interface BenchJson {
    method: string;
    calls: number;
    ok: number;
    errors: Record<string, number>;
    callsPerSecond: number;
    messages?: number;
    messagesPerSecond?: number;
  }

  it('server-streaming --json: each call is one whole stream; messages and messagesPerSecond', async () => {
    const r = await run(['bench', address, COUNT, '{"count":50}', '--concurrency', '8', '--requests', '200', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as BenchJson;
    expect(j).toMatchObject({ method: COUNT, calls: 200, ok: 200, errors: {}, messages: 200 * 50 });
    expect(j.callsPerSecond).toBeGreaterThan(0);
    expect(j.messagesPerSecond).toBeCloseTo(j.callsPerSecond * 50, 6);
  });

  it('server-streaming, text: the sample stream, then calls/s and messages/s', async () => {
    const r = await run(['bench', address, COUNT, '{"count":20}', '--concurrency', '4', '--requests', '100']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`bench ${COUNT} (server-streaming) on ${address}`);
    expect(r.stderr).toContain('sample stream: 20 messages, the first: {"seq":"0","payload":""}');
    expect(r.stdout).toMatch(/^ {2}messages {5}2,000 \(20\.0 per call\)$/m);
    expect(r.stdout).toMatch(/^ {2}throughput {3}[\d,]+ calls\/s {2}[\d,]+ messages\/s$/m);
  });

  it('a failing sample stream: the bench runs all the same and counts the errors by status; every call failed, so exit 1', async () => {
    const r = await run(['bench', address, COUNT, '{"count":10,"failAfter":5,"failCode":14}', '--concurrency', '2', '--requests', '10', '--json']);
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({ calls: 10, ok: 0, errors: { UNAVAILABLE: 10 }, sampleError: { status: 'UNAVAILABLE', message: 'failed after 5 items' } });
    expect(r.stderr).toBe('error: every call failed (UNAVAILABLE x10)\n');
  });

  it('client-streaming: each call sends the one request given, then half-closes (no message counts)', async () => {
    const r = await run(['bench', address, UPLOAD, '{"data":"YWJj"}', '--concurrency', '4', '--requests', '100', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as BenchJson;
    expect(j).toMatchObject({ method: UPLOAD, calls: 100, ok: 100, errors: {} });
    expect(j.messages).toBeUndefined();
    expect(j.messagesPerSecond).toBeUndefined();
  });

  it('bidi: each call sends the one request, half-closes and reads the responses to the end, counting them', async () => {
    const r = await run(['bench', address, ECHO, '{"seq":7}', '--concurrency', '4', '--requests', '100', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ method: ECHO, calls: 100, ok: 100, errors: {}, messages: 100 });
  });
});

describe('readNdjson', () => {
  async function* chunks(...parts: Array<string | Uint8Array>): AsyncGenerator<string | Uint8Array> {
    for (const p of parts) yield p;
  }
  async function all(input: AsyncIterable<string | Uint8Array>): Promise<NdjsonLine[]> {
    const out: NdjsonLine[] = [];
    for await (const l of readNdjson(input)) out.push(l);
    return out;
  }

  it('parses one value per line, across any chunking, with \\r\\n, blank lines and no final newline', async () => {
    const bytes = Buffer.from('{"a":1}\r\n\n  \n[1,2]\n"é€😀"\n7', 'utf8');
    const expected = [
      { line: 1, value: { a: 1 } },
      { line: 4, value: [1, 2] },
      { line: 5, value: 'é€😀' },
      { line: 6, value: 7 },
    ];
    for (let size = 1; size <= 7; size++) {
      const parts: Uint8Array[] = [];
      for (let i = 0; i < bytes.length; i += size) parts.push(bytes.subarray(i, i + size)); // splits UTF-8 characters
      expect(await all(chunks(...parts))).toEqual(expected);
    }
    expect(await all(chunks(bytes.toString('utf8')))).toEqual(expected);
  });

  it('a line that is not JSON throws NdjsonError naming the line, after the good lines before it', async () => {
    const got: unknown[] = [];
    let error: unknown;
    try {
      for await (const l of readNdjson(chunks('1\n\n2\n{oops}\n3\n'))) got.push(l.value);
    } catch (err) {
      error = err;
    }
    expect(got).toEqual([1, 2]);
    expect(error).toBeInstanceOf(NdjsonError);
    expect((error as NdjsonError).line).toBe(4);
    expect((error as Error).message).toMatch(/^stdin line 4: not valid JSON: /);
  });

  it('refuses a line longer than maxLineLength, even before its newline arrives', async () => {
    const read = async (input: AsyncIterable<string | Uint8Array>) => {
      for await (const _ of readNdjson(input, { source: 'input', maxLineLength: 10 })) void _;
    };
    await expect(read(chunks('1\n', '"0123456789012"'))).rejects.toThrow('input line 2: longer than 10 characters');
    await expect(read(chunks('1\n"0123', '456789012'))).rejects.toThrow('input line 2: longer than 10 characters');
  });

  it('reads lazily, and leaving early returns the input (a stream is destroyed)', async () => {
    const input = new PassThrough();
    input.write('1\n2\n');
    const it = readNdjson(input)[Symbol.asyncIterator]();
    expect((await it.next()).value).toEqual({ line: 1, value: 1 });
    await it.return(undefined);
    expect(input.destroyed).toBe(true);
  });

  it('readAllText decodes UTF-8 split across chunks', async () => {
    const b = Buffer.from('{"x":"€"}', 'utf8');
    expect(await readAllText(chunks(b.subarray(0, 7), b.subarray(7)))).toBe('{"x":"€"}');
  });
});

describe('LineWriter', () => {
  it('writes one line per call; an EPIPE closes it quietly, once, and later writes do nothing', async () => {
    const written: string[] = [];
    let fail = false;
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        if (fail) {
          const err = Object.assign(new Error('write EPIPE'), { code: 'EPIPE' });
          cb(err);
          return;
        }
        written.push(chunk.toString());
        cb();
      },
    });
    const closes: Error[] = [];
    const w = new LineWriter(sink, (err) => closes.push(err));
    expect(w.writeLine('{"a":1}')).toBeUndefined();
    expect(written).toEqual(['{"a":1}\n']);
    fail = true;
    w.writeLine('{"a":2}');
    await eventually('the writer to close', () => w.closed, (v) => v, 5000);
    expect(w.gone).toBe(true);
    expect(closes.map((e) => (e as NodeJS.ErrnoException).code)).toEqual(['EPIPE']);
    expect(w.writeLine('{"a":3}')).toBeUndefined();
    expect(closes).toHaveLength(1);
  });

  it('another write error closes it too, but is not "gone"', async () => {
    const sink = new Writable({ write: (_c, _e, cb) => cb(Object.assign(new Error('disk full'), { code: 'ENOSPC' })) });
    const w = new LineWriter(sink);
    w.writeLine('x');
    await eventually('the writer to close', () => w.closed, (v) => v, 5000);
    expect(w.gone).toBe(false);
    expect(w.error?.message).toBe('disk full');
  });

  it('returns a promise when the stream is full, resolved on drain', async () => {
    const callbacks: Array<() => void> = [];
    const sink = new Writable({ highWaterMark: 4, write: (_c, _e, cb) => void callbacks.push(cb) });
    const w = new LineWriter(sink);
    const p = w.writeLine('0123456789');
    expect(p).toBeInstanceOf(Promise);
    let resolved = false;
    void p!.then(() => (resolved = true));
    await new Promise((r) => setImmediate(r));
    expect(resolved).toBe(false);
    callbacks.shift()!();
    await p;
    expect(resolved).toBe(true);
  });
});
