// The site bundle: everything an unprovisioned box needs to join its site, signed by the
// organisation's provisioning key, whose public half the firmware carries.
//
//   bundle    = CBOR map { body: bstr, signature: bstr (64), keyId: bstr (16) (optional) }
//   body      = CBOR map { v: 1, controllerUrl, caPin, enrollmentToken, site, network,
//                          createdAt, expiresAt }            (times in ms since the epoch)
//   signature = Ed25519(provisioning key, "umbra site bundle v1\0" ‖ body)
//   keyId     = first 16 bytes of SHA-256("umbra provisioning key id v1" ‖ raw public key)
//
// The body travels as the exact bytes that were signed, so checking needs no re-encoding, and the
// context string keeps a signature over a bundle from passing for a signature over anything else
// this key might one day sign. The box checks the signature before it parses the body, and refuses
// anything over SITE_BUNDLE_MAX_BYTES before it decodes a byte.
//
// The bundle holds an enrollment token, whose secret enrolls one gateway: the file is as sensitive
// as the token, though its signature means a changed copy is refused.

import { createHash, type KeyObject, sign, timingSafeEqual, verify } from 'node:crypto';
import { isIP } from 'node:net';
import { Decoder, Encoder } from 'cbor-x';
import { z } from 'zod';
import { ipAddressToBytes } from '../address.ts';
import { EnrollmentTokenError, parseEnrollmentToken } from '../enrollment-token.ts';
import { ed25519PublicKeyObject, rawPublicKey } from '../key-objects.ts';
import { isPin } from '../pin.ts';
import { SITE_BUNDLE_MAX_BYTES } from './messages.ts';

export { SITE_BUNDLE_MAX_BYTES };
export const SITE_BUNDLE_VERSION = 1;
export const SITE_BUNDLE_CONTEXT = Buffer.from('umbra site bundle v1\0');
const KEY_ID_LABEL = Buffer.from('umbra provisioning key id v1');
export const PROVISIONING_KEY_ID_BYTES = 16;
export const MAX_DNS_SERVERS = 4;
export const MAX_NTP_SERVERS = 4;
/** A bundle is for the install at hand, not for a drawer: at most this long between created and expires. */
export const MAX_SITE_BUNDLE_LIFETIME_MS = 90 * 24 * 3600 * 1000;

const HOSTNAME =
  /^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

const ipAddress = z
  .string()
  .max(45)
  .refine((text) => isIP(text) !== 0, { message: 'expected an IPv4 or IPv6 address' });
const hostOrAddress = z.string().refine((text) => isIP(text) !== 0 || HOSTNAME.test(text), {
  message: 'expected a host name or an IP address',
});
const cidr = z.string().refine((text) => parseCidr(text) !== undefined, {
  message: 'expected ADDRESS/PREFIX, e.g. 192.0.2.10/24 or 2001:db8::10/64',
});
const time = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

const common = {
  /** 802.1Q VLAN the box's uplink is tagged with; untagged when absent. */
  vlan: z.number().int().min(1).max(4094).optional(),
  dns: z.array(ipAddress).max(MAX_DNS_SERVERS),
  ntp: z.array(hostOrAddress).max(MAX_NTP_SERVERS),
};

const network = z
  .discriminatedUnion('mode', [
    z.object({ mode: z.literal('dhcp'), ...common }).strict(),
    z
      .object({
        mode: z.literal('static'),
        /** The box's address and prefix length. */
        address: cidr,
        gateway: ipAddress,
        ...common,
      })
      .strict(),
  ])
  .superRefine((value, context) => {
    if (value.mode !== 'static') return;
    const subnet = parseCidr(value.address);
    const gateway = ipAddressToBytes(value.gateway);
    if (subnet && gateway && !inSubnet(gateway, subnet))
      context.addIssue({
        code: z.ZodIssueCode.custom,
        path: ['gateway'],
        message: `${value.gateway} is not in ${value.address}; the gateway must be on the box's own subnet`,
      });
  });

const https = z
  .string()
  .max(1024)
  .refine((text) => URL.canParse(text) && new URL(text).protocol === 'https:', {
    message: 'expected an https URL, e.g. https://controller.example:8443',
  })
  .refine(
    (text) => {
      const url = new URL(text);
      return !url.username && !url.password && !url.search && !url.hash;
    },
    { message: 'give only https://HOST[:PORT][/path], without credentials, query or fragment' },
  );

const bodySchema = z
  .object({
    v: z.literal(SITE_BUNDLE_VERSION),
    controllerUrl: https,
    caPin: z.string().refine(isPin, { message: 'expected a CA pin, "sha256/" and 44 characters of base64' }),
    enrollmentToken: z.string().min(1).max(2048),
    site: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9 ._-]{0,62}$/, {
      message: 'expected 1 to 63 letters, digits, spaces, dots, dashes or underscores',
    }),
    network,
    createdAt: time,
    expiresAt: time,
  })
  .strict()
  .superRefine((body, context) => {
    const issue = (path: string, message: string) =>
      context.addIssue({ code: z.ZodIssueCode.custom, path: [path], message });
    if (body.expiresAt <= body.createdAt) issue('expiresAt', 'must be after createdAt');
    else if (body.expiresAt - body.createdAt > MAX_SITE_BUNDLE_LIFETIME_MS)
      issue('expiresAt', `at most ${MAX_SITE_BUNDLE_LIFETIME_MS / 86_400_000} days after createdAt`);
    let token: ReturnType<typeof parseEnrollmentToken>;
    try {
      token = parseEnrollmentToken(body.enrollmentToken);
    } catch (error) {
      // The token parser's messages never quote the secret.
      issue('enrollmentToken', error instanceof EnrollmentTokenError ? error.message : 'not a token');
      return;
    }
    if (token.kind !== 'gateway')
      issue(
        'enrollmentToken',
        `a ${token.kind} token; a box needs a gateway token (umbra-controller token create --gateway)`,
      );
    if (URL.canParse(body.controllerUrl) && token.url !== new URL(body.controllerUrl).href)
      issue('enrollmentToken', `made for ${token.url}, not for controllerUrl ${body.controllerUrl}`);
    if (token.pin !== body.caPin) issue('enrollmentToken', 'carries another CA pin than caPin');
    const host = URL.canParse(body.controllerUrl) ? new URL(body.controllerUrl).hostname : '';
    if (
      body.network.mode === 'static' &&
      body.network.dns.length === 0 &&
      isIP(host.replace(/^\[|\]$/g, '')) === 0
    )
      issue('network', `static addressing needs at least one DNS server to resolve ${host}`);
  });

const envelopeSchema = z
  .object({
    body: z.custom<Uint8Array>((v) => v instanceof Uint8Array && v.length > 0, {
      message: 'expected a byte string',
    }),
    signature: z.custom<Uint8Array>((v) => v instanceof Uint8Array && v.length === 64, {
      message: 'expected 64 bytes',
    }),
    keyId: z
      .custom<Uint8Array>((v) => v instanceof Uint8Array && v.length === PROVISIONING_KEY_ID_BYTES, {
        message: `expected ${PROVISIONING_KEY_ID_BYTES} bytes`,
      })
      .optional(),
  })
  .strict();

export type NetworkSettings = z.infer<typeof network>;

/** What a bundle says, as createSiteBundle takes it and openSiteBundle returns it. */
export interface SiteBundleFields {
  controllerUrl: string;
  /** The controller CA's pin, "sha256/…" (pin.ts). */
  caPin: string;
  /** A gateway enrollment token for the same controller and pin (enrollment-token.ts). */
  enrollmentToken: string;
  site: string;
  network: NetworkSettings;
  /** Milliseconds since the epoch. */
  createdAt: number;
  expiresAt: number;
}

export interface OpenedSiteBundle extends SiteBundleFields {
  /** Hex id of the key that signed it. */
  keyId: string;
}

export type SiteBundleErrorCode =
  | 'too-large'
  | 'malformed'
  | 'invalid-field'
  | 'unknown-key'
  | 'bad-signature'
  | 'expired';

/** A bundle that cannot be used. `code` is what the box reports in its result; `field` names the field. */
export class SiteBundleError extends Error {
  override name = 'SiteBundleError';
  readonly code: SiteBundleErrorCode;
  readonly field: string | undefined;
  constructor(code: SiteBundleErrorCode, message: string, field?: string) {
    super(message);
    this.code = code;
    this.field = field;
  }
}

const encoder = new Encoder({ useRecords: false, pack: false, tagUint8Array: false, mapsAsObjects: true });
const decoder = new Decoder({ useRecords: false, mapsAsObjects: true });

/** The id a bundle names its signing key by: hex of 16 bytes. */
export function provisioningKeyIdOf(publicKeyRaw: Uint8Array): string {
  return keyIdBytes(publicKeyRaw).toString('hex');
}

function keyIdBytes(publicKeyRaw: Uint8Array): Buffer {
  return createHash('sha256')
    .update(KEY_ID_LABEL)
    .update(publicKeyRaw)
    .digest()
    .subarray(0, PROVISIONING_KEY_ID_BYTES);
}

/** Validates `fields` (a SiteBundleError names the first bad one) and signs them with `privateKey` (Ed25519). */
export function createSiteBundle(
  fields: SiteBundleFields,
  privateKey: KeyObject,
  options: { includeKeyId?: boolean } = {},
): Buffer {
  if (privateKey.asymmetricKeyType !== 'ed25519')
    throw new TypeError('createSiteBundle: the provisioning key must be an Ed25519 private key');
  const body = checkBody({ v: SITE_BUNDLE_VERSION, ...fields });
  const bodyBytes = Buffer.from(encoder.encode(body));
  const signature = sign(null, Buffer.concat([SITE_BUNDLE_CONTEXT, bodyBytes]), privateKey);
  const envelope: Record<string, Uint8Array> = { body: bodyBytes, signature };
  if (options.includeKeyId !== false) envelope.keyId = keyIdBytes(rawPublicKey(privateKey));
  const bundle = Buffer.from(encoder.encode(envelope));
  if (bundle.length > SITE_BUNDLE_MAX_BYTES)
    throw new SiteBundleError(
      'too-large',
      `the bundle is ${bundle.length} bytes; the limit is ${SITE_BUNDLE_MAX_BYTES}`,
    );
  return bundle;
}

/**
 * Checks a bundle as a box does: size, shape, a trusted key's signature, then every field, then
 * `now` against expiresAt. `trustedPublicKeys` are raw 32-byte Ed25519 keys (from the firmware).
 */
export function openSiteBundle(
  bytes: Uint8Array,
  trustedPublicKeys: readonly Uint8Array[],
  now: number | Date,
): OpenedSiteBundle {
  if (!(bytes instanceof Uint8Array) || bytes.length === 0)
    throw new SiteBundleError('malformed', 'the site bundle is empty');
  if (bytes.length > SITE_BUNDLE_MAX_BYTES)
    throw new SiteBundleError(
      'too-large',
      `the site bundle is ${bytes.length} bytes; the limit is ${SITE_BUNDLE_MAX_BYTES} — is this file a site bundle?`,
    );
  let decoded: unknown;
  try {
    decoded = decoder.decode(bytes);
  } catch {
    throw new SiteBundleError(
      'malformed',
      'not a site bundle: the file does not decode; was it cut short or altered?',
    );
  }
  const envelope = envelopeSchema.safeParse(decoded);
  if (!envelope.success) {
    const issue = envelope.error.issues[0];
    const field = issue?.path.join('.') || undefined;
    throw new SiteBundleError(
      'malformed',
      `not a site bundle: ${field ?? '(root)'}: ${issue?.message}`,
      field,
    );
  }
  const { body, signature, keyId } = envelope.data;

  const candidates = keyId
    ? trustedPublicKeys.filter((key) => timingSafeEqual(keyIdBytes(key), keyId))
    : trustedPublicKeys;
  if (candidates.length === 0)
    throw new SiteBundleError(
      'unknown-key',
      keyId
        ? `the site bundle is signed by provisioning key ${Buffer.from(keyId).toString('hex')}, which this firmware does not trust; sign it with your organisation's provisioning key`
        : 'this firmware trusts no provisioning key; it cannot accept site bundles',
    );
  const signed = Buffer.concat([SITE_BUNDLE_CONTEXT, body]);
  const signer = candidates.find((key) => verify(null, signed, ed25519PublicKeyObject(key), signature));
  if (!signer)
    throw new SiteBundleError(
      'bad-signature',
      "the site bundle's signature does not verify; it was altered after signing, or signed with another key",
    );

  let value: unknown;
  try {
    value = decoder.decode(body);
  } catch {
    throw new SiteBundleError('malformed', 'the signed body does not decode');
  }
  const fields = checkBody(value);
  const at = now instanceof Date ? now.getTime() : now;
  if (at >= fields.expiresAt)
    throw new SiteBundleError(
      'expired',
      `the site bundle expired at ${new Date(fields.expiresAt).toISOString()} (it is now ${new Date(at).toISOString()}); create a new one with umbra-tech bundle create`,
      'expiresAt',
    );
  const { v: _version, ...rest } = fields;
  return { ...rest, keyId: provisioningKeyIdOf(signer) };
}

function checkBody(value: unknown): z.infer<typeof bodySchema> {
  const version = (value as { v?: unknown } | null)?.v;
  if (version !== undefined && version !== SITE_BUNDLE_VERSION)
    throw new SiteBundleError(
      'malformed',
      `a site bundle of version ${String(version)}; this firmware reads version ${SITE_BUNDLE_VERSION} — update the firmware`,
      'v',
    );
  const parsed = bodySchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = issue?.path.join('.') || '(root)';
    throw new SiteBundleError('invalid-field', `site bundle field ${field}: ${issue?.message}`, field);
  }
  return parsed.data;
}

interface Subnet {
  address: Buffer;
  prefix: number;
}

function parseCidr(text: string): Subnet | undefined {
  if (typeof text !== 'string' || text.length > 49) return undefined;
  const match = /^([^/]+)\/(\d{1,3})$/.exec(text);
  if (!match || isIP(match[1]!) === 0) return undefined;
  const address = ipAddressToBytes(match[1]!);
  const prefix = Number(match[2]);
  if (!address || !/^(0|[1-9]\d*)$/.test(match[2]!) || prefix > address.length * 8) return undefined;
  return { address, prefix };
}

function inSubnet(address: Buffer, subnet: Subnet): boolean {
  if (address.length !== subnet.address.length) return false;
  for (let bit = 0; bit < subnet.prefix; bit++) {
    const byte = bit >> 3;
    const mask = 0x80 >> (bit & 7);
    if ((address[byte]! & mask) !== (subnet.address[byte]! & mask)) return false;
  }
  return true;
}
