// Enrollment tokens: one line of text that carries everything a new client or gateway needs to enroll —
// where the controller is, which CA key to trust (so the first TLS connection is already pinned, with no
// trust-on-first-use), and a one-time secret that authorizes the enrollment.
//
//   "umbra1." + base64url(CBOR map { kind, url, pin: SHA-256 digest (32 bytes), secret: 32 bytes })
//
// The controller stores only SHA-256(secret): a leaked database does not enroll anyone. The secret is
// 256 random bits, so a fast unsalted hash is enough — there is nothing to brute-force.
//
// Parsing accepts exactly one spelling of each token (canonical base64url, canonical CBOR, no extra
// fields), so a token's text and its meaning correspond one to one.

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { Decoder, Encoder } from 'cbor-x';
import { digestFromPin, isPin, PIN_DIGEST_BYTES, pinFromDigest } from './pin.ts';

export const ENROLLMENT_TOKEN_PREFIX = 'umbra1.';
export const TOKEN_SECRET_BYTES = 32;
/** Far above a real token (~200 characters); bounds the work done on pasted garbage. */
export const MAX_TOKEN_LENGTH = 2048;
const MAX_URL_LENGTH = 1024;
const BASE64URL = /^[A-Za-z0-9_-]+$/;
const FIELDS = ['kind', 'url', 'pin', 'secret'] as const;

export type EnrollmentTokenKind = 'identity' | 'gateway';

export interface EnrollmentToken {
  kind: EnrollmentTokenKind;
  /** The controller's https URL. */
  url: string;
  /** The controller CA's pin, "sha256/…". */
  pin: string;
  secret: Buffer;
}

export interface CreateEnrollmentTokenOptions {
  kind: EnrollmentTokenKind;
  url: string;
  pin: string;
}

export interface CreatedEnrollmentToken {
  /** The text to hand to the person enrolling; shown once, never stored. */
  token: string;
  /** SHA-256 of the secret, hex: the only part the controller keeps. */
  secretHash: string;
}

/** The text is not a usable enrollment token; the message says which part is wrong. */
export class EnrollmentTokenError extends Error {
  override name = 'EnrollmentTokenError';
}

// One encoder and decoder for plain maps: no cbor-x records or tags, so the format is plain RFC 8949.
const encoder = new Encoder({
  useRecords: false,
  mapsAsObjects: false,
  tagUint8Array: false,
  variableMapSize: true,
});
const decoder = new Decoder({ useRecords: false, mapsAsObjects: false });

export function createEnrollmentToken(options: CreateEnrollmentTokenOptions): CreatedEnrollmentToken {
  const kind = checkKind(options.kind);
  const url = checkUrl(options.url);
  if (typeof options.pin !== 'string' || !isPin(options.pin))
    throw new EnrollmentTokenError(
      `pin: ${JSON.stringify(options.pin)} is not a CA pin; use CertificateAuthority.pin`,
    );
  const secret = randomBytes(TOKEN_SECRET_BYTES);
  const body = encodeBody(kind, url, digestFromPin(options.pin), secret);
  return { token: ENROLLMENT_TOKEN_PREFIX + body.toString('base64url'), secretHash: hashTokenSecret(secret) };
}

/** Parses a token as pasted by a person (surrounding whitespace is ignored). Throws EnrollmentTokenError. */
export function parseEnrollmentToken(text: string): EnrollmentToken {
  if (typeof text !== 'string') throw new EnrollmentTokenError('enrollment token: expected text');
  const trimmed = text.trim();
  if (trimmed.length > MAX_TOKEN_LENGTH)
    throw new EnrollmentTokenError(
      `enrollment token: ${trimmed.length} characters, more than any token (${MAX_TOKEN_LENGTH}); copy just the token`,
    );
  if (!trimmed.startsWith(ENROLLMENT_TOKEN_PREFIX))
    throw new EnrollmentTokenError(
      `not an Umbra enrollment token (it should start with ${ENROLLMENT_TOKEN_PREFIX}); copy the whole token printed by \`umbra-controller token create\``,
    );
  const encoded = trimmed.slice(ENROLLMENT_TOKEN_PREFIX.length);
  const bytes = Buffer.from(encoded, 'base64url');
  if (!BASE64URL.test(encoded) || bytes.toString('base64url') !== encoded)
    throw new EnrollmentTokenError(
      'enrollment token: the part after "umbra1." is not valid base64url; it was probably cut short or altered — copy it again',
    );

  let decoded: unknown;
  try {
    decoded = decoder.decode(bytes);
  } catch {
    throw new EnrollmentTokenError(
      'enrollment token: its contents do not decode; it was probably cut short or altered — copy it again',
    );
  }
  if (!(decoded instanceof Map))
    throw new EnrollmentTokenError('enrollment token: its contents are not a field map');
  for (const key of decoded.keys())
    if (!(FIELDS as readonly unknown[]).includes(key))
      throw new EnrollmentTokenError(
        `enrollment token: unknown field ${JSON.stringify(String(key))}; it may come from a newer controller — upgrade this program`,
      );
  for (const field of FIELDS)
    if (!decoded.has(field)) throw new EnrollmentTokenError(`enrollment token: field "${field}" is missing`);

  const kind = checkKind(decoded.get('kind'));
  const url = checkUrl(decoded.get('url'));
  const pin = checkBytes(decoded.get('pin'), 'pin', PIN_DIGEST_BYTES);
  const secret = checkBytes(decoded.get('secret'), 'secret', TOKEN_SECRET_BYTES);
  if (!encodeBody(kind, url, pin, secret).equals(bytes))
    throw new EnrollmentTokenError(
      'enrollment token: not in canonical form; use the token exactly as it was printed',
    );
  return { kind, url, pin: pinFromDigest(pin), secret };
}

/** SHA-256 of a token secret, lower-case hex: what the controller stores and looks tokens up by. */
export function hashTokenSecret(secret: Uint8Array): string {
  return createHash('sha256').update(secret).digest('hex');
}

/** Whether `secret` hashes to `secretHash` (hex); constant time in the secret and the stored hash. */
export function tokenSecretMatches(secret: Uint8Array, secretHash: string): boolean {
  const actual = createHash('sha256').update(secret).digest();
  const expected = Buffer.from(String(secretHash), 'hex');
  if (expected.length !== actual.length) return false;
  return timingSafeEqual(actual, expected);
}

function encodeBody(kind: EnrollmentTokenKind, url: string, pin: Uint8Array, secret: Uint8Array): Buffer {
  return encoder.encode(
    new Map<string, unknown>([
      ['kind', kind],
      ['url', url],
      ['pin', Buffer.from(pin)],
      ['secret', Buffer.from(secret)],
    ]),
  );
}

function checkKind(kind: unknown): EnrollmentTokenKind {
  if (kind === 'identity' || kind === 'gateway') return kind;
  throw new EnrollmentTokenError(`kind: ${describe(kind)} is neither "identity" nor "gateway"`);
}

/** The controller URL must be https: the pin is only worth something if TLS is what it pins. */
function checkUrl(url: unknown): string {
  if (typeof url !== 'string' || url.length > MAX_URL_LENGTH)
    throw new EnrollmentTokenError(
      `url: expected the controller's https URL of at most ${MAX_URL_LENGTH} characters`,
    );
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new EnrollmentTokenError(
      `url: ${JSON.stringify(url)} is not a URL; use e.g. https://controller.example:8443`,
    );
  }
  if (parsed.protocol !== 'https:')
    throw new EnrollmentTokenError(
      `url: ${JSON.stringify(url)} uses ${parsed.protocol.replace(/:$/, '')}; the controller URL must be https`,
    );
  if (parsed.username || parsed.password || parsed.search || parsed.hash)
    throw new EnrollmentTokenError(
      `url: ${JSON.stringify(url)} carries credentials, a query or a fragment; give only https://HOST:PORT[/path]`,
    );
  return parsed.href;
}

function checkBytes(value: unknown, field: string, length: number): Buffer {
  if (!(value instanceof Uint8Array) || value.length !== length)
    throw new EnrollmentTokenError(
      `enrollment token: field "${field}" must be ${length} bytes, got ${describe(value)}`,
    );
  return Buffer.from(value);
}

function describe(value: unknown): string {
  if (value instanceof Uint8Array) return `${value.length} bytes`;
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  return value === null ? 'null' : typeof value;
}

const POSSESSION_CONTEXT = Buffer.from('umbra enroll v1');

/**
 * What a device signs with its identity key when it enrolls: proof that it holds the key it
 * registers, bound to this token and this certificate request, so nobody can register someone
 * else's public key (and lock them out) or replay the signature with another request.
 */
export function enrollmentPossessionMessage(tokenText: string, csrPem: string): Buffer {
  return Buffer.concat([
    POSSESSION_CONTEXT,
    createHash('sha256').update(tokenText.trim()).digest(),
    createHash('sha256').update(csrPem).digest(),
  ]);
}
