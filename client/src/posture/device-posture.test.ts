import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { devicePosture } from './device-posture.ts';
import { fakeRunner } from './fake-command.ts';

const root = mkdtempSync(join(tmpdir(), 'umbra-device-posture-'));
after(() => rmSync(root, { recursive: true, force: true }));
mkdirSync(join(root, 'etc'));
writeFileSync(join(root, 'etc/os-release'), 'ID=fedora\nVERSION_ID=40\n');

test('Linux: files for most claims, GNOME for the screen lock', async () => {
  const runner = fakeRunner({
    'gsettings get org.gnome.desktop.screensaver lock-enabled': 'true\n',
    'gsettings get org.gnome.desktop.session idle-delay': 'uint32 300\n',
  });
  const posture = await devicePosture({
    platform: 'linux',
    runner,
    root,
    env: { XDG_CURRENT_DESKTOP: 'GNOME' },
  });
  assert.deepEqual(posture, { os: 'linux', os_name: 'fedora', os_version: '40', screen_lock: 'on' });
});

test('Linux without a desktop runs no command', async () => {
  const runner = fakeRunner({});
  const posture = await devicePosture({ platform: 'linux', runner, root, env: {} });
  assert.deepEqual(posture, { os: 'linux', os_name: 'fedora', os_version: '40' });
  assert.deepEqual(runner.ran, []);
});

test('macOS and Windows ask their own tools', async () => {
  const mac = fakeRunner({ '/usr/bin/fdesetup status': 'FileVault is On.\n' });
  assert.deepEqual(await devicePosture({ platform: 'darwin', runner: mac, release: '24.1.0' }), {
    os: 'macos',
    kernel: '24.1.0',
    disk_encryption: 'on',
  });
  const windows = fakeRunner({});
  assert.deepEqual(
    await devicePosture({ platform: 'win32', runner: windows, release: '10.0.26100', env: {} }),
    {
      os: 'windows',
      os_version: '10.0.26100',
      kernel: '10.0.26100',
    },
  );
  assert.ok(windows.ran.some((line) => line.startsWith('C:\\Windows\\System32\\netsh.exe ')));
});

test('another platform reports only its name', async () => {
  const runner = fakeRunner({});
  assert.deepEqual(await devicePosture({ platform: 'freebsd', runner, release: '14.1-RELEASE' }), {
    os: 'freebsd',
  });
  assert.deepEqual(runner.ran, []);
});

test('what a knock cannot carry is dropped', async () => {
  const long = mkdtempSync(join(root, 'long-'));
  mkdirSync(join(long, 'etc'));
  writeFileSync(join(long, 'etc/os-release'), `ID=${'x'.repeat(80)}\nVERSION_ID=1\n`);
  const posture = await devicePosture({ platform: 'linux', runner: fakeRunner({}), root: long, env: {} });
  assert.deepEqual(posture, { os: 'linux', os_version: '1' });
});

test('this machine answers with the real runner', async () => {
  const posture = await devicePosture();
  assert.equal(typeof posture.os, 'string');
});
