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

export async function enroll(
  data: DataDir,
  request: EnrollRequest,
  now = Date.now(),
): Promise<EnrollResponse> {
  const { store, ca } = data;
  let token: ReturnType<typeof parseEnrollmentToken>;
  try {
    token = parseEnrollmentToken(request.token);
    decodeKey(request.identityPublicKey, 'identityPublicKey');
  } catch (error) {
    throw new EnrollmentRefused(400, (error as Error).message);
  }
  if (token.kind !== 'identity')
    throw new EnrollmentRefused(400, 'this is a gateway token; enroll gateways with `umbra-gateway enroll`');
  const consumed = await store.consumeEnrollmentToken(hashTokenSecret(token.secret), now);
  if (!consumed.ok) {
    await store.appendAudit({
      actor: 'device',
      action: 'enroll',
      subject: '?',
      decision: 'deny',
      reason: consumed.reason,
      details: {},
    });
    throw new EnrollmentRefused(403, REFUSALS[consumed.reason]);
  }
  const name = consumed.token.subjectName;
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
