/**
 * Deterministic simulation of PaxosKV: many seeded runs, each with its own mix of faults (see
 * `defaultSimOptions` in simulator.ts): a lossy, duplicating, reordering, partitioning network;
 * crashing replicas, also at the fsync boundary; replica clock offsets and steps; client clock
 * offsets; lost replies; a hot key; wiped and rolled-back data dirs with operator rejoins; learner
 * members. Each run must keep every invariant, produce a linearizable history, and never stop a
 * replica whose data is intact.
 *
 *   SIM_SEEDS=20000 npx vitest run test/paxoskv/simulation.test.ts     more seeds
 *   SIM_FIRST_SEED=20001 SIM_SEEDS=20000 npx vitest run ...           another range
 *   SIM_SEED=1234 npx vitest run test/paxoskv/simulation.test.ts       one seed, with a trace
 */
import { describe, expect, it } from 'vitest';
import { exclusively } from '../support/exclusive.js';
import { defaultSimOptions, emptySimStats, runAndCheck, type SimStats } from './simulator.js';

const single = process.env.SIM_SEED !== undefined ? Number(process.env.SIM_SEED) : undefined;
const count = Number(process.env.SIM_SEEDS ?? 1000);
const first = Number(process.env.SIM_FIRST_SEED ?? 1);

/** The fault kinds a plain run must exercise, with how a reader names them. */
const COVERAGE: ReadonlyArray<[keyof SimStats, string]> = [
  ['crashes', 'crashes'],
  ['fsyncCrashes', 'fsync crashes'],
  ['partitions', 'partitions'],
  ['clockSteps', 'clock steps'],
  ['epochSteps', 'configuration epoch steps written'],
  ['epochsAdopted', 'epoch steps adopted'],
  ['droppedReplies', 'dropped replies'],
  ['wipes', 'wiped data dirs'],
  ['wipesDetected', 'wipes detected'],
  ['rollbacks', 'rolled-back data dirs'],
  ['rollbacksDetected', 'rollbacks detected'],
  ['rejoinsStarted', 'rejoins started'],
  ['rejoinsCompleted', 'rejoins completed'],
  ['corruptions', 'records failing their checksum'],
  ['corruptionsRepaired', 'such records repaired'],
  ['notApplied', 'attempts refused as not applied'],
  ['memberSteps', 'membership steps written'],
  ['membersAdded', 'members added (--join)'],
  ['membersRemoved', 'members removed (stopped)'],
  ['voterChanges', 'voter changes adopted (joint and after)'],
];

/** How many failing seeds of each kind the report lists. */
const EXAMPLES = 5;

describe('PaxosKV deterministic simulation', () => {
  if (single !== undefined) {
    it(`seed ${single}`, () => {
      const lines: string[] = [];
      const options = defaultSimOptions(single);
      const r = runAndCheck(options, (l) => lines.push(l));
      console.log(`seed ${single}: ${options.profile}\n${JSON.stringify(options)}\n${JSON.stringify(r.stats)}`);
      if (r.problem !== undefined || r.spuriousStops.length > 0) console.log(lines.join('\n'));
      expect(r.problem?.text).toBeUndefined();
      expect(r.spuriousStops).toEqual([]);
    });
    return;
  }

  // About 10 ms a seed on a healthy core; the timeout leaves room for slow machines and stalled runs.
  // It takes both cores for a while: it runs alone with the tests that measure time (exclusive.ts).
  it(`${count} seeded runs keep every invariant, are linearizable and stop no intact replica`, { timeout: Math.max(180_000, count * 100) }, () => exclusively('timing', async () => {
    const broken: string[] = [];
    const stopped: string[] = [];
    let brokenSeeds = 0;
    let stoppedSeeds = 0;
    const totals = emptySimStats();
    const started = performance.now();
    let learnerRuns = 0;
    let hotKeyRuns = 0;
    let largeClientClockRuns = 0;
    let largeReplicaClockRuns = 0;
    for (let seed = first; seed < first + count; seed++) {
      const options = defaultSimOptions(seed);
      if (options.learners.length > 0) learnerRuns++;
      if (options.keys === 1 && options.clients === 16) hotKeyRuns++;
      if (options.clientClockOffsetMs >= 10_000) largeClientClockRuns++;
      if (options.replicaClockOffsetMs >= 10_000) largeReplicaClockRuns++;
      const r = runAndCheck(options);
      // The lock's holder refreshes it from a timer: let timers run between seeds.
      if (seed % 20 === 0) await new Promise<void>((resolve) => setImmediate(resolve));
      for (const k of Object.keys(totals) as Array<keyof SimStats>) totals[k] += r.stats[k];
      const replay = `\n  replay: SIM_SEED=${seed} npx vitest run test/paxoskv/simulation.test.ts`;
      if (r.problem !== undefined) {
        brokenSeeds++;
        if (broken.length < EXAMPLES) broken.push(`seed ${seed} (${options.profile}): ${r.problem.kind === 'invariant' ? 'invariant violated' : ''} ${r.problem.text}${replay}`);
      }
      if (r.spuriousStops.length > 0) {
        stoppedSeeds++;
        if (stopped.length < EXAMPLES) stopped.push(`seed ${seed} (${options.profile}): ${r.spuriousStops[0]}${replay}`);
      }
    }
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    console.log(
      `PaxosKV simulation, seeds ${first}..${first + count - 1} in ${seconds} s: ${totals.completed} operations completed ` +
        `(${totals.writes} writes acknowledged), ${totals.unknown} unknown; seeds with a broken invariant or history ${brokenSeeds}, ` +
        `with an intact replica stopped ${stoppedSeeds}\n  runs with learners ${learnerRuns}, hot key ${hotKeyRuns}, ` +
        `replica clocks ±60 s ${largeReplicaClockRuns}, large client clock offsets ${largeClientClockRuns}; ` +
        `runs that settled (every replica checked back) ${totals.settledRuns}, replicas then a step behind the last epoch ${totals.epochBehindAtEnd}\n  ` +
        COVERAGE.map(([k, name]) => `${name} ${totals[k]}`).join(', '),
    );
    expect(broken, `${brokenSeeds} seeds broke an invariant or linearizability`).toEqual([]);
    expect(stopped, `${stoppedSeeds} seeds stopped a replica whose data was intact`).toEqual([]);
    // The runs did real work through real faults (not an idle cluster).
    expect(totals.completed).toBeGreaterThan(count * 40);
    expect(totals.writes).toBeGreaterThan(count * 15);
    expect(totals.crashes).toBeGreaterThan(count / 2);
    if (count >= 1000) {
      for (const [k, name] of COVERAGE) expect(totals[k], name).toBeGreaterThan(0);
      expect(learnerRuns).toBeGreaterThan(0);
      expect(hotKeyRuns).toBeGreaterThan(0);
      expect(largeClientClockRuns).toBeGreaterThan(0);
      expect(largeReplicaClockRuns).toBeGreaterThan(0);
      // The end-of-run check (every replica back) is not vacuous: most runs settle.
      expect(totals.settledRuns).toBeGreaterThan(count / 2);
    }
  }));
});
