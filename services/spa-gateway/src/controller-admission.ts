// Admission for a gateway run by a controller. The identities that may knock come from the
// controller's signed policy; each knock that passes the gateway's own checks is sent, signature
// and all, for the controller to decide — it verifies the knock itself, so a gateway cannot invent
// one. While the controller cannot answer, failMode says what happens: `cached` decides from the
// last signed policy (and reports the sessions it opened once the link is back), `closed` refuses.

import { randomUUID } from 'node:crypto';
import {
  encodeSealedKnock,
  type Knock,
  type OpenedKnock,
  parseAccess,
  type SessionReport,
} from '@umbra/protocol';
import type { Logger } from 'pino';
import type { Firewall } from './firewall/index.ts';
import type { Datagram } from './frame.ts';
import type { ControllerLink } from './link/controller-link.ts';
import { type PolicyCache, portOf } from './link/policy-cache.ts';
import { logPinholeOpened } from './opened-log.ts';
import type { KnockAdmission, KnownIdentity } from './pipeline.ts';
import type { Rejections, RejectReason } from './rejections.ts';
import type { Grants } from './tunnel/index.ts';

export type FailMode = 'cached' | 'closed';

/** Sessions opened offline waiting to be reported; beyond this the oldest reports are dropped. */
const MAX_QUEUED_REPORTS = 1_000;

interface GatewayIdentity extends KnownIdentity {
  keyId: string;
}

export interface ControllerAdmissionOptions {
  cache: PolicyCache;
  link: ControllerLink;
  grants: Grants;
  firewall: Firewall;
  failMode: FailMode;
  /** The tunnel listener's port: what a knock for a tunnel service must ask to open. */
  tunnelPort: number;
  requireSourceBinding: boolean;
  rejections: Rejections;
  log: Logger;
  now?: () => number;
}

/** What a granted knock opens, from the controller or from the cache. */
interface Grant {
  sessionId: string;
  identity: string;
  keyId: string;
  service: string;
  mode: 'tunnel' | 'direct';
  backend: string;
  access: string;
  ttlSeconds: number;
}

export class ControllerAdmission implements KnockAdmission {
  accepted = 0;
  /** Knocks decided from the cache because the controller could not answer. */
  decidedOffline = 0;
  private readonly options: ControllerAdmissionOptions;
  private readonly queued: SessionReport[] = [];

  constructor(options: ControllerAdmissionOptions) {
    this.options = options;
  }

  identify(identityHex: string): GatewayIdentity | undefined {
    const cached = this.options.cache.identity(identityHex);
    if (!cached) return undefined;
    return {
      name: cached.name,
      keyId: cached.keyId,
      publicKey: cached.publicKey,
      requireSourceBinding: this.options.requireSourceBinding,
    };
  }

  admit(
    knock: Knock,
    opened: OpenedKnock,
    identity: KnownIdentity,
    datagram: Datagram,
  ): RejectReason | undefined {
    const sealed = encodeSealedKnock(opened.body, opened.signature);
    this.options.link
      .authorize(sealed, datagram.source)
      .then((decision) => {
        if (!decision) return this.decideOffline(knock, sealed, identity as GatewayIdentity, datagram);
        if (!decision.allow) return this.refuse(datagram, identity.name, 'denied', decision.reason);
        this.open(datagram, decision, 'controller');
      })
      .catch((error: unknown) => {
        this.options.log.error(
          { source: datagram.source, err: error },
          'knock admission failed; nothing was opened',
        );
        this.options.rejections.reject(datagram.source, 'internal', identity.name);
      });
    return undefined;
  }

  /** Sends the reports of sessions opened while the link was down; called when it comes back. */
  flushQueued(): void {
    while (this.queued.length > 0 && this.options.link.send(this.queued[0]!)) this.queued.shift();
  }

  /** A report for the controller, sent now or when the link is back. */
  report(message: SessionReport): void {
    if (this.options.link.send(message)) return;
    if (this.queued.length >= MAX_QUEUED_REPORTS) this.queued.shift();
    this.queued.push(message);
  }

  private decideOffline(knock: Knock, sealed: Buffer, identity: GatewayIdentity, datagram: Datagram) {
    const { failMode, cache } = this.options;
    if (failMode === 'closed')
      return this.refuse(
        datagram,
        identity.name,
        'unreachable',
        'the controller did not answer (failMode closed)',
      );
    const now = this.options.now?.() ?? Date.now();
    const decision = cache.decide(
      knock,
      { ...identity, groups: cache.identity(identity.keyId)?.groups ?? [] },
      new Date(now),
    );
    if (!decision.allow || !('service' in decision) || !decision.service)
      return this.refuse(
        datagram,
        identity.name,
        'denied',
        `cached policy: ${'reason' in decision ? decision.reason : 'no service'}`,
      );
    const { service } = decision;
    const expected =
      service.mode === 'tunnel' ? `tcp/${this.options.tunnelPort}` : `tcp/${portOf(service.backend)}`;
    if (knock.access !== expected)
      return this.refuse(
        datagram,
        identity.name,
        'denied',
        `cached policy: ${service.name} is reached at ${expected}, not ${knock.access}`,
      );
    const sessionId = randomUUID();
    this.decidedOffline++;
    this.open(
      datagram,
      {
        sessionId,
        identity: identity.name,
        keyId: identity.keyId,
        service: service.name,
        mode: service.mode,
        backend: service.backend,
        access: expected,
        ttlSeconds: decision.ttlSeconds,
      },
      'cache',
    );
    this.report({
      t: 'session',
      event: 'opened-offline',
      sessionId,
      knock: sealed,
      source: datagram.source,
      service: service.name,
      openedAt: now,
    });
  }

  private open(datagram: Datagram, grant: Grant, decidedBy: 'controller' | 'cache') {
    const { grants, firewall, log } = this.options;
    const access = parseAccess(grant.access);
    if (!access) return this.refuse(datagram, grant.identity, 'denied', `unusable access ${grant.access}`);
    const held = grants.add({
      sessionId: grant.sessionId,
      identity: grant.identity,
      keyId: grant.keyId,
      source: datagram.source,
      service: grant.service,
      backend: grant.backend,
      mode: grant.mode,
      ttlSeconds: grant.ttlSeconds,
    });
    try {
      firewall.open({
        source: datagram.source,
        protocol: access.protocol,
        port: access.port,
        ttlSeconds: grant.ttlSeconds,
        mark: held.mark,
      });
    } catch (error) {
      grants.remove(grant.sessionId);
      log.error(
        { source: datagram.source, identity: grant.identity, err: error },
        'could not open the pinhole',
      );
      this.options.rejections.reject(datagram.source, 'firewall', grant.identity);
      return;
    }
    this.accepted++;
    logPinholeOpened(log, datagram, {
      identity: grant.identity,
      service: grant.service,
      access: grant.access,
      ttlSeconds: grant.ttlSeconds,
      session: grant.sessionId,
      decidedBy,
    });
  }

  private refuse(datagram: Datagram, identity: string, reason: RejectReason, detail: string): void {
    this.options.rejections.reject(datagram.source, reason, identity, detail);
  }
}
