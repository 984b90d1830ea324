// The tables' rows as both engines return them (after pg's BIGINTs are parsed to numbers), and the
// domain objects made from them. Shared so the SQLite and PostgreSQL stores cannot drift apart in
// what they hand back.

import { randomBytes } from 'node:crypto';
import { StoreError } from './errors.ts';
import type {
  AttestationState,
  AuditEntry,
  Certificate,
  Decision,
  EkRoot,
  EnrollmentKind,
  EnrollmentToken,
  FirmwarePcrs,
  Gateway,
  GatewayClaim,
  GatewayStatus,
  Identity,
  IdentityKind,
  PcrBank,
  PcrValues,
  PolicyWithService,
  Service,
  ServiceMode,
  Session,
  SubjectKind,
  TokenConsumption,
} from './store.ts';

export interface IdentityRow {
  id: string;
  name: string;
  kind: IdentityKind;
  owner_id: string | null;
  owner_name: string | null;
  public_key: string | null;
  key_id: string | null;
  disabled: number;
  revoked_at: number | null;
  created_at: number;
}

export interface GatewayRow {
  id: string;
  name: string;
  public_key: string | null;
  status: GatewayStatus;
  created_at: number;
  endpoint_host: string | null;
  spa_port: number | null;
  tunnel_port: number | null;
  connected_at: number | null;
  disconnected_at: number | null;
  last_seen_at: number | null;
  attestation: AttestationState;
  /** JSON PcrValues. */
  attested_pcrs: string | null;
  firmware_version: string | null;
  /** JSON PcrValues. */
  golden_pcrs: string | null;
  quarantine_reason: string | null;
  attestation_changed_at: number | null;
  tpm_ek_hash: string | null;
  tpm_ak_public: string | null;
  tpm_identity_public: string | null;
}

export interface EkRootRow {
  fingerprint: string;
  pem: string;
  subject: string;
  issuer: string;
  not_after: number;
  added_at: number;
}

export interface GatewayClaimRow {
  ek_hash: string;
  /** Joined from gateways. */
  gateway: string;
  site: string;
  created_at: number;
  used_at: number | null;
}

export function gatewayClaimFromRow(row: GatewayClaimRow): GatewayClaim {
  return {
    ekHash: row.ek_hash,
    gateway: row.gateway,
    site: row.site,
    createdAt: row.created_at,
    usedAt: row.used_at,
  };
}

/** Claims with their gateway's name. */
export const GATEWAY_CLAIM_SELECT =
  'SELECT c.ek_hash, g.name AS gateway, c.site, c.created_at, c.used_at FROM gateway_claims c JOIN gateways g ON g.id = c.gateway_id';

export interface FirmwarePcrsRow {
  version: string;
  bank: PcrBank;
  /** JSON { INDEX: HEX }. */
  pcrs: string;
  added_at: number;
}

export interface ServiceRow {
  id: string;
  name: string;
  gateway_id: string;
  gateway_name: string;
  backend: string;
  mode: ServiceMode;
  created_at: number;
}

export interface PolicyRow {
  id: string;
  subject_kind: SubjectKind;
  subject_id: string;
  subject_name: string;
  service_id: string;
  requirements: string;
  hours: string | null;
  days: string | null;
  max_ttl_seconds: number;
  created_at: number;
  s_name: string;
  s_gateway_id: string;
  s_gateway_name: string;
  s_backend: string;
  s_mode: ServiceMode;
  s_created_at: number;
}

export interface TokenRow {
  id: string;
  token_hash: string;
  kind: EnrollmentKind;
  subject_name: string;
  groups: string;
  expires_at: number;
  used_at: number | null;
  created_at: number;
}

export interface CertificateRow {
  serial: string;
  identity_id: string;
  not_before: number;
  not_after: number;
  revoked_at: number | null;
  pem: string;
}

export interface SessionRow {
  id: string;
  identity_id: string;
  gateway_id: string;
  service_id: string;
  source: string;
  opened_at: number;
  closed_at: number | null;
  close_reason: string | null;
}

export interface AuditRow {
  seq: number;
  at: number;
  actor: string;
  action: string;
  subject: string;
  decision: Decision | null;
  reason: string | null;
  details: string;
}

export function newId(): string {
  return randomBytes(16).toString('hex');
}

export function notFound(field: string, message: string): StoreError {
  return new StoreError('not-found', `${field}: ${message}`, field);
}

export function duplicate(field: string, message: string): StoreError {
  return new StoreError('duplicate', message, field);
}

export function identityFromRow(row: IdentityRow, groups: string[]): Identity {
  return {
    id: row.id,
    name: row.name,
    kind: row.kind,
    owner: row.owner_name,
    publicKey: row.public_key,
    keyId: row.key_id,
    disabled: row.disabled === 1,
    revokedAt: row.revoked_at,
    createdAt: row.created_at,
    groups,
  };
}

export function gatewayFromRow(row: GatewayRow): Gateway {
  return {
    id: row.id,
    name: row.name,
    publicKey: row.public_key,
    status: row.status,
    createdAt: row.created_at,
    endpoint:
      row.endpoint_host === null || row.spa_port === null || row.tunnel_port === null
        ? null
        : { host: row.endpoint_host, spaPort: row.spa_port, tunnelPort: row.tunnel_port },
    connectedAt: row.connected_at,
    disconnectedAt: row.disconnected_at,
    lastSeenAt: row.last_seen_at,
    attestation: {
      state: row.attestation,
      pcrs: row.attested_pcrs === null ? null : (JSON.parse(row.attested_pcrs) as PcrValues),
      firmwareVersion: row.firmware_version,
      golden: row.golden_pcrs === null ? null : (JSON.parse(row.golden_pcrs) as PcrValues),
      quarantineReason: row.quarantine_reason,
      changedAt: row.attestation_changed_at,
    },
    tpm:
      row.tpm_ek_hash === null || row.tpm_ak_public === null || row.tpm_identity_public === null
        ? null
        : { ekHash: row.tpm_ek_hash, akPublic: row.tpm_ak_public, identityPublic: row.tpm_identity_public },
  };
}

/**
 * Where `gateway release` takes a quarantined gateway: approved when what it last quoted is its
 * golden set (the quarantine was for something else, or the drift came and went), awaiting approval
 * when it differs (its knocks pass again; the operator approves the new values with `gateway
 * approve`), unattested when it never attested.
 */
export function releasedState(row: GatewayRow): AttestationState {
  if (row.attested_pcrs === null) return 'unattested';
  return row.attested_pcrs === row.golden_pcrs ? 'approved' : 'awaiting-approval';
}

/** Why approve refuses this gateway, or null when it may be approved. */
export function approvalRefusal(name: string, row: GatewayRow): StoreError | null {
  if (row.status === 'revoked')
    return new StoreError('invalid', `name: gateway "${name}" is revoked`, 'name');
  if (row.attestation === 'awaiting-approval' && row.attested_pcrs !== null) return null;
  const why: Record<AttestationState, string> = {
    unattested: 'it has not attested with a TPM, so there are no PCR values to approve',
    approved: 'it is already approved',
    quarantined: 'it is quarantined; release it first (umbra-controller gateway release)',
    'awaiting-approval': 'it has no recorded PCR values',
  };
  return new StoreError(
    'invalid',
    `name: gateway "${name}" is ${row.attestation}, not awaiting approval: ${why[row.attestation]}`,
    'name',
  );
}

/** The audit details of an attestation record: what was quoted, and what it concluded. */
export function attestationDetails(
  state: AttestationState,
  pcrs: PcrValues,
  firmwareVersion: string | null,
  reason: string | null,
): Record<string, unknown> {
  return {
    state,
    bank: pcrs.bank,
    pcrs: pcrs.pcrs,
    ...(firmwareVersion === null ? {} : { firmwareVersion }),
    ...(reason === null ? {} : { reason }),
  };
}

export function ekRootFromRow(row: EkRootRow): EkRoot {
  return {
    fingerprint: row.fingerprint,
    pem: row.pem,
    subject: row.subject,
    issuer: row.issuer,
    notAfter: row.not_after,
    addedAt: row.added_at,
  };
}

export function firmwarePcrsFromRow(row: FirmwarePcrsRow): FirmwarePcrs {
  return {
    version: row.version,
    bank: row.bank,
    pcrs: JSON.parse(row.pcrs) as Record<string, string>,
    addedAt: row.added_at,
  };
}

/**
 * The details of an AccessChange's audit entry: what every controller needs to push it to gateways
 * from the log alone. keyIds lists the identities whose pinholes and tunnels end (all of them unless
 * only a certificate was revoked, which ends nothing but that certificate).
 */
export function accessChangeDetails(
  identities: { name: string; keyId: string | null }[],
  serials: string[],
  sessions: string[],
  cutsIdentities: boolean,
): Record<string, unknown> {
  return {
    identities: identities.map((identity) => identity.name),
    keyIds: cutsIdentities
      ? identities.flatMap((identity) => (identity.keyId === null ? [] : [identity.keyId]))
      : [],
    serials,
    sessions,
  };
}

export function serviceFromRow(row: ServiceRow): Service {
  return {
    id: row.id,
    name: row.name,
    gatewayId: row.gateway_id,
    gateway: row.gateway_name,
    backend: row.backend,
    mode: row.mode,
    createdAt: row.created_at,
  };
}

export function policyFromRow(row: PolicyRow): PolicyWithService {
  return {
    id: row.id,
    subject: { kind: row.subject_kind, id: row.subject_id, name: row.subject_name },
    serviceId: row.service_id,
    requirements: JSON.parse(row.requirements) as string[],
    hours: row.hours,
    days: row.days,
    maxTtlSeconds: row.max_ttl_seconds,
    createdAt: row.created_at,
    service: {
      id: row.service_id,
      name: row.s_name,
      gatewayId: row.s_gateway_id,
      gateway: row.s_gateway_name,
      backend: row.s_backend,
      mode: row.s_mode,
      createdAt: row.s_created_at,
    },
  };
}

/** Whether a token (its row, if any) could be spent at `now`, and why not. */
export function tokenState(row: TokenRow | undefined, now: number): TokenConsumption {
  if (!row) return { ok: false, reason: 'unknown' };
  if (row.used_at !== null) return { ok: false, reason: 'used' };
  if (row.expires_at <= now) return { ok: false, reason: 'expired' };
  return { ok: true, token: tokenFromRow(row) };
}

export function tokenFromRow(row: TokenRow): EnrollmentToken {
  return {
    id: row.id,
    tokenHash: row.token_hash,
    kind: row.kind,
    subjectName: row.subject_name,
    groups: JSON.parse(row.groups) as string[],
    expiresAt: row.expires_at,
    usedAt: row.used_at,
    createdAt: row.created_at,
  };
}

export function certificateFromRow(row: CertificateRow): Certificate {
  return {
    serial: row.serial,
    identityId: row.identity_id,
    notBefore: row.not_before,
    notAfter: row.not_after,
    revokedAt: row.revoked_at,
    pem: row.pem,
  };
}

export function sessionFromRow(row: SessionRow): Session {
  return {
    id: row.id,
    identityId: row.identity_id,
    gatewayId: row.gateway_id,
    serviceId: row.service_id,
    source: row.source,
    openedAt: row.opened_at,
    closedAt: row.closed_at,
    closeReason: row.close_reason,
  };
}

/**
 * The entry with its details parsed when first read: the controller's own audit tail reads back
 * every entry it writes, one per knock, and looks at the details of none of those.
 */
export function auditFromRow(row: AuditRow): AuditEntry {
  const entry = {
    seq: row.seq,
    at: row.at,
    actor: row.actor,
    action: row.action,
    subject: row.subject,
    decision: row.decision,
    reason: row.reason,
  } as AuditEntry;
  const text = row.details;
  const settle = (details: Record<string, unknown>) =>
    Object.defineProperty(entry, 'details', {
      value: details,
      writable: true,
      enumerable: true,
      configurable: true,
    });
  return Object.defineProperty(entry, 'details', {
    enumerable: true,
    configurable: true,
    get: () => {
      const details = JSON.parse(text) as Record<string, unknown>;
      settle(details);
      return details;
    },
    set: settle,
  });
}

/** Why an EK root cannot be added: the same certificate is trusted already (or listed twice). */
export function ekRootTaken(index: number, root: { fingerprint: string; subject: string }): string {
  return (
    `roots[${index}]: the CA certificate "${root.subject}" (SHA-256 ${root.fingerprint}) is already ` +
    'trusted or listed twice; leave it out (umbra-controller ekca list)'
  );
}

export function firmwareTaken(version: string): string {
  return (
    `version: firmware version "${version}" already has golden PCR values; remove them first ` +
    '(umbra-controller firmware pcrs remove) to replace them'
  );
}
