/**
 * Deterministic simulation of PaxosKV: many seeded runs of 3 and 5 replicas with a lossy,
 * duplicating, reordering, partitioning network, crashing replicas and retrying clients (see
 * simulator.ts). Each run must keep the invariants and produce a linearizable history.
 *
 *   SIM_SEEDS=5000 npx vitest run test/paxoskv/simulation.test.ts      more seeds
 *   SIM_SEED=1234 npx vitest run test/paxoskv/simulation.test.ts       one seed, with a trace
 */
import { describe, expect, it } from 'vitest';
import { checkKvHistory } from '../support/linearizability.js';
import { defaultSimOptions, simulate } from './simulator.js';

const single = process.env.SIM_SEED !== undefined ? Number(process.env.SIM_SEED) : undefined;
const count = Number(process.env.SIM_SEEDS ?? 1000);
const first = Number(process.env.SIM_FIRST_SEED ?? 1);

function runSeed(seed: number, trace?: (line: string) => void): { problem?: string; completed: number; crashes: number } {
  const result = simulate(defaultSimOptions(seed), trace);
  if (result.violations.length > 0) return { problem: `invariant violated: ${result.violations.join('; ')}`, ...result.stats };
  const check = checkKvHistory(result.history);
  if (check.verdict !== 'linearizable') {
    return { problem: `history ${check.verdict} on key ${check.key}: ${check.explanation ?? ''}`, ...result.stats };
  }
  return result.stats;
}

describe('PaxosKV deterministic simulation', () => {
  if (single !== undefined) {
    it(`seed ${single}`, () => {
      const lines: string[] = [];
      const r = runSeed(single, (l) => lines.push(l));
      if (r.problem !== undefined) console.log(lines.join('\n'));
      expect(r.problem).toBeUndefined();
    });
    return;
  }

  it(`${count} seeded runs keep every invariant and are linearizable`, () => {
    const failures: string[] = [];
    let completed = 0;
    let crashes = 0;
    for (let seed = first; seed < first + count; seed++) {
      const r = runSeed(seed);
      completed += r.completed;
      crashes += r.crashes;
      if (r.problem !== undefined) {
        failures.push(`seed ${seed}: ${r.problem}\n  replay: SIM_SEED=${seed} npx vitest run test/paxoskv/simulation.test.ts`);
        if (failures.length >= 5) break;
      }
    }
    expect(failures).toEqual([]);
    // The runs did real work through real faults (not an idle cluster).
    expect(completed).toBeGreaterThan(count * 50);
    expect(crashes).toBeGreaterThan(count / 2);
  });
});
