/**
 * The OpenFeature provider (services/config/openfeature.ts) through @openfeature/server-sdk's own
 * client: flags typed from the config's strings, a gray by user decided by the evaluation
 * context's targetingKey, or, inside a handler, by the call's x-user-id; reasons and variants;
 * missing and mistyped flags falling back to the default. The config comes from a cache file
 * (no replica listens), so this needs no cluster.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { OpenFeature } from '@openfeature/server-sdk';
import { afterAll, describe, expect, it } from 'vitest';
import { Channel, ConfigClient, Server, type CallContext } from '../../index.js';
import { GreeterClient, GreeterService, type HelloReply, type HelloRequest } from '../../examples/helloworld/gen/greeter.js';
import { emptyHead, gray, publish } from '../../services/config/model.js';
import { ConfigFlagProvider } from '../../services/config/openfeature.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'svrkit-openfeature-'));
afterAll(async () => {
  await OpenFeature.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('ConfigFlagProvider', () => {
  it('resolves typed flags, grays by the context or the call, and falls back to defaults with error codes', async () => {
    let head = publish(emptyHead('flags'), { set: { 'new-checkout': 'false', limit: '10', theme: 'light', layout: '{"cols":2}', broken: 'maybe' }, delete: [] }, 'test', 1);
    head = gray(head, { set: { 'new-checkout': 'true', limit: '50' }, delete: [] }, [{ kind: 'users', users: ['u-gray'] }], 'g1', 'test', 2);
    const cacheFile = path.join(dir, 'flags.json');
    writeFileSync(cacheFile, JSON.stringify(head));
    const config = new ConfigClient({ target: '127.0.0.1:1', namespace: 'flags', cacheFile, readyTimeoutMs: 20 });
    await OpenFeature.setProviderAndWait(new ConfigFlagProvider(config));
    const flags = OpenFeature.getClient();
    try {
      expect(await flags.getBooleanValue('new-checkout', false)).toBe(false);
      expect(await flags.getBooleanValue('new-checkout', false, { targetingKey: 'u-gray' })).toBe(true);
      expect(await flags.getNumberValue('limit', 1, { targetingKey: 'u-gray' })).toBe(50);
      expect(await flags.getStringValue('theme', 'dark')).toBe('light');
      expect(await flags.getObjectValue('layout', {})).toEqual({ cols: 2 });
      const inGray = await flags.getBooleanDetails('new-checkout', false, { targetingKey: 'u-gray' });
      expect(inGray).toMatchObject({ value: true, reason: 'TARGETING_MATCH', variant: 'gray' });
      expect(await flags.getNumberDetails('limit', 1)).toMatchObject({ value: 10, reason: 'STATIC', variant: 'release-1' });
      expect(await flags.getBooleanDetails('nope', true)).toMatchObject({ value: true, errorCode: 'FLAG_NOT_FOUND' });
      expect(await flags.getBooleanDetails('broken', true)).toMatchObject({ value: true, errorCode: 'TYPE_MISMATCH' });
      expect(await flags.getNumberDetails('theme', 7)).toMatchObject({ value: 7, errorCode: 'TYPE_MISMATCH' });

      // Inside a handler, with no context given: the call's x-user-id decides.
      const server = new Server({ builtinServices: false });
      server.addService(
        new (class extends GreeterService {
          override async sayHello(_req: HelloRequest, _call: CallContext): Promise<HelloReply> {
            return { message: String(await flags.getBooleanValue('new-checkout', false)) };
          }
        })(),
      );
      await server.listen(0);
      const channel = new Channel(server.address);
      try {
        const client = new GreeterClient(channel);
        expect((await client.sayHello({ name: 'x' }, { metadata: { 'x-user-id': 'u-gray' } })).message).toBe('true');
        expect((await client.sayHello({ name: 'x' }, { metadata: { 'x-user-id': 'u-other' } })).message).toBe('false');
      } finally {
        channel.close();
        await server.close({ graceMs: 100 });
      }
    } finally {
      await config.close();
    }
  });

  it('a caller rule matches the service whose handler made the call (svrkit channels state it)', async () => {
    let head = publish(emptyHead('callers'), { set: { limit: '10' }, delete: [] }, 'test', 1);
    head = gray(head, { set: { limit: '50' }, delete: [] }, [{ kind: 'caller', service: 'helloworld.Greeter' }], 'g2', 'test', 2);
    const cacheFile = path.join(dir, 'callers.json');
    writeFileSync(cacheFile, JSON.stringify(head));
    const config = new ConfigClient({ target: '127.0.0.1:1', namespace: 'callers', cacheFile, readyTimeoutMs: 20 });
    await config.ready();
    // The backend answers with what it reads; the frontend (a Greeter too) calls it from its handler.
    const backend = new Server({ builtinServices: false });
    backend.addService(
      new (class extends GreeterService {
        override async sayHello(): Promise<HelloReply> {
          return { message: config.get('limit') ?? '' };
        }
      })(),
    );
    await backend.listen(0);
    const toBackend = new Channel(backend.address);
    const frontend = new Server({ builtinServices: false });
    frontend.addService(
      new (class extends GreeterService {
        override async sayHello(req: HelloRequest): Promise<HelloReply> {
          return new GreeterClient(toBackend).sayHello(req);
        }
      })(),
    );
    await frontend.listen(0);
    const toFrontend = new Channel(frontend.address);
    try {
      expect((await new GreeterClient(toBackend).sayHello({ name: 'direct' })).message).toBe('10');
      expect((await new GreeterClient(toFrontend).sayHello({ name: 'via the frontend' })).message).toBe('50');
    } finally {
      toFrontend.close();
      toBackend.close();
      await frontend.close({ graceMs: 100 });
      await backend.close({ graceMs: 100 });
      await config.close();
    }
  });
});
