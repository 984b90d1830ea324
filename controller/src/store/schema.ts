// The controller's schema as an ordered list of migrations. The same statements run on SQLite and
// on PostgreSQL, so they keep to what both accept: TEXT, INTEGER and BIGINT columns, ids generated
// in code (no AUTOINCREMENT or SERIAL), timestamps as BIGINT milliseconds since the epoch, booleans
// as INTEGER 0/1 (node:sqlite and pg would otherwise disagree on their type), JSON as TEXT.
//
// A migration is never edited once released: a change is a new entry at the end.

import { StoreError } from './errors.ts';

export interface Migration {
  version: number;
  description: string;
  /** One SQL statement per entry: pg's extended protocol and some drivers take one at a time. */
  statements: readonly string[];
}

/** Records which migrations ran; created before anything else, outside the numbered list. */
export const MIGRATIONS_TABLE = `CREATE TABLE IF NOT EXISTS schema_migrations (
  version INTEGER PRIMARY KEY,
  description TEXT NOT NULL,
  applied_at BIGINT NOT NULL
)`;

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description:
      'identities, groups, gateways, services, policies, enrollment, certificates, sessions, audit',
    statements: [
      // owner_id: the user or service a device belongs to. key_id: identityIdOf(public_key) in hex,
      // the 16 bytes a knock names, so the decision path finds the identity by index.
      `CREATE TABLE identities (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL CHECK (kind IN ('device', 'user', 'service')),
        owner_id TEXT REFERENCES identities (id),
        public_key TEXT UNIQUE,
        key_id TEXT UNIQUE,
        disabled INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
        revoked_at BIGINT,
        created_at BIGINT NOT NULL
      )`,
      `CREATE TABLE groups (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL
      )`,
      `CREATE TABLE identity_groups (
        identity_id TEXT NOT NULL REFERENCES identities (id),
        group_id TEXT NOT NULL REFERENCES groups (id),
        PRIMARY KEY (identity_id, group_id)
      )`,
      // The reverse lookup policiesFor needs goes through group_id first.
      'CREATE INDEX identity_groups_by_group ON identity_groups (group_id)',
      `CREATE TABLE gateways (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        public_key TEXT UNIQUE,
        status TEXT NOT NULL CHECK (status IN ('pending', 'enrolled', 'revoked')),
        created_at BIGINT NOT NULL
      )`,
      `CREATE TABLE services (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        gateway_id TEXT NOT NULL REFERENCES gateways (id),
        backend TEXT NOT NULL,
        mode TEXT NOT NULL CHECK (mode IN ('tunnel', 'direct')),
        created_at BIGINT NOT NULL
      )`,
      'CREATE INDEX services_by_gateway ON services (gateway_id)',
      // subject_id points at identities or groups depending on subject_kind, so no foreign key:
      // the store checks it exists when the policy is added.
      `CREATE TABLE policies (
        id TEXT PRIMARY KEY,
        subject_kind TEXT NOT NULL CHECK (subject_kind IN ('identity', 'group')),
        subject_id TEXT NOT NULL,
        service_id TEXT NOT NULL REFERENCES services (id),
        requirements TEXT NOT NULL,
        hours TEXT,
        days TEXT,
        max_ttl_seconds INTEGER NOT NULL,
        created_at BIGINT NOT NULL
      )`,
      'CREATE INDEX policies_by_subject ON policies (subject_kind, subject_id)',
      'CREATE INDEX policies_by_service ON policies (service_id)',
      // Only the SHA-256 of a token's secret is kept: a copy of the database enrolls nothing.
      `CREATE TABLE enrollment_tokens (
        id TEXT PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL CHECK (kind IN ('identity', 'gateway')),
        subject_name TEXT NOT NULL,
        groups TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        used_at BIGINT,
        created_at BIGINT NOT NULL
      )`,
      `CREATE TABLE certificates (
        serial TEXT PRIMARY KEY,
        identity_id TEXT NOT NULL REFERENCES identities (id),
        not_before BIGINT NOT NULL,
        not_after BIGINT NOT NULL,
        revoked_at BIGINT,
        pem TEXT NOT NULL
      )`,
      'CREATE INDEX certificates_by_identity ON certificates (identity_id)',
      `CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        identity_id TEXT NOT NULL REFERENCES identities (id),
        gateway_id TEXT NOT NULL REFERENCES gateways (id),
        service_id TEXT NOT NULL REFERENCES services (id),
        source TEXT NOT NULL,
        opened_at BIGINT NOT NULL,
        closed_at BIGINT,
        close_reason TEXT
      )`,
      'CREATE INDEX sessions_by_identity ON sessions (identity_id)',
      'CREATE INDEX sessions_by_closed_at ON sessions (closed_at)',
      // seq is assigned as max + 1 inside the inserting transaction rather than by the engine: an
      // SQLite INTEGER PRIMARY KEY is the rowid and PostgreSQL would need a sequence, and the two
      // would then differ in gaps and reuse. BIGINT PRIMARY KEY is an ordinary key in both.
      `CREATE TABLE audit_log (
        seq BIGINT PRIMARY KEY,
        at BIGINT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        subject TEXT NOT NULL,
        decision TEXT CHECK (decision IN ('allow', 'deny')),
        reason TEXT,
        details TEXT NOT NULL
      )`,
    ],
  },
  {
    version: 2,
    description: 'gateway endpoints and link liveness',
    statements: [
      // Where clients reach the gateway, as its link reports it; null until it first connects.
      'ALTER TABLE gateways ADD COLUMN endpoint_host TEXT',
      'ALTER TABLE gateways ADD COLUMN spa_port INTEGER',
      'ALTER TABLE gateways ADD COLUMN tunnel_port INTEGER',
      // connected_at names the link: a link's end only marks the gateway disconnected while it is
      // still the newest (another controller sharing the database may hold a newer one).
      'ALTER TABLE gateways ADD COLUMN connected_at BIGINT',
      'ALTER TABLE gateways ADD COLUMN disconnected_at BIGINT',
      'ALTER TABLE gateways ADD COLUMN last_seen_at BIGINT',
      // Posture checks and revocations look up a gateway's open sessions.
      'CREATE INDEX sessions_by_gateway ON sessions (gateway_id)',
    ],
  },
  {
    version: 3,
    description: 'attestation records: EK roots, golden PCR values, gateway attestation state',
    statements: [
      // The TPM manufacturers' CA certificates the operator trusts for EK chains. fingerprint: the
      // SHA-256 of the DER, lower-case hex; subject and issuer as RFC 4514 text, for listings.
      `CREATE TABLE ek_roots (
        fingerprint TEXT PRIMARY KEY,
        pem TEXT NOT NULL,
        subject TEXT NOT NULL,
        issuer TEXT NOT NULL,
        not_after BIGINT NOT NULL,
        added_at BIGINT NOT NULL
      )`,
      // Golden values per firmware version: pcrs is JSON {"INDEX": "hex digest"} in one bank.
      `CREATE TABLE firmware_pcrs (
        version TEXT PRIMARY KEY,
        bank TEXT NOT NULL CHECK (bank IN ('sha1', 'sha256', 'sha384')),
        pcrs TEXT NOT NULL,
        added_at BIGINT NOT NULL
      )`,
      // Every gateway so far holds software keys: unattested. attested_pcrs and golden_pcrs are JSON
      // {"bank": ..., "pcrs": {...}}: what its last attestation quoted, and what it must match.
      `ALTER TABLE gateways ADD COLUMN attestation TEXT NOT NULL DEFAULT 'unattested'
        CHECK (attestation IN ('unattested', 'awaiting-approval', 'approved', 'quarantined'))`,
      'ALTER TABLE gateways ADD COLUMN attested_pcrs TEXT',
      'ALTER TABLE gateways ADD COLUMN firmware_version TEXT',
      'ALTER TABLE gateways ADD COLUMN golden_pcrs TEXT',
      'ALTER TABLE gateways ADD COLUMN quarantine_reason TEXT',
      'ALTER TABLE gateways ADD COLUMN attestation_changed_at BIGINT',
    ],
  },
  {
    version: 4,
    description: "a gateway's TPM keys: EK hash, attestation key and identity key",
    statements: [
      // Set at an attested enrollment. ek_hash: SHA-256 of the EK's SPKI DER, hex; the two keys as
      // their TPMT_PUBLIC, base64: the AK verifies re-attestation quotes, the identity key each
      // link's channel binding.
      'ALTER TABLE gateways ADD COLUMN tpm_ek_hash TEXT',
      'ALTER TABLE gateways ADD COLUMN tpm_ak_public TEXT',
      'ALTER TABLE gateways ADD COLUMN tpm_identity_public TEXT',
    ],
  },
  {
    version: 5,
    description: 'zero-touch claims: a TPM (by EK hash) that may enroll as a gateway without a token',
    statements: [
      `CREATE TABLE gateway_claims (
        ek_hash TEXT PRIMARY KEY,
        gateway_id TEXT NOT NULL REFERENCES gateways (id),
        site TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        used_at BIGINT
      )`,
    ],
  },
];

/** The schema version this code writes and understands. */
export const SCHEMA_VERSION: number = MIGRATIONS.at(-1)?.version ?? 0;

/**
 * The migrations still to apply to a database at `currentVersion` (0 for an empty one). Refuses a
 * database from a newer controller: running old code on it could drop writes it does not know of.
 */
export function pendingMigrations(currentVersion: number, where: string): readonly Migration[] {
  if (currentVersion > SCHEMA_VERSION) {
    throw new StoreError(
      'incompatible',
      `${where}: the database has schema version ${currentVersion} but this controller knows up to ` +
        `${SCHEMA_VERSION}; run a controller at least as new as the one that last wrote it`,
    );
  }
  return MIGRATIONS.filter((migration) => migration.version > currentVersion);
}
