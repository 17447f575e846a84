/**
 * `svrkit run bench/overload/work.ts --port 0 --fast-reject <mode> --metrics-port 0`, plus one
 * stderr line per closed FastReject window (the server's `overload.onWindow`), for
 * `bench/overload/run.ts --windows`:
 *
 *   node --import tsx bench/overload/window-server.ts on|dry-run ['{"windowMs":100,...}']
 *
 * It calls the same `serve()` as `svrkit run` (the built one in dist/), so the server is the same
 * but for the window log: `svrkit: window <the WindowReport as JSON>`, e.g. `{"at":...,"arrived":...,
 * "admitted":...,"eventLoopDelayMs":...,"overloaded":...,"levelBefore":...,"levelAfter":...}` plus
 * whatever else the controller reports (run.ts reads the fields by name; `at` is epoch ms).
 *
 * The optional JSON adds admission settings (`OverloadOptions`: queueThresholdMs, windowMs,
 * windowRequests, alpha, beta, ...) to explore them (`run.ts --admission`); without it, the defaults.
 */
import { serve } from '../../dist/framework/cli/run.js';

const mode = process.argv[2];
if (mode !== 'on' && mode !== 'dry-run') {
  process.stderr.write("usage: window-server.ts on|dry-run ['{\"windowMs\":100}']\n");
  process.exit(2);
}
const settings = process.argv[3] === undefined ? {} : (JSON.parse(process.argv[3]) as Record<string, number>);
const { closed } = await serve('bench/overload/work.ts', {
  port: 0,
  host: '127.0.0.1',
  graceMs: 5000,
  metricsPort: 0,
  server: {
    overload: {
      ...settings,
      dryRun: mode === 'dry-run',
      onWindow: (r) => process.stderr.write(`svrkit: window ${JSON.stringify(r)}\n`),
    },
  },
});
await closed;
