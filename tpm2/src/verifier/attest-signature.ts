// What verifying a TPMS_ATTEST needs whatever its type (quote or certify): the AK's public key from
// the forms a gateway or tpm2-tools hand over, and the signature checked with the signature's own hash.

import { constants, KeyObject, verify } from 'node:crypto';
import { nameOf, TPM_ALG, TPM_ECC } from '../constants.ts';
import { nodeHashName } from '../hash.ts';
import { Reader } from '../marshal.ts';
import {
  ecdsaSignatureP1363,
  type PublicArea,
  publicKeyObject,
  readPublicArea,
  type Signature,
} from '../structures.ts';

const NAMED_CURVES: Readonly<Record<string, number>> = {
  prime256v1: TPM_ECC.NIST_P256,
  secp384r1: TPM_ECC.NIST_P384,
  secp521r1: TPM_ECC.NIST_P521,
};

/** Where the TPMT_PUBLIC starts: 2 for a TPM2B_PUBLIC (its size prefix covers exactly the rest), else 0. */
export function publicAreaStart(bytes: Uint8Array): number {
  return bytes.length >= 2 && ((bytes[0]! << 8) | bytes[1]!) === bytes.length - 2 ? 2 : 0;
}

/** TPM2B_PUBLIC when its size prefix covers exactly the rest, otherwise TPMT_PUBLIC. */
export function parsePublicBytes(bytes: Uint8Array, what = 'AK'): PublicArea {
  const start = publicAreaStart(bytes);
  const r = new Reader(bytes, start === 2 ? `${what} TPM2B_PUBLIC` : `${what} TPMT_PUBLIC`, start);
  const area = readPublicArea(r);
  r.end();
  return area;
}

export interface AkKey {
  readonly key: KeyObject;
  /** TPM_ECC curve for EC keys, undefined for RSA. */
  readonly curveId: number | undefined;
}

export function akKey(ak: Uint8Array | PublicArea | KeyObject): AkKey {
  if (!(ak instanceof KeyObject)) {
    const area = ak instanceof Uint8Array ? parsePublicBytes(ak) : ak;
    if (area.type !== TPM_ALG.ECC && area.type !== TPM_ALG.RSA)
      throw new Error(`the AK is a ${nameOf(TPM_ALG, area.type)} object, not an RSA or ECC key`);
    const key = publicKeyObject(area);
    return { key, curveId: area.type === TPM_ALG.ECC ? area.parameters.curveId : undefined };
  }
  if (ak.type !== 'public') throw new Error(`the AK is a ${ak.type} key, not a public key`);
  if (ak.asymmetricKeyType === 'rsa') return { key: ak, curveId: undefined };
  if (ak.asymmetricKeyType === 'ec') {
    const curve = ak.asymmetricKeyDetails?.namedCurve ?? '';
    const curveId = NAMED_CURVES[curve];
    if (curveId === undefined) throw new Error(`the AK's curve ${curve} is not a NIST curve a TPM uses`);
    return { key: ak, curveId };
  }
  throw new Error(`the AK is an ${ak.asymmetricKeyType} key, not RSA or EC`);
}

/** Checks the signature over the attest bytes; returns a reason when it does not verify. */
export function checkSignature(attest: Uint8Array, signature: Signature, ak: AkKey): string | undefined {
  const alg = nameOf(TPM_ALG, signature.sigAlg);
  if (signature.sigAlg === TPM_ALG.ECDSA) {
    if (ak.curveId === undefined) return `an ECDSA signature but the AK is an RSA key`;
    const p1363 = ecdsaSignatureP1363(signature, ak.curveId);
    const good = verify(
      nodeHashName(signature.hash),
      attest,
      { key: ak.key, dsaEncoding: 'ieee-p1363' },
      p1363,
    );
    return good
      ? undefined
      : `the ECDSA (${nameOf(TPM_ALG, signature.hash)}) signature does not verify with the AK`;
  }
  if (signature.sigAlg === TPM_ALG.RSASSA || signature.sigAlg === TPM_ALG.RSAPSS) {
    if (ak.curveId !== undefined) return `an ${alg} signature but the AK is an EC key`;
    const padding =
      signature.sigAlg === TPM_ALG.RSASSA
        ? { padding: constants.RSA_PKCS1_PADDING }
        : { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_AUTO };
    const good = verify(nodeHashName(signature.hash), attest, { key: ak.key, ...padding }, signature.sig);
    return good
      ? undefined
      : `the ${alg} (${nameOf(TPM_ALG, signature.hash)}) signature does not verify with the AK`;
  }
  return `the signature is ${alg}: only ECDSA, RSASSA and RSAPSS are accepted for a quote`;
}
