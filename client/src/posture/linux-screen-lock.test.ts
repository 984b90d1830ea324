import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fakeRunner } from './fake-command.ts';
import { gnomeScreenLock, linuxScreenLock } from './linux-screen-lock.ts';

const LOCK = 'gsettings get org.gnome.desktop.screensaver lock-enabled';
const IDLE = 'gsettings get org.gnome.desktop.session idle-delay';

test('GNOME answers as gsettings prints', () => {
  assert.equal(gnomeScreenLock('true\n', 'uint32 300\n'), 'on');
  assert.equal(gnomeScreenLock('false\n', 'uint32 300\n'), 'off');
  // Locking on, but the screen never blanks: it never locks unattended.
  assert.equal(gnomeScreenLock('true\n', 'uint32 0\n'), 'off');
  assert.equal(gnomeScreenLock('false\n', undefined), 'off');
});

test('answers gsettings would not give leave it out', () => {
  assert.equal(gnomeScreenLock('true\n', undefined), undefined);
  assert.equal(gnomeScreenLock('true\n', '300\n'), undefined);
  assert.equal(gnomeScreenLock('wahr\n', 'uint32 300\n'), undefined);
  assert.equal(
    gnomeScreenLock("No such schema 'org.gnome.desktop.screensaver'\n", 'uint32 300\n'),
    undefined,
  );
  assert.equal(gnomeScreenLock(undefined, undefined), undefined);
});

test('a GNOME session is asked through gsettings', async () => {
  const runner = fakeRunner({ [LOCK]: 'true\n', [IDLE]: 'uint32 900\n' });
  assert.equal(await linuxScreenLock({ runner, env: { XDG_CURRENT_DESKTOP: 'ubuntu:GNOME' } }), 'on');
  assert.deepEqual(runner.ran.sort(), [IDLE, LOCK].sort());
});

test('no gsettings, a failing one, or no GNOME session: left out', async () => {
  const gnome = { XDG_CURRENT_DESKTOP: 'GNOME' };
  assert.equal(await linuxScreenLock({ runner: fakeRunner({}), env: gnome }), undefined);
  const failing = fakeRunner({ [LOCK]: { code: 1, stderr: 'No such schema\n' }, [IDLE]: 'uint32 300\n' });
  assert.equal(await linuxScreenLock({ runner: failing, env: gnome }), undefined);
  for (const env of [{ XDG_CURRENT_DESKTOP: 'KDE' }, {}]) {
    const runner = fakeRunner({ [LOCK]: 'true\n', [IDLE]: 'uint32 300\n' });
    assert.equal(await linuxScreenLock({ runner, env }), undefined);
    assert.deepEqual(runner.ran, [], 'GNOME settings are not asked outside GNOME');
  }
});
