// PCR values on the verifier side: the banks a gateway reports (or a quote covers) compared with the
// controller's golden values.

import { nameOf, TPM_ALG } from '../constants.ts';

/** PCR values by bank (TPM_ALG hash) and index, as `Tpm.pcrRead` returns them. */
export type PcrBanks = ReadonlyMap<number, ReadonlyMap<number, Uint8Array>>;

export interface PcrDifference {
  /** The bank, a TPM_ALG hash such as TPM_ALG.SHA256. */
  readonly bank: number;
  readonly index: number;
  readonly expected: Uint8Array;
  /** Undefined when the PCR (or its whole bank) is missing from the actual values. */
  readonly actual: Uint8Array | undefined;
}

export interface PcrComparison {
  /** True when every golden PCR is present in `actual` with the same value. */
  readonly ok: boolean;
  /** Every differing or missing PCR, bank by bank (golden order), index ascending. */
  readonly differences: readonly PcrDifference[];
  /** The differing indexes of each bank that has any. */
  readonly byBank: ReadonlyMap<number, readonly number[]>;
}

/** Constant-length-agnostic byte equality (PCR values are public: no need for timing safety). */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Compares PCR values with golden ones. Only the golden PCRs are compared: PCRs in `actual` that the
 * golden values do not mention are not differences.
 */
export function comparePcrs(actual: PcrBanks, golden: PcrBanks): PcrComparison {
  const differences: PcrDifference[] = [];
  const byBank = new Map<number, number[]>();
  for (const [bank, expectedValues] of golden) {
    const actualBank = actual.get(bank);
    for (const index of [...expectedValues.keys()].sort((a, b) => a - b)) {
      const expected = expectedValues.get(index)!;
      const value = actualBank?.get(index);
      if (value !== undefined && equalBytes(value, expected)) continue;
      differences.push({ bank, index, expected, actual: value });
      const list = byBank.get(bank) ?? [];
      list.push(index);
      byBank.set(bank, list);
    }
  }
  return { ok: differences.length === 0, differences, byBank };
}

/** A one-line description of the differences, e.g. "sha256 PCR 7 differs; sha1 PCR 0 missing". */
export function describePcrDifferences(differences: readonly PcrDifference[]): string {
  return differences
    .map(
      (d) =>
        `${nameOf(TPM_ALG, d.bank).toLowerCase()} PCR ${d.index} ${d.actual === undefined ? 'missing' : 'differs'}`,
    )
    .join('; ');
}
