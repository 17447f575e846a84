/**
 * Watchers for the atomic-promote tests: ConfigClients that record what they see at each change,
 * and the check that none went back (its release number never went down, and a gray reader never
 * saw a value from before its gray after the promote).
 */
import { expect } from 'vitest';
import type { ConfigClient } from '../../index.js';

/** One watcher: its client, what it saw at each change, and whether it is in the gray. */
export interface GrayWatcher {
  readonly c: ConfigClient;
  readonly seen: Array<{ release: number; v: string | undefined }>;
  readonly canary: boolean;
}

/**
 * Makes `count` watchers; the even ones are in the gray.
 * @param make - the client of watcher i (`canary`: whether it is to be in the gray).
 */
export function grayWatchers(count: number, make: (i: number, canary: boolean) => ConfigClient): GrayWatcher[] {
  return Array.from({ length: count }, (_, i) => {
    const c = make(i, i % 2 === 0);
    const seen: GrayWatcher['seen'] = [];
    c.onChange(() => {
      const s = c.snapshot();
      seen.push({ release: s.release, v: s.values.v });
    });
    return { c, seen, canary: i % 2 === 0 };
  });
}

/**
 * Asserts that no watcher went back: its release numbers never went down, and a gray reader's
 * value `v` (`g<n>`, one per gray round) never went back to an earlier round.
 */
export function expectNoneWentBack(watchers: readonly GrayWatcher[]): void {
  for (const w of watchers) {
    for (let i = 1; i < w.seen.length; i++) expect(w.seen[i]!.release).toBeGreaterThanOrEqual(w.seen[i - 1]!.release);
    if (!w.canary) continue;
    let newest = 1;
    for (const s of w.seen) {
      const n = Number(s.v!.slice(1));
      expect(n, `a canary reader went back from g${newest} to ${s.v}`).toBeGreaterThanOrEqual(newest);
      newest = n;
    }
  }
}
