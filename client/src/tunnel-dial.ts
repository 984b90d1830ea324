// Opening one TLS connection to a gateway's tunnel listener. The gateway is recognised by its
// certificate from the controller's CA naming umbra://gateway/<its name> — not by host name, since
// clients usually reach gateways by address; and the one ALPN protocol offered says what for:
// umbra-svc/<service> for a tunnel, umbra-control/1 for the control channel. The gateway's side is
// services/spa-gateway/src/tunnel/listener.ts.

import { connect, type PeerCertificate, type TLSSocket } from 'node:tls';
import type { TlsCredentials } from './device.ts';

export { CONTROL_ALPN, SERVICE_ALPN_PREFIX, serviceAlpn } from '@umbra/protocol';

/** checkServerIdentity for a gateway: its certificate must name exactly umbra://gateway/<name>. */
export function gatewayIdentityCheck(gatewayName: string) {
  const expected = `URI:umbra://gateway/${gatewayName}`;
  return (_host: string, certificate: PeerCertificate): Error | undefined => {
    const names = (certificate.subjectaltname ?? '')
      .split(', ')
      .filter((name) => name.startsWith('URI:umbra://'));
    if (names.length === 1 && names[0] === expected) return undefined;
    return new Error(
      `the gateway presented a certificate for ${names.map((name) => name.slice(4)).join(', ') || 'no umbra:// name'}, not umbra://gateway/${gatewayName}`,
    );
  };
}

/** The connection did not complete in time: the pinhole is probably closed (expired, or our address changed). */
export class DialTimeoutError extends Error {
  override name = 'DialTimeoutError';
}

export interface DialOptions {
  host: string;
  port: number;
  credentials: TlsCredentials;
  alpn: string;
  gatewayName: string;
  timeoutMs: number;
}

/** Resolves once the TLS handshake is done and the gateway agreed on the ALPN protocol. */
export function dialTunnel(options: DialOptions): Promise<TLSSocket> {
  const { host, port, credentials, alpn, gatewayName, timeoutMs } = options;
  return new Promise((resolve, reject) => {
    const socket = connect({
      host,
      port,
      key: credentials.key,
      cert: credentials.cert,
      ca: credentials.ca,
      ALPNProtocols: [alpn],
      minVersion: 'TLSv1.3',
      checkServerIdentity: gatewayIdentityCheck(gatewayName),
    });
    const fail = (error: Error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(error);
    };
    // A dropped SYN (no pinhole) never fails by itself: the kernel retries it for two minutes.
    const timer = setTimeout(
      () => fail(new DialTimeoutError(`no TLS connection to ${host} port ${port} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    socket.once('error', fail);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      socket.off('error', fail);
      if (socket.alpnProtocol !== alpn) {
        socket.destroy();
        reject(new Error(`the gateway at ${host} port ${port} did not agree to ${alpn}`));
        return;
      }
      socket.setNoDelay(true);
      resolve(socket);
    });
  });
}
