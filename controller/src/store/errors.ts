// One error type for everything the store refuses, so the CLI and the HTTP API can map a code to an
// exit status or a response without parsing messages, and still show the message as it is: it names
// the field and the value and says what would be accepted.

/**
 * - `duplicate`: a name (or hash, or serial) that must be unique is taken.
 * - `not-found`: something the input refers to does not exist.
 * - `invalid`: the input itself is malformed or out of range.
 * - `incompatible`: the database was written by a newer controller (its schema is ahead of this code).
 */
export type StoreErrorCode = 'duplicate' | 'not-found' | 'invalid' | 'incompatible';

export class StoreError extends Error {
  override name = 'StoreError';
  readonly code: StoreErrorCode;
  /** The input field at fault, e.g. `name`, `groups[1]`, `backend`. */
  readonly field: string | undefined;

  constructor(code: StoreErrorCode, message: string, field?: string) {
    super(message);
    this.code = code;
    this.field = field;
  }
}
