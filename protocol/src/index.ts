// @umbra/protocol: the wire formats every Umbra program shares.

export { ipAddressFromBytes, ipAddressToBytes } from './address.ts';
export { ControllerApiError, checkControllerIdentity, fetchPinnedCa, postJson } from './controller-api.ts';
export { CertificateRequestError, type CertificateRequestOptions, createCertificateRequest } from './csr.ts';
export {
  beginEnrollment,
  CA_CERT_FILE,
  completeEnrollment,
  ENROLLMENT_FILE,
  type EnrollmentRecord,
  type StartedEnrollment,
  TLS_CERT_FILE,
  TLS_KEY_FILE,
} from './enrollment-files.ts';
export {
  type CreatedEnrollmentToken,
  type CreateEnrollmentTokenOptions,
  createEnrollmentToken,
  ENROLLMENT_TOKEN_PREFIX,
  type EnrollmentToken,
  EnrollmentTokenError,
  type EnrollmentTokenKind,
  enrollmentPossessionMessage,
  hashTokenSecret,
  parseEnrollmentToken,
  TOKEN_SECRET_BYTES,
  tokenSecretMatches,
} from './enrollment-token.ts';
export { deriveX25519KeyPair, HpkeRecipient, hpkeSeal } from './hpke.ts';
export {
  decodeKey,
  ed25519PublicKeyObject,
  encodeKey,
  formatGatewayKeyFile,
  formatIdentityFile,
  type GatewayKeyPair,
  gatewayKeyIdOf,
  generateGatewayKeyPair,
  generateIdentity,
  ID_BYTES,
  type Identity,
  identityIdOf,
  KEY_TEXT_LENGTH,
  KeyFormatError,
  parseGatewayKeyFile,
  parseIdentityFile,
  readSecretFile,
  SecretFileError,
  type WriteSecretFileOptions,
  writeSecretFile,
} from './keys.ts';
export {
  type Access,
  type Knock,
  KnockError,
  NONCE_BYTES,
  POSTURE_KEY_MAX_BYTES,
  POSTURE_MAX_ENTRIES,
  POSTURE_TEXT_MAX_BYTES,
  type PostureValue,
  parseAccess,
  SERVICE_NAME,
  SERVICE_NAME_MAX_BYTES,
  SIGNATURE_BYTES,
} from './knock.ts';
export { PIN_PREFIX, pinOf, verifyPin } from './pin.ts';
export {
  type KnockRequest,
  type OpenedKnock,
  type OpenFailure,
  type OpenResult,
  SPA_AAD,
  SPA_DEFAULT_PORT,
  SPA_HEADER_BYTES,
  SPA_HPKE_INFO,
  SPA_MAC1_BYTES,
  SPA_MAX_PACKET_BYTES,
  SPA_MIN_PACKET_BYTES,
  SPA_VERSION,
  SpaReceiver,
  sealKnock,
  spaMac1,
  verifyKnockSignature,
} from './spa.ts';
