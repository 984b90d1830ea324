// A device enrolls with a controller over loopback: `umbra-controller serve` and `umbra enroll`,
// black-box. The controller is recognised by the CA pin in the token; the token works once.

import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { request } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CLIENT_BIN, GATEWAY_BIN, REPO_ROOT, TOOL_ENV } from '../src/index.ts';

const CONTROLLER_BIN = join(REPO_ROOT, 'node_modules/.bin/umbra-controller');
const dir = mkdtempSync(join(tmpdir(), 'umbra-enroll-'));
const data = join(dir, 'controller');
let server: ChildProcess;
let url: string;

function run(bin: string, ...args: string[]) {
  const result = spawnSync(bin, args, { env: TOOL_ENV, encoding: 'utf8', timeout: 30_000 });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

function token(...args: string[]): string {
  const result = run(CONTROLLER_BIN, 'token', 'create', '--data', data, ...args);
  assert.equal(result.code, 0, result.stderr);
  return result.stdout.trim();
}

async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as { port: number };
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

before(async () => {
  const port = await freePort();
  url = `https://127.0.0.1:${port}`;
  assert.equal(run(CONTROLLER_BIN, 'init', '--data', data, '--url', url).code, 0);
  server = spawn(CONTROLLER_BIN, ['serve', '--data', data, '--listen', `127.0.0.1:${port}`], {
    env: TOOL_ENV,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // Ready when the log says it listens (bounded: 20 s).
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the controller did not start within 20 s')), 20_000);
    server.stdout!.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes('Server listening')) {
        clearTimeout(timer);
        resolve();
      }
    });
    server.once('exit', (code) => reject(new Error(`the controller exited (${code})`)));
  });
});

after(() => {
  if (server?.pid && server.exitCode === null) process.kill(server.pid, 'SIGTERM');
  rmSync(dir, { recursive: true, force: true });
});

describe('umbra enroll', () => {
  test('enrolls with nothing but the token: keys made here, certificate from the controller', () => {
    const device = join(dir, 'alice');
    const result = run(
      CLIENT_BIN,
      'enroll',
      '--token',
      token('--identity', 'alice', '--group', 'eng'),
      '--dir',
      device,
    );
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /enrolled as alice with https:\/\/127\.0\.0\.1/);
    assert.equal(statSync(device).mode & 0o777, 0o700);
    for (const secret of ['identity', 'tls.key'])
      assert.equal(statSync(join(device, secret)).mode & 0o777, 0o600);
    const verified = spawnSync(
      'openssl',
      ['verify', '-purpose', 'sslclient', '-CAfile', join(device, 'ca.crt'), join(device, 'tls.crt')],
      {
        encoding: 'utf8',
      },
    );
    assert.match(verified.stdout, /OK/, verified.stderr);
    const status = JSON.parse(run(CLIENT_BIN, 'status', '--dir', device).stdout);
    assert.equal(status.identity, 'alice');
    assert.ok(status.certificate.expiresInSeconds > 86_000 && status.certificate.expiresInSeconds <= 86_400);
    // The controller now knows the device's identity key, and only its public half.
    const identities = JSON.parse(run(CONTROLLER_BIN, 'identity', 'list', '--data', data).stdout);
    const alice = identities.find((i: { name: string }) => i.name === 'alice');
    assert.equal(alice.publicKey, JSON.parse(readFileSync(join(device, 'identity'), 'utf8')).publicKey);
    const audit = run(CONTROLLER_BIN, 'audit', '--data', data).stdout;
    assert.match(audit, /"action":"enroll","subject":"alice","decision":"allow"/);
  });

  test('a token works once, expires, and names what is wrong', async () => {
    const once = token('--identity', 'bob');
    assert.equal(run(CLIENT_BIN, 'enroll', '--token', once, '--dir', join(dir, 'bob')).code, 0);
    const again = run(CLIENT_BIN, 'enroll', '--token', once, '--dir', join(dir, 'bob2'));
    assert.equal(again.code, 1);
    assert.match(again.stderr, /this enrollment token was already used; ask for a new one/);

    const short = token('--identity', 'carol', '--ttl', '1s');
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.match(
      run(CLIENT_BIN, 'enroll', '--token', short, '--dir', join(dir, 'carol')).stderr,
      /has expired/,
    );

    const garbage = run(CLIENT_BIN, 'enroll', '--token', 'hello', '--dir', join(dir, 'x'));
    assert.equal(garbage.code, 2);
    assert.match(garbage.stderr, /umbra1\./);

    const gatewayToken = run(
      CONTROLLER_BIN,
      'gateway',
      'token',
      'create',
      '--data',
      data,
      '--name',
      'gw1',
    ).stdout.trim();
    assert.match(
      run(CLIENT_BIN, 'enroll', '--token', gatewayToken, '--dir', join(dir, 'y')).stderr,
      /umbra-gateway enroll/,
    );
  });

  test('a gateway enrolls with its own token: SPA key made here, one certificate for tunnel and link', () => {
    const gatewayToken = run(
      CONTROLLER_BIN,
      'gateway',
      'token',
      'create',
      '--data',
      data,
      '--name',
      'branch1',
    ).stdout.trim();
    const box = join(dir, 'branch1');
    const result = run(GATEWAY_BIN, 'enroll', '--token', gatewayToken, '--dir', box);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout.trim(), /^[A-Za-z0-9+/]{43}=$/, 'prints the SPA public key for clients');
    assert.equal(readFileSync(join(box, 'gateway.pub'), 'utf8').trim(), result.stdout.trim());
    for (const secret of ['gateway.key', 'tls.key'])
      assert.equal(statSync(join(box, secret)).mode & 0o777, 0o600);
    for (const purpose of ['sslserver', 'sslclient']) {
      const verified = spawnSync(
        'openssl',
        ['verify', '-purpose', purpose, '-CAfile', join(box, 'ca.crt'), join(box, 'tls.crt')],
        {
          encoding: 'utf8',
        },
      );
      assert.match(verified.stdout, /OK/, `${purpose}: ${verified.stderr}`);
    }
    assert.match(
      run(CONTROLLER_BIN, 'audit', '--data', data).stdout,
      /"action":"gateway.enroll","subject":"branch1","decision":"allow"/,
    );
    const again = run(GATEWAY_BIN, 'enroll', '--token', gatewayToken, '--dir', join(dir, 'branch1-again'));
    assert.match(again.stderr, /already used/);
    const deviceToken = token('--identity', 'erin');
    assert.match(
      run(GATEWAY_BIN, 'enroll', '--token', deviceToken, '--dir', join(dir, 'z')).stderr,
      /use it with `umbra enroll`/,
    );
  });

  test('a controller whose CA does not match the pin is not trusted, and learns nothing', () => {
    // Another controller with its own CA, claiming the same URL: its token's pin names its CA.
    const impostor = join(dir, 'impostor');
    assert.equal(run(CONTROLLER_BIN, 'init', '--data', impostor, '--url', url).code, 0);
    const foreign = run(
      CONTROLLER_BIN,
      'token',
      'create',
      '--data',
      impostor,
      '--identity',
      'dave',
    ).stdout.trim();
    const result = run(CLIENT_BIN, 'enroll', '--token', foreign, '--dir', join(dir, 'dave'));
    assert.equal(result.code, 1);
    assert.match(result.stderr, /no certificate in its chain matches the token's CA pin/);
    assert.doesNotMatch(run(CONTROLLER_BIN, 'audit', '--data', data).stdout, /dave/);
  });

  test('the API validates every request body and bounds its size', async () => {
    const ca = readFileSync(join(data, 'ca', 'ca.crt'), 'utf8');
    const post = (body: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = request(
          new URL('/v1/enroll', url),
          { method: 'POST', ca, headers: { 'content-type': 'application/json' } },
          (res) => {
            let text = '';
            res.on('data', (chunk) => {
              text += chunk;
            });
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
          },
        );
        req.on('error', reject);
        req.end(body);
      });
    const missing = await post(JSON.stringify({ token: 'x' }));
    assert.equal(missing.status, 400);
    assert.match(missing.body, /identityPublicKey/);
    assert.equal(
      (await post(JSON.stringify({ token: 'x', identityPublicKey: 'y', csr: 'z', extra: 1 }))).status,
      400,
    );
    assert.equal((await post('{not json')).status, 400);
    assert.equal(
      (await post(JSON.stringify({ token: 'x'.repeat(100_000), identityPublicKey: 'y', csr: 'z' }))).status,
      413,
    );
    const badToken = await post(JSON.stringify({ token: 'umbra1.AAAA', identityPublicKey: 'y', csr: 'z' }));
    assert.equal(badToken.status, 400);
    assert.doesNotMatch(badToken.body, /at .*\.ts/, 'no stack traces');
  });
});
