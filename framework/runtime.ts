/**
 * The runtime names generated code imports: a leaf module (it imports nothing from the server) so
 * that code generated for the framework's own built-in services can import it without an import
 * cycle through `index.ts`. User code imports the same names from `'svrkit'`. It does not run the
 * composition root (`setup.ts`: the health probe it registers is generated code that imports this
 * module): the processes that load built-in generated code load `index.ts` or the CLI too, which do.
 */
export { serviceDefinition, type ServiceDefinition, type MethodDefinition, type MessageType } from './wire/definition.js';
export { type CallContext } from './context/call-context.js';
export { Channel, type CallOptions, type ChannelOptions } from './client/channel.js';
