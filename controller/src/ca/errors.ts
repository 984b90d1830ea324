// The errors this directory throws. Each names the input that was wrong and, where there is one, the fix.

/** The CA's own files: creating over an existing CA, or loading a missing, unreadable or damaged one. */
export class CertificateAuthorityError extends Error {
  override name = 'CertificateAuthorityError';
}

// A request for a certificate was refused: the CSR does not parse, its signature does not verify,
// its key is of a kind we do not issue for, or the names asked for are not valid. The class lives
// in the protocol package, which makes the requests on devices.
export { CertificateRequestError } from '@umbra/protocol';
