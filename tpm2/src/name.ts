// Names (Part 1 §16): what a TPM binds an entity to in HMACs, policies and attestations. An object's
// Name is its nameAlg followed by the nameAlg digest of its marshalled TPMT_PUBLIC; a PCR, session or
// permanent handle's Name is the handle itself.

import { TPM_HT } from './constants.ts';
import { hash } from './hash.ts';
import { Writer } from './marshal.ts';

/** nameAlg ‖ H_nameAlg(publicArea), from the marshalled TPMT_PUBLIC (or TPMS_NV_PUBLIC for an NV index). */
export function computeName(nameAlg: number, publicArea: Uint8Array): Uint8Array {
  const digest = hash(nameAlg, publicArea);
  return new Writer().u16(nameAlg).bytes(digest).finish();
}

/** The Name of an entity whose Name is its handle: PCRs, sessions and permanent handles. */
export function handleNameBytes(handle: number): Uint8Array {
  const type = handle >>> 24;
  if (type === TPM_HT.TRANSIENT || type === TPM_HT.PERSISTENT || type === TPM_HT.NV_INDEX) {
    throw new Error(
      `handle 0x${handle.toString(16)} is an object or NV index: its Name comes from its public area`,
    );
  }
  return new Writer().u32(handle).finish();
}
