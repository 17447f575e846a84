/**
 * Gray-rule evaluation (services/config/gray.ts): pure and deterministic. The percentage buckets
 * are Unleash's, checked against the vectors Unleash's node, Java and Go clients share.
 */
import { describe, expect, it } from 'vitest';
import { bucket, formatRule, inGray, parseRule, ruleMatches, type GrayRule } from '../../services/config/gray.js';

describe('bucket (Unleash normalizedValue)', () => {
  it("matches Unleash's published vectors: normalizedValue('123', 'gr1') = 73, ('999', 'groupX') = 25", () => {
    // unleash-client-node test/strategy/util-test.js; unleash-client-java StrategyUtilsTest.
    expect(bucket('gr1', '123')).toBe(73);
    expect(bucket('groupX', '999')).toBe(25);
  });

  it('is 1..100, spreads users evenly, and differs between salts', () => {
    const counts = new Array<number>(101).fill(0);
    let same = 0;
    for (let i = 0; i < 100_000; i++) {
      const b = bucket('shop:a1', `user-${i}`);
      expect(b >= 1 && b <= 100).toBe(true);
      counts[b]!++;
      if (b === bucket('shop:b2', `user-${i}`)) same++;
    }
    for (let b = 1; b <= 100; b++) expect(counts[b]).toBeGreaterThan(850); // 1,000 expected each
    expect(same).toBeLessThan(2000); // independent salts agree about 1% of the time
  });
});

describe('gray rules', () => {
  const salt = 'shop.checkout:abc123';

  it('a user inside 10% stays inside at 20%, and about the right share of users is in', () => {
    const users = Array.from({ length: 20_000 }, (_, i) => `u${i}`);
    const at = (percent: number) => new Set(users.filter((u) => ruleMatches({ kind: 'percent', percent }, { userId: u }, salt)));
    const ten = at(10);
    const twenty = at(20);
    for (const u of ten) expect(twenty.has(u)).toBe(true);
    expect(ten.size / users.length).toBeGreaterThan(0.09);
    expect(ten.size / users.length).toBeLessThan(0.11);
    expect(twenty.size / users.length).toBeGreaterThan(0.19);
    expect(at(0).size).toBe(0);
    expect(at(100).size).toBe(users.length);
    // No user id: outside every percentage.
    expect(ruleMatches({ kind: 'percent', percent: 100 }, {}, salt)).toBe(false);
  });

  it('labels, zones, callers and user lists match exactly; any matching rule puts the reader in the gray', () => {
    const rules: GrayRule[] = [
      { kind: 'label', key: 'version', value: '2' },
      { kind: 'zone', zone: 'z1' },
      { kind: 'caller', service: 'shop.Cart' },
      { kind: 'users', users: ['alice', 'bob'] },
    ];
    expect(inGray(rules, { labels: { version: '2' } }, salt)).toBe(true);
    expect(inGray(rules, { labels: { version: '3' } }, salt)).toBe(false);
    expect(inGray(rules, { labels: { toString: 'x' } }, salt)).toBe(false);
    expect(inGray(rules, { zone: 'z1' }, salt)).toBe(true);
    expect(inGray(rules, { zone: 'z2' }, salt)).toBe(false);
    expect(inGray(rules, { caller: 'shop.Cart' }, salt)).toBe(true);
    expect(inGray(rules, { caller: 'shop.Order' }, salt)).toBe(false);
    expect(inGray(rules, { userId: 'bob' }, salt)).toBe(true);
    expect(inGray(rules, { userId: 'carol' }, salt)).toBe(false);
    expect(inGray([], { userId: 'bob', zone: 'z1' }, salt)).toBe(false);
  });

  it('parses the CLI syntax, formats it back, and names what is wrong', () => {
    for (const text of ['label:version=2', 'zone:z1', 'caller:shop.Cart', 'users:u1,u2', 'percent:10', 'percent:12.5']) expect(formatRule(parseRule(text))).toBe(text);
    expect(() => parseRule('percent:101')).toThrow(/0 to 100/);
    expect(() => parseRule('percent:ten')).toThrow(/0 to 100/);
    expect(() => parseRule('label:version')).toThrow(/label:key=value/);
    expect(() => parseRule('users:')).toThrow(/empty/);
    expect(() => parseRule('region:eu')).toThrow(/unknown kind 'region'/);
    expect(() => parseRule('zone')).toThrow(/kind:argument/);
  });
});
