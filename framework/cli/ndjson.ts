/**
 * NDJSON (newline-delimited JSON, one JSON value per line) in and out, for `svrkit call` on
 * streaming methods: requests are read from stdin as NDJSON, streamed responses are written to
 * stdout one per line as they arrive.
 *
 * - `readNdjson` parses lines lazily: it pulls from its input only when asked for the next value,
 *   so a stream that is not ready for more requests pauses the reading (backpressure reaches the
 *   pipe). Blank lines are skipped; a line that is not JSON ends the reading with an error naming
 *   its line number.
 * - `LineWriter` writes one line per value and notices when the reader of the output went away
 *   (EPIPE, as when piping into `head -3`): it stops writing and tells its owner, which ends the
 *   call quietly instead of crashing on an unhandled 'error' event.
 */
import { StringDecoder } from 'node:string_decoder';
import type { JsonValue } from '../client/dynamic.js';

/** One parsed NDJSON line. */
export interface NdjsonLine {
  /** The line's number in the input, from 1 (blank lines count). */
  readonly line: number;
  /** The JSON value on it. */
  readonly value: JsonValue;
}

/** A line of NDJSON input that is not valid, or is too long. */
export class NdjsonError extends Error {
  override readonly name = 'NdjsonError';
  /**
   * @param message - the whole message, naming the source and the line.
   * @param line - the offending line's number (from 1).
   */
  constructor(message: string, readonly line: number) {
    super(message);
  }
}

/** Options of `readNdjson`. */
export interface NdjsonReadOptions {
  /** What the input is called in error messages; default `'stdin'`. */
  source?: string;
  /** The longest line accepted, in UTF-16 code units (default 64 Mi). A longer line is an error. */
  maxLineLength?: number;
}

const DEFAULT_MAX_LINE_LENGTH = 64 * 1024 * 1024;

/**
 * Reads NDJSON: one JSON value per line (`\n` or `\r\n`), blank and whitespace-only lines skipped,
 * the last line's newline optional. Input chunks may split lines and UTF-8 characters anywhere.
 *
 * It pulls a chunk from `input` only when the consumer asks for a value that is not already
 * buffered, so it reads no further ahead than needed. Returning early (leaving a `for await`, or
 * `return()` on the generator) returns `input`'s iterator too, which for a Node stream destroys it.
 *
 * @param input - chunks of text or UTF-8 bytes, e.g. `process.stdin`.
 * @param options - the source's name for messages, and the longest line allowed.
 * @returns an async generator of the parsed values with their line numbers.
 * @throws NdjsonError (from the generator, when that line is reached) for a line that is not valid
 *   JSON, naming the source and line number: `stdin line 3: not valid JSON: ...`; or for a line
 *   longer than `maxLineLength`. Errors of `input` itself pass through.
 */
export async function* readNdjson(
  input: AsyncIterable<string | Uint8Array>,
  options: NdjsonReadOptions = {},
): AsyncGenerator<NdjsonLine, void, undefined> {
  const source = options.source ?? 'stdin';
  const maxLineLength = options.maxLineLength ?? DEFAULT_MAX_LINE_LENGTH;
  const decoder = new StringDecoder('utf8');
  let pending = '';
  let lineNo = 0;

  const parse = (text: string): NdjsonLine | undefined => {
    lineNo++;
    if (text.length > maxLineLength) {
      throw new NdjsonError(`${source} line ${lineNo}: longer than ${maxLineLength} characters`, lineNo);
    }
    if (text.trim() === '') return undefined;
    try {
      return { line: lineNo, value: JSON.parse(text) as JsonValue };
    } catch (err) {
      throw new NdjsonError(`${source} line ${lineNo}: not valid JSON: ${(err as Error).message}`, lineNo);
    }
  };

  for await (const chunk of input) {
    const text = typeof chunk === 'string' ? chunk : decoder.write(chunk);
    if (text === '') continue;
    pending = pending === '' ? text : pending + text;
    let start = 0;
    for (;;) {
      const nl = pending.indexOf('\n', start);
      if (nl < 0) break;
      const r = parse(pending.slice(start, nl));
      start = nl + 1;
      if (r !== undefined) yield r;
    }
    pending = start === 0 ? pending : pending.slice(start);
    if (pending.length > maxLineLength) {
      throw new NdjsonError(`${source} line ${lineNo + 1}: longer than ${maxLineLength} characters`, lineNo + 1);
    }
  }
  pending += decoder.end();
  if (pending !== '') {
    const r = parse(pending);
    if (r !== undefined) yield r;
  }
}

/**
 * Reads a whole input as text (for `svrkit call ... -` on a method that takes one request).
 * @param input - chunks of text or UTF-8 bytes, e.g. `process.stdin`.
 * @returns everything it yielded, decoded as UTF-8.
 * @throws whatever `input` throws.
 */
export async function readAllText(input: AsyncIterable<string | Uint8Array>): Promise<string> {
  const decoder = new StringDecoder('utf8');
  let text = '';
  for await (const chunk of input) text += typeof chunk === 'string' ? chunk : decoder.write(chunk);
  return text + decoder.end();
}

/** Error codes meaning the reader of the output has gone away. */
const GONE = new Set(['EPIPE', 'ECONNRESET', 'ERR_STREAM_DESTROYED', 'ERR_STREAM_WRITE_AFTER_END']);

/**
 * Writes lines to a stream (stdout) one `write` per line, so each line reaches the reader as soon
 * as it is written, and stops cleanly when the reader goes away.
 *
 * It listens for the stream's 'error' event from construction on (and never stops: lines still
 * queued when the call ends may fail later), so a broken pipe never becomes an uncaught exception. After a write error `closed` is true, `gone`
 * says whether it was the reader leaving (EPIPE and the like) rather than a real failure, and the
 * `onClose` callback runs once.
 */
export class LineWriter {
  /** True once a write failed: nothing more is written. */
  closed = false;
  /** The write error, once `closed`. */
  error: Error | undefined;
  private drainWaiter: (() => void) | undefined;
  private readonly onError = (err: Error): void => this.close(err);
  private readonly onDrain = (): void => this.wake();

  /**
   * @param stream - where to write, e.g. `process.stdout`.
   * @param onClose - called once when a write fails (the reader went away, or another error).
   */
  constructor(
    private readonly stream: NodeJS.WritableStream,
    private readonly onClose?: (error: Error) => void,
  ) {
    stream.on('error', this.onError);
    stream.on('drain', this.onDrain);
  }

  /** Whether the writer closed because the reader went away (EPIPE and the like), not for another error. */
  get gone(): boolean {
    return this.error !== undefined && GONE.has(String((this.error as NodeJS.ErrnoException).code));
  }

  /**
   * Writes `text` and a newline.
   * @returns undefined when the caller may write again at once; a promise, resolving when the
   *   stream has drained (or the writer closed), when its buffer is full. Never rejects; after a
   *   write error it does nothing.
   */
  writeLine(text: string): Promise<void> | undefined {
    if (this.closed) return undefined;
    let ok: boolean;
    try {
      ok = this.stream.write(text + '\n');
    } catch (err) {
      this.close(err as Error);
      return undefined;
    }
    if (ok || this.closed) return undefined;
    return new Promise<void>((resolve) => {
      this.drainWaiter = resolve;
    });
  }

  private close(err: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.error = err;
    this.wake();
    this.onClose?.(err);
  }

  private wake(): void {
    const w = this.drainWaiter;
    this.drainWaiter = undefined;
    w?.();
  }
}
