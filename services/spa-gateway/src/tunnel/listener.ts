// The gateway's TLS 1.3 tunnel listener. It sits behind a pinhole like any other port; past the
// handshake, a connection must show a client certificate from the controller's CA, unrevoked,
// naming an identity that holds a grant from the connection's address for the service its ALPN
// protocol names (umbra-svc/<service>). Then it is proxied to the service's backend. ALPN
// umbra-control/1 is the control channel instead: the client's posture reports.
//
// Anything else is dropped without a word: the socket is destroyed, the reason logged (rate
// limited). Live connections are tracked by session, identity key and certificate serial, so a
// revocation destroys them at once — a grant only gates opening a connection, not keeping it.

import { connect as connectTcp, type Socket } from 'node:net';
import { createServer, type Server, type TLSSocket } from 'node:tls';
import { CONTROL_ALPN, ControlFrameReader, SERVICE_ALPN_PREFIX } from '@umbra/protocol';
import type { Logger } from 'pino';
import { canonicalSource } from '../firewall/index.ts';
import type { Grant, GrantRemoval, Grants } from './grants.ts';
import { type PeerIdentity, peerIdentityOf } from './peer-identity.ts';
import { RefusalLog } from './refusal-log.ts';

const HANDSHAKE_TIMEOUT_MS = 10_000;
const BACKEND_CONNECT_TIMEOUT_MS = 5_000;
/** Posture frames closer together than this are ignored: the client sends one a minute. */
const POSTURE_MIN_INTERVAL_MS = 5_000;
/** TCP keepalive on client sockets, so a client that vanished does not hold a tunnel forever. */
const KEEPALIVE_MS = 60_000;
// The service name alphabet of protocol's SERVICE_NAME.
const SERVICE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export type Posture = Record<string, string | number | boolean>;

export interface TunnelListenerOptions {
  /** Where to listen, e.g. '::' and 8443; port 0 picks one (see `port`). */
  host: string;
  port: number;
  /** PEM: the gateway's TLS key and certificate, and the controller's CA. */
  key: string;
  cert: string;
  ca: string;
  grants: Grants;
  /** Whether the certificate with this serial (lower-case hex) is revoked. */
  isSerialRevoked(serial: string): boolean;
  onPosture(report: { keyId?: string; identity: string; source: string; posture: Posture }): void;
  /**
   * A tunnel session ended: its grant is gone (expired and swept, or removed) and its last
   * connection closed. Called once per tunnel-mode session, with the bytes of all its connections.
   */
  onSessionEnded(sessionId: string, stats: { reason: string; bytesIn: number; bytesOut: number }): void;
  log: Logger;
  /** Milliseconds, for the posture rate limit; Date.now by default. */
  now?: () => number;
}

/** One live TLS connection: a tunnel to a backend, or a control channel. */
interface Connection {
  socket: TLSSocket;
  backend: Socket | undefined;
  sessionId: string;
  keyId: string;
  serial: string;
  closed: boolean;
}

/** A connection let in: to a backend, or (without one) the control channel. */
interface Admission {
  source: string;
  peer: PeerIdentity;
  grant: Grant;
  backend: { host: string; port: number } | undefined;
}

interface Refusal {
  refused: string;
  identity?: string;
  service?: string;
}

/** What a tunnel session accumulates while it has connections. */
interface SessionState {
  live: number;
  bytesIn: number;
  bytesOut: number;
  grantGone: boolean;
  /** Why its connections were closed from here (a revocation), if they were. */
  reason: string | undefined;
}

export class TunnelListener {
  #options: TunnelListenerOptions;
  #now: () => number;
  #server: Server | undefined;
  #live = new Set<Connection>();
  #sessions = new Map<string, SessionState>();
  #refusals: RefusalLog;
  /** The reason closeSessions() gives for the grants it removes, while it removes them. */
  #removing = new Map<string, string>();
  #unobserve: () => void;

  constructor(options: TunnelListenerOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#refusals = new RefusalLog(options.log, this.#now);
    this.#unobserve = options.grants.onRemoved((grant, why) => this.#grantRemoved(grant, why));
  }

  async start(): Promise<void> {
    const { host, port, key, cert, ca } = this.#options;
    const server = createServer({
      key,
      cert,
      ca,
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.3',
      handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
      // A client offers exactly one protocol; anything else ends the handshake with an alert.
      ALPNCallback: ({ protocols }) => {
        const [offered] = protocols;
        return protocols.length === 1 && offered !== undefined && isOurProtocol(offered)
          ? offered
          : undefined;
      },
    });
    server.on('secureConnection', (socket) => this.#accept(socket));
    server.on('tlsClientError', (error: NodeJS.ErrnoException, socket) => {
      this.#refusals.refuse(`TLS handshake failed (${error.code ?? error.message})`, {
        source: socket.remoteAddress,
      });
      socket.destroy();
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (error) =>
        reject(new Error(`tunnel listener: cannot listen on ${host} port ${port}: ${error.message}`)),
      );
      server.listen({ host, port }, resolve);
    });
    server.on('error', (error) => this.#options.log.error({ err: error }, 'tunnel listener error'));
    this.#server = server;
  }

  /** The bound port (useful with port 0). */
  get port(): number {
    const address = this.#server?.address();
    if (address === null || address === undefined || typeof address === 'string') {
      throw new Error('the tunnel listener is not listening: call start() first');
    }
    return address.port;
  }

  /** Destroys the sessions' live connections and removes their grants; returns connections closed. */
  closeSessions(sessionIds: Iterable<string>, reason: string): number {
    const wanted = new Set(sessionIds);
    let closed = 0;
    for (const connection of this.#live) {
      if (wanted.has(connection.sessionId)) closed += this.#destroy(connection, reason);
    }
    for (const sessionId of wanted) {
      this.#removing.set(sessionId, reason);
      try {
        this.#options.grants.remove(sessionId);
      } finally {
        this.#removing.delete(sessionId);
      }
    }
    return closed;
  }

  /** closeSessions() for every session of these identity keys, granted or connected. */
  closeKeyIds(keyIds: Iterable<string>, reason: string): number {
    const wanted = new Set(keyIds);
    const sessions = new Set(this.#options.grants.byKeyIds(wanted).map((grant) => grant.sessionId));
    for (const connection of this.#live) if (wanted.has(connection.keyId)) sessions.add(connection.sessionId);
    return this.closeSessions(sessions, reason);
  }

  /** Destroys connections whose client certificate has one of these serials; returns how many. */
  closeSerials(serials: Iterable<string>, reason: string): number {
    const wanted = new Set([...serials].map((serial) => serial.toLowerCase()));
    let closed = 0;
    for (const connection of this.#live) {
      if (wanted.has(connection.serial)) closed += this.#destroy(connection, reason);
    }
    return closed;
  }

  /** Tunnels and control channels open now. */
  liveConnections(): number {
    return this.#live.size;
  }

  /** Stops listening and destroys every live connection. Sessions are not reported ended. */
  async close(): Promise<void> {
    this.#unobserve();
    for (const connection of this.#live) this.#destroy(connection, 'gateway stopping');
    const server = this.#server;
    this.#server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  #accept(socket: TLSSocket): void {
    // Errors after this point (a reset, a timeout) only end the connection.
    socket.on('error', () => socket.destroy());
    const admitted = this.#admit(socket);
    if ('refused' in admitted) {
      const { refused, ...fields } = admitted;
      this.#refusals.refuse(refused, { source: socket.remoteAddress, ...fields });
      socket.destroy();
    } else if (admitted.backend === undefined) {
      this.#serveControl(socket, admitted.source, admitted.peer, admitted.grant);
    } else {
      this.#proxy(socket, admitted.backend, admitted.peer, admitted.grant);
    }
  }

  /** The checks, cheap ones first: who is connecting, for what, and whether a grant lets them. */
  #admit(socket: TLSSocket): Admission | Refusal {
    const source = canonicalSource(socket.remoteAddress)?.address;
    if (source === undefined) return { refused: 'no remote address' };
    const protocol = socket.alpnProtocol;
    if (typeof protocol !== 'string' || !isOurProtocol(protocol)) {
      return { refused: 'no umbra ALPN protocol (umbra-svc/SERVICE or umbra-control/1)' };
    }
    if (!socket.authorized)
      return { refused: `client certificate not trusted (${socket.authorizationError})` };
    const peer = peerIdentityOf(socket.getPeerX509Certificate());
    if ('refused' in peer) return peer;
    const { identity } = peer;
    let revoked: boolean;
    try {
      revoked = this.#options.isSerialRevoked(peer.serial);
    } catch (error) {
      this.#options.log.error({ err: error }, 'the revocation check failed; refusing the connection');
      revoked = true;
    }
    if (revoked) return { refused: `certificate ${peer.serial} is revoked`, identity };

    const { grants } = this.#options;
    if (protocol === CONTROL_ALPN) {
      const grant = grants.findAnyForConnection(source, identity);
      if (grant === undefined)
        return { refused: 'no grant from this address for the control channel', identity };
      return { source, peer, grant, backend: undefined };
    }
    const service = protocol.slice(SERVICE_ALPN_PREFIX.length);
    const grant = grants.findForConnection(source, identity, service);
    if (grant === undefined) return { refused: 'no tunnel grant from this address', identity, service };
    const backend = splitHostPort(grant.backend);
    if (backend === undefined)
      return { refused: `the service's backend ${grant.backend} is not HOST:PORT`, service };
    return { source, peer, grant, backend };
  }

  #proxy(socket: TLSSocket, target: { host: string; port: number }, peer: PeerIdentity, grant: Grant): void {
    const backend = connectTcp(target);
    const connection = this.#track(socket, backend, peer, grant);
    let session = this.#sessions.get(grant.sessionId);
    if (session === undefined) {
      session = { live: 0, bytesIn: 0, bytesOut: 0, grantGone: false, reason: undefined };
      this.#sessions.set(grant.sessionId, session);
    }
    session.live++;
    session.grantGone = false;

    socket.setNoDelay(true);
    socket.setKeepAlive(true, KEEPALIVE_MS);
    backend.setNoDelay(true);
    backend.setTimeout(BACKEND_CONNECT_TIMEOUT_MS, () =>
      backend.destroy(new Error(`no connection within ${BACKEND_CONNECT_TIMEOUT_MS / 1000} s`)),
    );
    let connected = false;
    backend.once('connect', () => {
      connected = true;
      backend.setTimeout(0);
    });
    backend.on('error', (error) => {
      if (!connected) {
        this.#refusals.refuse(`backend ${grant.backend} unreachable (${error.message})`, {
          identity: peer.identity,
          service: grant.service,
        });
      }
      socket.destroy();
    });
    socket.on('error', () => backend.destroy());
    // pipe() keeps backpressure and passes each side's end on; a side that closed ends the other
    // (not destroys: what it had written must still reach its peer).
    socket.pipe(backend);
    backend.pipe(socket);
    let open = 2;
    const closed = () => {
      if (--open === 0) this.#untrack(connection);
    };
    socket.once('close', () => {
      backend.end();
      closed();
    });
    backend.once('close', () => {
      socket.end();
      closed();
    });
  }

  #serveControl(socket: TLSSocket, source: string, peer: PeerIdentity, grant: Grant): void {
    const connection = this.#track(socket, undefined, peer, grant);
    socket.setKeepAlive(true, KEEPALIVE_MS);
    const reader = new ControlFrameReader();
    let lastReportMs = Number.NEGATIVE_INFINITY;
    socket.on('data', (chunk: Buffer) => {
      let frames: ReturnType<ControlFrameReader['push']>;
      try {
        frames = reader.push(chunk);
      } catch (error) {
        this.#refusals.refuse((error as Error).message, { source, identity: peer.identity });
        socket.destroy();
        return;
      }
      for (const frame of frames) {
        const now = this.#now();
        if (now - lastReportMs < POSTURE_MIN_INTERVAL_MS) continue;
        lastReportMs = now;
        // The grant that lets the identity in now: a later knock may have replaced the first.
        const keyId = this.#options.grants.findAnyForConnection(source, peer.identity)?.keyId ?? grant.keyId;
        try {
          this.#options.onPosture({ keyId, identity: peer.identity, source, posture: frame.posture });
        } catch (error) {
          this.#options.log.error({ err: error }, 'posture report handler failed');
        }
      }
    });
    socket.once('close', () => this.#untrack(connection));
  }

  #track(socket: TLSSocket, backend: Socket | undefined, peer: PeerIdentity, grant: Grant): Connection {
    const connection: Connection = {
      socket,
      backend,
      sessionId: grant.sessionId,
      keyId: grant.keyId,
      serial: peer.serial,
      closed: false,
    };
    this.#live.add(connection);
    return connection;
  }

  /** Destroys a connection now, remembering why for its session; returns 1 if it was open. */
  #destroy(connection: Connection, reason: string): number {
    if (connection.closed) return 0;
    const session = this.#sessions.get(connection.sessionId);
    if (session !== undefined && connection.backend !== undefined) session.reason = reason;
    connection.socket.destroy();
    connection.backend?.destroy();
    this.#untrack(connection);
    return 1;
  }

  #untrack(connection: Connection): void {
    if (connection.closed) return;
    connection.closed = true;
    this.#live.delete(connection);
    const { backend, sessionId } = connection;
    if (backend === undefined) return; // a control channel: no session of its own
    const session = this.#sessions.get(sessionId);
    if (session === undefined) return;
    session.live--;
    // From the backend's side: what it was sent came in from the client, what it read goes out.
    session.bytesIn += backend.bytesWritten;
    session.bytesOut += backend.bytesRead;
    if (session.live === 0 && session.grantGone) this.#endSession(sessionId, session.reason ?? 'closed');
  }

  #grantRemoved(grant: Grant, why: GrantRemoval): void {
    if (grant.mode !== 'tunnel') return; // direct-mode sessions are the gateway's to report
    const reason = this.#removing.get(grant.sessionId) ?? (why === 'expired' ? 'expired' : 'closed');
    const session = this.#sessions.get(grant.sessionId);
    if (session !== undefined && session.live > 0) {
      session.grantGone = true;
      session.reason ??= reason;
      return;
    }
    this.#endSession(grant.sessionId, session?.reason ?? reason);
  }

  #endSession(sessionId: string, reason: string): void {
    const session = this.#sessions.get(sessionId);
    this.#sessions.delete(sessionId);
    try {
      this.#options.onSessionEnded(sessionId, {
        reason,
        bytesIn: session?.bytesIn ?? 0,
        bytesOut: session?.bytesOut ?? 0,
      });
    } catch (error) {
      this.#options.log.error({ err: error }, 'session end handler failed');
    }
  }
}

function isOurProtocol(protocol: string): boolean {
  if (protocol === CONTROL_ALPN) return true;
  return (
    protocol.startsWith(SERVICE_ALPN_PREFIX) && SERVICE_NAME.test(protocol.slice(SERVICE_ALPN_PREFIX.length))
  );
}

/** HOST:PORT or [IPv6]:PORT. */
export function splitHostPort(address: string): { host: string; port: number } | undefined {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(address);
  if (match === null) return undefined;
  const port = Number(match[3]);
  if (port < 1 || port > 65_535) return undefined;
  return { host: (match[1] ?? match[2]) as string, port };
}
