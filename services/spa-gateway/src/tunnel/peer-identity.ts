// Who is at the other end of a tunnel: the identity the client certificate names, and its serial
// for revocation. The chain was already verified against the controller's CA by the handshake;
// this only reads the name, which must be exactly one umbra://identity/NAME URI.

import type { X509Certificate } from 'node:crypto';

export interface PeerIdentity {
  identity: string;
  /** Lower-case hex, as the controller records serials. */
  serial: string;
}

const UMBRA_URI = 'URI:umbra://';
const IDENTITY_URI = 'URI:umbra://identity/';
// The controller's name alphabet (controller/src/ca/subject.ts): no escaping, one spelling per name.
const IDENTITY_NAME = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$/;

/** The identity and serial of a client certificate, or why it names no single identity. */
export function peerIdentityOf(certificate: X509Certificate | undefined): PeerIdentity | { refused: string } {
  if (certificate === undefined) return { refused: 'no client certificate' };
  // Node lists SANs as "URI:a, DNS:b"; a value with a comma or quote would be JSON-quoted, and so
  // would not start with URI:umbra:// — such a name is no identity.
  const umbraNames = (certificate.subjectAltName ?? '')
    .split(', ')
    .filter((name) => name.startsWith(UMBRA_URI));
  if (umbraNames.length !== 1) {
    return { refused: `the certificate has ${umbraNames.length} umbra:// names, not one identity` };
  }
  const [name] = umbraNames as [string];
  if (!name.startsWith(IDENTITY_URI)) {
    return { refused: `the certificate names ${name.slice(4)}, not an identity` };
  }
  const identity = name.slice(IDENTITY_URI.length);
  if (!IDENTITY_NAME.test(identity))
    return { refused: 'the certificate names an identity outside the name alphabet' };
  return { identity, serial: certificate.serialNumber.toLowerCase() };
}
