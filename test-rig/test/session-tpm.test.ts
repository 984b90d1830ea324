// Issue 4 on the real processes, in namespaces: the gateway is enrolled with `umbra-gateway enroll
// --tpm` against swtpm (EK CA added with `umbra-controller ekca add`, golden PCRs with `firmware
// pcrs add`), runs with its keys unsealed from the TPM and its link bound to it, and carries psql
// to the backend. Then its boot state drifts (PCR 7 extended): the controller's re-attestation
// quarantines it, knocks are refused with that reason, and a restart cannot unseal its keys.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { buildSessionRig, extendBootPcr, type SessionRig, type UmbraConnect } from '../src/session-rig.ts';
import { GATEWAY_BIN, TOOL_ENV } from '../src/umbra.ts';

const ATTEST_INTERVAL_SECONDS = 2;
const GRANT_SECONDS = 5;

describe('an attested gateway in a session', () => {
  let rig: SessionRig;
  let device: string;
  const connects: UmbraConnect[] = [];
  let nextPort = 16_432;

  const connect = async () => {
    const handle = await rig.startConnect(device, 'db', nextPort++);
    connects.push(handle);
    return handle;
  };
  const psql = (port: number) =>
    rig.topology
      .host('client')
      .exec(
        [
          'psql',
          '-h',
          '127.0.0.1',
          '-p',
          String(port),
          '-U',
          'postgres',
          '-d',
          'postgres',
          '-XAtc',
          'select 6 * 7',
        ],
        {
          timeoutMs: 20_000,
          env: { ...TOOL_ENV, PGCONNECT_TIMEOUT: '5' },
        },
      );
  const gateways = async () =>
    JSON.parse(await rig.admin.admin('gateway', 'list')) as Array<{
      name: string;
      attestation: string;
      quarantineReason?: string;
      ekHash: string | null;
    }>;

  before(async () => {
    rig = await buildSessionRig({
      storage: 'sqlite',
      tpm: { attestIntervalSeconds: ATTEST_INTERVAL_SECONDS },
    });
    await rig.addDatabaseService();
    device = await rig.enrollDevice('alice', ['staff']);
    // Short grants, so that the first test's is gone before the quarantine is put to the test.
    await rig.admin.admin(
      'policy',
      'add',
      '--group',
      'staff',
      '--service',
      'db',
      '--ttl',
      `${GRANT_SECONDS}s`,
    );
  });

  after(async () => {
    for (const { child } of connects)
      if (child.exitCode === null && child.pid) process.kill(child.pid, 'SIGTERM');
    await rig?.destroy();
  });

  test('it runs with its TPM: keys unsealed, link bound, approved against its firmware, psql gets through', async () => {
    const ready = rig.gateway.logs.find((line) => line.msg === 'gateway dark and listening for knocks');
    assert.match(String(ready?.attestation), /^TPM swtpm-unix:.*keys sealed to sha256 PCRs 0,2,4,7/);
    assert.ok(
      !rig.gateway.logs.some((line) => /unattested/.test(String(line.msg))),
      'an attested gateway does not call itself unattested',
    );
    assert.ok(
      rig.gateway.logs.some((line) => line.msg === 'linked to the controller' && line.bound === true),
    );
    const [gateway] = await gateways();
    assert.equal(gateway?.attestation, 'approved');
    assert.match(gateway?.ekHash ?? '', /^[0-9a-f]{64}$/);
    const forward = await connect();
    const result = await psql(forward.port);
    assert.equal(
      result.code,
      0,
      `${result.stderr}\nconnect: ${forward.output.tail(10)}\ngateway: ${JSON.stringify(rig.gateway.logs.slice(-8))}\naudit: ${(await rig.admin.admin('audit')).split('\n').slice(-4).join('\n')}`,
    );
    assert.equal(result.stdout.trim(), '42');
  });

  test('a boot-state drift quarantines it within the re-attestation interval; its knocks are refused', async () => {
    await extendBootPcr(rig.swtpm!.address, 7);
    const deadline = Date.now() + (ATTEST_INTERVAL_SECONDS + 10) * 1000;
    let state = '';
    while (Date.now() < deadline) {
      const [gateway] = await gateways();
      state = gateway?.attestation ?? '';
      if (state === 'quarantined') {
        assert.match(gateway!.quarantineReason ?? '', /sha256 PCR 7 differs/);
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    assert.equal(state, 'quarantined');
    assert.ok(
      rig.admin.output?.lines().some((line) => /ALERT: gateway branch1 quarantined/.test(line)),
      'the controller logs an alert',
    );
    // Quarantine stops new pinholes; what the first test opened expires on its own.
    for (const { child } of connects.splice(0))
      if (child.exitCode === null && child.pid) process.kill(child.pid, 'SIGTERM');
    await new Promise((resolve) => setTimeout(resolve, (GRANT_SECONDS + 1) * 1000));
    const forward = await connect();
    const result = await psql(forward.port);
    assert.notEqual(result.code, 0, 'nothing opens through a quarantined gateway');
    const audit = (await rig.admin.admin('audit'))
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { action: string; decision: string; reason?: string });
    assert.ok(
      audit.some(
        (entry) =>
          entry.action === 'knock' && entry.decision === 'deny' && /quarantined/.test(entry.reason ?? ''),
      ),
      'the refused knock is audited with the quarantine',
    );
  });

  test('restarted in the drifted boot state, it cannot unseal its keys and stays dark', async () => {
    await rig.gateway.stop();
    const run = await rig.topology
      .host('gateway')
      .exec(
        [GATEWAY_BIN, 'run', '--dir', rig.gateway.dir, '--interface', rig.topology.host('gateway').ifname],
        {
          timeoutMs: 20_000,
          env: TOOL_ENV,
        },
      );
    assert.notEqual(run.code, 0);
    assert.match(run.stderr, /refuses to unseal the gateway's keys: .*sha256 PCR 7 differs/s);
  });
});
