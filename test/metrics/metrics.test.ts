/**
 * SvrkitMetrics (framework/metrics/metrics.ts) through its public interface: observer calls show
 * up in the exposition with the right names, labels and values (read back with the parser),
 * watched servers feed the gauges at scrape time, and `serve` answers GET /metrics over HTTP on
 * 127.0.0.1.
 */
import { request } from 'node:http';
import { createServer } from 'node:net';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { splitMethodName, SvrkitMetrics, type MetricsEndpoint } from '../../framework/metrics/metrics.js';
import { parseExposition, type Exposition, type Sample } from '../../framework/metrics/parse.js';
import { Status } from '../../framework/index.js';

const endpoints: MetricsEndpoint[] = [];

afterEach(async () => {
  await Promise.all(endpoints.splice(0).map((e) => e.close()));
});

async function scrape(metrics: SvrkitMetrics): Promise<Exposition> {
  return parseExposition(await metrics.metrics());
}

/** The one sample of `name` whose labels include `labels`. */
function sample(exp: Exposition, name: string, labels: Record<string, string> = {}): Sample {
  const found = (exp.samples.get(name) ?? []).filter((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  expect(found, `${name}${JSON.stringify(labels)} in ${JSON.stringify([...exp.samples.keys()])}`).toHaveLength(1);
  return found[0]!;
}

function value(exp: Exposition, name: string, labels: Record<string, string> = {}): number {
  return sample(exp, name, labels).value;
}

/** HTTP request to 127.0.0.1; resolves with status, headers and body. */
function http(url: string, method = 'GET'): Promise<{ status: number; contentType: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, contentType: String(res.headers['content-type']), body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('splitMethodName', () => {
  it('splits at the last slash', () => {
    expect(splitMethodName('probe.Probe/Echo')).toEqual({ service: 'probe.Probe', method: 'Echo' });
    expect(splitMethodName('a.b.C/D')).toEqual({ service: 'a.b.C', method: 'D' });
    expect(splitMethodName('nomethod')).toEqual({ service: '', method: 'nomethod' });
  });
});

describe('SvrkitMetrics as a ServerObserver', () => {
  it('counts ended calls by service, method and status name; observes handling and queueing time', async () => {
    const m = new SvrkitMetrics();
    m.server.callEnded('probe.Probe/Echo', Status.OK, 0.002, 0.0001);
    m.server.callEnded('probe.Probe/Echo', Status.OK, 0.004, 0.0003);
    m.server.callEnded('probe.Probe/Echo', Status.NOT_FOUND, 0.5, 0.0015);
    m.server.callEnded('svrkit.Health/Check', Status.OK, 0.00005, 0);
    m.server.callEnded('probe.Probe/Echo', 99, 0.001, 0); // not a gRPC code: UNKNOWN
    const exp = await scrape(m);
    const echo = { service: 'probe.Probe', method: 'Echo' };
    expect(value(exp, 'svrkit_server_handled_total', { ...echo, code: 'OK' })).toBe(2);
    expect(value(exp, 'svrkit_server_handled_total', { ...echo, code: 'NOT_FOUND' })).toBe(1);
    expect(value(exp, 'svrkit_server_handled_total', { ...echo, code: 'UNKNOWN' })).toBe(1);
    expect(value(exp, 'svrkit_server_handled_total', { service: 'svrkit.Health', method: 'Check', code: 'OK' })).toBe(1);
    expect(exp.samples.get('svrkit_server_handled_total')).toHaveLength(4);

    expect(value(exp, 'svrkit_server_handling_seconds_count', echo)).toBe(4);
    expect(value(exp, 'svrkit_server_handling_seconds_sum', echo)).toBeCloseTo(0.507, 12);
    expect(value(exp, 'svrkit_server_handling_seconds_bucket', { ...echo, le: '0.001' })).toBe(1);
    expect(value(exp, 'svrkit_server_handling_seconds_bucket', { ...echo, le: '0.005' })).toBe(3);
    expect(value(exp, 'svrkit_server_handling_seconds_bucket', { ...echo, le: '0.5' })).toBe(4);
    expect(value(exp, 'svrkit_server_handling_seconds_bucket', { ...echo, le: '+Inf' })).toBe(4);

    expect(value(exp, 'svrkit_server_queueing_seconds_count', echo)).toBe(4);
    expect(value(exp, 'svrkit_server_queueing_seconds_bucket', { ...echo, le: '0.0005' })).toBe(3);
    expect(value(exp, 'svrkit_server_queueing_seconds_bucket', { ...echo, le: '0.002' })).toBe(4);
    const queueBounds = exp.samples.get('svrkit_server_queueing_seconds_bucket')!.filter((s) => s.labels.method === 'Echo').map((s) => s.labels.le);
    expect(queueBounds[0]).toBe('0.0005');
    expect(queueBounds.slice(-2)).toEqual(['2', '+Inf']);
    const types = Object.fromEntries(exp.families.map((f) => [f.name, f.type]));
    expect(types).toMatchObject({
      svrkit_server_handled_total: 'counter',
      svrkit_server_handling_seconds: 'histogram',
      svrkit_server_queueing_seconds: 'histogram',
      svrkit_server_rejected_total: 'counter',
      svrkit_server_inflight_calls: 'gauge',
      svrkit_server_admission_level: 'gauge',
      svrkit_server_admission_levels: 'gauge',
      svrkit_server_buffered_bytes: 'gauge',
    });
  });

  it('counts rejections by reason and dry run', async () => {
    const m = new SvrkitMetrics();
    m.server.rejected('probe.Probe/Echo', 'priority', false);
    m.server.rejected('probe.Probe/Echo', 'priority', false);
    m.server.rejected('probe.Probe/Echo', 'priority', true);
    m.server.rejected('probe.Probe/Echo', 'inflight', false);
    m.server.rejected('probe.Probe/Other', 'goaway', false);
    const exp = await scrape(m);
    const echo = { service: 'probe.Probe', method: 'Echo' };
    expect(value(exp, 'svrkit_server_rejected_total', { ...echo, reason: 'priority', dry_run: 'false' })).toBe(2);
    expect(value(exp, 'svrkit_server_rejected_total', { ...echo, reason: 'priority', dry_run: 'true' })).toBe(1);
    expect(value(exp, 'svrkit_server_rejected_total', { ...echo, reason: 'inflight', dry_run: 'false' })).toBe(1);
    expect(value(exp, 'svrkit_server_rejected_total', { method: 'Other', reason: 'goaway', dry_run: 'false' })).toBe(1);
    // A rejected call never reached a handler: no handled series for it.
    expect(exp.samples.get('svrkit_server_handled_total')).toBeUndefined();
  });

  it('counts methods beyond maxMethods under method "_other"', async () => {
    const m = new SvrkitMetrics(undefined, { maxMethods: 2, defaultMetrics: false });
    for (const name of ['a.S/One', 'a.S/Two', 'a.S/Three', 'a.S/Four', 'a.S/One']) m.server.callEnded(name, Status.OK, 0.001, 0);
    const exp = await scrape(m);
    expect(value(exp, 'svrkit_server_handled_total', { service: 'a.S', method: 'One' })).toBe(2);
    expect(value(exp, 'svrkit_server_handled_total', { service: 'a.S', method: 'Two' })).toBe(1);
    expect(value(exp, 'svrkit_server_handled_total', { service: '', method: '_other' })).toBe(2);
    expect(exp.samples.get('svrkit_server_handled_total')).toHaveLength(3);
  });
});

describe('SvrkitMetrics as a ClientObserver', () => {
  it('counts calls, retries and throttling; observes call time', async () => {
    const m = new SvrkitMetrics();
    m.client.callEnded('kv.KV/Get', Status.OK, 0.003);
    m.client.callEnded('kv.KV/Get', Status.UNAVAILABLE, 0.2);
    m.client.retried('kv.KV/Get');
    m.client.retried('kv.KV/Get');
    m.client.throttled('kv.KV/Get', 'retry_budget');
    m.client.throttled('kv.KV/Get', 'shed');
    m.client.throttled('kv.KV/Get', 'shed');
    const exp = await scrape(m);
    const get = { service: 'kv.KV', method: 'Get' };
    expect(value(exp, 'svrkit_client_handled_total', { ...get, code: 'OK' })).toBe(1);
    expect(value(exp, 'svrkit_client_handled_total', { ...get, code: 'UNAVAILABLE' })).toBe(1);
    expect(value(exp, 'svrkit_client_handling_seconds_count', get)).toBe(2);
    expect(value(exp, 'svrkit_client_handling_seconds_sum', get)).toBeCloseTo(0.203, 12);
    expect(value(exp, 'svrkit_client_retries_total', get)).toBe(2);
    expect(value(exp, 'svrkit_client_throttled_total', { ...get, reason: 'retry_budget' })).toBe(1);
    expect(value(exp, 'svrkit_client_throttled_total', { ...get, reason: 'shed' })).toBe(2);
    // Client and server series are separate.
    expect(exp.samples.get('svrkit_server_handled_total')).toBeUndefined();
  });
});

describe('SvrkitMetrics.watchServer', () => {
  it('reads in-flight calls and admission level at scrape time; sums and takes the minimum over servers', async () => {
    const m = new SvrkitMetrics();
    let exp = await scrape(m);
    expect(value(exp, 'svrkit_server_inflight_calls')).toBe(0);
    expect(value(exp, 'svrkit_server_admission_level')).toBe(16383);
    expect(value(exp, 'svrkit_server_admission_levels')).toBe(16384);

    expect(value(exp, 'svrkit_server_buffered_bytes')).toBe(0);

    const a = { inflightCalls: 3, admissionLevel: 16383, admissionLevels: 16384, bufferedBytes: 1000 };
    const b = { inflightCalls: 4, admissionLevel: 9000, admissionLevels: 16384 };
    const unwatchA = m.watchServer(a);
    m.watchServer(b);
    exp = await scrape(m);
    expect(value(exp, 'svrkit_server_inflight_calls')).toBe(7);
    expect(value(exp, 'svrkit_server_buffered_bytes')).toBe(1000);
    expect(value(exp, 'svrkit_server_admission_level')).toBe(9000);

    a.inflightCalls = 10;
    b.admissionLevel = 120;
    exp = await scrape(m);
    expect(value(exp, 'svrkit_server_inflight_calls')).toBe(14);
    expect(value(exp, 'svrkit_server_admission_level')).toBe(120);

    unwatchA();
    b.admissionLevel = 16383;
    exp = await scrape(m);
    expect(value(exp, 'svrkit_server_inflight_calls')).toBe(4);
    expect(value(exp, 'svrkit_server_admission_level')).toBe(16383);
  });

  it('a server without admission control (no admissionLevel) admits everything', async () => {
    const m = new SvrkitMetrics();
    m.watchServer({ inflightCalls: 2 });
    const exp = await scrape(m);
    expect(value(exp, 'svrkit_server_inflight_calls')).toBe(2);
    expect(value(exp, 'svrkit_server_admission_level')).toBe(16383);
  });
});

describe('SvrkitMetrics registry and default metrics', () => {
  it('includes prom-client default process metrics, event-loop lag among them', async () => {
    const exp = await scrape(new SvrkitMetrics());
    const names = exp.families.map((f) => f.name);
    for (const n of ['process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_seconds', 'nodejs_eventloop_lag_p50_seconds', 'nodejs_eventloop_lag_p90_seconds', 'nodejs_eventloop_lag_p99_seconds']) {
      expect(names, n).toContain(n);
    }
    expect(value(exp, 'nodejs_eventloop_lag_p99_seconds')).toBeGreaterThanOrEqual(0);
  });

  it('defaultMetrics: false leaves them out; a given registry is used; a second instance on it throws', async () => {
    const registry = new Registry();
    const m = new SvrkitMetrics(registry, { defaultMetrics: false });
    expect(m.registry).toBe(registry);
    const exp = parseExposition(await registry.metrics());
    expect(exp.families.every((f) => f.name.startsWith('svrkit_'))).toBe(true);
    expect(() => new SvrkitMetrics(registry, { defaultMetrics: false })).toThrow(/already been registered/);
    expect(() => new SvrkitMetrics(undefined, { maxMethods: 0 })).toThrow(/maxMethods must be a positive integer/);
  });
});

describe('SvrkitMetrics.serve', () => {
  it('GET /metrics answers the exposition with the registry content type; other paths 404, other methods 405', async () => {
    const m = new SvrkitMetrics();
    m.server.callEnded('probe.Probe/Echo', Status.OK, 0.001, 0);
    const e = await m.serve(0);
    endpoints.push(e);
    expect(e.address).toBe(`127.0.0.1:${e.port}`);
    expect(e.url).toBe(`http://127.0.0.1:${e.port}/metrics`);
    const r = await http(e.url);
    expect(r.status).toBe(200);
    expect(r.contentType).toBe(m.registry.contentType);
    expect(r.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(value(parseExposition(r.body), 'svrkit_server_handled_total', { method: 'Echo', code: 'OK' })).toBe(1);
    expect((await http(`${e.url}?x=1`)).status).toBe(200);
    expect((await http(`http://${e.address}/`)).status).toBe(404);
    expect((await http(`http://${e.address}/metricsx`)).status).toBe(404);
    expect((await http(e.url, 'POST')).status).toBe(405);
  });

  it('close() stops listening; closing twice is fine', async () => {
    const e = await new SvrkitMetrics().serve(0);
    await e.close();
    await e.close();
    await expect(http(e.url)).rejects.toThrow(/ECONNREFUSED/);
  });

  it('a port in use rejects with a clear message', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    try {
      const port = (blocker.address() as { port: number }).port;
      await expect(new SvrkitMetrics().serve(port)).rejects.toThrow(`metrics port ${port} on 127.0.0.1: address in use`);
    } finally {
      await new Promise<void>((resolve) => blocker.close(() => resolve()));
    }
  });
});
