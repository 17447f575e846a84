/**
 * `svrkit kv verify`'s comparison of one key across replicas (services/paxoskv/verify.ts), as a
 * pure function; the command itself runs against real replicas in kv-cli.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { classifyKey, type KeyView } from '../../services/paxoskv/verify.js';

const v = (version: number, checksum: number, lost = false): KeyView => ({ version: BigInt(version), checksum, lost });

describe('classifyKey', () => {
  it('ok when every replica that answered holds the same version and checksum (a replica down is left out)', () => {
    expect(classifyKey('k', [v(3, 7), v(3, 7), v(3, 7)])).toEqual({ key: 'k', kind: 'ok', version: 3n, replicas: [] });
    expect(classifyKey('k', [v(3, 7), null, v(3, 7)])).toMatchObject({ kind: 'ok' });
  });

  it('lagging: replicas behind the highest version, or without the key', () => {
    expect(classifyKey('k', [v(3, 7), v(2, 5), undefined])).toEqual({ key: 'k', kind: 'lagging', version: 3n, replicas: [1, 2] });
  });

  it('diverged: the same version with different checksums; the minority is named when a strict majority of all replicas agrees', () => {
    expect(classifyKey('k', [v(3, 7), v(3, 9), v(3, 7)])).toEqual({ key: 'k', kind: 'diverged', version: 3n, replicas: [1], majority: true });
    // 2 of 3 answered and disagree: no majority of all three; both are named, nothing is repaired.
    expect(classifyKey('k', [v(3, 7), v(3, 9), null])).toEqual({ key: 'k', kind: 'diverged', version: 3n, replicas: [0, 1], majority: false });
    // Divergence at the top version outranks a replica that is merely behind.
    expect(classifyKey('k', [v(3, 7), v(3, 9), v(3, 7), v(3, 7), v(1, 1)])).toMatchObject({ kind: 'diverged', replicas: [1], majority: true });
  });

  it('lost: a replica whose record failed its checksum (it repairs the key itself)', () => {
    expect(classifyKey('k', [v(3, 7), v(0, 0, true), v(3, 7)])).toEqual({ key: 'k', kind: 'lost', version: 0n, replicas: [1] });
  });
});
