// A reliable message channel over a serial line (or any Duplex): the session between umbra-tech and
// a box's provisioner.
//
// Rules (documented in protocol/README.md, "Provisioning over serial"):
// - A message is CBOR (messages.ts) of at most PROVISIONING_MAX_MESSAGE_BYTES, sent as data frames of at most
//   MAX_FRAME_PAYLOAD bytes each; every frame but the last carries the MORE flag.
// - Stop and wait: one data frame is outstanding at a time. The receiver acknowledges each data
//   frame it accepts (ack carries the frame's seq); the sender retransmits after ackTimeoutMs, and
//   gives up after maxAttempts with a ProvisioningLinkError naming the port.
// - A data frame that arrives with an intact header but a bad CRC is answered with a nak for its
//   seq, and the sender retransmits at once instead of waiting for the timeout.
// - Sequence numbers count data frames modulo 2^16. The first data frame of a session (and the
//   first after a failed send) carries SYN, which makes the receiver start counting from its seq,
//   so either side may restart without the other. A frame that repeats the last accepted seq, or
//   is behind it, is a duplicate: acknowledged again (its ack may have been lost) and dropped.
//   Serial lines do not reorder, and the session relies on that.
// - A side that accepts a SYN starting a new sequence (not a retransmission of the SYN it took)
//   SYNs its own next message, or resends an outstanding first frame with SYN: the peer may be a
//   new session that drops non-SYN frames (the box keeps one session across technician sessions).
//   Only a message's first frame carries SYN.
// - Bytes between frames are the console's other traffic (the getty's prompt, kernel messages):
//   they go to onText untouched.

import type { Duplex } from 'node:stream';
import {
  encodeFrame,
  type Frame,
  FrameDecoder,
  type FrameDecoderEvent,
  type FrameError,
  MAX_FRAME_PAYLOAD,
} from './frame.ts';
import {
  type BoxHello,
  chooseVersion,
  decodeProvisioningMessage,
  encodeProvisioningMessage,
  PROVISIONING_MAX_MESSAGE_BYTES,
  type ProvisioningMessage,
  ProvisioningMessageError,
  type TechnicianHello,
  type ToBoxMessage,
  type ToTechnicianMessage,
} from './messages.ts';

export const PROVISIONING_ACK_TIMEOUT_MS = 500;
export const PROVISIONING_MAX_ATTEMPTS = 8;

export interface ProvisioningTimers {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const realTimers: ProvisioningTimers = {
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

export type ProvisioningSide = 'technician' | 'box';

export interface ProvisioningSessionOptions {
  /** Which end this is: a technician sends to-box messages and receives to-technician ones. */
  side: ProvisioningSide;
  /** The port's name for errors, e.g. "/dev/ttyUSB0". */
  port: string;
  /** The other end in errors; "the box" for a technician, "umbra-tech" for a box. */
  peer?: string;
  ackTimeoutMs?: number;
  /** Transmissions of one frame, the first included, before the send fails. */
  maxAttempts?: number;
  timers?: ProvisioningTimers;
  /** The console's other traffic, in order. */
  onText?: (bytes: Buffer) => void;
  /** Damaged frames, for the log. */
  onFrameError?: (error: FrameError) => void;
  /** The first sequence number (random by default). */
  initialSeq?: number;
}

export type ProvisioningLinkErrorCode = 'no-answer' | 'timeout' | 'closed';

/** The link failed: the peer does not answer, no message came in time, or the port closed. */
export class ProvisioningLinkError extends Error {
  override name = 'ProvisioningLinkError';
  readonly code: ProvisioningLinkErrorCode;
  constructor(code: ProvisioningLinkErrorCode, message: string, cause?: unknown) {
    super(message, { cause });
    this.code = code;
  }
}

interface Outstanding {
  seq: number;
  onAck(): void;
  onNak(): void;
  /** The peer started a new session: if this is a message's first frame, send it with SYN from now on. */
  resync(): void;
}

type Inbound = { message: ProvisioningMessage } | { error: Error };

interface Waiter {
  resolve(message: ProvisioningMessage): void;
  reject(error: Error): void;
}

export class ProvisioningSession {
  readonly #stream: Duplex;
  readonly #side: ProvisioningSide;
  readonly #port: string;
  readonly #peer: string;
  readonly #ackTimeoutMs: number;
  readonly #maxAttempts: number;
  readonly #timers: ProvisioningTimers;
  readonly #onText: ((bytes: Buffer) => void) | undefined;
  readonly #onFrameError: ((error: FrameError) => void) | undefined;
  readonly #decoder = new FrameDecoder();

  // sender
  #nextSeq: number;
  /** The next message's first frame carries SYN: at the start, after a failed send, after a new peer SYN. */
  #syn = true;
  #outstanding: Outstanding | undefined;
  /** Sends run one after another: stop and wait applies to messages, not only frames. */
  #sendChain: Promise<void> = Promise.resolve();
  #abortSend: ((error: Error) => void) | undefined;

  // receiver
  #lastAccepted: number | undefined;
  #fragments: Buffer[] = [];
  #fragmentBytes = 0;
  #discarding = false;
  #inbox: Inbound[] = [];
  #waiters: Waiter[] = [];

  #closed: ProvisioningLinkError | undefined;
  readonly #onData = (chunk: Buffer) => this.#handle(this.#decoder.push(chunk));
  readonly #onClose = () => this.#shut(new ProvisioningLinkError('closed', `${this.#port} closed`));
  readonly #onError = (error: Error) =>
    this.#shut(new ProvisioningLinkError('closed', `${this.#port}: ${error.message}`, error));

  constructor(stream: Duplex, options: ProvisioningSessionOptions) {
    this.#stream = stream;
    this.#side = options.side;
    this.#port = options.port;
    this.#peer = options.peer ?? (options.side === 'technician' ? 'the box' : 'umbra-tech');
    this.#ackTimeoutMs = options.ackTimeoutMs ?? PROVISIONING_ACK_TIMEOUT_MS;
    this.#maxAttempts = options.maxAttempts ?? PROVISIONING_MAX_ATTEMPTS;
    this.#timers = options.timers ?? realTimers;
    this.#onText = options.onText;
    this.#onFrameError = options.onFrameError;
    this.#nextSeq = (options.initialSeq ?? Math.floor(Math.random() * 0x10000)) & 0xffff;
    stream.on('data', this.#onData);
    stream.on('close', this.#onClose);
    stream.on('end', this.#onClose);
    stream.on('error', this.#onError);
  }

  /** Sends one message; resolves once the peer has acknowledged all of it. Sends queue in order. */
  send(message: ToBoxMessage | ToTechnicianMessage): Promise<void> {
    let bytes: Buffer;
    try {
      bytes = encodeProvisioningMessage(message, this.#side === 'technician' ? 'to-box' : 'to-technician');
    } catch (error) {
      return Promise.reject(error);
    }
    const sent = this.#sendChain.then(() => this.#transmit(bytes));
    this.#sendChain = sent.catch(() => {});
    return sent;
  }

  /**
   * The next message from the peer. A message that arrived whole but is not valid rejects with a
   * ProvisioningMessageError (and the session carries on); with `timeoutMs`, waiting longer
   * rejects with a ProvisioningLinkError.
   */
  receive(options: { timeoutMs?: number } = {}): Promise<ProvisioningMessage> {
    const next = this.#inbox.shift();
    if (next) return 'message' in next ? Promise.resolve(next.message) : Promise.reject(next.error);
    if (this.#closed) return Promise.reject(this.#closed);
    return new Promise((resolve, reject) => {
      let timer: unknown;
      const waiter: Waiter = {
        resolve: (message) => {
          if (timer !== undefined) this.#timers.clearTimeout(timer);
          resolve(message);
        },
        reject: (error) => {
          if (timer !== undefined) this.#timers.clearTimeout(timer);
          reject(error);
        },
      };
      if (options.timeoutMs !== undefined)
        timer = this.#timers.setTimeout(() => {
          this.#waiters = this.#waiters.filter((w) => w !== waiter);
          reject(
            new ProvisioningLinkError(
              'timeout',
              `no message from ${this.#peer} on ${this.#port} within ${seconds(options.timeoutMs!)}`,
            ),
          );
        }, options.timeoutMs);
      this.#waiters.push(waiter);
    });
  }

  /** Stops listening to the stream (without closing it) and fails what is pending. */
  close(): void {
    this.#shut(new ProvisioningLinkError('closed', `the session on ${this.#port} was closed`));
  }

  // ---- sender ----

  async #transmit(bytes: Buffer): Promise<void> {
    const count = Math.max(1, Math.ceil(bytes.length / MAX_FRAME_PAYLOAD));
    for (let i = 0; i < count; i++) {
      if (this.#closed) throw this.#closed;
      const seq = this.#nextSeq;
      const more = i < count - 1;
      const payload = bytes.subarray(i * MAX_FRAME_PAYLOAD, (i + 1) * MAX_FRAME_PAYLOAD);
      // Whether or not the frame gets through, its seq is used: after a failure the next frame
      // carries SYN with a seq the receiver cannot take for a duplicate of this one.
      this.#nextSeq = (seq + 1) & 0xffff;
      try {
        await this.#sendFrame((syn) => encodeFrame({ kind: 'data', seq, more, syn, payload }), seq, i === 0);
      } catch (error) {
        this.#syn = true;
        throw error;
      }
    }
  }

  /**
   * Sends one data frame until acknowledged. Only a message's first frame may carry SYN (a SYN
   * makes the receiver drop the fragments it holds), so a peer that starts a new session while a
   * later fragment is outstanding is SYNed at the next message.
   */
  #sendFrame(encode: (syn: boolean) => Buffer, seq: number, first: boolean): Promise<void> {
    return new Promise((resolve, reject) => {
      let syn = first && this.#syn;
      let frame = encode(syn);
      let attempts = 0;
      let timer: unknown;
      const finish = (error?: Error) => {
        if (timer !== undefined) this.#timers.clearTimeout(timer);
        this.#outstanding = undefined;
        this.#abortSend = undefined;
        if (error) reject(error);
        else resolve();
      };
      const attempt = () => {
        if (timer !== undefined) this.#timers.clearTimeout(timer);
        if (attempts === this.#maxAttempts) {
          finish(
            new ProvisioningLinkError(
              'no-answer',
              `${this.#peer} does not answer on ${this.#port}: no acknowledgement after ${attempts} tries in ${seconds(attempts * this.#ackTimeoutMs)}; check the cable, the port and that ${this.#peer} is running its provisioning side`,
            ),
          );
          return;
        }
        attempts++;
        this.#write(frame);
        timer = this.#timers.setTimeout(attempt, this.#ackTimeoutMs);
      };
      this.#outstanding = {
        seq,
        onAck: () => {
          // Cleared here, synchronously with the ack: a new peer SYN right behind it sets it again.
          // A first frame acked after a new peer SYN was acked by that new session, so carried SYN.
          if (first) this.#syn = false;
          finish();
        },
        onNak: attempt,
        resync: () => {
          // Same seq, so a peer that already took the plain copy acks this one as a retransmission.
          if (first && !syn) {
            syn = true;
            frame = encode(true);
          }
        },
      };
      this.#abortSend = finish;
      attempt();
    });
  }

  #write(bytes: Buffer): void {
    if (this.#closed) return;
    this.#stream.write(bytes);
  }

  // ---- receiver ----

  #handle(events: FrameDecoderEvent[]): void {
    for (const event of events) {
      if (event.type === 'text') this.#onText?.(event.bytes);
      else if (event.type === 'error') {
        this.#onFrameError?.(event.error);
        if (event.error.kind === 'crc' && event.error.frameKind === 'data' && event.error.seq !== undefined)
          this.#write(encodeFrame({ kind: 'nak', seq: event.error.seq, payload: Buffer.alloc(0) }));
      } else this.#frame(event.frame);
    }
  }

  #frame(frame: Frame): void {
    if (frame.kind === 'ack') {
      if (this.#outstanding?.seq === frame.seq) this.#outstanding.onAck();
      return;
    }
    if (frame.kind === 'nak') {
      if (this.#outstanding?.seq === frame.seq) this.#outstanding.onNak();
      return;
    }
    const last = this.#lastAccepted;
    if (frame.syn) {
      if (last === frame.seq) {
        this.#ack(frame.seq); // a retransmission of the SYN we took
        return;
      }
      this.#fragments = [];
      this.#fragmentBytes = 0;
      this.#discarding = false;
      // A new sequence from the peer may be a new peer session, whose receiver has never heard our
      // sequence and drops our non-SYN frames: our next message starts with SYN (or the message
      // whose first frame is outstanding, from its next try). A retransmitted SYN (seq equal to the
      // last accepted) was handled above and changes nothing.
      this.#syn = true;
      this.#outstanding?.resync();
    } else {
      if (last === undefined) return; // mid-stream of a sender we never heard start: it will time out and SYN
      const behind = (last - frame.seq) & 0xffff;
      if (behind < 0x8000) {
        this.#ack(frame.seq); // a duplicate (0 is the last one again): its ack may have been lost
        return;
      }
      if (frame.seq !== ((last + 1) & 0xffff)) return; // ahead of a gap: never acknowledged, so resent
    }
    this.#lastAccepted = frame.seq;
    this.#ack(frame.seq);
    this.#reassemble(frame);
  }

  #ack(seq: number): void {
    this.#write(encodeFrame({ kind: 'ack', seq, payload: Buffer.alloc(0) }));
  }

  #reassemble(frame: Frame): void {
    if (!this.#discarding) {
      this.#fragmentBytes += frame.payload.length;
      if (this.#fragmentBytes > PROVISIONING_MAX_MESSAGE_BYTES) {
        this.#discarding = true;
        this.#fragments = [];
        this.#deliver({
          error: new ProvisioningMessageError(
            `${this.#peer} sent a message of more than ${PROVISIONING_MAX_MESSAGE_BYTES} bytes on ${this.#port}; it was dropped`,
          ),
        });
      } else this.#fragments.push(frame.payload);
    }
    if (frame.more) return;
    const discarded = this.#discarding;
    const bytes = Buffer.concat(this.#fragments);
    this.#fragments = [];
    this.#fragmentBytes = 0;
    this.#discarding = false;
    if (discarded) return;
    try {
      const direction = this.#side === 'technician' ? 'to-technician' : 'to-box';
      this.#deliver({ message: decodeProvisioningMessage(bytes, direction) });
    } catch (error) {
      this.#deliver({ error: error as Error });
    }
  }

  #deliver(item: Inbound): void {
    const waiter = this.#waiters.shift();
    if (!waiter) this.#inbox.push(item);
    else if ('message' in item) waiter.resolve(item.message);
    else waiter.reject(item.error);
  }

  #shut(error: ProvisioningLinkError): void {
    if (this.#closed) return;
    this.#closed = error;
    this.#stream.off('data', this.#onData);
    this.#stream.off('close', this.#onClose);
    this.#stream.off('end', this.#onClose);
    this.#stream.off('error', this.#onError);
    this.#abortSend?.(error);
    for (const waiter of this.#waiters.splice(0)) waiter.reject(error);
  }
}

/**
 * The opening exchange: sends our hello, waits for the peer's, and returns the version both speak
 * with the peer's hello. A peer with no common version gets our hello too, so both sides show the
 * ProvisioningVersionError.
 */
export async function exchangeHello<T extends TechnicianHello | BoxHello>(
  session: ProvisioningSession,
  hello: TechnicianHello | BoxHello,
  options: { timeoutMs?: number; peer?: string } = {},
): Promise<{ version: number; peerHello: T }> {
  const [, reply] = await Promise.all([
    session.send(hello),
    session.receive({ timeoutMs: options.timeoutMs }),
  ]);
  if (reply.t !== 'hello')
    throw new ProvisioningMessageError(`expected a hello first, got a ${reply.t} message`);
  const version = chooseVersion(hello.versions, reply.versions, options.peer ?? 'the peer');
  return { version, peerHello: reply as T };
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(ms < 1000 ? 2 : 1)} s`;
}
