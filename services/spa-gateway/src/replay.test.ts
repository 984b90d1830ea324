import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ReplayGuard } from './replay.ts';

const dir = mkdtempSync(join(tmpdir(), 'umbra-replay-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const id = 'ab'.repeat(16);

test('timestamps outside the window are refused', () => {
  const now = 1_000_000;
  const guard = new ReplayGuard({
    notBeforeMs: 0,
    stateDir: mkdtempSync(join(dir, 'w')),
    windowMs: 30_000,
    now: () => now,
  });
  assert.equal(guard.check(id, now - 30_001, 'n1'), 'time-window');
  assert.equal(guard.check(id, now + 30_001, 'n1'), 'time-window');
  assert.equal(guard.check(id, now - 30_000, 'n1'), 'fresh');
  assert.equal(guard.check(id, now + 30_000, 'n1'), 'fresh');
});

test('timestamps must grow per identity, and nonces are not reused', () => {
  const now = 1_000_000;
  const guard = new ReplayGuard({
    notBeforeMs: 0,
    stateDir: mkdtempSync(join(dir, 'g')),
    windowMs: 30_000,
    now: () => now,
  });
  guard.record(id, now, 'n1');
  assert.equal(guard.check(id, now, 'n2'), 'replay');
  assert.equal(guard.check(id, now - 1, 'n2'), 'replay');
  assert.equal(guard.check(id, now + 1, 'n1'), 'replay', 'a reused nonce');
  assert.equal(guard.check(id, now + 1, 'n2'), 'fresh');
  assert.equal(guard.check('cd'.repeat(16), now, 'n3'), 'fresh', 'another identity has its own mark');
});

test('the marks survive a restart, in a file only the gateway can read', () => {
  const now = 1_000_000;
  const stateDir = mkdtempSync(join(dir, 'p'));
  new ReplayGuard({ notBeforeMs: 0, stateDir, windowMs: 30_000, now: () => now }).record(id, now, 'n1');
  assert.equal(statSync(join(stateDir, 'replay.json')).mode & 0o777, 0o600);
  const restarted = new ReplayGuard({ notBeforeMs: 0, stateDir, windowMs: 30_000, now: () => now + 5 });
  assert.equal(restarted.check(id, now, 'other-nonce'), 'replay');
  assert.equal(restarted.check(id, now + 1, 'other-nonce'), 'fresh');
});

test('a corrupt state file stops the gateway instead of forgetting', () => {
  const stateDir = mkdtempSync(join(dir, 'c'));
  writeFileSync(join(stateDir, 'replay.json'), '{"version":1,"identities":{');
  assert.throws(
    () => new ReplayGuard({ notBeforeMs: 0, stateDir, windowMs: 30_000 }),
    /replay state is corrupt/,
  );
});

test('marks are kept across restarts whatever their age, and the journal is folded in', () => {
  let now = 1_000_000;
  const stateDir = mkdtempSync(join(dir, 'q'));
  const guard = new ReplayGuard({ notBeforeMs: 0, stateDir, windowMs: 30_000, now: () => now });
  guard.record(id, now, 'n1');
  now += 60_000;
  guard.record('cd'.repeat(16), now, 'n2');
  new ReplayGuard({ notBeforeMs: 0, stateDir, windowMs: 30_000, now: () => now }); // a restart after kill -9
  const state = JSON.parse(readFileSync(join(stateDir, 'replay.json'), 'utf8'));
  assert.deepEqual(Object.keys(state.identities).sort(), [id, 'cd'.repeat(16)]);
  assert.equal(readFileSync(join(stateDir, 'replay.journal'), 'utf8'), '', 'the journal starts again');
});

describe('the boot-time floor, for journal lines a power cut may have lost', () => {
  const window = 30_000;
  const snapshot = (stateDir: string, fields: Record<string, unknown>) =>
    writeFileSync(join(stateDir, 'replay.json'), JSON.stringify({ version: 1, identities: {}, ...fields }));

  test('a restart within the same boot needs no floor: the page cache kept every line', () => {
    const stateDir = mkdtempSync(join(dir, 'f'));
    new ReplayGuard({ stateDir, windowMs: window }); // writes the snapshot with this boot's id
    assert.equal(new ReplayGuard({ stateDir, windowMs: window }).notBeforeMs, 0);
  });

  test('after a clean stop, a new boot needs no floor', () => {
    const stateDir = mkdtempSync(join(dir, 'f'));
    snapshot(stateDir, { bootId: 'another-boot', clean: true });
    assert.equal(new ReplayGuard({ stateDir, windowMs: window }).notBeforeMs, 0);
  });

  test('after an unclean stop in another boot, or with no history, knocks before boot + window are refused', () => {
    const bootMs = (Number(/^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'))![1]) + 1) * 1000;
    const unclean = mkdtempSync(join(dir, 'f'));
    snapshot(unclean, { bootId: 'another-boot', clean: false });
    assert.equal(new ReplayGuard({ stateDir: unclean, windowMs: window }).notBeforeMs, bootMs + window);
    assert.equal(
      new ReplayGuard({ stateDir: mkdtempSync(join(dir, 'f')), windowMs: window }).notBeforeMs,
      bootMs + window,
    );
  });

  test('close() marks the snapshot clean', () => {
    const stateDir = mkdtempSync(join(dir, 'f'));
    new ReplayGuard({ stateDir, windowMs: window }).close();
    assert.equal(JSON.parse(readFileSync(join(stateDir, 'replay.json'), 'utf8')).clean, true);
  });
});

test('an accepted knock is in the journal before anything else happens, and a torn line is ignored', () => {
  const now = 1_000_000;
  const stateDir = mkdtempSync(join(dir, 'j'));
  const guard = new ReplayGuard({ notBeforeMs: 0, stateDir, windowMs: 30_000, now: () => now });
  guard.record(id, now, 'n1');
  const journal = readFileSync(join(stateDir, 'replay.journal'), 'utf8');
  assert.match(journal, new RegExp(`^${id} ${now} [0-9a-f]{8}\\n$`));
  assert.equal(statSync(join(stateDir, 'replay.journal')).mode & 0o777, 0o600);
  // A power cut mid-append: half a line for a later knock. Its pinhole never opened.
  writeFileSync(join(stateDir, 'replay.journal'), `${journal}${'cd'.repeat(16)} ${now + 5} 0bad`);
  const restarted = new ReplayGuard({ notBeforeMs: 0, stateDir, windowMs: 30_000, now: () => now });
  assert.equal(restarted.check(id, now, 'x'), 'replay', 'the journalled mark survives');
  assert.equal(restarted.check('cd'.repeat(16), now + 5, 'y'), 'fresh', 'the torn line is ignored');
});

test('knocks made before this machine booted are refused', () => {
  const now = 1_000_000;
  const guard = new ReplayGuard({
    notBeforeMs: now - 10_000,
    stateDir: mkdtempSync(join(dir, 'b')),
    windowMs: 30_000,
    now: () => now,
  });
  assert.equal(guard.check(id, now - 10_000, 'n1'), 'replay');
  assert.equal(guard.check(id, now - 9_999, 'n1'), 'fresh');
  assert.ok(
    new ReplayGuard({ stateDir: mkdtempSync(join(dir, 'd')), windowMs: 30_000 }) instanceof ReplayGuard,
    'reads /proc/stat',
  );
});

test('a line whose checksum does not match is ignored', () => {
  const now = 1_000_000;
  const stateDir = mkdtempSync(join(dir, 'k'));
  writeFileSync(join(stateDir, 'replay.journal'), `${id} ${now} 00000000\n`);
  const guard = new ReplayGuard({ notBeforeMs: 0, stateDir, windowMs: 30_000, now: () => now });
  assert.equal(guard.check(id, now, 'x'), 'fresh');
});
