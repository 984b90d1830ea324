// TPM2_Certify verification on the verifier side (Part 3 §18.2, Part 2 §10.12.3): the AK signed a
// TPMS_ATTEST of type TPM_ST_ATTEST_CERTIFY saying that an object with this Name is loaded in the same
// TPM. With the object's public area in hand, the verifier learns that this public key is a TPM key
// whose attributes are those of the public area (they are hashed into the Name), e.g. that the
// gateway identity key is fixedTPM: check them with checkIdentityKey.
//
// verifyCertify never throws: every failure, malformed input included, is { ok: false, code, reason }.

import type { KeyObject } from 'node:crypto';
import { nameOf, TPM_ALG, TPM_ST } from '../constants.ts';
import { isHashAlg } from '../hash.ts';
import { Reader, Writer } from '../marshal.ts';
import { computeName } from '../name.ts';
import {
  type Attest,
  type PublicArea,
  readAttest,
  readPublicArea,
  readSignature,
  type Signature,
  TPM_GENERATED_VALUE,
  writePublicArea,
} from '../structures.ts';
import { type AkKey, akKey, checkSignature } from './attest-signature.ts';
import { checkAttestationKey } from './key-checks.ts';
import { equalBytes } from './pcr-policy.ts';

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

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

/** The TPMT_PUBLIC bytes (the Name is over them) and their parse. */
function objectArea(input: Uint8Array | PublicArea): { area: PublicArea; bytes: Uint8Array } {
  if (!(input instanceof Uint8Array)) {
    const w = new Writer();
    writePublicArea(w, input);
    return { area: input, bytes: w.finish() };
  }
  let start = 0;
  if (input.length >= 2 && ((input[0]! << 8) | input[1]!) === input.length - 2) start = 2;
  const r = new Reader(input, start === 2 ? 'object TPM2B_PUBLIC' : 'object TPMT_PUBLIC', start);
  const area = readPublicArea(r);
  r.end();
  return { area, bytes: input.subarray(start) };
}

/** Verifies a TPM2_Certify. Never throws. */
export function verifyCertify(input: VerifyCertifyInput): VerifyCertifyResult {
  try {
    return verifyCertifyOrThrow(input);
  } catch (error) {
    return fail('format', message(error));
  }
}

function verifyCertifyOrThrow(input: VerifyCertifyInput): VerifyCertifyResult {
  const attestBytes = input.attest;
  if (!(attestBytes instanceof Uint8Array)) return fail('format', 'attest is not bytes');
  if (attestBytes.length >= 4) {
    const magic = new DataView(attestBytes.buffer, attestBytes.byteOffset, attestBytes.byteLength).getUint32(
      0,
    );
    if (magic !== TPM_GENERATED_VALUE)
      return fail('magic', `attest magic is 0x${magic.toString(16)}, not TPM_GENERATED_VALUE (0xff544347)`);
  }
  if (attestBytes.length >= 6) {
    const type = (attestBytes[4]! << 8) | attestBytes[5]!;
    if (type !== TPM_ST.ATTEST_CERTIFY)
      return fail('type', `attest type is ${nameOf(TPM_ST, type)}, not ATTEST_CERTIFY`);
  }
  let attest: Attest;
  try {
    const r = new Reader(attestBytes, 'TPMS_ATTEST');
    attest = readAttest(r);
    r.end();
  } catch (error) {
    return fail('format', message(error));
  }
  if (attest.attested.type !== TPM_ST.ATTEST_CERTIFY) return fail('type', 'attest is not a certification');

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
    return fail('format', message(error));
  }

  let ak: AkKey;
  try {
    ak = akKey(input.akPublic);
  } catch (error) {
    return fail('key', `AK public key: ${message(error)}`);
  }
  if (input.requireAttestationKey !== false && !isKeyObject(input.akPublic)) {
    const problems = checkAttestationKey(input.akPublic as Uint8Array | PublicArea);
    if (problems.length > 0) return fail('key', `not an attestation key: ${problems.join('; ')}`);
  }

  if (!('hash' in signature) || !isHashAlg(signature.hash))
    return fail(
      'signature',
      `the signature is ${nameOf(TPM_ALG, signature.sigAlg)}, without a hash algorithm`,
    );
  let bad: string | undefined;
  try {
    bad = checkSignature(attestBytes, signature, ak);
  } catch (error) {
    bad = message(error);
  }
  if (bad !== undefined) return fail('signature', bad);

  if (!equalBytes(attest.extraData, input.nonce))
    return fail(
      'nonce',
      `extraData ${hex(attest.extraData)} is not the nonce ${hex(input.nonce)}: a stale or replayed certification`,
    );
  if (input.akQualifiedName && !equalBytes(attest.qualifiedSigner, input.akQualifiedName))
    return fail(
      'signer',
      `qualifiedSigner ${hex(attest.qualifiedSigner)} is not the AK's qualified Name ${hex(input.akQualifiedName)}`,
    );

  let object: { area: PublicArea; bytes: Uint8Array };
  try {
    object = objectArea(input.objectPublic);
  } catch (error) {
    return fail('format', `object public area: ${message(error)}`);
  }
  let name: Uint8Array;
  try {
    name = computeName(object.area.nameAlg, object.bytes);
  } catch (error) {
    return fail('name', `the object's Name cannot be computed: ${message(error)}`);
  }
  if (!equalBytes(attest.attested.name, name))
    return fail(
      'name',
      `the certified Name ${hex(attest.attested.name)} is not the Name of the object public area (${hex(name)}): another key was certified`,
    );

  return {
    ok: true,
    certified: {
      attest,
      objectPublic: object.area,
      name,
      qualifiedName: attest.attested.qualifiedName,
      qualifiedSigner: attest.qualifiedSigner,
      hashAlg: signature.hash,
    },
  };
}

function isKeyObject(value: unknown): value is KeyObject {
  return typeof value === 'object' && value !== null && 'asymmetricKeyType' in value && 'export' in value;
}
