// What the controller requires of a gateway's TPM keys, from their public areas alone (a key's
// attributes are part of its Name, so a certified or activated Name pins them):
//
// - the attestation key must be restricted (it signs only what the TPM itself produced: quotes and
//   certifications, never a digest handed in that could look like a TPMS_ATTEST), a signing key and
//   not a decryption key, fixedTPM and fixedParent (it never leaves the TPM), sensitiveDataOrigin (the
//   TPM generated it: nobody else ever knew it), with a scheme and curve the verifier accepts;
// - the gateway identity key the same but unrestricted (it signs the link's channel binding).
//
// Each check returns the list of problems, empty when the key is acceptable.

import { nameOf, TPM_ALG, TPM_ECC, TPMA_OBJECT } from '../constants.ts';
import type { PublicArea } from '../structures.ts';
import { parsePublicBytes } from './attest-signature.ts';

const ALLOWED_HASHES: ReadonlySet<number> = new Set([TPM_ALG.SHA256, TPM_ALG.SHA384]);
const ALLOWED_CURVES: ReadonlySet<number> = new Set([TPM_ECC.NIST_P256, TPM_ECC.NIST_P384]);
const ALLOWED_RSA_SCHEMES: ReadonlySet<number> = new Set([TPM_ALG.RSASSA, TPM_ALG.RSAPSS]);
const MIN_RSA_BITS = 2048;

function parse(key: PublicArea | Uint8Array, what: string): PublicArea | string {
  if (!(key instanceof Uint8Array)) return key;
  try {
    return parsePublicBytes(key, what);
  } catch (error) {
    return `the ${what} public area does not parse: ${(error as Error).message}`;
  }
}

function attributeProblems(area: PublicArea, restricted: boolean): string[] {
  const a = area.objectAttributes;
  const problems: string[] = [];
  const need = (bit: number, name: string, why: string) => {
    if ((a & bit) === 0) problems.push(`${name} is not set: ${why}`);
  };
  need(TPMA_OBJECT.sign, 'sign', 'it is not a signing key');
  need(TPMA_OBJECT.fixedTPM, 'fixedTPM', 'the key may be duplicated to another TPM');
  need(TPMA_OBJECT.fixedParent, 'fixedParent', 'the key may be duplicated to another parent');
  need(TPMA_OBJECT.sensitiveDataOrigin, 'sensitiveDataOrigin', 'the private key was made outside the TPM');
  if (a & TPMA_OBJECT.decrypt) problems.push('decrypt is set: a key that also decrypts is refused');
  if (restricted && (a & TPMA_OBJECT.restricted) === 0)
    problems.push(
      'restricted is not set: the key could sign arbitrary data made to look like a TPM attestation',
    );
  if (!restricted && a & TPMA_OBJECT.restricted)
    problems.push('restricted is set: the key cannot sign the digests the gateway needs signed');
  return problems;
}

function algorithmProblems(area: PublicArea): string[] {
  const problems: string[] = [];
  if (!ALLOWED_HASHES.has(area.nameAlg))
    problems.push(`nameAlg is ${nameOf(TPM_ALG, area.nameAlg)}, not SHA256 or SHA384`);
  if (area.type === TPM_ALG.ECC) {
    const { curveId, scheme } = area.parameters;
    if (!ALLOWED_CURVES.has(curveId))
      problems.push(`curve ${nameOf(TPM_ECC, curveId)} is not NIST P-256 or P-384`);
    if (scheme.scheme !== TPM_ALG.ECDSA)
      problems.push(`scheme ${nameOf(TPM_ALG, scheme.scheme)} is not ECDSA`);
    else if (!ALLOWED_HASHES.has(scheme.hashAlg ?? TPM_ALG.NULL))
      problems.push(
        `the ECDSA hash is ${nameOf(TPM_ALG, scheme.hashAlg ?? TPM_ALG.NULL)}, not SHA256 or SHA384`,
      );
  } else if (area.type === TPM_ALG.RSA) {
    const { keyBits, scheme } = area.parameters;
    if (keyBits < MIN_RSA_BITS) problems.push(`an RSA key of ${keyBits} bits, fewer than ${MIN_RSA_BITS}`);
    if (!ALLOWED_RSA_SCHEMES.has(scheme.scheme))
      problems.push(`scheme ${nameOf(TPM_ALG, scheme.scheme)} is not RSASSA or RSAPSS`);
    else if (!ALLOWED_HASHES.has(scheme.hashAlg ?? TPM_ALG.NULL))
      problems.push(
        `the ${nameOf(TPM_ALG, scheme.scheme)} hash is ${nameOf(TPM_ALG, scheme.hashAlg ?? TPM_ALG.NULL)}, not SHA256 or SHA384`,
      );
  } else {
    problems.push(`the key is ${nameOf(TPM_ALG, area.type)}, not RSA or ECC`);
  }
  return problems;
}

/**
 * What is wrong with a key offered as an attestation key (empty: nothing). The controller refuses an AK
 * with any problem: an unrestricted one could sign a forged quote.
 */
export function checkAttestationKey(akPublic: PublicArea | Uint8Array): string[] {
  const area = parse(akPublic, 'AK');
  if (typeof area === 'string') return [area];
  return [...attributeProblems(area, true), ...algorithmProblems(area)];
}

/** What is wrong with a key offered as the gateway identity key: a TPM-bound, unrestricted signing key. */
export function checkIdentityKey(keyPublic: PublicArea | Uint8Array): string[] {
  const area = parse(keyPublic, 'identity key');
  if (typeof area === 'string') return [area];
  return [...attributeProblems(area, false), ...algorithmProblems(area)];
}
