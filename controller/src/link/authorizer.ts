// The decision for every knock a gateway forwards: the hot path. Cheap checks first, the signature
// (the one expensive step, ~70 µs) before anything that remembers the knock, every lookup from the
// in-memory PolicyView, and the write batched with the other decisions of the same moment.
//
//   sealed knock → schema → gateway (enrolled, not quarantined) → identity by key id → Ed25519 signature over the gateway's key
//   id (a gateway cannot invent a knock, nor replay one meant for another gateway) → time window →
//   replay → claimed source → service on this gateway → access → identity shut out? → policy
//
// Every decision is audited with its reason before it is answered, and nothing thrown inside ever
// reaches the link: an unexpected error is a denial ('internal error'), logged.

import { randomFillSync } from 'node:crypto';
import { type Decision, decide } from '@umbra/policy';
import {
  type Authorize,
  type DecisionMessage,
  decodeSealedKnock,
  ipAddressToBytes,
  type Knock,
  verifyDecodedKnockSignature,
} from '@umbra/protocol';
import type { GatewayEndpoint } from '../store/index.ts';
import type { DecisionLog } from './decision-log.ts';
import type { Logger } from './logger.ts';
import {
  gatewayRefusal,
  type PolicyView,
  type PolicyViews,
  shutOutReason,
  type ViewGateway,
  type ViewIdentity,
  type ViewService,
} from './policy-view.ts';
import { type Posture, PostureBook } from './posture-book.ts';
import { KNOCK_WINDOW_MS, ReplayGuard } from './replay-guard.ts';

/** The gateway a request came from: its name from its certificate, its endpoint from its hello. */
export interface LinkPeer {
  name: string;
  endpoint: GatewayEndpoint;
}

export interface AuthorizerOptions {
  views: PolicyViews;
  decisions: DecisionLog;
  /** The IANA time zone policies' hours and days are read in. */
  timeZone: string;
  log: Logger;
  clock?: () => number;
  postures?: PostureBook;
  windowMs?: number;
}

export type KnockCheck =
  | { ok: true; knock: Knock; identity: ViewIdentity; gateway: ViewGateway }
  | { ok: false; reason: string; knock?: Knock; identity?: ViewIdentity };

export type ServiceMatch =
  | { ok: true; service: ViewService; access: string }
  | { ok: false; reason: string; service?: ViewService };

export class Authorizer {
  readonly #views: PolicyViews;
  readonly #decisions: DecisionLog;
  readonly #timeZone: string;
  readonly #log: Logger;
  readonly #clock: () => number;
  readonly #windowMs: number;
  readonly #replay: ReplayGuard;
  readonly postures: PostureBook;

  constructor(options: AuthorizerOptions) {
    this.#views = options.views;
    this.#decisions = options.decisions;
    this.#timeZone = options.timeZone;
    this.#log = options.log;
    this.#clock = options.clock ?? Date.now;
    this.#windowMs = options.windowMs ?? KNOCK_WINDOW_MS;
    this.#replay = new ReplayGuard(this.#windowMs);
    this.postures = options.postures ?? new PostureBook();
  }

  get timeZone(): string {
    return this.#timeZone;
  }

  /** Decides, records and answers one authorize request. Never throws. */
  async authorize(peer: LinkPeer, request: Authorize): Promise<DecisionMessage> {
    const actor = `gateway:${peer.name}`;
    try {
      const viewOrLoading = this.#views.ready();
      const view = viewOrLoading instanceof Promise ? await viewOrLoading : viewOrLoading;
      const now = this.#clock();
      const details: Record<string, unknown> = { source: request.source };
      const deny = async (reason: string, subject = '?'): Promise<DecisionMessage> => {
        await this.#decisions.record({
          audit: {
            at: now,
            actor,
            action: 'knock',
            subject,
            decision: 'deny',
            reason: auditText(reason),
            details,
          },
        });
        return { t: 'decision', id: request.id, allow: false, reason };
      };

      const checked = this.checkKnock(view, peer.name, request.knock);
      if (checked.knock?.service !== undefined) details.service = checked.knock.service;
      if (checked.identity)
        Object.assign(details, { identity: checked.identity.name, keyId: checked.identity.keyId });
      if (!checked.ok) return await deny(checked.reason, checked.identity?.name);
      const { knock, identity, gateway } = checked;
      const keyId = identity.keyId!;

      const skew = knock.timestampMs - now;
      if (Math.abs(skew) > this.#windowMs)
        return await deny(
          `knock timestamp is ${(skew / 1000).toFixed(1)} s from the controller's clock (window ±${this.#windowMs / 1000} s)`,
          identity.name,
        );
      const replay = this.#replay.admit(keyId, knock.timestampMs, knock.nonce, now);
      if (!replay.fresh) return await deny(`replay: ${replay.reason}`, identity.name);
      if (knock.posture !== undefined) this.postures.set(keyId, knock.posture);
      if (knock.claimedSource !== undefined && !sameAddress(knock.claimedSource, request.source))
        return await deny(
          `source: the knock claims ${knock.claimedSource} but came from ${request.source}`,
          identity.name,
        );

      const match = this.matchService(view, gateway, peer.endpoint, knock);
      if (match.service) details.service = match.service.name;
      if (!match.ok) return await deny(match.reason, identity.name);
      const { service, access } = match;
      const decision = this.decideFor(identity, service, knock.posture ?? {}, now);
      if (!decision.allow) return await deny(decision.reason, identity.name);

      const sessionId = newSessionId(now);
      Object.assign(details, { access, session: sessionId, ttlSeconds: decision.ttlSeconds });
      await this.#decisions.record({
        session: {
          id: sessionId,
          identityId: identity.id,
          gatewayId: gateway.id,
          serviceId: service.id,
          source: request.source,
          openedAt: now,
        },
        audit: {
          at: now,
          actor,
          action: 'knock',
          subject: identity.name,
          decision: 'allow',
          reason: `policy ${decision.policyId}`,
          details,
        },
      });
      return {
        t: 'decision',
        id: request.id,
        allow: true,
        sessionId,
        identity: identity.name,
        keyId,
        service: service.name,
        mode: service.mode,
        backend: service.backend,
        access,
        ttlSeconds: decision.ttlSeconds,
      };
    } catch (error) {
      this.#log.error({ err: error, gateway: peer.name, request: request.id }, 'authorize failed');
      await this.#decisions
        .record({
          audit: {
            actor,
            action: 'knock',
            subject: '?',
            decision: 'deny',
            reason: 'internal error',
            details: { source: request.source },
          },
        })
        .catch((auditError: unknown) =>
          this.#log.error({ err: auditError }, 'could not audit a denial for an internal error'),
        );
      return { t: 'decision', id: request.id, allow: false, reason: 'internal error' };
    }
  }

  /** Refuses a request without deciding it (the link is overloaded), audited like any decision. */
  async refuse(peer: LinkPeer, request: Authorize, reason: string): Promise<DecisionMessage> {
    await this.#decisions
      .record({
        audit: {
          actor: `gateway:${peer.name}`,
          action: 'knock',
          subject: '?',
          decision: 'deny',
          reason: auditText(reason),
          details: { source: request.source },
        },
      })
      .catch((error: unknown) => this.#log.error({ err: error }, 'could not audit a refusal'));
    return { t: 'decision', id: request.id, allow: false, reason };
  }

  /**
   * The knock as bytes the client signed: its shape, the gateway it came through, the identity it
   * names, and the signature over that gateway's key id. Nothing about time or replay: a knock a
   * gateway decided earlier from its cache is checked with this alone.
   */
  checkKnock(view: PolicyView, gatewayName: string, sealed: Uint8Array): KnockCheck {
    const decoded = decodeSealedKnock(Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength));
    if (decoded === null) return { ok: false, reason: 'malformed knock' };
    const { knock } = decoded;
    const gateway = view.gateways.get(gatewayName);
    const refusal = gatewayRefusal(gateway, gatewayName);
    if (refusal !== null || gateway?.keyId == null)
      return { ok: false, reason: refusal ?? `gateway ${gatewayName} is not enrolled`, knock };
    const keyId = knock.identityId.toString('hex');
    const identity = view.identitiesByKeyId.get(keyId);
    if (identity?.publicKey == null) return { ok: false, reason: `unknown identity key id ${keyId}`, knock };
    if (!verifyDecodedKnockSignature(decoded.body, decoded.signature, gateway.keyId, identity.publicKey))
      return { ok: false, reason: `signature: does not verify for gateway ${gatewayName}`, knock, identity };
    return { ok: true, knock, identity, gateway };
  }

  /**
   * The service the knock asks for, which must be behind this gateway, and the access its pinhole
   * opens: the gateway's tunnel port for a tunnel service, the backend's port for a direct one. A
   * knock without a service name (an older client) means the direct service on that port.
   */
  matchService(
    view: PolicyView,
    gateway: ViewGateway,
    endpoint: GatewayEndpoint,
    knock: Knock,
  ): ServiceMatch {
    let service: ViewService | undefined;
    if (knock.service !== undefined) {
      service = view.services.get(knock.service);
      if (service === undefined || service.gatewayId !== gateway.id)
        return { ok: false, reason: `service ${knock.service} is not behind gateway ${gateway.name}` };
    } else {
      for (const candidate of view.services.values())
        if (
          candidate.gatewayId === gateway.id &&
          candidate.mode === 'direct' &&
          `tcp/${candidate.backendPort}` === knock.access
        )
          service = candidate;
      if (service === undefined)
        return {
          ok: false,
          reason: `access ${knock.access}: no direct service behind gateway ${gateway.name} opens it, and the knock names no service`,
        };
    }
    const access = service.mode === 'tunnel' ? `tcp/${endpoint.tunnelPort}` : `tcp/${service.backendPort}`;
    if (knock.access !== access)
      return {
        ok: false,
        reason: `access ${knock.access} does not match ${service.mode} service ${service.name}, which opens ${access}`,
        service,
      };
    return { ok: true, service, access };
  }

  /** decide(), with an owner's disabling or revocation counted too. */
  decideFor(identity: ViewIdentity, service: ViewService, posture: Posture, now: number): Decision {
    const shutOut = shutOutReason(identity);
    if (shutOut !== null) return { allow: false, reason: shutOut };
    return decide({
      identity: { name: identity.name, disabled: identity.disabled, revoked: identity.revoked },
      serviceName: service.name,
      policies: identity.policies.map((policy) => policy.rule),
      posture,
      now: new Date(now),
      timeZone: this.#timeZone,
    });
  }
}

/**
 * 32 hex digits: the decision's time in milliseconds (12 digits), then 10 random bytes (80 bits, so
 * ids stay unguessable and never collide). Time first makes each new id sort after the last, so the
 * sessions table's primary key grows at its end: fully random ids landed on a different index page
 * each, and every batch commit wrote (and synced) hundreds of pages more than it added rows for.
 * The random bytes come from a pool filled 4 KiB at a time: one randomBytes call per decision costs
 * as much as the rest of the bookkeeping.
 */
const SESSION_ID_RANDOM_BYTES = 10;
const idPool = Buffer.alloc(4000);
let idOffset = idPool.length;

export function newSessionId(now: number): string {
  if (idOffset + SESSION_ID_RANDOM_BYTES > idPool.length) {
    randomFillSync(idPool);
    idOffset = 0;
  }
  const random = idPool.toString('hex', idOffset, idOffset + SESSION_ID_RANDOM_BYTES);
  idOffset += SESSION_ID_RANDOM_BYTES;
  return Math.max(0, Math.trunc(now)).toString(16).padStart(12, '0').slice(-12) + random;
}

/** The audit log keeps reasons to one bounded line; the gateway gets the whole reason. */
export function auditText(text: string): string {
  return text.replace(/\p{Cc}/gu, ' ').slice(0, 256);
}

/** Textual addresses equal as addresses (2001:db8::1 and 2001:DB8:0::1; an IPv4-mapped IPv6 and its IPv4). */
export function sameAddress(a: string, b: string): boolean {
  const x = ipAddressToBytes(a);
  const y = ipAddressToBytes(b);
  if (x === null || y === null) return false;
  return unmapped(x).equals(unmapped(y));
}

const V4_MAPPED_PREFIX = Buffer.from('00000000000000000000ffff', 'hex');

function unmapped(address: Buffer): Buffer {
  return address.length === 16 && address.subarray(0, 12).equals(V4_MAPPED_PREFIX)
    ? address.subarray(12)
    : address;
}
