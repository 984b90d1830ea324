// Enrollment: a device or gateway trades a one-time token for a certificate. Everything that can be
// checked without the token is checked first — the token's form and kind, the public key, the
// certificate request's signature, and (for devices) a signature by the identity key proving the
// device holds it — so a typo never spends a token. Then the token is consumed atomically (one
// token, one enrollment, once), the subject's state is checked, and only then is a certificate
// issued and the key recorded. Private keys never leave the device.

import { verify } from 'node:crypto';
import {
  decodeKey,
  ed25519PublicKeyObject,
  enrollmentPossessionMessage,
  hashTokenSecret,
  parseEnrollmentToken,
} from '@umbra/protocol';
import type { DataDir } from '../data-dir.ts';
import { StoreError } from '../store/index.ts';

export interface EnrollRequest {
  token: string;
  identityPublicKey: string;
  /** Ed25519 by the identity key over enrollmentPossessionMessage(token, csr), base64. */
  identitySignature: string;
  csr: string;
}

export interface EnrollResponse {
  identity: string;
  certificate: string;
  caCertificate: string;
  notAfter: string;
}

export interface GatewayEnrollRequest {
  token: string;
  /** The gateway's X25519 SPA key (base64), which clients seal their knocks to. */
  spaPublicKey: string;
  csr: string;
}

export interface GatewayEnrollResponse {
  gateway: string;
  certificate: string;
  caCertificate: string;
  notAfter: string;
}

/** A refusal with the HTTP status to answer it with; the message is safe to show the device. */
export class EnrollmentRefused extends Error {
  override name = 'EnrollmentRefused';
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

/** Why a token cannot be spent, as the device is told; attested enrollment answers the same. */
export const TOKEN_REFUSALS = {
  unknown: 'this enrollment token is not known to this controller',
  used: 'this enrollment token was already used; ask for a new one',
  expired: 'this enrollment token has expired; ask for a new one',
} as const;

type Kind = 'identity' | 'gateway';

/** The checks that need no token: form, kind, key and request. Spends nothing. */
async function checkRequest(
  data: DataDir,
  tokenText: string,
  kind: Kind,
  key: { value: string; field: string },
  csr: string,
) {
  let token: ReturnType<typeof parseEnrollmentToken>;
  try {
    token = parseEnrollmentToken(tokenText);
    decodeKey(key.value, key.field);
  } catch (error) {
    throw new EnrollmentRefused(400, (error as Error).message);
  }
  if (token.kind !== kind)
    throw new EnrollmentRefused(
      400,
      kind === 'identity'
        ? 'this is a gateway token; enroll gateways with `umbra-gateway enroll`'
        : 'this is a device token; enroll devices with `umbra enroll`',
    );
  try {
    await data.ca.verifyRequest(csr);
  } catch (error) {
    throw new EnrollmentRefused(400, (error as Error).message);
  }
  return token;
}

/** Consumes the token atomically and returns its subject's name, or refuses (and audits) why not. */
async function consume(data: DataDir, secret: Buffer, kind: Kind, now: number): Promise<string> {
  const consumed = await data.store.consumeEnrollmentToken(hashTokenSecret(secret), now);
  if (consumed.ok) return consumed.token.subjectName;
  await data.store.appendAudit({
    actor: kind,
    action: kind === 'gateway' ? 'gateway.enroll' : 'enroll',
    subject: '?',
    decision: 'deny',
    reason: consumed.reason,
    details: {},
  });
  throw new EnrollmentRefused(403, TOKEN_REFUSALS[consumed.reason]);
}

/** A store refusal (a key already taken, a subject revoked meanwhile) is the caller's conflict, not our failure. */
export function conflict(error: unknown): never {
  if (error instanceof StoreError) throw new EnrollmentRefused(409, error.message);
  throw error;
}

export async function enroll(
  data: DataDir,
  request: EnrollRequest,
  now = Date.now(),
): Promise<EnrollResponse> {
  const { store, ca } = data;
  const token = await checkRequest(
    data,
    request.token,
    'identity',
    { value: request.identityPublicKey, field: 'identityPublicKey' },
    request.csr,
  );
  const identityKey = ed25519PublicKeyObject(decodeKey(request.identityPublicKey, 'identityPublicKey'));
  const signature = Buffer.from(request.identitySignature, 'base64');
  if (
    signature.length !== 64 ||
    !verify(null, enrollmentPossessionMessage(request.token, request.csr), identityKey, signature)
  )
    throw new EnrollmentRefused(
      400,
      'identitySignature: does not verify with identityPublicKey over this token and request',
    );

  const name = await consume(data, token.secret, 'identity', now);
  const identity = await store.getIdentityByName(name);
  if (!identity || identity.revokedAt !== null)
    throw new EnrollmentRefused(409, `identity ${name} is revoked; ask for a new token`);
  if (identity.disabled) throw new EnrollmentRefused(409, `identity ${name} is disabled; ask the operator`);
  const issued = await ca.issueClientCertificate(request.csr, { identity: name, now: new Date(now) });
  await store.setIdentityPublicKey(name, request.identityPublicKey).catch(conflict);
  await store.recordCertificate({
    serial: issued.serial,
    identityId: identity.id,
    notBefore: issued.notBefore.getTime(),
    notAfter: issued.notAfter.getTime(),
    pem: issued.pem,
  });
  await store.appendAudit({
    actor: `identity:${name}`,
    action: 'enroll',
    subject: name,
    decision: 'allow',
    details: { serial: issued.serial, notAfter: issued.notAfter.toISOString() },
  });
  return {
    identity: name,
    certificate: issued.pem,
    caCertificate: ca.pem,
    notAfter: issued.notAfter.toISOString(),
  };
}

/**
 * A gateway's enrollment: its SPA public key is recorded (clients will be given it), and its TLS
 * key gets a certificate for both its tunnel listener and its link to the controller. (Attested
 * enrollment, with the keys in the gateway's TPM, replaces this for boxes that have one; an X25519
 * key cannot sign, so possession of the SPA key is not proven here.)
 */
export async function enrollGateway(
  data: DataDir,
  request: GatewayEnrollRequest,
  now = Date.now(),
): Promise<GatewayEnrollResponse> {
  const { store, ca } = data;
  const token = await checkRequest(
    data,
    request.token,
    'gateway',
    { value: request.spaPublicKey, field: 'spaPublicKey' },
    request.csr,
  );
  const name = await consume(data, token.secret, 'gateway', now);
  const gateway = await store.getGatewayByName(name);
  if (!gateway || gateway.status === 'revoked')
    throw new EnrollmentRefused(409, `gateway ${name} is revoked; ask for a new token`);
  const issued = await ca.issueGatewayCertificate(request.csr, { gatewayName: name, now: new Date(now) });
  await store.setGatewayPublicKey(name, request.spaPublicKey).catch(conflict);
  await store.appendAudit({
    actor: `gateway:${name}`,
    action: 'gateway.enroll',
    subject: name,
    decision: 'allow',
    details: { serial: issued.serial, notAfter: issued.notAfter.toISOString() },
  });
  return {
    gateway: name,
    certificate: issued.pem,
    caCertificate: ca.pem,
    notAfter: issued.notAfter.toISOString(),
  };
}
