/**
 * Streaming end to end, over real sockets between real processes: a Streams server
 * (test/support/streams-server.ts) in its own process, and clients in this process or in their own
 * (test/support/streams-client.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { RpcError, Status } from '../../framework/index.js';
import { StreamsClient, type Item } from '../.tmp/gen/streams/streams.js';
import { killAll, repoRoot } from '../support/processes.js';
import { eventually } from '../support/poll.js';

/** Polls `probe` until it is true (a throw counts as not yet). */
async function waitFor(probe: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  await eventually(what, probe, (v) => v, timeoutMs);
}

const children: ChildProcess[] = [];
afterAll(() => killAll(children));

interface Child {
  child: ChildProcess;
  /** Everything it printed on stdout so far. */
  stdout: () => string;
  exited: Promise<number | null>;
}

function startChild(script: string, args: string[], env: NodeJS.ProcessEnv = {}): Child {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, script), ...args], {
    cwd: repoRoot,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (err += s));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  void exited.then((code) => {
    if (code !== 0 && code !== null) console.error(`${script} exited ${code}: ${out}${err}`);
  });
  return { child, stdout: () => out, exited };
}

async function startServer(env: NodeJS.ProcessEnv = {}): Promise<{ address: string; server: Child }> {
  const server = startChild('test/support/streams-server.ts', [], env);
  await waitFor(() => /serving on (\S+)/.test(server.stdout()), 20_000, 'the streams server to start');
  return { address: /serving on (\S+)/.exec(server.stdout())![1]!, server };
}

let address: string;
let client: StreamsClient;

beforeAll(async () => {
  ({ address } = await startServer());
  client = new StreamsClient(address);
}, 30_000);

afterAll(() => client?.close());

async function stats(): Promise<{ closed: number; open: number; rss: number; lastAbort: string }> {
  const s = await client.stats({});
  return { closed: Number(s.closed), open: Number(s.open), rss: Number(s.rss), lastAbort: s.lastAbort };
}

describe('server streaming', () => {
  // Each test starts with no stream open on the server (a cancelled stream closes asynchronously).
  beforeEach(async () => {
    await waitFor(async () => (await stats()).open === 0, 10_000, 'earlier streams to close');
  });

  it('delivers 1,000,000 small messages, every one, in order', async () => {
    let expected = 0n;
    for await (const item of client.count({ count: 1_000_000, payloadBytes: 16 })) {
      if (item.seq !== expected) throw new Error(`item ${expected} came as ${item.seq}`);
      expected++;
    }
    expect(expected).toBe(1_000_000n);
  }, 60_000);

  it('sends response metadata with the first message and trailers with the status', async () => {
    let header: Record<string, string> | undefined;
    let trailer: Record<string, string> | undefined;
    const items: Item[] = [];
    for await (const item of client.count(
      { count: 3, headers: { 'x-first': 'yes' }, trailers: { 'x-last': 'done' } },
      { onHeader: (md) => (header = { ...md }), onTrailer: (md) => (trailer = { ...md }) },
    )) {
      if (items.length === 0) expect(header).toEqual({ 'x-first': 'yes' });
      items.push(item);
    }
    expect(items.map((i) => i.seq)).toEqual([0n, 1n, 2n]);
    expect(trailer).toMatchObject({ 'x-first': 'yes', 'x-last': 'done' });
  });

  it('ends with the handler error after the messages already sent', async () => {
    const seen: bigint[] = [];
    const err = await (async () => {
      for await (const item of client.count({ count: 100, failAfter: 5, failCode: Status.FAILED_PRECONDITION })) seen.push(item.seq);
    })().catch((e: unknown) => e);
    expect(seen).toEqual([0n, 1n, 2n, 3n, 4n]);
    expect(err).toBeInstanceOf(RpcError);
    expect((err as RpcError).code).toBe(Status.FAILED_PRECONDITION);
    expect((err as RpcError).message).toBe('failed after 5 items');
  });

  it('a break cancels the call: the server signal fires and the generator finally runs', async () => {
    const before = await stats();
    let n = 0;
    for await (const _ of client.count({ count: 10, hang: true })) {
      if (++n === 3) break;
    }
    await waitFor(async () => (await stats()).closed === before.closed + 1, 5000, 'the generator to close');
    const after = await stats();
    expect(after.open).toBe(0);
    expect(after.lastAbort).toBe('CANCELLED');
  });

  it('a deadline covers the whole stream and ends it mid-way', async () => {
    const before = await stats();
    let n = 0;
    const t0 = Date.now();
    const err = await (async () => {
      for await (const _ of client.count({ count: 5, hang: true }, { timeoutMs: 300 })) n++;
    })().catch((e: unknown) => e);
    expect(n).toBe(5);
    expect((err as RpcError).code).toBe(Status.DEADLINE_EXCEEDED);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    await waitFor(async () => (await stats()).closed === before.closed + 1, 5000, 'the generator to close');
    expect((await stats()).lastAbort).toBe('DEADLINE_EXCEEDED');
  });

  it('an abort signal cancels the stream', async () => {
    const ac = new AbortController();
    let n = 0;
    const err = await (async () => {
      for await (const _ of client.count({ count: 2, hang: true }, { signal: ac.signal })) {
        if (++n === 2) ac.abort();
      }
    })().catch((e: unknown) => e);
    expect((err as RpcError).code).toBe(Status.CANCELLED);
  });

  it('a client that vanishes mid-stream: the server closes the generator and keeps nothing open', async () => {
    const before = await stats();
    const c = startChild('test/support/streams-client.ts', ['vanish', address]);
    await waitFor(() => c.stdout().includes('streaming'), 20_000, 'the client to stream');
    expect((await stats()).open).toBe(before.open + 1);
    c.child.kill('SIGKILL');
    await waitFor(async () => (await stats()).closed === before.closed + 1, 5000, 'the generator to close');
    expect((await stats()).open).toBe(before.open);
    expect((await stats()).lastAbort).toBe('CANCELLED');
  }, 30_000);

  it('a slow consumer pauses the generator: RSS stays bounded on both sides', async () => {
    const rssBefore = (await stats()).rss;
    const c = startChild('test/support/streams-client.ts', ['slow', address, '1000', '10', '1024']);
    let serverMax = rssBefore;
    const sampler = setInterval(() => {
      void stats().then((s) => (serverMax = Math.max(serverMax, s.rss)), () => {});
    }, 250);
    const code = await c.exited;
    clearInterval(sampler);
    expect(code).toBe(0);
    const report = JSON.parse(c.stdout().trim().split('\n').pop()!) as { received: number; rssStart: number; rssMax: number };
    // 1,000 messages/s for 10 s: the reader's pace, not the generator's.
    expect(report.received).toBeGreaterThanOrEqual(5000);
    expect(report.received).toBeLessThanOrEqual(12_000);
    const MiB = 1024 * 1024;
    expect(report.rssMax - report.rssStart).toBeLessThan(64 * MiB);
    expect(serverMax - rssBefore).toBeLessThan(64 * MiB);
    await waitFor(async () => (await stats()).open === 0, 5000, 'the stream to close');
  }, 60_000);
});

describe('client streaming', () => {
  it('uploads 100 MiB in 64 KiB chunks', async () => {
    const chunk = Buffer.alloc(64 * 1024);
    for (let i = 0; i < chunk.length; i++) chunk[i] = i % 251;
    let chunkSum = 0;
    for (let i = 0; i < chunk.length; i++) chunkSum += chunk[i]!;
    const chunks = 1600;
    async function* source() {
      for (let i = 0; i < chunks; i++) yield { data: chunk };
    }
    const summary = await client.upload(source());
    expect(summary.bytes).toBe(BigInt(chunks * chunk.length));
    expect(summary.chunks).toBe(chunks);
    expect(summary.checksum).toBe((chunkSum * chunks) % 2 ** 32);
  }, 60_000);

  it('takes an array of partial messages', async () => {
    const summary = await client.upload([{ data: Buffer.from('ab') }, {}, { data: Buffer.from('c') }]);
    expect(summary).toEqual({ bytes: 3n, chunks: 3, checksum: 0x61 + 0x62 + 0x63 });
  });
});

describe('bidi streaming', () => {
  it('echoes with both sides interleaved', async () => {
    // The next request is sent only after the previous answer came back: a strict ping-pong.
    let answered: () => void = () => {};
    let seen = -1;
    async function* requests() {
      for (let i = 0; i < 100; i++) {
        const back = new Promise<void>((resolve) => (answered = resolve));
        yield { seq: BigInt(i) };
        await back;
      }
    }
    for await (const item of client.echo(requests())) {
      expect(Number(item.seq)).toBe(seen + 1);
      seen = Number(item.seq);
      answered();
    }
    expect(seen).toBe(99);
  });

  it('a break cancels both directions and the server generator closes', async () => {
    const before = await stats();
    async function* requests() {
      for (let i = 0; ; i++) yield { seq: BigInt(i) };
    }
    let n = 0;
    for await (const _ of client.echo(requests())) if (++n === 10) break;
    await waitFor(async () => (await stats()).closed === before.closed + 1, 5000, 'the generator to close');
    expect((await stats()).lastAbort).toBe('CANCELLED');
  });
});

describe('graceful close', () => {
  it('GOAWAY lets open streams finish within the grace period', async () => {
    const { address: addr, server } = await startServer({ GRACE_MS: '10000' });
    const c = new StreamsClient(addr);
    try {
      let n = 0;
      let signalled = false;
      for await (const _ of c.count({ count: 50, payloadBytes: 8 })) {
        n++;
        if (!signalled) {
          signalled = true;
          server.child.kill('SIGUSR2');
        }
        await new Promise((r) => setTimeout(r, 10));
      }
      expect(n).toBe(50);
      await waitFor(() => server.stdout().includes('closed'), 10_000, 'the server to finish closing');
      // A new call after GOAWAY finds no server.
      const err = await c.stats({}, { timeoutMs: 2000 }).catch((e: unknown) => e);
      expect((err as RpcError).code).toBe(Status.UNAVAILABLE);
    } finally {
      c.close();
      server.child.kill('SIGTERM');
    }
  }, 30_000);
});
