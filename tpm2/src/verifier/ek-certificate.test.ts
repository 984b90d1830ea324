// EK certificates as swtpm_setup wrote them into NV (read back with tpm2_nvread), chained to the
// harness's local CA; then a header-prefixed and padded variant, a wrong root, and garbage.

import 'reflect-metadata';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { generateKeyPairSync, webcrypto } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import * as x509 from '@peculiar/x509';
import { SWTPM_SETUP, type Swtpm, startSwtpm } from '../testing/swtpm.ts';
import {
  EkCertificateError,
  extractEkCertificateDer,
  parseEkCertificate,
  verifyEkChain,
} from './ek-certificate.ts';

const run = promisify(execFile);

async function nvRead(swtpm: Swtpm, index: number): Promise<Uint8Array> {
  const env = { ...process.env, TPM2TOOLS_TCTI: swtpm.tcti };
  const { stdout } = await run('tpm2_nvread', [`0x${index.toString(16)}`], { env, encoding: 'buffer' });
  return new Uint8Array(stdout);
}

function pemCert(path: string): x509.X509Certificate {
  return new x509.X509Certificate(readFileSync(path, 'utf8'));
}

async function selfSignedCa(name: string): Promise<x509.X509Certificate> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  return x509.X509CertificateGenerator.createSelfSigned({
    name,
    keys,
    signingAlgorithm: alg,
    notBefore: new Date(Date.now() - 3600_000),
    notAfter: new Date(Date.now() + 3600_000),
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true)],
  });
}

describe('EK certificates from swtpm_setup', () => {
  let swtpm: Swtpm;
  let rsaNv: Uint8Array;
  let eccNv: Uint8Array;
  let root: x509.X509Certificate;
  let issuer: x509.X509Certificate;

  before(async () => {
    swtpm = await startSwtpm();
    const env = { ...process.env, TPM2TOOLS_TCTI: swtpm.tcti };
    await run('tpm2_startup', ['-c'], { env });
    rsaNv = await nvRead(swtpm, SWTPM_SETUP.RSA_EK_CERT_NV_INDEX);
    eccNv = await nvRead(swtpm, SWTPM_SETUP.ECC_EK_CERT_NV_INDEX);
    root = pemCert(swtpm.rootCaCert);
    issuer = pemCert(swtpm.issuerCert);
  });

  after(async () => {
    await swtpm?.stop();
  });

  test('the RSA and ECC EK certificates parse and chain to the local CA', async () => {
    for (const [nv, type] of [
      [rsaNv, 'rsa'],
      [eccNv, 'ec'],
    ] as const) {
      const ek = parseEkCertificate(nv);
      assert.equal(ek.publicKey.asymmetricKeyType, type);
      assert.equal(ek.certificate.issuer, issuer.subject);
      const result = await verifyEkChain(ek.certificate, [root], [issuer]);
      assert.ok(result.ok, result.ok ? '' : result.reason);
      assert.equal(result.chain.length, 3);
      // The intermediate as a configured root is enough too.
      assert.ok((await verifyEkChain(ek.certificate, [issuer])).ok);
    }
  });

  test('a TCG NV header and trailing padding are stripped', () => {
    const der = parseEkCertificate(rsaNv).der;
    const nv = new Uint8Array(4 + der.length + 100).fill(0xff);
    nv.set([0x10, 0x01, der.length >> 8, der.length & 0xff]);
    nv.set(der, 4);
    const ek = parseEkCertificate(nv);
    assert.deepEqual(ek.der, der);
    const padded = new Uint8Array(der.length + 37);
    padded.set(der);
    assert.deepEqual(extractEkCertificateDer(padded), der);
  });

  test('a header whose length is shorter than the certificate is refused', () => {
    const der = parseEkCertificate(rsaNv).der;
    const nv = new Uint8Array(4 + der.length);
    nv.set([0x10, 0x01, 0, 10]);
    nv.set(der, 4);
    assert.throws(() => parseEkCertificate(nv), /TCG NV header says 10 bytes/);
  });

  test('a wrong root: unknown issuer; a root with the right name but another key: signature', async () => {
    const ek = parseEkCertificate(eccNv);
    const other = await selfSignedCa('CN=Some Other TPM Vendor');
    const unknown = await verifyEkChain(ek.certificate, [other]);
    assert.equal(unknown.ok, false);
    assert.match(unknown.ok ? '' : unknown.reason, /^unknown issuer: .*swtpm/i);

    const impostor = await selfSignedCa(issuer.subject);
    const forged = await verifyEkChain(ek.certificate, [impostor]);
    assert.equal(forged.ok, false);
    assert.match(forged.ok ? '' : forged.reason, /^signature: /);

    // Without the intermediate, the real root does not know the EK's issuer.
    const missing = await verifyEkChain(ek.certificate, [root]);
    assert.equal(missing.ok, false);
  });

  test('expired, or not yet valid, at the date given', async () => {
    const ek = parseEkCertificate(rsaNv);
    const late = await verifyEkChain(ek.certificate, [root], [issuer], {
      date: new Date(ek.certificate.notAfter.getTime() + 1000),
    });
    assert.match(late.ok ? '' : late.reason, /expired at/);
    const early = await verifyEkChain(ek.certificate, [root], [issuer], {
      date: new Date(ek.certificate.notBefore.getTime() - 1000),
    });
    assert.match(early.ok ? '' : early.reason, /not valid before/);
  });

  test('an issuer that is not a CA is refused', async () => {
    // A leaf (the EK certificate itself) configured as a root, issuing a certificate in its name.
    const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
    const keys = (await webcrypto.subtle.generateKey(alg, true, [
      'sign',
      'verify',
    ])) as webcrypto.CryptoKeyPair;
    const leafKeys = (await webcrypto.subtle.generateKey(alg, true, [
      'sign',
      'verify',
    ])) as webcrypto.CryptoKeyPair;
    const notCa = await x509.X509CertificateGenerator.createSelfSigned({
      name: 'CN=Not A CA',
      keys,
      signingAlgorithm: alg,
      extensions: [new x509.BasicConstraintsExtension(false)],
    });
    const leaf = await x509.X509CertificateGenerator.create({
      subject: 'CN=Leaf',
      issuer: notCa.subject,
      publicKey: leafKeys.publicKey,
      signingKey: keys.privateKey,
      signingAlgorithm: alg,
      notBefore: new Date(Date.now() - 1000),
      notAfter: new Date(Date.now() + 3600_000),
    });
    const result = await verifyEkChain(leaf, [notCa]);
    assert.match(result.ok ? '' : result.reason, /^not a CA: "CN=Not A CA"/);
  });

  test('garbage is an EkCertificateError, never another throw', () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const cases: Uint8Array[] = [
      new Uint8Array(0),
      new Uint8Array([0x30]),
      new Uint8Array([0x10, 0x01, 0x00]),
      new Uint8Array([0x30, 0x84, 1, 2, 3, 4]),
      new Uint8Array([0x30, 0x82, 0x10, 0x00, 1, 2]),
      new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x00]),
      new Uint8Array(publicKey.export({ format: 'der', type: 'spki' })),
      rsaNv.slice(0, 200),
      new Uint8Array(1000).fill(0xff),
    ];
    for (let i = 0; i < 300; i++) {
      const mutated = rsaNv.slice();
      const at = Math.floor(Math.random() * 40);
      mutated[at] = mutated[at]! ^ (1 + Math.floor(Math.random() * 255));
      cases.push(mutated);
    }
    for (const bytes of cases) {
      try {
        parseEkCertificate(bytes);
      } catch (error) {
        assert.ok(
          error instanceof EkCertificateError,
          `${(error as Error).name}: ${(error as Error).message}`,
        );
      }
    }
  });
});
