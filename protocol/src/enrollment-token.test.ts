import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import { Encoder } from 'cbor-x';
import fc from 'fast-check';
import {
  createEnrollmentToken,
  ENROLLMENT_TOKEN_PREFIX,
  EnrollmentTokenError,
  hashTokenSecret,
  parseEnrollmentToken,
  tokenSecretMatches,
} from './enrollment-token.ts';

const PIN = `sha256/${createHash('sha256').update('a CA key').digest('base64')}`;
const URL_TEXT = 'https://controller.example.org:8443/';
const cbor = new Encoder({
  useRecords: false,
  mapsAsObjects: false,
  tagUint8Array: false,
  variableMapSize: true,
});

function tokenOf(fields: Map<string, unknown>): string {
  return ENROLLMENT_TOKEN_PREFIX + Buffer.from(cbor.encode(fields)).toString('base64url');
}

function validFields(): Map<string, unknown> {
  return new Map<string, unknown>([
    ['kind', 'identity'],
    ['url', URL_TEXT],
    ['pin', createHash('sha256').update('a CA key').digest()],
    ['secret', Buffer.alloc(32, 7)],
  ]);
}

function rejects(text: string, message: RegExp): void {
  assert.throws(
    () => parseEnrollmentToken(text),
    (error: unknown) => {
      assert.ok(error instanceof EnrollmentTokenError, `expected EnrollmentTokenError, got ${String(error)}`);
      assert.match(error.message, message);
      return true;
    },
  );
}

describe('enrollment tokens', () => {
  test('round-trip: the parsed token carries the URL, pin, kind and the secret whose hash was returned', () => {
    for (const kind of ['identity', 'gateway'] as const) {
      const { token, secretHash } = createEnrollmentToken({ url: URL_TEXT, pin: PIN, kind });
      assert.ok(token.startsWith('umbra1.'));
      assert.match(token, /^umbra1\.[A-Za-z0-9_-]+$/);
      assert.ok(token.length < 250, `${token.length} characters`);
      const parsed = parseEnrollmentToken(`  ${token}\n`);
      assert.equal(parsed.kind, kind);
      assert.equal(parsed.url, URL_TEXT);
      assert.equal(parsed.pin, PIN);
      assert.equal(parsed.secret.length, 32);
      assert.equal(hashTokenSecret(parsed.secret), secretHash);
      assert.match(secretHash, /^[0-9a-f]{64}$/);
      assert.equal(tokenSecretMatches(parsed.secret, secretHash), true);
      assert.equal(tokenSecretMatches(Buffer.alloc(32), secretHash), false);
      assert.equal(tokenSecretMatches(parsed.secret, 'zz'), false);
    }
  });

  test('every token has a fresh secret', () => {
    const hashes = new Set<string>();
    for (let i = 0; i < 100; i++)
      hashes.add(createEnrollmentToken({ url: URL_TEXT, pin: PIN, kind: 'identity' }).secretHash);
    assert.equal(hashes.size, 100);
  });

  test('creating refuses a non-https URL, a URL with credentials, a bad pin and a bad kind', () => {
    assert.throws(
      () => createEnrollmentToken({ url: 'http://controller:8080', pin: PIN, kind: 'identity' }),
      /url: "http:\/\/controller:8080" uses http; the controller URL must be https/,
    );
    assert.throws(
      () => createEnrollmentToken({ url: 'https://u:p@controller', pin: PIN, kind: 'identity' }),
      /carries credentials/,
    );
    assert.throws(
      () => createEnrollmentToken({ url: 'controller', pin: PIN, kind: 'identity' }),
      /url: "controller" is not a URL/,
    );
    assert.throws(
      () => createEnrollmentToken({ url: URL_TEXT, pin: 'sha1/abc', kind: 'identity' }),
      /pin: "sha1\/abc" is not a CA pin/,
    );
    assert.throws(
      () => createEnrollmentToken({ url: URL_TEXT, pin: PIN, kind: 'admin' as 'identity' }),
      /kind: "admin" is neither "identity" nor "gateway"/,
    );
  });

  test('a wrong prefix says what a token looks like', () => {
    const { token } = createEnrollmentToken({ url: URL_TEXT, pin: PIN, kind: 'identity' });
    rejects('', /not an Umbra enrollment token \(it should start with umbra1\.\)/);
    rejects(token.replace('umbra1.', 'umbra2.'), /it should start with umbra1\./);
    rejects(token.slice(1), /it should start with umbra1\./);
  });

  test('truncated and altered tokens are refused with a clear reason', () => {
    const { token } = createEnrollmentToken({ url: URL_TEXT, pin: PIN, kind: 'identity' });
    rejects('umbra1.', /not valid base64url/);
    rejects(token.slice(0, -10), /cut short or altered/);
    rejects(`${token.slice(0, 40)}!${token.slice(41)}`, /not valid base64url/);
    // Every single-character change either fails to parse or yields a token that differs visibly.
    for (let i = ENROLLMENT_TOKEN_PREFIX.length; i < token.length; i += 7) {
      const altered = token.slice(0, i) + (token[i] === 'A' ? 'B' : 'A') + token.slice(i + 1);
      try {
        const parsed = parseEnrollmentToken(altered);
        const original = parseEnrollmentToken(token);
        assert.notDeepEqual(parsed, original);
      } catch (error) {
        assert.ok(error instanceof EnrollmentTokenError);
      }
    }
  });

  test('crafted tokens name the field that is wrong', () => {
    const http = validFields();
    http.set('url', 'http://controller.example.org');
    rejects(tokenOf(http), /url: .* uses http; the controller URL must be https/);
    const shortSecret = validFields();
    shortSecret.set('secret', Buffer.alloc(16));
    rejects(tokenOf(shortSecret), /field "secret" must be 32 bytes, got 16 bytes/);
    const noPin = validFields();
    noPin.delete('pin');
    rejects(tokenOf(noPin), /field "pin" is missing/);
    const extra = validFields();
    extra.set('admin', true);
    rejects(tokenOf(extra), /unknown field "admin"/);
    const kind = validFields();
    kind.set('kind', 7);
    rejects(tokenOf(kind), /kind: number is neither/);
    rejects(
      ENROLLMENT_TOKEN_PREFIX + Buffer.from(cbor.encode([1, 2])).toString('base64url'),
      /not a field map/,
    );
    rejects(`${tokenOf(validFields())}AA`, /cut short or altered|not in canonical form/);
    rejects(ENROLLMENT_TOKEN_PREFIX + 'A'.repeat(5000), /5007 characters, more than any token/);
    assert.equal(parseEnrollmentToken(tokenOf(validFields())).url, URL_TEXT);
  });

  test('property: arbitrary text never throws anything but EnrollmentTokenError', () => {
    const check = (text: string) => {
      try {
        parseEnrollmentToken(text);
      } catch (error) {
        if (!(error instanceof EnrollmentTokenError)) throw error;
      }
    };
    fc.assert(fc.property(fc.string({ maxLength: 300 }), check), { numRuns: 2000 });
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) =>
        check(ENROLLMENT_TOKEN_PREFIX + Buffer.from(bytes).toString('base64url')),
      ),
      { numRuns: 2000 },
    );
    fc.assert(
      fc.property(fc.anything(), (value) => {
        let encoded: Buffer;
        try {
          encoded = Buffer.from(cbor.encode(value));
        } catch {
          return; // not every JS value has a CBOR form
        }
        check(ENROLLMENT_TOKEN_PREFIX + encoded.toString('base64url'));
      }),
      { numRuns: 1000 },
    );
    const valid = validFields();
    fc.assert(
      fc.property(fc.constantFrom(...valid.keys()), fc.anything(), (key, value) => {
        const fields = new Map(valid);
        fields.set(key, value);
        let token: string;
        try {
          token = tokenOf(fields);
        } catch {
          return; // cbor-x cannot encode `value`: nothing to parse
        }
        check(token);
      }),
      { numRuns: 1000 },
    );
  });
});
