/**
 * The pure part of `svrkit top` (framework/metrics/top.ts): quantiles from histogram buckets as
 * Prometheus' histogram_quantile computes them, counter increases with resets, and a frame (rates,
 * latency and queueing quantiles, rejections, gauges, client rows) from two synthetic scrapes.
 */
import { describe, expect, it } from 'vitest';
import { parseExposition } from '../../framework/metrics/parse.js';
import { computeTopFrame, counterIncrease, formatMs, formatTopFrame, histogramQuantile, type Scrape } from '../../framework/metrics/top.js';

describe('histogramQuantile', () => {
  const buckets = [
    { le: 0.1, count: 10 },
    { le: 0.2, count: 30 },
    { le: 0.4, count: 40 },
    { le: Infinity, count: 40 },
  ];

  it('interpolates linearly within the bucket holding the rank', () => {
    expect(histogramQuantile(0.5, buckets)).toBeCloseTo(0.15, 12); // rank 20: 0.1 + 0.1 * (20-10)/20
    expect(histogramQuantile(0.25, buckets)).toBeCloseTo(0.1, 12); // rank 10: the first bucket's top
    expect(histogramQuantile(0.9, buckets)).toBeCloseTo(0.32, 12); // rank 36: 0.2 + 0.2 * (36-30)/10
    expect(histogramQuantile(1, buckets)).toBeCloseTo(0.4, 12);
    expect(histogramQuantile(0.05, buckets)).toBeCloseTo(0.02, 12); // first bucket starts at 0
  });

  it('does not depend on the buckets’ order', () => {
    expect(histogramQuantile(0.5, [...buckets].reverse())).toBeCloseTo(0.15, 12);
  });

  it('a rank in the +Inf bucket gives the highest finite bound', () => {
    expect(histogramQuantile(0.99, [{ le: 0.1, count: 10 }, { le: Infinity, count: 20 }])).toBe(0.1);
  });

  it('a first bucket with a bound <= 0 gives that bound', () => {
    expect(histogramQuantile(0.2, [{ le: -1, count: 5 }, { le: Infinity, count: 10 }])).toBe(-1);
  });

  it('treats decreasing cumulative counts as flat (as Prometheus does)', () => {
    expect(histogramQuantile(0.5, [{ le: 1, count: 10 }, { le: 2, count: 8 }, { le: Infinity, count: 20 }])).toBe(1);
  });

  it('is undefined without observations, without a +Inf bucket, or with fewer than two buckets', () => {
    expect(histogramQuantile(0.5, [{ le: 1, count: 0 }, { le: Infinity, count: 0 }])).toBeUndefined();
    expect(histogramQuantile(0.5, [{ le: 1, count: 3 }, { le: 2, count: 4 }])).toBeUndefined();
    expect(histogramQuantile(0.5, [{ le: Infinity, count: 4 }])).toBeUndefined();
    expect(histogramQuantile(0.5, [])).toBeUndefined();
  });

  it('throws RangeError for a quantile outside 0..1', () => {
    expect(() => histogramQuantile(1.5, buckets)).toThrow(RangeError);
    expect(() => histogramQuantile(-0.1, buckets)).toThrow(/within 0\.\.1/);
    expect(() => histogramQuantile(NaN, buckets)).toThrow(RangeError);
  });
});

describe('counterIncrease', () => {
  it('is the difference, the current value after a reset or for a new series, 0 for NaN', () => {
    expect(counterIncrease(5, 12)).toBe(7);
    expect(counterIncrease(12, 3)).toBe(3);
    expect(counterIncrease(undefined, 4)).toBe(4);
    expect(counterIncrease(1, NaN)).toBe(0);
  });
});

/** Exposition text of a svrkit process, from a few numbers (buckets in seconds, cumulative). */
function exposition(o: {
  ok: number;
  notFound?: number;
  health?: number;
  handling: Array<[string, number]>;
  queueing: Array<[string, number]>;
  rejectedPriority?: number;
  rejectedDryRun?: number;
  inflight: number;
  level: number;
  lagP99: number;
  client?: { ok: number; unavailable: number; handling: Array<[string, number]>; retries: number; shed: number };
}): string {
  const lines = [
    '# HELP svrkit_server_handled_total Calls.',
    '# TYPE svrkit_server_handled_total counter',
    `svrkit_server_handled_total{service="probe.Probe",method="Echo",code="OK"} ${o.ok}`,
  ];
  if (o.notFound !== undefined) lines.push(`svrkit_server_handled_total{service="probe.Probe",method="Echo",code="NOT_FOUND"} ${o.notFound}`);
  if (o.health !== undefined) lines.push(`svrkit_server_handled_total{service="svrkit.Health",method="Check",code="OK"} ${o.health}`);
  lines.push('# TYPE svrkit_server_handling_seconds histogram');
  for (const [le, n] of o.handling) lines.push(`svrkit_server_handling_seconds_bucket{le="${le}",service="probe.Probe",method="Echo"} ${n}`);
  lines.push('# TYPE svrkit_server_queueing_seconds histogram');
  for (const [le, n] of o.queueing) lines.push(`svrkit_server_queueing_seconds_bucket{le="${le}",service="probe.Probe",method="Echo"} ${n}`);
  lines.push('# TYPE svrkit_server_rejected_total counter');
  if (o.rejectedPriority !== undefined) lines.push(`svrkit_server_rejected_total{service="probe.Probe",method="Echo",reason="priority",dry_run="false"} ${o.rejectedPriority}`);
  if (o.rejectedDryRun !== undefined) lines.push(`svrkit_server_rejected_total{service="probe.Probe",method="Echo",reason="inflight",dry_run="true"} ${o.rejectedDryRun}`);
  lines.push('# TYPE svrkit_server_inflight_calls gauge', `svrkit_server_inflight_calls ${o.inflight}`);
  lines.push('# TYPE svrkit_server_admission_level gauge', `svrkit_server_admission_level ${o.level}`);
  lines.push('# TYPE svrkit_server_admission_levels gauge', 'svrkit_server_admission_levels 16384');
  lines.push('# TYPE nodejs_eventloop_lag_p99_seconds gauge', `nodejs_eventloop_lag_p99_seconds ${o.lagP99}`);
  if (o.client !== undefined) {
    const c = o.client;
    lines.push('# TYPE svrkit_client_handled_total counter');
    lines.push(`svrkit_client_handled_total{service="kv.KV",method="Get",code="OK"} ${c.ok}`);
    lines.push(`svrkit_client_handled_total{service="kv.KV",method="Get",code="UNAVAILABLE"} ${c.unavailable}`);
    lines.push('# TYPE svrkit_client_handling_seconds histogram');
    for (const [le, n] of c.handling) lines.push(`svrkit_client_handling_seconds_bucket{service="kv.KV",method="Get",le="${le}"} ${n}`);
    lines.push('# TYPE svrkit_client_retries_total counter', `svrkit_client_retries_total{service="kv.KV",method="Get"} ${c.retries}`);
    lines.push('# TYPE svrkit_client_throttled_total counter', `svrkit_client_throttled_total{service="kv.KV",method="Get",reason="shed"} ${c.shed}`);
  }
  return lines.join('\n') + '\n';
}

function scrape(timeMs: number, text: string): Scrape {
  return { timeMs, metrics: parseExposition(text) };
}

describe('computeTopFrame', () => {
  const before = scrape(
    10_000,
    exposition({
      ok: 100,
      handling: [['0.001', 50], ['0.01', 100], ['+Inf', 100]],
      queueing: [['0.001', 100], ['0.01', 100], ['+Inf', 100]],
      rejectedPriority: 4,
      inflight: 1,
      level: 16383,
      lagP99: 0.02,
      client: { ok: 10, unavailable: 0, handling: [['0.01', 10], ['+Inf', 10]], retries: 1, shed: 0 },
    }),
  );
  // 2 s later: +300 OK, 20 NOT_FOUND (a new series), a new method (Health), more rejections.
  const after = scrape(
    12_000,
    exposition({
      ok: 400,
      notFound: 20,
      health: 2,
      // Of the 320 new Echo calls: 0 <= 1 ms, 160 in (1, 10] ms, 160 above 10 ms.
      handling: [['0.001', 50], ['0.01', 260], ['+Inf', 420]],
      // Queueing: 300 <= 1 ms, 20 in (1, 10] ms.
      queueing: [['0.001', 400], ['0.01', 420], ['+Inf', 420]],
      rejectedPriority: 44,
      rejectedDryRun: 6,
      inflight: 7,
      level: 1200,
      lagP99: 0.0123,
      client: { ok: 110, unavailable: 4, handling: [['0.01', 110], ['+Inf', 114]], retries: 9, shed: 2 },
    }),
  );

  it('rates per method and code from counter deltas, busiest first', () => {
    const f = computeTopFrame(before, after);
    expect(f.intervalSeconds).toBe(2);
    expect(f.hasServerMetrics).toBe(true);
    expect(f.server.map((r) => [`${r.service}/${r.method}`, r.callsPerSecond])).toEqual([
      ['probe.Probe/Echo', 160],
      ['svrkit.Health/Check', 1],
    ]);
    expect(f.server[0]!.codes).toEqual([
      { code: 'OK', perSecond: 150 },
      { code: 'NOT_FOUND', perSecond: 10 },
    ]);
  });

  it('latency and queueing quantiles from bucket deltas', () => {
    const echo = computeTopFrame(before, after).server[0]!;
    // rank 160 of 320 is the top of the (1 ms, 10 ms] bucket.
    expect(echo.p50Seconds).toBeCloseTo(0.01, 12);
    // rank 316.8 lies in +Inf: the highest finite bound.
    expect(echo.p99Seconds).toBe(0.01);
    // Queueing: rank 316.8 of 320; 300 in the first bucket, 20 in (1, 10] ms: 1 ms + 9 ms * 16.8/20.
    expect(echo.queueP99Seconds).toBeCloseTo(0.001 + 0.009 * (16.8 / 20), 12);
    // Health has no histogram series: no quantiles.
    expect(computeTopFrame(before, after).server[1]!.p50Seconds).toBeUndefined();
  });

  it('rejections per second by reason and dry run; gauges from the later scrape', () => {
    const f = computeTopFrame(before, after);
    expect(f.rejections).toEqual([
      { reason: 'priority', dryRun: false, perSecond: 20 },
      { reason: 'inflight', dryRun: true, perSecond: 3 },
    ]);
    expect(f.inflightCalls).toBe(7);
    expect(f.admissionLevel).toBe(1200);
    expect(f.admissionLevels).toBe(16384);
    expect(f.eventLoopLagP99Seconds).toBe(0.0123);
  });

  it('client rows: calls, codes, quantiles, retries and throttling per second', () => {
    const [get] = computeTopFrame(before, after).client;
    // rank 52 of 104, 100 of them in (0, 10 ms]: 10 ms * 52/100.
    expect(get!.p50Seconds).toBeCloseTo(0.0052, 12);
    expect(get).toEqual({
      service: 'kv.KV',
      method: 'Get',
      callsPerSecond: 52,
      codes: [{ code: 'OK', perSecond: 50 }, { code: 'UNAVAILABLE', perSecond: 2 }],
      p50Seconds: get!.p50Seconds,
      p99Seconds: 0.01,
      retriesPerSecond: 4,
      throttled: [{ reason: 'shed', perSecond: 1 }],
    });
  });

  it('a restarted process (counters went down) counts from zero', () => {
    const restarted = scrape(13_000, exposition({ ok: 5, handling: [['0.001', 5], ['0.01', 5], ['+Inf', 5]], queueing: [['0.001', 5], ['0.01', 5], ['+Inf', 5]], inflight: 0, level: 16383, lagP99: 0.01 }));
    const f = computeTopFrame(after, restarted);
    expect(f.server[0]!.callsPerSecond).toBe(5);
    expect(f.server[0]!.p50Seconds).toBeCloseTo(0.0005, 12);
  });

  it('idle methods keep their row at 0 calls/s with no codes', () => {
    const f = computeTopFrame(after, { ...after, timeMs: 13_000 });
    expect(f.server.map((r) => [r.method, r.callsPerSecond, r.codes.length, r.p50Seconds])).toEqual([
      ['Echo', 0, 0, undefined],
      ['Check', 0, 0, undefined],
    ]);
  });

  it('a non-svrkit endpoint gives an empty frame that says so', () => {
    const plain = scrape(0, '# TYPE up gauge\nup 1\n');
    const f = computeTopFrame(plain, { ...plain, timeMs: 1000 });
    expect(f).toMatchObject({ hasServerMetrics: false, server: [], rejections: [], client: [], inflightCalls: undefined });
    expect(formatTopFrame(f, 't')).toContain('no svrkit_server_* metrics');
  });

  it('throws RangeError when the second scrape is not later', () => {
    expect(() => computeTopFrame(after, before)).toThrow(RangeError);
    expect(() => computeTopFrame(after, after)).toThrow(/must come after/);
  });
});

describe('formatTopFrame', () => {
  it('renders the summary line, the server, rejection and client tables as plain text', () => {
    const before = scrape(0, exposition({ ok: 0, handling: [['0.001', 0], ['+Inf', 0]], queueing: [['0.001', 0], ['+Inf', 0]], inflight: 0, level: 16383, lagP99: 0.01 }));
    const after = scrape(
      1000,
      exposition({
        ok: 90,
        notFound: 10,
        handling: [['0.001', 100], ['+Inf', 100]],
        queueing: [['0.001', 100], ['+Inf', 100]],
        rejectedPriority: 5,
        inflight: 3,
        level: 16383,
        lagP99: 0.0015,
        client: { ok: 1, unavailable: 0, handling: [['0.01', 1], ['+Inf', 1]], retries: 0, shed: 0 },
      }),
    );
    const text = formatTopFrame(computeTopFrame(before, after), 'svrkit top http://h/metrics');
    expect(text).not.toMatch(/\x1b/);
    const lines = text.split('\n');
    expect(lines[0]).toBe('svrkit top http://h/metrics  (interval 1.0 s)');
    expect(lines[1]).toBe('in-flight 3   admission level 16383/16383 (admits all)   event-loop lag p99 1.50 ms');
    expect(text).toMatch(/^SERVER METHOD\s+CALLS\/S\s+P50 ms\s+P99 ms\s+QUEUE P99 ms\s+BY CODE \(calls\/s\)$/m);
    expect(text).toMatch(/^probe\.Probe\/Echo\s+100\.0\s+0\.50\s+0\.99\s+0\.99\s+OK 90\.0, NOT_FOUND 10\.0$/m);
    expect(text).toMatch(/^\s*5\.0\s+priority$/m);
    expect(text).toMatch(/^kv\.KV\/Get\s+1\.0\s+5\.00\s+9\.90\s+0\.0\s+0\.0\s+OK 1\.0$/m);
    expect(text.endsWith('\n')).toBe(true);
  });

  it('shows shedding and the absence of calls and rejections', () => {
    const idle = scrape(0, exposition({ ok: 0, handling: [], queueing: [], inflight: 0, level: 100, lagP99: 0.2 }));
    const text = formatTopFrame(computeTopFrame(idle, { ...idle, timeMs: 500 }), 'x');
    expect(text).toContain('admission level 100/16383   event-loop lag p99 200 ms');
    expect(text).toContain('REJECTED: none');
    expect(text).not.toContain('CLIENT METHOD');
  });
});

describe('formatMs', () => {
  it('shows 2-3 significant digits in ms, - for undefined', () => {
    expect(formatMs(0.000123)).toBe('0.12');
    expect(formatMs(0.0123)).toBe('12.3');
    expect(formatMs(0.123)).toBe('123');
    expect(formatMs(undefined)).toBe('-');
    expect(formatMs(NaN)).toBe('-');
  });
});
