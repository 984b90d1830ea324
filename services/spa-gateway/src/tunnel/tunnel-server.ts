// One thread's share of the tunnel listener: the TLS 1.3 server, the checks that need the
// connection itself (ALPN, the client certificate's chain and name), and the bytes — proxying to
// the backend, reading control frames. Whom to let in is not decided here: the server asks its
// owner (TunnelListener, in this thread or across a worker boundary), which holds the grants, the
// revocation list and the sessions, and gives each admitted connection an id to report under.
//
// Several servers may listen on one port with reusePort, one per worker thread: the kernel spreads
// connections over them, and with them the TLS work over cores.

import { connect as connectTcp, type Socket } from 'node:net';
import { createServer, type Server, type TLSSocket } from 'node:tls';
import { CONTROL_ALPN, ControlFrameReader, SERVICE_ALPN_PREFIX } from '@umbra/protocol';
import type { Posture } from './listener.ts';
import { peerIdentityOf } from './peer-identity.ts';
import { relay } from './relay.ts';

const HANDSHAKE_TIMEOUT_MS = 10_000;
const BACKEND_CONNECT_TIMEOUT_MS = 5_000;
/** TCP keepalive on client sockets, so a client that vanished does not hold a tunnel forever. */
const KEEPALIVE_MS = 60_000;
// The service name alphabet of protocol's SERVICE_NAME.
const SERVICE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export interface TunnelServerOptions {
  host: string;
  port: number;
  /** Share the port with other servers (each worker thread's), Linux SO_REUSEPORT. */
  reusePort: boolean;
  /** PEM: the gateway's TLS key and certificate, and the controller's CA. */
  key: string;
  cert: string;
  ca: string;
}

/** A connection past the handshake, asking to be let in. */
export interface ConnectionRequest {
  /** As the socket gives it; the owner canonicalises it. */
  remoteAddress: string | undefined;
  identity: string;
  /** Lower-case hex. */
  serial: string;
  /** The service its ALPN names, or undefined for the control channel. */
  service: string | undefined;
}

/** The owner's answer: an id to report under and, for a tunnel, where to; or why not. */
export type Verdict =
  | { id: number; backend: { host: string; port: number; label: string } | undefined }
  | { refused: string; identity?: string; service?: string };

export interface RefusalFields {
  source?: string;
  identity?: string;
  service?: string;
}

/** What the server tells its owner, and asks it. */
export interface TunnelServerOwner {
  admit(request: ConnectionRequest): Verdict | Promise<Verdict>;
  /** A control frame from connection `id`; the owner rate-limits and reports it. */
  posture(id: number, posture: Posture): void;
  /** Connection `id` closed; bytes as the backend saw them (0 for a control channel). */
  closed(id: number, bytes: { bytesIn: number; bytesOut: number }): void;
  refused(reason: string, fields: RefusalFields): void;
  error(error: Error): void;
}

/** One admitted connection: a tunnel to a backend, or a control channel. */
interface Connection {
  socket: TLSSocket;
  backend: Socket | undefined;
  closed: boolean;
}

export class TunnelServer {
  #options: TunnelServerOptions;
  #owner: TunnelServerOwner;
  #server: Server | undefined;
  #live = new Map<number, Connection>();

  constructor(options: TunnelServerOptions, owner: TunnelServerOwner) {
    this.#options = options;
    this.#owner = owner;
  }

  /** Listens; resolves with the bound port. */
  async start(): Promise<number> {
    const { host, port, reusePort, key, cert, ca } = this.#options;
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
      this.#owner.refused(`TLS handshake failed (${error.code ?? error.message})`, {
        source: socket.remoteAddress,
      });
      socket.destroy();
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (error) =>
        reject(new Error(`tunnel listener: cannot listen on ${host} port ${port}: ${error.message}`)),
      );
      server.listen({ host, port, reusePort }, resolve);
    });
    server.on('error', (error) => this.#owner.error(error));
    this.#server = server;
    return (server.address() as { port: number }).port;
  }

  /** Destroys these connections now; each is reported closed (at once, in this thread). */
  destroy(ids: Iterable<number>): void {
    for (const id of ids) {
      const connection = this.#live.get(id);
      if (connection === undefined) continue;
      connection.socket.destroy();
      connection.backend?.destroy();
      this.#closed(id, connection);
    }
  }

  /** Stops listening and destroys every connection, reporting none of them. */
  async close(): Promise<void> {
    for (const connection of this.#live.values()) {
      connection.closed = true;
      connection.socket.destroy();
      connection.backend?.destroy();
    }
    this.#live.clear();
    const server = this.#server;
    this.#server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  #accept(socket: TLSSocket): void {
    // Errors after this point (a reset, a timeout) only end the connection.
    socket.on('error', () => socket.destroy());
    const request = this.#request(socket);
    if ('refused' in request) {
      this.#refuse(socket, request);
      return;
    }
    const verdict = this.#owner.admit(request);
    if (verdict instanceof Promise) {
      verdict.then(
        (answer) => this.#admitted(socket, request, answer),
        (error: Error) => this.#refuse(socket, { refused: `admission failed (${error.message})` }),
      );
    } else {
      this.#admitted(socket, request, verdict);
    }
  }

  /** The checks that need the socket, cheap ones first: which protocol, which certificate. */
  #request(socket: TLSSocket): ConnectionRequest | { refused: string } {
    const protocol = socket.alpnProtocol;
    if (typeof protocol !== 'string' || !isOurProtocol(protocol)) {
      return { refused: 'no umbra ALPN protocol (umbra-svc/SERVICE or umbra-control/1)' };
    }
    if (!socket.authorized)
      return { refused: `client certificate not trusted (${socket.authorizationError})` };
    const peer = peerIdentityOf(socket.getPeerX509Certificate());
    if ('refused' in peer) return peer;
    return {
      remoteAddress: socket.remoteAddress,
      identity: peer.identity,
      serial: peer.serial,
      service: protocol === CONTROL_ALPN ? undefined : protocol.slice(SERVICE_ALPN_PREFIX.length),
    };
  }

  #refuse(socket: TLSSocket, refusal: { refused: string } & RefusalFields): void {
    const { refused, ...fields } = refusal;
    this.#owner.refused(refused, { source: socket.remoteAddress, ...fields });
    socket.destroy();
  }

  #admitted(socket: TLSSocket, request: ConnectionRequest, verdict: Verdict): void {
    if ('refused' in verdict) {
      this.#refuse(socket, verdict);
      return;
    }
    if (socket.destroyed) {
      // The client left while its admission was decided elsewhere.
      this.#owner.closed(verdict.id, { bytesIn: 0, bytesOut: 0 });
      return;
    }
    if (verdict.backend === undefined) this.#serveControl(verdict.id, socket, request.identity);
    else this.#proxy(verdict.id, socket, request, verdict.backend);
  }

  #proxy(
    id: number,
    socket: TLSSocket,
    request: ConnectionRequest,
    target: { host: string; port: number; label: string },
  ): void {
    const backend = connectTcp(target);
    const connection: Connection = { socket, backend, closed: false };
    this.#live.set(id, connection);

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
        this.#owner.refused(`backend ${target.label} unreachable (${error.message})`, {
          identity: request.identity,
          service: request.service,
        });
      }
      socket.destroy();
    });
    socket.on('error', () => backend.destroy());
    // relay() keeps backpressure and passes each side's end on, in few writes (relay.ts); a side
    // that closed ends the other (not destroys: what it had written must still reach its peer).
    relay(socket, backend, { gather: true });
    relay(backend, socket, { gather: false });
    let open = 2;
    const closed = () => {
      if (--open === 0) this.#closed(id, connection);
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

  #serveControl(id: number, socket: TLSSocket, identity: string): void {
    const connection: Connection = { socket, backend: undefined, closed: false };
    this.#live.set(id, connection);
    socket.setKeepAlive(true, KEEPALIVE_MS);
    const reader = new ControlFrameReader();
    socket.on('data', (chunk: Buffer) => {
      let frames: ReturnType<ControlFrameReader['push']>;
      try {
        frames = reader.push(chunk);
      } catch (error) {
        this.#owner.refused((error as Error).message, { source: socket.remoteAddress, identity });
        socket.destroy();
        return;
      }
      for (const frame of frames) this.#owner.posture(id, frame.posture);
    });
    socket.once('close', () => this.#closed(id, connection));
  }

  #closed(id: number, connection: Connection): void {
    if (connection.closed) return;
    connection.closed = true;
    this.#live.delete(id);
    const { backend } = connection;
    // From the backend's side: what it was sent came in from the client, what it read goes out.
    this.#owner.closed(id, { bytesIn: backend?.bytesWritten ?? 0, bytesOut: backend?.bytesRead ?? 0 });
  }
}

function isOurProtocol(protocol: string): boolean {
  if (protocol === CONTROL_ALPN) return true;
  return (
    protocol.startsWith(SERVICE_ALPN_PREFIX) && SERVICE_NAME.test(protocol.slice(SERVICE_ALPN_PREFIX.length))
  );
}
