import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { TPM_ALG, TPM_CC, TPM_ECC, TPM_ST } from './constants.ts';
import { Reader, TpmFormatError, Writer } from './marshal.ts';
import { TpmError } from './response-code.ts';
import {
  ecdsaSignatureP1363,
  readAttest,
  readPcrSelections,
  readPublicArea,
  readSignature,
  readTicket,
  type Signature,
  TPM_GENERATED_VALUE,
  writePcrSelections,
  writePublicArea,
  writeSignature,
} from './structures.ts';
import { eccSigningTemplate, rsaStorageTemplate } from './templates.ts';
import { Tpm } from './tpm.ts';
import type { Transport } from './transport.ts';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('Writer', () => {
  test('big-endian integers, TPM2B and nested sizes patched after the body', () => {
    const w = new Writer();
    w.u8(1).u16(0x0203).u32(0x04050607).u64(0x08090a0b0c0d0e0fn).tpm2b(Uint8Array.of(0xaa, 0xbb));
    w.sized16((outer) => outer.u8(0xcc).sized16((inner) => inner.u32(0xdddddddd)));
    assert.equal(hex(w.finish()), '0102030405060708090a0b0c0d0e0f0002aabb0007cc0004dddddddd');
  });

  test('sized32 and patchU32 (the command header)', () => {
    const w = new Writer().u16(0x8001).u32(0).u32(0x17b);
    w.sized32((a) => a.u8(9));
    w.patchU32(2, w.length);
    assert.equal(hex(w.finish()), '80010000000f0000017b0000000109');
  });

  test('grows past its first buffer', () => {
    const w = new Writer();
    for (let i = 0; i < 1000; i++) w.u32(i);
    const r = new Reader(w.finish(), 'test');
    for (let i = 0; i < 1000; i++) assert.equal(r.u32(), i);
    r.end();
  });

  test('refuses values that do not fit', () => {
    assert.throws(() => new Writer().u8(256), RangeError);
    assert.throws(() => new Writer().u16(-1), RangeError);
    assert.throws(() => new Writer().u32(2 ** 32), RangeError);
    assert.throws(() => new Writer().u16(1.5), RangeError);
    assert.throws(() => new Writer().tpm2b(new Uint8Array(0x10000)), RangeError);
  });
});

describe('Reader', () => {
  test('names the thing, the field and the offset when input is short', () => {
    const r = new Reader(Uint8Array.of(0, 5, 1, 2), 'TPM2_Test response');
    assert.throws(
      () => r.tpm2b('digest'),
      (e: unknown) =>
        e instanceof TpmFormatError &&
        e.message === 'TPM2_Test response: digest needs 5 bytes but only 2 are left (at byte 2)',
    );
  });

  test('refuses a TPM2B larger than its type allows, trailing bytes, and counts the input cannot hold', () => {
    assert.throws(
      () => new Reader(Uint8Array.of(0, 65, ...new Uint8Array(65)), 't').tpm2b('d', 64),
      TpmFormatError,
    );
    const r = new Reader(Uint8Array.of(1, 2), 't');
    r.u8();
    assert.throws(() => r.end(), /1 unexpected trailing bytes/);
    assert.throws(
      () => new Reader(Uint8Array.of(0xff, 0xff, 0xff, 0xff), 't').count('list', 4),
      /count is 4294967295/,
    );
    assert.throws(() => new Reader(Uint8Array.of(2), 't').bool('flag'), /not YES/);
  });

  test('a sized structure must be consumed exactly', () => {
    const r = new Reader(Uint8Array.of(0, 3, 1, 2, 3), 't');
    assert.throws(() => r.sized16('inner', (i) => i.u16()), /inner: 1 unexpected trailing bytes/);
    assert.throws(() => new Reader(Uint8Array.of(0, 0), 't').sized16('inner', () => 0), /inner is empty/);
  });
});

describe('structures round-trip', () => {
  test('TPMT_PUBLIC templates', () => {
    for (const template of [eccSigningTemplate('P-256'), eccSigningTemplate('P-384'), rsaStorageTemplate()]) {
      const w = new Writer();
      writePublicArea(w, template);
      const bytes = w.finish();
      const r = new Reader(bytes, 'public');
      assert.deepEqual(readPublicArea(r), template);
      r.end();
    }
  });

  test('TPMT_SIGNATURE and TPML_PCR_SELECTION', () => {
    const signatures: Signature[] = [
      {
        sigAlg: TPM_ALG.ECDSA,
        hash: TPM_ALG.SHA256,
        r: new Uint8Array(32).fill(1),
        s: new Uint8Array(31).fill(2),
      },
      { sigAlg: TPM_ALG.RSASSA, hash: TPM_ALG.SHA256, sig: new Uint8Array(256).fill(3) },
      { sigAlg: TPM_ALG.HMAC, hash: TPM_ALG.SHA384, digest: new Uint8Array(48).fill(4) },
      { sigAlg: TPM_ALG.NULL },
    ];
    for (const signature of signatures) {
      const w = new Writer();
      writeSignature(w, signature);
      assert.deepEqual(readSignature(new Reader(w.finish(), 's'), 'signature'), signature);
    }
    const w = new Writer();
    writePcrSelections(w, [
      { hash: TPM_ALG.SHA256, pcrs: [0, 1, 7, 23] },
      { hash: TPM_ALG.SHA1, pcrs: [] },
    ]);
    assert.equal(hex(w.finish()), '00000002000b03830080000403000000');
    const back = readPcrSelections(new Reader(w.finish(), 'p'), 'sel');
    assert.deepEqual(back, [
      { hash: TPM_ALG.SHA256, pcrs: [0, 1, 7, 23] },
      { hash: TPM_ALG.SHA1, pcrs: [] },
    ]);
  });
});

// Every unmarshaller, fed random bytes and every truncation of valid input: it returns or throws a
// TpmFormatError, never anything else, and never reads past its input.
const UNMARSHALLERS: readonly [string, (r: Reader) => unknown][] = [
  ['TPMT_PUBLIC', (r) => readPublicArea(r)],
  ['TPMT_SIGNATURE', (r) => readSignature(r, 'signature')],
  ['TPML_PCR_SELECTION', (r) => readPcrSelections(r, 'pcrs')],
  ['TPMT_TK_CREATION', (r) => readTicket(r, 'ticket')],
  ['TPM2B_PUBLIC', (r) => r.sized16('outPublic', readPublicArea)],
  ['TPMS_ATTEST', (r) => readAttest(r)],
];

/** A TPMS_ATTEST for a quote of PCRs 0 and 7, or with another magic value. */
function quoteAttest(magic = TPM_GENERATED_VALUE): Uint8Array {
  const w = new Writer();
  w.u32(magic).u16(TPM_ST.ATTEST_QUOTE);
  w.tpm2b(new Uint8Array(34).fill(0xaa)); // qualifiedSigner
  w.tpm2b(new Uint8Array([1, 2, 3])); // extraData
  w.u64(123456n).u32(7).u32(2).u8(1); // clockInfo
  w.u64(0x2000_0001_0000_0000n); // firmwareVersion
  writePcrSelections(w, [{ hash: TPM_ALG.SHA256, pcrs: [0, 7] }]);
  w.tpm2b(new Uint8Array(32).fill(0x55)); // pcrDigest
  return w.finish();
}

describe('TPMS_ATTEST', () => {
  test('a quote is parsed field by field', () => {
    const attest = readAttest(new Reader(quoteAttest(), 'attest'));
    assert.equal(attest.magic, TPM_GENERATED_VALUE);
    assert.deepEqual(attest.qualifiedSigner, new Uint8Array(34).fill(0xaa));
    assert.deepEqual(attest.extraData, new Uint8Array([1, 2, 3]));
    assert.deepEqual(attest.clockInfo, { clock: 123456n, resetCount: 7, restartCount: 2, safe: true });
    assert.equal(attest.firmwareVersion, 0x2000_0001_0000_0000n);
    assert.deepEqual(attest.attested, {
      type: TPM_ST.ATTEST_QUOTE,
      pcrSelect: [{ hash: TPM_ALG.SHA256, pcrs: [0, 7] }],
      pcrDigest: new Uint8Array(32).fill(0x55),
    });
  });

  test('a magic other than TPM_GENERATED_VALUE, and a type other than quote or certify, are refused', () => {
    assert.throws(
      () => readAttest(new Reader(quoteAttest(0xff544348), 'attest')),
      /attest: magic is 0xff544348, not TPM_GENERATED_VALUE/,
    );
    const bytes = quoteAttest();
    bytes[5] = 0x19; // TPM_ST_ATTEST_TIME
    assert.throws(
      () => readAttest(new Reader(bytes, 'attest')),
      /type is ATTEST_TIME, not ATTEST_QUOTE or ATTEST_CERTIFY/,
    );
  });
});

function onlyFormatErrors(fn: () => unknown): void {
  try {
    fn();
  } catch (error) {
    if (!(error instanceof TpmFormatError)) throw error;
  }
}

function validEncodings(): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const t of [eccSigningTemplate('P-256'), rsaStorageTemplate()]) {
    const w = new Writer();
    writePublicArea(w, t);
    out.push(w.finish());
  }
  const s = new Writer();
  writeSignature(s, {
    sigAlg: TPM_ALG.ECDSA,
    hash: TPM_ALG.SHA256,
    r: new Uint8Array(32),
    s: new Uint8Array(32),
  });
  out.push(s.finish());
  const p = new Writer();
  writePcrSelections(p, [{ hash: TPM_ALG.SHA256, pcrs: [0, 7] }]);
  out.push(p.finish());
  out.push(quoteAttest());
  return out;
}

describe('unmarshallers under random and truncated input', () => {
  test('random bytes: only TpmFormatError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
        for (const [, read] of UNMARSHALLERS) onlyFormatErrors(() => read(new Reader(bytes, 'fuzz')));
      }),
      { numRuns: 2000 },
    );
  });

  test('every truncation and single-byte change of valid input: only TpmFormatError', () => {
    for (const valid of validEncodings()) {
      for (let n = 0; n < valid.length; n++) {
        for (const [, read] of UNMARSHALLERS)
          onlyFormatErrors(() => read(new Reader(valid.subarray(0, n), 'cut')));
      }
    }
    fc.assert(
      fc.property(
        fc.constantFrom(...validEncodings()),
        fc.nat(),
        fc.integer({ min: 0, max: 255 }),
        (valid, at, value) => {
          const changed = Uint8Array.from(valid);
          changed[at % changed.length] = value;
          for (const [, read] of UNMARSHALLERS) onlyFormatErrors(() => read(new Reader(changed, 'mutated')));
        },
      ),
      { numRuns: 2000 },
    );
  });
});

/** A transport that answers every command with what `respond` makes of it. */
function fakeTransport(respond: (command: Uint8Array) => Uint8Array): Transport {
  return { description: 'fake', send: async (c) => respond(c), close: async () => undefined };
}

/** A success header around `body`, with the tag the command asked for (or a wrong one). */
function successResponse(command: Uint8Array, body: Uint8Array, tagOk: boolean): Uint8Array {
  const commandTag = (command[0]! << 8) | command[1]!;
  const tag = tagOk ? commandTag : commandTag === TPM_ST.SESSIONS ? TPM_ST.NO_SESSIONS : TPM_ST.SESSIONS;
  const w = new Writer()
    .u16(tag)
    .u32(10 + body.length)
    .u32(0)
    .bytes(body);
  return w.finish();
}

const COMMANDS: readonly [string, (tpm: Tpm) => Promise<unknown>][] = [
  ['GetRandom', (t) => t.getRandom(100)],
  ['GetCapability properties', (t) => t.properties()],
  ['GetCapability handles', (t) => t.handles(0x80)],
  ['GetCapability PCRs', (t) => t.pcrBanks()],
  ['ReadPublic', (t) => t.readPublic(0x81000001)],
  ['CreatePrimary', (t) => t.createPrimary(0x40000001, eccSigningTemplate())],
  ['PCR_Read', (t) => t.pcrRead([{ hash: TPM_ALG.SHA256, pcrs: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] }])],
  ['Sign', (t) => t.sign(0x80000000, new Uint8Array(32), { scheme: TPM_ALG.NULL })],
  ['FlushContext', (t) => t.flushContext(0x80000000)],
  ['Startup', (t) => t.startup()],
  ['Create', (t) => t.create(0x80000000, eccSigningTemplate())],
  [
    'Load',
    (t) => {
      const w = new Writer();
      writePublicArea(w, eccSigningTemplate());
      return t.load(0x80000000, {
        private: new Uint8Array(8),
        publicBytes: w.finish(),
        publicArea: eccSigningTemplate(),
      });
    },
  ],
  ['LoadExternal', (t) => t.loadExternal(eccSigningTemplate())],
  ['EvictControl', (t) => t.evictControl(0x80000000, 0x81000002)],
  [
    'VerifySignature',
    (t) =>
      t.verifySignature(0x80000000, new Uint8Array(32), {
        sigAlg: TPM_ALG.ECDSA,
        hash: TPM_ALG.SHA256,
        r: new Uint8Array(32),
        s: new Uint8Array(32),
      }),
  ],
  ['Quote', (t) => t.quote(0x80000000, new Uint8Array(16), [{ hash: TPM_ALG.SHA256, pcrs: [0, 1] }])],
  ['Certify', (t) => t.certify(0x80000000, 0x80000001, new Uint8Array(16))],
];

async function onlyTpmErrors(promise: Promise<unknown>): Promise<void> {
  try {
    await promise;
  } catch (error) {
    if (!(error instanceof TpmFormatError) && !(error instanceof TpmError)) throw error;
  }
}

describe('commands under random responses', () => {
  test('random whole responses: only TpmFormatError or TpmError', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 300 }), async (bytes) => {
        for (const [, run] of COMMANDS) await onlyTpmErrors(run(new Tpm(fakeTransport(() => bytes))));
      }),
      { numRuns: 300 },
    );
  });

  test('random bodies behind a valid success header: only TpmFormatError, and no loop runs away', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 400 }), fc.boolean(), async (body, tagOk) => {
        for (const [, run] of COMMANDS) {
          let commands = 0;
          const tpm = new Tpm(
            fakeTransport((c) => {
              commands++;
              return successResponse(c, body, tagOk);
            }),
          );
          await onlyTpmErrors(run(tpm));
          assert.ok(commands <= 1024 * 5, `${commands} commands`);
        }
      }),
      { numRuns: 300 },
    );
  });

  test('error codes: a TpmError; a body after an error code: a TpmFormatError', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 0xffffffff }), async (rc) => {
        const tpm = new Tpm(fakeTransport(() => new Writer().u16(0x8001).u32(10).u32(rc).finish()));
        await assert.rejects(tpm.readPublic(0x81000001), TpmError);
      }),
      { numRuns: 500 },
    );
    const tpm = new Tpm(fakeTransport(() => new Writer().u16(0x8001).u32(11).u32(0x84).u8(0).finish()));
    await assert.rejects(tpm.readPublic(0x81000001), /an error response \(code 0x84\) with a body/);
  });
});

describe('what a command leaves behind when its response is unusable', () => {
  test('a CreatePrimary response that does not parse: the handle it returned is flushed', async () => {
    const sent: number[] = [];
    const tpm = new Tpm(
      fakeTransport((c) => {
        const code = new DataView(c.buffer, c.byteOffset).getUint32(6);
        sent.push(code);
        if (code === TPM_CC.CreatePrimary) {
          return new Writer()
            .u16(TPM_ST.SESSIONS)
            .u32(10 + 4 + 4 + 3)
            .u32(0)
            .u32(0x80000001)
            .u32(3)
            .bytes(Uint8Array.of(0, 9, 9))
            .finish();
        }
        assert.deepEqual(c.subarray(10), Uint8Array.of(0x80, 0, 0, 1));
        return new Writer().u16(TPM_ST.NO_SESSIONS).u32(10).u32(0).finish();
      }),
    );
    await assert.rejects(tpm.createPrimary(0x40000001, eccSigningTemplate()), TpmFormatError);
    assert.deepEqual(sent, [TPM_CC.CreatePrimary, TPM_CC.FlushContext]);
  });
});

describe('ECDSA signatures at the curve size', () => {
  test('r and s shorter than the curve are padded, a leading zero byte is dropped', () => {
    const signature: Signature = {
      sigAlg: TPM_ALG.ECDSA,
      hash: TPM_ALG.SHA256,
      r: new Uint8Array(31).fill(0xaa),
      s: Uint8Array.of(0, ...new Uint8Array(32).fill(0xbb)),
    };
    const p1363 = ecdsaSignatureP1363(signature, TPM_ECC.NIST_P256);
    assert.equal(hex(p1363), `00${'aa'.repeat(31)}${'bb'.repeat(32)}`);
    assert.throws(
      () => ecdsaSignatureP1363({ ...signature, r: new Uint8Array(33).fill(1) }, TPM_ECC.NIST_P256),
      /signature r is 33 bytes, more than 32/,
    );
    assert.throws(() => ecdsaSignatureP1363(signature, TPM_ECC.BN_P256), /BN_P256 is not supported/);
  });
});
