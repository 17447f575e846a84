/**
 * Mutation checks of the PaxosKV simulator: bugs planted on purpose, each of which the simulator
 * must catch (a broken invariant or a non-linearizable history) within a bounded number of seeds.
 * Two are planted in the simulated driver, six in the core (`ReplicaConfig.plantedBug`):
 * - `reply-before-fsync`: client replies leave before the group commit of their step;
 * - `promise-before-fsync`: `promise` and `accepted` messages leave before the group commit that
 *   makes the vote durable;
 * - `round0-reuse`: the fast path (round 0) is taken again after its ballot was used;
 * - `dedupe-window-8`: a key remembers only 8 write sessions;
 * - `learn-keeps-accepted`: learning a chosen entry keeps the old instance's accepted value;
 * - `vote-on-lost-key`: a replica votes on a key whose record failed its checksum (as if empty);
 * - `repair-fence-short`: a lost key's repair fences it one instance past the highest chosen
 *   index, not two (three with a pending value);
 * - `old-config-quorum`: after a membership change, some replicas count votes by the configuration
 *   before the change (issue 16).
 *
 * Each check scans seeds 1..N of a profile that makes its bug likely and stops at the first catch;
 * N is several times what the bug needs (see the per-bug notes). The same seed without the bug
 * must then run clean, so the catch is the planted bug's and not some other fault's. The profiles
 * leave out the faults their bug does not need (network loss and duplication, partitions, clock
 * steps, lost data dirs), which keeps them fast and the control runs meaningful.
 */
import { describe, expect, it } from 'vitest';
import { exclusively } from '../support/exclusive.js';
import { defaultSimOptions, HOT_KEY_WORKLOAD, runAndCheck, type SimOptions, type SimPlantedBug } from './simulator.js';

/** A seed's default mix, without the faults that none of the planted bugs needs. */
function quiet(seed: number): SimOptions {
  return {
    ...defaultSimOptions(seed),
    dropRate: 0,
    duplicateRate: 0,
    longDelayRate: 0,
    partitionEveryMs: 0,
    clockStepEveryMs: 0,
    wipeRate: 0,
    rollbackRate: 0,
  };
}

/** Records failing their checksums often: at restarts and while replicas run, with crashes. */
const DAMAGE = { corruptRate: 0.5, corruptEveryMs: 200, crashEveryMs: 400 };

/** The issue 9 hot key (16 clients on one key, fast network and disks) on three voters. */
function hotKey(seed: number): SimOptions {
  return { ...quiet(seed), ...HOT_KEY_WORKLOAD, dropRate: 0, members: 3, learners: [] };
}

interface Mutation {
  bug: SimPlantedBug;
  /** Seeds scanned: 1..maxSeeds. */
  maxSeeds: number;
  profile: (seed: number) => SimOptions;
  /** Why the profile exposes the bug, and how often (measured on seeds 1..200). */
  note: string;
}

const MUTATIONS: readonly Mutation[] = [
  {
    bug: 'reply-before-fsync',
    maxSeeds: 5,
    // With two voters or more, every reply follows a peer's message, which left only after the
    // commit of every earlier record of its sender: a reply sent early says nothing that is not
    // durable yet. Only a decision that needs no peer exposes it: one voter (learners aside), whose
    // own accept is the majority. The baseline check below fails while the core cannot finish a
    // write with one voter.
    profile: (seed) => ({ ...hotKey(seed), learners: [2, 3], fsyncCrashRate: 0.05 }),
    note: 'one voter and two learners, fsync crashes: a write acknowledged before its accept is durable is lost at the crash',
  },
  {
    bug: 'promise-before-fsync',
    maxSeeds: 30,
    profile: (seed) => ({ ...hotKey(seed), fsyncCrashRate: 0.1, replyDropRate: 0.1 }),
    note: 'hot key, 10% of group commits crash: a vote counted and then lost (caught on ~48% of seeds)',
  },
  {
    bug: 'round0-reuse',
    maxSeeds: 5,
    profile: (seed) => ({ ...hotKey(seed), fsyncCrashRate: 0.05, replyDropRate: 0.1 }),
    note: 'hot key with crashes: a proposer whose fast-path accept did not finish proposes again at round 0 (caught on every seed)',
  },
  {
    bug: 'dedupe-window-8',
    maxSeeds: 10,
    profile: (seed) => ({ ...hotKey(seed), fsyncCrashRate: 0, replyDropRate: 0.2 }),
    note: '16 sessions on one key, 20% of replies lost: a retry arrives after 8 other sessions wrote (caught on ~94% of seeds)',
  },
  {
    bug: 'learn-keeps-accepted',
    maxSeeds: 5,
    profile: (seed) => ({ ...quiet(seed), members: 3, learners: [] }),
    note: 'any workload: the next instance starts with the last one\'s accepted value (caught on every seed)',
  },
  {
    bug: 'vote-on-lost-key',
    maxSeeds: 60,
    profile: (seed) => ({ ...quiet(seed), ...DAMAGE, members: 3, learners: [] }),
    note: 'records damaged often, three voters: a replica promises and accepts on a key it forgot (caught on ~8% of seeds)',
  },
  {
    bug: 'repair-fence-short',
    maxSeeds: 20,
    profile: (seed) => ({ ...hotKey(seed), ...DAMAGE }),
    note: 'hot key with records damaged often: a repaired replica votes in the instance after the chosen one, where it may have voted before (caught on ~30% of seeds)',
  },
  {
    bug: 'old-config-quorum',
    maxSeeds: 60,
    // A change a second: a change's sync leaves writes under way up to a phase timeout to decide
    // their values, and with a change every 600 ms few grew the cluster (caught on 4 of 120 seeds).
    profile: (seed) => ({ ...hotKey(seed), crashEveryMs: 0, fsyncCrashRate: 0, replyDropRate: 0, dropRate: 0.2, memberChangeEveryMs: 1000, twoMemberChangeRate: 1 }),
    note: 'hot key, 20% of messages lost, changes of two members at once: after growing from 3 voters to 5, the odd members count a majority of the old 3, two replicas disjoint from a majority of the new 5 (caught on ~18% of seeds)',
  },
];

describe('PaxosKV simulator mutation checks: planted bugs are caught', () => {
  for (const m of MUTATIONS) {
    // Simulations take a core: they run alone with the tests that measure time (exclusive.ts).
    it(`catches ${m.bug} within ${m.maxSeeds} seeds (${m.note})`, { timeout: 180_000 }, () => exclusively('timing', async () => {
      // The profile must do real work without the bug, or the bug has nothing to break.
      const baseline = runAndCheck(m.profile(1));
      expect(baseline.stats.writes, `the ${m.bug} profile acknowledges no write without the bug`).toBeGreaterThan(0);
      let caught: { seed: number; text: string } | undefined;
      for (let seed = 1; seed <= m.maxSeeds && caught === undefined; seed++) {
        const r = runAndCheck({ ...m.profile(seed), plantedBug: m.bug });
        // The lock's holder refreshes it from a timer: let timers run between seeds.
        await new Promise<void>((resolve) => setImmediate(resolve));
        if (r.problem !== undefined) caught = { seed, text: r.problem.text };
      }
      expect(caught, `${m.bug} went unnoticed in seeds 1..${m.maxSeeds}`).toBeDefined();
      const control = runAndCheck(m.profile(caught!.seed));
      expect(control.problem?.text, `seed ${caught!.seed} fails without ${m.bug} too`).toBeUndefined();
      console.log(`${m.bug}: caught at seed ${caught!.seed}: ${caught!.text.slice(0, 300)}`);
    }));
  }
});
