// TPM2_Certify verification on the verifier side (Part 3 §18.2, Part 2 §10.12.3): the AK signed a
// TPMS_ATTEST of type TPM_ST_ATTEST_CERTIFY saying that an object with this Name is loaded in the same
// TPM. With the object's public area in hand, the verifier learns that this public key is a TPM key
// whose attributes are those of the public area (they are hashed into the Name), e.g. that the
// gateway identity key is fixedTPM: check them with checkIdentityKey.
//
// verifyCertify never throws: every failure, malformed input included, is { ok: false, code, reason }.

import type { KeyObject } from 'node:crypto';
import { TPM_ST } from '../constants.ts';
import { Writer } from '../marshal.ts';
import { computeName } from '../name.ts';
import { type Attest, type PublicArea, type Signature, writePublicArea } from '../structures.ts';
import { parsePublicBytes, publicAreaStart } from './attest-signature.ts';
import { equalBytes } from './pcr-policy.ts';
import { checkSignedAttest, errorMessage, hex } from './signed-attest.ts';

export interface VerifyCertifyInput {
  /** The AK: TPMT_PUBLIC or TPM2B_PUBLIC bytes, a parsed public area, or a node:crypto public key. */
  readonly akPublic: Uint8Array | PublicArea | KeyObject;
  /** The TPMS_ATTEST bytes exactly as signed. */
  readonly attest: Uint8Array;
  /** A marshalled TPMT_SIGNATURE or a parsed one. */
  readonly signature: Uint8Array | Signature;
  /** The certified object's TPMT_PUBLIC or TPM2B_PUBLIC bytes (or parsed; it is marshalled for its Name). */
  readonly objectPublic: Uint8Array | PublicArea;
  /** The qualifying data the verifier sent: extraData must equal it. */
  readonly nonce: Uint8Array;
  /** If given, the AK's qualified Name: the attestation's qualifiedSigner must equal it. */
  readonly akQualifiedName?: Uint8Array;
  /**
   * Check the AK's attributes (checkAttestationKey) when akPublic is a public area; true by default.
   * A KeyObject carries no attributes and is taken as is.
   */
  readonly requireAttestationKey?: boolean;
}

export type CertifyFailure = 'format' | 'magic' | 'type' | 'key' | 'signature' | 'nonce' | 'signer' | 'name';

export interface VerifiedCertify {
  readonly attest: Attest;
  /** The certified object's public area and Name (= attested name). */
  readonly objectPublic: PublicArea;
  readonly name: Uint8Array;
  readonly qualifiedName: Uint8Array;
  readonly qualifiedSigner: Uint8Array;
  readonly hashAlg: number;
}

export type VerifyCertifyResult =
  | { readonly ok: true; readonly certified: VerifiedCertify }
  | { readonly ok: false; readonly code: CertifyFailure; readonly reason: string };

function fail(code: CertifyFailure, reason: string): VerifyCertifyResult {
  return { ok: false, code, reason };
}

/** The TPMT_PUBLIC bytes (the Name is over them) and their parse. */
function objectArea(input: Uint8Array | PublicArea): { area: PublicArea; bytes: Uint8Array } {
  if (!(input instanceof Uint8Array)) {
    const w = new Writer();
    writePublicArea(w, input);
    return { area: input, bytes: w.finish() };
  }
  return { area: parsePublicBytes(input, 'object'), bytes: input.subarray(publicAreaStart(input)) };
}

/** Verifies a TPM2_Certify. Never throws. */
export function verifyCertify(input: VerifyCertifyInput): VerifyCertifyResult {
  try {
    return verifyCertifyOrThrow(input);
  } catch (error) {
    return fail('format', errorMessage(error));
  }
}

function verifyCertifyOrThrow(input: VerifyCertifyInput): VerifyCertifyResult {
  const checked = checkSignedAttest(input, {
    type: TPM_ST.ATTEST_CERTIFY,
    what: 'certification',
    checkAttributes: (ak) => input.requireAttestationKey !== false && !isKeyObject(ak),
  });
  if (!checked.ok) return checked;
  const { attest, attested, signature } = checked;

  let object: { area: PublicArea; bytes: Uint8Array };
  try {
    object = objectArea(input.objectPublic);
  } catch (error) {
    return fail('format', `object public area: ${errorMessage(error)}`);
  }
  let name: Uint8Array;
  try {
    name = computeName(object.area.nameAlg, object.bytes);
  } catch (error) {
    return fail('name', `the object's Name cannot be computed: ${errorMessage(error)}`);
  }
  if (!equalBytes(attested.name, name))
    return fail(
      'name',
      `the certified Name ${hex(attested.name)} is not the Name of the object public area (${hex(name)}): another key was certified`,
    );

  return {
    ok: true,
    certified: {
      attest,
      objectPublic: object.area,
      name,
      qualifiedName: attested.qualifiedName,
      qualifiedSigner: attest.qualifiedSigner,
      hashAlg: signature.hash,
    },
  };
}

function isKeyObject(value: unknown): value is KeyObject {
  return typeof value === 'object' && value !== null && 'asymmetricKeyType' in value && 'export' in value;
}
