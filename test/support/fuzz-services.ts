/**
 * A server module with every call kind, for tests that throw arbitrary input at a real server
 * process: the helloworld Greeter (unary) and the Streams test service (server-streaming,
 * client-streaming, bidi, and a unary `Stats`), plus the built-in Health and Reflection services
 * every server adds. Serve it with `svrkit run test/support/fuzz-services.ts --port 0`.
 */
import { Greeter } from '../../examples/helloworld/greeter.js';
import { Streams } from './streams-service.js';

export default [new Greeter(), new Streams()];
