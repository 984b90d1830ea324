import assert from 'node:assert/strict';
import { test } from 'node:test';
import { addClaims, fitForKnock, onOff, versionText } from './claims.ts';

test('versions are dotted numbers, anything else is not a version', () => {
  assert.equal(versionText('14.4.1\n'), '14.4.1');
  assert.equal(versionText('10.0.22631'), '10.0.22631');
  assert.equal(versionText('6.1.0-27-amd64'), undefined);
  assert.equal(versionText('sw_vers: command not found'), undefined);
  assert.equal(versionText(''), undefined);
  assert.equal(versionText(undefined), undefined);
});

test('switches and claims that are not there', () => {
  assert.equal(onOff(true), 'on');
  assert.equal(onOff(false), 'off');
  assert.equal(onOff(undefined), undefined);
  assert.deepEqual(addClaims({ os: 'macos' }, { firewall: 'on', screen_lock: undefined }), {
    os: 'macos',
    firewall: 'on',
  });
});

test('what a knock cannot carry is dropped, the rest kept', () => {
  const many = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`claim_${i}`, 'on']));
  assert.equal(Object.keys(fitForKnock(many)).length, 16);
  assert.deepEqual(
    fitForKnock({
      os: 'linux',
      os_version: 'x'.repeat(65),
      ['k'.repeat(33)]: 'on',
      '': 'on',
      broken: '\ud800',
      kernel: 'é'.repeat(32),
    }),
    { os: 'linux', kernel: 'é'.repeat(32) },
  );
});
