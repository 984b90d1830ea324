import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SourceBudget } from './budget.ts';

test('a source gets its burst, then its rate', () => {
  let now = 0;
  const budget = new SourceBudget({ perSecond: 2, burst: 3, now: () => now });
  assert.deepEqual(
    [1, 2, 3, 4].map(() => budget.take('192.0.2.1')),
    [true, true, true, false],
  );
  assert.equal(budget.take('192.0.2.2'), true, 'another source has its own budget');
  now += 500;
  assert.equal(budget.take('192.0.2.1'), true);
  assert.equal(budget.take('192.0.2.1'), false);
});

test('the number of tracked sources is bounded', () => {
  const budget = new SourceBudget({ perSecond: 1, burst: 1, maxSources: 100, now: () => 0 });
  for (let i = 0; i < 1000; i++) budget.take(`198.51.100.${i % 256}.${i}`);
  assert.equal(budget.size, 100);
});
