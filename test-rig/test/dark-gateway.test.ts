// The dark gateway, black-box: the real CLI in network namespaces, real nftables, real libpcap,
// real nmap. Hosts: the gateway (with a protected service on two ports), a client, and an
// outsider who is never given anything.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  buildKnock,
  type ClientIdentity,
  createClientIdentity,
  GATEWAY_BIN,
  GatewayProcess,
  knock,
  nmapScan,
  scratchDir,
  sendRaw,
  startCapture,
  startConnectLoop,
  startTcpServer,
  TOOL_ENV,
  Topology,
  tcpConnect,
} from '../src/index.ts';

/** Sends the malformed packets; Python because Node has no raw sockets. */
const MALFORMED = new URL('../src/tools/malformed.py', import.meta.url).pathname;
const GRANTED = 2222;
const NOT_GRANTED = 2223;
const TTL_SECONDS = 3;
/** Long enough for any SYN that would be answered; short enough to keep the suite quick. */
const CLOSED_PROBE_MS = 1500;

let topo: Topology;
let gateway: GatewayProcess;
let alice: ClientIdentity;
let eve: ClientIdentity; // a well-formed identity the gateway does not know

const hosts = () => ({
  gw: topo.host('gateway'),
  client: topo.host('client'),
  outsider: topo.host('outsider'),
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Pins the gateway's link-layer address on the outsider, so probing it needs no ARP or neighbour
 * solicitation — which every host must answer on its own link, and which a routed outsider never
 * sees — and returns a capture filter for every other frame the gateway sends. Not counted: its
 * own IPv6 housekeeping (router solicitations, MLD reports) goes to multicast and answers nobody;
 * neighbour advertisements are IPv6's ARP, which the base ruleset lets through on purpose.
 */
async function silenceFilter(target: string): Promise<string> {
  const { gw, outsider } = hosts();
  const mac = (await gw.run(['cat', `/sys/class/net/${gw.ifname}/address`])).stdout.trim();
  await outsider.run([
    'ip',
    'neigh',
    'replace',
    target,
    'lladdr',
    mac,
    'dev',
    outsider.ifname,
    'nud',
    'permanent',
  ]);
  return `ether src ${mac} and not ether multicast and not (icmp6 and ip6[40] == 136)`;
}

/** Waits until the kernel has expired every pinhole (TTL plus nft's sub-second rounding). */
async function waitForExpiry(): Promise<void> {
  for (let i = 0; i < 20; i++) {
    if ((await gateway.pinholes()).length === 0) return;
    await sleep(500);
  }
  assert.fail('pinholes did not expire within 10 s');
}

before(async () => {
  topo = await Topology.create({ name: 'dark', hosts: ['gateway', 'client', 'outsider'] });
  const { gw, client } = hosts();
  const dir = scratchDir(client, 'client');
  alice = await createClientIdentity(client, dir, 'alice');
  eve = await createClientIdentity(client, dir, 'eve');
  await startTcpServer(gw, { port: [GRANTED, NOT_GRANTED], banner: 'protected service' });
  gateway = await GatewayProcess.start(gw, {
    clients: [
      { name: 'alice', publicKey: alice.publicKey, allow: [`tcp/${GRANTED}`], ttlSeconds: TTL_SECONDS },
    ],
  });
});

after(async () => {
  await topo?.destroy();
});

const knockAs = (identity: ClientIdentity, access: string, gatewayAddress = hosts().gw.ipv4) =>
  knock(hosts().client, { gateway: gatewayAddress, gatewayKey: gateway.publicKey, identity, access });

describe('an outsider finds nothing, and the gateway sends nothing', () => {
  for (const family of ['IPv4', 'IPv6'] as const) {
    test(`nmap SYN (all ports), UDP, version and OS probes over ${family}`, async (t) => {
      const { gw, outsider } = hosts();
      const target = family === 'IPv4' ? gw.ipv4 : gw.ipv6;
      // nmap sends through the kernel (--send-ip), so the pinned neighbour entry is used.
      const capture = await startCapture(gw, { filter: await silenceFilter(target) });

      const extraArgs = ['--send-ip'];
      const syn = await nmapScan(outsider, target, 'tcp-syn', { extraArgs });
      const udp = await nmapScan(outsider, target, 'udp', { extraArgs });
      const version = await nmapScan(outsider, target, 'version', {
        ports: `22,80,443,${GRANTED},${NOT_GRANTED}`,
        extraArgs,
      });
      const os = await nmapScan(outsider, target, 'os', { extraArgs });
      const sent = await capture.stop();

      t.diagnostic(`syn ${JSON.stringify(syn.stateCounts)} in ${Math.round(syn.elapsedMs)} ms`);
      t.diagnostic(`udp ${JSON.stringify(udp.stateCounts)}; version ${JSON.stringify(version.stateCounts)}`);
      assert.deepEqual(syn.open, []);
      assert.deepEqual(syn.closed, []);
      assert.equal(syn.filtered, 65535, 'every TCP port filtered: no SYN-ACK, no reset');
      assert.deepEqual(udp.open, []);
      assert.deepEqual(udp.closed, [], 'no ICMP port unreachable, the SPA port included');
      assert.ok(udp.openFiltered >= 11, 'UDP ports, 62201 among them, look like any unused port: no answer');
      assert.deepEqual(version.open, []);
      assert.deepEqual(
        version.ports.filter((p) => p.service?.product),
        [],
        'no banner',
      );
      assert.deepEqual(os.osMatches, [], 'nothing to fingerprint');
      assert.equal(
        sent.packets,
        0,
        `the gateway sent ${sent.packets} frames during the scans: ${sent.summary?.join(' | ')}`,
      );
    });
  }
});

test('packets the kernel itself would answer (bad IPv4 option, unknown IPv6 hop-by-hop option) get nothing', async () => {
  const { gw, outsider } = hosts();
  const filter = await silenceFilter(gw.ipv4);
  await silenceFilter(gw.ipv6);
  const capture = await startCapture(gw, { filter });
  for (const target of [gw.ipv4, gw.ipv6]) {
    for (let i = 0; i < 3; i++) await outsider.run(['python3', MALFORMED, target]);
  }
  const sent = await capture.stop();
  assert.equal(sent.packets, 0, `the gateway answered: ${sent.summary?.join(' | ')}`);
});

test('the standalone gateway, with software keys, says in its log that it is unattested', async () => {
  const ready = gateway.logs.find((line) => line.msg === 'gateway dark and listening for knocks');
  assert.equal(ready?.attestation, 'none: software keys');
  const warning = await gateway.waitForLog((line) => /^unattested: /.test(String(line.msg)), 5_000);
  assert.equal(warning.level, 40);
});

describe('a knock opens one pinhole, for one address, for one service', () => {
  test('the client connects within milliseconds of its knock', async (t) => {
    const { gw, client } = hosts();
    assert.equal(
      await tcpConnect(client, gw.ipv4, GRANTED, CLOSED_PROBE_MS),
      'timeout',
      'closed before the knock',
    );
    const packet = await buildKnock(client, {
      gateway: gw.ipv4,
      gatewayKey: gateway.publicKey,
      identity: alice,
      access: `tcp/${GRANTED}`,
    });
    const loop = await startConnectLoop(client, gw.ipv4, GRANTED, {
      deadlineMs: 5000,
      knockPort: gateway.spaPort,
    });
    loop.go(Buffer.from(packet, 'hex'));
    const result = await loop.result;
    t.diagnostic(`knock → first connect: ${result.elapsedMs.toFixed(2)} ms (${result.attempts} attempts)`);
    assert.equal(result.ok, true, 'the client got in');
    const [pinhole] = await gateway.pinholes();
    assert.equal(pinhole?.source, client.ipv4);
    assert.equal(pinhole?.protocol, 'tcp');
    assert.equal(pinhole?.port, GRANTED);
    assert.ok(pinhole!.secondsLeft <= TTL_SECONDS);
  });

  test('the outsider still cannot connect, and the port not granted stays closed', async () => {
    const { gw, client, outsider } = hosts();
    await knockAs(alice, `tcp/${GRANTED}`);
    assert.equal(await tcpConnect(outsider, gw.ipv4, GRANTED, CLOSED_PROBE_MS), 'timeout');
    const from = gateway.logs.length;
    await knockAs(alice, `tcp/${NOT_GRANTED}`);
    await gateway.waitForLog((l) => l.reason === 'not-allowed', 5000, from);
    assert.equal(await tcpConnect(client, gw.ipv4, NOT_GRANTED, CLOSED_PROBE_MS), 'timeout');
  });

  test('an identity that is not in the policy opens nothing', async () => {
    await waitForExpiry();
    const { gw, client } = hosts();
    const from = gateway.logs.length;
    await knockAs(eve, `tcp/${GRANTED}`);
    await gateway.waitForLog((l) => l.reason === 'unknown-identity', 5000, from);
    assert.equal(await tcpConnect(client, gw.ipv4, GRANTED, CLOSED_PROBE_MS), 'timeout');
    assert.deepEqual(await gateway.pinholes(), []);
  });

  test('the kernel removes the pinhole after its TTL: new connections fail', async () => {
    const { gw, client } = hosts();
    await knockAs(alice, `tcp/${GRANTED}`);
    assert.equal(await tcpConnect(client, gw.ipv4, GRANTED, CLOSED_PROBE_MS), 'connected');
    await sleep(TTL_SECONDS * 1000 + 200);
    assert.equal(await tcpConnect(client, gw.ipv4, GRANTED, CLOSED_PROBE_MS), 'timeout');
    assert.deepEqual(await gateway.pinholes(), []);
  });
});

describe('a captured knock, replayed, opens nothing', () => {
  test('from the same address after expiry, from another address, and after a restart', async () => {
    await waitForExpiry();
    const { gw, client, outsider } = hosts();
    const packet = await buildKnock(client, {
      gateway: gw.ipv4,
      gatewayKey: gateway.publicKey,
      identity: alice,
      access: `tcp/${GRANTED}`,
    });
    await sendRaw(client, gw.ipv4, gateway.spaPort, packet);
    assert.equal(
      await tcpConnect(client, gw.ipv4, GRANTED, CLOSED_PROBE_MS),
      'connected',
      'the original works',
    );
    await waitForExpiry();

    let from = gateway.logs.length;
    await sendRaw(client, gw.ipv4, gateway.spaPort, packet);
    await gateway.waitForLog((l) => l.reason === 'replay' && l.source === client.ipv4, 5000, from);
    assert.equal(await tcpConnect(client, gw.ipv4, GRANTED, CLOSED_PROBE_MS), 'timeout', 'same address');

    from = gateway.logs.length;
    await sendRaw(outsider, gw.ipv4, gateway.spaPort, packet);
    await gateway.waitForLog((l) => l.reason === 'replay' && l.source === outsider.ipv4, 5000, from);
    assert.equal(await tcpConnect(outsider, gw.ipv4, GRANTED, CLOSED_PROBE_MS), 'timeout', 'another address');

    assert.equal(await gateway.stop(), 0, 'clean exit on SIGTERM');
    from = gateway.logs.length;
    await gateway.launch();
    await sendRaw(outsider, gw.ipv4, gateway.spaPort, packet);
    await gateway.waitForLog((l) => l.reason === 'replay', 5000, from);
    assert.equal(await tcpConnect(outsider, gw.ipv4, GRANTED, CLOSED_PROBE_MS), 'timeout', 'after a restart');
    assert.deepEqual(await gateway.pinholes(), []);
  });
});

describe('the kernel keeps the gateway dark without the process', () => {
  test('a second gateway on the same state directory refuses to start and names the first', async () => {
    const second = await hosts().gw.exec([GATEWAY_BIN, 'run', '--config', gateway.configPath], {
      env: TOOL_ENV,
      timeoutMs: 15_000,
    });
    assert.equal(second.code, 1, second.stderr);
    assert.match(second.stderr, new RegExp(`another gateway \\(pid ${gateway.pid}\\) is running`));
  });

  test('a restart keeps live pinholes and duplicates no rule', async () => {
    await waitForExpiry();
    const { gw, client } = hosts();
    await knockAs(alice, `tcp/${GRANTED}`);
    const before = (await gw.run(['nft', 'list', 'table', 'inet', 'umbra'])).stdout;
    assert.equal(await gateway.stop(), 0);
    await gateway.launch();
    const pinholes = await gateway.pinholes();
    assert.deepEqual(
      pinholes.map((p) => [p.source, p.protocol, p.port]),
      [[client.ipv4, 'tcp', GRANTED]],
      'the live pinhole survived the restart',
    );
    assert.equal(await tcpConnect(client, gw.ipv4, GRANTED, CLOSED_PROBE_MS), 'connected');
    const after = (await gw.run(['nft', 'list', 'table', 'inet', 'umbra'])).stdout;
    const rules = (text: string) => text.split('\n').filter((line) => !/elements|expires/.test(line));
    assert.deepEqual(rules(after), rules(before), 'the same ruleset, not a second copy');
  });

  test('after kill -9, pinholes still expire and the drop policy stays', async () => {
    const { gw, client, outsider } = hosts();
    await knockAs(alice, `tcp/${GRANTED}`);
    assert.equal(await tcpConnect(client, gw.ipv4, GRANTED, CLOSED_PROBE_MS), 'connected');
    await gateway.kill9();
    assert.equal(
      await tcpConnect(client, gw.ipv4, GRANTED, CLOSED_PROBE_MS),
      'connected',
      'the pinhole outlives the process',
    );
    assert.equal(
      await tcpConnect(outsider, gw.ipv4, GRANTED, CLOSED_PROBE_MS),
      'timeout',
      'still dark to others',
    );
    await sleep(TTL_SECONDS * 1000 + 200);
    assert.equal(
      await tcpConnect(client, gw.ipv4, GRANTED, CLOSED_PROBE_MS),
      'timeout',
      'expired by the kernel',
    );
    const ruleset = (await gw.run(['nft', 'list', 'chain', 'inet', 'umbra', 'input'])).stdout;
    assert.match(ruleset, /policy drop;/);

    // A restart reconciles what is there: no duplicate rules, nothing flushed.
    await gateway.launch();
    const again = (await gw.run(['nft', 'list', 'chain', 'inet', 'umbra', 'input'])).stdout;
    assert.equal(again, ruleset);
  });
});

describe('IPv6 behaves as IPv4 does', () => {
  test('knock and connect over IPv6; the outsider stays out; replay refused', async () => {
    const { gw, client, outsider } = hosts();
    assert.equal(await tcpConnect(client, gw.ipv6, GRANTED, CLOSED_PROBE_MS), 'timeout');
    const packet = await buildKnock(client, {
      gateway: gw.ipv6,
      gatewayKey: gateway.publicKey,
      identity: alice,
      access: `tcp/${GRANTED}`,
    });
    await sendRaw(client, gw.ipv6, gateway.spaPort, packet);
    assert.equal(await tcpConnect(client, gw.ipv6, GRANTED, CLOSED_PROBE_MS), 'connected');
    assert.deepEqual(
      (await gateway.pinholes()).map((p) => [p.source, p.protocol, p.port]),
      [[client.ipv6, 'tcp', GRANTED]],
    );
    assert.equal(await tcpConnect(outsider, gw.ipv6, GRANTED, CLOSED_PROBE_MS), 'timeout');
    assert.equal(
      await tcpConnect(client, gw.ipv4, GRANTED, CLOSED_PROBE_MS),
      'timeout',
      'the IPv6 pinhole opens no IPv4',
    );
    const from = gateway.logs.length;
    await sendRaw(outsider, gw.ipv6, gateway.spaPort, packet);
    await gateway.waitForLog((l) => l.reason === 'replay', 5000, from);
    assert.equal(await tcpConnect(outsider, gw.ipv6, GRANTED, CLOSED_PROBE_MS), 'timeout');
  });
});
