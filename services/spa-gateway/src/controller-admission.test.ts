// A gateway run by a controller, in memory: real knocks through the real pipeline, a policy
// snapshot signed by a throwaway CA key, a stand-in for the link that answers as the test says.
// What a decision opens, and what failMode does when the controller cannot answer.

import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import {
  type DecisionMessage,
  generateGatewayKeyPair,
  generateIdentity,
  type PolicySnapshot,
  type SessionReport,
  SpaReceiver,
  sealKnock,
  signSnapshot,
} from '@umbra/protocol';
import { pino } from 'pino';
import { SourceBudget } from './budget.ts';
import { MemoryCapture } from './capture.ts';
import { ControllerAdmission, type FailMode } from './controller-admission.ts';
import { MemoryFirewall } from './firewall/index.ts';
import type { ControllerLink } from './link/controller-link.ts';
import { PolicyCache } from './link/policy-cache.ts';
import { KnockPipeline } from './pipeline.ts';
import { Rejections } from './rejections.ts';
import { ReplayGuard } from './replay.ts';
import { Grants } from './tunnel/index.ts';

const root = mkdtempSync(join(tmpdir(), 'umbra-admission-'));
after(() => rmSync(root, { recursive: true, force: true }));

const ca = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const caPem = ca.publicKey.export({ type: 'spki', format: 'pem' }) as string;
const gatewayKeys = generateGatewayKeyPair();
const alice = generateIdentity();
const TUNNEL_PORT = 8443;
const NOW = Date.UTC(2026, 10, 23, 10, 0); // a Monday, 10:00 UTC

function snapshot(): PolicySnapshot {
  return {
    version: 5,
    issuedAt: NOW,
    gateway: 'branch1',
    timeZone: 'UTC',
    identities: [
      {
        keyId: alice.id.toString('hex'),
        name: 'alice',
        publicKey: new Uint8Array(alice.publicKey),
        groups: ['staff'],
      },
    ],
    services: [
      { name: 'db', mode: 'tunnel', backend: '198.51.100.2:5432' },
      { name: 'shell', mode: 'direct', backend: '127.0.0.1:22' },
    ],
    policies: [
      {
        id: 'p1',
        subject: { kind: 'group', name: 'staff' },
        service: 'db',
        requirements: [],
        hours: '08:00-18:00',
        days: null,
        maxTtlSeconds: 20,
      },
    ],
    revokedSerials: [],
  };
}

/** The link as the admission sees it: answers with `answer`, or null for "the controller did not answer". */
function fakeLink(answer: (id: number) => DecisionMessage | null) {
  const sent: SessionReport[] = [];
  let up = true;
  const link = {
    get connected() {
      return up;
    },
    authorize: async () => answer(1),
    send(message: SessionReport) {
      if (!up) return false;
      sent.push(message);
      return true;
    },
  };
  return { link: link as unknown as ControllerLink, sent, setUp: (value: boolean) => (up = value) };
}

function build(failMode: FailMode, answer: (id: number) => DecisionMessage | null) {
  const stateDir = mkdtempSync(join(root, 's-'));
  const now = () => NOW;
  const cache = new PolicyCache({ caPem, gatewayName: 'branch1', stateDir });
  cache.acceptSnapshot(signSnapshot(snapshot(), ca.privateKey));
  const firewall = new MemoryFirewall({ now });
  firewall.install();
  const grants = new Grants({ now });
  const log = pino({ level: 'silent' });
  const rejections = new Rejections(log, 0);
  const { link, sent, setUp } = fakeLink(answer);
  const admission = new ControllerAdmission({
    cache,
    link,
    grants,
    firewall,
    failMode,
    tunnelPort: TUNNEL_PORT,
    requireSourceBinding: false,
    rejections,
    log,
    now,
  });
  const pipeline = new KnockPipeline({
    receiver: new SpaReceiver(gatewayKeys.privateKey),
    admission,
    budget: new SourceBudget({ perSecond: 100, burst: 100, totalPerSecond: 1000, totalBurst: 1000, now }),
    replay: new ReplayGuard({ stateDir, windowMs: 30_000, now, notBeforeMs: 0 }),
    rejections,
    log,
  });
  const capture = new MemoryCapture();
  capture.start((datagram) => pipeline.handle(datagram));
  let timestamp = NOW;
  const knock = (service: string, access = `tcp/${TUNNEL_PORT}`) =>
    capture.inject(
      '192.0.2.20',
      sealKnock({
        gatewayPublicKey: gatewayKeys.publicKey,
        identity: alice,
        knock: { timestampMs: ++timestamp, access, service },
      }),
    );
  const counts = () => Object.fromEntries(Object.entries(rejections.counts).filter(([, n]) => n > 0));
  return { admission, firewall, grants, knock, counts, sent, setUp };
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

describe('ControllerAdmission', () => {
  test("the controller's allow opens a marked pinhole to the tunnel and a grant for the session", async () => {
    const rig = build('closed', (id) => ({
      t: 'decision',
      id,
      allow: true,
      sessionId: 's-1',
      identity: 'alice',
      keyId: alice.id.toString('hex'),
      service: 'db',
      mode: 'tunnel',
      backend: '198.51.100.2:5432',
      access: `tcp/${TUNNEL_PORT}`,
      ttlSeconds: 20,
    }));
    rig.knock('db');
    await settle();
    const [pinhole] = rig.firewall.list();
    assert.equal(pinhole?.port, TUNNEL_PORT);
    assert.equal(pinhole?.source, '192.0.2.20');
    const grant = rig.grants.findForConnection('192.0.2.20', 'alice', 'db');
    assert.equal(grant?.sessionId, 's-1');
    assert.equal(pinhole?.mark, grant?.mark);
    assert.equal(rig.admission.accepted, 1);
  });

  test("the controller's deny opens nothing and counts a refusal", async () => {
    const rig = build('cached', (id) => ({ t: 'decision', id, allow: false, reason: 'no policy' }));
    rig.knock('db');
    await settle();
    assert.deepEqual(rig.firewall.list(), []);
    assert.deepEqual(rig.counts(), { denied: 1 });
  });

  test('failMode closed: no answer, nothing opens', async () => {
    const rig = build('closed', () => null);
    rig.knock('db');
    await settle();
    assert.deepEqual(rig.firewall.list(), []);
    assert.deepEqual(rig.counts(), { unreachable: 1 });
  });

  test('failMode cached: the signed policy decides, and the session is reported when the link is back', async () => {
    const rig = build('cached', () => null);
    rig.setUp(false);
    rig.knock('db');
    await settle();
    const [pinhole] = rig.firewall.list();
    assert.equal(pinhole?.port, TUNNEL_PORT);
    assert.equal(pinhole?.ttlSeconds, 20, "the policy's longest TTL");
    assert.equal(rig.admission.decidedOffline, 1);
    assert.deepEqual(rig.sent, [], 'nothing sent while the link is down');
    rig.setUp(true);
    rig.admission.flushQueued();
    const reports = rig.sent as SessionReport[];
    assert.equal(reports.length, 1);
    assert.equal(reports[0]?.event, 'opened-offline');
  });

  test('failMode cached still refuses what the policy refuses: an unlisted service, a wrong port', async () => {
    const rig = build('cached', () => null);
    rig.knock('shell', 'tcp/22'); // a service with no policy for alice
    rig.knock('db', 'tcp/5432'); // the tunnel service, asked at the wrong port
    rig.knock('nothing');
    await settle();
    assert.deepEqual(rig.firewall.list(), []);
    assert.deepEqual(rig.counts(), { denied: 3 });
  });
});
