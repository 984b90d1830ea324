// Key material and how it is written down: 32-byte keys as base64 (the WireGuard convention), ids
// derived from public keys, and the JSON files that hold a client identity or a gateway key.
//
// Key bytes never appear in an error message: a message that quotes a malformed private key may end
// up in a log or a support ticket.

import { createHash, generateKeyPairSync, type KeyObject, timingSafeEqual } from 'node:crypto';
import {
  ed25519PrivateKeyObject,
  RAW_KEY_BYTES,
  rawPrivateKey,
  rawPublicKey,
  x25519PrivateKeyObject,
} from './key-objects.ts';

export { ed25519PublicKeyObject } from './key-objects.ts';
export {
  readSecretFile,
  SecretFileError,
  type WriteSecretFileOptions,
  writeSecretFile,
} from './secret-file.ts';

export const KEY_TEXT_LENGTH = 44; // base64 of 32 bytes, one '=' of padding
export const ID_BYTES = 16;

// Domain separation for the ids: an identity id and a gateway key id never collide, even for the
// same 32 bytes, and neither is a bare hash someone else might also compute.
const IDENTITY_ID_LABEL = Buffer.from('umbra identity id v1');
const GATEWAY_KEY_ID_LABEL = Buffer.from('umbra gateway key id v1');

const IDENTITY_FILE_KIND = 'identity';
const GATEWAY_KEY_FILE_KIND = 'gateway-key';
const FILE_VERSION = 1;

const BASE64_KEY = /^[A-Za-z0-9+/]{43}=$/;

/** A key file or key text that cannot be used; the message names the input and what was expected. */
export class KeyFormatError extends Error {
  override name = 'KeyFormatError';
}

export function encodeKey(raw: Uint8Array): string {
  if (raw.length !== RAW_KEY_BYTES) {
    throw new RangeError(`encodeKey: expected a ${RAW_KEY_BYTES}-byte key, got ${raw.length} bytes`);
  }
  return Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('base64');
}

/** Decodes a 44-character base64 key; `what` names it in the error ("gateway key", "file x: field y"). */
export function decodeKey(text: string, what: string): Buffer {
  const expected = `${what}: expected ${KEY_TEXT_LENGTH} characters of base64 encoding ${RAW_KEY_BYTES} bytes`;
  if (typeof text !== 'string') throw new KeyFormatError(`${expected}, got ${describeType(text)}`);
  if (text.length !== KEY_TEXT_LENGTH) throw new KeyFormatError(`${expected}, got ${text.length} characters`);
  if (!BASE64_KEY.test(text)) {
    throw new KeyFormatError(
      `${expected}, got characters outside the base64 alphabet (A-Z a-z 0-9 + / and a final =)`,
    );
  }
  const raw = Buffer.from(text, 'base64');
  // Node ignores nonzero bits in the last character; insisting on the canonical text means one key
  // has exactly one spelling, so keys compare as strings.
  if (raw.toString('base64') !== text) {
    throw new KeyFormatError(
      `${expected}, got a non-canonical encoding (the last character before '=' is wrong)`,
    );
  }
  return raw;
}

function describeType(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return `a ${typeof value}`;
}

/** A non-key field's value for an error message: short scalars verbatim, anything else by type. */
function shown(value: unknown): string {
  if (value === undefined) return 'nothing (the field is missing)';
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (typeof value === 'string' && value.length <= 32) return JSON.stringify(value);
  return describeType(value);
}

function truncatedHash(label: Buffer, publicKeyRaw: Uint8Array): Buffer {
  if (publicKeyRaw.length !== RAW_KEY_BYTES) {
    throw new RangeError(`public key: expected ${RAW_KEY_BYTES} bytes, got ${publicKeyRaw.length}`);
  }
  return createHash('sha256').update(label).update(publicKeyRaw).digest().subarray(0, ID_BYTES);
}

/** The 16-byte id a knock carries to name its client identity. */
export function identityIdOf(publicKeyRaw: Uint8Array): Buffer {
  return truncatedHash(IDENTITY_ID_LABEL, publicKeyRaw);
}

/** The 16-byte id of a gateway key; knock signatures cover it, so a knock is good for one gateway only. */
export function gatewayKeyIdOf(publicKeyRaw: Uint8Array): Buffer {
  return truncatedHash(GATEWAY_KEY_ID_LABEL, publicKeyRaw);
}

// ---- gateway key (X25519, the HPKE recipient key) ----

export interface GatewayKeyPair {
  privateKey: Buffer;
  publicKey: Buffer;
}

export function generateGatewayKeyPair(): GatewayKeyPair {
  const { privateKey } = generateKeyPairSync('x25519');
  return { privateKey: rawPrivateKey(privateKey), publicKey: rawPublicKey(privateKey) };
}

// ---- client identity (Ed25519, signs knocks) ----

export interface Identity {
  privateKey: KeyObject;
  /** Raw 32 bytes. */
  publicKey: Buffer;
  /** identityIdOf(publicKey). */
  id: Buffer;
}

function identityFromKeys(privateKey: KeyObject, publicKey: Buffer): Identity {
  return { privateKey, publicKey, id: identityIdOf(publicKey) };
}

export function generateIdentity(): Identity {
  const { privateKey } = generateKeyPairSync('ed25519');
  return identityFromKeys(privateKey, rawPublicKey(privateKey));
}

// ---- key files ----

interface KeyFileShape {
  kind: string;
  algorithm: string;
  /** What the file holds, with its article, for errors. */
  description: string;
}

const IDENTITY_FILE: KeyFileShape = {
  kind: IDENTITY_FILE_KIND,
  algorithm: 'ed25519',
  description: 'an identity',
};
const GATEWAY_KEY_FILE: KeyFileShape = {
  kind: GATEWAY_KEY_FILE_KIND,
  algorithm: 'x25519',
  description: 'a gateway key',
};
const KEY_FILE_FIELDS = ['umbra', 'version', 'algorithm', 'publicKey', 'privateKey'];

function formatKeyFile(shape: KeyFileShape, publicKey: Uint8Array, privateKey: Uint8Array): string {
  const file = {
    umbra: shape.kind,
    version: FILE_VERSION,
    algorithm: shape.algorithm,
    publicKey: encodeKey(publicKey),
    privateKey: encodeKey(privateKey),
  };
  return `${JSON.stringify(file, null, 2)}\n`;
}

/** Checks everything but the key relationship; returns the two raw keys. */
function parseKeyFile(
  shape: KeyFileShape,
  text: string,
  path: string,
): { publicKey: Buffer; privateKey: Buffer } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    // JSON.parse's message quotes the text around the error, which here is key material.
    throw new KeyFormatError(`${path}: not JSON; expected one JSON object holding ${shape.description}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new KeyFormatError(`${path}: expected one JSON object, got ${describeType(parsed)}`);
  }
  const file = parsed as Record<string, unknown>;
  const field = (name: string) => `${path}: field "${name}"`;
  if (file.umbra !== shape.kind) {
    throw new KeyFormatError(
      `${field('umbra')}: expected "${shape.kind}", got ${shown(file.umbra)} — is this the file holding ${shape.description}?`,
    );
  }
  for (const name of Object.keys(file)) {
    if (!KEY_FILE_FIELDS.includes(name)) {
      throw new KeyFormatError(`${field(name)} is unknown in a file holding ${shape.description}; remove it`);
    }
  }
  if (file.version !== FILE_VERSION) {
    throw new KeyFormatError(
      `${field('version')}: expected ${FILE_VERSION}, got ${shown(file.version)}; this build reads version ${FILE_VERSION} only`,
    );
  }
  if (file.algorithm !== shape.algorithm) {
    throw new KeyFormatError(
      `${field('algorithm')}: expected "${shape.algorithm}", got ${shown(file.algorithm)}`,
    );
  }
  if (file.publicKey === undefined) throw new KeyFormatError(`${field('publicKey')} is missing`);
  if (file.privateKey === undefined) throw new KeyFormatError(`${field('privateKey')} is missing`);
  const publicKey = decodeKey(file.publicKey as string, field('publicKey'));
  const privateKey = decodeKey(file.privateKey as string, field('privateKey'));
  return { publicKey, privateKey };
}

function mismatch(path: string): KeyFormatError {
  return new KeyFormatError(
    `${path}: field "publicKey" does not belong to field "privateKey"; the file was damaged or edited — restore it from a backup or generate a new key pair`,
  );
}

export function formatIdentityFile(identity: Identity): string {
  return formatKeyFile(IDENTITY_FILE, identity.publicKey, rawPrivateKey(identity.privateKey));
}

export function parseIdentityFile(text: string, path: string): Identity {
  const raw = parseKeyFile(IDENTITY_FILE, text, path);
  const privateKey = ed25519PrivateKeyObject(raw.privateKey);
  if (!timingSafeEqual(rawPublicKey(privateKey), raw.publicKey)) throw mismatch(path);
  return identityFromKeys(privateKey, raw.publicKey);
}

export function formatGatewayKeyFile(keys: GatewayKeyPair): string {
  return formatKeyFile(GATEWAY_KEY_FILE, keys.publicKey, keys.privateKey);
}

export function parseGatewayKeyFile(text: string, path: string): GatewayKeyPair {
  const raw = parseKeyFile(GATEWAY_KEY_FILE, text, path);
  if (!timingSafeEqual(rawPublicKey(x25519PrivateKeyObject(raw.privateKey)), raw.publicKey)) {
    throw mismatch(path);
  }
  return raw;
}
