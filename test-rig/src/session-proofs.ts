// The proofs of a session, run against a rig with SQLite storage and again with PostgreSQL and two
// controllers (session.test.ts, session-postgres.test.ts): psql on the client reaches the backend
// through `umbra connect`, the outsider sees nothing, policy denials open nothing and are audited
// with their reason, revocation closes a live psql session within a second, and the gateway keeps
// live sessions through a controller crash and relinks by itself when it returns.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { LineReader } from './lines.ts';
import { startTcpServer, tcpConnect } from './net.ts';
import { nmapScan } from './scan.ts';
import {
  BACKEND_ADDRESS,
  BACKEND_PORT,
  buildSessionRig,
  type SessionRig,
  type SessionRigOptions,
  type UmbraConnect,
} from './session-rig.ts';
import { TOOL_ENV } from './umbra.ts';

const REVOCATION_LIMIT_MS = 1_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export function sessionProofs(options: SessionRigOptions): void {
  let rig: SessionRig;
  const devices = new Map<string, string>();
  const connects: UmbraConnect[] = [];
  let nextPort = 15_432;

  const client = () => rig.topology.host('client');

  /** `umbra connect SERVICE --listen 127.0.0.1:PORT` on the client, ready when it says so. */
  async function connect(device: string, service: string): Promise<UmbraConnect> {
    const handle = await rig.startConnect(devices.get(device)!, service, nextPort++);
    connects.push(handle);
    return handle;
  }

  /** One psql command through a local forward; its output, or its error. */
  function psql(port: number, sql: string, timeoutMs = 15_000) {
    return client().exec(
      ['psql', '-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-d', 'postgres', '-XAtc', sql],
      { timeoutMs, env: { ...TOOL_ENV, PGCONNECT_TIMEOUT: '5' } },
    );
  }

  async function audit(): Promise<Array<Record<string, unknown>>> {
    return (await rig.admin.admin('audit'))
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line));
  }

  before(async () => {
    rig = await buildSessionRig(options);
    const { admin } = rig;
    await rig.addDatabaseService();
    // Enrolling first: a token names the device's groups, which makes them.
    devices.set('alice', await rig.enrollDevice('alice', ['staff']));
    devices.set('bob', await rig.enrollDevice('bob', ['contractors']));
    devices.set('carol', await rig.enrollDevice('carol', ['night']));
    devices.set('dave', await rig.enrollDevice('dave', ['windows']));
    await admin.admin('policy', 'add', '--group', 'staff', '--service', 'db', '--ttl', '30s');
    // A window that is never now: it closed an hour ago and opens in an hour.
    const hour = new Date().getUTCHours();
    const pad = (h: number) => String((h + 24) % 24).padStart(2, '0');
    await admin.admin(
      'policy',
      'add',
      '--group',
      'night',
      '--service',
      'db',
      '--hours',
      `${pad(hour + 1)}:00-${pad(hour - 1)}:00`,
    );
    // No Linux device can meet this.
    await admin.admin('policy', 'add', '--group', 'windows', '--service', 'db', '--require', 'os=windows');
  });

  after(async () => {
    for (const { child } of connects)
      if (child.exitCode === null && child.pid) process.kill(child.pid, 'SIGTERM');
    await rig?.destroy();
  });

  describe(`a session (${options.storage})`, () => {
    test('psql on the client reaches PostgreSQL behind the gateway through umbra connect', async () => {
      const alice = await connect('alice', 'db');
      const result = await psql(alice.port, 'select 40 + 2');
      assert.equal(
        result.code,
        0,
        `${result.stderr}\nconnect: ${alice.output.tail(10)}\ngateway: ${JSON.stringify(rig.gateway.logs.slice(-8))}`,
      );
      assert.equal(result.stdout.trim(), '42');
      const sessions = JSON.parse(await rig.admin.admin('sessions'));
      assert.ok(Array.isArray(sessions) && sessions.length > 0, 'the session is recorded');
      const allowed = (await audit()).filter((e) => e.action === 'knock' && e.decision === 'allow');
      assert.ok(
        allowed.some((e) => JSON.stringify(e).includes('alice')),
        'the allow is audited',
      );
    });

    test('the outsider sees nothing: no open or closed port, no answer to the knock port', async () => {
      const outsider = rig.topology.host('outsider');
      const gatewayAddress = rig.topology.host('gateway').ipv4;
      const tcp = await nmapScan(outsider, gatewayAddress, 'tcp-syn', {
        ports: '22,80,443,5432,8443,8444,62201',
      });
      assert.deepEqual(
        tcp.ports.filter((p) => p.state !== 'filtered'),
        [],
        JSON.stringify(tcp.ports),
      );
      assert.equal(await tcpConnect(outsider, gatewayAddress, 8443, 1500), 'timeout');
      assert.equal(await tcpConnect(outsider, BACKEND_ADDRESS, BACKEND_PORT, 1500), 'unreachable');
    });

    for (const [device, reason] of [
      ['bob', /no policy lets bob reach db/],
      ['carol', /outside the allowed hours/],
      ['dave', /posture os=windows not met/],
    ] as const) {
      test(`${device} is refused (${reason.source}), nothing opens, and the audit says why`, async () => {
        const before = (await rig.gateway.pinholes()).length;
        const forward = await connect(device, 'db');
        const result = await psql(forward.port, 'select 1', 20_000);
        assert.notEqual(result.code, 0, 'psql must not get through');
        const refusal = (await audit()).find(
          (e) => e.action === 'knock' && e.decision === 'deny' && JSON.stringify(e).includes(device),
        );
        assert.ok(refusal, `a denied knock by ${device} is audited`);
        assert.match(String(refusal.reason), reason);
        assert.equal((await rig.gateway.pinholes()).length, before, 'no pinhole opened');
      });
    }

    test('a direct-mode service: the knock opens the service port itself, for that address only', async () => {
      const gw = rig.topology.host('gateway');
      const service = await startTcpServer(gw, { port: 2222, banner: 'direct service on the gateway' });
      try {
        await rig.admin.admin(
          'service',
          'add',
          '--name',
          'shell',
          '--gateway',
          'branch1',
          '--backend',
          '127.0.0.1:2222',
          '--mode',
          'direct',
        );
        await rig.admin.admin('policy', 'add', '--group', 'staff', '--service', 'shell', '--ttl', '20s');
        devices.set('erin', await rig.enrollDevice('erin', ['staff']));
        assert.equal(await tcpConnect(client(), gw.ipv4, 2222, 1500), 'timeout', 'dark before the knock');
        const erin = await connect('erin', 'shell');
        const read = await client().exec(
          ['bash', '-c', `exec 3<>/dev/tcp/127.0.0.1/${erin.port}; head -1 <&3`],
          { timeoutMs: 15_000 },
        );
        assert.equal(read.stdout.trim(), 'direct service on the gateway', read.stderr);
        const pinholes = await rig.gateway.pinholes();
        assert.ok(
          pinholes.some((p) => p.port === 2222 && p.source === client().ipv4),
          JSON.stringify(pinholes),
        );
        assert.equal(await tcpConnect(rig.topology.host('outsider'), gw.ipv4, 2222, 1500), 'timeout');
      } finally {
        await service.stop();
      }
    });

    test('killing the controller leaves a live psql session working; the gateway relinks by itself', async () => {
      const alice = await connect('alice', 'db');
      const session = client().spawn(
        ['psql', '-h', '127.0.0.1', '-p', String(alice.port), '-U', 'postgres', '-d', 'postgres', '-XAt'],
        { env: TOOL_ENV, stdio: ['pipe', 'pipe', 'pipe'] },
      );
      const output = LineReader.ofChild('psql', session);
      session.stdin!.write('select 1;\n');
      await output.waitFor(/^1$/, 15_000);
      // erin has not knocked for db yet: her first knock comes while the controller is away.
      const erin = await connect('erin', 'db');
      const controller = rig.controllers.at(-1)!; // the one the gateway is linked to
      const linkLost = rig.gateway.logs.length;
      await controller.kill9();
      await rig.gateway.waitForLog((line) => /controller link lost/.test(String(line.msg)), 60_000, linkLost);
      session.stdin!.write('select 2;\n');
      await output.waitFor(/^2$/, 10_000);
      // failMode cached (the default): the gateway decides from the policy the controller signed.
      const offline = await psql(erin.port, 'select 5');
      assert.equal(offline.stdout.trim(), '5', offline.stderr);
      assert.ok(
        rig.gateway.logs
          .slice(linkLost)
          .some((line) => line.msg === 'pinhole opened' && line.decidedBy === 'cache'),
        'decided from the cached policy',
      );
      const relinked = rig.gateway.logs.length;
      await controller.launch();
      await rig.gateway.waitForLog((line) => line.msg === 'linked to the controller', 30_000, relinked);
      // The session opened meanwhile reaches the controller's audit log once the link is back.
      for (let i = 0; i < 50 && !JSON.stringify(await audit()).includes('gateway-cache'); i++)
        await sleep(100);
      assert.match(JSON.stringify(await audit()), /gateway-cache/);
      session.stdin!.write('select 3;\n');
      await output.waitFor(/^3$/, 10_000);
      session.stdin!.end();
    });

    test(`revoking alice closes her live psql session within ${REVOCATION_LIMIT_MS} ms`, async () => {
      const alice = await connect('alice', 'db');
      const session = client().spawn(
        ['psql', '-h', '127.0.0.1', '-p', String(alice.port), '-U', 'postgres', '-d', 'postgres', '-XAt'],
        { env: TOOL_ENV, stdio: ['pipe', 'pipe', 'pipe'] },
      );
      const output = LineReader.ofChild('psql', session);
      session.stdin!.write('select 7;\n');
      await output.waitFor(/^7$/, 15_000);
      const closed = new Promise<number>((resolve) => session.once('exit', () => resolve(performance.now())));
      await sleep(200);
      const started = performance.now();
      const revoke = rig.admin.admin('identity', 'revoke', 'alice');
      // psql notices a closed server connection only when it next talks to it.
      const poke = setInterval(() => session.stdin!.writable && session.stdin!.write('select 8;\n'), 50);
      const ended = await Promise.race([closed, sleep(10_000).then(() => Number.NaN)]);
      clearInterval(poke);
      await revoke;
      const elapsed = ended - started;
      assert.ok(Number.isFinite(elapsed), 'the psql session was not closed within 10 s');
      assert.ok(elapsed <= REVOCATION_LIMIT_MS, `closed after ${Math.round(elapsed)} ms`);
      // And she cannot come back.
      const again = await psql(alice.port, 'select 1', 20_000);
      assert.notEqual(again.code, 0);
    });
  });
}
