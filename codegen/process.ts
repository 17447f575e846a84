/**
 * Child processes of the code generator (buf, the ts-proto plugin).
 */
import { spawn } from 'node:child_process';

/**
 * Runs a command to completion and collects its output.
 *
 * @param input bytes written to the child's stdin (stdin is closed after them; empty when omitted).
 * @returns `code`: the exit code, or null when a signal killed the child; stdout and stderr as UTF-8
 *   text, and stdout as bytes (for binary protocols such as the protoc plugin protocol).
 * @throws Error when the command cannot be started (not found, not executable).
 */
export function run(
  command: string,
  args: readonly string[],
  cwd: string,
  input?: Uint8Array,
): Promise<{ code: number | null; stdout: string; stderr: string; stdoutBytes: Buffer }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, stdio: ['pipe', 'pipe', 'pipe'], windowsHide: true });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', (e) => reject(new Error(`svrkit gen: cannot run ${command}: ${e.message}`)));
    child.on('close', (code) => {
      const stdoutBytes = Buffer.concat(out);
      resolve({ code, stdout: stdoutBytes.toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), stdoutBytes });
    });
    child.stdin.on('error', () => {
      /* the child exited before reading all input; its exit code tells */
    });
    child.stdin.end(input ?? Buffer.alloc(0));
  });
}
