import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encode } from 'cbor-x';
import fc from 'fast-check';
import {
  type BoxHello,
  chooseVersion,
  decodeToBox,
  decodeToTechnician,
  encodeProvisioningMessage,
  LOGS_MAX_LINES,
  PROVISIONING_MAX_MESSAGE_BYTES,
  PROVISIONING_VERSIONS,
  ProvisioningMessageError,
  ProvisioningVersionError,
  type ToBoxMessage,
  type ToTechnicianMessage,
} from './messages.ts';

const boxHello: BoxHello = {
  t: 'hello',
  versions: [...PROVISIONING_VERSIONS],
  serialNumber: 'UMB-2026-000123',
  firmwareVersion: '1.4.0+g1a2b3c',
  ekHash: 'ab'.repeat(32),
  state: 'unprovisioned',
  lastError: { code: 'bad-signature', message: 'the site bundle is not signed by a known key' },
};

test('every message round-trips in its direction', () => {
  const toBox: ToBoxMessage[] = [
    { t: 'hello', versions: [1, 2] },
    { t: 'apply-bundle', bundle: Buffer.from([1, 2, 3]) },
    { t: 'status-request' },
    { t: 'logs-request', lines: 20 },
    { t: 'logs-request' },
  ];
  for (const message of toBox)
    assert.deepEqual(decodeToBox(encodeProvisioningMessage(message, 'to-box')), message);
  const toTechnician: ToTechnicianMessage[] = [
    boxHello,
    { t: 'progress', step: 'apply-network', text: 'Applying static address 10.1.2.3/24', percent: 40 },
    { t: 'progress', step: 'enroll', text: 'Enrolling with the controller' },
    { t: 'result', ok: true },
    { t: 'result', ok: false, error: { code: 'expired', message: 'the site bundle expired at …' } },
    { t: 'logs', lines: ['boot', 'dhcp: lease 10.0.0.5'] },
  ];
  for (const message of toTechnician)
    assert.deepEqual(decodeToTechnician(encodeProvisioningMessage(message, 'to-technician')), message);
});

test('errors name the field; each side accepts only what the other side sends', () => {
  const decodeRaw = (value: unknown) => () => decodeToTechnician(encode(value));
  assert.throws(
    decodeRaw({ ...boxHello, ekHash: 'AB'.repeat(32) }),
    /invalid hello message: ekHash: expected 64/,
  );
  assert.throws(decodeRaw({ ...boxHello, state: 'rebooting' }), /invalid hello message: state/);
  assert.throws(decodeRaw({ ...boxHello, extra: 1 }), /invalid hello message: \(root\): Unrecognized key/);
  assert.throws(
    decodeRaw({ t: 'progress', step: 'x', text: 'y', percent: 101 }),
    /progress message: percent/,
  );
  assert.throws(decodeRaw({ t: 'result', ok: false }), /result message: error/);
  assert.throws(
    decodeRaw({ t: 'logs', lines: Array(LOGS_MAX_LINES + 1).fill('x') }),
    /invalid logs message: lines/,
  );
  assert.throws(
    decodeRaw({ t: 'apply-bundle', bundle: new Uint8Array(1) }),
    /not a message this side accepts/,
  );
  assert.throws(
    () => decodeToBox(encode({ t: 'apply-bundle', bundle: 'text' })),
    /invalid apply-bundle message: bundle: expected a byte string/,
  );
  assert.throws(() => decodeToBox(Buffer.from([0xff])), ProvisioningMessageError);
  assert.throws(() => decodeToBox(Buffer.alloc(PROVISIONING_MAX_MESSAGE_BYTES + 1)), /1 to 65536 bytes/);
  assert.throws(
    () => encodeProvisioningMessage({ ...boxHello, serialNumber: '' }, 'to-technician'),
    /hello message: serialNumber/,
  );
});

test('property: arbitrary bytes decode to a message or a ProvisioningMessageError, nothing else', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      for (const decode of [decodeToBox, decodeToTechnician]) {
        try {
          decode(bytes);
        } catch (error) {
          assert.ok(error instanceof ProvisioningMessageError, String(error));
        }
      }
    }),
  );
});

test('version handshake: the highest common version, or one clear error for both sides', () => {
  assert.equal(chooseVersion([1, 2, 3], [2, 3, 4], 'the box'), 3);
  assert.equal(chooseVersion([1], [1], 'the box'), 1);
  assert.throws(
    () => chooseVersion([1], [2, 3], 'the box'),
    (error: unknown) =>
      error instanceof ProvisioningVersionError &&
      /this side speaks 1, the box speaks 2, 3; upgrade this side/.test(error.message),
  );
  assert.throws(() => chooseVersion([2, 3], [1], 'umbra-tech'), /upgrade umbra-tech/);
});
