// The controller's client API, over mutual TLS: the device shows its enrolled certificate and
// trusts only the controller's CA, and only a certificate naming umbra://controller/ (a gateway's
// certificate from the same CA must not pose as the controller).

import { request } from 'node:https';
import { ControllerApiError, checkControllerIdentity, parseAccess } from '@umbra/protocol';
import type { TlsCredentials } from './device.ts';

const TIMEOUT_MS = 15_000;
const MAX_RESPONSE_BYTES = 64 * 1024;

/** Where and how a service is reached, as GET /v1/client/services/:name answers. */
export interface ServiceRoute {
  service: string;
  mode: 'tunnel' | 'direct';
  /** What the knock asks to open: tcp/PORT (the tunnel port in tunnel mode). */
  access: string;
  gateway: { name: string; host: string; spaPort: number; tunnelPort: number; spaPublicKey: string };
}

export async function fetchServiceRoute(
  controller: URL,
  service: string,
  credentials: TlsCredentials,
): Promise<ServiceRoute> {
  const url = new URL(`/v1/client/services/${encodeURIComponent(service)}`, controller);
  const answer = (await controllerRequest(url, 'GET', credentials)) as Partial<ServiceRoute> | null;
  const gateway = answer?.gateway;
  const port = (value: unknown) =>
    Number.isInteger(value) && (value as number) >= 1 && (value as number) <= 65_535;
  if (
    answer?.service !== service ||
    (answer.mode !== 'tunnel' && answer.mode !== 'direct') ||
    typeof answer.access !== 'string' ||
    !parseAccess(answer.access) ||
    typeof gateway?.name !== 'string' ||
    typeof gateway.host !== 'string' ||
    typeof gateway.spaPublicKey !== 'string' ||
    !port(gateway.spaPort) ||
    !port(gateway.tunnelPort)
  ) {
    throw new ControllerApiError(
      `the controller's answer for service ${service} is incomplete: ${JSON.stringify(answer)}`,
    );
  }
  return answer as ServiceRoute;
}

export async function requestRenewal(
  controller: URL,
  csr: string,
  credentials: TlsCredentials,
): Promise<{ certificate: string; notAfter: string }> {
  const answer = (await controllerRequest(new URL('/v1/client/renew', controller), 'POST', credentials, {
    csr,
  })) as {
    certificate?: unknown;
    notAfter?: unknown;
  } | null;
  if (typeof answer?.certificate !== 'string' || typeof answer.notAfter !== 'string') {
    throw new ControllerApiError('the controller answered the renewal without a certificate');
  }
  return { certificate: answer.certificate, notAfter: answer.notAfter };
}

/** One JSON request over mutual TLS; rejects with ControllerApiError saying what went wrong. */
export function controllerRequest(
  url: URL,
  method: 'GET' | 'POST',
  credentials: TlsCredentials,
  body?: unknown,
): Promise<unknown> {
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method,
        key: credentials.key,
        cert: credentials.cert,
        ca: credentials.ca,
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
          if (response.statusCode !== 200) {
            const why = typeof parsed?.error === 'string' ? parsed.error : `status ${response.statusCode}`;
            reject(new ControllerApiError(`the controller refused ${method} ${url.pathname}: ${why}`));
          } else resolve(parsed);
        });
      },
    );
    req.once('timeout', () => req.destroy(new Error(`no answer within ${TIMEOUT_MS / 1000} s`)));
    req.once('error', (error) => reject(new ControllerApiError(`${url.origin}: ${error.message}`)));
    req.end(payload);
  });
}
