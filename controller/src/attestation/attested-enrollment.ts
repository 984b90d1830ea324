// Attested gateway enrollment, the controller's side (protocol/src/attestation.ts has the exchange).
//
// challenge: the token must be spendable (or, with no token, the operator must have claimed this
//   TPM's EK hash for a gateway: zero-touch), the EK certificate must chain to a root the operator
//   added (`ekca add`) and carry the key of the EK public area sent, and the AK must be a restricted
//   signing key that only signs what the TPM itself produced. The answer is a credential that only
//   that EK's TPM can open, and only for that AK's Name, and a fresh nonce. Challenges live in
//   memory for ATTEST_CHALLENGE_TTL_MS: after that, or after one use, the nonce is stale.
// enroll: the secret the TPM released (proof the AK sits beside the EK), a quote over the boot PCRs
//   signed by the AK over the nonce, and the identity key certified by the AK over the same nonce.
//   The PCRs are compared with the golden values for the firmware version the gateway reports;
//   without any, they are recorded and wait for an operator (`gateway approve`). Only then is the
//   token spent and the certificate issued.
//
// Every refusal is audited (`gateway.enroll`, deny, with the reason) and answered with a message the
// gateway shows on its console. Nothing is written before every check passed.

import 'reflect-metadata';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import {
  ATTEST_CHALLENGE_TTL_MS,
  ATTESTATION_NONCE_BYTES,
  type AttestChallengeRequest,
  type AttestChallengeResponse,
  type AttestEnrollRequest,
  type AttestEnrollResponse,
  BOOT_PCRS,
  decodeKey,
  ekHash,
  hashTokenSecret,
  parseEnrollmentToken,
} from '@umbra/protocol';
import {
  checkAttestationKey,
  checkIdentityKey,
  comparePcrs,
  computeName,
  describePcrDifferences,
  makeCredential,
  type PcrBanks,
  type PublicArea,
  parseEkCertificate,
  publicKeyObject,
  Reader,
  readPublicArea,
  TPM_ALG,
  verifyCertify,
  verifyEkChain,
  verifyQuote,
} from '@umbra/tpm2';
import { conflict, EnrollmentRefused, TOKEN_REFUSALS } from '../api/enroll.ts';
import type { DataDir } from '../data-dir.ts';
import { auditText } from '../link/authorizer.ts';
import type { GatewayTpm, PcrValues } from '../store/index.ts';

/** Challenges held at once; beyond this the oldest is dropped (its gateway asks again). */
const MAX_CHALLENGES = 256;

interface Challenge {
  subject: string;
  /** The token's hash, or null for a zero-touch enrollment by claim (then the EK hash is the key). */
  tokenHash: string | null;
  ekHash: string;
  akBytes: Uint8Array;
  akArea: PublicArea;
  secret: Buffer;
  nonce: Buffer;
  expiresAt: number;
}

const BANK_ALG: Readonly<Record<string, number>> = {
  sha1: TPM_ALG.SHA1,
  sha256: TPM_ALG.SHA256,
  sha384: TPM_ALG.SHA384,
};

/** Decodes a base64 field, refusing (400, naming it) anything that is not, or is empty or too long. */
function bytesOf(value: string, field: string, max: number): Uint8Array {
  const bytes = Buffer.from(value, 'base64');
  if (bytes.length === 0 || bytes.length > max || bytes.toString('base64') !== value.replace(/\s+/g, ''))
    throw new EnrollmentRefused(400, `${field}: expected base64 of at most ${max} bytes`);
  return new Uint8Array(bytes);
}

/** A TPMT_PUBLIC from base64, parsed; `field` names it in the refusal. */
export function publicAreaOf(value: string, field: string): { bytes: Uint8Array; area: PublicArea } {
  const bytes = bytesOf(value, field, 2048);
  try {
    const r = new Reader(bytes, field);
    const area = readPublicArea(r);
    r.end();
    return { bytes, area };
  } catch (error) {
    throw new EnrollmentRefused(400, `${field}: not a TPMT_PUBLIC (${(error as Error).message})`);
  }
}

/** PCR values as the store keeps them, and as the verifier compares them. */
function pcrBanksOf(values: PcrValues): PcrBanks {
  const bank = new Map<number, Uint8Array>();
  for (const [index, digest] of Object.entries(values.pcrs))
    bank.set(Number(index), Buffer.from(digest, 'hex'));
  return new Map([[BANK_ALG[values.bank]!, bank]]);
}

/** How quoted PCRs differ from golden values, in words; null when they match. */
export function pcrDrift(pcrs: PcrValues, golden: PcrValues): string | null {
  const comparison = comparePcrs(pcrBanksOf(pcrs), pcrBanksOf(golden));
  return comparison.ok ? null : describePcrDifferences(comparison.differences);
}

export class AttestedEnrollment {
  private readonly data: DataDir;
  private readonly now: () => number;
  private readonly challenges = new Map<string, Challenge>();

  constructor(data: DataDir, now: () => number = Date.now) {
    this.data = data;
    this.now = now;
  }

  async challenge(request: AttestChallengeRequest): Promise<AttestChallengeResponse> {
    const now = this.now();
    const byToken = request.token === undefined ? null : await this.spendable(request.token, now);
    let subject = byToken?.subject ?? '?';
    const tokenHash = byToken?.tokenHash ?? null;
    const refuse = (reason: string, details: Record<string, unknown> = {}) =>
      this.refuse(subject, reason, details);

    let ek: ReturnType<typeof parseEkCertificate>;
    try {
      ek = parseEkCertificate(bytesOf(request.ekCertificate, 'ekCertificate', 4096));
    } catch (error) {
      if (error instanceof EnrollmentRefused) throw error;
      throw new EnrollmentRefused(400, `ekCertificate: ${(error as Error).message}`);
    }
    const spki = ek.publicKey.export({ type: 'spki', format: 'der' });
    const hash = ekHash(spki);
    if (!byToken) {
      // Zero-touch: the operator claimed this TPM for a gateway (`gateway claim --ek-hash`).
      const claim = await this.data.store.getGatewayClaim(hash);
      if (!claim || claim.usedAt !== null)
        return refuse(
          claim
            ? `the claim for this TPM (EK hash ${hash}) was already used; claim it again or enroll with a token`
            : `no token, and no claim for this TPM (EK hash ${hash}): ask the operator to run \`umbra-controller gateway claim --ek-hash ${hash} --site SITE\``,
          { ekHash: hash },
        );
      subject = claim.gateway;
    }
    const ekPublic = publicAreaOf(request.ekPublic, 'ekPublic');
    let sameKey = false;
    try {
      sameKey = publicKeyObject(ekPublic.area).export({ type: 'spki', format: 'der' }).equals(spki);
    } catch {}
    if (!sameKey)
      return refuse('the EK public area sent is not the key of the EK certificate sent', { ekHash: hash });

    const roots = await this.data.store.listEkRoots();
    if (roots.length === 0)
      return refuse(
        'this controller trusts no TPM manufacturer yet: add the EK CA with `umbra-controller ekca add FILE`',
        { ekHash: hash },
      );
    const chain = await verifyEkChain(
      ek.certificate,
      roots.map((root) => new x509.X509Certificate(root.pem)),
      [],
      { date: new Date(now) },
    );
    if (!chain.ok)
      return refuse(`the EK certificate is not from a trusted TPM manufacturer: ${chain.reason}`, {
        ekHash: hash,
        ekIssuer: ek.certificate.issuer,
      });

    const ak = publicAreaOf(request.akPublic, 'akPublic');
    const akProblems = checkAttestationKey(ak.area);
    if (akProblems.length > 0)
      return refuse(`the attestation key is not fit to attest: ${akProblems.join('; ')}`, { ekHash: hash });

    const secret = randomBytes(32);
    const nonce = randomBytes(ATTESTATION_NONCE_BYTES);
    let credential: ReturnType<typeof makeCredential>;
    try {
      credential = makeCredential(ekPublic.area, computeName(ak.area.nameAlg, ak.bytes), secret);
    } catch (error) {
      return refuse(`no credential can be made for this EK: ${(error as Error).message}`, { ekHash: hash });
    }
    const id = randomBytes(16).toString('hex');
    this.sweep(now);
    this.challenges.set(id, {
      subject,
      tokenHash,
      ekHash: hash,
      akBytes: ak.bytes,
      akArea: ak.area,
      secret,
      nonce,
      expiresAt: now + ATTEST_CHALLENGE_TTL_MS,
    });
    return {
      challenge: id,
      credentialBlob: Buffer.from(credential.credentialBlob).toString('base64'),
      encryptedSecret: Buffer.from(credential.encryptedSecret).toString('base64'),
      nonce: nonce.toString('base64'),
      pcrs: { bank: BOOT_PCRS.bank, pcrs: [...BOOT_PCRS.pcrs] },
    };
  }

  async enroll(request: AttestEnrollRequest): Promise<AttestEnrollResponse> {
    const now = this.now();
    const byToken = request.token === undefined ? null : await this.spendable(request.token, now);
    decodeKeyText(request.spaPublicKey);
    try {
      await this.data.ca.verifyRequest(request.csr);
    } catch (error) {
      throw new EnrollmentRefused(400, `csr: ${(error as Error).message}`);
    }
    const challenge = this.challenges.get(request.challenge);
    // One use: a second answer to the same nonce is stale whatever it says.
    this.challenges.delete(request.challenge);
    const subject = byToken?.subject ?? challenge?.subject ?? '?';
    if (!challenge || challenge.tokenHash !== (byToken?.tokenHash ?? null) || challenge.expiresAt <= now)
      return this.refuse(
        subject,
        `stale nonce: the challenge is unknown, used or older than ${ATTEST_CHALLENGE_TTL_MS / 1000} s; run enroll again`,
        {},
      );
    const refuse = (reason: string) => this.refuse(subject, reason, { ekHash: challenge.ekHash });

    const secret = bytesOf(request.secret, 'secret', 64);
    if (secret.length !== challenge.secret.length || !timingSafeEqual(secret, challenge.secret))
      return refuse(
        'credential activation failed: the attestation key is not in the TPM that holds the certified EK',
      );

    const pcrs: PcrValues = { bank: BOOT_PCRS.bank, pcrs: {} };
    for (const index of BOOT_PCRS.pcrs) {
      const hex = request.pcrValues[String(index)];
      if (typeof hex !== 'string' || !/^[0-9a-f]{64}$/.test(hex))
        throw new EnrollmentRefused(400, `pcrValues.${index}: expected a SHA-256 digest in hex`);
      pcrs.pcrs[String(index)] = hex;
    }
    const quote = verifyQuote({
      attest: bytesOf(request.quote.attest, 'quote.attest', 2048),
      signature: bytesOf(request.quote.signature, 'quote.signature', 1024),
      akPublic: challenge.akArea,
      nonce: challenge.nonce,
      pcrs: pcrBanksOf(pcrs),
    });
    if (!quote.ok)
      return refuse(
        quote.code === 'nonce'
          ? `stale nonce: the quote is not over this enrollment's nonce (${quote.reason})`
          : `the quote does not verify: ${quote.reason}`,
      );

    const identity = publicAreaOf(request.identityPublic, 'identityPublic');
    const identityProblems = checkIdentityKey(identity.area);
    if (identityProblems.length > 0)
      return refuse(`the identity key is not fit for a gateway: ${identityProblems.join('; ')}`);
    const certified = verifyCertify({
      akPublic: challenge.akArea,
      attest: bytesOf(request.identityCertify.attest, 'identityCertify.attest', 2048),
      signature: bytesOf(request.identityCertify.signature, 'identityCertify.signature', 1024),
      objectPublic: identity.bytes,
      nonce: challenge.nonce,
    });
    if (!certified.ok) return refuse(`the identity key's certification does not verify: ${certified.reason}`);

    const firmwareVersion = request.firmwareVersion;
    const golden = firmwareVersion
      ? (await this.data.store.listFirmwarePcrs()).find((entry) => entry.version === firmwareVersion)
      : undefined;
    const drift = golden ? pcrDrift(pcrs, golden) : null;
    if (drift !== null)
      return refuse(`the boot PCRs differ from the golden values of firmware ${firmwareVersion}: ${drift}`);

    // Every check passed: spend the token (or the claim), then record and issue.
    if (byToken) {
      const consumed = await this.data.store.consumeEnrollmentToken(byToken.tokenHash, now);
      if (!consumed.ok)
        return this.refuse(subject, `the enrollment token was ${consumed.reason} meanwhile`, {});
    } else if (!(await this.data.store.consumeGatewayClaim(challenge.ekHash, now)))
      return this.refuse(subject, 'the claim for this TPM was used meanwhile', { ekHash: challenge.ekHash });
    const tpm: GatewayTpm = {
      ekHash: challenge.ekHash,
      akPublic: Buffer.from(challenge.akBytes).toString('base64'),
      identityPublic: Buffer.from(identity.bytes).toString('base64'),
    };
    const issued = await this.data.ca.issueGatewayCertificate(request.csr, {
      gatewayName: subject,
      now: new Date(now),
    });
    await this.data.store
      .setGatewayPublicKey(subject, decodeKeyText(request.spaPublicKey), tpm)
      .catch(conflict);
    const state = golden ? 'approved' : 'awaiting-approval';
    await this.data.store.recordGatewayAttestation(
      subject,
      { state, pcrs, ...(firmwareVersion ? { firmwareVersion } : {}) },
      now,
      `gateway:${subject}`,
    );
    await this.data.store.appendAudit({
      actor: `gateway:${subject}`,
      action: 'gateway.enroll',
      subject,
      decision: 'allow',
      details: {
        serial: issued.serial,
        notAfter: issued.notAfter.toISOString(),
        ekHash: challenge.ekHash,
        attestation: state,
        by: byToken ? 'token' : 'claim',
      },
    });
    return {
      gateway: subject,
      certificate: issued.pem,
      caCertificate: this.data.ca.pem,
      notAfter: issued.notAfter.toISOString(),
      attestation: state,
    };
  }

  /** The token's subject if it could be spent now; otherwise a refusal (audited) saying why not. */
  private async spendable(tokenText: string, now: number): Promise<{ subject: string; tokenHash: string }> {
    let token: ReturnType<typeof parseEnrollmentToken>;
    try {
      token = parseEnrollmentToken(tokenText);
    } catch (error) {
      throw new EnrollmentRefused(400, `token: ${(error as Error).message}`);
    }
    if (token.kind !== 'gateway')
      throw new EnrollmentRefused(400, 'this is a device token; enroll devices with `umbra enroll`');
    const tokenHash = hashTokenSecret(token.secret);
    const state = await this.data.store.peekEnrollmentToken(tokenHash, now);
    if (!state.ok) return this.refuse('?', TOKEN_REFUSALS[state.reason], { token: state.reason }, 403);
    const gateway = await this.data.store.getGatewayByName(state.token.subjectName);
    if (!gateway || gateway.status === 'revoked')
      throw new EnrollmentRefused(409, `gateway ${state.token.subjectName} is revoked; ask for a new token`);
    return { subject: state.token.subjectName, tokenHash };
  }

  private async refuse(
    subject: string,
    reason: string,
    details: Record<string, unknown>,
    status = 403,
  ): Promise<never> {
    const short = auditText(reason);
    await this.data.store.appendAudit({
      actor: subject === '?' ? 'gateway' : `gateway:${subject}`,
      action: 'gateway.enroll',
      subject,
      decision: 'deny',
      reason: short,
      details: { attested: true, ...details, ...(short === reason ? {} : { fullReason: reason }) },
    });
    throw new EnrollmentRefused(status, reason);
  }

  private sweep(now: number): void {
    for (const [id, challenge] of this.challenges) {
      if (challenge.expiresAt > now && this.challenges.size < MAX_CHALLENGES) break;
      this.challenges.delete(id);
    }
  }
}

/** The SPA key as given, after checking it decodes (400 naming the field otherwise). */
function decodeKeyText(text: string): string {
  try {
    decodeKey(text, 'spaPublicKey');
  } catch (error) {
    throw new EnrollmentRefused(400, (error as Error).message);
  }
  return text;
}
