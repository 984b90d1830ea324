// Renewing the device's TLS certificate before it expires: when less than a third of its lifetime
// is left, a new key is made here, its CSR sent to the controller over mutual TLS with the current
// certificate, and the new pair written (key 0600) for connections made from then on.

import { createPublicKey, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  ControllerApiError,
  createCertificateRequest,
  ENROLLMENT_FILE,
  TLS_CERT_FILE,
  TLS_KEY_FILE,
  writeSecretFile,
} from '@umbra/protocol';
import type { Device, TlsCredentials } from './device.ts';

/** How often a running `umbra connect` checks whether renewal is due. */
export const RENEWAL_CHECK_MS = 60 * 60 * 1000;

/** From when a certificate valid from notBefore to notAfter is renewed: a third of its lifetime before the end. */
export function renewsAfter(validity: { notBefore: Date; notAfter: Date }): Date {
  const lifetimeMs = validity.notAfter.getTime() - validity.notBefore.getTime();
  return new Date(validity.notAfter.getTime() - lifetimeMs / 3);
}

/** Whether a certificate valid from notBefore to notAfter should be renewed at `now`. */
export function renewalDue(validity: { notBefore: Date; notAfter: Date }, now: Date): boolean {
  return now.getTime() > renewsAfter(validity).getTime();
}

/**
 * Renews the device's certificate through `request` (the controller's POST /v1/client/renew),
 * checks the answer is a certificate for the new key from the device's CA, writes key and
 * certificate, and returns the new credentials. The old pair stays valid until it expires.
 */
export async function renewCertificate(
  device: Device,
  request: (csr: string) => Promise<{ certificate: string; notAfter: string }>,
): Promise<TlsCredentials> {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const answer = await request(await createCertificateRequest(privateKey));
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(answer.certificate);
  } catch {
    throw new ControllerApiError('the renewed certificate does not parse');
  }
  const ours = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  const ca = new X509Certificate(device.credentials.ca);
  if (!leaf.publicKey.export({ type: 'spki', format: 'der' }).equals(ours) || !leaf.verify(ca.publicKey)) {
    throw new ControllerApiError(
      'the controller renewed with a certificate that is not for the new key or not from its CA',
    );
  }
  const key = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  // Key first, then certificate, each replaced atomically. A crash between the two leaves a pair
  // that does not match, which loadDevice() reports; the window is one rename.
  await writeSecretFile(join(device.dir, TLS_KEY_FILE), key, { overwrite: true });
  await replaceFile(join(device.dir, TLS_CERT_FILE), answer.certificate);
  const recordPath = join(device.dir, ENROLLMENT_FILE);
  const record = { ...JSON.parse(readFileSync(recordPath, 'utf8')), notAfter: answer.notAfter };
  await replaceFile(recordPath, `${JSON.stringify(record, null, 2)}\n`);
  device.enrollment = record;
  device.credentials = { ...device.credentials, key, cert: answer.certificate };
  return device.credentials;
}

async function replaceFile(path: string, contents: string): Promise<void> {
  const temp = `${path}.${process.pid}.tmp`;
  await writeFile(temp, contents, { mode: 0o644 });
  await rename(temp, path);
}
