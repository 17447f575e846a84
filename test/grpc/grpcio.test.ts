/**
 * Interop with a second gRPC implementation: gRPC's C core, through Python's grpcio (Debian's
 * python3-grpcio), which shares no code with node:http2 or grpc-js. test/support/grpcio-peer.py
 * reads the message types from a svrkit server's gRPC reflection, as grpcurl does, then:
 * - as a client, calls the svrkit server on both ports: reflection v1 and v1alpha, unary with
 *   metadata both ways and a deadline, an error status with trailers, a deadline that passes,
 *   all three kinds of stream, and grpc.health.v1;
 * - as a server, is called by svrkit's generated clients over `grpc://`.
 * Skipped, saying why, where no Python has grpcio (CI installs python3-grpcio).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, RpcError, Server, Status } from '../../index.js';
import { ProbeClient } from '../.tmp/gen/probe/probe.js';
import { StreamsClient } from '../.tmp/gen/streams/streams.js';
import { Probe } from '../support/probe.js';
import { Streams } from '../support/streams-service.js';
import { expectUploadAndEcho } from '../support/streams-upload-echo.js';
import { rpcFailure } from '../support/rpc-failure.js';

const PEER = 'test/support/grpcio-peer.py';

/** A Python that can `import grpc`: Debian's first (a pyenv shim on PATH may lack it). */
function pythonWithGrpc(): string | undefined {
  for (const py of ['/usr/bin/python3', 'python3']) {
    const r = spawnSync(py, ['-c', 'import grpc, google.protobuf'], { stdio: 'ignore' });
    if (r.status === 0) return py;
  }
  return undefined;
}

const python = pythonWithGrpc();

/** Waits for `child` to exit, killing it (SIGKILL) if it has not within `ms`. */
async function exitWithin(child: ChildProcess, ms: number): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  const timer = setTimeout(() => child.kill('SIGKILL'), ms);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(timer);
  return code;
}

/** Runs the peer to completion (killed after 20 s): its JSON output. */
async function runPeer(args: string[]): Promise<Record<string, any>> {
  const child = spawn(python!, [PEER, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const code = await exitWithin(child, 20_000);
  if (code !== 0) throw new Error(`grpcio peer exited with ${code}: ${err}`);
  return JSON.parse(out) as Record<string, any>;
}

describe.skipIf(python === undefined)(
  python === undefined ? 'grpcio (skipped: no Python with grpcio; apt-get install python3-grpcio)' : 'gRPC C core (Python grpcio) and svrkit',
  () => {
    let server: Server;
    let peer: ChildProcess | undefined;
    let peerAddress = '';
    const channels: Channel[] = [];

    beforeAll(async () => {
      server = new Server({ grpcPort: 0 });
      server.addService(new Probe()).addService(new Streams());
      await server.listen(0, '127.0.0.1');
      // The grpcio server takes its descriptors from this svrkit server's reflection.
      peer = spawn(python!, [PEER, 'server', server.address], { stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      peer.stderr!.on('data', (d: Buffer) => (err += d.toString()));
      peerAddress = await new Promise<string>((resolve, reject) => {
        peer!.stdout!.on('data', (d: Buffer) => {
          out += d.toString();
          const m = /listening (\S+)/.exec(out);
          if (m !== null) resolve(m[1]!);
        });
        peer!.once('exit', (code) => reject(new Error(`grpcio server exited with ${code}: ${err}`)));
      });
    });

    afterAll(async () => {
      for (const ch of channels) ch.close();
      if (peer !== undefined) {
        // Closing its stdin stops it; it is killed if it has not exited 5 s later.
        peer.stdin!.end();
        await exitWithin(peer, 5000);
      }
      await server.close({ graceMs: 100 });
    });

    it.each([['the server port'], ['the gRPC-only port']])('a grpcio client on %s: reflection, unary, errors, deadlines, streams and health', async (which) => {
      const address = which === 'the server port' ? server.address : server.grpcAddress!;
      const r = await runPeer(['client', address]);
      const services = ['grpc.health.v1.Health', 'grpc.reflection.v1.ServerReflection', 'grpc.reflection.v1alpha.ServerReflection', 'probe.Probe', 'streams.v1.Streams', 'svrkit.Health', 'svrkit.Reflection'];
      expect(r.services_v1).toEqual(services);
      expect(r.services_v1alpha).toEqual(services);
      // Metadata both ways (a -bin value arrives as its base64 text), and the deadline.
      expect(r.unary).toMatchObject({ text: 'from grpcio', method: 'probe.Probe/Echo', metadata: { 'x-user': 'grace', 'trace-bin': Buffer.from([0, 1, 0xfa]).toString('base64') } });
      expect(Number(r.unary.deadline_left_ms)).toBeGreaterThan(4000);
      // The C core rounds a grpc-timeout up to a few significant digits (so that HPACK can reuse it).
      expect(Number(r.unary.deadline_left_ms)).toBeLessThanOrEqual(5100);
      expect(r.unary_headers['x-reply']).toBe('yes');
      expect(r.error).toMatchObject({ code: 'NOT_FOUND', details: 'no such user: bob 100%', trailers: { 'x-failed': 'yes' } });
      expect(r.deadline.code).toBe('DEADLINE_EXCEEDED');
      expect(r.count).toEqual(Array.from({ length: 500 }, (_, i) => i));
      expect(r.count_trailers['x-t']).toBe('2');
      expect(r.upload).toMatchObject({ bytes: '200000', chunks: 200 });
      expect(r.bidi).toEqual(Array.from({ length: 100 }, (_, i) => i));
      expect(r.health).toBe(1); // SERVING
      expect(r.health_unknown).toBe('NOT_FOUND');
    });

    it('svrkit clients on a grpcio server (grpc://): unary with metadata and a deadline, an error status, a deadline that passes', async () => {
      const ch = new Channel(`grpc://${peerAddress}`, { retryPolicy: false });
      channels.push(ch);
      const probe = new ProbeClient(ch);
      const reply = await probe.echo({ text: 'hi' }, { metadata: { 'x-user': 'ada' }, timeoutMs: 5000 });
      expect(reply.text).toBe('grpcio: hi');
      expect(reply.metadata['x-user']).toBe('ada');
      expect(Number(reply.deadlineLeftMs)).toBeGreaterThan(4000);
      expect(Number(reply.deadlineLeftMs)).toBeLessThanOrEqual(5000);
      const err = await rpcFailure(probe.echo({ text: 'f', fail: 'no such user: bob 100%' }));
      expect(err).toMatchObject({ code: Status.NOT_FOUND, message: 'no such user: bob 100%' });
      expect((err as RpcError).metadata['x-failed']).toBe('yes');
      const slow = await rpcFailure(probe.echo({ text: 'slow', delayMs: 3000 }, { timeoutMs: 200 }));
      expect(slow.code).toBe(Status.DEADLINE_EXCEEDED);
    });

    it('svrkit clients on a grpcio server (grpc://): server-streaming, client-streaming and bidi', async () => {
      const ch = new Channel(`grpc://${peerAddress}`);
      channels.push(ch);
      const streams = new StreamsClient(ch);
      const items: number[] = [];
      for await (const item of streams.count({ count: 2000n, payloadBytes: 100 })) items.push(Number(item.seq));
      expect(items).toEqual(Array.from({ length: 2000 }, (_, i) => i));

      await expectUploadAndEcho(streams);
    });
  },
);
