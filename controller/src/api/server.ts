// The controller's HTTPS API. Its TLS certificate is issued by its own CA at every start, for the
// host in its URL, with the SAN URI umbra://controller/…; devices trust it through the CA pin in
// their enrollment token. Every request body is validated against a JSON schema and bounded.

import { generateKeyPairSync } from 'node:crypto';
import { isIP } from 'node:net';
import Fastify, { type FastifyInstance } from 'fastify';
import type { DataDir } from '../data-dir.ts';
import { EnrollmentRefused, enroll, enrollGateway } from './enroll.ts';

const BODY_LIMIT_BYTES = 16 * 1024;

const enrollSchema = {
  body: {
    type: 'object',
    additionalProperties: false,
    required: ['token', 'identityPublicKey', 'csr'],
    properties: {
      token: { type: 'string', maxLength: 2048 },
      identityPublicKey: { type: 'string', maxLength: 64 },
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

export async function startServer(data: DataDir, host: string, port: number): Promise<ControllerServer> {
  const url = new URL(data.settings.url);
  const urlHost = url.hostname.replace(/^\[|\]$/g, '');
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const certificate = await data.ca.issueControllerCertificate(publicKey, {
    name: 'controller',
    dnsNames: isIP(urlHost) ? [] : [urlHost],
    ipAddresses: [
      ...new Set([
        ...(isIP(urlHost) ? [urlHost] : []),
        ...(isIP(host) && host !== '0.0.0.0' && host !== '::' ? [host] : []),
      ]),
    ],
  });
  const app = Fastify({
    https: {
      key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
      // The chain includes the CA, so a device can find the certificate its pin names.
      cert: `${certificate.pem.trim()}\n${data.ca.pem.trim()}\n`,
      minVersion: 'TLSv1.3',
    },
    bodyLimit: BODY_LIMIT_BYTES,
    logger: { level: 'info', base: { service: 'umbra-controller' } },
  });
  app.get('/v1/health', async () => ({ ok: true }));
  app.post<{ Body: { token: string; spaPublicKey: string; csr: string } }>(
    '/v1/gateway/enroll',
    { schema: gatewayEnrollSchema },
    async (request, reply) => {
      try {
        return await enrollGateway(data, request.body);
      } catch (error) {
        if (error instanceof EnrollmentRefused)
          return reply.code(error.status).send({ error: error.message });
        throw error;
      }
    },
  );
  app.post<{ Body: { token: string; identityPublicKey: string; csr: string } }>(
    '/v1/enroll',
    { schema: enrollSchema },
    async (request, reply) => {
      try {
        return await enroll(data, request.body);
      } catch (error) {
        if (error instanceof EnrollmentRefused)
          return reply.code(error.status).send({ error: error.message });
        throw error;
      }
    },
  );
  app.setErrorHandler((error, _request, reply) => {
    // Client errors (a schema failure naming the field, bad JSON, a body over the limit) are
    // answered with their own status and message; anything else is ours, and says so without internals.
    const status = (error as { statusCode?: number }).statusCode;
    if (status !== undefined && status >= 400 && status < 500)
      return reply.code(status).send({ error: (error as Error).message });
    app.log.error({ err: error }, 'request failed');
    return reply.code(500).send({ error: 'internal error; see the controller log' });
  });
  await app.listen({ host, port });
  const address = app.server.address();
  return {
    app,
    port: typeof address === 'object' && address ? address.port : port,
    close: () => app.close(),
  };
}
