/**
 * The config center's client SDK: follows one namespace's head, over PaxosKV's `Watch` stream (a
 * target of replicas) or over config servers' `ConfigCenter.Watch` (a `config://` target: the
 * replica processes, or `svrkit config serve` processes that fan one PaxosKV watch out to many
 * clients), and answers `get` from memory, evaluating the gray rules against the reading process (its labels
 * and zone) and the call being served (its caller and user, from the call context), so a handler
 * just calls `config.get('limit')`.
 *
 * The head it serves only moves forward (PaxosKV versions only grow, and a head with fewer
 * operations is ignored), so the release number a reader sees never goes down, and a promote
 * reaches every reader as one change. With `cacheFile`, every head is also written to a local file
 * (Apollo's local cache): when no replica answers at start, `ready()` serves the cached head and
 * `source` says so, until the watch delivers.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { currentCall, parseAddress, withoutCall, type ChannelOptions } from '../../framework/index.js';
import { PaxosKVClient } from '../paxoskv/client.js';
import { headKey } from './admin.js';
import { ConfigCenterClient } from './gen/svrkit/config/config.js';
import { inGray, type GrayContext } from './gray.js';
import { decodeHead, emptyHead, views as viewsOf, type NamespaceHead, type Resolved } from './model.js';

/** The reading process. */
export interface ConfigInstance {
  /** Its labels (gray rules `label:k=v`). */
  labels?: Readonly<Record<string, string>>;
  /** Its zone (gray rules `zone:z`). */
  zone?: string;
}

/** Options of {@link ConfigClient}. */
export interface ConfigClientOptions {
  /**
   * Where the config is: PaxosKV replicas (`host:port`, comma-separated or a list), a PaxosKV
   * client to use (not closed by `close()`), or config servers as `config://host:port[,host:port...]`
   * (PaxosKV replica processes, or `svrkit config serve` processes; a watch that fails moves to
   * another), or a `ConfigCenterClient` to share among many ConfigClients (not closed by `close()`).
   */
  target: string | readonly string[] | PaxosKVClient | ConfigCenterClient;
  /**
   * Options of the channels the client makes for a target given as addresses (replicas or
   * `config://` servers), e.g. `{ tls: { ca } }` for a PaxosKV cluster over TLS. Not used for a
   * client given as the target.
   */
  channel?: ChannelOptions;
  /** The namespace, e.g. `shop.checkout`. */
  namespace: string;
  /** This process, as the gray rules see it. */
  instance?: ConfigInstance;
  /** A file to keep the last head in, and to start from when no replica answers. */
  cacheFile?: string;
  /** How long `ready()` waits for a replica before it serves the cache file (ms). Default 3000. */
  readyTimeoutMs?: number;
  /** Metadata key of the user id that percentages and user lists see. Default `x-user-id`. */
  userIdKey?: string;
  /** Metadata key of the calling service, read when the call has no `caller` (a client other than svrkit's). Default `x-caller-service`. */
  callerKey?: string;
}

/** What `get` reads the gray rules against, beyond the instance (defaults: the current call's). */
export interface ConfigReadContext {
  /** The user the call is for. Default: the current call's `x-user-id` metadata. */
  userId?: string;
  /** The service that made the call. Default: the current call's `caller` (else its `x-caller-service` metadata). */
  caller?: string;
}

/** Where a {@link ConfigClient}'s head comes from: PaxosKV, config servers, its cache file, or nowhere yet. */
export type ConfigSource = 'none' | 'cache' | 'paxoskv' | 'server';

/** A change of what this client serves. */
export interface ConfigChange {
  /** The new head. */
  readonly head: NamespaceHead;
  /** The head before it. */
  readonly previous: NamespaceHead;
}

/**
 * Follows one namespace; see the module comment.
 *
 * ```ts
 * const config = new ConfigClient({ target: '127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103', namespace: 'shop.checkout', instance: { zone: 'z1' } });
 * await config.ready();
 * const limit = Number(config.get('limit') ?? '10');   // inside a handler: the caller's user decides a percentage gray
 * ```
 */
export class ConfigClient {
  /** The PaxosKV client (a target of replicas), or undefined (a `config://` target). */
  private readonly kv: PaxosKVClient | undefined;
  private readonly ownsKv: boolean;
  /** The config servers' client (a `config://` target, or one given). */
  private readonly center: ConfigCenterClient | undefined;
  private readonly ownsCenter: boolean = false;
  private readonly abort = new AbortController();
  private headNow: NamespaceHead;
  /** What the head resolves to, computed once per head: a `get` is then a rule check and a lookup. */
  private views!: { release: Resolved; gray: Resolved | undefined };
  /**
   * Whether a reader is in the current gray, by caller and user (what the rules look at beyond
   * this instance): a percentage costs a MurmurHash3 per reader, not per read. Cleared with every
   * new head, and when it holds `MEMO_LIMIT` readers.
   */
  private readonly memo = new Map<string, boolean>();
  private sourceNow: ConfigSource = 'none';
  private readonly listeners = new Set<(change: ConfigChange) => void>();
  private readonly readyPromise: Promise<void>;
  private resolveReady!: () => void;
  private gotFirst = false;
  private writing: Promise<void> = Promise.resolve();

  /**
   * Starts following the namespace at once.
   * @throws Error for a bad namespace name, an empty target, or a `config://` target that names a bad address.
   */
  constructor(private readonly options: ConfigClientOptions) {
    this.headNow = emptyHead(options.namespace);
    this.views = viewsOf(this.headNow);
    const t = options.target;
    if (t instanceof PaxosKVClient) {
      this.kv = t;
      this.ownsKv = false;
    } else if (t instanceof ConfigCenterClient) {
      this.kv = undefined;
      this.ownsKv = false;
      this.center = t;
    } else if (typeof t === 'string' && /^config:\/\//i.test(t.trim())) {
      const hosts = t.trim().slice('config://'.length).replace(/\/+$/, '').split(',').map((h) => h.trim()).filter((h) => h !== '');
      if (hosts.length === 0) throw new Error(`ConfigClient: target '${t}' names no config server; expected config://host:port[,host:port...]`);
      for (const h of hosts) {
        try {
          parseAddress(h);
        } catch {
          throw new Error(`ConfigClient: target '${t}': '${h}' is not host:port`);
        }
      }
      this.kv = undefined;
      this.ownsKv = false;
      this.center = new ConfigCenterClient(`static:///${hosts.join(',')}`, { connectTimeoutMs: 1000, ...options.channel });
      this.ownsCenter = true;
    } else {
      const peers = (typeof t === 'string' ? t.split(',') : [...t]).map((p) => p.trim()).filter((p) => p !== '');
      if (peers.length === 0) throw new Error('ConfigClient: target names no PaxosKV replica');
      this.kv = new PaxosKVClient({ peers, channel: options.channel });
      this.ownsKv = true;
    }
    this.readyPromise = new Promise<void>((r) => (this.resolveReady = r));
    // Outside any call: a client made inside a handler must not end with that call's deadline.
    void withoutCall(() => this.follow());
  }

  /**
   * Resolves once the client serves a head: the first one from PaxosKV (or the config servers), or,
   * when none answered within `readyTimeoutMs` and a cache file was given and readable, the cached
   * one (`source` is then `'cache'` until one answers). Without a cache it waits.
   */
  ready(): Promise<void> {
    return this.readyPromise;
  }

  /** Where the head served comes from: `'paxoskv'`, `'server'` (config servers), `'cache'` (none answered yet), or `'none'`. */
  get source(): ConfigSource {
    return this.sourceNow;
  }

  /** The head served now. */
  get head(): NamespaceHead {
    return this.headNow;
  }

  /**
   * A key's value for this process and the current call (or `ctx`), from memory.
   * @returns the value, or undefined when the namespace has no such key (for this reader).
   */
  get(key: string, ctx?: ConfigReadContext): string | undefined {
    const v = this.snapshot(ctx).values;
    return Object.prototype.hasOwnProperty.call(v, key) ? v[key] : undefined;
  }

  /** Everything this reader sees: the release number, whether it is in the gray, and the values (do not modify them). */
  snapshot(ctx?: ConfigReadContext): Resolved {
    const { release, gray } = this.views;
    if (gray === undefined) return release;
    const g = this.headNow.gray!;
    const context = this.context(ctx);
    const key = `${context.caller ?? ''}\u0000${context.userId ?? ''}`;
    let inside = this.memo.get(key);
    if (inside === undefined) {
      inside = inGray(g.rules, context, g.salt);
      if (this.memo.size >= MEMO_LIMIT) this.memo.clear();
      this.memo.set(key, inside);
    }
    return inside ? gray : release;
  }

  /**
   * Calls `listener` with every change of the head served (after it is served).
   * @returns a function that stops the calls.
   */
  onChange(listener: (change: ConfigChange) => void): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  /** Stops following (and closes the PaxosKV client or channel it made). Idempotent. */
  async close(): Promise<void> {
    if (this.abort.signal.aborted) return;
    this.abort.abort();
    if (this.ownsKv) this.kv?.close();
    if (this.ownsCenter) this.center?.close();
    await this.writing;
  }

  /** The gray rules' view of this reader. */
  private context(ctx: ConfigReadContext | undefined): GrayContext {
    let userId = ctx?.userId;
    let caller = ctx?.caller;
    if (userId === undefined || caller === undefined) {
      // Only what the caller left out comes from the call being served: its user from metadata,
      // its calling service as svrkit's channel states it (else from metadata).
      const call = currentCall();
      if (call !== undefined) {
        userId ??= call.metadata[this.options.userIdKey ?? 'x-user-id'];
        caller ??= call.caller ?? call.metadata[this.options.callerKey ?? 'x-caller-service'];
      }
    }
    const instance = this.options.instance;
    return { labels: instance?.labels, zone: instance?.zone, userId, caller };
  }

  private async follow(): Promise<void> {
    const timeout = setTimeout(() => void this.fromCache(), this.options.readyTimeoutMs ?? 3000);
    timeout.unref();
    try {
      if (this.center !== undefined) await this.followServers(this.center);
      else await this.followKv(this.kv!);
    } finally {
      clearTimeout(timeout);
    }
  }

  /**
   * Follows the namespace over the config servers' `Watch`: the current head first, then each
   * newer one; a stream that fails or ends is opened again (on another server, as the channel
   * picks) from the last version seen, after a pause that grows from 50 ms to 1 s while none answers.
   */
  private async followServers(center: ConfigCenterClient): Promise<void> {
    let from = 0n;
    let pauseMs = 50;
    const signal = this.abort.signal;
    while (!signal.aborted) {
      try {
        for await (const h of center.watch({ namespace: this.options.namespace, fromVersion: from }, { signal, deadline: Infinity, timeoutMs: undefined })) {
          pauseMs = 50;
          if (h.version < from) continue;
          from = h.version;
          let head: NamespaceHead;
          try {
            head = h.head.length === 0 ? emptyHead(this.options.namespace) : decodeHead(h.head, this.options.namespace);
          } catch {
            continue; // a head that does not decode is never served
          }
          this.serve(head, 'server');
        }
      } catch {
        // The server went away or refused: try again (another server, as the channel picks).
      }
      if (signal.aborted) return;
      await sleep(pauseMs, undefined, { signal }).catch(() => undefined);
      pauseMs = Math.min(1000, pauseMs * 2);
    }
  }

  private async followKv(kv: PaxosKVClient): Promise<void> {
    const key = headKey(this.options.namespace);
    // The head as it is now (a linearizable read: a namespace never published is served empty),
    // then every later version from the watch.
    let from = 0n;
    try {
      const got = await kv.get(key);
      if (got === null) this.serve(emptyHead(this.options.namespace), 'paxoskv');
      else {
        this.serve(decodeHead(got.value, this.options.namespace), 'paxoskv');
        from = got.version;
      }
    } catch {
      // No replica answered (the cache may serve meanwhile), or a head that does not decode
      // (never served): the watch below takes over either way.
    }
    try {
      for await (const e of kv.watch(key, { fromVersion: from, signal: this.abort.signal })) {
        let head: NamespaceHead;
        try {
          head = e.value === null ? emptyHead(this.options.namespace) : decodeHead(e.value, this.options.namespace);
        } catch {
          continue; // a head that does not decode is never served
        }
        this.serve(head, 'paxoskv');
      }
    } catch {
      // Aborted, or a bad namespace key (cannot happen: checked in the constructor).
    }
  }

  /** No replica answered in time: serve the cached head, if any. */
  private async fromCache(): Promise<void> {
    if (this.gotFirst || this.options.cacheFile === undefined) return;
    try {
      const cached = decodeHead(await fsp.readFile(this.options.cacheFile), this.options.namespace);
      if (!this.gotFirst) this.serve(cached, 'cache');
    } catch {
      // No cache (or a damaged one): wait for PaxosKV.
    }
  }

  private serve(head: NamespaceHead, source: Exclude<ConfigSource, 'none'>): void {
    const previous = this.headNow;
    if (this.gotFirst) {
      // Only forward: a head with fewer operations than the one served is older; the same one is no change
      // (but PaxosKV confirming a cached head makes PaxosKV the source).
      if (head.opSeq < previous.opSeq) return;
      if (head.opSeq === previous.opSeq) {
        if (source !== 'cache') this.sourceNow = source;
        return;
      }
    }
    const first = !this.gotFirst;
    this.gotFirst = true;
    this.headNow = head;
    this.views = viewsOf(head);
    this.memo.clear();
    this.sourceNow = source;
    if (first) this.resolveReady();
    if (source !== 'cache' && this.options.cacheFile !== undefined) this.writeCache(head);
    if (head.opSeq !== previous.opSeq) {
      for (const l of this.listeners) {
        // A listener that throws must not stop the client: reported, and the next one runs.
        try {
          l({ head, previous });
        } catch (err) {
          process.emitWarning(`ConfigClient ${this.options.namespace}: an onChange listener threw: ${(err as Error)?.stack ?? String(err)}`, 'ConfigListenerWarning');
        }
      }
    }
  }

  private writeCache(head: NamespaceHead): void {
    const file = this.options.cacheFile!;
    this.writing = this.writing
      .then(async () => {
        await fsp.mkdir(path.dirname(file), { recursive: true });
        const tmp = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
        await fsp.writeFile(tmp, JSON.stringify(head));
        await fsp.rename(tmp, file);
      })
      .catch(() => undefined);
  }
}

/** Readers whose gray membership a client remembers at most (see `ConfigClient.memo`). */
const MEMO_LIMIT = 100_000;
