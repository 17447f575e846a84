/**
 * Step 2 of `svrkit gen`: message code from ts-proto, run as a protoc plugin.
 *
 * The protoc plugin protocol (google/protobuf/compiler/plugin.proto): the compiler writes a serialized
 * `CodeGeneratorRequest` (files to generate, every file they need, a parameter string) to the
 * plugin's stdin; the plugin writes a serialized `CodeGeneratorResponse` (generated files, or an
 * error) to its stdout. We play the compiler's part with the descriptors buf produced, and run
 * ts-proto's `protoc-gen-ts_proto` (https://github.com/stephenh/ts-proto) with this Node.
 */
import path from 'node:path';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import {
  CodeGeneratorRequestSchema,
  CodeGeneratorResponseSchema,
  type FileDescriptorSet,
} from '@bufbuild/protobuf/wkt';
import { run } from './process.js';
import { resolveToolchain } from './toolchain.js';

/**
 * ts-proto options svrkit always passes (see the ts-proto README for each):
 * - `esModuleInterop=true`, `importSuffix=.js`: imports that work under ESM with `module`/`moduleResolution` NodeNext.
 * - `outputServices=false`: no ts-proto service code; svrkit emits its own (see services.ts).
 * - `forceLong=bigint`: 64-bit integers are `bigint`, exact over their whole range.
 * - `useDate=true`: `google.protobuf.Timestamp` fields are `Date`.
 * - `oneof=unions-value`: a oneof is one property holding `{ $case: 'member', value }` or `undefined`,
 *   so that the type allows one member at a time (the default gives each member its own optional
 *   property, and both could be set).
 * - `annotateFilesWithVersion=false`: no tool versions in headers, so output only changes when the .proto does
 *   (ts-proto would also print "protoc unknown", since buf is not protoc).
 */
export const defaultTsProtoOptions: readonly string[] = [
  'esModuleInterop=true',
  'importSuffix=.js',
  'outputServices=false',
  'forceLong=bigint',
  'useDate=true',
  'oneof=unions-value',
  'annotateFilesWithVersion=false',
];

/**
 * Combines option lists (`key=value` strings) into ts-proto's comma-separated parameter: a later
 * value for a key replaces an earlier one (ts-proto itself would turn a repeated key into a list).
 * Options that are not `key=value` are kept as given. Commas inside one entry split it into several.
 */
export function mergeTsProtoOptions(...lists: readonly (readonly string[])[]): Map<string, string> {
  const merged = new Map<string, string>();
  for (const list of lists) {
    for (const entry of list.flatMap((e) => e.split(','))) {
      const option = entry.trim();
      if (!option) continue;
      const eq = option.indexOf('=');
      const key = eq < 0 ? option : option.slice(0, eq);
      merged.delete(key); // keep insertion order = order of the last occurrence
      merged.set(key, eq < 0 ? '' : option.slice(eq + 1));
    }
  }
  return merged;
}

/** The parameter string for a merged option map: `k=v,k2=v2`. */
export function tsProtoParameter(options: ReadonlyMap<string, string>): string {
  return [...options].map(([k, v]) => (v === '' ? k : `${k}=${v}`)).join(',');
}

/** One file produced by the plugin. */
export interface PluginFile {
  /** Output path relative to the output dir, `/`-separated, e.g. `helloworld/greeter.ts`. */
  readonly name: string;
  /** The TypeScript source, as ts-proto produced it. */
  readonly content: string;
}

/**
 * Runs ts-proto over a compiled descriptor set.
 *
 * @param fileSet every file needed, imports first (the `proto_file` of the request, in this order).
 * @param filesToGenerate names of the files to generate (`file_to_generate`); ts-proto also emits the
 *   files they import, transitively.
 * @param parameter ts-proto's option string (see {@link tsProtoParameter}).
 * @returns the generated files and whatever ts-proto wrote on stderr (one warning per line).
 * @throws ToolchainMissingError (toolchain.ts) when `ts-proto` or `@bufbuild/buf` is not installed,
 *   with the one command that installs both.
 * @throws Error when ts-proto exits non-zero, or answers with an error.
 */
export async function runTsProto(
  fileSet: FileDescriptorSet,
  filesToGenerate: readonly string[],
  parameter: string,
): Promise<{ files: PluginFile[]; warnings: string[] }> {
  const request = create(CodeGeneratorRequestSchema, {
    fileToGenerate: [...filesToGenerate],
    parameter,
    protoFile: fileSet.file,
  });
  const script = tsProtoScript();
  const result = await run(process.execPath, [script], process.cwd(), toBinary(CodeGeneratorRequestSchema, request));
  if (result.code !== 0) {
    throw new Error(`svrkit gen: ts-proto failed (exit code ${result.code}): ${result.stderr.trim() || '(no output)'}`);
  }
  let response;
  try {
    response = fromBinary(CodeGeneratorResponseSchema, result.stdoutBytes);
  } catch (e) {
    throw new Error(`svrkit gen: ts-proto returned an unreadable response: ${(e as Error).message}`);
  }
  if (response.error) throw new Error(`svrkit gen: ts-proto: ${response.error}`);
  const files: PluginFile[] = [];
  for (const f of response.file) {
    if (f.insertionPoint) throw new Error(`svrkit gen: ts-proto used an insertion point (${f.insertionPoint}), which svrkit does not support`);
    files.push({ name: f.name, content: f.content });
  }
  const warnings = result.stderr
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .map((l) => `svrkit gen: ts-proto: ${l}`);
  return { files, warnings };
}

/** Path of ts-proto's plugin script (`protoc-gen-ts_proto`), from the user's project first, then from svrkit's install. */
function tsProtoScript(): string {
  return path.join(path.dirname(resolveToolchain().tsProto), 'protoc-gen-ts_proto');
}
