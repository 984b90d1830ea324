// npm run bench:tpm — the TPM operations a gateway repeats, done in-process by @umbra/tpm2 against
// the same done by Debian's tpm2-tools run as processes, both against one private swtpm over TCP.
//
// Each round times, interleaved so that the machine's load falls on both sides alike:
// - sign: an ECDSA P-256 signature over a SHA-256 digest with the identity key, persistent at
//   0x81000003 (eccSigningTemplate under the SRK at 0x81000001): `Tpm.sign` against
//   `tpm2_sign -c 0x81000003 -g sha256 -s ecdsa -d`;
// - re-attestation: a fresh 32-byte nonce, a Quote over sha256 PCRs 0-7 with the AK persistent at
//   0x81000002 (eccAttestationTemplate), the PCRs read, and the quote verified (verifyQuote: signature,
//   nonce, selection, PCR digest): in-process against `tpm2_quote -m -s -o` (quote and PCR read, no
//   verification), and separately `tpm2_checkquote` on tpm2_quote's files against verifyQuote alone.
// Median and p99 per operation, and the ratio of the medians (process / in-process). The swtpm is
// manufactured fresh in a temporary directory and stopped at the end (tpm2/src/testing/swtpm.ts).
//
// Options: --rounds N (200)  --quick (30 rounds)  --json FILE

import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import {
  eccAttestationTemplate,
  eccSigningTemplate,
  ensureStorageKey,
  openTransport,
  type PublicArea,
  publicKeyObject,
  TPM_ALG,
  TPM_SU,
  Tpm,
  UMBRA_PERSISTENT,
  verifyQuote,
} from '../../tpm2/src/index.ts';
import { startSwtpm } from '../../tpm2/src/testing/swtpm.ts';
import { percentile } from './measure.ts';
import { printHelpAndExit, wholeOption } from './options.ts';

const run = promisify(execFile);

const { values: opts } = parseArgs({
  options: {
    rounds: { type: 'string', default: '200' },
    quick: { type: 'boolean', default: false },
    json: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (opts.help) printHelpAndExit(import.meta.url);
const ROUNDS = opts.quick ? 30 : wholeOption('rounds', opts.rounds!, 1, 100_000);
const WARMUP = 5;
const SELECTION = [{ hash: TPM_ALG.SHA256, pcrs: [0, 1, 2, 3, 4, 5, 6, 7] }];
const ECDSA_SHA256 = { scheme: TPM_ALG.ECDSA, hashAlg: TPM_ALG.SHA256 };

type Operation =
  | 'sign: Tpm.sign (in-process)'
  | 'sign: tpm2_sign (process)'
  | 're-attest: quote + PCR_Read + verifyQuote (in-process)'
  | 're-attest: tpm2_quote (process)'
  | 'verify: verifyQuote (in-process)'
  | 'verify: tpm2_checkquote (process)';

const samples = new Map<Operation, number[]>();

async function timed<T>(operation: Operation, record: boolean, fn: () => Promise<T>): Promise<T> {
  const started = performance.now();
  const result = await fn();
  const ms = performance.now() - started;
  if (record) {
    const list = samples.get(operation) ?? [];
    list.push(ms);
    samples.set(operation, list);
  }
  return result;
}

const swtpm = await startSwtpm();
const dir = mkdtempSync(join(tmpdir(), 'umbra-bench-tpm-'));
const tpm = new Tpm(openTransport(swtpm.address));
const env = { ...process.env, TPM2TOOLS_TCTI: swtpm.tcti };
try {
  await tpm.startup(TPM_SU.CLEAR);
  await ensureStorageKey(tpm);
  const persist = async (template: PublicArea, handle: number) => {
    const created = await tpm.create(UMBRA_PERSISTENT.SRK, template);
    const { handle: transient } = await tpm.load(UMBRA_PERSISTENT.SRK, created);
    await tpm.withTransient(transient, (h) => tpm.evictControl(h, handle));
    return created.publicArea;
  };
  await persist(eccSigningTemplate('P-256'), UMBRA_PERSISTENT.IDENTITY_KEY);
  const akPublic = await persist(eccAttestationTemplate(), UMBRA_PERSISTENT.AK);
  const akPem = join(dir, 'ak.pem');
  writeFileSync(akPem, publicKeyObject(akPublic).export({ format: 'pem', type: 'spki' }));
  const digestFile = join(dir, 'digest.bin');
  const hex = (n: number) => `0x${n.toString(16)}`;

  for (let round = 0; round < WARMUP + ROUNDS; round++) {
    const record = round >= WARMUP;
    const digest = new Uint8Array(randomBytes(32));
    writeFileSync(digestFile, digest);
    await timed('sign: Tpm.sign (in-process)', record, () =>
      tpm.sign(UMBRA_PERSISTENT.IDENTITY_KEY, digest, ECDSA_SHA256),
    );
    await timed('sign: tpm2_sign (process)', record, () =>
      run(
        'tpm2_sign',
        [
          '-c',
          hex(UMBRA_PERSISTENT.IDENTITY_KEY),
          '-g',
          'sha256',
          '-s',
          'ecdsa',
          '-d',
          '-o',
          join(dir, 'sig'),
          digestFile,
        ],
        { env },
      ),
    );

    // The controller's nonce is made by the controller, not the TPM: node:crypto on both sides.
    const nonce = new Uint8Array(randomBytes(32));
    let quoted: Awaited<ReturnType<Tpm['quote']>> | undefined;
    let pcrs: Awaited<ReturnType<Tpm['pcrRead']>>['banks'] | undefined;
    await timed('re-attest: quote + PCR_Read + verifyQuote (in-process)', record, async () => {
      quoted = await tpm.quote(UMBRA_PERSISTENT.AK, nonce, SELECTION);
      pcrs = (await tpm.pcrRead(SELECTION)).banks;
      const result = verifyQuote({
        attest: quoted.attestBytes,
        signature: quoted.signature,
        akPublic,
        nonce,
        pcrs,
      });
      if (!result.ok) throw new Error(`in-process quote did not verify: ${result.reason}`);
    });
    await timed('verify: verifyQuote (in-process)', record, async () => {
      const result = verifyQuote({
        attest: quoted!.attestBytes,
        signature: quoted!.signature,
        akPublic,
        nonce,
        pcrs: pcrs!,
      });
      if (!result.ok) throw new Error(result.reason);
    });
    const nonceHex = Buffer.from(nonce).toString('hex');
    const files = { m: join(dir, 'quote.msg'), s: join(dir, 'quote.sig'), o: join(dir, 'quote.pcrs') };
    await timed('re-attest: tpm2_quote (process)', record, () =>
      run(
        'tpm2_quote',
        [
          '-c',
          hex(UMBRA_PERSISTENT.AK),
          '-l',
          'sha256:0,1,2,3,4,5,6,7',
          '-q',
          nonceHex,
          '-g',
          'sha256',
        ].concat(['-m', files.m, '-s', files.s, '-o', files.o]),
        { env },
      ),
    );
    await timed('verify: tpm2_checkquote (process)', record, () =>
      run('tpm2_checkquote', [
        '-u',
        akPem,
        '-m',
        files.m,
        '-s',
        files.s,
        '-f',
        files.o,
        '-g',
        'sha256',
        '-q',
        nonceHex,
      ]),
    );
  }

  const rows = [...samples].map(([operation, list]) => ({
    operation,
    samples: list.length,
    medianMs: percentile(list, 50),
    p99Ms: percentile(list, 99),
  }));
  const median = (op: Operation) => rows.find((r) => r.operation === op)!.medianMs;
  const ratios = {
    sign: median('sign: tpm2_sign (process)') / median('sign: Tpm.sign (in-process)'),
    reattest:
      median('re-attest: tpm2_quote (process)') /
      median('re-attest: quote + PCR_Read + verifyQuote (in-process)'),
    verify: median('verify: tpm2_checkquote (process)') / median('verify: verifyQuote (in-process)'),
  };
  const fmt = (ms: number) => (ms < 1 ? ms.toFixed(3) : ms.toFixed(2));
  console.log(`swtpm over TCP (${swtpm.address}), ${ROUNDS} rounds after ${WARMUP} warm-up, ms:\n`);
  console.log('| operation | median | p99 |');
  console.log('| --- | ---: | ---: |');
  for (const r of rows) console.log(`| ${r.operation} | ${fmt(r.medianMs)} | ${fmt(r.p99Ms)} |`);
  console.log(
    `\nprocess / in-process, medians: sign ×${ratios.sign.toFixed(1)}, re-attestation ×${ratios.reattest.toFixed(1)}, verification ×${ratios.verify.toFixed(1)}`,
  );
  const load = (await import('node:os')).loadavg().map((l) => l.toFixed(1));
  console.log(`load average: ${load.join(' ')}`);
  if (opts.json)
    writeFileSync(opts.json, `${JSON.stringify({ rounds: ROUNDS, rows, ratios, load }, null, 2)}\n`);
} finally {
  await tpm.close();
  await swtpm.stop();
  rmSync(dir, { recursive: true, force: true });
}
