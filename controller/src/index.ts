// @umbra/controller: the controller's parts, for the gateway link's other end, the test rig and the
// benchmarks. The store's record types share names with the CA's and the decision engine's, so it
// is exported as a namespace; so are the test helpers (`testing`), which start real controllers and
// gateway links for tests and benchmarks.

export * from '@umbra/policy';
export { ApiError } from './api/api-error.ts';
export type { ClientServiceResponse, RenewResponse } from './api/client.ts';
export { type ControllerServer, type ServerOptions, startServer } from './api/server.ts';
export { AttestedEnrollment } from './attestation/attested-enrollment.ts';
export { parseEkRoots } from './attestation/ek-roots.ts';
export { parsePcrFile } from './attestation/pcr-file.ts';
export * from './ca/index.ts';
export {
  type ControllerSettings,
  type DataDir,
  DataDirError,
  DEFAULT_TIME_ZONE,
  initDataDir,
  isTimeZone,
  openDataDir,
  timeZoneOf,
} from './data-dir.ts';
export { AuditTail, type AuditTailOptions } from './events/audit-tail.ts';
export { type LinkEffect, linkEffectOf } from './events/link-events.ts';
export { Authorizer, type AuthorizerOptions, type LinkPeer } from './link/authorizer.ts';
export { DecisionLog, type DecisionRecord } from './link/decision-log.ts';
export { GatewayLink } from './link/gateway-link.ts';
export { checkLinkBinding, DEFAULT_ATTEST_INTERVAL_MS, LinkAttestor } from './link/link-attestation.ts';
export { LINK_PING_INTERVAL_MS, LinkServer, type LinkServerOptions } from './link/link-server.ts';
export { type LinkService, type LinkServiceOptions, startLinkService } from './link/link-service.ts';
export { type Logger, silentLogger } from './link/logger.ts';
export { gatewayRefusal, PolicyView, PolicyViews } from './link/policy-view.ts';
export { KNOCK_WINDOW_MS } from './link/replay-guard.ts';
export { SessionKeeper } from './link/session-keeper.ts';
export { buildSnapshot } from './link/snapshot.ts';
export * as testing from './link/test-fixture.ts';
export * as store from './store/index.ts';
export { PgStore, SqliteStore, type Store, StoreError } from './store/index.ts';
export { startTestPostgres, type TestPostgres, type TestPostgresOptions } from './store/test-postgres.ts';
