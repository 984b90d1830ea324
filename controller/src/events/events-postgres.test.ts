// Two controllers sharing one PostgreSQL: a revocation written through one store instance (as an
// admin command on any machine would) reaches a gateway linked to the other controller, carried by
// LISTEN/NOTIFY alone: that controller's safety-net poll is set to a minute, far beyond the test.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  enrollTestDevice,
  enrollTestGateway,
  helloLink,
  startPeerController,
  startTestController,
  type TestController,
} from '../link/test-fixture.ts';
import { PgStore } from '../store/index.ts';
import { startTestPostgres, type TestPostgres } from '../store/test-postgres.ts';

let postgres: TestPostgres;
let first: TestController;
let second: TestController;

before(async () => {
  postgres = await startTestPostgres();
  first = await startTestController({ databaseUrl: postgres.url });
  second = await startPeerController(first, postgres.url, { auditPollMs: 60_000 });
});

after(async () => {
  await second?.close();
  await first?.close();
  await postgres?.stop();
});

test('a revocation written by one store instance reaches a gateway linked to another controller at once', async () => {
  const branch = await enrollTestGateway(first.data, 'branch-1');
  await first.data.store.createService({ name: 'db', gateway: 'branch-1', backend: '10.0.0.5:5432' });
  const devices = [
    await enrollTestDevice(first.data, 'alice-laptop', { groups: ['eng'] }),
    await enrollTestDevice(first.data, 'bob-laptop', { groups: ['eng'] }),
    await enrollTestDevice(first.data, 'carol-laptop', { groups: ['eng'] }),
  ];
  await first.data.store.addPolicy({ subject: { kind: 'group', name: 'eng' }, service: 'db' });
  await first.data.store.appendAudit({ actor: 'test', action: 'policy.add', subject: 'eng' });

  const { link } = await helloLink(second, branch);
  // A third store instance, as `umbra-controller identity revoke` on another machine.
  const admin = await PgStore.connect(postgres.url);
  try {
    for (const device of devices) {
      const pushed = link.next('revoke', (revoke) => revoke.keyIds.includes(device.keyId));
      const started = performance.now();
      await admin.revokeIdentityWithDevices(device.name, Date.now(), 'cli');
      const revoke = await pushed;
      const latency = performance.now() - started;
      assert.deepEqual(revoke.serials, [device.serial]);
      assert.ok(latency < 500, `${device.name}: revoke arrived after ${latency.toFixed(0)} ms`);
    }
    const delta = link.next('delta');
    await admin.addPolicy({ subject: { kind: 'group', name: 'eng' }, service: 'db', maxTtlSeconds: 90 });
    await admin.appendAudit({ actor: 'cli', action: 'policy.add', subject: 'group:eng' });
    await delta;
  } finally {
    await admin.close();
    await link.close();
  }
});
