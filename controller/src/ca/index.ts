// The controller's certificate authority and enrollment tokens.

// Shared with the devices, so they live in the protocol package; re-exported for the controller.
export {
  CertificateRequestError,
  type CertificateRequestOptions,
  type CreatedEnrollmentToken,
  type CreateEnrollmentTokenOptions,
  createCertificateRequest,
  createEnrollmentToken,
  ENROLLMENT_TOKEN_PREFIX,
  type EnrollmentToken,
  EnrollmentTokenError,
  type EnrollmentTokenKind,
  hashTokenSecret,
  PIN_PREFIX,
  parseEnrollmentToken,
  pinOf,
  TOKEN_SECRET_BYTES,
  tokenSecretMatches,
  verifyPin,
} from '@umbra/protocol';
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
export { CertificateAuthorityError } from './errors.ts';
export { type CertificateSubject, parseSubjectUri, type SubjectKind, subjectUri } from './subject.ts';
