// verifyQuote on real quotes from a private swtpm: made with our Tpm commands (a storage primary, an
// ECC P-256 AK from eccAttestationTemplate, Quote, PCR_Read) and with tpm2-tools (tpm2_createek,
// tpm2_createak, tpm2_quote: ECDSA, RSASSA and RSAPSS AKs), then each way a quote can fail.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { TPM_ALG, TPM_RH, TPM_SU } from '../constants.ts';
import { Writer } from '../marshal.ts';
import { openTransport } from '../open.ts';
import { publicKeyObject, TPM_GENERATED_VALUE, writePcrSelections, writeSignature } from '../structures.ts';
import { eccAttestationTemplate, eccStorageTemplate } from '../templates.ts';
import { type Swtpm, startSwtpm } from '../testing/swtpm.ts';
import { type AttestResult, type CreateResult, Tpm } from '../tpm.ts';
import { comparePcrs, type PcrBanks } from './pcr-policy.ts';
import { type VerifyQuoteInput, verifyQuote } from './quote.ts';

const run = promisify(execFile);
const PCRS = [0, 1, 2, 3, 4, 5, 6, 7, 10, 16];

function bytesOf(write: (w: Writer) => void): Uint8Array {
  const w = new Writer();
  write(w);
  return w.finish();
}

function withValue(pcrs: PcrBanks, bank: number, index: number, value: Uint8Array): PcrBanks {
  const copy = new Map([...pcrs].map(([b, m]) => [b, new Map(m)]));
  copy.get(bank)!.set(index, value);
  return copy;
}

describe('comparePcrs', () => {
  const a = new Uint8Array(32);
  const b = new Uint8Array(32).fill(1);
  test('equal values are ok; a changed, a missing PCR and a missing bank are listed per bank', () => {
    const golden: PcrBanks = new Map([
      [
        TPM_ALG.SHA256,
        new Map([
          [0, a],
          [7, a],
          [9, a],
        ]),
      ],
      [TPM_ALG.SHA1, new Map([[0, new Uint8Array(20)]])],
    ]);
    const same = comparePcrs(
      new Map([
        [
          TPM_ALG.SHA256,
          new Map([
            [0, a],
            [7, a],
            [9, a],
            [10, b],
          ]),
        ],
        [TPM_ALG.SHA1, new Map([[0, new Uint8Array(20)]])],
      ]),
      golden,
    );
    assert.equal(same.ok, true);
    assert.deepEqual(same.differences, []);
    const actual: PcrBanks = new Map([
      [
        TPM_ALG.SHA256,
        new Map([
          [0, a],
          [7, b],
        ]),
      ],
    ]);
    const result = comparePcrs(actual, golden);
    assert.equal(result.ok, false);
    assert.deepEqual(
      result.byBank,
      new Map([
        [TPM_ALG.SHA256, [7, 9]],
        [TPM_ALG.SHA1, [0]],
      ]),
    );
    assert.deepEqual(result.differences[0], { bank: TPM_ALG.SHA256, index: 7, expected: a, actual: b });
    assert.equal(result.differences[1]!.actual, undefined);
  });
});

test('an ECDSA P-384 / SHA-384 quote built here: clockInfo.safe = NO is a note, not a failure', () => {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-384' });
  const nonce = new Uint8Array(16).fill(9);
  const value = new Uint8Array(48).fill(3);
  const pcrs: PcrBanks = new Map([
    [
      TPM_ALG.SHA384,
      new Map([
        [0, value],
        [17, value],
      ]),
    ],
  ]);
  const attest = bytesOf((w) => {
    w.u32(TPM_GENERATED_VALUE).u16(0x8018).tpm2b(new Uint8Array(34)).tpm2b(nonce);
    w.u64(5000n).u32(3).u32(1).u8(0).u64(0n);
    writePcrSelections(w, [{ hash: TPM_ALG.SHA384, pcrs: [0, 17] }]);
    w.tpm2b(createHash('sha384').update(value).update(value).digest());
  });
  const p1363 = sign('sha384', attest, { key: privateKey, dsaEncoding: 'ieee-p1363' });
  const signature = {
    sigAlg: TPM_ALG.ECDSA,
    hash: TPM_ALG.SHA384,
    r: new Uint8Array(p1363.subarray(0, 48)),
    s: new Uint8Array(p1363.subarray(48)),
  } as const;
  const input: VerifyQuoteInput = { attest, signature, akPublic: publicKey, nonce, pcrs };
  const result = verifyQuote({ ...input, previous: { clock: 9000n, resetCount: 2, restartCount: 7 } });
  assert.ok(result.ok, result.ok ? '' : result.reason);
  assert.equal(result.quote.clockInfo.safe, false);
  assert.match(result.quote.notes.join(), /safe is NO/);
  const sha256 = verifyQuote({ ...input, signature: { ...signature, hash: TPM_ALG.SHA256 } });
  assert.equal(sha256.ok ? 'ok' : sha256.code, 'signature');
});

describe('verifyQuote on swtpm quotes', () => {
  let swtpm: Swtpm;
  let tpm: Tpm;
  let srk = 0;
  let ak: CreateResult;
  let other: CreateResult;
  let nonce: Uint8Array;
  let quote: AttestResult;
  let pcrs: PcrBanks;
  let good: VerifyQuoteInput;

  before(async () => {
    swtpm = await startSwtpm();
    tpm = new Tpm(openTransport(swtpm.address));
    await tpm.startup(TPM_SU.CLEAR);
    srk = (await tpm.createPrimary(TPM_RH.OWNER, eccStorageTemplate())).handle;
    ak = await tpm.create(srk, eccAttestationTemplate());
    other = await tpm.create(srk, eccAttestationTemplate());
    nonce = await tpm.getRandom(32);
    const selection = [{ hash: TPM_ALG.SHA256, pcrs: PCRS }];
    quote = await tpm.withTransient(
      tpm.load(srk, ak).then((l) => l.handle),
      (handle) => tpm.quote(handle, nonce, selection),
    );
    pcrs = (await tpm.pcrRead(selection)).banks;
    good = {
      attest: quote.attestBytes,
      signature: bytesOf((w) => writeSignature(w, quote.signature)),
      akPublic: ak.publicBytes,
      nonce,
      pcrs,
    };
  });

  after(async () => {
    if (srk) await tpm?.flushContext(srk).catch(() => undefined);
    await tpm?.close();
    await swtpm?.stop();
  });

  test('a real quote verifies: AK as TPMT_PUBLIC bytes, parsed or KeyObject; signature as bytes or parsed', () => {
    const result = verifyQuote(good);
    assert.ok(result.ok, result.ok ? '' : result.reason);
    assert.deepEqual(result.quote.pcrSelect, [{ hash: TPM_ALG.SHA256, pcrs: PCRS }]);
    assert.equal(result.quote.hashAlg, TPM_ALG.SHA256);
    assert.equal(result.quote.signatureAlg, TPM_ALG.ECDSA);
    assert.deepEqual(result.quote.notes, []);
    for (const variant of [
      { akPublic: ak.publicArea },
      { akPublic: publicKeyObject(ak.publicArea) },
      { akPublic: bytesOf((w) => w.tpm2b(ak.publicBytes)) },
      { signature: quote.signature },
      { selection: [{ hash: TPM_ALG.SHA256, pcrs: PCRS }] },
      { previous: { ...quote.attest.clockInfo } },
    ]) {
      const r = verifyQuote({ ...good, ...variant });
      assert.ok(r.ok, r.ok ? '' : r.reason);
    }
  });

  function expectFailure(input: Partial<VerifyQuoteInput>, code: string, pattern: RegExp): void {
    const result = verifyQuote({ ...good, ...input });
    assert.equal(result.ok, false);
    if (result.ok) return;
    assert.equal(result.code, code, result.reason);
    assert.match(result.reason, pattern);
  }

  test('a flipped signature byte', () => {
    const signature = Uint8Array.from(good.signature as Uint8Array);
    signature[signature.length - 1]! ^= 1;
    expectFailure({ signature }, 'signature', /does not verify/);
  });

  test('a flipped attest byte (the signature no longer covers it)', () => {
    const attest = Uint8Array.from(quote.attestBytes);
    attest[attest.length - 1]! ^= 1;
    expectFailure({ attest }, 'signature', /does not verify/);
  });

  test('another nonce', () => {
    expectFailure({ nonce: new Uint8Array(32) }, 'nonce', /stale/);
  });

  test('one changed PCR value', () => {
    const changed = withValue(pcrs, TPM_ALG.SHA256, 7, new Uint8Array(32).fill(0xaa));
    expectFailure({ pcrs: changed }, 'pcr-digest', /pcrDigest/);
  });

  test('a PCR claimed that the quote does not cover, or an expected selection it does not match', () => {
    expectFailure(
      { pcrs: withValue(pcrs, TPM_ALG.SHA256, 8, new Uint8Array(32)) },
      'pcr-selection',
      /covers/,
    );
    expectFailure({ selection: [{ hash: TPM_ALG.SHA256, pcrs: [0, 1] }] }, 'pcr-selection', /covers/);
    const sha1 = new Map([[TPM_ALG.SHA1, new Map(PCRS.map((i) => [i, new Uint8Array(20)]))]]);
    expectFailure({ pcrs: sha1 }, 'pcr-selection', /sha1/);
  });

  test('the wrong AK', () => {
    expectFailure({ akPublic: other.publicBytes }, 'signature', /does not verify/);
    expectFailure({ akPublic: new Uint8Array([1, 2, 3]) }, 'key', /AK/);
  });

  test('truncated, bad magic and garbage: reasons, never exceptions', () => {
    expectFailure(
      { attest: quote.attestBytes.subarray(0, quote.attestBytes.length - 5) },
      'format',
      /TPMS_ATTEST/,
    );
    expectFailure({ attest: quote.attestBytes.subarray(0, 3) }, 'format', /TPMS_ATTEST/);
    const magic = Uint8Array.from(quote.attestBytes);
    magic[0] = 0;
    expectFailure({ attest: magic }, 'magic', /magic/);
    const type = Uint8Array.from(quote.attestBytes);
    type[5] = 0x17; // TPM_ST_ATTEST_CERTIFY
    expectFailure({ attest: type }, 'type', /CERTIFY/);
    expectFailure({ signature: new Uint8Array([0, 0x18, 0, 0x0b]) }, 'format', /TPMT_SIGNATURE/);
    const trailing = new Uint8Array(quote.attestBytes.length + 1);
    trailing.set(quote.attestBytes);
    expectFailure({ attest: trailing }, 'format', /trailing/);
  });

  test('the clock going backwards without a reset or restart', () => {
    const { clock, resetCount, restartCount } = quote.attest.clockInfo;
    expectFailure(
      { previous: { clock: clock + 1000n, resetCount, restartCount } },
      'clock',
      /clock went back/,
    );
    expectFailure({ previous: { clock, resetCount: resetCount + 1, restartCount } }, 'clock', /resetCount/);
    expectFailure(
      { previous: { clock, resetCount, restartCount: restartCount + 1 } },
      'clock',
      /restartCount/,
    );
    // An earlier clock is fine after a reset.
    const earlier = verifyQuote({
      ...good,
      previous: { clock: clock + 1000n, resetCount: Math.max(0, resetCount - 1), restartCount },
    });
    assert.equal(earlier.ok, resetCount > 0);
  });
});

/**
 * tpm2_quote -o (tpm2-tools 5.4): the same "serialized" form as tpm2_pcrread -F serialized, the tss2 C
 * structures in host (little-endian) order: TPML_PCR_SELECTION (u32 count, 16 slots of 8 bytes: hash
 * u16, sizeofSelect u8, pcrSelect[4], padding), a u32 count of TPML_DIGESTs, each a u32 count and 8
 * slots of TPM2B_DIGEST (u16 size, 64 bytes). The digests follow the selection, index ascending.
 */
function fromToolsPcrFile(file: Buffer): PcrBanks {
  const selections: { hash: number; pcrs: number[] }[] = [];
  const count = file.readUInt32LE(0);
  for (let i = 0; i < count; i++) {
    const at = 4 + i * 8;
    const hash = file.readUInt16LE(at);
    const size = file.readUInt8(at + 2);
    const pcrs: number[] = [];
    for (let pcr = 0; pcr < size * 8; pcr++)
      if (file[at + 3 + (pcr >> 3)]! & (1 << (pcr & 7))) pcrs.push(pcr);
    selections.push({ hash, pcrs });
  }
  const digests: Uint8Array[] = [];
  const lists = file.readUInt32LE(132);
  for (let l = 0; l < lists; l++) {
    const at = 136 + l * 532;
    const n = file.readUInt32LE(at);
    for (let i = 0; i < n; i++) {
      const slot = at + 4 + i * 66;
      digests.push(new Uint8Array(file.subarray(slot + 2, slot + 2 + file.readUInt16LE(slot))));
    }
  }
  const banks = new Map<number, Map<number, Uint8Array>>();
  for (const { hash, pcrs } of selections) {
    const bank = banks.get(hash) ?? new Map<number, Uint8Array>();
    for (const pcr of pcrs) bank.set(pcr, digests.shift()!);
    banks.set(hash, bank);
  }
  assert.equal(digests.length, 0);
  return banks;
}

describe('verifyQuote on tpm2_quote output', () => {
  let swtpm: Swtpm;
  let env: NodeJS.ProcessEnv;

  before(async () => {
    swtpm = await startSwtpm({ pcrBanks: ['sha1', 'sha256'] });
    env = { ...process.env, TPM2TOOLS_TCTI: swtpm.tcti };
    await run('tpm2_startup', ['-c'], { env });
  });

  after(async () => {
    await swtpm?.stop();
  });

  /** Runs a tpm2-tools command, then flushes what it left: swtpm has no resource manager. */
  async function tools(...args: string[]): Promise<void> {
    try {
      await run(args[0]!, args.slice(1), { env });
    } finally {
      for (const kind of ['-t', '-l', '-s']) await run('tpm2_flushcontext', [kind], { env });
    }
  }

  for (const [keyAlg, scheme, sigAlg] of [
    ['ecc', 'ecdsa', TPM_ALG.ECDSA],
    ['rsa', 'rsassa', TPM_ALG.RSASSA],
    ['rsa', 'rsapss', TPM_ALG.RSAPSS],
  ] as const) {
    test(`tpm2_createak -G ${keyAlg} -s ${scheme}, tpm2_quote: -m, -s, -o and -u verify; another nonce does not`, async () => {
      const f = (name: string) => join(swtpm.dir, `${scheme}-${name}`);
      await tools('tpm2_createek', '-c', f('ek.ctx'), '-G', keyAlg, '-u', f('ek.pub'));
      await tools(
        'tpm2_createak',
        ...['-C', f('ek.ctx'), '-c', f('ak.ctx'), '-G', keyAlg, '-g', 'sha256', '-s', scheme],
        ...['-u', f('ak.pub')],
      );
      const nonce = new Uint8Array(Buffer.from(`umbra-${scheme}-nonce`));
      await tools(
        'tpm2_quote',
        ...['-c', f('ak.ctx'), '-l', 'sha256:0,1,2,3,10+sha1:0,7', '-q', Buffer.from(nonce).toString('hex')],
        ...['-m', f('msg'), '-s', f('sig'), '-o', f('pcrs'), '-g', 'sha256', '--scheme', scheme],
      );
      const input: VerifyQuoteInput = {
        attest: new Uint8Array(readFileSync(f('msg'))),
        signature: new Uint8Array(readFileSync(f('sig'))),
        akPublic: new Uint8Array(readFileSync(f('ak.pub'))),
        nonce,
        pcrs: fromToolsPcrFile(readFileSync(f('pcrs'))),
      };
      assert.deepEqual(
        [...input.pcrs].map(([bank, values]) => [bank, [...values.keys()]]),
        [
          [TPM_ALG.SHA256, [0, 1, 2, 3, 10]],
          [TPM_ALG.SHA1, [0, 7]],
        ],
      );
      const result = verifyQuote(input);
      assert.ok(result.ok, result.ok ? '' : result.reason);
      assert.equal(result.quote.signatureAlg, sigAlg);
      assert.equal(result.quote.hashAlg, TPM_ALG.SHA256);
      const stale = verifyQuote({ ...input, nonce: new Uint8Array(nonce.length) });
      assert.equal(stale.ok ? 'ok' : stale.code, 'nonce');
      const changed = verifyQuote({
        ...input,
        pcrs: withValue(input.pcrs, TPM_ALG.SHA1, 7, new Uint8Array(20).fill(1)),
      });
      assert.equal(changed.ok ? 'ok' : changed.code, 'pcr-digest');
    });
  }
});
