// The certificate a TLS peer presented, as PEM for the CA's verifyChain. The HTTPS server asks every
// client for one but lets a connection without one through (enrollment needs none): each route that
// needs one checks it, and a missing or unverified certificate is that route's 401.

import { X509Certificate } from 'node:crypto';
import { TLSSocket } from 'node:tls';

/** The leaf certificate the peer of `socket` presented, or null when it presented none. */
export function peerCertificatePem(socket: unknown): string | null {
  if (!(socket instanceof TLSSocket)) return null;
  const presented = socket.getPeerCertificate(true);
  if (!presented?.raw) return null;
  return new X509Certificate(presented.raw).toString();
}
