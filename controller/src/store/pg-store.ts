// The store on PostgreSQL, for several controllers sharing one database. Same migrations, same
// checks, same errors as the SQLite store; what differs is concurrency. Here another controller can
// write between any two statements, so:
// - every multi-statement operation runs in one transaction on one pooled connection;
// - a write that depends on what was read is conditional in its own WHERE clause (a key is set only
//   while none is, a token is spent only while unused), never "read, decide, write" alone;
// - a name taken by another controller between our check and our insert surfaces as a unique
//   violation, translated to the same `duplicate` error naming the field;
// - audit sequence numbers are max + 1 under a table lock, so they stay gap-free across controllers.
// Transactions run at READ COMMITTED, PostgreSQL's default: each statement sees what committed before
// it began, which the conditional writes above rely on.

import { identityIdOf } from '@umbra/protocol';
import pg from 'pg';
import { StoreError } from './errors.ts';
import {
  type AuditRow,
  accessChangeDetails,
  approvalRefusal,
  attestationDetails,
  auditFromRow,
  type CertificateRow,
  certificateFromRow,
  duplicate,
  type EkRootRow,
  ekRootFromRow,
  ekRootTaken,
  type FirmwarePcrsRow,
  firmwarePcrsFromRow,
  firmwareTaken,
  GATEWAY_CLAIM_SELECT,
  type GatewayClaimRow,
  type GatewayRow,
  gatewayClaimFromRow,
  gatewayFromRow,
  type IdentityRow,
  identityFromRow,
  newId,
  notFound,
  type PolicyRow,
  policyFromRow,
  releasedState,
  type ServiceRow,
  type SessionRow,
  serviceFromRow,
  sessionFromRow,
  type TokenRow,
  tokenFromRow,
  tokenState,
} from './rows.ts';
import { MIGRATIONS_TABLE, pendingMigrations } from './schema.ts';
import {
  type AccessChange,
  type AuditEntry,
  type AuditWatch,
  type Certificate,
  type DecisionBatch,
  type EkRoot,
  ENROLLMENT_KINDS,
  type EnrollmentToken,
  type FirmwarePcrs,
  type Gateway,
  type GatewayClaim,
  type GatewayEndpoint,
  type GatewayTpm,
  type Group,
  IDENTITY_KINDS,
  type Identity,
  type NewAuditEntry,
  type NewCertificate,
  type NewEkRoot,
  type NewEnrollmentToken,
  type NewFirmwarePcrs,
  type NewGateway,
  type NewGatewayAttestation,
  type NewGatewayClaim,
  type NewIdentity,
  type NewPolicy,
  type NewService,
  type NewSession,
  type PcrValues,
  type Policy,
  type PolicyWithService,
  type RecordedDecisions,
  SERVICE_MODES,
  type Service,
  type Session,
  type SessionFilter,
  type Store,
  SUBJECT_KINDS,
  type TokenConsumption,
} from './store.ts';
import {
  type CheckedAuditEntry,
  type CheckedSession,
  checkAuditEntry,
  checkAuditPage,
  checkBackend,
  checkDays,
  checkDecisionBatch,
  checkEndpoint,
  checkFingerprint,
  checkFirmwareVersion,
  checkGatewayTpm,
  checkHex,
  checkHours,
  checkId,
  checkName,
  checkNames,
  checkNewAttestation,
  checkNewEkRoot,
  checkNewFirmwarePcrs,
  checkNewGatewayClaim,
  checkNewSession,
  checkOneOf,
  checkPem,
  checkPublicKey,
  checkRequirements,
  checkText,
  checkTimestamp,
  checkTtlSeconds,
  DEFAULT_AUDIT_PAGE,
  DEFAULT_TTL_SECONDS,
  invalid,
  MAX_SERIAL_BYTES,
} from './validate.ts';

const DEFAULT_MAX_CONNECTIONS = 10;
/** How long an operation waits for a pooled connection (or a new one) before failing. */
const CONNECT_TIMEOUT_MS = 10_000;
/**
 * The advisory lock migrations hold: two controllers starting together against an empty database
 * would otherwise both create the tables. Any constant works as long as every controller uses it;
 * this one spells "umbra".
 */
const MIGRATION_LOCK = 0x75_6d_62_72_61;

/**
 * The channel every audit append notifies (with its seq) on commit: how a controller hears at once
 * of a revocation written by an admin command or another controller.
 */
export const AUDIT_CHANNEL = 'umbra_audit';
/** The safety net under LISTEN: a notification lost while the listening connection was down. */
const AUDIT_POLL_MS = 1_000;
/** How long the listening connection waits before reconnecting after it failed. */
const LISTEN_RETRY_MS = 1_000;

// PostgreSQL error codes (SQLSTATE), for the constraint translation below.
const UNIQUE_VIOLATION = '23505';
const FOREIGN_KEY_VIOLATION = '23503';

/** pg's type id for BIGINT (int8). */
const INT8_OID = 20;

/**
 * pg returns BIGINT as a string, since a JavaScript number cannot hold all of it. Every BIGINT here
 * is a millisecond timestamp or an audit sequence number, far inside the safe range; anything beyond
 * it means the row was not written by this code, and is refused rather than rounded.
 */
function parseBigint(text: string): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value)) {
    throw new Error(`BIGINT ${text} from the database is beyond JavaScript's safe integer range`);
  }
  return value;
}

const TYPES = new pg.TypeOverrides();
TYPES.setTypeParser(INT8_OID, 'text', parseBigint);

/**
 * Names are sorted by code point, as SQLite sorts them and as JavaScript's sort() does, whatever
 * collation the database was created with.
 */
const BY_CODE_POINT = 'COLLATE "C"';

// One query per identity, groups included: PostgreSQL builds the sorted array itself.
const IDENTITY_SELECT = `SELECT i.*, o.name AS owner_name,
    ARRAY(SELECT g.name FROM identity_groups ig JOIN groups g ON g.id = ig.group_id
          WHERE ig.identity_id = i.id ORDER BY g.name ${BY_CODE_POINT}) AS groups
  FROM identities i
  LEFT JOIN identities o ON o.id = i.owner_id`;

const SERVICE_SELECT = `SELECT s.*, g.name AS gateway_name FROM services s
  JOIN gateways g ON g.id = s.gateway_id`;

const POLICY_SELECT = `SELECT p.*, COALESCE(si.name, sg.name) AS subject_name,
    s.name AS s_name, s.gateway_id AS s_gateway_id, g.name AS s_gateway_name, s.backend AS s_backend,
    s.mode AS s_mode, s.created_at AS s_created_at
  FROM policies p
  JOIN services s ON s.id = p.service_id
  JOIN gateways g ON g.id = s.gateway_id
  LEFT JOIN identities si ON p.subject_kind = 'identity' AND si.id = p.subject_id
  LEFT JOIN groups sg ON p.subject_kind = 'group' AND sg.id = p.subject_id`;

type PgIdentityRow = IdentityRow & { groups: string[] };

/** The pool for single statements, or the one connection a transaction runs on. */
type Queryable = pg.Pool | pg.PoolClient;

export interface PgStoreOptions {
  /** Milliseconds since the epoch, for created_at and defaulted times; tests pin it. */
  clock?: () => number;
  /** Connections this controller opens at most; default 10. */
  maxConnections?: number;
  /**
   * An idle pooled connection failed (the server restarted, the network dropped). The pool has
   * already discarded it and opens a new one when needed, so by default this is ignored: without a
   * listener it would crash the controller.
   */
  onConnectionError?: (error: Error) => void;
  /**
   * How often an audit reader polls under LISTEN (AuditWatch.pollMs), default 1 s. Tests set it long
   * to show that notifications alone carry events between controllers.
   */
  auditPollMs?: number;
}

export class PgStore implements Store {
  readonly #pool: pg.Pool;
  /** The URL, for the connections LISTEN needs to itself; never shown. */
  readonly #url: string;
  /** The URL without its password, for messages. */
  readonly #where: string;
  readonly #clock: () => number;
  readonly #auditPollMs: number;
  readonly #watches = new Set<AuditWatch>();

  private constructor(pool: pg.Pool, url: string, where: string, options: PgStoreOptions) {
    this.#pool = pool;
    this.#url = url;
    this.#where = where;
    this.#clock = options.clock ?? Date.now;
    this.#auditPollMs = options.auditPollMs ?? AUDIT_POLL_MS;
  }

  /**
   * Connects to `url` (postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE) and brings its schema up to
   * date; several controllers may do so at once.
   */
  static async connect(url: string, options: PgStoreOptions = {}): Promise<PgStore> {
    const where = describeUrl(url);
    const maxConnections = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    if (!Number.isInteger(maxConnections) || maxConnections < 1) {
      throw invalid('maxConnections', `expected a whole number of 1 or more, got ${maxConnections}`);
    }
    const pool = new pg.Pool({
      connectionString: url,
      max: maxConnections,
      types: TYPES,
      application_name: 'umbra-controller',
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    });
    pool.on('error', options.onConnectionError ?? (() => {}));
    const store = new PgStore(pool, url, where, options);
    try {
      await store.#migrate();
      return store;
    } catch (error) {
      await pool.end().catch(() => {});
      if (error instanceof StoreError) throw error;
      throw new Error(`${where}: cannot open the controller database: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }

  /** The schema version of the database. */
  async schemaVersion(): Promise<number> {
    return this.#version(this.#pool);
  }

  async #version(q: Queryable): Promise<number> {
    const row = await one<{ version: number }>(
      q,
      'SELECT COALESCE(MAX(version), 0) AS version FROM schema_migrations',
    );
    return row!.version;
  }

  async #migrate(): Promise<void> {
    await this.#transaction(async (q) => {
      // Held until COMMIT: a second controller waits here, then finds nothing left to do.
      await q.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
      await q.query(MIGRATIONS_TABLE);
      for (const migration of pendingMigrations(await this.#version(q), this.#where)) {
        for (const statement of migration.statements) await q.query(statement);
        await q.query(
          'INSERT INTO schema_migrations (version, description, applied_at) VALUES ($1, $2, $3)',
          [migration.version, migration.description, this.#clock()],
        );
      }
    });
  }

  /**
   * Runs `fn` on one connection between BEGIN and COMMIT; rolls back if it throws. A connection
   * whose ROLLBACK fails is discarded rather than returned to the pool mid-transaction.
   */
  async #transaction<T>(fn: (q: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.#pool.connect();
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      const result = await fn(client);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      await client.query('ROLLBACK').catch((rollbackError: Error) => {
        broken = rollbackError;
      });
      throw translateConstraint(error);
    } finally {
      client.release(broken);
    }
  }

  // ---- identities

  async createIdentity(input: NewIdentity): Promise<Identity> {
    const name = checkName(input?.name, 'name');
    const kind = checkOneOf(input.kind, IDENTITY_KINDS, 'kind');
    const ownerName = input.owner === undefined ? undefined : checkName(input.owner, 'owner');
    const key = input.publicKey === undefined ? undefined : checkPublicKey(input.publicKey, 'publicKey');
    const groups = checkNames(input.groups, 'groups');
    return this.#transaction(async (q) => {
      if (await identityRow(q, 'i.name', name)) throw duplicate('name', `identity "${name}" already exists`);
      let ownerId: string | null = null;
      if (ownerName !== undefined) {
        if (ownerName === name) throw invalid('owner', `identity "${name}" cannot own itself`);
        const owner = await identityRow(q, 'i.name', ownerName);
        if (!owner) throw notFound('owner', `no identity named "${ownerName}"`);
        if (owner.kind === 'device') {
          throw invalid('owner', `"${ownerName}" is a device; an identity belongs to a user or a service`);
        }
        ownerId = owner.id;
      }
      const keyId = key === undefined ? null : identityIdOf(key.raw).toString('hex');
      if (key !== undefined) await refuseTakenIdentityKey(q, key.text, null);
      const id = newId();
      await q.query(
        `INSERT INTO identities (id, name, kind, owner_id, public_key, key_id, disabled, revoked_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, 0, NULL, $7)`,
        [id, name, kind, ownerId, key?.text ?? null, keyId, this.#clock()],
      );
      for (const [index, groupName] of groups.entries()) {
        const group = await groupRow(q, groupName);
        if (!group) throw notFound(`groups[${index}]`, `no group named "${groupName}"`);
        await q.query('INSERT INTO identity_groups (identity_id, group_id) VALUES ($1, $2)', [id, group.id]);
      }
      return identity((await identityRow(q, 'i.id', id))!);
    });
  }

  async getIdentityByName(name: string): Promise<Identity | null> {
    const row = await identityRow(this.#pool, 'i.name', checkName(name, 'name'));
    return row ? identity(row) : null;
  }

  async getIdentityById(id: string): Promise<Identity | null> {
    const row = await identityRow(this.#pool, 'i.id', checkId(id, 'id'));
    return row ? identity(row) : null;
  }

  async getIdentityByKeyId(keyId: string): Promise<Identity | null> {
    const row = await identityRow(this.#pool, 'i.key_id', checkHex(keyId, 'keyId', 16, 16));
    return row ? identity(row) : null;
  }

  async listIdentities(): Promise<Identity[]> {
    const rows = await all<PgIdentityRow>(this.#pool, `${IDENTITY_SELECT} ORDER BY i.name ${BY_CODE_POINT}`);
    return rows.map(identity);
  }

  async setIdentityPublicKey(name: string, publicKey: string): Promise<Identity> {
    checkName(name, 'name');
    const key = checkPublicKey(publicKey, 'publicKey');
    return this.#transaction(async (q) => {
      const row = await identityRow(q, 'i.name', name);
      if (!row) throw notFound('name', `no identity named "${name}"`);
      const refusal = identityKeyRefusal(name, row, key.text);
      if (refusal) throw refusal;
      if (row.public_key === key.text) return identity(row);
      await refuseTakenIdentityKey(q, key.text, row.id);
      // Only while still unkeyed and unrevoked: another controller may have enrolled or revoked it
      // since the read above, and then this changes nothing and the re-read says why.
      const changed = await q.query(
        `UPDATE identities SET public_key = $1, key_id = $2
         WHERE id = $3 AND public_key IS NULL AND revoked_at IS NULL`,
        [key.text, identityIdOf(key.raw).toString('hex'), row.id],
      );
      const now = (await identityRow(q, 'i.id', row.id))!;
      if (changed.rowCount !== 1) {
        const lost = identityKeyRefusal(name, now, key.text);
        if (lost) throw lost;
      }
      return identity(now);
    });
  }

  async setIdentityDisabled(name: string, disabled: boolean): Promise<Identity> {
    checkName(name, 'name');
    if (typeof disabled !== 'boolean')
      throw invalid('disabled', `expected true or false, got ${typeof disabled}`);
    return this.#transaction(async (q) => {
      const changed = await q.query('UPDATE identities SET disabled = $1 WHERE name = $2', [
        disabled ? 1 : 0,
        name,
      ]);
      if (changed.rowCount !== 1) throw notFound('name', `no identity named "${name}"`);
      return identity((await identityRow(q, 'i.name', name))!);
    });
  }

  async revokeIdentity(name: string, now: number): Promise<string[]> {
    checkName(name, 'name');
    checkTimestamp(now, 'now');
    return this.#transaction(async (q) => {
      const row = await one<{ id: string }>(
        q,
        'UPDATE identities SET revoked_at = COALESCE(revoked_at, $1) WHERE name = $2 RETURNING id',
        [now, name],
      );
      if (!row) throw notFound('name', `no identity named "${name}"`);
      const revoked = await all<{ serial: string }>(
        q,
        'UPDATE certificates SET revoked_at = $1 WHERE identity_id = $2 AND revoked_at IS NULL RETURNING serial',
        [now, row.id],
      );
      return revoked.map((certificate) => certificate.serial).sort();
    });
  }

  async revokeIdentityWithDevices(name: string, now: number, actor: string): Promise<AccessChange> {
    checkName(name, 'name');
    checkTimestamp(now, 'now');
    checkText(actor, 'actor');
    return this.#transaction(async (q) => {
      const targets = await identityWithDevices(q, name);
      const ids = targets.map((target) => target.id);
      await q.query('UPDATE identities SET revoked_at = COALESCE(revoked_at, $1) WHERE id = ANY($2)', [
        now,
        ids,
      ]);
      const serials = await all<{ serial: string }>(
        q,
        'UPDATE certificates SET revoked_at = $1 WHERE identity_id = ANY($2) AND revoked_at IS NULL RETURNING serial',
        [now, ids],
      );
      const sessions = await closeOpenSessions(q, ids, now, 'identity revoked');
      return this.#accessChange(q, 'identity.revoke', name, actor, now, targets, {
        serials: serials.map((row) => row.serial),
        sessions,
        cutsIdentities: true,
      });
    });
  }

  async setIdentityDisabledWithDevices(
    name: string,
    disabled: boolean,
    now: number,
    actor: string,
  ): Promise<AccessChange> {
    checkName(name, 'name');
    if (typeof disabled !== 'boolean')
      throw invalid('disabled', `expected true or false, got ${typeof disabled}`);
    checkTimestamp(now, 'now');
    checkText(actor, 'actor');
    return this.#transaction(async (q) => {
      const targets = await identityWithDevices(q, name);
      await q.query('UPDATE identities SET disabled = $1 WHERE id = $2', [disabled ? 1 : 0, targets[0]!.id]);
      const sessions = disabled
        ? await closeOpenSessions(
            q,
            targets.map((target) => target.id),
            now,
            'identity disabled',
          )
        : [];
      const action = disabled ? 'identity.disable' : 'identity.enable';
      return this.#accessChange(q, action, name, actor, now, targets, {
        serials: [],
        sessions,
        cutsIdentities: disabled,
      });
    });
  }

  async #accessChange(
    q: pg.PoolClient,
    action: string,
    subject: string,
    actor: string,
    now: number,
    targets: { name: string; keyId: string | null }[],
    change: { serials: string[]; sessions: string[]; cutsIdentities: boolean },
  ): Promise<AccessChange> {
    const identities = targets.map(({ name, keyId }) => ({ name, keyId }));
    const serials = [...change.serials].sort();
    const sessions = [...change.sessions].sort();
    const details = accessChangeDetails(identities, serials, sessions, change.cutsIdentities);
    const entry = await audit(q, now, actor, action, subject, details);
    return { identities, serials, sessions, audit: entry };
  }

  // ---- groups

  async createGroup(name: string): Promise<Group> {
    checkName(name, 'name');
    return this.#transaction(async (q) => {
      if (await groupRow(q, name)) throw duplicate('name', `group "${name}" already exists`);
      const group: Group = { id: newId(), name, createdAt: this.#clock() };
      await q.query('INSERT INTO groups (id, name, created_at) VALUES ($1, $2, $3)', [
        group.id,
        name,
        group.createdAt,
      ]);
      return group;
    });
  }

  async listGroups(): Promise<Group[]> {
    const rows = await all<{ id: string; name: string; created_at: number }>(
      this.#pool,
      `SELECT * FROM groups ORDER BY name ${BY_CODE_POINT}`,
    );
    return rows.map((row) => ({ id: row.id, name: row.name, createdAt: row.created_at }));
  }

  async addToGroup(identityName: string, groupName: string): Promise<void> {
    checkName(identityName, 'identity');
    checkName(groupName, 'group');
    await this.#transaction(async (q) => {
      const member = await identityRow(q, 'i.name', identityName);
      if (!member) throw notFound('identity', `no identity named "${identityName}"`);
      const group = await groupRow(q, groupName);
      if (!group) throw notFound('group', `no group named "${groupName}"`);
      const added = await q.query(
        'INSERT INTO identity_groups (identity_id, group_id) VALUES ($1, $2) ON CONFLICT DO NOTHING',
        [member.id, group.id],
      );
      if (added.rowCount !== 1) {
        throw duplicate('group', `identity "${identityName}" is already in group "${groupName}"`);
      }
    });
  }

  // ---- gateways

  async createGateway(input: NewGateway): Promise<Gateway> {
    const name = checkName(input?.name, 'name');
    const key = input.publicKey === undefined ? undefined : checkPublicKey(input.publicKey, 'publicKey');
    return this.#transaction(async (q) => {
      if (await gatewayRow(q, name)) throw duplicate('name', `gateway "${name}" already exists`);
      if (key !== undefined) await refuseTakenGatewayKey(q, key.text, null);
      await q.query(
        'INSERT INTO gateways (id, name, public_key, status, created_at) VALUES ($1, $2, $3, $4, $5)',
        [newId(), name, key?.text ?? null, key === undefined ? 'pending' : 'enrolled', this.#clock()],
      );
      return gatewayFromRow((await gatewayRow(q, name))!);
    });
  }

  async getGatewayByName(name: string): Promise<Gateway | null> {
    const row = await gatewayRow(this.#pool, checkName(name, 'name'));
    return row ? gatewayFromRow(row) : null;
  }

  async listGateways(): Promise<Gateway[]> {
    return (await all<GatewayRow>(this.#pool, `SELECT * FROM gateways ORDER BY name ${BY_CODE_POINT}`)).map(
      gatewayFromRow,
    );
  }

  async setGatewayPublicKey(name: string, publicKey: string, tpm?: GatewayTpm): Promise<Gateway> {
    checkName(name, 'name');
    const key = checkPublicKey(publicKey, 'publicKey');
    if (tpm) checkGatewayTpm(tpm, 'tpm');
    return this.#transaction(async (q) => {
      const row = await gatewayRow(q, name);
      if (!row) throw notFound('name', `no gateway named "${name}"`);
      const refusal = gatewayKeyRefusal(name, row, key.text);
      if (refusal) throw refusal;
      if (row.public_key === key.text) return gatewayFromRow(row);
      await refuseTakenGatewayKey(q, key.text, row.id);
      // Conditional for the same reason as in setIdentityPublicKey.
      const changed = await q.query(
        `UPDATE gateways SET public_key = $1, status = 'enrolled',
           tpm_ek_hash = $3, tpm_ak_public = $4, tpm_identity_public = $5
         WHERE id = $2 AND public_key IS NULL AND status <> 'revoked'`,
        [key.text, row.id, tpm?.ekHash ?? null, tpm?.akPublic ?? null, tpm?.identityPublic ?? null],
      );
      const now = (await gatewayRow(q, name))!;
      if (changed.rowCount !== 1) {
        const lost = gatewayKeyRefusal(name, now, key.text);
        if (lost) throw lost;
      }
      return gatewayFromRow(now);
    });
  }

  async revokeGateway(name: string, now: number, actor: string): Promise<Gateway> {
    checkName(name, 'name');
    checkTimestamp(now, 'now');
    checkText(actor, 'actor');
    return this.#transaction(async (q) => {
      const changed = await q.query(
        "UPDATE gateways SET status = 'revoked' WHERE name = $1 AND status <> 'revoked'",
        [name],
      );
      const row = await gatewayRow(q, name);
      if (!row) throw notFound('name', `no gateway named "${name}"`);
      if (changed.rowCount === 1) await audit(q, now, actor, 'gateway.revoke', name, { gateway: name });
      return gatewayFromRow(row);
    });
  }

  async recordGatewayConnected(name: string, endpoint: GatewayEndpoint, now: number): Promise<Gateway> {
    checkName(name, 'name');
    const checked = checkEndpoint(endpoint, 'endpoint');
    checkTimestamp(now, 'now');
    const row = await one<GatewayRow>(
      this.#pool,
      `UPDATE gateways SET endpoint_host = $1, spa_port = $2, tunnel_port = $3, connected_at = $4, last_seen_at = $4
       WHERE name = $5 RETURNING *`,
      [checked.host, checked.spaPort, checked.tunnelPort, now, name],
    );
    if (!row) throw notFound('name', `no gateway named "${name}"`);
    return gatewayFromRow(row);
  }

  async markGatewaysSeen(names: readonly string[], now: number): Promise<void> {
    const checked = checkNames(names, 'names');
    checkTimestamp(now, 'now');
    if (checked.length === 0) return;
    await this.#pool.query(
      `UPDATE gateways SET last_seen_at = $1
       WHERE name = ANY($2) AND (last_seen_at IS NULL OR last_seen_at < $1)`,
      [now, checked],
    );
  }

  async recordGatewayDisconnected(name: string, connectedAt: number, now: number): Promise<void> {
    checkName(name, 'name');
    checkTimestamp(connectedAt, 'connectedAt');
    checkTimestamp(now, 'now');
    await this.#pool.query(
      'UPDATE gateways SET disconnected_at = $1, last_seen_at = $1 WHERE name = $2 AND connected_at = $3',
      [now, name, connectedAt],
    );
  }

  async recordGatewayAttestation(
    name: string,
    attestation: NewGatewayAttestation,
    now: number,
    actor: string,
  ): Promise<Gateway> {
    checkName(name, 'name');
    const checked = checkNewAttestation(attestation, 'attestation');
    checkTimestamp(now, 'now');
    checkText(actor, 'actor');
    return this.#transaction(async (q) => {
      const row = await attestableGatewayRow(q, name);
      const pcrs = JSON.stringify(checked.pcrs);
      // Only an operator ends a quarantine: an attestation meanwhile records what it saw, no more.
      const state = row.attestation === 'quarantined' ? 'quarantined' : checked.state;
      const updated = await one<GatewayRow>(
        q,
        `UPDATE gateways SET attestation = $1, attested_pcrs = $2, firmware_version = $3,
           golden_pcrs = CASE WHEN $1 = 'approved' THEN $2 ELSE golden_pcrs END,
           quarantine_reason = CASE WHEN $1 = 'quarantined' THEN COALESCE(quarantine_reason, $4) ELSE NULL END,
           attestation_changed_at = CASE WHEN attestation = $1 THEN attestation_changed_at ELSE $5 END
         WHERE id = $6 RETURNING *`,
        [state, pcrs, checked.firmwareVersion, checked.reason, now, row.id],
      );
      const details = attestationDetails(state, checked.pcrs, checked.firmwareVersion, checked.reason);
      if (state !== checked.state) details.concluded = checked.state;
      await audit(q, now, actor, 'gateway.attest', name, details);
      return gatewayFromRow(updated!);
    });
  }

  async quarantineGateway(name: string, reason: string, now: number, actor: string): Promise<Gateway> {
    checkName(name, 'name');
    checkText(reason, 'reason');
    checkTimestamp(now, 'now');
    checkText(actor, 'actor');
    return this.#transaction(async (q) => {
      const row = await attestableGatewayRow(q, name);
      if (row.attestation === 'quarantined') return gatewayFromRow(row);
      const updated = await one<GatewayRow>(
        q,
        `UPDATE gateways SET attestation = 'quarantined', quarantine_reason = $1, attestation_changed_at = $2
         WHERE id = $3 RETURNING *`,
        [reason, now, row.id],
      );
      await audit(q, now, actor, 'gateway.quarantine', name, { previous: row.attestation, reason });
      return gatewayFromRow(updated!);
    });
  }

  async approveGateway(name: string, now: number, actor: string): Promise<Gateway> {
    checkName(name, 'name');
    checkTimestamp(now, 'now');
    checkText(actor, 'actor');
    return this.#transaction(async (q) => {
      const row = await gatewayRowForUpdate(q, name);
      const refusal = approvalRefusal(name, row);
      if (refusal) throw refusal;
      const updated = await one<GatewayRow>(
        q,
        `UPDATE gateways SET attestation = 'approved', golden_pcrs = attested_pcrs, attestation_changed_at = $1
         WHERE id = $2 RETURNING *`,
        [now, row.id],
      );
      const golden = JSON.parse(row.attested_pcrs!) as PcrValues;
      await audit(q, now, actor, 'gateway.approve', name, { bank: golden.bank, pcrs: golden.pcrs });
      return gatewayFromRow(updated!);
    });
  }

  async releaseGateway(name: string, now: number, actor: string): Promise<Gateway> {
    checkName(name, 'name');
    checkTimestamp(now, 'now');
    checkText(actor, 'actor');
    return this.#transaction(async (q) => {
      const row = await gatewayRowForUpdate(q, name);
      if (row.attestation !== 'quarantined')
        throw invalid('name', `gateway "${name}" is ${row.attestation}, not quarantined; nothing to release`);
      const state = releasedState(row);
      const updated = await one<GatewayRow>(
        q,
        `UPDATE gateways SET attestation = $1, quarantine_reason = NULL, attestation_changed_at = $2
         WHERE id = $3 RETURNING *`,
        [state, now, row.id],
      );
      await audit(q, now, actor, 'gateway.release', name, { state, reason: row.quarantine_reason });
      return gatewayFromRow(updated!);
    });
  }

  // ---- EK roots

  async addEkRoots(roots: readonly NewEkRoot[], now: number, actor: string): Promise<EkRoot[]> {
    if (!Array.isArray(roots) || roots.length === 0)
      throw invalid('roots', 'expected at least one CA certificate');
    const checked = roots.map((root, index) => checkNewEkRoot(root, `roots[${index}].`));
    checkTimestamp(now, 'now');
    checkText(actor, 'actor');
    return this.#transaction(async (q) => {
      const added: EkRoot[] = [];
      for (const [index, root] of checked.entries()) {
        // ON CONFLICT: a root another controller added meanwhile is refused like one found here.
        const row = await one<EkRootRow>(
          q,
          `INSERT INTO ek_roots (fingerprint, pem, subject, issuer, not_after, added_at)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (fingerprint) DO NOTHING RETURNING *`,
          [root.fingerprint, root.pem, root.subject, root.issuer, root.notAfter, now],
        );
        if (!row) throw duplicate(`roots[${index}]`, ekRootTaken(index, root));
        await audit(q, now, actor, 'ekca.add', root.fingerprint, {
          subject: root.subject,
          issuer: root.issuer,
        });
        added.push(ekRootFromRow(row));
      }
      return added;
    });
  }

  async listEkRoots(): Promise<EkRoot[]> {
    return (
      await all<EkRootRow>(
        this.#pool,
        `SELECT * FROM ek_roots ORDER BY subject ${BY_CODE_POINT}, fingerprint ${BY_CODE_POINT}`,
      )
    ).map(ekRootFromRow);
  }

  async removeEkRoot(fingerprint: string, now: number, actor: string): Promise<EkRoot> {
    const normalized = checkFingerprint(fingerprint, 'fingerprint');
    checkTimestamp(now, 'now');
    checkText(actor, 'actor');
    return this.#transaction(async (q) => {
      const row = await one<EkRootRow>(q, 'DELETE FROM ek_roots WHERE fingerprint = $1 RETURNING *', [
        normalized,
      ]);
      if (!row) throw notFound('fingerprint', `no EK root with fingerprint ${normalized}`);
      await audit(q, now, actor, 'ekca.remove', normalized, { subject: row.subject, issuer: row.issuer });
      return ekRootFromRow(row);
    });
  }

  // ---- golden PCR values per firmware version

  async addGatewayClaim(input: NewGatewayClaim, now: number, actor: string): Promise<GatewayClaim> {
    const claim = checkNewGatewayClaim(input);
    checkTimestamp(now, 'now');
    checkText(actor, 'actor');
    return this.#transaction(async (q) => {
      const gateway = await gatewayRow(q, claim.gateway);
      if (!gateway) throw notFound('gateway', `no gateway named "${claim.gateway}"`);
      if (gateway.status === 'revoked') throw invalid('gateway', `gateway "${claim.gateway}" is revoked`);
      const inserted = await one(
        q,
        `INSERT INTO gateway_claims (ek_hash, gateway_id, site, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (ek_hash) DO NOTHING RETURNING ek_hash`,
        [claim.ekHash, gateway.id, claim.site, now],
      );
      if (!inserted)
        throw duplicate(
          'ekHash',
          `the TPM ${claim.ekHash} is already claimed (umbra-controller gateway claims)`,
        );
      await audit(q, now, actor, 'gateway.claim', claim.gateway, { ekHash: claim.ekHash, site: claim.site });
      return gatewayClaimFromRow(
        (await one<GatewayClaimRow>(q, `${GATEWAY_CLAIM_SELECT} WHERE c.ek_hash = $1`, [claim.ekHash]))!,
      );
    });
  }

  async getGatewayClaim(ekHash: string): Promise<GatewayClaim | null> {
    const hash = checkHex(ekHash, 'ekHash', 32, 32);
    const row = await one<GatewayClaimRow>(this.#pool, `${GATEWAY_CLAIM_SELECT} WHERE c.ek_hash = $1`, [
      hash,
    ]);
    return row ? gatewayClaimFromRow(row) : null;
  }

  async listGatewayClaims(): Promise<GatewayClaim[]> {
    return (
      await all<GatewayClaimRow>(
        this.#pool,
        `${GATEWAY_CLAIM_SELECT} ORDER BY c.created_at, c.ek_hash ${BY_CODE_POINT}`,
      )
    ).map(gatewayClaimFromRow);
  }

  async consumeGatewayClaim(ekHash: string, now: number): Promise<boolean> {
    const hash = checkHex(ekHash, 'ekHash', 32, 32);
    checkTimestamp(now, 'now');
    const spent = await one(
      this.#pool,
      'UPDATE gateway_claims SET used_at = $1 WHERE ek_hash = $2 AND used_at IS NULL RETURNING ek_hash',
      [now, hash],
    );
    return spent !== undefined;
  }

  async addFirmwarePcrs(input: NewFirmwarePcrs, now: number, actor: string): Promise<FirmwarePcrs> {
    const { version, bank, pcrs } = checkNewFirmwarePcrs(input);
    checkTimestamp(now, 'now');
    checkText(actor, 'actor');
    return this.#transaction(async (q) => {
      const row = await one<FirmwarePcrsRow>(
        q,
        `INSERT INTO firmware_pcrs (version, bank, pcrs, added_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (version) DO NOTHING RETURNING *`,
        [version, bank, JSON.stringify(pcrs), now],
      );
      if (!row) throw duplicate('version', firmwareTaken(version));
      await audit(q, now, actor, 'firmware.pcrs.add', version, { bank, pcrs });
      return firmwarePcrsFromRow(row);
    });
  }

  async listFirmwarePcrs(): Promise<FirmwarePcrs[]> {
    return (
      await all<FirmwarePcrsRow>(this.#pool, `SELECT * FROM firmware_pcrs ORDER BY version ${BY_CODE_POINT}`)
    ).map(firmwarePcrsFromRow);
  }

  async removeFirmwarePcrs(version: string, now: number, actor: string): Promise<FirmwarePcrs> {
    checkFirmwareVersion(version, 'version');
    checkTimestamp(now, 'now');
    checkText(actor, 'actor');
    return this.#transaction(async (q) => {
      const row = await one<FirmwarePcrsRow>(q, 'DELETE FROM firmware_pcrs WHERE version = $1 RETURNING *', [
        version,
      ]);
      if (!row) throw notFound('version', `no golden PCR values for firmware version "${version}"`);
      await audit(q, now, actor, 'firmware.pcrs.remove', version, { bank: row.bank });
      return firmwarePcrsFromRow(row);
    });
  }

  // ---- services

  async createService(input: NewService): Promise<Service> {
    const name = checkName(input?.name, 'name');
    const gatewayName = checkName(input.gateway, 'gateway');
    const backend = checkBackend(input.backend, 'backend');
    const mode = input.mode === undefined ? 'tunnel' : checkOneOf(input.mode, SERVICE_MODES, 'mode');
    return this.#transaction(async (q) => {
      if (await serviceRow(q, name)) throw duplicate('name', `service "${name}" already exists`);
      const gateway = await gatewayRow(q, gatewayName);
      if (!gateway) throw notFound('gateway', `no gateway named "${gatewayName}"`);
      await q.query(
        'INSERT INTO services (id, name, gateway_id, backend, mode, created_at) VALUES ($1, $2, $3, $4, $5, $6)',
        [newId(), name, gateway.id, backend, mode, this.#clock()],
      );
      return serviceFromRow((await serviceRow(q, name))!);
    });
  }

  async getServiceByName(name: string): Promise<Service | null> {
    const row = await serviceRow(this.#pool, checkName(name, 'name'));
    return row ? serviceFromRow(row) : null;
  }

  async listServices(): Promise<Service[]> {
    return (await all<ServiceRow>(this.#pool, `${SERVICE_SELECT} ORDER BY s.name ${BY_CODE_POINT}`)).map(
      serviceFromRow,
    );
  }

  // ---- policies

  async addPolicy(input: NewPolicy): Promise<Policy> {
    if (typeof input?.subject !== 'object' || input.subject === null) {
      throw invalid('subject', 'expected { kind: "identity" | "group", name }');
    }
    const subjectKind = checkOneOf(input.subject.kind, SUBJECT_KINDS, 'subject.kind');
    const subjectName = checkName(input.subject.name, 'subject.name');
    const serviceName = checkName(input.service, 'service');
    const requirements = checkRequirements(input.requirements, 'requirements');
    const hours = input.hours === undefined ? null : checkHours(input.hours, 'hours');
    const days = input.days === undefined ? null : checkDays(input.days, 'days');
    const maxTtlSeconds =
      input.maxTtlSeconds === undefined
        ? DEFAULT_TTL_SECONDS
        : checkTtlSeconds(input.maxTtlSeconds, 'maxTtlSeconds');
    return this.#transaction(async (q) => {
      const subject =
        subjectKind === 'identity'
          ? await identityRow(q, 'i.name', subjectName)
          : await groupRow(q, subjectName);
      if (!subject) throw notFound('subject.name', `no ${subjectKind} named "${subjectName}"`);
      const service = await serviceRow(q, serviceName);
      if (!service) throw notFound('service', `no service named "${serviceName}"`);
      const id = newId();
      await q.query(
        `INSERT INTO policies (id, subject_kind, subject_id, service_id, requirements, hours, days, max_ttl_seconds,
           created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
        [
          id,
          subjectKind,
          subject.id,
          service.id,
          JSON.stringify(requirements),
          hours,
          days,
          maxTtlSeconds,
          this.#clock(),
        ],
      );
      const { service: _service, ...policy } = policyFromRow(
        (await one<PolicyRow>(q, `${POLICY_SELECT} WHERE p.id = $1`, [id]))!,
      );
      return policy;
    });
  }

  async policiesFor(identityId: string): Promise<PolicyWithService[]> {
    checkId(identityId, 'identityId');
    if (!(await one(this.#pool, 'SELECT 1 FROM identities WHERE id = $1', [identityId]))) {
      throw notFound('identityId', `no identity with id ${identityId}`);
    }
    const rows = await all<PolicyRow>(
      this.#pool,
      `${POLICY_SELECT}
       WHERE (p.subject_kind = 'identity' AND p.subject_id = $1)
          OR (p.subject_kind = 'group' AND p.subject_id IN (SELECT group_id FROM identity_groups WHERE identity_id = $1))
       ORDER BY p.created_at, p.id ${BY_CODE_POINT}`,
      [identityId],
    );
    return rows.map(policyFromRow);
  }

  async listPolicies(): Promise<PolicyWithService[]> {
    return (
      await all<PolicyRow>(this.#pool, `${POLICY_SELECT} ORDER BY p.created_at, p.id ${BY_CODE_POINT}`)
    ).map(policyFromRow);
  }

  // ---- enrollment tokens

  async createEnrollmentToken(input: NewEnrollmentToken): Promise<EnrollmentToken> {
    const tokenHash = checkHex(input?.tokenHash, 'tokenHash', 32, 32);
    const kind = checkOneOf(input.kind, ENROLLMENT_KINDS, 'kind');
    const subjectName = checkName(input.subjectName, 'subjectName');
    const groups = checkNames(input.groups, 'groups');
    const expiresAt = checkTimestamp(input.expiresAt, 'expiresAt');
    if (kind === 'gateway' && groups.length > 0)
      throw invalid('groups', 'gateway tokens join no groups; leave it empty');
    const createdAt = this.#clock();
    if (expiresAt <= createdAt) {
      throw invalid(
        'expiresAt',
        `${new Date(expiresAt).toISOString()} is not in the future; give a positive TTL`,
      );
    }
    return this.#transaction(async (q) => {
      if (await tokenRow(q, tokenHash))
        throw duplicate('tokenHash', 'an enrollment token with this hash already exists');
      for (const [index, group] of groups.entries()) {
        if (!(await groupRow(q, group))) throw notFound(`groups[${index}]`, `no group named "${group}"`);
      }
      await q.query(
        `INSERT INTO enrollment_tokens (id, token_hash, kind, subject_name, groups, expires_at, used_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, NULL, $7)`,
        [newId(), tokenHash, kind, subjectName, JSON.stringify(groups), expiresAt, createdAt],
      );
      return tokenFromRow((await tokenRow(q, tokenHash))!);
    });
  }

  async peekEnrollmentToken(tokenHash: string, now: number): Promise<TokenConsumption> {
    const hash = checkHex(tokenHash, 'tokenHash', 32, 32);
    checkTimestamp(now, 'now');
    return tokenState(await tokenRow(this.#pool, hash), now);
  }

  async consumeEnrollmentToken(tokenHash: string, now: number): Promise<TokenConsumption> {
    const hash = checkHex(tokenHash, 'tokenHash', 32, 32);
    checkTimestamp(now, 'now');
    // One statement, so no transaction: of two controllers racing on the same token, the second's
    // UPDATE waits for the first's row lock, re-reads the row, finds used_at set and changes nothing.
    const spent = await one<TokenRow>(
      this.#pool,
      `UPDATE enrollment_tokens SET used_at = $1
       WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1
       RETURNING *`,
      [now, hash],
    );
    if (spent) return { ok: true, token: tokenFromRow(spent) };
    const row = await tokenRow(this.#pool, hash);
    if (!row) return { ok: false, reason: 'unknown' };
    return { ok: false, reason: row.used_at !== null ? 'used' : 'expired' };
  }

  // ---- certificates

  async recordCertificate(input: NewCertificate): Promise<Certificate> {
    const serial = checkHex(input?.serial, 'serial', 1, MAX_SERIAL_BYTES);
    const identityId = checkId(input.identityId, 'identityId');
    const notBefore = checkTimestamp(input.notBefore, 'notBefore');
    const notAfter = checkTimestamp(input.notAfter, 'notAfter');
    if (notAfter <= notBefore) throw invalid('notAfter', 'must be later than notBefore');
    const pem = checkPem(input.pem, 'pem');
    return this.#transaction(async (q) => {
      if (!(await one(q, 'SELECT 1 FROM identities WHERE id = $1', [identityId])))
        throw notFound('identityId', `no identity with id ${identityId}`);
      if (await certificateRow(q, serial))
        throw duplicate('serial', `certificate serial ${serial} is already recorded`);
      await q.query(
        `INSERT INTO certificates (serial, identity_id, not_before, not_after, revoked_at, pem)
         VALUES ($1, $2, $3, $4, NULL, $5)`,
        [serial, identityId, notBefore, notAfter, pem],
      );
      return certificateFromRow((await certificateRow(q, serial))!);
    });
  }

  async getCertificate(serial: string): Promise<Certificate | null> {
    const row = await certificateRow(this.#pool, checkHex(serial, 'serial', 1, MAX_SERIAL_BYTES));
    return row ? certificateFromRow(row) : null;
  }

  async revokeCertificate(serial: string, now: number): Promise<boolean> {
    const normalized = checkHex(serial, 'serial', 1, MAX_SERIAL_BYTES);
    checkTimestamp(now, 'now');
    return this.#transaction(async (q) => {
      if (!(await certificateRow(q, normalized)))
        throw notFound('serial', `no certificate with serial ${normalized}`);
      const changed = await q.query(
        'UPDATE certificates SET revoked_at = $1 WHERE serial = $2 AND revoked_at IS NULL',
        [now, normalized],
      );
      return changed.rowCount === 1;
    });
  }

  async revokeCertificateWithAudit(serial: string, now: number, actor: string): Promise<AccessChange> {
    const normalized = checkHex(serial, 'serial', 1, MAX_SERIAL_BYTES);
    checkTimestamp(now, 'now');
    checkText(actor, 'actor');
    return this.#transaction(async (q) => {
      const certificate = await certificateRow(q, normalized);
      if (!certificate) throw notFound('serial', `no certificate with serial ${normalized}`);
      const changed = await q.query(
        'UPDATE certificates SET revoked_at = $1 WHERE serial = $2 AND revoked_at IS NULL',
        [now, normalized],
      );
      const owner = (await identityRow(q, 'i.id', certificate.identity_id))!;
      return this.#accessChange(
        q,
        'certificate.revoke',
        normalized,
        actor,
        now,
        [{ name: owner.name, keyId: owner.key_id }],
        { serials: changed.rowCount === 1 ? [normalized] : [], sessions: [], cutsIdentities: false },
      );
    });
  }

  /** An unknown serial is not revoked: it was never issued here, and chain checks refuse it. */
  async isSerialRevoked(serial: string): Promise<boolean> {
    const row = await one<{ revoked_at: number | null }>(
      this.#pool,
      'SELECT revoked_at FROM certificates WHERE serial = $1',
      [checkHex(serial, 'serial', 1, MAX_SERIAL_BYTES)],
    );
    return row !== undefined && row.revoked_at !== null;
  }

  async listRevokedSerials(unexpiredAt?: number): Promise<string[]> {
    const rows =
      unexpiredAt === undefined
        ? await all<{ serial: string }>(
            this.#pool,
            `SELECT serial FROM certificates WHERE revoked_at IS NOT NULL ORDER BY serial ${BY_CODE_POINT}`,
          )
        : await all<{ serial: string }>(
            this.#pool,
            `SELECT serial FROM certificates WHERE revoked_at IS NOT NULL AND not_after > $1
             ORDER BY serial ${BY_CODE_POINT}`,
            [checkTimestamp(unexpiredAt, 'unexpiredAt')],
          );
    return rows.map((row) => row.serial);
  }

  // ---- sessions

  async openSession(input: NewSession): Promise<Session> {
    const session = checkNewSession(input, '', this.#clock());
    return this.#transaction(async (q) => {
      const { identityId, gatewayId, serviceId } = session;
      if (!(await one(q, 'SELECT 1 FROM identities WHERE id = $1', [identityId])))
        throw notFound('identityId', `no identity with id ${identityId}`);
      if (!(await one(q, 'SELECT 1 FROM gateways WHERE id = $1', [gatewayId]))) {
        throw notFound('gatewayId', `no gateway with id ${gatewayId}`);
      }
      if (!(await one(q, 'SELECT 1 FROM services WHERE id = $1', [serviceId]))) {
        throw notFound('serviceId', `no service with id ${serviceId}`);
      }
      return insertSession(q, session);
    });
  }

  async closeSession(id: string, now: number, reason: string): Promise<boolean> {
    checkId(id, 'id');
    checkTimestamp(now, 'now');
    checkText(reason, 'reason');
    return this.#transaction(async (q) => {
      if (!(await one(q, 'SELECT 1 FROM sessions WHERE id = $1', [id])))
        throw notFound('id', `no session with id ${id}`);
      const changed = await q.query(
        'UPDATE sessions SET closed_at = $1, close_reason = $2 WHERE id = $3 AND closed_at IS NULL',
        [now, reason, id],
      );
      return changed.rowCount === 1;
    });
  }

  async closeSessionsOf(identityId: string, now: number, reason: string): Promise<string[]> {
    checkId(identityId, 'identityId');
    checkTimestamp(now, 'now');
    checkText(reason, 'reason');
    const rows = await all<{ id: string }>(
      this.#pool,
      `UPDATE sessions SET closed_at = $1, close_reason = $2 WHERE identity_id = $3 AND closed_at IS NULL
       RETURNING id`,
      [now, reason, identityId],
    );
    return rows.map((row) => row.id).sort();
  }

  async listSessions(filter: SessionFilter = {}): Promise<Session[]> {
    const conditions: string[] = [];
    const params: unknown[] = [];
    if (filter.open !== undefined) {
      if (typeof filter.open !== 'boolean')
        throw invalid('open', `expected true or false, got ${typeof filter.open}`);
      conditions.push(filter.open ? 'closed_at IS NULL' : 'closed_at IS NOT NULL');
    }
    if (filter.identityId !== undefined) {
      params.push(checkId(filter.identityId, 'identityId'));
      conditions.push(`identity_id = $${params.length}`);
    }
    const where = conditions.length === 0 ? '' : `WHERE ${conditions.join(' AND ')}`;
    const rows = await all<SessionRow>(
      this.#pool,
      `SELECT * FROM sessions ${where} ORDER BY opened_at, id ${BY_CODE_POINT}`,
      params,
    );
    return rows.map(sessionFromRow);
  }

  async recordDecisions(batch: DecisionBatch): Promise<RecordedDecisions> {
    const checked = checkDecisionBatch(batch, this.#clock());
    return this.#transaction(async (q) => {
      const sessions = await insertSessions(q, checked.sessions);
      const audit = await insertAudits(q, checked.audit);
      return {
        sessionIds: sessions.map((session) => session.id),
        auditSeqs: audit.map((entry) => entry.seq),
      };
    });
  }

  // ---- audit

  async appendAudit(entry: NewAuditEntry): Promise<AuditEntry> {
    const checked = checkAuditEntry(entry, '', this.#clock());
    return this.#transaction((q) => insertAudit(q, checked));
  }

  async listAudit(afterSeq = 0, limit = DEFAULT_AUDIT_PAGE): Promise<AuditEntry[]> {
    checkAuditPage(afterSeq, limit);
    return (
      await all<AuditRow>(this.#pool, 'SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2', [
        afterSeq,
        limit,
      ])
    ).map(auditFromRow);
  }

  async lastAuditSeq(): Promise<number> {
    return (await one<{ seq: number }>(
      this.#pool,
      'SELECT COALESCE(MAX(seq), 0)::bigint AS seq FROM audit_log',
    ))!.seq;
  }

  /**
   * LISTENs on its own connection (a pooled one would be handed to other queries), and reconnects
   * when that connection fails; the reader's poll covers what was said meanwhile.
   */
  async watchAudit(listener: () => void): Promise<AuditWatch> {
    let client: pg.Client | undefined;
    let closed = false;
    let retry: NodeJS.Timeout | undefined;
    const connect = async (): Promise<void> => {
      const next = new pg.Client({
        connectionString: this.#url,
        types: TYPES,
        application_name: 'umbra-controller',
      });
      const lost = () => {
        if (client !== next) return;
        client = undefined;
        next.end().catch(() => {});
        // A failed attempt calls this again itself, which schedules the next one.
        if (!closed) retry = setTimeout(() => void connect().catch(() => {}), LISTEN_RETRY_MS);
        // Something may have been appended while no one listened.
        listener();
      };
      next.on('error', lost);
      next.on('end', lost);
      next.on('notification', (message) => {
        if (message.channel === AUDIT_CHANNEL) listener();
      });
      client = next;
      try {
        await next.connect();
        await next.query(`LISTEN ${AUDIT_CHANNEL}`);
      } catch (error) {
        lost();
        throw error;
      }
      if (closed) await next.end().catch(() => {});
    };
    // The first connection must work: a controller that cannot listen should say so at start.
    try {
      await connect();
    } catch (error) {
      closed = true;
      clearTimeout(retry);
      throw error;
    }
    const watch: AuditWatch = {
      pollMs: this.#auditPollMs,
      close: async () => {
        closed = true;
        clearTimeout(retry);
        this.#watches.delete(watch);
        const current = client;
        client = undefined;
        await current?.end().catch(() => {});
      },
    };
    this.#watches.add(watch);
    return watch;
  }

  /** Waits for the operations under way, then closes every connection. Safe to call twice. */
  async close(): Promise<void> {
    for (const watch of [...this.#watches]) await watch.close();
    if (!this.#pool.ended) await this.#pool.end();
  }
}

// ---- queries shared by the methods above, on the pool or inside a transaction

async function all<T>(q: Queryable, sql: string, params: unknown[] = []): Promise<T[]> {
  return (await q.query(sql, params)).rows as T[];
}

async function one<T = unknown>(q: Queryable, sql: string, params: unknown[] = []): Promise<T | undefined> {
  return (await all<T>(q, sql, params))[0];
}

function identityRow(
  q: Queryable,
  column: 'i.id' | 'i.name' | 'i.key_id',
  value: string,
): Promise<PgIdentityRow | undefined> {
  return one<PgIdentityRow>(q, `${IDENTITY_SELECT} WHERE ${column} = $1`, [value]);
}

function identity(row: PgIdentityRow): Identity {
  return identityFromRow(row, row.groups);
}

/** The named identity first, then the devices it owns (none for a device). */
async function identityWithDevices(
  q: Queryable,
  name: string,
): Promise<{ id: string; name: string; keyId: string | null }[]> {
  const row = await one<{ id: string; name: string; kind: string; key_id: string | null }>(
    q,
    'SELECT id, name, kind, key_id FROM identities WHERE name = $1 FOR UPDATE',
    [name],
  );
  if (!row) throw notFound('name', `no identity named "${name}"`);
  const devices =
    row.kind === 'device'
      ? []
      : await all<{ id: string; name: string; key_id: string | null }>(
          q,
          `SELECT id, name, key_id FROM identities WHERE owner_id = $1 ORDER BY name ${BY_CODE_POINT}`,
          [row.id],
        );
  return [row, ...devices].map((identity) => ({
    id: identity.id,
    name: identity.name,
    keyId: identity.key_id,
  }));
}

async function closeOpenSessions(
  q: Queryable,
  identityIds: string[],
  now: number,
  reason: string,
): Promise<string[]> {
  const rows = await all<{ id: string }>(
    q,
    `UPDATE sessions SET closed_at = $1, close_reason = $2 WHERE identity_id = ANY($3) AND closed_at IS NULL
     RETURNING id`,
    [now, reason, identityIds],
  );
  return rows.map((row) => row.id);
}

async function insertSession(q: Queryable, session: CheckedSession): Promise<Session> {
  return (await insertSessions(q, [session]))[0]!;
}

/** One statement for many: a batch of decisions costs one round trip, not one per session. */
async function insertSessions(q: Queryable, sessions: CheckedSession[]): Promise<Session[]> {
  if (sessions.length === 0) return [];
  const ids = sessions.map((session) => session.id ?? newId());
  const rows = await all<SessionRow>(
    q,
    `INSERT INTO sessions (id, identity_id, gateway_id, service_id, source, opened_at, closed_at, close_reason)
     SELECT id, identity_id, gateway_id, service_id, source, opened_at, NULL, NULL
     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[])
          AS s(id, identity_id, gateway_id, service_id, source, opened_at)
     RETURNING *`,
    [
      ids,
      sessions.map((session) => session.identityId),
      sessions.map((session) => session.gatewayId),
      sessions.map((session) => session.serviceId),
      sessions.map((session) => session.source),
      sessions.map((session) => session.openedAt),
    ],
  );
  const byId = new Map(rows.map((row) => [row.id, sessionFromRow(row)]));
  return ids.map((id) => byId.get(id)!);
}

/**
 * Appends inside the caller's transaction. EXCLUSIVE blocks other writers of audit_log (here and on
 * every other controller) until COMMIT, and lets readers through. Taken before reading max(seq), so
 * the INSERT's snapshot, taken after the lock is granted, includes the previous writer's committed
 * row: no two transactions see the same max, and a rolled-back one leaves no gap since it held the
 * only lock while its number was in use. The notification goes out on COMMIT, not before.
 */
async function insertAudit(q: pg.PoolClient, entry: CheckedAuditEntry): Promise<AuditEntry> {
  return (await insertAudits(q, [entry]))[0]!;
}

async function insertAudits(q: pg.PoolClient, entries: CheckedAuditEntry[]): Promise<AuditEntry[]> {
  if (entries.length === 0) return [];
  await q.query('LOCK TABLE audit_log IN EXCLUSIVE MODE');
  // One statement for the batch: numbered max + 1, max + 2, ... in the order given.
  const rows = await all<AuditRow>(
    q,
    `INSERT INTO audit_log (seq, at, actor, action, subject, decision, reason, details)
     SELECT (SELECT COALESCE(MAX(seq), 0) FROM audit_log) + e.n, e.at, e.actor, e.action, e.subject, e.decision,
            e.reason, e.details
     FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
          WITH ORDINALITY AS e(at, actor, action, subject, decision, reason, details, n)
     ORDER BY e.n
     RETURNING *`,
    [
      entries.map((entry) => entry.at),
      entries.map((entry) => entry.actor),
      entries.map((entry) => entry.action),
      entries.map((entry) => entry.subject),
      entries.map((entry) => entry.decision),
      entries.map((entry) => entry.reason),
      entries.map((entry) => entry.details),
    ],
  );
  const last = rows.reduce((max, row) => Math.max(max, row.seq), 0);
  await q.query('SELECT pg_notify($1, $2)', [AUDIT_CHANNEL, String(last)]);
  return rows.map(auditFromRow).sort((a, b) => a.seq - b.seq);
}

async function refuseTakenIdentityKey(
  q: Queryable,
  publicKey: string,
  exceptId: string | null,
): Promise<void> {
  const holder = await one<{ id: string; name: string }>(
    q,
    'SELECT id, name FROM identities WHERE public_key = $1',
    [publicKey],
  );
  if (holder && holder.id !== exceptId) {
    throw duplicate('publicKey', `public key already belongs to identity "${holder.name}"`);
  }
}

/** Why `name` cannot take `publicKey` as it stands in `row`, or null when it can (or already has). */
function identityKeyRefusal(name: string, row: IdentityRow, publicKey: string): StoreError | null {
  if (row.revoked_at !== null) return invalid('name', `identity "${name}" is revoked; enroll a new identity`);
  if (row.public_key !== null && row.public_key !== publicKey) {
    return duplicate(
      'publicKey',
      `identity "${name}" already has a public key; revoke it and enroll a new identity`,
    );
  }
  return null;
}

function groupRow(q: Queryable, name: string): Promise<{ id: string } | undefined> {
  return one<{ id: string }>(q, 'SELECT id FROM groups WHERE name = $1', [name]);
}

function gatewayRow(q: Queryable, name: string): Promise<GatewayRow | undefined> {
  return one<GatewayRow>(q, 'SELECT * FROM gateways WHERE name = $1', [name]);
}

/** Locked until COMMIT: a change decided from the row's state waits for another controller's. */
async function gatewayRowForUpdate(q: pg.PoolClient, name: string): Promise<GatewayRow> {
  const row = await one<GatewayRow>(q, 'SELECT * FROM gateways WHERE name = $1 FOR UPDATE', [name]);
  if (!row) throw notFound('name', `no gateway named "${name}"`);
  return row;
}

/** Locked, and not revoked. */
async function attestableGatewayRow(q: pg.PoolClient, name: string): Promise<GatewayRow> {
  const row = await gatewayRowForUpdate(q, name);
  if (row.status === 'revoked') throw invalid('name', `gateway "${name}" is revoked`);
  return row;
}

function audit(
  q: pg.PoolClient,
  now: number,
  actor: string,
  action: string,
  subject: string,
  details: Record<string, unknown>,
): Promise<AuditEntry> {
  return insertAudit(q, checkAuditEntry({ at: now, actor, action, subject, details }, '', now));
}

async function refuseTakenGatewayKey(
  q: Queryable,
  publicKey: string,
  exceptId: string | null,
): Promise<void> {
  const holder = await one<{ id: string; name: string }>(
    q,
    'SELECT id, name FROM gateways WHERE public_key = $1',
    [publicKey],
  );
  if (holder && holder.id !== exceptId) {
    throw duplicate('publicKey', `public key already belongs to gateway "${holder.name}"`);
  }
}

function gatewayKeyRefusal(name: string, row: GatewayRow, publicKey: string): StoreError | null {
  if (row.status === 'revoked') return invalid('name', `gateway "${name}" is revoked; enroll a new gateway`);
  if (row.public_key !== null && row.public_key !== publicKey) {
    return duplicate('publicKey', `gateway "${name}" already has a public key; enroll a new gateway`);
  }
  return null;
}

function serviceRow(q: Queryable, name: string): Promise<ServiceRow | undefined> {
  return one<ServiceRow>(q, `${SERVICE_SELECT} WHERE s.name = $1`, [name]);
}

function tokenRow(q: Queryable, tokenHash: string): Promise<TokenRow | undefined> {
  return one<TokenRow>(q, 'SELECT * FROM enrollment_tokens WHERE token_hash = $1', [tokenHash]);
}

function certificateRow(q: Queryable, serial: string): Promise<CertificateRow | undefined> {
  return one<CertificateRow>(q, 'SELECT * FROM certificates WHERE serial = $1', [serial]);
}

// ---- errors

/**
 * Which input field each unique constraint guards, and what to say when another controller took the
 * value between our check and our insert. PostgreSQL names the constraints TABLE_COLUMN_key and
 * TABLE_pkey; the schema does not name them itself.
 */
const UNIQUE_CONSTRAINTS: Record<string, { field: string; message: (value: string) => string }> = {
  identities_name_key: { field: 'name', message: (value) => `identity "${value}" already exists` },
  identities_public_key_key: {
    field: 'publicKey',
    message: () => 'public key already belongs to another identity',
  },
  identities_key_id_key: {
    field: 'publicKey',
    message: () => 'public key already belongs to another identity',
  },
  groups_name_key: { field: 'name', message: (value) => `group "${value}" already exists` },
  identity_groups_pkey: { field: 'group', message: () => 'the identity is already in this group' },
  gateways_name_key: { field: 'name', message: (value) => `gateway "${value}" already exists` },
  gateways_public_key_key: {
    field: 'publicKey',
    message: () => 'public key already belongs to another gateway',
  },
  services_name_key: { field: 'name', message: (value) => `service "${value}" already exists` },
  enrollment_tokens_token_hash_key: {
    field: 'tokenHash',
    message: () => 'an enrollment token with this hash already exists',
  },
  certificates_pkey: {
    field: 'serial',
    message: (value) => `certificate serial ${value} is already recorded`,
  },
};

/** Foreign-key columns and the input field that names what they point at. */
const REFERENCE_FIELDS: Record<string, string> = {
  owner_id: 'owner',
  identity_id: 'identityId',
  group_id: 'groups',
  gateway_id: 'gatewayId',
  service_id: 'serviceId',
};

/**
 * The explicit checks name the field; this covers what they cannot see: another controller
 * inserting the same name between our check and our insert (unique violation), or removing what a
 * row refers to (foreign-key violation). Both become the StoreError the check would have thrown.
 */
function translateConstraint(error: unknown): unknown {
  if (!(error instanceof pg.DatabaseError)) return error;
  // "Key (name)=(alice) already exists." / "Key (owner_id)=(ab12...) is not present in table ..."
  const key = /^Key \((?<column>[^)]*)\)=\((?<value>.*)\) /.exec(error.detail ?? '')?.groups;
  if (error.code === UNIQUE_VIOLATION) {
    const known = error.constraint === undefined ? undefined : UNIQUE_CONSTRAINTS[error.constraint];
    if (known) return duplicate(known.field, known.message(key?.value ?? ''));
    return duplicate(key?.column ?? 'unknown', `${error.table ?? 'row'}: ${error.detail ?? error.message}`);
  }
  if (error.code === FOREIGN_KEY_VIOLATION) {
    const field = REFERENCE_FIELDS[key?.column ?? ''] ?? key?.column ?? 'unknown';
    return notFound(field, `refers to something that does not exist: ${error.detail ?? error.message}`);
  }
  return error;
}

/** postgres://USER@HOST:PORT/DATABASE without the password or query, for messages. */
function describeUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw invalid('database', 'expected a URL like postgres://USER@HOST:PORT/DATABASE');
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw invalid(
      'database',
      `expected a postgres:// or postgresql:// URL, got one starting ${JSON.stringify(parsed.protocol)}`,
    );
  }
  const user = parsed.username ? `${parsed.username}@` : '';
  return `${parsed.protocol}//${user}${parsed.host}${parsed.pathname}`;
}
