/**
 * The chain example's frontend: a handler that calls another service.
 *
 *   CHAIN_BACKEND=127.0.0.1:7001 svrkit run examples/chain/frontend.ts --port 7002
 *
 * Nothing is passed to the backend call by hand, yet it carries the caller's remaining deadline,
 * trace id and the metadata keys the caller marked for propagation. A coroutine-local set before
 * the await is still this call's own after it, however many calls run concurrently.
 */
import { coroutineLocal, type CallContext } from 'svrkit';
import { BackendClient, FrontendService, type RelayReply, type RelayRequest } from './gen/chain.js';
import { viewOf } from './view.js';

const currentUser = coroutineLocal<string>('chain.user');

/** Relays to the backend; see the module comment. */
export class Frontend extends FrontendService {
  private readonly backend: BackendClient;

  /** @param backendTarget - the backend's address or resolver URI. */
  constructor(backendTarget: string) {
    super();
    this.backend = new BackendClient(backendTarget);
  }

  override async relay(request: RelayRequest, call: CallContext): Promise<RelayReply> {
    currentUser.set(request.user);
    const frontend = viewOf('chain.Frontend', call, request.user);
    const backend = await this.backend.inspect({ user: request.user, delayMs: request.backendDelayMs });
    return { frontend, backend, localAfterCall: currentUser.get() ?? '' };
  }

  /** Closes the backend channel. */
  close(): void {
    this.backend.close();
  }
}

export default new Frontend(process.env.CHAIN_BACKEND ?? '127.0.0.1:7001');
