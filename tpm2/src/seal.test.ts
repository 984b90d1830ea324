// Sealing to PCRs against two private swtpms: the SRK made once at UMBRA_PERSISTENT.SRK; a secret
// sealed to the current PCRs comes back, also through the file format and when longer than a TPM
// seals; after PCR_Extend of a selected PCR the TPM refuses and the error names that PCR; a blob
// sealed by one swtpm is refused by the other as another TPM's; damaged files are named as such; and
// no object or session is left loaded on any path.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { TPM_ALG, TPM_HT, TPM_SU } from './constants.ts';
import { openTransport } from './open.ts';
import { TPM_RC, TpmError } from './response-code.ts';
import {
  decodeSealedBlob,
  encodeSealedBlob,
  SealedBlobFormatError,
  SealedByOtherTpmError,
  SealedToOtherBootStateError,
  sealToPcrs,
  unsealWithPcrs,
} from './seal.ts';
import { ensureStorageKey } from './storage-key.ts';
import { UMBRA_PERSISTENT } from './templates.ts';
import { type Swtpm, startSwtpm } from './testing/swtpm.ts';
import { Tpm } from './tpm.ts';

const SRK = UMBRA_PERSISTENT.SRK;
const BOOT = { bank: TPM_ALG.SHA256, pcrs: [0, 1, 2, 3, 4, 5, 6, 7] };

describe('sealing to PCRs over swtpm', () => {
  let a: Swtpm;
  let b: Swtpm;
  let tpm: Tpm;
  let other: Tpm;

  const nothingLoaded = async (t: Tpm) => {
    assert.deepEqual(await t.handles(TPM_HT.TRANSIENT), []);
    assert.deepEqual(await t.handles(TPM_HT.POLICY_SESSION), []);
    assert.deepEqual(await t.handles(TPM_HT.HMAC_SESSION), []);
  };

  before(async () => {
    [a, b] = await Promise.all([startSwtpm(), startSwtpm()]);
    tpm = new Tpm(openTransport(a.address));
    other = new Tpm(openTransport(b.address));
    await tpm.startup(TPM_SU.CLEAR);
    await other.startup(TPM_SU.CLEAR);
  });

  after(async () => {
    await tpm?.close();
    await other?.close();
    await Promise.all([a?.stop(), b?.stop()]);
  });

  test('ensureStorageKey makes the SRK at 0x81000001 once; a second call returns the same key', async () => {
    assert.deepEqual(await tpm.handles(TPM_HT.PERSISTENT).then((h) => h.includes(SRK)), false);
    const first = await ensureStorageKey(tpm);
    const second = await ensureStorageKey(tpm);
    assert.deepEqual(second.name, first.name);
    assert.ok((await tpm.handles(TPM_HT.PERSISTENT)).includes(SRK));
    await nothingLoaded(tpm);
  });

  test('a sealed secret unseals while the PCRs are unchanged, also read back from its file form', async () => {
    const secret = new Uint8Array(randomBytes(32));
    const blob = await sealToPcrs(tpm, SRK, secret, BOOT);
    assert.equal(blob.envelope, undefined);
    assert.deepEqual(await unsealWithPcrs(tpm, SRK, blob), secret);
    const file = encodeSealedBlob(blob);
    assert.deepEqual(Buffer.from(file.subarray(0, 12)).toString(), 'UMBRA-SEALED');
    const decoded = decodeSealedBlob(file);
    assert.deepEqual(encodeSealedBlob(decoded), file);
    assert.deepEqual(await unsealWithPcrs(tpm, SRK, decoded), secret);
    await nothingLoaded(tpm);
  });

  test('a secret longer than 128 bytes (a PEM key) is sealed as an AES-256-GCM key; sha384 banks and policy work too', async () => {
    const secret = new Uint8Array(randomBytes(1200));
    const blob = await sealToPcrs(
      tpm,
      SRK,
      secret,
      [
        { hash: TPM_ALG.SHA256, pcrs: [0, 7] },
        { hash: TPM_ALG.SHA384, pcrs: [1, 2] },
      ],
      { policyHash: TPM_ALG.SHA384 },
    );
    assert.ok(blob.envelope);
    const back = await unsealWithPcrs(tpm, SRK, decodeSealedBlob(encodeSealedBlob(blob)));
    assert.deepEqual(back, secret);
    // The encrypted part altered: named, not returned.
    const tampered = {
      ...blob,
      envelope: { ...blob.envelope, ciphertext: Uint8Array.from(blob.envelope.ciphertext) },
    };
    tampered.envelope.ciphertext[5]! ^= 1;
    await assert.rejects(
      unsealWithPcrs(tpm, SRK, tampered),
      (e: unknown) => e instanceof SealedBlobFormatError && /altered/.test(e.message),
    );
    await nothingLoaded(tpm);
  });

  test('PCR_Extend changes the PCR to H(old ‖ digest); the secret then is refused, naming the PCR', async () => {
    const secret = new Uint8Array(randomBytes(16));
    const blob = await sealToPcrs(tpm, SRK, secret, BOOT);
    const before = (await tpm.pcrRead([{ hash: TPM_ALG.SHA256, pcrs: [7] }])).banks
      .get(TPM_ALG.SHA256)!
      .get(7)!;
    const measurement = new Uint8Array(randomBytes(32));
    await tpm.pcrExtend(7, [{ hash: TPM_ALG.SHA256, digest: measurement }]);
    const after = (await tpm.pcrRead([{ hash: TPM_ALG.SHA256, pcrs: [7] }])).banks
      .get(TPM_ALG.SHA256)!
      .get(7)!;
    assert.deepEqual(after, new Uint8Array(createHash('sha256').update(before).update(measurement).digest()));

    await assert.rejects(unsealWithPcrs(tpm, SRK, blob), (error: unknown) => {
      assert.ok(error instanceof SealedToOtherBootStateError, String(error));
      assert.match(error.message, /boot state differs from the one the secret was sealed to/);
      assert.match(error.message, /sha256 PCR 7 differs/);
      assert.doesNotMatch(error.message, /PCR 6/);
      return true;
    });
    await nothingLoaded(tpm);
    // Sealed again now, it unseals in the new state.
    assert.deepEqual(await unsealWithPcrs(tpm, SRK, await sealToPcrs(tpm, SRK, secret, BOOT)), secret);
  });

  test('a blob sealed by one TPM is refused by another as sealed by another TPM', async () => {
    await ensureStorageKey(other);
    const blob = await sealToPcrs(tpm, SRK, new Uint8Array(randomBytes(32)), BOOT);
    await assert.rejects(unsealWithPcrs(other, SRK, blob), (error: unknown) => {
      assert.ok(error instanceof SealedByOtherTpmError, String(error));
      assert.match(error.message, /sealed by another TPM/);
      // What the TPM said: the private part's integrity HMAC (keyed by the parent's seed) fails.
      assert.ok(
        error.cause instanceof TpmError && error.cause.base === TPM_RC.INTEGRITY,
        String(error.cause),
      );
      return true;
    });
    await nothingLoaded(other);
  });

  test('without a storage key at the handle, unsealing says so', async () => {
    const blob = await sealToPcrs(tpm, SRK, new Uint8Array(randomBytes(32)), BOOT);
    await assert.rejects(unsealWithPcrs(tpm, 0x81000042, blob), /no storage key at 0x81000042/);
    await nothingLoaded(tpm);
  });

  test('empty, foreign, truncated and altered blob files are refused, naming the problem', async () => {
    const file = encodeSealedBlob(await sealToPcrs(tpm, SRK, new Uint8Array(randomBytes(32)), BOOT));
    assert.throws(
      () => decodeSealedBlob(new Uint8Array()),
      (e: unknown) => e instanceof SealedBlobFormatError && /empty/.test(e.message),
    );
    assert.throws(
      () => decodeSealedBlob(new Uint8Array(randomBytes(200))),
      (e: unknown) => e instanceof SealedBlobFormatError && /not a sealed blob/.test(e.message),
    );
    for (let length = 12; length < file.length; length += 7) {
      assert.throws(
        () => decodeSealedBlob(file.subarray(0, length)),
        (e: unknown) => e instanceof SealedBlobFormatError && /truncated or damaged/.test(e.message),
        `truncated to ${length}`,
      );
    }
    assert.throws(
      () => decodeSealedBlob(new Uint8Array([...file, 0])),
      (e: unknown) => e instanceof SealedBlobFormatError && /trailing/.test(e.message),
    );
    const version = Uint8Array.from(file);
    version[13] = 9;
    assert.throws(() => decodeSealedBlob(version), /version 9/);
    // A recorded PCR value altered: the values no longer give the object's policy.
    const blob = decodeSealedBlob(file);
    const values = new Map(blob.pcrValues);
    values.set(
      TPM_ALG.SHA256,
      new Map(
        [...blob.pcrValues.get(TPM_ALG.SHA256)!].map(([i, v]) => [
          i,
          i === 3 ? new Uint8Array(32).fill(0xa5) : v,
        ]),
      ),
    );
    await assert.rejects(
      unsealWithPcrs(tpm, SRK, { ...blob, pcrValues: values }),
      (e: unknown) => e instanceof SealedBlobFormatError && /altered/.test(e.message),
    );
    // The wrapped private part altered: the TPM's integrity check refuses it.
    const priv = Uint8Array.from(blob.private);
    priv[10]! ^= 0xff;
    await assert.rejects(unsealWithPcrs(tpm, SRK, { ...blob, private: priv }), SealedByOtherTpmError);
    await nothingLoaded(tpm);
  });
});
