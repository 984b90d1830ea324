// Certificate serial numbers: 128 random bits, as positive DER INTEGERs of exactly 16 bytes. Random
// serials make issued certificates unpredictable (the defence against chosen-prefix collisions) and
// unique without coordination between controller processes sharing one database.

import { randomBytes } from 'node:crypto';

export const SERIAL_BYTES = 16;

/** Lower-case hex, 32 digits, as `openssl x509 -serial` and @peculiar/x509 print it. */
export function randomSerial(): string {
  for (;;) {
    const bytes = randomBytes(SERIAL_BYTES);
    // Top bit clear keeps the INTEGER positive; a zero first byte would make 16 bytes non-minimal DER.
    bytes[0]! &= 0x7f;
    if (bytes[0] !== 0) return bytes.toString('hex');
  }
}
