/**
 * The file registry (`file:///abs/path.json`): the pure file format and live-set logic, then the
 * real thing on a temporary directory — register/list/deregister, leases that expire, concurrent
 * registrations from several processes under the file lock, watches that follow hand edits and
 * expiries, malformed files, and the `file:` resolver a channel uses.
 */
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { resolverFor } from '../../framework/client/resolver.js';
import { Channel } from '../../framework/client/channel.js';
import {
  formatRegistryFile,
  liveInstances,
  nextExpiry,
  parseRegistryFile,
  withoutInstance,
  withRegistration,
} from '../../framework/discovery/file-registry.js';
import { normalizeInstance, type Instance } from '../../framework/discovery/instance.js';
import { openRegistry, parseRegistryUri, type Registry } from '../../framework/discovery/registry.js';
import { openSharedRegistries } from '../../framework/discovery/resolvers.js';
import '../../framework/setup.js'; // the composition root: registers the file registry and the file: resolver
import { eventually, WatchLog } from '../support/poll.js';
import { startRegistryChild, stopRegistryChildren } from '../support/registry-processes.js';

const G = 'helloworld.Greeter';

let root: string;
let n = 0;
const opened: Registry[] = [];

/** A fresh registry file path (not created) and its URI. */
function freshFile(): { file: string; uri: string } {
  const file = path.join(root, `registry-${++n}.json`);
  return { file, uri: pathToFileURL(file).href };
}

function open(uri: string): Registry {
  const r = openRegistry(uri);
  opened.push(r);
  return r;
}

const addresses = (list: readonly Instance[]): string[] => list.map((i) => i.address);

beforeAll(() => {
  root = mkdtempSync(path.join(tmpdir(), 'svrkit-file-registry-'));
});

afterEach(async () => {
  await Promise.all(opened.splice(0).map((r) => r.close()));
});

afterAll(async () => {
  await stopRegistryChildren();
  rmSync(root, { recursive: true, force: true });
});

describe('registry file format (pure)', () => {
  const file = '/srv/registry.json';

  it('parses entries, fills defaults, and treats an empty file as an empty registry', () => {
    const entries = parseRegistryFile(
      JSON.stringify([
        { service: G, address: '10.0.0.1:7000' },
        { service: G, address: '10.0.0.2:7000', zone: 'sh', labels: { v: '2' }, weight: 3, expiresAt: 5000 },
      ]),
      file,
    );
    expect(entries.map((e) => e.instance)).toEqual([
      { service: G, address: '10.0.0.1:7000', zone: '', labels: {}, weight: 1 },
      { service: G, address: '10.0.0.2:7000', zone: 'sh', labels: { v: '2' }, weight: 3 },
    ]);
    expect(entries.map((e) => e.expiresAt)).toEqual([undefined, 5000]);
    expect(parseRegistryFile('', file)).toEqual([]);
    expect(parseRegistryFile(' \n', file)).toEqual([]);
    expect(parseRegistryFile('[]', file)).toEqual([]);
  });

  it('rejects malformed files with the path and the entry index', () => {
    expect(() => parseRegistryFile('[{"service": ', file)).toThrow(/^registry file \/srv\/registry\.json: invalid JSON/);
    expect(() => parseRegistryFile('{"service":"a"}', file)).toThrow(/registry file \/srv\/registry\.json: expected a JSON array/);
    expect(() => parseRegistryFile(JSON.stringify([{ service: G, address: '10.0.0.1:7000' }, { service: G, address: 'nowhere' }]), file)).toThrow(
      /registry file \/srv\/registry\.json: entry \[1\]: 'address' must be host:port/,
    );
    expect(() => parseRegistryFile(JSON.stringify([{ service: G, address: 'h:1', weight: 0 }]), file)).toThrow(/entry \[0\]: 'weight' must be a number > 0/);
    expect(() => parseRegistryFile(JSON.stringify([{ address: 'h:1' }]), file)).toThrow(/entry \[0\]: 'service' must be a non-empty string/);
    expect(() => parseRegistryFile(JSON.stringify([{ service: G, address: 'h:1', labels: { a: 1 } }]), file)).toThrow(/entry \[0\]: 'labels'/);
    expect(() => parseRegistryFile(JSON.stringify([{ service: G, address: 'h:1', expiresAt: 'soon' }]), file)).toThrow(/entry \[0\]: 'expiresAt'/);
    expect(() => parseRegistryFile(JSON.stringify([{ service: G, address: 'h:1' }, { service: G, address: 'h:1' }]), file)).toThrow(
      /entry \[1\]: helloworld\.Greeter at h:1 is already listed by entry \[0\]/,
    );
  });

  it('computes the live set at a time: permanent entries always, leased ones until expiresAt, sorted', () => {
    const entries = parseRegistryFile(
      JSON.stringify([
        { service: 'b.S', address: 'h:2', expiresAt: 2000 },
        { service: G, address: 'h:9' },
        { service: G, address: 'h:1', expiresAt: 1000 },
      ]),
      file,
    );
    expect(liveInstances(entries, 500).map((i) => `${i.service}/${i.address}`)).toEqual(['b.S/h:2', `${G}/h:1`, `${G}/h:9`]);
    expect(addresses(liveInstances(entries, 500, G))).toEqual(['h:1', 'h:9']);
    expect(addresses(liveInstances(entries, 1000, G))).toEqual(['h:9']);
    expect(liveInstances(entries, 2500).map((i) => i.address)).toEqual(['h:9']);
    expect(nextExpiry(entries, 500)).toBe(1000);
    expect(nextExpiry(entries, 1000)).toBe(2000);
    expect(nextExpiry(entries, 2000)).toBeUndefined();
  });

  it('registers in place, appends, drops expired entries, and keeps hand-written entries as written', () => {
    const text = '[\n  {"service":"helloworld.Greeter","address":"h:9","note":"by hand"},\n  {"service":"x.Y","address":"h:3","expiresAt":100}\n]\n';
    const entries = parseRegistryFile(text, file);
    const a = normalizeInstance({ service: G, address: 'h:1', zone: 'z' });
    const after = withRegistration(entries, a, 5000, 200);
    expect(after.map((e) => e.instance.address)).toEqual(['h:9', 'h:1']); // x.Y expired at 100 and was dropped
    const renewed = withRegistration(after, a, 6000, 300);
    expect(renewed.map((e) => [e.instance.address, e.expiresAt])).toEqual([['h:9', undefined], ['h:1', 6000]]);
    const out = formatRegistryFile(renewed);
    expect(out).toContain('{"service":"helloworld.Greeter","address":"h:9","note":"by hand"}');
    expect(out).toContain('{"service":"helloworld.Greeter","address":"h:1","zone":"z","labels":{},"weight":1,"expiresAt":6000}');
    expect(parseRegistryFile(out, file).map((e) => e.instance)).toEqual(renewed.map((e) => e.instance));
    expect(withoutInstance(renewed, G, 'h:1', 300).map((e) => e.instance.address)).toEqual(['h:9']);
    expect(formatRegistryFile([])).toBe('[]\n');
  });

  it('parses registry URIs and rejects malformed ones clearly', () => {
    expect(parseRegistryUri('file:///srv/reg%20a.json')).toEqual({ kind: 'file', uri: 'file:///srv/reg%20a.json', path: '/srv/reg a.json' });
    expect(parseRegistryUri('file://localhost/srv/r.json')).toMatchObject({ kind: 'file', path: '/srv/r.json' });
    expect(parseRegistryUri('etcd://127.0.0.1:2379,10.0.0.2:2379/svrkit/services/')).toEqual({
      kind: 'etcd',
      uri: 'etcd://127.0.0.1:2379,10.0.0.2:2379/svrkit/services',
      hosts: ['127.0.0.1:2379', '10.0.0.2:2379'],
      prefix: '/svrkit/services',
    });
    expect(parseRegistryUri('etcd://127.0.0.1:2379')).toMatchObject({ prefix: '/svrkit/services' });
    expect(() => parseRegistryUri('file://registry.json')).toThrow(/needs an absolute path/);
    expect(() => parseRegistryUri('file:registry.json')).toThrow(/needs an absolute path/);
    expect(() => parseRegistryUri('file:///srv/')).toThrow(/names a directory/);
    expect(() => parseRegistryUri('etcd:///prefix')).toThrow(/no etcd endpoint/);
    expect(() => parseRegistryUri('etcd://localhost/prefix')).toThrow(/etcd endpoint 'localhost' is not host:port/);
    expect(() => parseRegistryUri('etcd://h:1/a//b')).toThrow(/empty segment/);
    expect(() => parseRegistryUri('zk://h:1/x')).toThrow(/unsupported registry URI 'zk:\/\/h:1\/x'/);
    expect(() => parseRegistryUri('')).toThrow(/empty registry URI/);
    expect(() => openRegistry('consul://h:1/x')).toThrow(/unsupported registry URI/);
  });
});

describe('FileRegistry', () => {
  it('registers, lists and deregisters; a missing file is an empty registry', async () => {
    const { file, uri } = freshFile();
    const reg = open(uri);
    expect(reg.uri).toBe(uri);
    expect(await reg.list()).toEqual([]);
    const r1 = await reg.register({ service: G, address: '127.0.0.1:7001', zone: 'z1', labels: { v: '1' }, weight: 2 });
    const r2 = await reg.register({ service: 'other.Svc', address: '127.0.0.1:7002' });
    expect(r1.instance).toEqual({ service: G, address: '127.0.0.1:7001', zone: 'z1', labels: { v: '1' }, weight: 2 });
    expect(await reg.list(G)).toEqual([r1.instance]);
    expect(await reg.list()).toEqual([r1.instance, r2.instance].sort((a, b) => (a.service < b.service ? -1 : 1)));
    const onDisk = JSON.parse(readFileSync(file, 'utf8')) as Array<{ expiresAt: number }>;
    expect(onDisk).toHaveLength(2);
    for (const e of onDisk) expect(e.expiresAt).toBeGreaterThan(Date.now());
    // Another process (here: another Registry object) sees the same file.
    expect(await open(uri).list(G)).toEqual([r1.instance]);
    await r1.deregister();
    await r1.deregister(); // idempotent
    expect(await reg.list()).toEqual([r2.instance]);
    await r2.deregister();
    expect(JSON.parse(readFileSync(file, 'utf8'))).toEqual([]);
  });

  it('keeps hand-written (permanent) entries when registering and deregistering', async () => {
    const { file, uri } = freshFile();
    writeFileSync(file, JSON.stringify([{ service: G, address: '10.1.1.1:7000', zone: 'manual' }], null, 2));
    const reg = open(uri);
    const r = await reg.register({ service: G, address: '127.0.0.1:7003' }, { ttlMs: 60_000 });
    expect(addresses(await reg.list(G))).toEqual(['10.1.1.1:7000', '127.0.0.1:7003']);
    await r.deregister();
    expect(JSON.parse(readFileSync(file, 'utf8'))).toEqual([{ service: G, address: '10.1.1.1:7000', zone: 'manual' }]);
  });

  it('rejects bad input with clear errors and never overwrites a malformed file', async () => {
    const { file, uri } = freshFile();
    const reg = open(uri);
    await expect(reg.register({ service: '', address: 'h:1' })).rejects.toThrow(/'service' must be a non-empty string/);
    await expect(reg.register({ service: G, address: 'h:1' }, { ttlMs: -5 })).rejects.toThrow(/lease ttl must be/);
    const missingDir = open(pathToFileURL(path.join(root, 'no-such-dir', 'r.json')).href);
    await expect(missingDir.register({ service: G, address: 'h:1' })).rejects.toThrow(/directory .*no-such-dir does not exist/);
    writeFileSync(file, '[{"service": "helloworld.Greeter", "address": "h:1"}, {"service": 7}]');
    const malformed = /registry file .*registry-\d+\.json: entry \[1\]: 'service' must be a non-empty string/;
    await expect(reg.register({ service: G, address: 'h:2' })).rejects.toThrow(malformed);
    await expect(reg.list()).rejects.toThrow(malformed);
    expect(readFileSync(file, 'utf8')).toBe('[{"service": "helloworld.Greeter", "address": "h:1"}, {"service": 7}]');
    await reg.close();
    await expect(reg.list()).rejects.toThrow(/is closed/);
    expect(() => reg.watch(G, () => {}, () => {})).toThrow(/is closed/);
  });

  it('loses no registration when many are made concurrently through separate registry objects', async () => {
    const { uri } = freshFile();
    const regs = [open(uri), open(uri), open(uri)];
    const all = await Promise.all(
      Array.from({ length: 30 }, (_, i) => regs[i % 3]!.register({ service: G, address: `127.0.0.1:${8000 + i}` }, { ttlMs: 60_000 })),
    );
    expect(await regs[0]!.list(G)).toHaveLength(30);
    await Promise.all(all.map((r) => r.deregister()));
    expect(await regs[0]!.list()).toEqual([]);
  });

  it('loses no registration when three processes register into one file at once, and SIGTERM deregisters', async () => {
    const { uri } = freshFile();
    const reg = open(uri);
    const per = 8;
    const children = await Promise.all(
      [0, 1, 2].map((c) => startRegistryChild(uri, 3000, Array.from({ length: per }, (_, i) => `${G}@127.0.0.${c + 1}:${9000 + i}`))),
    );
    const list = await reg.list(G);
    expect(list).toHaveLength(3 * per);
    // Leases keep being renewed: still all there after more than one ttl.
    await sleep(3500);
    expect(await reg.list(G)).toHaveLength(3 * per);
    for (const c of children) c.process.kill('SIGTERM');
    expect(await Promise.all(children.map((c) => c.exited))).toEqual([0, 0, 0]);
    expect(await reg.list()).toEqual([]);
  });

  it("drops a SIGKILLed process's entries once their lease expires, and a watch sees it", async () => {
    const { uri } = freshFile();
    const reg = open(uri);
    const log = new WatchLog<Instance>();
    reg.watch(G, log.onInstances, log.onError);
    const child = await startRegistryChild(uri, 600, [`${G}@127.0.0.1:9101`, `${G}@127.0.0.1:9102`]);
    const permanent = await reg.register({ service: G, address: '127.0.0.1:9100' }, { ttlMs: 60_000 });
    await eventually('the watch to see all three', () => log.latest?.length === 3);
    child.process.kill('SIGKILL');
    await child.exited;
    await eventually('the killed process entries to expire', () => reg.list(G), (l) => l.length === 1);
    expect(addresses(await reg.list(G))).toEqual([permanent.instance.address]);
    await eventually('the watch to see the expiry', () => log.latest, (l) => l !== undefined && addresses(l).join() === '127.0.0.1:9100');
    expect(log.errors).toEqual([]);
  });

  it('expires a lease that is no longer renewed: close() stops renewals but does not deregister', async () => {
    const { uri } = freshFile();
    const reg = open(uri);
    const observer = open(uri);
    await reg.register({ service: G, address: '127.0.0.1:9201' }, { ttlMs: 1500 });
    // Renewed every 500 ms: alive past its ttl.
    await sleep(2000);
    expect(addresses(await observer.list(G))).toEqual(['127.0.0.1:9201']);
    await reg.close();
    expect(addresses(await observer.list(G))).toEqual(['127.0.0.1:9201']);
    await eventually('the lease to expire', () => observer.list(G), (l) => l.length === 0, 10_000);
  });

  it('watch: first the current list, then hand edits (in place and by rename), without a restart', async () => {
    const { file, uri } = freshFile();
    writeFileSync(file, JSON.stringify([{ service: G, address: '10.0.0.1:7000' }]));
    const reg = open(uri);
    const log = new WatchLog<Instance>();
    const unsubscribe = reg.watch(G, log.onInstances, log.onError);
    await eventually('the first list', () => log.lists.length === 1);
    expect(addresses(log.lists[0]!)).toEqual(['10.0.0.1:7000']);

    // An in-place edit (truncate + write), as many editors do.
    writeFileSync(file, JSON.stringify([{ service: G, address: '10.0.0.1:7000' }, { service: G, address: '10.0.0.2:7000', weight: 5 }]));
    await eventually('the edit', () => log.latest?.length === 2);
    expect(log.latest!.find((i) => i.address === '10.0.0.2:7000')!.weight).toBe(5);

    // An edit of another service's entries changes nothing for this watch.
    const before = log.lists.length;
    writeFileSync(file, JSON.stringify([{ service: G, address: '10.0.0.1:7000' }, { service: G, address: '10.0.0.2:7000', weight: 5 }, { service: 'x.Y', address: 'h:1' }]));
    // An atomic replace (write elsewhere, rename over), as write-file-atomic and some editors do.
    writeFileSync(`${file}.tmp`, JSON.stringify([{ service: G, address: '10.0.0.3:7000' }]));
    renameSync(`${file}.tmp`, file);
    await eventually('the renamed file', () => log.latest, (l) => l !== undefined && addresses(l).join() === '10.0.0.3:7000');
    expect(log.lists.slice(before).map(addresses)).toEqual([['10.0.0.3:7000']]);

    // Deleting the file empties the registry.
    rmSync(file);
    await eventually('the deletion', () => log.latest?.length === 0);
    expect(log.errors).toEqual([]);
    unsubscribe();
    const count = log.lists.length;
    writeFileSync(file, JSON.stringify([{ service: G, address: '10.0.0.4:7000' }]));
    await sleep(500);
    expect(log.lists.length).toBe(count);
  });

  it('watch: lease renewals rewrite the file but do not notify', async () => {
    const { file, uri } = freshFile();
    const reg = open(uri);
    const log = new WatchLog<Instance>();
    await reg.register({ service: G, address: '127.0.0.1:9301' }, { ttlMs: 2000 });
    await reg.register({ service: G, address: '127.0.0.1:9302' }, { ttlMs: 2000 });
    reg.watch(G, log.onInstances, log.onError);
    await eventually('the first list', () => log.lists.length === 1);
    const firstExpiry = (JSON.parse(readFileSync(file, 'utf8')) as Array<{ expiresAt: number }>)[0]!.expiresAt;
    await eventually('two renewals', () => (JSON.parse(readFileSync(file, 'utf8')) as Array<{ expiresAt: number }>)[0]!.expiresAt, (e) => e > firstExpiry + 1000);
    expect(log.lists.map(addresses)).toEqual([['127.0.0.1:9301', '127.0.0.1:9302']]);
    // Both leases are renewed together, in one write.
    const renewed = JSON.parse(readFileSync(file, 'utf8')) as Array<{ expiresAt: number }>;
    expect(renewed[0]!.expiresAt).toBe(renewed[1]!.expiresAt);
    expect(log.errors).toEqual([]);
  });

  it('watch: a malformed file reports onError naming the path and entry, keeps the previous list, and recovers', async () => {
    const { file, uri } = freshFile();
    writeFileSync(file, JSON.stringify([{ service: G, address: '10.0.0.1:7000' }]));
    const reg = open(uri);
    const log = new WatchLog<Instance>();
    reg.watch(G, log.onInstances, log.onError);
    await eventually('the first list', () => log.lists.length === 1);

    writeFileSync(file, JSON.stringify([{ service: G, address: '10.0.0.1:7000' }, { service: G, address: '10.0.0.2' }]));
    await eventually('an error', () => log.errors.length >= 1);
    expect(log.errors[0]!.message).toMatch(new RegExp(`registry file ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: entry \\[1\\]: 'address' must be host:port`));
    await expect(reg.list(G)).rejects.toThrow(log.errors[0]!.message);
    expect(log.lists).toHaveLength(1);

    writeFileSync(file, '[{"service": "helloworld.Greeter",');
    await eventually('the JSON error', () => log.errors.some((e) => /invalid JSON/.test(e.message)));
    expect(log.lists).toHaveLength(1);

    writeFileSync(file, JSON.stringify([{ service: G, address: '10.0.0.2:7000' }]));
    await eventually('the repaired list', () => log.latest, (l) => l !== undefined && addresses(l).join() === '10.0.0.2:7000');
  });
});

describe('file: resolver', () => {
  it('resolves a service from the registry, follows changes, and shares one registry per file', async () => {
    const { uri } = freshFile();
    const reg = open(uri);
    const a = await reg.register({ service: G, address: '127.0.0.1:9401', zone: 'z' }, { ttlMs: 60_000 });
    const { parsed, factory } = resolverFor(uri);
    expect(parsed.scheme).toBe('file');
    const log1 = new WatchLog<Instance>();
    const log2 = new WatchLog<Instance>();
    const r1 = factory(parsed, G);
    const r2 = factory(parsed, 'other.Svc');
    r1.start({ onInstances: log1.onInstances, onError: log1.onError });
    r2.start({ onInstances: log2.onInstances, onError: log2.onError });
    expect(openSharedRegistries()).toContainEqual({ uri, refs: 2 });
    await eventually('the first list', () => log1.latest?.length === 1);
    expect(log1.latest).toEqual([a.instance]);
    await eventually('the other service list', () => log2.lists.length === 1);
    expect(log2.latest).toEqual([]);

    const b = await reg.register({ service: G, address: '127.0.0.1:9402' }, { ttlMs: 60_000 });
    await eventually('the new instance', () => log1.latest?.length === 2);
    r1.close();
    r1.close();
    expect(openSharedRegistries()).toContainEqual({ uri, refs: 1 });
    const seen = log1.lists.length;
    await b.deregister();
    await reg.register({ service: 'other.Svc', address: '127.0.0.1:9403' }, { ttlMs: 60_000 });
    await eventually('the other service instance', () => log2.latest?.length === 1);
    expect(log1.lists.length).toBe(seen); // closed: no more calls
    r2.close();
    expect(openSharedRegistries().find((s) => s.uri === uri)).toBeUndefined();
    expect(log1.errors).toEqual([]);
    expect(log2.errors).toEqual([]);
  });

  it('rejects malformed file targets when the target is checked (as a channel is made)', () => {
    expect(() => resolverFor('file://relative.json')).toThrow(/registry URI 'file:\/\/relative\.json/);
    expect(() => resolverFor('file://somehost/srv/r.json')).toThrow(/registry URI 'file:\/\/somehost\/srv\/r\.json'/);
    expect(() => new Channel('file://somehost/srv/r.json')).toThrow(/registry URI/);
    mkdirSync(path.join(root, 'resolver-dir'), { recursive: true });
    expect(() => resolverFor(`${pathToFileURL(path.join(root, 'resolver-dir')).href}/`)).toThrow(/names a directory/);
  });
});
