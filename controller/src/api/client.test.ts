// The client API over real mutual TLS: a device finds a service's gateway and renews its
// certificate with the identity certificate it enrolled with, and nobody else gets in.

import assert from 'node:assert/strict';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { request } from 'node:https';
import { after, before, test } from 'node:test';
import { createCertificateRequest, encodeKey } from '@umbra/protocol';
import {
  enrollTestDevice,
  enrollTestGateway,
  helloLink,
  startTestController,
  type TestController,
  type TestDevice,
  type TestGateway,
} from '../link/test-fixture.ts';

let controller: TestController;
let alice: TestDevice;
let branch: TestGateway;

before(async () => {
  controller = await startTestController();
  branch = await enrollTestGateway(controller.data, 'branch-1');
  await enrollTestGateway(controller.data, 'branch-quiet');
  const { store } = controller.data;
  await store.createService({ name: 'db', gateway: 'branch-1', backend: '10.0.0.5:5432' });
  await store.createService({ name: 'ssh', gateway: 'branch-1', backend: '10.0.0.6:2222', mode: 'direct' });
  await store.createService({ name: 'quiet', gateway: 'branch-quiet', backend: '10.0.2.5:80' });
  alice = await enrollTestDevice(controller.data, 'alice-laptop');
});

after(async () => {
  await controller?.close();
});

interface Answer {
  status: number;
  body: Record<string, unknown>;
}

function call(
  method: 'GET' | 'POST',
  path: string,
  options: { as?: { key: string; certificate: string }; body?: unknown } = {},
): Promise<Answer> {
  const payload = options.body === undefined ? undefined : JSON.stringify(options.body);
  return new Promise((resolve, reject) => {
    const req = request(
      `${controller.url}${path}`,
      {
        method,
        ca: controller.data.ca.pem,
        ...(options.as ? { key: options.as.key, cert: options.as.certificate } : {}),
        headers: payload === undefined ? {} : { 'content-type': 'application/json' },
      },
      (response) => {
        let text = '';
        response.on('data', (chunk) => {
          text += chunk;
        });
        response.on('end', () => resolve({ status: response.statusCode ?? 0, body: JSON.parse(text) }));
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

test('a service answers with its gateway once the gateway has said where it is', async () => {
  const before = await call('GET', '/v1/client/services/db', { as: alice });
  assert.equal(before.status, 409);
  assert.match(String(before.body.error), /gateway branch-1 has never connected/);

  const { link } = await helloLink(controller, branch, {
    host: 'gw1.example.org',
    spaPort: 62201,
    tunnelPort: 8443,
  });
  try {
    const tunnel = await call('GET', '/v1/client/services/db', { as: alice });
    assert.equal(tunnel.status, 200);
    assert.deepEqual(tunnel.body, {
      service: 'db',
      mode: 'tunnel',
      access: 'tcp/8443',
      gateway: {
        name: 'branch-1',
        host: 'gw1.example.org',
        spaPort: 62201,
        tunnelPort: 8443,
        spaPublicKey: encodeKey(branch.spa.publicKey),
      },
    });
    const direct = await call('GET', '/v1/client/services/ssh', { as: alice });
    assert.equal(direct.body.access, 'tcp/2222');
  } finally {
    await link.close();
  }
  const unknown = await call('GET', '/v1/client/services/nope', { as: alice });
  assert.equal(unknown.status, 404);
  assert.match(String(unknown.body.error), /service nope: no such service/);
  const quiet = await call('GET', '/v1/client/services/quiet', { as: alice });
  assert.equal(quiet.status, 409);
  const malformed = await call('GET', '/v1/client/services/bad%20name', { as: alice });
  assert.equal(malformed.status, 400);
  assert.match(String(malformed.body.error), /name/);
});

test('without a certificate, with a gateway certificate, or as a revoked or disabled identity: refused', async () => {
  const none = await call('GET', '/v1/client/services/db');
  assert.equal(none.status, 401);
  assert.match(String(none.body.error), /device certificate from `umbra enroll`/);
  const asGateway = await call('GET', '/v1/client/services/db', { as: branch });
  assert.equal(asGateway.status, 401);

  const bob = await enrollTestDevice(controller.data, 'bob-laptop');
  await controller.data.store.setIdentityDisabledWithDevices('bob-laptop', true, Date.now(), 'test');
  const disabled = await call('GET', '/v1/client/services/db', { as: bob });
  assert.equal(disabled.status, 403);
  assert.match(String(disabled.body.error), /bob-laptop is disabled/);

  const carol = await enrollTestDevice(controller.data, 'carol-laptop');
  await controller.data.store.revokeCertificateWithAudit(carol.serial, Date.now(), 'test');
  const revoked = await call('GET', '/v1/client/services/db', { as: carol });
  assert.equal(revoked.status, 401);
  assert.match(String(revoked.body.error), /revoked/);
});

test('renew issues a new certificate for the same identity and records it', async () => {
  const key = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const csr = await createCertificateRequest(key.privateKey);
  const renewed = await call('POST', '/v1/client/renew', { as: alice, body: { csr } });
  assert.equal(renewed.status, 200);
  const certificate = new X509Certificate(String(renewed.body.certificate));
  assert.match(certificate.subjectAltName ?? '', /umbra:\/\/identity\/alice-laptop/);
  assert.equal(new Date(String(renewed.body.notAfter)).getTime(), new Date(certificate.validTo).getTime());
  const serial = certificate.serialNumber.toLowerCase();
  assert.ok(await controller.data.store.getCertificate(serial));
  const [entry] = (await controller.data.store.listAudit(0, 10_000)).filter(
    (audit) => audit.action === 'certificate.renew',
  );
  assert.deepEqual([entry?.subject, entry?.details.serial], ['alice-laptop', serial]);

  const noCsr = await call('POST', '/v1/client/renew', { as: alice, body: {} });
  assert.equal(noCsr.status, 400);
  assert.match(String(noCsr.body.error), /csr/);
  const badCsr = await call('POST', '/v1/client/renew', { as: alice, body: { csr: 'hello' } });
  assert.equal(badCsr.status, 400);
  assert.match(String(badCsr.body.error), /^csr: /);
  const anonymous = await call('POST', '/v1/client/renew', { body: { csr } });
  assert.equal(anonymous.status, 401);
});
