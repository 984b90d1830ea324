import assert from 'node:assert/strict';
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  randomBytes,
  sign,
  verify,
} from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  decodeKey,
  ed25519PublicKeyObject,
  encodeKey,
  formatGatewayKeyFile,
  formatIdentityFile,
  gatewayKeyIdOf,
  generateGatewayKeyPair,
  generateIdentity,
  identityIdOf,
  KeyFormatError,
  parseGatewayKeyFile,
  parseIdentityFile,
  SecretFileError,
  writeSecretFile,
} from './keys.ts';

describe('key text', () => {
  test('encodes 32 bytes as 44 characters of base64 and back', () => {
    for (let i = 0; i < 50; i++) {
      const raw = randomBytes(32);
      const text = encodeKey(raw);
      assert.equal(text.length, 44);
      assert.match(text, /^[A-Za-z0-9+/]{43}=$/);
      assert.deepEqual(decodeKey(text, 'test key'), raw);
    }
  });

  test('matches the WireGuard convention (standard base64)', () => {
    const raw = Buffer.alloc(32, 0xfb);
    assert.equal(encodeKey(raw), raw.toString('base64'));
    assert.ok(encodeKey(raw).includes('+') || encodeKey(raw).includes('/'));
  });

  test('encodeKey refuses other lengths', () => {
    assert.throws(() => encodeKey(Buffer.alloc(31)), /expected a 32-byte key, got 31 bytes/);
  });

  test('decodeKey names the input and what was expected', () => {
    const cases: [string, RegExp][] = [
      ['', /got 0 characters/],
      ['abc', /got 3 characters/],
      [`${'A'.repeat(43)}`, /got 43 characters/],
      [`${'A'.repeat(44)}`, /outside the base64 alphabet/], // no padding
      [`${'-'.repeat(43)}=`, /outside the base64 alphabet/], // base64url
      [`${'A'.repeat(42)}B=`, /non-canonical/], // nonzero bits past the 32nd byte
      [` ${'A'.repeat(42)}=`, /outside the base64 alphabet/],
    ];
    for (const [text, reason] of cases) {
      assert.throws(
        () => decodeKey(text, 'gateway key'),
        (error: unknown) => {
          assert.ok(error instanceof KeyFormatError);
          assert.match(
            error.message,
            /^gateway key: expected 44 characters of base64 encoding 32 bytes, got /,
          );
          assert.match(error.message, reason);
          return true;
        },
        JSON.stringify(text),
      );
    }
  });

  test('decodeKey never quotes the key text', () => {
    const secret = `${randomBytes(32).toString('base64').slice(0, 42)}B=`;
    assert.throws(
      () => decodeKey(secret, 'k'),
      (error: Error) => !error.message.includes(secret.slice(0, 20)),
    );
  });

  test('decodeKey refuses non-strings (from JSON) by type', () => {
    assert.throws(() => decodeKey(42 as unknown as string, 'k'), /got a number/);
    assert.throws(() => decodeKey(null as unknown as string, 'k'), /got null/);
  });
});

describe('ids', () => {
  test('identity id is the first 16 bytes of SHA-256("umbra identity id v1" || key)', () => {
    const key = Buffer.alloc(32, 7);
    const id = identityIdOf(key);
    assert.equal(id.length, 16);
    const expected = createHash('sha256').update('umbra identity id v1').update(key).digest().subarray(0, 16);
    assert.deepEqual(id, expected);
  });

  test('gateway key id uses its own label', () => {
    const key = Buffer.alloc(32, 7);
    const expected = createHash('sha256')
      .update('umbra gateway key id v1')
      .update(key)
      .digest()
      .subarray(0, 16);
    assert.deepEqual(gatewayKeyIdOf(key), expected);
    assert.notDeepEqual(gatewayKeyIdOf(key), identityIdOf(key));
  });

  test('ids refuse keys of the wrong length', () => {
    assert.throws(() => identityIdOf(Buffer.alloc(33)), /expected 32 bytes/);
    assert.throws(() => gatewayKeyIdOf(Buffer.alloc(0)), /expected 32 bytes/);
  });
});

describe('key generation', () => {
  test('gateway key pair is raw X25519', () => {
    const { privateKey, publicKey } = generateGatewayKeyPair();
    assert.equal(privateKey.length, 32);
    assert.equal(publicKey.length, 32);
    // Both sides of a DH agree, so the halves belong together.
    const other = generateGatewayKeyPair();
    const spki = (raw: Buffer) =>
      createPublicKey({
        key: Buffer.concat([Buffer.from('302a300506032b656e032100', 'hex'), raw]),
        format: 'der',
        type: 'spki',
      });
    const pkcs8 = (raw: Buffer) =>
      createPrivateKey({
        key: Buffer.concat([Buffer.from('302e020100300506032b656e04220420', 'hex'), raw]),
        format: 'der',
        type: 'pkcs8',
      });
    assert.deepEqual(
      diffieHellman({ privateKey: pkcs8(privateKey), publicKey: spki(other.publicKey) }),
      diffieHellman({ privateKey: pkcs8(other.privateKey), publicKey: spki(publicKey) }),
    );
  });

  test('identity is Ed25519 with a 32-byte public key and its id', () => {
    const identity = generateIdentity();
    assert.equal(identity.privateKey.asymmetricKeyType, 'ed25519');
    assert.equal(identity.publicKey.length, 32);
    assert.deepEqual(identity.id, identityIdOf(identity.publicKey));
    const message = Buffer.from('hello');
    const signature = sign(null, message, identity.privateKey);
    assert.ok(verify(null, message, ed25519PublicKeyObject(identity.publicKey), signature));
  });

  test('ed25519PublicKeyObject refuses other lengths', () => {
    assert.throws(() => ed25519PublicKeyObject(Buffer.alloc(31)), /expected 32 raw bytes, got 31/);
  });
});

describe('identity file', () => {
  const identity = generateIdentity();
  const text = formatIdentityFile(identity);
  const path = '/etc/umbra/identity.json';

  test('is one JSON object with a trailing newline', () => {
    assert.ok(text.endsWith('}\n'));
    const parsed = JSON.parse(text);
    assert.deepEqual(Object.keys(parsed), ['umbra', 'version', 'algorithm', 'publicKey', 'privateKey']);
    assert.equal(parsed.umbra, 'identity');
    assert.equal(parsed.version, 1);
    assert.equal(parsed.algorithm, 'ed25519');
    assert.deepEqual(decodeKey(parsed.publicKey, 'x'), identity.publicKey);
  });

  test('roundtrips', () => {
    const back = parseIdentityFile(text, path);
    assert.deepEqual(back.publicKey, identity.publicKey);
    assert.deepEqual(back.id, identity.id);
    const message = Buffer.from('knock');
    assert.ok(
      verify(null, message, ed25519PublicKeyObject(identity.publicKey), sign(null, message, back.privateKey)),
    );
  });

  const edit = (change: (file: Record<string, unknown>) => void) => {
    const file = JSON.parse(text);
    change(file);
    return JSON.stringify(file);
  };
  const other = generateIdentity();
  const otherFile = JSON.parse(formatIdentityFile(other));
  const bad: [string, string, RegExp][] = [
    ['not JSON', '{"umbra": ', /not JSON; expected one JSON object holding an identity/],
    ['an array', '[]', /expected one JSON object, got an array/],
    [
      'wrong kind',
      edit((f) => (f.umbra = 'gateway-key')),
      /field "umbra": expected "identity", got "gateway-key"/,
    ],
    ['no kind', edit((f) => delete f.umbra), /field "umbra": expected "identity", got nothing/],
    ['wrong version', edit((f) => (f.version = 2)), /field "version": expected 1, got 2/],
    [
      'wrong algorithm',
      edit((f) => (f.algorithm = 'x25519')),
      /field "algorithm": expected "ed25519", got "x25519"/,
    ],
    [
      'unknown field',
      edit((f) => (f.comment = 'hi')),
      /field "comment" is unknown in a file holding an identity; remove it/,
    ],
    ['no public key', edit((f) => delete f.publicKey), /field "publicKey" is missing/],
    ['no private key', edit((f) => delete f.privateKey), /field "privateKey" is missing/],
    ['short public key', edit((f) => (f.publicKey = 'AAAA')), /field "publicKey": expected 44 characters/],
    [
      'numeric private key',
      edit((f) => (f.privateKey = 5)),
      /field "privateKey": expected 44 characters.*got a number/,
    ],
    [
      'mismatched keys',
      edit((f) => (f.publicKey = otherFile.publicKey)),
      /"publicKey" does not belong to field "privateKey"/,
    ],
  ];
  for (const [what, input, message] of bad) {
    test(`rejects ${what}, naming the path and field`, () => {
      assert.throws(
        () => parseIdentityFile(input, path),
        (error: unknown) => {
          assert.ok(error instanceof KeyFormatError, String(error));
          assert.ok(error.message.startsWith(`${path}: `), error.message);
          assert.match(error.message, message);
          // No key material in the message.
          for (const key of [JSON.parse(text).privateKey, otherFile.privateKey]) {
            assert.ok(!error.message.includes(key.slice(0, 16)), error.message);
          }
          return true;
        },
      );
    });
  }
});

describe('gateway key file', () => {
  const keys = generateGatewayKeyPair();
  const text = formatGatewayKeyFile(keys);
  const path = '/var/lib/umbra/gateway.key';

  test('is one JSON object with a trailing newline, and roundtrips', () => {
    assert.ok(text.endsWith('}\n'));
    const parsed = JSON.parse(text);
    assert.equal(parsed.umbra, 'gateway-key');
    assert.equal(parsed.algorithm, 'x25519');
    assert.deepEqual(parseGatewayKeyFile(text, path), keys);
  });

  test('rejects an identity file, and a mismatched pair', () => {
    assert.throws(
      () => parseGatewayKeyFile(formatIdentityFile(generateIdentity()), path),
      /^KeyFormatError: \/var\/lib\/umbra\/gateway\.key: field "umbra": expected "gateway-key", got "identity"/,
    );
    const file = JSON.parse(text);
    file.publicKey = encodeKey(generateGatewayKeyPair().publicKey);
    assert.throws(() => parseGatewayKeyFile(JSON.stringify(file), path), /does not belong/);
  });
});

describe('writeSecretFile', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'umbra-keys-test-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('writes the contents with mode 0600, whatever the umask', async () => {
    const previous = process.umask(0o000);
    try {
      const path = join(dir, 'identity.json');
      await writeSecretFile(path, 'secret\n');
      assert.equal(await readFile(path, 'utf8'), 'secret\n');
      assert.equal((await stat(path)).mode & 0o777, 0o600);
    } finally {
      process.umask(previous);
    }
  });

  test('refuses to overwrite, and leaves the old file and no temporary behind', async () => {
    const path = join(dir, 'gateway.key');
    await writeFile(path, 'old');
    await assert.rejects(writeSecretFile(path, 'new'), (error: unknown) => {
      assert.ok(error instanceof SecretFileError);
      assert.equal(error.code, 'EEXIST');
      assert.match(error.message, /gateway\.key already exists; refusing to replace/);
      return true;
    });
    assert.equal(await readFile(path, 'utf8'), 'old');
    assert.deepEqual(
      (await readdir(dir)).filter((name) => name.endsWith('.tmp')),
      [],
    );
  });

  test('overwrites when asked, and the result is 0600 even if the old file was not', async () => {
    const path = join(dir, 'replace.key');
    await writeFile(path, 'old', { mode: 0o644 });
    await writeSecretFile(path, 'new', { overwrite: true });
    assert.equal(await readFile(path, 'utf8'), 'new');
    assert.equal((await stat(path)).mode & 0o777, 0o600);
  });

  test('names the path when the directory is missing', async () => {
    const path = join(dir, 'missing', 'x.key');
    await assert.rejects(
      writeSecretFile(path, 'x'),
      /cannot write .*missing\/x\.key: directory .* does not exist/,
    );
  });
});
