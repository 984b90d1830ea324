import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { StoreError } from './errors.ts';
import { PgStore } from './pg-store.ts';
import { SCHEMA_VERSION } from './schema.ts';
import { publicKey, refusedWith, storeSuite, T0, TOKEN_HASH, TOKEN_SECRET } from './store-suite.ts';
import { startTestPostgres, type TestPostgres } from './test-postgres.ts';

let server: TestPostgres | undefined;

before(async () => {
  server = await startTestPostgres();
});

after(async () => {
  await server?.stop();
});

function url(): string {
  assert.ok(server, 'the test server did not start');
  return server.url;
}

async function sql(text: string, params: unknown[] = []): Promise<pg.QueryResult> {
  const client = new pg.Client(url());
  await client.connect();
  try {
    return await client.query(text, params);
  } finally {
    await client.end();
  }
}

/** Drops whatever the previous test left, tables and migrations record alike. */
async function emptyDatabase(): Promise<string> {
  await sql('DROP SCHEMA public CASCADE; CREATE SCHEMA public');
  return url();
}

storeSuite('PgStore', async (clock) => PgStore.connect(await emptyDatabase(), { clock }));

describe('PgStore on its own', () => {
  test('a watcher hears appends another controller commits (LISTEN/NOTIFY), not before they commit', async () => {
    const database = await emptyDatabase();
    const writer = await PgStore.connect(database);
    const reader = await PgStore.connect(database, { auditPollMs: 60_000 });
    let heard = 0;
    const watch = await reader.watchAudit(() => {
      heard++;
    });
    try {
      assert.equal(watch.pollMs, 60_000);
      await writer.appendAudit({ actor: 'cli', action: 'identity.revoke', subject: 'alice' });
      const deadline = Date.now() + 5_000;
      while (heard === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
      assert.equal(heard, 1);
      assert.equal(await reader.lastAuditSeq(), 1);
      // A refused batch rolls back, and its notification goes with it.
      await assert.rejects(
        writer.recordDecisions({
          sessions: [
            {
              identityId: 'ab'.repeat(16),
              gatewayId: 'ab'.repeat(16),
              serviceId: 'ab'.repeat(16),
              source: '192.0.2.1',
            },
          ],
          audit: [{ actor: 'gateway:x', action: 'knock', subject: 'alice', decision: 'allow' }],
        }),
      );
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.equal(heard, 1);
    } finally {
      await watch.close();
      await reader.close();
      await writer.close();
    }
  });

  test('reconnecting keeps the data and applies no migration twice; BIGINTs come back as numbers', async () => {
    const first = await PgStore.connect(await emptyDatabase(), { clock: () => T0 });
    assert.equal(await first.schemaVersion(), SCHEMA_VERSION);
    await first.createIdentity({ name: 'alice', kind: 'user' });
    await first.appendAudit({ actor: 'cli', action: 'identity.create', subject: 'alice' });
    await first.close();
    await first.close();
    const second = await PgStore.connect(url());
    assert.equal(await second.schemaVersion(), SCHEMA_VERSION);
    const alice = await second.getIdentityByName('alice');
    assert.equal(alice?.createdAt, T0);
    const entry = await second.appendAudit({ actor: 'cli', action: 'x', subject: 'y' });
    assert.equal(entry.seq, 2);
    assert.equal(typeof entry.at, 'number');
    await second.close();
    assert.deepEqual((await sql('SELECT COUNT(*)::int AS n FROM schema_migrations')).rows, [
      { n: SCHEMA_VERSION },
    ]);
  });

  test('two controllers starting together on an empty database migrate it once', async () => {
    await emptyDatabase();
    const stores = await Promise.all([
      PgStore.connect(url()),
      PgStore.connect(url()),
      PgStore.connect(url()),
    ]);
    for (const store of stores) assert.equal(await store.schemaVersion(), SCHEMA_VERSION);
    await Promise.all(stores.map((store) => store.close()));
    assert.deepEqual((await sql('SELECT COUNT(*)::int AS n FROM schema_migrations')).rows, [
      { n: SCHEMA_VERSION },
    ]);
  });

  test('refuses a database written by a newer controller, naming it without its password', async () => {
    await (await PgStore.connect(await emptyDatabase())).close();
    await sql('INSERT INTO schema_migrations (version, description, applied_at) VALUES ($1, $2, $3)', [
      SCHEMA_VERSION + 1,
      'from the future',
      T0,
    ]);
    const withPassword = url().replace('postgres@', 'postgres:hunter2@');
    await assert.rejects(PgStore.connect(withPassword), (error: unknown) => {
      assert.ok(error instanceof StoreError);
      assert.equal(error.code, 'incompatible');
      assert.match(
        error.message,
        new RegExp(`schema version ${SCHEMA_VERSION + 1}.*knows up to ${SCHEMA_VERSION}`),
      );
      assert.ok(error.message.startsWith(url()), error.message);
      assert.ok(!error.message.includes('hunter2'));
      return true;
    });
  });

  test('a malformed URL and an unreachable server are refused clearly', async () => {
    await assert.rejects(PgStore.connect('not a url'), refusedWith('invalid', 'database', /postgres:\/\//));
    await assert.rejects(
      PgStore.connect('mysql://root@127.0.0.1/umbra'),
      refusedWith('invalid', 'database', /"mysql:"/),
    );
    // The test server's port with the server's password-less user, but a database that does not exist.
    const missing = url().replace(/\/umbra$/, '/nowhere');
    await assert.rejects(
      PgStore.connect(missing),
      /\/nowhere: cannot open the controller database: .*"nowhere"/,
    );
  });

  test('the secret is never stored, only its SHA-256', async () => {
    const store = await PgStore.connect(await emptyDatabase(), { clock: () => T0 });
    try {
      await store.createEnrollmentToken({
        tokenHash: TOKEN_HASH,
        kind: 'identity',
        subjectName: 'alice',
        expiresAt: T0 + 1000,
      });
    } finally {
      await store.close();
    }
    const everything = JSON.stringify((await sql('SELECT * FROM enrollment_tokens')).rows);
    assert.ok(everything.includes(TOKEN_HASH));
    assert.ok(!everything.includes(TOKEN_SECRET));
  });
});

describe('PgStore: two controllers sharing one database', () => {
  /** Two stores with a pool each, as two controller processes would have. */
  async function twoControllers(): Promise<[PgStore, PgStore]> {
    await emptyDatabase();
    const first = await PgStore.connect(url());
    const second = await PgStore.connect(url());
    return [first, second];
  }

  test('400 audit entries appended at once from both get sequence numbers 1..400, no gap, no repeat', async () => {
    const [a, b] = await twoControllers();
    try {
      const append = (store: PgStore, who: string, index: number) =>
        store.appendAudit({ actor: who, action: 'knock', subject: 'alice', details: { index } });
      const entries = await Promise.all(
        Array.from({ length: 200 }, (_, index) => [append(a, 'a', index), append(b, 'b', index)]).flat(),
      );
      const returned = entries.map((entry) => entry.seq).sort((x, y) => x - y);
      const expected = Array.from({ length: 400 }, (_, index) => index + 1);
      assert.deepEqual(returned, expected);
      const stored = await a.listAudit(0, 1000);
      assert.deepEqual(
        stored.map((entry) => entry.seq),
        expected,
      );
      assert.equal(stored.filter((entry) => entry.actor === 'a').length, 200);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  test('one token consumed from both at once: exactly one enrollment gets it', async () => {
    const [a, b] = await twoControllers();
    try {
      const hashes = Array.from(
        { length: 20 },
        (_, index) => TOKEN_HASH.slice(0, -2) + index.toString(16).padStart(2, '0'),
      );
      for (const tokenHash of hashes) {
        await a.createEnrollmentToken({
          tokenHash,
          kind: 'identity',
          subjectName: 'alice',
          expiresAt: Date.now() + 60_000,
        });
      }
      for (const tokenHash of hashes) {
        const now = Date.now();
        const results = await Promise.all([
          a.consumeEnrollmentToken(tokenHash, now),
          b.consumeEnrollmentToken(tokenHash, now),
        ]);
        assert.equal(results.filter((result) => result.ok).length, 1, JSON.stringify(results));
        assert.deepEqual(
          results.find((result) => !result.ok),
          { ok: false, reason: 'used' },
        );
      }
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  test('one identity enrolled from both at once with different keys: one key wins, the other is refused', async () => {
    const [a, b] = await twoControllers();
    try {
      for (let round = 0; round < 10; round++) {
        const name = `laptop-${round}`;
        await a.createIdentity({ name, kind: 'device' });
        const keys = [publicKey(), publicKey()];
        const results = await Promise.allSettled([
          a.setIdentityPublicKey(name, keys[0]!),
          b.setIdentityPublicKey(name, keys[1]!),
        ]);
        const won = results.findIndex((result) => result.status === 'fulfilled');
        const lost = results.find((result) => result.status === 'rejected');
        assert.ok(won >= 0 && lost, JSON.stringify(results));
        assert.ok(refusedWith('duplicate', 'publicKey', /already has a public key/)(lost.reason));
        assert.equal((await b.getIdentityByName(name))?.publicKey, keys[won]);
      }
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  test('a name taken by another controller after the check is refused as a duplicate naming the field', async () => {
    const [a, b] = await twoControllers();
    // Another controller's transaction has inserted the group but not committed: the store's check
    // cannot see it, its INSERT waits on the unique index, and fails once the other commits.
    const other = new pg.Client(url());
    await other.connect();
    try {
      await other.query('BEGIN');
      await other.query("INSERT INTO groups (id, name, created_at) VALUES ($1, 'ops', $2)", [
        'ab'.repeat(16),
        T0,
      ]);
      const creating = a.createGroup('ops');
      const refused = assert.rejects(
        creating,
        refusedWith('duplicate', 'name', /group "ops" already exists/),
      );
      // Give the INSERT time to reach the lock before the other transaction commits.
      await waitForLockWait();
      await other.query('COMMIT');
      await refused;
      assert.deepEqual(
        (await b.listGroups()).map((group) => [group.name, group.id]),
        [['ops', 'ab'.repeat(16)]],
      );
    } finally {
      await other.end();
      await Promise.all([a.close(), b.close()]);
    }
  });
});

/** Until some backend is waiting on a lock (bounded: 5 s). */
async function waitForLockWait(): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (Date.now() < deadline) {
    const { rows } = await sql(
      "SELECT COUNT(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
    );
    if (rows[0].n > 0) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error('no backend ever waited on a lock');
}
