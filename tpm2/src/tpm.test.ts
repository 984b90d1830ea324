// Commands against a real TPM: a private swtpm manufactured with EK certificates. Every transient
// object a test creates is flushed, and the last test checks that none is left.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, verify } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { TPM_ALG, TPM_ECC, TPM_HT, TPM_PT, TPM_RH, TPM_SU } from './constants.ts';
import { Reader, Writer } from './marshal.ts';
import { computeName } from './name.ts';
import { openTransport } from './open.ts';
import { TPM_RC, TpmError } from './response-code.ts';
import {
  ecdsaSignatureP1363,
  NULL_SCHEME,
  publicKeyObject,
  readPublicArea,
  writePublicArea,
} from './structures.ts';
import { eccSigningTemplate, eccStorageTemplate, rsaSigningTemplate } from './templates.ts';
import { SWTPM_SETUP, type Swtpm, startSwtpm } from './testing/swtpm.ts';
import { Tpm } from './tpm.ts';

const run = promisify(execFile);

describe('TPM commands over swtpm (TCP)', () => {
  let swtpm: Swtpm;
  let tpm: Tpm;

  before(async () => {
    swtpm = await startSwtpm();
    tpm = new Tpm(openTransport(swtpm.address));
    await tpm.startup(TPM_SU.CLEAR);
  });

  after(async () => {
    await tpm?.close();
    await swtpm?.stop();
  });

  test('a second Startup is refused with TPM_RC_INITIALIZE, named', async () => {
    await assert.rejects(tpm.startup(TPM_SU.CLEAR), (error: unknown) => {
      assert.ok(error instanceof TpmError);
      assert.equal(error.base, TPM_RC.INITIALIZE);
      assert.equal(
        error.message,
        'TPM2_Startup: TPM_RC_INITIALIZE (TPM not initialized by TPM2_Startup or already initialized)',
      );
      return true;
    });
  });

  test('GetRandom returns exactly the bytes asked for, over several commands when needed', async () => {
    for (const n of [0, 1, 16, 32, 48, 64, 65, 200, 1000]) {
      const bytes = await tpm.getRandom(n);
      assert.equal(bytes.length, n);
    }
    const a = await tpm.getRandom(32);
    const b = await tpm.getRandom(32);
    assert.notDeepEqual(a, b);
  });

  test('GetCapability: fixed properties, PCR banks, persistent handles from swtpm_setup', async () => {
    const props = await tpm.properties();
    assert.equal(props.get(TPM_PT.FAMILY_INDICATOR), 0x322e3000); // "2.0\0"
    assert.equal(props.get(TPM_PT.MANUFACTURER), 0x49424d00); // "IBM\0": libtpms
    assert.equal(props.get(TPM_PT.PCR_COUNT), 24);
    assert.ok((props.get(TPM_PT.MAX_RESPONSE_SIZE) ?? 0) >= 1024);
    assert.ok(props.size > 40, `only ${props.size} fixed properties`);

    const banks = await tpm.pcrBanks();
    const sha256 = banks.find((b) => b.hash === TPM_ALG.SHA256);
    const sha384 = banks.find((b) => b.hash === TPM_ALG.SHA384);
    assert.deepEqual(
      sha256?.pcrs,
      Array.from({ length: 24 }, (_, i) => i),
    );
    assert.deepEqual(
      sha384?.pcrs,
      Array.from({ length: 24 }, (_, i) => i),
    );

    const persistent = await tpm.handles(TPM_HT.PERSISTENT);
    assert.ok(persistent.includes(SWTPM_SETUP.RSA_EK_HANDLE), persistent.map((h) => h.toString(16)).join());
    const nv = await tpm.handles(TPM_HT.NV_INDEX);
    assert.ok(nv.includes(SWTPM_SETUP.RSA_EK_CERT_NV_INDEX));
    assert.ok(nv.includes(SWTPM_SETUP.PLATFORM_CERT_NV_INDEX));
  });

  test('CreatePrimary ECC P-256 under the owner: ReadPublic agrees, and the Name is nameAlg ‖ SHA-256(TPMT_PUBLIC)', async () => {
    const created = await tpm.createPrimary(TPM_RH.OWNER, eccSigningTemplate('P-256'));
    await tpm.withTransient(created.handle, async (handle) => {
      assert.equal(handle >>> 24, TPM_HT.TRANSIENT);
      const read = await tpm.readPublic(handle);
      assert.deepEqual(read.publicBytes, created.publicBytes);
      assert.deepEqual(read.name, created.name);
      assert.deepEqual(read.name, computeName(TPM_ALG.SHA256, read.publicBytes));
      assert.equal(read.name.length, 34);
      const pub = read.publicArea;
      assert.equal(pub.type, TPM_ALG.ECC);
      if (pub.type !== TPM_ALG.ECC) return;
      assert.equal(pub.parameters.curveId, TPM_ECC.NIST_P256);
      assert.equal(pub.unique.x.length, 32);
      // Writing the parsed structure back gives the TPM's bytes: reader and writer agree.
      const w = new Writer();
      writePublicArea(w, pub);
      assert.deepEqual(w.finish(), read.publicBytes);
      assert.deepEqual(readPublicArea(new Reader(read.publicBytes, 'public')), pub);
      // A primary key is derived from the hierarchy's seed: the same template gives the same key.
      const again = await tpm.createPrimary(TPM_RH.OWNER, eccSigningTemplate('P-256'));
      await tpm.withTransient(again.handle, async () => assert.deepEqual(again.name, created.name));
    });
  });

  test('Sign with ECDSA P-256/SHA-256, verified by node:crypto with the public key from ReadPublic', async () => {
    const created = await tpm.createPrimary(TPM_RH.OWNER, eccSigningTemplate('P-256'));
    await tpm.withTransient(created.handle, async (handle) => {
      const { publicArea } = await tpm.readPublic(handle);
      const key = publicKeyObject(publicArea);
      for (let i = 0; i < 8; i++) {
        const message = Buffer.from(`umbra channel binding ${i}`);
        const digest = createHash('sha256').update(message).digest();
        const signature = await tpm.sign(handle, digest, { scheme: TPM_ALG.ECDSA, hashAlg: TPM_ALG.SHA256 });
        assert.equal(signature.sigAlg, TPM_ALG.ECDSA);
        const p1363 = ecdsaSignatureP1363(signature, TPM_ECC.NIST_P256);
        assert.equal(p1363.length, 64);
        assert.ok(verify('sha256', message, { key, dsaEncoding: 'ieee-p1363' }, p1363));
        assert.ok(!verify('sha256', Buffer.from('other'), { key, dsaEncoding: 'ieee-p1363' }, p1363));
      }
      // The NULL scheme means the key's own (ECDSA/SHA-256).
      const digest = createHash('sha256').update('x').digest();
      const signature = await tpm.sign(handle, digest, NULL_SCHEME);
      assert.ok(
        verify(
          'sha256',
          Buffer.from('x'),
          { key, dsaEncoding: 'ieee-p1363' },
          ecdsaSignatureP1363(signature, TPM_ECC.NIST_P256),
        ),
      );
    });
  });

  test('ECC P-384 with SHA-384: a 50-byte SHA-384 Name and a 96-byte signature', async () => {
    const created = await tpm.createPrimary(TPM_RH.OWNER, eccSigningTemplate('P-384'));
    await tpm.withTransient(created.handle, async (handle) => {
      const read = await tpm.readPublic(handle);
      assert.equal(read.name.length, 50);
      assert.deepEqual(read.name, computeName(TPM_ALG.SHA384, read.publicBytes));
      const digest = createHash('sha384').update('p384').digest();
      const signature = await tpm.sign(handle, digest, { scheme: TPM_ALG.ECDSA, hashAlg: TPM_ALG.SHA384 });
      const p1363 = ecdsaSignatureP1363(signature, TPM_ECC.NIST_P384);
      assert.equal(p1363.length, 96);
      const key = publicKeyObject(read.publicArea);
      assert.ok(verify('sha384', Buffer.from('p384'), { key, dsaEncoding: 'ieee-p1363' }, p1363));
    });
  });

  test('CreatePrimary RSA-2048 under the endorsement hierarchy; RSASSA signature verified by node:crypto', async () => {
    const created = await tpm.createPrimary(TPM_RH.ENDORSEMENT, rsaSigningTemplate());
    await tpm.withTransient(created.handle, async (handle) => {
      const read = await tpm.readPublic(handle);
      assert.equal(read.publicArea.type, TPM_ALG.RSA);
      if (read.publicArea.type !== TPM_ALG.RSA) return;
      assert.equal(read.publicArea.unique.length, 256);
      assert.deepEqual(read.name, computeName(TPM_ALG.SHA256, read.publicBytes));
      const digest = createHash('sha256').update('rsa').digest();
      const signature = await tpm.sign(handle, digest, { scheme: TPM_ALG.RSASSA, hashAlg: TPM_ALG.SHA256 });
      assert.equal(signature.sigAlg, TPM_ALG.RSASSA);
      if (signature.sigAlg !== TPM_ALG.RSASSA) return;
      assert.ok(verify('sha256', Buffer.from('rsa'), publicKeyObject(read.publicArea), signature.sig));
    });
  });

  test('ReadPublic of the EK swtpm_setup made persistent: the Name checks out', async () => {
    const ek = await tpm.readPublic(SWTPM_SETUP.RSA_EK_HANDLE);
    assert.equal(ek.publicArea.type, TPM_ALG.RSA);
    assert.deepEqual(ek.name, computeName(ek.publicArea.nameAlg, ek.publicBytes));
  });

  test('errors name the command, the handle or parameter, and the meaning', async () => {
    await assert.rejects(tpm.flushContext(0x80ffffff), (error: unknown) => {
      assert.ok(error instanceof TpmError);
      assert.equal(error.rc.parameter, 1);
      assert.match(error.message, /^TPM2_FlushContext: parameter 1: TPM_RC_\w+ \(.+\)$/);
      return true;
    });
    // A handle that is not loaded: the warning points at the first handle.
    await assert.rejects(tpm.readPublic(0x80ffffff), (error: unknown) => {
      assert.ok(error instanceof TpmError);
      assert.match(error.message, /^TPM2_ReadPublic: /);
      assert.match(error.message, /handle|TPM_RC_REFERENCE_H0/);
      return true;
    });
    // A storage key cannot sign: the key handle is named.
    const srk = await tpm.createPrimary(TPM_RH.OWNER, eccStorageTemplate());
    await tpm.withTransient(srk.handle, async (handle) => {
      const digest = new Uint8Array(32);
      await assert.rejects(tpm.sign(handle, digest, NULL_SCHEME), (error: unknown) => {
        assert.ok(error instanceof TpmError);
        assert.match(error.message, /^TPM2_Sign: /);
        return true;
      });
    });
    // An unsupported curve in a template: a parameter error from CreatePrimary.
    const bad = eccSigningTemplate('P-256');
    const template = { ...bad, parameters: { ...bad.parameters, curveId: 0x7777 } };
    await assert.rejects(tpm.createPrimary(TPM_RH.OWNER, template), (error: unknown) => {
      assert.ok(error instanceof TpmError);
      assert.match(error.message, /^TPM2_CreatePrimary: parameter 2: TPM_RC_\w+ \(.+\)$/);
      return true;
    });
  });

  test('withTransient flushes when the function throws', async () => {
    const created = await tpm.createPrimary(TPM_RH.OWNER, eccSigningTemplate('P-256'));
    await assert.rejects(
      tpm.withTransient(created.handle, async () => {
        throw new Error('boom');
      }),
      /boom/,
    );
    assert.ok(!(await tpm.handles(TPM_HT.TRANSIENT)).includes(created.handle));
  });

  test('PCR_Read of all 24 PCRs in two banks (several commands), equal to tpm2_pcrread', async () => {
    const all = Array.from({ length: 24 }, (_, i) => i);
    const { banks } = await tpm.pcrRead([
      { hash: TPM_ALG.SHA256, pcrs: all },
      { hash: TPM_ALG.SHA384, pcrs: all },
    ]);
    const sha256 = banks.get(TPM_ALG.SHA256)!;
    assert.equal(sha256.size, 24);
    assert.equal(banks.get(TPM_ALG.SHA384)?.size, 24);
    assert.deepEqual(sha256.get(0), new Uint8Array(32));
    const { stdout } = await run('tpm2_pcrread', ['sha256'], {
      env: { ...process.env, TPM2TOOLS_TCTI: swtpm.tcti },
    });
    const tools = new Map<number, string>();
    for (const m of stdout.matchAll(/^\s+(\d+)\s*:\s*0x([0-9A-F]+)$/gm))
      tools.set(Number(m[1]), m[2]!.toLowerCase());
    assert.equal(tools.size, 24, stdout);
    for (const [pcr, digest] of sha256)
      assert.equal(Buffer.from(digest).toString('hex'), tools.get(pcr), `PCR ${pcr}`);
  });

  test('tpm2-tools sees the same TPM: tpm2_getrandom, and tpm2_readpublic gives our Name', async () => {
    const env = { ...process.env, TPM2TOOLS_TCTI: swtpm.tcti };
    const { stdout } = await run('tpm2_getrandom', ['--hex', '16'], { env });
    assert.match(stdout.trim(), /^[0-9a-f]{32}$/);
    const created = await tpm.createPrimary(TPM_RH.OWNER, eccSigningTemplate('P-256'));
    await tpm.withTransient(created.handle, async (handle) => {
      const out = await run('tpm2_readpublic', ['-c', `0x${handle.toString(16)}`], { env });
      const name = /^name: ([0-9a-f]+)$/m.exec(out.stdout)?.[1];
      assert.equal(name, Buffer.from(created.name).toString('hex'), out.stdout);
    });
  });

  test('no transient object is left behind', async () => {
    assert.deepEqual(await tpm.handles(TPM_HT.TRANSIENT), []);
  });
});

describe('TPM commands over swtpm (Unix socket)', () => {
  let swtpm: Swtpm;
  let tpm: Tpm;

  before(async () => {
    swtpm = await startSwtpm({ transport: 'unix' });
    tpm = new Tpm(openTransport(swtpm.address));
    await tpm.startup(TPM_SU.CLEAR);
  });

  after(async () => {
    await tpm?.close();
    await swtpm?.stop();
  });

  test('the same commands work over the Unix socket, several in flight queued in order', async () => {
    const lengths = [1, 2, 3, 40, 5, 64, 7, 8];
    const results = await Promise.all(lengths.map((n) => tpm.getRandom(n)));
    assert.deepEqual(
      results.map((r) => r.length),
      lengths,
    );
    const created = await tpm.createPrimary(TPM_RH.OWNER, eccSigningTemplate('P-256'));
    await tpm.withTransient(created.handle, async (handle) => {
      const [a, b] = await Promise.all([tpm.readPublic(handle), tpm.readPublic(handle)]);
      assert.deepEqual(a.name, b.name);
      assert.deepEqual(a.name, computeName(TPM_ALG.SHA256, a.publicBytes));
    });
    assert.deepEqual(await tpm.handles(TPM_HT.TRANSIENT), []);
    await tpm.shutdown(TPM_SU.CLEAR);
  });
});

test('without swtpm installed, the harness fails and says what to install', async () => {
  const path = process.env.PATH;
  process.env.PATH = '/nonexistent';
  try {
    await assert.rejects(startSwtpm(), /swtpm is not installed: .*run scripts\/setup\.sh/);
  } finally {
    process.env.PATH = path;
  }
});
