// NV reads, HMAC and policy sessions, and ActivateCredential against a private swtpm: the EK
// certificates read with NV_Read and compared with tpm2_nvread; PolicySecret(ENDORSEMENT) giving the
// TCG EK policy; an HMAC session authorizing Sign with a key's authValue (cpHash, rpHash); and the
// credential protocol in-process: makeCredential (verifier) to a TCG EK, ActivateCredential here.

import 'reflect-metadata';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { TPM_ALG, TPM_CC, TPM_HT, TPM_RH, TPM_SE, TPM_SU, TPMA_NV } from './constants.ts';
import { Writer } from './marshal.ts';
import { computeName } from './name.ts';
import { openTransport } from './open.ts';
import { TPM_RC, TpmError } from './response-code.ts';
import { passwordSession } from './session.ts';
import { type PublicArea, publicKeyObject, writeNvPublic, writePcrSelections } from './structures.ts';
import {
  EK_POLICY_SHA256,
  eccAttestationTemplate,
  eccEkTemplate,
  eccSigningTemplate,
  eccStorageTemplate,
  rsaEkTemplate,
} from './templates.ts';
import { SWTPM_SETUP, type Swtpm, startSwtpm } from './testing/swtpm.ts';
import { type CreatePrimaryResult, type LoadResult, Tpm } from './tpm.ts';
import { parseEkCertificate } from './verifier/ek-certificate.ts';
import { fromTpm2ToolsCredentialFile, makeCredential } from './verifier/make-credential.ts';

const run = promisify(execFile);

const EK_TEMPLATES = [
  ['RSA-2048', rsaEkTemplate],
  ['ECC P-256', eccEkTemplate],
] as const;

describe('NV, sessions and ActivateCredential over swtpm', () => {
  let swtpm: Swtpm;
  let tpm: Tpm;

  const tool = async (name: string, args: string[]) => {
    const { stdout } = await run(name, args, {
      env: { ...process.env, TPM2TOOLS_TCTI: swtpm.tcti },
      encoding: 'buffer',
    });
    return new Uint8Array(stdout);
  };

  before(async () => {
    swtpm = await startSwtpm();
    tpm = new Tpm(openTransport(swtpm.address));
    await tpm.startup(TPM_SU.CLEAR);
  });

  after(async () => {
    await tpm?.close();
    await swtpm?.stop();
  });

  test('NV_ReadPublic: the EK certificate index, its Name = nameAlg ‖ H(TPMS_NV_PUBLIC), as tpm2_nvreadpublic says', async () => {
    const { nvPublic, nvPublicBytes, name } = await tpm.nvReadPublic(SWTPM_SETUP.RSA_EK_CERT_NV_INDEX);
    assert.equal(nvPublic.nvIndex, SWTPM_SETUP.RSA_EK_CERT_NV_INDEX);
    assert.equal(nvPublic.nameAlg, TPM_ALG.SHA256);
    assert.ok(nvPublic.attributes & TPMA_NV.WRITTEN);
    assert.ok(nvPublic.attributes & TPMA_NV.AUTHREAD);
    assert.ok(nvPublic.dataSize > 300);
    const w = new Writer();
    writeNvPublic(w, nvPublic);
    assert.deepEqual(w.finish(), nvPublicBytes);
    assert.deepEqual(name, computeName(TPM_ALG.SHA256, nvPublicBytes));
    const text = Buffer.from(await tool('tpm2_nvreadpublic', ['0x1c00002'])).toString();
    assert.match(text, new RegExp(`name: ${Buffer.from(name).toString('hex')}`, 'i'));
  });

  test('NV_Read: the RSA and ECC EK certificates, in NV_BUFFER_MAX pieces, equal tpm2_nvread and parse', async () => {
    for (const index of [SWTPM_SETUP.RSA_EK_CERT_NV_INDEX, SWTPM_SETUP.ECC_EK_CERT_NV_INDEX]) {
      const ours = await tpm.nvRead(index);
      const { nvPublic } = await tpm.nvReadPublic(index);
      assert.equal(ours.length, nvPublic.dataSize);
      assert.ok(ours.length > 0x12c, 'more than one NV_BUFFER_MAX piece');
      assert.deepEqual(ours, await tool('tpm2_nvread', [`0x${index.toString(16)}`]));
      const cert = parseEkCertificate(ours);
      assert.equal(
        cert.publicKey.asymmetricKeyType,
        index === SWTPM_SETUP.RSA_EK_CERT_NV_INDEX ? 'rsa' : 'ec',
      );
      // Owner authorization reads it too, and a window across a piece boundary is that slice.
      const owner = await tpm.nvRead(index, { authHandle: TPM_RH.OWNER, offset: 250, size: 400 });
      assert.deepEqual(owner, ours.subarray(250, 650));
    }
  });

  test('NV_Read past the end of the index is refused, named', async () => {
    const { nvPublic } = await tpm.nvReadPublic(SWTPM_SETUP.RSA_EK_CERT_NV_INDEX);
    await assert.rejects(
      tpm.nvRead(SWTPM_SETUP.RSA_EK_CERT_NV_INDEX, { offset: nvPublic.dataSize - 1, size: 2 }),
      (error: unknown) => error instanceof TpmError && error.message.startsWith('TPM2_NV_Read:'),
    );
  });

  test('the RSA EK certificate certifies the key the TCG template L-1 makes under the endorsement hierarchy', async () => {
    const cert = parseEkCertificate(await tpm.nvRead(SWTPM_SETUP.RSA_EK_CERT_NV_INDEX));
    const ek = await tpm.createPrimary(TPM_RH.ENDORSEMENT, rsaEkTemplate());
    await tpm.flushContext(ek.handle);
    assert.deepEqual(ek.publicArea.authPolicy, EK_POLICY_SHA256);
    assert.equal(
      publicKeyObject(ek.publicArea).export({ format: 'der', type: 'spki' }).toString('hex'),
      cert.publicKey.export({ format: 'der', type: 'spki' }).toString('hex'),
    );
  });

  test('policy sessions: PolicySecret(ENDORSEMENT) gives the TCG EK policy; PolicyPCR as computed in software', async () => {
    const digest = await tpm.withSession(TPM_SE.POLICY, async (session) => {
      assert.equal(session.handle >>> 24, TPM_HT.POLICY_SESSION);
      assert.deepEqual(await tpm.policyGetDigest(session), new Uint8Array(32));
      const { ticket } = await tpm.policySecret(TPM_RH.ENDORSEMENT, session);
      assert.equal(ticket.hierarchy, TPM_RH.NULL); // no expiration: a NULL ticket
      return tpm.policyGetDigest(session);
    });
    assert.deepEqual(digest, EK_POLICY_SHA256);

    const pcrs = [{ hash: TPM_ALG.SHA256, pcrs: [0, 1, 2, 3, 7] }];
    const values = (await tpm.pcrRead(pcrs)).banks.get(TPM_ALG.SHA256)!;
    const pcrDigest = createHash('sha256')
      .update(Buffer.concat(pcrs[0]!.pcrs.map((i) => values.get(i)!)))
      .digest();
    const selection = new Writer();
    writePcrSelections(selection, pcrs);
    const expected = createHash('sha256')
      .update(new Uint8Array(32))
      .update(new Writer().u32(TPM_CC.PolicyPCR).finish())
      .update(selection.finish())
      .update(pcrDigest)
      .digest();
    for (const type of [TPM_SE.POLICY, TPM_SE.TRIAL]) {
      const got = await tpm.withSession(type, async (session) => {
        await tpm.policyPcr(session, pcrs);
        return tpm.policyGetDigest(session);
      });
      assert.deepEqual(got, new Uint8Array(expected));
    }
    assert.deepEqual(await tpm.handles(TPM_HT.POLICY_SESSION), []);
  });

  test('an HMAC session authorizes Sign with a key authValue (cpHash over the Names, rpHash checked), and a wrong one fails', async () => {
    const userAuth = new Uint8Array(randomBytes(16));
    const srk = await tpm.createPrimary(TPM_RH.OWNER, eccStorageTemplate());
    await tpm.withTransient(srk.handle, async (parent) => {
      const key = await tpm.create(parent, eccSigningTemplate('P-256'), { userAuth });
      const loaded = await tpm.load(parent, key);
      await tpm.withTransient(loaded.handle, async (handle) => {
        const digest = new Uint8Array(randomBytes(32));
        await tpm.withSession(TPM_SE.HMAC, async (session) => {
          session.authValue = userAuth;
          assert.equal(session.needsNames, true);
          // Two commands in one session: the nonces roll over.
          for (let i = 0; i < 2; i++)
            await tpm.sign(handle, digest, { scheme: TPM_ALG.ECDSA, hashAlg: TPM_ALG.SHA256 }, session);
        });
        await tpm.withSession(TPM_SE.HMAC, async (session) => {
          session.authValue = new Uint8Array(randomBytes(16));
          await assert.rejects(
            tpm.sign(handle, digest, { scheme: TPM_ALG.ECDSA, hashAlg: TPM_ALG.SHA256 }, session),
            (error: unknown) => error instanceof TpmError && error.base === TPM_RC.AUTH_FAIL,
          );
        });
      });
    });
    assert.deepEqual(await tpm.handles(TPM_HT.HMAC_SESSION), []);
  });

  /**
   * A TCG EK from `template` and an AK under a transient SRK (flushed once the AK is loaded), both
   * loaded for `fn` and flushed after it.
   */
  const withEkAndAk = async (
    template: () => PublicArea,
    fn: (ek: CreatePrimaryResult, ak: LoadResult) => Promise<void>,
  ) => {
    const ek = await tpm.createPrimary(TPM_RH.ENDORSEMENT, template());
    await tpm.withTransient(ek.handle, async () => {
      const srk = await tpm.createPrimary(TPM_RH.OWNER, eccStorageTemplate());
      const ak = await tpm.withTransient(srk.handle, async (parent) =>
        tpm.load(parent, await tpm.create(parent, eccAttestationTemplate())),
      );
      await tpm.withTransient(ak.handle, () => fn(ek, ak));
    });
  };

  /** ActivateCredential with the EK's policy met: PolicySecret(ENDORSEMENT) in a policy session. */
  const activate = (
    ak: LoadResult,
    ek: CreatePrimaryResult,
    credential: { readonly credentialBlob: Uint8Array; readonly encryptedSecret: Uint8Array },
  ) =>
    tpm.withSession(TPM_SE.POLICY, async (session) => {
      await tpm.policySecret(TPM_RH.ENDORSEMENT, session);
      return tpm.activateCredential(
        ak.handle,
        ek.handle,
        credential.credentialBlob,
        credential.encryptedSecret,
        passwordSession(),
        session,
      );
    });

  for (const [label, template] of EK_TEMPLATES) {
    test(`ActivateCredential: makeCredential to a TCG ${label} EK for the AK's Name, recovered in-process`, async () => {
      await withEkAndAk(template, async (ek, ak) => {
        const secret = new Uint8Array(randomBytes(32));
        const credential = makeCredential(ek.publicBytes, ak.name, secret);
        assert.deepEqual(await activate(ak, ek, credential), secret);

        // Made for another Name: the TPM's integrity check refuses it.
        const other = makeCredential(ek.publicBytes, computeName(TPM_ALG.SHA256, randomBytes(8)), secret);
        await assert.rejects(
          activate(ak, ek, other),
          (error: unknown) =>
            error instanceof TpmError && error.message.startsWith('TPM2_ActivateCredential:'),
        );
        // Without PolicySecret the EK's policy is not met.
        await assert.rejects(
          tpm.withSession(TPM_SE.POLICY, (session) =>
            tpm.activateCredential(
              ak.handle,
              ek.handle,
              credential.credentialBlob,
              credential.encryptedSecret,
              passwordSession(),
              session,
            ),
          ),
          (error: unknown) => error instanceof TpmError && error.base === TPM_RC.POLICY_FAIL,
        );
      });
    });
  }

  for (const [label, template] of EK_TEMPLATES) {
    test(`ActivateCredential: tpm2_makecredential's credential for our AK (${label} EK) is recovered in-process`, async () => {
      const work = mkdtempSync(join(tmpdir(), 'umbra-makecred-'));
      try {
        await withEkAndAk(template, async (ek, ak) => {
          // tpm2-tools reads the EK as a TPM2B_PUBLIC and the AK by its Name in hex.
          writeFileSync(join(work, 'ek.pub'), new Writer().tpm2b(ek.publicBytes).finish());
          const secret = new Uint8Array(randomBytes(32));
          writeFileSync(join(work, 'secret.bin'), secret);
          await run('tpm2_makecredential', [
            '-T',
            'none',
            '-u',
            join(work, 'ek.pub'),
            '-s',
            join(work, 'secret.bin'),
            '-n',
            Buffer.from(ak.name).toString('hex'),
            '-o',
            join(work, 'theirs.cred'),
          ]);
          const theirs = fromTpm2ToolsCredentialFile(new Uint8Array(readFileSync(join(work, 'theirs.cred'))));
          assert.deepEqual(await activate(ak, ek, theirs), secret);
        });
      } finally {
        rmSync(work, { recursive: true, force: true });
      }
    });
  }

  test('nothing is left loaded', async () => {
    assert.deepEqual(await tpm.handles(TPM_HT.TRANSIENT), []);
    assert.deepEqual(await tpm.handles(TPM_HT.HMAC_SESSION), []);
    assert.deepEqual(await tpm.handles(TPM_HT.POLICY_SESSION), []);
  });
});
