/**
 * The file registry (`file:///abs/path/registry.json`), svrkit's embedded default: a hand-editable
 * JSON array of instances on the local disk, shared by every process on the host.
 *
 * ```json
 * [
 *   {"service":"helloworld.Greeter","address":"10.0.0.5:7000","zone":"sh-1","labels":{"version":"1.4"},"weight":2},
 *   {"service":"helloworld.Greeter","address":"127.0.0.1:41234","zone":"","labels":{},"weight":1,"expiresAt":1732180000000}
 * ]
 * ```
 *
 * Entries without `expiresAt` are permanent (written by hand). Entries written by `register`
 * carry `expiresAt` (epoch ms), pushed forward every ttl/3 while the registering process lives;
 * past it they are not live, so a crashed process's instances vanish when their lease expires.
 * Every write takes a cross-process lock (`proper-lockfile`, `<file>.lock`), re-reads the file,
 * applies its change, drops expired entries and replaces the file atomically
 * (`write-file-atomic`), so concurrent registrations from many processes are never lost and
 * readers never see a half-written file. Watches follow the file with `chokidar` (edits apply
 * without restarts) plus a timer for the next lease expiry.
 *
 * All processes sharing a file must share a clock (the same host, or NTP-synced hosts on a
 * shared file system), since `expiresAt` is compared with the reader's `Date.now()`.
 *
 * The pure part (parse, validate, compute the live set at a time, apply a change, format) is
 * exported for tests and tools; `FileRegistry` is the I/O around it. `setup()` makes
 * `openRegistry` use it for `file:` URIs (`framework/setup.ts` calls it).
 */
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { watch as watchFiles, type FSWatcher } from 'chokidar';
import lockfile from 'proper-lockfile';
import writeFileAtomic from 'write-file-atomic';
import { compareInstances, leaseTtlMs, normalizeInstance, sameInstances, type Instance, type InstanceInput } from './instance.js';
import { registerRegistry, type RegisterOptions, type Registration, type Registry, type RegistryLocation } from './registry.js';

// ---------------------------------------------------------------------------------------------
// Pure: the file format and the live set.
// ---------------------------------------------------------------------------------------------

/** One entry of a registry file. */
export interface RegistryFileEntry {
  /** The validated instance (defaults filled in). */
  readonly instance: Instance;
  /** Lease expiry (epoch ms); undefined for a permanent, hand-written entry. */
  readonly expiresAt?: number;
  /** The entry as it appears in the file; rewrites keep hand-written entries exactly as written. */
  readonly raw: Readonly<Record<string, unknown>>;
}

/**
 * Parses and validates the text of a registry file (pure).
 * @param text - the file's contents; empty or whitespace-only text is an empty registry.
 * @param file - the file's path, for error messages.
 * @returns the entries, in file order.
 * @throws Error naming `file` (and the entry's 0-based index as `entry [i]`) when the text is not
 *   JSON, not an array, an entry is not a valid instance (see `normalizeInstance`), an
 *   `expiresAt` is not a finite number, or two entries list the same service and address.
 */
export function parseRegistryFile(text: string, file: string): RegistryFileEntry[] {
  if (text.trim() === '') return [];
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new Error(`registry file ${file}: invalid JSON: ${(err as Error).message}`);
  }
  if (!Array.isArray(doc)) {
    throw new Error(`registry file ${file}: expected a JSON array of instances like [{"service": "pkg.Service", "address": "127.0.0.1:7000"}], got ${doc === null ? 'null' : typeof doc}`);
  }
  const seen = new Map<string, number>();
  return doc.map((raw: unknown, i): RegistryFileEntry => {
    const where = `registry file ${file}: entry [${i}]`;
    const instance = normalizeInstance(raw, where);
    const fields = raw as Record<string, unknown>;
    const expiresAt = fields['expiresAt'];
    if (expiresAt !== undefined && (typeof expiresAt !== 'number' || !Number.isFinite(expiresAt))) {
      throw new Error(`${where}: 'expiresAt' must be a time in epoch milliseconds (or absent for a permanent entry)`);
    }
    const key = entryKey(instance.service, instance.address);
    const previous = seen.get(key);
    if (previous !== undefined) throw new Error(`${where}: ${instance.service} at ${instance.address} is already listed by entry [${previous}]`);
    seen.set(key, i);
    return { instance, expiresAt, raw: Object.freeze({ ...fields }) };
  });
}

/**
 * Formats entries as registry-file text (pure): a JSON array, one entry per line.
 * @returns the text, ending in a newline.
 */
export function formatRegistryFile(entries: readonly RegistryFileEntry[]): string {
  if (entries.length === 0) return '[]\n';
  return `[\n${entries.map((e) => `  ${JSON.stringify(e.raw)}`).join(',\n')}\n]\n`;
}

/** Whether an entry is live at `now` (epoch ms): permanent, or its lease not yet expired. */
export function isLive(entry: RegistryFileEntry, now: number): boolean {
  return entry.expiresAt === undefined || entry.expiresAt > now;
}

/**
 * The live instances at time `now` (pure).
 * @param now - epoch ms.
 * @param service - only this service's instances; all when omitted.
 * @returns a new array sorted by service then address.
 */
export function liveInstances(entries: readonly RegistryFileEntry[], now: number, service?: string): Instance[] {
  return entries
    .filter((e) => isLive(e, now) && (service === undefined || e.instance.service === service))
    .map((e) => e.instance)
    .sort(compareInstances);
}

/**
 * When the live set next changes by a lease expiring (pure).
 * @param now - epoch ms.
 * @returns the earliest `expiresAt` later than `now` (epoch ms), or undefined when none is.
 */
export function nextExpiry(entries: readonly RegistryFileEntry[], now: number): number | undefined {
  let next: number | undefined;
  for (const e of entries) if (e.expiresAt !== undefined && e.expiresAt > now && (next === undefined || e.expiresAt < next)) next = e.expiresAt;
  return next;
}

/**
 * The entries after registering (or renewing) `instance` with a lease until `expiresAt` (pure):
 * replaces an entry with the same service and address in place (or appends), and drops entries
 * whose lease expired by `now`.
 * @param expiresAt - epoch ms.
 * @param now - epoch ms.
 * @returns a new array.
 */
export function withRegistration(entries: readonly RegistryFileEntry[], instance: Instance, expiresAt: number, now: number): RegistryFileEntry[] {
  const raw = Object.freeze({
    service: instance.service,
    address: instance.address,
    zone: instance.zone,
    labels: instance.labels,
    weight: instance.weight,
    expiresAt,
  });
  const entry: RegistryFileEntry = { instance, expiresAt, raw };
  const key = entryKey(instance.service, instance.address);
  let replaced = false;
  const out: RegistryFileEntry[] = [];
  for (const e of entries) {
    if (entryKey(e.instance.service, e.instance.address) === key) {
      if (!replaced) out.push(entry);
      replaced = true;
    } else if (isLive(e, now)) {
      out.push(e);
    }
  }
  if (!replaced) out.push(entry);
  return out;
}

/**
 * The entries without the one for `service` at `address` (pure); also drops entries whose lease
 * expired by `now` (epoch ms).
 * @returns a new array.
 */
export function withoutInstance(entries: readonly RegistryFileEntry[], service: string, address: string, now: number): RegistryFileEntry[] {
  const key = entryKey(service, address);
  return entries.filter((e) => entryKey(e.instance.service, e.instance.address) !== key && isLive(e, now));
}

function entryKey(service: string, address: string): string {
  return `${service}\u0000${address}`;
}

// ---------------------------------------------------------------------------------------------
// I/O: FileRegistry.
// ---------------------------------------------------------------------------------------------

/** Quiet period after a file event before re-reading (ms): an editor's truncate+write is one change. */
const SETTLE_MS = 25;
/** A read that fails to parse is retried once after this long (ms) before it is reported: a non-atomic writer may be mid-write. */
const REREAD_MS = 100;
/** Watches also re-read this often (ms), in case a file-system event was missed. */
const SAFETY_POLL_MS = 5_000;
/** A lock not refreshed for this long (ms) is stale: its holder died, and it is broken. */
const LOCK_STALE_MS = 5_000;

interface Subscriber {
  readonly service: string;
  readonly onInstances: (instances: Instance[]) => void;
  readonly onError: (error: Error) => void;
  /** The list last reported; undefined before the first report. */
  last: Instance[] | undefined;
  /** The message of the error last reported since the last good read. */
  lastError: string | undefined;
}

/**
 * Registers the file registry with `registerRegistry`, so that `openRegistry` opens `file:` URIs
 * with `FileRegistry`. Called once by the composition root, `framework/setup.ts`; idempotent.
 * Takes nothing, returns nothing, throws nothing.
 */
export function setup(): void {
  registerRegistry('file', (location) => new FileRegistry(location));
}

/**
 * A registry in a JSON file (see the module comment). Construct it with `openRegistry`.
 * Its watches and lease timers never keep a process alive by themselves.
 */
export class FileRegistry implements Registry {
  /** The registry's URI (`file:///abs/path.json`). */
  readonly uri: string;
  /** Absolute path of the registry file. */
  readonly path: string;
  private closed = false;
  private readonly registrations = new Set<FileRegistration>();
  private renewTimer: NodeJS.Timeout | undefined;
  /** When the armed renewal timer fires (epoch ms). */
  private renewAt = Infinity;
  private renewing: Promise<void> = Promise.resolve();
  private readonly subscribers = new Set<Subscriber>();
  private watcher: FSWatcher | undefined;
  private entries: RegistryFileEntry[] | undefined;
  private settleTimer: NodeJS.Timeout | undefined;
  private expiryTimer: NodeJS.Timeout | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private reading = false;
  private readAgain = false;
  /** Serializes this object's writes (other processes are kept out by the file lock). */
  private writes: Promise<unknown> = Promise.resolve();

  /**
   * @param location - a parsed `file:` location (from `parseRegistryUri`).
   */
  constructor(location: Extract<RegistryLocation, { kind: 'file' }>) {
    this.uri = location.uri;
    this.path = location.path;
  }

  /**
   * Registers `input` with a lease of `options.ttlMs` (default 10000 ms), renewed every ttl/3
   * under the file lock; replaces any entry with the same service and address (also a
   * hand-written one).
   * @returns the registration, once the entry is in the file.
   * @throws Error (rejection) for an invalid instance or TTL, a closed registry, a missing
   *   parent directory, a malformed file (it is never overwritten then), or a lock that could not
   *   be taken for about 10 s.
   */
  async register(input: InstanceInput, options: RegisterOptions = {}): Promise<Registration> {
    this.checkOpen();
    const instance = normalizeInstance(input);
    const ttlMs = leaseTtlMs(options.ttlMs);
    await this.update((entries, now) => withRegistration(entries, instance, now + ttlMs, now));
    this.checkOpen();
    const registration = new FileRegistration(this, instance, ttlMs, options.onError);
    this.registrations.add(registration);
    this.scheduleRenewal();
    return registration;
  }

  /**
   * Reads the file and lists the live instances (of `service`, or all).
   * @returns instances sorted by service then address; `[]` when the file does not exist.
   * @throws Error (rejection) naming the file (and entry) when it cannot be read or is malformed,
   *   or when the registry is closed.
   */
  async list(service?: string): Promise<Instance[]> {
    this.checkOpen();
    return liveInstances(await this.read(), Date.now(), service);
  }

  /**
   * Watches `service`: `onInstances` gets the current live list after the first read, then each
   * changed list, whether the change is an edit of the file (applied within a few hundred ms) or
   * a lease expiring. A malformed or unreadable file calls `onError` (once per distinct error) and
   * keeps the previous list.
   * @returns unsubscribe.
   * @throws Error when the registry is closed or `service` is empty.
   */
  watch(service: string, onInstances: (instances: Instance[]) => void, onError: (error: Error) => void): () => void {
    this.checkOpen();
    if (typeof service !== 'string' || service === '') throw new Error('watch: service must be a non-empty string');
    const sub: Subscriber = { service, onInstances, onError, last: undefined, lastError: undefined };
    this.subscribers.add(sub);
    this.startWatching();
    void this.refresh();
    return () => {
      if (!this.subscribers.delete(sub)) return;
      if (this.subscribers.size === 0) this.stopWatching();
    };
  }

  /**
   * Stops lease renewals (entries stay in the file until they expire; it does NOT deregister) and
   * watches. Waits for a renewal in progress to finish. Idempotent; never rejects.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.registrations.clear();
    if (this.renewTimer !== undefined) clearTimeout(this.renewTimer);
    this.renewTimer = undefined;
    this.subscribers.clear();
    this.stopWatching();
    await this.renewing;
    await this.writes.catch(() => {});
  }

  // --- internals -----------------------------------------------------------------------------

  private checkOpen(): void {
    if (this.closed) throw new Error(`registry ${this.uri} is closed`);
  }

  /** Reads and parses the file; a missing file is an empty registry. */
  private async read(): Promise<RegistryFileEntry[]> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'ENOENT') return [];
      throw new Error(`registry file ${this.path}: cannot read it: ${e.message}`);
    }
    return parseRegistryFile(text, this.path);
  }

  /**
   * Applies `change` to the file: lock, read, change, atomic write (only when something changed),
   * unlock. Writes of this object run one at a time.
   * @internal (used by registrations)
   */
  update(change: (entries: RegistryFileEntry[], now: number) => RegistryFileEntry[]): Promise<void> {
    const run = this.writes.then(() => this.updateLocked(change));
    this.writes = run.catch(() => {});
    return run;
  }

  private async updateLocked(change: (entries: RegistryFileEntry[], now: number) => RegistryFileEntry[]): Promise<void> {
    const dir = path.dirname(this.path);
    try {
      if (!(await stat(dir)).isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new Error(
        code === 'ENOENT' || code === 'ENOTDIR'
          ? `registry file ${this.path}: directory ${dir} does not exist (create it first)`
          : `registry file ${this.path}: cannot use directory ${dir}: ${(err as Error).message}`,
      );
    }
    let release: () => Promise<void>;
    try {
      release = await lockfile.lock(this.path, {
        realpath: false,
        stale: LOCK_STALE_MS,
        // About 10 s in all: longer than LOCK_STALE_MS, so a lock left by a killed process is broken.
        retries: { retries: 120, factor: 1.3, minTimeout: 5, maxTimeout: 100, randomize: true },
        // The default throws from a timer (a crash); a compromised lock only means another
        // process may have written meanwhile, which the next renewal repairs.
        onCompromised: () => {},
      });
    } catch (err) {
      throw new Error(`registry file ${this.path}: cannot lock it (${this.path}.lock): ${(err as Error).message}`);
    }
    try {
      const before = await this.read();
      const after = change(before, Date.now());
      const text = formatRegistryFile(after);
      if (text !== formatRegistryFile(before)) {
        try {
          await writeFileAtomic(this.path, text);
        } catch (err) {
          throw new Error(`registry file ${this.path}: cannot write it: ${(err as Error).message}`);
        }
      }
    } finally {
      await release().catch(() => {});
    }
  }

  /**
   * @internal Stops renewing `registration` and removes its entry (matched by service and
   * address), after any renewal in progress.
   */
  async remove(registration: FileRegistration): Promise<void> {
    this.registrations.delete(registration);
    await this.renewing;
    const { service, address } = registration.instance;
    await this.update((entries, now) => withoutInstance(entries, service, address, now));
  }

  /**
   * Arms the renewal timer for the earliest lease due: every registration is renewed every
   * ttl/3 of the shortest TTL among them, all in one locked write.
   */
  private scheduleRenewal(): void {
    if (this.closed || this.registrations.size === 0) return;
    let interval = Infinity;
    for (const r of this.registrations) interval = Math.min(interval, Math.max(1, Math.floor(r.ttlMs / 3)));
    const at = Date.now() + interval;
    if (this.renewTimer !== undefined) {
      if (this.renewAt <= at) return;
      clearTimeout(this.renewTimer);
    }
    this.renewAt = at;
    this.renewTimer = setTimeout(() => {
      this.renewTimer = undefined;
      this.renewAt = Infinity;
      this.renewing = this.renewAll().finally(() => this.scheduleRenewal());
    }, interval);
    this.renewTimer.unref();
  }

  /** Pushes every registration's `expiresAt` forward in one write. Never rejects. */
  private async renewAll(): Promise<void> {
    const due = [...this.registrations];
    if (due.length === 0) return;
    try {
      await this.update((entries, now) => due.reduce((acc, r) => withRegistration(acc, r.instance, now + r.ttlMs, now), entries));
      for (const r of due) r.renewed();
    } catch (err) {
      for (const r of due) r.renewalFailed(err as Error);
    }
  }

  private startWatching(): void {
    if (this.watcher !== undefined) return;
    const dir = path.dirname(this.path);
    // Watch the directory, not the file: the file may not exist yet, and atomic writes replace it
    // by a rename. Everything else in the directory (temp files, the .lock) is ignored.
    this.watcher = watchFiles(dir, {
      depth: 0,
      ignoreInitial: true,
      persistent: false,
      ignored: (p: string) => p !== dir && p !== this.path,
    });
    this.watcher.on('all', (_event, p) => {
      if (p === this.path) this.scheduleRefresh(SETTLE_MS);
    });
    this.watcher.on('error', (err: unknown) => {
      this.reportError(new Error(`registry file ${this.path}: watching ${dir} failed: ${(err as Error)?.message ?? String(err)}`));
    });
    this.pollTimer = setInterval(() => this.scheduleRefresh(0), SAFETY_POLL_MS);
    this.pollTimer.unref();
  }

  private stopWatching(): void {
    const w = this.watcher;
    this.watcher = undefined;
    if (w !== undefined) void w.close().catch(() => {});
    for (const t of [this.settleTimer, this.expiryTimer, this.pollTimer]) if (t !== undefined) clearTimeout(t);
    this.settleTimer = this.expiryTimer = this.pollTimer = undefined;
    this.entries = undefined;
  }

  private scheduleRefresh(delayMs: number): void {
    if (this.watcher === undefined) return;
    if (this.settleTimer !== undefined) clearTimeout(this.settleTimer);
    this.settleTimer = setTimeout(() => {
      this.settleTimer = undefined;
      void this.refresh();
    }, delayMs);
    this.settleTimer.unref();
  }

  /** Re-reads the file and notifies watchers whose live list changed. Never rejects. */
  private async refresh(): Promise<void> {
    if (this.reading) {
      this.readAgain = true;
      return;
    }
    this.reading = true;
    try {
      do {
        this.readAgain = false;
        let entries: RegistryFileEntry[];
        try {
          entries = await this.read().catch(async () => {
            // Perhaps a writer that is not atomic (an editor) is mid-write: look once more.
            await new Promise((r) => setTimeout(r, REREAD_MS).unref());
            return this.read();
          });
        } catch (err) {
          if (this.watcher === undefined) return;
          this.reportError(err as Error);
          continue;
        }
        if (this.watcher === undefined) return;
        this.entries = entries;
        for (const sub of this.subscribers) sub.lastError = undefined;
        this.deliver();
      } while (this.readAgain && this.watcher !== undefined);
    } finally {
      this.reading = false;
    }
  }

  /** Reports the live lists computed from the last good read at the current time; arms the expiry timer. */
  private deliver(): void {
    const entries = this.entries;
    if (entries === undefined) return;
    const now = Date.now();
    for (const sub of [...this.subscribers]) {
      if (!this.subscribers.has(sub)) continue;
      const list = liveInstances(entries, now, sub.service);
      if (sub.last !== undefined && sameInstances(sub.last, list)) continue;
      sub.last = list;
      try {
        sub.onInstances(list.slice());
      } catch (err) {
        safeCall(sub.onError, new Error(`watch(${sub.service}): onInstances threw: ${(err as Error)?.message ?? String(err)}`));
      }
    }
    if (this.expiryTimer !== undefined) clearTimeout(this.expiryTimer);
    this.expiryTimer = undefined;
    const next = nextExpiry(entries, now);
    if (next !== undefined && this.watcher !== undefined) {
      // setTimeout's limit is 2^31-1 ms; a far-off expiry is re-armed on the way.
      this.expiryTimer = setTimeout(() => {
        this.expiryTimer = undefined;
        this.deliver();
      }, Math.min(next - now + 1, 2 ** 31 - 1));
      this.expiryTimer.unref();
    }
  }

  private reportError(error: Error): void {
    for (const sub of [...this.subscribers]) {
      if (sub.lastError === error.message) continue;
      sub.lastError = error.message;
      safeCall(sub.onError, error);
    }
  }
}

function safeCall(fn: (error: Error) => void, error: Error): void {
  try {
    fn(error);
  } catch {
    // A throwing error callback must not break the registry for the other watchers.
  }
}

/** A registration in a file registry; its registry renews its lease every ttl/3. */
class FileRegistration implements Registration {
  private lastError: string | undefined;
  private deregistered: Promise<void> | undefined;

  constructor(
    private readonly registry: FileRegistry,
    readonly instance: Instance,
    /** Lease TTL (ms). */
    readonly ttlMs: number,
    private readonly onError: ((error: Error) => void) | undefined,
  ) {}

  /** A renewal succeeded. */
  renewed(): void {
    this.lastError = undefined;
  }

  /** A renewal failed: tell `onError`, once per distinct failure. */
  renewalFailed(err: Error): void {
    const e = new Error(`lease renewal of ${this.instance.service} at ${this.instance.address} failed: ${err.message}`);
    if (this.lastError === e.message) return;
    this.lastError = e.message;
    if (this.onError !== undefined) safeCall(this.onError, e);
  }

  /**
   * Stops renewing and removes the entry (matched by service and address) from the file.
   * Idempotent once it succeeded; after a failure it may be called again. Works after the
   * registry's `close()` too.
   * @throws Error (rejection) when the file cannot be locked, read or written; the entry then
   *   expires with its lease.
   */
  deregister(): Promise<void> {
    this.deregistered ??= this.registry.remove(this).catch((err: unknown) => {
      this.deregistered = undefined; // a later call may retry
      throw err;
    });
    return this.deregistered;
  }
}
