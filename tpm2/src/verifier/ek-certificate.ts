// EK certificates (TCG EK Credential Profile for TPM 2.0): the manufacturer's certificate of the
// Endorsement Key, stored in NV (RSA 2048 at 0x01c00002, ECC P-256 at 0x01c0000a, the high range
// from 0x01c00012 on). Some TPMs prepend a TCG NV header (0x10 0x01, then a 16-bit big-endian
// length) and NV indices are often larger than the certificate, so the rest is padding. Parsing
// needs no TPM: this is the verifier's side.

import 'reflect-metadata';
import { createPublicKey, type KeyObject } from 'node:crypto';
import * as x509 from '@peculiar/x509';

export class EkCertificateError extends Error {
  override name = 'EkCertificateError';
}

export interface EkCertificate {
  readonly certificate: x509.X509Certificate;
  /** The EK's public key, from the certificate's subjectPublicKeyInfo. */
  readonly publicKey: KeyObject;
  /** The certificate's DER, without the NV header and padding. */
  readonly der: Uint8Array;
}

/** The NV indices of the TCG EK Credential Profile's low-range EK certificates. */
export const EK_CERT_NV_INDEX = { RSA_2048: 0x01c00002, ECC_NIST_P256: 0x01c0000a } as const;

/** The length of the DER SEQUENCE at `offset` (header included), or a reason it is not one. */
function derSequenceLength(bytes: Uint8Array, offset: number): number | string {
  if (bytes.length - offset < 2) return `${bytes.length - offset} bytes is too short for a certificate`;
  if (bytes[offset] !== 0x30)
    return `byte ${offset} is 0x${bytes[offset]!.toString(16).padStart(2, '0')}, not a DER SEQUENCE (0x30)`;
  const first = bytes[offset + 1]!;
  if (first < 0x80) return 2 + first;
  const lengthBytes = first & 0x7f;
  if (lengthBytes === 0 || lengthBytes > 3)
    return `DER length form 0x${first.toString(16)} is not a certificate's`;
  if (bytes.length - offset < 2 + lengthBytes) return 'the DER length is cut off';
  let length = 0;
  for (let i = 0; i < lengthBytes; i++) length = length * 256 + bytes[offset + 2 + i]!;
  return 2 + lengthBytes + length;
}

/** The certificate's DER in NV contents: after a TCG NV header if there is one, without padding. */
export function extractEkCertificateDer(nv: Uint8Array): Uint8Array {
  let offset = 0;
  let declared: number | undefined;
  if (nv.length >= 4 && nv[0] === 0x10 && nv[1] === 0x01) {
    offset = 4;
    declared = (nv[2]! << 8) | nv[3]!;
  }
  const length = derSequenceLength(nv, offset);
  if (typeof length === 'string') throw new EkCertificateError(`EK certificate: ${length}`);
  if (offset + length > nv.length)
    throw new EkCertificateError(
      `EK certificate: the DER SEQUENCE is ${length} bytes but only ${nv.length - offset} follow`,
    );
  if (declared !== undefined && declared < length)
    throw new EkCertificateError(
      `EK certificate: the TCG NV header says ${declared} bytes but the DER SEQUENCE is ${length}`,
    );
  return nv.slice(offset, offset + length);
}

/** Parses an EK certificate as read from NV (or a plain DER certificate). */
export function parseEkCertificate(nv: Uint8Array): EkCertificate {
  const der = extractEkCertificateDer(nv);
  let certificate: x509.X509Certificate;
  try {
    certificate = new x509.X509Certificate(der);
  } catch (error) {
    throw new EkCertificateError(`EK certificate: not an X.509 certificate (${(error as Error).message})`);
  }
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({
      key: Buffer.from(certificate.publicKey.rawData),
      format: 'der',
      type: 'spki',
    });
  } catch (error) {
    throw new EkCertificateError(
      `EK certificate "${certificate.subject}": its public key cannot be used (${(error as Error).message})`,
    );
  }
  return { certificate, publicKey, der };
}

export type EkChainResult =
  | { readonly ok: true; readonly chain: readonly x509.X509Certificate[] }
  | { readonly ok: false; readonly reason: string };

export interface VerifyEkChainOptions {
  /** The time the certificates must be valid at (default now). */
  readonly date?: Date;
  /** The longest chain accepted, EK and root included (default 6). */
  readonly maxLength?: number;
}

function describe(cert: x509.X509Certificate): string {
  return `"${cert.subject}"`;
}

function validAt(cert: x509.X509Certificate, date: Date): string | undefined {
  if (date < cert.notBefore) return `${describe(cert)} is not valid before ${cert.notBefore.toISOString()}`;
  if (date > cert.notAfter) return `${describe(cert)} expired at ${cert.notAfter.toISOString()}`;
  return undefined;
}

function isCa(cert: x509.X509Certificate): boolean {
  return cert.getExtension(x509.BasicConstraintsExtension)?.ca === true;
}

async function signedBy(cert: x509.X509Certificate, issuer: x509.X509Certificate): Promise<boolean> {
  try {
    return await cert.verify({ publicKey: issuer, signatureOnly: true });
  } catch {
    return false;
  }
}

function sameBytes(a: x509.X509Certificate, b: x509.X509Certificate): boolean {
  return Buffer.from(a.rawData).equals(Buffer.from(b.rawData));
}

/**
 * Verifies that `cert` chains to one of `roots` through `intermediates`: each link's issuer name
 * matches, its issuer is a CA (basicConstraints cA), every certificate is valid at the date, and
 * every signature verifies. The EK certificate itself need not be a CA (it is not). On failure the
 * reason names the certificate and what failed.
 */
export async function verifyEkChain(
  cert: x509.X509Certificate,
  roots: readonly x509.X509Certificate[],
  intermediates: readonly x509.X509Certificate[] = [],
  options: VerifyEkChainOptions = {},
): Promise<EkChainResult> {
  const date = options.date ?? new Date();
  const maxLength = options.maxLength ?? 6;
  const chain: x509.X509Certificate[] = [cert];
  let current = cert;
  const expired = validAt(cert, date);
  if (expired) return { ok: false, reason: `EK certificate ${expired}` };
  for (;;) {
    const rootIssuers = roots.filter((c) => c.subject === current.issuer);
    const otherIssuers = intermediates.filter(
      (c) => c.subject === current.issuer && !chain.some((seen) => sameBytes(seen, c)),
    );
    const candidates = [...rootIssuers, ...otherIssuers];
    if (candidates.length === 0)
      return {
        ok: false,
        reason: `unknown issuer: no configured root or intermediate is "${current.issuer}", the issuer of ${describe(current)}`,
      };
    let issuer: x509.X509Certificate | undefined;
    for (const candidate of candidates) {
      if (await signedBy(current, candidate)) {
        issuer = candidate;
        break;
      }
    }
    if (!issuer)
      return {
        ok: false,
        reason: `signature: the signature of ${describe(current)} does not verify with the key of any certificate named "${current.issuer}"`,
      };
    if (!isCa(issuer))
      return {
        ok: false,
        reason: `not a CA: ${describe(issuer)}, the issuer of ${describe(current)}, has no basicConstraints cA`,
      };
    const issuerExpired = validAt(issuer, date);
    if (issuerExpired) return { ok: false, reason: `issuer ${issuerExpired}` };
    chain.push(issuer);
    if (roots.some((root) => sameBytes(root, issuer))) return { ok: true, chain };
    if (chain.length >= maxLength)
      return {
        ok: false,
        reason: `the chain is longer than ${maxLength} certificates without reaching a root`,
      };
    current = issuer;
  }
}
