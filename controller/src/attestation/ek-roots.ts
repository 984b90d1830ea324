// EK roots as an operator hands them over: one file of TPM manufacturers' CA certificates (roots or
// intermediates), PEM (one or more) or a single DER certificate as vendors often publish them. Each
// must parse and be a CA (basicConstraints cA=true): an EK chain ends at a CA, and a leaf trusted as
// a root would let whoever holds its key vouch for any TPM.

import 'reflect-metadata';
import { createHash } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import type { NewEkRoot } from '../store/index.ts';
import { AttestationFileError } from './errors.ts';

const PEM_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;
/** Far beyond any CA bundle a vendor ships; a bound before parsing. */
export const MAX_EK_ROOT_FILE_BYTES = 1024 * 1024;

/** The CA certificates in `contents` (a file's bytes), in file order; `file` names it in errors. */
export function parseEkRoots(contents: Buffer, file: string): NewEkRoot[] {
  if (contents.length > MAX_EK_ROOT_FILE_BYTES)
    throw new AttestationFileError(
      `${file}: ${contents.length} bytes is more than a CA bundle (at most ${MAX_EK_ROOT_FILE_BYTES})`,
    );
  const text = contents.toString('latin1');
  const blocks = text.match(PEM_BLOCK);
  const ders: (Buffer | string)[] = blocks ?? (text.includes('-----BEGIN') ? [] : [contents]);
  if (ders.length === 0)
    throw new AttestationFileError(
      `${file}: no certificate found; expected PEM (-----BEGIN CERTIFICATE-----) or one DER certificate`,
    );
  return ders.map((der, index) => {
    const where = `${file}: certificate ${index + 1} of ${ders.length}`;
    let certificate: x509.X509Certificate;
    try {
      certificate = new x509.X509Certificate(der);
    } catch (error) {
      throw new AttestationFileError(`${where}: not an X.509 certificate (${(error as Error).message})`);
    }
    const constraints = certificate.getExtension(x509.BasicConstraintsExtension);
    if (!constraints?.ca)
      throw new AttestationFileError(
        `${where} ("${certificate.subject}") is not a CA certificate (basicConstraints cA is ` +
          `${constraints ? 'false' : 'absent'}); give the TPM manufacturer's root or intermediate CA, not an EK certificate`,
      );
    return {
      fingerprint: createHash('sha256').update(Buffer.from(certificate.rawData)).digest('hex'),
      pem: `${certificate.toString('pem').replaceAll('\r\n', '\n').trim()}\n`,
      subject: certificate.subject,
      issuer: certificate.issuer,
      notAfter: certificate.notAfter.getTime(),
    };
  });
}
