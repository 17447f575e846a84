/**
 * One inbox server process: any of the Login, Message and Sync services on one port, on a PaxosKV
 * cluster, checking every call's ticket.
 *
 *   node --import tsx examples/inbox/server.ts --services login,message --kv 127.0.0.1:7001,... \
 *        --keys keys.json --sync 127.0.0.1:7302 --port 7301
 *   node --import tsx examples/inbox/server.ts --services sync --kv ... --keys public.json --port 7302
 *
 * `--keys` is a ticket key ring (`svrkit ticket keygen`): Login and Message sign with it (Message
 * signs its own ticket for `Sync.Poke`), so they need the private key; Sync only verifies.
 * `--sync` lists the Sync servers Message pokes. Prints `serving on <host:port>` once listening;
 * SIGTERM closes gracefully.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ConfigClient, parseKeyRing, PaxosKVClient, PaxosQueue, PaxosTable, Server, TicketIssuer } from 'svrkit';
import { SyncClient } from './gen/inbox.js';
import { Login } from './login.js';
import { Message } from './message.js';
import { NotifyHub } from './notify-hub.js';
import { Sync } from './sync.js';

const SERVICES = ['login', 'message', 'sync'] as const;

function fail(message: string): never {
  process.stderr.write(`inbox server: ${message}\n`);
  process.exit(2);
}

let values: { services?: string; kv?: string; keys?: string; sync?: string; port?: string; host?: string };
try {
  ({ values } = parseArgs({
    options: { services: { type: 'string' }, kv: { type: 'string' }, keys: { type: 'string' }, sync: { type: 'string' }, port: { type: 'string' }, host: { type: 'string' } },
    strict: true,
  }));
} catch (err) {
  fail((err as Error).message);
}
const services = (values.services ?? '').split(',').filter((s) => s !== '');
if (services.length === 0 || services.some((s) => !(SERVICES as readonly string[]).includes(s))) fail(`--services: a comma-separated list of ${SERVICES.join(', ')}`);
if (values.kv === undefined) fail('--kv: the PaxosKV replicas, host:port,host:port,...');
if (values.keys === undefined) fail('--keys: the ticket key ring file');
const port = Number(values.port ?? 0);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`--port: a port number, not ${values.port}`);
let ring;
try {
  ring = parseKeyRing(JSON.parse(readFileSync(values.keys, 'utf8')), values.keys);
} catch (err) {
  fail((err as Error).message);
}

let kv: PaxosKVClient;
let config: ConfigClient | undefined;
let server: Server;
try {
  kv = new PaxosKVClient({ peers: values.kv.split(',') });
  const queue = new PaxosQueue(kv);
  server = new Server({ tickets: { keys: ring } });
  if (services.includes('login') || services.includes('message')) {
    if (ring.signing === undefined) fail('--keys: Login and Message sign tickets: the ring needs a signing key');
  }
  const issuer = ring.signing === undefined ? undefined : new TicketIssuer(ring);
  if (services.includes('login')) server.addService(new Login(issuer!));
  if (services.includes('message')) {
    config = new ConfigClient({ target: kv, namespace: 'inbox' });
    await config.ready();
    const sync = (values.sync ?? '').split(',').filter((s) => s !== '').map((a) => new SyncClient(a));
    let ticket = { value: '', until: 0 };
    const serviceTicket = () => {
      if (Date.now() > ticket.until) ticket = { value: issuer!.issue({ userId: 'svc.message', scopes: ['inbox.poke'], ttlMs: 600_000 }), until: Date.now() + 300_000 };
      return ticket.value;
    };
    server.addService(new Message(queue, new PaxosTable(kv), config, { sync, ticket: serviceTicket }));
  }
  const hub = new NotifyHub();
  if (services.includes('sync')) server.addService(new Sync(queue, hub));

  // For measurements (bench/inbox/notify.ts): SIGUSR2 prints this process's memory. When node
  // runs with --expose-gc, that is after full garbage collections until the committed heap stops
  // shrinking (each compacts more of the pages that a burst of connections left half empty).
  process.on('SIGUSR2', () => {
    const gc = (globalThis as { gc?: () => void }).gc;
    if (gc !== undefined) {
      let committed = Infinity;
      for (let i = 0; i < 8 && process.memoryUsage().heapTotal < committed; i++) {
        committed = process.memoryUsage().heapTotal;
        gc();
      }
    }
    const m = process.memoryUsage();
    process.stdout.write(`memory rss ${m.rss} heapTotal ${m.heapTotal} heapUsed ${m.heapUsed} external ${m.external} arrayBuffers ${m.arrayBuffers} streams ${hub.users}\n`);
  });
  await server.listen(port, values.host ?? '127.0.0.1');
  process.stdout.write(`serving on ${server.address}\n`);
} catch (err) {
  fail((err as Error).message);
}
process.once('SIGTERM', () => {
  void server.close({ graceMs: 500 }).then(async () => {
    await config?.close();
    kv.close();
    process.exit(0);
  });
});
