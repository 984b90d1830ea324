// The verifier side, usable without a TPM: EK certificates and their chains, MakeCredential, quote and
// certify verification, and what the controller requires of an AK and an identity key.

export {
  type CertifyFailure,
  type VerifiedCertify,
  type VerifyCertifyInput,
  type VerifyCertifyResult,
  verifyCertify,
} from './certify.ts';
export {
  EK_CERT_NV_INDEX,
  type EkCertificate,
  EkCertificateError,
  type EkChainResult,
  extractEkCertificateDer,
  parseEkCertificate,
  type VerifyEkChainOptions,
  verifyEkChain,
} from './ek-certificate.ts';
export { checkAttestationKey, checkIdentityKey } from './key-checks.ts';
export {
  type Credential,
  type EkPublic,
  fromTpm2ToolsCredentialFile,
  kdfa,
  kdfe,
  MakeCredentialError,
  makeCredential,
  TPM2_TOOLS_CREDENTIAL_MAGIC,
  toTpm2ToolsCredentialFile,
} from './make-credential.ts';
export {
  comparePcrs,
  describePcrDifferences,
  type PcrBanks,
  type PcrComparison,
  type PcrDifference,
} from './pcr-policy.ts';
export {
  type QuoteClock,
  type QuoteFailure,
  type VerifiedQuote,
  type VerifyQuoteInput,
  type VerifyQuoteResult,
  verifyQuote,
} from './quote.ts';
