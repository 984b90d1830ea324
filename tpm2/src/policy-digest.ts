// Policy digests computed in software (Part 1 §19.7, Part 3 §23): what a policy session's policyDigest
// becomes after each assertion, so that an object's authPolicy can be written without a TPM (or
// checked against a trial session). Each assertion is policyDigest' = H(policyDigest ‖ TPM_CC ‖ …) in
// the session's hash; PolicyOR starts over from zeros.

import { TPM_CC } from './constants.ts';
import { digestSize, hash } from './hash.ts';
import { Writer } from './marshal.ts';
import { type PcrSelection, writePcrSelections } from './structures.ts';

/** PCR values by bank (TPM_ALG hash) and index, as Tpm.pcrRead returns them. */
export type PcrValueBanks = ReadonlyMap<number, ReadonlyMap<number, Uint8Array>>;

function cc(code: number): Uint8Array {
  return new Writer().u32(code).finish();
}

/**
 * The pcrDigest PolicyPCR compares: H_session(the selected PCR values), in TPML_PCR_SELECTION order
 * (bank by bank as listed, each bank's PCRs ascending, as the TPM walks the bitmap).
 */
export function pcrValuesDigest(
  sessionHash: number,
  selection: readonly PcrSelection[],
  values: PcrValueBanks,
): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const { hash: bank, pcrs } of selection) {
    for (const index of [...new Set(pcrs)].sort((a, b) => a - b)) {
      const value = values.get(bank)?.get(index);
      if (!value)
        throw new Error(`pcrValuesDigest: no value for PCR ${index} of bank 0x${bank.toString(16)}`);
      parts.push(value);
    }
  }
  return hash(sessionHash, ...parts);
}

/**
 * A policy digest being built, one assertion at a time, in the session hash `hashAlg`:
 *
 *   new PolicyDigest(TPM_ALG.SHA256).pcr(selection, pcrDigest).digest
 */
export class PolicyDigest {
  readonly hashAlg: number;
  #digest: Uint8Array;

  constructor(hashAlg: number, initial?: Uint8Array) {
    this.hashAlg = hashAlg;
    const size = digestSize(hashAlg);
    if (initial && initial.length !== size)
      throw new RangeError(
        `PolicyDigest: an initial digest of ${initial.length} bytes for a ${size}-byte hash`,
      );
    this.#digest = initial ? Uint8Array.from(initial) : new Uint8Array(size);
  }

  /** The policyDigest so far (what TPM2_PolicyGetDigest would return). */
  get digest(): Uint8Array {
    return Uint8Array.from(this.#digest);
  }

  /** TPM2_PolicyPCR with a pcrDigest (see pcrValuesDigest): H(old ‖ CC ‖ TPML_PCR_SELECTION ‖ pcrDigest). */
  pcr(selection: readonly PcrSelection[], pcrDigest: Uint8Array): this {
    if (pcrDigest.length !== digestSize(this.hashAlg))
      throw new RangeError(`PolicyPCR: pcrDigest is ${pcrDigest.length} bytes, not the session hash's size`);
    const w = new Writer();
    writePcrSelections(w, selection);
    this.#digest = hash(this.hashAlg, this.#digest, cc(TPM_CC.PolicyPCR), w.finish(), pcrDigest);
    return this;
  }

  /** TPM2_PolicyPCR over these PCR values. */
  pcrValues(selection: readonly PcrSelection[], values: PcrValueBanks): this {
    return this.pcr(selection, pcrValuesDigest(this.hashAlg, selection, values));
  }

  /**
   * TPM2_PolicySecret(authHandle) (PolicyUpdate, Part 3 §23.2.3): H(H(old ‖ CC ‖ authName) ‖ policyRef).
   * `authName` is the entity's Name: the handle for a hierarchy, nameAlg ‖ H(public) for an object.
   */
  secret(authName: Uint8Array, policyRef: Uint8Array = new Uint8Array()): this {
    const first = hash(this.hashAlg, this.#digest, cc(TPM_CC.PolicySecret), authName);
    this.#digest = hash(this.hashAlg, first, policyRef);
    return this;
  }

  /** TPM2_PolicyAuthValue: H(old ‖ CC). */
  authValue(): this {
    this.#digest = hash(this.hashAlg, this.#digest, cc(TPM_CC.PolicyAuthValue));
    return this;
  }

  /**
   * TPM2_PolicyOR over 2 to 8 branch digests: H(0…0 ‖ CC ‖ branch1 ‖ … ‖ branchN). The session's
   * digest must be one of the branches when the TPM runs it; here the digest so far is replaced.
   */
  or(branches: readonly Uint8Array[]): this {
    if (branches.length < 2 || branches.length > 8)
      throw new RangeError(`PolicyOR takes 2 to 8 branches, not ${branches.length}`);
    const size = digestSize(this.hashAlg);
    for (const b of branches)
      if (b.length !== size) throw new RangeError(`PolicyOR: a branch of ${b.length} bytes, not ${size}`);
    this.#digest = hash(this.hashAlg, new Uint8Array(size), cc(TPM_CC.PolicyOR), ...branches);
    return this;
  }
}
