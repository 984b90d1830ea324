import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createPublicKey, generateKeyPairSync, sign, verify, webcrypto, X509Certificate } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import {
  CA_CERT_FILE,
  CA_KEY_FILE,
  CertificateAuthority,
  CertificateAuthorityError,
  CertificateRequestError,
  createCertificateRequest,
  pinOf,
  verifyPin,
} from './index.ts';

let root: string;
let dir: string;
let ca: CertificateAuthority;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'umbra-ca-test-'));
  dir = join(root, 'ca');
  await mkdir(dir);
  ca = await CertificateAuthority.create(dir, { name: 'Umbra CA test' });
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

async function freshDir(name: string): Promise<string> {
  const path = join(root, name);
  await mkdir(path);
  return path;
}

function openssl(args: string[], input?: string): string {
  return execFileSync('openssl', args, { input, encoding: 'utf8' });
}

/** Runs `openssl verify` on a leaf; returns its combined output and whether it succeeded. */
async function opensslVerify(
  leafPem: string,
  purpose: 'sslclient' | 'sslserver',
  caPath = join(dir, CA_CERT_FILE),
) {
  const leafPath = join(root, `leaf-${Math.random().toString(36).slice(2)}.crt`);
  await writeFile(leafPath, leafPem);
  const result = spawnSync(
    'openssl',
    ['verify', '-x509_strict', '-purpose', purpose, '-CAfile', caPath, leafPath],
    {
      encoding: 'utf8',
    },
  );
  return { ok: result.status === 0, output: result.stdout + result.stderr };
}

function p256Key() {
  return generateKeyPairSync('ec', { namedCurve: 'P-256' });
}

describe('CertificateAuthority.create', () => {
  test('writes ca.key (PKCS#8, 0600) and ca.crt, a 10-year P-256 root with the CA extensions', async () => {
    const keyText = await readFile(join(dir, CA_KEY_FILE), 'utf8');
    assert.match(keyText, /^-----BEGIN PRIVATE KEY-----\n/);
    assert.equal((await stat(join(dir, CA_KEY_FILE))).mode & 0o777, 0o600);
    const certText = await readFile(join(dir, CA_CERT_FILE), 'utf8');
    assert.equal(certText, ca.pem);

    const text = openssl(['x509', '-noout', '-text'], certText);
    assert.match(text, /Subject: CN ?= ?Umbra CA test/);
    assert.match(text, /ASN1 OID: prime256v1/);
    assert.match(text, /Signature Algorithm: ecdsa-with-SHA256/);
    assert.match(text, /X509v3 Basic Constraints: critical\n\s+CA:TRUE, pathlen:0/);
    assert.match(text, /X509v3 Key Usage: critical\n\s+Certificate Sign, CRL Sign/);
    assert.match(text, /X509v3 Subject Key Identifier/);

    const cert = new X509Certificate(certText);
    const years = (Date.parse(cert.validTo) - Date.now()) / (365.25 * 24 * 3600 * 1000);
    assert.ok(years > 9.9 && years < 10.1, `valid for ${years} years`);
    assert.ok(cert.verify(cert.publicKey), 'self-signed');
  });

  test('refuses to overwrite an existing CA, and leaves it as it was', async () => {
    const before = await readFile(join(dir, CA_KEY_FILE), 'utf8');
    await assert.rejects(CertificateAuthority.create(dir, { name: 'Another' }), (error: unknown) => {
      assert.ok(error instanceof CertificateAuthorityError);
      assert.match(error.message, /ca\.key already exists: .* holds a CA already; refusing to replace it/);
      return true;
    });
    assert.equal(await readFile(join(dir, CA_KEY_FILE), 'utf8'), before);
    assert.equal((await CertificateAuthority.load(dir)).pin, ca.pin);
  });

  test('refuses when only ca.crt is there too', async () => {
    const other = await freshDir('only-crt');
    await writeFile(join(other, CA_CERT_FILE), 'x');
    await assert.rejects(CertificateAuthority.create(other, { name: 'X' }), /ca\.crt already exists/);
  });

  test('names an empty or overlong CA name', async () => {
    const other = await freshDir('bad-name');
    await assert.rejects(
      CertificateAuthority.create(other, { name: ' ' }),
      /CA name: " " must be 1–64 characters/,
    );
    await assert.rejects(CertificateAuthority.create(other, { name: 'x'.repeat(65) }), /CA name/);
  });
});

describe('CertificateAuthority.load', () => {
  test('loads the same CA: same pin, and it issues certificates the stored root verifies', async () => {
    const loaded = await CertificateAuthority.load(dir);
    assert.equal(loaded.pin, ca.pin);
    assert.equal(loaded.pem, ca.pem);
    const key = p256Key();
    const issued = await loaded.issueClientCertificate(await createCertificateRequest(key.privateKey), {
      identity: 'bob',
    });
    assert.ok((await opensslVerify(issued.pem, 'sslclient')).ok);
  });

  test('refuses a key file other users can read, saying how to fix it', async () => {
    const other = await freshDir('loose-mode');
    await CertificateAuthority.create(other, { name: 'Loose' });
    await chmod(join(other, CA_KEY_FILE), 0o644);
    await assert.rejects(CertificateAuthority.load(other), (error: unknown) => {
      assert.ok(error instanceof CertificateAuthorityError);
      assert.match(error.message, /permissions 0644 let other users read the private key; run `chmod 600 /);
      return true;
    });
  });

  test('says how to create a CA when there is none', async () => {
    const other = await freshDir('empty');
    await assert.rejects(
      CertificateAuthority.load(other),
      /no such file; create a CA with `umbra-controller init`/,
    );
  });

  test('refuses a certificate that does not belong to the key', async () => {
    const a = await freshDir('pair-a');
    const b = await freshDir('pair-b');
    await CertificateAuthority.create(a, { name: 'A' });
    await CertificateAuthority.create(b, { name: 'B' });
    await writeFile(join(a, CA_CERT_FILE), await readFile(join(b, CA_CERT_FILE)));
    await assert.rejects(CertificateAuthority.load(a), /does not belong to the key in .*ca\.key/);
  });
});

describe('pin', () => {
  test('is sha256/ + base64 of the SPKI DER, as openssl computes it', () => {
    const spki = execFileSync('openssl', ['x509', '-noout', '-pubkey'], { input: ca.pem });
    const der = execFileSync('openssl', ['pkey', '-pubin', '-outform', 'DER'], { input: spki });
    const digest = execFileSync('openssl', ['dgst', '-sha256', '-binary'], { input: der });
    assert.equal(ca.pin, `sha256/${digest.toString('base64')}`);
    assert.match(ca.pin, /^sha256\/[A-Za-z0-9+/]{43}=$/);
    assert.equal(pinOf(ca.pem), ca.pin);
  });

  test('verifies the CA certificate and nothing else', async () => {
    assert.equal(ca.verifyPin(ca.pem, ca.pin), true);
    assert.equal(verifyPin(ca.pem, ca.pin), true);
    const other = await CertificateAuthority.create(await freshDir('pin-other'), { name: 'Umbra CA test' });
    assert.equal(ca.verifyPin(other.pem, ca.pin), false);
    assert.equal(ca.verifyPin(ca.pem, other.pin), false);
    assert.equal(ca.verifyPin(ca.pem, ''), false);
    assert.equal(ca.verifyPin(ca.pem, `${ca.pin}x`), false);
    assert.equal(ca.verifyPin('not a certificate', ca.pin), false);
  });
});

describe('issueClientCertificate', () => {
  for (const [label, makeKey] of [
    ['ECDSA P-256', p256Key],
    ['Ed25519', () => generateKeyPairSync('ed25519')],
  ] as const) {
    test(`a CSR from a ${label} key yields a client certificate openssl verifies, as specified`, async () => {
      const key = makeKey();
      const now = new Date('2031-05-04T10:00:00.750Z');
      const csr = await createCertificateRequest(key.privateKey, { commonName: 'whatever the device says' });
      const issued = await ca.issueClientCertificate(csr, { identity: 'alice-laptop', now });

      // openssl checks the chain at the current time; this certificate is for 2031, so check at `now`.
      const atNow = ['-attime', String(Math.floor(now.getTime() / 1000))];
      const leafPath = join(root, `client-${label}.crt`);
      await writeFile(leafPath, issued.pem);
      const verified = spawnSync(
        'openssl',
        [
          'verify',
          '-x509_strict',
          '-purpose',
          'sslclient',
          ...atNow,
          '-CAfile',
          join(dir, CA_CERT_FILE),
          leafPath,
        ],
        { encoding: 'utf8' },
      );
      assert.equal(verified.status, 0, verified.stdout + verified.stderr);
      assert.match(verified.stdout, /: OK/);

      const cert = new X509Certificate(issued.pem);
      assert.equal(cert.subject, 'CN=alice-laptop');
      assert.equal(cert.subjectAltName, 'URI:umbra://identity/alice-laptop');
      assert.deepEqual(cert.keyUsage, ['1.3.6.1.5.5.7.3.2']); // node lists the extended key usages here
      assert.equal(cert.ca, false);
      assert.equal(cert.serialNumber.toLowerCase(), issued.serial);
      assert.equal(issued.notBefore.toISOString(), '2031-05-04T09:59:00.000Z');
      assert.equal(issued.notAfter.toISOString(), '2031-05-05T10:00:00.000Z');
      assert.equal(new Date(cert.validFrom).getTime(), issued.notBefore.getTime());
      assert.equal(new Date(cert.validTo).getTime(), issued.notAfter.getTime());
      assert.ok(cert.checkIssued(new X509Certificate(ca.pem)));
      assert.ok(
        cert.publicKey
          .export({ type: 'spki', format: 'der' })
          .equals(createPublicKey(key.privateKey).export({ type: 'spki', format: 'der' })),
        'the certificate carries the device key',
      );

      const text = openssl(['x509', '-noout', '-text'], issued.pem);
      assert.match(text, /X509v3 Key Usage: critical\n\s+Digital Signature\n/);
      assert.match(text, /X509v3 Extended Key Usage: \n\s+TLS Web Client Authentication\n/);
      assert.match(text, /X509v3 Basic Constraints: critical\n\s+CA:FALSE/);
      const caSki = /Subject Key Identifier: \n\s+([0-9A-F:]+)/.exec(
        openssl(['x509', '-noout', '-text'], ca.pem),
      )![1];
      assert.match(text, new RegExp(`Authority Key Identifier: \\n\\s+(keyid:)?${caSki}`));
    });
  }

  test('defaults to 24 hours from now, backdated 60 s', async () => {
    const before = Date.now();
    const issued = await ca.issueClientCertificate(await createCertificateRequest(p256Key().privateKey), {
      identity: 'carol',
    });
    assert.ok(Math.abs(issued.notBefore.getTime() - (before - 60_000)) < 2000);
    assert.ok(Math.abs(issued.notAfter.getTime() - (before + 86_400_000)) < 2000);
    assert.ok((await opensslVerify(issued.pem, 'sslclient')).ok);
  });

  test('refuses a CSR whose signature does not verify', async () => {
    const csr = await createCertificateRequest(p256Key().privateKey, { commonName: 'umbra device' });
    // Change the signed subject, keeping the DER well-formed: the signature no longer covers it.
    const der = Buffer.from(csr.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');
    const at = der.indexOf('umbra device');
    assert.ok(at > 0);
    der[at] = 'U'.charCodeAt(0);
    const tampered = x509.PemConverter.encode(new Uint8Array(der).buffer, 'CERTIFICATE REQUEST');
    await assert.rejects(ca.issueClientCertificate(tampered, { identity: 'mallory' }), (error: unknown) => {
      assert.ok(error instanceof CertificateRequestError);
      assert.match(error.message, /csr: its signature does not verify against its own key/);
      return true;
    });
  });

  test('refuses an Ed25519 CSR whose signature bytes were altered', async () => {
    const csr = await createCertificateRequest(generateKeyPairSync('ed25519').privateKey);
    const der = Buffer.from(csr.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');
    der[der.length - 1]! ^= 1;
    const tampered = x509.PemConverter.encode(new Uint8Array(der).buffer, 'CERTIFICATE REQUEST');
    await assert.rejects(
      ca.issueClientCertificate(tampered, { identity: 'mallory' }),
      /signature does not verify/,
    );
  });

  test('refuses a key that is neither ECDSA P-256 nor Ed25519', async () => {
    const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, false, [
      'sign',
      'verify',
    ]);
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: 'CN=x',
      keys,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-384' },
    });
    await assert.rejects(
      ca.issueClientCertificate(csr.toString('pem'), { identity: 'x' }),
      /csr: the key is ECDSA P-384; Umbra certifies ECDSA P-256 or Ed25519 keys only/,
    );
  });

  test('names bad input: not a CSR, a bad identity name, a bad validity', async () => {
    const csr = await createCertificateRequest(p256Key().privateKey);
    await assert.rejects(
      ca.issueClientCertificate('hello', { identity: 'x' }),
      /csr: expected a PEM PKCS#10 request/,
    );
    await assert.rejects(
      ca.issueClientCertificate(
        '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----',
        {
          identity: 'x',
        },
      ),
      /csr: not a valid PKCS#10 request/,
    );
    for (const identity of ['', 'a/b', '../x', 'a b', '-x', 'é', 'x'.repeat(129)])
      await assert.rejects(ca.issueClientCertificate(csr, { identity }), /identity: .* is not a valid name/);
    for (const validitySeconds of [0, -1, 1.5, 400 * 86400])
      await assert.rejects(
        ca.issueClientCertificate(csr, { identity: 'x', validitySeconds }),
        /validitySeconds: /,
      );
  });

  test('serials are unique, 128-bit and positive across 1000 issues', async () => {
    const csr = await createCertificateRequest(p256Key().privateKey);
    const serials = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const { serial } = await ca.issueClientCertificate(csr, { identity: 'dave' });
      assert.match(serial, /^[0-7][0-9a-f]{31}$/);
      assert.notEqual(serial.slice(0, 2), '00');
      serials.add(serial);
    }
    assert.equal(serials.size, 1000);
  });
});

describe('issueServerCertificate', () => {
  test('from a public key: serverAuth, with the gateway URI and the given DNS names and addresses', async () => {
    const key = p256Key();
    const issued = await ca.issueServerCertificate(key.publicKey, {
      gatewayName: 'branch-7',
      dnsNames: ['gw7.example.org'],
      ipAddresses: ['192.0.2.7', '2001:db8::7'],
    });
    const verified = await opensslVerify(issued.pem, 'sslserver');
    assert.ok(verified.ok, verified.output);
    assert.equal((await opensslVerify(issued.pem, 'sslclient')).ok, false);
    const cert = new X509Certificate(issued.pem);
    assert.equal(
      cert.subjectAltName,
      'URI:umbra://gateway/branch-7, DNS:gw7.example.org, IP Address:192.0.2.7, IP Address:2001:DB8:0:0:0:0:0:7',
    );
    assert.deepEqual(cert.keyUsage, ['1.3.6.1.5.5.7.3.1']);
    assert.equal(cert.checkHost('gw7.example.org'), 'gw7.example.org');
    assert.equal(cert.checkIP('192.0.2.7'), '192.0.2.7');
  });

  test('from a CSR, verified like a client request', async () => {
    const issued = await ca.issueServerCertificate(
      await createCertificateRequest(generateKeyPairSync('ed25519').privateKey),
      { gatewayName: 'branch-8' },
    );
    assert.ok((await opensslVerify(issued.pem, 'sslserver')).ok);
    const result = await ca.verifyChain(issued.pem, { isRevoked: () => false, purpose: 'server' });
    assert.deepEqual(result.ok && [result.kind, result.name], ['gateway', 'branch-8']);
  });

  test('refuses a private key, and names bad DNS names and addresses', async () => {
    const key = p256Key();
    await assert.rejects(
      ca.issueServerCertificate(key.privateKey, { gatewayName: 'g' }),
      /key: expected a public KeyObject .* the CA never needs the private key/,
    );
    await assert.rejects(
      ca.issueServerCertificate(key.publicKey, { gatewayName: 'g', dnsNames: ['bad name'] }),
      /dnsNames: "bad name" is not a host name/,
    );
    await assert.rejects(
      ca.issueServerCertificate(key.publicKey, { gatewayName: 'g', ipAddresses: ['300.1.1.1'] }),
      /ipAddresses: "300\.1\.1\.1" is not an IPv4 or IPv6 address/,
    );
    await assert.rejects(ca.issueServerCertificate(key.publicKey, { gatewayName: 'g/h' }), /gatewayName: /);
  });
});

describe('verifyChain', () => {
  const notRevoked = () => false;
  let issued: Awaited<ReturnType<CertificateAuthority['issueClientCertificate']>>;
  before(async () => {
    issued = await ca.issueClientCertificate(await createCertificateRequest(p256Key().privateKey), {
      identity: 'erin',
    });
  });

  test('accepts a certificate it issued and names the identity', async () => {
    const result = await ca.verifyChain(issued.pem, { isRevoked: notRevoked });
    assert.deepEqual(result, {
      ok: true,
      kind: 'identity',
      name: 'erin',
      serial: issued.serial,
      notAfter: issued.notAfter,
    });
  });

  test('rejects a certificate from another CA, even one with the same name', async () => {
    const other = await CertificateAuthority.create(await freshDir('verify-other'), {
      name: 'Umbra CA test',
    });
    const foreign = await other.issueClientCertificate(await createCertificateRequest(p256Key().privateKey), {
      identity: 'erin',
    });
    const result = await ca.verifyChain(foreign.pem, { isRevoked: notRevoked });
    assert.equal(result.ok, false);
    assert.equal(!result.ok && result.reason, 'unknown-issuer');
    assert.match(!result.ok ? result.detail : '', /signature does not verify with this CA's key/);

    const renamed = await CertificateAuthority.create(await freshDir('verify-renamed'), {
      name: 'Elsewhere',
    });
    const elsewhere = await renamed.issueClientCertificate(
      await createCertificateRequest(p256Key().privateKey),
      {
        identity: 'erin',
      },
    );
    const second = await ca.verifyChain(elsewhere.pem, { isRevoked: notRevoked });
    assert.equal(!second.ok && second.reason, 'unknown-issuer');
  });

  test('rejects an expired and a not-yet-valid certificate', async () => {
    const late = new Date(issued.notAfter.getTime() + 1000);
    const expired = await ca.verifyChain(issued.pem, { now: late, isRevoked: notRevoked });
    assert.equal(!expired.ok && expired.reason, 'expired');
    const early = await ca.verifyChain(issued.pem, {
      now: new Date(issued.notBefore.getTime() - 1000),
      isRevoked: notRevoked,
    });
    assert.equal(!early.ok && early.reason, 'not-yet-valid');
    const lastSecond = await ca.verifyChain(issued.pem, { now: issued.notAfter, isRevoked: notRevoked });
    assert.equal(lastSecond.ok, true);
  });

  test('rejects a revoked serial, asking with the serial it reports', async () => {
    const asked: string[] = [];
    const result = await ca.verifyChain(issued.pem, {
      isRevoked: async (serial) => {
        asked.push(serial);
        return serial === issued.serial;
      },
    });
    assert.deepEqual(asked, [issued.serial]);
    assert.equal(!result.ok && result.reason, 'revoked');
  });

  test('rejects a gateway certificate presented as a client one, the CA itself, and garbage', async () => {
    const server = await ca.issueServerCertificate(p256Key().publicKey, { gatewayName: 'gw' });
    const asClient = await ca.verifyChain(server.pem, { isRevoked: notRevoked });
    assert.equal(!asClient.ok && asClient.reason, 'wrong-purpose');
    const asServer = await ca.verifyChain(issued.pem, { isRevoked: notRevoked, purpose: 'server' });
    assert.equal(!asServer.ok && asServer.reason, 'wrong-purpose');
    const self = await ca.verifyChain(ca.pem, { isRevoked: notRevoked });
    assert.equal(!self.ok && self.reason, 'wrong-purpose');
    for (const junk of ['', 'x', issued.pem.slice(0, 200), 'A'.repeat(100_000)]) {
      const result = await ca.verifyChain(junk, { isRevoked: notRevoked });
      assert.equal(!result.ok && result.reason, 'malformed');
    }
  });

  test('a gateway certificate verifies as a client for its link only when a gateway is expected', async () => {
    const gateway = await ca.issueGatewayCertificate(p256Key().publicKey, { gatewayName: 'branch-9' });
    const link = await ca.verifyChain(gateway.pem, { isRevoked: notRevoked, subject: 'gateway' });
    assert.deepEqual(link.ok && [link.kind, link.name], ['gateway', 'branch-9']);
    const asIdentity = await ca.verifyChain(gateway.pem, { isRevoked: notRevoked });
    assert.equal(!asIdentity.ok && asIdentity.reason, 'no-subject');
    const identityAsGateway = await ca.verifyChain(issued.pem, { isRevoked: notRevoked, subject: 'gateway' });
    assert.equal(!identityAsGateway.ok && identityAsGateway.reason, 'no-subject');
    // A listener-only certificate has no clientAuth: it cannot open a link.
    const server = await ca.issueServerCertificate(p256Key().publicKey, { gatewayName: 'branch-9' });
    const serverAsLink = await ca.verifyChain(server.pem, { isRevoked: notRevoked, subject: 'gateway' });
    assert.equal(!serverAsLink.ok && serverAsLink.reason, 'wrong-purpose');
  });

  test('policy signing uses the CA key, and the CA certificate verifies it', () => {
    const message = Buffer.from('policy');
    const signature = sign('sha256', message, ca.policySigningKey);
    assert.ok(verify('sha256', message, new X509Certificate(ca.pem).publicKey, signature));
    assert.ok(verify('sha256', message, ca.policyVerifyKey, signature));
  });
});
