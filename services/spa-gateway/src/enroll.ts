// Enrolling a gateway with its controller, from a one-time gateway token (`umbra-controller gateway
// token create`). The gateway makes its SPA key (X25519; clients seal knocks to it) and a TLS key,
// recognises the controller by the CA pin in the token, and receives one certificate for its tunnel
// listener and its link to the controller. Software keys: an attested enrollment with the keys in
// the box's TPM replaces this where there is one.

import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  createCertificateRequest,
  ENROLLMENT_FILE,
  encodeKey,
  fetchPinnedCa,
  parseEnrollmentToken,
  postJson,
  saveEnrollment,
} from '@umbra/protocol';
import { createGatewayKeys, loadGatewayKeys, PRIVATE_KEY_FILE } from './keys.ts';

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
  // Keys from an earlier attempt that failed are kept: a retry must not die on "file exists".
  const spa = existsSync(join(dir, PRIVATE_KEY_FILE)) ? loadGatewayKeys(dir) : await createGatewayKeys(dir);
  const tls = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const answer = (await postJson(new URL('/v1/gateway/enroll', url), caPem, {
    token: tokenText.trim(),
    spaPublicKey: encodeKey(spa.publicKey),
    csr: await createCertificateRequest(tls.privateKey, { commonName: 'umbra gateway' }),
  })) as { gateway?: unknown; certificate?: unknown; caCertificate?: unknown; notAfter?: unknown };
  if (
    typeof answer.gateway !== 'string' ||
    typeof answer.certificate !== 'string' ||
    typeof answer.caCertificate !== 'string' ||
    typeof answer.notAfter !== 'string'
  )
    throw new GatewayEnrollError(`${url.origin} answered without a certificate; is it an Umbra controller?`);
  const enrollment: GatewayEnrollment = {
    gateway: answer.gateway,
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
