// The steps a device and a gateway share when they enroll: recognise the controller by the pin in
// the token, then keep what it answers — the TLS key (0600), the certificate issued for it, the
// controller's CA, and a record of the enrollment — written only after the answer has been checked,
// and the record last, so its presence means a complete enrollment.

import { createPublicKey, type KeyObject, X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ControllerApiError, fetchPinnedCa } from './controller-api.ts';
import { type EnrollmentToken, type EnrollmentTokenKind, parseEnrollmentToken } from './enrollment-token.ts';
import { verifyPin } from './pin.ts';
import { writeSecretFile } from './secret-file.ts';

export const TLS_KEY_FILE = 'tls.key';
export const TLS_CERT_FILE = 'tls.crt';
export const CA_CERT_FILE = 'ca.crt';
export const ENROLLMENT_FILE = 'enrollment.json';

interface EnrollmentAnswer {
  certificate: string;
  caCertificate: string;
}

export interface StartedEnrollment {
  /** Null for a zero-touch enrollment, which has the controller's URL and pin from the firmware. */
  token: EnrollmentToken | null;
  /** The controller CA's pin, "sha256/…". */
  pin: string;
  url: URL;
  /** The controller's CA, found by the token's pin: the only trust for the rest of the enrollment. */
  caPem: string;
}

/**
 * Checks the token is for this kind of enrollment and the directory is not enrolled yet, finds the
 * controller's CA by the token's pin, and creates the directory (mode 0700).
 */
export async function beginEnrollment(
  tokenText: string,
  dir: string,
  kind: EnrollmentTokenKind,
  /** Where to reach the controller instead of the token's URL (the CA pin still decides trust). */
  controllerUrl?: string,
): Promise<StartedEnrollment> {
  const token = parseEnrollmentToken(tokenText);
  if (token.kind !== kind)
    throw new ControllerApiError(
      kind === 'identity'
        ? 'this is a gateway enrollment token; use it with `umbra-gateway enroll`'
        : 'this is a device enrollment token; use it with `umbra enroll`',
    );
  if (existsSync(join(dir, ENROLLMENT_FILE)))
    throw new ControllerApiError(
      `${dir} is already enrolled (${ENROLLMENT_FILE}); use another --dir to enroll again`,
    );
  const url = new URL(controllerUrl ?? token.url);
  const caPem = await fetchPinnedCa(url, token.pin);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return { token, pin: token.pin, url, caPem };
}

/**
 * A gateway's zero-touch enrollment: no token, the controller's URL and CA pin as its firmware
 * carries them; the controller must hold a claim for the box's TPM.
 */
export async function beginClaimEnrollment(
  controllerUrl: string,
  pin: string,
  dir: string,
): Promise<StartedEnrollment> {
  if (existsSync(join(dir, ENROLLMENT_FILE)))
    throw new ControllerApiError(
      `${dir} is already enrolled (${ENROLLMENT_FILE}); use another --dir to enroll again`,
    );
  let url: URL;
  try {
    url = new URL(controllerUrl);
  } catch {
    throw new ControllerApiError(`the controller URL "${controllerUrl}" is not a URL`);
  }
  const caPem = await fetchPinnedCa(url, pin);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return { token: null, pin, url, caPem };
}

/** The record enrollment.json holds: who we are (under `subject`), and with which controller. */
export type EnrollmentRecord<S extends string> = { [K in S]: string } & {
  controller: string;
  pin: string;
  notAfter: string;
};

/**
 * Checks the controller's answer carries the subject's name, the certificate, the CA and the
 * expiry, then saves it with saveEnrollment. Returns the record written to enrollment.json.
 */
export async function completeEnrollment<S extends 'identity' | 'gateway'>(
  dir: string,
  started: StartedEnrollment,
  tlsPrivateKey: KeyObject,
  answer: unknown,
  subject: S,
  /**
   * Keeps the TLS key some other way than DIR/tls.key, e.g. sealed by a TPM; called after the answer
   * was checked and before enrollment.json is written.
   */
  keepKey?: (pkcs8Pem: string) => Promise<void>,
): Promise<EnrollmentRecord<S>> {
  const fields = answer as Record<string, unknown> | null;
  if (
    typeof fields?.[subject] !== 'string' ||
    typeof fields.certificate !== 'string' ||
    typeof fields.caCertificate !== 'string' ||
    typeof fields.notAfter !== 'string'
  )
    throw new ControllerApiError(
      `${started.url.origin} answered without a certificate; is it an Umbra controller?`,
    );
  const record = {
    [subject]: fields[subject],
    controller: started.url.href,
    pin: started.pin,
    notAfter: fields.notAfter,
  } as EnrollmentRecord<S>;
  await saveEnrollment(
    dir,
    started.pin,
    tlsPrivateKey,
    { certificate: fields.certificate, caCertificate: fields.caCertificate },
    record,
    keepKey,
  );
  return record;
}

/**
 * Checks the controller's answer: the CA it returns is the one the token's pin names, and the
 * certificate is for our own TLS key and signed by that CA. Then writes the files. `record` is
 * what enrollment.json should hold.
 */
async function saveEnrollment(
  dir: string,
  pin: string,
  tlsPrivateKey: KeyObject,
  answer: EnrollmentAnswer,
  record: object,
  keepKey?: (pkcs8Pem: string) => Promise<void>,
): Promise<void> {
  let ca: X509Certificate;
  let leaf: X509Certificate;
  try {
    ca = new X509Certificate(answer.caCertificate);
    leaf = new X509Certificate(answer.certificate);
  } catch {
    throw new ControllerApiError('the controller answered with certificates that do not parse');
  }
  if (!verifyPin(ca.raw, pin))
    throw new ControllerApiError("the controller's CA certificate does not match the token's pin");
  const ours = createPublicKey(tlsPrivateKey).export({ type: 'spki', format: 'der' });
  if (!leaf.publicKey.export({ type: 'spki', format: 'der' }).equals(ours) || !leaf.verify(ca.publicKey))
    throw new ControllerApiError(
      'the controller issued a certificate that is not for this key or not from its CA',
    );
  const pem = tlsPrivateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  if (keepKey) await keepKey(pem);
  else await writeSecretFile(join(dir, TLS_KEY_FILE), pem, { overwrite: true });
  writeFileSync(join(dir, TLS_CERT_FILE), answer.certificate, { mode: 0o644 });
  writeFileSync(join(dir, CA_CERT_FILE), answer.caCertificate, { mode: 0o644 });
  writeFileSync(join(dir, ENROLLMENT_FILE), `${JSON.stringify(record, null, 2)}\n`, { mode: 0o644 });
}
