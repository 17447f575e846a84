/**
 * Metrics as real processes on 127.0.0.1: `svrkit run --metrics-port` serves /metrics for the
 * calls it handles (counted exactly, by method and status), `svrkit top` shows a frame from a
 * live endpoint (once, or refreshed until SIGINT), and bad flags, unreachable URLs and replies that
 * are not metrics fail with exit 1 and a message.
 *
 * Needs a fresh dist/ (`npm test` builds first; else run `npm run build`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer as createHttpServer, get, type Server as HttpServer } from 'node:http';
import { createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RpcError, Status } from '../../framework/index.js';
import { SvrkitMetrics } from '../../framework/metrics/metrics.js';
import { parseExposition, type Exposition } from '../../framework/metrics/parse.js';
import { ProbeClient } from '../.tmp/gen/probe/probe.js';
import { eventually } from '../support/poll.js';
import { killAll, repoRoot, runSvrkit, startSvrkit, stopAllSvrkit, svrkitBin, type SvrkitProcess } from '../support/processes.js';

const clients: Array<{ close(): void }> = [];
const httpServers: HttpServer[] = [];
const children = new Set<ChildProcess>();

afterAll(async () => {
  for (const c of clients) c.close();
  await killAll(children);
  await stopAllSvrkit();
  await Promise.all(
    httpServers.map(
      (s) =>
        new Promise<void>((resolve) => {
          s.closeAllConnections();
          s.close(() => resolve());
        }),
    ),
  );
});

/** GET `url` from 127.0.0.1: status and body. */
function httpGet(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    get(url, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    }).on('error', reject);
  });
}

async function scrape(url: string): Promise<Exposition> {
  const r = await httpGet(url);
  expect(r.status).toBe(200);
  return parseExposition(r.body);
}

/** Value of the one sample of `name` with these labels, or undefined when there is none. */
function valueOf(exp: Exposition, name: string, labels: Record<string, string> = {}): number | undefined {
  const found = (exp.samples.get(name) ?? []).filter((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (found.length > 1) throw new Error(`${found.length} samples of ${name}${JSON.stringify(labels)}`);
  return found[0]?.value;
}

/** A loopback port that nothing listens on (bound, then released). */
async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

/** An HTTP server on 127.0.0.1 answering the i-th request with `replies[min(i, last)]`. */
async function cannedEndpoint(replies: Array<{ status?: number; contentType?: string; body: string }>): Promise<{ url: string; requests: () => number }> {
  let n = 0;
  const srv = createHttpServer((_req, res) => {
    const r = replies[Math.min(n++, replies.length - 1)]!;
    res.writeHead(r.status ?? 200, { 'content-type': r.contentType ?? 'text/plain; version=0.0.4; charset=utf-8' }).end(r.body);
  });
  httpServers.push(srv);
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(srv.address() as { port: number }).port}/metrics`, requests: () => n };
}

/** Starts `svrkit <args>` (tracked; killed in afterAll) and collects its output. */
function spawnSvrkit(args: string[]): { child: ChildProcess; stdout: () => string; stderr: () => string; exited: Promise<{ code: number | null; signal: string | null }> } {
  const child = spawn(process.execPath, [svrkitBin, ...args], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
    child.once('close', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    }),
  );
  return { child, stdout: () => stdout, stderr: () => stderr, exited };
}

/** Exposition text of a svrkit server with the given Echo counts and handling-time buckets. */
function svrkitText(ok: number, notFound: number, buckets: Array<[string, number]>): string {
  return [
    '# HELP svrkit_server_handled_total Calls.',
    '# TYPE svrkit_server_handled_total counter',
    `svrkit_server_handled_total{service="probe.Probe",method="Echo",code="OK"} ${ok}`,
    `svrkit_server_handled_total{service="probe.Probe",method="Echo",code="NOT_FOUND"} ${notFound}`,
    '# TYPE svrkit_server_handling_seconds histogram',
    ...buckets.map(([le, n]) => `svrkit_server_handling_seconds_bucket{le="${le}",service="probe.Probe",method="Echo"} ${n}`),
    '# TYPE svrkit_server_inflight_calls gauge',
    'svrkit_server_inflight_calls 2',
    '# TYPE svrkit_server_admission_level gauge',
    'svrkit_server_admission_level 16383',
    '# TYPE svrkit_server_admission_levels gauge',
    'svrkit_server_admission_levels 16384',
    '# TYPE nodejs_eventloop_lag_p99_seconds gauge',
    'nodejs_eventloop_lag_p99_seconds 0.0105',
    '',
  ].join('\n');
}

describe('svrkit top against an endpoint', () => {
  it('--once: two scrapes, one plain frame with calls/s by code and quantiles from bucket deltas, exit 0', async () => {
    const endpoint = await cannedEndpoint([
      { body: svrkitText(100, 0, [['0.001', 100], ['0.01', 100], ['+Inf', 100]]) },
      // 200 more calls: all in (1 ms, 10 ms], so p50 = 1 ms + 9 ms * 100/200 = 5.50 ms, p99 = 9.91 ms.
      { body: svrkitText(280, 20, [['0.001', 100], ['0.01', 300], ['+Inf', 300]]) },
    ]);
    const r = await runSvrkit(['top', endpoint.url, '--once', '--interval', '200']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(endpoint.requests()).toBe(2);
    expect(r.stdout).not.toMatch(/\x1b/);
    expect(r.stdout).toMatch(new RegExp(`^svrkit top ${endpoint.url.replace(/[.]/g, '\\.')}  \\(interval \\d+\\.\\d s\\)$`, 'm'));
    expect(r.stdout).toContain('in-flight 2   admission level 16383/16383 (admits all)   event-loop lag p99 10.5 ms');
    expect(r.stdout).toMatch(/^probe\.Probe\/Echo\s+\d+\.\d\s+5\.50\s+9\.91\s+-\s+OK \d+\.\d, NOT_FOUND \d+\.\d$/m);
  });

  it('--once with an unreachable URL: exit 1, "cannot scrape ..." on stderr', async () => {
    const port = await freePort();
    const r = await runSvrkit(['top', `127.0.0.1:${port}`, '--once']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(new RegExp(`^error: cannot scrape http://127\\.0\\.0\\.1:${port}/metrics: .*ECONNREFUSED`));
  });

  it('--once with a reply that is not metrics (HTML, 404, empty): exit 1 with a message', async () => {
    const html = await cannedEndpoint([{ contentType: 'text/html', body: '<!doctype html>\n<html><body>hello</body></html>\n' }]);
    const missing = await cannedEndpoint([{ status: 404, body: 'no such page\n' }]);
    const empty = await cannedEndpoint([{ body: '' }]);
    const [h, m, e] = await Promise.all([
      runSvrkit(['top', html.url, '--once', '--interval', '50']),
      runSvrkit(['top', missing.url, '--once', '--interval', '50']),
      runSvrkit(['top', empty.url, '--once', '--interval', '50']),
    ]);
    expect(h.code).toBe(1);
    expect(h.stderr).toBe(`error: ${html.url} did not send Prometheus metrics (content type text/html): line 1: expected a metric name, got '<!doctype html>'\n`);
    expect(m.code).toBe(1);
    expect(m.stderr).toBe(`error: ${missing.url} answered HTTP 404: no such page\n`);
    expect(e.code).toBe(1);
    expect(e.stderr).toMatch(/sent no metric samples .*is it a Prometheus \/metrics endpoint\?/);
  });

  it('bad arguments: exit 1 with a usage error', async () => {
    const [scheme, interval, missing] = await Promise.all([
      runSvrkit(['top', 'ftp://127.0.0.1:1/metrics', '--once']),
      runSvrkit(['top', '127.0.0.1:1', '--interval', 'soon']),
      runSvrkit(['top']),
    ]);
    expect(scheme.code).toBe(1);
    expect(scheme.stderr).toContain('only http:// and https:// metrics URLs are supported');
    expect(interval.code).toBe(1);
    expect(interval.stderr).toContain('interval must be a whole number from 10 to 3600000');
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("missing required argument 'url'");
  });

  it('live mode (stdout not a terminal): prints a frame per interval without ANSI codes; SIGINT exits 0', async () => {
    const body = svrkitText(1, 0, [['0.001', 1], ['+Inf', 1]]);
    const endpoint = await cannedEndpoint([{ body }]);
    const top = spawnSvrkit(['top', endpoint.url, '--interval', '50']);
    await eventually('two frames', () => (top.stdout().match(/^SERVER METHOD/gm) ?? []).length >= 2);
    expect(top.stdout()).toMatch(/waiting 50 ms for a second scrape/);
    expect(top.stdout()).not.toMatch(/\x1b/);
    top.child.kill('SIGINT');
    expect(await top.exited).toEqual({ code: 0, signal: null });
  });

  it('live mode with an unreachable URL: shows the error and keeps retrying', async () => {
    const port = await freePort();
    const top = spawnSvrkit(['top', `http://127.0.0.1:${port}/metrics`, '--interval', '50']);
    await eventually('two error lines', () => (top.stdout().match(/^error: cannot scrape .*ECONNREFUSED/gm) ?? []).length >= 2);
    expect(top.stdout()).toContain('retrying every 50 ms');
    expect(top.child.exitCode).toBeNull();
    top.child.kill('SIGINT');
    expect((await top.exited).code).toBe(0);
  });
});

describe('svrkit run --metrics-port: bad values', () => {
  it('a value that is not a port: exit 1, nothing served', async () => {
    const [word, big, negative] = await Promise.all([
      runSvrkit(['run', 'test/support/probe.ts', '--port', '0', '--metrics-port', 'abc']),
      runSvrkit(['run', 'test/support/probe.ts', '--port', '0', '--metrics-port', '70000']),
      runSvrkit(['run', 'test/support/probe.ts', '--port', '0', '--metrics-port', '-1']),
    ]);
    for (const r of [word, big, negative]) {
      expect(r.code).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr).toContain('metrics-port must be a whole number from 0 to 65535');
    }
  });

  it('a port in use: exit 1 saying so, the RPC server closed again', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    try {
      const port = (blocker.address() as { port: number }).port;
      const r = await runSvrkit(['run', 'test/support/probe.ts', '--port', '0', '--metrics-port', String(port)]);
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(`error: metrics port ${port} on 127.0.0.1: address in use\n`);
      expect(r.stdout).not.toMatch(/svrkit: serving/);
    } finally {
      await new Promise<void>((resolve) => blocker.close(() => resolve()));
    }
  });
});

describe('svrkit run test/support/probe.ts --metrics-port 0', () => {
  let probe: SvrkitProcess;
  let metricsUrl: string;
  let client: ProbeClient;
  const OK_CALLS = 40;
  const NOT_FOUND_CALLS = 9;

  beforeAll(async () => {
    probe = await startSvrkit(['run', 'test/support/probe.ts', '--port', '0', '--metrics-port', '0']);
    const m = /^svrkit: metrics on (http:\/\/127\.0\.0\.1:\d+\/metrics)$/m.exec(probe.output().stdout);
    if (m === null) throw new Error(`no metrics line in:\n${probe.output().stdout}`);
    metricsUrl = m[1]!;
    client = new ProbeClient(probe.address);
    clients.push(client);
  });

  it('logs the metrics URL before the serving line; /metrics parses and has the default process metrics', async () => {
    const out = probe.output().stdout;
    expect(out.indexOf('svrkit: metrics on ')).toBeLessThan(out.indexOf('svrkit: serving '));
    const exp = await scrape(metricsUrl);
    const names = new Set(exp.families.map((f) => f.name));
    for (const n of ['process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_p99_seconds', 'svrkit_server_handled_total', 'svrkit_server_handling_seconds', 'svrkit_server_queueing_seconds', 'svrkit_server_rejected_total', 'svrkit_client_handled_total']) {
      expect(names.has(n), n).toBe(true);
    }
    expect(valueOf(exp, 'svrkit_server_inflight_calls')).toBe(0);
    expect(valueOf(exp, 'svrkit_server_admission_levels')).toBe(16384);
    const level = valueOf(exp, 'svrkit_server_admission_level')!;
    expect(level).toBeGreaterThanOrEqual(0);
    expect(level).toBeLessThanOrEqual(16383);
    expect((await httpGet(metricsUrl.replace(/\/metrics$/, '/nope'))).status).toBe(404);
  });

  it('counts exactly the calls made, by status; the handling and queueing histograms count them too', async () => {
    const calls: Array<Promise<unknown>> = [];
    for (let i = 0; i < OK_CALLS; i++) calls.push(client.echo({ text: `ok ${i}` }, { timeoutMs: 10_000 }));
    for (let i = 0; i < NOT_FOUND_CALLS; i++) {
      calls.push(
        client.echo({ text: `nf ${i}`, fail: 'rpc:NOT_FOUND:x' }, { timeoutMs: 10_000 }).then(
          () => {
            throw new Error('expected NOT_FOUND');
          },
          (err: unknown) => {
            expect(err).toBeInstanceOf(RpcError);
            expect((err as RpcError).code).toBe(Status.NOT_FOUND);
          },
        ),
      );
    }
    await Promise.all(calls);
    const echo = { service: 'probe.Probe', method: 'Echo' };
    // The observer is called as each call ends on the server; wait until all have been counted.
    const exp = await eventually(
      'every call counted',
      () => scrape(metricsUrl),
      (e) => (valueOf(e, 'svrkit_server_handling_seconds_count', echo) ?? 0) >= OK_CALLS + NOT_FOUND_CALLS,
    );
    expect(valueOf(exp, 'svrkit_server_handled_total', { ...echo, code: 'OK' })).toBe(OK_CALLS);
    expect(valueOf(exp, 'svrkit_server_handled_total', { ...echo, code: 'NOT_FOUND' })).toBe(NOT_FOUND_CALLS);
    expect((exp.samples.get('svrkit_server_handled_total') ?? []).filter((s) => s.labels.service === 'probe.Probe')).toHaveLength(2);
    expect(valueOf(exp, 'svrkit_server_handling_seconds_count', echo)).toBe(OK_CALLS + NOT_FOUND_CALLS);
    expect(valueOf(exp, 'svrkit_server_handling_seconds_bucket', { ...echo, le: '+Inf' })).toBe(OK_CALLS + NOT_FOUND_CALLS);
    expect(valueOf(exp, 'svrkit_server_queueing_seconds_count', echo)).toBe(OK_CALLS + NOT_FOUND_CALLS);
    expect(valueOf(exp, 'svrkit_server_inflight_calls')).toBe(0);
    // Nothing was refused.
    expect(exp.samples.get('svrkit_server_rejected_total') ?? []).toEqual([]);
  });

  it('svrkit top --once shows the method with its calls/s while calls are made', async () => {
    let stop = false;
    const load = (async () => {
      let n = 0;
      while (!stop) await client.echo({ text: `top ${n++}` }, { timeoutMs: 10_000 });
      return n;
    })();
    let r;
    try {
      r = await runSvrkit(['top', metricsUrl, '--once', '--interval', '500']);
    } finally {
      stop = true;
    }
    expect(await load).toBeGreaterThan(0);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^SERVER METHOD\s+CALLS\/S/m);
    const row = /^probe\.Probe\/Echo\s+(\d+\.\d)\s.*\bOK (\d+\.\d)/m.exec(r.stdout);
    expect(row, r.stdout).not.toBeNull();
    expect(Number(row![1])).toBeGreaterThan(0);
    expect(r.stdout).toContain('in-flight ');
    expect(r.stdout).toContain('event-loop lag p99 ');
  });

  it('a channel with a SvrkitMetrics client observer counts its calls', async () => {
    const metrics = new SvrkitMetrics(undefined, { defaultMetrics: false });
    const observed = new ProbeClient(probe.address, { observer: metrics.client });
    clients.push(observed);
    await observed.echo({ text: 'a' }, { timeoutMs: 10_000 });
    await observed.echo({ text: 'b' }, { timeoutMs: 10_000 });
    await observed.echo({ text: 'c', fail: 'rpc:NOT_FOUND:x' }, { timeoutMs: 10_000 }).catch(() => {});
    const exp = parseExposition(await metrics.metrics());
    const echo = { service: 'probe.Probe', method: 'Echo' };
    expect(valueOf(exp, 'svrkit_client_handled_total', { ...echo, code: 'OK' })).toBe(2);
    expect(valueOf(exp, 'svrkit_client_handled_total', { ...echo, code: 'NOT_FOUND' })).toBe(1);
    expect(valueOf(exp, 'svrkit_client_handling_seconds_count', echo)).toBe(3);
  });

  it('on SIGTERM: closes the server, then the metrics endpoint; exit 0', async () => {
    const status = await probe.stop('SIGTERM');
    expect(status).toEqual({ code: 0, signal: null });
    expect(probe.output().stdout).toMatch(/svrkit: SIGTERM: closing.*\nsvrkit: closed\n$/);
    await expect(httpGet(metricsUrl)).rejects.toThrow(/ECONNREFUSED/);
  });
});

describe('metrics endpoints bind to 127.0.0.1 unless told otherwise', () => {
  it('svrkit run --host 127.0.0.2: the RPC server there, the metrics on 127.0.0.1; --metrics-host moves them', async () => {
    const server = await startSvrkit(['run', 'test/support/probe.ts', '--host', '127.0.0.2', '--port', '0', '--metrics-port', '0']);
    try {
      expect(server.address).toMatch(/^127\.0\.0\.2:/);
      const url = /metrics on (http:\/\/\S+)/.exec(server.output().stdout)?.[1];
      expect(url, server.output().stdout).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
      expect((await httpGet(url!)).status).toBe(200);
    } finally {
      await server.stop();
    }
    const moved = await startSvrkit(['run', 'test/support/probe.ts', '--host', '127.0.0.1', '--port', '0', '--metrics-port', '0', '--metrics-host', '127.0.0.2']);
    try {
      const url = /metrics on (http:\/\/\S+)/.exec(moved.output().stdout)?.[1];
      expect(url, moved.output().stdout).toMatch(/^http:\/\/127\.0\.0\.2:\d+\/metrics$/);
      expect((await httpGet(url!)).status).toBe(200);
    } finally {
      await moved.stop();
    }
  });
});
