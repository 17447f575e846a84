import { connect, createServer, type Server as NetServer, type Socket } from 'node:net';
import { once } from 'node:events';
import { pack } from 'msgpackr';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Server } from '../framework/index.js';
import { Connection } from '../framework/transport/connection.js';
import { FrameDecoder, FrameKind } from '../framework/wire/frame.js';
import { EchoRequest } from './.tmp/gen/probe/probe.js';
import { Probe } from './support/probe.js';
import { rawFrame } from './support/raw-frame.js';

/** A connected pair of loopback sockets. */
async function socketPair(): Promise<{ a: Socket; b: Socket; close: () => void }> {
  const srv: NetServer = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const accepted = once(srv, 'connection') as Promise<[Socket]>;
  const a = connect((srv.address() as { port: number }).port, '127.0.0.1');
  await once(a, 'connect');
  const [b] = await accepted;
  return {
    a,
    b,
    close: () => {
      a.destroy();
      b.destroy();
      srv.close();
    },
  };
}

describe('Connection peer', () => {
  it('is the address of the socket when read while it is open (later reads too), and unknown:0 when first read after it closed', async () => {
    const noEvents = { onFrame: () => {}, onOversized: () => {}, onClose: () => {} };
    const open = await socketPair();
    const early = new Connection(open.b, { maxFrameBytes: 1 << 20, pauseReadsWhileBlocked: false }, noEvents);
    const late = await socketPair();
    const closed = new Connection(late.b, { maxFrameBytes: 1 << 20, pauseReadsWhileBlocked: false }, noEvents);
    const address = `127.0.0.1:${open.a.localPort}`;
    try {
      expect(early.peer).toBe(address);
      open.close();
      late.close();
      await once(open.b, 'close');
      if (!late.b.destroyed) await once(late.b, 'close');
      expect(early.peer).toBe(address);
      expect(closed.peer).toBe('unknown:0');
    } finally {
      open.close();
      late.close();
    }
  });
});

describe('Connection write coalescing', () => {
  it('sends every frame queued in one event-loop turn with a single socket write', async () => {
    const { a, b, close } = await socketPair();
    try {
      const conn = new Connection(a, { maxFrameBytes: 1 << 20, pauseReadsWhileBlocked: false }, { onFrame: () => {}, onOversized: () => {}, onClose: () => {} });
      const writes: number[] = [];
      const original = a.write.bind(a);
      a.write = ((chunk: Buffer, ...rest: never[]) => {
        writes.push(chunk.length);
        return original(chunk, ...rest);
      }) as typeof a.write;
      const received: number[] = [];
      const decoder = new FrameDecoder(1 << 20, (_kind, callId) => received.push(callId));
      b.on('data', (d: Buffer) => decoder.push(d));
      for (let i = 1; i <= 500; i++) conn.send(FrameKind.PING, i, undefined, Buffer.alloc(20));
      expect(writes).toEqual([]); // nothing written synchronously
      await new Promise((r) => setImmediate(r));
      expect(writes).toEqual([500 * (13 + 20)]);
      for (let i = 501; i <= 510; i++) conn.send(FrameKind.PING, i);
      await new Promise((r) => setImmediate(r));
      expect(writes).toHaveLength(2);
      while (received.length < 510) await new Promise((r) => setTimeout(r, 5));
      expect(received).toEqual(Array.from({ length: 510 }, (_, i) => i + 1));
    } finally {
      close();
    }
  });
});

describe('back-pressure', () => {
  const probe = new Probe();
  let server: Server;
  beforeAll(async () => {
    server = new Server().addService(probe);
    await server.listen(0);
  });
  afterAll(async () => {
    await server.close({ graceMs: 100 });
  });

  it('a server stops reading from a client that does not read its replies, and resumes when it does', async () => {
    const { port } = server;
    const peer = connect(port, '127.0.0.1');
    await once(peer, 'connect');
    peer.pause(); // read nothing
    const header = pack({ m: 'probe.Probe/Echo' });
    const total = 400;
    const replyBytes = 256 * 1024; // 400 x 256 KiB = 100 MiB of replies, far beyond socket buffers
    let written = 0;
    const writeAll = async (): Promise<void> => {
      for (let id = 1; id <= total; id++) {
        const body = EchoRequest.encode(EchoRequest.fromPartial({ text: `bp${id}`, replyBytes })).finish();
        const f = rawFrame(FrameKind.REQUEST, id, header, body);
        written++;
        if (!peer.write(f)) await once(peer, 'drain');
      }
    };
    const writing = writeAll();
    const served = () => [...probe.endings.keys()].filter((k) => k.startsWith('bp')).length;
    // Let the server work until it is stuck on its own writes.
    let last = -1;
    for (let stable = 0; stable < 5; ) {
      await new Promise((r) => setTimeout(r, 50));
      const now = served();
      stable = now === last ? stable + 1 : 0;
      last = now;
    }
    // Stuck: it has answered only a fraction of the calls, because it stopped reading requests
    // while its replies could not be written (it did not buffer 100 MiB of replies).
    expect(served()).toBeLessThan(total / 2);
    expect(written).toBeLessThan(total + 1);
    // Now read: everything completes.
    let answered = 0;
    const decoder = new FrameDecoder(1 << 24, (kind) => {
      if (kind === FrameKind.RESPONSE) answered++;
    });
    peer.on('data', (d: Buffer) => decoder.push(d));
    peer.resume();
    await writing;
    while (answered < total) await new Promise((r) => setTimeout(r, 10));
    expect(answered).toBe(total);
    expect(served()).toBe(total);
    peer.destroy();
  });
});
