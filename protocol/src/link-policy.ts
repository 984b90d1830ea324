// Policy as the controller sends it to one gateway: a snapshot of what that gateway needs to decide
// a knock by itself (the identities that may knock, its services, the policies naming them, the
// revoked certificate serials), and deltas that turn one snapshot into the next.
//
// Both are signed with the controller's CA key (ECDSA P-256, SHA-256), which every gateway already
// holds as ca.crt, over a context string and the CBOR payload. A snapshot names its gateway, so
// one gateway's snapshot cannot be replayed to another, and carries a version that only grows
// (the controller's audit sequence when it was built), so an old one cannot replace a newer one.

import { createHash, type KeyObject, sign, verify } from 'node:crypto';
import { Decoder, Encoder } from 'cbor-x';
import { z } from 'zod';
import { SERVICE_NAME } from './knock.ts';

const SNAPSHOT_CONTEXT = Buffer.from('umbra link policy snapshot v1\0');
const DELTA_CONTEXT = Buffer.from('umbra link policy delta v1\0');

const name = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$/);
const keyId = z.string().regex(/^[0-9a-f]{32}$/);
const serial = z.string().regex(/^[0-9a-f]{1,64}$/);
const uint = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

export const snapshotIdentity = z
  .object({
    keyId,
    name,
    /** Raw Ed25519 public key, 32 bytes. */
    publicKey: z.instanceof(Uint8Array).refine((key) => key.length === 32, { message: 'expected 32 bytes' }),
    groups: z.array(name).max(256),
  })
  .strict();

export const snapshotService = z
  .object({
    name: z.string().regex(SERVICE_NAME),
    mode: z.enum(['tunnel', 'direct']),
    backend: z.string().min(3).max(261),
  })
  .strict();

export const snapshotPolicy = z
  .object({
    id: z.string().min(1).max(64),
    subject: z.object({ kind: z.enum(['identity', 'group']), name }).strict(),
    service: z.string().regex(SERVICE_NAME),
    requirements: z.array(z.string().min(1).max(200)).max(32),
    hours: z.string().max(32).nullable(),
    days: z.string().max(64).nullable(),
    maxTtlSeconds: z.number().int().min(1).max(86_400),
  })
  .strict();

export const policySnapshot = z
  .object({
    version: uint,
    issuedAt: uint,
    gateway: name,
    /** IANA time zone the policies' hours and days are read in. */
    timeZone: z.string().min(1).max(64),
    identities: z.array(snapshotIdentity).max(100_000),
    services: z.array(snapshotService).max(10_000),
    policies: z.array(snapshotPolicy).max(100_000),
    revokedSerials: z.array(serial).max(100_000),
  })
  .strict();

export const policyDelta = z
  .object({
    version: uint,
    /** The snapshot version this delta applies to; any other and the gateway asks for a snapshot. */
    baseVersion: uint,
    issuedAt: uint,
    gateway: name,
    timeZone: z.string().min(1).max(64),
    upsert: z
      .object({
        identities: z.array(snapshotIdentity).max(100_000),
        services: z.array(snapshotService).max(10_000),
        policies: z.array(snapshotPolicy).max(100_000),
      })
      .strict(),
    remove: z
      .object({
        /** keyIds */
        identities: z.array(keyId).max(100_000),
        /** service names */
        services: z.array(z.string().regex(SERVICE_NAME)).max(10_000),
        /** policy ids */
        policies: z.array(z.string().min(1).max(64)).max(100_000),
      })
      .strict(),
    revokedSerials: z
      .object({ add: z.array(serial).max(100_000), remove: z.array(serial).max(100_000) })
      .strict(),
  })
  .strict();

export type SnapshotIdentity = z.infer<typeof snapshotIdentity>;
export type SnapshotService = z.infer<typeof snapshotService>;
export type SnapshotPolicy = z.infer<typeof snapshotPolicy>;
export type PolicySnapshot = z.infer<typeof policySnapshot>;
export type PolicyDelta = z.infer<typeof policyDelta>;

export class PolicySignatureError extends Error {
  override name = 'PolicySignatureError';
}

const encoder = new Encoder({ useRecords: false, pack: false, tagUint8Array: false, mapsAsObjects: true });
const decoder = new Decoder({ useRecords: false, mapsAsObjects: true });

export interface SignedPolicy {
  payload: Uint8Array;
  signature: Uint8Array;
}

function signWith(context: Buffer, value: unknown, caKey: KeyObject): SignedPolicy {
  const payload = Buffer.from(encoder.encode(value));
  const signature = sign('sha256', Buffer.concat([context, payload]), {
    key: caKey,
    dsaEncoding: 'ieee-p1363',
  });
  return { payload, signature };
}

export function signSnapshot(snapshot: PolicySnapshot, caKey: KeyObject): SignedPolicy {
  return signWith(SNAPSHOT_CONTEXT, policySnapshot.parse(snapshot), caKey);
}

export function signDelta(delta: PolicyDelta, caKey: KeyObject): SignedPolicy {
  return signWith(DELTA_CONTEXT, policyDelta.parse(delta), caKey);
}

function openWith<T>(
  context: Buffer,
  signed: SignedPolicy,
  caPublicKey: KeyObject,
  schema: z.ZodType<T>,
  what: string,
): T {
  const ok = verify(
    'sha256',
    Buffer.concat([context, signed.payload]),
    { key: caPublicKey, dsaEncoding: 'ieee-p1363' },
    signed.signature,
  );
  if (!ok)
    throw new PolicySignatureError(`the ${what}'s signature does not verify with the controller's CA key`);
  let value: unknown;
  try {
    value = decoder.decode(signed.payload);
  } catch (error) {
    throw new PolicySignatureError(`the signed ${what} is not CBOR (${(error as Error).message})`);
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new PolicySignatureError(
      `the signed ${what} is malformed: ${issue?.path.join('.')}: ${issue?.message}`,
    );
  }
  return parsed.data;
}

/** Verifies, decodes and checks a signed snapshot; throws PolicySignatureError saying why not. */
export function openSnapshot(signed: SignedPolicy, caPublicKey: KeyObject): PolicySnapshot {
  return openWith(SNAPSHOT_CONTEXT, signed, caPublicKey, policySnapshot, 'policy snapshot');
}

export function openDelta(signed: SignedPolicy, caPublicKey: KeyObject): PolicyDelta {
  return openWith(DELTA_CONTEXT, signed, caPublicKey, policyDelta, 'policy delta');
}

/** What changed from `from` to `to`; applyDelta(from, diffSnapshots(from, to)) equals `to`. */
export function diffSnapshots(from: PolicySnapshot, to: PolicySnapshot): PolicyDelta {
  const changed = <T>(before: readonly T[], after: readonly T[], key: (item: T) => string) => {
    const old = new Map(before.map((item) => [key(item), fingerprint(item)]));
    const now = new Set(after.map(key));
    return {
      upsert: after.filter((item) => old.get(key(item)) !== fingerprint(item)),
      remove: [...old.keys()].filter((k) => !now.has(k)),
    };
  };
  const identities = changed(from.identities, to.identities, (i) => i.keyId);
  const services = changed(from.services, to.services, (s) => s.name);
  const policies = changed(from.policies, to.policies, (p) => p.id);
  const revokedBefore = new Set(from.revokedSerials);
  const revokedAfter = new Set(to.revokedSerials);
  return {
    version: to.version,
    baseVersion: from.version,
    issuedAt: to.issuedAt,
    gateway: to.gateway,
    timeZone: to.timeZone,
    upsert: { identities: identities.upsert, services: services.upsert, policies: policies.upsert },
    remove: { identities: identities.remove, services: services.remove, policies: policies.remove },
    revokedSerials: {
      add: to.revokedSerials.filter((s) => !revokedBefore.has(s)),
      remove: from.revokedSerials.filter((s) => !revokedAfter.has(s)),
    },
  };
}

/** True when a delta changes nothing but the version. */
export function isEmptyDelta(delta: PolicyDelta): boolean {
  const { upsert, remove, revokedSerials } = delta;
  return (
    upsert.identities.length + upsert.services.length + upsert.policies.length === 0 &&
    remove.identities.length + remove.services.length + remove.policies.length === 0 &&
    revokedSerials.add.length + revokedSerials.remove.length === 0
  );
}

/** The snapshot a delta turns `base` into; throws when the delta is for another version or gateway. */
export function applyDelta(base: PolicySnapshot, delta: PolicyDelta): PolicySnapshot {
  if (delta.gateway !== base.gateway)
    throw new PolicySignatureError(`a policy delta for gateway ${delta.gateway} reached ${base.gateway}`);
  if (delta.baseVersion !== base.version)
    throw new PolicySignatureError(
      `the policy delta applies to version ${delta.baseVersion}, but this gateway holds ${base.version}`,
    );
  const merge = <T>(
    items: readonly T[],
    upsert: readonly T[],
    remove: readonly string[],
    key: (item: T) => string,
  ) => {
    const byKey = new Map(items.map((item) => [key(item), item]));
    for (const k of remove) byKey.delete(k);
    for (const item of upsert) byKey.set(key(item), item);
    return [...byKey.values()];
  };
  const revoked = new Set(base.revokedSerials);
  for (const s of delta.revokedSerials.remove) revoked.delete(s);
  for (const s of delta.revokedSerials.add) revoked.add(s);
  return {
    version: delta.version,
    issuedAt: delta.issuedAt,
    gateway: base.gateway,
    timeZone: delta.timeZone,
    identities: merge(base.identities, delta.upsert.identities, delta.remove.identities, (i) => i.keyId),
    services: merge(base.services, delta.upsert.services, delta.remove.services, (s) => s.name),
    policies: merge(base.policies, delta.upsert.policies, delta.remove.policies, (p) => p.id),
    revokedSerials: [...revoked],
  };
}

/** A stable digest of one item, to tell whether it changed. */
function fingerprint(item: unknown): string {
  return createHash('sha256').update(encoder.encode(item)).digest('base64');
}
