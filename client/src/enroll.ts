// Enrolling this device with a controller, from nothing but a one-time token. The token carries the
// controller's URL and the pin of its CA, so the device can recognise the controller before it
// trusts anything it says: it reads the certificate chain the controller presents, keeps the CA
// whose key matches the pin, and only then talks to the controller with that CA as its only trust.
// The device makes its keys itself — the identity key that signs knocks, and a TLS key — and sends
// only their public halves; the controller returns a client certificate for the TLS key.

import { generateKeyPairSync, sign } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  createCertificateRequest,
  ENROLLMENT_FILE,
  encodeKey,
  enrollmentPossessionMessage,
  fetchPinnedCa,
  type Identity,
  parseEnrollmentToken,
  postJson,
  saveEnrollment,
} from '@umbra/protocol';
import { createIdentityFile, loadIdentityFile } from './identity.ts';

export const IDENTITY_FILE = 'identity';

export interface Enrollment {
  identity: string;
  controller: string;
  pin: string;
  notAfter: string;
}

export class EnrollError extends Error {
  override name = 'EnrollError';
}

export async function enrollDevice(tokenText: string, dir: string): Promise<Enrollment> {
  const token = parseEnrollmentToken(tokenText);
  if (token.kind !== 'identity')
    throw new EnrollError('this is a gateway enrollment token; use it with `umbra-gateway enroll`');
  if (existsSync(join(dir, ENROLLMENT_FILE)))
    throw new EnrollError(
      `${dir} is already enrolled (${ENROLLMENT_FILE}); use another --dir to enroll again`,
    );
  const url = new URL(token.url);
  const caPem = await fetchPinnedCa(url, token.pin);

  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const identityPath = join(dir, IDENTITY_FILE);
  // An identity made earlier with `umbra keygen --out DIR/identity` is kept: its key may already be known.
  const identity: Identity = existsSync(identityPath)
    ? loadIdentityFile(identityPath)
    : await createIdentityFile(identityPath);
  const tls = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const csr = await createCertificateRequest(tls.privateKey);
  const answer = (await postJson(new URL('/v1/enroll', url), caPem, {
    token: tokenText.trim(),
    identityPublicKey: encodeKey(identity.publicKey),
    // Proof that this device holds the identity key it registers.
    identitySignature: sign(null, enrollmentPossessionMessage(tokenText, csr), identity.privateKey).toString(
      'base64',
    ),
    csr,
  })) as { identity?: unknown; certificate?: unknown; caCertificate?: unknown; notAfter?: unknown };
  if (
    typeof answer.identity !== 'string' ||
    typeof answer.certificate !== 'string' ||
    typeof answer.caCertificate !== 'string' ||
    typeof answer.notAfter !== 'string'
  )
    throw new EnrollError(`${url.origin} answered without a certificate; is it an Umbra controller?`);
  const enrollment: Enrollment = {
    identity: answer.identity,
    controller: url.href,
    pin: token.pin,
    notAfter: answer.notAfter,
  };
  await saveEnrollment(
    dir,
    token.pin,
    tls.privateKey,
    { certificate: answer.certificate, caCertificate: answer.caCertificate },
    enrollment,
  );
  return enrollment;
}

export function readEnrollment(dir: string): Enrollment {
  try {
    return JSON.parse(readFileSync(join(dir, ENROLLMENT_FILE), 'utf8')) as Enrollment;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT')
      throw new EnrollError(`${dir} is not enrolled; run \`umbra enroll --token TOKEN --dir ${dir}\``);
    throw new EnrollError(`${join(dir, ENROLLMENT_FILE)}: unreadable (${(error as Error).message})`);
  }
}
