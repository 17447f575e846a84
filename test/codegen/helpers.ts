/**
 * Shared paths and helpers for the code generator tests.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root, found from this file's location (test/codegen/helpers.ts). */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The fixture .proto files. */
export const protos = path.join(repoRoot, 'test', 'protos');
/** Include dir with helloworld/, kinds/, shop/. */
export const apiDir = path.join(protos, 'api');
/** Include dir with common/v1/money.proto (another include dir and package). */
export const sharedDir = path.join(protos, 'shared');
/** The svrkit runtime entry point that `'svrkit'` stands for. */
export const frameworkIndex = path.join(repoRoot, 'framework', 'index.ts');

/** A fresh directory under test/.tmp (gitignored); `cleanup()` removes it. */
export function tempDir(name: string): { dir: string; cleanup: () => void } {
  const dir = path.join(repoRoot, 'test', '.tmp', `${name}-${process.pid}-${Date.now().toString(36)}`);
  mkdirSync(dir, { recursive: true });
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Runs a Node script (with the same Node) and collects its output. */
export function runNode(args: string[], cwd = repoRoot): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** One tsc diagnostic: `file(line,col): error TSnnnn: message`. */
export interface TscDiagnostic {
  file: string;
  line: number;
  column: number;
  code: string;
  message: string;
}

/**
 * Type-checks a project with the repository's TypeScript (`tsc --noEmit -p tsconfig`).
 * @returns the diagnostics with absolute file paths, and tsc's raw output.
 */
export async function tsc(tsconfig: string): Promise<{ diagnostics: TscDiagnostic[]; output: string }> {
  const bin = path.join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc');
  const dir = path.dirname(tsconfig);
  const { stdout, stderr } = await runNode([bin, '--noEmit', '--pretty', 'false', '-p', tsconfig], dir);
  const output = stdout + stderr;
  const diagnostics: TscDiagnostic[] = [];
  for (const line of output.split('\n')) {
    const m = /^(.+?)\((\d+),(\d+)\): error (TS\d+): (.*)$/.exec(line.trim());
    if (m) diagnostics.push({ file: path.resolve(dir, m[1]!), line: Number(m[2]), column: Number(m[3]), code: m[4]!, message: m[5]! });
    else if (/error TS\d+/.test(line)) diagnostics.push({ file: '', line: 0, column: 0, code: 'TS', message: line.trim() });
  }
  return { diagnostics, output };
}

/**
 * Type-checks `include` (globs relative to `dir`) twice: with `strictCompilerOptions(dir)` and with
 * stricter user settings on top (exactOptionalPropertyTypes, noUncheckedIndexedAccess, unused
 * locals and parameters, ...). Writes `tsconfig.json` and `tsconfig.pedantic.json` into `dir`.
 * @returns both tsc results.
 */
export async function typecheckStrictAndPedantic(dir: string, include: string[]): Promise<[Awaited<ReturnType<typeof tsc>>, Awaited<ReturnType<typeof tsc>>]> {
  const base = strictCompilerOptions(dir);
  const pedantic = {
    ...base,
    verbatimModuleSyntax: true,
    noUncheckedIndexedAccess: true,
    exactOptionalPropertyTypes: true,
    noPropertyAccessFromIndexSignature: true,
    noImplicitReturns: true,
    noUnusedLocals: true,
    noUnusedParameters: true,
  };
  writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions: base, include }, null, 2));
  writeFileSync(path.join(dir, 'tsconfig.pedantic.json'), JSON.stringify({ compilerOptions: pedantic, include }, null, 2));
  return Promise.all([tsc(path.join(dir, 'tsconfig.json')), tsc(path.join(dir, 'tsconfig.pedantic.json'))]);
}

/**
 * The compiler options the codegen tests type-check generated code with: strict NodeNext, with
 * `svrkit` mapped to this repository's framework (paths relative to `dir`, the tsconfig's folder).
 * @returns a `compilerOptions` object.
 */
export function strictCompilerOptions(dir: string): Record<string, unknown> {
  return {
    target: 'ES2022',
    lib: ['ES2022'],
    module: 'NodeNext',
    moduleResolution: 'NodeNext',
    strict: true,
    noImplicitOverride: true,
    isolatedModules: true,
    esModuleInterop: true,
    skipLibCheck: true,
    types: ['node'],
    noEmit: true,
    paths: { svrkit: [path.relative(dir, frameworkIndex).split(path.sep).join('/')] },
  };
}
