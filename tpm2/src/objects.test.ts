// Keys under a storage primary, persistence, external keys and signature checks in the TPM, and
// attestation (Quote, Certify) against a private swtpm, cross-checked with node:crypto and
// tpm2_checkquote. Every transient is flushed and every persistent handle made here is evicted.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, generateKeyPairSync, sign, verify } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { TPM_ALG, TPM_ECC, TPM_HT, TPM_RH, TPM_ST, TPM_SU, TPMA_OBJECT } from './constants.ts';
import { Writer } from './marshal.ts';
import { computeName } from './name.ts';
import { openTransport } from './open.ts';
import { TPM_RC, TpmError } from './response-code.ts';
import {
  ecdsaSignatureP1363,
  publicKeyObject,
  type Signature,
  TPM_GENERATED_VALUE,
  writePublicArea,
  writeSignature,
} from './structures.ts';
import {
  eccAttestationTemplate,
  eccExternalPublic,
  eccSigningTemplate,
  eccStorageTemplate,
  UMBRA_PERSISTENT,
} from './templates.ts';
import { type Swtpm, startSwtpm } from './testing/swtpm.ts';
import { Tpm } from './tpm.ts';

const run = promisify(execFile);
const PCRS_0_7 = [0, 1, 2, 3, 4, 5, 6, 7];

/**
 * PCR values as tpm2-tools' `tpm2_pcrread -F serialized` writes them: not TPM marshalling but the
 * tss2 C structures dumped in host (little-endian) order: TPML_PCR_SELECTION (count, 16 slots of
 * hash u16, sizeofSelect u8, pcrSelect[4], one byte of padding), a u32 count of TPML_DIGESTs, then
 * each TPML_DIGEST (count, 8 slots of TPM2B_DIGEST: size u16, buffer[64]).
 */
function toolsSerializedPcrs(hash: number, pcrs: readonly number[], values: readonly Uint8Array[]): Buffer {
  if (pcrs.length > 8) throw new Error('one TPML_DIGEST holds 8 PCRs');
  const out = Buffer.alloc(4 + 16 * 8 + 4 + 4 + 8 * 66);
  out.writeUInt32LE(1, 0);
  out.writeUInt16LE(hash, 4);
  out.writeUInt8(3, 6);
  for (const pcr of pcrs) out[7 + (pcr >> 3)]! |= 1 << (pcr & 7);
  out.writeUInt32LE(1, 132);
  out.writeUInt32LE(values.length, 136);
  values.forEach((v, i) => {
    out.writeUInt16LE(v.length, 140 + i * 66);
    out.set(v, 142 + i * 66);
  });
  return out;
}

describe('keys and attestation over swtpm', () => {
  let swtpm: Swtpm;
  let tpm: Tpm;
  let srk: number;

  before(async () => {
    swtpm = await startSwtpm();
    tpm = new Tpm(openTransport(swtpm.address));
    await tpm.startup(TPM_SU.CLEAR);
    srk = (await tpm.createPrimary(TPM_RH.OWNER, eccStorageTemplate())).handle;
  });

  after(async () => {
    if (srk) await tpm?.flushContext(srk).catch(() => undefined);
    await tpm?.close();
    await swtpm?.stop();
  });

  /** Creates a child of the SRK, loads it, runs `fn`, flushes it. */
  async function withChild<T>(
    template: ReturnType<typeof eccSigningTemplate>,
    fn: (handle: number, created: Awaited<ReturnType<Tpm['create']>>) => Promise<T>,
  ): Promise<T> {
    const created = await tpm.create(srk, template);
    return tpm.withTransient(
      tpm.load(srk, created).then((l) => l.handle),
      (handle) => fn(handle, created),
    );
  }

  test('Create an ECC P-256 signing key under an ECC storage primary, Load it, sign, verify with node:crypto', async () => {
    const created = await tpm.create(srk, eccSigningTemplate('P-256'));
    assert.ok(created.private.length > 32);
    assert.equal(created.publicArea.type, TPM_ALG.ECC);
    const loaded = await tpm.load(srk, created);
    await tpm.withTransient(loaded.handle, async (handle) => {
      assert.equal(handle >>> 24, TPM_HT.TRANSIENT);
      assert.deepEqual(loaded.name, computeName(TPM_ALG.SHA256, created.publicBytes));
      const read = await tpm.readPublic(handle);
      assert.deepEqual(read.name, loaded.name);
      const digest = createHash('sha256').update('child').digest();
      const signature = await tpm.sign(handle, digest, { scheme: TPM_ALG.ECDSA, hashAlg: TPM_ALG.SHA256 });
      const key = publicKeyObject(created.publicArea);
      assert.ok(
        verify(
          'sha256',
          Buffer.from('child'),
          { key, dsaEncoding: 'ieee-p1363' },
          ecdsaSignatureP1363(signature, TPM_ECC.NIST_P256),
        ),
      );
      // The TPM verifies its own signature too, and refuses it over another digest.
      const ticket = await tpm.verifySignature(handle, digest, signature);
      assert.equal(ticket.tag, TPM_ST.VERIFIED);
      await assert.rejects(tpm.verifySignature(handle, new Uint8Array(32), signature), (error: unknown) => {
        assert.ok(error instanceof TpmError);
        assert.equal(error.base, TPM_RC.SIGNATURE);
        assert.match(error.message, /^TPM2_VerifySignature: parameter 2: TPM_RC_SIGNATURE/);
        return true;
      });
    });
    // Two Creates from one template are two different keys (unlike CreatePrimary).
    const other = await tpm.create(srk, eccSigningTemplate('P-256'));
    assert.notDeepEqual(other.publicBytes, created.publicBytes);
  });

  test('a restricted attestation key is created and loaded; it refuses to Sign an outside digest', async () => {
    await withChild(eccAttestationTemplate(), async (handle, created) => {
      assert.ok(created.publicArea.objectAttributes & TPMA_OBJECT.restricted);
      await assert.rejects(
        tpm.sign(handle, new Uint8Array(32), { scheme: TPM_ALG.NULL }),
        (error: unknown) => error instanceof TpmError && /^TPM2_Sign: /.test(error.message),
      );
    });
  });

  test('Load with a wrong parent fails and leaves nothing loaded', async () => {
    const created = await tpm.create(srk, eccSigningTemplate('P-256'));
    const other = await tpm.createPrimary(TPM_RH.OWNER, {
      ...eccStorageTemplate(),
      authPolicy: new Uint8Array(32),
    });
    await tpm.withTransient(other.handle, async (parent) => {
      await assert.rejects(tpm.load(parent, created), (error: unknown) => {
        assert.ok(error instanceof TpmError);
        assert.match(error.message, /^TPM2_Load: /);
        return true;
      });
    });
    assert.deepEqual(await tpm.handles(TPM_HT.TRANSIENT), [srk]);
  });

  test('EvictControl persists the AK at its documented handle, ReadPublic there agrees, and evicts it', async () => {
    await withChild(eccAttestationTemplate(), async (handle, created) => {
      const persistent = UMBRA_PERSISTENT.AK;
      assert.ok(!(await tpm.handles(TPM_HT.PERSISTENT)).includes(persistent));
      await tpm.evictControl(handle, persistent);
      try {
        assert.ok((await tpm.handles(TPM_HT.PERSISTENT)).includes(persistent));
        const read = await tpm.readPublic(persistent);
        assert.deepEqual(read.publicBytes, created.publicBytes);
        // Taken: a second persist to the same handle is refused.
        await assert.rejects(tpm.evictControl(handle, persistent), (error: unknown) => {
          assert.ok(error instanceof TpmError);
          assert.equal(error.base, TPM_RC.NV_DEFINED);
          return true;
        });
        // The persistent copy quotes as the transient one would.
        const quote = await tpm.quote(persistent, new Uint8Array(8), [{ hash: TPM_ALG.SHA256, pcrs: [0] }]);
        assert.deepEqual(quote.attest.extraData, new Uint8Array(8));
      } finally {
        await tpm.evictControl(persistent, persistent);
      }
      assert.ok(!(await tpm.handles(TPM_HT.PERSISTENT)).includes(persistent));
      await assert.rejects(tpm.readPublic(persistent), TpmError);
    });
  });

  test('LoadExternal of a node:crypto public key in the NULL hierarchy; VerifySignature of its ECDSA signature', async () => {
    const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const pub = eccExternalPublic(publicKey);
    const loaded = await tpm.loadExternal(pub);
    await tpm.withTransient(loaded.handle, async (handle) => {
      const w = new Writer();
      writePublicArea(w, pub);
      assert.deepEqual(loaded.name, computeName(TPM_ALG.SHA256, w.finish()));
      const message = Buffer.from('signed outside the TPM');
      const p1363 = sign('sha256', message, { key: privateKey, dsaEncoding: 'ieee-p1363' });
      const signature: Signature = {
        sigAlg: TPM_ALG.ECDSA,
        hash: TPM_ALG.SHA256,
        r: p1363.subarray(0, 32),
        s: p1363.subarray(32),
      };
      const digest = createHash('sha256').update(message).digest();
      const ticket = await tpm.verifySignature(handle, digest, signature);
      assert.equal(ticket.tag, TPM_ST.VERIFIED);
      assert.equal(ticket.hierarchy, TPM_RH.NULL);
      const bad = { ...signature, s: Buffer.from(p1363.subarray(32)).fill(1, 0, 1) };
      await assert.rejects(tpm.verifySignature(handle, digest, bad), TpmError);
    });
  });

  test('Quote PCRs 0-7 (SHA-256) with a nonce: signature, nonce and PCR digest check out with node:crypto; tpm2_checkquote agrees', async () => {
    await withChild(eccAttestationTemplate(), async (handle, created) => {
      const nonce = await tpm.getRandom(32);
      const selection = [{ hash: TPM_ALG.SHA256, pcrs: PCRS_0_7 }];
      const { attestBytes, attest, signature } = await tpm.quote(handle, nonce, selection);

      assert.equal(attest.magic, TPM_GENERATED_VALUE);
      assert.deepEqual(attest.extraData, nonce);
      const { qualifiedName } = await tpm.readPublic(handle);
      assert.deepEqual(attest.qualifiedSigner, qualifiedName);
      assert.ok(attest.clockInfo.clock > 0n);
      assert.equal(attest.clockInfo.safe, true);
      assert.equal(typeof attest.clockInfo.resetCount, 'number');
      assert.equal(attest.attested.type, TPM_ST.ATTEST_QUOTE);
      if (attest.attested.type !== TPM_ST.ATTEST_QUOTE) return;
      assert.deepEqual(attest.attested.pcrSelect, selection);

      const { banks } = await tpm.pcrRead(selection);
      const values = PCRS_0_7.map((i) => banks.get(TPM_ALG.SHA256)!.get(i)!);
      const expected = createHash('sha256').update(Buffer.concat(values)).digest();
      assert.deepEqual(attest.attested.pcrDigest, new Uint8Array(expected));

      const key = publicKeyObject(created.publicArea);
      const p1363 = ecdsaSignatureP1363(signature, TPM_ECC.NIST_P256);
      assert.ok(verify('sha256', attestBytes, { key, dsaEncoding: 'ieee-p1363' }, p1363));
      const tampered = Buffer.from(attestBytes);
      tampered[tampered.length - 1]! ^= 1;
      assert.ok(!verify('sha256', tampered, { key, dsaEncoding: 'ieee-p1363' }, p1363));

      // tpm2_checkquote: TPMS_ATTEST as -m, TPMT_SIGNATURE as -s, the AK as PEM, and the PCRs as -f in
      // tpm2_pcrread's "serialized" form (its plain "values" form fails in tpm2-tools 5.4 with "Failed
      // to hash PCR values related to quote").
      const dir = mkdtempSync(join(tmpdir(), 'umbra-quote-'));
      try {
        const w = new Writer();
        writeSignature(w, signature);
        writeFileSync(join(dir, 'attest.bin'), attestBytes);
        writeFileSync(join(dir, 'sig.bin'), w.finish());
        writeFileSync(join(dir, 'ak.pem'), key.export({ format: 'pem', type: 'spki' }));
        const pcrFile = toolsSerializedPcrs(TPM_ALG.SHA256, PCRS_0_7, values);
        writeFileSync(join(dir, 'pcrs.bin'), pcrFile);
        // Our file is byte for byte what tpm2_pcrread writes for the same PCRs.
        await run(
          'tpm2_pcrread',
          ['sha256:0,1,2,3,4,5,6,7', '-F', 'serialized', '-o', join(dir, 'tools.bin')],
          {
            env: { ...process.env, TPM2TOOLS_TCTI: swtpm.tcti },
          },
        );
        assert.deepEqual(readFileSync(join(dir, 'tools.bin')), pcrFile);
        const args = ['-u', join(dir, 'ak.pem'), '-m', join(dir, 'attest.bin'), '-s', join(dir, 'sig.bin')];
        args.push('-g', 'sha256', '-q', Buffer.from(nonce).toString('hex'));
        args.push('-f', join(dir, 'pcrs.bin'));
        await run('tpm2_checkquote', args);
        // A different nonce is refused, and so are other PCR values.
        const otherPcrs = [...args];
        const changed = toolsSerializedPcrs(
          TPM_ALG.SHA256,
          PCRS_0_7,
          values.map(() => new Uint8Array(32).fill(7)),
        );
        writeFileSync(join(dir, 'other.bin'), changed);
        otherPcrs[otherPcrs.indexOf('-f') + 1] = join(dir, 'other.bin');
        await assert.rejects(run('tpm2_checkquote', otherPcrs));
        const wrong = [...args];
        wrong[wrong.indexOf('-q') + 1] = '00'.repeat(32);
        await assert.rejects(run('tpm2_checkquote', wrong));
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });

  test('Certify: the AK signs that a child signing key is loaded in this TPM, with its Name', async () => {
    await withChild(eccAttestationTemplate(), async (ak, akCreated) => {
      await withChild(eccSigningTemplate('P-256'), async (key, keyCreated) => {
        const nonce = new Uint8Array([1, 2, 3, 4]);
        const { attestBytes, attest, signature } = await tpm.certify(key, ak, nonce);
        assert.equal(attest.attested.type, TPM_ST.ATTEST_CERTIFY);
        if (attest.attested.type !== TPM_ST.ATTEST_CERTIFY) return;
        assert.deepEqual(attest.attested.name, computeName(TPM_ALG.SHA256, keyCreated.publicBytes));
        assert.deepEqual(attest.attested.qualifiedName, (await tpm.readPublic(key)).qualifiedName);
        assert.deepEqual(attest.extraData, nonce);
        assert.ok(
          verify(
            'sha256',
            attestBytes,
            { key: publicKeyObject(akCreated.publicArea), dsaEncoding: 'ieee-p1363' },
            ecdsaSignatureP1363(signature, TPM_ECC.NIST_P256),
          ),
        );
      });
    });
  });

  test('no transient but the SRK is left, and no persistent handle of ours', async () => {
    assert.deepEqual(await tpm.handles(TPM_HT.TRANSIENT), [srk]);
    const persistent = await tpm.handles(TPM_HT.PERSISTENT);
    for (const h of Object.values(UMBRA_PERSISTENT)) assert.ok(!persistent.includes(h));
  });
});
