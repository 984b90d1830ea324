// The gateway's cached policy: only what the controller's CA key signed, for this gateway, in order,
// is installed; anything else is refused and leaves the cache as it was; a restart reads it back.

import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { diffSnapshots, type PolicySnapshot, signDelta, signSnapshot } from '@umbra/protocol';
import { PolicyCache } from './policy-cache.ts';

const root = mkdtempSync(join(tmpdir(), 'umbra-policy-cache-'));
after(() => rmSync(root, { recursive: true, force: true }));

const ca = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const caPem = ca.publicKey.export({ type: 'spki', format: 'pem' }) as string;
const impostor = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const ALICE = 'ab'.repeat(16);
const BOB = 'cd'.repeat(16);

function snapshot(version: number, keyIds: string[], gateway = 'branch1'): PolicySnapshot {
  return {
    version,
    issuedAt: 1_800_000_000_000,
    gateway,
    timeZone: 'UTC',
    identities: keyIds.map((keyId, i) => ({
      keyId,
      name: `d${i}`,
      publicKey: new Uint8Array(32).fill(i + 1),
      groups: [],
    })),
    services: [{ name: 'db', mode: 'tunnel', backend: '198.51.100.2:5432' }],
    policies: [],
    revokedSerials: [],
  };
}

let dirs = 0;
const fresh = (stateDir = mkdtempSync(join(root, `c${dirs++}-`))) =>
  new PolicyCache({ caPem, gatewayName: 'branch1', stateDir });

describe('PolicyCache', () => {
  test('a snapshot then a delta are installed, and a restart reads both back', () => {
    const stateDir = mkdtempSync(join(root, 'restart-'));
    const cache = fresh(stateDir);
    cache.acceptSnapshot(signSnapshot(snapshot(5, [ALICE]), ca.privateKey));
    cache.acceptDelta(
      signDelta(diffSnapshots(snapshot(5, [ALICE]), snapshot(6, [ALICE, BOB])), ca.privateKey),
    );
    assert.equal(cache.version, 6);
    assert.ok(cache.identity(BOB));
    const again = fresh(stateDir);
    assert.equal(again.load(), undefined);
    assert.equal(again.version, 6);
    assert.ok(again.identity(ALICE) && again.identity(BOB));
  });

  test('out of order, foreign or forged policy is refused and changes nothing', () => {
    const cache = fresh();
    const delta = signDelta(diffSnapshots(snapshot(5, [ALICE]), snapshot(6, [ALICE, BOB])), ca.privateKey);
    assert.throws(() => cache.acceptDelta(delta), /before any snapshot/);
    assert.equal(cache.version, null);

    cache.acceptSnapshot(signSnapshot(snapshot(7, [ALICE]), ca.privateKey));
    assert.throws(() => cache.acceptDelta(delta), /applies to version 5/);
    assert.throws(() => cache.acceptSnapshot(signSnapshot(snapshot(6, [BOB]), ca.privateKey)), /older/);
    assert.throws(
      () => cache.acceptSnapshot(signSnapshot(snapshot(8, [BOB], 'branch2'), ca.privateKey)),
      /for gateway branch2/,
    );
    assert.throws(
      () => cache.acceptSnapshot(signSnapshot(snapshot(9, [BOB]), impostor.privateKey)),
      /signature/,
    );
    const signed = signSnapshot(snapshot(9, [BOB]), ca.privateKey);
    const tampered = Buffer.from(signed.payload);
    tampered[tampered.length - 1]! ^= 1;
    assert.throws(
      () => cache.acceptSnapshot({ payload: tampered, signature: signed.signature }),
      /signature/,
    );

    assert.equal(cache.version, 7);
    assert.ok(cache.identity(ALICE));
    assert.equal(cache.identity(BOB), undefined);
  });
});
