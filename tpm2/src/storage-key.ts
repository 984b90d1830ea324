// The storage root key (SRK) Umbra's keys and sealed secrets live under: a primary key of the owner
// hierarchy, made from the TCG storage template and kept at UMBRA_PERSISTENT.SRK. Being a primary, it
// is the same key every time the template is used on this TPM (until TPM2_Clear changes the owner
// seed), so a lost persistent copy can be remade and still open what was wrapped under it.

import { TPM_HT, TPM_RH, TPMA_OBJECT } from './constants.ts';
import { TPM_RC, TpmError } from './response-code.ts';
import type { PublicArea } from './structures.ts';
import { eccStorageTemplate, UMBRA_PERSISTENT } from './templates.ts';
import type { ReadPublicResult, Tpm } from './tpm.ts';

export interface EnsureStorageKeyOptions {
  /** Where the SRK is kept; UMBRA_PERSISTENT.SRK by default. */
  readonly handle?: number;
  /** The storage template; the TCG ECC P-256 one (eccStorageTemplate) by default. */
  readonly template?: PublicArea;
}

const STORAGE_BITS =
  TPMA_OBJECT.restricted | TPMA_OBJECT.decrypt | TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent;

/**
 * The SRK at `handle`, created (CreatePrimary under TPM_RH_OWNER, EvictControl, flush) if the handle
 * is empty. Idempotent. Something else at the handle (not a restricted decryption key that never leaves
 * the TPM) is an error rather than something to overwrite.
 */
export async function ensureStorageKey(
  tpm: Tpm,
  options: EnsureStorageKeyOptions = {},
): Promise<ReadPublicResult> {
  const handle = options.handle ?? UMBRA_PERSISTENT.SRK;
  if (handle >>> 24 !== TPM_HT.PERSISTENT)
    throw new RangeError(`ensureStorageKey: 0x${handle.toString(16)} is not a persistent handle`);
  try {
    const existing = await tpm.readPublic(handle);
    if ((existing.publicArea.objectAttributes & STORAGE_BITS) !== STORAGE_BITS)
      throw new Error(
        `the object at 0x${handle.toString(16)} is not a storage key (restricted, decrypt, fixedTPM, fixedParent): ` +
          'refusing to use it as the parent of sealed secrets',
      );
    return existing;
  } catch (error) {
    if (!(error instanceof TpmError && error.base === TPM_RC.HANDLE)) throw error;
  }
  const primary = await tpm.createPrimary(TPM_RH.OWNER, options.template ?? eccStorageTemplate());
  await tpm.withTransient(primary.handle, (transient) => tpm.evictControl(transient, handle));
  return tpm.readPublic(handle);
}
