/**
 * Step 1 of `svrkit gen`: compile .proto files to a FileDescriptorSet with buf.
 *
 * buf (https://buf.build/docs/reference/cli/buf/build) is a complete protobuf compiler: it validates
 * everything protoc validates, reports `file:line:column` errors, bundles the well-known types
 * (google/protobuf/*.proto) and keeps comments (SourceCodeInfo). It ships as a native binary inside
 * the npm package `@bufbuild/buf-<platform>`, so nothing is downloaded and nothing is looked up on PATH.
 * `@bufbuild/buf` is found from the user's project first, then from svrkit's install (toolchain.ts).
 *
 * buf has no `-I`: it compiles a workspace of modules. Each include dir becomes a module of a
 * temporary buf v2 workspace (a symlink `m<i>` to the include dir, listed in a generated buf.yaml).
 * svrkit's own importable protos ({@link BUILTIN_PROTOS}, e.g. `svrkit/options.proto`) come from one
 * more module after them, the lowest-priority include dir (see {@link planWorkspace}).
 */
import { existsSync, promises as fsp, readFileSync, realpathSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fromBinary } from '@bufbuild/protobuf';
import { FileDescriptorSetSchema, type FileDescriptorSet } from '@bufbuild/protobuf/wkt';
import { ProtoCompileError, type ProtoDiagnostic } from './errors.js';
import { svrkitPackage } from './package-root.js';
import { run } from './process.js';
import { resolveToolchain } from './toolchain.js';

/** The result of compiling a set of .proto files. */
export interface CompileResult {
  /**
   * Every file the inputs need, transitively, each once, imports before the files that import
   * them (buf's order). Includes SourceCodeInfo (comments, locations).
   */
  readonly fileSet: FileDescriptorSet;
  /** The import paths (FileDescriptorProto names) of the input files, in input order, without duplicates. */
  readonly inputNames: readonly string[];
  /** Import path of each input file -> the file, for messages (relative to `process.cwd()` when inside it). */
  readonly inputPaths: ReadonlyMap<string, string>;
}

/** One include dir as a module of the temporary buf workspace. */
export interface WorkspaceModule {
  /** The include dir as the user named it, resolved to an absolute path (used in messages). */
  readonly dir: string;
  /** The same dir with symlinks resolved (used for containment checks and as the symlink target). */
  readonly realDir: string;
  /** Workspace-relative dirs (`m<i>/sub/dir`) excluded from this module because another include dir is nested there. */
  readonly excludes: readonly string[];
}

/** An input file and the name it gets in the descriptor set. */
export interface WorkspaceInput {
  /** Absolute path of the file as the user named it. */
  readonly file: string;
  /** Index of the module (include dir) that owns the file. */
  readonly module: number;
  /** The import path, relative to the owning include dir, with `/` separators, e.g. `helloworld/greeter.proto`. */
  readonly name: string;
}

/**
 * svrkit's builtin protos that a plan makes importable: a module of its own after every include
 * dir, holding copies of just these files (nothing else of the builtin dir is visible).
 */
export interface WorkspaceBuiltin {
  /** The builtin proto dir of the svrkit package (`framework/builtin/proto`), absolute (used in messages). */
  readonly dir: string;
  /** The import paths the module holds, e.g. `['svrkit/options.proto']`; never empty. */
  readonly files: readonly string[];
}

/** How include dirs and inputs map onto a buf workspace (see {@link planWorkspace}). */
export interface WorkspacePlan {
  /** One module per (deduplicated) include dir, in the order given. */
  readonly modules: readonly WorkspaceModule[];
  readonly inputs: readonly WorkspaceInput[];
  /** svrkit's builtin protos, as the last module `m<modules.length>`; undefined when every one is shadowed (or not installed). */
  readonly builtin?: WorkspaceBuiltin;
}

/**
 * The import paths of the protos svrkit ships for users to import, found by `svrkit gen` without any
 * `-I` (see {@link builtinProtoDir}). `svrkit/options.proto` defines the `(svrkit.method)` option.
 */
export const BUILTIN_PROTOS: readonly string[] = ['svrkit/options.proto'];

/**
 * Finds `framework/builtin/proto` of the svrkit package this module belongs to
 * (package-root.ts).
 *
 * @returns the absolute path of the dir, or undefined when it cannot be found (an incomplete install:
 *   the builtin protos are then simply not available, and importing one fails like any missing import).
 *   Never throws.
 */
export function builtinProtoDir(): string | undefined {
  const root = svrkitPackage()?.root;
  if (root === undefined) return undefined;
  const protoDir = path.join(root, 'framework', 'builtin', 'proto');
  return existsSync(protoDir) ? protoDir : undefined;
}

/**
 * Maps protoc-style include dirs (`-I`) and input files onto buf workspace modules. Pure: touches
 * the file system only to resolve symlinks and check that paths exist.
 *
 * - With no include dirs, each input file's own directory is its include dir.
 * - Include dirs are deduplicated. When one include dir is nested inside another, the outer module
 *   excludes the nested one, so every file belongs to exactly one module: files under the nested dir
 *   are imported relative to the nested dir.
 * - An input file is named relative to the innermost include dir that contains it (the one module
 *   that has it). protoc names it by the first `-I` that contains it; the two agree unless include
 *   dirs are nested, where protoc would give a file two names.
 * - buf refuses an import path that exists in two (non-nested) include dirs when it is used or is an
 *   input (protoc would take the first); that is reported as an error naming both copies.
 * - svrkit's builtin protos ({@link BUILTIN_PROTOS}) are always importable, as if from one more,
 *   last, include dir: a module holding only those files, so it never nests with, excludes from, or
 *   owns inputs of the user's include dirs. A builtin import path that some include dir already
 *   provides (the user passed `-I framework/builtin/proto`, or has an `svrkit/options.proto` of their
 *   own) is left to that dir, as protoc gives the first include dir priority.
 *
 * @param files input .proto files, relative to `process.cwd()` or absolute.
 * @param includeDirs include dirs, relative to `process.cwd()` or absolute; empty or undefined for "each file's own dir".
 * @param builtinDir where the builtin protos live; default {@link builtinProtoDir}(); `null` for none.
 * @returns the modules (include dirs), the inputs with their import paths, and the builtin module if any.
 * @throws Error when a file or include dir does not exist, a file is not a `.proto` file, or a file is
 *   inside no include dir.
 */
export function planWorkspace(
  files: readonly string[],
  includeDirs?: readonly string[],
  builtinDir: string | null = builtinProtoDir() ?? null,
): WorkspacePlan {
  if (files.length === 0) throw new Error('svrkit gen: no .proto files given');
  const inputs = files.map((f) => {
    const abs = path.resolve(f);
    if (!abs.endsWith('.proto')) throw new Error(`svrkit gen: ${f} is not a .proto file`);
    let stat;
    try {
      stat = statSync(abs);
    } catch {
      throw new Error(`svrkit gen: no such file: ${f}`);
    }
    if (!stat.isFile()) throw new Error(`svrkit gen: not a file: ${f}`);
    return { given: f, abs, real: realpathSync(abs) };
  });

  const dirsGiven = includeDirs && includeDirs.length > 0 ? includeDirs : inputs.map((i) => path.dirname(i.abs));
  const dirs: { dir: string; realDir: string }[] = [];
  for (const d of dirsGiven) {
    const abs = path.resolve(d);
    let stat;
    try {
      stat = statSync(abs);
    } catch {
      throw new Error(`svrkit gen: no such include dir: ${d}`);
    }
    if (!stat.isDirectory()) throw new Error(`svrkit gen: include dir is not a directory: ${d}`);
    const realDir = realpathSync(abs);
    if (!dirs.some((x) => x.realDir === realDir)) dirs.push({ dir: abs, realDir });
  }

  // nestedIn[i] = indices of include dirs strictly inside include dir i.
  const nestedIn = dirs.map((outer, i) => dirs.map((_, j) => j).filter((j) => j !== i && isInside(dirs[j]!.realDir, outer.realDir)));
  const modules: WorkspaceModule[] = dirs.map((d, i) => ({
    ...d,
    excludes: nestedIn[i]!.map((j) => `m${i}/${toPosix(path.relative(d.realDir, dirs[j]!.realDir))}`),
  }));

  const seen = new Set<string>();
  const planned: WorkspaceInput[] = [];
  for (const input of inputs) {
    const owner = dirs.findIndex(
      (d, i) => isInside(input.real, d.realDir) && !nestedIn[i]!.some((j) => isInside(input.real, dirs[j]!.realDir)),
    );
    if (owner < 0) {
      const list = dirs.map((d) => displayPath(d.dir)).join(', ');
      throw new Error(
        `svrkit gen: ${input.given} is not inside any include dir (${list}); add the directory its imports are relative to with -I`,
      );
    }
    const name = toPosix(path.relative(dirs[owner]!.realDir, input.real));
    if (seen.has(name)) continue;
    seen.add(name);
    planned.push({ file: input.abs, module: owner, name });
  }

  // A builtin import path is shadowed when an include dir has a file at that path in its own module.
  const provides = (rel: string) =>
    dirs.some((d, i) => {
      const file = path.join(d.realDir, ...rel.split('/'));
      return existsSync(file) && !nestedIn[i]!.some((j) => isInside(file, dirs[j]!.realDir));
    });
  const builtinFiles =
    builtinDir === null ? [] : BUILTIN_PROTOS.filter((rel) => !provides(rel) && existsSync(path.join(builtinDir, ...rel.split('/'))));
  const builtin = builtinDir !== null && builtinFiles.length > 0 ? { dir: path.resolve(builtinDir), files: builtinFiles } : undefined;
  return { modules, inputs: planned, ...(builtin ? { builtin } : {}) };
}

/**
 * Compiles .proto files with buf and returns their FileDescriptorSet.
 *
 * @param files input .proto files (relative to `process.cwd()` or absolute).
 * @param includeDirs protoc-style include dirs; see {@link planWorkspace} for the rules.
 * @throws ProtoCompileError when buf reports problems in the .proto files (one `file:line:column: message` line each).
 * @throws ToolchainMissingError when `@bufbuild/buf` or `ts-proto` is not installed (one line, with the
 *   command that installs both).
 * @throws Error for anything else: a missing file or include dir, a file outside the include dirs, the
 *   same import path in two include dirs, buf failing.
 */
export async function compileProtos(files: readonly string[], includeDirs?: readonly string[]): Promise<CompileResult> {
  const plan = planWorkspace(files, includeDirs);
  const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'svrkit-gen-'));
  try {
    const yaml = ['version: v2', 'modules:'];
    for (const [i, m] of plan.modules.entries()) {
      await fsp.symlink(m.realDir, path.join(tmp, `m${i}`), process.platform === 'win32' ? 'junction' : 'dir');
      yaml.push(`  - path: m${i}`);
      if (m.excludes.length > 0) yaml.push(`    excludes: [${m.excludes.map((e) => JSON.stringify(e)).join(', ')}]`);
    }
    // The builtin module: copies of just the builtin files (messages map them back to the originals).
    const messageModules: Pick<WorkspaceModule, 'dir'>[] = [...plan.modules];
    if (plan.builtin) {
      const dir = `m${plan.modules.length}`;
      for (const rel of plan.builtin.files) {
        const target = path.join(tmp, dir, ...rel.split('/'));
        await fsp.mkdir(path.dirname(target), { recursive: true });
        await fsp.copyFile(path.join(plan.builtin.dir, ...rel.split('/')), target);
      }
      yaml.push(`  - path: ${dir}`);
      messageModules.push({ dir: plan.builtin.dir });
    }
    await fsp.writeFile(path.join(tmp, 'buf.yaml'), yaml.join('\n') + '\n');
    const out = path.join(tmp, 'fds.binpb');
    const args = ['build', '.'];
    for (const input of plan.inputs) args.push('--path', `m${input.module}/${input.name}`);
    args.push('--as-file-descriptor-set', '--error-format', 'json', '-o', out);

    const { command, prefixArgs } = bufCommand();
    const result = await run(command, [...prefixArgs, ...args], tmp);
    if (result.code !== 0) {
      const includeDirs = plan.modules.map((m) => m.dir);
      const diagnostics = parseDiagnostics(result.stdout + '\n' + result.stderr, messageModules, includeDirs);
      if (diagnostics.length > 0) throw new ProtoCompileError(diagnostics);
      throw new Error(explainBufFailure(result.stderr || result.stdout, result.code, messageModules));
    }
    const fileSet = fromBinary(FileDescriptorSetSchema, await fsp.readFile(out));
    const inputNames = plan.inputs.map((i) => i.name);
    for (const name of inputNames) {
      if (!fileSet.file.some((f) => f.name === name)) {
        throw new Error(`svrkit gen: buf did not compile ${name} (is it excluded by a nested include dir?)`);
      }
    }
    const inputPaths = new Map(plan.inputs.map((i) => [i.name, displayPath(i.file)]));
    return { fileSet, inputNames, inputPaths };
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true });
  }
}

/**
 * Turns buf's `--error-format json` output (one JSON object per line:
 * `{"path":"m0/a.proto","start_line":3,"start_column":3,"message":"..."}`) into diagnostics whose
 * paths point at the real files. Lines that are not such objects are ignored.
 *
 * buf's `imported file does not exist` names neither the import nor where it was looked for; it
 * becomes `import "a/b.proto": file does not exist in any include dir (-I protos -I shared)`, the
 * import path read from the importing file at the diagnostic's position (see {@link explainMissingImport}).
 *
 * @param output - buf's stdout and stderr.
 * @param modules - the workspace's modules in order (`m<i>` is `modules[i]`), for mapping paths back.
 * @param includeDirs - the user's include dirs (absolute), named in messages about missing imports;
 *   default every module's dir.
 * @returns one diagnostic per JSON line, in buf's order.
 */
export function parseDiagnostics(
  output: string,
  modules: readonly Pick<WorkspaceModule, 'dir'>[],
  includeDirs: readonly string[] = modules.map((m) => m.dir),
): ProtoDiagnostic[] {
  const diagnostics: ProtoDiagnostic[] = [];
  for (const outputLine of output.split('\n')) {
    const text = outputLine.trim();
    if (!text.startsWith('{')) continue;
    let obj: unknown;
    try {
      obj = JSON.parse(text);
    } catch {
      continue;
    }
    if (typeof obj !== 'object' || obj === null) continue;
    const o = obj as Record<string, unknown>;
    if (typeof o['message'] !== 'string') continue;
    const multi = /^(.*?)(\S+) is contained in multiple modules/.exec(o['message']);
    let message = multi ? multi[1] + multipleIncludeDirs(multi[2]!, modules) : o['message'].split('\n').map((l) => l.trim()).join(' ');
    const line = typeof o['start_line'] === 'number' ? o['start_line'] : 0;
    const column = typeof o['start_column'] === 'number' ? o['start_column'] : 0;
    const abs = typeof o['path'] === 'string' ? absoluteFile(o['path'], modules) : undefined;
    if (message === 'imported file does not exist' && abs !== undefined) {
      message = explainMissingImport(abs, line, column, includeDirs) ?? message;
    }
    diagnostics.push({
      file: typeof o['path'] === 'string' ? realFile(o['path'], modules) : '<unknown>',
      line,
      column,
      message,
    });
  }
  return diagnostics;
}

/** Maps a workspace path (`m<i>/rest`) back to the include dir it came from, for messages. */
function realFile(workspacePath: string, modules: readonly Pick<WorkspaceModule, 'dir'>[]): string {
  const abs = absoluteFile(workspacePath, modules);
  return abs === undefined ? workspacePath : displayPath(abs);
}

/** The absolute path of a workspace path (`m<i>/rest`); undefined when it is not in a module. */
function absoluteFile(workspacePath: string, modules: readonly Pick<WorkspaceModule, 'dir'>[]): string | undefined {
  const m = /^m(\d+)\/(.*)$/.exec(workspacePath);
  const mod = m ? modules[Number(m[1])] : undefined;
  if (!m || !mod) return undefined;
  return path.join(mod.dir, ...m[2]!.split('/'));
}

/**
 * Explains buf's `imported file does not exist` at `line:column` of `file`: reads the import
 * statement there and names its path and the include dirs searched, plus a hint when the path
 * exists under a directory above the importing file that is not an include dir:
 * `import "common/types.proto": file does not exist in any include dir (-I protos); it is under
 * ., add -I .`.
 * @param file - the importing file, absolute.
 * @param line - 1-based line of the import statement.
 * @param column - 1-based column where it starts.
 * @param includeDirs - the include dirs searched (absolute).
 * @returns the message, or undefined when no import statement can be read there.
 */
export function explainMissingImport(file: string, line: number, column: number, includeDirs: readonly string[]): string | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const lines = text.split('\n');
  if (line < 1 || line > lines.length) return undefined;
  const importAt = /^import\s+(?:(?:public|weak)\s+)?(["'])((?:[^"'\\\n]|\\.)*)\1/;
  const rest = lines.slice(line - 1).join('\n');
  const found = importAt.exec(rest.slice(Math.max(0, column - 1))) ?? importAt.exec(rest.trimStart());
  if (found === null) return undefined;
  const importPath = found[2]!;
  const dirs = includeDirs.map((d) => `-I ${shownDir(d)}`).join(' ');
  let message = `import "${importPath}": file does not exist in any include dir (${dirs})`;
  // A hint: the import path under a directory above the importing file (up to the working directory).
  const stop = isInside(file, process.cwd()) ? process.cwd() : path.dirname(file);
  for (let dir = path.dirname(file); ; dir = path.dirname(dir)) {
    if (!includeDirs.includes(dir) && existsSync(path.join(dir, ...importPath.split('/')))) {
      message += `; it is under ${shownDir(dir)}: add -I ${shownDir(dir)}`;
      break;
    }
    if (dir === stop || path.dirname(dir) === dir) break;
  }
  return message;
}

/** A directory as messages show it: relative to the working directory when inside it (`.` for it), else absolute. */
function shownDir(dir: string): string {
  return path.resolve(dir) === process.cwd() ? '.' : displayPath(dir);
}

function explainBufFailure(text: string, code: number | null, modules: readonly Pick<WorkspaceModule, 'dir'>[]): string {
  const msg = text.trim().replace(/^Failure:\s*/, '');
  const multi = /^(\S+) is contained in multiple modules/.exec(msg);
  if (multi) return `svrkit gen: ${multipleIncludeDirs(multi[1]!, modules)}`;
  return `svrkit gen: buf failed (exit code ${code}): ${msg}`;
}

/** Explains buf's "contained in multiple modules": one import path, two include dirs that have it. */
function multipleIncludeDirs(rel: string, modules: readonly Pick<WorkspaceModule, 'dir'>[]): string {
  const copies = modules.map((m) => path.join(m.dir, ...rel.split('/'))).filter((p) => existsSync(p)).map(displayPath);
  return (
    `import path ${rel} exists in more than one include dir (${copies.join(', ')}); ` +
    `an import path must name one file: rename one, or drop one of the include dirs`
  );
}

/** `p` relative to the current directory when inside it, otherwise absolute. */
export function displayPath(p: string): string {
  return isInside(p, process.cwd()) ? path.relative(process.cwd(), p) : p;
}

function isInside(child: string, parent: string): boolean {
  const rel = path.relative(parent, child);
  return rel !== '' && !rel.startsWith('..' + path.sep) && rel !== '..' && !path.isAbsolute(rel);
}

function toPosix(p: string): string {
  return p.split(path.sep).join('/');
}

const platformPackages: Record<string, string> = {
  'darwin arm64': '@bufbuild/buf-darwin-arm64',
  'darwin x64': '@bufbuild/buf-darwin-x64',
  'linux arm64': '@bufbuild/buf-linux-aarch64',
  'linux arm': '@bufbuild/buf-linux-armv7',
  'linux x64': '@bufbuild/buf-linux-x64',
  'win32 arm64': '@bufbuild/buf-win32-arm64',
  'win32 x64': '@bufbuild/buf-win32-x64',
};

/** The command found for each `@bufbuild/buf` package (by its package.json). */
const bufCommands = new Map<string, { command: string; prefixArgs: string[] }>();

/**
 * Finds the buf binary installed by the npm package `@bufbuild/buf` (from the user's project
 * first, then from svrkit's install): the native binary of the platform package it depends on
 * (`@bufbuild/buf-linux-x64`, ...), else the binary its install script downloaded, else its
 * JavaScript launcher run with this Node. Never PATH.
 * @returns the command and the arguments that go before buf's own.
 * @throws ToolchainMissingError (toolchain.ts) when `@bufbuild/buf` or `ts-proto` is not installed,
 *   with the one command that installs both.
 */
export function bufCommand(): { command: string; prefixArgs: string[] } {
  const bufPackageJson = resolveToolchain().buf;
  let found = bufCommands.get(bufPackageJson);
  if (found === undefined) bufCommands.set(bufPackageJson, (found = findBuf(bufPackageJson)));
  return found;
}

function findBuf(bufPackageJson: string): { command: string; prefixArgs: string[] } {
  const bufDir = path.dirname(bufPackageJson);
  const exe = process.platform === 'win32' ? '.exe' : '';
  const pkg = platformPackages[`${process.platform} ${os.arch()}`];
  if (pkg) {
    try {
      const bin = createRequire(bufPackageJson).resolve(`${pkg}/bin/buf${exe}`);
      return { command: bin, prefixArgs: [] };
    } catch {
      const downloaded = path.join(bufDir, `downloaded-${pkg.replace('/', '-')}-buf${exe}`);
      if (existsSync(downloaded)) return { command: downloaded, prefixArgs: [] };
    }
  }
  return { command: process.execPath, prefixArgs: [path.join(bufDir, 'bin', 'buf')] };
}
