// verifyCertify, checkAttestationKey and checkIdentityKey on keys and certifications from a private
// swtpm: the SRK at UMBRA_PERSISTENT.SRK, an AK (eccAttestationTemplate) certifying the gateway
// identity key (eccSigningTemplate), then each way a certification can fail; and verifyQuote's optional
// qualifiedSigner and AK-attribute checks, which refuse a quote signed by an unrestricted key.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { TPM_ALG, TPM_HT, TPM_SU, TPMA_OBJECT } from '../constants.ts';
import { Writer } from '../marshal.ts';
import { computeName } from '../name.ts';
import { openTransport } from '../open.ts';
import { ensureStorageKey } from '../storage-key.ts';
import { type PublicArea, publicKeyObject, writeSignature } from '../structures.ts';
import {
  eccAttestationTemplate,
  eccExternalPublic,
  eccSigningTemplate,
  eccStorageTemplate,
  rsaSigningTemplate,
  UMBRA_PERSISTENT,
} from '../templates.ts';
import { type Swtpm, startSwtpm } from '../testing/swtpm.ts';
import { type AttestResult, type ReadPublicResult, Tpm } from '../tpm.ts';
import { verifyCertify } from './certify.ts';
import { checkAttestationKey, checkIdentityKey } from './key-checks.ts';
import { verifyQuote } from './quote.ts';

const SRK = UMBRA_PERSISTENT.SRK;
type Loaded = ReadPublicResult & { readonly handle: number };
const PCRS = [{ hash: TPM_ALG.SHA256, pcrs: [0, 1, 2, 3, 4, 5, 6, 7] }];

function tpm2bPublic(publicBytes: Uint8Array): Uint8Array {
  return new Writer().tpm2b(publicBytes).finish();
}

describe('verifyCertify and the key checks over swtpm', () => {
  let swtpm: Swtpm;
  let tpm: Tpm;
  let ak: Loaded;
  let identity: Loaded;
  /** Created, not loaded (swtpm holds three objects: Create needs one for the SRK and one for the new key): its public area and Name. */
  let other: { publicBytes: Uint8Array; name: Uint8Array };
  const nonce = new Uint8Array(randomBytes(32));
  let certified: AttestResult;

  const loadUnder = async (template: PublicArea): Promise<Loaded> => {
    const created = await tpm.create(SRK, template);
    const { handle } = await tpm.load(SRK, created);
    const read = await tpm.readPublic(handle);
    return { handle, ...read };
  };

  before(async () => {
    swtpm = await startSwtpm();
    tpm = new Tpm(openTransport(swtpm.address));
    await tpm.startup(TPM_SU.CLEAR);
    await ensureStorageKey(tpm);
    const created = await tpm.create(SRK, eccSigningTemplate('P-256'));
    other = { publicBytes: created.publicBytes, name: computeName(TPM_ALG.SHA256, created.publicBytes) };
    ak = await loadUnder(eccAttestationTemplate());
    identity = await loadUnder(eccSigningTemplate('P-256'));
    certified = await tpm.certify(identity.handle, ak.handle, nonce);
  });

  after(async () => {
    for (const key of [ak, identity]) if (key) await tpm.flushContext(key.handle).catch(() => undefined);
    await tpm?.close();
    await swtpm?.stop();
  });

  const good = () => ({
    akPublic: tpm2bPublic(ak.publicBytes),
    attest: certified.attestBytes,
    signature: certified.signature,
    objectPublic: tpm2bPublic(identity.publicBytes),
    nonce,
  });

  test('a good certification: the identity key Name certified by the AK, in every input form', () => {
    for (const input of [
      good(),
      { ...good(), akPublic: ak.publicBytes, objectPublic: identity.publicBytes },
      {
        ...good(),
        akPublic: ak.publicArea,
        objectPublic: identity.publicArea,
        akQualifiedName: ak.qualifiedName,
      },
      {
        ...good(),
        akPublic: publicKeyObject(ak.publicArea),
        signature: sigBytes(certified),
      },
    ]) {
      const result = verifyCertify(input);
      assert.ok(result.ok, result.ok ? '' : result.reason);
      assert.deepEqual(result.certified.name, identity.name);
      assert.deepEqual(result.certified.qualifiedSigner, ak.qualifiedName);
      assert.deepEqual(checkIdentityKey(result.certified.objectPublic), []);
    }
  });

  test('refused: another nonce, another object, a flipped signature, another signer, a quote, bad magic, truncated', async () => {
    const expectFail = (input: Parameters<typeof verifyCertify>[0], code: string, pattern: RegExp) => {
      const result = verifyCertify(input);
      assert.equal(result.ok, false);
      if (!result.ok) {
        assert.equal(result.code, code, result.reason);
        assert.match(result.reason, pattern);
      }
    };
    expectFail({ ...good(), nonce: new Uint8Array(randomBytes(32)) }, 'nonce', /stale or replayed/);
    expectFail({ ...good(), objectPublic: other.publicBytes }, 'name', /another key was certified/);
    const flipped = sigBytes(certified);
    flipped[flipped.length - 3]! ^= 1;
    expectFail({ ...good(), signature: flipped }, 'signature', /does not verify/);
    expectFail({ ...good(), akQualifiedName: other.name }, 'signer', /qualifiedSigner/);
    // The identity key is not an AK: refused for its attributes before its signature is believed.
    const bySelf = await tpm.certify(identity.handle, identity.handle, nonce);
    expectFail(
      { ...good(), akPublic: identity.publicBytes, attest: bySelf.attestBytes, signature: bySelf.signature },
      'key',
      /restricted is not set/,
    );
    const quote = await tpm.quote(ak.handle, nonce, PCRS);
    expectFail(
      { ...good(), attest: quote.attestBytes, signature: quote.signature },
      'type',
      /ATTEST_QUOTE, not ATTEST_CERTIFY/,
    );
    const magic = Uint8Array.from(certified.attestBytes);
    magic[0] = 0;
    expectFail({ ...good(), attest: magic }, 'magic', /TPM_GENERATED_VALUE/);
    expectFail({ ...good(), attest: certified.attestBytes.subarray(0, 40) }, 'format', /needs/);
    expectFail(
      { ...good(), objectPublic: identity.publicBytes.subarray(0, 20) },
      'format',
      /object public area/,
    );
  });

  test('checkAttestationKey: the AK passes; a signing key, a storage key, an external key and garbage are refused with reasons', async () => {
    assert.deepEqual(checkAttestationKey(ak.publicArea), []);
    assert.deepEqual(checkAttestationKey(tpm2bPublic(ak.publicBytes)), []);
    assert.match(
      checkAttestationKey(identity.publicArea).join('; '),
      /restricted is not set: the key could sign arbitrary data/,
    );
    const storage = checkAttestationKey(eccStorageTemplate()).join('; ');
    assert.match(storage, /sign is not set/);
    assert.match(storage, /decrypt is set/);
    const external = checkAttestationKey(eccExternalPublic(publicKeyObject(ak.publicArea))).join('; ');
    for (const bit of ['fixedTPM', 'fixedParent', 'sensitiveDataOrigin', 'restricted'])
      assert.match(external, new RegExp(`${bit} is not set`));
    assert.match(checkAttestationKey(new Uint8Array([1, 2, 3])).join(), /does not parse/);
    const sha1 = { ...eccAttestationTemplate(), nameAlg: TPM_ALG.SHA1 };
    assert.match(checkAttestationKey(sha1).join(), /nameAlg is SHA1/);
  });

  test('checkIdentityKey: the identity key and an RSA-2048 signing key pass; an AK and a non-TPM key are refused', () => {
    assert.deepEqual(checkIdentityKey(identity.publicBytes), []);
    assert.deepEqual(checkIdentityKey(rsaSigningTemplate()), []);
    assert.match(checkIdentityKey(ak.publicArea).join(), /restricted is set/);
    const movable = {
      ...eccSigningTemplate('P-256'),
      objectAttributes: eccSigningTemplate('P-256').objectAttributes & ~TPMA_OBJECT.fixedTPM,
    };
    assert.match(
      checkIdentityKey(movable).join(),
      /fixedTPM is not set: the key may be duplicated to another TPM/,
    );
  });

  test('verifyQuote: qualifiedSigner checked when the AK qualified Name is given; an unrestricted signer refused on request', async () => {
    const { banks } = await tpm.pcrRead(PCRS);
    const quote = await tpm.quote(ak.handle, nonce, PCRS);
    const input = {
      attest: quote.attestBytes,
      signature: quote.signature,
      akPublic: ak.publicBytes,
      nonce,
      pcrs: banks,
      requireAttestationKey: true,
    };
    const ok = verifyQuote({ ...input, akQualifiedName: ak.qualifiedName });
    assert.ok(ok.ok, ok.ok ? '' : ok.reason);
    const wrong = verifyQuote({ ...input, akQualifiedName: identity.qualifiedName });
    assert.equal(wrong.ok ? 'ok' : wrong.code, 'signer');
    // A signing key quotes too (TPM2_Quote does not require a restricted key): its signature is good,
    // but such a key could equally sign a forged TPMS_ATTEST, so an AK check refuses it.
    const byIdentity = await tpm.quote(identity.handle, nonce, PCRS);
    const unchecked = verifyQuote({
      ...input,
      requireAttestationKey: false,
      akPublic: identity.publicBytes,
      attest: byIdentity.attestBytes,
      signature: byIdentity.signature,
    });
    assert.ok(unchecked.ok);
    const checked = verifyQuote({
      ...input,
      akPublic: identity.publicBytes,
      attest: byIdentity.attestBytes,
      signature: byIdentity.signature,
    });
    assert.equal(checked.ok ? 'ok' : checked.code, 'key');
    assert.match(checked.ok ? '' : checked.reason, /restricted is not set/);
  });

  test('only the two keys of this test are loaded', async () => {
    assert.deepEqual((await tpm.handles(TPM_HT.TRANSIENT)).sort(), [ak.handle, identity.handle].sort());
  });
});

function sigBytes(result: AttestResult): Uint8Array {
  const w = new Writer();
  writeSignature(w, result.signature);
  return w.finish();
}
