/**
 * Deterministic simulation of the queue and table models (services/queue, services/table): the
 * production plans run by simulated clients against simulated PaxosKV replicas, under every fault
 * of `defaultSimOptions` (lossy, duplicating, partitioned network; crashes, also at fsync; clock
 * steps; wiped and rolled-back disks; membership changes). Each run must keep PaxosKV's invariants,
 * produce a linearizable key-value history, and a history of queue (table) operations that the
 * queue's (table's) specification accepts (test/support/queue-model.ts, table-model.ts): no item
 * lost, duplicated or reordered, dense sequence numbers, a retried push applied once; rows read and
 * written atomically, conditional writes on the row's version.
 *
 *   SIM_MODEL_SEEDS=20000 npx vitest run test/paxoskv/models-simulation.test.ts      more seeds
 *   SIM_FIRST_SEED=20001 SIM_MODEL_SEEDS=20000 npx vitest run ...                    another range
 */
import { describe, expect, it } from 'vitest';
import { defaultSimOptions, runAndCheck, type SimOptions } from './simulator.js';
import { QueueWorkload, type QueueWorkloadStats } from './queue-workload.js';
import { TableWorkload, type TableWorkloadStats } from './table-workload.js';

const count = Number(process.env.SIM_MODEL_SEEDS ?? 1000);
const first = Number(process.env.SIM_FIRST_SEED ?? 1);
const EXAMPLES = 5;

/**
 * The fault profile of `seed`, with the model workload's clients. Operations keep trying for 10 s
 * (3 s in the PaxosKV simulation): fewer unknown outcomes keep the queue histories small enough to
 * check, and every fault still happens (the clients still see thousands of unknown outcomes).
 */
function options(seed: number, workload: SimOptions['workload']): SimOptions {
  return { ...defaultSimOptions(seed), workload, clients: 4, opsPerClient: 30, operationDeadlineMs: 10_000 };
}

/** Runs one seed of a workload. @returns what went wrong, if anything. */
function run(seed: number, workload: QueueWorkload | TableWorkload): string | undefined {
  const r = runAndCheck(options(seed, workload));
  const problem = r.problem?.text ?? workload.check();
  return problem === undefined ? undefined : `seed ${seed} (${defaultSimOptions(seed).profile}): ${problem}`;
}

describe('queue and table models under deterministic simulation', () => {
  it(`${count} seeded runs of the queue: linearizable, nothing lost, duplicated or reordered`, { timeout: Math.max(180_000, count * 300) }, () => {
    const broken: string[] = [];
    let brokenSeeds = 0;
    let undecided = 0;
    const totals: QueueWorkloadStats = { pushes: 0, batches: 0, retries: 0, duplicates: 0, reads: 0, trims: 0, unknown: 0, segmentsFilled: 0 };
    for (let seed = first; seed < first + count; seed++) {
      const w = new QueueWorkload(seed, 1 + (seed % 2));
      const problem = run(seed, w);
      undecided += w.undecided;
      for (const k of Object.keys(totals) as Array<keyof QueueWorkloadStats>) totals[k] += w.stats[k];
      if (problem !== undefined && broken.length < EXAMPLES) broken.push(problem);
      if (problem !== undefined) brokenSeeds++;
    }
    console.log(`queue model, seeds ${first}..${first + count - 1}: ${JSON.stringify(totals)}; seeds broken ${brokenSeeds}; queue histories too large to decide ${undecided}`);
    expect(broken, `${brokenSeeds} seeds broke`).toEqual([]);
    // A history the checker cannot decide within its budget proves nothing either way: few may be.
    expect(undecided, 'queue histories the checker could not decide').toBeLessThanOrEqual(Math.max(1, count / 200));
    // The runs did the work they are meant to check.
    expect(totals.pushes).toBeGreaterThan(count * 30);
    if (count >= 100) {
      for (const k of ['batches', 'retries', 'duplicates', 'trims', 'unknown', 'segmentsFilled'] as const) expect(totals[k], k).toBeGreaterThan(0);
    }
  });

  it(`${count} seeded runs of the table: linearizable per row, conditional writes on the row's version`, { timeout: Math.max(180_000, count * 300) }, () => {
    const broken: string[] = [];
    let brokenSeeds = 0;
    const totals: TableWorkloadStats = { reads: 0, writes: 0, conditional: 0, mismatches: 0, unknown: 0 };
    for (let seed = first; seed < first + count; seed++) {
      const w = new TableWorkload(seed, 1 + (seed % 3));
      const problem = run(seed, w);
      for (const k of Object.keys(totals) as Array<keyof TableWorkloadStats>) totals[k] += w.stats[k];
      if (problem !== undefined && broken.length < EXAMPLES) broken.push(problem);
      if (problem !== undefined) brokenSeeds++;
    }
    console.log(`table model, seeds ${first}..${first + count - 1}: ${JSON.stringify(totals)}; seeds broken ${brokenSeeds}`);
    expect(broken, `${brokenSeeds} seeds broke`).toEqual([]);
    expect(totals.writes).toBeGreaterThan(count * 30);
    if (count >= 100) for (const k of ['conditional', 'mismatches', 'unknown'] as const) expect(totals[k], k).toBeGreaterThan(0);
  });

  // The checks are not vacuous: a planted bug is caught within 100 seeds.
  it.each([
    ['a queue without request ids (a retried push pushes again)', (seed: number) => new QueueWorkload(seed, 1 + (seed % 2), 0.12, 'no-dedupe')],
    ['a table that takes a lost compare-and-set for a write', (seed: number) => new TableWorkload(seed, 1 + (seed % 3), 'lost-update')],
  ])('catches %s', (_name, make) => {
    let caught: number | undefined;
    for (let seed = 1; seed <= 100 && caught === undefined; seed++) if (run(seed, make(seed)) !== undefined) caught = seed;
    expect(caught, 'no seed of 100 caught the planted bug').toBeDefined();
  });
});
