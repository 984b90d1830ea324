import assert from 'node:assert/strict';
import { test } from 'node:test';
import { allows, parseAccessRule } from './access.ts';

test('rules parse single ports and ranges, and refuse the rest', () => {
  assert.deepEqual(parseAccessRule('tcp/22'), { protocol: 'tcp', fromPort: 22, toPort: 22 });
  assert.deepEqual(parseAccessRule('udp/1-65535'), { protocol: 'udp', fromPort: 1, toPort: 65535 });
  for (const bad of [
    'tcp/0',
    'tcp/65536',
    'icmp/1',
    'tcp/22-21',
    'tcp/',
    'TCP/22',
    ' tcp/22',
    'tcp/22,23',
    'tcp/022',
    'udp/1-070',
  ])
    assert.equal(parseAccessRule(bad), null, bad);
});

test('allows matches protocol and port range', () => {
  const rules = [parseAccessRule('tcp/22')!, parseAccessRule('udp/100-200')!];
  assert.equal(allows(rules, 'tcp', 22), true);
  assert.equal(allows(rules, 'udp', 22), false);
  assert.equal(allows(rules, 'udp', 150), true);
  assert.equal(allows(rules, 'udp', 201), false);
});
