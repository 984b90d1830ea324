// The controller's end of the gateway links: WebSocket upgrades on LINK_PATH of the HTTPS server,
// one live link per gateway, liveness pings, and the pushes that go to every connected gateway
// (revocations, policy deltas).
//
// A link is for enrolled gateways only: before upgrading, the certificate the gateway presented
// must chain to the CA, be within its validity and unrevoked, name umbra://gateway/NAME, and NAME
// must be an enrolled gateway. Anything else is answered 401 and never becomes a WebSocket.

import type { IncomingMessage } from 'node:http';
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import {
  encodeLinkMessage,
  LINK_BINDING_BYTES,
  LINK_BINDING_LABEL,
  LINK_CLOSE,
  LINK_MAX_MESSAGE_BYTES,
  LINK_PATH,
  type Revoke,
} from '@umbra/protocol';
import { type WebSocket, WebSocketServer } from 'ws';
import { peerCertificatePem } from '../api/peer-certificate.ts';
import type { CertificateAuthority } from '../ca/index.ts';
import type { GatewayTpm, Store } from '../store/index.ts';
import type { Authorizer } from './authorizer.ts';
import { GatewayLink } from './gateway-link.ts';
import type { LinkAttestor } from './link-attestation.ts';
import type { Logger } from './logger.ts';
import type { PolicyView, PolicyViews } from './policy-view.ts';
import type { SessionKeeper } from './session-keeper.ts';

/** A gateway that has not answered a ping by the next one is gone: its link is cut. */
export const LINK_PING_INTERVAL_MS = 15_000;
/** WebSocket's own close code for a server going away. */
const GOING_AWAY = 1001;
/** A link that has not said (a proven) hello by then is closed. */
const HELLO_TIMEOUT_MS = 10_000;
/** How long close() lets links say goodbye before cutting them. */
const CLOSE_GRACE_MS = 1_000;

export interface LinkServerOptions {
  store: Store;
  ca: CertificateAuthority;
  views: PolicyViews;
  authorizer: Authorizer;
  sessions: SessionKeeper;
  attestor: LinkAttestor;
  timeZone: string;
  log: Logger;
  clock?: () => number;
  pingIntervalMs?: number;
}

export class LinkServer {
  readonly #options: LinkServerOptions;
  readonly #clock: () => number;
  readonly #wss: WebSocketServer;
  readonly #links = new Map<string, GatewayLink>();
  /** Upgraded, not yet proven by hello: not pushed to, and not yet replacing an earlier link. */
  readonly #pending = new Set<GatewayLink>();
  readonly #ping: NodeJS.Timeout;

  constructor(options: LinkServerOptions) {
    this.#options = options;
    this.#clock = options.clock ?? Date.now;
    this.#wss = new WebSocketServer({
      noServer: true,
      maxPayload: LINK_MAX_MESSAGE_BYTES,
      perMessageDeflate: false,
      clientTracking: false,
    });
    this.#ping = setInterval(() => this.#tick(), options.pingIntervalMs ?? LINK_PING_INTERVAL_MS);
    this.#ping.unref();
  }

  /** The live links by gateway name. */
  get links(): ReadonlyMap<string, GatewayLink> {
    return this.#links;
  }

  /** For the HTTPS server's 'upgrade' event. */
  handleUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    this.#upgrade(request, socket, head).catch((error: unknown) => {
      this.#options.log.error({ err: error }, 'link upgrade failed');
      refuse(socket, 500, 'internal error; see the controller log');
    });
  }

  /** Sends `revoke` to every connected gateway (each ignores what it does not hold); returns how many. */
  pushRevoke(revoke: Revoke): number {
    const frame = encodeLinkMessage(revoke);
    let sent = 0;
    for (const link of this.#links.values()) {
      if (link.socket.readyState !== link.socket.OPEN) continue;
      link.socket.send(frame, { binary: true });
      sent++;
    }
    return sent;
  }

  /** Closes a gateway's link, if it has one (it was revoked); it is refused when it dials again. */
  closeGateway(gateway: string): boolean {
    const link = this.#links.get(gateway);
    if (!link) return false;
    link.close(LINK_CLOSE.unauthorized, 'this gateway was revoked');
    return true;
  }

  /** Sends each connected gateway what changed in its share of the policy. */
  pushPolicy(view: PolicyView): void {
    for (const link of this.#links.values()) {
      try {
        link.sendDelta(view);
      } catch (error) {
        this.#options.log.error({ err: error, gateway: link.gateway }, 'could not send a policy delta');
      }
    }
  }

  /** Closes every link (going away), waiting briefly for them to go, then cuts what remains. */
  async close(): Promise<void> {
    clearInterval(this.#ping);
    const links = [...this.#links.values(), ...this.#pending];
    const gone = links.map(
      (link) =>
        new Promise<void>((resolve) => {
          if (link.socket.readyState === link.socket.CLOSED) resolve();
          else link.socket.once('close', () => resolve());
        }),
    );
    for (const link of links) link.close(GOING_AWAY, 'controller shutting down');
    const grace = new Promise<void>((resolve) => setTimeout(resolve, CLOSE_GRACE_MS).unref());
    await Promise.race([Promise.all(gone), grace]);
    for (const link of links) link.socket.terminate();
    this.#wss.close();
  }

  async #upgrade(request: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const path = new URL(request.url ?? '/', 'https://controller').pathname;
    if (path !== LINK_PATH)
      return refuse(socket, 404, `no WebSocket at ${path}; the gateway link is ${LINK_PATH}`);
    const admitted = await this.#authenticate(socket);
    if (!admitted.ok) {
      this.#options.log.warn(
        { address: request.socket.remoteAddress, reason: admitted.reason },
        'gateway link refused',
      );
      return refuse(socket, 401, admitted.reason);
    }
    // This connection's TLS exporter value: a TPM gateway signs it in its hello (channel binding).
    const tls = request.socket as Partial<TLSSocket>;
    const exporter =
      typeof tls.exportKeyingMaterial === 'function'
        ? tls.exportKeyingMaterial(LINK_BINDING_BYTES, LINK_BINDING_LABEL, Buffer.alloc(0))
        : null;
    this.#wss.handleUpgrade(request, socket, head, (ws) =>
      this.#accept(ws, admitted.gateway, admitted.tpm, exporter),
    );
  }

  async #authenticate(
    socket: Duplex,
  ): Promise<{ ok: true; gateway: string; tpm: GatewayTpm | null } | { ok: false; reason: string }> {
    const { ca, store } = this.#options;
    const pem = peerCertificatePem(socket);
    if (pem === null)
      return {
        ok: false,
        reason: "the link needs the gateway's certificate from its enrollment (mutual TLS)",
      };
    const verified = await ca.verifyChain(pem, {
      purpose: 'client',
      subject: 'gateway',
      isRevoked: (serial) => store.isSerialRevoked(serial),
    });
    if (!verified.ok)
      return { ok: false, reason: `certificate refused (${verified.reason}): ${verified.detail}` };
    const gateway = await store.getGatewayByName(verified.name);
    if (gateway?.status !== 'enrolled')
      return {
        ok: false,
        reason: `gateway ${verified.name} is ${gateway?.status ?? 'unknown'}, not enrolled`,
      };
    return { ok: true, gateway: gateway.name, tpm: gateway.tpm };
  }

  #accept(ws: WebSocket, gateway: string, tpm: GatewayTpm | null, exporter: Buffer | null): void {
    const { store, views, authorizer, sessions, attestor, ca, timeZone, log } = this.#options;
    const link = new GatewayLink(
      ws,
      gateway,
      { tpm, exporter },
      {
        store,
        views,
        authorizer,
        sessions,
        attestor,
        onProven: (proven) => this.#take(proven),
        policySigningKey: ca.policySigningKey,
        timeZone,
        log,
        clock: this.#clock,
      },
    );
    this.#pending.add(link);
    const helloDeadline = setTimeout(() => {
      if (this.#pending.has(link)) link.close(LINK_CLOSE.protocolError, 'no hello in time');
    }, HELLO_TIMEOUT_MS);
    helloDeadline.unref();
    ws.on('error', (error) => log.warn({ err: error, gateway }, 'gateway link error'));
    ws.on('close', (code) => {
      clearTimeout(helloDeadline);
      this.#pending.delete(link);
      attestor.stop(link);
      if (this.#links.get(gateway) === link) this.#links.delete(gateway);
      log.info({ gateway, code }, 'gateway link closed');
      const connectedAt = link.connectedAt;
      if (link.replaced || connectedAt === null) return;
      store
        .recordGatewayDisconnected(gateway, connectedAt, this.#clock())
        .catch((error: unknown) =>
          log.error({ err: error, gateway }, 'could not record a gateway disconnect'),
        );
    });
  }

  /** A link that said a proven hello: the gateway's link from now on, replacing an earlier one. */
  #take(link: GatewayLink): void {
    this.#pending.delete(link);
    const previous = this.#links.get(link.gateway);
    this.#links.set(link.gateway, link);
    if (previous && previous !== link) {
      previous.replaced = true;
      previous.close(LINK_CLOSE.replaced, 'a newer link from this gateway took over');
    }
  }

  #tick(): void {
    const seen: string[] = [];
    for (const link of this.#links.values()) {
      if (!link.alive) {
        this.#options.log.warn(
          { gateway: link.gateway },
          'gateway link silent since the last ping; cutting it',
        );
        link.socket.terminate();
        continue;
      }
      if (link.connectedAt !== null) seen.push(link.gateway);
      link.alive = false;
      link.socket.ping();
    }
    if (seen.length === 0) return;
    this.#options.store
      .markGatewaysSeen(seen, this.#clock())
      .catch((error: unknown) =>
        this.#options.log.error({ err: error }, 'could not record gateways as seen'),
      );
  }
}

/** An HTTP answer on a socket that will not become a WebSocket. */
function refuse(socket: Duplex, status: number, message: string): void {
  if (socket.destroyed) return;
  const body = JSON.stringify({ error: message });
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nConnection: close\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
  socket.once('finish', () => socket.destroy());
}
