// Enrolling this device with a controller, from nothing but a one-time token. The token carries the
// controller's URL and the pin of its CA, so the device can recognise the controller before it
// trusts anything it says: it reads the certificate chain the controller presents, keeps the CA
// whose key matches the pin, and only then talks to the controller with that CA as its only trust.
// The device makes its keys itself — the identity key that signs knocks, and a TLS key — and sends
// only their public halves; the controller returns a client certificate for the TLS key.

import { generateKeyPairSync, sign } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  beginEnrollment,
  completeEnrollment,
  createCertificateRequest,
  ENROLLMENT_FILE,
  type EnrollmentRecord,
  encodeKey,
  enrollmentPossessionMessage,
  type Identity,
  postJson,
} from '@umbra/protocol';
import { createIdentityFile, loadIdentityFile } from './identity.ts';

export const IDENTITY_FILE = 'identity';

export type Enrollment = EnrollmentRecord<'identity'>;

export class EnrollError extends Error {
  override name = 'EnrollError';
}

export async function enrollDevice(tokenText: string, dir: string): Promise<Enrollment> {
  const started = await beginEnrollment(tokenText, dir, 'identity');
  const identityPath = join(dir, IDENTITY_FILE);
  // An identity made earlier with `umbra keygen --out DIR/identity` is kept: its key may already be known.
  const identity: Identity = existsSync(identityPath)
    ? loadIdentityFile(identityPath)
    : await createIdentityFile(identityPath);
  const tls = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const csr = await createCertificateRequest(tls.privateKey);
  const answer = await postJson(new URL('/v1/enroll', started.url), started.caPem, {
    token: tokenText.trim(),
    identityPublicKey: encodeKey(identity.publicKey),
    // Proof that this device holds the identity key it registers.
    identitySignature: sign(null, enrollmentPossessionMessage(tokenText, csr), identity.privateKey).toString(
      'base64',
    ),
    csr,
  });
  return completeEnrollment(dir, started, tls.privateKey, answer, 'identity');
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
