/**
 * The runtime names generated code imports: a leaf module (it imports nothing from the server) so
 * that code generated for the framework's own built-in services can import it without an import
 * cycle through `index.ts`. User code imports the same names from `'svrkit'`.
 */
export { serviceDefinition, type ServiceDefinition, type MethodDefinition, type MessageType } from './wire/definition.js';
export { type CallContext } from './context/call-context.js';
export { Channel, type CallOptions, type ChannelOptions } from './client/channel.js';
