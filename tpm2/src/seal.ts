// Secrets sealed to the boot state: a KEYEDHASH object under the SRK whose authPolicy is PolicyPCR
// over the PCR values at sealing time. Only this TPM can load it (its private part is wrapped by this
// SRK's seed), and only while those PCRs hold the same values can a policy session unseal it: a disk
// moved to another box, or booted into other firmware, cannot get the secret back.
//
// The object's attributes: fixedTPM and fixedParent (no duplication), no userWithAuth (its empty
// authValue opens nothing in the USER role: a policy session is needed), adminWithPolicy (nor in the
// ADMIN role), noDA (a failed policy is not a dictionary attack), no sensitiveDataOrigin (we provide the
// data). A TPM seals at most 128 bytes (MAX_SYM_DATA); a longer secret is encrypted with AES-256-GCM
// under a random key and that key is sealed (the ciphertext travels in the blob).
//
// A SealedBlob is stored as bytes (encodeSealedBlob): "UMBRA-SEALED" (12 bytes), version u16 = 1,
// the policy hash u16, TPML_PCR_SELECTION, the sealed-to PCR values (TPM2B each, selection order), the
// TPM2B_PUBLIC, the TPM2B_PRIVATE, then u8 envelope: 0 none, or 1 and AES-256-GCM iv (TPM2B), tag
// (TPM2B), ciphertext (u32 size then bytes). The recorded PCR values are only there to name the PCRs
// that changed when unsealing fails; the TPM's policy is what decides.

import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { nameOf, TPM_ALG, TPM_HT, TPM_SE, TPMA_OBJECT } from './constants.ts';
import { digestSize, isHashAlg, MAX_DIGEST_SIZE } from './hash.ts';
import { Reader, TpmFormatError, Writer } from './marshal.ts';
import { PolicyDigest } from './policy-digest.ts';
import { TPM_RC, TpmError } from './response-code.ts';
import {
  type KeyedHashPublic,
  NULL_SCHEME,
  type PcrSelection,
  type PublicArea,
  readPcrSelections,
  readPublicArea,
  writePcrSelections,
} from './structures.ts';
import { MAX_SYM_DATA, type Tpm } from './tpm.ts';
import { comparePcrs, describePcrDifferences, type PcrBanks } from './verifier/pcr-policy.ts';

export const SEALED_BLOB_MAGIC = new TextEncoder().encode('UMBRA-SEALED');
export const SEALED_BLOB_VERSION = 1;

/** The PCRs a secret is sealed to: TPML_PCR_SELECTION form, or one bank and its indexes. */
export type SealSelection =
  | readonly PcrSelection[]
  | { readonly bank: number; readonly pcrs: readonly number[] };

export interface SealOptions {
  /** The policy session's hash, and the sealed object's nameAlg; SHA-256 by default. */
  readonly policyHash?: number;
}

export interface SealedEnvelope {
  readonly iv: Uint8Array;
  readonly tag: Uint8Array;
  readonly ciphertext: Uint8Array;
}

export interface SealedBlob {
  /** TPM2B_PUBLIC of the sealed object (size field included). */
  readonly public: Uint8Array;
  /** TPM2B_PRIVATE of the sealed object (size field included), wrapped by the parent. */
  readonly private: Uint8Array;
  readonly selection: readonly PcrSelection[];
  readonly policyHash: number;
  /** The PCR values at sealing time, for naming the PCRs that changed since. */
  readonly pcrValues: PcrBanks;
  /** Present when the secret was longer than a TPM seals: the sealed data is then the AES key. */
  readonly envelope?: SealedEnvelope;
}

/** The PCRs differ from the boot state the secret was sealed to (TPM_RC_POLICY_FAIL on Unseal). */
export class SealedToOtherBootStateError extends Error {
  override name = 'SealedToOtherBootStateError';
  /** "sha256 PCR 7 differs", or the whole selection when the recorded values do not say which. */
  readonly changed: string;

  constructor(changed: string, options?: ErrorOptions) {
    super(
      `the boot state differs from the one the secret was sealed to (${changed}): ` +
        'other firmware or boot configuration, so the TPM will not unseal it',
      options,
    );
    this.changed = changed;
  }
}

/** The sealed object cannot be loaded under this TPM's storage key: sealed by another TPM (or SRK). */
export class SealedByOtherTpmError extends Error {
  override name = 'SealedByOtherTpmError';
  constructor(parentHandle: number, options?: ErrorOptions) {
    super(
      `the secret was sealed by another TPM (or under another storage key than 0x${parentHandle.toString(16)}): ` +
        'this TPM cannot load it',
      options,
    );
  }
}

/** The stored blob is not a sealed blob, or is damaged: the message names what is wrong. */
export class SealedBlobFormatError extends Error {
  override name = 'SealedBlobFormatError';
}

/** What Load says of a private part wrapped by another parent. */
const OTHER_TPM_LOAD_ERRORS: ReadonlySet<number> = new Set([
  TPM_RC.INTEGRITY,
  TPM_RC.SIZE,
  TPM_RC.VALUE,
  TPM_RC.KEY_SIZE,
]);

function normalizeSelection(selection: SealSelection): PcrSelection[] {
  const list = 'bank' in selection ? [{ hash: selection.bank, pcrs: selection.pcrs }] : selection;
  const out = list
    .map(({ hash, pcrs }) => ({ hash, pcrs: [...new Set(pcrs)].sort((a, b) => a - b) }))
    .filter((s) => s.pcrs.length > 0);
  if (out.length === 0) throw new RangeError('sealToPcrs: no PCR selected');
  for (const { hash } of out)
    if (!isHashAlg(hash)) throw new RangeError(`sealToPcrs: bank ${nameOf(TPM_ALG, hash)} is not a hash`);
  return out;
}

export function describeSelection(selection: readonly PcrSelection[]): string {
  return selection.map((s) => `${nameOf(TPM_ALG, s.hash).toLowerCase()} PCRs ${s.pcrs.join(',')}`).join('; ');
}

function sealedObjectTemplate(nameAlg: number, authPolicy: Uint8Array): KeyedHashPublic {
  return {
    type: TPM_ALG.KEYEDHASH,
    nameAlg,
    objectAttributes:
      TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.adminWithPolicy | TPMA_OBJECT.noDA,
    authPolicy,
    parameters: { scheme: NULL_SCHEME },
    unique: new Uint8Array(),
  };
}

function tpm2b(body: Uint8Array): Uint8Array {
  return new Writer().tpm2b(body).finish();
}

/** The body of a TPM2B whose size must cover exactly the rest. */
function tpm2bBody(bytes: Uint8Array, what: string): Uint8Array {
  const r = new Reader(bytes, what);
  const body = r.tpm2b(what);
  r.end();
  return body;
}

/**
 * Seals `secret` under `parentHandle` (the SRK, see ensureStorageKey) to the current values of the
 * selected PCRs. The policy is computed in software from PCR_Read and checked against a trial session
 * running PolicyPCR on the TPM's own values: a mismatch (a PCR extended meanwhile) is an error, never a
 * blob that could not be unsealed.
 */
export async function sealToPcrs(
  tpm: Tpm,
  parentHandle: number,
  secret: Uint8Array,
  selection: SealSelection,
  options: SealOptions = {},
): Promise<SealedBlob> {
  const policyHash = options.policyHash ?? TPM_ALG.SHA256;
  const pcrs = normalizeSelection(selection);
  if (secret.length === 0) throw new RangeError('sealToPcrs: the secret is empty');

  let sealed = secret;
  let envelope: SealedEnvelope | undefined;
  if (secret.length > MAX_SYM_DATA) {
    const key = new Uint8Array(randomBytes(32));
    const iv = new Uint8Array(randomBytes(12));
    const cipher = createCipheriv('aes-256-gcm', key, iv);
    const ciphertext = new Uint8Array(Buffer.concat([cipher.update(secret), cipher.final()]));
    envelope = { iv, tag: new Uint8Array(cipher.getAuthTag()), ciphertext };
    sealed = key;
  }

  const { banks } = await tpm.pcrRead(pcrs);
  const policy = new PolicyDigest(policyHash).pcrValues(pcrs, banks).digest;
  const trial = await tpm.withSession(
    TPM_SE.TRIAL,
    async (session) => {
      await tpm.policyPcr(session, pcrs);
      return tpm.policyGetDigest(session);
    },
    policyHash,
  );
  if (Buffer.compare(trial, policy) !== 0)
    throw new Error(
      `sealToPcrs: the PCRs (${describeSelection(pcrs)}) changed while sealing (the policy from PCR_Read is not the TPM's); try again`,
    );

  const created = await tpm.create(parentHandle, sealedObjectTemplate(policyHash, policy), {
    sensitiveData: sealed,
  });
  const pcrValues = new Map<number, Map<number, Uint8Array>>();
  for (const { hash, pcrs: indexes } of pcrs)
    pcrValues.set(hash, new Map(indexes.map((i) => [i, banks.get(hash)!.get(i)!])));
  return {
    public: tpm2b(created.publicBytes),
    private: tpm2b(created.private),
    selection: pcrs,
    policyHash,
    pcrValues,
    ...(envelope && { envelope }),
  };
}

/**
 * Loads the sealed object under `parentHandle`, satisfies its PolicyPCR in a policy session and
 * unseals it. The object and the session are flushed on every path. Throws SealedToOtherBootStateError
 * when the PCRs changed, SealedByOtherTpmError when this TPM's parent cannot load it,
 * SealedBlobFormatError when the blob is damaged, TpmError otherwise.
 */
export async function unsealWithPcrs(tpm: Tpm, parentHandle: number, blob: SealedBlob): Promise<Uint8Array> {
  const { publicArea, publicBytes } = checkBlob(blob);
  const privateBody = tpm2bBody(blob.private, 'TPM2B_PRIVATE');

  let loaded: { handle: number };
  try {
    loaded = await tpm.load(parentHandle, { private: privateBody, publicBytes, publicArea });
  } catch (error) {
    if (
      error instanceof TpmError &&
      parentHandle >>> 24 === TPM_HT.PERSISTENT &&
      error.base === TPM_RC.HANDLE
    )
      throw new Error(
        `no storage key at 0x${parentHandle.toString(16)} in this TPM (see ensureStorageKey): a secret sealed under it cannot be unsealed`,
        { cause: error },
      );
    // The private part's integrity HMAC is keyed from the parent's seed: another TPM (or SRK) fails it;
    // a wrapped blob that does not even decrypt to a sensitive area is a size or value error.
    if (
      error instanceof TpmError &&
      error.rc.parameter !== undefined &&
      OTHER_TPM_LOAD_ERRORS.has(error.base)
    )
      throw new SealedByOtherTpmError(parentHandle, { cause: error });
    throw error;
  }

  const data = await tpm.withTransient(loaded.handle, (item) =>
    tpm.withSession(
      TPM_SE.POLICY,
      async (session) => {
        await tpm.policyPcr(session, blob.selection);
        try {
          return await tpm.unseal(item, session);
        } catch (error) {
          if (error instanceof TpmError && error.base === TPM_RC.POLICY_FAIL)
            throw new SealedToOtherBootStateError(await changedPcrs(tpm, blob), { cause: error });
          throw error;
        }
      },
      blob.policyHash,
    ),
  );
  if (!blob.envelope) return data;
  if (data.length !== 32) throw new SealedBlobFormatError(`the sealed key is ${data.length} bytes, not 32`);
  try {
    const decipher = createDecipheriv('aes-256-gcm', data, blob.envelope.iv);
    decipher.setAuthTag(blob.envelope.tag);
    return new Uint8Array(Buffer.concat([decipher.update(blob.envelope.ciphertext), decipher.final()]));
  } catch (error) {
    throw new SealedBlobFormatError(
      'the encrypted secret in the blob does not decrypt with the sealed key: it was altered',
      {
        cause: error,
      },
    );
  }
}

/** Which sealed-to PCRs differ now, from the values recorded in the blob. */
async function changedPcrs(tpm: Tpm, blob: SealedBlob): Promise<string> {
  try {
    const now = await tpm.pcrRead(blob.selection);
    const { differences } = comparePcrs(now.banks, blob.pcrValues);
    if (differences.length > 0) return describePcrDifferences(differences);
  } catch {
    // Naming the PCRs is a courtesy: the policy failure is the error.
  }
  return `${describeSelection(blob.selection)} changed`;
}

/** The blob's public area, checked: a KEYEDHASH object that only its PCR policy opens, that policy. */
function checkBlob(blob: SealedBlob): { publicArea: PublicArea; publicBytes: Uint8Array } {
  let publicBytes: Uint8Array;
  let publicArea: PublicArea;
  try {
    publicBytes = tpm2bBody(blob.public, 'TPM2B_PUBLIC');
    const r = new Reader(publicBytes, 'TPMT_PUBLIC');
    publicArea = readPublicArea(r);
    r.end();
  } catch (error) {
    throw new SealedBlobFormatError(`sealed blob: ${(error as Error).message}`, { cause: error });
  }
  if (publicArea.type !== TPM_ALG.KEYEDHASH)
    throw new SealedBlobFormatError(
      `sealed blob: the object is ${nameOf(TPM_ALG, publicArea.type)}, not KEYEDHASH`,
    );
  if (publicArea.objectAttributes & TPMA_OBJECT.userWithAuth)
    throw new SealedBlobFormatError('sealed blob: the object has userWithAuth: it is not sealed to a policy');
  let expected: Uint8Array;
  try {
    expected = new PolicyDigest(blob.policyHash).pcrValues(blob.selection, blob.pcrValues).digest;
  } catch (error) {
    throw new SealedBlobFormatError(`sealed blob: ${(error as Error).message}`, { cause: error });
  }
  if (Buffer.compare(expected, publicArea.authPolicy) !== 0)
    throw new SealedBlobFormatError(
      "sealed blob: the recorded PCR values do not give the object's authPolicy: the blob was altered",
    );
  return { publicArea, publicBytes };
}

// ---------------------------------------------------------------------------------------------------
// The file format

export function encodeSealedBlob(blob: SealedBlob): Uint8Array {
  const w = new Writer();
  w.bytes(SEALED_BLOB_MAGIC).u16(SEALED_BLOB_VERSION).u16(blob.policyHash);
  writePcrSelections(w, blob.selection);
  for (const { hash, pcrs } of blob.selection) {
    for (const i of pcrs) {
      const value = blob.pcrValues.get(hash)?.get(i);
      if (!value) throw new RangeError(`encodeSealedBlob: no recorded value for PCR ${i}`);
      w.tpm2b(value);
    }
  }
  w.bytes(blob.public).bytes(blob.private);
  if (blob.envelope) {
    w.u8(1).tpm2b(blob.envelope.iv).tpm2b(blob.envelope.tag);
    w.u32(blob.envelope.ciphertext.length).bytes(blob.envelope.ciphertext);
  } else {
    w.u8(0);
  }
  return w.finish();
}

/** Parses a stored sealed blob; anything else is a SealedBlobFormatError that names the problem. */
export function decodeSealedBlob(bytes: Uint8Array): SealedBlob {
  const magic = SEALED_BLOB_MAGIC;
  if (bytes.length < magic.length || Buffer.compare(bytes.subarray(0, magic.length), magic) !== 0)
    throw new SealedBlobFormatError(
      `not a sealed blob: it does not start with "UMBRA-SEALED" (${bytes.length} bytes${bytes.length === 0 ? ', empty' : ''})`,
    );
  try {
    const r = new Reader(bytes, 'sealed blob', magic.length);
    const version = r.u16('version');
    if (version !== SEALED_BLOB_VERSION)
      r.fail(`version ${version}: this code reads version ${SEALED_BLOB_VERSION}`);
    const policyHash = r.u16('policyHash');
    if (!isHashAlg(policyHash)) r.fail(`policyHash ${nameOf(TPM_ALG, policyHash)} is not a hash`);
    const selection = readPcrSelections(r, 'selection').filter((s) => s.pcrs.length > 0);
    if (selection.length === 0) r.fail('no PCR is selected');
    const pcrValues = new Map<number, Map<number, Uint8Array>>();
    for (const { hash, pcrs } of selection) {
      if (!isHashAlg(hash)) r.fail(`bank ${nameOf(TPM_ALG, hash)} is not a hash`);
      const bank = new Map<number, Uint8Array>();
      for (const i of pcrs) {
        const value = r.tpm2b(`PCR ${i} value`, MAX_DIGEST_SIZE);
        if (value.length !== digestSize(hash)) r.fail(`PCR ${i} value is ${value.length} bytes`);
        bank.set(i, value);
      }
      pcrValues.set(hash, bank);
    }
    const pub = tpm2b(r.tpm2b('TPM2B_PUBLIC'));
    const priv = tpm2b(r.tpm2b('TPM2B_PRIVATE'));
    if (pub.length === 2) r.fail('TPM2B_PUBLIC is empty');
    if (priv.length === 2) r.fail('TPM2B_PRIVATE is empty');
    const kind = r.u8('envelope');
    let envelope: SealedEnvelope | undefined;
    if (kind === 1) {
      const iv = r.tpm2b('envelope.iv', 16);
      const tag = r.tpm2b('envelope.tag', 16);
      const size = r.u32('envelope.ciphertext.size');
      envelope = { iv, tag, ciphertext: r.bytes(size, 'envelope.ciphertext') };
    } else if (kind !== 0) {
      r.fail(`envelope kind ${kind} is neither 0 (none) nor 1 (AES-256-GCM)`);
    }
    r.end();
    return { public: pub, private: priv, selection, policyHash, pcrValues, ...(envelope && { envelope }) };
  } catch (error) {
    if (error instanceof TpmFormatError)
      throw new SealedBlobFormatError(`${error.message}: the file is truncated or damaged`, { cause: error });
    throw error;
  }
}
