// Enrolling this device with a controller, from nothing but a one-time token. The token carries the
// controller's URL and the pin of its CA, so the device can recognise the controller before it
// trusts anything it says: it reads the certificate chain the controller presents, keeps the CA
// whose key matches the pin, and only then talks to the controller with that CA as its only trust.
// The device makes its keys itself — the identity key that signs knocks, and a TLS key — and sends
// only their public halves; the controller returns a client certificate for the TLS key.

import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  createCertificateRequest,
  encodeKey,
  fetchPinnedCa,
  type Identity,
  parseEnrollmentToken,
  postJson,
  writeSecretFile,
} from '@umbra/protocol';
import { createIdentityFile, loadIdentityFile } from './identity.ts';

export const IDENTITY_FILE = 'identity';
export const TLS_KEY_FILE = 'tls.key';
export const TLS_CERT_FILE = 'tls.crt';
export const CA_CERT_FILE = 'ca.crt';
export const ENROLLMENT_FILE = 'enrollment.json';

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
  const response = await postJson(new URL('/v1/enroll', url), caPem, {
    token: tokenText.trim(),
    identityPublicKey: encodeKey(identity.publicKey),
    csr,
  });
  const answer = response as { identity?: unknown; certificate?: unknown; notAfter?: unknown };
  if (
    typeof answer.identity !== 'string' ||
    typeof answer.certificate !== 'string' ||
    typeof answer.notAfter !== 'string'
  )
    throw new EnrollError(`${url.origin} answered without a certificate; is it an Umbra controller?`);

  await writeSecretFile(
    join(dir, TLS_KEY_FILE),
    tls.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    {
      overwrite: true,
    },
  );
  writeFileSync(join(dir, TLS_CERT_FILE), answer.certificate, { mode: 0o644 });
  writeFileSync(join(dir, CA_CERT_FILE), caPem, { mode: 0o644 });
  const enrollment: Enrollment = {
    identity: answer.identity,
    controller: url.href,
    pin: token.pin,
    notAfter: answer.notAfter,
  };
  // Written last: its presence means the directory holds a complete enrollment.
  writeFileSync(join(dir, ENROLLMENT_FILE), `${JSON.stringify(enrollment, null, 2)}\n`, { mode: 0o644 });
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
