/**
 * The Prometheus text-format parser (framework/metrics/parse.ts): the format's documented example,
 * escapes, special values, timestamps, family grouping, prom-client's own output, and clear
 * line-numbered errors for malformed input.
 */
import { Counter, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { ExpositionParseError, parseExposition, parseSampleValue, type Exposition } from '../../framework/metrics/parse.js';

/** The example from the Prometheus exposition-format documentation (with a few more edge cases). */
const EXAMPLE = [
  '# HELP http_requests_total The total number of HTTP requests.',
  '# TYPE http_requests_total counter',
  'http_requests_total{method="post",code="200"} 1027 1395066363000',
  'http_requests_total{method="post",code="400"}    3 1395066363000',
  '',
  '# Escaping in label values:',
  'msdos_file_access_time_seconds{path="C:\\\\DIR\\\\FILE.TXT",error="Cannot find file:\\n\\"FILE.TXT\\""} 1.458255915e9',
  '',
  '# Minimalistic line:',
  'metric_without_timestamp_and_labels 12.47',
  '',
  '# A weird metric from before the epoch:',
  'something_weird{problem="division by zero"} +Inf -3982045',
  '',
  '# A histogram, which has a pretty complex representation in the text format:',
  '# HELP http_request_duration_seconds A histogram of the request duration.',
  '# TYPE http_request_duration_seconds histogram',
  'http_request_duration_seconds_bucket{le="0.05"} 24054',
  'http_request_duration_seconds_bucket{le="0.1"} 33444',
  'http_request_duration_seconds_bucket{le="0.2"} 100392',
  'http_request_duration_seconds_bucket{le="0.5"} 129389',
  'http_request_duration_seconds_bucket{le="1"} 133988',
  'http_request_duration_seconds_bucket{le="+Inf"} 144320',
  'http_request_duration_seconds_sum 53423',
  'http_request_duration_seconds_count 144320',
  '',
  '# Finally a summary, which has a complex representation, too:',
  '# HELP rpc_duration_seconds A summary of the RPC duration in seconds.',
  '# TYPE rpc_duration_seconds summary',
  'rpc_duration_seconds{quantile="0.01"} 3102',
  'rpc_duration_seconds{quantile="0.5"} 4773',
  'rpc_duration_seconds{quantile="0.99"} NaN',
  'rpc_duration_seconds_sum 1.7560473e+07',
  'rpc_duration_seconds_count 2693',
  '',
].join('\n');

function only(exp: Exposition, name: string) {
  const s = exp.samples.get(name);
  expect(s, `samples of ${name}`).toBeDefined();
  return s!;
}

describe('parseExposition', () => {
  it('parses the documented example: families, types, help, labels, values, timestamps', () => {
    const exp = parseExposition(EXAMPLE);
    expect(exp.families.map((f) => [f.name, f.type])).toEqual([
      ['http_requests_total', 'counter'],
      ['msdos_file_access_time_seconds', 'untyped'],
      ['metric_without_timestamp_and_labels', 'untyped'],
      ['something_weird', 'untyped'],
      ['http_request_duration_seconds', 'histogram'],
      ['rpc_duration_seconds', 'summary'],
    ]);
    expect(exp.families[0]!.help).toBe('The total number of HTTP requests.');
    expect(only(exp, 'http_requests_total')).toEqual([
      { name: 'http_requests_total', labels: { method: 'post', code: '200' }, value: 1027, timestampMs: 1395066363000 },
      { name: 'http_requests_total', labels: { method: 'post', code: '400' }, value: 3, timestampMs: 1395066363000 },
    ]);
    expect(only(exp, 'msdos_file_access_time_seconds')[0]!.labels).toEqual({ path: 'C:\\DIR\\FILE.TXT', error: 'Cannot find file:\n"FILE.TXT"' });
    expect(only(exp, 'msdos_file_access_time_seconds')[0]!.value).toBe(1.458255915e9);
    expect(only(exp, 'metric_without_timestamp_and_labels')).toEqual([{ name: 'metric_without_timestamp_and_labels', labels: {}, value: 12.47 }]);
    expect(only(exp, 'something_weird')[0]).toEqual({ name: 'something_weird', labels: { problem: 'division by zero' }, value: Infinity, timestampMs: -3982045 });
    const hist = exp.families.find((f) => f.name === 'http_request_duration_seconds')!;
    expect(hist.samples.map((s) => s.name)).toEqual([...Array(6).fill('http_request_duration_seconds_bucket'), 'http_request_duration_seconds_sum', 'http_request_duration_seconds_count']);
    expect(only(exp, 'http_request_duration_seconds_bucket').map((s) => s.labels.le)).toEqual(['0.05', '0.1', '0.2', '0.5', '1', '+Inf']);
    expect(only(exp, 'http_request_duration_seconds_count')[0]!.value).toBe(144320);
    const summary = exp.families.find((f) => f.name === 'rpc_duration_seconds')!;
    expect(summary.samples).toHaveLength(5);
    expect(Number.isNaN(only(exp, 'rpc_duration_seconds')[2]!.value)).toBe(true);
    expect(only(exp, 'rpc_duration_seconds_sum')[0]!.value).toBe(1.7560473e7);
  });

  it('accepts CRLF line ends, tabs, spaces around tokens, a trailing comma and empty label sets', () => {
    const exp = parseExposition('# TYPE a gauge\r\na { x = "1" , y="2", }\t-1.5e-3\r\nb{} 7\r\n  c  0\n');
    expect(only(exp, 'a')[0]).toEqual({ name: 'a', labels: { x: '1', y: '2' }, value: -0.0015 });
    expect(only(exp, 'b')[0]).toEqual({ name: 'b', labels: {}, value: 7 });
    expect(only(exp, 'c')[0]!.value).toBe(0);
    expect(exp.families[0]!.type).toBe('gauge');
  });

  it('unescapes HELP text; ignores other comments; an empty text has no samples', () => {
    const exp = parseExposition('# HELP x line one\\nback\\\\slash\n#comment\n# TYPEX x foo\nx 1\n');
    expect(exp.families[0]!.help).toBe('line one\nback\\slash');
    expect(parseExposition('').samples.size).toBe(0);
    expect(parseExposition('\n# only a comment\n').families).toEqual([]);
  });

  it('groups counter samples named with or without _total, and labels with braces, commas and = inside values', () => {
    const exp = parseExposition('# TYPE reqs counter\nreqs_total{path="/a{b},c=d"} 5\n');
    expect(exp.families).toHaveLength(1);
    expect(exp.families[0]!.samples[0]!.labels).toEqual({ path: '/a{b},c=d' });
  });

  it('parses what prom-client serves (counters, histograms, labels with quotes)', async () => {
    const registry = new Registry();
    const c = new Counter({ name: 't_calls_total', help: 'calls "quoted" \\ help', labelNames: ['m'], registers: [registry] });
    const h = new Histogram({ name: 't_seconds', help: 'h', labelNames: ['m'], buckets: [0.1, 1], registers: [registry] });
    c.inc({ m: 'a"b\\c\nd' }, 3);
    h.observe({ m: 'x' }, 0.5);
    h.observe({ m: 'x' }, 5);
    const exp = parseExposition(await registry.metrics());
    expect(only(exp, 't_calls_total')[0]).toEqual({ name: 't_calls_total', labels: { m: 'a"b\\c\nd' }, value: 3 });
    expect(only(exp, 't_seconds_bucket').map((s) => [s.labels.le, s.value])).toEqual([['0.1', 0], ['1', 1], ['+Inf', 2]]);
    expect(only(exp, 't_seconds_sum')[0]!.value).toBe(5.5);
    expect(exp.families.find((f) => f.name === 't_seconds')!.type).toBe('histogram');
  });
});

describe('parseSampleValue', () => {
  it('accepts floats, Inf and NaN spellings; rejects anything else', () => {
    expect(parseSampleValue('1')).toBe(1);
    expect(parseSampleValue('-0.5e+2')).toBe(-50);
    expect(parseSampleValue('.5')).toBe(0.5);
    expect(parseSampleValue('+Inf')).toBe(Infinity);
    expect(parseSampleValue('inf')).toBe(Infinity);
    expect(parseSampleValue('-Inf')).toBe(-Infinity);
    expect(parseSampleValue('NaN')).toBeNaN();
    for (const bad of ['', 'abc', '0x10', '1,5', '1e', 'Infinityx', ' 1']) expect(parseSampleValue(bad), bad).toBeUndefined();
  });
});

describe('parseExposition errors', () => {
  const cases: Array<[string, string, RegExp]> = [
    ['HTML instead of metrics', '<!doctype html>\n<html></html>\n', /^line 1: expected a metric name, got '<!doctype html>'/],
    ['a sample without a value', 'a 1\nb\n', /^line 2: sample b has no value/],
    ['a bad value', 'x{a="b"} twelve', /^line 1: invalid value 'twelve' of x/],
    ['a bad timestamp', 'x 1 1.5', /^line 1: invalid timestamp '1\.5' of x/],
    ['text after the timestamp', 'x 1 2 3', /^line 1: unexpected text after the value and timestamp of x/],
    ['an unterminated label value', 'x{a="b} 1', /^line 1: unterminated value of label 'a' of x/],
    ['an unterminated label set', 'x{a="b"', /^line 1: unterminated label set of x/],
    ['a missing =', 'x{a "b"} 1', /^line 1: expected '=' after label name 'a' of x/],
    ['an unquoted label value', 'x{a=b} 1', /^line 1: expected '"' to open the value of label 'a' of x/],
    ['a bad escape', 'x{a="\\t"} 1', /^line 1: invalid escape '\\t' in the value of label 'a' of x/],
    ['a missing comma', 'x{a="1" b="2"} 1', /^line 1: expected ',' or '}' after label 'a' of x/],
    ['a duplicate label', 'x{a="1",a="2"} 1', /^line 1: label 'a' given twice/],
    ['a bad label name', 'x{1a="1"} 1', /^line 1: expected a label name in x\{\.\.\.\}, got '1a="1"} 1'/],
    ['a name glued to junk', 'x-y 1', /^line 1: expected a space before the value of x/],
    ['an unknown type', '# TYPE x thing\n', /^line 1: unknown metric type 'thing' for x/],
    ['a second TYPE line', '# TYPE x gauge\nx 1\n# TYPE x gauge\n', /^line 3: second TYPE line for x/],
    ['a second HELP line', '# HELP x a\n# HELP x b\n', /^line 2: second HELP line for x/],
    ['a bad name in TYPE', '# TYPE 9x gauge\n', /^line 1: invalid metric name '9x' in TYPE line/],
  ];
  for (const [what, text, message] of cases) {
    it(`${what}: ExpositionParseError with the line number`, () => {
      let caught: unknown;
      try {
        parseExposition(text);
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(ExpositionParseError);
      expect((caught as Error).message).toMatch(message);
    });
  }

  it('a JSON reply is refused', () => {
    expect(() => parseExposition('{"status":"ok"}')).toThrow(ExpositionParseError);
  });
});
