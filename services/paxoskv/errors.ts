/**
 * PaxosKV's error catalogue: the call outcomes the service raises, made with the framework's
 * `defineErrors` as the framework's own (framework/errors.ts), so each error carries its name in
 * `RpcError.reason` and the reason reaches the client over the wire.
 *
 * The consensus core (core/) is pure and framework-free: it reports a failed operation as a gRPC
 * status name and a message it composes. `CORE_OUTCOMES` gives each of those statuses its entry
 * here, whose template takes the core's message as is. Programmer errors at construction (a bad
 * peer list, a member missing from it) stay plain `Error`s, and storage errors stay the storage's
 * own (a data dir is the environment, not a call outcome).
 */
import { defineErrors, Status, type RpcErrorEntry } from '../../framework/index.js';
import type { ClientResult } from './core/types.js';

/** Every error PaxosKV raises: the replica's checks of requests and peer batches, the core's outcomes, the client's own. */
export const kvErrors = defineErrors({
  // --- Request checks (replica-server.ts) ---
  /** An empty key. */
  EMPTY_KEY: { status: Status.INVALID_ARGUMENT, message: () => 'key must not be empty' },
  /** A key that starts with NUL: the system's own keys (the membership configuration), which clients cannot name. */
  SYSTEM_KEY: { status: Status.INVALID_ARGUMENT, message: () => 'keys starting with NUL (\\u0000) are the system\'s own' },
  /** A key over `MAX_KEY_BYTES`. */
  KEY_TOO_LONG: { status: Status.INVALID_ARGUMENT, message: (maxBytes: number) => `key is longer than ${maxBytes} bytes` },
  /** A value over `MAX_VALUE_BYTES`. */
  VALUE_TOO_LARGE: { status: Status.INVALID_ARGUMENT, message: (bytes: number, maxBytes: number) => `value of ${bytes} bytes exceeds the maximum ${maxBytes}` },
  /** A watch's `from_version` above 2^53 - 1. */
  FROM_VERSION_OUT_OF_RANGE: { status: Status.INVALID_ARGUMENT, message: () => 'from_version out of range' },
  /** A compare-and-set's expected version above 2^53 - 1. */
  EXPECTED_VERSION_OUT_OF_RANGE: { status: Status.INVALID_ARGUMENT, message: () => 'expected version out of range' },
  /** A membership change that names no change or a bad member id (the message says which). */
  INVALID_MEMBERSHIP_CHANGE: { status: Status.INVALID_ARGUMENT, message: (why: string) => `membership change: ${why}` },
  /** A membership change the configuration does not allow now (core/membership.ts's rules), or another change under way. */
  MEMBERSHIP_CHANGE_REFUSED: { status: Status.FAILED_PRECONDITION, message: (why: string) => `membership change refused: ${why}` },
  /** A membership change that began and had not finished by the caller's deadline (it goes on). */
  MEMBERSHIP_CHANGE_UNFINISHED: {
    status: Status.DEADLINE_EXCEEDED,
    message: (configuration: string) => `the membership change began and is not finished yet (${configuration}): its new voters are still syncing; svrkit kv member list shows it`,
  },
  /** A write id that breaks a rule (the message names the field). */
  INVALID_WRITE_ID: { status: Status.INVALID_ARGUMENT, message: (why: string) => `write_id: ${why}` },

  // --- Peer batches (replica-server.ts) ---
  /** A batch from a replica of another cluster (another member list). */
  FOREIGN_CLUSTER: {
    status: Status.FAILED_PRECONDITION,
    message: (cluster: string, ours: string) => `peer batch from cluster [${cluster}], this replica is in [${ours}]`,
  },
  /** A batch from this replica itself, or from an id that is no member. */
  NOT_A_PEER: {
    status: Status.FAILED_PRECONDITION,
    message: (from: number, ours: string) => `peer batch from ${from}, which is not another member of [${ours}]`,
  },
  /** Over TLS: a peer batch from a caller whose certificate does not name the member it says it is from (tls.ts). */
  PEER_NOT_AUTHENTICATED: {
    status: Status.UNAUTHENTICATED,
    message: (from: number, why: string) => `peer batch says it is from member ${from}, but the caller ${why}: refused`,
  },
  /** Over TLS: an operator call (`Repair`) from a caller without a certificate from the cluster's CA. */
  ADMIN_NOT_AUTHENTICATED: {
    status: Status.UNAUTHENTICATED,
    message: (method: string) => `${method} needs a certificate signed by the cluster CA (client.pem of the TLS dir): refused`,
  },
  /** A peer message the codec cannot read. */
  MALFORMED_PEER_MESSAGE: { status: Status.INVALID_ARGUMENT, message: (why: string) => `malformed peer message: ${why}` },

  // --- The core's outcomes (the message is the core's) ---
  /** Compare-and-set found the key at another version (metadata `x-version` has it). */
  VERSION_MISMATCH: { status: Status.FAILED_PRECONDITION, message: (coreMessage: string) => coreMessage },
  /** The write's session floor passed it: this attempt was not applied. */
  WRITE_BELOW_FLOOR: { status: Status.ABORTED, message: (coreMessage: string) => coreMessage },
  /** The write expired in the key's log time, or the caller's deadline passed. */
  NOT_DECIDED_IN_TIME: { status: Status.DEADLINE_EXCEEDED, message: (coreMessage: string) => coreMessage },
  /** The replica cannot serve the operation now (not serving, rejoined after a data loss, no decision after its attempts). */
  REPLICA_UNAVAILABLE: { status: Status.UNAVAILABLE, message: (coreMessage: string) => coreMessage },
  /**
   * As `REPLICA_UNAVAILABLE`, for an operation the replica never sent in an accept message (it was
   * not serving, the key is being repaired, it rejoined, or no prepare won a majority): it was not
   * applied and cannot be later. `PaxosKVClient` retries it on another replica, and a
   * compare-and-set's outcome stays known. The reason, not `notProcessed`, carries this: a
   * server never forwards `notProcessed` from a handler (the handler ran, but changed nothing).
   */
  REPLICA_UNAVAILABLE_NOT_APPLIED: { status: Status.UNAVAILABLE, message: (coreMessage: string) => coreMessage },
  /** The core answered an operation with a result of another kind (a bug). */
  UNEXPECTED_RESULT: { status: Status.INTERNAL, message: () => 'unexpected result kind' },

  // --- Many groups (replica-server.ts; the rules in routing.ts) ---
  /**
   * A key (or a list) sent to a replica of a group that does not own it: the replica's routing
   * table travels in the metadata (`ROUTING_METADATA`), and `PaxosKVClient` retries at the right
   * group within the call's deadline. Nothing was applied.
   */
  WRONG_GROUP: {
    status: Status.FAILED_PRECONDITION,
    message: (what: string, owner: number, group: number, epoch: number) => `${what} belongs to group ${owner}, not to group ${group} of this replica (routing table epoch ${epoch}, in the metadata)`,
  },
  /** A list without the group it is for, sent to a replica of a cluster of many groups. */
  LIST_NEEDS_GROUP: {
    status: Status.FAILED_PRECONDITION,
    message: (group: number, epoch: number) => `a list in a cluster of many groups names its group; this replica is in group ${group} (routing table epoch ${epoch}, in the metadata)`,
  },
  /** A routing table that does not decode, or breaks a rule of routing.ts (the message says which). */
  INVALID_ROUTING_TABLE: { status: Status.INVALID_ARGUMENT, message: (why: string) => `routing table: ${why}` },
  /** A routing table that may not follow the current one (another epoch, or it would move keys), or a concurrent write won. */
  ROUTING_CHANGE_REFUSED: { status: Status.FAILED_PRECONDITION, message: (why: string) => `routing table refused: ${why}` },
  /** `SetRouting` on a replica outside the system group, or of a cluster of one group. */
  NOT_SYSTEM_GROUP: {
    status: Status.FAILED_PRECONDITION,
    message: (group: number) => (group === 0 ? 'this replica serves a cluster of one group (start replicas with --group to route keys over many)' : `the routing table lives in group 1, the system group; this replica is in group ${group}`),
  },

  // --- The client (client.ts) ---
  /** The client was closed (`PaxosKVClient.close`) before the call, or while it moved between replicas. */
  CLIENT_CLOSED: { status: Status.UNAVAILABLE, notProcessed: true, message: () => 'the PaxosKV client is closed' },
  /** A call for one group of a cluster whose routing table the client could not read from any replica it knows. */
  NO_ROUTING_TABLE: { status: Status.UNAVAILABLE, message: (group: number) => `no replica answered with the routing table, so group ${group} cannot be found` },
  /** A membership change of one group finished, and the routing table could not be given the group's new addresses by the deadline. */
  ROUTING_NOT_UPDATED: {
    status: Status.UNAVAILABLE,
    message: (group: number, configuration: string, why: string) =>
      `the membership change of group ${group} is done (${configuration}), but the routing table still has the group's old addresses (${why}): run the change again to publish them`,
  },
  /** A call for a group the routing table does not have. */
  NO_SUCH_GROUP: { status: Status.INVALID_ARGUMENT, message: (group: number, groups: string) => `the routing table has no group ${group} (groups ${groups})` },
  /** The client's deadline passed before any replica answered. */
  DEADLINE_BEFORE_ANY_REPLY: { status: Status.DEADLINE_EXCEEDED, message: () => 'deadline exceeded before any replica answered' },
  /** compareAndSet failed its precondition after an earlier attempt's outcome became unknown (it may still apply). */
  CAS_OUTCOME_UNKNOWN: {
    status: Status.UNKNOWN,
    message: (reported: string) => `compareAndSet outcome unknown: a replica reported ${reported}, but an earlier attempt's outcome is unknown and may still apply`,
  },
});

/** The status names the core fails an operation with. */
export type CoreFailureStatus = Extract<ClientResult, { ok: false }>['status'];

/** The entry of each core failure status (each entry's status is that status). */
export const CORE_OUTCOMES: { readonly [S in CoreFailureStatus]: RpcErrorEntry<[coreMessage: string]> } = Object.freeze({
  FAILED_PRECONDITION: kvErrors.VERSION_MISMATCH,
  ABORTED: kvErrors.WRITE_BELOW_FLOOR,
  DEADLINE_EXCEEDED: kvErrors.NOT_DECIDED_IN_TIME,
  UNAVAILABLE: kvErrors.REPLICA_UNAVAILABLE,
});
