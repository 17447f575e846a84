/**
 * The helloworld service: the smallest svrkit server.
 *
 *   npx svrkit gen examples/helloworld/greeter.proto --out examples/helloworld/gen
 *   npx svrkit run examples/helloworld/greeter.ts --port 7000
 *   npx svrkit call 127.0.0.1:7000 helloworld.Greeter/SayHello '{"name":"ada"}'
 */
import { RpcError, Status, type CallContext } from 'svrkit';
import { GreeterService, type HelloReply, type HelloRequest } from './gen/greeter.js';

/** Greets by name. An empty name is the caller's mistake: INVALID_ARGUMENT. */
export class Greeter extends GreeterService {
  override async sayHello(request: HelloRequest, _call: CallContext): Promise<HelloReply> {
    if (request.name === '') throw new RpcError(Status.INVALID_ARGUMENT, 'name must not be empty');
    return { message: `Hello ${request.name}` };
  }
}

export default new Greeter();
