/**
 * The frame `svrkit top` shows, computed from two scrapes of a `/metrics` endpoint (pure: no I/O,
 * no clock): per-second rates from counter deltas, latency quantiles from histogram bucket deltas
 * (as Prometheus' `histogram_quantile` over `rate(...)`), and the current gauges.
 */
import type { Exposition, Sample } from './parse.js';

/** One scrape: when it was taken and what it returned. */
export interface Scrape {
  /** When the scrape was taken (ms, any monotonic clock; only differences are used). */
  readonly timeMs: number;
  /** The parsed reply. */
  readonly metrics: Exposition;
}

/** A cumulative histogram bucket: `count` observations were <= `le`. */
export interface Bucket {
  /** Upper bound (inclusive); the last bucket's is `Infinity`. */
  readonly le: number;
  /** Observations <= `le` (cumulative). */
  readonly count: number;
}

/** Calls per second with one status code. */
/** Calls per second that ended with one status code. */
export interface CodeRate {
  /** Status name, e.g. `OK`. */
  readonly code: string;
  /** Calls per second. */
  readonly perSecond: number;
}

/** What the server and client rows of one method have in common. */
export interface MethodRow {
  /** `pkg.Service`. */
  readonly service: string;
  /** `Method`. */
  readonly method: string;
  /** Calls ended per second, all codes. */
  readonly callsPerSecond: number;
  /** Calls per second by status code (codes with calls in the interval only), busiest first. */
  readonly codes: readonly CodeRate[];
  /** Median handling (server) or call (client) time in the interval (s); undefined without observations. */
  readonly p50Seconds?: number;
  /** 99th percentile of the same (s); undefined without observations. */
  readonly p99Seconds?: number;
}

/** A server method's row. */
export interface ServerMethodRow extends MethodRow {
  /** 99th percentile queueing time (s) in the interval; undefined without observations. */
  readonly queueP99Seconds?: number;
}

/** Rejections per second for one reason (summed over methods). */
export interface RejectionRow {
  /** `priority`, `inflight`, `goaway`, ... */
  readonly reason: string;
  /** True for dry-run counts (calls that would have been rejected, and were served). */
  readonly dryRun: boolean;
  /** Rejections per second. */
  readonly perSecond: number;
}

/** A client method's row. */
export interface ClientMethodRow extends MethodRow {
  /** Retries and hedged attempts per second. */
  readonly retriesPerSecond: number;
  /** Throttled calls or attempts per second, by reason (reasons with any in the interval only). */
  readonly throttled: ReadonlyArray<{ readonly reason: string; readonly perSecond: number }>;
}

/** What `svrkit top` shows for one interval. */
export interface TopFrame {
  /** Seconds between the two scrapes. */
  readonly intervalSeconds: number;
  /** Whether the endpoint exposes svrkit server metrics at all. */
  readonly hasServerMetrics: boolean;
  /** Calls in flight now; undefined when not exposed. */
  readonly inflightCalls?: number;
  /** Admission level now; undefined when not exposed. */
  readonly admissionLevel?: number;
  /** Number of admission levels; undefined when not exposed. */
  readonly admissionLevels?: number;
  /** Event-loop lag p99 (s) since the previous scrape (prom-client's `nodejs_eventloop_lag_p99_seconds`). */
  readonly eventLoopLagP99Seconds?: number;
  /** Server methods, busiest first. */
  readonly server: readonly ServerMethodRow[];
  /** Rejections per second by reason, busiest first. */
  readonly rejections: readonly RejectionRow[];
  /** Client methods, busiest first (empty when the process made no calls). */
  readonly client: readonly ClientMethodRow[];
}

/**
 * The `q` quantile of a histogram, as Prometheus' `histogram_quantile`: find the bucket holding
 * rank `q * total` and interpolate linearly within it (the first bucket starts at 0 unless its
 * bound is <= 0; a rank in the `+Inf` bucket gives the highest finite bound).
 * @param q - the quantile, 0..1.
 * @param buckets - cumulative buckets, any order; one must have `le` `Infinity`.
 * @returns the estimate (in the buckets' unit), or undefined when there are no observations, no
 *   `+Inf` bucket, or fewer than two buckets.
 * @throws RangeError when `q` is outside 0..1 or NaN.
 */
export function histogramQuantile(q: number, buckets: readonly Bucket[]): number | undefined {
  if (!(q >= 0 && q <= 1)) throw new RangeError(`quantile must be within 0..1, got ${q}`);
  const sorted = [...buckets].sort((a, b) => a.le - b.le);
  if (sorted.length < 2 || sorted[sorted.length - 1]!.le !== Infinity) return undefined;
  // Cumulative counts must not decrease (they can, in scrapes racing with observations).
  const counts: number[] = [];
  let max = 0;
  for (const b of sorted) counts.push((max = Math.max(max, Number.isNaN(b.count) ? 0 : b.count)));
  const total = counts[counts.length - 1]!;
  if (total <= 0) return undefined;
  const rank = q * total;
  let i = counts.findIndex((c) => c >= rank);
  if (i < 0) i = counts.length - 1;
  if (i === sorted.length - 1) return sorted[sorted.length - 2]!.le;
  const end = sorted[i]!.le;
  if (i === 0 && end <= 0) return end;
  const start = i === 0 ? 0 : sorted[i - 1]!.le;
  const below = i === 0 ? 0 : counts[i - 1]!;
  const inBucket = counts[i]! - below;
  if (inBucket <= 0) return end;
  return start + (end - start) * ((rank - below) / inBucket);
}

/**
 * The increase of a counter between two values: `current - previous`, or `current` when the
 * counter went down (the process restarted), as Prometheus' `increase` treats resets.
 */
export function counterIncrease(previous: number | undefined, current: number): number {
  if (Number.isNaN(current)) return 0;
  if (previous === undefined || Number.isNaN(previous) || current < previous) return current;
  return current - previous;
}

/** Key of a label set, ignoring `omit`. */
function labelKey(labels: Readonly<Record<string, string>>, omit?: string): string {
  return Object.keys(labels)
    .filter((k) => k !== omit)
    .sort()
    .map((k) => `${k}=${JSON.stringify(labels[k])}`)
    .join(',');
}

function samplesOf(exp: Exposition, name: string): readonly Sample[] {
  return exp.samples.get(name) ?? [];
}

/** Per-series increases of counter `name` between two scrapes: key -> { labels, increase }. */
function increases(prev: Exposition, cur: Exposition, name: string): Array<{ labels: Readonly<Record<string, string>>; increase: number }> {
  const before = new Map<string, number>();
  for (const s of samplesOf(prev, name)) before.set(labelKey(s.labels), s.value);
  return samplesOf(cur, name).map((s) => ({ labels: s.labels, increase: counterIncrease(before.get(labelKey(s.labels)), s.value) }));
}

/** Per-series bucket increases of histogram `name` (key without `le` -> labels and buckets). */
function histogramIncreases(prev: Exposition, cur: Exposition, name: string): Map<string, { labels: Readonly<Record<string, string>>; buckets: Bucket[] }> {
  const before = new Map<string, Map<number, number>>();
  for (const s of samplesOf(prev, `${name}_bucket`)) {
    const le = leOf(s);
    if (le === undefined) continue;
    const key = labelKey(s.labels, 'le');
    let m = before.get(key);
    if (m === undefined) before.set(key, (m = new Map()));
    m.set(le, s.value);
  }
  const out = new Map<string, { labels: Record<string, string>; buckets: Array<{ le: number; count: number; prev: number | undefined }> }>();
  for (const s of samplesOf(cur, `${name}_bucket`)) {
    const le = leOf(s);
    if (le === undefined) continue;
    const key = labelKey(s.labels, 'le');
    let series = out.get(key);
    if (series === undefined) {
      const labels = { ...s.labels };
      delete labels.le;
      out.set(key, (series = { labels, buckets: [] }));
    }
    series.buckets.push({ le, count: s.value, prev: before.get(key)?.get(le) });
  }
  const result = new Map<string, { labels: Readonly<Record<string, string>>; buckets: Bucket[] }>();
  for (const [key, series] of out) {
    // A reset shows as any bucket going down: then the whole current histogram is the increase.
    const reset = series.buckets.some((b) => b.prev !== undefined && b.count < b.prev);
    result.set(key, {
      labels: series.labels,
      buckets: series.buckets.map((b) => ({ le: b.le, count: reset || b.prev === undefined ? b.count : b.count - b.prev })),
    });
  }
  return result;
}

function leOf(s: Sample): number | undefined {
  const text = s.labels.le;
  if (text === undefined) return undefined;
  const lower = text.toLowerCase();
  if (lower === '+inf' || lower === 'inf') return Infinity;
  const n = Number(text);
  return text.trim() === '' || Number.isNaN(n) ? undefined : n;
}

/** Value of a gauge (summed over its series), or undefined when absent. */
function gaugeSum(exp: Exposition, name: string): number | undefined {
  const s = samplesOf(exp, name);
  return s.length === 0 ? undefined : s.reduce((a, b) => a + b.value, 0);
}

/** Smallest value of a gauge over its series, or undefined when absent. */
function gaugeMin(exp: Exposition, name: string): number | undefined {
  const s = samplesOf(exp, name);
  return s.length === 0 ? undefined : Math.min(...s.map((x) => x.value));
}

const methodKey = (labels: Readonly<Record<string, string>>): string => `${labels.service ?? ''}/${labels.method ?? ''}`;

interface MethodAcc {
  service: string;
  method: string;
  calls: number;
  codes: Map<string, number>;
}

function byMethodAndCode(prev: Exposition, cur: Exposition, name: string): Map<string, MethodAcc> {
  const methods = new Map<string, MethodAcc>();
  for (const { labels, increase } of increases(prev, cur, name)) {
    const key = methodKey(labels);
    let m = methods.get(key);
    if (m === undefined) methods.set(key, (m = { service: labels.service ?? '', method: labels.method ?? '', calls: 0, codes: new Map() }));
    m.calls += increase;
    const code = labels.code ?? '?';
    m.codes.set(code, (m.codes.get(code) ?? 0) + increase);
  }
  return methods;
}

/** Bucket increases of histogram `name` per method (`service/method`; other labels summed). */
function methodHistograms(prev: Exposition, cur: Exposition, name: string): Map<string, { labels: Readonly<Record<string, string>>; buckets: Bucket[] }> {
  const out = new Map<string, { labels: Readonly<Record<string, string>>; buckets: Bucket[] }>();
  for (const series of histogramIncreases(prev, cur, name).values()) {
    const key = methodKey(series.labels);
    const m = out.get(key);
    if (m === undefined) {
      out.set(key, { labels: series.labels, buckets: series.buckets.map((b) => ({ ...b })) });
      continue;
    }
    for (const b of series.buckets) {
      const i = m.buckets.findIndex((x) => x.le === b.le);
      if (i < 0) m.buckets.push({ ...b });
      else m.buckets[i] = { le: b.le, count: m.buckets[i]!.count + b.count };
    }
  }
  return out;
}

function quantileOf(hist: Map<string, { labels: Readonly<Record<string, string>>; buckets: Bucket[] }>, key: string, q: number): number | undefined {
  const h = hist.get(key);
  return h === undefined ? undefined : histogramQuantile(q, h.buckets);
}

function codeRates(codes: Map<string, number>, seconds: number): CodeRate[] {
  return [...codes]
    .filter(([, n]) => n > 0)
    .map(([code, n]) => ({ code, perSecond: n / seconds }))
    .sort((a, b) => b.perSecond - a.perSecond || a.code.localeCompare(b.code));
}

const busiestFirst = (a: { callsPerSecond: number; service: string; method: string }, b: { callsPerSecond: number; service: string; method: string }): number =>
  b.callsPerSecond - a.callsPerSecond || `${a.service}/${a.method}`.localeCompare(`${b.service}/${b.method}`);

/**
 * Computes a `svrkit top` frame from two scrapes of the same endpoint. Series absent from
 * `previous` count from zero (they were created in between); counters that went down count as
 * reset. Methods are those with a series in `current`, including idle ones (0 calls/s).
 * @param previous - the earlier scrape.
 * @param current - the later scrape.
 * @returns the frame.
 * @throws RangeError when `current.timeMs` is not after `previous.timeMs`.
 */
export function computeTopFrame(previous: Scrape, current: Scrape): TopFrame {
  const seconds = (current.timeMs - previous.timeMs) / 1000;
  if (!(seconds > 0)) throw new RangeError(`the second scrape must come after the first (interval ${seconds} s)`);
  const a = previous.metrics;
  const b = current.metrics;

  const serverMethods = byMethodAndCode(a, b, 'svrkit_server_handled_total');
  const handling = methodHistograms(a, b, 'svrkit_server_handling_seconds');
  const queueing = methodHistograms(a, b, 'svrkit_server_queueing_seconds');
  // Methods seen only in the histograms (a scrape between the two updates) still get a row.
  for (const h of [handling, queueing]) {
    for (const { labels } of h.values()) {
      const key = methodKey(labels);
      if (!serverMethods.has(key)) serverMethods.set(key, { service: labels.service ?? '', method: labels.method ?? '', calls: 0, codes: new Map() });
    }
  }
  const server: ServerMethodRow[] = [...serverMethods].map(([key, m]) => ({
    service: m.service,
    method: m.method,
    callsPerSecond: m.calls / seconds,
    codes: codeRates(m.codes, seconds),
    p50Seconds: quantileOf(handling, key, 0.5),
    p99Seconds: quantileOf(handling, key, 0.99),
    queueP99Seconds: quantileOf(queueing, key, 0.99),
  }));
  server.sort(busiestFirst);

  const rejectedBy = new Map<string, RejectionRow>();
  for (const { labels, increase } of increases(a, b, 'svrkit_server_rejected_total')) {
    const reason = labels.reason ?? '?';
    const dryRun = labels.dry_run === 'true';
    const key = `${reason}/${dryRun}`;
    const perSecond = (rejectedBy.get(key)?.perSecond ?? 0) + increase / seconds;
    rejectedBy.set(key, { reason, dryRun, perSecond });
  }
  const rejections = [...rejectedBy.values()].sort((x, y) => y.perSecond - x.perSecond || x.reason.localeCompare(y.reason) || Number(x.dryRun) - Number(y.dryRun));

  const clientMethods = byMethodAndCode(a, b, 'svrkit_client_handled_total');
  const clientHandling = methodHistograms(a, b, 'svrkit_client_handling_seconds');
  const retries = new Map<string, number>();
  for (const { labels, increase } of increases(a, b, 'svrkit_client_retries_total')) {
    const key = methodKey(labels);
    retries.set(key, (retries.get(key) ?? 0) + increase);
    if (!clientMethods.has(key)) clientMethods.set(key, { service: labels.service ?? '', method: labels.method ?? '', calls: 0, codes: new Map() });
  }
  const throttled = new Map<string, Map<string, number>>();
  for (const { labels, increase } of increases(a, b, 'svrkit_client_throttled_total')) {
    const key = methodKey(labels);
    let m = throttled.get(key);
    if (m === undefined) throttled.set(key, (m = new Map()));
    const reason = labels.reason ?? '?';
    m.set(reason, (m.get(reason) ?? 0) + increase);
    if (!clientMethods.has(key)) clientMethods.set(key, { service: labels.service ?? '', method: labels.method ?? '', calls: 0, codes: new Map() });
  }
  const client: ClientMethodRow[] = [...clientMethods].map(([key, m]) => ({
    service: m.service,
    method: m.method,
    callsPerSecond: m.calls / seconds,
    codes: codeRates(m.codes, seconds),
    p50Seconds: quantileOf(clientHandling, key, 0.5),
    p99Seconds: quantileOf(clientHandling, key, 0.99),
    retriesPerSecond: (retries.get(key) ?? 0) / seconds,
    throttled: [...(throttled.get(key) ?? new Map<string, number>())]
      .filter(([, n]) => n > 0)
      .map(([reason, n]) => ({ reason, perSecond: n / seconds }))
      .sort((x, y) => y.perSecond - x.perSecond || x.reason.localeCompare(y.reason)),
  }));
  client.sort(busiestFirst);

  return {
    intervalSeconds: seconds,
    hasServerMetrics: b.families.some((f) => f.name === 'svrkit_server_handled_total'),
    inflightCalls: gaugeSum(b, 'svrkit_server_inflight_calls'),
    admissionLevel: gaugeMin(b, 'svrkit_server_admission_level'),
    admissionLevels: gaugeMin(b, 'svrkit_server_admission_levels'),
    eventLoopLagP99Seconds: gaugeMin(b, 'nodejs_eventloop_lag_p99_seconds'),
    server,
    rejections,
    client,
  };
}

/** A rate, per second, with one decimal. */
function rate(n: number): string {
  return n.toFixed(1);
}

/** Seconds shown as milliseconds with 2-3 significant digits; `-` for undefined. */
export function formatMs(seconds: number | undefined): string {
  if (seconds === undefined || Number.isNaN(seconds)) return '-';
  const ms = seconds * 1000;
  if (ms === Infinity) return '+Inf';
  if (ms < 10) return ms.toFixed(2);
  if (ms < 100) return ms.toFixed(1);
  return ms.toFixed(0);
}

/** Lays out rows as columns separated by two spaces; `right[i]` right-aligns column i. */
function table(rows: string[][], right: boolean[]): string[] {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows.map((row) =>
    row
      .map((cell, i) => (i === row.length - 1 && !right[i] ? cell : right[i] ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd(),
  );
}

/**
 * Renders a frame as plain text (no ANSI codes): a title line, a summary line (in-flight calls,
 * admission level, event-loop lag), the server methods table (calls/s, p50/p99 and queueing p99
 * in ms, calls/s by code), rejections per second by reason, and the client methods table when the
 * process made calls.
 * @param frame - from `computeTopFrame`.
 * @param title - the first line, e.g. the scraped URL.
 * @returns the text, lines separated by `\n`, ending with `\n`.
 */
export function formatTopFrame(frame: TopFrame, title: string): string {
  const out: string[] = [`${title}  (interval ${frame.intervalSeconds.toFixed(1)} s)`];
  const summary: string[] = [];
  if (frame.inflightCalls !== undefined) summary.push(`in-flight ${frame.inflightCalls}`);
  if (frame.admissionLevel !== undefined) {
    const max = frame.admissionLevels !== undefined ? frame.admissionLevels - 1 : undefined;
    summary.push(`admission level ${frame.admissionLevel}${max !== undefined ? `/${max}${frame.admissionLevel >= max ? ' (admits all)' : ''}` : ''}`);
  }
  if (frame.eventLoopLagP99Seconds !== undefined) summary.push(`event-loop lag p99 ${formatMs(frame.eventLoopLagP99Seconds)} ms`);
  if (summary.length > 0) out.push(summary.join('   '));
  out.push('');

  if (!frame.hasServerMetrics) {
    out.push('no svrkit_server_* metrics at this endpoint (not a svrkit server, or metrics not enabled)');
  } else if (frame.server.length === 0) {
    out.push('SERVER: no calls yet');
  } else {
    const rows = [['SERVER METHOD', 'CALLS/S', 'P50 ms', 'P99 ms', 'QUEUE P99 ms', 'BY CODE (calls/s)']];
    for (const r of frame.server) {
      rows.push([
        `${r.service}/${r.method}`,
        rate(r.callsPerSecond),
        formatMs(r.p50Seconds),
        formatMs(r.p99Seconds),
        formatMs(r.queueP99Seconds),
        r.codes.length === 0 ? '-' : r.codes.map((c) => `${c.code} ${rate(c.perSecond)}`).join(', '),
      ]);
    }
    out.push(...table(rows, [false, true, true, true, true, false]));
  }

  if (frame.hasServerMetrics) {
    out.push('');
    if (frame.rejections.length === 0) {
      out.push('REJECTED: none');
    } else {
      const rows = [['REJECTED/S', 'REASON']];
      for (const r of frame.rejections) rows.push([rate(r.perSecond), r.dryRun ? `${r.reason} (dry run: served)` : r.reason]);
      out.push(...table(rows, [true, false]));
    }
  }

  if (frame.client.length > 0) {
    out.push('');
    const rows = [['CLIENT METHOD', 'CALLS/S', 'P50 ms', 'P99 ms', 'RETRIES/S', 'THROTTLED/S', 'BY CODE (calls/s)']];
    for (const r of frame.client) {
      const throttled = r.throttled.reduce((s, t) => s + t.perSecond, 0);
      rows.push([
        `${r.service}/${r.method}`,
        rate(r.callsPerSecond),
        formatMs(r.p50Seconds),
        formatMs(r.p99Seconds),
        rate(r.retriesPerSecond),
        r.throttled.length === 0 ? rate(throttled) : `${rate(throttled)} (${r.throttled.map((t) => `${t.reason} ${rate(t.perSecond)}`).join(', ')})`,
        r.codes.length === 0 ? '-' : r.codes.map((c) => `${c.code} ${rate(c.perSecond)}`).join(', '),
      ]);
    }
    out.push(...table(rows, [false, true, true, true, true, true, false]));
  }
  return out.join('\n') + '\n';
}
