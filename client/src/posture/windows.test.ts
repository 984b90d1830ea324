// Answers as Windows's tools print them (CRLF line ends included); the tools themselves cannot
// run on the Linux machine the tests run on.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fakeRunner } from './fake-command.ts';
import { bitLockerState, firewallState, registryValues, screenLockState, windowsPosture } from './windows.ts';

const crlf = (text: string) => text.replaceAll('\n', '\r\n');

function manageBde(status: string, conversion = 'Used Space Only Encrypted'): string {
  return crlf(`BitLocker Drive Encryption: Configuration Tool version 10.0.22621
Copyright (C) 2013 Microsoft Corporation. All rights reserved.

Volume C: [Windows]
[OS Volume]

    Size:                 475.71 GB
    BitLocker Version:    2.0
    Conversion Status:    ${conversion}
    Percentage Encrypted: 100.0%
    Encryption Method:    XTS-AES 128
    Protection Status:    ${status}
    Lock Status:          Unlocked
    Identification Field: Unknown
    Key Protectors:
        TPM
        Numerical Password
`);
}

function netsh(domain: string, privateState: string, publicState: string): string {
  const profile = (name: string, state: string) =>
    `${name} Profile Settings: \n----------------------------------------------------------------------\nState                                 ${state}\n`;
  return crlf(
    `\n${profile('Domain', domain)}\n${profile('Private', privateState)}\n${profile('Public', publicState)}Ok.\n\n`,
  );
}

function regQuery(key: string, values: [string, string, string][], subkeys: string[] = []): string {
  const lines = values.map(([name, type, data]) => `    ${name}    ${type}    ${data}`);
  return crlf(`\n${key}\n${lines.join('\n')}\n\n${subkeys.map((sub) => `${key}\\${sub}`).join('\n')}\n`);
}

test('BitLocker on the system drive', () => {
  assert.equal(bitLockerState(manageBde('Protection On')), 'on');
  assert.equal(bitLockerState(manageBde('Protection Off', 'Fully Decrypted')), 'off');
  // Encrypted, protectors suspended: the key is in the clear.
  assert.equal(bitLockerState(manageBde('Protection Off')), 'off');
});

test('BitLocker answers this code does not know are left out', () => {
  assert.equal(bitLockerState(manageBde('Protection Unknown')), undefined);
  assert.equal(
    bitLockerState(crlf('    Schutzstatus:         Der Schutz ist aktiviert.\n')),
    undefined,
    'a German display language',
  );
  assert.equal(
    bitLockerState(
      crlf(
        'ERROR: An attempt to access a required resource was denied.\nCheck that you have administrative rights on the computer.\n',
      ),
    ),
    undefined,
  );
  assert.equal(bitLockerState(manageBde('Protection On') + manageBde('Protection Off')), undefined);
  assert.equal(bitLockerState(undefined), undefined);
});

test('Windows Firewall: on only when every profile is', () => {
  assert.equal(firewallState(netsh('ON', 'ON', 'ON')), 'on');
  assert.equal(firewallState(netsh('ON', 'ON', 'OFF')), 'off');
  assert.equal(firewallState(netsh('OFF', 'OFF', 'OFF')), 'off');
});

test('a firewall answer in another language or cut short is left out', () => {
  assert.equal(firewallState(netsh('EIN', 'EIN', 'EIN')), undefined);
  assert.equal(firewallState(netsh('ON', 'ON', 'ON').replaceAll('State', 'Status')), undefined);
  assert.equal(firewallState(netsh('ON', 'ON', 'ON').slice(0, 200)), undefined);
  assert.equal(firewallState('The requested operation requires elevation.\r\n'), undefined);
  assert.equal(firewallState(undefined), undefined);
});

test('registry values are read under the key only, names case-blind', () => {
  const values = registryValues(
    regQuery(
      'HKEY_CURRENT_USER\\Control Panel\\Desktop',
      [
        ['ScreenSaveActive', 'REG_SZ', '1'],
        ['ScreenSaveTimeOut', 'REG_SZ', '600'],
        ['UserPreferencesMask', 'REG_BINARY', '9E1E078012000000'],
      ],
      ['MuiCached', 'WindowMetrics'],
    ),
  );
  assert.deepEqual(
    values,
    new Map([
      ['screensaveactive', '1'],
      ['screensavetimeout', '600'],
      ['userpreferencesmask', '9E1E078012000000'],
    ]),
  );
  assert.deepEqual(registryValues(undefined), new Map());
});

const secureSaver: [string, string, string][] = [
  ['ScreenSaveActive', 'REG_SZ', '1'],
  ['ScreenSaverIsSecure', 'REG_SZ', '1'],
  ['ScreenSaveTimeOut', 'REG_SZ', '600'],
  ['SCRNSAVE.EXE', 'REG_SZ', 'C:\\Windows\\system32\\scrnsave.scr'],
];
const user = (values: [string, string, string][]) =>
  registryValues(regQuery('HKEY_CURRENT_USER\\Control Panel\\Desktop', values));
const none = new Map<string, string>();

test('screen lock: a password-protected screen saver, or the machine inactivity limit', () => {
  assert.equal(screenLockState(user(secureSaver), none, none), 'on');
  const limit = registryValues(
    regQuery('HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Policies\\System', [
      ['InactivityTimeoutSecs', 'REG_DWORD', '0x384'],
    ]),
  );
  assert.equal(screenLockState(none, none, limit), 'on');
});

test('screen lock is left out, never off, when the registry does not show a lock', () => {
  const without = (name: string) => user(secureSaver.filter(([n]) => n !== name));
  assert.equal(screenLockState(without('ScreenSaverIsSecure'), none, none), undefined);
  assert.equal(screenLockState(without('SCRNSAVE.EXE'), none, none), undefined);
  assert.equal(
    screenLockState(user([...secureSaver, ['ScreenSaveTimeOut', 'REG_SZ', '0']]), none, none),
    undefined,
  );
  assert.equal(screenLockState(none, none, none), undefined);
  // Group policy switching the secure screen saver off wins over the user's setting.
  const policy = registryValues(
    regQuery('HKEY_CURRENT_USER\\Software\\Policies\\Microsoft\\Windows\\Control Panel\\Desktop', [
      ['ScreenSaverIsSecure', 'REG_SZ', '0'],
    ]),
  );
  assert.equal(screenLockState(user(secureSaver), policy, none), undefined);
});

test('a Windows 11 device with BitLocker, the firewall and a locking screen saver', async () => {
  const system32 = 'C:\\Windows\\System32';
  const runner = fakeRunner({
    [`${system32}\\manage-bde.exe -status C:`]: manageBde('Protection On'),
    [`${system32}\\netsh.exe advfirewall show allprofiles state`]: netsh('ON', 'ON', 'ON'),
    [`${system32}\\reg.exe query HKCU\\Control Panel\\Desktop`]: regQuery(
      'HKEY_CURRENT_USER\\Control Panel\\Desktop',
      secureSaver,
    ),
    // No such policy key: reg prints an error and exits 1.
    [`${system32}\\reg.exe query HKCU\\Software\\Policies\\Microsoft\\Windows\\Control Panel\\Desktop`]: {
      code: 1,
      stderr: 'ERROR: The system was unable to find the specified registry key or value.\r\n',
    },
  });
  const posture = await windowsPosture({
    runner,
    release: '10.0.22631',
    env: { SystemRoot: 'C:\\Windows', SystemDrive: 'C:' },
  });
  assert.deepEqual(posture, {
    os: 'windows',
    os_version: '10.0.22631',
    kernel: '10.0.22631',
    disk_encryption: 'on',
    firewall: 'on',
    screen_lock: 'on',
  });
});

test('a user without administrator rights on a German Windows: only what is known', async () => {
  const runner = fakeRunner({
    'D:\\WINNT\\System32\\manage-bde.exe -status E:': {
      code: 0x80070005,
      stdout: crlf('FEHLER: Der Zugriff auf eine erforderliche Ressource wurde verweigert.\n'),
    },
    'D:\\WINNT\\System32\\netsh.exe advfirewall show allprofiles state': netsh('EIN', 'EIN', 'EIN'),
  });
  const posture = await windowsPosture({
    runner,
    release: '10.0.19045',
    env: { SystemRoot: 'D:\\WINNT', SystemDrive: 'E:' },
  });
  assert.deepEqual(posture, { os: 'windows', os_version: '10.0.19045', kernel: '10.0.19045' });
  assert.ok(
    runner.ran.includes('D:\\WINNT\\System32\\manage-bde.exe -status E:'),
    'the system drive is asked',
  );
});
