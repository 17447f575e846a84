/**
 * CLI habits (issue 11): `svrkit --version`, bench durations that need a unit, bench's default
 * concurrency, bench of a method whose calls fail (errors by status, text and JSON, exit code),
 * and `svrkit call` with the request from stdin (`-`) or a file (`@path`), for unary,
 * server-streaming, client-streaming and bidi methods.
 *
 * In-process: `parseDuration` (framework/cli/flags.ts) and `svrkitVersion` (framework/cli/version.ts).
 * As real processes (`node bin/svrkit.js`, which runs dist/: `npm run build` first): the rest, on
 * the helloworld example and the Streams test service.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { InvalidArgumentError } from 'commander';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_BENCH_CONCURRENCY } from '../framework/cli/bench.js';
import { durationOption, parseDuration } from '../framework/cli/flags.js';
import { svrkitVersion } from '../framework/cli/version.js';
import { eventually } from './support/poll.js';
import { repoRoot, runSvrkit, startSvrkit, stopAllSvrkit, svrkitBin, type SvrkitProcess } from './support/processes.js';

/** Scratch space under test/.tmp (gitignored), removed afterwards. */
const tmp = path.join(repoRoot, 'test', '.tmp', `cli-habits-${process.pid}-${Date.now().toString(36)}`);
/** `tmp` as the CLI shows it: relative to its working directory, the repository root. */
const tmpRel = path.relative(repoRoot, tmp);
const packageVersion = (JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version;

beforeAll(() => mkdirSync(tmp, { recursive: true }));
afterAll(async () => {
  await stopAllSvrkit();
  rmSync(tmp, { recursive: true, force: true });
});

/** Runs `svrkit <args>` from `cwd` (default the repository root) with `input` as its whole stdin. */
function runWithStdin(args: string[], input: string, cwd = repoRoot): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [svrkitBin, ...args], { cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(input);
  });
}

/** Writes `content` to `name` in the scratch dir; returns its path relative to the repository root. */
function scratchFile(name: string, content: string): string {
  writeFileSync(path.join(tmp, name), content);
  return path.join(tmpRel, name);
}

describe('parseDuration: a duration needs a unit', () => {
  it.each([
    ['500ms', 500],
    ['3s', 3000],
    ['2m', 120_000],
    ['1h', 3_600_000],
    ['1.5s', 1500],
    ['0.5m', 30_000],
    ['.5s', 500],
    [' 2s ', 2000],
    ['10 s', 10_000],
    ['250MS', 250],
  ])('%j -> %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it('refuses a bare number, naming the flag and the accepted forms', () => {
    expect(() => parseDuration('3', '--duration')).toThrow('--duration 3: give a unit, e.g. 3s or 500ms (units: ms, s, m, h)');
    expect(() => parseDuration('250', '--duration')).toThrow('--duration 250: give a unit, e.g. 250s or 500ms');
    expect(() => parseDuration('1.5')).toThrow('duration 1.5: give a unit, e.g. 1.5s or 500ms');
    expect(() => parseDuration('3')).toThrow(InvalidArgumentError);
  });

  it.each(['', 's', '10x', '-1s', '1 2s', 'ten seconds', '1e3s', '1e3', 'NaN', 'Infinity', '5 sec', '1m30s', '3 ms ms'])('refuses %j', (text) => {
    expect(() => parseDuration(text, '--duration')).toThrow(/^--duration .*: not a duration; give a number with a unit ms, s, m or h, e\.g\. 3s, 500ms, 2m, 1\.5s$/);
  });

  it.each(['0s', '0ms', '0.0m'])('refuses zero: %j', (text) => {
    expect(() => parseDuration(text, '--duration')).toThrow(`--duration ${text}: must be greater than zero`);
  });

  it('durationOption is a commander parser for one flag', () => {
    const parse = durationOption('--warmup');
    expect(parse('2s')).toBe(2000);
    expect(() => parse('2')).toThrow('--warmup 2: give a unit');
  });
});

describe('svrkitVersion', () => {
  it("reads svrkit's package.json above the module, not the working directory's", () => {
    expect(svrkitVersion()).toBe(packageVersion);
    expect(svrkitVersion(pathToFileURL(path.join(repoRoot, 'dist', 'framework', 'cli', 'version.js')).href)).toBe(packageVersion);
  });

  it('undefined when the nearest package.json is not svrkit\'s, or there is none readable', () => {
    const other = path.join(tmp, 'other-pkg');
    mkdirSync(path.join(other, 'lib'), { recursive: true });
    writeFileSync(path.join(other, 'package.json'), JSON.stringify({ name: 'not-svrkit', version: '9.9.9' }));
    expect(svrkitVersion(pathToFileURL(path.join(other, 'lib', 'x.js')).href)).toBeUndefined();
    writeFileSync(path.join(other, 'package.json'), '{ not json');
    expect(svrkitVersion(pathToFileURL(path.join(other, 'lib', 'x.js')).href)).toBeUndefined();
    expect(svrkitVersion('not a url')).toBeUndefined();
  });
});

describe('svrkit --version', () => {
  it('prints the package version for --version and -V, exit 0, from any working directory', async () => {
    const elsewhere = path.join(tmp, 'app');
    mkdirSync(elsewhere, { recursive: true });
    writeFileSync(path.join(elsewhere, 'package.json'), JSON.stringify({ name: 'app', version: '7.7.7' }));
    const [long, short, fromApp] = await Promise.all([
      runSvrkit(['--version']),
      runSvrkit(['-V']),
      runSvrkit(['--version'], { cwd: elsewhere }),
    ]);
    for (const r of [long, short, fromApp]) {
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe(`${packageVersion}\n`);
      expect(r.stderr).toBe('');
    }
  });
});

describe('svrkit bench flags', () => {
  it('--duration with a bare number is refused with a message naming the flag, exit 1 like every bad flag, before connecting', async () => {
    const r = await runSvrkit(['bench', '127.0.0.1:1', 'helloworld.Greeter/SayHello', '--duration', '3']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('--duration 3: give a unit, e.g. 3s or 500ms');
    expect(r.stderr).not.toMatch(/UNAVAILABLE|ECONNREFUSED/);
  });

  it('--help shows the default concurrency and that --duration needs a unit', async () => {
    const r = await runSvrkit(['bench', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout.replace(/\s+/g, ' ')).toContain(`(default: ${DEFAULT_BENCH_CONCURRENCY})`);
    expect(r.stdout.replace(/\s+/g, ' ')).toContain('a bare number is refused');
  });
});

describe('svrkit bench and call on helloworld', () => {
  let greeter: SvrkitProcess;
  beforeAll(async () => {
    greeter = await startSvrkit(['run', 'examples/helloworld/greeter.ts', '--port', '0']);
  });

  it(`--concurrency defaults to ${DEFAULT_BENCH_CONCURRENCY}; --duration 500ms runs about half a second`, async () => {
    const r = await runSvrkit(['bench', greeter.address, 'helloworld.Greeter/SayHello', '{"name":"ada"}', '--duration', '500ms', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as { concurrency: number; durationMs: number; calls: number; ok: number; errors: object };
    expect(j.concurrency).toBe(64);
    expect(j.durationMs).toBeGreaterThanOrEqual(500);
    expect(j.durationMs).toBeLessThan(5000);
    expect(j.ok).toBe(j.calls);
    expect(j.calls).toBeGreaterThan(64);
    expect(j.errors).toEqual({});
  });

  it('a method whose every call fails: the bench runs, the JSON has the errors by status and the sample\'s error; exit 1', async () => {
    const r = await runSvrkit(['bench', greeter.address, 'helloworld.Greeter/SayHello', '{"name":""}', '--requests', '200', '--concurrency', '8', '--json']);
    expect(r.code).toBe(1);
    const j = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(j).toMatchObject({
      method: 'helloworld.Greeter/SayHello',
      calls: 200,
      ok: 0,
      errors: { INVALID_ARGUMENT: 200 },
      concurrency: 8,
      sampleError: { status: 'INVALID_ARGUMENT', message: 'name must not be empty' },
    });
    expect(r.stderr).toBe('error: every call failed (INVALID_ARGUMENT x200)\n');
  });

  it('the same in text: the sample\'s failure, the progress, then the report with its errors line; exit 1', async () => {
    const r = await runSvrkit(['bench', greeter.address, 'helloworld.Greeter/SayHello', '{"name":""}', '--requests', '50', '--concurrency', '4']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('sample call failed: INVALID_ARGUMENT: name must not be empty (benchmarking anyway; errors are counted by status)');
    expect(r.stderr.trimEnd().split('\n').pop()).toBe('error: every call failed (INVALID_ARGUMENT x50)');
    expect(r.stdout).toMatch(/^ {2}calls {8}50 \(0 ok, 50 errors\)$/m);
    expect(r.stdout).toMatch(/^ {2}errors {7}INVALID_ARGUMENT {2}50$/m);
  });

  it('call @file reads the request from that file', async () => {
    const file = scratchFile('ada.json', '{\n  "name": "ada"\n}\n');
    const r = await runSvrkit(['call', greeter.address, 'helloworld.Greeter/SayHello', `@${file}`]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ message: 'Hello ada' });
  });

  it('call @file: a relative path is relative to the working directory; an absolute one works too', async () => {
    scratchFile('bob.json', '{"name":"bob"}');
    const [relative, absolute] = await Promise.all([
      runSvrkit(['call', greeter.address, 'helloworld.Greeter/SayHello', '@bob.json'], { cwd: tmp }),
      runSvrkit(['call', greeter.address, 'helloworld.Greeter/SayHello', `@${path.join(tmp, 'bob.json')}`], { cwd: '/' }),
    ]);
    for (const r of [relative, absolute]) {
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toEqual({ message: 'Hello bob' });
    }
  });

  it('call - reads the request from stdin', async () => {
    const r = await runWithStdin(['call', greeter.address, 'helloworld.Greeter/SayHello', '-'], '{"name":"from stdin"}\n');
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ message: 'Hello from stdin' });
  });

  it('call @file that does not fit the request type: INVALID_ARGUMENT, as for an argument', async () => {
    const file = scratchFile('nom.json', '{"nom":"ada"}');
    const r = await runSvrkit(['call', greeter.address, 'helloworld.Greeter/SayHello', `@${file}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^ERROR: INVALID_ARGUMENT: request does not fit helloworld\.HelloRequest/);
  });
});

describe('svrkit call @file: files that cannot be used fail before connecting, naming the file', () => {
  /** Nothing listens there: a file error must come first, not UNAVAILABLE. */
  const nowhere = '127.0.0.1:1';
  const method = 'helloworld.Greeter/SayHello';

  it('a missing file', async () => {
    const r = await runSvrkit(['call', nowhere, method, `@${tmpRel}/no-such.json`]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`error: request file ${tmpRel}/no-such.json does not exist\n`);
  });

  it('a directory', async () => {
    const r = await runSvrkit(['call', nowhere, method, `@${tmpRel}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`error: request file ${tmpRel} is a directory\n`);
  });

  it('an @ without a file name', async () => {
    const r = await runSvrkit(['call', nowhere, method, '@']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('error: @ must be followed by a file name, e.g. @request.json\n');
  });
});

describe('svrkit call @file: a file that is not JSON names the file', () => {
  let greeter: SvrkitProcess;
  beforeAll(async () => {
    greeter = await startSvrkit(['run', 'examples/helloworld/greeter.ts', '--port', '0']);
  });

  it('invalid JSON', async () => {
    const file = scratchFile('broken.json', '{"name": ada}');
    const r = await runSvrkit(['call', greeter.address, 'helloworld.Greeter/SayHello', `@${file}`]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(new RegExp(`^error: the request in ${file.replace(/[.]/g, '\\.')} is not valid JSON: `));
  });

  it('NDJSON (two values) for a unary method is not one JSON value', async () => {
    const file = scratchFile('two.ndjson', '{"name":"a"}\n{"name":"b"}\n');
    const r = await runSvrkit(['call', greeter.address, 'helloworld.Greeter/SayHello', `@${file}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`error: the request in ${file} is not valid JSON`);
  });
});

describe('svrkit call @file on streaming methods (the Streams test service)', () => {
  let address: string;
  let server: ReturnType<typeof spawn>;
  let out = '';
  const COUNT = 'streams.v1.Streams/Count';
  const UPLOAD = 'streams.v1.Streams/Upload';
  const ECHO = 'streams.v1.Streams/Echo';

  beforeAll(async () => {
    server = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'test/support/streams-server.ts')], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'inherit'] });
    server.stdout!.setEncoding('utf8').on('data', (s: string) => (out += s));
    address = (await eventually('the streams server to print its address', () => /serving on (\S+)/.exec(out)?.[1], (v) => v !== undefined, 20_000))!;
  }, 30_000);
  afterAll(() => {
    server?.kill('SIGKILL');
  });

  it('server-streaming: @file holds the one request', async () => {
    const file = scratchFile('count.json', '{"count": 2}');
    const r = await runSvrkit(['call', address, COUNT, `@${file}`]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('{"seq":"0","payload":""}\n{"seq":"1","payload":""}\n');
  });

  it('client-streaming: @file holds the requests as NDJSON, one per line (blank lines skipped)', async () => {
    const file = scratchFile('chunks.ndjson', '{"data":"YWJj"}\n\n{"data":"ZA=="}\r\n{"data":""}');
    const r = await runSvrkit(['call', address, UPLOAD, `@${file}`]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ bytes: '4', chunks: 3, checksum: 394 });
  });

  it('bidi: @file holds the requests as NDJSON; each response prints as a line', async () => {
    const file = scratchFile('items.ndjson', '{"seq":1}\n{"seq":2}\n{"seq":3}\n');
    const r = await runSvrkit(['call', address, ECHO, `@${file}`]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as unknown)).toEqual([1, 2, 3].map((i) => ({ seq: String(i), payload: '' })));
  });

  it('a line of the file that is not JSON is named by the file and the line number', async () => {
    const file = scratchFile('bad.ndjson', '{"seq":1}\n{"seq": 2,\n');
    const r = await runSvrkit(['call', address, ECHO, `@${file}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^error: ${file.replace(/[.]/g, '\\.')} line 2: not valid JSON: `));
  });

  it('a line of the file that does not fit the request type: INVALID_ARGUMENT naming the file and line', async () => {
    const file = scratchFile('unfit.ndjson', '{"data":"YQ=="}\n{"bytes":1}\n');
    const r = await runSvrkit(['call', address, UPLOAD, `@${file}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^ERROR: INVALID_ARGUMENT: ${file.replace(/[.]/g, '\\.')} line 2: request does not fit streams\\.v1\\.Chunk`));
  });
});
