/**
 * What a connection needs of a unary call attempt, and what the attempt needs of the connection
 * that carries it: the two interfaces between call.ts (the call) and subchannel.ts (the
 * connection), so that neither file imports the other's classes.
 */
import type { MethodDefinition } from '../wire/definition.js';
import type { RpcError } from '../wire/status.js';
import type { TicketRef } from './ticket-ids.js';

/** Where a started call lives: the connection that sent it, so it can be cancelled there. */
export interface CallCarrier {
  /** Sends CANCEL for the call, with the status it ends with, and forgets it. */
  cancel(call: UnaryAttempt, reason: RpcError): void;
}

/** A unary call attempt as its connection sees it. */
export interface UnaryAttempt {
  /** The method called (its response codec decodes the reply). */
  readonly method: MethodDefinition;
  /** The encoded request header and message. */
  readonly header: Uint8Array;
  readonly body: Uint8Array;
  /** The call's ticket, when its header refers to one (`ti`): the connection defines it first. */
  readonly ticket?: TicketRef;
  /** Set by the connection when it sends the call. */
  callId: number;
  carrier: CallCarrier | undefined;
  /** The reply arrived: the decoded response message. */
  succeed(value: unknown): void;
  /** The attempt failed (the call may retry). */
  fail(error: RpcError): void;
}
