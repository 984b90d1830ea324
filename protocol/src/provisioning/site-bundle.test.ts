import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes, verify } from 'node:crypto';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { decode, encode } from 'cbor-x';
import fc from 'fast-check';
import { createEnrollmentToken } from '../enrollment-token.ts';
import { ed25519PublicKeyObject } from '../key-objects.ts';
import { pinFromDigest } from '../pin.ts';
import {
  formatProvisioningPublicKeyLine,
  generateProvisioningKey,
  parseProvisioningPrivateKey,
  parseProvisioningPublicKey,
  readProvisioningPrivateKey,
  readProvisioningPublicKey,
  writeProvisioningKey,
} from './provisioning-key.ts';
import {
  createSiteBundle,
  openSiteBundle,
  SITE_BUNDLE_CONTEXT,
  SITE_BUNDLE_MAX_BYTES,
  SiteBundleError,
  type SiteBundleFields,
} from './site-bundle.ts';

const NOW = Date.parse('2026-11-21T10:00:00Z');
const DAY = 86_400_000;
const url = 'https://controller.example:8443/';
const caPin = pinFromDigest(randomBytes(32));
const { token } = createEnrollmentToken({ kind: 'gateway', url, pin: caPin });
const key = generateProvisioningKey();

const fields: SiteBundleFields = {
  controllerUrl: url,
  caPin,
  enrollmentToken: token,
  site: 'Lyon branch 3',
  network: {
    mode: 'static',
    address: '192.0.2.10/24',
    gateway: '192.0.2.1',
    vlan: 42,
    dns: ['192.0.2.53', '2001:db8::53'],
    ntp: ['pool.ntp.org', '192.0.2.123'],
  },
  createdAt: NOW,
  expiresAt: NOW + 7 * DAY,
};

function rejects(run: () => unknown, code: string, pattern: RegExp, field?: string) {
  assert.throws(run, (error: unknown) => {
    assert.ok(error instanceof SiteBundleError, String(error));
    assert.equal(error.code, code, error.message);
    assert.match(error.message, pattern);
    if (field !== undefined) assert.equal(error.field, field);
    return true;
  });
}

test('a bundle opens with the key that signed it, and says exactly what was put in', () => {
  const bundle = createSiteBundle(fields, key.privateKey);
  assert.ok(bundle.length < 1024);
  const opened = openSiteBundle(bundle, [generateProvisioningKey().publicKey, key.publicKey], NOW + DAY);
  assert.deepEqual(opened, { ...fields, keyId: key.keyId });
  const dhcp = { ...fields, network: { mode: 'dhcp' as const, dns: [], ntp: [] } };
  assert.deepEqual(
    openSiteBundle(createSiteBundle(dhcp, key.privateKey), [key.publicKey], NOW).network,
    dhcp.network,
  );
  // Without a key id, every trusted key is tried.
  const anonymous = createSiteBundle(fields, key.privateKey, { includeKeyId: false });
  assert.equal(
    openSiteBundle(anonymous, [generateProvisioningKey().publicKey, key.publicKey], NOW).keyId,
    key.keyId,
  );
});

test('the signature covers the domain-separated body', () => {
  const envelope = decode(createSiteBundle(fields, key.privateKey)) as { body: Buffer; signature: Buffer };
  const publicKey = ed25519PublicKeyObject(key.publicKey);
  assert.ok(verify(null, Buffer.concat([SITE_BUNDLE_CONTEXT, envelope.body]), publicKey, envelope.signature));
  assert.ok(!verify(null, envelope.body, publicKey, envelope.signature));
});

test('refusals: unknown key, bad signature, expired, too large, malformed', () => {
  const bundle = createSiteBundle(fields, key.privateKey);
  rejects(
    () => openSiteBundle(bundle, [generateProvisioningKey().publicKey], NOW),
    'unknown-key',
    /does not trust/,
  );
  const anonymous = createSiteBundle(fields, key.privateKey, { includeKeyId: false });
  rejects(
    () => openSiteBundle(anonymous, [generateProvisioningKey().publicKey], NOW),
    'bad-signature',
    /does not verify/,
  );

  const envelope = decode(bundle) as { body: Buffer; signature: Buffer; keyId: Buffer };
  const body = decode(envelope.body) as Record<string, unknown>;
  const forged = encode({ ...envelope, body: encode({ ...body, site: 'Elsewhere' }) });
  rejects(() => openSiteBundle(forged, [key.publicKey], NOW), 'bad-signature', /altered after signing/);

  rejects(
    () => openSiteBundle(bundle, [key.publicKey], NOW + 7 * DAY),
    'expired',
    /expired at 2026-11-28/,
    'expiresAt',
  );
  rejects(
    () => openSiteBundle(Buffer.alloc(SITE_BUNDLE_MAX_BYTES + 1), [key.publicKey], NOW),
    'too-large',
    /limit/,
  );
  rejects(() => openSiteBundle(Buffer.from('hello'), [key.publicKey], NOW), 'malformed', /not a site bundle/);
  rejects(
    () => openSiteBundle(encode({ ...envelope, signature: Buffer.alloc(10) }), [key.publicKey], NOW),
    'malformed',
    /signature: expected 64 bytes/,
    'signature',
  );
  rejects(
    () => openSiteBundle(encode({ ...envelope, extra: 1 }), [key.publicKey], NOW),
    'malformed',
    /Unrecognized key/,
  );
});

test('every field is validated, and the error names it', () => {
  const bad = (patch: Partial<SiteBundleFields>, field: string, pattern: RegExp) =>
    rejects(() => createSiteBundle({ ...fields, ...patch }, key.privateKey), 'invalid-field', pattern, field);
  const net = fields.network as Extract<SiteBundleFields['network'], { mode: 'static' }>;
  bad({ controllerUrl: 'http://controller.example/' }, 'controllerUrl', /https/);
  bad({ controllerUrl: 'https://user:pw@controller.example/' }, 'controllerUrl', /without credentials/);
  bad({ caPin: 'sha1/abc' }, 'caPin', /CA pin/);
  bad({ enrollmentToken: 'umbra1.garbage!' }, 'enrollmentToken', /base64url/);
  const identityToken = createEnrollmentToken({ kind: 'identity', url, pin: caPin }).token;
  bad({ enrollmentToken: identityToken }, 'enrollmentToken', /needs a gateway token/);
  const otherToken = createEnrollmentToken({
    kind: 'gateway',
    url: 'https://other.example/',
    pin: caPin,
  }).token;
  bad({ enrollmentToken: otherToken }, 'enrollmentToken', /made for https:\/\/other.example\//);
  bad({ caPin: pinFromDigest(randomBytes(32)) }, 'enrollmentToken', /another CA pin/);
  bad({ site: '' }, 'site', /1 to 63/);
  bad({ network: { ...net, address: '192.0.2.10' } }, 'network.address', /ADDRESS\/PREFIX/);
  bad({ network: { ...net, address: '192.0.2.10/33' } }, 'network.address', /ADDRESS\/PREFIX/);
  bad({ network: { ...net, address: '2001:db8::10/129' } }, 'network.address', /ADDRESS\/PREFIX/);
  bad({ network: { ...net, gateway: '198.51.100.1' } }, 'network.gateway', /not in 192.0.2.10\/24/);
  bad({ network: { ...net, gateway: '2001:db8::1' } }, 'network.gateway', /not in/);
  bad({ network: { ...net, vlan: 0 } }, 'network.vlan', /greater than or equal to 1/);
  bad({ network: { ...net, vlan: 4095 } }, 'network.vlan', /less than or equal to 4094/);
  bad(
    { network: { ...net, dns: ['1.1.1.1', '1.0.0.1', '8.8.8.8', '8.8.4.4', '9.9.9.9'] } },
    'network.dns',
    /at most 4/,
  );
  bad({ network: { ...net, dns: ['dns.example'] } }, 'network.dns.0', /IPv4 or IPv6/);
  bad({ network: { ...net, ntp: ['not a host'] } }, 'network.ntp.0', /host name or an IP/);
  bad({ network: { ...net, dns: [] } }, 'network', /at least one DNS server to resolve controller.example/);
  bad({ network: { mode: 'bridge' } as never }, 'network.mode', /Invalid discriminator/);
  bad({ expiresAt: NOW }, 'expiresAt', /after createdAt/);
  bad({ expiresAt: NOW + 365 * DAY }, 'expiresAt', /at most 90 days/);
  bad({ extra: 1 } as never, '(root)', /Unrecognized key/);
  // IPv6 static addressing works too.
  const v6 = {
    mode: 'static' as const,
    address: '2001:db8:1::10/64',
    gateway: '2001:db8:1::1',
    dns: ['2001:db8::53'],
    ntp: [],
  };
  assert.deepEqual(
    openSiteBundle(createSiteBundle({ ...fields, network: v6 }, key.privateKey), [key.publicKey], NOW)
      .network,
    v6,
  );
});

test('property: arbitrary bytes and damaged bundles are refused with a SiteBundleError, never anything else', () => {
  const bundle = createSiteBundle(fields, key.privateKey);
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
      assert.throws(() => openSiteBundle(bytes, [key.publicKey], NOW), SiteBundleError);
    }),
  );
  fc.assert(
    fc.property(fc.nat(), fc.integer({ min: 1, max: 255 }), (where, xor) => {
      const damaged = Buffer.from(bundle);
      damaged[where % damaged.length]! ^= xor;
      assert.throws(() => openSiteBundle(damaged, [key.publicKey], NOW), SiteBundleError);
    }),
    { numRuns: 300 },
  );
});

test('provisioning key files: private 0600 (and refused when readable by others), public as PEM or one line', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'umbra-provisioning-key-'));
  try {
    const paths = { privateKey: join(dir, 'provisioning.key'), publicKey: join(dir, 'provisioning.pub') };
    await writeProvisioningKey(key, paths);
    assert.equal(statSync(paths.privateKey).mode & 0o777, 0o600);
    const read = readProvisioningPrivateKey(paths.privateKey);
    assert.equal(read.keyId, key.keyId);
    assert.deepEqual(readProvisioningPublicKey(paths.publicKey), key.publicKey);
    assert.deepEqual(
      parseProvisioningPublicKey(`${formatProvisioningPublicKeyLine(key.publicKey)}\n`, 'x'),
      key.publicKey,
    );
    await assert.rejects(writeProvisioningKey(key, paths), /already exists/);
    const loose = join(dir, 'loose.key');
    writeFileSync(loose, read.privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o644 });
    assert.throws(() => readProvisioningPrivateKey(loose), /permissions 0644 let other users read/);
    assert.throws(
      () => parseProvisioningPrivateKey('not a key', 'k'),
      /k: expected an Ed25519 private key in PKCS#8 PEM/,
    );
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({
      format: 'pem',
      type: 'pkcs8',
    });
    assert.throws(
      () => parseProvisioningPrivateKey(ec.toString(), 'k'),
      /a key of type ec; the provisioning key must be Ed25519/,
    );
    // The bundle made with the key read back opens with the public key read back.
    const bundle = createSiteBundle(fields, read.privateKey);
    assert.equal(openSiteBundle(bundle, [readProvisioningPublicKey(paths.publicKey)], NOW).site, fields.site);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
