import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { checkPinholeKey, checkPinholeRequest, MemoryFirewall, type PinholeRequest } from './firewall.ts';

function clock(startMs = 1_000_000) {
  let nowMs = startMs;
  return {
    now: () => nowMs,
    advance: (ms: number) => {
      nowMs += ms;
    },
  };
}

const ssh: PinholeRequest = { source: '192.0.2.7', protocol: 'tcp', port: 22, ttlSeconds: 10 };

describe('MemoryFirewall', () => {
  test('refuses pinholes before install(), like a kernel without the table', () => {
    const firewall = new MemoryFirewall();
    assert.equal(firewall.isInstalled(), false);
    assert.throws(() => firewall.open(ssh), /call install\(\) before opening/);
    firewall.install();
    firewall.install();
    assert.equal(firewall.isInstalled(), true);
    assert.doesNotThrow(() => firewall.open(ssh));
  });

  test('a pinhole admits its flow until its timeout, then expires', () => {
    const time = clock();
    const firewall = new MemoryFirewall({ now: time.now });
    firewall.install();
    firewall.open(ssh);
    assert.equal(firewall.admits(ssh), true);
    assert.equal(firewall.admits({ ...ssh, port: 23 }), false);
    assert.equal(firewall.admits({ ...ssh, protocol: 'udp' }), false);
    assert.equal(firewall.admits({ ...ssh, source: '192.0.2.8' }), false);

    time.advance(9_999);
    assert.deepEqual(firewall.list(), [{ ...ssh, secondsLeft: 0 }]);
    time.advance(1);
    assert.equal(firewall.admits(ssh), false);
    assert.deepEqual(firewall.list(), []);
  });

  test('secondsLeft is rounded down, as nft reports it', () => {
    const time = clock();
    const firewall = new MemoryFirewall({ now: time.now });
    firewall.install();
    firewall.open(ssh);
    time.advance(1);
    assert.equal(firewall.list()[0]?.secondsLeft, 9);
  });

  test('opening an open pinhole restarts its timeout, longer or shorter', () => {
    const time = clock();
    const firewall = new MemoryFirewall({ now: time.now });
    firewall.install();
    firewall.open(ssh);
    time.advance(8_000);
    firewall.open(ssh);
    time.advance(8_000);
    assert.deepEqual(firewall.list(), [{ ...ssh, secondsLeft: 2 }]);
    firewall.open({ ...ssh, ttlSeconds: 1 });
    assert.deepEqual(firewall.list(), [{ ...ssh, ttlSeconds: 1, secondsLeft: 1 }]);
  });

  test('close removes a pinhole and ignores one that is not open', () => {
    const firewall = new MemoryFirewall();
    firewall.install();
    firewall.open(ssh);
    firewall.close(ssh);
    firewall.close(ssh);
    assert.equal(firewall.admits(ssh), false);
    assert.deepEqual(firewall.list(), []);
  });

  test('matches addresses the way the kernel does: canonical IPv6, IPv4-mapped as IPv4', () => {
    const firewall = new MemoryFirewall();
    firewall.install();
    firewall.open({ ...ssh, source: '2001:0DB8:0:0::0007' });
    firewall.open({ ...ssh, source: '::ffff:192.0.2.9' });
    assert.equal(firewall.admits({ ...ssh, source: '2001:db8::7' }), true);
    assert.equal(firewall.admits({ ...ssh, source: '192.0.2.9' }), true);
    assert.deepEqual(
      firewall.list().map((p) => p.source),
      ['2001:db8::7', '192.0.2.9'],
    );
  });

  test('a flow through a marked pinhole carries the mark until cut() drops it', () => {
    const time = clock();
    const firewall = new MemoryFirewall({ now: time.now });
    firewall.install();
    firewall.open({ ...ssh, mark: 9 });
    firewall.open({ ...ssh, source: '192.0.2.8' });
    assert.equal(firewall.markOf(ssh), 9);
    assert.equal(firewall.markOf({ ...ssh, source: '192.0.2.8' }), 0, 'unmarked');
    assert.equal(firewall.markOf({ ...ssh, port: 23 }), 0, 'not admitted at all');
    assert.deepEqual(firewall.list()[0], { ...ssh, mark: 9, secondsLeft: 10 });

    firewall.cut([9], 5);
    assert.equal(firewall.isCut(9), true);
    assert.equal(firewall.isCut(10), false);
    time.advance(5_000);
    assert.equal(firewall.isCut(9), false, 'cut marks expire like pinholes');
    assert.throws(() => firewall.cut([0], 5), /cut mark 0 must be an integer from 1 to 2147483647/);
    assert.throws(() => firewall.open({ ...ssh, mark: 2 ** 31 }), /pinhole mark 2147483648 must be/);
  });
});

describe('checkPinholeRequest', () => {
  test('accepts a well-formed request and says which family it is', () => {
    assert.deepEqual(checkPinholeRequest(ssh), { ...ssh, family: 4 });
    assert.equal(checkPinholeKey({ source: '2001:db8::1', protocol: 'udp', port: 65_535 }).family, 6);
  });

  test('names the field and what it must be', () => {
    const cases: [Partial<PinholeRequest>, RegExp][] = [
      [{ source: 'gateway.example' }, /pinhole source "gateway.example" is not an IPv4 or IPv6 address/],
      [{ source: '192.0.2.01' }, /pinhole source/],
      [{ source: 'fe80::1%eth0' }, /without a zone index/],
      [{ protocol: 'icmp' as 'tcp' }, /pinhole protocol "icmp" must be 'tcp' or 'udp'/],
      [{ port: 0 }, /pinhole port 0 must be an integer from 1 to 65535/],
      [{ port: 65_536 }, /pinhole port 65536/],
      [{ port: 22.5 }, /pinhole port 22.5/],
      [{ ttlSeconds: 0 }, /pinhole ttlSeconds 0 must be an integer from 1 to 86400/],
      [{ ttlSeconds: 1.5 }, /pinhole ttlSeconds 1.5/],
    ];
    for (const [change, message] of cases) {
      assert.throws(() => checkPinholeRequest({ ...ssh, ...change }), message, JSON.stringify(change));
    }
  });
});
