// What an attested gateway keeps on disk, and how it gets its secrets back at start.
//
//   DIR/tpm.json     which TPM (its address), which EK kind, the EK hash, the persistent handles and
//                    the PCRs the secrets are sealed to: not secret, read by `run`.
//   DIR/keys.sealed  the link/tunnel TLS private key and the replay-state key, sealed by that TPM to
//                    SEAL_PCRS (mode 0600). A disk moved to another box cannot load it; booted into
//                    other firmware, the TPM refuses to unseal it.
// There is no DIR/tls.key on an attested gateway.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '@umbra/protocol';
import {
  SealedBlobFormatError,
  SealedByOtherTpmError,
  SealedToOtherBootStateError,
  UMBRA_PERSISTENT,
} from '@umbra/tpm2';
import { z } from 'zod';
import { GatewayTpm, SEAL_PCRS } from './gateway-tpm.ts';

export const TPM_RECORD_FILE = 'tpm.json';
export const SEALED_KEYS_FILE = 'keys.sealed';

const tpmRecord = z
  .object({
    address: z.string().min(1).max(4096),
    ek: z.enum(['rsa', 'ecc']),
    ekHash: z.string().regex(/^[0-9a-f]{64}$/),
    handles: z.object({ srk: z.number().int(), ak: z.number().int(), identity: z.number().int() }).strict(),
    sealedTo: z
      .object({ bank: z.literal('sha256'), pcrs: z.array(z.number().int().min(0).max(23)) })
      .strict(),
  })
  .strict();
export type TpmRecord = z.infer<typeof tpmRecord>;

const sealedSecrets = z
  .object({ tlsKey: z.string().min(1).max(16_384), replayKey: z.string().regex(/^[A-Za-z0-9+/]{43}=$/) })
  .strict();

export interface UnsealedKeys {
  /** PKCS#8 PEM of the TLS key for the controller link and the tunnel listener. */
  tlsKey: string;
  /** 32 bytes: authenticates the replay state (ReplayGuard's stateKey). */
  replayKey: Buffer;
}

export function tpmRecordFor(address: string, ek: 'rsa' | 'ecc', ekHash: string): TpmRecord {
  return {
    address,
    ek,
    ekHash,
    handles: { srk: UMBRA_PERSISTENT.SRK, ak: UMBRA_PERSISTENT.AK, identity: UMBRA_PERSISTENT.IDENTITY_KEY },
    sealedTo: { bank: 'sha256', pcrs: [...SEAL_PCRS.pcrs] },
  };
}

/** Whether DIR holds an attested enrollment (a TPM record). */
export function isAttested(dir: string): boolean {
  return existsSync(join(dir, TPM_RECORD_FILE));
}

export function readTpmRecord(dir: string): TpmRecord {
  const path = join(dir, TPM_RECORD_FILE);
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (error) {
    throw new Error(`${path}: cannot be read (${(error as Error).message}); enroll the gateway again`);
  }
  const result = tpmRecord.safeParse(parsed);
  if (!result.success)
    throw new Error(
      `${path}: ${result.error.issues[0]?.path.join('.') || 'record'}: ${result.error.issues[0]?.message}; enroll the gateway again`,
    );
  return result.data;
}

/** Seals the keys with `tpm` and writes keys.sealed and tpm.json (atomically, keys first). */
export async function writeSealedKeys(
  dir: string,
  tpm: GatewayTpm,
  record: TpmRecord,
  keys: UnsealedKeys,
): Promise<void> {
  const secret = Buffer.from(
    JSON.stringify({ tlsKey: keys.tlsKey, replayKey: keys.replayKey.toString('base64') }),
  );
  try {
    writeFileAtomic(join(dir, SEALED_KEYS_FILE), Buffer.from(await tpm.seal(secret)), 0o600);
  } finally {
    secret.fill(0);
  }
  writeFileAtomic(join(dir, TPM_RECORD_FILE), `${JSON.stringify(record, null, 2)}\n`, 0o644);
}

/** An attested gateway's TPM and its unsealed keys; the caller closes the TPM. */
export async function unsealKeys(
  dir: string,
  address?: string,
): Promise<{ tpm: GatewayTpm; keys: UnsealedKeys; record: TpmRecord }> {
  const record = readTpmRecord(dir);
  const path = join(dir, SEALED_KEYS_FILE);
  let sealed: Buffer;
  try {
    sealed = readFileSync(path);
  } catch (error) {
    throw new Error(`${path}: cannot be read (${(error as Error).message}); enroll the gateway again`);
  }
  const tpm = await GatewayTpm.open(address ?? record.address);
  try {
    const secret = Buffer.from(await tpm.unseal(sealed));
    try {
      const keys = sealedSecrets.parse(JSON.parse(secret.toString('utf8')));
      return { tpm, keys: { tlsKey: keys.tlsKey, replayKey: Buffer.from(keys.replayKey, 'base64') }, record };
    } finally {
      secret.fill(0);
    }
  } catch (error) {
    await tpm.close().catch(() => undefined);
    if (error instanceof SealedToOtherBootStateError)
      throw new Error(
        `${path}: the TPM refuses to unseal the gateway's keys: ${error.message}. This box booted other firmware ` +
          'than it enrolled with; restore it, or re-enroll it (which the controller will attest).',
      );
    if (error instanceof SealedByOtherTpmError)
      throw new Error(
        `${path}: sealed by another TPM (${error.message}); this disk was moved from another box: re-enroll this one`,
      );
    if (error instanceof SealedBlobFormatError)
      throw new Error(`${path}: ${error.message}; enroll the gateway again`);
    if (/^no storage key/.test((error as Error).message))
      throw new Error(
        `${path}: this TPM has no Umbra storage key: it was cleared, or this disk came from another box; re-enroll this one`,
      );
    throw error;
  }
}
