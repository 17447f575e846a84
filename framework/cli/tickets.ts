/**
 * Tickets from the command line: `svrkit ticket keygen` (a key ring), `svrkit ticket issue` (a
 * ticket signed with one), and the key-ring file `svrkit run --ticket-keys` reads and watches (a
 * rotation is an edit of the file: the running server picks it up within a second).
 */
import { createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { promises as fsp, unwatchFile, watchFile } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { parseKeyRing, type KeyRing } from '../tickets/key-ring.js';
import { TicketIssuer } from '../tickets/ticket-issuer.js';
import type { TicketVerifier } from '../tickets/ticket-verifier.js';
import { collect, durationOption, reportError } from './flags.js';

/**
 * Reads a key-ring file.
 * @returns the ring.
 * @throws Error naming the file: unreadable, not JSON, or not a valid ring (see `parseKeyRing`).
 */
export async function loadKeyRing(file: string): Promise<KeyRing> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    throw new Error(`ticket keys ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`ticket keys ${file}: not JSON: ${(err as Error).message}`);
  }
  return parseKeyRing(json, `ticket keys ${file}`);
}

/**
 * Follows a key-ring file: when it changes, its new keys replace the verifier's (a rotation step).
 * A file that no longer reads as a ring is reported and the keys in force stay.
 * @param say - where to report (a line each).
 * @returns a function that stops following.
 */
export function followKeyRing(file: string, verifier: TicketVerifier, say: (line: string) => void): () => void {
  const onChange = (): void => {
    loadKeyRing(file)
      .then((ring) => {
        verifier.setKeys(ring);
        say(`svrkit: ticket keys reloaded from ${file}: ${ring.keys.map((k) => k.kid).join(', ')}`);
      })
      .catch((err: Error) => say(`svrkit: ticket keys not reloaded (the keys in force stay): ${err.message}`));
  };
  watchFile(file, { interval: 1000, persistent: false }, (cur, prev) => {
    if (cur.mtimeMs !== prev.mtimeMs || cur.size !== prev.size) onChange();
  });
  return () => unwatchFile(file);
}

/** Adds `svrkit ticket keygen|issue` to a commander program. */
export function addTicketCommands(program: Command): void {
  const ticket = program.command('ticket').description('tickets: make a key ring, issue a ticket (servers check them with svrkit run --ticket-keys)');

  ticket
    .command('keygen')
    .description('print a new key ring (JSON) with one key, signing with it; add its key to an existing ring to rotate')
    .addOption(new Option('--alg <alg>', 'EdDSA (Ed25519: give verifiers only the public key, svrkit ticket public) or HS256 (one secret shared by issuers and verifiers: any of them can issue tickets)').choices(['HS256', 'EdDSA']).default('EdDSA'))
    .option('--kid <id>', 'the key id', `k${new Date().toISOString().slice(0, 10).replaceAll('-', '')}`)
    .action((opts: { alg: 'HS256' | 'EdDSA'; kid: string }) => {
      try {
        let key: Record<string, string>;
        if (opts.alg === 'HS256') key = { kid: opts.kid, alg: 'HS256', secret: randomBytes(32).toString('base64url') };
        else {
          const { publicKey, privateKey } = generateKeyPairSync('ed25519');
          key = {
            kid: opts.kid,
            alg: 'EdDSA',
            publicKey: publicKey.export({ format: 'pem', type: 'spki' }).toString(),
            privateKey: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
          };
        }
        const ring = { signing: opts.kid, keys: [key] };
        parseKeyRing(ring, 'the new ring'); // the kid's rules
        process.stdout.write(JSON.stringify(ring, null, 2) + '\n');
      } catch (err) {
        reportError(err);
      }
    });

  ticket
    .command('public')
    .description('print a key ring without its signing material (EdDSA private keys), for the servers that only verify; refuses a ring with HS256 secrets')
    .requiredOption('--keys <file>', 'the key ring')
    .action(async (opts: { keys: string }) => {
      try {
        const ring = await loadKeyRing(opts.keys);
        const shared = ring.keys.filter((k) => k.alg === 'HS256').map((k) => k.kid);
        if (shared.length > 0) throw new Error(`keys ${shared.join(', ')} are HS256: a verifier needs the same secret an issuer signs with (use EdDSA keys to keep signing to the login service)`);
        const keys = ring.keys.map((k) => ({ kid: k.kid, alg: k.alg, publicKey: k.publicKey ?? createPublicKey(k.privateKey!).export({ format: 'pem', type: 'spki' }).toString() }));
        process.stdout.write(JSON.stringify({ keys }, null, 2) + '\n');
      } catch (err) {
        reportError(err);
      }
    });

  ticket
    .command('issue')
    .description('print a ticket for a user, signed with the ring\'s signing key')
    .requiredOption('--keys <file>', 'the key ring (svrkit ticket keygen)')
    .requiredOption('--user <id>', 'the user the ticket is for')
    .option('--scope <scope>', 'a scope it grants (repeat)', collect, [] as string[])
    .option('--ttl <time>', 'how long it is valid, with a unit: 30s, 15m, 1h', durationOption('--ttl'), 3_600_000)
    .action(async (opts: { keys: string; user: string; scope: string[]; ttl: number }) => {
      try {
        if (opts.ttl < 1000) throw new InvalidArgumentError('--ttl must be at least 1s');
        const issuer = new TicketIssuer(await loadKeyRing(opts.keys));
        process.stdout.write(issuer.issue({ userId: opts.user, scopes: opts.scope, ttlMs: opts.ttl }) + '\n');
      } catch (err) {
        reportError(err);
      }
    });
}
