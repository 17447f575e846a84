/**
 * The queue's error catalogue (made with the framework's `defineErrors`, so each error carries its
 * name in `RpcError.reason`, and a service that passes one on sends the name over the wire).
 */
import { defineErrors, Status } from '../../framework/index.js';

/** Every error the queue raises. */
export const queueErrors = defineErrors({
  /** A bad queue name, item, request id, sequence number or limit (the message says which and why). */
  INVALID_QUEUE_REQUEST: { status: Status.INVALID_ARGUMENT, message: (why: string) => why },
  /** A stored segment that does not decode: the queue's data was written by something else, or damaged. */
  QUEUE_RECORD_MALFORMED: { status: Status.DATA_LOSS, message: (key: string, why: string) => `queue record ${JSON.stringify(key)} is malformed: ${why}` },
  /** A push whose deadline passed while it waited for the batch before it: it was not sent. */
  PUSH_DEADLINE_EXCEEDED: { status: Status.DEADLINE_EXCEEDED, notProcessed: true, message: () => 'the push\'s deadline passed while it waited for the batch before it; it was not sent' },
  /**
   * A push whose compare-and-set may have taken effect (an attempt was lost on the way) into a
   * segment that a trim has since emptied, so whether the item went in can no longer be read.
   */
  PUSH_OUTCOME_UNKNOWN: {
    status: Status.UNKNOWN,
    message: (queue: string) => `push to queue ${JSON.stringify(queue)}: an attempt's outcome was lost and a trim emptied its segment since; the item may or may not be in the queue`,
  },
});
