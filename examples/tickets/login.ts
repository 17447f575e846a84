/**
 * The login service: checks a password (a demo table) and issues a ticket for the user with the
 * scope "profile.read". Served by `svrkit run examples/tickets/login.ts --ticket-keys keys.json`;
 * it reads the same key ring from TICKET_KEYS to sign (`Login` is public: no ticket needed).
 */
import { readFileSync } from 'node:fs';
import { parseKeyRing, RpcError, Status, TicketIssuer } from 'svrkit';
import { LoginService, type LoginReply, type LoginRequest } from './gen/tickets.js';

/** Demo users and passwords. */
const PASSWORDS: Readonly<Record<string, string>> = { ada: 'lovelace', alan: 'turing' };

/** Ticket lifetime (ms). */
const TTL_MS = 15 * 60 * 1000;

/** Issues tickets (see the module comment). */
export class Login extends LoginService {
  constructor(private readonly issuer: TicketIssuer) {
    super();
  }

  override async login(request: LoginRequest): Promise<LoginReply> {
    if (PASSWORDS[request.user] === undefined || PASSWORDS[request.user] !== request.password) throw new RpcError(Status.UNAUTHENTICATED, 'unknown user or wrong password');
    const ticket = this.issuer.issue({ userId: request.user, scopes: ['profile.read'], ttlMs: TTL_MS });
    return { ticket, expiresAtMs: BigInt(Date.now() + TTL_MS) };
  }
}

const keys = process.env['TICKET_KEYS'];
if (keys === undefined) throw new Error('set TICKET_KEYS to the key ring file (svrkit ticket keygen > keys.json)');
export default new Login(new TicketIssuer(parseKeyRing(JSON.parse(readFileSync(keys, 'utf8')), keys)));
