// Enrollment: a device trades a one-time token for a client certificate. It sends the token, its
// identity public key (Ed25519, the key that signs its knocks) and a CSR for its TLS key; neither
// private key ever leaves the device. The token is consumed atomically before anything is issued,
// so one token enrolls one device, once.

import { decodeKey } from '@umbra/protocol';
import { hashTokenSecret, parseEnrollmentToken } from '../ca/index.ts';
import type { DataDir } from '../data-dir.ts';

export interface EnrollRequest {
  token: string;
  identityPublicKey: string;
  csr: string;
}

export interface EnrollResponse {
  identity: string;
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

const REFUSALS = {
  unknown: 'this enrollment token is not known to this controller',
  used: 'this enrollment token was already used; ask for a new one',
  expired: 'this enrollment token has expired; ask for a new one',
} as const;

/** Parses the token and key, checks the kind, and consumes the token atomically: the subject's name. */
async function consumeToken(
  data: DataDir,
  tokenText: string,
  kind: 'identity' | 'gateway',
  publicKey: { value: string; field: string },
  now: number,
): Promise<string> {
  let token: ReturnType<typeof parseEnrollmentToken>;
  try {
    token = parseEnrollmentToken(tokenText);
    decodeKey(publicKey.value, publicKey.field);
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
  const consumed = await data.store.consumeEnrollmentToken(hashTokenSecret(token.secret), now);
  if (!consumed.ok) {
    await data.store.appendAudit({
      actor: kind,
      action: kind === 'gateway' ? 'gateway.enroll' : 'enroll',
      subject: '?',
      decision: 'deny',
      reason: consumed.reason,
      details: {},
    });
    throw new EnrollmentRefused(403, REFUSALS[consumed.reason]);
  }
  return consumed.token.subjectName;
}

export async function enroll(
  data: DataDir,
  request: EnrollRequest,
  now = Date.now(),
): Promise<EnrollResponse> {
  const { store, ca } = data;
  const name = await consumeToken(
    data,
    request.token,
    'identity',
    { value: request.identityPublicKey, field: 'identityPublicKey' },
    now,
  );
  const identity = await store.getIdentityByName(name);
  if (!identity || identity.revokedAt !== null)
    throw new EnrollmentRefused(403, `identity ${name} is revoked or gone; ask for a new token`);
  let issued: Awaited<ReturnType<typeof ca.issueClientCertificate>>;
  try {
    issued = await ca.issueClientCertificate(request.csr, { identity: name, now: new Date(now) });
  } catch (error) {
    throw new EnrollmentRefused(400, `csr: ${(error as Error).message}`);
  }
  await store.setIdentityPublicKey(name, request.identityPublicKey);
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

/**
 * A gateway's enrollment: its SPA public key is recorded (clients will be given it), and its TLS
 * key gets a certificate for both its tunnel listener and its link to the controller. (Attested
 * enrollment, with the keys in the gateway's TPM, replaces this for boxes that have one.)
 */
export async function enrollGateway(
  data: DataDir,
  request: GatewayEnrollRequest,
  now = Date.now(),
): Promise<GatewayEnrollResponse> {
  const { store, ca } = data;
  const name = await consumeToken(
    data,
    request.token,
    'gateway',
    { value: request.spaPublicKey, field: 'spaPublicKey' },
    now,
  );
  let issued: Awaited<ReturnType<typeof ca.issueGatewayCertificate>>;
  try {
    issued = await ca.issueGatewayCertificate(request.csr, { gatewayName: name, now: new Date(now) });
  } catch (error) {
    throw new EnrollmentRefused(400, `csr: ${(error as Error).message}`);
  }
  try {
    await store.setGatewayPublicKey(name, request.spaPublicKey);
  } catch (error) {
    throw new EnrollmentRefused(409, (error as Error).message);
  }
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
