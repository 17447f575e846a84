/**
 * `svrkit run --register` and `svrkit registry list` as real processes (the built CLI in dist/;
 * `npm test` builds first): a served service registers itself in a file registry with its zone
 * and labels, shows up in `registry list`, and is removed on SIGTERM before the server closes.
 * Bad URIs and flags fail with exit code 1 and a clear message.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import '../../framework/index.js'; // runs framework/setup.ts: registers the file: and etcd: resolvers
import { GreeterClient } from '../../examples/helloworld/gen/greeter.js';
import { freeLoopbackPort } from '../support/etcd.js';
import { eventually } from '../support/poll.js';
import { runSvrkit, startSvrkit, stopAllSvrkit } from '../support/processes.js';

const GREETER = 'examples/helloworld/greeter.ts';
let dir: string;
let n = 0;

function freshUri(): { file: string; uri: string } {
  const file = path.join(dir, `registry-${++n}.json`);
  return { file, uri: pathToFileURL(file).href };
}

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'svrkit-cli-registry-'));
});

afterAll(async () => {
  await stopAllSvrkit();
  rmSync(dir, { recursive: true, force: true });
});

describe('svrkit run --register file:///...', () => {
  it('registers with zone and labels, shows in `registry list`, and deregisters on SIGTERM', async () => {
    const { file, uri } = freshUri();
    const server = await startSvrkit(['run', GREETER, '--port', '0', '--register', uri, '--zone', 'z1', '--label', 'version=1.4', '--label', 'canary=true']);
    const out = server.output().stdout;
    expect(out).toContain(`svrkit: registered helloworld.Greeter at ${server.address} in ${uri} (zone z1, weight 1, labels version=1.4,canary=true, ttl 10000 ms)`);
    // Registration is logged before the serving line: once serving, the instance is listed.
    expect(out.indexOf('svrkit: registered')).toBeLessThan(out.indexOf('svrkit: serving'));

    const list = await runSvrkit(['registry', 'list', uri]);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toBe(`helloworld.Greeter  ${server.address}  zone=z1  weight=1  labels=canary=true,version=1.4\n`);
    const json = await runSvrkit(['registry', 'list', uri, 'helloworld.Greeter', '--json']);
    expect(JSON.parse(json.stdout)).toEqual([{ service: 'helloworld.Greeter', address: server.address, zone: 'z1', labels: { version: '1.4', canary: 'true' }, weight: 1 }]);
    const other = await runSvrkit(['registry', 'list', uri, 'no.Such']);
    expect(other.code).toBe(0);
    expect(other.stdout).toBe('');
    expect(other.stderr).toContain('no live instances of no.Such');
    // The built-in services are not registered.
    expect(JSON.parse(readFileSync(file, 'utf8'))).toHaveLength(1);

    const status = await server.stop('SIGTERM');
    expect(status.code).toBe(0);
    const lines = server.output().stdout;
    expect(lines).toContain(`svrkit: deregistered helloworld.Greeter at ${server.address}`);
    expect(lines.indexOf('svrkit: deregistered')).toBeLessThan(lines.indexOf('svrkit: SIGTERM: closing'));
    expect(JSON.parse(readFileSync(file, 'utf8'))).toEqual([]);
    const after = await runSvrkit(['registry', 'list', uri, '--json']);
    expect(JSON.parse(after.stdout)).toEqual([]);
  });

  it('registers the --advertise address with --weight, and a crashed (SIGKILLed) server vanishes after --ttl-ms', async () => {
    const { uri } = freshUri();
    const server = await startSvrkit(['run', GREETER, '--port', '0', '--register', uri, '--advertise', 'localhost:7777', '--weight', '2.5', '--ttl-ms', '2000']);
    const list = await runSvrkit(['registry', 'list', uri, '--json']);
    expect(JSON.parse(list.stdout)).toEqual([{ service: 'helloworld.Greeter', address: 'localhost:7777', zone: '', labels: {}, weight: 2.5 }]);
    await server.stop('SIGKILL');
    await eventually(
      'the lease to expire',
      async () => JSON.parse((await runSvrkit(['registry', 'list', uri, '--json'])).stdout) as unknown[],
      (l) => l.length === 0,
      30_000,
      100,
    );
  });

  it('a client on the file: target calls the registered servers and follows them as they leave', async () => {
    const { uri } = freshUri();
    const a = await startSvrkit(['run', GREETER, '--port', '0', '--register', uri]);
    const b = await startSvrkit(['run', GREETER, '--port', '0', '--register', uri]);
    const client = new GreeterClient(uri);
    try {
      for (let i = 0; i < 4; i++) expect(await client.sayHello({ name: `n${i}` }, { timeoutMs: 10_000 })).toEqual({ message: `Hello n${i}` });
      expect((await a.stop('SIGTERM')).code).toBe(0);
      // Only b is registered now: once the watch has moved the client over, calls keep succeeding.
      await eventually('a call after a left', () => client.sayHello({ name: 'b' }, { timeoutMs: 10_000 }), (r) => r.message === 'Hello b', 30_000, 100);
      for (let i = 0; i < 4; i++) expect(await client.sayHello({ name: `m${i}` }, { timeoutMs: 10_000 })).toEqual({ message: `Hello m${i}` });
    } finally {
      client.close();
      await b.stop('SIGTERM');
    }
  });

  it('fails with exit code 1 and a clear message for bad registry URIs and flags', async () => {
    const { uri } = freshUri();
    const cases: Array<[string[], RegExp]> = [
      [['run', GREETER, '--port', '0', '--register', 'zk://h:1/x'], /unsupported registry URI 'zk:\/\/h:1\/x'/],
      [['run', GREETER, '--port', '0', '--register', 'file://relative.json'], /needs an absolute path/],
      [['run', GREETER, '--port', '0', '--register', uri, '--label', 'novalue'], /label 'novalue' is not key=value/],
      [['run', GREETER, '--port', '0', '--register', uri, '--weight', '0'], /expected a number > 0/],
      [['run', GREETER, '--port', '0', '--register', uri, '--advertise', 'nohost'], /invalid address 'nohost'/],
      [['run', GREETER, '--port', '0', '--zone', 'z1'], /need --register/],
      // Refused before binding anything: clients cannot dial 0.0.0.0.
      [['run', GREETER, '--port', '0', '--host', '0.0.0.0', '--register', uri], /binds 0\.0\.0\.0, an address clients cannot dial; give --advertise/],
      [['run', GREETER, '--port', '0', '--register', uri, '--advertise', '0.0.0.0:7000'], /not 0\.0\.0\.0 or ::/],
      [['registry', 'list', 'http://h:1/x'], /unsupported registry URI/],
      [['registry', 'list'], /missing required argument 'registry'/],
    ];
    for (const [args, message] of cases) {
      const r = await runSvrkit(args);
      expect(r.code, `svrkit ${args.join(' ')}\n${r.stdout}\n${r.stderr}`).toBe(1);
      expect(r.stderr).toMatch(message);
      expect(r.stdout).not.toContain('svrkit: serving');
    }
  });

  it('exits 1 without serving when registration fails at startup', async () => {
    const missing = pathToFileURL(path.join(dir, 'no-such-dir', 'registry.json')).href;
    const r = await runSvrkit(['run', GREETER, '--port', '0', '--register', missing]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/error: --register file:\/\/.*no-such-dir\/registry\.json: registry file .*: directory .*no-such-dir does not exist/);
    expect(r.stdout).not.toContain('svrkit: serving');

    const port = await freeLoopbackPort();
    const etcd = await runSvrkit(['run', GREETER, '--port', '0', '--register', `etcd://127.0.0.1:${port}/svrkit/services`]);
    expect(etcd.code).toBe(1);
    expect(etcd.stderr).toMatch(new RegExp(`error: --register etcd://127\\.0\\.0\\.1:${port}/svrkit/services: etcd registry .*: cannot register helloworld\\.Greeter`));
  });

  it('`registry list` reports an unreachable etcd and a malformed file with exit code 1', async () => {
    const port = await freeLoopbackPort();
    const r = await runSvrkit(['registry', 'list', `etcd://127.0.0.1:${port}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`error: etcd registry etcd://127\\.0\\.0\\.1:${port}/svrkit/services: cannot list instances`));

    const { file, uri } = freshUri();
    writeFileSync(file, '[{"service":"a.B","address":"h:1"}, {"service":"a.B"}]');
    const bad = await runSvrkit(['registry', 'list', uri]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain(`error: registry file ${file}: entry [1]: 'address' must be host:port`);
  });
});
