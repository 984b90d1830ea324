// Making a certificate request on the device that holds the key: the request is the only thing that
// travels to the controller, and its signature is the device's proof that it holds the key.

import 'reflect-metadata';
import { createPublicKey, type KeyObject, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

/** The key or the request is not one Umbra can use; the message names the input. */
export class CertificateRequestError extends Error {
  override name = 'CertificateRequestError';
}

export interface CertificateRequestOptions {
  /** Shown in the request's subject for people reading it; the CA sets the real name itself. */
  commonName?: string;
}

/** A PEM PKCS#10 request signed by `privateKey`, an ECDSA P-256 or Ed25519 private key. */
export async function createCertificateRequest(
  privateKey: KeyObject,
  options: CertificateRequestOptions = {},
): Promise<string> {
  if (privateKey?.type !== 'private')
    throw new CertificateRequestError(
      'privateKey: expected a private KeyObject, e.g. from generateKeyPairSync',
    );
  let algorithm: webcrypto.EcKeyImportParams | webcrypto.Algorithm;
  let signingAlgorithm: webcrypto.EcdsaParams | webcrypto.Algorithm;
  if (privateKey.asymmetricKeyType === 'ed25519') {
    algorithm = { name: 'Ed25519' };
    signingAlgorithm = { name: 'Ed25519' };
  } else if (
    privateKey.asymmetricKeyType === 'ec' &&
    privateKey.asymmetricKeyDetails?.namedCurve === 'prime256v1'
  ) {
    algorithm = { name: 'ECDSA', namedCurve: 'P-256' };
    signingAlgorithm = { name: 'ECDSA', hash: 'SHA-256' };
  } else {
    throw new CertificateRequestError(
      `privateKey: a ${privateKey.asymmetricKeyType} key; generate an ECDSA P-256 (generateKeyPairSync('ec', { namedCurve: 'P-256' })) or Ed25519 key`,
    );
  }
  const keys = {
    privateKey: privateKey.toCryptoKey(algorithm, false, ['sign']),
    publicKey: createPublicKey(privateKey).toCryptoKey(algorithm, true, ['verify']),
  };
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    { name: [{ CN: [options.commonName ?? 'umbra device'] }], keys, signingAlgorithm },
    webcrypto,
  );
  return csr.toString('pem');
}
