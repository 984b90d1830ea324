// The gateway's side of the link: it dials the controller (so nothing on the gateway listens for
// it), proves itself with the certificate from its enrollment, and keeps the link up — reconnecting
// with exponential backoff and jitter, so a hundred gateways that lost the controller together do
// not return in one burst.
//
// Requests (authorize) wait at most AUTHORIZE_TIMEOUT_MS; an answer that does not come in time, or
// a link that is down, is `null`, and the caller falls back to its failMode.

import type { TLSSocket } from 'node:tls';
import {
  type Attest,
  type Attestation,
  checkControllerIdentity,
  type DecisionMessage,
  decodeToGateway,
  encodeLinkMessage,
  LINK_BINDING_BYTES,
  LINK_BINDING_LABEL,
  LINK_CLOSE,
  LINK_MAX_MESSAGE_BYTES,
  LINK_PATH,
  LINK_VERSION,
  LinkMessageError,
  type Revoke,
  type SignedPolicyMessage,
  type ToControllerMessage,
} from '@umbra/protocol';
import type { Logger } from 'pino';
import WebSocket from 'ws';

const AUTHORIZE_TIMEOUT_MS = 2_000;
const HANDSHAKE_TIMEOUT_MS = 5_000;
const BACKOFF_FIRST_MS = 250;
const BACKOFF_MAX_MS = 15_000;
/** The controller pings every 15 s; silence for this long means the link is dead though TCP says otherwise. */
const SILENCE_LIMIT_MS = 40_000;
/** Requests in flight at once; beyond this a knock is decided as if the controller were away. */
const MAX_PENDING = 4_096;

/** A gateway enrolled with a TPM: how it proves, on each link, that the TPM is still behind it. */
export interface LinkIdentity {
  /** The identity key's signature (a marshalled TPMT_SIGNATURE) over linkBindingDigest(exporter). */
  bind(exporter: Uint8Array): Promise<Uint8Array>;
  /** A fresh quote for the controller's re-attestation. */
  attest(request: Attest): Promise<Omit<Attestation, 't' | 'id'>>;
}

export interface ControllerLinkOptions {
  url: URL;
  key: string;
  cert: string;
  ca: string;
  endpoint: { host: string; spaPort: number; tunnelPort: number };
  snapshotVersion(): number | null;
  onPolicy(message: SignedPolicyMessage): void;
  onRevoke(message: Revoke): void;
  /** Each time the link comes up (after hello), e.g. to send what was queued while it was down. */
  onConnected?(): void;
  log: Logger;
  /** Present on a gateway enrolled with a TPM. */
  identity?: LinkIdentity;
  /** Backoff randomness, injectable for tests. */
  random?: () => number;
}

interface Pending {
  resolve(decision: DecisionMessage | null): void;
  timer: NodeJS.Timeout;
}

export class ControllerLink {
  private readonly options: ControllerLinkOptions;
  private socket: WebSocket | undefined;
  private ready = false;
  private stopped = false;
  private failures = 0;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private reconnectTimer: NodeJS.Timeout | undefined;
  private silenceTimer: NodeJS.Timeout | undefined;
  connects = 0;

  constructor(options: ControllerLinkOptions) {
    this.options = options;
  }

  get connected(): boolean {
    return this.ready;
  }

  start(): void {
    this.stopped = false;
    this.dial();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.silenceTimer);
    this.socket?.close(1000, 'gateway stopping');
    this.socket?.terminate();
    this.failPending();
  }

  /** Asks the controller to decide a knock; null when it cannot answer in time. */
  authorize(knock: Uint8Array, source: string): Promise<DecisionMessage | null> {
    if (!this.ready || this.pending.size >= MAX_PENDING) return Promise.resolve(null);
    const id = this.nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve(null);
      }, AUTHORIZE_TIMEOUT_MS);
      this.pending.set(id, { resolve, timer });
      this.send({ t: 'authorize', id, knock, source });
    });
  }

  /** Sends a report if the link is up; returns false when it is not (the caller may queue it). */
  send(message: ToControllerMessage): boolean {
    if (!this.ready || !this.socket) return false;
    this.socket.send(encodeLinkMessage(message), { binary: true });
    return true;
  }

  private dial(): void {
    const { url, key, cert, ca, log } = this.options;
    const target = new URL(LINK_PATH, url);
    target.protocol = url.protocol === 'http:' ? 'ws:' : 'wss:';
    const socket = new WebSocket(target, {
      key,
      cert,
      ca,
      minVersion: 'TLSv1.3',
      // ws hands this to tls.connect, whose signature it is; its own typing says otherwise.
      checkServerIdentity: checkControllerIdentity as unknown as undefined,
      handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
      maxPayload: LINK_MAX_MESSAGE_BYTES,
      perMessageDeflate: false,
    });
    this.socket = socket;
    socket.binaryType = 'nodebuffer';
    let tls: TLSSocket | undefined;
    socket.on('upgrade', (response) => {
      tls = response.socket as TLSSocket;
    });
    socket.on('open', () => {
      this.heard();
      this.sayHello(socket, tls).catch((error: unknown) => {
        log.error(
          { controller: url.origin, err: (error as Error).message },
          'the TPM could not sign this link; reconnecting',
        );
        socket.terminate();
      });
    });
    socket.on('ping', () => this.heard());
    socket.on('message', (data, isBinary) => {
      this.heard();
      if (isBinary) this.receive(data as Buffer);
      else this.protocolError('a text frame');
    });
    socket.on('unexpected-response', (_request, response) => {
      log.error(
        { controller: url.origin, status: response.statusCode },
        response.statusCode === 401
          ? 'the controller refused this gateway (revoked, or not enrolled there); re-enroll it'
          : 'the controller refused the link',
      );
      socket.terminate();
    });
    socket.on('error', (error) => {
      if (this.failures === 0)
        log.warn({ controller: url.origin, err: error.message }, 'controller link error');
    });
    socket.on('close', (code, reason) => {
      if (this.socket !== socket) return;
      const wasReady = this.ready;
      this.ready = false;
      this.socket = undefined;
      clearTimeout(this.silenceTimer);
      this.failPending();
      if (wasReady)
        log.warn(
          { controller: url.origin, code, reason: reason.toString().slice(0, 120) },
          'controller link lost; established tunnels continue, new knocks follow failMode',
        );
      if (!this.stopped) this.scheduleReconnect();
    });
  }

  /** hello, with the TPM's channel binding when there is a TPM; the link is ready once it is sent. */
  private async sayHello(socket: WebSocket, tls: TLSSocket | undefined): Promise<void> {
    const { identity, url, log } = this.options;
    let binding: Uint8Array | undefined;
    if (identity) {
      if (!tls) throw new Error('the link is not over TLS; it cannot be bound to the TPM');
      binding = await identity.bind(
        tls.exportKeyingMaterial(LINK_BINDING_BYTES, LINK_BINDING_LABEL, Buffer.alloc(0)),
      );
    }
    if (this.socket !== socket || socket.readyState !== socket.OPEN) return;
    this.failures = 0;
    this.ready = true;
    this.connects++;
    log.info({ controller: url.origin, bound: binding !== undefined }, 'linked to the controller');
    this.send({
      t: 'hello',
      version: LINK_VERSION,
      snapshotVersion: this.options.snapshotVersion(),
      endpoint: this.options.endpoint,
      ...(binding ? { binding } : {}),
    });
    this.options.onConnected?.();
  }

  private answerAttest(request: Attest): void {
    const { identity, log } = this.options;
    if (!identity) {
      log.warn('the controller asked for a TPM quote, but this gateway has no TPM');
      return;
    }
    identity.attest(request).then(
      (answer) => this.send({ t: 'attestation', id: request.id, ...answer }),
      (error: unknown) =>
        log.error({ err: (error as Error).message }, 'the TPM could not quote for re-attestation'),
    );
  }

  private receive(frame: Buffer) {
    let message: ReturnType<typeof decodeToGateway>;
    try {
      message = decodeToGateway(frame);
    } catch (error) {
      if (error instanceof LinkMessageError) return this.protocolError(error.message);
      throw error;
    }
    switch (message.t) {
      case 'decision': {
        const pending = this.pending.get(message.id);
        if (!pending) return; // answered too late: the knock was already decided without it
        this.pending.delete(message.id);
        clearTimeout(pending.timer);
        pending.resolve(message);
        return;
      }
      case 'snapshot':
      case 'delta':
        return this.options.onPolicy(message);
      case 'revoke':
        return this.options.onRevoke(message);
      case 'attest':
        return this.answerAttest(message);
    }
  }

  private protocolError(why: string): void {
    this.options.log.error({ why }, 'the controller sent an invalid link message; closing the link');
    this.socket?.close(LINK_CLOSE.protocolError, 'invalid message');
    this.socket?.terminate();
  }

  /** Closes the link on purpose, e.g. to be sent a fresh snapshot; it reconnects as usual. */
  restart(why: string): void {
    this.options.log.warn({ why }, 'restarting the controller link');
    this.socket?.terminate();
  }

  private heard(): void {
    clearTimeout(this.silenceTimer);
    this.silenceTimer = setTimeout(() => this.restart('no word from the controller'), SILENCE_LIMIT_MS);
    this.silenceTimer.unref();
  }

  private scheduleReconnect(): void {
    // Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): uniform in [0, cap].
    const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** Math.min(this.failures, 16));
    this.failures++;
    const delay = Math.max(50, Math.round((this.options.random ?? Math.random)() * cap));
    this.reconnectTimer = setTimeout(() => this.dial(), delay);
  }

  private failPending(): void {
    for (const [id, pending] of this.pending) {
      clearTimeout(pending.timer);
      pending.resolve(null);
      this.pending.delete(id);
    }
  }
}
