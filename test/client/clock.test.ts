/**
 * Time is an input: a channel and a server take their wall clock from `options.now`, so tests (and
 * simulations) decide what time it is.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Channel, Server, type CallContext } from '../../framework/index.js';
import { ProbeDefinition } from '../.tmp/gen/probe/probe.js';

const opened: Array<() => unknown> = [];
afterEach(async () => {
  for (const close of opened.splice(0)) await close();
});

/** A Probe whose Echo reports the deadline its call context holds. */
const impl = {
  async echo(_: unknown, call: CallContext) {
    return { text: String(call.deadline), metadata: {}, traceId: '', deadlineLeftMs: 0n, padding: new Uint8Array() };
  },
};

describe('injected clocks', () => {
  it("the server computes a call's deadline on its own clock", async () => {
    const T = 5_000_000;
    const server = new Server({ now: () => T, overload: false });
    server.addService(ProbeDefinition, impl);
    await server.listen(0);
    opened.push(() => server.close({ graceMs: 0 }));
    const ch = new Channel(server.address);
    opened.unshift(() => ch.close());
    const reply = await ch.unary(ProbeDefinition.methods.echo, {}, { timeoutMs: 700 });
    expect(Number(reply.text)).toBe(T + 700);
  });

  it("the channel judges deadlines on its own clock: one long past by the real clock is still ahead", async () => {
    const server = new Server({ overload: false });
    server.addService(ProbeDefinition, impl);
    await server.listen(0);
    opened.push(() => server.close({ graceMs: 0 }));
    const T = 1_000_000; // 1970: any real deadline near T has passed
    const fake = new Channel(server.address, { now: () => T });
    const real = new Channel(server.address);
    opened.unshift(() => fake.close(), () => real.close());
    await expect(fake.unary(ProbeDefinition.methods.echo, {}, { deadline: T + 2000 })).resolves.toBeDefined();
    await expect(real.unary(ProbeDefinition.methods.echo, {}, { deadline: T + 2000 })).rejects.toMatchObject({ codeName: 'DEADLINE_EXCEEDED' });
  });

  it("a call's deadline is read on the channel's clock when its timer wakes", async () => {
    // The server's clock stands still too, so that only the channel's timer can end the call.
    const server = new Server({ overload: false, now: () => 5_000_000 });
    const never = { echo: () => new Promise(() => {}) };
    server.addService(ProbeDefinition, never);
    await server.listen(0);
    opened.push(() => server.close({ graceMs: 0 }));
    let t = 1_000_000;
    const ch = new Channel(server.address, { now: () => t, retryPolicy: false });
    opened.unshift(() => ch.close());
    let settled = false;
    const call = ch.unary(ProbeDefinition.methods.echo, {}, { timeoutMs: 100 });
    call.then(() => (settled = true), () => (settled = true));
    // 300 ms of wall time, no time at all on the channel's clock: the deadline has not passed.
    await new Promise((r) => setTimeout(r, 300));
    expect(settled).toBe(false);
    t += 200; // now it has: the next wake-up ends the call
    await expect(call).rejects.toMatchObject({ codeName: 'DEADLINE_EXCEEDED' });
  });

  it("a handler's timeRemaining() reads the server's clock", async () => {
    const T = 7_000_000;
    const server = new Server({ now: () => T, overload: false });
    server.addService(ProbeDefinition, {
      async echo(_: unknown, call: CallContext) {
        return { text: String(call.timeRemaining()), metadata: {}, traceId: '', deadlineLeftMs: 0n, padding: new Uint8Array() };
      },
    });
    await server.listen(0);
    opened.push(() => server.close({ graceMs: 0 }));
    const ch = new Channel(server.address);
    opened.unshift(() => ch.close());
    expect((await ch.unary(ProbeDefinition.methods.echo, {}, { timeoutMs: 900 })).text).toBe('900');
  });
});
