// The organisation's provisioning key (Ed25519) on disk: the private half as PKCS#8 PEM, readable by
// its owner only (secret-file.ts), kept by whoever makes site bundles; the public half as SPKI PEM,
// or as one line of base64 of the raw 32 bytes (the form a firmware configuration carries).
//
// Key bytes never appear in an error message.

import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { ed25519PublicKeyObject, rawPublicKey } from '../key-objects.ts';
import { decodeKey, encodeKey, KeyFormatError } from '../keys.ts';
import { readSecretFile, type WriteSecretFileOptions, writeSecretFile } from '../secret-file.ts';
import { provisioningKeyIdOf } from './site-bundle.ts';

export interface ProvisioningKey {
  privateKey: KeyObject;
  /** Raw 32 bytes: what a firmware trusts. */
  publicKey: Buffer;
  /** provisioningKeyIdOf(publicKey), hex: what a bundle names. */
  keyId: string;
}

export function generateProvisioningKey(): ProvisioningKey {
  const { privateKey } = generateKeyPairSync('ed25519');
  const publicKey = rawPublicKey(privateKey);
  return { privateKey, publicKey, keyId: provisioningKeyIdOf(publicKey) };
}

export function formatProvisioningPrivateKey(privateKey: KeyObject): string {
  if (privateKey.type !== 'private' || privateKey.asymmetricKeyType !== 'ed25519')
    throw new TypeError('formatProvisioningPrivateKey: expected an Ed25519 private key');
  return privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
}

export function formatProvisioningPublicKey(publicKey: Uint8Array): string {
  return ed25519PublicKeyObject(publicKey).export({ format: 'pem', type: 'spki' }).toString();
}

/** The public key as the one line a firmware configuration holds. */
export function formatProvisioningPublicKeyLine(publicKey: Uint8Array): string {
  return encodeKey(publicKey);
}

/** `what` names the input in errors, e.g. "--sign-key /home/tech/provisioning.key". */
export function parseProvisioningPrivateKey(text: string, what: string): ProvisioningKey {
  if (!/^\s*-----BEGIN PRIVATE KEY-----/.test(text))
    throw new KeyFormatError(
      `${what}: expected an Ed25519 private key in PKCS#8 PEM ("-----BEGIN PRIVATE KEY-----"), e.g. from \`openssl genpkey -algorithm ed25519\``,
    );
  const privateKey = ed25519Pem(what, () => createPrivateKey({ key: text, format: 'pem' }));
  const publicKey = rawPublicKey(privateKey);
  return { privateKey, publicKey, keyId: provisioningKeyIdOf(publicKey) };
}

/** Accepts SPKI PEM or the one-line base64 form; returns the raw 32 bytes. */
export function parseProvisioningPublicKey(text: string, what: string): Buffer {
  const trimmed = text.trim();
  if (!trimmed.startsWith('-----BEGIN PUBLIC KEY-----')) return decodeKey(trimmed, what);
  return rawPublicKey(ed25519Pem(what, () => createPublicKey({ key: trimmed, format: 'pem' })));
}

/** The key `open` reads from a PEM, which must decode and be Ed25519; `what` names the input. */
function ed25519Pem(what: string, open: () => KeyObject): KeyObject {
  let key: KeyObject;
  try {
    key = open();
  } catch {
    throw new KeyFormatError(`${what}: the PEM does not decode; the file was damaged or cut short`);
  }
  if (key.asymmetricKeyType !== 'ed25519')
    throw new KeyFormatError(
      `${what}: a key of type ${key.asymmetricKeyType}; the provisioning key must be Ed25519`,
    );
  return key;
}

/**
 * Writes the pair: the private key 0600 (refusing to replace an existing file unless told), the
 * public key 0644 beside it for the firmware build.
 */
export async function writeProvisioningKey(
  key: ProvisioningKey,
  paths: { privateKey: string; publicKey: string },
  options: WriteSecretFileOptions = {},
): Promise<void> {
  await writeSecretFile(paths.privateKey, formatProvisioningPrivateKey(key.privateKey), options);
  await writeFile(paths.publicKey, formatProvisioningPublicKey(key.publicKey), {
    mode: 0o644,
    flag: options.overwrite ? 'w' : 'wx',
  });
}

/** Reads a private key file, refusing one that other users can read. */
export function readProvisioningPrivateKey(path: string, what = path): ProvisioningKey {
  const text = readSecretFile(
    path,
    what,
    "create the organisation's provisioning key first (writeProvisioningKey, or `openssl genpkey -algorithm ed25519 -out FILE` and `chmod 600 FILE`)",
  );
  return parseProvisioningPrivateKey(text, what);
}

export function readProvisioningPublicKey(path: string, what = path): Buffer {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new KeyFormatError(`${what}: cannot read it (${(error as NodeJS.ErrnoException).code})`);
  }
  return parseProvisioningPublicKey(text, what);
}
