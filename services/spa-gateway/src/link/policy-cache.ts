// The last policy the controller signed for this gateway, verified, kept on disk, and indexed for
// the knock pipeline: which identities may knock (and with which key), which certificate serials
// are revoked, and — while the controller is away, with failMode `cached` — the decision itself.
//
// Only what verifies with the controller's CA key is kept; the file holds the signed snapshot and
// the signed deltas applied since, so a restart re-verifies everything it reads back.

import { createPublicKey, type KeyObject } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Decision, decide, type PolicyRule, policyRule } from '@umbra/policy';
import {
  applyDelta,
  ed25519PublicKeyObject,
  type Knock,
  openDelta,
  openSnapshot,
  type PolicySnapshot,
  type SignedPolicy,
  writeFileAtomic,
} from '@umbra/protocol';

export const POLICY_CACHE_FILE = 'policy.json';

export interface CachedIdentity {
  name: string;
  keyId: string;
  publicKey: KeyObject;
  groups: readonly string[];
}

export interface CachedService {
  name: string;
  mode: 'tunnel' | 'direct';
  backend: string;
}

interface StoredPolicy {
  snapshot: { payload: string; signature: string };
  deltas: { payload: string; signature: string }[];
}

/** Deltas kept after the snapshot before the file is compacted to the verified snapshot's signer's form. */
const MAX_STORED_DELTAS = 256;

export class PolicyCache {
  private readonly caPublicKey: KeyObject;
  private readonly gatewayName: string;
  private readonly path: string;
  private current: PolicySnapshot | undefined;
  private stored: StoredPolicy | undefined;
  private identities = new Map<string, CachedIdentity>();
  private services = new Map<string, CachedService>();
  private revoked = new Set<string>();
  private rules: { rule: PolicyRule; subject: { kind: 'identity' | 'group'; name: string } }[] = [];

  constructor(options: { caPem: string; gatewayName: string; stateDir: string }) {
    this.caPublicKey = createPublicKey(options.caPem);
    this.gatewayName = options.gatewayName;
    this.path = join(options.stateDir, POLICY_CACHE_FILE);
  }

  /** Reads back the cache a previous run left, if any. Returns a warning to log when it was unusable. */
  load(): string | undefined {
    if (!existsSync(this.path)) return undefined;
    try {
      const stored = JSON.parse(readFileSync(this.path, 'utf8')) as StoredPolicy;
      let snapshot = openSnapshot(fromStored(stored.snapshot), this.caPublicKey);
      for (const delta of stored.deltas)
        snapshot = applyDelta(snapshot, openDelta(fromStored(delta), this.caPublicKey));
      this.checkGateway(snapshot);
      this.stored = stored;
      this.index(snapshot);
      return undefined;
    } catch (error) {
      return `${this.path}: ignored (${(error as Error).message}); waiting for the controller's policy`;
    }
  }

  get version(): number | null {
    return this.current?.version ?? null;
  }

  /** Verifies and installs a snapshot. Throws (PolicySignatureError, or an Error saying why) and keeps the old one. */
  acceptSnapshot(signed: SignedPolicy): PolicySnapshot {
    const snapshot = openSnapshot(signed, this.caPublicKey);
    this.checkGateway(snapshot);
    if (this.current && snapshot.version < this.current.version)
      throw new Error(
        `the controller sent policy version ${snapshot.version}, older than the ${this.current.version} held; kept the newer`,
      );
    this.stored = { snapshot: toStored(signed), deltas: [] };
    this.persist();
    this.index(snapshot);
    return snapshot;
  }

  /** Verifies and applies a delta; throws when it does not apply to the version held. */
  acceptDelta(signed: SignedPolicy): PolicySnapshot {
    if (!this.current || !this.stored) throw new Error('a policy delta arrived before any snapshot');
    const snapshot = applyDelta(this.current, openDelta(signed, this.caPublicKey));
    if (this.stored.deltas.length >= MAX_STORED_DELTAS)
      throw new Error('too many deltas since the last snapshot; asking for a fresh one');
    this.stored.deltas.push(toStored(signed));
    this.persist();
    this.index(snapshot);
    return snapshot;
  }

  identity(keyIdHex: string): CachedIdentity | undefined {
    return this.identities.get(keyIdHex);
  }

  service(name: string): CachedService | undefined {
    return this.services.get(name);
  }

  isSerialRevoked(serial: string): boolean {
    return this.revoked.has(serial);
  }

  /** A revocation pushed by the controller takes effect before the delta that records it arrives. */
  forget(keyIds: Iterable<string>, serials: Iterable<string>): void {
    for (const keyId of keyIds) this.identities.delete(keyId);
    for (const serial of serials) this.revoked.add(serial);
  }

  /**
   * The decision the controller would make, from the cached policy: for failMode `cached`. The
   * service is the knock's; a direct service may be named by its port alone.
   */
  decide(
    knock: Knock,
    identity: CachedIdentity,
    now: Date,
  ): (Decision & { service?: CachedService }) | { allow: false; reason: string } {
    const service = knock.service
      ? this.services.get(knock.service)
      : [...this.services.values()].find(
          (candidate) => candidate.mode === 'direct' && `tcp/${portOf(candidate.backend)}` === knock.access,
        );
    if (!service)
      return { allow: false, reason: `no service ${knock.service ?? knock.access} on this gateway` };
    const groups = new Set(identity.groups);
    const policies = this.rules
      .filter(({ subject }) =>
        subject.kind === 'identity' ? subject.name === identity.name : groups.has(subject.name),
      )
      .map(({ rule }) => rule);
    const decision = decide({
      identity: { name: identity.name, disabled: false, revoked: false },
      serviceName: service.name,
      policies,
      posture: knock.posture ?? {},
      now,
      timeZone: this.current?.timeZone ?? 'UTC',
    });
    return decision.allow ? { ...decision, service } : decision;
  }

  private checkGateway(snapshot: PolicySnapshot): void {
    if (snapshot.gateway !== this.gatewayName)
      throw new Error(`the policy is for gateway ${snapshot.gateway}, and this is ${this.gatewayName}`);
  }

  private index(snapshot: PolicySnapshot): void {
    this.current = snapshot;
    this.identities = new Map(
      snapshot.identities.map((identity) => [
        identity.keyId,
        {
          name: identity.name,
          keyId: identity.keyId,
          publicKey: ed25519PublicKeyObject(Buffer.from(identity.publicKey)),
          groups: identity.groups,
        },
      ]),
    );
    this.services = new Map(snapshot.services.map((service) => [service.name, { ...service }]));
    this.revoked = new Set(snapshot.revokedSerials);
    // A policy whose text this gateway cannot read is left out (it then refuses, never allows).
    this.rules = [];
    for (const policy of snapshot.policies) {
      try {
        this.rules.push({ rule: policyRule(policy), subject: policy.subject });
      } catch {}
    }
  }

  private persist(): void {
    writeFileAtomic(this.path, `${JSON.stringify(this.stored)}\n`, 0o600);
  }
}

export function portOf(backend: string): number {
  return Number(backend.slice(backend.lastIndexOf(':') + 1));
}

function toStored(signed: SignedPolicy) {
  return {
    payload: Buffer.from(signed.payload).toString('base64'),
    signature: Buffer.from(signed.signature).toString('base64'),
  };
}

function fromStored(stored: { payload: string; signature: string }): SignedPolicy {
  return {
    payload: Buffer.from(stored.payload, 'base64'),
    signature: Buffer.from(stored.signature, 'base64'),
  };
}
