// The API an enrolled device calls with its identity certificate (mutual TLS): where a service is
// (which gateway, its address and SPA key, what to knock for), and renewing its certificate before
// it expires. The certificate must chain to the CA, be valid and unrevoked, and name an identity
// that is neither revoked nor disabled (nor owned by a disabled or revoked user).

import type { FastifyInstance, FastifyRequest } from 'fastify';
import { CertificateRequestError } from '../ca/index.ts';
import type { DataDir } from '../data-dir.ts';
import type { Identity } from '../store/index.ts';
import { ApiError } from './api-error.ts';
import { peerCertificatePem } from './peer-certificate.ts';

export interface ClientServiceResponse {
  service: string;
  mode: 'tunnel' | 'direct';
  /** What to knock for: "tcp/PORT" (the gateway's tunnel port, or a direct service's own port). */
  access: string;
  gateway: { name: string; host: string; spaPort: number; tunnelPort: number; spaPublicKey: string };
}

export interface RenewResponse {
  certificate: string;
  notAfter: string;
}

const serviceSchema = {
  params: {
    type: 'object',
    additionalProperties: false,
    required: ['name'],
    properties: { name: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' } },
  },
} as const;

const renewSchema = {
  body: {
    type: 'object',
    additionalProperties: false,
    required: ['csr'],
    properties: { csr: { type: 'string', maxLength: 8192 } },
  },
} as const;

interface ClientCaller {
  identity: Identity;
  serial: string;
}

/** The identity the request's certificate names, or a 401/403 saying why not. */
async function callerOf(data: DataDir, request: FastifyRequest): Promise<ClientCaller> {
  const { store, ca } = data;
  const pem = peerCertificatePem(request.raw.socket);
  if (pem === null)
    throw new ApiError(401, 'this API needs the device certificate from `umbra enroll` (mutual TLS)');
  const verified = await ca.verifyChain(pem, {
    purpose: 'client',
    isRevoked: (serial) => store.isSerialRevoked(serial),
  });
  if (!verified.ok) throw new ApiError(401, `certificate refused (${verified.reason}): ${verified.detail}`);
  const identity = await store.getIdentityByName(verified.name);
  if (identity === null) throw new ApiError(401, `identity ${verified.name} is not known to this controller`);
  if (identity.revokedAt !== null) throw new ApiError(403, `identity ${identity.name} is revoked`);
  if (identity.disabled) throw new ApiError(403, `identity ${identity.name} is disabled`);
  if (identity.owner !== null) {
    const owner = await store.getIdentityByName(identity.owner);
    if (owner?.revokedAt != null)
      throw new ApiError(403, `identity ${identity.name}'s owner ${owner.name} is revoked`);
    if (owner?.disabled)
      throw new ApiError(403, `identity ${identity.name}'s owner ${owner.name} is disabled`);
  }
  return { identity, serial: verified.serial };
}

export function registerClientApi(app: FastifyInstance, data: DataDir): void {
  const { store, ca } = data;

  app.get<{ Params: { name: string } }>(
    '/v1/client/services/:name',
    { schema: serviceSchema },
    async (request): Promise<ClientServiceResponse> => {
      await callerOf(data, request);
      const name = request.params.name;
      const service = await store.getServiceByName(name);
      if (service === null)
        throw new ApiError(404, `service ${name}: no such service on this controller; check the name`);
      const gateway = await store.getGatewayByName(service.gateway);
      if (gateway === null || gateway.status !== 'enrolled' || gateway.publicKey === null)
        throw new ApiError(409, `service ${name}: its gateway ${service.gateway} is not enrolled yet`);
      if (gateway.endpoint === null)
        throw new ApiError(
          409,
          `service ${name}: its gateway ${gateway.name} has never connected, so its address is not known yet; try again once it is online`,
        );
      const backendPort = service.backend.slice(service.backend.lastIndexOf(':') + 1);
      return {
        service: service.name,
        mode: service.mode,
        access: service.mode === 'tunnel' ? `tcp/${gateway.endpoint.tunnelPort}` : `tcp/${backendPort}`,
        gateway: {
          name: gateway.name,
          host: gateway.endpoint.host,
          spaPort: gateway.endpoint.spaPort,
          tunnelPort: gateway.endpoint.tunnelPort,
          spaPublicKey: gateway.publicKey,
        },
      };
    },
  );

  app.post<{ Body: { csr: string } }>(
    '/v1/client/renew',
    { schema: renewSchema },
    async (request): Promise<RenewResponse> => {
      const { identity, serial } = await callerOf(data, request);
      let issued: Awaited<ReturnType<typeof ca.issueClientCertificate>>;
      try {
        issued = await ca.issueClientCertificate(request.body.csr, { identity: identity.name });
      } catch (error) {
        if (error instanceof CertificateRequestError) throw new ApiError(400, error.message);
        throw error;
      }
      await store.recordCertificate({
        serial: issued.serial,
        identityId: identity.id,
        notBefore: issued.notBefore.getTime(),
        notAfter: issued.notAfter.getTime(),
        pem: issued.pem,
      });
      await store.appendAudit({
        actor: `identity:${identity.name}`,
        action: 'certificate.renew',
        subject: identity.name,
        decision: 'allow',
        details: { serial: issued.serial, previous: serial, notAfter: issued.notAfter.toISOString() },
      });
      return { certificate: issued.pem, notAfter: issued.notAfter.toISOString() };
    },
  );
}
