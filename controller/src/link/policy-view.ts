// What deciding a knock and building a gateway's snapshot need, held in memory: identities by the
// key id a knock names (with their Ed25519 key ready to verify), services, gateways, policies parsed
// once, revoked serials. The decision path reads only this, never the database, which is what makes
// thousands of decisions a second possible on one core.
//
// A view is immutable and tagged with the audit sequence number it reflects. Any change to what it
// holds is written to the audit log (by this process, an admin command or another controller); the
// audit tail sees it and asks PolicyViews for a view at least that new, and until one is loaded every
// decision waits for it. A revocation is never decided against the view from before it.

import type { KeyObject } from 'node:crypto';
import { type PolicyRule, parseDays, parseHours, parseRequirement } from '@umbra/policy';
import { decodeKey, ed25519PublicKeyObject, gatewayKeyIdOf } from '@umbra/protocol';
import type {
  AttestationState,
  GatewayEndpoint,
  GatewayStatus,
  IdentityKind,
  ServiceMode,
  Store,
  SubjectKind,
} from '../store/index.ts';

export interface ViewIdentity {
  id: string;
  name: string;
  kind: IdentityKind;
  /** Hex identityIdOf(publicKey); null until enrolled. */
  keyId: string | null;
  /** Raw Ed25519 public key; null until enrolled. */
  publicKeyRaw: Buffer | null;
  publicKey: KeyObject | null;
  groups: readonly string[];
  revoked: boolean;
  disabled: boolean;
  /** The user or service it belongs to: a disabled or revoked owner shuts its devices out too. */
  owner: { name: string; disabled: boolean; revoked: boolean } | null;
  /** The policies naming it or one of its groups, for every service. */
  policies: readonly ViewPolicy[];
}

export interface ViewService {
  id: string;
  name: string;
  gatewayId: string;
  gateway: string;
  mode: ServiceMode;
  backend: string;
  backendPort: number;
}

export interface ViewGateway {
  id: string;
  name: string;
  status: GatewayStatus;
  /** Raw X25519 SPA key and its key id (what knock signatures cover); null until enrolled. */
  spaPublicKey: Buffer | null;
  keyId: Buffer | null;
  endpoint: GatewayEndpoint | null;
  attestation: AttestationState;
  /** Why it is quarantined; null when it is not. */
  quarantineReason: string | null;
}

/** Why no knock through this gateway may be allowed, whatever the policy; null when they may. */
export function gatewayRefusal(gateway: ViewGateway | undefined, name: string): string | null {
  if (gateway?.status !== 'enrolled' || gateway.keyId === null) return `gateway ${name} is not enrolled`;
  if (gateway.attestation === 'quarantined')
    return `gateway ${name} is quarantined: ${gateway.quarantineReason ?? 'no reason recorded'}`;
  // Its TPM vouched for a boot state nobody has accepted yet: no pinhole until an operator does.
  if (gateway.attestation === 'awaiting-approval')
    return `gateway ${name} awaits approval of its boot state (umbra-controller gateway approve ${name})`;
  return null;
}

export interface ViewPolicy {
  id: string;
  subject: { kind: SubjectKind; id: string; name: string };
  serviceId: string;
  serviceName: string;
  /** As stored, the canonical text. */
  requirements: readonly string[];
  hours: string | null;
  days: string | null;
  maxTtlSeconds: number;
  /** Parsed for decide(). */
  rule: PolicyRule;
}

/** Why an identity may not knock at all, before any policy is read; null when it may. */
export function shutOutReason(identity: ViewIdentity): string | null {
  if (identity.revoked) return `identity ${identity.name} is revoked`;
  if (identity.disabled) return `identity ${identity.name} is disabled`;
  if (identity.owner?.revoked) return `identity ${identity.name}'s owner ${identity.owner.name} is revoked`;
  if (identity.owner?.disabled) return `identity ${identity.name}'s owner ${identity.owner.name} is disabled`;
  return null;
}

export class PolicyView {
  /** The audit sequence number this view reflects every change up to. */
  readonly version: number;
  readonly identitiesByKeyId: ReadonlyMap<string, ViewIdentity>;
  readonly identitiesById: ReadonlyMap<string, ViewIdentity>;
  readonly services: ReadonlyMap<string, ViewService>;
  readonly servicesById: ReadonlyMap<string, ViewService>;
  readonly gateways: ReadonlyMap<string, ViewGateway>;
  readonly policies: readonly ViewPolicy[];
  /** Revoked certificates still within their validity, sorted. */
  readonly revokedSerials: readonly string[];

  private constructor(parts: {
    version: number;
    identities: ViewIdentity[];
    services: ViewService[];
    gateways: ViewGateway[];
    policies: ViewPolicy[];
    revokedSerials: string[];
  }) {
    this.version = parts.version;
    this.identitiesById = new Map(parts.identities.map((identity) => [identity.id, identity]));
    this.identitiesByKeyId = new Map(
      parts.identities.flatMap((identity) => (identity.keyId === null ? [] : [[identity.keyId, identity]])),
    );
    this.services = new Map(parts.services.map((service) => [service.name, service]));
    this.servicesById = new Map(parts.services.map((service) => [service.id, service]));
    this.gateways = new Map(parts.gateways.map((gateway) => [gateway.name, gateway]));
    this.policies = parts.policies;
    this.revokedSerials = parts.revokedSerials;
  }

  /** Reads everything from the store; `version` is the audit seq the caller knows it reflects. */
  static async load(store: Store, version: number, now: number): Promise<PolicyView> {
    const [identities, services, gateways, policies, revokedSerials] = await Promise.all([
      store.listIdentities(),
      store.listServices(),
      store.listGateways(),
      store.listPolicies(),
      store.listRevokedSerials(now),
    ]);
    const viewPolicies: ViewPolicy[] = policies.map((policy) => ({
      id: policy.id,
      subject: policy.subject,
      serviceId: policy.serviceId,
      serviceName: policy.service.name,
      requirements: policy.requirements,
      hours: policy.hours,
      days: policy.days,
      maxTtlSeconds: policy.maxTtlSeconds,
      // The store only holds what these parsers accepted (validate.ts), so they do not throw here.
      rule: {
        id: policy.id,
        serviceName: policy.service.name,
        requirements: policy.requirements.map(parseRequirement),
        maxTtlSeconds: policy.maxTtlSeconds,
        ...(policy.hours === null ? {} : { hours: parseHours(policy.hours) }),
        ...(policy.days === null ? {} : { days: parseDays(policy.days) }),
      },
    }));
    const byName = new Map(identities.map((identity) => [identity.name, identity]));
    const viewIdentities = identities.map((identity): ViewIdentity => {
      const raw = identity.publicKey === null ? null : decodeKey(identity.publicKey, 'identity key');
      const owner = identity.owner === null ? undefined : byName.get(identity.owner);
      const groups = new Set(identity.groups);
      return {
        id: identity.id,
        name: identity.name,
        kind: identity.kind,
        keyId: identity.keyId,
        publicKeyRaw: raw,
        publicKey: raw === null ? null : ed25519PublicKeyObject(raw),
        groups: identity.groups,
        revoked: identity.revokedAt !== null,
        disabled: identity.disabled,
        owner:
          owner === undefined
            ? null
            : { name: owner.name, disabled: owner.disabled, revoked: owner.revokedAt !== null },
        policies: viewPolicies.filter((policy) =>
          policy.subject.kind === 'identity'
            ? policy.subject.id === identity.id
            : groups.has(policy.subject.name),
        ),
      };
    });
    return new PolicyView({
      version,
      identities: viewIdentities,
      services: services.map((service) => ({
        id: service.id,
        name: service.name,
        gatewayId: service.gatewayId,
        gateway: service.gateway,
        mode: service.mode,
        backend: service.backend,
        backendPort: Number(service.backend.slice(service.backend.lastIndexOf(':') + 1)),
      })),
      gateways: gateways.map((gateway) => {
        const key = gateway.publicKey === null ? null : decodeKey(gateway.publicKey, 'gateway key');
        return {
          id: gateway.id,
          name: gateway.name,
          status: gateway.status,
          spaPublicKey: key,
          keyId: key === null ? null : gatewayKeyIdOf(key),
          endpoint: gateway.endpoint,
          attestation: gateway.attestation.state,
          quarantineReason: gateway.attestation.quarantineReason,
        };
      }),
      policies: viewPolicies,
      revokedSerials,
    });
  }
}

/**
 * The current view, and reloads. `invalidate(seq)` says the audit log reached `seq` with a change
 * the view may not hold; from then on `ready()` hands out only a view at least that new. Reloads
 * coalesce: a burst of changes costs one or two loads, not one each.
 */
export class PolicyViews {
  readonly #store: Store;
  readonly #clock: () => number;
  #view: PolicyView;
  #wanted: number;
  #loading: Promise<PolicyView> | null = null;

  private constructor(store: Store, view: PolicyView, clock: () => number) {
    this.#store = store;
    this.#view = view;
    this.#wanted = view.version;
    this.#clock = clock;
  }

  static async load(store: Store, version: number, clock: () => number = Date.now): Promise<PolicyViews> {
    return new PolicyViews(store, await PolicyView.load(store, version, clock()), clock);
  }

  /** The newest view loaded, perhaps older than a change already announced: for reports, not decisions. */
  get current(): PolicyView {
    return this.#view;
  }

  /** A view holding every change announced so far; waits for a reload under way (or retries a failed one). */
  ready(): PolicyView | Promise<PolicyView> {
    if (this.#view.version >= this.#wanted) return this.#view;
    return this.#loading ?? this.#reload();
  }

  /** The audit log reached `version` (with a change, or just so); resolves to a view at least that new. */
  invalidate(version: number): Promise<PolicyView> {
    if (version > this.#wanted) this.#wanted = version;
    return this.#loading ?? this.#reload();
  }

  #reload(): Promise<PolicyView> {
    const loading = (async () => {
      // Yield first, so #loading is set before the loop can end: the check that ends it and the
      // clearing of #loading then happen in one step, and no request for a newer view falls between.
      await null;
      try {
        while (this.#view.version < this.#wanted) {
          const target = this.#wanted;
          const view = await PolicyView.load(this.#store, target, this.#clock());
          if (view.version > this.#view.version) this.#view = view;
        }
        return this.#view;
      } finally {
        this.#loading = null;
      }
    })();
    this.#loading = loading;
    return loading;
  }
}
