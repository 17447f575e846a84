/**
 * Helpers shared by the benchmark scripts: latency histograms and per-process CPU time.
 */
import { readFileSync } from 'node:fs';
import { build, type Histogram } from 'hdr-histogram-js';

/**
 * A latency histogram (hdr-histogram-js) for microsecond values up to 60 s, 3 significant digits.
 * @returns a new, empty histogram.
 */
export function newHistogram(): Histogram {
  return build({
    bitBucketSize: 64,
    lowestDiscernibleValue: 1,
    highestTrackableValue: 60_000_000,
    numberOfSignificantValueDigits: 3,
    autoResize: true,
    useWebAssembly: false,
  });
}

/**
 * CPU seconds (user+sys) a live process has used, from /proc (Linux).
 * @param pid - the process id.
 * @returns seconds; NaN when /proc cannot tell (another OS, or the process is gone).
 */
export function cpuSeconds(pid: number | undefined): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
  } catch {
    return NaN;
  }
}
