import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Libnftables } from './libnftables.ts';

// Everything that talks to the kernel is in nftables-firewall.test.ts, inside a network namespace.

test('a missing library says which package to install', () => {
  assert.throws(
    () => new Libnftables({ library: 'libnftables-missing.so.1' }),
    /libnftables-missing\.so\.1 not found: install Debian's libnftables1 \(apt-get install libnftables1\)/,
  );
});
