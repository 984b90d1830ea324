import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { pino } from 'pino';
import { Rejections } from './rejections.ts';

function capture() {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line));
      done();
    },
  });
  return { lines, log: pino({ level: 'info' }, stream) };
}

test('every rejection is counted; log lines are limited per second, and the rest reported', async () => {
  const { lines, log } = capture();
  const rejections = new Rejections(log, 5);
  for (let i = 0; i < 100; i++) rejections.reject('192.0.2.66', 'mac1');
  assert.equal(rejections.counts.mac1, 100);
  rejections.flush(performance.now() + 2000);
  await new Promise((resolve) => setImmediate(resolve));
  const rejected = lines.filter((l) => l.msg === 'knock rejected');
  assert.equal(rejected.length, 5);
  assert.deepEqual(
    { source: rejected[0]?.source, reason: rejected[0]?.reason },
    { source: '192.0.2.66', reason: 'mac1' },
  );
  const summary = lines.find((l) => l.msg === 'knock rejections not logged (rate limit)');
  assert.equal(summary?.suppressed, 95);
});

test('a flood of garbage does not hide the rejections of signed knocks', async () => {
  const { lines, log } = capture();
  const rejections = new Rejections(log, 5);
  for (let i = 0; i < 1000; i++) rejections.reject('198.51.100.1', 'mac1');
  rejections.reject('192.0.2.20', 'replay', 'alice');
  await new Promise((resolve) => setImmediate(resolve));
  const replay = lines.find((l) => l.reason === 'replay');
  assert.deepEqual(
    { source: replay?.source, identity: replay?.identity },
    { source: '192.0.2.20', identity: 'alice' },
  );
});
