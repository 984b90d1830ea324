// The CA pin: "sha256/" + base64(SHA-256(SubjectPublicKeyInfo DER)), as HPKP spelled it. It pins the
// key rather than the certificate, so re-issuing the CA certificate with the same key (new validity,
// new extensions) keeps every enrollment token and client configuration valid.

import { createHash, timingSafeEqual, X509Certificate } from 'node:crypto';

export const PIN_PREFIX = 'sha256/';
export const PIN_DIGEST_BYTES = 32;
const PIN_PATTERN = /^sha256\/[A-Za-z0-9+/]{43}=$/;

/** The pin of a certificate given as PEM or DER. */
export function pinOf(certificate: string | Uint8Array | X509Certificate): string {
  const cert = certificate instanceof X509Certificate ? certificate : new X509Certificate(certificate);
  const spki = cert.publicKey.export({ type: 'spki', format: 'der' });
  return PIN_PREFIX + createHash('sha256').update(spki).digest('base64');
}

export function isPin(text: string): boolean {
  return PIN_PATTERN.test(text);
}

export function pinFromDigest(digest: Uint8Array): string {
  return PIN_PREFIX + Buffer.from(digest).toString('base64');
}

export function digestFromPin(pin: string): Buffer {
  return Buffer.from(pin.slice(PIN_PREFIX.length), 'base64');
}

/**
 * Whether `certificate` has the pinned key. Constant time: both sides are hashed first so that neither
 * the length nor the first differing byte of the expected pin shows in the timing.
 */
export function verifyPin(certificate: string | Uint8Array | X509Certificate, pin: string): boolean {
  let actual: string;
  try {
    actual = pinOf(certificate);
  } catch {
    return false;
  }
  const a = createHash('sha256').update(actual).digest();
  const b = createHash('sha256').update(String(pin)).digest();
  return timingSafeEqual(a, b);
}
