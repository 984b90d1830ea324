// The gateway's TLS 1.3 tunnel listener. It sits behind a pinhole like any other port; past the
// handshake, a connection must show a client certificate from the controller's CA, unrevoked,
// naming an identity that holds a grant from the connection's address for the service its ALPN
// protocol names (umbra-svc/<service>). Then it is proxied to the service's backend. ALPN
// umbra-control/1 is the control channel instead: the client's posture reports.
//
// Anything else is dropped without a word: the socket is destroyed, the reason logged (rate
// limited). Live connections are tracked by session, identity key and certificate serial, so a
// revocation destroys them at once — a grant only gates opening a connection, not keeping it.
//
// The TLS and the bytes are the TunnelServers' (tunnel-server.ts): one in this thread, or one per
// worker thread on the same port, so the TLS work spreads over cores. The decisions stay here, in
// the thread that holds the grants: every admission, every posture report, every session's count
// of connections and bytes. So a revocation closes connections on every worker and counts them at
// once, and a session ends exactly once, whichever workers its connections were on.

import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import { canonicalSource } from '../firewall/index.ts';
import type { Grant, GrantRemoval, Grants } from './grants.ts';
import { RefusalLog } from './refusal-log.ts';
import {
  type ConnectionRequest,
  TunnelServer,
  type TunnelServerOptions,
  type TunnelServerOwner,
  type Verdict,
} from './tunnel-server.ts';
import type { FromWorker, ToWorker } from './tunnel-worker.ts';

/**
 * The worker threads' entry: tunnel-worker.ts beside this module when run from the sources; in the
 * firmware, whose gateway is one bundle, the bundle rollup builds from it beside the gateway's.
 */
const WORKER_ENTRY = import.meta.url.endsWith('.ts')
  ? new URL('./tunnel-worker.ts', import.meta.url)
  : new URL('./umbra-tunnel-worker.mjs', import.meta.url);
/** Posture frames closer together than this are ignored: the client sends one a minute. */
const POSTURE_MIN_INTERVAL_MS = 5_000;
/** More worker threads than this buy nothing on the boxes the gateway runs on. */
export const MAX_TUNNEL_WORKERS = 16;

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
  /** Milliseconds, for grant expiry checks and the posture rate limit; Date.now by default. */
  now?: () => number;
  /**
   * Worker threads doing the TLS, each listening on the port (reusePort); 0 (the default) does it
   * in this thread. See defaultTunnelWorkers().
   */
  workers?: number;
}

/** Two workers, or one on a single core: the gateway's boxes have two to four cores, and the rest is for knocks. */
export function defaultTunnelWorkers(): number {
  return Math.min(2, availableParallelism());
}

/** Where connections are served: a TunnelServer in this thread or in a worker. */
interface Front {
  start(port: number, reusePort: boolean): Promise<number>;
  destroy(ids: number[]): void;
  close(): Promise<void>;
}

/** The listener, as its fronts see it: TunnelServerOwner, told which front is asking. */
interface FrontOwner extends Omit<TunnelServerOwner, 'admit'> {
  admit(front: Front, request: ConnectionRequest): Verdict;
  /** A worker died: its connections are gone with it. */
  lost(front: Front): void;
}

/** One live TLS connection: a tunnel to a backend, or a control channel. */
interface Connection {
  id: number;
  front: Front;
  source: string;
  identity: string;
  sessionId: string;
  keyId: string;
  serial: string;
  tunnel: boolean;
  lastPostureMs: number;
  /** Destroyed from here (its front reports it closed later, if in a worker). */
  destroyed: boolean;
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
  #fronts: Front[] = [];
  #port: number | undefined;
  #nextId = 1;
  #connections = new Map<number, Connection>();
  #sessions = new Map<string, SessionState>();
  #refusals: RefusalLog;
  /** The reason closeSessions() gives for the grants it removes, while it removes them. */
  #removing = new Map<string, string>();
  #unobserve: () => void;
  #closing = false;

  constructor(options: TunnelListenerOptions) {
    const workers = options.workers ?? 0;
    if (!Number.isInteger(workers) || workers < 0 || workers > MAX_TUNNEL_WORKERS) {
      throw new RangeError(
        `tunnel workers ${workers} must be a whole number from 0 to ${MAX_TUNNEL_WORKERS}`,
      );
    }
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#refusals = new RefusalLog(options.log, this.#now);
    this.#unobserve = options.grants.onRemoved((grant, why) => this.#grantRemoved(grant, why));
  }

  async start(): Promise<void> {
    const { host, port, key, cert, ca } = this.#options;
    const workers = this.#options.workers ?? 0;
    const server = { host, port, key, cert, ca, reusePort: workers > 0 };
    const owner = this.#owner();
    const fronts: Front[] =
      workers === 0
        ? [new LocalFront(server, owner)]
        : Array.from({ length: workers }, () => new WorkerFront(server, owner));
    this.#fronts = fronts;
    try {
      // The first one binds (port 0 picks); the others join it on the port it got.
      const bound = await fronts[0]!.start(port, workers > 0);
      const running: Front[] = [fronts[0]!];
      for (const front of fronts.slice(1)) {
        try {
          await front.start(bound, true);
          running.push(front);
        } catch (error) {
          // A Node without reusePort (before 22.12) cannot share the port between threads: keep the
          // workers that listen rather than leave the gateway without tunnels.
          await front.close();
          this.#options.log.warn(
            { err: (error as Error).message, workers: running.length },
            'a tunnel worker could not share the port; running with fewer workers',
          );
        }
      }
      this.#fronts = running;
      this.#port = bound;
    } catch (error) {
      await Promise.all(fronts.map((front) => front.close()));
      this.#fronts = [];
      throw error;
    }
  }

  /** The bound port (useful with port 0). */
  get port(): number {
    if (this.#port === undefined) {
      throw new Error('the tunnel listener is not listening: call start() first');
    }
    return this.#port;
  }

  /** Destroys the sessions' live connections and removes their grants; returns connections closed. */
  closeSessions(sessionIds: Iterable<string>, reason: string): number {
    const wanted = new Set(sessionIds);
    const closed = this.#destroy(
      [...this.#connections.values()].filter((connection) => wanted.has(connection.sessionId)),
      reason,
    );
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
    for (const connection of this.#connections.values()) {
      if (wanted.has(connection.keyId) && !connection.destroyed) sessions.add(connection.sessionId);
    }
    return this.closeSessions(sessions, reason);
  }

  /** Destroys connections whose client certificate has one of these serials; returns how many. */
  closeSerials(serials: Iterable<string>, reason: string): number {
    const wanted = new Set([...serials].map((serial) => serial.toLowerCase()));
    return this.#destroy(
      [...this.#connections.values()].filter((connection) => wanted.has(connection.serial)),
      reason,
    );
  }

  /** Tunnels and control channels open now. */
  liveConnections(): number {
    let live = 0;
    for (const connection of this.#connections.values()) if (!connection.destroyed) live++;
    return live;
  }

  /** liveConnections() by thread serving them: one figure in this thread, one per worker. */
  liveConnectionsByThread(): number[] {
    return this.#fronts.map((front) => {
      let live = 0;
      for (const connection of this.#connections.values()) {
        if (connection.front === front && !connection.destroyed) live++;
      }
      return live;
    });
  }

  /** Stops listening and destroys every live connection. Sessions are not reported ended. */
  async close(): Promise<void> {
    this.#closing = true;
    this.#unobserve();
    this.#connections.clear();
    const fronts = this.#fronts;
    this.#fronts = [];
    this.#port = undefined;
    await Promise.all(fronts.map((front) => front.close()));
  }

  /** How the fronts reach this listener: the same calls for a server in this thread or in a worker. */
  #owner(): FrontOwner {
    return {
      admit: (front, request) => this.#admit(front, request),
      posture: (id, posture) => this.#posture(id, posture),
      closed: (id, bytes) => this.#closed(id, bytes),
      refused: (reason, fields) => this.#refusals.refuse(reason, fields),
      error: (error) => this.#options.log.error({ err: error }, 'tunnel listener error'),
      lost: (front) => {
        for (const connection of [...this.#connections.values()]) {
          if (connection.front === front) this.#closed(connection.id, { bytesIn: 0, bytesOut: 0 });
        }
      },
    };
  }

  /** The checks that need the grants, for a connection a server (on `front`) has taken in. */
  #admit(front: Front, request: ConnectionRequest): Verdict {
    const source = canonicalSource(request.remoteAddress)?.address;
    if (source === undefined) return { refused: 'no remote address' };
    const { identity, serial, service } = request;
    let revoked: boolean;
    try {
      revoked = this.#options.isSerialRevoked(serial);
    } catch (error) {
      this.#options.log.error({ err: error }, 'the revocation check failed; refusing the connection');
      revoked = true;
    }
    if (revoked) return { refused: `certificate ${serial} is revoked`, identity };
    if (this.#closing) return { refused: 'the tunnel listener is stopping' };

    const { grants } = this.#options;
    let grant: Grant | undefined;
    let backend: { host: string; port: number; label: string } | undefined;
    if (service === undefined) {
      grant = grants.findAnyForConnection(source, identity);
      if (grant === undefined)
        return { refused: 'no grant from this address for the control channel', identity };
    } else {
      grant = grants.findForConnection(source, identity, service);
      if (grant === undefined) return { refused: 'no tunnel grant from this address', identity, service };
      const target = splitHostPort(grant.backend);
      if (target === undefined)
        return { refused: `the service's backend ${grant.backend} is not HOST:PORT`, service };
      backend = { ...target, label: grant.backend };
    }

    const id = this.#nextId++;
    const tunnel = backend !== undefined;
    this.#connections.set(id, {
      id,
      front,
      source,
      identity,
      sessionId: grant.sessionId,
      keyId: grant.keyId,
      serial,
      tunnel,
      lastPostureMs: Number.NEGATIVE_INFINITY,
      destroyed: false,
    });
    if (tunnel) {
      let session = this.#sessions.get(grant.sessionId);
      if (session === undefined) {
        session = { live: 0, bytesIn: 0, bytesOut: 0, grantGone: false, reason: undefined };
        this.#sessions.set(grant.sessionId, session);
      }
      session.live++;
      session.grantGone = false;
    }
    return { id, backend };
  }

  #posture(id: number, posture: Posture): void {
    const connection = this.#connections.get(id);
    if (connection === undefined || connection.destroyed) return;
    const now = this.#now();
    if (now - connection.lastPostureMs < POSTURE_MIN_INTERVAL_MS) return;
    connection.lastPostureMs = now;
    const { source, identity } = connection;
    // The grant that lets the identity in now: a later knock may have replaced the first.
    const keyId = this.#options.grants.findAnyForConnection(source, identity)?.keyId ?? connection.keyId;
    try {
      this.#options.onPosture({ keyId, identity, source, posture });
    } catch (error) {
      this.#options.log.error({ err: error }, 'posture report handler failed');
    }
  }

  /** Destroys connections now, remembering why for their sessions; returns how many were open. */
  #destroy(connections: Connection[], reason: string): number {
    const byFront = new Map<Front, number[]>();
    for (const connection of connections) {
      if (connection.destroyed) continue;
      connection.destroyed = true;
      const session = this.#sessions.get(connection.sessionId);
      if (session !== undefined && connection.tunnel) session.reason = reason;
      const ids = byFront.get(connection.front) ?? [];
      byFront.set(connection.front, ids);
      ids.push(connection.id);
    }
    let closed = 0;
    for (const [front, ids] of byFront) {
      front.destroy(ids);
      closed += ids.length;
    }
    return closed;
  }

  #closed(id: number, bytes: { bytesIn: number; bytesOut: number }): void {
    const connection = this.#connections.get(id);
    if (connection === undefined) return;
    this.#connections.delete(id);
    if (!connection.tunnel) return; // a control channel: no session of its own
    const session = this.#sessions.get(connection.sessionId);
    if (session === undefined) return;
    session.live--;
    session.bytesIn += bytes.bytesIn;
    session.bytesOut += bytes.bytesOut;
    if (session.live === 0 && session.grantGone)
      this.#endSession(connection.sessionId, session.reason ?? 'closed');
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

type ServerSettings = Omit<TunnelServerOptions, 'port' | 'reusePort'>;

/** The server in this thread: calls go straight through. */
class LocalFront implements Front {
  #server: TunnelServer | undefined;
  #settings: ServerSettings;
  #owner: FrontOwner;

  constructor(settings: ServerSettings, owner: FrontOwner) {
    this.#settings = settings;
    this.#owner = owner;
  }

  start(port: number, reusePort: boolean): Promise<number> {
    const owner = this.#owner;
    this.#server = new TunnelServer(
      { ...this.#settings, port, reusePort },
      { ...owner, admit: (request) => owner.admit(this, request) },
    );
    return this.#server.start();
  }

  destroy(ids: number[]): void {
    this.#server?.destroy(ids);
  }

  async close(): Promise<void> {
    await this.#server?.close();
  }
}

/** A server in a worker thread (tunnel-worker.ts), driven by messages. */
class WorkerFront implements Front {
  #worker: Worker | undefined;
  #settings: ServerSettings;
  #owner: FrontOwner;
  #stopping = false;

  constructor(settings: ServerSettings, owner: FrontOwner) {
    this.#settings = settings;
    this.#owner = owner;
  }

  start(port: number, reusePort: boolean): Promise<number> {
    const worker = new Worker(WORKER_ENTRY, {
      workerData: { ...this.#settings, port, reusePort } satisfies TunnelServerOptions,
      name: 'umbra-tunnel',
    });
    this.#worker = worker;
    return new Promise<number>((resolve, reject) => {
      worker.on('message', (message: FromWorker) => {
        switch (message.t) {
          case 'listening':
            return resolve(message.port);
          case 'failed':
            return reject(new Error(message.message));
          case 'admit':
            return this.#send({
              t: 'verdict',
              request: message.request,
              verdict: this.#owner.admit(this, message.connection),
            });
          case 'posture':
            return this.#owner.posture(message.id, message.posture);
          case 'closed':
            return this.#owner.closed(message.id, message);
          case 'refused':
            return this.#owner.refused(message.reason, message.fields);
          case 'error':
            return this.#owner.error(new Error(message.message));
          case 'stopped':
            return;
        }
      });
      worker.on('error', (error) => {
        reject(error);
        this.#owner.error(error);
      });
      worker.on('exit', (code) => {
        reject(new Error(`the tunnel worker exited (code ${code}) before it listened`));
        if (this.#stopping) return;
        this.#owner.error(new Error(`a tunnel worker exited (code ${code}); the others serve on`));
        this.#owner.lost(this);
      });
    });
  }

  destroy(ids: number[]): void {
    this.#send({ t: 'destroy', ids });
  }

  async close(): Promise<void> {
    const worker = this.#worker;
    if (worker === undefined || this.#stopping) return;
    this.#stopping = true;
    const stopped = new Promise<void>((resolve) => {
      worker.on('message', (message: FromWorker) => {
        if (message.t === 'stopped') resolve();
      });
      worker.once('exit', () => resolve());
    });
    this.#send({ t: 'close' });
    await stopped;
    await worker.terminate();
  }

  #send(message: ToWorker): void {
    this.#worker?.postMessage(message);
  }
}

/** HOST:PORT or [IPv6]:PORT. */
export function splitHostPort(address: string): { host: string; port: number } | undefined {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(address);
  if (match === null) return undefined;
  const port = Number(match[3]);
  if (port < 1 || port > 65_535) return undefined;
  return { host: (match[1] ?? match[2]) as string, port };
}
