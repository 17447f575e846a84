/**
 * What one ticket verification costs (TicketVerifier: fast-jwt for the signature, an lru-cache of
 * verified tickets): HS256 and EdDSA, a ticket never seen (a signature check) and one seen before
 * (a cache lookup), alternating the cases over several rounds.
 *
 *   npx tsx bench/tickets/verify.ts [--rounds 3] [--n 20000]
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { Command } from 'commander';
import { parseKeyRing, TicketIssuer, TicketVerifier } from '../../index.js';

const opts = new Command().option('--rounds <n>', 'rounds', (v) => Number(v), 3).option('--n <n>', 'verifications per case per round', (v) => Number(v), 20_000).parse().opts<{ rounds: number; n: number }>();

const { publicKey, privateKey } = generateKeyPairSync('ed25519');
const rings = {
  HS256: parseKeyRing({ signing: 'h', keys: [{ kid: 'h', alg: 'HS256', secret: randomBytes(32).toString('base64url') }] }),
  EdDSA: parseKeyRing({
    signing: 'e',
    keys: [{ kid: 'e', alg: 'EdDSA', publicKey: publicKey.export({ format: 'pem', type: 'spki' }).toString(), privateKey: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString() }],
  }),
};

/** Microseconds per verification of `n` tickets (each new, or one repeated). */
function run(alg: keyof typeof rings, fresh: boolean, n: number): number {
  const issuer = new TicketIssuer(rings[alg]);
  const verifier = new TicketVerifier(rings[alg], { cacheSize: 100_000 });
  const tickets = fresh ? Array.from({ length: n }, (_, i) => issuer.issue({ userId: `u${i}`, scopes: ['inbox.read'], ttlMs: 3_600_000 })) : [issuer.issue({ userId: 'u', scopes: ['inbox.read'], ttlMs: 3_600_000 })];
  // The cached case: seen once before the clock starts.
  if (!fresh) verifier.verify(tickets[0]!);
  // Each verification gets its own string, as each call's decoded header does (no hash cached on it).
  const inputs = fresh ? tickets : Array.from({ length: n }, () => Buffer.from(tickets[0]!).toString());
  const t0 = performance.now();
  let ok = 0;
  for (const t of inputs) if (verifier.verify(t).ok) ok++;
  const us = ((performance.now() - t0) * 1000) / n;
  if (ok !== n) throw new Error(`${ok} of ${n} verified`);
  return us;
}

console.log(`ticket verification: node ${process.version}, ${os.cpus()[0]?.model ?? '?'}, ${opts.rounds} rounds of ${opts.n} per case`);
const rows: string[] = [];
for (let r = 1; r <= opts.rounds; r++) {
  for (const alg of ['HS256', 'EdDSA'] as const) {
    // EdDSA signature checks are slow: fewer of them.
    const fresh = run(alg, true, alg === 'EdDSA' ? Math.ceil(opts.n / 10) : opts.n);
    const cached = run(alg, false, opts.n);
    rows.push(`| ${r} | ${alg} | ${fresh.toFixed(2)} | ${cached.toFixed(3)} |`);
    console.log(rows.at(-1));
  }
}
console.log(`\n| round | alg | new ticket (signature check) µs | seen before (cache lookup) µs |\n|---|---|---|---|\n${rows.join('\n')}`);
