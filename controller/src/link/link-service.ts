// The gateway links with everything behind them, started together: the policy view, the decision
// path and its batched writes, session reports, the link server, and the audit tail that turns
// changes made anywhere (this process, an admin command, another controller) into pushes.
//
// A revocation is pushed the moment the tail reads it, before anything else: every connected gateway
// gets `revoke` with the key ids and serials from the entry, and the view is marked stale in the same
// step, so no knock is decided on the view from before it. The policy deltas follow once the view
// has reloaded.

import type { CertificateAuthority } from '../ca/index.ts';
import { AuditTail } from '../events/audit-tail.ts';
import { linkEffectOf } from '../events/link-events.ts';
import type { AuditEntry, Store } from '../store/index.ts';
import { Authorizer } from './authorizer.ts';
import { DecisionLog } from './decision-log.ts';
import { LinkAttestor } from './link-attestation.ts';
import { LinkServer } from './link-server.ts';
import type { Logger } from './logger.ts';
import { PolicyViews } from './policy-view.ts';
import { SessionKeeper } from './session-keeper.ts';

export interface LinkServiceOptions {
  store: Store;
  ca: CertificateAuthority;
  /** The IANA time zone policies' hours and days are read in. */
  timeZone: string;
  log: Logger;
  clock?: () => number;
  pingIntervalMs?: number;
  /** How often a TPM gateway is re-attested; default 10 min. */
  attestIntervalMs?: number;
}

export interface LinkService {
  server: LinkServer;
  attestor: LinkAttestor;
  views: PolicyViews;
  authorizer: Authorizer;
  sessions: SessionKeeper;
  decisions: DecisionLog;
  tail: AuditTail;
  close(): Promise<void>;
}

export async function startLinkService(options: LinkServiceOptions): Promise<LinkService> {
  const { store, ca, timeZone, log } = options;
  const clock = options.clock ?? Date.now;
  const from = await store.lastAuditSeq();
  const views = await PolicyViews.load(store, from, clock);
  const decisions = new DecisionLog(store);
  const authorizer = new Authorizer({ views, decisions, timeZone, log, clock });
  const sessions = new SessionKeeper({ store, views, authorizer, decisions, log, clock });
  const attestor = new LinkAttestor({
    store,
    log,
    clock,
    ...(options.attestIntervalMs === undefined ? {} : { intervalMs: options.attestIntervalMs }),
  });
  const server = new LinkServer({
    store,
    ca,
    views,
    authorizer,
    sessions,
    attestor,
    timeZone,
    log,
    clock,
    ...(options.pingIntervalMs === undefined ? {} : { pingIntervalMs: options.pingIntervalMs }),
  });

  const apply = (entries: AuditEntry[]): void => {
    let changedAt = 0;
    for (const entry of entries) {
      const effect = linkEffectOf(entry);
      if (!effect.policyChanged) continue;
      changedAt = entry.seq;
      if (effect.closeGateway !== undefined && server.closeGateway(effect.closeGateway))
        log.info({ seq: entry.seq, gateway: effect.closeGateway }, 'revoked gateway disconnected');
      if (effect.revoke === null) continue;
      views.invalidate(entry.seq).catch(() => {}); // awaited below; this marks the view stale now
      try {
        const gateways = server.pushRevoke(effect.revoke);
        log.info(
          { seq: entry.seq, action: entry.action, subject: entry.subject, gateways },
          'revocation pushed to the connected gateways',
        );
      } catch (error) {
        // One entry that cannot be pushed must not cost the entries after it theirs.
        log.error({ err: error, seq: entry.seq }, 'could not push a revocation; the delta still follows');
      }
    }
    if (changedAt === 0) return;
    views.invalidate(changedAt).then(
      (view) => server.pushPolicy(view),
      (error: unknown) => log.error({ err: error }, 'could not reload the policy; decisions wait for it'),
    );
  };
  const tail = await AuditTail.start(store, {
    from,
    onEntries: apply,
    onError: (error) => log.error({ err: error }, 'reading the audit log failed; retrying'),
  });

  return {
    server,
    attestor,
    views,
    authorizer,
    sessions,
    decisions,
    tail,
    close: async () => {
      await tail.close();
      await server.close();
      await decisions.flushed();
    },
  };
}
