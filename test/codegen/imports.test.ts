/**
 * A missing import names the import path, the file that imports it and the include dirs searched
 * (buf's own message, `imported file does not exist`, names neither): through `generate()` and
 * through `svrkit gen` as a process (which runs dist/: `npm run build` first).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { explainMissingImport } from '../../codegen/compile.js';
import { generate, ProtoCompileError } from '../../codegen/index.js';
import { runSvrkit, stopAllSvrkit } from '../support/processes.js';
import { tempDir } from './helpers.js';

const tmp = tempDir('imports');
afterAll(async () => {
  await stopAllSvrkit();
  tmp.cleanup();
});
/** How messages show a path: relative to the current directory. */
const shown = (abs: string) => path.relative(process.cwd(), abs);
let n = 0;

/** Writes files (path -> content) under a fresh project dir; returns the dir. */
function project(files: Record<string, string>): string {
  const dir = path.join(tmp.dir, `p${n++}`);
  for (const [rel, content] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    writeFileSync(path.join(dir, rel), content);
  }
  return dir;
}

async function failure(files: string[], includeDirs?: string[]): Promise<ProtoCompileError> {
  const err = await generate({ files, includeDirs, outDir: path.join(tmp.dir, `out${n++}`) }).then(
    () => new Error('expected generate to fail'),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ProtoCompileError);
  return err as ProtoCompileError;
}

const A_PROTO = 'syntax = "proto3";\npackage a;\nimport "common/types.proto";\nmessage A { int32 x = 1; }\n';

describe('a missing import', () => {
  it('names the import, the importing file with its position, and the include dir', async () => {
    const dir = project({ 'protos/a.proto': A_PROTO });
    const a = path.join(dir, 'protos/a.proto');
    const err = await failure([a], [path.join(dir, 'protos')]);
    expect(err.message).toBe(`${shown(a)}:3:1: import "common/types.proto": file does not exist in any include dir (-I ${shown(path.join(dir, 'protos'))})`);
    expect(err.diagnostics).toEqual([
      { file: shown(a), line: 3, column: 1, message: `import "common/types.proto": file does not exist in any include dir (-I ${shown(path.join(dir, 'protos'))})` },
    ]);
  });

  it('lists every include dir, in order', async () => {
    const dir = project({ 'protos/a.proto': A_PROTO, 'shared/other.proto': 'syntax = "proto3";\n' });
    const err = await failure([path.join(dir, 'protos/a.proto')], [path.join(dir, 'protos'), path.join(dir, 'shared')]);
    expect(err.message).toContain(`(-I ${shown(path.join(dir, 'protos'))} -I ${shown(path.join(dir, 'shared'))})`);
  });

  it('with no -I, the include dir shown is the file\'s own directory', async () => {
    const dir = project({ 'protos/a.proto': A_PROTO });
    const err = await failure([path.join(dir, 'protos/a.proto')]);
    expect(err.message).toMatch(/: import "common\/types\.proto": file does not exist in any include dir \(-I [^)]*protos\)$/);
  });

  it('hints at the directory above the importing file where the import path does exist', async () => {
    const dir = project({ 'protos/a.proto': A_PROTO, 'common/types.proto': 'syntax = "proto3";\npackage common;\nmessage T {}\n' });
    const err = await failure([path.join(dir, 'protos/a.proto')], [path.join(dir, 'protos')]);
    expect(err.message).toBe(
      `${shown(path.join(dir, 'protos/a.proto'))}:3:1: import "common/types.proto": file does not exist in any include dir ` +
        `(-I ${shown(path.join(dir, 'protos'))}); it is under ${shown(dir)}: add -I ${shown(dir)}`,
    );
  });

  it('reads `import public`, `import weak`, an import split over lines and one after a comment, one line each', async () => {
    const dir = project({
      'b.proto': 'syntax = "proto3";\npackage b;\nimport public "x/one.proto";\n  import weak\n   "x/two.proto";\n/* c */ import \'x/three.proto\';\nmessage B {}\n',
    });
    const err = await failure([path.join(dir, 'b.proto')]);
    const b = shown(path.join(dir, 'b.proto'));
    const dirs = `(-I ${shown(dir)})`;
    expect(err.message.split('\n')).toEqual([
      `${b}:3:1: import "x/one.proto": file does not exist in any include dir ${dirs}`,
      `${b}:4:3: import "x/two.proto": file does not exist in any include dir ${dirs}`,
      `${b}:6:9: import "x/three.proto": file does not exist in any include dir ${dirs}`,
    ]);
  });

  it('explainMissingImport: undefined when there is no import statement at that position (the message stays buf\'s)', () => {
    const dir = project({ 'c.proto': 'syntax = "proto3";\nmessage C {}\n' });
    expect(explainMissingImport(path.join(dir, 'c.proto'), 2, 1, [dir])).toBeUndefined();
    expect(explainMissingImport(path.join(dir, 'c.proto'), 99, 1, [dir])).toBeUndefined();
    expect(explainMissingImport(path.join(dir, 'gone.proto'), 1, 1, [dir])).toBeUndefined();
  });
});

describe('svrkit gen with a missing import', () => {
  it('prints file:line:column, the import and the include dirs, relative to its working directory; exit 1', async () => {
    const dir = project({ 'protos/a.proto': A_PROTO });
    const r = await runSvrkit(['gen', 'protos/a.proto', '-I', 'protos', '--out', 'gen'], { cwd: dir });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe('protos/a.proto:3:1: import "common/types.proto": file does not exist in any include dir (-I protos)\n');

    mkdirSync(path.join(dir, 'common'));
    writeFileSync(path.join(dir, 'common/types.proto'), 'syntax = "proto3";\npackage common;\nmessage T {}\n');
    const hinted = await runSvrkit(['gen', 'protos/a.proto', '-I', 'protos', '--out', 'gen'], { cwd: dir });
    expect(hinted.code).toBe(1);
    expect(hinted.stderr).toBe('protos/a.proto:3:1: import "common/types.proto": file does not exist in any include dir (-I protos); it is under .: add -I .\n');

    const fixed = await runSvrkit(['gen', 'protos/a.proto', '-I', 'protos', '-I', '.', '--out', 'gen'], { cwd: dir });
    expect(fixed.code, fixed.stderr).toBe(0);
  });
});
