// What an enrolled device or gateway keeps: its TLS key (0600), the certificate the controller
// issued for it, the controller's CA, and a record of the enrollment — written only after the
// controller's answer has been checked, and the record last, so its presence means a complete
// enrollment.

import { createPublicKey, type KeyObject, X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ControllerApiError } from './controller-api.ts';
import { verifyPin } from './pin.ts';
import { writeSecretFile } from './secret-file.ts';

export const TLS_KEY_FILE = 'tls.key';
export const TLS_CERT_FILE = 'tls.crt';
export const CA_CERT_FILE = 'ca.crt';
export const ENROLLMENT_FILE = 'enrollment.json';

export interface EnrollmentAnswer {
  certificate: string;
  caCertificate: string;
}

/**
 * Checks the controller's answer: the CA it returns is the one the token's pin names, and the
 * certificate is for our own TLS key and signed by that CA. Then writes the files. `record` is
 * what enrollment.json should hold.
 */
export async function saveEnrollment(
  dir: string,
  pin: string,
  tlsPrivateKey: KeyObject,
  answer: EnrollmentAnswer,
  record: object,
): Promise<void> {
  let ca: X509Certificate;
  let leaf: X509Certificate;
  try {
    ca = new X509Certificate(answer.caCertificate);
    leaf = new X509Certificate(answer.certificate);
  } catch {
    throw new ControllerApiError('the controller answered with certificates that do not parse');
  }
  if (!verifyPin(ca.raw, pin))
    throw new ControllerApiError("the controller's CA certificate does not match the token's pin");
  const ours = createPublicKey(tlsPrivateKey).export({ type: 'spki', format: 'der' });
  if (!leaf.publicKey.export({ type: 'spki', format: 'der' }).equals(ours) || !leaf.verify(ca.publicKey))
    throw new ControllerApiError(
      'the controller issued a certificate that is not for this key or not from its CA',
    );
  await writeSecretFile(
    join(dir, TLS_KEY_FILE),
    tlsPrivateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    {
      overwrite: true,
    },
  );
  writeFileSync(join(dir, TLS_CERT_FILE), answer.certificate, { mode: 0o644 });
  writeFileSync(join(dir, CA_CERT_FILE), answer.caCertificate, { mode: 0o644 });
  writeFileSync(join(dir, ENROLLMENT_FILE), `${JSON.stringify(record, null, 2)}\n`, { mode: 0o644 });
}
