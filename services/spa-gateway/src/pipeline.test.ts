// The knock pipeline end to end in memory: real SPA packets, an in-memory capture and firewall,
// a clock we move by hand. Every path must open exactly the pinholes it should and no others.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, beforeEach, describe, test } from 'node:test';
import {
  ed25519PublicKeyObject,
  generateGatewayKeyPair,
  generateIdentity,
  type Identity,
  type KnockRequest,
  SpaReceiver,
  sealKnock,
} from '@umbra/protocol';
import fc from 'fast-check';
import { pino } from 'pino';
import { parseAccessRule } from './access.ts';
import { SourceBudget } from './budget.ts';
import { MemoryCapture } from './capture.ts';
import type { Client } from './config.ts';
import { MemoryFirewall } from './firewall/index.ts';
import { KnockPipeline } from './pipeline.ts';
import { Rejections } from './rejections.ts';
import { ReplayGuard } from './replay.ts';

const root = mkdtempSync(join(tmpdir(), 'umbra-pipeline-'));
after(() => rmSync(root, { recursive: true, force: true }));

const gatewayKeys = generateGatewayKeyPair();
const alice = generateIdentity();
const mallory = generateIdentity(); // not in the policy

function clientOf(
  name: string,
  identity: Identity,
  allow: string[],
  ttlSeconds = 30,
  requireSourceBinding = false,
): Client {
  return {
    name,
    identityId: identity.id,
    publicKey: ed25519PublicKeyObject(identity.publicKey),
    allow: allow.map((rule) => parseAccessRule(rule)!),
    ttlSeconds,
    requireSourceBinding,
  };
}

interface Rig {
  now: number;
  capture: MemoryCapture;
  firewall: MemoryFirewall;
  rejections: Rejections;
  pipeline: KnockPipeline;
  stateDir: string;
}

let rig: Rig;
let stateCounter = 0;

function build(options: { stateDir?: string; requireSourceBinding?: boolean; burst?: number } = {}): Rig {
  const clock = { now: 1_800_000_000_000 };
  const now = () => clock.now;
  const stateDir = options.stateDir ?? mkdtempSync(join(root, `s${stateCounter++}-`));
  const firewall = new MemoryFirewall({ now });
  firewall.install();
  const log = pino({ level: 'silent' });
  const rejections = new Rejections(log, 0);
  const pipeline = new KnockPipeline({
    receiver: new SpaReceiver(gatewayKeys.privateKey),
    clients: [
      clientOf('alice', alice, ['tcp/22', 'udp/5000-5010'], 10, options.requireSourceBinding ?? false),
    ],
    budget: new SourceBudget({
      perSecond: 1,
      burst: options.burst ?? 100,
      totalPerSecond: 1000,
      totalBurst: 1000,
      now,
    }),
    replay: new ReplayGuard({ stateDir, windowMs: 30_000, now, notBeforeMs: 0 }),
    firewall,
    rejections,
    log,
  });
  const capture = new MemoryCapture();
  capture.start((datagram) => pipeline.handle(datagram));
  const built = { capture, firewall, rejections, pipeline, stateDir } as Rig;
  Object.defineProperty(built, 'now', { get: () => clock.now, set: (v: number) => (clock.now = v) });
  return built;
}

beforeEach(() => {
  rig = build();
});

function knockBy(identity: Identity, request: Partial<KnockRequest> & { access: string }): Buffer {
  return sealKnock({
    gatewayPublicKey: gatewayKeys.publicKey,
    identity,
    knock: { timestampMs: rig.now, ...request },
  });
}

const counts = () => Object.fromEntries(Object.entries(rig.rejections.counts).filter(([, n]) => n > 0));

test('a valid knock opens exactly the requested pinhole for the sender, with the client TTL', () => {
  rig.capture.inject('192.0.2.20', knockBy(alice, { access: 'tcp/22' }));
  assert.deepEqual(rig.firewall.list(), [
    { source: '192.0.2.20', protocol: 'tcp', port: 22, ttlSeconds: 10, secondsLeft: 10 },
  ]);
  assert.equal(rig.pipeline.accepted, 1);
  assert.deepEqual(counts(), {});
  rig.now += 10_000;
  assert.deepEqual(rig.firewall.list(), [], 'the pinhole expires after its TTL');
});

test('IPv6 sources get IPv6 pinholes; ranges in allow are honoured', () => {
  rig.capture.inject('2001:db8::20', knockBy(alice, { access: 'udp/5005' }));
  assert.deepEqual(
    rig.firewall.list().map((p) => [p.source, p.protocol, p.port]),
    [['2001:db8::20', 'udp', 5005]],
  );
});

test('garbage is dropped at the cheapest check that catches it', () => {
  rig.capture.inject('192.0.2.30', Buffer.alloc(10));
  rig.capture.inject('192.0.2.30', Buffer.alloc(600, 1));
  const wrongMac = knockBy(alice, { access: 'tcp/22' });
  wrongMac[5] = wrongMac[5]! ^ 1;
  rig.capture.inject('192.0.2.30', wrongMac);
  const wrongGateway = sealKnock({
    gatewayPublicKey: generateGatewayKeyPair().publicKey,
    identity: alice,
    knock: { access: 'tcp/22', timestampMs: rig.now },
  });
  rig.capture.inject('192.0.2.30', wrongGateway);
  assert.deepEqual(counts(), { size: 2, mac1: 2 });
  assert.deepEqual(rig.firewall.list(), []);
});

test('an identity outside the policy opens nothing', () => {
  rig.capture.inject('192.0.2.40', knockBy(mallory, { access: 'tcp/22' }));
  assert.deepEqual(counts(), { 'unknown-identity': 1 });
  assert.deepEqual(rig.firewall.list(), []);
});

test('a port that is not granted stays closed', () => {
  rig.capture.inject('192.0.2.20', knockBy(alice, { access: 'tcp/23' }));
  rig.capture.inject('192.0.2.20', knockBy(alice, { access: 'tcp/5005', timestampMs: rig.now + 1 }));
  assert.deepEqual(counts(), { 'not-allowed': 2 });
  assert.deepEqual(rig.firewall.list(), []);
});

test('replays are refused: same address, other address, and after a restart', () => {
  const packet = knockBy(alice, { access: 'tcp/22' });
  rig.capture.inject('192.0.2.20', packet);
  rig.now += 11_000; // the first pinhole has expired
  rig.capture.inject('192.0.2.20', packet);
  rig.capture.inject('192.0.2.66', packet);
  assert.deepEqual(counts(), { replay: 2 });
  assert.deepEqual(rig.firewall.list(), []);

  const restarted = build({ stateDir: rig.stateDir });
  restarted.now = rig.now;
  restarted.capture.inject('192.0.2.66', packet);
  assert.deepEqual(Object.fromEntries(Object.entries(restarted.rejections.counts).filter(([, n]) => n > 0)), {
    replay: 1,
  });
  assert.deepEqual(restarted.firewall.list(), []);
});

test('timestamps outside the window are refused', () => {
  rig.capture.inject('192.0.2.20', knockBy(alice, { access: 'tcp/22', timestampMs: rig.now - 31_000 }));
  rig.capture.inject('192.0.2.20', knockBy(alice, { access: 'tcp/22', timestampMs: rig.now + 31_000 }));
  assert.deepEqual(counts(), { 'time-window': 2 });
});

test('a knock bound to one address opens nothing from another', () => {
  rig.capture.inject('192.0.2.99', knockBy(alice, { access: 'tcp/22', claimedSource: '192.0.2.20' }));
  assert.deepEqual(counts(), { 'source-mismatch': 1 });
  rig.capture.inject(
    '192.0.2.20',
    knockBy(alice, { access: 'tcp/22', claimedSource: '192.0.2.20', timestampMs: rig.now + 1 }),
  );
  assert.equal(rig.firewall.list().length, 1);
});

test('requireSourceBinding refuses knocks that name no address', () => {
  rig = build({ requireSourceBinding: true });
  rig.capture.inject('192.0.2.20', knockBy(alice, { access: 'tcp/22' }));
  assert.deepEqual(counts(), { 'source-mismatch': 1 });
  assert.deepEqual(rig.firewall.list(), []);
});

test('a source over its budget gets no public-key work', () => {
  rig = build({ burst: 2 });
  for (let i = 0; i < 4; i++)
    rig.capture.inject('192.0.2.20', knockBy(alice, { access: 'tcp/22', timestampMs: rig.now + i }));
  assert.equal(rig.pipeline.accepted, 2);
  assert.deepEqual(counts(), { budget: 2 });
});

test('a firewall failure is a rejection, not a crash, and the knock stays spent', () => {
  const packet = knockBy(alice, { access: 'tcp/22' });
  const broken = new MemoryFirewall(); // never installed: open() throws
  const admission = rig.pipeline.admission as unknown as { firewall: MemoryFirewall };
  admission.firewall = broken;
  rig.capture.inject('192.0.2.20', packet);
  assert.deepEqual(counts(), { firewall: 1 });
  admission.firewall = rig.firewall;
  rig.capture.inject('192.0.2.20', packet);
  assert.deepEqual(counts(), { firewall: 1, replay: 1 });
});

describe('properties', () => {
  test('a knock stamped outside the time window never opens anything', () => {
    fc.assert(
      fc.property(fc.integer({ min: 30_001, max: 10 * 365 * 86_400_000 }), fc.boolean(), (offset, late) => {
        rig = build();
        rig.capture.inject(
          '192.0.2.20',
          knockBy(alice, { access: 'tcp/22', timestampMs: rig.now + (late ? -offset : offset) }),
        );
        assert.deepEqual(rig.firewall.list(), []);
        assert.deepEqual(counts(), { 'time-window': 1 });
      }),
      { numRuns: 50 },
    );
  });

  test('replaying any accepted knock, from any address, in any order, never opens anything', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 25 }), { minLength: 1, maxLength: 6 }),
        fc.array(fc.tuple(fc.nat(), fc.constantFrom('192.0.2.20', '192.0.2.66', '2001:db8::66')), {
          maxLength: 8,
        }),
        (gaps, replays) => {
          rig = build();
          const accepted: Buffer[] = [];
          let stamp = rig.now - 5_000; // still inside the window after the clock moves on below
          for (const gap of gaps) {
            stamp += gap;
            const packet = knockBy(alice, { access: 'tcp/22', timestampMs: stamp });
            rig.capture.inject('192.0.2.20', packet);
            accepted.push(packet);
          }
          assert.equal(rig.pipeline.accepted, gaps.length, JSON.stringify(counts()));
          rig.now += 11_000; // every pinhole has expired
          for (const [pick, source] of replays) rig.capture.inject(source, accepted[pick % accepted.length]!);
          assert.deepEqual(rig.firewall.list(), []);
          assert.equal(rig.rejections.counts.replay, replays.length);
        },
      ),
      { numRuns: 40 },
    );
  });
});
