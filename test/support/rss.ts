/** The resident set of a process, for tests that bound a real server's memory (Linux /proc). */
import { readFileSync } from 'node:fs';

/**
 * @param pid - the process id.
 * @returns its VmRSS from /proc/<pid>/status, in bytes.
 * @throws Error when /proc has no VmRSS line for the process (it exited, or not Linux).
 */
export function rss(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (m === null) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}
