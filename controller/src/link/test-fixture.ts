// For tests only: a real controller on 127.0.0.1 (port 0) over a data directory in a temporary
// directory, gateways and devices enrolled straight through the store and the CA, and a gateway end
// of the link that speaks the protocol over a real mutual-TLS WebSocket. Nothing here is mocked.

import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  createCertificateRequest,
  decodeToGateway,
  encodeKey,
  encodeLinkMessage,
  encodeSealedKnock,
  type GatewayKeyPair,
  generateGatewayKeyPair,
  generateIdentity,
  type Identity,
  type KnockRequest,
  LINK_PATH,
  SpaReceiver,
  sealKnock,
  type ToControllerMessage,
  type ToGatewayMessage,
} from '@umbra/protocol';
import WebSocket from 'ws';
import { type ControllerServer, type ServerOptions, startServer } from '../api/server.ts';
import { CertificateAuthority } from '../ca/index.ts';
import { type DataDir, initDataDir } from '../data-dir.ts';
import { PgStore } from '../store/index.ts';

export interface TestController {
  data: DataDir;
  server: ControllerServer;
  /** https://127.0.0.1:PORT */
  url: string;
  close(): Promise<void>;
}

/** A controller with a fresh data directory (SQLite, or PostgreSQL at `databaseUrl`). */
export async function startTestController(
  options: ServerOptions & { databaseUrl?: string; timeZone?: string } = {},
): Promise<TestController> {
  const root = mkdtempSync(join(tmpdir(), 'umbra-link-test-'));
  const data = await initDataDir(
    join(root, 'controller'),
    'https://127.0.0.1:9/',
    'Umbra CA link test',
    options.databaseUrl,
    options.timeZone,
  );
  return serve(data, options, root);
}

/**
 * A second controller sharing the first one's data directory (its CA) and PostgreSQL database, with
 * its own store and server, as another process would. `auditPollMs` stretches its safety-net poll,
 * so that only LISTEN/NOTIFY can bring it events quickly.
 */
export async function startPeerController(
  first: TestController,
  databaseUrl: string,
  options: ServerOptions & { auditPollMs?: number } = {},
): Promise<TestController> {
  const { auditPollMs, ...serverOptions } = options;
  const data: DataDir = {
    dir: first.data.dir,
    settings: first.data.settings,
    ca: await CertificateAuthority.load(join(first.data.dir, 'ca')),
    store: await PgStore.connect(databaseUrl, auditPollMs === undefined ? {} : { auditPollMs }),
  };
  return serve(data, serverOptions, null);
}

async function serve(data: DataDir, options: ServerOptions, root: string | null): Promise<TestController> {
  const server = await startServer(data, '127.0.0.1', 0, { logLevel: 'silent', ...options });
  return {
    data,
    server,
    url: `https://127.0.0.1:${server.port}`,
    close: async () => {
      await server.close();
      await data.store.close();
      if (root !== null) rmSync(root, { recursive: true, force: true });
    },
  };
}

export interface TestGateway {
  name: string;
  spa: GatewayKeyPair;
  receiver: SpaReceiver;
  /** PEM key and certificate for the link (mutual TLS). */
  key: string;
  certificate: string;
  serial: string;
}

/** A gateway enrolled as `umbra-gateway enroll` would leave it: SPA key recorded, certificate issued. */
export async function enrollTestGateway(data: DataDir, name: string): Promise<TestGateway> {
  const spa = generateGatewayKeyPair();
  const existing = await data.store.getGatewayByName(name);
  if (!existing) await data.store.createGateway({ name });
  await data.store.setGatewayPublicKey(name, encodeKey(spa.publicKey));
  const tls = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const issued = await data.ca.issueGatewayCertificate(tls.publicKey, { gatewayName: name });
  return {
    name,
    spa,
    receiver: new SpaReceiver(spa.privateKey),
    key: tls.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    certificate: issued.pem,
    serial: issued.serial,
  };
}

export interface TestDevice {
  name: string;
  identity: Identity;
  keyId: string;
  /** The device's TLS key and identity certificate, for the client API. */
  key: string;
  certificate: string;
  serial: string;
  tlsKey: KeyObject;
}

/** A device enrolled as `umbra enroll` would leave it. */
export async function enrollTestDevice(
  data: DataDir,
  name: string,
  options: { groups?: string[]; owner?: string } = {},
): Promise<TestDevice> {
  const identity = generateIdentity();
  for (const group of options.groups ?? [])
    if (!(await data.store.listGroups()).some((existing) => existing.name === group))
      await data.store.createGroup(group);
  const created = await data.store.createIdentity({
    name,
    kind: 'device',
    publicKey: encodeKey(identity.publicKey),
    ...(options.groups ? { groups: options.groups } : {}),
    ...(options.owner ? { owner: options.owner } : {}),
  });
  const tls = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const issued = await data.ca.issueClientCertificate(await createCertificateRequest(tls.privateKey), {
    identity: name,
  });
  await data.store.recordCertificate({
    serial: issued.serial,
    identityId: created.id,
    notBefore: issued.notBefore.getTime(),
    notAfter: issued.notAfter.getTime(),
    pem: issued.pem,
  });
  return {
    name,
    identity,
    keyId: identity.id.toString('hex'),
    key: tls.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    certificate: issued.pem,
    serial: issued.serial,
    tlsKey: tls.privateKey,
  };
}

/** The sealed plaintext [body, signature] a gateway forwards, for a knock by `device` to `gateway`. */
/** The last timestamp each device knocked with: a device's knocks must strictly increase, as a client's do. */
const lastKnockMs = new WeakMap<TestDevice, number>();

export function knockBytes(device: TestDevice, gateway: TestGateway, knock: KnockRequest): Buffer {
  // Two knocks built within one millisecond would otherwise share a timestamp, and the second
  // would be refused as a replay whatever the test meant to show.
  let timestampMs = knock.timestampMs;
  if (timestampMs === undefined) {
    timestampMs = Math.max(Date.now(), (lastKnockMs.get(device) ?? 0) + 1);
    lastKnockMs.set(device, timestampMs);
  }
  const packet = sealKnock({
    gatewayPublicKey: gateway.spa.publicKey,
    identity: device.identity,
    knock: { ...knock, timestampMs },
  });
  const opened = gateway.receiver.open(packet);
  if (!opened.ok) throw new Error(`the test knock did not open (${opened.reason})`);
  return encodeSealedKnock(opened.body, opened.signature);
}

/** The gateway's end of a link: sends messages, collects what the controller sends, sees the close. */
export class TestLink {
  readonly socket: WebSocket;
  readonly received: ToGatewayMessage[] = [];
  /** Resolves with the close code once the link is closed. */
  readonly closed: Promise<number>;
  readonly #waiters: {
    match: (message: ToGatewayMessage) => boolean;
    resolve: (m: ToGatewayMessage) => void;
  }[] = [];

  private constructor(socket: WebSocket) {
    this.socket = socket;
    this.closed = new Promise((resolve) => socket.once('close', (code) => resolve(code)));
    socket.on('message', (data: Buffer) => {
      const message = decodeToGateway(data);
      this.received.push(message);
      for (const waiter of [...this.#waiters])
        if (waiter.match(message)) {
          this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
          waiter.resolve(message);
        }
    });
  }

  /** Opens the link; rejects with the HTTP status when the controller refuses the upgrade. */
  static open(
    url: string,
    caPem: string,
    credentials?: { key: string; certificate: string },
  ): Promise<TestLink> {
    const socket = new WebSocket(`${url.replace(/^https/, 'wss')}${LINK_PATH}`, {
      ca: caPem,
      ...(credentials ? { key: credentials.key, cert: credentials.certificate } : {}),
    });
    return new Promise((resolve, reject) => {
      socket.once('open', () => resolve(new TestLink(socket)));
      socket.once('unexpected-response', (_request, response) =>
        reject(
          Object.assign(new Error(`link refused: ${response.statusCode}`), { status: response.statusCode }),
        ),
      );
      socket.once('error', reject);
    });
  }

  send(message: ToControllerMessage): void {
    this.socket.send(encodeLinkMessage(message));
  }

  sendRaw(frame: Buffer | string): void {
    this.socket.send(frame);
  }

  /** The next message of type `t` that matches, received from now on: call it before what provokes it. */
  next<T extends ToGatewayMessage['t']>(
    t: T,
    match: (message: Extract<ToGatewayMessage, { t: T }>) => boolean = () => true,
    timeoutMs = 5_000,
  ): Promise<Extract<ToGatewayMessage, { t: T }>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${t} message within ${timeoutMs} ms`)), timeoutMs);
      this.#waiters.push({
        match: (message) => message.t === t && match(message as Extract<ToGatewayMessage, { t: T }>),
        resolve: (message) => {
          clearTimeout(timer);
          resolve(message as Extract<ToGatewayMessage, { t: T }>);
        },
      });
    });
  }

  close(): Promise<number> {
    this.socket.close();
    return this.closed;
  }
}

/** A gateway's link after hello, with the snapshot it was sent. */
export async function helloLink(
  controller: Pick<TestController, 'url' | 'data'>,
  gateway: TestGateway,
  endpoint = { host: '192.0.2.1', spaPort: 62201, tunnelPort: 8443 },
): Promise<{ link: TestLink; snapshot: Extract<ToGatewayMessage, { t: 'snapshot' }> }> {
  const link = await TestLink.open(controller.url, controller.data.ca.pem, gateway);
  const snapshot = link.next('snapshot');
  link.send({ t: 'hello', version: 1, snapshotVersion: null, endpoint });
  return { link, snapshot: await snapshot };
}
