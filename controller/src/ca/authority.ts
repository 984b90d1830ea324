// The controller's private certificate authority. One ECDSA P-256 root, no intermediates: the CA only
// ever signs leaves for Umbra identities (client certificates for tunnels) and gateways (server
// certificates for their TLS listeners), so pathLen is 0 and a leaf is one signature away from the root.
//
// The CA never sees a device's private key. A client proves it holds its key by signing a PKCS#10
// request; the CA verifies that signature and then ignores everything else the request says (subject,
// extensions): the names and usages in a certificate come from the controller's records, never from
// the requester.

import 'reflect-metadata';
import { createPrivateKey, createPublicKey, type KeyObject, webcrypto } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, unlink } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { pinOf, readSecretFile, verifyPin, writeSecretFile } from '@umbra/protocol';
import { CertificateAuthorityError, CertificateRequestError } from './errors.ts';
import { randomSerial } from './serial.ts';
import { assertSubjectName, type CertificateSubject, parseSubjectUri, subjectUri } from './subject.ts';

export const CA_KEY_FILE = 'ca.key';
export const CA_CERT_FILE = 'ca.crt';
const CA_VALIDITY_YEARS = 10;
const CA_NAME_MAX_LENGTH = 64; // ub-common-name, RFC 5280

export const DEFAULT_CLIENT_VALIDITY_SECONDS = 24 * 60 * 60;
/** Gateways renew over their controller link; a month rides out a long controller outage. */
export const DEFAULT_SERVER_VALIDITY_SECONDS = 30 * 24 * 60 * 60;
/** The longest leaf we sign: short-lived certificates are what make revocation lists small. */
export const MAX_LEAF_VALIDITY_SECONDS = 366 * 24 * 60 * 60;
/** notBefore is backdated so a client whose clock runs a little behind can use a fresh certificate. */
export const CLOCK_SKEW_SECONDS = 60;

/** A CSR or certificate is a few hundred bytes; refusing big input before parsing bounds the work. */
const MAX_PEM_LENGTH = 16 * 1024;

const crypto = webcrypto;
const SIGNING_ALGORITHM = { name: 'ECDSA', hash: 'SHA-256' };
const CA_KEY_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256' };

export interface CreateCertificateAuthorityOptions {
  /** The CA's common name, e.g. "Umbra CA example.org". */
  name: string;
  now?: Date;
}

export interface IssueClientCertificateOptions {
  /** The identity (device) name, as the controller stores it. */
  identity: string;
  validitySeconds?: number;
  now?: Date;
}

export interface IssueServerCertificateOptions {
  gatewayName: string;
  /** Host names clients dial the gateway's TLS listener by. */
  dnsNames?: readonly string[];
  ipAddresses?: readonly string[];
  validitySeconds?: number;
  now?: Date;
}

export interface IssuedCertificate {
  pem: string;
  /** Lower-case hex, as `isRevoked` receives it. */
  serial: string;
  notBefore: Date;
  notAfter: Date;
}

/** What a certificate is being presented for: a client opening a tunnel, or a gateway's listener. */
export type CertificatePurpose = 'client' | 'server';

export interface VerifyChainOptions {
  now?: Date;
  isRevoked: (serial: string) => boolean | Promise<boolean>;
  /** Default 'client': a gateway's server certificate must not open tunnels. */
  purpose?: CertificatePurpose;
  /**
   * Whose certificate is expected. Default: an identity for 'client', a gateway for 'server'. A
   * gateway's link to the controller presents its certificate as a client: purpose 'client' with
   * subject 'gateway'.
   */
  subject?: CertificateSubject['kind'];
}

export type ChainFailureReason =
  | 'malformed'
  | 'unknown-issuer'
  | 'not-yet-valid'
  | 'expired'
  | 'wrong-purpose'
  | 'no-subject'
  | 'revoked';

export type ChainVerification =
  | { ok: true; kind: CertificateSubject['kind']; name: string; serial: string; notAfter: Date }
  | { ok: false; reason: ChainFailureReason; detail: string };

/** Either a PKCS#10 request in PEM (which proves possession of the key) or the public key itself. */
export type SubjectKey = string | KeyObject;

export class CertificateAuthority {
  readonly certificate: x509.X509Certificate;
  /** The CA certificate, PEM: what clients and gateways trust. */
  readonly pem: string;
  /** "sha256/…": what enrollment tokens carry so that enrolling needs nothing else. */
  readonly pin: string;
  readonly #signingKey: webcrypto.CryptoKey;
  readonly #policyKey: KeyObject;
  readonly #keyId: string;

  private constructor(
    certificate: x509.X509Certificate,
    signingKey: webcrypto.CryptoKey,
    policyKey: KeyObject,
    keyId: string,
  ) {
    this.certificate = certificate;
    this.pem = certificate.toString('pem');
    this.pin = pinOf(this.pem);
    this.#signingKey = signingKey;
    this.#policyKey = policyKey;
    this.#keyId = keyId;
  }

  /**
   * The CA's private key, for signing policy snapshots and deltas (signSnapshot, signDelta): every
   * gateway already trusts the CA certificate, so it verifies them with no other key to distribute.
   * Hand it to nothing else.
   */
  get policySigningKey(): KeyObject {
    return this.#policyKey;
  }

  /** The CA's public key, which verifies signed policy (openSnapshot, openDelta). */
  get policyVerifyKey(): KeyObject {
    return createPublicKey(this.#policyKey);
  }

  /** Creates a new CA in `dir` (which must exist); refuses if one is there already. */
  static async create(
    dir: string,
    options: CreateCertificateAuthorityOptions,
  ): Promise<CertificateAuthority> {
    const name = options.name;
    if (typeof name !== 'string' || name.trim() === '' || name.length > CA_NAME_MAX_LENGTH)
      throw new CertificateAuthorityError(
        `CA name: ${JSON.stringify(name)} must be 1–${CA_NAME_MAX_LENGTH} characters, e.g. "Umbra CA example.org"`,
      );
    const keyPath = join(dir, CA_KEY_FILE);
    const certPath = join(dir, CA_CERT_FILE);
    for (const path of [keyPath, certPath])
      if (existsSync(path))
        throw new CertificateAuthorityError(
          `${path} already exists: ${dir} holds a CA already; refusing to replace it, since every enrolled client trusts it — load it instead, or move it away first`,
        );

    const keys = await crypto.subtle.generateKey(CA_KEY_ALGORITHM, true, ['sign', 'verify']);
    const ski = await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto);
    const now = wholeSeconds(options.now ?? new Date());
    const notAfter = new Date(now);
    notAfter.setUTCFullYear(notAfter.getUTCFullYear() + CA_VALIDITY_YEARS);
    const certificate = await x509.X509CertificateGenerator.createSelfSigned(
      {
        serialNumber: randomSerial(),
        name: [{ CN: [name] }],
        notBefore: new Date(now.getTime() - CLOCK_SKEW_SECONDS * 1000),
        notAfter,
        keys,
        signingAlgorithm: SIGNING_ALGORITHM,
        extensions: [
          new x509.BasicConstraintsExtension(true, 0, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
          ski,
        ],
      },
      crypto,
    );
    const pkcs8 = Buffer.from(await crypto.subtle.exportKey('pkcs8', keys.privateKey));
    const keyPem = x509.PemConverter.encode(
      pkcs8.buffer.slice(pkcs8.byteOffset, pkcs8.byteOffset + pkcs8.length),
      'PRIVATE KEY',
    );
    pkcs8.fill(0);

    // The key first, exclusively (a racing `create` loses here and touches nothing); the certificate
    // is public, so it goes through the same atomic exclusive write and then becomes world-readable.
    try {
      await writeSecretFile(keyPath, keyPem);
    } catch (error) {
      throw new CertificateAuthorityError(`cannot create the CA key: ${(error as Error).message}`, {
        cause: error,
      });
    }
    try {
      await writeSecretFile(certPath, certificate.toString('pem'));
      await chmod(certPath, 0o644);
    } catch (error) {
      await unlink(keyPath).catch(() => {}); // no key without its certificate
      throw new CertificateAuthorityError(`cannot create the CA certificate: ${(error as Error).message}`, {
        cause: error,
      });
    }
    return CertificateAuthority.#fromKeyObject(certificate, createPrivateKey(keyPem), ski.keyId);
  }

  /** Loads the CA in `dir`, refusing a key file other users could read. */
  static async load(dir: string): Promise<CertificateAuthority> {
    const keyPath = join(dir, CA_KEY_FILE);
    const certPath = join(dir, CA_CERT_FILE);
    const hint = 'create a CA with `umbra-controller init`, or point --data at the directory that holds it';
    let keyText: string;
    try {
      keyText = readSecretFile(keyPath, `CA key ${keyPath}`, hint);
    } catch (error) {
      throw new CertificateAuthorityError((error as Error).message, { cause: error });
    }
    let certText: string;
    try {
      certText = readFileSync(certPath, 'utf8');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      throw new CertificateAuthorityError(
        code === 'ENOENT'
          ? `CA certificate ${certPath}: no such file, but ${keyPath} exists; restore ca.crt from a backup`
          : `CA certificate ${certPath}: cannot read it (${code})`,
        { cause: error },
      );
    }

    let key: KeyObject;
    try {
      key = createPrivateKey(keyText);
    } catch (error) {
      throw new CertificateAuthorityError(
        `CA key ${keyPath}: not a PEM private key; restore it from a backup`,
        {
          cause: error,
        },
      );
    }
    if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1')
      throw new CertificateAuthorityError(`CA key ${keyPath}: expected an ECDSA P-256 key`);

    let certificate: x509.X509Certificate;
    try {
      certificate = new x509.X509Certificate(certText);
    } catch (error) {
      throw new CertificateAuthorityError(
        `CA certificate ${certPath}: not a PEM certificate; restore it from a backup`,
        {
          cause: error,
        },
      );
    }
    const constraints = certificate.getExtension(x509.BasicConstraintsExtension);
    if (!constraints?.ca)
      throw new CertificateAuthorityError(
        `CA certificate ${certPath}: not a CA certificate (basicConstraints CA:FALSE)`,
      );
    const spkiOfKey = createPublicKey(key).export({ type: 'spki', format: 'der' });
    if (!spkiOfKey.equals(Buffer.from(certificate.publicKey.rawData)))
      throw new CertificateAuthorityError(
        `CA certificate ${certPath} does not belong to the key in ${keyPath}; restore the matching pair`,
      );
    const ski = certificate.getExtension(x509.SubjectKeyIdentifierExtension);
    const keyId =
      ski?.keyId ??
      (await x509.SubjectKeyIdentifierExtension.create(certificate.publicKey, false, crypto)).keyId;
    return CertificateAuthority.#fromKeyObject(certificate, key, keyId);
  }

  static #fromKeyObject(
    certificate: x509.X509Certificate,
    key: KeyObject,
    keyId: string,
  ): CertificateAuthority {
    // Certificates are signed with a non-extractable CryptoKey; policy signing needs the KeyObject.
    const signingKey = key.toCryptoKey(CA_KEY_ALGORITHM, false, ['sign']);
    return new CertificateAuthority(certificate, signingKey, key, keyId);
  }

  /** Whether `certificate` (PEM or DER) has the key `pin` names; constant time. */
  verifyPin(certificate: string | Uint8Array, pin: string): boolean {
    return verifyPin(certificate, pin);
  }

  /** Checks a request without issuing anything: it parses, its key is one we issue for, its signature verifies. */
  async verifyRequest(csrPem: string): Promise<void> {
    await keyFromRequest(csrPem);
  }

  /** A client certificate for the identity `options.identity`, for the key that signed `csrPem`. */
  async issueClientCertificate(
    csrPem: string,
    options: IssueClientCertificateOptions,
  ): Promise<IssuedCertificate> {
    assertSubjectName(options.identity, 'identity');
    const validitySeconds = checkValidity(options.validitySeconds ?? DEFAULT_CLIENT_VALIDITY_SECONDS);
    const publicKey = await keyFromRequest(csrPem);
    return this.#issue({
      publicKey,
      subject: { kind: 'identity', name: options.identity },
      usages: [x509.ExtendedKeyUsage.clientAuth],
      extraNames: [],
      validitySeconds,
      now: options.now,
    });
  }

  /** A server certificate for gateway `options.gatewayName`'s TLS listener. */
  async issueServerCertificate(
    key: SubjectKey,
    options: IssueServerCertificateOptions,
  ): Promise<IssuedCertificate> {
    assertSubjectName(options.gatewayName, 'gatewayName');
    return this.#issueServer(key, { kind: 'gateway', name: options.gatewayName }, options);
  }

  /**
   * The controller's own TLS certificate. Its SAN URI is umbra://controller/NAME, a kind no
   * gateway certificate can carry, so a gateway's certificate never passes for the controller's.
   */
  async issueControllerCertificate(
    key: SubjectKey,
    options: Omit<IssueServerCertificateOptions, 'gatewayName'> & { name: string },
  ): Promise<IssuedCertificate> {
    assertSubjectName(options.name, 'name');
    return this.#issueServer(key, { kind: 'controller', name: options.name }, options);
  }

  /**
   * A gateway's certificate from its enrollment: serverAuth for its tunnel listener and clientAuth
   * for its link to the controller, so one key and one certificate serve both.
   */
  async issueGatewayCertificate(
    key: SubjectKey,
    options: IssueServerCertificateOptions,
  ): Promise<IssuedCertificate> {
    assertSubjectName(options.gatewayName, 'gatewayName');
    return this.#issueServer(
      key,
      { kind: 'gateway', name: options.gatewayName },
      { ...options, clientAuth: true },
    );
  }

  async #issueServer(
    key: SubjectKey,
    subject: CertificateSubject,
    options: Omit<IssueServerCertificateOptions, 'gatewayName'> & { clientAuth?: boolean },
  ): Promise<IssuedCertificate> {
    const validitySeconds = checkValidity(options.validitySeconds ?? DEFAULT_SERVER_VALIDITY_SECONDS);
    const extraNames: x509.JsonGeneralName[] = [];
    for (const dns of options.dnsNames ?? []) {
      if (typeof dns !== 'string' || !DNS_NAME.test(dns))
        throw new CertificateRequestError(
          `dnsNames: ${JSON.stringify(dns)} is not a host name; use letters, digits and "-" in dot-separated labels (a leading "*." for a wildcard)`,
        );
      extraNames.push({ type: 'dns', value: dns.toLowerCase() });
    }
    for (const ip of options.ipAddresses ?? []) {
      if (typeof ip !== 'string' || isIP(ip) === 0)
        throw new CertificateRequestError(
          `ipAddresses: ${JSON.stringify(ip)} is not an IPv4 or IPv6 address`,
        );
      extraNames.push({ type: 'ip', value: ip });
    }
    const publicKey = typeof key === 'string' ? await keyFromRequest(key) : keyFromKeyObject(key);
    return this.#issue({
      publicKey,
      subject,
      usages: [
        x509.ExtendedKeyUsage.serverAuth,
        ...(options.clientAuth ? [x509.ExtendedKeyUsage.clientAuth] : []),
      ],
      extraNames,
      validitySeconds,
      now: options.now,
    });
  }

  async #issue(request: {
    publicKey: x509.PublicKey;
    subject: CertificateSubject;
    usages: string[];
    extraNames: x509.JsonGeneralName[];
    validitySeconds: number;
    now: Date | undefined;
  }): Promise<IssuedCertificate> {
    const now = wholeSeconds(request.now ?? new Date());
    const notBefore = new Date(now.getTime() - CLOCK_SKEW_SECONDS * 1000);
    // A leaf cannot outlive the CA that vouches for it; near the CA's end the leaf is cut short.
    const notAfter = new Date(
      Math.min(now.getTime() + request.validitySeconds * 1000, this.certificate.notAfter.getTime()),
    );
    if (notAfter <= now)
      throw new CertificateAuthorityError(
        `the CA certificate expired on ${this.certificate.notAfter.toISOString()}; create a new CA and re-enroll`,
      );
    const serial = randomSerial();
    const certificate = await x509.X509CertificateGenerator.create(
      {
        serialNumber: serial,
        subject: [{ CN: [request.subject.name] }],
        issuer: this.certificate.subjectName,
        notBefore,
        notAfter,
        publicKey: request.publicKey,
        signingKey: this.#signingKey,
        signingAlgorithm: SIGNING_ALGORITHM,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
          new x509.ExtendedKeyUsageExtension(request.usages),
          new x509.SubjectAlternativeNameExtension([
            { type: 'url', value: subjectUri(request.subject) },
            ...request.extraNames,
          ]),
          new x509.AuthorityKeyIdentifierExtension(this.#keyId),
          await x509.SubjectKeyIdentifierExtension.create(request.publicKey, false, crypto),
        ],
      },
      crypto,
    );
    return { pem: certificate.toString('pem'), serial, notBefore, notAfter };
  }

  /**
   * Whether `leafPem` is a certificate this CA issued, valid at `now`, for `purpose`, and not revoked.
   * On success, names the subject from its SAN URI. Never throws for bad input: the reason says why.
   */
  async verifyChain(leafPem: string, options: VerifyChainOptions): Promise<ChainVerification> {
    const now = options.now ?? new Date();
    const purpose = options.purpose ?? 'client';
    if (typeof leafPem !== 'string' || leafPem.length > MAX_PEM_LENGTH)
      return failure('malformed', `expected a PEM certificate of at most ${MAX_PEM_LENGTH} characters`);
    let leaf: x509.X509Certificate;
    try {
      leaf = new x509.X509Certificate(leafPem);
    } catch (error) {
      return failure('malformed', `not a PEM certificate (${(error as Error).message})`);
    }
    if (leaf.issuer !== this.certificate.subject)
      return failure(
        'unknown-issuer',
        `issued by "${leaf.issuer}", not by this CA ("${this.certificate.subject}")`,
      );
    let signed = false;
    try {
      signed = await leaf.verify({ publicKey: this.certificate.publicKey, signatureOnly: true }, crypto);
    } catch {
      signed = false;
    }
    if (!signed)
      return failure('unknown-issuer', `its signature does not verify with this CA's key (${this.pin})`);
    if (now < leaf.notBefore) return failure('not-yet-valid', `valid from ${leaf.notBefore.toISOString()}`);
    if (now > leaf.notAfter) return failure('expired', `expired at ${leaf.notAfter.toISOString()}`);

    if (leaf.getExtension(x509.BasicConstraintsExtension)?.ca)
      return failure('wrong-purpose', 'it is a CA certificate, not a leaf');
    const wanted = purpose === 'client' ? x509.ExtendedKeyUsage.clientAuth : x509.ExtendedKeyUsage.serverAuth;
    const usages = leaf.getExtension(x509.ExtendedKeyUsageExtension)?.usages ?? [];
    if (!usages.includes(wanted)) return failure('wrong-purpose', `it is not a ${purpose} certificate`);

    const wantedKind = options.subject ?? (purpose === 'client' ? 'identity' : 'gateway');
    const subjects = (leaf.getExtension(x509.SubjectAlternativeNameExtension)?.names.items ?? [])
      .filter((name) => name.type === 'url')
      .map((name) => parseSubjectUri(name.value))
      .filter((subject) => subject !== null);
    const subject = subjects.length === 1 ? subjects[0] : undefined;
    if (!subject || subject.kind !== wantedKind)
      return failure('no-subject', `it does not name exactly one umbra://${wantedKind}/ subject`);

    const serial = leaf.serialNumber.toLowerCase();
    if (await options.isRevoked(serial)) return failure('revoked', `serial ${serial} is revoked`);
    return { ok: true, kind: subject.kind, name: subject.name, serial, notAfter: leaf.notAfter };
  }
}

const DNS_NAME =
  /^(\*\.)?(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

function failure(reason: ChainFailureReason, detail: string): ChainVerification {
  return { ok: false, reason, detail };
}

/** X.509 times have whole seconds; rounding first makes the returned dates the ones in the certificate. */
function wholeSeconds(date: Date): Date {
  if (!(date instanceof Date) || Number.isNaN(date.getTime()))
    throw new CertificateRequestError(`now: ${String(date)} is not a valid date`);
  return new Date(Math.floor(date.getTime() / 1000) * 1000);
}

function checkValidity(seconds: number): number {
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > MAX_LEAF_VALIDITY_SECONDS)
    throw new CertificateRequestError(
      `validitySeconds: ${seconds} must be a whole number of seconds from 1 to ${MAX_LEAF_VALIDITY_SECONDS}`,
    );
  return seconds;
}

/** Parses a PKCS#10 request and returns its key, once the request's signature proves possession of it. */
async function keyFromRequest(csrPem: string): Promise<x509.PublicKey> {
  if (typeof csrPem !== 'string' || !csrPem.includes('-----BEGIN CERTIFICATE REQUEST-----'))
    throw new CertificateRequestError(
      'csr: expected a PEM PKCS#10 request ("-----BEGIN CERTIFICATE REQUEST-----")',
    );
  if (csrPem.length > MAX_PEM_LENGTH)
    throw new CertificateRequestError(
      `csr: ${csrPem.length} characters; a request is at most ${MAX_PEM_LENGTH}`,
    );
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch (error) {
    throw new CertificateRequestError(`csr: not a valid PKCS#10 request (${(error as Error).message})`, {
      cause: error,
    });
  }
  assertIssuableKey(csr.publicKey, 'csr');
  let verified = false;
  try {
    verified = await csr.verify(crypto);
  } catch {
    verified = false;
  }
  if (!verified)
    throw new CertificateRequestError(
      'csr: its signature does not verify against its own key; it was altered or not signed by the key it carries — make a new request',
    );
  return csr.publicKey;
}

function keyFromKeyObject(key: KeyObject): x509.PublicKey {
  if (key?.type !== 'public')
    throw new CertificateRequestError(
      'key: expected a public KeyObject (or a CSR); the CA never needs the private key — pass createPublicKey(privateKey)',
    );
  const publicKey = new x509.PublicKey(key.export({ type: 'spki', format: 'der' }));
  assertIssuableKey(publicKey, 'key');
  return publicKey;
}

/** Only the two key types Umbra's clients and gateways generate; anything else is a mistake or a probe. */
function assertIssuableKey(publicKey: x509.PublicKey, field: string): void {
  const algorithm = publicKey.algorithm as { name?: string; namedCurve?: string };
  const ok = algorithm.name === 'Ed25519' || (algorithm.name === 'ECDSA' && algorithm.namedCurve === 'P-256');
  if (!ok)
    throw new CertificateRequestError(
      `${field}: the key is ${algorithm.name ?? 'unknown'}${algorithm.namedCurve ? ` ${algorithm.namedCurve}` : ''}; Umbra certifies ECDSA P-256 or Ed25519 keys only`,
    );
}
