/**
 * The frontend: asks the backend (TICKETS_BACKEND, host:port) for a profile. It passes no ticket:
 * the caller's flows to the backend call through the call context.
 */
import { BackendClient, FrontendService, type Profile, type ProfileRequest } from './gen/tickets.js';

/** Relays profile reads (see the module comment). */
export class Frontend extends FrontendService {
  constructor(private readonly backend: BackendClient) {
    super();
  }

  override async getProfile(request: ProfileRequest): Promise<Profile> {
    return this.backend.readProfile({ userId: request.userId });
  }
}

const backend = process.env['TICKETS_BACKEND'];
if (backend === undefined) throw new Error('set TICKETS_BACKEND to the backend\'s host:port');
export default new Frontend(new BackendClient(backend));
