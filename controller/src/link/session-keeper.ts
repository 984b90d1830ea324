// What gateways report about sessions after the decision: a session closed, a session the gateway
// opened from its cached snapshot while the controller was away, and a device's fresh posture. The
// last two can end sessions: a cached decision whose knock does not verify, or that policy no longer
// allows, and a session whose device fell out of compliance. Those are closed in the store, audited,
// and returned as a revoke message for the gateway that holds them.

import { createHash } from 'node:crypto';
import type { PostureReport, Revoke, SessionReport } from '@umbra/protocol';
import { type Store, StoreError } from '../store/index.ts';
import { type Authorizer, auditText, type LinkPeer } from './authorizer.ts';
import type { DecisionLog } from './decision-log.ts';
import type { Logger } from './logger.ts';
import type { PolicyViews } from './policy-view.ts';

type OfflineOpen = Extract<SessionReport, { event: 'opened-offline' }>;
type Closed = Extract<SessionReport, { event: 'closed' }>;

const STORE_ID = /^[0-9a-f]{32}$/;
/** Revoke reasons are bounded by the link's schema. */
const MAX_REASON = 512;
/** Gateway session ids that had to be mapped, remembered to name them back; bounded. */
const MAX_ALIASES = 100_000;

export interface SessionKeeperOptions {
  store: Store;
  views: PolicyViews;
  authorizer: Authorizer;
  decisions: DecisionLog;
  log: Logger;
  clock?: () => number;
}

export class SessionKeeper {
  readonly #store: Store;
  readonly #views: PolicyViews;
  readonly #authorizer: Authorizer;
  readonly #decisions: DecisionLog;
  readonly #log: Logger;
  readonly #clock: () => number;
  /** Store id → the gateway's own id, for sessions a gateway named in another form. */
  readonly #gatewayIds = new Map<string, string>();

  constructor(options: SessionKeeperOptions) {
    this.#store = options.store;
    this.#views = options.views;
    this.#authorizer = options.authorizer;
    this.#decisions = options.decisions;
    this.#log = options.log;
    this.#clock = options.clock ?? Date.now;
  }

  async closed(peer: LinkPeer, report: Closed): Promise<void> {
    const id = this.#storeId(peer.name, report.sessionId);
    try {
      await this.#store.closeSession(id, this.#clock(), auditText(report.reason));
      this.#gatewayIds.delete(id);
    } catch (error) {
      if (!(error instanceof StoreError && error.code === 'not-found')) throw error;
      this.#log.warn(
        { gateway: peer.name, session: report.sessionId },
        'a gateway closed a session the controller does not know',
      );
    }
  }

  /**
   * Records a session the gateway opened on its own. Its knock is checked as it was signed (not
   * against the clock or the replay cache: it happened earlier, and the gateway's own checks ran
   * then); then today's policy is asked, and a session it no longer allows is ended at once.
   */
  async openedOffline(peer: LinkPeer, report: OfflineOpen): Promise<Revoke | null> {
    const view = await this.#views.ready();
    const now = this.#clock();
    const actor = `gateway:${peer.name}`;
    const details: Record<string, unknown> = {
      decidedBy: 'gateway-cache',
      source: report.source,
      service: report.service,
      session: report.sessionId,
      openedAt: report.openedAt,
    };
    const end = async (reason: string, subject: string): Promise<Revoke> => {
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
      return revokeSessions([report.sessionId], reason);
    };
    const checked = this.#authorizer.checkKnock(view, peer.name, report.knock);
    if (checked.identity)
      Object.assign(details, { identity: checked.identity.name, keyId: checked.identity.keyId });
    if (!checked.ok) return end(`offline session: ${checked.reason}`, checked.identity?.name ?? '?');
    const { identity, gateway, knock } = checked;
    if (knock.service !== undefined && knock.service !== report.service)
      return end(
        `offline session: the knock asked for ${knock.service}, not ${report.service}`,
        identity.name,
      );
    const match = this.#authorizer.matchService(view, gateway, peer.endpoint, {
      ...knock,
      service: report.service,
    });
    if (!match.ok) return end(`offline session: ${match.reason}`, identity.name);

    const id = this.#storeId(peer.name, report.sessionId);
    if (id !== report.sessionId) details.storeSession = id;
    await this.#decisions.record({
      session: {
        id,
        identityId: identity.id,
        gatewayId: gateway.id,
        serviceId: match.service.id,
        source: report.source,
        openedAt: report.openedAt,
      },
      audit: {
        at: now,
        actor,
        action: 'knock',
        subject: identity.name,
        decision: 'allow',
        reason: 'decided by the gateway from its cached policy',
        details,
      },
    });
    const today = this.#authorizer.decideFor(identity, match.service, knock.posture ?? {}, now);
    if (today.allow) return null;
    const reason = `policy now refuses this offline session: ${today.reason}`;
    await this.#store.closeSession(id, now, auditText(reason));
    await this.#decisions.record({
      audit: {
        at: now,
        actor: 'controller',
        action: 'session.close',
        subject: identity.name,
        decision: 'deny',
        reason: auditText(reason),
        details,
      },
    });
    return revokeSessions([report.sessionId], reason);
  }

  /** Remembers the posture and ends this identity's sessions on this gateway that it no longer allows. */
  async posture(peer: LinkPeer, report: PostureReport): Promise<Revoke | null> {
    this.#authorizer.postures.set(report.keyId, report.posture);
    const view = await this.#views.ready();
    const identity = view.identitiesByKeyId.get(report.keyId);
    const gateway = view.gateways.get(peer.name);
    if (!identity || !gateway) return null;
    const now = this.#clock();
    const open = (await this.#store.listSessions({ open: true, identityId: identity.id })).filter(
      (session) => session.gatewayId === gateway.id,
    );
    const ended: string[] = [];
    let firstReason: string | undefined;
    for (const session of open) {
      const service = view.servicesById.get(session.serviceId);
      const decision = service
        ? this.#authorizer.decideFor(identity, service, report.posture, now)
        : { allow: false as const, reason: 'its service no longer exists' };
      if (decision.allow) continue;
      const reason = `posture: ${decision.reason}`;
      if (!(await this.#store.closeSession(session.id, now, auditText(reason)))) continue;
      firstReason ??= reason;
      ended.push(this.#gatewayIds.get(session.id) ?? session.id);
      await this.#decisions.record({
        audit: {
          at: now,
          actor: `gateway:${peer.name}`,
          action: 'session.close',
          subject: identity.name,
          decision: 'deny',
          reason: auditText(reason),
          details: {
            identity: identity.name,
            service: service?.name,
            session: session.id,
            source: report.source,
          },
        },
      });
    }
    return ended.length === 0 ? null : revokeSessions(ended, firstReason!);
  }

  /**
   * The store's id for a gateway's session id: the same when it is already one (the controller's
   * decisions hand out such ids), otherwise a digest of gateway and id, so a report naming it later
   * finds the same row without a table.
   */
  #storeId(gateway: string, sessionId: string): string {
    if (STORE_ID.test(sessionId)) return sessionId;
    const id = createHash('sha256').update(`${gateway}\0${sessionId}`).digest('hex').slice(0, 32);
    if (this.#gatewayIds.size >= MAX_ALIASES) this.#gatewayIds.delete(this.#gatewayIds.keys().next().value!);
    this.#gatewayIds.set(id, sessionId);
    return id;
  }
}

function revokeSessions(sessionIds: string[], reason: string): Revoke {
  return { t: 'revoke', keyIds: [], serials: [], sessionIds, reason: reason.slice(0, MAX_REASON) };
}
