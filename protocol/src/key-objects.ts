// Raw 32-byte X25519 and Ed25519 keys to and from node:crypto KeyObjects.
//
// node:crypto only takes these keys wrapped in DER (SPKI for public, PKCS#8 for private). For these
// two curves the wrapping is a fixed prefix followed by the raw key, so a prefix and a copy replace
// a DER encoder — and run on Node 22, which has no raw key import.

import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';

export const RAW_KEY_BYTES = 32;

// SubjectPublicKeyInfo { AlgorithmIdentifier { OID }, BIT STRING (32 bytes) } — RFC 8410 §4.
export const X25519_SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
// OneAsymmetricKey { version 0, AlgorithmIdentifier { OID }, OCTET STRING { OCTET STRING (32) } } — RFC 8410 §7.
const X25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

function requireRawKey(raw: Uint8Array, what: string): void {
  if (raw.length !== RAW_KEY_BYTES) {
    throw new RangeError(`${what}: expected ${RAW_KEY_BYTES} raw bytes, got ${raw.length}`);
  }
}

export function x25519PrivateKeyObject(raw: Uint8Array): KeyObject {
  requireRawKey(raw, 'X25519 private key');
  return createPrivateKey({ key: Buffer.concat([X25519_PKCS8_PREFIX, raw]), format: 'der', type: 'pkcs8' });
}

export function x25519PublicKeyObject(raw: Uint8Array): KeyObject {
  requireRawKey(raw, 'X25519 public key');
  return createPublicKey({ key: Buffer.concat([X25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
}

export function ed25519PrivateKeyObject(seed: Uint8Array): KeyObject {
  requireRawKey(seed, 'Ed25519 private key seed');
  return createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
}

export function ed25519PublicKeyObject(raw: Uint8Array): KeyObject {
  requireRawKey(raw, 'Ed25519 public key');
  return createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
}

/** The raw 32 bytes of an X25519 or Ed25519 public key (or of the public half of a private key). */
export function rawPublicKey(key: KeyObject): Buffer {
  const spki = (key.type === 'private' ? createPublicKey(key) : key).export({ format: 'der', type: 'spki' });
  return spki.subarray(spki.length - RAW_KEY_BYTES);
}

/** The raw 32 bytes of an X25519 private key, or the 32-byte seed of an Ed25519 one. */
export function rawPrivateKey(key: KeyObject): Buffer {
  const pkcs8 = key.export({ format: 'der', type: 'pkcs8' });
  return pkcs8.subarray(pkcs8.length - RAW_KEY_BYTES);
}
