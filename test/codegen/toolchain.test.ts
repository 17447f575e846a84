/**
 * The code generator's toolchain (`@bufbuild/buf`, `ts-proto`), a development-time need: it is
 * found from the user's project first, then from svrkit's own install, and when it is missing
 * `svrkit gen` says, in one line, the one command that installs it.
 *
 * - `resolveToolchain` with an injected resolver: the order of the lookup and the message.
 * - The ranges in the install command are svrkit's package.json's.
 * - As real processes: a copy of the built svrkit package (dist/, bin/, package.json) in a temp dir
 *   outside this repository, whose node_modules has every package of this repository's but the
 *   toolchain, run by an app without it: `svrkit gen` fails with the one line, exit 1, no stack;
 *   once the app has the toolchain (linked into its own node_modules, as
 *   `npm install --save-dev` would put it), the same command generates. Needs a fresh dist/.
 */
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CODEGEN_TOOLCHAIN, resolveToolchain, TOOLCHAIN_INSTALL_COMMAND, toolchainSearchDirs, ToolchainMissingError, type ModuleResolver } from '../../codegen/toolchain.js';
import { repoRoot, runNode } from './helpers.js';

const INSTALL = 'npm install --save-dev @bufbuild/buf@^1.75.0 ts-proto@^2.18.0';

describe('resolveToolchain', () => {
  /** A resolver over a fake file system: dir -> the packages installed there. */
  function fakeResolver(installed: Record<string, string[]>, asked: string[] = []): ModuleResolver {
    return (request, fromDir) => {
      asked.push(`${fromDir}:${request}`);
      const pkg = request.replace(/\/package\.json$/, '');
      if (installed[fromDir]?.includes(pkg)) return `${fromDir}/node_modules/${pkg}/package.json`;
      throw new Error(`Cannot find module '${request}'`);
    };
  }

  it("looks from the user's project first, then from svrkit's install, per package", () => {
    const asked: string[] = [];
    const found = resolveToolchain(fakeResolver({ '/app': ['ts-proto'], '/svrkit': ['@bufbuild/buf', 'ts-proto'] }, asked), ['/app', '/svrkit']);
    expect(found).toEqual({ buf: '/svrkit/node_modules/@bufbuild/buf/package.json', tsProto: '/app/node_modules/ts-proto/package.json' });
    expect(asked).toEqual(['/app:@bufbuild/buf/package.json', '/svrkit:@bufbuild/buf/package.json', '/app:ts-proto/package.json']);
  });

  it('an app that has the toolchain works when svrkit does not have it', () => {
    const found = resolveToolchain(fakeResolver({ '/app': ['@bufbuild/buf', 'ts-proto'], '/svrkit': [] }), ['/app', '/svrkit']);
    expect(found.buf).toBe('/app/node_modules/@bufbuild/buf/package.json');
  });

  it('missing everywhere: one line naming what is missing and the one command that installs both', () => {
    const err = (() => {
      try {
        resolveToolchain(fakeResolver({ '/app': [], '/svrkit': ['ts-proto'] }), ['/app', '/svrkit']);
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(ToolchainMissingError);
    const e = err as ToolchainMissingError;
    expect(e.missing).toEqual(['@bufbuild/buf']);
    expect(e.message).toBe(
      `svrkit gen: the code generator needs @bufbuild/buf, which is not installed (looked from /app and from /svrkit); install the toolchain in your project with: ${INSTALL}`,
    );
    expect(e.message).not.toContain('\n');
    expect(() => resolveToolchain(fakeResolver({}), ['/app'])).toThrow(
      `svrkit gen: the code generator needs @bufbuild/buf and ts-proto, which are not installed (looked from /app); install the toolchain in your project with: ${INSTALL}`,
    );
  });

  it('searches the working directory, then svrkit\'s package root; finds this repository\'s dev dependencies', () => {
    expect(toolchainSearchDirs()).toEqual(process.cwd() === repoRoot ? [repoRoot] : [process.cwd(), repoRoot]);
    const found = resolveToolchain();
    expect(realpathSync(found.buf)).toBe(realpathSync(path.join(repoRoot, 'node_modules/@bufbuild/buf/package.json')));
    expect(realpathSync(found.tsProto)).toBe(realpathSync(path.join(repoRoot, 'node_modules/ts-proto/package.json')));
  });
});

describe("the install command's ranges", () => {
  it("are svrkit's package.json's, in every section that lists the package", () => {
    expect(TOOLCHAIN_INSTALL_COMMAND).toBe(INSTALL);
    const pkg = JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as Record<string, Record<string, string> | undefined>;
    for (const { name, range } of CODEGEN_TOOLCHAIN) {
      const listed = ['dependencies', 'devDependencies', 'peerDependencies', 'optionalDependencies'].map((s) => pkg[s]?.[name]).filter((r) => r !== undefined);
      expect(listed.length, `${name} in package.json`).toBeGreaterThan(0);
      for (const r of listed) expect(r, name).toBe(range);
    }
  });
});

describe('svrkit gen without the toolchain (a copy of the package, outside this repository)', () => {
  const toolchain = (rel: string) => rel === 'ts-proto' || rel === '@bufbuild/buf' || rel.startsWith('@bufbuild/buf-');
  let root: string;
  let svrkit: string;
  let app: string;

  beforeAll(() => {
    root = realpathSync(mkdtempSync(path.join(os.tmpdir(), 'svrkit-toolchain-')));
    // Node looks for packages in every ancestor's node_modules: none may exist above the copy.
    for (let d = root; path.dirname(d) !== d; d = path.dirname(d)) {
      if (existsSync(path.join(path.dirname(d), 'node_modules'))) throw new Error(`${path.dirname(d)}/node_modules exists: the test needs a temp dir without one above it`);
    }
    svrkit = path.join(root, 'svrkit');
    for (const rel of ['package.json', 'bin', 'dist', 'framework/builtin/proto']) {
      cpSync(path.join(repoRoot, rel), path.join(svrkit, rel), { recursive: true });
    }
    // svrkit's node_modules: links to this repository's packages, but not the toolchain's.
    const modules = path.join(repoRoot, 'node_modules');
    for (const entry of readdirSync(modules)) {
      if (entry.startsWith('.')) continue;
      const names = entry.startsWith('@') ? readdirSync(path.join(modules, entry)).map((e) => `${entry}/${e}`) : [entry];
      for (const name of names) {
        if (toolchain(name)) continue;
        mkdirSync(path.dirname(path.join(svrkit, 'node_modules', name)), { recursive: true });
        symlinkSync(path.join(modules, name), path.join(svrkit, 'node_modules', name), 'dir');
      }
    }
    app = path.join(root, 'app');
    mkdirSync(path.join(app, 'protos'), { recursive: true });
    writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
    writeFileSync(path.join(app, 'protos', 'hello.proto'), 'syntax = "proto3";\npackage hello;\nservice Hi { rpc Say(Req) returns (Req); }\nmessage Req { string name = 1; }\n');
  });
  afterAll(() => {
    if (root !== undefined) rmSync(root, { recursive: true, force: true });
  });

  const gen = () => runNode([path.join(svrkit, 'bin', 'svrkit.js'), 'gen', 'protos/hello.proto', '--out', 'gen'], app);

  it('the toolchain missing everywhere: one line with the install command, exit 1, no stack trace, nothing written', async () => {
    const r = await gen();
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(
      `svrkit gen: the code generator needs @bufbuild/buf and ts-proto, which are not installed (looked from ${app} and from ${svrkit}); ` +
        `install the toolchain in your project with: ${INSTALL}\n`,
    );
    expect(existsSync(path.join(app, 'gen'))).toBe(false);
  });

  it('only ts-proto in the app: the line names @bufbuild/buf, and still gives the one command', async () => {
    mkdirSync(path.join(app, 'node_modules'), { recursive: true });
    symlinkSync(path.join(repoRoot, 'node_modules', 'ts-proto'), path.join(app, 'node_modules', 'ts-proto'), 'dir');
    try {
      const r = await gen();
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`^svrkit gen: the code generator needs @bufbuild/buf, which is not installed .*: ${INSTALL.replace(/[.^$]/g, '\\$&')}\\n$`));
    } finally {
      rmSync(path.join(app, 'node_modules'), { recursive: true, force: true });
    }
  });

  it("once the app has the toolchain in its own node_modules, svrkit gen works from svrkit's copy without it", async () => {
    mkdirSync(path.join(app, 'node_modules', '@bufbuild'), { recursive: true });
    symlinkSync(path.join(repoRoot, 'node_modules', 'ts-proto'), path.join(app, 'node_modules', 'ts-proto'), 'dir');
    symlinkSync(path.join(repoRoot, 'node_modules', '@bufbuild', 'buf'), path.join(app, 'node_modules', '@bufbuild', 'buf'), 'dir');
    const r = await gen();
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('svrkit gen: wrote 1 files to gen\n');
    expect(readFileSync(path.join(app, 'gen', 'hello.ts'), 'utf8')).toContain('export class HiClient');
  });
});
