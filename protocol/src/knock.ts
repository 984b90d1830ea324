// The knock: what a client asks for, as the CBOR the SPA v1 packet carries sealed.
//
// Encoding uses cbor-x. Decoding does not: the gateway decodes after HPKE open but before it knows
// who sent the knock, so the decoder sees bytes from anyone holding the gateway's public key.
// cbor-x would interpret tags, records, packed and shared structures on those bytes; this decoder
// reads exactly one shape and nothing else. It also insists on deterministic encoding (RFC 8949
// §4.2.1: shortest heads, definite lengths, map keys in order, no duplicates), so one knock has one
// encoding and `encodeKnockBody(decodeKnockBody(b)) == b` for every body it accepts.
//
//   plaintext = [ body: bstr, signature: bstr .size 64 ]
//   body = {
//     1: bstr .size 16,          ; identity id
//     2: uint,                   ; timestamp, ms since the Unix epoch
//     3: bstr .size 16,          ; nonce
//     ? 4: bstr .size (4 / 16),  ; source address the client claims (never IPv4-mapped IPv6)
//     5: tstr,                   ; access, "tcp/22" or "udp/53"
//     ? 6: { 1*16 (tstr => tstr / int / bool) }  ; posture claims
//     ? 7: tstr .size (1..64),   ; service name, for a controller-managed gateway
//   }

import { Encoder } from 'cbor-x';
import { ipAddressFromBytes, ipAddressToBytes, isIpv4Mapped } from './address.ts';
import { ID_BYTES } from './keys.ts';

export const NONCE_BYTES = 16;
export const SIGNATURE_BYTES = 64;
export const POSTURE_MAX_ENTRIES = 16;
export const POSTURE_KEY_MAX_BYTES = 32;
export const POSTURE_TEXT_MAX_BYTES = 64;
export const SERVICE_NAME_MAX_BYTES = 64;
/** A service name as the controller accepts it: it appears in logs and in the tunnel's ALPN. */
export const SERVICE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

// Body map keys.
const KEY_IDENTITY_ID = 1;
const KEY_TIMESTAMP = 2;
const KEY_NONCE = 3;
const KEY_CLAIMED_SOURCE = 4;
const KEY_ACCESS = 5;
const KEY_POSTURE = 6;
const KEY_SERVICE = 7;

// CBOR major types (RFC 8949 §3.1).
const MAJOR_UINT = 0;
const MAJOR_NEGATIVE = 1;
const MAJOR_BYTES = 2;
const MAJOR_TEXT = 3;
const MAJOR_ARRAY = 4;
const MAJOR_MAP = 5;
const CBOR_FALSE = 0xf4;
const CBOR_TRUE = 0xf5;

/** The largest access text: "tcp/65535". */
const ACCESS_MAX_LENGTH = 9;
const UINT32_LIMIT = 2 ** 32;

export type PostureValue = string | number | boolean;

export interface Knock {
  identityId: Buffer;
  timestampMs: number;
  nonce: Buffer;
  /** Textual IPv4 or IPv6 address, canonical (dotted quad, RFC 5952). */
  claimedSource?: string;
  /** "tcp/PORT" or "udp/PORT". */
  access: string;
  posture?: Record<string, PostureValue>;
  /**
   * The service asked for by name. A gateway run by a controller needs it: a tunnel's port serves
   * every tunnel service, so the port alone does not say which one.
   */
  service?: string;
}

export interface Access {
  protocol: 'tcp' | 'udp';
  port: number;
}

const ACCESS_TEXT = /^(tcp|udp)\/([1-9]\d{0,4})$/;

/** "tcp/22" → { protocol: 'tcp', port: 22 }; null unless the text is exactly that form with port 1-65535. */
export function parseAccess(text: string): Access | null {
  if (typeof text !== 'string' || text.length > ACCESS_MAX_LENGTH) return null;
  const match = ACCESS_TEXT.exec(text);
  if (!match) return null;
  const port = Number(match[2]);
  if (port > 0xffff) return null;
  return { protocol: match[1] as Access['protocol'], port };
}

// ---- encoding ----

/** A knock's fields are wrong; the message names the field and the rule. */
export class KnockError extends Error {
  override name = 'KnockError';
}

function utf8Length(text: string): number {
  return Buffer.byteLength(text, 'utf8');
}

/**
 * Deterministic CBOR orders map keys by their encoded bytes. For text keys under 256 bytes the
 * head holds the length, so that is shorter first, then bytewise.
 */
function compareEncodedText(a: Buffer, b: Buffer): number {
  return a.length - b.length || Buffer.compare(a, b);
}

/** cbor-x writes numbers beyond 32 bits as float64; a BigInt makes it write the integer head. */
function cborInteger(value: number): number | bigint {
  return value >= UINT32_LIMIT || value < -UINT32_LIMIT ? BigInt(value) : value;
}

function checkPosture(
  posture: Record<string, PostureValue>,
): Map<string, number | bigint | string | boolean> {
  if (typeof posture !== 'object' || posture === null || Array.isArray(posture)) {
    throw new KnockError('knock.posture: expected an object of claims');
  }
  const entries = Object.entries(posture);
  if (entries.length === 0 || entries.length > POSTURE_MAX_ENTRIES) {
    throw new KnockError(
      `knock.posture: expected 1 to ${POSTURE_MAX_ENTRIES} claims, got ${entries.length}; leave posture out rather than sending it empty`,
    );
  }
  const keyed = entries.map(([key, value]) => ({ key, bytes: Buffer.from(key, 'utf8'), value }));
  keyed.sort((a, b) => compareEncodedText(a.bytes, b.bytes));
  const map = new Map<string, number | bigint | string | boolean>();
  for (const { key, bytes, value } of keyed) {
    const where = `knock.posture[${JSON.stringify(key)}]`;
    if (bytes.length === 0 || bytes.length > POSTURE_KEY_MAX_BYTES || !key.isWellFormed()) {
      throw new KnockError(`${where}: a claim name must be 1 to ${POSTURE_KEY_MAX_BYTES} bytes of UTF-8`);
    }
    if (typeof value === 'string') {
      if (utf8Length(value) > POSTURE_TEXT_MAX_BYTES || !value.isWellFormed()) {
        throw new KnockError(
          `${where}: a text claim must be at most ${POSTURE_TEXT_MAX_BYTES} bytes of UTF-8`,
        );
      }
      map.set(key, value);
    } else if (typeof value === 'number') {
      if (!Number.isSafeInteger(value)) {
        throw new KnockError(`${where}: a number claim must be a safe integer, got ${value}`);
      }
      map.set(key, cborInteger(value === 0 ? 0 : value)); // -0 is 0 in CBOR
    } else if (typeof value === 'boolean') {
      map.set(key, value);
    } else {
      throw new KnockError(`${where}: expected text, an integer or a boolean, got ${typeof value}`);
    }
  }
  return map;
}

function requireBytes(value: unknown, length: number, field: string): Buffer {
  if (!(value instanceof Uint8Array) || value.length !== length) {
    throw new KnockError(`${field}: expected ${length} bytes`);
  }
  return Buffer.from(value); // a copy, so the encoding is a plain byte string whatever the input was
}

/**
 * The canonical body bytes for a knock. Throws KnockError naming the field for anything the
 * decoder would refuse.
 */
export function encodeKnockBody(knock: Knock): Buffer {
  const body = new Map<number, unknown>();
  body.set(KEY_IDENTITY_ID, requireBytes(knock.identityId, ID_BYTES, 'knock.identityId'));
  if (!Number.isSafeInteger(knock.timestampMs) || knock.timestampMs < 0) {
    throw new KnockError(
      `knock.timestampMs: expected milliseconds since the Unix epoch, got ${knock.timestampMs}`,
    );
  }
  body.set(KEY_TIMESTAMP, cborInteger(knock.timestampMs));
  body.set(KEY_NONCE, requireBytes(knock.nonce, NONCE_BYTES, 'knock.nonce'));
  if (knock.claimedSource !== undefined) {
    let address = ipAddressToBytes(knock.claimedSource);
    if (!address) {
      throw new KnockError(
        `knock.claimedSource: expected an IPv4 or IPv6 address like 192.0.2.1 or 2001:db8::1, got ${JSON.stringify(knock.claimedSource)}`,
      );
    }
    // The packet of an IPv4-mapped socket travels as IPv4, and that is what the gateway sees.
    if (isIpv4Mapped(address)) address = address.subarray(address.length - 4);
    body.set(KEY_CLAIMED_SOURCE, address);
  }
  if (!parseAccess(knock.access)) {
    throw new KnockError(
      `knock.access: expected "tcp/PORT" or "udp/PORT" with PORT 1-65535 and no leading zeros, got ${JSON.stringify(knock.access)}`,
    );
  }
  body.set(KEY_ACCESS, knock.access);
  if (knock.posture !== undefined) body.set(KEY_POSTURE, checkPosture(knock.posture));
  if (knock.service !== undefined) {
    if (typeof knock.service !== 'string' || !SERVICE_NAME.test(knock.service))
      throw new KnockError(
        `knock.service: expected 1-64 letters, digits or ._- starting with a letter or digit, got ${JSON.stringify(knock.service)}`,
      );
    body.set(KEY_SERVICE, knock.service);
  }
  return encode(body);
}

/** The sealed plaintext: [body, signature]. */
export function encodeSealedKnock(body: Uint8Array, signature: Uint8Array): Buffer {
  return encode([Buffer.from(body), Buffer.from(signature)]);
}

function encode(value: unknown): Buffer {
  // A fresh encoder per message: cbor-x reuses an encoder's buffer between calls, and its record
  // and structure-sharing extensions are off so any CBOR decoder reads the result.
  const encoder = new Encoder({ useRecords: false, mapsAsObjects: false, tagUint8Array: false, pack: false });
  return Buffer.from(encoder.encode(value));
}

// ---- strict decoding ----

/** The one thrown value of the decoder: a schema violation. Never escapes this file. */
const SCHEMA_VIOLATION = new Error('knock schema violation');

const textDecoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Reads deterministic CBOR heads and items from one buffer; any deviation throws SCHEMA_VIOLATION. */
class StrictReader {
  readonly bytes: Buffer;
  offset: number;
  readonly end: number;

  constructor(bytes: Buffer) {
    this.bytes = bytes;
    this.offset = 0;
    this.end = bytes.length;
  }

  /** The argument of a head of `major`, in shortest form, no more than 2^53 - 1. */
  head(major: number): number {
    if (this.offset >= this.end) throw SCHEMA_VIOLATION;
    const initial = this.bytes[this.offset++]!;
    if (initial >> 5 !== major) throw SCHEMA_VIOLATION;
    const info = initial & 0x1f;
    if (info < 24) return info;
    // The argument is read in place: a subarray (or a BigInt) per head was most of what decoding a
    // knock allocated, on the controller's hot path.
    let value: number;
    let minimum: number;
    const at = this.skip(info === 24 ? 1 : info === 25 ? 2 : info === 26 ? 4 : info === 27 ? 8 : 0);
    if (info === 24) {
      value = this.bytes[at]!;
      minimum = 24;
    } else if (info === 25) {
      value = this.bytes.readUInt16BE(at);
      minimum = 0x100;
    } else if (info === 26) {
      value = this.bytes.readUInt32BE(at);
      minimum = 0x10000;
    } else if (info === 27) {
      const high = this.bytes.readUInt32BE(at);
      // 2^53 - 1 is the largest safe integer: its high 32 bits are 2^21 - 1.
      if (high >= 0x200000) throw SCHEMA_VIOLATION;
      value = high * UINT32_LIMIT + this.bytes.readUInt32BE(at + 4);
      minimum = UINT32_LIMIT;
    } else {
      throw SCHEMA_VIOLATION; // 28-30 reserved, 31 indefinite length
    }
    if (value < minimum) throw SCHEMA_VIOLATION;
    return value;
  }

  /** Moves past `length` bytes, returning where they start. */
  skip(length: number): number {
    if (length > this.end - this.offset) throw SCHEMA_VIOLATION;
    const at = this.offset;
    this.offset += length;
    return at;
  }

  take(length: number): Buffer {
    if (length > this.end - this.offset) throw SCHEMA_VIOLATION;
    const slice = this.bytes.subarray(this.offset, this.offset + length);
    this.offset += length;
    return slice;
  }

  byteString(minLength: number, maxLength: number): Buffer {
    const length = this.head(MAJOR_BYTES);
    if (length < minLength || length > maxLength) throw SCHEMA_VIOLATION;
    return this.take(length);
  }

  /** A text string and its encoded bytes (the bytes order map keys). */
  text(maxBytes: number): { text: string; bytes: Buffer } {
    const length = this.head(MAJOR_TEXT);
    if (length > maxBytes) throw SCHEMA_VIOLATION;
    const bytes = this.take(length);
    let text: string;
    try {
      text = textDecoder.decode(bytes);
    } catch {
      throw SCHEMA_VIOLATION; // not UTF-8
    }
    return { text, bytes };
  }

  /** The next map key, which must be the expected one or, for an optional key, may be absent. */
  peekKey(key: number): boolean {
    // Keys 1-23 encode as the single byte 0x01-0x17 in deterministic CBOR.
    return this.offset < this.end && this.bytes[this.offset] === key;
  }

  key(key: number): void {
    if (!this.peekKey(key)) throw SCHEMA_VIOLATION;
    this.offset++;
  }

  integer(): number {
    if (this.offset >= this.end) throw SCHEMA_VIOLATION;
    const major = this.bytes[this.offset]! >> 5;
    if (major === MAJOR_UINT) return this.head(MAJOR_UINT);
    if (major === MAJOR_NEGATIVE) {
      const magnitude = this.head(MAJOR_NEGATIVE);
      if (magnitude === Number.MAX_SAFE_INTEGER) throw SCHEMA_VIOLATION; // -2^53 is not a safe integer
      return -1 - magnitude;
    }
    throw SCHEMA_VIOLATION;
  }

  postureValue(): PostureValue {
    if (this.offset >= this.end) throw SCHEMA_VIOLATION;
    const initial = this.bytes[this.offset]!;
    if (initial === CBOR_TRUE || initial === CBOR_FALSE) {
      this.offset++;
      return initial === CBOR_TRUE;
    }
    if (initial >> 5 === MAJOR_TEXT) return this.text(POSTURE_TEXT_MAX_BYTES).text;
    return this.integer();
  }

  finish(): void {
    if (this.offset !== this.end) throw SCHEMA_VIOLATION;
  }
}

export interface DecodedSealedKnock {
  knock: Knock;
  /** The body exactly as received: the signature covers these bytes. */
  body: Buffer;
  signature: Buffer;
}

/**
 * Parses an opened SPA plaintext, or returns null if it is not exactly [body, signature] with a
 * body of the one accepted shape. Returned buffers are views into `plaintext`.
 */
export function decodeSealedKnock(plaintext: Buffer): DecodedSealedKnock | null {
  try {
    const outer = new StrictReader(plaintext);
    if (outer.head(MAJOR_ARRAY) !== 2) return null;
    const body = outer.byteString(0, plaintext.length);
    const signature = outer.byteString(SIGNATURE_BYTES, SIGNATURE_BYTES);
    outer.finish();
    return { knock: readBody(body), body, signature };
  } catch (error) {
    if (error === SCHEMA_VIOLATION) return null;
    throw error;
  }
}

/** Parses body bytes alone; null unless they are exactly one knock body in deterministic CBOR. */
export function decodeKnockBody(body: Buffer): Knock | null {
  try {
    return readBody(body);
  } catch (error) {
    if (error === SCHEMA_VIOLATION) return null;
    throw error;
  }
}

function readBody(body: Buffer): Knock {
  const reader = new StrictReader(body);
  const entries = reader.head(MAJOR_MAP);
  let seen = 0;
  reader.key(KEY_IDENTITY_ID);
  const identityId = reader.byteString(ID_BYTES, ID_BYTES);
  reader.key(KEY_TIMESTAMP);
  const timestampMs = reader.head(MAJOR_UINT);
  reader.key(KEY_NONCE);
  const nonce = reader.byteString(NONCE_BYTES, NONCE_BYTES);
  seen += 3;
  let claimedSource: string | undefined;
  if (reader.peekKey(KEY_CLAIMED_SOURCE)) {
    reader.key(KEY_CLAIMED_SOURCE);
    const address = reader.byteString(4, 16);
    if ((address.length !== 4 && address.length !== 16) || isIpv4Mapped(address)) throw SCHEMA_VIOLATION;
    claimedSource = ipAddressFromBytes(address)!;
    seen++;
  }
  reader.key(KEY_ACCESS);
  const access = reader.text(ACCESS_MAX_LENGTH).text;
  if (!parseAccess(access)) throw SCHEMA_VIOLATION;
  seen++;
  let posture: Record<string, PostureValue> | undefined;
  if (reader.peekKey(KEY_POSTURE)) {
    reader.key(KEY_POSTURE);
    posture = readPosture(reader);
    seen++;
  }
  let service: string | undefined;
  if (reader.peekKey(KEY_SERVICE)) {
    reader.key(KEY_SERVICE);
    service = reader.text(SERVICE_NAME_MAX_BYTES).text;
    if (!SERVICE_NAME.test(service)) throw SCHEMA_VIOLATION;
    seen++;
  }
  // The map header must count exactly the entries read, so no unknown key can follow.
  if (entries !== seen) throw SCHEMA_VIOLATION;
  reader.finish();
  const knock: Knock = { identityId, timestampMs, nonce, access };
  if (claimedSource !== undefined) knock.claimedSource = claimedSource;
  if (posture !== undefined) knock.posture = posture;
  if (service !== undefined) knock.service = service;
  return knock;
}

function readPosture(reader: StrictReader): Record<string, PostureValue> {
  const count = reader.head(MAJOR_MAP);
  if (count === 0 || count > POSTURE_MAX_ENTRIES) throw SCHEMA_VIOLATION;
  const entries: [string, PostureValue][] = [];
  let previous: Buffer | undefined;
  for (let i = 0; i < count; i++) {
    const { text: key, bytes } = reader.text(POSTURE_KEY_MAX_BYTES);
    if (bytes.length === 0) throw SCHEMA_VIOLATION;
    // Strictly increasing: in order, and no key twice.
    if (previous && compareEncodedText(previous, bytes) >= 0) throw SCHEMA_VIOLATION;
    previous = bytes;
    entries.push([key, reader.postureValue()]);
  }
  // fromEntries defines own properties, so a claim named "__proto__" is a claim, not a prototype.
  return Object.fromEntries(entries);
}
