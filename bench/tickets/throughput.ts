/**
 * Unary throughput with tickets off, on with a ticket seen before (cached), and on with a new
 * ticket on every call (no cache hits: each costs a TICKET frame and a signature check); then over
 * TLS (certificates made with openssl), without and with tickets; against
 * `svrkit run examples/helloworld/greeter.ts` (one process per setting), from this process at
 * concurrency 1000 over 4 connections, alternating the modes over rounds. In the same rounds,
 * grpc-js 1.14 over TLS: its helloworld server (bench/grpc-js/server.ts) and a grpc-js client in
 * this process, 4 channels with their own connections, the same concurrency and rpc.
 *
 *   npm run build && npx tsx bench/tickets/throughput.ts [--rounds 3] [--seconds 5] [--alg HS256|EdDSA]
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { Channel, parseKeyRing, TicketIssuer } from 'svrkit';
import { GreeterClient } from '../../examples/helloworld/gen/greeter.js';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { startServer } from '../support.js';
import { makeCerts } from '../../test/support/certs.js';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const opts = new Command()
  .option('--rounds <n>', 'rounds (each runs every mode once)', (v) => Number(v), 3)
  .option('--seconds <s>', 'seconds per mode per round', (v) => Number(v), 5)
  .option('--alg <alg>', 'HS256 or EdDSA', 'HS256')
  .parse()
  .opts<{ rounds: number; seconds: number; alg: string }>();

const root = fileURLToPath(new URL('../..', import.meta.url));
const dir = mkdtempSync(path.join(os.tmpdir(), 'tickets-bench-'));
const { publicKey, privateKey } = generateKeyPairSync('ed25519');
const ring = parseKeyRing(
  opts.alg === 'EdDSA'
    ? { signing: 'b', keys: [{ kid: 'b', alg: 'EdDSA', publicKey: publicKey.export({ format: 'pem', type: 'spki' }).toString(), privateKey: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString() }] }
    : { signing: 'b', keys: [{ kid: 'b', alg: 'HS256', secret: randomBytes(32).toString('base64url') }] },
);
writeFileSync(path.join(dir, 'keys.json'), JSON.stringify(ring));
const issuer = new TicketIssuer(ring);
const SERVING = /serving \S+ on (\S+) \(pid/;
const off = await startServer([path.join(root, 'bin/svrkit.js'), 'run', 'examples/helloworld/greeter.ts', '--port', '0'], SERVING, root);
const on = await startServer([path.join(root, 'bin/svrkit.js'), 'run', 'examples/helloworld/greeter.ts', '--port', '0', '--ticket-keys', path.join(dir, 'keys.json')], SERVING, root);
const certs = await makeCerts(path.join(dir, 'certs'));
const tlsFlags = ['--tls-cert', certs.file('server.crt'), '--tls-key', certs.file('server.key')];
const tlsOff = await startServer([path.join(root, 'bin/svrkit.js'), 'run', 'examples/helloworld/greeter.ts', '--port', '0', ...tlsFlags], SERVING, root);
const tlsOn = await startServer([path.join(root, 'bin/svrkit.js'), 'run', 'examples/helloworld/greeter.ts', '--port', '0', ...tlsFlags, '--ticket-keys', path.join(dir, 'keys.json')], SERVING, root);
const grpcTls = await startServer(['--import', 'tsx', path.join(root, 'bench/grpc-js/server.ts'), '0', ...tlsFlags], /listening (\S+)/, root);

/** Calls/s of `seconds` of grpc-js over TLS at concurrency 1000 over 4 channels (each its own connection). */
async function measureGrpcJs(address: string): Promise<number> {
  const definition = protoLoader.loadSync(path.join(root, 'examples/helloworld/greeter.proto'), { includeDirs: [path.join(root, 'framework/builtin/proto')], keepCase: true, defaults: true });
  const Greeter = (grpc.loadPackageDefinition(definition) as any).helloworld.Greeter as grpc.ServiceClientConstructor;
  const credentials = grpc.credentials.createSsl(Buffer.from(certs.ca));
  // A local subchannel pool per channel: otherwise grpc-js shares one connection among them.
  const clients = Array.from({ length: 4 }, () => new Greeter(address, credentials, { 'grpc.use_local_subchannel_pool': 1 }));
  type Say = (req: { name: string }, cb: (err: grpc.ServiceError | null) => void) => void;
  const say = (i: number) => new Promise<void>((resolve, reject) => (clients[i % 4] as unknown as { sayHello: Say }).sayHello({ name: 'x' }, (err) => (err ? reject(err) : resolve())));
  try {
    await Promise.all(clients.map((_, i) => say(i)));
    let calls = 0;
    let errors = 0;
    let seq = 0;
    const end = performance.now() + opts.seconds * 1000;
    await Promise.all(
      Array.from({ length: 1000 }, async () => {
        while (performance.now() < end) {
          try {
            await say(seq++);
            calls++;
          } catch {
            errors++;
          }
        }
      }),
    );
    if (errors > 0) throw new Error(`grpc-js: ${errors} calls failed`);
    return calls / opts.seconds;
  } finally {
    for (const c of clients) c.close();
  }
}

/** Calls/s of `seconds` at concurrency 1000 over 4 connections; `ticket(i)` gives the i-th call's ticket. */
async function measure(address: string, ticket: ((i: number) => string) | undefined, tls = false): Promise<number> {
  const channel = new Channel(address, { connections: 4, ...(tls ? { tls: { ca: certs.ca } } : {}) });
  const greeter = new GreeterClient(channel);
  try {
    await greeter.sayHello({ name: 'warm' }, ticket === undefined ? {} : { ticket: ticket(0) });
    let calls = 0;
    let seq = 0;
    let errors = 0;
    const end = performance.now() + opts.seconds * 1000;
    await Promise.all(
      Array.from({ length: 1000 }, async () => {
        while (performance.now() < end) {
          try {
            await greeter.sayHello({ name: 'x' }, ticket === undefined ? {} : { ticket: ticket(++seq) });
            calls++;
          } catch {
            errors++;
          }
        }
      }),
    );
    if (errors > 0) throw new Error(`${errors} calls failed`);
    return calls / opts.seconds;
  } finally {
    channel.close();
  }
}

try {
  const cached = issuer.issue({ userId: 'bench', ttlMs: 3_600_000 });
  // New tickets, issued before the clock starts (enough for the fastest rate seen, 300k/s).
  const fresh = Array.from({ length: Math.ceil(300_000 * opts.seconds) }, (_, i) => issuer.issue({ userId: `u${i}`, ttlMs: 3_600_000 }));
  let next = 0;
  console.log(`tickets throughput: node ${process.version}, ${os.cpus().length} CPUs, ${opts.alg}; c=1000 over 4 connections, ${opts.seconds} s per mode, ${opts.rounds} rounds`);
  const rows: string[] = [];
  for (let r = 1; r <= opts.rounds; r++) {
    const a = await measure(off.address, undefined);
    const b = await measure(on.address, () => cached);
    const c = await measure(on.address, () => fresh[next++ % fresh.length]!);
    const d = await measure(tlsOff.address, undefined, true);
    const e = await measure(tlsOn.address, () => cached, true);
    const g = await measureGrpcJs(grpcTls.address);
    const n = (x: number) => Math.round(x).toLocaleString('en-US');
    rows.push(`| ${r} | ${n(a)} | ${n(b)} (${(b / a).toFixed(2)}x) | ${n(c)} | ${n(d)} (${(d / a).toFixed(2)}x) | ${n(e)} | ${n(g)} | ${(d / g).toFixed(1)}x |`);
    console.log(rows.at(-1));
  }
  console.log(
    `\n| round | plain, no tickets (calls/s) | tickets, seen before | tickets, a new one every call | TLS | TLS and tickets | grpc-js over TLS | svrkit TLS / grpc-js TLS |\n` +
      `|---|---|---|---|---|---|---|---|\n${rows.join('\n')}`,
  );
} finally {
  for (const s of [off, on, tlsOff, tlsOn, grpcTls]) s.child.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
