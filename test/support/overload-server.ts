/**
 * A Work server (bench/overload/work.ts) in its own process, with FastReject settings from the
 * OVERLOAD environment variable (JSON of `OverloadOptions`, or "off"), for overload tests.
 * Prints `serving on <host:port>` once listening, and closes on SIGTERM.
 */
import { Server, type OverloadOptions } from '../../framework/index.js';
import { Work } from '../../bench/overload/work.js';

const raw = process.env['OVERLOAD'] ?? '{}';
const overload: OverloadOptions | false = raw === 'off' ? false : (JSON.parse(raw) as OverloadOptions);
const server = new Server({ overload }).addService(new Work());
await server.listen(0);
process.stdout.write(`serving on ${server.address}\n`);
process.once('SIGTERM', () => {
  void server.close({ graceMs: 500 }).then(() => process.exit(0));
});
