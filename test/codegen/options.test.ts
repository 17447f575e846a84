/**
 * svrkit's method option `(svrkit.method) = { idempotent, priority }` (framework/builtin/proto/svrkit/options.proto):
 * `svrkit gen` finds the import without `-I`, the generated definitions carry `options` with exactly
 * the keys the .proto sets, bad values fail with the file and rpc named, explicit or shadowing include
 * dirs keep working, the output type-checks, and `resolveMethod` (svrkit call) reads the same option
 * from the descriptors a server serves.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { builtinProtoDir, planWorkspace } from '../../codegen/compile.js';
import { generate, type GenerateResult } from '../../codegen/index.js';
import { frameworkIndex, typecheckStrictAndPedantic, protos, repoRoot, runNode, tempDir, tsc, type TscDiagnostic } from './helpers.js';

const tmp = tempDir('options');
afterAll(() => tmp.cleanup());
let n = 0;
const outDir = () => path.join(tmp.dir, `out${n++}`);
const rel = (out: string, files: string[]) => files.map((f) => path.relative(out, f).split(path.sep).join('/')).sort();
/** How messages name a file: relative to the current directory. */
const shown = (abs: string) => path.relative(process.cwd(), abs);
/** The runtime import for generated code in `dir` (the framework source, by relative path). */
const runtimeFor = (dir: string) => path.relative(dir, frameworkIndex).split(path.sep).join('/').replace(/\.ts$/, '.js');
const load = async (file: string) => import(pathToFileURL(file).href);

const optionsDir = path.join(protos, 'options');
const ops = path.join(optionsDir, 'ops.proto');
const builtinDir = path.join(repoRoot, 'framework', 'builtin', 'proto');
const builtinOptions = path.join(builtinDir, 'svrkit', 'options.proto');

/** What ops.proto's definitions must carry, by service and method. */
const expectedOps = {
  both: { idempotent: true, priority: 3 },
  idempotentOnly: { idempotent: true },
  mostImportant: { priority: 0 },
  leastImportant: { priority: 127 },
  notIdempotent: {},
  plain: undefined,
  scoped: { scope: 'inbox.read' },
  open: { public: true, priority: 1 },
  old: { idempotent: true },
};

describe('generation without -I', () => {
  const out = path.join(tmp.dir, 'no-include');
  let result: GenerateResult;
  beforeAll(async () => {
    result = await generate({ files: [ops], outDir: out, runtimeImport: runtimeFor(out) });
  });

  it('finds svrkit/options.proto in the builtin dir of the svrkit package', () => {
    expect(builtinProtoDir()).toBe(builtinDir);
    const plan = planWorkspace([ops]);
    expect(plan.modules.map((m) => m.dir)).toEqual([optionsDir]);
    expect(plan.inputs).toEqual([{ file: ops, module: 0, name: 'ops.proto' }]);
    expect(plan.builtin).toEqual({ dir: builtinDir, files: ['svrkit/options.proto'] });
  });

  it('generates the file and, as for any import, svrkit/options.proto and what it imports', () => {
    expect(rel(out, result.written)).toEqual(['google/protobuf/descriptor.ts', 'ops.ts', 'svrkit/options.ts']);
    expect(result.warnings).toEqual([]);
    expect(readFileSync(path.join(out, 'svrkit', 'options.ts'), 'utf8')).toContain('export const protobufFileName = "svrkit/options.proto";');
  });

  it('gives each method definition `options` with exactly the keys the .proto sets, and none without the option', async () => {
    const g = await load(path.join(out, 'ops.ts'));
    const methods = g.OpsDefinition.methods;
    expect(Object.keys(methods)).toEqual(Object.keys(expectedOps));
    for (const [name, options] of Object.entries(expectedOps)) {
      if (options === undefined) expect('options' in methods[name], name).toBe(false);
      else expect(methods[name].options, name).toEqual(options);
    }
    expect('options' in g.QuietDefinition.methods.ping).toBe(false);
    // The rest of a definition is as before.
    expect(methods.both).toEqual({
      name: 'Both',
      localName: 'both',
      path: 'ops.Ops/Both',
      kind: 'unary',
      requestType: g.Req,
      responseType: g.Res,
      requestTypeName: 'ops.Req',
      responseTypeName: 'ops.Res',
      options: { idempotent: true, priority: 3 },
    });
  });

  it('writes the options as a literal in the definition', () => {
    const src = readFileSync(path.join(out, 'ops.ts'), 'utf8');
    expect(src).toContain("      responseTypeName: 'ops.Res',\n      options: { idempotent: true, priority: 3 },\n    },\n");
    expect(src).toContain('      options: { priority: 0 },\n');
    expect(src).toContain('      options: {},\n');
    expect(src).toContain("      options: { scope: \"inbox.read\" },\n");
    expect(src).toContain('      options: { priority: 1, public: true },\n');
    expect(src.match(/^ {6}options: /gm)).toHaveLength(8);
  });
});

describe('bad option values', () => {
  it('refuses a priority above 127, naming the file, position and rpc; writes nothing', async () => {
    const file = path.join(optionsDir, 'bad', 'too_high.proto');
    const out = outDir();
    await expect(generate({ files: [file], outDir: out })).rejects.toThrow(
      new Error(`svrkit gen: ${shown(file)}:12:12: rpc bad.Bad/TooHigh: option (svrkit.method).priority is 128; it must be 0..127 (lower is more important)`),
    );
    expect(existsSync(out)).toBe(false);
  });

  it('refuses a negative priority', async () => {
    const file = path.join(optionsDir, 'bad', 'negative.proto');
    await expect(generate({ files: [file], outDir: outDir() })).rejects.toThrow(
      `svrkit gen: ${shown(file)}:9:5: rpc bad.Negative/Below: option (svrkit.method).priority is -1; it must be 0..127`,
    );
  });

  it('refuses a value outside int32 with the compiler\'s position', async () => {
    const file = path.join(tmp.dir, 'huge.proto');
    writeFileSync(
      file,
      'syntax = "proto3";\npackage huge;\nimport "svrkit/options.proto";\nservice H {\n  rpc M(R) returns (R) { option (svrkit.method).priority = 5000000000; }\n}\nmessage R {}\n',
    );
    await expect(generate({ files: [file], outDir: outDir() })).rejects.toThrow(`${shown(file)}:5:60: literal out of range for \`int32\``);
  });
});

describe('include dirs next to the builtin one', () => {
  let reference: string;
  beforeAll(async () => {
    const out = outDir();
    await generate({ files: [ops], outDir: out });
    reference = readFileSync(path.join(out, 'ops.ts'), 'utf8');
  });

  for (const dirs of [
    [optionsDir, builtinDir],
    [builtinDir, optionsDir],
  ]) {
    it(`-I ${dirs.map(shown).join(' -I ')}: the explicit builtin dir provides svrkit/options.proto, same output`, async () => {
      const plan = planWorkspace([ops], dirs);
      expect(plan.builtin).toBeUndefined();
      const out = outDir();
      const result = await generate({ files: [ops], outDir: out, includeDirs: dirs });
      expect(rel(out, result.written)).toEqual(['google/protobuf/descriptor.ts', 'ops.ts', 'svrkit/options.ts']);
      expect(readFileSync(path.join(out, 'ops.ts'), 'utf8')).toBe(reference);
    });
  }

  it('generates the builtin services as `npm run gen:builtin` does (-I framework/builtin/proto)', async () => {
    const files = ['health.proto', 'reflection.proto'].map((f) => path.join(builtinDir, 'svrkit', f));
    expect(planWorkspace(files, [builtinDir]).builtin).toBeUndefined();
    const out = outDir();
    const result = await generate({ files, outDir: out, includeDirs: [builtinDir] });
    // health.proto and reflection.proto mark their methods priority 0, so they import svrkit/options.proto.
    expect(rel(out, result.written)).toEqual(['google/protobuf/descriptor.ts', 'svrkit/health.ts', 'svrkit/options.ts', 'svrkit/reflection.ts']);
  });

  it('an include dir that contains the builtin dir keeps its import paths; svrkit/options.proto still resolves', async () => {
    const frameworkDir = path.join(repoRoot, 'framework');
    const health = path.join(builtinDir, 'svrkit', 'health.proto');
    const plan = planWorkspace([health, ops], [frameworkDir, optionsDir]);
    expect(plan.inputs.map((i) => i.name)).toEqual(['builtin/proto/svrkit/health.proto', 'ops.proto']);
    expect(plan.modules.map((m) => m.excludes)).toEqual([[], []]);
    expect(plan.builtin).toEqual({ dir: builtinDir, files: ['svrkit/options.proto'] });
    const out = outDir();
    const result = await generate({ files: [health, ops], outDir: out, includeDirs: [frameworkDir, optionsDir] });
    expect(rel(out, result.written)).toEqual(['builtin/proto/svrkit/health.ts', 'google/protobuf/descriptor.ts', 'ops.ts', 'svrkit/options.ts']);
    expect(readFileSync(path.join(out, 'ops.ts'), 'utf8')).toBe(reference);
  });

  it('a nested include dir that takes svrkit/options.proto away from the builtin dir leaves the builtin module in place', async () => {
    const dirs = [optionsDir, builtinDir, path.join(builtinDir, 'svrkit')];
    const plan = planWorkspace([ops], dirs);
    expect(plan.modules[1]!.excludes).toEqual(['m1/svrkit']);
    expect(plan.builtin).toEqual({ dir: builtinDir, files: ['svrkit/options.proto'] });
    const out = outDir();
    await generate({ files: [ops], outDir: out, includeDirs: dirs });
    expect(readFileSync(path.join(out, 'ops.ts'), 'utf8')).toBe(reference);
  });

  it("a user's own svrkit/options.proto shadows svrkit's, with or without -I", async () => {
    const app = path.join(optionsDir, 'shadow', 'app.proto');
    const shadowDir = path.join(optionsDir, 'shadow');
    for (const includeDirs of [undefined, [shadowDir]]) {
      expect(planWorkspace([app], includeDirs).builtin).toBeUndefined();
      const out = outDir();
      await generate({ files: [app], outDir: out, includeDirs, runtimeImport: runtimeFor(out) });
      expect(readFileSync(path.join(out, 'svrkit', 'options.ts'), 'utf8')).toContain("The user's copy of MethodOptions.");
      expect((await load(path.join(out, 'app.ts'))).AppDefinition.methods.get.options).toEqual({ priority: 7 });
    }
  });

  it("refuses a user's own (svrkit.method) of another shape", async () => {
    const app = path.join(optionsDir, 'wrong_shape', 'app.proto');
    await expect(generate({ files: [app], outDir: outDir() })).rejects.toThrow(
      `svrkit gen: ${shown(app)}:9:12: rpc wrong.App/Get: svrkit/options.proto declares option (svrkit.method), but not as svrkit's svrkit/options.proto does`,
    );
  });

  it('a missing import is still reported by the compiler', async () => {
    const file = path.join(tmp.dir, 'missing.proto');
    writeFileSync(file, 'syntax = "proto3";\npackage missing;\nimport "svrkit/nope.proto";\n');
    await expect(generate({ files: [file], outDir: outDir() })).rejects.toThrow(
      `${shown(file)}:3:1: import "svrkit/nope.proto": file does not exist in any include dir (-I ${shown(tmp.dir)})`,
    );
  });
});

describe('tsc', () => {
  let strict: { diagnostics: TscDiagnostic[]; output: string };
  let pedantic: { diagnostics: TscDiagnostic[]; output: string };
  beforeAll(async () => {
    const root = path.join(tmp.dir, 'tsc');
    await generate({ files: [ops], outDir: path.join(root, 'gen') });
    mkdirSync(path.join(root, 'app'));
    writeFileSync(
      path.join(root, 'app', 'usage.ts'),
      [
        "import type { MethodDefinition, MethodOptions } from 'svrkit';",
        "import { OpsDefinition, QuietDefinition } from '../gen/ops.js';",
        '',
        'export const both: MethodOptions = OpsDefinition.methods.both.options;',
        'export const priority: 3 = OpsDefinition.methods.both.options.priority;',
        'export const idempotent: true = OpsDefinition.methods.idempotentOnly.options.idempotent;',
        'export const empty: {} = OpsDefinition.methods.notIdempotent.options;',
        'export function priorityOf(method: MethodDefinition): number | undefined {',
        '  return method.options?.priority;',
        '}',
        'priorityOf(OpsDefinition.methods.plain);',
        'priorityOf(QuietDefinition.methods.ping);',
        '// @ts-expect-error a method without the option has no `options`',
        'export const none = OpsDefinition.methods.plain.options;',
        '// @ts-expect-error the priority is the literal 3',
        'export const wrong: 4 = OpsDefinition.methods.both.options.priority;',
        '// @ts-expect-error options are read-only',
        'OpsDefinition.methods.both.options.priority = 4;',
        '',
      ].join('\n'),
    );
    [strict, pedantic] = await typecheckStrictAndPedantic(root, ['gen/**/*.ts', 'app/**/*.ts']);
  }, 60_000);

  // Only the generated files and the user's file are judged: the framework's own sources are
  // type-checked by the repository's tsconfig.
  const ours = (r: { diagnostics: TscDiagnostic[] }) =>
    r.diagnostics.filter((d) => d.file === '' || !path.relative(path.join(tmp.dir, 'tsc'), d.file).startsWith('..'));

  it('type-checks the generated code (descriptor.ts and options.ts included) and typed uses of `options`', () => {
    expect(ours(strict), strict.output).toEqual([]);
  });

  it('type-checks under stricter user settings too', () => {
    expect(ours(pedantic), pedantic.output).toEqual([]);
  });
});

describe('svrkit call: resolveMethod reads the option from the served descriptors', () => {
  it('carries `options` on the json and raw definitions, as generated code does', async () => {
    const out = path.join(tmp.dir, 'served');
    await generate({ files: [ops], outDir: out, runtimeImport: runtimeFor(out) });
    const g = await load(path.join(out, 'ops.ts'));
    const svrkit = await import(pathToFileURL(frameworkIndex).href);
    const reply = async (req: { id: string }) => ({ id: req.id });
    class Ops extends g.OpsService {}
    for (const m of Object.keys(expectedOps)) (Ops.prototype as Record<string, unknown>)[m] = reply;
    const server = new svrkit.Server();
    server.addService(new Ops());
    await server.listen(0);
    const channel = new svrkit.Channel(server.address);
    try {
      for (const [name, options] of Object.entries(expectedOps)) {
        const rpc = g.OpsDefinition.methods[name].name as string;
        const method = await svrkit.resolveMethod(channel, `ops.Ops/${rpc}`);
        if (options === undefined) {
          expect('options' in method.json, name).toBe(false);
          expect('options' in method.raw, name).toBe(false);
        } else {
          expect(method.json.options, name).toEqual(options);
          expect(method.raw.options, name).toEqual(options);
        }
      }
      const both = await svrkit.resolveMethod(channel, 'ops.Ops/Both');
      expect(await channel.unary(both.json, { id: 'x' })).toEqual({ id: 'x' });
    } finally {
      channel.close();
      await server.close();
    }
  });
});

describe('examples/helloworld/greeter.proto marks SayHello idempotent', () => {
  it('the generated example carries it', async () => {
    // test/global-setup.ts generated examples/helloworld/gen without any -I.
    const g = await import('../../examples/helloworld/gen/greeter.js');
    expect(g.GreeterDefinition.methods.sayHello.options).toEqual({ idempotent: true });
  });

  it('the grpc-js baseline (@grpc/proto-loader with includeDirs) still serves and calls it', async () => {
    const server = spawn(process.execPath, ['--import', 'tsx', 'bench/grpc-js/server.ts', '0'], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    server.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<number | null>((resolve) => server.on('close', (code) => resolve(code)));
    try {
      const address = await new Promise<string>((resolve, reject) => {
        let stdout = '';
        server.stdout.on('data', (c: Buffer) => {
          stdout += c.toString();
          const m = /listening (\S+)/.exec(stdout);
          if (m) resolve(m[1]!);
        });
        void exited.then((code) => reject(new Error(`grpc-js server exited with ${code}: ${stderr}`)));
      });
      const client = await runNode(['--import', 'tsx', 'bench/grpc-js/client.ts', address, '--concurrency', '2', '--requests', '20', '--json']);
      expect(client.code, client.stderr).toBe(0);
      const result = JSON.parse(client.stdout) as { calls: number; ok: number; errors: Record<string, number> };
      expect([result.calls, result.ok, result.errors]).toEqual([20, 20, {}]);
    } finally {
      server.kill('SIGTERM');
      expect(await exited).toBe(0);
    }
  });
});

describe('the builtin file', () => {
  it('ships framework/builtin/proto/svrkit/options.proto with the extension', () => {
    expect(readFileSync(builtinOptions, 'utf8')).toContain('MethodOptions method = 50651;');
  });
});
