/**
 * Errors thrown by the code generator.
 */

/** One problem the protobuf compiler (buf) found in a .proto file. */
export interface ProtoDiagnostic {
  /**
   * The .proto file the problem is in: relative to `process.cwd()` when the file is inside it,
   * otherwise absolute. Well-known types bundled with buf keep their import path
   * (e.g. `google/protobuf/timestamp.proto`).
   */
  readonly file: string;
  /** 1-based line number. */
  readonly line: number;
  /** 1-based column number (buf counts characters, tabs count as one). */
  readonly column: number;
  /** The compiler's message, e.g. ``cannot find `Foo` in this scope``. */
  readonly message: string;
}

/**
 * The .proto files do not compile: a syntax error, an unknown type, a duplicate field number,
 * a missing import, ... Reported by buf (https://buf.build), svrkit's protobuf compiler.
 *
 * `message` has one line per diagnostic, `file:line:column: message`, the format editors and
 * terminals turn into links. `diagnostics` holds the same information as data.
 */
export class ProtoCompileError extends Error {
  /** Every problem found, in the order buf reported them. Never empty. */
  readonly diagnostics: readonly ProtoDiagnostic[];

  /** @param diagnostics the problems, at least one; the message is built from them. */
  constructor(diagnostics: readonly ProtoDiagnostic[]) {
    super(diagnostics.map(formatDiagnostic).join('\n'));
    this.name = 'ProtoCompileError';
    this.diagnostics = diagnostics;
  }
}

/** Formats one diagnostic as `file:line:column: message`. */
export function formatDiagnostic(d: ProtoDiagnostic): string {
  return `${d.file}:${d.line}:${d.column}: ${d.message}`;
}
