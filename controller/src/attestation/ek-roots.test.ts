import 'reflect-metadata';
import assert from 'node:assert/strict';
import { createHash, webcrypto } from 'node:crypto';
import { before, describe, test } from 'node:test';
import * as x509 from '@peculiar/x509';
import { parseEkRoots } from './ek-roots.ts';
import { AttestationFileError } from './errors.ts';

const crypto = webcrypto;
const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };

async function certificate(name: string, ca: boolean | null): Promise<x509.X509Certificate> {
  const keys = await crypto.subtle.generateKey(ALGORITHM, false, ['sign', 'verify']);
  return x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: '01',
      name,
      notBefore: new Date('2020-01-01T00:00:00Z'),
      notAfter: new Date('2045-01-01T00:00:00Z'),
      keys,
      signingAlgorithm: ALGORITHM,
      extensions: ca === null ? [] : [new x509.BasicConstraintsExtension(ca, undefined, true)],
    },
    crypto,
  );
}

function refused(message: RegExp) {
  return (error: unknown) => {
    assert.ok(error instanceof AttestationFileError, `expected an AttestationFileError, got ${error}`);
    assert.match(error.message, message);
    return true;
  };
}

describe('EK root files', () => {
  let root: x509.X509Certificate;
  let intermediate: x509.X509Certificate;
  let leaf: x509.X509Certificate;
  let bare: x509.X509Certificate;
  before(async () => {
    root = await certificate('CN=Example TPM Root CA, O=Example', true);
    intermediate = await certificate('CN=Example TPM Intermediate CA', true);
    leaf = await certificate('CN=EK of a TPM', false);
    bare = await certificate('CN=No constraints', null);
  });

  test('a PEM bundle: every CA certificate with its fingerprint, names and expiry', () => {
    const text = `# Example's TPM CAs\n${root.toString('pem')}\n\n${intermediate.toString('pem')}\n`;
    const roots = parseEkRoots(Buffer.from(text), 'roots.pem');
    assert.deepEqual(
      roots.map((r) => [r.subject, r.issuer, r.notAfter]),
      [
        [
          'CN=Example TPM Root CA, O=Example',
          'CN=Example TPM Root CA, O=Example',
          Date.parse('2045-01-01T00:00:00Z'),
        ],
        [
          'CN=Example TPM Intermediate CA',
          'CN=Example TPM Intermediate CA',
          Date.parse('2045-01-01T00:00:00Z'),
        ],
      ],
    );
    assert.equal(roots[0]?.fingerprint, createHash('sha256').update(Buffer.from(root.rawData)).digest('hex'));
    assert.match(roots[0]?.pem ?? '', /^-----BEGIN CERTIFICATE-----\n[\s\S]+-----END CERTIFICATE-----\n$/);
    assert.equal(new x509.X509Certificate(roots[1]!.pem).subject, 'CN=Example TPM Intermediate CA');
  });

  test('one DER certificate, as vendors publish them', () => {
    const roots = parseEkRoots(Buffer.from(root.rawData), 'root.cer');
    assert.equal(roots[0]?.subject, 'CN=Example TPM Root CA, O=Example');
  });

  test('refusals name the file and the certificate', () => {
    const pem = (...certificates: x509.X509Certificate[]) =>
      Buffer.from(certificates.map((c) => c.toString('pem')).join('\n'));
    assert.throws(
      () => parseEkRoots(pem(root, leaf), 'mixed.pem'),
      refused(
        /mixed.pem: certificate 2 of 2 \("CN=EK of a TPM"\) is not a CA certificate \(basicConstraints cA is false\)/,
      ),
    );
    assert.throws(
      () => parseEkRoots(pem(bare), 'bare.pem'),
      refused(/bare.pem: certificate 1 of 1 .* \(basicConstraints cA is absent\)/),
    );
    assert.throws(
      () =>
        parseEkRoots(
          Buffer.from('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'),
          'bad.pem',
        ),
      refused(/bad.pem: certificate 1 of 1: not an X.509 certificate/),
    );
    assert.throws(
      () =>
        parseEkRoots(Buffer.from('-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n'), 'key.pem'),
      refused(/key.pem: no certificate found/),
    );
    assert.throws(
      () => parseEkRoots(Buffer.from('hello'), 'x.der'),
      refused(/x.der: certificate 1 of 1: not an X.509/),
    );
  });
});
