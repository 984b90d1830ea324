// The controller's HTTPS API. Its TLS certificate is issued by its own CA at every start, for the
// host in its URL, with the SAN URI umbra://controller/…; devices trust it through the CA pin in
// their enrollment token. Every request body is validated against a JSON schema and bounded.

import { generateKeyPairSync } from 'node:crypto';
import { isIP } from 'node:net';
import Fastify, { type FastifyInstance } from 'fastify';
import type { DataDir } from '../data-dir.ts';
import {
  EnrollmentRefused,
  type EnrollRequest,
  enroll,
  enrollGateway,
  type GatewayEnrollRequest,
} from './enroll.ts';

const BODY_LIMIT_BYTES = 16 * 1024;

const enrollSchema = {
  body: {
    type: 'object',
    additionalProperties: false,
    required: ['token', 'identityPublicKey', 'identitySignature', 'csr'],
    properties: {
      token: { type: 'string', maxLength: 2048 },
      identityPublicKey: { type: 'string', maxLength: 64 },
      identitySignature: { type: 'string', maxLength: 128 },
      csr: { type: 'string', maxLength: 8192 },
    },
  },
} as const;

const gatewayEnrollSchema = {
  body: {
    type: 'object',
    additionalProperties: false,
    required: ['token', 'spaPublicKey', 'csr'],
    properties: {
      token: { type: 'string', maxLength: 2048 },
      spaPublicKey: { type: 'string', maxLength: 64 },
      csr: { type: 'string', maxLength: 8192 },
    },
  },
} as const;

export interface ControllerServer {
  app: FastifyInstance;
  /** The address actually bound, e.g. for --listen 127.0.0.1:0. */
  port: number;
  close(): Promise<void>;
}

/** Slow or idle clients are cut off: no request may hold a connection for long. */
const HANDSHAKE_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 10_000;
const KEEP_ALIVE_TIMEOUT_MS = 5_000;
const MAX_CONNECTIONS = 1024;
/** The controller's certificate lasts 30 days and is renewed daily, without a restart. */
const CERTIFICATE_RENEWAL_MS = 24 * 3600 * 1000;

/** A fresh key and certificate for the host in the controller's URL (and the listen address). */
async function serverIdentity(data: DataDir, host: string): Promise<{ key: string; cert: string }> {
  const urlHost = new URL(data.settings.url).hostname.replace(/^\[|\]$/g, '');
  const listenIp = isIP(host) && host !== '0.0.0.0' && host !== '::' ? [host] : [];
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const certificate = await data.ca.issueControllerCertificate(publicKey, {
    name: 'controller',
    dnsNames: isIP(urlHost) ? [] : [urlHost],
    ipAddresses: [...new Set([...(isIP(urlHost) ? [urlHost] : []), ...listenIp])],
  });
  return {
    key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    // The chain includes the CA, so a device can find the certificate its pin names.
    cert: `${certificate.pem.trim()}\n${data.ca.pem.trim()}\n`,
  };
}

export async function startServer(data: DataDir, host: string, port: number): Promise<ControllerServer> {
  const app = Fastify({
    https: {
      ...(await serverIdentity(data, host)),
      minVersion: 'TLSv1.3',
      handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
    },
    bodyLimit: BODY_LIMIT_BYTES,
    connectionTimeout: REQUEST_TIMEOUT_MS,
    requestTimeout: REQUEST_TIMEOUT_MS,
    keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    // Request logs carry method, URL and address, never bodies: tokens stay out of the log.
    logger: { level: 'info', base: { service: 'umbra-controller' } },
  });
  app.get('/v1/health', async () => ({ ok: true }));
  app.post<{ Body: GatewayEnrollRequest }>('/v1/gateway/enroll', { schema: gatewayEnrollSchema }, (request) =>
    enrollGateway(data, request.body),
  );
  app.post<{ Body: EnrollRequest }>('/v1/enroll', { schema: enrollSchema }, (request) =>
    enroll(data, request.body),
  );
  app.setErrorHandler((error, _request, reply) => {
    // Refusals and client errors (a schema failure naming the field, bad JSON, a body over the
    // limit) are answered with their status and message; anything else is ours, without internals.
    if (error instanceof EnrollmentRefused) return reply.code(error.status).send({ error: error.message });
    const status = (error as { statusCode?: number }).statusCode;
    if (status !== undefined && status >= 400 && status < 500)
      return reply.code(status).send({ error: (error as Error).message });
    app.log.error({ err: error }, 'request failed');
    return reply.code(500).send({ error: 'internal error; see the controller log' });
  });
  await app.listen({ host, port });
  app.server.maxConnections = MAX_CONNECTIONS;
  const renewal = setInterval(() => {
    serverIdentity(data, host).then(
      (identity) => app.server.setSecureContext({ ...identity, minVersion: 'TLSv1.3' }),
      (error: unknown) => app.log.error({ err: error }, 'could not renew the controller certificate'),
    );
  }, CERTIFICATE_RENEWAL_MS);
  renewal.unref();
  const address = app.server.address();
  return {
    app,
    port: typeof address === 'object' && address ? address.port : port,
    close: () => {
      clearInterval(renewal);
      return app.close();
    },
  };
}
