/**
 * A replica's copy of the routing table (many groups; the rules in routing.ts): the replica of
 * group G keeps the newest table it has seen in `<data dir>/routing.json` with its group id, and
 * follows the routing key of the system group with a watch, so it answers a key it does not own
 * with the current table. A thin I/O wrapper: the table's rules are routing.ts's.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import writeFileAtomic from 'write-file-atomic';
import type { ChannelOptions } from '../../framework/index.js';
import { PaxosKVClient } from './client.js';
import { decodeRoutingTable, encodeRoutingTable, ROUTING_KEY, RoutingError, RoutingRing, type RoutingTable } from './routing.js';

/** The file in a replica's data dir. */
export const ROUTING_FILE = 'routing.json';

/** How a replica finds the table. */
export interface RoutingFollowerOptions {
  /** The replica's group (1..65535; 1 is the system group). */
  group: number;
  /**
   * Addresses `host:port` of the system group's replicas (for group 1: its own group's), where
   * the table is read first; once the replica has a table, it follows the system group's
   * replicas the table lists.
   */
  system: readonly string[];
  /** The replica's data dir (routing.json goes there). */
  dataDir: string;
  /** Options of the channels to the system group (TLS). */
  channel?: ChannelOptions;
  /** Called with each newer table the replica adopts. */
  onTable?: (table: RoutingTable) => void;
}

/** A data dir recorded for another group than the one the replica was started for. */
export class RoutingGroupMismatchError extends Error {
  override name = 'RoutingGroupMismatchError';
}

/** A replica's copy of the routing table; see the module comment. */
export class RoutingFollower {
  private current: RoutingTable | undefined;
  private currentRing: RoutingRing | undefined;
  private client: PaxosKVClient | undefined;
  private readonly abort = new AbortController();
  private writes: Promise<void> = Promise.resolve();

  private constructor(private readonly options: RoutingFollowerOptions, table: RoutingTable | undefined) {
    if (table !== undefined) this.use(table);
  }

  /**
   * Reads the data dir's copy (none on a first start) and checks it is this group's.
   * @returns the follower, not yet following (see {@link follow}).
   * @throws RoutingGroupMismatchError when the data dir was recorded for another group;
   *   Error when routing.json is not such a file (it names the file and what is wrong).
   */
  static async open(options: RoutingFollowerOptions): Promise<RoutingFollower> {
    const file = path.join(options.dataDir, ROUTING_FILE);
    let text: string | undefined;
    try {
      text = await fsp.readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (text === undefined) {
      const f = new RoutingFollower(options, undefined);
      await f.save();
      return f;
    }
    let saved: { group?: unknown; table?: unknown };
    let table: RoutingTable | undefined;
    try {
      saved = JSON.parse(text) as { group?: unknown; table?: unknown };
      table = saved.table === undefined || saved.table === null ? undefined : decodeRoutingTable(new TextEncoder().encode(JSON.stringify(saved.table)));
    } catch (err) {
      throw new Error(`${file}: not a routing file ({"group": <n>, "table": <routing table>}): ${(err as Error).message}`);
    }
    if (saved.group !== options.group) {
      throw new RoutingGroupMismatchError(`data dir ${options.dataDir} holds a replica of group ${String(saved.group)}, not of group ${options.group} (--group): give its own group, or another data dir`);
    }
    return new RoutingFollower(options, table);
  }

  /** The replica's group. */
  get group(): number {
    return this.options.group;
  }

  /** The newest table the replica has, or undefined before it read one. */
  get table(): RoutingTable | undefined {
    return this.current;
  }

  /** The ring of {@link table}. */
  get ring(): RoutingRing | undefined {
    return this.currentRing;
  }

  /**
   * Starts following the system group's routing key (a watch, resumed on another replica when one
   * fails); runs until {@link close}.
   */
  follow(): void {
    if (this.client !== undefined) return;
    // The system group's replicas as the table lists them (they may have been replaced since the
    // replica was started); the addresses given are where a first table is found.
    const client = new PaxosKVClient({
      peers: this.options.system,
      ...(this.current === undefined ? {} : { routing: this.current }),
      ...(this.options.channel === undefined ? {} : { channel: this.options.channel }),
    });
    this.client = client;
    void (async () => {
      while (!this.abort.signal.aborted) {
        try {
          for await (const e of client.watch(ROUTING_KEY, { signal: this.abort.signal })) {
            if (e.value !== null) this.offer(e.value);
          }
        } catch {
          // A refused watch (it cannot be: the routing key is readable): wait, and again.
          await new Promise((r) => setTimeout(r, 1000).unref());
        }
      }
    })();
  }

  /**
   * Offers a table seen elsewhere (a value of the routing key); the follower adopts it when its
   * epoch is newer than its own, and saves it.
   * @returns whether it was adopted (false for an older or equal epoch, or bytes that are no table).
   */
  offer(bytes: Uint8Array): boolean {
    let t: RoutingTable;
    try {
      t = decodeRoutingTable(bytes);
    } catch (err) {
      if (err instanceof RoutingError) return false;
      throw err;
    }
    if (this.current !== undefined && t.epoch <= this.current.epoch) return false;
    this.use(t);
    this.client?.useRouting(t);
    // A failed save leaves the copy on disk older: the next start follows the key again.
    this.save().catch(() => undefined);
    this.options.onTable?.(t);
    return true;
  }

  /** Stops following. */
  async close(): Promise<void> {
    this.abort.abort();
    this.client?.close();
    await this.writes;
  }

  private use(t: RoutingTable): void {
    this.current = t;
    this.currentRing = new RoutingRing(t);
  }

  /** Saves the group and the table (writes one at a time, the newest last); rejects when the write fails. */
  private save(): Promise<void> {
    const file = path.join(this.options.dataDir, ROUTING_FILE);
    const table = this.current;
    const text = `${JSON.stringify({ group: this.options.group, table: table === undefined ? null : JSON.parse(new TextDecoder().decode(encodeRoutingTable(table))) })}\n`;
    const write = this.writes.then(() => writeFileAtomic(file, text, { fsync: true }));
    this.writes = write.catch(() => undefined);
    return write;
  }
}
