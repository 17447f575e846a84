/**
 * Starts the whole inbox on this machine (deploy.ts) and keeps it up until Ctrl-C:
 *
 *   node --import tsx examples/inbox/up.ts [--dir /tmp/inbox] [--gray ada]
 *
 * It prints the addresses to give the client (client.ts). Data lives in `--dir` (default: a new
 * temporary directory, removed on exit).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { startInbox } from './deploy.js';

let values: { dir?: string; gray?: string };
try {
  ({ values } = parseArgs({ options: { dir: { type: 'string' }, gray: { type: 'string' } }, strict: true }));
} catch (err) {
  process.stderr.write(`up.ts: ${(err as Error).message}\nusage: up.ts [--dir DIR] [--gray user,user]\n`);
  process.exit(2);
}
const dir = values.dir ?? mkdtempSync(path.join(tmpdir(), 'svrkit-inbox-'));
const d = await startInbox({ dir, grayUsers: values.gray === undefined ? [] : values.gray.split(',') });
process.stdout.write(
  `inbox up: PaxosKV ${d.kv.join(',')}; Login and Message on ${d.front}; Sync on ${d.sync}\n` +
    `  node --import tsx examples/inbox/client.ts --user bob --login ${d.front} --message ${d.front} --sync ${d.sync}\n` +
    `  node --import tsx examples/inbox/client.ts --user ada --login ${d.front} --message ${d.front} --sync ${d.sync} --send-to bob --text hi\n`,
);
process.once('SIGINT', () => {
  void d.stop().then(() => {
    if (values.dir === undefined) rmSync(dir, { recursive: true, force: true });
    process.exit(0);
  });
});
