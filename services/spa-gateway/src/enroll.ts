// Enrolling a gateway with its controller, from a one-time gateway token (`umbra-controller gateway
// token create`). The gateway makes its SPA key (X25519; clients seal knocks to it) and a TLS key,
// recognises the controller by the CA pin in the token, and receives one certificate for its tunnel
// listener and its link to the controller. Software keys: an attested enrollment with the keys in
// the box's TPM replaces this where there is one.

import { generateKeyPairSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import {
  beginEnrollment,
  completeEnrollment,
  createCertificateRequest,
  type EnrollmentRecord,
  encodeKey,
  postJson,
} from '@umbra/protocol';
import { createGatewayKeys, loadGatewayKeys, PRIVATE_KEY_FILE } from './keys.ts';

export type GatewayEnrollment = EnrollmentRecord<'gateway'>;

export async function enrollGateway(
  tokenText: string,
  dir: string,
  controllerUrl?: string,
): Promise<GatewayEnrollment> {
  const started = await beginEnrollment(tokenText, dir, 'gateway', controllerUrl);
  // Keys from an earlier attempt that failed are kept: a retry must not die on "file exists".
  const spa = existsSync(join(dir, PRIVATE_KEY_FILE)) ? loadGatewayKeys(dir) : await createGatewayKeys(dir);
  const tls = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const answer = await postJson(new URL('/v1/gateway/enroll', started.url), started.caPem, {
    token: tokenText.trim(),
    spaPublicKey: encodeKey(spa.publicKey),
    csr: await createCertificateRequest(tls.privateKey, { commonName: 'umbra gateway' }),
  });
  return completeEnrollment(dir, started, tls.privateKey, answer, 'gateway');
}
