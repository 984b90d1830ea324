// The TPM 2.0 structures Umbra exchanges (Part 2 §10-12), each with a write and a read half side by
// side. Unions are read by their selector, and a selector the spec does not allow here is a
// TpmFormatError that names it.

import { createPublicKey, type KeyObject } from 'node:crypto';
import { nameOf, TPM_ALG, TPM_ECC, TPM_ST } from './constants.ts';
import { digestSize, isHashAlg, MAX_DIGEST_SIZE } from './hash.ts';
import type { Reader, Writer } from './marshal.ts';

/** MAX_RSA_KEY_BYTES for 4096-bit keys, and MAX_ECC_KEY_BYTES with room for P-521. */
const MAX_RSA_KEY_BYTES = 512;
const MAX_ECC_KEY_BYTES = 128;

// ---------------------------------------------------------------------------------------------------
// Algorithm selectors

function readHashAlg(r: Reader, field: string, allowNull = false): number {
  const alg = r.u16(field);
  if (isHashAlg(alg) || (allowNull && alg === TPM_ALG.NULL)) return alg;
  return r.fail(`${field} is ${nameOf(TPM_ALG, alg)}, not a hash algorithm`);
}

// ---------------------------------------------------------------------------------------------------
// TPMT_SYM_DEF_OBJECT

export interface SymmetricDefinition {
  /** TPM_ALG.NULL for none, otherwise AES/SM4/CAMELLIA with keyBits and mode. */
  readonly algorithm: number;
  readonly keyBits?: number;
  readonly mode?: number;
}

export const NO_SYMMETRIC: SymmetricDefinition = { algorithm: TPM_ALG.NULL };
export const AES_128_CFB: SymmetricDefinition = { algorithm: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB };

function writeSymmetric(w: Writer, s: SymmetricDefinition): void {
  w.u16(s.algorithm);
  if (s.algorithm !== TPM_ALG.NULL) w.u16(s.keyBits ?? 0).u16(s.mode ?? TPM_ALG.NULL);
}

function readSymmetric(r: Reader, field: string): SymmetricDefinition {
  const algorithm = r.u16(`${field}.algorithm`);
  if (algorithm === TPM_ALG.NULL) return NO_SYMMETRIC;
  if (algorithm !== TPM_ALG.AES && algorithm !== TPM_ALG.SM4 && algorithm !== TPM_ALG.CAMELLIA) {
    r.fail(`${field}.algorithm is ${nameOf(TPM_ALG, algorithm)}, not a symmetric block cipher`);
  }
  return { algorithm, keyBits: r.u16(`${field}.keyBits`), mode: r.u16(`${field}.mode`) };
}

// ---------------------------------------------------------------------------------------------------
// Schemes: TPMT_RSA_SCHEME, TPMT_ECC_SCHEME, TPMT_KEYEDHASH_SCHEME, TPMT_KDF_SCHEME, TPMT_SIG_SCHEME

export interface Scheme {
  /** TPM_ALG.NULL, or a scheme such as ECDSA, RSASSA, OAEP, HMAC. */
  readonly scheme: number;
  readonly hashAlg?: number;
  /** ECDAA only. */
  readonly count?: number;
  /** XOR only. */
  readonly kdf?: number;
}

export const NULL_SCHEME: Scheme = { scheme: TPM_ALG.NULL };

/** Schemes whose details are exactly a hash algorithm. */
const HASH_SCHEMES: ReadonlySet<number> = new Set([
  TPM_ALG.RSASSA,
  TPM_ALG.RSAPSS,
  TPM_ALG.OAEP,
  TPM_ALG.ECDSA,
  TPM_ALG.ECDH,
  TPM_ALG.SM2,
  TPM_ALG.ECSCHNORR,
  TPM_ALG.ECMQV,
  TPM_ALG.HMAC,
  TPM_ALG.MGF1,
  TPM_ALG.KDF1_SP800_56A,
  TPM_ALG.KDF2,
  TPM_ALG.KDF1_SP800_108,
]);

function writeScheme(w: Writer, s: Scheme): void {
  w.u16(s.scheme);
  if (s.scheme === TPM_ALG.NULL || s.scheme === TPM_ALG.RSAES) return;
  w.u16(s.hashAlg ?? TPM_ALG.NULL);
  if (s.scheme === TPM_ALG.ECDAA) w.u16(s.count ?? 0);
  if (s.scheme === TPM_ALG.XOR) w.u16(s.kdf ?? TPM_ALG.NULL);
}

function readScheme(r: Reader, field: string, allowed: ReadonlySet<number>): Scheme {
  const scheme = r.u16(`${field}.scheme`);
  if (scheme === TPM_ALG.NULL) return NULL_SCHEME;
  if (!allowed.has(scheme)) r.fail(`${field}.scheme ${nameOf(TPM_ALG, scheme)} is not allowed here`);
  if (scheme === TPM_ALG.RSAES) return { scheme };
  const hashAlg = readHashAlg(r, `${field}.hashAlg`);
  if (scheme === TPM_ALG.ECDAA) return { scheme, hashAlg, count: r.u16(`${field}.count`) };
  if (scheme === TPM_ALG.XOR) return { scheme, hashAlg, kdf: r.u16(`${field}.kdf`) };
  if (!HASH_SCHEMES.has(scheme)) r.fail(`${field}.scheme ${nameOf(TPM_ALG, scheme)} is not supported`);
  return { scheme, hashAlg };
}

const RSA_SCHEMES: ReadonlySet<number> = new Set([
  TPM_ALG.RSASSA,
  TPM_ALG.RSAPSS,
  TPM_ALG.RSAES,
  TPM_ALG.OAEP,
]);
const ECC_SCHEMES: ReadonlySet<number> = new Set([
  TPM_ALG.ECDSA,
  TPM_ALG.ECDH,
  TPM_ALG.ECDAA,
  TPM_ALG.SM2,
  TPM_ALG.ECSCHNORR,
  TPM_ALG.ECMQV,
]);
const KEYEDHASH_SCHEMES: ReadonlySet<number> = new Set([TPM_ALG.HMAC, TPM_ALG.XOR]);
const KDF_SCHEMES: ReadonlySet<number> = new Set([
  TPM_ALG.MGF1,
  TPM_ALG.KDF1_SP800_56A,
  TPM_ALG.KDF2,
  TPM_ALG.KDF1_SP800_108,
]);

/** TPMT_SIG_SCHEME, as Sign and Quote take it. */
export function writeSigScheme(w: Writer, s: Scheme): void {
  writeScheme(w, s);
}

// ---------------------------------------------------------------------------------------------------
// TPMT_PUBLIC

interface PublicCommon {
  readonly nameAlg: number;
  /** TPMA_OBJECT bits. */
  readonly objectAttributes: number;
  readonly authPolicy: Uint8Array;
}

export interface RsaPublic extends PublicCommon {
  readonly type: typeof TPM_ALG.RSA;
  readonly parameters: {
    readonly symmetric: SymmetricDefinition;
    readonly scheme: Scheme;
    readonly keyBits: number;
    /** 0 means the default, 65537. */
    readonly exponent: number;
  };
  /** The modulus (empty in a template). */
  readonly unique: Uint8Array;
}

export interface EccPublic extends PublicCommon {
  readonly type: typeof TPM_ALG.ECC;
  readonly parameters: {
    readonly symmetric: SymmetricDefinition;
    readonly scheme: Scheme;
    readonly curveId: number;
    readonly kdf: Scheme;
  };
  /** The public point (empty coordinates in a template). */
  readonly unique: { readonly x: Uint8Array; readonly y: Uint8Array };
}

export interface KeyedHashPublic extends PublicCommon {
  readonly type: typeof TPM_ALG.KEYEDHASH;
  readonly parameters: { readonly scheme: Scheme };
  readonly unique: Uint8Array;
}

export interface SymCipherPublic extends PublicCommon {
  readonly type: typeof TPM_ALG.SYMCIPHER;
  readonly parameters: { readonly symmetric: SymmetricDefinition };
  readonly unique: Uint8Array;
}

export type PublicArea = RsaPublic | EccPublic | KeyedHashPublic | SymCipherPublic;

export function writePublicArea(w: Writer, p: PublicArea): void {
  w.u16(p.type).u16(p.nameAlg).u32(p.objectAttributes).tpm2b(p.authPolicy);
  switch (p.type) {
    case TPM_ALG.RSA:
      writeSymmetric(w, p.parameters.symmetric);
      writeScheme(w, p.parameters.scheme);
      w.u16(p.parameters.keyBits).u32(p.parameters.exponent);
      w.tpm2b(p.unique);
      return;
    case TPM_ALG.ECC:
      writeSymmetric(w, p.parameters.symmetric);
      writeScheme(w, p.parameters.scheme);
      w.u16(p.parameters.curveId);
      writeScheme(w, p.parameters.kdf);
      w.tpm2b(p.unique.x).tpm2b(p.unique.y);
      return;
    case TPM_ALG.KEYEDHASH:
      writeScheme(w, p.parameters.scheme);
      w.tpm2b(p.unique);
      return;
    case TPM_ALG.SYMCIPHER:
      writeSymmetric(w, p.parameters.symmetric);
      w.tpm2b(p.unique);
      return;
  }
}

export function readPublicArea(r: Reader): PublicArea {
  const type = r.u16('type');
  const nameAlg = readHashAlg(r, 'nameAlg');
  const objectAttributes = r.u32('objectAttributes');
  const authPolicy = r.tpm2b('authPolicy', MAX_DIGEST_SIZE);
  const common = { nameAlg, objectAttributes, authPolicy };
  switch (type) {
    case TPM_ALG.RSA: {
      const symmetric = readSymmetric(r, 'parameters.symmetric');
      const scheme = readScheme(r, 'parameters.scheme', RSA_SCHEMES);
      const keyBits = r.u16('parameters.keyBits');
      const exponent = r.u32('parameters.exponent');
      const unique = r.tpm2b('unique.rsa', MAX_RSA_KEY_BYTES);
      return { type, ...common, parameters: { symmetric, scheme, keyBits, exponent }, unique };
    }
    case TPM_ALG.ECC: {
      const symmetric = readSymmetric(r, 'parameters.symmetric');
      const scheme = readScheme(r, 'parameters.scheme', ECC_SCHEMES);
      const curveId = r.u16('parameters.curveID');
      const kdf = readScheme(r, 'parameters.kdf', KDF_SCHEMES);
      const x = r.tpm2b('unique.ecc.x', MAX_ECC_KEY_BYTES);
      const y = r.tpm2b('unique.ecc.y', MAX_ECC_KEY_BYTES);
      return { type, ...common, parameters: { symmetric, scheme, curveId, kdf }, unique: { x, y } };
    }
    case TPM_ALG.KEYEDHASH: {
      const scheme = readScheme(r, 'parameters.scheme', KEYEDHASH_SCHEMES);
      return {
        type,
        ...common,
        parameters: { scheme },
        unique: r.tpm2b('unique.keyedHash', MAX_DIGEST_SIZE),
      };
    }
    case TPM_ALG.SYMCIPHER: {
      const symmetric = readSymmetric(r, 'parameters.symmetric');
      return { type, ...common, parameters: { symmetric }, unique: r.tpm2b('unique.sym', MAX_DIGEST_SIZE) };
    }
    default:
      return r.fail(`type is ${nameOf(TPM_ALG, type)}, not RSA, ECC, KEYEDHASH or SYMCIPHER`);
  }
}

// ---------------------------------------------------------------------------------------------------
// Public keys as node:crypto KeyObjects

const CURVES: Readonly<Record<number, { readonly jwk: string; readonly bytes: number }>> = {
  [TPM_ECC.NIST_P256]: { jwk: 'P-256', bytes: 32 },
  [TPM_ECC.NIST_P384]: { jwk: 'P-384', bytes: 48 },
  [TPM_ECC.NIST_P521]: { jwk: 'P-521', bytes: 66 },
};

/** The size in bytes of a coordinate (and of r and s) on a NIST curve the TPM names. */
export function curveSize(curveId: number): number {
  const curve = CURVES[curveId];
  if (!curve)
    throw new Error(`ECC curve ${nameOf(TPM_ECC, curveId)} is not supported (NIST P-256, P-384, P-521)`);
  return curve.bytes;
}

/** Big-endian unsigned integer bytes, left-padded (or stripped of leading zeros) to exactly `size`. */
export function fixedWidth(value: Uint8Array, size: number, what: string): Uint8Array {
  let start = 0;
  while (value.length - start > size && value[start] === 0) start++;
  const digits = value.subarray(start);
  if (digits.length > size) throw new Error(`${what} is ${digits.length} bytes, more than ${size}`);
  const out = new Uint8Array(size);
  out.set(digits, size - digits.length);
  return out;
}

/** The public key of an RSA or ECC TPMT_PUBLIC, for node:crypto. */
export function publicKeyObject(p: PublicArea): KeyObject {
  if (p.type === TPM_ALG.ECC) {
    const size = curveSize(p.parameters.curveId);
    const crv = CURVES[p.parameters.curveId]!.jwk;
    const x = Buffer.from(fixedWidth(p.unique.x, size, 'x')).toString('base64url');
    const y = Buffer.from(fixedWidth(p.unique.y, size, 'y')).toString('base64url');
    return createPublicKey({ key: { kty: 'EC', crv, x, y }, format: 'jwk' });
  }
  if (p.type === TPM_ALG.RSA) {
    const e = exponentBase64url(p.parameters.exponent === 0 ? 65537 : p.parameters.exponent);
    return createPublicKey({
      key: { kty: 'RSA', n: Buffer.from(p.unique).toString('base64url'), e },
      format: 'jwk',
    });
  }
  throw new Error(`a ${nameOf(TPM_ALG, p.type)} object has no public key`);
}

/** The minimal big-endian form of an RSA exponent, as JWK wants it. */
function exponentBase64url(exponent: number): string {
  const bytes = Buffer.alloc(4);
  bytes.writeUInt32BE(exponent);
  let start = 0;
  while (start < 3 && bytes[start] === 0) start++;
  return bytes.subarray(start).toString('base64url');
}

// ---------------------------------------------------------------------------------------------------
// TPML_PCR_SELECTION

export interface PcrSelection {
  readonly hash: number;
  /** PCR indices, 0-based. */
  readonly pcrs: readonly number[];
}

/** PCR_SELECT_MIN for a 24-PCR TPM: selections are at least 3 bytes. */
const PCR_SELECT_MIN = 3;
const PCR_SELECT_MAX = 32;

export function writePcrSelections(w: Writer, selections: readonly PcrSelection[]): void {
  w.u32(selections.length);
  for (const { hash, pcrs } of selections) {
    const max = pcrs.reduce((a, b) => Math.max(a, b), -1);
    const size = Math.max(PCR_SELECT_MIN, Math.ceil((max + 1) / 8));
    const bits = new Uint8Array(size);
    for (const pcr of pcrs) {
      if (!Number.isInteger(pcr) || pcr < 0 || pcr >= PCR_SELECT_MAX * 8)
        throw new RangeError(`PCR index ${pcr}`);
      bits[pcr >> 3]! |= 1 << (pcr & 7);
    }
    w.u16(hash).u8(size).bytes(bits);
  }
}

export function readPcrSelections(r: Reader, field: string): PcrSelection[] {
  const count = r.count(field, 3, 16);
  const selections: PcrSelection[] = [];
  for (let i = 0; i < count; i++) {
    const hash = r.u16(`${field}[${i}].hash`);
    const size = r.u8(`${field}[${i}].sizeofSelect`);
    if (size > PCR_SELECT_MAX) r.fail(`${field}[${i}].sizeofSelect is ${size}, more than ${PCR_SELECT_MAX}`);
    const bits = r.bytes(size, `${field}[${i}].pcrSelect`);
    const pcrs: number[] = [];
    for (let pcr = 0; pcr < size * 8; pcr++) if (bits[pcr >> 3]! & (1 << (pcr & 7))) pcrs.push(pcr);
    selections.push({ hash, pcrs });
  }
  return selections;
}

// ---------------------------------------------------------------------------------------------------
// TPMT_SIGNATURE

export type Signature =
  | { readonly sigAlg: typeof TPM_ALG.NULL }
  | {
      readonly sigAlg: typeof TPM_ALG.RSASSA | typeof TPM_ALG.RSAPSS;
      readonly hash: number;
      readonly sig: Uint8Array;
    }
  | {
      readonly sigAlg:
        | typeof TPM_ALG.ECDSA
        | typeof TPM_ALG.ECDAA
        | typeof TPM_ALG.SM2
        | typeof TPM_ALG.ECSCHNORR;
      readonly hash: number;
      readonly r: Uint8Array;
      readonly s: Uint8Array;
    }
  | { readonly sigAlg: typeof TPM_ALG.HMAC; readonly hash: number; readonly digest: Uint8Array };

export function writeSignature(w: Writer, s: Signature): void {
  w.u16(s.sigAlg);
  switch (s.sigAlg) {
    case TPM_ALG.NULL:
      return;
    case TPM_ALG.RSASSA:
    case TPM_ALG.RSAPSS:
      w.u16(s.hash).tpm2b(s.sig);
      return;
    case TPM_ALG.HMAC:
      w.u16(s.hash).bytes(s.digest);
      return;
    default:
      w.u16(s.hash).tpm2b(s.r).tpm2b(s.s);
  }
}

export function readSignature(r: Reader, field: string): Signature {
  const sigAlg = r.u16(`${field}.sigAlg`);
  switch (sigAlg) {
    case TPM_ALG.NULL:
      return { sigAlg };
    case TPM_ALG.RSASSA:
    case TPM_ALG.RSAPSS:
      return {
        sigAlg,
        hash: readHashAlg(r, `${field}.hash`),
        sig: r.tpm2b(`${field}.sig`, MAX_RSA_KEY_BYTES),
      };
    case TPM_ALG.ECDSA:
    case TPM_ALG.ECDAA:
    case TPM_ALG.SM2:
    case TPM_ALG.ECSCHNORR: {
      const hash = readHashAlg(r, `${field}.hash`);
      const sr = r.tpm2b(`${field}.signatureR`, MAX_ECC_KEY_BYTES);
      const ss = r.tpm2b(`${field}.signatureS`, MAX_ECC_KEY_BYTES);
      return { sigAlg, hash, r: sr, s: ss };
    }
    case TPM_ALG.HMAC: {
      const hash = r.u16(`${field}.hash`);
      if (!isHashAlg(hash)) r.fail(`${field}.hash is ${nameOf(TPM_ALG, hash)}, not a hash algorithm`);
      return { sigAlg, hash, digest: r.bytes(digestSize(hash), `${field}.digest`) };
    }
    default:
      return r.fail(`${field}.sigAlg is ${nameOf(TPM_ALG, sigAlg)}, not a signature scheme`);
  }
}

/**
 * An ECDSA signature as IEEE P1363 (r ‖ s, each exactly the curve's size), the form node:crypto
 * verifies with `dsaEncoding: 'ieee-p1363'` and WebCrypto uses. TPMs may drop leading zero bytes of
 * r or s, so they are padded back here.
 */
export function ecdsaSignatureP1363(signature: Signature, curveId: number): Uint8Array {
  if (signature.sigAlg !== TPM_ALG.ECDSA) {
    throw new Error(`expected an ECDSA signature, got ${nameOf(TPM_ALG, signature.sigAlg)}`);
  }
  const size = curveSize(curveId);
  const out = new Uint8Array(size * 2);
  out.set(fixedWidth(signature.r, size, 'signature r'), 0);
  out.set(fixedWidth(signature.s, size, 'signature s'), size);
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Tickets

/** TPMT_TK_HASHCHECK for a digest the TPM did not compute: Sign with an unrestricted key. */
export function writeNullHashcheckTicket(w: Writer): void {
  w.u16(TPM_ST.HASHCHECK).u32(0x40000007).tpm2b(new Uint8Array());
}

export interface Ticket {
  readonly tag: number;
  readonly hierarchy: number;
  readonly digest: Uint8Array;
}

export function readTicket(r: Reader, field: string): Ticket {
  return {
    tag: r.u16(`${field}.tag`),
    hierarchy: r.u32(`${field}.hierarchy`),
    digest: r.tpm2b(`${field}.digest`, MAX_DIGEST_SIZE),
  };
}

// ---------------------------------------------------------------------------------------------------
// TPMS_ATTEST (Part 2 §10.12): what Quote and Certify sign

/** TPM_GENERATED_VALUE: "\xffTCG", the first field of every TPMS_ATTEST the TPM makes. */
export const TPM_GENERATED_VALUE = 0xff544347;

export interface ClockInfo {
  /** Milliseconds the TPM has been powered, kept across restarts. */
  readonly clock: bigint;
  /** TPM Resets since the last TPM2_Clear. */
  readonly resetCount: number;
  /** TPM Restarts and Resumes since the last Reset. */
  readonly restartCount: number;
  /** NO if clock may have gone backwards since it was last reported. */
  readonly safe: boolean;
}

export type AttestInfo =
  | {
      readonly type: typeof TPM_ST.ATTEST_QUOTE;
      readonly pcrSelect: PcrSelection[];
      readonly pcrDigest: Uint8Array;
    }
  | {
      readonly type: typeof TPM_ST.ATTEST_CERTIFY;
      readonly name: Uint8Array;
      readonly qualifiedName: Uint8Array;
    };

export interface Attest {
  readonly magic: number;
  readonly qualifiedSigner: Uint8Array;
  readonly extraData: Uint8Array;
  readonly clockInfo: ClockInfo;
  readonly firmwareVersion: bigint;
  readonly attested: AttestInfo;
}

/** TPM2B_NAME holds a handle (4 bytes) or a hash algorithm and a digest. */
const MAX_NAME_BYTES = 2 + MAX_DIGEST_SIZE;
/** TPM2B_DATA holds at most sizeof(TPMT_HA). */
export const MAX_DATA_SIZE = 2 + MAX_DIGEST_SIZE;

/**
 * Parses TPMS_ATTEST (Quote and Certify; other types are refused). The magic value must be
 * TPM_GENERATED_VALUE: anything else was not produced by a TPM and must not be believed.
 */
export function readAttest(r: Reader): Attest {
  const magic = r.u32('magic');
  if (magic !== TPM_GENERATED_VALUE)
    r.fail(`magic is 0x${magic.toString(16)}, not TPM_GENERATED_VALUE (0xff544347)`);
  const type = r.u16('type');
  const qualifiedSigner = r.tpm2b('qualifiedSigner', MAX_NAME_BYTES);
  const extraData = r.tpm2b('extraData', MAX_DATA_SIZE);
  const clockInfo: ClockInfo = {
    clock: r.u64('clockInfo.clock'),
    resetCount: r.u32('clockInfo.resetCount'),
    restartCount: r.u32('clockInfo.restartCount'),
    safe: r.bool('clockInfo.safe'),
  };
  const firmwareVersion = r.u64('firmwareVersion');
  let attested: AttestInfo;
  switch (type) {
    case TPM_ST.ATTEST_QUOTE:
      attested = {
        type,
        pcrSelect: readPcrSelections(r, 'attested.quote.pcrSelect'),
        pcrDigest: r.tpm2b('attested.quote.pcrDigest', MAX_DIGEST_SIZE),
      };
      break;
    case TPM_ST.ATTEST_CERTIFY:
      attested = {
        type,
        name: r.tpm2b('attested.certify.name', MAX_NAME_BYTES),
        qualifiedName: r.tpm2b('attested.certify.qualifiedName', MAX_NAME_BYTES),
      };
      break;
    default:
      return r.fail(`type is ${nameOf(TPM_ST, type)}, not ATTEST_QUOTE or ATTEST_CERTIFY`);
  }
  return { magic, qualifiedSigner, extraData, clockInfo, firmwareVersion, attested };
}

// ---------------------------------------------------------------------------------------------------
// TPMS_NV_PUBLIC (Part 2 §13.5): an NV index's public area; its Name is nameAlg ‖ H(these bytes)

export interface NvPublic {
  readonly nvIndex: number;
  readonly nameAlg: number;
  /** TPMA_NV bits. */
  readonly attributes: number;
  readonly authPolicy: Uint8Array;
  readonly dataSize: number;
}

export function readNvPublic(r: Reader): NvPublic {
  return {
    nvIndex: r.u32('nvIndex'),
    nameAlg: r.u16('nameAlg'),
    attributes: r.u32('attributes'),
    authPolicy: r.tpm2b('authPolicy', MAX_DIGEST_SIZE),
    dataSize: r.u16('dataSize'),
  };
}

export function writeNvPublic(w: Writer, p: NvPublic): void {
  w.u32(p.nvIndex).u16(p.nameAlg).u32(p.attributes).tpm2b(p.authPolicy).u16(p.dataSize);
}
