// `umbra connect SERVICE --listen HOST:PORT`: makes a service behind a gateway reachable on a local
// port. The controller says where the service is (which gateway, its address, its SPA key, tunnel
// or direct); each local TCP connection then gets its own new connection to the gateway — one TLS
// connection per local connection in tunnel mode (ALPN umbra-svc/SERVICE), plain TCP to the opened
// port in direct mode — after a knock when the last one is more than a few seconds old. A
// connection that times out means the pinhole closed (expired, or our address changed): knock
// again and retry, three attempts in all.
//
// Alongside, in tunnel mode, a control connection re-reports posture every minute, and the TLS
// certificate is renewed when a third of its lifetime is left (checked at start and hourly).

import { connect as connectTcp, createServer, type Server, type Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { decodeKey, sealKnock } from '@umbra/protocol';
import { ControlChannel } from './control-channel.ts';
import { fetchServiceRoute, requestRenewal, type ServiceRoute } from './controller-client.ts';
import { type Device, loadDevice, validityOf } from './device.ts';
import { localAddressToward, type ResolvedGateway, resolveGateway, sendKnock } from './knock.ts';
import { dialWithKnocks, KnockSchedule } from './knock-schedule.ts';
import type { Posture } from './posture/claims.ts';
import { devicePosture } from './posture/device-posture.ts';
import { LatestPosture } from './posture/latest-posture.ts';
import { RENEWAL_CHECK_MS, renewalDue, renewCertificate } from './renewal.ts';
import { CONTROL_ALPN, DialTimeoutError, dialTunnel, serviceAlpn } from './tunnel-dial.ts';

export interface ConnectOptions {
  dir: string;
  service: string;
  listen: { host: string; port: number };
  /** Bind knocks to this address, or 'auto' for the local address toward the gateway. */
  source?: string;
  postureIntervalMs?: number;
  log(line: string): void;
}

export interface RunningConnect {
  route: ServiceRoute;
  /** The bound local address (the port is real even when 0 was asked for). */
  listening: { host: string; port: number };
  close(): Promise<void>;
}

/** Errors that say the gateway's port did not let us in (yet), so a new knock may help. */
const RETRYABLE_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE']);

export async function startConnect(options: ConnectOptions): Promise<RunningConnect> {
  const { service, log } = options;
  const device = loadDevice(options.dir);
  await renewIfDue(device, log);

  const route = await fetchServiceRoute(device.controller, service, device.credentials);
  const gatewayKey = decodeKey(route.gateway.spaPublicKey, `the SPA key of gateway ${route.gateway.name}`);
  const gateway = await resolveGateway({ host: route.gateway.host, port: route.gateway.spaPort });
  const claimedSource = options.source === 'auto' ? await localAddressToward(gateway) : options.source;
  const target = targetPort(route);
  const posture = await LatestPosture.start(() => devicePosture());

  const schedule = new KnockSchedule();
  let knocking: Promise<void> | undefined;
  /** One knock at a time: connections opened together share it. */
  const knock = () => {
    knocking ??= sendServiceKnock(device, gateway, gatewayKey, route, claimedSource, posture).finally(() => {
      knocking = undefined;
    });
    return knocking;
  };
  const dial = (alpn: string) =>
    dialWithKnocks<Socket | TLSSocket>({
      schedule,
      knock,
      dial: (timeoutMs) =>
        route.mode === 'tunnel'
          ? dialTunnel({
              host: gateway.address,
              port: target,
              credentials: device.credentials,
              alpn,
              gatewayName: route.gateway.name,
              timeoutMs,
            })
          : dialDirect(gateway.address, target, timeoutMs),
      retryable: (error) =>
        error instanceof DialTimeoutError || RETRYABLE_CODES.has((error as NodeJS.ErrnoException).code ?? ''),
    });

  const live = new Set<Socket>();
  const server = createServer((local) => {
    live.add(local);
    local.once('close', () => live.delete(local));
    void forward(local, () => dial(serviceAlpn(service)), `${service} via ${route.gateway.name}`, log);
  });
  const listening = await listen(server, options.listen);

  const control =
    route.mode === 'tunnel'
      ? new ControlChannel({
          dial: () => dial(CONTROL_ALPN) as Promise<TLSSocket>,
          posture: () => posture.current(),
          intervalMs: options.postureIntervalMs,
          log: (line) => log(`${service}: ${line}`),
        })
      : undefined;
  control?.start();
  const renewal = setInterval(() => void renewIfDue(device, log), RENEWAL_CHECK_MS);
  renewal.unref();

  return {
    route,
    listening,
    async close() {
      clearInterval(renewal);
      control?.stop();
      for (const socket of live) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function targetPort(route: ServiceRoute): number {
  if (route.mode === 'tunnel') return route.gateway.tunnelPort;
  return Number(route.access.slice(route.access.indexOf('/') + 1));
}

async function sendServiceKnock(
  device: Device,
  gateway: ResolvedGateway,
  gatewayPublicKey: Buffer,
  route: ServiceRoute,
  claimedSource: string | undefined,
  latest: LatestPosture,
): Promise<void> {
  const posture: Posture = await latest.fresh();
  const packet = sealKnock({
    gatewayPublicKey,
    identity: device.identity,
    knock: {
      access: route.access,
      service: route.service,
      claimedSource,
      // A knock carries 1 to 16 claims or none at all.
      posture: Object.keys(posture).length > 0 ? posture : undefined,
    },
  });
  await sendKnock(gateway, packet);
}

/** Pipes one local connection through a new connection to the gateway. */
async function forward(
  local: Socket,
  dial: () => Promise<Socket | TLSSocket>,
  what: string,
  log: (line: string) => void,
): Promise<void> {
  local.on('error', () => local.destroy());
  let remote: Socket | TLSSocket;
  try {
    remote = await dial();
  } catch (error) {
    log(`${what}: no connection to the gateway (${(error as Error).message}); closing the local connection`);
    local.destroy();
    return;
  }
  if (local.destroyed) {
    remote.destroy();
    return;
  }
  local.setNoDelay(true);
  remote.on('error', () => local.destroy());
  local.on('error', () => remote.destroy());
  local.pipe(remote);
  remote.pipe(local);
  // A side that closed ends the other, so what it wrote last still arrives.
  local.once('close', () => remote.end());
  remote.once('close', () => local.end());
}

function dialDirect(host: string, port: number, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connectTcp({ host, port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new DialTimeoutError(`no TCP connection to ${host} port ${port} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      socket.setNoDelay(true);
      resolve(socket);
    });
  });
}

async function renewIfDue(device: Device, log: (line: string) => void): Promise<void> {
  const validity = validityOf(device.credentials.cert);
  if (!renewalDue(validity, new Date())) return;
  try {
    await renewCertificate(device, (csr) => requestRenewal(device.controller, csr, device.credentials));
    log(`certificate renewed; valid until ${validityOf(device.credentials.cert).notAfter.toISOString()}`);
  } catch (error) {
    log(
      `certificate renewal failed (${(error as Error).message}); it expires ${validity.notAfter.toISOString()}, will retry within the hour`,
    );
  }
}

function listen(server: Server, at: { host: string; port: number }): Promise<{ host: string; port: number }> {
  return new Promise((resolve, reject) => {
    server.once('error', (error) => reject(new Error(`--listen ${at.host}:${at.port}: ${error.message}`)));
    server.listen({ host: at.host, port: at.port }, () => {
      const address = server.address() as { port: number };
      resolve({ host: at.host, port: address.port });
    });
  });
}
