import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { test } from 'node:test';
import fc from 'fast-check';
import { HmacSha256 } from './hmac-sha256.ts';

function ours(key: Uint8Array, message: Uint8Array, length = 32): Buffer {
  const out = Buffer.alloc(length);
  new HmacSha256(key).digestInto(message, 0, message.length, out);
  return out;
}

test('RFC 4231 test case 2 ("what do ya want for nothing?")', () => {
  const mac = ours(Buffer.from('Jefe'), Buffer.from('what do ya want for nothing?'));
  assert.equal(mac.toString('hex'), '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843');
});

test('agrees with node:crypto for every message length across the block boundaries', () => {
  const key = Buffer.alloc(32, 7);
  const hmac = new HmacSha256(key);
  const out = Buffer.alloc(32);
  for (let length = 0; length <= 600; length++) {
    const message = Buffer.alloc(length, length & 0xff);
    hmac.digestInto(message, 0, message.length, out);
    assert.deepEqual(out, createHmac('sha256', key).update(message).digest(), `length ${length}`);
  }
});

test('agrees with node:crypto for random keys, messages and truncations', () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 0, maxLength: 64 }),
      fc.uint8Array({ minLength: 0, maxLength: 1024 }),
      fc.integer({ min: 1, max: 32 }),
      (key, message, length) => {
        const expected = createHmac('sha256', key).update(message).digest().subarray(0, length);
        assert.deepEqual(ours(key, message, length), expected);
      },
    ),
    { numRuns: 500 },
  );
});

test('a reused instance gives the same answer every time', () => {
  const hmac = new HmacSha256(Buffer.alloc(32, 1));
  const a = Buffer.alloc(16);
  const b = Buffer.alloc(16);
  hmac.digestInto(Buffer.alloc(300, 2), 0, 300, a);
  hmac.digestInto(Buffer.alloc(10, 3), 0, 10, b);
  hmac.digestInto(Buffer.alloc(300, 2), 0, 300, b);
  assert.deepEqual(a, b);
});

test('a range inside a larger buffer is the same as the bytes alone', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 400 }), fc.nat(50), fc.nat(50), (message, before, after) => {
      const framed = Buffer.concat([Buffer.alloc(before, 0xaa), message, Buffer.alloc(after, 0xbb)]);
      const out = Buffer.alloc(32);
      new HmacSha256(Buffer.alloc(32, 9)).digestInto(framed, before, before + message.length, out);
      assert.deepEqual(out, createHmac('sha256', Buffer.alloc(32, 9)).update(message).digest());
    }),
    { numRuns: 300 },
  );
});
