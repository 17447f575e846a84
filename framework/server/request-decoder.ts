/**
 * The server's decoding stage, in two steps around admission: the header first (so that a call
 * can be refused before its body is touched), then the body.
 *
 * The header step decodes the msgpack header, finds the method, checks the call id and the call
 * kind, checks the call's ticket (when the server checks tickets), drops a call that waited in queues past its deadline, and works out the call's
 * priorities (overload/priority.ts). The body step decodes the request message (client-streaming
 * and bidi calls have none: their requests come as MESSAGE frames). Every refusal is answered
 * here with its catalogue error.
 */
import { errors } from '../errors.js';
import { effectiveBusinessPriority, isPriority, metadataUserPriority, PRIORITY_LEVELS, userPriority } from '../overload/priority.js';
import type { TicketAuth, TicketVerifier } from '../tickets/ticket-verifier.js';
import { MAX_TICKET_LENGTH } from '../wire/frame.js';
import { decodeRequestHeader, HeaderError, type RequestHeader } from '../wire/header.js';
import type { InboundCall, RegisteredMethod } from './inbound-call.js';
import type { ServerObserver } from './observer.js';
import type { ServerConnection, TicketSlot } from './server-connection.js';

/** What the header step found. */
export interface DecodedHeader {
  /** The decoded header. */
  readonly header: RequestHeader;
  /** The method called. */
  readonly registered: RegisteredMethod;
  /** Since the frame's chunk was read (ms): FastReject's signal, server-measured. */
  readonly queued: number;
  /** Since the client sent the call (ms, at least `queued`): for this call's own deadline. */
  readonly waited: number;
  /** The call's business and user priority, 0..127. */
  readonly business: number;
  readonly user: number;
  /** The identity its ticket proved (when the server checks tickets and the call carried one). */
  readonly auth: TicketAuth | undefined;
  /** The ticket the call carried (in its header, or by the id of one defined on the connection). */
  readonly ticket: string | undefined;
}

/** Settings the decoder reads. */
export interface DecoderSettings {
  /** Business priority when neither the caller nor the method gives one. */
  readonly defaultPriority: number;
  /** Metadata key of the user id that user priority is hashed from. */
  readonly userIdKey: string;
  /** Streams one connection may have open at once. */
  readonly maxStreamsPerConnection: number;
  /** The ticket check (`ServerOptions.tickets`); absent: tickets are carried, not checked. */
  readonly tickets?: { readonly verifier: TicketVerifier; readonly required: boolean };
}

/** A body the decoder refused (already answered). */
export const REFUSED: unique symbol = Symbol('refused');

/** The decoding stage; see the module comment. */
export class RequestDecoder {
  private userSeed = 0x9e3779b9;

  /**
   * @param methods - the registered methods, by full name.
   * @param settings - priority defaults.
   * @param admissionLevel - the level to advertise in refusals.
   * @param observer - receives expired-in-queue refusals (metrics).
   * @param arrivedExpired - counts a call that arrived past its deadline as FastReject's demand:
   *   its business and user priority.
   */
  constructor(
    private readonly methods: ReadonlyMap<string, RegisteredMethod>,
    private readonly settings: DecoderSettings,
    private readonly admissionLevel: () => number | undefined,
    private readonly observer: ServerObserver | undefined,
    private readonly arrivedExpired?: (business: number, user: number) => void,
  ) {}

  /**
   * The header step.
   * @param sc - the connection; `callId` - the call's id on it.
   * @param bytes - the header bytes; `arrival` - epoch ms its chunk was read; `now` - epoch ms.
   * @returns what the call needs next, or undefined when it was refused (and answered).
   */
  header(sc: ServerConnection<InboundCall>, callId: number, bytes: Buffer, arrival: number, now: number): DecodedHeader | undefined {
    let h: RequestHeader;
    try {
      h = decodeRequestHeader(bytes);
    } catch (err) {
      sc.refuse(callId, this.admissionLevel(), errors.MALFORMED_REQUEST_HEADER, err as HeaderError);
      return undefined;
    }
    const queued = now - arrival;
    // Time the call has waited since its client sent it (client buffer, kernel, our read queue),
    // from the client's send-time stamp relative to the fastest call on this connection. Used
    // only for this call's own deadline, so a skewed or lying clock hurts only its own calls.
    let waited = queued;
    if (h.st !== undefined) {
      const w = sc.queuedFor(h.st, now);
      if (w > waited) waited = w;
    }
    const registered = this.methods.get(h.m);
    if (registered === undefined) {
      sc.refuse(callId, this.admissionLevel(), errors.UNKNOWN_METHOD, h.m);
      return undefined;
    }
    if (sc.hasCall(callId)) {
      sc.refuse(callId, this.admissionLevel(), errors.DUPLICATE_CALL_ID, callId);
      return undefined;
    }
    if ((h.k ?? 0) !== registered.kind) {
      sc.refuse(callId, this.admissionLevel(), errors.METHOD_KIND_MISMATCH, h.m, registered.kind, h.k ?? 0);
      return undefined;
    }
    if (registered.kind !== 0 && sc.streams >= this.settings.maxStreamsPerConnection) {
      // Each stream may hold a window of credit each way: the cap bounds a connection's memory.
      sc.refuse(callId, this.admissionLevel(), errors.TOO_MANY_STREAMS, sc.streams);
      return undefined;
    }
    // The ticket, before anything else is believed of the call: a refusal here is definite (not
    // "not processed"), so the client does not retry it elsewhere.
    // The ticket comes in the header (`tk`), or by the id of a TICKET frame sent on this connection before (`ti`).
    let ticket = h.tk;
    if (ticket !== undefined && ticket.length > MAX_TICKET_LENGTH) {
      // Not passed on either, by a server that checks no tickets.
      sc.refuse(callId, this.admissionLevel(), errors.TICKET_REJECTED, 'malformed', `a ticket is a JWS of 1 to ${MAX_TICKET_LENGTH} characters`);
      return undefined;
    }
    let slot: TicketSlot | undefined;
    if (h.ti !== undefined) {
      slot = sc.ticket(h.ti);
      if (slot === undefined) {
        sc.refuse(callId, this.admissionLevel(), errors.MALFORMED_REQUEST_HEADER, new HeaderError(`request header ticket id (ti) ${h.ti} names no ticket defined on this connection`));
        return undefined;
      }
      if (slot.oversized) {
        sc.refuse(callId, this.admissionLevel(), errors.TICKET_REJECTED, 'malformed', `a ticket is a JWS of 1 to ${MAX_TICKET_LENGTH} characters`);
        return undefined;
      }
      ticket = slot.ticket;
    }
    let auth: TicketAuth | undefined;
    const tickets = this.settings.tickets;
    if (tickets !== undefined) {
      const options = registered.def.options;
      if (ticket !== undefined) {
        const verifier = tickets.verifier;
        // A ticket defined on the connection keeps its last check while the keys stay: a pass
        // until the ticket expires, a failure for good (a forged ticket referred to again costs nothing).
        const current = slot !== undefined && slot.generation === verifier.generation;
        if (current && slot!.failure !== undefined) {
          sc.refuse(callId, this.admissionLevel(), errors.TICKET_REJECTED, slot!.failure.why, slot!.failure.message);
          return undefined;
        }
        if (current && slot!.auth !== undefined && slot!.auth.expiresAt > verifier.clock()) auth = slot!.auth;
        else {
          const check = verifier.verify(ticket);
          if (slot !== undefined) {
            slot.generation = verifier.generation;
            slot.auth = check.ok ? check.auth : undefined;
            slot.failure = check.ok ? undefined : check;
          }
          if (!check.ok) {
            sc.refuse(callId, this.admissionLevel(), errors.TICKET_REJECTED, check.why, check.message);
            return undefined;
          }
          auth = check.auth;
        }
      } else if (tickets.required && options?.public !== true) {
        sc.refuse(callId, this.admissionLevel(), errors.TICKET_MISSING, h.m);
        return undefined;
      }
      const scope = options?.scope;
      if (scope !== undefined && (auth === undefined || !auth.scopes.includes(scope))) {
        sc.refuse(callId, this.admissionLevel(), errors.TICKET_SCOPE_MISSING, h.m, scope);
        return undefined;
      }
    }
    // Priorities, also without overload control here: outbound calls of the handler carry them on.
    if ((h.b !== undefined && !isPriority(h.b)) || (h.u !== undefined && !isPriority(h.u))) {
      sc.refuse(callId, this.admissionLevel(), errors.INVALID_PRIORITY_HEADER, h.b, h.u);
      return undefined;
    }
    const business = effectiveBusinessPriority(h.b, registered.def.options?.priority) ?? this.settings.defaultPriority;
    // A verified user outranks whatever the caller claims (its `u`, its x-user-id metadata).
    const user = auth !== undefined ? userPriority(auth.userId, now) : (h.u ?? metadataUserPriority(h.md, this.settings.userIdKey, now) ?? this.anonymousUser(callId));
    if (h.d !== undefined && h.d > 0 && waited >= h.d) {
      // It waited (in buffers and queues) past its deadline: nobody wants the answer any more,
      // and running it would only make the queue longer. Cheap: the body is not even decoded.
      // FastReject still counts it as demand.
      sc.refuse(callId, this.admissionLevel(), errors.DEADLINE_WHILE_QUEUED, waited);
      this.observer?.rejected(h.m, 'expired', false);
      this.arrivedExpired?.(business, user);
      return undefined;
    }
    return { header: h, registered, queued, waited, business, user, auth, ticket };
  }

  /**
   * The body step.
   * @returns the request message (undefined for client-streaming and bidi calls), or `REFUSED`
   *   when the body is not a valid message (the call was answered INVALID_ARGUMENT).
   */
  body(sc: ServerConnection<InboundCall>, callId: number, decoded: DecodedHeader, body: Buffer): unknown {
    const registered = decoded.registered;
    if (registered.kind >= 2) return undefined;
    try {
      return registered.def.requestType.decode(body);
    } catch (err) {
      sc.refuse(callId, this.admissionLevel(), errors.INVALID_REQUEST_BODY, registered.def.requestTypeName, err);
      return REFUSED;
    }
  }

  /** A user priority for a call without a user id: a well-mixed function of a counter (no RNG per call). */
  private anonymousUser(callId: number): number {
    let x = (this.userSeed = (this.userSeed + 0x9e3779b9) | 0) ^ callId;
    x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
    x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
    return ((x ^ (x >>> 16)) >>> 0) % PRIORITY_LEVELS;
  }
}
