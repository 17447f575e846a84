/**
 * A helloworld Greeter that says which process answered ("Hello ada from 1234"), so that tests
 * can see where a balancer sent each call. Served by `svrkit run` in the failover tests.
 */
import type { CallContext } from 'svrkit';
import { GreeterService, type HelloReply, type HelloRequest } from '../../examples/helloworld/gen/greeter.js';

/** Greets, naming its pid. */
export class TaggedGreeter extends GreeterService {
  override async sayHello(request: HelloRequest, _call: CallContext): Promise<HelloReply> {
    return { message: `Hello ${request.name} from ${process.pid}` };
  }
}

export default new TaggedGreeter();
