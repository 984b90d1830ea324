import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { crc32 } from 'node:zlib';
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

describe('with a state key, the state is tamper-evident', () => {
  const window = 30_000;
  const key = new Uint8Array(32).fill(7);
  const otherKey = new Uint8Array(32).fill(9);
  const other = 'cd'.repeat(16);
  const start = 1_000_000;
  let clock = start;
  const guard = (stateDir: string, stateKey: Uint8Array | null = key) =>
    new ReplayGuard({
      notBeforeMs: 0,
      stateDir,
      windowMs: window,
      now: () => clock,
      stateKey: stateKey ?? undefined,
    });
  /** A keyed state dir holding a mark for `id` at `start + 2 * window`, recorded and closed cleanly. */
  const recorded = (close = true) => {
    clock = start;
    const stateDir = mkdtempSync(join(dir, 'm'));
    const first = guard(stateDir);
    clock = start + 2 * window;
    first.record(id, clock, 'n1');
    if (close) first.close();
    clock += 5;
    return stateDir;
  };

  test('a mark recorded with a key is read back after a restart, from a MACed journal line', () => {
    const stateDir = recorded(false);
    const journal = readFileSync(join(stateDir, 'replay.journal'), 'utf8');
    assert.match(journal, new RegExp(`^${id} ${start + 2 * window} [0-9a-f]{32}\\n$`));
    const restarted = guard(stateDir);
    assert.equal(restarted.distrust, null);
    assert.equal(restarted.forgedJournalLines, 0);
    assert.equal(restarted.check(id, start + 2 * window, 'x'), 'replay');
    assert.equal(restarted.check(id, start + 2 * window + 1, 'x'), 'fresh');
    const state = JSON.parse(readFileSync(join(stateDir, 'replay.json'), 'utf8'));
    assert.match(state.mac, /^[0-9a-f]{64}$/);
    assert.equal(state.identities[id], start + 2 * window);
    restarted.close();
    assert.equal(guard(stateDir).distrust, null, 'a clean stop is trusted too');
  });

  test('journal lines forged without the key are not applied, are counted, and the state is distrusted', () => {
    const stateDir = recorded(false);
    const later = clock + 5 * window;
    const crcEntry = `${other} ${later}`;
    const crcLine = `${crcEntry} ${crc32(crcEntry).toString(16).padStart(8, '0')}\n`;
    const wrongMac = `${'ef'.repeat(16)} ${later} ${'0'.repeat(32)}\n`;
    writeFileSync(join(stateDir, 'replay.journal'), crcLine + wrongMac, { flag: 'a' });
    const restartedAt = clock;
    const restarted = guard(stateDir);
    assert.equal(restarted.forgedJournalLines, 2);
    assert.match(restarted.distrust ?? '', /replay\.journal: 2 line\(s\) whose MAC fails/);
    assert.equal(restarted.notBeforeMs, restartedAt + window);
    assert.equal(restarted.check(id, start + 2 * window, 'x'), 'replay', 'the authentic line still counts');
    clock = later;
    assert.equal(restarted.check(other, later, 'y'), 'fresh', 'the CRC-form line was not applied');
    assert.equal(restarted.check('ef'.repeat(16), later, 'z'), 'fresh', 'the wrong-MAC line was not applied');
  });

  test('a torn last line is not taken for a forgery, even when it looks like a keyless line', () => {
    const stateDir = recorded(false);
    const journal = readFileSync(join(stateDir, 'replay.journal'), 'utf8');
    const torn = `${other} ${clock} ${'a'.repeat(8)}`; // a MAC cut after 8 digits, no newline
    writeFileSync(join(stateDir, 'replay.journal'), journal + torn);
    const restarted = guard(stateDir);
    assert.equal(restarted.forgedJournalLines, 0);
    assert.equal(restarted.distrust, null);
    assert.equal(restarted.check(id, start + 2 * window, 'x'), 'replay');
  });

  test('an edited snapshot (a mark lowered) is distrusted: knocks before now + window are refused, across a restart', () => {
    const stateDir = recorded();
    const path = join(stateDir, 'replay.json');
    const state = JSON.parse(readFileSync(path, 'utf8'));
    state.identities[id] = start;
    writeFileSync(path, JSON.stringify(state));
    const restartedAt = clock;
    const restarted = guard(stateDir);
    assert.match(restarted.distrust ?? '', /replay\.json: its MAC fails/);
    assert.equal(restarted.notBeforeMs, restartedAt + window);
    assert.equal(
      restarted.check(id, start + 2 * window + 1, 'x'),
      'replay',
      'the lowered mark does not help',
    );
    assert.equal(restarted.check(other, restartedAt + window, 'x'), 'replay');
    clock += 1;
    assert.equal(restarted.check(other, restartedAt + window + 1, 'x'), 'fresh');
    // Killed and restarted in the same boot: the state is trusted again, and the floor is kept.
    const again = guard(stateDir);
    assert.equal(again.distrust, null);
    assert.equal(again.notBeforeMs, restartedAt + window);
  });

  test('a snapshot without its MAC, or with a MAC removed, is distrusted', () => {
    const stateDir = recorded();
    const path = join(stateDir, 'replay.json');
    const { mac: _mac, ...unsigned } = JSON.parse(readFileSync(path, 'utf8'));
    writeFileSync(path, JSON.stringify(unsigned));
    assert.match(guard(stateDir).distrust ?? '', /replay\.json has no MAC/);
  });

  test('state written under another key is distrusted, and the key appears in no message', () => {
    const stateDir = recorded(false);
    const restartedAt = clock;
    const restarted = guard(stateDir, otherKey);
    assert.match(restarted.distrust ?? '', /replay\.json: its MAC fails/);
    assert.match(restarted.distrust ?? '', /replay\.journal: 1 line/);
    assert.equal(restarted.notBeforeMs, restartedAt + window);
    for (const k of [key, otherKey]) {
      assert.ok(!restarted.distrust?.includes(Buffer.from(k).toString('hex')));
      assert.ok(!restarted.distrust?.includes(Buffer.from(k).toString('base64')));
    }
  });

  test('moving from no key to a key distrusts the keyless state once, then writes it with a MAC', () => {
    clock = start;
    const stateDir = mkdtempSync(join(dir, 'u'));
    const keyless = guard(stateDir, null);
    keyless.record(id, start, 'n1');
    keyless.close();
    clock = start + 10;
    const upgraded = guard(stateDir);
    assert.match(upgraded.distrust ?? '', /replay\.json has no MAC: it was written without a state key/);
    assert.equal(upgraded.notBeforeMs, start + 10 + window);
    assert.equal(upgraded.check(id, start, 'x'), 'replay', 'the keyless marks are kept');
    assert.match(JSON.parse(readFileSync(join(stateDir, 'replay.json'), 'utf8')).mac, /^[0-9a-f]{64}$/);
    assert.equal(guard(stateDir).distrust, null, 'only once');
  });

  test('without a key the format is unchanged, and keyed state is distrusted', () => {
    clock = start;
    const plain = mkdtempSync(join(dir, 'n'));
    const keyless = guard(plain, null);
    assert.equal(keyless.distrust, null);
    keyless.record(id, start, 'n1');
    assert.match(readFileSync(join(plain, 'replay.journal'), 'utf8'), /^[0-9a-f]{32} \d+ [0-9a-f]{8}\n$/);
    keyless.close();
    assert.deepEqual(Object.keys(JSON.parse(readFileSync(join(plain, 'replay.json'), 'utf8'))), [
      'version',
      'identities',
      'bootId',
      'clean',
    ]);
    assert.equal(guard(plain, null).distrust, null);
    const keyed = recorded(false);
    const downgraded = guard(keyed, null);
    assert.match(downgraded.distrust ?? '', /written with a state key and this gateway has none/);
    assert.equal(downgraded.forgedJournalLines, 1);
  });

  test('a first start with a key (no state yet) trusts itself and takes a fresh knock at once', () => {
    const fresh = new ReplayGuard({ stateDir: mkdtempSync(join(dir, 'f')), windowMs: window, stateKey: key });
    assert.equal(fresh.distrust, null);
    assert.equal(fresh.check(id, Date.now(), 'first'), 'fresh');
    fresh.close();
  });

  test('a key that is not 32 bytes is refused at construction, without echoing it', () => {
    for (const length of [0, 16, 31, 33, 64]) {
      const bad = new Uint8Array(length).fill(0x5a);
      assert.throws(
        () => guard(mkdtempSync(join(dir, 'x')), bad),
        (error: Error) =>
          error.message.includes(`must be 32 bytes, got ${length}`) && !error.message.includes('5a5a'),
      );
    }
  });
});
