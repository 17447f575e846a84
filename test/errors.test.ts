/**
 * The error catalogue (framework/errors.ts): every entry is well formed, creating one gives the
 * RpcError it promises, reasons travel on the wire, and real failures through the public API
 * carry the expected reason. Also `toRpcError`'s `cause`.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Channel,
  ConfigError,
  configErrors,
  defineErrors,
  errors,
  isErrorReason,
  RpcError,
  Server,
  Status,
  toRpcError,
  type CallContext,
  type ConfigErrorEntry,
  type RpcErrorEntry,
} from '../framework/index.js';
import { decodeStatusHeader, encodeStatusHeader, HeaderError } from '../framework/wire/header.js';
import { CORE_OUTCOMES, kvErrors } from '../services/paxoskv/errors.js';
import { ProbeDefinition, type EchoReply } from './.tmp/gen/probe/probe.js';
import { StreamsDefinition } from './.tmp/gen/streams/streams.js';
import { Streams } from './support/streams-service.js';

/** One value that works as any template parameter: a string, a number in text, a list (`join`), an error-like value. */
const ANY_ARG = Object.freeze(['x']) as unknown;

/** Rejection of `p`, which must be an RpcError. */
async function failure(p: Promise<unknown> | AsyncIterable<unknown>): Promise<RpcError> {
  try {
    if (Symbol.asyncIterator in Object(p)) {
      for await (const _ of p as AsyncIterable<unknown>) {
        // drain
      }
    } else {
      await p;
    }
  } catch (err) {
    expect(err).toBeInstanceOf(RpcError);
    return err as RpcError;
  }
  throw new Error('expected the call to fail, it succeeded');
}

describe('the catalogue', () => {
  // Typed loosely (any parameters), to call every template with the same argument.
  const rpcEntries = Object.entries(errors) as Array<[string, RpcErrorEntry]>;
  const configEntries = Object.entries(configErrors) as Array<[string, ConfigErrorEntry]>;

  it('names every entry by its key, UPPER_SNAKE_CASE, with a real status and a message', () => {
    expect(rpcEntries.length).toBeGreaterThan(40);
    for (const [name, entry] of rpcEntries) {
      expect(entry.reason, name).toBe(name);
      expect(isErrorReason(name), name).toBe(true);
      expect(Status[entry.status], name).toBeDefined();
      expect(entry.status, name).not.toBe(Status.OK);
      expect(typeof entry.notProcessed, name).toBe('boolean');
      const args = new Array(entry.message.length).fill(ANY_ARG);
      expect(entry.message(...args).length, name).toBeGreaterThan(0);
    }
    for (const [name, entry] of configEntries) {
      expect(entry.reason, name).toBe(name);
      expect(isErrorReason(name), name).toBe(true);
      expect(entry.message(...new Array(entry.message.length).fill(ANY_ARG)).length, name).toBeGreaterThan(0);
    }
  });

  it('has unique names, across the framework catalogues and the PaxosKV one (reasons carry no domain)', () => {
    const names = [...Object.keys(errors), ...Object.keys(configErrors), ...Object.keys(kvErrors)];
    expect(new Set(names).size).toBe(names.length);
  });

  it('creates an RpcError with the entry status, reason, flag and message', () => {
    for (const [name, entry] of rpcEntries) {
      const args = new Array(entry.message.length).fill(ANY_ARG);
      const err = entry(...args);
      expect(err, name).toBeInstanceOf(RpcError);
      expect(err.code, name).toBe(entry.status);
      expect(err.reason, name).toBe(name);
      expect(err.notProcessed, name).toBe(entry.notProcessed);
      expect(err.message, name).toBe(entry.message(...args));
      expect(err.metadata, name).toEqual({});
      expect('cause' in err, name).toBe(false);
    }
    expect(errors.CHANNEL_CLOSED('10.0.0.1:7000')).toMatchObject({
      code: Status.UNAVAILABLE,
      message: 'channel to 10.0.0.1:7000 is closed',
      reason: 'CHANNEL_CLOSED',
      notProcessed: true,
    });
    expect(errors.UNKNOWN_METHOD('a.B/C')).toMatchObject({ code: Status.UNIMPLEMENTED, reason: 'UNKNOWN_METHOD', notProcessed: false });
    expect(errors.REQUEST_TOO_LARGE(10).message).toBe('request of 10 bytes exceeds the maximum frame size');
    expect(errors.REQUEST_TOO_LARGE(10, 8).message).toBe('request of 10 bytes exceeds the maximum frame size 8');
  });

  it('adds metadata and a cause with `with`', () => {
    const cause = new Error('boom');
    const err = errors.REQUEST_NOT_ENCODABLE.with({ cause, metadata: { k: 'v' } }, 'pkg.Req', cause);
    expect(err).toMatchObject({ code: Status.INVALID_ARGUMENT, reason: 'REQUEST_NOT_ENCODABLE', message: 'cannot encode pkg.Req: boom', metadata: { k: 'v' } });
    expect(err.cause).toBe(cause);
  });

  it('creates ConfigErrors: plain Errors with a reason', () => {
    const err = configErrors.INVALID_OPTION('retryPolicy.maxAttempts', 'an integer 1..10', 11);
    expect(err).toBeInstanceOf(ConfigError);
    expect(err).toBeInstanceOf(Error);
    expect(err).not.toBeInstanceOf(RpcError);
    expect(err.reason).toBe('INVALID_OPTION');
    expect(err.message).toBe('retryPolicy.maxAttempts must be an integer 1..10, got 11');
    // What construction throws.
    expect(() => new Channel('127.0.0.1:1', { retryPolicy: { maxAttempts: 0 } })).toThrow(
      expect.objectContaining({ reason: 'INVALID_OPTION', message: 'retryPolicy.maxAttempts must be an integer 1..10, got 0' }),
    );
    expect(() => new Channel('127.0.0.1:1', { balancer: 'nope' as never })).toThrow(expect.objectContaining({ reason: 'UNKNOWN_BALANCER' }));
    expect(() => new Channel('1x://host')).toThrow(expect.objectContaining({ reason: 'MALFORMED_TARGET' }));
    expect(() => new Server({ overload: { maxInflight: 0 } })).toThrow(expect.objectContaining({ reason: 'INVALID_OPTION' }));
    expect(() => new Server().address).toThrow(expect.objectContaining({ reason: 'NOT_LISTENING' }));
  });

  it('refuses names and reasons that are not UPPER_SNAKE_CASE', () => {
    expect(() => defineErrors({ notSnake: { status: Status.INTERNAL, message: () => 'x' } })).toThrow(TypeError);
    expect(() => new RpcError(Status.INTERNAL, 'x', {}, { reason: 'lower' })).toThrow(TypeError);
    expect(() => new RpcError(Status.INTERNAL, 'x', {}, { reason: 'A'.repeat(64) })).toThrow(TypeError);
    expect(new RpcError(Status.INTERNAL, 'x', {}, { reason: 'A_B2' }).reason).toBe('A_B2');
    expect(new RpcError(Status.INTERNAL, 'x').reason).toBeUndefined();
  });

  it('types the template parameters', () => {
    // @ts-expect-error the target is a string
    void (() => errors.CHANNEL_CLOSED(1));
    // @ts-expect-error a missing parameter
    void (() => errors.DEADLINE_BEFORE_CALL());
    // @ts-expect-error no such entry
    void (() => errors.NO_SUCH_ERROR);
    const reason: 'UNKNOWN_METHOD' = errors.UNKNOWN_METHOD.reason;
    expect(reason).toBe('UNKNOWN_METHOD');
  });

  it("is what the README's table lists: every reason under its status, `*` for not processed", () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const listed = new Map<string, string>();
    for (const row of readme.matchAll(/^\| `([A-Z_]+)` \| (`[A-Z_]+`\*?(?:, `[A-Z_]+`\*?)*) \|$/gm)) {
      for (const item of row[2]!.split(', ')) listed.set(item, row[1]!);
    }
    const expected = new Map(rpcEntries.map(([name, e]) => [`\`${name}\`${e.notProcessed ? '*' : ''}`, Status[e.status]!]));
    expect(Object.fromEntries(listed)).toEqual(Object.fromEntries(expected));
  });

  it('maps every PaxosKV core failure status to an entry of that status', () => {
    for (const [status, entry] of Object.entries(CORE_OUTCOMES)) {
      expect(Status[entry.status]).toBe(status);
      expect(entry('the core says so')).toMatchObject({ message: 'the core says so', reason: entry.reason });
    }
  });
});

describe('toRpcError', () => {
  it('keeps what it wraps as the standard cause, and gives it no reason', () => {
    const boom = new TypeError('boom');
    const e = toRpcError(boom);
    expect(e).toMatchObject({ code: Status.INTERNAL, message: 'boom', reason: undefined });
    expect(e.cause).toBe(boom);
    const s = toRpcError('just a string', Status.UNKNOWN);
    expect(s).toMatchObject({ code: Status.UNKNOWN, message: 'just a string' });
    expect(s.cause).toBe('just a string');
    const abort = new DOMException('stop', 'AbortError');
    const a = toRpcError(abort);
    expect(a).toMatchObject({ code: Status.CANCELLED, message: 'stop' });
    expect(a.cause).toBe(abort);
  });

  it('passes an RpcError through unchanged (no cause added)', () => {
    const err = errors.CHANNEL_CLOSED('t');
    expect(toRpcError(err)).toBe(err);
    expect('cause' in err).toBe(false);
  });
});

describe('the reason on the wire (r in the status header)', () => {
  it('round-trips, and is left out when there is none', () => {
    const bytes = encodeStatusHeader(Status.UNIMPLEMENTED, "unknown method 'a.B/C'", undefined, false, undefined, 'UNKNOWN_METHOD');
    expect(decodeStatusHeader(bytes)).toEqual({ s: Status.UNIMPLEMENTED, e: "unknown method 'a.B/C'", r: 'UNKNOWN_METHOD' });
    expect(decodeStatusHeader(encodeStatusHeader(Status.INTERNAL, 'x'))).toEqual({ s: Status.INTERNAL, e: 'x' });
  });

  it('rejects a reason that is not UPPER_SNAKE_CASE', () => {
    for (const bad of ['lower_case', 'X', 42, '', 'A'.repeat(64)]) {
      const bytes = encodeStatusHeader(Status.INTERNAL, 'x', undefined, false, undefined, bad as string);
      expect(() => decodeStatusHeader(bytes)).toThrow(HeaderError);
    }
  });
});

describe('reasons of real failures', () => {
  /** A service's own catalogue, as services/paxoskv/errors.ts does. */
  const appErrors = defineErrors({
    OUT_OF_STOCK: { status: Status.FAILED_PRECONDITION, message: (item: string) => `${item} is out of stock` },
  });
  let server: Server;
  let channel: Channel;

  beforeAll(async () => {
    server = new Server({ overload: false, logger: { error: () => {} } });
    server.addService(ProbeDefinition, {
      async echo(request: { text: string }, call: CallContext): Promise<Partial<EchoReply>> {
        if (request.text === 'catalogued') throw appErrors.OUT_OF_STOCK('tea');
        if (request.text === 'plain-rpc') throw new RpcError(Status.NOT_FOUND, 'no tea');
        if (request.text === 'plain') throw new Error('kaput');
        if (request.text === 'slow') await new Promise((r) => setTimeout(r, 5_000).unref());
        return { text: request.text, traceId: call.traceId };
      },
    });
    server.addService(new Streams());
    await server.listen(0);
    channel = new Channel(server.address, { retryPolicy: false });
  });

  afterAll(async () => {
    channel.close();
    await server.close({ graceMs: 0 });
  });

  it('an unknown method: UNIMPLEMENTED, reason UNKNOWN_METHOD (raised by the server, carried on the wire)', async () => {
    const nope = { ...ProbeDefinition.methods.echo, name: 'Nope', localName: 'nope', path: 'probe.Probe/Nope' };
    const err = await failure(channel.unary(nope, { text: 'x' }));
    expect(err).toMatchObject({ code: Status.UNIMPLEMENTED, reason: 'UNKNOWN_METHOD', message: "unknown method 'probe.Probe/Nope'" });
  });

  it('a streaming method called as unary: UNIMPLEMENTED, reason METHOD_KIND_MISMATCH', async () => {
    const asUnary = { ...StreamsDefinition.methods.count, kind: 'unary' as const };
    const err = await failure(channel.unary(asUnary, { count: 1n }));
    expect(err).toMatchObject({ code: Status.UNIMPLEMENTED, reason: 'METHOD_KIND_MISMATCH' });
    expect(err.message).toBe("method 'streams.v1.Streams/Count' is server-streaming, but was called as unary");
  });

  it('a unary method opened as a stream: INVALID_ARGUMENT, reason STREAM_KIND_MISMATCH (local)', async () => {
    const err = await failure(channel.serverStream(ProbeDefinition.methods.echo, { text: 'x' }));
    expect(err).toMatchObject({ code: Status.INVALID_ARGUMENT, reason: 'STREAM_KIND_MISMATCH' });
  });

  it('a deadline already past: DEADLINE_EXCEEDED, reason DEADLINE_BEFORE_CALL', async () => {
    const err = await failure(channel.unary(ProbeDefinition.methods.echo, { text: 'x' }, { deadline: Date.now() - 1 }));
    expect(err).toMatchObject({ code: Status.DEADLINE_EXCEEDED, reason: 'DEADLINE_BEFORE_CALL', message: 'deadline exceeded before calling probe.Probe/Echo' });
  });

  it("a caller's abort: CANCELLED, reason CANCELLED_BY_CALLER, the signal's reason as cause", async () => {
    const abort = new AbortController();
    const why = new Error('user left');
    const p = failure(channel.unary(ProbeDefinition.methods.echo, { text: 'slow' }, { signal: abort.signal }));
    abort.abort(why);
    const err = await p;
    expect(err).toMatchObject({ code: Status.CANCELLED, reason: 'CANCELLED_BY_CALLER', message: 'cancelled: user left' });
    expect(err.cause).toBe(why);
  });

  it("a handler's catalogued error keeps its reason across the wire; other handler errors have none", async () => {
    expect(await failure(channel.unary(ProbeDefinition.methods.echo, { text: 'catalogued' }))).toMatchObject({
      code: Status.FAILED_PRECONDITION,
      message: 'tea is out of stock',
      reason: 'OUT_OF_STOCK',
      notProcessed: false,
    });
    expect(await failure(channel.unary(ProbeDefinition.methods.echo, { text: 'plain-rpc' }))).toMatchObject({ code: Status.NOT_FOUND, reason: undefined });
    expect(await failure(channel.unary(ProbeDefinition.methods.echo, { text: 'plain' }))).toMatchObject({ code: Status.INTERNAL, message: 'kaput', reason: undefined });
  });

  it('no server at the address: UNAVAILABLE, not processed, reason NO_CONNECTION', async () => {
    const ch = new Channel('127.0.0.1:1', { retryPolicy: false });
    try {
      const err = await failure(ch.unary(ProbeDefinition.methods.echo, { text: 'x' }, { timeoutMs: 10_000 }));
      expect(err).toMatchObject({ code: Status.UNAVAILABLE, reason: 'NO_CONNECTION', notProcessed: true });
      expect(err.cause).toBeInstanceOf(Error);
    } finally {
      ch.close();
    }
  });

  it('a closed channel: UNAVAILABLE, not processed, reason CHANNEL_CLOSED', async () => {
    const ch = new Channel(server.address);
    ch.close();
    const err = await failure(ch.unary(ProbeDefinition.methods.echo, { text: 'x' }));
    expect(err).toMatchObject({ code: Status.UNAVAILABLE, reason: 'CHANNEL_CLOSED', notProcessed: true, message: `channel to ${server.address} is closed` });
    await expect(ch.waitForReady(100)).rejects.toMatchObject({ reason: 'CHANNEL_CLOSED' });
  });
});
