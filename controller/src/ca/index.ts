// The controller's certificate authority and enrollment tokens.

export {
  CA_CERT_FILE,
  CA_KEY_FILE,
  CertificateAuthority,
  type CertificatePurpose,
  type ChainFailureReason,
  type ChainVerification,
  CLOCK_SKEW_SECONDS,
  type CreateCertificateAuthorityOptions,
  DEFAULT_CLIENT_VALIDITY_SECONDS,
  DEFAULT_SERVER_VALIDITY_SECONDS,
  type IssueClientCertificateOptions,
  type IssuedCertificate,
  type IssueServerCertificateOptions,
  MAX_LEAF_VALIDITY_SECONDS,
  type SubjectKey,
  type VerifyChainOptions,
} from './authority.ts';
export { type CertificateRequestOptions, createCertificateRequest } from './csr.ts';
export {
  type CreatedEnrollmentToken,
  type CreateEnrollmentTokenOptions,
  createEnrollmentToken,
  ENROLLMENT_TOKEN_PREFIX,
  type EnrollmentToken,
  EnrollmentTokenError,
  type EnrollmentTokenKind,
  hashTokenSecret,
  parseEnrollmentToken,
  TOKEN_SECRET_BYTES,
  tokenSecretMatches,
} from './enrollment-token.ts';
export { CertificateAuthorityError, CertificateRequestError } from './errors.ts';
export { PIN_PREFIX, pinOf, verifyPin } from './pin.ts';
export { type CertificateSubject, parseSubjectUri, type SubjectKind, subjectUri } from './subject.ts';
