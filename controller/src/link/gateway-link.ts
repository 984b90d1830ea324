// One gateway's link, from the controller's side: the messages it receives, in the order the link
// allows (hello first, once), and the policy it has been sent (the last snapshot, which every delta
// is computed against).
//
// A frame that is not exactly one valid message for this direction (text, malformed CBOR, a wrong
// shape, an unknown type, a second hello) closes the link with LINK_CLOSE.protocolError before it
// is acted on, so nothing of it is applied. Authorize requests are decided concurrently (each answer
// carries its request's id); everything else is handled one at a time in arrival order.

import type { KeyObject } from 'node:crypto';
import {
  type DecisionMessage,
  decodeToController,
  diffSnapshots,
  encodeLinkMessage,
  type Health,
  isEmptyDelta,
  LINK_CLOSE,
  type PolicySnapshot,
  signDelta,
  signSnapshot,
  type ToControllerMessage,
  type ToGatewayMessage,
} from '@umbra/protocol';
import type { WebSocket } from 'ws';
import type { GatewayEndpoint, GatewayTpm, Store } from '../store/index.ts';
import type { Authorizer, LinkPeer } from './authorizer.ts';
import { checkLinkBinding, type LinkAttestor } from './link-attestation.ts';
import type { Logger } from './logger.ts';
import type { PolicyView, PolicyViews } from './policy-view.ts';
import type { SessionKeeper } from './session-keeper.ts';
import { buildSnapshot } from './snapshot.ts';

/** Authorize requests one link may have in flight; past it, requests are refused at once. */
const MAX_IN_FLIGHT = 4_096;
/** WebSocket's close code for a server that failed to do what a message asked. */
const INTERNAL_ERROR = 1011;
/** A WebSocket close reason is at most 123 bytes. */
const MAX_CLOSE_REASON_BYTES = 123;

export interface GatewayLinkContext {
  store: Store;
  views: PolicyViews;
  authorizer: Authorizer;
  sessions: SessionKeeper;
  attestor: LinkAttestor;
  /**
   * Called when hello arrives and the link is proven (its channel binding, for a TPM gateway): only
   * then does it take over from an earlier link of the same gateway. A connection with a copied
   * certificate and key but without the TPM cannot push the real gateway off its link.
   */
  onProven?: (link: GatewayLink) => void;
  policySigningKey: KeyObject;
  timeZone: string;
  log: Logger;
  clock: () => number;
}

/** What this connection must prove beyond its certificate: null tpm for a gateway with software keys. */
export interface LinkBinding {
  tpm: GatewayTpm | null;
  /** The connection's TLS exporter value (LINK_BINDING_LABEL), null when it is not TLS. */
  exporter: Buffer | null;
}

export class GatewayLink {
  readonly gateway: string;
  readonly socket: WebSocket;
  readonly #context: GatewayLinkContext;
  readonly #binding: LinkBinding;
  /** Null until hello. */
  #endpoint: GatewayEndpoint | null = null;
  /** When hello was recorded: names this link in the store. */
  #connectedAt: number | null = null;
  /** The policy the gateway holds (from us): the base of the next delta. */
  #sent: PolicySnapshot | null = null;
  /** Answered the last ping, or said something, since the one before. */
  alive = true;
  #inFlight = 0;
  /** Non-authorize messages, one after another. */
  #queue: Promise<void> = Promise.resolve();
  #closing = false;
  /** Set when a newer link from the same gateway took over. */
  replaced = false;
  /** The gateway's last health report. */
  health: Health | null = null;

  constructor(socket: WebSocket, gateway: string, binding: LinkBinding, context: GatewayLinkContext) {
    this.socket = socket;
    this.gateway = gateway;
    this.#binding = binding;
    this.#context = context;
    socket.on('message', (data, isBinary) => this.#receive(data, isBinary));
    socket.on('pong', () => {
      this.alive = true;
    });
  }

  get endpoint(): GatewayEndpoint | null {
    return this.#endpoint;
  }

  get connectedAt(): number | null {
    return this.#connectedAt;
  }

  /** The version of the policy last sent, or null before the first snapshot. */
  get policyVersion(): number | null {
    return this.#sent?.version ?? null;
  }

  /** False when the link is not open, or the message does not fit in a frame (logged). */
  send(message: ToGatewayMessage): boolean {
    if (this.socket.readyState !== this.socket.OPEN) return false;
    let frame: Buffer;
    try {
      frame = encodeLinkMessage(message);
    } catch (error) {
      this.#context.log.error({ err: error, gateway: this.gateway }, `could not send a ${message.t} message`);
      return false;
    }
    this.socket.send(frame, { binary: true });
    return true;
  }

  /** Sends what changed since the last snapshot or delta, signed; nothing when nothing did. */
  sendDelta(view: PolicyView): void {
    const base = this.#sent;
    if (base === null || view.version <= base.version) return;
    const next = buildSnapshot(view, this.gateway, this.#context.timeZone, this.#context.clock());
    const delta = diffSnapshots(base, next);
    if (isEmptyDelta(delta)) return;
    const signed = signDelta(delta, this.#context.policySigningKey);
    // Only what the gateway got is the base of the next delta.
    if (this.send({ t: 'delta', payload: signed.payload, signature: signed.signature })) this.#sent = next;
  }

  close(code: number, reason: string): void {
    if (this.#closing) return;
    this.#closing = true;
    this.socket.close(code, closeReason(reason));
  }

  #receive(data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean): void {
    if (this.#closing) return;
    this.alive = true;
    if (!isBinary) {
      this.#protocolError('a text frame; the link speaks CBOR in binary frames');
      return;
    }
    const frame = Array.isArray(data)
      ? Buffer.concat(data)
      : Buffer.isBuffer(data)
        ? data
        : Buffer.from(data);
    let message: ToControllerMessage;
    try {
      message = decodeToController(frame);
    } catch (error) {
      this.#protocolError((error as Error).message);
      return;
    }
    if (message.t === 'hello') {
      if (this.#endpoint !== null) this.#protocolError('a second hello');
      else if (!this.#bound(message.binding)) return;
      else {
        this.#context.onProven?.(this);
        // Taken now, so the messages after it in the same burst find the link ready.
        this.#endpoint = message.endpoint;
        this.#enqueue(() =>
          this.#hello(message.endpoint).then(
            () => {
              if (this.#binding.tpm !== null) this.#context.attestor.start(this);
            },
            (error: unknown) => {
              // A gateway without its snapshot must not stay on a link that looks up: it dials again.
              this.close(INTERNAL_ERROR, 'the controller could not answer hello; try again');
              throw error;
            },
          ),
        );
      }
      return;
    }
    const endpoint = this.#endpoint;
    if (endpoint === null) {
      this.#protocolError(`a ${message.t} message before hello`);
      return;
    }
    const peer: LinkPeer = { name: this.gateway, endpoint };
    switch (message.t) {
      case 'authorize':
        this.#authorize(peer, message);
        break;
      case 'session':
        this.#enqueue(async () => {
          if (message.event === 'closed') {
            await this.#context.sessions.closed(peer, message);
            return;
          }
          const revoke = await this.#context.sessions.openedOffline(peer, message);
          if (revoke) this.send(revoke);
        });
        break;
      case 'posture':
        this.#enqueue(async () => {
          const revoke = await this.#context.sessions.posture(peer, message);
          if (revoke) this.send(revoke);
        });
        break;
      case 'attestation':
        this.#context.attestor.answer(this, message);
        break;
      case 'health':
        // Liveness (alive, above) is what the controller acts on; the figures are kept for a look.
        this.health = message;
        break;
    }
  }

  /**
   * A TPM gateway's hello must carry its identity key's signature over this connection's exporter:
   * checked before anything on the link is acted on. A failure is audited and ends the link.
   */
  #bound(binding: Uint8Array | undefined): boolean {
    const { tpm, exporter } = this.#binding;
    if (tpm === null) return true;
    const failure = checkLinkBinding(tpm, exporter, binding);
    if (failure === null) return true;
    this.#closing = true;
    this.#context.log.warn(
      { gateway: this.gateway, reason: failure },
      'gateway link refused: channel binding',
    );
    this.#context.store
      .appendAudit({
        actor: `gateway:${this.gateway}`,
        action: 'gateway.link',
        subject: this.gateway,
        decision: 'deny',
        reason: failure,
        details: {},
      })
      .catch((error: unknown) => this.#context.log.error({ err: error }, 'could not audit a refused link'))
      .finally(() => this.socket.close(LINK_CLOSE.unauthorized, closeReason(failure)));
    return false;
  }

  async #hello(endpoint: GatewayEndpoint): Promise<void> {
    const { store, views, clock, log } = this.#context;
    const now = clock();
    await store.recordGatewayConnected(this.gateway, endpoint, now);
    this.#connectedAt = now;
    // A snapshot's version is the audit log's head when it is made, so versions only grow whichever
    // controller a gateway links to next (knocks move the head too, and another controller may have
    // loaded its view later than this one); the view is brought up to that head first.
    const view = await views.invalidate(await store.lastAuditSeq());
    const snapshot = buildSnapshot(view, this.gateway, this.#context.timeZone, now);
    const signed = signSnapshot(snapshot, this.#context.policySigningKey);
    if (!this.send({ t: 'snapshot', payload: signed.payload, signature: signed.signature })) {
      if (this.socket.readyState !== this.socket.OPEN) return;
      throw new Error(`the snapshot for gateway ${this.gateway} could not be sent (see above)`);
    }
    this.#sent = snapshot;
    log.info(
      { gateway: this.gateway, endpoint, version: snapshot.version, identities: snapshot.identities.length },
      'gateway link up; snapshot sent',
    );
  }

  #authorize(peer: LinkPeer, message: Extract<ToControllerMessage, { t: 'authorize' }>): void {
    const { authorizer } = this.#context;
    const busy = this.#inFlight >= MAX_IN_FLIGHT;
    this.#inFlight++;
    // Neither throws: an unexpected error is answered as a denial ('internal error').
    const decided: Promise<DecisionMessage> = busy
      ? authorizer.refuse(peer, message, 'controller busy')
      : authorizer.authorize(peer, message);
    void decided.then((decision) => {
      this.#inFlight--;
      this.send(decision);
    });
  }

  #enqueue(work: () => Promise<void>): void {
    this.#queue = this.#queue.then(work).catch((error: unknown) => {
      this.#context.log.error({ err: error, gateway: this.gateway }, 'a link message failed');
    });
  }

  #protocolError(detail: string): void {
    this.#context.log.warn({ gateway: this.gateway, detail }, 'closing the link: protocol error');
    this.close(LINK_CLOSE.protocolError, `protocol error: ${detail}`);
  }
}

/** Cut to what a close frame can carry, on a character boundary. */
function closeReason(reason: string): string {
  let text = reason;
  while (Buffer.byteLength(text) > MAX_CLOSE_REASON_BYTES) text = text.slice(0, -1);
  return text;
}
