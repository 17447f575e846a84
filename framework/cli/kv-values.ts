/**
 * Values on the `svrkit kv` command line: how `kv get` prints a value so that no two values look
 * the same ({@link valueJson}), and how `kv put`/`kv cas` read one ({@link valueInput}).
 */
import { KvUsageError } from './kv-cluster.js';

/** Reads all of stdin. */
async function readStdin(): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * The JSON form of a value, one of two properties so that no value can be mistaken for another:
 * `{ value: text }` when the bytes are valid UTF-8 (the text is exactly those bytes, a BOM
 * included), else `{ valueBase64: base64 }` (standard alphabet, padded). `kv put k text` and
 * `kv put k --base64 b64` are the inverses.
 * @param bytes - the value.
 * @returns `{ value }` or `{ valueBase64 }`.
 */
export function valueJson(bytes: Uint8Array): { value: string } | { valueBase64: string } {
  try {
    return { value: utf8.decode(bytes) };
  } catch {
    return { valueBase64: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64') };
  }
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Decodes base64 (standard alphabet, padded, as {@link valueJson} prints it); whitespace (the
 * newline `echo` adds) is ignored.
 * @param text - the base64 text.
 * @param what - where it came from, for the message.
 * @returns the bytes.
 * @throws KvUsageError when it is not such base64.
 */
export function decodeBase64(text: string, what: string): Uint8Array {
  const compact = text.replace(/\s+/g, '');
  if (!BASE64.test(compact)) throw new KvUsageError(`${what} is not base64 (A-Z a-z 0-9 + /, padded with = to a multiple of 4 characters)`);
  return new Uint8Array(Buffer.from(compact, 'base64'));
}

/**
 * The bytes `kv put` and `kv cas` write: the argument as UTF-8 text (as given: no prefix is
 * interpreted), or with `base64` the argument decoded from base64; with no argument, stdin's bytes
 * as they are, or with `base64` stdin decoded from base64.
 * @param value - the value argument, when given.
 * @param base64 - whether `--base64` was given.
 * @param stdin - reads stdin (called only when `value` is absent).
 * @returns the bytes to write.
 * @throws KvUsageError for `--base64` with text that is not base64.
 */
export async function valueInput(value: string | undefined, base64: boolean, stdin: () => Promise<Uint8Array> = readStdin): Promise<Uint8Array> {
  if (value !== undefined) return base64 ? decodeBase64(value, 'the value') : new TextEncoder().encode(value);
  const bytes = await stdin();
  return base64 ? decodeBase64(Buffer.from(bytes).toString('latin1'), 'stdin') : bytes;
}
