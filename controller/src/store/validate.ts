// Input checks at the store's edge. The CLI, the HTTP API and the enrollment path all end here, so
// checking once here means no caller can write a malformed row. Each message names the field, shows
// what arrived and says what would be accepted.

import { isIPv4, isIPv6 } from 'node:net';
import { formatRequirement, parseDays, parseHours, parseRequirement } from '@umbra/policy';
import { decodeKey } from '@umbra/protocol';
import { StoreError } from './errors.ts';
import {
  type Decision,
  type DecisionBatch,
  type GatewayEndpoint,
  type GatewayTpm,
  type NewAuditEntry,
  type NewEkRoot,
  type NewFirmwarePcrs,
  type NewGatewayAttestation,
  type NewGatewayClaim,
  type NewSession,
  PCR_BANKS,
  type PcrBank,
  type PcrValues,
} from './store.ts';

/** Names appear in logs, CLI arguments and certificate subjects: keep them to a safe alphabet. */
// A letter or digit first, so a name can never be "." or ".." (it becomes a URI path segment in certificates).
const NAME = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;
const HOSTNAME_LABEL = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
/** As long as the gateway's pinhole may be (services/spa-gateway MAX_TTL_SECONDS). */
export const MAX_TTL_SECONDS = 86_400;
export const DEFAULT_TTL_SECONDS = 30;
const MAX_REQUIREMENTS = 32;
/** KEY, a comparison, VALUE: `disk_encryption=on`, `os_version>=12`. The posture engine gives the meaning. */
const MAX_TEXT = 256;
const MAX_DETAILS_BYTES = 16 * 1024;
/** Certificate serials: RFC 5280 allows up to 20 octets. */
export const MAX_SERIAL_BYTES = 20;
export const DEFAULT_AUDIT_PAGE = 1_000;
export const MAX_AUDIT_PAGE = 10_000;

export function invalid(field: string, message: string): StoreError {
  return new StoreError('invalid', `${field}: ${message}`, field);
}

/** The value as it should appear in a message: quoted and cut short, or its type. */
export function shown(value: unknown): string {
  if (typeof value === 'string')
    return JSON.stringify(value.length > 80 ? `${value.slice(0, 77)}...` : value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (value === null) return 'null';
  return Array.isArray(value) ? 'an array' : `a ${typeof value}`;
}

export function checkName(value: unknown, field: string): string {
  if (typeof value !== 'string' || !NAME.test(value)) {
    throw invalid(field, `expected 1-64 letters, digits or ._@-, got ${shown(value)}`);
  }
  return value;
}

export function checkNames(value: unknown, field: string): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw invalid(field, `expected a list of names, got ${shown(value)}`);
  const names = value.map((item, index) => checkName(item, `${field}[${index}]`));
  const repeated = names.find((name, index) => names.indexOf(name) !== index);
  if (repeated !== undefined) throw invalid(field, `${JSON.stringify(repeated)} is listed twice`);
  return names;
}

export function checkOneOf<T extends string>(value: unknown, allowed: readonly T[], field: string): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw invalid(field, `expected one of ${allowed.join(', ')}, got ${shown(value)}`);
  }
  return value as T;
}

/** An Ed25519 public key in the canonical base64 spelling `umbra keygen` prints. */
export function checkPublicKey(value: unknown, field: string): { text: string; raw: Buffer } {
  if (typeof value !== 'string')
    throw invalid(field, `expected a base64 Ed25519 public key, got ${shown(value)}`);
  try {
    return { text: value, raw: decodeKey(value, field) };
  } catch (error) {
    throw new StoreError('invalid', (error as Error).message, field);
  }
}

/** HOST:PORT, with HOST a DNS name, an IPv4 address or a bracketed IPv6 address. */
export function checkBackend(value: unknown, field: string): string {
  const expected = 'expected HOST:PORT, e.g. "10.0.0.5:5432", "db.internal:5432" or "[fd00::5]:5432"';
  if (typeof value !== 'string') throw invalid(field, `${expected}, got ${shown(value)}`);
  const colon = value.lastIndexOf(':');
  const host = value.slice(0, colon);
  const port = value.slice(colon + 1);
  if (colon < 1 || !/^[1-9]\d{0,4}$/.test(port) || Number(port) > 65535) {
    throw invalid(field, `${expected} with a port from 1 to 65535, got ${shown(value)}`);
  }
  const bracketed = host.startsWith('[') && host.endsWith(']');
  const hostOk = bracketed
    ? isIPv6(host.slice(1, -1))
    : /^[\d.]+$/.test(host)
      ? isIPv4(host)
      : host.length <= 253 && host.split('.').every((label) => HOSTNAME_LABEL.test(label));
  if (!hostOk) throw invalid(field, `${expected}, got ${shown(value)} (the host is not a name or address)`);
  return value;
}

export function checkTtlSeconds(value: unknown, field: string): number {
  if (!Number.isInteger(value) || (value as number) < 1 || (value as number) > MAX_TTL_SECONDS) {
    throw invalid(
      field,
      `expected a whole number of seconds from 1 to ${MAX_TTL_SECONDS}, got ${shown(value)}`,
    );
  }
  return value as number;
}

/**
 * Hours, days and posture requirements are checked by the decision engine's own parsers, so the
 * store never holds a policy the engine cannot read. Their messages name the accepted forms.
 */
export function checkHours(value: unknown, field: string): string {
  if (typeof value !== 'string')
    throw invalid(field, `expected HH:MM-HH:MM such as "08:00-18:00", got ${shown(value)}`);
  try {
    parseHours(value);
  } catch (error) {
    throw invalid(field, (error as Error).message);
  }
  return value;
}

/** Day names and ranges, comma-separated: "mon-fri", "sat,sun". Stored in lower case. */
export function checkDays(value: unknown, field: string): string {
  if (typeof value !== 'string' || value.length === 0)
    throw invalid(field, `expected days such as "mon-fri" or "mon,wed,sat-sun", got ${shown(value)}`);
  try {
    parseDays(value);
  } catch (error) {
    throw invalid(field, (error as Error).message);
  }
  return value.toLowerCase();
}

export function checkRequirements(value: unknown, field: string): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw invalid(field, `expected a list of KEY=VALUE, got ${shown(value)}`);
  if (value.length > MAX_REQUIREMENTS)
    throw invalid(field, `at most ${MAX_REQUIREMENTS} requirements, got ${value.length}`);
  return value.map((item, index) => {
    if (typeof item !== 'string')
      throw invalid(`${field}[${index}]`, `expected KEY=VALUE text, got ${shown(item)}`);
    try {
      return formatRequirement(parseRequirement(item));
    } catch (error) {
      throw invalid(`${field}[${index}]`, (error as Error).message);
    }
  });
}

/** Milliseconds since the epoch. */
export function checkTimestamp(value: unknown, field: string): number {
  if (!Number.isSafeInteger(value) || (value as number) < 0) {
    throw invalid(field, `expected a time in whole milliseconds since 1970, got ${shown(value)}`);
  }
  return value as number;
}

/** Hex of `minBytes` to `maxBytes` bytes, returned in lower case so one value has one spelling. */
export function checkHex(value: unknown, field: string, minBytes: number, maxBytes: number): string {
  const range = minBytes === maxBytes ? `${minBytes}` : `${minBytes}-${maxBytes}`;
  if (
    typeof value !== 'string' ||
    !/^[0-9A-Fa-f]*$/.test(value) ||
    value.length % 2 !== 0 ||
    value.length < minBytes * 2 ||
    value.length > maxBytes * 2
  ) {
    throw invalid(field, `expected ${range} bytes in hex, got ${shown(value)}`);
  }
  return value.toLowerCase();
}

/** A generated row id: 16 random bytes in hex. */
export function checkId(value: unknown, field: string): string {
  return checkHex(value, field, 16, 16);
}

export function checkIpAddress(value: unknown, field: string): string {
  if (typeof value !== 'string' || !(isIPv4(value) || isIPv6(value))) {
    throw invalid(field, `expected an IPv4 or IPv6 address, got ${shown(value)}`);
  }
  return value;
}

/** Free text that ends up in the audit log and `umbra-controller sessions`: bounded, one line. */
export function checkText(value: unknown, field: string): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_TEXT || /\p{Cc}/u.test(value)) {
    throw invalid(field, `expected 1-${MAX_TEXT} characters on one line, got ${shown(value)}`);
  }
  return value;
}

export function checkPem(value: unknown, field: string): string {
  if (
    typeof value !== 'string' ||
    !/^-----BEGIN CERTIFICATE-----\r?\n[\s\S]+-----END CERTIFICATE-----\s*$/.test(value)
  ) {
    throw invalid(
      field,
      `expected one PEM certificate (-----BEGIN CERTIFICATE----- ...), got ${shown(value)}`,
    );
  }
  return value;
}

/** A JSON object, serialised; bounded so one entry cannot bloat the log. */
export function checkDetails(value: unknown, field: string): string {
  if (value === undefined) return '{}';
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw invalid(field, `expected an object, got ${shown(value)}`);
  }
  let text: string;
  try {
    text = JSON.stringify(value);
  } catch (error) {
    throw invalid(field, `cannot be written as JSON: ${(error as Error).message}`);
  }
  if (Buffer.byteLength(text) > MAX_DETAILS_BYTES) {
    throw invalid(field, `at most ${MAX_DETAILS_BYTES} bytes of JSON, got ${Buffer.byteLength(text)}`);
  }
  return text;
}

/** listAudit's position and page size. */
export function checkAuditPage(afterSeq: unknown, limit: unknown): void {
  if (!Number.isSafeInteger(afterSeq) || (afterSeq as number) < 0) {
    throw invalid('afterSeq', `expected a sequence number of 0 or more, got ${shown(afterSeq)}`);
  }
  if (!Number.isInteger(limit) || (limit as number) < 1 || (limit as number) > MAX_AUDIT_PAGE) {
    throw invalid('limit', `expected 1 to ${MAX_AUDIT_PAGE}, got ${shown(limit)}`);
  }
}

/** An audit entry as both engines insert it. */
export interface CheckedAuditEntry {
  at: number;
  actor: string;
  action: string;
  subject: string;
  decision: Decision | null;
  reason: string | null;
  /** JSON text. */
  details: string;
}

/** `prefix` names the entry in a batch (`audit[3].`); a lone entry's fields are named bare. */
export function checkAuditEntry(entry: NewAuditEntry, prefix: string, now: number): CheckedAuditEntry {
  if (typeof entry !== 'object' || entry === null)
    throw invalid(prefix.replace(/\.$/, '') || 'entry', 'expected an audit entry object');
  return {
    at: entry.at === undefined ? now : checkTimestamp(entry.at, `${prefix}at`),
    actor: checkText(entry.actor, `${prefix}actor`),
    action: checkText(entry.action, `${prefix}action`),
    subject: checkText(entry.subject, `${prefix}subject`),
    decision:
      entry.decision === undefined
        ? null
        : checkOneOf<Decision>(entry.decision, ['allow', 'deny'], `${prefix}decision`),
    reason: entry.reason === undefined ? null : checkText(entry.reason, `${prefix}reason`),
    details: checkDetails(entry.details, `${prefix}details`),
  };
}

export interface CheckedSession {
  id: string | undefined;
  identityId: string;
  gatewayId: string;
  serviceId: string;
  source: string;
  openedAt: number;
}

export function checkNewSession(input: NewSession, prefix: string, now: number): CheckedSession {
  if (typeof input !== 'object' || input === null)
    throw invalid(prefix.replace(/\.$/, '') || 'session', 'expected a session object');
  return {
    id: input.id === undefined ? undefined : checkId(input.id, `${prefix}id`),
    identityId: checkId(input.identityId, `${prefix}identityId`),
    gatewayId: checkId(input.gatewayId, `${prefix}gatewayId`),
    serviceId: checkId(input.serviceId, `${prefix}serviceId`),
    source: checkIpAddress(input.source, `${prefix}source`),
    openedAt: input.openedAt === undefined ? now : checkTimestamp(input.openedAt, `${prefix}openedAt`),
  };
}

/** Bounds a batch so one transaction stays short. */
export const MAX_DECISION_BATCH = 5_000;

export function checkDecisionBatch(
  batch: DecisionBatch,
  now: number,
): { sessions: CheckedSession[]; audit: CheckedAuditEntry[] } {
  if (
    typeof batch !== 'object' ||
    batch === null ||
    !Array.isArray(batch.sessions) ||
    !Array.isArray(batch.audit)
  )
    throw invalid('batch', 'expected { sessions: [...], audit: [...] }');
  for (const [field, list] of [
    ['sessions', batch.sessions],
    ['audit', batch.audit],
  ] as const)
    if (list.length > MAX_DECISION_BATCH)
      throw invalid(field, `at most ${MAX_DECISION_BATCH} per batch, got ${list.length}`);
  return {
    sessions: batch.sessions.map((session, index) => checkNewSession(session, `sessions[${index}].`, now)),
    audit: batch.audit.map((entry, index) => checkAuditEntry(entry, `audit[${index}].`, now)),
  };
}

export function checkEndpoint(value: unknown, field: string): GatewayEndpoint {
  const endpoint = value as GatewayEndpoint;
  if (typeof value !== 'object' || value === null)
    throw invalid(field, 'expected { host, spaPort, tunnelPort }');
  const host = endpoint.host;
  if (
    typeof host !== 'string' ||
    !(
      isIPv4(host) ||
      isIPv6(host) ||
      (host.length <= 253 && host.split('.').every((label) => HOSTNAME_LABEL.test(label)))
    )
  )
    throw invalid(`${field}.host`, `expected a host name or an IP address, got ${shown(host)}`);
  for (const key of ['spaPort', 'tunnelPort'] as const) {
    const port = endpoint[key];
    if (!Number.isInteger(port) || port < 1 || port > 65535)
      throw invalid(`${field}.${key}`, `expected a port from 1 to 65535, got ${shown(port)}`);
  }
  return { host, spaPort: endpoint.spaPort, tunnelPort: endpoint.tunnelPort };
}

/** Digest sizes per PCR bank, in bytes (TPM 2.0 Part 2, the TPM_ALG_ID's hash). */
export const PCR_DIGEST_BYTES: Readonly<Record<PcrBank, number>> = { sha1: 20, sha256: 32, sha384: 48 };
/** PCRs 0-23: the PC Client platform's 24 registers. */
export const MAX_PCR_INDEX = 23;
const PCR_INDEX = /^(0|[1-9]\d?)$/;
/** Firmware versions as vendors spell them: 1.2.3, 2024.02-rc1, 4.1+build7. */
const FIRMWARE_VERSION = /^[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}$/;
/** Subject and issuer names as RFC 4514 text: longer than a name, still one bounded line. */
const MAX_DISTINGUISHED_NAME = 1024;

/**
 * PCR values in one bank, as { bank, pcrs: { INDEX: HEX } }: a known bank, indexes 0-23, each digest
 * the bank's size. Returned with the digests in lower case and the indexes ascending.
 */
export function checkPcrValues(value: unknown, field: string): PcrValues {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw invalid(field, `expected { bank, pcrs: { INDEX: HEX, ... } }, got ${shown(value)}`);
  const { bank, pcrs } = value as { bank?: unknown; pcrs?: unknown };
  return checkBankAndPcrs(bank, pcrs, `${field}.bank`, `${field}.pcrs`);
}

/** The same, with the bank and the digests as two fields of their own (`bank`, `pcrs`). */
export function checkBankAndPcrs(
  rawBank: unknown,
  rawPcrs: unknown,
  bankField: string,
  pcrsField: string,
): PcrValues {
  const bank = checkOneOf(rawBank, PCR_BANKS, bankField);
  if (typeof rawPcrs !== 'object' || rawPcrs === null || Array.isArray(rawPcrs))
    throw invalid(pcrsField, `expected { INDEX: HEX, ... }, got ${shown(rawPcrs)}`);
  const entries = Object.entries(rawPcrs as Record<string, unknown>);
  if (entries.length === 0) throw invalid(pcrsField, 'expected at least one PCR, got none');
  const bytes = PCR_DIGEST_BYTES[bank];
  const pcrs: Record<string, string> = {};
  for (const [index, digest] of entries) {
    if (!PCR_INDEX.test(index) || Number(index) > MAX_PCR_INDEX)
      throw invalid(pcrsField, `PCR index ${shown(index)} is not one of 0 to ${MAX_PCR_INDEX}`);
    const field = `${pcrsField}.${index}`;
    if (typeof digest !== 'string' || !/^[0-9A-Fa-f]*$/.test(digest) || digest.length !== bytes * 2)
      throw invalid(
        field,
        `a ${bank} digest is ${bytes} bytes (${bytes * 2} hex digits), got ${shown(digest)}`,
      );
    pcrs[index] = digest.toLowerCase();
  }
  // Integer-like keys enumerate in ascending order, so the JSON of equal sets is equal text.
  return { bank, pcrs };
}

export function checkFirmwareVersion(value: unknown, field: string): string {
  if (typeof value !== 'string' || !FIRMWARE_VERSION.test(value))
    throw invalid(field, `expected 1-64 letters, digits or ._+~- such as "2.4.1", got ${shown(value)}`);
  return value;
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** A claim: the EK hash (64 hex), an existing gateway's name and a site name (1-64 printable). */
export function checkNewGatewayClaim(input: NewGatewayClaim): NewGatewayClaim {
  const ekHash = checkHex(input?.ekHash, 'ekHash', 32, 32);
  const gateway = checkName(input.gateway, 'gateway');
  if (typeof input.site !== 'string' || !/^[\p{L}\p{N}][\p{L}\p{N} ._-]{0,63}$/u.test(input.site))
    throw invalid(
      'site',
      `expected 1-64 letters, digits, spaces or ._- such as "Lyon branch", got ${shown(input.site)}`,
    );
  return { ekHash, gateway, site: input.site };
}

/** A gateway's TPM keys: the EK hash and two TPMT_PUBLIC areas in base64 (an RSA-2048 one is ~330 bytes). */
export function checkGatewayTpm(value: GatewayTpm, field: string): GatewayTpm {
  const ekHash = checkHex(value?.ekHash, `${field}.ekHash`, 32, 32);
  for (const key of ['akPublic', 'identityPublic'] as const) {
    const text = value[key];
    if (typeof text !== 'string' || text.length > 2048 || !BASE64.test(text))
      throw invalid(`${field}.${key}`, `expected a TPMT_PUBLIC in base64 (at most 2048 characters)`);
  }
  return { ekHash, akPublic: value.akPublic, identityPublic: value.identityPublic };
}

/** A certificate's SHA-256 fingerprint: 64 hex digits, with or without colons; lower case, no colons. */
export function checkFingerprint(value: unknown, field: string): string {
  const text = typeof value === 'string' ? value.replaceAll(':', '') : value;
  if (typeof text !== 'string' || !/^[0-9A-Fa-f]{64}$/.test(text))
    throw invalid(
      field,
      `expected a SHA-256 fingerprint (64 hex digits, colons allowed), got ${shown(value)}`,
    );
  return text.toLowerCase();
}

export function checkDistinguishedName(value: unknown, field: string): string {
  if (
    typeof value !== 'string' ||
    value.length === 0 ||
    value.length > MAX_DISTINGUISHED_NAME ||
    /\p{Cc}/u.test(value)
  )
    throw invalid(field, `expected 1-${MAX_DISTINGUISHED_NAME} characters on one line, got ${shown(value)}`);
  return value;
}

const ATTESTATION_OUTCOMES: readonly NewGatewayAttestation['state'][] = [
  'awaiting-approval',
  'approved',
  'quarantined',
];

export interface CheckedAttestation {
  state: NewGatewayAttestation['state'];
  pcrs: PcrValues;
  firmwareVersion: string | null;
  reason: string | null;
}

export function checkNewAttestation(value: unknown, field: string): CheckedAttestation {
  if (typeof value !== 'object' || value === null)
    throw invalid(field, 'expected { state, pcrs, firmwareVersion?, reason? }');
  const input = value as NewGatewayAttestation;
  const state = checkOneOf(input.state, ATTESTATION_OUTCOMES, `${field}.state`);
  const pcrs = checkPcrValues(input.pcrs, `${field}.pcrs`);
  const firmwareVersion =
    input.firmwareVersion === undefined
      ? null
      : checkFirmwareVersion(input.firmwareVersion, `${field}.firmwareVersion`);
  if (state === 'quarantined' && input.reason === undefined)
    throw invalid(`${field}.reason`, 'a quarantine needs a reason (what drifted); give one');
  const reason = input.reason === undefined ? null : checkText(input.reason, `${field}.reason`);
  return { state, pcrs, firmwareVersion, reason };
}

/** `prefix` names the root in a list (`roots[2].`). */
export function checkNewEkRoot(value: unknown, prefix: string): NewEkRoot {
  if (typeof value !== 'object' || value === null)
    throw invalid(
      prefix.replace(/\.$/, '') || 'root',
      'expected { fingerprint, pem, subject, issuer, notAfter }',
    );
  const root = value as NewEkRoot;
  return {
    fingerprint: checkFingerprint(root.fingerprint, `${prefix}fingerprint`),
    pem: checkPem(root.pem, `${prefix}pem`),
    subject: checkDistinguishedName(root.subject, `${prefix}subject`),
    issuer: checkDistinguishedName(root.issuer, `${prefix}issuer`),
    notAfter: checkTimestamp(root.notAfter, `${prefix}notAfter`),
  };
}

export function checkNewFirmwarePcrs(value: unknown): NewFirmwarePcrs {
  if (typeof value !== 'object' || value === null) throw invalid('input', 'expected { version, bank, pcrs }');
  const input = value as NewFirmwarePcrs;
  const version = checkFirmwareVersion(input.version, 'version');
  const { bank, pcrs } = checkBankAndPcrs(input.bank, input.pcrs, 'bank', 'pcrs');
  return { version, bank, pcrs };
}
