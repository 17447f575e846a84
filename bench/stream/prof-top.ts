/**
 * The top self-time functions of a V8 CPU profile (`node --cpu-prof`, e.g. from
 * `run.ts --cpu-prof <dir>`), one markdown row each: self ms, share of the samples, function, file:line.
 *
 *   npx tsx bench/stream/prof-top.ts <file.cpuprofile> [top=25]
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

const file = process.argv[2];
if (file === undefined) {
  process.stderr.write('usage: prof-top.ts <file.cpuprofile> [top]\n');
  process.exit(2);
}
const top = Number(process.argv[3] ?? 25);
const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const selfUs = new Map<number, number>();
// timeDeltas[i] is the time before sample i; charge it to the sample's node.
for (let i = 0; i < profile.samples.length; i++) {
  const id = profile.samples[i]!;
  selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
}
const total = [...selfUs.values()].reduce((a, b) => a + b, 0);
const byFunction = new Map<string, { us: number; name: string; where: string }>();
for (const [id, us] of selfUs) {
  const f = byId.get(id)!.callFrame;
  const where = f.url === '' ? '' : `${path.relative(process.cwd(), f.url.replace(/^file:\/\//, ''))}:${f.lineNumber + 1}`;
  const name = f.functionName === '' ? '(anonymous)' : f.functionName;
  const key = `${name} ${where}`;
  const e = byFunction.get(key) ?? { us: 0, name, where };
  e.us += us;
  byFunction.set(key, e);
}
const rows = [...byFunction.values()].sort((a, b) => b.us - a.us).slice(0, top);
process.stdout.write(`${path.basename(file)}: ${(total / 1000).toFixed(0)} ms sampled\n\n| self ms | % | function | where |\n|---|---|---|---|\n`);
for (const r of rows) process.stdout.write(`| ${(r.us / 1000).toFixed(0)} | ${((100 * r.us) / total).toFixed(1)} | ${r.name} | ${r.where} |\n`);
