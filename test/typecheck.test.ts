import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';
import { exclusively } from './support/exclusive.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');

// Vitest strips types without checking them; this runs the compiler over the whole project
// (framework, codegen, examples with their generated code, tests, bench) in strict mode. The
// compiler takes a core for a while: it runs alone with the tests that measure time (exclusive.ts).
it('the whole project type-checks (tsc --noEmit, strict)', { timeout: 180_000 }, () =>
  exclusively('timing', async () => {
    const r = await promisify(execFile)(process.execPath, [tsc, '-p', 'tsconfig.json', '--noEmit'], { cwd: root, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 }).then(
      (out) => ({ output: out.stdout + out.stderr, failed: false }),
      (err: { stdout?: string; stderr?: string }) => ({ output: (err.stdout ?? '') + (err.stderr ?? ''), failed: true }),
    );
    expect(r.output).toBe('');
    expect(r.failed).toBe(false);
  }),
);
