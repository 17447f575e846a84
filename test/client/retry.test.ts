import { describe, expect, it } from 'vitest';
import {
  decideRetry,
  normalizeHedgingPolicy,
  normalizeRetryPolicy,
  parsePushback,
  retryBackoffMs,
  RetryThrottle,
  PUSHBACK_KEY,
} from '../../framework/client/retry.js';
import { DEFAULT_OUTLIER_DETECTION, mayEjectAnother, OutlierTracker } from '../../framework/client/outlier.js';
import { resolveMethodConfig, validateMethodConfig } from '../../framework/client/method-config.js';
import { RpcError, Status } from '../../framework/index.js';

const policy = normalizeRetryPolicy({ maxAttempts: 4, initialBackoffMs: 10, maxBackoffMs: 50, backoffMultiplier: 2 });

describe('retry backoff (full jitter, gRFC A6)', () => {
  it('retry n waits random * min(initial * mult^(n-1), max)', () => {
    expect(retryBackoffMs(1, policy, 0.5)).toBe(5);
    expect(retryBackoffMs(2, policy, 0.5)).toBe(10);
    expect(retryBackoffMs(3, policy, 0.999)).toBeCloseTo(39.96);
    expect(retryBackoffMs(10, policy, 1 - 1e-9)).toBeLessThanOrEqual(50);
    expect(retryBackoffMs(3, policy, 0)).toBe(0);
  });

  it('rejects out-of-range policies', () => {
    expect(() => normalizeRetryPolicy({ maxAttempts: 0 })).toThrow(/maxAttempts/);
    expect(() => normalizeRetryPolicy({ maxAttempts: 2.5 })).toThrow(/maxAttempts/);
    expect(() => normalizeRetryPolicy({ backoffMultiplier: 0.5 })).toThrow(/backoffMultiplier/);
    expect(() => normalizeRetryPolicy({ initialBackoffMs: -1 })).toThrow(/initialBackoffMs/);
    expect(() => normalizeHedgingPolicy({ hedgingDelayMs: -1 })).toThrow(/hedgingDelayMs/);
    expect(normalizeRetryPolicy(undefined).maxAttempts).toBe(3);
  });
});

describe('retry throttle (token bucket)', () => {
  it('starts full; failures drain it; at or below half no retry; successes refill by tokenRatio', () => {
    const t = new RetryThrottle({ maxTokens: 10, tokenRatio: 0.5 });
    expect(t.allowsRetry).toBe(true);
    for (let i = 0; i < 4; i++) t.onFailure();
    expect(t.tokens).toBe(6);
    expect(t.allowsRetry).toBe(true);
    t.onFailure();
    expect(t.tokens).toBe(5);
    expect(t.allowsRetry).toBe(false);
    t.onSuccess();
    expect(t.allowsRetry).toBe(true);
    for (let i = 0; i < 100; i++) t.onSuccess();
    expect(t.tokens).toBe(10);
    for (let i = 0; i < 100; i++) t.onFailure();
    expect(t.tokens).toBe(0);
  });

  it('under a backend that fails everything, retries stop once the bucket is half empty', () => {
    const t = new RetryThrottle({ maxTokens: 10, tokenRatio: 0.1 });
    let attempts = 0;
    const calls = 1000;
    for (let c = 0; c < calls; c++) {
      for (let a = 1; ; a++) {
        attempts++;
        const d = decideRetry({ error: new RpcError(Status.UNAVAILABLE, 'down'), attempts: a, idempotent: true, deadline: Infinity, now: 0 }, policy, t, 0.5);
        if (!d.retry) break;
      }
    }
    expect(attempts).toBeLessThanOrEqual(calls * 1.1);
    expect(attempts).toBeGreaterThan(calls);
  });

  it('rejects bad settings', () => {
    expect(() => new RetryThrottle({ maxTokens: 0 })).toThrow(/maxTokens/);
    expect(() => new RetryThrottle({ tokenRatio: 2 })).toThrow(/tokenRatio/);
  });
});

describe('decideRetry', () => {
  const base = { attempts: 1, idempotent: true, deadline: Infinity, now: 1000 };
  const unavailable = new RpcError(Status.UNAVAILABLE, 'x');

  it('retries a retryable code of an idempotent method with the backoff delay', () => {
    expect(decideRetry({ ...base, error: unavailable }, policy, undefined, 0.5)).toEqual({ retry: true, delayMs: 5 });
  });

  it('does not retry a non-retryable code, unless the call was never processed', () => {
    const d = decideRetry({ ...base, error: new RpcError(Status.INTERNAL, 'x') }, policy, undefined, 0.5);
    expect(d.retry).toBe(false);
    const np = new RpcError(Status.RESOURCE_EXHAUSTED, 'overloaded', {}, { notProcessed: true });
    expect(decideRetry({ ...base, error: np }, policy, undefined, 0.5).retry).toBe(true);
  });

  it('never retries a non-idempotent call that may have reached the server', () => {
    const d = decideRetry({ ...base, idempotent: false, error: unavailable }, policy, undefined, 0.5);
    expect(d).toEqual({ retry: false, why: expect.stringMatching(/not idempotent/) });
    const np = new RpcError(Status.UNAVAILABLE, 'no connection', {}, { notProcessed: true });
    expect(decideRetry({ ...base, idempotent: false, error: np }, policy, undefined, 0.5).retry).toBe(true);
  });

  it('stops at maxAttempts, and when the deadline would pass first', () => {
    expect(decideRetry({ ...base, attempts: 4, error: unavailable }, policy, undefined, 0.5).retry).toBe(false);
    expect(decideRetry({ ...base, deadline: 1003, error: unavailable }, policy, undefined, 0.9).retry).toBe(false);
  });

  it('honours server pushback: a delay in ms, or anything else = do not retry', () => {
    expect(parsePushback({ [PUSHBACK_KEY]: '250' })).toBe(250);
    expect(parsePushback({ [PUSHBACK_KEY]: '-1' })).toBe('stop');
    expect(parsePushback({ [PUSHBACK_KEY]: 'never' })).toBe('stop');
    expect(parsePushback({})).toBeUndefined();
    const pushed = new RpcError(Status.UNAVAILABLE, 'x', { [PUSHBACK_KEY]: '40' });
    expect(decideRetry({ ...base, error: pushed }, policy, undefined, 0.5)).toEqual({ retry: true, delayMs: 40 });
    const stop = new RpcError(Status.UNAVAILABLE, 'x', { [PUSHBACK_KEY]: 'no' });
    expect(decideRetry({ ...base, error: stop }, policy, undefined, 0.5).retry).toBe(false);
  });

  describe('in hedging mode (the same function, so both modes read pushback and shedding alike)', () => {
    const hedging = normalizeHedgingPolicy({ maxAttempts: 3, hedgingDelayMs: 50 });

    it('sends the next hedge at once after a non-fatal failure, or after the pushback delay', () => {
      expect(decideRetry({ ...base, error: unavailable }, hedging, undefined, 0.5)).toEqual({ retry: true, delayMs: 0 });
      const pushed = new RpcError(Status.UNAVAILABLE, 'x', { [PUSHBACK_KEY]: '40' });
      expect(decideRetry({ ...base, error: pushed }, hedging, undefined, 0.5)).toEqual({ retry: true, delayMs: 40 });
    });

    it('server pushback "stop" sends no further hedge (it used to be ignored)', () => {
      const stop = new RpcError(Status.UNAVAILABLE, 'x', { [PUSHBACK_KEY]: 'stop' });
      expect(decideRetry({ ...base, error: stop }, hedging, undefined, 0.5)).toMatchObject({ retry: false, why: expect.stringMatching(/pushed back/) });
    });

    it('an attempt shed locally sends no further hedge (it used to launch the next one at once)', () => {
      // What the channel fails an attempt with when every instance advertises a level that refuses it.
      const shed = new RpcError(Status.RESOURCE_EXHAUSTED, 'shed locally', { [PUSHBACK_KEY]: 'stop' }, { notProcessed: true });
      expect(decideRetry({ ...base, error: shed }, hedging, undefined, 0.5).retry).toBe(false);
      expect(decideRetry({ ...base, error: shed }, policy, undefined, 0.5).retry).toBe(false);
    });

    it('a fatal status ends the call; maxAttempts and the throttle bound the hedges', () => {
      expect(decideRetry({ ...base, error: new RpcError(Status.NOT_FOUND, 'x') }, hedging, undefined, 0.5)).toMatchObject({ retry: false, fatal: true });
      expect(decideRetry({ ...base, attempts: 3, error: unavailable }, hedging, undefined, 0.5).retry).toBe(false);
      const throttle = new RetryThrottle({ maxTokens: 2, tokenRatio: 0.1 });
      expect(decideRetry({ ...base, error: unavailable }, hedging, throttle, 0.5)).toMatchObject({ retry: false, throttled: true });
    });
  });
});

describe('outlier ejection', () => {
  it('ejects after N failures in a row, probes when the period ends, ejects longer when the probe fails', () => {
    const o = new OutlierTracker({ ...DEFAULT_OUTLIER_DETECTION, consecutiveFailures: 3, baseEjectionMs: 100, maxEjectionMs: 350 });
    expect(o.onFailure(0, true)).toBe(false);
    o.onSuccess(1); // a success resets the run
    expect(o.onFailure(2, true)).toBe(false);
    expect(o.onFailure(3, true)).toBe(false);
    expect(o.onFailure(4, true)).toBe(true);
    expect(o.usable).toBe(false);
    expect(o.ejectedUntil).toBe(104);
    expect(o.probeDue(50)).toBe(false);
    expect(o.probeDue(104)).toBe(true);
    expect(o.state).toBe('probing');
    expect(o.usable).toBe(false);
    o.onProbeResult(false, 110);
    expect(o.ejectedUntil).toBe(310); // 200 ms: doubled
    expect(o.probeDue(310)).toBe(true);
    o.onProbeResult(false, 310);
    expect(o.ejectedUntil).toBe(660); // capped at 350
    expect(o.probeDue(660)).toBe(true);
    o.onProbeResult(true, 660);
    expect(o.usable).toBe(true);
  });

  it('does not eject beyond maxEjectionPercent, but always allows one', () => {
    expect(mayEjectAnother(0, 3, 50)).toBe(true);
    expect(mayEjectAnother(1, 3, 50)).toBe(false);
    expect(mayEjectAnother(1, 10, 50)).toBe(true);
    expect(mayEjectAnother(0, 1, 10)).toBe(true);
    const o = new OutlierTracker({ ...DEFAULT_OUTLIER_DETECTION, consecutiveFailures: 1 });
    expect(o.onFailure(0, false)).toBe(false);
    expect(o.usable).toBe(true);
  });
});

describe('method config', () => {
  const method = (path: string, options?: { idempotent?: boolean }) =>
    ({ path, name: path.split('/')[1], localName: 'x', requestType: {}, responseType: {}, requestTypeName: '', responseTypeName: '', options }) as never;
  const dflt = normalizeRetryPolicy({});

  it('method entry beats service entry beats defaults; proto idempotent applies unless overridden', () => {
    const cfg = [
      { name: [{ service: 'a.S' }], timeoutMs: 100, retryPolicy: { maxAttempts: 5 } },
      { name: [{ service: 'a.S', method: 'Get' }], idempotent: true, hedgingPolicy: { maxAttempts: 3, hedgingDelayMs: 5 } },
    ];
    validateMethodConfig(cfg);
    const get = resolveMethodConfig(method('a.S/Get'), cfg, dflt);
    expect(get).toMatchObject({ idempotent: true, timeoutMs: 100, retry: undefined, hedging: { maxAttempts: 3, hedgingDelayMs: 5 } });
    const put = resolveMethodConfig(method('a.S/Put'), cfg, dflt);
    expect(put).toMatchObject({ idempotent: false, timeoutMs: 100, retry: { maxAttempts: 5 }, hedging: undefined });
    const other = resolveMethodConfig(method('b.T/X', { idempotent: true }), cfg, dflt);
    expect(other).toMatchObject({ idempotent: true, retry: dflt });
    const overridden = resolveMethodConfig(method('a.S/Get', { idempotent: true }), [{ name: [{ service: 'a.S' }], idempotent: false }], dflt);
    expect(overridden.idempotent).toBe(false);
  });

  it('hedging needs an idempotent method; retryPolicy false turns retries off', () => {
    const cfg = [{ name: [{ service: 'a.S' }], hedgingPolicy: {} }];
    expect(resolveMethodConfig(method('a.S/Put'), cfg, dflt)).toMatchObject({ hedging: undefined, retry: dflt });
    expect(resolveMethodConfig(method('a.S/Put'), [{ name: [{ service: 'a.S' }], retryPolicy: false }], dflt).retry).toBeUndefined();
  });

  it('rejects malformed entries', () => {
    expect(() => validateMethodConfig([{ name: [] }])).toThrow(/at least one/);
    expect(() => validateMethodConfig([{ name: [{ service: '' }] }])).toThrow(/needs a service/);
    expect(() => validateMethodConfig([{ name: [{ service: 'a' }], retryPolicy: {}, hedgingPolicy: {} }])).toThrow(/either retried or hedged/);
    expect(() => validateMethodConfig([{ name: [{ service: 'a' }], retryPolicy: { maxAttempts: 99 } }])).toThrow(/maxAttempts/);
  });
});
