// The technician's end of the provisioning session (protocol/src/provisioning/session.ts) over a
// box's serial console: the handshake, and the three conversations umbra-tech has with a box —
// apply a site bundle (progress events, then one result), read its status (its hello), read its logs.
//
// The stream is any Duplex: a serial port from openSerial on a laptop, one end of an in-memory pair
// in tests. The caller owns it; closing the BoxLink only stops the session listening.

import type { Duplex } from 'node:stream';
import {
  type BoxHello,
  exchangeHello,
  type LogsMessage,
  PROVISIONING_ACK_TIMEOUT_MS,
  PROVISIONING_MAX_ATTEMPTS,
  PROVISIONING_VERSIONS,
  type ProgressMessage,
  type ProvisioningMessage,
  ProvisioningMessageError,
  ProvisioningSession,
  type ProvisioningTimers,
  type ResultMessage,
} from '@umbra/protocol';

export interface BoxLinkOptions {
  /** The port's name in messages, e.g. "/dev/ttyUSB0". */
  port: string;
  ackTimeoutMs?: number;
  maxAttempts?: number;
  /** How long to wait for the box's hello once ours is acknowledged. */
  helloTimeoutMs?: number;
  /** Versions this side offers (tests; PROVISIONING_VERSIONS otherwise). */
  versions?: number[];
  timers?: ProvisioningTimers;
  /** Console text between frames (the getty's prompt, kernel messages). */
  onText?: (bytes: Buffer) => void;
  /** Messages from the box that were not understood; the session carries on. */
  onWarning?: (message: string) => void;
}

export const DEFAULT_HELLO_TIMEOUT_MS = 5_000;
/** Between two messages while a bundle is applied: enrolling contacts the controller. */
export const DEFAULT_STEP_TIMEOUT_MS = 120_000;

export class BoxLink {
  readonly session: ProvisioningSession;
  readonly port: string;
  readonly hello: BoxHello;
  readonly version: number;
  readonly #onWarning: (message: string) => void;

  private constructor(
    session: ProvisioningSession,
    port: string,
    hello: BoxHello,
    version: number,
    onWarning: (message: string) => void,
  ) {
    this.session = session;
    this.port = port;
    this.hello = hello;
    this.version = version;
    this.#onWarning = onWarning;
  }

  /**
   * Starts a session on `stream` and exchanges hellos. Fails with the session's "the box does not
   * answer on PORT" when no frame is acknowledged, a timeout when the box acknowledges but never
   * says hello, or the ProvisioningVersionError when the two share no version.
   */
  static async connect(stream: Duplex, options: BoxLinkOptions): Promise<BoxLink> {
    const ackTimeoutMs = options.ackTimeoutMs ?? PROVISIONING_ACK_TIMEOUT_MS;
    const maxAttempts = options.maxAttempts ?? PROVISIONING_MAX_ATTEMPTS;
    const session = new ProvisioningSession(stream, {
      side: 'technician',
      port: options.port,
      peer: 'the box',
      ackTimeoutMs,
      maxAttempts,
      timers: options.timers,
      onText: options.onText,
    });
    try {
      // The receive waits at least as long as the send may retry, so a silent box is reported as
      // "does not answer" (the send's error) rather than as a timeout.
      const { version, peerHello } = await exchangeHello<BoxHello>(
        session,
        { t: 'hello', versions: options.versions ?? [...PROVISIONING_VERSIONS] },
        {
          timeoutMs: ackTimeoutMs * maxAttempts + (options.helloTimeoutMs ?? DEFAULT_HELLO_TIMEOUT_MS),
          peer: 'the box',
        },
      );
      return new BoxLink(session, options.port, peerHello, version, options.onWarning ?? (() => {}));
    } catch (error) {
      session.close();
      throw error;
    }
  }

  /**
   * Sends the bundle and passes each progress event to `onProgress` until the box's result, which
   * it returns (ok or a refusal). `stepTimeoutMs` bounds the wait for each next message.
   */
  async apply(
    bundle: Uint8Array,
    onProgress: (progress: ProgressMessage) => void,
    stepTimeoutMs = DEFAULT_STEP_TIMEOUT_MS,
  ): Promise<ResultMessage> {
    await this.session.send({ t: 'apply-bundle', bundle });
    for (;;) {
      const message = await this.#next(stepTimeoutMs);
      if (message.t === 'progress') onProgress(message as ProgressMessage);
      else if (message.t === 'result') return message as ResultMessage;
      else this.#onWarning(`ignored a ${message.t} message from the box while it applied the bundle`);
    }
  }

  /** A fresh hello (the box answers status-request with one). */
  async status(timeoutMs = DEFAULT_HELLO_TIMEOUT_MS): Promise<BoxHello> {
    await this.session.send({ t: 'status-request' });
    for (;;) {
      const message = await this.#next(timeoutMs);
      if (message.t === 'hello') return message as BoxHello;
      this.#onWarning(`ignored a ${message.t} message from the box while waiting for its status`);
    }
  }

  async logs(lines?: number, timeoutMs = DEFAULT_HELLO_TIMEOUT_MS): Promise<string[]> {
    await this.session.send(lines === undefined ? { t: 'logs-request' } : { t: 'logs-request', lines });
    for (;;) {
      const message = await this.#next(timeoutMs);
      if (message.t === 'logs') return (message as LogsMessage).lines;
      this.#onWarning(`ignored a ${message.t} message from the box while waiting for its logs`);
    }
  }

  close(): void {
    this.session.close();
  }

  /** The next message; one that arrived whole but did not decode is reported and skipped. */
  async #next(timeoutMs: number): Promise<ProvisioningMessage> {
    for (;;) {
      try {
        return await this.session.receive({ timeoutMs });
      } catch (error) {
        if (!(error instanceof ProvisioningMessageError)) throw error;
        this.#onWarning(`ignored a message from the box: ${error.message}`);
      }
    }
  }
}
