// The tunnel listener over loopback, with certificates from a throwaway CA and a TCP echo server
// as the backend.

import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { after, before, beforeEach, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect, type TLSSocket } from 'node:tls';
import { CONTROL_ALPN, encodeControlFrame } from '@umbra/protocol';
import { pino } from 'pino';
import { type GrantRequest, Grants } from './grants.ts';
import { TunnelListener } from './listener.ts';
import { createTestPki, type Issued, type TestPki } from './testdata/pki.ts';

let pki: TestPki;
let gatewayCert: Issued;
let alice: Issued;
let bob: Issued;
let twoNames: Issued;
let gatewayAsClient: Issued;
let stranger: Issued;
let echo: Server;
let echoPort: number;

before(async () => {
  pki = createTestPki();
  gatewayCert = pki.issue({ uris: ['umbra://gateway/gw1'], server: true });
  alice = pki.issue({ uris: ['umbra://identity/alice'] });
  bob = pki.issue({ uris: ['umbra://identity/bob'] });
  twoNames = pki.issue({ uris: ['umbra://identity/alice', 'umbra://identity/bob'] });
  gatewayAsClient = pki.issue({ uris: ['umbra://gateway/alice'], server: true });
  stranger = pki.issueElsewhere(['umbra://identity/alice']);
  echo = createServer((socket) => socket.on('error', () => {}).pipe(socket));
  await new Promise<void>((resolve) => echo.listen({ host: '127.0.0.1', port: 0 }, resolve));
  echoPort = (echo.address() as { port: number }).port;
});

after(() => {
  echo.close();
  pki.remove();
});

interface Rig {
  listener: TunnelListener;
  grants: Grants;
  advance(ms: number): void;
  ended: { sessionId: string; reason: string; bytesIn: number; bytesOut: number }[];
  postures: { keyId?: string; identity: string; source: string; posture: Record<string, unknown> }[];
  logs: string[];
  revoked: Set<string>;
  grant(overrides?: Partial<GrantRequest>): void;
}

async function startRig(host = '127.0.0.1', workers = 0): Promise<Rig> {
  let nowMs = 1_000_000;
  const now = () => nowMs;
  const grants = new Grants({ now });
  const logs: string[] = [];
  const rig: Omit<Rig, 'listener'> & { listener?: TunnelListener } = {
    grants,
    advance: (ms) => {
      nowMs += ms;
    },
    ended: [],
    postures: [],
    logs,
    revoked: new Set(),
    grant: (overrides = {}) => {
      grants.add({
        sessionId: 's1',
        identity: 'alice',
        keyId: 'k-alice',
        source: '127.0.0.1',
        service: 'db',
        backend: `127.0.0.1:${echoPort}`,
        mode: 'tunnel',
        ttlSeconds: 30,
        ...overrides,
      });
    },
  };
  const listener = new TunnelListener({
    host,
    port: 0,
    key: gatewayCert.key,
    cert: gatewayCert.cert,
    ca: pki.ca,
    grants,
    isSerialRevoked: (serial) => rig.revoked.has(serial),
    onPosture: (report) => rig.postures.push(report),
    onSessionEnded: (sessionId, stats) => rig.ended.push({ sessionId, ...stats }),
    log: pino({ level: 'debug' }, { write: (line: string) => logs.push(line) }),
    now,
    workers,
  });
  await listener.start();
  rig.listener = listener;
  return rig as Rig;
}

/** A TLS connection to the listener; resolves once the handshake is done, rejects if it fails. */
function open(rig: Rig, as: Issued, alpn: string[] | undefined, host = '127.0.0.1'): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = connect({
      host,
      port: rig.listener.port,
      key: as.key,
      cert: as.cert,
      ca: pki.ca,
      ALPNProtocols: alpn,
      minVersion: 'TLSv1.3',
      checkServerIdentity: () => undefined,
    });
    socket.once('secureConnect', () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Writes `message` and collects what comes back until the connection closes (or `ms` pass). */
async function exchange(
  socket: TLSSocket,
  message: string,
  ms = 2000,
): Promise<{ data: string; closed: boolean }> {
  let data = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    data += chunk;
  });
  socket.on('error', () => {});
  const closed = new Promise<boolean>((resolve) => socket.once('close', () => resolve(true)));
  socket.write(message);
  const outcome = await Promise.race([closed, sleep(ms).then(() => false)]);
  return { data, closed: outcome };
}

/** A connection attempt that must end without any byte from the backend. */
async function assertRefused(rig: Rig, as: Issued, alpn: string[] | undefined, why: string) {
  let socket: TLSSocket;
  try {
    socket = await open(rig, as, alpn);
  } catch {
    return; // refused in the handshake
  }
  const { data, closed } = await exchange(socket, 'ping');
  assert.equal(data, '', `${why}: no data`);
  assert.equal(closed, true, `${why}: closed`);
}

function waitFor(condition: () => boolean, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const check = () => {
      if (condition()) resolve();
      else if (Date.now() > deadline) reject(new Error('timed out waiting'));
      else setTimeout(check, 5);
    };
    check();
  });
}

for (const workers of [0, 2])
  describe(`TunnelListener, ${workers === 0 ? 'in this thread' : `${workers} worker threads`}`, () => {
    let rig: Rig;
    beforeEach(async () => {
      await rig?.listener.close();
      rig = await startRig('127.0.0.1', workers);
    });
    after(() => rig?.listener.close());

    test('a granted connection is proxied to the backend, both ways, and its session ends once with byte counts', async () => {
      rig.grant();
      const socket = await open(rig, alice, ['umbra-svc/db']);
      assert.equal(socket.alpnProtocol, 'umbra-svc/db');
      socket.setEncoding('utf8');
      const echoed = new Promise<string>((resolve) => socket.once('data', resolve));
      socket.write('hello');
      assert.equal(await echoed, 'hello');
      assert.equal(rig.listener.liveConnections(), 1);

      // A second connection of the same session, then both end.
      const second = await open(rig, alice, ['umbra-svc/db']);
      const secondEcho = new Promise((resolve) => second.once('data', resolve));
      second.write('abc');
      await secondEcho;
      const closed = Promise.all(
        [socket, second].map((s) => new Promise((resolve) => s.once('close', resolve))),
      );
      socket.end();
      second.end();
      await closed;
      await waitFor(() => rig.listener.liveConnections() === 0);
      assert.deepEqual(rig.ended, [], 'the grant is still live: the session goes on');

      rig.advance(30_000);
      rig.grants.sweep();
      assert.deepEqual(rig.ended, [{ sessionId: 's1', reason: 'expired', bytesIn: 8, bytesOut: 8 }]);
      rig.grants.sweep();
      assert.equal(rig.ended.length, 1, 'once');
    });

    test('a connection outlives its grant; the session ends when its last connection closes', async () => {
      rig.grant();
      const socket = await open(rig, alice, ['umbra-svc/db']);
      socket.write('x');
      await new Promise((resolve) => socket.once('data', resolve));
      rig.advance(31_000);
      rig.grants.sweep();
      assert.deepEqual(rig.ended, []);
      socket.write('still here');
      const more = await new Promise<Buffer>((resolve) => socket.once('data', resolve));
      assert.equal(more.toString(), 'still here');
      socket.end();
      await waitFor(() => rig.ended.length === 1);
      assert.deepEqual(rig.ended, [{ sessionId: 's1', reason: 'expired', bytesIn: 11, bytesOut: 11 }]);
    });

    test('a tunnel session that never had a connection ends when its grant goes; direct sessions are not reported', () => {
      rig.grant({ ttlSeconds: 5 });
      rig.grant({ sessionId: 's2', mode: 'direct', ttlSeconds: 5 });
      rig.advance(5_000);
      rig.grants.sweep();
      assert.deepEqual(rig.ended, [{ sessionId: 's1', reason: 'expired', bytesIn: 0, bytesOut: 0 }]);
    });

    test('refused without a byte: no grant, another identity, another source, another service, expired, direct mode', async () => {
      await assertRefused(rig, alice, ['umbra-svc/db'], 'no grant');
      rig.grant({ identity: 'bob' });
      await assertRefused(rig, alice, ['umbra-svc/db'], 'the grant is for another identity');
      rig.grants.remove('s1');
      rig.grant({ source: '192.0.2.7' });
      await assertRefused(rig, alice, ['umbra-svc/db'], 'the grant is for another source');
      rig.grants.remove('s1');
      rig.grant({ mode: 'direct' });
      await assertRefused(rig, alice, ['umbra-svc/db'], 'a direct-mode grant');
      rig.grants.remove('s1');
      rig.grant();
      await assertRefused(rig, alice, ['umbra-svc/other'], 'another service');
      await assertRefused(rig, bob, ['umbra-svc/db'], 'another identity with the same grant');
      rig.advance(30_000);
      await assertRefused(rig, alice, ['umbra-svc/db'], 'expired');
      assert.equal(rig.listener.liveConnections(), 0);
      const refusals = rig.logs.filter((line) => line.includes('tunnel connection refused'));
      assert.ok(refusals.length >= 7, `${refusals.length} refusals logged`);
      assert.match(refusals[0] ?? '', /"reason":"no tunnel grant from this address"/);
      assert.doesNotMatch(rig.logs.join(''), /PRIVATE KEY|BEGIN CERTIFICATE/);
    });

    test('refused: revoked serial, another CA, two names, a gateway certificate, unknown or missing ALPN', async () => {
      rig.grant();
      rig.revoked.add(alice.serial);
      await assertRefused(rig, alice, ['umbra-svc/db'], 'revoked');
      rig.revoked.clear();
      await assertRefused(rig, stranger, ['umbra-svc/db'], 'another CA');
      await assertRefused(rig, twoNames, ['umbra-svc/db'], 'two identities');
      await assertRefused(rig, gatewayAsClient, ['umbra-svc/db'], 'a gateway certificate');
      await assertRefused(rig, alice, ['http/1.1'], 'unknown ALPN');
      await assertRefused(rig, alice, ['umbra-svc/db', 'umbra-control/1'], 'two ALPN protocols');
      await assertRefused(rig, alice, undefined, 'no ALPN');
      const { data } = await exchange(await open(rig, alice, ['umbra-svc/db']), 'ok', 300);
      assert.equal(data, 'ok', 'and the same client with everything right gets through');
    });

    test('closeKeyIds and closeSessions destroy live tunnels at once, remove the grants, and end the sessions', async () => {
      rig.grant();
      rig.grant({ sessionId: 's2', identity: 'bob', keyId: 'k-bob' });
      const aliceSocket = await open(rig, alice, ['umbra-svc/db']);
      const bobSocket = await open(rig, bob, ['umbra-svc/db']);
      for (const socket of [aliceSocket, bobSocket]) {
        socket.write('hi');
        await new Promise((resolve) => socket.once('data', resolve));
      }
      const aliceClosed = new Promise((resolve) => aliceSocket.once('close', resolve));
      const started = Date.now();
      assert.equal(rig.listener.closeKeyIds(['k-alice'], 'identity revoked'), 1);
      await aliceClosed;
      assert.ok(Date.now() - started < 1000);
      assert.equal(rig.grants.bySession('s1'), undefined);
      assert.equal(rig.listener.liveConnections(), 1, "bob's tunnel is untouched");
      // A worker reports the bytes of a connection it closed a moment later.
      await waitFor(() => rig.ended.length === 1);
      assert.deepEqual(rig.ended, [{ sessionId: 's1', reason: 'identity revoked', bytesIn: 2, bytesOut: 2 }]);
      await assertRefused(rig, alice, ['umbra-svc/db'], 'after revocation');

      const bobClosed = new Promise((resolve) => bobSocket.once('close', resolve));
      assert.equal(rig.listener.closeSessions(['s2'], 'session closed'), 1);
      await bobClosed;
      await waitFor(() => rig.ended.length === 2);
      assert.equal(rig.ended[1]?.reason, 'session closed');
      assert.equal(rig.ended.length, 2);
      assert.equal(rig.listener.liveConnections(), 0);
    });

    test('closeSerials destroys the connections of revoked certificates', async () => {
      rig.grant();
      const socket = await open(rig, alice, ['umbra-svc/db']);
      socket.write('hi');
      await new Promise((resolve) => socket.once('data', resolve));
      const closed = new Promise((resolve) => socket.once('close', resolve));
      assert.equal(rig.listener.closeSerials([bob.serial], 'certificate revoked'), 0);
      assert.equal(rig.listener.closeSerials([alice.serial.toUpperCase()], 'certificate revoked'), 1);
      await closed;
      rig.grants.remove('s1');
      await waitFor(() => rig.ended.length === 1);
      assert.equal(rig.ended[0]?.reason, 'certificate revoked');
    });

    test('the control channel carries posture reports to onPosture, at most one per 5 s', async () => {
      await assertRefused(rig, alice, [CONTROL_ALPN], 'control without any grant');
      rig.grant({ service: 'ssh' });
      const socket = await open(rig, alice, [CONTROL_ALPN]);
      socket.write(encodeControlFrame({ posture: { os: 'debian-12', diskEncrypted: true } }));
      await waitFor(() => rig.postures.length === 1);
      assert.deepEqual(rig.postures[0], {
        keyId: 'k-alice',
        identity: 'alice',
        source: '127.0.0.1',
        posture: { os: 'debian-12', diskEncrypted: true },
      });
      socket.write(encodeControlFrame({ posture: { os: 'too-soon' } }));
      await sleep(50);
      rig.advance(5_000);
      socket.write(encodeControlFrame({ posture: { os: 'later' } }));
      await waitFor(() => rig.postures.length === 2);
      assert.deepEqual(rig.postures[1]?.posture, { os: 'later' });
      assert.equal(rig.listener.liveConnections(), 1);

      // A frame outside the schema closes the channel.
      const closed = new Promise((resolve) => socket.once('close', resolve));
      socket.write(Buffer.from([0xff, 0xff, 0xff, 0xff]));
      await closed;
      await waitFor(() => rig.listener.liveConnections() === 0);

      // Revoking the identity closes its control channel too.
      const again = await open(rig, alice, [CONTROL_ALPN]);
      const againClosed = new Promise((resolve) => again.once('close', resolve));
      await waitFor(() => rig.listener.liveConnections() === 1);
      assert.equal(rig.listener.closeKeyIds(['k-alice'], 'revoked'), 1);
      await againClosed;
    });

    test('an unreachable backend closes the tunnel', async () => {
      rig.grant({ backend: '127.0.0.1:1' });
      await assertRefused(rig, alice, ['umbra-svc/db'], 'backend refused');
      await waitFor(() => rig.listener.liveConnections() === 0);
      assert.ok(rig.logs.some((line) => line.includes('backend 127.0.0.1:1 unreachable')));
    });
  });

test('on a dual-stack listener, an IPv4 client matches its IPv4 grant (not ::ffff:a.b.c.d)', async (t) => {
  let rig: Rig;
  try {
    rig = await startRig('::');
  } catch {
    t.skip('no IPv6 on this machine');
    return;
  }
  try {
    rig.grant();
    const { data } = await exchange(await open(rig, alice, ['umbra-svc/db']), 'v4', 300);
    assert.equal(data, 'v4');
  } finally {
    await rig.listener.close();
  }
});

describe('TunnelListener across worker threads', () => {
  const CONNECTIONS = 16;
  let rig: Rig;
  before(async () => {
    rig = await startRig('127.0.0.1', 2);
  });
  after(() => rig.listener.close());

  /** Opens CONNECTIONS tunnels of one grant, each echoing once; the kernel spreads them over both workers. */
  async function openMany(): Promise<TLSSocket[]> {
    const sockets = await Promise.all(
      Array.from({ length: CONNECTIONS }, () => open(rig, alice, ['umbra-svc/db'])),
    );
    await Promise.all(
      sockets.map((socket) => {
        const echoed = new Promise((resolve) => socket.once('data', resolve));
        socket.write('ab');
        return echoed;
      }),
    );
    const byThread = rig.listener.liveConnectionsByThread();
    assert.equal(byThread.length, 2);
    assert.ok(
      byThread.every((live) => live > 0),
      `both workers serve (${byThread.join(' + ')})`,
    );
    return sockets;
  }

  test('a grant added in the main thread lets connections in on every worker; revocation closes them all at once', async () => {
    rig.grant({ sessionId: 'r1' });
    const sockets = await openMany();
    assert.equal(rig.listener.liveConnections(), CONNECTIONS);
    const closed = Promise.all(sockets.map((s) => new Promise((resolve) => s.once('close', resolve))));
    const started = Date.now();
    assert.equal(rig.listener.closeKeyIds(['k-alice'], 'identity revoked'), CONNECTIONS);
    assert.equal(rig.listener.liveConnections(), 0);
    await closed;
    assert.ok(Date.now() - started < 1000, `closed in ${Date.now() - started} ms`);
    await waitFor(() => rig.ended.length === 1);
    assert.deepEqual(rig.ended, [
      { sessionId: 'r1', reason: 'identity revoked', bytesIn: 2 * CONNECTIONS, bytesOut: 2 * CONNECTIONS },
    ]);
    await assertRefused(rig, alice, ['umbra-svc/db'], 'after revocation');
  });

  test('closeSerials reaches every worker', async () => {
    rig.grant({ sessionId: 'r2' });
    const sockets = await openMany();
    const closed = Promise.all(sockets.map((s) => new Promise((resolve) => s.once('close', resolve))));
    assert.equal(rig.listener.closeSerials([alice.serial], 'certificate revoked'), CONNECTIONS);
    await closed;
    rig.grants.remove('r2');
    await waitFor(() => rig.ended.length === 2);
    assert.equal(rig.ended[1]?.reason, 'certificate revoked');
  });

  test('a session ends once, after its grant is gone and the last connection on any worker closed', async () => {
    rig.grant({ sessionId: 'r3' });
    const sockets = await openMany();
    rig.advance(31_000);
    rig.grants.sweep();
    const [last, ...others] = sockets as [TLSSocket, ...TLSSocket[]];
    await Promise.all(
      others.map((socket) => {
        const closed = new Promise((resolve) => socket.once('close', resolve));
        socket.end();
        return closed;
      }),
    );
    await waitFor(() => rig.listener.liveConnections() === 1);
    await sleep(50);
    assert.equal(rig.ended.length, 2, 'not while a connection is open');
    last.end();
    await waitFor(() => rig.ended.length === 3);
    assert.deepEqual(rig.ended[2], {
      sessionId: 'r3',
      reason: 'expired',
      bytesIn: 2 * CONNECTIONS,
      bytesOut: 2 * CONNECTIONS,
    });
    await sleep(50);
    assert.equal(rig.ended.length, 3, 'once');
  });
});
