import assert from 'node:assert/strict';
import { test } from 'node:test';
import { budgetKey, SourceBudget } from './budget.ts';

const generous = { totalPerSecond: 1e6, totalBurst: 1e6 };

test('a source gets its burst, then its rate', () => {
  let now = 0;
  const budget = new SourceBudget({ perSecond: 2, burst: 3, ...generous, now: () => now });
  assert.deepEqual(
    [1, 2, 3, 4].map(() => budget.take('192.0.2.1')),
    ['ok', 'ok', 'ok', 'source'],
  );
  assert.equal(budget.take('192.0.2.2'), 'ok', 'another source has its own budget');
  now += 500;
  assert.equal(budget.take('192.0.2.1'), 'ok');
  assert.equal(budget.take('192.0.2.1'), 'source');
});

test('IPv6 sources share one budget per /64', () => {
  const budget = new SourceBudget({ perSecond: 1, burst: 2, ...generous, now: () => 0 });
  assert.equal(budget.take('2001:db8:1:2::1'), 'ok');
  assert.equal(budget.take('2001:db8:1:2:ffff::9'), 'ok');
  assert.equal(budget.take('2001:db8:1:2:aaaa:bbbb:cccc:dddd'), 'source');
  assert.equal(budget.take('2001:db8:1:3::1'), 'ok', 'the next /64 is another source');
});

test('budgetKey reduces IPv6 to its /64 prefix in every compressed form', () => {
  assert.equal(budgetKey('192.0.2.1'), '192.0.2.1');
  assert.equal(budgetKey('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2');
  assert.equal(budgetKey('2001:db8::1'), '2001:db8:0:0');
  assert.equal(budgetKey('2001:db8:1::'), '2001:db8:1:0');
  assert.equal(budgetKey('::1'), '0:0:0:0');
  assert.equal(budgetKey('fe80::1:2:3:4'), 'fe80:0:0:0');
  assert.equal(budgetKey('2001:db8:1:2::'), '2001:db8:1:2');
});

test('spoofing a new source per packet still meets the total budget', () => {
  const budget = new SourceBudget({
    perSecond: 20,
    burst: 40,
    totalPerSecond: 100,
    totalBurst: 100,
    now: () => 0,
  });
  let ok = 0;
  for (let i = 0; i < 10_000; i++) if (budget.take(`198.51.100.${i % 256}.${i}`) === 'ok') ok++;
  assert.equal(ok, 100);
});

test('the number of tracked sources is bounded', () => {
  const budget = new SourceBudget({ perSecond: 1, burst: 1, ...generous, maxSources: 100, now: () => 0 });
  for (let i = 0; i < 1000; i++) budget.take(`198.51.100.${i % 256}.${i}`);
  assert.equal(budget.size, 100);
});
