import assert from 'node:assert/strict';
import { createServer as createTcpServer } from 'node:net';
import { after, before, test } from 'node:test';
import { createServer, type PeerCertificate, type TLSSocket } from 'node:tls';
import { createTestPki, type TestPki } from './testdata/pki.ts';
import { DialTimeoutError, dialTunnel, gatewayIdentityCheck, serviceAlpn } from './tunnel-dial.ts';

const peer = (subjectaltname: string) => ({ subjectaltname }) as PeerCertificate;

test('the gateway must be named exactly umbra://gateway/NAME, whatever the host', () => {
  const check = gatewayIdentityCheck('gw1');
  assert.equal(check('192.0.2.1', peer('URI:umbra://gateway/gw1')), undefined);
  assert.equal(check('192.0.2.1', peer('DNS:gw.example, URI:umbra://gateway/gw1')), undefined);
  assert.match(
    check('192.0.2.1', peer('URI:umbra://gateway/gw2'))?.message ?? '',
    /umbra:\/\/gateway\/gw2, not umbra:\/\/gateway\/gw1/,
  );
  assert.ok(
    check('192.0.2.1', peer('URI:umbra://controller/gw1')),
    "the controller's certificate is not a gateway's",
  );
  assert.ok(check('192.0.2.1', peer('URI:umbra://gateway/gw1, URI:umbra://gateway/gw2')), 'two names');
  assert.ok(check('192.0.2.1', peer('URI:umbra://gateway/gw10')));
  assert.ok(check('192.0.2.1', peer('')));
});

let pki: TestPki;
before(() => {
  pki = createTestPki();
});
after(() => pki.remove());

async function gateway(name: string) {
  const { key, cert } = pki.issue(`umbra://gateway/${name}`, { server: true });
  const offered: string[][] = [];
  const server = createServer({
    key,
    cert,
    ca: pki.ca,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.3',
    ALPNCallback: ({ protocols }) => {
      offered.push(protocols);
      return protocols[0];
    },
  });
  server.on('secureConnection', (socket: TLSSocket) => socket.end('hello'));
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
  return { server, offered, port: (server.address() as { port: number }).port };
}

test('dialTunnel offers exactly one ALPN protocol, shows the client certificate, and checks the gateway name', async () => {
  const gw = await gateway('gw1');
  const credentials = { ...pki.issue('umbra://identity/alice'), ca: pki.ca };
  try {
    const socket = await dialTunnel({
      host: '127.0.0.1',
      port: gw.port,
      credentials,
      alpn: serviceAlpn('db'),
      gatewayName: 'gw1',
      timeoutMs: 1000,
    });
    assert.equal(socket.alpnProtocol, 'umbra-svc/db');
    socket.destroy();
    assert.deepEqual(gw.offered, [['umbra-svc/db']]);
    await assert.rejects(
      dialTunnel({
        host: '127.0.0.1',
        port: gw.port,
        credentials,
        alpn: 'umbra-svc/db',
        gatewayName: 'gw2',
        timeoutMs: 1000,
      }),
      /not umbra:\/\/gateway\/gw2/,
    );
  } finally {
    gw.server.close();
  }
});

test('dialTunnel gives up after its timeout when nothing answers (a closed pinhole drops the SYN)', async () => {
  // A TCP listener that never speaks TLS stands in for a SYN that goes unanswered.
  const silent = createTcpServer(() => {});
  await new Promise<void>((resolve) => silent.listen({ host: '127.0.0.1', port: 0 }, resolve));
  const credentials = { ...pki.issue('umbra://identity/alice'), ca: pki.ca };
  const started = Date.now();
  try {
    await assert.rejects(
      dialTunnel({
        host: '127.0.0.1',
        port: (silent.address() as { port: number }).port,
        credentials,
        alpn: 'umbra-svc/db',
        gatewayName: 'gw1',
        timeoutMs: 200,
      }),
      DialTimeoutError,
    );
    assert.ok(Date.now() - started < 1000);
  } finally {
    silent.close();
  }
});
