import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { StoreError } from './errors.ts';
import { SCHEMA_VERSION } from './schema.ts';
import { DATABASE_FILE, SqliteStore } from './sqlite-store.ts';
import { refusedWith, storeSuite, T0, TOKEN_HASH, TOKEN_SECRET } from './store-suite.ts';

storeSuite('SqliteStore', async (clock) => SqliteStore.memory({ clock }));

let store: SqliteStore;
let now: number;

beforeEach(() => {
  now = T0;
  store = SqliteStore.memory({ clock: () => now });
});

afterEach(async () => {
  await store.close();
});

describe('enrollment tokens on disk', () => {
  const secret = TOKEN_SECRET;
  const tokenHash = TOKEN_HASH;

  test('the secret is never stored, only its SHA-256', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'umbra-store-'));
    try {
      const onDisk = SqliteStore.open(dir, { clock: () => T0 });
      await onDisk.createEnrollmentToken({
        tokenHash,
        kind: 'identity',
        subjectName: 'alice',
        expiresAt: T0 + 1000,
      });
      await onDisk.close();
      const raw = new DatabaseSync(join(dir, DATABASE_FILE), { readOnly: true });
      const everything = JSON.stringify(raw.prepare('SELECT * FROM enrollment_tokens').all());
      raw.close();
      assert.ok(everything.includes(tokenHash));
      assert.ok(!everything.includes(secret));
      assert.ok(!readFileSync(join(dir, DATABASE_FILE)).includes(secret));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('transactions', () => {
  // The async methods run synchronously up to their first await, so called inside transaction()
  // their own transaction becomes a savepoint of the outer one.
  test('a throw inside transaction() rolls back everything, a completed nested transaction too', async () => {
    await store.createGroup('kept');
    assert.throws(
      () =>
        store.transaction(() => {
          void store.createGroup('inner');
          throw new Error('boom');
        }),
      /boom/,
    );
    assert.throws(() => store.transaction(() => Promise.resolve()), /synchronously/);
    assert.deepEqual(
      (await store.listGroups()).map((group) => group.name),
      ['kept'],
    );
  });

  test('a failed nested transaction rolls back to its savepoint and the outer one goes on', async () => {
    await store.createGroup('kept');
    let nested: Promise<unknown> = Promise.resolve();
    store.transaction(() => {
      void store.createGroup('before');
      nested = store.createIdentity({ name: 'alice', kind: 'user', groups: ['missing'] });
      void store.createGroup('after');
    });
    await assert.rejects(nested, refusedWith('not-found', 'groups[0]', /missing/));
    assert.equal(await store.getIdentityByName('alice'), null);
    assert.deepEqual(
      (await store.listGroups()).map((group) => group.name),
      ['after', 'before', 'kept'],
    );
  });
});

describe('the database file', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'umbra-store-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  test('is created readable by its owner only, in WAL mode', async () => {
    const onDisk = SqliteStore.open(join(dir, 'data'));
    await onDisk.createIdentity({ name: 'alice', kind: 'user' });
    await onDisk.close();
    const path = join(dir, 'data', DATABASE_FILE);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.equal(statSync(join(dir, 'data')).mode & 0o777, 0o700);
    const raw = new DatabaseSync(path);
    assert.deepEqual({ ...raw.prepare('PRAGMA journal_mode').get() }, { journal_mode: 'wal' });
    raw.close();
  });

  test('reopening keeps the data and applies no migration twice', async () => {
    const first = SqliteStore.open(dir);
    assert.equal(first.schemaVersion(), SCHEMA_VERSION);
    await first.createIdentity({ name: 'alice', kind: 'user' });
    await first.appendAudit({ actor: 'cli', action: 'identity.create', subject: 'alice' });
    await first.close();
    const second = SqliteStore.open(dir);
    assert.equal(second.schemaVersion(), SCHEMA_VERSION);
    assert.equal((await second.getIdentityByName('alice'))?.kind, 'user');
    assert.equal((await second.appendAudit({ actor: 'cli', action: 'x', subject: 'y' })).seq, 2);
    await second.close();
    const raw = new DatabaseSync(join(dir, DATABASE_FILE));
    assert.deepEqual(
      { ...raw.prepare('SELECT COUNT(*) AS n FROM schema_migrations').get() },
      { n: SCHEMA_VERSION },
    );
    raw.close();
  });

  test('refuses a database written by a newer controller', async () => {
    await SqliteStore.open(dir).close();
    const raw = new DatabaseSync(join(dir, DATABASE_FILE));
    raw
      .prepare('INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)')
      .run(SCHEMA_VERSION + 1, 'from the future', T0);
    raw.close();
    assert.throws(
      () => SqliteStore.open(dir),
      (error: unknown) => {
        assert.ok(error instanceof StoreError);
        assert.equal(error.code, 'incompatible');
        assert.match(
          error.message,
          new RegExp(`schema version ${SCHEMA_VERSION + 1}.*knows up to ${SCHEMA_VERSION}`),
        );
        assert.ok(error.message.startsWith(join(dir, DATABASE_FILE)));
        return true;
      },
    );
  });

  test('a file that is not a database is refused with its path', () => {
    const data = join(dir, 'garbage');
    // The store makes the directory; the file in it is text, not an SQLite header.
    SqliteStore.open(data).close();
    for (const suffix of ['-wal', '-shm']) rmSync(join(data, DATABASE_FILE + suffix), { force: true });
    writeFileSync(
      join(data, DATABASE_FILE),
      'not a database, just text long enough to fill a header. '.repeat(20),
    );
    assert.throws(() => SqliteStore.open(data), /garbage\/controller\.db: cannot open|not a database/);
  });
});
