// The gateway's side of the link against a stand-in controller on loopback (real TLS, real
// WebSocket): it says hello, survives whatever the controller sends, closes the link on anything
// that is not a valid message without applying it, and dials again by itself.

import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import {
  decodeToController,
  encodeLinkMessage,
  LINK_CLOSE,
  LINK_MAX_MESSAGE_BYTES,
  type ToControllerMessage,
  type ToGatewayMessage,
} from '@umbra/protocol';
import fc from 'fast-check';
import { pino } from 'pino';
import { type WebSocket, WebSocketServer } from 'ws';
import { createTestPki, type TestPki } from '../tunnel/testdata/pki.ts';
import { ControllerLink } from './controller-link.ts';

let pki: TestPki;
let server: Server;
let wss: WebSocketServer;
let url: URL;
/** The controller's side of each link, newest last, with what it received and how it closed. */
const links: { socket: WebSocket; received: ToControllerMessage[]; closed: Promise<number> }[] = [];

before(async () => {
  pki = createTestPki();
  const controller = pki.issue({ uris: ['umbra://controller/c'], server: true, ips: ['127.0.0.1'] });
  server = createServer({ key: controller.key, cert: controller.cert, ca: pki.ca, requestCert: true });
  wss = new WebSocketServer({ server });
  wss.on('connection', (socket) => {
    const received: ToControllerMessage[] = [];
    const closed = new Promise<number>((resolve) => socket.once('close', (code) => resolve(code)));
    socket.on('message', (data) => received.push(decodeToController(data as Buffer)));
    links.push({ socket, received, closed });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = new URL(`https://127.0.0.1:${(server.address() as AddressInfo).port}`);
});

after(() => {
  wss.close();
  server.close();
  pki.remove();
});

function startLink(events: { policy: number; revoke: number }): ControllerLink {
  const gateway = pki.issue({ uris: ['umbra://gateway/gw'], server: true });
  const link = new ControllerLink({
    url,
    key: gateway.key,
    cert: gateway.cert,
    ca: pki.ca,
    endpoint: { host: '192.0.2.1', spaPort: 62201, tunnelPort: 8443 },
    snapshotVersion: () => null,
    onPolicy: () => events.policy++,
    onRevoke: () => events.revoke++,
    log: pino({ level: 'silent' }),
    random: () => 0, // reconnect at once
  });
  link.start();
  return link;
}

async function until(check: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('ControllerLink', () => {
  test('says hello with its endpoint, and passes on valid policy and revocations', async () => {
    const events = { policy: 0, revoke: 0 };
    const link = startLink(events);
    try {
      const count = links.length;
      await until(() => links.length > count && links.at(-1)!.received.length > 0, 'hello');
      const controller = links.at(-1)!;
      assert.deepEqual(controller.received[0], {
        t: 'hello',
        version: 1,
        snapshotVersion: null,
        endpoint: { host: '192.0.2.1', spaPort: 62201, tunnelPort: 8443 },
      });
      const messages: ToGatewayMessage[] = [
        { t: 'snapshot', payload: new Uint8Array(4), signature: new Uint8Array(64) },
        { t: 'revoke', keyIds: [], serials: ['0a'], sessionIds: [], reason: 'test' },
        // An answer to nothing asked: ignored.
        { t: 'decision', id: 999, allow: false, reason: 'late' },
      ];
      for (const message of messages) controller.socket.send(encodeLinkMessage(message));
      await until(() => events.policy === 1 && events.revoke === 1, 'policy and revocation');
      assert.equal(link.connected, true);
    } finally {
      link.stop();
    }
  });

  test('an authorization is answered by the decision with its id', async () => {
    const link = startLink({ policy: 0, revoke: 0 });
    try {
      const count = links.length;
      await until(() => link.connected && links.length > count, 'the link');
      const controller = links.at(-1)!;
      const answer = link.authorize(new Uint8Array(100), '192.0.2.7');
      await until(() => controller.received.some((m) => m.t === 'authorize'), 'the request');
      const request = controller.received.find((m) => m.t === 'authorize')!;
      assert.equal(request.t === 'authorize' && request.source, '192.0.2.7');
      controller.socket.send(
        encodeLinkMessage({
          t: 'decision',
          id: request.t === 'authorize' ? request.id : -1,
          allow: false,
          reason: 'no',
        }),
      );
      assert.deepEqual(await answer, {
        t: 'decision',
        id: (request as { id: number }).id,
        allow: false,
        reason: 'no',
      });
    } finally {
      link.stop();
    }
  });

  test('malformed, oversized, text and misdirected frames close the link, apply nothing, and it dials again', async () => {
    const events = { policy: 0, revoke: 0 };
    const link = startLink(events);
    const frames = fc.sample(
      fc.oneof(
        fc.uint8Array({ minLength: 1, maxLength: 200 }),
        // A valid message, but one a gateway sends, not receives.
        fc.constant(
          encodeLinkMessage({
            t: 'health',
            uptimeSeconds: 1,
            acceptedKnocks: 0,
            rejectedKnocks: 0,
            liveTunnels: 0,
            snapshotVersion: null,
          }),
        ),
        // A revoke with one field wrong.
        fc.constant(
          Buffer.from(
            encodeLinkMessage({
              t: 'revoke',
              keyIds: ['XYZ'],
              serials: [],
              sessionIds: [],
              reason: 'r',
            } as never),
          ),
        ),
        fc.constant('a text frame'),
      ),
      { numRuns: 12, seed: 42 },
    );
    try {
      for (const frame of frames) {
        const count = links.length;
        await until(() => link.connected && links.length > count, 'a fresh link');
        const controller = links.at(-1)!;
        controller.socket.send(frame);
        assert.equal(await controller.closed, LINK_CLOSE.protocolError);
      }
      // Beyond the size limit, ws itself closes the link (1009: message too big) before decoding.
      const count = links.length;
      await until(() => link.connected && links.length > count, 'a fresh link');
      links.at(-1)!.socket.send(Buffer.alloc(LINK_MAX_MESSAGE_BYTES + 1));
      assert.equal(await links.at(-1)!.closed, 1009);
      assert.deepEqual(events, { policy: 0, revoke: 0 }, 'nothing applied');
      assert.ok(link.connects >= frames.length);
      // And a request in flight when the link dies is answered "no answer", at once.
      const again = links.length;
      await until(() => link.connected && links.length > again, 'a fresh link');
      const pending = link.authorize(new Uint8Array(10), '192.0.2.7');
      links.at(-1)!.socket.terminate();
      assert.equal(await pending, null);
    } finally {
      link.stop();
    }
  });
});
