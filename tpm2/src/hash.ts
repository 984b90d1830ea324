// The hash algorithms Umbra uses with a TPM, and their node:crypto names and sizes.

import { createHash } from 'node:crypto';
import { nameOf, TPM_ALG } from './constants.ts';

const HASHES: Readonly<Record<number, { readonly node: string; readonly size: number }>> = {
  [TPM_ALG.SHA1]: { node: 'sha1', size: 20 },
  [TPM_ALG.SHA256]: { node: 'sha256', size: 32 },
  [TPM_ALG.SHA384]: { node: 'sha384', size: 48 },
  [TPM_ALG.SHA512]: { node: 'sha512', size: 64 },
};

/** The largest digest a TPM returns (SHA-512): the bound for TPM2B_DIGEST. */
export const MAX_DIGEST_SIZE = 64;

function hashInfo(alg: number): { readonly node: string; readonly size: number } {
  const info = HASHES[alg];
  if (!info)
    throw new Error(`hash algorithm ${nameOf(TPM_ALG, alg)} is not supported (SHA1, SHA256, SHA384, SHA512)`);
  return info;
}

export function isHashAlg(alg: number): boolean {
  return HASHES[alg] !== undefined;
}

export function digestSize(alg: number): number {
  return hashInfo(alg).size;
}

export function nodeHashName(alg: number): string {
  return hashInfo(alg).node;
}

export function hash(alg: number, ...parts: Uint8Array[]): Uint8Array {
  const h = createHash(hashInfo(alg).node);
  for (const part of parts) h.update(part);
  return new Uint8Array(h.digest());
}
