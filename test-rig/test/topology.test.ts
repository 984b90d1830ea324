// The rig itself: topologies come up fast, hosts reach each other over IPv4 and IPv6, the helper
// tools work from inside namespaces, and nothing outlives the test — not even when the process is
// killed or exits without cleaning up.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import {
  connectLoop,
  type Host,
  listRigNamespaces,
  nmapScan,
  ping,
  startCapture,
  startTcpServer,
  type TcpServer,
  Topology,
  tcpConnect,
  tcpProbe,
} from '../src/index.ts';

const SERVICE_PORT = 8080;
const CLOSED_PORT = 8081;

describe('topology', () => {
  let topo: Topology;
  let gateway: Host;
  let client: Host;
  let outsider: Host;
  let service: TcpServer;

  before(async () => {
    topo = await Topology.create({ name: 'rig', hosts: ['gateway', 'client', 'outsider'] });
    gateway = topo.host('gateway');
    client = topo.host('client');
    outsider = topo.host('outsider');
    service = await startTcpServer(gateway, { port: SERVICE_PORT, banner: 'protected service' });
  });

  after(async () => {
    await topo?.destroy();
  });

  test('every host has its namespace, eth0 and documentation addresses', async () => {
    const present = listRigNamespaces();
    for (const netns of topo.namespaces())
      assert.ok(present.includes(netns), `${netns} missing from ip netns list`);
    assert.equal(gateway.ipv4, '192.0.2.10');
    assert.equal(client.ipv6, '2001:db8::11');
    assert.equal(outsider.ifname, 'eth0');
    const addrs = await client.run(['ip', '-o', 'addr', 'show', 'dev', 'eth0']);
    assert.match(addrs.stdout, /inet 192\.0\.2\.11\/24/);
    assert.match(addrs.stdout, /inet6 2001:db8::11\/64/);
    assert.doesNotMatch(addrs.stdout, /2001:db8::11\/64 .*tentative/);
    // The bridge lives in the switch namespace, never in ours.
    const root = await new Promise<string>((resolve) => {
      const child = spawn('ip', ['-o', 'link', 'show'], { stdio: ['ignore', 'pipe', 'ignore'] });
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
        out += chunk;
      });
      child.on('close', () => resolve(out));
    });
    assert.doesNotMatch(root, new RegExp(topo.id));
  });

  test('hosts ping each other over IPv4 and IPv6', async () => {
    assert.equal(await ping(client, gateway.ipv4), true);
    assert.equal(await ping(gateway, client.ipv4), true);
    assert.equal(await ping(client, gateway.ipv6), true);
    assert.equal(await ping(gateway, client.ipv6), true);
    // An address nobody holds answers nothing.
    assert.equal(await ping(client, '192.0.2.200', 1_000), false);
  });

  test('tcpConnect reaches the service over IPv4 and IPv6, and a closed port refuses', async () => {
    assert.equal(await tcpConnect(client, gateway.ipv4, SERVICE_PORT, 1_000), 'connected');
    assert.equal(await tcpConnect(client, gateway.ipv6, SERVICE_PORT, 1_000), 'connected');
    assert.equal(await tcpConnect(client, gateway.ipv4, CLOSED_PORT, 1_000), 'refused');
    const probe = await tcpProbe(outsider, gateway.ipv4, SERVICE_PORT, { readBanner: true });
    assert.equal(probe.result, 'connected');
    assert.equal(probe.banner, 'protected service');
    const seen = service.connections().map((entry) => entry.address);
    assert.ok(seen.includes(`::ffff:${client.ipv4}`), `service saw ${seen.join(', ')}`);
    assert.ok(seen.includes(client.ipv6));
  });

  test('a dropped SYN reads as timeout', async (t) => {
    await gateway.run([
      'iptables',
      '-I',
      'INPUT',
      '-p',
      'tcp',
      '--dport',
      String(SERVICE_PORT),
      '-j',
      'DROP',
    ]);
    t.after(() =>
      gateway.run(['iptables', '-D', 'INPUT', '-p', 'tcp', '--dport', String(SERVICE_PORT), '-j', 'DROP']),
    );
    assert.equal(await tcpConnect(client, gateway.ipv4, SERVICE_PORT, 300), 'timeout');
  });

  test('the connect loop reports when a service first answers', async () => {
    const result = await connectLoop(client, gateway.ipv4, SERVICE_PORT, { deadlineMs: 2_000 });
    assert.equal(result.ok, true);
    assert.ok(result.elapsedMs < 50, `first connect took ${result.elapsedMs} ms`);
    const none = await connectLoop(client, gateway.ipv4, CLOSED_PORT, { deadlineMs: 100 });
    assert.equal(none.ok, false);
    assert.ok(none.attempts >= 20, `only ${none.attempts} attempts in 100 ms`);
    assert.ok(none.refused >= 20);
  });

  test('a capture counts exactly the packets that match its filter', async () => {
    const capture = await startCapture(gateway, {
      filter: `src host ${client.ipv4} and tcp[tcpflags] & tcp-syn != 0 and not arp`,
    });
    for (let i = 0; i < 3; i++)
      assert.equal(await tcpConnect(client, gateway.ipv4, SERVICE_PORT), 'connected');
    const result = await capture.stop();
    assert.equal(result.packets, 3, result.summary.join('\n'));
    assert.equal(result.capturedByTcpdump, 3);
    assert.equal(result.file, null);
  });

  test('nmap from the outsider sees exactly the one open port', async (t) => {
    const syn = await nmapScan(outsider, gateway.ipv4, 'tcp-syn');
    t.diagnostic(`tcp-syn all ports (open host): ${syn.elapsedMs.toFixed(0)} ms`);
    assert.deepEqual(syn.open, [SERVICE_PORT]);
    assert.equal(syn.stateCounts.closed, 65534);
    const syn6 = await nmapScan(outsider, gateway.ipv6, 'tcp-syn', { ports: `1-1024,${SERVICE_PORT}` });
    assert.deepEqual(syn6.open, [SERVICE_PORT]);
    const version = await nmapScan(outsider, gateway.ipv4, 'version', { ports: String(SERVICE_PORT) });
    t.diagnostic(`version: ${version.elapsedMs.toFixed(0)} ms, ${JSON.stringify(version.ports[0]?.service)}`);
    assert.deepEqual(version.open, [SERVICE_PORT]);
    const udp = await nmapScan(outsider, gateway.ipv4, 'udp');
    t.diagnostic(`udp: ${udp.elapsedMs.toFixed(0)} ms, ${JSON.stringify(udp.stateCounts)}`);
    // Nothing listens on UDP, and nothing filters it: every port answers ICMP port unreachable,
    // the SPA port too (nmap's UDP retries are slowed by ICMP rate limiting, so some may read open|filtered).
    assert.ok(udp.ports.some((port) => port.port === 62201));
    assert.ok((udp.stateCounts.closed ?? 0) >= 1);
    const os = await nmapScan(outsider, gateway.ipv4, 'os', { ports: `1-1024,${SERVICE_PORT}` });
    t.diagnostic(`os: ${os.elapsedMs.toFixed(0)} ms, ${os.osMatches[0]?.name ?? 'no match'}`);
    assert.ok(os.osMatches.length > 0, 'an open and a closed port give nmap enough to guess the OS');
  });
});

describe('teardown', () => {
  test('create is fast, destroy kills processes and removes every namespace, twice is fine', async (t) => {
    const started = performance.now();
    const topo = await Topology.create({ name: 'shortlived', hosts: ['a', 'b', 'c', 'd'] });
    const createMs = performance.now() - started;
    t.diagnostic(`create 4 hosts: ${createMs.toFixed(1)} ms`);
    assert.ok(createMs < 1_000, `create took ${createMs} ms`);
    const names = topo.namespaces();
    assert.equal(names.length, 5);
    const sleeper = topo.host('a').spawn(['sleep', '60']);
    const exited = new Promise((resolve) => sleeper.once('exit', (_code, signal) => resolve(signal)));
    const destroyStarted = performance.now();
    await topo.destroy();
    t.diagnostic(`destroy with one process: ${(performance.now() - destroyStarted).toFixed(1)} ms`);
    assert.equal(await exited, 'SIGTERM');
    const left = listRigNamespaces();
    for (const netns of names) assert.ok(!left.includes(netns), `${netns} still exists`);
    await topo.destroy();
    assert.equal(topo.isDestroyed, true);
    assert.throws(() => topo.host('a').spawn(['true']), /destroyed/);
  });

  test('a process killed by SIGTERM or exiting without destroy leaves no namespace behind', async () => {
    const topologyUrl = pathToFileURL(new URL('../src/topology.ts', import.meta.url).pathname).href;
    const script = (ending: string) => `
      import { Topology } from ${JSON.stringify(topologyUrl)};
      const topo = await Topology.create({ name: 'orphan', hosts: ['x', 'y'] });
      topo.host('x').spawn(['sleep', '60']);
      console.log(JSON.stringify(topo.namespaces()));
      process.stdin.once('data', () => { ${ending} });
    `;
    for (const [ending, how] of [
      ['', 'SIGTERM'],
      ['process.exit(3);', 'exit'],
      ['throw new Error("boom");', 'throw'],
    ] as const) {
      const child = spawn(process.execPath, ['--input-type=module', '-e', script(ending)], {
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      const names = await new Promise<string[]>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${how}: child printed nothing`)), 10_000);
        child.stdout.setEncoding('utf8').once('data', (chunk: string) => {
          clearTimeout(timer);
          resolve(JSON.parse(chunk) as string[]);
        });
      });
      const during = listRigNamespaces();
      for (const netns of names) assert.ok(during.includes(netns), `${how}: ${netns} was never created`);
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      if (how === 'SIGTERM') child.kill('SIGTERM');
      else child.stdin.write('end\n');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
      const left = listRigNamespaces();
      for (const netns of names) assert.ok(!left.includes(netns), `${how}: ${netns} survived its process`);
    }
  });

  test('bad host names are refused before anything is created', async () => {
    await assert.rejects(Topology.create({ hosts: ['Gateway'] }), /lowercase/);
    await assert.rejects(Topology.create({ hosts: ['a', 'a'] }), /twice/);
    await assert.rejects(Topology.create({ hosts: [] }), /1 to/);
  });
});
