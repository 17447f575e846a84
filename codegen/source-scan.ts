/**
 * A light scan of a generated TypeScript module (ts-proto's output): which top-level names it
 * declares or imports, and where its import block ends. ts-proto's output is formatted (top-level
 * statements start at column 0), which is what makes a scan without a parser reliable here.
 */

/** What {@link scanModule} found. */
export interface ModuleScan {
  /** Every top-level name bound in the module: declarations (exported or not) and import bindings. */
  readonly bound: ReadonlySet<string>;
  /** Names the module exports with a declaration (`export const X`, `export interface X`, `export type X`, ...). */
  readonly exported: ReadonlySet<string>;
  /** Named imports: module specifier -> imported name -> local name. */
  readonly namedImports: ReadonlyMap<string, ReadonlyMap<string, string>>;
  /** Offset just after the last top-level import statement (0 when there is none). */
  readonly importsEnd: number;
}

const declaration =
  /^(export\s+)?(?:declare\s+)?(?:default\s+)?(?:abstract\s+)?(?:const\s+enum|const|let|var|function\*?|async\s+function\*?|class|interface|type|enum|namespace)\s+([A-Za-z_$][\w$]*)/gm;
const importFrom = /^import\s+(type\s+)?([^;]*?)\s+from\s+(["'])([^"']+)\3\s*;?/gm;
const sideEffectImport = /^import\s+(["'])[^"']+\1\s*;?/gm;

/** Scans `source`; see {@link ModuleScan}. */
export function scanModule(source: string): ModuleScan {
  const bound = new Set<string>();
  const exported = new Set<string>();
  const namedImports = new Map<string, Map<string, string>>();
  let importsEnd = 0;

  for (const m of source.matchAll(declaration)) {
    bound.add(m[2]!);
    if (m[1]) exported.add(m[2]!);
  }
  for (const m of source.matchAll(sideEffectImport)) importsEnd = Math.max(importsEnd, m.index + m[0].length);
  for (const m of source.matchAll(importFrom)) {
    importsEnd = Math.max(importsEnd, m.index + m[0].length);
    const clause = m[2]!.trim();
    const spec = m[4]!;
    const braces = /\{([^}]*)\}/.exec(clause);
    const outside = clause.replace(/\{[^}]*\}/, '').replace(/,/g, ' ').trim();
    const ns = /^\*\s+as\s+([A-Za-z_$][\w$]*)$/.exec(outside);
    if (ns) bound.add(ns[1]!);
    else if (/^[A-Za-z_$][\w$]*$/.test(outside)) bound.add(outside);
    if (braces) {
      const names = namedImports.get(spec) ?? new Map<string, string>();
      namedImports.set(spec, names);
      for (const part of braces[1]!.split(',')) {
        const spec2 = part.trim().replace(/^type\s+/, '');
        if (!spec2) continue;
        const as = /^([\w$]+)\s+as\s+([\w$]+)$/.exec(spec2);
        const [imported, local] = as ? [as[1]!, as[2]!] : [spec2, spec2];
        names.set(imported, local);
        bound.add(local);
      }
    }
  }
  return { bound, exported, namedImports, importsEnd };
}
