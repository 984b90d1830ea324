// One gateway's share of the policy: its services, the policies for them, every identity that may
// knock at all (enrolled, not revoked, not disabled, nor shut out by their owner), and the revoked
// serials its tunnel must refuse. That is all a gateway needs to decide a knock itself while the
// controller is away, and nothing about other gateways' services.
//
// Identities no policy of this gateway admits are included on purpose: the gateway then forwards
// their signed knocks, and the controller refuses them with a reason in the audit log ("no policy
// lets bob reach db") instead of the gateway dropping them unseen as unknown.

import type { PolicySnapshot, SnapshotIdentity, SnapshotPolicy, SnapshotService } from '@umbra/protocol';
import { type PolicyView, shutOutReason } from './policy-view.ts';

export function buildSnapshot(
  view: PolicyView,
  gateway: string,
  timeZone: string,
  now: number,
): PolicySnapshot {
  const gatewayId = view.gateways.get(gateway)?.id;
  const services: SnapshotService[] = [];
  const serviceIds = new Set<string>();
  for (const service of view.services.values()) {
    if (service.gatewayId !== gatewayId) continue;
    serviceIds.add(service.id);
    services.push({ name: service.name, mode: service.mode, backend: service.backend });
  }
  const policies: SnapshotPolicy[] = [];
  const policyIds = new Set<string>();
  for (const policy of view.policies) {
    if (!serviceIds.has(policy.serviceId)) continue;
    policyIds.add(policy.id);
    policies.push({
      id: policy.id,
      subject: { kind: policy.subject.kind, name: policy.subject.name },
      service: policy.serviceName,
      requirements: [...policy.requirements],
      hours: policy.hours,
      days: policy.days,
      maxTtlSeconds: policy.maxTtlSeconds,
    });
  }
  const identities: SnapshotIdentity[] = [];
  for (const identity of view.identitiesByKeyId.values()) {
    if (identity.publicKeyRaw === null || shutOutReason(identity) !== null) continue;
    identities.push({
      keyId: identity.keyId!,
      name: identity.name,
      publicKey: new Uint8Array(identity.publicKeyRaw),
      groups: [...identity.groups],
    });
  }
  // Sorted, so the same policy always makes the same bytes (and the gateway's log reads in order).
  identities.sort((a, b) => compare(a.keyId, b.keyId));
  services.sort((a, b) => compare(a.name, b.name));
  policies.sort((a, b) => compare(a.id, b.id));
  return {
    version: view.version,
    issuedAt: now,
    gateway,
    timeZone,
    identities,
    services,
    policies,
    revokedSerials: [...view.revokedSerials],
  };
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
