// The parts a gateway enrolled with a controller adds to the dark gateway: the link to the
// controller, the cached signed policy, the grants knocks earn, the tunnel listener they open,
// and what a revocation does — close the identity's pinholes, cut its direct flows, and end its
// live tunnels at once.

import { readFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import {
  CA_CERT_FILE,
  ENROLLMENT_FILE,
  linkBindingDigest,
  type Revoke,
  readSecretFile,
  TLS_CERT_FILE,
  TLS_KEY_FILE,
} from '@umbra/protocol';
import type { Logger } from 'pino';
import type { GatewayConfig } from './config.ts';
import { ConfigError } from './config.ts';
import { ControllerAdmission } from './controller-admission.ts';
import type { Firewall } from './firewall/index.ts';
import { ControllerLink, type LinkIdentity } from './link/controller-link.ts';
import { PolicyCache, portOf } from './link/policy-cache.ts';
import type { Rejections } from './rejections.ts';
import type { GatewayTpm } from './tpm/gateway-tpm.ts';
import { defaultTunnelWorkers, type Grant, Grants, TunnelListener } from './tunnel/index.ts';

const HEALTH_INTERVAL_MS = 30_000;
const SWEEP_INTERVAL_MS = 1_000;
/** How long a cut flow's mark stays in the drop set: longer than any conntrack entry outlives its last packet matters. */
const CUT_TTL_SECONDS = 3_600;

export interface ControllerMode {
  admission: ControllerAdmission;
  link: ControllerLink;
  tunnel: TunnelListener;
  grants: Grants;
  cache: PolicyCache;
  stats(): { linked: boolean; policyVersion: number | null; liveTunnels: number; decidedOffline: number };
  stop(): Promise<void>;
}

interface Enrollment {
  gateway: string;
  controller: string;
}

export async function startControllerMode(
  config: GatewayConfig & { enrollmentDir: string },
  deps: {
    firewall: Firewall;
    rejections: Rejections;
    log: Logger;
    acceptedKnocks(): number;
    /** An attested gateway: its TPM, and the TLS key it unsealed. */
    attested?: { tpm: GatewayTpm; tlsKey: string };
  },
): Promise<ControllerMode> {
  const { firewall, rejections, log, attested } = deps;
  const dir = config.enrollmentDir;
  const enrollment = readEnrollment(dir);
  const keyPath = join(dir, TLS_KEY_FILE);
  const key =
    attested?.tlsKey ??
    readSecretFile(
      keyPath,
      keyPath,
      `enroll the gateway first: umbra-gateway enroll --token TOKEN --dir ${dir}`,
    );
  const cert = readFileSync(join(dir, TLS_CERT_FILE), 'utf8');
  const ca = readFileSync(join(dir, CA_CERT_FILE), 'utf8');

  const cache = new PolicyCache({ caPem: ca, gatewayName: enrollment.gateway, stateDir: config.stateDir });
  const warning = cache.load();
  if (warning) log.warn(warning);
  else if (cache.version !== null) log.info({ version: cache.version }, 'cached policy loaded');

  const grants = new Grants();
  // Filled below; the tunnel and the link report through the admission, which needs the link.
  let admission: ControllerAdmission | undefined;
  const tunnel = new TunnelListener({
    host: config.tunnel.listen,
    port: config.tunnel.port,
    workers: config.tunnel.workers ?? defaultTunnelWorkers(),
    key,
    cert,
    ca,
    grants,
    isSerialRevoked: (serial) => cache.isSerialRevoked(serial),
    onPosture: (report) => {
      const keyId = report.keyId ?? grants.all().find((grant) => grant.identity === report.identity)?.keyId;
      if (keyId) link.send({ t: 'posture', keyId, source: report.source, posture: report.posture });
    },
    onSessionEnded: (sessionId, stats) =>
      admission?.report({
        t: 'session',
        event: 'closed',
        sessionId,
        reason: stats.reason,
        bytesIn: stats.bytesIn,
        bytesOut: stats.bytesOut,
      }),
    log,
  });
  await tunnel.start();

  const endpoint = {
    host: config.controller.advertise ?? interfaceAddress(config.interface, config.path),
    spaPort: config.spaPort,
    tunnelPort: tunnel.port,
  };
  const link: ControllerLink = new ControllerLink({
    url: new URL(enrollment.controller),
    key,
    cert,
    ca,
    endpoint,
    snapshotVersion: () => cache.version,
    onPolicy: (message) => {
      try {
        const snapshot =
          message.t === 'snapshot' ? cache.acceptSnapshot(message) : cache.acceptDelta(message);
        log.info(
          {
            version: snapshot.version,
            identities: snapshot.identities.length,
            services: snapshot.services.length,
          },
          message.t === 'snapshot' ? 'policy snapshot installed' : 'policy delta applied',
        );
      } catch (error) {
        log.error({ err: (error as Error).message }, `the controller's policy ${message.t} was not applied`);
        // A delta that does not fit the version held: reconnecting brings a full snapshot.
        if (message.t === 'delta') link.restart('policy delta did not apply');
      }
    },
    onRevoke: (message) => revoke(message),
    onConnected: () => admission?.flushQueued(),
    ...(attested ? { identity: tpmLinkIdentity(attested.tpm) } : {}),
    log,
  });
  admission = new ControllerAdmission({
    cache,
    link,
    grants,
    firewall,
    failMode: config.controller.failMode,
    tunnelPort: tunnel.port,
    requireSourceBinding: config.requireSourceBinding,
    rejections,
    log,
  });
  const admitted = admission;

  /** Closes what a revocation names: the grants and pinholes, direct flows by mark, live tunnels. */
  function revoke(message: Revoke): void {
    cache.forget(message.keyIds, message.serials);
    const ended = new Map<string, Grant>();
    for (const grant of grants.byKeyIds(message.keyIds)) ended.set(grant.sessionId, grant);
    for (const sessionId of message.sessionIds) {
      const grant = grants.bySession(sessionId);
      if (grant) ended.set(sessionId, grant);
    }
    const closed =
      tunnel.closeKeyIds(message.keyIds, message.reason) +
      tunnel.closeSessions(message.sessionIds, message.reason) +
      tunnel.closeSerials(message.serials, message.reason);
    for (const grant of ended.values()) grants.remove(grant.sessionId);
    closePinholes([...ended.values()]);
    const marks = [...ended.values()].filter((grant) => grant.mode === 'direct').map((grant) => grant.mark);
    if (marks.length > 0) {
      try {
        firewall.cut(marks, CUT_TTL_SECONDS);
      } catch (error) {
        log.error({ err: error }, 'could not cut revoked direct flows');
      }
    }
    log.info(
      {
        reason: message.reason,
        identities: message.keyIds.length,
        sessions: ended.size,
        tunnelsClosed: closed,
      },
      'revocation applied',
    );
  }

  /** Closes the pinholes of ended grants unless another live grant uses the same one. */
  function closePinholes(ended: Grant[]): void {
    for (const grant of ended) {
      const port = grant.mode === 'tunnel' ? tunnel.port : portOf(grant.backend);
      const shared = grants
        .all()
        .some(
          (other) =>
            other.source === grant.source &&
            (other.mode === 'tunnel' ? tunnel.port : portOf(other.backend)) === port,
        );
      if (shared) continue;
      try {
        firewall.close({ source: grant.source, protocol: 'tcp', port });
      } catch (error) {
        log.error({ err: error }, 'could not close a revoked pinhole');
      }
    }
  }

  link.start();
  const sweeper = setInterval(() => {
    for (const grant of grants.sweep()) {
      if (grant.mode === 'direct')
        admitted.report({
          t: 'session',
          event: 'closed',
          sessionId: grant.sessionId,
          reason: 'pinhole expired',
        });
    }
  }, SWEEP_INTERVAL_MS);
  sweeper.unref();
  const health = setInterval(() => {
    const rejected = Object.values(rejections.counts).reduce((sum, n) => sum + n, 0);
    link.send({
      t: 'health',
      uptimeSeconds: Math.round(process.uptime()),
      acceptedKnocks: deps.acceptedKnocks(),
      rejectedKnocks: rejected,
      liveTunnels: tunnel.liveConnections(),
      snapshotVersion: cache.version,
    });
  }, HEALTH_INTERVAL_MS);
  health.unref();

  log.info(
    {
      gateway: enrollment.gateway,
      controller: enrollment.controller,
      endpoint,
      failMode: config.controller.failMode,
    },
    'gateway run by its controller',
  );
  return {
    admission,
    link,
    tunnel,
    grants,
    cache,
    stats: () => ({
      linked: link.connected,
      policyVersion: cache.version,
      liveTunnels: tunnel.liveConnections(),
      decidedOffline: admitted.decidedOffline,
    }),
    async stop() {
      clearInterval(sweeper);
      clearInterval(health);
      link.stop();
      await tunnel.close();
    },
  };
}

function readEnrollment(dir: string): Enrollment {
  const path = join(dir, ENROLLMENT_FILE);
  let record: Partial<Enrollment>;
  try {
    record = JSON.parse(readFileSync(path, 'utf8')) as Partial<Enrollment>;
  } catch (error) {
    throw new ConfigError(
      (error as NodeJS.ErrnoException).code === 'ENOENT'
        ? `${dir} is not an enrolled gateway (no ${ENROLLMENT_FILE}); run umbra-gateway enroll --token TOKEN --dir ${dir}`
        : `${path}: unreadable (${(error as Error).message})`,
    );
  }
  if (typeof record.gateway !== 'string' || typeof record.controller !== 'string')
    throw new ConfigError(
      `${path}: incomplete; enroll again with umbra-gateway enroll --token TOKEN --dir ${dir}`,
    );
  return record as Enrollment;
}

/** The address clients reach: the interface's first global IPv4 address, else its first IPv6 one. */
function interfaceAddress(name: string, configPath: string): string {
  const addresses = (networkInterfaces()[name] ?? []).filter(
    (a) => !a.internal && !a.address.startsWith('fe80:'),
  );
  const chosen = addresses.find((a) => a.family === 'IPv4') ?? addresses[0];
  if (!chosen)
    throw new ConfigError(
      `${configPath}: interface ${name} has no address to give clients; set controller.advertise to the address or name clients use`,
    );
  return chosen.address;
}

/** The link's proofs from the TPM: the identity key signs each link's binding, the AK quotes on request. */
export function tpmLinkIdentity(tpm: GatewayTpm): LinkIdentity {
  return {
    bind: (exporter) => tpm.signWithIdentity(linkBindingDigest(exporter)),
    attest: async (request) => {
      const quote = await tpm.quote(request.nonce, request.bank, request.pcrs);
      return {
        attest: quote.attest,
        signature: quote.signature,
        pcrValues: Object.fromEntries([...quote.pcrValues].map(([index, digest]) => [String(index), digest])),
      };
    },
  };
}
