// The controller's client API, over mutual TLS: the device shows its enrolled certificate and
// trusts only the controller's CA, and only a certificate naming umbra://controller/ (a gateway's
// certificate from the same CA must not pose as the controller).

import { ControllerApiError, controllerRequest, parseAccess } from '@umbra/protocol';
import type { TlsCredentials } from './device.ts';

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
  const answer = (await requestWith(url, 'GET', credentials)) as Partial<ServiceRoute> | null;
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
  const answer = (await requestWith(new URL('/v1/client/renew', controller), 'POST', credentials, {
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
function requestWith(url: URL, method: 'GET' | 'POST', credentials: TlsCredentials, body?: unknown) {
  return controllerRequest(url, {
    method,
    ca: credentials.ca,
    key: credentials.key,
    cert: credentials.cert,
    body,
  });
}
