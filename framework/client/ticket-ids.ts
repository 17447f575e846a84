/**
 * Tickets by id, for this process: a call refers to its ticket by a small id (`ti` in the request
 * header), and each connection sends the ticket itself once, in a TICKET frame, before the first
 * call that refers to it (see `FrameKind.TICKET`). A ticket is about 200 bytes; an id is one to
 * five. Ids are u32 and wrap after 2^32 - 1; a connection remembers which ref it defined under an
 * id, so an id given again to another ticket is defined again.
 */

/** A ticket and its id. */
export interface TicketRef {
  /** Positive, unique in this process for this ticket. */
  readonly id: number;
  /** The ticket (a JWS compact string). */
  readonly ticket: string;
}

/** Tickets remembered at most; past it the table starts afresh (older refs stay valid: ids are not reused). */
const MAX_REMEMBERED = 10_000;

const refs = new Map<string, TicketRef>();
let nextId = 1;

/**
 * The ref of a ticket: the same object for the same ticket (while it is remembered).
 * @param ticket - the ticket.
 * @returns `{ id, ticket }`.
 */
export function ticketRef(ticket: string): TicketRef {
  let ref = refs.get(ticket);
  if (ref === undefined) {
    if (refs.size >= MAX_REMEMBERED) refs.clear();
    ref = Object.freeze({ id: nextId, ticket });
    nextId = nextId >= 0xffffffff ? 1 : nextId + 1;
    refs.set(ticket, ref);
  }
  return ref;
}
