import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: {
    // Examples and generated code import 'svrkit'; in tests that is the framework source, so a test
    // and the code it loads share one copy of the runtime.
    alias: { svrkit: fileURLToPath(new URL('./index.ts', import.meta.url)) },
  },
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Integration tests start real servers; on a 2-core machine, limit parallel files.
    maxWorkers: 2,
  },
});
