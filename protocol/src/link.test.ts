import assert from 'node:assert/strict';
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { describe, test } from 'node:test';
import { Encoder } from 'cbor-x';
import fc from 'fast-check';
import {
  decodeToController,
  decodeToGateway,
  encodeLinkMessage,
  LINK_MAX_MESSAGE_BYTES,
  LinkMessageError,
  type ToControllerMessage,
  type ToGatewayMessage,
} from './link.ts';
import {
  applyDelta,
  diffSnapshots,
  isEmptyDelta,
  openDelta,
  openSnapshot,
  PolicySignatureError,
  type PolicySnapshot,
  signDelta,
  signSnapshot,
} from './link-policy.ts';

const plain = new Encoder({ useRecords: false, pack: false, tagUint8Array: false, mapsAsObjects: true });

const toController: ToControllerMessage[] = [
  {
    t: 'hello',
    version: 1,
    snapshotVersion: null,
    endpoint: { host: '192.0.2.1', spaPort: 62201, tunnelPort: 8443 },
  },
  { t: 'authorize', id: 7, knock: new Uint8Array(200), source: '2001:db8::7' },
  { t: 'session', event: 'closed', sessionId: 's1', reason: 'expired', bytesIn: 10, bytesOut: 20 },
  {
    t: 'posture',
    keyId: 'ab'.repeat(16),
    source: '192.0.2.9',
    posture: { os: 'linux', diskEncryption: true },
  },
  { t: 'health', uptimeSeconds: 3, acceptedKnocks: 1, rejectedKnocks: 2, liveTunnels: 0, snapshotVersion: 4 },
];
const toGateway: ToGatewayMessage[] = [
  { t: 'snapshot', payload: new Uint8Array(10), signature: new Uint8Array(64) },
  {
    t: 'decision',
    id: 7,
    allow: true,
    sessionId: 's1',
    identity: 'alice-laptop',
    keyId: 'cd'.repeat(16),
    service: 'db',
    mode: 'tunnel',
    backend: '10.0.0.5:5432',
    access: 'tcp/8443',
    ttlSeconds: 30,
  },
  { t: 'decision', id: 8, allow: false, reason: 'no policy lets alice reach db' },
  { t: 'revoke', keyIds: ['ab'.repeat(16)], serials: ['01ff'], sessionIds: [], reason: 'identity revoked' },
];

describe('link messages', () => {
  test('every message type survives encoding, in its own direction only', () => {
    for (const message of toController) {
      assert.deepEqual(normalise(decodeToController(encodeLinkMessage(message))), normalise(message));
      assert.throws(() => decodeToGateway(encodeLinkMessage(message)), LinkMessageError);
    }
    for (const message of toGateway) {
      assert.deepEqual(normalise(decodeToGateway(encodeLinkMessage(message))), normalise(message));
      assert.throws(() => decodeToController(encodeLinkMessage(message)), LinkMessageError);
    }
  });

  test('refuses unknown fields, wrong types, bad addresses and oversized parts, naming the field', () => {
    const bad: [unknown, RegExp][] = [
      [{ ...toController[1], extra: 1 }, /authorize/],
      [{ ...toController[1], source: 'not-an-ip' }, /source/],
      [{ ...toController[1], knock: new Uint8Array(513) }, /knock/],
      [{ ...toController[1], id: -1 }, /id/],
      [{ ...toController[3], keyId: 'AB'.repeat(16) }, /keyId/],
      [
        { t: 'hello', version: 2, snapshotVersion: null, endpoint: { host: 'x', spaPort: 1, tunnelPort: 1 } },
        /version/,
      ],
      [{ t: 'nonsense' }, /nonsense/],
      [[1, 2, 3], /untyped/],
    ];
    for (const [value, reason] of bad)
      assert.throws(
        () => decodeToController(plain.encode(value)),
        (error: Error) => {
          assert.ok(error instanceof LinkMessageError);
          assert.match(error.message, reason);
          return true;
        },
      );
  });

  test('refuses empty, oversized, truncated and trailing-garbage frames', () => {
    const frame = encodeLinkMessage(toController[0]!);
    assert.throws(() => decodeToController(new Uint8Array(0)), LinkMessageError);
    assert.throws(() => decodeToController(new Uint8Array(LINK_MAX_MESSAGE_BYTES + 1)), LinkMessageError);
    assert.throws(() => decodeToController(frame.subarray(0, frame.length - 1)), LinkMessageError);
    assert.throws(() => decodeToController(Buffer.concat([frame, Buffer.from([0])])), LinkMessageError);
  });

  test('random and mutated frames are refused with LinkMessageError, never another throw', () => {
    const valid = [...toController.map(encodeLinkMessage), ...toGateway.map(encodeLinkMessage)];
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ minLength: 0, maxLength: 300 }),
          fc
            .tuple(fc.constantFrom(...valid), fc.nat(), fc.integer({ min: 0, max: 255 }))
            .map(([frame, at, byte]) => {
              const copy = Buffer.from(frame);
              copy[at % copy.length] = byte;
              return copy;
            }),
        ),
        (frame) => {
          for (const decode of [decodeToController, decodeToGateway]) {
            try {
              decode(frame);
            } catch (error) {
              if (!(error instanceof LinkMessageError)) throw error;
            }
          }
        },
      ),
      { numRuns: 3000 },
    );
  });
});

const ca = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });

function snapshot(overrides: Partial<PolicySnapshot> = {}): PolicySnapshot {
  return {
    version: 10,
    issuedAt: 1_763_700_000_000,
    gateway: 'branch-1',
    timeZone: 'UTC',
    identities: [
      { keyId: 'ab'.repeat(16), name: 'alice', publicKey: new Uint8Array(32).fill(1), groups: ['staff'] },
    ],
    services: [{ name: 'db', mode: 'tunnel', backend: '10.0.0.5:5432' }],
    policies: [
      {
        id: 'p1',
        subject: { kind: 'group', name: 'staff' },
        service: 'db',
        requirements: ['diskEncryption=true'],
        hours: null,
        days: null,
        maxTtlSeconds: 30,
      },
    ],
    revokedSerials: ['0a'],
    ...overrides,
  };
}

describe('signed policy', () => {
  test('a signed snapshot opens with the CA public key and not with another', () => {
    const signed = signSnapshot(snapshot(), ca.privateKey);
    assert.deepEqual(normalise(openSnapshot(signed, createPublicKey(ca.privateKey))), normalise(snapshot()));
    assert.throws(() => openSnapshot(signed, other.publicKey), PolicySignatureError);
  });

  test('a flipped bit in payload or signature is refused', () => {
    const signed = signSnapshot(snapshot(), ca.privateKey);
    fc.assert(
      fc.property(fc.boolean(), fc.nat(), fc.integer({ min: 0, max: 7 }), (inPayload, at, bit) => {
        const payload = Buffer.from(signed.payload);
        const signature = Buffer.from(signed.signature);
        const target = inPayload ? payload : signature;
        target[at % target.length]! ^= 1 << bit;
        assert.throws(() => openSnapshot({ payload, signature }, ca.publicKey), PolicySignatureError);
      }),
      { numRuns: 200 },
    );
  });

  test('a snapshot signature is not a delta signature', () => {
    const signed = signSnapshot(snapshot(), ca.privateKey);
    assert.throws(() => openDelta(signed, ca.publicKey), PolicySignatureError);
  });

  test('applyDelta(a, diffSnapshots(a, b)) is b, through signing', () => {
    const name = fc.stringMatching(/^[a-z][a-z0-9]{0,7}$/);
    const identities = fc.uniqueArray(
      fc.record({
        keyId: fc.stringMatching(/^[0-9a-f]{32}$/),
        name,
        publicKey: fc.uint8Array({ minLength: 32, maxLength: 32 }),
        groups: fc.array(name, { maxLength: 3 }),
      }),
      { selector: (i) => i.keyId, maxLength: 5 },
    );
    const services = fc.uniqueArray(
      fc.record({
        name,
        mode: fc.constantFrom('tunnel' as const, 'direct' as const),
        backend: fc.constant('h:1'),
      }),
      { selector: (s) => s.name, maxLength: 4 },
    );
    const serials = fc.uniqueArray(fc.stringMatching(/^[0-9a-f]{2,8}$/), { maxLength: 5 });
    fc.assert(
      fc.property(identities, services, serials, identities, services, serials, (i1, s1, r1, i2, s2, r2) => {
        const a = snapshot({ identities: i1, services: s1, revokedSerials: r1, policies: [] });
        const b = snapshot({ version: 11, identities: i2, services: s2, revokedSerials: r2, policies: [] });
        const delta = openDelta(signDelta(diffSnapshots(a, b), ca.privateKey), ca.publicKey);
        const applied = applyDelta(a, delta);
        assert.deepEqual(sorted(applied), sorted(b));
        assert.equal(isEmptyDelta(diffSnapshots(a, a)), true);
      }),
      { numRuns: 200 },
    );
  });

  test('a delta for another version or gateway is refused', () => {
    const a = snapshot();
    const delta = diffSnapshots(a, snapshot({ version: 12 }));
    assert.throws(() => applyDelta(snapshot({ version: 9 }), delta), /version 10/);
    assert.throws(() => applyDelta(snapshot({ gateway: 'other' }), delta), /gateway/);
  });
});

/** Byte strings as plain arrays, so Buffer and Uint8Array compare equal. */
function normalise(value: unknown): unknown {
  return JSON.parse(
    JSON.stringify(value, (_key, v) =>
      v?.type === 'Buffer' ? v.data : v instanceof Uint8Array ? [...v] : v,
    ),
  );
}

function sorted(s: PolicySnapshot) {
  const by = (k: string) => (x: Record<string, unknown>, y: Record<string, unknown>) =>
    String(x[k]) < String(y[k]) ? -1 : 1;
  return normalise({
    ...s,
    identities: [...s.identities].sort(by('keyId')),
    services: [...s.services].sort(by('name')),
    policies: [...s.policies].sort(by('id')),
    revokedSerials: [...s.revokedSerials].sort(),
  });
}
