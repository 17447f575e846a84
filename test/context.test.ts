import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { coroutineLocal, currentCall, RpcError, Server, Status, withoutCall, type CallContext } from '../framework/index.js';
import { Backend } from '../examples/chain/backend.js';
import { Frontend } from '../examples/chain/frontend.js';
import { BackendClient, FrontendClient } from '../examples/chain/gen/chain.js';
import { EchoReply, ProbeClient, ProbeDefinition } from './.tmp/gen/probe/probe.js';
import { Probe } from './support/probe.js';

async function poll<T>(fn: () => Promise<T>, ok: (v: T) => boolean, ms = 3000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (ok(v) || Date.now() > end) return v;
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('the chain example: context across a hop', () => {
  let backendServer: Server;
  let frontendServer: Server;
  let frontendImpl: Frontend;
  let client: FrontendClient;
  let backendClient: BackendClient;

  beforeAll(async () => {
    // One test sends 10,000 calls in a single burst; FastReject would rightly shed part of it
    // (the last calls queue for far more than 20 ms). This suite is about the context, so the
    // servers admit everything; overload control has its own tests (test/overload/).
    backendServer = new Server({ overload: false }).addService(new Backend());
    await backendServer.listen(0);
    frontendImpl = new Frontend(backendServer.address);
    frontendServer = new Server({ overload: false }).addService(frontendImpl);
    await frontendServer.listen(0);
    client = new FrontendClient(frontendServer.address);
    backendClient = new BackendClient(backendServer.address);
  });
  afterAll(async () => {
    client.close();
    backendClient.close();
    frontendImpl.close();
    await frontendServer.close({ graceMs: 100 });
    await backendServer.close({ graceMs: 100 });
  });

  it('keeps each of 10,000 concurrent calls\' coroutine-local private across its downstream await', async () => {
    const n = 10_000;
    const replies = await Promise.all(
      Array.from({ length: n }, (_, i) => client.relay({ user: `user-${i}`, backendDelayMs: i % 5 }, { timeoutMs: 60_000 })),
    );
    let leaks = 0;
    const traceIds = new Set<string>();
    replies.forEach((r, i) => {
      if (r.localAfterCall !== `user-${i}` || r.backend?.user !== `user-${i}`) leaks++;
      expect(r.backend?.traceId).toBe(r.frontend?.traceId);
      traceIds.add(r.frontend!.traceId);
    });
    expect(leaks).toBe(0);
    // Every root call started its own trace.
    expect(traceIds.size).toBe(n);
  });

  it('carries the deadline, trace id and marked metadata to the backend, and nothing else', async () => {
    const reply = await client.relay(
      { user: 'ada' },
      { timeoutMs: 5000, metadata: { 'x-request-id': 'ctx-1', 'x-user': 'ada', 'x-local': 'stays here' }, propagate: ['x-request-id', 'x-user'] },
    );
    const front = reply.frontend!;
    const back = reply.backend!;
    expect(back.traceId).toBe(front.traceId);
    // The backend knows which service called it; the frontend was called from outside any handler.
    expect([front.caller, back.caller]).toEqual(['', 'chain.Frontend']);
    expect(front.metadata).toEqual({ 'x-request-id': 'ctx-1', 'x-user': 'ada', 'x-local': 'stays here' });
    expect(back.metadata).toEqual({ 'x-request-id': 'ctx-1', 'x-user': 'ada' });
    expect(back.deadlineLeftMs).toBeGreaterThan(0n);
    expect(back.deadlineLeftMs).toBeLessThanOrEqual(front.deadlineLeftMs);
    expect(front.deadlineLeftMs).toBeLessThanOrEqual(5000n);
  });

  it('propagates keys named like Object.prototype members as ordinary keys', async () => {
    const reply = await client.relay(
      { user: 'proto' },
      { metadata: { constructor: 'c', toString: 't' }, propagate: ['constructor', 'toString', 'hasOwnProperty'] },
    );
    expect(reply.backend!.metadata).toEqual({ constructor: 'c', toString: 't' });
  });

  it('withoutCall detaches background work from the call: no inherited deadline, trace id or cancellation', async () => {
    // A handler that starts background work (a timer) after its own short call has ended.
    const backgroundResult = new Promise<string>((resolve) => {
      const server = new Server().addService(ProbeDefinition, {
        echo: async (req: { text: string }, call: CallContext) => {
          withoutCall(() =>
            setTimeout(() => {
              const inside = currentCall();
              backendClient
                .outcome({ requestId: 'none' }, { timeoutMs: 5000 })
                .then((r) => resolve(`call=${inside === undefined} outcome=${r.outcome}`), (e: RpcError) => resolve(`failed ${e.codeName}`));
            }, 300),
          );
          return EchoReply.fromPartial({ text: req.text, traceId: call.traceId });
        },
      });
      void server.listen(0).then(async () => {
        const c = new ProbeClient(server.address);
        await c.echo({ text: 'short' }, { timeoutMs: 100 });
        c.close();
      });
    });
    // Without withoutCall the timer would run inside the ended call and fail with DEADLINE_EXCEEDED.
    expect(await backgroundResult).toBe('call=true outcome=unknown');
  });

  it('ends the backend call with DEADLINE_EXCEEDED when the caller\'s deadline passes', async () => {
    const err = await client
      .relay({ user: 'slow', backendDelayMs: 5000 }, { timeoutMs: 300, metadata: { 'x-request-id': 'ctx-deadline' }, propagate: ['x-request-id'] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RpcError);
    expect((err as RpcError).code).toBe(Status.DEADLINE_EXCEEDED);
    const outcome = await poll(() => backendClient.outcome({ requestId: 'ctx-deadline' }), (o) => o.outcome !== 'unknown');
    expect(outcome.outcome).toBe('DEADLINE_EXCEEDED');
  });

  it('cancels the backend call when the client cancels the frontend call', async () => {
    const ac = new AbortController();
    const p = client.relay(
      { user: 'cancel-me', backendDelayMs: 5000 },
      { signal: ac.signal, metadata: { 'x-request-id': 'ctx-cancel' }, propagate: ['x-request-id'] },
    );
    setTimeout(() => ac.abort(), 150);
    const err = await p.catch((e: unknown) => e);
    expect((err as RpcError).code).toBe(Status.CANCELLED);
    const outcome = await poll(() => backendClient.outcome({ requestId: 'ctx-cancel' }), (o) => o.outcome !== 'unknown');
    expect(outcome.outcome).toBe('CANCELLED');
  });
});

describe('coroutine-locals and currentCall inside a handler', () => {
  const seen: Array<{ own: string; branches: string[]; sameName: string | undefined }> = [];
  const local = coroutineLocal<string>('test.local');
  const sameSlot = coroutineLocal<string>('test.local');
  let server: Server;
  let client: ProbeClient;

  class Inspecting extends Probe {
    override async echo(...args: Parameters<Probe['echo']>) {
      const [request] = args;
      local.set(request.text);
      // Concurrent branches of one call share its locals.
      const branches = await Promise.all([1, 2, 3].map(async (d) => {
        await new Promise((r) => setTimeout(r, d));
        return `${local.get()}@${currentCall()!.method}`;
      }));
      seen.push({ own: request.text, branches, sameName: sameSlot.get() });
      return super.echo(...args);
    }
  }

  beforeAll(async () => {
    server = new Server().addService(new Inspecting());
    await server.listen(0);
    client = new ProbeClient(server.address);
  });
  afterAll(async () => {
    client.close();
    await server.close({ graceMs: 100 });
  });

  it('shares a local among the branches of one call and with locals of the same name, and with no other call', async () => {
    await Promise.all(Array.from({ length: 200 }, (_, i) => client.echo({ text: `c${i}` })));
    expect(seen).toHaveLength(200);
    for (const s of seen) {
      expect(s.branches).toEqual([1, 2, 3].map(() => `${s.own}@probe.Probe/Echo`));
      expect(s.sameName).toBe(s.own);
    }
  });
});
