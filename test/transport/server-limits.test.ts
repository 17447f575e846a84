/**
 * What a hostile or broken client can make a server hold, bounded: a real `svrkit run` process on
 * 127.0.0.1, raw sockets that misbehave, and the server's resident memory (VmRSS from
 * /proc/<pid>/status) as the measure. The numbers asserted are bounds, not timings.
 *
 * - A client that sends 5.3 MiB of requests with 14 KiB replies and reads nothing (FastReject on,
 *   and off, where handlers start as frames are read): the server stops reading it once 8 MiB of
 *   replies wait (`maxQueuedResponseBytes`) and holds back the calls it already read, so it grows
 *   by about the cap plus its own working memory, not by the 1 GiB of replies; once the client
 *   reads, every reply arrives. (How many requests an unbounded server reads before its writes
 *   block depends on the kernel's socket buffers: here the tree before the cap grew by 73-78 MiB
 *   in this test, on the machine where the probe found it, to 1.1 GiB.)
 * - 16 such clients at once, four waves: the server's own count of what it holds
 *   (`svrkit_server_buffered_bytes`) stays at 16 caps and drops to 0 once they close, and its RSS
 *   does not add up from wave to wave. (Before the server parked the calls of one read whose
 *   replies would pass the cap, it held 14 MiB per connection here, 226 MiB in all.)
 * - Slowloris: connections that send a frame a byte at a time are closed once the frame takes
 *   longer than `frameTimeoutMs`, with a GOAWAY naming FRAME_TIMEOUT; a connection with nothing
 *   on it is closed after `idleTimeoutMs` (CONNECTION_IDLE), one that sends PINGs is not.
 * - Large requests beyond the server-wide buffer budget are refused (RESOURCE_EXHAUSTED, not
 *   processed, OVERLOADED_BUFFERS) when their first bytes arrive, before they are buffered.
 *
 * After each, the server still answers a generated client.
 */
import { connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, RpcError, Server } from '../../index.js';
import { GreeterClient, GreeterService, HelloRequest } from '../../examples/helloworld/gen/greeter.js';
import { FileContainingSymbolRequest } from '../../framework/builtin/gen/svrkit/reflection.js';
import { FrameDecoder, FrameKind } from '../../framework/wire/frame.js';
import { decodeStatusHeader, encodeRequestHeader } from '../../framework/wire/header.js';
import { Status } from '../../framework/wire/status.js';
import { rawFrame } from '../support/raw-frame.js';
import { rss } from '../support/rss.js';
import { startSvrkit, stopAllSvrkit, type SvrkitProcess } from '../support/processes.js';
import { eventually } from '../support/poll.js';

const GREETER = 'examples/helloworld/greeter.ts';
const MiB = 1024 * 1024;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A raw connection to `address` that collects the frames the server sends. */
async function rawConnection(address: string): Promise<{ socket: Socket; frames: Array<{ kind: number; callId: number; header: Buffer }>; closed: Promise<void> }> {
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
  const socket = connect(port, host);
  socket.on('error', () => undefined);
  await once(socket, 'connect');
  const frames: Array<{ kind: number; callId: number; header: Buffer }> = [];
  const decoder = new FrameDecoder(64 * MiB, (kind, callId, header) => frames.push({ kind, callId, header: Buffer.from(header) }));
  socket.on('data', (chunk: Buffer) => decoder.push(chunk));
  const closed = new Promise<void>((r) => socket.once('close', () => r()));
  return { socket, frames, closed };
}

/**
 * Says hello through a generated client: the server still serves. Right after an overload, a
 * server with FastReject sheds calls (RESOURCE_EXHAUSTED) until its admission level has climbed
 * back, which takes a few 100 ms windows, more on a busy machine: those are tried again, for 15 s.
 */
async function stillServes(address: string): Promise<void> {
  const channel = new Channel(address);
  const until = Date.now() + 15_000;
  try {
    for (;;) {
      try {
        const reply = await new GreeterClient(channel).sayHello({ name: 'still' }, { timeoutMs: 5000 });
        expect(reply.message).toContain('still');
        return;
      } catch (err) {
        if (!(err instanceof RpcError) || err.code !== Status.RESOURCE_EXHAUSTED || Date.now() > until) throw err;
        await sleep(200);
      }
    }
  } finally {
    channel.close();
  }
}

/** The GOAWAY reason among `frames` (undefined when none came). */
function goawayReason(frames: Array<{ kind: number; header: Buffer }>): string | undefined {
  const g = frames.find((f) => f.kind === FrameKind.GOAWAY);
  return g === undefined ? undefined : decodeStatusHeader(g.header).r;
}

afterAll(async () => {
  await stopAllSvrkit();
});

describe.each([['on'], ['off']])('a client that does not read its replies (FastReject %s)', (fastReject) => {
  let server: SvrkitProcess;
  beforeAll(async () => {
    server = await startSvrkit(['run', GREETER, '--port', '0', '--fast-reject', fastReject, '--metrics-port', '0']);
  });
  afterAll(async () => {
    await server.stop('SIGKILL').catch(() => undefined);
  });

  it('costs the server about the 8 MiB cap, not its replies; the server serves on and keeps nothing after it closes', async () => {
    await stillServes(server.address);
    const pid = server.process.pid!;
    const before = rss(pid);
    const { socket, frames } = await rawConnection(server.address);
    socket.pause(); // reads nothing: every reply stays with the server or in the kernel
    const header = encodeRequestHeader({ m: 'svrkit.Reflection/FileContainingSymbol' });
    const body = FileContainingSymbolRequest.encode({ symbol: 'google.protobuf.FileDescriptorProto' }).finish();
    const one = rawFrame(FrameKind.REQUEST, 1, header, body);
    const count = Math.ceil((5.3 * MiB) / one.length);
    const chunks: Buffer[] = [];
    for (let id = 1; id <= count; id++) chunks.push(rawFrame(FrameKind.REQUEST, id, header, body));
    socket.write(Buffer.concat(chunks));
    // Give the server time to read, run and answer what it will.
    let peak = before;
    for (let i = 0; i < 30; i++) {
      await sleep(100);
      peak = Math.max(peak, rss(pid));
    }
    // Unbounded, each request's reply (10 KiB or more) would be held: hundreds of MiB.
    // A sanity bound: the cap plus the server's own working memory (its heap grows while it
    // serves thousands of calls), far below the 1 GiB of replies.
    expect(peak - before, `RSS grew from ${(before / MiB).toFixed(0)} to ${(peak / MiB).toFixed(0)} MiB`).toBeLessThan(8 * MiB + 128 * MiB);
    // Other clients are served meanwhile.
    await stillServes(server.address);
    // Reading again, the client gets every reply, in full.
    socket.resume();
    for (let i = 0; i < 200 && frames.filter((f) => f.kind === FrameKind.RESPONSE).length < count; i++) await sleep(100);
    const responses = frames.filter((f) => f.kind === FrameKind.RESPONSE);
    expect(responses.length).toBe(count);
    expect(responses.every((f) => f.header.length === 0)).toBe(true); // OK: an empty status header
    socket.destroy();
    await stillServes(server.address);
  }, 60_000);

  it('16 such clients at once cost about 16 caps; wave after wave, nothing is kept once they close', async () => {
    const pid = server.process.pid!;
    const before = rss(pid);
    const header = encodeRequestHeader({ m: 'svrkit.Reflection/FileContainingSymbol' });
    const body = FileContainingSymbolRequest.encode({ symbol: 'google.protobuf.FileDescriptorProto' }).finish();
    const frameBytes = rawFrame(FrameKind.REQUEST, 1, header, body).length;
    const count = Math.ceil((5.3 * MiB) / frameBytes);
    const requests = Buffer.concat(Array.from({ length: count }, (_, i) => rawFrame(FrameKind.REQUEST, i + 1, header, body)));
    const metricsUrl = /metrics on (http:\S+)/.exec(server.output().stdout)![1]!;
    const bufferedBytes = async (): Promise<number> => {
      const text = await (await fetch(metricsUrl)).text();
      return Number(/^svrkit_server_buffered_bytes (\S+)$/m.exec(text)![1]);
    };
    const wave = async (): Promise<number> => {
      const conns = await Promise.all(Array.from({ length: 16 }, () => rawConnection(server.address)));
      for (const c of conns) {
        c.socket.pause();
        c.socket.write(requests);
      }
      let peak = rss(pid);
      for (let i = 0; i < 30; i++) {
        await sleep(100);
        peak = Math.max(peak, rss(pid));
      }
      held.push(await bufferedBytes());
      for (const c of conns) c.socket.destroy();
      await Promise.all(conns.map((c) => c.closed));
      // The server notices the closes in its own time (later on a busy machine); what it kept
      // for a closed connection would never go.
      afterClose.push(await eventually('the server to release the closed connections\' buffers', bufferedBytes, (b) => b === 0, 10_000, 50).catch(bufferedBytes));
      return peak;
    };
    const held: number[] = [];
    const afterClose: number[] = [];
    const peaks: number[] = [];
    for (let w = 0; w < 4; w++) peaks.push(await wave());
    const mib = (n: number) => `${(n / MiB).toFixed(1)} MiB`;
    const seen = `RSS ${mib(before)} before, peaks ${peaks.map(mib).join(', ')}; held ${held.map(mib).join(', ')}, after close ${afterClose.map(mib).join(', ')}`;
    // What the server holds for the 16 clients (its own count, svrkit_server_buffered_bytes): the
    // caps, each passed by at most one reply, and the few requests parked when it stopped reading.
    for (const h of held) expect(h, seen).toBeLessThanOrEqual(16 * 9 * MiB);
    // And nothing once they closed.
    for (const a of afterClose) expect(a, seen).toBe(0);
    // The process: the probe's 16 connections took an unbounded server to 844 MiB. Bounded: the
    // caps plus allocator overhead and the server's working memory. Later waves may also find the
    // last wave's buffers not yet collected (V8 frees them at its next GC), but memory kept for
    // closed connections would add up wave after wave. The peak is sampled RSS, garbage included:
    // on a 2-core machine it rose by 245-471 MiB in 24 waves of 1f97d1b and of the change after it,
    // and by 430 once under a full parallel test run, so the bound is three times the caps.
    for (const peak of peaks) expect(peak - before, seen).toBeLessThan(3 * 16 * 8 * MiB + 128 * MiB);
    console.log(`16 clients that do not read, FastReject ${fastReject}: ${seen}`);
    await stillServes(server.address);
  }, 90_000);
});

describe('slow senders and idle connections', () => {
  let server: SvrkitProcess;
  beforeAll(async () => {
    server = await startSvrkit(['run', GREETER, '--port', '0', '--frame-timeout-ms', '1000', '--idle-timeout-ms', '2000']);
  });
  afterAll(async () => {
    await server.stop('SIGKILL').catch(() => undefined);
  });

  it('closes slowloris connections once a frame takes longer than the frame timeout, with a GOAWAY saying why', async () => {
    const conns = await Promise.all(Array.from({ length: 50 }, () => rawConnection(server.address)));
    const frame = rawFrame(FrameKind.REQUEST, 1, encodeRequestHeader({ m: 'helloworld.Greeter/SayHello' }), new Uint8Array(64));
    let open = true;
    const dripping = (async () => {
      for (let i = 0; open && i < frame.length - 1; i++) {
        for (const c of conns) if (!c.socket.destroyed) c.socket.write(frame.subarray(i, i + 1));
        await sleep(300);
      }
    })();
    const closedAll = Promise.all(conns.map((c) => c.closed));
    const result = await Promise.race([closedAll.then(() => 'closed'), sleep(8000).then(() => 'open')]);
    open = false;
    await dripping;
    expect(result).toBe('closed');
    for (const c of conns) expect(goawayReason(c.frames)).toBe('FRAME_TIMEOUT');
    await stillServes(server.address);
  }, 30_000);

  it('closes a connection with no call and no frame after the idle timeout; PINGs keep one open', async () => {
    const idle = await rawConnection(server.address);
    const pinging = await rawConnection(server.address);
    let ping = true;
    const pinger = (async () => {
      for (let id = 1; ping; id++) {
        pinging.socket.write(rawFrame(FrameKind.PING, id, new Uint8Array(0), new Uint8Array(0)));
        await sleep(500);
      }
    })();
    const result = await Promise.race([idle.closed.then(() => 'closed'), sleep(6000).then(() => 'open')]);
    expect(result).toBe('closed');
    expect(goawayReason(idle.frames)).toBe('CONNECTION_IDLE');
    await sleep(1500); // past the idle timeout for the pinging one too
    expect(pinging.socket.destroyed).toBe(false);
    expect(pinging.frames.some((f) => f.kind === FrameKind.PONG)).toBe(true);
    ping = false;
    await pinger;
    pinging.socket.destroy();
  }, 30_000);
});

describe('the server-wide buffer budget', () => {
  let server: SvrkitProcess;
  beforeAll(async () => {
    server = await startSvrkit(['run', GREETER, '--port', '0', '--buffer-budget-mb', '32']);
  });
  afterAll(async () => {
    await server.stop('SIGKILL').catch(() => undefined);
  });

  it('refuses large requests that do not fit before buffering them, unprocessed; memory stays within the budget', async () => {
    const pid = server.process.pid!;
    const before = rss(pid);
    // 30 connections each start a 15 MiB request and hold back its last byte (450 MiB if buffered).
    const size = 15 * MiB;
    const header = encodeRequestHeader({ m: 'helloworld.Greeter/SayHello' });
    const conns = await Promise.all(Array.from({ length: 30 }, () => rawConnection(server.address)));
    const frame = rawFrame(FrameKind.REQUEST, 7, header, Buffer.alloc(size - 13 - header.length));
    for (const c of conns) c.socket.write(frame.subarray(0, frame.length - 1));
    let peak = before;
    for (let i = 0; i < 40; i++) {
      await sleep(100);
      peak = Math.max(peak, rss(pid));
    }
    expect(peak - before, `RSS grew from ${(before / MiB).toFixed(0)} to ${(peak / MiB).toFixed(0)} MiB`).toBeLessThan(32 * MiB + 64 * MiB);
    // At most two fit the 32 MiB budget; every other one was refused when it began, unprocessed.
    const refusals = conns.flatMap((c) => c.frames.filter((f) => f.kind === FrameKind.RESPONSE && f.callId === 7).map((f) => decodeStatusHeader(f.header)));
    expect(refusals.length).toBeGreaterThanOrEqual(28);
    for (const r of refusals) {
      expect(r.s).toBe(Status.RESOURCE_EXHAUSTED);
      expect(r.r).toBe('OVERLOADED_BUFFERS');
      expect(r.np).toBe(true);
    }
    await stillServes(server.address);
    for (const c of conns) c.socket.destroy();
  }, 30_000);

  it('holds large frames of every other kind to the budget too: a stream message fails its call, anything else closes its connection', async () => {
    const pid = server.process.pid!;
    const before = rss(pid);
    const size = 15 * MiB;
    for (const kind of [FrameKind.PING, 0x77]) {
      const conns = await Promise.all(Array.from({ length: 10 }, () => rawConnection(server.address)));
      const frame = rawFrame(kind, 9, new Uint8Array(0), Buffer.alloc(size - 13));
      for (const c of conns) c.socket.write(frame.subarray(0, frame.length - 1));
      // Those that do not fit are closed with FRAME_TOO_LARGE; at most two fit 32 MiB.
      await sleep(2000);
      const closed = conns.filter((c) => goawayReason(c.frames) === 'FRAME_TOO_LARGE');
      expect(closed.length, `kind ${kind}`).toBeGreaterThanOrEqual(8);
      for (const c of conns) c.socket.destroy();
    }
    expect(rss(pid) - before).toBeLessThan(32 * MiB + 64 * MiB);
    await stillServes(server.address);
  }, 30_000);
});

describe('calls held back for a client that stopped reading', () => {
  it('start, in order, once it reads again; a call sent after that is not held behind long calls in flight', async () => {
    const slow = new Set<string>();
    class Greeter extends GreeterService {
      override async sayHello(req: { name: string }): Promise<{ message: string }> {
        if (req.name === 'slow') {
          slow.add('started');
          await sleep(3000);
          return { message: 'slow' };
        }
        if (req.name === 'big') return { message: 'x'.repeat(300_000) };
        return { message: 'fast' };
      }
    }
    const s = new Server({ builtinServices: false });
    s.addService(new Greeter());
    await s.listen(0);
    const { socket, frames } = await rawConnection(s.address);
    const header = encodeRequestHeader({ m: 'helloworld.Greeter/SayHello' });
    const req = (id: number, name: string) => rawFrame(FrameKind.REQUEST, id, header, HelloRequest.encode({ name }).finish());
    try {
      for (let id = 1; id <= 20; id++) socket.write(req(id, 'slow'));
      await sleep(100);
      socket.pause();
      const bigs: Buffer[] = [];
      for (let id = 100; id < 300; id++) bigs.push(req(id, 'big')); // 60 MB of replies, far over the 8 MiB cap
      socket.write(Buffer.concat(bigs));
      await sleep(500);
      socket.resume();
      const responses = () => frames.filter((f) => f.kind === FrameKind.RESPONSE).map((f) => f.callId);
      for (let i = 0; i < 100 && responses().filter((id) => id >= 100).length < 200; i++) await sleep(50);
      const bigsDone = responses().filter((id) => id >= 100);
      expect(bigsDone).toEqual(Array.from({ length: 200 }, (_, i) => 100 + i)); // every one, in order
      // The slow calls still run; a new call is answered before them.
      socket.write(req(500, 'fast'));
      for (let i = 0; i < 100 && !responses().includes(500); i++) await sleep(20);
      expect(responses().includes(500)).toBe(true);
      expect(responses().filter((id) => id <= 20)).toEqual([]);
    } finally {
      socket.destroy();
      await s.close({ graceMs: 100 });
    }
  }, 30_000);

  it('a client over its cap that takes none of its replies for the frame timeout is disconnected', async () => {
    class Greeter extends GreeterService {
      override async sayHello(): Promise<{ message: string }> {
        return { message: 'x'.repeat(300_000) };
      }
    }
    const s = new Server({ builtinServices: false, frameTimeoutMs: 1000 });
    s.addService(new Greeter());
    await s.listen(0);
    const { socket, frames, closed } = await rawConnection(s.address);
    try {
      socket.pause();
      const header = encodeRequestHeader({ m: 'helloworld.Greeter/SayHello' });
      const reqs: Buffer[] = [];
      for (let id = 1; id <= 200; id++) reqs.push(rawFrame(FrameKind.REQUEST, id, header, HelloRequest.encode({ name: 'n' }).finish()));
      socket.write(Buffer.concat(reqs));
      // A paused socket does not see the close: read again after the timeout has passed. The
      // connection then ends after what the kernel already held, short of the 200 replies.
      await sleep(4000);
      socket.resume();
      const result = await Promise.race([closed.then(() => 'closed'), sleep(8000).then(() => 'open')]);
      expect(result).toBe('closed');
      expect(frames.filter((f) => f.kind === FrameKind.RESPONSE).length).toBeLessThan(200);
    } finally {
      socket.destroy();
      await s.close({ graceMs: 100 });
    }
  }, 30_000);
});
