import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { formatIdentityFile, generateIdentity } from '@umbra/protocol';
import { loadDevice, validityOf } from './device.ts';
import { renewalDue, renewCertificate, renewsAfter } from './renewal.ts';
import { createTestPki, type TestPki } from './testdata/pki.ts';

const day = 86_400_000;

test('renewal is due once less than a third of the lifetime is left', () => {
  const notBefore = new Date('2030-01-01T00:00:00Z');
  const notAfter = new Date(notBefore.getTime() + 30 * day);
  assert.equal(renewsAfter({ notBefore, notAfter }).toISOString(), '2030-01-21T00:00:00.000Z');
  assert.equal(renewalDue({ notBefore, notAfter }, new Date('2030-01-20T23:59:59Z')), false);
  assert.equal(renewalDue({ notBefore, notAfter }, new Date('2030-01-21T00:00:01Z')), true);
  assert.equal(renewalDue({ notBefore, notAfter }, new Date('2030-02-05T00:00:00Z')), true, 'expired too');
});

let pki: TestPki;
let dir: string;
before(() => {
  pki = createTestPki();
  dir = mkdtempSync(join(tmpdir(), 'umbra-renewal-'));
  const { key, cert } = pki.issue('umbra://identity/alice');
  writeFileSync(join(dir, 'identity'), formatIdentityFile(generateIdentity()), { mode: 0o600 });
  writeFileSync(join(dir, 'tls.key'), key, { mode: 0o600 });
  writeFileSync(join(dir, 'tls.crt'), cert);
  writeFileSync(join(dir, 'ca.crt'), pki.ca);
  writeFileSync(
    join(dir, 'enrollment.json'),
    JSON.stringify({ identity: 'alice', controller: 'https://127.0.0.1:7443/', pin: 'x', notAfter: 'old' }),
  );
});
after(() => {
  pki.remove();
  rmSync(dir, { recursive: true, force: true });
});

test('renewCertificate sends a CSR for a new key and writes key (0600) and certificate for the next connections', async () => {
  const device = loadDevice(dir);
  const before = validityOf(device.credentials.cert);
  let sent = '';
  const credentials = await renewCertificate(device, async (csr) => {
    sent = csr;
    return { certificate: pki.sign(csr, 'umbra://identity/alice', 2), notAfter: '2030-01-01T00:00:00.000Z' };
  });
  assert.match(sent, /^-----BEGIN CERTIFICATE REQUEST-----/);
  assert.equal(statSync(join(dir, 'tls.key')).mode & 0o777, 0o600);
  assert.equal(readFileSync(join(dir, 'tls.key'), 'utf8'), credentials.key);
  assert.equal(readFileSync(join(dir, 'tls.crt'), 'utf8'), credentials.cert);
  assert.notEqual(validityOf(credentials.cert).serial, before.serial);
  assert.equal(device.credentials, credentials, 'the running device uses the new pair');
  const reloaded = loadDevice(dir);
  assert.equal(reloaded.enrollment.notAfter, '2030-01-01T00:00:00.000Z');
  assert.equal(reloaded.credentials.cert, credentials.cert);
});

test('a renewal answer for another key changes nothing', async () => {
  const device = loadDevice(dir);
  const keyBefore = readFileSync(join(dir, 'tls.key'), 'utf8');
  // A valid certificate from the right CA, but for a key other than the one just made.
  const { cert } = pki.issue('umbra://identity/alice');
  await assert.rejects(
    renewCertificate(device, async () => ({ certificate: cert, notAfter: 'x' })),
    /not for the new key or not from its CA/,
  );
  assert.equal(readFileSync(join(dir, 'tls.key'), 'utf8'), keyBefore);
});
