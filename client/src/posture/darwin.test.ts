// Answers as macOS's tools print them; the tools themselves cannot run on the Linux machine the
// tests run on.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { darwinPosture, fileVaultState, firewallState, screenLockState } from './darwin.ts';
import { fakeRunner } from './fake-command.ts';

const SW_VERS = '/usr/bin/sw_vers -productVersion';
const FDESETUP = '/usr/bin/fdesetup status';
const SOCKETFILTERFW = '/usr/libexec/ApplicationFirewall/socketfilterfw --getglobalstate';
const SYSADMINCTL = '/usr/sbin/sysadminctl -screenLock status';
const NSLOG = '2024-03-12 10:15:42.123 sysadminctl[4567:89012]';

test('FileVault on, off, and on its way', () => {
  assert.equal(fileVaultState('FileVault is On.\n'), 'on');
  assert.equal(fileVaultState('FileVault is Off.\n'), 'off');
  assert.equal(
    fileVaultState("FileVault is Off.\nDeferred enablement appears to be active for user 'alice'.\n"),
    'off',
  );
  assert.equal(fileVaultState('FileVault is Off, but will be enabled after the next restart.\n'), 'off');
  assert.equal(
    fileVaultState('FileVault is On.\nEncryption in progress: Percent completed = 37.2\n'),
    undefined,
  );
  assert.equal(
    fileVaultState('FileVault is On.\nDecryption in progress: Percent completed = 80.0\n'),
    undefined,
  );
});

test('FileVault answers this code does not know are left out', () => {
  assert.equal(fileVaultState('FileVault ist aktiviert.\n'), undefined);
  assert.equal(fileVaultState('FileVault is On, but needs to be restarted to finish.\n'), undefined);
  assert.equal(fileVaultState('Error: Unable to get status.\n'), undefined);
  assert.equal(fileVaultState(''), undefined);
  assert.equal(fileVaultState(undefined), undefined);
});

test('the application firewall, by its sentence and its state number', () => {
  assert.equal(firewallState('Firewall is enabled. (State = 1)\n'), 'on');
  assert.equal(firewallState('Firewall is disabled. (State = 0)\n'), 'off');
  assert.equal(firewallState('Firewall is enabled. (State = 2)\n'), 'on');
  assert.equal(
    firewallState('Firewall is blocking all non-essential incoming connections. (State = 2)\n'),
    'on',
  );
  assert.equal(firewallState('Firewall is enabled.\n'), 'on');
  assert.equal(firewallState('Firewall is disabled.\n'), 'off');
});

test('a firewall answer that contradicts itself or is unknown is left out', () => {
  assert.equal(firewallState('Firewall is enabled. (State = 0)\n'), undefined);
  assert.equal(firewallState('Firewall is disabled. (State = 1)\n'), undefined);
  assert.equal(firewallState('Firewall is enabled. (State = 7)\n'), undefined);
  assert.equal(firewallState('Firewall state unknown\n'), undefined);
  assert.equal(firewallState('\u0000\u00ff garbage'), undefined);
  assert.equal(firewallState(undefined), undefined);
});

test('screen lock as sysadminctl logs it', () => {
  assert.equal(screenLockState(`${NSLOG} screenLock delay is immediate\n`), 'on');
  assert.equal(screenLockState(`${NSLOG} screenLock delay is 300 seconds\n`), 'on');
  assert.equal(screenLockState(`${NSLOG} screenLock delay is 5 seconds\n`), 'on');
  assert.equal(screenLockState(`${NSLOG} screenLock is off\n`), 'off');
  assert.equal(screenLockState('screenLock is off\n'), 'off');
});

test('a screen lock answer this code does not know is left out', () => {
  assert.equal(screenLockState(`${NSLOG} screenLock delay is unavailable\n`), undefined);
  assert.equal(screenLockState(`${NSLOG} screenLock delay is five minutes\n`), undefined);
  assert.equal(
    screenLockState(`${NSLOG} screenLock delay is immediate\n${NSLOG} screenLock is off\n`),
    undefined,
  );
  assert.equal(
    screenLockState(`${NSLOG} Operation is not permitted without secure token unlock.\n`),
    undefined,
  );
  assert.equal(screenLockState(''), undefined);
});

test('a Mac with everything on', async () => {
  const runner = fakeRunner({
    [SW_VERS]: '14.4.1\n',
    [FDESETUP]: 'FileVault is On.\n',
    [SOCKETFILTERFW]: 'Firewall is enabled. (State = 1)\n',
    [SYSADMINCTL]: { stderr: `${NSLOG} screenLock delay is immediate\n` },
  });
  assert.deepEqual(await darwinPosture({ runner, release: '23.4.0' }), {
    os: 'macos',
    os_version: '14.4.1',
    kernel: '23.4.0',
    disk_encryption: 'on',
    firewall: 'on',
    screen_lock: 'on',
  });
});

test('a Mac whose tools fail or say nothing clear reports only what it knows', async () => {
  const runner = fakeRunner({
    [SW_VERS]: 'ProductVersion: 14.4.1\n',
    [FDESETUP]: { code: 1, stdout: 'FileVault is On.\n' },
    [SOCKETFILTERFW]: 'Firewall is disabled. (State = 0)\n',
    // The answer is on stderr; stdout says nothing.
    [SYSADMINCTL]: 'screenLock delay is immediate\n',
  });
  assert.deepEqual(await darwinPosture({ runner, release: 'Darwin' }), { os: 'macos', firewall: 'off' });
});
