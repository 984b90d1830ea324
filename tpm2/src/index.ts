// @umbra/tpm2: TPM 2.0 in TypeScript, no native addon.

export {
  commandName,
  HEADER_SIZE,
  handleName,
  nameOf,
  TPM_ALG,
  TPM_CAP,
  TPM_CC,
  TPM_ECC,
  TPM_HT,
  TPM_PT,
  TPM_RH,
  TPM_SE,
  TPM_ST,
  TPM_SU,
  TPMA_NV,
  TPMA_OBJECT,
  TPMA_SESSION,
} from './constants.ts';
export { digestSize, hash, MAX_DIGEST_SIZE, nodeHashName } from './hash.ts';
export { Reader, TpmFormatError, Writer } from './marshal.ts';
export { computeName, handleNameBytes } from './name.ts';
export { openTransport } from './open.ts';
export {
  type PcrValueBanks,
  PolicyDigest,
  pcrValuesDigest,
} from './policy-digest.ts';
export {
  decodeResponseCode,
  type ResponseCode,
  type ResponseCodeKind,
  TPM_RC,
  TpmError,
} from './response-code.ts';
export {
  decodeSealedBlob,
  describeSelection,
  encodeSealedBlob,
  SEALED_BLOB_MAGIC,
  SEALED_BLOB_VERSION,
  type SealedBlob,
  SealedBlobFormatError,
  SealedByOtherTpmError,
  type SealedEnvelope,
  SealedToOtherBootStateError,
  type SealOptions,
  type SealSelection,
  sealToPcrs,
  unsealWithPcrs,
} from './seal.ts';
export {
  type AuthCommand,
  type AuthResponse,
  AuthSession,
  type CommandContext,
  passwordSession,
  type Session,
} from './session.ts';
export { type EnsureStorageKeyOptions, ensureStorageKey } from './storage-key.ts';
export {
  AES_128_CFB,
  type Attest,
  type AttestInfo,
  type ClockInfo,
  curveSize,
  type EccPublic,
  ecdsaSignatureP1363,
  type KeyedHashPublic,
  MAX_DATA_SIZE,
  NO_SYMMETRIC,
  NULL_SCHEME,
  type NvPublic,
  type PcrSelection,
  type PublicArea,
  publicKeyObject,
  type RsaPublic,
  readAttest,
  readNvPublic,
  readPcrSelections,
  readPublicArea,
  readSignature,
  type Scheme,
  type Signature,
  type SymCipherPublic,
  type SymmetricDefinition,
  TPM_GENERATED_VALUE,
  writeNvPublic,
  writePcrSelections,
  writePublicArea,
  writeSignature,
} from './structures.ts';
export {
  EK_POLICY_SHA256,
  eccAttestationTemplate,
  eccEkTemplate,
  eccExternalPublic,
  eccSigningTemplate,
  eccStorageTemplate,
  rsaEkTemplate,
  rsaSigningTemplate,
  rsaStorageTemplate,
  UMBRA_PERSISTENT,
} from './templates.ts';
export type { NvReadOptions, NvReadPublicResult, PolicySecretResult } from './tpm.ts';
export {
  type AttestResult,
  type CapabilityResult,
  type CommandRequest,
  type CreatePrimaryOptions,
  type CreatePrimaryResult,
  type CreateResult,
  type LoadedPublic,
  type LoadResult,
  MAX_SYM_DATA,
  type PcrValues,
  type ReadPublicResult,
  readPublicWithBytes,
  Tpm,
} from './tpm.ts';
export {
  CommandQueue,
  MAX_RESPONSE_SIZE,
  parseTpmAddress,
  TPM_ADDRESS_FORMS,
  type TpmAddress,
  type Transport,
} from './transport.ts';
export { DEVICE_BUFFER_SIZE, DeviceTransport } from './transports/device.ts';
export { SwtpmTransport, type SwtpmTransportOptions } from './transports/swtpm.ts';
export * from './verifier/index.ts';
