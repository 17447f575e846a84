/**
 * The version `svrkit --version` prints: svrkit's own, read from the package.json of the svrkit
 * package this module is part of (found from the module's location, never from the working
 * directory, which is the user's project).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Finds the `version` of the svrkit package a module belongs to: walks up from the module's
 * directory to the nearest `package.json` (`dist/framework/cli/version.js` -> the package root;
 * `framework/cli/version.ts` when run from source -> the repository root) and reads it.
 *
 * @param moduleUrl - the `file:` URL of a module inside the package; default this module's.
 * @returns the version string, e.g. `'0.1.0'`; undefined when the nearest package.json is missing,
 *   unreadable, not JSON, not named `svrkit`, or has no string `version`. Never throws.
 */
export function svrkitVersion(moduleUrl: string = import.meta.url): string | undefined {
  let dir: string;
  try {
    dir = path.dirname(fileURLToPath(moduleUrl));
  } catch {
    return undefined;
  }
  for (;;) {
    const file = path.join(dir, 'package.json');
    let text: string | undefined;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return undefined; // there, but unreadable
      text = undefined; // none here: look further up
    }
    if (text !== undefined) {
      try {
        const pkg = JSON.parse(text) as { name?: unknown; version?: unknown };
        return pkg.name === 'svrkit' && typeof pkg.version === 'string' ? pkg.version : undefined;
      } catch {
        return undefined;
      }
    }
    const parent = path.dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}
