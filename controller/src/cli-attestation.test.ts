// umbra-controller's attestation records from the command line: EK roots, golden PCR values per
// firmware version, approving and releasing gateways. The store's own rules are tested in the store
// suite; here, what an operator sees: --help, the JSON, the messages and exit codes.

import 'reflect-metadata';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { webcrypto } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as x509 from '@peculiar/x509';
import { generateIdentity } from '@umbra/protocol';
import { openDataDir } from './data-dir.ts';

const BIN = resolve(dirname(fileURLToPath(import.meta.url)), '../bin/umbra-controller.js');
const ENV = { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH}` };
const dir = mkdtempSync(join(tmpdir(), 'umbra-controller-attestation-'));
const data = join(dir, 'data');
const D = ['--data', data];
const SHA256_0 = '3D458CFE55CC03EA1F443F1562BEEC8DF51C75E14A9FCF9A7234A13F198E7969';
const SHA256_7 = 'B5710BF57D25623E4019027DA116821FA99F5C81E9E38B87671CC574F9281439';

function run(...args: string[]) {
  const result = spawnSync(process.execPath, [BIN, ...args], { env: ENV, encoding: 'utf8', timeout: 30_000 });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

async function certificatePem(name: string, ca: boolean): Promise<string> {
  const algorithm = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = await webcrypto.subtle.generateKey(algorithm, false, ['sign', 'verify']);
  const certificate = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: '01',
      name,
      notBefore: new Date('2020-01-01T00:00:00Z'),
      notAfter: new Date('2045-01-01T00:00:00Z'),
      keys,
      signingAlgorithm: algorithm,
      extensions: [new x509.BasicConstraintsExtension(ca, undefined, true)],
    },
    webcrypto,
  );
  return certificate.toString('pem');
}

before(() => {
  assert.equal(run('init', ...D, '--url', 'https://127.0.0.1:9443').code, 0);
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

test('every new command answers --help', () => {
  for (const command of [
    ['ekca', 'add'],
    ['ekca', 'list'],
    ['ekca', 'remove'],
    ['firmware', 'pcrs', 'add'],
    ['firmware', 'pcrs', 'list'],
    ['firmware', 'pcrs', 'remove'],
    ['gateway', 'approve'],
    ['gateway', 'release'],
  ]) {
    const help = run(...command, '--help');
    assert.equal(help.code, 0, command.join(' '));
    assert.match(help.stdout, new RegExp(`^Usage: umbra-controller ${command.join(' ')}`), command.join(' '));
  }
});

test('ekca add, list and remove; a leaf or a repeat is refused naming the file and certificate', async () => {
  const bundle = join(dir, 'tpm-cas.pem');
  writeFileSync(
    bundle,
    `${await certificatePem('CN=Example TPM Root CA', true)}\n${await certificatePem('CN=Example TPM Intermediate', true)}`,
  );
  const added = run('ekca', 'add', bundle, ...D);
  assert.equal(added.code, 0, added.stderr);
  const roots = JSON.parse(added.stdout) as { subject: string; fingerprint: string; notAfter: string }[];
  assert.deepEqual(
    roots.map((root) => [root.subject, root.notAfter]),
    [
      ['CN=Example TPM Root CA', '2045-01-01T00:00:00.000Z'],
      ['CN=Example TPM Intermediate', '2045-01-01T00:00:00.000Z'],
    ],
  );
  const listed = JSON.parse(run('ekca', 'list', ...D).stdout) as Record<string, string>[];
  assert.deepEqual(Object.keys(listed[0]!), ['subject', 'issuer', 'fingerprint', 'notAfter', 'added']);
  assert.equal(listed.length, 2);

  const again = run('ekca', 'add', bundle, ...D);
  assert.equal(again.code, 2);
  assert.match(
    again.stderr,
    /tpm-cas.pem: certificate 1 of 2 \("CN=Example TPM Root CA", SHA-256 [0-9a-f]{64}\) is already trusted/,
  );

  const leaf = join(dir, 'ek.pem');
  writeFileSync(leaf, await certificatePem('CN=An EK', false));
  const refused = run('ekca', 'add', leaf, ...D);
  assert.equal(refused.code, 2);
  assert.match(refused.stderr, /ek.pem: certificate 1 of 1 \("CN=An EK"\) is not a CA certificate/);
  const missing = run('ekca', 'add', join(dir, 'nope.pem'), ...D);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /nope.pem: cannot read it \(ENOENT\)/);

  const colons = roots[1]!.fingerprint.match(/../g)!.join(':').toUpperCase();
  const removed = run('ekca', 'remove', colons, ...D);
  assert.equal(removed.code, 0, removed.stderr);
  assert.equal(JSON.parse(removed.stdout).removed.subject, 'CN=Example TPM Intermediate');
  assert.equal(run('ekca', 'remove', colons, ...D).code, 2);
  assert.equal(JSON.parse(run('ekca', 'list', ...D).stdout).length, 1);
});

test('firmware pcrs add from tpm2_pcrread output, the strongest bank unless --bank; list and remove', () => {
  const file = join(dir, 'golden.yaml');
  writeFileSync(
    file,
    `  sha1:\n    0 : 0x${'AB'.repeat(20)}\n  sha256:\n    0 : 0x${SHA256_0}\n    7 : 0x${SHA256_7}\n`,
  );
  const added = run('firmware', 'pcrs', 'add', '2.4.1', file, ...D);
  assert.equal(added.code, 0, added.stderr);
  assert.match(
    added.stderr,
    /recording the sha256 values of .*golden.yaml \(it also gives sha1; choose with --bank\)/,
  );
  assert.deepEqual(JSON.parse(added.stdout).pcrs, {
    '0': SHA256_0.toLowerCase(),
    '7': SHA256_7.toLowerCase(),
  });
  assert.equal(
    JSON.parse(run('firmware', 'pcrs', 'add', '2.4.0', file, '--bank', 'sha1', ...D).stdout).bank,
    'sha1',
  );
  const twice = run('firmware', 'pcrs', 'add', '2.4.1', file, ...D);
  assert.equal(twice.code, 2);
  assert.match(twice.stderr, /"2.4.1" already has golden PCR values; remove them first/);
  const bad = join(dir, 'bad.json');
  writeFileSync(bad, JSON.stringify({ sha256: { '24': SHA256_0 } }));
  assert.match(
    run('firmware', 'pcrs', 'add', '9', bad, ...D).stderr,
    /bad.json: sha256: PCR index "24" is not one of 0 to 23/,
  );
  assert.deepEqual(
    JSON.parse(run('firmware', 'pcrs', 'list', ...D).stdout).map((g: { version: string; bank: string }) => [
      g.version,
      g.bank,
    ]),
    [
      ['2.4.0', 'sha1'],
      ['2.4.1', 'sha256'],
    ],
  );
  assert.equal(run('firmware', 'pcrs', 'remove', '2.4.0', ...D).code, 0);
  assert.equal(JSON.parse(run('firmware', 'pcrs', 'list', ...D).stdout).length, 1);
});

test('gateway approve and release: states in gateway list, refusals that say why', async () => {
  // The attestation itself comes with the tpm2 package; until then, code records it as enrollment will.
  const opened = await openDataDir(data);
  try {
    const key = generateIdentity().publicKey.toString('base64');
    await opened.store.createGateway({ name: 'branch-1', publicKey: key });
    const pcrs = { bank: 'sha256' as const, pcrs: { '0': SHA256_0 } };
    await opened.store.recordGatewayAttestation(
      'branch-1',
      { state: 'awaiting-approval', pcrs },
      Date.now(),
      'test',
    );
  } finally {
    await opened.store.close();
  }
  const listed = () => JSON.parse(run('gateway', 'list', ...D).stdout)[0];
  assert.equal(listed().attestation, 'awaiting-approval');
  const refusedRelease = run('gateway', 'release', 'branch-1', ...D);
  assert.equal(refusedRelease.code, 2);
  assert.match(
    refusedRelease.stderr,
    /gateway "branch-1" is awaiting-approval, not quarantined; nothing to release/,
  );
  const approved = run('gateway', 'approve', 'branch-1', ...D);
  assert.equal(approved.code, 0, approved.stderr);
  assert.deepEqual(JSON.parse(approved.stdout), {
    gateway: 'branch-1',
    attestation: 'approved',
    golden: { bank: 'sha256', pcrs: { '0': SHA256_0.toLowerCase() } },
  });
  const twice = run('gateway', 'approve', 'branch-1', ...D);
  assert.equal(twice.code, 2);
  assert.match(twice.stderr, /is approved, not awaiting approval: it is already approved/);

  const reopened = await openDataDir(data);
  try {
    await reopened.store.quarantineGateway('branch-1', 'PCR 0 drifted', Date.now(), 'test');
  } finally {
    await reopened.store.close();
  }
  assert.deepEqual([listed().attestation, listed().quarantineReason], ['quarantined', 'PCR 0 drifted']);
  const released = run('gateway', 'release', 'branch-1', ...D);
  assert.equal(released.code, 0, released.stderr);
  assert.equal(JSON.parse(released.stdout).attestation, 'approved');
  assert.equal(run('gateway', 'approve', 'nobody', ...D).code, 2);
  assert.match(run('gateway', 'approve', ...D).stderr, /missing the gateway's NAME/);

  const actions = run('audit', ...D)
    .stdout.trim()
    .split('\n')
    .map((line) => JSON.parse(line).action as string)
    .filter((action) => /^(gateway|ekca|firmware)\./.test(action));
  assert.deepEqual(actions, [
    'ekca.add',
    'ekca.add',
    'ekca.remove',
    'firmware.pcrs.add',
    'firmware.pcrs.add',
    'firmware.pcrs.remove',
    'gateway.attest',
    'gateway.approve',
    'gateway.quarantine',
    'gateway.release',
  ]);
});

test('gateway claim creates the gateway from the site, records the claim once, and gateway claims lists it', () => {
  const hash = 'AB'.repeat(32);
  const claimed = run('gateway', 'claim', '--ek-hash', hash, '--site', 'Lyon Branch', ...D);
  assert.equal(claimed.code, 0, claimed.stderr);
  const claim = JSON.parse(claimed.stdout);
  assert.deepEqual(
    [claim.ekHash, claim.gateway, claim.site, claim.usedAt],
    [hash.toLowerCase(), 'lyon-branch', 'Lyon Branch', null],
  );
  const again = run('gateway', 'claim', '--ek-hash', hash, '--site', 'Lyon Branch', ...D);
  assert.equal(again.code, 2);
  assert.match(again.stderr, /already claimed/);
  assert.match(run('gateway', 'claim', '--ek-hash', 'nothex', '--site', 'x', ...D).stderr, /ekHash/);
  assert.match(run('gateway', 'claim', '--site', 'x', ...D).stderr, /--ek-hash/);
  const listed = JSON.parse(run('gateway', 'claims', ...D).stdout);
  assert.deepEqual(
    listed.map((entry: { gateway: string; usedAt: string | null }) => [entry.gateway, entry.usedAt]),
    [['lyon-branch', null]],
  );
  const gateways = JSON.parse(run('gateway', 'list', ...D).stdout).map((g: { name: string }) => g.name);
  assert.ok(gateways.includes('lyon-branch'));
});
