// The checks every TPMS_ATTEST must pass whatever its type (quote or certify): magic, type, the
// signature by the AK, extraData against the verifier's nonce and qualifiedSigner against the AK's
// qualified Name. verifyQuote and verifyCertify add what their type attests.

import type { KeyObject } from 'node:crypto';
import { nameOf, TPM_ALG, TPM_ST } from '../constants.ts';
import { isHashAlg } from '../hash.ts';
import { Reader } from '../marshal.ts';
import {
  type Attest,
  type AttestInfo,
  type PublicArea,
  readAttest,
  readSignature,
  type Signature,
  TPM_GENERATED_VALUE,
} from '../structures.ts';
import { type AkKey, akKey, checkSignature } from './attest-signature.ts';
import { checkAttestationKey } from './key-checks.ts';
import { equalBytes } from './pcr-policy.ts';

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

export type AttestFailure = 'format' | 'magic' | 'type' | 'key' | 'signature' | 'nonce' | 'signer';

export interface SignedAttestInput {
  readonly attest: Uint8Array;
  readonly signature: Uint8Array | Signature;
  readonly akPublic: Uint8Array | PublicArea | KeyObject;
  readonly nonce: Uint8Array;
  readonly akQualifiedName?: Uint8Array;
}

export interface SignedAttestCheck<T extends AttestInfo['type']> {
  /** TPM_ST.ATTEST_QUOTE or TPM_ST.ATTEST_CERTIFY. */
  readonly type: T;
  /** 'quote' or 'certification', for messages. */
  readonly what: string;
  /** Whether checkAttestationKey runs on this AK (called once the AK is known to be a usable key). */
  readonly checkAttributes: (akPublic: Uint8Array | PublicArea | KeyObject) => boolean;
}

export interface AttestFailed {
  readonly ok: false;
  readonly code: AttestFailure;
  readonly reason: string;
}

export type SignedAttestResult<T extends AttestInfo['type']> =
  | {
      readonly ok: true;
      readonly attest: Attest;
      /** attest.attested, known to be of the type checked. */
      readonly attested: Extract<AttestInfo, { readonly type: T }>;
      readonly signature: Signature & { readonly hash: number };
    }
  | AttestFailed;

function failure(code: AttestFailure, reason: string): AttestFailed {
  return { ok: false, code, reason };
}

/**
 * What every TPMS_ATTEST must pass, in this order: magic and type (first, so that a wrong one is
 * named as such rather than as a parse error), the parse, the signature's parse, the AK (and its
 * attributes when `checkAttributes` says so), the signature with its own hash, extraData against
 * the nonce, and qualifiedSigner against the AK's qualified Name when given.
 */
export function checkSignedAttest<T extends AttestInfo['type']>(
  input: SignedAttestInput,
  check: SignedAttestCheck<T>,
): SignedAttestResult<T> {
  const attestBytes = input.attest;
  if (!(attestBytes instanceof Uint8Array)) return failure('format', 'attest is not bytes');
  const typeName = nameOf(TPM_ST, check.type);
  if (attestBytes.length >= 4) {
    const magic = new DataView(attestBytes.buffer, attestBytes.byteOffset, attestBytes.byteLength).getUint32(
      0,
    );
    if (magic !== TPM_GENERATED_VALUE)
      return failure(
        'magic',
        `attest magic is 0x${magic.toString(16)}, not TPM_GENERATED_VALUE (0xff544347)`,
      );
  }
  if (attestBytes.length >= 6) {
    const type = (attestBytes[4]! << 8) | attestBytes[5]!;
    if (type !== check.type)
      return failure('type', `attest type is ${nameOf(TPM_ST, type)}, not ${typeName}`);
  }
  let attest: Attest;
  try {
    const r = new Reader(attestBytes, 'TPMS_ATTEST');
    attest = readAttest(r);
    r.end();
  } catch (error) {
    return failure('format', errorMessage(error));
  }
  if (attest.attested.type !== check.type) return failure('type', `attest is not a ${check.what}`);

  let signature: Signature;
  try {
    if (input.signature instanceof Uint8Array) {
      const r = new Reader(input.signature, 'TPMT_SIGNATURE');
      signature = readSignature(r, 'signature');
      r.end();
    } else {
      signature = input.signature;
    }
  } catch (error) {
    return failure('format', errorMessage(error));
  }

  let ak: AkKey;
  try {
    ak = akKey(input.akPublic);
  } catch (error) {
    return failure('key', `AK public key: ${errorMessage(error)}`);
  }
  if (check.checkAttributes(input.akPublic)) {
    const problems = checkAttestationKey(input.akPublic as Uint8Array | PublicArea);
    if (problems.length > 0) return failure('key', `not an attestation key: ${problems.join('; ')}`);
  }

  if (!('hash' in signature) || !isHashAlg(signature.hash))
    return failure(
      'signature',
      `the signature is ${nameOf(TPM_ALG, signature.sigAlg)}, without a hash algorithm`,
    );
  let bad: string | undefined;
  try {
    bad = checkSignature(attestBytes, signature, ak);
  } catch (error) {
    bad = errorMessage(error);
  }
  if (bad !== undefined) return failure('signature', bad);

  if (!equalBytes(attest.extraData, input.nonce))
    return failure(
      'nonce',
      `extraData ${hex(attest.extraData)} is not the nonce ${hex(input.nonce)}: a stale or replayed ${check.what}`,
    );
  if (input.akQualifiedName && !equalBytes(attest.qualifiedSigner, input.akQualifiedName))
    return failure(
      'signer',
      `qualifiedSigner ${hex(attest.qualifiedSigner)} is not the AK's qualified Name ${hex(input.akQualifiedName)}`,
    );
  const attested = attest.attested as Extract<AttestInfo, { readonly type: T }>;
  return { ok: true, attest, attested, signature };
}
