/**
 * A small command line for the code generator (the public `svrkit gen` command calls the same
 * `generate()` with the same options):
 *
 *   tsx codegen/cli.ts <files...> --out <dir> [-I <dir>]... [--runtime-import <spec>]
 *
 * Prints the files written on stdout and warnings on stderr. On failure prints the error (for .proto
 * errors, one `file:line:column: message` line each) on stderr and exits with code 1.
 */
import { pathToFileURL } from 'node:url';
import { Command } from 'commander';
import { displayPath } from './compile.js';
import { generate } from './index.js';

/**
 * Runs the CLI with `argv` (as `process.argv`: node, script, then arguments).
 * @returns the exit code: 0 on success, 1 on failure.
 */
export async function main(argv: readonly string[]): Promise<number> {
  const program = new Command()
    .name('svrkit-gen')
    .description('Generate TypeScript messages, services and clients from .proto files')
    .argument('<files...>', '.proto files to generate')
    .requiredOption('--out <dir>', 'output directory')
    .option('-I, --include <dir>', 'include dir for imports (repeatable; default: each file\'s directory)', collect, [] as string[])
    .option('--runtime-import <spec>', 'module the generated services import svrkit from', 'svrkit')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  let files: string[];
  let opts: { out: string; include: string[]; runtimeImport: string };
  try {
    program.parse([...argv]);
    files = program.args;
    opts = program.opts();
  } catch (e) {
    const code = (e as { exitCode?: number }).exitCode;
    return code === 0 ? 0 : 1;
  }
  try {
    const result = await generate({ files, outDir: opts.out, includeDirs: opts.include, runtimeImport: opts.runtimeImport });
    for (const w of result.warnings) process.stderr.write(w + '\n');
    for (const f of result.written) process.stdout.write(displayPath(f) + '\n');
    return 0;
  } catch (e) {
    process.stderr.write(((e as Error).message ?? String(e)) + '\n');
    return 1;
  }
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await main(process.argv);
}
