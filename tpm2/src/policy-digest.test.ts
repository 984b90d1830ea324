// The software policy calculator against the TPM's own: each assertion (PolicyPCR, PolicySecret,
// PolicyAuthValue, PolicyOR), alone and chained, run on a trial or policy session of swtpm in SHA-256
// and SHA-384, must give the PolicyGetDigest the TPM gives.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { TPM_ALG, TPM_HT, TPM_RH, TPM_SE, TPM_SU } from './constants.ts';
import { openTransport } from './open.ts';
import { PolicyDigest, pcrValuesDigest } from './policy-digest.ts';
import { TPM_RC, TpmError } from './response-code.ts';
import type { AuthSession } from './session.ts';
import { ensureStorageKey } from './storage-key.ts';
import type { PcrSelection } from './structures.ts';
import { EK_POLICY_SHA256, UMBRA_PERSISTENT } from './templates.ts';
import { type Swtpm, startSwtpm } from './testing/swtpm.ts';
import { Tpm } from './tpm.ts';

const HASHES = [
  ['SHA-256', TPM_ALG.SHA256],
  ['SHA-384', TPM_ALG.SHA384],
] as const;

describe('policy digests computed in software equal the TPM trial sessions', () => {
  let swtpm: Swtpm;
  let tpm: Tpm;

  const onTpm = (type: number, hashAlg: number, steps: (s: AuthSession) => Promise<void>) =>
    tpm.withSession(
      type,
      async (session) => {
        await steps(session);
        return tpm.policyGetDigest(session);
      },
      hashAlg,
    );

  before(async () => {
    swtpm = await startSwtpm();
    tpm = new Tpm(openTransport(swtpm.address));
    await tpm.startup(TPM_SU.CLEAR);
    // PCRs that are not all zeros, so that order and selection matter.
    for (const pcr of [0, 7, 16])
      await tpm.pcrExtend(pcr, [
        { hash: TPM_ALG.SHA256, digest: new Uint8Array(randomBytes(32)) },
        { hash: TPM_ALG.SHA384, digest: new Uint8Array(randomBytes(48)) },
      ]);
  });

  after(async () => {
    await tpm?.close();
    await swtpm?.stop();
  });

  for (const [label, hashAlg] of HASHES) {
    test(`PolicyPCR (${label} session) over sha256 and sha384 banks, from PCR_Read values`, async () => {
      const selection: PcrSelection[] = [
        { hash: TPM_ALG.SHA256, pcrs: [0, 1, 7, 16] },
        { hash: TPM_ALG.SHA384, pcrs: [0, 7] },
      ];
      const { banks } = await tpm.pcrRead(selection);
      const expected = new PolicyDigest(hashAlg).pcrValues(selection, banks).digest;
      assert.deepEqual(await onTpm(TPM_SE.TRIAL, hashAlg, (s) => tpm.policyPcr(s, selection)), expected);
      // With the pcrDigest given explicitly, a real policy session checks it against the PCRs.
      const pcrDigest = pcrValuesDigest(hashAlg, selection, banks);
      assert.deepEqual(
        await onTpm(TPM_SE.POLICY, hashAlg, (s) => tpm.policyPcr(s, selection, pcrDigest)),
        expected,
      );
      await assert.rejects(
        onTpm(TPM_SE.POLICY, hashAlg, (s) => tpm.policyPcr(s, selection, new Uint8Array(pcrDigest.length))),
        (e: unknown) => e instanceof TpmError && e.base === TPM_RC.VALUE,
      );
    });

    test(`PolicySecret (${label}): a hierarchy, with and without policyRef, and a persistent key's Name`, async () => {
      const policyRef = new Uint8Array(randomBytes(8));
      assert.deepEqual(
        await onTpm(TPM_SE.TRIAL, hashAlg, async (s) => void (await tpm.policySecret(TPM_RH.ENDORSEMENT, s))),
        new PolicyDigest(hashAlg).secret(await tpm.nameOf(TPM_RH.ENDORSEMENT)).digest,
      );
      assert.deepEqual(
        await onTpm(
          TPM_SE.TRIAL,
          hashAlg,
          async (s) => void (await tpm.policySecret(TPM_RH.OWNER, s, undefined, policyRef)),
        ),
        new PolicyDigest(hashAlg).secret(await tpm.nameOf(TPM_RH.OWNER), policyRef).digest,
      );
      const srk = await ensureStorageKey(tpm);
      assert.deepEqual(
        await onTpm(
          TPM_SE.POLICY,
          hashAlg,
          async (s) => void (await tpm.policySecret(UMBRA_PERSISTENT.SRK, s)),
        ),
        new PolicyDigest(hashAlg).secret(srk.name).digest,
      );
    });

    test(`PolicyAuthValue (${label}) alone and after PolicyPCR`, async () => {
      assert.deepEqual(
        await onTpm(TPM_SE.TRIAL, hashAlg, (s) => tpm.policyAuthValue(s)),
        new PolicyDigest(hashAlg).authValue().digest,
      );
      const selection = [{ hash: TPM_ALG.SHA256, pcrs: [7] }];
      const { banks } = await tpm.pcrRead(selection);
      assert.deepEqual(
        await onTpm(TPM_SE.TRIAL, hashAlg, async (s) => {
          await tpm.policyPcr(s, selection);
          await tpm.policyAuthValue(s);
        }),
        new PolicyDigest(hashAlg).pcrValues(selection, banks).authValue().digest,
      );
    });

    test(`PolicyOR (${label}): either branch gives the OR digest; a digest outside the branches is refused`, async () => {
      const selection = [{ hash: TPM_ALG.SHA256, pcrs: [0, 7] }];
      const { banks } = await tpm.pcrRead(selection);
      const pcrBranch = new PolicyDigest(hashAlg).pcrValues(selection, banks).digest;
      const authBranch = new PolicyDigest(hashAlg).authValue().digest;
      const secretBranch = new PolicyDigest(hashAlg).secret(await tpm.nameOf(TPM_RH.OWNER)).digest;
      const branches = [pcrBranch, authBranch, secretBranch];
      const expected = new PolicyDigest(hashAlg).or(branches).digest;
      assert.deepEqual(
        await onTpm(TPM_SE.POLICY, hashAlg, async (s) => {
          await tpm.policyPcr(s, selection);
          await tpm.policyOr(s, branches);
        }),
        expected,
      );
      assert.deepEqual(
        await onTpm(TPM_SE.POLICY, hashAlg, async (s) => {
          await tpm.policyAuthValue(s);
          await tpm.policyOr(s, branches);
        }),
        expected,
      );
      assert.deepEqual(await onTpm(TPM_SE.TRIAL, hashAlg, (s) => tpm.policyOr(s, branches)), expected);
      await assert.rejects(
        onTpm(TPM_SE.POLICY, hashAlg, (s) => tpm.policyOr(s, [pcrBranch, secretBranch])),
        (e: unknown) => e instanceof TpmError && e.base === TPM_RC.VALUE,
      );
    });
  }

  test('the TCG EK policy is PolicySecret(TPM_RH_ENDORSEMENT) in SHA-256', () => {
    const endorsementName = Uint8Array.of(0x40, 0x00, 0x00, 0x0b);
    assert.deepEqual(new PolicyDigest(TPM_ALG.SHA256).secret(endorsementName).digest, EK_POLICY_SHA256);
  });

  test('bad inputs are refused before any hashing', () => {
    assert.throws(() => new PolicyDigest(TPM_ALG.SHA256).or([new Uint8Array(32)]), /2 to 8/);
    assert.throws(
      () => new PolicyDigest(TPM_ALG.SHA256).or([new Uint8Array(32), new Uint8Array(48)]),
      /48 bytes/,
    );
    assert.throws(
      () => new PolicyDigest(TPM_ALG.SHA256).pcr([], new Uint8Array(48)),
      /pcrDigest is 48 bytes/,
    );
    assert.throws(
      () => pcrValuesDigest(TPM_ALG.SHA256, [{ hash: TPM_ALG.SHA256, pcrs: [3] }], new Map()),
      /PCR 3/,
    );
  });

  test('nothing is left loaded', async () => {
    assert.deepEqual(await tpm.handles(TPM_HT.TRANSIENT), []);
    assert.deepEqual(await tpm.handles(TPM_HT.POLICY_SESSION), []);
  });
});
