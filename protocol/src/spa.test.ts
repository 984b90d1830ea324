import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject, randomBytes, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { assertSameKnock, knockArb } from '../test/knock-arbitraries.ts';
import { deriveX25519KeyPair, hpkeSeal } from './hpke.ts';
import {
  ed25519PublicKeyObject,
  encodeKey,
  gatewayKeyIdOf,
  generateGatewayKeyPair,
  generateIdentity,
  type Identity,
  identityIdOf,
  parseIdentityFile,
} from './keys.ts';
import { encodeKnockBody, encodeSealedKnock, type Knock, KnockError } from './knock.ts';
import {
  type OpenResult,
  SPA_AAD,
  SPA_DEFAULT_PORT,
  SPA_HEADER_BYTES,
  SPA_HPKE_INFO,
  SPA_MAX_PACKET_BYTES,
  SPA_MIN_PACKET_BYTES,
  SPA_VERSION,
  SpaReceiver,
  sealKnock,
  spaMac1,
  verifyKnockSignature,
} from './spa.ts';

const gateway = generateGatewayKeyPair();
const receiver = new SpaReceiver(gateway.privateKey);
const alice = generateIdentity();
const aliceKey = ed25519PublicKeyObject(alice.publicKey);
const mallory = generateIdentity();
const malloryKey = ed25519PublicKeyObject(mallory.publicKey);

/** What a client of a real device would plausibly claim, at its largest. */
const REALISTIC_POSTURE = {
  os: 'linux',
  osVersion: '6.12.48+deb13-amd64',
  osBuild: 'Debian GNU/Linux 13 (trixie)',
  arch: 'x86_64',
  diskEncrypted: true,
  firewall: true,
  screenLock: true,
  secureBoot: true,
  patchAgeDays: 12,
  agent: 'umbra 0.1.0',
  serial: 'PF3ABCDE',
  mdmEnrolled: false,
};

type Stage = 'accepted' | 'shape' | 'mac1' | 'decrypt' | 'schema' | 'signature';

/** The receiver's stages in the gateway's order; the first that refuses, or 'accepted'. */
function run(packet: Uint8Array, identityKey: KeyObject = aliceKey, r: SpaReceiver = receiver): Stage {
  if (!r.hasValidShape(packet)) return 'shape';
  if (!r.hasValidMac1(packet)) return 'mac1';
  const opened = r.open(packet);
  if (!opened.ok) return opened.reason;
  if (!r.verifySignature(opened, identityKey)) return 'signature';
  return 'accepted';
}

function opened(result: OpenResult) {
  assert.ok(result.ok, `open failed: ${!result.ok && result.reason}`);
  return result;
}

/** A packet as an enrolled client would build it — for plaintexts sealKnock would never write. */
function sealPlaintext(plaintext: Uint8Array, gatewayPublicKey: Uint8Array = gateway.publicKey): Buffer {
  const { enc, ciphertext } = hpkeSeal(gatewayPublicKey, SPA_HPKE_INFO, SPA_AAD, plaintext);
  const packet = Buffer.concat([Buffer.from([SPA_VERSION]), Buffer.alloc(16), enc, ciphertext]);
  return withMac1(packet, gatewayPublicKey);
}

/** Recomputes mac1, as anyone holding the gateway's public key can. */
function withMac1(packet: Buffer, gatewayPublicKey: Uint8Array = gateway.publicKey): Buffer {
  if (packet.length >= 17) spaMac1(gatewayPublicKey, packet).copy(packet, 1);
  return packet;
}

function signedBody(
  identity: Identity,
  body: Buffer,
  gatewayPublicKey: Uint8Array = gateway.publicKey,
): Buffer {
  const message = Buffer.concat([Buffer.from('umbra knock v1'), gatewayKeyIdOf(gatewayPublicKey), body]);
  return encodeSealedKnock(body, sign(null, message, identity.privateKey));
}

const knock = () =>
  sealKnock({
    gatewayPublicKey: gateway.publicKey,
    identity: alice,
    knock: { access: 'tcp/22', claimedSource: '192.0.2.10', posture: { os: 'linux', diskEncrypted: true } },
  });

describe('constants', () => {
  test('match the design', () => {
    assert.equal(SPA_VERSION, 1);
    assert.equal(SPA_DEFAULT_PORT, 62201);
    assert.equal(SPA_MAX_PACKET_BYTES, 512);
    assert.equal(SPA_HEADER_BYTES, 1 + 16 + 32);
    assert.deepEqual(SPA_HPKE_INFO, Buffer.from('umbra spa v1'));
    assert.deepEqual(SPA_AAD, Buffer.from([1]));
  });

  test('SPA_MIN_PACKET_BYTES is exactly the smallest knock sealKnock can make', () => {
    const packet = sealKnock({
      gatewayPublicKey: gateway.publicKey,
      identity: alice,
      knock: { access: 'tcp/1', timestampMs: 0 },
    });
    assert.equal(packet.length, SPA_MIN_PACKET_BYTES);
    assert.equal(run(packet), 'accepted');
  });
});

describe('sealKnock and SpaReceiver', () => {
  test('a knock roundtrips through every stage', () => {
    const before = Date.now();
    const packet = knock();
    const result = opened(receiver.open(packet));
    assert.equal(run(packet), 'accepted');
    const k = result.knock;
    assert.deepEqual(k.identityId, alice.id);
    assert.ok(k.timestampMs >= before && k.timestampMs <= Date.now());
    assert.equal(k.nonce.length, 16);
    assert.equal(k.claimedSource, '192.0.2.10');
    assert.equal(k.access, 'tcp/22');
    assert.deepEqual({ ...k.posture }, { os: 'linux', diskEncrypted: true });
    assert.deepEqual(result.body, encodeKnockBody(k));
  });

  test('the layout is version | mac1 | enc | ciphertext', () => {
    const packet = knock();
    assert.equal(packet[0], SPA_VERSION);
    assert.deepEqual(packet.subarray(1, 17), spaMac1(gateway.publicKey, packet));
  });

  test('each knock has a fresh nonce and ephemeral key', () => {
    const a = opened(receiver.open(knock()));
    const b = opened(receiver.open(knock()));
    assert.notDeepEqual(a.knock.nonce, b.knock.nonce);
    assert.notDeepEqual(knock().subarray(17, 49), knock().subarray(17, 49));
  });

  test('given identity id, timestamp and nonce are kept', () => {
    const nonce = randomBytes(16);
    const packet = sealKnock({
      gatewayPublicKey: gateway.publicKey,
      identity: alice,
      knock: { access: 'udp/53', timestampMs: 1_763_700_000_123, nonce, identityId: mallory.id },
    });
    const k = opened(receiver.open(packet)).knock;
    assert.equal(k.timestampMs, 1_763_700_000_123);
    assert.deepEqual(k.nonce, nonce);
    assert.deepEqual(k.identityId, mallory.id);
  });

  test('a realistic posture at its largest fits in 512 bytes, with the largest other fields', () => {
    const packet = sealKnock({
      gatewayPublicKey: gateway.publicKey,
      identity: alice,
      knock: {
        access: 'tcp/65535',
        claimedSource: '2001:db8:1234:5678:9abc:def0:1234:5678',
        posture: REALISTIC_POSTURE,
        timestampMs: Number.MAX_SAFE_INTEGER,
      },
    });
    assert.ok(packet.length <= SPA_MAX_PACKET_BYTES, `${packet.length} bytes`);
    assert.equal(run(packet), 'accepted');
  });

  test('a posture too large for a packet is refused, naming posture', () => {
    const posture = Object.fromEntries(
      Array.from({ length: 16 }, (_, i) => [`claim-${i}`.padEnd(32, 'x'), 'v'.repeat(64)]),
    );
    assert.throws(
      () =>
        sealKnock({
          gatewayPublicKey: gateway.publicKey,
          identity: alice,
          knock: { access: 'tcp/22', posture },
        }),
      (error: unknown) =>
        error instanceof KnockError &&
        /^knock\.posture: too large .* over the 512-byte limit/.test(error.message),
    );
  });

  test('malformed knocks are refused, naming the field', () => {
    const seal =
      (k: Partial<Knock>, key: Uint8Array = gateway.publicKey) =>
      () =>
        sealKnock({ gatewayPublicKey: key, identity: alice, knock: { access: 'tcp/22', ...k } });
    assert.throws(seal({ access: 'tcp/99999' }), /^KnockError: knock\.access: /);
    assert.throws(seal({ claimedSource: 'example.net' }), /^KnockError: knock\.claimedSource: /);
    assert.throws(
      seal({}, Buffer.alloc(31)),
      /^KnockError: gatewayPublicKey: expected the gateway's 32-byte/,
    );
    const notEd25519 = { ...alice, privateKey: generateKeyPairSync('x25519').privateKey };
    assert.throws(
      () =>
        sealKnock({ gatewayPublicKey: gateway.publicKey, identity: notEd25519, knock: { access: 'tcp/22' } }),
      /identity\.privateKey: expected an Ed25519 key, got x25519/,
    );
  });
});

describe('hasValidShape', () => {
  test('bounds and version', () => {
    const sized = (n: number, version = SPA_VERSION) => Buffer.alloc(n, 0).fill(version, 0, 1);
    assert.ok(!receiver.hasValidShape(sized(SPA_MIN_PACKET_BYTES - 1)));
    assert.ok(receiver.hasValidShape(sized(SPA_MIN_PACKET_BYTES)));
    assert.ok(receiver.hasValidShape(sized(SPA_MAX_PACKET_BYTES)));
    assert.ok(!receiver.hasValidShape(sized(SPA_MAX_PACKET_BYTES + 1)));
    assert.ok(!receiver.hasValidShape(sized(300, 0)));
    assert.ok(!receiver.hasValidShape(sized(300, 2)));
    assert.ok(!receiver.hasValidShape(Buffer.alloc(0)));
  });
});

describe('rejection', () => {
  const packet = knock();

  test('every single-bit flip, at every position', () => {
    for (let bit = 0; bit < packet.length * 8; bit++) {
      const copy = Buffer.from(packet);
      copy[bit >> 3]! ^= 1 << (bit & 7);
      const stage = run(copy);
      assert.notEqual(stage, 'accepted', `bit ${bit}`);
      // mac1 covers everything after itself, so outsiders never get past it.
      if (bit >= 8) assert.equal(stage, 'mac1', `bit ${bit}`);
    }
  });

  test('every single-bit flip after mac1, by a holder of the gateway public key (mac1 recomputed)', () => {
    for (let bit = 17 * 8; bit < packet.length * 8; bit++) {
      const copy = Buffer.from(packet);
      copy[bit >> 3]! ^= 1 << (bit & 7);
      assert.equal(run(withMac1(copy)), 'decrypt', `bit ${bit}`);
    }
  });

  test('single-bit flips of any sealed knock (property)', () => {
    fc.assert(
      fc.property(knockArb, fc.nat(), fc.boolean(), (k, position, recomputeMac1) => {
        const sealed = sealKnock({ gatewayPublicKey: gateway.publicKey, identity: alice, knock: k });
        // With mac1 recomputed, a flip inside mac1 would simply be undone; flip elsewhere.
        const bits = recomputeMac1 ? sealed.length * 8 - 128 : sealed.length * 8;
        let bit = position % bits;
        if (recomputeMac1 && bit >= 8) bit += 128;
        sealed[bit >> 3]! ^= 1 << (bit & 7);
        if (recomputeMac1) withMac1(sealed);
        assert.notEqual(run(sealed, ed25519PublicKeyObject(alice.publicKey)), 'accepted');
      }),
      { numRuns: 300 },
    );
  });

  test('every truncation', () => {
    for (let length = 0; length < packet.length; length++) {
      const short = Buffer.from(packet.subarray(0, length));
      assert.notEqual(run(short), 'accepted', `length ${length}`);
      assert.notEqual(run(withMac1(short)), 'accepted', `length ${length}, mac1 recomputed`);
    }
  });

  test('any extension (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 300 }), fc.boolean(), (extra, recomputeMac1) => {
        const long = Buffer.concat([packet, extra]);
        if (recomputeMac1) withMac1(long);
        const stage = run(long);
        assert.ok(
          recomputeMac1 ? stage === 'shape' || stage === 'decrypt' : stage === 'shape' || stage === 'mac1',
        );
      }),
      { numRuns: 500 },
    );
  });

  test('a knock for another gateway', () => {
    const other = generateGatewayKeyPair();
    const forOther = sealKnock({
      gatewayPublicKey: other.publicKey,
      identity: alice,
      knock: { access: 'tcp/22' },
    });
    assert.equal(run(forOther), 'mac1');
    assert.equal(run(withMac1(Buffer.from(forOther))), 'decrypt');
    assert.equal(run(forOther, aliceKey, new SpaReceiver(other.privateKey)), 'accepted');
  });

  test('a knock signed for another gateway, sealed to this one', () => {
    const other = generateGatewayKeyPair();
    const body = encodeKnockBody({
      identityId: alice.id,
      timestampMs: Date.now(),
      nonce: randomBytes(16),
      access: 'tcp/22',
    });
    assert.equal(run(sealPlaintext(signedBody(alice, body, other.publicKey))), 'signature');
    assert.equal(run(sealPlaintext(signedBody(alice, body))), 'accepted');
  });

  test('an unknown identity: checked against another identity key', () => {
    assert.equal(run(packet, malloryKey), 'signature');
  });

  test('a wrong identity key: signed by one identity, claiming another', () => {
    const forged = sealKnock({
      gatewayPublicKey: gateway.publicKey,
      identity: mallory,
      knock: { access: 'tcp/22', identityId: alice.id },
    });
    const result = opened(receiver.open(forged));
    assert.deepEqual(result.knock.identityId, alice.id);
    assert.ok(!receiver.verifySignature(result, aliceKey));
  });

  test('a signature over a different body', () => {
    const result = opened(receiver.open(packet));
    const other = opened(receiver.open(knock()));
    assert.ok(!receiver.verifySignature({ body: result.body, signature: other.signature }, aliceKey));
  });

  test('keys that are not Ed25519 public keys are refused, not used', () => {
    const result = opened(receiver.open(packet));
    assert.ok(!receiver.verifySignature(result, generateKeyPairSync('x25519').publicKey));
    assert.ok(
      !receiver.verifySignature(result, generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey),
    );
    assert.ok(!receiver.verifySignature(result, alice.privateKey));
    assert.ok(receiver.verifySignature(result, aliceKey));
  });

  test('a well-sealed plaintext that is not a knock', () => {
    assert.equal(run(sealPlaintext(Buffer.from('hello'.repeat(30)))), 'schema');
    assert.equal(run(sealPlaintext(Buffer.alloc(200))), 'schema');
    const body = encodeKnockBody({
      identityId: alice.id,
      timestampMs: 1,
      nonce: randomBytes(16),
      access: 'tcp/22',
    });
    const sealed = signedBody(alice, body);
    assert.equal(run(sealPlaintext(Buffer.concat([sealed, Buffer.from([0])]))), 'schema');
  });

  test('random packets never throw, at any stage', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), fc.boolean(), (bytes, recomputeMac1) => {
        const p = Buffer.from(bytes);
        if (recomputeMac1) withMac1(p);
        receiver.hasValidShape(p);
        receiver.hasValidMac1(p);
        const result = receiver.open(p);
        assert.ok(!result.ok);
        receiver.verifySignature({ body: p, signature: p.subarray(0, 64) }, aliceKey);
      }),
      { numRuns: 300 },
    );
  });
});

describe('properties', () => {
  test('every knock that fits roundtrips through every stage', () => {
    fc.assert(
      fc.property(knockArb, (k) => {
        const packet = sealKnock({ gatewayPublicKey: gateway.publicKey, identity: alice, knock: k });
        assert.ok(packet.length >= SPA_MIN_PACKET_BYTES && packet.length <= SPA_MAX_PACKET_BYTES);
        assert.equal(run(packet), 'accepted');
        assertSameKnock(opened(receiver.open(packet)).knock, k);
      }),
      { numRuns: 200 },
    );
  });
});

describe('the example packet in test/fixtures/spa-v1-example.json', () => {
  const example = JSON.parse(
    readFileSync(new URL('../test/fixtures/spa-v1-example.json', import.meta.url), 'utf8'),
  );
  const hex = (text: string) => Buffer.from(text, 'hex');
  const gatewayPrivateKey = hex(example.inputs.gatewayPrivateKey);
  const exampleReceiver = new SpaReceiver(gatewayPrivateKey);
  const identitySeed = hex(example.inputs.identitySeed);
  const identity = parseIdentityFile(
    JSON.stringify({
      umbra: 'identity',
      version: 1,
      algorithm: 'ed25519',
      publicKey: encodeKey(hex(example.derived.identityPublicKey)),
      privateKey: encodeKey(identitySeed),
    }),
    'example identity',
  );
  const knockInput: Knock = {
    ...example.inputs.knock,
    identityId: identity.id,
    nonce: hex(example.inputs.knock.nonce),
  };

  test('derived keys and ids', () => {
    assert.deepEqual(exampleReceiver.publicKey, hex(example.derived.gatewayPublicKey));
    assert.deepEqual(exampleReceiver.gatewayKeyId, hex(example.derived.gatewayKeyId));
    assert.deepEqual(identityIdOf(identity.publicKey), hex(example.derived.identityId));
  });

  test('is rebuilt byte for byte from its inputs', () => {
    const body = encodeKnockBody(knockInput);
    assert.deepEqual(body, hex(example.body));
    const plaintext = signedBody(identity, body, exampleReceiver.publicKey);
    assert.deepEqual(plaintext, hex(example.plaintext));
    const { enc, ciphertext } = hpkeSeal(
      exampleReceiver.publicKey,
      SPA_HPKE_INFO,
      SPA_AAD,
      plaintext,
      hex(example.inputs.ephemeralIkm),
    );
    const packet = Buffer.concat([Buffer.from([SPA_VERSION]), Buffer.alloc(16), enc, ciphertext]);
    withMac1(packet, exampleReceiver.publicKey);
    assert.deepEqual(packet, hex(example.packet));
    assert.deepEqual(deriveX25519KeyPair(hex(example.inputs.ephemeralIkm)).publicKey, hex(example.enc));
  });

  test('is accepted, and sealKnock writes the same plaintext for the same knock', () => {
    const packet = hex(example.packet);
    const identityKey = ed25519PublicKeyObject(identity.publicKey);
    assert.equal(run(packet, identityKey, exampleReceiver), 'accepted');
    const fresh = sealKnock({ gatewayPublicKey: exampleReceiver.publicKey, identity, knock: knockInput });
    const ours = opened(exampleReceiver.open(fresh));
    const theirs = opened(exampleReceiver.open(packet));
    assert.deepEqual(ours.body, theirs.body);
    assert.deepEqual(ours.signature, theirs.signature); // Ed25519 is deterministic
    assertSameKnock(theirs.knock, knockInput);
  });
});

describe('verifyKnockSignature: the controller checks a forwarded knock itself', () => {
  const gateway = generateGatewayKeyPair();
  const identity = generateIdentity();
  const receiver = new SpaReceiver(gateway.privateKey);
  const opened = receiver.open(
    sealKnock({ gatewayPublicKey: gateway.publicKey, identity, knock: { access: 'tcp/22' } }),
  );
  assert.ok(opened.ok);
  const key = ed25519PublicKeyObject(identity.publicKey);

  test('accepts what the identity signed for this gateway', () => {
    assert.equal(verifyKnockSignature(opened.body, opened.signature, receiver.gatewayKeyId, key), true);
  });

  test('refuses another gateway key id, another identity, an altered body or signature', () => {
    const otherGateway = gatewayKeyIdOf(generateGatewayKeyPair().publicKey);
    assert.equal(verifyKnockSignature(opened.body, opened.signature, otherGateway, key), false);
    const otherKey = ed25519PublicKeyObject(generateIdentity().publicKey);
    assert.equal(verifyKnockSignature(opened.body, opened.signature, receiver.gatewayKeyId, otherKey), false);
    fc.assert(
      fc.property(fc.nat(opened.body.length * 8 - 1), (bit) => {
        const body = Buffer.from(opened.body);
        body[bit >> 3] = body[bit >> 3]! ^ (1 << (bit & 7));
        assert.equal(verifyKnockSignature(body, opened.signature, receiver.gatewayKeyId, key), false);
      }),
      { numRuns: 200 },
    );
    const signature = Buffer.from(opened.signature);
    signature[0] = signature[0]! ^ 1;
    assert.equal(verifyKnockSignature(opened.body, signature, receiver.gatewayKeyId, key), false);
  });
});
