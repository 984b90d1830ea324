import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { generateProvisioningKey } from '@umbra/protocol';
import {
  applyNetworkTransaction,
  isApplied,
  LinuxNetworkApplier,
  MemoryNetworkApplier,
  NetworkError,
  type NetworkSettings,
  type NetworkSnapshot,
  verifyControllerReachable,
} from './network.ts';
import { Provisioner } from './provisioner.ts';
import { makeSiteBundle, TEST_NOW } from './testing.ts';

const STATIC: NetworkSettings = {
  mode: 'static',
  address: '192.0.2.10/24',
  gateway: '192.0.2.1',
  vlan: 42,
  dns: ['192.0.2.53'],
  ntp: [],
};

describe('network transaction (in memory)', () => {
  test('snapshots before changing, applies, keeps the change when verified', async () => {
    const net = new MemoryNetworkApplier();
    const saved: NetworkSnapshot[] = [];
    const previous = await applyNetworkTransaction(net, STATIC, {
      beforeChange: (snapshot) => {
        saved.push(snapshot);
        assert.equal(net.calls.length, 0, 'nothing applied before the snapshot is saved');
      },
      verify: async () => {},
    });
    assert.deepEqual(saved, [previous]);
    assert.ok(isApplied(net.state, STATIC));
    assert.ok(!isApplied(previous, STATIC));
  });

  test('a failed verification rolls back to the snapshot', async () => {
    const net = new MemoryNetworkApplier({ initial: { resolvConf: 'nameserver 10.0.0.1\n' } });
    const before = net.state;
    await assert.rejects(
      applyNetworkTransaction(net, STATIC, {
        beforeChange: () => {},
        verify: async () => {
          throw new NetworkError('controller-unreachable', 'cannot reach the controller');
        },
      }),
      { code: 'controller-unreachable' },
    );
    assert.deepEqual(net.state, before);
  });

  test('a failed rollback is named with the original error', async () => {
    const net = new MemoryNetworkApplier({
      hook: (stage) => {
        if (stage === 'half-applied') throw new Error('ip failed');
        if (stage === 'rollback') throw new Error('ip failed again');
      },
    });
    await assert.rejects(
      applyNetworkTransaction(net, STATIC, { beforeChange: () => {}, verify: async () => {} }),
      /ip failed; rolling the network back failed too: ip failed again/,
    );
  });
});

describe('verifyControllerReachable', () => {
  test('connects to a listening port', async () => {
    const server = createServer((s) => s.destroy());
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as { port: number };
    try {
      await verifyControllerReachable(`https://127.0.0.1:${port}`, 2000);
    } finally {
      server.close();
    }
  });

  test('a closed port is controller-unreachable, naming host and port', async () => {
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as { port: number };
    server.close();
    await assert.rejects(
      verifyControllerReachable(`https://127.0.0.1:${port}`, 2000),
      (error: NetworkError) => {
        assert.equal(error.code, 'controller-unreachable');
        assert.match(error.message, new RegExp(`127\\.0\\.0\\.1:${port}`));
        return true;
      },
    );
  });

  test('a host that does not resolve is controller-unreachable', async () => {
    await assert.rejects(verifyControllerReachable('https://no-such-host.invalid:8443', 3000), {
      code: 'controller-unreachable',
      message: /cannot resolve the controller's host no-such-host\.invalid/,
    });
  });
});

const isRoot = process.getuid?.() === 0;
const hasIp = (() => {
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
const skip = !isRoot ? 'needs root to create a network namespace' : !hasIp ? 'needs iproute2 (ip)' : false;

describe('LinuxNetworkApplier in a network namespace', { skip }, () => {
  const netns = `umbra-prov-${process.pid}-${randomBytes(3).toString('hex')}`;
  let etc: string;
  let vlans = false;
  const ip = (...args: string[]) =>
    execFileSync('ip', ['-n', netns, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

  before(() => {
    execFileSync('ip', ['netns', 'add', netns]);
    // veth pairs: this kernel may lack the dummy and 8021q modules.
    ip('link', 'add', 'uplink0', 'type', 'veth', 'peer', 'name', 'peer0');
    ip('link', 'add', 'other0', 'type', 'veth', 'peer', 'name', 'peer1');
    ip('link', 'set', 'peer1', 'up');
    try {
      ip('link', 'add', 'link', 'uplink0', 'name', 'probe.7', 'type', 'vlan', 'id', '7');
      ip('link', 'del', 'probe.7');
      vlans = true;
    } catch {
      vlans = false;
    }
    ip('link', 'set', 'other0', 'up');
    ip('addr', 'add', '198.51.100.2/24', 'dev', 'other0');
    ip('route', 'add', 'default', 'via', '198.51.100.1', 'dev', 'other0');
    etc = mkdtempSync(join(tmpdir(), 'umbra-prov-etc-'));
    writeFileSync(join(etc, 'resolv.conf'), 'nameserver 198.51.100.53\n');
  });
  after(() => {
    execFileSync('ip', ['netns', 'del', netns]);
    rmSync(etc, { recursive: true, force: true });
  });

  test('static with a VLAN: applied, seen by current(), rolled back exactly', async (t) => {
    if (!vlans) return t.skip('this kernel has no 802.1Q VLAN support (8021q)');
    const net = new LinuxNetworkApplier({ interface: 'uplink0', netns, etcDir: etc });
    const previous = await net.current();
    assert.deepEqual(previous.links, [{ name: 'uplink0', up: false, addresses: [] }]);
    assert.deepEqual(previous.defaultRoutes, [{ family: 4, dev: 'other0', gateway: '198.51.100.1' }]);

    await net.apply(STATIC);
    const applied = await net.current();
    assert.ok(isApplied(applied, STATIC), JSON.stringify(applied));
    assert.deepEqual(applied.links.find((l) => l.name === 'uplink0.42')?.vlan, { parent: 'uplink0', id: 42 });
    assert.match(readFileSync(join(etc, 'resolv.conf'), 'utf8'), /^nameserver 192\.0\.2\.53$/m);
    assert.match(ip('-d', 'link', 'show', 'uplink0.42'), /vlan protocol 802\.1Q id 42/);

    await net.rollback(previous);
    assert.deepEqual(await net.current(), previous);
    assert.equal(readFileSync(join(etc, 'resolv.conf'), 'utf8'), 'nameserver 198.51.100.53\n');
    assert.throws(() => ip('link', 'show', 'uplink0.42'));
  });

  test('static without a VLAN, then a rollback from a half-applied state', async () => {
    const net = new LinuxNetworkApplier({ interface: 'uplink0', netns, etcDir: etc });
    const previous = await net.current();
    const settings: NetworkSettings = {
      mode: 'static',
      address: '203.0.113.5/24',
      gateway: '203.0.113.1',
      dns: [],
      ntp: [],
    };
    await net.apply(settings);
    assert.ok(isApplied(await net.current(), settings));
    // A power cut between the address and the route: only part of it is there.
    await net.rollback(previous);
    ip('link', 'set', 'uplink0', 'up');
    ip('addr', 'add', '203.0.113.5/24', 'dev', 'uplink0');
    await net.rollback(previous);
    assert.deepEqual(await net.current(), previous);
  });

  test('NTP servers go to ETC/ntp.conf, and a rollback puts back what was there (or nothing)', async () => {
    const net = new LinuxNetworkApplier({ interface: 'uplink0', netns, etcDir: etc });
    rmSync(join(etc, 'ntp.conf'), { force: true });
    const previous = await net.current();
    assert.equal(previous.ntpConf, null);
    await net.apply({
      mode: 'static',
      address: '203.0.113.6/24',
      gateway: '203.0.113.1',
      dns: [],
      ntp: ['192.0.2.123', 'time.example'],
    });
    assert.match(
      readFileSync(join(etc, 'ntp.conf'), 'utf8'),
      /^server 192\.0\.2\.123 iburst\nserver time\.example iburst\n$/m,
    );
    await net.rollback(previous);
    assert.equal(existsSync(join(etc, 'ntp.conf')), false);
    writeFileSync(join(etc, 'ntp.conf'), 'server 198.51.100.1\n');
    const withOld = await net.current();
    await net.apply({
      mode: 'static',
      address: '203.0.113.6/24',
      gateway: '203.0.113.1',
      dns: [],
      ntp: ['192.0.2.123'],
    });
    await net.rollback(withOld);
    assert.equal(readFileSync(join(etc, 'ntp.conf'), 'utf8'), 'server 198.51.100.1\n');
    rmSync(join(etc, 'ntp.conf'), { force: true });
  });

  test('the provisioner with an unreachable controller leaves the namespace as it was', async () => {
    const net = new LinuxNetworkApplier({ interface: 'uplink0', netns, etcDir: etc });
    const previous = await net.current();
    const key = generateProvisioningKey();
    const stateDir = mkdtempSync(join(tmpdir(), 'umbra-prov-state-'));
    try {
      const p = await Provisioner.open({
        stateDir,
        trustedKeys: [key.publicKey],
        network: net,
        tpm: 'swtpm:127.0.0.1:1',
        now: () => TEST_NOW,
        verifyController: () =>
          verifyControllerReachable('https://192.0.2.1:8443', 300).then(() => {
            throw new NetworkError('controller-unreachable', 'this test has no controller');
          }),
      });
      const network: NetworkSettings = {
        mode: 'static',
        address: '203.0.113.5/24',
        gateway: '203.0.113.1',
        dns: ['203.0.113.53'],
        ntp: [],
      };
      await assert.rejects(p.apply(makeSiteBundle({ key, network }).bytes, { source: 'test' }), {
        code: 'controller-unreachable',
      });
      assert.deepEqual(await net.current(), previous);
      assert.equal(p.state, 'unprovisioned');
    } finally {
      rmSync(stateDir, { recursive: true, force: true });
    }
  });

  test('DHCP without udhcpc or dhclient is a clear error, before anything changes', async () => {
    const net = new LinuxNetworkApplier({ interface: 'uplink0', netns, etcDir: etc });
    const previous = await net.current();
    const path = process.env.PATH;
    process.env.PATH = '/nonexistent';
    try {
      await assert.rejects(net.apply({ mode: 'dhcp', dns: [], ntp: [] }), {
        code: 'dhcp-unavailable',
        message: /neither udhcpc nor dhclient is installed/,
      });
    } finally {
      process.env.PATH = path;
    }
    assert.deepEqual(await net.current(), previous);
  });

  test('an interface that is not there is named', async () => {
    const net = new LinuxNetworkApplier({ interface: 'nosuch0', netns, etcDir: etc });
    await assert.rejects(net.current(), /no network interface nosuch0 in network namespace/);
    assert.ok(existsSync(join(etc, 'resolv.conf')));
  });
});
