import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { Decoder } from 'cbor-x';
import fc from 'fast-check';
import { assertSameKnock, knockArb } from '../test/knock-arbitraries.ts';
import { ipAddressToBytes } from './address.ts';
import {
  decodeKnockBody,
  decodeSealedKnock,
  encodeKnockBody,
  encodeSealedKnock,
  type Knock,
  KnockError,
  type PostureValue,
  parseAccess,
} from './knock.ts';

// ---- an independent deterministic CBOR writer, to build bodies by hand ----

function head(major: number, n: number): Buffer {
  if (n < 24) return Buffer.from([(major << 5) | n]);
  if (n < 0x100) return Buffer.from([(major << 5) | 24, n]);
  if (n < 0x10000) return Buffer.from([(major << 5) | 25, n >> 8, n & 0xff]);
  if (n < 2 ** 32) {
    const b = Buffer.alloc(5);
    b[0] = (major << 5) | 26;
    b.writeUInt32BE(n, 1);
    return b;
  }
  const b = Buffer.alloc(9);
  b[0] = (major << 5) | 27;
  b.writeBigUInt64BE(BigInt(n), 1);
  return b;
}
const uint = (n: number) => head(0, n);
const bstr = (b: Uint8Array) => Buffer.concat([head(2, b.length), b]);
const tstr = (s: string) => cat(head(3, Buffer.byteLength(s)), Buffer.from(s));
const cat = (...parts: Buffer[]) => Buffer.concat(parts);
/** A map from already-encoded key/value pairs, in the order given. */
const map = (pairs: [Buffer, Buffer][], count = pairs.length) => cat(head(5, count), ...pairs.flat());

const ID = Buffer.alloc(16, 0xaa);
const NONCE = Buffer.alloc(16, 0xbb);
const TIME = 1_763_700_000_000;

function fields(overrides: Partial<Record<number, Buffer | null>> = {}): [Buffer, Buffer][] {
  const base: Record<number, Buffer | null> = {
    1: bstr(ID),
    2: uint(TIME),
    3: bstr(NONCE),
    4: null,
    5: tstr('tcp/22'),
    6: null,
    ...overrides,
  };
  return Object.entries(base)
    .filter((entry): entry is [string, Buffer] => entry[1] !== null)
    .map(([k, v]) => [uint(Number(k)), v]);
}

const validBody = map(fields());
const knock: Knock = { identityId: ID, timestampMs: TIME, nonce: NONCE, access: 'tcp/22' };

describe('knock body encoding', () => {
  test('cbor-x output is exactly the deterministic encoding', () => {
    assert.deepEqual(encodeKnockBody(knock), validBody);
    const full: Knock = {
      ...knock,
      claimedSource: '2001:db8::1',
      posture: { os: 'linux', patched: true, build: 22631, offset: -5, zz: 'x' },
    };
    const posture = map([
      [tstr('os'), tstr('linux')],
      [tstr('zz'), tstr('x')],
      [tstr('build'), uint(22631)],
      [tstr('offset'), head(1, 4)],
      [tstr('patched'), Buffer.from([0xf5])],
    ]);
    const expected = map(fields({ 4: bstr(ipAddressToBytes('2001:db8::1')!), 6: posture }));
    assert.deepEqual(encodeKnockBody(full), expected);
  });

  test('large integers are written as integers, not floats', () => {
    const body = encodeKnockBody({
      ...knock,
      timestampMs: 2 ** 40,
      posture: { n: -(2 ** 40), m: 2 ** 53 - 1 },
    });
    const decoded = decodeKnockBody(body);
    assert.equal(decoded?.timestampMs, 2 ** 40);
    assert.deepEqual(decoded?.posture, { n: -(2 ** 40), m: 2 ** 53 - 1 });
  });

  test('an IPv4-mapped claimed source is carried as IPv4', () => {
    const decoded = decodeKnockBody(encodeKnockBody({ ...knock, claimedSource: '::ffff:192.0.2.7' }));
    assert.equal(decoded?.claimedSource, '192.0.2.7');
  });

  test('bad fields throw KnockError naming the field', () => {
    const cases: [Partial<Knock>, RegExp][] = [
      [{ identityId: Buffer.alloc(15) }, /^knock\.identityId: expected 16 bytes/],
      [{ nonce: Buffer.alloc(17) }, /^knock\.nonce: expected 16 bytes/],
      [{ timestampMs: -1 }, /^knock\.timestampMs: /],
      [{ timestampMs: 1.5 }, /^knock\.timestampMs: /],
      [{ access: 'tcp/0' }, /^knock\.access: expected "tcp\/PORT" or "udp\/PORT"/],
      [{ access: 'TCP/22' }, /^knock\.access: /],
      [{ access: 'sctp/22' }, /^knock\.access: /],
      [{ claimedSource: 'gw.example.net' }, /^knock\.claimedSource: expected an IPv4 or IPv6 address/],
      [{ claimedSource: 'fe80::1%eth0' }, /^knock\.claimedSource: /],
      [{ posture: {} }, /^knock\.posture: expected 1 to 16 claims, got 0/],
      [{ posture: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, i])) }, /got 17/],
      [{ posture: { ['x'.repeat(33)]: 1 } }, /^knock\.posture\["x+"\]: a claim name must be 1 to 32 bytes/],
      [{ posture: { '': 1 } }, /^knock\.posture\[""\]: a claim name/],
      [{ posture: { os: 'é'.repeat(33) } }, /^knock\.posture\["os"\]: a text claim must be at most 64 bytes/],
      [{ posture: { os: '\ud800' } }, /^knock\.posture\["os"\]: a text claim/],
      [{ posture: { n: 0.5 } }, /^knock\.posture\["n"\]: a number claim must be a safe integer/],
      [{ posture: { n: 2 ** 53 } }, /a number claim must be a safe integer/],
      [
        { posture: { n: null as unknown as PostureValue } },
        /expected text, an integer or a boolean, got object/,
      ],
    ];
    for (const [change, message] of cases) {
      assert.throws(
        () => encodeKnockBody({ ...knock, ...change }),
        (error: unknown) => error instanceof KnockError && message.test(error.message),
        `${JSON.stringify(change)} should fail with ${message}`,
      );
    }
  });
});

describe('parseAccess', () => {
  test('accepts exactly PROTO/PORT', () => {
    assert.deepEqual(parseAccess('tcp/22'), { protocol: 'tcp', port: 22 });
    assert.deepEqual(parseAccess('udp/53'), { protocol: 'udp', port: 53 });
    assert.deepEqual(parseAccess('tcp/1'), { protocol: 'tcp', port: 1 });
    assert.deepEqual(parseAccess('udp/65535'), { protocol: 'udp', port: 65535 });
    for (const bad of [
      '',
      'tcp',
      'tcp/',
      'tcp/0',
      'tcp/65536',
      'tcp/022',
      'TCP/22',
      'tcp/22 ',
      ' tcp/22',
      'icmp/1',
    ]) {
      assert.equal(parseAccess(bad), null, bad);
    }
    assert.equal(parseAccess('tcp/1234567890'), null);
    assert.equal(parseAccess(22 as unknown as string), null);
  });
});

describe('strict body decoding', () => {
  test('accepts the valid body', () => {
    assert.deepEqual(decodeKnockBody(validBody), knock);
  });

  test('accepts a service name (key 7) and encodes it the same way', () => {
    const body = map([...fields(), [uint(7), tstr('db.main')]]);
    assert.deepEqual(decodeKnockBody(body), { ...knock, service: 'db.main' });
    assert.deepEqual(encodeKnockBody({ ...knock, service: 'db.main' }), body);
    assert.throws(() => encodeKnockBody({ ...knock, service: 'no spaces' }), /knock\.service/);
  });

  const rejects: [string, Buffer][] = [
    ['empty', Buffer.alloc(0)],
    ['an array', cat(head(4, 1), uint(1))],
    ['a tag before the map', cat(Buffer.from([0xd9, 0xd9, 0xf7]), validBody)],
    ['an indefinite-length map', cat(Buffer.from([0xbf]), ...fields().flat(), Buffer.from([0xff]))],
    ['a trailing byte', cat(validBody, Buffer.from([0]))],
    ['a map count one too high', map(fields(), 5)],
    ['a map count one too low', map(fields(), 3)],
    ['keys out of order', map([fields()[1]!, fields()[0]!, ...fields().slice(2)])],
    ['a key twice', map([...fields().slice(0, 3), fields()[2]!, fields()[3]!])],
    ['an unknown key 8', map([...fields(), [uint(8), uint(0)]])],
    ['a service as a number', map([...fields(), [uint(7), uint(0)]])],
    ['an empty service name', map([...fields(), [uint(7), tstr('')]])],
    ['a service name with a slash', map([...fields(), [uint(7), tstr('a/b')]])],
    ['a 65-byte service name', map([...fields(), [uint(7), tstr('a'.repeat(65))]])],
    ['key 1 missing', map(fields({ 1: null }))],
    ['key 2 missing', map(fields({ 2: null }))],
    ['key 3 missing', map(fields({ 3: null }))],
    ['key 5 missing', map(fields({ 5: null }))],
    ['a text key', map([[tstr('1'), bstr(ID)], ...fields().slice(1)])],
    ['a non-shortest key', map([[Buffer.from([0x18, 0x01]), bstr(ID)], ...fields().slice(1)])],
    ['a 15-byte identity id', map(fields({ 1: bstr(Buffer.alloc(15)) }))],
    ['an identity id as text', map(fields({ 1: tstr('a'.repeat(16)) }))],
    ['a 17-byte nonce', map(fields({ 3: bstr(Buffer.alloc(17)) }))],
    ['a non-shortest byte string head', map(fields({ 3: cat(Buffer.from([0x58, 16]), NONCE) }))],
    [
      'a non-shortest timestamp',
      map(fields({ 2: cat(Buffer.from([0x1b]), Buffer.alloc(7), Buffer.from([5])) })),
    ],
    ['a non-shortest small timestamp', map(fields({ 2: Buffer.from([0x18, 0x05]) }))],
    ['a timestamp beyond 2^53', map(fields({ 2: Buffer.from('1b0020000000000000', 'hex') }))],
    ['a float timestamp', map(fields({ 2: Buffer.from('fb4279aa4b64500000', 'hex') }))],
    ['a negative timestamp', map(fields({ 2: head(1, 5) }))],
    ['a tagged timestamp', map(fields({ 2: cat(Buffer.from([0xc1]), uint(TIME)) }))],
    [
      'an indefinite byte string',
      map(fields({ 3: cat(Buffer.from([0x5f]), bstr(NONCE), Buffer.from([0xff])) })),
    ],
    ['a 5-byte claimed source', map(fields({ 4: bstr(Buffer.alloc(5)) }))],
    ['an IPv4-mapped claimed source', map(fields({ 4: bstr(ipAddressToBytes('::ffff:1.2.3.4')!) }))],
    ['a claimed source as text', map(fields({ 4: tstr('1.2.3.4') }))],
    ['access in capitals', map(fields({ 5: tstr('TCP/22') }))],
    ['access with a leading zero', map(fields({ 5: tstr('tcp/022') }))],
    ['access to port 0', map(fields({ 5: tstr('tcp/0') }))],
    ['access as bytes', map(fields({ 5: bstr(Buffer.from('tcp/22')) }))],
    ['access too long', map(fields({ 5: tstr('tcp/22222222') }))],
    ['an empty posture', map(fields({ 6: map([]) }))],
    [
      '17 posture claims',
      map(
        fields({
          6: map(Array.from({ length: 17 }, (_, i) => [tstr(String.fromCharCode(65 + i)), uint(i)])),
        }),
      ),
    ],
    [
      'posture keys out of order',
      map(
        fields({
          6: map([
            [tstr('b'), uint(1)],
            [tstr('a'), uint(1)],
          ]),
        }),
      ),
    ],
    [
      'posture keys shorter after longer',
      map(
        fields({
          6: map([
            [tstr('aa'), uint(1)],
            [tstr('b'), uint(1)],
          ]),
        }),
      ),
    ],
    [
      'a posture key twice',
      map(
        fields({
          6: map([
            [tstr('a'), uint(1)],
            [tstr('a'), uint(2)],
          ]),
        }),
      ),
    ],
    ['an empty posture key', map(fields({ 6: map([[tstr(''), uint(1)]]) }))],
    ['a 33-byte posture key', map(fields({ 6: map([[tstr('k'.repeat(33)), uint(1)]]) }))],
    ['a 65-byte posture text', map(fields({ 6: map([[tstr('k'), tstr('v'.repeat(65))]]) }))],
    ['a posture float', map(fields({ 6: map([[tstr('k'), Buffer.from('f93c00', 'hex')]]) }))],
    ['a posture null', map(fields({ 6: map([[tstr('k'), Buffer.from([0xf6])]]) }))],
    ['a posture undefined', map(fields({ 6: map([[tstr('k'), Buffer.from([0xf7])]]) }))],
    ['a posture array', map(fields({ 6: map([[tstr('k'), cat(head(4, 0))]]) }))],
    ['a nested posture map', map(fields({ 6: map([[tstr('k'), map([])]]) }))],
    ['posture bytes', map(fields({ 6: map([[tstr('k'), bstr(Buffer.alloc(1))]]) }))],
    [
      'a posture integer below -2^53+1',
      map(fields({ 6: map([[tstr('k'), Buffer.from('3b001fffffffffffff', 'hex')]]) })),
    ],
    ['a posture integer key', map(fields({ 6: map([[uint(1), uint(1)]]) }))],
    [
      'invalid UTF-8 in a posture value',
      map(fields({ 6: map([[tstr('k'), Buffer.from([0x62, 0xc3, 0x28])]]) })),
    ],
    [
      'UTF-8 surrogates in a posture key',
      map(fields({ 6: map([[Buffer.from([0x63, 0xed, 0xa0, 0x80]), uint(1)]]) })),
    ],
    [
      'overlong UTF-8 in access',
      map(fields({ 5: Buffer.from([0x67, 0x74, 0x63, 0x70, 0xc0, 0xaf, 0x32, 0x32]) })),
    ],
    ['a truncated body', validBody.subarray(0, validBody.length - 1)],
  ];
  for (const [what, body] of rejects) {
    test(`rejects ${what}`, () => {
      assert.equal(decodeKnockBody(body), null);
    });
  }

  test('a claim named __proto__ stays a claim', () => {
    const body = map(fields({ 6: map([[tstr('__proto__'), tstr('x')]]) }));
    const decoded = decodeKnockBody(body)!;
    assert.deepEqual(Object.keys(decoded.posture!), ['__proto__']);
    assert.equal(Object.getPrototypeOf(decoded.posture), Object.prototype);
    assert.deepEqual(encodeKnockBody(decoded), body);
  });
});

describe('sealed knock [body, signature]', () => {
  const signature = randomBytes(64);

  test('roundtrips, and the body is the exact bytes', () => {
    const decoded = decodeSealedKnock(encodeSealedKnock(validBody, signature));
    assert.ok(decoded);
    assert.deepEqual(decoded.body, validBody);
    assert.deepEqual(decoded.signature, signature);
    assert.deepEqual(decoded.knock, knock);
  });

  test('any standard CBOR decoder reads it', () => {
    const plain = new Decoder({ mapsAsObjects: false, useRecords: false }).decode(
      encodeSealedKnock(validBody, signature),
    );
    assert.ok(Array.isArray(plain) && plain.length === 2);
    const body = new Decoder({ mapsAsObjects: false, useRecords: false }).decode(plain[0]) as Map<
      number,
      unknown
    >;
    assert.deepEqual([...body.keys()], [1, 2, 3, 5]);
    assert.equal(body.get(5), 'tcp/22');
  });

  const rejects: [string, Buffer][] = [
    ['a 63-byte signature', cat(head(4, 2), bstr(validBody), bstr(signature.subarray(1)))],
    ['a 65-byte signature', cat(head(4, 2), bstr(validBody), bstr(cat(signature, Buffer.alloc(1))))],
    ['three items', cat(head(4, 3), bstr(validBody), bstr(signature), uint(0))],
    ['one item', cat(head(4, 1), bstr(validBody))],
    ['a trailing byte', cat(head(4, 2), bstr(validBody), bstr(signature), Buffer.from([0]))],
    ['the body inline rather than as bytes', cat(head(4, 2), validBody, bstr(signature))],
    ['an indefinite array', cat(Buffer.from([0x9f]), bstr(validBody), bstr(signature), Buffer.from([0xff]))],
    ['a bad body', cat(head(4, 2), bstr(cat(validBody, Buffer.from([0]))), bstr(signature))],
    ['a map', cat(head(5, 1), bstr(validBody), bstr(signature))],
  ];
  for (const [what, plaintext] of rejects) {
    test(`rejects ${what}`, () => {
      assert.equal(decodeSealedKnock(plaintext), null);
    });
  }
});

// ---- properties ----

describe('properties', () => {
  test('every knock roundtrips, and re-encodes to the same bytes', () => {
    fc.assert(
      fc.property(knockArb, (k) => {
        const body = encodeKnockBody(k);
        const decoded = decodeKnockBody(body);
        assert.ok(decoded);
        assertSameKnock(decoded, k);
        assert.deepEqual(encodeKnockBody(decoded), body);
      }),
      { numRuns: 500 },
    );
  });

  test('a mutated body is refused, or is itself a canonical encoding', () => {
    const mutation = fc.oneof(
      fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.nat(7) }),
      fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.nat(255) }),
      fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), value: fc.nat(255) }),
      fc.record({ kind: fc.constant('delete' as const), at: fc.nat() }),
    );
    fc.assert(
      fc.property(knockArb, fc.array(mutation, { minLength: 1, maxLength: 3 }), (k, mutations) => {
        let body = encodeKnockBody(k);
        for (const m of mutations) {
          const at = m.at % (body.length + (m.kind === 'insert' ? 1 : 0));
          if (m.kind === 'flip') body[at]! ^= 1 << m.bit;
          else if (m.kind === 'set') body[at] = m.value;
          else if (m.kind === 'insert')
            body = cat(body.subarray(0, at), Buffer.from([m.value]), body.subarray(at));
          else body = cat(body.subarray(0, at), body.subarray(at + 1));
        }
        const decoded = decodeKnockBody(body);
        if (decoded) assert.deepEqual(encodeKnockBody(decoded), body);
      }),
      { numRuns: 1000 },
    );
  });

  test('random bytes never throw', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
        const buffer = Buffer.from(bytes);
        decodeKnockBody(buffer);
        decodeSealedKnock(buffer);
      }),
      { numRuns: 1000 },
    );
  });
});
