// Enrolling a gateway with its controller, from a one-time gateway token (`umbra-controller gateway
// token create`). The gateway makes its SPA key (X25519; clients seal knocks to it) and a TLS key,
// recognises the controller by the CA pin in the token, and receives one certificate for its tunnel
// listener and its link to the controller. Software keys: an attested enrollment with the keys in
// the box's TPM replaces this where there is one.

import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  createCertificateRequest,
  encodeKey,
  fetchPinnedCa,
  parseEnrollmentToken,
  postJson,
  writeSecretFile,
} from '@umbra/protocol';
import { createGatewayKeys } from './keys.ts';

export const TLS_KEY_FILE = 'tls.key';
export const TLS_CERT_FILE = 'tls.crt';
export const CA_CERT_FILE = 'ca.crt';
export const ENROLLMENT_FILE = 'enrollment.json';

export interface GatewayEnrollment {
  gateway: string;
  controller: string;
  pin: string;
  notAfter: string;
}

export class GatewayEnrollError extends Error {
  override name = 'GatewayEnrollError';
}

export async function enrollGateway(tokenText: string, dir: string): Promise<GatewayEnrollment> {
  const token = parseEnrollmentToken(tokenText);
  if (token.kind !== 'gateway')
    throw new GatewayEnrollError('this is a device enrollment token; use it with `umbra enroll`');
  if (existsSync(join(dir, ENROLLMENT_FILE)))
    throw new GatewayEnrollError(
      `${dir} is already enrolled (${ENROLLMENT_FILE}); use another --dir to enroll again`,
    );
  const url = new URL(token.url);
  const caPem = await fetchPinnedCa(url, token.pin);

  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const spa = await createGatewayKeys(dir);
  const tls = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const answer = (await postJson(new URL('/v1/gateway/enroll', url), caPem, {
    token: tokenText.trim(),
    spaPublicKey: encodeKey(spa.publicKey),
    csr: await createCertificateRequest(tls.privateKey, { commonName: 'umbra gateway' }),
  })) as { gateway?: unknown; certificate?: unknown; notAfter?: unknown };
  if (
    typeof answer.gateway !== 'string' ||
    typeof answer.certificate !== 'string' ||
    typeof answer.notAfter !== 'string'
  )
    throw new GatewayEnrollError(`${url.origin} answered without a certificate; is it an Umbra controller?`);

  await writeSecretFile(
    join(dir, TLS_KEY_FILE),
    tls.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    {
      overwrite: true,
    },
  );
  writeFileSync(join(dir, TLS_CERT_FILE), answer.certificate, { mode: 0o644 });
  writeFileSync(join(dir, CA_CERT_FILE), caPem, { mode: 0o644 });
  const enrollment: GatewayEnrollment = {
    gateway: answer.gateway,
    controller: url.href,
    pin: token.pin,
    notAfter: answer.notAfter,
  };
  // Written last: its presence means the directory holds a complete enrollment.
  writeFileSync(join(dir, ENROLLMENT_FILE), `${JSON.stringify(enrollment, null, 2)}\n`, { mode: 0o644 });
  return enrollment;
}
