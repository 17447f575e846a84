/**
 * Regressions from the review of FastReject: what a client can and cannot do to a server's
 * admission level, how priorities combine along a chain, and server lifecycle.
 */
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { pack } from 'msgpackr';
import { afterEach, describe, expect, it } from 'vitest';
import { ADMIT_ALL, Channel, Server, Status, type CallContext } from '../../framework/index.js';
import { HealthClient, HealthDefinition } from '../../framework/builtin/gen/svrkit/health.js';
import { FrameKind } from '../../framework/wire/frame.js';
import { EchoRequest, ProbeDefinition, ProbeService, type EchoReply, type EchoRequest as Req } from '../.tmp/gen/probe/probe.js';
import { rawFrame } from '../support/raw-frame.js';

const servers: Server[] = [];
const channels: Channel[] = [];
afterEach(async () => {
  for (const c of channels.splice(0)) c.close();
  await Promise.all(servers.splice(0).map((s) => s.close({ graceMs: 100 })));
});

describe('FastReject and untrusted clocks', () => {
  it("a client whose send-time stamps lie (10 s old) does not lower the level other clients get", async () => {
    const server = new Server({ overload: { windowMs: 100 } });
    server.addService(ProbeDefinition, { echo: async (r: Req) => ({ text: r.text }) as EchoReply });
    servers.push(server);
    await server.listen(0);
    const socket = connect({ host: '127.0.0.1', port: server.port });
    await new Promise<void>((r) => socket.once('connect', () => r()));
    socket.on('data', () => {});
    const body = EchoRequest.encode(EchoRequest.fromPartial({ text: 'x' })).finish();
    // The first call is honest; the later ones claim to have been sent 10 s ago.
    socket.write(rawFrame(FrameKind.REQUEST, 1, pack({ m: ProbeDefinition.methods.echo.path, st: Date.now(), b: 0 }), body));
    for (let i = 0; i < 15; i++) {
      await sleep(30);
      const batch: Buffer[] = [];
      for (let j = 0; j < 10; j++) batch.push(rawFrame(FrameKind.REQUEST, 2 + i * 10 + j, pack({ m: ProbeDefinition.methods.echo.path, st: Date.now() - 10_000, b: 0 }), body));
      socket.write(Buffer.concat(batch));
    }
    await sleep(300);
    socket.destroy();
    expect(server.admissionLevel).toBe(ADMIT_ALL);
  });
});

describe('priorities along a chain', () => {
  it("a priority-0 method called inside a handler keeps priority 0 (the callee's own priority wins when more important)", async () => {
    const backend = new Server();
    servers.push(backend);
    await backend.listen(0);
    const ch = new Channel(backend.address);
    channels.push(ch);
    const seen: number[] = [];
    class Front extends ProbeService {
      override async echo(request: Req, call: CallContext): Promise<EchoReply> {
        seen.push(call.businessPriority);
        const h = await new HealthClient(ch).check({});
        return { text: `${request.text}:${h.status}`, metadata: {}, traceId: '', deadlineLeftMs: 0n, padding: new Uint8Array(), peer: '', method: '' };
      }
    }
    const front = new Server();
    front.addService(new Front());
    servers.push(front);
    await front.listen(0);
    const client = new Channel(front.address);
    channels.push(client);
    // The caller's business priority is 90; the health check inside still counts as priority 0.
    const reply = await client.unary(ProbeDefinition.methods.echo, { text: 'p' }, { priority: 90 });
    expect(seen).toEqual([90]);
    expect(reply.text).toBe('p:1');
    expect(HealthDefinition.methods.check.options?.priority).toBe(0);
  });
});

describe('server lifecycle', () => {
  it('close() while listen() is still binding leaves nothing running', async () => {
    const server = new Server();
    const listening = server.listen(0);
    const closing = server.close({ graceMs: 10 });
    await listening;
    await closing;
    expect(server.admissionLevel).toBe(ADMIT_ALL);
    expect((server as unknown as { windowTimer: unknown }).windowTimer).toBeUndefined();
    const probe = new Channel(server.address, { retryPolicy: false });
    channels.push(probe);
    await expect(probe.unary(HealthDefinition.methods.check, {}, { timeoutMs: 1000 })).rejects.toMatchObject({ code: Status.UNAVAILABLE });
  });
});
