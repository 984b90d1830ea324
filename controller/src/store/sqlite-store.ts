// The store on node:sqlite: one file in the controller's data directory, or memory for tests.
// node:sqlite is synchronous, so each operation runs start to finish without yielding and its
// transaction never interleaves with another in this process; BEGIN IMMEDIATE takes the write lock
// up front so a second process (an admin command beside `serve`) waits on busy_timeout instead of
// failing halfway through.

import { chmodSync, closeSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync, type SQLInputValue, type StatementSync } from 'node:sqlite';
import { identityIdOf } from '@umbra/protocol';
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

export const DATABASE_FILE = 'controller.db';
/** How long a writer waits for another process's transaction before giving up. */
const BUSY_TIMEOUT_MS = 5_000;
/**
 * An admin command is another process, and SQLite cannot tell this one that it wrote: readers of
 * the audit log poll this often (a revocation reaches the gateways within it).
 */
const AUDIT_POLL_MS = 50;

// SQLite extended result codes, for the constraint backstop below.
const SQLITE_CONSTRAINT_FOREIGNKEY = 787;
const SQLITE_CONSTRAINT_PRIMARYKEY = 1555;
const SQLITE_CONSTRAINT_UNIQUE = 2067;

export interface SqliteStoreOptions {
  /** Milliseconds since the epoch, for created_at and defaulted times; tests pin it. */
  clock?: () => number;
}

const IDENTITY_SELECT = `SELECT i.*, o.name AS owner_name FROM identities i
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

export class SqliteStore implements Store {
  readonly #db: DatabaseSync;
  /** The file, or `:memory:`, for messages. */
  readonly #where: string;
  readonly #clock: () => number;
  readonly #statements = new Map<string, StatementSync>();
  #savepoints = 0;
  readonly #auditListeners = new Set<() => void>();
  /** An audit entry was inserted in the transaction under way; listeners hear of it on commit. */
  #auditGrew = false;

  private constructor(db: DatabaseSync, where: string, clock: () => number) {
    this.#db = db;
    this.#where = where;
    this.#clock = clock;
  }

  /** Opens (creating if needed) DIR/controller.db, readable by its owner only, and migrates it. */
  static open(dir: string, options: SqliteStoreOptions = {}): SqliteStore {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const path = join(dir, DATABASE_FILE);
    // Create the file before SQLite does: SQLite would make it 0644 less the umask, and it holds
    // the whole access model. The -wal and -shm files SQLite adds take this file's mode.
    closeSync(openSync(path, 'a', 0o600));
    chmodSync(path, 0o600);
    let db: DatabaseSync;
    try {
      db = new DatabaseSync(path);
      db.exec('PRAGMA journal_mode = WAL');
    } catch (error) {
      throw new Error(`${path}: cannot open the controller database: ${(error as Error).message}`);
    }
    return SqliteStore.#start(db, path, options);
  }

  /** A private in-memory database, gone on close. */
  static memory(options: SqliteStoreOptions = {}): SqliteStore {
    return SqliteStore.#start(new DatabaseSync(':memory:'), ':memory:', options);
  }

  static #start(db: DatabaseSync, where: string, options: SqliteStoreOptions): SqliteStore {
    try {
      db.exec('PRAGMA foreign_keys = ON');
      db.exec(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
      // FULL, not NORMAL: a revocation or a consumed token must survive a power cut once committed,
      // or a restart could bring a revoked identity or a used token back.
      db.exec('PRAGMA synchronous = FULL');
      const store = new SqliteStore(db, where, options.clock ?? Date.now);
      store.#migrate();
      return store;
    } catch (error) {
      db.close();
      throw error;
    }
  }

  /** The schema version of the open database. */
  schemaVersion(): number {
    const row = this.#get('SELECT COALESCE(MAX(version), 0) AS version FROM schema_migrations') as {
      version: number;
    };
    return row.version;
  }

  #migrate(): void {
    this.transaction(() => {
      this.#db.exec(MIGRATIONS_TABLE);
      for (const migration of pendingMigrations(this.schemaVersion(), this.#where)) {
        for (const statement of migration.statements) this.#db.exec(statement);
        this.#run('INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)', [
          migration.version,
          migration.description,
          this.#clock(),
        ]);
      }
    });
  }

  /**
   * Runs `fn` in a transaction: committed if it returns, rolled back if it throws. Nested calls
   * become savepoints, so a helper that needs a transaction can be called from one. `fn` must be
   * synchronous: a transaction held across an await would block every other writer.
   */
  transaction<T>(fn: () => T): T {
    const nested = this.#db.isTransaction;
    const savepoint = `nested_${++this.#savepoints}`;
    this.#db.exec(nested ? `SAVEPOINT ${savepoint}` : 'BEGIN IMMEDIATE');
    try {
      const result = fn();
      if (result instanceof Promise) {
        throw new TypeError('transaction(fn): fn returned a promise; it must do its work synchronously');
      }
      this.#db.exec(nested ? `RELEASE ${savepoint}` : 'COMMIT');
      if (!nested && this.#auditGrew) this.#announceAudit();
      return result;
    } catch (error) {
      if (nested) {
        this.#db.exec(`ROLLBACK TO ${savepoint}`);
        this.#db.exec(`RELEASE ${savepoint}`);
      } else if (this.#db.isTransaction) {
        this.#db.exec('ROLLBACK');
      }
      throw translateConstraint(error);
    } finally {
      if (!nested) {
        this.#savepoints = 0;
        this.#auditGrew = false;
      }
    }
  }

  /**
   * After the commit, never before: a reader told earlier could read a seq that a rollback then
   * hands to another entry, and skip that entry for good.
   */
  #announceAudit(): void {
    this.#auditGrew = false;
    for (const listener of this.#auditListeners) queueMicrotask(listener);
  }

  #statement(sql: string): StatementSync {
    let statement = this.#statements.get(sql);
    if (statement === undefined) {
      statement = this.#db.prepare(sql);
      this.#statements.set(sql, statement);
    }
    return statement;
  }

  #run(sql: string, params: SQLInputValue[] = []): number {
    return Number(this.#statement(sql).run(...params).changes);
  }

  #get(sql: string, params: SQLInputValue[] = []): unknown {
    return this.#statement(sql).get(...params);
  }

  #all(sql: string, params: SQLInputValue[] = []): unknown[] {
    return this.#statement(sql).all(...params);
  }

  // ---- identities

  async createIdentity(input: NewIdentity): Promise<Identity> {
    const name = checkName(input?.name, 'name');
    const kind = checkOneOf(input.kind, IDENTITY_KINDS, 'kind');
    const ownerName = input.owner === undefined ? undefined : checkName(input.owner, 'owner');
    const key = input.publicKey === undefined ? undefined : checkPublicKey(input.publicKey, 'publicKey');
    const groups = checkNames(input.groups, 'groups');
    return this.transaction(() => {
      if (this.#identityRow('i.name', name)) throw duplicate('name', `identity "${name}" already exists`);
      let ownerId: string | null = null;
      if (ownerName !== undefined) {
        if (ownerName === name) throw invalid('owner', `identity "${name}" cannot own itself`);
        const owner = this.#identityRow('i.name', ownerName);
        if (!owner) throw notFound('owner', `no identity named "${ownerName}"`);
        if (owner.kind === 'device') {
          throw invalid('owner', `"${ownerName}" is a device; an identity belongs to a user or a service`);
        }
        ownerId = owner.id;
      }
      const keyId = key === undefined ? null : identityIdOf(key.raw).toString('hex');
      if (key !== undefined) this.#refuseTakenIdentityKey(key.text, null);
      const id = newId();
      this.#run(
        `INSERT INTO identities (id, name, kind, owner_id, public_key, key_id, disabled, revoked_at, created_at)
         VALUES (?, ?, ?, ?, ?, ?, 0, NULL, ?)`,
        [id, name, kind, ownerId, key?.text ?? null, keyId, this.#clock()],
      );
      groups.forEach((groupName, index) => {
        const group = this.#groupRow(groupName);
        if (!group) throw notFound(`groups[${index}]`, `no group named "${groupName}"`);
        this.#run('INSERT INTO identity_groups (identity_id, group_id) VALUES (?, ?)', [id, group.id]);
      });
      return this.#identity(this.#identityRow('i.id', id)!);
    });
  }

  async getIdentityByName(name: string): Promise<Identity | null> {
    const row = this.#identityRow('i.name', checkName(name, 'name'));
    return row ? this.#identity(row) : null;
  }

  async getIdentityById(id: string): Promise<Identity | null> {
    const row = this.#identityRow('i.id', checkId(id, 'id'));
    return row ? this.#identity(row) : null;
  }

  async getIdentityByKeyId(keyId: string): Promise<Identity | null> {
    const row = this.#identityRow('i.key_id', checkHex(keyId, 'keyId', 16, 16));
    return row ? this.#identity(row) : null;
  }

  async listIdentities(): Promise<Identity[]> {
    const memberships = new Map<string, string[]>();
    for (const row of this.#all(
      'SELECT ig.identity_id, g.name FROM identity_groups ig JOIN groups g ON g.id = ig.group_id ORDER BY g.name',
    ) as { identity_id: string; name: string }[]) {
      const list = memberships.get(row.identity_id) ?? [];
      list.push(row.name);
      memberships.set(row.identity_id, list);
    }
    return (this.#all(`${IDENTITY_SELECT} ORDER BY i.name`) as IdentityRow[]).map((row) =>
      identityFromRow(row, memberships.get(row.id) ?? []),
    );
  }

  async setIdentityPublicKey(name: string, publicKey: string): Promise<Identity> {
    checkName(name, 'name');
    const key = checkPublicKey(publicKey, 'publicKey');
    return this.transaction(() => {
      const row = this.#identityRow('i.name', name);
      if (!row) throw notFound('name', `no identity named "${name}"`);
      if (row.revoked_at !== null)
        throw invalid('name', `identity "${name}" is revoked; enroll a new identity`);
      if (row.public_key === key.text) return this.#identity(row);
      if (row.public_key !== null) {
        throw duplicate(
          'publicKey',
          `identity "${name}" already has a public key; revoke it and enroll a new identity`,
        );
      }
      this.#refuseTakenIdentityKey(key.text, row.id);
      this.#run('UPDATE identities SET public_key = ?, key_id = ? WHERE id = ?', [
        key.text,
        identityIdOf(key.raw).toString('hex'),
        row.id,
      ]);
      return this.#identity(this.#identityRow('i.id', row.id)!);
    });
  }

  async setIdentityDisabled(name: string, disabled: boolean): Promise<Identity> {
    checkName(name, 'name');
    if (typeof disabled !== 'boolean')
      throw invalid('disabled', `expected true or false, got ${typeof disabled}`);
    return this.transaction(() => {
      const row = this.#identityRow('i.name', name);
      if (!row) throw notFound('name', `no identity named "${name}"`);
      this.#run('UPDATE identities SET disabled = ? WHERE id = ?', [disabled ? 1 : 0, row.id]);
      return this.#identity(this.#identityRow('i.id', row.id)!);
    });
  }

  async revokeIdentity(name: string, now: number): Promise<string[]> {
    checkName(name, 'name');
    checkTimestamp(now, 'now');
    return this.transaction(() => {
      const row = this.#identityRow('i.name', name);
      if (!row) throw notFound('name', `no identity named "${name}"`);
      this.#run('UPDATE identities SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?', [now, row.id]);
      const revoked = this.#all(
        'UPDATE certificates SET revoked_at = ? WHERE identity_id = ? AND revoked_at IS NULL RETURNING serial',
        [now, row.id],
      ) as { serial: string }[];
      return revoked.map((certificate) => certificate.serial).sort();
    });
  }

  async revokeIdentityWithDevices(name: string, now: number, actor: string): Promise<AccessChange> {
    checkName(name, 'name');
    checkTimestamp(now, 'now');
    checkText(actor, 'actor');
    return this.transaction(() => {
      const targets = this.#identityWithDevices(name);
      const serials: string[] = [];
      const sessions: string[] = [];
      for (const target of targets) {
        this.#run('UPDATE identities SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?', [
          now,
          target.id,
        ]);
        for (const row of this.#all(
          'UPDATE certificates SET revoked_at = ? WHERE identity_id = ? AND revoked_at IS NULL RETURNING serial',
          [now, target.id],
        ) as { serial: string }[])
          serials.push(row.serial);
        sessions.push(...this.#closeOpenSessions(target.id, now, 'identity revoked'));
      }
      return this.#accessChange('identity.revoke', name, actor, now, targets, serials, sessions, true);
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
    return this.transaction(() => {
      const targets = this.#identityWithDevices(name);
      this.#run('UPDATE identities SET disabled = ? WHERE id = ?', [disabled ? 1 : 0, targets[0]!.id]);
      const sessions = disabled
        ? targets.flatMap((target) => this.#closeOpenSessions(target.id, now, 'identity disabled'))
        : [];
      const action = disabled ? 'identity.disable' : 'identity.enable';
      return this.#accessChange(action, name, actor, now, targets, [], sessions, disabled);
    });
  }

  /** The named identity first, then the devices it owns (none for a device). */
  #identityWithDevices(name: string): { id: string; name: string; keyId: string | null }[] {
    const row = this.#identityRow('i.name', name);
    if (!row) throw notFound('name', `no identity named "${name}"`);
    const devices =
      row.kind === 'device'
        ? []
        : (this.#all('SELECT id, name, key_id FROM identities WHERE owner_id = ? ORDER BY name', [
            row.id,
          ]) as {
            id: string;
            name: string;
            key_id: string | null;
          }[]);
    return [row, ...devices].map((identity) => ({
      id: identity.id,
      name: identity.name,
      keyId: identity.key_id,
    }));
  }

  #closeOpenSessions(identityId: string, now: number, reason: string): string[] {
    return (
      this.#all(
        'UPDATE sessions SET closed_at = ?, close_reason = ? WHERE identity_id = ? AND closed_at IS NULL RETURNING id',
        [now, reason, identityId],
      ) as { id: string }[]
    ).map((row) => row.id);
  }

  #accessChange(
    action: string,
    subject: string,
    actor: string,
    now: number,
    targets: { name: string; keyId: string | null }[],
    serials: string[],
    sessions: string[],
    cutsIdentities: boolean,
  ): AccessChange {
    const identities = targets.map(({ name, keyId }) => ({ name, keyId }));
    serials.sort();
    sessions.sort();
    const details = accessChangeDetails(identities, serials, sessions, cutsIdentities);
    const audit = this.#audit(now, actor, action, subject, details);
    return { identities, serials, sessions, audit };
  }

  #identityRow(column: 'i.id' | 'i.name' | 'i.key_id', value: string): IdentityRow | undefined {
    return this.#get(`${IDENTITY_SELECT} WHERE ${column} = ?`, [value]) as IdentityRow | undefined;
  }

  #identity(row: IdentityRow): Identity {
    const groups = this.#all(
      'SELECT g.name FROM identity_groups ig JOIN groups g ON g.id = ig.group_id WHERE ig.identity_id = ? ORDER BY g.name',
      [row.id],
    ) as { name: string }[];
    return identityFromRow(
      row,
      groups.map((group) => group.name),
    );
  }

  #refuseTakenIdentityKey(publicKey: string, exceptId: string | null): void {
    const holder = this.#get('SELECT id, name FROM identities WHERE public_key = ?', [publicKey]) as
      | { id: string; name: string }
      | undefined;
    if (holder && holder.id !== exceptId) {
      throw duplicate('publicKey', `public key already belongs to identity "${holder.name}"`);
    }
  }

  // ---- groups

  async createGroup(name: string): Promise<Group> {
    checkName(name, 'name');
    return this.transaction(() => {
      if (this.#groupRow(name)) throw duplicate('name', `group "${name}" already exists`);
      const group: Group = { id: newId(), name, createdAt: this.#clock() };
      this.#run('INSERT INTO groups (id, name, created_at) VALUES (?, ?, ?)', [
        group.id,
        name,
        group.createdAt,
      ]);
      return group;
    });
  }

  async listGroups(): Promise<Group[]> {
    return (
      this.#all('SELECT * FROM groups ORDER BY name') as { id: string; name: string; created_at: number }[]
    ).map((row) => ({ id: row.id, name: row.name, createdAt: row.created_at }));
  }

  async addToGroup(identityName: string, groupName: string): Promise<void> {
    checkName(identityName, 'identity');
    checkName(groupName, 'group');
    this.transaction(() => {
      const identity = this.#identityRow('i.name', identityName);
      if (!identity) throw notFound('identity', `no identity named "${identityName}"`);
      const group = this.#groupRow(groupName);
      if (!group) throw notFound('group', `no group named "${groupName}"`);
      if (
        this.#get('SELECT 1 FROM identity_groups WHERE identity_id = ? AND group_id = ?', [
          identity.id,
          group.id,
        ])
      ) {
        throw duplicate('group', `identity "${identityName}" is already in group "${groupName}"`);
      }
      this.#run('INSERT INTO identity_groups (identity_id, group_id) VALUES (?, ?)', [identity.id, group.id]);
    });
  }

  #groupRow(name: string): { id: string } | undefined {
    return this.#get('SELECT id FROM groups WHERE name = ?', [name]) as { id: string } | undefined;
  }

  // ---- gateways

  async createGateway(input: NewGateway): Promise<Gateway> {
    const name = checkName(input?.name, 'name');
    const key = input.publicKey === undefined ? undefined : checkPublicKey(input.publicKey, 'publicKey');
    return this.transaction(() => {
      if (this.#gatewayRow(name)) throw duplicate('name', `gateway "${name}" already exists`);
      if (key !== undefined) this.#refuseTakenGatewayKey(key.text, null);
      const id = newId();
      this.#run('INSERT INTO gateways (id, name, public_key, status, created_at) VALUES (?, ?, ?, ?, ?)', [
        id,
        name,
        key?.text ?? null,
        key === undefined ? 'pending' : 'enrolled',
        this.#clock(),
      ]);
      return gatewayFromRow(this.#gatewayRow(name)!);
    });
  }

  async getGatewayByName(name: string): Promise<Gateway | null> {
    const row = this.#gatewayRow(checkName(name, 'name'));
    return row ? gatewayFromRow(row) : null;
  }

  async listGateways(): Promise<Gateway[]> {
    return (this.#all('SELECT * FROM gateways ORDER BY name') as GatewayRow[]).map(gatewayFromRow);
  }

  async setGatewayPublicKey(name: string, publicKey: string, tpm?: GatewayTpm): Promise<Gateway> {
    checkName(name, 'name');
    const key = checkPublicKey(publicKey, 'publicKey');
    if (tpm) checkGatewayTpm(tpm, 'tpm');
    return this.transaction(() => {
      const row = this.#gatewayRow(name);
      if (!row) throw notFound('name', `no gateway named "${name}"`);
      if (row.status === 'revoked')
        throw invalid('name', `gateway "${name}" is revoked; enroll a new gateway`);
      if (row.public_key === key.text) return gatewayFromRow(row);
      if (row.public_key !== null) {
        throw duplicate('publicKey', `gateway "${name}" already has a public key; enroll a new gateway`);
      }
      this.#refuseTakenGatewayKey(key.text, row.id);
      this.#run(
        `UPDATE gateways SET public_key = ?, status = 'enrolled',
           tpm_ek_hash = ?, tpm_ak_public = ?, tpm_identity_public = ? WHERE id = ?`,
        [key.text, tpm?.ekHash ?? null, tpm?.akPublic ?? null, tpm?.identityPublic ?? null, row.id],
      );
      return gatewayFromRow(this.#gatewayRow(name)!);
    });
  }

  async revokeGateway(name: string, now: number, actor: string): Promise<Gateway> {
    checkName(name, 'name');
    checkTimestamp(now, 'now');
    checkText(actor, 'actor');
    return this.transaction(() => {
      const row = this.#gatewayRow(name);
      if (!row) throw notFound('name', `no gateway named "${name}"`);
      if (row.status !== 'revoked') {
        this.#run("UPDATE gateways SET status = 'revoked' WHERE id = ?", [row.id]);
        this.#audit(now, actor, 'gateway.revoke', name, { gateway: name });
      }
      return gatewayFromRow(this.#gatewayRow(name)!);
    });
  }

  async recordGatewayConnected(name: string, endpoint: GatewayEndpoint, now: number): Promise<Gateway> {
    checkName(name, 'name');
    const checked = checkEndpoint(endpoint, 'endpoint');
    checkTimestamp(now, 'now');
    return this.transaction(() => {
      const changed = this.#run(
        `UPDATE gateways SET endpoint_host = ?, spa_port = ?, tunnel_port = ?, connected_at = ?, last_seen_at = ?
         WHERE name = ?`,
        [checked.host, checked.spaPort, checked.tunnelPort, now, now, name],
      );
      if (changed !== 1) throw notFound('name', `no gateway named "${name}"`);
      return gatewayFromRow(this.#gatewayRow(name)!);
    });
  }

  async markGatewaysSeen(names: readonly string[], now: number): Promise<void> {
    const checked = checkNames(names, 'names');
    checkTimestamp(now, 'now');
    if (checked.length === 0) return;
    this.transaction(() => {
      for (const name of checked)
        this.#run(
          'UPDATE gateways SET last_seen_at = ? WHERE name = ? AND (last_seen_at IS NULL OR last_seen_at < ?)',
          [now, name, now],
        );
    });
  }

  async recordGatewayDisconnected(name: string, connectedAt: number, now: number): Promise<void> {
    checkName(name, 'name');
    checkTimestamp(connectedAt, 'connectedAt');
    checkTimestamp(now, 'now');
    this.#run(
      'UPDATE gateways SET disconnected_at = ?, last_seen_at = ? WHERE name = ? AND connected_at = ?',
      [now, now, name, connectedAt],
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
    return this.transaction(() => {
      const row = this.#attestableGatewayRow(name);
      const pcrs = JSON.stringify(checked.pcrs);
      // Only an operator ends a quarantine: an attestation meanwhile records what it saw, no more.
      const state = row.attestation === 'quarantined' ? 'quarantined' : checked.state;
      this.#run(
        `UPDATE gateways SET attestation = ?, attested_pcrs = ?, firmware_version = ?,
           golden_pcrs = CASE WHEN ? = 'approved' THEN ? ELSE golden_pcrs END,
           quarantine_reason = CASE WHEN ? = 'quarantined' THEN COALESCE(quarantine_reason, ?) ELSE NULL END,
           attestation_changed_at = CASE WHEN attestation = ? THEN attestation_changed_at ELSE ? END
         WHERE id = ?`,
        [state, pcrs, checked.firmwareVersion, state, pcrs, state, checked.reason, state, now, row.id],
      );
      const details = attestationDetails(state, checked.pcrs, checked.firmwareVersion, checked.reason);
      if (state !== checked.state) details.concluded = checked.state;
      this.#audit(now, actor, 'gateway.attest', name, details);
      return gatewayFromRow(this.#gatewayRow(name)!);
    });
  }

  async quarantineGateway(name: string, reason: string, now: number, actor: string): Promise<Gateway> {
    checkName(name, 'name');
    checkText(reason, 'reason');
    checkTimestamp(now, 'now');
    checkText(actor, 'actor');
    return this.transaction(() => {
      const row = this.#attestableGatewayRow(name);
      if (row.attestation !== 'quarantined') {
        this.#run(
          `UPDATE gateways SET attestation = 'quarantined', quarantine_reason = ?, attestation_changed_at = ?
           WHERE id = ?`,
          [reason, now, row.id],
        );
        this.#audit(now, actor, 'gateway.quarantine', name, { previous: row.attestation, reason });
      }
      return gatewayFromRow(this.#gatewayRow(name)!);
    });
  }

  async approveGateway(name: string, now: number, actor: string): Promise<Gateway> {
    checkName(name, 'name');
    checkTimestamp(now, 'now');
    checkText(actor, 'actor');
    return this.transaction(() => {
      const row = this.#gatewayRow(name);
      if (!row) throw notFound('name', `no gateway named "${name}"`);
      const refusal = approvalRefusal(name, row);
      if (refusal) throw refusal;
      this.#run(
        `UPDATE gateways SET attestation = 'approved', golden_pcrs = attested_pcrs, attestation_changed_at = ?
         WHERE id = ?`,
        [now, row.id],
      );
      const golden = JSON.parse(row.attested_pcrs!) as PcrValues;
      this.#audit(now, actor, 'gateway.approve', name, { bank: golden.bank, pcrs: golden.pcrs });
      return gatewayFromRow(this.#gatewayRow(name)!);
    });
  }

  async releaseGateway(name: string, now: number, actor: string): Promise<Gateway> {
    checkName(name, 'name');
    checkTimestamp(now, 'now');
    checkText(actor, 'actor');
    return this.transaction(() => {
      const row = this.#gatewayRow(name);
      if (!row) throw notFound('name', `no gateway named "${name}"`);
      if (row.attestation !== 'quarantined')
        throw invalid('name', `gateway "${name}" is ${row.attestation}, not quarantined; nothing to release`);
      const state = releasedState(row);
      this.#run(
        `UPDATE gateways SET attestation = ?, quarantine_reason = NULL, attestation_changed_at = ?
         WHERE id = ?`,
        [state, now, row.id],
      );
      this.#audit(now, actor, 'gateway.release', name, { state, reason: row.quarantine_reason });
      return gatewayFromRow(this.#gatewayRow(name)!);
    });
  }

  /** The gateway, which must exist and not be revoked. */
  #attestableGatewayRow(name: string): GatewayRow {
    const row = this.#gatewayRow(name);
    if (!row) throw notFound('name', `no gateway named "${name}"`);
    if (row.status === 'revoked') throw invalid('name', `gateway "${name}" is revoked`);
    return row;
  }

  #audit(now: number, actor: string, action: string, subject: string, details: Record<string, unknown>) {
    return this.#insertAudit(checkAuditEntry({ at: now, actor, action, subject, details }, '', now));
  }

  #gatewayRow(name: string): GatewayRow | undefined {
    return this.#get('SELECT * FROM gateways WHERE name = ?', [name]) as GatewayRow | undefined;
  }

  #refuseTakenGatewayKey(publicKey: string, exceptId: string | null): void {
    const holder = this.#get('SELECT id, name FROM gateways WHERE public_key = ?', [publicKey]) as
      | { id: string; name: string }
      | undefined;
    if (holder && holder.id !== exceptId) {
      throw duplicate('publicKey', `public key already belongs to gateway "${holder.name}"`);
    }
  }

  // ---- EK roots

  async addEkRoots(roots: readonly NewEkRoot[], now: number, actor: string): Promise<EkRoot[]> {
    if (!Array.isArray(roots) || roots.length === 0)
      throw invalid('roots', 'expected at least one CA certificate');
    const checked = roots.map((root, index) => checkNewEkRoot(root, `roots[${index}].`));
    checkTimestamp(now, 'now');
    checkText(actor, 'actor');
    return this.transaction(() =>
      checked.map((root, index) => {
        const taken = this.#ekRootRow(root.fingerprint);
        if (taken || checked.findIndex((other) => other.fingerprint === root.fingerprint) < index)
          throw duplicate(`roots[${index}]`, ekRootTaken(index, root));
        this.#run(
          `INSERT INTO ek_roots (fingerprint, pem, subject, issuer, not_after, added_at)
           VALUES (?, ?, ?, ?, ?, ?)`,
          [root.fingerprint, root.pem, root.subject, root.issuer, root.notAfter, now],
        );
        this.#audit(now, actor, 'ekca.add', root.fingerprint, { subject: root.subject, issuer: root.issuer });
        return ekRootFromRow(this.#ekRootRow(root.fingerprint)!);
      }),
    );
  }

  async listEkRoots(): Promise<EkRoot[]> {
    return (this.#all('SELECT * FROM ek_roots ORDER BY subject, fingerprint') as EkRootRow[]).map(
      ekRootFromRow,
    );
  }

  async removeEkRoot(fingerprint: string, now: number, actor: string): Promise<EkRoot> {
    const normalized = checkFingerprint(fingerprint, 'fingerprint');
    checkTimestamp(now, 'now');
    checkText(actor, 'actor');
    return this.transaction(() => {
      const row = this.#ekRootRow(normalized);
      if (!row) throw notFound('fingerprint', `no EK root with fingerprint ${normalized}`);
      this.#run('DELETE FROM ek_roots WHERE fingerprint = ?', [normalized]);
      this.#audit(now, actor, 'ekca.remove', normalized, { subject: row.subject, issuer: row.issuer });
      return ekRootFromRow(row);
    });
  }

  #ekRootRow(fingerprint: string): EkRootRow | undefined {
    return this.#get('SELECT * FROM ek_roots WHERE fingerprint = ?', [fingerprint]) as EkRootRow | undefined;
  }

  // ---- golden PCR values per firmware version

  async addGatewayClaim(input: NewGatewayClaim, now: number, actor: string): Promise<GatewayClaim> {
    const claim = checkNewGatewayClaim(input);
    checkTimestamp(now, 'now');
    checkText(actor, 'actor');
    return this.transaction(() => {
      const gateway = this.#gatewayRow(claim.gateway);
      if (!gateway) throw notFound('gateway', `no gateway named "${claim.gateway}"`);
      if (gateway.status === 'revoked') throw invalid('gateway', `gateway "${claim.gateway}" is revoked`);
      if (this.#get('SELECT 1 FROM gateway_claims WHERE ek_hash = ?', [claim.ekHash]))
        throw duplicate(
          'ekHash',
          `the TPM ${claim.ekHash} is already claimed (umbra-controller gateway claims)`,
        );
      this.#run('INSERT INTO gateway_claims (ek_hash, gateway_id, site, created_at) VALUES (?, ?, ?, ?)', [
        claim.ekHash,
        gateway.id,
        claim.site,
        now,
      ]);
      this.#audit(now, actor, 'gateway.claim', claim.gateway, { ekHash: claim.ekHash, site: claim.site });
      return gatewayClaimFromRow(
        this.#get(`${GATEWAY_CLAIM_SELECT} WHERE c.ek_hash = ?`, [claim.ekHash]) as GatewayClaimRow,
      );
    });
  }

  async getGatewayClaim(ekHash: string): Promise<GatewayClaim | null> {
    const hash = checkHex(ekHash, 'ekHash', 32, 32);
    const row = this.#get(`${GATEWAY_CLAIM_SELECT} WHERE c.ek_hash = ?`, [hash]) as
      | GatewayClaimRow
      | undefined;
    return row ? gatewayClaimFromRow(row) : null;
  }

  async listGatewayClaims(): Promise<GatewayClaim[]> {
    return (this.#all(`${GATEWAY_CLAIM_SELECT} ORDER BY c.created_at, c.ek_hash`) as GatewayClaimRow[]).map(
      gatewayClaimFromRow,
    );
  }

  async consumeGatewayClaim(ekHash: string, now: number): Promise<boolean> {
    const hash = checkHex(ekHash, 'ekHash', 32, 32);
    checkTimestamp(now, 'now');
    return (
      this.#run('UPDATE gateway_claims SET used_at = ? WHERE ek_hash = ? AND used_at IS NULL', [
        now,
        hash,
      ]) === 1
    );
  }

  async addFirmwarePcrs(input: NewFirmwarePcrs, now: number, actor: string): Promise<FirmwarePcrs> {
    const { version, bank, pcrs } = checkNewFirmwarePcrs(input);
    checkTimestamp(now, 'now');
    checkText(actor, 'actor');
    return this.transaction(() => {
      if (this.#firmwarePcrsRow(version)) throw duplicate('version', firmwareTaken(version));
      this.#run('INSERT INTO firmware_pcrs (version, bank, pcrs, added_at) VALUES (?, ?, ?, ?)', [
        version,
        bank,
        JSON.stringify(pcrs),
        now,
      ]);
      this.#audit(now, actor, 'firmware.pcrs.add', version, { bank, pcrs });
      return firmwarePcrsFromRow(this.#firmwarePcrsRow(version)!);
    });
  }

  async listFirmwarePcrs(): Promise<FirmwarePcrs[]> {
    return (this.#all('SELECT * FROM firmware_pcrs ORDER BY version') as FirmwarePcrsRow[]).map(
      firmwarePcrsFromRow,
    );
  }

  async removeFirmwarePcrs(version: string, now: number, actor: string): Promise<FirmwarePcrs> {
    checkFirmwareVersion(version, 'version');
    checkTimestamp(now, 'now');
    checkText(actor, 'actor');
    return this.transaction(() => {
      const row = this.#firmwarePcrsRow(version);
      if (!row) throw notFound('version', `no golden PCR values for firmware version "${version}"`);
      this.#run('DELETE FROM firmware_pcrs WHERE version = ?', [version]);
      this.#audit(now, actor, 'firmware.pcrs.remove', version, { bank: row.bank });
      return firmwarePcrsFromRow(row);
    });
  }

  #firmwarePcrsRow(version: string): FirmwarePcrsRow | undefined {
    return this.#get('SELECT * FROM firmware_pcrs WHERE version = ?', [version]) as
      | FirmwarePcrsRow
      | undefined;
  }

  // ---- services

  async createService(input: NewService): Promise<Service> {
    const name = checkName(input?.name, 'name');
    const gatewayName = checkName(input.gateway, 'gateway');
    const backend = checkBackend(input.backend, 'backend');
    const mode = input.mode === undefined ? 'tunnel' : checkOneOf(input.mode, SERVICE_MODES, 'mode');
    return this.transaction(() => {
      if (this.#serviceRow(name)) throw duplicate('name', `service "${name}" already exists`);
      const gateway = this.#gatewayRow(gatewayName);
      if (!gateway) throw notFound('gateway', `no gateway named "${gatewayName}"`);
      this.#run(
        'INSERT INTO services (id, name, gateway_id, backend, mode, created_at) VALUES (?, ?, ?, ?, ?, ?)',
        [newId(), name, gateway.id, backend, mode, this.#clock()],
      );
      return serviceFromRow(this.#serviceRow(name)!);
    });
  }

  async getServiceByName(name: string): Promise<Service | null> {
    const row = this.#serviceRow(checkName(name, 'name'));
    return row ? serviceFromRow(row) : null;
  }

  async listServices(): Promise<Service[]> {
    return (this.#all(`${SERVICE_SELECT} ORDER BY s.name`) as ServiceRow[]).map(serviceFromRow);
  }

  #serviceRow(name: string): ServiceRow | undefined {
    return this.#get(`${SERVICE_SELECT} WHERE s.name = ?`, [name]) as ServiceRow | undefined;
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
    return this.transaction(() => {
      const subject =
        subjectKind === 'identity' ? this.#identityRow('i.name', subjectName) : this.#groupRow(subjectName);
      if (!subject) throw notFound('subject.name', `no ${subjectKind} named "${subjectName}"`);
      const service = this.#serviceRow(serviceName);
      if (!service) throw notFound('service', `no service named "${serviceName}"`);
      const id = newId();
      this.#run(
        `INSERT INTO policies (id, subject_kind, subject_id, service_id, requirements, hours, days, max_ttl_seconds,
           created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
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
        this.#get(`${POLICY_SELECT} WHERE p.id = ?`, [id]) as PolicyRow,
      );
      return policy;
    });
  }

  async policiesFor(identityId: string): Promise<PolicyWithService[]> {
    checkId(identityId, 'identityId');
    if (!this.#identityRow('i.id', identityId))
      throw notFound('identityId', `no identity with id ${identityId}`);
    const rows = this.#all(
      `${POLICY_SELECT}
       WHERE (p.subject_kind = 'identity' AND p.subject_id = ?)
          OR (p.subject_kind = 'group' AND p.subject_id IN (SELECT group_id FROM identity_groups WHERE identity_id = ?))
       ORDER BY p.created_at, p.id`,
      [identityId, identityId],
    ) as PolicyRow[];
    return rows.map(policyFromRow);
  }

  async listPolicies(): Promise<PolicyWithService[]> {
    return (this.#all(`${POLICY_SELECT} ORDER BY p.created_at, p.id`) as PolicyRow[]).map(policyFromRow);
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
    return this.transaction(() => {
      if (this.#tokenRow(tokenHash))
        throw duplicate('tokenHash', 'an enrollment token with this hash already exists');
      groups.forEach((group, index) => {
        if (!this.#groupRow(group)) throw notFound(`groups[${index}]`, `no group named "${group}"`);
      });
      this.#run(
        `INSERT INTO enrollment_tokens (id, token_hash, kind, subject_name, groups, expires_at, used_at, created_at)
         VALUES (?, ?, ?, ?, ?, ?, NULL, ?)`,
        [newId(), tokenHash, kind, subjectName, JSON.stringify(groups), expiresAt, createdAt],
      );
      return tokenFromRow(this.#tokenRow(tokenHash)!);
    });
  }

  async consumeEnrollmentToken(tokenHash: string, now: number): Promise<TokenConsumption> {
    const hash = checkHex(tokenHash, 'tokenHash', 32, 32);
    checkTimestamp(now, 'now');
    return this.transaction((): TokenConsumption => {
      // The condition in the UPDATE is what makes a token single-use: two enrollments racing on the
      // same token (here or on another controller sharing PostgreSQL) cannot both change the row.
      const changed = this.#run(
        'UPDATE enrollment_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL AND expires_at > ?',
        [now, hash, now],
      );
      const row = this.#tokenRow(hash);
      if (changed === 1 && row) return { ok: true, token: tokenFromRow(row) };
      if (!row) return { ok: false, reason: 'unknown' };
      return { ok: false, reason: row.used_at !== null ? 'used' : 'expired' };
    });
  }

  async peekEnrollmentToken(tokenHash: string, now: number): Promise<TokenConsumption> {
    const hash = checkHex(tokenHash, 'tokenHash', 32, 32);
    checkTimestamp(now, 'now');
    return tokenState(this.#tokenRow(hash), now);
  }

  #tokenRow(tokenHash: string): TokenRow | undefined {
    return this.#get('SELECT * FROM enrollment_tokens WHERE token_hash = ?', [tokenHash]) as
      | TokenRow
      | undefined;
  }

  // ---- certificates

  async recordCertificate(input: NewCertificate): Promise<Certificate> {
    const serial = checkHex(input?.serial, 'serial', 1, MAX_SERIAL_BYTES);
    const identityId = checkId(input.identityId, 'identityId');
    const notBefore = checkTimestamp(input.notBefore, 'notBefore');
    const notAfter = checkTimestamp(input.notAfter, 'notAfter');
    if (notAfter <= notBefore) throw invalid('notAfter', 'must be later than notBefore');
    const pem = checkPem(input.pem, 'pem');
    return this.transaction(() => {
      if (!this.#identityRow('i.id', identityId))
        throw notFound('identityId', `no identity with id ${identityId}`);
      if (this.#certificateRow(serial))
        throw duplicate('serial', `certificate serial ${serial} is already recorded`);
      this.#run(
        `INSERT INTO certificates (serial, identity_id, not_before, not_after, revoked_at, pem)
         VALUES (?, ?, ?, ?, NULL, ?)`,
        [serial, identityId, notBefore, notAfter, pem],
      );
      return certificateFromRow(this.#certificateRow(serial)!);
    });
  }

  async getCertificate(serial: string): Promise<Certificate | null> {
    const row = this.#certificateRow(checkHex(serial, 'serial', 1, MAX_SERIAL_BYTES));
    return row ? certificateFromRow(row) : null;
  }

  async revokeCertificate(serial: string, now: number): Promise<boolean> {
    const normalized = checkHex(serial, 'serial', 1, MAX_SERIAL_BYTES);
    checkTimestamp(now, 'now');
    return this.transaction(() => {
      if (!this.#certificateRow(normalized))
        throw notFound('serial', `no certificate with serial ${normalized}`);
      return (
        this.#run('UPDATE certificates SET revoked_at = ? WHERE serial = ? AND revoked_at IS NULL', [
          now,
          normalized,
        ]) === 1
      );
    });
  }

  async revokeCertificateWithAudit(serial: string, now: number, actor: string): Promise<AccessChange> {
    const normalized = checkHex(serial, 'serial', 1, MAX_SERIAL_BYTES);
    checkTimestamp(now, 'now');
    checkText(actor, 'actor');
    return this.transaction(() => {
      const certificate = this.#certificateRow(normalized);
      if (!certificate) throw notFound('serial', `no certificate with serial ${normalized}`);
      const revoked =
        this.#run('UPDATE certificates SET revoked_at = ? WHERE serial = ? AND revoked_at IS NULL', [
          now,
          normalized,
        ]) === 1;
      const owner = this.#identityRow('i.id', certificate.identity_id)!;
      const target = { name: owner.name, keyId: owner.key_id };
      const serials = revoked ? [normalized] : [];
      return this.#accessChange('certificate.revoke', normalized, actor, now, [target], serials, [], false);
    });
  }

  /** An unknown serial is not revoked: it was never issued here, and chain checks refuse it. */
  async isSerialRevoked(serial: string): Promise<boolean> {
    const row = this.#get('SELECT revoked_at FROM certificates WHERE serial = ?', [
      checkHex(serial, 'serial', 1, MAX_SERIAL_BYTES),
    ]) as { revoked_at: number | null } | undefined;
    return row !== undefined && row.revoked_at !== null;
  }

  async listRevokedSerials(unexpiredAt?: number): Promise<string[]> {
    const rows =
      unexpiredAt === undefined
        ? this.#all('SELECT serial FROM certificates WHERE revoked_at IS NOT NULL ORDER BY serial')
        : this.#all(
            'SELECT serial FROM certificates WHERE revoked_at IS NOT NULL AND not_after > ? ORDER BY serial',
            [checkTimestamp(unexpiredAt, 'unexpiredAt')],
          );
    return (rows as { serial: string }[]).map((row) => row.serial);
  }

  #certificateRow(serial: string): CertificateRow | undefined {
    return this.#get('SELECT * FROM certificates WHERE serial = ?', [serial]) as CertificateRow | undefined;
  }

  // ---- sessions

  async openSession(input: NewSession): Promise<Session> {
    const session = checkNewSession(input, '', this.#clock());
    return this.transaction(() => {
      const { identityId, gatewayId, serviceId } = session;
      if (!this.#identityRow('i.id', identityId))
        throw notFound('identityId', `no identity with id ${identityId}`);
      if (!this.#get('SELECT 1 FROM gateways WHERE id = ?', [gatewayId])) {
        throw notFound('gatewayId', `no gateway with id ${gatewayId}`);
      }
      if (!this.#get('SELECT 1 FROM services WHERE id = ?', [serviceId])) {
        throw notFound('serviceId', `no service with id ${serviceId}`);
      }
      return this.#insertSession(session);
    });
  }

  #insertSession(session: CheckedSession): Session {
    const id = session.id ?? newId();
    if (session.id !== undefined && this.#get('SELECT 1 FROM sessions WHERE id = ?', [id]))
      throw duplicate('id', `a session with id ${id} already exists`);
    this.#insertSessionRow(id, session);
    return sessionFromRow(this.#get('SELECT * FROM sessions WHERE id = ?', [id]) as SessionRow);
  }

  /** The row alone: a taken id or a missing reference fails on the table's constraints. */
  #insertSessionRow(id: string, session: CheckedSession): void {
    this.#run(
      `INSERT INTO sessions (id, identity_id, gateway_id, service_id, source, opened_at, closed_at, close_reason)
       VALUES (?, ?, ?, ?, ?, ?, NULL, NULL)`,
      [id, session.identityId, session.gatewayId, session.serviceId, session.source, session.openedAt],
    );
  }

  async closeSession(id: string, now: number, reason: string): Promise<boolean> {
    checkId(id, 'id');
    checkTimestamp(now, 'now');
    checkText(reason, 'reason');
    return this.transaction(() => {
      if (!this.#get('SELECT 1 FROM sessions WHERE id = ?', [id]))
        throw notFound('id', `no session with id ${id}`);
      return (
        this.#run('UPDATE sessions SET closed_at = ?, close_reason = ? WHERE id = ? AND closed_at IS NULL', [
          now,
          reason,
          id,
        ]) === 1
      );
    });
  }

  async closeSessionsOf(identityId: string, now: number, reason: string): Promise<string[]> {
    checkId(identityId, 'identityId');
    checkTimestamp(now, 'now');
    checkText(reason, 'reason');
    return this.transaction(() => {
      const rows = this.#all(
        'UPDATE sessions SET closed_at = ?, close_reason = ? WHERE identity_id = ? AND closed_at IS NULL RETURNING id',
        [now, reason, identityId],
      ) as { id: string }[];
      return rows.map((row) => row.id).sort();
    });
  }

  async listSessions(filter: SessionFilter = {}): Promise<Session[]> {
    const conditions: string[] = [];
    const params: SQLInputValue[] = [];
    if (filter.open !== undefined) {
      if (typeof filter.open !== 'boolean')
        throw invalid('open', `expected true or false, got ${typeof filter.open}`);
      conditions.push(filter.open ? 'closed_at IS NULL' : 'closed_at IS NOT NULL');
    }
    if (filter.identityId !== undefined) {
      conditions.push('identity_id = ?');
      params.push(checkId(filter.identityId, 'identityId'));
    }
    const where = conditions.length === 0 ? '' : `WHERE ${conditions.join(' AND ')}`;
    return (this.#all(`SELECT * FROM sessions ${where} ORDER BY opened_at, id`, params) as SessionRow[]).map(
      sessionFromRow,
    );
  }

  async recordDecisions(batch: DecisionBatch): Promise<RecordedDecisions> {
    const checked = checkDecisionBatch(batch, this.#clock());
    // Foreign keys check the references; a missing one fails the whole batch, naming the column.
    return this.transaction(() => {
      const sessionIds = checked.sessions.map((session) => {
        const id = session.id ?? newId();
        this.#insertSessionRow(id, session);
        return id;
      });
      // One max for the batch, then consecutive numbers: the same seqs #insertAudit would give one
      // by one (the write lock is held throughout), without a subquery and a RETURNING per entry.
      let seq = (this.#get('SELECT COALESCE(MAX(seq), 0) AS seq FROM audit_log') as { seq: number }).seq;
      const auditSeqs = checked.audit.map((entry) => {
        this.#run(
          `INSERT INTO audit_log (seq, at, actor, action, subject, decision, reason, details)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
          [
            ++seq,
            entry.at,
            entry.actor,
            entry.action,
            entry.subject,
            entry.decision,
            entry.reason,
            entry.details,
          ],
        );
        return seq;
      });
      if (auditSeqs.length > 0) this.#auditGrew = true;
      return { sessionIds, auditSeqs };
    });
  }

  // ---- audit

  async appendAudit(entry: NewAuditEntry): Promise<AuditEntry> {
    const checked = checkAuditEntry(entry, '', this.#clock());
    return this.transaction(() => this.#insertAudit(checked));
  }

  /** Inside a transaction: max + 1 under the write lock is strictly increasing with no gaps. */
  #insertAudit(entry: CheckedAuditEntry): AuditEntry {
    const row = this.#get(
      // MAX in a scalar subquery, which SQLite answers from the primary key's index; as a column
      // beside the values it would scan the whole log on every append.
      `INSERT INTO audit_log (seq, at, actor, action, subject, decision, reason, details)
       VALUES ((SELECT COALESCE(MAX(seq), 0) FROM audit_log) + 1, ?, ?, ?, ?, ?, ?, ?)
       RETURNING *`,
      [entry.at, entry.actor, entry.action, entry.subject, entry.decision, entry.reason, entry.details],
    ) as AuditRow;
    this.#auditGrew = true;
    return auditFromRow(row);
  }

  async listAudit(afterSeq = 0, limit = DEFAULT_AUDIT_PAGE): Promise<AuditEntry[]> {
    checkAuditPage(afterSeq, limit);
    return (
      this.#all('SELECT * FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?', [afterSeq, limit]) as AuditRow[]
    ).map(auditFromRow);
  }

  async lastAuditSeq(): Promise<number> {
    return (this.#get('SELECT COALESCE(MAX(seq), 0) AS seq FROM audit_log') as { seq: number }).seq;
  }

  async watchAudit(listener: () => void): Promise<AuditWatch> {
    this.#auditListeners.add(listener);
    return {
      pollMs: AUDIT_POLL_MS,
      close: async () => {
        this.#auditListeners.delete(listener);
      },
    };
  }

  async close(): Promise<void> {
    this.#auditListeners.clear();
    if (this.#db.isOpen) this.#db.close();
  }
}

/**
 * The explicit checks above name the field; this catches what they cannot see coming (a row added
 * by another process between check and insert cannot happen under BEGIN IMMEDIATE, but a missed
 * check would otherwise surface as a bare SQLite message).
 */
function translateConstraint(error: unknown): unknown {
  if (error instanceof StoreError || !(error instanceof Error)) return error;
  const code = (error as Error & { errcode?: number }).errcode;
  if (code === SQLITE_CONSTRAINT_UNIQUE || code === SQLITE_CONSTRAINT_PRIMARYKEY) {
    return new StoreError('duplicate', `already exists: ${error.message}`);
  }
  if (code === SQLITE_CONSTRAINT_FOREIGNKEY) {
    return new StoreError('not-found', `refers to something that does not exist: ${error.message}`);
  }
  return error;
}
