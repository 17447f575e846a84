/**
 * The code generator's toolchain: the npm packages `svrkit gen` runs, `@bufbuild/buf` (the
 * compiler) and `ts-proto` (the message generator). They are needed only at development time, so
 * an app installs them as its own dev dependencies (connect-es works the same way with
 * `@bufbuild/buf` and `protoc-gen-es`); a production install of svrkit does without them.
 *
 * They are looked up from the user's project (the working directory) first, then from where
 * svrkit itself is installed (this repository has them as dev dependencies). When one is missing,
 * `svrkit gen` fails with one line giving the one command that installs both
 * ({@link TOOLCHAIN_INSTALL_COMMAND}).
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { svrkitPackage } from './package-root.js';

/**
 * The toolchain's packages with the version ranges svrkit is built and tested with (the same
 * ranges as in svrkit's package.json).
 */
export const CODEGEN_TOOLCHAIN: readonly { readonly name: string; readonly range: string }[] = [
  { name: '@bufbuild/buf', range: '^1.75.0' },
  { name: 'ts-proto', range: '^2.18.0' },
];

/** The one command that installs the whole toolchain into the user's project. */
export const TOOLCHAIN_INSTALL_COMMAND = `npm install --save-dev ${CODEGEN_TOOLCHAIN.map((p) => `${p.name}@${p.range}`).join(' ')}`;

/**
 * Resolves a module request the way `require.resolve` does from a file in `fromDir`.
 * @returns the absolute path of the file found.
 * @throws Error when nothing is found (any error counts as "not found there").
 */
export type ModuleResolver = (request: string, fromDir: string) => string;

/** Node's own resolution (`createRequire(<fromDir>/...).resolve(request)`). */
export const nodeResolver: ModuleResolver = (request, fromDir) => createRequire(path.join(fromDir, '__svrkit_resolve__.js')).resolve(request);

/** The toolchain's packages as found: each one's `package.json`, absolute. */
export interface Toolchain {
  /** `@bufbuild/buf/package.json`. */
  readonly buf: string;
  /** `ts-proto/package.json`. */
  readonly tsProto: string;
}

/** A package of the toolchain is not installed where `svrkit gen` looks. */
export class ToolchainMissingError extends Error {
  /** The packages not found, e.g. `['@bufbuild/buf']`. Never empty. */
  readonly missing: readonly string[];
  /** The directories looked from, in order. */
  readonly searched: readonly string[];

  /**
   * @param missing - the packages not found (at least one).
   * @param searched - the directories looked from, in order; the first is the user's project.
   */
  constructor(missing: readonly string[], searched: readonly string[]) {
    const names = missing.length === 1 ? `${missing[0]}, which is` : `${missing.join(' and ')}, which are`;
    super(
      `svrkit gen: the code generator needs ${names} not installed (looked from ${searched.join(' and from ')}); ` +
        `install the toolchain in your project with: ${TOOLCHAIN_INSTALL_COMMAND}`,
    );
    this.name = 'ToolchainMissingError';
    this.missing = missing;
    this.searched = searched;
  }
}

/**
 * Where the toolchain is looked up from, in order: the working directory (the user's project),
 * then svrkit's own package root (package-root.ts; this module's dir if that is not found).
 * @returns absolute directories, without duplicates.
 */
export function toolchainSearchDirs(): string[] {
  const own = svrkitPackage()?.root ?? path.dirname(fileURLToPath(import.meta.url));
  const dirs = [process.cwd(), own];
  return dirs.filter((d, i) => dirs.indexOf(d) === i);
}

/**
 * Finds the toolchain's packages, each from the first directory of `dirs` it resolves from.
 * @param resolve - how a request is resolved from a directory; default Node's ({@link nodeResolver}).
 * @param dirs - the directories to look from, in order; default {@link toolchainSearchDirs}().
 * @returns the `package.json` of each package.
 * @throws ToolchainMissingError naming every package found from none of `dirs`, with the one
 *   install command ({@link TOOLCHAIN_INSTALL_COMMAND}) in its message.
 */
export function resolveToolchain(resolve: ModuleResolver = nodeResolver, dirs: readonly string[] = toolchainSearchDirs()): Toolchain {
  const found = new Map<string, string>();
  const missing: string[] = [];
  for (const { name } of CODEGEN_TOOLCHAIN) {
    const file = resolveFromFirst(resolve, `${name}/package.json`, dirs);
    if (file === undefined) missing.push(name);
    else found.set(name, file);
  }
  if (missing.length > 0) throw new ToolchainMissingError(missing, dirs);
  return { buf: found.get('@bufbuild/buf')!, tsProto: found.get('ts-proto')! };
}

function resolveFromFirst(resolve: ModuleResolver, request: string, dirs: readonly string[]): string | undefined {
  for (const dir of dirs) {
    try {
      return resolve(request, dir);
    } catch {
      // not installed there: try the next dir
    }
  }
  return undefined;
}
