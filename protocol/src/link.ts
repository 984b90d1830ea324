// The gateway ↔ controller link: one WebSocket (wss://CONTROLLER/v1/link), mutual TLS with
// certificates from the controller's CA, one CBOR-encoded message per binary frame.
//
// The gateway dials out, so it stays dark. Both sides decode with decodeLinkMessage, which bounds
// the size and checks the one shape each message type may have; anything else closes the link and
// applies nothing. Policy travels as snapshots and deltas signed with the controller's CA key
// (link-policy.ts), so a gateway can keep deciding from the last one it verified while the
// controller is away.
//
//   gateway → controller: hello, authorize, session, posture, health, attestation
//   controller → gateway: snapshot, delta, decision, revoke, attest

import { isIP } from 'node:net';
import { z } from 'zod';
import { SERVICE_NAME } from './knock.ts';
import { SPA_MAX_PACKET_BYTES } from './spa.ts';
import { decodeTypedMessage, encodePlainCbor } from './typed-message.ts';

export const LINK_PATH = '/v1/link';
export const LINK_VERSION = 1;
/** Every frame is at most this long; a snapshot of many thousand identities still fits. */
export const LINK_MAX_MESSAGE_BYTES = 1024 * 1024;
/** WebSocket close codes the link uses (4000-4999 are for applications). */
export const LINK_CLOSE = {
  /** A frame that is not a valid message for this direction. */
  protocolError: 4400,
  /** The peer's certificate does not name an enrolled gateway, or the gateway is revoked. */
  unauthorized: 4401,
  /** A newer link from the same gateway replaced this one. */
  replaced: 4409,
} as const;

const NAME = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$/;
const HEX_ID = /^[0-9a-f]{32}$/;
const SERIAL = /^[0-9a-f]{1,64}$/;
const POSTURE_KEY = /^.{1,32}$/su;

const name = z.string().regex(NAME);
const serviceName = z.string().regex(SERVICE_NAME);
const keyId = z.string().regex(HEX_ID);
const ipAddress = z
  .string()
  .max(45)
  .refine((text) => isIP(text) !== 0, { message: 'expected an IPv4 or IPv6 address' });
const uint = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const port = z.number().int().min(1).max(65535);
const bytes = (max: number) =>
  z.custom<Uint8Array>((value) => value instanceof Uint8Array && value.length <= max, {
    message: `expected a byte string of at most ${max} bytes`,
  });
const reason = z.string().min(1).max(512);
const posture = z
  .record(z.string().regex(POSTURE_KEY), z.union([z.string().max(64), z.number().int(), z.boolean()]))
  .refine((claims) => Object.keys(claims).length <= 16, { message: 'at most 16 claims' });

export const hello = z
  .object({
    t: z.literal('hello'),
    version: z.literal(LINK_VERSION),
    /** The version of the snapshot the gateway holds, so the controller may send only a delta. */
    snapshotVersion: uint.nullable(),
    /** Where clients reach this gateway: the address they knock and connect to. */
    endpoint: z.object({ host: z.string().min(1).max(253), spaPort: port, tunnelPort: port }).strict(),
    /**
     * A gateway with a TPM: its identity key's TPMT_SIGNATURE over linkBindingDigest of this TLS
     * connection's exporter value (attestation.ts). Required of every gateway enrolled with a TPM.
     */
    binding: bytes(1024).optional(),
  })
  .strict();

export const authorize = z
  .object({
    t: z.literal('authorize'),
    /** Chosen by the gateway; the decision carries it back. */
    id: uint,
    /** The sealed plaintext [body, signature] as the client signed it: the controller checks it itself. */
    knock: bytes(SPA_MAX_PACKET_BYTES),
    /** The source address the gateway saw the knock come from. */
    source: ipAddress,
  })
  .strict();

export const sessionReport = z.discriminatedUnion('event', [
  z
    .object({
      t: z.literal('session'),
      event: z.literal('closed'),
      sessionId: z.string().min(1).max(64),
      reason,
      bytesIn: uint.optional(),
      bytesOut: uint.optional(),
    })
    .strict(),
  z
    .object({
      t: z.literal('session'),
      /** A session the gateway opened from its cached snapshot while the controller was away. */
      event: z.literal('opened-offline'),
      sessionId: z.string().min(1).max(64),
      knock: bytes(SPA_MAX_PACKET_BYTES),
      source: ipAddress,
      service: serviceName,
      openedAt: uint,
    })
    .strict(),
]);

export const postureReport = z
  .object({
    t: z.literal('posture'),
    keyId,
    source: ipAddress,
    posture,
  })
  .strict();

export const health = z
  .object({
    t: z.literal('health'),
    uptimeSeconds: uint,
    acceptedKnocks: uint,
    rejectedKnocks: uint,
    liveTunnels: uint,
    snapshotVersion: uint.nullable(),
  })
  .strict();

export const signedPolicy = (type: 'snapshot' | 'delta') =>
  z
    .object({
      t: z.literal(type),
      /** CBOR of a PolicySnapshot or PolicyDelta (link-policy.ts). */
      payload: bytes(LINK_MAX_MESSAGE_BYTES),
      /** ECDSA P-256 with SHA-256 by the controller's CA key, IEEE P1363 form (r ‖ s). */
      signature: bytes(64),
    })
    .strict();

export const decision = z.union([
  z
    .object({
      t: z.literal('decision'),
      id: uint,
      allow: z.literal(true),
      sessionId: z.string().min(1).max(64),
      identity: name,
      keyId,
      service: serviceName,
      mode: z.enum(['tunnel', 'direct']),
      /** HOST:PORT: where a tunnel is proxied to, or the local port a direct pinhole opens. */
      backend: z.string().min(3).max(261),
      /** What the pinhole opens, "tcp/PORT". */
      access: z.string().regex(/^(tcp|udp)\/[1-9]\d{0,4}$/),
      ttlSeconds: z.number().int().min(1).max(86_400),
    })
    .strict(),
  z.object({ t: z.literal('decision'), id: uint, allow: z.literal(false), reason }).strict(),
]);

export const revoke = z
  .object({
    t: z.literal('revoke'),
    /** Identities whose pinholes and tunnels end now. */
    keyIds: z.array(keyId).max(10_000),
    /** Certificates no tunnel may use any more (lower-case hex). */
    serials: z.array(z.string().regex(SERIAL)).max(10_000),
    /** Sessions that end now (e.g. posture fell out of compliance). */
    sessionIds: z.array(z.string().min(1).max(64)).max(10_000),
    reason,
  })
  .strict();

/** The controller asks for a fresh quote over `pcrs` of `bank` with `nonce` (re-attestation). */
export const attest = z
  .object({
    t: z.literal('attest'),
    id: uint,
    nonce: bytes(64),
    bank: z.enum(['sha1', 'sha256', 'sha384']),
    pcrs: z.array(z.number().int().min(0).max(23)).min(1).max(24),
  })
  .strict();

/** The gateway's answer to attest: the quote as its TPM signed it, and the PCR values it covers. */
export const attestation = z
  .object({
    t: z.literal('attestation'),
    id: uint,
    /** TPMS_ATTEST and TPMT_SIGNATURE bytes. */
    attest: bytes(2048),
    signature: bytes(1024),
    /** index (decimal) → digest. */
    pcrValues: z.record(z.string().regex(/^(?:[0-9]|1[0-9]|2[0-3])$/), bytes(64)),
  })
  .strict();

// By type, so an error names the field of the message it claims to be, not a failed union.
const toController = {
  hello,
  authorize,
  session: sessionReport,
  posture: postureReport,
  health,
  attestation,
};
const toGateway = {
  snapshot: signedPolicy('snapshot'),
  delta: signedPolicy('delta'),
  decision,
  revoke,
  attest,
};

export type Hello = z.infer<typeof hello>;
export type Authorize = z.infer<typeof authorize>;
export type SessionReport = z.infer<typeof sessionReport>;
export type PostureReport = z.infer<typeof postureReport>;
export type Health = z.infer<typeof health>;
export type SignedPolicyMessage = z.infer<ReturnType<typeof signedPolicy>>;
export type DecisionMessage = z.infer<typeof decision>;
export type Revoke = z.infer<typeof revoke>;
export type Attest = z.infer<typeof attest>;
export type Attestation = z.infer<typeof attestation>;
export type ToControllerMessage = Hello | Authorize | SessionReport | PostureReport | Health | Attestation;
export type ToGatewayMessage = SignedPolicyMessage | DecisionMessage | Revoke | Attest;

export class LinkMessageError extends Error {
  override name = 'LinkMessageError';
}

const linkError = (message: string) => new LinkMessageError(message);

export function encodeLinkMessage(message: ToControllerMessage | ToGatewayMessage): Buffer {
  const encoded = encodePlainCbor(message);
  if (encoded.length > LINK_MAX_MESSAGE_BYTES)
    throw new LinkMessageError(`a ${message.t} message of ${encoded.length} bytes exceeds the link's limit`);
  return encoded;
}

export function decodeToController(frame: Uint8Array): ToControllerMessage {
  return decodeWith(frame, toController) as ToControllerMessage;
}

export function decodeToGateway(frame: Uint8Array): ToGatewayMessage {
  return decodeWith(frame, toGateway) as ToGatewayMessage;
}

function decodeWith(frame: Uint8Array, schemas: Record<string, z.ZodTypeAny>): unknown {
  if (!(frame instanceof Uint8Array) || frame.length === 0 || frame.length > LINK_MAX_MESSAGE_BYTES)
    throw new LinkMessageError(`a frame must be 1 to ${LINK_MAX_MESSAGE_BYTES} bytes`);
  return decodeTypedMessage(frame, schemas, linkError);
}
