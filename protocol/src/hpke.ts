// RFC 9180 HPKE, cut down to what SPA v1 uses: base mode, single shot, and one suite —
// DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305. No agility: a second suite would be
// a new SPA version, not a negotiation.
//
// The recipient side is the gateway's hot path, so it is written out by hand on node:crypto:
// everything that depends only on the recipient key and info is computed once, and one open costs
// one X25519, five HMACs (two Extracts, three Expands — every output fits one hash block, so each
// Expand is one HMAC) and one AEAD open. The exporter secret is never derived on that path:
// single-shot SPA has no use for it.
//
// Every HMAC and AEAD key goes in as a KeyObject: measured on Node 24, createSecretKey + HMAC costs
// ~3.5 µs where HMAC with a raw Buffer key costs ~18 µs (ChaCha20-Poly1305: ~5 µs against ~20 µs).

import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  createPublicKey,
  createSecretKey,
  diffieHellman,
  generateKeyPairSync,
  type KeyObject,
} from 'node:crypto';
import {
  RAW_KEY_BYTES,
  rawPublicKey,
  X25519_SPKI_PREFIX,
  x25519PrivateKeyObject,
  x25519PublicKeyObject,
} from './key-objects.ts';

// Suite identifiers (RFC 9180 §7).
const KEM_ID = 0x0020; // DHKEM(X25519, HKDF-SHA256)
const KDF_ID = 0x0001; // HKDF-SHA256
const AEAD_ID = 0x0003; // ChaCha20-Poly1305
const MODE_BASE = 0x00;

// Sizes for this suite (RFC 9180 §7.1, §7.2, §7.3).
export const HPKE_ENC_BYTES = 32; // Nenc
const SECRET_BYTES = 32; // Nsecret, and Nh
const KEY_BYTES = 32; // Nk
const NONCE_BYTES = 12; // Nn
export const HPKE_TAG_BYTES = 16; // Nt
const HASH_BYTES = 32;

/** I2OSP(n, 2): the two-byte big-endian encoding RFC 9180 uses for ids and lengths. */
function u16(n: number): Buffer {
  return Buffer.from([n >> 8, n & 0xff]);
}

const KEM_SUITE_ID = Buffer.concat([Buffer.from('KEM'), u16(KEM_ID)]);
export const HPKE_SUITE_ID = Buffer.concat([Buffer.from('HPKE'), u16(KEM_ID), u16(KDF_ID), u16(AEAD_ID)]);

const VERSION_LABEL = Buffer.from('HPKE-v1');
const EMPTY = Buffer.alloc(0);
const HKDF_BLOCK_1 = Buffer.from([0x01]);

// An empty HKDF salt means a zero-length HMAC key, which HMAC pads with zeros to the block size —
// the same key as 32 zero bytes.
const ZERO_SALT = createSecretKey(Buffer.alloc(HASH_BYTES));

/** "HPKE-v1" || suite_id || label: the fixed front of a LabeledExtract input. */
function extractPrefix(suiteId: Buffer, label: string): Buffer {
  return Buffer.concat([VERSION_LABEL, suiteId, Buffer.from(label)]);
}

/** I2OSP(L, 2) || "HPKE-v1" || suite_id || label: the fixed front of a LabeledExpand info. */
function expandPrefix(suiteId: Buffer, label: string, length: number): Buffer {
  return Buffer.concat([u16(length), VERSION_LABEL, suiteId, Buffer.from(label)]);
}

const EAE_PRK = extractPrefix(KEM_SUITE_ID, 'eae_prk');
const SHARED_SECRET = expandPrefix(KEM_SUITE_ID, 'shared_secret', SECRET_BYTES);
const DKP_PRK = extractPrefix(KEM_SUITE_ID, 'dkp_prk');
const SK = expandPrefix(KEM_SUITE_ID, 'sk', RAW_KEY_BYTES);
const PSK_ID_HASH = extractPrefix(HPKE_SUITE_ID, 'psk_id_hash');
const INFO_HASH = extractPrefix(HPKE_SUITE_ID, 'info_hash');
// Base mode: psk is empty, so the whole LabeledExtract input for "secret" is this constant.
const SECRET = extractPrefix(HPKE_SUITE_ID, 'secret');
const KEY = expandPrefix(HPKE_SUITE_ID, 'key', KEY_BYTES);
const BASE_NONCE = expandPrefix(HPKE_SUITE_ID, 'base_nonce', NONCE_BYTES);
const EXP = expandPrefix(HPKE_SUITE_ID, 'exp', HASH_BYTES);

/** HKDF-Extract with the label prefix already folded into `prefix`. */
function extract(salt: KeyObject, prefix: Buffer, ikm: Uint8Array): Buffer {
  return createHmac('sha256', salt).update(prefix).update(ikm).digest();
}

/**
 * HKDF-Expand for outputs of at most one hash block, which is every output of this suite. The
 * message is passed in parts so callers need not concatenate.
 */
function expandOneBlock(prk: KeyObject, length: number, ...message: Uint8Array[]): Buffer {
  const hmac = createHmac('sha256', prk);
  for (const part of message) hmac.update(part);
  const block = hmac.update(HKDF_BLOCK_1).digest();
  return length === HASH_BYTES ? block : block.subarray(0, length);
}

/** RFC 9180 LabeledExpand for any L up to 255 hash blocks: for the exporter vectors, not the hot path. */
export function labeledExpand(
  suiteId: Buffer,
  prk: Uint8Array,
  label: string,
  info: Uint8Array,
  length: number,
): Buffer {
  const labeledInfo = Buffer.concat([expandPrefix(suiteId, label, length), info]);
  const blocks: Buffer[] = [];
  let previous = EMPTY;
  for (let i = 1; blocks.length * HASH_BYTES < length; i++) {
    previous = createHmac('sha256', createSecretKey(prk))
      .update(previous)
      .update(labeledInfo)
      .update(Buffer.from([i]))
      .digest();
    blocks.push(previous);
  }
  return Buffer.concat(blocks).subarray(0, length);
}

/**
 * X25519, or null when the peer key is of low order. RFC 9180 §7.1.4 requires the all-zero check;
 * OpenSSL already refuses that output by throwing, and the explicit check keeps us correct should
 * it stop. The check reads every byte whatever it finds.
 */
function x25519(privateKey: KeyObject, publicKey: KeyObject): Buffer | null {
  let dh: Buffer;
  try {
    dh = diffieHellman({ privateKey, publicKey });
  } catch {
    return null;
  }
  let acc = 0;
  for (let i = 0; i < dh.length; i++) acc |= dh[i]!;
  return acc === 0 ? null : dh;
}

/** mode || psk_id_hash || info_hash (RFC 9180 §5.1): depends only on the info, so compute it once. */
export function keyScheduleContext(info: Uint8Array): Buffer {
  return Buffer.concat([
    Buffer.from([MODE_BASE]),
    extract(ZERO_SALT, PSK_ID_HASH, EMPTY),
    extract(ZERO_SALT, INFO_HASH, info),
  ]);
}

/** DHKEM ExtractAndExpand: shared_secret from the DH output and kem_context = enc || pkRm. */
function sharedSecretOf(dh: Uint8Array, enc: Uint8Array, recipientPublicKey: Uint8Array): Buffer {
  const eaePrk = createSecretKey(extract(ZERO_SALT, EAE_PRK, dh));
  return expandOneBlock(eaePrk, SECRET_BYTES, SHARED_SECRET, enc, recipientPublicKey);
}

/** RFC 9180 DeriveKeyPair for X25519 (§7.1.3): the private key is used as derived, unclamped. */
export function deriveX25519KeyPair(ikm: Uint8Array): { privateKey: Buffer; publicKey: Buffer } {
  const dkpPrk = createSecretKey(extract(ZERO_SALT, DKP_PRK, ikm));
  const privateKey = expandOneBlock(dkpPrk, RAW_KEY_BYTES, SK, EMPTY);
  return { privateKey, publicKey: rawPublicKey(x25519PrivateKeyObject(privateKey)) };
}

/** Every value the RFC 9180 test vectors list for a base-mode sender; the exporter secret included. */
export interface BaseSetup {
  enc: Buffer;
  sharedSecret: Buffer;
  keyScheduleContext: Buffer;
  secret: Buffer;
  key: Buffer;
  baseNonce: Buffer;
  exporterSecret: Buffer;
}

/**
 * SetupBaseS (RFC 9180 §5.1.1), exposing its intermediates. With `ephemeralIkm` the ephemeral key
 * comes from DeriveKeyPair, which makes the output reproducible — for test vectors only.
 */
export function setupBaseSender(
  recipientPublicKey: Uint8Array,
  info: Uint8Array,
  ephemeralIkm?: Uint8Array,
): BaseSetup {
  const pkR = x25519PublicKeyObject(recipientPublicKey);
  let skE: KeyObject;
  if (ephemeralIkm) {
    skE = x25519PrivateKeyObject(deriveX25519KeyPair(ephemeralIkm).privateKey);
  } else {
    skE = generateKeyPairSync('x25519').privateKey;
  }
  const enc = rawPublicKey(skE);
  const dh = x25519(skE, pkR);
  if (!dh) throw new RangeError('HPKE recipient public key: a low-order point; use a real X25519 public key');
  const sharedSecret = sharedSecretOf(dh, enc, recipientPublicKey);
  const context = keyScheduleContext(info);
  const secret = extract(createSecretKey(sharedSecret), SECRET, EMPTY);
  const secretObject = createSecretKey(secret);
  return {
    enc,
    sharedSecret,
    keyScheduleContext: context,
    secret,
    key: expandOneBlock(secretObject, KEY_BYTES, KEY, context),
    baseNonce: expandOneBlock(secretObject, NONCE_BYTES, BASE_NONCE, context),
    exporterSecret: expandOneBlock(secretObject, HASH_BYTES, EXP, context),
  };
}

/** Single-shot base-mode Seal: the first (and only) message uses base_nonce unchanged. */
export function hpkeSeal(
  recipientPublicKey: Uint8Array,
  info: Uint8Array,
  aad: Uint8Array,
  plaintext: Uint8Array,
  ephemeralIkm?: Uint8Array,
): { enc: Buffer; ciphertext: Buffer } {
  const { enc, key, baseNonce } = setupBaseSender(recipientPublicKey, info, ephemeralIkm);
  const cipher = createCipheriv('chacha20-poly1305', createSecretKey(key), baseNonce, {
    authTagLength: HPKE_TAG_BYTES,
  });
  cipher.setAAD(aad, { plaintextLength: plaintext.length });
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  return { enc, ciphertext };
}

// The ephemeral key arrives raw and node:crypto wants it wrapped. PEM, oddly, is the fast wrapping:
// createPublicKey(pemString) measured ~11 µs on Node 24 against ~37 µs for the same key as DER in
// an options object. The SPKI prefix is 12 bytes, a whole number of base64 quanta, so the PEM body
// is the prefix's base64 followed directly by the key's.
const X25519_PEM_HEAD = `-----BEGIN PUBLIC KEY-----\n${X25519_SPKI_PREFIX.toString('base64')}`;
const X25519_PEM_TAIL = '\n-----END PUBLIC KEY-----\n';

function base64(bytes: Uint8Array): string {
  return (
    Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  ).toString('base64');
}

/**
 * The receiving half for one private key and one info string. Build it once; `open` is then the
 * minimum work per message and never throws, whatever bytes it is given.
 */
export class HpkeRecipient {
  readonly publicKey: Buffer;
  readonly #privateKey: KeyObject;
  readonly #keyMessage: Buffer;
  readonly #nonceMessage: Buffer;

  constructor(privateKeyRaw: Uint8Array, info: Uint8Array) {
    this.#privateKey = x25519PrivateKeyObject(privateKeyRaw);
    this.publicKey = rawPublicKey(this.#privateKey);
    const context = keyScheduleContext(info);
    this.#keyMessage = Buffer.concat([KEY, context, HKDF_BLOCK_1]);
    this.#nonceMessage = Buffer.concat([BASE_NONCE, context, HKDF_BLOCK_1]);
  }

  /** The plaintext, or null if `enc` is not a usable X25519 key or the ciphertext does not authenticate. */
  open(enc: Uint8Array, aad: Uint8Array, ciphertext: Uint8Array): Buffer | null {
    if (enc.length !== HPKE_ENC_BYTES || ciphertext.length < HPKE_TAG_BYTES) return null;
    let pkE: KeyObject;
    try {
      pkE = createPublicKey(X25519_PEM_HEAD + base64(enc) + X25519_PEM_TAIL);
    } catch {
      return null;
    }
    const dh = x25519(this.#privateKey, pkE);
    if (!dh) return null;
    const sharedSecret = sharedSecretOf(dh, enc, this.publicKey);
    const secret = createSecretKey(extract(createSecretKey(sharedSecret), SECRET, EMPTY));
    const key = createSecretKey(createHmac('sha256', secret).update(this.#keyMessage).digest());
    const nonce = createHmac('sha256', secret).update(this.#nonceMessage).digest().subarray(0, NONCE_BYTES);
    const tagStart = ciphertext.length - HPKE_TAG_BYTES;
    try {
      const decipher = createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: HPKE_TAG_BYTES });
      decipher.setAAD(aad, { plaintextLength: tagStart });
      decipher.setAuthTag(ciphertext.subarray(tagStart));
      const head = decipher.update(ciphertext.subarray(0, tagStart));
      const tail = decipher.final(); // throws when the tag does not match
      return tail.length === 0 ? head : Buffer.concat([head, tail]);
    } catch {
      return null;
    }
  }
}
