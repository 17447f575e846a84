/**
 * The Login service: checks a password and issues a ticket with the scope "inbox". A demo: the
 * password of user `u` is `u` followed by `-pw` (a real one would look users up).
 */
import { RpcError, Status, type TicketIssuer } from 'svrkit';
import { LoginService, type LoginReply, type LoginRequest } from './gen/inbox.js';
import { checkId } from './store.js';

/** Ticket lifetime (ms). */
export const TICKET_TTL_MS = 60 * 60 * 1000;

/** Issues tickets (see the module comment). */
export class Login extends LoginService {
  constructor(private readonly issuer: TicketIssuer) {
    super();
  }

  override async login(request: LoginRequest): Promise<LoginReply> {
    const user = checkId(request.user, 'user');
    if (request.password !== `${user}-pw`) throw new RpcError(Status.UNAUTHENTICATED, 'unknown user or wrong password');
    const ticket = this.issuer.issue({ userId: user, scopes: ['inbox'], ttlMs: TICKET_TTL_MS });
    return { ticket, expiresAtMs: BigInt(Date.now() + TICKET_TTL_MS) };
  }
}
