// fast-check arbitraries and comparisons for knocks, shared by the knock and SPA tests.

import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ipAddressToBytes } from '../src/address.ts';
import type { Knock, PostureValue } from '../src/knock.ts';

export const postureArb = fc.dictionary(
  fc.string({ unit: 'binary', minLength: 1, maxLength: 6 }),
  fc.oneof(
    fc.string({ unit: 'binary', maxLength: 8 }),
    fc.integer(),
    fc.maxSafeInteger(),
    fc.integer({ min: -(2 ** 40), max: 2 ** 40 }),
    fc.boolean(),
  ),
  { minKeys: 1, maxKeys: 4 },
);

export const knockArb: fc.Arbitrary<Knock> = fc
  .record({
    identityId: fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => Buffer.from(b)),
    timestampMs: fc.oneof(fc.maxSafeNat(), fc.integer({ min: 1.7e12, max: 2e12 })),
    nonce: fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => Buffer.from(b)),
    claimedSource: fc.option(fc.oneof(fc.ipV4(), fc.ipV6()), { nil: undefined }),
    access: fc
      .tuple(fc.constantFrom('tcp', 'udp'), fc.integer({ min: 1, max: 65535 }))
      .map(([protocol, port]) => `${protocol}/${port}`),
    posture: fc.option(postureArb, { nil: undefined }),
    service: fc.option(fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/), { nil: undefined }),
  })
  .map((k) => {
    // Leave optional fields out rather than undefined, as a decoded knock has them.
    const out: Knock = {
      identityId: k.identityId,
      timestampMs: k.timestampMs,
      nonce: k.nonce,
      access: k.access,
    };
    if (k.claimedSource !== undefined) out.claimedSource = k.claimedSource;
    if (k.posture !== undefined) out.posture = k.posture;
    if (k.service !== undefined) out.service = k.service;
    return out;
  });

/** Posture as sorted entries, so prototypes and key order do not matter. */
export function postureEntries(posture: Record<string, PostureValue> | undefined) {
  return posture === undefined
    ? undefined
    : Object.entries(posture).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

export function assertSameKnock(actual: Knock, expected: Knock): void {
  assert.deepEqual(actual.identityId, expected.identityId);
  assert.equal(actual.timestampMs, expected.timestampMs);
  assert.deepEqual(actual.nonce, expected.nonce);
  assert.equal(actual.access, expected.access);
  if (expected.claimedSource === undefined) assert.equal(actual.claimedSource, undefined);
  else {
    let bytes = ipAddressToBytes(expected.claimedSource)!;
    if (bytes.length === 16 && bytes.subarray(0, 12).equals(Buffer.from('00000000000000000000ffff', 'hex')))
      bytes = bytes.subarray(12);
    assert.deepEqual(ipAddressToBytes(actual.claimedSource!), bytes);
  }
  assert.deepEqual(postureEntries(actual.posture), postureEntries(expected.posture));
  assert.equal(actual.service, expected.service);
}
