/**
 * The version `svrkit --version` prints: svrkit's own, read from the package.json of the svrkit
 * package this module is part of (codegen/package-root.ts), never from the working directory,
 * which is the user's project.
 */
import { svrkitPackage } from '../../codegen/package-root.js';

/**
 * Finds the `version` of the svrkit package a module belongs to (the nearest `package.json` above
 * the module, which must be named `svrkit`).
 * @param moduleUrl - the `file:` URL of a module inside the package; default this module's.
 * @returns the version string, e.g. `'0.1.0'`; undefined when the nearest package.json is missing,
 *   unreadable, not JSON, not named `svrkit`, or has no string `version`. Never throws.
 */
export function svrkitVersion(moduleUrl: string = import.meta.url): string | undefined {
  return svrkitPackage(moduleUrl)?.version;
}
