import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AttestationFileError } from './errors.ts';
import { parsePcrFile, pickPcrBank } from './pcr-file.ts';

const SHA1_0 = '3DCAAC39D2A8BD6D4A9A4A7F38C11CFB45CC6BC5';
const SHA256_0 = '3D458CFE55CC03EA1F443F1562BEEC8DF51C75E14A9FCF9A7234A13F198E7969';
const SHA256_7 = 'B5710BF57D25623E4019027DA116821FA99F5C81E9E38B87671CC574F9281439';

/** As tpm2_pcrread prints it (checked against swtpm and tpm2-tools 5): two-space banks, four-space PCRs. */
const PCRREAD = `  sha1:
    0 : 0x${SHA1_0}
  sha256:
    0 : 0x${SHA256_0}
    7 : 0x${SHA256_7}
  sha384:
`;

function refused(message: RegExp) {
  return (error: unknown) => {
    assert.ok(error instanceof AttestationFileError, `expected an AttestationFileError, got ${error}`);
    assert.match(error.message, message);
    return true;
  };
}

describe('golden PCR files', () => {
  test('tpm2_pcrread output: each bank it lists values for, digests in lower case', () => {
    const sets = parsePcrFile(PCRREAD, 'golden.yaml');
    assert.deepEqual(sets, [
      { bank: 'sha1', pcrs: { '0': SHA1_0.toLowerCase() } },
      { bank: 'sha256', pcrs: { '0': SHA256_0.toLowerCase(), '7': SHA256_7.toLowerCase() } },
    ]);
    assert.equal(pickPcrBank(sets, 'golden.yaml').bank, 'sha256', 'the strongest bank by default');
    assert.equal(pickPcrBank(sets, 'golden.yaml', 'sha1').bank, 'sha1');
    assert.throws(
      () => pickPcrBank(sets, 'golden.yaml', 'sha384'),
      refused(/golden.yaml: no sha384 values; the file gives sha1, sha256/),
    );
  });

  test('JSON, with or without 0x', () => {
    const sets = parsePcrFile(
      JSON.stringify({ sha256: { '7': SHA256_7, '0': `0x${SHA256_0}` } }),
      'golden.json',
    );
    assert.deepEqual(sets, [
      { bank: 'sha256', pcrs: { '0': SHA256_0.toLowerCase(), '7': SHA256_7.toLowerCase() } },
    ]);
  });

  test('refusals name the file, the line or bank, and what is accepted', () => {
    const cases: [string, RegExp][] = [
      ['', /f: no PCR values found; expected tpm2_pcrread output/],
      [
        '  sha512:\n    0 : 0x00\n',
        /f: line 1: bank "sha512" is not one Umbra compares; expected sha1, sha256, sha384/,
      ],
      [`    0 : 0x${SHA256_0}\n`, /f: line 1: a PCR value before any bank line/],
      [
        `  sha256:\n    0 : 0x${SHA256_0}\n    0 : 0x${SHA256_0}\n`,
        /f: line 3: PCR 0 of sha256 is given twice/,
      ],
      [`  sha256:\n    24 : 0x${SHA256_0}\n`, /f: sha256: PCR index "24" is not one of 0 to 23/],
      [`  sha256:\n    7 : 0x${SHA1_0}\n`, /f: sha256.7: a sha256 digest is 32 bytes \(64 hex digits\)/],
      ['  sha256:\n    quoted: yes\n', /f: line 2: expected "BANK:" or "INDEX : 0xHEX"/],
      ['{"sha256": ', /f: not valid JSON/],
      ['{"md5": {"0": "00"}}', /f: bank "md5": expected one of sha1, sha256, sha384/],
      ['{"sha256": ["00"]}', /f: "sha256" must map PCR indexes to hex digests/],
      ['{"sha1": {"0": 7}}', /f: sha1.0: a sha1 digest is 20 bytes/],
    ];
    for (const [text, message] of cases) assert.throws(() => parsePcrFile(text, 'f'), refused(message), text);
  });
});
