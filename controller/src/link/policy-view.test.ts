// The policy view's reloads and the decision log's batches, on an in-memory SQLite store.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeKey, generateIdentity } from '@umbra/protocol';
import { SqliteStore, type Store } from '../store/index.ts';
import { DecisionLog } from './decision-log.ts';
import { PolicyViews, shutOutReason } from './policy-view.ts';

async function storeWithPolicy(): Promise<Store> {
  const store = SqliteStore.memory();
  await store.createGateway({ name: 'branch-1' });
  await store.createService({ name: 'db', gateway: 'branch-1', backend: '10.0.0.5:5432' });
  await store.createGroup('eng');
  await store.createIdentity({ name: 'alice', kind: 'user' });
  await store.createIdentity({
    name: 'alice-laptop',
    kind: 'device',
    owner: 'alice',
    groups: ['eng'],
    publicKey: encodeKey(generateIdentity().publicKey),
  });
  await store.addPolicy({ subject: { kind: 'group', name: 'eng' }, service: 'db', hours: '08:00-18:00' });
  return store;
}

test('a view is reloaded for a newer audit seq, once per burst, and only handed out when current', async () => {
  const store = await storeWithPolicy();
  try {
    const views = await PolicyViews.load(store, 0);
    const laptop = views.current.identitiesById.get((await store.getIdentityByName('alice-laptop'))!.id)!;
    assert.equal(laptop.policies.length, 1, 'the group policy applies to the device');
    assert.deepEqual(laptop.policies[0]?.rule.hours, { from: 8 * 60, to: 18 * 60 });
    assert.equal(shutOutReason(laptop), null);
    // Nothing newer: the same view, at once.
    assert.equal(await views.invalidate(0), views.current);

    await store.setIdentityDisabledWithDevices('alice', true, Date.now(), 'test');
    const burst = [views.invalidate(1), views.invalidate(2), views.invalidate(3)];
    const stale = views.ready();
    assert.ok(stale instanceof Promise, 'a decision waits while the view is behind');
    const [first, , last] = await Promise.all(burst);
    assert.equal(first, last, 'one reload answered the whole burst');
    assert.equal(last?.version, 3);
    assert.equal(await stale, last);
    const disabled = last!.identitiesById.get(laptop.id)!;
    assert.equal(shutOutReason(disabled), "identity alice-laptop's owner alice is disabled");
    assert.equal(views.ready(), last);
  } finally {
    await store.close();
  }
});

test('decisions recorded together are written in one batch; one bad record does not sink the rest', async () => {
  const store = await storeWithPolicy();
  const audit = (index: number) => ({
    actor: 'gateway:branch-1',
    action: 'knock',
    subject: `knock-${index}`,
  });
  try {
    // Counts the writes the log makes, passing them through to the real store.
    let writes = 0;
    const counted: Store = Object.create(store, {
      recordDecisions: {
        value: (batch: Parameters<Store['recordDecisions']>[0]) => {
          writes++;
          return store.recordDecisions(batch);
        },
      },
    });
    const log = new DecisionLog(counted);
    await Promise.all(Array.from({ length: 20 }, (_, index) => log.record({ audit: audit(100 + index) })));
    assert.equal(writes, 1, 'twenty decisions of one moment, one transaction');
    const gateway = (await store.getGatewayByName('branch-1'))!;
    const service = (await store.getServiceByName('db'))!;
    const laptop = (await store.getIdentityByName('alice-laptop'))!;
    const written = await Promise.allSettled([
      ...Array.from({ length: 50 }, (_, index) => log.record({ audit: audit(index) })),
      log.record({
        session: {
          identityId: laptop.id,
          gatewayId: gateway.id,
          serviceId: 'ff'.repeat(16),
          source: '192.0.2.1',
        },
        audit: audit(50),
      }),
      log.record({
        session: { identityId: laptop.id, gatewayId: gateway.id, serviceId: service.id, source: '192.0.2.1' },
        audit: audit(51),
      }),
    ]);
    await log.flushed();
    assert.deepEqual(
      written.map((result) => result.status).filter((status) => status === 'rejected'),
      ['rejected'],
    );
    assert.equal(written[50]?.status, 'rejected', 'the session for a service that does not exist');
    const entries = await store.listAudit();
    assert.equal(entries.length, 71);
    assert.deepEqual(
      entries.map((entry) => entry.seq),
      entries.map((_, index) => index + 1),
    );
    assert.equal((await store.listSessions()).length, 1);
  } finally {
    await store.close();
  }
});
