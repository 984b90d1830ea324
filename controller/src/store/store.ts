// What the controller keeps, as domain operations. Callers never see SQL: the SQLite store serves
// one controller from a data directory, a PostgreSQL store will serve several sharing one database,
// and both run the same migrations (schema.ts). Methods return promises because pg is asynchronous.
//
// Every operation validates its input first (errors name the field), and every operation that
// writes more than one row does so in one transaction: a refusal halfway leaves nothing written.
// The store records; it does not decide. Pushing to gateways is the caller's work. Where a change
// and its audit entry must not part (a revocation, a batch of knock decisions), one method writes
// both in one transaction; the audit log is also the event stream every controller process reads.

export type IdentityKind = 'device' | 'user' | 'service';
export const IDENTITY_KINDS: readonly IdentityKind[] = ['device', 'user', 'service'];

export interface Identity {
  id: string;
  name: string;
  kind: IdentityKind;
  /** The name of the user or service this identity belongs to; null when it belongs to no one. */
  owner: string | null;
  /** Ed25519, base64; null until the device enrolls. */
  publicKey: string | null;
  /** identityIdOf(publicKey) in hex: the id a knock carries. Null until enrolled. */
  keyId: string | null;
  disabled: boolean;
  revokedAt: number | null;
  createdAt: number;
  /** Group names, sorted. */
  groups: string[];
}

export interface NewIdentity {
  name: string;
  kind: IdentityKind;
  /** Name of an existing identity of kind `user` or `service`. */
  owner?: string;
  publicKey?: string;
  /** Names of existing groups. */
  groups?: string[];
}

export interface Group {
  id: string;
  name: string;
  createdAt: number;
}

/** `pending` until the gateway enrolls its key. */
export type GatewayStatus = 'pending' | 'enrolled' | 'revoked';
export const GATEWAY_STATUSES: readonly GatewayStatus[] = ['pending', 'enrolled', 'revoked'];

/** Where clients reach a gateway, as its link's hello reports it. */
export interface GatewayEndpoint {
  /** Host name or address clients knock and connect to. */
  host: string;
  spaPort: number;
  tunnelPort: number;
}

/**
 * Whether the gateway's boot state is vouched for by its TPM:
 * - `unattested`: software keys, no TPM (every gateway enrolled before attestation);
 * - `awaiting-approval`: an attestation recorded its PCRs but nothing golden matched them; an
 *   operator approves them (`gateway approve`);
 * - `approved`: its PCRs matched golden values, now recorded as its own;
 * - `quarantined`: its PCRs drifted (or code found another reason); its knocks are refused until an
 *   operator releases it (`gateway release`).
 */
export type AttestationState = 'unattested' | 'awaiting-approval' | 'approved' | 'quarantined';

/** The PCR banks a quote or a golden set may use. */
export type PcrBank = 'sha1' | 'sha256' | 'sha384';
export const PCR_BANKS: readonly PcrBank[] = ['sha1', 'sha256', 'sha384'];

/** PCR values in one bank: index (0-23, in decimal) → digest, lower-case hex, indexes ascending. */
export interface PcrValues {
  bank: PcrBank;
  pcrs: Record<string, string>;
}

export interface GatewayAttestation {
  state: AttestationState;
  /** What its last attestation quoted; null until it first attests. */
  pcrs: PcrValues | null;
  /** The firmware version its last attestation reported, when it did. */
  firmwareVersion: string | null;
  /** The values its PCRs must match (approved, or matched from a firmware version); null until then. */
  golden: PcrValues | null;
  /** Why it is quarantined; null otherwise. */
  quarantineReason: string | null;
  /** When the state last changed. */
  changedAt: number | null;
}

/** What an attestation (at enrollment or a re-attestation) concluded; see recordGatewayAttestation. */
export interface NewGatewayAttestation {
  state: 'awaiting-approval' | 'approved' | 'quarantined';
  pcrs: PcrValues;
  firmwareVersion?: string;
  /** Required for `quarantined`: what drifted. */
  reason?: string;
}

/**
 * Zero-touch: a box whose TPM has this EK may enroll as `gateway` without a token, once. Its firmware
 * carries the controller's URL and CA pin; the EK certificate and the attestation prove it is that box.
 */
export interface GatewayClaim {
  /** SHA-256 of the EK's SPKI DER, lower-case hex (what `gateway list` and the box's hello show). */
  ekHash: string;
  gateway: string;
  /** The site the box is meant for, as the operator named it. */
  site: string;
  createdAt: number;
  usedAt: number | null;
}

export interface NewGatewayClaim {
  ekHash: string;
  /** An existing gateway, not revoked. */
  gateway: string;
  site: string;
}

/** A TPM manufacturer's CA certificate trusted for EK certificate chains. */
export interface EkRoot {
  /** SHA-256 of the DER, lower-case hex. */
  fingerprint: string;
  pem: string;
  subject: string;
  issuer: string;
  notAfter: number;
  addedAt: number;
}

export type NewEkRoot = Omit<EkRoot, 'addedAt'>;

/** Golden PCR values for every gateway running one firmware version. */
export interface FirmwarePcrs extends PcrValues {
  version: string;
  addedAt: number;
}

export interface NewFirmwarePcrs extends PcrValues {
  version: string;
}

/** The TPM keys of a gateway enrolled with attestation. */
export interface GatewayTpm {
  /** SHA-256 of the EK's SPKI DER, lower-case hex. */
  ekHash: string;
  /** The attestation key's TPMT_PUBLIC, base64: it signs the gateway's quotes. */
  akPublic: string;
  /** The identity key's TPMT_PUBLIC, base64: it signs each link's channel binding. */
  identityPublic: string;
}

export interface Gateway {
  id: string;
  name: string;
  /** The gateway's X25519 SPA key, base64: what clients seal their knocks to. */
  publicKey: string | null;
  status: GatewayStatus;
  createdAt: number;
  /** Null until the gateway's link first said hello. */
  endpoint: GatewayEndpoint | null;
  /** When its current (or last) link said hello. */
  connectedAt: number | null;
  /** When that link ended; null or earlier than connectedAt while it is up. */
  disconnectedAt: number | null;
  /** The last sign of life on its link (hello, or a ping answered). */
  lastSeenAt: number | null;
  attestation: GatewayAttestation;
  /** Null for a gateway enrolled with software keys. */
  tpm: GatewayTpm | null;
}

export interface NewGateway {
  name: string;
  publicKey?: string;
}

export type ServiceMode = 'tunnel' | 'direct';
export const SERVICE_MODES: readonly ServiceMode[] = ['tunnel', 'direct'];

export interface Service {
  id: string;
  name: string;
  gatewayId: string;
  /** The gateway's name, for messages and listings. */
  gateway: string;
  /** HOST:PORT the gateway proxies to (tunnel) or opens the pinhole for (direct). */
  backend: string;
  mode: ServiceMode;
  createdAt: number;
}

export interface NewService {
  name: string;
  /** Name of an existing gateway. */
  gateway: string;
  backend: string;
  /** Default `tunnel`. */
  mode?: ServiceMode;
}

export type SubjectKind = 'identity' | 'group';
export const SUBJECT_KINDS: readonly SubjectKind[] = ['identity', 'group'];

export interface Policy {
  id: string;
  subject: { kind: SubjectKind; id: string; name: string };
  serviceId: string;
  /** Posture requirements, `KEY=VALUE` (or `>=`, `<=`, `!=`); all must hold. */
  requirements: string[];
  /** `HH:MM-HH:MM`, or null for any time. */
  hours: string | null;
  /** `Mon-Fri`, `Sat,Sun`, or null for every day. */
  days: string | null;
  maxTtlSeconds: number;
  createdAt: number;
}

export interface PolicyWithService extends Policy {
  service: Service;
}

export interface NewPolicy {
  /** Name of an existing identity or group. */
  subject: { kind: SubjectKind; name: string };
  /** Name of an existing service. */
  service: string;
  requirements?: string[];
  hours?: string;
  days?: string;
  /** 1 to 86400; default 30. */
  maxTtlSeconds?: number;
}

export type EnrollmentKind = 'identity' | 'gateway';
export const ENROLLMENT_KINDS: readonly EnrollmentKind[] = ['identity', 'gateway'];

export interface EnrollmentToken {
  id: string;
  /** SHA-256 of the token's secret, hex (hashTokenSecret in ../ca). The secret itself is never stored. */
  tokenHash: string;
  kind: EnrollmentKind;
  /** The identity or gateway name the token enrolls. */
  subjectName: string;
  /** Groups an enrolling identity joins. */
  groups: string[];
  expiresAt: number;
  usedAt: number | null;
  createdAt: number;
}

export interface NewEnrollmentToken {
  tokenHash: string;
  kind: EnrollmentKind;
  subjectName: string;
  /** Names of existing groups; identity tokens only. */
  groups?: string[];
  expiresAt: number;
}

export type TokenRefusal = 'unknown' | 'used' | 'expired';
export type TokenConsumption = { ok: true; token: EnrollmentToken } | { ok: false; reason: TokenRefusal };

export interface Certificate {
  /** Lower-case hex. */
  serial: string;
  identityId: string;
  notBefore: number;
  notAfter: number;
  revokedAt: number | null;
  pem: string;
}

export interface NewCertificate {
  serial: string;
  identityId: string;
  notBefore: number;
  notAfter: number;
  pem: string;
}

export interface Session {
  id: string;
  identityId: string;
  gatewayId: string;
  serviceId: string;
  /** The source address the gateway saw the knock from. */
  source: string;
  openedAt: number;
  closedAt: number | null;
  closeReason: string | null;
}

export interface NewSession {
  /** A row id (16 bytes, hex) the caller chose, e.g. one a gateway already told its client; default: a new one. */
  id?: string;
  identityId: string;
  gatewayId: string;
  serviceId: string;
  source: string;
  /** Default: the store's clock. */
  openedAt?: number;
}

export interface SessionFilter {
  /** true: only open sessions; false: only closed ones; absent: both. */
  open?: boolean;
  identityId?: string;
}

export type Decision = 'allow' | 'deny';

export interface AuditEntry {
  /** Strictly increasing, from 1; a reader resumes with listAudit(lastSeq). */
  seq: number;
  at: number;
  /** Who acted: `cli`, `gateway:NAME`, `identity:NAME`, ... */
  actor: string;
  /** What was done: `knock`, `identity.revoke`, `enroll`, ... */
  action: string;
  /** What it was done to. */
  subject: string;
  decision: Decision | null;
  reason: string | null;
  details: Record<string, unknown>;
}

export interface NewAuditEntry {
  /** Default: the store's clock. */
  at?: number;
  actor: string;
  action: string;
  subject: string;
  decision?: Decision;
  reason?: string;
  details?: Record<string, unknown>;
}

/** What one revocation or disabling changed, for the caller to push to gateways. */
export interface AccessChange {
  /** The identity named and, for a user or service, the devices it owns. */
  identities: { name: string; keyId: string | null }[];
  /** Certificates revoked by this change, sorted. */
  serials: string[];
  /** Sessions this change closed, sorted. */
  sessions: string[];
  /** The audit entry written in the same transaction; its details carry the three lists above. */
  audit: AuditEntry;
}

/** One batch of knock decisions: the sessions the allowed ones open, and an audit entry for each. */
export interface DecisionBatch {
  sessions: NewSession[];
  audit: NewAuditEntry[];
}

export interface RecordedDecisions {
  sessionIds: string[];
  auditSeqs: number[];
}

/**
 * How a reader learns that the audit log grew. `listener` is called (perhaps for several appends
 * at once) after an append commits: in this process always, from other processes where the engine
 * can tell (PostgreSQL's LISTEN/NOTIFY). A reader still polls every `pollMs` for what it cannot be
 * told about (SQLite written by an admin command) or may have missed (a dropped connection).
 */
export interface AuditWatch {
  pollMs: number;
  close(): Promise<void>;
}

export interface Store {
  createIdentity(input: NewIdentity): Promise<Identity>;
  getIdentityByName(name: string): Promise<Identity | null>;
  getIdentityById(id: string): Promise<Identity | null>;
  /** By the hex identity id a knock carries (identityIdOf of the public key). */
  getIdentityByKeyId(keyId: string): Promise<Identity | null>;
  listIdentities(): Promise<Identity[]>;
  /** Enrollment: sets the key once; a second, different key is refused (`duplicate`). */
  setIdentityPublicKey(name: string, publicKey: string): Promise<Identity>;
  setIdentityDisabled(name: string, disabled: boolean): Promise<Identity>;
  /**
   * Marks the identity revoked (keeping the first revocation time) and revokes its certificates
   * that were not yet revoked. Returns the serials revoked by this call, for the caller to push.
   */
  revokeIdentity(name: string, now: number): Promise<string[]>;
  /**
   * Revokes the identity and, for a user or service, every device it owns, with their certificates;
   * closes their open sessions; appends an `identity.revoke` audit entry by `actor`. One transaction.
   */
  revokeIdentityWithDevices(name: string, now: number, actor: string): Promise<AccessChange>;
  /**
   * Disables (or enables) the identity, closing (when disabling) its open sessions and those of the
   * devices it owns, which a disabled owner shuts out too; appends `identity.disable` or
   * `identity.enable` by `actor`. One transaction.
   */
  setIdentityDisabledWithDevices(
    name: string,
    disabled: boolean,
    now: number,
    actor: string,
  ): Promise<AccessChange>;

  createGroup(name: string): Promise<Group>;
  listGroups(): Promise<Group[]>;
  addToGroup(identityName: string, groupName: string): Promise<void>;

  createGateway(input: NewGateway): Promise<Gateway>;
  getGatewayByName(name: string): Promise<Gateway | null>;
  listGateways(): Promise<Gateway[]>;
  /** Gateway enrollment: sets the key (and, attested, its TPM keys) and marks the gateway enrolled. */
  setGatewayPublicKey(name: string, publicKey: string, tpm?: GatewayTpm): Promise<Gateway>;
  /**
   * Marks the gateway revoked (a stolen or retired box) with its audit entry (`gateway.revoke`), in
   * one transaction; a gateway already revoked is returned unchanged and audited no second time.
   */
  revokeGateway(name: string, now: number, actor: string): Promise<Gateway>;
  /** The gateway's link said hello at `now` from `endpoint`. */
  recordGatewayConnected(name: string, endpoint: GatewayEndpoint, now: number): Promise<Gateway>;
  /** These gateways' links were alive at `now`; one write for all of them. */
  markGatewaysSeen(names: readonly string[], now: number): Promise<void>;
  /**
   * The link that said hello at `connectedAt` ended. A newer link (on this controller or another
   * sharing the database) has moved connectedAt on, and is left alone.
   */
  recordGatewayDisconnected(name: string, connectedAt: number, now: number): Promise<void>;

  /**
   * Records what an attestation of the gateway concluded, with a `gateway.attest` audit entry, in
   * one transaction. `approved` also makes `pcrs` its golden values; `quarantined` needs a reason.
   * A revoked gateway is refused.
   */
  recordGatewayAttestation(
    name: string,
    attestation: NewGatewayAttestation,
    now: number,
    actor: string,
  ): Promise<Gateway>;
  /**
   * Quarantines the gateway (its knocks are refused until released), audited `gateway.quarantine`;
   * one already quarantined is returned unchanged and audited no second time.
   */
  quarantineGateway(name: string, reason: string, now: number, actor: string): Promise<Gateway>;
  /**
   * An operator accepts the PCRs a gateway awaiting approval recorded: they become its golden values
   * and it is approved, audited `gateway.approve`. Any other state is refused (`invalid`).
   */
  approveGateway(name: string, now: number, actor: string): Promise<Gateway>;
  /**
   * An operator takes a gateway out of quarantine, audited `gateway.release`: approved again when its
   * recorded PCRs are its golden values, awaiting approval when they differ (approve them next),
   * unattested when it never attested. A gateway not quarantined is refused (`invalid`).
   */
  releaseGateway(name: string, now: number, actor: string): Promise<Gateway>;

  /**
   * Adds TPM manufacturers' CA certificates (one file's worth) with an `ekca.add` audit entry each,
   * in one transaction: one already trusted refuses them all (`duplicate`, naming `roots[N]`).
   */
  addEkRoots(roots: readonly NewEkRoot[], now: number, actor: string): Promise<EkRoot[]>;
  /** By subject, then fingerprint. */
  listEkRoots(): Promise<EkRoot[]>;
  /** Removes one EK root, audited `ekca.remove`; returns what was removed. */
  removeEkRoot(fingerprint: string, now: number, actor: string): Promise<EkRoot>;

  /**
   * Claims a TPM for a gateway (zero-touch enrollment), audited `gateway.claim`; an EK hash already
   * claimed is `duplicate`, a missing or revoked gateway refused.
   */
  addGatewayClaim(input: NewGatewayClaim, now: number, actor: string): Promise<GatewayClaim>;
  getGatewayClaim(ekHash: string): Promise<GatewayClaim | null>;
  /** By creation time. */
  listGatewayClaims(): Promise<GatewayClaim[]>;
  /** Marks the claim used at `now`; false when it was already used (or does not exist): one enrollment per claim. */
  consumeGatewayClaim(ekHash: string, now: number): Promise<boolean>;

  /** Golden PCR values for one firmware version, audited `firmware.pcrs.add`; a known version is `duplicate`. */
  addFirmwarePcrs(input: NewFirmwarePcrs, now: number, actor: string): Promise<FirmwarePcrs>;
  /** By version. */
  listFirmwarePcrs(): Promise<FirmwarePcrs[]>;
  /** Removes one version's golden values, audited `firmware.pcrs.remove`; returns what was removed. */
  removeFirmwarePcrs(version: string, now: number, actor: string): Promise<FirmwarePcrs>;

  createService(input: NewService): Promise<Service>;
  getServiceByName(name: string): Promise<Service | null>;
  listServices(): Promise<Service[]>;

  addPolicy(input: NewPolicy): Promise<Policy>;
  /** Policies naming the identity directly or one of its groups, each with its service. */
  policiesFor(identityId: string): Promise<PolicyWithService[]>;
  listPolicies(): Promise<PolicyWithService[]>;

  createEnrollmentToken(input: NewEnrollmentToken): Promise<EnrollmentToken>;
  /** Marks the token used, at most once, atomically; says why when it cannot. */
  consumeEnrollmentToken(tokenHash: string, now: number): Promise<TokenConsumption>;
  /**
   * What consumeEnrollmentToken would answer at `now`, without spending the token: an attested
   * enrollment checks the token before its TPM work, and spends it only once every check passed.
   */
  peekEnrollmentToken(tokenHash: string, now: number): Promise<TokenConsumption>;

  recordCertificate(input: NewCertificate): Promise<Certificate>;
  getCertificate(serial: string): Promise<Certificate | null>;
  /** Revokes one certificate; false when it was already revoked. */
  revokeCertificate(serial: string, now: number): Promise<boolean>;
  isSerialRevoked(serial: string): Promise<boolean>;
  /**
   * Revokes one certificate and appends a `certificate.revoke` audit entry by `actor` naming it and
   * its identity; one transaction. Sessions stay open: the gateways refuse the certificate.
   */
  revokeCertificateWithAudit(serial: string, now: number, actor: string): Promise<AccessChange>;
  /** Revoked serials; with `unexpiredAt`, only those whose certificate is still within its validity then. */
  listRevokedSerials(unexpiredAt?: number): Promise<string[]>;

  openSession(input: NewSession): Promise<Session>;
  /** false when the session was already closed (the first close and its reason stand). */
  closeSession(id: string, now: number, reason: string): Promise<boolean>;
  /** Closes every open session of an identity; returns the closed sessions' ids. */
  closeSessionsOf(identityId: string, now: number, reason: string): Promise<string[]>;
  listSessions(filter?: SessionFilter): Promise<Session[]>;
  /**
   * Opens the sessions and appends the audit entries of a batch of decisions in one transaction (one
   * commit for many knocks); all or nothing. This is the decision path's write, so it hands back only
   * the ids and sequence numbers, in the order given, not the rows.
   */
  recordDecisions(batch: DecisionBatch): Promise<RecordedDecisions>;

  appendAudit(entry: NewAuditEntry): Promise<AuditEntry>;
  /** Entries with seq > afterSeq (default 0), oldest first, at most `limit` (default 1000). */
  listAudit(afterSeq?: number, limit?: number): Promise<AuditEntry[]>;
  /** The newest entry's seq; 0 for an empty log. */
  lastAuditSeq(): Promise<number>;
  /** Calls `listener` when the audit log may have grown; see AuditWatch. */
  watchAudit(listener: () => void): Promise<AuditWatch>;

  close(): Promise<void>;
}
