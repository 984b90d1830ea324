import assert from 'node:assert/strict';
import { test } from 'node:test';
import { dialWithKnocks, KnockSchedule } from './knock-schedule.ts';
import { DialTimeoutError } from './tunnel-dial.ts';

function clock() {
  let nowMs = 1_000_000;
  return { now: () => nowMs, advance: (ms: number) => (nowMs += ms) };
}

test('a knock is due when none was sent, or the last is a few seconds old', () => {
  const time = clock();
  const schedule = new KnockSchedule({ now: time.now, freshMs: 5_000 });
  assert.equal(schedule.due(), true);
  schedule.knocked();
  time.advance(4_999);
  assert.equal(schedule.due(), false);
  time.advance(1);
  assert.equal(schedule.due(), true);
  schedule.knocked();
  schedule.expire();
  assert.equal(schedule.due(), true, 'a pinhole that proved closed needs a new knock at once');
});

/** Runs dialWithKnocks with dial outcomes in order; returns what happened. */
async function run(outcomes: (Error | 'ok')[], schedule = new KnockSchedule()) {
  const events: string[] = [];
  const result = await dialWithKnocks({
    schedule,
    knock: async () => {
      events.push('knock');
    },
    dial: async (timeoutMs) => {
      const outcome = outcomes.shift();
      events.push(`dial ${timeoutMs}`);
      if (outcome === 'ok') return 'socket';
      throw outcome;
    },
    retryable: (error) => error instanceof DialTimeoutError,
    wait: async (ms) => {
      events.push(`wait ${ms}`);
    },
  }).then(
    (value) => value,
    (error: Error) => error.message,
  );
  return { events, result };
}

test('the first connection knocks, waits a few ms, and dials with a short timeout', async () => {
  assert.deepEqual(await run(['ok']), { events: ['knock', 'wait 10', 'dial 1000'], result: 'socket' });
});

test('a connection soon after a knock does not knock again', async () => {
  const schedule = new KnockSchedule();
  schedule.knocked();
  assert.deepEqual(await run(['ok'], schedule), { events: ['dial 1000'], result: 'socket' });
});

test('a timeout (pinhole gone) re-knocks and retries, three attempts in all', async () => {
  const schedule = new KnockSchedule();
  schedule.knocked();
  const timeout = () => new DialTimeoutError('no TLS connection');
  assert.deepEqual(await run([timeout(), 'ok'], schedule), {
    events: ['dial 1000', 'knock', 'wait 100', 'dial 1000'],
    result: 'socket',
  });
  const failing = new KnockSchedule();
  assert.deepEqual(await run([timeout(), timeout(), timeout(), 'ok'], failing), {
    events: [
      'knock',
      'wait 10',
      'dial 1000',
      'knock',
      'wait 100',
      'dial 1000',
      'knock',
      'wait 300',
      'dial 1000',
    ],
    result: 'no TLS connection',
  });
  assert.equal(failing.due(), true, 'after a failure the next connection knocks first');
});

test('an error a knock cannot fix is not retried', async () => {
  assert.deepEqual(await run([new Error('the gateway presented a certificate for umbra://gateway/other')]), {
    events: ['knock', 'wait 10', 'dial 1000'],
    result: 'the gateway presented a certificate for umbra://gateway/other',
  });
});
