// Making a certificate request on the device that holds the key: the request is the only thing that
// travels to the controller, and its signature is the device's proof that it holds the key.
//
// PKCS#10 (RFC 2986) written directly in DER: devices and the gateway make exactly one shape of
// request — a common name, the public key, no attributes — so a few lines of DER replace an X.509
// library that would cost the gateway megabytes of memory. The controller parses and verifies
// requests with a full X.509 library, and its tests check these requests against it and openssl.

import { createPublicKey, type KeyObject, sign } from 'node:crypto';

export interface CertificateRequestOptions {
  /** Shown in the request's subject for people reading it; the CA sets the real name itself. */
  commonName?: string;
}

/** The key or the request is not one Umbra can use; the message names the input. */
export class CertificateRequestError extends Error {
  override name = 'CertificateRequestError';
}

const OID_COMMON_NAME = Buffer.from('0603550403', 'hex'); // 2.5.4.3
const OID_ECDSA_WITH_SHA256 = Buffer.from('06082a8648ce3d040302', 'hex'); // 1.2.840.10045.4.3.2
const OID_ED25519 = Buffer.from('06032b6570', 'hex'); // 1.3.101.112

function der(tag: number, ...contents: Uint8Array[]): Buffer {
  const body = Buffer.concat(contents);
  const length = body.length;
  let header: Buffer;
  if (length < 0x80) header = Buffer.from([tag, length]);
  else if (length < 0x100) header = Buffer.from([tag, 0x81, length]);
  else if (length < 0x10000) header = Buffer.from([tag, 0x82, length >> 8, length & 0xff]);
  else
    throw new CertificateRequestError(
      'certificate request: a field of 64 KiB or more; requests are far smaller',
    );
  return Buffer.concat([header, body]);
}

const SEQUENCE = 0x30;
const SET = 0x31;
const INTEGER = 0x02;
const UTF8_STRING = 0x0c;
const BIT_STRING = 0x03;
const CONTEXT_0 = 0xa0;

/** A PEM PKCS#10 request signed by `privateKey`, an ECDSA P-256 or Ed25519 private key. */
export async function createCertificateRequest(
  privateKey: KeyObject,
  options: CertificateRequestOptions = {},
): Promise<string> {
  if (privateKey?.type !== 'private')
    throw new CertificateRequestError(
      'privateKey: expected a private KeyObject, e.g. from generateKeyPairSync',
    );
  let algorithm: Buffer;
  let digest: string | null;
  if (privateKey.asymmetricKeyType === 'ed25519') {
    algorithm = der(SEQUENCE, OID_ED25519);
    digest = null;
  } else if (
    privateKey.asymmetricKeyType === 'ec' &&
    privateKey.asymmetricKeyDetails?.namedCurve === 'prime256v1'
  ) {
    algorithm = der(SEQUENCE, OID_ECDSA_WITH_SHA256);
    digest = 'sha256';
  } else {
    throw new CertificateRequestError(
      `privateKey: a ${privateKey.asymmetricKeyType} key; generate an ECDSA P-256 (generateKeyPairSync('ec', { namedCurve: 'P-256' })) or Ed25519 key`,
    );
  }
  const commonName = options.commonName ?? 'umbra device';
  if (Buffer.byteLength(commonName) > 64)
    throw new CertificateRequestError('commonName: at most 64 bytes, as X.520 allows');
  const subject = der(
    SEQUENCE,
    der(SET, der(SEQUENCE, OID_COMMON_NAME, der(UTF8_STRING, Buffer.from(commonName)))),
  );
  const publicKey = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  const info = der(SEQUENCE, der(INTEGER, Buffer.from([0])), subject, publicKey, der(CONTEXT_0));
  // ECDSA signatures come out in DER, as X.509 wants them; Ed25519 takes no digest.
  const signature = sign(digest, info, privateKey);
  const request = der(SEQUENCE, info, algorithm, der(BIT_STRING, Buffer.from([0]), signature));
  const base64 = request
    .toString('base64')
    .replace(/(.{64})/g, '$1\n')
    .trim();
  return `-----BEGIN CERTIFICATE REQUEST-----\n${base64}\n-----END CERTIFICATE REQUEST-----\n`;
}
