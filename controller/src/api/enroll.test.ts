// Enrollment's order of checks: nothing that can be checked without the token spends it, and a
// conflict is a conflict (409), never a crash.

import assert from 'node:assert/strict';
import { generateKeyPairSync, sign } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import {
  ControllerApiError,
  createCertificateRequest,
  createEnrollmentToken,
  encodeKey,
  enrollmentPossessionMessage,
  generateIdentity,
  type Identity,
  postJson,
} from '@umbra/protocol';
import { type DataDir, initDataDir } from '../data-dir.ts';
import { EnrollmentRefused, enroll } from './enroll.ts';

const root = mkdtempSync(join(tmpdir(), 'umbra-enroll-api-'));
let data: DataDir;
after(async () => {
  await data?.store.close();
  rmSync(root, { recursive: true, force: true });
});

before(async () => {
  data = await initDataDir(join(root, 'controller'), 'https://127.0.0.1:9/', 'Test CA');
});

async function tokenFor(name: string): Promise<string> {
  if (!(await data.store.getIdentityByName(name))) await data.store.createIdentity({ name, kind: 'device' });
  const { token, secretHash } = createEnrollmentToken({
    url: data.settings.url,
    pin: data.settings.caPin,
    kind: 'identity',
  });
  await data.store.createEnrollmentToken({
    tokenHash: secretHash,
    kind: 'identity',
    subjectName: name,
    expiresAt: Date.now() + 60_000,
  });
  return token;
}

async function requestFor(token: string, identity: Identity, csr?: string) {
  const request =
    csr ?? (await createCertificateRequest(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey));
  return {
    token,
    identityPublicKey: encodeKey(identity.publicKey),
    identitySignature: sign(null, enrollmentPossessionMessage(token, request), identity.privateKey).toString(
      'base64',
    ),
    csr: request,
  };
}

const refused = (status: number, message: RegExp) => (error: unknown) =>
  error instanceof EnrollmentRefused && error.status === status && message.test(error.message);

test('a bad request, or one without proof of the identity key, does not spend the token', async () => {
  const token = await tokenFor('alice');
  const identity = generateIdentity();
  const good = await requestFor(token, identity);
  await assert.rejects(enroll(data, { ...good, csr: 'not a request' }), refused(400, /csr/));
  const impostor = generateIdentity();
  await assert.rejects(
    enroll(data, { ...good, identityPublicKey: encodeKey(impostor.publicKey) }),
    refused(400, /identitySignature: does not verify/),
  );
  const answer = await enroll(data, good);
  assert.equal(answer.identity, 'alice');
  await assert.rejects(enroll(data, good), refused(403, /already used/));
});

test('registering a key another identity holds is a conflict, not a crash', async () => {
  const shared = generateIdentity();
  await enroll(data, await requestFor(await tokenFor('bob'), shared));
  await assert.rejects(
    enroll(data, await requestFor(await tokenFor('carol'), shared)),
    refused(409, /already belongs to identity "bob"/),
  );
});

test('a disabled identity is refused', async () => {
  const token = await tokenFor('dave');
  await data.store.setIdentityDisabled('dave', true);
  await assert.rejects(enroll(data, await requestFor(token, generateIdentity())), refused(409, /disabled/));
});

test("a gateway's certificate from the same CA does not pass for the controller's", async () => {
  const key = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const gatewayCert = await data.ca.issueGatewayCertificate(key.publicKey, {
    gatewayName: 'localhost',
    ipAddresses: ['127.0.0.1'],
  });
  const impostor = createServer(
    { key: key.privateKey.export({ type: 'pkcs8', format: 'pem' }), cert: gatewayCert.pem },
    (_request, response) => response.end('{}'),
  );
  await new Promise<void>((resolve) => impostor.listen(0, '127.0.0.1', resolve));
  try {
    const { port } = impostor.address() as { port: number };
    await assert.rejects(
      postJson(new URL(`https://127.0.0.1:${port}/v1/enroll`), data.ca.pem, { token: 'secret' }),
      (error: unknown) => error instanceof ControllerApiError && /not the controller's/.test(error.message),
    );
    // The controller's own certificate passes the same check.
    const controllerCert = await data.ca.issueControllerCertificate(key.publicKey, {
      name: 'controller',
      ipAddresses: ['127.0.0.1'],
    });
    const real = createServer(
      { key: key.privateKey.export({ type: 'pkcs8', format: 'pem' }), cert: controllerCert.pem },
      (_request, response) => response.end('{"ok":true}'),
    );
    await new Promise<void>((resolve) => real.listen(0, '127.0.0.1', resolve));
    const realPort = (real.address() as { port: number }).port;
    assert.deepEqual(await postJson(new URL(`https://127.0.0.1:${realPort}/`), data.ca.pem, {}), {
      ok: true,
    });
    await new Promise((resolve) => real.close(resolve));
  } finally {
    await new Promise((resolve) => impostor.close(resolve));
  }
});
