/**
 * The FastReject admission controller and the SRE adaptive throttle, driven by synthetic load
 * with time injected (no sockets, no clocks).
 */
import { describe, expect, it } from 'vitest';
import {
  ADMIT_ALL,
  AdmissionController,
  priorityLevel,
  userPriority,
  USER_LEVELS,
} from '../../framework/overload/admission.js';
import { AdaptiveThrottle } from '../../framework/overload/throttle.js';
import { mulberry32 } from '../support/prng.js';

/**
 * Simulates a server of fixed `capacity` (calls per second) under `offered` calls per second,
 * for `seconds`, in 10 ms steps: admitted calls join a FIFO queue served at capacity; the
 * queueing time of each call is the time it waited. A call that waited past its 500 ms deadline
 * is dropped without using capacity, as svrkit servers drop calls that queued past their
 * deadline. Business priorities are drawn from `classes`, user priorities uniformly.
 */
function simulate(opts: { capacity: number; offered: number; seconds: number; classes: number[]; seed?: number; controller?: AdmissionController; start?: number }) {
  const rand = mulberry32(opts.seed ?? 1);
  let now = opts.start ?? 0;
  const c = opts.controller ?? new AdmissionController(now);
  const queue: number[] = []; // arrival times
  const levels: number[] = [];
  const admittedBy = new Map<number, { offered: number; admitted: number }>();
  const stepMs = 10;
  let credit = 0;
  for (let t = 0; t < opts.seconds * 1000; t += stepMs) {
    now += stepMs;
    const arrivals = Math.round((opts.offered * stepMs) / 1000);
    for (let i = 0; i < arrivals; i++) {
      const business = opts.classes[Math.floor(rand() * opts.classes.length)]!;
      const level = priorityLevel(business, Math.floor(rand() * USER_LEVELS));
      const stats = admittedBy.get(business) ?? { offered: 0, admitted: 0 };
      stats.offered++;
      if (c.windowDue(now)) c.closeWindow(now);
      if (c.arrive(level)) {
        stats.admitted++;
        queue.push(now);
      }
      admittedBy.set(business, stats);
    }
    credit += (opts.capacity * stepMs) / 1000;
    while (credit >= 1 && queue.length > 0) {
      const waited = now - queue.shift()!;
      if (waited >= 500) continue; // expired while queued: dropped, costs nothing
      credit--;
      c.queued(waited);
    }
    if (queue.length === 0) credit = 0;
    levels.push(c.level);
  }
  return { controller: c, levels, admittedBy, queueLength: queue.length, now };
}

describe('AdmissionController', () => {
  it('admits everything while queueing stays under the threshold', () => {
    const r = simulate({ capacity: 1000, offered: 500, seconds: 10, classes: [10, 50, 100] });
    expect(r.levels.every((l) => l === ADMIT_ALL)).toBe(true);
  });

  it('under sustained queueing the level falls until admitted load fits capacity; the least important classes go first', () => {
    // DAGOR sheds 5% of admitted calls per window: from a cold start at 4x load it takes ~25 windows.
    const warm = simulate({ capacity: 1000, offered: 4000, seconds: 40, classes: [1, 32, 64, 96] });
    const r = simulate({ capacity: 1000, offered: 4000, seconds: 20, classes: [1, 32, 64, 96], controller: warm.controller, start: warm.now, seed: 5 });
    const admitted = (b: number) => r.admittedBy.get(b)!.admitted / r.admittedBy.get(b)!.offered;
    expect(r.controller.level).toBeLessThan(ADMIT_ALL);
    // The most important class is admitted the most, the least important the least.
    // Capacity is a quarter of the offered load, and each class is a quarter of it: the top class gets in.
    expect(admitted(1)).toBeGreaterThan(0.95);
    expect(admitted(1)).toBeGreaterThan(admitted(32));
    expect(admitted(32)).toBeGreaterThanOrEqual(admitted(64));
    expect(admitted(64)).toBeGreaterThanOrEqual(admitted(96));
    expect(admitted(96)).toBeLessThan(0.05);
    // The level holds admitted calls near capacity: about 25% of 4x, the queue stays short.
    const total = [...r.admittedBy.values()].reduce((a, x) => a + x.admitted, 0) / 20;
    expect(total).toBeGreaterThan(850);
    expect(total).toBeLessThan(1150);
    expect(r.queueLength).toBeLessThan(200);
  });

  it('falls by about 5% of admitted calls per overloaded window, and recovers slowly (about 1% per window, at most 128 levels)', () => {
    const overloaded = simulate({ capacity: 1000, offered: 4000, seconds: 30, classes: [10, 40, 70, 100] });
    const lowLevel = overloaded.controller.level;
    // Load drops to half the capacity: queueing vanishes; the level climbs back a little per window.
    const light = simulate({ capacity: 1000, offered: 500, seconds: 3, classes: [10, 40, 70, 100], controller: overloaded.controller, start: overloaded.now, seed: 2 });
    expect(light.controller.level).toBeGreaterThan(lowLevel);
    expect(light.controller.level).toBeLessThan(ADMIT_ALL); // not all at once
    // ... and keeps climbing, window after window, never jumping to admit everything at once
    // (callers that shed by the advertised level hide the demand above it).
    const lightLevel = light.controller.level;
    const later = simulate({ capacity: 1000, offered: 500, seconds: 60, classes: [10, 40, 70, 100], controller: light.controller, start: light.now, seed: 3 });
    expect(later.controller.level).toBeGreaterThan(lightLevel);
    const steps = later.levels.slice(1).map((l, i) => l - later.levels[i]!);
    expect(Math.min(...steps)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...steps)).toBeLessThanOrEqual(USER_LEVELS);
  });

  it('never sheds business priority 0 by level, and recovers over idle windows', () => {
    const c = new AdmissionController(0, { windowMs: 100 });
    for (let w = 1; w <= 50; w++) {
      for (let i = 0; i < 100; i++) c.arrive(priorityLevel(0, i % 128));
      c.queued(500); // massively overloaded
      c.closeWindow(w * 100);
    }
    expect(c.level).toBe(USER_LEVELS - 1);
    for (let u = 0; u < USER_LEVELS; u++) expect(c.arrive(priorityLevel(0, u))).toBe(true);
    expect(c.arrive(priorityLevel(1, 0))).toBe(false);
    // A healthy window: the level climbs, by at most one business priority.
    c.closeWindow(5100, 0);
    expect(c.level).toBeGreaterThan(USER_LEVELS - 1);
    expect(c.level).toBeLessThanOrEqual(2 * USER_LEVELS - 1);
    // Overloaded again, then idle: one business priority more per idle window.
    for (let w = 1; w <= 50; w++) {
      for (let i = 0; i < 100; i++) c.arrive(priorityLevel(0, i % 128));
      c.queued(500);
      c.closeWindow(5100 + w * 100);
    }
    expect(c.level).toBe(USER_LEVELS - 1);
    c.closeWindow(10_200, 0);
    expect(c.level).toBe(2 * USER_LEVELS - 1);
    for (let w = 0; w < 126; w++) c.closeWindow(10_300 + w * 100, 0);
    expect(c.level).toBe(ADMIT_ALL);
  });

  it('closes windows after windowMs or windowRequests admitted calls; the event-loop delay backstop counts as overload', () => {
    const c = new AdmissionController(0, { windowMs: 1000, windowRequests: 10 });
    for (let i = 0; i < 9; i++) c.arrive(priorityLevel(64, i));
    expect(c.windowDue(10)).toBe(false);
    c.arrive(priorityLevel(64, 9));
    expect(c.windowDue(10)).toBe(true);
    const quiet = c.closeWindow(10, 5);
    expect(quiet.overloaded).toBe(false);
    expect(c.windowDue(1009)).toBe(false);
    expect(c.windowDue(1010)).toBe(true);
    for (let i = 0; i < 10; i++) c.arrive(priorityLevel(64, i));
    const stalled = c.closeWindow(1010, 250); // no queueing samples, but the event loop lagged 250 ms
    expect(stalled.overloaded).toBe(true);
    expect(stalled.levelAfter).toBeLessThan(ADMIT_ALL);
  });

  it('rejects bad settings', () => {
    expect(() => new AdmissionController(0, { alpha: 1 })).toThrow(/alpha/);
    expect(() => new AdmissionController(0, { windowMs: 0 })).toThrow(/windowMs/);
    expect(() => new AdmissionController(0, { queueThresholdMs: -1 })).toThrow(/queueThresholdMs/);
  });
});

describe('priorities', () => {
  it('level = business * 128 + user, clamped', () => {
    expect(priorityLevel(0, 0)).toBe(0);
    expect(priorityLevel(1, 5)).toBe(133);
    expect(priorityLevel(200, -3)).toBe(127 * 128);
  });

  it('user priority: stable within an hour, reshuffled the next, spread over 128 levels', () => {
    const hour = 3_600_000;
    expect(userPriority('alice', 10)).toBe(userPriority('alice', hour - 1));
    const ids = Array.from({ length: 5000 }, (_, i) => `user-${i}`);
    const now = ids.map((id) => userPriority(id, 5 * hour));
    const next = ids.map((id) => userPriority(id, 6 * hour));
    expect(now.filter((p, i) => p === next[i]).length).toBeLessThan(200); // ~1/128 stay by chance
    const counts = new Array(128).fill(0);
    for (const p of now) counts[p]++;
    expect(Math.min(...counts)).toBeGreaterThan(10);
    expect(Math.max(...counts)).toBeLessThan(80);
  });
});

describe('AdaptiveThrottle (SRE)', () => {
  it('rejects with probability max(0, (requests - K*accepts) / (requests + 1))', () => {
    const t = new AdaptiveThrottle(0, { k: 2, windowMs: 60_000 });
    for (let i = 0; i < 100; i++) t.completed(true);
    expect(t.rejectProbability(1)).toBe(0);
    for (let i = 0; i < 300; i++) t.completed(false); // 400 requests, 100 accepts
    expect(t.rejectProbability(2)).toBeCloseTo((400 - 200) / 401, 6);
    const rand = mulberry32(9);
    let rejected = 0;
    for (let i = 0; i < 10_000; i++) if (!t.allow(3, rand)) rejected++;
    // Locally rejected requests count as requests too, so p climbs as they accumulate.
    expect(rejected).toBeGreaterThan(4000);
  });

  it('forgets history older than the window', () => {
    const t = new AdaptiveThrottle(0, { k: 2, windowMs: 10_000, buckets: 10 });
    for (let i = 0; i < 1000; i++) t.completed(false);
    expect(t.rejectProbability(100)).toBeGreaterThan(0.99);
    expect(t.rejectProbability(5_500)).toBeGreaterThan(0.99);
    expect(t.rejectProbability(11_000)).toBe(0);
  });

  it('rejects bad settings', () => {
    expect(() => new AdaptiveThrottle(0, { k: 0.5 })).toThrow(/k must be/);
    expect(() => new AdaptiveThrottle(0, { buckets: 0 })).toThrow(/buckets/);
  });
});
