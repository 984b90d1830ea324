import assert from 'node:assert/strict';
import { test } from 'node:test';
import { newSessionId } from './authorizer.ts';

test('session ids are 32 hex digits, distinct, and sort in the order of their decisions', () => {
  const start = Date.UTC(2026, 10, 21, 10, 0, 0);
  const ids = Array.from({ length: 2_000 }, (_, index) => newSessionId(start + Math.floor(index / 10)));
  for (const id of ids) assert.match(id, /^[0-9a-f]{32}$/);
  assert.equal(new Set(ids).size, ids.length, 'no two alike, even within one millisecond');
  const byTime = (a: string, b: string) =>
    a.slice(0, 12) < b.slice(0, 12) ? -1 : a.slice(0, 12) > b.slice(0, 12) ? 1 : 0;
  assert.deepEqual([...ids].sort(byTime), ids, 'a later decision never sorts before an earlier one');
  assert.ok(ids.at(-1)! > ids[0]!, 'ids of later milliseconds sort after earlier ones');
  assert.equal(newSessionId(start).slice(0, 12), start.toString(16).padStart(12, '0'));
});
