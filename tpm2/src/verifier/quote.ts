// TPM2_Quote verification on the verifier side, no TPM needed (TPM 2.0 Part 3 §18.4, Part 2 §10.12):
// the TPMS_ATTEST is parsed (magic TPM_GENERATED_VALUE, type TPM_ST_ATTEST_QUOTE), its signature
// checked with the AK's public key and the signature's hash, extraData compared with the nonce the
// verifier sent, the PCR selection with the PCRs claimed, pcrDigest with H(claimed PCR values in
// selection order: bank by bank, index ascending) and clockInfo with the previous quote's.
//
// verifyQuote never throws: every failure, malformed input included, is { ok: false, code, reason }.

import type { KeyObject } from 'node:crypto';
import { nameOf, TPM_ALG, TPM_ST } from '../constants.ts';
import { digestSize, hash, isHashAlg } from '../hash.ts';
import type { Attest, ClockInfo, PcrSelection, PublicArea, Signature } from '../structures.ts';
import { equalBytes, type PcrBanks } from './pcr-policy.ts';
import { checkSignedAttest, errorMessage, hex } from './signed-attest.ts';

export interface QuoteClock {
  readonly clock: bigint;
  readonly resetCount: number;
  readonly restartCount: number;
}

export interface VerifyQuoteInput {
  /** The TPMS_ATTEST bytes exactly as the TPM signed them (TPM2B_ATTEST's body, tpm2_quote -m). */
  readonly attest: Uint8Array;
  /** A marshalled TPMT_SIGNATURE (tpm2_quote -s) or a parsed one. */
  readonly signature: Uint8Array | Signature;
  /**
   * The AK: a marshalled TPMT_PUBLIC, a TPM2B_PUBLIC (tpm2_createak -u), a parsed TPMT_PUBLIC or a
   * node:crypto public key.
   */
  readonly akPublic: Uint8Array | PublicArea | KeyObject;
  /** The qualifying data the verifier sent: extraData must equal it. */
  readonly nonce: Uint8Array;
  /** The PCR values the gateway claims (or PCR_Read returned), by bank and index. */
  readonly pcrs: PcrBanks;
  /**
   * The selection the quote must cover. By default, exactly the banks and indexes in `pcrs`. With
   * it, `pcrs` must hold a value for every PCR selected (and may hold more).
   */
  readonly selection?: readonly PcrSelection[];
  /** clockInfo of the previous quote from the same TPM, to catch a clock going backwards. */
  readonly previous?: QuoteClock;
  /**
   * If given, the AK's qualified Name (TPM2_ReadPublic's qualifiedName, recorded at enrollment): the
   * quote's qualifiedSigner must equal it, so a quote by the same key under another hierarchy or
   * parent is refused.
   */
  readonly akQualifiedName?: Uint8Array;
  /**
   * Check the AK's attributes with checkAttestationKey (restricted, sign, fixedTPM, …) when akPublic is
   * a public area; false by default (a KeyObject has no attributes to check). An unrestricted key can
   * sign a TPMS_ATTEST it was handed, so a controller that learns the AK from the gateway sets this.
   */
  readonly requireAttestationKey?: boolean;
}

export type QuoteFailure =
  | 'format'
  | 'magic'
  | 'type'
  | 'key'
  | 'signature'
  | 'nonce'
  | 'pcr-selection'
  | 'pcr-digest'
  | 'clock'
  | 'signer';

export interface VerifiedQuote {
  readonly attest: Attest;
  readonly qualifiedSigner: Uint8Array;
  readonly clockInfo: ClockInfo;
  readonly firmwareVersion: bigint;
  readonly pcrSelect: readonly PcrSelection[];
  readonly pcrDigest: Uint8Array;
  /** The signature's (and the PCR digest's) hash algorithm. */
  readonly hashAlg: number;
  readonly signatureAlg: number;
  /** Things that did not fail the quote but the caller should know, e.g. clockInfo.safe = NO. */
  readonly notes: readonly string[];
}

export type VerifyQuoteResult =
  | { readonly ok: true; readonly quote: VerifiedQuote }
  | { readonly ok: false; readonly code: QuoteFailure; readonly reason: string };

function fail(code: QuoteFailure, reason: string): VerifyQuoteResult {
  return { ok: false, code, reason };
}

function describeSelection(selection: readonly PcrSelection[]): string {
  if (selection.length === 0) return 'nothing';
  return selection
    .map((s) => `${nameOf(TPM_ALG, s.hash).toLowerCase()}:${s.pcrs.length ? s.pcrs.join(',') : '-'}`)
    .join(' ');
}

/** The selection a quote must cover when none is given: the claimed banks, indexes ascending. */
function selectionOf(pcrs: PcrBanks): PcrSelection[] {
  return [...pcrs].map(([bank, values]) => ({ hash: bank, pcrs: [...values.keys()].sort((a, b) => a - b) }));
}

/** Same banks with the same indexes, in any bank order (the TPM may order banks its own way). */
function sameSelection(a: readonly PcrSelection[], b: readonly PcrSelection[]): boolean {
  const norm = (s: readonly PcrSelection[]) => {
    const m = new Map<number, Set<number>>();
    for (const { hash: bank, pcrs } of s) {
      const set = m.get(bank) ?? new Set<number>();
      for (const p of pcrs) set.add(p);
      m.set(bank, set);
    }
    for (const [bank, set] of m) if (set.size === 0) m.delete(bank);
    return m;
  };
  const x = norm(a);
  const y = norm(b);
  if (x.size !== y.size) return false;
  for (const [bank, set] of x) {
    const other = y.get(bank);
    if (!other || other.size !== set.size) return false;
    for (const p of set) if (!other.has(p)) return false;
  }
  return true;
}

/** Verifies a TPM2_Quote. Never throws. */
export function verifyQuote(input: VerifyQuoteInput): VerifyQuoteResult {
  try {
    return verifyQuoteOrThrow(input);
  } catch (error) {
    return fail('format', errorMessage(error));
  }
}

function verifyQuoteOrThrow(input: VerifyQuoteInput): VerifyQuoteResult {
  const checked = checkSignedAttest(input, {
    type: TPM_ST.ATTEST_QUOTE,
    what: 'quote',
    checkAttributes: (ak) =>
      Boolean(input.requireAttestationKey) && (ak instanceof Uint8Array || 'objectAttributes' in ak),
  });
  if (!checked.ok) return checked;
  const { attest, attested, signature } = checked;
  const { pcrSelect, pcrDigest } = attested;
  const hashAlg = signature.hash;

  const expected = input.selection ?? selectionOf(input.pcrs);
  if (!sameSelection(pcrSelect, expected))
    return fail(
      'pcr-selection',
      `the quote covers ${describeSelection(pcrSelect)}, not the expected ${describeSelection(expected)}`,
    );

  // pcrDigest = H(PCR values in the quote's selection order), H the signing scheme's hash.
  const values: Uint8Array[] = [];
  for (const { hash: bank, pcrs } of pcrSelect) {
    for (const index of pcrs) {
      const value = input.pcrs.get(bank)?.get(index);
      if (value === undefined)
        return fail(
          'pcr-selection',
          `the quote covers ${nameOf(TPM_ALG, bank).toLowerCase()} PCR ${index} but no value is claimed for it`,
        );
      if (isHashAlg(bank) && value.length !== digestSize(bank))
        return fail(
          'pcr-digest',
          `the claimed ${nameOf(TPM_ALG, bank).toLowerCase()} PCR ${index} is ${value.length} bytes, not ${digestSize(bank)}`,
        );
      values.push(value);
    }
  }
  const computed = hash(hashAlg, ...values);
  if (!equalBytes(computed, pcrDigest))
    return fail(
      'pcr-digest',
      `pcrDigest ${hex(pcrDigest)} is not ${nameOf(TPM_ALG, hashAlg)} of the claimed PCR values (${hex(computed)}): ` +
        'the PCRs changed or the claimed values are not the quoted ones',
    );

  const { clockInfo } = attest;
  const previous = input.previous;
  if (previous) {
    if (clockInfo.resetCount < previous.resetCount)
      return fail('clock', `resetCount went back from ${previous.resetCount} to ${clockInfo.resetCount}`);
    if (clockInfo.resetCount === previous.resetCount && clockInfo.restartCount < previous.restartCount)
      return fail(
        'clock',
        `restartCount went back from ${previous.restartCount} to ${clockInfo.restartCount} without a reset`,
      );
    if (
      clockInfo.resetCount === previous.resetCount &&
      clockInfo.restartCount === previous.restartCount &&
      clockInfo.clock < previous.clock
    )
      return fail(
        'clock',
        `clock went back from ${previous.clock} to ${clockInfo.clock} without a reset or restart: a replayed quote`,
      );
  }
  const notes: string[] = [];
  if (!clockInfo.safe)
    notes.push('clockInfo.safe is NO: the clock may have gone backwards since it was last reported');

  return {
    ok: true,
    quote: {
      attest,
      qualifiedSigner: attest.qualifiedSigner,
      clockInfo,
      firmwareVersion: attest.firmwareVersion,
      pcrSelect,
      pcrDigest,
      hashAlg,
      signatureAlg: signature.sigAlg,
      notes,
    },
  };
}
