import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type GrantRequest, Grants } from './grants.ts';

function clock(startMs = 1_000_000) {
  let nowMs = startMs;
  return {
    now: () => nowMs,
    advance: (ms: number) => {
      nowMs += ms;
    },
  };
}

const alice: GrantRequest = {
  sessionId: 's1',
  identity: 'alice',
  keyId: 'k-alice',
  source: '192.0.2.7',
  service: 'db',
  backend: '10.0.0.5:5432',
  mode: 'tunnel',
  ttlSeconds: 30,
};

test('a grant lets its identity open its service from its source until it expires', () => {
  const time = clock();
  const grants = new Grants({ now: time.now });
  const grant = grants.add(alice);
  assert.equal(grant.expiresAtMs, time.now() + 30_000);
  assert.equal(grants.findForConnection('192.0.2.7', 'alice', 'db'), grant);
  assert.equal(grants.findForConnection('::ffff:192.0.2.7', 'alice', 'db'), grant, 'IPv4-mapped is IPv4');
  assert.equal(grants.findForConnection('192.0.2.8', 'alice', 'db'), undefined, 'another source');
  assert.equal(grants.findForConnection('192.0.2.7', 'bob', 'db'), undefined, 'another identity');
  assert.equal(grants.findForConnection('192.0.2.7', 'alice', 'ssh'), undefined, 'another service');
  assert.equal(grants.findAnyForConnection('192.0.2.7', 'alice'), grant);
  time.advance(30_000);
  assert.equal(grants.findForConnection('192.0.2.7', 'alice', 'db'), undefined, 'expired');
  assert.equal(grants.bySession('s1'), grant, 'still held until swept');
  assert.deepEqual(grants.sweep(), [grant]);
  assert.deepEqual(grants.all(), []);
});

test('direct-mode grants open no tunnel, but do admit the control channel', () => {
  const grants = new Grants();
  grants.add({ ...alice, mode: 'direct' });
  assert.equal(grants.findForConnection('192.0.2.7', 'alice', 'db'), undefined);
  assert.equal(grants.findAnyForConnection('192.0.2.7', 'alice')?.sessionId, 's1');
});

test('the same session again refreshes its expiry and keeps its mark; marks are unique and reused', () => {
  const time = clock();
  const grants = new Grants({ now: time.now });
  const first = grants.add(alice);
  const second = grants.add({ ...alice, sessionId: 's2' });
  assert.notEqual(first.mark, second.mark);
  assert.ok(first.mark >= 1 && second.mark >= 1);
  time.advance(20_000);
  const refreshed = grants.add({ ...alice, ttlSeconds: 60 });
  assert.equal(refreshed.mark, first.mark);
  assert.equal(refreshed.expiresAtMs, time.now() + 60_000);
  assert.equal(grants.all().length, 2);
  time.advance(15_000);
  assert.deepEqual(
    grants.sweep().map((grant) => grant.sessionId),
    ['s2'],
  );
  assert.equal(grants.findForConnection('192.0.2.7', 'alice', 'db')?.sessionId, 's1');
});

test('byKeyIds, remove, and observers of removals', () => {
  const time = clock();
  const grants = new Grants({ now: time.now });
  const removed: string[] = [];
  const stop = grants.onRemoved((grant, why) => removed.push(`${grant.sessionId}:${why}`));
  grants.add(alice);
  grants.add({ ...alice, sessionId: 's2', keyId: 'k-bob', identity: 'bob', ttlSeconds: 5 });
  assert.deepEqual(
    grants.byKeyIds(['k-bob', 'k-nobody']).map((grant) => grant.sessionId),
    ['s2'],
  );
  assert.equal(grants.remove('s1')?.sessionId, 's1');
  assert.equal(grants.remove('s1'), undefined);
  time.advance(5_000);
  grants.sweep();
  assert.deepEqual(removed, ['s1:removed', 's2:expired']);
  stop();
  grants.add({ ...alice, sessionId: 's3' });
  grants.remove('s3');
  assert.equal(removed.length, 2);
});

test('errors name the field', () => {
  const grants = new Grants();
  assert.throws(() => grants.add({ ...alice, source: 'gateway.example' }), /grant source "gateway.example"/);
  assert.throws(() => grants.add({ ...alice, ttlSeconds: 0 }), /grant ttlSeconds 0 must be a positive/);
});
