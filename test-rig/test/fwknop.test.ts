// The anchor works as the benchmark will use it: Debian's fwknopd in pcap mode with its defaults
// behind an iptables DROP policy, knocked open by Debian's fwknop client from another namespace.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  buildFwknopPacket,
  type Fwknopd,
  fwknopKnock,
  generateFwknopKeys,
  type Host,
  listRigNamespaces,
  nmapScan,
  parseFwknopRules,
  parseGrantLine,
  startConnectLoop,
  startFwknopd,
  startTcpServer,
  type TcpServer,
  Topology,
  tcpConnect,
} from '../src/index.ts';

const SERVICE_PORT = 8080;
/** Ports for repeated knock → connect measurements, each knocked once so each grant is fresh. */
const MEASURE_PORTS = [10001, 10002, 10003, 10004, 10005];
const ROUNDS = MEASURE_PORTS.length;

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

describe('fwknop anchor', () => {
  const keys = generateFwknopKeys();
  let topo: Topology;
  let gateway: Host;
  let client: Host;
  let outsider: Host;
  let service: TcpServer;
  let fwknopd: Fwknopd;

  before(async () => {
    topo = await Topology.create({ name: 'fwknop', hosts: ['gateway', 'client', 'outsider'] });
    gateway = topo.host('gateway');
    client = topo.host('client');
    outsider = topo.host('outsider');
    service = await startTcpServer(gateway, {
      port: [SERVICE_PORT, ...MEASURE_PORTS],
      banner: 'behind fwknop',
    });
    fwknopd = await startFwknopd(gateway, {
      keys,
      openPorts: [`tcp/${SERVICE_PORT}`, ...MEASURE_PORTS.map((port) => `tcp/${port}`)],
      fwAccessTimeoutS: 30,
    });
  });

  after(async () => {
    await fwknopd?.stop();
    await service?.stop();
    const names = topo?.namespaces() ?? [];
    await topo?.destroy();
    const left = listRigNamespaces();
    for (const netns of names) assert.ok(!left.includes(netns), `${netns} survived destroy`);
  });

  test('fwknopd runs in the gateway namespace with private files only', (t) => {
    t.diagnostic(`fwknopd: ${fwknopd.argv.join(' ')}`);
    assert.equal(fwknopd.openPortsEnforced, true);
    assert.ok(fwknopd.dir.startsWith('/tmp/'));
    assert.ok(fwknopd.logLines().some((line) => /Sniffing interface: eth0/.test(line)));
    assert.ok(fwknopd.logLines().some((line) => /PCAP filter is: 'udp port 62201'/.test(line)));
  });

  test('the gateway is dark before a knock', async () => {
    assert.equal(await tcpConnect(client, gateway.ipv4, SERVICE_PORT, 300), 'timeout');
    assert.equal(await tcpConnect(client, gateway.ipv6, SERVICE_PORT, 300), 'timeout');
    assert.deepEqual(await fwknopd.grants(), []);
  });

  test('a knock opens tcp/8080 for the client only, and nowhere else', async (t) => {
    const from = fwknopd.logCount();
    const knock = await fwknopKnock(client, {
      destination: gateway.ipv4,
      access: `tcp/${SERVICE_PORT}`,
      keys,
    });
    t.diagnostic(`fwknop: ${knock.argv.join(' ').replace(/(--key-base64-\w+) \S+/g, '$1 …')}`);
    t.diagnostic(`one fwknop client invocation: ${knock.elapsedMs.toFixed(1)} ms`);
    const grant = await fwknopd.waitForGrant(
      { source: client.ipv4, access: `tcp/${SERVICE_PORT}` },
      3_000,
      from,
    );
    t.diagnostic(
      `knock → "Added access rule" line: ${(grant.event.at - knock.startedAt).toFixed(1)} ms from spawn, ${(grant.event.at - knock.exitedAt).toFixed(1)} ms from client exit`,
    );
    assert.equal(grant.chain, 'FWKNOP_INPUT');
    const grants = await fwknopd.grants();
    assert.deepEqual(
      grants.map(({ source, proto, port }) => ({ source, proto, port })),
      [{ source: client.ipv4, proto: 'tcp', port: SERVICE_PORT }],
    );
    assert.equal(grants[0]!.expiresAt, grant.expiresAt);
    assert.equal(await tcpConnect(client, gateway.ipv4, SERVICE_PORT, 1_000), 'connected');
    // The grant is for the client's address and that port only.
    assert.equal(await tcpConnect(outsider, gateway.ipv4, SERVICE_PORT, 300), 'timeout');
    assert.equal(await tcpConnect(client, gateway.ipv4, MEASURE_PORTS[0]!, 300), 'timeout');
    // fwknop 2.6.10 has no IPv6: the grant is an iptables (IPv4) rule.
    assert.equal(await tcpConnect(client, gateway.ipv6, SERVICE_PORT, 300), 'timeout');
  });

  test('a port outside OPEN_PORTS is denied', async () => {
    const from = fwknopd.logCount();
    await fwknopKnock(client, { destination: gateway.ipv4, access: 'tcp/9999', keys });
    await fwknopd.waitForLog(/denied per access\.conf/, 3_000, from);
    assert.ok(!(await fwknopd.grants()).some((grant) => grant.port === 9999));
  });

  test('a knock with the wrong keys opens nothing', async (t) => {
    const from = fwknopd.logCount();
    await fwknopKnock(outsider, {
      destination: gateway.ipv4,
      access: `tcp/${SERVICE_PORT}`,
      keys: generateFwknopKeys(),
    });
    const line = await fwknopd.waitForLog(/HMAC_COMPAREFAIL/, 3_000, from);
    t.diagnostic(`fwknopd on a wrong HMAC: ${line.line}`);
    assert.ok(!(await fwknopd.grants()).some((grant) => grant.source === outsider.ipv4));
    assert.equal(await tcpConnect(outsider, gateway.ipv4, SERVICE_PORT, 300), 'timeout');
  });

  test('knock → first TCP connect, measured from the client', async (t) => {
    const firstConnect: number[] = [];
    const toGrantLine: number[] = [];
    const clientRun: number[] = [];
    for (const port of MEASURE_PORTS.slice(0, ROUNDS)) {
      const loop = await startConnectLoop(client, gateway.ipv4, port, { deadlineMs: 3_000 });
      const from = fwknopd.logCount();
      const knockStart = performance.timeOrigin + performance.now();
      loop.go();
      const knock = await fwknopKnock(client, { destination: gateway.ipv4, access: `tcp/${port}`, keys });
      const [result, grant] = await Promise.all([
        loop.result,
        fwknopd.waitForGrant({ source: client.ipv4, access: `tcp/${port}` }, 3_000, from),
      ]);
      assert.equal(result.ok, true, `no connect to ${port} within 3 s`);
      firstConnect.push(result.successEpochMs! - knockStart);
      toGrantLine.push(grant.event.at - knock.startedAt);
      clientRun.push(knock.elapsedMs);
    }
    const fmt = (values: number[]) => values.map((value) => value.toFixed(1)).join(', ');
    t.diagnostic(
      `knock → first connect (ms): ${fmt(firstConnect)}; median ${median(firstConnect).toFixed(1)}`,
    );
    t.diagnostic(
      `knock → grant log line (ms): ${fmt(toGrantLine)}; median ${median(toGrantLine).toFixed(1)}`,
    );
    t.diagnostic(`fwknop client process (ms): ${fmt(clientRun)}`);
    // PCAP_LOOP_SLEEP is 100 ms: every grant must land within a few of its loops.
    assert.ok(Math.max(...firstConnect) < 1_000);
  });

  test('the outsider sees nothing: every TCP port filtered, the SPA port like any other', async (t) => {
    const syn = await nmapScan(outsider, gateway.ipv4, 'tcp-syn');
    t.diagnostic(
      `tcp-syn all 65535 ports of a dark host: ${syn.elapsedMs.toFixed(0)} ms, ${JSON.stringify(syn.stateCounts)}`,
    );
    assert.deepEqual(syn.open, []);
    assert.deepEqual(syn.closed, []);
    assert.equal(syn.filtered, 65535);
    const syn6 = await nmapScan(outsider, gateway.ipv6, 'tcp-syn');
    t.diagnostic(
      `tcp-syn -6 all ports: ${syn6.elapsedMs.toFixed(0)} ms, ${JSON.stringify(syn6.stateCounts)}`,
    );
    assert.equal(syn6.filtered, 65535);
    const udp = await nmapScan(outsider, gateway.ipv4, 'udp');
    t.diagnostic(`udp: ${udp.elapsedMs.toFixed(0)} ms, ${JSON.stringify(udp.stateCounts)}`);
    assert.equal(udp.openFiltered, udp.ports.length);
    assert.ok(udp.ports.some((port) => port.port === 62201 && port.state === 'open|filtered'));
    const version = await nmapScan(outsider, gateway.ipv4, 'version');
    t.diagnostic(
      `version (top 1000): ${version.elapsedMs.toFixed(0)} ms, ${JSON.stringify(version.stateCounts)}`,
    );
    assert.deepEqual(version.open, []);
    const os = await nmapScan(outsider, gateway.ipv4, 'os');
    t.diagnostic(`os: ${os.elapsedMs.toFixed(0)} ms, matches: ${os.osMatches.length}`);
    assert.deepEqual(os.osMatches, []);
  });

  test('fwknop -T builds the packet without sending it', async () => {
    const from = fwknopd.logCount();
    const packet = await buildFwknopPacket(client, { destination: gateway.ipv4, access: 'tcp/8080', keys });
    assert.match(packet, /^[A-Za-z0-9+/]{100,}$/);
    await assert.rejects(fwknopd.waitForLog(/SPA Packet from IP/, 300, from), /no line matched/);
  });

  test('stopping fwknopd flushes its chain', async () => {
    await fwknopd.stop();
    const rules = await gateway.run(['iptables', '-S']);
    assert.doesNotMatch(rules.stdout, /FWKNOP/);
    assert.equal(await tcpConnect(client, gateway.ipv4, SERVICE_PORT, 300), 'timeout');
  });
});

describe('fwknop parsers', () => {
  test('grant log lines', () => {
    assert.deepEqual(
      parseGrantLine(
        'Added access rule to FWKNOP_INPUT for 192.0.2.11 -> 0.0.0.0/0 tcp/10005,tcp/8080, expires at 1795240912',
      ),
      {
        chain: 'FWKNOP_INPUT',
        source: '192.0.2.11',
        destination: '0.0.0.0/0',
        access: ['tcp/10005', 'tcp/8080'],
        expiresAt: 1795240912,
      },
    );
    assert.equal(parseGrantLine('Starting fwknopd main event loop.'), null);
  });

  test('iptables -S FWKNOP_INPUT', () => {
    const text = [
      '-N FWKNOP_INPUT',
      '-A FWKNOP_INPUT -s 192.0.2.11/32 -p tcp -m tcp --dport 8080 -m comment --comment _exp_1795240889 -j ACCEPT',
      '',
    ].join('\n');
    assert.deepEqual(parseFwknopRules(text), [
      { source: '192.0.2.11', proto: 'tcp', port: 8080, expiresAt: 1795240889 },
    ]);
  });
});
