/**
 * `svrkit run` of a module that cannot be loaded says which file and shows the stack, instead of
 * only the error's message (issue 11: `error: Expected property name or '}' in JSON at position 1`
 * with no file and no stack). Real processes: `node bin/svrkit.js run <file>` in a temp dir.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runSvrkit } from './support/processes.js';

let dir: string;

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'svrkit-load-'));
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ type: 'module' }));
  writeFileSync(
    path.join(dir, 'throws-json.ts'),
    [
      "const config = JSON.parse(\"{'port': 1}\");",
      'export default config;',
      '',
    ].join('\n'),
  );
  writeFileSync(path.join(dir, 'throws.js'), ['function boom() {', "  throw new Error('no database configured');", '}', 'boom();', 'export default {};', ''].join('\n'));
  writeFileSync(path.join(dir, 'syntax.ts'), 'export default {{;\n');
  writeFileSync(path.join(dir, 'missing-import.ts'), "import { x } from './nowhere.js';\nexport default x;\n");
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('svrkit run: load errors', () => {
  it('a module that throws while loading: the file, the message and the stack', async () => {
    const r = await runSvrkit(['run', path.join(dir, 'throws-json.ts'), '--port', '0']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`cannot load ${path.join(dir, 'throws-json.ts')}`);
    expect(r.stderr).toMatch(/SyntaxError: .*JSON/);
    // The stack names the user's file and line.
    expect(r.stderr).toMatch(/at .*throws-json\.ts:1/);
  });

  it('JavaScript too: the stack shows the throwing function and line', async () => {
    const r = await runSvrkit(['run', path.join(dir, 'throws.js'), '--port', '0']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('Error: no database configured');
    expect(r.stderr).toMatch(/at boom \(.*throws\.js:2:9\)/);
  });

  it('a syntax error names the file', async () => {
    const r = await runSvrkit(['run', path.join(dir, 'syntax.ts'), '--port', '0']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`cannot load ${path.join(dir, 'syntax.ts')}`);
    expect(r.stderr).toContain('syntax.ts');
  });

  it('a missing import names the module that is missing', async () => {
    const r = await runSvrkit(['run', path.join(dir, 'missing-import.ts'), '--port', '0']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`cannot load ${path.join(dir, 'missing-import.ts')}`);
    expect(r.stderr).toContain('nowhere');
  });
});
