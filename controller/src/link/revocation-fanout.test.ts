// A revocation made by `umbra-controller identity revoke` (another process, writing the SQLite
// database beside `serve`) reaches 100 linked gateways: timed from the commit of its audit entry to
// the last gateway's receipt of `revoke`. The target is well under a second.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  enrollTestDevice,
  enrollTestGateway,
  helloLink,
  startTestController,
  type TestController,
  type TestLink,
} from './test-fixture.ts';

const GATEWAYS = 100;
const BIN = resolve(dirname(fileURLToPath(import.meta.url)), '../../bin/umbra-controller.js');

let controller: TestController;
const links: TestLink[] = [];

before(async () => {
  controller = await startTestController();
  for (let index = 0; index < GATEWAYS; index++) {
    const gateway = await enrollTestGateway(controller.data, `branch-${index}`);
    links.push((await helloLink(controller, gateway)).link);
  }
});

after(async () => {
  await Promise.all(links.map((link) => link.close()));
  await controller?.close();
});

test(`a revoke command reaches ${GATEWAYS} linked gateways well within a second of its commit`, async (t) => {
  const device = await enrollTestDevice(controller.data, 'alice-laptop');
  const arrivals = links.map((link) =>
    link.next('revoke', (revoke) => revoke.keyIds.includes(device.keyId), 30_000).then(() => Date.now()),
  );
  const command = spawnSync(
    process.execPath,
    [BIN, 'identity', 'revoke', 'alice-laptop', '--data', controller.data.dir],
    { encoding: 'utf8', timeout: 30_000 },
  );
  assert.equal(command.status, 0, command.stderr);
  const received = await Promise.all(arrivals);
  const entry = (await controller.data.store.listAudit(0, 10_000)).find(
    (audit) => audit.action === 'identity.revoke' && audit.subject === 'alice-laptop',
  );
  assert.ok(entry);
  const delays = received.map((at) => at - entry.at).sort((a, b) => a - b);
  const last = delays.at(-1)!;
  t.diagnostic(`commit → revoke at the gateways: median ${delays[GATEWAYS >> 1]} ms, last ${last} ms`);
  assert.ok(last < 500, `the last gateway got the revocation ${last} ms after the commit`);
});
