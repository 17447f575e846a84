/**
 * The backend: profiles, readable only with a ticket for the user whose profile it is. The server
 * (`svrkit run examples/tickets/backend.ts --ticket-keys keys.json`) has already refused a call
 * without a valid ticket, or without the scope "profile.read"; the handler refuses a ticket for
 * another user, so a compromised frontend cannot read anyone's profile by naming them.
 */
import { currentCall, RpcError, Status } from 'svrkit';
import { BackendService, type Profile, type ProfileRequest } from './gen/tickets.js';

const NAMES: Readonly<Record<string, string>> = { ada: 'Ada Lovelace', alan: 'Alan Turing' };

/** Serves the profiles (see the module comment). */
export class Backend extends BackendService {
  override async readProfile(request: ProfileRequest): Promise<Profile> {
    const auth = currentCall()!.auth!; // set: the method needs a scope, so the server checked a ticket
    if (request.userId !== auth.userId) {
      throw new RpcError(Status.PERMISSION_DENIED, `the ticket is for ${auth.userId}, not for ${request.userId}`);
    }
    const name = NAMES[request.userId];
    if (name === undefined) throw new RpcError(Status.NOT_FOUND, `no profile for ${request.userId}`);
    return { userId: request.userId, displayName: name, verifiedUser: auth.userId };
  }
}

export default new Backend();
