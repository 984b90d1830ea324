// MakeCredential without a TPM (TPM 2.0 Part 1 §24, Credential Protection; Part 1 §11.4.9 KDFa and
// §11.4.10.3 KDFe): the verifier protects a secret so that only the TPM holding the EK, and only for
// an object with the given Name, can recover it with TPM2_ActivateCredential.
//
//   seed            RSA EK: random, nameAlg-digest-sized, encrypted with RSA-OAEP (nameAlg, label "IDENTITY\0")
//                   ECC EK: KDFe(nameAlg, Z, "IDENTITY", ephemeral.x, EK.x), Z the ECDH x-coordinate;
//                   the encrypted secret is the ephemeral point (TPMS_ECC_POINT)
//   symKey          KDFa(nameAlg, seed, "STORAGE", name, "", symmetric.keyBits)
//   encIdentity     AES-CFB(symKey, IV = 0) over TPM2B_DIGEST(secret)
//   hmacKey         KDFa(nameAlg, seed, "INTEGRITY", "", "", digest size)
//   outerHMAC       HMAC(nameAlg, hmacKey, encIdentity ‖ name)
//   credentialBlob  TPM2B_ID_OBJECT { TPM2B_DIGEST(outerHMAC) ‖ encIdentity }
//   encryptedSecret TPM2B_ENCRYPTED_SECRET

import {
  constants,
  createCipheriv,
  createECDH,
  createHash,
  createHmac,
  type KeyObject,
  publicEncrypt,
  randomBytes,
} from 'node:crypto';
import { nameOf, TPM_ALG, TPM_ECC } from '../constants.ts';
import { digestSize, isHashAlg, nodeHashName } from '../hash.ts';
import { Reader, Writer } from '../marshal.ts';
import {
  AES_128_CFB,
  curveSize,
  fixedWidth,
  type PublicArea,
  publicKeyObject,
  readPublicArea,
  type SymmetricDefinition,
} from '../structures.ts';

export class MakeCredentialError extends Error {
  override name = 'MakeCredentialError';
}

/**
 * The EK: its TPMT_PUBLIC (marshalled or parsed), or a public key (e.g. from its certificate) with
 * the nameAlg and symmetric definition of the template it was created from (default: the TCG
 * low-range templates L-1 and L-2, SHA-256 and AES-128-CFB).
 */
export type EkPublic =
  | Uint8Array
  | PublicArea
  | { readonly key: KeyObject; readonly nameAlg?: number; readonly symmetric?: SymmetricDefinition };

export interface Credential {
  /** TPM2B_ID_OBJECT, as TPM2_ActivateCredential takes it (size included). */
  readonly credentialBlob: Uint8Array;
  /** TPM2B_ENCRYPTED_SECRET, as TPM2_ActivateCredential takes it (size included). */
  readonly encryptedSecret: Uint8Array;
}

const LABEL_IDENTITY = 'IDENTITY';

function labelBytes(label: string): Uint8Array {
  return new Uint8Array(Buffer.from(`${label}\0`, 'latin1'));
}

function u32(value: number): Uint8Array {
  return new Writer().u32(value).finish();
}

/** KDFa (SP 800-108 counter mode with HMAC), Part 1 §11.4.9.2. */
export function kdfa(
  hashAlg: number,
  key: Uint8Array,
  label: string,
  contextU: Uint8Array,
  contextV: Uint8Array,
  bits: number,
): Uint8Array {
  const bytes = Math.ceil(bits / 8);
  const out = new Uint8Array(bytes);
  let filled = 0;
  for (let counter = 1; filled < bytes; counter++) {
    const hmac = createHmac(nodeHashName(hashAlg), key);
    hmac.update(u32(counter)).update(labelBytes(label)).update(contextU).update(contextV).update(u32(bits));
    const block = hmac.digest();
    out.set(block.subarray(0, Math.min(block.length, bytes - filled)), filled);
    filled += block.length;
  }
  if (bits % 8 !== 0) out[0] = out[0]! & ((1 << (bits % 8)) - 1);
  return out;
}

/** KDFe (SP 800-56A concatenation KDF), Part 1 §11.4.10.3. */
export function kdfe(
  hashAlg: number,
  z: Uint8Array,
  label: string,
  partyU: Uint8Array,
  partyV: Uint8Array,
  bits: number,
): Uint8Array {
  const bytes = Math.ceil(bits / 8);
  const out = new Uint8Array(bytes);
  let filled = 0;
  for (let counter = 1; filled < bytes; counter++) {
    const h = createHash(nodeHashName(hashAlg));
    h.update(u32(counter)).update(z).update(labelBytes(label)).update(partyU).update(partyV);
    const block = h.digest();
    out.set(block.subarray(0, Math.min(block.length, bytes - filled)), filled);
    filled += block.length;
  }
  if (bits % 8 !== 0) out[0] = out[0]! & ((1 << (bits % 8)) - 1);
  return out;
}

const NODE_CURVES: Readonly<Record<number, string>> = {
  [TPM_ECC.NIST_P256]: 'prime256v1',
  [TPM_ECC.NIST_P384]: 'secp384r1',
  [TPM_ECC.NIST_P521]: 'secp521r1',
};

const JWK_CURVES: Readonly<Record<string, number>> = {
  'P-256': TPM_ECC.NIST_P256,
  'P-384': TPM_ECC.NIST_P384,
  'P-521': TPM_ECC.NIST_P521,
};

interface ResolvedEk {
  readonly key: KeyObject;
  readonly nameAlg: number;
  readonly symmetric: SymmetricDefinition;
  /** ECC only: the curve and the EK's x coordinate as the TPM holds it. */
  readonly curveId?: number;
  readonly x?: Uint8Array;
  readonly y?: Uint8Array;
}

function resolveEk(ek: EkPublic): ResolvedEk {
  if (ek instanceof Uint8Array) {
    const r = new Reader(ek, 'EK TPMT_PUBLIC');
    const area = readPublicArea(r);
    r.end();
    return resolveEk(area);
  }
  if ('type' in ek) {
    if (ek.type !== TPM_ALG.RSA && ek.type !== TPM_ALG.ECC)
      throw new MakeCredentialError(`the EK is a ${nameOf(TPM_ALG, ek.type)} object, not RSA or ECC`);
    const base = { key: publicKeyObject(ek), nameAlg: ek.nameAlg, symmetric: ek.parameters.symmetric };
    if (ek.type === TPM_ALG.ECC)
      return { ...base, curveId: ek.parameters.curveId, x: ek.unique.x, y: ek.unique.y };
    return base;
  }
  const nameAlg = ek.nameAlg ?? TPM_ALG.SHA256;
  const symmetric = ek.symmetric ?? AES_128_CFB;
  if (ek.key.type !== 'public') throw new MakeCredentialError('the EK key must be a public key');
  if (ek.key.asymmetricKeyType === 'rsa') return { key: ek.key, nameAlg, symmetric };
  if (ek.key.asymmetricKeyType === 'ec') {
    const jwk = ek.key.export({ format: 'jwk' });
    const curveId = jwk.crv === undefined ? undefined : JWK_CURVES[jwk.crv];
    if (curveId === undefined || !jwk.x || !jwk.y)
      throw new MakeCredentialError(`the EK's curve ${jwk.crv ?? '?'} is not NIST P-256, P-384 or P-521`);
    return {
      key: ek.key,
      nameAlg,
      symmetric,
      curveId,
      x: new Uint8Array(Buffer.from(jwk.x, 'base64url')),
      y: new Uint8Array(Buffer.from(jwk.y, 'base64url')),
    };
  }
  throw new MakeCredentialError(`the EK key is ${ek.key.asymmetricKeyType}, not RSA or EC`);
}

/** The seed and its TPM2B_ENCRYPTED_SECRET body for the EK. */
function protectSeed(ek: ResolvedEk): { seed: Uint8Array; secret: Uint8Array } {
  const size = digestSize(ek.nameAlg);
  if (ek.curveId === undefined) {
    const seed = new Uint8Array(randomBytes(size));
    const secret = publicEncrypt(
      {
        key: ek.key,
        padding: constants.RSA_PKCS1_OAEP_PADDING,
        oaepHash: nodeHashName(ek.nameAlg),
        oaepLabel: Buffer.from(labelBytes(LABEL_IDENTITY)),
      },
      seed,
    );
    return { seed, secret: new Uint8Array(secret) };
  }
  const curve = NODE_CURVES[ek.curveId];
  if (!curve) throw new MakeCredentialError(`ECC curve ${nameOf(TPM_ECC, ek.curveId)} is not supported`);
  const width = curveSize(ek.curveId);
  const ekX = fixedWidth(ek.x!, width, 'EK x');
  const ekY = fixedWidth(ek.y!, width, 'EK y');
  const ecdh = createECDH(curve);
  const ephemeral = ecdh.generateKeys(); // uncompressed: 0x04 ‖ x ‖ y
  const z = fixedWidth(
    new Uint8Array(ecdh.computeSecret(Buffer.concat([Buffer.from([4]), ekX, ekY]))),
    width,
    'Z',
  );
  const ephX = new Uint8Array(ephemeral.subarray(1, 1 + width));
  const ephY = new Uint8Array(ephemeral.subarray(1 + width));
  const seed = kdfe(ek.nameAlg, z, LABEL_IDENTITY, ephX, ekX, size * 8);
  return { seed, secret: new Writer().tpm2b(ephX).tpm2b(ephY).finish() };
}

/**
 * TPM2_MakeCredential in software: protects `secret` (at most the EK nameAlg's digest size) for the
 * object named `objectName` (e.g. the AK's Name, nameAlg ‖ digest) under the EK.
 */
export function makeCredential(ek: EkPublic, objectName: Uint8Array, secret: Uint8Array): Credential {
  const resolved = resolveEk(ek);
  const { nameAlg, symmetric } = resolved;
  if (!isHashAlg(nameAlg))
    throw new MakeCredentialError(`the EK nameAlg ${nameOf(TPM_ALG, nameAlg)} is not a hash`);
  const hashSize = digestSize(nameAlg);
  if (secret.length > hashSize)
    throw new MakeCredentialError(
      `the secret is ${secret.length} bytes; the EK's nameAlg ${nameOf(TPM_ALG, nameAlg)} allows at most ${hashSize}`,
    );
  if (objectName.length < 2) throw new MakeCredentialError('the object Name is empty');
  if (symmetric.algorithm !== TPM_ALG.AES || symmetric.mode !== TPM_ALG.CFB)
    throw new MakeCredentialError(
      `the EK's symmetric algorithm is ${nameOf(TPM_ALG, symmetric.algorithm)}/${nameOf(TPM_ALG, symmetric.mode ?? TPM_ALG.NULL)}, not AES-CFB`,
    );
  const keyBits = symmetric.keyBits ?? 0;
  if (keyBits !== 128 && keyBits !== 192 && keyBits !== 256)
    throw new MakeCredentialError(`the EK's AES key size ${keyBits} is not 128, 192 or 256`);

  const { seed, secret: encryptedSeed } = protectSeed(resolved);
  const symKey = kdfa(nameAlg, seed, 'STORAGE', objectName, new Uint8Array(0), keyBits);
  const plain = new Writer().tpm2b(secret).finish();
  const cipher = createCipheriv(`aes-${keyBits}-cfb`, symKey, Buffer.alloc(16));
  const encIdentity = new Uint8Array(Buffer.concat([cipher.update(plain), cipher.final()]));
  const hmacKey = kdfa(nameAlg, seed, 'INTEGRITY', new Uint8Array(0), new Uint8Array(0), hashSize * 8);
  const outerHmac = new Uint8Array(
    createHmac(nodeHashName(nameAlg), hmacKey).update(encIdentity).update(objectName).digest(),
  );
  return {
    credentialBlob: new Writer().sized16((w) => w.tpm2b(outerHmac).bytes(encIdentity)).finish(),
    encryptedSecret: new Writer().tpm2b(encryptedSeed).finish(),
  };
}

/** tpm2-tools' credential file (tpm2_makecredential -o, tpm2_activatecredential -i). */
export const TPM2_TOOLS_CREDENTIAL_MAGIC = 0xbadcc0de;

/** The file tpm2_activatecredential -i reads: magic, version 1, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET. */
export function toTpm2ToolsCredentialFile(credential: Credential): Uint8Array {
  return new Writer()
    .u32(TPM2_TOOLS_CREDENTIAL_MAGIC)
    .u32(1)
    .bytes(credential.credentialBlob)
    .bytes(credential.encryptedSecret)
    .finish();
}

/** Reads tpm2-tools' credential file (as tpm2_makecredential writes it) into its two TPM2Bs. */
export function fromTpm2ToolsCredentialFile(file: Uint8Array): Credential {
  const r = new Reader(file, 'tpm2-tools credential file');
  const magic = r.u32('magic');
  if (magic !== TPM2_TOOLS_CREDENTIAL_MAGIC) r.fail(`magic is 0x${magic.toString(16)}, not 0xbadcc0de`);
  const version = r.u32('version');
  if (version !== 1) r.fail(`version is ${version}, not 1`);
  const blobStart = r.offset;
  r.tpm2b('credentialBlob');
  const credentialBlob = file.slice(blobStart, r.offset);
  const secretStart = r.offset;
  r.tpm2b('secret');
  const encryptedSecret = file.slice(secretStart, r.offset);
  r.end();
  return { credentialBlob, encryptedSecret };
}
