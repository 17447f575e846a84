/**
 * Routing keys to Paxos groups (services/paxoskv/routing.ts): the transcript
 * test/paxoskv/testdata/routing.txt, and the properties consistent hashing promises: keys spread
 * evenly, and adding a group moves only about 1/(G+1) of them, all to the new group.
 */
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { checkNextRoutingTable, decodeRoutingTable, encodeRoutingTable, RoutingRing, withGroupReplicas, type RoutingTable } from '../../services/paxoskv/routing.js';
import { runTranscript } from '../support/datadriven.js';

const FILE = fileURLToPath(new URL('./testdata/routing.txt', import.meta.url));
const table = (ids: number[], vnodes?: number): RoutingTable => ({
  epoch: 1,
  groups: ids.map((id) => ({ id, replicas: [1, 2, 3].map((r) => `g${id}-r${r}:7101`) })),
  ...(vnodes === undefined ? {} : { vnodes }),
});

describe('routing transcript', () => {
  let ring: RoutingRing | undefined;
  const run = (cmd: string, args: readonly string[]): string => {
    switch (cmd) {
      case 'table': {
        const kv = Object.fromEntries(args.map((a) => a.split('=') as [string, string]));
        const t: RoutingTable = { ...table(kv.groups!.split(',').map(Number), kv.vnodes === undefined ? undefined : Number(kv.vnodes)), epoch: Number(kv.epoch ?? 1) };
        ring = new RoutingRing(t);
        return `epoch ${t.epoch}: groups [${t.groups.map((g) => g.id).join(',')}], ${t.vnodes ?? 64} vnodes`;
      }
      case 'owner':
        return args.map((k) => `${k} -> ${ring!.groupOf(k)}`).join('\n');
      case 'bad':
        decodeRoutingTable(new TextEncoder().encode(args.join(' ')));
        return 'decoded';
      default:
        throw new Error(`unknown command ${cmd}`);
    }
  };
  runTranscript(FILE, run);

});

describe('consistent hashing of keys over groups', () => {
  const keys = Array.from({ length: 20_000 }, (_, i) => `key-${i}`);

  it('spreads keys evenly: every group of 4 holds within 20% of a quarter', () => {
    const ring = new RoutingRing(table([1, 2, 3, 4]));
    const counts = new Map<number, number>();
    for (const k of keys) counts.set(ring.groupOf(k), (counts.get(ring.groupOf(k)) ?? 0) + 1);
    expect([...counts.keys()].sort()).toEqual([1, 2, 3, 4]);
    for (const [g, n] of counts) expect(Math.abs(n - keys.length / 4) / (keys.length / 4), `group ${g}: ${n}`).toBeLessThan(0.2);
  });

  it('adding a group moves about 1/(G+1) of the keys, all to the new group', () => {
    for (const g of [1, 2, 4]) {
      const before = new RoutingRing(table(Array.from({ length: g }, (_, i) => i + 1)));
      const after = new RoutingRing(table(Array.from({ length: g + 1 }, (_, i) => i + 1)));
      let moved = 0;
      for (const k of keys) {
        const a = before.groupOf(k);
        const b = after.groupOf(k);
        if (a !== b) {
          moved++;
          expect(b, `${k} moved from ${a} to ${b}, not to the new group`).toBe(g + 1);
        }
      }
      const share = moved / keys.length;
      expect(Math.abs(share - 1 / (g + 1)), `${g} -> ${g + 1} groups: ${(share * 100).toFixed(1)}% moved`).toBeLessThan(0.08);
    }
  });

  it('round-trips through the routing key\'s encoding, and routes to the group\'s replicas', () => {
    const t = table([3, 5], 16);
    expect(decodeRoutingTable(encodeRoutingTable(t))).toEqual(t);
    const ring = new RoutingRing(t);
    const g = ring.route('inbox/alice');
    expect(g.replicas).toEqual([1, 2, 3].map((r) => `g${g.id}-r${r}:7101`));
  });
});

describe('the routing table\'s epochs (what SetRouting accepts)', () => {
  it('a first table has epoch 1 and the system group; a next one has epoch + 1 and moves no key', () => {
    const first = table([1, 2, 3]);
    expect(() => checkNextRoutingTable(undefined, first)).not.toThrow();
    expect(() => checkNextRoutingTable(undefined, { ...first, epoch: 2 })).toThrow(/the first routing table has epoch 1, not 2/);
    expect(() => checkNextRoutingTable(undefined, table([2, 3]))).toThrow(/needs group 1, the system group/);
    const moved = withGroupReplicas(first, 2, ['new-a:1', 'new-b:1', 'new-c:1']);
    expect(moved.epoch).toBe(2);
    expect(moved.groups.find((g) => g.id === 2)!.replicas).toEqual(['new-a:1', 'new-b:1', 'new-c:1']);
    expect(moved.groups.find((g) => g.id === 1)).toEqual(first.groups[0]);
    expect(() => checkNextRoutingTable(first, moved)).not.toThrow();
    // The same addresses: no new epoch.
    expect(withGroupReplicas(first, 2, first.groups[1]!.replicas)).toBe(first);
    expect(() => checkNextRoutingTable(first, { ...moved, epoch: 3 })).toThrow(/at epoch 1: the next one has epoch 2, not 3/);
    expect(() => checkNextRoutingTable(first, { ...table([1, 2, 3, 4]), epoch: 2 })).toThrow(/groups \[1,2,3,4\] with 64 vnodes would move keys from groups \[1,2,3\]/);
    expect(() => checkNextRoutingTable(first, { ...table([1, 2, 3], 32), epoch: 2 })).toThrow(/would move keys/);
    expect(() => withGroupReplicas(first, 9, ['a:1'])).toThrow(/no group 9/);
    expect(() => withGroupReplicas(first, 2, [])).toThrow(/group 2 has no replica/);
  });
});
