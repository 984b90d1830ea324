import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { TPM_CC } from './constants.ts';
import { decodeResponseCode, TPM_RC, TpmError } from './response-code.ts';

describe('response codes', () => {
  test('format 1 with a parameter number: TPM_RC_VALUE + TPM_RC_P + TPM_RC_2', () => {
    const rc = decodeResponseCode(0x084 | 0x040 | 0x200);
    assert.equal(rc.name, 'TPM_RC_VALUE');
    assert.equal(rc.base, TPM_RC.VALUE);
    assert.equal(rc.parameter, 2);
    assert.equal(
      new TpmError(TPM_CC.CreatePrimary, 0x2c4).message,
      'TPM2_CreatePrimary: parameter 2: TPM_RC_VALUE (value is out of range or is not correct for the context)',
    );
  });

  test('format 1 with a handle number, naming the handle the command carried', () => {
    const rc = decodeResponseCode(0x08b | 0x100);
    assert.deepEqual(
      [rc.name, rc.handle, rc.parameter, rc.session],
      ['TPM_RC_HANDLE', 1, undefined, undefined],
    );
    assert.equal(
      new TpmError(TPM_CC.ReadPublic, 0x18b, [0x81000099]).message,
      'TPM2_ReadPublic: handle 1 (0x81000099): TPM_RC_HANDLE (the handle is not correct for the use)',
    );
    assert.equal(
      new TpmError(TPM_CC.CreatePrimary, 0x185, [0x40000001]).message,
      'TPM2_CreatePrimary: handle 1 (TPM_RH_OWNER): TPM_RC_HIERARCHY (hierarchy is not enabled or is not correct for the use)',
    );
  });

  test('format 1 with a session number: TPM_RC_AUTH_FAIL + TPM_RC_S + TPM_RC_1', () => {
    const rc = decodeResponseCode(0x98e);
    assert.deepEqual([rc.name, rc.session, rc.handle], ['TPM_RC_AUTH_FAIL', 1, undefined]);
    assert.match(
      new TpmError(TPM_CC.Sign, 0x98e).message,
      /^TPM2_Sign: session 1: TPM_RC_AUTH_FAIL \(the authorization HMAC/,
    );
  });

  test('format 1 about no particular handle, parameter 15', () => {
    assert.deepEqual(decodeResponseCode(0x095).handle, undefined);
    assert.equal(decodeResponseCode(0xfc4).parameter, 15);
  });

  test('format 0 errors and warnings', () => {
    assert.equal(decodeResponseCode(0x100).name, 'TPM_RC_INITIALIZE');
    assert.equal(decodeResponseCode(0x101).meaning, 'commands not being accepted because of a TPM failure');
    assert.equal(decodeResponseCode(0x14c).name, 'TPM_RC_NV_DEFINED');
    const warning = decodeResponseCode(0x922);
    assert.deepEqual([warning.kind, warning.name], ['warning', 'TPM_RC_RETRY']);
    assert.equal(decodeResponseCode(0x902).name, 'TPM_RC_OBJECT_MEMORY');
    assert.equal(
      decodeResponseCode(0x910).meaning,
      'the first handle references a transient object or session that is not loaded',
    );
    assert.equal(decodeResponseCode(0x919).name, 'TPM_RC_REFERENCE_S1');
    assert.equal(decodeResponseCode(0x921).name, 'TPM_RC_LOCKOUT');
  });

  test('vendor codes, TPM 1.2 codes, undefined codes and layered codes', () => {
    const vendor = decodeResponseCode(0x500 | 0x12);
    assert.equal(vendor.kind, 'vendor');
    assert.equal(vendor.name, 'vendor 0x512');
    assert.equal(decodeResponseCode(0x01e).kind, 'tpm12');
    assert.equal(decodeResponseCode(0x17f).name, '0x17f');
    const layered = decodeResponseCode(0x000b0000 | 0x18b);
    assert.deepEqual([layered.layer, layered.name, layered.handle], [11, 'TPM_RC_HANDLE', 1]);
    assert.match(new TpmError(TPM_CC.Load, 0x000b0922).message, /^TPM2_Load: layer 11: TPM_RC_RETRY/);
    assert.match(new TpmError(0x7777, 0x101).message, /^command 0x00007777: TPM_RC_FAILURE/);
  });

  test('any code decodes to a message without throwing', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 0xffffffff }),
        fc.integer({ min: 0, max: 0xffffffff }),
        (code, cc) => {
          const error = new TpmError(cc, code, [0x80000000]);
          assert.ok(error.message.length > 0);
          assert.equal(error.rc.code, code);
        },
      ),
      { numRuns: 5000 },
    );
  });
});
