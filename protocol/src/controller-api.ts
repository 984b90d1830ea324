// Talking to the controller's HTTPS API before this machine trusts anything: a device or gateway
// has only its enrollment token, which carries the controller's URL and the pin of its CA. The
// controller is recognised by that pin — the chain it presents must hold a certificate whose key
// the pin names — and from then on the connection trusts that CA alone, with the usual host check.

import { request } from 'node:https';
import { isIP } from 'node:net';
import { checkServerIdentity, connect, type PeerCertificate } from 'node:tls';
import { verifyPin } from './pin.ts';

const TIMEOUT_MS = 15_000;
const MAX_RESPONSE_BYTES = 64 * 1024;

/** The controller could not be reached, was not the one the pin names, or refused; the message says which. */
export class ControllerApiError extends Error {
  override name = 'ControllerApiError';
}

/** Reads the controller's chain without trusting it, and returns the CA certificate the pin names. */
export function fetchPinnedCa(url: URL, pin: string): Promise<string> {
  const host = url.hostname.replace(/^\[|\]$/g, '');
  return new Promise((resolve, reject) => {
    const socket = connect({
      host,
      port: Number(url.port || 443),
      servername: isIP(host) ? undefined : host,
      // Nothing is trusted on this connection: it only fetches the chain, checked against the pin below.
      rejectUnauthorized: false,
      minVersion: 'TLSv1.3',
      timeout: TIMEOUT_MS,
    });
    const fail = (message: string) => {
      socket.destroy();
      reject(new ControllerApiError(message));
    };
    socket.once('timeout', () => fail(`${url.origin}: no answer within ${TIMEOUT_MS / 1000} s`));
    socket.once('error', (error) => fail(`${url.origin}: cannot connect (${error.message})`));
    socket.once('secureConnect', () => {
      const seen = new Set<PeerCertificate>();
      for (
        let cert: PeerCertificate | undefined = socket.getPeerCertificate(true);
        cert?.raw && !seen.has(cert);
      ) {
        seen.add(cert);
        if (verifyPin(cert.raw, pin)) {
          socket.end();
          resolve(
            `-----BEGIN CERTIFICATE-----\n${cert.raw
              .toString('base64')
              .replace(/(.{64})/g, '$1\n')
              .trim()}\n-----END CERTIFICATE-----\n`,
          );
          return;
        }
        cert = (cert as { issuerCertificate?: PeerCertificate }).issuerCertificate;
      }
      fail(
        `${url.origin}: no certificate in its chain matches the token's CA pin; this is not the controller the token was made for`,
      );
    });
  });
}

/** The SAN URI prefix only the controller's own certificate carries (a gateway's says umbra://gateway/). */
const CONTROLLER_SUBJECT = 'URI:umbra://controller/';

/**
 * The host-name check, plus: the certificate must be the controller's. Gateways hold certificates
 * from the same CA with serverAuth (for their tunnels); without this, a gateway whose name or SAN
 * matched the controller's host could pose as the controller and collect enrollment tokens.
 */
export function checkControllerIdentity(host: string, certificate: PeerCertificate): Error | undefined {
  const hostError = checkServerIdentity(host, certificate);
  if (hostError) return hostError;
  const names = (certificate.subjectaltname ?? '').split(', ');
  if (!names.some((name) => name.startsWith(CONTROLLER_SUBJECT)))
    return new ControllerApiError(
      `${host} presented a certificate that is not the controller's (no ${CONTROLLER_SUBJECT}… name)`,
    );
  return undefined;
}

/** One POST over TLS that trusts only `caPem`, checks the host name, and insists on the controller's certificate. */
export function postJson(url: URL, caPem: string, body: unknown): Promise<unknown> {
  return controllerRequest(url, { method: 'POST', ca: caPem, body });
}

export interface ControllerRequest {
  method: 'GET' | 'POST';
  /** The only trust: the controller's CA. */
  ca: string;
  /** An enrolled device's or gateway's TLS key and certificate, for the API that needs them. */
  key?: string;
  cert?: string;
  body?: unknown;
}

/**
 * One JSON request to the controller over TLS 1.3, trusting only its CA and insisting on the
 * controller's own certificate; rejects with ControllerApiError saying what went wrong.
 */
export function controllerRequest(url: URL, options: ControllerRequest): Promise<unknown> {
  const { method, body } = options;
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method,
        ca: options.ca,
        key: options.key,
        cert: options.cert,
        checkServerIdentity: checkControllerIdentity,
        minVersion: 'TLSv1.3',
        timeout: TIMEOUT_MS,
        // A fresh connection each time: a renewed certificate must be the one presented.
        agent: false,
        headers: payload
          ? { 'content-type': 'application/json', 'content-length': payload.length }
          : { accept: 'application/json' },
      },
      (response) => {
        const chunks: Buffer[] = [];
        let size = 0;
        response.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_RESPONSE_BYTES) req.destroy(new Error('the answer is too large'));
          else chunks.push(chunk);
        });
        response.on('end', () => {
          let parsed: { error?: unknown };
          try {
            parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          } catch {
            reject(
              new ControllerApiError(
                `${url.origin} answered ${response.statusCode} with something that is not JSON`,
              ),
            );
            return;
          }
          if (response.statusCode !== 200)
            reject(
              new ControllerApiError(
                `the controller refused: ${typeof parsed?.error === 'string' ? parsed.error : `status ${response.statusCode}`}`,
              ),
            );
          else resolve(parsed);
        });
      },
    );
    req.once('timeout', () => req.destroy(new Error(`no answer within ${TIMEOUT_MS / 1000} s`)));
    req.once('error', (error) => reject(new ControllerApiError(`${url.origin}: ${error.message}`)));
    req.end(payload);
  });
}
