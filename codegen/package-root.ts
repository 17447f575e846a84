/**
 * svrkit's own package, found from one of its modules: the nearest `package.json` above the
 * module (`dist/codegen/x.js` -> the installed package; `codegen/x.ts` run from source -> the
 * repository root), which must be named `svrkit`. Never from the working directory, which is the
 * user's project. The code generator finds its builtin protos and its fallback toolchain here, and
 * `svrkit --version` its version.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The svrkit package a module belongs to. */
export interface SvrkitPackage {
  /** The package's root directory (absolute). */
  readonly root: string;
  /** Its `version`, when the package.json gives a string. */
  readonly version: string | undefined;
}

let cached: SvrkitPackage | null | undefined;

/**
 * Finds the svrkit package a module belongs to.
 * @param moduleUrl - the `file:` URL of a module inside the package; default this module's (the
 *   result is then cached).
 * @returns the package; undefined when the URL is not a file URL, or the nearest package.json is
 *   unreadable, not JSON or not named `svrkit`, or there is none. Never throws.
 */
export function svrkitPackage(moduleUrl?: string): SvrkitPackage | undefined {
  if (moduleUrl === undefined) {
    if (cached === undefined) cached = find(import.meta.url) ?? null;
    return cached ?? undefined;
  }
  return find(moduleUrl);
}

function find(moduleUrl: string): SvrkitPackage | undefined {
  let dir: string;
  try {
    dir = path.dirname(fileURLToPath(moduleUrl));
  } catch {
    return undefined;
  }
  for (;;) {
    let text: string | undefined;
    try {
      text = readFileSync(path.join(dir, 'package.json'), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return undefined; // there, but unreadable
    }
    if (text !== undefined) {
      try {
        const pkg = JSON.parse(text) as { name?: unknown; version?: unknown };
        if (pkg.name !== 'svrkit') return undefined;
        return { root: dir, version: typeof pkg.version === 'string' ? pkg.version : undefined };
      } catch {
        return undefined;
      }
    }
    const parent = path.dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}
