// MakeCredential by Umbra, activated by tpm2_activatecredential against a private swtpm (RSA-2048
// and ECC P-256 EKs made by tpm2_createek, an AK by tpm2_createak); and tpm2_makecredential's output
// read back and checked to be well-formed.

import 'reflect-metadata';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { TPM_ALG } from '../constants.ts';
import { Reader } from '../marshal.ts';
import { SWTPM_SETUP, type Swtpm, startSwtpm } from '../testing/swtpm.ts';
import { parseEkCertificate } from './ek-certificate.ts';
import {
  type EkPublic,
  fromTpm2ToolsCredentialFile,
  MakeCredentialError,
  makeCredential,
  toTpm2ToolsCredentialFile,
} from './make-credential.ts';

const run = promisify(execFile);

describe('MakeCredential cross-checked with tpm2-tools over swtpm', () => {
  let swtpm: Swtpm;
  let work: string;
  let env: NodeJS.ProcessEnv;

  const tool = async (name: string, args: string[]) => {
    try {
      return await run(name, args, { env, cwd: work, encoding: 'buffer' });
    } catch (error) {
      const e = error as Error & { stderr?: Buffer };
      throw new Error(`${name} ${args.join(' ')}: ${e.message} ${e.stderr?.toString() ?? ''}`);
    }
  };

  /** swtpm has no resource manager: what tpm2-tools left loaded (objects, sessions) is flushed after each tool. */
  const flush = async () => {
    for (const what of ['-t', '-l', '-s']) await tool('tpm2_flushcontext', [what]);
  };

  /** An EK (tpm2_createek) and an AK under it (tpm2_createak), as files in `work`. */
  const createEkAndAk = async (alg: 'rsa' | 'ecc') => {
    await tool('tpm2_createek', ['-c', `ek-${alg}.ctx`, '-G', alg, '-u', `ek-${alg}.pub`]);
    await flush();
    await tool('tpm2_createak', [
      '-C',
      `ek-${alg}.ctx`,
      '-c',
      `ak-${alg}.ctx`,
      '-u',
      `ak-${alg}.pub`,
      '-n',
      `ak-${alg}.name`,
    ]);
    await flush();
    const ekPub = new Uint8Array(readFileSync(join(work, `ek-${alg}.pub`)));
    const r = new Reader(ekPub, 'ek.pub');
    const ekPublic = r.tpm2b('TPM2B_PUBLIC'); // tpm2-tools' default "tss" format: TPM2B_PUBLIC
    r.end();
    return { ekPublic, akName: new Uint8Array(readFileSync(join(work, `ak-${alg}.name`))) };
  };

  const activate = async (alg: 'rsa' | 'ecc', file: Uint8Array) => {
    const path = join(work, `cred-${alg}.in`);
    writeFileSync(path, file);
    // The EK's authPolicy is PolicySecret(endorsement hierarchy): a policy session satisfies it.
    await tool('tpm2_startauthsession', ['--policy-session', '-S', 'session.ctx']);
    try {
      await tool('tpm2_policysecret', ['-S', 'session.ctx', '-c', 'e']);
      await tool('tpm2_activatecredential', [
        '-c',
        `ak-${alg}.ctx`,
        '-C',
        `ek-${alg}.ctx`,
        '-i',
        path,
        '-o',
        `out-${alg}.bin`,
        '-P',
        'session:session.ctx',
      ]);
    } finally {
      await flush();
    }
    return new Uint8Array(readFileSync(join(work, `out-${alg}.bin`)));
  };

  before(async () => {
    swtpm = await startSwtpm();
    work = mkdtempSync(join(tmpdir(), 'umbra-makecred-'));
    env = { ...process.env, TPM2TOOLS_TCTI: swtpm.tcti };
    await tool('tpm2_startup', ['-c']);
  });

  after(async () => {
    await swtpm?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  for (const alg of ['rsa', 'ecc'] as const) {
    test(`${alg === 'rsa' ? 'RSA-2048' : 'ECC P-256'} EK: tpm2_activatecredential recovers Umbra's secret`, async () => {
      const { ekPublic, akName } = await createEkAndAk(alg);
      for (const size of [32, 16, 1]) {
        const secret = new Uint8Array(randomBytes(size));
        const credential = makeCredential(ekPublic, akName, secret);
        assert.deepEqual(await activate(alg, toTpm2ToolsCredentialFile(credential)), secret);
      }
    });

    test(`${alg.toUpperCase()} EK: a credential for another Name is refused by the TPM`, async () => {
      const { ekPublic, akName } = await createEkAndAk(alg);
      const other = akName.slice();
      other[other.length - 1] = other[other.length - 1]! ^ 1;
      const credential = makeCredential(ekPublic, other, new Uint8Array(32).fill(7));
      await assert.rejects(
        activate(alg, toTpm2ToolsCredentialFile(credential)),
        /tpm2_activatecredential.*integrity/is,
      );
    });

    test(`${alg.toUpperCase()} EK: tpm2_makecredential -T none output is well-formed`, async () => {
      const { akName } = await createEkAndAk(alg);
      const secret = new Uint8Array(randomBytes(32));
      writeFileSync(join(work, 'secret.bin'), secret);
      await tool('tpm2_makecredential', [
        '-T',
        'none',
        '-u',
        `ek-${alg}.pub`,
        '-s',
        'secret.bin',
        '-n',
        Buffer.from(akName).toString('hex'),
        '-o',
        `theirs-${alg}.cred`,
      ]);
      const file = new Uint8Array(readFileSync(join(work, `theirs-${alg}.cred`)));
      const theirs = fromTpm2ToolsCredentialFile(file);
      // TPM2B_ID_OBJECT { TPM2B_DIGEST(HMAC-SHA256) ‖ AES-CFB(TPM2B_DIGEST(secret)) }
      const blob = new Reader(theirs.credentialBlob, 'credentialBlob');
      const body = blob.sub(blob.u16('size'), 'TPM2B_ID_OBJECT');
      assert.equal(body.tpm2b('integrityHMAC').length, 32);
      assert.equal(body.remaining, 2 + secret.length);
      // TPM2B_ENCRYPTED_SECRET: an RSA-2048 block, or a P-256 point.
      const enc = new Reader(theirs.encryptedSecret, 'encryptedSecret');
      const inner = enc.sub(enc.u16('size'), 'TPM2B_ENCRYPTED_SECRET');
      if (alg === 'rsa') assert.equal(inner.remaining, 256);
      else {
        assert.equal(inner.tpm2b('x').length, 32);
        assert.equal(inner.tpm2b('y').length, 32);
        inner.end();
      }
      // Ours has the same shape, and theirs activates on the TPM (so the file format is the one we write).
      const ours = makeCredential(readFileSync(join(work, `ek-${alg}.pub`)).subarray(2), akName, secret);
      assert.equal(ours.credentialBlob.length, theirs.credentialBlob.length);
      assert.equal(ours.encryptedSecret.length, theirs.encryptedSecret.length);
      assert.deepEqual(toTpm2ToolsCredentialFile(theirs), file);
      assert.deepEqual(await activate(alg, file), secret);
    });
  }

  test('the RSA EK from its certificate (a KeyObject, TCG template defaults) gives an activatable credential', async () => {
    const { stdout } = await tool('tpm2_nvread', [`0x${SWTPM_SETUP.RSA_EK_CERT_NV_INDEX.toString(16)}`]);
    const { publicKey } = parseEkCertificate(new Uint8Array(stdout));
    const { akName } = await createEkAndAk('rsa');
    const secret = new Uint8Array(randomBytes(32));
    const credential = makeCredential({ key: publicKey }, akName, secret);
    assert.deepEqual(await activate('rsa', toTpm2ToolsCredentialFile(credential)), secret);
  });
});

describe('MakeCredential input checks', () => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey;
  const name = new Uint8Array(34).fill(1);
  name.set([0x00, 0x0b]);

  test('a secret longer than the nameAlg digest is refused', () => {
    assert.throws(() => makeCredential({ key: rsa }, name, new Uint8Array(33)), MakeCredentialError);
    assert.throws(
      () => makeCredential({ key: rsa, nameAlg: TPM_ALG.SHA384 }, name, new Uint8Array(49)),
      /at most 48/,
    );
    makeCredential({ key: rsa, nameAlg: TPM_ALG.SHA384 }, name, new Uint8Array(48));
  });

  test('unsupported keys and symmetric definitions are refused with a reason', () => {
    const ed = generateKeyPairSync('ed25519').publicKey;
    assert.throws(() => makeCredential({ key: ed }, name, new Uint8Array(1)), /not RSA or EC/);
    const k1 = generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).publicKey;
    assert.throws(() => makeCredential({ key: k1 }, name, new Uint8Array(1)), /not NIST/);
    const ek: EkPublic = { key: rsa, symmetric: { algorithm: TPM_ALG.NULL } };
    assert.throws(() => makeCredential(ek, name, new Uint8Array(1)), /not AES-CFB/);
    assert.throws(() => makeCredential({ key: rsa }, new Uint8Array(0), new Uint8Array(1)), /Name is empty/);
  });

  test('ECC P-384 with SHA-384 and AES-256 (the high-range EK templates) produces a well-formed credential', () => {
    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey;
    const c = makeCredential(
      {
        key: p384,
        nameAlg: TPM_ALG.SHA384,
        symmetric: { algorithm: TPM_ALG.AES, keyBits: 256, mode: TPM_ALG.CFB },
      },
      name,
      new Uint8Array(48),
    );
    assert.equal(c.credentialBlob.length, 2 + 2 + 48 + 2 + 48);
    assert.equal(c.encryptedSecret.length, 2 + 2 + 48 + 2 + 48);
  });

  test('a bad tpm2-tools credential file is a format error', () => {
    assert.throws(
      () => fromTpm2ToolsCredentialFile(new Uint8Array([0xba, 0xdc, 0xc0, 0xdf, 0, 0, 0, 1])),
      /magic/,
    );
    assert.throws(() =>
      fromTpm2ToolsCredentialFile(new Uint8Array([0xba, 0xdc, 0xc0, 0xde, 0, 0, 0, 1, 0, 9])),
    );
  });
});
