import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { test } from 'node:test';
import { CertificateRequestError, createCertificateRequest } from './csr.ts';

function openssl(pem: string): string {
  const result = spawnSync('openssl', ['req', '-noout', '-verify', '-subject', '-text'], {
    input: pem,
    encoding: 'utf8',
  });
  assert.equal(result.status, 0, result.stderr);
  return `${result.stdout}${result.stderr}`;
}

test('P-256 and Ed25519 requests verify with openssl and carry the common name and key', async () => {
  for (const keys of [generateKeyPairSync('ec', { namedCurve: 'P-256' }), generateKeyPairSync('ed25519')]) {
    const text = openssl(await createCertificateRequest(keys.privateKey, { commonName: 'branch-1' }));
    assert.match(text, /verify OK|Certificate request self-signature verify OK/);
    assert.match(text, /CN\s*=\s*branch-1/);
    assert.match(text, keys.privateKey.asymmetricKeyType === 'ed25519' ? /ED25519/ : /prime256v1|P-256/);
  }
});

test('other keys are refused, naming what to use', async () => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 });
  await assert.rejects(createCertificateRequest(rsa.privateKey), CertificateRequestError);
  await assert.rejects(createCertificateRequest(rsa.publicKey), /expected a private KeyObject/);
});
