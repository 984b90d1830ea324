// An enrolled device's directory, as `umbra enroll` left it: enrollment.json, the identity that
// signs knocks, and the TLS key, certificate and controller CA that the tunnel and the controller
// API use. The TLS pair changes when the certificate is renewed, so it is read through a holder
// that renewal updates; connections made after a renewal use the new pair.

import { createPublicKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CA_CERT_FILE, type Identity, readSecretFile, TLS_CERT_FILE, TLS_KEY_FILE } from '@umbra/protocol';
import { type Enrollment, IDENTITY_FILE, readEnrollment } from './enroll.ts';
import { loadIdentityFile } from './identity.ts';

/** The PEM a TLS connection to the controller or a gateway presents and trusts. */
export interface TlsCredentials {
  key: string;
  cert: string;
  /** The controller's CA: the only trust for the controller and for gateways. */
  ca: string;
}

export interface Device {
  dir: string;
  enrollment: Enrollment;
  identity: Identity;
  controller: URL;
  /** The current TLS key and certificate; replaced by renewal. */
  credentials: TlsCredentials;
}

export class DeviceError extends Error {
  override name = 'DeviceError';
}

export function loadDevice(dir: string): Device {
  const enrollment = readEnrollment(dir);
  const identity = loadIdentityFile(join(dir, IDENTITY_FILE));
  const reenroll = `enroll again with \`umbra enroll --token TOKEN --dir ${dir}\``;
  const keyPath = join(dir, TLS_KEY_FILE);
  const key = readSecretFile(keyPath, keyPath, reenroll);
  const read = (file: string) => {
    try {
      return readFileSync(join(dir, file), 'utf8');
    } catch (error) {
      throw new DeviceError(
        `${join(dir, file)}: unreadable (${(error as NodeJS.ErrnoException).code}); ${reenroll}`,
      );
    }
  };
  const cert = read(TLS_CERT_FILE);
  const ca = read(CA_CERT_FILE);
  // A renewal replaces the key and then the certificate; a crash between the two would leave a pair
  // that no TLS handshake accepts. Say so here rather than as a handshake failure later.
  const leaf = new X509Certificate(cert);
  const ours = createPublicKey(key).export({ type: 'spki', format: 'der' });
  if (!leaf.publicKey.export({ type: 'spki', format: 'der' }).equals(ours)) {
    throw new DeviceError(`${keyPath} and ${join(dir, TLS_CERT_FILE)} do not belong together; ${reenroll}`);
  }
  let controller: URL;
  try {
    controller = new URL(enrollment.controller);
  } catch {
    throw new DeviceError(
      `${join(dir, 'enrollment.json')}: controller ${JSON.stringify(enrollment.controller)} is not a URL`,
    );
  }
  return { dir, enrollment, identity, controller, credentials: { key, cert, ca } };
}

/** When a certificate (PEM) starts and stops being valid. */
export function validityOf(certPem: string): { notBefore: Date; notAfter: Date; serial: string } {
  const certificate = new X509Certificate(certPem);
  return {
    notBefore: new Date(certificate.validFrom),
    notAfter: new Date(certificate.validTo),
    serial: certificate.serialNumber.toLowerCase(),
  };
}
