import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Posture } from './claims.ts';
import { LatestPosture } from './latest-posture.ts';

test('hands out the latest reading at once and reads again for next time', async () => {
  const readings: Posture[] = [{ firewall: 'off' }, { firewall: 'on' }];
  let reads = 0;
  const latest = await LatestPosture.start(async () => readings[Math.min(reads++, 1)]!);
  assert.deepEqual(latest.current(), { firewall: 'off' });
  await latest.fresh();
  assert.deepEqual(latest.current(), { firewall: 'on' });
});

test('one reading at a time, shared by whoever asks', async () => {
  let reads = 0;
  let release: () => void = () => {};
  const latest = await LatestPosture.start(async () => {
    reads++;
    if (reads > 1) await new Promise<void>((resolve) => (release = resolve));
    return { reads };
  });
  const a = latest.fresh();
  const b = latest.fresh();
  latest.current();
  release();
  assert.deepEqual(await a, { reads: 2 });
  assert.equal(await b, await a);
  assert.equal(reads, 2);
});

test('a failed reading keeps the latest', async () => {
  let fail = false;
  const latest = await LatestPosture.start(async () => {
    if (fail) throw new Error('tool crashed');
    return { os: 'linux' };
  });
  fail = true;
  assert.deepEqual(await latest.fresh(), { os: 'linux' });
  assert.deepEqual(latest.current(), { os: 'linux' });
});
