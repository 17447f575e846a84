/**
 * The pure part of `bench/overload/run.ts --step` (bench/overload/step.ts): the scenarios, the
 * arrival schedule of a rate that changes by phase, and the summary against issue 12's targets,
 * on synthetic buckets.
 */
import { describe, expect, it } from 'vitest';
import { newBucket, phasesAt, RateSchedule, scenario, summarizeStep, type Bucket } from '../bench/overload/step.js';

describe('step scenarios and their schedule', () => {
  it('4x is 0.5x for 5 s, 4x for 15 s, 0.5x for 10 s; onoff has two 10x spikes; bad names are refused', () => {
    const p = phasesAt(scenario('4x'), 1000);
    expect(p.map((x) => [x.kind, x.factor, x.startMs, x.endMs])).toEqual([
      ['pre', 0.5, 0, 5000],
      ['spike', 4, 5000, 20_000],
      ['post', 0.5, 20_000, 30_000],
    ]);
    expect(phasesAt(scenario('onoff'), 1000).filter((x) => x.kind === 'spike').map((x) => x.factor)).toEqual([10, 10]);
    expect(() => scenario('fast')).toThrow(/unknown scenario 'fast'/);
  });

  it('schedules calls at each phase rate, with no gap or overlap at the boundaries', () => {
    const s = new RateSchedule(phasesAt(scenario('4x', { preMs: 1000, spikeMs: 1000, postMs: 1000 }), 1000));
    expect(s.total).toBe(500 + 4000 + 500);
    expect(s.due(1000)).toBe(500);
    expect(s.due(1500)).toBe(2500);
    expect(s.due(3000)).toBe(5000);
    expect(s.timeOf(499)).toBeCloseTo(998, 6);
    expect(s.timeOf(500)).toBe(1000);
    expect(s.timeOf(501)).toBeCloseTo(1000.25, 6);
  });
});

describe('the step summary', () => {
  const capacity = 1000; // 250 calls per 250 ms bucket
  const phases = phasesAt(scenario('4x', { preMs: 1000, spikeMs: 4000, postMs: 2000 }), capacity);
  const run = (fill: (b: Bucket, i: number) => void): Bucket[] =>
    Array.from({ length: 28 }, (_, i) => {
      const b = newBucket(i * 250);
      b.offered = 100;
      b.topOffered = 10;
      b.topOk = 10;
      b.ok = 100;
      b.latenciesMs = [5];
      fill(b, i);
      return b;
    });

  it('time to 90% is where goodput reaches 90% of capacity and stays; p99 after it; recovery ends with the last shed', () => {
    const buckets = run((b, i) => {
      if (i >= 4 && i < 20) b.ok = i < 6 ? 100 : 240; // the spike: 40% of capacity for 0.5 s, then 96%
      if (i >= 20 && i < 23) {
        b.shedLocally = 60; // recovering: the clients still shed by the level last advertised
        b.ok = 40;
      }
    });
    const s = summarizeStep(buckets, phases, capacity, 250);
    expect(s.spikes[0]!.timeTo90Ms).toBe(500);
    expect(s.spikes[0]!.afterMinPct).toBe(96);
    expect(s.spikes[0]!.recoveryMs).toBe(750);
    // Shedding while the level recovers is not a second collapse: every call sent succeeded.
    expect(s.spikes[0]!.secondCollapse).toBe(false);
    expect(s.targets[0]).toEqual({ spike: 1, timeTo90: true, minAfter: true, top: true, p99: true, recovery: true, preRejects: true });
  });

  it('calls sent after the drop that miss their deadline are a second collapse', () => {
    const buckets = run((b, i) => {
      if (i >= 4 && i < 20) b.ok = 240;
      if (i === 22) {
        b.ok = 50;
        b.deadlineExceeded = 50;
      }
    });
    const s = summarizeStep(buckets, phases, capacity, 250);
    expect(s.spikes[0]!.secondCollapse).toBe(true);
    expect(s.targets[0]!.recovery).toBe(false);
  });
});
