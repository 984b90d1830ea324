// Attested gateway enrollment and the link's channel binding: what a gateway with a TPM and its
// controller exchange, shared by both sides. The TPM structures travel as the exact bytes the TPM
// produced (base64 in JSON, byte strings on the link), so the controller verifies what was signed
// rather than a re-encoding of it.
//
// Enrollment is two requests (after go-attestation and Keylime):
//   1. challenge: the token, the EK certificate and public area, and the attestation key's (AK)
//      public area. The controller checks the EK chains to a root the operator trusts and that the
//      AK is a restricted signing key, then answers a credential that only the TPM holding that EK
//      can open, and only for that AK (MakeCredential), and a fresh nonce.
//   2. enroll: the opened secret (proof the AK lives beside the EK), a quote over the boot PCRs
//      with the nonce, the identity key certified by the AK with the same nonce, and the usual SPA
//      key and certificate request. Only now is the token spent.

import { createHash } from 'node:crypto';

export const ATTEST_CHALLENGE_PATH = '/v1/gateway/attest/challenge';
export const ATTEST_ENROLL_PATH = '/v1/gateway/attest/enroll';

/**
 * The boot PCRs a gateway quotes: the SHA-256 bank, PCRs 0-7 (firmware code and configuration,
 * option ROMs, boot loader, and the secure-boot policy), as a UEFI platform measures them.
 */
export const BOOT_PCRS = { bank: 'sha256', pcrs: [0, 1, 2, 3, 4, 5, 6, 7] } as const;

/** The nonce the controller sends for a quote: 32 random bytes. */
export const ATTESTATION_NONCE_BYTES = 32;

/** How long a challenge may be answered: a quote over an older nonce is stale. */
export const ATTEST_CHALLENGE_TTL_MS = 60_000;

export interface AttestChallengeRequest {
  /** Absent for a zero-touch enrollment: the controller then needs a claim for this TPM's EK hash. */
  token?: string;
  /** The EK certificate's DER as the TPM's NV index holds it (a TCG header is stripped), base64. */
  ekCertificate: string;
  /** The EK's TPMT_PUBLIC (from CreatePrimary with the TCG template), base64. */
  ekPublic: string;
  /** The AK's TPMT_PUBLIC, base64. */
  akPublic: string;
}

export interface AttestChallengeResponse {
  /** Names this challenge in the enroll request (hex). */
  challenge: string;
  /** TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET for ActivateCredential, base64. */
  credentialBlob: string;
  encryptedSecret: string;
  /** The qualifying data for the quote and the identity key's certification, base64. */
  nonce: string;
  /** What to quote. */
  pcrs: { bank: string; pcrs: number[] };
}

export interface SignedAttest {
  /** The TPMS_ATTEST bytes as signed, base64. */
  attest: string;
  /** The TPMT_SIGNATURE, base64. */
  signature: string;
}

export interface AttestEnrollRequest {
  /** As in the challenge request: absent for a zero-touch enrollment. */
  token?: string;
  challenge: string;
  /** What ActivateCredential released, base64. */
  secret: string;
  quote: SignedAttest;
  /** The quoted PCRs' values: index (decimal) → digest (hex). */
  pcrValues: Record<string, string>;
  /** The gateway identity key's TPMT_PUBLIC, base64: it signs each link's channel binding. */
  identityPublic: string;
  /** TPM2_Certify of the identity key by the AK, over the same nonce. */
  identityCertify: SignedAttest;
  /** The firmware version the gateway runs, to find golden PCR values for it. */
  firmwareVersion?: string;
  /** As in a software enrollment: the X25519 SPA key (base64) and the TLS key's CSR. */
  spaPublicKey: string;
  csr: string;
}

export interface AttestEnrollResponse {
  gateway: string;
  certificate: string;
  caCertificate: string;
  notAfter: string;
  /** `approved` when its PCRs matched golden values; `awaiting-approval` until an operator approves them. */
  attestation: 'approved' | 'awaiting-approval';
}

/** SHA-256 of a TPM EK's public key (SPKI DER), lower-case hex: how operators and claims name a box's TPM. */
export function ekHash(spkiDer: Uint8Array): string {
  return createHash('sha256').update(spkiDer).digest('hex');
}

/** The TLS exporter label the link's channel binding is taken with (RFC 5705 / RFC 8446 §7.5). */
export const LINK_BINDING_LABEL = 'EXPORTER-umbra-link-binding';
export const LINK_BINDING_BYTES = 32;
const LINK_BINDING_CONTEXT = Buffer.from('umbra link binding v1\0', 'latin1');

/**
 * What the gateway's TPM identity key signs for one link (the TPM signs its SHA-256): a fixed context
 * and the TLS exporter value of that very connection, so a signature cannot be replayed on another.
 */
export function linkBindingMessage(exporter: Uint8Array): Buffer {
  return Buffer.concat([LINK_BINDING_CONTEXT, exporter]);
}

/** SHA-256 of linkBindingMessage: the digest handed to TPM2_Sign. */
export function linkBindingDigest(exporter: Uint8Array): Buffer {
  return createHash('sha256').update(linkBindingMessage(exporter)).digest();
}
