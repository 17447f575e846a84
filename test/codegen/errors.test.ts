/**
 * Failures: .proto errors with exact positions (module API and CLI), files outside the include dirs,
 * user files in the out dir, name collisions, unusable ts-proto options.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { generate, GENERATED_MARKER, ProtoCompileError } from '../../codegen/index.js';
import { apiDir, protos, repoRoot, runNode, sharedDir, tempDir } from './helpers.js';

const tmp = tempDir('errors');
afterAll(() => tmp.cleanup());
let n = 0;
const outDir = () => path.join(tmp.dir, `out${n++}`);
const errorsDir = path.join(protos, 'errors');
/** How diagnostics name a file: relative to the current directory. */
const shown = (abs: string) => path.relative(process.cwd(), abs);

async function compileError(file: string): Promise<ProtoCompileError> {
  const out = outDir();
  const err = await generate({ files: [path.join(errorsDir, file)], outDir: out }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ProtoCompileError);
  expect(existsSync(out), 'nothing is written').toBe(false);
  return err as ProtoCompileError;
}

describe('.proto errors give file:line:column: message', () => {
  const cases: [string, number, number, string][] = [
    ['syntax_error.proto', 7, 3, 'unexpected `int32` after definition'],
    ['unknown_type.proto', 7, 3, 'cannot find `NoSuchType` in this scope'],
    ['duplicate_field.proto', 8, 16, 'field number `2` used more than once'],
    ['missing_import.proto', 5, 1, `import "does/not/exist.proto": file does not exist in any include dir (-I ${shown(errorsDir)})`],
  ];
  for (const [file, line, column, message] of cases) {
    it(file, async () => {
      const err = await compileError(file);
      const expected = { file: shown(path.join(errorsDir, file)), line, column, message };
      expect(err.diagnostics).toEqual([expected]);
      expect(err.message).toBe(`${expected.file}:${line}:${column}: ${message}`);
      expect(err.name).toBe('ProtoCompileError');
    });
  }

  it('reports every problem of several files, one line each', async () => {
    const err = (await generate({
      files: ['unknown_type.proto', 'duplicate_field.proto'].map((f) => path.join(errorsDir, f)),
      outDir: outDir(),
    }).catch((e: unknown) => e)) as ProtoCompileError;
    expect(err).toBeInstanceOf(ProtoCompileError);
    const lines = err.message.split('\n').sort();
    expect(lines).toEqual([
      `${shown(path.join(errorsDir, 'duplicate_field.proto'))}:8:16: field number \`2\` used more than once`,
      `${shown(path.join(errorsDir, 'unknown_type.proto'))}:7:3: cannot find \`NoSuchType\` in this scope`,
    ]);
  });

  it('an import that exists in another include dir fails when that dir is not given', async () => {
    const err = (await generate({ files: [path.join(apiDir, 'kinds/kinds.proto')], outDir: outDir(), includeDirs: [apiDir] }).catch(
      (e: unknown) => e,
    )) as ProtoCompileError;
    expect(err).toBeInstanceOf(ProtoCompileError);
    // Line 9 is `import "common/v1/money.proto";`; then every use of common.v1.Money is unresolved.
    expect(err.diagnostics[0]).toEqual({
      file: shown(path.join(apiDir, 'kinds/kinds.proto')),
      line: 9,
      column: 1,
      message: `import "common/v1/money.proto": file does not exist in any include dir (-I ${shown(apiDir)})`,
    });
  });

});

describe('the CLI', () => {
  const cli = path.join(repoRoot, 'codegen', 'cli.ts');
  const runCli = (...args: string[]) => runNode(['--import', 'tsx', cli, ...args]);

  it('exits 1 and prints the error lines on stderr', async () => {
    const out = outDir();
    const r = await runCli(path.join(errorsDir, 'unknown_type.proto'), path.join(errorsDir, 'syntax_error.proto'), '--out', out);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    const errorLines = r.stderr.trim().split('\n').sort();
    expect(errorLines).toEqual([
      `${path.relative(repoRoot, path.join(errorsDir, 'syntax_error.proto'))}:7:3: unexpected \`int32\` after definition`,
      `${path.relative(repoRoot, path.join(errorsDir, 'unknown_type.proto'))}:7:3: cannot find \`NoSuchType\` in this scope`,
    ]);
    expect(existsSync(out)).toBe(false);
  });

  it('generates with -I and prints the files written (a streaming rpc is generated, without a warning)', async () => {
    const out = outDir();
    const r = await runCli(path.join(apiDir, 'helloworld/greeter.proto'), '-I', apiDir, '--include', sharedDir, '--out', out, '--runtime-import', '@acme/svrkit');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const listed = r.stdout.trim().split('\n').map((l) => path.resolve(repoRoot, l));
    expect(listed).toContain(path.join(out, 'helloworld', 'greeter.ts'));
    expect(listed).toContain(path.join(out, 'common', 'v1', 'money.ts'));
    const src = readFileSync(path.join(out, 'helloworld', 'greeter.ts'), 'utf8');
    expect(src).toContain("} from '@acme/svrkit';");
    expect(src).toContain('  abstract chat(requests: AsyncIterable<ChatMessage>, call: CallContext): AsyncIterable<DeepPartial<ChatMessage>>;');
  });

  it('exits 1 without --out', async () => {
    const r = await runCli(path.join(apiDir, 'helloworld/greeter.proto'));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("required option '--out <dir>' not specified");
  });
});

describe('inputs and include dirs', () => {
  it('a file outside every include dir is an error', async () => {
    await expect(generate({ files: [path.join(apiDir, 'helloworld/greeter.proto')], outDir: outDir(), includeDirs: [sharedDir] })).rejects.toThrow(
      /svrkit gen: .*greeter\.proto is not inside any include dir \(.*shared\)/,
    );
  });

  it('a missing file or include dir is an error', async () => {
    await expect(generate({ files: [path.join(apiDir, 'nope.proto')], outDir: outDir() })).rejects.toThrow(/svrkit gen: no such file: .*nope\.proto/);
    await expect(
      generate({ files: [path.join(apiDir, 'kinds/kinds.proto')], outDir: outDir(), includeDirs: [apiDir, path.join(protos, 'missing')] }),
    ).rejects.toThrow(/svrkit gen: no such include dir: .*missing/);
  });

  it('the same import path in two include dirs is an error naming both copies', async () => {
    const a = path.join(tmp.dir, 'dupA');
    const b = path.join(tmp.dir, 'dupB');
    for (const d of [a, b]) {
      mkdirSync(d, { recursive: true });
      writeFileSync(path.join(d, 'same.proto'), 'syntax = "proto3";\npackage same;\nmessage M {}\n');
    }
    writeFileSync(path.join(a, 'user.proto'), 'syntax = "proto3";\nimport "same.proto";\nmessage U { same.M m = 1; }\n');
    await expect(generate({ files: [path.join(a, 'user.proto')], outDir: outDir(), includeDirs: [a, b] })).rejects.toThrow(
      /user\.proto:2:1: could not open imported file: import path same\.proto exists in more than one include dir \(.*dupA.same\.proto, .*dupB.same\.proto\)/,
    );
    // Also when the duplicate is an input file itself. (A duplicate that nothing uses is no problem.)
    writeFileSync(path.join(a, 'alone.proto'), 'syntax = "proto3";\nmessage Alone {}\n');
    await expect(generate({ files: [path.join(a, 'alone.proto')], outDir: outDir(), includeDirs: [a, b] })).resolves.toBeTruthy();
    await expect(generate({ files: [path.join(a, 'same.proto')], outDir: outDir(), includeDirs: [a, b] })).rejects.toThrow(
      /^svrkit gen: import path same\.proto exists in more than one include dir \(.*dupA.same\.proto, .*dupB.same\.proto\)/,
    );
  });
});

describe('the out dir', () => {
  const greeter = path.join(apiDir, 'helloworld/greeter.proto');
  const money = path.join(sharedDir, 'common/v1/money.proto');

  it('a file a person wrote is never overwritten; nothing is written at all', async () => {
    const out = outDir();
    mkdirSync(path.join(out, 'helloworld'), { recursive: true });
    const mine = path.join(out, 'helloworld', 'greeter.ts');
    const content = '// my own greeter\nexport const mine = 1;\n';
    writeFileSync(mine, content);
    await expect(generate({ files: [greeter], outDir: out, includeDirs: [apiDir, sharedDir] })).rejects.toThrow(
      /svrkit gen: refusing to overwrite .*helloworld.greeter\.ts: it exists and was not generated/,
    );
    expect(readFileSync(mine, 'utf8')).toBe(content);
    expect(existsSync(path.join(out, 'common'))).toBe(false);
    expect(existsSync(path.join(out, 'google'))).toBe(false);
  });

  it('a marker anywhere but the first line does not count', async () => {
    const out = outDir();
    mkdirSync(out, { recursive: true });
    const file = path.join(out, 'money.ts');
    const content = `// notes\n${GENERATED_MARKER}\n`;
    writeFileSync(file, content);
    await expect(generate({ files: [money], outDir: out })).rejects.toThrow(/refusing to overwrite/);
    expect(readFileSync(file, 'utf8')).toBe(content);
  });

  it('generated files (svrkit\'s or ts-proto\'s marker) are overwritten; other files are left alone', async () => {
    const out = outDir();
    mkdirSync(out, { recursive: true });
    writeFileSync(path.join(out, 'money.ts'), `${GENERATED_MARKER}\nstale\n`);
    writeFileSync(path.join(out, 'notes.md'), 'keep me\n');
    const first = await generate({ files: [money], outDir: out });
    expect(first.written).toEqual([path.join(out, 'money.ts')]);
    const generated = readFileSync(path.join(out, 'money.ts'), 'utf8');
    expect(generated).toContain('export const Money: MessageFns<Money>');
    expect(readFileSync(path.join(out, 'notes.md'), 'utf8')).toBe('keep me\n');

    writeFileSync(path.join(out, 'money.ts'), '// Code generated by protoc-gen-ts_proto. DO NOT EDIT.\nold\n');
    await generate({ files: [money], outDir: out });
    expect(readFileSync(path.join(out, 'money.ts'), 'utf8')).toBe(generated);
  });
});

describe('name collisions and options', () => {
  const collision = (f: string) => path.join(protos, 'collision', f);

  it('a message named like a generated class fails, naming the file and the symbol', async () => {
    await expect(generate({ files: [collision('collide.proto')], outDir: outDir() })).rejects.toThrow(
      /svrkit gen: .*collision.collide\.proto: service collide\.Greeter generates GreeterClient, but the generated module already has a symbol named GreeterClient/,
    );
  });

  it('an rpc whose method name the client uses itself fails', async () => {
    await expect(generate({ files: [collision('client_member.proto')], outDir: outDir() })).rejects.toThrow(
      /client_member\.proto: rpc collide\.Door\/Close maps to method name close, which DoorClient uses itself/,
    );
  });

  it('two rpcs with the same camelCase name fail', async () => {
    await expect(generate({ files: [collision('duplicate_method.proto')], outDir: outDir() })).rejects.toThrow(
      /rpcs collide\.Twice\/GetFoo and collide\.Twice\/get_foo both map to method name getFoo/,
    );
  });

  it('ts-proto options that remove codecs are refused for files with services', async () => {
    await expect(
      generate({ files: [path.join(apiDir, 'helloworld/greeter.proto')], includeDirs: [apiDir, sharedDir], outDir: outDir(), tsProtoOptions: ['onlyTypes=true'] }),
    ).rejects.toThrow(/ts-proto option onlyTypes=true removes the encode\/decode\/fromPartial functions/);
  });

  it('an empty runtime import is refused', async () => {
    await expect(generate({ files: [collision('client_member.proto')], outDir: outDir(), runtimeImport: ' ' })).rejects.toThrow(
      /runtimeImport must not be empty/,
    );
  });
});
