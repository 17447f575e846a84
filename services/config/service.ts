/**
 * The config center as an RPC service (`svrkit.config.ConfigCenter`, proto/svrkit/config/config.proto),
 * over a PaxosKV client: every PaxosKV replica process serves it (`svrkit kv serve`), and so does a
 * stateless process pointed at a PaxosKV cluster (`svrkit config serve --peers ...`).
 *
 * Watches fan out: a server follows each watched namespace with one PaxosKV read and watch
 * (`Fanout`), however many clients watch it, and hands each client the latest head. Writes go
 * through `ConfigAdmin` (one compare-and-set of the head per operation), recording as their author
 * the request's `by`, else the calling service, else the caller's address.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { RpcError, type CallContext } from '../../framework/index.js';
import { Fanout } from '../paxoskv/fanout.js';
import type { PaxosKVClient } from '../paxoskv/client.js';
import { ConfigAdmin, headKey } from './admin.js';
import { configErrors } from './errors.js';
import { parseRule, type GrayRule } from './gray.js';
import { checkChanges, checkNamespace, decodeHead, encodeHead, type ConfigChanges, type NamespaceHead } from './model.js';
import {
  ConfigCenterService,
  type GrayRequest,
  type Head,
  type HistoryReply,
  type NamespaceRequest,
  type OpRequest,
  type PublishRequest,
  type RollbackRequest,
  type WatchRequest,
} from './gen/svrkit/config/config.js';

/** A namespace's head as the service sends it: its PaxosKV version and stored bytes (null: never published). */
interface StoredHead {
  readonly version: bigint;
  readonly value: Uint8Array | null;
}

/** Options of {@link ConfigCenterServer}. */
export interface ConfigCenterServerOptions {
  /** How long a namespace's PaxosKV watch outlives its last watcher (ms). Default 5000. */
  lingerMs?: number;
  /** Pause between attempts when PaxosKV does not answer a namespace's first read (ms). Default 200. */
  retryMs?: number;
}

/** The namespace of a request, checked. */
function namespaceOf(namespace: string): string {
  try {
    checkNamespace(namespace);
  } catch (err) {
    throw configErrors.INVALID_CONFIG_REQUEST((err as Error).message);
  }
  return namespace;
}

/**
 * An admin failure as the service answers it: PaxosKV's own errors as they are, a stored head or
 * snapshot that does not decode (the model's decoders say "the stored ..." or "the snapshot ...")
 * as DATA_LOSS, the model's other refusals as FAILED_PRECONDITION (requests are checked before).
 */
function refusal(err: unknown): Error {
  if (err instanceof RpcError) return err;
  const message = (err as Error)?.message ?? String(err);
  if (/: the (stored|snapshot of release|history log)/.test(message)) return configErrors.CONFIG_HEAD_MALFORMED(message);
  return configErrors.CONFIG_OP_REFUSED(message);
}

/** Changes from a request, checked (`INVALID_ARGUMENT` naming a bad key); `allowNone` for a gray that only changes its rules. */
function changesOf(request: { set: { [key: string]: string }; delete: string[] }, allowNone = false): ConfigChanges {
  const changes: ConfigChanges = { set: request.set, delete: request.delete };
  if (allowNone && Object.keys(changes.set).length === 0 && changes.delete.length === 0) return changes;
  try {
    checkChanges(changes);
  } catch (err) {
    throw configErrors.INVALID_CONFIG_REQUEST((err as Error).message);
  }
  return changes;
}

const reply = (head: NamespaceHead): Head => ({ namespace: head.namespace, version: 0n, head: encodeHead(head) });

/**
 * Serves `ConfigCenter` over a PaxosKV cluster; add it to a `Server` with `addService`.
 *
 * ```ts
 * const kv = new PaxosKVClient({ peers: ['127.0.0.1:7101', '127.0.0.1:7102', '127.0.0.1:7103'] });
 * server.addService(new ConfigCenterServer(kv));
 * ```
 */
export class ConfigCenterServer extends ConfigCenterService {
  private readonly admin: ConfigAdmin;
  /** One PaxosKV follower per watched namespace. */
  readonly fanout: Fanout<StoredHead>;

  /**
   * @param kv - the PaxosKV cluster's client (the caller's; `close()` does not close it).
   * @param options - see {@link ConfigCenterServerOptions}.
   */
  constructor(
    private readonly kv: PaxosKVClient,
    options: ConfigCenterServerOptions = {},
  ) {
    super();
    this.admin = new ConfigAdmin(kv);
    const retryMs = options.retryMs ?? 200;
    this.fanout = new Fanout<StoredHead>((namespace, emit, signal) => follow(kv, namespace, emit, signal, retryMs), options.lingerMs ?? 5000);
  }

  /**
   * The namespace's head (a linearizable PaxosKV read); version 0 and an empty head when it was never published.
   * @throws RpcError INVALID_ARGUMENT (`INVALID_CONFIG_REQUEST`) for a bad namespace; DATA_LOSS
   *   (`CONFIG_HEAD_MALFORMED`) for a stored head that does not decode; PaxosKV's errors when it does not answer.
   */
  override async get(request: NamespaceRequest): Promise<Head> {
    const namespace = namespaceOf(request.namespace);
    const got = await this.kv.get(headKey(namespace));
    if (got === null) return { namespace, version: 0n, head: new Uint8Array(0) };
    try {
      decodeHead(got.value, namespace);
    } catch (err) {
      throw configErrors.CONFIG_HEAD_MALFORMED((err as Error).message);
    }
    return { namespace, version: got.version, head: got.value };
  }

  /**
   * The latest head newer than `from_version` (any, for 0), then each newer one, from the
   * namespace's shared follower; ends when the call is cancelled, the server closes, or the
   * follower gives up (PaxosKV did not answer its first read: the client reconnects).
   * @throws RpcError INVALID_ARGUMENT for a bad namespace.
   */
  override async *watch(request: WatchRequest, call: CallContext): AsyncGenerator<Head> {
    const namespace = namespaceOf(request.namespace);
    let seen = request.fromVersion;
    let first = seen === 0n;
    for await (const h of this.fanout.subscribe(namespace, call.signal)) {
      if (!first && h.version <= seen) continue;
      first = false;
      seen = h.version;
      yield { namespace, version: h.version, head: h.value ?? new Uint8Array(0) };
    }
  }

  /**
   * A new release: the current one with `set` keys set and `delete` keys deleted.
   * @returns the new head (version 0).
   * @throws RpcError INVALID_ARGUMENT for a bad namespace or key, or no change; FAILED_PRECONDITION
   *   (`CONFIG_OP_REFUSED`) for a namespace over 1 MiB; DATA_LOSS for a stored head that does not
   *   decode; PaxosKV's errors when it does not answer. (So do the writes below.)
   */
  override async publish(request: PublishRequest, call: CallContext): Promise<Head> {
    const namespace = namespaceOf(request.namespace);
    const changes = changesOf(request);
    return this.write(() => this.admin.publish(namespace, changes, { by: author(request, call) }));
  }

  /**
   * Starts a gray release for readers matching any rule, or changes the running one (changes
   * merged, rules replaced).
   * @throws RpcError INVALID_ARGUMENT for a bad rule or none; FAILED_PRECONDITION before the first
   *   release, or for a new gray with no change.
   */
  override async gray(request: GrayRequest, call: CallContext): Promise<Head> {
    const namespace = namespaceOf(request.namespace);
    const changes = changesOf(request, true);
    let rules: GrayRule[];
    try {
      rules = request.rules.map(parseRule);
    } catch (err) {
      throw configErrors.INVALID_CONFIG_REQUEST((err as Error).message);
    }
    if (rules.length === 0) throw configErrors.INVALID_CONFIG_REQUEST('a gray needs at least one rule');
    return this.write(() => this.admin.gray(namespace, changes, rules, { by: author(request, call) }));
  }

  /**
   * The gray release becomes the next full release, in one write.
   * @throws RpcError FAILED_PRECONDITION when no gray runs.
   */
  override async promote(request: OpRequest, call: CallContext): Promise<Head> {
    const namespace = namespaceOf(request.namespace);
    return this.write(() => this.admin.promote(namespace, { by: author(request, call) }));
  }

  /**
   * Drops the gray release.
   * @throws RpcError FAILED_PRECONDITION when no gray runs.
   */
  override async abandon(request: OpRequest, call: CallContext): Promise<Head> {
    const namespace = namespaceOf(request.namespace);
    return this.write(() => this.admin.abandon(namespace, { by: author(request, call) }));
  }

  /**
   * A new release equal to release `to`.
   * @throws RpcError INVALID_ARGUMENT for `to` 0; FAILED_PRECONDITION when `to` is not an earlier release.
   */
  override async rollback(request: RollbackRequest, call: CallContext): Promise<Head> {
    const namespace = namespaceOf(request.namespace);
    if (request.to < 1) throw configErrors.INVALID_CONFIG_REQUEST('rollback needs the release to go back to (1 or more)');
    return this.write(() => this.admin.rollback(namespace, request.to, { by: author(request, call) }));
  }

  /**
   * The namespace's operations, oldest first (the last 1,000), each as JSON.
   * @throws RpcError INVALID_ARGUMENT for a bad namespace; DATA_LOSS for a malformed log; PaxosKV's errors.
   */
  override async history(request: NamespaceRequest): Promise<HistoryReply> {
    const namespace = namespaceOf(request.namespace);
    let ops;
    try {
      ops = await this.admin.history(namespace);
    } catch (err) {
      throw refusal(err);
    }
    const enc = new TextEncoder();
    return { ops: ops.map((o) => enc.encode(JSON.stringify(o))) };
  }

  /** Ends every watch and stops following PaxosKV (the PaxosKV client stays open). */
  close(): void {
    this.fanout.close();
  }

  private async write(op: () => Promise<NamespaceHead>): Promise<Head> {
    try {
      return reply(await op());
    } catch (err) {
      throw refusal(err);
    }
  }
}

/** Who an operation is recorded as done by: the request's `by`, else the calling service, else the peer's address. */
function author(request: { by: string }, call: CallContext): string {
  if (request.by !== '') return request.by;
  if (call.caller !== undefined && call.caller !== '') return `service ${call.caller}`;
  return call.peer !== '' ? `peer ${call.peer}` : 'unknown';
}

/** First reads a follower tries before it gives up (its watchers then reconnect, perhaps to another server). */
const FIRST_READ_ATTEMPTS = 10;

/**
 * Follows a namespace's head: a linearizable read, then PaxosKV's watch from its version (which
 * moves between replicas by itself). Gives up when the first read fails `FIRST_READ_ATTEMPTS`
 * times in a row, `retryMs` apart.
 */
async function follow(kv: PaxosKVClient, namespace: string, emit: (h: StoredHead) => void, signal: AbortSignal, retryMs: number): Promise<void> {
  const key = headKey(namespace);
  let from = 0n;
  for (let attempt = 1; ; attempt++) {
    if (signal.aborted) return;
    try {
      const got = await kv.get(key, { signal });
      emit(got === null ? { version: 0n, value: null } : { version: got.version, value: got.value });
      from = got?.version ?? 0n;
      break;
    } catch {
      if (attempt >= FIRST_READ_ATTEMPTS) return;
      await sleep(retryMs, undefined, { signal }).catch(() => undefined);
    }
  }
  for await (const e of kv.watch(key, { fromVersion: from, signal })) emit({ version: e.version, value: e.value });
}
