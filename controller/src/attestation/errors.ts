/**
 * A file an operator gave (EK roots, golden PCR values) that cannot be used. The message starts with
 * the file's name and says where in it and what would be accepted; the CLI exits 2 on it.
 */
export class AttestationFileError extends Error {
  override name = 'AttestationFileError';
}
