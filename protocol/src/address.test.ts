import assert from 'node:assert/strict';
import { isIP, SocketAddress } from 'node:net';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { ipAddressFromBytes, ipAddressToBytes, isIpv4Mapped } from './address.ts';

describe('IP addresses', () => {
  test('IPv4 text and bytes', () => {
    assert.deepEqual(ipAddressToBytes('192.0.2.1'), Buffer.from([192, 0, 2, 1]));
    assert.equal(ipAddressFromBytes(Buffer.from([10, 0, 0, 255])), '10.0.0.255');
  });

  test('RFC 5952 text for IPv6', () => {
    const cases: [string, string][] = [
      ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
      ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // the first of equal runs
      ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // a single zero group stays
      ['0:0:0:0:0:0:0:0', '::'],
      ['0:0:0:0:0:0:0:1', '::1'],
      ['1:0:0:0:0:0:0:0', '1::'],
      ['2001:0db8::0001', '2001:db8::1'],
      ['::ffff:192.0.2.1', '::ffff:c000:201'], // as the gateway formats a captured source
      ['fe80::1:2', 'fe80::1:2'],
    ];
    for (const [input, canonical] of cases) {
      assert.equal(ipAddressFromBytes(ipAddressToBytes(input)!), canonical, input);
    }
  });

  test('refuses what is not one address', () => {
    for (const bad of [
      '',
      'localhost',
      '1.2.3',
      '1.2.3.4.5',
      '01.2.3.4',
      '256.1.1.1',
      '1.2.3.4/32',
      ' 1.2.3.4',
      ':::',
      '1:2:3:4:5:6:7:8:9',
      '1:2:3:4:5:6:7',
      '1::2::3',
      ':1:2:3:4:5:6:7',
      '1:2:3:4:5:6:7:8::',
      '12345::',
      'fe80::1%eth0',
      '1.2.3.4::',
      '::1.2.3',
      '1:2:3:4:5:6:7:1.2.3.4',
      'g::1',
    ]) {
      assert.equal(ipAddressToBytes(bad), null, bad);
    }
    assert.equal(ipAddressFromBytes(Buffer.alloc(5)), null);
  });

  test('recognizes IPv4-mapped IPv6', () => {
    assert.ok(isIpv4Mapped(ipAddressToBytes('::ffff:1.2.3.4')!));
    assert.ok(!isIpv4Mapped(ipAddressToBytes('::1.2.3.4')!));
    assert.ok(!isIpv4Mapped(ipAddressToBytes('1.2.3.4')!));
  });

  test('agrees with node:net on every address fast-check can write', () => {
    fc.assert(
      fc.property(fc.oneof(fc.ipV4(), fc.ipV4Extended(), fc.ipV6()), (text) => {
        const bytes = ipAddressToBytes(text);
        // fast-check's extended IPv4 forms (octal, hex, fewer parts) are not addresses we accept.
        if (isIP(text) === 0) return assert.equal(bytes, null);
        assert.ok(bytes, text);
        assert.equal(bytes.length, isIP(text) === 4 ? 4 : 16);
        const canonical = ipAddressFromBytes(bytes)!;
        assert.deepEqual(ipAddressToBytes(canonical), bytes);
        // node:net prints through inet_ntop, which differs from RFC 5952 only by writing a dotted tail
        // for IPv4-mapped and IPv4-compatible addresses; compare everything else.
        const normalized = new SocketAddress({ address: text, family: isIP(text) === 4 ? 'ipv4' : 'ipv6' })
          .address;
        if (!normalized.includes('.') || bytes.length === 4) assert.equal(canonical, normalized);
      }),
      { numRuns: 1000 },
    );
  });
});
