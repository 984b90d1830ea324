import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseDatagram } from './frame.ts';

function udp4(payload: Buffer, opts: { fragment?: number; protocol?: number; vlan?: boolean } = {}): Buffer {
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + 8 + payload.length, 2);
  ip.writeUInt16BE(opts.fragment ?? 0, 6);
  ip[9] = opts.protocol ?? 17;
  Buffer.from([192, 0, 2, 7]).copy(ip, 12);
  Buffer.from([192, 0, 2, 1]).copy(ip, 16);
  const udp = Buffer.alloc(8);
  udp.writeUInt16BE(40000, 0);
  udp.writeUInt16BE(62201, 2);
  udp.writeUInt16BE(8 + payload.length, 4);
  const ether = Buffer.alloc(14);
  ether.writeUInt16BE(opts.vlan ? 0x8100 : 0x0800, 12);
  const tag = Buffer.from([0, 5, 0x08, 0x00]);
  return Buffer.concat([ether, ...(opts.vlan ? [tag] : []), ip, udp, payload]);
}

function udp6(payload: Buffer): Buffer {
  const ether = Buffer.alloc(14);
  ether.writeUInt16BE(0x86dd, 12);
  const ip = Buffer.alloc(40);
  ip[0] = 0x60;
  ip.writeUInt16BE(8 + payload.length, 4);
  ip[6] = 17;
  Buffer.from('20010db8000000000000000000000011', 'hex').copy(ip, 8);
  const udp = Buffer.alloc(8);
  udp.writeUInt16BE(8 + payload.length, 4);
  return Buffer.concat([ether, ip, udp, payload]);
}

test('an IPv4 UDP datagram yields its source and payload', () => {
  const frame = udp4(Buffer.from('knock'));
  const datagram = parseDatagram(frame, frame.length, 'ethernet');
  assert.deepEqual(datagram && { ...datagram, payload: datagram.payload.toString() }, {
    family: 4,
    source: '192.0.2.7',
    payload: 'knock',
  });
});

test('a VLAN-tagged frame is parsed through its tag', () => {
  const frame = udp4(Buffer.from('x'), { vlan: true });
  assert.equal(parseDatagram(frame, frame.length, 'ethernet')?.source, '192.0.2.7');
});

test('an IPv6 UDP datagram yields its canonical source', () => {
  const frame = udp6(Buffer.from('knock6'));
  const datagram = parseDatagram(frame, frame.length, 'ethernet');
  assert.equal(datagram?.source, '2001:db8::11');
  assert.equal(datagram?.payload.toString(), 'knock6');
});

test('fragments, other protocols and truncated frames are dropped', () => {
  const fragment = udp4(Buffer.from('x'), { fragment: 0x2000 });
  assert.equal(parseDatagram(fragment, fragment.length, 'ethernet'), null);
  const tcp = udp4(Buffer.from('x'), { protocol: 6 });
  assert.equal(parseDatagram(tcp, tcp.length, 'ethernet'), null);
  const whole = udp4(Buffer.alloc(100));
  for (let length = 0; length < whole.length; length++)
    assert.equal(parseDatagram(whole, length, 'ethernet'), null);
  const whole6 = udp6(Buffer.alloc(100));
  for (let length = 0; length < whole6.length; length++)
    assert.equal(parseDatagram(whole6, length, 'ethernet'), null);
});

test('sources no real sender can have are dropped', () => {
  for (const source of [
    [0, 0, 0, 0],
    [127, 0, 0, 1],
    [224, 0, 0, 1],
    [255, 255, 255, 255],
  ]) {
    const frame = udp4(Buffer.from('x'));
    Buffer.from(source).copy(frame, 14 + 12);
    assert.equal(parseDatagram(frame, frame.length, 'ethernet'), null, source.join('.'));
  }
  for (const source of [
    '00000000000000000000000000000000',
    '00000000000000000000000000000001',
    '00000000000000000000ffffc0000207',
    'ff020000000000000000000000000001',
  ]) {
    const frame = udp6(Buffer.from('x'));
    Buffer.from(source, 'hex').copy(frame, 14 + 8);
    assert.equal(parseDatagram(frame, frame.length, 'ethernet'), null, source);
  }
});
