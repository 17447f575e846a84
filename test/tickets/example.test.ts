/**
 * examples/tickets as three `svrkit run --ticket-keys` processes on 127.0.0.1, driven by
 * `svrkit call` as its README does: a login issues a ticket; the frontend reads the user's own
 * profile through the backend with it; the backend refuses that ticket for another user (through
 * the frontend and called directly), a call with no ticket, and a ticket without its scope.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot, runSvrkit, startSvrkit, stopAllSvrkit, type SvrkitProcess } from '../support/processes.js';

const DIR = path.join(repoRoot, 'test', '.tmp', `tickets-example-${process.pid}`);
const KEYS = path.join(DIR, 'keys.json');
const PUBLIC = path.join(DIR, 'public.json');

describe('examples/tickets as processes', () => {
  let backend: SvrkitProcess;
  let frontend: SvrkitProcess;
  let login: SvrkitProcess;

  beforeAll(async () => {
    await fsp.mkdir(DIR, { recursive: true });
    const keys = await runSvrkit(['ticket', 'keygen', '--kid', 'k1']);
    expect(keys.code, keys.stderr).toBe(0);
    await fsp.writeFile(KEYS, keys.stdout);
    // The frontend and the backend verify with the public key only.
    const pub = await runSvrkit(['ticket', 'public', '--keys', KEYS]);
    expect(pub.code, pub.stderr).toBe(0);
    expect(pub.stdout).not.toContain('PRIVATE KEY');
    await fsp.writeFile(PUBLIC, pub.stdout);
    backend = await startSvrkit(['run', 'examples/tickets/backend.ts', '--port', '0', '--ticket-keys', PUBLIC]);
    frontend = await startSvrkit(['run', 'examples/tickets/frontend.ts', '--port', '0', '--ticket-keys', PUBLIC], { TICKETS_BACKEND: backend.address });
    login = await startSvrkit(['run', 'examples/tickets/login.ts', '--port', '0', '--ticket-keys', KEYS], { TICKET_KEYS: KEYS });
  }, 60_000);
  afterAll(async () => {
    await stopAllSvrkit();
    await fsp.rm(DIR, { recursive: true, force: true });
  });

  it('a user reads their own profile; another user\'s, no ticket, or a ticket without the scope are refused', async () => {
    const wrong = await runSvrkit(['call', login.address, 'tickets.Login/Login', '{"user":"ada","password":"nope"}']);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/UNAUTHENTICATED: unknown user or wrong password/);
    const ok = await runSvrkit(['call', login.address, 'tickets.Login/Login', '{"user":"ada","password":"lovelace"}']);
    expect(ok.code, ok.stderr).toBe(0);
    const ticket = (JSON.parse(ok.stdout) as { ticket: string }).ticket;

    const own = await runSvrkit(['call', frontend.address, 'tickets.Frontend/GetProfile', '{"userId":"ada"}', '--ticket', ticket]);
    expect(own.code, own.stderr).toBe(0);
    expect(JSON.parse(own.stdout)).toEqual({ userId: 'ada', displayName: 'Ada Lovelace', verifiedUser: 'ada' });

    const other = await runSvrkit(['call', frontend.address, 'tickets.Frontend/GetProfile', '{"userId":"alan"}', '--ticket', ticket]);
    expect(other.code).toBe(1);
    expect(other.stderr).toMatch(/PERMISSION_DENIED: the ticket is for ada, not for alan/);
    const direct = await runSvrkit(['call', backend.address, 'tickets.Backend/ReadProfile', '{"userId":"alan"}', '--ticket', ticket]);
    expect(direct.stderr).toMatch(/PERMISSION_DENIED: the ticket is for ada, not for alan/);
    const none = await runSvrkit(['call', backend.address, 'tickets.Backend/ReadProfile', '{"userId":"ada"}']);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/UNAUTHENTICATED: method tickets.Backend\/ReadProfile needs a ticket/);
    const noScope = await runSvrkit(['ticket', 'issue', '--keys', KEYS, '--user', 'ada']);
    const scoped = await runSvrkit(['call', frontend.address, 'tickets.Frontend/GetProfile', '{"userId":"ada"}', '--ticket', noScope.stdout.trim()]);
    expect(scoped.code).toBe(1);
    expect(scoped.stderr).toMatch(/PERMISSION_DENIED: method tickets.Backend\/ReadProfile needs scope 'profile.read'/);
  }, 60_000);
});
