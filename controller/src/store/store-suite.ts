// The behaviour every Store must show, whatever the engine: run by sqlite-store.test.ts and
// pg-store.test.ts against a fresh, empty store per test. Engine-specific matters (files, pools,
// concurrency between processes) stay in those files.

import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { generateIdentity, identityIdOf } from '@umbra/protocol';
import { hashTokenSecret as enrollmentTokenHash } from '../ca/index.ts';
import { StoreError } from './errors.ts';
import type { Store } from './store.ts';

export const T0 = 1_750_000_000_000;
export const PEM = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
/** An enrollment token's secret as `token create` would print it, and the hash the store keeps. */
export const TOKEN_SECRET = 'umbra-enroll-Zm9vYmFyYmF6cXV4cXV1eA';
export const TOKEN_HASH = enrollmentTokenHash(Buffer.from(TOKEN_SECRET));

export function publicKey(): string {
  return generateIdentity().publicKey.toString('base64');
}

export function refusedWith(code: StoreError['code'], field: string, message: RegExp) {
  return (error: unknown): boolean => {
    assert.ok(error instanceof StoreError, `expected a StoreError, got ${error}`);
    assert.equal(error.code, code);
    assert.equal(error.field, field);
    assert.match(error.message, message);
    return true;
  };
}

/** Opens an empty store whose clock reads `clock()`. */
export type OpenStore = (clock: () => number) => Promise<Store>;

/** Registers the shared tests under `describe(name)`. */
export function storeSuite(name: string, open: OpenStore): void {
  describe(name, () => {
    let store: Store;
    let now: number;

    beforeEach(async () => {
      now = T0;
      store = await open(() => now);
    });

    afterEach(async () => {
      await store.close();
    });

    async function gatewayAndService() {
      const gateway = await store.createGateway({ name: 'branch-1' });
      const service = await store.createService({
        name: 'postgres',
        gateway: 'branch-1',
        backend: '10.0.0.5:5432',
      });
      return { gateway, service };
    }

    describe('identities and groups', () => {
      test('creates an identity with its owner and groups and finds it by name, id and key id', async () => {
        await store.createGroup('staff');
        await store.createGroup('admins');
        await store.createIdentity({ name: 'alice', kind: 'user' });
        const key = publicKey();
        const laptop = await store.createIdentity({
          name: 'alice-laptop',
          kind: 'device',
          owner: 'alice',
          publicKey: key,
          groups: ['staff', 'admins'],
        });
        assert.equal(laptop.owner, 'alice');
        assert.deepEqual(laptop.groups, ['admins', 'staff']);
        assert.equal(laptop.createdAt, T0);
        assert.equal(laptop.disabled, false);
        assert.equal(laptop.revokedAt, null);
        assert.equal(laptop.keyId, identityIdOf(Buffer.from(key, 'base64')).toString('hex'));
        assert.deepEqual(await store.getIdentityByName('alice-laptop'), laptop);
        assert.deepEqual(await store.getIdentityById(laptop.id), laptop);
        assert.deepEqual(await store.getIdentityByKeyId(laptop.keyId!), laptop);
        assert.equal(await store.getIdentityByName('bob'), null);
        assert.deepEqual(
          (await store.listIdentities()).map((identity) => [identity.name, identity.groups]),
          [
            ['alice', []],
            ['alice-laptop', ['admins', 'staff']],
          ],
        );
      });

      test('a taken name is refused, naming the name', async () => {
        await store.createIdentity({ name: 'alice', kind: 'user' });
        await assert.rejects(
          store.createIdentity({ name: 'alice', kind: 'device' }),
          refusedWith('duplicate', 'name', /identity "alice" already exists/),
        );
        await store.createGroup('staff');
        await assert.rejects(
          store.createGroup('staff'),
          refusedWith('duplicate', 'name', /group "staff" already exists/),
        );
      });

      test('malformed input is refused at the edge, naming the field', async () => {
        await assert.rejects(
          store.createIdentity({ name: 'al ice', kind: 'user' }),
          refusedWith('invalid', 'name', /1-64 letters.*"al ice"/),
        );
        await assert.rejects(
          store.createIdentity({ name: 'x'.repeat(65), kind: 'user' }),
          refusedWith('invalid', 'name', /1-64/),
        );
        await assert.rejects(
          store.createIdentity({ name: 'alice', kind: 'robot' as 'user' }),
          refusedWith('invalid', 'kind', /device, user, service.*"robot"/),
        );
        await assert.rejects(
          store.createIdentity({ name: 'alice', kind: 'user', publicKey: 'not-a-key' }),
          refusedWith('invalid', 'publicKey', /base64/),
        );
      });

      test('an owner must exist and be a user or a service', async () => {
        await assert.rejects(
          store.createIdentity({ name: 'laptop', kind: 'device', owner: 'nobody' }),
          refusedWith('not-found', 'owner', /no identity named "nobody"/),
        );
        await store.createIdentity({ name: 'phone', kind: 'device' });
        await assert.rejects(
          store.createIdentity({ name: 'laptop', kind: 'device', owner: 'phone' }),
          refusedWith('invalid', 'owner', /"phone" is a device/),
        );
      });

      test('a failed creation leaves nothing behind: one missing group, no identity and no memberships', async () => {
        await store.createGroup('staff');
        await assert.rejects(
          store.createIdentity({ name: 'alice', kind: 'user', groups: ['staff', 'ghosts'] }),
          refusedWith('not-found', 'groups[1]', /no group named "ghosts"/),
        );
        assert.equal(await store.getIdentityByName('alice'), null);
        // The name is free again, and the group has no stray member.
        const alice = await store.createIdentity({ name: 'alice', kind: 'user', groups: ['staff'] });
        assert.deepEqual(alice.groups, ['staff']);
      });

      test('addToGroup names what is missing and refuses a repeat', async () => {
        await store.createIdentity({ name: 'alice', kind: 'user' });
        await store.createGroup('staff');
        await assert.rejects(store.addToGroup('bob', 'staff'), refusedWith('not-found', 'identity', /"bob"/));
        await assert.rejects(store.addToGroup('alice', 'ops'), refusedWith('not-found', 'group', /"ops"/));
        await store.addToGroup('alice', 'staff');
        assert.deepEqual((await store.getIdentityByName('alice'))?.groups, ['staff']);
        await assert.rejects(
          store.addToGroup('alice', 'staff'),
          refusedWith('duplicate', 'group', /already in group/),
        );
        assert.deepEqual(
          (await store.listGroups()).map((group) => group.name),
          ['staff'],
        );
      });

      test('enrollment sets a public key once, and one key serves one identity', async () => {
        await store.createIdentity({ name: 'laptop', kind: 'device' });
        await store.createIdentity({ name: 'phone', kind: 'device' });
        const key = publicKey();
        const enrolled = await store.setIdentityPublicKey('laptop', key);
        assert.equal(enrolled.publicKey, key);
        assert.equal((await store.getIdentityByKeyId(enrolled.keyId!))?.name, 'laptop');
        assert.deepEqual(await store.setIdentityPublicKey('laptop', key), enrolled);
        await assert.rejects(
          store.setIdentityPublicKey('laptop', publicKey()),
          refusedWith('duplicate', 'publicKey', /already has a public key/),
        );
        await assert.rejects(
          store.setIdentityPublicKey('phone', key),
          refusedWith('duplicate', 'publicKey', /belongs to identity "laptop"/),
        );
      });

      test('disabling and re-enabling an identity', async () => {
        await store.createIdentity({ name: 'alice', kind: 'user' });
        assert.equal((await store.setIdentityDisabled('alice', true)).disabled, true);
        assert.equal((await store.setIdentityDisabled('alice', false)).disabled, false);
        await assert.rejects(
          store.setIdentityDisabled('bob', true),
          refusedWith('not-found', 'name', /"bob"/),
        );
      });
    });

    describe('gateways, services and policies', () => {
      test('a gateway is pending until its key is set', async () => {
        const gateway = await store.createGateway({ name: 'branch-1' });
        assert.equal(gateway.status, 'pending');
        assert.equal(gateway.publicKey, null);
        const key = publicKey();
        const enrolled = await store.setGatewayPublicKey('branch-1', key);
        assert.equal(enrolled.status, 'enrolled');
        assert.equal(enrolled.publicKey, key);
        assert.equal(
          (await store.createGateway({ name: 'branch-2', publicKey: publicKey() })).status,
          'enrolled',
        );
        await assert.rejects(
          store.createGateway({ name: 'branch-3', publicKey: key }),
          refusedWith('duplicate', 'publicKey', /gateway "branch-1"/),
        );
        await assert.rejects(
          store.createGateway({ name: 'branch-1' }),
          refusedWith('duplicate', 'name', /gateway "branch-1" already exists/),
        );
        assert.deepEqual(
          (await store.listGateways()).map((g) => g.name),
          ['branch-1', 'branch-2'],
        );
        assert.deepEqual(await store.getGatewayByName('branch-1'), enrolled);
      });

      test('an attested enrollment records the TPM keys with the SPA key; malformed ones are refused', async () => {
        assert.equal((await store.createGateway({ name: 'tpm-box' })).tpm, null);
        const tpm = { ekHash: 'ab'.repeat(32), akPublic: 'AAEAAQ==', identityPublic: 'AAIAAg==' };
        await assert.rejects(
          store.setGatewayPublicKey('tpm-box', publicKey(), { ...tpm, ekHash: 'nothex' }),
          refusedWith('invalid', 'tpm.ekHash', /hex/),
        );
        await assert.rejects(
          store.setGatewayPublicKey('tpm-box', publicKey(), { ...tpm, akPublic: 'not base64!' }),
          refusedWith('invalid', 'tpm.akPublic', /base64/),
        );
        assert.equal((await store.getGatewayByName('tpm-box'))?.status, 'pending');
        const enrolled = await store.setGatewayPublicKey('tpm-box', publicKey(), tpm);
        assert.deepEqual(enrolled.tpm, tpm);
        assert.deepEqual((await store.getGatewayByName('tpm-box'))?.tpm, tpm);
      });

      test('a zero-touch claim names an existing gateway, is audited, listed, and spent once', async () => {
        const ekHash = 'ef'.repeat(32);
        await assert.rejects(
          store.addGatewayClaim({ ekHash, gateway: 'nowhere', site: 'Lyon' }, 1_000, 'cli'),
          refusedWith('not-found', 'gateway', /nowhere/),
        );
        await store.createGateway({ name: 'lyon-1' });
        await assert.rejects(
          store.addGatewayClaim({ ekHash: 'xyz', gateway: 'lyon-1', site: 'Lyon' }, 1_000, 'cli'),
          refusedWith('invalid', 'ekHash', /hex/),
        );
        const claim = await store.addGatewayClaim(
          { ekHash, gateway: 'lyon-1', site: 'Lyon branch' },
          1_000,
          'cli',
        );
        assert.deepEqual(claim, {
          ekHash,
          gateway: 'lyon-1',
          site: 'Lyon branch',
          createdAt: 1_000,
          usedAt: null,
        });
        await assert.rejects(
          store.addGatewayClaim({ ekHash, gateway: 'lyon-1', site: 'Lyon' }, 2_000, 'cli'),
          refusedWith('duplicate', 'ekHash', /already claimed/),
        );
        assert.deepEqual(await store.listGatewayClaims(), [claim]);
        assert.equal(await store.consumeGatewayClaim(ekHash, 3_000), true);
        assert.equal(await store.consumeGatewayClaim(ekHash, 4_000), false);
        assert.equal((await store.getGatewayClaim(ekHash))?.usedAt, 3_000);
        assert.equal(await store.getGatewayClaim('00'.repeat(32)), null);
        const audited = (await store.listAudit()).filter((entry) => entry.action === 'gateway.claim');
        assert.deepEqual(
          audited.map((entry) => [entry.subject, entry.details]),
          [['lyon-1', { ekHash, site: 'Lyon branch' }]],
        );
      });

      test('a revoked gateway stays revoked, is audited once, and cannot enroll again', async () => {
        await store.createGateway({ name: 'stolen', publicKey: publicKey() });
        const revoked = await store.revokeGateway('stolen', 1_000, 'cli');
        assert.equal(revoked.status, 'revoked');
        assert.equal((await store.revokeGateway('stolen', 2_000, 'cli')).status, 'revoked');
        const entries = (await store.listAudit()).filter((entry) => entry.action === 'gateway.revoke');
        assert.deepEqual(
          entries.map((entry) => [entry.subject, entry.at, entry.actor]),
          [['stolen', 1_000, 'cli']],
        );
        await assert.rejects(store.setGatewayPublicKey('stolen', publicKey()), /revoked/);
        await assert.rejects(
          store.revokeGateway('nobody', 1_000, 'cli'),
          refusedWith('not-found', 'name', /nobody/),
        );
      });

      test('a service names an existing gateway, a HOST:PORT backend and a mode', async () => {
        const { gateway, service } = await gatewayAndService();
        assert.equal(service.gatewayId, gateway.id);
        assert.equal(service.gateway, 'branch-1');
        assert.equal(service.mode, 'tunnel');
        const ssh = await store.createService({
          name: 'ssh',
          gateway: 'branch-1',
          backend: '[fd00::5]:22',
          mode: 'direct',
        });
        assert.equal(ssh.mode, 'direct');
        await store.createService({ name: 'wiki', gateway: 'branch-1', backend: 'wiki.internal:443' });
        assert.deepEqual(await store.getServiceByName('ssh'), ssh);
        assert.equal((await store.listServices()).length, 3);
        await assert.rejects(
          store.createService({ name: 'postgres', gateway: 'branch-1', backend: '10.0.0.6:5432' }),
          refusedWith('duplicate', 'name', /service "postgres" already exists/),
        );
        await assert.rejects(
          store.createService({ name: 'x', gateway: 'nowhere', backend: '10.0.0.6:5432' }),
          refusedWith('not-found', 'gateway', /no gateway named "nowhere"/),
        );
        for (const backend of [
          '10.0.0.5',
          '10.0.0.5:0',
          '10.0.0.5:65536',
          '300.1.1.1:80',
          '[nope]:80',
          ':80',
          'a b:80',
        ]) {
          await assert.rejects(
            store.createService({ name: 'x', gateway: 'branch-1', backend }),
            refusedWith('invalid', 'backend', /HOST:PORT/),
            backend,
          );
        }
        await assert.rejects(
          store.createService({
            name: 'x',
            gateway: 'branch-1',
            backend: '10.0.0.5:80',
            mode: 'udp' as 'tunnel',
          }),
          refusedWith('invalid', 'mode', /tunnel, direct/),
        );
      });

      test('policiesFor returns direct and group policies with their service', async () => {
        const { service } = await gatewayAndService();
        await store.createService({ name: 'ssh', gateway: 'branch-1', backend: '10.0.0.5:22' });
        await store.createService({ name: 'wiki', gateway: 'branch-1', backend: '10.0.0.7:443' });
        await store.createGroup('dba');
        await store.createGroup('ops');
        const alice = await store.createIdentity({ name: 'alice', kind: 'user', groups: ['dba'] });
        await store.createIdentity({ name: 'bob', kind: 'user', groups: ['ops'] });
        const byGroup = await store.addPolicy({
          subject: { kind: 'group', name: 'dba' },
          service: 'postgres',
          requirements: ['disk_encryption=on', 'os_version>=12'],
          hours: '08:00-18:00',
          days: 'mon-fri',
          maxTtlSeconds: 60,
        });
        now += 1;
        await store.addPolicy({ subject: { kind: 'identity', name: 'alice' }, service: 'ssh' });
        await store.addPolicy({ subject: { kind: 'group', name: 'ops' }, service: 'wiki' });
        await store.addPolicy({ subject: { kind: 'identity', name: 'bob' }, service: 'ssh' });

        assert.deepEqual(byGroup.subject, { kind: 'group', id: byGroup.subject.id, name: 'dba' });
        assert.equal(byGroup.days, 'mon-fri');
        const policies = await store.policiesFor(alice.id);
        assert.deepEqual(
          policies.map((policy) => [policy.subject.kind, policy.subject.name, policy.service.name]),
          [
            ['group', 'dba', 'postgres'],
            ['identity', 'alice', 'ssh'],
          ],
        );
        assert.deepEqual(policies[0]?.service, service);
        assert.deepEqual(policies[0]?.requirements, ['disk_encryption=on', 'os_version>=12']);
        assert.equal(policies[0]?.hours, '08:00-18:00');
        assert.equal(policies[0]?.maxTtlSeconds, 60);
        assert.equal(policies[1]?.maxTtlSeconds, 30, 'the default TTL');
        assert.equal((await store.listPolicies()).length, 4);
      });

      test('addPolicy refuses a missing subject or service and malformed limits, naming the field', async () => {
        await gatewayAndService();
        await store.createIdentity({ name: 'alice', kind: 'user' });
        const base = { subject: { kind: 'identity' as const, name: 'alice' }, service: 'postgres' };
        await assert.rejects(
          store.addPolicy({ ...base, subject: { kind: 'group', name: 'dba' } }),
          refusedWith('not-found', 'subject.name', /no group named "dba"/),
        );
        await assert.rejects(
          store.addPolicy({ ...base, service: 'mail' }),
          refusedWith('not-found', 'service', /no service named "mail"/),
        );
        await assert.rejects(
          store.addPolicy({ ...base, maxTtlSeconds: 0 }),
          refusedWith('invalid', 'maxTtlSeconds', /1 to 86400/),
        );
        await assert.rejects(
          store.addPolicy({ ...base, maxTtlSeconds: 86_401 }),
          refusedWith('invalid', 'maxTtlSeconds', /1 to 86400/),
        );
        await assert.rejects(
          store.addPolicy({ ...base, maxTtlSeconds: 1.5 }),
          refusedWith('invalid', 'maxTtlSeconds', /whole/),
        );
        await assert.rejects(
          store.addPolicy({ ...base, hours: '8-18' }),
          refusedWith('invalid', 'hours', /HH:MM-HH:MM/),
        );
        await assert.rejects(
          store.addPolicy({ ...base, hours: '08:00-25:00' }),
          refusedWith('invalid', 'hours', /expected HH:MM-HH:MM/),
        );
        await assert.rejects(
          store.addPolicy({ ...base, hours: '08:00-08:00' }),
          refusedWith('invalid', 'hours', /empty/),
        );
        await assert.rejects(
          store.addPolicy({ ...base, days: 'Mon-Funday' }),
          refusedWith('invalid', 'days', /"Mon-Funday": expected day names/),
        );
        await assert.rejects(
          store.addPolicy({ ...base, requirements: ['disk_encryption=on', 'firewall'] }),
          refusedWith('invalid', 'requirements[1]', /"firewall": expected KEY=VALUE/),
        );
        assert.equal((await store.addPolicy({ ...base, hours: '22:00-06:00' })).hours, '22:00-06:00');
        assert.equal((await store.listPolicies()).length, 1);
      });
    });

    describe('enrollment tokens', () => {
      const secret = TOKEN_SECRET;
      const tokenHash = TOKEN_HASH;

      test('a token is consumed once; the second attempt is told it was used', async () => {
        await store.createGroup('staff');
        const token = await store.createEnrollmentToken({
          tokenHash,
          kind: 'identity',
          subjectName: 'alice-laptop',
          groups: ['staff'],
          expiresAt: T0 + 86_400_000,
        });
        assert.equal(token.usedAt, null);
        // Peeking tells what consuming would, and spends nothing.
        assert.deepEqual(await store.peekEnrollmentToken(tokenHash, T0 + 500), { ok: true, token });
        assert.deepEqual(await store.peekEnrollmentToken(tokenHash, T0 + 86_400_000), {
          ok: false,
          reason: 'expired',
        });
        const first = await store.consumeEnrollmentToken(tokenHash, T0 + 1000);
        assert.deepEqual(first, { ok: true, token: { ...token, usedAt: T0 + 1000 } });
        assert.deepEqual(await store.consumeEnrollmentToken(tokenHash, T0 + 2000), {
          ok: false,
          reason: 'used',
        });
        assert.deepEqual(await store.peekEnrollmentToken(tokenHash, T0 + 2000), {
          ok: false,
          reason: 'used',
        });
        assert.deepEqual(await store.peekEnrollmentToken(enrollmentTokenHash(Buffer.from('other')), T0), {
          ok: false,
          reason: 'unknown',
        });
      });

      test('an expired token and an unknown one are refused with their reason', async () => {
        await store.createEnrollmentToken({
          tokenHash,
          kind: 'gateway',
          subjectName: 'branch-1',
          expiresAt: T0 + 60_000,
        });
        assert.deepEqual(await store.consumeEnrollmentToken(tokenHash, T0 + 60_000), {
          ok: false,
          reason: 'expired',
        });
        assert.deepEqual(await store.consumeEnrollmentToken(enrollmentTokenHash(Buffer.from('other')), T0), {
          ok: false,
          reason: 'unknown',
        });
        // Refusing an expired token did not spend it: it is still reported as expired, not used.
        assert.deepEqual(await store.consumeEnrollmentToken(tokenHash, T0 + 70_000), {
          ok: false,
          reason: 'expired',
        });
      });

      test('creation checks the hash, the groups, the expiry and the kind', async () => {
        const base = { tokenHash, kind: 'identity' as const, subjectName: 'alice', expiresAt: T0 + 1000 };
        await assert.rejects(
          store.createEnrollmentToken({ ...base, tokenHash: secret }),
          refusedWith('invalid', 'tokenHash', /32 bytes in hex/),
        );
        await assert.rejects(
          store.createEnrollmentToken({ ...base, groups: ['ghosts'] }),
          refusedWith('not-found', 'groups[0]', /no group named "ghosts"/),
        );
        await assert.rejects(
          store.createEnrollmentToken({ ...base, expiresAt: T0 }),
          refusedWith('invalid', 'expiresAt', /not in the future/),
        );
        await store.createGroup('staff');
        await assert.rejects(
          store.createEnrollmentToken({ ...base, kind: 'gateway', groups: ['staff'] }),
          refusedWith('invalid', 'groups', /gateway tokens/),
        );
        await store.createEnrollmentToken(base);
        await assert.rejects(
          store.createEnrollmentToken(base),
          refusedWith('duplicate', 'tokenHash', /already exists/),
        );
      });
    });

    describe('certificates and revocation', () => {
      test('revokeIdentity revokes its certificates, returns their serials and keeps others', async () => {
        const alice = await store.createIdentity({ name: 'alice', kind: 'device' });
        const bob = await store.createIdentity({ name: 'bob', kind: 'device' });
        const validity = { notBefore: T0, notAfter: T0 + 86_400_000, pem: PEM };
        const first = await store.recordCertificate({ serial: '0A01', identityId: alice.id, ...validity });
        assert.equal(first.serial, '0a01', 'serials are kept in lower case');
        await store.recordCertificate({ serial: '0a02', identityId: alice.id, ...validity });
        await store.recordCertificate({ serial: '0b01', identityId: bob.id, ...validity });
        assert.equal(await store.revokeCertificate('0a02', T0 + 5), true);
        assert.equal(await store.revokeCertificate('0a02', T0 + 6), false);

        assert.deepEqual(await store.revokeIdentity('alice', T0 + 10), ['0a01']);
        assert.equal((await store.getIdentityByName('alice'))?.revokedAt, T0 + 10);
        assert.equal(await store.isSerialRevoked('0A01'), true);
        assert.equal(await store.isSerialRevoked('0b01'), false);
        assert.equal(
          await store.isSerialRevoked('ffff'),
          false,
          'a serial never issued here is not on the list',
        );
        assert.deepEqual(await store.listRevokedSerials(), ['0a01', '0a02']);
        assert.equal((await store.getCertificate('0a02'))?.revokedAt, T0 + 5);

        // Revoking again changes nothing and reports nothing new.
        assert.deepEqual(await store.revokeIdentity('alice', T0 + 20), []);
        assert.equal((await store.getIdentityByName('alice'))?.revokedAt, T0 + 10);
        // The store records; auditing is the caller's: nothing was written to the log.
        assert.deepEqual(await store.listAudit(), []);
        await assert.rejects(store.revokeIdentity('carol', T0), refusedWith('not-found', 'name', /"carol"/));
        await assert.rejects(
          store.setIdentityPublicKey('alice', publicKey()),
          refusedWith('invalid', 'name', /revoked/),
        );
      });

      test('listRevokedSerials can leave out certificates that have expired anyway', async () => {
        const alice = await store.createIdentity({ name: 'alice', kind: 'device' });
        await store.recordCertificate({
          serial: '01',
          identityId: alice.id,
          notBefore: T0,
          notAfter: T0 + 1000,
          pem: PEM,
        });
        await store.recordCertificate({
          serial: '02',
          identityId: alice.id,
          notBefore: T0,
          notAfter: T0 + 9000,
          pem: PEM,
        });
        await store.revokeIdentity('alice', T0 + 10);
        assert.deepEqual(await store.listRevokedSerials(T0 + 5000), ['02']);
      });

      test('recordCertificate refuses a repeated serial, an unknown identity and a bad validity', async () => {
        const alice = await store.createIdentity({ name: 'alice', kind: 'device' });
        const base = { serial: '01', identityId: alice.id, notBefore: T0, notAfter: T0 + 1000, pem: PEM };
        await store.recordCertificate(base);
        await assert.rejects(store.recordCertificate(base), refusedWith('duplicate', 'serial', /serial 01/));
        await assert.rejects(
          store.recordCertificate({ ...base, serial: '02', identityId: 'ab'.repeat(16) }),
          refusedWith('not-found', 'identityId', /no identity/),
        );
        await assert.rejects(
          store.recordCertificate({ ...base, serial: '02', notAfter: T0 }),
          refusedWith('invalid', 'notAfter', /later than notBefore/),
        );
        await assert.rejects(
          store.recordCertificate({ ...base, serial: 'xyz' }),
          refusedWith('invalid', 'serial', /hex/),
        );
        await assert.rejects(
          store.recordCertificate({ ...base, serial: '02', pem: 'hello' }),
          refusedWith('invalid', 'pem', /PEM/),
        );
      });
    });

    describe('sessions', () => {
      test('open, list, close once, and close all of an identity', async () => {
        const { gateway, service } = await gatewayAndService();
        const alice = await store.createIdentity({ name: 'alice', kind: 'device' });
        const ids = { identityId: alice.id, gatewayId: gateway.id, serviceId: service.id };
        const first = await store.openSession({ ...ids, source: '192.0.2.10' });
        assert.equal(first.openedAt, T0);
        assert.equal(first.closedAt, null);
        const second = await store.openSession({ ...ids, source: '2001:db8::10', openedAt: T0 + 1 });
        const third = await store.openSession({ ...ids, source: '192.0.2.11', openedAt: T0 + 2 });

        assert.equal(await store.closeSession(first.id, T0 + 100, 'expired'), true);
        assert.equal(await store.closeSession(first.id, T0 + 200, 'revoked'), false);
        assert.deepEqual(
          (await store.listSessions({ open: true })).map((session) => session.id),
          [second.id, third.id],
        );
        const [closed] = await store.listSessions({ open: false });
        assert.equal(closed?.closeReason, 'expired');
        assert.equal(closed?.closedAt, T0 + 100);

        assert.deepEqual(
          await store.closeSessionsOf(alice.id, T0 + 300, 'revoked'),
          [second.id, third.id].sort(),
        );
        assert.deepEqual(await store.listSessions({ open: true }), []);
        assert.equal((await store.listSessions({ identityId: alice.id })).length, 3);
        assert.equal((await store.listSessions()).length, 3);
      });

      test('openSession names the missing reference and refuses a source that is not an address', async () => {
        const { gateway, service } = await gatewayAndService();
        const alice = await store.createIdentity({ name: 'alice', kind: 'device' });
        const ids = {
          identityId: alice.id,
          gatewayId: gateway.id,
          serviceId: service.id,
          source: '192.0.2.10',
        };
        await assert.rejects(
          store.openSession({ ...ids, serviceId: 'cd'.repeat(16) }),
          refusedWith('not-found', 'serviceId', /no service/),
        );
        await assert.rejects(
          store.openSession({ ...ids, gatewayId: 'cd'.repeat(16) }),
          refusedWith('not-found', 'gatewayId', /no gateway/),
        );
        await assert.rejects(
          store.openSession({ ...ids, source: 'example.com' }),
          refusedWith('invalid', 'source', /IPv4 or IPv6/),
        );
        await assert.rejects(
          store.closeSession('cd'.repeat(16), T0, 'x'),
          refusedWith('not-found', 'id', /no session/),
        );
        assert.deepEqual(await store.listSessions(), []);
      });
    });

    describe('gateway links', () => {
      test('hello records the endpoint; seen and disconnected follow the newest link only', async () => {
        await store.createGateway({ name: 'branch-1', publicKey: publicKey() });
        const endpoint = { host: 'gw.example.org', spaPort: 62201, tunnelPort: 8443 };
        const up = await store.recordGatewayConnected('branch-1', endpoint, T0 + 10);
        assert.deepEqual(up.endpoint, endpoint);
        assert.equal(up.connectedAt, T0 + 10);
        assert.equal(up.lastSeenAt, T0 + 10);
        await store.markGatewaysSeen(['branch-1'], T0 + 20);
        await store.markGatewaysSeen(['branch-1'], T0 + 15); // late news never moves it back
        assert.equal((await store.getGatewayByName('branch-1'))?.lastSeenAt, T0 + 20);
        // A newer link (say, on another controller) took over; the old one's end changes nothing.
        await store.recordGatewayConnected('branch-1', { ...endpoint, host: '192.0.2.7' }, T0 + 30);
        await store.recordGatewayDisconnected('branch-1', T0 + 10, T0 + 40);
        let now = (await store.getGatewayByName('branch-1'))!;
        assert.equal(now.disconnectedAt, null);
        assert.equal(now.endpoint?.host, '192.0.2.7');
        await store.recordGatewayDisconnected('branch-1', T0 + 30, T0 + 50);
        now = (await store.getGatewayByName('branch-1'))!;
        assert.equal(now.disconnectedAt, T0 + 50);
        assert.equal(now.lastSeenAt, T0 + 50);
        assert.deepEqual(now.endpoint, { ...endpoint, host: '192.0.2.7' }, 'the endpoint outlives the link');
      });

      test('endpoints and names are checked, naming the field', async () => {
        await store.createGateway({ name: 'branch-1' });
        const endpoint = { host: 'gw.example.org', spaPort: 62201, tunnelPort: 8443 };
        await assert.rejects(
          store.recordGatewayConnected('branch-1', { ...endpoint, tunnelPort: 0 }, T0),
          refusedWith('invalid', 'endpoint.tunnelPort', /1 to 65535/),
        );
        await assert.rejects(
          store.recordGatewayConnected('branch-1', { ...endpoint, host: 'bad host' }, T0),
          refusedWith('invalid', 'endpoint.host', /host name or an IP address/),
        );
        await assert.rejects(
          store.recordGatewayConnected('branch-9', endpoint, T0),
          refusedWith('not-found', 'name', /"branch-9"/),
        );
        await assert.rejects(
          store.markGatewaysSeen(['a b'], T0),
          refusedWith('invalid', 'names[0]', /letters/),
        );
      });
    });

    describe('revocation and disabling with their audit entry', () => {
      async function userWithDevices() {
        const { gateway, service } = await gatewayAndService();
        await store.createIdentity({ name: 'alice', kind: 'user' });
        const keys = [publicKey(), publicKey()];
        const laptop = await store.createIdentity({
          name: 'alice-laptop',
          kind: 'device',
          owner: 'alice',
          publicKey: keys[0],
        });
        const phone = await store.createIdentity({
          name: 'alice-phone',
          kind: 'device',
          owner: 'alice',
          publicKey: keys[1],
        });
        const bob = await store.createIdentity({ name: 'bob', kind: 'device', publicKey: publicKey() });
        const validity = { notBefore: T0, notAfter: T0 + 86_400_000, pem: PEM };
        await store.recordCertificate({ serial: '0a01', identityId: laptop.id, ...validity });
        await store.recordCertificate({ serial: '0a02', identityId: phone.id, ...validity });
        await store.recordCertificate({ serial: '0b01', identityId: bob.id, ...validity });
        const ids = { gatewayId: gateway.id, serviceId: service.id, source: '192.0.2.10' };
        const sessions = [
          await store.openSession({ ...ids, identityId: laptop.id }),
          await store.openSession({ ...ids, identityId: phone.id }),
          await store.openSession({ ...ids, identityId: bob.id }),
        ];
        return { laptop, phone, bob, sessions };
      }

      test('revoking a user revokes its devices, their certificates and sessions, audited at once', async () => {
        const { laptop, phone, sessions } = await userWithDevices();
        const change = await store.revokeIdentityWithDevices('alice', T0 + 10, 'cli');
        assert.deepEqual(change.identities, [
          { name: 'alice', keyId: null },
          { name: 'alice-laptop', keyId: laptop.keyId },
          { name: 'alice-phone', keyId: phone.keyId },
        ]);
        assert.deepEqual(change.serials, ['0a01', '0a02']);
        assert.deepEqual(change.sessions, [sessions[0]!.id, sessions[1]!.id].sort());
        assert.equal(change.audit.action, 'identity.revoke');
        assert.equal(change.audit.actor, 'cli');
        assert.equal(change.audit.subject, 'alice');
        assert.deepEqual(change.audit.details, {
          identities: ['alice', 'alice-laptop', 'alice-phone'],
          keyIds: [laptop.keyId, phone.keyId],
          serials: ['0a01', '0a02'],
          sessions: change.sessions,
        });
        assert.deepEqual(await store.listAudit(), [change.audit]);
        for (const name of ['alice', 'alice-laptop', 'alice-phone'])
          assert.equal((await store.getIdentityByName(name))?.revokedAt, T0 + 10, name);
        assert.equal((await store.getIdentityByName('bob'))?.revokedAt, null);
        assert.deepEqual(
          (await store.listSessions({ open: true })).map((session) => session.id),
          [sessions[2]!.id],
        );
        assert.equal((await store.listSessions({ open: false }))[0]?.closeReason, 'identity revoked');
        await assert.rejects(
          store.revokeIdentityWithDevices('carol', T0, 'cli'),
          refusedWith('not-found', 'name', /"carol"/),
        );
        assert.equal((await store.listAudit()).length, 1, 'a refusal writes no audit entry');
      });

      test('disabling a user closes its devices’ sessions; enabling closes nothing', async () => {
        const { laptop, phone, sessions } = await userWithDevices();
        const off = await store.setIdentityDisabledWithDevices('alice', true, T0 + 10, 'cli');
        assert.equal(off.audit.action, 'identity.disable');
        assert.deepEqual(off.audit.details.keyIds, [laptop.keyId, phone.keyId]);
        assert.deepEqual(off.sessions, [sessions[0]!.id, sessions[1]!.id].sort());
        assert.equal((await store.getIdentityByName('alice'))?.disabled, true);
        assert.equal(
          (await store.getIdentityByName('alice-laptop'))?.disabled,
          false,
          'a device is shut out by its owner, not marked itself',
        );
        const on = await store.setIdentityDisabledWithDevices('alice', false, T0 + 20, 'cli');
        assert.equal(on.audit.action, 'identity.enable');
        assert.deepEqual([on.sessions, on.audit.details.keyIds], [[], []]);
        assert.equal((await store.getIdentityByName('alice'))?.disabled, false);
      });

      test('revoking one certificate names its identity but ends no session', async () => {
        const { laptop } = await userWithDevices();
        const change = await store.revokeCertificateWithAudit('0A01', T0 + 10, 'cli');
        assert.deepEqual(change.identities, [{ name: 'alice-laptop', keyId: laptop.keyId }]);
        assert.deepEqual([change.serials, change.sessions], [['0a01'], []]);
        assert.deepEqual(change.audit.details, {
          identities: ['alice-laptop'],
          keyIds: [],
          serials: ['0a01'],
          sessions: [],
        });
        assert.equal(await store.isSerialRevoked('0a01'), true);
        assert.equal((await store.listSessions({ open: true })).length, 3);
        const again = await store.revokeCertificateWithAudit('0a01', T0 + 20, 'cli');
        assert.deepEqual(again.serials, [], 'already revoked: nothing new to push');
        await assert.rejects(
          store.revokeCertificateWithAudit('ffff', T0, 'cli'),
          refusedWith('not-found', 'serial', /ffff/),
        );
      });
    });

    describe('decision batches', () => {
      test('sessions and audit entries of many decisions are written together, or not at all', async () => {
        const { gateway, service } = await gatewayAndService();
        const alice = await store.createIdentity({ name: 'alice', kind: 'device' });
        const chosen = 'ab'.repeat(16);
        const session = {
          id: chosen,
          identityId: alice.id,
          gatewayId: gateway.id,
          serviceId: service.id,
          source: '192.0.2.10',
        };
        const knock = (decision: 'allow' | 'deny') => ({
          actor: 'gateway:branch-1',
          action: 'knock',
          subject: 'alice',
          decision,
          reason: decision === 'allow' ? 'policy p' : 'no policy',
        });
        const written = await store.recordDecisions({
          sessions: [session, { ...session, id: undefined, source: '192.0.2.11' }],
          audit: [knock('allow'), knock('deny'), knock('allow')],
        });
        assert.equal(written.sessionIds[0], chosen);
        const second = (await store.listSessions()).find((s) => s.id === written.sessionIds[1]);
        assert.equal(second?.source, '192.0.2.11');
        assert.deepEqual(written.auditSeqs, [1, 2, 3]);
        assert.deepEqual(
          (await store.listAudit()).map((entry) => entry.decision),
          ['allow', 'deny', 'allow'],
        );
        assert.equal(await store.lastAuditSeq(), 3);
        await assert.rejects(
          store.recordDecisions({
            sessions: [{ ...session, id: 'cd'.repeat(16), serviceId: 'ef'.repeat(16) }],
            audit: [knock('allow')],
          }),
          (error: unknown) => error instanceof StoreError && error.code === 'not-found',
        );
        await assert.rejects(
          store.recordDecisions({ sessions: [], audit: [knock('allow'), { ...knock('deny'), actor: '' }] }),
          refusedWith('invalid', 'audit[1].actor', /1-256/),
        );
        await assert.rejects(
          store.recordDecisions({ sessions: [session], audit: [] }),
          (error: unknown) => error instanceof StoreError && error.code === 'duplicate',
        );
        assert.equal(await store.lastAuditSeq(), 3, 'the failed batches wrote nothing');
        assert.equal((await store.listSessions()).length, 2);
      });

      test('a watcher hears of appends after they commit', async () => {
        let heard = 0;
        const watch = await store.watchAudit(() => {
          heard++;
        });
        try {
          assert.ok(watch.pollMs > 0 && watch.pollMs <= 1000);
          assert.equal(await store.lastAuditSeq(), 0);
          await store.appendAudit({ actor: 'cli', action: 'x', subject: 'y' });
          const deadline = Date.now() + 5000;
          while (heard === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
          assert.ok(heard > 0);
          assert.equal(await store.lastAuditSeq(), 1);
        } finally {
          await watch.close();
        }
      });
    });

    describe('audit log', () => {
      test('entries get strictly increasing sequence numbers and read back from a position', async () => {
        const seqs: number[] = [];
        for (let index = 0; index < 5; index++) {
          const entry = await store.appendAudit({
            actor: 'gateway:branch-1',
            action: 'knock',
            subject: 'alice',
            decision: index % 2 === 0 ? 'allow' : 'deny',
            reason: index % 2 === 0 ? 'policy 1' : 'outside hours',
            details: { index, source: '192.0.2.10' },
          });
          seqs.push(entry.seq);
        }
        assert.deepEqual(seqs, [1, 2, 3, 4, 5]);
        const tail = await store.listAudit(3);
        assert.deepEqual(
          tail.map((entry) => entry.seq),
          [4, 5],
        );
        assert.deepEqual(tail[0], {
          seq: 4,
          at: T0,
          actor: 'gateway:branch-1',
          action: 'knock',
          subject: 'alice',
          decision: 'deny',
          reason: 'outside hours',
          details: { index: 3, source: '192.0.2.10' },
        });
        assert.deepEqual(
          (await store.listAudit(0, 2)).map((entry) => entry.seq),
          [1, 2],
        );
        const plain = await store.appendAudit({
          at: T0 + 9,
          actor: 'cli',
          action: 'identity.revoke',
          subject: 'alice',
        });
        assert.deepEqual([plain.seq, plain.decision, plain.reason, plain.details], [6, null, null, {}]);
      });

      test('malformed entries are refused, naming the field', async () => {
        await assert.rejects(
          store.appendAudit({ actor: '', action: 'knock', subject: 'alice' }),
          refusedWith('invalid', 'actor', /1-256/),
        );
        await assert.rejects(
          store.appendAudit({
            actor: 'cli',
            action: 'knock',
            subject: 'alice',
            decision: 'maybe' as 'allow',
          }),
          refusedWith('invalid', 'decision', /allow, deny/),
        );
        await assert.rejects(
          store.appendAudit({
            actor: 'cli',
            action: 'knock',
            subject: 'alice',
            details: { blob: 'x'.repeat(20_000) },
          }),
          refusedWith('invalid', 'details', /16384 bytes/),
        );
        await assert.rejects(store.listAudit(-1), refusedWith('invalid', 'afterSeq', /0 or more/));
        assert.deepEqual(await store.listAudit(), []);
      });
    });

    describe('attestation records', () => {
      const digest = (byte: string, bytes = 32) => byte.repeat(bytes * 2);
      const quoted = { bank: 'sha256' as const, pcrs: { '0': digest('a'), '7': digest('b') } };
      const drifted = { bank: 'sha256' as const, pcrs: { '0': digest('a'), '7': digest('c') } };
      const root = (fingerprint: string, subject = 'CN=Infineon OPTIGA(TM) RSA Root CA') => ({
        fingerprint,
        pem: PEM,
        subject,
        issuer: subject,
        notAfter: T0 + 1_000_000,
      });
      const actions = async (prefix: string) =>
        (await store.listAudit())
          .filter((entry) => entry.action.startsWith(prefix))
          .map((entry) => [entry.action, entry.subject, entry.at, entry.actor]);

      test('a gateway starts unattested; awaiting approval, an operator approves its PCRs as golden', async () => {
        await store.createGateway({ name: 'branch-1', publicKey: publicKey() });
        assert.deepEqual((await store.getGatewayByName('branch-1'))?.attestation, {
          state: 'unattested',
          pcrs: null,
          firmwareVersion: null,
          golden: null,
          quarantineReason: null,
          changedAt: null,
        });
        await assert.rejects(
          store.approveGateway('branch-1', 500, 'cli'),
          refusedWith(
            'invalid',
            'name',
            /"branch-1" is unattested, not awaiting approval: it has not attested/,
          ),
        );
        const awaiting = await store.recordGatewayAttestation(
          'branch-1',
          {
            state: 'awaiting-approval',
            pcrs: { bank: 'sha256', pcrs: { '7': digest('B'), '0': digest('A') } },
          },
          1_000,
          'gateway:branch-1',
        );
        assert.deepEqual(awaiting.attestation, {
          state: 'awaiting-approval',
          pcrs: quoted,
          firmwareVersion: null,
          golden: null,
          quarantineReason: null,
          changedAt: 1_000,
        });
        const approved = await store.approveGateway('branch-1', 2_000, 'cli');
        assert.equal(approved.attestation.state, 'approved');
        assert.deepEqual(approved.attestation.golden, quoted);
        assert.equal(approved.attestation.changedAt, 2_000);
        await assert.rejects(
          store.approveGateway('branch-1', 3_000, 'cli'),
          refusedWith('invalid', 'name', /is approved, not awaiting approval: it is already approved/),
        );
        await assert.rejects(
          store.approveGateway('nobody', 3_000, 'cli'),
          refusedWith('not-found', 'name', /nobody/),
        );
        assert.deepEqual(await actions('gateway.'), [
          ['gateway.attest', 'branch-1', 1_000, 'gateway:branch-1'],
          ['gateway.approve', 'branch-1', 2_000, 'cli'],
        ]);
        const [attest, approve] = (await store.listAudit()).filter((e) => e.action.startsWith('gateway.'));
        assert.deepEqual(attest?.details, { state: 'awaiting-approval', bank: 'sha256', pcrs: quoted.pcrs });
        assert.deepEqual(approve?.details, { bank: 'sha256', pcrs: quoted.pcrs });
      });

      test('an approved attestation records its PCRs as golden; a quarantine holds until released', async () => {
        await store.createGateway({ name: 'branch-1', publicKey: publicKey() });
        const approved = await store.recordGatewayAttestation(
          'branch-1',
          { state: 'approved', pcrs: quoted, firmwareVersion: '2.4.1' },
          1_000,
          'controller',
        );
        assert.deepEqual(
          [approved.attestation.state, approved.attestation.golden, approved.attestation.firmwareVersion],
          ['approved', quoted, '2.4.1'],
        );
        const quarantined = await store.recordGatewayAttestation(
          'branch-1',
          { state: 'quarantined', pcrs: drifted, reason: 'PCR 7 differs from its golden value' },
          2_000,
          'controller',
        );
        assert.deepEqual(
          [quarantined.attestation.state, quarantined.attestation.quarantineReason],
          ['quarantined', 'PCR 7 differs from its golden value'],
        );
        assert.deepEqual(quarantined.attestation.golden, quoted, 'a drift leaves the golden values alone');
        // An attestation cannot end a quarantine, even one that matches again: only an operator can.
        const still = await store.recordGatewayAttestation(
          'branch-1',
          { state: 'approved', pcrs: quoted },
          3_000,
          'controller',
        );
        assert.deepEqual(
          [still.attestation.state, still.attestation.quarantineReason, still.attestation.changedAt],
          ['quarantined', 'PCR 7 differs from its golden value', 2_000],
        );
        const [, , third] = (await store.listAudit()).filter((e) => e.action === 'gateway.attest');
        assert.deepEqual([third?.details.state, third?.details.concluded], ['quarantined', 'approved']);
        // Its last quote matches its golden values again: released, it is approved.
        const released = await store.releaseGateway('branch-1', 4_000, 'cli');
        assert.deepEqual(
          [released.attestation.state, released.attestation.quarantineReason],
          ['approved', null],
        );
        await assert.rejects(
          store.releaseGateway('branch-1', 5_000, 'cli'),
          refusedWith('invalid', 'name', /is approved, not quarantined; nothing to release/),
        );
        await assert.rejects(
          store.recordGatewayAttestation('branch-1', { state: 'quarantined', pcrs: drifted }, 5_000, 'x'),
          refusedWith('invalid', 'attestation.reason', /needs a reason/),
        );
      });

      test('released with drifted PCRs, a gateway awaits approval of them; never attested, it is unattested', async () => {
        await store.createGateway({ name: 'branch-1', publicKey: publicKey() });
        await store.createGateway({ name: 'branch-2', publicKey: publicKey() });
        await store.recordGatewayAttestation('branch-1', { state: 'approved', pcrs: quoted }, 1_000, 'c');
        await store.recordGatewayAttestation(
          'branch-1',
          { state: 'quarantined', pcrs: drifted, reason: 'drift' },
          2_000,
          'c',
        );
        const released = await store.releaseGateway('branch-1', 3_000, 'cli');
        assert.equal(released.attestation.state, 'awaiting-approval');
        const approved = await store.approveGateway('branch-1', 4_000, 'cli');
        assert.deepEqual(approved.attestation.golden, drifted);

        const once = await store.quarantineGateway('branch-2', 'reported stolen', 1_000, 'cli');
        assert.deepEqual(
          [once.attestation.state, once.attestation.quarantineReason],
          ['quarantined', 'reported stolen'],
        );
        const twice = await store.quarantineGateway('branch-2', 'again', 2_000, 'cli');
        assert.deepEqual(twice, once, 'a second quarantine changes nothing');
        assert.deepEqual(await actions('gateway.quarantine'), [
          ['gateway.quarantine', 'branch-2', 1_000, 'cli'],
        ]);
        assert.equal((await store.releaseGateway('branch-2', 3_000, 'cli')).attestation.state, 'unattested');
        assert.deepEqual(
          (await store.listAudit()).filter((e) => e.action === 'gateway.release').map((e) => e.details),
          [
            { state: 'awaiting-approval', reason: 'drift' },
            { state: 'unattested', reason: 'reported stolen' },
          ],
        );
      });

      test('attestations are checked, naming the field; a revoked gateway is refused', async () => {
        await store.createGateway({ name: 'branch-1', publicKey: publicKey() });
        const cases: [unknown, string, RegExp][] = [
          [
            { state: 'unattested', pcrs: quoted },
            'attestation.state',
            /awaiting-approval, approved, quarantined/,
          ],
          [
            { state: 'approved', pcrs: { bank: 'md5', pcrs: {} } },
            'attestation.pcrs.bank',
            /sha1, sha256, sha384/,
          ],
          [
            { state: 'approved', pcrs: { bank: 'sha256', pcrs: {} } },
            'attestation.pcrs.pcrs',
            /at least one/,
          ],
          [
            { state: 'approved', pcrs: { bank: 'sha256', pcrs: { '24': digest('a') } } },
            'attestation.pcrs.pcrs',
            /PCR index "24" is not one of 0 to 23/,
          ],
          [
            { state: 'approved', pcrs: { bank: 'sha1', pcrs: { '0': digest('a') } } },
            'attestation.pcrs.pcrs.0',
            /a sha1 digest is 20 bytes \(40 hex digits\)/,
          ],
          [
            { state: 'approved', pcrs: quoted, firmwareVersion: 'two words' },
            'attestation.firmwareVersion',
            /"two words"/,
          ],
        ];
        for (const [attestation, field, message] of cases)
          await assert.rejects(
            store.recordGatewayAttestation('branch-1', attestation as never, 1_000, 'c'),
            refusedWith('invalid', field, message),
          );
        await store.revokeGateway('branch-1', 1_000, 'cli');
        await assert.rejects(
          store.quarantineGateway('branch-1', 'drift', 2_000, 'c'),
          refusedWith('invalid', 'name', /"branch-1" is revoked/),
        );
        assert.deepEqual(await actions('gateway.attest'), []);
      });

      test('EK roots: added together with an entry each, a duplicate refuses the lot, removed by fingerprint', async () => {
        const a = 'a1'.repeat(32);
        const b = 'b2'.repeat(32);
        const added = await store.addEkRoots(
          [root(a.toUpperCase()), root(b, 'CN=STMicro TPM ECC Root CA')],
          1_000,
          'cli',
        );
        assert.deepEqual(
          added.map((r) => [r.fingerprint, r.addedAt]),
          [
            [a, 1_000],
            [b, 1_000],
          ],
        );
        assert.deepEqual(
          (await store.listEkRoots()).map((r) => r.subject),
          ['CN=Infineon OPTIGA(TM) RSA Root CA', 'CN=STMicro TPM ECC Root CA'],
        );
        const c = 'c3'.repeat(32);
        await assert.rejects(
          store.addEkRoots([root(c), root(a)], 2_000, 'cli'),
          refusedWith('duplicate', 'roots[1]', /roots\[1\]: .*Infineon.*already trusted/),
        );
        await assert.rejects(
          store.addEkRoots([root(c), root(c)], 2_000, 'cli'),
          refusedWith('duplicate', 'roots[1]', /already trusted or listed twice/),
        );
        assert.equal((await store.listEkRoots()).length, 2, 'a refused file adds nothing');
        await assert.rejects(
          store.addEkRoots([{ ...root(c), fingerprint: 'zz' }], 2_000, 'cli'),
          refusedWith('invalid', 'roots[0].fingerprint', /64 hex digits/),
        );
        await assert.rejects(
          store.addEkRoots([], 2_000, 'cli'),
          refusedWith('invalid', 'roots', /at least one/),
        );
        const colons = b.match(/../g)!.join(':').toUpperCase();
        assert.equal((await store.removeEkRoot(colons, 3_000, 'cli')).fingerprint, b);
        await assert.rejects(
          store.removeEkRoot(b, 4_000, 'cli'),
          refusedWith('not-found', 'fingerprint', /no EK root with fingerprint b2b2/),
        );
        assert.deepEqual(await actions('ekca.'), [
          ['ekca.add', a, 1_000, 'cli'],
          ['ekca.add', b, 1_000, 'cli'],
          ['ekca.remove', b, 3_000, 'cli'],
        ]);
      });

      test('golden PCR values per firmware version: one set per version, checked, listed and removed', async () => {
        const added = await store.addFirmwarePcrs({ version: '2.4.1', ...quoted }, 1_000, 'cli');
        assert.deepEqual(added, { version: '2.4.1', ...quoted, addedAt: 1_000 });
        await store.addFirmwarePcrs(
          { version: '2.5.0+b7', bank: 'sha384', pcrs: { '0': digest('d', 48) } },
          1_500,
          'cli',
        );
        await assert.rejects(
          store.addFirmwarePcrs({ version: '2.4.1', ...drifted }, 2_000, 'cli'),
          refusedWith('duplicate', 'version', /"2.4.1" already has golden PCR values; remove them first/),
        );
        await assert.rejects(
          store.addFirmwarePcrs({ version: '3', bank: 'sha384', pcrs: { '0': digest('d') } }, 2_000, 'cli'),
          refusedWith('invalid', 'pcrs.0', /a sha384 digest is 48 bytes/),
        );
        await assert.rejects(
          store.addFirmwarePcrs({ version: '', ...quoted }, 2_000, 'cli'),
          refusedWith('invalid', 'version', /1-64 letters/),
        );
        assert.deepEqual(
          (await store.listFirmwarePcrs()).map((f) => [f.version, f.bank]),
          [
            ['2.4.1', 'sha256'],
            ['2.5.0+b7', 'sha384'],
          ],
        );
        assert.deepEqual(await store.removeFirmwarePcrs('2.4.1', 3_000, 'cli'), added);
        await assert.rejects(
          store.removeFirmwarePcrs('2.4.1', 3_000, 'cli'),
          refusedWith('not-found', 'version', /no golden PCR values for firmware version "2.4.1"/),
        );
        assert.deepEqual(await actions('firmware.'), [
          ['firmware.pcrs.add', '2.4.1', 1_000, 'cli'],
          ['firmware.pcrs.add', '2.5.0+b7', 1_500, 'cli'],
          ['firmware.pcrs.remove', '2.4.1', 3_000, 'cli'],
        ]);
      });
    });
  });
}
