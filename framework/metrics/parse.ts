/**
 * A parser for the Prometheus text exposition format (version 0.0.4: what prom-client,
 * client_golang and every Prometheus exporter serve on `/metrics`), for `svrkit top` and tests.
 *
 * Hand-written rather than a dependency: the npm parsers made for this
 * (`parse-prometheus-text-format`, `exposition`) are unmaintained, ship no types and return values
 * as strings; the format is small enough that a strict parser with line-numbered errors is a
 * page of code.
 *
 * Supported: `# HELP` (with `\\` and `\n` escapes) and `# TYPE` lines, other comments (ignored),
 * blank lines, samples with or without labels (label values with `\\`, `\"` and `\n` escapes, a
 * trailing comma allowed), values as floats, `+Inf`, `-Inf` and `NaN` (case-insensitive, as Go's
 * ParseFloat), optional integer timestamps (ms), CRLF line ends. Not supported: the OpenMetrics
 * format's `# EOF`, exemplars, and quoted (UTF-8) metric names.
 */

/** The type a `# TYPE` line gives a metric family; `untyped` when none was given. */
export type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';

/** One sample line. */
export interface Sample {
  /** The sample's name as written, e.g. `x_bucket` for a histogram family `x`. */
  readonly name: string;
  /** Its labels (unescaped values); `{}` when it has none. */
  readonly labels: Readonly<Record<string, string>>;
  /** Its value (may be `Infinity`, `-Infinity` or `NaN`). */
  readonly value: number;
  /** Its timestamp in ms since the epoch, when the line had one. */
  readonly timestampMs?: number;
}

/** A metric family: the samples that share a `# TYPE` name (histograms: `_bucket`, `_sum`, `_count`). */
export interface MetricFamily {
  /** The family name (from `# TYPE`/`# HELP`, or the sample name for samples without either). */
  readonly name: string;
  /** Its type. */
  type: MetricType;
  /** Its help text (unescaped), `''` when none. */
  help: string;
  /** Its samples, in the order they appeared. */
  readonly samples: Sample[];
}

/** A parsed exposition. */
export interface Exposition {
  /** The families, in the order they first appeared. */
  readonly families: MetricFamily[];
  /** Every sample by its sample name (`x_bucket`, `x_sum`, ...), in order. */
  readonly samples: ReadonlyMap<string, readonly Sample[]>;
}

/** Malformed exposition text; `line` is 1-based. */
export class ExpositionParseError extends Error {
  /**
   * @param line - the 1-based line number of the problem.
   * @param detail - what is wrong there.
   */
  constructor(
    readonly line: number,
    detail: string,
  ) {
    super(`line ${line}: ${detail}`);
    this.name = 'ExpositionParseError';
  }
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;
const FLOAT = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;
const INTEGER = /^[+-]?\d+$/;
const TYPES = new Set<MetricType>(['counter', 'gauge', 'histogram', 'summary', 'untyped']);
/** Sample-name suffixes that belong to a family of the given type. */
const SUFFIXES: Record<MetricType, readonly string[]> = {
  counter: ['_total'],
  gauge: [],
  histogram: ['_bucket', '_sum', '_count'],
  summary: ['_sum', '_count'],
  untyped: [],
};

/**
 * Parses a value as the format allows: a float, `+Inf`/`-Inf`/`Inf`, `NaN` (case-insensitive).
 * @returns the number, or `undefined` when `text` is not a valid value.
 */
export function parseSampleValue(text: string): number | undefined {
  if (FLOAT.test(text)) return Number(text);
  const lower = text.toLowerCase();
  if (lower === 'nan') return NaN;
  if (lower === '+inf' || lower === 'inf' || lower === '+infinity' || lower === 'infinity') return Infinity;
  if (lower === '-inf' || lower === '-infinity') return -Infinity;
  return undefined;
}

/**
 * Parses Prometheus text exposition format.
 * @param text - the body of a `/metrics` reply.
 * @returns the families and samples, in order. Samples that match no `# TYPE`/`# HELP` name
 *   (directly or with their type's suffix) form `untyped` families of their own.
 * @throws ExpositionParseError for a malformed line (bad name, unterminated label value, bad
 *   escape, missing or bad value, bad timestamp, unknown type, a second TYPE or HELP line for a
 *   family), with its line number.
 */
export function parseExposition(text: string): Exposition {
  const families: MetricFamily[] = [];
  const byName = new Map<string, MetricFamily>();
  const samples = new Map<string, Sample[]>();
  const typed = new Set<string>();
  const helped = new Set<string>();

  const family = (name: string): MetricFamily => {
    let f = byName.get(name);
    if (f === undefined) {
      f = { name, type: 'untyped', help: '', samples: [] };
      byName.set(name, f);
      families.push(f);
    }
    return f;
  };

  const familyOf = (sampleName: string): MetricFamily => {
    const exact = byName.get(sampleName);
    if (exact !== undefined && exact.type !== 'histogram' && exact.type !== 'summary') return exact;
    for (const suffix of ['_bucket', '_sum', '_count', '_total']) {
      if (!sampleName.endsWith(suffix)) continue;
      const f = byName.get(sampleName.slice(0, -suffix.length));
      if (f !== undefined && SUFFIXES[f.type].includes(suffix)) return f;
    }
    // A summary's quantile samples carry the family name itself.
    return exact ?? family(sampleName);
  };

  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    let line = lines[i]!;
    if (line.endsWith('\r')) line = line.slice(0, -1);
    const trimmed = line.trim();
    if (trimmed === '') continue;
    if (trimmed.startsWith('#')) {
      const m = /^#\s*(HELP|TYPE)\s+(\S+)(?:\s+(.*))?$/.exec(trimmed);
      if (m === null) continue; // an ordinary comment
      const [, keyword, name, rest = ''] = m;
      if (!fullMatch(METRIC_NAME, name!)) throw new ExpositionParseError(lineNo, `invalid metric name '${name}' in ${keyword} line`);
      if (keyword === 'TYPE') {
        const type = rest.trim().toLowerCase() as MetricType;
        if (!TYPES.has(type)) throw new ExpositionParseError(lineNo, `unknown metric type '${rest.trim()}' for ${name} (expected counter, gauge, histogram, summary or untyped)`);
        if (typed.has(name!)) throw new ExpositionParseError(lineNo, `second TYPE line for ${name}`);
        typed.add(name!);
        family(name!).type = type;
      } else {
        if (helped.has(name!)) throw new ExpositionParseError(lineNo, `second HELP line for ${name}`);
        helped.add(name!);
        family(name!).help = unescapeHelp(rest);
      }
      continue;
    }
    const sample = parseSampleLine(trimmed, lineNo);
    familyOf(sample.name).samples.push(sample);
    let list = samples.get(sample.name);
    if (list === undefined) samples.set(sample.name, (list = []));
    list.push(sample);
  }
  return { families, samples };
}

function fullMatch(re: RegExp, s: string): boolean {
  const m = re.exec(s);
  return m !== null && m[0].length === s.length;
}

function unescapeHelp(s: string): string {
  return s.replace(/\\(\\|n)/g, (_, c: string) => (c === 'n' ? '\n' : '\\'));
}

function parseSampleLine(line: string, lineNo: number): Sample {
  const nameMatch = METRIC_NAME.exec(line);
  if (nameMatch === null) throw new ExpositionParseError(lineNo, `expected a metric name, got '${preview(line)}'`);
  const name = nameMatch[0];
  let pos = name.length;
  const labels: Record<string, string> = {};
  const hasLabels = line[skipSpaces(line, pos)] === '{';
  if (hasLabels) {
    pos = skipSpaces(line, skipSpaces(line, pos) + 1);
    while (line[pos] !== '}') {
      const labelMatch = LABEL_NAME.exec(line.slice(pos));
      if (labelMatch === null) {
        if (pos >= line.length) throw new ExpositionParseError(lineNo, `unterminated label set of ${name}`);
        throw new ExpositionParseError(lineNo, `expected a label name in ${name}{...}, got '${preview(line.slice(pos))}'`);
      }
      const labelName = labelMatch[0];
      pos = skipSpaces(line, pos + labelName.length);
      if (line[pos] !== '=') throw new ExpositionParseError(lineNo, `expected '=' after label name '${labelName}' of ${name}`);
      pos = skipSpaces(line, pos + 1);
      if (line[pos] !== '"') throw new ExpositionParseError(lineNo, `expected '"' to open the value of label '${labelName}' of ${name}`);
      pos++;
      let value = '';
      for (;;) {
        if (pos >= line.length) throw new ExpositionParseError(lineNo, `unterminated value of label '${labelName}' of ${name}`);
        const c = line[pos]!;
        if (c === '"') break;
        if (c === '\\') {
          const e = line[pos + 1];
          if (e === '\\') value += '\\';
          else if (e === '"') value += '"';
          else if (e === 'n') value += '\n';
          else throw new ExpositionParseError(lineNo, `invalid escape '\\${e ?? ''}' in the value of label '${labelName}' of ${name}`);
          pos += 2;
        } else {
          value += c;
          pos++;
        }
      }
      if (Object.prototype.hasOwnProperty.call(labels, labelName)) {
        throw new ExpositionParseError(lineNo, `label '${labelName}' given twice in ${name}{...}`);
      }
      labels[labelName] = value;
      pos = skipSpaces(line, pos + 1);
      if (line[pos] === ',') pos = skipSpaces(line, pos + 1);
      else if (line[pos] !== '}') {
        throw new ExpositionParseError(lineNo, pos >= line.length ? `unterminated label set of ${name}` : `expected ',' or '}' after label '${labelName}' of ${name}`);
      }
    }
    pos++;
  }
  const rest = line.slice(pos).trim();
  if (rest === '') throw new ExpositionParseError(lineNo, `sample ${name} has no value`);
  if (!hasLabels && line[pos] !== ' ' && line[pos] !== '\t') {
    throw new ExpositionParseError(lineNo, `expected a space before the value of ${name}, got '${preview(line.slice(pos))}'`);
  }
  const fields = rest.split(/[ \t]+/);
  if (fields.length > 2) throw new ExpositionParseError(lineNo, `unexpected text after the value and timestamp of ${name}: '${preview(fields.slice(2).join(' '))}'`);
  const value = parseSampleValue(fields[0]!);
  if (value === undefined) throw new ExpositionParseError(lineNo, `invalid value '${preview(fields[0]!)}' of ${name}`);
  if (fields.length === 2) {
    if (!INTEGER.test(fields[1]!)) throw new ExpositionParseError(lineNo, `invalid timestamp '${preview(fields[1]!)}' of ${name} (expected integer ms)`);
    return { name, labels, value, timestampMs: Number(fields[1]) };
  }
  return { name, labels, value };
}

function skipSpaces(s: string, pos: number): number {
  while (s[pos] === ' ' || s[pos] === '\t') pos++;
  return pos;
}

function preview(s: string): string {
  return s.length > 40 ? `${s.slice(0, 40)}...` : s;
}
