// Public-area templates for the keys Umbra creates. Keys are fixedTPM and fixedParent (they never
// leave this TPM), sensitiveDataOrigin (the TPM generated the secret), and used with their authValue.

import type { KeyObject } from 'node:crypto';
import { TPM_ALG, TPM_ECC, TPMA_OBJECT } from './constants.ts';
import { AES_128_CFB, type EccPublic, NO_SYMMETRIC, NULL_SCHEME, type RsaPublic } from './structures.ts';

const EMPTY = new Uint8Array();

const KEY_ATTRIBUTES =
  TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.sensitiveDataOrigin | TPMA_OBJECT.userWithAuth;

/** A signing key on NIST P-256 or P-384 for ECDSA with SHA-256 or SHA-384, name algorithm to match. */
export function eccSigningTemplate(curve: 'P-256' | 'P-384' = 'P-256'): EccPublic {
  const p384 = curve === 'P-384';
  const hashAlg = p384 ? TPM_ALG.SHA384 : TPM_ALG.SHA256;
  return {
    type: TPM_ALG.ECC,
    nameAlg: hashAlg,
    objectAttributes: KEY_ATTRIBUTES | TPMA_OBJECT.sign,
    authPolicy: EMPTY,
    parameters: {
      symmetric: NO_SYMMETRIC,
      scheme: { scheme: TPM_ALG.ECDSA, hashAlg },
      curveId: p384 ? TPM_ECC.NIST_P384 : TPM_ECC.NIST_P256,
      kdf: NULL_SCHEME,
    },
    unique: { x: EMPTY, y: EMPTY },
  };
}

/** An RSA-2048 signing key for RSASSA-PKCS1-v1_5 with SHA-256. */
export function rsaSigningTemplate(): RsaPublic {
  return {
    type: TPM_ALG.RSA,
    nameAlg: TPM_ALG.SHA256,
    objectAttributes: KEY_ATTRIBUTES | TPMA_OBJECT.sign,
    authPolicy: EMPTY,
    parameters: {
      symmetric: NO_SYMMETRIC,
      scheme: { scheme: TPM_ALG.RSASSA, hashAlg: TPM_ALG.SHA256 },
      keyBits: 2048,
      exponent: 0,
    },
    unique: EMPTY,
  };
}

const STORAGE_ATTRIBUTES = KEY_ATTRIBUTES | TPMA_OBJECT.restricted | TPMA_OBJECT.decrypt | TPMA_OBJECT.noDA;

/** The TCG's ECC P-256 storage root key (SRK) template: a parent for keys created with TPM2_Create. */
export function eccStorageTemplate(): EccPublic {
  return {
    type: TPM_ALG.ECC,
    nameAlg: TPM_ALG.SHA256,
    objectAttributes: STORAGE_ATTRIBUTES,
    authPolicy: EMPTY,
    parameters: { symmetric: AES_128_CFB, scheme: NULL_SCHEME, curveId: TPM_ECC.NIST_P256, kdf: NULL_SCHEME },
    unique: { x: EMPTY, y: EMPTY },
  };
}

/** The TCG's RSA-2048 storage root key (SRK) template. */
export function rsaStorageTemplate(): RsaPublic {
  return {
    type: TPM_ALG.RSA,
    nameAlg: TPM_ALG.SHA256,
    objectAttributes: STORAGE_ATTRIBUTES,
    authPolicy: EMPTY,
    parameters: { symmetric: AES_128_CFB, scheme: NULL_SCHEME, keyBits: 2048, exponent: 0 },
    unique: EMPTY,
  };
}

/**
 * An attestation key (AK): a restricted ECC P-256 signing key for ECDSA with SHA-256. Restricted means
 * it signs only digests the TPM computed itself (Quote, Certify, or a Sign with a hashcheck ticket), so
 * what it signs cannot be made to look like a TPMS_ATTEST.
 */
export function eccAttestationTemplate(): EccPublic {
  const t = eccSigningTemplate('P-256');
  return { ...t, objectAttributes: t.objectAttributes | TPMA_OBJECT.restricted };
}

/**
 * The public area of an ECC public key made outside the TPM (node:crypto), for LoadExternal: an
 * unrestricted ECDSA verification key with no authValue use and no fixedTPM/fixedParent.
 */
export function eccExternalPublic(key: KeyObject, hashAlg: number = TPM_ALG.SHA256): EccPublic {
  const jwk = key.export({ format: 'jwk' });
  const curveId = jwk.crv === 'P-256' ? TPM_ECC.NIST_P256 : jwk.crv === 'P-384' ? TPM_ECC.NIST_P384 : 0;
  if (jwk.kty !== 'EC' || curveId === 0 || !jwk.x || !jwk.y)
    throw new Error(
      `eccExternalPublic: an EC P-256 or P-384 public key is needed, not ${jwk.kty} ${jwk.crv}`,
    );
  return {
    type: TPM_ALG.ECC,
    nameAlg: TPM_ALG.SHA256,
    objectAttributes: TPMA_OBJECT.sign | TPMA_OBJECT.userWithAuth,
    authPolicy: EMPTY,
    parameters: {
      symmetric: NO_SYMMETRIC,
      scheme: { scheme: TPM_ALG.ECDSA, hashAlg },
      curveId,
      kdf: NULL_SCHEME,
    },
    unique: { x: Buffer.from(jwk.x, 'base64url'), y: Buffer.from(jwk.y, 'base64url') },
  };
}

/**
 * The persistent handles Umbra uses, in the owner's storage-key range (0x81000000-0x8100ffff, TCG
 * handle registry). 0x81010001 and 0x81010016 are not used: that is the endorsement range, where
 * swtpm_setup and TPM manufacturers put the RSA and ECC EKs.
 */
export const UMBRA_PERSISTENT = {
  /** The storage root key (ECC P-256, eccStorageTemplate): the parent of the keys below. */
  SRK: 0x81000001,
  /** The attestation key (eccAttestationTemplate): Quote and Certify. */
  AK: 0x81000002,
  /** The gateway identity key (eccSigningTemplate('P-256')): link channel-binding signatures. */
  IDENTITY_KEY: 0x81000003,
} as const;

/**
 * The TCG EK Credential Profile's authPolicy for the low-range EK templates: PolicySecret(TPM_RH_ENDORSEMENT)
 * with SHA-256. Using the EK takes a policy session that ran PolicySecret with endorsement authorization.
 */
export const EK_POLICY_SHA256 = new Uint8Array(
  Buffer.from('837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa', 'hex'),
);

/** fixedTPM, fixedParent, sensitiveDataOrigin, adminWithPolicy, restricted, decrypt (0x000300b2). */
const EK_ATTRIBUTES =
  TPMA_OBJECT.fixedTPM |
  TPMA_OBJECT.fixedParent |
  TPMA_OBJECT.sensitiveDataOrigin |
  TPMA_OBJECT.adminWithPolicy |
  TPMA_OBJECT.restricted |
  TPMA_OBJECT.decrypt;

/** The TCG default EK template L-1: RSA-2048, AES-128-CFB, unique 256 zero bytes (EK profile §B.3.3). */
export function rsaEkTemplate(): RsaPublic {
  return {
    type: TPM_ALG.RSA,
    nameAlg: TPM_ALG.SHA256,
    objectAttributes: EK_ATTRIBUTES,
    authPolicy: EK_POLICY_SHA256,
    parameters: { symmetric: AES_128_CFB, scheme: NULL_SCHEME, keyBits: 2048, exponent: 0 },
    unique: new Uint8Array(256),
  };
}

/** The TCG default EK template L-2: ECC NIST P-256, AES-128-CFB, unique x and y 32 zero bytes each. */
export function eccEkTemplate(): EccPublic {
  return {
    type: TPM_ALG.ECC,
    nameAlg: TPM_ALG.SHA256,
    objectAttributes: EK_ATTRIBUTES,
    authPolicy: EK_POLICY_SHA256,
    parameters: { symmetric: AES_128_CFB, scheme: NULL_SCHEME, curveId: TPM_ECC.NIST_P256, kdf: NULL_SCHEME },
    unique: { x: new Uint8Array(32), y: new Uint8Array(32) },
  };
}
