/**
 * Data-driven tests from transcripts, after cockroachdb/datadriven as etcd-io/raft uses it: a
 * file holds test cases, each a command line (`name arg arg ...`), a `----` line, and the expected
 * output up to a blank line. `#` lines between cases are comments. The runner hands each command
 * to a handler and compares what it returns with the expected text.
 *
 *   init voters=1,2,3
 *   ----
 *   epoch 1: voters [1,2,3]
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { expect, it } from 'vitest';

/** One case of a transcript. */
export interface DataDrivenCase {
  /** `file:line` of the command. */
  readonly pos: string;
  /** The command's name (its first word). */
  readonly cmd: string;
  /** Its other words. */
  readonly args: readonly string[];
  /** The expected output (lines joined by `\n`, no trailing newline). */
  readonly expected: string;
}

/**
 * Reads a transcript.
 * @returns its cases, in order.
 * @throws Error naming the line of a case without its `----` line.
 */
export function readTranscript(file: string): DataDrivenCase[] {
  const lines = readFileSync(file, 'utf8').split('\n');
  const cases: DataDrivenCase[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    const pos = `${file}:${i + 1}`;
    if (lines[i + 1]?.trim() !== '----') throw new Error(`${pos}: '${line}' is not followed by a ---- line`);
    const out: string[] = [];
    for (i += 2; i < lines.length && lines[i]!.trim() !== ''; i++) out.push(lines[i]!.trimEnd());
    const [cmd, ...args] = line.split(/\s+/);
    cases.push({ pos, cmd: cmd!, args, expected: out.join('\n') });
  }
  return cases;
}

/**
 * Registers one vitest case per transcript case: `run` gets its command and arguments and returns
 * the output, or throws (the output is then `error: <message>`); the case passes when that equals
 * the expected text.
 */
export function runTranscript(file: string, run: (cmd: string, args: readonly string[]) => string): void {
  for (const tc of readTranscript(file)) {
    it(`${tc.cmd} ${tc.args.join(' ')} (${path.basename(tc.pos)})`, () => {
      let got: string;
      try {
        got = run(tc.cmd, tc.args);
      } catch (err) {
        got = `error: ${(err as Error).message}`;
      }
      expect(got, tc.pos).toBe(tc.expected);
    });
  }
}
