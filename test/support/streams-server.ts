/**
 * The Streams test service in its own process: prints `serving on <host:port>` once listening;
 * on SIGTERM closes gracefully (grace from GRACE_MS, default 500 ms) and exits; on SIGUSR2 starts
 * a graceful close without exiting (to test GOAWAY with open streams) and prints `closed` when done.
 */
import { Server } from '../../framework/index.js';
import { Streams } from './streams-service.js';

const server = new Server().addService(new Streams());
await server.listen(0);
process.stdout.write(`serving on ${server.address}\n`);
const graceMs = Number(process.env['GRACE_MS'] ?? 500);
process.once('SIGTERM', () => {
  void server.close({ graceMs }).then(() => process.exit(0));
});
process.once('SIGUSR2', () => {
  void server.close({ graceMs }).then(() => process.stdout.write('closed\n'));
});
