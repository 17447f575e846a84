/**
 * `ConfigClient.get` is a memory read: how many per second, with and without gray rules.
 *
 *   npx tsx bench/config/reads.ts [--seconds 2] [--runs 3]
 *
 * The client serves a head from its cache file (no replica is listening, so nothing else runs in
 * the process): a namespace of 20 keys, then, case by case, no gray; a gray with a percentage rule
 * read with one of 1,024 user ids; a gray with a label rule matching this
 * instance; the percentage with a new user on every read (the client remembers each reader's
 * membership per head, so this is the cost without that); and a gray with four rules where only
 * the last (a percentage) decides. Each case runs
 * `--runs` times for `--seconds`; it prints every run's gets/s.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Command, InvalidArgumentError } from 'commander';
import { ConfigClient, type GrayRule, type NamespaceHead } from '../../index.js';
import { emptyHead, gray, publish } from '../../services/config/model.js';

const positive = (what: string) => (v: string) => {
  const n = Number(v);
  if (!(n > 0)) throw new InvalidArgumentError(`${what}: '${v}' is not a positive number`);
  return n;
};
const opts = new Command()
  .option('--seconds <s>', 'seconds per run', positive('--seconds'), 2)
  .option('--runs <n>', 'runs per case', positive('--runs'), 3)
  .parse()
  .opts<{ seconds: number; runs: number }>();

const values: Record<string, string> = {};
for (let i = 0; i < 20; i++) values[`key${i}`] = `value-${i}`;
const base = publish(emptyHead('bench.reads'), { set: values, delete: [] }, 'bench', 1);
const withGray = (rules: GrayRule[]): NamespaceHead => gray(base, { set: { key7: 'gray' }, delete: [] }, rules, 'g1', 'bench', 2);
const users = Array.from({ length: 1024 }, (_, i) => `user-${i}`);

const cases: Array<{ name: string; head: NamespaceHead; read: (c: ConfigClient, i: number) => string | undefined }> = [
  { name: 'no gray', head: base, read: (c) => c.get('key7') },
  { name: 'gray percent:10, read with a user id', head: withGray([{ kind: 'percent', percent: 10 }]), read: (c, i) => c.get('key7', { userId: users[i & 1023] }) },
  { name: 'gray label:ring=canary (this instance)', head: withGray([{ kind: 'label', key: 'ring', value: 'canary' }]), read: (c) => c.get('key7') },
  {
    name: 'gray percent:10, every read a new user (no reader remembered)',
    head: withGray([{ kind: 'percent', percent: 10 }]),
    read: (c, i) => c.get('key7', { userId: `new-user-${i}` }),
  },
  {
    name: 'gray zone, caller, users, percent:10 (the last decides)',
    head: withGray([
      { kind: 'zone', zone: 'z9' },
      { kind: 'caller', service: 'other.Svc' },
      { kind: 'users', users: ['u1', 'u2', 'u3'] },
      { kind: 'percent', percent: 10 },
    ]),
    read: (c, i) => c.get('key7', { userId: users[i & 1023] }),
  },
];

const dir = mkdtempSync(path.join(os.tmpdir(), 'config-reads-'));
try {
  console.log(`ConfigClient.get: node ${process.version}, ${os.cpus().length} CPUs; ${opts.runs} runs of ${opts.seconds} s per case`);
  for (const k of cases) {
    const file = path.join(dir, `${k.name.replace(/\W+/g, '-')}.json`);
    writeFileSync(file, JSON.stringify(k.head));
    const client = new ConfigClient({ target: '127.0.0.1:1', namespace: 'bench.reads', cacheFile: file, readyTimeoutMs: 10, instance: { labels: { ring: 'canary' }, zone: 'z1' } });
    await client.ready();
    if (client.source !== 'cache') throw new Error('the client did not start from its cache file');
    const rates: number[] = [];
    let sink = 0;
    for (let run = 0; run < opts.runs; run++) {
      let n = 0;
      const end = performance.now() + opts.seconds * 1000;
      const t0 = performance.now();
      while (performance.now() < end) {
        for (let j = 0; j < 10_000; j++) sink += k.read(client, n + j)?.length ?? 0;
        n += 10_000;
      }
      rates.push(n / ((performance.now() - t0) / 1000));
    }
    await client.close();
    console.log(`| ${k.name} | ${rates.map((r) => Math.round(r).toLocaleString('en-US')).join(' / ')} |${sink > 0 ? '' : ' (nothing read)'}`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
