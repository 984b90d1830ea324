// The controller's HTTPS API and the gateway links on the same port. Its TLS certificate is issued
// by its own CA at every start, for the host in its URL, with the SAN URI umbra://controller/…;
// devices trust it through the CA pin in their enrollment token. Every request body is validated
// against a JSON schema and bounded.
//
// Every client is asked for a certificate from the CA but may connect without one: enrollment is how
// a device or gateway gets its first. The routes that need one (the client API, the gateway link)
// check it themselves and answer 401 without it.

import { generateKeyPairSync } from 'node:crypto';
import { isIP } from 'node:net';
import {
  ATTEST_CHALLENGE_PATH,
  ATTEST_ENROLL_PATH,
  type AttestChallengeRequest,
  type AttestEnrollRequest,
} from '@umbra/protocol';
import Fastify, { type FastifyInstance } from 'fastify';
import { AttestedEnrollment } from '../attestation/attested-enrollment.ts';
import { type DataDir, timeZoneOf } from '../data-dir.ts';
import { type LinkService, startLinkService } from '../link/link-service.ts';
import { ApiError } from './api-error.ts';
import { registerClientApi } from './client.ts';
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

const BASE64 = '^[A-Za-z0-9+/]+={0,2}$';
const base64 = (maxLength: number) => ({ type: 'string', maxLength, pattern: BASE64 }) as const;
const signedAttest = {
  type: 'object',
  additionalProperties: false,
  required: ['attest', 'signature'],
  properties: { attest: base64(2800), signature: base64(1400) },
} as const;

const attestChallengeSchema = {
  body: {
    type: 'object',
    additionalProperties: false,
    required: ['ekCertificate', 'ekPublic', 'akPublic'],
    properties: {
      token: { type: 'string', maxLength: 2048 },
      ekCertificate: base64(5600),
      ekPublic: base64(2800),
      akPublic: base64(2800),
    },
  },
} as const;

const attestEnrollSchema = {
  body: {
    type: 'object',
    additionalProperties: false,
    required: [
      'challenge',
      'secret',
      'quote',
      'pcrValues',
      'identityPublic',
      'identityCertify',
      'spaPublicKey',
      'csr',
    ],
    properties: {
      token: { type: 'string', maxLength: 2048 },
      challenge: { type: 'string', pattern: '^[0-9a-f]{32}$' },
      secret: base64(100),
      quote: signedAttest,
      pcrValues: {
        type: 'object',
        maxProperties: 24,
        additionalProperties: false,
        patternProperties: { '^([0-9]|1[0-9]|2[0-3])$': { type: 'string', pattern: '^[0-9a-f]{40,96}$' } },
      },
      identityPublic: base64(2800),
      identityCertify: signedAttest,
      firmwareVersion: { type: 'string', pattern: '^[A-Za-z0-9._+~-]{1,64}$' },
      spaPublicKey: { type: 'string', maxLength: 64 },
      csr: { type: 'string', maxLength: 8192 },
    },
  },
} as const;

export interface ControllerServer {
  app: FastifyInstance;
  /** The address actually bound, e.g. for --listen 127.0.0.1:0. */
  port: number;
  /** The gateway links, the decision path and the event tail behind them. */
  links: LinkService;
  close(): Promise<void>;
}

export interface ServerOptions {
  /** pino level for the JSON log; default 'info'. */
  logLevel?: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  /** How often links are pinged; a link silent for one interval is cut. Default 15 s. */
  linkPingIntervalMs?: number;
  /** How often gateways enrolled with a TPM are re-attested; default 10 min. */
  attestIntervalMs?: number;
  /** Milliseconds since the epoch, for decisions; tests pin it. */
  clock?: () => number;
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

export async function startServer(
  data: DataDir,
  host: string,
  port: number,
  options: ServerOptions = {},
): Promise<ControllerServer> {
  const app = Fastify({
    https: {
      ...(await serverIdentity(data, host)),
      minVersion: 'TLSv1.3',
      handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
      requestCert: true,
      rejectUnauthorized: false,
      ca: data.ca.pem,
    },
    bodyLimit: BODY_LIMIT_BYTES,
    connectionTimeout: REQUEST_TIMEOUT_MS,
    requestTimeout: REQUEST_TIMEOUT_MS,
    keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    // Request logs carry method, URL and address, never bodies: tokens stay out of the log.
    logger: { level: options.logLevel ?? 'info', base: { service: 'umbra-controller' } },
  });
  const links = await startLinkService({
    store: data.store,
    ca: data.ca,
    timeZone: timeZoneOf(data.settings),
    log: app.log,
    ...(options.clock === undefined ? {} : { clock: options.clock }),
    ...(options.linkPingIntervalMs === undefined ? {} : { pingIntervalMs: options.linkPingIntervalMs }),
    ...(options.attestIntervalMs === undefined ? {} : { attestIntervalMs: options.attestIntervalMs }),
  });
  app.server.on('upgrade', (request, socket, head) => links.server.handleUpgrade(request, socket, head));
  app.get('/v1/health', async () => ({ ok: true }));
  app.post<{ Body: GatewayEnrollRequest }>('/v1/gateway/enroll', { schema: gatewayEnrollSchema }, (request) =>
    enrollGateway(data, request.body),
  );
  const attested = new AttestedEnrollment(data, options.clock);
  app.post<{ Body: AttestChallengeRequest }>(
    ATTEST_CHALLENGE_PATH,
    { schema: attestChallengeSchema },
    (request) => attested.challenge(request.body),
  );
  app.post<{ Body: AttestEnrollRequest }>(ATTEST_ENROLL_PATH, { schema: attestEnrollSchema }, (request) =>
    attested.enroll(request.body),
  );
  app.post<{ Body: EnrollRequest }>('/v1/enroll', { schema: enrollSchema }, (request) =>
    enroll(data, request.body),
  );
  registerClientApi(app, data);
  app.setErrorHandler((error, _request, reply) => {
    // Refusals and client errors (a schema failure naming the field, bad JSON, a body over the
    // limit) are answered with their status and message; anything else is ours, without internals.
    if (error instanceof EnrollmentRefused || error instanceof ApiError)
      return reply.code(error.status).send({ error: error.message });
    const status = (error as { statusCode?: number }).statusCode;
    if (status !== undefined && status >= 400 && status < 500)
      return reply.code(status).send({ error: (error as Error).message });
    app.log.error({ err: error }, 'request failed');
    return reply.code(500).send({ error: 'internal error; see the controller log' });
  });
  try {
    await app.listen({ host, port });
  } catch (error) {
    await links.close();
    throw error;
  }
  app.server.maxConnections = MAX_CONNECTIONS;
  const renewal = setInterval(() => {
    serverIdentity(data, host).then(
      (identity) => app.server.setSecureContext({ ...identity, minVersion: 'TLSv1.3', ca: data.ca.pem }),
      (error: unknown) => app.log.error({ err: error }, 'could not renew the controller certificate'),
    );
  }, CERTIFICATE_RENEWAL_MS);
  renewal.unref();
  const address = app.server.address();
  return {
    app,
    port: typeof address === 'object' && address ? address.port : port,
    links,
    close: async () => {
      clearInterval(renewal);
      // Links first: an upgraded socket would otherwise hold the HTTPS server's close open.
      await links.close();
      await app.close();
    },
  };
}
