import { fileURLToPath } from 'node:url';
import { configDefaults, defineConfig } from 'vitest/config';

/**
 * The test files that assert on timings (a call reaching a new instance within 1 s, no 100 ms
 * without an acknowledged write) or keep a core busy for seconds (the simulator, the mutation
 * checks, the compiler, FastReject's overload). They run one at a time, after every other file,
 * so that nothing else shares this 2-core machine with them: a CLI test starting node processes
 * next to a membership change stalled its writes for 192 ms once in four CI runs. Their tests
 * also take the `timing` lock (test/support/exclusive.ts), which keeps such files of two vitest
 * runs in one checkout apart.
 */
const TIMING = [
  'test/client/failover.test.ts',
  'test/inbox/inbox.test.ts',
  'test/overload/fastreject.test.ts',
  'test/paxoskv/exactly-once.test.ts',
  'test/paxoskv/groups-processes.test.ts',
  'test/paxoskv/membership-processes.test.ts',
  'test/paxoskv/models-simulation.test.ts',
  'test/paxoskv/mutations.test.ts',
  'test/paxoskv/processes.test.ts',
  'test/paxoskv/shedding-failover.test.ts',
  'test/paxoskv/simulation.test.ts',
  'test/typecheck.test.ts',
];

/** What both projects share. Spread into each, not inherited (`extends: true`): an inheriting project runs the root's globalSetup again. */
const shared = {
  resolve: {
    // Examples and generated code import 'svrkit'; in tests that is the framework source, so a test
    // and the code it loads share one copy of the runtime.
    alias: { svrkit: fileURLToPath(new URL('./index.ts', import.meta.url)) },
  },
};
const timeouts = { testTimeout: 60_000, hookTimeout: 60_000 };

export default defineConfig({
  ...shared,
  test: {
    // Once, before every project's files.
    globalSetup: ['test/global-setup.ts'],
    ...timeouts,
    // Integration tests start real servers; on a 2-core machine, limit parallel files.
    maxWorkers: 2,
    // Vitest's "parallel and sequential test files" recipe: two projects, the second after the first.
    projects: [
      { ...shared, test: { ...timeouts, name: 'parallel', include: ['test/**/*.test.ts'], exclude: [...configDefaults.exclude, ...TIMING], sequence: { groupOrder: 0 } } },
      { ...shared, test: { ...timeouts, name: 'timing', include: TIMING, fileParallelism: false, sequence: { groupOrder: 1 } } },
    ],
  },
});
