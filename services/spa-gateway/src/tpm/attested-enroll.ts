// `umbra-gateway enroll --tpm ADDRESS`: enrollment with the gateway's identity in its TPM
// (protocol/src/attestation.ts has the exchange, controller/src/attestation the other side).
//
// 1. Read the EK certificate and public area; create the AK and the identity key (persistent, see
//    gateway-tpm.ts); send them with the token for a challenge.
// 2. Open the controller's credential with the EK (ActivateCredential), quote the boot PCRs and
//    certify the identity key over the controller's nonce, and send all of it with the SPA key and
//    the TLS key's certificate request.
// 3. With the certificate back: seal the TLS key and a new replay-state key to the boot PCRs, then
//    write the enrollment record last, so its presence means a complete enrollment.
// Each step is reported through `progress` for the technician's console.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import {
  ATTEST_CHALLENGE_PATH,
  ATTEST_ENROLL_PATH,
  type AttestEnrollResponse,
  beginClaimEnrollment,
  beginEnrollment,
  ControllerApiError,
  completeEnrollment,
  createCertificateRequest,
  ekHash,
  encodeKey,
  postJson,
  type StartedEnrollment,
} from '@umbra/protocol';
import { parseEkCertificate } from '@umbra/tpm2';
import { z } from 'zod';
import type { GatewayEnrollment } from '../enroll.ts';
import { createGatewayKeys, loadGatewayKeys, PRIVATE_KEY_FILE } from '../keys.ts';
import { GatewayTpm } from './gateway-tpm.ts';
import { tpmRecordFor, writeSealedKeys } from './sealed-keys.ts';

export interface AttestedEnrollOptions {
  /** device:/dev/tpmrm0, swtpm:HOST:PORT or swtpm-unix:PATH. */
  tpm: string;
  /**
   * Zero-touch (no token): the controller's CA pin as the firmware carries it; `controllerUrl` is then
   * required too, and the controller must hold a claim for this TPM (`gateway claim --ek-hash`).
   */
  caPin?: string;
  /** Reach the controller here rather than at the token's URL. */
  controllerUrl?: string;
  /** The firmware version to find golden PCR values for. */
  firmwareVersion?: string;
  progress?: (step: string) => void;
}

export type AttestedGatewayEnrollment = GatewayEnrollment & {
  attestation: AttestEnrollResponse['attestation'];
};

const challengeAnswer = z.object({
  challenge: z.string().regex(/^[0-9a-f]{32}$/),
  credentialBlob: z.string().min(1).max(4096),
  encryptedSecret: z.string().min(1).max(4096),
  nonce: z.string().min(1).max(128),
  pcrs: z.object({
    bank: z.enum(['sha1', 'sha256', 'sha384']),
    pcrs: z.array(z.number().int().min(0).max(23)).max(24),
  }),
});

function b64(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64');
}

export async function enrollGatewayWithTpm(
  tokenText: string | null,
  dir: string,
  options: AttestedEnrollOptions,
): Promise<AttestedGatewayEnrollment> {
  const progress = options.progress ?? (() => {});
  let started: StartedEnrollment;
  if (tokenText !== null) started = await beginEnrollment(tokenText, dir, 'gateway', options.controllerUrl);
  else if (options.controllerUrl && options.caPin)
    started = await beginClaimEnrollment(options.controllerUrl, options.caPin, dir);
  else throw new ControllerApiError('an enrollment without a token needs the controller URL and its CA pin');
  const token = tokenText === null ? {} : { token: tokenText.trim() };
  const tpm = await GatewayTpm.open(options.tpm);
  try {
    progress(`reading the EK certificate from the TPM at ${options.tpm}`);
    const endorsement = await tpm.readEndorsement();
    const ekKeyHash = ekHash(
      parseEkCertificate(endorsement.certificate).publicKey.export({ type: 'spki', format: 'der' }),
    );
    progress(`EK ${endorsement.kind.toUpperCase()} ${ekKeyHash}; creating the attestation and identity keys`);
    const keys = await tpm.createKeys();

    progress('asking the controller for a challenge');
    const challenge = parseAnswer(
      challengeAnswer,
      await postJson(new URL(ATTEST_CHALLENGE_PATH, started.url), started.caPem, {
        ...token,
        ekCertificate: b64(endorsement.certificate),
        ekPublic: b64(endorsement.publicBytes),
        akPublic: b64(keys.akPublic),
      }),
    );
    progress('activating the credential with the EK, quoting the boot PCRs');
    const secret = await tpm.activateCredential(
      endorsement.kind,
      Buffer.from(challenge.credentialBlob, 'base64'),
      Buffer.from(challenge.encryptedSecret, 'base64'),
    );
    const nonce = Buffer.from(challenge.nonce, 'base64');
    const quote = await tpm.quote(nonce, challenge.pcrs.bank, challenge.pcrs.pcrs);
    const certify = await tpm.certifyIdentity(nonce);

    // The SPA key is kept across a failed attempt: clients may already have been given it.
    const spa = existsSync(join(dir, PRIVATE_KEY_FILE)) ? loadGatewayKeys(dir) : await createGatewayKeys(dir);
    const tls = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    progress('sending the quote and the certified identity key');
    const answer = (await postJson(new URL(ATTEST_ENROLL_PATH, started.url), started.caPem, {
      ...token,
      challenge: challenge.challenge,
      secret: b64(secret),
      quote: { attest: b64(quote.attest), signature: b64(quote.signature) },
      pcrValues: Object.fromEntries(
        [...quote.pcrValues].map(([index, digest]) => [String(index), Buffer.from(digest).toString('hex')]),
      ),
      identityPublic: b64(keys.identityPublic),
      identityCertify: { attest: b64(certify.attest), signature: b64(certify.signature) },
      ...(options.firmwareVersion ? { firmwareVersion: options.firmwareVersion } : {}),
      spaPublicKey: encodeKey(spa.publicKey),
      csr: await createCertificateRequest(tls.privateKey, { commonName: 'umbra gateway' }),
    })) as Partial<AttestEnrollResponse>;
    const attestation = answer?.attestation;
    if (attestation !== 'approved' && attestation !== 'awaiting-approval')
      throw new ControllerApiError(
        `${started.url.origin} answered without an attestation state; is it an Umbra controller?`,
      );

    progress('sealing the TLS key and the replay-state key to the boot PCRs');
    const record = await completeEnrollment(dir, started, tls.privateKey, answer, 'gateway', (pem) =>
      writeSealedKeys(dir, tpm, tpmRecordFor(options.tpm, endorsement.kind, ekKeyHash), {
        tlsKey: pem,
        replayKey: randomBytes(32),
      }),
    );
    return { ...record, attestation };
  } finally {
    await tpm.close();
  }
}

function parseAnswer<T>(schema: z.ZodType<T>, answer: unknown): T {
  const result = schema.safeParse(answer);
  if (!result.success)
    throw new ControllerApiError(
      `the controller's challenge is malformed (${result.error.issues[0]?.path.join('.')}: ${result.error.issues[0]?.message})`,
    );
  return result.data;
}
