// The gateway link against a real controller on loopback: who may connect, the signed snapshot,
// knock decisions and their audit entries, protocol errors that close the link and apply nothing,
// revocation pushed from a store change, posture and session reports.

import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { LINK_CLOSE, openDelta, openSnapshot, type PolicySnapshot, type SignedPolicy } from '@umbra/protocol';
import { Encoder } from 'cbor-x';
import fc from 'fast-check';
import type { AuditEntry } from '../store/index.ts';
import {
  enrollTestDevice,
  enrollTestGateway,
  helloLink,
  knockBytes,
  startTestController,
  type TestController,
  type TestDevice,
  type TestGateway,
  TestLink,
} from './test-fixture.ts';

const TUNNEL_PORT = 8443;
let controller: TestController;
let branch: TestGateway;
let other: TestGateway;
let alice: TestDevice;
let bob: TestDevice;

before(async () => {
  controller = await startTestController();
  const { store } = controller.data;
  branch = await enrollTestGateway(controller.data, 'branch-1');
  other = await enrollTestGateway(controller.data, 'branch-2');
  await store.createService({ name: 'db', gateway: 'branch-1', backend: '10.0.0.5:5432' });
  await store.createService({ name: 'ssh', gateway: 'branch-1', backend: '10.0.0.6:22', mode: 'direct' });
  await store.createService({ name: 'wiki', gateway: 'branch-2', backend: '10.0.1.5:443' });
  alice = await enrollTestDevice(controller.data, 'alice-laptop', { groups: ['eng'] });
  bob = await enrollTestDevice(controller.data, 'bob-laptop', { groups: ['sales'] });
  await store.addPolicy({ subject: { kind: 'group', name: 'eng' }, service: 'db', maxTtlSeconds: 60 });
  await store.addPolicy({ subject: { kind: 'group', name: 'eng' }, service: 'ssh' });
  await store.addPolicy({ subject: { kind: 'group', name: 'eng' }, service: 'wiki' });
  await store.addPolicy({
    subject: { kind: 'identity', name: 'bob-laptop' },
    service: 'db',
    requirements: ['disk_encryption=on'],
  });
  // Changes made so far are in the store; the controller's view catches up with them.
  await store.appendAudit({ actor: 'test', action: 'policy.add', subject: 'setup' });
  await controller.server.links.views.invalidate(await store.lastAuditSeq());
});

after(async () => {
  await controller?.close();
});

const caKey = () => new X509Certificate(controller.data.ca.pem).publicKey;

function opened(message: { payload: Uint8Array; signature: Uint8Array }): PolicySnapshot {
  return openSnapshot(message as SignedPolicy, caKey());
}

let requestId = 0;
async function authorize(link: TestLink, knock: Buffer, source = '198.51.100.7') {
  const id = ++requestId;
  const answer = link.next('decision', (decision) => decision.id === id);
  link.send({ t: 'authorize', id, knock, source });
  return answer;
}

async function auditSince(seq: number): Promise<AuditEntry[]> {
  await controller.server.links.decisions.flushed();
  return controller.data.store.listAudit(seq);
}

describe('who may open a link', () => {
  test('without a certificate, with a device certificate, or as a gateway not enrolled: 401 before any WebSocket', async () => {
    const ca = controller.data.ca.pem;
    await assert.rejects(TestLink.open(controller.url, ca), { status: 401 });
    await assert.rejects(TestLink.open(controller.url, ca, alice), { status: 401 });
    const pending = await enrollTestGateway(controller.data, 'branch-pending');
    await controller.data.store.createGateway({ name: 'branch-never' });
    const { generateKeyPairSync } = await import('node:crypto');
    const key = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const unenrolled = await controller.data.ca.issueGatewayCertificate(key.publicKey, {
      gatewayName: 'branch-never',
    });
    await assert.rejects(
      TestLink.open(controller.url, ca, {
        key: key.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
        certificate: unenrolled.pem,
      }),
      { status: 401 },
    );
    const link = await TestLink.open(controller.url, ca, pending);
    await link.close();
  });

  test('a second link from the same gateway replaces the first', async () => {
    const first = await helloLink(controller, other);
    const second = await helloLink(controller, other);
    assert.equal(await first.link.closed, 4409);
    assert.equal(controller.server.links.server.links.get('branch-2')?.socket.readyState, 1);
    await second.link.close();
  });
});

describe('hello and the snapshot', () => {
  test("hello records the endpoint and brings a signed snapshot of this gateway's share", async () => {
    const { link, snapshot } = await helloLink(controller, branch, {
      host: 'gw1.example.org',
      spaPort: 62201,
      tunnelPort: TUNNEL_PORT,
    });
    try {
      const policy = opened(snapshot);
      assert.equal(policy.gateway, 'branch-1');
      assert.equal(policy.timeZone, 'UTC');
      assert.equal(policy.version, await controller.data.store.lastAuditSeq());
      assert.deepEqual(
        policy.services.map((service) => [service.name, service.mode]),
        [
          ['db', 'tunnel'],
          ['ssh', 'direct'],
        ],
      );
      assert.equal(policy.policies.length, 3, "branch-2's wiki policy is not branch-1's business");
      assert.deepEqual(policy.identities.map((identity) => identity.name).sort(), [
        'alice-laptop',
        'bob-laptop',
      ]);
      const entry = policy.identities.find((identity) => identity.name === 'alice-laptop')!;
      assert.equal(entry.keyId, alice.keyId);
      assert.deepEqual(Buffer.from(entry.publicKey), alice.identity.publicKey);
      assert.deepEqual(entry.groups, ['eng']);
      assert.throws(() =>
        openSnapshot({ ...(snapshot as SignedPolicy), payload: Buffer.from('x') }, caKey()),
      );
      const gateway = await controller.data.store.getGatewayByName('branch-1');
      assert.deepEqual(gateway?.endpoint, {
        host: 'gw1.example.org',
        spaPort: 62201,
        tunnelPort: TUNNEL_PORT,
      });
      assert.ok(gateway?.connectedAt);
    } finally {
      await link.close();
    }
  });
});

describe('snapshot versions', () => {
  test('a later hello gets a later version, even when only knocks moved the audit log on', async () => {
    const first = await helloLink(controller, branch);
    const before = opened(first.snapshot).version;
    await authorize(first.link, knockBytes(alice, branch, { access: 'tcp/22' }));
    await first.link.close();
    const second = await helloLink(controller, branch);
    try {
      const after = opened(second.snapshot).version;
      assert.ok(after > before, `version ${after} after ${before}`);
      assert.equal(after, await controller.data.store.lastAuditSeq());
    } finally {
      await second.link.close();
    }
  });
});

describe('authorize', () => {
  let link: TestLink;
  before(async () => {
    ({ link } = await helloLink(controller, branch));
  });
  after(async () => {
    await link.close();
  });

  test('an allowed knock opens a session, audited with what was decided', async () => {
    const seq = await controller.data.store.lastAuditSeq();
    const knock = knockBytes(alice, branch, {
      access: `tcp/${TUNNEL_PORT}`,
      service: 'db',
      claimedSource: '198.51.100.7',
    });
    const decision = await authorize(link, knock);
    assert.equal(decision.allow, true);
    assert.ok(decision.allow);
    assert.deepEqual(
      [decision.identity, decision.keyId, decision.service, decision.mode, decision.backend, decision.access],
      ['alice-laptop', alice.keyId, 'db', 'tunnel', '10.0.0.5:5432', `tcp/${TUNNEL_PORT}`],
    );
    assert.equal(decision.ttlSeconds, 60);
    const [entry] = await auditSince(seq);
    assert.deepEqual(
      [entry?.action, entry?.actor, entry?.subject, entry?.decision],
      ['knock', 'gateway:branch-1', 'alice-laptop', 'allow'],
    );
    assert.match(entry?.reason ?? '', /^policy [0-9a-f]{32}$/);
    assert.deepEqual(entry?.details, {
      source: '198.51.100.7',
      service: 'db',
      identity: 'alice-laptop',
      keyId: alice.keyId,
      access: `tcp/${TUNNEL_PORT}`,
      session: decision.sessionId,
      ttlSeconds: 60,
    });
    const sessions = await controller.data.store.listSessions({ open: true });
    assert.ok(
      sessions.some((session) => session.id === decision.sessionId && session.source === '198.51.100.7'),
    );
  });

  test('a direct service is found by its port when the knock names none', async () => {
    const decision = await authorize(link, knockBytes(alice, branch, { access: 'tcp/22' }));
    assert.ok(decision.allow);
    assert.deepEqual([decision.service, decision.mode, decision.access], ['ssh', 'direct', 'tcp/22']);
  });

  test('denials, each audited with its reason', async () => {
    const cases: [string, Buffer, RegExp, string?][] = [
      [
        'a knock signed for another gateway',
        knockBytes(alice, other, { access: `tcp/${TUNNEL_PORT}`, service: 'db' }),
        /signature: does not verify/,
      ],
      [
        "another gateway's service",
        knockBytes(alice, branch, { access: `tcp/${TUNNEL_PORT}`, service: 'wiki' }),
        /service wiki is not behind gateway branch-1/,
      ],
      [
        'the wrong access for a tunnel',
        knockBytes(alice, branch, { access: 'tcp/5432', service: 'db' }),
        /does not match tunnel service db, which opens tcp\/8443/,
      ],
      [
        'a policy whose posture is not met',
        knockBytes(bob, branch, {
          access: `tcp/${TUNNEL_PORT}`,
          service: 'db',
          posture: { disk_encryption: 'off' },
        }),
        /posture disk_encryption=on not met \(device reports disk_encryption=off\)/,
      ],
      ['no policy', knockBytes(bob, branch, { access: 'tcp/22' }), /no policy lets bob-laptop reach ssh/],
      [
        'a claimed source that is not the observed one',
        knockBytes(alice, branch, { access: 'tcp/22', claimedSource: '203.0.113.9' }),
        /claims 203.0.113.9 but came from 198.51.100.7/,
      ],
      [
        'a stale timestamp',
        knockBytes(alice, branch, { access: 'tcp/22', timestampMs: Date.now() - 60_000 }),
        /window ±30 s/,
      ],
      ['garbage', Buffer.from('not a knock'), /malformed knock/],
    ];
    for (const [what, knock, reason] of cases) {
      const seq = await controller.data.store.lastAuditSeq();
      const decision = await authorize(link, knock);
      assert.equal(decision.allow, false, what);
      assert.ok(!decision.allow);
      assert.match(decision.reason, reason, what);
      const [entry] = await auditSince(seq);
      assert.equal(entry?.decision, 'deny', what);
      assert.match(entry?.reason ?? '', reason, what);
    }
  });

  test('a replayed knock is refused, even a fresh-looking one that is not newer', async () => {
    const knock = knockBytes(alice, branch, { access: 'tcp/22' });
    assert.equal((await authorize(link, knock)).allow, true);
    const again = await authorize(link, knock);
    assert.ok(!again.allow);
    assert.match(again.reason, /replay: replayed nonce/);
    const older = knockBytes(alice, branch, { access: 'tcp/22', timestampMs: Date.now() - 5_000 });
    const late = await authorize(link, older);
    assert.ok(!late.allow);
    assert.match(late.reason, /replay: timestamp not after the previous knock/);
  });

  test('knocks decided together are written together, and keep up their pace', async () => {
    const devices = await Promise.all(
      Array.from({ length: 20 }, (_, index) =>
        enrollTestDevice(controller.data, `load-${index}`, { groups: ['eng'] }),
      ),
    );
    await controller.server.links.views.invalidate(
      (await controller.data.store.appendAudit({ actor: 'test', action: 'identity.add', subject: 'load' }))
        .seq,
    );
    const knocks = devices.flatMap((device) =>
      Array.from({ length: 10 }, (_, index) =>
        knockBytes(device, branch, { access: 'tcp/22', timestampMs: Date.now() - 1_000 + index }),
      ),
    );
    const started = performance.now();
    const decisions = await Promise.all(knocks.map((knock) => authorize(link, knock)));
    const elapsed = performance.now() - started;
    assert.ok(decisions.every((decision) => decision.allow));
    assert.ok(elapsed < 5_000, `${knocks.length} decisions took ${elapsed.toFixed(0)} ms`);
  });
});

describe('protocol errors close the link with 4400 and apply nothing', () => {
  async function expectProtocolError(frame: Buffer | string, afterHello = true): Promise<void> {
    const before = await controller.data.store.lastAuditSeq();
    const sessions = (await controller.data.store.listSessions()).length;
    const link = afterHello
      ? (await helloLink(controller, branch)).link
      : await TestLink.open(controller.url, controller.data.ca.pem, branch);
    link.sendRaw(frame);
    assert.equal(await link.closed, 4400);
    await controller.server.links.decisions.flushed();
    assert.equal(await controller.data.store.lastAuditSeq(), before);
    assert.equal((await controller.data.store.listSessions()).length, sessions);
  }

  test('a text frame, an authorize before hello, a second hello, an unknown type', async () => {
    const cbor = new Encoder({ useRecords: false, pack: false, tagUint8Array: false, mapsAsObjects: true });
    const knock = knockBytes(alice, branch, { access: 'tcp/22' });
    await expectProtocolError('{"t":"hello"}');
    await expectProtocolError(
      Buffer.from(cbor.encode({ t: 'authorize', id: 1, knock, source: '198.51.100.7' })),
      false,
    );
    await expectProtocolError(
      Buffer.from(
        cbor.encode({
          t: 'hello',
          version: 1,
          snapshotVersion: null,
          endpoint: { host: 'x', spaPort: 1, tunnelPort: 2 },
        }),
      ),
    );
    await expectProtocolError(Buffer.from(cbor.encode({ t: 'decision', id: 1, allow: false, reason: 'x' })));
    // A valid authorize with one field too many is not a valid authorize.
    await expectProtocolError(
      Buffer.from(cbor.encode({ t: 'authorize', id: 1, knock, source: '198.51.100.7', extra: 1 })),
    );
  });

  test('random frames and near-miss messages', async () => {
    const cbor = new Encoder({ useRecords: false, pack: false, tagUint8Array: false, mapsAsObjects: true });
    const nearMiss = fc.record({
      t: fc.constantFrom('authorize', 'session', 'posture', 'health', 'hello', 'snapshot'),
      id: fc.oneof(fc.integer(), fc.string(), fc.constant(-1)),
      knock: fc.oneof(fc.uint8Array({ maxLength: 600 }), fc.string()),
      source: fc.oneof(fc.ipV4(), fc.string()),
      event: fc.string(),
    });
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.uint8Array({ minLength: 1, maxLength: 2048 }).map((bytes) => Buffer.from(bytes)),
          nearMiss.map((message) => Buffer.from(cbor.encode(message))),
        ),
        (frame) => expectProtocolError(frame),
      ),
      { numRuns: 25 },
    );
  });

  test('an oversized frame closes the link (ws refuses it before reading it all) and applies nothing', async () => {
    const before = await controller.data.store.lastAuditSeq();
    const { link } = await helloLink(controller, branch);
    link.sendRaw(Buffer.alloc(1024 * 1024 + 1));
    assert.equal(await link.closed, 1009);
    assert.equal(await controller.data.store.lastAuditSeq(), before);
  });
});

describe('revocation', () => {
  test('revoking an identity pushes revoke to every connected gateway at once, then a delta without it', async () => {
    const carol = await enrollTestDevice(controller.data, 'carol-laptop', { groups: ['eng'] });
    const first = await helloLink(controller, branch);
    const second = await helloLink(controller, other);
    try {
      // carol enrolled after the view was loaded: the next change brings her into the snapshots.
      const added = first.link.next('delta');
      await controller.data.store.appendAudit({ actor: 'test', action: 'enroll', subject: 'carol-laptop' });
      const delta = openDelta((await added) as SignedPolicy, caKey());
      assert.deepEqual(
        delta.upsert.identities.map((identity) => identity.name),
        ['carol-laptop'],
      );

      const pushed = [first.link.next('revoke'), second.link.next('revoke')];
      const removed = first.link.next('delta');
      const started = performance.now();
      const change = await controller.data.store.revokeIdentityWithDevices('carol-laptop', Date.now(), 'cli');
      const [atFirst, atSecond] = await Promise.all(pushed);
      const latency = performance.now() - started;
      for (const revoke of [atFirst, atSecond]) {
        assert.deepEqual(revoke?.keyIds, [carol.keyId]);
        assert.deepEqual(revoke?.serials, [carol.serial]);
        assert.equal(revoke?.reason, 'identity carol-laptop revoked');
      }
      assert.ok(latency < 500, `revoke reached the gateways after ${latency.toFixed(0)} ms`);
      assert.equal(change.audit.action, 'identity.revoke');
      const after = openDelta((await removed) as SignedPolicy, caKey());
      assert.deepEqual(after.remove.identities, [carol.keyId]);
      assert.ok(after.revokedSerials.add.includes(carol.serial));
      assert.equal(after.baseVersion, delta.version);

      const refused = await authorize(first.link, knockBytes(carol, branch, { access: 'tcp/22' }));
      assert.ok(!refused.allow);
      assert.match(refused.reason, /identity carol-laptop is revoked/);
    } finally {
      await first.link.close();
      await second.link.close();
    }
  });

  test('disabling a user shuts out its devices: revoke with their key ids, and their knocks are refused', async () => {
    await controller.data.store.createIdentity({ name: 'dave', kind: 'user' });
    const phone = await enrollTestDevice(controller.data, 'dave-phone', { groups: ['eng'], owner: 'dave' });
    const { link } = await helloLink(controller, branch);
    try {
      const pushed = link.next('revoke');
      await controller.data.store.setIdentityDisabledWithDevices('dave', true, Date.now(), 'cli');
      assert.deepEqual((await pushed).keyIds, [phone.keyId]);
      const refused = await authorize(link, knockBytes(phone, branch, { access: 'tcp/22' }));
      assert.ok(!refused.allow);
      assert.match(refused.reason, /dave-phone's owner dave is disabled/);
    } finally {
      await link.close();
    }
  });

  test('revoking a certificate pushes its serial', async () => {
    const { link } = await helloLink(controller, branch);
    try {
      const pushed = link.next('revoke');
      await controller.data.store.revokeCertificateWithAudit(bob.serial, Date.now(), 'cli');
      const revoke = await pushed;
      assert.deepEqual([revoke.keyIds, revoke.serials], [[], [bob.serial]]);
    } finally {
      await link.close();
    }
  });

  test('revoking a gateway closes its link at once (4401) and refuses it from then on (401)', async () => {
    const stolen = await enrollTestGateway(controller.data, 'branch-stolen');
    const { link } = await helloLink(controller, stolen);
    await controller.data.store.revokeGateway('branch-stolen', Date.now(), 'cli');
    assert.equal(await link.closed, LINK_CLOSE.unauthorized);
    await assert.rejects(TestLink.open(controller.url, controller.data.ca.pem, stolen), { status: 401 });
  });
});

describe('attestation', () => {
  test("a quarantined gateway's knocks are refused with the reason, until an operator releases it", async () => {
    const { store } = controller.data;
    const box = await enrollTestGateway(controller.data, 'branch-attested');
    await store.createService({
      name: 'ssh-attested',
      gateway: 'branch-attested',
      backend: '10.0.2.6:22',
      mode: 'direct',
    });
    await store.addPolicy({ subject: { kind: 'group', name: 'eng' }, service: 'ssh-attested' });
    const pcrs = { bank: 'sha256' as const, pcrs: { '0': 'a'.repeat(64), '7': 'b'.repeat(64) } };
    await store.recordGatewayAttestation('branch-attested', { state: 'approved', pcrs }, Date.now(), 'test');
    await controller.server.links.views.invalidate(await store.lastAuditSeq());
    const { link } = await helloLink(controller, box);
    try {
      assert.equal((await authorize(link, knockBytes(alice, box, { access: 'tcp/22' }))).allow, true);

      const seq = await store.lastAuditSeq();
      await store.quarantineGateway(
        'branch-attested',
        'PCR 7 differs from its golden value',
        Date.now(),
        'test',
      );
      // No invalidate here: the quarantine reaches the view through the audit log, as from another
      // process; the knock goes once the controller's tail has read it (bounded wait).
      const quarantinedAt = await store.lastAuditSeq();
      for (let waited = 0; controller.server.links.views.current.version < quarantinedAt; waited += 10) {
        assert.ok(waited < 2_000, 'the quarantine did not reach the policy view within 2 s');
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      const refused = await authorize(link, knockBytes(alice, box, { access: 'tcp/22' }));
      assert.ok(!refused.allow);
      assert.equal(
        refused.reason,
        'gateway branch-attested is quarantined: PCR 7 differs from its golden value',
      );
      const denial = (await auditSince(seq)).find((entry) => entry.action === 'knock');
      assert.deepEqual(
        [denial?.actor, denial?.decision, denial?.reason],
        ['gateway:branch-attested', 'deny', refused.reason],
      );

      await store.releaseGateway('branch-attested', Date.now(), 'cli');
      await controller.server.links.views.invalidate(await store.lastAuditSeq());
      assert.equal((await authorize(link, knockBytes(alice, box, { access: 'tcp/22' }))).allow, true);
    } finally {
      await link.close();
    }
  });
});

describe('session and posture reports', () => {
  test('a posture report that fails policy ends that device’s sessions on this gateway', async () => {
    const eve = await enrollTestDevice(controller.data, 'eve-laptop');
    await controller.data.store.addPolicy({
      subject: { kind: 'identity', name: 'eve-laptop' },
      service: 'db',
      requirements: ['disk_encryption=on'],
    });
    const { link } = await helloLink(controller, branch);
    try {
      await controller.server.links.views.invalidate(
        (await controller.data.store.appendAudit({ actor: 'test', action: 'policy.add', subject: 'eve' }))
          .seq,
      );
      const allowed = await authorize(
        link,
        knockBytes(eve, branch, {
          access: `tcp/${TUNNEL_PORT}`,
          service: 'db',
          posture: { disk_encryption: 'on' },
        }),
      );
      assert.ok(allowed.allow);
      const pushed = link.next('revoke');
      link.send({
        t: 'posture',
        keyId: eve.keyId,
        source: '198.51.100.7',
        posture: { disk_encryption: 'off' },
      });
      const revoke = await pushed;
      assert.deepEqual(revoke.sessionIds, [allowed.sessionId]);
      assert.match(revoke.reason, /^posture: policy [0-9a-f]+: posture disk_encryption=on not met/);
      const [session] = (await controller.data.store.listSessions({})).filter(
        (s) => s.id === allowed.sessionId,
      );
      assert.ok(session?.closedAt);
      assert.match(session?.closeReason ?? '', /^posture: /);
    } finally {
      await link.close();
    }
  });

  test('closed and opened-offline reports are recorded; an offline knock that does not verify is ended', async () => {
    const { link } = await helloLink(controller, branch);
    try {
      const allowed = await authorize(link, knockBytes(alice, branch, { access: 'tcp/22' }));
      assert.ok(allowed.allow);
      link.send({ t: 'session', event: 'closed', sessionId: allowed.sessionId, reason: 'pinhole expired' });

      const offline = 'offline-session-1';
      const knock = knockBytes(alice, branch, { access: `tcp/${TUNNEL_PORT}`, service: 'db' });
      link.send({
        t: 'session',
        event: 'opened-offline',
        sessionId: offline,
        knock,
        source: '198.51.100.8',
        service: 'db',
        openedAt: Date.now() - 1_000,
      });
      const forged = link.next('revoke');
      link.send({
        t: 'session',
        event: 'opened-offline',
        sessionId: 'offline-session-2',
        knock: knockBytes(alice, other, { access: `tcp/${TUNNEL_PORT}`, service: 'db' }),
        source: '198.51.100.8',
        service: 'db',
        openedAt: Date.now() - 1_000,
      });
      const revoke = await forged;
      assert.deepEqual(revoke.sessionIds, ['offline-session-2']);
      assert.match(revoke.reason, /signature: does not verify/);

      const entries = await auditSince(0);
      const cached = entries.find((entry) => entry.details.session === offline);
      assert.equal(cached?.decision, 'allow');
      assert.equal(cached?.details.decidedBy, 'gateway-cache');
      const sessions = await controller.data.store.listSessions({});
      assert.equal(
        sessions.find((session) => session.id === allowed.sessionId)?.closeReason,
        'pinhole expired',
      );
      assert.ok(
        sessions.some((session) => session.id === cached?.details.storeSession && session.closedAt === null),
      );
    } finally {
      await link.close();
    }
  });
});
