/**
 * `svrkit top <metrics URL>`: a live terminal view of one server's `/metrics` (calls/s by method
 * and code, latency and queueing percentiles, rejections, admission level, in-flight calls,
 * event-loop lag, client-side calls/retries/throttling), refreshed every `--interval` ms.
 */
import { get as httpGet, type IncomingMessage } from 'node:http';
import { get as httpsGet } from 'node:https';
import { setTimeout as sleep } from 'node:timers/promises';
import { Command, InvalidArgumentError } from 'commander';
import { parseExposition, type Exposition } from '../metrics/parse.js';
import { computeTopFrame, formatTopFrame, type Scrape } from '../metrics/top.js';
import { intOption, reportError } from './flags.js';

/** How long one scrape may take (ms). */
const SCRAPE_TIMEOUT_MS = 10_000;
/** Largest reply accepted (bytes). */
const MAX_REPLY_BYTES = 64 * 1024 * 1024;
/** ANSI: cursor home, clear screen, clear scrollback. */
const CLEAR = '\x1b[H\x1b[2J\x1b[3J';

/**
 * Parses the `<url>` argument: an `http://` or `https://` URL, or `host:port` (meaning
 * `http://host:port/metrics`); a URL with no path (or `/`) gets `/metrics`.
 * @returns the normalized URL.
 * @throws InvalidArgumentError for anything else.
 */
export function metricsUrl(value: string): string {
  const text = /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? value : `http://${value}`;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new InvalidArgumentError(`'${value}' is not a URL: give http://host:port/metrics or host:port`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new InvalidArgumentError(`'${value}': only http:// and https:// metrics URLs are supported`);
  }
  if (url.hostname === '') throw new InvalidArgumentError(`'${value}' has no host: give http://host:port/metrics or host:port`);
  if (url.pathname === '/') url.pathname = '/metrics';
  return url.href;
}

/**
 * Fetches and parses one scrape.
 * @param url - the metrics URL.
 * @param nowMs - clock for the scrape time (monotonic).
 * @returns the scrape.
 * @throws Error (rejection) with a one-line message when the URL cannot be reached, answers
 *   other than 200, takes longer than 10 s, sends more than 64 MiB, or sends something that is not
 *   the Prometheus text format (or contains no samples).
 */
export async function scrape(url: string, nowMs: () => number = () => performance.now()): Promise<Scrape> {
  const timeMs = nowMs();
  const { status, contentType, body } = await fetchText(url);
  if (status !== 200) {
    const snippet = body.trim().split('\n')[0]?.slice(0, 120) ?? '';
    throw new Error(`${url} answered HTTP ${status}${snippet !== '' ? `: ${snippet}` : ''}`);
  }
  let metrics: Exposition;
  try {
    metrics = parseExposition(body);
  } catch (err) {
    throw new Error(`${url} did not send Prometheus metrics (content type ${contentType || 'none'}): ${(err as Error).message}`);
  }
  if (metrics.samples.size === 0) {
    throw new Error(`${url} sent no metric samples (content type ${contentType || 'none'}): is it a Prometheus /metrics endpoint?`);
  }
  return { timeMs, metrics };
}

function fetchText(url: string): Promise<{ status: number; contentType: string; body: string }> {
  return new Promise((resolve, reject) => {
    const get = url.startsWith('https:') ? httpsGet : httpGet;
    const fail = (why: string): void => reject(new Error(`cannot scrape ${url}: ${why}`));
    const req = get(url, { timeout: SCRAPE_TIMEOUT_MS, headers: { accept: 'text/plain;version=0.0.4;q=1, */*;q=0.1' } }, (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_REPLY_BYTES) {
          req.destroy();
          fail(`reply larger than ${MAX_REPLY_BYTES} bytes`);
          return;
        }
        chunks.push(chunk);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type'] ?? ''), body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', (err) => fail(err.message));
    });
    req.on('timeout', () => {
      req.destroy();
      fail(`no reply within ${SCRAPE_TIMEOUT_MS} ms`);
    });
    req.on('error', (err: NodeJS.ErrnoException) => fail(describeNetError(err)));
  });
}

function describeNetError(err: NodeJS.ErrnoException): string {
  // Node reports a refused dual-stack connect as an AggregateError with an empty message.
  const inner = (err as unknown as { errors?: NodeJS.ErrnoException[] }).errors;
  if (err.message === '' && Array.isArray(inner) && inner.length > 0) return inner.map((e) => e.message).join('; ');
  return err.message || err.code || String(err);
}

interface TopFlags {
  interval: number;
  once?: boolean;
}

/**
 * Adds `svrkit top <url> [--interval ms] [--once]` to `program`.
 *
 * Live mode redraws the screen (ANSI clear) every interval when stdout is a terminal, and prints
 * frames one after another otherwise; a failed scrape shows its error line and is retried next
 * interval; SIGINT exits 0. `--once` takes two scrapes `interval` apart, prints one frame without
 * ANSI codes and exits 0; any failure exits 1 with `error: <message>` on stderr.
 */
export function addTopCommand(program: Command): void {
  program
    .command('top')
    .description("a live view of a server's /metrics (svrkit run --metrics-port): calls/s, latency, rejections, admission level")
    .argument('<url>', 'metrics URL, e.g. http://127.0.0.1:9464/metrics (or host:port)', metricsUrl)
    .option('-i, --interval <ms>', 'time between scrapes (ms)', intOption('interval', 10, 3_600_000), 1000)
    .option('--once', 'take two scrapes --interval apart, print one plain frame and exit')
    .action(async (url: string, opts: TopFlags) => {
      if (opts.once) {
        try {
          const first = await scrape(url);
          await sleep(opts.interval);
          const second = await scrape(url);
          process.stdout.write(formatTopFrame(computeTopFrame(first, second), `svrkit top ${url}`));
        } catch (err) {
          reportError(err);
        }
        return;
      }
      await live(url, opts.interval);
    });
}

async function live(url: string, intervalMs: number): Promise<never> {
  const tty = process.stdout.isTTY === true;
  process.once('SIGINT', () => {
    if (tty) process.stdout.write('\n');
    process.exit(0);
  });
  const draw = (text: string): void => {
    process.stdout.write(tty ? CLEAR + text : text + '\n');
  };
  let previous: Scrape | undefined;
  for (;;) {
    const started = performance.now();
    const title = `svrkit top ${url}  ${new Date().toISOString().slice(11, 19)}`;
    try {
      const current = await scrape(url);
      if (previous === undefined) draw(`${title}\nwaiting ${intervalMs} ms for a second scrape...\n`);
      else draw(formatTopFrame(computeTopFrame(previous, current), title));
      previous = current;
    } catch (err) {
      draw(`${title}\nerror: ${(err as Error).message}\nretrying every ${intervalMs} ms (Ctrl-C to quit)\n`);
    }
    await sleep(Math.max(0, intervalMs - (performance.now() - started)));
  }
}
