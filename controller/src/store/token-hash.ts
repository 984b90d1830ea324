// Enrollment tokens are stored as the SHA-256 of their secret, so reading the database (a backup, a
// leaked copy) gives nothing that enrolls. A hash without salt is enough: the secret is random and
// long, not a password.

import { createHash } from 'node:crypto';

/** Lower-case hex SHA-256 of a token secret, as createEnrollmentToken and consumeEnrollmentToken take it. */
export function enrollmentTokenHash(secret: string | Uint8Array): string {
  return createHash('sha256').update(secret).digest('hex');
}
