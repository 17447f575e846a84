/**
 * Calls of every kind as the CLI makes them, on methods resolved through reflection
 * (client/dynamic.ts): `svrkit call` (`callCommand`) and the call `svrkit bench` repeats
 * (`benchCallFor`, `benchSample`).
 *
 * `svrkit call` by the method's kind:
 * - unary: the request is the JSON argument (default `{}`; `-` reads it from stdin, `@path` from
 *   that file); the reply is printed as indented JSON.
 * - server-streaming: the request as for unary; each response is printed as one line of JSON
 *   (NDJSON) as soon as it arrives.
 * - client-streaming: the requests are read from stdin (no argument, or `-`), or from the file of
 *   an `@path` argument, one JSON value per line (NDJSON); the input's end half-closes the stream;
 *   the reply is printed as for unary.
 * - bidi-streaming: requests from stdin or `@path` as for client-streaming; responses printed as
 *   NDJSON as they arrive, while the input is still being read.
 *
 * An `@path` file is opened before anything is sent, so a missing or unreadable file fails at once,
 * naming the path.
 *
 * A failure mid-stream (the server's status, the deadline, a malformed input line) is thrown after
 * the responses already printed; the caller reports it. When stdout's reader goes away (EPIPE, as
 * with `| head -3`), the stream is cancelled and the call ends quietly, without an error.
 */
import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { InvalidArgumentError } from 'commander';
import type { CallOptions, Channel } from '../client/channel.js';
import { resolveMethod, type DynamicMethod, type JsonValue } from '../client/dynamic.js';
import type { MethodDefinition, MethodKind } from '../wire/definition.js';
import type { Metadata } from '../wire/status.js';
import { errors } from '../errors.js';
import { parseJsonArgument } from './flags.js';
import { LineWriter, readAllText, readNdjson } from './ndjson.js';

/** Options of `callCommand` (the `svrkit call` flags). */
export interface CallCommandOptions {
  /** Deadline of the whole call, reflection lookup and stream included (ms). */
  timeoutMs: number;
  /** Request metadata. */
  metadata: Metadata;
  /** Metadata keys marked to flow on to downstream calls. */
  propagate: string[];
}

/** Where `callCommand` reads requests and writes responses and notices. */
export interface CallStdio {
  /** Requests for `-` and for client-streaming and bidi methods; destroyed once a streamed call ends. */
  stdin: NodeJS.ReadableStream & { isTTY?: boolean; destroy?(): void };
  /** Replies. */
  stdout: NodeJS.WritableStream;
  /** Notices (the hint shown when requests are read from a terminal). */
  stderr: NodeJS.WritableStream;
}

/** The kind as written in messages: `client-streaming`, ... */
function kindName(kind: MethodKind): string {
  return kind.replace('_', '-');
}

/**
 * Runs `svrkit call`: resolves the method through reflection and calls it the way its kind needs
 * (see the module comment), printing to `io.stdout`.
 * @param channel - a channel to the server (the caller closes it).
 * @param methodName - `package.Service/Method`.
 * @param json - the request argument: JSON, `'-'` (read the request from stdin), `'@path'` (read
 *   it from that file: one JSON value for unary and server-streaming, NDJSON requests for
 *   client-streaming and bidi), or undefined (`{}` for unary and server-streaming; client-streaming
 *   and bidi read stdin).
 * @param options - deadline, metadata, propagated keys.
 * @param io - stdin, stdout, stderr (default: the process's).
 * @returns when the call is done and printed, or when stdout's reader went away (quietly).
 * @throws InvalidArgumentError when the JSON argument is not JSON, or when a JSON argument is
 *   given for a client-streaming or bidi method; when an `@path` file does not exist, cannot be
 *   read or is a directory (naming the path, before connecting), or, for unary and
 *   server-streaming, does not hold JSON (naming the file); RpcError for a failed call (reflection lookup
 *   included), thrown after the responses that came before it were printed; `NdjsonError` for a
 *   stdin (or `@path` file) line that is not JSON (the stream is cancelled), and RpcError
 *   INVALID_ARGUMENT naming the line for one that does not fit the request type; Error when stdout
 *   fails otherwise than by its reader leaving.
 */
export async function callCommand(
  channel: Channel,
  methodName: string,
  json: string | undefined,
  options: CallCommandOptions,
  io: CallStdio = { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr },
): Promise<void> {
  const input: RequestInput =
    json === undefined ? { from: 'none' }
    : json === '-' ? { from: 'stdin' }
    : json.startsWith('@') ? { from: 'file', file: await openRequestFile(json.slice(1)) }
    : { from: 'argument', value: parseJsonArgument(json) };
  try {
    await callWith(channel, methodName, input, options, io);
  } finally {
    if (input.from === 'file') await input.file.handle.close().catch(() => undefined);
  }
}

/** Where the request(s) of a call come from, by the request argument. */
type RequestInput =
  | { readonly from: 'none' } // no argument: `{}`, or stdin for client-streaming and bidi
  | { readonly from: 'stdin' } // `-`
  | { readonly from: 'file'; readonly file: RequestFile } // `@path`
  | { readonly from: 'argument'; readonly value: JsonValue }; // JSON

/** The file of an `@path` request argument, open. */
interface RequestFile {
  /** The path as the user gave it (after the `@`), for messages. */
  readonly path: string;
  readonly handle: FileHandle;
}

/**
 * Opens the file of an `@path` request argument and checks that it is a readable file.
 * @param file - the path after the `@`, relative to the working directory or absolute.
 * @returns the open file; the caller closes it.
 * @throws InvalidArgumentError naming the path when it is empty, does not exist, cannot be read,
 *   or is not a regular file (a directory, ...).
 */
async function openRequestFile(file: string): Promise<RequestFile> {
  if (file === '') throw new InvalidArgumentError('@ must be followed by a file name, e.g. @request.json');
  let handle: FileHandle;
  try {
    handle = await fsp.open(file, 'r');
  } catch (err) {
    throw new InvalidArgumentError(requestFileProblem(file, err));
  }
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) throw new InvalidArgumentError(`request file ${file} is ${stat.isDirectory() ? 'a directory' : 'not a regular file'}`);
  } catch (err) {
    await handle.close().catch(() => undefined);
    throw err instanceof InvalidArgumentError ? err : new InvalidArgumentError(requestFileProblem(file, err));
  }
  return { path: file, handle };
}

/** Why a request file cannot be read, as a message naming it. */
function requestFileProblem(file: string, err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return `request file ${file} does not exist`;
  if (code === 'EACCES' || code === 'EPERM') return `cannot read request file ${file}: permission denied`;
  if (code === 'EISDIR') return `request file ${file} is a directory`;
  return `cannot read request file ${file}: ${(err as Error).message}`;
}

/** `callCommand` once the request argument is known (and its file, if any, open). */
async function callWith(channel: Channel, methodName: string, input: RequestInput, options: CallCommandOptions, io: CallStdio): Promise<void> {
  const file = input.from === 'file' ? input.file : undefined;
  const deadline = Date.now() + options.timeoutMs;
  const m = await resolveMethod(channel, methodName, { deadline });
  const abort = new AbortController();
  const callOptions: CallOptions = { deadline, metadata: options.metadata, propagate: options.propagate, signal: abort.signal };
  const one = async (): Promise<JsonValue> => {
    if (input.from === 'none') return {};
    if (input.from === 'argument') return input.value;
    if (input.from === 'stdin') return parseJsonArgument(await readAllText(io.stdin as AsyncIterable<string | Uint8Array>), 'the request on stdin');
    const file = input.file;
    let text: string;
    try {
      text = await file.handle.readFile('utf8');
    } catch (err) {
      throw new InvalidArgumentError(requestFileProblem(file.path, err));
    }
    return parseJsonArgument(text, `the request in ${file.path}`);
  };

  switch (m.kind) {
    case 'unary': {
      const reply = await channel.unary(m.json, await one(), callOptions);
      io.stdout.write(JSON.stringify(reply, null, 2) + '\n');
      return;
    }
    case 'server_streaming': {
      const request = await one();
      await printLines(io.stdout, abort, () => channel.serverStream(m.json, request, callOptions));
      return;
    }
    case 'client_streaming':
    case 'bidi_streaming': {
      if (input.from === 'argument') {
        throw new InvalidArgumentError(
          `${m.path} is a ${kindName(m.kind)} method: its requests are read from stdin, one JSON object per line (NDJSON); ` +
            'leave out the request argument (or give -), or give @file to read them from a file',
        );
      }
      if (file === undefined && io.stdin.isTTY === true) {
        io.stderr.write(`svrkit call: reading ${m.requestTypeName} requests from stdin, one JSON object per line; end with Ctrl-D\n`);
      }
      const failure: { error?: unknown } = {};
      const lines = file === undefined ? (io.stdin as AsyncIterable<string | Uint8Array>) : (file.handle.createReadStream({ autoClose: false }) as AsyncIterable<Buffer>);
      const requests = encodedRequests(m, lines, failure, file?.path ?? 'stdin');
      // Requests go as encoded bytes (so a bad line is named by its number); responses come as JSON.
      const def: MethodDefinition<Uint8Array, JsonValue> = { ...m.json, requestType: m.raw.requestType };
      try {
        if (m.kind === 'client_streaming') {
          const reply = await channel.clientStream(def, requests, callOptions);
          io.stdout.write(JSON.stringify(reply, null, 2) + '\n');
        } else {
          await printLines(io.stdout, abort, () => channel.bidiStream(def, requests, callOptions));
        }
      } catch (err) {
        // The call was cancelled because its input failed: report why, not the cancellation.
        throw failure.error ?? err;
      } finally {
        // The call is over (the server may have ended it before stdin did): stop reading, so a
        // terminal or a pipe left open does not keep the process alive. (A file is closed by
        // callCommand.)
        if (file === undefined) io.stdin.destroy?.();
      }
      return;
    }
  }
}

/**
 * Prints each response of a stream as one line of JSON as it arrives. When stdout's reader goes
 * away the stream is cancelled (through `abort`) and this returns quietly.
 * @throws RpcError when the stream fails; Error when stdout fails for another reason.
 */
async function printLines(stdout: NodeJS.WritableStream, abort: AbortController, open: () => AsyncIterable<JsonValue>): Promise<void> {
  const writer = new LineWriter(stdout, () => abort.abort(errors.STDOUT_CLOSED()));
  try {
    for await (const response of open()) {
      const drained = writer.writeLine(JSON.stringify(response));
      if (drained !== undefined) await drained;
      if (writer.closed) break; // leaving the loop cancels the stream
    }
  } catch (err) {
    if (!writer.closed) throw err;
  }
  if (writer.closed && !writer.gone) throw new Error(`cannot write to stdout: ${writer.error?.message ?? 'unknown error'}`);
}

/**
 * Requests for a client-streaming or bidi call: NDJSON lines from stdin or a file (`source` names
 * it in messages), each encoded to the request type. The first error (a line that is not JSON or
 * does not fit, or the input failing) is kept in `input.error` and thrown, which cancels the call.
 */
async function* encodedRequests(
  m: DynamicMethod,
  lines: AsyncIterable<string | Uint8Array>,
  input: { error?: unknown },
  source: string,
): AsyncGenerator<Uint8Array, void, undefined> {
  try {
    for await (const { line, value } of readNdjson(lines, { source })) {
      let bytes: Uint8Array;
      try {
        bytes = m.encodeRequest(value);
      } catch (err) {
        throw errors.INVALID_STDIN_LINE.with({ cause: err }, line, err, source);
      }
      yield bytes;
    }
  } catch (err) {
    input.error ??= err;
    throw err;
  }
}

/** What `svrkit bench` repeats: one call of the method, whatever its kind. */
export interface BenchCall {
  /** Makes one call: a unary call, or one whole stream read to its end. */
  call: () => Promise<unknown>;
  /**
   * For server-streaming and bidi methods: the number of response messages all calls have read so
   * far (failed streams included). Absent for unary and client-streaming methods.
   */
  messageCount?: () => number;
}

/**
 * Builds the call `svrkit bench` repeats, on raw bytes (nothing is encoded or decoded per call):
 * - unary: one call with `request`;
 * - server-streaming: one stream with `request`, read to its end, counting the messages;
 * - client-streaming: one stream sending `request` as its only message, then half-closing;
 * - bidi-streaming: the same, reading the responses to the end and counting them.
 * @param channel - a channel to the server.
 * @param m - the method, from `resolveMethod`.
 * @param request - the encoded request (`m.encodeRequest(json)`).
 * @param options - call options for every call (a deadline covers a whole stream).
 * @returns the call and, for methods whose responses stream, a message counter.
 */
export function benchCallFor(channel: Channel, m: DynamicMethod, request: Uint8Array, options: CallOptions): BenchCall {
  const raw = m.raw;
  const requests = [request];
  switch (m.kind) {
    case 'unary':
      return { call: () => channel.unary(raw, request, options) };
    case 'client_streaming':
      return { call: () => channel.clientStream(raw, requests, options) };
    case 'server_streaming':
    case 'bidi_streaming': {
      let messages = 0;
      const open = m.kind === 'server_streaming' ? () => channel.serverStream(raw, request, options) : () => channel.bidiStream(raw, requests, options);
      return {
        call: async () => {
          for await (const _ of open()) messages++;
        },
        messageCount: () => messages,
      };
    }
  }
}

/**
 * Makes one call as `benchCallFor` does, decoding what comes back: proves the request is accepted
 * and shows what the method answers.
 * @param channel - a channel to the server.
 * @param m - the method.
 * @param request - the encoded request.
 * @param options - call options.
 * @returns a one-line description: `sample reply: {...}`, or for a stream whose responses stream
 *   `sample stream: 3 messages, the first: {...}`.
 * @throws RpcError when the call fails.
 */
export async function benchSample(channel: Channel, m: DynamicMethod, request: Uint8Array, options: CallOptions): Promise<string> {
  const def: MethodDefinition<Uint8Array, JsonValue> = { ...m.json, requestType: m.raw.requestType };
  switch (m.kind) {
    case 'unary':
      return `sample reply: ${JSON.stringify(m.decodeResponse(await channel.unary(m.raw, request, options)))}`;
    case 'client_streaming':
      return `sample reply: ${JSON.stringify(await channel.clientStream(def, [request], options))}`;
    case 'server_streaming':
    case 'bidi_streaming': {
      let first: JsonValue | undefined;
      let n = 0;
      const responses = m.kind === 'server_streaming' ? channel.serverStream(def, request, options) : channel.bidiStream(def, [request], options);
      for await (const r of responses) {
        if (n++ === 0) first = r;
      }
      return `sample stream: ${n} message${n === 1 ? '' : 's'}${n > 0 ? `, the first: ${JSON.stringify(first)}` : ''}`;
    }
  }
}
