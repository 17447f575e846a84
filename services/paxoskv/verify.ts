/**
 * `svrkit kv verify`: PaxosStore's full-data verification (seed 004: "full-data verification" is
 * one of its safeguards). Every replica lists its keys with the chosen version and a checksum of
 * the chosen entry (`Digest`); the lists are merged in key order, and each key is classified:
 * - `ok`: every replica that answered holds the same version and checksum;
 * - `lagging`: some replica holds an older version (or none): normal after an outage, since a
 *   replica learns a key's newest entry when it next takes part in it; repaired by a read through
 *   that replica, which learns the newest entry on the way;
 * - `diverged`: two replicas hold the same version with different checksums. Paxos chooses one
 *   value per instance, so this is damage the record checksums did not see (or a bug). The
 *   replicas in the minority (a strict majority of all replicas agrees on the other checksum) are
 *   told to treat the key as lost and repair it from the others; with no such majority nothing is
 *   repaired and the key is reported;
 * - `lost`: some replica reports its record failed its checksum (it repairs it on its own).
 * The comparison (`classifyKey`) is pure; `verifyCluster` does the I/O.
 */
import { RpcError, statusName } from '../../framework/index.js';
import type { PaxosKVClient } from './client.js';

/** What one replica reported for one key (undefined: it does not hold the key). */
export interface KeyView {
  /** Its chosen version (0: nothing chosen). */
  readonly version: bigint;
  /** CRC-32 of its chosen entry (`entryChecksum`; 0 when none). */
  readonly checksum: number;
  /** Its record failed its checksum (or is being repaired): version and checksum are unknown. */
  readonly lost: boolean;
}

/** How one key compares across replicas. */
export interface KeyVerdict {
  readonly key: string;
  readonly kind: 'ok' | 'lagging' | 'diverged' | 'lost';
  /** The highest version any replica holds. */
  readonly version: bigint;
  /** Replica indexes (into the peer list) behind that version, or holding a minority checksum at it, or lost. */
  readonly replicas: readonly number[];
  /** For `diverged`: whether a strict majority of all replicas agrees on one checksum at the version. */
  readonly majority?: boolean;
}

/**
 * Classifies one key from every replica's view (see the module comment).
 * @param key - the key.
 * @param views - one entry per replica (by peer index): its view, undefined when it does not hold
 *   the key, or null when the replica did not answer (it is left out).
 * @returns the verdict.
 */
export function classifyKey(key: string, views: ReadonlyArray<KeyView | undefined | null>): KeyVerdict {
  const lost = views.flatMap((v, i) => (v?.lost === true ? [i] : []));
  if (lost.length > 0) return { key, kind: 'lost', version: 0n, replicas: lost };
  let top = 0n;
  for (const v of views) if (v !== null && v !== undefined && v.version > top) top = v.version;
  const behind: number[] = [];
  const byChecksum = new Map<number, number[]>();
  views.forEach((v, i) => {
    if (v === null) return;
    if (v === undefined || v.version < top) behind.push(i);
    else byChecksum.set(v.checksum, [...(byChecksum.get(v.checksum) ?? []), i]);
  });
  if (byChecksum.size > 1) {
    const groups = [...byChecksum.values()].sort((a, b) => b.length - a.length);
    const majority = groups[0]!.length > views.length / 2;
    const minority = majority ? groups.slice(1).flat() : groups.flat();
    return { key, kind: 'diverged', version: top, replicas: minority.sort((a, b) => a - b), majority };
  }
  if (behind.length > 0) return { key, kind: 'lagging', version: top, replicas: behind };
  return { key, kind: 'ok', version: top, replicas: [] };
}

/** What a verification found and did. */
export interface VerifyReport {
  /** Keys compared, and those the same on every replica that answered. */
  keys: number;
  ok: number;
  /** Keys not ok, with the verdict, and what repairing did (`repaired`: the action was accepted). */
  differences: Array<KeyVerdict & { repaired?: boolean; repairError?: string }>;
  /** Replicas that did not answer (by index), with the error. */
  down: Array<{ replica: number; error: string }>;
}

/**
 * Verifies a cluster: pages through every replica's `Digest` in key order, classifies each key,
 * and with `repair` reads lagging keys through the replicas behind and has diverged minorities
 * repair the key from the others.
 * @param client - a client of every replica (peer order = replica indexes).
 * @param peers - how many replicas the client has.
 * @param options - `repair`, the page size (keys, default 1000) and the per-call timeout (ms).
 * @returns the report.
 */
export async function verifyCluster(client: PaxosKVClient, peers: number, options: { repair: boolean; pageSize?: number; timeoutMs?: number }): Promise<VerifyReport> {
  const pageSize = options.pageSize ?? 1000;
  const call = { timeoutMs: options.timeoutMs ?? 5000 };
  const report: VerifyReport = { keys: 0, ok: 0, differences: [], down: [] };
  // Per replica: the page being merged, where it is in it, and where its next page starts.
  const cursors = Array.from({ length: peers }, () => ({ page: [] as Array<{ key: string } & KeyView>, at: 0, after: null as string | null, done: false, down: false }));
  const fill = async (i: number): Promise<void> => {
    const c = cursors[i]!;
    if (c.down || c.at < c.page.length || c.done) return;
    try {
      const r = await client.digest(i, c.after, pageSize, call);
      c.page = r.keys.map((k) => ({ key: k.key, version: k.version, checksum: k.checksum, lost: k.lost }));
      c.at = 0;
      c.done = r.done;
      if (c.page.length > 0) c.after = c.page[c.page.length - 1]!.key;
    } catch (err) {
      c.down = true;
      report.down.push({ replica: i, error: err instanceof RpcError ? `${statusName(err.code)}: ${err.message}` : String(err) });
    }
  };
  const order = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));
  for (;;) {
    await Promise.all(cursors.map((_, i) => fill(i)));
    let next: string | undefined;
    for (const c of cursors) {
      const k = c.page[c.at]?.key;
      if (!c.down && k !== undefined && (next === undefined || order(k, next) < 0)) next = k;
    }
    if (next === undefined) break;
    const views = cursors.map((c) => {
      if (c.down) return null;
      const v = c.page[c.at];
      if (v === undefined || v.key !== next) return undefined;
      c.at++;
      return v;
    });
    report.keys++;
    const verdict = classifyKey(next, views);
    if (verdict.kind === 'ok') {
      report.ok++;
      continue;
    }
    const diff: KeyVerdict & { repaired?: boolean; repairError?: string } = { ...verdict };
    if (options.repair && (verdict.kind === 'lagging' || (verdict.kind === 'diverged' && verdict.majority === true))) {
      try {
        for (const i of verdict.replicas) {
          if (verdict.kind === 'lagging') await client.readThrough(i, next, call);
          else if (!(await client.repair(i, next, call))) throw new Error(`replica ${i + 1} does not vote now, so it cannot repair the key`);
        }
        diff.repaired = true;
      } catch (err) {
        diff.repaired = false;
        diff.repairError = err instanceof RpcError ? `${statusName(err.code)}: ${err.message}` : String(err);
      }
    }
    report.differences.push(diff);
  }
  return report;
}
