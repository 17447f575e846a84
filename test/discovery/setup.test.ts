/**
 * The composition root (`framework/setup.ts`): the registry and resolver tables know no
 * implementation until it runs, and after it runs `file:` and `etcd:` work for both. This file
 * imports the tables directly (not `svrkit`), so it sees them before and after the setup.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { resolverFor } from '../../framework/client/resolver.js';
import { openRegistry, registerRegistry } from '../../framework/discovery/registry.js';

const dir = mkdtempSync(path.join(tmpdir(), 'svrkit-setup-'));
const fileUri = pathToFileURL(path.join(dir, 'registry.json')).href;
const etcdUri = 'etcd://127.0.0.1:1/svrkit/services';

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('framework/setup.ts, the composition root', () => {
  it('before it runs, registry.ts and resolver.ts know only their own built-ins', () => {
    expect(() => openRegistry(fileUri)).toThrow(/no 'file' registry implementation is registered; import 'svrkit'/);
    expect(() => openRegistry(etcdUri)).toThrow(/no 'etcd' registry implementation is registered/);
    // The PaxosKV registry is a service: the framework knows its URIs, the package root registers it.
    expect(() => openRegistry('paxoskv://127.0.0.1:1/svrkit/services')).toThrow(/no 'paxoskv' registry implementation is registered; import 'svrkit'/);
    expect(() => resolverFor(fileUri)).toThrow(/no resolver for scheme 'file'.*known: grpc, static\).*importing 'svrkit'/);
    expect(resolverFor('static:///127.0.0.1:7000').parsed.scheme).toBe('static');
    expect(resolverFor('grpc://127.0.0.1:7000').parsed).toMatchObject({ scheme: 'grpc', authority: '127.0.0.1:7000' });
    // A malformed URI is still reported as such, before the missing implementation.
    expect(() => openRegistry('file://relative/registry.json')).toThrow(/needs an absolute path/);
  });

  it('after it runs, file: and etcd: open registries and resolve targets (again when re-run)', async () => {
    const { setupFramework } = await import('../../framework/setup.js');
    for (let round = 0; round < 2; round++) {
      const file = openRegistry(fileUri);
      expect(file.uri).toBe(fileUri);
      expect(await file.list()).toEqual([]);
      await file.close();
      const etcd = openRegistry(etcdUri); // nothing is loaded or connected until first use
      expect(etcd.uri).toBe(etcdUri);
      await etcd.close();
      expect(resolverFor(fileUri).parsed).toEqual({ scheme: 'file', authority: '', endpoint: fileUri.slice('file:///'.length) });
      expect(resolverFor(etcdUri).parsed.scheme).toBe('etcd');
      setupFramework();
    }
  });

  it('registerRegistry rejects a kind parseRegistryUri does not know, and a non-function', () => {
    expect(() => registerRegistry('consul' as 'file', () => openRegistry(fileUri))).toThrow(/unknown registry kind 'consul'/);
    expect(() => registerRegistry('file', undefined as never)).toThrow(/factory must be a function/);
  });
});
