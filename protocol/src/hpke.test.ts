import assert from 'node:assert/strict';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import {
  type AeadEncryptionContext,
  type AeadInterface,
  CipherSuite,
  DhkemX25519HkdfSha256,
  HkdfSha256,
} from '@hpke/core';
import {
  deriveX25519KeyPair,
  HPKE_SUITE_ID,
  HpkeRecipient,
  hpkeSeal,
  labeledExpand,
  setupBaseSender,
} from './hpke.ts';

// ---- RFC 9180 Appendix A.2 vectors ----

type Fields = Record<string, string>;
interface VectorSection {
  title: string;
  setup: Fields;
  encryptions: Fields[];
  exports: Fields[];
}

/**
 * Reads the RFC's own text: "### <mode> Setup Information" sections, each with ~~~ blocks of
 * "name: hex" lines whose long values wrap onto bare hex lines; records are separated by blank lines.
 */
function parseVectors(text: string): VectorSection[] {
  const sections: VectorSection[] = [];
  let section: VectorSection | undefined;
  let block: 'setup' | 'encryptions' | 'exports' = 'setup';
  let inFence = false;
  let record: Fields | undefined;
  let lastKey = '';
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd();
    const heading = /^###\s+(.*)$/.exec(line);
    if (heading && !line.startsWith('####')) {
      section = { title: heading[1]!, setup: {}, encryptions: [], exports: [] };
      sections.push(section);
      block = 'setup';
      continue;
    }
    if (line.startsWith('#### Encryptions')) block = 'encryptions';
    else if (line.startsWith('#### Exported Values')) block = 'exports';
    if (line === '~~~') {
      inFence = !inFence;
      record = undefined;
      continue;
    }
    if (!inFence || !section) continue;
    if (line === '') {
      record = undefined;
      continue;
    }
    const field = /^([A-Za-z_ ]+):\s*([0-9a-f]*)$/.exec(line);
    if (field) {
      if (!record) {
        record = block === 'setup' ? section.setup : {};
        if (block === 'encryptions') section.encryptions.push(record);
        if (block === 'exports') section.exports.push(record);
      }
      lastKey = field[1]!;
      record[lastKey] = field[2]!;
    } else if (/^[0-9a-f]+$/.test(line) && record) {
      record[lastKey] += line; // a wrapped hex value continues
    } else {
      throw new Error(`vector file: cannot read line ${JSON.stringify(line)}`);
    }
  }
  return sections;
}

const vectorText = readFileSync(
  new URL('../test/fixtures/rfc9180-a2-x25519-sha256-chacha20poly1305.txt', import.meta.url),
  'utf8',
);
const sections = parseVectors(vectorText);
const base = sections.find((s) => s.setup.mode === '0');
const hex = (fields: Fields, name: string): Buffer => {
  const value = fields[name];
  assert.ok(value !== undefined, `vector field ${name} is missing`);
  return Buffer.from(value, 'hex');
};

describe('RFC 9180 A.2 base mode vectors', () => {
  assert.ok(base, 'the vector file has a base-mode (mode: 0) section');
  const v = base.setup;
  const info = hex(v, 'info');

  test('the vector file parses into the four modes, and this is our suite', () => {
    assert.deepEqual(
      sections.map((s) => s.setup.mode),
      ['0', '1', '2', '3'],
    );
    assert.equal(v.kem_id, '32');
    assert.equal(v.kdf_id, '1');
    assert.equal(v.aead_id, '3');
    assert.ok(base.encryptions.length >= 1);
    assert.equal(base.encryptions[0]!['sequence number'], '0');
  });

  test('DeriveKeyPair gives skEm/pkEm and skRm/pkRm', () => {
    const e = deriveX25519KeyPair(hex(v, 'ikmE'));
    assert.deepEqual(e.privateKey, hex(v, 'skEm'));
    assert.deepEqual(e.publicKey, hex(v, 'pkEm'));
    const r = deriveX25519KeyPair(hex(v, 'ikmR'));
    assert.deepEqual(r.privateKey, hex(v, 'skRm'));
    assert.deepEqual(r.publicKey, hex(v, 'pkRm'));
  });

  test('SetupBaseS gives enc, shared_secret and the whole key schedule', () => {
    const s = setupBaseSender(hex(v, 'pkRm'), info, hex(v, 'ikmE'));
    assert.deepEqual(s.enc, hex(v, 'enc'));
    assert.deepEqual(s.sharedSecret, hex(v, 'shared_secret'));
    assert.deepEqual(s.keyScheduleContext, hex(v, 'key_schedule_context'));
    assert.deepEqual(s.secret, hex(v, 'secret'));
    assert.deepEqual(s.key, hex(v, 'key'));
    assert.deepEqual(s.baseNonce, hex(v, 'base_nonce'));
    assert.deepEqual(s.exporterSecret, hex(v, 'exporter_secret'));
  });

  test('exported values follow from exporter_secret', () => {
    assert.equal(base.exports.length, 3);
    for (const e of base.exports) {
      const value = labeledExpand(
        HPKE_SUITE_ID,
        hex(v, 'exporter_secret'),
        'sec',
        hex(e, 'exporter_context'),
        Number(e.L),
      );
      assert.deepEqual(value, hex(e, 'exported_value'));
    }
  });

  test('seal with ikmE gives ct of sequence 0', () => {
    const e = base.encryptions[0]!;
    assert.deepEqual(hex(e, 'nonce'), hex(v, 'base_nonce'));
    const sealed = hpkeSeal(hex(v, 'pkRm'), info, hex(e, 'aad'), hex(e, 'pt'), hex(v, 'ikmE'));
    assert.deepEqual(sealed.enc, hex(v, 'enc'));
    assert.deepEqual(sealed.ciphertext, hex(e, 'ct'));
  });

  test('open of sequence 0 gives pt', () => {
    const e = base.encryptions[0]!;
    const recipient = new HpkeRecipient(hex(v, 'skRm'), info);
    assert.deepEqual(recipient.publicKey, hex(v, 'pkRm'));
    assert.deepEqual(recipient.open(hex(v, 'enc'), hex(e, 'aad'), hex(e, 'ct')), hex(e, 'pt'));
    // The other sequence numbers use other nonces, which a single-shot open never does.
    const e1 = base.encryptions[1]!;
    assert.equal(recipient.open(hex(v, 'enc'), hex(e1, 'aad'), hex(e1, 'ct')), null);
  });
});

// ---- failure behaviour ----

describe('HpkeRecipient.open rejects without throwing', () => {
  const info = Buffer.from('test info');
  const aad = Buffer.from([1]);
  const recipient = new HpkeRecipient(randomBytes(32), info);
  const sealed = hpkeSeal(recipient.publicKey, info, aad, Buffer.from('hello'));

  test('a good message opens', () => {
    assert.deepEqual(recipient.open(sealed.enc, aad, sealed.ciphertext), Buffer.from('hello'));
  });

  test('any flipped bit of enc or ciphertext', () => {
    for (const [field, bytes] of [
      ['enc', sealed.enc],
      ['ciphertext', sealed.ciphertext],
    ] as const) {
      for (let bit = 0; bit < bytes.length * 8; bit++) {
        const copy = Buffer.from(bytes);
        copy[bit >> 3]! ^= 1 << (bit & 7);
        const result =
          field === 'enc'
            ? recipient.open(copy, aad, sealed.ciphertext)
            : recipient.open(sealed.enc, aad, copy);
        assert.equal(result, null, `${field} bit ${bit}`);
      }
    }
  });

  test('other aad, other info, other key', () => {
    assert.equal(recipient.open(sealed.enc, Buffer.from([2]), sealed.ciphertext), null);
    assert.equal(new HpkeRecipient(randomBytes(32), info).open(sealed.enc, aad, sealed.ciphertext), null);
  });

  test('wrong lengths', () => {
    assert.equal(recipient.open(sealed.enc.subarray(1), aad, sealed.ciphertext), null);
    assert.equal(recipient.open(Buffer.concat([sealed.enc, Buffer.alloc(1)]), aad, sealed.ciphertext), null);
    for (let n = 0; n < sealed.ciphertext.length; n++) {
      assert.equal(recipient.open(sealed.enc, aad, sealed.ciphertext.subarray(0, n)), null, `length ${n}`);
    }
    assert.equal(recipient.open(sealed.enc, aad, Buffer.concat([sealed.ciphertext, Buffer.alloc(1)])), null);
  });

  test('low-order and garbage ephemeral keys', () => {
    // Curve25519 points of small order, as listed in RFC 7748 §6.1 implementations (and their
    // non-canonical twins): each makes the shared secret all zeros.
    const lowOrder = [
      '0000000000000000000000000000000000000000000000000000000000000000',
      '0100000000000000000000000000000000000000000000000000000000000000',
      'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800',
      '5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157',
      'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
      'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
      'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
    ];
    for (const point of lowOrder) {
      assert.equal(recipient.open(Buffer.from(point, 'hex'), aad, sealed.ciphertext), null, point);
    }
    for (let i = 0; i < 50; i++) {
      assert.equal(recipient.open(randomBytes(32), aad, randomBytes(40)), null);
    }
  });

  test('sealing to a low-order key is refused', () => {
    assert.throws(() => hpkeSeal(Buffer.alloc(32), info, aad, Buffer.from('x')), /low-order/);
  });
});

// ---- interoperability with @hpke/core ----

/**
 * @hpke/core ships no ChaCha20-Poly1305 (that lives in @hpke/chacha20poly1305, which we do not
 * depend on), but it takes any AeadInterface. This one wraps node:crypto — whose ChaCha20-Poly1305
 * the RFC vectors above already pin — so the interop test exercises @hpke/core's own X25519 DHKEM,
 * HKDF key schedule and nonce handling against ours.
 */
class NodeChacha20Poly1305 implements AeadInterface {
  readonly id = 0x0003 as const;
  readonly keySize = 32;
  readonly nonceSize = 12;
  readonly tagSize = 16;
  createEncryptionContext(key: ArrayBufferLike | ArrayBufferView): AeadEncryptionContext {
    const k = Buffer.from(toBytes(key));
    return {
      async seal(iv, data, aad) {
        const c = createCipheriv('chacha20-poly1305', k, toBytes(iv), { authTagLength: 16 });
        const plaintext = toBytes(data);
        c.setAAD(toBytes(aad), { plaintextLength: plaintext.length });
        const out = Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
        return new Uint8Array(out).buffer;
      },
      async open(iv, data, aad) {
        const bytes = toBytes(data);
        const d = createDecipheriv('chacha20-poly1305', k, toBytes(iv), { authTagLength: 16 });
        d.setAAD(toBytes(aad), { plaintextLength: bytes.length - 16 });
        d.setAuthTag(bytes.subarray(bytes.length - 16));
        const out = Buffer.concat([d.update(bytes.subarray(0, bytes.length - 16)), d.final()]);
        return new Uint8Array(out).buffer;
      },
    };
  }
}

function toBytes(data: ArrayBufferLike | ArrayBufferView): Uint8Array {
  return ArrayBuffer.isView(data)
    ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
    : new Uint8Array(data as ArrayBuffer);
}

describe('interoperability with @hpke/core', () => {
  const suite = new CipherSuite({
    kem: new DhkemX25519HkdfSha256(),
    kdf: new HkdfSha256(),
    aead: new NodeChacha20Poly1305(),
  });
  const info = Buffer.from('umbra spa v1');
  const aad = Buffer.from([1]);

  test('both derive the same key pair from one ikm', async () => {
    const ikm = randomBytes(32);
    const theirs = await suite.kem.deriveKeyPair(ikm);
    const ours = deriveX25519KeyPair(ikm);
    assert.deepEqual(Buffer.from(await suite.kem.serializePublicKey(theirs.publicKey)), ours.publicKey);
    assert.deepEqual(Buffer.from(await suite.kem.serializePrivateKey(theirs.privateKey)), ours.privateKey);
  });

  test('sealed by @hpke/core, opened by HpkeRecipient', async () => {
    for (let i = 0; i < 5; i++) {
      const keys = deriveX25519KeyPair(randomBytes(32));
      const recipientPublicKey = await suite.kem.deserializePublicKey(keys.publicKey);
      const plaintext = randomBytes(i * 50);
      const sealed = await suite.seal({ recipientPublicKey, info }, plaintext, aad);
      const opened = new HpkeRecipient(keys.privateKey, info).open(
        Buffer.from(sealed.enc),
        aad,
        Buffer.from(sealed.ct),
      );
      assert.deepEqual(opened, plaintext);
    }
  });

  test('sealed by hpkeSeal, opened by @hpke/core', async () => {
    for (let i = 0; i < 5; i++) {
      const keys = deriveX25519KeyPair(randomBytes(32));
      const recipientKey = await suite.kem.deserializePrivateKey(keys.privateKey);
      const plaintext = randomBytes(i * 50);
      const sealed = hpkeSeal(keys.publicKey, info, aad, plaintext);
      const opened = await suite.open({ recipientKey, enc: sealed.enc, info }, sealed.ciphertext, aad);
      assert.deepEqual(Buffer.from(opened), plaintext);
    }
  });
});
